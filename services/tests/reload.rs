//! `rtc_core reload` on the engine: new tables and settings swapped in on the engine thread, all or
//! nothing, live calls untouched.

use std::path::Path;
use std::time::Duration;

use rtc_config::{RtcConfig, shipped_conf_dir};
use rtc_engine::clock::Clock;
use rtc_engine::engine::{Engine, EngineParts, Query, QueryReply, ReloadError};
use rtc_engine::event::{CallEvent, EventKind};
use rtc_engine::id::CallId;
use rtc_engine::testkit::RecordingControl;
use rtc_services::local::LocalServices;

fn id(n: u128) -> CallId {
    CallId::from_u128(n)
}

/// A new call from a partner's address (127.0.0.1, `lab` in the sample tables) to `destination`.
fn new_call(n: u128, destination: &str) -> CallEvent {
    let mut ev = CallEvent::new(id(n), EventKind::ChannelCreate, 1);
    ev.caller = "441632960001".into();
    ev.destination = destination.into();
    ev.source_ip = Some([127, 0, 0, 1].into());
    ev
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The call's state once decided (the balance step is answered by the ledger's writer, a moment later).
fn state(engine: &Engine, call: u128) -> (String, Option<String>) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (state, reason) = match engine
            .handle()
            .query(Query::Call(id(call)), Duration::from_secs(5))
            .unwrap()
        {
            QueryReply::Call(Some(v)) => (v.state.to_string(), v.reason.map(str::to_owned)),
            other => panic!("{other:?}"),
        };
        let deciding = [
            "CREATED",
            "PARTNER_IDENTIFICATION",
            "AUTHENTICATION",
            "BALANCE_CHECK",
            "RATING",
            "ROUTING",
        ];
        if !deciding.contains(&state.as_str()) || std::time::Instant::now() > deadline {
            return (state, reason);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn reload_swaps_tables_and_keeps_partner_ids_for_live_calls() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&shipped_conf_dir(), dir.path());
    let conf = dir.path().join("autoload_configs/rtc_core.conf.xml");
    let cfg = RtcConfig::load_file(&conf).unwrap();
    let engine = Engine::start(EngineParts {
        config: cfg.engine.clone(),
        fail_modes: cfg.fail_modes(),
        services: Box::new(LocalServices::load(&cfg.local).unwrap()),
        control: Box::new(RecordingControl::default()),
        clock: Clock::system(),
    })
    .unwrap();
    let h = engine.handle();
    let mut ev = new_call(1, "882123456");
    h.submit_event(ev.clone()).unwrap();
    assert_eq!(
        state(&engine, 1),
        ("REJECTED".into(), Some("no_route".into()))
    );

    // Route 882 and append a partner: accepted.
    let routes = dir.path().join("rtc_core/routes.csv");
    let mut text = std::fs::read_to_string(&routes).unwrap();
    text.push_str("882,carrier_x,sofia/gateway/carrier_x/${destination},0.1000,10\n");
    std::fs::write(&routes, text).unwrap();
    let partners = dir.path().join("rtc_core/partners.csv");
    let mut text = std::fs::read_to_string(&partners).unwrap();
    text.push_str("newco,10.99.0.0/16,0,0,,,,,,,\n");
    std::fs::write(&partners, &text).unwrap();
    let summary = h
        .reload(
            RtcConfig::load_file(&conf).unwrap().for_reload(),
            Duration::from_secs(5),
        )
        .unwrap();
    assert!(summary.contains("1 new"), "{summary}");
    ev.uuid = id(2);
    h.submit_event(ev.clone()).unwrap();
    assert_eq!(state(&engine, 2).0, "PARKED");

    // Reorder the partners and remove the one just added: accepted. Every partner keeps its id by name, so the
    // live call 2 still belongs to its partner, whose row moved, and a new call from the same source finds the
    // same id.
    let partner_of = |call: u128| match h
        .query(Query::Call(id(call)), Duration::from_secs(5))
        .unwrap()
    {
        QueryReply::Call(Some(v)) => v.partner,
        other => panic!("{other:?}"),
    };
    let before = partner_of(2);
    assert!(before.is_some());
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with("newco,")).collect();
    let (head, rows): (Vec<&str>, Vec<&str>) = lines
        .iter()
        .partition(|l| l.starts_with('#') || l.starts_with("name,"));
    let mut rows = rows;
    rows.reverse();
    std::fs::write(&partners, [head, rows].concat().join("\n") + "\n").unwrap();
    std::fs::write(
        &routes,
        std::fs::read_to_string(&routes)
            .unwrap()
            .replace("882,carrier_x", "8829,carrier_x"),
    )
    .unwrap();
    let summary = h
        .reload(
            RtcConfig::load_file(&conf).unwrap().for_reload(),
            Duration::from_secs(5),
        )
        .unwrap();
    assert!(summary.contains("0 new, 1 removed"), "{summary}");
    assert_eq!(partner_of(2), before, "a live call keeps its partner");
    ev.uuid = id(3);
    ev.destination = "8829123".into();
    h.submit_event(ev.clone()).unwrap();
    assert_eq!(state(&engine, 3).0, "PARKED", "the new routes are in force");
    assert_eq!(partner_of(3), before, "the same partner, the same id");

    // A table that does not hold together is still refused whole: a balance for a partner no longer there.
    let balances = dir.path().join("rtc_core/balances.csv");
    let mut text = std::fs::read_to_string(&balances).unwrap();
    text.push_str("newco,10.00\n");
    std::fs::write(&balances, text).unwrap();
    std::fs::write(
        &routes,
        std::fs::read_to_string(&routes)
            .unwrap()
            .replace("8829,carrier_x", "88299,carrier_x"),
    )
    .unwrap();
    let err = h
        .reload(
            RtcConfig::load_file(&conf).unwrap().for_reload(),
            Duration::from_secs(5),
        )
        .unwrap_err();
    assert!(
        matches!(&err, ReloadError::Refused(m) if m.contains("balances.csv") && m.contains("newco")),
        "{err}"
    );
    ev.uuid = id(4);
    h.submit_event(ev).unwrap();
    assert_eq!(
        state(&engine, 4).0,
        "PARKED",
        "the routes before the refused reload are in force"
    );
}
