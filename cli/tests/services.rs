//! `rtc-core bench setup` and `rtc-core simulate --backend http` end to end: the binary, the host assembly,
//! the HTTP service layer and the loopback services on 127.0.0.1.

use std::process::Command;

fn rtc_core() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rtc-core"))
}

/// Runs `rtc-core args`, checks it succeeded, and returns its last stdout line as JSON.
fn last_json(args: &[&str]) -> serde_json::Value {
    let out = rtc_core().args(args).output().expect("rtc-core runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    serde_json::from_str(stdout.lines().last().expect("output")).expect("one JSON line last")
}

#[test]
fn bench_setup_over_http_decides_every_call_without_errors() {
    let r = last_json(&["bench", "setup", "--backend", "http", "--calls", "300"]);
    assert_eq!(r["bench"], "setup", "{r}");
    assert_eq!(r["backend"], "http");
    assert_eq!(r["calls"], 300);
    assert_eq!(r["cps"], 1000.0);
    assert_eq!(r["errors"], 0, "{r}");
    let (p50, p99) = (r["p50_us"].as_u64().unwrap(), r["p99_us"].as_u64().unwrap());
    assert!(p50 > 0 && p50 <= p99, "{r}");
    // Five decision requests and two settlements (release, CDR) per call, warm-up included.
    let calls = 300 + r["warmup_calls"].as_u64().unwrap();
    assert_eq!(r["http_requests"].as_u64(), Some(7 * calls), "{r}");
}

#[test]
fn bench_setup_on_the_local_backends() {
    let r = last_json(&[
        "bench",
        "setup",
        "--backend",
        "local",
        "--calls",
        "300",
        "--cps",
        "3000",
    ]);
    assert_eq!(r["bench"], "setup");
    assert_eq!(r["backend"], "local");
    assert_eq!(r["errors"], 0, "{r}");
    assert_eq!(r["http_requests"], 0);
    assert!(r["p99_us"].as_u64().unwrap() > 0);
    // Both ledgers by default, one run each; the top-level figures are the durable run's.
    assert_eq!(r["ledger"], "both", "{r}");
    assert_eq!(r["durable"]["ledger"], "durable");
    assert_eq!(r["memory"]["ledger"], "memory");
    assert_eq!(r["p99_us"], r["durable"]["p99_us"]);
    let (durable, memory) = (
        r["durable"]["p99_us"].as_i64().unwrap(),
        r["memory"]["p99_us"].as_i64().unwrap(),
    );
    assert_eq!(r["p99_delta_us"].as_i64(), Some(durable - memory), "{r}");
    assert!(r["durable"]["ledger_batches"].as_u64().unwrap() > 0, "{r}");
    assert!(
        r["durable"]["cpu_us_per_call"]["rtc-ledger"]
            .as_u64()
            .unwrap()
            > 0,
        "{r}"
    );

    let r = last_json(&[
        "bench",
        "setup",
        "--backend",
        "local",
        "--calls",
        "100",
        "--cps",
        "3000",
        "--ledger",
        "memory",
    ]);
    assert_eq!(r["ledger"], "memory", "{r}");
    assert!(
        r.get("durable").is_none() && r.get("p99_delta_us").is_none(),
        "{r}"
    );
}

#[test]
fn simulate_over_http_rides_out_a_partner_outage() {
    // 400 calls over one second: the outage and the breaker scale with the arrivals (outage 0.3-0.7 s, open-for
    // 0.1 s), so that a busy machine's scheduling delays stay small beside them and the breaker closes again
    // before the traffic ends.
    let r = last_json(&[
        "simulate",
        "--backend",
        "http",
        "--cps",
        "400",
        "--calls",
        "400",
        "--talk-min-ms",
        "5",
        "--talk-max-ms",
        "50",
        "--json",
    ]);
    let stats = &r["stats"];
    // Every call reaches the end its scenario expects, outage or not: during it the cached partner is
    // served, and an address the service never identified is refused (service_down instead of
    // unknown_partner, REJECTED either way).
    let mut expect_completed = 0;
    let mut expect_rejected = 0;
    for pair in r["by_scenario"].as_array().unwrap() {
        let n = pair[1].as_u64().unwrap();
        match pair[0].as_str().unwrap() {
            "unknown_partner" | "no_balance" | "no_route" => expect_rejected += n,
            _ => expect_completed += n,
        }
    }
    assert_eq!(stats["completed"].as_u64(), Some(expect_completed), "{r}");
    assert_eq!(stats["rejected"].as_u64(), Some(expect_rejected), "{r}");
    assert_eq!(stats["failed"].as_u64(), Some(0), "{r}");
    assert_eq!(r["left_live"].as_u64(), Some(0));
    assert_eq!(stats["illegal"].as_array().map(Vec::len), Some(0));

    let services = &r["services"];
    assert_eq!(services["backend"], "http");
    assert_eq!(services["outage"]["service"], "partner");
    let received = |service: &str| {
        services["loopback"]
            .as_array()
            .unwrap()
            .iter()
            .find(|pair| pair[0] == service)
            .map(|pair| pair[1].clone())
            .unwrap()
    };
    assert_eq!(
        received("cdr")["requests"],
        400,
        "one CDR per call: {services}"
    );
    assert!(received("partner")["outage_refusals"].as_u64().unwrap() > 0);
    let counter = |service: &str, event: &str| {
        services["counters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["service"] == service && c["event"] == event)
            .map_or(0, |c| c["value"].as_u64().unwrap())
    };
    assert!(
        counter("partner", "degraded_partner_cache") > 0,
        "{services}"
    );
    assert!(counter("partner", "circuit_open") > 0, "{services}");
    let partner = services["breakers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["service"] == "partner")
        .unwrap();
    let t = &partner["transitions"];
    assert!(t["opened"].as_u64().unwrap() >= 1, "{partner}");
    assert!(t["half_opened"].as_u64().unwrap() >= 1, "{partner}");
    assert!(t["closed"].as_u64().unwrap() >= 1, "recovered: {partner}");
    assert_eq!(partner["state"], "closed", "{partner}");
    assert_eq!(services["drain"]["lost"], 0);
}

#[test]
fn simulate_refuses_an_unknown_outage_service() {
    let out = rtc_core()
        .args(["simulate", "--backend", "http", "--outage", "fraud"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("\"fraud\" is not a service"), "{err}");
}

#[test]
fn check_config_checks_the_http_services_too() {
    let shipped = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../conf/autoload_configs/rtc_core.conf.xml"
    );
    let text = std::fs::read_to_string(shipped).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("autoload_configs")).unwrap();
    let conf_dir = std::path::Path::new(shipped)
        .parent()
        .unwrap()
        .parent()
        .unwrap();
    std::os::unix::fs::symlink(conf_dir.join("rtc_core"), dir.path().join("rtc_core")).unwrap();
    let conf = dir.path().join("autoload_configs/rtc_core.conf.xml");
    let http = text.replace(
        r#"<service name="rating" backend="local" url="""#,
        r#"<service name="rating" backend="http" url="http://127.0.0.1:9/rating""#,
    );
    assert_ne!(http, text);
    std::fs::write(&conf, &http).unwrap();
    let out = rtc_core().arg("check-config").arg(&conf).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(
        &conf,
        http.replace(
            r#"name="extra-ca-file" value="""#,
            r#"name="extra-ca-file" value="tls/missing-ca.pem""#,
        ),
    )
    .unwrap();
    let out = rtc_core().arg("check-config").arg(&conf).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tls/missing-ca.pem"), "{err}");
}
