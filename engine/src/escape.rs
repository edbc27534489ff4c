//! [`Escaped`]: how a peer-supplied text (a UID, an AE title, a patient's
//! name, a reason quoting them) is shown in a log line or on an operator's
//! terminal. Everything a sender controls goes through it, in the log lines
//! and in the `sluice` commands' output, so a value can neither forge a log
//! line (a newline followed by a fake `ERROR` line), nor drive the terminal
//! (ESC sequences that recolour, move the cursor or set the window title),
//! nor hide or reorder text (Unicode bidirectional overrides, zero-width
//! characters) (issue #19).
//!
//! What is escaped: the C0 controls (NUL, newline, ESC...) as `\0`, `\t`,
//! `\n`, `\r` or `\xNN`; DEL and the C1 controls (U+0080 to U+009F, which
//! some terminals obey as ESC sequences) as `\u{NN}`; the Unicode format
//! characters that reorder or hide text (U+061C, U+200B to U+200F, U+202A to
//! U+202E, U+2060 to U+2064, U+2066 to U+2069, U+FEFF) as `\u{NNNN}`; and the
//! backslash as `\\`, so an escape cannot be faked either. Everything else
//! is written as it is: ordinary UIDs, names and titles read unchanged.
//! Bytes that were not UTF-8 reached Sluice's strings as U+FFFD (decoding is
//! lossy), which is shown as is.
//!
//! JSON logs need none of this (serde escapes control characters), but the
//! text format and the operator commands write values raw, so the sites
//! write `%Escaped(&value)` rather than `%value`.

use std::fmt::{self, Write as _};

/// `T`'s `Display`, escaped (see the module documentation). Formatting
/// streams through: nothing is allocated.
#[derive(Debug, Clone, Copy)]
pub struct Escaped<T>(pub T);

impl<T: fmt::Display> fmt::Display for Escaped<T> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(EscapingWriter { inner: formatter }, "{}", self.0)
    }
}

/// Writes through to `inner`, escaping what [`needs_escape`] says.
struct EscapingWriter<'a, 'b> {
    inner: &'a mut fmt::Formatter<'b>,
}

impl fmt::Write for EscapingWriter<'_, '_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let mut clean_from = 0;
        for (at, character) in text.char_indices() {
            if !needs_escape(character) {
                continue;
            }
            self.inner
                .write_str(text.get(clean_from..at).unwrap_or_default())?;
            match character {
                '\0' => self.inner.write_str("\\0")?,
                '\t' => self.inner.write_str("\\t")?,
                '\n' => self.inner.write_str("\\n")?,
                '\r' => self.inner.write_str("\\r")?,
                '\\' => self.inner.write_str("\\\\")?,
                c if u32::from(c) < 0x20 => write!(self.inner, "\\x{:02x}", u32::from(c))?,
                c => write!(self.inner, "\\u{{{:x}}}", u32::from(c))?,
            }
            clean_from = at + character.len_utf8();
        }
        self.inner
            .write_str(text.get(clean_from..).unwrap_or_default())
    }
}

/// Whether `character` is written escaped.
fn needs_escape(character: char) -> bool {
    matches!(
        character,
        '\0'..='\u{1f}'
            | '\\'
            | '\u{7f}'..='\u{9f}'
            | '\u{61c}'
            | '\u{200b}'..='\u{200f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{2069}'
            | '\u{feff}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(text: &str) -> String {
        Escaped(text).to_string()
    }

    #[test]
    fn ordinary_values_are_unchanged() {
        for text in [
            "1.2.840.113619.2.55.3.0123",
            "Müller^Hans",
            "山田^太郎",
            "CT_ROOM 1",
            "",
        ] {
            assert_eq!(escaped(text), text);
        }
    }

    #[test]
    fn controls_escapes_and_reordering_characters_are_escaped() {
        assert_eq!(
            escaped("1.2\n2026-01-01T00:00:00Z ERROR forged"),
            "1.2\\n2026-01-01T00:00:00Z ERROR forged"
        );
        assert_eq!(
            escaped("\u{1b}[31mred\u{1b}]0;title\u{7}"),
            "\\x1b[31mred\\x1b]0;title\\x07"
        );
        assert_eq!(escaped("a\0b\r\tc"), "a\\0b\\r\\tc");
        assert_eq!(escaped("back\\slash"), "back\\\\slash");
        assert_eq!(escaped("\u{9b}31m\u{7f}"), "\\u{9b}31m\\u{7f}");
        assert_eq!(escaped("abc\u{202e}fed"), "abc\\u{202e}fed");
        assert_eq!(
            escaped("zero\u{200b}width\u{feff}"),
            "zero\\u{200b}width\\u{feff}"
        );
        // Bytes that were not UTF-8 arrive as U+FFFD: shown, harmless.
        let lossy = String::from_utf8_lossy(b"bad\xff\xfe");
        assert_eq!(escaped(&lossy), "bad\u{fffd}\u{fffd}");
        // Through Display of anything, with no control character left.
        let text = Escaped(format_args!("{}|{}", "x\ny", 7)).to_string();
        assert_eq!(text, "x\\ny|7");
        assert!(!escaped("\u{0}\u{1f}\u{9f}").chars().any(char::is_control));
    }
}
