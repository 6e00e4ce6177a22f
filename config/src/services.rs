//! The business services' settings: each service's backend, endpoint, timeout, breaker and fail mode
//! (`<service>`), the shared HTTP client, the partner cache and settlements (`<services>` params), and
//! [`ServicesConfig`], everything the service layer is built from and reloads from.

use std::path::PathBuf;
use std::time::Duration;

use rtc_engine::config::FailMode;
use rtc_engine::domain::Route;
use rtc_engine::service::ServiceKind;

use crate::local::LocalFiles;
use crate::shipped_conf_dir;

/// Where a business service's answers come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The embedded backends, fed from the sample-style files under `conf/`.
    Local,
    /// The operator's HTTP service at `url`.
    Http,
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

/// One business service's settings. Its `Debug` shows neither the API key nor a password in the URL.
#[derive(Clone, PartialEq)]
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

impl std::fmt::Debug for ServiceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceConfig")
            .field("kind", &self.kind)
            .field("backend", &self.backend)
            .field("url", &self.url.as_deref().map(crate::secret::redact_url))
            .field("api_key", &self.api_key.as_ref().map(|_| "***"))
            .field("timeout", &self.timeout)
            .field("breaker", &self.breaker)
            .field("fail_mode", &self.fail_mode)
            .finish()
    }
}

impl ServiceConfig {
    /// The defaults of the design: timeouts partner 5 s, auth 3 s, balance 2 s, rating 2 s, routing 3 s;
    /// breakers partner 50 %/30 s, balance 30 %/10 s, rating 40 %/20 s, routing 60 %/15 s.
    pub fn default_for(kind: ServiceKind) -> ServiceConfig {
        let (timeout_ms, rate, open_s) = match kind {
            ServiceKind::Partner => (5000, 50, 30),
            ServiceKind::Auth => (3000, 50, 30),
            ServiceKind::Balance => (2000, 30, 10),
            ServiceKind::Rating => (2000, 40, 20),
            ServiceKind::Routing => (3000, 60, 15),
            ServiceKind::Cdr => (5000, 50, 30),
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
            fail_mode: FailMode::default_for(kind),
        }
    }
}

/// Settings of the shared HTTP client.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpConfig {
    /// Answers larger than this are refused (read stops there): a broken or hostile service cannot make the
    /// module buffer megabytes per call.
    pub max_body_bytes: usize,
    /// Idle keep-alive connections are closed after this long.
    pub pool_idle_timeout: Duration,
    /// Most idle connections kept per service host; enough for the call rate, not so many that a burst
    /// leaves thousands of sockets open.
    pub pool_max_idle_per_host: usize,
    /// A PEM file of extra CA certificates trusted besides the system's (services behind a private CA).
    /// Certificate verification itself cannot be turned off: the API key travels with every request.
    pub extra_ca_file: Option<PathBuf>,
    /// Sent as `User-Agent`, so that service logs show which module version called.
    pub user_agent: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_body_bytes: 64 * 1024,
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle_per_host: 64,
            extra_ca_file: None,
            user_agent: concat!("mod_rtc_core/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

/// The partner cache used when the partner service cannot answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartnerCacheConfig {
    /// How long a partner identified by the service is trusted without asking again, when the service is down.
    pub ttl: Duration,
    /// Most source addresses kept (least recently used go first).
    pub max_entries: u64,
}

impl Default for PartnerCacheConfig {
    fn default() -> Self {
        PartnerCacheConfig {
            ttl: Duration::from_secs(3600),
            max_entries: 100_000,
        }
    }
}

/// How settlement requests (commit, release, CDR) are made sure of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettlementConfig {
    /// Attempts before spooling (the first one included).
    pub attempts: u32,
    /// Wait before the first retry; doubled after each.
    pub backoff_initial: Duration,
    /// Longest wait between retries.
    pub backoff_max: Duration,
    /// No retry starts later than this after the first attempt; the request is spooled instead.
    pub give_up_after: Duration,
    /// The spool file (JSON lines).
    pub spool_path: PathBuf,
    /// How often the spool is replayed in the background (`None`: only when asked).
    pub replay_every: Option<Duration>,
}

impl Default for SettlementConfig {
    fn default() -> Self {
        SettlementConfig {
            attempts: 4,
            backoff_initial: Duration::from_millis(250),
            backoff_max: Duration::from_secs(5),
            give_up_after: Duration::from_secs(30),
            spool_path: PathBuf::from("/var/spool/rtc_core/settlements.jsonl"),
            replay_every: Some(Duration::from_secs(60)),
        }
    }
}

/// Everything the service layer needs: the services' part of the configuration, at start and at
/// `rtc_core reload`.
#[derive(Clone, Debug, PartialEq)]
pub struct ServicesConfig {
    /// One entry per service; a service without one gets [`ServiceConfig::default_for`].
    pub services: Vec<ServiceConfig>,
    /// The shared HTTP client.
    pub http: HttpConfig,
    /// The partner cache.
    pub partner_cache: PartnerCacheConfig,
    /// Served when the routing service fails and routing is fail-open. `${destination}` in a dial string
    /// is replaced with the call's destination.
    pub default_routes: Vec<Route>,
    /// Settlement retries and spool.
    pub settlement: SettlementConfig,
    /// Tables of the local backends (`<local>`).
    pub local: LocalFiles,
}

impl Default for ServicesConfig {
    fn default() -> Self {
        ServicesConfig {
            services: ServiceKind::ALL
                .iter()
                .map(|&k| ServiceConfig::default_for(k))
                .collect(),
            http: HttpConfig::default(),
            partner_cache: PartnerCacheConfig::default(),
            default_routes: Vec::new(),
            settlement: SettlementConfig::default(),
            local: LocalFiles::under(&shipped_conf_dir()),
        }
    }
}

impl ServicesConfig {
    /// The settings of `kind`: its entry, or the defaults.
    pub fn service(&self, kind: ServiceKind) -> ServiceConfig {
        self.services
            .iter()
            .find(|s| s.kind == kind)
            .cloned()
            .unwrap_or_else(|| ServiceConfig::default_for(kind))
    }
}
