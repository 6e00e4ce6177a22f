//! What both runs of `rtc-core simulate` share — on the local backends ([`crate::simulate`]) and through the
//! HTTP services ([`crate::simulate_http`]): the options, the progress bar, the run's ledger and the money it
//! moved, and the summary.

use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use rtc_config::RtcConfig;
use rtc_config::local::LedgerPlace;
use rtc_engine::service::ServiceKind;
use rtc_engine::sim::{SimOptions, SimReport};
use rtc_ledger::store::now_us;
use rtc_ledger::{Access, EntryKind, Money, Store};
use serde::Serialize;

/// Options of `rtc-core simulate`.
pub struct Args {
    /// Calls to place.
    pub calls: usize,
    /// Arrival rate, calls per second.
    pub cps: f64,
    /// A configuration file; `None`: the built-in defaults with the shipped tables.
    pub config: Option<PathBuf>,
    /// Seed of the traffic mix and talk times, so that a run can be repeated.
    pub seed: u64,
    /// Talk time range, milliseconds.
    pub talk_ms: (u64, u64),
    /// Print the report as one JSON object instead of the summary.
    pub json: bool,
    /// A pumping partner among the traffic, and the fraud rules on.
    pub fraud: bool,
    /// The service outage of an HTTP run.
    pub outage: OutagePlan,
    /// The ledger file (or postgres:// URL) to use and keep; `None`: a scratch file, removed at the end.
    pub ledger: Option<PathBuf>,
    /// This run's node id on a shared ledger.
    pub node_id: Option<String>,
}

/// Which service goes down, when, and for how long.
#[derive(Clone, Copy, Debug)]
pub struct OutagePlan {
    /// The service taken down; `None`: no outage.
    pub service: Option<ServiceKind>,
    /// From the first arrival; default 30 % of the arrival period.
    pub at: Option<Duration>,
    /// How long it stays down; default 40 % of the arrival period.
    pub length: Option<Duration>,
}

/// The simulation's ledger: where it is, and when the run began, so that the money of this run can be told
/// from what an existing file (`--ledger`) held before.
pub(crate) struct SimLedger {
    /// The file, or the shared database.
    place: SimPlace,
    /// When the run began (µs since the epoch): its journal entries and CDRs are the ones from then on.
    since_us: i64,
}

/// Where a simulation keeps its money.
enum SimPlace {
    /// An SQLite file; with the scratch directory holding it (removed when dropped), `None` for the user's file.
    File(PathBuf, Option<tempfile::TempDir>),
    /// The shared ledger on PostgreSQL (`--ledger postgres://…`, or the configuration's): this node's part of it.
    Postgres {
        /// The database.
        url: String,
        /// This run's node id.
        node: String,
    },
}

/// The money a run moved, from the ledger's journal, and whether the journal balances.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct MoneySummary {
    /// The ledger file when it is kept (`--ledger`); `None`: a scratch file, removed.
    pub ledger: Option<String>,
    /// Opening balances imported from balances.csv.
    pub opening_balances: Money,
    /// Money paid in.
    pub topups: Money,
    /// Held for calls: reservations and their extensions.
    pub held: Money,
    /// Charged: the sum of the commits.
    pub charged: Money,
    /// Held money given back at settlement (releases, and what commits did not use).
    pub released: Money,
    /// Still held when the run ended, over the whole ledger (0 once every call is settled).
    pub reserved_at_end: Money,
    /// Journal entries the run wrote.
    pub journal_entries: u64,
    /// CDRs the ledger stored for the run's calls.
    pub cdrs_stored: u64,
    /// `rtc-core ledger check` would pass: SQLite sound, every balance and hold its journal's sum.
    pub journal_balances: bool,
    /// What the check found otherwise.
    pub problems: Vec<String>,
}

impl SimLedger {
    /// Places the run's ledger in `cfg`: the file or database given, else a PostgreSQL ledger the configuration
    /// names, else a new scratch file.
    pub(crate) fn prepare(args: &Args, cfg: &mut RtcConfig) -> Result<SimLedger, String> {
        let given = args.ledger.as_deref();
        if let Some(node) = &args.node_id {
            cfg.local.shared.node_id = Some(node.clone());
        }
        let url = match given.and_then(Path::to_str) {
            Some(text) if text.starts_with("postgres://") || text.starts_with("postgresql://") => {
                Some(text.to_string())
            }
            Some(_) => None,
            None => match &cfg.local.ledger {
                LedgerPlace::Postgres(url) => Some(url.clone()),
                _ => None,
            },
        };
        let place = match (url, given) {
            (Some(url), _) => {
                cfg.local.ledger = LedgerPlace::Postgres(url.clone());
                let node = cfg
                    .local
                    .shared
                    .node_id
                    .clone()
                    .unwrap_or_else(rtc_ledger_pg::host_name);
                SimPlace::Postgres { url, node }
            }
            (None, Some(path)) => {
                cfg.local.ledger = LedgerPlace::File(path.to_owned());
                SimPlace::File(path.to_owned(), None)
            }
            (None, None) => {
                let dir = tempfile::tempdir().map_err(|e| {
                    format!("cannot create a scratch directory for the ledger: {e}")
                })?;
                let path = dir.path().join("rtc_core.db");
                cfg.local.ledger = LedgerPlace::File(path.clone());
                SimPlace::File(path, Some(dir))
            }
        };
        Ok(SimLedger {
            place,
            since_us: now_us(),
        })
    }

    /// Reads what the run moved, once the ledger is closed (or from beside it: reading needs no lock).
    pub(crate) fn money(&self) -> Result<MoneySummary, String> {
        match &self.place {
            SimPlace::File(path, scratch) => {
                self.file_money(path, scratch.is_none().then(|| path.display().to_string()))
            }
            SimPlace::Postgres { url, node } => self.shared_money(url, node),
        }
    }

    /// This node's part of a shared ledger's money, and whether the whole ledger balances.
    fn shared_money(&self, url: &str, node: &str) -> Result<MoneySummary, String> {
        let s = rtc_ledger_pg::node_summary(url, node, self.since_us)?;
        let totals = rtc_ledger_pg::check(url)?;
        Ok(MoneySummary {
            ledger: Some(format!("{} (node {node})", rtc_ledger_pg::redact(url))),
            opening_balances: s.opening_balances,
            topups: s.topups,
            held: s.held,
            charged: s.charged,
            released: s.released,
            reserved_at_end: s.reserved_at_end,
            journal_entries: s.journal_entries,
            cdrs_stored: s.cdrs_stored,
            journal_balances: totals.discrepancies.is_empty() && totals.balances == totals.journal,
            problems: totals.discrepancies,
        })
    }

    /// What the run moved in an SQLite ledger file.
    fn file_money(&self, path: &Path, kept: Option<String>) -> Result<MoneySummary, String> {
        let (store, _) = Store::open(path, Access::Read).map_err(|e| e.to_string())?;
        let failed = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
        let add = |sum: &mut Money, m: i64| *sum = Money(sum.0.saturating_add(m));
        let mut m = MoneySummary {
            ledger: kept,
            opening_balances: Money::ZERO,
            topups: Money::ZERO,
            held: Money::ZERO,
            charged: Money::ZERO,
            released: Money::ZERO,
            reserved_at_end: Money::ZERO,
            journal_entries: 0,
            cdrs_stored: 0,
            journal_balances: false,
            problems: Vec::new(),
        };
        let mut after = 0;
        loop {
            let page = store.journal(after, 10_000).map_err(|e| failed(&e))?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for e in page.iter().filter(|e| e.at_us >= self.since_us) {
                m.journal_entries += 1;
                let (balance, reserved) = (e.balance_delta.0, e.reserved_delta.0);
                match e.kind {
                    EntryKind::Import => add(&mut m.opening_balances, balance),
                    EntryKind::Topup => add(&mut m.topups, balance),
                    EntryKind::Reserve | EntryKind::Extend => add(&mut m.held, reserved),
                    EntryKind::Commit
                    | EntryKind::Release
                    | EntryKind::Expiry
                    | EntryKind::Recovery => {
                        if e.kind == EntryKind::Commit {
                            add(&mut m.charged, -balance);
                        }
                        add(&mut m.released, (-reserved + balance).max(0));
                    }
                    EntryKind::Adjustment => {}
                }
            }
        }
        let accounts = store.accounts().map_err(|e| failed(&e))?;
        m.reserved_at_end = Money(accounts.iter().map(|a| a.reserved.0).sum());
        m.cdrs_stored = store
            .cdrs(self.since_us, i64::MAX, None, |_| Ok(()))
            .map_err(|e| failed(&e))?;
        let check = store.check().map_err(|e| failed(&e))?;
        m.journal_balances = check.ok();
        if check.integrity != ["ok"] {
            m.problems.extend(check.integrity.iter().cloned());
        }
        m.problems.extend(
            check
                .discrepancies
                .iter()
                .map(|d| format!("{}: stored {}, journal {}", d.what, d.stored, d.journal)),
        );
        Ok(m)
    }
}

/// The progress bar of a run of `calls` calls.
pub(crate) fn progress_bar(calls: usize) -> ProgressBar {
    let bar = ProgressBar::new(calls as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} calls started, {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// The simulator's options from the command line.
pub(crate) fn sim_options(args: &Args) -> SimOptions {
    SimOptions {
        calls: args.calls,
        cps: args.cps,
        seed: args.seed,
        talk: (
            Duration::from_millis(args.talk_ms.0),
            Duration::from_millis(args.talk_ms.1.max(args.talk_ms.0)),
        ),
        pumping_percent: if args.fraud { 10 } else { 0 },
        ..SimOptions::default()
    }
}

/// The shipped configuration, for the fraud rules `--fraud` runs when the configuration has none.
const SHIPPED_CONF: &str = include_str!("../../conf/autoload_configs/rtc_core.conf.xml");

/// `--fraud`: the configuration's fraud rules (the shipped set when it has none), enabled.
pub(crate) fn enable_fraud_rules(cfg: &mut RtcConfig) -> Result<(), String> {
    let rules = &cfg.engine.fraud;
    let has_rules = rules.spend_hour.is_some()
        || rules.spend_day.is_some()
        || rules.pumping.is_some()
        || rules.burst.is_some()
        || rules.short_calls.is_some()
        || !rules.classes.is_empty();
    if !has_rules {
        let shipped = RtcConfig::from_xml_str(
            SHIPPED_CONF,
            Path::new("."),
            "the shipped rtc_core.conf.xml",
        )
        .map_err(|e| e.to_string())?;
        cfg.engine.fraud = shipped.engine.fraud;
    }
    cfg.engine.fraud.enabled = true;
    Ok(())
}

/// What `--fraud` found: the engine's fraud report, what became of the pumping partner's calls, and the money the
/// refused and cut calls would have cost had they talked as planned (at their rates in the local rate deck).
#[derive(Clone, Debug, Serialize)]
pub(crate) struct FraudOutcome {
    /// The engine's fraud counters and latest hits.
    pub report: rtc_engine::core::FraudReport,
    /// The pumping partner's calls.
    pub pumping: rtc_engine::sim::PumpingReport,
    /// What the refused and cut calls would have cost.
    pub money_saved: Money,
}

/// The money the stopped talk would have cost the pumping partner, at its rates.
pub(crate) fn money_saved(
    cfg: &RtcConfig,
    pumping: &rtc_engine::sim::PumpingReport,
    source: std::net::IpAddr,
) -> Result<Money, String> {
    use rtc_services::local::{Partners, RateDeck};
    let partners = Partners::load(&cfg.local.partners).map_err(|e| e.to_string())?;
    let rates = RateDeck::load(&cfg.local.rates, &partners).map_err(|e| e.to_string())?;
    let Some(partner) = partners.identify(source) else {
        return Err(format!("no partner owns the pumping address {source}"));
    };
    let mut saved = Money::ZERO;
    for (destination, ms) in &pumping.stopped_talk_ms {
        if let Some(rate) = rates.lookup(partner.id, destination) {
            saved = Money(saved.0 + rate.call_cost(ms.div_ceil(1000)).0);
        }
    }
    Ok(saved)
}

/// The fraud lines of the summary.
pub(crate) fn print_fraud(f: &FraudOutcome) {
    println!();
    println!("{:<28} {:>8}", "fraud rules (enabled)", "hits");
    for (rule, action, n) in f.report.summary.hits.iter().filter(|(_, _, n)| *n > 0) {
        println!("  {:<26} {:>8}", format!("{rule} ({action})"), n);
    }
    let p = &f.pumping;
    let rows = [
        ("pumped calls", p.pumped_calls.to_string()),
        ("  refused before bridging", p.refused.to_string()),
        ("  cut while talking", p.cut.to_string()),
        (
            "partner's ordinary calls",
            format!("{} ({} completed)", p.normal_calls, p.normal_completed),
        ),
        (
            "partners blocked now",
            f.report.summary.blocked_partners.to_string(),
        ),
        (
            "new calls refused (block)",
            f.report.summary.blocked_refusals.to_string(),
        ),
        ("money saved", f.money_saved.to_string()),
    ];
    for (k, v) in rows {
        println!("  {:<26} {:>12}", k, v);
    }
    println!(
        "  (money saved: the talk the refused and cut pumped calls had planned, at their rates)"
    );
}

/// The report as JSON, with the money under `money`.
pub(crate) fn with_money(report: &SimReport, money: &MoneySummary) -> serde_json::Value {
    let mut value = serde_json::to_value(report).unwrap_or_default();
    if let Some(object) = value.as_object_mut() {
        object.insert(
            "money".into(),
            serde_json::to_value(money).unwrap_or_default(),
        );
    }
    value
}

/// An error naming what the check found when the journal does not balance.
pub(crate) fn money_balances(money: &MoneySummary) -> Result<(), String> {
    if money.journal_balances {
        return Ok(());
    }
    Err(format!(
        "the ledger's journal does not balance: {}",
        money.problems.join("; ")
    ))
}

/// The money lines of the summary.
pub(crate) fn print_money(m: &MoneySummary) {
    println!();
    println!(
        "{:<28} {:>18}   (ledger {})",
        "money",
        "amount",
        m.ledger
            .as_deref()
            .unwrap_or("in a scratch file, removed at exit")
    );
    for (k, v) in [
        ("opening balances", m.opening_balances),
        ("top-ups", m.topups),
        ("held (reserve, extend)", m.held),
        ("charged (commits)", m.charged),
        ("released", m.released),
        ("reserved at end", m.reserved_at_end),
    ] {
        println!("  {:<26} {:>18}", k, v.to_string());
    }
    println!("  {:<26} {:>18}", "journal entries", m.journal_entries);
    println!("  {:<26} {:>18}", "CDRs stored", m.cdrs_stored);
    println!(
        "journal balances: {}",
        if m.journal_balances { "yes" } else { "NO" }
    );
    for p in &m.problems {
        println!("  {p}");
    }
}

/// The process's peak resident set size in kB, from `/proc/self/status`.
fn peak_rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The traffic mix, outcomes and measures of a run.
pub(crate) fn print_summary(r: &SimReport, peak_heap: isize) {
    let s = &r.stats;
    println!(
        "rtc-core simulate: {} calls in {:.1} s",
        r.calls, r.elapsed_s
    );
    println!();
    println!("{:<28} {:>8}", "traffic mix", "calls");
    for (scenario, n) in &r.by_scenario {
        let name = serde_json::to_value(scenario)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        println!(
            "  {:<26} {:>8}   (expected {})",
            name,
            n,
            scenario.expected()
        );
    }
    println!();
    println!("{:<28} {:>8}", "final state / reason", "calls");
    println!("  {:<26} {:>8}", "COMPLETED", s.completed);
    println!("  {:<26} {:>8}", "REJECTED", s.rejected);
    println!("  {:<26} {:>8}", "FAILED", s.failed);
    for (reason, n) in s.by_reason.iter().filter(|(_, n)| *n > 0) {
        println!("    {:<24} {:>8}", reason, n);
    }
    println!();
    println!("{:<28} {:>12}", "measure", "value");
    let rows: Vec<(&str, String)> = vec![
        ("events applied", s.events.to_string()),
        ("events/s (offered)", format!("{:.0}", r.events_per_sec)),
        ("events refused (queue)", r.events_refused.to_string()),
        ("duplicate events", s.duplicate_events.to_string()),
        ("late events", s.late_events.to_string()),
        ("after-end events", s.after_end_events.to_string()),
        ("illegal inputs", s.illegal_total().to_string()),
        ("bridges (incl. failover)", r.bridges.to_string()),
        ("decision latency p50", format!("{} µs", r.setup_p50_us)),
        ("decision latency p99", format!("{} µs", r.setup_p99_us)),
        ("decision latency max", format!("{} µs", r.setup_max_us)),
        ("event lag p99", format!("{} µs", s.event_lag_p99_us)),
        ("peak live calls", r.peak_live_calls.to_string()),
        ("calls left live", r.left_live.to_string()),
        ("CDRs written", s.cdrs.to_string()),
        (
            "peak heap",
            format!("{:.1} MB", peak_heap.max(0) as f64 / 1e6),
        ),
        (
            "peak RSS",
            peak_rss_kb().map_or("?".into(), |kb| format!("{:.1} MB", kb as f64 / 1024.0)),
        ),
    ];
    for (k, v) in rows {
        println!("  {:<26} {:>12}", k, v);
    }
}
