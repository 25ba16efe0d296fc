//! Text from the server, shown so that it cannot forge output: another
//! member's message or name may hold a carriage return that rewrites the
//! line, an escape sequence, or a bidi override that reorders what is
//! shown. Such characters are written as escapes (`\r`, `\u{202e}`), and
//! backslashes as `\\`, so every escape on screen came from an escape.

use std::fmt::Write as _;

/// `text`, safe to print on one terminal line.
pub fn safe(text: &str) -> String {
    let mut shown = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => shown.push_str("\\\\"),
            '\n' => shown.push_str("\\n"),
            '\r' => shown.push_str("\\r"),
            '\t' => shown.push_str("\\t"),
            c if c.is_control() || is_format_control(c) => {
                let _ = write!(shown, "\\u{{{:x}}}", c as u32);
            }
            c => shown.push(c),
        }
    }
    shown
}

/// Bidi embeddings, overrides, isolates and marks, and other invisible
/// formatting characters that change how the rest of a line shows.
fn is_format_control(c: char) -> bool {
    matches!(
        c,
        '\u{061c}'
            | '\u{200b}'..='\u{200f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2060}'..='\u{2069}'
            | '\u{feff}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_could_forge_a_line_is_escaped() {
        assert_eq!(safe("\r#99 admin: hi"), "\\r#99 admin: hi");
        assert_eq!(safe("two\nlines\ttab"), "two\\nlines\\ttab");
        assert_eq!(safe("\u{1b}[2Jcleared"), "\\u{1b}[2Jcleared");
        assert_eq!(safe("abc\u{202e}fed"), "abc\\u{202e}fed");
        assert_eq!(safe("a\\nb"), "a\\\\nb");
        assert_eq!(safe("héllo 👋"), "héllo 👋");
    }
}
