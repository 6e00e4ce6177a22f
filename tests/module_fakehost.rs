//! mod_rtc_core.so under the fake FreeSWITCH core: table, load, API, app, events, panic containment, shutdown
//! while events flow.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use freeswitch_sys as fs;
use rtc_fakehost::{FakeHost, Module, module_path};

/// A minimal configuration: the sample tables of the repository's conf/ (the fake core's conf dir).
const CONF: &str = r#"<configuration name="rtc_core.conf" description="test"><settings><param name="setup-timeout" value="60s"/></settings></configuration>"#;
const A: &str = "4b2a1c3e-9f10-4d2b-8a7e-0123456789ab";
const B: &str = "0e7c5a1f-2222-4d2b-8a7e-0123456789ff";
const C: &str = "11111111-2222-4d2b-8a7e-0123456789ff";
const D: &str = "22222222-2222-4d2b-8a7e-0123456789ff";
const P: &str = "33333333-2222-4d2b-8a7e-0123456789ff";
/// The CUSTOM event subclass of a low-balance warning.
const LOW_BALANCE: &str = "rtc_core::low_balance";

fn shipped_conf() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conf")
}

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

/// Loads the module on a fresh fake core (its ledger in a new db directory), runs `f`, unloads it and checks
/// nothing is left bound.
fn with_module(f: impl FnOnce(&FakeHost, &Module)) {
    let db = tempfile::tempdir().expect("db dir");
    with_module_in(db.path(), f);
}

/// [`with_module`] with FreeSWITCH's db directory (where the ledger goes) at `db`.
fn with_module_in(db: &Path, f: impl FnOnce(&FakeHost, &Module)) {
    let _serial = FakeHost::lock();
    let host = FakeHost::get();
    host.start_over(Some(CONF), &shipped_conf(), Some(db));
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
    assert_eq!(
        host.subclass_owner(LOW_BALANCE),
        None,
        "shutdown frees the event subclass"
    );
}

/// Opens and loads the module with a configuration whose `<configuration>` element holds `inner`, the tables
/// from the shipped conf dir, the ledger in a new db directory (kept as long as the returned guard); the caller
/// shuts it down.
fn loaded_with(host: &FakeHost, inner: &str) -> (Module, tempfile::TempDir) {
    loaded_from(host, &shipped_conf(), inner)
}

/// [`loaded_with`] with FreeSWITCH's conf directory (where the tables are) at `conf`.
fn loaded_from(host: &FakeHost, conf: &Path, inner: &str) -> (Module, tempfile::TempDir) {
    let db = tempfile::tempdir().expect("db dir");
    host.start_over(
        Some(&format!(
            r#"<configuration name="rtc_core.conf">{inner}</configuration>"#
        )),
        conf,
        Some(db.path()),
    );
    let module = Module::open(&module_path());
    assert_eq!(module.load().0, fs::SWITCH_STATUS_SUCCESS, "{}", host.log());
    (module, db)
}

/// Waits (polling the API, at most 10 s) until `rtc_core call <uuid>` shows the call in `state`; its answer.
/// The balance step is answered by the ledger's writer once durable, a moment after the event that asked.
fn wait_for_state(host: &FakeHost, uuid: &str, state: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (_, out) = host
            .api("rtc_core", &format!("call {uuid}"))
            .expect("API runs");
        if out.contains(&format!("state: {state}\n")) {
            return out;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "call {uuid} not {state} within 10 s: {out}"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// The UUID the module gives the leg of route `attempt` of call `a`.
fn leg(a: &str, attempt: u8) -> String {
    rtc_engine::CallId::parse(a)
        .expect("uuid")
        .leg(attempt)
        .to_string()
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
            api.contains(
                "<status|calls|call <uuid>|balance [<partner>]|topup <partner> <amount> <reference>|fraud|\
                 unblock <partner>|breakers|metrics|reload|help>"
            ),
            "{api}"
        );
        let (status, out) = host.api("rtc_core", "status").expect("API runs");
        assert_eq!(status, fs::SWITCH_STATUS_SUCCESS);
        assert!(
            out.contains("engine: running") && out.contains("intake: accepted"),
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
        assert!(
            out.starts_with("+OK engine settings reloaded")
                && out.contains("local tables reloaded"),
            "{out}"
        );
        host.set_config(
            "rtc_core.conf",
            Some(r#"<configuration name="rtc_core.conf"><settings><param name="io-threads" value="3"/></settings></configuration>"#),
        );
        let (_, out) = host.api("rtc_core", "reload").expect("API runs");
        assert!(
            out.starts_with("+OK")
                && out.contains("Not applied while loaded")
                && out.contains("io-threads"),
            "{out}"
        );
        let (_, out) = host.api("rtc_core", "status").expect("API runs");
        assert!(
            out.contains("reloaded 2 times; waiting for a module reload: io-threads"),
            "{out}"
        );
        host.set_config(
            "rtc_core.conf",
            Some(r#"<configuration name="rtc_core.conf"><settings><param name="setup-timout" value="3s"/></settings></configuration>"#),
        );
        let (_, out) = host.api("rtc_core", "reload").expect("API runs");
        assert!(
            out.starts_with("-ERR configuration rejected:")
                && out.contains("unknown param \"setup-timout\""),
            "{out}"
        );
        host.set_config("rtc_core.conf", None);
        let (_, out) = host.api("rtc_core", "reload").expect("API runs");
        assert!(out.starts_with("-ERR cannot open rtc_core.conf"), "{out}");
    });
}

#[test]
fn events_reach_the_engine() {
    with_module(|host, _| {
        assert_eq!(create(host, A, "4930123"), 1);
        // Decided (the ledger held its money) before the far end answers, as on a real switch.
        wait_for_state(host, A, "PARKED");
        host.fire(
            fs::SWITCH_EVENT_CHANNEL_ANSWER,
            &[("Unique-ID", A), ("Event-Sequence", "101")],
        );
        host.fire(fs::SWITCH_EVENT_CHANNEL_HANGUP, &[("Unique-ID", "garbage")]);
        // An inbound leg call A placed itself (a loopback route's far half: its call_uuid is A's): part of A, not
        // a new call; nor does it become one when it parks later (its call_uuid is its own by then).
        host.fire(
            fs::SWITCH_EVENT_CHANNEL_CREATE,
            &[
                ("Unique-ID", B),
                ("Channel-Call-UUID", A),
                ("variable_rtc_a_leg", A),
            ],
        );
        host.fire(
            fs::SWITCH_EVENT_CHANNEL_PARK,
            &[
                ("Unique-ID", B),
                ("Channel-Call-UUID", B),
                ("variable_rtc_core", "true"),
            ],
        );
        // The API's query queues behind the events: the engine has seen them when it answers.
        let (_, out) = host
            .api("rtc_core", &format!("call {A}"))
            .expect("API runs");
        assert!(
            out.contains("destination: 4930123")
                && out.contains("state: CONNECTED")
                && out.contains("ROUTING -> PARKED on ROUTES_FOUND")
                && out.contains("PARKED -> CONNECTED on CHANNEL_ANSWER"),
            "{out}"
        );
        let (_, out) = host.api("rtc_core", "calls").expect("API runs");
        assert!(
            out.contains(&format!("{A},CONNECTED,lab,+15550001,4930123"))
                && out.contains("1 total"),
            "{out}"
        );
        let (_, out) = host.api("rtc_core", "metrics").expect("API runs");
        for want in [
            "rtc_module_events_total{outcome=\"accepted\"} 4\n",
            "rtc_module_events_total{outcome=\"malformed\"} 1\n",
            "rtc_engine_inputs_ignored_total{why=\"own_leg\"} 2\n",
            "rtc_module_event_handler_seconds_count 5\n",
            "rtc_engine_events_total 4\n",
            "rtc_engine_live_calls{state=\"CONNECTED\"} 1\n",
            "rtc_partner_active_calls{partner_id=\"0\",partner=\"lab\"} 1\n",
        ] {
            assert!(out.contains(want), "{want}: {out}");
        }
        host.fire(fs::SWITCH_EVENT_CHANNEL_DESTROY, &[("Unique-ID", A)]);
        let (_, out) = host.api("rtc_core", "calls").expect("API runs");
        assert!(out.contains("0 total"), "{out}");
        let (_, out) = host
            .api("rtc_core", &format!("call {A}"))
            .expect("API runs");
        assert!(
            out.contains("CONNECTED -> COMPLETED on CHANNEL_HANGUP"),
            "{out}"
        );
        let (_, out) = host.api("rtc_core", "breakers").expect("API runs");
        assert_eq!(out, "none: every service is local\n");
    });
}

#[test]
fn app_decides_and_bridges_over_the_routes() {
    with_module(|host, _| {
        assert!(host.interface(true, "rtc_core").is_some(), "app registered");
        // Decided: variables set, bridged over both routes with failover, the call ends with the bridge.
        host.session_new(A);
        host.session_profile(A, "+15550001", "4930123", "127.0.0.1", false);
        assert!(host.app("rtc_core", A, ""));
        assert_eq!(host.var(A, "rtc_partner").as_deref(), Some("lab"));
        assert_eq!(host.var(A, "rtc_route").as_deref(), Some("carrier_b"));
        assert_eq!(host.var(A, "hangup_after_bridge").as_deref(), Some("true"));
        let executed = host.executed(A);
        assert!(
            executed.contains(&format!(
                "bridge([rtc_a_leg={A},call_uuid={A},origination_uuid={}]sofia/gateway/carrier_b/4930123)",
                leg(A, 0)
            )),
            "{executed}"
        );
        assert_eq!(host.hangup_cause(A), Some(16), "ended with the bridge");
        // Every route fails: hung up with the last route's cause (NORMAL_TEMPORARY_FAILURE = 41).
        host.session_new(D);
        host.session_profile(D, "+15550001", "15551234", "127.0.0.1", false);
        host.bridge_fails(D, Some("NORMAL_TEMPORARY_FAILURE"));
        assert!(host.app("rtc_core", D, ""));
        let executed = host.executed(D);
        assert!(
            executed.contains(&format!(
                "bridge([rtc_a_leg={D},call_uuid={D},origination_uuid={}]error/NORMAL_TEMPORARY_FAILURE|\
                 [rtc_a_leg={D},call_uuid={D},origination_uuid={}]loopback/15551234/rtc_answer)",
                leg(D, 0),
                leg(D, 1)
            )),
            "{executed}"
        );
        assert_eq!(host.hangup_cause(D), Some(41));
        // No route: rtc_reject_reason set, hung up with NO_ROUTE_DESTINATION = 3.
        host.session_new(B);
        host.session_profile(B, "+15550001", "8821234", "127.0.0.1", false);
        assert!(host.app("rtc_core", B, ""));
        assert_eq!(
            host.var(B, "rtc_reject_reason").as_deref(),
            Some("no_route")
        );
        assert_eq!(host.hangup_cause(B), Some(3));
        // Unknown partner: CALL_REJECTED = 21.
        host.session_new(C);
        host.session_profile(C, "+15550001", "4930123", "203.0.113.7", false);
        assert!(host.app("rtc_core", C, ""));
        assert_eq!(
            host.var(C, "rtc_reject_reason").as_deref(),
            Some("unknown_partner")
        );
        assert_eq!(host.hangup_cause(C), Some(21));
        for s in [A, B, C, D] {
            assert_eq!(host.session_locks(s), 0, "no session lock left behind");
        }
    });
}

/// Polls `f` for up to 10 s.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !f() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

#[test]
fn parked_calls_are_bridged_by_the_engine_with_failover() {
    with_module(|host, _| {
        host.session_new(P);
        host.session_profile(P, "+15550001", "15551234", "127.0.0.1", false);
        create(host, P, "15551234");
        // Parked for something else (no rtc_core=true): the engine never sees it.
        host.fire(
            fs::SWITCH_EVENT_CHANNEL_PARK,
            &[("Unique-ID", P), ("Event-Sequence", "101")],
        );
        let (_, out) = host.api("rtc_core", "metrics").expect("API runs");
        assert!(
            out.contains("rtc_module_events_total{outcome=\"unmarked_park\"} 1\n"),
            "{out}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(host.run_queued(P), 0, "nothing queued on an unmarked park");
        // Parked for the engine.
        host.fire(
            fs::SWITCH_EVENT_CHANNEL_PARK,
            &[
                ("Unique-ID", P),
                ("Event-Sequence", "101"),
                ("variable_rtc_core", "true"),
            ],
        );
        // The engine's first route is queued on the parked session; it fails.
        host.bridge_fails(P, Some("NORMAL_TEMPORARY_FAILURE"));
        eventually("first route queued", || host.run_queued(P) == 1);
        let executed = host.executed(P);
        assert!(
            executed.contains("rtc_core(route ")
                && executed.contains(&format!(
                    "bridge([rtc_a_leg={P},call_uuid={P},origination_uuid={}]",
                    leg(P, 0)
                ))
                && executed.contains("]error/NORMAL_TEMPORARY_FAILURE)"),
            "{executed}"
        );
        assert_eq!(
            host.hangup_cause(P),
            None,
            "a failed route leaves the call parked"
        );
        // The failure went back to the engine, which sends the second route; it connects.
        host.bridge_fails(P, None);
        eventually("second route queued", || host.run_queued(P) == 1);
        assert!(
            host.executed(P).contains("]loopback/15551234/rtc_answer)"),
            "{}",
            host.executed(P)
        );
        host.fire(
            fs::SWITCH_EVENT_CHANNEL_ANSWER,
            &[("Unique-ID", P), ("Event-Sequence", "102")],
        );
        host.fire(
            fs::SWITCH_EVENT_CHANNEL_HANGUP,
            &[
                ("Unique-ID", P),
                ("Event-Sequence", "103"),
                ("Hangup-Cause", "NORMAL_CLEARING"),
            ],
        );
        let (_, out) = host
            .api("rtc_core", &format!("call {P}"))
            .expect("API runs");
        for want in [
            "PARKED -> CONNECTING on CHANNEL_PARK",
            "CONNECTING -> CONNECTING on B_LEG_HANGUP",
            "CONNECTING -> CONNECTED on CHANNEL_ANSWER",
            "CONNECTED -> COMPLETED on CHANNEL_HANGUP",
        ] {
            assert!(out.contains(want), "{want}: {out}");
        }
        assert_eq!(host.session_locks(P), 0);
    });
}

#[test]
fn a_bad_configuration_fails_the_load_with_the_loaders_message() {
    let _serial = FakeHost::lock();
    let host = FakeHost::get();
    host.start_over(
        Some("<configuration name=\"rtc_core.conf\">\n<settings>\n<param name=\"queue-capacity\" value=\"lots\"/>\n</settings>\n</configuration>"),
        &shipped_conf(),
        None,
    );
    let module = Module::open(&module_path());
    let (status, _) = module.load();
    assert_eq!(status, fs::SWITCH_STATUS_GENERR);
    assert_eq!(host.bindings(), 0);
    assert!(
        host.log_count(":3: queue-capacity: \"lots\" is not") == 1,
        "the log says where and what: {}",
        host.log()
    );
    host.module_destroyed();
}

#[test]
fn a_panic_in_an_entry_point_is_contained() {
    if !cfg!(feature = "panic-test") {
        println!(
            "skipped: panic containment: build with --features mod_rtc_core/panic-test (as README's test command does)"
        );
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
        assert!(out.contains("panics caught: 1"), "{out}");
    });
}

#[test]
fn load_without_configuration_fails_cleanly() {
    let _serial = FakeHost::lock();
    let host = FakeHost::get();
    host.start_over(None, &shipped_conf(), None);
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

#[test]
fn a_new_calls_digest_user_is_read_from_its_channel_variables() {
    with_module(|host, _| {
        // Partner lab_auth (127.0.8.0/24) takes calls from digest users alice and bob only. The variables come after
        // the channel's own headers, as FreeSWITCH orders them; only a SIP channel (mod_sofia) has a digest user.
        let fire = |uuid: &str, user: Option<&str>| {
            let mut headers = vec![
                ("Unique-ID", uuid),
                ("Event-Sequence", "100"),
                ("Call-Direction", "inbound"),
                ("Channel-Call-UUID", uuid),
                ("Caller-Caller-ID-Number", "+15550001"),
                ("Caller-Network-Addr", "127.0.8.5"),
                ("Caller-Destination-Number", "15551234"),
                ("Caller-Source", "mod_sofia"),
                ("variable_sip_from_user", "alice-desk"),
            ];
            if let Some(u) = user {
                headers.push(("variable_sip_auth_username", u));
            }
            headers.push(("variable_sip_authorized", "true"));
            host.fire(fs::SWITCH_EVENT_CHANNEL_CREATE, &headers);
        };
        fire(A, Some("alice"));
        fire(B, None);
        fire(C, Some("mallory"));
        let trace = |uuid: &str| {
            host.api("rtc_core", &format!("call {uuid}"))
                .expect("API runs")
                .1
        };
        let out = trace(A);
        assert!(out.contains("AUTHENTICATION -> BALANCE_CHECK"), "{out}");
        for uuid in [B, C] {
            let out = trace(uuid);
            assert!(
                out.contains("state: REJECTED") && out.contains("auth"),
                "{out}"
            );
        }
    });
}

#[test]
fn calls_are_taken_from_the_configured_contexts_only() {
    with_module(|host, _| {
        host.set_config(
            "rtc_core.conf",
            Some(r#"<configuration name="rtc_core.conf"><settings><param name="contexts" value="public, carriers"/></settings></configuration>"#),
        );
        let (_, out) = host.api("rtc_core", "reload").expect("API runs");
        assert!(out.starts_with("+OK"), "{out}");
        let fire = |uuid: &str, context: &str| {
            host.fire(
                fs::SWITCH_EVENT_CHANNEL_CREATE,
                &[
                    ("Unique-ID", uuid),
                    ("Event-Sequence", "100"),
                    ("Call-Direction", "inbound"),
                    ("Channel-Call-UUID", uuid),
                    ("Caller-Caller-ID-Number", "+15550001"),
                    ("Caller-Network-Addr", "127.0.0.1"),
                    ("Caller-Destination-Number", "4930123"),
                    ("Caller-Source", "mod_sofia"),
                    ("Caller-Context", context),
                ],
            );
        };
        fire(A, "default");
        fire(B, "carriers");
        let (_, out) = host.api("rtc_core", "calls").expect("API runs");
        assert!(
            out.contains(B) && !out.contains(A) && out.contains("1 total"),
            "{out}"
        );
        let (_, out) = host.api("rtc_core", "status").expect("API runs");
        assert!(
            out.contains("taken from contexts public, carriers only (1 channels elsewhere left to the dialplan)"),
            "{out}"
        );
        // So is one parked there with rtc_core=true.
        host.fire(
            fs::SWITCH_EVENT_CHANNEL_PARK,
            &[
                ("Unique-ID", D),
                ("Call-Direction", "inbound"),
                ("Caller-Network-Addr", "127.0.0.1"),
                ("Caller-Destination-Number", "4930123"),
                ("Caller-Context", "default"),
                ("variable_rtc_core", "true"),
            ],
        );
        let (_, out) = host.api("rtc_core", "calls").expect("API runs");
        assert!(out.contains(D) && out.contains("2 total"), "{out}");
        // A call from another context that reaches the app is decided all the same: the app asks for it.
        host.session_new(A);
        host.session_profile(A, "+15550001", "4930123", "127.0.0.1", false);
        assert!(host.app("rtc_core", A, ""));
        assert_eq!(host.var(A, "rtc_partner").as_deref(), Some("lab"));
    });
}

/// `GET <path>` on `addr`; the whole response.
fn http_get(addr: &str, path: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

#[test]
fn the_scrape_endpoint_serves_the_metrics_page_while_loaded() {
    let _serial = FakeHost::lock();
    let host = FakeHost::get();
    let addr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
        probe.local_addr().expect("addr").to_string()
    };
    let (module, _db) = loaded_with(
        host,
        &format!(r#"<settings><param name="metrics-listen" value="{addr}"/></settings>"#),
    );
    assert_eq!(create(host, A, "4930123"), 1);
    let page = http_get(&addr, "/metrics").expect("scrape");
    assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
    assert!(
        page.contains("Content-Type: text/plain; version=0.0.4")
            && page.contains("rtc_module_events_total{outcome=\"accepted\"} 1\n")
            && page.contains("rtc_module_event_handler_seconds_count 1\n"),
        "{page}"
    );
    assert!(
        http_get(&addr, "/")
            .expect("404")
            .starts_with("HTTP/1.1 404")
    );
    let (_, out) = host.api("rtc_core", "status").expect("API runs");
    assert!(
        out.contains(&format!("metrics endpoint: http://{addr}/metrics")),
        "{out}"
    );
    // A reload cannot move it: said so, and it keeps serving where it is.
    host.set_config(
        "rtc_core.conf",
        Some(r#"<configuration name="rtc_core.conf"><settings><param name="metrics-listen" value="127.0.0.1:1"/></settings></configuration>"#),
    );
    let (_, out) = host.api("rtc_core", "reload").expect("API runs");
    assert!(
        out.contains("Not applied while loaded") && out.contains("metrics-listen"),
        "{out}"
    );
    assert!(
        http_get(&addr, "/metrics")
            .expect("scrape")
            .starts_with("HTTP/1.1 200")
    );
    // Unloaded: nothing listens any more.
    assert_eq!(module.shutdown(), fs::SWITCH_STATUS_SUCCESS);
    assert!(
        http_get(&addr, "/metrics").is_err(),
        "still listening after shutdown"
    );

    // An address that cannot be bound: the module loads all the same, and status says why there is no endpoint.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
    let busy_addr = busy.local_addr().expect("addr").to_string();
    let (module, _db) = loaded_with(
        host,
        &format!(r#"<settings><param name="metrics-listen" value="{busy_addr}"/></settings>"#),
    );
    let (_, out) = host.api("rtc_core", "status").expect("API runs");
    assert!(
        out.contains(&format!(
            "metrics endpoint: not serving: metrics-listen {busy_addr}: cannot listen"
        )),
        "{out}"
    );
    assert_eq!(module.shutdown(), fs::SWITCH_STATUS_SUCCESS);
}

#[test]
fn a_call_whose_session_is_gone_without_a_hangup_is_settled() {
    let _serial = FakeHost::lock();
    let host = FakeHost::get();
    let (module, _db) = loaded_with(
        host,
        r#"<settings><param name="verify-after" value="200ms"/><param name="sweep-interval" value="50ms"/></settings>"#,
    );
    // B's session is there; A's is not (its hangup events never came).
    host.session_new(B);
    create(host, A, "4930123");
    create(host, B, "4930123");
    eventually("A settled", || {
        let (_, out) = host.api("rtc_core", "calls").expect("API runs");
        out.contains(B) && !out.contains(A)
    });
    let (_, out) = host.api("rtc_core", "metrics").expect("API runs");
    assert!(out.contains("rtc_engine_channels_gone_total 1\n"), "{out}");
    let (_, out) = host
        .api("rtc_core", &format!("call {A}"))
        .expect("API runs");
    assert!(out.contains("reason: stale"), "{out}");
    assert_eq!(module.shutdown(), fs::SWITCH_STATUS_SUCCESS);
}

#[test]
fn the_app_can_leave_the_bridge_to_the_operators_dialplan() {
    with_module(|host, _| {
        host.session_new(A);
        host.session_profile(A, "+15550001", "4930123", "127.0.0.1", false);
        assert!(host.app("rtc_core", A, "transfer=carriers"));
        let executed = host.executed(A);
        assert!(
            executed.contains("transfer(4930123 XML carriers)") && !executed.contains("bridge("),
            "{executed}"
        );
        assert_eq!(
            host.var(A, "rtc_dial"),
            Some(format!(
                "[rtc_a_leg={A},call_uuid={A},origination_uuid={}]sofia/gateway/carrier_b/4930123",
                leg(A, 0)
            ))
        );
        assert_eq!(host.var(A, "rtc_routes").as_deref(), Some("1"));
        assert_eq!(host.var(A, "rtc_route").as_deref(), Some("carrier_b"));
        assert_eq!(host.hangup_cause(A), None, "the dialplan carries on");
        // Refused calls are hung up as ever, transfer or not.
        host.session_new(C);
        host.session_profile(C, "+15550001", "4930123", "203.0.113.7", false);
        assert!(host.app("rtc_core", C, "transfer=carriers"));
        assert_eq!(host.hangup_cause(C), Some(21));
        assert!(!host.executed(C).contains("transfer("));
    });
}

#[test]
fn unload_hangs_connected_calls_up_when_configured() {
    let _serial = FakeHost::lock();
    let host = FakeHost::get();
    let (module, _db) = loaded_with(
        host,
        r#"<settings><param name="shutdown-calls" value="hangup"/></settings>"#,
    );
    for uuid in [A, B] {
        host.session_new(uuid);
        create(host, uuid, "4930123");
    }
    // A is connected; B is decided and waiting to park.
    for uuid in [A, B] {
        wait_for_state(host, uuid, "PARKED");
    }
    host.fire(
        fs::SWITCH_EVENT_CHANNEL_ANSWER,
        &[("Unique-ID", A), ("Event-Sequence", "101")],
    );
    let (_, out) = host
        .api("rtc_core", &format!("call {A}"))
        .expect("API runs");
    assert!(out.contains("state: CONNECTED"), "{out}");
    assert_eq!(module.shutdown(), fs::SWITCH_STATUS_SUCCESS);
    // SYSTEM_SHUTDOWN = 701 for both: the connected call too, as configured.
    assert_eq!(host.hangup_cause(A), Some(701));
    assert_eq!(host.hangup_cause(B), Some(701));
}

#[test]
fn a_cdr_the_disk_refuses_is_logged_whole() {
    let _serial = FakeHost::lock();
    let host = FakeHost::get();
    // /dev/full takes the open and refuses every write (ENOSPC).
    let (module, _db) = loaded_with(
        host,
        r#"<local><param name="cdr-file" value="/dev/full"/></local>"#,
    );
    create(host, A, "4930123");
    host.fire(
        fs::SWITCH_EVENT_CHANNEL_HANGUP,
        &[
            ("Unique-ID", A),
            ("Event-Sequence", "101"),
            ("Hangup-Cause", "NORMAL_CLEARING"),
        ],
    );
    // Unloading waits for the CDR writer: the record is in the log by then.
    assert_eq!(module.shutdown(), fs::SWITCH_STATUS_SUCCESS);
    let log = host.log();
    assert!(
        log.contains(&format!("CDR not written to /dev/full: {{\"uuid\":\"{A}\"")),
        "{log}"
    );
}

/// The value of `key: value` line `key` in `text`.
fn field<'t>(text: &'t str, key: &str) -> Option<&'t str> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(": "))
}

#[test]
fn balance_and_topup_answer_from_the_ledger() {
    with_module(|host, _| {
        let api = |cmd: &str| host.api("rtc_core", cmd).expect("API runs").1;
        // A fresh ledger: lab's opening balance from the shipped balances.csv.
        let out = api("balance lab");
        assert_eq!(
            out,
            "partner: lab\nbalance: 1000000.000000\nreserved: 0.000000\navailable: 1000000.000000\n\
             credit_limit: 0.000000\nopen_reservations: 0\nlive_calls: 0\n"
        );
        let out = api("balance");
        assert!(
            out.starts_with("partner,balance,reserved,available,live_calls\n")
                && out.contains("\nlab,1000000.000000,0.000000,1000000.000000,0\n")
                // acme may go 500.00 below zero (its credit limit in the sample partners.csv).
                && out.contains("\nacme,2500.000000,0.000000,3000.000000,0\n"),
            "{out}"
        );
        // A call in progress holds money and a place.
        create(host, A, "4930123");
        wait_for_state(host, A, "PARKED");
        let out = api("balance lab");
        assert_eq!(field(&out, "reserved"), Some("1.000000"), "{out}");
        assert_eq!(field(&out, "available"), Some("999999.000000"), "{out}");
        assert_eq!(field(&out, "open_reservations"), Some("1"), "{out}");
        assert_eq!(field(&out, "live_calls"), Some("1"), "{out}");
        assert!(api("balance").contains("\nlab,1000000.000000,1.000000,999999.000000,1\n"));

        // Paid in once per reference.
        assert_eq!(
            api("topup acme 25.5 pay-0001"),
            "+OK acme balance 2525.500000\n"
        );
        assert_eq!(
            api("topup acme 25.50 pay-0001"),
            "+OK acme balance 2525.500000 (reference pay-0001 already applied)\n"
        );
        let out = api("topup acme 30 pay-0001");
        assert!(
            out.starts_with(
                "-ERR reference pay-0001 was already used for a topup of 25.500000 on acme"
            ),
            "{out}"
        );
        assert_eq!(field(&api("balance acme"), "balance"), Some("2525.500000"));
        for unknown in ["topup nobody 1 pay-0002", "balance nobody", "balance ACME"] {
            let out = api(unknown);
            assert!(out.starts_with("-ERR no partner "), "{unknown}: {out}");
        }
        for (bad, why) in [
            (
                "topup acme -1 pay-3",
                "amount \"-1\" is not a positive decimal",
            ),
            (
                "topup acme 0 pay-3",
                "amount \"0\" is not a positive decimal",
            ),
            ("topup acme 1.1234567 pay-3", "at most 6 decimals"),
            ("topup acme %s%n pay-3", "amount \"%s%n\" is not"),
            (
                "topup acme 5",
                "`topup` needs a partner, an amount and a reference",
            ),
            (
                "topup acme 5 pay-3 more",
                "`topup <partner> <amount> <reference>` takes no more",
            ),
            (
                "balance acme more",
                "`balance <partner>` takes no more arguments",
            ),
        ] {
            let out = api(bad);
            assert!(
                out.starts_with("-ERR ") && out.contains(why) && out.contains("-USAGE: rtc_core <"),
                "{bad}: {out}"
            );
        }
        assert!(
            api(&format!("topup acme 5 {}", "r".repeat(65))).contains("is not 1 to 64 printable")
        );
        assert_eq!(
            field(&api("balance acme"), "balance"),
            Some("2525.500000"),
            "nothing else moved"
        );
        // Every top-up is in the log, whatever came of it.
        for line in [
            "topup: partner acme, amount 25.500000, reference pay-0001: applied, balance now 2525.500000",
            "topup: partner acme, amount 25.500000, reference pay-0001: already applied before",
            "topup: partner acme, amount 30.000000, reference pay-0001: refused",
            "topup: partner nobody, amount 1.000000, reference pay-0002: refused: unknown partner",
        ] {
            assert_eq!(host.log_count(line), 1, "{line}: {}", host.log());
        }
        // Status and metrics say what the ledger did.
        let out = api("status");
        assert!(
            out.contains("/rtc_core.db: ")
                && out.contains(
                    "storage failures 0; expired reservations 0; recovered from dead nodes 0"
                )
                && out.contains("billing: every 60 s;"),
            "{out}"
        );
        let out = api("metrics");
        for want in [
            "# TYPE rtc_ledger_commits_total counter\n",
            "rtc_ledger_storage_failures_total 0\n",
            "rtc_ledger_waiting_settlements 0\n",
            "rtc_billing_low_balance_total 0\n",
        ] {
            assert!(out.contains(want), "{want}: {out}");
        }
    });
}

#[test]
fn the_ledger_is_a_private_file_in_freeswitchs_db_directory() {
    use std::os::unix::fs::PermissionsExt;
    let db = tempfile::tempdir().expect("db dir");
    let file = db.path().join("rtc_core.db");
    with_module_in(db.path(), |host, _| {
        let meta = std::fs::metadata(&file).expect("the ledger is in the db dir");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "owner only");
        let (_, out) = host.api("rtc_core", "status").expect("API runs");
        assert!(
            out.contains(&format!("ledger: {}: ", file.display())),
            "{out}"
        );
    });
}

#[test]
fn a_ledger_that_will_not_open_fails_the_load_and_says_why() {
    let _serial = FakeHost::lock();
    let host = FakeHost::get();
    let db = tempfile::tempdir().expect("db dir");
    let file = db.path().join("rtc_core.db");
    std::fs::write(&file, "partner,balance\nlab,100\n").expect("write");
    host.start_over(Some(CONF), &shipped_conf(), Some(db.path()));
    let module = Module::open(&module_path());
    let (status, _) = module.load();
    assert_eq!(status, fs::SWITCH_STATUS_GENERR, "{}", host.log());
    assert_eq!(host.bindings(), 0);
    assert_eq!(host.subclass_owner(LOW_BALANCE), None, "reservation undone");
    assert_eq!(
        host.log_count("mod_rtc_core not loaded: "),
        1,
        "{}",
        host.log()
    );
    assert_eq!(
        host.log_count(&format!("{}: not a ledger", file.display())),
        1,
        "the log names the file: {}",
        host.log()
    );
    assert_eq!(
        host.log_count("(the ledger's file is <local> param ledger; empty: rtc_core.db in FreeSWITCH's db directory)"),
        1,
        "and where it comes from: {}",
        host.log()
    );
    assert_eq!(
        std::fs::read_to_string(&file).expect("read"),
        "partner,balance\nlab,100\n",
        "left as it was"
    );
    host.module_destroyed();

    // No db directory at all: refused rather than kept in memory.
    host.start_over(Some(CONF), &shipped_conf(), None);
    let (status, _) = module.load();
    assert_eq!(status, fs::SWITCH_STATUS_GENERR);
    assert_eq!(
        host.log_count("FreeSWITCH has no db directory"),
        1,
        "{}",
        host.log()
    );
    host.module_destroyed();
}

/// A conf dir whose partner lab (127.0.0.0/16) has `balance`, calls to 49 cost 1.00 a second (billed per second),
/// and route over carrier_a.
fn priced_conf(balance: &str) -> tempfile::TempDir {
    let conf = tempfile::tempdir().expect("conf dir");
    let tables = conf.path().join("rtc_core");
    std::fs::create_dir_all(&tables).expect("mkdir");
    for (name, text) in [
        (
            "partners.csv",
            "name,cidrs,max_concurrent,max_cps,auth_users,allowed_prefixes\nlab,127.0.0.0/16,0,0,,\n".to_owned(),
        ),
        (
            "rates.csv",
            "partner,prefix,per_minute,increment,minimum\n*,49,60.00,1,0\n".to_owned(),
        ),
        (
            "routes.csv",
            "prefix,carrier,dial_string,cost_per_minute,priority\n49,carrier_a,sofia/gateway/carrier_a/${destination},0.01,10\n"
                .to_owned(),
        ),
        ("balances.csv", format!("partner,balance\nlab,{balance}\n")),
    ] {
        std::fs::write(tables.join(name), text).expect("write table");
    }
    conf
}

#[test]
fn a_call_whose_money_runs_out_raises_low_balance_and_is_hung_up() {
    let _serial = FakeHost::lock();
    let host = FakeHost::get();
    // 1.50: the reservation (1.00) pays the first second; the second cannot be paid whole.
    let conf = priced_conf("1.50");
    let (module, _db) = loaded_from(
        host,
        conf.path(),
        r#"<settings><param name="debit-interval" value="1s"/><param name="reservation-amount" value="1.00"/></settings>"#,
    );
    let loaded = Loaded(&module);
    assert_eq!(
        host.subclass_owner(LOW_BALANCE).as_deref(),
        Some("mod_rtc_core"),
        "reserved at load"
    );
    host.session_new(A);
    create(host, A, "4930123");
    wait_for_state(host, A, "PARKED");
    host.fire(
        fs::SWITCH_EVENT_CHANNEL_ANSWER,
        &[("Unique-ID", A), ("Event-Sequence", "101")],
    );
    eventually("the low-balance event", || {
        !host.fired(LOW_BALANCE).is_empty()
    });
    let fired = host.fired(LOW_BALANCE);
    assert_eq!(fired.len(), 1, "{fired:?}");
    let headers = &fired[0];
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("Event-Subclass"), Some(LOW_BALANCE), "{headers:?}");
    assert_eq!(get("Unique-ID"), Some(A), "{headers:?}");
    assert_eq!(get("rtc_partner"), Some("lab"), "{headers:?}");
    assert_eq!(get("rtc_paid_seconds"), Some("1"), "{headers:?}");
    let remaining: u32 = get("rtc_remaining_seconds")
        .and_then(|v| v.parse().ok())
        .expect("rtc_remaining_seconds");
    assert!(remaining <= 1, "{headers:?}");
    assert_eq!(
        host.var(A, "rtc_low_balance"),
        Some(remaining.to_string()),
        "the channel is told too"
    );
    // Hung up when what it paid for runs out: ALLOTTED_TIMEOUT (802).
    eventually("the hangup", || host.hangup_cause(A).is_some());
    assert_eq!(host.hangup_cause(A), Some(802));
    let (_, out) = host.api("rtc_core", "metrics").expect("API runs");
    assert!(out.contains("rtc_billing_low_balance_total 1\n"), "{out}");
    assert_eq!(module.shutdown(), fs::SWITCH_STATUS_SUCCESS);
    drop(loaded);
    assert_eq!(host.subclass_owner(LOW_BALANCE), None, "freed at unload");
}

/// Behind a SIP load balancer: 127.0.0.1 is the trusted proxy, and writes the caller's address in X-Source-IP.
const BEHIND_A_BALANCER: &str = r#"<settings><param name="trusted-proxies" value="127.0.0.1"/><param name="source-header" value="X-Source-IP"/></settings>"#;

/// The CHANNEL_CREATE of a new SIP call from `from`, with `variables` after the channel's own headers (as
/// FreeSWITCH orders them).
fn sip_create(host: &FakeHost, uuid: &str, from: &str, variables: &[(&str, &str)]) {
    let mut headers = vec![
        ("Unique-ID", uuid),
        ("Event-Sequence", "100"),
        ("Event-Date-Timestamp", "1700000000000000"),
        ("Call-Direction", "inbound"),
        ("Channel-Call-UUID", uuid),
        ("Caller-Caller-ID-Number", "+15550001"),
        ("Caller-Destination-Number", "4930123"),
        ("Caller-Network-Addr", from),
        ("Caller-Source", "mod_sofia"),
        ("variable_sip_from_user", "sipp"),
        ("variable_sip_network_ip", from),
    ];
    headers.extend_from_slice(variables);
    headers.push(("variable_max_forwards", "69"));
    host.fire(fs::SWITCH_EVENT_CHANNEL_CREATE, &headers);
}

/// Waits (at most 10 s) until the engine names call `uuid`'s partner; `rtc_core call`'s answer.
fn identified(host: &FakeHost, uuid: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (_, out) = host
            .api("rtc_core", &format!("call {uuid}"))
            .expect("API runs");
        if out.contains("partner: ") || out.contains("reason: unknown_partner") {
            return out;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "call {uuid} not identified within 10 s: {out}"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

#[test]
fn behind_a_load_balancer_the_trusted_proxys_header_names_the_caller() {
    const E: &str = "44444444-2222-4d2b-8a7e-0123456789ff";
    const F: &str = "55555555-2222-4d2b-8a7e-0123456789ff";
    const G: &str = "66666666-2222-4d2b-8a7e-0123456789ff";
    let _serial = FakeHost::lock();
    let host = FakeHost::get();
    let (module, _db) = loaded_with(host, BEHIND_A_BALANCER);
    let loaded = Loaded(&module);
    let header = |v| [("variable_sip_h_X-Source-IP", v)];
    // From the trusted proxy: the caller is 192.0.2.10, acme's (127.0.0.1 itself is lab's).
    sip_create(host, A, "127.0.0.1", &header("192.0.2.10"));
    let out = identified(host, A);
    assert!(
        out.contains("partner: acme") && out.contains("source_ip: 192.0.2.10"),
        "{out}"
    );
    // The same header from 127.0.0.2, not a trusted proxy: ignored, the call is lab's; counted and warned about,
    // naming the call, the transport source and the header's value.
    sip_create(host, B, "127.0.0.2", &header("192.0.2.10"));
    let out = identified(host, B);
    assert!(
        out.contains("partner: lab") && out.contains("source_ip: 127.0.0.2"),
        "{out}"
    );
    assert_eq!(
        host.log_count(&format!(
            "call {B}: X-Source-IP: \"192.0.2.10\" from 127.0.0.2, which is not a trusted proxy: ignored"
        )),
        1,
        "{}",
        host.log()
    );
    // The trusted proxy without the header: its own address (lab's here); with garbage, or the header twice (the
    // caller's own first): refused, its own address, and a warning that says why.
    sip_create(host, C, "127.0.0.1", &[]);
    sip_create(host, D, "127.0.0.1", &header("lb-7.example"));
    sip_create(
        host,
        E,
        "127.0.0.1",
        &[
            ("variable_sip_h_X-Source-IP", "192.0.2.10"),
            ("variable_sip_h_X-Source-IP-1", "127.0.0.9"),
        ],
    );
    for uuid in [C, D, E] {
        let out = identified(host, uuid);
        assert!(
            out.contains("partner: lab") && out.contains("source_ip: 127.0.0.1"),
            "{out}"
        );
    }
    assert_eq!(
        host.log_count(&format!(
            "call {D}: trusted proxy 127.0.0.1 sent X-Source-IP: \"lb-7.example\": not an IP address; not believed"
        )),
        1,
        "{}",
        host.log()
    );
    assert_eq!(
        host.log_count(&format!("call {E}: trusted proxy 127.0.0.1 sent X-Source-IP: \"192.0.2.10\": the header appears more than once")),
        1,
        "{}",
        host.log()
    );
    // The header's name as the balancer spelt it (channel variables are looked up without regard to case), and
    // X-Forwarded-For's way of listing hops (read from the right).
    sip_create(
        host,
        F,
        "127.0.0.1",
        &[("variable_sip_h_x-source-ip", "203.0.113.9, 192.0.2.10")],
    );
    let out = identified(host, F);
    assert!(out.contains("partner: acme"), "{out}");
    // The dialplan app describes a call the engine has not seen the same way.
    host.session_new(G);
    host.session_profile(G, "+15550001", "4930123", "127.0.0.1", false);
    host.set_var(G, "sip_h_X-Source-IP", "192.0.2.10");
    assert!(host.app("rtc_core", G, ""));
    assert_eq!(host.var(G, "rtc_partner").as_deref(), Some("acme"));
    host.session_new(P);
    host.session_profile(P, "+15550001", "4930123", "127.0.0.2", false);
    host.set_var(P, "sip_h_X-Source-IP", "192.0.2.10");
    assert!(host.app("rtc_core", P, ""));
    assert_eq!(host.var(P, "rtc_partner").as_deref(), Some("lab"));

    // Counted once per call, by the handler (the app's calls were not created by events: not counted).
    let (_, out) = host.api("rtc_core", "metrics").expect("API runs");
    for want in [
        "rtc_module_source_header_total{outcome=\"believed\"} 2\n",
        "rtc_module_source_header_total{outcome=\"absent\"} 1\n",
        "rtc_module_source_header_total{outcome=\"refused\"} 2\n",
        "rtc_module_source_header_total{outcome=\"spoofed\"} 1\n",
    ] {
        assert!(out.contains(want), "{want}: {out}");
    }
    let (_, out) = host.api("rtc_core", "status").expect("API runs");
    assert!(
        out.contains(
            "source header: X-Source-IP from trusted proxies 127.0.0.1: believed 2, absent 1, refused 2; spoofed 1"
        ),
        "{out}"
    );

    // Another balancer: trusted-proxies follows a reload. 127.0.0.1 is no longer trusted: its header is ignored.
    host.set_config(
        "rtc_core.conf",
        Some(r#"<configuration name="rtc_core.conf"><settings><param name="trusted-proxies" value="127.0.0.3"/><param name="source-header" value="X-Source-IP"/></settings></configuration>"#),
    );
    let (_, out) = host.api("rtc_core", "reload").expect("API runs");
    assert!(
        out.starts_with("+OK") && !out.contains("Not applied"),
        "{out}"
    );
    const H: &str = "77777777-2222-4d2b-8a7e-0123456789ff";
    sip_create(host, H, "127.0.0.1", &header("192.0.2.10"));
    assert!(identified(host, H).contains("partner: lab"));
    // Another header: read by name at load, it waits for a module reload, and the rule in force stays.
    host.set_config(
        "rtc_core.conf",
        Some(r#"<configuration name="rtc_core.conf"><settings><param name="trusted-proxies" value="127.0.0.1"/><param name="source-header" value="X-Forwarded-For"/></settings></configuration>"#),
    );
    let (_, out) = host.api("rtc_core", "reload").expect("API runs");
    assert!(
        out.starts_with("+OK") && out.contains("source-header (and trusted-proxies with it)"),
        "{out}"
    );
    let (_, out) = host.api("rtc_core", "status").expect("API runs");
    assert!(
        out.contains("source header: X-Source-IP from trusted proxies 127.0.0.3:")
            && out.contains("waiting for a module reload: source-header"),
        "{out}"
    );
    assert_eq!(module.shutdown(), fs::SWITCH_STATUS_SUCCESS);
    drop(loaded);
}

#[test]
fn without_trusted_proxies_a_source_header_is_not_read() {
    with_module(|host, _| {
        sip_create(
            host,
            A,
            "127.0.0.1",
            &[("variable_sip_h_X-Source-IP", "192.0.2.10")],
        );
        let out = identified(host, A);
        assert!(
            out.contains("partner: lab") && out.contains("source_ip: 127.0.0.1"),
            "{out}"
        );
        let (_, out) = host.api("rtc_core", "metrics").expect("API runs");
        assert!(
            out.contains("rtc_module_source_header_total{outcome=\"spoofed\"} 0\n"),
            "{out}"
        );
        let (_, out) = host.api("rtc_core", "status").expect("API runs");
        assert!(
            out.contains(
                "source header: none (every call is identified by its transport source)\n"
            ),
            "{out}"
        );
    });
}
