//! Channel events into the engine: the handler FreeSWITCH's event dispatch threads call.
//!
//! The handler copies the dozen header values the engine uses into a small owned [`CallEvent`] and offers it
//! to the engine's bounded queue with `try_send` semantics: it never blocks FreeSWITCH, and an event that does
//! not fit is counted and reported, not waited for. Its own time is measured into a lock-free histogram
//! (`rtc_core metrics`).
//!
//! The handle the handler submits through lives in an [`Intake`] slot: installed at load before the events are
//! bound, removed at shutdown after they are unbound, and only freed once no handler is still inside.

use std::ffi::{CStr, c_char};
use std::net::{IpAddr, Ipv4Addr};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use freeswitch_sys as fs;
use rtc_engine::engine::{EngineHandle, SubmitError};
use rtc_engine::{CallEvent, CallId, Direction, EventKind, HangupCause};

use crate::histogram::Histogram;
use crate::shim;

/// The channel-event headers the engine uses, in the order the handler's one-pass reader returns them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Field {
    UniqueId,
    Sequence,
    Timestamp,
    Direction,
    RtcALeg,
    OtherLeg,
    BridgeA,
    Caller,
    Destination,
    NetworkAddr,
    HangupCause,
    AuthUser,
}

impl Field {
    pub const ALL: [Field; 12] = [
        Field::UniqueId,
        Field::Sequence,
        Field::Timestamp,
        Field::Direction,
        Field::RtcALeg,
        Field::OtherLeg,
        Field::BridgeA,
        Field::Caller,
        Field::Destination,
        Field::NetworkAddr,
        Field::HangupCause,
        Field::AuthUser,
    ];

    /// The FreeSWITCH header name (a static C string: the C reader keeps the pointer).
    pub const fn header(self) -> &'static CStr {
        match self {
            Field::UniqueId => c"Unique-ID",
            Field::Sequence => c"Event-Sequence",
            Field::Timestamp => c"Event-Date-Timestamp",
            Field::Direction => c"Call-Direction",
            Field::RtcALeg => c"variable_rtc_a_leg",
            Field::OtherLeg => c"Other-Leg-Unique-ID",
            Field::BridgeA => c"Bridge-A-Unique-ID",
            Field::Caller => c"Caller-Caller-ID-Number",
            Field::Destination => c"Caller-Destination-Number",
            // The caller profile's network_addr: the transport source address FreeSWITCH received the call from
            // (for SIP, the packet's source), never a header the caller wrote.
            Field::NetworkAddr => c"Caller-Network-Addr",
            Field::HangupCause => c"Hangup-Cause",
            Field::AuthUser => c"variable_sip_auth_username",
        }
    }
}

/// The source address given to inbound channels FreeSWITCH created itself (loopback endpoint, `originate` from
/// fs_cli or ESL): they carry no network address, and come from this box. A partner owning 127.0.0.1 receives
/// them; with 127.0.0.1 unowned they are refused as unknown partner.
pub const BOX_ADDRESS: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// The FreeSWITCH event types the module binds, with the engine's name for each.
pub const BOUND: [(fs::switch_event_types_t, EventKind); 10] = [
    (fs::SWITCH_EVENT_CHANNEL_CREATE, EventKind::ChannelCreate),
    (fs::SWITCH_EVENT_CHANNEL_PARK, EventKind::ChannelPark),
    (
        fs::SWITCH_EVENT_CHANNEL_PROGRESS,
        EventKind::ChannelProgress,
    ),
    (
        fs::SWITCH_EVENT_CHANNEL_PROGRESS_MEDIA,
        EventKind::ChannelProgressMedia,
    ),
    (fs::SWITCH_EVENT_CHANNEL_ANSWER, EventKind::ChannelAnswer),
    (fs::SWITCH_EVENT_CHANNEL_BRIDGE, EventKind::ChannelBridge),
    (
        fs::SWITCH_EVENT_CHANNEL_UNBRIDGE,
        EventKind::ChannelUnbridge,
    ),
    (fs::SWITCH_EVENT_CHANNEL_HANGUP, EventKind::ChannelHangup),
    (
        fs::SWITCH_EVENT_CHANNEL_HANGUP_COMPLETE,
        EventKind::ChannelHangupComplete,
    ),
    (fs::SWITCH_EVENT_CHANNEL_DESTROY, EventKind::ChannelDestroy),
];

fn kind_of(id: fs::switch_event_types_t) -> Option<EventKind> {
    BOUND.iter().find(|(t, _)| *t == id).map(|&(_, k)| k)
}

/// Why an event does not go to the engine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Skipped {
    #[error("{0} event without a usable Unique-ID")]
    NoUuid(&'static str),
    /// An inbound leg the engine placed itself: the far side of a loopback route (`loopback/...`) carries the
    /// `rtc_a_leg` the module put on the dial string. It belongs to that call; it is not a new call to decide.
    #[error("inbound leg of call {0} (placed by the engine)")]
    OwnLeg(CallId),
}

/// Builds the engine's event from a header getter. Pure: unit-tested without FreeSWITCH.
///
/// Missing or malformed optional headers leave their field empty; only a missing `Unique-ID` drops the event.
/// `other_leg` is filled for outbound legs only — it names the a-leg the channel belongs to — from
/// `variable_rtc_a_leg` (set on every leg the engine bridges), else `Other-Leg-Unique-ID`, else
/// `Bridge-A-Unique-ID`. An inbound channel without a network address gets [`BOX_ADDRESS`].
pub fn build_event<'a>(
    kind: EventKind,
    get: impl Fn(Field) -> Option<&'a str>,
) -> Result<CallEvent, Skipped> {
    let uuid = get(Field::UniqueId)
        .and_then(|u| CallId::parse(u).ok())
        .ok_or(Skipped::NoUuid(kind.name()))?;
    let number = |f| {
        get(f)
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let mut ev = CallEvent::new(uuid, kind, number(Field::Sequence));
    ev.timestamp_us = number(Field::Timestamp);
    ev.direction = match get(Field::Direction) {
        Some(d) if d.eq_ignore_ascii_case("outbound") => Direction::Outbound,
        _ => Direction::Inbound,
    };
    let a_leg = get(Field::RtcALeg).and_then(|v| CallId::parse(v).ok());
    if ev.direction == Direction::Outbound {
        ev.other_leg = a_leg.or_else(|| {
            [Field::OtherLeg, Field::BridgeA]
                .into_iter()
                .find_map(|f| get(f).and_then(|v| CallId::parse(v).ok()))
        });
    } else if let Some(a) = a_leg {
        return Err(Skipped::OwnLeg(a));
    }
    if let Some(v) = get(Field::Caller) {
        ev.caller = v.into();
    }
    if let Some(v) = get(Field::Destination) {
        ev.destination = v.into();
    }
    ev.source_ip = match get(Field::NetworkAddr).map(str::trim) {
        None | Some("") if ev.direction == Direction::Inbound => Some(BOX_ADDRESS),
        other => other.and_then(|v| v.parse::<IpAddr>().ok()),
    };
    if matches!(
        kind,
        EventKind::ChannelHangup | EventKind::ChannelHangupComplete | EventKind::ChannelDestroy
    ) {
        ev.hangup_cause = get(Field::HangupCause).and_then(HangupCause::parse);
    }
    if let Some(v) = get(Field::AuthUser) {
        ev.auth_user = v.into();
    }
    Ok(ev)
}

/// The handler's counters, shown by `rtc_core status` and `rtc_core metrics`.
pub struct IntakeStats {
    /// Events handed to the engine.
    pub accepted: AtomicU64,
    /// Events dropped because the engine's queue was full.
    pub queue_full: AtomicU64,
    /// Events dropped because they had no usable Unique-ID.
    pub malformed: AtomicU64,
    /// Events that arrived while no engine was installed (during load or shutdown), or after it stopped.
    pub no_engine: AtomicU64,
    /// Events of inbound legs the engine placed itself (loopback routes), not handed on.
    pub own_legs: AtomicU64,
    /// Time spent in the handler per event, nanoseconds.
    pub handler_ns: Histogram,
    /// Second (of the module's monotonic clock) of the last queue-full warning, for rate limiting.
    last_full_warning_s: AtomicU64,
    /// Queue-full drops already reported in a warning.
    full_reported: AtomicU64,
}

pub static STATS: IntakeStats = IntakeStats {
    accepted: AtomicU64::new(0),
    queue_full: AtomicU64::new(0),
    malformed: AtomicU64::new(0),
    no_engine: AtomicU64::new(0),
    own_legs: AtomicU64::new(0),
    handler_ns: Histogram::new(),
    last_full_warning_s: AtomicU64::new(0),
    full_reported: AtomicU64::new(0),
};

/// At most one queue-full warning per this many seconds.
pub const FULL_WARNING_EVERY_S: u64 = 10;

impl IntakeStats {
    /// Zeroes the counters (each load starts afresh, even if the library stayed mapped).
    pub fn reset(&self) {
        for c in [
            &self.accepted,
            &self.queue_full,
            &self.malformed,
            &self.no_engine,
            &self.own_legs,
            &self.last_full_warning_s,
            &self.full_reported,
        ] {
            c.store(0, Ordering::Relaxed);
        }
        self.handler_ns.reset();
    }

    /// Counts one queue-full drop; logs a warning at most once per [`FULL_WARNING_EVERY_S`] seconds, with the
    /// drops since the previous one.
    fn full(&self) {
        let total = self.queue_full.fetch_add(1, Ordering::Relaxed) + 1;
        let now_s = monotonic_s() + 1; // 0 means "never warned"
        let last = self.last_full_warning_s.load(Ordering::Relaxed);
        if (last == 0 || now_s >= last + FULL_WARNING_EVERY_S)
            && self
                .last_full_warning_s
                .compare_exchange(last, now_s, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let before = self.full_reported.swap(total, Ordering::Relaxed);
            log::warn!(
                "engine queue full: {} channel events dropped since the last warning ({total} in all); calls may \
                 be missed. The engine is falling behind FreeSWITCH's event rate (see rtc_core status)",
                total - before
            );
        }
    }
}

/// Seconds since the first call, on a monotonic clock.
fn monotonic_s() -> u64 {
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed().as_secs()
}

/// The slot holding the engine handle the handler submits through.
///
/// Hand-written (two atomics) rather than arc-swap because shutdown needs more than a swap: it must know that
/// no handler is still using the old handle before it returns and the library may be unmapped. Handlers count
/// themselves in and out around the pointer load; with sequentially consistent ordering, a handler that saw the
/// old pointer is counted before [`Intake::remove`] reads the count.
pub struct Intake {
    /// Boxed handle, or null when no engine is installed.
    handle: AtomicPtr<EngineHandle>,
    /// Handlers currently between their count-in and count-out.
    inside: AtomicUsize,
}

pub static INTAKE: Intake = Intake {
    handle: AtomicPtr::new(ptr::null_mut()),
    inside: AtomicUsize::new(0),
};

impl Intake {
    /// Installs the handle events go to.
    pub fn install(&self, handle: EngineHandle) {
        let old = self
            .handle
            .swap(Box::into_raw(Box::new(handle)), Ordering::SeqCst);
        if !old.is_null() {
            self.wait_until_idle();
            // SAFETY: `old` came from Box::into_raw in an earlier install and no handler uses it any more.
            drop(unsafe { Box::from_raw(old) });
        }
    }

    /// Removes the handle; returns once no handler is using it.
    pub fn remove(&self) -> Option<EngineHandle> {
        let old = self.handle.swap(ptr::null_mut(), Ordering::SeqCst);
        self.wait_until_idle();
        // SAFETY: `old` came from Box::into_raw in install; it is out of the slot and no handler is inside.
        (!old.is_null()).then(|| *unsafe { Box::from_raw(old) })
    }

    fn wait_until_idle(&self) {
        while self.inside.load(Ordering::SeqCst) != 0 {
            std::thread::yield_now();
        }
    }

    /// Runs `f` with the installed handle, if any.
    fn with<R>(&self, f: impl FnOnce(&EngineHandle) -> R) -> Option<R> {
        struct Out<'a>(&'a AtomicUsize);
        impl Drop for Out<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.inside.fetch_add(1, Ordering::SeqCst);
        let _out = Out(&self.inside);
        let p = self.handle.load(Ordering::SeqCst);
        // SAFETY: a non-null pointer stays valid while we are counted inside (remove waits for us).
        (!p.is_null()).then(|| f(unsafe { &*p }))
    }
}

/// Registers [`Field`]'s header names with the C reader. Called at load, before the events are bound.
pub fn init_reader() {
    let ptrs: [*const c_char; Field::ALL.len()] = Field::ALL.map(|f| f.header().as_ptr());
    // SAFETY: the names are static C strings (the reader keeps the pointers; they live as long as the library);
    // called before any event is bound, so no reader runs concurrently.
    let status = unsafe { shim::rtc_event_fields_init(ptrs.as_ptr(), ptrs.len() as i32) };
    debug_assert_eq!(status, 0);
    PER_HEADER.store(
        std::env::var_os("RTC_CORE_EVENT_LOOKUP").is_some_and(|v| v == "per-header"),
        Ordering::Relaxed,
    );
}

/// Benchmark switch: read each header with its own `switch_event_get_header` instead of the one-pass reader
/// (`RTC_CORE_EVENT_LOOKUP=per-header` in FreeSWITCH's environment at load), to compare the two.
static PER_HEADER: AtomicBool = AtomicBool::new(false);

/// The event callback registered with `switch_event_bind_removable`.
pub(crate) unsafe extern "C" fn on_event(event: *mut fs::switch_event_t) {
    let started = Instant::now();
    crate::guard::entry(
        "event handler",
        || (),
        || {
            if event.is_null() {
                return;
            }
            // SAFETY: FreeSWITCH passes a live event for the duration of the callback.
            let Some(kind) = kind_of(unsafe { shim::rtc_event_id(event) }) else {
                return;
            };
            let text = |value: *const c_char| -> Option<&str> {
                // SAFETY: non-null header values are NUL-terminated strings owned by the event, which outlives
                // this callback's use of them (copied into the CallEvent).
                (!value.is_null())
                    .then(|| unsafe { CStr::from_ptr(value) })
                    .and_then(|v| v.to_str().ok())
            };
            if PER_HEADER.load(Ordering::Relaxed) {
                deliver(build_event(kind, |f| {
                    // SAFETY: the event is live; the name is a static C string.
                    text(unsafe { shim::rtc_event_get_header(event, f.header().as_ptr()) })
                }));
            } else {
                let mut values = [ptr::null::<c_char>(); Field::ALL.len()];
                // SAFETY: the event is live; `values` has room for every registered field.
                unsafe { shim::rtc_event_fields(event, values.as_mut_ptr()) };
                deliver(build_event(kind, |f| text(values[f as usize])));
            }
        },
    );
    STATS.handler_ns.record(started.elapsed().as_nanos() as u64);
}

/// Offers an event to the engine and counts the outcome.
pub fn deliver(event: Result<CallEvent, Skipped>) {
    let ev = match event {
        Ok(ev) => ev,
        Err(Skipped::OwnLeg(_)) => {
            STATS.own_legs.fetch_add(1, Ordering::Relaxed);
            return;
        }
        Err(e) => {
            let n = STATS.malformed.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                log::warn!("dropped a channel event: {e} ({n} so far)");
            }
            return;
        }
    };
    match INTAKE.with(|h| h.submit_event(ev)) {
        Some(Ok(())) => {
            STATS.accepted.fetch_add(1, Ordering::Relaxed);
        }
        Some(Err(SubmitError::QueueFull(_))) => STATS.full(),
        Some(Err(SubmitError::Stopped)) | None => {
            STATS.no_engine.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const A: &str = "4b2a1c3e-9f10-4d2b-8a7e-0123456789ab";
    const B: &str = "0e7c5a1f-2222-4d2b-8a7e-0123456789ff";

    fn build(kind: EventKind, headers: &[(Field, &'static str)]) -> Result<CallEvent, Skipped> {
        let map: HashMap<usize, &'static str> =
            headers.iter().map(|&(f, v)| (f as usize, v)).collect();
        build_event(kind, |f| map.get(&(f as usize)).copied())
    }

    #[test]
    fn copies_the_fields_the_engine_uses() {
        let ev = build(
            EventKind::ChannelCreate,
            &[
                (Field::UniqueId, A),
                (Field::Sequence, "42"),
                (Field::Timestamp, "1700000000123456"),
                (Field::Direction, "inbound"),
                (Field::Caller, "+15550001"),
                (Field::Destination, "4930123"),
                (Field::NetworkAddr, "192.0.2.10"),
                (Field::AuthUser, "alice"),
                (Field::OtherLeg, B),
            ],
        )
        .expect("event");
        assert_eq!(ev.uuid.to_string(), A);
        assert_eq!((ev.sequence, ev.timestamp_us), (42, 1_700_000_000_123_456));
        assert_eq!(ev.direction, Direction::Inbound);
        assert_eq!(ev.other_leg, None, "inbound legs name no a-leg");
        assert_eq!(
            (ev.caller.as_str(), ev.destination.as_str()),
            ("+15550001", "4930123")
        );
        assert_eq!(ev.source_ip, Some("192.0.2.10".parse().expect("ip")));
        assert_eq!(ev.auth_user, "alice");
        assert_eq!(ev.hangup_cause, None);
    }

    #[test]
    fn outbound_legs_find_their_a_leg_in_order() {
        let ev = build(
            EventKind::ChannelAnswer,
            &[
                (Field::UniqueId, B),
                (Field::Direction, "outbound"),
                (Field::BridgeA, A),
            ],
        )
        .expect("event");
        assert_eq!(ev.other_leg.map(|c| c.to_string()).as_deref(), Some(A));
        let ev = build(
            EventKind::ChannelAnswer,
            &[
                (Field::UniqueId, B),
                (Field::Direction, "outbound"),
                (Field::RtcALeg, A),
                (Field::OtherLeg, "not-a-uuid"),
            ],
        )
        .expect("event");
        assert_eq!(ev.other_leg.map(|c| c.to_string()).as_deref(), Some(A));
    }

    #[test]
    fn hangup_cause_and_bad_values() {
        let ev = build(
            EventKind::ChannelHangup,
            &[
                (Field::UniqueId, A),
                (Field::HangupCause, "USER_BUSY"),
                (Field::Sequence, "x"),
                (Field::NetworkAddr, "not an ip"),
            ],
        )
        .expect("event");
        assert_eq!(ev.hangup_cause, Some(HangupCause::USER_BUSY));
        assert_eq!(ev.sequence, 0);
        assert_eq!(
            ev.source_ip, None,
            "an unreadable address is no address, not the box's"
        );
        assert_eq!(
            build(EventKind::ChannelHangup, &[]),
            Err(Skipped::NoUuid("CHANNEL_HANGUP"))
        );
        assert!(build(EventKind::ChannelHangup, &[(Field::UniqueId, "nope")]).is_err());
    }

    #[test]
    fn legs_the_engine_placed_and_channels_without_an_address() {
        // The inbound side of a loopback route carries rtc_a_leg: part of call A, not a new call.
        assert_eq!(
            build(
                EventKind::ChannelCreate,
                &[(Field::UniqueId, B), (Field::RtcALeg, A)]
            ),
            Err(Skipped::OwnLeg(CallId::parse(A).expect("uuid")))
        );
        // An inbound channel FreeSWITCH created itself has no network address: it comes from the box.
        let ev = build(EventKind::ChannelCreate, &[(Field::UniqueId, A)]).expect("event");
        assert_eq!(ev.source_ip, Some(BOX_ADDRESS));
        let ev = build(
            EventKind::ChannelCreate,
            &[(Field::UniqueId, A), (Field::Direction, "outbound")],
        )
        .expect("event");
        assert_eq!(ev.source_ip, None, "outbound legs have no caller address");
    }

    #[test]
    fn field_order_matches_all() {
        for (i, f) in Field::ALL.iter().enumerate() {
            assert_eq!(*f as usize, i);
        }
    }

    #[test]
    fn every_engine_kind_is_bound_once() {
        for k in EventKind::ALL {
            assert_eq!(BOUND.iter().filter(|(_, b)| *b == k).count(), 1, "{k:?}");
        }
    }
}
