//! The shop's declared topics and consumer groups, as checked into `topics/`.
//!
//! `shop topics --write topics` regenerates the file; a test fails when it drifts.

use std::path::Path;

/// The file name under `topics/`.
pub const FILE: &str = "acme.shop.json";

/// The listing, as pretty JSON with a trailing newline.
pub fn render() -> String {
    let mut s = serde_json::to_string_pretty(&crate::descriptions()).expect("serializable");
    s.push('\n');
    s
}

/// Writes the listing into `dir`.
pub fn write(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(FILE), render())?;
    Ok(())
}

/// `Err` naming the fix when the listing in `dir` differs from the code.
pub fn check(dir: &Path) -> anyhow::Result<()> {
    let path = dir.join(FILE);
    let on_disk = std::fs::read_to_string(&path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    if on_disk != render() {
        anyhow::bail!(
            "{} is out of date with the service declarations; run `cargo run -p example-shop -- topics --write topics`",
            path.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_spots_drift() {
        let dir = std::env::temp_dir().join(format!("shop-topics-{}", std::process::id()));
        write(&dir).unwrap();
        check(&dir).unwrap();
        std::fs::write(dir.join(FILE), "[]\n").unwrap();
        let e = check(&dir).unwrap_err().to_string();
        assert!(e.contains("topics --write"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(check(&dir).is_err(), "a missing file is an error");
    }
}
