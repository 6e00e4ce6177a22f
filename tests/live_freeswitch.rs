//! Live tests against a real FreeSWITCH, when one is installed (see the `rtc_fs_live` crate for how it is found,
//! configured and stopped, and `module_live/mod.rs` for the module's part). Each test starts its own FreeSWITCH
//! on 127.0.0.1 with a temporary configuration, loads the module built by this run as `mod_rtc_core`, and checks
//! calls end to end:
//! - through the `rtc_core` app (loopback calls to the sample route 1555: the first route fails, the second
//!   answers in `rtc_answer`), and through the park flow (the engine bridges the parked call, route by route);
//! - refused calls: no route (882...), unknown partner (after a `reload` that takes 127.0.0.1 from `lab`);
//! - the API (`status`, `calls`, `call`, `breakers`, `metrics`, `reload`), `unload` with live calls;
//! - SIP calls from SIPp (`sipp` on PATH), accepted from 127.0.0.1 and declined from 127.1.0.1; behind a load
//!   balancer: `X-Source-IP` believed from the trusted 127.0.0.1, ignored (spoofed) from 127.0.0.2.
//!
//! Without FreeSWITCH each test prints one `skipped:` line and passes.

mod module_live;

use std::time::{Duration, Instant};

use module_live::{ModuleFs, cdr_uuid};
use rtc_fakehost::module_path;
use rtc_fs_live::{Esl, Install, free_port, wait_for};

/// The CDR uuid of the call to `destination`, once written.
fn finished(fs: &ModuleFs, destination: &str) -> String {
    wait_for(
        &format!("the CDR of the call to {destination}"),
        Duration::from_secs(15),
        || cdr_uuid(&fs.cdrs(), destination),
    )
}

/// The CDR of the call to `destination` names `carrier`.
fn assert_carrier(fs: &ModuleFs, destination: &str, carrier: &str) {
    let cdrs = fs.cdrs();
    assert!(
        cdrs.iter().any(
            |c| c.contains(&format!("\"destination\":\"{destination}\""))
                && c.contains(&format!("\"carrier\":\"{carrier}\""))
        ),
        "{cdrs:?}"
    );
}

fn trace(esl: &mut Esl, uuid: &str) -> String {
    esl.api(&format!("rtc_core call {uuid}"))
}

fn assert_has(text: &str, wants: &[&str]) {
    for want in wants {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
}

/// Lines of FreeSWITCH's log at error level or above that come from the module.
fn our_errors(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains("[ERR]") || l.contains("[CRIT]") || l.contains("[ALERT]"))
        .filter(|l| {
            [".rs:", "rtc_shim.c", "mod_rtc_core", "rtc_core"]
                .iter()
                .any(|m| l.contains(m))
        })
        .collect()
}

/// Live calls the engine lists in `state`.
fn live_in(esl: &mut Esl, state: &str) -> usize {
    esl.api("rtc_core calls")
        .lines()
        .filter(|l| l.split(',').nth(1) == Some(state))
        .count()
}

#[test]
fn calls_through_the_app_and_the_park_flow_api_reload_and_unload() {
    let Some(install) = Install::find("live calls") else {
        return;
    };
    let started = Instant::now();
    let fs = module_live::start(&install, &module_path(), false, &[]);
    let mut esl = fs.esl();
    let out = esl.api("load mod_rtc_core");
    assert!(out.contains("+OK"), "load: {out}\n{}", fs.log());
    assert_has(
        &esl.api("rtc_core status"),
        &["engine: running", "live calls: 0", "breakers: none"],
    );
    assert!(esl.api("rtc_core frobnicate").contains("-USAGE: rtc_core"));

    // Through the app: route 1 (error/...) fails, route 2 answers in rtc_answer.
    let out = esl.api("originate loopback/15551001/default &park()");
    assert!(out.starts_with("+OK"), "originate: {out}");
    let uuid = finished(&fs, "15551001");
    assert_has(
        &trace(&mut esl, &uuid),
        &[
            "state: COMPLETED",
            "source_ip: 127.0.0.1",
            "ROUTING -> PARKED on ROUTES_FOUND",
            "PARKED -> CONNECTED on",
            "CONNECTED -> COMPLETED on CHANNEL_HANGUP",
        ],
    );
    // The CDR names the carrier of the route that answered (the second), known from its leg's UUID.
    assert_carrier(&fs, "15551001", "loopback");

    // Decided by the app, connected by the operator's dialplan: transferred to rtc_routed, which bridges
    // ${rtc_dial}; its legs are followed as the app's own, and the CDR names the carrier that answered.
    let out = esl.api("originate loopback/15551005/rtc_transfer &park()");
    assert!(out.starts_with("+OK"), "originate: {out}");
    let uuid = finished(&fs, "15551005");
    assert_has(
        &trace(&mut esl, &uuid),
        &[
            "state: COMPLETED",
            "PARKED -> CONNECTED on",
            "CONNECTED -> COMPLETED on CHANNEL_HANGUP",
        ],
    );
    assert_carrier(&fs, "15551005", "loopback");

    // The park flow: the engine bridges the parked call, the first route fails, the engine sends the second. The
    // bridge starts on CHANNEL_PARK, or on DISPATCH when the park came before the ledger had answered the balance
    // step; the route index says both routes were tried (the trace may drop the failed one from its middle).
    let out = esl.api("originate loopback/15551002/rtc_park &park()");
    assert!(out.starts_with("+OK"), "originate: {out}");
    let uuid = finished(&fs, "15551002");
    assert_has(
        &trace(&mut esl, &uuid),
        &[
            "routes: fail_first | loopback (next 2)",
            "PARKED -> CONNECTING on ",
            "CONNECTING -> CONNECTED on",
            "CONNECTED -> COMPLETED on CHANNEL_HANGUP",
        ],
    );
    assert_carrier(&fs, "15551002", "loopback");

    // No route: refused with NO_ROUTE_DESTINATION, which the originating leg sees.
    let out = esl.api("originate loopback/8821003/default &park()");
    assert!(
        out.contains("-ERR NO_ROUTE_DESTINATION"),
        "originate: {out}"
    );
    let uuid = finished(&fs, "8821003");
    assert_has(
        &trace(&mut esl, &uuid),
        &[
            "state: REJECTED",
            "reason: no_route",
            "ROUTING -> REJECTED on ROUTES_NONE",
        ],
    );

    // The rest of the API.
    assert_has(
        &esl.api("rtc_core calls"),
        &["uuid,state,partner", "0 total"],
    );
    assert_eq!(
        esl.api("rtc_core breakers"),
        "none: every service is local\n"
    );
    assert_has(
        &esl.api("rtc_core metrics"),
        &[
            "# TYPE rtc_module_event_handler_seconds histogram",
            "rtc_engine_calls_finished_total{state=\"COMPLETED\"} 3\n",
            "rtc_engine_calls_by_reason_total{reason=\"no_route\"} 1\n",
            "rtc_module_events_total{outcome=\"queue_full\"} 0\n",
        ],
    );
    assert_has(
        &esl.api("rtc_core status"),
        &["calls: created 4, completed 3, rejected 1", "own legs"],
    );
    // The scrape endpoint inside FreeSWITCH serves the same page.
    let page = {
        use std::io::{Read, Write};
        let mut s =
            std::net::TcpStream::connect(("127.0.0.1", fs.metrics_port)).expect("metrics endpoint");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("write");
        let mut page = String::new();
        s.read_to_string(&mut page).expect("read");
        page
    };
    assert_has(
        &page,
        &[
            "HTTP/1.1 200 OK",
            "rtc_engine_calls_finished_total{state=\"COMPLETED\"} 3\n",
        ],
    );

    // Reload: 127.0.0.1 no longer belongs to lab (same partner row, other networks): loopback calls are refused.
    let partners = fs.dir.path().join("conf/rtc_core/partners.csv");
    let original = std::fs::read_to_string(&partners).expect("partners.csv");
    std::fs::write(
        &partners,
        original.replace("lab,127.0.0.0/16 ::1/128,", "lab,127.0.0.2/32 ::1/128,"),
    )
    .expect("write partners.csv");
    let out = esl.api("rtc_core reload");
    assert_has(
        &out,
        &["+OK engine settings reloaded", "local tables reloaded"],
    );
    let out = esl.api("originate loopback/15551004/default &park()");
    assert!(out.contains("-ERR CALL_REJECTED"), "originate: {out}");
    let uuid = finished(&fs, "15551004");
    assert_has(&trace(&mut esl, &uuid), &["reason: unknown_partner"]);
    std::fs::write(&partners, &original).expect("restore partners.csv");
    assert!(esl.api("rtc_core reload").starts_with("+OK"));
    // A configuration error is refused with its position, and the engine keeps running as it was.
    let conf = fs
        .dir
        .path()
        .join("conf/autoload_configs/rtc_core.conf.xml");
    let good = std::fs::read_to_string(&conf).expect("rtc_core.conf.xml");
    std::fs::write(&conf, good.replace("\"setup-timeout\"", "\"setup-timout\"")).expect("write");
    let out = esl.api("rtc_core reload");
    assert_has(
        &out,
        &[
            "-ERR configuration rejected",
            "rtc_core.conf.xml:",
            "unknown param \"setup-timout\"",
        ],
    );
    std::fs::write(&conf, good).expect("restore");

    // Unload while calls run inside the app: FreeSWITCH refuses, and carries on.
    for n in 0..2 {
        esl.bgapi(&format!("originate loopback/15559100{n}/default &park()"));
    }
    wait_for("two connected app calls", Duration::from_secs(10), || {
        (live_in(&mut esl, "CONNECTED") == 2).then_some(())
    });
    let out = esl.api("unload mod_rtc_core");
    assert!(
        out.contains("-ERR") && out.contains("in use"),
        "unload: {out}"
    );
    assert!(esl.api("status").contains("is ready"));
    finished(&fs, "155591000");
    finished(&fs, "155591001");
    wait_for("no call left", Duration::from_secs(10), || {
        esl.api("show calls count")
            .contains("0 total")
            .then_some(())
    });
    // Unload while calls the module followed are up but not inside its app: it unloads, they go on.
    for n in 0..2 {
        esl.bgapi(&format!("originate loopback/15559200{n}/plain &park()"));
    }
    wait_for("two connected plain calls", Duration::from_secs(10), || {
        (live_in(&mut esl, "CONNECTED") == 2).then_some(())
    });
    let connected: Vec<String> = esl
        .api("rtc_core calls")
        .lines()
        .filter(|l| l.split(',').nth(1) == Some("CONNECTED"))
        .filter_map(|l| l.split(',').next().map(str::to_owned))
        .collect();
    let out = esl.api("unload mod_rtc_core");
    assert!(out.contains("+OK"), "unload: {out}");
    assert!(esl.api("status").contains("is ready"), "FreeSWITCH is up");
    for uuid in &connected {
        assert!(
            esl.api(&format!("uuid_exists {uuid}")).contains("true"),
            "call {uuid} goes on after the unload"
        );
    }
    assert!(!esl.api("rtc_core status").contains("engine:"));
    let log = fs.log();
    assert_has(&log, &["mod_rtc_core loaded", "2 live calls settled"]);
    assert!(!log.contains("panic in"), "{log}");
    assert!(our_errors(&log).is_empty(), "{:?}", our_errors(&log));
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn sip_calls_from_sipp() {
    let Some(install) = Install::find("SIP calls") else {
        return;
    };
    let has_sipp = std::process::Command::new("sipp")
        .arg("-v")
        .output()
        .is_ok();
    if !has_sipp {
        println!("skipped: SIP calls: no sipp on PATH (apt-get install sip-tester)");
        return;
    }
    let fs = module_live::start(&install, &module_path(), true, &[]);
    let mut esl = fs.esl();
    assert!(esl.api("load mod_rtc_core").contains("+OK"));
    wait_for("the SIP profile", Duration::from_secs(20), || {
        esl.api("sofia status").contains("RUNNING").then_some(())
    });
    let sipp = |from: &str, calls: u32, destination: &str| {
        let port = free_port().to_string();
        let target = format!("127.0.0.1:{}", fs.sip_port.expect("SIP profile"));
        let calls = calls.to_string();
        std::process::Command::new("sipp")
            .args([
                &target,
                "-sn",
                "uac",
                "-s",
                destination,
                "-i",
                from,
                "-p",
                &port,
            ])
            .args(["-m", &calls, "-r", &calls, "-nostdin", "-timeout", "20s"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("run sipp")
    };
    // Accepted from 127.0.0.1 (lab): bridged to the answering loopback route; sipp hangs up.
    let status = sipp("127.0.0.1", 4, "155591234");
    assert!(status.success(), "sipp: {status}\n{}", fs.log());
    // From 127.1.0.1 (no partner): declined (CALL_REJECTED, SIP 603), which sipp's uac counts as failed.
    let status = sipp("127.1.0.1", 2, "155591234");
    assert!(!status.success());
    let out = wait_for("the calls to finish", Duration::from_secs(15), || {
        let s = esl.api("rtc_core status");
        s.contains("live calls: 0").then_some(s)
    });
    assert_has(
        &out,
        &[
            "calls: created 6, completed 4, rejected 2",
            "unknown_partner 2",
        ],
    );
    assert!(
        our_errors(&fs.log()).is_empty(),
        "{:?}",
        our_errors(&fs.log())
    );
    assert!(esl.api("unload mod_rtc_core").contains("+OK"));
}

/// Behind a SIP load balancer: SIPp plays the balancer from 127.0.0.1 (a trusted proxy), adding `X-Source-IP:
/// 192.0.2.10` (an address of acme's) to its INVITEs, and a caller from 127.0.0.2 (lab's, not a trusted proxy) sends
/// the same header: the first call is acme's, the second lab's, counted as spoofed and warned about.
#[test]
fn sip_calls_through_a_trusted_load_balancer() {
    let Some(install) = Install::find("SIP calls behind a load balancer") else {
        return;
    };
    let Ok(uac) = std::process::Command::new("sipp")
        .args(["-sd", "uac"])
        .output()
    else {
        println!(
            "skipped: SIP calls behind a load balancer: no sipp on PATH (apt-get install sip-tester)"
        );
        return;
    };
    let fs = module_live::start_with(
        &install,
        &module_path(),
        &module_live::Setup {
            sip: true,
            params: &[
                ("trusted-proxies", "127.0.0.1"),
                ("source-header", "X-Source-IP"),
            ],
            ..module_live::Setup::default()
        },
        None,
    );
    // SIPp's own uac scenario, its INVITE carrying the header a balancer adds (Kamailio: append_hf).
    let scenario = String::from_utf8_lossy(&uac.stdout).replacen(
        "Subject: Performance Test",
        "Subject: Performance Test\n      X-Source-IP: 192.0.2.10",
        1,
    );
    assert!(scenario.contains("X-Source-IP"), "{scenario}");
    let scenario_file = fs.dir.path().join("uac_x_source_ip.xml");
    std::fs::write(&scenario_file, scenario).expect("scenario");
    let mut esl = fs.esl();
    assert!(esl.api("load mod_rtc_core").contains("+OK"));
    wait_for("the SIP profile", Duration::from_secs(20), || {
        esl.api("sofia status").contains("RUNNING").then_some(())
    });
    let sipp = |from: &str, destination: &str| {
        let port = free_port().to_string();
        let target = format!("127.0.0.1:{}", fs.sip_port.expect("SIP profile"));
        std::process::Command::new("sipp")
            .arg(&target)
            .arg("-sf")
            .arg(&scenario_file)
            .args(["-s", destination, "-i", from, "-p", &port])
            .args(["-m", "1", "-nostdin", "-timeout", "20s"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("run sipp")
    };
    let status = sipp("127.0.0.1", "155591001");
    assert!(status.success(), "sipp: {status}\n{}", fs.log());
    let status = sipp("127.0.0.2", "155591002");
    assert!(status.success(), "sipp: {status}\n{}", fs.log());
    // Each call's CDR: partner and the source it was identified by.
    for (destination, partner, source) in [
        ("155591001", "acme", "192.0.2.10"),
        ("155591002", "lab", "127.0.0.2"),
    ] {
        let uuid = finished(&fs, destination);
        let cdrs = fs.cdrs();
        let cdr = cdrs
            .iter()
            .find(|c| c.contains(&uuid))
            .expect("the call's CDR");
        assert!(
            cdr.contains(&format!("\"partner\":\"{partner}\""))
                && cdr.contains(&format!("\"source_ip\":\"{source}\"")),
            "{cdr}"
        );
        assert_has(
            &trace(&mut esl, &uuid),
            &[
                &format!("partner: {partner}"),
                &format!("source_ip: {source}"),
            ],
        );
    }
    assert_has(
        &esl.api("rtc_core metrics"),
        &[
            "rtc_module_source_header_total{outcome=\"believed\"} 1\n",
            "rtc_module_source_header_total{outcome=\"spoofed\"} 1\n",
            "rtc_module_source_header_total{outcome=\"refused\"} 0\n",
        ],
    );
    assert_has(
        &esl.api("rtc_core status"),
        &[
            "source header: X-Source-IP from trusted proxies 127.0.0.1: believed 1, absent 0, refused 0; spoofed 1",
        ],
    );
    let log = fs.log();
    assert!(
        log.contains(
            "X-Source-IP: \"192.0.2.10\" from 127.0.0.2, which is not a trusted proxy: ignored"
        ),
        "{log}"
    );
    assert!(our_errors(&log).is_empty(), "{:?}", our_errors(&log));
    assert!(esl.api("unload mod_rtc_core").contains("+OK"));
}

/// The engine's hangup cause codes are FreeSWITCH's: read from the installed `switch_types.h` (every
/// `SWITCH_CAUSE_<NAME> = <code>`), each name must parse to the same code.
#[test]
fn hangup_cause_codes_are_freeswitchs() {
    let Some(install) = Install::find("hangup cause codes") else {
        return;
    };
    let header = [
        "include/freeswitch/switch_types.h",
        "include/switch_types.h",
    ]
    .iter()
    .map(|p| install.prefix.join(p))
    .find(|p| p.is_file());
    let Some(header) = header else {
        println!(
            "skipped: hangup cause codes: no switch_types.h under {}",
            install.prefix.display()
        );
        return;
    };
    let text = std::fs::read_to_string(&header).expect("switch_types.h");
    let mut checked = 0;
    for line in text.lines() {
        let Some(rest) = line.trim().strip_prefix("SWITCH_CAUSE_") else {
            continue;
        };
        let Some((name, code)) = rest.split_once(" = ") else {
            continue;
        };
        let Ok(code) = code.trim_end_matches(',').trim().parse::<u16>() else {
            continue;
        };
        assert_eq!(
            rtc_engine::HangupCause::parse(name),
            Some(rtc_engine::HangupCause(code)),
            "{name} is {code} in {}",
            header.display()
        );
        checked += 1;
    }
    assert!(
        checked > 80,
        "only {checked} causes read from {}",
        header.display()
    );
}
