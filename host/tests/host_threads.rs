//! Start and stop a host many times: every thread it started ends with it. Alone in its test binary, so that
//! no other test's threads come and go while the threads are counted.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use rtc_config::RtcConfig;
use rtc_config::services::Backend;
use rtc_engine::event::{CallEvent, EventKind};
use rtc_engine::id::CallId;
use rtc_engine::service::ServiceKind;
use rtc_engine::testkit::RecordingControl;
use rtc_host::Host;

/// The process's threads, by name.
fn threads() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .expect("Linux /proc")
        .filter_map(|t| t.ok())
        .map(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .unwrap_or_default()
                .trim()
                .to_owned()
        })
        .collect()
}

/// The threads once there are as many as `expected`, or after two seconds: a joined thread can stay listed in
/// `/proc/self/task` for a moment after `join` returns, most of all on a busy machine.
fn threads_settled_at(expected: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let now = threads();
        if now.len() == expected || Instant::now() > deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn twenty_starts_and_shutdowns_leave_no_thread_behind() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = RtcConfig {
        io_threads: 2,
        ..RtcConfig::default()
    };
    // One HTTP service, so that the HTTP layer, its client and its settlement tasks are part of each run;
    // nothing listens on 127.0.0.1:9, so the CDR fails to connect and is retried, then spooled.
    let cdr = config
        .services
        .iter_mut()
        .find(|s| s.kind == ServiceKind::Cdr)
        .unwrap();
    cdr.backend = Backend::Http;
    cdr.url = Some("http://127.0.0.1:9/cdr".into());
    config.settlement.spool_path = dir.path().join("spool.jsonl");
    config.settlement.backoff_initial = Duration::from_millis(20);

    let baseline = threads();
    for round in 0..20u128 {
        let control = RecordingControl::default();
        let host = Host::start(&config, Box::new(control.clone())).unwrap();
        let mut ev = CallEvent::new(CallId::from_u128(round + 1), EventKind::ChannelCreate, 1);
        ev.source_ip = Some(IpAddr::from([127, 0, 0, 1]));
        ev.destination = "442079460000".into();
        host.engine().submit_event(ev).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while control.commands.lock().unwrap().is_empty() {
            assert!(Instant::now() < deadline, "round {round}: no decision");
            std::thread::sleep(Duration::from_millis(1));
        }
        let running = threads();
        assert_eq!(
            running.iter().filter(|n| *n == "rtc-engine").count(),
            1,
            "{running:?}"
        );
        assert!(
            running.iter().filter(|n| *n == "rtc-io").count() >= 2,
            "{running:?}"
        );
        // The local backends keep money in the ledger, whose writer is a thread of its own.
        assert_eq!(
            running
                .iter()
                .filter(|n| *n == rtc_ledger::writer::THREAD_NAME)
                .count(),
            1,
            "{running:?}"
        );
        let report = host.shutdown(Duration::from_millis(300));
        assert!(report.runtime_stopped, "round {round}: {report:?}");
        assert_eq!(report.engine.settled_calls, 1);
        let after = threads_settled_at(baseline.len());
        assert_eq!(
            after.len(),
            baseline.len(),
            "round {round}: threads before {baseline:?}, after {after:?}"
        );
    }
    // Each round's CDR reached the spool (by its retries giving up, or by the drain).
    let spooled = std::fs::read_to_string(dir.path().join("spool.jsonl")).unwrap();
    assert_eq!(spooled.lines().count(), 20);
}
