//! Nothing is lost when the process holding the ledger is killed (`kill -9`) in the middle of traffic.
//!
//! The test starts this very test binary again as a child process that runs simulated traffic through a real
//! host (engine thread, local backends, a ledger file in a temp dir, real-time billing every second) and prints
//! every call whose CDR it can read back from the ledger file (committed, so on disk). Once hundreds have been
//! printed, with hundreds of calls still up, the child is killed with SIGKILL. The next open of the ledger
//! recovers what the child left open; then every call printed has its CDR and its charge, every reservation is
//! settled, each by one CDR, and the journal sums to every balance.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rtc_config::RtcConfig;
use rtc_engine::sim::{self, SimOptions, SimSwitch};
use rtc_host::{Host, HostOptions};
use rtc_ledger::{Access, Ledger, LedgerConfig, Location, Money, ReservationState, Store};

/// Set for the child: the directory its ledger lives in.
const CHILD_DIR: &str = "RTC_LEDGER_CRASH_DIR";

/// The child: traffic until it is killed, printing `durable <uuid> <reason> <cost-micros>` for every CDR it can
/// read back from the ledger file.
#[test]
#[ignore = "the child side of a_killed_process_loses_no_money; it runs only when that test starts it"]
fn crash_child_runs_traffic_until_killed() {
    let Some(dir) = std::env::var_os(CHILD_DIR).map(PathBuf::from) else {
        return;
    };
    let mut config = RtcConfig::default();
    config.engine.debit_interval = Duration::from_secs(1);
    let (switch, commands) = SimSwitch::new();
    let host = Host::start_with(
        &config,
        Box::new(switch),
        HostOptions {
            ledger_dir: Some(dir.clone()),
            ..HostOptions::default()
        },
    )
    .expect("host starts");
    let ledger = dir.join("rtc_core.db");
    std::thread::spawn(move || report_durable_cdrs(&ledger));
    let opts = SimOptions {
        calls: 200_000,
        cps: 300.0,
        talk: (Duration::from_millis(300), Duration::from_millis(4_000)),
        ..SimOptions::default()
    };
    sim::run(host.engine().clone(), commands, opts, |_, _| {});
    // Killed long before the traffic ends.
    std::thread::sleep(Duration::from_secs(600));
}

/// Prints each CDR the ledger file holds, once.
fn report_durable_cdrs(ledger: &Path) {
    let mut printed = HashSet::new();
    let out = std::io::stdout();
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let Ok((store, _)) = Store::open(ledger, Access::Read) else {
            continue;
        };
        let mut lines = String::new();
        let _ = store.cdrs(0, i64::MAX, None, |cdr| {
            if printed.insert(cdr.uuid.clone()) {
                lines.push_str(&format!(
                    "durable {} {} {}\n",
                    cdr.uuid,
                    cdr.reason.as_deref().unwrap_or("-"),
                    cdr.cost.0
                ));
            }
            Ok(())
        });
        let mut out = out.lock();
        let _ = out.write_all(lines.as_bytes());
        let _ = out.flush();
    }
}

#[test]
fn a_killed_process_loses_no_money() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "crash_child_runs_traffic_until_killed",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the child starts");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = crossbeam_channel::unbounded();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    // (reason, cost) of every call the child saw on disk before it died.
    let mut durable: HashMap<String, (String, i64)> = HashMap::new();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(120);
    // Past 3 s, calls have been extended (one-second intervals); past 400 CDRs, hundreds of calls are up.
    while durable.len() < 400 || started.elapsed() < Duration::from_secs(3) {
        assert!(
            Instant::now() < deadline,
            "the child wrote {} CDRs in 120 s",
            durable.len()
        );
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(100))
            && let ["durable", uuid, reason, cost] = line.split(' ').collect::<Vec<_>>()[..]
        {
            durable.insert(
                uuid.to_string(),
                (reason.to_string(), cost.parse().unwrap()),
            );
        }
    }
    child.kill().expect("SIGKILL"); // std sends SIGKILL on Unix
    child.wait().unwrap();
    while let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
        if let ["durable", uuid, reason, cost] = line.split(' ').collect::<Vec<_>>()[..] {
            durable.insert(
                uuid.to_string(),
                (reason.to_string(), cost.parse().unwrap()),
            );
        }
    }

    let path = dir.path().join("rtc_core.db");
    let ledger = Ledger::open(LedgerConfig::new(Location::File(path.clone())))
        .expect("the ledger opens after the crash");
    let recovered = ledger.recovered().len();
    assert!(
        recovered > 50,
        "calls were up when the child died, yet {recovered} reservations were left open"
    );
    drop(ledger);

    let (store, _) = Store::open(&path, Access::Read).unwrap();
    let report = store.check().unwrap();
    assert!(report.ok(), "{report:#?}");
    assert_eq!(report.open_reservations, 0, "every reservation settled");
    let reservations = store.reservations().unwrap();
    let mut cdrs = HashMap::new();
    store
        .cdrs(0, i64::MAX, None, |c| {
            cdrs.insert(c.uuid.clone(), c);
            Ok(())
        })
        .unwrap();
    // Every call the child saw on disk is still there, as it was.
    for (uuid, (reason, cost)) in &durable {
        let cdr = cdrs
            .get(uuid)
            .unwrap_or_else(|| panic!("call {uuid}: its CDR was durable, and is gone"));
        assert_eq!(cdr.reason.as_deref().unwrap_or("-"), reason, "call {uuid}");
        assert_eq!(cdr.cost.0, *cost, "call {uuid}");
    }
    // Every reservation resolved once, with the call's CDR: committed for its cost, released for nothing,
    // recovered for what was debited.
    let mut per_call: HashMap<&str, usize> = HashMap::new();
    let mut recovered_cdrs = 0;
    for r in &reservations {
        *per_call.entry(r.call.as_str()).or_default() += 1;
        let cdr = cdrs
            .get(&r.call)
            .unwrap_or_else(|| panic!("reservation {} of call {}: no CDR", r.id, r.call));
        match r.state {
            ReservationState::Committed => {
                assert_ne!(cdr.reason.as_deref(), Some("recovered"));
                assert!(cdr.talk_s > 0, "call {}: committed without talk", r.call);
            }
            ReservationState::Released => {
                assert_ne!(cdr.reason.as_deref(), Some("recovered"));
                assert_eq!(cdr.cost, Money::ZERO, "call {}", r.call);
            }
            ReservationState::Recovered => {
                recovered_cdrs += 1;
                assert_eq!(cdr.reason.as_deref(), Some("recovered"), "call {}", r.call);
                assert!(
                    !durable.contains_key(&r.call) || durable[&r.call].0 == "recovered",
                    "call {}: ended before the kill, yet recovered",
                    r.call
                );
            }
            other => panic!("reservation {} of call {}: {other:?}", r.id, r.call),
        }
    }
    assert!(per_call.values().all(|&n| n == 1));
    // And the journal charged each committed call what its CDR says it cost.
    let mut charged: HashMap<u64, i64> = HashMap::new();
    for entry in store.journal(0, usize::MAX).unwrap() {
        if let Some(r) = entry.reservation {
            *charged.entry(r.0).or_default() -= entry.balance_delta.0;
        }
    }
    for r in reservations
        .iter()
        .filter(|r| r.state == ReservationState::Committed)
    {
        assert_eq!(
            charged.get(&r.id.0).copied().unwrap_or(0),
            cdrs[&r.call].cost.0,
            "call {}",
            r.call
        );
    }
    assert_eq!(recovered_cdrs, recovered);
    // What recovery charged is what the journal says it charged: the sums above, and the check, agree.
    let charged_by_recovery: i64 = reservations
        .iter()
        .filter(|r| r.state == ReservationState::Recovered)
        .map(|r| r.debited.0)
        .sum();
    let recovered_cost: i64 = cdrs
        .values()
        .filter(|c| c.reason.as_deref() == Some("recovered"))
        .map(|c| c.cost.0)
        .sum();
    assert_eq!(charged_by_recovery, recovered_cost);
    assert!(
        charged_by_recovery > 0,
        "some of the calls up at the kill had been billed for an interval"
    );
}
