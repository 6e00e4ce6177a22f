//! Two engines, one PostgreSQL ledger: two `rtc-core simulate` processes with the same partners on a real,
//! throwaway PostgreSQL (tests/pg-harness). Every charge is the balance's drop to the micro-unit, a partner's
//! concurrent-call limit holds across both, and when one process is killed mid-traffic the other settles its
//! reservations once its lease runs out. Prints one `skipped:` line where PostgreSQL is not installed.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rtc_pg_harness::{Postgres, start_or_skip};

/// The partner the simulator's traffic comes from (127.0.0.1), held here to this many calls at once in total.
const LIMIT: u32 = 40;
const LEASE_S: u64 = 3;

fn tables(dir: &Path) {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/rtc_core");
    for table in ["rates.csv", "routes.csv", "balances.csv"] {
        std::fs::copy(shipped.join(table), dir.join(table)).unwrap();
    }
    let partners = std::fs::read_to_string(shipped.join("partners.csv")).unwrap();
    let partners = partners.replace(
        "lab,127.0.0.0/16 ::1/128,0,0,,,,",
        &format!("lab,127.0.0.0/16 ::1/128,{LIMIT},0,,,,"),
    );
    assert!(partners.contains(&format!("lab,127.0.0.0/16 ::1/128,{LIMIT},")));
    std::fs::write(dir.join("partners.csv"), partners).unwrap();
}

fn config(dir: &Path, pg: &Postgres, node: &str) -> std::path::PathBuf {
    let path = dir.join(format!("rtc_core.{node}.conf.xml"));
    let d = dir.display();
    std::fs::write(
        &path,
        format!(
            r#"<configuration name="rtc_core.conf" description="two nodes, one ledger">
  <local>
    <param name="partners" value="{d}/partners.csv"/>
    <param name="rates" value="{d}/rates.csv"/>
    <param name="routes" value="{d}/routes.csv"/>
    <param name="balances" value="{d}/balances.csv"/>
    <param name="ledger" value="{url}"/>
    <param name="ledger-node-id" value="{node}"/>
    <param name="ledger-lease" value="{LEASE_S}s"/>
  </local>
</configuration>
"#,
            url = pg.url()
        ),
    )
    .unwrap();
    path
}

/// A simulation run; each run gets its own `seed`, so that its calls have UUIDs of their own, as FreeSWITCH's are.
fn simulate(config: &Path, calls: u32, cps: u32, seed: u32) -> Child {
    Command::new(env!("CARGO_BIN_EXE_rtc-core"))
        .args(["simulate", "--json", "--seed", &seed.to_string()])
        .args(["--calls", &calls.to_string(), "--cps", &cps.to_string()])
        .args(["--talk-min-ms", "300", "--talk-max-ms", "900"])
        .arg("--config")
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("rtc-core runs")
}

fn report(child: Child) -> serde_json::Value {
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(
        out.stdout
            .trim_ascii_end()
            .rsplit(|b| *b == b'\n')
            .next()
            .unwrap(),
    )
    .expect("one JSON report")
}

fn number(pg: &Postgres, sql: &str) -> i64 {
    pg.psql("postgres", sql)
        .unwrap()
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Samples the partner's open calls (its open reservations, counted on its account row) while traffic runs.
fn sample_open_calls(pg: &Postgres, until: Instant, peak: &mut i64) {
    while Instant::now() < until {
        if let Ok(n) = pg
            .psql(
                "postgres",
                "SELECT COALESCE(MAX(open_calls), 0) FROM rtc_ledger.accounts WHERE name = 'lab'",
            )
            .map(|s| s.trim().parse::<i64>().unwrap_or(0))
        {
            *peak = (*peak).max(n);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Charges equal the drop in balances, account by account; nothing is held or open; the journal balances.
fn assert_money_adds_up(pg: &Postgres) {
    let totals = rtc_ledger_pg::check(&pg.url()).unwrap();
    assert!(
        totals.discrepancies.is_empty(),
        "{:?}",
        totals.discrepancies
    );
    assert_eq!(totals.balances, totals.journal);
    assert_eq!(totals.open, 0);
    assert_eq!(totals.reserved.0, 0);
    // Per account: opening balance less what commits and recoveries charged is the balance, to the micro-unit.
    let off = number(
        pg,
        "SELECT count(*) FROM rtc_ledger.accounts a WHERE a.balance <> (
             SELECT COALESCE(SUM(balance_delta) FILTER (WHERE kind IN ('import', 'topup', 'adjustment')), 0)
                  - COALESCE(SUM(charged), 0)
             FROM rtc_ledger.journal j
             LEFT JOIN (SELECT id, charged FROM rtc_ledger.reservations WHERE state <> 'open') r
                    ON r.id = j.reservation AND j.kind IN ('commit', 'recovery', 'expiry')
             WHERE j.account = a.id)",
    );
    assert_eq!(
        off, 0,
        "an account whose balance is not its opening less its charges"
    );
}

#[test]
fn two_engines_share_balances_and_limits_and_survive_one_dying() {
    let Some(pg) = start_or_skip("two_engines_share_balances_and_limits_and_survive_one_dying")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    tables(dir.path());
    let a = config(dir.path(), &pg, "node-a");
    let b = config(dir.path(), &pg, "node-b");

    // 1. Both engines at full speed on the same partners.
    let started = Instant::now();
    let (ra, rb) = (simulate(&a, 1500, 300, 1), simulate(&b, 1500, 300, 2));
    let mut peak = 0;
    sample_open_calls(&pg, started + Duration::from_secs(4), &mut peak);
    let (ra, rb) = (report(ra), report(rb));
    assert!(
        peak <= i64::from(LIMIT),
        "{peak} calls at once over the limit of {LIMIT}"
    );
    let refused = ra["stats"]["shared_limit_refusals"].as_u64().unwrap()
        + rb["stats"]["shared_limit_refusals"].as_u64().unwrap();
    assert!(
        refused > 0 && peak == i64::from(LIMIT),
        "the limit was reached (peak {peak}) and enforced across nodes ({refused} refusals)"
    );
    for r in [&ra, &rb] {
        assert_eq!(r["left_live"].as_u64(), Some(0), "{r}");
        assert!(r["money"]["journal_balances"].as_bool().unwrap(), "{r}");
    }
    assert_money_adds_up(&pg);
    // The operators' view of the shared ledger: balances and its check.
    let ledger = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_rtc-core"))
            .arg("ledger")
            .args(args)
            .args(["--ledger", &pg.url()])
            .output()
            .expect("rtc-core runs")
    };
    let out = ledger(&["balances", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let balances: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let lab = balances["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["partner"] == "lab")
        .expect("lab's account");
    assert_eq!(lab["open_reservations"], 0, "{balances}");
    let out = ledger(&["check"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).ends_with("OK\n"));
    let out = ledger(&["history", "lab"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("balances, check"));

    // 2. One engine dies mid-traffic: the other settles its open reservations once its lease runs out.
    let survivor = simulate(&a, 3000, 300, 3);
    let doomed = simulate(&b, 3000, 300, 4);
    std::thread::sleep(Duration::from_millis(2500));
    let mut doomed = doomed;
    let killed_at = Instant::now();
    doomed.kill().unwrap();
    doomed.wait().unwrap();
    let left_open = number(
        &pg,
        "SELECT count(*) FROM rtc_ledger.reservations WHERE node = 'node-b' AND state = 'open'",
    );
    assert!(left_open > 0, "node-b died with calls up");
    let deadline = killed_at + Duration::from_secs(LEASE_S + 5);
    loop {
        let open = number(
            &pg,
            "SELECT count(*) FROM rtc_ledger.reservations WHERE node = 'node-b' AND state = 'open'",
        );
        if open == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{open} of node-b's reservations still open {:?} after it died",
            killed_at.elapsed()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let settled_after = killed_at.elapsed();
    let survivor = report(survivor);
    assert_eq!(survivor["left_live"].as_u64(), Some(0));
    // Settled by the survivor, each once, with a recovered CDR.
    let by_survivor = number(
        &pg,
        "SELECT count(*) FROM rtc_ledger.reservations WHERE node = 'node-b' AND state = 'recovered'
           AND settled_by = 'node-a'",
    );
    assert!(by_survivor >= left_open, "{by_survivor} < {left_open}");
    let recovery_entries = number(
        &pg,
        "SELECT count(*) FROM rtc_ledger.journal WHERE kind = 'recovery'",
    );
    assert_eq!(recovery_entries, by_survivor, "each settled once");
    let cdrs = number(
        &pg,
        "SELECT count(*) FROM rtc_ledger.cdrs c JOIN rtc_ledger.reservations r ON r.call = c.uuid
          WHERE r.state = 'recovered' AND c.reason = 'recovered'",
    );
    assert_eq!(cdrs, by_survivor);
    assert_eq!(
        pg.psql(
            "postgres",
            "SELECT state || ',' || COALESCE(taken_over_by, '') FROM rtc_ledger.nodes WHERE id = 'node-b'"
        )
        .unwrap()
        .trim(),
        "dead,node-a"
    );
    eprintln!(
        "node-b killed with {left_open} reservations open; settled by node-a {settled_after:?} later \
         (lease {LEASE_S} s)"
    );
    assert_money_adds_up(&pg);
}

/// PostgreSQL stops mid-traffic and starts again: meanwhile new calls follow the balance service's fail-mode
/// (closed: refused, `service_down`), calls already up talk on, every call's settlement and CDR that waited is
/// written once the database is back, and nothing is left held.
#[test]
fn the_database_stopped_mid_traffic_then_started_again() {
    let Some(mut pg) = start_or_skip("the_database_stopped_mid_traffic_then_started_again") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    tables(dir.path());
    let a = config(dir.path(), &pg, "node-a");
    let calls = 3000;
    let child = simulate(&a, calls, 300, 5);
    std::thread::sleep(Duration::from_secs(3));
    pg.stop();
    std::thread::sleep(Duration::from_secs(3));
    pg.start_again().expect("PostgreSQL starts again");
    let r = report(child);
    assert_eq!(r["left_live"].as_u64(), Some(0), "{r}");
    let reasons = &r["stats"]["by_reason"];
    let refused_down = reasons
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p[0] == "service_down")
        .and_then(|p| p[1].as_u64())
        .unwrap_or(0);
    assert!(refused_down > 0, "no call met the outage: {r}");
    assert_eq!(
        r["stats"]["failed"].as_u64(),
        Some(0),
        "a call that was up failed: {r}"
    );
    assert!(r["money"]["journal_balances"].as_bool().unwrap(), "{r}");
    // Every call's CDR, each once; every reservation settled, each once.
    assert_eq!(
        number(
            &pg,
            "SELECT count(*) FROM rtc_ledger.cdrs WHERE node = 'node-a'"
        ),
        i64::from(calls),
        "{r}"
    );
    assert_eq!(
        number(
            &pg,
            "SELECT count(*) - count(DISTINCT reservation) FROM rtc_ledger.journal
              WHERE kind IN ('commit', 'release', 'expiry', 'recovery')"
        ),
        0,
        "a reservation settled twice"
    );
    assert_money_adds_up(&pg);
    eprintln!(
        "database down 3 s mid-traffic: {refused_down} new calls refused (fail-mode closed), {} completed, \
         settlements and CDRs written after the restart",
        r["stats"]["completed"]
    );
}
