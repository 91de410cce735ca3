//! Who may act: the console shows to anyone who reaches it, and acts only for whoever gives
//! the token from `console.token`, on a form this console served.
//!
//! - **The token** is typed into each action's form (never kept in a cookie, so a browser
//!   never sends it on its own); without a configured token the console has no actions. It is
//!   compared in constant time and never written to a page, a log or an answer.
//! - **Cross-site requests** (another site's page posting to the console in the operator's
//!   browser) are refused twice over: each form carries this console's random anti-forgery
//!   value, which another site cannot read, and a request the browser marks as cross-site
//!   (`Sec-Fetch-Site`), or whose `Origin` is not the console's own host, is refused (the
//!   checks OWASP's cross-site request forgery cheat sheet recommends together).

use atoll::config::Secret;
use axum::http::HeaderMap;

/// Why an action was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// No token is configured: the console only shows.
    ReadOnly,
    /// The token given is not the console's.
    WrongToken,
    /// The form was not one this console served, or the request came from another site.
    Forged,
}

impl Refused {
    /// What the refusal says (never the token).
    pub(crate) fn say(self) -> &'static str {
        match self {
            Self::ReadOnly => {
                "this console only shows: set console.token (ATOLL_CONSOLE__TOKEN) to allow actions"
            }
            Self::WrongToken => "the token is not this console's",
            Self::Forged => "refused: the request did not come from this console's own page",
        }
    }
}

/// The token and the anti-forgery value.
#[derive(Debug)]
pub(crate) struct Guard {
    token: Option<Secret>,
    csrf: String,
}

impl Guard {
    /// A guard asking for `token` (none: no actions), with a fresh anti-forgery value.
    pub(crate) fn new(token: Option<Secret>) -> Self {
        let bytes: [u8; 32] = rand::random();
        Self {
            token,
            csrf: bytes.iter().map(|b| format!("{b:02x}")).collect(),
        }
    }

    /// The anti-forgery value the forms carry.
    pub(crate) fn csrf(&self) -> &str {
        &self.csrf
    }

    /// Whether the console has actions at all.
    pub(crate) fn acts(&self) -> bool {
        self.token.is_some()
    }

    /// Whether the action a request with `headers` and form fields `token` and `csrf` asks
    /// for may run.
    pub(crate) fn check(
        &self,
        headers: &HeaderMap,
        token: &str,
        csrf: &str,
    ) -> Result<(), Refused> {
        let Some(want) = &self.token else {
            return Err(Refused::ReadOnly);
        };
        if !same_bytes(csrf.as_bytes(), self.csrf.as_bytes()) || cross_site(headers) {
            return Err(Refused::Forged);
        }
        if !same_bytes(token.as_bytes(), want.expose().as_bytes()) {
            return Err(Refused::WrongToken);
        }
        Ok(())
    }
}

/// Whether the browser says the request came from another site. Browsers that send
/// `Sec-Fetch-Site` say it there: anything but `same-origin` (or `none`: typed, bookmarked) is
/// another site's. Older ones are judged by `Origin` against `Host` (which a proxy may rewrite:
/// hence the browsers' own word first).
fn cross_site(headers: &HeaderMap) -> bool {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = text("sec-fetch-site") {
        return site != "same-origin" && site != "none";
    }
    match (text("origin"), text("host")) {
        (Some(origin), Some(host)) => {
            let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
            origin_host != host
        }
        // `Origin: null` or no `Host`: not a page of ours.
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// `a == b`, in time independent of where they differ.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn an_action_needs_the_token_the_form_and_our_own_origin() {
        let guard = Guard::new(Some(Secret::new("s3cret")));
        let csrf = guard.csrf().to_owned();
        let ours = [
            ("host", "127.0.0.1:9800"),
            ("origin", "http://127.0.0.1:9800"),
        ];
        // Behind a proxy that rewrites `Host`: the browser's `Sec-Fetch-Site` decides.
        let proxied = [
            ("sec-fetch-site", "same-origin"),
            ("host", "127.0.0.1:9800"),
            ("origin", "https://ops.example.com"),
        ];
        type Headers<'a> = &'a [(&'static str, &'static str)];
        #[rustfmt::skip]
        let cases: [(Headers, &str, &str, Result<(), Refused>); 10] = [
            (&ours, "s3cret", &csrf, Ok(())),
            (&[("host", "h")], "s3cret", &csrf, Ok(())),
            (&[("sec-fetch-site", "same-origin")], "s3cret", &csrf, Ok(())),
            (&proxied, "s3cret", &csrf, Ok(())),
            (&ours, "s3cre", &csrf, Err(Refused::WrongToken)),
            (&ours, "", &csrf, Err(Refused::WrongToken)),
            (&ours, "s3cret", "", Err(Refused::Forged)),
            (&[("host", "127.0.0.1:9800"), ("origin", "https://evil.example")], "s3cret", &csrf, Err(Refused::Forged)),
            (&[("sec-fetch-site", "cross-site")], "s3cret", &csrf, Err(Refused::Forged)),
            (&[("origin", "null")], "s3cret", &csrf, Err(Refused::Forged)),
        ];
        for (hs, token, form, want) in cases {
            assert_eq!(
                guard.check(&headers(hs), token, form),
                want,
                "{hs:?} {token:?}"
            );
        }
        let read_only = Guard::new(None);
        let csrf = read_only.csrf().to_owned();
        assert_eq!(
            read_only.check(&headers(&ours), "", &csrf),
            Err(Refused::ReadOnly)
        );
        assert!(!read_only.acts() && guard.acts());
        assert_ne!(Guard::new(None).csrf(), csrf, "fresh per console");
        assert!(!format!("{guard:?}").contains("s3cret"));
    }

    #[test]
    fn bytes_compare_whole() {
        assert!(same_bytes(b"abc", b"abc"));
        assert!(!same_bytes(b"abc", b"abd"));
        assert!(!same_bytes(b"abc", b"ab"));
        assert!(same_bytes(b"", b""));
    }
}
