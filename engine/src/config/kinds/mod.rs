//! Option kinds: how one option's value is read from TOML and from a flag,
//! range-checked, described in the reference and written back as TOML.
//!
//! An option's declaration names its kind (for example
//! `ByteSizeKind::new(4096, 16 MiB)`); everything that differs between
//! options of the same Rust type (ranges, units, list limits) lives in the
//! kind value, so the declaration table stays one line of facts per option.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::ops::Range;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use toml::de::DeValue;
use toml::Spanned;

use super::values::{
    parse_enum, AccessRule, AccessService, AccessServices, AeSelection, AeTitle, ConfigEnum, Cores,
    TransferSyntaxSelection, Uid, ValueError, ACCESS_RULE_ADDRESSES_MAX, CORES_MAX,
};

mod compound;
mod scalar;
mod selection;

pub(crate) use compound::*;
pub(crate) use scalar::*;
pub(crate) use selection::*;

/// A TOML value with its byte span in the file.
pub(crate) type TomlValue<'i> = Spanned<DeValue<'i>>;

/// A problem with a value in the file, and the bytes it is about (an element
/// of an array or an entry of a table may be on its own line).
#[derive(Debug)]
pub(crate) struct SpannedError {
    pub(crate) span: Range<usize>,
    pub(crate) message: String,
}

impl SpannedError {
    fn at(value: &TomlValue<'_>, message: impl Into<String>) -> Self {
        SpannedError {
            span: value.span(),
            message: message.into(),
        }
    }
}

/// How an option's value is read, checked, documented and written.
pub(crate) trait Kind {
    /// The resolved Rust type.
    type Value: Clone + fmt::Debug + PartialEq;

    /// The type as the reference describes it, for example "integer, 1 to 65535".
    fn type_doc(&self) -> String;

    /// Named choices and their descriptions, for options with a closed set.
    fn choices(&self) -> Vec<(String, String)> {
        Vec::new()
    }

    /// The placeholder in `--help`, for example `PORT`.
    fn value_name(&self) -> &'static str;

    /// For flags given once per element (lists) or entry (tables), what
    /// one occurrence adds; `None` for a flag given at most once.
    fn repeat_unit(&self) -> Option<&'static str> {
        None
    }

    /// Reads and checks a value from the file.
    fn read_toml(&self, value: &TomlValue<'_>) -> Result<Self::Value, SpannedError>;

    /// Reads and checks a value from a flag's arguments (one for a plain
    /// flag, one per occurrence for a repeatable one).
    fn read_flag(&self, arguments: &[String]) -> Result<Self::Value, String>;

    /// Checks a value however it was made (an embedder may build a
    /// `Config` in code): the ranges `read_toml` and `read_flag` enforce.
    fn check(&self, value: &Self::Value) -> Result<(), String>;

    /// The value as TOML, or `None` for "not set".
    fn to_toml(&self, value: &Self::Value) -> Option<String>;
}

/// "a string", "an integer", ... for type mismatch messages.
fn type_with_article(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date-time",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

fn expect_str<'a>(value: &'a TomlValue<'_>, expected: &str) -> Result<&'a str, SpannedError> {
    value.get_ref().as_str().ok_or_else(|| {
        SpannedError::at(
            value,
            format!(
                "expected {expected}, found {}",
                type_with_article(value.get_ref())
            ),
        )
    })
}

/// A TOML integer as written (for messages) and as a number.
fn expect_integer(value: &TomlValue<'_>, expected: &str) -> Result<(i128, String), SpannedError> {
    match value.get_ref() {
        DeValue::Integer(integer) => i128::from_str_radix(integer.as_str(), integer.radix())
            .map(|number| (number, integer.to_string()))
            .map_err(|_| SpannedError::at(value, format!("{integer} is out of range"))),
        other => Err(SpannedError::at(
            value,
            format!("expected {expected}, found {}", type_with_article(other)),
        )),
    }
}

fn single(arguments: &[String]) -> &str {
    // clap's `ArgAction::Set` refuses a repeated flag, so there is exactly
    // one argument; the last one wins should that ever change.
    arguments.last().map_or("", String::as_str)
}

/// A string as a TOML basic string, escaped as TOML requires.
pub(crate) fn toml_string(text: &str) -> String {
    // Always a one-line basic string (toml's own writer may choose a
    // literal or multi-line form, which is not valid as a key).
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            c if c.is_control() => quoted.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// A table key as TOML: bare if it can be, else quoted.
pub(crate) fn toml_key(text: &str) -> String {
    let bare = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare {
        text.to_owned()
    } else {
        toml_string(text)
    }
}

fn range_message<T: fmt::Display + PartialOrd>(
    written: &str,
    value: T,
    min: T,
    max: T,
    show: impl Fn(&T) -> String,
) -> Result<(), String> {
    if value < min {
        Err(format!("{written} is below the minimum {}", show(&min)))
    } else if value > max {
        Err(format!("{written} is above the maximum {}", show(&max)))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_parse_with_and_without_units() {
        assert_eq!(parse_byte_size("16384"), Ok(16384));
        assert_eq!(parse_byte_size("16_384"), Ok(16384));
        assert_eq!(parse_byte_size("16KiB"), Ok(16384));
        assert_eq!(parse_byte_size("2 GiB"), Ok(2 << 30));
        assert_eq!(parse_byte_size("2gib"), Ok(2 << 30));
        assert_eq!(parse_byte_size("500MB"), Ok(500_000_000));
        assert_eq!(parse_byte_size("7B"), Ok(7));
        assert!(parse_byte_size("2 GiBs").is_err());
        assert!(parse_byte_size("1.5GiB").is_err());
        assert!(parse_byte_size("GiB").is_err());
        assert!(parse_byte_size("-1").is_err());
        assert!(parse_byte_size("99999999999TiB")
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn byte_sizes_render_in_the_largest_exact_unit() {
        assert_eq!(render_byte_size(16384), "16384");
        assert_eq!(render_byte_size(16 << 20), "16MiB");
        assert_eq!(render_byte_size(1 << 30), "1GiB");
        assert_eq!(render_byte_size(3 << 40), "3TiB");
        assert_eq!(render_byte_size((1 << 20) + 1), "1048577");
        for bytes in [4096, 16 << 20, 1 << 30, 64 << 30, (1 << 20) + 1] {
            assert_eq!(parse_byte_size(&render_byte_size(bytes)), Ok(bytes));
        }
    }

    #[test]
    fn toml_keys_are_quoted_only_when_needed() {
        assert_eq!(toml_key("PACS_1"), "PACS_1");
        assert_eq!(toml_key("MY PACS"), "\"MY PACS\"");
        for awkward in ["A\"B", "A'B\"C", "MY PACS", "x.y", "C:\\data", "tab\there"] {
            let table: toml::Table = toml::from_str(&format!("{} = 1", toml_key(awkward))).unwrap();
            assert!(table.contains_key(awkward), "{awkward}");
        }
    }

    #[test]
    fn durations_check_exactness_and_range() {
        let kind = DurationKind::new(TimeUnit::Milliseconds, 1, 1000);
        assert!(kind.check(&Duration::from_millis(5)).is_ok());
        assert!(kind.check(&Duration::from_micros(5500)).is_err());
        assert_eq!(
            kind.check(&Duration::from_secs(2)).unwrap_err(),
            "2000 is above the maximum 1000"
        );
        assert_eq!(
            kind.read_flag(&["0".into()]).unwrap_err(),
            "0 is below the minimum 1"
        );
    }
}
