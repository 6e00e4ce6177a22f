//! `rtc-core`: the mod_rtc_core engine outside FreeSWITCH — simulate, bench, esl, replay, check-config.

mod alloc;
mod bench;

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
    /// Measure one part of the engine; the last line printed is one JSON object.
    Bench {
        #[command(subcommand)]
        which: BenchName,
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

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Command::Bench { which } => {
            let out = match which {
                BenchName::Engine { calls, window } => {
                    bench::engine(bench::EngineBench { calls, window })
                }
            };
            println!("{out}");
        }
    }
}
