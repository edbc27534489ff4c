//! Output helpers of the operator commands: aligned text tables, times in
//! RFC 3339 UTC, checksums in hex, byte counts.

use std::fmt::Write as _;
use std::io::Write;
use std::time::{Duration, UNIX_EPOCH};

use crate::escape::Escaped;

/// A text table: a header row and rows, columns padded to their widest cell,
/// separated by two spaces. Cells are shown escaped ([`Escaped`]: the values
/// are a sender's) and never truncated (UIDs must stay copyable).
#[derive(Debug)]
pub(crate) struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn new(header: &[&str]) -> Self {
        Table {
            rows: vec![header.iter().map(|cell| (*cell).to_owned()).collect()],
        }
    }

    pub(crate) fn push(&mut self, row: Vec<String>) {
        self.rows.push(
            row.into_iter()
                .map(|cell| Escaped(cell).to_string())
                .collect(),
        );
    }

    /// Rows below the header.
    pub(crate) fn len(&self) -> usize {
        self.rows.len().saturating_sub(1)
    }

    pub(crate) fn write(&self, output: &mut dyn Write) -> std::io::Result<()> {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut widths = vec![0usize; columns];
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut line = String::new();
        for row in &self.rows {
            line.clear();
            for (column, cell) in row.iter().enumerate() {
                if column > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                if column + 1 < row.len() {
                    let width = widths.get(column).copied().unwrap_or(0);
                    for _ in cell.chars().count()..width {
                        line.push(' ');
                    }
                }
            }
            writeln!(output, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

/// Nanoseconds since the Unix epoch as RFC 3339 UTC with microseconds:
/// `2026-11-27T18:20:28.123456Z`.
pub(crate) fn rfc3339_utc(unix_ns: u64) -> String {
    let time = UNIX_EPOCH + Duration::from_nanos(unix_ns);
    humantime::format_rfc3339_micros(time).to_string()
}

/// Bytes as lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(text, "{byte:02x}");
    }
    text
}

/// A byte count with a binary-unit approximation: `1536 (1.5 KiB)`.
pub(crate) fn bytes(count: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if count < 1024 {
        return count.to_string();
    }
    let mut value = count as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{count} ({value:.1} {})", UNITS[unit])
}

/// An empty value shown as `-`, so table columns stay readable.
pub(crate) fn or_dash(value: &str) -> String {
    if value.is_empty() {
        "-".to_owned()
    } else {
        value.to_owned()
    }
}

/// An optional number, `-` when absent.
pub(crate) fn number_or_dash(value: Option<i32>) -> String {
    value.map_or_else(|| "-".to_owned(), |value| value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            rfc3339_utc(1_700_000_000_123_456_789),
            "2023-11-14T22:13:20.123456Z"
        );
    }

    #[test]
    fn tables_align_columns() {
        let mut table = Table::new(&["A", "LONGER"]);
        table.push(vec!["wide cell".into(), "x".into()]);
        let mut output = Vec::new();
        table.write(&mut output).unwrap();
        assert_eq!(
            String::from_utf8(output).unwrap(),
            "A          LONGER\nwide cell  x\n"
        );
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn table_cells_are_escaped() {
        let mut table = Table::new(&["NAME"]);
        table.push(vec!["Doe^\u{1b}[31mJohn\nnext".into()]);
        let mut output = Vec::new();
        table.write(&mut output).unwrap();
        assert_eq!(
            String::from_utf8(output).unwrap(),
            "NAME\nDoe^\\x1b[31mJohn\\nnext\n"
        );
    }

    #[test]
    fn byte_counts() {
        assert_eq!(bytes(10), "10");
        assert_eq!(bytes(1536), "1536 (1.5 KiB)");
        assert_eq!(bytes(3 << 30), "3221225472 (3.0 GiB)");
        assert_eq!(hex(&[0, 0xab]), "00ab");
    }
}
