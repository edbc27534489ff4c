//! PS3.4 C.2.2.2 matching rules, as tables: each row a key value, a stored
//! value and the outcome, with the clause it comes from. The combined
//! date-time, sequence and multiple-value rows use the standard's own
//! examples (C.2.2.2.5, C.2.2.2.6, C.2.2.2.8 notes).

use sluice_net::dimse::dataset::Vr;
use sluice_net::query::model::tags;
use sluice_net::query::{FindNegotiation, Level, MatchOptions, QueryContext, ValueMatcher};

use super::{query, study_root_find, Stored};

fn matches(vr: Vr, key: &str, stored: &str, options: &MatchOptions) -> bool {
    ValueMatcher::parse(vr, key, options)
        .unwrap_or_else(|error| panic!("{key:?} refused: {error}"))
        .matches_text(stored)
}

#[test]
fn single_value_universal_wildcard_and_uid_list_rows() {
    let baseline = MatchOptions::default();
    #[rustfmt::skip]
    let rows: &[(&str, Vr, &str, &str, bool)] = &[
        // C.2.2.2.1 Single Value Matching: exact and case-sensitive.
        ("single", Vr::LO, "ABC", "ABC", true),
        ("single is case-sensitive", Vr::LO, "ABC", "abc", false),
        ("trailing padding is not significant", Vr::LO, "ABC", "ABC ", true),
        ("leading spaces of LO are not significant", Vr::LO, " ABC", "ABC", true),
        ("leading spaces of LT are significant", Vr::LT, " ABC", "ABC", false),
        ("PN exact", Vr::PN, "Doe^John", "Doe^John", true),
        ("PN is case-sensitive by default", Vr::PN, "Doe^John", "DOE^JOHN", false),
        ("PN trailing empty components", Vr::PN, "Doe^John", "Doe^John^^^", true),
        ("PN key with trailing components", Vr::PN, "Doe^John^^", "Doe^John", true),
        ("DA single", Vr::DA, "20240115", "20240115", true),
        ("DA single, other day", Vr::DA, "20240115", "20240116", false),
        ("DA single, ACR-NEMA stored", Vr::DA, "20240115", "2024.01.15", true),
        ("TM single covers its precision", Vr::TM, "1030", "103015", true),
        ("TM single, next minute", Vr::TM, "1030", "103100", false),
        ("IS compares numbers", Vr::IS, "12", "+12", true),
        ("IS compares numbers", Vr::IS, "12", "012", true),
        ("DS compares numbers", Vr::DS, "1.5", "1.50", true),
        ("AS is literal", Vr::AS, "045Y", "045Y", true),
        ("stored empty matches no single value", Vr::LO, "ABC", "", false),
        // C.2.2.2.2 List of UID Matching.
        ("UID list", Vr::UI, "1.2.3\\1.2.4", "1.2.4", true),
        ("UID list, other UID", Vr::UI, "1.2.3\\1.2.4", "1.2.5", false),
        ("UID, stored NUL padding", Vr::UI, "1.2.3", "1.2.3\0", true),
        // C.2.2.2.3 Universal Matching.
        ("universal", Vr::LO, "", "anything", true),
        ("universal matches empty", Vr::DA, "", "", true),
        // C.2.2.2.4 Wild Card Matching.
        ("* any run", Vr::PN, "Doe*", "Doe^John", true),
        ("? one character", Vr::PN, "D?e^John", "Doe^John", true),
        ("? is exactly one", Vr::SH, "A?", "A", false),
        ("* alone is universal", Vr::PN, "*", "", true),
        ("* alone is universal for UI too", Vr::UI, "*", "1.2.3", true),
        ("CS takes wild cards", Vr::CS, "C?", "CT", true),
        ("LO wild card inside", Vr::LO, "P*-1", "PID-1", true),
        ("wild cards are case-sensitive", Vr::LO, "p*", "PID", false),
        ("IS has no wild cards: literal", Vr::IS, "1*", "12", false),
        ("AS has no wild cards: literal", Vr::AS, "0?5Y", "005Y", false),
        ("stored empty vs ?*", Vr::SH, "?*", "", false),
        // C.2.2.2.5 Range Matching.
        ("DA closed range", Vr::DA, "20060705-20060707", "20060706", true),
        ("DA closed range, after", Vr::DA, "20060705-20060707", "20060708", false),
        ("DA up to, inclusive", Vr::DA, "-20060707", "20060707", true),
        ("DA from, inclusive", Vr::DA, "20060705-", "20060705", true),
        ("DA from, before", Vr::DA, "20060705-", "20060704", false),
        ("DA range, ACR-NEMA key", Vr::DA, "2006.07.05-2006.07.07", "20060706", true),
        ("DA range vs stored empty", Vr::DA, "20060705-", "", false),
        ("DA range vs stored garbage", Vr::DA, "20060705-", "unknown", false),
        ("TM closed range", Vr::TM, "1000-1800", "1200", true),
        ("TM closed range, before", Vr::TM, "1000-1800", "0959", false),
        ("TM high bound at its precision", Vr::TM, "1000-1800", "180059.9", true),
        ("TM up to", Vr::TM, "-1000", "1000", true),
        ("TM from", Vr::TM, "1000-", "235959", true),
        ("TM ACR-NEMA stored", Vr::TM, "1000-1800", "12:00:00", true),
        ("DT closed range", Vr::DT, "20060705100000-20060707180000", "20060706", true),
        ("DT range, after", Vr::DT, "20060705100000-20060707180000", "20060707180001", false),
        ("DT offsets are taken into account", Vr::DT, "20240101120000+0100-", "20240101110000+0000", true),
        ("DT offsets are taken into account", Vr::DT, "20240101120000+0100-", "20240101105959+0000", false),
        ("DT reduced precision key", Vr::DT, "2024", "20241231235959", true),
        // Multi-valued stored attributes: any value matches.
        ("multi-valued stored", Vr::CS, "SR", "CT\\SR", true),
        ("multi-valued stored, none", Vr::CS, "MR", "CT\\SR", false),
        // Several key values without Multiple Value Matching: any.
        ("key values: any", Vr::CS, "CT\\MR", "MR", true),
        ("key values: any, with wild card", Vr::CS, "M?\\PT", "MR", true),
        ("key values: none", Vr::CS, "CT\\MR", "US", false),
    ];
    for (rule, vr, key, stored, expected) in rows {
        assert_eq!(
            matches(*vr, key, stored, &baseline),
            *expected,
            "{rule}: key {key:?} vs stored {stored:?}"
        );
    }
}

#[test]
fn person_names_match_per_component_group() {
    let baseline = MatchOptions::default();
    let stored = "Yamada^Tarou=山田^太郎=やまだ^たろう";
    #[rustfmt::skip]
    let rows: &[(&str, bool)] = &[
        ("Yamada^Tarou", true),
        ("山田^太郎", true),
        ("やまだ*", true),
        ("山*", true),
        ("=山田*", true),
        ("Yamada*=山田*", true),
        ("Yamada*=Tanaka*", false),
        ("*=*=やまだ^たろう", true),
        ("==やまだ^たろう", true),
        ("Tanaka^Tarou", false),
        // PS3.4 C.2.2.2.4 note 3: "*=*" may or may not be universal; here it is.
        ("*=*", true),
    ];
    for (key, expected) in rows {
        assert_eq!(
            matches(Vr::PN, key, stored, &baseline),
            *expected,
            "{key:?}"
        );
    }
    // A stored name with only the alphabetic group.
    assert!(!matches(Vr::PN, "=山田*", "Yamada^Tarou", &baseline));
    assert!(matches(Vr::PN, "Yamada*=", "Yamada^Tarou", &baseline));
}

#[test]
fn person_names_case_insensitive_when_chosen() {
    let insensitive = MatchOptions {
        person_name_case_insensitive: true,
        ..MatchOptions::default()
    };
    assert!(matches(Vr::PN, "doe^john", "DOE^JOHN", &insensitive));
    assert!(matches(Vr::PN, "DOE*", "Doe^John", &insensitive));
    assert!(matches(Vr::PN, "bürger*", "BÜRGER^RENÉ", &insensitive));
    // Wild cards over the folded name: `?` is still one character.
    #[rustfmt::skip]
    let rows: &[(&str, &str, bool)] = &[
        ("m?ller^j*", "MÜLLER^JÜRGEN", true),
        ("m??ller^j*", "MÜLLER^JÜRGEN", false),
        ("*ÜRG*", "müller^jürgen", true),
        // Accents are not folded away.
        ("muller*", "MÜLLER^JÜRGEN", false),
        // Greek: the final sigma folds as sigma, whatever follows it.
        ("οδυσσευς*", "ΟΔΥΣΣΕΥΣ^ΝΙΚΟΣ", true),
        ("ΟΔΥΣ*", "Οδυσσευς", true),
        // Cyrillic (ISO_IR 144).
        ("иванов^*", "ИВАНОВ^ИВАН", true),
        // `İ` lowercases to two characters: it stays as it is.
        ("?stanbul", "İSTANBUL", true),
        ("istanbul", "İSTANBUL", false),
        // Ideographic and phonetic groups have no case; full-width Latin does.
        ("yamada*=山田*", "YAMADA^TAROU=山田^太郎=やまだ^たろう", true),
        ("==やまだ^*", "YAMADA^TAROU=山田^太郎=やまだ^たろう", true),
        ("ｙａｍａｄａ*", "ＹＡＭＡＤＡ^ＴＡＲＯＵ", true),
    ];
    for (key, stored, expected) in rows {
        assert_eq!(
            matches(Vr::PN, key, stored, &insensitive),
            *expected,
            "{key:?} against {stored:?}"
        );
    }
    // Only person names: other VRs stay case-sensitive.
    assert!(!matches(Vr::LO, "pid", "PID", &insensitive));
}

#[test]
fn refused_values_say_why() {
    let baseline = MatchOptions::default();
    #[rustfmt::skip]
    let rows: &[(Vr, &str, &str)] = &[
        (Vr::UI, "1.2.*", "wild cards are not allowed in UIDs"),
        (Vr::UI, "1.2.a", "not a UID"),
        (Vr::DA, "2024", "not a valid date"),
        (Vr::DA, "20241301", "not a valid date"),
        (Vr::DA, "-", "a range needs a bound"),
        (Vr::DA, "20240102-20240101", "range starts after it ends"),
        // C.2.2.2.5: Range Matching crossing midnight is not supported.
        (Vr::TM, "2200-0200", "range starts after it ends"),
        (Vr::TM, "9", "not a valid time"),
        (Vr::DA, "2024*", "wild cards are not allowed in dates and times"),
        (Vr::DT, "2024-13", "not a valid date-time"),
        (Vr::US, "512", "cannot be matched"),
    ];
    for (vr, key, reason) in rows {
        let error = ValueMatcher::parse(*vr, key, &baseline).expect_err(key);
        assert!(error.reason.contains(reason), "{key:?}: {}", error.reason);
    }
}

#[test]
fn empty_value_matching_only_when_negotiated() {
    // C.2.2.2.7: "" matches entities without a value, when negotiated.
    let negotiated = MatchOptions {
        empty_value_matching: true,
        ..MatchOptions::default()
    };
    assert!(matches(Vr::LO, "\"\"", "", &negotiated));
    assert!(!matches(Vr::LO, "\"\"", "X", &negotiated));
    assert!(matches(Vr::DA, "\"\"", "", &negotiated));
    // Without it the two quotation marks are text.
    let baseline = MatchOptions::default();
    assert!(!matches(Vr::LO, "\"\"", "", &baseline));
    assert!(matches(Vr::LO, "\"\"", "\"\"", &baseline));
}

#[test]
fn multiple_value_matching_ps3_4_c_2_2_2_8() {
    // "A value of CT\PT for Modalities in Study will match only Studies
    // that include both a CT Series and a PT Series."
    let negotiated = MatchOptions {
        multiple_value_matching: true,
        ..MatchOptions::default()
    };
    assert!(matches(Vr::CS, "CT\\PT", "CT\\PT\\SR", &negotiated));
    assert!(matches(Vr::CS, "CT\\PT", "PT\\CT", &negotiated));
    assert!(!matches(Vr::CS, "CT\\PT", "CT\\MR", &negotiated));
    let error = ValueMatcher::parse(Vr::CS, "C*\\PT", &negotiated).expect_err("wild card");
    assert!(error.reason.contains("wild cards"));
}

#[test]
fn combined_date_time_ps3_4_c_2_2_2_5() {
    // "A Study Date of 20060705-20060707 and a Study Time of 1000-1800
    // will match the time period of July 5, 10am until July 7, 6pm, rather
    // than the three time periods of 10am until 6pm on each of July 5,
    // July 6 and July 7."
    let keys = [
        (tags::STUDY_DATE, "20060705-20060707"),
        (tags::STUDY_TIME, "1000-1800"),
    ];
    let independent = query(Level::Study, &keys);
    let context = study_root_find().with_find_negotiation(&FindNegotiation {
        combined_datetime_matching: true,
        ..FindNegotiation::default()
    });
    let combined = super::decode(&context, Level::Study, &keys).unwrap();
    #[rustfmt::skip]
    let rows: &[(&str, &str, bool, bool)] = &[
        // date, time, independent, combined
        ("20060705", "0900", false, false),
        ("20060705", "1200", true, true),
        ("20060706", "2000", false, true),
        ("20060706", "0300", false, true),
        ("20060706", "", false, true),
        ("20060707", "1800", true, true),
        ("20060707", "1900", false, false),
        ("20060704", "1200", false, false),
    ];
    for (date, time, expected_independent, expected_combined) in rows {
        let stored = Stored::new(&[(tags::STUDY_DATE, date), (tags::STUDY_TIME, time)]);
        assert_eq!(
            independent.matches(&stored.candidate()),
            *expected_independent,
            "independent {date} {time}"
        );
        assert_eq!(
            combined.matches(&stored.candidate()),
            *expected_combined,
            "combined {date} {time}"
        );
    }
    // Different range forms are matched independently even when negotiated.
    let mixed = super::decode(
        &context,
        Level::Study,
        &[
            (tags::STUDY_DATE, "20060705-20060707"),
            (tags::STUDY_TIME, "1000-"),
        ],
    )
    .unwrap();
    let late_on_the_sixth =
        Stored::new(&[(tags::STUDY_DATE, "20060706"), (tags::STUDY_TIME, "0300")]);
    assert!(!mixed.matches(&late_on_the_sixth.candidate()));
}

#[test]
fn sequence_matching_ps3_4_c_2_2_2_6() {
    let code = super::code_item;
    let stored = Stored::new(&[(tags::STUDY_INSTANCE_UID, "1.2.3")]).with_sequence(
        tags::PROCEDURE_CODE_SEQUENCE,
        vec![code("P1-48000", "SRT"), code("RPID16", "RADLEX")],
    );
    let context = study_root_find();
    let find = |item: Option<sluice_net::dimse::dataset::SmallDataset>| {
        let bytes = sluice_net::query::IdentifierBuilder::new(Level::Study)
            .sequence(tags::PROCEDURE_CODE_SEQUENCE, item)
            .encode(sluice_net::dimse::dataset::SmallDatasetEncoding::ImplicitVrLittleEndian)
            .unwrap();
        sluice_net::query::Query::decode(
            &bytes,
            sluice_net::dimse::dataset::SmallDatasetEncoding::ImplicitVrLittleEndian,
            &context,
        )
        .unwrap()
    };
    // All item keys must match within one item; any item will do.
    assert!(find(Some(code("RPID16", "RADLEX"))).matches(&stored.candidate()));
    assert!(find(Some(code("P1-*", "SRT"))).matches(&stored.candidate()));
    assert!(!find(Some(code("RPID16", "SRT"))).matches(&stored.candidate()));
    // A zero-length item (or no item) is universal: it asks for the sequence.
    assert!(find(Some(code("", ""))).matches(&stored.candidate()));
    assert!(find(None).matches(&stored.candidate()));
    let without = Stored::new(&[(tags::STUDY_INSTANCE_UID, "1.2.3")]);
    assert!(find(None).matches(&without.candidate()));
    assert!(!find(Some(code("RPID16", ""))).matches(&without.candidate()));
}

#[test]
fn multiple_value_matching_through_negotiation() {
    let context: QueryContext = study_root_find().with_find_negotiation(&FindNegotiation {
        multiple_value_matching: true,
        ..FindNegotiation::default()
    });
    let both = super::decode(
        &context,
        Level::Study,
        &[(tags::MODALITIES_IN_STUDY, "CT\\PT")],
    )
    .unwrap();
    let either = query(Level::Study, &[(tags::MODALITIES_IN_STUDY, "CT\\PT")]);
    let ct_only = Stored::new(&[(tags::MODALITIES_IN_STUDY, "CT\\SR")]);
    let pet_ct = Stored::new(&[(tags::MODALITIES_IN_STUDY, "PT\\CT")]);
    assert!(!both.matches(&ct_only.candidate()));
    assert!(both.matches(&pet_ct.candidate()));
    assert!(either.matches(&ct_only.candidate()));
}
