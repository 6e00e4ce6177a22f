//! The module's only door to the call engine: everything the FreeSWITCH glue needs from it, in one place.
//!
//! The glue (event handler, API, dialplan app, load/shutdown) talks to [`Host`] and [`HostHandle`] only. Today
//! they are backed by [`StubEngine`], a small engine-shaped stand-in on its own `rtc-engine` thread that follows
//! channels and answers queries, so that the module builds, loads and is tested end to end. The real engine
//! (`rtc_engine::Engine::start(config, Box<dyn ServiceSink>, Box<dyn CallControl>)`, `engine.handle()` with
//! `submit_event` / `query`, `Engine::shutdown(self, grace)`) replaces `StubEngine` inside this file; the types
//! and signatures below are the seam and should not need to change.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};
use rtc_engine::control::{CallControl, Variable};
use rtc_engine::reason::Reason;
use rtc_engine::{CallEvent, CallId, EventKind, HangupCause};

/// What the engine is started (or reloaded) with.
#[derive(Clone, Debug)]
pub struct HostConfig {
    /// The text of `rtc_core.conf.xml`'s `<configuration>` element as FreeSWITCH resolved it (pre-processed,
    /// includes expanded). Parsing it is the engine's job: its XML loader serves the module and `rtc-core esl`.
    pub xml: String,
}

/// What the API asks the engine for. Each answer is text ready for fs_cli.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Query {
    /// `rtc_core status`: a summary of the engine.
    Status,
    /// `rtc_core calls`: the live calls.
    Calls,
    /// `rtc_core call <uuid>`: one call and its trace.
    Call(CallId),
    /// `rtc_core breakers`: circuit-breaker states.
    Breakers,
    /// `rtc_core metrics`: counters and histograms in Prometheus text form.
    Metrics,
}

/// What the dialplan app does with a call.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Let the call go on; set these `rtc_*` variables first.
    Proceed {
        /// Variables for the dialplan (partner, rate, route, max duration...).
        vars: Vec<Variable>,
    },
    /// Refuse the call: set `rtc_reject_reason` (and these variables), then hang up with `cause`.
    Reject {
        /// Why, as written to `rtc_reject_reason` and the CDR.
        reason: Reason,
        /// The hangup cause for that reason under the current configuration.
        cause: HangupCause,
        /// Extra variables to set before hanging up.
        vars: Vec<Variable>,
    },
}

/// The engine's inbound queue is full: the event was not taken (counted by the caller, never waited on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("engine queue full")]
pub struct QueueFull;

/// Why the engine could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The engine refused to start: the message says what to fix (usually the configuration).
    #[error("engine did not start: {0}")]
    Start(String),
    /// A reload was refused; the running configuration stays.
    #[error("configuration rejected, previous one kept: {0}")]
    Config(String),
    /// The engine has stopped (module unloading) or its thread died.
    #[error("engine is not running")]
    Stopped,
    /// No answer within the bound the caller gave.
    #[error("engine did not answer within {} ms", .0.as_millis())]
    Timeout(Duration),
}

/// What the stand-in engine's thread receives.
enum Msg {
    Event(CallEvent),
    Query(Query, Sender<String>),
    Decide(CallId, Sender<Decision>),
    Reload(HostConfig, Sender<Result<String, String>>),
    Stop,
}

/// The running engine, owned by the module between load and shutdown.
pub struct Host {
    /// Handle the glue clones for the event handler, API and app.
    handle: HostHandle,
    /// The engine thread; joined by [`Host::shutdown`].
    thread: JoinHandle<()>,
}

/// A cheap, cloneable, `Send` way to reach the engine from any thread.
#[derive(Clone)]
pub struct HostHandle {
    /// The engine's bounded inbound queue.
    tx: Sender<Msg>,
    /// How long the dialplan app waits for a decision (the engine's call setup bound).
    decision_wait: Duration,
}

/// Capacity of the engine queue (the real engine takes it from `EngineConfig::queue_capacity`).
const QUEUE_CAPACITY: usize = 65_536;

impl Host {
    /// Starts the engine with `config`; `control` is how it acts on calls (hang up, set variables, bridge).
    pub fn start(config: HostConfig, control: Box<dyn CallControl>) -> Result<Host, HostError> {
        if !config.xml.contains("<configuration") {
            return Err(HostError::Start(
                "rtc_core.conf.xml has no <configuration> element: install conf/autoload_configs/rtc_core.conf.xml"
                    .into(),
            ));
        }
        let (tx, rx) = bounded(QUEUE_CAPACITY);
        let engine = StubEngine::new(config, control);
        let thread = std::thread::Builder::new()
            .name("rtc-engine".into())
            .spawn(move || engine.run(rx))
            .map_err(|e| HostError::Start(format!("cannot start the engine thread: {e}")))?;
        Ok(Host {
            handle: HostHandle {
                tx,
                decision_wait: Duration::from_secs(10),
            },
            thread,
        })
    }

    /// A handle to the running engine.
    pub fn handle(&self) -> HostHandle {
        self.handle.clone()
    }

    /// Stops the engine: it settles what it can within `grace`, then its thread is joined. Returns only when
    /// no thread of the engine is left, so the module may be unloaded right after.
    pub fn shutdown(self, grace: Duration) {
        let started = Instant::now();
        // A full queue still drains: keep offering the stop until the grace is spent, then block.
        let mut stop = Msg::Stop;
        loop {
            match self.handle.tx.try_send(stop) {
                Ok(()) | Err(TrySendError::Disconnected(_)) => break,
                Err(TrySendError::Full(m)) if started.elapsed() < grace => {
                    stop = m;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(TrySendError::Full(m)) => {
                    let _ = self.handle.tx.send(m);
                    break;
                }
            }
        }
        if self.thread.join().is_err() {
            log::error!("the engine thread panicked while stopping; it is gone all the same");
        }
        let took = started.elapsed();
        if took > grace {
            log::warn!(
                "engine took {} ms to stop, more than its {} ms grace",
                took.as_millis(),
                grace.as_millis()
            );
        }
    }
}

impl HostHandle {
    /// Hands an event to the engine without ever blocking.
    pub fn submit(&self, event: CallEvent) -> Result<(), QueueFull> {
        self.tx.try_send(Msg::Event(event)).map_err(|_| QueueFull)
    }

    /// Asks the engine `query`, waiting at most `timeout` for the answer.
    pub fn query(&self, query: Query, timeout: Duration) -> Result<String, HostError> {
        let (reply, answer) = bounded(1);
        self.send_within(Msg::Query(query, reply), timeout)?;
        recv_within(&answer, timeout)
    }

    /// The decision for `call`, waiting at most `wait` for the engine to reach it.
    pub fn decide(&self, call: CallId, wait: Duration) -> Result<Decision, HostError> {
        let (reply, answer) = bounded(1);
        self.send_within(Msg::Decide(call, reply), wait)?;
        recv_within(&answer, wait)
    }

    /// Replaces the configuration; the answer says what changed, or why the new one was refused.
    pub fn reload(&self, config: HostConfig, timeout: Duration) -> Result<String, HostError> {
        let (reply, answer) = bounded(1);
        self.send_within(Msg::Reload(config, reply), timeout)?;
        recv_within(&answer, timeout)?.map_err(HostError::Config)
    }

    /// How long the dialplan app waits for a decision before giving up on the call.
    pub fn decision_wait(&self) -> Duration {
        self.decision_wait
    }

    fn send_within(&self, msg: Msg, timeout: Duration) -> Result<(), HostError> {
        self.tx.send_timeout(msg, timeout).map_err(|e| match e {
            crossbeam_channel::SendTimeoutError::Timeout(_) => HostError::Timeout(timeout),
            crossbeam_channel::SendTimeoutError::Disconnected(_) => HostError::Stopped,
        })
    }
}

fn recv_within<T>(rx: &Receiver<T>, timeout: Duration) -> Result<T, HostError> {
    rx.recv_timeout(timeout).map_err(|e| match e {
        crossbeam_channel::RecvTimeoutError::Timeout => HostError::Timeout(timeout),
        crossbeam_channel::RecvTimeoutError::Disconnected => HostError::Stopped,
    })
}

/// What the stand-in remembers of a live channel.
struct Channel {
    /// Its CHANNEL_CREATE, as received.
    created: CallEvent,
    /// Last event kind seen.
    last: EventKind,
}

/// The stand-in for the real engine: follows channels from CREATE to DESTROY, counts events, answers
/// queries, and decides trivially (proceed, unless the call has no destination). It exists so that the glue is
/// exercised with the real threading shape — one engine thread fed by a bounded queue — until the real engine
/// replaces it.
struct StubEngine {
    /// Configuration text, for `status` and reload.
    config: HostConfig,
    /// Call control; the stand-in never acts on calls itself, the real engine does.
    _control: Box<dyn CallControl>,
    /// Live channels by UUID.
    channels: HashMap<CallId, Channel>,
    /// Decisions asked for before the call's CHANNEL_CREATE arrived.
    waiting: HashMap<CallId, Vec<Sender<Decision>>>,
    /// Events received, per kind.
    events: [u64; EventKind::ALL.len()],
    /// Reloads accepted.
    reloads: u64,
    /// When the engine started.
    started: Instant,
}

impl StubEngine {
    fn new(config: HostConfig, control: Box<dyn CallControl>) -> Self {
        StubEngine {
            config,
            _control: control,
            channels: HashMap::new(),
            waiting: HashMap::new(),
            events: [0; EventKind::ALL.len()],
            reloads: 0,
            started: Instant::now(),
        }
    }

    fn run(mut self, rx: Receiver<Msg>) {
        log::info!("rtc engine (stand-in) started");
        while let Ok(msg) = rx.recv() {
            match msg {
                Msg::Event(ev) => self.on_event(ev),
                Msg::Query(q, reply) => {
                    let _ = reply.send(self.answer(q));
                }
                Msg::Decide(call, reply) => match self.channels.get(&call) {
                    Some(ch) => {
                        let _ = reply.send(decide(&ch.created));
                    }
                    None => self.waiting.entry(call).or_default().push(reply),
                },
                Msg::Reload(config, reply) => {
                    let answer = if config.xml.contains("<configuration") {
                        self.config = config;
                        self.reloads += 1;
                        Ok(format!(
                            "configuration reloaded ({} bytes)",
                            self.config.xml.len()
                        ))
                    } else {
                        Err("no <configuration> element".to_string())
                    };
                    let _ = reply.send(answer);
                }
                Msg::Stop => break,
            }
        }
        log::info!(
            "rtc engine (stand-in) stopped with {} live channels",
            self.channels.len()
        );
    }

    fn on_event(&mut self, ev: CallEvent) {
        self.events[ev.kind as usize] += 1;
        match ev.kind {
            EventKind::ChannelCreate => {
                if let Some(waiters) = self.waiting.remove(&ev.uuid) {
                    let decision = decide(&ev);
                    for w in waiters {
                        let _ = w.send(decision.clone());
                    }
                }
                self.channels.insert(
                    ev.uuid,
                    Channel {
                        last: ev.kind,
                        created: ev,
                    },
                );
            }
            EventKind::ChannelDestroy => {
                self.channels.remove(&ev.uuid);
                self.waiting.remove(&ev.uuid);
            }
            kind => {
                if let Some(ch) = self.channels.get_mut(&ev.uuid) {
                    ch.last = kind;
                }
            }
        }
    }

    fn answer(&self, q: Query) -> String {
        let mut out = String::new();
        match q {
            Query::Status => {
                let _ = writeln!(
                    out,
                    "engine: stand-in (the call engine is not linked into this build)"
                );
                let _ = writeln!(out, "uptime_s: {}", self.started.elapsed().as_secs());
                let _ = writeln!(out, "live_channels: {}", self.channels.len());
                let _ = writeln!(out, "events: {}", self.events.iter().sum::<u64>());
                let _ = writeln!(out, "config_bytes: {}", self.config.xml.len());
                let _ = writeln!(out, "reloads: {}", self.reloads);
            }
            Query::Calls => {
                let _ = writeln!(out, "uuid,direction,caller,destination,last_event");
                for (id, ch) in &self.channels {
                    let _ = writeln!(
                        out,
                        "{id},{:?},{},{},{}",
                        ch.created.direction,
                        ch.created.caller,
                        ch.created.destination,
                        ch.last.name()
                    );
                }
                let _ = writeln!(out, "{} total", self.channels.len());
            }
            Query::Call(id) => match self.channels.get(&id) {
                Some(ch) => {
                    let _ = writeln!(out, "uuid: {id}");
                    let _ = writeln!(out, "direction: {:?}", ch.created.direction);
                    let _ = writeln!(out, "caller: {}", ch.created.caller);
                    let _ = writeln!(out, "destination: {}", ch.created.destination);
                    let ip = ch
                        .created
                        .source_ip
                        .map(|ip| ip.to_string())
                        .unwrap_or_default();
                    let _ = writeln!(out, "source_ip: {ip}");
                    let _ = writeln!(out, "last_event: {}", ch.last.name());
                }
                None => {
                    let _ = writeln!(out, "-ERR no live call {id}");
                }
            },
            Query::Breakers => {
                let _ = writeln!(out, "service,state");
                let _ = writeln!(out, "(no services in the stand-in engine)");
            }
            Query::Metrics => {
                for kind in EventKind::ALL {
                    let _ = writeln!(
                        out,
                        "rtc_engine_events_total{{event=\"{}\"}} {}",
                        kind.name(),
                        self.events[kind as usize]
                    );
                }
                let _ = writeln!(out, "rtc_engine_live_channels {}", self.channels.len());
            }
        }
        out
    }
}

/// The stand-in's policy: a call with a destination proceeds; one without is refused with `no_route`.
fn decide(created: &CallEvent) -> Decision {
    if created.destination.is_empty() {
        Decision::Reject {
            reason: Reason::NoRoute,
            cause: Reason::NoRoute.default_cause(),
            vars: Vec::new(),
        }
    } else {
        Decision::Proceed {
            vars: vec![Variable {
                name: "rtc_decision",
                value: "proceed".into(),
            }],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc_engine::control::CallCommand;

    struct NoControl;
    impl CallControl for NoControl {
        fn execute(&mut self, _: CallCommand) {}
    }

    fn config() -> HostConfig {
        HostConfig {
            xml: "<configuration name=\"rtc_core.conf\"/>".into(),
        }
    }

    #[test]
    fn follows_channels_and_decides() {
        let host = Host::start(config(), Box::new(NoControl)).expect("start");
        let h = host.handle();
        let id = CallId::from_u128(7);
        let mut create = CallEvent::new(id, EventKind::ChannelCreate, 1);
        create.destination = "15551234".into();
        h.submit(create).expect("queue has room");
        let d = h.decide(id, Duration::from_secs(5)).expect("decision");
        assert!(matches!(d, Decision::Proceed { .. }), "{d:?}");
        let calls = h
            .query(Query::Calls, Duration::from_secs(5))
            .expect("calls");
        assert!(calls.contains(&id.to_string()), "{calls}");
        h.submit(CallEvent::new(id, EventKind::ChannelDestroy, 2))
            .expect("queue has room");
        let status = h
            .query(Query::Status, Duration::from_secs(5))
            .expect("status");
        assert!(status.contains("live_channels: 0"), "{status}");
        host.shutdown(Duration::from_secs(1));
        assert!(matches!(
            h.query(Query::Status, Duration::from_millis(50)),
            Err(HostError::Stopped)
        ));
    }

    #[test]
    fn decision_waits_for_the_create_and_times_out_without_it() {
        let host = Host::start(config(), Box::new(NoControl)).expect("start");
        let h = host.handle();
        let id = CallId::from_u128(8);
        let err = h.decide(id, Duration::from_millis(20)).unwrap_err();
        assert!(matches!(err, HostError::Timeout(_)), "{err}");
        let h2 = h.clone();
        let asker = std::thread::spawn(move || h2.decide(id, Duration::from_secs(5)));
        // Whichever arrives first, the decision follows the CREATE. No destination: refused.
        h.submit(CallEvent::new(id, EventKind::ChannelCreate, 1))
            .expect("room");
        let d = asker.join().expect("thread").expect("decision");
        assert!(
            matches!(
                d,
                Decision::Reject {
                    reason: Reason::NoRoute,
                    ..
                }
            ),
            "{d:?}"
        );
        host.shutdown(Duration::from_secs(1));
    }

    #[test]
    fn refuses_a_config_without_configuration_element() {
        let err = Host::start(HostConfig { xml: "<x/>".into() }, Box::new(NoControl))
            .err()
            .expect("refused");
        assert!(err.to_string().contains("rtc_core.conf.xml"), "{err}");
    }
}
