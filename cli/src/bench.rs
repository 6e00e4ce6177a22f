//! `rtc-core bench <name>`: measured figures, last line one JSON object.

use std::time::{Duration, Instant};

use rtc_engine::clock::Clock;
use rtc_engine::config::EngineConfig;
use rtc_engine::config::FailModes;
use rtc_engine::core::epoch_us;
use rtc_engine::engine::{Engine, EngineHandle, EngineParts, Query, QueryReply, SubmitError};
use rtc_engine::event::{CallEvent, Direction, EventKind};
use rtc_engine::id::CallId;
use rtc_engine::testkit::{CountingControl, InstantServices};
use serde_json::json;

use crate::alloc::live_bytes;

/// Options of `bench engine`.
pub struct EngineBench {
    /// Concurrent live calls at the peak.
    pub calls: usize,
    /// Most events in the engine's queue at once (bounds the queueing part of the latency).
    pub window: usize,
}

fn b_leg(n: usize) -> CallId {
    CallId::from_u128((1 << 64) | n as u128)
}

fn a_ev(n: usize, kind: EventKind, seq: &mut u64) -> CallEvent {
    *seq += 1;
    let mut ev = CallEvent::new(CallId::from_u128(n as u128 + 1), kind, *seq);
    ev.caller = "441632960001".into();
    // Destinations spread as a carrier's are: London numbers (4420 and eight digits), scattered by a multiplicative
    // hash of the call's number, so that the fraud rules' per-number and per-prefix counts see ordinary traffic.
    let digits = (n as u64).wrapping_mul(2_654_435_761) % 100_000_000;
    ev.destination = format!("4420{digits:08}").as_str().into();
    ev.source_ip = Some(std::net::IpAddr::from([192, 0, 2, 10]));
    ev
}

fn b_ev(n: usize, kind: EventKind, seq: &mut u64) -> CallEvent {
    *seq += 1;
    let mut ev = CallEvent::new(b_leg(n), kind, *seq);
    ev.direction = Direction::Outbound;
    ev.other_leg = Some(CallId::from_u128(n as u128 + 1));
    ev
}

/// Submits like a FreeSWITCH event thread would, but paced: the benchmark's producer keeps at most
/// `window` events queued, and retries an event the engine refused (FreeSWITCH's handler would count and
/// drop it instead).
fn submit(h: &EngineHandle, ev: CallEvent, window: usize) {
    let mut ev = ev;
    loop {
        while h.queue_depth() >= window {
            std::hint::spin_loop();
        }
        ev.timestamp_us = epoch_us();
        match h.submit_event(ev.clone()) {
            Err(SubmitError::QueueFull(_)) => continue,
            Ok(()) | Err(SubmitError::Stopped) => return,
        }
    }
}

fn status(h: &EngineHandle) -> (usize, rtc_engine::stats::Stats) {
    match h.query(Query::Status, Duration::from_secs(60)) {
        Ok(QueryReply::Status(s)) => (s.live_calls, s.stats),
        other => panic!("engine did not answer its status: {other:?}"),
    }
}

/// The shipped configuration, for the rule set `bench engine` runs with.
const SHIPPED_CONF: &str = include_str!("../../conf/autoload_configs/rtc_core.conf.xml");

/// The fraud rules of the shipped configuration, enabled: every rule and both classes. One partner holds all the
/// benchmark's calls (100,000 at once), so its spend limits are raised out of the way, as a carrier would set them
/// for such a partner (`max_spend_hour`); the checks still run for every call.
pub fn bench_fraud_rules() -> rtc_engine::fraud::FraudRules {
    let shipped = rtc_config::RtcConfig::from_xml_str(
        SHIPPED_CONF,
        std::path::Path::new("."),
        "the shipped rtc_core.conf.xml",
    )
    .expect("the shipped configuration parses");
    let mut rules = shipped.engine.fraud;
    rules.enabled = true;
    let most = rtc_engine::domain::Money(i64::MAX / 4);
    for limit in [&mut rules.spend_hour, &mut rules.spend_day]
        .into_iter()
        .flatten()
    {
        limit.most = most;
    }
    rules
}

/// One measured run's figures.
struct EngineRun {
    events: u64,
    elapsed: Duration,
    peak_bytes: isize,
    p50_us: u64,
    p99_us: u64,
    commands: u64,
    illegal: u64,
    /// The engine thread's CPU time over the run, when the system tells.
    cpu_ns: Option<u64>,
}

/// Rounds of `bench engine`: each runs the engine alone and with the fraud rules, back to back (in turn first), so
/// that the ratio is measured between neighbouring runs; this machine's neighbours move single runs by tens of
/// percent.
const ROUNDS: usize = 7;

/// `bench engine`: the engine alone and the same traffic with the shipped fraud rules enabled, in [`ROUNDS`] rounds;
/// the figures of the best run of each, and the median of the rounds' ratios.
pub fn engine(opts: EngineBench) -> serde_json::Value {
    let rules = bench_fraud_rules();
    let mut plain: Option<EngineRun> = None;
    let mut guarded: Option<EngineRun> = None;
    let mut ratios = Vec::with_capacity(ROUNDS);
    let mut cpu_ratios = Vec::with_capacity(ROUNDS);
    let rate = |r: &EngineRun| r.events as f64 / r.elapsed.as_secs_f64();
    for round in 0..ROUNDS {
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        let mut pair = [0.0f64; 2];
        let mut cpu = [None; 2];
        for with_rules in order {
            eprintln!(
                "bench engine: round {}, {}",
                round + 1,
                if with_rules {
                    "fraud rules on"
                } else {
                    "no fraud rules"
                }
            );
            let run = engine_run(&opts, with_rules.then(|| rules.clone()));
            eprintln!(
                "bench engine: {:.0} events/s, engine thread {:?} ns per event",
                rate(&run),
                run.cpu_ns.map(|ns| ns / run.events.max(1))
            );
            pair[usize::from(with_rules)] = rate(&run);
            cpu[usize::from(with_rules)] =
                run.cpu_ns.map(|ns| ns as f64 / run.events.max(1) as f64);
            let best = if with_rules { &mut guarded } else { &mut plain };
            if best.as_ref().is_none_or(|b| run.elapsed < b.elapsed) {
                *best = Some(run);
            }
        }
        ratios.push(pair[1] / pair[0]);
        if let [Some(plain_ns), Some(guarded_ns)] = cpu {
            cpu_ratios.push(plain_ns / guarded_ns);
        }
    }
    ratios.sort_by(f64::total_cmp);
    cpu_ratios.sort_by(f64::total_cmp);
    let median_ratio = ratios[ratios.len() / 2];
    let round3 = |v: f64| (v * 1000.0).round() / 1000.0;
    let cpu_ratio = cpu_ratios.get(cpu_ratios.len() / 2).copied().map(round3);
    let cpu_ns_per_event = |r: &EngineRun| {
        r.cpu_ns
            .map(|ns| round3(ns as f64 / r.events.max(1) as f64))
    };
    let (plain, guarded) = (plain.expect("ran"), guarded.expect("ran"));
    let calls = opts.calls;
    json!({
        "bench": "engine",
        "calls": calls,
        "events": plain.events,
        "events_per_sec": rate(&plain).round() as u64,
        "p50_us": plain.p50_us,
        "p99_us": plain.p99_us,
        "bytes_per_call": (plain.peak_bytes.max(0) as usize) / calls.max(1),
        "elapsed_s": (plain.elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
        "window": opts.window,
        "commands": plain.commands,
        "illegal": plain.illegal,
        "fraud_rules": "the shipped <fraud> set, enabled (spend limits raised: one partner holds every call)",
        "fraud_events_per_sec": rate(&guarded).round() as u64,
        "fraud_p99_us": guarded.p99_us,
        "fraud_bytes_per_call": (guarded.peak_bytes.max(0) as usize) / calls.max(1),
        "fraud_ratio": (median_ratio * 1000.0).round() / 1000.0,
        "fraud_ratio_range": [
            (ratios[0] * 1000.0).round() / 1000.0,
            (ratios[ratios.len() - 1] * 1000.0).round() / 1000.0
        ],
        "fraud_ratio_best_runs": (rate(&guarded) / rate(&plain) * 1000.0).round() / 1000.0,
        "engine_cpu_ns_per_event": cpu_ns_per_event(&plain),
        "fraud_engine_cpu_ns_per_event": cpu_ns_per_event(&guarded),
        "fraud_cpu_ratio": cpu_ratio,
    })
}

fn engine_run(opts: &EngineBench, fraud: Option<rtc_engine::fraud::FraudRules>) -> EngineRun {
    let calls = opts.calls;
    let with_rules = fraud.is_some();
    let cfg = EngineConfig {
        queue_capacity: opts.window.max(1024) * 2,
        finished_traces: 0,
        fraud: fraud.unwrap_or_default(),
        ..EngineConfig::default()
    };
    let control = CountingControl::default();
    let older = engine_threads();
    let engine = Engine::start(EngineParts {
        config: cfg,
        fail_modes: FailModes::default(),
        services: Box::new(InstantServices::default()),
        control: Box::new(control.clone()),
        clock: Clock::system(),
    })
    .expect("engine thread starts");
    let h = engine.handle();
    let _ = status(&h);
    let baseline = live_bytes();
    let mut seq = 0u64;
    // This run's engine thread: the `rtc-engine` that was not there before it started.
    let tid = engine_threads().into_iter().find(|t| !older.contains(t));
    let cpu_before = tid.and_then(thread_cpu_ns);
    let started = Instant::now();
    eprintln!("bench engine: setting up {calls} calls");
    // Setup: every call created, decided, bridged and connected: `calls` live at once.
    for n in 0..calls {
        submit(&h, a_ev(n, EventKind::ChannelCreate, &mut seq), opts.window);
        submit(&h, a_ev(n, EventKind::ChannelPark, &mut seq), opts.window);
        submit(&h, b_ev(n, EventKind::ChannelCreate, &mut seq), opts.window);
        submit(&h, b_ev(n, EventKind::ChannelAnswer, &mut seq), opts.window);
        submit(&h, a_ev(n, EventKind::ChannelAnswer, &mut seq), opts.window);
        submit(&h, a_ev(n, EventKind::ChannelBridge, &mut seq), opts.window);
    }
    let (live, _) = status(&h);
    let setup_elapsed = started.elapsed();
    let peak_bytes = live_bytes() - baseline;
    assert_eq!(live, calls, "every call is live at the peak");
    eprintln!(
        "bench engine: {live} live calls, {:.1} MB heap",
        peak_bytes as f64 / 1e6
    );
    // Teardown: the callee hangs up, the caller follows, FreeSWITCH reports the ends.
    let teardown = Instant::now();
    for n in 0..calls {
        let mut ev = b_ev(n, EventKind::ChannelHangup, &mut seq);
        ev.hangup_cause = Some(rtc_engine::HangupCause::NORMAL_CLEARING);
        submit(&h, ev, opts.window);
        submit(
            &h,
            a_ev(n, EventKind::ChannelUnbridge, &mut seq),
            opts.window,
        );
        let mut ev = a_ev(n, EventKind::ChannelHangup, &mut seq);
        ev.hangup_cause = Some(rtc_engine::HangupCause::NORMAL_CLEARING);
        submit(&h, ev, opts.window);
        submit(
            &h,
            a_ev(n, EventKind::ChannelHangupComplete, &mut seq),
            opts.window,
        );
        submit(
            &h,
            a_ev(n, EventKind::ChannelDestroy, &mut seq),
            opts.window,
        );
        submit(
            &h,
            b_ev(n, EventKind::ChannelDestroy, &mut seq),
            opts.window,
        );
    }
    let (live_after, stats) = status(&h);
    let elapsed = setup_elapsed + teardown.elapsed();
    let cpu_ns = tid
        .and_then(thread_cpu_ns)
        .zip(cpu_before)
        .map(|(a, b)| a.saturating_sub(b));
    assert_eq!(live_after, 0, "every call finished");
    assert_eq!(
        stats.completed as usize, calls,
        "every call completed (fraud rules on: {with_rules}): {:?}",
        stats.by_reason
    );
    drop(engine);
    EngineRun {
        events: stats.events,
        elapsed,
        peak_bytes,
        p50_us: stats.event_lag_p50_us,
        p99_us: stats.event_lag_p99_us,
        commands: control.commands.load(std::sync::atomic::Ordering::Relaxed),
        illegal: stats.illegal_total(),
        cpu_ns,
    }
}

/// The ids of this process's threads named `rtc-engine` (Linux: `/proc/self/task`; empty elsewhere).
fn engine_threads() -> Vec<u64> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|c| c.trim_end() == "rtc-engine")
        })
        .filter_map(|t| t.file_name().to_str()?.parse().ok())
        .collect()
}

/// A thread's CPU time so far, in ns (`/proc/self/task/<tid>/schedstat`): time on the CPU, not on the wall — what
/// the engine's work costs, whatever the machine's neighbours take.
fn thread_cpu_ns(tid: u64) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).ok()?;
    stat.split_whitespace().next()?.parse().ok()
}
