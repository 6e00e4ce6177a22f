//! `rtc-core ledger ...` end to end: the binary against a real ledger file built here with `rtc_ledger`.
//!
//! The ledger holds two partners: `acme` (topped up 100, one call reserved 1.0, extended by 0.5 and committed
//! at 1.5 with its CDR, and one reservation of 2.0 still open) and `globex` (credit limit 10, topped up 50, one
//! call committed at 0.25 with its CDR, one refused call's CDR without a reservation).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use rtc_ledger::{
    AccountRef, Answer, CallInfo, CallLimits, CdrRecord, Ledger, LedgerConfig, Location, Money, Op,
    ReservationId,
};

fn rtc_core() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rtc-core"))
}

/// The tests run side by side in one process, each starting commands: a child forked while another test closes
/// a ledger holds a copy of its lock file, and with it the lock, until it execs. So starting a command and
/// closing a ledger happen one at a time.
static FORK_OR_UNLOCK: Mutex<()> = Mutex::new(());

/// Runs `command` to its end (started while no ledger is being closed).
fn run(mut command: Command) -> Output {
    let child = {
        let _alone = FORK_OR_UNLOCK.lock().unwrap_or_else(|e| e.into_inner());
        command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("rtc-core runs")
    };
    child.wait_with_output().expect("rtc-core runs")
}

/// Closes a ledger (its lock released while no command is being started).
fn close(ledger: Ledger) {
    let _alone = FORK_OR_UNLOCK.lock().unwrap_or_else(|e| e.into_inner());
    ledger.close();
}

/// `rtc-core ledger <args> --ledger <path>`.
fn ledger_cmd(path: &Path, args: &[&str]) -> Output {
    let mut command = rtc_core();
    command.arg("ledger").args(args).arg("--ledger").arg(path);
    run(command)
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("exited")
}

const WAIT: Duration = Duration::from_secs(10);

fn micros(units: &str) -> Money {
    Money::parse(units).unwrap()
}

/// µs since the epoch of an RFC 3339 time (the tests' own reading, independent of the CLI's).
fn at(rfc3339: &str) -> u64 {
    rfc3339.parse::<jiff::Timestamp>().unwrap().as_microsecond() as u64
}

fn cdr(uuid: &str, partner: &str, cost: &str, ended: &str) -> CdrRecord {
    let ended_at_us = at(ended);
    CdrRecord {
        uuid: uuid.into(),
        caller: "441632960001".into(),
        destination: "442079460000".into(),
        source_ip: Some("192.0.2.10".into()),
        partner: Some(partner.into()),
        final_state: "COMPLETED".into(),
        reason: None,
        hangup_cause: "NORMAL_CLEARING".into(),
        carrier: Some("carrier_a".into()),
        rate_per_minute: Some(micros("0.0125")),
        setup_us: Some(41_000),
        talk_s: 72,
        billed_s: 72,
        cost: micros(cost),
        started_at_us: ended_at_us - 80_000_000,
        ended_at_us,
    }
}

fn call(ledger: &Ledger, op: Op) -> Answer {
    ledger.call(op, "engine", WAIT).expect("the ledger answers")
}

fn reserve(ledger: &Ledger, account: &str, amount: &str, uuid: &str) -> ReservationId {
    match call(
        ledger,
        Op::Reserve {
            account: AccountRef::Name(account.into()),
            amount: micros(amount),
            call: uuid.into(),
            info: CallInfo {
                caller: "441632960001".into(),
                destination: "442079460000".into(),
                ..CallInfo::default()
            },
            ttl: Duration::from_secs(3600),
            limits: CallLimits::default(),
        },
    ) {
        Answer::Reserved { reservation, .. } => reservation,
        other => panic!("{other:?}"),
    }
}

fn commit(ledger: &Ledger, reservation: ReservationId, cost: &str, record: CdrRecord) {
    let answer = call(
        ledger,
        Op::Commit {
            reservation,
            account: None,
            cost: micros(cost),
            cdr: Some(Box::new(record)),
        },
    );
    assert!(matches!(answer, Answer::Settled(_)), "{answer:?}");
}

fn topup(ledger: &Ledger, account: &str, amount: &str, reference: &str) {
    let answer = call(
        ledger,
        Op::TopUp {
            account: AccountRef::Name(account.into()),
            amount: micros(amount),
            reference: reference.into(),
            actor: "api".into(),
        },
    );
    assert!(matches!(answer, Answer::Moved { .. }), "{answer:?}");
}

/// The ledger described at the top, in `dir/rtc_core.db`.
fn build(dir: &Path) -> PathBuf {
    let path = dir.join("rtc_core.db");
    let ledger = Ledger::open(LedgerConfig::new(Location::File(path.clone()))).unwrap();
    for (name, limit) in [("acme", "0"), ("globex", "10")] {
        call(
            &ledger,
            Op::OpenAccount {
                name: name.into(),
                credit_limit: micros(limit),
            },
        );
    }
    topup(&ledger, "acme", "100", "pay-1");
    topup(&ledger, "globex", "50", "pay-2");
    let r1 = reserve(&ledger, "acme", "1.0", "call-1");
    let extended = call(
        &ledger,
        Op::Extend {
            reservation: r1,
            debit: micros("1.5"),
            unit: Money::ZERO,
            ttl: Duration::from_secs(3600),
            info: None,
        },
    );
    assert!(matches!(extended, Answer::Extended { .. }), "{extended:?}");
    commit(
        &ledger,
        r1,
        "1.5",
        cdr("call-1", "acme", "1.5", "2026-12-01T10:00:00Z"),
    );
    let r2 = reserve(&ledger, "globex", "3.0", "call-2");
    commit(
        &ledger,
        r2,
        "0.25",
        cdr("call-2", "globex", "0.25", "2026-12-02T09:30:00Z"),
    );
    let mut refused = cdr("call-4", "globex", "0", "2026-11-30T23:59:59Z");
    refused.final_state = "REJECTED".into();
    refused.reason = Some("no_route".into());
    refused.talk_s = 0;
    refused.billed_s = 0;
    assert_eq!(
        call(&ledger, Op::Cdr(Box::new(refused))),
        Answer::CdrStored(true)
    );
    // Still open when the ledger closes.
    reserve(&ledger, "acme", "2.0", "call-3");
    close(ledger);
    path
}

#[test]
fn balances_lists_every_account_as_a_table_and_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let path = build(dir.path());
    let out = ledger_cmd(&path, &["balances"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 0, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].starts_with("partner") && lines[0].contains("open reservations"),
        "{stdout}"
    );
    let acme: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        acme,
        [
            "acme",
            "98.500000",
            "2.000000",
            "96.500000",
            "0.000000",
            "1"
        ],
        "{stdout}"
    );
    let globex: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(
        globex,
        [
            "globex",
            "49.750000",
            "0.000000",
            "59.750000",
            "10.000000",
            "0"
        ],
        "{stdout}"
    );
    assert!(stdout.contains("2 account(s)"), "{stdout}");

    let out = ledger_cmd(&path, &["balances", "--json"]);
    assert_eq!(code(&out), 0);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let accounts = v["accounts"].as_array().unwrap();
    assert_eq!(accounts.len(), 2);
    assert_eq!(accounts[0]["partner"], "acme");
    assert_eq!(accounts[0]["balance"], 98_500_000);
    assert_eq!(accounts[0]["reserved"], 2_000_000);
    assert_eq!(accounts[0]["available"], 96_500_000);
    assert_eq!(accounts[0]["open_reservations"], 1);
    assert_eq!(accounts[1]["credit_limit"], 10_000_000);
}

#[test]
fn history_shows_every_movement_of_a_partner() {
    let dir = tempfile::tempdir().unwrap();
    let path = build(dir.path());
    let out = ledger_cmd(&path, &["history", "acme"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 0, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].starts_with("time") && lines[0].contains("balance after"),
        "{stdout}"
    );
    let kinds: Vec<&str> = lines[1..6]
        .iter()
        .map(|l| l.split_whitespace().nth(1).unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["topup", "reserve", "extend", "commit", "reserve"],
        "{stdout}"
    );
    // time, kind, balance delta, reserved delta, balance after, reservation, call, reference, actor.
    let topup: Vec<&str> = lines[1].split_whitespace().collect();
    assert!(
        topup[0].len() >= 20 && topup[0].ends_with('Z') && topup[0].contains('T'),
        "RFC 3339 UTC: {stdout}"
    );
    assert_eq!(
        topup[1..],
        [
            "topup",
            "+100.000000",
            "0",
            "100.000000",
            "-",
            "-",
            "pay-1",
            "api"
        ]
    );
    let commit: Vec<&str> = lines[4].split_whitespace().collect();
    assert_eq!(
        commit[1..],
        [
            "commit",
            "-1.500000",
            "-1.500000",
            "98.500000",
            "1",
            "call-1",
            "-",
            "engine"
        ]
    );
    assert!(stdout.contains("5 journal entries"), "{stdout}");

    let out = ledger_cmd(&path, &["history", "acme", "--limit", "2", "--json"]);
    assert_eq!(code(&out), 0);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let entries = v["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["kind"], "commit");
    assert_eq!(entries[1]["kind"], "reserve");
    assert_eq!(entries[1]["reserved_delta"], 2_000_000);
    assert!(entries[1]["time"].as_str().unwrap().ends_with('Z'));

    let out = ledger_cmd(&path, &["history", "initech"]);
    let (_, stderr) = text(&out);
    assert_eq!(code(&out), 1);
    assert!(stderr.contains("no account \"initech\""), "{stderr}");
}

#[test]
fn check_passes_a_sound_ledger_and_names_what_a_tampered_one_hides() {
    let dir = tempfile::tempdir().unwrap();
    let path = build(dir.path());
    let out = ledger_cmd(&path, &["check"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 0, "{stdout}{stderr}");
    for line in [
        "SQLite integrity   ok",
        "accounts           2",
        "journal entries    8",
        "reservations       3 (1 open)",
        "CDRs               3",
        "total balance      148.250000",
        "total reserved     2.000000",
        "discrepancies      none",
        "the ledger is sound",
    ] {
        assert!(stdout.contains(line), "{line:?} in {stdout}");
    }

    // An attacker with the file: the journal refuses updates, so the trigger goes first, then a top-up grows.
    {
        let db = rusqlite::Connection::open(&path).unwrap();
        db.execute_batch(
            "DROP TRIGGER journal_rows_are_immutable;
             UPDATE journal SET balance_delta = balance_delta + 1000000, balance_after = balance_after + 1000000
             WHERE reference = 'pay-1';",
        )
        .unwrap();
    }
    let out = ledger_cmd(&path, &["check"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 1, "{stdout}{stderr}");
    assert!(
        stdout.contains("balance of account \"acme\": stored 98.500000, journal 99.500000"),
        "{stdout}"
    );
    assert!(stdout.contains("PROBLEMS"), "{stdout}");
    let out = ledger_cmd(&path, &["check", "--json"]);
    assert_eq!(code(&out), 1);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["discrepancies"].as_array().unwrap().len(), 1, "{v}");

    let garbage = dir.path().join("garbage.db");
    std::fs::write(&garbage, "this is not a ledger\n".repeat(300)).unwrap();
    let out = ledger_cmd(&garbage, &["check"]);
    let (_, stderr) = text(&out);
    assert_eq!(code(&out), 2, "{stderr}");
    assert!(
        stderr.contains("garbage.db") && stderr.contains("not a ledger"),
        "{stderr}"
    );

    let out = ledger_cmd(&dir.path().join("missing.db"), &["check"]);
    let (_, stderr) = text(&out);
    assert_eq!(code(&out), 2, "{stderr}");
    assert!(stderr.contains("missing.db: no ledger here"), "{stderr}");
}

#[test]
fn import_fills_only_accounts_that_never_moved_money() {
    let dir = tempfile::tempdir().unwrap();
    let path = build(dir.path());
    std::fs::write(
        dir.path().join("partners.csv"),
        "name,cidrs,max_concurrent,max_cps\nacme,192.0.2.0/24,0,0\nglobex,198.51.100.0/24,0,0\n\
         newco,203.0.113.0/24,0,0\n",
    )
    .unwrap();
    let balances = dir.path().join("balances.csv");
    std::fs::write(&balances, "partner,balance\nacme,500\nnewco,25.5\n").unwrap();
    let balances_arg = balances.to_str().unwrap();

    // Not while another process writes the ledger: this one, here.
    let held = Ledger::open(LedgerConfig::new(Location::File(path.clone()))).unwrap();
    let out = ledger_cmd(&path, &["import", balances_arg]);
    let (_, stderr) = text(&out);
    assert_eq!(code(&out), 2, "{stderr}");
    assert!(
        stderr.contains(&format!("by process {}", std::process::id())),
        "{stderr}"
    );
    close(held);

    let out = ledger_cmd(&path, &["import", balances_arg]);
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 0, "{stderr}");
    assert!(stdout.contains("imported 1 opening balance(s)"), "{stdout}");
    assert!(
        stdout.contains("newco") && stdout.contains("25.500000"),
        "{stdout}"
    );
    assert!(
        stdout.contains("balances.csv:3"),
        "the journal's reference: {stdout}"
    );
    assert!(stdout.contains("skipped 1"), "{stdout}");
    let skipped = stdout.split("skipped 1").nth(1).unwrap();
    assert!(skipped.contains("acme"), "{stdout}");

    // A second run changes nothing: both accounts have moved money now.
    let out = ledger_cmd(&path, &["import", balances_arg, "--json"]);
    assert_eq!(code(&out), 0);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["imported"].as_array().unwrap().len(), 0, "{v}");
    assert_eq!(v["skipped"].as_array().unwrap().len(), 2, "{v}");

    let out = ledger_cmd(&path, &["balances", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let newco = v["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["partner"] == "newco")
        .expect("newco's account");
    assert_eq!(newco["balance"], 25_500_000);
    let acme = &v["accounts"][0];
    assert_eq!(acme["balance"], 98_500_000, "acme's live balance stands");

    // Checked as the module checks it: a name that is not a partner is refused with its line.
    std::fs::write(&balances, "partner,balance\nhooli,5\n").unwrap();
    let out = ledger_cmd(&path, &["import", balances_arg]);
    let (_, stderr) = text(&out);
    assert_eq!(code(&out), 1, "{stderr}");
    assert!(stderr.contains("balances.csv:2"), "{stderr}");
}

#[test]
fn the_configuration_names_the_ledger_or_is_told_to_step_aside() {
    let dir = tempfile::tempdir().unwrap();
    let path = build(dir.path());
    let conf = dir.path().join("rtc_core.conf.xml");
    std::fs::write(
        &conf,
        format!(
            "<configuration name=\"rtc_core.conf\"><local><param name=\"ledger\" value=\"{}\"/></local></configuration>",
            path.display()
        ),
    )
    .unwrap();
    let mut command = rtc_core();
    command.args(["ledger", "balances", "--config"]).arg(&conf);
    let out = run(command);
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 0, "{stderr}");
    assert!(stdout.contains("acme"), "{stdout}");

    std::fs::write(
        &conf,
        "<configuration name=\"rtc_core.conf\"><local><param name=\"ledger\" value=\"\"/></local></configuration>",
    )
    .unwrap();
    let mut command = rtc_core();
    command.args(["ledger", "check", "--config"]).arg(&conf);
    let out = run(command);
    let (_, stderr) = text(&out);
    assert_eq!(code(&out), 1, "{stderr}");
    assert!(
        stderr.contains("--ledger PATH") && stderr.contains("FreeSWITCH's db directory"),
        "{stderr}"
    );
}

/// The CDRs' uuids in a CSV export (after its header).
fn csv_uuids(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().to_string())
        .collect()
}

#[test]
fn cdrs_export_filters_by_end_time_and_partner() {
    let dir = tempfile::tempdir().unwrap();
    let path = build(dir.path());
    let out = ledger_cmd(&path, &["cdrs"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 0, "{stderr}");
    let header = stdout.lines().next().unwrap();
    assert!(
        header.starts_with(
            "uuid,caller,destination,source_ip,partner,final_state,reason,hangup_cause"
        ) && header.ends_with("cost,started_at_us,ended_at_us"),
        "{header}"
    );
    assert_eq!(
        csv_uuids(&stdout),
        ["call-4", "call-1", "call-2"],
        "{stdout}"
    );
    let call1 = stdout.lines().nth(2).unwrap();
    assert!(
        call1.starts_with("call-1,441632960001,442079460000,192.0.2.10,acme,COMPLETED,,NORMAL_CLEARING,carrier_a,12500,41000,72,72,1500000,"),
        "{call1}"
    );
    assert!(stderr.contains("3 CDR(s)"), "{stderr}");

    let out = ledger_cmd(
        &path,
        &["cdrs", "--from", "2026-12-01", "--to", "2026-12-02"],
    );
    assert_eq!(code(&out), 0);
    assert_eq!(csv_uuids(&text(&out).0), ["call-1"]);
    let out = ledger_cmd(
        &path,
        &[
            "cdrs",
            "--from",
            "2026-12-01T10:00:00Z",
            "--to",
            "2026-12-02T09:30:00Z",
        ],
    );
    assert_eq!(
        csv_uuids(&text(&out).0),
        ["call-1"],
        "from is inclusive, to exclusive"
    );
    let out = ledger_cmd(&path, &["cdrs", "--partner", "globex"]);
    assert_eq!(csv_uuids(&text(&out).0), ["call-4", "call-2"]);
    let out = ledger_cmd(&path, &["cdrs", "--to", "2026-11-01"]);
    assert_eq!(text(&out).0.lines().count(), 1, "the header alone");

    let out = ledger_cmd(
        &path,
        &[
            "cdrs",
            "--format",
            "json",
            "--partner",
            "globex",
            "--from",
            "2026-12-01",
        ],
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 0, "{stderr}");
    let records: Vec<CdrRecord> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one CDR per line"))
        .collect();
    assert_eq!(records.len(), 1);
    assert_eq!(
        records[0],
        cdr("call-2", "globex", "0.25", "2026-12-02T09:30:00Z")
    );

    let out = ledger_cmd(&path, &["cdrs", "--from", "last week"]);
    assert_eq!(code(&out), 2, "clap's usage error");
    assert!(text(&out).1.contains("RFC 3339"));
}

#[test]
fn cdrs_export_masks_numbers_as_the_configuration_says() {
    let dir = tempfile::tempdir().unwrap();
    let path = build(dir.path());
    let conf = dir.path().join("rtc_core.conf.xml");
    std::fs::write(
        &conf,
        format!(
            "<configuration name=\"rtc_core.conf\"><local><param name=\"ledger\" value=\"{}\"/></local>\
             <audit><param name=\"numbers\" value=\"mask\"/></audit></configuration>",
            path.display()
        ),
    )
    .unwrap();
    for format in ["csv", "json"] {
        let mut command = rtc_core();
        command
            .args(["ledger", "cdrs", "--format", format, "--config"])
            .arg(&conf);
        let out = run(command);
        let (stdout, stderr) = text(&out);
        assert_eq!(code(&out), 0, "{stderr}");
        assert!(
            stdout.contains("4416******01") && stdout.contains("4420******00"),
            "{stdout}"
        );
        assert!(
            !stdout.contains("441632960001") && !stdout.contains("442079460000"),
            "{stdout}"
        );
    }
}
