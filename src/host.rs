//! The module's door to the call engine: [`rtc_host::Host`] (the `rtc-io` runtime, the business
//! services and the `rtc-engine` thread) started with the configuration FreeSWITCH resolved, and the handle the
//! event handler, the API and the dialplan app reach it through.
//!
//! Configuration: the `<configuration name="rtc_core.conf">` element as FreeSWITCH resolved it (pre-processed,
//! includes expanded), parsed by the configuration's loader ([`RtcConfig::from_xml_str`]) with relative table paths
//! under FreeSWITCH's conf directory. FreeSWITCH hands the element back re-printed, so a loader line number would
//! point into that text, not into the file: when the file `<conf>/autoload_configs/rtc_core.conf.xml` exists and
//! fails the same way, its own `file:line` is reported instead.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc_config::RtcConfig;
use rtc_config::services::Backend;
use rtc_engine::control::CallControl;
use rtc_engine::engine::{EngineHandle, ReloadError};
use rtc_host::metrics_http::{MetricsEndpoint, Render};
use rtc_host::{Host, HostOptions, HostShutdownReport, ServiceTimes};
use rtc_ledger::LedgerHandle;
use rtc_proxy::ProxyTrust;
use rtc_services::ServicesMonitor;

/// The configuration file FreeSWITCH reads for `rtc_core.conf`, relative to its conf directory.
pub const CONFIG_PATH: &str = "autoload_configs/rtc_core.conf.xml";

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigLoadError {
    /// The loader refused it; the text says where (`file:line`) and what to change.
    #[error("{0}")]
    Invalid(String),
    /// FreeSWITCH could not hand it over (missing file, XML FreeSWITCH itself could not parse).
    #[error("{0}")]
    Unavailable(String),
}

/// Parses the `<configuration>` element FreeSWITCH resolved. `conf_dir` is FreeSWITCH's conf directory: relative
/// table paths resolve under it, and the file there names positions in error messages.
pub fn parse_config(xml: &str, conf_dir: &Path) -> Result<RtcConfig, ConfigLoadError> {
    let file = conf_dir.join(CONFIG_PATH);
    let origin = format!("{} (as FreeSWITCH resolved it)", file.display());
    match RtcConfig::from_xml_str(xml, conf_dir, &origin) {
        Ok(mut config) => {
            config.origin = file.display().to_string();
            Ok(config)
        }
        Err(resolved) => {
            // The file itself usually fails the same way, with a line number the operator can open.
            if file.is_file()
                && let Err(on_disk) = RtcConfig::load_file(&file)
                && std::mem::discriminant(&on_disk.problem)
                    == std::mem::discriminant(&resolved.problem)
            {
                return Err(ConfigLoadError::Invalid(on_disk.to_string()));
            }
            let quoted = resolved
                .line
                .and_then(|l| xml.lines().nth(l.saturating_sub(1) as usize))
                .map(|l| format!(" (in: {})", l.trim()))
                .unwrap_or_default();
            Err(ConfigLoadError::Invalid(format!("{resolved}{quoted}")))
        }
    }
}

/// The engine while the module is loaded.
pub struct Running {
    /// Runtime, services and engine thread, stopped in order by [`Running::shutdown`].
    host: Host,
    /// The Prometheus scrape endpoint, when `metrics-listen` is set and its address could be bound.
    metrics: Option<MetricsEndpoint>,
    /// What the API, the app and the event handler use.
    handle: HostHandle,
}

/// A cheap, cloneable way to reach the running engine from any thread.
#[derive(Clone)]
pub struct HostHandle {
    /// Events, decisions, queries and reloads.
    pub engine: EngineHandle,
    /// Breakers and counters of the HTTP services; `None` when every service is local.
    pub monitor: Option<ServicesMonitor>,
    /// The business services' response times, local and HTTP, for metrics.
    pub service_times: ServiceTimes,
    /// The configuration in force (the last accepted reload, or the one loaded).
    pub config: Arc<RtcConfig>,
    /// The configuration the engine was started with: what a reload cannot change is still as here.
    pub started_with: Arc<RtcConfig>,
    /// Reloads accepted since load.
    pub reloads: u32,
    /// When the module started the engine.
    pub started: Instant,
    /// The scrape endpoint, for `status`: its URL, or why it is not serving; `None` when not configured.
    pub metrics_endpoint: Option<String>,
    /// The local ledger (balances, top-ups, CDRs) for `balance`, `topup`, `status` and metrics; `None` when no
    /// service is local.
    pub ledger: Option<LedgerHandle>,
    /// Behind a SIP load balancer, the rule in force: the event handler's (its slot holds the same) and the app's.
    /// `trusted-proxies` follows reloads; `source-header` is the one registered with the event reader at load
    /// ([`proxy_after_reload`]).
    pub proxy: Option<Arc<ProxyTrust>>,
    /// The audit trail (`<audit>`), for operators' actions; `None` when none is kept.
    pub audit: Option<rtc_audit::AuditLog>,
}

impl HostHandle {
    /// Records an operator's action in the audit trail, when one is kept.
    pub fn audit_action(
        &self,
        kind: &'static str,
        by: &str,
        partner: Option<&str>,
        asked: serde_json::Value,
        answered: serde_json::Value,
    ) {
        if let Some(log) = &self.audit {
            rtc_host::trail::operator_action(log, kind, by, partner, asked, answered);
        }
    }
}

impl Running {
    /// Starts runtime, services and engine; `control` is how the engine acts on calls; a ledger the configuration
    /// does not place goes in `ledger_dir` (FreeSWITCH's db directory), in memory when `None`; a relative audit trail
    /// file is under `audit_dir` (FreeSWITCH's log directory); the scrape endpoint, when `metrics-listen` asks for one,
    /// serves what `metrics_page` renders.
    pub fn start(
        config: RtcConfig,
        control: Box<dyn CallControl>,
        ledger_dir: Option<PathBuf>,
        audit_dir: Option<PathBuf>,
        metrics_page: Render,
    ) -> Result<Running, rtc_host::HostError> {
        let host = Host::start_with(
            &config,
            control,
            HostOptions {
                ledger_dir,
                audit_dir,
                ..HostOptions::default()
            },
        )?;
        let (metrics, metrics_endpoint) = match config.metrics_listen {
            None => (None, None),
            // The page is rendered from whatever the module runs at the time of the scrape (after a reload too).
            Some(addr) => {
                match MetricsEndpoint::start(host.io(), addr, metrics_page) {
                    Ok(m) => {
                        let url = format!("http://{}/metrics", m.addr());
                        log::info!("metrics: serving {url}");
                        (Some(m), Some(url))
                    }
                    Err(e) => {
                        // Calls matter more than graphs: the module runs on without the endpoint, and says so.
                        log::error!("{e}; no scrape endpoint (rtc_core metrics still answers)");
                        (None, Some(format!("not serving: {e}")))
                    }
                }
            }
        };
        let proxy = config.proxy.clone().map(Arc::new);
        let config = Arc::new(config);
        let handle = HostHandle {
            engine: host.engine().clone(),
            monitor: host.monitor().cloned(),
            service_times: host.service_times(),
            config: config.clone(),
            started_with: config,
            reloads: 0,
            started: Instant::now(),
            metrics_endpoint,
            ledger: host.ledger().cloned(),
            proxy,
            audit: host.audit().cloned(),
        };
        handle.audit_action(
            rtc_audit::kind::LOAD,
            "module",
            None,
            serde_json::json!({ "config": handle.config.origin }),
            serde_json::json!({ "version": env!("CARGO_PKG_VERSION") }),
        );
        Ok(Running {
            host,
            metrics,
            handle,
        })
    }

    pub fn handle(&self) -> &HostHandle {
        &self.handle
    }

    /// Offers `config` to the engine (`rtc_core reload`); on success it becomes the configuration in force.
    /// Returns what changed, and what needs the module reloaded to change.
    pub fn reload(&mut self, config: RtcConfig, timeout: Duration) -> Result<String, ReloadError> {
        let origin = config.origin.clone();
        let summary = match self.handle.engine.reload(config.for_reload(), timeout) {
            Ok(s) => s,
            Err(e) => {
                self.handle.audit_action(
                    rtc_audit::kind::RELOAD,
                    "api",
                    None,
                    serde_json::json!({ "config": origin }),
                    serde_json::json!({ "refused": e.to_string() }),
                );
                return Err(e);
            }
        };
        self.handle.audit_action(
            rtc_audit::kind::RELOAD,
            "api",
            None,
            serde_json::json!({ "config": origin }),
            serde_json::json!({ "applied": summary }),
        );
        log::set_max_level(config.log_level);
        let pending = not_live(&self.handle.started_with, &config);
        self.handle.proxy = proxy_after_reload(
            &self.handle.started_with,
            self.handle.proxy.as_ref(),
            &config,
        );
        self.handle.config = Arc::new(config);
        self.handle.reloads += 1;
        let mut text = format!("{summary}; log level {}", self.handle.config.log_level);
        if !pending.is_empty() {
            text.push_str(&format!(
                ". Not applied while loaded (the engine cannot take them live; `reload mod_rtc_core` applies \
                 them and ends calls still in setup): {}",
                pending.join(", ")
            ));
        }
        Ok(text)
    }

    /// Stops engine, services and runtime within `grace`; returns once no thread of theirs is left (unless
    /// the report says the runtime was stuck).
    pub fn shutdown(mut self, grace: Duration) -> HostShutdownReport {
        // No scrape may start once shutdown has begun: close the endpoint before its runtime stops.
        drop(self.metrics.take());
        self.handle.audit_action(
            rtc_audit::kind::UNLOAD,
            "module",
            None,
            serde_json::json!({ "grace_ms": grace.as_millis() as u64 }),
            serde_json::Value::Null,
        );
        let mut report = self.host.shutdown(grace);
        // The runtime reports its threads stopped when they leave their loop, but each still runs its exit path
        // (thread-local destructors, the end of its closure) in this library for a moment. FreeSWITCH unmaps the
        // library right after shutdown returns: wait until the kernel has no such thread left.
        if !wait_threads_gone(&OUR_THREADS, grace.max(Duration::from_secs(1))) {
            log::warn!(
                "shutdown: a thread named {OUR_THREADS:?} is still alive; unloading the library now may crash \
                 FreeSWITCH"
            );
            report.runtime_stopped = false;
        }
        report
    }
}

/// The names of the threads the engine starts (`rtc-engine`, the `rtc-io` runtime's workers and blocking threads,
/// the local CDR file's writer `rtc-cdr`, and the ledger's writer `rtc-ledger`).
pub const OUR_THREADS: [&str; 4] = [
    "rtc-engine",
    "rtc-io",
    rtc_services::local::CDR_THREAD,
    rtc_ledger::writer::THREAD_NAME,
];

/// Threads of this process whose name is one of `names` (from `/proc/self/task/*/comm`; a thread leaves that
/// list only once it has fully exited).
pub fn live_threads_named(names: &[&str]) -> usize {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .filter(|comm| names.contains(&comm.trim_end()))
        .count()
}

/// Waits (polling every millisecond, at most `bound`) until no thread named one of `names` is left.
pub fn wait_threads_gone(names: &[&str], bound: Duration) -> bool {
    let deadline = Instant::now() + bound;
    loop {
        if live_threads_named(names) == 0 {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The load balancers' rule in force after a reload from `now` (the one in force) to `new`, for a module loaded with
/// `loaded`. The event reader looks for the source header's variables by the name registered at load: `new`'s rule
/// takes effect when it names that header (a changed `trusted-proxies` is live), or turns the rule off; a rule naming
/// another header waits for a module reload, and the one in force stays as it is ([`not_live`] says so).
pub fn proxy_after_reload(
    loaded: &RtcConfig,
    now: Option<&Arc<ProxyTrust>>,
    new: &RtcConfig,
) -> Option<Arc<ProxyTrust>> {
    match &new.proxy {
        None => None,
        Some(p) if now.is_some_and(|n| **n == *p) => now.cloned(),
        Some(p) if loaded.proxy.as_ref().map(|l| &l.header) == Some(&p.header) => {
            Some(Arc::new(p.clone()))
        }
        Some(_) => now.cloned(),
    }
}

/// What differs between `running` and `new` that a reload cannot change on a running engine.
pub fn not_live(running: &RtcConfig, new: &RtcConfig) -> Vec<&'static str> {
    let mut out = Vec::new();
    if let Some(p) = &new.proxy
        && running.proxy.as_ref().map(|r| &r.header) != Some(&p.header)
    {
        out.push("source-header (and trusted-proxies with it)");
    }
    if running.engine.queue_capacity != new.engine.queue_capacity {
        out.push("queue-capacity");
    }
    if running.io_threads != new.io_threads {
        out.push("io-threads");
    }
    if running.metrics_listen != new.metrics_listen {
        out.push("metrics-listen");
    }
    if running.local.cdr_file != new.local.cdr_file {
        out.push("<local> cdr-file");
    }
    if running.local.cdr_numbers != new.local.cdr_numbers {
        out.push("<audit> numbers (for the CDR export)");
    }
    if running.local.ledger != new.local.ledger {
        out.push("<local> ledger");
    }
    let http = |c: &RtcConfig| c.services.iter().any(|s| s.backend == Backend::Http);
    if http(running) || http(new) {
        // The HTTP service layer is built once, at load: its clients, breakers and any local tables behind it.
        if running.services != new.services
            || running.http != new.http
            || running.partner_cache != new.partner_cache
            || running.default_routes != new.default_routes
            || running.settlement != new.settlement
            || running.local != new.local
        {
            out.push("<services> (the HTTP service layer and the tables behind it keep their load-time settings)");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc_config::shipped_conf_dir;

    #[test]
    fn parses_the_shipped_configuration_with_tables_under_the_conf_dir() {
        let conf = shipped_conf_dir();
        let xml = std::fs::read_to_string(conf.join(CONFIG_PATH)).expect("shipped config");
        let config = parse_config(&xml, &conf).expect("valid");
        assert_eq!(config.local.partners, conf.join("rtc_core/partners.csv"));
        assert!(config.origin.ends_with(CONFIG_PATH), "{}", config.origin);
    }

    #[test]
    fn an_error_names_the_line_and_quotes_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let xml = "<configuration name=\"rtc_core.conf\">\n<settings>\n<param name=\"setup-timout\" value=\"1s\"/>\n</settings>\n</configuration>";
        let err = parse_config(xml, dir.path()).expect_err("unknown param");
        let text = err.to_string();
        assert!(
            text.contains(":3: unknown param \"setup-timout\"")
                && text.contains("(in: <param name=\"setup-timout\""),
            "{text}"
        );
        // With the file on disk failing the same way, its own position is given.
        std::fs::create_dir_all(dir.path().join("autoload_configs")).expect("mkdir");
        std::fs::write(
            dir.path().join(CONFIG_PATH),
            format!("<!-- header -->\n{xml}"),
        )
        .expect("write");
        let text = parse_config(xml, dir.path())
            .expect_err("unknown")
            .to_string();
        assert!(
            text.starts_with(&format!(
                "{}:4: unknown param",
                dir.path().join(CONFIG_PATH).display()
            )),
            "{text}"
        );
    }

    #[test]
    fn reload_reports_what_a_running_engine_keeps() {
        let a = RtcConfig::default();
        let mut b = a.clone();
        assert!(not_live(&a, &b).is_empty());
        b.io_threads = 4;
        b.engine.queue_capacity = 10;
        b.engine.setup_timeout = Duration::from_secs(5);
        assert_eq!(not_live(&a, &b), ["queue-capacity", "io-threads"]);
    }

    #[test]
    fn trusted_proxies_follow_a_reload_and_a_new_source_header_waits() {
        let rule = |proxies: &str, header: &str| RtcConfig {
            proxy: Some(ProxyTrust {
                trusted: rtc_proxy::TrustedProxies::parse(proxies).expect("proxies"),
                header: rtc_proxy::SourceHeader::parse(header).expect("header"),
            }),
            ..RtcConfig::default()
        };
        let off = RtcConfig::default();
        let loaded = rule("10.0.0.5", "X-Source-IP");
        let now = loaded.proxy.clone().map(Arc::new);
        let after = |new: &RtcConfig| {
            proxy_after_reload(&loaded, now.as_ref(), new).map(|p| p.trusted.to_string())
        };
        // Another balancer: live.
        let more = rule("10.0.0.5 10.0.0.6", "X-Source-IP");
        assert_eq!(after(&more).as_deref(), Some("10.0.0.5, 10.0.0.6"));
        assert!(not_live(&loaded, &more).is_empty());
        // Off: live.
        assert_eq!(after(&off), None);
        assert!(not_live(&loaded, &off).is_empty());
        // Another header: the rule in force stays, and the reload says so.
        let other = rule("10.0.0.9", "X-Forwarded-For");
        assert_eq!(after(&other).as_deref(), Some("10.0.0.5"));
        assert_eq!(
            not_live(&loaded, &other),
            ["source-header (and trusted-proxies with it)"]
        );
        // Loaded without one: a reload cannot start reading a header.
        assert_eq!(proxy_after_reload(&off, None, &loaded), None);
        assert_eq!(not_live(&off, &loaded).len(), 1);
    }
}
