//! Runs the `esl-parse` benchmark: `cargo run --release -p rtc-esl --example esl_parse_bench [events]`.
//! With `--dump`, prints one call's worth of the benchmark stream instead.
fn main() {
    let arg = std::env::args().nth(1).unwrap_or_default();
    if arg == "--dump" {
        let s = rtc_esl::bench::build_stream(11);
        print!("{}", String::from_utf8_lossy(&s.bytes));
        return;
    }
    let events = arg.parse().unwrap_or(200_000);
    println!("{}", rtc_esl::bench::esl_parse_bench(events));
}
