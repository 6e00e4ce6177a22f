//! The `esl-parse` benchmark: framing and parsing of a realistic event socket stream on one thread.
//!
//! The stream is what an ESL intake subscribed to the engine's events receives: per call, nine channel
//! events of 2–4 KB (a-leg CREATE, PARK, ANSWER, BRIDGE, HANGUP_COMPLETE; b-leg CREATE, PROGRESS_MEDIA,
//! ANSWER, HANGUP_COMPLETE) with the full header sets FreeSWITCH sends, plus events the engine skips
//! (a full-size `CHANNEL_EXECUTE` per call, a `HEARTBEAT` now and then) and a `BACKGROUND_JOB` result. It is
//! fed to a [`Decoder`] in 64 KiB reads, as a socket would deliver it.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use compact_str::format_compact;

use crate::write::{self, Host};
use crate::{Decoder, EslMessage, FramerConfig};
use rtc_engine::cause::HangupCause;
use rtc_engine::event::{CallEvent, Direction, EventKind};
use rtc_engine::id::CallId;

/// Bytes handed to the decoder per read.
const READ: usize = 64 * 1024;

/// A benchmark stream and what it holds.
pub struct Stream {
    /// The bytes as FreeSWITCH would send them.
    pub bytes: Vec<u8>,
    /// Frames in it.
    pub events: usize,
    /// Channel events the engine follows.
    pub channel_events: usize,
}

/// Builds a stream of about `events` frames (whole calls, so rounded up to a call's worth).
pub fn build_stream(events: usize) -> Stream {
    let host = Host::default();
    let mut bytes = Vec::with_capacity(events * 3300);
    let mut seq = 1_000_000u64;
    let mut ts = 1_714_564_800_000_000u64;
    let (mut frames, mut channel) = (0usize, 0usize);
    let mut call = 0u128;
    while frames < events {
        call += 1;
        let a = CallId::from_u128(0x0a00_0000_0000_4000_8000_0000_0000_0000 | (call << 1));
        let b = CallId::from_u128(0x0b00_0000_0000_4000_8000_0000_0000_0000 | (call << 1 | 1));
        let ip = if call.is_multiple_of(5) {
            IpAddr::V6(Ipv6Addr::new(
                0x2001,
                0xdb8,
                0,
                0,
                0,
                0,
                0,
                (call % 65_000) as u16,
            ))
        } else {
            IpAddr::V4(Ipv4Addr::new(198, 51, 100, (call % 250) as u8 + 1))
        };
        let caller = format_compact!("+1555{:07}", call % 10_000_000);
        let dest = format_compact!("+4930{:08}", (call * 7919) % 100_000_000);
        let mut ev = |uuid: CallId, kind: EventKind, dir: Direction, other: Option<CallId>| {
            seq += 1;
            ts += 137;
            let mut e = CallEvent::new(uuid, kind, seq);
            e.timestamp_us = ts;
            e.direction = dir;
            e.other_leg = other;
            e.caller = caller.clone();
            e.destination = dest.clone();
            e.source_ip = Some(ip);
            if call.is_multiple_of(3) {
                e.auth_user = format_compact!("trunk{}", call % 100);
            }
            if matches!(kind, EventKind::ChannelHangupComplete) {
                e.hangup_cause = Some(HangupCause::NORMAL_CLEARING);
            }
            e
        };
        use Direction::{Inbound, Outbound};
        use EventKind::*;
        let legs = [
            ev(a, ChannelCreate, Inbound, None),
            ev(a, ChannelPark, Inbound, None),
            ev(b, ChannelCreate, Outbound, Some(a)),
            ev(b, ChannelProgressMedia, Outbound, Some(a)),
            ev(b, ChannelAnswer, Outbound, Some(a)),
            ev(a, ChannelAnswer, Inbound, Some(b)),
            ev(a, ChannelBridge, Inbound, Some(b)),
            ev(b, ChannelHangupComplete, Outbound, Some(a)),
            ev(a, ChannelHangupComplete, Inbound, Some(b)),
        ];
        for (i, e) in legs.iter().enumerate() {
            write::write_call_event(e, &host, &mut bytes);
            if i == 1 {
                // Ignored, but as large as a followed one.
                write::write_channel_event_named("CHANNEL_EXECUTE", e, &host, &mut bytes);
            }
        }
        seq += 1;
        write::write_background_job(
            &host,
            &a.to_string(),
            "uuid_setvar",
            Some(&format!("{a} rtc_partner acme-voice")),
            "+OK\n",
            seq,
            ts,
            &mut bytes,
        );
        frames += 11;
        channel += 9;
        if call.is_multiple_of(50) {
            seq += 1;
            write::write_heartbeat(&host, seq, ts, &mut bytes);
            frames += 1;
        }
    }
    Stream {
        bytes,
        events: frames,
        channel_events: channel,
    }
}

/// What the decoder found in the bytes fed to it.
#[derive(Debug, Default, PartialEq, Eq)]
struct Pass {
    channel_events: usize,
    jobs: usize,
    errors: usize,
}

/// Feeds `bytes` to `d` in socket-sized reads and consumes every message.
fn run_pass(d: &mut Decoder, bytes: &[u8], pass: &mut Pass) {
    for chunk in bytes.chunks(READ) {
        d.push(chunk);
        while let Some(m) = d.next_message() {
            match m {
                Ok(EslMessage::Event(e)) => {
                    black_box(&e);
                    pass.channel_events += 1;
                }
                Ok(EslMessage::BackgroundJob(j)) => {
                    black_box(&j);
                    pass.jobs += 1;
                }
                Ok(other) => {
                    black_box(&other);
                }
                Err(_) => pass.errors += 1,
            }
        }
    }
}

/// Frames in the stream that is built once and replayed: about 10 MB, so that building it does not
/// dominate and memory stays modest, while still far larger than the CPU caches.
const BASE_EVENTS: usize = 2_200;

/// Runs the benchmark over about `events` frames and returns its figures as one JSON object.
pub fn esl_parse_bench(events: usize) -> serde_json::Value {
    let events = events.max(11);
    let stream = build_stream(events.min(BASE_EVENTS));
    let passes = events.div_ceil(stream.events);
    // Warm caches and the allocator with one pass first.
    let mut d = Decoder::new(FramerConfig::default());
    run_pass(&mut d, &stream.bytes, &mut Pass::default());
    let mut pass = Pass::default();
    let t = Instant::now();
    for _ in 0..passes {
        run_pass(&mut d, &stream.bytes, &mut pass);
    }
    let secs = t.elapsed().as_secs_f64().max(1e-9);
    let frames = stream.events * passes;
    let bytes = stream.bytes.len() * passes;
    let n = frames as f64;
    serde_json::json!({
        "bench": "esl-parse",
        "events": frames,
        "channel_events": pass.channel_events,
        "background_jobs": pass.jobs,
        "errors": pass.errors,
        "bytes": bytes,
        "bytes_per_event": bytes / frames.max(1),
        "events_per_sec": (n / secs).round(),
        "mb_per_sec": ((bytes as f64 / 1e6) / secs * 10.0).round() / 10.0,
        "ns_per_event": (secs * 1e9 / n).round(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_parses_completely_and_without_errors() {
        let s = build_stream(200);
        let mut pass = Pass::default();
        run_pass(&mut Decoder::default(), &s.bytes, &mut pass);
        assert_eq!(pass.errors, 0);
        assert_eq!(pass.channel_events, s.channel_events);
        assert_eq!(pass.jobs * 9, s.channel_events);
        let per = s.bytes.len() / s.events;
        assert!((2000..6000).contains(&per), "{per} bytes per event");
    }

    #[test]
    fn bench_reports_its_figures() {
        let v = esl_parse_bench(100);
        assert_eq!(v["bench"], "esl-parse");
        assert_eq!(v["errors"], 0);
        assert!(v["events_per_sec"].as_f64().unwrap() > 0.0);
    }
}
