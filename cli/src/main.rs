//! `rtc-core`: the mod_rtc_core engine outside FreeSWITCH — simulate, bench, esl, replay, check-config — and
//! the operators' commands on its ledger and its audit trail.

mod alloc;
mod audit;
mod backend;
mod bench;
mod bench_ledger;
mod bench_setup;
mod esl;
mod ledger;
mod simulate;
mod simulate_http;
mod simulation;

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use backend::BackendArg;
use clap::{Parser, Subcommand};
use rtc_engine::service::ServiceKind;
use std::time::Duration;

#[global_allocator]
static ALLOC: alloc::Counting = alloc::Counting;

#[derive(Parser)]
#[command(name = "rtc-core", version, about = "mod_rtc_core call engine tools")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Drive simulated FreeSWITCH traffic through the engine and its local backends, then summarise.
    Simulate {
        /// Calls to place.
        #[arg(long, default_value_t = 10_000)]
        calls: usize,
        /// New calls per second.
        #[arg(long, default_value_t = 1_000.0)]
        cps: f64,
        /// rtc_core.conf.xml to use (default: the embedded defaults over conf/).
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Shortest and longest talk time of answered calls, in milliseconds.
        #[arg(long, default_value_t = 200)]
        talk_min_ms: u64,
        #[arg(long, default_value_t = 2_000)]
        talk_max_ms: u64,
        /// Print the report as one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// A hacked PBX among the traffic: 10 % of the calls pump a few premium and ordinary numbers from partner
        /// lab_pbx, talking long, and 10 % are the same partner's ordinary calls; the fraud rules run (the
        /// configuration's, else the shipped set), enabled. The summary shows the hits and the money they saved.
        #[arg(long)]
        fraud: bool,
        /// Business services: the local backends, or the same tables behind loopback HTTP services.
        #[arg(long, value_enum, default_value_t = BackendArg::Local)]
        backend: BackendArg,
        /// With --backend http: the service taken down partway through (partner, auth, balance, rating,
        /// routing, cdr), or none.
        #[arg(long, default_value = "partner", value_parser = parse_outage_service)]
        outage: OutageService,
        /// When the outage starts, in ms from the first call (default: 30 % into the arrivals).
        #[arg(long)]
        outage_at_ms: Option<u64>,
        /// How long the service stays down, in ms (default: 40 % of the arrivals).
        #[arg(long)]
        outage_ms: Option<u64>,
        /// Keep the money in this ledger file, and keep the file (default: a scratch file, removed at the
        /// end; or the PostgreSQL ledger the configuration names). An existing ledger is used as it stands. A
        /// postgres:// URL runs on the shared ledger there, as node `--node-id`.
        #[arg(long)]
        ledger: Option<PathBuf>,
        /// This run's node id on a shared (PostgreSQL) ledger (default: the configuration's, else the host's name).
        #[arg(long)]
        node_id: Option<String>,
    },
    /// Measure one part of the engine; the last line printed is one JSON object.
    Bench {
        #[command(subcommand)]
        which: BenchName,
    },
    /// Print the call state machine's transition table (Markdown).
    States,
    /// Run the engine over FreeSWITCH's event socket until SIGINT or SIGTERM.
    Esl {
        /// Event socket host.
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// Event socket port.
        #[arg(long, default_value_t = 8021)]
        port: u16,
        /// Event socket password.
        #[arg(long, default_value = "ClueCon")]
        password: String,
        /// rtc_core.conf.xml (default: the embedded defaults over conf/).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Append every frame received to this file, as it came off the socket (for `rtc-core replay`).
        #[arg(long)]
        record: Option<PathBuf>,
        /// ESL filter `<header> <value>` (FreeSWITCH then sends only matching events).
        #[arg(long)]
        filter: Option<String>,
        /// Source address assumed for inbound channels without a transport address (loopback and other
        /// internal endpoints). Without it, such calls are from an unknown partner.
        #[arg(long)]
        internal_source_ip: Option<IpAddr>,
    },
    /// Feed a stream recorded with `rtc-core esl --record` through the engine offline and print each
    /// call's trace: its states with times, its reason and its hangup cause.
    Replay {
        /// The recording.
        file: PathBuf,
        /// rtc_core.conf.xml as used live (default: the embedded defaults over conf/).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Only this call (its channel UUID).
        #[arg(long)]
        call: Option<String>,
        /// As for `rtc-core esl`.
        #[arg(long)]
        internal_source_ip: Option<IpAddr>,
        /// Print the report as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Check an rtc_core.conf.xml and the tables it names; print what is wrong, where.
    CheckConfig {
        /// The configuration file.
        file: PathBuf,
    },
    /// Read, check, export from and import into a ledger file (balances, journal, CDRs).
    Ledger(ledger::LedgerArgs),
    /// Check the audit trail's hash chain, or print its lines (numbers decrypted with the key).
    Audit {
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
}

#[derive(Subcommand)]
enum BenchName {
    /// Whole call lifecycles on the engine thread with N calls live at the peak.
    Engine {
        /// Concurrent live calls at the peak.
        #[arg(long, default_value_t = 100_000)]
        calls: usize,
        /// Most events queued at once (bounds the queueing part of the latency figures).
        #[arg(long, default_value_t = 256)]
        window: usize,
    },
    /// Call setup latency (CHANNEL_CREATE to the decision) through the engine and business services.
    Setup {
        /// The embedded local backends, or loopback HTTP services over 127.0.0.1.
        #[arg(long, value_enum, default_value_t = BackendArg::Local)]
        backend: BackendArg,
        /// Calls measured (after a short warm-up).
        #[arg(long, default_value_t = 10_000)]
        calls: usize,
        /// New calls per second.
        #[arg(long, default_value_t = 1_000.0)]
        cps: f64,
        /// rtc_core.conf.xml to use (default: the embedded defaults over conf/).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The balance service's ledger: a file in a scratch directory (durable), memory, or one run of
        /// each (p99_delta_us: durable p99 less in-memory p99).
        #[arg(long, value_enum, default_value_t = bench_setup::LedgerChoice::Both)]
        ledger: bench_setup::LedgerChoice,
    },
    /// Settlements per second through the ledger's writer (reserve, one extension, commit with its CDR),
    /// durable on a file with group commit and in memory, in the same run.
    Ledger {
        /// Settlements per run.
        #[arg(long, default_value_t = 100_000)]
        calls: usize,
        /// Producer threads, each submitting without waiting for the others.
        #[arg(long, default_value_t = 4)]
        threads: usize,
        /// Calls each producer keeps in flight.
        #[arg(long, default_value_t = 256)]
        window: usize,
        /// Directory for the durable run's ledger file (default: the system's temporary directory); the
        /// file is removed afterwards.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The ledger measured: the embedded SQLite file (against memory), or the shared ledger on
        /// PostgreSQL (from 1 and from --nodes nodes, against the SQLite file).
        #[arg(long, value_enum, default_value = "sqlite")]
        backend: bench_ledger::BenchBackend,
        /// Nodes writing the shared ledger at once (--backend postgres).
        #[arg(long, default_value_t = 2)]
        nodes: usize,
        /// The PostgreSQL database (--backend postgres; default: a throwaway cluster on 127.0.0.1 started for
        /// the bench, as the tests do).
        #[arg(long)]
        url: Option<String>,
    },
    /// Framing and parsing of a realistic event socket stream on one thread.
    EslParse {
        /// Frames to parse.
        #[arg(long, default_value_t = 1_000_000)]
        events: usize,
    },
}

/// The service an HTTP simulation takes down, if any.
#[derive(Clone, Copy, Debug)]
struct OutageService(Option<ServiceKind>);

fn parse_outage_service(text: &str) -> Result<OutageService, String> {
    if text == "none" {
        return Ok(OutageService(None));
    }
    ServiceKind::ALL
        .iter()
        .find(|k| k.name() == text)
        .map(|k| OutageService(Some(*k)))
        .ok_or_else(|| {
            format!(
                "{text:?} is not a service: partner, auth, balance, rating, routing, cdr or none"
            )
        })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A long-running connection reports what it does; the one-shot tools stay quiet.
    let level = match cli.command {
        Command::Esl { .. } => "info",
        _ => "warn",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level)).init();
    match cli.command {
        Command::Simulate {
            calls,
            cps,
            config,
            seed,
            talk_min_ms,
            talk_max_ms,
            json,
            fraud,
            backend,
            outage,
            outage_at_ms,
            outage_ms,
            ledger,
            node_id,
        } => {
            let args = simulation::Args {
                calls,
                cps,
                config,
                seed,
                talk_ms: (talk_min_ms, talk_max_ms),
                json,
                fraud,
                outage: simulation::OutagePlan {
                    service: outage.0,
                    at: outage_at_ms.map(Duration::from_millis),
                    length: outage_ms.map(Duration::from_millis),
                },
                ledger,
                node_id,
            };
            let run = match backend {
                BackendArg::Local => simulate::run(args),
                BackendArg::Http => simulate_http::run(&args),
            };
            match run {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("rtc-core simulate: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Bench { which } => {
            let out = match which {
                BenchName::Engine { calls, window } => {
                    Ok(bench::engine(bench::EngineBench { calls, window }))
                }
                BenchName::Setup {
                    backend,
                    calls,
                    cps,
                    config,
                    ledger,
                } => bench_setup::run(bench_setup::SetupBench {
                    backend,
                    calls,
                    cps,
                    config,
                    ledger,
                }),
                BenchName::Ledger {
                    calls,
                    threads,
                    window,
                    dir,
                    backend,
                    nodes,
                    url,
                } => bench_ledger::bench(bench_ledger::LedgerBench {
                    calls,
                    threads,
                    window,
                    dir,
                    backend,
                    nodes,
                    url,
                }),
                BenchName::EslParse { events } => Ok(rtc_esl::bench::esl_parse_bench(events)),
            };
            match out {
                Ok(out) => {
                    println!("{out}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("rtc-core bench: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Esl {
            host,
            port,
            password,
            config,
            record,
            filter,
            internal_source_ip,
        } => match esl::run(esl::EslArgs {
            host,
            port,
            password,
            config,
            record,
            filter,
            internal_source_ip,
        }) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("rtc-core esl: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Replay {
            file,
            config,
            call,
            internal_source_ip,
            json,
        } => match esl::run_replay(esl::ReplayArgs {
            file,
            config,
            call,
            internal_source_ip,
            json,
        }) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("rtc-core replay: {e}");
                ExitCode::FAILURE
            }
        },
        Command::CheckConfig { file } => check_config(&file),
        Command::Ledger(args) => ledger::run(args),
        Command::Audit { command } => audit::run(command),
        Command::States => {
            print!("{}", rtc_engine::call::transitions_markdown());
            ExitCode::SUCCESS
        }
    }
}

fn check_config(file: &std::path::Path) -> ExitCode {
    let cfg = match rtc_config::RtcConfig::load_file(file) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    // The tables of local services, and the URLs, keys, CA file and default routes of HTTP ones.
    if let Err(e) = rtc_host::check(&cfg) {
        eprintln!("{e}");
        return ExitCode::FAILURE;
    }
    println!("{}: OK", file.display());
    ExitCode::SUCCESS
}
