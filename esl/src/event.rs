//! Turning frames into the few typed messages the engine acts on: channel events as
//! [`CallEvent`], `BACKGROUND_JOB` results for bgapi correlation, command replies and
//! api responses.
//!
//! A channel event in plain format is about 150 `Name: url-encoded-value` lines (2–4 KB). The parser scans
//! the lines once on bytes, recognises only the headers the engine uses by their first byte and exact
//! `Name: ` prefix, and percent-decodes and validates only those values, into a reused scratch buffer: no
//! allocation per header, no UTF-8 validation of the headers it skips. An event the engine does not follow is
//! recognised from its first line (FreeSWITCH always writes `Event-Name` first) and dropped at once.

use std::net::IpAddr;

use compact_str::CompactString;

use crate::frame::{ContentType, Frame};
use crate::percent;
use rtc_engine::cause::HangupCause;
use rtc_engine::event::{CallEvent, Direction, EventKind};
use rtc_engine::id::CallId;

/// Value FreeSWITCH writes for an empty header value.
const UNDEF: &[u8] = b"_undef_";

/// Longest value quoted in an error message.
const EXCERPT: usize = 80;

/// A message from FreeSWITCH that the ESL intake acts on.
#[derive(Clone, Debug, PartialEq)]
pub enum EslMessage {
    /// `auth/request`: send `auth <password>`.
    AuthRequest,
    /// `command/reply`.
    CommandReply(Reply),
    /// `api/response`.
    ApiResponse(Reply),
    /// A channel event the engine follows.
    Event(CallEvent),
    /// The result of a `bgapi` command.
    BackgroundJob(BackgroundJob),
    /// `text/disconnect-notice`: the server is closing (or lingering on) the connection.
    Disconnect {
        /// The notice text (the body), e.g. `Disconnected, goodbye.`.
        text: String,
    },
    /// `text/rude-rejection`: refused by the server's ACL.
    Rejected {
        /// The body, e.g. `Access Denied, go away.`.
        text: String,
    },
    /// `log/data`.
    Log {
        /// `Log-Level` (0 console .. 7 debug), when present and numeric.
        level: Option<u8>,
        /// The log line.
        text: String,
    },
    /// A frame of another content type (e.g. JSON events the intake did not ask for).
    Other {
        /// The `Content-Type` value.
        content_type: String,
    },
}

/// A `+OK` / `-ERR` answer, from `Reply-Text` or an api body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// Whether the text starts with `+OK` (anything else, usually `-ERR ...` or `-USAGE`, is a failure).
    pub ok: bool,
    /// The reply text without its trailing newline.
    pub text: String,
    /// `Job-UUID` of a `bgapi` acceptance, to match the later [`BackgroundJob`].
    pub job_uuid: Option<CompactString>,
}

impl Reply {
    fn new(text: &str, job_uuid: Option<CompactString>) -> Self {
        let text = text.trim_end_matches(['\n', '\r']);
        Reply {
            ok: text.starts_with("+OK"),
            text: text.to_string(),
            job_uuid,
        }
    }
}

/// A `BACKGROUND_JOB` event: the result of a `bgapi` command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackgroundJob {
    /// `Job-UUID`, as returned in the `command/reply` to the `bgapi`.
    pub job_uuid: CompactString,
    /// `Job-Command`: the api command that ran.
    pub command: CompactString,
    /// Whether the result starts with `+OK`.
    pub ok: bool,
    /// The command's output (the event body): any text, including lines without a colon.
    pub body: String,
}

/// Why an event could not be turned into a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// A header the engine needs is absent.
    #[error(
        "ESL {event} event{uuid}: header {header} is missing; the event was dropped (FreeSWITCH always sends it: is this stream from FreeSWITCH?)"
    )]
    MissingHeader {
        /// `Event-Name`.
        event: &'static str,
        /// The missing header.
        header: &'static str,
        /// ` for <uuid>` when known, for the message.
        uuid: String,
    },
    /// A header the engine needs has a value it cannot use.
    #[error(
        "ESL {event} event{uuid}: header {header} has unusable value {value:?} ({problem}); the event was dropped"
    )]
    BadHeader {
        /// `Event-Name`.
        event: &'static str,
        /// The header.
        header: &'static str,
        /// The raw value, shortened.
        value: String,
        /// What is wrong with it.
        problem: &'static str,
        /// ` for <uuid>` when known.
        uuid: String,
    },
}

/// Counters of things repaired or skipped while parsing, for monitoring.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ParseStats {
    /// Channel events turned into [`CallEvent`]s.
    pub events: u64,
    /// Events dropped because the engine does not follow them.
    pub ignored_events: u64,
    /// Values whose decoded bytes were not UTF-8 and were kept lossily.
    pub lossy_values: u64,
    /// Optional values (source address, hangup cause, other leg) that could not be understood and were left
    /// empty.
    pub unusable_values: u64,
}

/// Which event an `Event-Name` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Named {
    Channel(EventKind),
    BackgroundJob,
    Ignored,
}

fn classify(name: &[u8]) -> Named {
    let kind = match name {
        b"CHANNEL_CREATE" => EventKind::ChannelCreate,
        b"CHANNEL_PARK" => EventKind::ChannelPark,
        b"CHANNEL_PROGRESS" => EventKind::ChannelProgress,
        b"CHANNEL_PROGRESS_MEDIA" => EventKind::ChannelProgressMedia,
        b"CHANNEL_ANSWER" => EventKind::ChannelAnswer,
        b"CHANNEL_BRIDGE" => EventKind::ChannelBridge,
        b"CHANNEL_UNBRIDGE" => EventKind::ChannelUnbridge,
        b"CHANNEL_HANGUP" => EventKind::ChannelHangup,
        b"CHANNEL_HANGUP_COMPLETE" => EventKind::ChannelHangupComplete,
        b"CHANNEL_DESTROY" => EventKind::ChannelDestroy,
        b"BACKGROUND_JOB" => return Named::BackgroundJob,
        _ => return Named::Ignored,
    };
    Named::Channel(kind)
}

/// Raw (still encoded) values of the headers the engine reads, borrowed from the event.
#[derive(Default)]
struct Raw<'a> {
    event_name: Option<&'a [u8]>,
    unique_id: Option<&'a [u8]>,
    sequence: Option<&'a [u8]>,
    timestamp: Option<&'a [u8]>,
    direction: Option<&'a [u8]>,
    other_leg: Option<&'a [u8]>,
    bridge_a: Option<&'a [u8]>,
    rtc_a_leg: Option<&'a [u8]>,
    caller: Option<&'a [u8]>,
    destination: Option<&'a [u8]>,
    context: Option<&'a [u8]>,
    network_addr: Option<&'a [u8]>,
    hangup_cause: Option<&'a [u8]>,
    auth_user: Option<&'a [u8]>,
    content_length: Option<&'a [u8]>,
    job_uuid: Option<&'a [u8]>,
    job_command: Option<&'a [u8]>,
}

/// Stores `line`'s value in `slot` if the line is `name: value` and the slot is still empty (first wins).
/// The name is a fixed-size array so that the comparison is inlined rather than a `memcmp` call.
#[inline(always)]
fn take<'a, const N: usize>(line: &'a [u8], name: &[u8; N], slot: &mut Option<&'a [u8]>) -> bool {
    match line.get(..N + 2) {
        Some(head) if head[..N] == name[..] && head[N] == b':' && head[N + 1] == b' ' => {
            if slot.is_none() {
                let v = &line[N + 2..];
                *slot = Some(v.strip_suffix(b"\r").unwrap_or(v));
            }
            true
        }
        _ => false,
    }
}

/// Parses events and other frames; holds a scratch buffer for decoding and counters.
#[derive(Debug, Default)]
pub struct EventParser {
    /// Reused for percent-decoding so that decoding allocates nothing per event.
    scratch: Vec<u8>,
    /// Counters.
    stats: ParseStats,
}

impl EventParser {
    /// A parser with nothing seen yet.
    pub fn new() -> Self {
        EventParser::default()
    }

    /// Counters so far.
    pub fn stats(&self) -> ParseStats {
        self.stats
    }

    /// Turns a frame into a message; `Ok(None)` for events the engine does not follow.
    pub fn parse_frame(&mut self, frame: &Frame<'_>) -> Result<Option<EslMessage>, EventError> {
        let body_text = || String::from_utf8_lossy(frame.body).into_owned();
        Ok(Some(match frame.content_type {
            ContentType::EventPlain => return self.parse_event(frame.body),
            ContentType::AuthRequest => EslMessage::AuthRequest,
            ContentType::CommandReply => EslMessage::CommandReply(Reply::new(
                frame.header("Reply-Text").unwrap_or(""),
                frame.header("Job-UUID").map(CompactString::new),
            )),
            ContentType::ApiResponse => {
                EslMessage::ApiResponse(Reply::new(&String::from_utf8_lossy(frame.body), None))
            }
            ContentType::DisconnectNotice => EslMessage::Disconnect { text: body_text() },
            ContentType::RudeRejection => EslMessage::Rejected { text: body_text() },
            ContentType::LogData => EslMessage::Log {
                level: frame
                    .header("Log-Level")
                    .and_then(|l| l.trim().parse().ok()),
                text: body_text(),
            },
            ContentType::EventJson | ContentType::EventXml | ContentType::Other(_) => {
                let content_type = frame.header("Content-Type").unwrap_or("").to_string();
                EslMessage::Other { content_type }
            }
        }))
    }

    /// Parses the body of a `text/event-plain` frame: a channel event the engine follows becomes
    /// [`EslMessage::Event`], a `BACKGROUND_JOB` becomes [`EslMessage::BackgroundJob`], anything else is
    /// `Ok(None)`.
    pub fn parse_event(&mut self, body: &[u8]) -> Result<Option<EslMessage>, EventError> {
        // FreeSWITCH writes Event-Name first: decide from the first line whether to read on.
        let first_end = memchr::memchr(b'\n', body).unwrap_or(body.len());
        let mut raw = Raw::default();
        let named = if take(&body[..first_end], b"Event-Name", &mut raw.event_name) {
            let n = classify(raw.event_name.unwrap_or_default());
            if n == Named::Ignored {
                self.stats.ignored_events += 1;
                return Ok(None);
            }
            Some(n)
        } else {
            None
        };
        let rest = scan_headers(body, &mut raw);
        let named = match named {
            Some(n) => n,
            None => match raw.event_name {
                Some(name) => classify(name),
                None => Named::Ignored,
            },
        };
        match named {
            Named::Ignored => {
                self.stats.ignored_events += 1;
                Ok(None)
            }
            Named::Channel(kind) => {
                let ev = self.channel_event(kind, &raw)?;
                self.stats.events += 1;
                Ok(Some(EslMessage::Event(ev)))
            }
            Named::BackgroundJob => {
                let job = self.background_job(&raw, rest)?;
                Ok(Some(EslMessage::BackgroundJob(job)))
            }
        }
    }

    fn channel_event(&mut self, kind: EventKind, raw: &Raw<'_>) -> Result<CallEvent, EventError> {
        let event = kind.name();
        let Some(uuid_raw) = raw.unique_id else {
            return Err(EventError::MissingHeader {
                event,
                header: "Unique-ID",
                uuid: String::new(),
            });
        };
        let uuid = parse_id(uuid_raw).ok_or_else(|| EventError::BadHeader {
            event,
            header: "Unique-ID",
            value: excerpt(uuid_raw),
            problem: "not a channel UUID",
            uuid: String::new(),
        })?;
        let whose = || format!(" for {uuid}");
        let number = |header: &'static str, v: Option<&[u8]>| -> Result<u64, EventError> {
            let v = v.ok_or_else(|| EventError::MissingHeader {
                event,
                header,
                uuid: whose(),
            })?;
            parse_u64(v).ok_or_else(|| EventError::BadHeader {
                event,
                header,
                value: excerpt(v),
                problem: "not a decimal number",
                uuid: whose(),
            })
        };
        let sequence = number("Event-Sequence", raw.sequence)?;
        let timestamp_us = number("Event-Date-Timestamp", raw.timestamp)?;
        let mut ev = CallEvent::new(uuid, kind, sequence);
        ev.timestamp_us = timestamp_us;
        ev.direction = match raw.direction {
            Some(b"outbound") => Direction::Outbound,
            _ => Direction::Inbound,
        };
        // The leg's a-leg: the engine's own mark first, then FreeSWITCH's notion of the other leg.
        for v in [raw.rtc_a_leg, raw.other_leg, raw.bridge_a]
            .into_iter()
            .flatten()
        {
            match parse_id(v) {
                Some(id) => {
                    ev.other_leg = Some(id);
                    break;
                }
                None if v.is_empty() || v == UNDEF => {}
                None => self.stats.unusable_values += 1,
            }
        }
        ev.caller = self.text(raw.caller);
        ev.destination = self.text(raw.destination);
        ev.context = self.text(raw.context);
        ev.auth_user = self.text(raw.auth_user);
        if let Some(v) = raw.network_addr {
            let t = self.text(Some(v));
            match t.parse::<IpAddr>() {
                Ok(ip) => ev.source_ip = Some(ip),
                Err(_) if t.is_empty() => {}
                Err(_) => self.stats.unusable_values += 1,
            }
        }
        if let Some(v) = raw.hangup_cause {
            let t = self.text(Some(v));
            match HangupCause::parse(&t) {
                Some(c) => ev.hangup_cause = Some(c),
                None => self.stats.unusable_values += 1,
            }
        }
        Ok(ev)
    }

    fn background_job(&mut self, raw: &Raw<'_>, rest: &[u8]) -> Result<BackgroundJob, EventError> {
        let event = "BACKGROUND_JOB";
        let job_uuid = self.text(raw.job_uuid);
        if job_uuid.is_empty() {
            return Err(EventError::MissingHeader {
                event,
                header: "Job-UUID",
                uuid: String::new(),
            });
        }
        let command = self.text(raw.job_command);
        let body = match raw.content_length {
            None => &[][..],
            Some(v) => {
                let n = parse_u64(v).ok_or_else(|| EventError::BadHeader {
                    event,
                    header: "Content-Length",
                    value: excerpt(v),
                    problem: "not a decimal number",
                    uuid: format!(" for job {job_uuid}"),
                })?;
                // A shorter body than announced is kept as it is: the frame around it was complete.
                &rest[..rest.len().min(usize::try_from(n).unwrap_or(usize::MAX))]
            }
        };
        let body = match std::str::from_utf8(body) {
            Ok(s) => s.to_string(),
            Err(_) => {
                self.stats.lossy_values += 1;
                String::from_utf8_lossy(body).into_owned()
            }
        };
        Ok(BackgroundJob {
            job_uuid,
            command,
            ok: body.starts_with("+OK"),
            body,
        })
    }

    /// Decodes an optional text value (`_undef_` is empty), counting lossy repairs.
    fn text(&mut self, v: Option<&[u8]>) -> CompactString {
        let Some(v) = v else {
            return CompactString::const_new("");
        };
        if v == UNDEF {
            return CompactString::const_new("");
        }
        let (text, lossy) = percent::decode_text(v, &mut self.scratch);
        if lossy {
            self.stats.lossy_values += 1;
        }
        CompactString::new(&text)
    }
}

/// Scans the header lines of an event into `raw`; returns the bytes after the blank line (the body).
fn scan_headers<'a>(body: &'a [u8], raw: &mut Raw<'a>) -> &'a [u8] {
    let mut pos = 0;
    for nl in memchr::memchr_iter(b'\n', body) {
        let line = &body[pos..nl];
        pos = nl + 1;
        if line.is_empty() {
            return &body[pos..];
        }
        match_line(line, raw);
    }
    // Truncated input: the last line had no newline, but is a header all the same.
    if pos < body.len() {
        match_line(&body[pos..], raw);
    }
    &body[body.len()..]
}

/// Records `line` in `raw` if it is one of the headers the engine reads. Lines are told apart by their
/// first byte, then by exact `Name: ` prefix; everything else (most lines) costs one byte comparison.
#[inline(always)]
fn match_line<'a>(line: &'a [u8], raw: &mut Raw<'a>) {
    let Some(&[a, b, c, d]) = line.first_chunk::<4>() else {
        return;
    };
    match &[a, b, c, d] {
        b"Even" => {
            let _ = take(line, b"Event-Name", &mut raw.event_name)
                || take(line, b"Event-Sequence", &mut raw.sequence)
                || take(line, b"Event-Date-Timestamp", &mut raw.timestamp);
        }
        b"Uniq" => {
            take(line, b"Unique-ID", &mut raw.unique_id);
        }
        b"Call" => match line.get(7) {
            Some(b'C') => {
                let _ = take(line, b"Caller-Caller-ID-Number", &mut raw.caller)
                    || take(line, b"Caller-Context", &mut raw.context);
            }
            Some(b'D') => {
                take(line, b"Caller-Destination-Number", &mut raw.destination);
            }
            Some(b'N') => {
                take(line, b"Caller-Network-Addr", &mut raw.network_addr);
            }
            Some(b'r') => {
                take(line, b"Call-Direction", &mut raw.direction);
            }
            _ => {}
        },
        b"Cont" => {
            take(line, b"Content-Length", &mut raw.content_length);
        }
        b"Othe" => {
            take(line, b"Other-Leg-Unique-ID", &mut raw.other_leg);
        }
        b"Brid" => {
            take(line, b"Bridge-A-Unique-ID", &mut raw.bridge_a);
        }
        b"Hang" => {
            take(line, b"Hangup-Cause", &mut raw.hangup_cause);
        }
        b"vari" => match line.get(9) {
            Some(b'r') => {
                take(line, b"variable_rtc_a_leg", &mut raw.rtc_a_leg);
            }
            Some(b's') => {
                take(line, b"variable_sip_auth_username", &mut raw.auth_user);
            }
            _ => {}
        },
        b"Job-" => {
            let _ = take(line, b"Job-UUID", &mut raw.job_uuid)
                || take(line, b"Job-Command", &mut raw.job_command);
        }
        _ => {}
    }
}

/// A channel UUID from raw header bytes (UUIDs never need decoding).
fn parse_id(v: &[u8]) -> Option<CallId> {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| CallId::parse(s).ok())
}

/// A decimal number from raw bytes, without going through `str`.
fn parse_u64(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 20 {
        return None;
    }
    let mut n: u64 = 0;
    for &b in v {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(n)
}

fn excerpt(v: &[u8]) -> String {
    let cut = &v[..v.len().min(EXCERPT)];
    let mut s = String::from_utf8_lossy(cut).into_owned();
    if v.len() > EXCERPT {
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &str = "4b2a1c3e-9f10-4d2b-8a7e-0123456789ab";

    #[test]
    fn ignores_unfollowed_events_from_first_line() {
        let mut p = EventParser::new();
        let body = b"Event-Name: HEARTBEAT\nCore-UUID: x\n\n";
        assert_eq!(p.parse_event(body), Ok(None));
        assert_eq!(p.stats().ignored_events, 1);
    }

    #[test]
    fn finds_event_name_anywhere() {
        let mut p = EventParser::new();
        let body = format!(
            "Core-UUID: x\nEvent-Sequence: 7\nUnique-ID: {UUID}\nEvent-Date-Timestamp: 12\nEvent-Name: CHANNEL_PARK\n\n"
        );
        let Some(EslMessage::Event(ev)) = p.parse_event(body.as_bytes()).unwrap() else {
            panic!()
        };
        assert_eq!(ev.kind, EventKind::ChannelPark);
        assert_eq!(ev.sequence, 7);
    }

    #[test]
    fn missing_and_bad_headers_are_typed() {
        let mut p = EventParser::new();
        let e = p
            .parse_event(b"Event-Name: CHANNEL_CREATE\nEvent-Sequence: 1\n\n")
            .unwrap_err();
        assert!(matches!(
            e,
            EventError::MissingHeader {
                header: "Unique-ID",
                ..
            }
        ));
        let body = format!(
            "Event-Name: CHANNEL_CREATE\nUnique-ID: {UUID}\nEvent-Sequence: x1\nEvent-Date-Timestamp: 1\n\n"
        );
        let e = p.parse_event(body.as_bytes()).unwrap_err();
        assert!(e.to_string().contains(UUID), "{e}");
        assert!(matches!(
            e,
            EventError::BadHeader {
                header: "Event-Sequence",
                ..
            }
        ));
    }

    #[test]
    fn background_job_body_may_lack_colons() {
        let body_text = "+OK done\nno colon here\n\nstill body: yes\n";
        let body = format!(
            "Event-Name: BACKGROUND_JOB\nJob-UUID: {UUID}\nJob-Command: originate\nContent-Length: {}\n\n{body_text}",
            body_text.len()
        );
        let mut p = EventParser::new();
        let Some(EslMessage::BackgroundJob(job)) = p.parse_event(body.as_bytes()).unwrap() else {
            panic!()
        };
        assert_eq!(job.job_uuid, UUID);
        assert_eq!(job.command, "originate");
        assert!(job.ok);
        assert_eq!(job.body, body_text);
    }

    #[test]
    fn unterminated_last_line_still_counts() {
        let mut p = EventParser::new();
        let body = format!(
            "Event-Name: CHANNEL_ANSWER\nEvent-Sequence: 1\nEvent-Date-Timestamp: 2\nUnique-ID: {UUID}"
        );
        let Some(EslMessage::Event(ev)) = p.parse_event(body.as_bytes()).unwrap() else {
            panic!()
        };
        assert_eq!(ev.uuid.to_string(), UUID);
    }
}
