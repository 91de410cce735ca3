//! URL redaction: never panics, and a password between `user:` and `@` never shows. The
//! password holds a marker character (U+0002) that nothing else in the URL holds, so any piece
//! of it that shows (as it is, or percent-encoded) is caught.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = atoll::config::redact_url(&text);
    // `postgres://user:PASSWORD@rest`, parts taken from the input.
    let mut parts = text.splitn(4, '\u{1}');
    let (Some(user), Some(password), Some(rest)) = (parts.next(), parts.next(), parts.next())
    else {
        return;
    };
    let marked = |s: &str| s.contains('\u{2}') || s.to_ascii_lowercase().contains("%02");
    if !marked(password) || marked(user) || marked(rest) || user.contains(':') {
        return;
    }
    let url = format!("postgres://{user}:{password}@{rest}");
    let shown = atoll::config::redact_url(&url);
    assert!(!marked(&shown), "{url:?} shown as {shown:?}");
});
