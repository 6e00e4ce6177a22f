//! The fs_cli command `rtc_core <sub>`: parses the subcommand, asks the engine, writes its answer.
//!
//! Output always goes through the shim's `"%s"` writer. Bad arguments get a usage line (and success status,
//! as FreeSWITCH's own commands do), so fs_cli shows the line rather than a generic error.

use std::ffi::{CStr, c_char};
use std::time::Duration;

use freeswitch_sys::{
    SWITCH_STATUS_GENERR, SWITCH_STATUS_SUCCESS, switch_core_session_t, switch_status_t,
};
use rtc_engine::CallId;

use crate::host::{HostError, Query};
use crate::logging::c_text;
use crate::{events, guard, module, shim};

/// The command's name in fs_cli.
pub const NAME: &CStr = c"rtc_core";
/// One-line description for `show api`.
pub const DESCRIPTION: &CStr = c"mod_rtc_core: call engine status and control";
/// Syntax line for `show api` and the usage message.
pub const SYNTAX: &CStr = c"<status|calls|call <uuid>|breakers|metrics|reload|help>";

/// How long an API command waits for the engine.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

/// A parsed `rtc_core` subcommand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Status,
    Calls,
    Call(CallId),
    Breakers,
    Metrics,
    Reload,
    Help,
    /// Panics on purpose (test builds with the `panic-test` feature only).
    #[cfg(feature = "panic-test")]
    Panic,
}

/// Why a command line was not understood; shown above the usage line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    #[error("missing subcommand")]
    Missing,
    #[error("unknown subcommand {0:?}")]
    Unknown(String),
    #[error("`call` needs a channel UUID")]
    MissingUuid,
    #[error("{0}")]
    BadUuid(String),
    #[error("`{0}` takes no arguments")]
    Extra(&'static str),
}

/// Parses the text after `rtc_core`.
pub fn parse(cmd: &str) -> Result<Command, UsageError> {
    let mut words = cmd.split_whitespace();
    let sub = words.next().ok_or(UsageError::Missing)?;
    let plain = |c: Command, name: &'static str, rest: &mut std::str::SplitWhitespace<'_>| {
        if rest.next().is_some() {
            Err(UsageError::Extra(name))
        } else {
            Ok(c)
        }
    };
    match sub.to_ascii_lowercase().as_str() {
        "status" => plain(Command::Status, "status", &mut words),
        "calls" => plain(Command::Calls, "calls", &mut words),
        "breakers" => plain(Command::Breakers, "breakers", &mut words),
        "metrics" => plain(Command::Metrics, "metrics", &mut words),
        "reload" => plain(Command::Reload, "reload", &mut words),
        "help" => plain(Command::Help, "help", &mut words),
        "call" => {
            let uuid = words.next().ok_or(UsageError::MissingUuid)?;
            let id = CallId::parse(uuid).map_err(|e| UsageError::BadUuid(e.to_string()))?;
            plain(Command::Call(id), "call <uuid>", &mut words)
        }
        #[cfg(feature = "panic-test")]
        "panic" => Ok(Command::Panic),
        other => Err(UsageError::Unknown(other.chars().take(40).collect())),
    }
}

/// The usage line.
pub fn usage() -> String {
    format!("-USAGE: rtc_core {}\n", SYNTAX.to_string_lossy())
}

const HELP: &str = "rtc_core status          engine summary, event intake counters\n\
rtc_core calls           live calls\n\
rtc_core call <uuid>     one call and its trace\n\
rtc_core breakers        circuit breaker state per service\n\
rtc_core metrics         counters and latency histograms (Prometheus text)\n\
rtc_core reload          re-read rtc_core.conf.xml\n\
rtc_core help            this text\n";

/// Runs a command line and returns fs_cli's text.
pub fn run(cmd: &str) -> String {
    let command = match parse(cmd) {
        Ok(c) => c,
        Err(e) => return format!("-ERR {e}\n{}", usage()),
    };
    if command == Command::Help {
        return HELP.to_string();
    }
    #[cfg(feature = "panic-test")]
    if command == Command::Panic {
        panic!("rtc_core panic: requested by the panic-test API subcommand");
    }
    let Some(handle) = module::handle() else {
        return "-ERR mod_rtc_core is not running (loading or unloading)\n".to_string();
    };
    let answer = match command {
        Command::Status => handle.query(Query::Status, ANSWER_WITHIN).map(|mut s| {
            s.push_str(&module_status());
            s
        }),
        Command::Calls => handle.query(Query::Calls, ANSWER_WITHIN),
        Command::Call(id) => handle.query(Query::Call(id), ANSWER_WITHIN),
        Command::Breakers => handle.query(Query::Breakers, ANSWER_WITHIN),
        Command::Metrics => handle.query(Query::Metrics, ANSWER_WITHIN).map(|mut s| {
            s.push_str(&events::STATS.metrics_text());
            s.push_str(&format!(
                "rtc_module_panics_total {}\n",
                guard::panics_caught()
            ));
            s
        }),
        Command::Reload => match module::read_config() {
            Ok(config) => handle
                .reload(config, ANSWER_WITHIN)
                .map(|s| format!("+OK {s}\n")),
            Err(e) => Err(HostError::Config(e.to_string())),
        },
        Command::Help => unreachable!("answered above"),
        #[cfg(feature = "panic-test")]
        Command::Panic => unreachable!("panicked above"),
    };
    match answer {
        Ok(text) => text,
        Err(e) => format!("-ERR {e}\n"),
    }
}

fn module_status() -> String {
    use std::sync::atomic::Ordering::Relaxed;
    let s = &events::STATS;
    format!(
        "intake: accepted {} dropped(queue_full {}, malformed {}, no_engine {}) handler_p99_ns {}\n\
         panics_caught: {}\nheaders: {}\n",
        s.accepted.load(Relaxed),
        s.queue_full.load(Relaxed),
        s.malformed.load(Relaxed),
        s.no_engine.load(Relaxed),
        s.handler_ns.snapshot().quantile(0.99),
        guard::panics_caught(),
        if freeswitch_sys::USING_STUB {
            "stub (not built against a FreeSWITCH install)"
        } else {
            "freeswitch"
        },
    )
}

/// The API function registered with FreeSWITCH.
pub(crate) unsafe extern "C" fn entry(
    cmd: *const c_char,
    _session: *mut switch_core_session_t,
    stream: *mut freeswitch_sys::switch_stream_handle_t,
) -> switch_status_t {
    let write = move |text: &str| {
        let text = c_text(text);
        // SAFETY: FreeSWITCH passes a live stream for the call; the text is NUL-terminated and written as "%s".
        unsafe { shim::rtc_stream_write(stream, text.as_ptr()) };
    };
    guard::entry(
        "API rtc_core",
        || {
            write("-ERR rtc_core: internal error (logged); the command did nothing\n");
            SWITCH_STATUS_GENERR
        },
        || {
            let cmd = if cmd.is_null() {
                ""
            } else {
                // SAFETY: FreeSWITCH passes a NUL-terminated command string valid for the call.
                unsafe { CStr::from_ptr(cmd) }.to_str().unwrap_or("")
            };
            write(&run(cmd));
            SWITCH_STATUS_SUCCESS
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_subcommands() {
        assert_eq!(parse("status"), Ok(Command::Status));
        assert_eq!(parse("  CALLS "), Ok(Command::Calls));
        let id = "4b2a1c3e-9f10-4d2b-8a7e-0123456789ab";
        assert_eq!(
            parse(&format!("call {id}")),
            Ok(Command::Call(CallId::parse(id).expect("uuid")))
        );
        assert_eq!(parse(""), Err(UsageError::Missing));
        assert_eq!(parse("call"), Err(UsageError::MissingUuid));
        assert!(matches!(parse("call xyz"), Err(UsageError::BadUuid(_))));
        assert_eq!(parse("status now"), Err(UsageError::Extra("status")));
        assert_eq!(
            parse("frobnicate"),
            Err(UsageError::Unknown("frobnicate".into()))
        );
    }

    #[test]
    fn bad_arguments_get_the_usage_line() {
        let out = run("frobnicate %s%n");
        assert!(out.starts_with("-ERR unknown subcommand"), "{out}");
        assert!(out.contains("-USAGE: rtc_core <status|"), "{out}");
        assert!(run("help").contains("rtc_core reload"));
    }
}
