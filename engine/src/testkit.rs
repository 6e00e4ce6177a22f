//! Stand-ins for FreeSWITCH and for business services, for tests and the simulator.
//!
//! These are not mocks of the engine: the engine under test is the real one. They replace what cannot run
//! in a unit test — FreeSWITCH's call control, an operator's services — with recorders and scripted
//! answers, named as such.

use crate::CallId;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use compact_str::CompactString;

use crate::control::{CallCommand, CallControl};
use crate::domain::{Money, PartnerInfo, Rate, Reservation, Route, Routes};
use crate::service::{Outcome, ServiceRequest, ServiceResult, ServiceSink};

/// Call control that records every command.
#[derive(Clone, Default)]
pub struct RecordingControl {
    /// Every command, in order, until taken.
    pub commands: Arc<Mutex<Vec<CallCommand>>>,
    /// Calls whose channel [`CallControl::channel_gone`] reports gone.
    pub gone: Arc<Mutex<Vec<CallId>>>,
}

impl RecordingControl {
    /// The commands recorded since the last take.
    pub fn take(&self) -> Vec<CallCommand> {
        std::mem::take(&mut *self.commands.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl CallControl for RecordingControl {
    fn execute(&mut self, command: CallCommand) {
        self.commands
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(command);
    }

    fn channel_gone(&mut self, call: CallId) -> bool {
        self.gone
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&call)
    }
}

/// Services that answer from a script: each request kind gets a fixed outcome, or none (left pending, so
/// the test can deliver it later, late, or never). Every request is recorded.
#[derive(Clone)]
pub struct ScriptedServices {
    /// The partner service's answer.
    pub partner: Option<Outcome>,
    /// The auth service's answer.
    pub auth: Option<Outcome>,
    /// The balance service's answer to a reservation.
    pub balance: Option<Outcome>,
    /// The rating service's answer.
    pub rating: Option<Outcome>,
    /// The routing service's answer.
    pub routing: Option<Outcome>,
    /// Every request seen, answered or not.
    pub requests: Arc<Mutex<Vec<ServiceRequest>>>,
    /// Last reservation id handed out.
    pub next_reservation: u64,
    /// Money extensions may take (granted in whole units as far as it goes, as a ledger would); `None`: every
    /// extension is granted whole.
    pub extension_money: Option<Money>,
}

impl ScriptedServices {
    /// Answers every call yes: a partner, a 1.00 reservation, 0.012/min 6/6, two routes.
    pub fn all_yes() -> Self {
        ScriptedServices {
            partner: Some(Outcome::PartnerFound(sample_partner())),
            auth: Some(Outcome::AuthOk),
            balance: Some(Outcome::BalanceReserved {
                reservation: Reservation {
                    id: 0,
                    amount: Money(1_000_000),
                },
                available: None,
            }),
            rating: Some(Outcome::RateFound(sample_rate())),
            routing: Some(Outcome::RoutesFound(sample_routes(2))),
            requests: Arc::default(),
            next_reservation: 1,
            extension_money: None,
        }
    }

    /// Answers nothing: every request stays pending.
    pub fn silent() -> Self {
        ScriptedServices {
            partner: None,
            auth: None,
            balance: None,
            rating: None,
            routing: None,
            requests: Arc::default(),
            next_reservation: 1,
            extension_money: None,
        }
    }

    /// The requests received so far.
    pub fn requests(&self) -> Vec<ServiceRequest> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl ServiceSink for ScriptedServices {
    fn submit(&mut self, request: ServiceRequest) -> Option<ServiceResult> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(request.clone());
        let call = request.call();
        let outcome = match request {
            ServiceRequest::IdentifyPartner { .. } => self.partner.clone(),
            ServiceRequest::Authenticate { .. } => self.auth.clone(),
            ServiceRequest::ReserveBalance { .. } => match self.balance.clone() {
                Some(Outcome::BalanceReserved {
                    reservation,
                    available,
                }) => {
                    self.next_reservation += 1;
                    Some(Outcome::BalanceReserved {
                        reservation: Reservation {
                            id: self.next_reservation,
                            amount: reservation.amount,
                        },
                        available,
                    })
                }
                other => other,
            },
            // Extensions are granted (from `extension_money` when set) when reservations are answered at all.
            ServiceRequest::ExtendBalance { debit, unit, .. } => match self.balance {
                Some(Outcome::BalanceReserved { .. }) => {
                    let granted = match self.extension_money.as_mut() {
                        None => debit,
                        Some(left) => {
                            let granted = if left.0 >= debit.0 {
                                debit
                            } else if unit.0 > 0 {
                                Money(left.0.max(0) / unit.0 * unit.0)
                            } else {
                                Money::ZERO
                            };
                            left.0 -= granted.0;
                            granted
                        }
                    };
                    Some(if granted == Money::ZERO && debit > Money::ZERO {
                        Outcome::BalanceInsufficient
                    } else {
                        Outcome::BalanceExtended {
                            granted,
                            available: self.extension_money,
                        }
                    })
                }
                _ => None,
            },
            ServiceRequest::Rate { .. } => self.rating.clone(),
            ServiceRequest::Route { .. } => self.routing.clone(),
            _ => None,
        }?;
        Some(ServiceResult { call, outcome })
    }
}

/// A partner with room for every test call.
pub fn sample_partner() -> PartnerInfo {
    PartnerInfo {
        id: 7,
        name: CompactString::const_new("acme"),
        max_concurrent: 0,
        max_cps: 0,
        max_call_cost: None,
        fraud: None,
    }
}

/// A plain per-minute rate.
pub fn sample_rate() -> Rate {
    Rate {
        per_minute: Money(12_000),
        connect_fee: Money::ZERO,
        increment_s: 6,
        minimum_s: 0,
        prefix_len: 4,
    }
}

/// `n` routes, cheapest first.
pub fn sample_routes(n: usize) -> Routes {
    (0..n)
        .map(|i| Route {
            carrier: format!("carrier_{i}").into(),
            dial_string: format!("sofia/gateway/carrier_{i}/4420").into(),
            cost_per_minute: Money(5_000 + i as i64 * 1000),
        })
        .collect::<Vec<_>>()
        .into()
}

/// The source address of the sample partner.
pub fn sample_ip() -> IpAddr {
    IpAddr::from([192, 0, 2, 10])
}

/// Services that say yes to every call at once and keep nothing: for benchmarks, where recording every
/// request would measure the recorder.
#[derive(Clone, Default)]
pub struct InstantServices {
    /// Reservations handed out.
    pub reserved: u64,
    /// Settlements (commit or release) received.
    pub settled: u64,
    /// CDRs received.
    pub cdrs: u64,
}

impl ServiceSink for InstantServices {
    fn submit(&mut self, request: ServiceRequest) -> Option<ServiceResult> {
        let call = request.call();
        let outcome = match request {
            ServiceRequest::IdentifyPartner { .. } => Outcome::PartnerFound(sample_partner()),
            ServiceRequest::Authenticate { .. } => Outcome::AuthOk,
            ServiceRequest::ReserveBalance { amount, .. } => {
                self.reserved += 1;
                Outcome::BalanceReserved {
                    reservation: Reservation {
                        id: self.reserved,
                        amount,
                    },
                    available: None,
                }
            }
            ServiceRequest::ExtendBalance { debit, .. } => Outcome::BalanceExtended {
                granted: debit,
                available: None,
            },
            ServiceRequest::Rate { .. } => Outcome::RateFound(sample_rate()),
            ServiceRequest::Route { .. } => Outcome::RoutesFound(shared_routes()),
            ServiceRequest::CommitBalance { .. } | ServiceRequest::ReleaseBalance { .. } => {
                self.settled += 1;
                return None;
            }
            ServiceRequest::WriteCdr(_) => {
                self.cdrs += 1;
                return None;
            }
        };
        Some(ServiceResult { call, outcome })
    }
}

/// One route list shared by every call, as a rate deck's would be.
fn shared_routes() -> Routes {
    static ROUTES: std::sync::OnceLock<Routes> = std::sync::OnceLock::new();
    ROUTES.get_or_init(|| sample_routes(2)).clone()
}

/// Call control that only counts.
#[derive(Clone, Default)]
pub struct CountingControl {
    /// Commands received.
    pub commands: Arc<std::sync::atomic::AtomicU64>,
}

impl CallControl for CountingControl {
    fn execute(&mut self, _: CallCommand) {
        self.commands
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}
