//! The generated configuration reference (`docs/configuration.md`) and
//! example file (`docs/sluice.example.toml`), both from the option
//! declarations, so they cannot drift from the code: a test regenerates them
//! and fails if the committed files differ.

use std::fmt::Write as _;

use super::kinds::join_doc_lines;
use super::options::{option_infos, SECTIONS};
use super::OptionInfo;

/// The command that rewrites the generated files, quoted in both.
pub const REGENERATE_COMMAND: &str =
    "SLUICE_REGENERATE_DOCS=1 cargo test -p sluice-engine --test it config";

/// Wraps a paragraph at `width` columns, each line starting with `prefix`.
fn wrap(paragraph: &str, width: usize, prefix: &str) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for word in paragraph.split_whitespace() {
        if !line.is_empty() && prefix.len() + line.len() + 1 + word.len() > width {
            out.push_str(prefix);
            out.push_str(&line);
            out.push('\n');
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        out.push_str(prefix);
        out.push_str(&line);
        out.push('\n');
    }
    out
}

fn default_cell(info: &OptionInfo) -> String {
    match &info.default_toml {
        Some(toml) => format!("`{toml}`"),
        None => "unset".to_owned(),
    }
}

/// The Markdown reference of every option: what `docs/configuration.md`
/// holds.
pub fn markdown_reference() -> String {
    let infos = option_infos();
    let mut out = String::new();
    // Writing to a String cannot fail; `let _ =` keeps clippy quiet about it.
    let _ = write!(
        out,
        "# Configuration reference

<!-- Generated from engine/src/config/options.rs; do not edit by hand.
     Regenerate with: {REGENERATE_COMMAND} -->

Sluice takes its configuration from three places, each overriding the one
before:

1. the built-in defaults: `sluice serve` with no arguments stores into
   `./sluice-data` as AE `SLUICE` on port 11112 of every interface, accepting
   the storage SOP classes and transfer syntaxes of the reference PACS,
   Verification and Storage Commitment;
2. a TOML file named with `--config FILE`;
3. command-line flags.

A flag replaces the file's value of its option as a whole, lists and tables
included. A key in the file that names no option is an error, so a misspelt
option never goes unnoticed. Every error names the file, the line and the
option, or the flag:

```text
sluice.toml:12: option `network.max_pdu_length`: 1000 is below the minimum 4096
command line: flag `--port`: \"http\" is not a whole number
```

Conventions:

- **Durations** are integers in the unit their name ends with: `_ms`
  milliseconds, `_us` microseconds, `_s` seconds (`artim_timeout_ms = 30000`).
- **Sizes** are integers (bytes) or strings with a unit: `B`, `KiB`, `MiB`,
  `GiB`, `TiB` (powers of 1024) or `KB`, `MB`, `GB`, `TB` (powers of 1000), as
  in `free_space_floor = \"2GiB\"`.
- **AE titles** are 1 to 16 characters of printable ASCII without backslash;
  leading and trailing spaces are not significant.
- **UIDs** are digits and dots, at most 64 characters.

Every option at its default, with examples for the optional ones:
[`sluice.example.toml`](sluice.example.toml).

## Summary

| option | flag | default |
| --- | --- | --- |
"
    );
    for info in &infos {
        let anchor = info.key.replace('.', "");
        let _ = writeln!(
            out,
            "| [`{}`](#{anchor}) | `--{}` | {} |",
            info.key,
            info.flag,
            default_cell(info)
        );
    }
    for section in SECTIONS {
        let _ = write!(
            out,
            "\n## {} (`[{}]`)\n\n{}",
            section.title,
            section.name,
            wrap(&join_doc_lines(section.doc), 80, "")
        );
        for info in infos.iter().filter(|info| info.section == section.name) {
            let _ = write!(
                out,
                "\n### `{}`\n\n{}\n",
                info.key,
                wrap(&join_doc_lines(info.doc), 80, "").trim_end()
            );
            out.push('\n');
            let _ = writeln!(out, "- Type: {}", info.type_doc);
            let _ = writeln!(out, "- Default: {}", default_cell(info));
            let repeat = info
                .repeat_unit
                .map(|unit| format!(" (once per {unit})"))
                .unwrap_or_default();
            let _ = writeln!(out, "- Flag: `--{} {}`{repeat}", info.flag, info.value_name);
            if let Some(example) = info.example_toml {
                let _ = writeln!(out, "- Example: `{} = {example}`", info.name);
            }
            if !info.choices.is_empty() {
                let _ = writeln!(out, "- Choices:");
                for (name, doc) in &info.choices {
                    let _ = writeln!(out, "  - `\"{name}\"`: {doc}");
                }
            }
        }
    }
    out
}

/// An example configuration file: every option at its default (unset ones
/// commented out with an example), documented. What
/// `docs/sluice.example.toml` holds.
pub fn example_toml() -> String {
    let infos = option_infos();
    let mut out = format!(
        "# Sluice configuration: every option at its built-in default.
#
# Use it with `sluice serve --config sluice.toml`; flags override the file.
# Reference: docs/configuration.md. Generated from engine/src/config/options.rs;
# regenerate with: {REGENERATE_COMMAND}
#
# Durations are integers in the unit their name ends with (_ms, _us, _s).
# Sizes are bytes, or strings with a unit: \"64KiB\", \"2GiB\", \"500MB\".
"
    );
    for section in SECTIONS {
        let _ = write!(
            out,
            "\n{}[{}]\n",
            wrap(&join_doc_lines(section.doc), 78, "# "),
            section.name
        );
        for info in infos.iter().filter(|info| info.section == section.name) {
            out.push('\n');
            out.push_str(&wrap(&join_doc_lines(info.doc), 78, "# "));
            for (name, doc) in &info.choices {
                // A hanging indent sets each choice apart.
                let choice = wrap(&format!("\"{name}\": {doc}"), 78, "#     ");
                out.push_str(&choice.replacen("#     ", "#   ", 1));
            }
            if let Some(default) = &info.default_toml {
                let _ = writeln!(out, "{} = {default}", info.name);
            }
            if let Some(example) = info.example_toml {
                let _ = writeln!(out, "# {} = {example}", info.name);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapping_keeps_every_word_and_the_width() {
        let paragraph = "one two three four five six seven eight nine ten eleven";
        let wrapped = wrap(paragraph, 20, "# ");
        assert!(wrapped.lines().all(|line| line.len() <= 20), "{wrapped}");
        let words: Vec<&str> = wrapped
            .lines()
            .flat_map(|line| line.trim_start_matches("# ").split(' '))
            .collect();
        assert_eq!(words.join(" "), paragraph);
    }

    #[test]
    fn reference_lists_every_option_once() {
        let reference = markdown_reference();
        for info in option_infos() {
            let heading = format!("\n### `{}`\n", info.key);
            assert_eq!(reference.matches(&heading).count(), 1, "{}", info.key);
        }
    }
}
