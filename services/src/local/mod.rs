//! The embedded (local) business backends: partners, authentication, balances, rating, routing and CDRs
//! answered in-process from tables loaded at start, with money and CDRs in the durable ledger.
//!
//! # Layout
//! - [`table`]: the CSV-like file format shared by the tables, and [`LocalError`] (`file:line: field ...`).
//! - [`prefix`]: longest-prefix lookup over destination digits.
//! - [`partners`], [`rates`], [`routes`], [`balances`]: one table each (`balances.csv` holds opening balances,
//!   imported into the ledger).
//! - [`ledger`]: balance requests and CDRs carried out by the ledger on its writer thread, answered later.
//! - [`LocalServices`]: all of them behind [`ServiceSink`]: partners, authentication, rating and routing answered
//!   at once on the caller's thread; balances answered once the ledger made them durable.

pub mod balances;
pub mod ledger;
pub mod partners;
pub mod prefix;
pub mod rates;
pub mod routes;
pub mod table;

use std::any::Any;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

pub use balances::{Opening, OpeningBalances};
pub use ledger::LedgerBackend;
pub use partners::{AuthDenial, Partner, Partners};
pub use rates::RateDeck;
pub use routes::RouteTable;
pub use table::{LineProblem, LocalError};

use rtc_audit::NumberPolicy;
use rtc_ledger::{Answer, CdrRecord, LedgerHandle, Op};

use crate::services_settings;
use crate::stats::ResponseTimes;
use rtc_config::local::LocalFiles;
use rtc_config::services::Backend;
use rtc_engine::domain::{Cdr, PartnerId};
use rtc_engine::service::{
    Outcome, ResultSink, ServiceFailure, ServiceKind, ServiceRequest, ServiceResult, ServiceSink,
};

/// The local CDR export: JSON lines appended to `cdr-file` by a writer thread of its own (`rtc-cdr`), so that a
/// slow disk never stalls the engine thread; flushed whenever it has written all it was given. Dropping it hands
/// over what is queued and waits for the writer to finish it. (The CDRs of record are in the ledger.) Callers' and
/// callees' numbers are written under the configuration's `numbers` policy (in the clear, masked or encrypted).
#[derive(Debug)]
pub struct CdrFile {
    /// The file, for messages.
    path: PathBuf,
    /// How the numbers are written (in the file, and in the log when they cannot be).
    numbers: NumberPolicy,
    /// Records for the writer; closed (dropped) to stop it.
    tx: Option<crossbeam_channel::Sender<CdrRecord>>,
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
fn write_cdrs(
    path: &Path,
    file: File,
    rx: &crossbeam_channel::Receiver<CdrRecord>,
    numbers: &NumberPolicy,
) {
    let mut out = BufWriter::new(file);
    let mut failing = false;
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter().take(1023));
        let mut lines = Vec::with_capacity(batch.len() * 400);
        for cdr in &mut batch {
            export_numbers(cdr, numbers);
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

/// A CDR's numbers as `numbers` writes them.
fn export_numbers(cdr: &mut CdrRecord, numbers: &NumberPolicy) {
    if *numbers != NumberPolicy::Plain {
        cdr.caller = numbers.apply(&cdr.caller);
        cdr.destination = numbers.apply(&cdr.destination);
    }
}

impl CdrFile {
    /// Appends CDRs to `path` (created when missing), from a writer thread, their numbers written under
    /// `numbers`.
    pub fn open(path: &Path, numbers: NumberPolicy) -> Result<CdrFile, LocalError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| LocalError::Read {
                file: path.to_owned(),
                source,
            })?;
        let (tx, rx) = crossbeam_channel::unbounded::<CdrRecord>();
        let writer_path = path.to_owned();
        let writer_numbers = numbers.clone();
        let writer = std::thread::Builder::new()
            .name(CDR_THREAD.into())
            .spawn(move || write_cdrs(&writer_path, file, &rx, &writer_numbers))
            .map_err(|source| LocalError::Read {
                file: path.to_owned(),
                source,
            })?;
        Ok(CdrFile {
            path: path.to_owned(),
            numbers,
            tx: Some(tx),
            writer: Some(writer),
        })
    }

    fn write(&self, cdr: CdrRecord) -> Result<(), String> {
        match &self.tx {
            Some(tx) => tx.send(cdr).map_err(|e| {
                let mut cdr = e.0;
                export_numbers(&mut cdr, &self.numbers);
                let line = serde_json::to_string(&cdr).unwrap_or_default();
                format!(
                    "{}: the CDR writer is gone; the record: {line}",
                    self.path.display()
                )
            }),
            None => Err(format!("{}: the CDR export is closed", self.path.display())),
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
    /// Balance requests: reserve, extend, commit and release.
    pub balance: u64,
    /// Rate requests.
    pub rating: u64,
    /// Route requests.
    pub routing: u64,
    /// CDRs written.
    pub cdr: u64,
    /// Requests that failed (unknown partner id, a settlement or CDR the ledger refused); each is logged.
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

/// What importing `balances.csv` into the ledger did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ImportReport {
    /// Partners whose opening balance was imported (their accounts had never moved money).
    pub imported: Vec<String>,
    /// Partners whose row was skipped: their accounts already moved money (the ledger's balance stands).
    pub skipped: Vec<String>,
}

/// How long a load or reload waits for the ledger to open accounts and import opening balances.
const SETUP_WAIT: Duration = Duration::from_secs(30);

/// Every business service answered from local tables and the ledger: partners, authentication, balances,
/// rating, routing and CDRs.
pub struct LocalServices {
    /// Partners and their networks; shared so a reload can swap tables without copying.
    partners: Arc<Partners>,
    /// Rate decks.
    rates: Arc<RateDeck>,
    /// Route lists.
    routes: Arc<RouteTable>,
    /// Balances, reservations and CDRs, in the ledger.
    money: LedgerBackend,
    /// The `cdr-file` export, when configured.
    cdr_file: Option<CdrFile>,
    /// Requests so far (errors and overruns are counted by `money`, on the ledger's thread).
    counters: LocalCounters,
    /// CDRs of calls the ledger settled at open (left by a process that died), for the exports.
    recovered: Vec<Cdr>,
}

impl std::fmt::Debug for LocalServices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalServices")
            .field("money", &self.money)
            .finish_non_exhaustive()
    }
}

impl LocalServices {
    /// Loads every table named by the configuration's `<local>` section, opens the ledger where it says (the
    /// host's default place is memory here: hosts resolve it first, see [`LocalServices::load_at`]), opens an
    /// account for every partner and imports the opening balances of those that never moved money.
    pub fn load(files: &LocalFiles) -> Result<LocalServices, LocalError> {
        LocalServices::load_at(files, ledger::location(&files.ledger, &files.shared, None))
    }

    /// [`LocalServices::load`], with the ledger at `place` (an embedded [`Location`] or the shared ledger).
    pub fn load_at(
        files: &LocalFiles,
        place: impl Into<ledger::Place>,
    ) -> Result<LocalServices, LocalError> {
        let partners = Partners::load(&files.partners)?;
        let rates = RateDeck::load(&files.rates, &partners)?;
        let routes = RouteTable::load(&files.routes)?;
        let opening = OpeningBalances::load(&files.balances, &partners)?;
        let cdr_file = match &files.cdr_file {
            Some(path) => Some(CdrFile::open(
                path,
                crate::number_policy(&files.cdr_numbers),
            )?),
            None => None,
        };
        let mut money = LedgerBackend::open(place.into()).map_err(LocalError::Ledger)?;
        money.set_global_limits(&files.shared);
        let recovered = money
            .ledger()
            .recovered()
            .iter()
            .filter_map(|r| r.cdr.as_ref().and_then(ledger::cdr_of))
            .collect();
        let services = LocalServices {
            partners: Arc::new(partners),
            rates: Arc::new(rates),
            routes: Arc::new(routes),
            money,
            cdr_file,
            counters: LocalCounters::default(),
            recovered,
        };
        let report = services.open_accounts(&opening)?;
        log_import(services.money.ledger().path(), &opening, &report);
        Ok(services)
    }

    /// Opens (or updates the credit limit of) every partner's account, and imports the opening balance of each
    /// whose account never moved money. Waits for the ledger (at load and reload, never per call).
    fn open_accounts(&self, opening: &OpeningBalances) -> Result<ImportReport, LocalError> {
        let ledger = self.money.ledger();
        let fail = |e: rtc_ledger::LedgerError| LocalError::LedgerRequest {
            ledger: ledger.path().to_string(),
            problem: e.to_string(),
        };
        // One transaction for every partner: a table of thousands opens in one commit.
        let ops = self
            .partners
            .iter()
            .map(|p| Op::OpenAccount {
                name: p.name.to_string(),
                credit_limit: p.credit_limit,
            })
            .collect();
        for answer in ledger.call_all(ops, "engine", SETUP_WAIT).map_err(fail)? {
            answer.map_err(fail)?;
        }
        import_as(&ledger.handle(), opening, "engine").map_err(fail)
    }

    /// The partners table.
    pub fn partners(&self) -> &Partners {
        &self.partners
    }

    /// The rate deck.
    pub fn rates(&self) -> &RateDeck {
        &self.rates
    }

    /// The routes table.
    pub fn routes(&self) -> &RouteTable {
        &self.routes
    }

    /// The ledger: balances, top-ups, CDRs.
    pub fn ledger(&self) -> &rtc_ledger::Ledger {
        self.money.ledger()
    }

    /// A handle to the ledger for other threads (operators' commands).
    pub fn ledger_handle(&self) -> LedgerHandle {
        self.money.handle()
    }

    /// The CDRs of calls the ledger settled when it opened (left open by a process that died).
    pub fn recovered_cdrs(&self) -> &[Cdr] {
        &self.recovered
    }

    /// How long the local services took to answer, shared with the ledger's thread (which answers reservations and
    /// debits); for `rtc_core metrics`.
    pub fn response_times(&self) -> Arc<ResponseTimes> {
        self.money.response_times().clone()
    }

    /// Sends the ledger's answers to `sink` instead of an engine (tests, a host without an engine).
    pub fn answer_to(&self, sink: Arc<dyn ResultSink>) {
        self.money.answer_to(sink);
    }

    /// The balance service's timeout (how long a reservation may wait for the ledger writer).
    pub fn set_balance_timeout(&mut self, timeout: Duration) {
        self.money.set_bound(timeout);
    }

    /// Re-reads the tables named by `files` and swaps them in, all or nothing.
    ///
    /// Partners may be added, removed and reordered: live calls hold partner ids, and a partner keeps its id
    /// by name for as long as the module runs (also when removed and added back). A call in setup whose partner
    /// was removed fails at its next step with the partner's id named; settlements of removed partners still
    /// reach their account. Rates and routes are replaced whole. Money is the ledger's: a new partner gets an
    /// account, with its `balances.csv` opening balance if it has a row; a known partner's balance is never
    /// touched by a reload (top-ups go through `rtc_core topup`). The CDR export is kept.
    pub fn reload(&mut self, files: &LocalFiles) -> Result<String, LocalError> {
        self.money.set_global_limits(&files.shared);
        let partners = Partners::load_after(&files.partners, &self.partners)?;
        let rates = RateDeck::load(&files.rates, &partners)?;
        let routes = RouteTable::load(&files.routes)?;
        let opening = OpeningBalances::load(&files.balances, &partners)?;
        let added = partners
            .iter()
            .filter(|p| self.partners.by_name(&p.name).is_none())
            .count();
        let removed = self
            .partners
            .iter()
            .filter(|p| partners.by_name(&p.name).is_none())
            .count();
        let previous = std::mem::replace(&mut self.partners, Arc::new(partners));
        let report = match self.open_accounts(&opening) {
            Ok(r) => r,
            Err(e) => {
                self.partners = previous;
                return Err(e);
            }
        };
        let summary = format!(
            "local tables reloaded: {} partners ({added} new, {removed} removed), {} rate prefixes, {} route \
             prefixes; {} opening balance(s) imported",
            self.partners.len(),
            rates.len(),
            routes.len(),
            report.imported.len()
        );
        self.rates = Arc::new(rates);
        self.routes = Arc::new(routes);
        Ok(summary)
    }

    /// Requests and errors so far, per service.
    pub fn counters(&self) -> LocalCounters {
        let mut c = self.counters;
        let money = self.money.counters();
        c.errors += money.errors.load(Ordering::Relaxed);
        c.overruns += money.overruns.load(Ordering::Relaxed);
        c
    }

    fn partner_name(&self, id: PartnerId) -> Option<&str> {
        self.partners.get(id).map(|p| p.name.as_str())
    }

    fn export(&self, record: &CdrRecord) {
        if let Some(file) = &self.cdr_file
            && let Err(e) = file.write(record.clone())
        {
            log::warn!("call {}: CDR not exported: {e}", record.uuid);
        }
    }
}

/// Imports the opening balances of accounts that never moved money; the others are skipped (live balances are
/// never overwritten). Opens the accounts it imports into. One transaction.
pub fn import_into(
    ledger: &LedgerHandle,
    opening: &OpeningBalances,
) -> Result<ImportReport, rtc_ledger::LedgerError> {
    import_as(ledger, opening, "engine")
}

/// [`import_into`], with `actor` (`engine`, `cli`) written in the journal.
pub fn import_as(
    ledger: &LedgerHandle,
    opening: &OpeningBalances,
    actor: &'static str,
) -> Result<ImportReport, rtc_ledger::LedgerError> {
    let ops = opening
        .rows
        .iter()
        .map(|row| Op::Import {
            name: row.name.to_string(),
            amount: row.balance,
            reference: opening.reference(row),
        })
        .collect();
    let mut report = ImportReport::default();
    for (row, answer) in opening
        .rows
        .iter()
        .zip(ledger.call_all(ops, actor, SETUP_WAIT)?)
    {
        match answer? {
            Answer::Imported(true) => report.imported.push(row.name.to_string()),
            _ => report.skipped.push(row.name.to_string()),
        }
    }
    Ok(report)
}

fn log_import(ledger: &str, opening: &OpeningBalances, report: &ImportReport) {
    if !report.imported.is_empty() {
        log::info!(
            "ledger {ledger}: opening balances of {} partner(s) imported from {}: {}",
            report.imported.len(),
            opening.file.display(),
            report.imported.join(", ")
        );
    }
    if !report.skipped.is_empty() {
        log::debug!(
            "ledger {ledger}: {} row(s) of {} not imported: those accounts already moved money (their ledger \
             balance stands; use `rtc_core topup`)",
            report.skipped.len(),
            opening.file.display()
        );
    }
}

/// Counts and logs a request that could not be answered, and says so to the engine.
fn failed(
    counters: &mut LocalCounters,
    call: rtc_engine::id::CallId,
    kind: ServiceKind,
    what: std::fmt::Arguments,
) -> Outcome {
    counters.errors += 1;
    log::warn!("call {call}: local {} service: {what}", kind.name());
    Outcome::Failed(kind, ServiceFailure::Error)
}

impl ServiceSink for LocalServices {
    fn attach(&mut self, engine: Arc<dyn ResultSink>) {
        self.money.answer_to(engine);
    }

    fn reload(&mut self, settings: &dyn Any) -> Result<String, String> {
        let config = services_settings(settings, "the local backends")?;
        LocalServices::reload(self, &config.local).map_err(|e| e.to_string())
    }

    fn finish(&mut self, settlement: Option<ServiceRequest>, cdr: Box<Cdr>) {
        let started = Instant::now();
        self.settle_and_store(settlement, cdr);
        let times = self.money.response_times();
        times.record(ServiceKind::Cdr, Backend::Local, started.elapsed());
    }

    /// Times the request: at once when answered here (or handed to the ledger to settle or store); reservations and
    /// debits until the ledger answers (see [`ledger::LedgerBackend`]).
    fn submit(&mut self, request: ServiceRequest) -> Option<ServiceResult> {
        let kind = request.kind();
        let answered_later = matches!(
            request,
            ServiceRequest::ReserveBalance { .. } | ServiceRequest::ExtendBalance { .. }
        );
        let started = Instant::now();
        let result = self.carry_out(request);
        if result.is_some() || !answered_later {
            let times = self.money.response_times();
            times.record(kind, Backend::Local, started.elapsed());
        }
        result
    }
}

impl LocalServices {
    /// A call's settlement and CDR, in one ledger transaction when both are local.
    fn settle_and_store(&mut self, settlement: Option<ServiceRequest>, cdr: Box<Cdr>) {
        self.counters.count(ServiceKind::Cdr);
        let record = ledger::record_of(&cdr);
        self.export(&record);
        match settlement {
            Some(ServiceRequest::CommitBalance {
                call,
                partner,
                reservation,
                cost,
            }) => {
                self.counters.count(ServiceKind::Balance);
                let account = self.partner_name(partner).map(str::to_string);
                self.money.settle(
                    call,
                    account.as_deref(),
                    reservation,
                    Some(cost),
                    Some(record),
                );
            }
            Some(ServiceRequest::ReleaseBalance {
                call,
                partner,
                reservation,
            }) => {
                self.counters.count(ServiceKind::Balance);
                let account = self.partner_name(partner).map(str::to_string);
                self.money
                    .settle(call, account.as_deref(), reservation, None, Some(record));
            }
            Some(other) => {
                self.submit(other);
                self.money.store_cdr(record);
            }
            None => self.money.store_cdr(record),
        }
    }

    /// One request: answered at once, or handed to the ledger (whose answer goes to the engine).
    fn carry_out(&mut self, request: ServiceRequest) -> Option<ServiceResult> {
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
                partner,
                amount,
                context,
                ttl,
                ..
            } => match self.partners.get(partner) {
                Some(p) => {
                    self.money.reserve(
                        call,
                        &p.name,
                        amount,
                        &context,
                        ttl,
                        rtc_ledger::CallLimits {
                            max_concurrent: p.max_concurrent,
                            max_cps: p.max_cps,
                            ..rtc_ledger::CallLimits::default()
                        },
                    );
                    return None;
                }
                None => failed(
                    &mut self.counters,
                    call,
                    kind,
                    format_args!(
                        "reserve {amount}: partner id {partner} is not in {}",
                        self.partners.file().display()
                    ),
                ),
            },
            ServiceRequest::ExtendBalance {
                reservation,
                debit,
                unit,
                context,
                ttl,
                ..
            } => {
                self.money
                    .extend(call, reservation, debit, unit, &context, ttl);
                return None;
            }
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
                let account = self.partner_name(partner).map(str::to_string);
                self.money
                    .settle(call, account.as_deref(), reservation, Some(cost), None);
                return None;
            }
            ServiceRequest::ReleaseBalance {
                partner,
                reservation,
                ..
            } => {
                let account = self.partner_name(partner).map(str::to_string);
                self.money
                    .settle(call, account.as_deref(), reservation, None, None);
                return None;
            }
            ServiceRequest::WriteCdr(cdr) => {
                let record = ledger::record_of(&cdr);
                self.export(&record);
                self.money.store_cdr(record);
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
    use rtc_config::RtcConfig;
    use rtc_engine::cause::HangupCause;
    use rtc_engine::domain::{Money, Route};
    use rtc_engine::id::CallId;
    use rtc_engine::service::CallContext;

    /// The local services with the ledger's answers coming back here instead of to an engine.
    struct Local {
        services: LocalServices,
        answers: crossbeam_channel::Receiver<ServiceResult>,
    }

    impl std::ops::Deref for Local {
        type Target = LocalServices;
        fn deref(&self) -> &LocalServices {
            &self.services
        }
    }

    impl std::ops::DerefMut for Local {
        fn deref_mut(&mut self) -> &mut LocalServices {
            &mut self.services
        }
    }

    fn local(services: LocalServices) -> Local {
        let (tx, answers) = crossbeam_channel::unbounded();
        services.answer_to(Arc::new(tx));
        Local { services, answers }
    }

    fn shipped() -> Local {
        local(LocalServices::load(&RtcConfig::default().local).unwrap())
    }

    fn call(n: u128) -> CallId {
        CallId::from_u128(n)
    }

    /// Submits a request and returns its answer, at once or from the ledger.
    fn ask(s: &mut Local, request: ServiceRequest) -> Outcome {
        let id = request.call();
        let result = match s.services.submit(request) {
            Some(r) => r,
            None => s
                .answers
                .recv_timeout(std::time::Duration::from_secs(10))
                .expect("the ledger answers"),
        };
        assert_eq!(result.call, id);
        result.outcome
    }

    fn account(s: &Local, name: &str) -> rtc_ledger::AccountStatus {
        match s
            .ledger()
            .call(
                Op::Account(rtc_ledger::AccountRef::Name(name.into())),
                "test",
                std::time::Duration::from_secs(10),
            )
            .unwrap()
        {
            Answer::Account(a) => a,
            other => panic!("{other:?}"),
        }
    }

    /// Waits until the ledger has applied everything submitted so far.
    fn flush(s: &Local) {
        s.ledger()
            .call(Op::Accounts, "test", std::time::Duration::from_secs(10))
            .unwrap();
    }

    fn identify(s: &mut Local, ip: &str) -> Option<(PartnerId, String)> {
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

    fn auth(s: &mut Local, partner: PartnerId, user: &str, destination: &str) -> Outcome {
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

    fn reserve(s: &mut Local, partner: PartnerId, amount: Money) -> Outcome {
        ask(
            s,
            ServiceRequest::ReserveBalance {
                call: call(3),
                partner,
                amount,
                context: Box::new(CallContext::default()),
                ttl: std::time::Duration::from_secs(3600),
            },
        )
    }

    fn routes(s: &mut Local, destination: &str) -> Option<Routes> {
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
        s: &mut Local,
        partner: PartnerId,
        destination: &str,
    ) -> Option<rtc_engine::domain::Rate> {
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

    use rtc_engine::domain::Routes;

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
            Outcome::BalanceReserved { .. }
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
        let Outcome::BalanceReserved {
            reservation: r,
            available,
        } = reserve(&mut s, globex, Money(5_000_000))
        else {
            panic!("not reserved");
        };
        assert_eq!(available, Some(Money(145_000_000)));
        assert_eq!(account(&s, "globex").reserved, Money(5_000_000));
        let commit = ServiceRequest::CommitBalance {
            call: call(9),
            partner: globex,
            reservation: r,
            cost: Money(6_000_000),
        };
        assert_eq!(s.submit(commit.clone()), None);
        flush(&s);
        let after = account(&s, "globex");
        assert_eq!(after.balance, Money(144_000_000));
        assert_eq!(after.reserved, Money::ZERO);
        assert_eq!(s.counters().overruns, 1);
        // Settling again: refused by the ledger, logged and counted, nothing changes.
        assert_eq!(s.submit(commit), None);
        let release = ServiceRequest::ReleaseBalance {
            call: call(9),
            partner: globex,
            reservation: r,
        };
        assert_eq!(s.submit(release), None);
        flush(&s);
        assert_eq!(s.counters().errors, 2);
        assert_eq!(account(&s, "globex"), after);
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
    fn an_extension_debits_within_the_hold_then_from_the_balance() {
        let mut s = shipped();
        let partner = s.partners().by_name("lab_auth").unwrap().id;
        let Outcome::BalanceReserved { reservation, .. } =
            reserve(&mut s, partner, Money(1_000_000))
        else {
            panic!("not reserved");
        };
        let extend = |s: &mut Local, debit: i64, unit: i64| {
            ask(
                s,
                ServiceRequest::ExtendBalance {
                    call: call(3),
                    partner,
                    reservation,
                    debit: Money(debit),
                    unit: Money(unit),
                    paid_s: 0,
                    context: Box::new(CallContext::default()),
                    ttl: std::time::Duration::from_secs(120),
                },
            )
        };
        // lab_auth has 500.00: 400 are granted whole, then what is left in whole units of 30.
        assert_eq!(
            extend(&mut s, 400_000_000, 0),
            Outcome::BalanceExtended {
                granted: Money(400_000_000),
                available: Some(Money(100_000_000))
            }
        );
        assert_eq!(
            extend(&mut s, 200_000_000, 30_000_000),
            Outcome::BalanceExtended {
                granted: Money(90_000_000),
                available: Some(Money(10_000_000))
            }
        );
        assert_eq!(extend(&mut s, 200_000_000, 0), Outcome::BalanceInsufficient);
        assert_eq!(account(&s, "lab_auth").reserved, Money(490_000_000));
    }

    #[test]
    fn a_calls_settlement_and_cdr_are_stored_together() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rtc_core.db");
        let mut files = RtcConfig::default().local;
        files.cdr_file = Some(dir.path().join("cdr.jsonl"));
        let mut s = local(
            LocalServices::load_at(&files, rtc_ledger::Location::File(path.clone())).unwrap(),
        );
        let Outcome::BalanceReserved { reservation, .. } = reserve(&mut s, 0, Money(1_000_000))
        else {
            panic!("not reserved");
        };
        s.finish(
            Some(ServiceRequest::CommitBalance {
                call: call(1),
                partner: 0,
                reservation,
                cost: Money(13_200),
            }),
            Box::new(cdr(1)),
        );
        s.finish(None, Box::new(cdr(2)));
        s.submit(ServiceRequest::WriteCdr(Box::new(cdr(2))));
        assert_eq!(s.counters().cdr, 3);
        // Closing the ledger applies what was queued.
        drop(s);
        let (store, _) = rtc_ledger::Store::open(&path, rtc_ledger::Access::Read).unwrap();
        let report = store.check().unwrap();
        assert!(report.ok(), "{report:?}");
        assert_eq!(report.cdrs, 2, "a second CDR for the same call is ignored");
        let stored = store.cdr(&call(1).to_string()).unwrap().unwrap();
        assert_eq!(stored, ledger::record_of(&cdr(1)));
        let lab = store
            .accounts()
            .unwrap()
            .into_iter()
            .find(|a| a.name == "lab")
            .unwrap();
        assert_eq!(lab.balance, Money(1_000_000_000_000 - 13_200));
        // The export has every CDR handed over, the repeated one included.
        let text = std::fs::read_to_string(dir.path().join("cdr.jsonl")).unwrap();
        assert_eq!(text.lines().count(), 3);
    }

    #[test]
    fn the_export_writes_numbers_as_configured_and_the_ledger_keeps_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rtc_core.db");
        let key = [9u8; 32];
        for (numbers, name) in [
            (rtc_config::audit::Numbers::Mask, "masked.jsonl"),
            (rtc_config::audit::Numbers::Encrypt(key), "encrypted.jsonl"),
        ] {
            let mut files = RtcConfig::default().local;
            files.cdr_file = Some(dir.path().join(name));
            files.cdr_numbers = numbers;
            let mut s = local(
                LocalServices::load_at(&files, rtc_ledger::Location::File(path.clone())).unwrap(),
            );
            s.submit(ServiceRequest::WriteCdr(Box::new(cdr(1))));
            drop(s);
            let text = std::fs::read_to_string(dir.path().join(name)).unwrap();
            assert!(!text.contains("442071234567"), "{text}");
            let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
            let destination = line["destination"].as_str().unwrap();
            match name {
                "masked.jsonl" => {
                    assert_eq!(
                        (line["caller"].as_str(), destination),
                        (Some("****"), "4420******67")
                    )
                }
                _ => assert_eq!(
                    rtc_audit::NumberKey::from_bytes(key).decrypt(destination),
                    Ok("442071234567".to_owned())
                ),
            }
        }
        let (store, _) = rtc_ledger::Store::open(&path, rtc_ledger::Access::Read).unwrap();
        let stored = store.cdr(&call(1).to_string()).unwrap().unwrap();
        assert_eq!(
            stored.destination, "442071234567",
            "the ledger keeps them for billing"
        );
    }

    #[test]
    fn reload_reads_the_services_settings_and_refuses_anything_else() {
        let mut s = shipped();
        let summary = ServiceSink::reload(&mut s.services, &RtcConfig::default().services_config())
            .expect("the shipped tables reload");
        assert!(summary.starts_with("local tables reloaded"), "{summary}");
        let e = ServiceSink::reload(&mut s.services, &RtcConfig::default()).unwrap_err();
        assert!(
            e.contains("the local backends") && e.contains("nothing changed"),
            "{e}"
        );
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

    /// Cost of one call's worth of requests (identify, authenticate, rate, route answered at once; reserve and
    /// commit with its CDR through an in-memory ledger) on the shipped tables.
    #[test]
    #[ignore = "measurement; run in release with --ignored --nocapture"]
    fn local_call_cost() {
        let mut s = shipped();
        let source: IpAddr = "127.0.0.1".parse().unwrap();
        let destinations = [
            "442071234567",
            "12125550100",
            "4915112345678",
            "33612345678",
        ];
        let calls = 50_000u128;
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
        }
        let at_once_ns = start.elapsed().as_nanos() as f64 / calls as f64;
        let start = std::time::Instant::now();
        for n in 0..calls {
            let Outcome::BalanceReserved { reservation, .. } = ask(
                &mut s,
                ServiceRequest::ReserveBalance {
                    call: call(n),
                    partner: 0,
                    amount: Money(1_000_000),
                    context: Box::default(),
                    ttl: std::time::Duration::from_secs(60),
                },
            ) else {
                panic!("not reserved");
            };
            s.finish(
                Some(ServiceRequest::CommitBalance {
                    call: call(n),
                    partner: 0,
                    reservation,
                    cost: Money(12_000),
                }),
                Box::new(cdr(n)),
            );
        }
        flush(&s);
        let ledger_ns = start.elapsed().as_nanos() as f64 / calls as f64;
        println!(
            "local services: {at_once_ns:.0} ns per call answered at once (4 requests); in-memory ledger: \
             {ledger_ns:.0} ns per reservation round trip and commit with its CDR"
        );
        assert_eq!(s.counters().errors, 0);
    }
}
