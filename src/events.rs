//! Channel events into the engine: the handler FreeSWITCH's event dispatch threads call.
//!
//! The handler copies the dozen header values the engine uses into a small owned [`CallEvent`] and offers it
//! to the engine's bounded queue with `try_send` semantics: it never blocks FreeSWITCH, and an event that does
//! not fit is counted and reported, not waited for. Its own time is measured into a lock-free histogram
//! (`rtc_core metrics`).
//!
//! The handle the handler submits through lives in an [`Intake`] slot: installed at load before the events are
//! bound, removed at shutdown after they are unbound, and only freed once no handler is still inside.

use std::ffi::CStr;
use std::net::IpAddr;
use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use freeswitch_sys as fs;
use rtc_engine::{CallEvent, CallId, Direction, EventKind, HangupCause};

use crate::histogram::Histogram;
use crate::host::HostHandle;
use crate::shim;

/// The header names the handler reads, as C strings so that no lookup allocates.
pub mod header {
    use std::ffi::CStr;
    pub const UNIQUE_ID: &CStr = c"Unique-ID";
    pub const SEQUENCE: &CStr = c"Event-Sequence";
    pub const TIMESTAMP: &CStr = c"Event-Date-Timestamp";
    pub const DIRECTION: &CStr = c"Call-Direction";
    pub const RTC_A_LEG: &CStr = c"variable_rtc_a_leg";
    pub const OTHER_LEG: &CStr = c"Other-Leg-Unique-ID";
    pub const BRIDGE_A: &CStr = c"Bridge-A-Unique-ID";
    pub const CALLER: &CStr = c"Caller-Caller-ID-Number";
    pub const DESTINATION: &CStr = c"Caller-Destination-Number";
    pub const NETWORK_ADDR: &CStr = c"Caller-Network-Addr";
    pub const HANGUP_CAUSE: &CStr = c"Hangup-Cause";
    pub const AUTH_USER: &CStr = c"variable_sip_auth_username";
}

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

/// Why an event could not become a [`CallEvent`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadEvent {
    #[error("{0} event without a usable Unique-ID")]
    NoUuid(&'static str),
}

/// Builds the engine's event from a header getter. Pure: unit-tested without FreeSWITCH.
///
/// Missing or malformed optional headers leave their field empty; only a missing `Unique-ID` drops the event.
/// `other_leg` is filled for outbound legs only — it names the a-leg the channel belongs to — from
/// `variable_rtc_a_leg` (set on every leg the engine bridges), else `Other-Leg-Unique-ID`, else
/// `Bridge-A-Unique-ID`.
pub fn build_event<'a>(
    kind: EventKind,
    get: impl Fn(&'static CStr) -> Option<&'a str>,
) -> Result<CallEvent, BadEvent> {
    let uuid = get(header::UNIQUE_ID)
        .and_then(|u| CallId::parse(u).ok())
        .ok_or(BadEvent::NoUuid(kind.name()))?;
    let number = |h| {
        get(h)
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let mut ev = CallEvent::new(uuid, kind, number(header::SEQUENCE));
    ev.timestamp_us = number(header::TIMESTAMP);
    ev.direction = match get(header::DIRECTION) {
        Some(d) if d.eq_ignore_ascii_case("outbound") => Direction::Outbound,
        _ => Direction::Inbound,
    };
    if ev.direction == Direction::Outbound {
        ev.other_leg = [header::RTC_A_LEG, header::OTHER_LEG, header::BRIDGE_A]
            .into_iter()
            .find_map(|h| get(h).and_then(|v| CallId::parse(v).ok()));
    }
    if let Some(v) = get(header::CALLER) {
        ev.caller = v.into();
    }
    if let Some(v) = get(header::DESTINATION) {
        ev.destination = v.into();
    }
    ev.source_ip = get(header::NETWORK_ADDR).and_then(|v| v.trim().parse::<IpAddr>().ok());
    if matches!(
        kind,
        EventKind::ChannelHangup | EventKind::ChannelHangupComplete | EventKind::ChannelDestroy
    ) {
        ev.hangup_cause = get(header::HANGUP_CAUSE).and_then(HangupCause::parse);
    }
    if let Some(v) = get(header::AUTH_USER) {
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
    /// Events that arrived while no engine was installed (during load or shutdown).
    pub no_engine: AtomicU64,
    /// Time spent in the handler per event, nanoseconds.
    pub handler_ns: Histogram,
}

pub static STATS: IntakeStats = IntakeStats {
    accepted: AtomicU64::new(0),
    queue_full: AtomicU64::new(0),
    malformed: AtomicU64::new(0),
    no_engine: AtomicU64::new(0),
    handler_ns: Histogram::new(),
};

impl IntakeStats {
    /// Zeroes the counters (each load starts afresh, even if the library stayed mapped).
    pub fn reset(&self) {
        for c in [
            &self.accepted,
            &self.queue_full,
            &self.malformed,
            &self.no_engine,
        ] {
            c.store(0, Ordering::Relaxed);
        }
        self.handler_ns.reset();
    }

    /// Prometheus-style lines.
    pub fn metrics_text(&self) -> String {
        let h = self.handler_ns.snapshot();
        format!(
            "rtc_module_events_accepted_total {}\nrtc_module_events_dropped_total{{why=\"queue_full\"}} {}\n\
             rtc_module_events_dropped_total{{why=\"malformed\"}} {}\nrtc_module_events_dropped_total{{why=\"no_engine\"}} {}\n\
             rtc_module_event_handler_ns{{quantile=\"0.5\"}} {}\nrtc_module_event_handler_ns{{quantile=\"0.99\"}} {}\n\
             rtc_module_event_handler_ns{{quantile=\"1\"}} {}\nrtc_module_event_handler_ns_count {}\n",
            self.accepted.load(Ordering::Relaxed),
            self.queue_full.load(Ordering::Relaxed),
            self.malformed.load(Ordering::Relaxed),
            self.no_engine.load(Ordering::Relaxed),
            h.quantile(0.5),
            h.quantile(0.99),
            h.max(),
            h.count(),
        )
    }
}

/// The slot holding the engine handle the handler submits through.
///
/// Hand-written (two atomics) rather than arc-swap because shutdown needs more than a swap: it must know that
/// no handler is still using the old handle before it returns and the library may be unmapped. Handlers count
/// themselves in and out around the pointer load; with sequentially consistent ordering, a handler that saw the
/// old pointer is counted before [`Intake::remove`] reads the count.
pub struct Intake {
    /// Boxed handle, or null when no engine is installed.
    handle: AtomicPtr<HostHandle>,
    /// Handlers currently between their count-in and count-out.
    inside: AtomicUsize,
}

pub static INTAKE: Intake = Intake {
    handle: AtomicPtr::new(ptr::null_mut()),
    inside: AtomicUsize::new(0),
};

impl Intake {
    /// Installs the handle events go to.
    pub fn install(&self, handle: HostHandle) {
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
    pub fn remove(&self) -> Option<HostHandle> {
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
    fn with<R>(&self, f: impl FnOnce(&HostHandle) -> R) -> Option<R> {
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
            let get = |name: &'static CStr| -> Option<&str> {
                // SAFETY: the event is live; the header value it returns lives as long as the event, which outlives
                // this callback's use of it (copied into the CallEvent below).
                let value = unsafe { shim::rtc_event_get_header(event, name.as_ptr()) };
                // SAFETY: non-null header values are NUL-terminated strings.
                (!value.is_null())
                    .then(|| unsafe { CStr::from_ptr(value) })
                    .and_then(|v| v.to_str().ok())
            };
            deliver(build_event(kind, get));
        },
    );
    STATS.handler_ns.record(started.elapsed().as_nanos() as u64);
}

/// Offers an event to the engine and counts the outcome.
pub fn deliver(event: Result<CallEvent, BadEvent>) {
    let ev = match event {
        Ok(ev) => ev,
        Err(e) => {
            let n = STATS.malformed.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                log::warn!("dropped a channel event: {e} ({n} so far)");
            }
            return;
        }
    };
    match INTAKE.with(|h| h.submit(ev)) {
        Some(Ok(())) => {
            STATS.accepted.fetch_add(1, Ordering::Relaxed);
        }
        Some(Err(_)) => {
            let n = STATS.queue_full.fetch_add(1, Ordering::Relaxed) + 1;
            // Report the first overflow and then ever more rarely, so the log cannot flood.
            if n.is_power_of_two() {
                log::warn!(
                    "engine queue full: {n} channel events dropped so far; calls may be missed. The engine is \
                     falling behind FreeSWITCH's event rate (see rtc_core status)"
                );
            }
        }
        None => {
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

    fn build(kind: EventKind, headers: &[(&CStr, &'static str)]) -> Result<CallEvent, BadEvent> {
        let map: HashMap<&CStr, &'static str> = headers.iter().copied().collect();
        build_event(kind, |h| map.get(h).copied())
    }

    #[test]
    fn copies_the_fields_the_engine_uses() {
        let ev = build(
            EventKind::ChannelCreate,
            &[
                (header::UNIQUE_ID, A),
                (header::SEQUENCE, "42"),
                (header::TIMESTAMP, "1700000000123456"),
                (header::DIRECTION, "inbound"),
                (header::CALLER, "+15550001"),
                (header::DESTINATION, "4930123"),
                (header::NETWORK_ADDR, "192.0.2.10"),
                (header::AUTH_USER, "alice"),
                (header::OTHER_LEG, B),
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
                (header::UNIQUE_ID, B),
                (header::DIRECTION, "outbound"),
                (header::BRIDGE_A, A),
            ],
        )
        .expect("event");
        assert_eq!(ev.other_leg.map(|c| c.to_string()).as_deref(), Some(A));
        let ev = build(
            EventKind::ChannelAnswer,
            &[
                (header::UNIQUE_ID, B),
                (header::DIRECTION, "outbound"),
                (header::RTC_A_LEG, A),
                (header::OTHER_LEG, "not-a-uuid"),
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
                (header::UNIQUE_ID, A),
                (header::HANGUP_CAUSE, "USER_BUSY"),
                (header::SEQUENCE, "x"),
                (header::NETWORK_ADDR, "not an ip"),
            ],
        )
        .expect("event");
        assert_eq!(ev.hangup_cause, Some(HangupCause::USER_BUSY));
        assert_eq!(ev.sequence, 0);
        assert_eq!(ev.source_ip, None);
        assert_eq!(
            build(EventKind::ChannelHangup, &[]),
            Err(BadEvent::NoUuid("CHANNEL_HANGUP"))
        );
        assert!(build(EventKind::ChannelHangup, &[(header::UNIQUE_ID, "nope")]).is_err());
    }

    #[test]
    fn every_engine_kind_is_bound_once() {
        for k in EventKind::ALL {
            assert_eq!(BOUND.iter().filter(|(_, b)| *b == k).count(), 1, "{k:?}");
        }
    }
}
