//! OAUTHBEARER tokens from an OpenID Connect provider (`kafka.security.sasl.oidc`): the
//! client-credentials grant (RFC 6749 §4.4) against the provider's token endpoint, the client
//! authenticating with HTTP basic auth.
//!
//! atoll fetches the tokens itself, as a [`TokenProvider`], rather than through librdkafka's
//! own OIDC support: that needs libcurl at build time, which a fresh machine lacks, and a
//! build that silently leaves it out would fail only at the login. Its errors name the
//! endpoint, never the secret; a token's principal is its `sub` claim when it is a JWT.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use futures::future::BoxFuture;
use serde::Deserialize;

use super::client::{OAuthToken, TokenProvider};
use super::registry::pem_certificate;
use super::secret::redact_url;
use super::security::OidcLogin;
use crate::error::BoxError;

/// How long a token lives when the endpoint says nothing of it (no `expires_in`, no `exp`).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);

/// A [`TokenProvider`] fetching tokens from an OpenID Connect token endpoint.
#[derive(Debug, Clone)]
pub(crate) struct OidcTokens {
    login: OidcLogin,
    http: reqwest::Client,
}

/// The token endpoint's answer (RFC 6749 §5.1).
#[derive(Deserialize)]
struct Answer {
    access_token: String,
    /// Seconds; some providers (Azure AD v1) write it as a string.
    #[serde(default)]
    expires_in: Option<Seconds>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Seconds {
    Number(u64),
    Text(String),
}

impl Seconds {
    fn get(&self) -> Option<u64> {
        match self {
            Self::Number(n) => Some(*n),
            Self::Text(t) => t.trim().parse().ok(),
        }
    }
}

/// When a token expires: `expires_in` seconds from `now`, else the JWT's `exp`, else in an
/// hour; never past a year from now (a huge value is no reason to panic or to keep a token).
fn expiry(expires_in: Option<u64>, exp: Option<u64>, now: SystemTime) -> SystemTime {
    let year = Duration::from_secs(365 * 24 * 3600);
    let latest = now + year;
    let at = match (expires_in, exp) {
        (Some(secs), _) => now.checked_add(Duration::from_secs(secs)),
        (None, Some(exp)) => SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(exp)),
        (None, None) => now.checked_add(DEFAULT_LIFETIME),
    };
    at.map_or(latest, |at| at.min(latest))
}

/// The claims of a JWT that matter here.
#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    exp: Option<u64>,
}

impl OidcTokens {
    /// A provider for `login`; `Err` when its CA file is not a certificate.
    pub(crate) fn new(login: OidcLogin) -> Result<Self, String> {
        // Shorter than the clients' wait for a token, so that its own error is the one told.
        let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(8));
        if let Some(ca) = &login.ca_file {
            let cert = pem_certificate("kafka.security.sasl.oidc.ca_file", ca)?;
            builder = builder.add_root_certificate(cert);
        }
        let http = builder
            .build()
            .map_err(|e| format!("kafka.security.sasl.oidc: {e}"))?;
        Ok(Self { login, http })
    }

    async fn fetch(http: reqwest::Client, login: OidcLogin) -> Result<OAuthToken, BoxError> {
        let endpoint = redact_url(&login.token_endpoint_url);
        let mut form = vec![("grant_type", "client_credentials")];
        if let Some(scope) = &login.scope {
            form.push(("scope", scope));
        }
        let answer = http
            .post(&login.token_endpoint_url)
            .basic_auth(&login.client_id, Some(login.client_secret.expose()))
            .form(&form)
            .send()
            .await
            .map_err(|e| format!("the token endpoint {endpoint} is unreachable: {e}"))?;
        let status = answer.status();
        let body = answer
            .text()
            .await
            .map_err(|e| format!("reading the answer of the token endpoint {endpoint}: {e}"))?;
        if !status.is_success() {
            let said: String = body.chars().take(300).collect();
            return Err(format!("the token endpoint {endpoint} answered {status}: {said}").into());
        }
        let answer: Answer = serde_json::from_str(&body).map_err(|e| {
            format!("the token endpoint {endpoint} answered without an access_token: {e}")
        })?;
        let claims = claims(&answer.access_token);
        let expires_at = expiry(
            answer.expires_in.as_ref().and_then(Seconds::get),
            claims.as_ref().and_then(|c| c.exp),
            SystemTime::now(),
        );
        let principal = claims
            .and_then(|c| c.sub)
            .unwrap_or_else(|| login.client_id.clone());
        Ok(OAuthToken::new(answer.access_token, principal, expires_at))
    }
}

impl TokenProvider for OidcTokens {
    fn token(&self) -> BoxFuture<'static, Result<OAuthToken, BoxError>> {
        Box::pin(Self::fetch(self.http.clone(), self.login.clone()))
    }
}

/// The claims of `token` when it is a JWT (`header.claims.signature`, base64url).
fn claims(token: &str) -> Option<Claims> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: &str) -> String {
        let enc = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.sig", enc(r#"{"alg":"RS256"}"#), enc(claims))
    }

    #[test]
    fn the_expiry_is_bounded() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let year = Duration::from_secs(365 * 24 * 3600);
        let cases = [
            (Some(60), None, now + Duration::from_secs(60)),
            (None, Some(1_700_000_100), now + Duration::from_secs(100)),
            (None, None, now + DEFAULT_LIFETIME),
            (Some(u64::MAX), None, now + year),
            (None, Some(u64::MAX), now + year),
        ];
        for (expires_in, exp, want) in cases {
            assert_eq!(expiry(expires_in, exp, now), want, "{expires_in:?} {exp:?}");
        }
        let text: Answer =
            serde_json::from_str(r#"{"access_token":"t","expires_in":"3599"}"#).unwrap();
        assert_eq!(text.expires_in.and_then(|s| s.get()), Some(3599));
    }

    #[test]
    fn a_jwt_names_its_principal_and_expiry() {
        let c = claims(&jwt(r#"{"sub":"svc-orders","exp":2000000000}"#)).unwrap();
        assert_eq!(
            (c.sub.as_deref(), c.exp),
            (Some("svc-orders"), Some(2_000_000_000))
        );
        assert!(claims("opaque-token").is_none());
        assert!(claims("a.!!!.c").is_none());
    }
}
