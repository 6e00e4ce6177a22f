//! The rate deck of the local backend (`rates.csv`): price per destination prefix, per partner, with a
//! default deck (partner `*`) used when the partner's own deck has no matching prefix.
//!
//! Columns: `partner,prefix,per_minute,increment,minimum,connect_fee` (`connect_fee` optional: charged once when a
//! call is answered).

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use super::partners::Partners;
use super::prefix::{PrefixMap, destination_digits, is_digits};
use super::table::{self, Column, LineProblem, LocalError, optional, required};
use rtc_engine::domain::{Money, PartnerId, Rate};

const COLUMNS: &[Column] = &[
    required("partner"),
    required("prefix"),
    required("per_minute"),
    required("increment"),
    required("minimum"),
    optional("connect_fee"),
];

/// Prices per destination prefix: the partners' own decks and the default one.
#[derive(Clone, Debug, Default)]
pub struct RateDeck {
    /// Deck of partner `*`, used when a partner's own deck has no match.
    default: PrefixMap<Rate>,
    /// Partners' own decks, by partner id; `None` for partners without one.
    partners: Vec<Option<PrefixMap<Rate>>>,
}

impl RateDeck {
    /// Loads `rates.csv`; partner names must be in `partners`.
    pub fn load(path: &Path, partners: &Partners) -> Result<RateDeck, LocalError> {
        RateDeck::from_reader(path, table::open(path)?, partners)
    }

    /// Reads the table from `data`; `file` names it in messages.
    pub fn from_reader(
        file: &Path,
        data: impl Read,
        partners: &Partners,
    ) -> Result<RateDeck, LocalError> {
        let mut deck = RateDeck {
            default: PrefixMap::new(),
            partners: vec![None; partners.id_space()],
        };
        // (partner or None for `*`, prefix) → line, for duplicate messages.
        let mut lines: HashMap<(Option<PartnerId>, String), u64> = HashMap::new();
        table::read(file, data, COLUMNS, |row| {
            let partner = match row.get("partner") {
                "*" => None,
                _ => Some(partners.resolve(row)?),
            };
            let prefix = row.parse("prefix", "a destination prefix of digits", |p| {
                let p = destination_digits(p);
                (is_digits(p) && p.len() <= usize::from(u8::MAX)).then_some(p)
            })?;
            let per_minute = row.parse(
                "per_minute",
                "a decimal amount of at least 0 with at most 6 decimals, such as 0.0125",
                |t| Money::parse(t).filter(|m| *m >= Money::ZERO),
            )?;
            let increment = row.parse(
                "increment",
                "a billing increment in seconds from 1 to 65535",
                |t| t.parse::<u16>().ok().filter(|n| *n >= 1),
            )?;
            let minimum = row.parse(
                "minimum",
                "a minimum billed duration in seconds from 0 to 65535",
                |t| t.parse::<u16>().ok(),
            )?;
            let connect_fee = match row.get("connect_fee") {
                "" => Money::ZERO,
                text => Money::parse(text).filter(|m| *m >= Money::ZERO).ok_or_else(|| {
                    row.bad(
                        "connect_fee",
                        text,
                        "a decimal amount of at least 0 with at most 6 decimals, such as 0.05 (empty: none)",
                    )
                })?,
            };
            if let Some(&first_line) = lines.get(&(partner, prefix.to_owned())) {
                return Err(row.error(LineProblem::Duplicate {
                    what: format!("prefix {prefix} for partner {:?}", row.get("partner")),
                    first_line,
                }));
            }
            lines.insert((partner, prefix.to_owned()), row.line);
            let map = match partner {
                None => &mut deck.default,
                Some(id) => deck.partners[id as usize].get_or_insert_with(PrefixMap::new),
            };
            let rate = Rate {
                per_minute,
                connect_fee,
                increment_s: increment,
                minimum_s: minimum,
                prefix_len: prefix.len() as u8,
            };
            if let Some(slot) = map.entry(prefix, || rate) {
                *slot = rate;
            }
            Ok(())
        })?;
        Ok(deck)
    }

    /// The rate for a partner's call to `destination`: the longest matching prefix of the partner's deck,
    /// else of the default deck. A leading `+` is ignored.
    #[inline]
    pub fn lookup(&self, partner: PartnerId, destination: &str) -> Option<Rate> {
        let digits = destination_digits(destination);
        self.partners
            .get(partner as usize)
            .and_then(Option::as_ref)
            .and_then(|deck| deck.longest_match(digits))
            .or_else(|| self.default.longest_match(digits))
            .map(|(_, rate)| *rate)
    }

    /// Number of prefixes across all decks.
    pub fn len(&self) -> usize {
        self.default.len()
            + self
                .partners
                .iter()
                .flatten()
                .map(PrefixMap::len)
                .sum::<usize>()
    }

    /// Whether the deck has no rate.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partners() -> Partners {
        Partners::from_reader(
            Path::new("partners.csv"),
            "name,cidrs,max_concurrent,max_cps\nacme,192.0.2.0/24,0,0\nglobex,198.51.100.0/24,0,0\n"
                .as_bytes(),
        )
        .unwrap()
    }

    fn load(body: &str) -> Result<RateDeck, String> {
        let text = format!("partner,prefix,per_minute,increment,minimum\n{body}");
        RateDeck::from_reader(Path::new("rates.csv"), text.as_bytes(), &partners())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_connect_fee_is_optional() {
        let text = "partner,prefix,per_minute,increment,minimum,connect_fee\n*,44,0.02,60,60,0.05\n*,33,0.02,60,60,\n";
        let deck =
            RateDeck::from_reader(Path::new("rates.csv"), text.as_bytes(), &partners()).unwrap();
        assert_eq!(deck.lookup(0, "4420").unwrap().connect_fee, Money(50_000));
        assert_eq!(deck.lookup(0, "331").unwrap().connect_fee, Money::ZERO);
        assert_eq!(
            load("*,44,0.02,60,60\n")
                .unwrap()
                .lookup(0, "44")
                .unwrap()
                .connect_fee,
            Money::ZERO
        );
        let bad = "partner,prefix,per_minute,increment,minimum,connect_fee\n*,44,0.02,60,60,lots\n";
        let e = RateDeck::from_reader(Path::new("rates.csv"), bad.as_bytes(), &partners())
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("rates.csv:2: field connect_fee: \"lots\""),
            "{e}"
        );
    }

    #[test]
    fn partner_deck_first_then_default() {
        let deck = load(
            "*,44,0.02,60,60\n*,4420,0.015,6,6\n*,447,0.10,1,0\nacme,44,0.018,6,30\n# acme has no 4420\n",
        )
        .unwrap();
        let acme = 0;
        let globex = 1;
        let r = deck.lookup(globex, "442071234567").unwrap();
        assert_eq!(
            (r.per_minute, r.increment_s, r.minimum_s, r.prefix_len),
            (Money(15_000), 6, 6, 4)
        );
        // acme's own `44` wins over the default's longer `4420`.
        let r = deck.lookup(acme, "+442071234567").unwrap();
        assert_eq!((r.per_minute, r.prefix_len), (Money(18_000), 2));
        let r = deck.lookup(globex, "447700900123").unwrap();
        assert_eq!(
            (r.per_minute, r.increment_s, r.minimum_s),
            (Money(100_000), 1, 0)
        );
        assert_eq!(deck.lookup(acme, "33123"), None);
        // A partner id the table does not know (another backend's) gets the default deck.
        assert_eq!(deck.lookup(77, "4420").unwrap().prefix_len, 4);
        assert_eq!(deck.len(), 4);
    }

    #[test]
    fn bad_lines_name_file_line_and_field() {
        let cases = [
            (
                "*,44,\"0,12\",60,60",
                "rates.csv:2: field per_minute: \"0,12\" is not a decimal amount of at least 0 with at most 6 decimals, such as 0.0125",
            ),
            (
                "*,44,-1,60,60",
                "rates.csv:2: field per_minute: \"-1\" is not a decimal amount of at least 0 with at most 6 decimals, such as 0.0125",
            ),
            (
                "*,4a,0.1,60,60",
                "rates.csv:2: field prefix: \"4a\" is not a destination prefix of digits",
            ),
            (
                "*,44,0.1,0,60",
                "rates.csv:2: field increment: \"0\" is not a billing increment in seconds from 1 to 65535",
            ),
            (
                "*,44,0.1,6,x",
                "rates.csv:2: field minimum: \"x\" is not a minimum billed duration in seconds from 0 to 65535",
            ),
            (
                "initech,44,0.1,6,6",
                "rates.csv:2: field partner: \"initech\" is not a partner of partners.csv",
            ),
            (
                "acme,44,0.1,6,6\nacme,+44,0.2,6,6",
                "rates.csv:3: prefix 44 for partner \"acme\" is already defined at line 2",
            ),
            (
                "*,44,0.1,6",
                "rates.csv:2: expected 5 fields (partner,prefix,per_minute,increment,minimum), found 4; quote a field that contains a comma",
            ),
            (
                "*,,0.1,6,6",
                "rates.csv:2: field prefix is empty; it needs a destination prefix of digits",
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(load(&format!("{body}\n")).unwrap_err(), expected, "{body}");
        }
    }
}
