//! Reading the TOML configuration file into a [`Layer`], with the file and
//! line of every problem.
//!
//! The file is parsed with toml's spanned document parser (`DeTable`), which
//! keeps the byte span of every key and value; the walk below maps each
//! `[section] key` to its declared option, so unknown keys, wrong types and
//! out-of-range values all name their own line.

use std::io::Read;
use std::path::Path;

use toml::de::{DeTable, DeValue};

use super::error::{ConfigError, Origin};
use super::options::{option_infos, Layer, SECTIONS};

/// The largest configuration file Sluice reads: far more than every option
/// with a long remote AE table needs, and a guard against being pointed at
/// the wrong file.
pub(crate) const CONFIG_FILE_LENGTH_MAX: u64 = 1 << 20;

/// The 1-based line of a byte offset in `text`.
pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    let before = text.as_bytes().get(..offset).unwrap_or(text.as_bytes());
    before.iter().filter(|byte| **byte == b'\n').count() + 1
}

/// Reads a configuration file (at most [`CONFIG_FILE_LENGTH_MAX`] bytes).
pub(crate) fn read_file(path: &Path) -> Result<String, ConfigError> {
    let read_error = |source| ConfigError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut text = String::new();
    file.take(CONFIG_FILE_LENGTH_MAX + 1)
        .read_to_string(&mut text)
        .map_err(read_error)?;
    if text.len() as u64 > CONFIG_FILE_LENGTH_MAX {
        return Err(read_error(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "the file is larger than {CONFIG_FILE_LENGTH_MAX} bytes; is it the right file?"
            ),
        )));
    }
    Ok(text)
}

/// Parses `text` (the contents of `path`) into the settings it gives.
pub(crate) fn parse_layer(text: &str, path: &Path) -> Result<Layer, ConfigError> {
    let document = DeTable::parse(text).map_err(|error| ConfigError::Syntax {
        path: path.to_owned(),
        line: line_of(text, error.span().map_or(0, |span| span.start)),
        message: error.message().trim().to_owned(),
    })?;
    let mut layer = Layer::default();
    // The map is ordered by key; walk in file order so that the first
    // problem in the file is the one reported.
    let mut sections: Vec<_> = document.get_ref().iter().collect();
    sections.sort_by_key(|(key, _)| key.span().start);
    for (section_key, section_value) in sections {
        let section_name: &str = section_key.get_ref();
        let section_line = line_of(text, section_key.span().start);
        let Some(section) = SECTIONS.iter().find(|s| s.name == section_name) else {
            return Err(ConfigError::UnknownOption {
                path: path.to_owned(),
                line: section_line,
                option: section_name.to_owned(),
                hint: Some(top_level_hint(section_name)),
            });
        };
        let DeValue::Table(table) = section_value.get_ref() else {
            return Err(ConfigError::Invalid {
                origin: Origin::File {
                    path: path.to_owned(),
                    line: section_line,
                },
                option: section.name,
                message: format!(
                    "`{0}` is a section: write `[{0}]` on a line of its own, and its options below it",
                    section.name
                ),
            });
        };
        let mut entries: Vec<_> = table.iter().collect();
        entries.sort_by_key(|(key, _)| key.span().start);
        for (key, value) in entries {
            let key_name: &str = key.get_ref();
            let origin = Origin::File {
                path: path.to_owned(),
                line: line_of(text, key.span().start),
            };
            match layer.set_from_toml(section.name, key_name, value, origin) {
                Some(Ok(())) => {}
                Some(Err((option, error))) => {
                    return Err(ConfigError::Invalid {
                        origin: Origin::File {
                            path: path.to_owned(),
                            line: line_of(text, error.span.start),
                        },
                        option,
                        message: error.message,
                    })
                }
                None => {
                    return Err(ConfigError::UnknownOption {
                        path: path.to_owned(),
                        line: line_of(text, key.span().start),
                        option: format!("{}.{key_name}", section.name),
                        hint: option_hint(section.name, key_name),
                    })
                }
            }
        }
    }
    Ok(layer)
}

/// A hint for an unknown top-level key: an option written outside its
/// section, or a misspelt section.
fn top_level_hint(name: &str) -> String {
    if let Some(info) = option_infos().into_iter().find(|info| info.name == name) {
        return format!(
            "options live in sections: did you mean `{}` (`{}` under `[{}]`)?",
            info.key, info.name, info.section
        );
    }
    if let Some(section) = SECTIONS
        .iter()
        .filter(|section| edit_distance(section.name, name) <= 2)
        .min_by_key(|section| edit_distance(section.name, name))
    {
        return format!("did you mean the section `[{}]`?", section.name);
    }
    let sections: Vec<String> = SECTIONS
        .iter()
        .map(|section| format!("[{}]", section.name))
        .collect();
    format!("the sections are {}", sections.join(", "))
}

/// A hint for an unknown key in a known section: the option of that name in
/// another section, or the closest name in this one.
fn option_hint(section: &str, name: &str) -> Option<String> {
    let infos = option_infos();
    if let Some(info) = infos
        .iter()
        .find(|info| info.name == name && info.section != section)
    {
        return Some(format!(
            "`{}` belongs under `[{}]`: did you mean `{}`?",
            info.name, info.section, info.key
        ));
    }
    infos
        .iter()
        .filter(|info| info.section == section)
        .map(|info| (edit_distance(info.name, name), info))
        .filter(|(distance, info)| *distance <= 3.max(info.name.len() / 4))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, info)| format!("did you mean `{}`?", info.key))
}

/// Levenshtein distance, for "did you mean" hints on short names.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, a_char) in a.chars().enumerate() {
        let mut current = Vec::with_capacity(b.len() + 1);
        current.push(i + 1);
        for (j, b_char) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(a_char != *b_char);
            let insertion = current[j] + 1;
            let deletion = previous[j + 1] + 1;
            current.push(substitution.min(insertion).min(deletion));
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_one_based() {
        let text = "a\nb\nc";
        assert_eq!(line_of(text, 0), 1);
        assert_eq!(line_of(text, 2), 2);
        assert_eq!(line_of(text, 4), 3);
        assert_eq!(line_of(text, 99), 3);
    }

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("port", "port"), 0);
        assert_eq!(edit_distance("port", "prot"), 2);
        assert_eq!(edit_distance("netwrk", "network"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn hints() {
        assert_eq!(
            option_hint("network", "max_pdu_lenght").as_deref(),
            Some("did you mean `network.max_pdu_length`?")
        );
        assert_eq!(
            option_hint("server", "port").as_deref(),
            Some("`port` belongs under `[network]`: did you mean `network.port`?")
        );
        assert_eq!(option_hint("network", "completely_unrelated_thing"), None);
        assert_eq!(
            top_level_hint("netwrk"),
            "did you mean the section `[network]`?"
        );
        assert!(top_level_hint("zzz").starts_with("the sections are [server], [network]"));
    }
}
