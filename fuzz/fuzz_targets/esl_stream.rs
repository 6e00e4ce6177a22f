//! Fuzzes the ESL framer and event parser together: the input's first two bytes choose the read size and
//! the frame limit, the rest is the byte stream. Nothing may panic, and the framer's buffer must stay
//! within its limit plus one read.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rtc_esl::{Decoder, EventParser, FramerConfig};

fuzz_target!(|data: &[u8]| {
    let [a, b, rest @ ..] = data else {
        return;
    };
    let read = usize::from(*a).max(1) * 7;
    let max_frame_size = 64 + usize::from(*b) * 64;
    let mut d = Decoder::new(FramerConfig {
        max_frame_size,
        max_skip: 1 << 20,
    });
    for chunk in rest.chunks(read) {
        d.push(chunk);
        while let Some(m) = d.next_message() {
            let _ = m.map(|m| format!("{m:?}")).map_err(|e| e.to_string());
        }
        assert!(d.framer.buffered() <= max_frame_size.max(64) + chunk.len());
    }
    // The event parser on its own, on the raw bytes as an event body.
    let _ = EventParser::new().parse_event(rest);
});
