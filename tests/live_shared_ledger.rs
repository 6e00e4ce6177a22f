//! Two real FreeSWITCH instances on 127.0.0.1 (their own ports and directories) with mod_rtc_core on one
//! throwaway PostgreSQL: one partner's calls across both are held to its `max_concurrent` in total, and both
//! nodes' money and CDRs are in the one ledger.
//!
//! Without FreeSWITCH or PostgreSQL the test prints one `skipped:` line and passes.

mod module_live;

use std::time::{Duration, Instant};

use module_live::Setup;
use rtc_fakehost::module_path;
use rtc_fs_live::Install;

/// `lab` (every loopback call comes from 127.0.0.1) may have this many calls at once, across both nodes.
const LIMIT: u32 = 3;

fn number(pg: &rtc_pg_harness::Postgres, sql: &str) -> i64 {
    pg.psql("postgres", sql)
        .unwrap()
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

#[test]
fn two_freeswitch_nodes_share_one_partners_call_limit() {
    let Some(install) = Install::find("live shared ledger") else {
        return;
    };
    let Some(pg) = rtc_pg_harness::start_or_skip("live shared ledger") else {
        return;
    };
    let shipped = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/rtc_core/partners.csv"),
    )
    .expect("sample partners");
    let partners = shipped.replace(
        "lab,127.0.0.0/16 ::1/128,0,0,,,,",
        &format!("lab,127.0.0.0/16 ::1/128,{LIMIT},0,,,,"),
    );
    assert_ne!(
        partners, shipped,
        "the sample's lab row changed: update this test"
    );
    let url = pg.url();
    let tables = [("partners.csv", partners.as_str())];
    let node = |id: &str| {
        let params = [("ledger", url.as_str()), ("ledger-node-id", id)];
        let setup = Setup {
            params: &params,
            tables: &tables,
            ..Setup::default()
        };
        let fs = module_live::start_with(&install, &module_path(), &setup, None);
        let out = fs.esl().api("load mod_rtc_core");
        assert!(out.contains("+OK"), "load on {id}: {out}\n{}", fs.log());
        fs
    };
    let a = node("fs-a");
    let b = node("fs-b");
    let mut esl_a = a.esl();
    let mut esl_b = b.esl();
    // Both see the one account.
    for esl in [&mut esl_a, &mut esl_b] {
        let balance = esl.api("rtc_core balance lab");
        assert!(balance.contains("balance: 1000000.00"), "{balance}");
    }

    // Four calls on each node, each held 5 s if let through: the partner may have three at once in all.
    let started = Instant::now();
    for n in 0..4 {
        esl_a.bgapi(&format!("originate loopback/15559010{n}/default &park()"));
        esl_b.bgapi(&format!("originate loopback/15559020{n}/default &park()"));
    }
    let mut peak = 0;
    while started.elapsed() < Duration::from_secs(4) {
        peak = peak.max(number(
            &pg,
            "SELECT open_calls FROM rtc_ledger.accounts WHERE name = 'lab'",
        ));
        std::thread::sleep(Duration::from_millis(50));
    }
    // Every call has its CDR in the shared ledger once all have ended.
    let deadline = Instant::now() + Duration::from_secs(20);
    while number(&pg, "SELECT count(*) FROM rtc_ledger.cdrs") < 8 {
        assert!(
            Instant::now() < deadline,
            "CDRs: {}\nfs-a: {}\nfs-b: {}",
            pg.psql("postgres", "SELECT node, record FROM rtc_ledger.cdrs")
                .unwrap(),
            esl_a.api("rtc_core status"),
            esl_b.api("rtc_core status")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let refused = number(
        &pg,
        "SELECT count(*) FROM rtc_ledger.cdrs WHERE reason = 'limit_reached'",
    );
    let talked = number(
        &pg,
        "SELECT count(*) FROM rtc_ledger.cdrs WHERE record LIKE '%\"final_state\":\"COMPLETED\"%'",
    );
    let nodes = number(&pg, "SELECT count(DISTINCT node) FROM rtc_ledger.cdrs");
    assert_eq!(
        (talked, refused),
        (i64::from(LIMIT), 8 - i64::from(LIMIT)),
        "{}",
        pg.psql(
            "postgres",
            "SELECT node, reason, record FROM rtc_ledger.cdrs"
        )
        .unwrap()
    );
    assert!(peak <= i64::from(LIMIT), "{peak} calls at once");
    assert_eq!(nodes, 2, "both nodes wrote CDRs to the one ledger");
    eprintln!(
        "live shared ledger: 8 calls over two FreeSWITCH nodes, limit {LIMIT}: {talked} talked, {refused} refused \
         (limit_reached), peak {peak} at once"
    );
    let totals = rtc_ledger_pg::check(&url).unwrap();
    assert!(
        totals.discrepancies.is_empty(),
        "{:?}",
        totals.discrepancies
    );
    assert_eq!(totals.open, 0);
    for (fs, esl) in [(&a, &mut esl_a), (&b, &mut esl_b)] {
        let out = esl.api("unload mod_rtc_core");
        assert!(out.contains("+OK"), "unload: {out}\n{}", fs.log());
    }
    let states = rtc_ledger_pg::nodes(&url).unwrap();
    assert!(
        states.iter().all(|n| n.state == "stopped"),
        "both nodes left the ledger: {states:?}"
    );
}
