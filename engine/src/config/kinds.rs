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

/// A file-system path, relative to the directory Sluice is started in.
#[derive(Debug)]
pub(crate) struct PathKind;

impl Kind for PathKind {
    type Value = PathBuf;

    fn type_doc(&self) -> String {
        "path (string); a relative path is taken from the directory Sluice is started in".into()
    }

    fn value_name(&self) -> &'static str {
        "PATH"
    }

    fn read_toml(&self, value: &TomlValue<'_>) -> Result<PathBuf, SpannedError> {
        let text = expect_str(value, "a path (a string)")?;
        let path = PathBuf::from(text);
        self.check(&path)
            .map_err(|message| SpannedError::at(value, message))?;
        Ok(path)
    }

    fn read_flag(&self, arguments: &[String]) -> Result<PathBuf, String> {
        let path = PathBuf::from(single(arguments));
        self.check(&path)?;
        Ok(path)
    }

    fn check(&self, value: &PathBuf) -> Result<(), String> {
        if value.as_os_str().is_empty() {
            Err("the path is empty".into())
        } else {
            Ok(())
        }
    }

    fn to_toml(&self, value: &PathBuf) -> Option<String> {
        Some(toml_string(&value.to_string_lossy()))
    }
}

/// A string parsed by the value type's `FromStr`, which does all the
/// checking (AE titles, UIDs, addresses).
#[derive(Debug)]
pub(crate) struct TextKind<T> {
    type_doc: &'static str,
    value_name: &'static str,
    value_type: PhantomData<fn() -> T>,
}

impl<T> TextKind<T> {
    pub(crate) const fn new(type_doc: &'static str, value_name: &'static str) -> Self {
        TextKind {
            type_doc,
            value_name,
            value_type: PhantomData,
        }
    }
}

/// Errors of `FromStr` types usable in [`TextKind`].
pub(crate) trait TextError {
    /// The message for an administrator; `input` is the text that failed.
    fn text(&self, input: &str) -> String;
}

impl TextError for ValueError {
    fn text(&self, _input: &str) -> String {
        self.message().to_owned()
    }
}

impl TextError for std::net::AddrParseError {
    fn text(&self, input: &str) -> String {
        format!("{input:?} is not an IPv4 or IPv6 address")
    }
}

impl<T> Kind for TextKind<T>
where
    T: FromStr + fmt::Display + Clone + fmt::Debug + PartialEq,
    T::Err: TextError,
{
    type Value = T;

    fn type_doc(&self) -> String {
        self.type_doc.to_owned()
    }

    fn value_name(&self) -> &'static str {
        self.value_name
    }

    fn read_toml(&self, value: &TomlValue<'_>) -> Result<T, SpannedError> {
        let text = expect_str(value, "a string")?;
        text.parse::<T>()
            .map_err(|error| SpannedError::at(value, error.text(text)))
    }

    fn read_flag(&self, arguments: &[String]) -> Result<T, String> {
        let text = single(arguments);
        text.parse::<T>().map_err(|error| error.text(text))
    }

    fn check(&self, _value: &T) -> Result<(), String> {
        // Valid by construction: `T` is only made by `FromStr`.
        Ok(())
    }

    fn to_toml(&self, value: &T) -> Option<String> {
        Some(toml_string(&value.to_string()))
    }
}

/// An integer in a range.
#[derive(Debug)]
pub(crate) struct IntKind<T> {
    min: T,
    max: T,
}

impl<T> IntKind<T> {
    pub(crate) const fn new(min: T, max: T) -> Self {
        IntKind { min, max }
    }
}

impl<T> Kind for IntKind<T>
where
    T: Copy + fmt::Display + fmt::Debug + PartialEq + PartialOrd + Into<i128> + TryFrom<i128>,
{
    type Value = T;

    fn type_doc(&self) -> String {
        format!("integer, {} to {}", self.min, self.max)
    }

    fn value_name(&self) -> &'static str {
        "N"
    }

    fn read_toml(&self, value: &TomlValue<'_>) -> Result<T, SpannedError> {
        let (number, written) = expect_integer(value, "an integer")?;
        self.in_range(number, &written)
            .map_err(|message| SpannedError::at(value, message))
    }

    fn read_flag(&self, arguments: &[String]) -> Result<T, String> {
        let text = single(arguments);
        let number = text
            .parse::<i128>()
            .map_err(|_| format!("{text:?} is not a whole number"))?;
        self.in_range(number, text)
    }

    fn check(&self, value: &T) -> Result<(), String> {
        range_message(&value.to_string(), *value, self.min, self.max, T::to_string)
    }

    fn to_toml(&self, value: &T) -> Option<String> {
        Some(value.to_string())
    }
}

impl<T> IntKind<T>
where
    T: Copy + fmt::Display + PartialOrd + Into<i128> + TryFrom<i128>,
{
    fn in_range(&self, number: i128, written: &str) -> Result<T, String> {
        range_message(written, number, self.min.into(), self.max.into(), |n| {
            n.to_string()
        })?;
        T::try_from(number).map_err(|_| format!("{written} is out of range"))
    }
}

/// Binary and decimal units accepted in sizes, longest suffix first so that
/// "KiB" is not read as "B".
const SIZE_UNITS: [(&str, u64); 9] = [
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
    ("TiB", 1 << 40),
    ("KB", 1_000),
    ("MB", 1_000_000),
    ("GB", 1_000_000_000),
    ("TB", 1_000_000_000_000),
    ("B", 1),
];

/// Reads "2GiB", "500 MB", "16384", "16384B" (units case-insensitive).
pub(crate) fn parse_byte_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let digits_end = trimmed
        .find(|c: char| !c.is_ascii_digit() && c != '_')
        .unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(digits_end);
    let unit = unit.trim();
    let digits: String = digits.chars().filter(|c| *c != '_').collect();
    let not_a_size = || {
        format!(
            "{text:?} is not a size: write a whole number of bytes, optionally with a unit (B, KiB, MiB, GiB, TiB, KB, MB, GB, TB), for example \"2GiB\""
        )
    };
    let number: u64 = digits.parse().map_err(|_| not_a_size())?;
    let multiplier = if unit.is_empty() {
        1
    } else {
        SIZE_UNITS
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(unit))
            .map(|(_, multiplier)| *multiplier)
            .ok_or_else(not_a_size)?
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// A size the way the reference shows it: plain bytes below 1 MiB, else the
/// largest binary unit that divides it exactly.
pub(crate) fn render_byte_size(bytes: u64) -> String {
    if bytes < (1 << 20) {
        return bytes.to_string();
    }
    for (name, multiplier) in [("TiB", 1u64 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20)] {
        if bytes % multiplier == 0 {
            return format!("{}{name}", bytes / multiplier);
        }
    }
    bytes.to_string()
}

/// A size in bytes: a TOML integer, or a string with a unit.
#[derive(Debug)]
pub(crate) struct ByteSizeKind<T> {
    min: u64,
    max: u64,
    value_type: PhantomData<fn() -> T>,
}

impl<T> ByteSizeKind<T> {
    pub(crate) const fn new(min: u64, max: u64) -> Self {
        ByteSizeKind {
            min,
            max,
            value_type: PhantomData,
        }
    }
}

impl<T> ByteSizeKind<T>
where
    T: TryFrom<u64>,
{
    fn in_range(&self, bytes: u64, written: &str) -> Result<T, String> {
        range_message(written, bytes, self.min, self.max, |n| render_byte_size(*n))?;
        T::try_from(bytes).map_err(|_| format!("{written} is out of range"))
    }
}

impl<T> Kind for ByteSizeKind<T>
where
    T: Copy + fmt::Debug + PartialEq + Into<u64> + TryFrom<u64>,
{
    type Value = T;

    fn type_doc(&self) -> String {
        format!(
            "size in bytes: an integer, or a string with a unit (`\"64KiB\"`, `\"2GiB\"`, `\"500MB\"`); {} to {}",
            render_byte_size(self.min),
            render_byte_size(self.max)
        )
    }

    fn value_name(&self) -> &'static str {
        "SIZE"
    }

    fn read_toml(&self, value: &TomlValue<'_>) -> Result<T, SpannedError> {
        let (bytes, written) = match value.get_ref() {
            DeValue::Integer(_) => {
                let (number, written) = expect_integer(value, "a size")?;
                let bytes = u64::try_from(number)
                    .map_err(|_| SpannedError::at(value, format!("{written} is not a size")))?;
                (bytes, written)
            }
            DeValue::String(text) => {
                let bytes = parse_byte_size(text).map_err(|m| SpannedError::at(value, m))?;
                (bytes, format!("{text:?}"))
            }
            other => {
                return Err(SpannedError::at(
                    value,
                    format!(
                        "expected a size (an integer, or a string such as \"2GiB\"), found {}",
                        type_with_article(other)
                    ),
                ))
            }
        };
        self.in_range(bytes, &written)
            .map_err(|message| SpannedError::at(value, message))
    }

    fn read_flag(&self, arguments: &[String]) -> Result<T, String> {
        let text = single(arguments);
        let bytes = parse_byte_size(text)?;
        self.in_range(bytes, text)
    }

    fn check(&self, value: &T) -> Result<(), String> {
        let bytes: u64 = (*value).into();
        range_message(&render_byte_size(bytes), bytes, self.min, self.max, |n| {
            render_byte_size(*n)
        })
    }

    fn to_toml(&self, value: &T) -> Option<String> {
        let bytes: u64 = (*value).into();
        let shown = render_byte_size(bytes);
        Some(if shown.bytes().all(|b| b.is_ascii_digit()) {
            shown
        } else {
            toml_string(&shown)
        })
    }
}

/// The unit a duration option is written in; it is also the last part of
/// the option's name (`artim_timeout_ms`).
#[derive(Clone, Copy, Debug)]
pub(crate) enum TimeUnit {
    Microseconds,
    Milliseconds,
    Seconds,
}

impl TimeUnit {
    fn name(self) -> &'static str {
        match self {
            TimeUnit::Microseconds => "microseconds",
            TimeUnit::Milliseconds => "milliseconds",
            TimeUnit::Seconds => "seconds",
        }
    }

    pub(crate) const fn duration(self, count: u64) -> Duration {
        match self {
            TimeUnit::Microseconds => Duration::from_micros(count),
            TimeUnit::Milliseconds => Duration::from_millis(count),
            TimeUnit::Seconds => Duration::from_secs(count),
        }
    }

    fn count(self, duration: Duration) -> u128 {
        match self {
            TimeUnit::Microseconds => duration.as_micros(),
            TimeUnit::Milliseconds => duration.as_millis(),
            TimeUnit::Seconds => u128::from(duration.as_secs()),
        }
    }
}

/// A duration: an integer count of the unit its name ends with.
#[derive(Debug)]
pub(crate) struct DurationKind {
    unit: TimeUnit,
    min: u64,
    max: u64,
}

impl DurationKind {
    pub(crate) const fn new(unit: TimeUnit, min: u64, max: u64) -> Self {
        DurationKind { unit, min, max }
    }

    /// Reads a duration written the way other tools do ("30s", "500ms")
    /// as a count of this option's unit, for the hint in the error: the
    /// option itself takes integers only.
    fn convert_suffixed(&self, text: &str) -> Option<u128> {
        let text = text.trim();
        let digits_end = text.find(|c: char| !c.is_ascii_digit())?;
        let (digits, suffix) = text.split_at(digits_end);
        let number: u128 = digits.parse().ok()?;
        let microseconds = match suffix.trim() {
            "us" | "µs" => number,
            "ms" => number.checked_mul(1_000)?,
            "s" => number.checked_mul(1_000_000)?,
            "m" | "min" => number.checked_mul(60_000_000)?,
            "h" => number.checked_mul(3_600_000_000)?,
            _ => return None,
        };
        let per_unit: u128 = match self.unit {
            TimeUnit::Microseconds => 1,
            TimeUnit::Milliseconds => 1_000,
            TimeUnit::Seconds => 1_000_000,
        };
        (microseconds % per_unit == 0).then_some(microseconds / per_unit)
    }

    fn in_range(&self, count: i128, written: &str) -> Result<Duration, String> {
        range_message(written, count, self.min.into(), self.max.into(), |n| {
            n.to_string()
        })?;
        let count = u64::try_from(count).map_err(|_| format!("{written} is out of range"))?;
        Ok(self.unit.duration(count))
    }
}

impl Kind for DurationKind {
    type Value = Duration;

    fn type_doc(&self) -> String {
        format!(
            "integer, {}, {} to {}",
            self.unit.name(),
            self.min,
            self.max
        )
    }

    fn value_name(&self) -> &'static str {
        match self.unit {
            TimeUnit::Microseconds => "MICROSECONDS",
            TimeUnit::Milliseconds => "MILLISECONDS",
            TimeUnit::Seconds => "SECONDS",
        }
    }

    fn read_toml(&self, value: &TomlValue<'_>) -> Result<Duration, SpannedError> {
        if let DeValue::String(text) = value.get_ref() {
            let mut message = format!(
                "{text:?} is a string; write the duration as an integer number of {}",
                self.unit.name()
            );
            if let Some(count) = self.convert_suffixed(text) {
                message.push_str(&format!(": {count}"));
            }
            return Err(SpannedError::at(value, message));
        }
        let expected = format!("an integer ({})", self.unit.name());
        let (count, written) = expect_integer(value, &expected)?;
        self.in_range(count, &written)
            .map_err(|message| SpannedError::at(value, message))
    }

    fn read_flag(&self, arguments: &[String]) -> Result<Duration, String> {
        let text = single(arguments);
        let count = text
            .parse::<i128>()
            .map_err(|_| format!("{text:?} is not a whole number of {}", self.unit.name()))?;
        self.in_range(count, text)
    }

    fn check(&self, value: &Duration) -> Result<(), String> {
        let count = self.unit.count(*value);
        let exact = self.unit.duration(u64::try_from(count).unwrap_or(u64::MAX)) == *value;
        if !exact {
            return Err(format!(
                "{value:?} is not a whole number of {}",
                self.unit.name()
            ));
        }
        range_message(
            &count.to_string(),
            count,
            self.min.into(),
            self.max.into(),
            |n| n.to_string(),
        )
    }

    fn to_toml(&self, value: &Duration) -> Option<String> {
        Some(self.unit.count(*value).to_string())
    }
}

/// One of a closed set of names.
#[derive(Debug)]
pub(crate) struct EnumKind<E>(PhantomData<fn() -> E>);

impl<E> EnumKind<E> {
    pub(crate) const fn new() -> Self {
        EnumKind(PhantomData)
    }
}

fn names_list(names: impl Iterator<Item = &'static str>) -> String {
    names
        .map(|name| format!("`\"{name}\"`"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl<E: ConfigEnum> Kind for EnumKind<E> {
    type Value = E;

    fn type_doc(&self) -> String {
        format!(
            "one of {}",
            names_list(E::VARIANTS.iter().map(|(name, _, _)| *name))
        )
    }

    fn choices(&self) -> Vec<(String, String)> {
        E::VARIANTS
            .iter()
            .map(|(name, _, doc)| ((*name).to_owned(), join_doc_lines(doc)))
            .collect()
    }

    fn value_name(&self) -> &'static str {
        "CHOICE"
    }

    fn read_toml(&self, value: &TomlValue<'_>) -> Result<E, SpannedError> {
        let text = expect_str(value, "a string")?;
        parse_enum(text).map_err(|error| SpannedError::at(value, error.message()))
    }

    fn read_flag(&self, arguments: &[String]) -> Result<E, String> {
        parse_enum(single(arguments)).map_err(|error| error.message().to_owned())
    }

    fn check(&self, _value: &E) -> Result<(), String> {
        Ok(())
    }

    fn to_toml(&self, value: &E) -> Option<String> {
        Some(toml_string(value.name()))
    }
}

/// Joins `///` doc lines (each with its leading space) into one paragraph.
pub(crate) fn join_doc_lines(doc: &str) -> String {
    doc.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// `"auto"` or a core count.
#[derive(Debug)]
pub(crate) struct CoresKind;

impl CoresKind {
    fn from_number(number: i128, written: &str) -> Result<Cores, String> {
        range_message(written, number, 1, i128::from(CORES_MAX), |n| n.to_string())?;
        u16::try_from(number)
            .map(Cores::Count)
            .map_err(|_| format!("{written} is out of range"))
    }
}

impl Kind for CoresKind {
    type Value = Cores;

    fn type_doc(&self) -> String {
        format!("`\"auto\"`, or an integer from 1 to {CORES_MAX}")
    }

    fn value_name(&self) -> &'static str {
        "auto|N"
    }

    fn read_toml(&self, value: &TomlValue<'_>) -> Result<Cores, SpannedError> {
        match value.get_ref() {
            DeValue::String(text) if text == "auto" => Ok(Cores::Auto),
            DeValue::String(text) => Err(SpannedError::at(
                value,
                format!("{text:?} is neither \"auto\" nor a number of cores"),
            )),
            _ => {
                let (number, written) =
                    expect_integer(value, "\"auto\" or an integer number of cores")?;
                Self::from_number(number, &written).map_err(|m| SpannedError::at(value, m))
            }
        }
    }

    fn read_flag(&self, arguments: &[String]) -> Result<Cores, String> {
        let text = single(arguments);
        if text == "auto" {
            return Ok(Cores::Auto);
        }
        let number = text
            .parse::<i128>()
            .map_err(|_| format!("{text:?} is neither \"auto\" nor a number of cores"))?;
        Self::from_number(number, text)
    }

    fn check(&self, value: &Cores) -> Result<(), String> {
        match value {
            Cores::Auto => Ok(()),
            Cores::Count(count) => {
                Self::from_number(i128::from(*count), &count.to_string()).map(|_| ())
            }
        }
    }

    fn to_toml(&self, value: &Cores) -> Option<String> {
        Some(match value {
            Cores::Auto => toml_string("auto"),
            Cores::Count(count) => count.to_string(),
        })
    }
}

/// An option that may be left unset: absent from the file means `None`.
#[derive(Debug)]
pub(crate) struct OptionalKind<K>(pub(crate) K);

impl<K: Kind> Kind for OptionalKind<K> {
    type Value = Option<K::Value>;

    fn type_doc(&self) -> String {
        self.0.type_doc()
    }

    fn choices(&self) -> Vec<(String, String)> {
        self.0.choices()
    }

    fn value_name(&self) -> &'static str {
        self.0.value_name()
    }

    fn read_toml(&self, value: &TomlValue<'_>) -> Result<Self::Value, SpannedError> {
        self.0.read_toml(value).map(Some)
    }

    fn read_flag(&self, arguments: &[String]) -> Result<Self::Value, String> {
        self.0.read_flag(arguments).map(Some)
    }

    fn check(&self, value: &Self::Value) -> Result<(), String> {
        value.as_ref().map_or(Ok(()), |inner| self.0.check(inner))
    }

    fn to_toml(&self, value: &Self::Value) -> Option<String> {
        value.as_ref().and_then(|inner| self.0.to_toml(inner))
    }
}

/// A list of values; on the command line, one flag per element.
#[derive(Debug)]
pub(crate) struct ListKind<K> {
    element: K,
    length_max: usize,
}

impl<K> ListKind<K> {
    pub(crate) const fn new(element: K, length_max: usize) -> Self {
        ListKind {
            element,
            length_max,
        }
    }
}

impl<K: Kind> Kind for ListKind<K> {
    type Value = Vec<K::Value>;

    fn type_doc(&self) -> String {
        format!(
            "array of at most {} elements, each: {}",
            self.length_max,
            self.element.type_doc()
        )
    }

    fn value_name(&self) -> &'static str {
        self.element.value_name()
    }

    fn repeat_unit(&self) -> Option<&'static str> {
        Some("element")
    }

    fn read_toml(&self, value: &TomlValue<'_>) -> Result<Self::Value, SpannedError> {
        let DeValue::Array(array) = value.get_ref() else {
            return Err(SpannedError::at(
                value,
                format!(
                    "expected an array, found {}",
                    type_with_article(value.get_ref())
                ),
            ));
        };
        if array.len() > self.length_max {
            return Err(SpannedError::at(
                value,
                format!(
                    "{} elements is above the maximum {}",
                    array.len(),
                    self.length_max
                ),
            ));
        }
        array
            .iter()
            .map(|element| self.element.read_toml(element))
            .collect()
    }

    fn read_flag(&self, arguments: &[String]) -> Result<Self::Value, String> {
        if arguments.len() > self.length_max {
            return Err(format!(
                "given {} times; the maximum is {}",
                arguments.len(),
                self.length_max
            ));
        }
        arguments
            .iter()
            .map(|argument| self.element.read_flag(std::slice::from_ref(argument)))
            .collect()
    }

    fn check(&self, value: &Self::Value) -> Result<(), String> {
        if value.len() > self.length_max {
            return Err(format!(
                "{} elements is above the maximum {}",
                value.len(),
                self.length_max
            ));
        }
        value
            .iter()
            .try_for_each(|element| self.element.check(element))
    }

    fn to_toml(&self, value: &Self::Value) -> Option<String> {
        let elements: Vec<String> = value
            .iter()
            .filter_map(|element| self.element.to_toml(element))
            .collect();
        Some(format!("[{}]", elements.join(", ")))
    }
}

/// A table from keys of type `Key` (parsed by its `FromStr`) to values of a
/// kind; on the command line, one `KEY=VALUE` flag per entry.
#[derive(Debug)]
pub(crate) struct MapKind<Key, V> {
    key_doc: &'static str,
    value: V,
    length_max: usize,
    value_name: &'static str,
    key_type: PhantomData<fn() -> Key>,
}

impl<Key, V> MapKind<Key, V> {
    pub(crate) const fn new(
        key_doc: &'static str,
        value: V,
        length_max: usize,
        value_name: &'static str,
    ) -> Self {
        MapKind {
            key_doc,
            value,
            length_max,
            value_name,
            key_type: PhantomData,
        }
    }
}

impl<Key, V> Kind for MapKind<Key, V>
where
    Key: FromStr<Err = ValueError> + Ord + Clone + fmt::Debug + fmt::Display,
    V: Kind,
{
    type Value = BTreeMap<Key, V::Value>;

    fn type_doc(&self) -> String {
        format!(
            "table of at most {} entries; key: {}; value: {}",
            self.length_max,
            self.key_doc,
            self.value.type_doc()
        )
    }

    fn value_name(&self) -> &'static str {
        self.value_name
    }

    fn repeat_unit(&self) -> Option<&'static str> {
        Some("entry")
    }

    fn read_toml(&self, value: &TomlValue<'_>) -> Result<Self::Value, SpannedError> {
        let DeValue::Table(table) = value.get_ref() else {
            return Err(SpannedError::at(
                value,
                format!(
                    "expected a table, found {}",
                    type_with_article(value.get_ref())
                ),
            ));
        };
        if table.len() > self.length_max {
            return Err(SpannedError::at(
                value,
                format!(
                    "{} entries is above the maximum {}",
                    table.len(),
                    self.length_max
                ),
            ));
        }
        // In file order, so the first bad entry is the one reported.
        let mut entries: Vec<_> = table.iter().collect();
        entries.sort_by_key(|(key, _)| key.span().start);
        let mut map = BTreeMap::new();
        for (key, entry_value) in entries {
            let key_error = |message: String| SpannedError {
                span: key.span(),
                message,
            };
            let parsed_key: Key = key
                .get_ref()
                .parse()
                .map_err(|error: ValueError| key_error(error.message().to_owned()))?;
            let parsed_value = self.value.read_toml(entry_value)?;
            if map.insert(parsed_key.clone(), parsed_value).is_some() {
                return Err(key_error(format!(
                    "{parsed_key} appears twice (keys are compared without leading and trailing spaces)"
                )));
            }
        }
        Ok(map)
    }

    fn read_flag(&self, arguments: &[String]) -> Result<Self::Value, String> {
        if arguments.len() > self.length_max {
            return Err(format!(
                "given {} times; the maximum is {}",
                arguments.len(),
                self.length_max
            ));
        }
        let mut map = BTreeMap::new();
        for argument in arguments {
            let (key, value) = argument
                .split_once('=')
                .ok_or_else(|| format!("{argument:?} is not KEY=VALUE"))?;
            let key: Key = key
                .parse()
                .map_err(|error: ValueError| error.message().to_owned())?;
            let value = self.value.read_flag(&[value.to_owned()])?;
            if map.insert(key.clone(), value).is_some() {
                return Err(format!("{key} is given twice"));
            }
        }
        Ok(map)
    }

    fn check(&self, value: &Self::Value) -> Result<(), String> {
        if value.len() > self.length_max {
            return Err(format!(
                "{} entries is above the maximum {}",
                value.len(),
                self.length_max
            ));
        }
        value.values().try_for_each(|entry| self.value.check(entry))
    }

    fn to_toml(&self, value: &Self::Value) -> Option<String> {
        if value.is_empty() {
            return Some("{}".to_owned());
        }
        let entries: Vec<String> = value
            .iter()
            .filter_map(|(key, entry)| {
                let entry = self.value.to_toml(entry)?;
                Some(format!("{} = {entry}", toml_key(&key.to_string())))
            })
            .collect();
        Some(format!("{{ {} }}", entries.join(", ")))
    }
}

/// Longest explicit transfer syntax list: more than every transfer syntax
/// DICOM defines.
const TRANSFER_SYNTAX_LIST_LENGTH_MAX: usize = 256;

/// `"seed"`, `"all"`, or an explicit list of transfer syntax UIDs
/// (comma-separated on the command line: UIDs contain no commas).
#[derive(Debug)]
pub(crate) struct TransferSyntaxKind;

impl TransferSyntaxKind {
    fn parse_list<'a>(
        uids: impl ExactSizeIterator<Item = &'a str>,
    ) -> Result<TransferSyntaxSelection, String> {
        if uids.len() == 0 {
            return Err("the list is empty: no sender could store anything".into());
        }
        if uids.len() > TRANSFER_SYNTAX_LIST_LENGTH_MAX {
            return Err(format!(
                "{} transfer syntaxes is above the maximum {TRANSFER_SYNTAX_LIST_LENGTH_MAX}",
                uids.len()
            ));
        }
        uids.map(|uid| {
            uid.trim()
                .parse::<Uid>()
                .map_err(|e| e.message().to_owned())
        })
        .collect::<Result<Vec<_>, _>>()
        .map(TransferSyntaxSelection::List)
    }

    fn named(text: &str) -> Option<TransferSyntaxSelection> {
        match text {
            "seed" => Some(TransferSyntaxSelection::Seed),
            "all" => Some(TransferSyntaxSelection::All),
            _ => None,
        }
    }
}

impl Kind for TransferSyntaxKind {
    type Value = TransferSyntaxSelection;

    fn type_doc(&self) -> String {
        "`\"seed\"`, `\"all\"`, or an array of transfer syntax UIDs".into()
    }

    fn choices(&self) -> Vec<(String, String)> {
        TransferSyntaxSelection::NAMES
            .iter()
            .map(|(name, doc)| ((*name).to_owned(), (*doc).to_owned()))
            .collect()
    }

    fn value_name(&self) -> &'static str {
        "seed|all|UID,UID,..."
    }

    fn read_toml(&self, value: &TomlValue<'_>) -> Result<Self::Value, SpannedError> {
        match value.get_ref() {
            DeValue::String(text) => Self::named(text).ok_or_else(|| {
                SpannedError::at(
                    value,
                    format!("{text:?} is neither \"seed\" nor \"all\"; for explicit transfer syntaxes write an array of UIDs"),
                )
            }),
            DeValue::Array(array) => {
                let mut uids = Vec::with_capacity(array.len().min(TRANSFER_SYNTAX_LIST_LENGTH_MAX));
                for element in array.iter() {
                    uids.push(expect_str(element, "a UID string")?);
                }
                Self::parse_list(uids.into_iter()).map_err(|m| SpannedError::at(value, m))
            }
            other => Err(SpannedError::at(
                value,
                format!(
                    "expected \"seed\", \"all\" or an array of UIDs, found {}",
                    type_with_article(other)
                ),
            )),
        }
    }

    fn read_flag(&self, arguments: &[String]) -> Result<Self::Value, String> {
        let text = single(arguments);
        match Self::named(text) {
            Some(selection) => Ok(selection),
            None => {
                let uids: Vec<&str> = text.split(',').collect();
                Self::parse_list(uids.into_iter())
            }
        }
    }

    fn check(&self, value: &Self::Value) -> Result<(), String> {
        match value {
            TransferSyntaxSelection::List(uids) if uids.is_empty() => {
                Err("the list is empty: no sender could store anything".into())
            }
            TransferSyntaxSelection::List(uids) if uids.len() > TRANSFER_SYNTAX_LIST_LENGTH_MAX => {
                Err(format!(
                    "{} transfer syntaxes is above the maximum {TRANSFER_SYNTAX_LIST_LENGTH_MAX}",
                    uids.len()
                ))
            }
            _ => Ok(()),
        }
    }

    fn to_toml(&self, value: &Self::Value) -> Option<String> {
        Some(match value {
            TransferSyntaxSelection::Seed => toml_string("seed"),
            TransferSyntaxSelection::All => toml_string("all"),
            TransferSyntaxSelection::List(uids) => {
                let uids: Vec<String> = uids.iter().map(|uid| toml_string(uid.as_str())).collect();
                format!("[{}]", uids.join(", "))
            }
        })
    }
}

/// Most AE titles in an [`AeSelection`] list.
const AE_SELECTION_LENGTH_MAX: usize = 4096;

/// An [`AeSelection`]: `"any"`, `"known"`, `"none"` or an array of AE titles
/// (on the command line, a comma-separated list).
pub(crate) struct AeSelectionKind;

impl AeSelectionKind {
    fn named(text: &str) -> Option<AeSelection> {
        match text {
            "any" => Some(AeSelection::Any),
            "known" => Some(AeSelection::Known),
            "none" => Some(AeSelection::None),
            _ => None,
        }
    }

    fn parse_list<'a>(
        titles: impl ExactSizeIterator<Item = &'a str>,
    ) -> Result<AeSelection, String> {
        if titles.len() > AE_SELECTION_LENGTH_MAX {
            return Err(format!(
                "{} AE titles is above the maximum {AE_SELECTION_LENGTH_MAX}",
                titles.len()
            ));
        }
        titles
            .map(|title| title.parse::<AeTitle>().map_err(|e| e.message().to_owned()))
            .collect::<Result<Vec<_>, _>>()
            .map(AeSelection::List)
    }
}

impl Kind for AeSelectionKind {
    type Value = AeSelection;

    fn type_doc(&self) -> String {
        "`\"any\"`, `\"known\"`, `\"none\"`, or an array of AE titles".into()
    }

    fn choices(&self) -> Vec<(String, String)> {
        AeSelection::NAMES
            .iter()
            .map(|(name, doc)| ((*name).to_owned(), (*doc).to_owned()))
            .collect()
    }

    fn value_name(&self) -> &'static str {
        "any|known|none|AE,AE,..."
    }

    fn read_toml(&self, value: &TomlValue<'_>) -> Result<Self::Value, SpannedError> {
        match value.get_ref() {
            DeValue::String(text) => Self::named(text).ok_or_else(|| {
                SpannedError::at(
                    value,
                    format!("{text:?} is not \"any\", \"known\" or \"none\"; for AE titles write an array"),
                )
            }),
            DeValue::Array(array) => {
                let mut titles = Vec::with_capacity(array.len().min(AE_SELECTION_LENGTH_MAX));
                for element in array.iter() {
                    titles.push(expect_str(element, "an AE title string")?);
                }
                Self::parse_list(titles.into_iter()).map_err(|m| SpannedError::at(value, m))
            }
            other => Err(SpannedError::at(
                value,
                format!(
                    "expected \"any\", \"known\", \"none\" or an array of AE titles, found {}",
                    type_with_article(other)
                ),
            )),
        }
    }

    fn read_flag(&self, arguments: &[String]) -> Result<Self::Value, String> {
        let text = single(arguments);
        match Self::named(text) {
            Some(selection) => Ok(selection),
            None => Self::parse_list(text.split(',').collect::<Vec<_>>().into_iter()),
        }
    }

    fn check(&self, value: &Self::Value) -> Result<(), String> {
        match value {
            AeSelection::List(titles) if titles.len() > AE_SELECTION_LENGTH_MAX => Err(format!(
                "{} AE titles is above the maximum {AE_SELECTION_LENGTH_MAX}",
                titles.len()
            )),
            _ => Ok(()),
        }
    }

    fn to_toml(&self, value: &Self::Value) -> Option<String> {
        Some(match value {
            AeSelection::Any => toml_string("any"),
            AeSelection::Known => toml_string("known"),
            AeSelection::None => toml_string("none"),
            AeSelection::List(titles) => {
                let titles: Vec<String> = titles.iter().map(|t| toml_string(t.as_str())).collect();
                format!("[{}]", titles.join(", "))
            }
        })
    }
}

/// One rule of the access table: in the file a table
/// `{ calling_ae = "CT_ROOM_1", addresses = ["10.1.2.0/24"], services =
/// ["store", "commitment"] }` (one `[[access.rule]]` block each); on the
/// command line `CT_ROOM_1@10.1.2.0/24=store,commitment`.
#[derive(Debug)]
pub(crate) struct AccessRuleKind;

impl AccessRuleKind {
    fn strings<'a>(
        value: &'a TomlValue<'_>,
        what: &str,
        length_max: usize,
    ) -> Result<Vec<(&'a TomlValue<'a>, &'a str)>, SpannedError> {
        let DeValue::Array(array) = value.get_ref() else {
            return Err(SpannedError::at(
                value,
                format!(
                    "expected an array of {what}, found {}",
                    type_with_article(value.get_ref())
                ),
            ));
        };
        if array.len() > length_max {
            return Err(SpannedError::at(
                value,
                format!("{} elements is above the maximum {length_max}", array.len()),
            ));
        }
        array
            .iter()
            .map(|element| expect_str(element, what).map(|text| (element, text)))
            .collect()
    }
}

impl Kind for AccessRuleKind {
    type Value = AccessRule;

    fn type_doc(&self) -> String {
        "table: `calling_ae` (AE title, or `\"*\"` for any), `addresses` (optional array of \
         IP addresses or CIDR networks; absent: any), `services` (array of `\"store\"`, \
         `\"commitment\"`, `\"query\"`, `\"retrieve\"`)"
            .into()
    }

    fn value_name(&self) -> &'static str {
        "AE_TITLE[@ADDRESS,...]=SERVICE,..."
    }

    fn read_toml(&self, value: &TomlValue<'_>) -> Result<Self::Value, SpannedError> {
        let DeValue::Table(table) = value.get_ref() else {
            return Err(SpannedError::at(
                value,
                format!(
                    "expected a table (calling_ae, addresses, services), found {}",
                    type_with_article(value.get_ref())
                ),
            ));
        };
        let mut calling_ae_title = None;
        let mut addresses = Vec::new();
        let mut services = None;
        for (key, entry) in table.iter() {
            match key.get_ref().as_ref() {
                "calling_ae" => {
                    let text = expect_str(entry, "an AE title string, or \"*\"")?;
                    calling_ae_title = Some(
                        AccessRule::parse_calling_ae(text)
                            .map_err(|error| SpannedError::at(entry, error.message()))?,
                    );
                }
                "addresses" => {
                    for (element, text) in Self::strings(
                        entry,
                        "IP address or network strings",
                        ACCESS_RULE_ADDRESSES_MAX,
                    )? {
                        addresses.push(
                            AccessRule::parse_address(text)
                                .map_err(|error| SpannedError::at(element, error.message()))?,
                        );
                    }
                }
                "services" => {
                    let mut set = AccessServices::default();
                    for (element, text) in
                        Self::strings(entry, "service strings", AccessService::ALL.len())?
                    {
                        set = set.with(
                            text.parse()
                                .map_err(|error: ValueError| SpannedError::at(element, error.message()))?,
                        );
                    }
                    services = Some(set);
                }
                other => {
                    return Err(SpannedError {
                        span: key.span(),
                        message: format!(
                            "unknown key {other:?} in an access rule; the keys are calling_ae, addresses, services"
                        ),
                    })
                }
            }
        }
        let Some(calling_ae_title) = calling_ae_title else {
            return Err(SpannedError::at(
                value,
                "the rule has no calling_ae (an AE title, or \"*\" for any)",
            ));
        };
        let Some(services) = services else {
            return Err(SpannedError::at(
                value,
                "the rule has no services (an array; empty grants Verification only)",
            ));
        };
        Ok(AccessRule {
            calling_ae_title,
            addresses,
            services,
        })
    }

    fn read_flag(&self, arguments: &[String]) -> Result<Self::Value, String> {
        single(arguments)
            .parse()
            .map_err(|error: ValueError| error.message().to_owned())
    }

    fn check(&self, value: &Self::Value) -> Result<(), String> {
        if value.addresses.len() > ACCESS_RULE_ADDRESSES_MAX {
            return Err(format!(
                "{} addresses is above the maximum {ACCESS_RULE_ADDRESSES_MAX}",
                value.addresses.len()
            ));
        }
        Ok(())
    }

    fn to_toml(&self, value: &Self::Value) -> Option<String> {
        let mut fields = vec![format!(
            "calling_ae = {}",
            toml_string(value.calling_ae_text())
        )];
        if !value.addresses.is_empty() {
            let addresses: Vec<String> = value
                .addresses
                .iter()
                .map(|net| toml_string(&net.to_string()))
                .collect();
            fields.push(format!("addresses = [{}]", addresses.join(", ")));
        }
        let services: Vec<String> = value
            .services
            .iter()
            .map(|service| toml_string(service.name()))
            .collect();
        fields.push(format!("services = [{}]", services.join(", ")));
        Some(format!("{{ {} }}", fields.join(", ")))
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
