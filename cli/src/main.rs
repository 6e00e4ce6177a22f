//! `rtc-core`: the engine outside FreeSWITCH.
use clap::Parser;

#[derive(Parser)]
#[command(name = "rtc-core", version, about = "mod_rtc_core engine tools")]
enum Cli {}

fn main() {
    let _ = Cli::parse();
}
