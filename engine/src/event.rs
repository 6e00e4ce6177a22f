//! The small owned event the engine consumes: the few fields of a FreeSWITCH channel event it needs.
//!
//! Both intakes build it — the in-process event handler on FreeSWITCH's dispatch threads and the ESL
//! parser — so it must be cheap to fill: numbers and short strings inline, no per-event heap allocation for
//! ordinary caller and destination numbers.

use std::net::IpAddr;

use compact_str::CompactString;

use crate::cause::HangupCause;
use crate::id::CallId;

/// The FreeSWITCH channel events the engine follows (`Event-Name`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum EventKind {
    /// `CHANNEL_CREATE`: a channel exists; an inbound one starts the call's business steps.
    ChannelCreate,
    /// `CHANNEL_PARK`: the dialplan parked the channel (for the engine to bridge).
    ChannelPark,
    /// `CHANNEL_PROGRESS`: the far end rings.
    ChannelProgress,
    /// `CHANNEL_PROGRESS_MEDIA`: early media.
    ChannelProgressMedia,
    /// `CHANNEL_ANSWER`: answered; talk (and billing) starts.
    ChannelAnswer,
    /// `CHANNEL_BRIDGE`: two legs joined.
    ChannelBridge,
    /// `CHANNEL_UNBRIDGE`: the legs parted.
    ChannelUnbridge,
    /// `CHANNEL_HANGUP`: the channel is hanging up, with its cause.
    ChannelHangup,
    /// `CHANNEL_HANGUP_COMPLETE`: hung up, with the final variables.
    ChannelHangupComplete,
    /// `CHANNEL_DESTROY`: the channel is gone.
    ChannelDestroy,
}

impl EventKind {
    /// Every kind, in index order.
    pub const ALL: [EventKind; 10] = [
        EventKind::ChannelCreate,
        EventKind::ChannelPark,
        EventKind::ChannelProgress,
        EventKind::ChannelProgressMedia,
        EventKind::ChannelAnswer,
        EventKind::ChannelBridge,
        EventKind::ChannelUnbridge,
        EventKind::ChannelHangup,
        EventKind::ChannelHangupComplete,
        EventKind::ChannelDestroy,
    ];

    /// The `Event-Name` FreeSWITCH uses.
    pub const fn name(self) -> &'static str {
        match self {
            EventKind::ChannelCreate => "CHANNEL_CREATE",
            EventKind::ChannelPark => "CHANNEL_PARK",
            EventKind::ChannelProgress => "CHANNEL_PROGRESS",
            EventKind::ChannelProgressMedia => "CHANNEL_PROGRESS_MEDIA",
            EventKind::ChannelAnswer => "CHANNEL_ANSWER",
            EventKind::ChannelBridge => "CHANNEL_BRIDGE",
            EventKind::ChannelUnbridge => "CHANNEL_UNBRIDGE",
            EventKind::ChannelHangup => "CHANNEL_HANGUP",
            EventKind::ChannelHangupComplete => "CHANNEL_HANGUP_COMPLETE",
            EventKind::ChannelDestroy => "CHANNEL_DESTROY",
        }
    }

    /// The kind for an `Event-Name`, or `None` for events the engine does not follow.
    pub fn from_name(name: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// A bit for per-call "seen" masks.
    pub const fn bit(self) -> u16 {
        1 << (self as u8)
    }

    /// Events that happen at most once per channel: a second copy is a duplicate.
    pub const fn once_per_channel(self) -> bool {
        matches!(
            self,
            EventKind::ChannelCreate
                | EventKind::ChannelAnswer
                | EventKind::ChannelHangup
                | EventKind::ChannelHangupComplete
                | EventKind::ChannelDestroy
        )
    }
}

/// `Call-Direction` of the channel: inbound legs are the calls the engine decides; outbound legs are the
/// attempts it (or the dialplan) placed towards carriers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Direction {
    /// Into FreeSWITCH: a call the engine decides (an A leg).
    #[default]
    Inbound,
    /// Out of FreeSWITCH: a leg placed towards a carrier.
    Outbound,
}

/// One channel event, owned and small.
#[derive(Clone, Debug, PartialEq)]
pub struct CallEvent {
    /// `Unique-ID`: the channel this event is about.
    pub uuid: CallId,
    /// `Event-Name`.
    pub kind: EventKind,
    /// `Event-Sequence`: FreeSWITCH's global event counter, used to apply one call's events in order.
    pub sequence: u64,
    /// `Event-Date-Timestamp`: microseconds since the Unix epoch, as FreeSWITCH stamped it.
    pub timestamp_us: u64,
    /// `Call-Direction`.
    pub direction: Direction,
    /// For an outbound leg, the a-leg it belongs to: `variable_rtc_a_leg` (set on every leg the engine bridges),
    /// else FreeSWITCH's own notion of the other leg. On the CHANNEL_CREATE of an inbound channel, the call that
    /// placed it (the far half of a loopback route): the engine keeps such a channel as that call's own leg and
    /// ignores its events, instead of deciding it as a new call.
    pub other_leg: Option<CallId>,
    /// `Caller-Caller-ID-Number`.
    pub caller: CompactString,
    /// `Caller-Destination-Number`.
    pub destination: CompactString,
    /// `Caller-Context`: the dialplan context the channel is routed in (new inbound channels only).
    pub context: CompactString,
    /// `Caller-Network-Addr`: the transport source address FreeSWITCH saw; behind a SIP load balancer, for a call
    /// from one of the operator's trusted proxies, the caller's address from that proxy's source header (the intakes
    /// decide, with `rtc-proxy`). The only thing a partner is identified by: a header anyone else sets is never
    /// trusted for that.
    pub source_ip: Option<IpAddr>,
    /// `Hangup-Cause`, on hangup events.
    pub hangup_cause: Option<HangupCause>,
    /// `variable_sip_auth_username` (digest-authenticated user), when the profile challenged the caller.
    pub auth_user: CompactString,
}

impl CallEvent {
    /// A bare event of `kind` for `uuid`; intakes fill the rest.
    pub fn new(uuid: CallId, kind: EventKind, sequence: u64) -> Self {
        CallEvent {
            uuid,
            kind,
            sequence,
            timestamp_us: 0,
            direction: Direction::Inbound,
            other_leg: None,
            caller: CompactString::const_new(""),
            destination: CompactString::const_new(""),
            context: CompactString::const_new(""),
            source_ip: None,
            hangup_cause: None,
            auth_user: CompactString::const_new(""),
        }
    }
}

/// FreeSWITCH's notion of a true channel variable (`switch_true`): yes, on, true, t, enabled, enable, active,
/// allow (any case), or a non-zero number.
pub fn is_true(value: &str) -> bool {
    let v = value.trim();
    [
        "yes", "on", "true", "t", "enabled", "enable", "active", "allow",
    ]
    .iter()
    .any(|t| v.eq_ignore_ascii_case(t))
        || v.parse::<i64>().is_ok_and(|n| n != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for k in EventKind::ALL {
            assert_eq!(EventKind::from_name(k.name()), Some(k));
        }
        assert_eq!(EventKind::from_name("HEARTBEAT"), None);
    }

    #[test]
    fn event_stays_small() {
        // The event crosses a channel from FreeSWITCH's dispatch threads: keep it within three cache lines.
        assert!(
            std::mem::size_of::<CallEvent>() <= 192,
            "{}",
            std::mem::size_of::<CallEvent>()
        );
    }
}
