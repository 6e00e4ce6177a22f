//! The ESL intake: bytes from FreeSWITCH's event socket in, the messages the engine acts on out.
//!
//! It wraps the [`Framer`] and [`EventParser`] and adds what running over ESL needs beyond parsing, so that
//! the live client ([`crate::client`]) and the offline replay of a recorded stream apply exactly the same
//! rules:
//!
//! - **Legs the engine placed are not calls.** A channel carrying `variable_rtc_a_leg` is part of a bridge
//!   the engine made. Outbound it is the b-leg (the parser ties it to its a-leg); *inbound* it is the far
//!   half of an internal endpoint (the `loopback/...-b` channel that runs the target context): it is
//!   dropped, never decided as a new call.
//! - **Channels without a transport address.** Internal endpoints (loopback, API originate) have no
//!   `Caller-Network-Addr`. Such a call is from an unknown partner — no caller-settable header is ever
//!   used instead — unless [`IntakeConfig::internal_source_ip`] explicitly names the address to assume.
//! - **Behind a SIP load balancer** ([`IntakeConfig::proxy`]): a new SIP call (its CHANNEL_CREATE, or the
//!   CHANNEL_PARK of one whose creation was missed) from a trusted proxy is identified by the address in the
//!   proxy's source header (`variable_sip_h_<name>`), as the module's event handler does ([`rtc_proxy`]); the
//!   header from anyone else is ignored and counted as a spoofing attempt, with a rate-limited warning. Counted on
//!   the CHANNEL_CREATE ([`IntakeStats::sources`]).
//! - **Bridges that fail without an outbound channel.** A dial string such as `error/...`, a gateway that
//!   is down or an unknown endpoint fails the `bridge` without creating a b-leg, so no b-leg hangup tells
//!   the engine to fail over. [`crate::client::EslCallControl`] queues, after each bridge (with
//!   `event-lock` so it runs only once the bridge returned), the `event` application firing a
//!   `CUSTOM rtc::bridge_end` event with the attempt number; its `variable_originate_disposition` says how
//!   the bridge ended. When it did not succeed and no b-leg was seen for that attempt, the intake hands the
//!   engine a synthetic outbound hangup for the attempt (cause: the disposition), exactly what a real b-leg
//!   would have said. When a b-leg existed, its own hangup already drove failover and the event is ignored.

use std::collections::HashMap;
use std::net::IpAddr;

use compact_str::CompactString;
use memchr::memmem;

use crate::EslError;
use crate::event::{EslMessage, EventParser};
use crate::frame::{ContentType, Framer, FramerConfig};
use crate::percent;
use rtc_engine::cause::HangupCause;
use rtc_engine::event::{CallEvent, Direction, EventKind};
use rtc_engine::id::CallId;
use rtc_proxy::{ProxyTrust, Reporter, SourceCounts};

/// `Event-Subclass` of the event fired after each engine bridge returns.
pub const BRIDGE_END_SUBCLASS: &str = "rtc::bridge_end";

/// Most a-legs whose bridge attempts are tracked at once; beyond it the table is cleared (a lost entry only
/// risks one extra failover step on a call whose bridge failed without a b-leg).
const MAX_TRACKED: usize = 200_000;

/// Rules of the intake that an operator chooses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IntakeConfig {
    /// Source address assumed for inbound channels that have no transport address (internal endpoints
    /// such as loopback). `None`: such calls are from an unknown partner.
    pub internal_source_ip: Option<IpAddr>,
    /// Behind a SIP load balancer: the trusted proxies and the header they write the caller's address in
    /// (`trusted-proxies`, `source-header`); `None`: every call is identified by its transport source.
    pub proxy: Option<ProxyTrust>,
}

/// Counters of the intake's own decisions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct IntakeStats {
    /// Frames received.
    pub frames: u64,
    /// Channel events handed on.
    pub events: u64,
    /// Inbound halves of engine-placed legs dropped.
    pub own_legs_dropped: u64,
    /// CHANNEL_PARK events of channels without `rtc_core=true` dropped: parked for something else.
    pub unmarked_parks: u64,
    /// Inbound events without a transport address given [`IntakeConfig::internal_source_ip`].
    pub internal_address_assumed: u64,
    /// Inbound events without a transport address left without one (unknown partner).
    pub no_address: u64,
    /// `rtc::bridge_end` events seen.
    pub bridge_ends: u64,
    /// Bridge failures without a b-leg turned into synthetic b-leg hangups.
    pub synthetic_b_hangups: u64,
    /// Framing or parsing errors (each recovered from).
    pub errors: u64,
    /// Behind a SIP load balancer: new SIP calls' source headers by outcome (`spoofed`: from a source that is not a
    /// trusted proxy, ignored).
    pub sources: SourceCounts,
}

/// What the intake knows and applies beyond parsing.
#[derive(Debug)]
struct Rules {
    /// Operator's rules.
    config: IntakeConfig,
    /// Per a-leg: a bit per bridge attempt (0..63) for which an outbound leg was created.
    b_legs: HashMap<CallId, u64, foldhash::fast::RandomState>,
    /// Counters.
    stats: IntakeStats,
    /// Percent-decoding scratch for the headers read here.
    scratch: Vec<u8>,
    /// The source header's two variables as events name them (`variable_sip_h_<name>`, `...-1`), when configured.
    source_vars: Option<[Vec<u8>; 2]>,
    /// Counts of, and warnings about, new calls' source headers.
    sources: Reporter,
}

/// Frames to engine messages. See the module docs.
#[derive(Debug)]
pub struct Intake {
    /// Splits the byte stream into frames; replaced on each new connection.
    framer: Framer,
    /// Framing limits, for the next connection's framer.
    framer_config: FramerConfig,
    /// Turns frames into messages.
    parser: EventParser,
    /// The rules applied to parsed events.
    rules: Rules,
    /// Whether whole frames are copied to `recorded`.
    recording: bool,
    /// Frames received since the last [`Intake::take_recorded`], byte for byte as they came.
    recorded: Vec<u8>,
}

impl Intake {
    /// An intake with `config`'s rules, framing with `framer_config`.
    pub fn new(config: IntakeConfig, framer_config: FramerConfig) -> Self {
        Intake {
            framer: Framer::new(framer_config),
            framer_config,
            parser: EventParser::new(),
            rules: Rules {
                source_vars: config.proxy.as_ref().map(|p| {
                    [p.header.variable(), p.header.repeated_variable()]
                        .map(|v| format!("variable_{v}").into_bytes())
                }),
                config,
                b_legs: HashMap::default(),
                stats: IntakeStats::default(),
                scratch: Vec::new(),
                sources: Reporter::new(),
            },
            recording: false,
            recorded: Vec::new(),
        }
    }

    /// Keeps a copy of every whole frame received (for `--record`). Frames cut by a dropped link are never
    /// complete, so a recording holds whole frames only and replays cleanly across reconnects.
    pub fn set_recording(&mut self, on: bool) {
        self.recording = on;
    }

    /// The frames recorded since the last call.
    pub fn take_recorded(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.recorded)
    }

    /// Starts a new stream (a new connection): partial frames of the old one are dropped; what is known
    /// about calls is kept.
    pub fn reset_stream(&mut self) {
        self.framer = Framer::new(self.framer_config);
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.framer.push(bytes);
    }

    /// The intake's counters.
    pub fn stats(&self) -> IntakeStats {
        IntakeStats {
            sources: self.rules.sources.counts(),
            ..self.rules.stats
        }
    }

    /// The next message, an error already recovered from, or `None` when more bytes are needed. Events
    /// the engine does not follow, and legs it must not decide, are skipped.
    pub fn next_message(&mut self) -> Option<Result<EslMessage, EslError>> {
        loop {
            let frame = match self.framer.next_frame()? {
                Ok(f) => f,
                Err(e) => {
                    self.rules.stats.errors += 1;
                    return Some(Err(e.into()));
                }
            };
            self.rules.stats.frames += 1;
            if self.recording {
                self.recorded.extend_from_slice(frame.headers.as_bytes());
                self.recorded.push(b'\n');
                self.recorded.extend_from_slice(frame.body);
            }
            // A CUSTOM event fired by the `event` application starts with its Event-Subclass (FreeSWITCH
            // 1.10 writes it before Event-Name); one created with its subclass starts with Event-Name.
            if frame.content_type == ContentType::EventPlain
                && (frame.body.starts_with(b"Event-Subclass: ")
                    || frame.body.starts_with(b"Event-Name: CUSTOM\n"))
            {
                let body = frame.body;
                if let Some(ev) = self.rules.custom_event(body) {
                    self.rules.stats.events += 1;
                    return Some(Ok(EslMessage::Event(ev)));
                }
                continue;
            }
            let body = frame.body;
            match self.parser.parse_frame(&frame) {
                Ok(Some(EslMessage::Event(ev))) => {
                    if let Some(ev) = self.rules.channel_event(ev, body) {
                        self.rules.stats.events += 1;
                        return Some(Ok(EslMessage::Event(ev)));
                    }
                }
                Ok(Some(m)) => return Some(Ok(m)),
                Ok(None) => {}
                Err(e) => {
                    self.rules.stats.errors += 1;
                    return Some(Err(e.into()));
                }
            }
        }
    }
}

impl Rules {
    /// Applies the intake's rules to a parsed channel event; `None` drops it.
    fn channel_event(&mut self, mut ev: CallEvent, body: &[u8]) -> Option<CallEvent> {
        let marked = || header(body, b"variable_rtc_a_leg").is_some();
        match ev.direction {
            Direction::Inbound => {
                if matches!(ev.kind, EventKind::ChannelCreate | EventKind::ChannelPark) && marked()
                {
                    self.stats.own_legs_dropped += 1;
                    return None;
                }
                if ev.kind == EventKind::ChannelPark
                    && !header(body, b"variable_rtc_core")
                        .and_then(|v| std::str::from_utf8(v).ok())
                        .is_some_and(rtc_engine::event::is_true)
                {
                    // Parked for something else: not the engine's to bridge.
                    self.stats.unmarked_parks += 1;
                    return None;
                }
                // Unmarked: whatever FreeSWITCH names as its other leg, an inbound channel is not one the engine
                // placed (an inbound event naming a call is the engine's mark of its own leg).
                ev.other_leg = None;
                if ev.source_ip.is_none() && header(body, b"Caller-Network-Addr").is_none() {
                    match self.config.internal_source_ip {
                        Some(ip) => {
                            ev.source_ip = Some(ip);
                            self.stats.internal_address_assumed += 1;
                        }
                        None => self.stats.no_address += 1,
                    }
                }
                if matches!(ev.kind, EventKind::ChannelCreate | EventKind::ChannelPark) {
                    self.apply_proxy(&mut ev, body);
                }
                if matches!(
                    ev.kind,
                    EventKind::ChannelHangupComplete | EventKind::ChannelDestroy
                ) {
                    self.b_legs.remove(&ev.uuid);
                }
            }
            Direction::Outbound => {
                if ev.kind == EventKind::ChannelCreate
                    && let Some(a) = ev.other_leg
                    && marked()
                {
                    let attempt = header(body, b"variable_rtc_attempt")
                        .and_then(|v| std::str::from_utf8(v).ok()?.parse::<u8>().ok())
                        .unwrap_or(0);
                    if self.b_legs.len() >= MAX_TRACKED {
                        self.b_legs.clear();
                    }
                    *self.b_legs.entry(a).or_default() |= 1u64 << (attempt & 63);
                }
            }
        }
        Some(ev)
    }

    /// Behind a SIP load balancer: a new SIP call's source under the proxy rule, counted (and warned about,
    /// rate-limited) on its CHANNEL_CREATE.
    fn apply_proxy(&mut self, ev: &mut CallEvent, body: &[u8]) {
        let (Some(p), Some(vars), Some(transport)) =
            (&self.config.proxy, &self.source_vars, ev.source_ip)
        else {
            return;
        };
        if header(body, b"Caller-Source") != Some(b"mod_sofia") {
            return;
        }
        let value = header_ci(body, &vars[0])
            .map(|v| percent::decode_text(v, &mut self.scratch).0.into_owned());
        let repeated = value.is_some() && header_ci(body, &vars[1]).is_some();
        let verdict = p.judge(transport, value.as_deref(), repeated);
        ev.source_ip = Some(verdict.source(transport));
        if ev.kind == EventKind::ChannelCreate {
            self.sources.record(&ev.uuid, &p.header, &verdict);
        }
    }

    /// A `CUSTOM` event: `rtc::bridge_end` may become a synthetic b-leg hangup; others are skipped.
    fn custom_event(&mut self, body: &[u8]) -> Option<CallEvent> {
        if header(body, b"Event-Name")? != b"CUSTOM" {
            return None;
        }
        let subclass = self.text(Some(header(body, b"Event-Subclass")?));
        if subclass != BRIDGE_END_SUBCLASS {
            return None;
        }
        self.stats.bridge_ends += 1;
        let a = CallId::parse(std::str::from_utf8(header(body, b"Unique-ID")?).ok()?).ok()?;
        let attempt: u8 = std::str::from_utf8(header(body, b"rtc_attempt")?)
            .ok()?
            .parse()
            .ok()?;
        let disposition = self.text(header(body, b"variable_originate_disposition"));
        if disposition.eq_ignore_ascii_case("SUCCESS") {
            return None;
        }
        if self
            .b_legs
            .get(&a)
            .is_some_and(|bits| bits & (1u64 << (attempt & 63)) != 0)
        {
            return None;
        }
        let number = |name: &[u8]| {
            header(body, name)
                .and_then(|v| std::str::from_utf8(v).ok()?.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let mut ev = CallEvent::new(
            a.leg(attempt),
            EventKind::ChannelHangup,
            number(b"Event-Sequence"),
        );
        ev.timestamp_us = number(b"Event-Date-Timestamp");
        ev.direction = Direction::Outbound;
        ev.other_leg = Some(a);
        ev.hangup_cause =
            Some(HangupCause::parse(&disposition).unwrap_or(HangupCause::NORMAL_TEMPORARY_FAILURE));
        self.stats.synthetic_b_hangups += 1;
        log::info!(
            "call {a}: bridge attempt {attempt} failed without an outbound leg ({disposition}); failing over"
        );
        Some(ev)
    }

    fn text(&mut self, v: Option<&[u8]>) -> CompactString {
        match v {
            None => CompactString::const_new(""),
            Some(v) => CompactString::new(percent::decode_text(v, &mut self.scratch).0),
        }
    }
}

/// The raw (still encoded) value of header `name` in an event's header block, or `None`.
fn header<'a>(body: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let end = memmem::find(body, b"\n\n").map_or(body.len(), |p| p + 1);
    let head = &body[..end];
    let mut at = 0;
    loop {
        let pos = if at == 0 && head.starts_with(name) {
            0
        } else {
            let p = memmem::find(&head[at..], name)? + at;
            if p == 0 || head[p - 1] != b'\n' {
                at = p + 1;
                continue;
            }
            p
        };
        let rest = &head[pos + name.len()..];
        if let Some(v) = rest.strip_prefix(b": ") {
            let line_end = memchr::memchr(b'\n', v).unwrap_or(v.len());
            let v = &v[..line_end];
            return Some(v.strip_suffix(b"\r").unwrap_or(v));
        }
        at = pos + 1;
    }
}

/// The raw value of header `name` in an event's header block, the name compared without regard to case: a channel
/// variable such as `sip_h_<header>` is named as the INVITE spelt the header, and FreeSWITCH looks variables up so.
fn header_ci<'a>(body: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let end = memmem::find(body, b"\n\n").map_or(body.len(), |p| p + 1);
    body[..end].split(|&b| b == b'\n').find_map(|line| {
        let (n, rest) = line.split_at_checked(name.len())?;
        let v = rest
            .strip_prefix(b": ")
            .filter(|_| n.eq_ignore_ascii_case(name))?;
        Some(v.strip_suffix(b"\r").unwrap_or(v))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lookup_matches_whole_names_only() {
        let body = b"Event-Name: CUSTOM\nX-Unique-ID: no\nUnique-ID: yes\nrtc_attempt: 2\n\nUnique-ID: body";
        assert_eq!(header(body, b"Unique-ID"), Some(&b"yes"[..]));
        assert_eq!(header(body, b"Event-Name"), Some(&b"CUSTOM"[..]));
        assert_eq!(header(body, b"rtc_attempt"), Some(&b"2"[..]));
        assert_eq!(header(body, b"Missing"), None);
        assert_eq!(header_ci(body, b"unique-id"), Some(&b"yes"[..]));
        assert_eq!(header_ci(body, b"RTC_ATTEMPT"), Some(&b"2"[..]));
        assert_eq!(header_ci(body, b"Unique"), None);
        assert_eq!(header_ci(body, b"Missing"), None);
    }

    #[test]
    fn parks_without_rtc_core_true_are_not_handed_on() {
        let mut intake = Intake::new(IntakeConfig::default(), FramerConfig::default());
        let park = |seq: u32, var: &str| {
            let body = format!(
                "Event-Name: CHANNEL_PARK\nEvent-Sequence: {seq}\nEvent-Date-Timestamp: 1\nUnique-ID: 4b2a1c3e-9f10-4d2b-8a7e-0123456789ab\n\
                 Call-Direction: inbound\n{var}\n"
            );
            let mut out = Vec::new();
            crate::write::write_event_frame(body.as_bytes(), &mut out);
            out
        };
        for (seq, var) in [
            (1, ""),
            (2, "variable_rtc_core: false\n"),
            (3, "variable_rtc_core: true\n"),
        ] {
            intake.push(&park(seq, var));
        }
        let mut handed_on = Vec::new();
        while let Some(m) = intake.next_message() {
            match m {
                Ok(EslMessage::Event(ev)) => handed_on.push(ev.sequence),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(handed_on, [3]);
        assert_eq!(intake.stats().unmarked_parks, 2);
    }
}
