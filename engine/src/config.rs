//! Engine configuration.

use std::time::Duration;

use crate::domain::Money;
use crate::reason::CauseMap;
use crate::services::admission::{AdmissionConfig, CpsLimit};

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

use crate::service::ServiceKind;

/// Where a business service's answers come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The embedded backends, fed from the sample-style files under `conf/`.
    Local,
    /// The operator's HTTP service at `url`.
    Http,
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

/// A circuit breaker's thresholds.
#[derive(Clone, Debug, PartialEq)]
pub struct BreakerConfig {
    /// Failure rate, in percent of the calls in the window, at which the breaker opens.
    pub failure_rate_pct: u8,
    /// How long it stays open before letting probes through.
    pub open_for: Duration,
    /// Length of the sliding window over which the failure rate is judged.
    pub window: Duration,
    /// Fewest calls in the window before the rate is judged at all.
    pub min_calls: u32,
    /// Probes allowed while half-open; all must succeed to close.
    pub half_open_probes: u32,
}

/// One business service's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceConfig {
    /// Which service.
    pub kind: ServiceKind,
    /// Local or HTTP.
    pub backend: Backend,
    /// Endpoint for the HTTP backend.
    pub url: Option<String>,
    /// Sent as the `X-API-Key` header by the HTTP backend.
    pub api_key: Option<String>,
    /// Bound on one request, connect included.
    pub timeout: Duration,
    /// Breaker thresholds.
    pub breaker: BreakerConfig,
    /// Behaviour when no answer can be had.
    pub fail_mode: FailMode,
}

impl ServiceConfig {
    /// The defaults of the design: timeouts partner 5 s, auth 3 s, balance 2 s, rating 2 s, routing 3 s;
    /// breakers partner 50 %/30 s, balance 30 %/10 s, rating 40 %/20 s, routing 60 %/15 s.
    pub fn default_for(kind: ServiceKind) -> ServiceConfig {
        let (timeout_ms, rate, open_s, fail_mode) = match kind {
            ServiceKind::Partner => (5000, 50, 30, FailMode::Closed),
            ServiceKind::Auth => (3000, 50, 30, FailMode::Closed),
            ServiceKind::Balance => (2000, 30, 10, FailMode::Closed),
            ServiceKind::Rating => (2000, 40, 20, FailMode::Closed),
            ServiceKind::Routing => (3000, 60, 15, FailMode::Open),
            ServiceKind::Cdr => (5000, 50, 30, FailMode::Open),
        };
        ServiceConfig {
            kind,
            backend: Backend::Local,
            url: None,
            api_key: None,
            timeout: Duration::from_millis(timeout_ms),
            breaker: BreakerConfig {
                failure_rate_pct: rate,
                open_for: Duration::from_secs(open_s),
                window: Duration::from_secs(60),
                min_calls: 20,
                half_open_probes: 3,
            },
            fail_mode,
        }
    }
}
