//! ESL mode end to end: the real engine, its ESL client and call control, against the event socket
//! simulator server on 127.0.0.1 playing calls with the traffic driver.

use std::time::{Duration, Instant};

use rtc_config::RtcConfig;
use rtc_engine::clock::Clock;
use rtc_engine::config::FailModes;
use rtc_engine::engine::{Engine, EngineParts, Query, QueryReply};
use rtc_engine::sim::{self, Scenario, SimOptions, SimProfile, SimReport};
use rtc_esl::client::{ClientError, CommandError, EslClient, EslConfig, EslLink};
use rtc_esl::replay::{ReplayOptions, replay, same_course, states};
use rtc_esl::server::{EslServer, ServerConfig};
use rtc_services::local::LocalServices;

/// A server, an engine over the local backends, and a client between them.
struct Rig {
    server: EslServer,
    engine: Engine,
    client: EslClient,
}

fn esl_config(port: u16) -> EslConfig {
    EslConfig {
        port,
        command_timeout: Duration::from_millis(500),
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        ..EslConfig::default()
    }
}

fn rig_with(server_cfg: ServerConfig, tune: impl FnOnce(&mut EslConfig)) -> Rig {
    let server = EslServer::start(0, server_cfg).expect("server starts");
    let cfg = RtcConfig::default();
    let services = LocalServices::load(&cfg.local).expect("sample tables load");
    let link = EslLink::new();
    let engine = Engine::start(EngineParts {
        config: cfg.engine.clone(),
        fail_modes: cfg.fail_modes(),
        services: Box::new(services),
        control: Box::new(link.call_control()),
        clock: Clock::system(),
    })
    .expect("engine starts");
    let mut esl = esl_config(server.port());
    tune(&mut esl);
    let client = EslClient::start(esl, link, engine.handle()).expect("client starts");
    client
        .wait_connected(Duration::from_secs(5))
        .expect("client connects");
    Rig {
        server,
        engine,
        client,
    }
}

fn rig() -> Rig {
    rig_with(ServerConfig::default(), |_| {})
}

/// Traffic: the sample routes send 1555... to `error/` first (no outbound leg), then to a second route;
/// 44... calls of the failover scenario get no answer from the first carrier.
/// The traffic's seed (the simulator's call ids carry it).
const SEED: u64 = 7;

fn options(calls: usize, cps: f64, talk_ms: (u64, u64)) -> SimOptions {
    SimOptions {
        calls,
        cps,
        talk: (
            Duration::from_millis(talk_ms.0),
            Duration::from_millis(talk_ms.1),
        ),
        ring: Duration::from_millis(5),
        seed: SEED,
        profile: SimProfile {
            routed_prefix: "1555",
            ..SimProfile::default()
        },
        drain_timeout: Duration::from_secs(10),
        ..SimOptions::default()
    }
}

fn run_traffic(rig: &Rig, opts: SimOptions) -> SimReport {
    let (switch, commands) = rig
        .server
        .switch(Some(rig.engine.handle()))
        .expect("switch taken once");
    sim::run_with(switch, commands, opts, |_, _| {})
}

fn expected(report: &SimReport, state: &str) -> u64 {
    report
        .by_scenario
        .iter()
        .filter(|(s, _)| s.expected() == state)
        .map(|(_, n)| *n as u64)
        .sum()
}

fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Whether `calls` calls were created and every live one is connected.
fn all_talking(h: &rtc_engine::engine::EngineHandle, calls: u64) -> bool {
    match h.query(Query::Status, Duration::from_secs(1)) {
        Ok(QueryReply::Status(s)) => {
            s.stats.calls_created == calls
                && s.by_state
                    .iter()
                    .all(|(name, n)| *n == 0 || *name == "CONNECTED")
        }
        _ => false,
    }
}

#[test]
fn calls_flow_through_every_state_over_the_event_socket() {
    let rig = rig();
    let report = run_traffic(&rig, options(300, 600.0, (20, 60)));
    let s = &report.stats;
    assert_eq!(report.left_live, 0, "{report:#?}");
    assert_eq!(report.ended, report.calls);
    assert_eq!(s.completed, expected(&report, "COMPLETED"), "{report:#?}");
    assert_eq!(s.rejected, expected(&report, "REJECTED"), "{report:#?}");
    let failed: Vec<_> = (0..report.calls)
        .filter_map(|n| {
            match rig
                .engine
                .handle()
                .query(Query::Call(sim::call_id(SEED, n)), Duration::from_secs(1))
            {
                Ok(QueryReply::Call(Some(v))) if v.state == "FAILED" => Some(v),
                _ => None,
            }
        })
        .collect();
    assert_eq!(s.failed, 0, "{failed:#?}");
    assert_eq!(s.illegal_total(), 0, "{:?}", s.illegal);
    let c = rig.client.stats();
    // Every answered call to 1555 failed over from the error/ route without an outbound leg.
    assert!(c.intake.synthetic_b_hangups > 0, "{c:#?}");
    // Failover after a real outbound leg's no-answer is driven by that leg, not by the bridge-end marker.
    let failovers = report
        .by_scenario
        .iter()
        .find(|(s, _)| *s == Scenario::NoAnswerFailover)
        .map_or(0, |(_, n)| *n as u64);
    assert!(failovers > 0);
    assert_eq!(c.events_queue_full, 0);
    assert_eq!(c.bad_commands, 0);
    assert_eq!(c.commands_link_down, 0);
    assert_eq!(c.connects, 1);
    // Refused calls were hung up with uuid_kill; no answered call was.
    assert_eq!(rig.server.stats().kills, s.rejected, "{report:#?}");
    assert_eq!(report.hangups_commanded, s.rejected, "{report:#?}");
    rig.client.shutdown();
    let shut = rig.engine.shutdown();
    assert_eq!(shut.settled_calls, 0);
}

#[test]
fn a_link_cut_mid_call_is_remade_and_no_call_is_hung_up() {
    let rig = rig();
    let server = &rig.server;
    let client = &rig.client;
    let h = rig.engine.handle();
    let report = std::thread::scope(|scope| {
        scope.spawn(|| {
            // All calls arrive within 100 ms and talk for 400-600 ms: cut once every live call talks.
            wait_until("all calls talking", Duration::from_secs(5), || {
                all_talking(&h, 60)
            });
            server.cut_connections();
            wait_until("reconnect", Duration::from_secs(5), || {
                client.stats().connects >= 2 && client.is_connected()
            });
        });
        run_traffic(&rig, options(60, 600.0, (400, 600)))
    });
    let s = &report.stats;
    assert_eq!(report.left_live, 0, "{report:#?}");
    assert_eq!(s.completed, expected(&report, "COMPLETED"), "{report:#?}");
    assert_eq!(s.rejected, expected(&report, "REJECTED"));
    assert_eq!(
        report.hangups_commanded, s.rejected,
        "a live call was hung up"
    );
    let c = client.stats();
    assert_eq!(c.connects, 2, "{c:#?}");
    assert_eq!(c.disconnects, 1);
    assert_eq!(c.rebuild_hangups, 0, "no call ended during the short cut");
    assert_eq!(c.rebuilds, 2);
}

#[test]
fn calls_that_end_during_an_outage_are_settled_after_the_reconnect() {
    let rig = rig();
    let server = &rig.server;
    let h = rig.engine.handle();
    let report = std::thread::scope(|scope| {
        scope.spawn(|| {
            wait_until("all calls talking", Duration::from_secs(5), || {
                all_talking(&h, 60)
            });
            // FreeSWITCH restarts its listener: calls hang up meanwhile, their events are lost.
            server.go_down(Duration::from_millis(500));
        });
        run_traffic(&rig, options(60, 600.0, (300, 450)))
    });
    let c = rig.client.stats();
    assert!(c.rebuild_hangups > 0, "{c:#?}");
    assert_eq!(report.left_live, 0, "{report:#?} {c:#?}");
    let s = &report.stats;
    assert_eq!(s.completed, expected(&report, "COMPLETED"), "{report:#?}");
    assert_eq!(
        report.hangups_commanded, s.rejected,
        "a live call was hung up"
    );
    assert_eq!(rig.server.stats().kills, s.rejected, "{report:#?}");
}

#[test]
fn a_wrong_password_is_a_clear_error_and_is_not_retried() {
    let server = EslServer::start(
        0,
        ServerConfig {
            password: "right".into(),
            ..ServerConfig::default()
        },
    )
    .unwrap();
    let link = EslLink::new();
    let cfg = RtcConfig::default();
    let engine = Engine::start(EngineParts {
        config: cfg.engine.clone(),
        fail_modes: FailModes::default(),
        services: Box::new(LocalServices::load(&cfg.local).unwrap()),
        control: Box::new(link.call_control()),
        clock: Clock::system(),
    })
    .unwrap();
    let mut esl = esl_config(server.port());
    esl.password = "wrong".into();
    let client = EslClient::start(esl, link, engine.handle()).unwrap();
    let err = client.wait_connected(Duration::from_secs(5)).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "ESL auth refused by 127.0.0.1:{}: check the password",
            server.port()
        )
    );
    assert!(matches!(err, ClientError::AuthRefused { .. }));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        server.stats().connections,
        1,
        "a refused password is not retried"
    );
    assert_eq!(server.stats().auth_failures, 1);
    assert_eq!(client.fatal_error(), Some(err));
}

#[test]
fn commands_time_out_cleanly_and_a_stuck_link_is_remade() {
    let rig = rig();
    assert!(rig.client.api("status").unwrap().text.contains("is ready"));
    wait_until("first reconciliation", Duration::from_secs(5), || {
        rig.client.stats().rebuilds == 1
    });
    rig.server.set_mute(true);
    let started = Instant::now();
    let err = rig.client.api("status").unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, CommandError::Timeout { .. }), "{err}");
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_millis(1500),
        "{took:?}"
    );
    rig.server.set_mute(false);
    // The reply never comes: after twice the timeout the link is taken as stuck and remade.
    wait_until("reconnect", Duration::from_secs(5), || {
        rig.client.stats().connects >= 2 && rig.client.is_connected()
    });
    assert_eq!(rig.client.stats().stuck_links, 1);
    assert!(rig.client.api("status").is_ok());
    assert_eq!(
        rig.client.stats().command_timeouts,
        1,
        "{:#?}",
        rig.client.stats()
    );
}

#[test]
fn commands_in_flight_fail_when_the_link_drops_and_while_it_is_down() {
    let rig = rig_with(ServerConfig::default(), |c| {
        c.command_timeout = Duration::from_secs(30);
    });
    rig.server.set_mute(true);
    let client = &rig.client;
    let server = &rig.server;
    std::thread::scope(|scope| {
        let t = scope.spawn(|| {
            let started = Instant::now();
            (client.bgapi("status"), started.elapsed())
        });
        std::thread::sleep(Duration::from_millis(100));
        server.go_down(Duration::from_millis(300));
        let (result, took) = t.join().unwrap();
        let err = result.unwrap_err();
        assert!(matches!(err, CommandError::LinkDown { .. }), "{err}");
        assert!(err.to_string().contains("dropped"), "{err}");
        assert!(took < Duration::from_secs(2), "{took:?}");
    });
    // While the switch refuses connections, commands fail at once.
    let err = client.api("status").unwrap_err();
    assert!(matches!(err, CommandError::NotConnected { .. }), "{err}");
    server.set_mute(false);
    client.wait_connected(Duration::from_secs(5)).unwrap();
    wait_until("reconnect", Duration::from_secs(5), || {
        client.is_connected()
    });
    assert!(client.api("status").is_ok());
}

#[test]
fn a_recorded_stream_replays_to_the_same_call_traces() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("stream.esl");
    let rig = rig_with(ServerConfig::default(), |c| c.record = Some(file.clone()));
    let report = run_traffic(&rig, options(80, 400.0, (20, 60)));
    assert_eq!(report.left_live, 0);
    let h = rig.engine.handle();
    let live: Vec<_> = (0..report.calls)
        .map(
            |n| match h.query(Query::Call(sim::call_id(SEED, n)), Duration::from_secs(5)) {
                Ok(QueryReply::Call(Some(v))) => *v,
                other => panic!("call {n}: {other:?}"),
            },
        )
        .collect();
    rig.client.shutdown();
    drop(rig.engine);
    let cfg = RtcConfig::default();
    let replayed = replay(
        std::fs::File::open(&file).unwrap(),
        Box::new(LocalServices::load(&cfg.local).unwrap()),
        ReplayOptions {
            engine: cfg.engine.clone(),
            fail_modes: cfg.fail_modes(),
            intake: Default::default(),
            only: None,
        },
    )
    .unwrap();
    assert_eq!(replayed.calls.len(), live.len(), "{:?}", replayed.lost);
    // Live, a ledger's answer may have come after the next event; the replay applies it first (see
    // `same_course`).
    for (a, b) in live.iter().zip(&replayed.calls) {
        assert_eq!(a.uuid, b.uuid);
        assert!(
            same_course(a, b),
            "call {}: live {:?}, replayed {:?}",
            a.uuid,
            states(a),
            states(b)
        );
        assert_eq!(a.state, b.state, "call {}", a.uuid);
        assert_eq!(a.reason, b.reason, "call {}", a.uuid);
        assert_eq!(a.hangup_cause, b.hangup_cause, "call {}", a.uuid);
    }
    // One call alone.
    let one = replay(
        std::fs::File::open(&file).unwrap(),
        Box::new(LocalServices::load(&cfg.local).unwrap()),
        ReplayOptions {
            engine: cfg.engine.clone(),
            fail_modes: cfg.fail_modes(),
            intake: Default::default(),
            only: Some(live[3].uuid),
        },
    )
    .unwrap();
    assert_eq!(one.calls.len(), 1);
    assert!(same_course(&live[3], &one.calls[0]));
}

/// What the balancer's INVITEs carried, by the simulated call's caller number: mod_sofia's `sip_h_...` variables.
fn balancer_headers(ev: &rtc_engine::CallEvent) -> Vec<(String, String)> {
    let h = |name: &str, value: &str| (name.to_owned(), value.to_owned());
    match ev.caller.as_str() {
        "proxied" => vec![h("sip_h_X-Source-IP", "192.0.2.10")],
        "forwarded" => vec![h("sip_h_x-source-ip", "198.51.100.7, 192.0.2.10")],
        "garbage" => vec![h("sip_h_X-Source-IP", "lb-7.example")],
        "twice" => vec![
            h("sip_h_X-Source-IP", "192.0.2.10"),
            h("sip_h_X-Source-IP-1", "127.0.0.9"),
        ],
        _ => vec![],
    }
}

#[test]
fn behind_a_load_balancer_the_trusted_proxys_header_names_the_caller() {
    use rtc_engine::{CallEvent, CallId, EventKind};
    let rig = rig_with(
        ServerConfig {
            channel_variables: Some(balancer_headers),
            ..ServerConfig::default()
        },
        |esl| {
            esl.intake.proxy = Some(rtc_proxy::ProxyTrust {
                trusted: rtc_proxy::TrustedProxies::parse("127.0.0.1").unwrap(),
                header: rtc_proxy::SourceHeader::parse("X-Source-IP").unwrap(),
            });
        },
    );
    let (mut switch, _commands) = rig.server.switch(None).expect("switch");
    use rtc_engine::sim::EventSink;
    // (caller, transport source, the partner it is identified as, the source the engine keeps)
    let calls = [
        ("proxied", "127.0.0.1", "acme", "192.0.2.10"),
        ("forwarded", "127.0.0.1", "acme", "192.0.2.10"),
        ("proxied", "127.0.0.2", "lab", "127.0.0.2"),
        ("garbage", "127.0.0.1", "lab", "127.0.0.1"),
        ("twice", "127.0.0.1", "lab", "127.0.0.1"),
        ("plain", "127.0.0.1", "lab", "127.0.0.1"),
        ("plain", "127.0.0.2", "lab", "127.0.0.2"),
    ];
    for (i, (caller, from, ..)) in calls.iter().enumerate() {
        let mut ev = CallEvent::new(
            CallId::from_u128(0xa11 + i as u128),
            EventKind::ChannelCreate,
            10 + i as u64,
        );
        ev.timestamp_us = rtc_engine::core::epoch_us();
        ev.caller = (*caller).into();
        ev.destination = "4930123".into();
        ev.source_ip = Some(from.parse().unwrap());
        assert!(switch.emit(ev), "event written");
    }
    let h = rig.engine.handle();
    for (i, (caller, from, partner, source)) in calls.iter().enumerate() {
        let id = CallId::from_u128(0xa11 + i as u128);
        let mut view = None;
        wait_until("the call identified", Duration::from_secs(5), || {
            view = match h.query(Query::Call(id), Duration::from_secs(1)) {
                Ok(QueryReply::Call(Some(v))) if v.partner.is_some() => Some(v),
                _ => None,
            };
            view.is_some()
        });
        let v = view.unwrap();
        assert_eq!(
            (v.partner.as_deref(), v.source_ip.map(|s| s.to_string())),
            (Some(*partner), Some((*source).to_owned())),
            "{caller} from {from}"
        );
    }
    // Counted per new call; a call from elsewhere without the header has nothing to do with proxies.
    wait_until(
        "believed 2, absent 1, refused 2, spoofed 1",
        Duration::from_secs(5),
        || {
            let c = rig.client.stats().intake.sources;
            (c.believed, c.absent, c.refused, c.spoofed) == (2, 1, 2, 1)
        },
    );
}
