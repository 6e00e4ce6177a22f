//! `rtc_core reload` on the engine: new tables and settings swapped in on the engine thread, all or
//! nothing, live calls untouched.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use rtc_engine::clock::Clock;
use rtc_engine::core::FailModes;
use rtc_engine::engine::{Engine, EngineParts, Query, QueryReply, ReloadError};
use rtc_engine::event::EventKind;
use rtc_engine::local::LocalServices;
use rtc_engine::settings::{RtcConfig, shipped_conf_dir};
use rtc_engine::testkit::RecordingControl;

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

fn state(engine: &Engine, call: u128) -> (String, Option<String>) {
    match engine
        .handle()
        .query(Query::Call(id(call)), Duration::from_secs(5))
        .unwrap()
    {
        QueryReply::Call(Some(v)) => (v.state.to_string(), v.reason.map(str::to_owned)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn reload_swaps_tables_and_refuses_what_would_break_live_calls() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&shipped_conf_dir(), dir.path());
    let conf = dir.path().join("autoload_configs/rtc_core.conf.xml");
    let cfg = RtcConfig::load_file(&conf).unwrap();
    let engine = Engine::start(EngineParts {
        config: cfg.engine.clone(),
        fail_modes: FailModes::from_services(&cfg.services),
        services: Box::new(LocalServices::load(&cfg.local).unwrap()),
        control: Box::new(RecordingControl::default()),
        clock: Clock::system(),
    })
    .unwrap();
    let h = engine.handle();
    let mut ev = a_event(1, EventKind::ChannelCreate, 1, 0);
    ev.source_ip = Some([127, 0, 0, 1].into());
    ev.destination = "882123456".into();
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
    text.push_str("newco,10.99.0.0/16,0,0,,\n");
    std::fs::write(&partners, &text).unwrap();
    let summary = h
        .reload(RtcConfig::load_file(&conf).unwrap(), Duration::from_secs(5))
        .unwrap();
    assert!(summary.contains("1 new"), "{summary}");
    ev.uuid = id(2);
    h.submit_event(ev.clone()).unwrap();
    assert_eq!(state(&engine, 2).0, "PARKED");

    // Reordering partners would give live calls' ids to someone else: refused, nothing changed.
    let lines: Vec<&str> = text.lines().collect();
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
    let err = h
        .reload(RtcConfig::load_file(&conf).unwrap(), Duration::from_secs(5))
        .unwrap_err();
    assert!(
        matches!(&err, ReloadError::Refused(m) if m.contains("may only") && m.contains("partners.csv")),
        "{err}"
    );
    ev.uuid = id(3);
    h.submit_event(ev).unwrap();
    assert_eq!(
        state(&engine, 3).0,
        "PARKED",
        "the old routes are still in force"
    );
}
