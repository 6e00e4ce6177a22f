//! Live: the engine in ESL mode against a real FreeSWITCH (1.10.12 here), started by the test with its own
//! configuration (`rtc_fs_live`). Skipped, with one line, when FreeSWITCH is not installed.
//!
//! Calls are placed with `originate ... loopback/<destination>/default &park`: the inbound half of the
//! loopback pair is the call the engine decides; it parks. Loopback channels have no transport address
//! (`Caller-Network-Addr` is absent), so the client is told explicitly to take them as from 127.0.0.1 —
//! the sample partner `lab`. The sample routes send 1555... first to `error/NORMAL_TEMPORARY_FAILURE` (a
//! bridge that fails without an outbound channel) and then to `loopback/${destination}/rtc_answer`, which
//! this dialplan answers, holds for half a second and hangs up. 882... is rated but not routed.

use std::io::BufRead;
use std::time::{Duration, Instant};

use rtc_config::RtcConfig;
use rtc_engine::clock::Clock;
use rtc_engine::engine::{Engine, EngineParts, Query, QueryReply};
use rtc_engine::id::CallId;
use rtc_esl::client::{EslClient, EslConfig, EslLink};
use rtc_esl::intake::IntakeConfig;
use rtc_esl::replay::{ReplayOptions, replay};
use rtc_fs_live::{FreeSwitch, Install, Options};
use rtc_services::local::LocalServices;

const DIALPLAN: &str = r#"
    <context name="default">
      <extension name="park_for_rtc_core">
        <condition field="destination_number" expression="^(.*)$">
          <action application="set" data="park_timeout=20"/>
          <action application="set" data="rtc_core=true"/>
          <action application="park"/>
        </condition>
      </extension>
    </context>
    <context name="rtc_answer">
      <extension name="answer_hold_hangup">
        <condition field="destination_number" expression="^(.*)$">
          <action application="answer"/>
          <action application="sleep" data="500"/>
          <action application="hangup"/>
        </condition>
      </extension>
    </context>
"#;

#[derive(serde::Deserialize, Debug)]
struct CdrLine {
    uuid: String,
    caller: String,
    final_state: String,
    reason: Option<String>,
    hangup_cause: String,
}

/// The simulator's frames against the real ones: every channel event FreeSWITCH sent is written again by
/// the simulator's writer for the same event, and (1) parses back to the same `CallEvent`, (2) carries every
/// header the engine reads that the real frame carried, (3) has most of the real frame's header names and a
/// size of the same order.
fn check_simulator_frames(record: &std::path::Path) {
    use rtc_esl::event::{EslMessage, EventParser};
    use rtc_esl::frame::{ContentType, Framer};
    use rtc_esl::write::{Host, serialize_channel_event};
    const ENGINE_HEADERS: &[&str] = &[
        "Event-Name",
        "Unique-ID",
        "Event-Sequence",
        "Event-Date-Timestamp",
        "Call-Direction",
        "Caller-Caller-ID-Number",
        "Caller-Destination-Number",
        "Caller-Network-Addr",
        "Hangup-Cause",
        "variable_sip_auth_username",
    ];
    let names = |body: &[u8]| -> std::collections::HashSet<String> {
        String::from_utf8_lossy(body)
            .split("\n\n")
            .next()
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once(": ").map(|(n, _)| n.to_owned()))
            .collect()
    };
    let mut framer = Framer::default();
    framer.push(&std::fs::read(record).unwrap());
    let (mut real_parser, mut sim_parser) = (EventParser::new(), EventParser::new());
    let (mut checked, mut real_bytes, mut sim_bytes, mut shared, mut real_names) = (0, 0, 0, 0, 0);
    while let Some(frame) = framer.next_frame() {
        let frame = frame.expect("FreeSWITCH's own frames parse");
        if frame.content_type != ContentType::EventPlain {
            continue;
        }
        let Ok(Some(EslMessage::Event(real))) = real_parser.parse_event(frame.body) else {
            continue;
        };
        let mut sim = Vec::new();
        serialize_channel_event(real.kind.name(), &real, &Host::default(), &mut sim);
        match sim_parser.parse_event(&sim) {
            Ok(Some(EslMessage::Event(again))) => assert_eq!(again, real, "{}", real.kind.name()),
            other => panic!(
                "simulator frame for {} does not parse: {other:?}",
                real.kind.name()
            ),
        }
        let (r, m) = (names(frame.body), names(&sim));
        for h in ENGINE_HEADERS {
            assert!(
                !r.contains(*h) || m.contains(*h),
                "{}: simulator lacks {h}",
                real.kind.name()
            );
        }
        // The other leg may come from any of these (the parsed events are equal, so it was the same one).
        let leg = [
            "variable_rtc_a_leg",
            "Other-Leg-Unique-ID",
            "Bridge-A-Unique-ID",
        ];
        assert!(
            !leg.iter().any(|h| r.contains(*h)) || leg.iter().any(|h| m.contains(*h)),
            "{}: simulator names no other leg",
            real.kind.name()
        );
        shared += r.intersection(&m).count();
        real_names += r.len();
        real_bytes += frame.body.len();
        sim_bytes += sim.len();
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} channel events recorded");
    let coverage = shared as f64 / real_names as f64;
    let size = sim_bytes as f64 / real_bytes as f64;
    println!(
        "simulator vs FreeSWITCH frames: {checked} events, {:.0} % of real header names, size ratio {size:.2}",
        coverage * 100.0
    );
    assert!(
        coverage > 0.5,
        "simulator frames have {coverage:.2} of the real header names"
    );
    assert!(
        (0.5..2.0).contains(&size),
        "simulator frames are {size:.2}x the real size"
    );
}

fn read_cdrs(path: &std::path::Path) -> Vec<CdrLine> {
    let Ok(f) = std::fs::File::open(path) else {
        return Vec::new();
    };
    std::io::BufReader::new(f)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str(&l).ok())
        .collect()
}

#[test]
fn engine_decides_real_freeswitch_calls_over_esl() {
    let Some(install) = Install::find("engine over ESL") else {
        return;
    };
    let fs = FreeSwitch::start(
        &install,
        Options {
            dialplan: DIALPLAN.into(),
            password: "ClueCon-live".into(),
            log_level: "debug".into(),
            ..Options::default()
        },
    )
    .expect("FreeSWITCH starts");
    let work = tempfile::tempdir().unwrap();
    let cdr_file = work.path().join("cdr.jsonl");
    let record = work.path().join("stream.esl");
    let mut cfg = RtcConfig::default();
    cfg.local.cdr_file = Some(cdr_file.clone());
    let link = EslLink::new();
    let engine = Engine::start(EngineParts {
        config: cfg.engine.clone(),
        fail_modes: cfg.fail_modes(),
        services: Box::new(LocalServices::load(&cfg.local).unwrap()),
        control: Box::new(link.call_control()),
        clock: Clock::system(),
    })
    .unwrap();
    let intake = IntakeConfig {
        internal_source_ip: Some("127.0.0.1".parse().unwrap()),
        ..IntakeConfig::default()
    };
    let client = EslClient::start(
        EslConfig {
            port: fs.esl_port,
            password: fs.password.clone(),
            command_timeout: Duration::from_secs(15),
            record: Some(record.clone()),
            intake: intake.clone(),
            ..EslConfig::default()
        },
        link,
        engine.handle(),
    )
    .unwrap();
    client
        .wait_connected(Duration::from_secs(10))
        .expect("connects to FreeSWITCH");

    // A wrong password against the real switch is the same clear error.
    {
        let link = EslLink::new();
        let bad = EslClient::start(
            EslConfig {
                port: fs.esl_port,
                password: "not-the-password".into(),
                ..EslConfig::default()
            },
            link,
            engine.handle(),
        )
        .unwrap();
        let err = bad.wait_connected(Duration::from_secs(10)).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "ESL auth refused by 127.0.0.1:{}: check the password",
                fs.esl_port
            )
        );
    }

    let answered = ["4411001", "4411002", "4411003"];
    let refused = "4411009";
    std::thread::scope(|s| {
        for cid in answered {
            let client = &client;
            s.spawn(move || {
                let job = client
                    .bgapi(&format!(
                        "originate {{origination_caller_id_number={cid}}}loopback/15550001/default &park"
                    ))
                    .expect("originate answered");
                assert!(job.body.starts_with("+OK"), "{cid}: {}", job.body);
            });
        }
        let client = &client;
        s.spawn(move || {
            // The engine refuses it: the originate fails.
            let r = client.bgapi(&format!(
                "originate {{origination_caller_id_number={refused}}}loopback/8820001/default &park"
            ));
            assert!(r.is_err(), "{r:?}");
        });
    });

    let deadline = Instant::now() + Duration::from_secs(30);
    let cdrs = loop {
        let cdrs = read_cdrs(&cdr_file);
        if cdrs.len() >= 4 || Instant::now() > deadline {
            break cdrs;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        cdrs.len(),
        4,
        "{cdrs:#?}; FreeSWITCH log: {}",
        fs.log_path().display()
    );
    let h = engine.handle();
    let view = |uuid: &str| match h.query(
        Query::Call(CallId::parse(uuid).unwrap()),
        Duration::from_secs(5),
    ) {
        Ok(QueryReply::Call(Some(v))) => *v,
        other => panic!("{uuid}: {other:?}"),
    };
    let mut live_views = Vec::new();
    for cdr in &cdrs {
        let v = view(&cdr.uuid);
        let states: Vec<&str> = v.trace.iter().map(|t| t.to).collect();
        if cdr.caller == refused {
            assert_eq!(cdr.final_state, "REJECTED", "{cdr:?}");
            assert_eq!(cdr.reason.as_deref(), Some("no_route"));
            // FreeSWITCH hung the channel up with the cause the engine asked for.
            assert_eq!(cdr.hangup_cause, "NO_ROUTE_DESTINATION", "{v:#?}");
        } else {
            assert!(answered.contains(&cdr.caller.as_str()), "{cdr:?}");
            assert_eq!(cdr.final_state, "COMPLETED", "{v:#?}");
            let connected = states.iter().position(|s| *s == "CONNECTED");
            let completed = states.iter().position(|s| *s == "COMPLETED");
            assert!(
                matches!((connected, completed), (Some(a), Some(b)) if a < b),
                "{v:#?}"
            );
            assert_eq!(cdr.hangup_cause, "NORMAL_CLEARING");
            assert_eq!(cdr.reason, None);
        }
        live_views.push(v);
    }
    let c = client.stats();
    // Each answered call failed over from the error/ route, which makes no outbound channel.
    assert_eq!(c.intake.synthetic_b_hangups, 3, "{c:#?}");
    // The answering half of each loopback bridge carried rtc_a_leg and was not taken for a call.
    assert!(c.intake.own_legs_dropped >= 3, "{c:#?}");
    // Loopback channels have no transport address: the configured one was used, never a header.
    assert!(c.intake.internal_address_assumed > 0);
    assert_eq!(c.intake.no_address, 0);
    let errors: Vec<String> = String::from_utf8_lossy(&std::fs::read(&record).unwrap_or_default())
        .lines()
        .filter(|l| l.contains("-ERR") || l.starts_with("Job-Command"))
        .map(str::to_owned)
        .collect();
    // The one refusal is the refused call's own originate (-ERR NO_ROUTE_DESTINATION); every engine
    // command was accepted (the hangup waited for the rejected call's variables).
    assert_eq!(c.command_failures, 1, "{c:#?} {errors:#?}");
    assert!(
        errors
            .iter()
            .any(|l| l.contains("-ERR NO_ROUTE_DESTINATION")),
        "{errors:#?}"
    );
    assert_eq!(c.events_queue_full, 0);
    assert_eq!(c.intake.errors, 0);
    client.shutdown();

    check_simulator_frames(&record);

    // The recorded stream replays to the same traces.
    let replayed = replay(
        std::fs::File::open(&record).unwrap(),
        Box::new(LocalServices::load(&RtcConfig::default().local).unwrap()),
        ReplayOptions {
            engine: cfg.engine.clone(),
            fail_modes: cfg.fail_modes(),
            intake,
            only: None,
        },
    )
    .unwrap();
    assert_eq!(replayed.calls.len(), 4, "{:?}", replayed.lost);
    for live in &live_views {
        let again = replayed
            .calls
            .iter()
            .find(|v| v.uuid == live.uuid)
            .expect("replayed");
        assert!(
            rtc_esl::replay::same_course(live, again),
            "live {:?}, replayed {:?}",
            rtc_esl::replay::states(live),
            rtc_esl::replay::states(again)
        );
        assert_eq!(live.reason, again.reason);
        assert_eq!(live.hangup_cause, again.hangup_cause);
    }
    let report = engine.shutdown();
    assert_eq!(report.settled_calls, 0);
    drop(fs);
}
