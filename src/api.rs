//! The fs_cli command `rtc_core <sub>`: parses the subcommand, asks the engine, writes its answer.
//!
//! Output always goes through the shim's `"%s"` writer. Bad arguments get a usage line (and success status,
//! as FreeSWITCH's own commands do), so fs_cli shows the line rather than a generic error.

use std::collections::HashMap;
use std::ffi::{CStr, c_char};
use std::time::Duration;

use freeswitch_sys::{
    SWITCH_STATUS_GENERR, SWITCH_STATUS_SUCCESS, switch_core_session_t, switch_status_t,
};
use rtc_config::services::Backend;
use rtc_engine::CallId;
use rtc_engine::engine::{Query, QueryError, QueryReply};
use rtc_engine::service::ServiceKind;
use rtc_ledger::{AccountRef, Answer, LedgerError, LedgerHandle, Money, Op};

use crate::host::{HostHandle, not_live};
use crate::logging::c_text;
use crate::{events, guard, report, shim, state};

/// The command's name in fs_cli.
pub const NAME: &CStr = c"rtc_core";
/// One-line description for `show api`.
pub const DESCRIPTION: &CStr = c"mod_rtc_core: call engine status and control";
/// Syntax line for `show api` and the usage message.
pub const SYNTAX: &CStr = c"<status|calls|call <uuid>|balance [<partner>]|topup <partner> <amount> <reference>|fraud|unblock <partner>|breakers|metrics|reload|help>";

/// How long an API command waits for the engine.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

/// A parsed `rtc_core` subcommand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Status,
    Calls,
    Call(CallId),
    /// One partner's money and live calls, or (`None`) every account's.
    Balance(Option<String>),
    /// Money paid in by a partner: applied once per reference.
    TopUp {
        partner: String,
        amount: Money,
        reference: String,
    },
    /// The fraud rules' blocks and latest hits.
    Fraud,
    /// Lifts a partner's fraud block.
    Unblock(String),
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
    #[error("`unblock` needs a partner: rtc_core unblock <partner>")]
    MissingPartner,
    #[error("{0}")]
    BadUuid(String),
    #[error("`{0}` takes no arguments")]
    Extra(&'static str),
    #[error("`{0}` takes no more arguments")]
    ExtraAfter(&'static str),
    #[error(
        "`topup` needs a partner, an amount and a reference: rtc_core topup <partner> <amount> <reference>"
    )]
    TopUpArguments,
    #[error("amount {0:?} is not a positive decimal with at most 6 decimals (e.g. 25 or 10.50)")]
    BadAmount(String),
    #[error(
        "reference {0:?} is not 1 to {REFERENCE_MAX} printable ASCII characters without spaces (e.g. the payment's id)"
    )]
    BadReference(String),
}

/// Longest top-up reference accepted.
pub const REFERENCE_MAX: usize = 64;

/// A top-up's amount: a positive decimal, at most 6 decimals, no sign.
fn parse_amount(text: &str) -> Result<Money, UsageError> {
    let bad = || UsageError::BadAmount(text.chars().take(40).collect());
    if !text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(bad());
    }
    Money::parse(text)
        .filter(|m| *m > Money::ZERO)
        .ok_or_else(bad)
}

/// A top-up's reference: what makes a repeat of the same payment harmless.
fn parse_reference(text: &str) -> Result<String, UsageError> {
    if (1..=REFERENCE_MAX).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(text.to_owned())
    } else {
        Err(UsageError::BadReference(text.chars().take(80).collect()))
    }
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
        "fraud" => plain(Command::Fraud, "fraud", &mut words),
        "unblock" => {
            let partner = words.next().ok_or(UsageError::MissingPartner)?;
            plain(
                Command::Unblock(partner.to_owned()),
                "unblock <partner>",
                &mut words,
            )
        }
        "metrics" => plain(Command::Metrics, "metrics", &mut words),
        "reload" => plain(Command::Reload, "reload", &mut words),
        "help" => plain(Command::Help, "help", &mut words),
        "call" => {
            let uuid = words.next().ok_or(UsageError::MissingUuid)?;
            let id = CallId::parse(uuid).map_err(|e| UsageError::BadUuid(e.to_string()))?;
            plain(Command::Call(id), "call <uuid>", &mut words)
        }
        "balance" => {
            let partner = words.next().map(str::to_owned);
            if words.next().is_some() {
                return Err(UsageError::ExtraAfter("balance <partner>"));
            }
            Ok(Command::Balance(partner))
        }
        "topup" => {
            let (Some(partner), Some(amount), Some(reference)) =
                (words.next(), words.next(), words.next())
            else {
                return Err(UsageError::TopUpArguments);
            };
            let command = Command::TopUp {
                partner: partner.to_owned(),
                amount: parse_amount(amount)?,
                reference: parse_reference(reference)?,
            };
            if words.next().is_some() {
                return Err(UsageError::ExtraAfter(
                    "topup <partner> <amount> <reference>",
                ));
            }
            Ok(command)
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

const HELP: &str = "rtc_core status          engine summary: uptime, live calls by state, events/s, queue, breakers, admission\n\
rtc_core calls           live calls\n\
rtc_core call <uuid>     one call and its trace (live, or among the last finished ones)\n\
rtc_core balance [<partner>]  a partner's money and live calls; without a partner, one CSV line per account\n\
rtc_core topup <partner> <amount> <reference>  money paid in, applied once per reference (a repeat is harmless)\n\
rtc_core fraud           fraud rules: partners blocked now, the latest hits, counters per rule\n\
rtc_core unblock <partner>  lifts a partner's fraud block before its cool-down ends\n\
rtc_core breakers        circuit breaker state per HTTP service\n\
rtc_core metrics         counters, gauges and the event-handler histogram (Prometheus text format)\n\
rtc_core reload          re-read rtc_core.conf.xml and its tables; the engine takes what it can live\n\
rtc_core help            this text\n";

/// Most calls `rtc_core calls` lists.
pub const CALLS_LIMIT: usize = 1000;

fn query(engine: &rtc_engine::engine::EngineHandle, q: Query) -> Result<QueryReply, QueryError> {
    engine.query(q, ANSWER_WITHIN)
}

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
    if command == Command::Reload {
        return match state::reload(ANSWER_WITHIN) {
            Ok(text) => format!("+OK {text}\n"),
            Err(e) => format!("-ERR {e}\n"),
        };
    }
    let Some(h) = state::handle() else {
        return "-ERR mod_rtc_core is not running (loading or unloading)\n".to_string();
    };
    let breakers = report::breaker_states(h.monitor.as_ref());
    let answer = match command {
        Command::Status => query(&h.engine, Query::Status).map(|r| match r {
            QueryReply::Status(s) => {
                let mut text = report::status(
                    &s,
                    &h.engine.intake(),
                    breakers.as_deref(),
                    ledger_figures(&h).as_ref(),
                    &h.config,
                    h.reloads,
                    &not_live(&h.started_with, &h.config),
                    h.started,
                );
                text.push_str(&report::source_header_line(h.proxy.as_deref()));
                if let Some(a) = &h.audit {
                    let path = h.config.audit.as_ref().map(|c| c.file.display().to_string());
                    text.push_str(&report::audit_line(path.as_deref(), &a.stats()));
                }
                if let Some(m) = &h.metrics_endpoint {
                    text.push_str(&format!("metrics endpoint: {m}
"));
                }
                text
            }
            other => unexpected(&other),
        }),
        Command::Calls => query(&h.engine, Query::Calls { limit: CALLS_LIMIT }).map(|r| match r {
            QueryReply::Calls(list) => report::calls(&list, CALLS_LIMIT),
            other => unexpected(&other),
        }),
        Command::Call(id) => query(&h.engine, Query::Call(id)).map(|r| match r {
            QueryReply::Call(Some(view)) => report::call(&view),
            QueryReply::Call(None) => format!(
                "-ERR no call {id}: not live, and not among the last finished calls the engine keeps\n"
            ),
            other => unexpected(&other),
        }),
        Command::Balance(partner) => Ok(balance(&h, partner.as_deref())),
        Command::TopUp {
            partner,
            amount,
            reference,
        } => Ok(top_up(&h, &partner, amount, &reference)),
        Command::Fraud => query(&h.engine, Query::Fraud).map(|r| match r {
            QueryReply::Fraud(f) => report::fraud(&f),
            other => unexpected(&other),
        }),
        Command::Unblock(partner) => query(&h.engine, Query::Unblock(partner.as_str().into())).map(|r| {
            let (answered, text) = match r {
                QueryReply::Unblocked(Ok(text)) => (serde_json::json!({ "unblocked": text }), format!("+OK {text}\n")),
                QueryReply::Unblocked(Err(text)) => (serde_json::json!({ "refused": text }), format!("-ERR {text}\n")),
                other => return unexpected(&other),
            };
            h.audit_action(rtc_audit::kind::UNBLOCK, "api", Some(&partner), serde_json::Value::Null, answered);
            text
        }),
        Command::Breakers => Ok(report::breakers(breakers.as_deref())),
        Command::Metrics => metrics_text(&h),
        Command::Help | Command::Reload => unreachable!("answered above"),
        #[cfg(feature = "panic-test")]
        Command::Panic => unreachable!("panicked above"),
    };
    match answer {
        Ok(text) => text,
        Err(e) => format!("-ERR {e}\n"),
    }
}

/// The local ledger's file and counters, when there is one.
fn ledger_figures(h: &HostHandle) -> Option<report::LedgerFigures<'_>> {
    h.ledger.as_ref().map(|l| report::LedgerFigures {
        path: l.path(),
        stats: l.stats(),
    })
}

/// The ledger that keeps the partners' money, or the `-ERR` line saying why there is none here.
fn money_ledger(h: &HostHandle) -> Result<&LedgerHandle, String> {
    // The service layer keeps its load-time backends until the module is reloaded.
    let balance = h.started_with.service(ServiceKind::Balance);
    if balance.backend != Backend::Local {
        return Err(format!(
            "-ERR the balance service is HTTP ({}): balances are kept by the operator's balance service, not by \
             mod_rtc_core; look them up and top them up there\n",
            balance
                .url
                .as_deref()
                .map_or("no url".into(), rtc_config::secret::redact_url)
        ));
    }
    h.ledger.as_ref().ok_or_else(|| {
        "-ERR mod_rtc_core has no ledger (no service is local); balances are the balance service's\n".to_owned()
    })
}

/// Live calls per partner name, from the engine's status; or why the engine did not say.
fn live_calls(h: &HostHandle) -> Result<HashMap<String, u32>, String> {
    match query(&h.engine, Query::Status) {
        Ok(QueryReply::Status(s)) => {
            let mut by_name: HashMap<String, u32> = HashMap::new();
            for p in &s.by_partner {
                *by_name.entry(p.name.to_string()).or_default() += p.active;
            }
            Ok(by_name)
        }
        Ok(other) => Err(unexpected(&other)),
        Err(e) => Err(e.to_string()),
    }
}

/// `rtc_core balance [<partner>]`.
fn balance(h: &HostHandle, partner: Option<&str>) -> String {
    let ledger = match money_ledger(h) {
        Ok(l) => l,
        Err(text) => return text,
    };
    let op = match partner {
        Some(name) => Op::Account(AccountRef::Name(name.to_owned())),
        None => Op::Accounts,
    };
    let answer = ledger.call(op, "api", ANSWER_WITHIN);
    let live = live_calls(h);
    match (answer, partner) {
        (Ok(Answer::Account(account)), _) => report::balance(&account, &live),
        (Ok(Answer::Accounts(accounts)), _) => report::balances(&accounts, &live),
        (Err(LedgerError::UnknownAccount(_)), Some(name)) => unknown_partner(name),
        (Ok(other), _) => {
            log::error!("the ledger answered a balance query with {other:?}");
            "-ERR the ledger gave an unexpected answer (logged)\n".to_owned()
        }
        (Err(e), _) => format!("-ERR ledger {}: {e}\n", ledger.path()),
    }
}

fn unknown_partner(name: &str) -> String {
    format!(
        "-ERR no partner {name:?} in the ledger: accounts are the partners of partners.csv (names are \
         case-sensitive; `rtc_core balance` lists them)\n"
    )
}

/// `rtc_core topup <partner> <amount> <reference>`: applied once per reference; logged whatever the outcome.
fn top_up(h: &HostHandle, partner: &str, amount: Money, reference: &str) -> String {
    let ledger = match money_ledger(h) {
        Ok(l) => l,
        Err(text) => return text,
    };
    let op = Op::TopUp {
        account: AccountRef::Name(partner.to_owned()),
        amount,
        reference: reference.to_owned(),
        actor: "api".to_owned(),
    };
    let answer = ledger.call(op, "api", ANSWER_WITHIN);
    let (outcome, text) = match answer {
        Ok(Answer::Moved {
            balance,
            duplicate: false,
        }) => (
            format!("applied, balance now {balance}"),
            format!("+OK {partner} balance {balance}\n"),
        ),
        Ok(Answer::Moved {
            balance,
            duplicate: true,
        }) => (
            format!("already applied before, nothing changed; balance {balance}"),
            format!("+OK {partner} balance {balance} (reference {reference} already applied)\n"),
        ),
        Ok(other) => {
            log::error!("the ledger answered a top-up with {other:?}");
            (
                "unexpected answer".to_owned(),
                "-ERR the ledger gave an unexpected answer (logged); check with `rtc_core balance`\n".to_owned(),
            )
        }
        Err(LedgerError::UnknownAccount(_)) => (
            "refused: unknown partner".to_owned(),
            unknown_partner(partner),
        ),
        Err(LedgerError::ReferenceReused {
            kind, amount: used, ..
        }) => (
            format!("refused: reference already used for a {kind} of {used}"),
            format!(
                "-ERR reference {reference} was already used for a {kind} of {used} on {partner}; nothing changed: \
                 give this payment a reference of its own\n"
            ),
        ),
        Err(e @ (LedgerError::Timeout(_) | LedgerError::Storage(_))) => (
            format!("not confirmed: {e}"),
            format!(
                "-ERR ledger {}: {e}; the top-up may still be applied: check with `rtc_core balance {partner}` and \
                 repeat the same command if it was not (a reference is applied once)\n",
                ledger.path()
            ),
        ),
        Err(e) => (
            format!("refused: {e}"),
            format!("-ERR top-up not applied: {e}\n"),
        ),
    };
    log::info!("topup: partner {partner}, amount {amount}, reference {reference}: {outcome}");
    h.audit_action(
        rtc_audit::kind::TOPUP,
        "api",
        Some(partner),
        serde_json::json!({ "amount": amount.to_string(), "reference": reference }),
        serde_json::json!({ "outcome": outcome }),
    );
    text
}

/// The Prometheus page of `h`'s engine (`rtc_core metrics`, and the scrape endpoint).
fn metrics_text(h: &HostHandle) -> Result<String, QueryError> {
    let breakers = report::breaker_states(h.monitor.as_ref());
    query(&h.engine, Query::Status).map(|r| match r {
        QueryReply::Status(s) => report::metrics(
            &s,
            &h.engine.intake(),
            breakers.as_deref(),
            &h.monitor.as_ref().map(|m| m.counters()).unwrap_or_default(),
            &h.service_times.snapshot(),
            ledger_figures(h).as_ref(),
            &h.config,
            &events::STATS.handler_ns.snapshot(),
            h.audit.as_ref().map(|a| a.stats()).as_ref(),
        ),
        other => unexpected(&other),
    })
}

/// The page the scrape endpoint serves: rendered from the module as loaded at the time of the scrape. Runs on
/// the runtime's blocking pool, under the module's panic guard.
pub fn metrics_page() -> Result<String, String> {
    crate::guard::entry(
        "metrics endpoint",
        || Err("internal error (logged)".to_string()),
        || match state::handle() {
            Some(h) => metrics_text(&h).map_err(|e| format!("the engine did not answer: {e}")),
            None => Err("mod_rtc_core is not running (loading or unloading)".to_string()),
        },
    )
}

fn unexpected(reply: &QueryReply) -> String {
    log::error!("the engine answered a query with {reply:?}");
    "-ERR the engine gave an unexpected answer (logged)\n".to_string()
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
    fn parses_the_money_commands() {
        assert_eq!(parse("balance"), Ok(Command::Balance(None)));
        assert_eq!(
            parse("balance Acme"),
            Ok(Command::Balance(Some("Acme".into())))
        );
        assert_eq!(
            parse("balance acme extra"),
            Err(UsageError::ExtraAfter("balance <partner>"))
        );
        assert_eq!(
            parse("topup acme 10.5 pay-0001"),
            Ok(Command::TopUp {
                partner: "acme".into(),
                amount: Money(10_500_000),
                reference: "pay-0001".into()
            })
        );
        assert_eq!(parse("topup acme 10"), Err(UsageError::TopUpArguments));
        for bad in ["0", "-5", "+5", "1.1234567", "1e3", "abc", ".", "0.000000"] {
            assert_eq!(
                parse(&format!("topup acme {bad} ref")),
                Err(UsageError::BadAmount(bad.into())),
                "{bad}"
            );
        }
        assert_eq!(
            parse("topup acme .000001 r").map(|c| matches!(
                c,
                Command::TopUp {
                    amount: Money(1),
                    ..
                }
            )),
            Ok(true)
        );
        let long = "r".repeat(REFERENCE_MAX + 1);
        assert!(matches!(
            parse(&format!("topup acme 1 {long}")),
            Err(UsageError::BadReference(_))
        ));
        assert!(parse(&format!("topup acme 1 {}", &long[1..])).is_ok());
        assert!(matches!(
            parse("topup acme 1 réf"),
            Err(UsageError::BadReference(_))
        ));
        assert_eq!(
            parse("topup acme 1 ref more"),
            Err(UsageError::ExtraAfter(
                "topup <partner> <amount> <reference>"
            ))
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
