//! URL redaction: never panics, and a password between `user:` and `@` never shows.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = atoll::config::redact_url(&text);
    // `scheme://user:PASSWORD@rest`, parts taken from the input.
    let mut parts = text.splitn(4, '\u{1}');
    let (Some(user), Some(password), Some(rest)) = (parts.next(), parts.next(), parts.next()) else {
        return;
    };
    if password.len() < 4 || user.contains(':') || user.contains("://") || rest.contains(password) || user.contains(password) {
        return;
    }
    let url = format!("postgres://{user}:{password}@{rest}");
    let shown = atoll::config::redact_url(&url);
    assert!(!shown.contains(password), "{url:?} shown as {shown:?}");
});
