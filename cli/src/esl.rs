//! `rtc-core esl`: the ESL host — the engine, on the same host assembly as the module (`rtc-host`), over
//! FreeSWITCH's event socket, until SIGINT or SIGTERM; and `rtc-core replay`: a recorded stream through the
//! engine offline, printing each call's trace.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rtc_config::RtcConfig;
use rtc_engine::call::CallView;
use rtc_engine::id::CallId;
use rtc_esl::client::{EslClient, EslConfig, EslLink};
use rtc_esl::intake::IntakeConfig;
use rtc_esl::replay::{ReplayOptions, replay};
use rtc_host::{Host, HostOptions};
use rtc_ledger::{LedgerHandle, Location};
use rtc_services::local::LocalServices;

/// Options of `rtc-core esl`.
pub struct EslArgs {
    pub host: String,
    pub port: u16,
    pub password: String,
    pub config: Option<PathBuf>,
    pub record: Option<PathBuf>,
    pub filter: Option<String>,
    pub internal_source_ip: Option<IpAddr>,
}

fn load_config(path: &Option<PathBuf>) -> Result<RtcConfig, String> {
    match path {
        Some(p) => RtcConfig::load_file(p).map_err(|e| e.to_string()),
        None => Ok(RtcConfig::default()),
    }
}

/// Runs until SIGINT or SIGTERM, or until the link fails for good (a refused password).
pub fn run(args: EslArgs) -> Result<(), String> {
    let cfg = load_config(&args.config)?;
    if let Some(addr) = cfg.metrics_listen {
        log::warn!(
            "metrics-listen {addr}: the scrape endpoint is the FreeSWITCH module's; rtc-core esl logs its \
             counters every minute and prints them on exit instead"
        );
    }
    // The same assembly as the module's (runtime, services, engine thread), with the ledger where the module uses
    // FreeSWITCH's db directory in this process's working directory: `rtc_core.db` there (a relative `ledger`
    // path is under it) unless the configuration gives a full path.
    let dir =
        std::env::current_dir().map_err(|e| format!("cannot read the working directory: {e}"))?;
    let link = EslLink::new();
    let host = Host::start_with(
        &cfg,
        Box::new(link.call_control()),
        HostOptions {
            ledger_dir: Some(dir),
            ..HostOptions::default()
        },
    )
    .map_err(|e| e.to_string())?;
    if let Some(trail) = host.audit() {
        rtc_host::trail::operator_action(
            trail,
            "load",
            "rtc-core esl",
            None,
            serde_json::json!({ "config": cfg.origin }),
            serde_json::json!({ "version": env!("CARGO_PKG_VERSION") }),
        );
    }
    match host.ledger().map(LedgerHandle::path) {
        Some(":memory:") => log::warn!(
            "rtc-core esl: ledger in memory (ledger = :memory:): every balance and CDR is lost at exit"
        ),
        Some(path) => log::info!("rtc-core esl: ledger {path}"),
        None => {}
    }
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(1);
    ctrlc::set_handler(move || {
        let _ = stop_tx.try_send(());
    })
    .map_err(|e| format!("cannot install the SIGINT/SIGTERM handler: {e}"))?;
    let client = EslClient::start(
        EslConfig {
            host: args.host,
            port: args.port,
            password: args.password,
            filter: args.filter,
            record: args.record,
            intake: IntakeConfig {
                internal_source_ip: args.internal_source_ip,
                proxy: cfg.proxy.clone(),
            },
            ..EslConfig::default()
        },
        link,
        host.engine().clone(),
    )
    .map_err(|e| e.to_string())?;
    log::info!(
        "rtc-core esl: engine running, connecting to {} ({})",
        client.addr(),
        cfg.origin
    );
    let mut last_status = Instant::now();
    let outcome = loop {
        if stop_rx.recv_timeout(Duration::from_millis(200)).is_ok() {
            log::info!("rtc-core esl: signal received, shutting down");
            break Ok(());
        }
        if let Some(e) = client.fatal_error() {
            break Err(e.to_string());
        }
        if last_status.elapsed() >= Duration::from_secs(60) {
            last_status = Instant::now();
            let s = client.stats();
            let sources = match &cfg.proxy {
                Some(p) => {
                    let c = s.intake.sources;
                    format!(
                        " source_header={}: believed={} absent={} refused={} spoofed={}",
                        p.header, c.believed, c.absent, c.refused, c.spoofed
                    )
                }
                None => String::new(),
            };
            log::info!(
                "rtc-core esl: connected={} events={} queue_full={} commands={} failures={} timeouts={} reconnects={}{sources}",
                client.is_connected(),
                s.events_submitted,
                s.events_queue_full,
                s.commands_sent,
                s.command_failures,
                s.command_timeouts,
                s.connects.saturating_sub(1)
            );
        }
    };
    let stats = client.stats();
    client.shutdown();
    if let Some(trail) = host.audit() {
        rtc_host::trail::operator_action(
            trail,
            "unload",
            "rtc-core esl",
            None,
            serde_json::Value::Null,
            serde_json::json!({ "outcome": outcome.as_ref().err() }),
        );
    }
    let report = host.shutdown(Duration::from_secs(5));
    if !report.runtime_stopped {
        log::warn!("rtc-io runtime did not stop within 5 s");
    }
    println!(
        "{}",
        serde_json::json!({"esl": stats, "engine": report.engine})
    );
    outcome
}

/// Options of `rtc-core replay`.
pub struct ReplayArgs {
    pub file: PathBuf,
    pub config: Option<PathBuf>,
    pub call: Option<String>,
    pub internal_source_ip: Option<IpAddr>,
    pub json: bool,
}

pub fn run_replay(args: ReplayArgs) -> Result<(), String> {
    let cfg = load_config(&args.config)?;
    let only = match &args.call {
        Some(c) => Some(CallId::parse(c).map_err(|e| e.to_string())?),
        None => None,
    };
    // Offline: the local backends answer, whatever the configuration says for live use, with a ledger in memory:
    // a replay never moves real money (nor waits for the live ledger's lock).
    let local = LocalServices::load_at(&cfg.local, Location::Memory).map_err(|e| e.to_string())?;
    let file = std::fs::File::open(&args.file)
        .map_err(|e| format!("cannot open {}: {e}", args.file.display()))?;
    let report = replay(
        std::io::BufReader::new(file),
        Box::new(local),
        ReplayOptions {
            engine: cfg.engine.clone(),
            fail_modes: cfg.fail_modes(),
            intake: IntakeConfig {
                internal_source_ip: args.internal_source_ip,
                proxy: cfg.proxy.clone(),
            },
            only,
        },
    )
    .map_err(|e| e.to_string())?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&report).map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    for call in &report.calls {
        print_call(call);
    }
    for id in &report.lost {
        println!("call {id}: seen created, but its trace was not kept");
    }
    println!(
        "{} calls, {} events over {:.1} s of recording ({} frames, {} engine-placed legs dropped, {} parks without rtc_core=true dropped, {} failovers without an outbound leg, {} unreadable frames)",
        report.calls.len(),
        report.events,
        report.span_ms as f64 / 1000.0,
        report.intake.frames,
        report.intake.own_legs_dropped,
        report.intake.unmarked_parks,
        report.intake.synthetic_b_hangups,
        report.intake.errors
    );
    if only.is_some() && report.calls.is_empty() {
        return Err(format!(
            "call {} does not appear in {} as an inbound call",
            args.call.unwrap_or_default(),
            args.file.display()
        ));
    }
    Ok(())
}

fn print_call(c: &CallView) {
    println!(
        "call {}  {}  reason {}  cause {}  from {} ({})  {} -> {}",
        c.uuid,
        c.state,
        c.reason.unwrap_or("-"),
        c.hangup_cause.as_deref().unwrap_or("-"),
        c.source_ip
            .map_or("no address".to_string(), |ip| ip.to_string()),
        c.partner
            .as_ref()
            .map_or("no partner".to_string(), |p| format!("partner {p}")),
        if c.caller.is_empty() { "?" } else { &c.caller },
        if c.destination.is_empty() {
            "?"
        } else {
            &c.destination
        },
    );
    for t in &c.trace {
        println!(
            "  {:>10.3} s  {:<22} -> {:<22} on {}",
            t.at_us as f64 / 1e6,
            t.from,
            t.to,
            t.cause
        );
    }
    if c.trace_dropped > 0 {
        println!("  ({} earlier steps not kept)", c.trace_dropped);
    }
}
