//! The ledger's writer thread `rtc-ledger` and the [`Ledger`] handle every other thread talks to it through.
//!
//! Writes never run on the engine thread or a FreeSWITCH thread: they queue here. The writer takes whatever is
//! queued (up to [`LedgerConfig::max_batch`]), applies it in **one** SQLite transaction and commits it durably
//! (WAL, `synchronous=FULL`: one fsync for the batch), and only then answers each request. So an answer the
//! engine acts on is on disk, and durability costs one fsync per batch, not one per call (group commit): the
//! busier the switch, the more calls share each fsync.
//!
//! A refused request (unknown reservation, not enough money) changes nothing and the batch goes on. A storage
//! failure (disk full, I/O error) rolls the whole batch back: reservations and queries are answered with the
//! failure at once (the engine applies the balance service's fail mode), while settlements, CDRs and top-ups wait
//! and are written again every [`LedgerConfig::retry_every`] until the disk takes them. At close, what still cannot
//! be written is logged whole; its reservation stays open in the file and is settled by the next start's recovery.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use serde::Serialize;

use crate::backend::Abandoned;
use crate::backend::{Backend, BatchOutcome};
use crate::error::{LedgerError, OpenError};
use crate::model::{Answer, Op};
use crate::store::{Access, Failure, Opened, Store};

/// The name of the writer thread.
pub const THREAD_NAME: &str = "rtc-ledger";

/// Where the ledger lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// An SQLite file (created when missing).
    File(PathBuf),
    /// In memory: the same schema and SQL, nothing on disk (tests, benchmarks' comparison).
    Memory,
}

/// The ledger's clock: microseconds since the Unix epoch.
pub type LedgerClock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// What the writer tells whoever watches it after each durable batch (tests, benchmarks).
#[derive(Clone, Debug, Default)]
pub struct Committed {
    /// Requests in the batch.
    pub requests: usize,
    /// Calls whose CDR the batch stored.
    pub cdrs: Vec<String>,
}

/// Called on the writer thread after each committed batch; must be quick.
pub type CommitObserver = Arc<dyn Fn(&Committed) + Send + Sync>;

/// How to run a ledger.
#[derive(Clone)]
pub struct LedgerConfig {
    /// The file, or memory.
    pub location: Location,
    /// Most requests applied in one transaction.
    pub max_batch: usize,
    /// How often open reservations are checked for expiry.
    pub expiry_every: Duration,
    /// After a storage failure, how long the writer waits before writing the waiting settlements again.
    pub retry_every: Duration,
    /// At close, how many more times settlements that could not be written are tried before they are logged.
    pub close_attempts: u32,
    /// The clock (tests move it by hand).
    pub clock: LedgerClock,
    /// Told about every durable batch.
    pub on_commit: Option<CommitObserver>,
}

impl std::fmt::Debug for LedgerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerConfig")
            .field("location", &self.location)
            .field("max_batch", &self.max_batch)
            .finish_non_exhaustive()
    }
}

impl LedgerConfig {
    /// The defaults for a ledger at `location`.
    pub fn new(location: Location) -> LedgerConfig {
        LedgerConfig {
            location,
            max_batch: 4096,
            expiry_every: Duration::from_secs(1),
            retry_every: Duration::from_millis(500),
            close_attempts: 3,
            clock: Arc::new(crate::store::now_us),
            on_commit: None,
        }
    }
}

/// Where an answer goes: called on the writer thread once the request's batch is durable (or refused).
pub type Reply = Box<dyn FnOnce(Result<Answer, LedgerError>) + Send>;

/// One request and where its answer goes.
pub struct Request {
    /// What to do.
    pub op: Op,
    /// Who asks, written in the journal (`engine`, `api`, `cli`).
    pub actor: &'static str,
    /// Where the answer goes (`None`: nobody waits; a refusal is logged).
    pub reply: Option<Reply>,
    /// A request still queued this long after it was made is answered [`LedgerError::Expired`] and not applied
    /// (a reservation nobody waits for any more). `None`: no bound (settlements).
    pub bound: Option<Duration>,
    /// When it was made.
    pub made: Instant,
}

impl Request {
    /// A request answered to `reply`.
    pub fn new(op: Op, actor: &'static str, reply: Option<Reply>) -> Request {
        Request {
            op,
            actor,
            reply,
            bound: None,
            made: Instant::now(),
        }
    }

    /// The same, dropped unapplied when it waited longer than `bound`.
    pub fn within(mut self, bound: Duration) -> Request {
        self.bound = Some(bound);
        self
    }

    fn answer(self, result: Result<Answer, LedgerError>) {
        match self.reply {
            Some(reply) => reply(result),
            None => {
                if let Err(e) = result {
                    log::warn!("ledger: {} by {} refused: {e}", self.op.name(), self.actor);
                }
            }
        }
    }
}

/// What reaches the writer.
enum Msg {
    /// Requests applied in one transaction (a settlement and its CDR travel together).
    Requests(Vec<Request>),
    /// Apply what came before, then stop (what comes after is refused).
    Close,
    /// Stop at once, applying nothing more (a crash, for tests).
    Crash,
}

/// Counters of the writer, shared with every handle.
#[derive(Debug, Default)]
struct Counters {
    batches: AtomicU64,
    requests: AtomicU64,
    refused: AtomicU64,
    storage_failures: AtomicU64,
    expired_requests: AtomicU64,
    expired_reservations: AtomicU64,
    cdrs: AtomicU64,
    commit_us_total: AtomicU64,
    commit_us_max: AtomicU64,
    largest_batch: AtomicU64,
    waiting: AtomicU64,
    lost: AtomicU64,
    breaker_refused: AtomicU64,
    recovered_reservations: AtomicU64,
    breaker_open: std::sync::atomic::AtomicBool,
}

/// The writer's figures, for `rtc_core status`, metrics and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LedgerStats {
    /// Transactions committed.
    pub batches: u64,
    /// Requests applied (answered or refused).
    pub requests: u64,
    /// Requests refused (nothing changed).
    pub refused: u64,
    /// Batches rolled back because the database could not be written.
    pub storage_failures: u64,
    /// Requests that waited past their bound and were not applied.
    pub expired_requests: u64,
    /// Reservations that expired unsettled and were settled by the writer.
    pub expired_reservations: u64,
    /// CDRs stored.
    pub cdrs: u64,
    /// Sum and largest of the commits' durations (µs): the fsyncs.
    pub commit_us_total: u64,
    /// Longest commit (µs).
    pub commit_us_max: u64,
    /// Most requests in one transaction.
    pub largest_batch: u64,
    /// Requests queued for the writer right now.
    pub queued: u64,
    /// Settlements waiting for the disk to take them again (after a storage failure).
    pub waiting: u64,
    /// Settlements that could not be written before close (each logged whole).
    pub lost: u64,
    /// Requests answered at once without trying the database, while it was failing (the breaker open).
    pub breaker_refused: u64,
    /// Reservations of a node that stopped, settled by this one (a shared ledger's take-over).
    pub recovered_reservations: u64,
    /// The database failed at the last try: reservations are refused until it answers again.
    pub breaker_open: bool,
}

/// What closing did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CloseReport {
    /// Requests applied after close was asked (what was queued).
    pub drained: u64,
    /// Settlements that could not be written (logged whole; their reservations recover at the next start).
    pub lost: u64,
}

/// A running ledger: its writer thread and the way in. Cheap to clone ([`Ledger::handle`]); closed by
/// [`Ledger::close`] or when dropped.
pub struct Ledger {
    /// Requests to the writer.
    handle: LedgerHandle,
    /// The writer; joined at close.
    writer: Option<JoinHandle<CloseReport>>,
    /// What opening found.
    opened: Opened,
    /// Reservations a dead process left open, settled at open.
    recovered: Vec<Abandoned>,
}

/// A cloneable way to send requests to a ledger's writer from any thread.
#[derive(Clone)]
pub struct LedgerHandle {
    /// The writer's queue.
    tx: Sender<Msg>,
    /// Its counters.
    counters: Arc<Counters>,
    /// The file, for messages.
    path: Arc<str>,
}

impl std::fmt::Debug for LedgerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerHandle")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.handle.fmt(f)
    }
}

impl Ledger {
    /// Opens the SQLite ledger (creating a new file when there is none), settles the reservations a dead
    /// process left open (each with a `recovered` CDR), and starts the writer.
    pub fn open(config: LedgerConfig) -> Result<Ledger, OpenError> {
        let (mut store, opened) = match &config.location {
            Location::File(path) => Store::open(path, Access::Write)?,
            Location::Memory => (
                Store::memory()?,
                Opened {
                    created: true,
                    migrated_from: None,
                },
            ),
        };
        let path: Arc<str> = store.display_path().into();
        let now = (config.clock)();
        let recovered = match store.in_transaction(|s| s.recover_all(now)) {
            Ok(r) => r,
            Err(Failure::Refused(e)) => {
                return Err(OpenError::NotALedger {
                    path: PathBuf::from(&*path),
                    detail: format!("recovery of open reservations failed: {e}"),
                });
            }
            Err(Failure::Storage(source)) => {
                return Err(OpenError::Sqlite {
                    path: PathBuf::from(&*path),
                    action: "cannot settle the reservations left open",
                    source,
                });
            }
        };
        for r in &recovered {
            r.log_recovered(&path, "a process that stopped");
        }
        Ledger::start(Box::new(store), &path, config, opened, recovered)
    }

    /// Starts the writer over an opened `backend` (described as `path` in messages): how another storage engine
    /// (`rtc-ledger-pg`) runs under the same writer. `recovered`: what opening settled.
    pub fn start(
        backend: Box<dyn Backend>,
        path: &str,
        config: LedgerConfig,
        opened: Opened,
        recovered: Vec<Abandoned>,
    ) -> Result<Ledger, OpenError> {
        let path: Arc<str> = path.into();
        let (tx, rx) = crossbeam_channel::unbounded();
        let counters = Arc::new(Counters::default());
        let writer = {
            let counters = counters.clone();
            let path = path.clone();
            std::thread::Builder::new()
                .name(THREAD_NAME.into())
                .spawn(move || Writer::new(backend, config, counters, path).run(&rx))
                .map_err(OpenError::Thread)?
        };
        Ok(Ledger {
            handle: LedgerHandle { tx, counters, path },
            writer: Some(writer),
            opened,
            recovered,
        })
    }

    /// A handle for other threads.
    pub fn handle(&self) -> LedgerHandle {
        self.handle.clone()
    }

    /// What opening found: a new file, a migration.
    pub fn opened(&self) -> &Opened {
        &self.opened
    }

    /// The reservations settled at open (left by a process that died), with their CDRs.
    pub fn recovered(&self) -> &[Abandoned] {
        &self.recovered
    }

    /// Stops taking requests, applies what is queued, and joins the writer.
    pub fn close(mut self) -> CloseReport {
        self.stop()
    }

    fn stop(&mut self) -> CloseReport {
        let Some(writer) = self.writer.take() else {
            return CloseReport::default();
        };
        // Handles cloned out (an operator's command) may outlive the ledger: the writer is told to close rather than
        // waiting for every sender to go.
        let _ = self.handle.tx.send(Msg::Close);
        match writer.join() {
            Ok(report) => report,
            Err(_) => {
                log::error!("{}: the ledger writer panicked", self.handle.path);
                CloseReport::default()
            }
        }
    }

    /// Stops the writer at once without applying what is queued, as a crash would (tests of recovery).
    #[doc(hidden)]
    pub fn crash(mut self) {
        let _ = self.handle.tx.send(Msg::Crash);
        self.stop();
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        self.stop();
    }
}

impl std::ops::Deref for Ledger {
    type Target = LedgerHandle;
    fn deref(&self) -> &LedgerHandle {
        &self.handle
    }
}

impl LedgerHandle {
    /// Queues one request.
    pub fn submit(&self, request: Request) {
        self.submit_all(vec![request]);
    }

    /// Queues requests to be applied in one transaction (all durable together, or none).
    pub fn submit_all(&self, requests: Vec<Request>) {
        if requests.is_empty() {
            return;
        }
        if let Err(crossbeam_channel::SendError(Msg::Requests(requests))) =
            self.tx.send(Msg::Requests(requests))
        {
            for r in requests {
                if r.op.must_not_be_lost() {
                    log::error!(
                        "{}: ledger closed; {} NOT written: {:?}",
                        self.path,
                        r.op.name(),
                        r.op
                    );
                    self.counters.lost.fetch_add(1, Ordering::Relaxed);
                }
                r.answer(Err(LedgerError::Closed));
            }
        }
    }

    /// Applies `op` and waits for its answer, at most `timeout`.
    pub fn call(
        &self,
        op: Op,
        actor: &'static str,
        timeout: Duration,
    ) -> Result<Answer, LedgerError> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.submit(Request::new(
            op,
            actor,
            Some(Box::new(move |a| {
                let _ = tx.send(a);
            })),
        ));
        match rx.recv_timeout(timeout) {
            Ok(answer) => answer,
            Err(RecvTimeoutError::Timeout) => Err(LedgerError::Timeout(timeout)),
            Err(RecvTimeoutError::Disconnected) => Err(LedgerError::Closed),
        }
    }

    /// Applies `ops` in one transaction and waits for their answers (in order), at most `timeout` in all.
    pub fn call_all(
        &self,
        ops: Vec<Op>,
        actor: &'static str,
        timeout: Duration,
    ) -> Result<Vec<Result<Answer, LedgerError>>, LedgerError> {
        let n = ops.len();
        let (tx, rx) = crossbeam_channel::bounded(n.max(1));
        let requests = ops
            .into_iter()
            .enumerate()
            .map(|(i, op)| {
                let tx = tx.clone();
                Request::new(
                    op,
                    actor,
                    Some(Box::new(move |a| {
                        let _ = tx.send((i, a));
                    })),
                )
            })
            .collect();
        drop(tx);
        self.submit_all(requests);
        let deadline = std::time::Instant::now() + timeout;
        let mut answers: Vec<Option<Result<Answer, LedgerError>>> = (0..n).map(|_| None).collect();
        for _ in 0..n {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok((i, a)) => answers[i] = Some(a),
                Err(RecvTimeoutError::Timeout) => return Err(LedgerError::Timeout(timeout)),
                Err(RecvTimeoutError::Disconnected) => return Err(LedgerError::Closed),
            }
        }
        Ok(answers
            .into_iter()
            .map(|a| a.unwrap_or(Err(LedgerError::Closed)))
            .collect())
    }

    /// The writer's figures.
    pub fn stats(&self) -> LedgerStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        LedgerStats {
            batches: get(&c.batches),
            requests: get(&c.requests),
            refused: get(&c.refused),
            storage_failures: get(&c.storage_failures),
            expired_requests: get(&c.expired_requests),
            expired_reservations: get(&c.expired_reservations),
            cdrs: get(&c.cdrs),
            commit_us_total: get(&c.commit_us_total),
            commit_us_max: get(&c.commit_us_max),
            largest_batch: get(&c.largest_batch),
            queued: self.tx.len() as u64,
            waiting: get(&c.waiting),
            lost: get(&c.lost),
            breaker_refused: get(&c.breaker_refused),
            recovered_reservations: get(&c.recovered_reservations),
            breaker_open: c.breaker_open.load(Ordering::Relaxed),
        }
    }

    /// The file (or `:memory:`).
    pub fn path(&self) -> &str {
        &self.path
    }
}

/// The writer thread's state.
struct Writer {
    backend: Box<dyn Backend>,
    config: LedgerConfig,
    counters: Arc<Counters>,
    path: Arc<str>,
    /// Settlements rolled back by a storage failure, written again first in the next batch.
    waiting: VecDeque<Request>,
    /// When waiting settlements are tried again.
    retry_at: Option<Instant>,
    /// When open reservations are next checked for expiry.
    expiry_at: Instant,
    /// Batches committed since the backend was last told it is idle.
    batches_since_idle: u64,
    /// The last storage failure, told to requests refused while the breaker is open.
    last_failure: String,
}

impl Writer {
    fn new(
        backend: Box<dyn Backend>,
        config: LedgerConfig,
        counters: Arc<Counters>,
        path: Arc<str>,
    ) -> Writer {
        Writer {
            backend,
            expiry_at: Instant::now() + config.expiry_every,
            config,
            counters,
            path,
            waiting: VecDeque::new(),
            retry_at: None,
            batches_since_idle: 0,
            last_failure: String::new(),
        }
    }

    fn run(mut self, rx: &Receiver<Msg>) -> CloseReport {
        let mut drained = 0u64;
        loop {
            let now = Instant::now();
            let mut wake = self.expiry_at;
            if let Some(at) = self.retry_at {
                wake = wake.min(at);
            }
            let mut batch: Vec<Request> = Vec::new();
            let mut closing = false;
            match rx.recv_timeout(wake.saturating_duration_since(now)) {
                Ok(Msg::Requests(r)) => batch.extend(r),
                Ok(Msg::Close) => closing = true,
                Ok(Msg::Crash) => return CloseReport::default(),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => closing = true,
            }
            while batch.len() < self.config.max_batch && !closing {
                match rx.try_recv() {
                    Ok(Msg::Requests(r)) => batch.extend(r),
                    Ok(Msg::Close) => closing = true,
                    Ok(Msg::Crash) => return CloseReport::default(),
                    Err(crossbeam_channel::TryRecvError::Empty) => break,
                    Err(crossbeam_channel::TryRecvError::Disconnected) => {
                        closing = true;
                        break;
                    }
                }
            }
            if closing {
                drained += batch.len() as u64;
            }
            let retry_due = self.retry_at.is_some_and(|at| at <= Instant::now());
            let busy = !batch.is_empty();
            if busy || retry_due || Instant::now() >= self.expiry_at {
                self.run_batch(batch);
            }
            if busy {
                self.batches_since_idle += 1;
            }
            // The backend's idle work (SQLite: copying the WAL back into the database) runs between batches, never
            // inside a commit a call waits for.
            if self
                .backend
                .idle_due(self.batches_since_idle, busy, !rx.is_empty())
            {
                self.backend.idle();
                self.batches_since_idle = 0;
            }
            if closing {
                let (path, counters) = (self.path.clone(), self.counters.clone());
                let report = self.close(drained);
                // Sent after the close by a handle that outlived the ledger: refused, the lost ones logged.
                while let Ok(msg) = rx.try_recv() {
                    if let Msg::Requests(requests) = msg {
                        for r in requests {
                            if r.op.must_not_be_lost() {
                                log::error!(
                                    "{path}: ledger closed; {} by {} NOT written: {:?}",
                                    r.op.name(),
                                    r.actor,
                                    r.op
                                );
                                counters.lost.fetch_add(1, Ordering::Relaxed);
                            }
                            r.answer(Err(LedgerError::Closed));
                        }
                    }
                }
                return report;
            }
        }
    }

    /// At close: the waiting settlements get a few more tries, then are logged whole.
    fn close(mut self, drained: u64) -> CloseReport {
        let mut attempts = 0;
        while !self.waiting.is_empty() && attempts < self.config.close_attempts {
            attempts += 1;
            std::thread::sleep(self.config.retry_every);
            self.run_batch(Vec::new());
        }
        let lost = self.waiting.len() as u64;
        for r in self.waiting.drain(..) {
            log::error!(
                "{}: ledger closing; {} by {} NOT written (the disk refused it): {:?}; its reservation, if any, \
                 stays open and is settled by the next start's recovery",
                self.path,
                r.op.name(),
                r.actor,
                r.op
            );
            r.answer(Err(LedgerError::Closed));
        }
        self.counters.lost.fetch_add(lost, Ordering::Relaxed);
        self.counters.waiting.store(0, Ordering::Relaxed);
        self.backend.close();
        CloseReport { drained, lost }
    }

    /// Applies the waiting settlements and `batch` in one transaction, expires what is due, commits, answers.
    fn run_batch(&mut self, batch: Vec<Request>) {
        let now = Instant::now();
        let retry_due = self.retry_at.is_none_or(|at| at <= now);
        let mut requests: Vec<Request> = Vec::with_capacity(self.waiting.len() + batch.len());
        if retry_due {
            requests.extend(self.waiting.drain(..));
            self.retry_at = None;
        } else {
            // The breaker is open (the database failed a moment ago): settlements join the waiting ones, the rest
            // is answered at once so that no call waits on a database that is down.
            let mut refused = 0u64;
            for r in batch {
                if r.op.must_not_be_lost() {
                    self.waiting.push_back(r);
                } else {
                    refused += 1;
                    r.answer(Err(LedgerError::Unavailable(self.last_failure.clone())));
                }
            }
            let c = &self.counters;
            c.breaker_refused.fetch_add(refused, Ordering::Relaxed);
            c.waiting
                .store(self.waiting.len() as u64, Ordering::Relaxed);
            return;
        }
        requests.extend(batch);
        let now_us = (self.config.clock)();
        let started = Instant::now();
        // Requests that waited past their bound are answered without being applied.
        let mut answers: Vec<Option<Result<Answer, LedgerError>>> =
            Vec::with_capacity(requests.len());
        let mut ops: Vec<(&Op, &'static str)> = Vec::with_capacity(requests.len());
        for r in &requests {
            match r.bound {
                Some(bound) if started.duration_since(r.made) > bound => {
                    answers.push(Some(Err(LedgerError::Expired(
                        started.duration_since(r.made),
                    ))));
                }
                _ => {
                    answers.push(None);
                    ops.push((&r.op, r.actor));
                }
            }
        }
        let upkeep = started >= self.expiry_at;
        if upkeep {
            self.expiry_at = started + self.config.expiry_every;
        }
        let outcome = if ops.is_empty() && !upkeep {
            Ok(BatchOutcome::default())
        } else {
            self.backend.apply_batch(&ops, now_us, upkeep)
        };
        drop(ops);
        match outcome {
            Ok(outcome) => {
                let mut applied = outcome.answers.into_iter();
                let answers: Vec<Result<Answer, LedgerError>> = answers
                    .into_iter()
                    .map(|a| match a {
                        Some(a) => a,
                        None => applied.next().unwrap_or(Err(LedgerError::Storage(
                            "the database gave fewer answers than operations".into(),
                        ))),
                    })
                    .collect();
                let mut stored_cdrs: Vec<String> = Vec::new();
                for (r, a) in requests.iter().zip(&answers) {
                    match (&r.op, a) {
                        (Op::Cdr(cdr), Ok(Answer::CdrStored(true))) => {
                            stored_cdrs.push(cdr.uuid.clone())
                        }
                        (
                            Op::Commit { cdr: Some(cdr), .. } | Op::Release { cdr: Some(cdr), .. },
                            a,
                        ) if !matches!(a, Err(LedgerError::Expired(_))) => {
                            stored_cdrs.push(cdr.uuid.clone())
                        }
                        _ => {}
                    }
                }
                let c = &self.counters;
                c.breaker_open.store(false, Ordering::Relaxed);
                if !requests.is_empty() || !outcome.settled.is_empty() {
                    c.batches.fetch_add(1, Ordering::Relaxed);
                    c.commit_us_total
                        .fetch_add(outcome.commit_us, Ordering::Relaxed);
                    c.commit_us_max
                        .fetch_max(outcome.commit_us, Ordering::Relaxed);
                }
                c.requests
                    .fetch_add(requests.len() as u64, Ordering::Relaxed);
                c.largest_batch
                    .fetch_max(requests.len() as u64, Ordering::Relaxed);
                c.cdrs
                    .fetch_add(stored_cdrs.len() as u64, Ordering::Relaxed);
                c.waiting
                    .store(self.waiting.len() as u64, Ordering::Relaxed);
                for e in &outcome.settled {
                    if e.cdr.is_some() {
                        c.recovered_reservations.fetch_add(1, Ordering::Relaxed);
                        e.log_recovered(&self.path, "a node that stopped");
                    } else {
                        c.expired_reservations.fetch_add(1, Ordering::Relaxed);
                        log::warn!(
                            "{}: reservation {} of account {:?} for call {} expired unsettled (nobody extended or \
                             settled it in time); {} charged (what was debited), {} released",
                            self.path,
                            e.reservation,
                            e.account,
                            e.call,
                            e.charged,
                            e.released
                        );
                    }
                }
                let n = requests.len();
                for (r, a) in requests.into_iter().zip(answers) {
                    match &a {
                        Err(LedgerError::Expired(_)) => {
                            c.expired_requests.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => {
                            c.refused.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(_) => {}
                    }
                    r.answer(a);
                }
                if let Some(observer) = &self.config.on_commit
                    && n > 0
                {
                    observer(&Committed {
                        requests: n,
                        cdrs: stored_cdrs,
                    });
                }
            }
            Err(e) => {
                let n = self
                    .counters
                    .storage_failures
                    .fetch_add(1, Ordering::Relaxed)
                    + 1;
                if n.is_power_of_two() {
                    log::error!(
                        "{}: the ledger cannot be written ({e}); {} request(s) rolled back: reservations are refused \
                         (balance fail mode), settlements wait and are written again every {:?} ({n} failures so \
                         far)",
                        self.path,
                        requests.len(),
                        self.config.retry_every
                    );
                }
                self.counters.breaker_open.store(true, Ordering::Relaxed);
                self.last_failure = e.0.clone();
                let err = LedgerError::Storage(e.0);
                for (r, a) in requests.into_iter().zip(answers) {
                    if let Some(a) = a {
                        r.answer(a);
                    } else if r.op.must_not_be_lost() {
                        self.waiting.push_back(r);
                    } else {
                        r.answer(Err(err.clone()));
                    }
                }
                self.retry_at = Some(Instant::now() + self.config.retry_every);
                self.counters
                    .waiting
                    .store(self.waiting.len() as u64, Ordering::Relaxed);
            }
        }
    }
}
