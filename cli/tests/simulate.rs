//! `rtc-core simulate` end to end: the binary, the shipped configuration and tables, the engine thread.

use std::process::Command;

fn rtc_core() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rtc-core"))
}

/// `rtc-core simulate` of `calls` short calls at 3,000 per second.
fn simulate(calls: &str) -> Command {
    let mut command = rtc_core();
    command.args([
        "simulate",
        "--calls",
        calls,
        "--cps",
        "3000",
        "--talk-min-ms",
        "5",
        "--talk-max-ms",
        "50",
    ]);
    command
}

#[test]
fn simulate_sends_every_call_to_its_expected_end() {
    let out = simulate("600")
        .arg("--json")
        .output()
        .expect("rtc-core runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(
        out.stdout
            .trim_ascii_end()
            .rsplit(|b| *b == b'\n')
            .next()
            .unwrap(),
    )
    .expect("one JSON report");
    let stats = &report["stats"];
    let mut expect_completed = 0;
    let mut expect_rejected = 0;
    for pair in report["by_scenario"].as_array().unwrap() {
        let n = pair[1].as_u64().unwrap();
        match pair[0].as_str().unwrap() {
            "unknown_partner" | "no_balance" | "no_route" => expect_rejected += n,
            _ => expect_completed += n,
        }
    }
    assert_eq!(
        stats["completed"].as_u64(),
        Some(expect_completed),
        "{report}"
    );
    assert_eq!(
        stats["rejected"].as_u64(),
        Some(expect_rejected),
        "{report}"
    );
    assert_eq!(stats["failed"].as_u64(), Some(0));
    assert_eq!(stats["cdrs"].as_u64(), Some(600));
    assert_eq!(report["left_live"].as_u64(), Some(0));
    assert_eq!(stats["illegal"].as_array().map(Vec::len), Some(0));
    assert!(
        stats["duplicate_events"].as_u64().unwrap() > 0,
        "the reordered calls sent duplicates"
    );
    // The money, from the run's ledger file (a scratch one, removed).
    let money = &report["money"];
    assert_eq!(money["ledger"], serde_json::Value::Null, "{money}");
    assert_eq!(money["reserved_at_end"], 0, "{money}");
    assert_eq!(money["cdrs_stored"], 600, "{money}");
    assert_eq!(money["journal_balances"], true, "{money}");
    assert_eq!(money["topups"], 0, "{money}");
    let amount = |k: &str| money[k].as_i64().unwrap();
    assert!(amount("charged") > 0, "{money}");
    assert!(amount("opening_balances") > 0, "{money}");
    assert_eq!(
        amount("held"),
        amount("charged") + amount("released"),
        "every hold was charged or released: {money}"
    );
    assert!(money["journal_entries"].as_u64().unwrap() > 600, "{money}");
}

#[test]
fn simulate_keeps_its_ledger_where_asked_and_prints_the_money() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("sim.db");
    let out = simulate("300")
        .arg("--ledger")
        .arg(&ledger)
        .output()
        .expect("rtc-core runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = |label: &str| -> String {
        stdout
            .lines()
            .find(|l| l.trim_start().starts_with(label))
            .unwrap_or_else(|| panic!("no {label:?} line in {stdout}"))
            .trim_start()[label.len()..]
            .trim()
            .to_string()
    };
    assert!(
        line("money").contains(&ledger.display().to_string()),
        "{stdout}"
    );
    assert_eq!(line("reserved at end"), "0.000000");
    assert_eq!(line("CDRs stored"), "300");
    assert_ne!(line("charged (commits)"), "0.000000");
    assert!(line("released").parse::<f64>().unwrap() > 0.0, "{stdout}");
    assert_eq!(line("top-ups"), "0.000000");
    assert!(line("journal entries").parse::<u64>().unwrap() > 300);
    assert!(stdout.contains("journal balances: yes"), "{stdout}");

    // The file stays, and is a sound ledger holding the run's CDRs.
    let out = rtc_core()
        .args(["ledger", "check", "--ledger"])
        .arg(&ledger)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = rtc_core()
        .args(["ledger", "cdrs", "--format", "json", "--ledger"])
        .arg(&ledger)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 300);
}

#[test]
fn check_config_accepts_the_shipped_file_and_names_a_bad_line() {
    let shipped = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../conf/autoload_configs/rtc_core.conf.xml"
    );
    let out = rtc_core().args(["check-config", shipped]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("autoload_configs")).unwrap();
    let text = std::fs::read_to_string(shipped).unwrap();
    let conf = dir.path().join("autoload_configs/rtc_core.conf.xml");
    std::fs::write(
        &conf,
        text.replace("name=\"setup-timeout\"", "name=\"setup-timout\""),
    )
    .unwrap();
    let out = rtc_core().arg("check-config").arg(&conf).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("setup-timout") && err.contains("rtc_core.conf.xml:"),
        "{err}"
    );
}

/// Runs `rtc-core bench <args>`, checks it succeeded, and returns its last line, which must be one JSON object.
fn bench_json(args: &[&str]) -> serde_json::Value {
    let out = rtc_core().arg("bench").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

#[test]
fn bench_engine_ends_with_one_json_line() {
    let last = bench_json(&["engine", "--calls", "2000"]);
    assert_eq!(last["bench"], "engine");
    assert_eq!(last["calls"], 2000);
    assert!(last["events_per_sec"].as_u64().unwrap() > 0);
    assert!(last["bytes_per_call"].as_u64().unwrap() > 0);
}

#[test]
fn bench_ledger_settles_every_call_durably_and_in_memory() {
    let last = bench_json(&[
        "ledger",
        "--calls",
        "3000",
        "--threads",
        "2",
        "--window",
        "64",
    ]);
    assert_eq!(last["bench"], "ledger");
    assert_eq!(last["calls"], 3000);
    assert_eq!(last["failed"], 0, "{last}");
    for run in ["durable", "memory"] {
        assert_eq!(last[run]["settled"], 3000, "{last}");
        // A reservation, an extension and a commit per call.
        assert_eq!(last[run]["requests"], 9000, "{last}");
    }
    assert!(last["settlements_per_sec"].as_u64().unwrap() > 0);
    assert!(last["memory_settlements_per_sec"].as_u64().unwrap() > 0);
    assert!(last["ratio"].as_f64().unwrap() > 0.0);
    assert!(last["batches"].as_u64().unwrap() > 0);
    assert!(
        last["durable"]["file_bytes"].as_u64().unwrap() > 0,
        "{last}"
    );
}

#[test]
fn simulate_fraud_stops_the_pumping_and_spares_the_partners_ordinary_calls() {
    // Long enough talk that the pumped numbers fill up: 2 to 10 s (the simulator's pumping talk).
    let out = rtc_core()
        .args([
            "simulate",
            "--calls",
            "1500",
            "--cps",
            "1000",
            "--talk-min-ms",
            "5",
            "--talk-max-ms",
            "50",
            "--fraud",
            "--json",
        ])
        .output()
        .expect("rtc-core runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(
        out.stdout
            .trim_ascii_end()
            .rsplit(|b| *b == b'\n')
            .next()
            .unwrap(),
    )
    .expect("one JSON report");
    let fraud = &report["fraud"];
    let pumping = &fraud["pumping"];
    let n = |v: &serde_json::Value| v.as_u64().unwrap();
    assert!(n(&pumping["pumped_calls"]) > 50, "{fraud}");
    // The premium numbers are refused outright; the pumped ordinary range once 10 calls talk to a number.
    assert!(
        n(&pumping["refused"]) * 2 > n(&pumping["pumped_calls"]),
        "most pumped calls refused: {fraud}"
    );
    assert_eq!(
        pumping["normal_calls"], pumping["normal_completed"],
        "the same partner's ordinary calls all completed: {fraud}"
    );
    assert!(n(&pumping["normal_calls"]) > 50, "{fraud}");
    assert!(fraud["money_saved"].as_i64().unwrap() > 0, "{fraud}");
    let hits = fraud["report"]["summary"]["hits"].as_array().unwrap();
    let count = |rule: &str, action: &str| {
        hits.iter()
            .find(|h| h[0] == rule && h[1] == action)
            .map_or(0, |h| h[2].as_u64().unwrap())
    };
    assert!(count("risky_destination", "refuse") > 0, "{fraud}");
    assert!(count("pumping_number", "refuse") > 0, "{fraud}");
    let stats = &report["stats"];
    let fraud_refused = stats["by_reason"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r[0] == "fraud")
        .map_or(0, |r| r[1].as_u64().unwrap());
    assert!(fraud_refused >= n(&pumping["refused"]), "{stats}");
    // Refused calls hold no money: the ledger balances and nothing stays reserved.
    assert_eq!(report["money"]["reserved_at_end"], 0);
    assert_eq!(report["money"]["journal_balances"], true);
    assert_eq!(report["left_live"], 0);
}
