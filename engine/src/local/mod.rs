//! The embedded (local) business backends: partners, authentication, balances, rating, routing and CDRs
//! answered in-process from tables loaded at start.
//!
//! # Layout
//! - [`table`]: the CSV-like file format shared by the tables, and [`LocalError`] (`file:line: field ...`).
//! - [`prefix`]: longest-prefix lookup over destination digits.
//! - [`partners`], [`rates`], [`routes`], [`balances`]: one table each.
//! - [`LocalServices`]: all of them behind [`ServiceSink`], answering at once on the caller's thread.

pub mod balances;
pub mod partners;
pub mod prefix;
pub mod rates;
pub mod routes;
pub mod table;

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use balances::{Account, BalanceError, Ledger, Reserve, Settlement};
pub use partners::{AuthDenial, Partner, Partners};
pub use rates::RateDeck;
pub use routes::RouteTable;
pub use table::{LineProblem, LocalError};

use crate::domain::{Cdr, PartnerId, Reservation};
use crate::id::CallId;
use crate::service::{
    Outcome, ServiceFailure, ServiceKind, ServiceRequest, ServiceResult, ServiceSink,
};
use crate::settings::LocalFiles;

/// Where the local CDR writer puts records.
#[derive(Debug)]
pub enum CdrStore {
    /// Appended as JSON lines to a file by a writer thread of its own (`rtc-cdr`), so that a slow disk never
    /// stalls the engine thread; flushed whenever it has written all it was given. Dropping the store hands
    /// over what is queued and waits for the writer to finish it.
    File(CdrFile),
    /// The most recent records, in memory (tests, the simulator).
    Memory {
        /// How many are kept.
        keep: usize,
        /// Oldest first.
        recent: VecDeque<Cdr>,
    },
}

/// The file store's handle on its writer thread.
#[derive(Debug)]
pub struct CdrFile {
    /// The file, for messages.
    path: PathBuf,
    /// Records for the writer; closed (dropped) to stop it.
    tx: Option<crossbeam_channel::Sender<Cdr>>,
    /// Joined on drop: every record handed over is written (or logged whole) before the store is gone.
    writer: Option<std::thread::JoinHandle<()>>,
}

/// The name of the CDR writer thread.
pub const CDR_THREAD: &str = "rtc-cdr";

impl Drop for CdrFile {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(w) = self.writer.take()
            && w.join().is_err()
        {
            log::error!("{}: the CDR writer panicked", self.path.display());
        }
    }
}

/// The writer thread: appends each record as a JSON line, flushing when the queue is empty. A record that
/// cannot be written is logged whole, so that it can still be recovered from the log.
fn write_cdrs(path: &Path, file: File, rx: &crossbeam_channel::Receiver<Cdr>) {
    let mut out = BufWriter::new(file);
    let mut failing = false;
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter().take(1023));
        let mut lines = Vec::with_capacity(batch.len() * 400);
        for cdr in &batch {
            if let Ok(mut line) = serde_json::to_vec(cdr) {
                line.push(b'\n');
                lines.extend_from_slice(&line);
            }
        }
        match out.write_all(&lines).and_then(|()| out.flush()) {
            Ok(()) => failing = false,
            Err(e) => {
                if !failing {
                    log::error!(
                        "{}: CDRs not written: {e}; each is logged below",
                        path.display()
                    );
                }
                failing = true;
                for line in String::from_utf8_lossy(&lines).lines() {
                    log::error!("CDR not written to {}: {line}", path.display());
                }
                // What BufWriter kept is dropped: the records are in the log.
                out = BufWriter::new(out.into_parts().0);
            }
        }
    }
}

impl CdrStore {
    /// Keeps the last `keep` CDRs in memory.
    pub fn memory(keep: usize) -> CdrStore {
        CdrStore::Memory {
            keep,
            recent: VecDeque::with_capacity(keep.min(1024)),
        }
    }

    /// Appends CDRs to `path` (created when missing), from a writer thread.
    pub fn file(path: &Path) -> Result<CdrStore, LocalError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| LocalError::Read {
                file: path.to_owned(),
                source,
            })?;
        let (tx, rx) = crossbeam_channel::unbounded::<Cdr>();
        let writer_path = path.to_owned();
        let writer = std::thread::Builder::new()
            .name(CDR_THREAD.into())
            .spawn(move || write_cdrs(&writer_path, file, &rx))
            .map_err(|source| LocalError::Read {
                file: path.to_owned(),
                source,
            })?;
        Ok(CdrStore::File(CdrFile {
            path: path.to_owned(),
            tx: Some(tx),
            writer: Some(writer),
        }))
    }

    fn write(&mut self, cdr: Cdr) -> Result<(), String> {
        match self {
            CdrStore::File(f) => match &f.tx {
                Some(tx) => tx.send(cdr).map_err(|e| {
                    let line = serde_json::to_string(&e.0).unwrap_or_default();
                    format!(
                        "{}: the CDR writer is gone; the record: {line}",
                        f.path.display()
                    )
                }),
                None => Err(format!("{}: the CDR store is closed", f.path.display())),
            },
            CdrStore::Memory { keep, recent } => {
                if *keep > 0 {
                    if recent.len() == *keep {
                        recent.pop_front();
                    }
                    recent.push_back(cdr);
                }
                Ok(())
            }
        }
    }
}

/// What the local backends have done, for `rtc_core metrics` and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct LocalCounters {
    /// IdentifyPartner requests.
    pub partner: u64,
    /// Authenticate requests.
    pub auth: u64,
    /// ReserveBalance, CommitBalance and ReleaseBalance requests.
    pub balance: u64,
    /// Rate requests.
    pub rating: u64,
    /// Route requests.
    pub routing: u64,
    /// WriteCdr requests.
    pub cdr: u64,
    /// Requests that failed (bad reservation, unknown partner id, CDR write error); each is logged.
    pub errors: u64,
    /// Commits whose cost exceeded the reservation (the balance was charged anyway).
    pub overruns: u64,
}

impl LocalCounters {
    /// Requests of one kind.
    pub fn requests(&self, kind: ServiceKind) -> u64 {
        match kind {
            ServiceKind::Partner => self.partner,
            ServiceKind::Auth => self.auth,
            ServiceKind::Balance => self.balance,
            ServiceKind::Rating => self.rating,
            ServiceKind::Routing => self.routing,
            ServiceKind::Cdr => self.cdr,
        }
    }

    fn count(&mut self, kind: ServiceKind) {
        let slot = match kind {
            ServiceKind::Partner => &mut self.partner,
            ServiceKind::Auth => &mut self.auth,
            ServiceKind::Balance => &mut self.balance,
            ServiceKind::Rating => &mut self.rating,
            ServiceKind::Routing => &mut self.routing,
            ServiceKind::Cdr => &mut self.cdr,
        };
        *slot += 1;
    }
}

/// Every business service answered from local tables: partners, authentication, balances, rating, routing
/// and CDRs. Answers are immediate ([`ServiceSink::submit`] returns `Some`), settlements apply at once.
#[derive(Debug)]
pub struct LocalServices {
    /// Partners and their networks; shared so a reload can swap tables without copying.
    partners: Arc<Partners>,
    /// Rate decks.
    rates: Arc<RateDeck>,
    /// Route lists.
    routes: Arc<RouteTable>,
    /// Balances and outstanding reservations (state, owned here).
    ledger: Ledger,
    /// Where CDRs go.
    cdrs: CdrStore,
    /// Requests and errors so far.
    counters: LocalCounters,
}

impl LocalServices {
    /// Loads every table named by the configuration's `<local>` section and opens the CDR store.
    pub fn load(files: &LocalFiles) -> Result<LocalServices, LocalError> {
        let partners = Partners::load(&files.partners)?;
        let rates = RateDeck::load(&files.rates, &partners)?;
        let routes = RouteTable::load(&files.routes)?;
        let ledger = Ledger::load(&files.balances, &partners)?;
        let cdrs = match &files.cdr_file {
            Some(path) => CdrStore::file(path)?,
            None => CdrStore::memory(files.cdr_memory),
        };
        Ok(LocalServices::new(partners, rates, routes, ledger, cdrs))
    }

    /// Assembles the services from tables already loaded.
    pub fn new(
        partners: Partners,
        rates: RateDeck,
        routes: RouteTable,
        ledger: Ledger,
        cdrs: CdrStore,
    ) -> LocalServices {
        LocalServices {
            partners: Arc::new(partners),
            rates: Arc::new(rates),
            routes: Arc::new(routes),
            ledger,
            cdrs,
            counters: LocalCounters::default(),
        }
    }

    pub fn partners(&self) -> &Partners {
        &self.partners
    }

    pub fn rates(&self) -> &RateDeck {
        &self.rates
    }

    pub fn routes(&self) -> &RouteTable {
        &self.routes
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Re-reads the tables named by `files` and swaps them in, all or nothing.
    ///
    /// Partners may be added, removed and reordered: live calls hold partner ids, and a partner keeps its id
    /// by name for as long as the module runs (also when removed and added back). A call in setup whose partner
    /// was removed fails at its next step with the partner's id named; settlements of removed partners still
    /// reach their account. Rates and routes are replaced whole. Balances of known partners keep their live
    /// values and reservations (money moves through the balance service, not through a reload); new partners
    /// open at their `balances.csv` amount. The CDR store is kept.
    pub fn reload(&mut self, files: &LocalFiles) -> Result<String, LocalError> {
        let partners = Partners::load_after(&files.partners, &self.partners)?;
        let rates = RateDeck::load(&files.rates, &partners)?;
        let routes = RouteTable::load(&files.routes)?;
        let opening = Ledger::load(&files.balances, &partners)?;
        let added = partners
            .iter()
            .filter(|p| self.partners.by_name(&p.name).is_none())
            .count();
        let removed = self
            .partners
            .iter()
            .filter(|p| partners.by_name(&p.name).is_none())
            .count();
        self.ledger.extend_from(&opening);
        let summary = format!(
            "local tables reloaded: {} partners ({added} new, {removed} removed), {} rate prefixes, {} route \
             prefixes",
            partners.len(),
            rates.len(),
            routes.len()
        );
        self.partners = Arc::new(partners);
        self.rates = Arc::new(rates);
        self.routes = Arc::new(routes);
        Ok(summary)
    }

    /// For top-ups and tests.
    pub fn ledger_mut(&mut self) -> &mut Ledger {
        &mut self.ledger
    }

    pub fn counters(&self) -> LocalCounters {
        self.counters
    }

    /// CDRs kept in memory, oldest first (empty when writing to a file).
    pub fn recent_cdrs(&self) -> impl Iterator<Item = &Cdr> {
        let recent = match &self.cdrs {
            CdrStore::Memory { recent, .. } => Some(recent.iter()),
            CdrStore::File(_) => None,
        };
        recent.into_iter().flatten()
    }

    fn settle(
        &mut self,
        call: CallId,
        partner: PartnerId,
        reservation: Reservation,
        cost: Option<crate::domain::Money>,
    ) {
        let result = match cost {
            Some(cost) => self.ledger.commit_for(Some(partner), reservation, cost),
            None => self.ledger.release_for(Some(partner), reservation),
        };
        let action = if cost.is_some() { "commit" } else { "release" };
        match result {
            Ok(s) if s.excess.0 > 0 => {
                self.counters.overruns += 1;
                log::warn!(
                    "call {call}: cost {} exceeded reservation {} ({}) by {}; balance of partner {} is now {}",
                    s.charged,
                    reservation.id,
                    reservation.amount,
                    s.excess,
                    self.partner_name(partner),
                    s.balance
                );
            }
            Ok(_) => {}
            Err(e) => {
                self.counters.errors += 1;
                log::warn!(
                    "call {call}: balance {action} of reservation {} for partner {} failed: {e}",
                    reservation.id,
                    self.partner_name(partner)
                );
            }
        }
    }

    fn partner_name(&self, id: PartnerId) -> String {
        self.partners
            .get(id)
            .map_or_else(|| format!("id {id}"), |p| p.name.to_string())
    }
}

/// Counts and logs a request that could not be answered, and says so to the engine.
fn failed(
    counters: &mut LocalCounters,
    call: CallId,
    kind: ServiceKind,
    what: std::fmt::Arguments,
) -> Outcome {
    counters.errors += 1;
    log::warn!("call {call}: local {} service: {what}", kind.name());
    Outcome::Failed(kind, ServiceFailure::Error)
}

impl ServiceSink for LocalServices {
    fn reload(&mut self, config: &crate::settings::RtcConfig) -> Result<String, String> {
        LocalServices::reload(self, &config.local).map_err(|e| e.to_string())
    }

    fn submit(&mut self, request: ServiceRequest) -> Option<ServiceResult> {
        let kind = request.kind();
        self.counters.count(kind);
        let call = request.call();
        let outcome = match request {
            ServiceRequest::IdentifyPartner { source_ip, .. } => {
                match source_ip.and_then(|ip| self.partners.identify(ip)) {
                    Some(partner) => Outcome::PartnerFound(partner.info()),
                    None => Outcome::PartnerUnknown,
                }
            }
            ServiceRequest::Authenticate {
                partner,
                destination,
                auth_user,
                ..
            } => match self.partners.get(partner) {
                None => failed(
                    &mut self.counters,
                    call,
                    kind,
                    format_args!(
                        "partner id {partner} is not in {}",
                        self.partners.file().display()
                    ),
                ),
                Some(p) => match p.authorize(&auth_user, &destination) {
                    Ok(()) => Outcome::AuthOk,
                    Err(denial) => {
                        log::debug!("call {call}: partner {} denied: {denial:?}", p.name);
                        Outcome::AuthDenied
                    }
                },
            },
            ServiceRequest::ReserveBalance {
                partner, amount, ..
            } => match self.ledger.reserve(partner, amount) {
                Ok(Reserve::Reserved(r)) => Outcome::BalanceReserved(r),
                Ok(Reserve::Insufficient { .. }) => Outcome::BalanceInsufficient,
                Err(e) => failed(
                    &mut self.counters,
                    call,
                    kind,
                    format_args!("reserve {amount}: {e}"),
                ),
            },
            ServiceRequest::Rate {
                partner,
                destination,
                ..
            } => match self.rates.lookup(partner, &destination) {
                Some(rate) => Outcome::RateFound(rate),
                None => Outcome::RateNone,
            },
            ServiceRequest::Route { destination, .. } => match self.routes.lookup(&destination) {
                Some(routes) => Outcome::RoutesFound(routes),
                None => Outcome::RoutesNone,
            },
            ServiceRequest::CommitBalance {
                partner,
                reservation,
                cost,
                ..
            } => {
                self.settle(call, partner, reservation, Some(cost));
                return None;
            }
            ServiceRequest::ReleaseBalance {
                partner,
                reservation,
                ..
            } => {
                self.settle(call, partner, reservation, None);
                return None;
            }
            ServiceRequest::WriteCdr(cdr) => {
                if let Err(e) = self.cdrs.write(*cdr) {
                    self.counters.errors += 1;
                    log::warn!("call {call}: CDR not written: {e}");
                }
                return None;
            }
        };
        Some(ServiceResult { call, outcome })
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use compact_str::CompactString;

    use super::*;
    use crate::cause::HangupCause;
    use crate::domain::{Money, Route};
    use crate::settings::RtcConfig;

    fn shipped() -> LocalServices {
        LocalServices::load(&RtcConfig::default().local).unwrap()
    }

    fn call(n: u128) -> CallId {
        CallId::from_u128(n)
    }

    fn ask(s: &mut LocalServices, request: ServiceRequest) -> Outcome {
        let id = request.call();
        let result = s.submit(request).expect("answered at once");
        assert_eq!(result.call, id);
        result.outcome
    }

    fn identify(s: &mut LocalServices, ip: &str) -> Option<(PartnerId, String)> {
        match ask(
            s,
            ServiceRequest::IdentifyPartner {
                call: call(1),
                source_ip: Some(ip.parse::<IpAddr>().unwrap()),
            },
        ) {
            Outcome::PartnerFound(p) => Some((p.id, p.name.to_string())),
            Outcome::PartnerUnknown => None,
            other => panic!("{other:?}"),
        }
    }

    fn auth(s: &mut LocalServices, partner: PartnerId, user: &str, destination: &str) -> Outcome {
        ask(
            s,
            ServiceRequest::Authenticate {
                call: call(2),
                partner,
                source_ip: None,
                caller: "1000".into(),
                destination: destination.into(),
                auth_user: user.into(),
            },
        )
    }

    fn reserve(s: &mut LocalServices, partner: PartnerId, amount: Money) -> Outcome {
        ask(
            s,
            ServiceRequest::ReserveBalance {
                call: call(3),
                partner,
                amount,
            },
        )
    }

    fn routes(s: &mut LocalServices, destination: &str) -> Option<Routes> {
        match ask(
            s,
            ServiceRequest::Route {
                call: call(4),
                partner: 0,
                destination: destination.into(),
            },
        ) {
            Outcome::RoutesFound(r) => Some(r),
            Outcome::RoutesNone => None,
            other => panic!("{other:?}"),
        }
    }

    fn rate(
        s: &mut LocalServices,
        partner: PartnerId,
        destination: &str,
    ) -> Option<crate::domain::Rate> {
        match ask(
            s,
            ServiceRequest::Rate {
                call: call(5),
                partner,
                destination: destination.into(),
            },
        ) {
            Outcome::RateFound(r) => Some(r),
            Outcome::RateNone => None,
            other => panic!("{other:?}"),
        }
    }

    fn cdr(n: u128) -> Cdr {
        Cdr {
            uuid: call(n),
            caller: "1000".into(),
            destination: "442071234567".into(),
            source_ip: "127.0.0.1".parse().ok(),
            partner: Some("lab".into()),
            final_state: "COMPLETED",
            reason: None,
            hangup_cause: HangupCause::NORMAL_CLEARING,
            carrier: Some("carrier_b".into()),
            rate_per_minute: Some(Money(12_000)),
            setup_us: Some(1500),
            talk_s: 61,
            billed_s: 66,
            cost: Money(13_200),
            started_at_us: 1,
            ended_at_us: 2,
        }
    }

    use crate::domain::Routes;

    #[test]
    fn shipped_tables_drive_every_scenario() {
        let mut s = shipped();
        // Answered: the lab partner on loopback, rated and routed with failover.
        let (lab, name) = identify(&mut s, "127.0.0.1").unwrap();
        assert_eq!(name, "lab");
        assert_eq!(identify(&mut s, "::1").unwrap().1, "lab");
        assert_eq!(auth(&mut s, lab, "", "442071234567"), Outcome::AuthOk);
        assert!(matches!(
            reserve(&mut s, lab, Money(1_000_000)),
            Outcome::BalanceReserved(_)
        ));
        let r = rate(&mut s, lab, "+442071234567").unwrap();
        assert_eq!((r.per_minute, r.prefix_len), (Money(12_000), 4));
        let list = routes(&mut s, "442071234567").unwrap();
        let carriers: Vec<&str> = list.iter().map(|r| r.carrier.as_str()).collect();
        assert_eq!(carriers, ["carrier_b", "carrier_a"]);
        assert_eq!(list[0].dial_string, "sofia/gateway/carrier_b/442071234567");
        assert_eq!(routes(&mut s, "447700900123").unwrap().len(), 2);
        assert_eq!(routes(&mut s, "443069990000").unwrap().len(), 3);
        let au = routes(&mut s, "61255550123").unwrap();
        assert_eq!(
            au[0].dial_string,
            "{absolute_codec_string=PCMU,PCMA}sofia/gateway/carrier_a/61255550123"
        );
        let live = routes(&mut s, "15550100").unwrap();
        assert_eq!(live[0].dial_string, "error/NORMAL_TEMPORARY_FAILURE");
        assert_eq!(live[1].dial_string, "loopback/15550100/rtc_answer");

        // Unknown partner: addresses outside every network.
        for ip in ["127.1.0.1", "203.0.113.7", "2001:db8:ff::1", "10.0.0.1"] {
            assert_eq!(identify(&mut s, ip), None, "{ip}");
        }
        let none = ask(
            &mut s,
            ServiceRequest::IdentifyPartner {
                call: call(1),
                source_ip: None,
            },
        );
        assert_eq!(none, Outcome::PartnerUnknown);

        // No balance: partners at 0.
        for ip in ["127.0.9.1", "192.0.2.200"] {
            let (id, _) = identify(&mut s, ip).unwrap();
            assert_eq!(
                reserve(&mut s, id, Money(1_000_000)),
                Outcome::BalanceInsufficient
            );
        }
        // Nested networks: the most specific owner wins.
        assert_eq!(identify(&mut s, "192.0.2.10").unwrap().1, "acme");
        assert_eq!(identify(&mut s, "192.0.2.130").unwrap().1, "broke");
        assert_eq!(identify(&mut s, "198.51.100.70").unwrap().1, "initech");
        assert_eq!(identify(&mut s, "198.51.100.7").unwrap().1, "globex");
        assert_eq!(identify(&mut s, "2001:db8:b::9").unwrap().1, "globex");

        // No route: rated but not routed; no rate at all.
        assert!(rate(&mut s, lab, "8823456789").is_some());
        assert!(routes(&mut s, "8823456789").is_none());
        assert!(rate(&mut s, lab, "999123").is_none());

        // Partner decks and authentication rules.
        let acme = s.partners().by_name("acme").unwrap().id;
        assert_eq!(
            rate(&mut s, acme, "442071234567").unwrap().per_minute,
            Money(10_000)
        );
        assert_eq!(
            rate(&mut s, acme, "4930123").unwrap().per_minute,
            Money(25_000)
        );
        let globex = s.partners().by_name("globex").unwrap().id;
        assert_eq!(auth(&mut s, globex, "", "4930123"), Outcome::AuthDenied);
        assert_eq!(
            auth(&mut s, globex, "globex_trunk", "4930123"),
            Outcome::AuthOk
        );
        let lab_auth = s.partners().by_name("lab_auth").unwrap().id;
        assert_eq!(
            auth(&mut s, lab_auth, "alice", "4930123"),
            Outcome::AuthDenied
        );
        assert_eq!(
            auth(&mut s, lab_auth, "alice", "+12125550100"),
            Outcome::AuthOk
        );

        let c = s.counters();
        assert_eq!(c.requests(ServiceKind::Partner), 14);
        assert_eq!(c.auth, 5);
        assert_eq!(c.errors, 0);
    }

    #[test]
    fn settlements_apply_and_errors_are_counted() {
        let mut s = shipped();
        let globex = s.partners().by_name("globex").unwrap().id;
        let Outcome::BalanceReserved(r) = reserve(&mut s, globex, Money(5_000_000)) else {
            panic!("not reserved");
        };
        assert_eq!(
            s.ledger().balance(globex).unwrap().reserved,
            Money(5_000_000)
        );
        let commit = ServiceRequest::CommitBalance {
            call: call(9),
            partner: globex,
            reservation: r,
            cost: Money(6_000_000),
        };
        assert_eq!(s.submit(commit.clone()), None);
        let account = s.ledger().balance(globex).unwrap();
        assert_eq!(account.balance, Money(144_000_000));
        assert_eq!(account.reserved, Money::ZERO);
        assert_eq!(s.counters().overruns, 1);
        // Settling again: an error, logged and counted, nothing changes.
        assert_eq!(s.submit(commit), None);
        let release = ServiceRequest::ReleaseBalance {
            call: call(9),
            partner: globex,
            reservation: r,
        };
        assert_eq!(s.submit(release), None);
        assert_eq!(s.counters().errors, 2);
        assert_eq!(s.ledger().balance(globex).unwrap(), account);
        // Unknown partner ids (from another backend) fail the request rather than guess.
        assert_eq!(
            reserve(&mut s, 999, Money(1)),
            Outcome::Failed(ServiceKind::Balance, ServiceFailure::Error)
        );
        assert_eq!(
            auth(&mut s, 999, "", "44"),
            Outcome::Failed(ServiceKind::Auth, ServiceFailure::Error)
        );
        assert_eq!(s.counters().errors, 4);
        assert_eq!(s.counters().balance, 5);
    }

    #[test]
    fn cdrs_in_memory_keep_the_last_ones() {
        let mut files = RtcConfig::default().local;
        files.cdr_memory = 2;
        let mut s = LocalServices::load(&files).unwrap();
        for n in 1..=3 {
            assert_eq!(s.submit(ServiceRequest::WriteCdr(Box::new(cdr(n)))), None);
        }
        let kept: Vec<CallId> = s.recent_cdrs().map(|c| c.uuid).collect();
        assert_eq!(kept, [call(2), call(3)]);
        assert_eq!(s.counters().cdr, 3);
    }

    #[test]
    fn cdrs_to_a_file_are_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = RtcConfig::default().local;
        files.cdr_file = Some(dir.path().join("cdr.jsonl"));
        let mut s = LocalServices::load(&files).unwrap();
        s.submit(ServiceRequest::WriteCdr(Box::new(cdr(1))));
        s.submit(ServiceRequest::WriteCdr(Box::new(cdr(2))));
        assert_eq!(s.recent_cdrs().count(), 0);
        // Dropping the services waits for the writer thread to write what it was handed.
        drop(s);
        let text = std::fs::read_to_string(dir.path().join("cdr.jsonl")).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["uuid"], "00000000-0000-0000-0000-000000000002");
        assert_eq!(lines[0]["hangup_cause"], "NORMAL_CLEARING");
        assert_eq!(lines[0]["cost"], 13_200);
    }

    #[test]
    fn load_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = RtcConfig::default().local;
        files.routes = dir.path().join("missing.csv");
        let e = LocalServices::load(&files).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("{}: cannot read", files.routes.display())),
            "{e}"
        );
        let rates = dir.path().join("rates.csv");
        std::fs::write(
            &rates,
            "partner,prefix,per_minute,increment,minimum\n*,44,0.01,6,6\n# comment\n\n*,45,\"0,12\",6,6\n",
        )
        .unwrap();
        files = RtcConfig::default().local;
        files.rates = rates.clone();
        let e = LocalServices::load(&files).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "{}:5: field per_minute: \"0,12\" is not a decimal amount of at least 0 with at most 6 decimals, such as 0.0125",
                rates.display()
            )
        );
    }

    #[test]
    fn routes_shared_or_built_per_call() {
        let table = RouteTable::from_reader(
            Path::new("r.csv"),
            "prefix,carrier,dial_string,cost_per_minute,priority\n1,a,sofia/gateway/a/${destination},0.01,1\n"
                .as_bytes(),
        )
        .unwrap();
        let r = table.lookup("15551234").unwrap();
        assert_eq!(
            r[0],
            Route {
                carrier: CompactString::from("a"),
                dial_string: CompactString::from("sofia/gateway/a/15551234"),
                cost_per_minute: Money(10_000),
            }
        );
    }

    /// Cost of one call's worth of requests (identify, authenticate, reserve, rate, route, commit) on the
    /// shipped tables.
    #[test]
    #[ignore = "measurement; run in release with --ignored --nocapture"]
    fn local_call_cost() {
        let mut s = shipped();
        s.ledger_mut().set_balance(0, Money(i64::MAX / 2)).unwrap();
        let source: IpAddr = "127.0.0.1".parse().unwrap();
        let destinations = [
            "442071234567",
            "12125550100",
            "4915112345678",
            "33612345678",
        ];
        let calls = 200_000u128;
        let start = std::time::Instant::now();
        for n in 0..calls {
            let id = call(n);
            let destination = CompactString::from(destinations[(n % 4) as usize]);
            s.submit(ServiceRequest::IdentifyPartner {
                call: id,
                source_ip: Some(source),
            });
            s.submit(ServiceRequest::Authenticate {
                call: id,
                partner: 0,
                source_ip: Some(source),
                caller: "1000".into(),
                destination: destination.clone(),
                auth_user: CompactString::default(),
            });
            let Some(ServiceResult {
                outcome: Outcome::BalanceReserved(r),
                ..
            }) = s.submit(ServiceRequest::ReserveBalance {
                call: id,
                partner: 0,
                amount: Money(1_000_000),
            })
            else {
                panic!("not reserved");
            };
            s.submit(ServiceRequest::Rate {
                call: id,
                partner: 0,
                destination: destination.clone(),
            });
            s.submit(ServiceRequest::Route {
                call: id,
                partner: 0,
                destination,
            });
            s.submit(ServiceRequest::CommitBalance {
                call: id,
                partner: 0,
                reservation: r,
                cost: Money(12_000),
            });
        }
        let ns = start.elapsed().as_nanos() as f64 / calls as f64;
        println!("local services: {ns:.0} ns per call (6 requests)");
        assert_eq!(s.counters().errors, 0);
        assert_eq!(s.ledger().open_reservations(), 0);
    }
}
