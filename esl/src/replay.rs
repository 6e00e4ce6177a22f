//! Offline replay of a recorded event socket stream (`rtc-core esl --record`) through the engine, to ask
//! "what did the engine make of this call, and why".
//!
//! The recording is read with the same [`Intake`] the live client uses, so the same legs are dropped, the
//! same addresses assumed and the same failovers synthesised. The engine runs on a manual clock moved to
//! each event's `Event-Date-Timestamp` before the event is applied, so its timers (setup, park, duration)
//! fire at the times they fired live. Its commands are recorded, not sent: the recording already holds
//! FreeSWITCH's reaction to the live ones. Each event is applied, and every service answer it asked for too,
//! before the clock moves again (a query after each event is the barrier), so a replay is deterministic. Live,
//! an answer from a service that answers later (the ledger's, an HTTP service's) may have come after the next
//! event: a replayed trace can then differ from the live one in order (a park seen before or after the balance
//! step) but not in the states the call went through, nor in how it ended.

use std::io::Read;
use std::time::Duration;

use crate::event::EslMessage;
use crate::frame::FramerConfig;
use crate::intake::{Intake, IntakeConfig, IntakeStats};
use rtc_engine::call::CallView;
use rtc_engine::clock::Clock;
use rtc_engine::config::EngineConfig;
use rtc_engine::config::FailModes;
use rtc_engine::control::CallCommand;
use rtc_engine::engine::{Engine, EngineParts, Query, QueryReply};
use rtc_engine::event::{Direction, EventKind};
use rtc_engine::id::CallId;
use rtc_engine::service::ServiceSink;
use rtc_engine::testkit::RecordingControl;

/// How to replay.
pub struct ReplayOptions {
    /// The engine's settings (as live).
    pub engine: EngineConfig,
    /// Per-service fail modes (as live).
    pub fail_modes: FailModes,
    /// The intake's rules (as live).
    pub intake: IntakeConfig,
    /// Only this call's events are applied (its outbound legs included).
    pub only: Option<CallId>,
}

/// What a replay found.
#[derive(Debug, serde::Serialize)]
pub struct ReplayReport {
    /// Channel events applied.
    pub events: u64,
    /// The intake's counters (frames, drops, synthetic hangups, errors).
    pub intake: IntakeStats,
    /// Each call's view (state path with times, reason, cause), in order of first appearance.
    pub calls: Vec<CallView>,
    /// Calls seen created whose view the engine no longer had.
    pub lost: Vec<CallId>,
    /// Commands the engine gave (not sent), in order.
    #[serde(skip)]
    pub commands: Vec<CallCommand>,
    /// Span of the recording, from the first event's timestamp to the last.
    pub span_ms: u64,
}

/// The states a call went through, in order, ending with where it is.
pub fn states(view: &CallView) -> Vec<&'static str> {
    let mut s: Vec<&'static str> = view
        .trace
        .iter()
        .filter(|t| t.from != t.to)
        .map(|t| t.from)
        .collect();
    s.push(view.state);
    s
}

/// Whether a replay took a call the way it went live: every state before its live end is where the replay went
/// too, and both end in the same state. A service that answers later (the ledger, an HTTP service) may live have
/// answered after the next event (a park, a caller's hangup); the replay applies every answer first, so it may get
/// further before the same end, never down another branch.
pub fn same_course(live: &CallView, replayed: &CallView) -> bool {
    let (a, b) = (states(live), states(replayed));
    b.starts_with(&a[..a.len() - 1]) && a.last() == b.last()
}

/// Why a replay could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The recording could not be read.
    #[error("cannot read the recording: {0}")]
    Read(#[from] std::io::Error),
    /// The engine stopped answering.
    #[error("the engine did not answer during the replay: {0}")]
    Engine(String),
}

/// Replays `input` through a fresh engine with `services` (usually the local backends).
pub fn replay(
    mut input: impl Read,
    services: Box<dyn ServiceSink>,
    opts: ReplayOptions,
) -> Result<ReplayReport, ReplayError> {
    let (clock, hand) = Clock::manual();
    let control = RecordingControl::default();
    let mut config = opts.engine;
    config.finished_traces = config.finished_traces.max(1_000_000);
    config.finished_ids = config.finished_ids.max(1_000_000);
    let engine = Engine::start(EngineParts {
        config,
        fail_modes: opts.fail_modes,
        services,
        control: Box::new(control.clone()),
        clock,
    })
    .map_err(|e| ReplayError::Engine(e.to_string()))?;
    let h = engine.handle();
    // After each event: the engine has applied it, and every service answer it asked for (the ledger answers
    // on its own thread) has come back and been applied too.
    let barrier = || -> Result<(), ReplayError> {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            match h.query(Query::Status, Duration::from_secs(30)) {
                Ok(QueryReply::Status(s)) if s.pending_results == 0 => return Ok(()),
                Ok(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_micros(200));
                }
                Ok(_) => {
                    return Err(ReplayError::Engine(
                        "service answers still outstanding after 30 s".into(),
                    ));
                }
                Err(e) => return Err(ReplayError::Engine(e.to_string())),
            }
        }
    };
    let mut intake = Intake::new(
        opts.intake,
        FramerConfig {
            max_frame_size: 64 << 20,
            ..FramerConfig::default()
        },
    );
    let mut order: Vec<CallId> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut first_ts = None;
    let mut last_ts = 0u64;
    let mut events = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        intake.push(&buf[..n]);
        while let Some(m) = intake.next_message() {
            let Ok(EslMessage::Event(ev)) = m else {
                continue;
            };
            if let Some(only) = opts.only
                && ev.uuid != only
                && ev.other_leg != Some(only)
            {
                continue;
            }
            if ev.direction == Direction::Inbound
                && matches!(ev.kind, EventKind::ChannelCreate | EventKind::ChannelPark)
                && seen.insert(ev.uuid)
            {
                order.push(ev.uuid);
            }
            if ev.timestamp_us != 0 {
                let t0 = *first_ts.get_or_insert(ev.timestamp_us);
                let at = ev.timestamp_us.saturating_sub(t0);
                last_ts = last_ts.max(ev.timestamp_us);
                let now = hand.now_us();
                if at > now {
                    hand.advance(Duration::from_micros(at - now));
                    h.tick();
                }
            }
            // Each event is applied before the next is sent (the barrier below): the queue never fills.
            h.submit_event(ev)
                .map_err(|e| ReplayError::Engine(e.to_string()))?;
            events += 1;
            barrier()?;
        }
    }
    let mut calls = Vec::with_capacity(order.len());
    let mut lost = Vec::new();
    for id in order {
        match h.query(Query::Call(id), Duration::from_secs(30)) {
            Ok(QueryReply::Call(Some(v))) => calls.push(*v),
            Ok(_) => lost.push(id),
            Err(e) => return Err(ReplayError::Engine(e.to_string())),
        }
    }
    drop(engine);
    Ok(ReplayReport {
        events,
        intake: intake.stats(),
        calls,
        lost,
        commands: control.take(),
        span_ms: first_ts.map_or(0, |t0| last_ts.saturating_sub(t0) / 1000),
    })
}
