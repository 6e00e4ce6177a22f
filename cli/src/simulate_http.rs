//! `rtc-core simulate --backend http`: the simulator's traffic through the HTTP service layer, answered by
//! the loopback services, with one service taken down partway through the run. The summary adds what the
//! service layer did: requests, failures, breaker transitions and degraded answers.
//!
//! Unless a configuration file is given, the downed service's breaker is scaled to the outage (window half
//! its length, open-for a quarter) so that a run of a few seconds shows the whole cycle — closed, open,
//! half-open probes, closed again — that takes minutes with the production defaults.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rtc_engine::service::ServiceKind;
use rtc_engine::sim::{self, SimReport};
use rtc_host::{Host, HostShutdownReport};
use rtc_loopback::{Loopback, ServiceCounts};
use rtc_services::stats::Event;
use rtc_services::{BreakerState, BreakerStatus, ServicesMonitor};
use serde::Serialize;
use serde_json::json;

use crate::alloc::live_bytes;
use crate::backend::{HttpRig, load_config};
use crate::simulation::{
    Args, SimLedger, money_balances, print_money, print_summary, progress_bar, sim_options,
    with_money,
};

/// A breaker state change, at a time of the run.
#[derive(Clone, Copy, Debug, Serialize)]
struct Seen {
    /// Milliseconds since the run started.
    at_ms: u64,
    service: ServiceKind,
    from: BreakerState,
    to: BreakerState,
}

/// What the service layer did in the run.
#[derive(Serialize)]
struct ServicesSummary {
    backend: &'static str,
    outage: Option<serde_json::Value>,
    /// Per service: requests the loopback received and how it answered them.
    loopback: Vec<(ServiceKind, ServiceCounts)>,
    /// The service layer's non-zero counters.
    counters: Vec<rtc_services::stats::CounterValue>,
    /// Breakers at the end, with their transition counts.
    breakers: Vec<BreakerStatus>,
    /// Breaker state changes during the run (the last ones each breaker remembers).
    timeline: Vec<Seen>,
    /// The shutdown's drain of settlements in flight.
    drain: Option<rtc_services::DrainReport>,
}

/// Takes the service down and up on schedule, until `done`.
fn watch(
    loopback: &Loopback,
    start: Instant,
    outage: Option<(ServiceKind, Duration, Duration)>,
    done: &AtomicBool,
) {
    let Some((kind, at, length)) = outage else {
        return;
    };
    let mut down = false;
    while !done.load(Ordering::Relaxed) {
        let t = start.elapsed();
        if !down && t >= at && t < at + length {
            loopback.set_outage(kind, true);
            down = true;
        }
        if down && t >= at + length {
            loopback.set_outage(kind, false);
            down = false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    loopback.set_outage(kind, false);
}

/// The breakers' remembered state changes, placed on the run's time line (`now` since its start).
fn timeline(breakers: &[BreakerStatus], now: Duration) -> Vec<Seen> {
    let now_ms = now.as_millis() as u64;
    let mut seen: Vec<Seen> = breakers
        .iter()
        .flat_map(|b| {
            let mut from = BreakerState::Closed;
            b.history.iter().map(move |change| {
                let step = Seen {
                    at_ms: now_ms.saturating_sub(change.ago_ms),
                    service: b.service,
                    from,
                    to: change.to,
                };
                from = change.to;
                step
            })
        })
        .collect();
    seen.sort_by_key(|s| s.at_ms);
    seen
}

/// Runs the simulation through the HTTP service layer and the loopback services, taking a service down as
/// `args.outage` says, and prints its summary; an error says what did not add up.
pub fn run(args: &Args) -> Result<SimReport, String> {
    let plan = args.outage;
    let mut cfg = load_config(args.config.as_ref())?;
    // The loopback services keep the money: their ledger is the run's.
    if args.fraud {
        crate::simulation::enable_fraud_rules(&mut cfg)?;
    }
    let ledger = SimLedger::prepare(args, &mut cfg)?;
    let rig = HttpRig::start(&mut cfg)?;
    let arrivals = Duration::from_secs_f64(args.calls as f64 / args.cps.max(0.001));
    let outage = plan.service.map(|kind| {
        let at = plan.at.unwrap_or(arrivals.mul_f64(0.3));
        let length = plan.length.unwrap_or(arrivals.mul_f64(0.4));
        (kind, at, length)
    });
    if let Some((kind, _, length)) = outage
        && args.config.is_none()
        && let Some(service) = cfg.services.iter_mut().find(|s| s.kind == kind)
    {
        service.breaker.window = (length / 2).max(Duration::from_millis(20));
        service.breaker.open_for = (length / 4).max(Duration::from_millis(10));
    }
    let (switch, commands) = sim::SimSwitch::new();
    let heap_before = live_bytes();
    let host = Host::start(&cfg, Box::new(switch)).map_err(|e| e.to_string())?;
    let monitor = host
        .monitor()
        .cloned()
        .ok_or("every service is HTTP, yet no service layer started")?;
    let bar = progress_bar(args.calls);
    let done = AtomicBool::new(false);
    let mut peak_heap = 0isize;
    let start = Instant::now();
    let report = std::thread::scope(|scope| {
        scope.spawn(|| watch(&rig.loopback, start, outage, &done));
        let report = sim::run(
            host.engine().clone(),
            commands,
            sim_options(args),
            |started, ended| {
                bar.set_position(started as u64);
                bar.set_message(format!("{ended} ended"));
                peak_heap = peak_heap.max(live_bytes() - heap_before);
            },
        );
        done.store(true, Ordering::Relaxed);
        report
    });
    let breakers = monitor.breakers();
    let timeline = timeline(&breakers, start.elapsed());
    bar.finish_and_clear();
    let shutdown: HostShutdownReport = host.shutdown(Duration::from_secs(5));
    let summary = ServicesSummary {
        backend: "http",
        outage: outage.map(|(kind, at, length)| {
            let service = cfg.service(kind);
            json!({
                "service": kind,
                "at_ms": at.as_millis() as u64,
                "length_ms": length.as_millis() as u64,
                "breaker_window_ms": service.breaker.window.as_millis() as u64,
                "breaker_open_for_ms": service.breaker.open_for.as_millis() as u64,
            })
        }),
        loopback: ServiceKind::ALL
            .iter()
            .map(|&k| (k, rig.loopback.counts(k)))
            .collect(),
        counters: monitor.counters(),
        breakers,
        timeline,
        drain: shutdown.drain,
    };
    rig.loopback.stop();
    let money = ledger.money()?;
    if args.json {
        let mut value = with_money(&report, &money);
        if let Some(object) = value.as_object_mut() {
            object.insert(
                "services".into(),
                serde_json::to_value(&summary).unwrap_or_default(),
            );
        }
        println!("{value}");
    } else {
        print_summary(&report, peak_heap);
        print_money(&money);
        print_services(&summary, &monitor);
    }
    if report.left_live > 0 || report.ended < report.calls {
        return Err(format!(
            "{} calls still live in the engine and {} calls not ended when the run stopped",
            report.left_live,
            report.calls - report.ended
        ));
    }
    // Settlements the outage left spooled may still hold money; the journal balances whatever happened.
    money_balances(&money)?;
    Ok(report)
}

fn print_services(s: &ServicesSummary, monitor: &ServicesMonitor) {
    println!();
    println!("business services: loopback HTTP on 127.0.0.1");
    if let Some(o) = &s.outage {
        println!(
            "  outage: {} service down from {:.2} s for {:.2} s (its breaker for this run: window {} ms, open-for {} ms)",
            o["service"].as_str().unwrap_or("?"),
            o["at_ms"].as_u64().unwrap_or(0) as f64 / 1000.0,
            o["length_ms"].as_u64().unwrap_or(0) as f64 / 1000.0,
            o["breaker_window_ms"],
            o["breaker_open_for_ms"],
        );
    }
    println!();
    println!(
        "  {:<9} {:>9} {:>9} {:>9} {:>9} {:>12} {:>9}",
        "service", "received", "sent", "ok", "failed", "circuit_open", "degraded"
    );
    for (kind, counts) in &s.loopback {
        let k = *kind;
        let failed: u64 = [
            Event::Timeout,
            Event::Connect,
            Event::HttpStatus,
            Event::BodyTooLarge,
            Event::BadJson,
            Event::InvalidValue,
        ]
        .iter()
        .map(|&e| monitor.count(k, e))
        .sum();
        let degraded = monitor.count(k, Event::DegradedPartnerCache)
            + monitor.count(k, Event::DegradedDefaultRoute);
        println!(
            "  {:<9} {:>9} {:>9} {:>9} {:>9} {:>12} {:>9}",
            k.name(),
            counts.requests,
            monitor.count(k, Event::Sent),
            monitor.count(k, Event::Ok),
            failed,
            monitor.count(k, Event::CircuitOpen),
            degraded
        );
    }
    println!();
    println!("  breaker transitions (seconds into the run)");
    for b in &s.breakers {
        let t = b.transitions;
        if t.opened + t.half_opened + t.closed == 0 {
            continue;
        }
        println!(
            "    {:<9} opened {}, half-open {}, closed again {}; now {}",
            b.service.name(),
            t.opened,
            t.half_opened,
            t.closed,
            b.state.name()
        );
        let steps: Vec<String> = s
            .timeline
            .iter()
            .filter(|seen| seen.service == b.service)
            .map(|seen| {
                format!(
                    "{:.3} s {}→{}",
                    seen.at_ms as f64 / 1000.0,
                    seen.from.name(),
                    seen.to.name()
                )
            })
            .collect();
        if !steps.is_empty() {
            println!("      {}", steps.join(", "));
        }
    }
    if s.breakers.iter().all(|b| b.transitions.opened == 0) {
        println!("    none: no breaker opened");
    }
    println!();
    println!(
        "  degraded answers: {} cached partners served, {} default routes served",
        monitor.count(ServiceKind::Partner, Event::DegradedPartnerCache),
        monitor.count(ServiceKind::Routing, Event::DegradedDefaultRoute)
    );
    if let Some(d) = &s.drain {
        println!(
            "  settlements at shutdown: {} in flight, {} spooled, {} lost",
            d.in_flight, d.spooled, d.lost
        );
    }
}
