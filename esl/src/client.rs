//! The inbound ESL client: one connection to FreeSWITCH's `mod_event_socket`, kept up for as long as the
//! engine runs.
//!
//! # Threads
//! Plain std threads and `std::net`, not the `rtc-io` tokio runtime: the engine's side is synchronous
//! (crossbeam queues), there is one socket, and two dedicated threads give the property that matters most —
//! the reader does nothing but read, frame, parse and `try_send` to the engine, so it never waits on the
//! engine, on a command, or on the services' runtime, and shutdown joins threads we own.
//! - `rtc-esl` (supervisor and reader): connects, authenticates, subscribes, then reads until the link
//!   drops; reconnects with exponential backoff (bounded) forever, except after a refused password, which
//!   retrying cannot fix.
//! - `rtc-esl-w` (writer, one per connection): takes commands from the queue the engine's
//!   [`EslCallControl`] feeds, writes them, and records what answer each awaits.
//!
//! # Never falling behind
//! FreeSWITCH kills a listener whose queue reaches 100,000 events. The reader hands each event to
//! [`EngineHandle::submit_event`], which never waits; a full engine queue is counted and the event dropped,
//! never a reason to stop reading. Only the events the engine needs are subscribed
//! ([`SUBSCRIPTION`]).
//!
//! # Liveness
//! TCP keepalive is on, `HEARTBEAT` is subscribed (FreeSWITCH sends one every 20 s), and when nothing has
//! arrived for [`EslConfig::probe_after`] a `bgapi uptime` is sent, whose immediate `command/reply` proves
//! the listener alive. Nothing received for [`EslConfig::liveness_timeout`] drops the link and reconnects.
//!
//! # Commands
//! FreeSWITCH answers commands in order: `command/reply` and `api/response` are matched to commands first
//! in, first out; a `bgapi`'s `command/reply` carries a `Job-UUID`, and its result comes later as a
//! `BACKGROUND_JOB` event with that id. Every command has a deadline ([`EslConfig::command_timeout`]): past
//! it its caller is told, and its slot stays in the queue so that later replies still line up. A reply
//! missing for twice the timeout means the listener is stuck: the link is dropped and remade. When the link
//! drops, every command in flight fails with [`CommandError::LinkDown`]; commands issued while it is down
//! fail at once with [`CommandError::NotConnected`]. Nothing hangs.
//!
//! # After a reconnect
//! Events were lost while the link was down. On each connection the client asks `bgapi show channels as
//! json` and reconciles it with the calls the engine held when the link came back:
//! - the answer is parsed leniently; only when it is read completely (every row has a readable uuid and the
//!   row count matches) is anything concluded;
//! - a call the engine holds that FreeSWITCH no longer has ended during the outage: the engine gets a
//!   synthetic `CHANNEL_HANGUP` for it, so that it is settled and written;
//! - a call the engine holds that FreeSWITCH shows answered (`callstate` ACTIVE or HELD) may have been answered
//!   during the outage: the engine gets a synthetic `CHANNEL_ANSWER` (absorbed if it knew already), so that it
//!   does not take the call for one still ringing;
//! - channels FreeSWITCH has that the engine does not follow are counted and logged, never touched;
//! - nothing is ever hung up on FreeSWITCH because of this answer (a controller that misread `show
//!   channels` once hung up live calls).

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use compact_str::CompactString;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use serde::Serialize;

use crate::control::{Expect, Wire, encode};
use crate::event::{BackgroundJob, EslMessage, Reply};
use crate::frame::FramerConfig;
use crate::intake::{Intake, IntakeConfig, IntakeStats};
use rtc_engine::control::{CallCommand, CallControl};
use rtc_engine::engine::{EngineHandle, Query, QueryReply, SubmitError};
use rtc_engine::event::{CallEvent, EventKind};
use rtc_engine::id::CallId;

/// The events subscribed: the channel events the engine follows, bgapi results, heartbeats for
/// liveness, and the bridge-end marker (`CUSTOM` must come last: the words after it are subclasses).
pub const SUBSCRIPTION: &str = "CHANNEL_CREATE CHANNEL_PARK CHANNEL_PROGRESS CHANNEL_PROGRESS_MEDIA \
     CHANNEL_ANSWER CHANNEL_BRIDGE CHANNEL_UNBRIDGE CHANNEL_HANGUP CHANNEL_HANGUP_COMPLETE CHANNEL_DESTROY \
     BACKGROUND_JOB HEARTBEAT CUSTOM rtc::bridge_end";

/// How to reach and watch FreeSWITCH.
#[derive(Clone, Debug)]
pub struct EslConfig {
    /// Event socket host.
    pub host: String,
    /// Event socket port (8021 by default in FreeSWITCH).
    pub port: u16,
    /// Event socket password.
    pub password: String,
    /// Optional `filter <header> <value>` sent after subscribing (e.g. `Caller-Context default`); note
    /// that FreeSWITCH then delivers only events matching a filter.
    pub filter: Option<String>,
    /// Bound on connecting and on each handshake step.
    pub connect_timeout: Duration,
    /// Bound on every command's answer.
    pub command_timeout: Duration,
    /// Nothing received for this long: the link is dead.
    pub liveness_timeout: Duration,
    /// Nothing received for this long: send a probe.
    pub probe_after: Duration,
    /// First reconnect delay; doubled on each failure.
    pub backoff_initial: Duration,
    /// Largest reconnect delay.
    pub backoff_max: Duration,
    /// Write every received frame to this file, as it came off the socket (`rtc-core replay` reads it).
    pub record: Option<PathBuf>,
    /// The intake's rules.
    pub intake: IntakeConfig,
    /// Largest frame accepted (a `show channels as json` answer on a busy box is large).
    pub max_frame_size: usize,
    /// Reconcile live calls with `show channels` on each connection.
    pub rebuild: bool,
}

impl Default for EslConfig {
    fn default() -> Self {
        EslConfig {
            host: "127.0.0.1".into(),
            port: 8021,
            password: "ClueCon".into(),
            filter: None,
            connect_timeout: Duration::from_secs(5),
            command_timeout: Duration::from_secs(10),
            liveness_timeout: Duration::from_secs(60),
            probe_after: Duration::from_secs(25),
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(30),
            record: None,
            intake: IntakeConfig::default(),
            max_frame_size: 64 << 20,
            rebuild: true,
        }
    }
}

/// Why the client cannot run (as opposed to a link that drops and is remade).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The password was refused: retrying cannot help.
    #[error("ESL auth refused by {addr}: check the password")]
    AuthRefused {
        /// `host:port`.
        addr: String,
    },
    /// The server's access list refused this host.
    #[error(
        "ESL connection refused by {addr}'s access list ({text}): allow this host in event_socket.conf.xml \
         (apply-inbound-acl)"
    )]
    AclRefused {
        /// `host:port`.
        addr: String,
        /// The server's words.
        text: String,
    },
    /// The configured filter was refused.
    #[error("ESL {addr} refused `filter {filter}`: {text}")]
    FilterRefused {
        /// `host:port`.
        addr: String,
        /// The filter.
        filter: String,
        /// The reply.
        text: String,
    },
    /// The event subscription was refused.
    #[error("ESL {addr} refused the event subscription: {text}")]
    SubscribeRefused {
        /// `host:port`.
        addr: String,
        /// The reply.
        text: String,
    },
    /// The record file cannot be written.
    #[error("cannot write the ESL record file {path}: {problem}")]
    Record {
        /// The file.
        path: String,
        /// The OS's words.
        problem: String,
    },
    /// A setting that cannot work.
    #[error("bad ESL setting: {0}")]
    Config(String),
    /// No connection yet.
    #[error("not connected to ESL at {addr} after {waited:?} (last problem: {last})")]
    NotConnected {
        /// `host:port`.
        addr: String,
        /// How long the caller waited.
        waited: Duration,
        /// The last connection failure.
        last: String,
    },
    /// The client was shut down.
    #[error("ESL client stopped")]
    Stopped,
}

/// Why a command got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// No answer within the deadline.
    #[error("ESL command `{command}` got no answer within {after:?}")]
    Timeout {
        /// The command.
        command: String,
        /// The deadline.
        after: Duration,
    },
    /// The link dropped with the command in flight.
    #[error("ESL link to {addr} dropped with `{command}` in flight; its outcome is unknown")]
    LinkDown {
        /// `host:port`.
        addr: String,
        /// The command.
        command: String,
    },
    /// The link was down when the command was issued.
    #[error("ESL link to {addr} is down: `{command}` was not sent")]
    NotConnected {
        /// `host:port`.
        addr: String,
        /// The command.
        command: String,
    },
    /// FreeSWITCH answered with an error.
    #[error("FreeSWITCH refused `{command}`: {text}")]
    Refused {
        /// The command.
        command: String,
        /// The reply.
        text: String,
    },
    /// The command could not be written as asked.
    #[error(transparent)]
    Bad(#[from] crate::control::BadCommand),
    /// The client is shut down.
    #[error("ESL client stopped: `{command}` was not sent")]
    Closed {
        /// The command.
        command: String,
    },
}

/// A command's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// A `command/reply` or `api/response`.
    Reply(Reply),
    /// A `bgapi` result.
    Job(BackgroundJob),
}

/// Who is told a command's outcome.
pub(crate) enum Responder {
    /// A caller waiting on [`EslClient::api`] and friends.
    Waiter(Sender<Result<Answer, CommandError>>),
    /// The engine's command for a call: failures are counted and logged with its uuid.
    Call(CallId),
    /// The idle probe: any answer will do.
    Probe,
    /// The reconnect reconciliation, with the calls the engine held.
    Rebuild(Vec<CallId>),
}

/// What goes to the writer.
pub(crate) enum Outgoing {
    /// The engine's call control.
    Call(CallCommand),
    /// A command from the client itself or its users.
    Raw(Wire, Responder),
}

/// Counters, shared by the client's threads and [`EslCallControl`].
#[derive(Debug, Default)]
pub struct ClientCounters {
    connects: AtomicU64,
    connect_failures: AtomicU64,
    disconnects: AtomicU64,
    bytes_received: AtomicU64,
    events_submitted: AtomicU64,
    events_queue_full: AtomicU64,
    events_engine_stopped: AtomicU64,
    commands_sent: AtomicU64,
    command_failures: AtomicU64,
    command_timeouts: AtomicU64,
    commands_link_down: AtomicU64,
    pub(crate) commands_closed: AtomicU64,
    bad_commands: AtomicU64,
    unmatched_replies: AtomicU64,
    probes: AtomicU64,
    stuck_links: AtomicU64,
    rebuilds: AtomicU64,
    rebuild_hangups: AtomicU64,
    rebuild_unknown_channels: AtomicU64,
    rebuild_unreadable: AtomicU64,
}

/// A snapshot of the client's counters.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct ClientStats {
    /// Successful handshakes.
    pub connects: u64,
    /// Failed connection attempts.
    pub connect_failures: u64,
    /// Links lost after a handshake.
    pub disconnects: u64,
    /// Bytes read.
    pub bytes_received: u64,
    /// Events handed to the engine.
    pub events_submitted: u64,
    /// Events dropped because the engine's queue was full.
    pub events_queue_full: u64,
    /// Events dropped because the engine had stopped.
    pub events_engine_stopped: u64,
    /// Commands written.
    pub commands_sent: u64,
    /// Commands FreeSWITCH refused (`-ERR ...`).
    pub command_failures: u64,
    /// Commands without an answer in time.
    pub command_timeouts: u64,
    /// Commands lost to a dropped link (in flight, or issued while down).
    pub commands_link_down: u64,
    /// Commands issued after the client stopped.
    pub commands_closed: u64,
    /// Engine commands refused before sending (unsafe values).
    pub bad_commands: u64,
    /// Replies or job results matching no command.
    pub unmatched_replies: u64,
    /// Idle probes sent.
    pub probes: u64,
    /// Links dropped because a reply was overdue.
    pub stuck_links: u64,
    /// `show channels` reconciliations completed.
    pub rebuilds: u64,
    /// Calls found gone after a reconnect and ended in the engine.
    pub rebuild_hangups: u64,
    /// Channels on FreeSWITCH the engine does not follow (left alone), at the last reconciliation.
    pub rebuild_unknown_channels: u64,
    /// Reconciliations skipped because the answer could not be read completely.
    pub rebuild_unreadable: u64,
    /// The intake's counters.
    pub intake: IntakeStats,
}

/// The command queue between the engine's call control and the client, made before either starts (the
/// engine needs its call control at start, the client needs the engine's handle).
pub struct EslLink {
    /// Commands in.
    tx: Sender<Outgoing>,
    /// Commands out, to the writer.
    rx: Receiver<Outgoing>,
    /// Counters shared with the call control.
    counters: Arc<ClientCounters>,
}

impl Default for EslLink {
    fn default() -> Self {
        Self::new()
    }
}

impl EslLink {
    /// A new queue, with its counters.
    pub fn new() -> Self {
        let (tx, rx) = crossbeam_channel::unbounded();
        EslLink {
            tx,
            rx,
            counters: Arc::new(ClientCounters::default()),
        }
    }

    /// The engine's call control over this link.
    pub fn call_control(&self) -> EslCallControl {
        EslCallControl::new(self.tx.clone(), self.counters.clone())
    }
}

/// The engine's call control over ESL: the engine's end of an [`EslLink`]. It never blocks: each command goes
/// to the connection's writer, which encodes it ([`encode`]) and sends it (see [`crate::control`]).
pub struct EslCallControl {
    /// To the connection's writer.
    tx: Sender<Outgoing>,
    /// Where refused sends are counted.
    counters: Arc<ClientCounters>,
}

impl EslCallControl {
    fn new(tx: Sender<Outgoing>, counters: Arc<ClientCounters>) -> Self {
        EslCallControl { tx, counters }
    }
}

impl CallControl for EslCallControl {
    fn execute(&mut self, command: CallCommand) {
        if self.tx.send(Outgoing::Call(command)).is_err() {
            self.counters
                .commands_closed
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Where the link stands, for [`EslClient::wait_connected`].
#[derive(Clone, Debug)]
enum LinkState {
    /// Not connected; the last problem, if any.
    Down(String),
    Up,
    Fatal(ClientError),
    Stopped,
}

/// State shared by the client's handle and threads.
struct Shared {
    /// The settings.
    cfg: EslConfig,
    /// `host:port`, for messages.
    addr: String,
    /// Set by shutdown.
    stop: AtomicBool,
    /// The link's state, with a condvar for waiters.
    state: Mutex<LinkState>,
    /// Signalled when `state` changes.
    changed: Condvar,
    /// The current socket, so that shutdown (and tests) can cut it.
    socket: Mutex<Option<TcpStream>>,
    /// Counters.
    counters: Arc<ClientCounters>,
    /// The intake's counters at the last read.
    intake: Mutex<IntakeStats>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn set_state(&self, s: LinkState) {
        *lock(&self.state) = s;
        self.changed.notify_all();
    }
}

/// The running client. Dropping it shuts it down.
pub struct EslClient {
    shared: Arc<Shared>,
    /// Commands in (for [`EslClient::api`] and [`EslClient::bgapi`]).
    tx: Sender<Outgoing>,
    thread: Option<JoinHandle<()>>,
}

impl EslClient {
    /// Starts the client's thread; it connects in the background (see [`EslClient::wait_connected`]).
    pub fn start(
        cfg: EslConfig,
        link: EslLink,
        engine: EngineHandle,
    ) -> Result<EslClient, ClientError> {
        if cfg.password.contains(['\n', '\r']) {
            return Err(ClientError::Config(
                "the password holds a line break".into(),
            ));
        }
        if let Some(f) = &cfg.filter
            && (f.contains(['\n', '\r']) || !f.trim().contains(' '))
        {
            return Err(ClientError::Config(format!(
                "filter {f:?} must be `<header> <value>` on one line"
            )));
        }
        let record = match &cfg.record {
            Some(path) => Some(BufWriter::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| ClientError::Record {
                        path: path.display().to_string(),
                        problem: e.to_string(),
                    })?,
            )),
            None => None,
        };
        let shared = Arc::new(Shared {
            addr: format!("{}:{}", cfg.host, cfg.port),
            cfg,
            stop: AtomicBool::new(false),
            state: Mutex::new(LinkState::Down(String::from("not tried yet"))),
            changed: Condvar::new(),
            socket: Mutex::new(None),
            counters: link.counters.clone(),
            intake: Mutex::new(IntakeStats::default()),
        });
        let tx = link.tx.clone();
        let sh = shared.clone();
        let thread = std::thread::Builder::new()
            .name("rtc-esl".into())
            .spawn(move || supervise(sh, link, engine, record))
            .map_err(|e| ClientError::Config(format!("cannot start the ESL thread: {e}")))?;
        Ok(EslClient {
            shared,
            tx,
            thread: Some(thread),
        })
    }

    /// `host:port`.
    pub fn addr(&self) -> &str {
        &self.shared.addr
    }

    /// Waits until the link is up, or fails at once on an error retrying cannot fix.
    pub fn wait_connected(&self, timeout: Duration) -> Result<(), ClientError> {
        let deadline = Instant::now() + timeout;
        let mut st = lock(&self.shared.state);
        loop {
            match &*st {
                LinkState::Up => return Ok(()),
                LinkState::Fatal(e) => return Err(e.clone()),
                LinkState::Stopped => return Err(ClientError::Stopped),
                LinkState::Down(last) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(ClientError::NotConnected {
                            addr: self.shared.addr.clone(),
                            waited: timeout,
                            last: last.clone(),
                        });
                    }
                    st = self
                        .shared
                        .changed
                        .wait_timeout(st, deadline - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
        }
    }

    /// The error that stopped the client for good, if any.
    pub fn fatal_error(&self) -> Option<ClientError> {
        match &*lock(&self.shared.state) {
            LinkState::Fatal(e) => Some(e.clone()),
            _ => None,
        }
    }

    /// Whether the link is up (authenticated and subscribed).
    pub fn is_connected(&self) -> bool {
        matches!(*lock(&self.shared.state), LinkState::Up)
    }

    /// A snapshot of the client's counters.
    pub fn stats(&self) -> ClientStats {
        let c = &self.shared.counters;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ClientStats {
            connects: g(&c.connects),
            connect_failures: g(&c.connect_failures),
            disconnects: g(&c.disconnects),
            bytes_received: g(&c.bytes_received),
            events_submitted: g(&c.events_submitted),
            events_queue_full: g(&c.events_queue_full),
            events_engine_stopped: g(&c.events_engine_stopped),
            commands_sent: g(&c.commands_sent),
            command_failures: g(&c.command_failures),
            command_timeouts: g(&c.command_timeouts),
            commands_link_down: g(&c.commands_link_down),
            commands_closed: g(&c.commands_closed),
            bad_commands: g(&c.bad_commands),
            unmatched_replies: g(&c.unmatched_replies),
            probes: g(&c.probes),
            stuck_links: g(&c.stuck_links),
            rebuilds: g(&c.rebuilds),
            rebuild_hangups: g(&c.rebuild_hangups),
            rebuild_unknown_channels: g(&c.rebuild_unknown_channels),
            rebuild_unreadable: g(&c.rebuild_unreadable),
            intake: *lock(&self.shared.intake),
        }
    }

    /// Sends a one-line command and waits for its answer (bounded by the command timeout). For tools and
    /// tests: `api` blocks FreeSWITCH's listener while it runs, so the engine's own commands never use it.
    pub fn command(&self, command: &str) -> Result<Answer, CommandError> {
        let wire = Wire::line(command)?;
        let summary = wire.summary.clone();
        let (tx, rx) = crossbeam_channel::bounded(1);
        if self
            .tx
            .send(Outgoing::Raw(wire, Responder::Waiter(tx)))
            .is_err()
        {
            return Err(CommandError::Closed { command: summary });
        }
        // The writer and reader enforce the deadline; the margin covers a link being torn down.
        let bound = self.shared.cfg.command_timeout * 2 + Duration::from_secs(1);
        match rx.recv_timeout(bound) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) => Err(CommandError::Timeout {
                command: summary,
                after: bound,
            }),
            Err(RecvTimeoutError::Disconnected) => Err(CommandError::Closed { command: summary }),
        }
    }

    /// `api <command>`: its `api/response`, an error when it starts with `-ERR`.
    pub fn api(&self, command: &str) -> Result<Reply, CommandError> {
        match self.command(&format!("api {command}"))? {
            Answer::Reply(r) => Ok(r),
            Answer::Job(j) => Ok(Reply {
                ok: j.ok,
                text: j.body,
                job_uuid: Some(j.job_uuid),
            }),
        }
    }

    /// `bgapi <command>`: its `BACKGROUND_JOB` result.
    pub fn bgapi(&self, command: &str) -> Result<BackgroundJob, CommandError> {
        match self.command(&format!("bgapi {command}"))? {
            Answer::Job(j) => Ok(j),
            Answer::Reply(r) => Err(CommandError::Refused {
                command: format!("bgapi {command}"),
                text: r.text,
            }),
        }
    }

    /// Cuts the current connection as a network failure would (the client then reconnects). For tests
    /// and operators' drills.
    pub fn cut_link(&self) {
        if let Some(s) = lock(&self.shared.socket).as_ref() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Stops the client: the link is closed, commands not yet answered fail, the thread is joined.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.cut_link();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for EslClient {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One command awaiting its answer.
struct Entry {
    /// For logs and errors.
    summary: String,
    /// What answer.
    expect: Expect,
    /// Who is told (taken when told).
    responder: Option<Responder>,
    /// When the answer is overdue.
    deadline: Instant,
    /// The call an engine command is for (its hangup waits for its variables).
    call: Option<CallId>,
    /// Whether this is a `uuid_setvar_multi`.
    setvar: bool,
}

/// Commands in flight on one connection.
#[derive(Default)]
struct Pending {
    /// Awaiting `command/reply` or `api/response`, in the order written.
    fifo: VecDeque<Entry>,
    /// `bgapi` jobs accepted, awaiting `BACKGROUND_JOB`.
    jobs: HashMap<CompactString, Entry>,
    /// Hangups held until the same call's variables are set: two `bgapi`s run on separate FreeSWITCH
    /// threads, so a `uuid_kill` sent right after a `uuid_setvar_multi` may overtake it and the variables
    /// (`rtc_reject_reason`) would never reach the channel.
    held: Vec<(CallId, Wire)>,
}

impl Pending {
    /// Whether a `uuid_setvar_multi` for `call` awaits its answer.
    fn setvar_pending(&self, call: CallId) -> bool {
        let is = |e: &Entry| e.setvar && e.call == Some(call);
        self.fifo.iter().any(is) || self.jobs.values().any(is)
    }

    /// The held commands of `call` that may go now.
    fn release(&mut self, call: Option<CallId>) -> Vec<Wire> {
        let Some(call) = call else {
            return Vec::new();
        };
        if self.setvar_pending(call) {
            return Vec::new();
        }
        let mut out = Vec::new();
        self.held.retain(|(c, w)| {
            if *c == call {
                out.push(w.clone());
                false
            } else {
                true
            }
        });
        out
    }
}

/// Sends released commands back through the writer's queue.
fn send_released(tx: &Sender<Outgoing>, call: Option<CallId>, wires: Vec<Wire>) {
    if let Some(call) = call {
        for w in wires {
            let _ = tx.send(Outgoing::Raw(w, Responder::Call(call)));
        }
    }
}

/// How a session ended.
enum SessionEnd {
    Stop,
    Lost(String),
    Fatal(ClientError),
}

fn supervise(
    shared: Arc<Shared>,
    link: EslLink,
    engine: EngineHandle,
    mut record: Option<BufWriter<File>>,
) {
    let cfg = shared.cfg.clone();
    let mut intake = Intake::new(
        cfg.intake.clone(),
        FramerConfig {
            max_frame_size: cfg.max_frame_size,
            ..FramerConfig::default()
        },
    );
    let mut backoff = cfg.backoff_initial;
    let mut failures_logged = 0u32;
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        intake.reset_stream();
        let end = match connect(&shared, &mut intake, record.as_mut()) {
            Ok(stream) => {
                backoff = cfg.backoff_initial;
                failures_logged = 0;
                shared.counters.connects.fetch_add(1, Ordering::Relaxed);
                log::info!("ESL connected to {}", shared.addr);
                shared.set_state(LinkState::Up);
                let end = session(
                    &shared,
                    &link,
                    &engine,
                    &mut intake,
                    record.as_mut(),
                    stream,
                );
                let end = match end {
                    // A socket cut by shutdown is not a lost link.
                    SessionEnd::Lost(_) if shared.stop.load(Ordering::SeqCst) => SessionEnd::Stop,
                    e => e,
                };
                if let SessionEnd::Lost(why) = &end {
                    shared.counters.disconnects.fetch_add(1, Ordering::Relaxed);
                    log::warn!("ESL link to {} lost: {why}; reconnecting", shared.addr);
                    shared.set_state(LinkState::Down(why.clone()));
                }
                end
            }
            Err(SessionEnd::Lost(why)) => {
                shared
                    .counters
                    .connect_failures
                    .fetch_add(1, Ordering::Relaxed);
                if failures_logged < 5 || failures_logged.is_power_of_two() {
                    log::warn!(
                        "ESL cannot connect to {}: {why}; retrying in {backoff:?}",
                        shared.addr
                    );
                }
                failures_logged += 1;
                shared.set_state(LinkState::Down(why.clone()));
                SessionEnd::Lost(why)
            }
            Err(end) => end,
        };
        *lock(&shared.intake) = intake.stats();
        match end {
            SessionEnd::Stop => break,
            SessionEnd::Fatal(e) => {
                log::error!("{e}");
                shared.set_state(LinkState::Fatal(e));
                // Fail what comes until shut down.
                while !shared.stop.load(Ordering::SeqCst) {
                    if let Ok(out) = link.rx.recv_timeout(Duration::from_millis(50)) {
                        fail_unsent(&shared, out, false);
                    }
                }
                break;
            }
            SessionEnd::Lost(_) => {}
        }
        // Down: wait before retrying, failing commands at once rather than holding them.
        let until = Instant::now() + backoff;
        while !shared.stop.load(Ordering::SeqCst) {
            let now = Instant::now();
            if now >= until {
                break;
            }
            if let Ok(out) = link
                .rx
                .recv_timeout((until - now).min(Duration::from_millis(50)))
            {
                fail_unsent(&shared, out, false);
            }
        }
        backoff = (backoff * 2).min(cfg.backoff_max);
    }
    if let Some(r) = record.as_mut() {
        let _ = r.flush();
    }
    while let Ok(out) = link.rx.try_recv() {
        fail_unsent(&shared, out, true);
    }
    if !matches!(*lock(&shared.state), LinkState::Fatal(_)) {
        shared.set_state(LinkState::Stopped);
    }
}

/// Fails a command that was never sent.
fn fail_unsent(shared: &Shared, out: Outgoing, closed: bool) {
    let counters = &shared.counters;
    let err = |command: String| {
        if closed {
            CommandError::Closed { command }
        } else {
            CommandError::NotConnected {
                addr: shared.addr.clone(),
                command,
            }
        }
    };
    match out {
        Outgoing::Call(cmd) => {
            if closed {
                counters.commands_closed.fetch_add(1, Ordering::Relaxed);
            } else {
                counters.commands_link_down.fetch_add(1, Ordering::Relaxed);
            }
            log::warn!(
                "call {}: {:?} not sent: ESL link to {} is down",
                cmd.call(),
                kind_of(&cmd),
                shared.addr
            );
        }
        Outgoing::Raw(wire, responder) => {
            counters.commands_link_down.fetch_add(1, Ordering::Relaxed);
            respond(
                shared,
                responder,
                &wire.summary,
                Err(err(wire.summary.clone())),
            );
        }
    }
}

fn kind_of(cmd: &CallCommand) -> &'static str {
    match cmd {
        CallCommand::SetVariables { .. } => "set variables",
        CallCommand::Bridge { .. } => "bridge",
        CallCommand::Hangup { .. } => "hangup",
        CallCommand::LowBalance(_) => "low balance warning",
        CallCommand::Fraud(_) => "fraud event",
    }
}

/// Tells a command's responder its outcome; engine commands' failures are counted and logged.
fn respond(
    shared: &Shared,
    responder: Responder,
    summary: &str,
    outcome: Result<Answer, CommandError>,
) {
    let counters = &shared.counters;
    // Command replies say +OK or -ERR; api output is any text, and an error when it starts with -ERR
    // (or -USAGE).
    let refused = match &outcome {
        Ok(Answer::Reply(r)) if r.text.starts_with('-') => Some(r.text.clone()),
        Ok(Answer::Job(j)) if j.body.starts_with('-') => Some(j.body.trim_end().to_string()),
        _ => None,
    };
    if refused.is_some() {
        counters.command_failures.fetch_add(1, Ordering::Relaxed);
    }
    match responder {
        Responder::Waiter(tx) => {
            let outcome = match (outcome, refused) {
                (Ok(_), Some(text)) => Err(CommandError::Refused {
                    command: summary.to_string(),
                    text,
                }),
                (o, _) => o,
            };
            let _ = tx.try_send(outcome);
        }
        Responder::Call(call) => match (outcome, refused) {
            (Err(e), _) => log::warn!("call {call}: {e}"),
            (Ok(_), Some(text)) => log::warn!("call {call}: FreeSWITCH refused {summary}: {text}"),
            _ => {}
        },
        Responder::Probe => {}
        Responder::Rebuild(_) => {
            if let Err(e) = outcome {
                log::warn!("ESL reconciliation after reconnect skipped: {e}");
            }
        }
    }
}

/// Connects and performs the handshake: auth, optional filter, subscription.
fn connect(
    shared: &Shared,
    intake: &mut Intake,
    mut record: Option<&mut BufWriter<File>>,
) -> Result<TcpStream, SessionEnd> {
    let cfg = &shared.cfg;
    let addr: SocketAddr = (cfg.host.as_str(), cfg.port)
        .to_socket_addrs()
        .map_err(|e| SessionEnd::Lost(format!("cannot resolve {}: {e}", shared.addr)))?
        .next()
        .ok_or_else(|| SessionEnd::Lost(format!("{} resolves to no address", shared.addr)))?;
    let stream = TcpStream::connect_timeout(&addr, cfg.connect_timeout)
        .map_err(|e| SessionEnd::Lost(e.to_string()))?;
    let _ = stream.set_nodelay(true);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(15))
        .with_interval(Duration::from_secs(5));
    if let Err(e) = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive) {
        log::debug!("ESL: TCP keepalive not set: {e}");
    }
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    let _ = stream.set_write_timeout(Some(cfg.command_timeout));
    *lock(&shared.socket) = stream.try_clone().ok();
    let mut stream = stream;
    let deadline = Instant::now() + cfg.connect_timeout;
    let mut buf = vec![0u8; 16 * 1024];
    // Reads until a message of interest arrives.
    let mut next =
        |stream: &mut TcpStream, intake: &mut Intake| -> Result<EslMessage, SessionEnd> {
            loop {
                if let Some(m) = intake.next_message() {
                    match m {
                        Ok(m @ (EslMessage::Event(_) | EslMessage::Log { .. })) => {
                            log::debug!("ESL handshake: ignored {m:?}")
                        }
                        Ok(m) => return Ok(m),
                        Err(e) => log::warn!("ESL handshake: {e}"),
                    }
                    continue;
                }
                if shared.stop.load(Ordering::SeqCst) {
                    return Err(SessionEnd::Stop);
                }
                if Instant::now() >= deadline {
                    return Err(SessionEnd::Lost(format!(
                        "handshake not finished within {:?}",
                        cfg.connect_timeout
                    )));
                }
                match stream.read(&mut buf) {
                    Ok(0) => {
                        return Err(SessionEnd::Lost(
                            "connection closed during the handshake".into(),
                        ));
                    }
                    Ok(n) => {
                        shared
                            .counters
                            .bytes_received
                            .fetch_add(n as u64, Ordering::Relaxed);
                        intake.push(&buf[..n]);
                    }
                    Err(e) if is_timeout(&e) => {}
                    Err(e) => return Err(SessionEnd::Lost(e.to_string())),
                }
            }
        };
    let send = |stream: &mut TcpStream, text: &str| -> Result<(), SessionEnd> {
        stream
            .write_all(format!("{text}\n\n").as_bytes())
            .map_err(|e| SessionEnd::Lost(format!("write failed during the handshake: {e}")))
    };
    intake.set_recording(record.is_some());
    let result = (|| {
        match next(&mut stream, intake)? {
            EslMessage::AuthRequest => {}
            EslMessage::Rejected { text } => {
                return Err(SessionEnd::Fatal(ClientError::AclRefused {
                    addr: shared.addr.clone(),
                    text: text.trim().to_string(),
                }));
            }
            other => {
                return Err(SessionEnd::Lost(format!(
                    "expected auth/request, got {other:?}"
                )));
            }
        }
        send(&mut stream, &format!("auth {}", cfg.password))?;
        match next(&mut stream, intake)? {
            EslMessage::CommandReply(r) if r.ok => {}
            EslMessage::CommandReply(_) | EslMessage::Disconnect { .. } => {
                return Err(SessionEnd::Fatal(ClientError::AuthRefused {
                    addr: shared.addr.clone(),
                }));
            }
            other => {
                return Err(SessionEnd::Lost(format!(
                    "expected the auth reply, got {other:?}"
                )));
            }
        }
        if let Some(f) = &cfg.filter {
            send(&mut stream, &format!("filter {f}"))?;
            match next(&mut stream, intake)? {
                EslMessage::CommandReply(r) if r.ok => {}
                EslMessage::CommandReply(r) => {
                    return Err(SessionEnd::Fatal(ClientError::FilterRefused {
                        addr: shared.addr.clone(),
                        filter: f.clone(),
                        text: r.text,
                    }));
                }
                other => {
                    return Err(SessionEnd::Lost(format!(
                        "expected the filter reply, got {other:?}"
                    )));
                }
            }
        }
        send(&mut stream, &format!("event plain {SUBSCRIPTION}"))?;
        match next(&mut stream, intake)? {
            EslMessage::CommandReply(r) if r.ok => Ok(()),
            EslMessage::CommandReply(r) => Err(SessionEnd::Fatal(ClientError::SubscribeRefused {
                addr: shared.addr.clone(),
                text: r.text,
            })),
            other => Err(SessionEnd::Lost(format!(
                "expected the subscription reply, got {other:?}"
            ))),
        }
    })();
    if let Some(r) = record.as_mut() {
        let _ = r.write_all(&intake.take_recorded());
        let _ = r.flush();
    }
    match result {
        Ok(()) => Ok(stream),
        Err(e) => {
            let _ = stream.shutdown(Shutdown::Both);
            *lock(&shared.socket) = None;
            Err(e)
        }
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// Runs one connection after its handshake until it drops or the client stops.
fn session(
    shared: &Arc<Shared>,
    link: &EslLink,
    engine: &EngineHandle,
    intake: &mut Intake,
    mut record: Option<&mut BufWriter<File>>,
    mut stream: TcpStream,
) -> SessionEnd {
    let cfg = &shared.cfg;
    let pending = Arc::new(Mutex::new(Pending::default()));
    let alive = Arc::new(AtomicBool::new(true));
    let writer = match stream.try_clone() {
        Ok(w) => {
            let (sh, rx, p, a) = (
                shared.clone(),
                link.rx.clone(),
                pending.clone(),
                alive.clone(),
            );
            std::thread::Builder::new()
                .name("rtc-esl-w".into())
                .spawn(move || write_loop(sh, w, rx, p, a))
                .ok()
        }
        Err(_) => None,
    };
    if writer.is_none() {
        return SessionEnd::Lost("cannot start the writer thread".into());
    }
    if cfg.rebuild {
        let known = match engine.query(Query::Calls { limit: usize::MAX }, Duration::from_secs(5)) {
            Ok(QueryReply::Calls(c)) => c.into_iter().map(|c| c.uuid).collect(),
            _ => Vec::new(),
        };
        if let Ok(wire) = Wire::line("bgapi show channels as json") {
            let _ = link.tx.send(Outgoing::Raw(wire, Responder::Rebuild(known)));
        }
    }
    let mut buf = vec![0u8; 64 * 1024];
    let mut last_rx = Instant::now();
    let mut last_probe = Instant::now();
    let mut last_check = Instant::now();
    let end = loop {
        if shared.stop.load(Ordering::SeqCst) {
            break SessionEnd::Stop;
        }
        if !alive.load(Ordering::SeqCst) {
            break SessionEnd::Lost("write failed".into());
        }
        match stream.read(&mut buf) {
            Ok(0) => break SessionEnd::Lost("closed by FreeSWITCH".into()),
            Ok(n) => {
                last_rx = Instant::now();
                shared
                    .counters
                    .bytes_received
                    .fetch_add(n as u64, Ordering::Relaxed);
                intake.push(&buf[..n]);
                let mut closing = None;
                while let Some(m) = intake.next_message() {
                    match m {
                        Ok(m) => {
                            if let Some(why) = on_message(shared, engine, &pending, &link.tx, m) {
                                closing = Some(why);
                            }
                        }
                        Err(e) => log::warn!("{e}"),
                    }
                }
                if let Some(r) = record.as_mut() {
                    let _ = r.write_all(&intake.take_recorded());
                    let _ = r.flush();
                }
                if let Some(why) = closing {
                    break SessionEnd::Lost(why);
                }
            }
            Err(e) if is_timeout(&e) => {}
            Err(e) => break SessionEnd::Lost(e.to_string()),
        }
        let now = Instant::now();
        if now.duration_since(last_check) >= Duration::from_millis(100) {
            last_check = now;
            *lock(&shared.intake) = intake.stats();
            if let Some(why) = expire(shared, &pending, &link.tx, now) {
                shared.counters.stuck_links.fetch_add(1, Ordering::Relaxed);
                break SessionEnd::Lost(why);
            }
            let idle = now.duration_since(last_rx);
            if idle >= cfg.liveness_timeout {
                break SessionEnd::Lost(format!("nothing received for {idle:?}"));
            }
            if idle >= cfg.probe_after && now.duration_since(last_probe) >= cfg.probe_after {
                last_probe = now;
                shared.counters.probes.fetch_add(1, Ordering::Relaxed);
                if let Ok(wire) = Wire::line("bgapi uptime") {
                    let _ = link.tx.send(Outgoing::Raw(wire, Responder::Probe));
                }
            }
        }
    };
    // Tear down: stop the writer, then fail what is in flight.
    alive.store(false, Ordering::SeqCst);
    let _ = stream.shutdown(Shutdown::Both);
    *lock(&shared.socket) = None;
    if let Some(w) = writer {
        let _ = w.join();
    }
    let mut p = lock(&pending);
    let mut entries: Vec<Entry> = p.fifo.drain(..).collect();
    entries.extend(p.jobs.drain().map(|(_, e)| e));
    entries.extend(p.held.drain(..).map(|(call, w)| Entry {
        summary: w.summary,
        expect: w.expect,
        responder: Some(Responder::Call(call)),
        deadline: Instant::now(),
        call: Some(call),
        setvar: false,
    }));
    drop(p);
    for mut e in entries {
        if let Some(r) = e.responder.take() {
            shared
                .counters
                .commands_link_down
                .fetch_add(1, Ordering::Relaxed);
            let err = if matches!(end, SessionEnd::Stop) {
                CommandError::Closed {
                    command: e.summary.clone(),
                }
            } else {
                CommandError::LinkDown {
                    addr: shared.addr.clone(),
                    command: e.summary.clone(),
                }
            };
            respond(shared, r, &e.summary, Err(err));
        }
    }
    *lock(&shared.intake) = intake.stats();
    end
}

/// Applies one message; returns why the link is closing, if it is.
fn on_message(
    shared: &Shared,
    engine: &EngineHandle,
    pending: &Mutex<Pending>,
    tx: &Sender<Outgoing>,
    m: EslMessage,
) -> Option<String> {
    let counters = &shared.counters;
    match m {
        EslMessage::Event(ev) => submit(counters, engine, ev),
        EslMessage::CommandReply(reply) | EslMessage::ApiResponse(reply) => {
            let mut p = lock(pending);
            let Some(mut entry) = p.fifo.pop_front() else {
                drop(p);
                counters.unmatched_replies.fetch_add(1, Ordering::Relaxed);
                log::debug!("ESL reply matching no command: {}", reply.text);
                return None;
            };
            if entry.expect == Expect::BgApi
                && reply.ok
                && let Some(job) = reply.job_uuid.clone()
            {
                if entry.responder.is_some() {
                    entry.deadline = Instant::now() + shared.cfg.command_timeout;
                    p.jobs.insert(job, entry);
                }
                return None;
            }
            let released = p.release(entry.call);
            drop(p);
            if let Some(r) = entry.responder.take() {
                respond(shared, r, &entry.summary, Ok(Answer::Reply(reply)));
            }
            send_released(tx, entry.call, released);
        }
        EslMessage::BackgroundJob(job) => {
            let (entry, released) = {
                let mut p = lock(pending);
                let entry = p.jobs.remove(&job.job_uuid);
                let released = p.release(entry.as_ref().and_then(|e| e.call));
                (entry, released)
            };
            send_released(tx, entry.as_ref().and_then(|e| e.call), released);
            match entry {
                Some(mut e) => match e.responder.take() {
                    Some(Responder::Rebuild(known)) => {
                        reconcile(shared, engine, &job.body, known);
                    }
                    Some(r) => respond(shared, r, &e.summary, Ok(Answer::Job(job))),
                    None => {}
                },
                None => {
                    // Another client's job, or one whose caller gave up.
                    counters.unmatched_replies.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        EslMessage::Disconnect { text } => {
            return Some(format!("FreeSWITCH said: {}", text.trim()));
        }
        EslMessage::Rejected { text } => return Some(format!("rejected: {}", text.trim())),
        EslMessage::AuthRequest | EslMessage::Log { .. } | EslMessage::Other { .. } => {}
    }
    None
}

fn submit(counters: &ClientCounters, engine: &EngineHandle, ev: CallEvent) {
    match engine.submit_event(ev) {
        Ok(()) => counters.events_submitted.fetch_add(1, Ordering::Relaxed),
        Err(SubmitError::QueueFull(_)) => {
            counters.events_queue_full.fetch_add(1, Ordering::Relaxed)
        }
        Err(SubmitError::Stopped) => counters
            .events_engine_stopped
            .fetch_add(1, Ordering::Relaxed),
    };
}

/// Tells callers whose commands are overdue; returns why the link is stuck, if a reply is overdue by a
/// whole second timeout.
fn expire(
    shared: &Shared,
    pending: &Mutex<Pending>,
    tx: &Sender<Outgoing>,
    now: Instant,
) -> Option<String> {
    let timeout = shared.cfg.command_timeout;
    let mut told: Vec<(Responder, String)> = Vec::new();
    let mut stuck = None;
    {
        let mut p = lock(pending);
        for e in p.fifo.iter_mut() {
            if now >= e.deadline
                && let Some(r) = e.responder.take()
            {
                told.push((r, e.summary.clone()));
            }
        }
        if let Some(front) = p.fifo.front()
            && now >= front.deadline + timeout
        {
            stuck = Some(format!(
                "no reply to `{}` within {:?}: the listener is stuck",
                front.summary,
                timeout * 2
            ));
        }
        let overdue: Vec<CompactString> = p
            .jobs
            .iter()
            .filter(|(_, e)| now >= e.deadline)
            .map(|(k, _)| k.clone())
            .collect();
        for k in overdue {
            if let Some(mut e) = p.jobs.remove(&k) {
                if let Some(r) = e.responder.take() {
                    told.push((r, e.summary.clone()));
                }
                let released = p.release(e.call);
                send_released(tx, e.call, released);
            }
        }
    }
    for (r, summary) in told {
        if !matches!(r, Responder::Probe) {
            shared
                .counters
                .command_timeouts
                .fetch_add(1, Ordering::Relaxed);
        }
        respond(
            shared,
            r,
            &summary.clone(),
            Err(CommandError::Timeout {
                command: summary,
                after: timeout,
            }),
        );
    }
    stuck
}

/// The writer: commands from the queue to the socket, each registered before it is written so that its
/// reply, which cannot come earlier, finds it.
fn write_loop(
    shared: Arc<Shared>,
    stream: TcpStream,
    rx: Receiver<Outgoing>,
    pending: Arc<Mutex<Pending>>,
    alive: Arc<AtomicBool>,
) {
    let mut out = BufWriter::with_capacity(64 * 1024, stream);
    let timeout = shared.cfg.command_timeout;
    'run: while alive.load(Ordering::SeqCst) {
        let first = match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(o) => o,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let mut next = Some(first);
        while let Some(o) = next.take() {
            let items: Vec<(Wire, Responder)> = match o {
                Outgoing::Call(cmd) => {
                    let call = cmd.call();
                    match encode(&cmd) {
                        Ok(wires) => wires
                            .into_iter()
                            .map(|w| (w, Responder::Call(call)))
                            .collect(),
                        Err(e) => {
                            shared.counters.bad_commands.fetch_add(1, Ordering::Relaxed);
                            log::error!("{e}");
                            Vec::new()
                        }
                    }
                }
                Outgoing::Raw(w, r) => vec![(w, r)],
            };
            for (wire, responder) in items {
                let call = match &responder {
                    Responder::Call(c) => Some(*c),
                    _ => None,
                };
                let setvar = wire.summary.starts_with("uuid_setvar_multi");
                {
                    let mut p = lock(&pending);
                    if let Some(c) = call
                        && wire.summary.starts_with("uuid_kill")
                        && p.setvar_pending(c)
                    {
                        p.held.push((c, wire));
                        continue;
                    }
                    p.fifo.push_back(Entry {
                        summary: wire.summary,
                        expect: wire.expect,
                        responder: Some(responder),
                        deadline: Instant::now() + timeout,
                        call,
                        setvar,
                    });
                }
                if out.write_all(&wire.bytes).is_err() {
                    alive.store(false, Ordering::SeqCst);
                    break 'run;
                }
                shared
                    .counters
                    .commands_sent
                    .fetch_add(1, Ordering::Relaxed);
            }
            // Batch what is already queued into one write.
            if out.buffer().len() < 48 * 1024
                && let Ok(o) = rx.try_recv()
            {
                next = Some(o);
            }
        }
        if out.flush().is_err() {
            alive.store(false, Ordering::SeqCst);
        }
    }
}

/// Reconciles the engine's calls with FreeSWITCH's channels after a (re)connection. See the module docs.
fn reconcile(shared: &Shared, engine: &EngineHandle, body: &str, known: Vec<CallId>) {
    let counters = &shared.counters;
    let Some(live) = read_channels(body) else {
        counters.rebuild_unreadable.fetch_add(1, Ordering::Relaxed);
        log::warn!(
            "ESL reconnect: could not read `show channels as json` completely; no call is changed \
             (calls whose hangup was lost are swept later)"
        );
        return;
    };
    counters.rebuilds.fetch_add(1, Ordering::Relaxed);
    let known_set: HashSet<CallId> = known.iter().copied().collect();
    let mut gone = 0u64;
    let mut answered = 0u64;
    for id in &known {
        // Answered during the outage (its CHANNEL_ANSWER lost): the engine learns it now, or it would take the
        // call for one still ringing. A call it already knows connected absorbs the repeat.
        if live.get(id) == Some(&true) {
            let mut ev = CallEvent::new(*id, EventKind::ChannelAnswer, 0);
            ev.timestamp_us = rtc_engine::core::epoch_us();
            submit(counters, engine, ev);
            answered += 1;
        }
    }
    for id in known.iter().filter(|id| !live.contains_key(id)) {
        let mut ev = CallEvent::new(*id, EventKind::ChannelHangup, 0);
        ev.timestamp_us = rtc_engine::core::epoch_us();
        log::info!("call {id}: gone from FreeSWITCH while the ESL link was down; ending it");
        submit(counters, engine, ev);
        gone += 1;
    }
    let unknown = live.keys().filter(|id| !known_set.contains(id)).count() as u64;
    counters.rebuild_hangups.fetch_add(gone, Ordering::Relaxed);
    counters
        .rebuild_unknown_channels
        .store(unknown, Ordering::Relaxed);
    log::info!(
        "ESL reconciliation: {} channels on FreeSWITCH, {} calls held by the engine, {gone} ended during \
         the outage, {answered} up and answered, {unknown} channels not followed (left alone)",
        live.len(),
        known.len()
    );
}

/// The channels of a `show channels as json` answer, each with whether it is answered (`callstate` ACTIVE or
/// HELD), or `None` unless it was read completely.
pub fn read_channels(body: &str) -> Option<HashMap<CallId, bool>> {
    let v: serde_json::Value = serde_json::from_str(body.trim()).ok()?;
    let count = v.get("row_count")?.as_u64()?;
    let rows: &[serde_json::Value] = match v.get("rows") {
        Some(r) => r.as_array()?,
        None => &[],
    };
    let mut out = HashMap::with_capacity(rows.len());
    for row in rows {
        let id = CallId::parse(row.get("uuid")?.as_str()?).ok()?;
        let answered = matches!(
            row.get("callstate").and_then(|v| v.as_str()),
            Some("ACTIVE" | "HELD")
        );
        out.insert(id, answered);
    }
    (count == rows.len() as u64).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_lists_are_read_completely_or_not_at_all() {
        assert_eq!(read_channels("{\"row_count\": 0}\n"), Some(HashMap::new()));
        let one = r#"{"row_count":1,"rows":[{"uuid":"4b2a1c3e-9f10-4d2b-8a7e-0123456789ab","direction":"inbound"}]}"#;
        assert_eq!(read_channels(one).map(|s| s.len()), Some(1));
        let two = r#"{"row_count":2,"rows":[
            {"uuid":"4b2a1c3e-9f10-4d2b-8a7e-0123456789ab","callstate":"ACTIVE"},
            {"uuid":"0e7c5a1f-2222-4d2b-8a7e-0123456789ff","callstate":"RINGING"}]}"#;
        let read = read_channels(two).expect("read");
        let state = |u: &str| read.get(&CallId::parse(u).unwrap()).copied();
        assert_eq!(state("4b2a1c3e-9f10-4d2b-8a7e-0123456789ab"), Some(true));
        assert_eq!(state("0e7c5a1f-2222-4d2b-8a7e-0123456789ff"), Some(false));
        for bad in [
            "-ERR no reply",
            r#"{"row_count":2,"rows":[{"uuid":"4b2a1c3e-9f10-4d2b-8a7e-0123456789ab"}]}"#,
            r#"{"row_count":1,"rows":[{"uuid":"not-a-uuid"}]}"#,
            r#"{"row_count":1,"rows":[{"name":"x"}]}"#,
            r#"{"rows":[]}"#,
        ] {
            assert_eq!(read_channels(bad), None, "{bad}");
        }
    }
}
