//! The route table of the local backend (`routes.csv`): carriers and dial strings per destination prefix,
//! in failover order.
//!
//! Columns: `prefix,carrier,dial_string,cost_per_minute,priority`. Rows of one prefix form its route list,
//! ordered by priority (lower first), then cost, then file order. The longest matching prefix gives the
//! call its list. `${destination}` in a dial string is replaced by the call's destination at lookup; other
//! `${...}` variables are left for FreeSWITCH to expand.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use compact_str::CompactString;

use super::prefix::{PrefixMap, destination_digits, is_digits};
use super::table::{self, Column, LineProblem, LocalError, required};
use rtc_engine::domain::{Money, Route, Routes};

/// The placeholder replaced by the call's destination.
pub const DESTINATION_PLACEHOLDER: &str = "${destination}";

const COLUMNS: &[Column] = &[
    required("prefix"),
    required("carrier"),
    required("dial_string"),
    required("cost_per_minute"),
    required("priority"),
];

/// One prefix's routes, ready to hand out.
#[derive(Clone, Debug)]
struct RouteList {
    /// The routes with their dial strings as written (templates), shared by every call when none has a
    /// placeholder.
    routes: Routes,
    /// Whether any dial string contains [`DESTINATION_PLACEHOLDER`], so that lookup must build a list.
    templated: bool,
}

/// A route row while loading: its sort keys and where it came from.
struct Pending {
    /// Lower is tried first.
    priority: u32,
    /// Line in the file, last tie-breaker and duplicate messages.
    line: u64,
    route: Route,
}

/// Routes per destination prefix.
#[derive(Clone, Debug, Default)]
pub struct RouteTable {
    /// Longest-prefix map to each prefix's list.
    map: PrefixMap<RouteList>,
}

impl RouteTable {
    /// Loads `routes.csv`.
    pub fn load(path: &Path) -> Result<RouteTable, LocalError> {
        RouteTable::from_reader(path, table::open(path)?)
    }

    /// Reads the table from `data`; `file` names it in messages.
    pub fn from_reader(file: &Path, data: impl Read) -> Result<RouteTable, LocalError> {
        // Rows grouped by prefix, in first-seen order of prefixes.
        let mut pending: HashMap<String, Vec<Pending>> = HashMap::new();
        let mut order: Vec<String> = Vec::new();
        // (prefix, carrier) → line, for duplicate messages.
        let mut lines: HashMap<(String, String), u64> = HashMap::new();
        table::read(file, data, COLUMNS, |row| {
            let prefix = row.parse("prefix", "a destination prefix of digits", |p| {
                let p = destination_digits(p);
                is_digits(p).then_some(p)
            })?;
            let carrier = row.parse("carrier", "a carrier name without spaces", |c| {
                (!c.contains(char::is_whitespace)).then_some(c)
            })?;
            let dial_string = row.non_empty(
                "dial_string",
                "a FreeSWITCH dial string such as sofia/gateway/carrier_a/${destination}",
            )?;
            let cost_per_minute = row.parse(
                "cost_per_minute",
                "a decimal amount of at least 0 with at most 6 decimals, such as 0.0125",
                |t| Money::parse(t).filter(|m| *m >= Money::ZERO),
            )?;
            let priority = row.parse("priority", "a whole number (lower is tried first)", |t| {
                t.parse::<u32>().ok()
            })?;
            let key = (prefix.to_owned(), carrier.to_owned());
            if let Some(&first_line) = lines.get(&key) {
                return Err(row.error(LineProblem::Duplicate {
                    what: format!("carrier {carrier} for prefix {prefix}"),
                    first_line,
                }));
            }
            lines.insert(key, row.line);
            let list = pending.entry(prefix.to_owned()).or_insert_with(|| {
                order.push(prefix.to_owned());
                Vec::new()
            });
            list.push(Pending {
                priority,
                line: row.line,
                route: Route {
                    carrier: CompactString::from(carrier),
                    dial_string: CompactString::from(dial_string),
                    cost_per_minute,
                },
            });
            Ok(())
        })?;
        let mut map = PrefixMap::new();
        for prefix in order {
            let Some(mut list) = pending.remove(&prefix) else {
                continue;
            };
            list.sort_by_key(|p| (p.priority, p.route.cost_per_minute, p.line));
            let routes: Vec<Route> = list.into_iter().map(|p| p.route).collect();
            let templated = routes
                .iter()
                .any(|r| r.dial_string.contains(DESTINATION_PLACEHOLDER));
            let list = RouteList {
                routes: Arc::from(routes),
                templated,
            };
            // Prefixes are unique here and validated as digits above, so the slot is always new.
            map.entry(&prefix, || list);
        }
        Ok(RouteTable { map })
    }

    /// The routes for `destination` (longest matching prefix; a leading `+` is ignored), with
    /// `${destination}` replaced by `destination` as given. Shared without copying when no dial string of
    /// the list has the placeholder.
    pub fn lookup(&self, destination: &str) -> Option<Routes> {
        let (_, list) = self.map.longest_match(destination_digits(destination))?;
        if !list.templated {
            return Some(Arc::clone(&list.routes));
        }
        Some(
            list.routes
                .iter()
                .map(|r| Route {
                    carrier: r.carrier.clone(),
                    dial_string: substitute(&r.dial_string, destination),
                    cost_per_minute: r.cost_per_minute,
                })
                .collect(),
        )
    }

    /// Number of prefixes with routes.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the table has no route.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

fn substitute(template: &str, destination: &str) -> CompactString {
    if !template.contains(DESTINATION_PLACEHOLDER) {
        return CompactString::from(template);
    }
    let mut out = CompactString::with_capacity(template.len() + destination.len());
    let mut rest = template;
    while let Some(at) = rest.find(DESTINATION_PLACEHOLDER) {
        out.push_str(&rest[..at]);
        out.push_str(destination);
        rest = &rest[at + DESTINATION_PLACEHOLDER.len()..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(body: &str) -> Result<RouteTable, String> {
        let text = format!("prefix,carrier,dial_string,cost_per_minute,priority\n{body}");
        RouteTable::from_reader(Path::new("routes.csv"), text.as_bytes()).map_err(|e| e.to_string())
    }

    fn carriers(routes: &Routes) -> Vec<&str> {
        routes.iter().map(|r| r.carrier.as_str()).collect()
    }

    #[test]
    fn ordered_by_priority_then_cost_and_longest_prefix_wins() {
        let table = load(
            "44,b,sofia/gateway/b/${destination},0.012,10\n\
             44,a,sofia/gateway/a/${destination},0.010,20\n\
             44,c,sofia/gateway/c/${destination},0.009,10\n\
             4420,d,\"{absolute_codec_string=PCMU,PCMA}sofia/gateway/d/00${destination}\",0.02,1\n\
             1,e,sofia/gateway/e/fixed,0.01,1\n",
        )
        .unwrap();
        let r = table.lookup("447700900123").unwrap();
        assert_eq!(carriers(&r), ["c", "b", "a"]);
        assert_eq!(r[0].dial_string, "sofia/gateway/c/447700900123");
        assert_eq!(r[0].cost_per_minute, Money(9_000));
        let r = table.lookup("+442071234567").unwrap();
        assert_eq!(carriers(&r), ["d"]);
        assert_eq!(
            r[0].dial_string,
            "{absolute_codec_string=PCMU,PCMA}sofia/gateway/d/00+442071234567"
        );
        assert!(table.lookup("33123").is_none());
        // Without a placeholder the list is shared, not rebuilt.
        let x = table.lookup("1555").unwrap();
        let y = table.lookup("1666").unwrap();
        assert!(Arc::ptr_eq(&x, &y));
        assert_eq!(table.len(), 3);
    }

    #[test]
    fn substitution_replaces_every_placeholder_only() {
        assert_eq!(
            substitute("x/${destination}/${destination}/${other}", "123"),
            "x/123/123/${other}"
        );
        assert_eq!(substitute("plain", "123"), "plain");
    }

    #[test]
    fn bad_lines_name_file_line_and_field() {
        let cases = [
            (
                "44,a,sofia/gateway/a/x,0.01,first",
                "routes.csv:2: field priority: \"first\" is not a whole number (lower is tried first)",
            ),
            (
                "44,a,,0.01,1",
                "routes.csv:2: field dial_string is empty; it needs a FreeSWITCH dial string such as sofia/gateway/carrier_a/${destination}",
            ),
            (
                "44,a,x,cheap,1",
                "routes.csv:2: field cost_per_minute: \"cheap\" is not a decimal amount of at least 0 with at most 6 decimals, such as 0.0125",
            ),
            (
                "44,carrier a,x,0.01,1",
                "routes.csv:2: field carrier: \"carrier a\" is not a carrier name without spaces",
            ),
            (
                "44,a,x,0.01,1\n\n44,a,y,0.02,2",
                "routes.csv:4: carrier a for prefix 44 is already defined at line 2",
            ),
            (
                "44,a,{x=1,y=2}sofia/gateway/a/1,0.01,1",
                "routes.csv:2: expected 5 fields (prefix,carrier,dial_string,cost_per_minute,priority), found 6; quote a field that contains a comma",
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(load(&format!("{body}\n")).unwrap_err(), expected, "{body}");
        }
    }
}
