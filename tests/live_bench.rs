//! The live benchmark (`cargo test --release --test live_bench -- --ignored --nocapture`): short loopback calls
//! placed at a steady rate on a real FreeSWITCH, first through a plain dialplan (the same failover bridge, no
//! module), then decided and bridged by mod_rtc_core through its app; then again with the event handler reading
//! each header with its own lookup (`RTC_CORE_EVENT_LOOKUP=per-header`) to compare with the one-pass reader.
//!
//! Each call: the originating leg, the called leg (the call the module decides), a failing first route and an
//! answering loopback route (two more channels) that hangs up at once. Figures: calls per second completed, and
//! FreeSWITCH's CPU (user + system, /proc/<pid>/stat) per call in each mode; the module's share is the
//! difference. `RTC_BENCH_CALLS` (default 2000) and `RTC_BENCH_CPS` (default 200) set the load. The last line is
//! one JSON object.

mod module_live;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use module_live::ModuleFs;
use rtc_fakehost::module_path;
use rtc_fs_live::{Esl, Install, free_port, wait_for};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU ticks FreeSWITCH's threads used during a run, summed per thread name; threads that ended during the run
/// (FreeSWITCH's session threads, mostly) are summed under `(ended)`.
type Split = BTreeMap<String, u64>;

fn split(before: &[(u32, String, u64)], after: &[(u32, String, u64)], total: u64) -> Split {
    let mut by_name = Split::new();
    let mut live = 0;
    for (tid, name, ticks) in after {
        let was = before
            .iter()
            .find(|(t, n, _)| t == tid && n == name)
            .map_or(0, |b| b.2);
        let used = ticks.saturating_sub(was);
        live += used;
        *by_name.entry(name.clone()).or_default() += used;
    }
    by_name.insert("(ended)".into(), total.saturating_sub(live));
    by_name
}

/// The split as a JSON object of microseconds per call.
fn split_json(split: &Split, tick_us: f64, calls: u64) -> String {
    let items: Vec<String> = split
        .iter()
        .filter(|(_, t)| **t > 0)
        .map(|(n, t)| format!("\"{n}\": {:.0}", *t as f64 * tick_us / calls as f64))
        .collect();
    format!("{{{}}}", items.join(", "))
}

/// Places `calls` calls at `cps` into `context`; waits until FreeSWITCH has no session left. Returns (seconds
/// from the first call to the last session gone, CPU ticks FreeSWITCH used meanwhile, and their split by thread).
fn run(
    fs: &ModuleFs,
    esl: &mut Esl,
    context: &str,
    calls: u64,
    cps: u64,
    base: u64,
) -> (f64, u64, Split) {
    let threads0 = fs.thread_ticks();
    let cpu0 = fs.cpu_ticks();
    let start = Instant::now();
    for n in 0..calls {
        let due = start + Duration::from_secs_f64(n as f64 / cps as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        esl.bgapi(&format!(
            "originate loopback/15558{:06}/{context} &park()",
            base + n
        ));
    }
    wait_for("every session to end", Duration::from_secs(120), || {
        (esl.sessions() == Some(0)).then_some(())
    });
    let elapsed = start.elapsed().as_secs_f64();
    let total = fs.cpu_ticks() - cpu0;
    (elapsed, total, split(&threads0, &fs.thread_ticks(), total))
}

fn handler_quantiles(esl: &mut Esl) -> (u64, u64) {
    let status = esl.api("rtc_core status");
    let line = status
        .lines()
        .find(|l| l.starts_with("intake:"))
        .unwrap_or_default()
        .to_owned();
    let after = |key: &str| {
        line.split(key)
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (after("handler p50 "), after("p99 "))
}

#[test]
#[ignore = "benchmark: run with --release -- --ignored --nocapture"]
fn fs_loopback() {
    let Some(install) = Install::find("bench fs-loopback") else {
        return;
    };
    let calls = env_or("RTC_BENCH_CALLS", 2000);
    let cps = env_or("RTC_BENCH_CPS", 200);
    // SAFETY of the figures: clock ticks are 1/100 s (sysconf CLK_TCK on Linux).
    let tick_us = 10_000.0;
    let fs = module_live::start(&install, &module_path(), false, &[]);
    let mut esl = fs.esl();
    // Warm-up, then the plain dialplan.
    run(&fs, &mut esl, "plain", 100, cps, 900_000);
    let (plain_s, plain_ticks, plain_split) = run(&fs, &mut esl, "plain", calls, cps, 0);
    assert!(esl.api("load mod_rtc_core").contains("+OK"));
    run(&fs, &mut esl, "default", 100, cps, 910_000);
    // RTC_BENCH_PERF=<file>: record FreeSWITCH's stacks with `perf record` during the module run.
    let perf = std::env::var_os("RTC_BENCH_PERF").map(|out| {
        std::process::Command::new("perf")
            .args(["record", "-e", "cpu-clock", "-F", "1999", "-g", "-p"])
            .arg(fs.pid.to_string())
            .arg("-o")
            .arg(out)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("perf record")
    });
    let (switches0, engine_us0) = fs.thread_switches_and_us("rtc-engine");
    let (module_s, module_ticks, module_split) = run(&fs, &mut esl, "default", calls, cps, 100_000);
    let (switches1, engine_us1) = fs.thread_switches_and_us("rtc-engine");
    if let Some(mut perf) = perf {
        let _ = std::process::Command::new("kill")
            .args(["-INT", &perf.id().to_string()])
            .status();
        let _ = perf.wait();
    }
    let status = esl.api("rtc_core status");
    println!("{status}");
    assert!(
        status.contains(&format!("completed {}", calls + 100)),
        "every call decided and completed: {status}"
    );
    let (p50, p99) = handler_quantiles(&mut esl);
    // Time spent in the event handler on FreeSWITCH's threads, per call (the warm-up's calls included).
    let handler_us_per_call = esl
        .api("rtc_core metrics")
        .lines()
        .find_map(|l| l.strip_prefix("rtc_module_event_handler_seconds_sum "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        * 1e6
        / (calls + 100) as f64;
    drop(esl);
    drop(fs);

    let fs = module_live::start(
        &install,
        &module_path(),
        false,
        &[("RTC_CORE_EVENT_LOOKUP", "per-header")],
    );
    let mut esl = fs.esl();
    assert!(esl.api("load mod_rtc_core").contains("+OK"));
    run(&fs, &mut esl, "default", calls, cps, 200_000);
    let (p50_each, p99_each) = handler_quantiles(&mut esl);
    drop(esl);
    drop(fs);

    let per_call = |ticks: u64| ticks as f64 * tick_us / calls as f64;
    println!(
        "{{\"bench\": \"fs-loopback\", \"calls\": {calls}, \"offered_cps\": {cps}, \"cps_plain\": {:.1}, \
         \"cps_module\": {:.1}, \"fs_cpu_us_per_call_plain\": {:.0}, \"fs_cpu_us_per_call_module\": {:.0}, \
         \"module_cpu_us_per_call\": {:.0}, \"handler_p50_ns\": {p50}, \"handler_p99_ns\": {p99}, \
         \"handler_p50_ns_per_header\": {p50_each}, \"handler_p99_ns_per_header\": {p99_each}, \
         \"fs_threads_us_per_call_plain\": {}, \"fs_threads_us_per_call_module\": {}, \
         \"engine_wakeups_per_call\": {:.1}, \"engine_cpu_us_per_call\": {:.0}, \
         \"handler_us_per_call\": {handler_us_per_call:.0}}}",
        calls as f64 / plain_s,
        calls as f64 / module_s,
        per_call(plain_ticks),
        per_call(module_ticks),
        per_call(module_ticks) - per_call(plain_ticks),
        split_json(&plain_split, tick_us, calls),
        split_json(&module_split, tick_us, calls),
        (switches1 - switches0) as f64 / calls as f64,
        (engine_us1 - engine_us0) / calls as f64,
    );
}

/// SIP calls from SIPp (`sipp` on PATH) decided by the module: the production mix of events, where every new call
/// is a mod_sofia channel (whose CHANNEL_CREATE the handler reads through to its channel variables, for a digest
/// user) and no leg is placed by the API. `RTC_BENCH_SIP_CALLS` (default 2000) and `RTC_BENCH_SIP_CPS` (default
/// 100). With `RTC_BENCH_SIP_PROXY=1`, as behind a load balancer: SIPp (127.0.0.1) is a trusted proxy
/// (`trusted-proxies`) and every INVITE carries `X-Source-IP: 127.0.0.5` (`source-header`), believed by the handler.
/// The last line is one JSON object.
#[test]
#[ignore = "benchmark: run with --release -- --ignored --nocapture"]
fn fs_sip() {
    let Some(install) = Install::find("bench fs-sip") else {
        return;
    };
    if std::process::Command::new("sipp")
        .arg("-v")
        .output()
        .is_err()
    {
        println!("skipped: bench fs-sip: no sipp on PATH (apt-get install sip-tester)");
        return;
    }
    let calls = env_or("RTC_BENCH_SIP_CALLS", 2000);
    let cps = env_or("RTC_BENCH_SIP_CPS", 100);
    let proxy = env_or("RTC_BENCH_SIP_PROXY", 0) != 0;
    let params: &[(&str, &str)] = if proxy {
        &[
            ("trusted-proxies", "127.0.0.1"),
            ("source-header", "X-Source-IP"),
        ]
    } else {
        &[]
    };
    let fs = module_live::start_with(
        &install,
        &module_path(),
        &module_live::Setup {
            sip: true,
            params,
            ..module_live::Setup::default()
        },
        None,
    );
    // SIPp's uac scenario, with the balancer's header when behind one.
    let uac = std::process::Command::new("sipp")
        .args(["-sd", "uac"])
        .output()
        .expect("sipp -sd uac");
    let header = if proxy {
        "Subject: Performance Test\n      X-Source-IP: 127.0.0.5"
    } else {
        "Subject: Performance Test"
    };
    let scenario_file = fs.dir.path().join("uac.xml");
    std::fs::write(
        &scenario_file,
        String::from_utf8_lossy(&uac.stdout).replacen("Subject: Performance Test", header, 1),
    )
    .expect("scenario");
    let mut esl = fs.esl();
    assert!(esl.api("load mod_rtc_core").contains("+OK"));
    wait_for("the SIP profile", Duration::from_secs(20), || {
        esl.api("sofia status").contains("RUNNING").then_some(())
    });
    let started = Instant::now();
    let status = std::process::Command::new("sipp")
        .arg(format!("127.0.0.1:{}", fs.sip_port.expect("SIP profile")))
        .arg("-sf")
        .arg(&scenario_file)
        .args(["-s", "155591234", "-i", "127.0.0.1", "-p"])
        .arg(free_port().to_string())
        .args(["-m", &calls.to_string(), "-r", &cps.to_string()])
        .args(["-nostdin", "-timeout"])
        .arg(format!("{}s", calls / cps.max(1) + 60))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run sipp");
    let elapsed = started.elapsed().as_secs_f64();
    let status_text = wait_for("the calls to finish", Duration::from_secs(60), || {
        let s = esl.api("rtc_core status");
        s.contains("live calls: 0").then_some(s)
    });
    println!("{status_text}");
    assert!(status.success(), "sipp: {status}");
    assert!(
        status_text.contains(&format!("completed {calls}")),
        "every call decided and completed: {status_text}"
    );
    let metrics = esl.api("rtc_core metrics");
    if proxy {
        assert!(
            metrics.contains(&format!(
                "rtc_module_source_header_total{{outcome=\"believed\"}} {calls}\n"
            )),
            "every call's source header believed"
        );
    }
    let figure = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let handler_mean_ns = figure("rtc_module_event_handler_seconds_sum") * 1e9
        / figure("rtc_module_event_handler_seconds_count").max(1.0);
    let (p50, p99) = handler_quantiles(&mut esl);
    let events = status_text
        .lines()
        .find_map(|l| l.strip_prefix("intake: accepted "))
        .and_then(|r| r.split(',').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    println!(
        "{{\"bench\": \"fs-sip\", \"calls\": {calls}, \"offered_cps\": {cps}, \"proxy\": {proxy}, \
         \"cps\": {:.1}, \"events_per_call\": {:.1}, \"handler_mean_ns\": {handler_mean_ns:.0}, \"handler_p50_ns\": {p50}, \
         \"handler_p99_ns\": {p99}}}",
        calls as f64 / elapsed,
        events / calls as f64,
    );
}
