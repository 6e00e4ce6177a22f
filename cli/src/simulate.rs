//! `rtc-core simulate`: the main job on embedded defaults — simulated FreeSWITCH traffic through the real
//! engine thread and the embedded local backends, then a summary, with the money the run moved through the
//! ledger: a real file (durable, as in production) in a scratch directory removed at the end, or the one
//! `--ledger` names, kept.

use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use rtc_config::RtcConfig;
use rtc_config::local::LedgerPlace;
use rtc_config::services::Backend;
use rtc_engine::sim::{self, SimOptions, SimReport};
use rtc_host::Host;
use rtc_ledger::store::now_us;
use rtc_ledger::{Access, EntryKind, Money, Store};
use serde::Serialize;

use crate::alloc::live_bytes;
use crate::backend::BackendArg;
use crate::simulate_http::{self, OutagePlan};

pub struct Args {
    pub calls: usize,
    pub cps: f64,
    pub config: Option<PathBuf>,
    pub seed: u64,
    pub talk_ms: (u64, u64),
    pub json: bool,
    /// Local backends, or the loopback HTTP services.
    pub backend: BackendArg,
    /// The service outage of an HTTP run.
    pub outage: OutagePlan,
    /// The ledger file to use and keep; `None`: a scratch file, removed at the end.
    pub ledger: Option<PathBuf>,
}

/// The simulation's ledger: where it is, and when the run began, so that the money of this run can be told
/// from what an existing file (`--ledger`) held before.
pub(crate) struct SimLedger {
    /// The file.
    path: PathBuf,
    /// The scratch directory holding it, removed when this is dropped; `None` for the user's file.
    scratch: Option<tempfile::TempDir>,
    /// When the run began (µs since the epoch): its journal entries and CDRs are the ones from then on.
    since_us: i64,
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
    /// Places the run's ledger in `cfg`, whatever the configuration said: the file given, or a new scratch one.
    pub(crate) fn prepare(given: Option<&Path>, cfg: &mut RtcConfig) -> Result<SimLedger, String> {
        let (path, scratch) = match given {
            Some(path) => (path.to_owned(), None),
            None => {
                let dir = tempfile::tempdir().map_err(|e| {
                    format!("cannot create a scratch directory for the ledger: {e}")
                })?;
                (dir.path().join("rtc_core.db"), Some(dir))
            }
        };
        cfg.local.ledger = LedgerPlace::File(path.clone());
        Ok(SimLedger {
            path,
            scratch,
            since_us: now_us(),
        })
    }

    /// Reads what the run moved, once the ledger is closed (or from beside it: reading needs no lock).
    pub(crate) fn money(&self) -> Result<MoneySummary, String> {
        let (store, _) = Store::open(&self.path, Access::Read).map_err(|e| e.to_string())?;
        let failed = |e: &dyn std::fmt::Display| format!("{}: {e}", self.path.display());
        let add = |sum: &mut Money, m: i64| *sum = Money(sum.0.saturating_add(m));
        let mut m = MoneySummary {
            ledger: self
                .scratch
                .is_none()
                .then(|| self.path.display().to_string()),
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
        ..SimOptions::default()
    }
}

pub fn run(args: Args) -> Result<SimReport, String> {
    if args.backend == BackendArg::Http {
        return simulate_http::run(&args, args.outage);
    }
    let mut cfg = match &args.config {
        Some(path) => RtcConfig::load_file(path).map_err(|e| e.to_string())?,
        None => RtcConfig::default(),
    };
    // `--backend local`: every service on the embedded backends, whatever the file says.
    for service in &mut cfg.services {
        service.backend = Backend::Local;
    }
    let ledger = SimLedger::prepare(args.ledger.as_deref(), &mut cfg)?;
    let (switch, commands) = sim::SimSwitch::new();
    let heap_before = live_bytes();
    // Assembled as the module and `rtc-core esl` assemble it: runtime, services, engine thread.
    let host = Host::start(&cfg, Box::new(switch)).map_err(|e| e.to_string())?;
    let bar = progress_bar(args.calls);
    let opts = sim_options(&args);
    let mut peak_heap = 0isize;
    let report = sim::run(host.engine().clone(), commands, opts, |started, ended| {
        bar.set_position(started as u64);
        bar.set_message(format!("{ended} ended"));
        peak_heap = peak_heap.max(live_bytes() - heap_before);
    });
    bar.finish_and_clear();
    let stopped = host.shutdown(Duration::from_secs(5));
    if !stopped.runtime_stopped {
        log::warn!("simulate: the rtc-io runtime did not stop within 5 s");
    }
    let money = ledger.money()?;
    if args.json {
        println!("{}", with_money(&report, &money));
    } else {
        print_summary(&report, peak_heap);
        print_money(&money);
    }
    if report.left_live > 0 || report.ended < report.calls {
        return Err(format!(
            "{} calls still live in the engine and {} calls not ended when the run stopped",
            report.left_live,
            report.calls - report.ended
        ));
    }
    if money.reserved_at_end != Money::ZERO {
        return Err(format!(
            "{} still reserved in the ledger after every call ended",
            money.reserved_at_end
        ));
    }
    money_balances(&money)?;
    Ok(report)
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
