//! Call control inside FreeSWITCH: the engine's [`CallCommand`]s carried out through the C API.
//!
//! The engine calls this on its own thread (the one non-FreeSWITCH thread allowed to call FreeSWITCH). Each
//! command locates the session by UUID — taking its read lock, released when the guard drops — so a call that
//! hung up meanwhile is simply skipped.

use rtc_engine::control::{CallCommand, CallControl};

use crate::session::LocatedSession;

/// Executes call commands on live FreeSWITCH sessions.
#[derive(Default)]
pub struct FsCallControl;

impl CallControl for FsCallControl {
    fn execute(&mut self, command: CallCommand) {
        let call = command.call();
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
            CallCommand::Bridge { attempt, route, .. } => {
                // Bridging from the engine thread needs an execute-on-session path (switch_ivr / uuid_transfer)
                // that is not built yet; the dialplan app's variables drive bridging meanwhile.
                log::error!(
                    "call {call}: in-process bridge (attempt {attempt}, carrier {}) is not implemented; \
                     bridge from the dialplan using the rtc_* variables",
                    route.carrier
                );
            }
        }
    }
}
