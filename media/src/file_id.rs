//! File IDs (PS3.10 §8.2, §8.5): 1 to 8 components, each 1 to 8 characters
//! of `A`-`Z`, `0`-`9` and `_`, written in Referenced File ID (0004,1500) as
//! a multi-valued CS (components separated by `\`). A File ID is relative to
//! the File-set's root directory.
//!
//! Sluice generates them from counters, never from UIDs or names:
//! `DICOM\PA000001\ST000001\SE000001\IM000001` is the first instance of the
//! first series of the first study of the first patient of the File-set.
//! Read File IDs are checked before they become paths: a component such as
//! `..` cannot pass, whatever the file-set says.

use std::fmt;

/// Most components in a File ID.
pub const FILE_ID_COMPONENTS_MAX: usize = 8;
/// Most characters in a component.
pub const FILE_ID_COMPONENT_LENGTH_MAX: usize = 8;
/// Largest ordinal a generated component holds (six decimal digits).
pub const GENERATED_ORDINAL_MAX: u32 = 999_999;

/// A valid File ID.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FileId {
    /// The components, each valid.
    components: Vec<String>,
}

/// Why a Referenced File ID value is not a valid File ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FileIdError {
    /// No component at all.
    #[error("empty File ID")]
    Empty,
    /// More than eight components.
    #[error("{0} components (at most {FILE_ID_COMPONENTS_MAX})")]
    TooManyComponents(usize),
    /// A component empty or longer than eight characters.
    #[error("component {index} has {length} characters (1 to {FILE_ID_COMPONENT_LENGTH_MAX})")]
    ComponentLength {
        /// Zero-based component index.
        index: usize,
        /// Its length.
        length: usize,
    },
    /// A component with a character outside `A`-`Z`, `0`-`9`, `_` (a `.` of
    /// `..`, a `/`, a NUL, a non-ASCII byte...).
    #[error("component {index} holds the illegal character {character:?}")]
    IllegalCharacter {
        /// Zero-based component index.
        index: usize,
        /// The first illegal character.
        character: char,
    },
}

impl FileId {
    /// Parses a Referenced File ID value (padding removed). Lowercase
    /// letters are accepted and reported by [`Self::has_lowercase`]: some
    /// writers use them, and they cannot escape the File-set's root.
    pub fn parse(value: &str) -> Result<Self, FileIdError> {
        let value = value.trim_end_matches([' ', '\0']).trim_start_matches(' ');
        if value.is_empty() {
            return Err(FileIdError::Empty);
        }
        let components: Vec<&str> = value.split('\\').collect();
        if components.len() > FILE_ID_COMPONENTS_MAX {
            return Err(FileIdError::TooManyComponents(components.len()));
        }
        for (index, component) in components.iter().enumerate() {
            let length = component.chars().count();
            if length == 0 || length > FILE_ID_COMPONENT_LENGTH_MAX {
                return Err(FileIdError::ComponentLength { index, length });
            }
            if let Some(character) = component
                .chars()
                .find(|character| !(character.is_ascii_alphanumeric() || *character == '_'))
            {
                return Err(FileIdError::IllegalCharacter { index, character });
            }
        }
        Ok(Self {
            components: components.into_iter().map(str::to_owned).collect(),
        })
    }

    /// The generated File ID of an instance, from its 1-based ordinals
    /// (patient in the File-set, study in its patient, series in its study,
    /// instance in its series); `None` when an ordinal is out of range.
    pub fn generated(patient: u32, study: u32, series: u32, instance: u32) -> Option<Self> {
        let ordinals = [patient, study, series, instance];
        if ordinals
            .iter()
            .any(|ordinal| *ordinal == 0 || *ordinal > GENERATED_ORDINAL_MAX)
        {
            return None;
        }
        let components = vec![
            "DICOM".to_owned(),
            format!("PA{patient:06}"),
            format!("ST{study:06}"),
            format!("SE{series:06}"),
            format!("IM{instance:06}"),
        ];
        debug_assert!(components
            .iter()
            .all(|component| component.len() <= FILE_ID_COMPONENT_LENGTH_MAX));
        Some(Self { components })
    }

    /// The components, root first: join them with the platform's separator
    /// under the File-set's root to get the file's path.
    pub fn components(&self) -> &[String] {
        &self.components
    }

    /// Whether a component holds a lowercase letter (accepted on read,
    /// never written).
    pub fn has_lowercase(&self) -> bool {
        self.components
            .iter()
            .any(|component| component.bytes().any(|byte| byte.is_ascii_lowercase()))
    }

    /// The Referenced File ID value (components separated by `\`).
    pub fn to_value(&self) -> String {
        self.components.join("\\")
    }
}

impl fmt::Display for FileId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.to_value())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_valid_and_distinct() {
        let id = FileId::generated(1, 2, 3, 999_999).unwrap();
        assert_eq!(
            id.to_value(),
            "DICOM\\PA000001\\ST000002\\SE000003\\IM999999"
        );
        assert_eq!(FileId::parse(&id.to_value()).unwrap(), id);
        assert!(FileId::generated(1, 1, 1, 1_000_000).is_none());
        assert!(FileId::generated(0, 1, 1, 1).is_none());
        assert_ne!(
            FileId::generated(1, 1, 1, 10),
            FileId::generated(1, 1, 11, 0)
        );
    }

    #[test]
    fn bad_ids_are_refused() {
        assert_eq!(FileId::parse(""), Err(FileIdError::Empty));
        assert_eq!(FileId::parse("  "), Err(FileIdError::Empty));
        assert!(matches!(
            FileId::parse("DICOM\\..\\ETC"),
            Err(FileIdError::IllegalCharacter {
                index: 1,
                character: '.'
            })
        ));
        assert!(matches!(
            FileId::parse("A/B"),
            Err(FileIdError::IllegalCharacter { character: '/', .. })
        ));
        assert!(matches!(
            FileId::parse("A\\\\B"),
            Err(FileIdError::ComponentLength {
                index: 1,
                length: 0
            })
        ));
        assert!(matches!(
            FileId::parse("ABCDEFGHI"),
            Err(FileIdError::ComponentLength { length: 9, .. })
        ));
        assert!(matches!(
            FileId::parse("A\\B\\C\\D\\E\\F\\G\\H\\I"),
            Err(FileIdError::TooManyComponents(9))
        ));
        assert!(matches!(
            FileId::parse("IMAGES\\IMG\u{e9}"),
            Err(FileIdError::IllegalCharacter { .. })
        ));
        let lower = FileId::parse("dicom\\im1 ").unwrap();
        assert!(lower.has_lowercase());
        assert_eq!(lower.components(), ["dicom", "im1"]);
    }
}
