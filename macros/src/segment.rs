//! The naming rules of topics (`atoll-naming`, shared with the runtime), checked at compile
//! time with a suggestion of a valid name.

/// `Err` with a message saying what to write instead, when `s` is not a valid segment.
pub(crate) fn check(what: &'static str, s: &str) -> Result<(), String> {
    let Err(e) = atoll_naming::check_segment(what, s) else {
        return Ok(());
    };
    Err(match e.offending_char(s) {
        None => format!("{what} must not be empty; use lowercase letters, digits, `_` or `-`"),
        Some(c) => format!(
            "{what} `{s}` contains {c:?}; use only lowercase letters, digits, `_` or `-`, e.g. `{}`",
            atoll_naming::SegmentError::suggestion(s)
        ),
    })
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
