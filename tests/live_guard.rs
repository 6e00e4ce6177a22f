//! The fraud rules and the audit trail in a real FreeSWITCH, when one is installed: a second live call to one number
//! is refused by the pumping rule and FreeSWITCH carries the `rtc_core::fraud` CUSTOM event; the audit trail the run
//! wrote verifies, and fails naming the line once one line is changed or removed.
//!
//! Without FreeSWITCH the test prints one `skipped:` line and passes.

mod module_live;

use std::path::PathBuf;
use std::time::Duration;

use module_live::{Setup, cdr_uuid};
use rtc_fakehost::module_path;
use rtc_fs_live::{Install, wait_for};

#[test]
fn pumping_is_refused_with_a_fraud_event_and_the_audit_trail_verifies() {
    let Some(install) = Install::find("live guard") else {
        return;
    };
    let dir = rtc_fs_live::temp_dir().expect("temp dir");
    let trail = dir.path().join("audit").join("rtc_core_audit.jsonl");
    std::fs::create_dir_all(trail.parent().unwrap()).unwrap();
    let trail_param = trail.display().to_string();
    let setup = Setup {
        params: &[("enabled", "true"), ("file", &trail_param)],
        // One live call per number: the second to the same number is pumping.
        edits: &[(
            r#"<rule name="pumping" per-number="10""#,
            r#"<rule name="pumping" per-number="1""#,
        )],
        ..Setup::default()
    };
    let fs = module_live::start_with(&install, &module_path(), &setup, None);
    let mut esl = fs.esl();
    let out = esl.api("load mod_rtc_core");
    assert!(out.contains("+OK"), "load: {out}\n{}", fs.log());
    let mut events = fs.esl();
    events
        .subscribe("CUSTOM rtc_core::fraud")
        .expect("subscribed");

    // The first call to 155590007 talks (5 s); a second one to it while it does is refused.
    esl.bgapi("originate loopback/155590007/default &park()");
    wait_for("the first call talking", Duration::from_secs(10), || {
        esl.api("rtc_core calls")
            .contains("CONNECTED")
            .then_some(())
    });
    let out = esl.api("originate loopback/155590007/default &park()");
    assert!(out.contains("-ERR CALL_REJECTED"), "originate: {out}");
    let event = events
        .next_event(Duration::from_secs(10))
        .expect("a rtc_core::fraud event");
    let header = |name: &str| {
        event
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(
        header("Event-Subclass"),
        Some("rtc_core::fraud"),
        "{event:?}"
    );
    assert_eq!(header("rtc_partner"), Some("lab"), "{event:?}");
    assert_eq!(
        header("rtc_fraud_rule"),
        Some("pumping_number"),
        "{event:?}"
    );
    assert_eq!(header("rtc_fraud_action"), Some("refuse"), "{event:?}");
    assert_eq!(header("rtc_destination"), Some("155590007"), "{event:?}");
    assert_eq!(header("rtc_fraud_value"), Some("2"), "{event:?}");
    assert_eq!(header("rtc_fraud_limit"), Some("1"), "{event:?}");
    // Another number of the same partner goes through meanwhile.
    let out = esl.api("originate loopback/15551008/default &park()");
    assert!(out.starts_with("+OK"), "originate: {out}");
    let listed = esl.api("rtc_core fraud");
    assert!(listed.contains("fraud rules: on"), "{listed}");
    assert!(
        listed.contains(",lab,pumping_number,refuse,155590007,"),
        "{listed}"
    );
    let out = esl.api("rtc_core unblock lab");
    assert!(out.starts_with("-ERR partner lab: not blocked"), "{out}");
    let metrics = esl.api("rtc_core metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l == r#"rtc_fraud_hits_total{rule="pumping_number",action="refuse"} 1"#),
        "{metrics}"
    );
    let status = esl.api("rtc_core status");
    assert!(status.contains("audit: "), "{status}");
    // The refused call's CDR says why; the first call ends as it should.
    let refused = fs.cdrs().into_iter().find(|c| {
        c.contains("\"destination\":\"155590007\"") && c.contains("\"reason\":\"fraud\"")
    });
    assert!(refused.is_some(), "{:?}", fs.cdrs());
    wait_for("the first call's CDR", Duration::from_secs(15), || {
        fs.cdrs()
            .iter()
            .any(|c| c.contains("\"destination\":\"155590007\"") && c.contains("COMPLETED"))
            .then_some(())
    });
    wait_for("the other call's CDR", Duration::from_secs(15), || {
        cdr_uuid(&fs.cdrs(), "15551008")
    });
    let out = esl.api("unload mod_rtc_core");
    assert!(out.contains("+OK"), "unload: {out}");

    // The trail: every decision and the operator's actions, one chain.
    let files: Vec<PathBuf> = vec![trail.clone()];
    let report =
        rtc_audit::verify(&files).unwrap_or_else(|e| panic!("the live trail verifies: {e}"));
    let text = std::fs::read_to_string(&trail).expect("the trail");
    let kinds: Vec<String> = text
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
            v["kind"].as_str().unwrap_or_default().to_owned()
        })
        .collect();
    for kind in [
        "load",
        "partner",
        "auth",
        "reservation",
        "rate",
        "routes",
        "refused",
        "fraud",
        "settlement",
        "unblock",
        "unload",
    ] {
        assert!(
            kinds.iter().any(|k| k == kind),
            "no {kind} line in {kinds:?}"
        );
    }
    assert_eq!(report.lines as usize, kinds.len());
    let fraud = text
        .lines()
        .find(|l| l.contains("\"kind\":\"fraud\""))
        .expect("the fraud line");
    assert!(
        fraud.contains("pumping_number") && fraud.contains("155590007"),
        "{fraud}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&trail).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the trail is the owner's alone");
    }

    // One line changed: verify names it.
    let lines: Vec<&str> = text.lines().collect();
    let middle = lines.len() / 2;
    let changed: Vec<String> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| match i == middle {
            true => l.replacen("\"by\":\"", "\"by\":\"x", 1),
            false => (*l).to_owned(),
        })
        .collect();
    assert_ne!(changed[middle], lines[middle]);
    let edited = dir.path().join("edited.jsonl");
    std::fs::write(&edited, changed.join("\n") + "\n").unwrap();
    let e = rtc_audit::verify(&[edited]).expect_err("a changed line is found");
    assert_eq!(e.line, Some(middle as u64 + 1), "{e}");
    assert!(e.to_string().contains(&format!(":{}:", middle + 1)), "{e}");
    // One line removed: verify names the line after the gap.
    let removed: Vec<&str> = lines
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != middle)
        .map(|(_, l)| *l)
        .collect();
    let cut = dir.path().join("removed.jsonl");
    std::fs::write(&cut, removed.join("\n") + "\n").unwrap();
    let e = rtc_audit::verify(&[cut]).expect_err("a removed line is found");
    assert_eq!(e.line, Some(middle as u64 + 1), "{e}");
}
