//! Response identifiers (PS3.4 C.4.1.1.3.2): a matching entity's values for
//! the keys of the request, in the request's transfer syntax.
//!
//! The response holds every key of the request, in tag order, with the
//! entity's value or empty, plus the Query/Retrieve Level, the Retrieve AE
//! Title and Instance Availability the SCP supplies, and Specific Character
//! Set when a value needs one. Keys the source cannot supply (an attribute
//! it does not hold, a key below the query level, a private key) are
//! returned empty and listed in [`Response::unsupported`]: the service
//! answers FF01 for them.
//!
//! Character sets: the answer is in the character set of the stored data.
//! Values that are ASCII need none. When every value that is not ASCII
//! comes from objects stored in one character set, the stored bytes go out
//! unchanged under that set's (0008,0005) term, ISO 2022 escapes included.
//! When values from objects in different character sets must be combined
//! (a study whose instances disagree, or Unicode text from the index beside
//! stored bytes), every text value is decoded and the response is written
//! in UTF-8 (`ISO_IR 192`), the one set that holds them all.

use super::candidate::{Attribute, Candidate, CharacterSet, DatasetCandidate};
use super::identifier::{Ignored, Query, QueryKey};
use super::model::{self, tags};
use crate::dimse::dataset::{DatasetError, Element, SmallDataset, SmallDatasetEncoding, Value, Vr};
use crate::dimse::{Status, Tag};

/// What the SCP supplies beside the entity's values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResponseContext<'a> {
    /// Retrieve AE Title (0008,0054): the AE a C-MOVE should be sent to.
    pub retrieve_ae_title: Option<&'a str>,
    /// Instance Availability (0008,0056), returned when requested:
    /// `ONLINE`, `NEARLINE`, `OFFLINE` or `UNAVAILABLE`.
    pub instance_availability: Option<&'a str>,
}

/// One response identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The identifier.
    pub identifier: SmallDataset,
    /// Requested keys returned empty because the source cannot supply them.
    pub unsupported: Vec<Tag>,
}

impl Response {
    /// The pending status to send it with: FF01 when a requested key was
    /// not supported, FF00 otherwise.
    pub fn status(&self) -> Status {
        if self.unsupported.is_empty() {
            Status::PENDING
        } else {
            Status::PENDING_WARNING
        }
    }

    /// The identifier's bytes in `encoding` (the request's).
    pub fn encode(&self, encoding: SmallDatasetEncoding) -> Result<Vec<u8>, DatasetError> {
        self.identifier.encode(encoding)
    }
}

/// A value to return, before the character set is settled.
#[derive(Debug, Clone)]
enum Returned {
    Empty,
    Unicode(String),
    Encoded {
        bytes: Vec<u8>,
        charset: CharacterSet,
    },
    /// Items built from the requested item keys.
    Items(Vec<Vec<(Tag, Vr, Returned)>>),
    /// Items returned whole (a sequence key without item keys).
    StoredItems {
        items: Vec<SmallDataset>,
        charset: CharacterSet,
    },
}

/// Whether values of `vr` are in the Specific Character Set (PS3.5
/// §6.1.2.3); every other VR uses the default repertoire.
fn charset_sensitive(vr: Vr) -> bool {
    matches!(&vr.0, b"SH" | b"LO" | b"ST" | b"LT" | b"UT" | b"UC" | b"PN")
}

/// Whether bytes need a character set: above 0x7F, or ESC (ISO 2022).
fn needs_charset(bytes: &[u8]) -> bool {
    bytes.iter().any(|byte| *byte >= 0x80 || *byte == 0x1B)
}

/// The character sets a response's values need.
#[derive(Debug, Default)]
struct CharsetNeeds {
    /// The one stored set every non-ASCII stored value is in, so far.
    stored: Option<CharacterSet>,
    /// Values in more than one set, or Unicode text beside stored bytes.
    mixed: bool,
    unicode: bool,
}

impl CharsetNeeds {
    fn stored(&mut self, charset: &CharacterSet) {
        match &self.stored {
            None => self.stored = Some(charset.clone()),
            Some(existing) if existing.term() == charset.term() => {}
            Some(_) => self.mixed = true,
        }
    }

    fn visit(&mut self, vr: Vr, returned: &Returned) {
        match returned {
            Returned::Empty => {}
            Returned::Unicode(text) => {
                if charset_sensitive(vr) && needs_charset(text.as_bytes()) {
                    self.unicode = true;
                }
            }
            Returned::Encoded { bytes, charset } => {
                if charset_sensitive(vr) && needs_charset(bytes) {
                    self.stored(charset);
                }
            }
            Returned::Items(items) => {
                for (_, vr, value) in items.iter().flatten() {
                    self.visit(*vr, value);
                }
            }
            Returned::StoredItems { items, charset } => {
                if items.iter().any(item_needs_charset) {
                    self.stored(charset);
                }
            }
        }
    }

    /// The response's character set: `None` for the default repertoire,
    /// else the set and whether values must be decoded to UTF-8.
    fn settle(self) -> Option<(CharacterSet, bool)> {
        match (self.stored, self.mixed || self.unicode) {
            (None, false) => None,
            (Some(stored), false) => Some((stored, false)),
            (_, true) => Some((CharacterSet::utf8(), true)),
        }
    }
}

fn item_needs_charset(item: &SmallDataset) -> bool {
    item.elements().iter().any(|element| match &element.value {
        Value::Bytes(bytes) => charset_sensitive(stored_vr(element)) && needs_charset(bytes),
        Value::Sequence(items) => items.iter().any(item_needs_charset),
    })
}

/// A stored element's VR, the dictionary's when it arrived as UN.
fn stored_vr(element: &Element) -> Vr {
    if element.vr == Vr::UN {
        model::vr_of(element.tag).unwrap_or(Vr::UN)
    } else {
        element.vr
    }
}

/// An item with its text values decoded from `charset` into UTF-8.
fn item_to_utf8(item: &SmallDataset, charset: &CharacterSet) -> SmallDataset {
    let mut converted = SmallDataset::new();
    for element in item.elements() {
        let value = match &element.value {
            Value::Bytes(bytes) if charset_sensitive(stored_vr(element)) => Value::Bytes(
                charset
                    .decode(stored_vr(element), bytes)
                    .into_owned()
                    .into_bytes(),
            ),
            Value::Bytes(bytes) => Value::Bytes(bytes.clone()),
            Value::Sequence(items) => Value::Sequence(
                items
                    .iter()
                    .map(|item| item_to_utf8(item, charset))
                    .collect(),
            ),
        };
        converted.put(Element {
            tag: element.tag,
            vr: element.vr,
            value,
        });
    }
    converted
}

/// The value of `key` for `candidate`; keys the source cannot supply are
/// added to `unsupported` when `top_level` (an item key cannot make FF01).
fn returned(
    key: &QueryKey,
    candidate: &dyn Candidate,
    unsupported: &mut Vec<Tag>,
    top_level: bool,
) -> Returned {
    let not_supplied = |unsupported: &mut Vec<Tag>| {
        if top_level {
            unsupported.push(key.tag);
        }
        Returned::Empty
    };
    if matches!(
        key.ignored,
        Some(Ignored::BelowQueryLevel | Ignored::Private)
    ) {
        return not_supplied(unsupported);
    }
    let attribute = candidate.attribute(key.tag);
    let Some(item_keys) = key.item_keys() else {
        return match attribute {
            Attribute::Unavailable => not_supplied(unsupported),
            Attribute::Empty | Attribute::Sequence { .. } => Returned::Empty,
            Attribute::Text(text) => Returned::Unicode(text.into_owned()),
            Attribute::Encoded { bytes, charset } => Returned::Encoded {
                bytes: bytes.to_vec(),
                charset: charset.clone(),
            },
        };
    };
    match attribute {
        Attribute::Unavailable => not_supplied(unsupported),
        Attribute::Sequence { items, charset } if item_keys.is_empty() => Returned::StoredItems {
            items: items.to_vec(),
            charset: charset.clone(),
        },
        Attribute::Sequence { items, charset } => {
            // Sequence Matching returns the matching items, with only the
            // requested item keys (C.2.2.2.6).
            let mut returned_items = Vec::new();
            for item in items {
                let item = DatasetCandidate::new(item, charset);
                if !item_keys.iter().all(|item_key| item_key.matches(&item)) {
                    continue;
                }
                let values = item_keys
                    .iter()
                    .map(|item_key| {
                        let value = returned(item_key, &item, unsupported, false);
                        (item_key.tag, item_key.vr, value)
                    })
                    .collect();
                returned_items.push(values);
            }
            Returned::Items(returned_items)
        }
        _ => Returned::Empty,
    }
}

/// The element for a returned value, in the settled character set.
fn element(tag: Tag, vr: Vr, value: Returned, to_utf8: bool) -> Element {
    let value = match value {
        Returned::Empty => Value::Bytes(Vec::new()),
        Returned::Unicode(text) => Value::Bytes(text.into_bytes()),
        Returned::Encoded { bytes, charset } => {
            if to_utf8 && charset_sensitive(vr) && needs_charset(&bytes) {
                Value::Bytes(charset.decode(vr, &bytes).into_owned().into_bytes())
            } else {
                Value::Bytes(bytes)
            }
        }
        Returned::Items(items) => Value::Sequence(
            items
                .into_iter()
                .map(|item| {
                    let mut dataset = SmallDataset::new();
                    for (tag, vr, value) in item {
                        dataset.put(element(tag, vr, value, to_utf8));
                    }
                    dataset
                })
                .collect(),
        ),
        Returned::StoredItems { items, charset } => Value::Sequence(if to_utf8 {
            items
                .iter()
                .map(|item| item_to_utf8(item, &charset))
                .collect()
        } else {
            items
        }),
    };
    let vr = if matches!(value, Value::Sequence(_)) {
        Vr::SQ
    } else {
        vr
    };
    Element { tag, vr, value }
}

/// The response identifier for `candidate`, an entity that matched `query`.
pub fn build_response(
    query: &Query,
    candidate: &dyn Candidate,
    context: &ResponseContext<'_>,
) -> Response {
    let mut unsupported = Vec::new();
    let mut values = Vec::with_capacity(query.keys().len());
    for key in query.keys() {
        let value = match key.tag {
            tags::RETRIEVE_AE_TITLE => context
                .retrieve_ae_title
                .map_or(Returned::Empty, |title| Returned::Unicode(title.to_owned())),
            tags::INSTANCE_AVAILABILITY => context
                .instance_availability
                .map_or(Returned::Empty, |availability| {
                    Returned::Unicode(availability.to_owned())
                }),
            _ if key.ignored == Some(Ignored::ReturnedByScp) => Returned::Empty,
            _ => returned(key, candidate, &mut unsupported, true),
        };
        values.push((key.tag, key.vr, value));
    }
    let mut needs = CharsetNeeds::default();
    for (_, vr, value) in &values {
        needs.visit(*vr, value);
    }
    let settled = needs.settle();
    let to_utf8 = settled.as_ref().is_some_and(|(_, to_utf8)| *to_utf8);
    let mut identifier = SmallDataset::new();
    if let Some((charset, _)) = &settled {
        identifier.put(Element {
            tag: tags::SPECIFIC_CHARACTER_SET,
            vr: Vr::CS,
            value: Value::Bytes(charset.term().to_vec()),
        });
    }
    identifier.put_str(
        tags::QUERY_RETRIEVE_LEVEL,
        Some(Vr::CS),
        query.level().as_str(),
    );
    if let (Some(title), None) = (
        context.retrieve_ae_title,
        query.key(tags::RETRIEVE_AE_TITLE),
    ) {
        identifier.put_str(tags::RETRIEVE_AE_TITLE, Some(Vr::AE), title);
    }
    for (tag, vr, value) in values {
        identifier.put(element(tag, vr, value, to_utf8));
    }
    Response {
        identifier,
        unsupported,
    }
}
