//! An event socket server that plays FreeSWITCH, for tests, benchmarks and simulations of ESL mode.
//!
//! It speaks the protocol as `mod_event_socket` does — `auth/request` on connect, `-ERR invalid` and a
//! disconnect notice for a wrong password, `event plain ...` subscriptions (including `ALL` and
//! `CUSTOM <subclass>...`), `filter` with FreeSWITCH's rules (an event passes when any filter matches it; a
//! `-`-prefixed value excludes), `api` and `bgapi` (with the `BACKGROUND_JOB` event), `sendmsg`, `exit`,
//! and `text/disconnect-notice` when it closes — and it keeps, per listener, a bounded event queue that,
//! when full, gets the listener killed as FreeSWITCH does at 100,000 events.
//!
//! Calls are played by [`rtc_engine::sim`]'s traffic driver through [`EslSwitch`], the driver's
//! [`EventSink`]: channel events become frames for every subscribed listener, and the commands listeners
//! send come back to the driver as [`CallCommand`]s — `sendmsg <uuid>` `execute bridge` as a bridge
//! (attempt from `rtc_attempt`), `uuid_kill` as a hangup, `uuid_setvar_multi` as the decision. The switch
//! side of a bridge is kept as FreeSWITCH keeps it: a dial string `error/<CAUSE>` fails at once without an
//! outbound leg; messages sent after an `event-lock` bridge wait until the bridge returns (an outbound leg
//! hung up unanswered, or the call ended); the `event` application fires its event then, with
//! `variable_originate_disposition`.
//!
//! Differences from FreeSWITCH: only exact-value filters (no `/regex/`); `api` knows `status`, `uptime`,
//! `show channels as json`, `uuid_kill`, `uuid_setvar_multi`; `originate` is refused.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::percent;
use crate::write::{self, Host};
use rtc_engine::cause::HangupCause;
use rtc_engine::control::CallCommand;
use rtc_engine::core::epoch_us;
use rtc_engine::domain::{Money, Route};
use rtc_engine::engine::EngineHandle;
use rtc_engine::event::{CallEvent, Direction, EventKind};
use rtc_engine::id::CallId;
use rtc_engine::sim::EventSink;
use rtc_engine::stats::Stats;

/// FreeSWITCH's goodbye.
const GOODBYE: &str = "Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n";

/// Largest command accepted from a client.
const MAX_COMMAND: usize = 1 << 20;

/// The channel variables (name without `variable_`, value) an endpoint set on the channel an event is about.
pub type ChannelVariables = fn(&CallEvent) -> Vec<(String, String)>;

/// How the server behaves.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The password `auth` must give.
    pub password: String,
    /// Send `HEARTBEAT` this often to listeners subscribed to it (FreeSWITCH: 20 s).
    pub heartbeat: Option<Duration>,
    /// What the server stamps on events about itself.
    pub host: Host,
    /// Events queued for one listener before it is killed (FreeSWITCH: 100,000).
    pub queue_limit: usize,
    /// Channel variables the endpoint set on a channel, written after the others on each of its events as
    /// `variable_<name>` (e.g. mod_sofia's `sip_h_X-Source-IP` from an INVITE's headers); `None`: none.
    pub channel_variables: Option<ChannelVariables>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            password: "ClueCon".into(),
            heartbeat: Some(Duration::from_secs(20)),
            host: Host {
                ipv4: "127.0.0.1".into(),
                ..Host::default()
            },
            queue_limit: 100_000,
            channel_variables: None,
        }
    }
}

/// What the server saw, for tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Connections accepted.
    pub connections: u64,
    /// Wrong passwords.
    pub auth_failures: u64,
    /// Channel events written to at least one listener.
    pub events_sent: u64,
    /// Listeners killed for a full queue.
    pub listeners_killed: u64,
    /// `sendmsg ... bridge` received.
    pub bridges: u64,
    /// `uuid_kill` received.
    pub kills: u64,
    /// `uuid_setvar_multi` received.
    pub setvars: u64,
    /// Commands for channels that do not exist.
    pub no_such_channel: u64,
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    auth_failures: AtomicU64,
    events_sent: AtomicU64,
    listeners_killed: AtomicU64,
    bridges: AtomicU64,
    kills: AtomicU64,
    setvars: AtomicU64,
    no_such_channel: AtomicU64,
}

/// What a listener asked to receive.
#[derive(Default)]
struct Subscription {
    /// `event plain ALL`.
    all: bool,
    /// Event names.
    names: HashSet<String>,
    /// `CUSTOM` subclasses.
    subclasses: HashSet<String>,
    /// `filter <header> <value>` pairs.
    filters: Vec<(String, String)>,
}

impl Subscription {
    fn wants(&self, name: &str, subclass: Option<&str>) -> bool {
        if self.all {
            return true;
        }
        match subclass {
            Some(sub) => self.names.contains("CUSTOM") && self.subclasses.contains(sub),
            None => self.names.contains(name),
        }
    }

    /// FreeSWITCH's filter rule: with filters, an event passes when a filter on a header it has matches;
    /// a match of a `-`-prefixed value excludes it.
    fn passes(&self, body: &[u8]) -> bool {
        if self.filters.is_empty() {
            return true;
        }
        let mut send = false;
        let mut scratch = Vec::new();
        for (name, value) in &self.filters {
            let Some(raw) = header_value(body, name) else {
                continue;
            };
            let (neg, want) = match value.strip_prefix('-') {
                Some(v) => (true, v),
                None => (false, value.strip_prefix('+').unwrap_or(value)),
            };
            if send && !neg {
                continue;
            }
            let (have, _) = percent::decode_text(raw, &mut scratch);
            if have.eq_ignore_ascii_case(want) {
                if neg {
                    return false;
                }
                send = true;
            }
        }
        send
    }
}

fn header_value<'a>(body: &'a [u8], name: &str) -> Option<&'a [u8]> {
    let head_end = memchr::memmem::find(body, b"\n\n").unwrap_or(body.len());
    body[..head_end].split(|b| *b == b'\n').find_map(|line| {
        let rest = line.strip_prefix(name.as_bytes())?;
        rest.strip_prefix(b": ")
    })
}

/// One connected listener.
struct Conn {
    /// Frames to write, bounded like FreeSWITCH's listener queue.
    out: Sender<Vec<u8>>,
    /// Passed `auth`.
    authed: AtomicBool,
    /// Its subscription and filters.
    sub: Mutex<Subscription>,
    /// For cutting it.
    stream: TcpStream,
    /// Set once it is being closed.
    closed: AtomicBool,
}

impl Conn {
    fn send(&self, frame: Vec<u8>) -> bool {
        !self.closed.load(Ordering::Relaxed) && self.out.try_send(frame).is_ok()
    }

    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// Where a channel's bridge stands.
#[derive(Clone, Debug, PartialEq, Eq)]
enum BridgeState {
    Idle,
    /// Running attempt `n`: messages wait.
    Running(u8),
    /// Returned, with its `originate_disposition`.
    Ended(String),
}

/// One application waiting for a bridge to return.
struct QueuedApp {
    name: String,
    arg: String,
}

/// A channel the switch has.
struct Chan {
    direction: Direction,
    /// The a-leg of an outbound leg.
    a_leg: Option<CallId>,
    answered: bool,
    bridge: BridgeState,
    queued: Vec<QueuedApp>,
    destination: String,
    created_epoch: u64,
}

/// The server's state.
struct Shared {
    cfg: ServerConfig,
    stop: AtomicBool,
    conns: Mutex<Vec<Arc<Conn>>>,
    channels: Mutex<HashMap<CallId, Chan>>,
    /// To the traffic driver.
    commands: Sender<CallCommand>,
    /// Server-made events' sequence numbers.
    seq: AtomicU64,
    /// Close new connections at once until then (a switch that is down).
    refuse_until: Mutex<Option<Instant>>,
    /// Read commands but answer none (a stuck switch).
    mute: AtomicBool,
    /// Serialises the running of queued applications.
    resuming: Mutex<()>,
    counters: Counters,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The running server. Dropping it stops it.
pub struct EslServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    commands: Mutex<Option<Receiver<CallCommand>>>,
    threads: Vec<JoinHandle<()>>,
}

impl EslServer {
    /// Listens on `127.0.0.1:port` (0: any free port).
    pub fn start(port: u16, cfg: ServerConfig) -> std::io::Result<EslServer> {
        let listener = TcpListener::bind(("127.0.0.1", port))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (tx, rx) = crossbeam_channel::unbounded();
        let shared = Arc::new(Shared {
            cfg,
            stop: AtomicBool::new(false),
            conns: Mutex::new(Vec::new()),
            channels: Mutex::new(HashMap::new()),
            commands: tx,
            seq: AtomicU64::new(1 << 40),
            refuse_until: Mutex::new(None),
            mute: AtomicBool::new(false),
            resuming: Mutex::new(()),
            counters: Counters::default(),
        });
        let mut threads = Vec::new();
        let sh = shared.clone();
        threads.push(
            std::thread::Builder::new()
                .name("esl-sim-accept".into())
                .spawn(move || accept_loop(sh, listener))?,
        );
        if let Some(every) = shared.cfg.heartbeat {
            let sh = shared.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("esl-sim-heartbeat".into())
                    .spawn(move || heartbeat_loop(sh, every))?,
            );
        }
        Ok(EslServer {
            shared,
            addr,
            commands: Mutex::new(Some(rx)),
            threads,
        })
    }

    /// Where the server listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The switch for the traffic driver and the commands it receives (once). `engine`, when given, lets
    /// the driver watch the engine's live calls.
    pub fn switch(
        &self,
        engine: Option<EngineHandle>,
    ) -> Option<(EslSwitch, Receiver<CallCommand>)> {
        let rx = lock(&self.commands).take()?;
        Some((
            EslSwitch {
                shared: self.shared.clone(),
                engine,
            },
            rx,
        ))
    }

    /// Cuts every connection without a goodbye, as a network failure would.
    pub fn cut_connections(&self) {
        for c in lock(&self.shared.conns).drain(..) {
            c.close();
        }
    }

    /// Cuts every connection and closes new ones at once for `for_how_long` (a switch restarting).
    pub fn go_down(&self, for_how_long: Duration) {
        *lock(&self.shared.refuse_until) = Some(Instant::now() + for_how_long);
        self.cut_connections();
    }

    /// Stops answering commands (a stuck switch) or starts again.
    pub fn set_mute(&self, mute: bool) {
        self.shared.mute.store(mute, Ordering::SeqCst);
    }

    /// Listeners connected and authenticated.
    pub fn listeners(&self) -> usize {
        lock(&self.shared.conns)
            .iter()
            .filter(|c| c.authed.load(Ordering::Relaxed) && !c.closed.load(Ordering::Relaxed))
            .count()
    }

    /// Channels the switch has.
    pub fn channels(&self) -> usize {
        lock(&self.shared.channels).len()
    }

    /// The server's counters.
    pub fn stats(&self) -> ServerStats {
        let c = &self.shared.counters;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ServerStats {
            connections: g(&c.connections),
            auth_failures: g(&c.auth_failures),
            events_sent: g(&c.events_sent),
            listeners_killed: g(&c.listeners_killed),
            bridges: g(&c.bridges),
            kills: g(&c.kills),
            setvars: g(&c.setvars),
            no_such_channel: g(&c.no_such_channel),
        }
    }

    /// Stops: listeners get a disconnect notice, threads are joined.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for c in lock(&self.shared.conns).drain(..) {
            let mut f = Vec::new();
            write::write_disconnect_notice(GOODBYE, &mut f);
            let _ = c.send(f);
            // Let the writer flush the notice, then close.
            std::thread::sleep(Duration::from_millis(20));
            c.close();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for EslServer {
    fn drop(&mut self) {
        self.halt();
    }
}

fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let refusing = lock(&shared.refuse_until).is_some_and(|t| Instant::now() < t);
                if refusing {
                    let _ = stream.shutdown(Shutdown::Both);
                    continue;
                }
                shared.counters.connections.fetch_add(1, Ordering::Relaxed);
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_nodelay(true);
                let sh = shared.clone();
                let _ = std::thread::Builder::new()
                    .name("esl-sim-conn".into())
                    .spawn(move || serve(sh, stream));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

fn heartbeat_loop(shared: Arc<Shared>, every: Duration) {
    let mut next = Instant::now() + every;
    while !shared.stop.load(Ordering::SeqCst) {
        if Instant::now() >= next {
            next += every;
            let mut f = Vec::new();
            let seq = shared.seq.fetch_add(1, Ordering::Relaxed);
            write::write_heartbeat(&shared.cfg.host, seq, epoch_us(), &mut f);
            broadcast(&shared, "HEARTBEAT", None, &f);
        }
        std::thread::sleep(Duration::from_millis(10).min(every));
    }
}

/// Writes `frame` (a whole `text/event-plain` frame) to every listener that wants it.
fn broadcast(shared: &Shared, name: &str, subclass: Option<&str>, frame: &[u8]) -> bool {
    // The event body starts after the frame's own header block.
    let body = memchr::memmem::find(frame, b"\n\n").map_or(frame, |p| &frame[p + 2..]);
    let mut sent = false;
    let mut conns = lock(&shared.conns);
    conns.retain(|c| !c.closed.load(Ordering::Relaxed));
    for c in conns.iter() {
        if !c.authed.load(Ordering::Relaxed) {
            continue;
        }
        let wanted = {
            let sub = lock(&c.sub);
            sub.wants(name, subclass) && sub.passes(body)
        };
        if !wanted {
            continue;
        }
        match c.out.try_send(frame.to_vec()) {
            Ok(()) => sent = true,
            Err(TrySendError::Full(_)) => {
                shared
                    .counters
                    .listeners_killed
                    .fetch_add(1, Ordering::Relaxed);
                log::warn!(
                    "ESL simulator: listener queue reached {} events; killing the listener as FreeSWITCH does",
                    shared.cfg.queue_limit
                );
                c.close();
            }
            Err(TrySendError::Disconnected(_)) => c.close(),
        }
    }
    sent
}

/// Serves one connection: a writer thread drains its queue; this thread reads commands.
fn serve(shared: Arc<Shared>, stream: TcpStream) {
    let Ok(write_half) = stream.try_clone() else {
        return;
    };
    let (tx, rx) = crossbeam_channel::bounded::<Vec<u8>>(shared.cfg.queue_limit.max(1));
    let conn = Arc::new(Conn {
        out: tx,
        authed: AtomicBool::new(false),
        sub: Mutex::new(Subscription::default()),
        stream,
        closed: AtomicBool::new(false),
    });
    lock(&shared.conns).push(conn.clone());
    let writer = std::thread::Builder::new()
        .name("esl-sim-write".into())
        .spawn(move || {
            let mut w = std::io::BufWriter::new(write_half);
            while let Ok(f) = rx.recv() {
                if w.write_all(&f).is_err() {
                    break;
                }
                while let Ok(f) = rx.try_recv() {
                    if w.write_all(&f).is_err() {
                        return;
                    }
                }
                if w.flush().is_err() {
                    break;
                }
            }
        });
    let mut f = Vec::new();
    write::write_auth_request(&mut f);
    conn.send(f);
    let mut reader = match conn.stream.try_clone() {
        Ok(r) => r,
        Err(_) => return,
    };
    let _ = reader.set_read_timeout(Some(Duration::from_millis(100)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    'read: while !shared.stop.load(Ordering::SeqCst) && !conn.closed.load(Ordering::Relaxed) {
        match reader.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(_) => break,
        }
        if buf.len() > MAX_COMMAND {
            break;
        }
        while let Some(end) = memchr::memmem::find(&buf, b"\n\n") {
            let text = String::from_utf8_lossy(&buf[..end]).replace('\r', "");
            buf.drain(..end + 2);
            let text = text.trim_start_matches('\n');
            if text.is_empty() {
                continue;
            }
            if !command(&shared, &conn, text) {
                break 'read;
            }
        }
    }
    // Let the writer send what is queued (a goodbye), then close: the writer ends when the queue's
    // sender goes with the last reference to the connection.
    lock(&shared.conns).retain(|c| !Arc::ptr_eq(c, &conn));
    let stream = conn.stream.try_clone();
    drop(conn);
    if let Ok(w) = writer {
        let _ = w.join();
    }
    if let Ok(s) = stream {
        let _ = s.shutdown(Shutdown::Both);
    }
}

fn reply(conn: &Conn, text: &str) {
    let mut f = Vec::new();
    write::write_command_reply(text, &mut f);
    conn.send(f);
}

fn goodbye(conn: &Conn) {
    let mut f = Vec::new();
    write::write_disconnect_notice(GOODBYE, &mut f);
    conn.send(f);
}

/// Handles one command; `false` ends the connection.
fn command(shared: &Arc<Shared>, conn: &Arc<Conn>, text: &str) -> bool {
    let mut lines = text.split('\n');
    let first = lines.next().unwrap_or("").trim();
    let (verb, rest) = first.split_once(' ').unwrap_or((first, ""));
    if !conn.authed.load(Ordering::Relaxed) {
        if verb == "auth" {
            if rest.trim() == shared.cfg.password {
                conn.authed.store(true, Ordering::SeqCst);
                reply(conn, "+OK accepted");
                return true;
            }
            shared
                .counters
                .auth_failures
                .fetch_add(1, Ordering::Relaxed);
            reply(conn, "-ERR invalid");
            goodbye(conn);
            return false;
        }
        reply(conn, "-ERR command not found");
        return true;
    }
    if shared.mute.load(Ordering::SeqCst) {
        return true;
    }
    match verb {
        "event" => {
            let mut words = rest.split_whitespace();
            if words.next() != Some("plain") {
                reply(conn, "-ERR only plain events are simulated");
                return true;
            }
            let mut sub = lock(&conn.sub);
            let mut custom = false;
            for w in words {
                if custom {
                    sub.subclasses.insert(w.to_string());
                } else if w == "ALL" {
                    sub.all = true;
                } else {
                    if w == "CUSTOM" {
                        custom = true;
                    }
                    sub.names.insert(w.to_string());
                }
            }
            drop(sub);
            reply(conn, "+OK event listener enabled plain");
        }
        "noevents" => {
            let mut sub = lock(&conn.sub);
            sub.all = false;
            sub.names.clear();
            sub.subclasses.clear();
            drop(sub);
            reply(conn, "+OK no longer listening for events");
        }
        "filter" => match rest.trim().split_once(' ') {
            Some((h, v)) => {
                lock(&conn.sub)
                    .filters
                    .push((h.to_string(), v.trim().to_string()));
                reply(conn, &format!("+OK filter added. [{h}]=[{}]", v.trim()));
            }
            None => reply(conn, "-ERR invalid syntax"),
        },
        "api" => {
            let body = api(shared, rest.trim());
            let mut f = Vec::new();
            write::write_api_response(&body, &mut f);
            conn.send(f);
        }
        "bgapi" => {
            let job = CallId::from_u128(fastrand::u128(..)).to_string();
            let mut f = Vec::new();
            write::write_bgapi_reply(&job, &mut f);
            conn.send(f);
            let cmd = rest.trim().to_string();
            let result = api(shared, &cmd);
            let (name, arg) = cmd.split_once(' ').unwrap_or((cmd.as_str(), ""));
            let mut f = Vec::new();
            let seq = shared.seq.fetch_add(1, Ordering::Relaxed);
            write::write_background_job(
                &shared.cfg.host,
                &job,
                name,
                (!arg.is_empty()).then_some(arg),
                &result,
                seq,
                epoch_us(),
                &mut f,
            );
            broadcast(shared, "BACKGROUND_JOB", None, &f);
        }
        "sendmsg" => {
            let headers: HashMap<String, String> = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                .collect();
            let text = sendmsg(shared, rest.trim(), &headers);
            reply(conn, &text);
        }
        "exit" => {
            reply(conn, "+OK bye");
            goodbye(conn);
            return false;
        }
        "log" | "nolog" | "linger" | "nolinger" | "nixevent" | "myevents" | "divert_events" => {
            reply(conn, "+OK");
        }
        _ => reply(conn, "-ERR command not found"),
    }
    true
}

/// Runs an api command; returns its output.
fn api(shared: &Arc<Shared>, cmd: &str) -> String {
    let (name, arg) = cmd.split_once(' ').unwrap_or((cmd, ""));
    let arg = arg.trim();
    match name {
        "status" => format!(
            "UP 0 years, 0 days, 0 hours, 1 minute, 0 seconds, 0 milliseconds, 0 microseconds\n\
             FreeSWITCH (Version 1.10.12-release ESL simulator) is ready\n{} session(s)\n",
            lock(&shared.channels).len()
        ),
        "uptime" => "60\n".into(),
        "show" if arg == "channels as json" => {
            let chans = lock(&shared.channels);
            if chans.is_empty() {
                return "{\"row_count\": 0}\n".into();
            }
            let rows: Vec<serde_json::Value> = chans
                .iter()
                .map(|(id, c)| {
                    serde_json::json!({
                        "uuid": id.to_string(),
                        "direction": if c.direction == Direction::Outbound { "outbound" } else { "inbound" },
                        "created_epoch": c.created_epoch.to_string(),
                        "dest": c.destination,
                        "callstate": if c.answered { "ACTIVE" } else { "RINGING" },
                    })
                })
                .collect();
            format!(
                "{}\n",
                serde_json::json!({"row_count": rows.len(), "rows": rows})
            )
        }
        "uuid_kill" => {
            let mut words = arg.split_whitespace();
            let Some(id) = words.next().and_then(|u| CallId::parse(u).ok()) else {
                return "-ERR Usage: uuid_kill <uuid> [cause]\n".into();
            };
            shared.counters.kills.fetch_add(1, Ordering::Relaxed);
            if let Err(reply) = known_channel(shared, id) {
                return reply;
            }
            let cause = words
                .next()
                .and_then(HangupCause::parse)
                .unwrap_or(HangupCause::NORMAL_CLEARING);
            let _ = shared
                .commands
                .send(CallCommand::Hangup { call: id, cause });
            "+OK\n".into()
        }
        "uuid_setvar_multi" => {
            let Some(id) = arg
                .split_whitespace()
                .next()
                .and_then(|u| CallId::parse(u).ok())
            else {
                return "-ERR Usage: uuid_setvar_multi <uuid> <var>=<value>;...\n".into();
            };
            shared.counters.setvars.fetch_add(1, Ordering::Relaxed);
            if let Err(reply) = known_channel(shared, id) {
                return reply;
            }
            let _ = shared.commands.send(CallCommand::SetVariables {
                call: id,
                vars: Vec::new(),
            });
            "+OK\n".into()
        }
        "originate" => "-ERR originate is not simulated\n".into(),
        _ => format!("-ERR {name} Command not found!\n"),
    }
}

/// `Ok` when the simulated switch has channel `id`; else the reply FreeSWITCH's `uuid_*` commands give,
/// counted.
fn known_channel(shared: &Shared, id: CallId) -> Result<(), String> {
    if lock(&shared.channels).contains_key(&id) {
        return Ok(());
    }
    shared
        .counters
        .no_such_channel
        .fetch_add(1, Ordering::Relaxed);
    Err("-ERR No such channel!\n".into())
}

/// Handles `sendmsg <uuid>`; returns the reply text.
fn sendmsg(shared: &Arc<Shared>, uuid: &str, headers: &HashMap<String, String>) -> String {
    let Ok(id) = CallId::parse(uuid) else {
        return format!("-ERR invalid session id [{uuid}]");
    };
    if headers.get("call-command").map(String::as_str) != Some("execute") {
        return "+OK".into();
    }
    let app = headers.get("execute-app-name").cloned().unwrap_or_default();
    let arg = headers.get("execute-app-arg").cloned().unwrap_or_default();
    {
        let mut chans = lock(&shared.channels);
        let Some(chan) = chans.get_mut(&id) else {
            shared
                .counters
                .no_such_channel
                .fetch_add(1, Ordering::Relaxed);
            return format!("-ERR invalid session id [{uuid}]");
        };
        // Messages run in order, one at a time; a running (event-locked) bridge holds the rest.
        chan.queued.push(QueuedApp { name: app, arg });
    }
    resume(shared, id);
    "+OK".into()
}

/// Runs the channel's queued applications in order until one (a bridge) holds the channel.
fn resume(shared: &Shared, id: CallId) {
    let _one_at_a_time = lock(&shared.resuming);
    loop {
        let (app, disposition) = {
            let mut chans = lock(&shared.channels);
            let Some(chan) = chans.get_mut(&id) else {
                return;
            };
            if matches!(chan.bridge, BridgeState::Running(_)) || chan.queued.is_empty() {
                return;
            }
            let app = chan.queued.remove(0);
            let disposition = match &chan.bridge {
                BridgeState::Ended(d) => d.clone(),
                _ => "SUCCESS".into(),
            };
            if app.name == "bridge" {
                shared.counters.bridges.fetch_add(1, Ordering::Relaxed);
                let (vars, target) = split_dial_string(&app.arg);
                let attempt = vars
                    .iter()
                    .find(|(k, _)| k == "rtc_attempt")
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(0u8);
                chan.bridge = match target.strip_prefix("error/") {
                    // The error endpoint fails the bridge without creating a channel.
                    Some(cause) => BridgeState::Ended(cause.to_string()),
                    None => BridgeState::Running(attempt),
                };
            }
            (app, disposition)
        };
        match app.name.as_str() {
            "bridge" => {
                let (vars, target) = split_dial_string(&app.arg);
                if target.starts_with("error/") {
                    continue;
                }
                let attempt = vars
                    .iter()
                    .find(|(k, _)| k == "rtc_attempt")
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(0u8);
                let _ = shared.commands.send(CallCommand::Bridge {
                    call: id,
                    attempt,
                    route: Route {
                        carrier: "simulated".into(),
                        dial_string: target.into(),
                        cost_per_minute: Money(0),
                    },
                    max_duration_s: 0,
                });
            }
            "event" => fire_event_app(shared, id, &app.arg, &disposition),
            "hangup" => {
                let cause =
                    HangupCause::parse(app.arg.trim()).unwrap_or(HangupCause::NORMAL_CLEARING);
                let _ = shared
                    .commands
                    .send(CallCommand::Hangup { call: id, cause });
            }
            _ => {}
        }
    }
}

/// `{a=1,b=2}target` → ([(a,1),(b,2)], target).
fn split_dial_string(arg: &str) -> (Vec<(String, String)>, &str) {
    let Some(rest) = arg.strip_prefix('{') else {
        return (Vec::new(), arg);
    };
    let Some(end) = rest.find('}') else {
        return (Vec::new(), arg);
    };
    let vars = rest[..end]
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    (vars, &rest[end + 1..])
}

/// The `event` application: `Event-Name=CUSTOM,Event-Subclass=x,k=v` fires an event carrying the channel.
fn fire_event_app(shared: &Shared, id: CallId, arg: &str, disposition: &str) {
    let mut name = "CHANNEL_APPLICATION".to_string();
    let mut subclass = None;
    let mut extra = Vec::new();
    for kv in arg.split(',') {
        let Some((k, v)) = kv.split_once('=') else {
            continue;
        };
        match k {
            "Event-Name" => name = v.to_string(),
            "Event-Subclass" => subclass = Some(v.to_string()),
            _ => extra.push((k.to_string(), v.to_string())),
        }
    }
    let uuid = id.to_string();
    let seq = shared.seq.fetch_add(1, Ordering::Relaxed).to_string();
    let ts = epoch_us().to_string();
    // FreeSWITCH 1.10 writes the application's Event-Subclass first, Event-Name after the core headers.
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    if let Some(s) = &subclass {
        pairs.push(("Event-Subclass", s));
    }
    pairs.push(("Event-Name", &name));
    pairs.extend([
        ("Core-UUID", "6f0c1d2e-3b4a-4c5d-8e9f-a0b1c2d3e4f5"),
        ("Event-Date-Timestamp", &ts),
        ("Event-Sequence", &seq),
        ("Unique-ID", &uuid),
        ("Call-Direction", "inbound"),
        ("variable_originate_disposition", disposition),
    ]);
    for (k, v) in &extra {
        pairs.push((k, v));
    }
    let mut body = Vec::new();
    write::serialize_event(&pairs, None, &mut body);
    let mut frame = Vec::new();
    write::write_event_frame(&body, &mut frame);
    broadcast(shared, &name, subclass.as_deref(), &frame);
}

/// The traffic driver's switch: its events become frames on the server's listeners. See the module docs.
pub struct EslSwitch {
    shared: Arc<Shared>,
    /// For the driver's view of the engine's live calls, when in-process.
    engine: Option<EngineHandle>,
}

impl EslSwitch {
    /// Keeps the switch's channel table as FreeSWITCH would, and ends bridges; returns the applications
    /// that were waiting on a bridge that just returned, with its disposition.
    /// A channel exists before its first event is written (commands may come back at once).
    fn open(&self, ev: &CallEvent) {
        let mut chans = lock(&self.shared.channels);
        if !chans.contains_key(&ev.uuid) {
            if matches!(
                ev.kind,
                EventKind::ChannelHangupComplete | EventKind::ChannelDestroy
            ) {
                return;
            }
            chans.entry(ev.uuid).or_insert_with(|| Chan {
                direction: ev.direction,
                a_leg: ev.other_leg.filter(|_| ev.direction == Direction::Outbound),
                answered: false,
                bridge: BridgeState::Idle,
                queued: Vec::new(),
                destination: ev.destination.to_string(),
                created_epoch: ev.timestamp_us / 1_000_000,
            });
        }
    }

    /// Applies the event to the switch's state; returns the channel whose bridge just returned.
    fn track(&self, ev: &CallEvent) -> Option<CallId> {
        let mut chans = lock(&self.shared.channels);
        let mut ended: Option<(CallId, String)> = None;
        let a_leg = chans.get(&ev.uuid).and_then(|c| c.a_leg);
        match (ev.kind, ev.direction) {
            (EventKind::ChannelAnswer, _) => {
                if let Some(c) = chans.get_mut(&ev.uuid) {
                    c.answered = true;
                }
            }
            (EventKind::ChannelHangup, Direction::Outbound) => {
                if let Some(a) = a_leg
                    && let Some(ac) = chans.get(&a)
                    && !ac.answered
                    && matches!(ac.bridge, BridgeState::Running(_))
                {
                    let cause = ev
                        .hangup_cause
                        .and_then(|c| c.name())
                        .unwrap_or("NORMAL_TEMPORARY_FAILURE");
                    ended = Some((a, cause.to_string()));
                }
            }
            (EventKind::ChannelHangup, Direction::Inbound) => {
                if let Some(c) = chans.get(&ev.uuid)
                    && matches!(c.bridge, BridgeState::Running(_))
                {
                    let d = if c.answered {
                        "SUCCESS".to_string()
                    } else {
                        "ORIGINATOR_CANCEL".to_string()
                    };
                    ended = Some((ev.uuid, d));
                }
            }
            (EventKind::ChannelDestroy, _) => {
                chans.remove(&ev.uuid);
            }
            _ => {}
        }
        let (a, disposition) = ended?;
        let c = chans.get_mut(&a)?;
        c.bridge = BridgeState::Ended(disposition);
        Some(a)
    }

    /// The attempt number of the bridge an outbound leg belongs to.
    fn attempt_of(&self, ev: &CallEvent) -> Option<u8> {
        if ev.direction != Direction::Outbound {
            return None;
        }
        let chans = lock(&self.shared.channels);
        match chans.get(&ev.other_leg?)?.bridge {
            BridgeState::Running(n) => Some(n),
            _ => None,
        }
    }
}

impl EventSink for EslSwitch {
    fn emit(&mut self, ev: CallEvent) -> bool {
        self.open(&ev);
        let attempt = self.attempt_of(&ev);
        // The switch's state changes with the event, before anyone can react to it.
        let returned = self.track(&ev);
        let mut body = Vec::with_capacity(4096);
        write::serialize_channel_event(ev.kind.name(), &ev, &self.shared.cfg.host, &mut body);
        if let Some(n) = attempt
            && body.ends_with(b"\n\n")
        {
            // The engine's dial-string variable, as FreeSWITCH would carry it on the outbound leg.
            body.pop();
            body.extend_from_slice(format!("variable_rtc_attempt: {n}\n\n").as_bytes());
        }
        if let Some(vars) = self.shared.cfg.channel_variables
            && body.ends_with(b"\n\n")
        {
            body.pop();
            for (name, value) in vars(&ev) {
                body.extend_from_slice(format!("variable_{name}: ").as_bytes());
                percent::encode_into(value.as_bytes(), &mut body);
                body.push(b'\n');
            }
            body.push(b'\n');
        }
        let mut frame = Vec::with_capacity(body.len() + 64);
        write::write_event_frame(&body, &mut frame);
        let sent = broadcast(&self.shared, ev.kind.name(), None, &frame);
        if sent {
            self.shared
                .counters
                .events_sent
                .fetch_add(1, Ordering::Relaxed);
        }
        if let Some(a) = returned {
            resume(&self.shared, a);
        }
        sent
    }

    fn engine_status(&self) -> Option<(usize, Stats)> {
        let engine = self.engine.as_ref()?;
        match engine.query(rtc_engine::engine::Query::Status, Duration::from_secs(10)) {
            Ok(rtc_engine::engine::QueryReply::Status(s)) => Some((s.live_calls, s.stats)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dial_strings_split_into_variables_and_target() {
        let (vars, target) = split_dial_string("{rtc_a_leg=x,rtc_attempt=2}error/NO_ANSWER");
        assert_eq!(target, "error/NO_ANSWER");
        assert_eq!(vars[1], ("rtc_attempt".into(), "2".into()));
        assert_eq!(split_dial_string("sofia/x").1, "sofia/x");
    }

    #[test]
    fn filters_follow_freeswitch_rules() {
        let body = b"Event-Name: CHANNEL_CREATE\nCaller-Context: default\nUnique-ID: u1\n\n";
        let mut s = Subscription::default();
        assert!(s.passes(body));
        s.filters.push(("Caller-Context".into(), "public".into()));
        assert!(!s.passes(body));
        s.filters
            .push(("Event-Name".into(), "CHANNEL_CREATE".into()));
        assert!(s.passes(body));
        s.filters.push(("Unique-ID".into(), "-u1".into()));
        assert!(!s.passes(body));
    }
}
