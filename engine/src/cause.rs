//! FreeSWITCH hangup causes: the names FreeSWITCH prints and their Q.850 (or FreeSWITCH-private) codes.

use std::fmt;

/// A hangup cause as its numeric code. Two bytes, so it fits in the compact call record; unknown codes are
/// kept as numbers rather than lost.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct HangupCause(pub u16);

macro_rules! causes {
    ($($name:ident = $code:expr),* $(,)?) => {
        impl HangupCause {
            $(
                #[doc = concat!("`", stringify!($name), "` (", stringify!($code), ").")]
                pub const $name: HangupCause = HangupCause($code);
            )*
            const TABLE: &'static [(&'static str, u16)] = &[$((stringify!($name), $code)),*];
        }
    };
}

causes! {
    NONE = 0,
    UNALLOCATED_NUMBER = 1,
    NO_ROUTE_TRANSIT_NET = 2,
    NO_ROUTE_DESTINATION = 3,
    CHANNEL_UNACCEPTABLE = 6,
    CALL_AWARDED_DELIVERED = 7,
    NORMAL_CLEARING = 16,
    USER_BUSY = 17,
    NO_USER_RESPONSE = 18,
    NO_ANSWER = 19,
    SUBSCRIBER_ABSENT = 20,
    CALL_REJECTED = 21,
    NUMBER_CHANGED = 22,
    REDIRECTION_TO_NEW_DESTINATION = 23,
    EXCHANGE_ROUTING_ERROR = 25,
    DESTINATION_OUT_OF_ORDER = 27,
    INVALID_NUMBER_FORMAT = 28,
    FACILITY_REJECTED = 29,
    RESPONSE_TO_STATUS_ENQUIRY = 30,
    NORMAL_UNSPECIFIED = 31,
    NORMAL_CIRCUIT_CONGESTION = 34,
    NETWORK_OUT_OF_ORDER = 38,
    NORMAL_TEMPORARY_FAILURE = 41,
    SWITCH_CONGESTION = 42,
    ACCESS_INFO_DISCARDED = 43,
    REQUESTED_CHAN_UNAVAIL = 44,
    PRE_EMPTED = 45,
    FACILITY_NOT_SUBSCRIBED = 50,
    OUTGOING_CALL_BARRED = 52,
    INCOMING_CALL_BARRED = 54,
    BEARERCAPABILITY_NOTAUTH = 57,
    BEARERCAPABILITY_NOTAVAIL = 58,
    SERVICE_UNAVAILABLE = 63,
    BEARERCAPABILITY_NOTIMPL = 65,
    CHAN_NOT_IMPLEMENTED = 66,
    FACILITY_NOT_IMPLEMENTED = 69,
    SERVICE_NOT_IMPLEMENTED = 79,
    INVALID_CALL_REFERENCE = 81,
    INCOMPATIBLE_DESTINATION = 88,
    INVALID_MSG_UNSPECIFIED = 95,
    MANDATORY_IE_MISSING = 96,
    MESSAGE_TYPE_NONEXIST = 97,
    WRONG_MESSAGE = 98,
    IE_NONEXIST = 99,
    INVALID_IE_CONTENTS = 100,
    WRONG_CALL_STATE = 101,
    RECOVERY_ON_TIMER_EXPIRE = 102,
    MANDATORY_IE_LENGTH_ERROR = 103,
    PROTOCOL_ERROR = 111,
    INTERWORKING = 127,
    SUCCESS = 142,
    ORIGINATOR_CANCEL = 487,
    CRASH = 700,
    SYSTEM_SHUTDOWN = 701,
    LOSE_RACE = 702,
    MANAGER_REQUEST = 703,
    BLIND_TRANSFER = 800,
    ATTENDED_TRANSFER = 801,
    ALLOTTED_TIMEOUT = 802,
    USER_CHALLENGE = 803,
    MEDIA_TIMEOUT = 804,
    PICKED_OFF = 805,
    USER_NOT_REGISTERED = 806,
    PROGRESS_TIMEOUT = 807,
    INVALID_GATEWAY = 808,
    GATEWAY_DOWN = 809,
    INVALID_URL = 810,
    INVALID_PROFILE = 811,
    NO_PICKUP = 812,
    SRTP_READ_ERROR = 813,
    BOWOUT = 814,
    BUSY_EVERYWHERE = 815,
    DECLINE = 816,
    DOES_NOT_EXIST_ANYWHERE = 817,
    NOT_ACCEPTABLE = 818,
    UNWANTED = 819,
    NO_IDENTITY = 820,
    BAD_IDENTITY_INFO = 821,
    UNSUPPORTED_CERTIFICATE = 822,
    INVALID_IDENTITY = 823,
    STALE_DATE = 824,
    REJECT_ALL = 825,
}

impl HangupCause {
    /// The cause for a FreeSWITCH cause name (`NORMAL_CLEARING`) or a decimal code (`16`).
    pub fn parse(text: &str) -> Option<HangupCause> {
        let text = text.trim();
        if let Ok(code) = text.parse::<u16>() {
            return Some(HangupCause(code));
        }
        Self::TABLE
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(text))
            .map(|&(_, code)| HangupCause(code))
    }

    /// The FreeSWITCH name, if this code has one.
    pub fn name(self) -> Option<&'static str> {
        Self::TABLE
            .iter()
            .find(|&&(_, code)| code == self.0)
            .map(|&(name, _)| name)
    }

    /// Whether a failed outbound attempt with this cause should be retried on the next route.
    /// Causes that say the *callee* decided (busy, rejected, bad number) stop the failover: another carrier
    /// would reach the same person.
    pub fn allows_failover(self) -> bool {
        !matches!(
            self,
            HangupCause::USER_BUSY
                | HangupCause::CALL_REJECTED
                | HangupCause::UNALLOCATED_NUMBER
                | HangupCause::INVALID_NUMBER_FORMAT
                | HangupCause::NUMBER_CHANGED
                | HangupCause::ORIGINATOR_CANCEL
                | HangupCause::NORMAL_CLEARING
        )
    }
}

impl fmt::Display for HangupCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "CAUSE_{}", self.0),
        }
    }
}

impl fmt::Debug for HangupCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl serde::Serialize for HangupCause {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_codes_round_trip() {
        assert_eq!(
            HangupCause::parse("NORMAL_CLEARING"),
            Some(HangupCause::NORMAL_CLEARING)
        );
        assert_eq!(
            HangupCause::parse("no_answer"),
            Some(HangupCause::NO_ANSWER)
        );
        assert_eq!(HangupCause::parse("16"), Some(HangupCause::NORMAL_CLEARING));
        assert_eq!(HangupCause::parse("WHATEVER"), None);
        assert_eq!(HangupCause(999).to_string(), "CAUSE_999");
        assert_eq!(
            HangupCause::RECOVERY_ON_TIMER_EXPIRE.to_string(),
            "RECOVERY_ON_TIMER_EXPIRE"
        );
    }

    #[test]
    fn busy_stops_failover_but_no_answer_does_not() {
        assert!(!HangupCause::USER_BUSY.allows_failover());
        assert!(HangupCause::NO_ANSWER.allows_failover());
        assert!(HangupCause::GATEWAY_DOWN.allows_failover());
    }
}
