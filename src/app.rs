//! The dialplan application `rtc_core`: asks the engine for this call's decision and carries it out on the
//! session's own thread — the only thread allowed to run applications on it.
//!
//! `<action application="rtc_core"/>` (data: empty, or `wait_ms=<n>`): the call is described to the engine
//! from what FreeSWITCH saw (Unique-ID, caller number, destination, the caller profile's network address — the
//! transport source, never a header the caller wrote; none for channels FreeSWITCH created itself, which are
//! given [`BOX_ADDRESS`]; behind a SIP load balancer, for a call from a trusted proxy, the address in the proxy's
//! source header, as the event handler decides it), and the app waits for the decision, at most the engine's setup
//! timeout (or `wait_ms`). The engine keeps the description its CHANNEL_CREATE gave, when it had one: the app's
//! counts nothing (a call is counted once, by the handler).
//! - Connect: the `rtc_*` variables are set, `hangup_after_bridge=true`, and `bridge` runs over every route at
//!   once, joined by `|` so that FreeSWITCH fails over from one to the next; each leg carries
//!   `[rtc_a_leg=<uuid>,call_uuid=<uuid>]` so its events are tied back to this call. If every route fails, the call is hung up
//!   with the last route's cause.
//! - Refuse: `rtc_reject_reason` is set and the call hung up with the reason's cause.
//!
//! The same application also carries out the engine's bridge commands for parked calls (the park flow, see
//! [`crate::control`]): the engine thread queues `rtc_core route <b-leg uuid> <dial string>` on the parked
//! session, which runs it between park-loop turns. A failed attempt is reported to the engine as the outbound
//! leg's hangup (no channel may exist to report it, as with `error/...`), and the channel stays parked until the
//! engine sends the next route or gives up.

use std::ffi::{CStr, c_char};
use std::time::Duration;

use freeswitch_sys::switch_core_session_t;
use rtc_engine::core::{Decision, epoch_us};
use rtc_engine::domain::Route;
use rtc_engine::engine::QueryError;
use rtc_engine::reason::Reason;
use rtc_engine::{CallEvent, CallId, Direction, EventKind, HangupCause};
use rtc_proxy::ProxyTrust;

use crate::events::BOX_ADDRESS;
use crate::host::HostHandle;
use crate::session::{Channel, Session};
use crate::{guard, state};

/// The application's name in the dialplan.
pub const NAME: &CStr = c"rtc_core";
pub const SHORT_DESC: &CStr = c"Decide this call with mod_rtc_core and bridge it over its routes";
pub const LONG_DESC: &CStr =
    c"Waits for the call engine's decision on this call (partner, auth, balance, rate, route), sets the \
rtc_* channel variables and bridges the call over its routes with failover (or, with transfer=<context> or the \
transfer-context setting, sets rtc_dial and transfers the call there), or hangs it up with the mapped cause when it \
is refused. `route <uuid> <dial string>` is queued by the module itself for parked calls.";
pub const SYNTAX: &CStr = c"[wait_ms=<milliseconds>] [transfer=<context>]";

/// The variable every leg the module places carries: the a-leg's UUID.
pub const A_LEG_VAR: &str = "rtc_a_leg";

/// What the application was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppData {
    /// From the dialplan: decide the call and carry the decision out; `None` waits the engine's setup timeout.
    Decide {
        wait: Option<Duration>,
        /// Transfer a connected call to this dialplan context instead of bridging it (else `transfer-context`).
        transfer: Option<String>,
    },
    /// Queued by the engine for a parked call: try one route, tagging the outbound leg with `b_leg` as its UUID.
    Route { b_leg: CallId, dial: String },
}

/// Parses the app's data.
pub fn parse_data(data: &str) -> Result<AppData, String> {
    let data = data.trim();
    if data.is_empty() {
        return Ok(AppData::Decide {
            wait: None,
            transfer: None,
        });
    }
    if let Some(rest) = data.strip_prefix("route ") {
        let (uuid, dial) = rest
            .trim_start()
            .split_once(' ')
            .ok_or_else(|| format!("bad data {data:?}: want route <uuid> <dial string>"))?;
        let b_leg = CallId::parse(uuid).map_err(|e| format!("bad data {data:?}: {e}"))?;
        let dial = dial.trim();
        if dial.is_empty() {
            return Err(format!("bad data {data:?}: no dial string"));
        }
        return Ok(AppData::Route {
            b_leg,
            dial: dial.to_owned(),
        });
    }
    let mut wait = None;
    let mut transfer = None;
    for word in data.split_whitespace() {
        if let Some(ms) = word.strip_prefix("wait_ms=") {
            let ms = ms.parse::<u64>().map_err(|_| {
                format!("bad data {data:?}: wait_ms wants a number of milliseconds")
            })?;
            wait = Some(Duration::from_millis(ms));
        } else if let Some(context) = word.strip_prefix("transfer=") {
            if context.is_empty() {
                return Err(format!(
                    "bad data {data:?}: transfer wants a dialplan context"
                ));
            }
            transfer = Some(context.to_owned());
        } else {
            return Err(format!(
                "bad data {data:?}: want wait_ms=<milliseconds> and/or transfer=<context>, or nothing"
            ));
        }
    }
    Ok(AppData::Decide { wait, transfer })
}

/// One leg of a dial string with `vars` (`name=value,...`) as its per-leg variables. A leading `{...}` or
/// `[...]` group of the route's own dial string is merged in as per-leg variables: inside a `|` failover list
/// FreeSWITCH reads `{...}` only at the very start of the whole string, `[...]` before every leg.
pub fn tagged_leg(vars: &str, dial: &str) -> String {
    let dial = dial.trim();
    for (open, close) in [('{', '}'), ('[', ']')] {
        if let Some(inner) = dial.strip_prefix(open)
            && let Some(end) = inner.find(close)
        {
            let (own, rest) = (&inner[..end], &inner[end + 1..]);
            return if own.trim().is_empty() {
                format!("[{vars}]{rest}")
            } else {
                format!("[{vars},{own}]{rest}")
            };
        }
    }
    format!("[{vars}]{dial}")
}

/// The per-leg variables of the leg `leg` the module places for call `a_leg`: `rtc_a_leg` names the call, and
/// FreeSWITCH's own `call_uuid` (which its bridge sets to the a-leg's UUID anyway) does from the start — the
/// event handler reads it among the leading headers of every event, where `variable_*` headers come last; a
/// loopback route carries both to its far half, which is how that inbound channel is known as part of this call.
/// `origination_uuid` is the route's leg UUID ([`CallId::leg`]): the engine knows from it which route answered,
/// for the CDR's carrier.
pub fn leg_vars(a_leg: CallId, leg: CallId) -> String {
    format!("{A_LEG_VAR}={a_leg},call_uuid={a_leg},origination_uuid={leg}")
}

/// The failover dial string for `routes`: every leg tagged with its [`leg_vars`], joined by `|`.
pub fn failover_dial(a_leg: CallId, routes: &[Route]) -> String {
    routes
        .iter()
        .enumerate()
        .map(|(i, r)| {
            tagged_leg(
                &leg_vars(a_leg, a_leg.leg(i.min(255) as u8)),
                &r.dial_string,
            )
        })
        .collect::<Vec<_>>()
        .join("|")
}

/// The decision when the engine gave none.
fn fallback(err: &QueryError, handle: Option<&HostHandle>) -> Decision {
    let reason = match err {
        QueryError::Timeout(_) => Reason::SetupTimeout,
        QueryError::Stopped => Reason::ServiceDown,
    };
    let cause = handle.map_or(reason.default_cause(), |h| {
        h.config.engine.causes.cause(reason)
    });
    Decision::Refuse { reason, cause }
}

/// Sets one variable, logging a refusal.
fn set(call: &str, channel: &Channel<'_>, name: &str, value: &str) {
    if let Err(e) = channel.set_variable(name, value) {
        log::warn!("call {call}: {e}");
    }
}

/// Hangs up with `reason`'s cause after setting `rtc_reject_reason`.
fn refuse(call: &str, channel: &Channel<'_>, reason: Reason, cause: HangupCause) {
    set(call, channel, "rtc_reject_reason", reason.name());
    log::info!(
        "call {call}: refused ({}), hanging up with {cause}",
        reason.name()
    );
    channel.hangup(cause);
}

/// Runs `bridge` with `dial` on the session, as the engine's calls want it: the call ends when the bridged leg
/// does, and a failure returns here instead of hanging up. Returns the failure's cause, or `None` when the bridge
/// connected (or the channel went away meanwhile).
fn bridge(
    call: &str,
    session: &Session<'_>,
    channel: &Channel<'_>,
    dial: &str,
) -> Option<HangupCause> {
    set(call, channel, "hangup_after_bridge", "true");
    set(call, channel, "continue_on_fail", "true");
    if let Err(e) = channel.clear_variable("originate_failed_cause") {
        log::warn!("call {call}: {e}");
    }
    if let Err(e) = session.execute(c"bridge", dial) {
        log::error!("call {call}: {e}");
        return Some(HangupCause::NORMAL_TEMPORARY_FAILURE);
    }
    let failed = channel.variable("originate_failed_cause")?;
    if !channel.ready() {
        return None;
    }
    Some(HangupCause::parse(&failed).unwrap_or(HangupCause::NORMAL_TEMPORARY_FAILURE))
}

/// The engine's view of this channel, from what FreeSWITCH saw; behind a SIP load balancer (`proxy`), a trusted
/// proxy's call is identified by its source header, read only for such a call.
fn describe(call: CallId, channel: &Channel<'_>, proxy: Option<&ProxyTrust>) -> CallEvent {
    let mut ev = CallEvent::new(call, EventKind::ChannelCreate, 0);
    ev.timestamp_us = epoch_us();
    ev.direction = Direction::Inbound;
    if let Some(v) = channel.profile_field(c"caller_id_number") {
        ev.caller = v.into();
    }
    if let Some(v) = channel.profile_field(c"destination_number") {
        ev.destination = v.into();
    }
    ev.source_ip = match channel.profile_field(c"network_addr") {
        Some(addr) => {
            let transport = addr.trim().parse().ok();
            match (proxy, transport) {
                (Some(p), Some(t)) if p.trusted.contains(t) => {
                    let header = channel.variable(&p.header.variable());
                    let repeated = header.is_some()
                        && channel.variable(&p.header.repeated_variable()).is_some();
                    Some(p.judge(t, header.as_deref(), repeated).source(t))
                }
                _ => transport,
            }
        }
        None => Some(BOX_ADDRESS),
    };
    if let Some(v) = channel.variable("sip_auth_username") {
        ev.auth_user = v.into();
    }
    ev
}

/// Decide mode: the dialplan asked.
fn decide(
    session: &Session<'_>,
    channel: &Channel<'_>,
    call: CallId,
    wait: Option<Duration>,
    transfer: Option<String>,
) {
    let call_text = call.to_string();
    if channel.outbound() {
        log::warn!(
            "call {call_text}: rtc_core runs on inbound channels; this one is outbound (placed by FreeSWITCH), \
             nothing to decide"
        );
        return;
    }
    if let Some(a) = channel.variable(A_LEG_VAR) {
        log::debug!("call {call_text}: a leg of call {a} placed by the engine; nothing to decide");
        return;
    }
    let handle = state::handle();
    let decision = match &handle {
        Some(h) => {
            let wait = wait.unwrap_or(h.config.engine.setup_timeout);
            h.engine
                .await_decision(describe(call, channel, h.proxy.as_deref()), wait)
                .unwrap_or_else(|e| {
                    log::warn!("call {call_text}: no decision: {e}");
                    fallback(&e, Some(h))
                })
        }
        None => fallback(&QueryError::Stopped, None),
    };
    match decision {
        Decision::Refuse { reason, cause } => refuse(&call_text, channel, reason, cause),
        Decision::Connect { routes, vars, .. } => {
            for v in &vars {
                set(&call_text, channel, v.name, &v.value);
            }
            if routes.is_empty() {
                refuse(
                    &call_text,
                    channel,
                    Reason::NoRoute,
                    handle
                        .as_ref()
                        .map_or(Reason::NoRoute.default_cause(), |h| {
                            h.config.engine.causes.cause(Reason::NoRoute)
                        }),
                );
                return;
            }
            let dial = failover_dial(call, &routes);
            let transfer = transfer.or_else(|| handle.as_ref()?.config.transfer_context.clone());
            if let Some(context) = transfer {
                // The operator's dialplan connects the call: it gets the failover dial string, tagged as the
                // engine's own bridge would be (its legs are followed and the CDR names the carrier).
                set(&call_text, channel, "rtc_dial", &dial);
                set(&call_text, channel, "rtc_routes", &routes.len().to_string());
                let destination = channel
                    .profile_field(c"destination_number")
                    .unwrap_or_else(|| "rtc".into());
                let target = format!("{destination} XML {context}");
                log::debug!("call {call_text}: decided, transferred to {target}");
                if let Err(e) = session.execute(c"transfer", &target) {
                    log::error!("call {call_text}: cannot transfer to {target}: {e}");
                    channel.hangup(HangupCause::NORMAL_TEMPORARY_FAILURE);
                }
                return;
            }
            log::debug!(
                "call {call_text}: bridging over {} route(s): {dial}",
                routes.len()
            );
            if let Some(cause) = bridge(&call_text, session, channel, &dial) {
                log::info!(
                    "call {call_text}: every route failed ({} tried), hanging up with the last cause {cause}",
                    routes.len()
                );
                channel.hangup(cause);
            }
        }
    }
}

/// Route mode: the engine's bridge command for a parked call.
fn route(session: &Session<'_>, channel: &Channel<'_>, call: CallId, b_leg: CallId, dial: &str) {
    let call_text = call.to_string();
    let dial = tagged_leg(&leg_vars(call, b_leg), dial);
    log::debug!("call {call_text}: bridging from park: {dial}");
    let Some(cause) = bridge(&call_text, session, channel, &dial) else {
        return;
    };
    log::info!("call {call_text}: route failed with {cause}; the engine decides what next");
    // The outbound leg's hangup, as the engine would have seen it had the leg existed (with `error/...` or a
    // failed originate it never did). A real leg's own hangup for the same UUID counts once.
    let mut ev = CallEvent::new(b_leg, EventKind::ChannelHangup, 0);
    ev.timestamp_us = epoch_us();
    ev.direction = Direction::Outbound;
    ev.other_leg = Some(call);
    ev.hangup_cause = Some(cause);
    match state::handle() {
        Some(h) => {
            if let Err(e) = h.engine.submit_event(ev) {
                log::warn!("call {call_text}: could not report the failed route: {e}");
            }
        }
        None => channel.hangup(cause),
    }
}

fn run(session: *mut switch_core_session_t, data: *const c_char) {
    // SAFETY: FreeSWITCH runs the application with a live session on this thread for the call's duration.
    let Some(session) = (unsafe { Session::from_callback(session) }) else {
        return;
    };
    let Some(channel) = session.channel() else {
        return;
    };
    let Some(call) = session.call_id() else {
        log::error!("rtc_core app: the session has no usable UUID; hanging up");
        channel.hangup(HangupCause::NORMAL_TEMPORARY_FAILURE);
        return;
    };
    let data = if data.is_null() {
        ""
    } else {
        // SAFETY: FreeSWITCH passes NUL-terminated application data valid for the call.
        unsafe { CStr::from_ptr(data) }.to_str().unwrap_or("")
    };
    match parse_data(data) {
        Ok(AppData::Decide { wait, transfer }) => decide(&session, &channel, call, wait, transfer),
        Ok(AppData::Route { b_leg, dial }) => route(&session, &channel, call, b_leg, &dial),
        Err(e) => {
            log::warn!(
                "call {call}: rtc_core app: {e}; deciding with the defaults (the engine's wait, transfer-context)"
            );
            decide(&session, &channel, call, None, None);
        }
    }
}

/// The application function registered with FreeSWITCH.
pub(crate) unsafe extern "C" fn entry(session: *mut switch_core_session_t, data: *const c_char) {
    guard::entry(
        "dialplan app rtc_core",
        || {
            // Fail only this call.
            // SAFETY: as in `run`: the session FreeSWITCH passed is live for this callback.
            if let Some(channel) = unsafe { Session::from_callback(session) }
                .as_ref()
                .and_then(Session::channel)
            {
                channel.hangup(HangupCause::NORMAL_TEMPORARY_FAILURE);
            }
        },
        || run(session, data),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "4b2a1c3e-9f10-4d2b-8a7e-0123456789ab";
    const B: &str = "0e7c5a1f-2222-4d2b-8a7e-0123456789ff";

    fn route(dial: &str) -> Route {
        Route {
            carrier: "c".into(),
            dial_string: dial.into(),
            cost_per_minute: Default::default(),
        }
    }

    #[test]
    fn data() {
        assert_eq!(
            parse_data(""),
            Ok(AppData::Decide {
                wait: None,
                transfer: None
            })
        );
        assert_eq!(
            parse_data(" wait_ms=250 "),
            Ok(AppData::Decide {
                wait: Some(Duration::from_millis(250)),
                transfer: None
            })
        );
        assert_eq!(
            parse_data("transfer=carriers wait_ms=9"),
            Ok(AppData::Decide {
                wait: Some(Duration::from_millis(9)),
                transfer: Some("carriers".into())
            })
        );
        assert!(parse_data("wait=3").is_err());
        assert!(parse_data("wait_ms=x").is_err());
        assert!(parse_data("transfer=").is_err());
        assert_eq!(
            parse_data(&format!("route {B} [x=1]loopback/1/ctx")),
            Ok(AppData::Route {
                b_leg: CallId::parse(B).expect("uuid"),
                dial: "[x=1]loopback/1/ctx".into()
            })
        );
        assert!(parse_data("route not-a-uuid x").is_err());
        assert!(parse_data(&format!("route {B}")).is_err());
    }

    #[test]
    fn dial_strings_tag_every_leg() {
        let a = CallId::parse(A).expect("uuid");
        let dial = failover_dial(
            a,
            &[
                route("error/NORMAL_TEMPORARY_FAILURE"),
                route("{absolute_codec_string=PCMU}sofia/gateway/x/1"),
                route("[leg=1]loopback/1/rtc_answer"),
            ],
        );
        assert_eq!(
            dial,
            format!(
                "[rtc_a_leg={A},call_uuid={A},origination_uuid={}]error/NORMAL_TEMPORARY_FAILURE|\
                 [rtc_a_leg={A},call_uuid={A},origination_uuid={},absolute_codec_string=PCMU]sofia/gateway/x/1|\
                 [rtc_a_leg={A},call_uuid={A},origination_uuid={},leg=1]loopback/1/rtc_answer",
                a.leg(0),
                a.leg(1),
                a.leg(2)
            )
        );
        assert_eq!(tagged_leg("v=1", "{}x/y"), "[v=1]x/y");
    }

    #[test]
    fn no_answer_means_setup_timeout_and_a_stopped_engine_service_down() {
        let d = fallback(&QueryError::Timeout(Duration::from_secs(1)), None);
        assert_eq!(
            d,
            Decision::Refuse {
                reason: Reason::SetupTimeout,
                cause: HangupCause::RECOVERY_ON_TIMER_EXPIRE
            }
        );
        let d = fallback(&QueryError::Stopped, None);
        assert!(matches!(
            d,
            Decision::Refuse {
                reason: Reason::ServiceDown,
                ..
            }
        ));
    }
}
