//! Attribute matching (PS3.4 C.2.2.2): one key value against one stored
//! value.
//!
//! [`ValueMatcher::parse`] turns a key value (already decoded to Unicode)
//! into a matcher by the rules of its VR:
//!
//! - empty: Universal Matching (C.2.2.2.3), and so is a value of only `*`
//!   (C.2.2.2.4 says so for the wild card VRs; Sluice accepts it for every
//!   VR, because SCUs send `*` for UIDs and dates too);
//! - `*` and `?` are wild cards only in AE, CS, LO, LT, PN, SH, ST, UC, UR
//!   and UT (C.2.2.2.4); elsewhere they are literal characters (an IS or AS
//!   value with `*` matches nothing), and in UI, DA, TM and DT values, which
//!   cannot hold them, they are refused;
//! - DA, TM and DT take single values and ranges `A-B`, `-B`, `A-`
//!   (C.2.2.2.5; see [`super::datetime`] for precision and UTC offsets);
//! - UI takes one UID or a `\`-separated list (List of UID Matching,
//!   C.2.2.2.2);
//! - other multi-valued VRs with several key values: any value matches (the
//!   standard leaves this undefined without Extended Negotiation; it is what
//!   dcm4chee and the index do), or, when Multiple Value Matching is
//!   negotiated (C.2.2.2.8), every key value must match a stored value;
//! - `""` is Empty Value Matching (C.2.2.2.7) when negotiated, and matches
//!   only entities without a value.
//!
//! Text comparison is exact (case-sensitive, C.2.2.2.1) after removing the
//! padding the VR makes insignificant. Person names are matched per
//! component group (see [`PersonNamePattern`]), case-sensitively unless the
//! SCP chooses case-insensitive matching (PS3.4 leaves PN matching to the
//! implementation and its conformance statement). IS and DS compare as
//! numbers. A stored empty value matches only Universal (and Empty Value)
//! matching. A stored multi-valued attribute matches when any of its values
//! does (Modalities in Study `CT\SR` matches `SR`).
//!
//! [`ValueMatcher::constraint`] tells an index what a matcher implies about
//! every matching value (equal to, starts with, one of, within a range), so
//! it can pick a table to scan; every candidate is still checked with
//! [`ValueMatcher::matches`].

use std::borrow::Cow;

use super::candidate::Attribute;
use super::datetime::{self, Interval, MICROS_PER_DAY};
use crate::dimse::dataset::Vr;

/// Matching choices of the SCP and of Extended Negotiation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MatchOptions {
    /// Person names match case-insensitively (Orthanc's default; off in
    /// Sluice unless configured).
    pub person_name_case_insensitive: bool,
    /// Empty Value Matching was negotiated: `""` matches empty values.
    pub empty_value_matching: bool,
    /// Multiple Value Matching was negotiated: `A\B` needs both.
    pub multiple_value_matching: bool,
}

/// Why a key value cannot be matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct ValueError {
    /// What is wrong, in a few words.
    pub reason: &'static str,
}

const fn error(reason: &'static str) -> ValueError {
    ValueError { reason }
}

/// How a VR shapes matching.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A string VR; `wildcards` where C.2.2.2.4 allows them;
    /// `leading_spaces` when leading spaces are significant (ST, LT, UT, UR).
    Text {
        wildcards: bool,
        leading_spaces: bool,
    },
    PersonName,
    Uid,
    Number,
    Date,
    Time,
    DateTime,
    /// Binary VRs and sequences: no text value to match.
    NotMatchable,
}

const fn kind(vr: Vr) -> Kind {
    match &vr.0 {
        b"AE" | b"CS" | b"LO" | b"SH" | b"UC" => Kind::Text {
            wildcards: true,
            leading_spaces: false,
        },
        b"LT" | b"ST" | b"UT" | b"UR" => Kind::Text {
            wildcards: true,
            leading_spaces: true,
        },
        b"AS" => Kind::Text {
            wildcards: false,
            leading_spaces: false,
        },
        b"PN" => Kind::PersonName,
        b"UI" => Kind::Uid,
        b"IS" | b"DS" => Kind::Number,
        b"DA" => Kind::Date,
        b"TM" => Kind::Time,
        b"DT" => Kind::DateTime,
        _ => Kind::NotMatchable,
    }
}

/// Whether values of `vr` may be multi-valued with `\` (PS3.5 §6.4; LT, ST,
/// UT and UR hold `\` as text).
const fn multi_valued(vr: Vr) -> bool {
    matches!(
        &vr.0,
        b"AE"
            | b"AS"
            | b"CS"
            | b"DA"
            | b"DS"
            | b"DT"
            | b"IS"
            | b"LO"
            | b"PN"
            | b"SH"
            | b"TM"
            | b"UC"
            | b"UI"
    )
}

/// Whether a key value of `vr` can be matched at all (binary VRs and
/// sequences cannot be matched as text).
pub fn is_matchable(vr: Vr) -> bool {
    kind(vr) != Kind::NotMatchable
}

/// A value with the padding its VR makes insignificant removed.
fn trim(kind: Kind, value: &str) -> &str {
    let value = value.trim_end_matches([' ', '\0']);
    match kind {
        Kind::Text {
            leading_spaces: true,
            ..
        } => value,
        _ => value.trim_start_matches(' '),
    }
}

/// Literal text or a wild card pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    Exact(String),
    Wildcard(Vec<char>),
}

impl Pattern {
    fn parse(value: &str, wildcards: bool) -> Self {
        if wildcards && value.contains(['*', '?']) {
            Self::Wildcard(value.chars().collect())
        } else {
            Self::Exact(value.to_owned())
        }
    }

    fn matches(&self, stored: &str) -> bool {
        match self {
            Self::Exact(value) => value == stored,
            Self::Wildcard(pattern) => glob(pattern, stored),
        }
    }

    fn is_wildcard(&self) -> bool {
        matches!(self, Self::Wildcard(_))
    }

    /// The literal text every match starts with.
    fn literal_head(&self) -> Option<String> {
        let head: String = match self {
            Self::Exact(value) => return (!value.is_empty()).then(|| value.clone()),
            Self::Wildcard(pattern) => pattern
                .iter()
                .take_while(|character| **character != '*' && **character != '?')
                .collect(),
        };
        (!head.is_empty()).then_some(head)
    }
}

/// Wild card matching over characters: `*` any run (also empty), `?` one
/// character. Linear in practice, no allocation.
fn glob(pattern: &[char], text: &str) -> bool {
    let (mut p, mut t) = (0usize, 0usize);
    // Where the last `*` was, and where in the text it currently resumes.
    let mut star: Option<(usize, usize)> = None;
    while let Some(character) = text.get(t..).and_then(|rest| rest.chars().next()) {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, t));
                p += 1;
                continue;
            }
            Some(&expected) if expected == '?' || expected == character => {
                p += 1;
                t += character.len_utf8();
                continue;
            }
            _ => {}
        }
        let Some((star_p, star_t)) = star else {
            return false;
        };
        // Let the last `*` swallow one more character and retry after it.
        let swallowed = text
            .get(star_t..)
            .and_then(|rest| rest.chars().next())
            .map_or(1, char::len_utf8);
        let resume = star_t + swallowed;
        star = Some((star_p, resume));
        p = star_p + 1;
        t = resume;
    }
    pattern
        .get(p..)
        .is_some_and(|rest| rest.iter().all(|character| *character == '*'))
}

/// A person name key (PS3.5 §6.2.1): up to three component groups
/// (alphabetic `=` ideographic `=` phonetic), each a pattern or, when empty,
/// anything. Trailing empty components (`Doe^John^^`) and trailing spaces
/// are not significant.
///
/// A key without `=` matches a stored name when it matches any one of its
/// groups, so `山田^太郎` finds `Yamada^Tarou=山田^太郎=やまだ^たろう`; a key
/// with `=` matches group by group (`=山田*` constrains only the
/// ideographic group). This is Sluice's answer to the "implementation
/// dependent" PN matching of C.2.2.2.1 and C.2.2.2.4, and what its
/// conformance statement says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonNamePattern {
    groups: Vec<Option<Pattern>>,
    any_group: bool,
    case_insensitive: bool,
}

/// The component groups of a person name (alphabetic, ideographic,
/// phonetic), each without trailing `^` and spaces and leading spaces, as
/// matching compares them (an index keyed by them narrows a PN match: a key
/// without `=` matches when one of these groups does).
pub fn person_name_groups(value: &str) -> impl Iterator<Item = &str> {
    value
        .split('=')
        .take(3)
        .map(|group| group.trim_end_matches(['^', ' ']).trim_start_matches(' '))
}

/// The case folding of case-insensitive person-name matching, and of the
/// index's name keys: each character on its own is replaced by its Unicode
/// lowercase mapping when that mapping is one character (ASCII, the Latin
/// letters of ISO_IR 100 to 148 and Latin Extended, Greek, Cyrillic,
/// full-width Latin), and the Greek final sigma `ς` by `σ`. Nothing else
/// changes: characters without case (kanji, kana, hangul: the ideographic
/// and phonetic groups of Japanese, Korean and Chinese names), the
/// delimiters `^` `=` and the wild cards `*` `?`, and the few characters
/// whose lowercase is two (`İ`), which stay as they are so that `?` still
/// stands for one character. No accents are removed (`É` is `é`, not `e`).
///
/// One character at a time, without context (unlike `str::to_lowercase`,
/// whose final-sigma rule depends on the next character), so
/// `fold(a + b) == fold(a) + fold(b)`: the folded literal head of a key is
/// a prefix of every folded name it matches, which is what lets the index
/// narrow a case-insensitive name query to one range of its name table.
pub fn fold_person_name(value: &str) -> Cow<'_, str> {
    if !value
        .chars()
        .any(|character| fold_character(character) != character)
    {
        return Cow::Borrowed(value);
    }
    Cow::Owned(value.chars().map(fold_character).collect())
}

fn fold_character(character: char) -> char {
    if character.is_ascii() {
        return character.to_ascii_lowercase();
    }
    if character == 'ς' {
        return 'σ';
    }
    let mut lower = character.to_lowercase();
    match (lower.next(), lower.next()) {
        (Some(single), None) => single,
        _ => character,
    }
}

impl PersonNamePattern {
    fn parse(value: &str, case_insensitive: bool) -> Option<Self> {
        let folded;
        let value = if case_insensitive {
            folded = fold_person_name(value);
            folded.as_ref()
        } else {
            value
        };
        let groups: Vec<Option<Pattern>> = person_name_groups(value)
            .map(|group| {
                (!group.is_empty() && !group.chars().all(|character| character == '*'))
                    .then(|| Pattern::parse(group, true))
            })
            .collect();
        if groups.iter().all(Option::is_none) {
            return None;
        }
        Some(Self {
            any_group: !value.contains('='),
            groups,
            case_insensitive,
        })
    }

    fn matches(&self, stored: &str) -> bool {
        let folded;
        let stored = if self.case_insensitive {
            folded = fold_person_name(stored);
            folded.as_ref()
        } else {
            stored
        };
        if self.any_group {
            let Some(Some(pattern)) = self.groups.first() else {
                debug_assert!(false, "a single-group pattern without its group");
                return true;
            };
            return person_name_groups(stored)
                .any(|group| !group.is_empty() && pattern.matches(group));
        }
        let mut stored_groups = person_name_groups(stored);
        self.groups.iter().all(|pattern| {
            let group = stored_groups.next().unwrap_or_default();
            match pattern {
                None => true,
                Some(pattern) => !group.is_empty() && pattern.matches(group),
            }
        })
    }

    fn is_wildcard(&self) -> bool {
        self.groups.iter().flatten().any(Pattern::is_wildcard)
    }
}

/// Which of the three range forms a key used (C.2.2.2.5), or a single value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RangeForm {
    Single,
    Closed,
    UpTo,
    From,
}

/// The rule of one key value.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Rule {
    Universal,
    EmptyValue,
    Text(Pattern),
    PersonName(PersonNamePattern),
    Uids(Vec<String>),
    Number(String),
    /// Bounds as parsed: the match lies from `low.start` to `high.end`.
    Range {
        form: RangeForm,
        low: Option<Interval>,
        high: Option<Interval>,
    },
    AnyOf(Vec<Rule>),
    AllOf(Vec<Rule>),
}

/// A matcher for one key: its VR and the rule its value set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueMatcher {
    vr: Vr,
    rule: Rule,
}

/// What a matcher implies about every value it matches, for an index to
/// narrow its scan. Values are normalized as the matcher compares them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Constraint<'a> {
    /// Equal to `value` (for PN: one of its component groups is).
    Equals {
        /// The value.
        value: &'a str,
        /// Compared without regard to case.
        case_insensitive: bool,
    },
    /// Starts with `literal` (the literal head of a wild card key; for PN:
    /// one of its component groups does).
    Prefix {
        /// The literal head.
        literal: String,
        /// Compared without regard to case.
        case_insensitive: bool,
    },
    /// Equal to one of these (a list of UIDs, or alternatives).
    OneOf(Vec<&'a str>),
    /// Within an inclusive range of sortable strings: `YYYYMMDD` for DA,
    /// `HHMMSS.FFFFFF` for TM, `YYYYMMDDHHMMSS.FFFFFF` (UTC where offsets
    /// were given) for DT; `None` is open.
    Range {
        /// Lowest value.
        low: Option<String>,
        /// Highest value.
        high: Option<String>,
    },
    /// No value (Empty Value Matching).
    Empty,
}

impl ValueMatcher {
    /// Universal Matching for `vr`.
    pub fn universal(vr: Vr) -> Self {
        Self {
            vr,
            rule: Rule::Universal,
        }
    }

    /// The matcher of key value `value` (decoded text) of VR `vr`.
    pub fn parse(vr: Vr, value: &str, options: &MatchOptions) -> Result<Self, ValueError> {
        let kind = kind(vr);
        let value = trim(kind, value);
        let rule = if value.is_empty() {
            Rule::Universal
        } else if options.empty_value_matching && value == "\"\"" {
            Rule::EmptyValue
        } else if value.chars().all(|character| character == '*') {
            Rule::Universal
        } else if kind == Kind::NotMatchable {
            return Err(error("values of this VR cannot be matched"));
        } else if multi_valued(vr) && value.contains('\\') {
            multiple(kind, value, options)?
        } else {
            single(kind, value, options)?
        };
        Ok(Self { vr, rule })
    }

    /// The VR.
    pub fn vr(&self) -> Vr {
        self.vr
    }

    /// Whether this is Universal Matching (the key only asks for a value).
    pub fn is_universal(&self) -> bool {
        self.rule == Rule::Universal
    }

    /// Whether the key value used wild cards.
    pub fn is_wildcard(&self) -> bool {
        fn wildcard(rule: &Rule) -> bool {
            match rule {
                Rule::Text(pattern) => pattern.is_wildcard(),
                Rule::PersonName(pattern) => pattern.is_wildcard(),
                Rule::AnyOf(rules) | Rule::AllOf(rules) => rules.iter().any(wildcard),
                _ => false,
            }
        }
        wildcard(&self.rule)
    }

    /// Whether the key is a single value (one UID, one exact text, one
    /// date or time): what a hierarchical query needs at the levels above.
    pub fn is_single_value(&self) -> bool {
        match &self.rule {
            Rule::Text(Pattern::Exact(_)) | Rule::Number(_) => true,
            Rule::Uids(uids) => uids.len() == 1,
            Rule::Range { form, .. } => *form == RangeForm::Single,
            Rule::PersonName(pattern) => !pattern.is_wildcard(),
            _ => false,
        }
    }

    /// The UIDs of a single-UID or list-of-UID key.
    pub fn uids(&self) -> Option<&[String]> {
        match &self.rule {
            Rule::Uids(uids) => Some(uids),
            _ => None,
        }
    }

    /// The exact text of a single-value text key (Patient ID at the patient
    /// level of a C-MOVE, for example).
    pub fn exact_text(&self) -> Option<&str> {
        match &self.rule {
            Rule::Text(Pattern::Exact(value)) | Rule::Number(value) => Some(value),
            Rule::Uids(uids) if uids.len() == 1 => uids.first().map(String::as_str),
            _ => None,
        }
    }

    /// Whether `attribute` matches. An unavailable attribute cannot be
    /// checked and does not constrain (the key is reported unsupported).
    pub fn matches(&self, attribute: &Attribute<'_>) -> bool {
        match attribute {
            Attribute::Unavailable => true,
            Attribute::Empty => self.matches_empty(),
            Attribute::Sequence { .. } => self.rule == Rule::Universal,
            Attribute::Text(_) | Attribute::Encoded { .. } => match attribute.text(self.vr) {
                Some(text) => self.matches_text(&text),
                None => self.matches_empty(),
            },
        }
    }

    /// Whether the stored value `stored` (Unicode text, values separated by
    /// `\`) matches.
    pub fn matches_text(&self, stored: &str) -> bool {
        let kind = kind(self.vr);
        let stored = trim(kind, stored);
        if stored.is_empty() {
            return self.matches_empty();
        }
        match &self.rule {
            Rule::Universal => true,
            Rule::EmptyValue => false,
            // Every key value must match one of the stored values.
            Rule::AllOf(rules) => rules
                .iter()
                .all(|rule| self.any_stored_value(kind, stored, rule)),
            rule => self.any_stored_value(kind, stored, rule),
        }
    }

    fn matches_empty(&self) -> bool {
        matches!(self.rule, Rule::Universal | Rule::EmptyValue)
    }

    fn any_stored_value(&self, kind: Kind, stored: &str, rule: &Rule) -> bool {
        if multi_valued(self.vr) {
            stored
                .split('\\')
                .any(|value| rule_matches(kind, rule, trim(kind, value)))
        } else {
            rule_matches(kind, rule, stored)
        }
    }

    /// The stored value's point on the time axis (its interval's start),
    /// for DA, TM and DT matchers.
    pub(crate) fn point(&self, stored: &str) -> Option<i64> {
        parse_point(kind(self.vr), trim(kind(self.vr), stored))
    }

    /// The range of a DA, TM or DT key: form, low bound, high bound.
    pub(crate) fn range(&self) -> Option<(RangeForm, Option<Interval>, Option<Interval>)> {
        match &self.rule {
            Rule::Range { form, low, high } => Some((*form, *low, *high)),
            _ => None,
        }
    }

    /// What every matching value satisfies, for an index; `None` when the
    /// matcher implies nothing an index can use.
    pub fn constraint(&self) -> Option<Constraint<'_>> {
        constraint(self.vr, &self.rule)
    }
}

fn constraint(vr: Vr, rule: &Rule) -> Option<Constraint<'_>> {
    match rule {
        Rule::Universal | Rule::Number(_) => None,
        Rule::EmptyValue => Some(Constraint::Empty),
        Rule::Text(Pattern::Exact(value)) => Some(Constraint::Equals {
            value,
            case_insensitive: false,
        }),
        Rule::Text(pattern) => pattern.literal_head().map(|literal| Constraint::Prefix {
            literal,
            case_insensitive: false,
        }),
        Rule::PersonName(pattern) if pattern.any_group => match pattern.groups.first() {
            Some(Some(Pattern::Exact(value))) => Some(Constraint::Equals {
                value,
                case_insensitive: pattern.case_insensitive,
            }),
            Some(Some(wildcard)) => wildcard.literal_head().map(|literal| Constraint::Prefix {
                literal,
                case_insensitive: pattern.case_insensitive,
            }),
            _ => None,
        },
        Rule::PersonName(_) => None,
        Rule::Uids(uids) => match uids.as_slice() {
            [uid] => Some(Constraint::Equals {
                value: uid,
                case_insensitive: false,
            }),
            _ => Some(Constraint::OneOf(uids.iter().map(String::as_str).collect())),
        },
        Rule::Range { low, high, .. } => {
            let format = match kind(vr) {
                Kind::Date => datetime::format_date,
                Kind::Time => datetime::format_time,
                _ => datetime::format_datetime,
            };
            Some(Constraint::Range {
                low: low.map(|bound| format(bound.start)),
                high: high.map(|bound| format(bound.end)),
            })
        }
        Rule::AnyOf(rules) => {
            let mut values = Vec::with_capacity(rules.len());
            for rule in rules {
                match rule {
                    Rule::Text(Pattern::Exact(value)) => values.push(value.as_str()),
                    _ => return None,
                }
            }
            Some(Constraint::OneOf(values))
        }
        // Each value of an AND is necessary: the first narrows as well as any.
        Rule::AllOf(rules) => rules.first().and_then(|rule| constraint(vr, rule)),
    }
}

fn rule_matches(kind: Kind, rule: &Rule, stored: &str) -> bool {
    if stored.is_empty() {
        return *rule == Rule::Universal;
    }
    match rule {
        Rule::Universal => true,
        Rule::EmptyValue => false,
        Rule::Text(pattern) => pattern.matches(stored),
        Rule::PersonName(pattern) => pattern.matches(stored),
        Rule::Uids(uids) => uids.iter().any(|uid| uid == stored),
        Rule::Number(key) => numbers_equal(key, stored),
        Rule::Range { low, high, .. } => parse_point(kind, stored).is_some_and(|point| {
            low.is_none_or(|low| point >= low.start) && high.is_none_or(|high| point <= high.end)
        }),
        Rule::AnyOf(rules) => rules.iter().any(|rule| rule_matches(kind, rule, stored)),
        Rule::AllOf(_) => {
            debug_assert!(false, "AllOf is only a top-level rule");
            false
        }
    }
}

/// IS and DS values compare as numbers (`+12` is `12`, `1.50` is `1.5`);
/// text that is not a number compares literally.
fn numbers_equal(key: &str, stored: &str) -> bool {
    match (key.parse::<f64>(), stored.parse::<f64>()) {
        (Ok(key), Ok(stored)) => key == stored,
        _ => key == stored,
    }
}

fn parse_point(kind: Kind, stored: &str) -> Option<i64> {
    let interval = match kind {
        Kind::Date => datetime::date(stored),
        Kind::Time => datetime::time(stored),
        Kind::DateTime => datetime::datetime(stored),
        _ => None,
    }?;
    Some(interval.start)
}

fn single(kind: Kind, value: &str, options: &MatchOptions) -> Result<Rule, ValueError> {
    Ok(match kind {
        Kind::Text { wildcards, .. } => Rule::Text(Pattern::parse(value, wildcards)),
        Kind::PersonName => {
            match PersonNamePattern::parse(value, options.person_name_case_insensitive) {
                Some(pattern) => Rule::PersonName(pattern),
                None => Rule::Universal,
            }
        }
        Kind::Uid => Rule::Uids(vec![uid(value)?.to_owned()]),
        Kind::Number => Rule::Number(value.to_owned()),
        Kind::Date => range(value, datetime::date, "not a valid date (YYYYMMDD)")?,
        Kind::Time => range(value, datetime::time, "not a valid time (HHMMSS.FFFFFF)")?,
        Kind::DateTime => datetime_range(value)?,
        Kind::NotMatchable => return Err(error("values of this VR cannot be matched")),
    })
}

fn multiple(kind: Kind, value: &str, options: &MatchOptions) -> Result<Rule, ValueError> {
    let parts = value.split('\\').map(|part| trim(kind, part));
    if kind == Kind::Uid {
        let uids = parts
            .filter(|part| !part.is_empty())
            .map(|part| uid(part).map(str::to_owned))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(if uids.is_empty() {
            Rule::Universal
        } else {
            Rule::Uids(uids)
        });
    }
    let mut rules = Vec::new();
    for part in parts {
        let rule = if part.is_empty() {
            Rule::Universal
        } else {
            single(kind, part, options)?
        };
        rules.push(rule);
    }
    if options.multiple_value_matching {
        if value.contains(['*', '?'])
            && matches!(
                kind,
                Kind::Text {
                    wildcards: true,
                    ..
                } | Kind::PersonName
            )
        {
            return Err(error(
                "wild cards are not allowed with multiple value matching",
            ));
        }
        rules.retain(|rule| *rule != Rule::Universal);
        return Ok(if rules.is_empty() {
            Rule::Universal
        } else {
            Rule::AllOf(rules)
        });
    }
    Ok(if rules.contains(&Rule::Universal) {
        Rule::Universal
    } else {
        Rule::AnyOf(rules)
    })
}

/// A UID key value: digits and dots, at most 64 characters. The full PS3.5
/// §9.1 syntax is not enforced: a stored UID is matched as it was received.
fn uid(value: &str) -> Result<&str, ValueError> {
    if value.contains(['*', '?']) {
        return Err(error(
            "wild cards are not allowed in UIDs (use a list of UIDs)",
        ));
    }
    if value.len() > 64
        || !value
            .bytes()
            .all(|byte| byte.is_ascii_digit() || byte == b'.')
    {
        return Err(error("not a UID"));
    }
    Ok(value)
}

fn range(
    value: &str,
    parse: fn(&str) -> Option<Interval>,
    invalid: &'static str,
) -> Result<Rule, ValueError> {
    if value.contains(['*', '?']) {
        return Err(error("wild cards are not allowed in dates and times"));
    }
    let bound = |text: &str| -> Result<Option<Interval>, ValueError> {
        let text = text.trim_matches(' ');
        if text.is_empty() {
            Ok(None)
        } else {
            parse(text).map(Some).ok_or(error(invalid))
        }
    };
    match value.split_once('-') {
        None => {
            let interval = parse(value).ok_or(error(invalid))?;
            Ok(Rule::Range {
                form: RangeForm::Single,
                low: Some(interval),
                high: Some(interval),
            })
        }
        Some((low, high)) => ranged(bound(low)?, bound(high)?),
    }
}

/// A DT key: `-` separates a range and also signs a UTC offset, so a value
/// that reads as one date-time is a single value, else the first split that
/// reads as two bounds is the range.
fn datetime_range(value: &str) -> Result<Rule, ValueError> {
    const INVALID: &str = "not a valid date-time (YYYYMMDDHHMMSS.FFFFFF&ZZXX)";
    if value.contains(['*', '?']) {
        return Err(error("wild cards are not allowed in dates and times"));
    }
    if let Some(interval) = datetime::datetime(value) {
        return Ok(Rule::Range {
            form: RangeForm::Single,
            low: Some(interval),
            high: Some(interval),
        });
    }
    let bound = |text: &str| -> Option<Option<Interval>> {
        let text = text.trim_matches(' ');
        if text.is_empty() {
            Some(None)
        } else {
            datetime::datetime(text).map(Some)
        }
    };
    for (at, _) in value.match_indices('-') {
        let (Some(low), Some(high)) = (value.get(..at), value.get(at.saturating_add(1)..)) else {
            continue;
        };
        if let (Some(low), Some(high)) = (bound(low), bound(high)) {
            return ranged(low, high);
        }
    }
    Err(error(INVALID))
}

fn ranged(low: Option<Interval>, high: Option<Interval>) -> Result<Rule, ValueError> {
    let form = match (low, high) {
        (None, None) => return Err(error("a range needs a bound")),
        (Some(low), Some(high)) => {
            if low.start > high.end {
                return Err(error("range starts after it ends"));
            }
            RangeForm::Closed
        }
        (None, Some(_)) => RangeForm::UpTo,
        (Some(_), None) => RangeForm::From,
    };
    Ok(Rule::Range { form, low, high })
}

/// The combined date-time interval of a date key and a time key that use the
/// same range form (PS3.4 C.2.2.2.5, when negotiated): `None` when they do
/// not combine.
pub(crate) fn combined_interval(
    date: &ValueMatcher,
    time: &ValueMatcher,
) -> Option<(Option<i64>, Option<i64>)> {
    let (date_form, date_low, date_high) = date.range()?;
    let (time_form, time_low, time_high) = time.range()?;
    if date_form != time_form || date_form == RangeForm::Single {
        return None;
    }
    // A date bound starts at its midnight; the time of day is added to it.
    let low = date_low
        .zip(time_low)
        .map(|(day, time)| day.start + time.start);
    let high = date_high
        .zip(time_high)
        .map(|(day, time)| day.start + time.end);
    debug_assert!(date_high.is_none_or(|day| day.end - day.start == MICROS_PER_DAY - 1));
    Some((low, high))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(vr: Vr, value: &str) -> ValueMatcher {
        ValueMatcher::parse(vr, value, &MatchOptions::default()).unwrap()
    }

    #[test]
    fn glob_matches_like_the_standard_says() {
        let p = |s: &str| s.chars().collect::<Vec<_>>();
        assert!(glob(&p("d*"), "doe"));
        assert!(glob(&p("*"), ""));
        assert!(glob(&p("d?e"), "doe"));
        assert!(!glob(&p("d?e"), "de"));
        assert!(glob(&p("*o*n"), "doe^john"));
        assert!(!glob(&p("*x*"), "doe^john"));
        assert!(glob(&p("é?"), "éa"));
        assert!(glob(&p("山*"), "山田^太郎"));
        assert!(glob(&p("?田*"), "山田"));
        assert!(glob(&p("a*b*c"), "aXbYbZc"));
        assert!(!glob(&p("a*b*c"), "aXbYbZ"));
        assert!(glob(&p("**a"), "bba"));
    }

    #[test]
    fn constraints_for_the_index() {
        assert_eq!(
            matcher(Vr::LO, "PID-1 ").constraint(),
            Some(Constraint::Equals {
                value: "PID-1",
                case_insensitive: false
            })
        );
        assert_eq!(
            matcher(Vr::SH, "ACC*9").constraint(),
            Some(Constraint::Prefix {
                literal: "ACC".into(),
                case_insensitive: false
            })
        );
        assert_eq!(matcher(Vr::SH, "*9").constraint(), None);
        assert_eq!(
            matcher(Vr::UI, "1.2\\1.3").constraint(),
            Some(Constraint::OneOf(vec!["1.2", "1.3"]))
        );
        assert_eq!(
            matcher(Vr::DA, "20240101-").constraint(),
            Some(Constraint::Range {
                low: Some("20240101".into()),
                high: None
            })
        );
        assert_eq!(
            matcher(Vr::DA, "20240115").constraint(),
            Some(Constraint::Range {
                low: Some("20240115".into()),
                high: Some("20240115".into())
            })
        );
        assert_eq!(
            matcher(Vr::TM, "-10").constraint(),
            Some(Constraint::Range {
                low: None,
                high: Some("105959.999999".into())
            })
        );
        assert_eq!(
            matcher(Vr::CS, "CT\\MR").constraint(),
            Some(Constraint::OneOf(vec!["CT", "MR"]))
        );
        assert_eq!(matcher(Vr::PN, "Doe*=山田").constraint(), None);
        assert_eq!(matcher(Vr::LO, "").constraint(), None);
    }

    #[test]
    fn the_person_name_fold_is_per_character_and_idempotent() {
        for code in 0..=u32::from(char::MAX) {
            let Some(character) = char::from_u32(code) else {
                continue;
            };
            let once = fold_character(character);
            assert_eq!(fold_character(once), once, "{character:?}");
        }
        assert_eq!(fold_person_name("DOE^John"), "doe^john");
        assert_eq!(fold_person_name("ΟΔΥΣ"), "οδυσ");
        assert_eq!(fold_person_name("Οδυσσεας"), "οδυσσεασ");
        assert_eq!(fold_person_name("İstanbul"), "İstanbul");
        assert_eq!(
            fold_person_name("ＹＡＭＡＤＡ=山田=やまだ"),
            "ｙａｍａｄａ=山田=やまだ"
        );
        assert!(matches!(fold_person_name("山田^太郎"), Cow::Borrowed(_)));
    }

    #[test]
    fn datetime_keys_tell_offsets_from_ranges() {
        let single = matcher(Vr::DT, "20240101120000-0500");
        assert!(single.is_single_value());
        assert!(single.matches_text("20240101170000+0000"));
        let range = matcher(Vr::DT, "2024-2025");
        assert!(range.matches_text("20250630"));
        assert!(!range.matches_text("2026"));
        let from = matcher(Vr::DT, "20240101-0500-");
        assert!(from.matches_text("20240101060000"));
        assert!(!from.matches_text("20240101040000"));
    }
}
