//! `rtc-core`: the mod_rtc_core engine outside FreeSWITCH — simulate, bench, esl, replay, check-config.

mod alloc;
mod bench;
mod simulate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    },
    /// Measure one part of the engine; the last line printed is one JSON object.
    Bench {
        #[command(subcommand)]
        which: BenchName,
    },
    /// Print the call state machine's transition table (Markdown).
    States,
    /// Check an rtc_core.conf.xml and the tables it names; print what is wrong, where.
    CheckConfig {
        /// The configuration file.
        file: PathBuf,
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
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    match cli.command {
        Command::Simulate {
            calls,
            cps,
            config,
            seed,
            talk_min_ms,
            talk_max_ms,
            json,
        } => match simulate::run(simulate::Args {
            calls,
            cps,
            config,
            seed,
            talk_ms: (talk_min_ms, talk_max_ms),
            json,
        }) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("rtc-core simulate: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Bench { which } => {
            let out = match which {
                BenchName::Engine { calls, window } => {
                    bench::engine(bench::EngineBench { calls, window })
                }
            };
            println!("{out}");
            ExitCode::SUCCESS
        }
        Command::CheckConfig { file } => check_config(&file),
        Command::States => {
            print!("{}", rtc_engine::call::transitions_markdown());
            ExitCode::SUCCESS
        }
    }
}

fn check_config(file: &std::path::Path) -> ExitCode {
    let cfg = match rtc_engine::settings::RtcConfig::load_file(file) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let local_needed = cfg
        .services
        .iter()
        .any(|s| s.backend == rtc_engine::config::Backend::Local);
    if local_needed && let Err(e) = rtc_engine::local::LocalServices::load(&cfg.local) {
        eprintln!("{e}");
        return ExitCode::FAILURE;
    }
    println!("{}: OK", file.display());
    ExitCode::SUCCESS
}
