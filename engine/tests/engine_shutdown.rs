//! Shutdown with live calls: every call settled, the thread joined. Alone in its test binary so that
//! the process's thread count means something.

mod common;

use std::time::Duration;

use common::*;
use rtc_engine::clock::Clock;
use rtc_engine::config::FailModes;
use rtc_engine::engine::{Engine, EngineParts, Query, SubmitError};
use rtc_engine::event::EventKind;
use rtc_engine::service::ServiceRequest;
use rtc_engine::testkit::{RecordingControl, ScriptedServices};

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The thread count once it is `expected`, or after two seconds: a joined thread can stay listed in
/// `/proc/self/task` for a moment after `join` returns (the kernel reaps it on its own time), most of all on a
/// busy machine.
fn threads_settled_at(expected: usize) -> usize {
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        let n = threads();
        if n == expected || std::time::Instant::now() > deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn shutdown_settles_live_calls_and_joins_its_thread() {
    let before = threads();
    let services = ScriptedServices::all_yes();
    let engine = Engine::start(EngineParts {
        config: config(),
        fail_modes: FailModes::default(),
        services: Box::new(services.clone()),
        control: Box::new(RecordingControl::default()),
        clock: Clock::system(),
    })
    .unwrap();
    let h = engine.handle();
    for n in 1..=50u128 {
        h.submit_event(a_event(n, EventKind::ChannelCreate, 1, 0))
            .unwrap();
    }
    assert!(threads() > before);
    let report = engine.shutdown();
    assert_eq!(report.settled_calls + report.stats.completed as usize, 50);
    let cdrs = services
        .requests()
        .iter()
        .filter(|q| matches!(q, ServiceRequest::WriteCdr(_)))
        .count();
    let releases = services
        .requests()
        .iter()
        .filter(|q| matches!(q, ServiceRequest::ReleaseBalance { .. }))
        .count();
    assert_eq!((cdrs, releases), (50, 50));
    assert_eq!(
        threads_settled_at(before),
        before,
        "the engine thread is gone once shutdown returns"
    );
    // Intake is closed afterwards.
    assert_eq!(
        h.submit_event(a_event(99, EventKind::ChannelCreate, 1, 0)),
        Err(SubmitError::Stopped)
    );
    assert!(h.query(Query::Status, Duration::from_millis(100)).is_err());
}
