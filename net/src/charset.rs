//! Specific Character Set (0008,0005) decoding.
//!
//! Owns the turning of text-valued element bytes into Unicode for the places
//! Sluice reads text (index, query matching, reports); stored bytes are never
//! touched. Covers the defined terms of PS3.3 C.12.1.1.2 that requirements §6
//! (seed 2.7) needs: the default repertoire, the ISO 8859 family, JIS X 0201,
//! TIS 620, UTF-8, GB18030 and GBK, and the ISO 2022 code-extension forms with
//! escape sequences (PS3.5 §6.1.2.5, Annexes H, I, J) for Japanese (IR 13, 87,
//! 159), Korean (IR 149), simplified Chinese (IR 58) and the single-byte sets.
//!
//! The byte tables come from `encoding_rs` (WHATWG); this module adds the
//! DICOM parts: term parsing, ISO 2022 escape handling (G0/G1 designation and
//! the return to the initial designation at delimiters, PS3.5 §6.1.2.5.3) and
//! the mapping of 94-character sets onto the EUC forms encoding_rs decodes.
//! Invalid bytes and unknown escape sequences decode to U+FFFD; nothing here
//! can panic on input.

use std::borrow::Cow;

use encoding_rs::Encoding;

const ESC: u8 = 0x1B;

/// The graphic set designated to G0 (bytes 0x21..=0x7E).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum G0 {
    /// ISO 646 / ASCII (ISO-IR 6), and JIS X 0201 Romaji (ISO-IR 14), which
    /// is decoded as ASCII like pydicom and DCMTK do so that `\` stays the
    /// value delimiter instead of becoming a yen sign.
    Ascii,
    /// JIS X 0208 (ISO-IR 87), two bytes per character.
    Jis0208,
    /// JIS X 0212 (ISO-IR 159), two bytes per character.
    Jis0212,
}

/// The graphic set designated to G1 (bytes 0xA0..=0xFF).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum G1 {
    /// Nothing designated: bytes with the high bit set are invalid.
    None,
    /// ISO 8859-1, decoded directly (byte value = code point).
    Latin1,
    /// Another single-byte set whose upper half encoding_rs decodes.
    SingleByte(&'static Encoding),
    /// JIS X 0201 Katakana (ISO-IR 13).
    Katakana,
    /// KS X 1001 (ISO-IR 149) in GR: EUC-KR bytes.
    Ksx1001,
    /// GB 2312 (ISO-IR 58) in GR: EUC-CN bytes, decoded by GBK.
    Gb2312,
}

/// How a whole value is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// ISO 2022 state machine (also used for single-byte sets without code
    /// extensions, where no escape sequence is expected).
    Iso2022 {
        /// Whether escape sequences are honoured (some value is "ISO 2022 ...").
        code_extensions: bool,
    },
    /// ISO_IR 192.
    Utf8,
    /// GB18030 (also used for GBK, a subset).
    Gb18030,
}

/// A parsed Specific Character Set (0008,0005) value, ready to decode text.
///
/// `Default` is the default repertoire (attribute absent or empty): ASCII,
/// with any byte above 0x7F decoded as U+FFFD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecificCharacterSet {
    mode: Mode,
    initial_g0: G0,
    initial_g1: G1,
}

impl Default for SpecificCharacterSet {
    fn default() -> Self {
        Self {
            mode: Mode::Iso2022 {
                code_extensions: false,
            },
            initial_g0: G0::Ascii,
            initial_g1: G1::None,
        }
    }
}

/// Why a Specific Character Set value cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CharsetError {
    /// A term that is not a defined term of PS3.3 C.12.1.1.2.
    #[error("unknown Specific Character Set term {term:?}")]
    UnknownTerm {
        /// The term, lossily decoded and cut to 64 characters.
        term: String,
    },
}

/// What a defined term designates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Term {
    /// A designation into G0 and/or G1 (ISO 2022 compatible sets).
    Sets {
        g0: Option<G0>,
        g1: G1,
        code_extension: bool,
    },
    Utf8,
    Gb18030,
}

fn parse_term(term: &[u8]) -> Option<Term> {
    let (code_extension, rest) = if let Some(rest) = term.strip_prefix(b"ISO 2022 IR ") {
        (true, rest)
    } else if let Some(rest) = term.strip_prefix(b"ISO_IR ") {
        (false, rest)
    } else {
        return match term {
            b"GB18030" => Some(Term::Gb18030),
            b"GBK" => Some(Term::Gb18030),
            _ => None,
        };
    };
    let sets = |g0: Option<G0>, g1: G1| {
        Some(Term::Sets {
            g0,
            g1,
            code_extension,
        })
    };
    match (code_extension, rest) {
        (_, b"6") => sets(Some(G0::Ascii), G1::None),
        (_, b"100") => sets(Some(G0::Ascii), G1::Latin1),
        (_, b"101") => sets(Some(G0::Ascii), G1::SingleByte(encoding_rs::ISO_8859_2)),
        (_, b"109") => sets(Some(G0::Ascii), G1::SingleByte(encoding_rs::ISO_8859_3)),
        (_, b"110") => sets(Some(G0::Ascii), G1::SingleByte(encoding_rs::ISO_8859_4)),
        (_, b"144") => sets(Some(G0::Ascii), G1::SingleByte(encoding_rs::ISO_8859_5)),
        (_, b"127") => sets(Some(G0::Ascii), G1::SingleByte(encoding_rs::ISO_8859_6)),
        (_, b"126") => sets(Some(G0::Ascii), G1::SingleByte(encoding_rs::ISO_8859_7)),
        (_, b"138") => sets(Some(G0::Ascii), G1::SingleByte(encoding_rs::ISO_8859_8)),
        // The WHATWG table for ISO 8859-9 is windows-1254, identical on 0xA0..=0xFF.
        (_, b"148") => sets(Some(G0::Ascii), G1::SingleByte(encoding_rs::WINDOWS_1254)),
        (_, b"203") => sets(Some(G0::Ascii), G1::SingleByte(encoding_rs::ISO_8859_15)),
        // TIS 620-2533; windows-874 is identical on 0xA0..=0xFF.
        (_, b"166") => sets(Some(G0::Ascii), G1::SingleByte(encoding_rs::WINDOWS_874)),
        (_, b"13") => sets(Some(G0::Ascii), G1::Katakana),
        (_, b"192") if !code_extension => Some(Term::Utf8),
        (true, b"87") => sets(Some(G0::Jis0208), G1::None),
        (true, b"159") => sets(Some(G0::Jis0212), G1::None),
        (true, b"149") => sets(None, G1::Ksx1001),
        (true, b"58") => sets(None, G1::Gb2312),
        _ => None,
    }
}

impl SpecificCharacterSet {
    /// UTF-8 (ISO_IR 192).
    pub const UTF_8: Self = Self {
        mode: Mode::Utf8,
        initial_g0: G0::Ascii,
        initial_g1: G1::None,
    };

    /// Parses the raw value of (0008,0005): terms separated by `\`, each
    /// trimmed of spaces and NULs. Value 1 gives the initial designation; an
    /// empty value 1 means the default repertoire (ISO 2022 IR 6). Any
    /// "ISO 2022" term turns escape-sequence handling on.
    pub fn parse(value: &[u8]) -> Result<Self, CharsetError> {
        Self::parse_inner(value, true)
    }

    /// Like [`parse`](Self::parse) but ignores unknown terms (an unknown value
    /// 1 falls back to the default repertoire): for reading text from stored
    /// objects, where a best effort beats no text.
    pub fn parse_lenient(value: &[u8]) -> Self {
        Self::parse_inner(value, false).unwrap_or_default()
    }

    fn parse_inner(value: &[u8], strict: bool) -> Result<Self, CharsetError> {
        let mut charset = Self::default();
        let mut code_extensions = false;
        for (index, raw_term) in value.split(|byte| *byte == b'\\').enumerate() {
            let term = trim_padding(raw_term);
            if term.is_empty() {
                continue;
            }
            let parsed = match parse_term(term) {
                Some(parsed) => parsed,
                None if strict => {
                    let text = String::from_utf8_lossy(term);
                    return Err(CharsetError::UnknownTerm {
                        term: text.chars().take(64).collect(),
                    });
                }
                None => continue,
            };
            match parsed {
                Term::Utf8 if index == 0 => charset.mode = Mode::Utf8,
                Term::Gb18030 if index == 0 => charset.mode = Mode::Gb18030,
                // UTF-8 and GB18030 cannot be combined with code extensions
                // (PS3.3 C.12.1.1.2): as a later value they are ignored.
                Term::Utf8 | Term::Gb18030 => {}
                Term::Sets {
                    g0,
                    g1,
                    code_extension,
                } => {
                    code_extensions |= code_extension;
                    if index == 0 {
                        if let Some(g0) = g0 {
                            charset.initial_g0 = g0;
                        }
                        charset.initial_g1 = g1;
                    }
                }
            }
        }
        if let Mode::Iso2022 { .. } = charset.mode {
            charset.mode = Mode::Iso2022 { code_extensions };
        }
        Ok(charset)
    }

    /// Decodes a text value (SH, LO, ST, LT, UT, UC, CS...). The initial
    /// designation is restored at CR, LF, FF, TAB and the `\` value delimiter.
    /// Trailing padding is kept; trim it first if needed.
    pub fn decode<'a>(&self, bytes: &'a [u8]) -> Cow<'a, str> {
        self.decode_with(bytes, false)
    }

    /// Decodes a Person Name (PN) value: like [`decode`](Self::decode), and the
    /// initial designation is also restored at the `^` and `=` delimiters.
    pub fn decode_person_name<'a>(&self, bytes: &'a [u8]) -> Cow<'a, str> {
        self.decode_with(bytes, true)
    }

    fn decode_with<'a>(&self, bytes: &'a [u8], person_name: bool) -> Cow<'a, str> {
        match self.mode {
            Mode::Utf8 => String::from_utf8_lossy(bytes),
            Mode::Gb18030 => encoding_rs::GB18030.decode_without_bom_handling(bytes).0,
            Mode::Iso2022 { code_extensions } => {
                if bytes.is_ascii()
                    && !(code_extensions && bytes.contains(&ESC))
                    && self.initial_g0 == G0::Ascii
                {
                    // ASCII is valid UTF-8: borrow, no allocation.
                    return match std::str::from_utf8(bytes) {
                        Ok(text) => Cow::Borrowed(text),
                        Err(_) => String::from_utf8_lossy(bytes),
                    };
                }
                Cow::Owned(self.decode_iso2022(bytes, code_extensions, person_name))
            }
        }
    }

    fn decode_iso2022(&self, bytes: &[u8], code_extensions: bool, person_name: bool) -> String {
        let mut out = String::with_capacity(bytes.len().saturating_add(bytes.len() / 2));
        let mut g0 = self.initial_g0;
        let mut g1 = self.initial_g1;
        let mut rest = bytes;
        while let Some(&byte) = rest.first() {
            if byte == ESC && code_extensions {
                match parse_escape(rest) {
                    Some((consumed, designation)) => {
                        match designation {
                            Designation::G0(set) => g0 = set,
                            Designation::G1(set) => g1 = set,
                        }
                        rest = rest.get(consumed..).unwrap_or_default();
                    }
                    None => {
                        out.push(char::REPLACEMENT_CHARACTER);
                        rest = rest.get(1..).unwrap_or_default();
                    }
                }
                continue;
            }
            if byte == ESC {
                // Without code extensions ESC is a plain control character.
                out.push(char::from(ESC));
                g0 = self.initial_g0;
                g1 = self.initial_g1;
                rest = rest.get(1..).unwrap_or_default();
                continue;
            }
            if byte < 0x80 {
                match g0 {
                    G0::Ascii => {
                        let run = run_length(rest, |b| b < 0x80 && b != ESC);
                        let (chunk, tail) = rest.split_at(run);
                        rest = tail;
                        for &ascii in chunk {
                            out.push(char::from(ascii));
                            if is_reset_delimiter(ascii, person_name) {
                                g0 = self.initial_g0;
                                g1 = self.initial_g1;
                            }
                        }
                    }
                    G0::Jis0208 | G0::Jis0212 => {
                        let (consumed, reset) = decode_jis_run(rest, g0, &mut out);
                        rest = rest.get(consumed..).unwrap_or_default();
                        if reset {
                            g0 = self.initial_g0;
                            g1 = self.initial_g1;
                        }
                    }
                }
            } else {
                let run = run_length(rest, |b| b >= 0x80);
                let (chunk, tail) = rest.split_at(run);
                rest = tail;
                decode_upper_run(chunk, g1, &mut out);
            }
        }
        out
    }
}

/// Length of the prefix of `bytes` whose bytes all satisfy `keep`.
fn run_length(bytes: &[u8], keep: impl Fn(u8) -> bool) -> usize {
    bytes
        .iter()
        .position(|&byte| !keep(byte))
        .unwrap_or(bytes.len())
}

/// Whether `byte` (decoded in a single-byte G0) returns the designations to
/// their initial state (PS3.5 §6.1.2.5.3).
fn is_reset_delimiter(byte: u8, person_name: bool) -> bool {
    matches!(byte, b'\r' | b'\n' | 0x0C | b'\t' | b'\\')
        || (person_name && matches!(byte, b'^' | b'='))
}

/// Decodes two-byte JIS characters from the GL bytes at the start of
/// `bytes`, up to an ESC, a byte above 0x7F, or just after a control
/// character (below 0x21 except SPACE, which JIS leaves as SPACE). Returns
/// the bytes consumed and whether a control character ended the run (which
/// returns the designations to their initial state).
fn decode_jis_run(bytes: &[u8], g0: G0, out: &mut String) -> (usize, bool) {
    let mut euc = Vec::with_capacity(bytes.len().saturating_add(bytes.len() / 2));
    let mut rest = bytes;
    let mut reset = false;
    loop {
        match rest {
            [first, second, tail @ ..]
                if (0x21..=0x7E).contains(first) && (0x21..=0x7E).contains(second) =>
            {
                if g0 == G0::Jis0212 {
                    euc.push(0x8F);
                }
                euc.push(first | 0x80);
                euc.push(second | 0x80);
                rest = tail;
            }
            [b' ', tail @ ..] => {
                flush_euc_jp(&mut euc, out);
                out.push(' ');
                rest = tail;
            }
            [control, tail @ ..] if *control < 0x21 && *control != ESC => {
                flush_euc_jp(&mut euc, out);
                out.push(char::from(*control));
                rest = tail;
                reset = true;
                break;
            }
            [byte, tail @ ..] if *byte != ESC && *byte < 0x80 => {
                // A lone byte where a two-byte character belongs.
                flush_euc_jp(&mut euc, out);
                out.push(char::REPLACEMENT_CHARACTER);
                rest = tail;
            }
            _ => break,
        }
    }
    flush_euc_jp(&mut euc, out);
    (bytes.len().saturating_sub(rest.len()), reset)
}

fn flush_euc_jp(euc: &mut Vec<u8>, out: &mut String) {
    if !euc.is_empty() {
        out.push_str(&encoding_rs::EUC_JP.decode_without_bom_handling(euc).0);
        euc.clear();
    }
}

/// Decodes a run of bytes 0x80..=0xFF through the G1 set.
fn decode_upper_run(chunk: &[u8], g1: G1, out: &mut String) {
    match g1 {
        G1::None => chunk
            .iter()
            .for_each(|_| out.push(char::REPLACEMENT_CHARACTER)),
        G1::Latin1 => chunk.iter().for_each(|&byte| out.push(char::from(byte))),
        G1::SingleByte(encoding) => out.push_str(&encoding.decode_without_bom_handling(chunk).0),
        G1::Katakana => {
            for &byte in chunk {
                match byte {
                    // JIS X 0201 0xA1..=0xDF are the halfwidth katakana U+FF61..=U+FF9F.
                    0xA1..=0xDF => {
                        let code_point = 0xFF61u32.saturating_add(u32::from(byte - 0xA1));
                        out.push(char::from_u32(code_point).unwrap_or(char::REPLACEMENT_CHARACTER));
                    }
                    _ => out.push(char::REPLACEMENT_CHARACTER),
                }
            }
        }
        G1::Ksx1001 => out.push_str(&encoding_rs::EUC_KR.decode_without_bom_handling(chunk).0),
        G1::Gb2312 => out.push_str(&encoding_rs::GBK.decode_without_bom_handling(chunk).0),
    }
}

/// An escape sequence's effect.
#[derive(Debug, Clone, Copy)]
enum Designation {
    G0(G0),
    G1(G1),
}

/// Parses the escape sequence at the start of `bytes` (PS3.3 Tables C.12-3
/// and C.12-4). Returns the bytes consumed and the designation, or `None` for
/// an unknown or cut-off sequence.
fn parse_escape(bytes: &[u8]) -> Option<(usize, Designation)> {
    let single_byte = |encoding| Designation::G1(G1::SingleByte(encoding));
    match bytes {
        [ESC, b'(', b'B', ..] | [ESC, b'(', b'J', ..] => Some((3, Designation::G0(G0::Ascii))),
        [ESC, b')', b'I', ..] => Some((3, Designation::G1(G1::Katakana))),
        [ESC, b'$', b'B', ..] => Some((3, Designation::G0(G0::Jis0208))),
        [ESC, b'$', b'(', b'D', ..] => Some((4, Designation::G0(G0::Jis0212))),
        [ESC, b'$', b')', b'C', ..] => Some((4, Designation::G1(G1::Ksx1001))),
        [ESC, b'$', b')', b'A', ..] => Some((4, Designation::G1(G1::Gb2312))),
        [ESC, b'-', final_byte, ..] => {
            let designation = match final_byte {
                b'A' => Designation::G1(G1::Latin1),
                b'B' => single_byte(encoding_rs::ISO_8859_2),
                b'C' => single_byte(encoding_rs::ISO_8859_3),
                b'D' => single_byte(encoding_rs::ISO_8859_4),
                b'L' => single_byte(encoding_rs::ISO_8859_5),
                b'G' => single_byte(encoding_rs::ISO_8859_6),
                b'F' => single_byte(encoding_rs::ISO_8859_7),
                b'H' => single_byte(encoding_rs::ISO_8859_8),
                b'M' => single_byte(encoding_rs::WINDOWS_1254),
                b'b' => single_byte(encoding_rs::ISO_8859_15),
                b'T' => single_byte(encoding_rs::WINDOWS_874),
                _ => return None,
            };
            Some((3, designation))
        }
        _ => None,
    }
}

/// Trims trailing and leading spaces and NULs (value padding).
fn trim_padding(bytes: &[u8]) -> &[u8] {
    let is_padding = |byte: &u8| *byte == b' ' || *byte == 0;
    let start = bytes
        .iter()
        .position(|byte| !is_padding(byte))
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|byte| !is_padding(byte))
        .map_or(start, |last| last.saturating_add(1));
    bytes.get(start..end).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_pn(charset: &[u8], bytes: &[u8]) -> String {
        SpecificCharacterSet::parse(charset)
            .unwrap()
            .decode_person_name(bytes)
            .into_owned()
    }

    #[test]
    fn default_repertoire() {
        let charset = SpecificCharacterSet::parse(b"").unwrap();
        assert_eq!(charset, SpecificCharacterSet::default());
        assert!(matches!(
            charset.decode(b"Doe^John"),
            Cow::Borrowed("Doe^John")
        ));
        assert_eq!(charset.decode(b"Caf\xe9"), "Caf\u{FFFD}");
        assert_eq!(
            SpecificCharacterSet::parse(b"ISO_IR 6")
                .unwrap()
                .decode(b"abc"),
            "abc"
        );
    }

    #[test]
    fn single_byte_sets() {
        // One name per set, as in pydicom's and PS3.5's examples.
        assert_eq!(decode_pn(b"ISO_IR 100", b"Buc^J\xe9r\xf4me"), "Buc^Jérôme");
        assert_eq!(decode_pn(b"ISO_IR 101", b"Wal\xeawska"), "Walęwska");
        assert_eq!(
            decode_pn(b"ISO_IR 144", b"\xb8\xd2\xd0\xdd\xde\xd2"),
            "Иванов"
        );
        assert_eq!(
            decode_pn(b"ISO_IR 126", b"\xc4\xe9\xef\xed\xf5\xf3\xe9\xef\xf2"),
            "Διονυσιος"
        );
        assert_eq!(
            decode_pn(b"ISO_IR 138", b"\xf9\xf8\xe5\xef^\xe3\xe1\xe5\xf8\xe4"),
            "שרון^דבורה"
        );
        assert_eq!(
            decode_pn(b"ISO_IR 127", b"\xe2\xc8\xc7\xe6\xea^\xe4\xe6\xd2\xc7\xd1"),
            "قباني^لنزار"
        );
        assert_eq!(decode_pn(b"ISO_IR 148", b"\xc7avu\xfe"), "Çavuş");
        assert_eq!(decode_pn(b"ISO_IR 166", b"\xb9\xd2\xc2"), "นาย");
        assert_eq!(decode_pn(b"ISO_IR 109", b"\xc5"), "Ċ");
        assert_eq!(decode_pn(b"ISO_IR 110", b"\xa7"), "§");
        assert_eq!(decode_pn(b"ISO_IR 203", b"\xa4"), "€");
        // JIS X 0201: katakana in the upper half.
        assert_eq!(
            decode_pn(b"ISO_IR 13", b"\xd4\xcf\xc0\xde^\xc0\xdb\xb3"),
            "ﾔﾏﾀﾞ^ﾀﾛｳ"
        );
    }

    #[test]
    fn japanese_iso_2022_ir_87_ps3_5_h_3_1() {
        let bytes =
            b"Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B=\x1b$B$d$^$@\x1b(B^\x1b$B$?$m$&\x1b(B";
        assert_eq!(
            decode_pn(b"\\ISO 2022 IR 87", bytes),
            "Yamada^Tarou=山田^太郎=やまだ^たろう"
        );
    }

    #[test]
    fn japanese_iso_2022_ir_13_and_87_ps3_5_h_3_2() {
        let bytes = b"\xd4\xcf\xc0\xde^\xc0\xdb\xb3=\x1b$B;3ED\x1b(J^\x1b$BB@O:\x1b(J=\x1b$B$d$^$@\x1b(J^\x1b$B$?$m$&\x1b(J";
        assert_eq!(
            decode_pn(b"ISO 2022 IR 13\\ISO 2022 IR 87", bytes),
            "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう"
        );
    }

    #[test]
    fn japanese_jis_x_0212() {
        // JIS X 0212 0x2B21 is "á" (LATIN SMALL LETTER A WITH ACUTE).
        assert_eq!(decode_pn(b"\\ISO 2022 IR 159", b"\x1b$(D+!\x1b(B"), "á");
    }

    #[test]
    fn korean_iso_2022_ir_149_ps3_5_i_2() {
        let bytes =
            b"Hong^Gildong=\x1b$)C\xfb\xf3^\x1b$)C\xd1\xce\xd4\xd7=\x1b$)C\xc8\xab^\x1b$)C\xb1\xe6\xb5\xbf";
        assert_eq!(
            decode_pn(b"\\ISO 2022 IR 149", bytes),
            "Hong^Gildong=洪^吉洞=홍^길동"
        );
    }

    #[test]
    fn chinese_gb18030_ps3_5_j_3() {
        assert_eq!(
            decode_pn(b"GB18030", b"Wang^XiaoDong=\xcd\xf5^\xd0\xa1\xb6\xab="),
            "Wang^XiaoDong=王^小东="
        );
        assert_eq!(
            decode_pn(b"GBK", b"Wang^XiaoDong=\xcd\xf5^\xd0\xa1\xb6\xab="),
            "Wang^XiaoDong=王^小东="
        );
        // A four-byte GB18030 sequence decodes too.
        let (four_byte, _, _) = encoding_rs::GB18030.encode("😀");
        assert_eq!(four_byte.len(), 4);
        assert_eq!(decode_pn(b"GB18030", &four_byte), "😀");
    }

    #[test]
    fn chinese_iso_2022_ir_58_ps3_5_j_4() {
        let bytes = b"Zhang^XiaoDong=\x1b$)A\xd5\xc5^\x1b$)A\xd0\xa1\xb6\xab=";
        assert_eq!(
            decode_pn(b"\\ISO 2022 IR 58", bytes),
            "Zhang^XiaoDong=张^小东="
        );
    }

    #[test]
    fn utf8_ps3_5_j_2() {
        assert_eq!(
            decode_pn(b"ISO_IR 192", "Wang^XiaoDong=王^小東=".as_bytes()),
            "Wang^XiaoDong=王^小東="
        );
        assert_eq!(decode_pn(b"ISO_IR 192", b"bad\xff"), "bad\u{FFFD}");
    }

    #[test]
    fn latin_with_code_extensions_switches_g1() {
        // Latin-1 initially, then Cyrillic via ESC - L, back at the delimiter.
        let charset = SpecificCharacterSet::parse(b"ISO 2022 IR 100\\ISO 2022 IR 144").unwrap();
        assert_eq!(
            charset.decode_person_name(b"J\xe9r\xf4me^\x1b-L\xbb\xee\xdaa^\xe9"),
            "Jérôme^Люкa^é"
        );
    }

    #[test]
    fn delimiter_resets_designation_in_text() {
        let charset = SpecificCharacterSet::parse(b"\\ISO 2022 IR 149").unwrap();
        // After `\` the G1 set returns to the initial (none): 0xC8 is invalid.
        assert_eq!(charset.decode(b"\x1b$)C\xc8\xab\\\xc8"), "홍\\\u{FFFD}");
        // `^` resets only in person names.
        assert_eq!(charset.decode(b"\x1b$)C\xc8\xab^\xc8\xab"), "홍^홍");
    }

    #[test]
    fn invalid_input_gives_replacement_not_panic() {
        let charset = SpecificCharacterSet::parse(b"ISO 2022 IR 13\\ISO 2022 IR 87").unwrap();
        assert_eq!(charset.decode(b"\x1b"), "\u{FFFD}");
        assert_eq!(charset.decode(b"\x1b$"), "\u{FFFD}$");
        assert_eq!(charset.decode(b"\x1bZ"), "\u{FFFD}Z");
        assert_eq!(charset.decode(b"\x1b$B;"), "\u{FFFD}");
        assert_eq!(charset.decode(b"\x1b$B;3\rA"), "山\rA");
        // A lone byte before SPACE is invalid; the pair after it decodes.
        assert_eq!(charset.decode(b"\x1b$B; 3E"), "\u{FFFD} 嚇");
        let korean = SpecificCharacterSet::parse(b"\\ISO 2022 IR 149").unwrap();
        assert_eq!(korean.decode(b"\x1b$)C\xc8"), "\u{FFFD}");
    }

    #[test]
    fn term_parsing() {
        assert!(matches!(
            SpecificCharacterSet::parse(b"ISO_IR 999"),
            Err(CharsetError::UnknownTerm { term }) if term == "ISO_IR 999"
        ));
        assert_eq!(
            SpecificCharacterSet::parse_lenient(b"KLINGON"),
            SpecificCharacterSet::default()
        );
        assert_eq!(
            SpecificCharacterSet::parse(b"ISO_IR 192 ").unwrap(),
            SpecificCharacterSet::UTF_8
        );
        // "ISO_IR 87" is not a defined term: JIS X 0208 needs code extensions.
        assert!(SpecificCharacterSet::parse(b"ISO_IR 87").is_err());
        // Padded value, escape handling on because of the 2022 form.
        let charset = SpecificCharacterSet::parse(b"\\ISO 2022 IR 87 \0").unwrap();
        assert_eq!(charset.decode(b"\x1b$B;3\x1b(B"), "山");
        // Without code extensions, ESC is just a control character.
        assert_eq!(
            SpecificCharacterSet::parse(b"ISO_IR 100")
                .unwrap()
                .decode(b"\x1b$B"),
            "\u{1b}$B"
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 256,
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x5117_0C45),
            ..proptest::prelude::ProptestConfig::default()
        })]
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
                        term in proptest::sample::select(vec![
                            &b""[..], b"ISO_IR 100", b"ISO_IR 13", b"ISO_IR 192", b"GB18030",
                            b"\\ISO 2022 IR 87\\ISO 2022 IR 159", b"ISO 2022 IR 13\\ISO 2022 IR 87",
                            b"\\ISO 2022 IR 149", b"\\ISO 2022 IR 58", b"ISO 2022 IR 100\\ISO 2022 IR 126",
                        ])) {
            let charset = SpecificCharacterSet::parse(term).unwrap();
            let text = charset.decode_person_name(&bytes);
            // Decoding never invents more than two characters per input byte.
            proptest::prop_assert!(text.chars().count() <= bytes.len().saturating_mul(2));
            let _ = charset.decode(&bytes);
        }
    }
}
