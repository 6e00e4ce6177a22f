//! Channel events into the engine: the handler FreeSWITCH's event dispatch threads call.
//!
//! The handler copies the dozen header values the engine uses into a small owned [`CallEvent`] and offers it
//! to the engine's bounded queue with `try_send` semantics: it never blocks FreeSWITCH, and an event that does
//! not fit is counted and reported, not waited for. Its own time is measured into a lock-free histogram
//! (`rtc_core metrics`).
//!
//! The handle the handler submits through lives in an [`Intake`] slot: installed at load before the events are
//! bound ([`EventBindings`]), removed at shutdown after they are unbound, and only freed once no handler is still
//! inside. The same slot holds the load balancers' rule ([`ProxyTrust`]): behind a SIP load balancer a new call's
//! source is taken from the header a trusted proxy adds ([`apply_proxy`]), and that header from anyone else is
//! counted as a spoofing attempt ([`IntakeStats::sources`]).

use std::ffi::{CStr, CString, c_char};
use std::net::{IpAddr, Ipv4Addr};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use freeswitch_sys::{self as fs, SWITCH_STATUS_SUCCESS};
use rtc_engine::engine::{EngineHandle, SubmitError};
use rtc_engine::event::is_true;
use rtc_engine::{CallEvent, CallId, Direction, EventKind, HangupCause};
use rtc_proxy::{ProxyTrust, Reporter, SourceHeader, Verdict};

use crate::histogram::Histogram;
use crate::shim;

/// The channel-event headers the engine uses, in the order of their bits in the one-pass reader's masks.
///
/// All but the [`Field::VARIABLES`] are among the headers FreeSWITCH puts first — the event's own, the channel's and
/// its caller profiles' — ahead of the channel variables (`variable_*`), which are two thirds of a channel event's
/// ~150 headers. The reader stops at the first variable unless the event needs [`Field::VARIABLES`]. The last two
/// are named by the configuration (`source-header`), and registered at load only when it names one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Field {
    UniqueId,
    Sequence,
    Timestamp,
    Direction,
    /// FreeSWITCH's `call_uuid`: the call a channel belongs to. Its own UUID on a new inbound channel; the a-leg's
    /// on every leg the module places (set on the dial string, and carried by a loopback route to its far half).
    CallUuid,
    OtherLeg,
    Caller,
    Destination,
    NetworkAddr,
    /// The caller profile's source: the endpoint module that created the channel (`mod_sofia` for SIP).
    Source,
    /// The caller profile's dialplan context (the engine may take calls from some contexts only).
    Context,
    HangupCause,
    RtcALeg,
    AuthUser,
    /// `rtc_core=true`, set by the dialplan before `park`: the engine drives the parked call.
    RtcCore,
    /// Behind a SIP load balancer: `variable_sip_h_<source-header>`, the caller's address as a trusted proxy wrote it.
    SourceHeader,
    /// `variable_sip_h_<source-header>-1`: the INVITE carried that header twice.
    SourceRepeated,
}

impl Field {
    pub const ALL: [Field; 17] = [
        Field::UniqueId,
        Field::Sequence,
        Field::Timestamp,
        Field::Direction,
        Field::CallUuid,
        Field::OtherLeg,
        Field::Caller,
        Field::Destination,
        Field::NetworkAddr,
        Field::Source,
        Field::Context,
        Field::HangupCause,
        Field::RtcALeg,
        Field::AuthUser,
        Field::RtcCore,
        Field::SourceHeader,
        Field::SourceRepeated,
    ];

    /// The channel variables the handler reads, on the few events that go that far ([`variables_to_read`]).
    pub const VARIABLES: [Field; 5] = [
        Field::RtcALeg,
        Field::AuthUser,
        Field::RtcCore,
        Field::SourceHeader,
        Field::SourceRepeated,
    ];

    /// The source header's two variables ([`Field::SourceHeader`], [`Field::SourceRepeated`]).
    pub const SOURCE: u32 = Field::mask(&[Field::SourceHeader, Field::SourceRepeated]);

    /// The FreeSWITCH header name (a static C string: the C reader keeps the pointer); `None` for the source header's
    /// variables, whose names the configuration gives ([`init_reader`]).
    pub const fn header(self) -> Option<&'static CStr> {
        Some(match self {
            Field::UniqueId => c"Unique-ID",
            Field::Sequence => c"Event-Sequence",
            Field::Timestamp => c"Event-Date-Timestamp",
            Field::Direction => c"Call-Direction",
            Field::CallUuid => c"Channel-Call-UUID",
            Field::OtherLeg => c"Other-Leg-Unique-ID",
            Field::Caller => c"Caller-Caller-ID-Number",
            Field::Destination => c"Caller-Destination-Number",
            // The caller profile's network_addr: the transport source address FreeSWITCH received the call from
            // (for SIP, the packet's source), never a header the caller wrote.
            Field::NetworkAddr => c"Caller-Network-Addr",
            Field::Source => c"Caller-Source",
            Field::Context => c"Caller-Context",
            Field::HangupCause => c"Hangup-Cause",
            Field::RtcALeg => c"variable_rtc_a_leg",
            Field::AuthUser => c"variable_sip_auth_username",
            Field::RtcCore => c"variable_rtc_core",
            Field::SourceHeader | Field::SourceRepeated => return None,
        })
    }

    const fn bit(self) -> u32 {
        1 << self as u32
    }

    /// The mask of `fields`.
    pub const fn mask(fields: &[Field]) -> u32 {
        let mut m = 0;
        let mut i = 0;
        while i < fields.len() {
            m |= fields[i].bit();
            i += 1;
        }
        m
    }
}

/// The fields every event of `kind` needs, all among its first two dozen headers (the event's own and the
/// channel's, ahead of the caller profile's 35). They are always there: this read does not stop at the channel
/// variables.
pub const fn leading(kind: EventKind) -> u32 {
    let base = Field::mask(&[
        Field::UniqueId,
        Field::Sequence,
        Field::Timestamp,
        Field::Direction,
        Field::CallUuid,
    ]);
    match kind {
        EventKind::ChannelHangup | EventKind::ChannelHangupComplete | EventKind::ChannelDestroy => {
            base | Field::HangupCause.bit()
        }
        _ => base,
    }
}

/// What an event whose [`leading`] fields `get` reads needs next, and whether that read may stop at the first
/// channel variable (it looks for a header that may be absent):
/// - a new inbound call (CHANNEL_CREATE, or CHANNEL_PARK: a parked channel whose creation was missed becomes a
///   call): its caller profile's number, destination, address, source and context;
/// - an outbound leg whose `call_uuid` does not name another channel: `Other-Leg-Unique-ID`;
/// - anything else: nothing (`0`).
pub fn then_read<'a>(kind: EventKind, get: impl Fn(Field) -> Option<&'a str>) -> (u32, bool) {
    // `call_uuid` is looked at only where it decides something: one header value less to fetch elsewhere.
    match (direction(get(Field::Direction)), kind) {
        (Direction::Inbound, EventKind::ChannelCreate | EventKind::ChannelPark) => (
            Field::mask(&[
                Field::Caller,
                Field::Destination,
                Field::NetworkAddr,
                Field::Source,
                Field::Context,
            ]),
            false,
        ),
        (Direction::Inbound, _) => (0, false),
        (Direction::Outbound, _) if placed_by(&get).is_none() => (Field::OtherLeg.bit(), true),
        (Direction::Outbound, _) => (0, false),
    }
}

/// The channel variables an event needs, once its [`leading`] and [`then_read`] fields are read (`0`: it does not
/// go on into them, two thirds of its headers):
/// - the CHANNEL_CREATE of a new inbound SIP call (`Caller-Source` mod_sofia): `sip_auth_username` (mod_sofia sets
///   it on a digest-authenticated call), and the `rtc_a_leg` mark should its `call_uuid` not have said already that
///   it is a leg the module placed; behind a load balancer (`proxy`), the source header too, whoever sent the call:
///   from a trusted proxy it is believed, from anyone else counted as a spoofing attempt. That read walks the
///   variables to their end already (a call rarely has both others), so one more name costs one more slot in the
///   reader's table, not one more walk;
/// - the CHANNEL_PARK of an inbound channel: `rtc_core`, without which the engine leaves a parked call alone; and the
///   source header of a SIP call from a trusted proxy, for a call whose CHANNEL_CREATE was missed.
pub fn variables_to_read<'a>(
    kind: EventKind,
    get: impl Fn(Field) -> Option<&'a str>,
    proxy: Option<&ProxyTrust>,
) -> u32 {
    if direction(get(Field::Direction)) == Direction::Outbound {
        return 0;
    }
    let sip = get(Field::Source) == Some("mod_sofia");
    match kind {
        EventKind::ChannelCreate if sip && placed_by(&get).is_none() => {
            Field::mask(&[Field::RtcALeg, Field::AuthUser])
                | if proxy.is_some() { Field::SOURCE } else { 0 }
        }
        EventKind::ChannelPark => {
            let trusted = proxy.is_some_and(|p| {
                get(Field::NetworkAddr)
                    .and_then(|a| a.trim().parse::<IpAddr>().ok())
                    .is_some_and(|a| p.trusted.contains(a))
            });
            Field::RtcCore.bit() | if sip && trusted { Field::SOURCE } else { 0 }
        }
        _ => 0,
    }
}

fn direction(value: Option<&str>) -> Direction {
    match value {
        Some(d) if d.eq_ignore_ascii_case("outbound") => Direction::Outbound,
        _ => Direction::Inbound,
    }
}

/// The call a channel's `call_uuid` says it belongs to, when that is another channel.
fn placed_by<'a>(get: &impl Fn(Field) -> Option<&'a str>) -> Option<CallId> {
    let own = get(Field::UniqueId).and_then(|u| CallId::parse(u).ok())?;
    get(Field::CallUuid)
        .and_then(|v| CallId::parse(v).ok())
        .filter(|c| *c != own)
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
    /// A channel parked without `rtc_core=true`: parked for something else, not for the engine to bridge.
    #[error("CHANNEL_PARK of {0} without rtc_core=true")]
    UnmarkedPark(CallId),
}

/// Builds the engine's event from a header getter. Pure: unit-tested without FreeSWITCH.
///
/// Missing or malformed optional headers leave their field empty; only a missing `Unique-ID` drops the event.
/// `other_leg` names, for an outbound leg, the a-leg it belongs to: `variable_rtc_a_leg` when it was read, else
/// `Channel-Call-UUID` when it names another channel (the module sets it on every leg it places, FreeSWITCH on
/// every leg it bridges), else `Other-Leg-Unique-ID` (the originator: every leg the module bridges is placed from
/// its a-leg's session). For a new inbound channel that is part of a call already —
/// the far half of a loopback route the module placed, marked by `call_uuid` or `rtc_a_leg` — it names that call,
/// and the engine keeps the channel as the call's own leg instead of deciding it. An inbound channel without a
/// network address gets [`BOX_ADDRESS`].
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
    ev.direction = direction(get(Field::Direction));
    if kind == EventKind::ChannelPark
        && ev.direction == Direction::Inbound
        && !get(Field::RtcCore).is_some_and(is_true)
    {
        return Err(Skipped::UnmarkedPark(uuid));
    }
    let id = |f| get(f).and_then(|v| CallId::parse(v).ok());
    let marked = id(Field::RtcALeg);
    if ev.direction == Direction::Outbound {
        ev.other_leg = marked
            .or_else(|| placed_by(&get))
            .or_else(|| id(Field::OtherLeg));
    } else if kind == EventKind::ChannelCreate {
        ev.other_leg = marked.or_else(|| placed_by(&get));
    }
    if let Some(v) = get(Field::Caller) {
        ev.caller = v.into();
    }
    if let Some(v) = get(Field::Destination) {
        ev.destination = v.into();
    }
    if let Some(v) = get(Field::Context) {
        ev.context = v.into();
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

/// Behind a SIP load balancer: the source a new inbound SIP call (its CHANNEL_CREATE, or the CHANNEL_PARK of one whose
/// creation was missed) is identified by under `proxy`'s rule, written into `ev.source_ip`, and the verdict (to be
/// counted on the CHANNEL_CREATE only: a call is identified once). Any other event, a leg the module placed, a channel
/// no SIP INVITE created or one without an address: [`Verdict::Direct`], the event untouched. Pure.
pub fn apply_proxy<'a>(
    kind: EventKind,
    ev: &mut CallEvent,
    get: &impl Fn(Field) -> Option<&'a str>,
    proxy: &ProxyTrust,
) -> Verdict<'a> {
    let new_call = matches!(kind, EventKind::ChannelCreate | EventKind::ChannelPark)
        && ev.direction == Direction::Inbound
        && ev.other_leg.is_none()
        && get(Field::Source) == Some("mod_sofia");
    let Some(transport) = ev.source_ip.filter(|_| new_call) else {
        return Verdict::Direct;
    };
    let verdict = proxy.judge(
        transport,
        get(Field::SourceHeader),
        get(Field::SourceRepeated).is_some(),
    );
    ev.source_ip = Some(verdict.source(transport));
    verdict
}

/// The engine's event from a header getter ([`build_event`]), its source decided under `proxy`'s rule when there is
/// one ([`apply_proxy`]), the verdict on a new call counted (and warned about, rate-limited) in
/// [`IntakeStats::sources`].
pub fn read_event<'a>(
    kind: EventKind,
    get: impl Fn(Field) -> Option<&'a str>,
    proxy: Option<&ProxyTrust>,
) -> Result<CallEvent, Skipped> {
    let mut ev = build_event(kind, &get)?;
    if let Some(p) = proxy {
        let verdict = apply_proxy(kind, &mut ev, &get, p);
        if kind == EventKind::ChannelCreate {
            STATS.sources.record(&ev.uuid, &p.header, &verdict);
        }
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
    /// CHANNEL_PARK events of channels without `rtc_core=true`: parked for something else.
    pub unmarked_parks: AtomicU64,
    /// Time spent in the handler per event, nanoseconds.
    pub handler_ns: Histogram,
    /// Behind a SIP load balancer: new calls' source headers by outcome (believed, absent, refused, spoofed), and the
    /// rate-limited warnings about them.
    pub sources: Reporter,
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
    unmarked_parks: AtomicU64::new(0),
    handler_ns: Histogram::new(),
    sources: Reporter::new(),
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
            &self.unmarked_parks,
            &self.last_full_warning_s,
            &self.full_reported,
        ] {
            c.store(0, Ordering::Relaxed);
        }
        self.handler_ns.reset();
        self.sources.reset();
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

/// What the handler works with while the engine runs.
pub struct Installed {
    /// Where events go.
    pub engine: EngineHandle,
    /// Behind a SIP load balancer: the trusted proxies and their source header; `None`: every call is identified by
    /// its transport source. Its header is always the one registered with the reader at load ([`init_reader`]).
    pub proxy: Option<Arc<ProxyTrust>>,
}

/// The slot holding what the handler submits through ([`Installed`]).
///
/// Hand-written (two atomics) rather than arc-swap because shutdown needs more than a swap: it must know that
/// no handler is still using the old handle before it returns and the library may be unmapped. Handlers count
/// themselves in and out around the pointer load; with sequentially consistent ordering, a handler that saw the
/// old pointer is counted before [`Intake::remove`] reads the count.
pub struct Intake {
    /// Boxed handle, or null when no engine is installed.
    handle: AtomicPtr<Installed>,
    /// Handlers currently between their count-in and count-out.
    inside: AtomicUsize,
}

pub static INTAKE: Intake = Intake {
    handle: AtomicPtr::new(ptr::null_mut()),
    inside: AtomicUsize::new(0),
};

impl Intake {
    /// Installs the handle events go to, and the load balancers' rule (at load, and when a reload changes it).
    pub fn install(&self, engine: EngineHandle, proxy: Option<Arc<ProxyTrust>>) {
        let old = self.handle.swap(
            Box::into_raw(Box::new(Installed { engine, proxy })),
            Ordering::SeqCst,
        );
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
        (!old.is_null()).then(|| unsafe { Box::from_raw(old) }.engine)
    }

    fn wait_until_idle(&self) {
        while self.inside.load(Ordering::SeqCst) != 0 {
            std::thread::yield_now();
        }
    }

    /// Runs `f` with what is installed, if anything.
    fn with<R>(&self, f: impl FnOnce(Option<&Installed>) -> R) -> R {
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
        f((!p.is_null()).then(|| unsafe { &*p }))
    }
}

/// The source header's two variables as events name them (`variable_sip_h_<name>`, `variable_sip_h_<name>-1`): the
/// C reader keeps the pointers, so the strings live here from one load to the next, replaced only while no event is
/// bound.
static SOURCE_NAMES: Mutex<Option<[CString; 2]>> = Mutex::new(None);

/// The same names' pointers, for the per-header reader; null while no source header is registered.
static SOURCE_PTRS: [AtomicPtr<c_char>; 2] = [
    AtomicPtr::new(ptr::null_mut()),
    AtomicPtr::new(ptr::null_mut()),
];

/// The header name the readers look for as `f` (null: the source header's, when none is registered).
fn name_ptr(f: Field) -> *const c_char {
    match f.header() {
        Some(name) => name.as_ptr(),
        None => SOURCE_PTRS[f as usize - Field::SourceHeader as usize].load(Ordering::Relaxed),
    }
}

/// Registers [`Field`]'s header names with the C reader, with `source`'s variables when the configuration names a
/// source header (it cannot change until the next load). Called at load, before the events are bound.
pub fn init_reader(source: Option<&SourceHeader>) {
    let mut held = SOURCE_NAMES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    // A header name is a token (rtc_proxy checks it): no NUL.
    *held = source.map(|h| {
        [h.variable(), h.repeated_variable()]
            .map(|v| CString::new(format!("variable_{v}")).unwrap_or_default())
    });
    for (i, slot) in SOURCE_PTRS.iter().enumerate() {
        let p = held.as_ref().map_or(ptr::null(), |names| names[i].as_ptr());
        slot.store(p.cast_mut(), Ordering::Relaxed);
    }
    let ptrs: [*const c_char; Field::ALL.len()] = Field::ALL.map(name_ptr);
    // The source header's fields are last: without one, the reader knows the others only.
    let known = if held.is_some() {
        Field::ALL.len()
    } else {
        Field::SourceHeader as usize
    };
    // SAFETY: the names are static C strings or held in SOURCE_NAMES until the next load (the reader keeps the
    // pointers); called before any event is bound, so no reader runs concurrently.
    let status = unsafe { shim::rtc_event_fields_init(ptrs.as_ptr(), known as i32) };
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
            INTAKE.with(|installed| read_and_deliver(event, kind, installed));
        },
    );
    STATS.handler_ns.record(started.elapsed().as_nanos() as u64);
}

/// Reads what `event` (live, of `kind`) needs and offers it to the engine `installed` holds.
fn read_and_deliver(
    event: *mut fs::switch_event_t,
    kind: EventKind,
    installed: Option<&Installed>,
) {
    let proxy = installed.and_then(|i| i.proxy.as_deref());
    let text = |value: *const c_char| -> Option<&str> {
        // SAFETY: non-null header values are NUL-terminated strings owned by the event, which outlives
        // this callback's use of them (copied into the CallEvent).
        (!value.is_null())
            .then(|| unsafe { CStr::from_ptr(value) })
            .and_then(|v| v.to_str().ok())
    };
    if PER_HEADER.load(Ordering::Relaxed) {
        let get = |f| {
            let name = name_ptr(f);
            // SAFETY: the event is live; the name is null (skipped) or a C string held until the next load.
            (!name.is_null())
                .then(|| text(unsafe { shim::rtc_event_get_header(event, name) }))
                .flatten()
        };
        deliver(read_event(kind, get, proxy), installed);
        return;
    }
    // Up to three reads, each going on from where the one before stopped once that one found all it
    // looked for. If it did not (a header FreeSWITCH always sends was missing), it went on to the end, or
    // to the channel variables, past headers the next read needs: that one starts over from the first.
    // SAFETY (the three reads): the event is live; `values` has room for every registered field and
    // starts cleared; `from` is null or a header of the same event returned by the read before.
    let all_found = |values: &[*const c_char], mask: u32| {
        Field::ALL
            .iter()
            .all(|f| mask & f.bit() == 0 || !values[*f as usize].is_null())
    };
    let lead = leading(kind);
    let mut values = [ptr::null::<c_char>(); Field::ALL.len()];
    let mut rest =
        unsafe { shim::rtc_event_fields(event, ptr::null(), values.as_mut_ptr(), lead, 0) };
    let (next, may_stop) = then_read(kind, |f| text(values[f as usize]));
    if next != 0 {
        let from = if all_found(&values, lead) {
            rest
        } else {
            ptr::null()
        };
        rest = unsafe {
            shim::rtc_event_fields(event, from, values.as_mut_ptr(), next, i32::from(may_stop))
        };
    }
    let variables = variables_to_read(kind, |f| text(values[f as usize]), proxy);
    if variables != 0 {
        let from = if all_found(&values, lead | next) {
            rest
        } else {
            ptr::null()
        };
        unsafe { shim::rtc_event_fields(event, from, values.as_mut_ptr(), variables, 0) };
    }
    deliver(
        read_event(kind, |f| text(values[f as usize]), proxy),
        installed,
    );
}

/// Offers an event to the engine `installed` holds and counts the outcome.
pub fn deliver(event: Result<CallEvent, Skipped>, installed: Option<&Installed>) {
    let ev = match event {
        Ok(ev) => ev,
        Err(Skipped::UnmarkedPark(_)) => {
            STATS.unmarked_parks.fetch_add(1, Ordering::Relaxed);
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
    match installed.map(|i| i.engine.submit_event(ev)) {
        Some(Ok(())) => {
            STATS.accepted.fetch_add(1, Ordering::Relaxed);
        }
        Some(Err(SubmitError::QueueFull(_))) => STATS.full(),
        Some(Err(SubmitError::Stopped)) | None => {
            STATS.no_engine.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The module's removable event bindings.
pub struct EventBindings {
    /// One node per bound event type, as `switch_event_bind_removable` filled them.
    nodes: Vec<NonNull<fs::switch_event_node_t>>,
}

// SAFETY: the nodes are tokens FreeSWITCH hands back to switch_event_unbind; they are only touched under the
// loaded state's mutex (`state::LOADED`), from load and shutdown.
unsafe impl Send for EventBindings {}

impl EventBindings {
    /// Binds every channel event the engine follows, for the module `owner`; on failure, unbinds what was bound.
    pub fn bind(owner: &'static CStr) -> Result<EventBindings, String> {
        let mut bindings = EventBindings {
            nodes: Vec::with_capacity(BOUND.len()),
        };
        for (event_type, kind) in BOUND {
            let mut node: *mut fs::switch_event_node_t = ptr::null_mut();
            // SAFETY: the owner id is a static C string (FreeSWITCH copies it), a null subclass means any, the
            // callback is our guarded handler, and `node` receives the binding token.
            let status = unsafe {
                fs::switch_event_bind_removable(
                    owner.as_ptr(),
                    event_type,
                    ptr::null(),
                    Some(on_event),
                    ptr::null_mut(),
                    &mut node,
                )
            };
            match NonNull::new(node) {
                Some(node) if status == SWITCH_STATUS_SUCCESS => bindings.nodes.push(node),
                _ => {
                    bindings.unbind();
                    return Err(format!("cannot bind {} (status {status})", kind.name()));
                }
            }
        }
        Ok(bindings)
    }

    /// Removes every binding. FreeSWITCH's unbind waits for deliveries in progress.
    pub fn unbind(&mut self) {
        for node in self.nodes.drain(..).rev() {
            let mut raw = node.as_ptr();
            // SAFETY: `raw` is a token from switch_event_bind_removable, unbound exactly once.
            let status = unsafe { fs::switch_event_unbind(&mut raw) };
            if status != SWITCH_STATUS_SUCCESS {
                log::warn!("switch_event_unbind returned status {status}");
            }
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
                (Field::OtherLeg, A),
                (Field::CallUuid, B),
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
        // The inbound side of a loopback route carries call_uuid (and rtc_a_leg) naming call A: created as part of
        // call A, not a new call.
        for mark in [Field::CallUuid, Field::RtcALeg] {
            let ev =
                build(EventKind::ChannelCreate, &[(Field::UniqueId, B), (mark, A)]).expect("event");
            assert_eq!(ev.direction, Direction::Inbound);
            assert_eq!(ev.other_leg.map(|c| c.to_string()).as_deref(), Some(A));
        }
        // A new channel's call_uuid is its own UUID: a call to decide.
        let ev = build(
            EventKind::ChannelCreate,
            &[(Field::UniqueId, A), (Field::CallUuid, A)],
        )
        .expect("event");
        assert_eq!(ev.other_leg, None);
        // Only the creation marks a channel: later, FreeSWITCH moves call_uuid about (bridges, transfers).
        let ev = build(
            EventKind::ChannelAnswer,
            &[(Field::UniqueId, A), (Field::CallUuid, B)],
        )
        .expect("event");
        assert_eq!(ev.other_leg, None);
        // An outbound leg without Other-Leg-Unique-ID names its call by call_uuid.
        let ev = build(
            EventKind::ChannelProgress,
            &[
                (Field::UniqueId, B),
                (Field::Direction, "outbound"),
                (Field::CallUuid, A),
            ],
        )
        .expect("event");
        assert_eq!(ev.other_leg.map(|c| c.to_string()).as_deref(), Some(A));
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
    fn each_event_reads_only_what_it_needs() {
        let get = |headers: &'static [(Field, &'static str)]| {
            move |f: Field| headers.iter().find(|(h, _)| *h == f).map(|(_, v)| *v)
        };
        const SIP: &[(Field, &str)] = &[
            (Field::UniqueId, A),
            (Field::CallUuid, A),
            (Field::Source, "mod_sofia"),
        ];
        const LOOPBACK: &[(Field, &str)] = &[
            (Field::UniqueId, A),
            (Field::CallUuid, A),
            (Field::Source, "mod_loopback"),
        ];
        const PLACED: &[(Field, &str)] = &[
            (Field::UniqueId, B),
            (Field::CallUuid, A),
            (Field::Source, "mod_sofia"),
        ];
        const OUT: &[(Field, &str)] = &[
            (Field::UniqueId, B),
            (Field::Direction, "outbound"),
            (Field::CallUuid, B),
        ];
        const OUT_PLACED: &[(Field, &str)] = &[
            (Field::UniqueId, B),
            (Field::Direction, "outbound"),
            (Field::CallUuid, A),
        ];
        let profile = Field::mask(&[
            Field::Caller,
            Field::Destination,
            Field::NetworkAddr,
            Field::Source,
            Field::Context,
        ]);
        let tail = Field::mask(&Field::VARIABLES);
        use EventKind::*;
        assert_eq!(then_read(ChannelCreate, get(SIP)), (profile, false));
        assert_eq!(then_read(ChannelPark, get(PLACED)), (profile, false));
        assert_eq!(then_read(ChannelAnswer, get(SIP)), (0, false));
        let digest = Field::mask(&[Field::RtcALeg, Field::AuthUser]);
        assert_eq!(variables_to_read(ChannelCreate, get(SIP), None), digest);
        assert_eq!(
            variables_to_read(ChannelCreate, get(LOOPBACK), None),
            0,
            "no digest user"
        );
        assert_eq!(
            variables_to_read(ChannelCreate, get(PLACED), None),
            0,
            "own leg"
        );
        assert_eq!(
            variables_to_read(ChannelPark, get(LOOPBACK), None),
            Field::RtcCore.bit()
        );
        assert!(
            ["true", "YES", "on", "1", "allow"]
                .iter()
                .all(|v| is_true(v))
        );
        assert!(
            ["false", "no", "0", "", "maybe"]
                .iter()
                .all(|v| !is_true(v))
        );
        for kind in EventKind::ALL {
            assert_eq!(
                then_read(kind, get(OUT)),
                (Field::OtherLeg.bit(), true),
                "{kind:?}"
            );
            assert_eq!(then_read(kind, get(OUT_PLACED)), (0, false), "{kind:?}");
            assert_eq!(variables_to_read(kind, get(OUT), None), 0, "{kind:?}");
            if !matches!(kind, ChannelCreate | ChannelPark) {
                assert_eq!(variables_to_read(kind, get(SIP), None), 0, "{kind:?}");
            }
            // The leading read: never a variable, never the caller profile.
            assert_eq!(leading(kind) & (tail | profile), 0, "{kind:?}");
            assert_ne!(leading(kind) & Field::UniqueId.bit(), 0, "{kind:?}");
        }
        assert_ne!(leading(ChannelHangup) & Field::HangupCause.bit(), 0);
        for f in Field::ALL {
            // The source header's names are the configuration's: variables too (`variable_sip_h_<name>`).
            let variable = f
                .header()
                .is_none_or(|h| h.to_bytes().starts_with(b"variable_"));
            assert_eq!(variable, Field::VARIABLES.contains(&f), "{f:?}");
        }
    }

    fn trust(proxies: &str) -> ProxyTrust {
        ProxyTrust {
            trusted: rtc_proxy::TrustedProxies::parse(proxies).expect("proxies"),
            header: SourceHeader::parse("X-Source-IP").expect("header"),
        }
    }

    #[test]
    fn behind_a_balancer_new_sip_calls_read_the_source_header() {
        let get = |headers: &'static [(Field, &'static str)]| {
            move |f: Field| headers.iter().find(|(h, _)| *h == f).map(|(_, v)| *v)
        };
        const FROM_PROXY: &[(Field, &str)] = &[
            (Field::UniqueId, A),
            (Field::CallUuid, A),
            (Field::Source, "mod_sofia"),
            (Field::NetworkAddr, "10.0.0.5"),
        ];
        const FROM_ELSEWHERE: &[(Field, &str)] = &[
            (Field::UniqueId, A),
            (Field::CallUuid, A),
            (Field::Source, "mod_sofia"),
            (Field::NetworkAddr, "192.0.2.200"),
        ];
        const LOOPBACK: &[(Field, &str)] = &[
            (Field::UniqueId, A),
            (Field::Source, "mod_loopback"),
            (Field::NetworkAddr, "10.0.0.5"),
        ];
        let p = trust("10.0.0.0/24");
        let digest = Field::mask(&[Field::RtcALeg, Field::AuthUser]);
        use EventKind::*;
        // Every new SIP call reads it (from anyone else it is a spoofing attempt to count); nothing else does.
        for headers in [FROM_PROXY, FROM_ELSEWHERE] {
            assert_eq!(
                variables_to_read(ChannelCreate, get(headers), Some(&p)),
                digest | Field::SOURCE
            );
        }
        assert_eq!(variables_to_read(ChannelCreate, get(LOOPBACK), Some(&p)), 0);
        // A park reads it only for a trusted proxy's call (its creation may have been missed).
        assert_eq!(
            variables_to_read(ChannelPark, get(FROM_PROXY), Some(&p)),
            Field::RtcCore.bit() | Field::SOURCE
        );
        assert_eq!(
            variables_to_read(ChannelPark, get(FROM_ELSEWHERE), Some(&p)),
            Field::RtcCore.bit()
        );
        for kind in EventKind::ALL {
            if !matches!(kind, ChannelCreate | ChannelPark) {
                assert_eq!(variables_to_read(kind, get(FROM_PROXY), Some(&p)), 0);
            }
        }
    }

    #[test]
    fn behind_a_balancer_the_source_is_the_trusted_proxys_header() {
        let p = trust("10.0.0.0/24 2001:db8:1b::/48");
        let decide = |kind: EventKind, headers: &[(Field, &'static str)]| {
            let map: HashMap<usize, &'static str> =
                headers.iter().map(|&(f, v)| (f as usize, v)).collect();
            let get = |f: Field| map.get(&(f as usize)).copied();
            let mut ev = build_event(kind, get).expect("event");
            let verdict = apply_proxy(kind, &mut ev, &get, &p);
            (ev.source_ip.map(|ip| ip.to_string()), verdict.outcome())
        };
        let sip = |addr: &'static str, header: Option<&'static str>| {
            let mut h = vec![
                (Field::UniqueId, A),
                (Field::Source, "mod_sofia"),
                (Field::NetworkAddr, addr),
            ];
            h.extend(header.map(|v| (Field::SourceHeader, v)));
            h
        };
        use rtc_proxy::Outcome::*;
        let s = |v: &str| Some(v.to_owned());
        assert_eq!(
            decide(
                EventKind::ChannelCreate,
                &sip("10.0.0.5", Some("192.0.2.10"))
            ),
            (s("192.0.2.10"), Some(Believed))
        );
        assert_eq!(
            decide(
                EventKind::ChannelCreate,
                &sip("2001:db8:1b::9", Some("2001:db8:a::7"))
            ),
            (s("2001:db8:a::7"), Some(Believed))
        );
        assert_eq!(
            decide(
                EventKind::ChannelCreate,
                &sip("10.0.0.5", Some("198.51.100.9, 192.0.2.10"))
            ),
            (s("192.0.2.10"), Some(Believed)),
            "X-Forwarded-For: the entry the trusted proxy wrote"
        );
        assert_eq!(
            decide(EventKind::ChannelPark, &{
                let mut h = sip("10.0.0.5", Some("192.0.2.10"));
                h.push((Field::RtcCore, "true"));
                h
            }),
            (s("192.0.2.10"), Some(Believed))
        );
        assert_eq!(
            decide(EventKind::ChannelCreate, &sip("10.0.0.5", None)),
            (s("10.0.0.5"), Some(Absent))
        );
        assert_eq!(
            decide(
                EventKind::ChannelCreate,
                &sip("10.0.0.5", Some("lb-7.example"))
            ),
            (s("10.0.0.5"), Some(Refused))
        );
        let mut twice = sip("10.0.0.5", Some("192.0.2.10"));
        twice.push((Field::SourceRepeated, "203.0.113.5"));
        assert_eq!(
            decide(EventKind::ChannelCreate, &twice),
            (s("10.0.0.5"), Some(Refused))
        );
        assert_eq!(
            decide(
                EventKind::ChannelCreate,
                &sip("192.0.2.200", Some("192.0.2.10"))
            ),
            (s("192.0.2.200"), Some(Spoofed))
        );
        assert_eq!(
            decide(EventKind::ChannelCreate, &sip("192.0.2.200", None)),
            (s("192.0.2.200"), None)
        );
        // Only new inbound SIP calls: not a loopback channel, a leg the module placed, or a later event.
        let loopback = [
            (Field::UniqueId, A),
            (Field::Source, "mod_loopback"),
            (Field::SourceHeader, "192.0.2.10"),
        ];
        assert_eq!(
            decide(EventKind::ChannelCreate, &loopback),
            (s("127.0.0.1"), None)
        );
        let mut placed = sip("10.0.0.5", Some("192.0.2.10"));
        placed[0] = (Field::UniqueId, B);
        placed.push((Field::CallUuid, A));
        assert_eq!(
            decide(EventKind::ChannelCreate, &placed),
            (s("10.0.0.5"), None)
        );
        assert_eq!(
            decide(
                EventKind::ChannelAnswer,
                &sip("10.0.0.5", Some("192.0.2.10"))
            ),
            (s("10.0.0.5"), None)
        );
    }

    #[test]
    fn only_parks_marked_rtc_core_go_to_the_engine() {
        let park = |headers: &[(Field, &'static str)]| build(EventKind::ChannelPark, headers);
        assert_eq!(
            park(&[(Field::UniqueId, A)]),
            Err(Skipped::UnmarkedPark(CallId::parse(A).expect("uuid")))
        );
        assert!(park(&[(Field::UniqueId, A), (Field::RtcCore, "false")]).is_err());
        let ev = park(&[(Field::UniqueId, A), (Field::RtcCore, "true")]).expect("event");
        assert_eq!(ev.kind, EventKind::ChannelPark);
        // An outbound leg's park is the engine's to see as any other event of its leg.
        assert!(park(&[(Field::UniqueId, B), (Field::Direction, "outbound")]).is_ok());
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
