//! Call control inside FreeSWITCH: the engine's [`CallCommand`]s carried out through the C API.
//!
//! The engine calls this on its own thread (the one non-FreeSWITCH thread allowed to call FreeSWITCH). Each
//! command locates the session by UUID — taking its read lock, released when the guard drops — so a call that
//! hung up meanwhile is simply skipped.
//!
//! - `SetVariables`: `switch_channel_set_variable` for each.
//! - `Hangup`: `switch_channel_hangup` with the cause.
//! - `LowBalance`: the CUSTOM event `rtc_core::low_balance` with the warning's headers (fired even when the channel
//!   is already gone), and the channel variable `rtc_low_balance` (seconds of paid talk left).
//! - `Bridge` (a call parked in the dialplan): the route is handed to the session's own thread by queueing
//!   `rtc_core route <b-leg uuid> <dial string>` on it (`switch_core_session_execute_application_async`, the
//!   call FreeSWITCH offers for running an application on a session from another thread; a parked channel runs it
//!   within one park-loop turn). The app bridges with `continue_on_fail`, so a failed route returns the channel
//!   to park and is reported to the engine, which then sends the next route or gives up.

use rtc_engine::CallId;
use rtc_engine::control::{CallCommand, CallControl, FraudAlert, LowBalance};

use crate::session::LocatedSession;
use crate::{app, custom};

/// Executes call commands on live FreeSWITCH sessions.
#[derive(Default)]
pub struct FsCallControl;

impl CallControl for FsCallControl {
    /// Gone when FreeSWITCH no longer has a session by the call's UUID (a lookup in its session table).
    fn channel_gone(&mut self, call: CallId) -> bool {
        LocatedSession::locate(call).is_none()
    }

    fn execute(&mut self, command: CallCommand) {
        let call = command.call();
        if let CallCommand::Fraud(alert) = &command {
            // An event only: the refusal or the hangup, if any, comes as its own command.
            if let Err(status) = custom::fire(custom::FRAUD, &alert.headers()) {
                log::warn!(
                    "call {call}: FreeSWITCH did not take the {} event (status {status})",
                    FraudAlert::SUBCLASS
                );
            }
            return;
        }
        if let CallCommand::LowBalance(warning) = &command {
            // The operator hears of it whether or not the channel is still there.
            if let Err(status) = custom::fire(custom::LOW_BALANCE, &warning.headers()) {
                log::warn!(
                    "call {call}: FreeSWITCH did not take the {} event (status {status})",
                    LowBalance::SUBCLASS
                );
            }
        }
        let Some(located) = LocatedSession::locate(call) else {
            log::debug!("call {call}: gone before {command:?} could be applied");
            return;
        };
        let session = located.session();
        let Some(channel) = session.channel() else {
            return;
        };
        match command {
            CallCommand::SetVariables { vars, .. } => {
                for v in vars {
                    if let Err(e) = channel.set_variable(v.name, &v.value) {
                        log::warn!("call {call}: {e}");
                    }
                }
            }
            CallCommand::Hangup { cause, .. } => channel.hangup(cause),
            CallCommand::Fraud(_) => {}
            CallCommand::LowBalance(warning) => {
                if let Err(e) =
                    channel.set_variable("rtc_low_balance", &warning.remaining_s.to_string())
                {
                    log::warn!("call {call}: {e}");
                }
            }
            CallCommand::Bridge { attempt, route, .. } => {
                let data = format!("route {} {}", call.leg(attempt), route.dial_string);
                log::debug!(
                    "call {call}: route {} (attempt {attempt}) queued: {data}",
                    route.carrier
                );
                if let Err(e) = located.execute_async(app::NAME, &data) {
                    log::error!(
                        "call {call}: cannot hand route {} to the parked channel: {e}",
                        route.carrier
                    );
                }
            }
        }
    }
}
