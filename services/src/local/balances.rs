//! Opening balances (`balances.csv`, columns `partner,balance`): what the ledger imports for a partner whose
//! account has never moved money — on the ledger's first start, for partners added later, and by
//! `rtc-core ledger import`. Never over live balances: once an account has moved money, its row here is only
//! reported as skipped. Money then lives in the ledger (`rtc_ledger`), not in this file.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use compact_str::CompactString;

use super::partners::Partners;
use super::table::{self, Column, LineProblem, LocalError, required};
use rtc_engine::domain::{Money, PartnerId};

const COLUMNS: &[Column] = &[required("partner"), required("balance")];

/// One partner's opening balance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Opening {
    /// The partner's id in the partners table.
    pub partner: PartnerId,
    /// Its name (the ledger account's name).
    pub name: CompactString,
    /// The opening balance (may be negative).
    pub balance: Money,
    /// Line of the file, for the journal's reference (`balances.csv:12`).
    pub line: u64,
}

/// The rows of `balances.csv`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpeningBalances {
    /// One row per partner that has one, in file order.
    pub rows: Vec<Opening>,
    /// The file read.
    pub file: PathBuf,
}

impl OpeningBalances {
    /// Loads `balances.csv`; partner names must be in `partners`, each at most once.
    pub fn load(path: &Path, partners: &Partners) -> Result<OpeningBalances, LocalError> {
        OpeningBalances::from_reader(path, table::open(path)?, partners)
    }

    /// Reads the table from `data`; `file` names it in messages.
    pub fn from_reader(
        file: &Path,
        data: impl Read,
        partners: &Partners,
    ) -> Result<OpeningBalances, LocalError> {
        let mut rows = Vec::new();
        let mut lines: HashMap<PartnerId, u64> = HashMap::new();
        table::read(file, data, COLUMNS, |row| {
            let partner = partners.resolve(row)?;
            let balance = row.parse(
                "balance",
                "a decimal amount with at most 6 decimals, such as 250.00",
                Money::parse,
            )?;
            if let Some(&first_line) = lines.get(&partner) {
                return Err(row.error(LineProblem::Duplicate {
                    what: format!("the balance of partner {:?}", row.get("partner")),
                    first_line,
                }));
            }
            lines.insert(partner, row.line);
            rows.push(Opening {
                partner,
                name: CompactString::from(row.get("partner")),
                balance,
                line: row.line,
            });
            Ok(())
        })?;
        Ok(OpeningBalances {
            rows,
            file: file.to_owned(),
        })
    }

    /// The journal reference of a row: `<file name>:<line>`.
    pub fn reference(&self, row: &Opening) -> String {
        let name = self.file.file_name().map_or_else(
            || self.file.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        format!("{name}:{}", row.line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partners() -> Partners {
        Partners::from_reader(
            Path::new("partners.csv"),
            "name,cidrs,max_concurrent,max_cps\nacme,192.0.2.0/24,0,0\nglobex,198.51.100.0/24,0,0\n".as_bytes(),
        )
        .unwrap()
    }

    fn load(body: &str) -> Result<OpeningBalances, String> {
        let text = format!("partner,balance\n{body}");
        OpeningBalances::from_reader(Path::new("conf/balances.csv"), text.as_bytes(), &partners())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn rows_keep_their_line_for_the_journal() {
        let b = load("globex,-2.5\nacme,10.00\n").unwrap();
        assert_eq!(b.rows.len(), 2);
        assert_eq!(
            (b.rows[0].name.as_str(), b.rows[0].balance),
            ("globex", Money(-2_500_000))
        );
        assert_eq!(b.reference(&b.rows[1]), "balances.csv:3");
    }

    #[test]
    fn bad_lines_name_file_line_and_field() {
        assert_eq!(
            load("acme,lots\n").unwrap_err(),
            "conf/balances.csv:2: field balance: \"lots\" is not a decimal amount with at most 6 decimals, such as 250.00"
        );
        assert_eq!(
            load("acme,1\nacme,2\n").unwrap_err(),
            "conf/balances.csv:3: the balance of partner \"acme\" is already defined at line 2"
        );
        assert_eq!(
            load("*,1\n").unwrap_err(),
            "conf/balances.csv:2: field partner: \"*\" is not a partner of partners.csv"
        );
    }
}
