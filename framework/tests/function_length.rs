//! No function in `src/` runs over 80 lines, tests included, except where metrics are
//! registered: a longer one does several things, and each deserves a name. Counts from a
//! function's `fn` line to its closing brace, matching braces outside comments and strings.

mod source;

/// The most lines a function may take.
const MAX: usize = 80;

/// Functions allowed to be longer, as `file:name`: each registers metric families, one
/// statement per family.
const EXEMPT: &[&str] = &["ops/metrics.rs:default"];

/// The name of the function a line declares, if it does.
fn declared(line: &str) -> Option<String> {
    let code = line.split("//").next().unwrap_or("").trim_start();
    let mut words = code.split_whitespace().peekable();
    while let Some(w) = words.peek() {
        let modifier = w.starts_with("pub")
            || matches!(*w, "const" | "async" | "unsafe" | "extern" | "default");
        if !modifier {
            break;
        }
        words.next();
    }
    if words.next()? != "fn" {
        return None;
    }
    let name: String = words
        .next()?
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty()).then_some(name)
}

/// For each line of `text`, its braces outside comments, strings and character literals,
/// as +1 / -1 (strings and comments may span lines).
fn braces(text: &str) -> Vec<Vec<i32>> {
    #[derive(Clone, Copy, PartialEq)]
    enum In {
        Code,
        Block,
        Str,
        Raw(usize),
    }
    let mut state = In::Code;
    let mut out = Vec::new();
    for line in text.lines() {
        let chars: Vec<char> = line.chars().collect();
        let mut here = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let (c, next) = (chars[i], chars.get(i + 1).copied());
            match state {
                In::Block if c == '*' && next == Some('/') => {
                    state = In::Code;
                    i += 1;
                }
                In::Str if c == '\\' => i += 1,
                In::Str if c == '"' => state = In::Code,
                In::Raw(n)
                    if c == '"'
                        && chars[i + 1..].iter().take_while(|&&h| h == '#').count() >= n =>
                {
                    state = In::Code;
                    i += n;
                }
                In::Block | In::Str | In::Raw(_) => {}
                In::Code => match c {
                    '/' if next == Some('/') => break,
                    '/' if next == Some('*') => {
                        state = In::Block;
                        i += 1;
                    }
                    '"' => state = In::Str,
                    'r' if matches!(next, Some('#' | '"'))
                        && (i == 0 || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '_')) =>
                    {
                        let hashes = chars[i + 1..].iter().take_while(|&&h| h == '#').count();
                        if chars.get(i + 1 + hashes) == Some(&'"') {
                            state = In::Raw(hashes);
                            i += 1 + hashes;
                        }
                    }
                    '\'' => {
                        // A character literal ('{', '\'', '\u{7b}'), not a lifetime ('a).
                        if next == Some('\\') {
                            if let Some(close) =
                                chars[i + 2..].iter().skip(1).position(|&h| h == '\'')
                            {
                                i += close + 3;
                            }
                        } else if chars.get(i + 2) == Some(&'\'') {
                            i += 2;
                        }
                    }
                    '{' => here.push(1),
                    '}' => here.push(-1),
                    _ => {}
                },
            }
            i += 1;
        }
        out.push(here);
    }
    out
}

/// `(name, first line, lines)` of every function of a file.
fn functions(text: &str) -> Vec<(String, usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let braces = braces(text);
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(name) = declared(line) else { continue };
        let mut depth = 0;
        let mut opened = false;
        for (j, l) in lines.iter().enumerate().skip(i) {
            if !opened && l.split("//").next().unwrap_or("").trim_end().ends_with(';') {
                break; // A declaration without a body.
            }
            for b in &braces[j] {
                depth += b;
                opened |= *b > 0;
            }
            if opened && depth == 0 {
                found.push((name.clone(), i + 1, j - i + 1));
                break;
            }
        }
    }
    found
}

#[test]
fn no_function_is_longer_than_eighty_lines() {
    let mut long = Vec::new();
    for (path, text) in source::files() {
        let rel = path.display().to_string();
        for (name, line, len) in functions(&text) {
            if len > MAX && !EXEMPT.contains(&format!("{rel}:{name}").as_str()) {
                long.push(format!("{rel}:{line} `{name}`: {len} lines"));
            }
        }
    }
    assert!(
        long.is_empty(),
        "over {MAX} lines (split them):\n{}",
        long.join("\n")
    );
}

#[test]
fn the_count_sees_bodies_braces_and_declarations() {
    let text = r##"
pub(crate) async fn one() {
    let s = "{ not a brace";
    let c = '{';
    let raw = r#"}"#; /* } */
    // } nor this
    if true {
        x('\'');
    }
}

fn declared_only(&self);

const fn two<'a>(x: &'a str) -> &'a str {
    x
}
"##;
    let got = functions(text);
    assert_eq!(
        got,
        [("one".to_owned(), 2, 9), ("two".to_owned(), 14, 3)],
        "{got:?}"
    );
}
