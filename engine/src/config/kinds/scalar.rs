//! Kinds of single values: paths, text parsed by `FromStr`, integers,
//! byte sizes, durations, enumerations and the core count.

use super::*;

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
