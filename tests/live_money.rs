//! Money in a real FreeSWITCH, when one is installed: real-time billing of a call past its first reservation
//! until the partner's money runs out (`rtc_core::low_balance`, then `ALLOTTED_TIMEOUT`), `rtc_core balance` and
//! `rtc_core topup`, and a `kill -9` of FreeSWITCH with a call up: after a restart the ledger still has every
//! balance and CDR, and the call the crash cut is settled with a `recovered` CDR.
//!
//! Without FreeSWITCH the test prints one `skipped:` line and passes.

mod module_live;

use std::time::{Duration, Instant};

use module_live::{Setup, cdr_uuid};
use rtc_fakehost::module_path;
use rtc_fs_live::{Install, wait_for};
use rtc_ledger::{Access, Money, ReservationState, Store};

/// `lab` (every loopback call comes from 127.0.0.1) starts with 0.45. Calls to 15559... are held 5 s by
/// `rtc_answer` and cost 6.00 a minute, per second: 0.10 a second.
const BALANCES: &str = "partner,balance\nlab,0.45\n";

fn rates() -> String {
    let shipped = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/rtc_core/rates.csv"),
    )
    .expect("sample rates");
    format!("{shipped}*,15559,6.0000,1,0,\n")
}

/// The value of `key: value` in `text`.
fn field<'t>(text: &'t str, key: &str) -> Option<&'t str> {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}: ")))
        .map(str::trim)
}

fn money(text: &str, key: &str) -> Money {
    field(text, key)
        .and_then(Money::parse)
        .unwrap_or_else(|| panic!("no {key} in:\n{text}"))
}

#[test]
fn real_time_billing_low_balance_top_up_and_a_crash() {
    let Some(install) = Install::find("live money") else {
        return;
    };
    let rates = rates();
    let tables = [("balances.csv", BALANCES), ("rates.csv", rates.as_str())];
    let setup = Setup {
        // One-second intervals; the first reservation (0.20) pays two seconds.
        params: &[("debit-interval", "1s"), ("reservation-amount", "0.20")],
        tables: &tables,
        ..Setup::default()
    };
    let fs = module_live::start_with(&install, &module_path(), &setup, None);
    let mut esl = fs.esl();
    let out = esl.api("load mod_rtc_core");
    assert!(out.contains("+OK"), "load: {out}\n{}", fs.log());
    let ledger = fs.dir.path().join("db/rtc_core.db");
    assert!(ledger.is_file(), "the ledger is in FreeSWITCH's db dir");
    let balance = esl.api("rtc_core balance lab");
    assert_eq!(money(&balance, "balance"), Money(450_000), "{balance}");

    // A call that talks past its first reservation while the money pays, is warned, and is cut when it runs
    // out: 0.45 pays 4 s (the next second would need 0.10 more than is left).
    let mut events = fs.esl();
    events
        .subscribe("CUSTOM rtc_core::low_balance")
        .expect("subscribed");
    let started = Instant::now();
    let out = esl.api("originate loopback/155590001/default &park()");
    assert!(out.starts_with("+OK"), "originate: {out}");
    let warning = events
        .next_event(Duration::from_secs(15))
        .expect("a rtc_core::low_balance event");
    let header = |name: &str| {
        warning
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(header("Event-Subclass"), Some("rtc_core::low_balance"));
    assert_eq!(header("rtc_partner"), Some("lab"));
    assert_eq!(header("rtc_paid_seconds"), Some("4"), "{warning:?}");
    let uuid = wait_for(
        "the low-balance call's CDR",
        Duration::from_secs(15),
        || cdr_uuid(&fs.cdrs(), "155590001"),
    );
    let talked = started.elapsed();
    let cdr = fs
        .cdrs()
        .into_iter()
        .find(|c| c.contains(&uuid))
        .expect("its CDR");
    assert!(cdr.contains("\"reason\":\"max_duration\""), "{cdr}");
    assert!(
        cdr.contains("\"hangup_cause\":\"ALLOTTED_TIMEOUT\""),
        "{cdr}"
    );
    assert!(cdr.contains("\"talk_s\":4,"), "{cdr}");
    assert!(
        talked < Duration::from_secs(5),
        "cut before its 5 s: {talked:?}"
    );
    let trace = esl.api(&format!("rtc_core call {uuid}"));
    assert!(trace.contains("BALANCE_EXTENDED"), "{trace}");
    assert!(trace.contains("partner: lab"), "{trace}");
    let balance = esl.api("rtc_core balance lab");
    assert_eq!(money(&balance, "balance"), Money(50_000), "{balance}");
    assert_eq!(money(&balance, "reserved"), Money::ZERO, "{balance}");
    let metrics = esl.api("rtc_core metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("rtc_billing_low_balance_total") && l.ends_with(" 1")),
        "{metrics}"
    );

    // A top-up, idempotent by its reference.
    let out = esl.api("rtc_core topup lab 10.00 live-topup-1");
    assert!(out.starts_with("+OK"), "{out}");
    let out = esl.api("rtc_core topup lab 10.00 live-topup-1");
    assert!(out.contains("already applied"), "{out}");
    assert!(
        esl.api("rtc_core topup lab 5.00 live-topup-1")
            .starts_with("-ERR")
    );
    assert_eq!(
        money(&esl.api("rtc_core balance lab"), "balance"),
        Money(10_050_000)
    );

    // One call ends; another is up (held 5 s) when FreeSWITCH is killed, after its first intervals were billed.
    let out = esl.api("originate loopback/15551002/default &park()");
    assert!(out.starts_with("+OK"), "originate: {out}");
    let ended = wait_for("the short call's CDR", Duration::from_secs(15), || {
        cdr_uuid(&fs.cdrs(), "15551002")
    });
    esl.bgapi("originate loopback/155590002/default &park()");
    wait_for(
        "the held call to be billed",
        Duration::from_secs(15),
        || {
            let calls = esl.api("rtc_core calls");
            let up = calls.lines().find(|l| l.contains("155590002"))?;
            let id = up.split(',').next()?;
            let view = esl.api(&format!("rtc_core call {id}"));
            let paid = field(&view, "paid_s").and_then(|p| p.parse::<u32>().ok());
            (field(&view, "state") == Some("CONNECTED") && paid.is_some_and(|p| p >= 3))
                .then_some(())
        },
    );
    drop(events);
    drop(esl);
    let dir = fs.fs.crash();

    // The next start settles what the dead one left open.
    let fs = module_live::start_with(&install, &module_path(), &setup, Some(dir));
    let mut esl = fs.esl();
    let out = esl.api("load mod_rtc_core");
    assert!(
        out.contains("+OK"),
        "load after the crash: {out}\n{}",
        fs.log()
    );
    assert!(
        fs.log().contains("left open by a process that stopped"),
        "recovery logged"
    );
    let balance = esl.api("rtc_core balance lab");
    assert_eq!(money(&balance, "reserved"), Money::ZERO, "{balance}");
    drop(esl);
    let (store, _) = Store::open(&ledger, Access::Read).expect("the ledger reads");
    let report = store.check().expect("check");
    assert!(report.ok(), "{report:#?}");
    assert_eq!(report.open_reservations, 0);
    let mut cdrs = Vec::new();
    store
        .cdrs(0, i64::MAX, None, |c| {
            cdrs.push(c);
            Ok(())
        })
        .unwrap();
    let by_destination = |d: &str| {
        cdrs.iter()
            .find(|c| c.destination == d)
            .unwrap_or_else(|| panic!("no CDR to {d} in the ledger: {cdrs:#?}"))
    };
    // Calls that ended before the crash: their CDRs and charges are in the ledger.
    assert_eq!(by_destination("155590001").uuid, uuid);
    assert_eq!(by_destination("155590001").cost, Money(400_000));
    let short = by_destination("15551002");
    assert_eq!(short.uuid, ended);
    assert_eq!(short.reason, None);
    // The call the crash cut: settled at the restart, charged what was debited up to its last interval.
    let cut = by_destination("155590002");
    assert_eq!(cut.reason.as_deref(), Some("recovered"), "{cut:?}");
    let recovered = store
        .reservations()
        .unwrap()
        .into_iter()
        .find(|r| r.call == cut.uuid)
        .expect("its reservation");
    assert_eq!(recovered.state, ReservationState::Recovered);
    assert_eq!(cut.cost, recovered.debited);
    assert!(cut.cost >= Money(300_000), "{cut:?}");
    let lab = store
        .accounts()
        .unwrap()
        .into_iter()
        .find(|a| a.name == "lab")
        .unwrap();
    assert_eq!(
        lab.balance,
        Money(10_050_000 - short.cost.0 - cut.cost.0),
        "{lab:?}"
    );
}
