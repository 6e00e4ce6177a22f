//! Call control over ESL: the engine's [`CallCommand`]s as event socket commands.
//!
//! The engine thread calls [`EslCallControl`](crate::client::EslCallControl), the engine's end of the
//! client's command queue: it never blocks and never touches the socket. The connection's writer takes the
//! command and turns it into wire text with [`encode`]. Every command is asynchronous on FreeSWITCH's side
//! too — never a blocking `api` on the event connection, which would stall event delivery while it runs:
//!
//! - `SetVariables` → `bgapi uuid_setvar_multi <uuid> rtc_x=v;rtc_y=w`. Values are checked, not escaped:
//!   `;` separates variables and a line break would end the command, so a value holding either (or any
//!   control character) is refused and counted — it can only come from a misconfigured table.
//! - `Bridge` → three `sendmsg <uuid>` messages, which FreeSWITCH runs in order on the parked channel:
//!   `multiset continue_on_fail=true hangup_after_bridge=true` (a failed bridge returns to park for
//!   failover; a finished one hangs the call up); `bridge {rtc_a_leg=<uuid>,rtc_attempt=<n>}<dial string>`
//!   with `event-lock: true` (the next message waits until the bridge returns); and the `event` application
//!   firing `CUSTOM rtc::bridge_end` with the attempt number, which tells the intake about bridges that
//!   failed without creating an outbound leg (see [`crate::intake`]).
//! - `Hangup` → `bgapi uuid_kill <uuid> <CAUSE>`.
//!
//! Failures (`-ERR no such channel`, timeouts, a dropped link) come back to the connection, which counts
//! and logs them with the call's uuid.

use std::fmt::Write as _;

use crate::intake::BRIDGE_END_SUBCLASS;
use rtc_engine::control::{CallCommand, FraudAlert, LowBalance};
use rtc_engine::id::CallId;

/// What answer a command gets from FreeSWITCH.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// A `command/reply` (`sendmsg`, `filter`, `event`, ...).
    CommandReply,
    /// A `command/reply` with a `Job-UUID`, then a `BACKGROUND_JOB` event with the result.
    BgApi,
    /// An `api/response`.
    Api,
}

/// One command ready to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wire {
    /// The bytes, ending with the blank line.
    pub bytes: Vec<u8>,
    /// The answer it gets.
    pub expect: Expect,
    /// A short description for logs and errors (`bgapi uuid_kill <uuid> NO_ANSWER`, `sendmsg <uuid>
    /// bridge`).
    pub summary: String,
}

impl Wire {
    /// A one-line command (`api ...`, `bgapi ...`, `filter ...`): refused if it holds a line break.
    pub fn line(command: &str) -> Result<Wire, BadCommand> {
        if command.bytes().any(|b| b == b'\n' || b == b'\r') {
            return Err(BadCommand::LineBreak {
                command: command.chars().take(60).collect(),
            });
        }
        let expect = if command.starts_with("bgapi ") {
            Expect::BgApi
        } else if command.starts_with("api ") {
            Expect::Api
        } else {
            Expect::CommandReply
        };
        let mut bytes = Vec::with_capacity(command.len() + 2);
        bytes.extend_from_slice(command.as_bytes());
        bytes.extend_from_slice(b"\n\n");
        Ok(Wire {
            bytes,
            expect,
            summary: command.chars().take(120).collect(),
        })
    }
}

/// Why a command was not sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadCommand {
    /// A channel variable value that could break the command.
    #[error(
        "call {call}: value of channel variable {name} holds {what}; not sent (values may not contain ';', \
         line breaks or control characters: check the table it came from)"
    )]
    BadVariable {
        /// The call.
        call: CallId,
        /// The variable.
        name: &'static str,
        /// What is wrong.
        what: &'static str,
    },
    /// A dial string that could break the `sendmsg`.
    #[error(
        "call {call}: dial string of route {carrier} holds a line break or control character; bridge not \
         sent (check routes)"
    )]
    BadDialString {
        /// The call.
        call: CallId,
        /// The route's carrier.
        carrier: String,
    },
    /// A one-line command with a line break.
    #[error("ESL command {command:?} holds a line break; not sent")]
    LineBreak {
        /// The start of the command.
        command: String,
    },
}

fn unsafe_value(v: &str) -> Option<&'static str> {
    if v.contains(';') {
        return Some("';'");
    }
    unsafe_header(v)
}

/// An event header's value ends at its line break; anything else is carried as it is.
fn unsafe_header(v: &str) -> Option<&'static str> {
    for c in v.chars() {
        match c {
            '\n' | '\r' => return Some("a line break"),
            c if c.is_control() => return Some("a control character"),
            _ => {}
        }
    }
    None
}

/// `sendevent CUSTOM` of `subclass` with `headers`, about `call`; a value that would break the frame is refused.
fn send_event(
    call: CallId,
    subclass: &str,
    headers: &[(&'static str, String)],
) -> Result<Wire, BadCommand> {
    let mut ubuf = [0u8; 36];
    let uuid = call.encode(&mut ubuf);
    let mut event = format!("sendevent CUSTOM\nEvent-Subclass: {subclass}\n");
    for (name, value) in headers {
        if let Some(what) = unsafe_header(value) {
            return Err(BadCommand::BadVariable { call, name, what });
        }
        let _ = writeln!(event, "{name}: {value}");
    }
    event.push('\n');
    Ok(Wire {
        summary: format!("sendevent {subclass} for {uuid}"),
        bytes: event.into_bytes(),
        expect: Expect::CommandReply,
    })
}

/// The wire commands for one engine command (several for a bridge, none for no variables).
pub fn encode(cmd: &CallCommand) -> Result<Vec<Wire>, BadCommand> {
    let mut ubuf = [0u8; 36];
    match cmd {
        CallCommand::SetVariables { call, vars } => {
            if vars.is_empty() {
                return Ok(Vec::new());
            }
            let uuid = call.encode(&mut ubuf);
            let mut line = format!("bgapi uuid_setvar_multi {uuid} ");
            for (i, v) in vars.iter().enumerate() {
                if let Some(what) = unsafe_value(&v.value).or_else(|| unsafe_value(v.name)) {
                    return Err(BadCommand::BadVariable {
                        call: *call,
                        name: v.name,
                        what,
                    });
                }
                if i > 0 {
                    line.push(';');
                }
                let _ = write!(line, "{}={}", v.name, v.value);
            }
            Ok(vec![Wire {
                summary: format!("uuid_setvar_multi {uuid}"),
                bytes: format!("{line}\n\n").into_bytes(),
                expect: Expect::BgApi,
            }])
        }
        CallCommand::LowBalance(warning) => {
            let uuid = warning.call.encode(&mut ubuf).to_string();
            let event = send_event(warning.call, LowBalance::SUBCLASS, &warning.headers())?;
            Ok(vec![
                Wire {
                    summary: format!("uuid_setvar {uuid} rtc_low_balance"),
                    bytes: format!(
                        "bgapi uuid_setvar {uuid} rtc_low_balance {}\n\n",
                        warning.remaining_s
                    )
                    .into_bytes(),
                    expect: Expect::BgApi,
                },
                event,
            ])
        }
        CallCommand::Fraud(alert) => Ok(vec![send_event(
            alert.call,
            FraudAlert::SUBCLASS,
            &alert.headers(),
        )?]),
        CallCommand::Hangup { call, cause } => {
            let uuid = call.encode(&mut ubuf);
            let name = match cause.name() {
                Some(n) => n.to_string(),
                None => cause.0.to_string(),
            };
            Ok(vec![Wire {
                summary: format!("uuid_kill {uuid} {name}"),
                bytes: format!("bgapi uuid_kill {uuid} {name}\n\n").into_bytes(),
                expect: Expect::BgApi,
            }])
        }
        CallCommand::Bridge {
            call,
            attempt,
            route,
            ..
        } => {
            if route
                .dial_string
                .chars()
                .any(|c| c.is_control() || c == '\n' || c == '\r')
                || route.dial_string.is_empty()
            {
                return Err(BadCommand::BadDialString {
                    call: *call,
                    carrier: route.carrier.to_string(),
                });
            }
            let uuid = call.encode(&mut ubuf).to_string();
            let vars = format!("rtc_a_leg={uuid},rtc_attempt={attempt}");
            // A dial string with its own {...} block gets ours merged into it.
            let target = match route.dial_string.strip_prefix('{') {
                Some(rest) => format!("{{{vars},{rest}"),
                None => format!("{{{vars}}}{}", route.dial_string),
            };
            let msg = |app: &str, arg: &str, lock: bool| -> Vec<u8> {
                let mut s = format!(
                    "sendmsg {uuid}\ncall-command: execute\nexecute-app-name: {app}\nexecute-app-arg: {arg}\n"
                );
                if lock {
                    s.push_str("event-lock: true\n");
                }
                s.push('\n');
                s.into_bytes()
            };
            Ok(vec![
                Wire {
                    bytes: msg(
                        "multiset",
                        "continue_on_fail=true hangup_after_bridge=true",
                        false,
                    ),
                    expect: Expect::CommandReply,
                    summary: format!("sendmsg {uuid} multiset"),
                },
                Wire {
                    bytes: msg("bridge", &target, true),
                    expect: Expect::CommandReply,
                    summary: format!(
                        "sendmsg {uuid} bridge attempt {attempt} ({})",
                        route.carrier
                    ),
                },
                Wire {
                    bytes: msg(
                        "event",
                        &format!(
                            "Event-Name=CUSTOM,Event-Subclass={BRIDGE_END_SUBCLASS},rtc_attempt={attempt}"
                        ),
                        false,
                    ),
                    expect: Expect::CommandReply,
                    summary: format!("sendmsg {uuid} event bridge_end"),
                },
            ])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc_engine::cause::HangupCause;
    use rtc_engine::control::Variable;
    use rtc_engine::domain::{Money, Route};

    const A: &str = "4b2a1c3e-9f10-4d2b-8a7e-0123456789ab";

    fn id() -> CallId {
        CallId::parse(A).unwrap()
    }

    #[test]
    fn variables_are_one_bgapi_and_bad_values_are_refused() {
        let vars = vec![
            Variable {
                name: "rtc_partner",
                value: "lab".into(),
            },
            Variable {
                name: "rtc_rate",
                value: "0.0010".into(),
            },
        ];
        let w = encode(&CallCommand::SetVariables {
            call: id(),
            vars: vars.clone(),
        })
        .unwrap();
        assert_eq!(
            String::from_utf8(w[0].bytes.clone()).unwrap(),
            format!("bgapi uuid_setvar_multi {A} rtc_partner=lab;rtc_rate=0.0010\n\n")
        );
        for bad in ["a;b", "a\nb", "a\rb", "a\u{7}b"] {
            let mut v = vars.clone();
            v[0].value = bad.into();
            let e = encode(&CallCommand::SetVariables {
                call: id(),
                vars: v,
            })
            .unwrap_err();
            assert!(e.to_string().contains(A), "{e}");
            assert!(e.to_string().contains("rtc_partner"), "{e}");
        }
    }

    #[test]
    fn bridge_is_three_ordered_messages_with_the_leg_marked() {
        let route = Route {
            carrier: "c".into(),
            dial_string: "loopback/15550001/rtc_answer".into(),
            cost_per_minute: Money(0),
        };
        let w = encode(&CallCommand::Bridge {
            call: id(),
            attempt: 1,
            route: route.clone(),
            max_duration_s: 60,
        })
        .unwrap();
        assert_eq!(w.len(), 3);
        let bridge = String::from_utf8(w[1].bytes.clone()).unwrap();
        assert!(bridge.contains(&format!(
            "execute-app-arg: {{rtc_a_leg={A},rtc_attempt=1}}loopback/15550001/rtc_answer\n"
        )));
        assert!(bridge.contains("event-lock: true\n"));
        assert!(bridge.ends_with("\n\n"));
        let mut merged = route.clone();
        merged.dial_string = "{x=1}sofia/gateway/g/1".into();
        let w = encode(&CallCommand::Bridge {
            call: id(),
            attempt: 0,
            route: merged,
            max_duration_s: 0,
        })
        .unwrap();
        let bridge = String::from_utf8(w[1].bytes.clone()).unwrap();
        assert!(bridge.contains(&format!("{{rtc_a_leg={A},rtc_attempt=0,x=1}}sofia")));
        let mut bad = route;
        bad.dial_string = "sofia/x\nexecute-app-name: hangup".into();
        assert!(
            encode(&CallCommand::Bridge {
                call: id(),
                attempt: 0,
                route: bad,
                max_duration_s: 0
            })
            .is_err()
        );
    }

    #[test]
    fn hangup_is_uuid_kill_with_the_cause_name() {
        let w = encode(&CallCommand::Hangup {
            call: id(),
            cause: HangupCause::NO_ROUTE_DESTINATION,
        })
        .unwrap();
        assert_eq!(
            w[0].bytes,
            format!("bgapi uuid_kill {A} NO_ROUTE_DESTINATION\n\n").into_bytes()
        );
        assert_eq!(w[0].expect, Expect::BgApi);
    }

    #[test]
    fn a_low_balance_warning_sets_the_variable_and_sends_the_custom_event() {
        let warning = rtc_engine::control::LowBalance {
            call: id(),
            partner: "lab".into(),
            available: Some(Money(50_000)),
            paid_s: 240,
            remaining_s: 17,
        };
        let w = encode(&CallCommand::LowBalance(Box::new(warning.clone()))).unwrap();
        assert_eq!(
            String::from_utf8(w[0].bytes.clone()).unwrap(),
            format!("bgapi uuid_setvar {A} rtc_low_balance 17\n\n")
        );
        assert_eq!(
            String::from_utf8(w[1].bytes.clone()).unwrap(),
            format!(
                "sendevent CUSTOM\nEvent-Subclass: rtc_core::low_balance\nUnique-ID: {A}\nrtc_partner: lab\n\
                 rtc_paid_seconds: 240\nrtc_remaining_seconds: 17\nrtc_available: 0.050000\n\n"
            )
        );
        assert_eq!(
            (w[0].expect, w[1].expect),
            (Expect::BgApi, Expect::CommandReply)
        );
        // A name that would break the frame is refused, not sent.
        let mut bad = warning;
        bad.partner = "lab\nEvent-Name: HEARTBEAT".into();
        assert!(encode(&CallCommand::LowBalance(Box::new(bad))).is_err());
    }

    #[test]
    fn a_fraud_hit_sends_the_custom_event() {
        let alert = rtc_engine::control::FraudAlert {
            call: id(),
            partner: "lab".into(),
            rule: "pumping_number",
            action: "block",
            destination: "37120000001".into(),
            class: None,
            value: 11.0,
            limit: 10.0,
            detail: "11 live calls to 37120000001 with this one; most 10".into(),
            block_s: Some(900),
        };
        let w = encode(&CallCommand::Fraud(Box::new(alert.clone()))).unwrap();
        assert_eq!(w.len(), 1);
        assert_eq!(
            String::from_utf8(w[0].bytes.clone()).unwrap(),
            format!(
                "sendevent CUSTOM\nEvent-Subclass: rtc_core::fraud\nUnique-ID: {A}\nrtc_partner: lab\n\
                 rtc_fraud_rule: pumping_number\nrtc_fraud_action: block\nrtc_destination: 37120000001\n\
                 rtc_fraud_value: 11\nrtc_fraud_limit: 10\n\
                 rtc_fraud_detail: 11 live calls to 37120000001 with this one; most 10\n\
                 rtc_fraud_block_seconds: 900\n\n"
            )
        );
        assert_eq!(w[0].expect, Expect::CommandReply);
        let mut bad = alert;
        bad.partner = "lab\n\nsendevent HEARTBEAT".into();
        assert!(encode(&CallCommand::Fraud(Box::new(bad))).is_err());
    }

    #[test]
    fn one_line_commands_refuse_line_breaks() {
        assert!(Wire::line("api status\nexit").is_err());
        assert_eq!(Wire::line("api status").unwrap().expect, Expect::Api);
        assert_eq!(Wire::line("bgapi status").unwrap().expect, Expect::BgApi);
    }
}
