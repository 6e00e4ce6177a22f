//! Writing event socket frames the way FreeSWITCH writes them, so that tests, benchmarks and the simulator
//! can speak the protocol.
//!
//! Event bodies follow FreeSWITCH's plain serialisation: one `Name: value\n` line per header with the value
//! percent-encoded by [`percent::encode_into`] (`_undef_` when empty), then either a blank line, or
//! `Content-Length: N`, a blank line and the body. The frame around an event is
//! `Content-Length: N\nContent-Type: text/event-plain\n\n` followed by the serialised event.
//!
//! [`write_call_event`] adds the headers FreeSWITCH 1.10 puts on a channel event besides the ones the engine
//! reads — host and date stamps, channel state, codecs, the caller profile, the other leg's profile and the
//! channel variables (growing over the call's life as in a real switch) — so that written events have the
//! size and shape of real ones (about 150 headers, 2–4 KB).

use std::fmt::Write as _;

use crate::percent;
use rtc_engine::event::{CallEvent, Direction, EventKind};
use rtc_engine::id::CallId;

/// The facts FreeSWITCH stamps on every event about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Host {
    /// `Core-UUID`: the switch's run id.
    pub core_uuid: CallId,
    /// `FreeSWITCH-Hostname` and `FreeSWITCH-Switchname`.
    pub hostname: String,
    /// `FreeSWITCH-IPv4`, also the SIP profile's address.
    pub ipv4: String,
    /// `FreeSWITCH-IPv6`.
    pub ipv6: String,
}

impl Default for Host {
    fn default() -> Self {
        Host {
            core_uuid: CallId::from_u128(0x6f0c_1d2e_3b4a_4c5d_8e9f_a0b1_c2d3_e4f5),
            hostname: "fs1.example.net".to_string(),
            ipv4: "192.0.2.10".to_string(),
            ipv6: "2001:db8::10".to_string(),
        }
    }
}

/// Appends one serialised header line.
fn header(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    percent::encode_into(value.as_bytes(), out);
    out.push(b'\n');
}

/// Ends a serialised event: a blank line, or the body with its `Content-Length`.
fn end_event(out: &mut Vec<u8>, body: Option<&str>) {
    match body {
        Some(b) if !b.is_empty() => {
            let _ = write!(Bytes(out), "Content-Length: {}\n\n{b}", b.len());
        }
        _ => out.push(b'\n'),
    }
}

/// `fmt::Write` into a byte vector.
struct Bytes<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Bytes<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// Serialises an event given as header pairs (and an optional body) as FreeSWITCH's plain format.
pub fn serialize_event(headers: &[(&str, &str)], body: Option<&str>, out: &mut Vec<u8>) {
    for (n, v) in headers {
        header(out, n, v);
    }
    end_event(out, body);
}

/// Wraps a serialised event in its `text/event-plain` frame.
pub fn write_event_frame(event: &[u8], out: &mut Vec<u8>) {
    let _ = write!(
        Bytes(out),
        "Content-Length: {}\nContent-Type: text/event-plain\n\n",
        event.len()
    );
    out.extend_from_slice(event);
}

/// `auth/request`, the first thing the server says.
pub fn write_auth_request(out: &mut Vec<u8>) {
    out.extend_from_slice(b"Content-Type: auth/request\n\n");
}

/// A `command/reply` with `Reply-Text: text` (e.g. `+OK accepted`, `-ERR invalid`).
pub fn write_command_reply(text: &str, out: &mut Vec<u8>) {
    let _ = write!(
        Bytes(out),
        "Content-Type: command/reply\nReply-Text: {text}\n\n"
    );
}

/// The `command/reply` to a `bgapi`: accepted, with the job's id.
pub fn write_bgapi_reply(job_uuid: &str, out: &mut Vec<u8>) {
    let _ = write!(
        Bytes(out),
        "Content-Type: command/reply\nReply-Text: +OK Job-UUID: {job_uuid}\nJob-UUID: {job_uuid}\n\n"
    );
}

/// An `api/response` with `body` (FreeSWITCH sends `-ERR no reply\n` for an empty one).
pub fn write_api_response(body: &str, out: &mut Vec<u8>) {
    let body = if body.is_empty() {
        "-ERR no reply\n"
    } else {
        body
    };
    let _ = write!(
        Bytes(out),
        "Content-Type: api/response\nContent-Length: {}\n\n{body}",
        body.len()
    );
}

/// A `text/disconnect-notice` with `text` as its body.
pub fn write_disconnect_notice(text: &str, out: &mut Vec<u8>) {
    let _ = write!(
        Bytes(out),
        "Content-Type: text/disconnect-notice\nContent-Length: {}\n\n{text}",
        text.len()
    );
}

/// A `text/rude-rejection` with `text` as its body.
pub fn write_rude_rejection(text: &str, out: &mut Vec<u8>) {
    let _ = write!(
        Bytes(out),
        "Content-Type: text/rude-rejection\nContent-Length: {}\n\n{text}",
        text.len()
    );
}

/// The event stamp FreeSWITCH puts first on every event (`Event-Name` .. `Event-Sequence`).
fn stamp(
    out: &mut Vec<u8>,
    host: &Host,
    name: &str,
    sequence: u64,
    timestamp_us: u64,
    calling: (&str, &str, u32),
) {
    let mut core = [0u8; 36];
    header(out, "Event-Name", name);
    header(out, "Core-UUID", host.core_uuid.encode(&mut core));
    header(out, "FreeSWITCH-Hostname", &host.hostname);
    header(out, "FreeSWITCH-Switchname", &host.hostname);
    header(out, "FreeSWITCH-IPv4", &host.ipv4);
    header(out, "FreeSWITCH-IPv6", &host.ipv6);
    let (local, gmt) = dates(timestamp_us);
    header(out, "Event-Date-Local", &local);
    header(out, "Event-Date-GMT", &gmt);
    header(out, "Event-Date-Timestamp", &timestamp_us.to_string());
    header(out, "Event-Calling-File", calling.0);
    header(out, "Event-Calling-Function", calling.1);
    header(out, "Event-Calling-Line-Number", &calling.2.to_string());
    header(out, "Event-Sequence", &sequence.to_string());
}

/// `Event-Date-Local` (`2024-05-01 12:00:00`, as UTC here) and `Event-Date-GMT` (RFC 822) for a timestamp.
fn dates(timestamp_us: u64) -> (String, String) {
    let secs = timestamp_us / 1_000_000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, rem / 60 % 60, rem % 60);
    // Days since 1970-01-01 to a civil date (proleptic Gregorian), after H. Hinnant's `civil_from_days`.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    const WD: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MON: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let wd = WD[days.rem_euclid(7) as usize];
    (
        format!("{y:04}-{mo:02}-{d:02} {h:02}:{m:02}:{s:02}"),
        format!(
            "{wd}, {d:02} {} {y:04} {h:02}:{m:02}:{s:02} GMT",
            MON[(mo - 1) as usize]
        ),
    )
}

/// Where FreeSWITCH raises each event (`Event-Calling-*`), and the channel state it reports then.
fn origin(
    kind: EventKind,
) -> (
    (&'static str, &'static str, u32),
    &'static str,
    u8,
    &'static str,
) {
    use EventKind::*;
    match kind {
        ChannelCreate => (
            (
                "switch_core_state_machine.c",
                "switch_core_session_run",
                613,
            ),
            "CS_INIT",
            2,
            "DOWN",
        ),
        ChannelPark => (
            ("switch_ivr.c", "switch_ivr_park", 1003),
            "CS_EXECUTE",
            4,
            "RINGING",
        ),
        ChannelProgress => (
            (
                "switch_channel.c",
                "switch_channel_perform_mark_ring_ready_value",
                3870,
            ),
            "CS_CONSUME_MEDIA",
            7,
            "RINGING",
        ),
        ChannelProgressMedia => (
            (
                "switch_channel.c",
                "switch_channel_perform_mark_pre_answered",
                3952,
            ),
            "CS_CONSUME_MEDIA",
            7,
            "EARLY",
        ),
        ChannelAnswer => (
            (
                "switch_channel.c",
                "switch_channel_perform_mark_answered",
                4155,
            ),
            "CS_EXECUTE",
            4,
            "ACTIVE",
        ),
        ChannelBridge => (
            (
                "switch_ivr_bridge.c",
                "switch_ivr_multi_threaded_bridge",
                1680,
            ),
            "CS_EXCHANGE_MEDIA",
            5,
            "ACTIVE",
        ),
        ChannelUnbridge => (
            (
                "switch_ivr_bridge.c",
                "switch_ivr_multi_threaded_bridge",
                1798,
            ),
            "CS_EXECUTE",
            4,
            "ACTIVE",
        ),
        ChannelHangup => (
            ("switch_channel.c", "switch_channel_perform_hangup", 3604),
            "CS_HANGUP",
            10,
            "HANGUP",
        ),
        ChannelHangupComplete => (
            (
                "switch_core_state_machine.c",
                "switch_core_session_reporting_state",
                1005,
            ),
            "CS_REPORTING",
            11,
            "HANGUP",
        ),
        ChannelDestroy => (
            (
                "switch_core_session.c",
                "switch_core_session_perform_destroy",
                1746,
            ),
            "CS_DESTROY",
            12,
            "HANGUP",
        ),
    }
}

/// How far the call has come at this event, which decides which variables and times exist.
fn phase(kind: EventKind) -> (bool, bool) {
    use EventKind::*;
    let answered = !matches!(
        kind,
        ChannelCreate | ChannelPark | ChannelProgress | ChannelProgressMedia
    );
    let ended = matches!(kind, ChannelHangup | ChannelHangupComplete | ChannelDestroy);
    (answered, ended)
}

/// Appends a whole `text/event-plain` frame for `ev`, with `Event-Name` FreeSWITCH's name for its kind.
pub fn write_call_event(ev: &CallEvent, host: &Host, out: &mut Vec<u8>) {
    write_channel_event_named(ev.kind.name(), ev, host, out);
}

/// Appends a `text/event-plain` frame with the full channel headers of `ev` but the given `Event-Name`:
/// for channel events the engine does not follow (`CHANNEL_EXECUTE`, `CHANNEL_STATE`, ...), which are as
/// large as the ones it does.
pub fn write_channel_event_named(name: &str, ev: &CallEvent, host: &Host, out: &mut Vec<u8>) {
    let mut body = Vec::with_capacity(4096);
    serialize_channel_event(name, ev, host, &mut body);
    write_event_frame(&body, out);
}

/// Serialises the event itself (without the outer frame).
pub fn serialize_channel_event(name: &str, ev: &CallEvent, host: &Host, out: &mut Vec<u8>) {
    let (calling, state, state_num, call_state) = origin(ev.kind);
    let (answered, ended) = phase(ev.kind);
    let mut ubuf = [0u8; 36];
    let uuid = ev.uuid.encode(&mut ubuf).to_string();
    let other = ev.other_leg.map(|o| o.to_string());
    let outbound = ev.direction == Direction::Outbound;
    let dir = if outbound { "outbound" } else { "inbound" };
    // No address: no Caller-Network-Addr header (and empty SIP address variables).
    let ip = ev.source_ip.map(|i| i.to_string()).unwrap_or_default();
    let t0 = ev
        .timestamp_us
        .saturating_sub(if ended { 65_000_000 } else { 2_000_000 });
    let t_answer = if answered { t0 + 4_210_000 } else { 0 };
    let t_hangup = if ended { ev.timestamp_us } else { 0 };
    let t_bridge = if answered { t0 + 4_230_000 } else { 0 };
    let caller = ev.caller.as_str();
    let dest = ev.destination.as_str();
    let chan = if outbound {
        format!("sofia/external/{dest}@203.0.113.20:5060")
    } else {
        format!("sofia/internal/{caller}@{}", host.ipv4)
    };

    stamp(out, host, name, ev.sequence, ev.timestamp_us, calling);
    if matches!(
        ev.kind,
        EventKind::ChannelBridge | EventKind::ChannelUnbridge
    ) && let Some(o) = &other
    {
        let (a, b) = if outbound {
            (o.as_str(), uuid.as_str())
        } else {
            (uuid.as_str(), o.as_str())
        };
        header(out, "Bridge-A-Unique-ID", a);
        header(out, "Bridge-B-Unique-ID", b);
    }
    header(out, "Channel-State", state);
    header(out, "Channel-Call-State", call_state);
    header(out, "Channel-State-Number", &state_num.to_string());
    header(out, "Channel-Name", &chan);
    header(out, "Unique-ID", &uuid);
    header(out, "Call-Direction", dir);
    header(out, "Presence-Call-Direction", dir);
    header(
        out,
        "Channel-HIT-Dialplan",
        if outbound { "false" } else { "true" },
    );
    header(
        out,
        "Channel-Presence-ID",
        &format!("{caller}@{}", host.ipv4),
    );
    header(out, "Channel-Call-UUID", &uuid);
    let answer_state = if ended {
        "hangup"
    } else if answered {
        "answered"
    } else if ev.kind == EventKind::ChannelProgressMedia {
        "early"
    } else {
        "ringing"
    };
    header(out, "Answer-State", answer_state);
    if let Some(c) = ev.hangup_cause {
        // FreeSWITCH prints UNKNOWN for a code it has no name for.
        header(out, "Hangup-Cause", c.name().unwrap_or("UNKNOWN"));
    }
    if ev.kind != EventKind::ChannelCreate {
        for side in ["Read", "Write"] {
            header(out, &format!("Channel-{side}-Codec-Name"), "PCMA");
            header(out, &format!("Channel-{side}-Codec-Rate"), "8000");
            header(out, &format!("Channel-{side}-Codec-Bit-Rate"), "64000");
        }
    }
    profile(
        out,
        "Caller",
        ev,
        &uuid,
        &chan,
        &ip,
        dir,
        Some((t0, t_answer, t_hangup, t_bridge)),
    );
    if let Some(o) = &other {
        header(
            out,
            "Other-Type",
            if outbound { "originator" } else { "originatee" },
        );
        let other_chan = if outbound {
            format!("sofia/internal/{caller}@{}", host.ipv4)
        } else {
            format!("sofia/external/{dest}@203.0.113.20:5060")
        };
        let other_dir = if outbound { "inbound" } else { "outbound" };
        profile(out, "Other-Leg", ev, o, &other_chan, &ip, other_dir, None);
    }
    variables(
        out,
        ev,
        host,
        &uuid,
        other.as_deref(),
        &chan,
        &ip,
        (t0, t_answer, t_hangup),
    );
    end_event(out, None);
}

/// A caller profile (`Caller-*` or `Other-Leg-*`); with `times`, the whole profile.
#[allow(clippy::too_many_arguments)]
fn profile(
    out: &mut Vec<u8>,
    prefix: &str,
    ev: &CallEvent,
    uuid: &str,
    chan: &str,
    ip: &str,
    dir: &str,
    times: Option<(u64, u64, u64, u64)>,
) {
    let mut h = |name: &str, value: &str| header(out, &format!("{prefix}-{name}"), value);
    h("Direction", dir);
    h("Logical-Direction", dir);
    if !ev.auth_user.is_empty() {
        h("Username", &ev.auth_user);
    }
    h("Dialplan", "XML");
    h("Caller-ID-Name", "José Müller");
    if !ev.caller.is_empty() {
        h("Caller-ID-Number", &ev.caller);
        h("Orig-Caller-ID-Name", "José Müller");
        h("Orig-Caller-ID-Number", &ev.caller);
    }
    if !ev.destination.is_empty() {
        h("Callee-ID-Name", "Outbound Call");
        h("Callee-ID-Number", &ev.destination);
    }
    if !ip.is_empty() {
        h("Network-Addr", ip);
    }
    if !ev.caller.is_empty() {
        h("ANI", &ev.caller);
    }
    if !ev.destination.is_empty() {
        h("Destination-Number", &ev.destination);
    }
    h("Unique-ID", uuid);
    h("Source", "mod_sofia");
    h(
        "Context",
        if ev.context.is_empty() {
            "public"
        } else {
            &ev.context
        },
    );
    h("Channel-Name", chan);
    // The other leg's profile is written short: its times are on its own events.
    let Some((t0, answered, hangup, bridged)) = times else {
        return;
    };
    h("Profile-Index", "1");
    h("Profile-Created-Time", &t0.to_string());
    h("Channel-Created-Time", &t0.to_string());
    h("Channel-Answered-Time", &answered.to_string());
    h(
        "Channel-Progress-Time",
        &if answered > 0 { t0 + 1_200_000 } else { 0 }.to_string(),
    );
    h(
        "Channel-Progress-Media-Time",
        &if answered > 0 { t0 + 1_300_000 } else { 0 }.to_string(),
    );
    h("Channel-Hangup-Time", &hangup.to_string());
    h("Channel-Transfer-Time", "0");
    h("Channel-Resurrect-Time", "0");
    h("Channel-Bridged-Time", &bridged.to_string());
    h("Channel-Last-Hold", "0");
    h("Channel-Hold-Accum", "0");
    h("Screen-Bit", "true");
    h("Privacy-Hide-Name", "false");
    h("Privacy-Hide-Number", "false");
}

/// The channel variables, as a sofia channel carries them at each point of a call.
#[allow(clippy::too_many_arguments)]
fn variables(
    out: &mut Vec<u8>,
    ev: &CallEvent,
    host: &Host,
    uuid: &str,
    other: Option<&str>,
    chan: &str,
    ip: &str,
    times: (u64, u64, u64),
) {
    let (t0, t_answer, t_hangup) = times;
    let (answered, ended) = phase(ev.kind);
    let outbound = ev.direction == Direction::Outbound;
    let caller = ev.caller.as_str();
    let dest = ev.destination.as_str();
    let mut v = |name: &str, value: &str| header(out, &format!("variable_{name}"), value);
    let call_id = format!("{}@{ip}", &uuid[..18]);
    v("direction", if outbound { "outbound" } else { "inbound" });
    v("uuid", uuid);
    v("session_id", &(ev.sequence % 100_000).to_string());
    v("sip_from_user", caller);
    v("sip_from_uri", &format!("{caller}@{ip}"));
    v("sip_from_host", ip);
    v(
        "audio_media_flow",
        if answered { "sendrecv" } else { "disabled" },
    );
    v("channel_name", chan);
    v("sip_call_id", &call_id);
    v("sip_local_network_addr", &host.ipv4);
    v("sip_network_ip", ip);
    v("sip_network_port", "5060");
    v("sip_invite_stamp", &t0.to_string());
    v("sip_received_ip", ip);
    v("sip_via_protocol", "udp");
    if !ev.auth_user.is_empty() {
        v("sip_authorized", "true");
        v("sip_auth_username", &ev.auth_user);
        v("sip_auth_realm", ip);
    } else {
        v("sip_acl_authed_by", "domains");
    }
    v("sip_from_tag", "g7Fh2KQ9p1");
    v(
        "sofia_profile_name",
        if outbound { "external" } else { "internal" },
    );
    v("sip_from_display", "José Müller");
    v("sip_full_to", &format!("<sip:{dest}@{}>", host.ipv4));
    v("sip_req_user", dest);
    v("sip_req_uri", &format!("{dest}@{}", host.ipv4));
    v("sip_req_host", &host.ipv4);
    v("sip_to_user", dest);
    v("sip_to_uri", &format!("{dest}@{}", host.ipv4));
    v("sip_to_host", &host.ipv4);
    v("sip_contact_user", caller);
    v("sip_contact_port", "5060");
    v("sip_contact_host", ip);
    v("sip_via_host", ip);
    v("max_forwards", "69");
    v("call_uuid", uuid);
    v(
        "current_application",
        if answered { "bridge" } else { "park" },
    );
    v("rtc_partner", "acme-voice");
    if !outbound {
        // Set by the dialplan before `park`: the engine drives the parked call.
        v("rtc_core", "true");
    }
    if outbound && let Some(a) = other {
        v("rtc_a_leg", a);
    }
    if ev.kind != EventKind::ChannelCreate {
        v("rtp_remote_audio_rtcp_port", "8001");
        v("rtp_audio_recv_pt", "8");
        v("rtp_use_codec_name", "PCMA");
        v("rtp_use_codec_rate", "8000");
        v("rtp_use_codec_ptime", "20");
        v("rtp_last_audio_codec_string", "PCMA@8000h@20i@1c");
        v("read_codec", "PCMA");
        v("read_rate", "8000");
        v("write_codec", "PCMA");
        v("write_rate", "8000");
        v("dtmf_type", "rfc2833");
        v("local_media_ip", &host.ipv4);
        v("rtp_use_pt", "8");
        v("remote_media_ip", ip);
    }
    if answered {
        v("endpoint_disposition", "ANSWER");
        v("rtc_rate", "0.0125");
        v("rtc_route", "carrier-a");
        v("originate_disposition", "SUCCESS");
        v("last_bridge_to", other.unwrap_or(""));
        v("bridge_uuid", other.unwrap_or(""));
        v("sip_to_tag", "as5f1c9a2b");
        v("last_sent_callee_id_number", dest);
    }
    if ended {
        let cause = ev
            .hangup_cause
            .map(|c| c.name().unwrap_or("UNKNOWN"))
            .unwrap_or("NORMAL_CLEARING");
        let q850 = ev.hangup_cause.map(|c| c.0).unwrap_or(16);
        let secs = |a: u64, b: u64| (b.saturating_sub(a) / 1_000_000).to_string();
        let (d0, _) = dates(t0);
        let (da, _) = dates(t_answer);
        let (dh, _) = dates(t_hangup);
        v("hangup_cause", cause);
        v("hangup_cause_q850", &q850.to_string());
        v("digits_dialed", "none");
        v("start_stamp", &d0);
        v("answer_stamp", &da);
        v("end_stamp", &dh);
        v("start_epoch", &(t0 / 1_000_000).to_string());
        v("start_uepoch", &t0.to_string());
        v("answer_epoch", &(t_answer / 1_000_000).to_string());
        v("end_epoch", &(t_hangup / 1_000_000).to_string());
        v("duration", &secs(t0, t_hangup));
        v("billsec", &secs(t_answer, t_hangup));
        v(
            "billmsec",
            &((t_hangup.saturating_sub(t_answer)) / 1000).to_string(),
        );
        v("sip_hangup_disposition", "recv_bye");
        v("sip_term_status", "200");
        v("proto_specific_hangup_cause", "sip:200");
        v("rtp_audio_in_raw_bytes", "982720");
        v("rtp_audio_in_packet_count", "5714");
        v("rtp_audio_in_mos", "4.48");
        v("rtp_audio_out_raw_bytes", "979280");
        v("rtp_audio_out_packet_count", "5694");
    }
}

/// Appends a `BACKGROUND_JOB` event frame carrying a bgapi result (`body`, any text).
#[allow(clippy::too_many_arguments)]
pub fn write_background_job(
    host: &Host,
    job_uuid: &str,
    command: &str,
    arg: Option<&str>,
    result: &str,
    sequence: u64,
    timestamp_us: u64,
    out: &mut Vec<u8>,
) {
    let mut body = Vec::with_capacity(1024 + result.len());
    stamp(
        &mut body,
        host,
        "BACKGROUND_JOB",
        sequence,
        timestamp_us,
        ("mod_event_socket.c", "api_exec", 1572),
    );
    header(&mut body, "Job-UUID", job_uuid);
    header(&mut body, "Job-Owner-UUID", "");
    header(&mut body, "Job-Command", command);
    if let Some(a) = arg {
        header(&mut body, "Job-Command-Arg", a);
    }
    end_event(&mut body, Some(result));
    write_event_frame(&body, out);
}

/// Appends a `HEARTBEAT` event frame (an event the engine does not follow).
pub fn write_heartbeat(host: &Host, sequence: u64, timestamp_us: u64, out: &mut Vec<u8>) {
    let mut body = Vec::with_capacity(1024);
    stamp(
        &mut body,
        host,
        "HEARTBEAT",
        sequence,
        timestamp_us,
        ("switch_core.c", "send_heartbeat", 87),
    );
    let pairs: [(&str, &str); 14] = [
        ("Event-Info", "System Ready"),
        (
            "Up-Time",
            "0 years, 0 days, 2 hours, 14 minutes, 3 seconds, 120 milliseconds, 4 microseconds",
        ),
        ("FreeSWITCH-Version", "1.10.12-release~64bit"),
        ("Uptime-msec", "8043120"),
        ("Session-Count", "212"),
        ("Max-Sessions", "5000"),
        ("Session-Per-Sec", "300"),
        ("Session-Per-Sec-Last", "287"),
        ("Session-Per-Sec-Max", "331"),
        ("Session-Per-Sec-FiveMin", "290"),
        ("Session-Since-Startup", "1204511"),
        ("Session-Peak-Max", "640"),
        ("Idle-CPU", "41.000000"),
        ("Heartbeat-Interval", "20"),
    ];
    for (n, v) in pairs {
        header(&mut body, n, v);
    }
    end_event(&mut body, None);
    write_event_frame(&body, out);
}
