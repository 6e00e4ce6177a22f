//! `rtc-core simulate`: the main job on embedded defaults — simulated FreeSWITCH traffic through the real
//! engine thread and the embedded local backends, then a summary.

use std::path::PathBuf;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use rtc_engine::config::Backend;
use rtc_engine::host::Host;
use rtc_engine::settings::RtcConfig;
use rtc_engine::sim::{self, SimOptions, SimReport};

use crate::alloc::live_bytes;
use crate::backend::BackendArg;
use crate::simulate_http::{self, OutagePlan};

pub struct Args {
    pub calls: usize,
    pub cps: f64,
    pub config: Option<PathBuf>,
    pub seed: u64,
    pub talk_ms: (u64, u64),
    pub json: bool,
    /// Local backends, or the loopback HTTP services.
    pub backend: BackendArg,
    /// The service outage of an HTTP run.
    pub outage: OutagePlan,
}

/// The progress bar of a run of `calls` calls.
pub(crate) fn progress_bar(calls: usize) -> ProgressBar {
    let bar = ProgressBar::new(calls as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} calls started, {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// The simulator's options from the command line.
pub(crate) fn sim_options(args: &Args) -> SimOptions {
    SimOptions {
        calls: args.calls,
        cps: args.cps,
        seed: args.seed,
        talk: (
            Duration::from_millis(args.talk_ms.0),
            Duration::from_millis(args.talk_ms.1.max(args.talk_ms.0)),
        ),
        ..SimOptions::default()
    }
}

pub fn run(args: Args) -> Result<SimReport, String> {
    if args.backend == BackendArg::Http {
        return simulate_http::run(&args, args.outage);
    }
    let mut cfg = match &args.config {
        Some(path) => RtcConfig::load_file(path).map_err(|e| e.to_string())?,
        None => RtcConfig::default(),
    };
    // `--backend local`: every service on the embedded backends, whatever the file says.
    for service in &mut cfg.services {
        service.backend = Backend::Local;
    }
    let (switch, commands) = sim::SimSwitch::new();
    let heap_before = live_bytes();
    // Assembled as the module and `rtc-core esl` assemble it: runtime, services, engine thread.
    let host = Host::start(&cfg, Box::new(switch)).map_err(|e| e.to_string())?;
    let bar = progress_bar(args.calls);
    let opts = sim_options(&args);
    let mut peak_heap = 0isize;
    let report = sim::run(host.engine().clone(), commands, opts, |started, ended| {
        bar.set_position(started as u64);
        bar.set_message(format!("{ended} ended"));
        peak_heap = peak_heap.max(live_bytes() - heap_before);
    });
    bar.finish_and_clear();
    let stopped = host.shutdown(Duration::from_secs(5));
    if !stopped.runtime_stopped {
        log::warn!("simulate: the rtc-io runtime did not stop within 5 s");
    }
    if args.json {
        println!("{}", serde_json::to_string(&report).unwrap_or_default());
    } else {
        print_summary(&report, peak_heap);
    }
    if report.left_live > 0 || report.ended < report.calls {
        return Err(format!(
            "{} calls still live in the engine and {} calls not ended when the run stopped",
            report.left_live,
            report.calls - report.ended
        ));
    }
    Ok(report)
}

fn peak_rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

pub(crate) fn print_summary(r: &SimReport, peak_heap: isize) {
    let s = &r.stats;
    println!(
        "rtc-core simulate: {} calls in {:.1} s",
        r.calls, r.elapsed_s
    );
    println!();
    println!("{:<28} {:>8}", "traffic mix", "calls");
    for (scenario, n) in &r.by_scenario {
        let name = serde_json::to_value(scenario)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        println!(
            "  {:<26} {:>8}   (expected {})",
            name,
            n,
            scenario.expected()
        );
    }
    println!();
    println!("{:<28} {:>8}", "final state / reason", "calls");
    println!("  {:<26} {:>8}", "COMPLETED", s.completed);
    println!("  {:<26} {:>8}", "REJECTED", s.rejected);
    println!("  {:<26} {:>8}", "FAILED", s.failed);
    for (reason, n) in s.by_reason.iter().filter(|(_, n)| *n > 0) {
        println!("    {:<24} {:>8}", reason, n);
    }
    println!();
    println!("{:<28} {:>12}", "measure", "value");
    let rows: Vec<(&str, String)> = vec![
        ("events applied", s.events.to_string()),
        ("events/s (offered)", format!("{:.0}", r.events_per_sec)),
        ("events refused (queue)", r.events_refused.to_string()),
        ("duplicate events", s.duplicate_events.to_string()),
        ("late events", s.late_events.to_string()),
        ("after-end events", s.after_end_events.to_string()),
        ("illegal inputs", s.illegal_total().to_string()),
        ("bridges (incl. failover)", r.bridges.to_string()),
        ("decision latency p50", format!("{} µs", r.setup_p50_us)),
        ("decision latency p99", format!("{} µs", r.setup_p99_us)),
        ("decision latency max", format!("{} µs", r.setup_max_us)),
        ("event lag p99", format!("{} µs", s.event_lag_p99_us)),
        ("peak live calls", r.peak_live_calls.to_string()),
        ("calls left live", r.left_live.to_string()),
        ("CDRs written", s.cdrs.to_string()),
        (
            "peak heap",
            format!("{:.1} MB", peak_heap.max(0) as f64 / 1e6),
        ),
        (
            "peak RSS",
            peak_rss_kb().map_or("?".into(), |kb| format!("{:.1} MB", kb as f64 / 1024.0)),
        ),
    ];
    for (k, v) in rows {
        println!("  {:<26} {:>12}", k, v);
    }
}
