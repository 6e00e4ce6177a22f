//! Engine configuration.

use std::time::Duration;

use crate::domain::Money;
use crate::reason::CauseMap;

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
    /// Amount reserved from the partner's balance when a call starts.
    pub reservation_amount: Money,
    /// Capacity of the engine's inbound queue; a full queue is counted, never waited on by FreeSWITCH.
    pub queue_capacity: usize,
    /// How many finished calls keep their trace for `rtc_core call <uuid>`.
    pub finished_traces: usize,
    /// How many finished call ids are remembered to recognise late events.
    pub finished_ids: usize,
    /// How long `shutdown` may take to settle live calls before it abandons them.
    pub shutdown_grace: Duration,
    /// Hangup cause for each refusal reason.
    pub causes: CauseMap,
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
            reservation_amount: Money(1_000_000),
            queue_capacity: 65_536,
            finished_traces: 1024,
            finished_ids: 65_536,
            shutdown_grace: Duration::from_secs(5),
            causes: CauseMap::default(),
        }
    }
}
