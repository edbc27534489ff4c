//! The Q/R SOP Class Extended Negotiation sub-item's
//! service-class-application-information (PS3.4 C.5.1, C.5.2, C.5.3):
//! which optional behaviours an SCU asks for and an SCP grants.
//!
//! Each field is one byte, 1 for yes; a short field leaves the missing
//! bytes at "no" (PS3.4: bytes after the first are optional), and an
//! acceptor answers with at most as many bytes as it was sent.

/// The C-FIND fields (PS3.4 Tables C.5-1 and C.5-2), in byte order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FindNegotiation {
    /// Byte 1: relational queries (no unique keys needed above the level).
    pub relational_queries: bool,
    /// Byte 2: combined date and time range matching (C.2.2.2.5).
    pub combined_datetime_matching: bool,
    /// Byte 3: fuzzy semantic matching of person names.
    pub fuzzy_person_name_matching: bool,
    /// Byte 4: timezone query adjustment.
    pub timezone_query_adjustment: bool,
    /// Byte 5: enhanced multi-frame image conversion.
    pub enhanced_multiframe_conversion: bool,
    /// Byte 6: Empty Value Matching (C.2.2.2.7).
    pub empty_value_matching: bool,
    /// Byte 7: Multiple Value Matching (C.2.2.2.8).
    pub multiple_value_matching: bool,
}

/// The C-MOVE and C-GET fields (PS3.4 Tables C.5-3 and C.5-4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetrieveNegotiation {
    /// Byte 1: relational retrieval (no unique keys needed above the level).
    pub relational_retrieval: bool,
    /// Byte 2: enhanced multi-frame image conversion.
    pub enhanced_multiframe_conversion: bool,
}

fn flag(information: &[u8], index: usize) -> bool {
    information.get(index).is_some_and(|byte| *byte != 0)
}

fn bytes(flags: &[bool], length: usize) -> Vec<u8> {
    flags
        .iter()
        .take(length)
        .map(|flag| u8::from(*flag))
        .collect()
}

impl FindNegotiation {
    /// Reads the service-class-application-information field.
    pub fn parse(information: &[u8]) -> Self {
        Self {
            relational_queries: flag(information, 0),
            combined_datetime_matching: flag(information, 1),
            fuzzy_person_name_matching: flag(information, 2),
            timezone_query_adjustment: flag(information, 3),
            enhanced_multiframe_conversion: flag(information, 4),
            empty_value_matching: flag(information, 5),
            multiple_value_matching: flag(information, 6),
        }
    }

    /// The field, `length` bytes long (an A-ASSOCIATE-AC answers with no
    /// more bytes than the RQ held; an RQ writes all seven).
    pub fn encode(&self, length: usize) -> Vec<u8> {
        bytes(
            &[
                self.relational_queries,
                self.combined_datetime_matching,
                self.fuzzy_person_name_matching,
                self.timezone_query_adjustment,
                self.enhanced_multiframe_conversion,
                self.empty_value_matching,
                self.multiple_value_matching,
            ],
            length,
        )
    }

    /// What an SCP grants: each option both asked for and supported.
    pub fn granted(&self, supported: &Self) -> Self {
        Self {
            relational_queries: self.relational_queries && supported.relational_queries,
            combined_datetime_matching: self.combined_datetime_matching
                && supported.combined_datetime_matching,
            fuzzy_person_name_matching: self.fuzzy_person_name_matching
                && supported.fuzzy_person_name_matching,
            timezone_query_adjustment: self.timezone_query_adjustment
                && supported.timezone_query_adjustment,
            enhanced_multiframe_conversion: self.enhanced_multiframe_conversion
                && supported.enhanced_multiframe_conversion,
            empty_value_matching: self.empty_value_matching && supported.empty_value_matching,
            multiple_value_matching: self.multiple_value_matching
                && supported.multiple_value_matching,
        }
    }
}

impl RetrieveNegotiation {
    /// Reads the service-class-application-information field.
    pub fn parse(information: &[u8]) -> Self {
        Self {
            relational_retrieval: flag(information, 0),
            enhanced_multiframe_conversion: flag(information, 1),
        }
    }

    /// The field, `length` bytes long.
    pub fn encode(&self, length: usize) -> Vec<u8> {
        bytes(
            &[
                self.relational_retrieval,
                self.enhanced_multiframe_conversion,
            ],
            length,
        )
    }

    /// What an SCP grants: each option both asked for and supported.
    pub fn granted(&self, supported: &Self) -> Self {
        Self {
            relational_retrieval: self.relational_retrieval && supported.relational_retrieval,
            enhanced_multiframe_conversion: self.enhanced_multiframe_conversion
                && supported.enhanced_multiframe_conversion,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_fields_and_answers() {
        // pynetdicom's findscu --relational-query sends five bytes.
        let asked = FindNegotiation::parse(&[1, 0, 0, 0, 0]);
        assert!(asked.relational_queries && !asked.combined_datetime_matching);
        let supported = FindNegotiation {
            relational_queries: true,
            combined_datetime_matching: true,
            ..FindNegotiation::default()
        };
        assert_eq!(asked.granted(&supported).encode(5), [1, 0, 0, 0, 0]);
        assert_eq!(FindNegotiation::parse(&[]), FindNegotiation::default());
        assert_eq!(FindNegotiation::parse(&[2]).encode(1), [1]);
        let all = FindNegotiation::parse(&[1; 9]);
        assert_eq!(all.encode(7), [1; 7]);
        assert_eq!(all.encode(9), [1; 7]);
        let retrieve = RetrieveNegotiation::parse(&[1]);
        assert!(retrieve.relational_retrieval);
        assert_eq!(
            retrieve.granted(&RetrieveNegotiation::default()).encode(1),
            [0]
        );
    }
}
