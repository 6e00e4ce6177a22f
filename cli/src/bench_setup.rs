//! `rtc-core bench setup`: call setup latency through the real engine and business services — from
//! CHANNEL_CREATE submitted to the engine's first call command (the decision's `rtc_*` variables) — at a
//! fixed rate of new calls, with the local backends or over loopback HTTP.
//!
//! Calls arrive open-loop (on schedule, whether or not earlier ones were decided). Each call comes from the
//! sample partner `lab` to a routed destination; once decided, the caller hangs up, so that its reservation
//! is released and its CDR written through the same services, as the settlement load of real traffic.
//!
//! The balance service's ledger is a file in a scratch directory (durable: a reservation is answered once its
//! batch is fsynced), in memory, or both one after the other in the same run (the default), so that the cost of
//! durability shows as the difference of the two runs' latencies (`p99_delta_us`).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::ValueEnum;
use crossbeam_channel::{Receiver, Sender};
use rtc_config::local::LedgerPlace;
use rtc_engine::HangupCause;
use rtc_engine::control::{CallCommand, CallControl};
use rtc_engine::core::epoch_us;
use rtc_engine::engine::{EngineHandle, Query, QueryReply};
use rtc_engine::event::{CallEvent, EventKind};
use rtc_engine::id::CallId;
use rtc_engine::service::ServiceKind;
use rtc_host::{Host, HostOptions};
use rtc_services::stats::Event;
use serde_json::json;

use crate::backend::{BackendArg, HttpRig, load_config};

/// Options of `bench setup`.
pub struct SetupBench {
    /// Local backends or loopback HTTP.
    pub backend: BackendArg,
    /// Calls measured.
    pub calls: usize,
    /// New calls per second.
    pub cps: f64,
    /// rtc_core.conf.xml to use (default: the built-in defaults over conf/).
    pub config: Option<PathBuf>,
    /// Which ledger the balance service keeps money in: a file, memory, or one run of each.
    pub ledger: LedgerChoice,
}

/// `bench setup --ledger`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LedgerChoice {
    /// A ledger file in a scratch directory: reservations answered once on disk.
    Durable,
    /// An in-memory ledger: the same SQL, no disk.
    Memory,
    /// The in-memory run, then the durable one, in the same process.
    Both,
}

/// The ledger of one run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LedgerRun {
    Durable,
    Memory,
}

impl LedgerRun {
    fn name(self) -> &'static str {
        match self {
            LedgerRun::Durable => "durable",
            LedgerRun::Memory => "memory",
        }
    }
}

/// Calls placed before the measured ones: connections opened, caches and pools warm.
const WARMUP_CALLS: usize = 200;

/// The engine's first command for a call, timed as it was issued on the engine thread.
struct Decided {
    call: CallId,
    at: Instant,
    refused: bool,
}

/// Call control that reports each call's first command (later ones are of no interest here).
struct TimedControl {
    tx: Sender<Decided>,
}

impl CallControl for TimedControl {
    fn execute(&mut self, command: CallCommand) {
        let at = Instant::now();
        if let CallCommand::SetVariables { call, vars } = &command {
            let refused = vars.iter().any(|v| v.name == "rtc_reject_reason");
            let _ = self.tx.send(Decided {
                call: *call,
                at,
                refused,
            });
        }
    }
}

fn call_id(n: usize) -> CallId {
    CallId::from_u128(0x5e70_0000_0000_0000_0000_0000_0000_0000 | n as u128)
}

fn number(id: CallId) -> Option<usize> {
    let n = u128::from_be_bytes(*id.as_bytes()) & 0xffff_ffff_ffff;
    usize::try_from(n).ok()
}

fn event(n: usize, kind: EventKind, seq: u64) -> CallEvent {
    let mut ev = CallEvent::new(call_id(n), kind, seq);
    ev.source_ip = Some(IpAddr::from([127, 0, 0, 1]));
    ev.caller = "441632960001".into();
    ev.destination = format!("4420{:08}", n % 100_000_000).into();
    ev.timestamp_us = epoch_us();
    ev
}

/// Hangs up decided calls and records their latency; runs until every call was decided or `deadline`.
fn collect(
    decided: Receiver<Decided>,
    engine: EngineHandle,
    created: Arc<Vec<AtomicU64>>,
    base: Instant,
    total: usize,
    deadline: Arc<AtomicU64>,
) -> (hdrhistogram::Histogram<u64>, u64, usize) {
    let mut hist = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
        .expect("constant histogram bounds are valid");
    let mut refused = 0u64;
    let mut seen = 0usize;
    let mut seq = 1_000_000u64;
    while seen < total {
        let limit = deadline.load(Ordering::Relaxed);
        if limit != 0 && base.elapsed().as_micros() as u64 > limit {
            break;
        }
        let Ok(d) = decided.recv_timeout(Duration::from_millis(50)) else {
            continue;
        };
        let Some(n) = number(d.call).filter(|n| *n < total) else {
            continue;
        };
        seen += 1;
        let created_ns = created[n].load(Ordering::Acquire);
        let at_ns = d.at.duration_since(base).as_nanos() as u64;
        if n >= WARMUP_CALLS.min(total / 2) {
            hist.saturating_record((at_ns.saturating_sub(created_ns) / 1000).max(1));
        }
        if d.refused {
            refused += 1;
            continue;
        }
        // The caller hangs up once the call is decided: release and CDR follow.
        for kind in [
            EventKind::ChannelHangup,
            EventKind::ChannelHangupComplete,
            EventKind::ChannelDestroy,
        ] {
            seq += 1;
            let mut ev = event(n, kind, seq);
            ev.hangup_cause = Some(HangupCause::ORIGINATOR_CANCEL);
            let _ = engine.submit_event(ev);
        }
    }
    (hist, refused, seen)
}

/// CPU time (user + system) used so far by this process's threads, in microseconds, summed by thread name.
/// Linux only (`/proc/self/task`); empty elsewhere.
pub(crate) fn cpu_by_thread() -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    // Clock ticks are 100 per second on every Linux this runs on (USER_HZ); asking sysconf would need libc.
    const TICK_US: u64 = 10_000;
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        // The name is between the first '(' and the last ')'; utime and stime are fields 14 and 15.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat[open + 1..close].to_owned();
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        // After the name: field 3 (state) is index 0, so utime (14) is index 11 and stime (15) index 12.
        *out.entry(name).or_default() += (ticks(11) + ticks(12)) * TICK_US;
    }
    out
}

fn live_calls(engine: &EngineHandle) -> Option<usize> {
    match engine.query(Query::Status, Duration::from_secs(10)) {
        Ok(QueryReply::Status(s)) => Some(s.live_calls),
        _ => None,
    }
}

/// Runs the bench with each ledger asked for; the figures at the top level are the durable run's when there is
/// one, `errors` counts both runs'.
pub fn run(opts: SetupBench) -> Result<serde_json::Value, String> {
    let runs = match opts.ledger {
        LedgerChoice::Durable => vec![LedgerRun::Durable],
        LedgerChoice::Memory => vec![LedgerRun::Memory],
        LedgerChoice::Both => vec![LedgerRun::Memory, LedgerRun::Durable],
    };
    let mut results = Vec::new();
    for ledger in runs {
        let figures = run_once(&opts, ledger)?;
        println!(
            "ledger {:<8} p50 {} µs, p99 {} µs, max {} µs, {} error(s); ledger commits: mean {} µs, max {} µs",
            ledger.name(),
            figures["p50_us"],
            figures["p99_us"],
            figures["max_us"],
            figures["errors"],
            figures["ledger_commit_mean_us"],
            figures["ledger_commit_max_us"]
        );
        results.push((ledger, figures));
    }
    let errors: u64 = results
        .iter()
        .map(|(_, f)| f["errors"].as_u64().unwrap_or(0))
        .sum();
    let (_, main) = results
        .iter()
        .find(|(l, _)| *l == LedgerRun::Durable)
        .or(results.first())
        .ok_or("no run")?;
    let mut out = main.clone();
    let Some(object) = out.as_object_mut() else {
        return Err("a run's figures are not a JSON object".into());
    };
    object.insert(
        "ledger".into(),
        json!(match opts.ledger {
            LedgerChoice::Durable => "durable",
            LedgerChoice::Memory => "memory",
            LedgerChoice::Both => "both",
        }),
    );
    object.insert("errors".into(), json!(errors));
    let p99 = |run: LedgerRun| {
        results
            .iter()
            .find(|(l, _)| *l == run)
            .and_then(|(_, f)| f["p99_us"].as_i64())
    };
    if let (Some(durable), Some(memory)) = (p99(LedgerRun::Durable), p99(LedgerRun::Memory)) {
        object.insert("p99_delta_us".into(), json!(durable - memory));
    }
    for (ledger, figures) in results {
        object.insert(ledger.name().into(), figures);
    }
    Ok(out)
}

fn run_once(opts: &SetupBench, ledger: LedgerRun) -> Result<serde_json::Value, String> {
    let mut config = load_config(opts.config.as_ref())?;
    // The run's own ledger, whatever the configuration says: never a real one.
    let scratch = tempfile::tempdir()
        .map_err(|e| format!("cannot create a scratch directory for the ledger: {e}"))?;
    config.local.ledger = match ledger {
        LedgerRun::Durable => LedgerPlace::File(scratch.path().join("rtc_core.db")),
        LedgerRun::Memory => LedgerPlace::Memory,
    };
    let rig = match opts.backend {
        BackendArg::Local => None,
        BackendArg::Http => Some(HttpRig::start(&mut config)?),
    };
    // Only the decision is measured: keep finished calls' traces and the spool out of the way.
    config.engine.finished_traces = 0;
    let (tx, rx) = crossbeam_channel::unbounded();
    let host = Host::start_with(
        &config,
        Box::new(TimedControl { tx }),
        HostOptions::default(),
    )
    .map_err(|e| e.to_string())?;
    let engine = host.engine().clone();
    let warmup = WARMUP_CALLS.min(opts.calls);
    let total = opts.calls + warmup;
    let created: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
    let base = Instant::now();
    let deadline = Arc::new(AtomicU64::new(0));
    let collector = {
        let (engine, created, deadline) = (engine.clone(), created.clone(), deadline.clone());
        std::thread::Builder::new()
            .name("bench-collect".into())
            .spawn(move || collect(rx, engine, created, base, total, deadline))
            .map_err(|e| format!("cannot start the collector thread: {e}"))?
    };
    eprintln!(
        "bench setup: {} backend, {} ledger, {warmup} warm-up then {} calls at {} calls/s",
        opts.backend.name(),
        ledger.name(),
        opts.calls,
        opts.cps
    );
    let cpu_before = cpu_by_thread();
    let interval = Duration::from_secs_f64(1.0 / opts.cps.max(1.0));
    let mut refused_events = 0u64;
    let started = Instant::now();
    for n in 0..total {
        let due = started + interval.mul_f64(n as f64);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let ev = event(n, EventKind::ChannelCreate, 1);
        created[n].store(
            Instant::now().duration_since(base).as_nanos() as u64,
            Ordering::Release,
        );
        if engine.submit_event(ev).is_err() {
            refused_events += 1;
        }
    }
    let sent_for = started.elapsed();
    // Every call is decided well within this, or it counts as an error.
    let limit = base.elapsed() + Duration::from_secs(10);
    deadline.store(limit.as_micros() as u64, Ordering::Relaxed);
    let (hist, refused, decided) = collector
        .join()
        .map_err(|_| "the collector thread panicked".to_string())?;
    // Let the hang-ups apply, then stop: settlements still in flight are delivered or spooled.
    let settle = Instant::now() + Duration::from_secs(5);
    while live_calls(&engine).is_some_and(|n| n > 0) && Instant::now() < settle {
        std::thread::sleep(Duration::from_millis(10));
    }
    // CPU of the run per call, by thread: the engine and rtc-io are what the module would spend; the
    // loopback services and the bench's own threads are not.
    let cpu_after = cpu_by_thread();
    let cpu_per_call: BTreeMap<String, u64> = cpu_after
        .iter()
        .map(|(name, us)| {
            let before = cpu_before.get(name).copied().unwrap_or(0);
            (name.clone(), us.saturating_sub(before) / total as u64)
        })
        .filter(|(_, us)| *us > 0)
        .collect();
    let monitor = host.monitor().cloned();
    // The ledger's commits (the fsyncs, when durable): the engine's with local services, the loopback's over HTTP.
    let ledger_stats = match &rig {
        Some(rig) => Some(rig.loopback.with_local(|l| l.ledger_handle().stats())),
        None => host.ledger().map(|l| l.stats()),
    }
    .unwrap_or_default();
    let report = host.shutdown(Duration::from_secs(5));
    let mut service_errors = 0u64;
    let mut http_requests = 0u64;
    if let Some(monitor) = &monitor {
        for kind in ServiceKind::ALL {
            http_requests += monitor.count(kind, Event::Sent);
            for event in [
                Event::Timeout,
                Event::CircuitOpen,
                Event::Connect,
                Event::HttpStatus,
                Event::BodyTooLarge,
                Event::BadJson,
                Event::InvalidValue,
            ] {
                service_errors += monitor.count(kind, event);
            }
        }
    }
    let undecided = total.saturating_sub(decided) as u64;
    let spooled = report.drain.map_or(0, |d| d.spooled + d.lost) as u64;
    let errors = refused + undecided + refused_events + service_errors + spooled;
    if let Some(rig) = rig {
        rig.loopback.stop();
    }
    Ok(json!({
        "bench": "setup",
        "backend": opts.backend.name(),
        "ledger": ledger.name(),
        "calls": opts.calls,
        "cps": opts.cps,
        "achieved_cps": (total as f64 / sent_for.as_secs_f64().max(1e-9)).round(),
        "p50_us": hist.value_at_quantile(0.5),
        "p90_us": hist.value_at_quantile(0.9),
        "p99_us": hist.value_at_quantile(0.99),
        "max_us": hist.max(),
        "errors": errors,
        "refused_calls": refused,
        "undecided_calls": undecided,
        "service_errors": service_errors,
        "http_requests": http_requests,
        "spooled": spooled,
        "warmup_calls": warmup,
        "cpu_us_per_call": cpu_per_call,
        "ledger_batches": ledger_stats.batches,
        "ledger_commit_mean_us": ledger_stats.commit_us_total / ledger_stats.batches.max(1),
        "ledger_commit_max_us": ledger_stats.commit_us_max,
    }))
}
