//! The dialplan application `rtc_core`: waits (bounded) for the engine's decision on this call, then sets the
//! `rtc_*` channel variables and lets the dialplan go on, or hangs up with the decision's cause.
//!
//! Runs on the call's session thread, which FreeSWITCH gave us: the only thread allowed to act on the
//! session it was handed. Data: empty, or `wait_ms=<n>` to bound the wait differently from the engine's.

use std::ffi::{CStr, c_char};
use std::time::Duration;

use freeswitch_sys::switch_core_session_t;
use rtc_engine::HangupCause;
use rtc_engine::reason::Reason;

use crate::host::{Decision, HostError};
use crate::session::{Channel, Session};
use crate::{guard, module};

/// The application's name in the dialplan.
pub const NAME: &CStr = c"rtc_core";
pub const SHORT_DESC: &CStr = c"Apply mod_rtc_core's decision to this call";
pub const LONG_DESC: &CStr =
    c"Waits for the call engine's decision on this call (partner, auth, balance, rate, route), \
sets the rtc_* channel variables, and hangs the call up with the mapped cause when it is refused.";
pub const SYNTAX: &CStr = c"[wait_ms=<milliseconds>]";

/// Parses the app's data: `None` for the engine's default wait.
pub fn parse_wait(data: &str) -> Result<Option<Duration>, String> {
    let data = data.trim();
    if data.is_empty() {
        return Ok(None);
    }
    let ms = data
        .strip_prefix("wait_ms=")
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| format!("bad data {data:?}: want wait_ms=<milliseconds> or nothing"))?;
    Ok(Some(Duration::from_millis(ms)))
}

/// The decision when the engine gave none.
fn fallback(err: &HostError) -> Decision {
    let reason = match err {
        HostError::Timeout(_) => Reason::SetupTimeout,
        _ => Reason::ServiceDown,
    };
    Decision::Reject {
        reason,
        cause: reason.default_cause(),
        vars: Vec::new(),
    }
}

/// Carries a decision out on the channel.
fn apply(call: &str, channel: &Channel<'_>, decision: Decision) {
    let vars = match &decision {
        Decision::Proceed { vars } | Decision::Reject { vars, .. } => vars,
    };
    for v in vars {
        if let Err(e) = channel.set_variable(v.name, &v.value) {
            log::warn!("call {call}: {e}");
        }
    }
    if let Decision::Reject { reason, cause, .. } = decision {
        if let Err(e) = channel.set_variable("rtc_reject_reason", reason.name()) {
            log::warn!("call {call}: {e}");
        }
        log::info!(
            "call {call}: refused ({}), hanging up with {cause}",
            reason.name()
        );
        channel.hangup(cause);
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
    let call_text = call.to_string();
    let data = if data.is_null() {
        ""
    } else {
        // SAFETY: FreeSWITCH passes NUL-terminated application data valid for the call.
        unsafe { CStr::from_ptr(data) }.to_str().unwrap_or("")
    };
    let wait = parse_wait(data).unwrap_or_else(|e| {
        log::warn!("call {call_text}: rtc_core app: {e}; using the engine's wait");
        None
    });
    let decision = match module::handle() {
        Some(h) => {
            let wait = wait.unwrap_or(h.decision_wait());
            h.decide(call, wait).unwrap_or_else(|e| {
                log::warn!("call {call_text}: no decision: {e}");
                fallback(&e)
            })
        }
        None => fallback(&HostError::Stopped),
    };
    apply(&call_text, &channel, decision);
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

    #[test]
    fn wait_data() {
        assert_eq!(parse_wait(""), Ok(None));
        assert_eq!(
            parse_wait(" wait_ms=250 "),
            Ok(Some(Duration::from_millis(250)))
        );
        assert!(parse_wait("wait=3").is_err());
    }

    #[test]
    fn no_answer_means_setup_timeout_and_a_stopped_engine_service_down() {
        let d = fallback(&HostError::Timeout(Duration::from_secs(1)));
        assert!(matches!(
            d,
            Decision::Reject {
                reason: Reason::SetupTimeout,
                cause: HangupCause::RECOVERY_ON_TIMER_EXPIRE,
                ..
            }
        ));
        let d = fallback(&HostError::Stopped);
        assert!(matches!(
            d,
            Decision::Reject {
                reason: Reason::ServiceDown,
                ..
            }
        ));
    }
}
