//! Engine configuration: the engine thread's own settings ([`EngineConfig`]), what a call does when a service
//! cannot answer ([`FailModes`]), and what `rtc_core reload` offers a running engine ([`NewSettings`]).
//!
//! How services are built and configured is not the engine's business: the configuration crate fills these
//! from `rtc_core.conf.xml` next to the services' own settings.

use std::any::Any;
use std::time::Duration;

use crate::admission::{AdmissionConfig, CpsLimit};
use crate::domain::Money;
use crate::reason::CauseMap;
use crate::service::ServiceKind;

/// What the engine thread itself needs to know. Services, backends and the host have their own sections.
#[derive(Clone, Debug, PartialEq)]
pub struct EngineConfig {
    /// From CHANNEL_CREATE to a connected (or refused) call; past it the call is hung up (`setup_timeout`).
    pub setup_timeout: Duration,
    /// How long a decided call may wait in park before it is bridged; past it it is hung up.
    pub park_timeout: Duration,
    /// Upper bound on any call's talk time, whatever its balance pays for.
    pub max_call_duration: Duration,
    /// A call with no event for this long is taken as lost (its hangup never arrived) and swept.
    pub stale_after: Duration,
    /// How long a refused or failed call stays in the registry waiting for its hangup before it is swept.
    pub linger: Duration,
    /// How often the sweep runs.
    pub sweep_interval: Duration,
    /// A live call with no event for this long has its channel looked up by the host; one that is gone had its
    /// hangup lost, and is settled then (`channel_gone`, as swept). Zero: never looked up.
    pub verify_after: Duration,
    /// Amount reserved from the partner's balance when a call starts.
    pub reservation_amount: Money,
    /// Real-time billing: a connected call's next interval is debited from the partner's money this often (its
    /// reservation extended), and the call is hung up when what it paid for runs out.
    pub debit_interval: Duration,
    /// Capacity of the engine's inbound queue; a full queue is counted, never waited on by FreeSWITCH.
    pub queue_capacity: usize,
    /// How many finished calls keep their trace for `rtc_core call <uuid>`.
    pub finished_traces: usize,
    /// How many finished call ids are remembered to recognise late events.
    pub finished_ids: usize,
    /// How long `shutdown` may take to settle live calls before it abandons them.
    pub shutdown_grace: Duration,
    /// At shutdown (module unload), hang connected calls up too (`shutdown-calls hangup`) rather than leave them
    /// up, billed so far (`keep`). Calls still in setup are hung up either way.
    pub hangup_connected_on_shutdown: bool,
    /// Hangup cause for each refusal reason.
    pub causes: CauseMap,
    /// Global call limits and overload shedding (per-partner limits come with the partner).
    pub admission: AdmissionConfig,
    /// While traffic flows the engine thread polls its queues at this interval instead of being woken for
    /// every event (a wake-up costs FreeSWITCH's event thread a syscall and the engine a context switch).
    /// Each poll costs about 20 µs of CPU on a virtual machine, so the interval trades the engine's CPU for
    /// latency: 750 µs is 1333 polls a second, and events wait up to 750 µs longer (FreeSWITCH's own event
    /// dispatch lag is 10 ms and more under load). Zero: woken for every event.
    pub poll_interval: Duration,
    /// Dialplan contexts (`Caller-Context`) whose new inbound channels the engine takes from their CHANNEL_CREATE;
    /// a channel in another context is decided only if it reaches the `rtc_core` app or parks with
    /// `rtc_core=true`. Empty: every context.
    pub contexts: Vec<compact_str::CompactString>,
    /// The fraud rules (`<fraud>`): decided on the engine thread, from counters it keeps.
    pub fraud: rtc_guard::FraudRules,
    /// A destination that is not digits (after one leading `+`) or has more digits than this is refused as
    /// `invalid_destination` before any service is asked (0: not checked).
    pub destination_digits: u8,
}

impl EngineConfig {
    /// How long a reservation made at call setup lives unsettled before it frees itself: past the setup and park
    /// timeouts, by two debit intervals and a minute (the first extension, at answer, moves it on).
    pub fn reservation_ttl(&self) -> Duration {
        self.setup_timeout + self.park_timeout + self.extension_ttl()
    }

    /// How long an extended reservation lives unsettled: two debit intervals and a minute. A live call extends it
    /// every interval; one nobody extends (a lost call, a dead process) frees itself.
    pub fn extension_ttl(&self) -> Duration {
        self.debit_interval * 2 + Duration::from_secs(60)
    }

    /// How long before what a call paid for runs out its next interval is asked for: half an interval, at most
    /// five seconds (room for the balance service's answer).
    pub fn debit_lead(&self) -> Duration {
        (self.debit_interval / 2).min(Duration::from_secs(5))
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            setup_timeout: Duration::from_secs(60),
            park_timeout: Duration::from_secs(30),
            max_call_duration: Duration::from_secs(4 * 3600),
            stale_after: Duration::from_secs(4 * 3600 + 600),
            linger: Duration::from_secs(30),
            sweep_interval: Duration::from_secs(5),
            verify_after: Duration::from_secs(60),
            reservation_amount: Money(1_000_000),
            debit_interval: Duration::from_secs(60),
            queue_capacity: 65_536,
            finished_traces: 1024,
            finished_ids: 65_536,
            shutdown_grace: Duration::from_secs(5),
            hangup_connected_on_shutdown: false,
            causes: CauseMap::default(),
            fraud: rtc_guard::FraudRules::default(),
            destination_digits: rtc_guard::E164_MAX_DIGITS,
            admission: AdmissionConfig {
                max_concurrent: 0,
                cps: CpsLimit::default(),
                // Shed new calls (never events of live ones) once the engine falls well behind.
                shed_queue_depth: 32_768,
                // Off by default: the age is read against FreeSWITCH's `Event-Date-Timestamp`, which over
                // ESL may come from another host's clock.
                shed_queue_age: Duration::ZERO,
            },
            poll_interval: Duration::from_micros(750),
            contexts: Vec::new(),
        }
    }
}

/// What a call does when its service cannot answer (error, timeout, breaker open) and no degraded answer
/// (cached partner, default route) is available.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailMode {
    /// Carry on as if the service had said yes (an operator's choice: revenue over risk).
    Open,
    /// Refuse the call with reason `service_down`.
    Closed,
}

impl FailMode {
    /// The design's default for `kind`: routing and CDRs fail open, every decision before them closed.
    pub const fn default_for(kind: ServiceKind) -> FailMode {
        match kind {
            ServiceKind::Routing | ServiceKind::Cdr => FailMode::Open,
            ServiceKind::Partner
            | ServiceKind::Auth
            | ServiceKind::Balance
            | ServiceKind::Rating => FailMode::Closed,
        }
    }
}

/// Per-service behaviour when a service cannot answer: the fail mode of every service, as the engine applies
/// them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FailModes([FailMode; ServiceKind::ALL.len()]);

impl Default for FailModes {
    fn default() -> Self {
        FailModes(ServiceKind::ALL.map(FailMode::default_for))
    }
}

impl FailModes {
    /// Sets `kind`'s fail mode.
    pub fn set(&mut self, kind: ServiceKind, mode: FailMode) {
        if let Some(i) = ServiceKind::ALL.iter().position(|k| *k == kind) {
            self.0[i] = mode;
        }
    }

    /// `kind`'s fail mode.
    pub fn get(&self, kind: ServiceKind) -> FailMode {
        ServiceKind::ALL
            .iter()
            .position(|k| *k == kind)
            .map_or(FailMode::Closed, |i| self.0[i])
    }
}

/// A configuration offered to a running engine (`rtc_core reload`): the engine's own settings, and the
/// services' part, which only the services read. The services take theirs first, all or nothing; only then
/// does the engine take its own.
pub struct NewSettings {
    /// The engine thread's settings (timeouts, causes, admission limits).
    pub engine: EngineConfig,
    /// What a call does when each service cannot answer.
    pub fail_modes: FailModes,
    /// The services' settings, handed as they are to [`ServiceSink::reload`](crate::service::ServiceSink::reload).
    pub services: Box<dyn Any + Send>,
    /// Where the configuration came from (a file path, or a description), for the answer and the log.
    pub origin: String,
}
