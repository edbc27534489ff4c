//! Property tests: an identifier built from random keys decodes to those
//! keys in both encodings, encoding the decoded query again gives the same
//! query, and mutated identifiers never panic the decoder.

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};

use sluice_net::dimse::dataset::{SmallDatasetEncoding, Vr};
use sluice_net::dimse::Tag;
use sluice_net::query::model::{self, tags};
use sluice_net::query::{
    FindNegotiation, IdentifierBuilder, Level, MatchOptions, Query, ValueMatcher,
};

use super::study_root_find;

const ENCODINGS: [SmallDatasetEncoding; 2] = [
    SmallDatasetEncoding::ImplicitVrLittleEndian,
    SmallDatasetEncoding::ExplicitVrLittleEndian,
];

fn date() -> impl Strategy<Value = String> + Clone {
    (1900u32..2100, 1u32..=12, 1u32..=28).prop_map(|(y, m, d)| format!("{y:04}{m:02}{d:02}"))
}

fn time() -> impl Strategy<Value = String> + Clone {
    (0u32..24, 0u32..60, 0u32..60, 0usize..3).prop_map(|(h, m, s, precision)| match precision {
        0 => format!("{h:02}"),
        1 => format!("{h:02}{m:02}"),
        _ => format!("{h:02}{m:02}{s:02}"),
    })
}

/// A DA or TM key: empty, single, or one of the three range forms.
fn range_of(single: impl Strategy<Value = String> + Clone) -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        single.clone(),
        (single.clone(), single.clone()).prop_map(|(a, b)| {
            let (low, high) = if a <= b { (a, b) } else { (b, a) };
            format!("{low}-{high}")
        }),
        single.clone().prop_map(|a| format!("-{a}")),
        single.prop_map(|a| format!("{a}-")),
    ]
}

fn person_name() -> impl Strategy<Value = String> {
    (
        "[A-Za-z]{1,8}",
        "[A-Za-z]{0,8}",
        prop_oneof![Just(""), Just("*"), Just("?")],
        proptest::option::of("[山田太郎花子]{1,3}"),
    )
        .prop_map(|(family, given, wildcard, ideographic)| {
            let mut name = format!("{family}^{given}{wildcard}");
            if let Some(ideographic) = ideographic {
                name.push('=');
                name.push_str(&ideographic);
            }
            name
        })
}

fn uid_list() -> impl Strategy<Value = String> {
    proptest::collection::vec((1u32..1000, 1u32..1000), 1..4).prop_map(|uids| {
        uids.iter()
            .map(|(a, b)| format!("1.2.840.{a}.{b}"))
            .collect::<Vec<_>>()
            .join("\\")
    })
}

/// Keys of the study level (and one series key, ignored at this level).
fn keys() -> impl Strategy<Value = Vec<(Tag, String)>> {
    (
        proptest::option::of(person_name()),
        proptest::option::of("[A-Z0-9-]{0,10}[*?]?"),
        proptest::option::of(range_of(date())),
        proptest::option::of(range_of(time())),
        proptest::option::of(uid_list()),
        proptest::option::of(proptest::sample::subsequence(
            vec!["CT", "MR", "PT", "SR"],
            0..4,
        )),
        proptest::option::of("[A-Z]{0,2}"),
    )
        .prop_map(
            |(name, id, study_date, study_time, uids, modalities, modality)| {
                let mut keys = Vec::new();
                let mut push = |tag: Tag, value: Option<String>| {
                    if let Some(value) = value {
                        keys.push((tag, value));
                    }
                };
                push(tags::PATIENT_NAME, name);
                push(tags::PATIENT_ID, id);
                push(tags::STUDY_DATE, study_date);
                push(tags::STUDY_TIME, study_time);
                push(tags::STUDY_INSTANCE_UID, uids);
                push(tags::MODALITIES_IN_STUDY, modalities.map(|m| m.join("\\")));
                push(tags::MODALITY, modality);
                keys
            },
        )
}

fn encode(keys: &[(Tag, String)], encoding: SmallDatasetEncoding) -> Vec<u8> {
    let mut identifier = IdentifierBuilder::new(Level::Study).character_set("ISO_IR 192");
    for (tag, value) in keys {
        identifier = identifier.key(*tag, value);
    }
    identifier.encode(encoding).unwrap()
}

proptest! {
    #![proptest_config(Config {
        cases: 256,
        rng_seed: RngSeed::Fixed(0x5175_E0F1),
        ..Config::default()
    })]

    #[test]
    fn identifiers_decode_to_their_keys(keys in keys(), combined in any::<bool>()) {
        let context = study_root_find().with_find_negotiation(&FindNegotiation {
            combined_datetime_matching: combined,
            ..FindNegotiation::default()
        });
        for encoding in ENCODINGS {
            let query = Query::decode(&encode(&keys, encoding), encoding, &context).unwrap();
            prop_assert_eq!(query.level(), Level::Study);
            prop_assert_eq!(query.keys().len(), keys.len());
            for (tag, value) in &keys {
                let key = query.key(*tag).unwrap();
                prop_assert_eq!(&key.value, value.trim_end());
                let vr = model::vr_of(*tag).unwrap();
                prop_assert_eq!(key.vr, vr);
                if key.ignored.is_none() && !(combined && (*tag == tags::STUDY_DATE || *tag == tags::STUDY_TIME)) {
                    let expected = ValueMatcher::parse(vr, value, &MatchOptions::default()).unwrap();
                    prop_assert_eq!(key.matcher(), Some(&expected));
                }
            }
            // Encoding the decoded query again gives the same query.
            let again: Vec<(Tag, String)> =
                query.keys().iter().map(|key| (key.tag, key.value.clone())).collect();
            let decoded_again = Query::decode(&encode(&again, encoding), encoding, &context).unwrap();
            prop_assert_eq!(&decoded_again, &query);
        }
    }

    #[test]
    fn a_key_matches_the_value_it_was_built_from(keys in keys()) {
        // A stored entity holding each key's own value (wild cards and
        // ranges aside) matches the query: single values match themselves.
        let singles: Vec<(Tag, String)> = keys
            .into_iter()
            .filter(|(tag, value)| {
                !value.contains(['*', '?', '-', '\\'])
                    && *tag != tags::MODALITY
                    && model::vr_of(*tag) != Some(Vr::TM)
            })
            .collect();
        let query = Query::decode(
            &encode(&singles, SmallDatasetEncoding::ExplicitVrLittleEndian),
            SmallDatasetEncoding::ExplicitVrLittleEndian,
            &study_root_find(),
        )
        .unwrap();
        let values: Vec<(Tag, &str)> = singles.iter().map(|(tag, value)| (*tag, value.as_str())).collect();
        let stored = super::Stored::from_dataset({
            let mut dataset = sluice_net::query::builder::item(&values);
            dataset.put_str(tags::SPECIFIC_CHARACTER_SET, None, "ISO_IR 192");
            dataset
        });
        prop_assert!(query.matches(&stored.candidate()));
    }

    #[test]
    fn mutated_identifiers_never_panic(
        keys in keys(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        for encoding in ENCODINGS {
            let mut bytes = encode(&keys, encoding);
            for (at, byte) in &flips {
                let at = at.index(bytes.len());
                bytes[at] = *byte;
            }
            let cut = cut.index(bytes.len() + 1);
            for context in [study_root_find(), study_root_find().with_find_negotiation(&FindNegotiation {
                relational_queries: true,
                combined_datetime_matching: true,
                empty_value_matching: true,
                multiple_value_matching: true,
                ..FindNegotiation::default()
            })] {
                if let Ok(query) = Query::decode(&bytes[..cut], encoding, &context) {
                    // Whatever decodes can be matched and answered.
                    let stored = super::Stored::new(&[(tags::PATIENT_NAME, "Doe^John")]);
                    let _ = query.matches(&stored.candidate());
                    let _ = sluice_net::query::build_response(&query, &stored.candidate(), &Default::default());
                }
            }
        }
    }
}
