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
pub struct LedgerBench {
    /// Settlements per run.
    pub calls: usize,
    /// Producer threads.
    pub threads: usize,
    /// Calls each producer keeps in flight.
    pub window: usize,
    /// Where the durable run's file goes (default: the system's temporary directory).
    pub dir: Option<PathBuf>,
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

fn reserve(handle: &LedgerHandle, tx: &Sender<Reply>, slot: usize, n: usize, base_us: u64) {
    let op = Op::Reserve {
        account: AccountRef::Name(account(n)),
        amount: HOLD,
        call: uuid(n),
        info: info(n, base_us, false),
        ttl: Duration::from_secs(3600),
        limits: CallLimits::default(),
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
) -> Produced {
    let (tx, rx) = crossbeam_channel::unbounded::<Reply>();
    let mut out = Produced {
        settled: 0,
        failed: 0,
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
        reserve(handle, &tx, slots.len() - 1, next, base_us);
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
            (Step::Commit, Ok(Answer::Settled(_))) => {
                out.settled += 1;
                out.latency
                    .saturating_record(slot.started.elapsed().as_micros().max(1) as u64);
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
                reserve(handle, &tx, reply.slot, next, base_us);
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

fn run(location: Location, opts: &LedgerBench) -> Result<Run, String> {
    let batches = Arc::new(Mutex::new(
        hdrhistogram::Histogram::<u64>::new_with_bounds(1, 1 << 20, 3)
            .expect("constant histogram bounds are valid"),
    ));
    let mut config = LedgerConfig::new(location.clone());
    config.on_commit = Some({
        let batches = batches.clone();
        Arc::new(move |c| {
            if let Ok(mut h) = batches.lock() {
                h.saturating_record(c.requests as u64);
            }
        })
    });
    let ledger = Ledger::open(config).map_err(|e| e.to_string())?;
    // Enough money for every call, whatever the account.
    let each = Money(DEBIT.0 * (opts.calls / ACCOUNTS + 1) as i64 * 2);
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
                reference: "bench".into(),
                actor: "cli".into(),
            },
        ] {
            ledger
                .call(op, "cli", WAIT)
                .map_err(|e| format!("bench ledger setup: {e}"))?;
        }
    }
    let threads = opts.threads.max(1);
    let base_us = rtc_engine::core::epoch_us();
    let before = ledger.stats();
    if let Ok(mut h) = batches.lock() {
        h.reset();
    }
    let cpu_before = writer_cpu();
    let started = Instant::now();
    let produced: Vec<Produced> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let handle = ledger.handle();
                let first = opts.calls * t / threads;
                let count = opts.calls * (t + 1) / threads - first;
                let window = opts.window.max(1);
                std::thread::Builder::new()
                    .name(format!("bench-producer-{t}"))
                    .spawn_scoped(scope, move || {
                        produce(&handle, first, count, window, base_us)
                    })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.map_err(|e| format!("cannot start a producer thread: {e}"))?
                    .join()
                    .map_err(|_| "a producer thread panicked".to_string())
            })
            .collect::<Result<Vec<_>, String>>()
    })?;
    let elapsed = started.elapsed();
    let writer_cpu_us = writer_cpu().saturating_sub(cpu_before);
    let stats = diff(ledger.stats(), before);
    ledger.close();
    let mut latency = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)
        .expect("constant histogram bounds are valid");
    let (mut settled, mut failed) = (0, 0);
    for p in &produced {
        settled += p.settled;
        failed += p.failed;
        latency
            .add(&p.latency)
            .map_err(|e| format!("histogram: {e}"))?;
    }
    let file_bytes = match &location {
        Location::File(path) => {
            let size = |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.len());
            let mut wal = path.as_os_str().to_owned();
            wal.push("-wal");
            Some(size(path) + size(std::path::Path::new(&wal)))
        }
        Location::Memory => None,
    };
    let batch = batches
        .lock()
        .map_err(|_| "the batch histogram was poisoned".to_string())?
        .clone();
    Ok(Run {
        elapsed,
        settled,
        failed,
        stats,
        batch,
        latency,
        writer_cpu_us,
        file_bytes,
    })
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
    let durable = run(Location::File(file), &opts)?;
    eprintln!(
        "bench ledger: durable {:.0} settlements/s",
        durable.per_sec()
    );
    let memory = run(Location::Memory, &opts)?;
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
