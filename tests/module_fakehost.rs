//! mod_rtc_core.so under the fake FreeSWITCH core: table, load, API, app, events, panic containment, shutdown
//! while events flow.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use freeswitch_sys as fs;
use rtc_fakehost::{FakeHost, Module, module_path};

const CONF: &str = r#"<configuration name="rtc_core.conf" description="test"><settings><param name="setup-timeout" value="60s"/></settings></configuration>"#;
const A: &str = "4b2a1c3e-9f10-4d2b-8a7e-0123456789ab";
const B: &str = "0e7c5a1f-2222-4d2b-8a7e-0123456789ff";
const C: &str = "11111111-2222-4d2b-8a7e-0123456789ff";

/// Unloads the module when dropped, even when an assertion failed, so one failing test does not leave the
/// module loaded for the next.
struct Loaded<'a>(&'a Module);

impl Drop for Loaded<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.shutdown();
        }
    }
}

/// Loads the module on a fresh fake core, runs `f`, unloads it and checks nothing is left bound.
fn with_module(f: impl FnOnce(&FakeHost, &Module)) {
    let _serial = FakeHost::lock();
    let host = FakeHost::get();
    host.reset();
    host.set_config("rtc_core.conf", Some(CONF));
    let module = Module::open(&module_path());
    let (status, created) = module.load();
    assert_eq!(
        status,
        fs::SWITCH_STATUS_SUCCESS,
        "load failed; log:\n{}",
        host.log()
    );
    let loaded = Loaded(&module);
    assert!(created, "load must create the module interface");
    assert_eq!(host.bindings(), 10, "ten channel events bound");
    f(host, &module);
    assert_eq!(module.shutdown(), fs::SWITCH_STATUS_SUCCESS);
    drop(loaded);
    assert_eq!(host.bindings(), 0, "shutdown unbinds every event");
}

fn create(host: &FakeHost, uuid: &str, destination: &str) -> i32 {
    host.fire(
        fs::SWITCH_EVENT_CHANNEL_CREATE,
        &[
            ("Unique-ID", uuid),
            ("Event-Sequence", "100"),
            ("Event-Date-Timestamp", "1700000000000000"),
            ("Call-Direction", "inbound"),
            ("Caller-Caller-ID-Number", "+15550001"),
            ("Caller-Destination-Number", destination),
            ("Caller-Network-Addr", "127.0.0.1"),
        ],
    )
}

#[test]
fn exports_the_table_with_the_headers_api_version() {
    let _serial = FakeHost::lock();
    let module = Module::open(&module_path());
    let table = module.table();
    assert_eq!(table.api_version, fs::API_VERSION);
    assert!(table.load.is_some() && table.shutdown.is_some());
    assert!(table.runtime.is_none(), "no runtime thread");
    assert_eq!(table.flags, 0);
}

#[test]
fn api_answers_status_help_and_bad_arguments() {
    with_module(|host, _| {
        let api = host.interface(false, "rtc_core").expect("API registered");
        assert!(
            api.contains("<status|calls|call <uuid>|breakers|metrics|reload|help>"),
            "{api}"
        );
        let (status, out) = host.api("rtc_core", "status").expect("API runs");
        assert_eq!(status, fs::SWITCH_STATUS_SUCCESS);
        assert!(
            out.contains("engine:") && out.contains("intake: accepted"),
            "{out}"
        );
        let (_, out) = host.api("rtc_core", "help").expect("API runs");
        assert!(out.contains("rtc_core call <uuid>"), "{out}");
        for bad in [
            "",
            "bogus",
            "call",
            "call not-a-uuid",
            "status extra",
            "%s%s%n%n",
        ] {
            let (status, out) = host.api("rtc_core", bad).expect("API runs");
            assert_eq!(status, fs::SWITCH_STATUS_SUCCESS, "{bad:?}");
            assert!(
                out.starts_with("-ERR ") && out.contains("-USAGE: rtc_core <status|"),
                "{bad:?}: {out}"
            );
        }
        let (_, out) = host.api("rtc_core", "reload").expect("API runs");
        assert!(out.starts_with("+OK"), "{out}");
        host.set_config("rtc_core.conf", None);
        let (_, out) = host.api("rtc_core", "reload").expect("API runs");
        assert!(
            out.starts_with("-ERR configuration rejected") && out.contains("rtc_core.conf"),
            "{out}"
        );
    });
}

#[test]
fn events_reach_the_engine() {
    with_module(|host, _| {
        assert_eq!(create(host, A, "4930123"), 1);
        host.fire(
            fs::SWITCH_EVENT_CHANNEL_ANSWER,
            &[("Unique-ID", A), ("Event-Sequence", "101")],
        );
        host.fire(fs::SWITCH_EVENT_CHANNEL_HANGUP, &[("Unique-ID", "garbage")]);
        // The API's query queues behind the events: the engine has seen them when it answers.
        let (_, out) = host
            .api("rtc_core", &format!("call {A}"))
            .expect("API runs");
        assert!(
            out.contains("destination: 4930123") && out.contains("last_event: CHANNEL_ANSWER"),
            "{out}"
        );
        let (_, out) = host.api("rtc_core", "calls").expect("API runs");
        assert!(out.contains(A) && out.contains("1 total"), "{out}");
        let (_, out) = host.api("rtc_core", "metrics").expect("API runs");
        assert!(out.contains("rtc_module_events_accepted_total 2"), "{out}");
        assert!(
            out.contains("rtc_module_events_dropped_total{why=\"malformed\"} 1"),
            "{out}"
        );
        assert!(out.contains("rtc_module_event_handler_ns_count 3"), "{out}");
        assert!(
            out.contains("rtc_engine_events_total{event=\"CHANNEL_CREATE\"} 1"),
            "{out}"
        );
        host.fire(fs::SWITCH_EVENT_CHANNEL_DESTROY, &[("Unique-ID", A)]);
        let (_, out) = host.api("rtc_core", "calls").expect("API runs");
        assert!(out.contains("0 total"), "{out}");
    });
}

#[test]
fn app_applies_the_decision() {
    with_module(|host, _| {
        assert!(host.interface(true, "rtc_core").is_some(), "app registered");
        // Decided: proceed, variables set, call left up.
        host.session_new(A);
        create(host, A, "4930123");
        assert!(host.app("rtc_core", A, ""));
        assert_eq!(host.var(A, "rtc_decision").as_deref(), Some("proceed"));
        assert_eq!(host.hangup_cause(A), None);
        // Refused: reason set, hung up with the reason's cause (NO_ROUTE_DESTINATION = 3).
        host.session_new(B);
        create(host, B, "");
        assert!(host.app("rtc_core", B, ""));
        assert_eq!(
            host.var(B, "rtc_reject_reason").as_deref(),
            Some("no_route")
        );
        assert_eq!(host.hangup_cause(B), Some(3));
        // No decision within the bound: setup_timeout, RECOVERY_ON_TIMER_EXPIRE = 102.
        host.session_new(C);
        assert!(host.app("rtc_core", C, "wait_ms=20"));
        assert_eq!(
            host.var(C, "rtc_reject_reason").as_deref(),
            Some("setup_timeout")
        );
        assert_eq!(host.hangup_cause(C), Some(102));
        for s in [A, B, C] {
            assert_eq!(host.session_locks(s), 0, "no session lock left behind");
        }
    });
}

#[test]
fn a_panic_in_an_entry_point_is_contained() {
    if !cfg!(feature = "panic-test") {
        println!("skipped: build with --features panic-test to check panic containment");
        return;
    }
    with_module(|host, _| {
        let (status, out) = host.api("rtc_core", "panic").expect("API runs");
        assert_eq!(status, fs::SWITCH_STATUS_GENERR);
        assert!(out.contains("-ERR rtc_core: internal error"), "{out}");
        assert_eq!(host.log_count("panic in API rtc_core"), 1, "{}", host.log());
        assert!(
            host.log().contains("src/api.rs"),
            "the log names where: {}",
            host.log()
        );
        let (status, out) = host
            .api("rtc_core", "status")
            .expect("API runs after the panic");
        assert_eq!(status, fs::SWITCH_STATUS_SUCCESS);
        assert!(out.contains("panics_caught: 1"), "{out}");
    });
}

#[test]
fn load_without_configuration_fails_cleanly() {
    let _serial = FakeHost::lock();
    let host = FakeHost::get();
    host.reset();
    host.set_config("rtc_core.conf", None);
    let module = Module::open(&module_path());
    let (status, _) = module.load();
    assert_eq!(status, fs::SWITCH_STATUS_GENERR);
    assert_eq!(host.bindings(), 0);
    assert!(
        host.log_count("scripts/install.sh") >= 1,
        "the log says what to do: {}",
        host.log()
    );
    host.module_destroyed();
}

#[test]
fn shutdown_while_events_flow() {
    with_module(|host, module| {
        let stop = Arc::new(AtomicBool::new(false));
        let firers: Vec<_> = (0..4)
            .map(|_| {
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    let host = FakeHost::get();
                    let mut delivered = 0;
                    while !stop.load(Ordering::Relaxed) {
                        delivered += create(host, A, "1");
                    }
                    delivered
                })
            })
            .collect();
        while host
            .api("rtc_core", "metrics")
            .is_some_and(|(_, m)| m.contains("rtc_module_events_accepted_total 0\n"))
        {
            std::thread::yield_now();
        }
        assert_eq!(module.shutdown(), fs::SWITCH_STATUS_SUCCESS);
        assert_eq!(create(host, A, "1"), 0, "no binding after shutdown");
        stop.store(true, Ordering::Relaxed);
        let total: i32 = firers.into_iter().map(|t| t.join().expect("firer")).sum();
        assert!(total > 0);
        // with_module's own shutdown call finds nothing loaded and succeeds.
        let (status, _) = module.load();
        assert_eq!(status, fs::SWITCH_STATUS_SUCCESS);
    });
}
