//! Reading the local backends' CSV-like tables: a header line naming the columns, `#` comment lines,
//! blank lines, and rows whose bad fields are reported as `file:line: field name: "value" is not ...`.

use std::io::Read;
use std::path::{Path, PathBuf};

use csv::{ReaderBuilder, StringRecord, Trim};

/// Why a table could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// The file could not be opened or read.
    #[error("{}: cannot read: {source}", file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A reload that would change what live calls depend on.
    #[error("{0}")]
    Reload(String),
    /// A line of the file is wrong.
    #[error("{}:{line}: {problem}", file.display())]
    Line {
        /// The file.
        file: PathBuf,
        /// The 1-based line.
        line: u64,
        /// What is wrong.
        problem: LineProblem,
    },
    /// The ledger would not open (it names its file and what is wrong).
    #[error("ledger: {0}")]
    Ledger(#[source] rtc_ledger::OpenError),
    /// The ledger refused to open an account or import an opening balance.
    #[error("ledger {ledger}: {problem}")]
    LedgerRequest {
        /// The ledger's file.
        ledger: String,
        /// What it said.
        problem: String,
    },
}

impl LocalError {
    /// The problem of a line error, for tests and callers that react to the kind.
    pub fn problem(&self) -> Option<&LineProblem> {
        match self {
            LocalError::Line { problem, .. } => Some(problem),
            LocalError::Read { .. }
            | LocalError::Reload(_)
            | LocalError::Ledger(_)
            | LocalError::LedgerRequest { .. } => None,
        }
    }
}

/// What is wrong with one line of a table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineProblem {
    /// A field that does not read as what it should be.
    #[error("field {field}: {value:?} is not {expected}")]
    BadField {
        /// The column.
        field: &'static str,
        /// What the file says.
        value: String,
        /// What it should be.
        expected: &'static str,
    },
    /// A field that must not be empty.
    #[error("field {field} is empty; it needs {expected}")]
    EmptyField {
        /// The column.
        field: &'static str,
        /// What it should hold.
        expected: &'static str,
    },
    /// A row with more or fewer fields than the header.
    #[error(
        "expected {expected} fields ({columns}), found {found}; quote a field that contains a comma"
    )]
    FieldCount {
        /// Fields the header names.
        expected: usize,
        /// Fields the row has.
        found: usize,
        /// The header's columns.
        columns: String,
    },
    /// No header line.
    #[error("the file has no header line; it must start with: {columns}")]
    NoHeader {
        /// The columns a header must name.
        columns: String,
    },
    /// A required column the header does not name.
    #[error("header: missing column {column:?}; the columns are: {columns}")]
    MissingColumn {
        /// The column.
        column: &'static str,
        /// The table's columns.
        columns: String,
    },
    /// A column the table does not have.
    #[error("header: unknown column {column:?}; the columns are: {columns}")]
    UnknownColumn {
        /// The column.
        column: String,
        /// The table's columns.
        columns: String,
    },
    /// A column named twice.
    #[error("header: column {column:?} appears twice")]
    DuplicateColumn {
        /// The column.
        column: String,
    },
    /// Bytes that are not UTF-8.
    #[error("not valid UTF-8")]
    NotUtf8,
    /// A partner name the partners table does not have.
    #[error("field partner: {name:?} is not a partner of {}", partners.display())]
    UnknownPartner {
        /// The name.
        name: String,
        /// The partners table.
        partners: PathBuf,
    },
    /// A key defined twice.
    #[error("{what} is already defined at line {first_line}")]
    Duplicate {
        /// What is defined twice.
        what: String,
        /// Where it was first.
        first_line: u64,
    },
    /// An address block two partners claim.
    #[error(
        "field cidrs: {cidr} is also claimed by partner {other:?} (line {other_line}); an address must belong to one partner"
    )]
    CidrConflict {
        /// The block.
        cidr: String,
        /// The other partner.
        other: String,
        /// Its line.
        other_line: u64,
    },
    /// Anything else, said in words.
    #[error("{0}")]
    Other(String),
}

/// One column of a table.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Column {
    /// Header name.
    pub name: &'static str,
    /// Whether the header must name it; optional columns may be left out and read as empty.
    pub required: bool,
}

pub(crate) const fn required(name: &'static str) -> Column {
    Column {
        name,
        required: true,
    }
}

pub(crate) const fn optional(name: &'static str) -> Column {
    Column {
        name,
        required: false,
    }
}

/// One data row, with what is needed to report its errors.
pub(crate) struct Row<'t> {
    /// Table file, for messages.
    file: &'t Path,
    /// 1-based line the row starts on.
    pub line: u64,
    /// The row's trimmed fields, in file order.
    record: &'t StringRecord,
    /// For each declared column, its index in the record, if the header has it.
    index: &'t [Option<usize>],
    /// The declared columns, same order as `index`.
    columns: &'t [Column],
}

impl<'t> Row<'t> {
    /// A field's text ("" for an optional column the file leaves out).
    pub fn get(&self, field: &'static str) -> &'t str {
        self.columns
            .iter()
            .position(|c| c.name == field)
            .and_then(|i| self.index[i])
            .and_then(|i| self.record.get(i))
            .unwrap_or("")
    }

    /// A field that must not be empty.
    pub fn non_empty(
        &self,
        field: &'static str,
        expected: &'static str,
    ) -> Result<&'t str, LocalError> {
        let value = self.get(field);
        if value.is_empty() {
            Err(self.error(LineProblem::EmptyField { field, expected }))
        } else {
            Ok(value)
        }
    }

    /// Parses a field with `parse`; `expected` says what it should have been.
    pub fn parse<T>(
        &self,
        field: &'static str,
        expected: &'static str,
        parse: impl FnOnce(&'t str) -> Option<T>,
    ) -> Result<T, LocalError> {
        let value = self.non_empty(field, expected)?;
        parse(value).ok_or_else(|| self.bad(field, value, expected))
    }

    pub fn bad(&self, field: &'static str, value: &str, expected: &'static str) -> LocalError {
        self.error(LineProblem::BadField {
            field,
            value: value.to_owned(),
            expected,
        })
    }

    pub fn error(&self, problem: LineProblem) -> LocalError {
        LocalError::Line {
            file: self.file.to_owned(),
            line: self.line,
            problem,
        }
    }
}

fn column_list(columns: &[Column]) -> String {
    columns.iter().map(|c| c.name).collect::<Vec<_>>().join(",")
}

/// Opens a table file, with the error naming it.
pub(crate) fn open(path: &Path) -> Result<std::fs::File, LocalError> {
    std::fs::File::open(path).map_err(|source| LocalError::Read {
        file: path.to_owned(),
        source,
    })
}

/// Reads a table from `data`; `file` names it in messages.
pub(crate) fn read(
    file: &Path,
    data: impl Read,
    columns: &[Column],
    mut each: impl FnMut(&Row) -> Result<(), LocalError>,
) -> Result<(), LocalError> {
    let mut data = data;
    let mut text = Vec::new();
    data.read_to_end(&mut text)
        .map_err(|source| LocalError::Read {
            file: file.to_owned(),
            source,
        })?;
    // Comments are blanked here rather than by the csv reader, whose line count skips comment lines;
    // blanking keeps every byte offset, and lines are computed from offsets.
    let line_starts = blank_comments(&mut text);
    // The reader may report a record's start before the blank lines it skipped: step over them.
    let line_of = |byte: u64| -> u64 {
        let skipped = text
            .get(byte as usize..)
            .unwrap_or_default()
            .iter()
            .take_while(|b| b.is_ascii_whitespace())
            .count();
        let byte = byte + skipped as u64;
        line_starts.partition_point(|&start| start <= byte) as u64
    };
    let mut reader = ReaderBuilder::new()
        .has_headers(false)
        .trim(Trim::All)
        .flexible(true)
        .from_reader(text.as_slice());
    let line_error = |line: u64, problem: LineProblem| LocalError::Line {
        file: file.to_owned(),
        line,
        problem,
    };
    let convert = |e: csv::Error| -> LocalError {
        let line = e.position().map_or(0, |p| line_of(p.byte()));
        match e.into_kind() {
            csv::ErrorKind::Io(source) => LocalError::Read {
                file: file.to_owned(),
                source,
            },
            csv::ErrorKind::Utf8 { .. } => line_error(line, LineProblem::NotUtf8),
            other => line_error(line, LineProblem::Other(format!("{other:?}"))),
        }
    };
    let mut record = StringRecord::new();
    let mut index: Option<Vec<Option<usize>>> = None;
    let mut width = 0;
    let mut header_names = String::new();
    while reader.read_record(&mut record).map_err(convert)? {
        let line = record.position().map_or(0, |p| line_of(p.byte()));
        // Whitespace-only lines trim to one empty field: treat them as blank.
        if record.iter().all(str::is_empty) {
            continue;
        }
        let Some(index) = &index else {
            index = Some(header(&record, columns).map_err(|p| line_error(line, p))?);
            width = record.len();
            header_names = record.iter().collect::<Vec<_>>().join(",");
            continue;
        };
        if record.len() != width {
            return Err(line_error(
                line,
                LineProblem::FieldCount {
                    expected: width,
                    found: record.len(),
                    columns: header_names.clone(),
                },
            ));
        }
        let row = Row {
            file,
            line,
            record: &record,
            index,
            columns,
        };
        each(&row)?;
    }
    if index.is_none() {
        return Err(line_error(
            1,
            LineProblem::NoHeader {
                columns: column_list(columns),
            },
        ));
    }
    Ok(())
}

/// Overwrites `#` comment lines (first non-blank byte `#`) with spaces; returns each line's start offset.
fn blank_comments(text: &mut [u8]) -> Vec<u64> {
    let mut starts = Vec::new();
    let mut start = 0;
    while start < text.len() {
        starts.push(start as u64);
        let end = text[start..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(text.len(), |i| start + i);
        let line = &mut text[start..end];
        if line
            .iter()
            .find(|b| !b.is_ascii_whitespace())
            .is_some_and(|&b| b == b'#')
        {
            line.fill(b' ');
        }
        start = end + 1;
    }
    starts
}

/// Maps declared columns to header positions; every header name must be known, every required column present.
fn header(record: &StringRecord, columns: &[Column]) -> Result<Vec<Option<usize>>, LineProblem> {
    let mut index = vec![None; columns.len()];
    for (position, name) in record.iter().enumerate() {
        let Some(column) = columns.iter().position(|c| c.name == name) else {
            return Err(LineProblem::UnknownColumn {
                column: name.to_owned(),
                columns: column_list(columns),
            });
        };
        if index[column].is_some() {
            return Err(LineProblem::DuplicateColumn {
                column: name.to_owned(),
            });
        }
        index[column] = Some(position);
    }
    for (column, position) in columns.iter().zip(&index) {
        if column.required && position.is_none() {
            return Err(LineProblem::MissingColumn {
                column: column.name,
                columns: column_list(columns),
            });
        }
    }
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    const COLUMNS: &[Column] = &[required("a"), required("b"), optional("c")];

    fn rows(text: &str) -> Result<Vec<(u64, String, String, String)>, String> {
        let mut out = Vec::new();
        read(Path::new("t.csv"), text.as_bytes(), COLUMNS, |row| {
            out.push((
                row.line,
                row.get("a").to_owned(),
                row.get("b").to_owned(),
                row.get("c").to_owned(),
            ));
            Ok(())
        })
        .map_err(|e| e.to_string())?;
        Ok(out)
    }

    #[test]
    fn comments_blank_lines_and_line_numbers() {
        let got =
            rows("# intro\n\na, b\n  # note, with \"a quote\n1 , 2\n   \n\"x,y\",3\n").unwrap();
        assert_eq!(
            got,
            vec![
                (5, "1".into(), "2".into(), "".into()),
                (7, "x,y".into(), "3".into(), "".into())
            ]
        );
        let got = rows("c,b,a\n3,2,1\n").unwrap();
        assert_eq!(got, vec![(2, "1".into(), "2".into(), "3".into())]);
    }

    #[test]
    fn header_and_width_errors() {
        assert_eq!(
            rows("# only a comment\n").unwrap_err(),
            "t.csv:1: the file has no header line; it must start with: a,b,c"
        );
        assert_eq!(
            rows("a,c\n").unwrap_err(),
            "t.csv:1: header: missing column \"b\"; the columns are: a,b,c"
        );
        assert_eq!(
            rows("#\na,b,d\n").unwrap_err(),
            "t.csv:2: header: unknown column \"d\"; the columns are: a,b,c"
        );
        assert_eq!(
            rows("a,b,a\n").unwrap_err(),
            "t.csv:1: header: column \"a\" appears twice"
        );
        assert_eq!(
            rows("a,b\n1,2\n1,2,3\n").unwrap_err(),
            "t.csv:3: expected 2 fields (a,b), found 3; quote a field that contains a comma"
        );
    }

    #[test]
    fn invalid_utf8_is_a_line_error() {
        let mut out = 0;
        let err = read(
            Path::new("t.csv"),
            &b"a,b\n1,2\n\xff,2\n"[..],
            COLUMNS,
            |row| {
                let _ = row.get("a");
                out += 1;
                Ok(())
            },
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "t.csv:3: not valid UTF-8");
    }
}
