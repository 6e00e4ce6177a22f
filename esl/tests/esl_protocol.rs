//! The event socket protocol layer against real-shaped input: full FreeSWITCH 1.10 channel events (the
//! fixtures under `tests/fixtures/esl/`, written independently of `esl::write`), streams split at every
//! byte, malformed frames, and writer→parser round trips.

use std::net::IpAddr;

use rtc_engine::{CallEvent, CallId, Direction, EventKind, HangupCause};
use rtc_esl::write::{self, Host};
use rtc_esl::{
    ContentType, Decoder, EslError, EslMessage, EventParser, FrameError, Framer, FramerConfig,
};

const A_LEG: &str = "8f3e2b1a-5c4d-4e6f-9a7b-1c2d3e4f5a6b";
const B_LEG: &str = "d41d8cd9-8f00-4b20-9e98-0ecf8427e0a1";

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/esl/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn frame_event(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    write::write_event_frame(body, &mut out);
    out
}

fn id(s: &str) -> CallId {
    CallId::parse(s).unwrap()
}

/// The three fixtures as the engine must see them.
fn expected() -> Vec<CallEvent> {
    let mut create = CallEvent::new(id(A_LEG), EventKind::ChannelCreate, 40213377);
    create.timestamp_us = 1741940713041201;
    create.caller = "+4930123456".into();
    create.destination = "+33 1 42 68 53 00".into();
    create.source_ip = Some("2001:db8:7::15".parse::<IpAddr>().unwrap());
    create.auth_user = "pbx-müller".into();
    create.context = "public".into();

    let mut answer = CallEvent::new(id(B_LEG), EventKind::ChannelAnswer, 40213412);
    answer.timestamp_us = 1741940717254310;
    answer.direction = Direction::Outbound;
    answer.other_leg = Some(id(A_LEG));
    answer.caller = "+4930123456".into();
    answer.destination = "+33142685300".into();
    answer.source_ip = Some("192.0.2.44".parse::<IpAddr>().unwrap());
    answer.auth_user = "pbx-müller".into();
    answer.context = "public".into();

    let mut hangup = create.clone();
    hangup.kind = EventKind::ChannelHangupComplete;
    hangup.sequence = 40213950;
    hangup.timestamp_us = 1741940813041201;
    hangup.other_leg = Some(id(B_LEG));
    hangup.hangup_cause = Some(HangupCause::NORMAL_CLEARING);
    vec![create, answer, hangup]
}

/// A stream mixing every kind of frame: auth, replies, the three fixtures, an ignored event, a background
/// job whose body has lines without a colon, a log line and a disconnect notice.
fn mixed_stream() -> Vec<u8> {
    let host = Host::default();
    let mut s = Vec::new();
    write::write_auth_request(&mut s);
    write::write_command_reply("+OK accepted", &mut s);
    write::write_bgapi_reply("7f4db8e2-1b1c-4a0e-9d55-3f1e2a3b4c5d", &mut s);
    for f in ["channel_create.txt", "channel_answer.txt"] {
        s.extend_from_slice(&frame_event(&fixture(f)));
    }
    write::write_heartbeat(&host, 9, 1, &mut s);
    write::write_background_job(
        &host,
        "7f4db8e2-1b1c-4a0e-9d55-3f1e2a3b4c5d",
        "originate",
        Some("sofia/gateway/x/123 &park"),
        "-ERR NO_ROUTE_DESTINATION\nno colon on this line\n\nnor: on the one before\n",
        10,
        2,
        &mut s,
    );
    s.extend_from_slice(&frame_event(&fixture("channel_hangup_complete.txt")));
    write::write_api_response("+OK 3 channels\n", &mut s);
    s.extend_from_slice(
        b"Content-Type: log/data\nContent-Length: 12\nLog-Level: 4\nText-Channel: 3\n\nhello world\n",
    );
    write::write_disconnect_notice("Disconnected, goodbye.\nSee you at ClueCon!\n", &mut s);
    s
}

fn decode_all(d: &mut Decoder, out: &mut Vec<Result<EslMessage, EslError>>) {
    while let Some(m) = d.next_message() {
        out.push(m);
    }
}

fn check_mixed(msgs: &[Result<EslMessage, EslError>]) {
    let events = expected();
    let got: Vec<&EslMessage> = msgs.iter().map(|m| m.as_ref().unwrap()).collect();
    assert_eq!(got.len(), 10, "{got:#?}");
    assert_eq!(got[0], &EslMessage::AuthRequest);
    assert!(matches!(got[1], EslMessage::CommandReply(r) if r.ok && r.text == "+OK accepted"));
    assert!(matches!(got[2], EslMessage::CommandReply(r)
        if r.ok && r.job_uuid.as_deref() == Some("7f4db8e2-1b1c-4a0e-9d55-3f1e2a3b4c5d")));
    assert_eq!(got[3], &EslMessage::Event(events[0].clone()));
    assert_eq!(got[4], &EslMessage::Event(events[1].clone()));
    let EslMessage::BackgroundJob(job) = got[5] else {
        panic!("{:?}", got[5])
    };
    assert_eq!(job.job_uuid, "7f4db8e2-1b1c-4a0e-9d55-3f1e2a3b4c5d");
    assert_eq!(job.command, "originate");
    assert!(!job.ok);
    assert_eq!(
        job.body,
        "-ERR NO_ROUTE_DESTINATION\nno colon on this line\n\nnor: on the one before\n"
    );
    assert_eq!(got[6], &EslMessage::Event(events[2].clone()));
    assert!(matches!(got[7], EslMessage::ApiResponse(r) if r.ok && r.text == "+OK 3 channels"));
    assert!(matches!(got[8], EslMessage::Log { level: Some(4), text } if text == "hello world\n"));
    assert!(matches!(got[9], EslMessage::Disconnect { text } if text.contains("ClueCon")));
}

#[test]
fn fixtures_have_real_size_and_parse_to_the_engines_fields() {
    let mut p = EventParser::new();
    for (name, want) in [
        "channel_create.txt",
        "channel_answer.txt",
        "channel_hangup_complete.txt",
    ]
    .into_iter()
    .zip(expected())
    {
        let body = fixture(name);
        let lines = body.split(|&b| b == b'\n').count();
        assert!(
            body.len() > 2000 && lines > 100,
            "{name}: {} bytes",
            body.len()
        );
        let got = p.parse_event(&body).unwrap();
        assert_eq!(got, Some(EslMessage::Event(want)), "{name}");
    }
    assert_eq!(p.stats().lossy_values, 0);
    assert_eq!(p.stats().unusable_values, 0);
}

#[test]
fn mixed_stream_in_one_piece() {
    let s = mixed_stream();
    let mut d = Decoder::default();
    d.push(&s);
    let mut out = Vec::new();
    decode_all(&mut d, &mut out);
    check_mixed(&out);
    assert_eq!(d.framer.buffered(), 0);
}

#[test]
fn mixed_stream_split_at_every_byte() {
    let s = mixed_stream();
    for cut in 0..=s.len() {
        let mut d = Decoder::default();
        let mut out = Vec::new();
        d.push(&s[..cut]);
        decode_all(&mut d, &mut out);
        d.push(&s[cut..]);
        decode_all(&mut d, &mut out);
        check_mixed(&out);
    }
}

#[test]
fn mixed_stream_one_byte_at_a_time_and_in_odd_chunks() {
    let s = mixed_stream();
    for size in [1, 2, 3, 7, 64, 1000, 4096] {
        let mut d = Decoder::default();
        let mut out = Vec::new();
        for c in s.chunks(size) {
            d.push(c);
            decode_all(&mut d, &mut out);
        }
        check_mixed(&out);
    }
}

/// What is wrong, the bad frame, and the error expected for it.
type MalformedCase = (&'static str, Vec<u8>, fn(&FrameError) -> bool);

#[test]
fn every_malformed_frame_is_typed_and_followed_by_recovery() {
    let good = b"Content-Type: command/reply\nReply-Text: +OK\n\n";
    let cases: Vec<MalformedCase> = vec![
        (
            "content length not a number",
            b"Content-Type: api/response\nContent-Length: 12abc\n\n".to_vec(),
            |e| matches!(e, FrameError::BadContentLength { .. }),
        ),
        (
            "negative content length",
            b"Content-Type: api/response\nContent-Length: -5\n\n".to_vec(),
            |e| matches!(e, FrameError::BadContentLength { .. }),
        ),
        (
            "content length beyond max_skip",
            b"Content-Type: api/response\nContent-Length: 99999999999999\n\n".to_vec(),
            |e| matches!(e, FrameError::BadContentLength { .. }),
        ),
        (
            "content length overflowing u64",
            b"Content-Type: api/response\nContent-Length: 184467440737095516160\n\n".to_vec(),
            |e| matches!(e, FrameError::BadContentLength { .. }),
        ),
        (
            "header line without colon",
            b"Content-Type: api/response\nthis line has none\n\n".to_vec(),
            |e| matches!(e, FrameError::HeaderWithoutColon { .. }),
        ),
        (
            "binary garbage",
            b"\x00\x01\x02\xff\xfe\xfd garbage \x80\x81\n\n".to_vec(),
            |e| matches!(e, FrameError::MalformedHeader { .. }),
        ),
        (
            "control byte in a value",
            b"Content-Type: api/response\x07\n\n".to_vec(),
            |e| matches!(e, FrameError::MalformedHeader { .. }),
        ),
        (
            "space in a header name",
            b"Content Type: api/response\n\n".to_vec(),
            |e| matches!(e, FrameError::MalformedHeader { .. }),
        ),
        ("no content type", b"Reply-Text: +OK\n\n".to_vec(), |e| {
            matches!(e, FrameError::MissingContentType { .. })
        }),
    ];
    for (what, bad, is_expected) in cases {
        let mut input = bad.clone();
        input.extend_from_slice(good);
        for cut in 0..=input.len() {
            let mut f = Framer::default();
            let mut results = Vec::new();
            for part in [&input[..cut], &input[cut..]] {
                f.push(part);
                while let Some(r) = f.next_frame() {
                    results.push(r.map(|fr| fr.content_type == ContentType::CommandReply));
                }
            }
            assert_eq!(results.len(), 2, "{what} cut {cut}: {results:?}");
            let err = results[0].as_ref().unwrap_err();
            assert!(is_expected(err), "{what}: {err}");
            assert!(err.to_string().contains("offset 0"), "{what}: {err}");
            assert_eq!(results[1], Ok(true), "{what} cut {cut}");
        }
    }
}

#[test]
fn oversize_frame_is_skipped_and_the_stream_stays_in_sync() {
    let cfg = FramerConfig {
        max_frame_size: 8 * 1024,
        ..FramerConfig::default()
    };
    let mut s = mixed_stream();
    let big = "x\n".repeat(20_000);
    let mut prefix = Vec::new();
    write::write_api_response(&big, &mut prefix);
    prefix.extend_from_slice(&s);
    s = prefix;
    for size in [1000, 4096, 65536] {
        let mut d = Decoder::new(FramerConfig {
            max_frame_size: 16 * 1024,
            ..cfg
        });
        let mut out = Vec::new();
        for c in s.chunks(size) {
            d.push(c);
            decode_all(&mut d, &mut out);
            assert!(d.framer.buffered() <= 16 * 1024 + size);
        }
        assert!(matches!(
            out.remove(0),
            Err(EslError::Frame(FrameError::FrameTooLarge { .. }))
        ));
        check_mixed(&out);
    }
}

#[test]
fn percent_decoding_handles_utf8_and_broken_escapes() {
    let mut body = format!(
        "Event-Name: CHANNEL_PARK\nEvent-Sequence: 5\nEvent-Date-Timestamp: 6\nUnique-ID: {A_LEG}\n"
    );
    // 東京 split in escapes, an invalid UTF-8 sequence, a bad escape and a truncated one.
    body.push_str("Caller-Caller-ID-Number: %E6%9D%B1%E4%BA%AC\n");
    body.push_str("Caller-Destination-Number: %FF%FE12%ZZ%4\n");
    body.push_str("variable_sip_auth_username: caf%C3\n");
    body.push_str("Caller-Network-Addr: 2001%3Adb8%3A%3A1\n\n");
    let mut p = EventParser::new();
    let Some(EslMessage::Event(ev)) = p.parse_event(body.as_bytes()).unwrap() else {
        panic!()
    };
    assert_eq!(ev.caller, "東京");
    assert_eq!(ev.destination, "\u{fffd}\u{fffd}12%ZZ%4");
    assert_eq!(ev.auth_user, "caf\u{fffd}");
    assert_eq!(ev.source_ip, Some("2001:db8::1".parse().unwrap()));
    assert_eq!(p.stats().lossy_values, 2);
}

#[test]
fn undef_and_unusable_optional_values_are_empty() {
    let body = format!(
        "Event-Name: CHANNEL_HANGUP\nEvent-Sequence: 5\nEvent-Date-Timestamp: 6\nUnique-ID: {A_LEG}\n\
         Caller-Caller-ID-Number: _undef_\nCaller-Network-Addr: not-an-ip\nHangup-Cause: NO_SUCH_CAUSE\n\
         Other-Leg-Unique-ID: nonsense\nBridge-A-Unique-ID: {B_LEG}\n\n"
    );
    let mut p = EventParser::new();
    let Some(EslMessage::Event(ev)) = p.parse_event(body.as_bytes()).unwrap() else {
        panic!()
    };
    assert_eq!(ev.caller, "");
    assert_eq!(ev.source_ip, None);
    assert_eq!(ev.hangup_cause, None);
    assert_eq!(ev.other_leg, Some(id(B_LEG)));
    assert_eq!(p.stats().unusable_values, 3);
}

#[test]
fn other_leg_prefers_the_engines_mark() {
    let c = "00000000-0000-4000-8000-00000000000c";
    let body = format!(
        "Event-Name: CHANNEL_BRIDGE\nEvent-Sequence: 5\nEvent-Date-Timestamp: 6\nBridge-A-Unique-ID: {c}\n\
         Unique-ID: {B_LEG}\nOther-Leg-Unique-ID: {c}\nvariable_rtc_a_leg: {A_LEG}\n\n"
    );
    let Some(EslMessage::Event(ev)) = EventParser::new().parse_event(body.as_bytes()).unwrap()
    else {
        panic!()
    };
    assert_eq!(ev.other_leg, Some(id(A_LEG)));
}

#[test]
fn written_events_round_trip_for_every_kind() {
    let host = Host::default();
    let mut d = Decoder::default();
    for (i, kind) in EventKind::ALL.into_iter().enumerate() {
        for dir in [Direction::Inbound, Direction::Outbound] {
            let mut ev = CallEvent::new(CallId::from_u128(i as u128 + 1), kind, 100 + i as u64);
            ev.timestamp_us = 1_741_940_713_041_201 + i as u64;
            ev.direction = dir;
            ev.other_leg = Some(CallId::from_u128(0xabc));
            ev.caller = "+49 (30) 123/456".into();
            ev.destination = "Zoë#1;x=y".into();
            ev.source_ip = Some("2001:db8::7".parse().unwrap());
            ev.auth_user = "user@realm".into();
            ev.context = "carriers-in".into();
            if matches!(
                kind,
                EventKind::ChannelHangup
                    | EventKind::ChannelHangupComplete
                    | EventKind::ChannelDestroy
            ) {
                ev.hangup_cause = Some(HangupCause::USER_BUSY);
            }
            let mut s = Vec::new();
            write::write_call_event(&ev, &host, &mut s);
            d.push(&s);
            let got = d.next_message().unwrap().unwrap();
            assert_eq!(got, EslMessage::Event(ev), "{kind:?} {dir:?}");
            assert!(d.next_message().is_none());
        }
    }
}
