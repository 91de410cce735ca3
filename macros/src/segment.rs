//! The naming rules of design §2, checked at compile time.

/// `Err` with a message saying what to write instead, when `s` is not a valid segment.
pub(crate) fn check(what: &str, s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err(format!(
            "{what} must not be empty; use lowercase letters, digits, `_` or `-`"
        ));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == '-'))
    {
        let suggestion: String = s
            .chars()
            .map(|c| match c {
                'A'..='Z' => c.to_ascii_lowercase(),
                c if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-' => c,
                _ => '_',
            })
            .collect();
        return Err(format!(
            "{what} `{s}` contains {c:?}; use only lowercase letters, digits, `_` or `-`, e.g. `{suggestion}`"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn suggests_a_valid_name() {
        assert!(super::check("company", "acme").is_ok());
        let e = super::check("namespace", "My Shop").unwrap_err();
        assert!(e.contains("`my_shop`"), "{e}");
        assert!(super::check("name", "").is_err());
    }
}
