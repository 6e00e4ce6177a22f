//! `rtc-core bench ledger`: settlements per second through the ledger's writer thread, with durable group commit
//! on a real file (WAL, `synchronous=FULL`: an fsync per batch), and the same in memory in the same run.
//!
//! A settlement is one call's money as the engine moves it: a reservation, one extension (a debit past the hold,
//! so the hold grows and the journal gets a row), then a commit carrying the call's CDR. `threads` producers each
//! keep `window` calls in flight, submitting every step the moment the previous one is answered, without waiting
//! for one another; a settlement counts once its commit is answered. The figures are the durable run's, the
//! in-memory run's, and their ratio; the writer's CPU per settlement and its time inside COMMIT say where the time
//! goes.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use rtc_ledger::{
    AccountRef, Answer, CallInfo, CallLimits, CdrRecord, Ledger, LedgerConfig, LedgerError,
    LedgerHandle, LedgerStats, Location, Money, Op, Request, ReservationId,
};
use serde_json::json;

use crate::bench_setup::cpu_by_thread;

/// Options of `bench ledger`.
#[derive(Clone)]
pub struct LedgerBench {
    /// Settlements per run.
    pub calls: usize,
    /// Producer threads.
    pub threads: usize,
    /// Calls each producer keeps in flight.
    pub window: usize,
    /// Where the durable run's file goes (default: the system's temporary directory).
    pub dir: Option<PathBuf>,
    /// The embedded SQLite ledger, or the shared ledger on PostgreSQL.
    pub backend: BenchBackend,
    /// Nodes writing the shared ledger at once (PostgreSQL).
    pub nodes: usize,
    /// The PostgreSQL database (default: a throwaway cluster started for the bench, on 127.0.0.1).
    pub url: Option<String>,
}

/// Which ledger `bench ledger` measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchBackend {
    /// The embedded SQLite ledger: durable file against memory.
    Sqlite,
    /// The shared ledger on PostgreSQL, from 1 and from `--nodes` nodes, against the SQLite file.
    Postgres,
}

/// Calls at once per partner in the limit run: well under what the producers keep in flight per partner.
const LIMIT: u32 = 8;

/// The shared ledger's bench: throughput from 1 node and from `nodes`, setup's balance step at 1,000 cps, the money
/// and the limit checked; the SQLite file's figures beside them, measured in the same run.
fn bench_postgres(opts: &LedgerBench, file: Location) -> Result<serde_json::Value, String> {
    let server;
    let url = match &opts.url {
        Some(url) => url.clone(),
        None => {
            server = rtc_pg_harness::Postgres::start().map_err(|e| {
                format!(
                    "bench ledger --backend postgres: no --url, and no throwaway PostgreSQL: {e}"
                )
            })?;
            server.url()
        }
    };
    let nodes = opts.nodes.max(1);
    eprintln!(
        "bench ledger: PostgreSQL at {}, {} settlements per run, {} producer thread(s) with {} call(s) in flight each",
        rtc_ledger_pg::redact(&url),
        opts.calls,
        opts.threads.max(1),
        opts.window.max(1)
    );
    let sqlite = run(&Place::Embedded(file.clone()), opts, CallLimits::default())?;
    eprintln!(
        "bench ledger: SQLite file {:.0} settlements/s",
        sqlite.per_sec()
    );
    let one = run(
        &Place::Shared {
            url: url.clone(),
            nodes: 1,
        },
        opts,
        CallLimits::default(),
    )?;
    eprintln!(
        "bench ledger: PostgreSQL, 1 node: {:.0} settlements/s",
        one.per_sec()
    );
    let many = run(
        &Place::Shared {
            url: url.clone(),
            nodes,
        },
        opts,
        CallLimits::default(),
    )?;
    eprintln!(
        "bench ledger: PostgreSQL, {nodes} nodes: {:.0} settlements/s",
        many.per_sec()
    );
    let limit_opts = LedgerBench {
        calls: opts.calls.min(20_000),
        ..opts.clone()
    };
    let limits = CallLimits {
        max_concurrent: LIMIT,
        max_cps: 0,
        ..CallLimits::default()
    };
    let limited = run(
        &Place::Shared {
            url: url.clone(),
            nodes,
        },
        &limit_opts,
        limits,
    )?;
    eprintln!(
        "bench ledger: PostgreSQL, {nodes} nodes, {LIMIT} calls at once per partner: peak {}, {} refused",
        limited.peak_open_calls, limited.limited
    );
    let (pg_setup, pg_setup_failed) = paced(
        &Place::Shared {
            url: url.clone(),
            nodes: 1,
        },
        1000,
        5,
    )?;
    // A new file for SQLite's paced run, as the database is new for PostgreSQL's: the throughput run's file would
    // have its write-ahead log copied back during the measurement.
    let paced_file = match &file {
        Location::File(path) => Location::File(path.with_file_name("paced.db")),
        other => other.clone(),
    };
    let (sqlite_setup, sqlite_setup_failed) = paced(&Place::Embedded(paced_file), 1000, 5)?;
    eprintln!(
        "bench ledger: reservation at 1,000 cps: PostgreSQL p99 {} µs, SQLite p99 {} µs",
        pg_setup.value_at_quantile(0.99),
        sqlite_setup.value_at_quantile(0.99)
    );
    let totals = rtc_ledger_pg::check(&url)?;
    let failed = one.failed + many.failed + limited.failed + pg_setup_failed + sqlite_setup_failed;
    Ok(json!({
        "bench": "ledger",
        "backend": "postgres",
        "calls": opts.calls,
        "threads": opts.threads.max(1),
        "window": opts.window.max(1),
        "nodes": nodes,
        "settlements_per_sec": one.per_sec().round() as u64,
        "settlements_per_sec_nodes": many.per_sec().round() as u64,
        "sqlite_settlements_per_sec": sqlite.per_sec().round() as u64,
        "ratio_to_sqlite": (one.per_sec() / sqlite.per_sec().max(1e-9) * 1000.0).round() / 1000.0,
        "ratio_nodes_to_sqlite": (many.per_sec() / sqlite.per_sec().max(1e-9) * 1000.0).round() / 1000.0,
        "setup_cps": 1000,
        "setup_p50_us": pg_setup.value_at_quantile(0.5),
        "setup_p99_us": pg_setup.value_at_quantile(0.99),
        "sqlite_setup_p50_us": sqlite_setup.value_at_quantile(0.5),
        "sqlite_setup_p99_us": sqlite_setup.value_at_quantile(0.99),
        "lost_money": one.lost_money + many.lost_money + limited.lost_money,
        "journal_balances": totals.discrepancies.is_empty() && totals.balances == totals.journal,
        "limit": LIMIT,
        "limit_peak": limited.peak_open_calls,
        "limit_overshoot": (limited.peak_open_calls - i64::from(LIMIT)).max(0),
        "limit_refused": limited.limited,
        "failed": failed,
        "sqlite": sqlite.figures(),
        "postgres_1_node": one.figures(),
        "postgres_nodes": many.figures(),
    }))
}

/// Accounts the calls are spread over (partners).
const ACCOUNTS: usize = 16;

/// A reservation or extension that waited this long for the writer is dropped unapplied (the engine's balance
/// timeout); it counts as a failure.
const BOUND: Duration = Duration::from_secs(2);

/// How long setup requests and the last answers may take.
const WAIT: Duration = Duration::from_secs(60);

/// The step a reply answers.
#[derive(Clone, Copy)]
enum Step {
    Reserve,
    Extend,
    Commit,
}

/// An answer, back to the producer that asked.
struct Reply {
    slot: usize,
    step: Step,
    answer: Result<Answer, LedgerError>,
}

/// One call in flight.
#[derive(Clone, Copy)]
struct Slot {
    /// The call's number.
    n: usize,
    /// When its reservation was submitted.
    started: Instant,
    reservation: ReservationId,
}

/// What one producer saw.
struct Produced {
    settled: u64,
    failed: u64,
    /// Reservations refused by a call limit (a shared ledger's).
    limited: u64,
    /// What the commits charged, micro-units.
    charged: i64,
    /// Reservation submitted to commit answered, µs.
    latency: hdrhistogram::Histogram<u64>,
}

fn account(n: usize) -> String {
    format!("bench-{:02}", n % ACCOUNTS)
}

fn uuid(n: usize) -> String {
    format!("5e7c1ed9-0000-4000-8000-{n:012x}")
}

/// What the ledger knows of call `n` at its reservation (`answered`: and after its answer).
fn info(n: usize, base_us: u64, answered: bool) -> CallInfo {
    CallInfo {
        caller: "441632960001".into(),
        destination: format!("4420{:08}", n % 100_000_000),
        source_ip: Some("192.0.2.10".into()),
        started_at_us: base_us,
        answered_at_us: answered.then_some(base_us + 3_000_000),
        rate_per_minute: answered.then_some(Money(12_500)),
        carrier: answered.then(|| "carrier_a".to_string()),
        paid_s: if answered { 120 } else { 0 },
    }
}

/// The call's record, as the engine writes it at the end of a 95-second call billed per minute.
fn cdr(n: usize, base_us: u64, cost: Money) -> CdrRecord {
    CdrRecord {
        uuid: uuid(n),
        caller: "441632960001".into(),
        destination: format!("4420{:08}", n % 100_000_000),
        source_ip: Some("192.0.2.10".into()),
        partner: Some(account(n)),
        final_state: "COMPLETED".into(),
        reason: None,
        hangup_cause: "NORMAL_CLEARING".into(),
        carrier: Some("carrier_a".into()),
        rate_per_minute: Some(Money(12_500)),
        setup_us: Some(4_200),
        talk_s: 95,
        billed_s: 120,
        cost,
        started_at_us: base_us,
        ended_at_us: base_us + 98_000_000,
    }
}

/// Held at the reservation, debited by the extension (past the hold: the hold grows), charged at the commit.
const HOLD: Money = Money(12_500);
const DEBIT: Money = Money(25_000);

fn submit(handle: &LedgerHandle, tx: &Sender<Reply>, slot: usize, step: Step, op: Op) {
    let tx = tx.clone();
    let request = Request::new(
        op,
        "engine",
        Some(Box::new(move |answer| {
            let _ = tx.send(Reply { slot, step, answer });
        })),
    );
    handle.submit(match step {
        Step::Reserve | Step::Extend => request.within(BOUND),
        Step::Commit => request,
    });
}

fn reserve(
    handle: &LedgerHandle,
    tx: &Sender<Reply>,
    slot: usize,
    n: usize,
    base_us: u64,
    limits: CallLimits,
) {
    let op = Op::Reserve {
        account: AccountRef::Name(account(n)),
        amount: HOLD,
        call: uuid(n),
        info: info(n, base_us, false),
        ttl: Duration::from_secs(3600),
        limits,
    };
    submit(handle, tx, slot, Step::Reserve, op);
}

/// Calls `first..first + count`, `window` at a time.
fn produce(
    handle: &LedgerHandle,
    first: usize,
    count: usize,
    window: usize,
    base_us: u64,
    limits: CallLimits,
) -> Produced {
    let (tx, rx) = crossbeam_channel::unbounded::<Reply>();
    let mut out = Produced {
        settled: 0,
        failed: 0,
        limited: 0,
        charged: 0,
        latency: hdrhistogram::Histogram::new_with_bounds(1, 600_000_000, 3)
            .expect("constant histogram bounds are valid"),
    };
    let mut slots: Vec<Slot> = Vec::with_capacity(window);
    let mut next = first;
    let end = first + count;
    while slots.len() < window && next < end {
        slots.push(Slot {
            n: next,
            started: Instant::now(),
            reservation: ReservationId(0),
        });
        reserve(handle, &tx, slots.len() - 1, next, base_us, limits);
        next += 1;
    }
    let mut in_flight = slots.len();
    while in_flight > 0 {
        let Ok(reply) = rx.recv_timeout(WAIT) else {
            // The writer stopped answering: what is still in flight counts as failed.
            out.failed += in_flight as u64;
            break;
        };
        let slot = &mut slots[reply.slot];
        let n = slot.n;
        let done = match (reply.step, reply.answer) {
            (Step::Reserve, Ok(Answer::Reserved { reservation, .. })) => {
                slot.reservation = reservation;
                let op = Op::Extend {
                    reservation,
                    debit: DEBIT,
                    unit: Money(12_500),
                    ttl: Duration::from_secs(3600),
                    info: Some(info(n, base_us, true)),
                };
                submit(handle, &tx, reply.slot, Step::Extend, op);
                false
            }
            (Step::Extend, Ok(Answer::Extended { debited, .. })) => {
                let op = Op::Commit {
                    reservation: slot.reservation,
                    account: Some(AccountRef::Name(account(n))),
                    cost: debited,
                    cdr: Some(Box::new(cdr(n, base_us, debited))),
                };
                submit(handle, &tx, reply.slot, Step::Commit, op);
                false
            }
            (Step::Commit, Ok(Answer::Settled(settled))) => {
                out.settled += 1;
                out.charged += settled.charged.0;
                out.latency
                    .saturating_record(slot.started.elapsed().as_micros().max(1) as u64);
                true
            }
            (Step::Reserve, Err(LedgerError::LimitReached { .. })) => {
                out.limited += 1;
                true
            }
            (_, other) => {
                if out.failed == 0 {
                    log::warn!("bench ledger: call {n}: unexpected answer {other:?}");
                }
                out.failed += 1;
                true
            }
        };
        if done {
            if next < end {
                *slot = Slot {
                    n: next,
                    started: Instant::now(),
                    reservation: ReservationId(0),
                };
                reserve(handle, &tx, reply.slot, next, base_us, limits);
                next += 1;
            } else {
                in_flight -= 1;
            }
        }
    }
    out
}

/// One run's figures.
struct Run {
    elapsed: Duration,
    settled: u64,
    failed: u64,
    /// Reservations a call limit refused.
    limited: u64,
    /// The balances' drop less what the commits charged (micro-units; 0 when no money appeared or vanished).
    lost_money: i64,
    /// Most calls one partner had at once, as the shared ledger counted them (limit runs).
    peak_open_calls: i64,
    /// The writer's counters over the measured part.
    stats: LedgerStats,
    /// Requests per committed batch.
    batch: hdrhistogram::Histogram<u64>,
    latency: hdrhistogram::Histogram<u64>,
    /// CPU the writer thread used over the measured part, µs.
    writer_cpu_us: u64,
    /// The file's size afterwards (database and WAL), for the durable run.
    file_bytes: Option<u64>,
}

impl Run {
    fn per_sec(&self) -> f64 {
        self.settled as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn figures(&self) -> serde_json::Value {
        let s = &self.stats;
        let settled = self.settled.max(1);
        json!({
            "settlements_per_sec": self.per_sec().round() as u64,
            "settled": self.settled,
            "failed": self.failed,
            "limited": self.limited,
            "lost_money": self.lost_money,
            "elapsed_s": (self.elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
            "batches": s.batches,
            "requests": s.requests,
            "requests_per_batch": (s.requests as f64 / s.batches.max(1) as f64 * 10.0).round() / 10.0,
            "batch_p50": self.batch.value_at_quantile(0.5),
            "batch_p99": self.batch.value_at_quantile(0.99),
            "largest_batch": s.largest_batch,
            "commit_mean_us": s.commit_us_total / s.batches.max(1),
            "commit_max_us": s.commit_us_max,
            "commit_share": (s.commit_us_total as f64 / self.elapsed.as_micros().max(1) as f64 * 1000.0).round() / 1000.0,
            "writer_cpu_us_per_settlement": (self.writer_cpu_us as f64 / settled as f64 * 10.0).round() / 10.0,
            "writer_cpu_share": (self.writer_cpu_us as f64 / self.elapsed.as_micros().max(1) as f64 * 1000.0).round() / 1000.0,
            "settlement_p50_us": self.latency.value_at_quantile(0.5),
            "settlement_p99_us": self.latency.value_at_quantile(0.99),
            "file_bytes": self.file_bytes,
        })
    }
}

fn diff(after: LedgerStats, before: LedgerStats) -> LedgerStats {
    LedgerStats {
        batches: after.batches - before.batches,
        requests: after.requests - before.requests,
        refused: after.refused - before.refused,
        expired_requests: after.expired_requests - before.expired_requests,
        cdrs: after.cdrs - before.cdrs,
        commit_us_total: after.commit_us_total - before.commit_us_total,
        ..after
    }
}

fn writer_cpu() -> u64 {
    cpu_by_thread()
        .get(rtc_ledger::writer::THREAD_NAME)
        .copied()
        .unwrap_or(0)
}

/// Where a run keeps its money.
#[derive(Clone)]
enum Place {
    /// The embedded ledger: a file (durable) or memory.
    Embedded(Location),
    /// The shared ledger on PostgreSQL, written by this many nodes at once.
    Shared { url: String, nodes: usize },
}

impl Place {
    /// Opens the run's ledger(s): one, or one per node on the shared database.
    fn open(&self, on_commit: Option<rtc_ledger::CommitObserver>) -> Result<Vec<Ledger>, String> {
        match self {
            Place::Embedded(location) => {
                let mut config = LedgerConfig::new(location.clone());
                config.on_commit = on_commit;
                Ok(vec![Ledger::open(config).map_err(|e| e.to_string())?])
            }
            Place::Shared { url, nodes } => (0..(*nodes).max(1))
                .map(|i| {
                    let mut pg = rtc_ledger_pg::PgConfig::new(url);
                    pg.node_id = format!("bench-node-{}", i + 1);
                    let mut config = rtc_ledger_pg::ledger_config();
                    config.on_commit = on_commit.clone();
                    rtc_ledger_pg::open(pg, config).map_err(|e| e.to_string())
                })
                .collect(),
        }
    }
}

/// The sum of every account's balance.
fn total_balance(ledger: &Ledger) -> Result<i64, String> {
    match ledger.call(Op::Accounts, "cli", WAIT) {
        Ok(Answer::Accounts(accounts)) => Ok(accounts.iter().map(|a| a.balance.0).sum()),
        other => Err(format!("bench ledger: reading the balances: {other:?}")),
    }
}

fn run(place: &Place, opts: &LedgerBench, limits: CallLimits) -> Result<Run, String> {
    let batches = Arc::new(Mutex::new(
        hdrhistogram::Histogram::<u64>::new_with_bounds(1, 1 << 20, 3)
            .expect("constant histogram bounds are valid"),
    ));
    let observer: rtc_ledger::CommitObserver = {
        let batches = batches.clone();
        Arc::new(move |c| {
            if let Ok(mut h) = batches.lock() {
                h.saturating_record(c.requests as u64);
            }
        })
    };
    let ledgers = place.open(Some(observer))?;
    let ledger = &ledgers[0];
    // Enough money for every call, whatever the account; a reference of its own per run, so that a database used
    // before (--url) gets this run's money too.
    let each = Money(DEBIT.0 * (opts.calls / ACCOUNTS + 1) as i64 * 2);
    let reference = format!("bench-{}", rtc_engine::core::epoch_us());
    for a in 0..ACCOUNTS {
        let name = account(a);
        for op in [
            Op::OpenAccount {
                name: name.clone(),
                credit_limit: Money::ZERO,
            },
            Op::TopUp {
                account: AccountRef::Name(name),
                amount: each,
                reference: reference.clone(),
                actor: "cli".into(),
            },
        ] {
            ledger
                .call(op, "cli", WAIT)
                .map_err(|e| format!("bench ledger setup: {e}"))?;
        }
    }
    let balance_before = total_balance(ledger)?;
    let threads = opts.threads.max(1);
    let base_us = rtc_engine::core::epoch_us();
    let before: Vec<LedgerStats> = ledgers.iter().map(|l| l.stats()).collect();
    if let Ok(mut h) = batches.lock() {
        h.reset();
    }
    let cpu_before = writer_cpu();
    let peak = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let started = Instant::now();
    let produced: Vec<Produced> = std::thread::scope(|scope| {
        // The peak of calls at once per partner, as the shared ledger counts them, while the producers run.
        if let (Place::Shared { url, .. }, true) = (place, limits.max_concurrent > 0) {
            let (peak, sampling) = (peak.clone(), sampling.clone());
            scope.spawn(move || {
                while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Ok(n) = rtc_ledger_pg::peak_open_calls(url) {
                        peak.fetch_max(n, std::sync::atomic::Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            });
        }
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let handle = ledgers[t % ledgers.len()].handle();
                let first = opts.calls * t / threads;
                let count = opts.calls * (t + 1) / threads - first;
                let window = opts.window.max(1);
                std::thread::Builder::new()
                    .name(format!("bench-producer-{t}"))
                    .spawn_scoped(scope, move || {
                        produce(&handle, first, count, window, base_us, limits)
                    })
            })
            .collect();
        let joined = workers
            .into_iter()
            .map(|w| {
                w.map_err(|e| format!("cannot start a producer thread: {e}"))?
                    .join()
                    .map_err(|_| "a producer thread panicked".to_string())
            })
            .collect::<Result<Vec<_>, String>>();
        sampling.store(false, std::sync::atomic::Ordering::Relaxed);
        joined
    })?;
    let elapsed = started.elapsed();
    let writer_cpu_us = writer_cpu().saturating_sub(cpu_before);
    let mut stats = LedgerStats::default();
    for (l, b) in ledgers.iter().zip(before) {
        let d = diff(l.stats(), b);
        stats.batches += d.batches;
        stats.requests += d.requests;
        stats.refused += d.refused;
        stats.expired_requests += d.expired_requests;
        stats.cdrs += d.cdrs;
        stats.commit_us_total += d.commit_us_total;
        stats.commit_us_max = stats.commit_us_max.max(d.commit_us_max);
        stats.largest_batch = stats.largest_batch.max(d.largest_batch);
    }
    let balance_after = total_balance(ledger)?;
    for l in ledgers {
        l.close();
    }
    let mut latency = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)
        .expect("constant histogram bounds are valid");
    let (mut settled, mut failed, mut limited, mut charged) = (0, 0, 0, 0i64);
    for p in &produced {
        settled += p.settled;
        failed += p.failed;
        limited += p.limited;
        charged += p.charged;
        latency
            .add(&p.latency)
            .map_err(|e| format!("histogram: {e}"))?;
    }
    let file_bytes = match place {
        Place::Embedded(Location::File(path)) => {
            let size = |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.len());
            let mut wal = path.as_os_str().to_owned();
            wal.push("-wal");
            Some(size(path) + size(std::path::Path::new(&wal)))
        }
        _ => None,
    };
    let batch = batches
        .lock()
        .map_err(|_| "the batch histogram was poisoned".to_string())?
        .clone();
    Ok(Run {
        elapsed,
        settled,
        failed,
        limited,
        lost_money: ((balance_before - balance_after) - charged).abs(),
        peak_open_calls: peak.load(std::sync::atomic::Ordering::Relaxed),
        stats,
        batch,
        latency,
        writer_cpu_us,
        file_bytes,
    })
}

/// Call setup's balance step at a steady rate: one reservation every `1/cps` s, its answer's latency recorded,
/// then settled at once (a short call). Returns the reservations' latency (µs) and how many failed.
fn paced(
    place: &Place,
    cps: u32,
    seconds: u32,
) -> Result<(hdrhistogram::Histogram<u64>, u64), String> {
    let ledgers = place.open(None)?;
    let ledger = &ledgers[0];
    let name = account(0);
    for op in [
        Op::OpenAccount {
            name: name.clone(),
            credit_limit: Money::ZERO,
        },
        Op::TopUp {
            account: AccountRef::Name(name.clone()),
            amount: Money(HOLD.0 * i64::from(cps) * i64::from(seconds) * 2),
            reference: format!("paced-{}", rtc_engine::core::epoch_us()),
            actor: "cli".into(),
        },
    ] {
        ledger
            .call(op, "cli", WAIT)
            .map_err(|e| format!("bench ledger setup: {e}"))?;
    }
    let (tx, rx) = crossbeam_channel::unbounded::<(usize, Instant, Result<Answer, LedgerError>)>();
    let calls = (cps * seconds) as usize;
    let step = Duration::from_secs(1) / cps.max(1);
    let start = Instant::now();
    let base_us = rtc_engine::core::epoch_us();
    let mut latency = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
        .expect("constant histogram bounds are valid");
    let mut failed = 0u64;
    let mut answered = 0usize;
    let handle = ledger.handle();
    let settle = |n: usize, reservation: ReservationId| {
        handle.submit(Request::new(
            Op::Commit {
                reservation,
                account: None,
                cost: Money::ZERO,
                cdr: Some(Box::new(cdr(n, base_us, Money::ZERO))),
            },
            "engine",
            None,
        ));
    };
    for n in 0..calls {
        let due = start + step * n as u32;
        while let Ok((m, sent, answer)) = rx.recv_deadline(due) {
            answered += 1;
            latency.saturating_record(sent.elapsed().as_micros().max(1) as u64);
            match answer {
                Ok(Answer::Reserved { reservation, .. }) => settle(m, reservation),
                _ => failed += 1,
            }
        }
        let tx = tx.clone();
        let sent = Instant::now();
        handle.submit(
            Request::new(
                Op::Reserve {
                    account: AccountRef::Name(name.clone()),
                    amount: HOLD,
                    call: format!("5e7c1ed9-0000-4000-9000-{n:012x}-{base_us}"),
                    info: info(n, base_us, false),
                    ttl: Duration::from_secs(60),
                    limits: CallLimits::default(),
                },
                "engine",
                Some(Box::new(move |a| {
                    let _ = tx.send((n, sent, a));
                })),
            )
            .within(BOUND),
        );
    }
    while answered < calls {
        let Ok((m, sent, answer)) = rx.recv_timeout(WAIT) else {
            failed += (calls - answered) as u64;
            break;
        };
        answered += 1;
        latency.saturating_record(sent.elapsed().as_micros().max(1) as u64);
        match answer {
            Ok(Answer::Reserved { reservation, .. }) => settle(m, reservation),
            _ => failed += 1,
        }
    }
    for l in ledgers {
        l.close();
    }
    Ok((latency, failed))
}

/// Runs the bench; the last line printed is its JSON.
pub fn bench(opts: LedgerBench) -> Result<serde_json::Value, String> {
    let dir = match &opts.dir {
        Some(dir) => tempfile::tempdir_in(dir),
        None => tempfile::tempdir(),
    }
    .map_err(|e| format!("cannot create a directory for the ledger file: {e}"))?;
    let file = dir.path().join("rtc_core.db");
    eprintln!(
        "bench ledger: {} settlements, {} producer thread(s) with {} call(s) in flight each; durable in {}",
        opts.calls,
        opts.threads.max(1),
        opts.window.max(1),
        file.display()
    );
    if opts.backend == BenchBackend::Postgres {
        return bench_postgres(&opts, Location::File(file));
    }
    let durable = run(
        &Place::Embedded(Location::File(file)),
        &opts,
        CallLimits::default(),
    )?;
    eprintln!(
        "bench ledger: durable {:.0} settlements/s",
        durable.per_sec()
    );
    let memory = run(
        &Place::Embedded(Location::Memory),
        &opts,
        CallLimits::default(),
    )?;
    eprintln!(
        "bench ledger: in memory {:.0} settlements/s",
        memory.per_sec()
    );
    let ratio = durable.per_sec() / memory.per_sec().max(1e-9);
    let d = &durable.stats;
    Ok(json!({
        "bench": "ledger",
        "calls": opts.calls,
        "threads": opts.threads.max(1),
        "window": opts.window.max(1),
        "settlements_per_sec": durable.per_sec().round() as u64,
        "memory_settlements_per_sec": memory.per_sec().round() as u64,
        "ratio": (ratio * 1000.0).round() / 1000.0,
        "batches": d.batches,
        "requests_per_batch": (d.requests as f64 / d.batches.max(1) as f64 * 10.0).round() / 10.0,
        "commit_mean_us": d.commit_us_total / d.batches.max(1),
        "commit_max_us": d.commit_us_max,
        "settlement_p50_us": durable.latency.value_at_quantile(0.5),
        "settlement_p99_us": durable.latency.value_at_quantile(0.99),
        "failed": durable.failed + memory.failed,
        "durable": durable.figures(),
        "memory": memory.figures(),
    }))
}
