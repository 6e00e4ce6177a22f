//! The local balance and CDR service: the engine's balance requests and CDRs, carried out by the durable ledger
//! ([`rtc_ledger`]) on its own writer thread.
//!
//! Nothing here waits: a request becomes a ledger [`Request`] whose answer, once the ledger has made it durable,
//! goes back to the engine as a [`ServiceResult`] (through the engine handle given at start, see
//! [`ServiceSink::attach`]). A call's end — its settlement and its CDR — is one request, so that they are written in
//! one transaction: a crash never keeps a charge without its record or the other way round.
//!
//! [`ServiceSink::attach`]: rtc_engine::service::ServiceSink::attach

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rtc_ledger::{
    AccountRef, Answer, CallInfo, CallLimits, CdrRecord, Ledger, LedgerConfig, LedgerError,
    LedgerHandle, Location, Op, OpenError, Request, ReservationId,
};

use crate::stats::ResponseTimes;
use rtc_config::local::{LedgerPlace, SharedLedger};
use rtc_config::services::Backend;
use rtc_engine::cause::HangupCause;
use rtc_engine::domain::{Cdr, Money, Reservation};
use rtc_engine::id::CallId;
use rtc_engine::reason::Reason;
use rtc_engine::results::LateResults;
use rtc_engine::service::ResultSink;
use rtc_engine::service::{CallContext, Outcome, ServiceFailure, ServiceKind, ServiceResult};
use rtc_ledger_pg::PgConfig;

/// Where the ledger is: an embedded store (a file, or memory), or the shared ledger on PostgreSQL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Place {
    /// The embedded SQLite ledger.
    Embedded(Location),
    /// The shared ledger: the database and this node's part in it.
    Shared(PgConfig),
}

impl From<Location> for Place {
    fn from(location: Location) -> Place {
        Place::Embedded(location)
    }
}

/// Where a host whose ledger directory is `dir` (none: it has no disk of its own) keeps the ledger the
/// configuration places at `place` (`shared`: this node's settings for a shared ledger).
pub fn location(place: &LedgerPlace, shared: &SharedLedger, dir: Option<&Path>) -> Place {
    match (place, dir) {
        (LedgerPlace::Memory, _) | (LedgerPlace::HostDefault, None) => Location::Memory.into(),
        (LedgerPlace::HostDefault, Some(dir)) => Location::File(dir.join(DEFAULT_FILE)).into(),
        (LedgerPlace::File(path), Some(dir)) => Location::File(dir.join(path)).into(),
        (LedgerPlace::File(path), None) => Location::File(path.clone()).into(),
        (LedgerPlace::Postgres(url), _) => {
            let mut config = PgConfig::new(url);
            if let Some(id) = &shared.node_id {
                config.node_id = id.clone();
            }
            config.pool_size = shared.pool_size;
            config.timeout = shared.timeout;
            config.lease = shared.lease;
            config.ca_file = shared.ca_file.clone();
            Place::Shared(config)
        }
    }
}

/// The ledger file's name in the host's directory.
pub const DEFAULT_FILE: &str = "rtc_core.db";

/// How long the engine's balance requests may wait for the ledger writer before they are answered with a
/// timeout instead (the balance service's own timeout, as for an HTTP service).
pub const DEFAULT_BOUND: Duration = Duration::from_secs(2);

/// Counted on the ledger's thread, read anywhere.
#[derive(Debug, Default)]
pub struct MoneyCounters {
    /// Requests the ledger refused or could not carry out (each logged).
    pub errors: AtomicU64,
    /// Commits whose cost exceeded what was held (charged anyway).
    pub overruns: AtomicU64,
}

/// The engine's balance and CDR requests, carried out by the ledger.
pub struct LedgerBackend {
    /// The ledger (its writer closes when this is dropped, after what is queued).
    ledger: Ledger,
    /// Where answers go: the engine, once attached.
    results: Arc<LateResults>,
    /// Errors and overruns.
    counters: Arc<MoneyCounters>,
    /// How long the local services took to answer: reservations and debits from the ask to the ledger's answer.
    times: Arc<ResponseTimes>,
    /// Bound on a reservation's or extension's wait for the writer.
    bound: Duration,
    /// The ledger is shared by several nodes (PostgreSQL): partners' call limits are counted there too.
    shared: bool,
    /// The global limits counted across the nodes (`ledger-global-limits` `shared`); zero: each node's own.
    global: CallLimits,
}

impl std::fmt::Debug for LedgerBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerBackend")
            .field("ledger", &self.ledger.path())
            .finish_non_exhaustive()
    }
}

impl LedgerBackend {
    /// Opens the ledger at `place` (settling what a dead process, or this node's previous run, left open).
    pub fn open(place: Place) -> Result<LedgerBackend, OpenError> {
        let (ledger, shared) = match place {
            Place::Embedded(location) => (Ledger::open(LedgerConfig::new(location))?, false),
            Place::Shared(config) => (
                rtc_ledger_pg::open(config, LedgerConfig::new(Location::Memory))?,
                true,
            ),
        };
        Ok(LedgerBackend {
            ledger,
            results: Arc::new(LateResults::new()),
            counters: Arc::default(),
            times: Arc::default(),
            bound: DEFAULT_BOUND,
            shared,
            global: CallLimits::default(),
        })
    }

    /// Whether the ledger is shared by several nodes (partners' call limits are counted there too).
    pub fn shared(&self) -> bool {
        self.shared
    }

    /// Takes the global limits to count across the nodes, when the configuration shares them (at load and
    /// reload).
    pub fn set_global_limits(&mut self, shared: &SharedLedger) {
        self.global = match shared.global {
            Some((max_concurrent, max_cps)) => CallLimits {
                max_concurrent,
                max_cps,
                ..CallLimits::default()
            },
            None => CallLimits::default(),
        };
    }

    /// The ledger, for operators' requests (balances, top-ups) and tests.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// A handle to the ledger usable from any thread.
    pub fn handle(&self) -> LedgerHandle {
        self.ledger.handle()
    }

    /// Errors and overruns so far.
    pub fn counters(&self) -> &MoneyCounters {
        &self.counters
    }

    /// Where the local services' response times are recorded (shared with [`super::LocalServices`]).
    pub fn response_times(&self) -> &Arc<ResponseTimes> {
        &self.times
    }

    /// Sends answers to `sink` (the engine, or in tests another sink) from now on.
    pub fn answer_to(&self, sink: Arc<dyn ResultSink>) {
        self.results.attach_sink(sink);
    }

    /// The balance service's timeout: how long a reservation may wait for the writer.
    pub fn set_bound(&mut self, bound: Duration) {
        self.bound = bound;
    }

    /// Holds `amount` of `account`'s money for a call; the answer goes to the engine.
    pub fn reserve(
        &self,
        call: CallId,
        account: &str,
        amount: Money,
        context: &CallContext,
        ttl: Duration,
        limits: CallLimits,
    ) {
        let limits = if self.shared {
            CallLimits {
                global_concurrent: self.global.max_concurrent,
                global_cps: self.global.max_cps,
                ..limits
            }
        } else {
            CallLimits::default()
        };
        let op = Op::Reserve {
            account: AccountRef::Name(account.to_string()),
            amount,
            call: call.to_string(),
            info: call_info(context),
            ttl,
            limits,
        };
        self.ask(call, op);
    }

    /// Debits a talking call's next interval; the answer goes to the engine.
    pub fn extend(
        &self,
        call: CallId,
        reservation: Reservation,
        debit: Money,
        unit: Money,
        context: &CallContext,
        ttl: Duration,
    ) {
        let op = Op::Extend {
            reservation: ReservationId(reservation.id),
            debit,
            unit,
            ttl,
            info: Some(call_info(context)),
        };
        self.ask(call, op);
    }

    fn ask(&self, call: CallId, op: Op) {
        let results = self.results.clone();
        let counters = self.counters.clone();
        let times = self.times.clone();
        let asked = Instant::now();
        let what = op.name();
        let reply = move |answer: Result<Answer, LedgerError>| {
            times.record(ServiceKind::Balance, Backend::Local, asked.elapsed());
            let outcome = match answer {
                Ok(Answer::Reserved {
                    reservation,
                    amount,
                    available,
                }) => Outcome::BalanceReserved {
                    reservation: Reservation {
                        id: reservation.0,
                        amount,
                    },
                    available: Some(available),
                },
                Ok(Answer::Insufficient { .. }) => Outcome::BalanceInsufficient,
                Ok(Answer::Extended {
                    granted, available, ..
                }) => Outcome::BalanceExtended {
                    granted,
                    available: Some(available),
                },
                Ok(other) => {
                    counters.errors.fetch_add(1, Ordering::Relaxed);
                    log::error!("call {call}: the ledger answered {what} with {other:?}");
                    Outcome::Failed(ServiceKind::Balance, ServiceFailure::Error)
                }
                Err(LedgerError::LimitReached { which, max }) => Outcome::LimitReached {
                    limit: match which {
                        "max_cps" => "partner_cps",
                        "global_concurrent" => "global_concurrent",
                        "global_cps" => "global_cps",
                        _ => "partner_concurrent",
                    },
                    max,
                },
                Err(e @ LedgerError::Unavailable(_)) => {
                    counters.errors.fetch_add(1, Ordering::Relaxed);
                    log::debug!("call {call}: ledger {what}: {e}");
                    Outcome::Failed(ServiceKind::Balance, ServiceFailure::CircuitOpen)
                }
                Err(e @ (LedgerError::Expired(_) | LedgerError::Timeout(_))) => {
                    counters.errors.fetch_add(1, Ordering::Relaxed);
                    log::warn!("call {call}: ledger {what}: {e}");
                    Outcome::Failed(ServiceKind::Balance, ServiceFailure::Timeout)
                }
                Err(e) => {
                    counters.errors.fetch_add(1, Ordering::Relaxed);
                    log::warn!("call {call}: ledger {what} failed: {e}");
                    Outcome::Failed(ServiceKind::Balance, ServiceFailure::Error)
                }
            };
            results.deliver(ServiceResult { call, outcome });
        };
        self.ledger
            .submit(Request::new(op, "engine", Some(Box::new(reply))).within(self.bound));
    }

    /// Settles a reservation (`cost`: commit; `None`: release), with the call's CDR when it has ended, in one
    /// transaction. Nothing is answered to the engine; refusals are logged and counted.
    pub fn settle(
        &self,
        call: CallId,
        account: Option<&str>,
        reservation: Reservation,
        cost: Option<Money>,
        cdr: Option<CdrRecord>,
    ) {
        let id = ReservationId(reservation.id);
        let account = account.map(|a| AccountRef::Name(a.to_string()));
        let cdr = cdr.map(Box::new);
        let op = match cost {
            Some(cost) => Op::Commit {
                reservation: id,
                account,
                cost,
                cdr,
            },
            None => Op::Release {
                reservation: id,
                account,
                cdr,
            },
        };
        let counters = self.counters.clone();
        let what = op.name();
        let reply = move |answer: Result<Answer, LedgerError>| match answer {
            Ok(Answer::Settled(s)) if s.excess > Money::ZERO => {
                counters.overruns.fetch_add(1, Ordering::Relaxed);
                log::warn!(
                    "call {call}: cost {} exceeded reservation {} by {}; the partner's balance is now {}",
                    s.charged,
                    id,
                    s.excess,
                    s.balance
                );
            }
            Ok(_) => {}
            Err(e) => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
                log::warn!("call {call}: ledger {what} of reservation {id}: {e}");
            }
        };
        self.ledger
            .submit(Request::new(op, "engine", Some(Box::new(reply))));
    }

    /// Stores a CDR (a call that held no reservation).
    pub fn store_cdr(&self, cdr: CdrRecord) {
        let counters = self.counters.clone();
        let uuid = cdr.uuid.clone();
        let reply = move |answer: Result<Answer, LedgerError>| {
            if let Err(e) = answer {
                counters.errors.fetch_add(1, Ordering::Relaxed);
                log::warn!("call {uuid}: CDR not stored in the ledger: {e}");
            }
        };
        self.ledger.submit(Request::new(
            Op::Cdr(Box::new(cdr)),
            "engine",
            Some(Box::new(reply)),
        ));
    }
}

/// What the ledger keeps of a call, from what the engine knows.
fn call_info(context: &CallContext) -> CallInfo {
    CallInfo {
        caller: context.caller.to_string(),
        destination: context.destination.to_string(),
        source_ip: context.source_ip.map(|ip| ip.to_string()),
        started_at_us: context.started_at_us,
        answered_at_us: (context.answered_at_us != 0).then_some(context.answered_at_us),
        rate_per_minute: context.rate.map(|r| r.per_minute),
        carrier: context.carrier.as_ref().map(|c| c.to_string()),
        paid_s: u64::from(context.paid_s),
    }
}

/// The engine's CDR as the ledger stores it (the same JSON).
pub fn record_of(cdr: &Cdr) -> CdrRecord {
    CdrRecord {
        uuid: cdr.uuid.to_string(),
        caller: cdr.caller.to_string(),
        destination: cdr.destination.to_string(),
        source_ip: cdr.source_ip.map(|ip| ip.to_string()),
        partner: cdr.partner.as_ref().map(|p| p.to_string()),
        final_state: cdr.final_state.to_string(),
        reason: cdr.reason.map(str::to_string),
        hangup_cause: cdr.hangup_cause.to_string(),
        carrier: cdr.carrier.as_ref().map(|c| c.to_string()),
        rate_per_minute: cdr.rate_per_minute,
        setup_us: cdr.setup_us,
        talk_s: cdr.talk_s,
        billed_s: cdr.billed_s,
        cost: cdr.cost,
        started_at_us: cdr.started_at_us,
        ended_at_us: cdr.ended_at_us,
    }
}

/// A stored CDR as the engine's (for the exports: `cdr-file`, the HTTP CDR service). `None` for a record whose
/// uuid, state or reason this version does not know.
pub fn cdr_of(record: &CdrRecord) -> Option<Cdr> {
    const STATES: [&str; 3] = ["COMPLETED", "REJECTED", "FAILED"];
    let final_state = STATES.into_iter().find(|s| *s == record.final_state)?;
    let reason = match record.reason.as_deref() {
        None => None,
        Some(RECOVERED) => Some(RECOVERED),
        Some(name) => Some(Reason::from_name(name)?.name()),
    };
    Some(Cdr {
        uuid: CallId::parse(&record.uuid).ok()?,
        caller: record.caller.as_str().into(),
        destination: record.destination.as_str().into(),
        source_ip: record.source_ip.as_deref().and_then(|ip| ip.parse().ok()),
        partner: record.partner.as_deref().map(Into::into),
        final_state,
        reason,
        hangup_cause: HangupCause::parse(&record.hangup_cause)
            .unwrap_or(HangupCause::NORMAL_UNSPECIFIED),
        carrier: record.carrier.as_deref().map(Into::into),
        rate_per_minute: record.rate_per_minute,
        setup_us: record.setup_us,
        talk_s: record.talk_s,
        billed_s: record.billed_s,
        cost: record.cost,
        started_at_us: record.started_at_us,
        ended_at_us: record.ended_at_us,
    })
}

/// The reason of a CDR written for a call settled after the process that ran it stopped.
pub const RECOVERED: &str = "recovered";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_resolve_against_the_hosts_directory() {
        let dir = Path::new("/var/lib/freeswitch/db");
        let at = |place: &LedgerPlace, dir: Option<&Path>| {
            location(place, &SharedLedger::default(), dir)
        };
        let file = |p: std::path::PathBuf| Place::Embedded(Location::File(p));
        assert_eq!(
            at(&LedgerPlace::HostDefault, Some(dir)),
            file(dir.join("rtc_core.db"))
        );
        assert_eq!(at(&LedgerPlace::HostDefault, None), Location::Memory.into());
        assert_eq!(
            at(&LedgerPlace::File("billing/ledger.db".into()), Some(dir)),
            file(dir.join("billing/ledger.db"))
        );
        assert_eq!(
            at(&LedgerPlace::File("/srv/ledger.db".into()), Some(dir)),
            file("/srv/ledger.db".into())
        );
        assert_eq!(at(&LedgerPlace::Memory, Some(dir)), Location::Memory.into());
        // The shared ledger: the URL as given, this node's settings from <local>.
        let shared = SharedLedger {
            node_id: Some("fs-a".into()),
            pool_size: 8,
            timeout: Duration::from_millis(1500),
            lease: Duration::from_secs(20),
            ca_file: Some("/etc/freeswitch/tls/db-ca.pem".into()),
            global: Some((500, 60)),
        };
        let url = "postgres://rtc:secret@db.example:5432/billing";
        match location(&LedgerPlace::Postgres(url.into()), &shared, Some(dir)) {
            Place::Shared(c) => {
                assert_eq!((c.url.as_str(), c.node_id.as_str()), (url, "fs-a"));
                assert_eq!(
                    (c.pool_size, c.timeout, c.lease),
                    (8, shared.timeout, shared.lease)
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn cdrs_round_trip_through_the_ledgers_record() {
        let cdr = Cdr {
            uuid: CallId::from_u128(7),
            caller: "1000".into(),
            destination: "4930123".into(),
            source_ip: "192.0.2.10".parse().ok(),
            partner: Some("acme".into()),
            final_state: "COMPLETED",
            reason: Some("max_duration"),
            hangup_cause: HangupCause::ALLOTTED_TIMEOUT,
            carrier: Some("carrier_a".into()),
            rate_per_minute: Some(Money(25_000)),
            setup_us: Some(800),
            talk_s: 12,
            billed_s: 60,
            cost: Money(25_000),
            started_at_us: 1,
            ended_at_us: 2,
        };
        let record = record_of(&cdr);
        assert_eq!(
            serde_json::to_value(&record).unwrap(),
            serde_json::to_value(&cdr).unwrap(),
            "the ledger stores the engine's CDR as the engine writes it"
        );
        assert_eq!(cdr_of(&record), Some(cdr));
        let mut recovered = record;
        recovered.reason = Some("recovered".into());
        assert_eq!(cdr_of(&recovered).unwrap().reason, Some(RECOVERED));
        recovered.reason = Some("made-up".into());
        assert_eq!(cdr_of(&recovered), None);
    }
}
