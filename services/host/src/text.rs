//! Text that people read as someone's name or a chat's title must show
//! what it holds. Unicode has characters that show nothing (format
//! characters such as U+200B ZERO WIDTH SPACE, fillers that render blank)
//! and characters that reorder what follows them (bidi overrides such as
//! U+202E): with them, `admin` followed by an invisible character passes
//! for `admin`, and a name can make the rest of a line read backwards
//! (Unicode TR #39 and UAX #9). Identifiers refuse them all; message text
//! keeps what languages need (ZWJ in emoji, ZWNJ in Persian) but no bidi
//! control that runs past the message.

use unicode_properties::{GeneralCategory, UnicodeGeneralCategory as _};

/// Characters that render as nothing, or blank, outside the format
/// category: fillers, the combining grapheme joiner, variation selectors
/// and the braille blank.
fn blank(c: char) -> bool {
    matches!(
        c,
        '\u{034F}'
            | '\u{115F}'
            | '\u{1160}'
            | '\u{17B4}'
            | '\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{2800}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FFA0}'
            | '\u{E0100}'..='\u{E01EF}'
    )
}

/// The first character of `text` that an identifier (a user's name, a
/// chat's title) may not hold because it is invisible or changes the
/// direction of what follows: every format character (category Cf, bidi
/// controls among them), and the blank ones besides.
pub fn hidden_char(text: &str) -> Option<char> {
    text.chars()
        .find(|&c| c.general_category() == GeneralCategory::Format || blank(c))
}

/// What an identifier holding `c` is told.
pub fn hidden_char_description(c: char) -> String {
    format!(
        "must not contain invisible or direction-changing characters (U+{:04X})",
        c as u32
    )
}

/// Whether `text` leaves a bidi embedding, override or isolate open, or
/// closes one it never opened: such a control would reorder whatever is
/// shown after the message. Balanced pairs within the message are fine.
pub fn unbalanced_bidi(text: &str) -> bool {
    // Embeddings and overrides close with PDF, isolates with PDI; a PDI
    // also closes the embeddings opened inside its isolate (UAX #9, X6a).
    #[derive(PartialEq)]
    enum Open {
        Embedding,
        Isolate,
    }
    let mut open = Vec::new();
    for c in text.chars() {
        match c {
            '\u{202A}' | '\u{202B}' | '\u{202D}' | '\u{202E}' => open.push(Open::Embedding),
            '\u{2066}' | '\u{2067}' | '\u{2068}' => open.push(Open::Isolate),
            '\u{202C}' => {
                let closed = open.pop_if(|last| *last == Open::Embedding);
                if closed.is_none() {
                    return true;
                }
            }
            '\u{2069}' => {
                let Some(isolate) = open.iter().rposition(|o| *o == Open::Isolate) else {
                    return true;
                };
                open.truncate(isolate);
            }
            _ => {}
        }
    }
    !open.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invisible_and_direction_changing_characters_are_found() {
        for hidden in [
            "admin\u{200B}",
            "grace\u{202E}",
            "a\u{2066}b",
            "\u{FEFF}ada",
            "ad\u{00AD}a",
            "ada\u{3164}",
            "ada\u{FE0F}",
            "a\u{034F}da",
        ] {
            assert!(hidden_char(hidden).is_some(), "{hidden:?} passed");
        }
        for visible in [
            "Ada Lovelace",
            "ü".repeat(3).as_str(),
            "Grace Hopper 🚀",
            "علی",
        ] {
            assert_eq!(hidden_char(visible), None, "{visible:?} refused");
        }
    }

    #[test]
    fn bidi_controls_must_close_within_the_message() {
        assert!(!unbalanced_bidi("plain text"));
        assert!(!unbalanced_bidi("a \u{202E}reversed\u{202C} b"));
        assert!(!unbalanced_bidi("a \u{2067}\u{202B}x\u{2069} b"));
        assert!(!unbalanced_bidi("👩\u{200D}💻 and می\u{200C}خواهم"));
        assert!(unbalanced_bidi("runs past \u{202E}the end"));
        assert!(unbalanced_bidi("closes \u{202C}nothing"));
        assert!(unbalanced_bidi("isolate \u{2068}left open"));
        assert!(unbalanced_bidi("\u{2069}"));
    }
}
