//! Property tests of the event socket protocol layer: arbitrary bytes in arbitrary pieces never panic and
//! never grow memory past the limit; garbage between frames costs only itself; written events parse back.

use proptest::prelude::*;

use rtc_engine::{CallEvent, CallId, Direction, EventKind, HangupCause};
use rtc_esl::percent;
use rtc_esl::write::{self, Host};
use rtc_esl::{Decoder, EslMessage, FramerConfig};

const MAX: usize = 16 * 1024;

fn config() -> FramerConfig {
    FramerConfig {
        max_frame_size: MAX,
        max_skip: 1 << 20,
    }
}

/// Splits `data` at the given cut points (taken modulo the length, sorted).
fn pieces<'a>(data: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
    at.sort_unstable();
    let mut out = Vec::new();
    let mut prev = 0;
    for c in at {
        out.push(&data[prev..c]);
        prev = c;
    }
    out.push(&data[prev..]);
    out
}

/// Feeds pieces, draining after each; checks the memory bound; returns the successful messages.
fn feed(d: &mut Decoder, parts: &[&[u8]]) -> Vec<EslMessage> {
    let mut ok = Vec::new();
    for p in parts {
        d.push(p);
        while let Some(m) = d.next_message() {
            if let Ok(m) = m {
                ok.push(m);
            }
        }
        assert!(
            d.framer.buffered() <= MAX + p.len(),
            "buffered {} after a push of {}",
            d.framer.buffered(),
            p.len()
        );
        assert!(d.framer.capacity() <= 4 * (MAX + p.len()) + (256 << 10));
    }
    ok
}

/// Bytes that look somewhat like the protocol, so that the framer's deeper paths are reached.
fn protocolish() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        Just(b"\n".to_vec()),
        Just(b"\n\n".to_vec()),
        Just(b"Content-Length: ".to_vec()),
        Just(b"Content-Type: text/event-plain\n".to_vec()),
        Just(b"Content-Type: api/response\n".to_vec()),
        Just(b"Event-Name: CHANNEL_CREATE\n".to_vec()),
        Just(b"Event-Name: BACKGROUND_JOB\n".to_vec()),
        Just(b"Unique-ID: 4b2a1c3e-9f10-4d2b-8a7e-0123456789ab\n".to_vec()),
        Just(b"Event-Sequence: 12\n".to_vec()),
        Just(b"%E6%9D%B1%ZZ%4".to_vec()),
        (0u32..100_000).prop_map(|n| n.to_string().into_bytes()),
        prop::collection::vec(any::<u8>(), 0..32),
    ];
    prop::collection::vec(token, 0..60).prop_map(|v| v.concat())
}

fn call_event() -> impl Strategy<Value = CallEvent> {
    let text = prop_oneof![
        Just(String::new()),
        "[+0-9 ]{1,16}",
        any::<String>().prop_map(|s| s.chars().take(24).collect()),
        Just("Zoë Ågren 東京 📞".to_string()),
        Just("100% %41 %zz %".to_string()),
    ];
    (
        any::<u128>(),
        0usize..EventKind::ALL.len(),
        any::<u64>(),
        any::<u64>(),
        any::<bool>(),
        proptest::option::of(any::<u128>()),
        (text.clone(), text.clone(), text),
        proptest::option::of(any::<[u8; 16]>()),
        proptest::option::of(prop_oneof![Just(16u16), Just(17), Just(487), Just(9999)]),
    )
        .prop_map(
            |(uuid, k, seq, ts, outbound, other, (caller, dest, auth), ip, cause)| {
                let mut e = CallEvent::new(CallId::from_u128(uuid), EventKind::ALL[k], seq);
                e.timestamp_us = ts;
                e.direction = if outbound {
                    Direction::Outbound
                } else {
                    Direction::Inbound
                };
                e.other_leg = other.map(CallId::from_u128);
                e.caller = caller.into();
                e.destination = dest.into();
                e.auth_user = auth.into();
                e.source_ip = ip.map(|b| {
                    if b[0] % 2 == 0 {
                        std::net::IpAddr::from([b[1], b[2], b[3], b[4]])
                    } else {
                        std::net::IpAddr::from(b)
                    }
                });
                e.hangup_cause = cause.map(HangupCause);
                e
            },
        )
}

/// What the parser must give back for a written value: FreeSWITCH's encoding passes `%XX` (upper-case hex)
/// through, so such a sequence comes back decoded, and an empty or `_undef_` value comes back empty.
fn through_the_wire(s: &str) -> String {
    let mut enc = Vec::new();
    percent::encode_into(s.as_bytes(), &mut enc);
    if enc == b"_undef_" {
        return String::new();
    }
    let mut dec = Vec::new();
    String::from_utf8_lossy(percent::decode_into(&enc, &mut dec)).into_owned()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_in_random_pieces_never_panic(
        data in prop::collection::vec(any::<u8>(), 0..20_000),
        cuts in prop::collection::vec(any::<usize>(), 0..40),
    ) {
        let mut d = Decoder::new(config());
        feed(&mut d, &pieces(&data, &cuts));
    }

    #[test]
    fn protocol_like_bytes_never_panic(
        data in protocolish(),
        cuts in prop::collection::vec(any::<usize>(), 0..40),
    ) {
        let mut d = Decoder::new(config());
        feed(&mut d, &pieces(&data, &cuts));
    }

    #[test]
    fn garbage_between_frames_costs_only_itself(
        garbage in prop::collection::vec(any::<u8>(), 0..3000),
        cuts in prop::collection::vec(any::<usize>(), 0..20),
        seq in 1u64..1000,
    ) {
        let host = Host::default();
        let mut ev = CallEvent::new(CallId::from_u128(7), EventKind::ChannelAnswer, seq);
        ev.caller = "+15551234567".into();
        ev.context = "public".into();
        let mut stream = Vec::new();
        write::write_call_event(&ev, &host, &mut stream);
        stream.extend_from_slice(&garbage);
        stream.extend_from_slice(b"\n\n");
        let mut tail = Vec::new();
        write::write_command_reply("+OK after garbage", &mut tail);
        ev.sequence += 1;
        write::write_call_event(&ev, &host, &mut tail);
        stream.extend_from_slice(&tail);
        let mut d = Decoder::new(config());
        let got = feed(&mut d, &pieces(&stream, &cuts));
        prop_assert!(got.len() >= 3, "{got:?}");
        prop_assert_eq!(&got[0], &EslMessage::Event({ let mut e = ev.clone(); e.sequence -= 1; e }));
        let n = got.len();
        prop_assert!(matches!(&got[n - 2], EslMessage::CommandReply(r) if r.text == "+OK after garbage"));
        prop_assert_eq!(&got[n - 1], &EslMessage::Event(ev));
    }

    #[test]
    fn written_events_parse_back_in_any_pieces(
        events in prop::collection::vec(call_event(), 1..5),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let host = Host::default();
        let mut stream = Vec::new();
        let mut want = Vec::new();
        for ev in &events {
            write::write_call_event(ev, &host, &mut stream);
            let mut w = ev.clone();
            w.caller = through_the_wire(&ev.caller).into();
            w.destination = through_the_wire(&ev.destination).into();
            w.auth_user = through_the_wire(&ev.auth_user).into();
            // The writer routes a call without a context in `public`, as FreeSWITCH's sample SIP profile does.
            w.context = if ev.context.is_empty() { "public".into() } else { through_the_wire(&ev.context).into() };
            // A code FreeSWITCH has no name for travels as UNKNOWN.
            w.hangup_cause = ev.hangup_cause.filter(|c| c.name().is_some());
            want.push(EslMessage::Event(w));
        }
        let mut d = Decoder::new(FramerConfig::default());
        let mut got = Vec::new();
        for p in pieces(&stream, &cuts) {
            d.push(p);
            while let Some(m) = d.next_message() {
                got.push(m.map_err(|e| e.to_string()));
            }
        }
        let got: Result<Vec<_>, _> = got.into_iter().collect();
        prop_assert_eq!(got, Ok(want));
    }
}
