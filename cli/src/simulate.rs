//! `rtc-core simulate` (`--backend local`, the default): the main job on embedded defaults — simulated FreeSWITCH traffic through the real
//! engine thread and the embedded local backends, then a summary, with the money the run moved through the
//! ledger: a real file (durable, as in production) in a scratch directory removed at the end, or the one
//! `--ledger` names, kept.

use std::time::Duration;

use rtc_config::RtcConfig;
use rtc_config::services::Backend;
use rtc_engine::sim::{self, SimReport};
use rtc_host::Host;
use rtc_ledger::Money;

use crate::alloc::live_bytes;
use crate::simulation::{
    Args, FraudOutcome, SimLedger, enable_fraud_rules, money_balances, money_saved, print_fraud,
    print_money, print_summary, progress_bar, sim_options, with_money,
};
use rtc_engine::engine::{Query, QueryReply};

/// The hacked PBX's source address in the simulation.
fn opts_profile_ip() -> std::net::IpAddr {
    sim::SimProfile::default().pumping_ip
}

/// Runs the simulation on the embedded local backends and prints its summary; an error says what did not add up.
pub fn run(args: Args) -> Result<SimReport, String> {
    let mut cfg = match &args.config {
        Some(path) => RtcConfig::load_file(path).map_err(|e| e.to_string())?,
        None => RtcConfig::default(),
    };
    // `--backend local`: every service on the embedded backends, whatever the file says.
    for service in &mut cfg.services {
        service.backend = Backend::Local;
    }
    if args.fraud {
        enable_fraud_rules(&mut cfg)?;
    }
    let ledger = SimLedger::prepare(&args, &mut cfg)?;
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
    let fraud = match (&report.pumping, args.fraud) {
        (Some(pumping), true) => {
            let engine_report = match host.engine().query(Query::Fraud, Duration::from_secs(5)) {
                Ok(QueryReply::Fraud(f)) => *f,
                other => return Err(format!("the engine gave no fraud report: {other:?}")),
            };
            Some(FraudOutcome {
                report: engine_report,
                money_saved: money_saved(&cfg, pumping, opts_profile_ip())?,
                pumping: pumping.clone(),
            })
        }
        _ => None,
    };
    let stopped = host.shutdown(Duration::from_secs(5));
    if !stopped.runtime_stopped {
        log::warn!("simulate: the rtc-io runtime did not stop within 5 s");
    }
    let money = ledger.money()?;
    if args.json {
        let mut value = with_money(&report, &money);
        if let (Some(f), Some(object)) = (&fraud, value.as_object_mut()) {
            object.insert("fraud".into(), serde_json::to_value(f).unwrap_or_default());
        }
        println!("{value}");
    } else {
        print_summary(&report, peak_heap);
        if let Some(f) = &fraud {
            print_fraud(f);
        }
        print_money(&money);
    }
    if report.left_live > 0 || report.ended < report.calls {
        return Err(format!(
            "{} calls still live in the engine and {} calls not ended when the run stopped",
            report.left_live,
            report.calls - report.ended
        ));
    }
    if money.reserved_at_end != Money::ZERO {
        return Err(format!(
            "{} still reserved in the ledger after every call ended",
            money.reserved_at_end
        ));
    }
    money_balances(&money)?;
    Ok(report)
}
