//! Partners of the local backend (`partners.csv`): who may call, from which source addresses, with which
//! limits and credentials.
//!
//! Columns: `name,cidrs,max_concurrent,max_cps,auth_users,allowed_prefixes,credit_limit,max_call_cost,fraud_allow,
//! max_spend_hour,max_spend_day` (all after `max_cps` optional). A partner is identified by the
//! call's source address: the most specific CIDR containing it wins; two partners claiming the very same
//! network is a load error, a partner's range nested in another's is fine (the narrower one wins).

use std::collections::HashMap;
use std::io::Read;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use compact_str::CompactString;
use ipnet::IpNet;

use super::prefix::destination_digits;
use super::table::{self, Column, LineProblem, LocalError, Row, optional, required};
use rtc_engine::domain::{Money, PartnerId, PartnerInfo};
use rtc_engine::fraud::PartnerFraud;

const COLUMNS: &[Column] = &[
    required("name"),
    required("cidrs"),
    required("max_concurrent"),
    required("max_cps"),
    optional("auth_users"),
    optional("allowed_prefixes"),
    optional("credit_limit"),
    optional("max_call_cost"),
    optional("fraud_allow"),
    optional("max_spend_hour"),
    optional("max_spend_day"),
];

/// One partner as the file describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partner {
    /// Index in the file (0 for the first partner), handed to the engine as its [`PartnerId`].
    pub id: PartnerId,
    /// Name used in the other tables, channel variables and CDRs.
    pub name: CompactString,
    /// Source networks the partner calls from.
    pub cidrs: Vec<IpNet>,
    /// Most concurrent calls (0: no limit).
    pub max_concurrent: u32,
    /// Most new calls per second (0: no limit).
    pub max_cps: u32,
    /// Digest usernames; when not empty, a call must carry one of them.
    pub auth_users: Vec<CompactString>,
    /// Destination prefixes the partner may call; empty allows any destination.
    pub allowed_prefixes: Vec<CompactString>,
    /// How far below zero the partner's balance may go (0: prepaid).
    pub credit_limit: Money,
    /// Most one call may cost; `None`: no cap.
    pub max_call_cost: Option<Money>,
    /// Its own fraud settings (`fraud_allow`, `max_spend_hour`, `max_spend_day`); `None`: the configured rules.
    pub fraud: Option<Box<PartnerFraud>>,
    /// Line of the file it was read from, for messages.
    pub line: u64,
}

/// Why a partner's call was not authenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthDenial {
    /// The call carried no digest user, or one the partner does not list.
    UnknownUser,
    /// The destination starts with none of the partner's allowed prefixes.
    DestinationNotAllowed,
}

impl Partner {
    /// What the engine keeps about the partner.
    pub fn info(&self) -> PartnerInfo {
        PartnerInfo {
            id: self.id,
            name: self.name.clone(),
            max_concurrent: self.max_concurrent,
            max_cps: self.max_cps,
            max_call_cost: self.max_call_cost,
            fraud: self.fraud.clone(),
        }
    }

    /// Whether a call with this digest user (empty when none) to this destination is allowed.
    pub fn authorize(&self, auth_user: &str, destination: &str) -> Result<(), AuthDenial> {
        if !self.auth_users.is_empty() && !self.auth_users.iter().any(|u| u == auth_user) {
            return Err(AuthDenial::UnknownUser);
        }
        let digits = destination_digits(destination);
        if !self.allowed_prefixes.is_empty()
            && !self
                .allowed_prefixes
                .iter()
                .any(|p| digits.starts_with(p.as_str()))
        {
            return Err(AuthDenial::DestinationNotAllowed);
        }
        Ok(())
    }
}

/// Networks of one prefix length, keyed by their masked address bits.
#[derive(Clone, Debug, Default)]
struct LengthTable {
    /// Prefix length in bits.
    len: u8,
    /// Network address bits (IPv4 in the low 32 bits) → owning partner.
    nets: HashMap<u128, PartnerId>,
}

/// The partners table, with source-address lookup.
///
/// Lookup probes one hash table per prefix length present, most specific first: partner tables have few
/// distinct lengths (typically /32, /29, /24 and a couple of IPv6 ones), so this is a handful of probes.
#[derive(Clone, Debug, Default)]
pub struct Partners {
    /// Partners by id; `None` for the id of a partner a reload removed (ids are never reused).
    list: Vec<Option<Partner>>,
    /// Partners in the table.
    count: usize,
    /// The id the next partner new to the table gets.
    next_id: usize,
    /// Every partner name the tables since load have had, with its id: a partner keeps its id across reloads,
    /// also when it is removed and added back (its account in the ledger is still there).
    known_ids: HashMap<CompactString, PartnerId>,
    /// Id by name, for the other tables.
    by_name: HashMap<CompactString, PartnerId>,
    /// IPv4 networks by prefix length, longest first.
    v4: Vec<LengthTable>,
    /// IPv6 networks by prefix length, longest first.
    v6: Vec<LengthTable>,
    /// The file read, named in other tables' messages.
    file: PathBuf,
}

fn net_bits(net: &IpNet) -> u128 {
    match net.network() {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

fn mask(bits: u128, total: u8, len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        let full = if total == 32 {
            u128::from(u32::MAX)
        } else {
            u128::MAX
        };
        bits & (full << (total - len)) & full
    }
}

fn parse_cidr(text: &str) -> Option<IpNet> {
    if let Ok(net) = text.parse::<IpNet>() {
        return Some(net.trunc());
    }
    text.parse::<IpAddr>().ok().map(IpNet::from)
}

impl Partners {
    /// Loads `partners.csv`.
    pub fn load(path: &Path) -> Result<Partners, LocalError> {
        Partners::from_reader(path, table::open(path)?)
    }

    /// Loads `partners.csv` to replace `previous` (a reload): a partner already there keeps its id, whatever its
    /// row now; a new one gets an id never used before; a removed one's id stays unused. Live calls hold ids.
    pub fn load_after(path: &Path, previous: &Partners) -> Result<Partners, LocalError> {
        Partners::read(path, table::open(path)?, Some(previous))
    }

    /// Reads the table from `data`; `file` names it in messages.
    pub fn from_reader(file: &Path, data: impl Read) -> Result<Partners, LocalError> {
        Partners::read(file, data, None)
    }

    fn read(
        file: &Path,
        data: impl Read,
        previous: Option<&Partners>,
    ) -> Result<Partners, LocalError> {
        let mut partners = Partners {
            file: file.to_owned(),
            next_id: previous.map_or(0, |p| p.list.len()),
            known_ids: previous.map(|p| p.known_ids.clone()).unwrap_or_default(),
            ..Partners::default()
        };
        // (network) → (partner, line), to report the earlier claimant of a network.
        let mut owners: HashMap<IpNet, (PartnerId, u64)> = HashMap::new();
        table::read(file, data, COLUMNS, |row| partners.add(row, &mut owners))?;
        partners
            .v4
            .sort_unstable_by_key(|t| std::cmp::Reverse(t.len));
        partners
            .v6
            .sort_unstable_by_key(|t| std::cmp::Reverse(t.len));
        Ok(partners)
    }

    fn add(
        &mut self,
        row: &Row,
        owners: &mut HashMap<IpNet, (PartnerId, u64)>,
    ) -> Result<(), LocalError> {
        let name = row.parse(
            "name",
            "a partner name without spaces, commas or \"*\"",
            |n| (n != "*" && !n.contains(char::is_whitespace)).then_some(n),
        )?;
        if let Some(other) = self.by_name.get(name).and_then(|&id| self.get(id)) {
            return Err(row.error(LineProblem::Duplicate {
                what: format!("partner {name:?}"),
                first_line: other.line,
            }));
        }
        let id = match self.known_ids.get(name) {
            Some(&id) => id,
            None => {
                let id = PartnerId::try_from(self.next_id)
                    .map_err(|_| row.error(LineProblem::Other("too many partners".to_owned())))?;
                self.next_id += 1;
                self.known_ids.insert(CompactString::from(name), id);
                id
            }
        };
        let cidrs_text = row.non_empty(
            "cidrs",
            "space-separated networks such as 192.0.2.0/24 2001:db8::/32",
        )?;
        let mut cidrs = Vec::new();
        for text in cidrs_text.split_whitespace() {
            let net = parse_cidr(text).ok_or_else(|| {
                row.bad(
                    "cidrs",
                    text,
                    "an IPv4 or IPv6 network such as 192.0.2.0/24",
                )
            })?;
            match owners.get(&net) {
                Some(&(owner, _)) if owner == id => continue,
                Some(&(owner, other_line)) => {
                    return Err(row.error(LineProblem::CidrConflict {
                        cidr: net.to_string(),
                        other: self
                            .get(owner)
                            .map_or_else(String::new, |p| p.name.to_string()),
                        other_line,
                    }));
                }
                None => {}
            }
            owners.insert(net, (id, row.line));
            let (tables, total) = match net {
                IpNet::V4(_) => (&mut self.v4, 32),
                IpNet::V6(_) => (&mut self.v6, 128),
            };
            let len = net.prefix_len();
            let index = match tables.iter().position(|t| t.len == len) {
                Some(i) => i,
                None => {
                    tables.push(LengthTable {
                        len,
                        nets: HashMap::new(),
                    });
                    tables.len() - 1
                }
            };
            tables[index]
                .nets
                .insert(mask(net_bits(&net), total, len), id);
            cidrs.push(net);
        }
        let count = |field: &'static str| {
            row.parse(field, "a whole number (0: no limit)", |t| {
                t.parse::<u32>().ok()
            })
        };
        let max_concurrent = count("max_concurrent")?;
        let max_cps = count("max_cps")?;
        let auth_users = row
            .get("auth_users")
            .split_whitespace()
            .map(CompactString::from)
            .collect();
        let mut allowed_prefixes = Vec::new();
        for prefix in row.get("allowed_prefixes").split_whitespace() {
            let digits = destination_digits(prefix);
            if !super::prefix::is_digits(digits) {
                return Err(row.bad(
                    "allowed_prefixes",
                    prefix,
                    "space-separated destination prefixes of digits",
                ));
            }
            allowed_prefixes.push(CompactString::from(digits));
        }
        let amount = |field: &'static str| -> Result<Option<Money>, LocalError> {
            match row.get(field) {
                "" => Ok(None),
                text => Money::parse(text)
                    .filter(|m| *m >= Money::ZERO)
                    .map(Some)
                    .ok_or_else(|| {
                        row.bad(
                            field,
                            text,
                            "a decimal amount of at least 0 with at most 6 decimals, such as 50.00 (empty: none)",
                        )
                    }),
            }
        };
        let credit_limit = amount("credit_limit")?.unwrap_or(Money::ZERO);
        let max_call_cost = amount("max_call_cost")?;
        let mut allow = Vec::new();
        for class in row.get("fraud_allow").split_whitespace() {
            if class.contains(',') {
                return Err(row.bad(
                    "fraud_allow",
                    class,
                    "space-separated names of <fraud> <class> elements",
                ));
            }
            allow.push(CompactString::from(class));
        }
        let fraud = PartnerFraud {
            allow,
            spend_hour: amount("max_spend_hour")?.filter(|m| *m > Money::ZERO),
            spend_day: amount("max_spend_day")?.filter(|m| *m > Money::ZERO),
        };
        let fraud = (!fraud.is_empty()).then(|| Box::new(fraud));
        self.by_name.insert(CompactString::from(name), id);
        let slot = id as usize;
        if self.list.len() <= slot {
            self.list.resize_with(slot + 1, || None);
        }
        self.count += 1;
        self.list[slot] = Some(Partner {
            id,
            name: CompactString::from(name),
            cidrs,
            max_concurrent,
            max_cps,
            auth_users,
            allowed_prefixes,
            credit_limit,
            max_call_cost,
            fraud,
            line: row.line,
        });
        Ok(())
    }

    /// The partner owning `source`: the one with the most specific network containing it. IPv4-mapped
    /// IPv6 addresses (`::ffff:192.0.2.1`, as dual-stack sockets report them) are looked up as IPv4.
    pub fn identify(&self, source: IpAddr) -> Option<&Partner> {
        let (tables, bits, total) = match source.to_canonical() {
            IpAddr::V4(a) => (&self.v4, u128::from(u32::from(a)), 32),
            IpAddr::V6(a) => (&self.v6, u128::from(a), 128),
        };
        tables
            .iter()
            .find_map(|t| t.nets.get(&mask(bits, total, t.len)))
            .and_then(|&id| self.get(id))
    }

    /// The partner with this id.
    pub fn get(&self, id: PartnerId) -> Option<&Partner> {
        self.list.get(id as usize).and_then(Option::as_ref)
    }

    /// The partner with this name.
    pub fn by_name(&self, name: &str) -> Option<&Partner> {
        self.by_name.get(name).and_then(|&id| self.get(id))
    }

    /// All partners, by id.
    pub fn iter(&self) -> impl Iterator<Item = &Partner> {
        self.list.iter().flatten()
    }

    /// Partners in the table.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the table has no partner.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// One more than the largest id ever given (removed partners' included): the size of id-indexed tables.
    pub fn id_space(&self) -> usize {
        self.list.len()
    }

    /// The file the table was read from.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Resolves the `partner` field of another table's row.
    pub(crate) fn resolve(&self, row: &Row) -> Result<PartnerId, LocalError> {
        let name = row.non_empty("partner", "a partner name from partners.csv")?;
        self.by_name.get(name).copied().ok_or_else(|| {
            row.error(LineProblem::UnknownPartner {
                name: name.to_owned(),
                partners: self.file.clone(),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Partners, String> {
        Partners::from_reader(Path::new("partners.csv"), text.as_bytes()).map_err(|e| e.to_string())
    }

    const HEADER: &str = "name,cidrs,max_concurrent,max_cps,auth_users,allowed_prefixes\n";

    #[test]
    fn a_partner_keeps_its_id_across_reloads_whatever_its_row() {
        let after = |previous: &Partners, rows: &str| {
            Partners::read(
                Path::new("partners.csv"),
                format!("{HEADER}{rows}").as_bytes(),
                Some(previous),
            )
            .unwrap()
        };
        let id = |p: &Partners, name: &str| p.by_name(name).map(|x| x.id);
        let first = load(&format!("{HEADER}a,10.0.0.0/8,0,0,,\nb,11.0.0.0/8,0,0,,\n")).unwrap();
        assert_eq!((id(&first, "a"), id(&first, "b")), (Some(0), Some(1)));
        // Reordered, b removed, c added: a keeps 0, c gets an id never used, b's stays unused.
        let second = after(&first, "c,12.0.0.0/8,0,0,,\na,10.0.0.0/8,0,0,,\n");
        assert_eq!(
            (id(&second, "a"), id(&second, "c"), id(&second, "b")),
            (Some(0), Some(2), None)
        );
        assert!(second.get(1).is_none());
        assert_eq!((second.len(), second.id_space()), (2, 3));
        assert_eq!(
            second.identify("10.1.2.3".parse().unwrap()).map(|p| p.id),
            Some(0)
        );
        // b back: its old id, so its account in the ledger is the one it had.
        let third = after(&second, "b,11.0.0.0/8,0,0,,\n");
        assert_eq!(id(&third, "b"), Some(1));
        assert_eq!(third.iter().map(|p| p.id).collect::<Vec<_>>(), [1]);
    }

    #[test]
    fn most_specific_network_wins() {
        let p = load(&format!(
            "{HEADER}wide,10.0.0.0/8 2001:db8::/32,100,10,,\nnarrow,10.1.0.0/16,5,1,alice bob,44 +33\nhost,10.1.2.3,1,1,,\nv6,2001:db8:1::/48,0,0,,\n"
        ))
        .unwrap();
        let who = |ip: &str| p.identify(ip.parse().unwrap()).map(|p| p.name.as_str());
        assert_eq!(who("10.9.9.9"), Some("wide"));
        assert_eq!(who("10.1.9.9"), Some("narrow"));
        assert_eq!(who("10.1.2.3"), Some("host"));
        assert_eq!(who("10.1.2.4"), Some("narrow"));
        assert_eq!(who("11.0.0.1"), None);
        assert_eq!(who("::ffff:10.1.2.3"), Some("host"));
        assert_eq!(who("2001:db8:1::5"), Some("v6"));
        assert_eq!(who("2001:db8:2::5"), Some("wide"));
        assert_eq!(who("2001:db9::1"), None);
        let narrow = p.by_name("narrow").unwrap();
        assert_eq!(narrow.id, 1);
        assert_eq!(narrow.info().max_concurrent, 5);
        assert_eq!(narrow.max_cps, 1);
        assert_eq!(narrow.allowed_prefixes, ["44", "33"]);
        assert_eq!(narrow.authorize("alice", "+4420"), Ok(()));
        assert_eq!(
            narrow.authorize("carol", "4420"),
            Err(AuthDenial::UnknownUser)
        );
        assert_eq!(narrow.authorize("", "4420"), Err(AuthDenial::UnknownUser));
        assert_eq!(
            narrow.authorize("bob", "4920"),
            Err(AuthDenial::DestinationNotAllowed)
        );
        assert_eq!(p.get(0).unwrap().authorize("", "999"), Ok(()));
    }

    #[test]
    fn a_zero_length_network_catches_everything_else() {
        let p = load(&format!(
            "{HEADER}any,0.0.0.0/0,0,0,,\nlo,127.0.0.0/8,0,0,,\n"
        ))
        .unwrap();
        assert_eq!(p.identify("8.8.8.8".parse().unwrap()).unwrap().name, "any");
        assert_eq!(p.identify("127.0.0.1".parse().unwrap()).unwrap().name, "lo");
        assert!(p.identify("::1".parse().unwrap()).is_none());
    }

    #[test]
    fn the_same_network_for_two_partners_is_an_error() {
        let e = load(&format!(
            "{HEADER}a,192.0.2.0/24,0,0,,\n# b overlaps\nb,198.51.100.0/24 192.0.2.7/24,0,0,,\n"
        ))
        .unwrap_err();
        assert_eq!(
            e,
            "partners.csv:4: field cidrs: 192.0.2.0/24 is also claimed by partner \"a\" (line 2); an address must belong to one partner"
        );
        // The same partner repeating a network is harmless.
        load(&format!("{HEADER}a,192.0.2.0/24 192.0.2.0/24,0,0,,\n")).unwrap();
    }

    #[test]
    fn bad_lines_name_file_line_and_field() {
        let cases = [
            (
                "a,192.0.2.0/33,0,0,,",
                "partners.csv:2: field cidrs: \"192.0.2.0/33\" is not an IPv4 or IPv6 network such as 192.0.2.0/24",
            ),
            (
                "a,192.0.2.0/24,ten,0,,",
                "partners.csv:2: field max_concurrent: \"ten\" is not a whole number (0: no limit)",
            ),
            (
                "a,192.0.2.0/24,1,-1,,",
                "partners.csv:2: field max_cps: \"-1\" is not a whole number (0: no limit)",
            ),
            (
                "a,,1,1,,",
                "partners.csv:2: field cidrs is empty; it needs space-separated networks such as 192.0.2.0/24 2001:db8::/32",
            ),
            (
                "*,192.0.2.0/24,1,1,,",
                "partners.csv:2: field name: \"*\" is not a partner name without spaces, commas or \"*\"",
            ),
            (
                "a,192.0.2.0/24,1,1,,44x",
                "partners.csv:2: field allowed_prefixes: \"44x\" is not space-separated destination prefixes of digits",
            ),
            (
                "a,192.0.2.0/24,1,1,,\na,198.51.100.0/24,1,1,,",
                "partners.csv:3: partner \"a\" is already defined at line 2",
            ),
        ];
        for (line, expected) in cases {
            assert_eq!(load(&format!("{HEADER}{line}\n")).unwrap_err(), expected);
        }
    }

    #[test]
    fn optional_columns_may_be_left_out() {
        let p = load("name,cidrs,max_concurrent,max_cps\na,192.0.2.0/24,3,0\n").unwrap();
        let a = p.by_name("a").unwrap();
        assert!(a.auth_users.is_empty());
        assert_eq!((a.credit_limit, a.max_call_cost), (Money::ZERO, None));
    }

    #[test]
    fn credit_limit_and_cost_cap_are_amounts() {
        let header = "name,cidrs,max_concurrent,max_cps,credit_limit,max_call_cost\n";
        let p = load(&format!(
            "{header}a,192.0.2.0/24,0,0,500.00,25\nb,198.51.100.0/24,0,0,,\n"
        ))
        .unwrap();
        let a = p.by_name("a").unwrap();
        assert_eq!(
            (a.credit_limit, a.max_call_cost),
            (Money(500_000_000), Some(Money(25_000_000)))
        );
        assert_eq!(a.info().max_call_cost, Some(Money(25_000_000)));
        assert_eq!(p.by_name("b").unwrap().max_call_cost, None);
        assert_eq!(
            load(&format!("{header}a,192.0.2.0/24,0,0,-5,\n")).unwrap_err(),
            "partners.csv:2: field credit_limit: \"-5\" is not a decimal amount of at least 0 with at most 6 \
             decimals, such as 50.00 (empty: none)"
        );
    }
}
