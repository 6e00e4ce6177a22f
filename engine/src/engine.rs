//! The engine thread `rtc-engine` and the handle the rest of the world talks to it through.
//!
//! Two queues feed the thread. Channel events go on a bounded queue with `try_send`: the event handler
//! runs on FreeSWITCH's dispatch threads and must never wait, so a full queue is counted and the event
//! refused. Everything else — service results, queries, the dialplan app's wait, shutdown — goes on an
//! unbounded control queue, which is bounded in practice by the live calls (a few outstanding results
//! each) and must not lose a result: a lost reservation would be money lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Select, Sender, TryRecvError};

use crate::call::CallView;
use crate::clock::Clock;
use crate::config::{EngineConfig, FailModes, NewSettings};
use crate::control::CallControl;
use crate::core::{CallSummary, Core, Decision, StatusReport};
use crate::event::CallEvent;
use crate::id::CallId;
use crate::service::{ServiceResult, ServiceSink};
use crate::stats::Stats;

/// A question for the engine thread.
#[derive(Clone, Debug)]
pub enum Query {
    /// `rtc_core status`: a [`QueryReply::Status`].
    Status,
    /// `rtc_core calls`: a [`QueryReply::Calls`].
    Calls {
        /// Most calls listed.
        limit: usize,
    },
    /// `rtc_core call <uuid>`: a [`QueryReply::Call`].
    Call(CallId),
    /// The counters: a [`QueryReply::Stats`].
    Stats,
    /// `rtc_core fraud`: a [`QueryReply::Fraud`].
    Fraud,
    /// `rtc_core unblock <partner>`: a [`QueryReply::Unblocked`].
    Unblock(compact_str::CompactString),
}

/// The engine thread's answer.
#[derive(Clone, Debug)]
pub enum QueryReply {
    /// The engine's status.
    Status(Box<StatusReport>),
    /// Live calls.
    Calls(Vec<CallSummary>),
    /// One call, live or recently finished; `None`: not known.
    Call(Option<Box<CallView>>),
    /// The counters.
    Stats(Box<Stats>),
    /// The fraud rules' blocks, recent hits and counters.
    Fraud(Box<crate::core::FraudReport>),
    /// What unblocking said (`Err`: the partner was not blocked, or is unknown).
    Unblocked(Result<String, String>),
}

enum Control {
    Result(ServiceResult),
    Query(Query, Sender<QueryReply>),
    Await(Box<CallEvent>, Sender<Decision>),
    Reload(Box<NewSettings>, Sender<Result<String, String>>),
    /// Re-check timers now (a manual clock moved).
    Tick,
    Shutdown,
}

/// Why an event or request was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// The queue is full (the events waiting).
    #[error("engine queue full ({0} events waiting): event dropped and counted")]
    QueueFull(usize),
    /// The engine has stopped.
    #[error("engine is shut down")]
    Stopped,
}

/// Why a query or a decision got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// No answer within the bound.
    #[error("engine did not answer within {0:?}")]
    Timeout(Duration),
    /// The engine has stopped.
    #[error("engine is shut down")]
    Stopped,
}

/// Why a reload did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReloadError {
    /// A service, or the engine, refused the new settings: why.
    #[error("reload refused, nothing changed: {0}")]
    Refused(String),
    /// The engine did not answer.
    #[error(transparent)]
    Engine(QueryError),
}

/// Counters shared between the handle's callers and the engine thread.
#[derive(Debug, Default)]
struct Shared {
    /// Events refused because the queue was full.
    queue_full: AtomicU64,
    /// Events refused after shutdown began.
    refused_closed: AtomicU64,
    /// Set when shutdown begins: intake stops.
    closed: AtomicBool,
}

/// Intake figures visible without asking the engine thread.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct IntakeStats {
    /// Events waiting in the queue.
    pub queue_depth: usize,
    /// The queue's capacity (`queue-capacity`).
    pub queue_capacity: usize,
    /// Events refused because the queue was full.
    pub queue_full: u64,
    /// Events refused after shutdown began.
    pub refused_closed: u64,
    /// Results, queries and other messages waiting in the control queue.
    pub control_depth: usize,
}

/// A cheap, cloneable way to reach the engine thread.
#[derive(Clone)]
pub struct EngineHandle {
    events: Sender<CallEvent>,
    control: Sender<Control>,
    shared: Arc<Shared>,
    capacity: usize,
}

impl EngineHandle {
    /// Hands a channel event to the engine without ever waiting.
    #[inline]
    pub fn submit_event(&self, ev: CallEvent) -> Result<(), SubmitError> {
        if self.shared.closed.load(Ordering::Relaxed) {
            self.shared.refused_closed.fetch_add(1, Ordering::Relaxed);
            return Err(SubmitError::Stopped);
        }
        match self.events.try_send(ev) {
            Ok(()) => Ok(()),
            Err(crossbeam_channel::TrySendError::Full(_)) => {
                let n = self.shared.queue_full.fetch_add(1, Ordering::Relaxed);
                if n.is_power_of_two() {
                    log::warn!(
                        "engine queue full ({} events): {} events dropped so far",
                        self.capacity,
                        n + 1
                    );
                }
                Err(SubmitError::QueueFull(self.capacity))
            }
            Err(crossbeam_channel::TrySendError::Disconnected(_)) => Err(SubmitError::Stopped),
        }
    }

    /// Hands a service result back to the engine. Never drops it while the engine runs.
    pub fn deliver(&self, result: ServiceResult) -> Result<(), SubmitError> {
        self.control
            .send(Control::Result(result))
            .map_err(|_| SubmitError::Stopped)
    }

    /// Asks the engine thread a question; waits at most `timeout` for the answer.
    pub fn query(&self, query: Query, timeout: Duration) -> Result<QueryReply, QueryError> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.control
            .send(Control::Query(query, tx))
            .map_err(|_| QueryError::Stopped)?;
        rx.recv_timeout(timeout).map_err(|e| match e {
            RecvTimeoutError::Timeout => QueryError::Timeout(timeout),
            RecvTimeoutError::Disconnected => QueryError::Stopped,
        })
    }

    /// Waits (at most `timeout`) for the decision on `ev`'s call, starting its flow if the engine has not
    /// seen it created. For the dialplan app, on the session's own thread.
    pub fn await_decision(&self, ev: CallEvent, timeout: Duration) -> Result<Decision, QueryError> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.control
            .send(Control::Await(Box::new(ev), tx))
            .map_err(|_| QueryError::Stopped)?;
        rx.recv_timeout(timeout).map_err(|e| match e {
            RecvTimeoutError::Timeout => QueryError::Timeout(timeout),
            RecvTimeoutError::Disconnected => QueryError::Stopped,
        })
    }

    /// Swaps in a new configuration (`rtc_core reload`): the services take theirs first, and only if they
    /// all accept it does the engine take its own; on error nothing changed. Live calls keep the timers
    /// and decisions they already have; new calls and new steps use the new settings.
    pub fn reload(&self, settings: NewSettings, timeout: Duration) -> Result<String, ReloadError> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.control
            .send(Control::Reload(Box::new(settings), tx))
            .map_err(|_| ReloadError::Engine(QueryError::Stopped))?;
        match rx.recv_timeout(timeout) {
            Ok(Ok(summary)) => Ok(summary),
            Ok(Err(e)) => Err(ReloadError::Refused(e)),
            Err(RecvTimeoutError::Timeout) => {
                Err(ReloadError::Engine(QueryError::Timeout(timeout)))
            }
            Err(RecvTimeoutError::Disconnected) => Err(ReloadError::Engine(QueryError::Stopped)),
        }
    }

    /// Asks the engine to re-check its timers (after a manual clock moved).
    pub fn tick(&self) {
        let _ = self.control.send(Control::Tick);
    }

    /// Events waiting in the queue.
    #[inline]
    pub fn queue_depth(&self) -> usize {
        self.events.len()
    }

    /// The intake queue's depth, capacity and refusals.
    pub fn intake(&self) -> IntakeStats {
        IntakeStats {
            queue_depth: self.events.len(),
            queue_capacity: self.capacity,
            queue_full: self.shared.queue_full.load(Ordering::Relaxed),
            refused_closed: self.shared.refused_closed.load(Ordering::Relaxed),
            control_depth: self.control.len(),
        }
    }
}

/// What shutdown did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ShutdownReport {
    /// Events still queued when intake stopped, applied before the calls were settled.
    pub drained_events: usize,
    /// Live calls settled (refused or billed so far) at shutdown.
    pub settled_calls: usize,
    /// Whether draining stopped at the grace bound with work left.
    pub abandoned: bool,
    /// The counters at the end.
    pub stats: Stats,
}

/// The running engine: its thread and a handle to it. Dropping it shuts it down.
pub struct Engine {
    handle: EngineHandle,
    thread: Option<JoinHandle<ShutdownReport>>,
}

/// What an engine is made of.
pub struct EngineParts {
    /// The engine's settings.
    pub config: EngineConfig,
    /// What a call does when each service cannot answer.
    pub fail_modes: FailModes,
    /// Where service requests go.
    pub services: Box<dyn ServiceSink>,
    /// Where call commands go.
    pub control: Box<dyn CallControl>,
    /// The engine's clock.
    pub clock: Clock,
}

impl Engine {
    /// Starts the `rtc-engine` thread.
    pub fn start(parts: EngineParts) -> std::io::Result<Engine> {
        Engine::start_audited(parts, None)
    }

    /// Starts the `rtc-engine` thread, recording its decisions in `audit` (the audit trail).
    pub fn start_audited(
        parts: EngineParts,
        audit: Option<Box<dyn crate::audit::AuditSink>>,
    ) -> std::io::Result<Engine> {
        let capacity = parts.config.queue_capacity.max(1);
        let (ev_tx, ev_rx) = crossbeam_channel::bounded(capacity);
        let (ctl_tx, ctl_rx) = crossbeam_channel::unbounded();
        let shared = Arc::new(Shared::default());
        let handle = EngineHandle {
            events: ev_tx,
            control: ctl_tx,
            shared: shared.clone(),
            capacity,
        };
        let started = Instant::now();
        let mut services = parts.services;
        services.attach(Arc::new(handle.clone()));
        let mut core = Core::new(
            parts.config,
            parts.fail_modes,
            services,
            parts.control,
            parts.clock,
        );
        if let Some(audit) = audit {
            core.set_audit(audit);
        }
        let thread = std::thread::Builder::new()
            .name("rtc-engine".into())
            .spawn(move || run(core, ev_rx, ctl_rx, started))?;
        Ok(Engine {
            handle,
            thread: Some(thread),
        })
    }

    /// A handle to the running engine.
    pub fn handle(&self) -> EngineHandle {
        self.handle.clone()
    }

    /// Stops intake, applies what is queued (within the configured grace), settles every live call,
    /// and joins the thread.
    pub fn shutdown(mut self) -> ShutdownReport {
        self.stop().unwrap_or_else(|| ShutdownReport {
            drained_events: 0,
            settled_calls: 0,
            abandoned: true,
            stats: Stats::zero(),
        })
    }

    fn stop(&mut self) -> Option<ShutdownReport> {
        let thread = self.thread.take()?;
        self.handle.shared.closed.store(true, Ordering::SeqCst);
        let _ = self.handle.control.send(Control::Shutdown);
        match thread.join() {
            Ok(report) => Some(report),
            Err(_) => {
                log::error!("engine thread panicked; calls it held were not settled");
                None
            }
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How long the engine polls after its last event before it parks until woken.
const QUIET_SPELL: Duration = Duration::from_millis(100);

/// The engine thread's loop.
fn run(
    mut core: Core,
    events: Receiver<CallEvent>,
    control: Receiver<Control>,
    started: Instant,
) -> ShutdownReport {
    let mut next_due = next_wakeup(&mut core);
    let mut quiet_polls = 0u32;
    // A control message the poll wait below woke up for, applied first in the next turn.
    let mut woken: Option<Control> = None;
    loop {
        // Control first (results unblock calls), then a batch of events.
        loop {
            let msg = match woken.take() {
                Some(msg) => Ok(msg),
                None => control.try_recv(),
            };
            match msg {
                Ok(Control::Shutdown) => return shut_down(core, &events, &control),
                Ok(msg @ (Control::Query(..) | Control::Await(..))) => {
                    // What was submitted before the question is applied before the answer.
                    for _ in 0..events.len() {
                        match events.try_recv() {
                            Ok(ev) => core.on_event(ev),
                            Err(_) => break,
                        }
                    }
                    handle_control(&mut core, msg, started);
                }
                Ok(msg) => handle_control(&mut core, msg, started),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return shut_down(core, &events, &control),
            }
        }
        let mut got = 0;
        core.set_backlog(events.len());
        while got < 256 {
            match events.try_recv() {
                Ok(ev) => {
                    core.on_event(ev);
                    got += 1;
                }
                Err(_) => break,
            }
        }
        // A timer armed by what was just applied (a billing tick, a park timeout) may be due before the time
        // the loop planned to wake up at.
        if let Some(armed) = core.take_armed() {
            next_due = next_due.min(armed);
        }
        let now = core.now_us();
        if now >= next_due {
            next_due = next_wakeup(&mut core);
        }
        if got > 0 {
            quiet_polls = 0;
            continue;
        }
        // Between events of a busy switch, poll instead of parking: a parked receiver makes every
        // `try_send` on FreeSWITCH's event threads a futex wake-up (a syscall and a context switch per
        // event); a polling one costs them nothing. After a quiet spell, park until woken.
        let poll = core.config().poll_interval;
        if !poll.is_zero() && poll * quiet_polls < QUIET_SPELL {
            quiet_polls += 1;
            // The poll interval, or less when a service answer, query or decision wait comes: those are sent by our
            // own threads (the ledger's writer, rtc-io) or by a session already waiting, whose wake-up costs
            // FreeSWITCH's event threads nothing; events are still only polled.
            match control.recv_timeout(poll) {
                Ok(msg) => woken = Some(msg),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return shut_down(core, &events, &control),
            }
            continue;
        }
        quiet_polls = 0;
        // Idle: wait for either queue or the next timer.
        let wait = Duration::from_micros(next_due.saturating_sub(now)).min(Duration::from_secs(1));
        let mut sel = Select::new();
        let ctl_i = sel.recv(&control);
        let ev_i = sel.recv(&events);
        match sel.ready_timeout(wait) {
            Ok(i) if i == ctl_i || i == ev_i => {}
            _ => next_due = next_wakeup(&mut core),
        }
    }
}

fn next_wakeup(core: &mut Core) -> u64 {
    let timer = core.fire_timers();
    let sweep = core.sweep_if_due();
    match (timer, sweep) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a.or(b).unwrap_or(u64::MAX),
    }
}

fn handle_control(core: &mut Core, msg: Control, started: Instant) {
    match msg {
        Control::Result(r) => core.on_result(r),
        Control::Query(q, reply) => {
            let answer = match q {
                Query::Status => {
                    QueryReply::Status(Box::new(core.status(started.elapsed().as_secs())))
                }
                Query::Calls { limit } => QueryReply::Calls(core.calls(limit)),
                Query::Call(id) => QueryReply::Call(core.call(&id).map(Box::new)),
                Query::Stats => QueryReply::Stats(Box::new(core.stats())),
                Query::Fraud => QueryReply::Fraud(Box::new(core.fraud())),
                Query::Unblock(partner) => QueryReply::Unblocked(core.unblock(&partner)),
            };
            let _ = reply.send(answer);
        }
        Control::Await(ev, reply) => core.on_await(*ev, reply),
        Control::Reload(settings, reply) => {
            let _ = reply.send(core.reload(*settings));
        }
        Control::Tick => {
            core.fire_timers();
            core.sweep_if_due();
        }
        Control::Shutdown => {}
    }
}

fn shut_down(
    mut core: Core,
    events: &Receiver<CallEvent>,
    control: &Receiver<Control>,
) -> ShutdownReport {
    let deadline = Instant::now() + core.config().shutdown_grace;
    let mut drained = 0;
    let mut abandoned = false;
    // Apply what was already queued: those events happened, and may end calls properly.
    loop {
        if Instant::now() >= deadline {
            abandoned = !events.is_empty();
            break;
        }
        match events.try_recv() {
            Ok(ev) => {
                core.on_event(ev);
                drained += 1;
            }
            Err(_) => break,
        }
    }
    while let Ok(msg) = control.try_recv() {
        if let Control::Result(r) = msg {
            core.on_result(r);
        }
    }
    let settled = core.shutdown_calls();
    // Answers still on their way (a reservation among them) are waited for within the grace, so that
    // what they hold is released rather than lost.
    while core.pending_results() > 0 {
        let left = deadline.saturating_duration_since(Instant::now());
        match control.recv_timeout(left) {
            Ok(Control::Result(r)) => core.on_result(r),
            Ok(_) => {}
            Err(_) => {
                log::warn!(
                    "shutdown: {} service answers still outstanding after the grace period",
                    core.pending_results()
                );
                abandoned = true;
                break;
            }
        }
    }
    ShutdownReport {
        drained_events: drained,
        settled_calls: settled,
        abandoned,
        stats: core.stats(),
    }
}
