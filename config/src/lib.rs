//! The configuration file: `rtc_core.conf.xml`, FreeSWITCH style, parsed into an [`RtcConfig`].
//!
//! One file serves the module (FreeSWITCH hands over its `<configuration name="rtc_core.conf">` element,
//! usually inside its whole XML document) and `rtc-core esl --config <file>`. Shape:
//!
//! ```xml
//! <configuration name="rtc_core.conf" description="mod_rtc_core call control">
//!   <settings> <param name="setup-timeout" value="60s"/> ... </settings>
//!   <local> <param name="partners" value="rtc_core/partners.csv"/> ... </local>
//!   <services>
//!     <param name="partner-cache-ttl" value="1h"/> ...            (HTTP client, partner cache, settlements)
//!     <service name="partner" backend="local" timeout="5s" .../> ...
//!     <default-routes> <route carrier=".." dial-string=".." cost-per-minute=".."/> </default-routes>
//!   </services>
//!   <causes> <param name="no_balance" value="OUTGOING_CALL_BARRED"/> ... </causes>
//! </configuration>
//! ```
//!
//! The parser is strict on purpose: an unknown element, param or attribute is an error naming it and its
//! line, because a misspelt `setup-timout` silently falling back to its default is the kind of mistake an
//! operator finds only in production. Durations are written `500ms`, `60s`, `5m`, `4h`, or as a bare number
//! of seconds; amounts of money as decimals (`1.50`).
//!
//! Typed settings without knowing how services are built: the engine core's own ([`EngineConfig`]), and the
//! services' ([`services`], [`local`]), which the services crate is built from and reloads from.
//!
//! # Layout
//! - this file: [`RtcConfig`] and the parser, [`ConfigError`].
//! - [`services`]: each business service's settings, the shared HTTP client, the partner cache, settlements,
//!   and [`ServicesConfig`], the services' part of a configuration.
//! - [`local`]: where the local backends read their tables and keep the ledger.
//! - [`limits`]: what a route or an amount may hold, checked here and in the services' answers alike.
//! - [`audit`]: the audit trail's settings (`<audit>`), and how numbers are written in it and in the CDR exports.
//! - [`secret`]: secrets given inline or as `file:`/`env:` references; URLs shown without their passwords.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod audit;
pub mod limits;
pub mod local;
pub mod secret;
pub mod services;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use log::LevelFilter;
use roxmltree::{Document, Node};
use rtc_engine::cause::HangupCause;
use rtc_engine::config::{EngineConfig, FailMode, FailModes, NewSettings};
use rtc_engine::domain::Route;
use rtc_engine::reason::Reason;
use rtc_engine::service::ServiceKind;
use rtc_money::Money;
use rtc_proxy::{ProxyTrust, SourceHeader, TrustedProxies};

use local::{LedgerPlace, LocalFiles};
use services::{
    Backend, HttpConfig, PartnerCacheConfig, ServiceConfig, ServicesConfig, SettlementConfig,
};

/// The `name` of the `<configuration>` element this module reads.
pub const CONFIGURATION_NAME: &str = "rtc_core.conf";

/// Params accepted in `<settings>`.
pub const SETTINGS_PARAMS: &[&str] = &[
    "setup-timeout",
    "park-timeout",
    "max-call-duration",
    "stale-after",
    "linger",
    "sweep-interval",
    "verify-after",
    "reservation-amount",
    "debit-interval",
    "queue-capacity",
    "finished-traces",
    "finished-ids",
    "shutdown-grace",
    "shutdown-calls",
    "io-threads",
    "log-level",
    "max-calls",
    "max-cps",
    "cps-burst",
    "shed-queue-depth",
    "shed-queue-age",
    "poll-interval",
    "contexts",
    "metrics-listen",
    "transfer-context",
    "trusted-proxies",
    "source-header",
];

/// Params accepted in `<local>`.
pub const LOCAL_PARAMS: &[&str] = &[
    "partners",
    "rates",
    "routes",
    "balances",
    "cdr-file",
    "cdr-memory",
    "ledger",
    "ledger-node-id",
    "ledger-pool-size",
    "ledger-timeout",
    "ledger-lease",
    "ledger-ca-file",
    "ledger-global-limits",
];

/// `<local>` params still accepted so that older configurations load, but no longer used (a warning says so).
pub const RETIRED_LOCAL_PARAMS: &[&str] = &["cdr-memory"];

/// Params accepted directly in `<services>`: the shared HTTP client, the partner cache and settlements.
pub const SERVICES_PARAMS: &[&str] = &[
    "max-body",
    "pool-idle-timeout",
    "pool-max-idle",
    "extra-ca-file",
    "user-agent",
    "partner-cache-ttl",
    "partner-cache-size",
    "spool-file",
    "settlement-attempts",
    "settlement-backoff",
    "settlement-backoff-max",
    "settlement-give-up",
    "spool-replay-interval",
];

/// Params accepted directly in `<fraud>`.
pub const FRAUD_PARAMS: &[&str] = &[
    "enabled",
    "max-destination-digits",
    "block-for",
    "block-hangup",
    "recent-hits",
];

/// Attributes accepted on each `<rule>` in `<fraud>`, by the rule's name.
pub const FRAUD_RULES: &[(&str, &[&str])] = &[
    ("spend-hour", &["name", "most", "action"]),
    ("spend-day", &["name", "most", "action"]),
    (
        "pumping",
        &[
            "name",
            "per-number",
            "per-prefix",
            "prefix-digits",
            "action",
        ],
    ),
    (
        "burst",
        &[
            "name",
            "factor",
            "min-per-second",
            "window",
            "baseline",
            "memory",
            "memory-size",
            "action",
        ],
    ),
    ("short-calls", &["name", "max-talk", "run", "action"]),
];

/// Attributes accepted on `<class>` in `<fraud>`.
pub const FRAUD_CLASS_ATTRIBUTES: &[&str] = &[
    "name",
    "prefixes",
    "action",
    "max-call-cost",
    "max-duration",
];

/// Attributes accepted on `<route>` in `<default-routes>`.
pub const ROUTE_ATTRIBUTES: &[&str] = &["carrier", "dial-string", "cost-per-minute"];

/// Smallest and largest `max-body`, in bytes.
pub const MAX_BODY_RANGE: std::ops::RangeInclusive<usize> = 1024..=16 * 1024 * 1024;

/// Attributes accepted on `<service>`.
pub const SERVICE_ATTRIBUTES: &[&str] = &[
    "name",
    "backend",
    "url",
    "api-key",
    "timeout",
    "failure-rate",
    "open-for",
    "window",
    "min-calls",
    "half-open-probes",
    "fail-mode",
];

/// Everything `rtc_core.conf.xml` says.
#[derive(Clone, Debug, PartialEq)]
pub struct RtcConfig {
    /// The engine thread's own settings (timeouts, sweep, reservation amount, causes).
    pub engine: EngineConfig,
    /// One entry per [`ServiceKind`], in [`ServiceKind::ALL`] order; see [`RtcConfig::service`].
    pub services: Vec<ServiceConfig>,
    /// The HTTP client shared by the HTTP services (`<services>` params).
    pub http: HttpConfig,
    /// The partner cache served when the partner service fails (`<services>` params).
    pub partner_cache: PartnerCacheConfig,
    /// Served when fail-open routing fails (`<default-routes>`).
    pub default_routes: Vec<Route>,
    /// Settlement retries and spool (`<services>` params).
    pub settlement: SettlementConfig,
    /// Worker threads of the embedded tokio runtime that runs the services.
    pub io_threads: usize,
    /// Most verbose level the module logs at.
    pub log_level: LevelFilter,
    /// Where the Prometheus scrape endpoint (`GET /metrics`) listens; `None`: no endpoint.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Dialplan context the module's `rtc_core` app transfers a connected call to (with `rtc_dial` set) instead
    /// of bridging it itself; `None`: the app bridges.
    pub transfer_context: Option<String>,
    /// Behind a SIP load balancer: the proxies whose source header names a call's original source
    /// (`trusted-proxies` and `source-header`, both or neither); `None`: every call is identified by its transport
    /// source.
    pub proxy: Option<ProxyTrust>,
    /// Tables of the local backends.
    pub local: LocalFiles,
    /// The audit trail (`<audit>`); `None`: no trail.
    pub audit: Option<audit::AuditConfig>,
    /// Where this configuration came from (file path or a description), for messages and `rtc_core status`.
    pub origin: String,
}

/// The `conf/` directory shipped in this repository, which [`RtcConfig::default`] reads its tables from.
pub fn shipped_conf_dir() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).join("conf")
}

impl Default for RtcConfig {
    /// The built-in defaults, with the local backends reading the sample tables of the repository's `conf/`.
    fn default() -> Self {
        RtcConfig {
            engine: EngineConfig::default(),
            services: ServiceKind::ALL
                .into_iter()
                .map(ServiceConfig::default_for)
                .collect(),
            http: HttpConfig::default(),
            partner_cache: PartnerCacheConfig::default(),
            default_routes: Vec::new(),
            settlement: SettlementConfig::default(),
            io_threads: 2,
            log_level: LevelFilter::Info,
            metrics_listen: None,
            transfer_context: None,
            proxy: None,
            local: LocalFiles::under(&shipped_conf_dir()),
            audit: None,
            origin: "built-in defaults".to_owned(),
        }
    }
}

/// Why the configuration could not be used: where (origin and line) and what.
#[derive(Debug, thiserror::Error)]
#[error("{origin}{}: {problem}", Line(*line))]
pub struct ConfigError {
    /// The file path or description given to the loader.
    pub origin: String,
    /// 1-based line in that text, when the problem has one.
    pub line: Option<u32>,
    /// What is wrong.
    pub problem: ConfigProblem,
}

/// Formats `:<line>` when there is a line.
struct Line(Option<u32>);

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(line) => write!(f, ":{line}"),
            None => Ok(()),
        }
    }
}

/// What is wrong with a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigProblem {
    /// The file cannot be read.
    #[error("cannot read the file: {0}")]
    Read(String),
    /// The text is not well-formed XML.
    #[error("not well-formed XML: {0}")]
    Xml(String),
    /// No `<configuration name="rtc_core.conf">`.
    #[error(
        "no <configuration name=\"rtc_core.conf\"> element; the file must contain one (see conf/autoload_configs/rtc_core.conf.xml)"
    )]
    NoConfiguration,
    /// Two of them.
    #[error(
        "a second <configuration name=\"rtc_core.conf\"> element (the first is at line {first_line}); keep one"
    )]
    DuplicateConfiguration {
        /// Where the first is.
        first_line: u32,
    },
    /// An element the parent does not take.
    #[error("unknown element <{element}> in <{parent}>; expected {expected}")]
    UnknownElement {
        /// The element.
        element: String,
        /// Its parent.
        parent: String,
        /// What the parent takes.
        expected: String,
    },
    /// A section given twice.
    #[error("section <{section}> appears twice (the first is at line {first_line}); merge them")]
    DuplicateSection {
        /// The section.
        section: String,
        /// Where the first is.
        first_line: u32,
    },
    /// An attribute an element needs.
    #[error("<{element}> needs a {attribute:?} attribute")]
    MissingAttribute {
        /// The element.
        element: &'static str,
        /// The attribute.
        attribute: &'static str,
    },
    /// An attribute the element does not take.
    #[error("unknown attribute {attribute:?} on <{element}>; known: {known}")]
    UnknownAttribute {
        /// The element.
        element: &'static str,
        /// The attribute.
        attribute: String,
        /// What the element takes.
        known: String,
    },
    /// A param the section does not take.
    #[error("unknown param {name:?} in <{section}>; known: {known}")]
    UnknownParam {
        /// The section.
        section: &'static str,
        /// The param.
        name: String,
        /// What the section takes.
        known: String,
    },
    /// A param given twice.
    #[error(
        "param {name:?} is given twice in <{section}> (the first is at line {first_line}); keep one"
    )]
    DuplicateParam {
        /// The section.
        section: &'static str,
        /// The param.
        name: String,
        /// Where the first is.
        first_line: u32,
    },
    /// A value that does not read as what it should be.
    #[error("{name}: {value:?} is not {expected}")]
    BadValue {
        /// The param or attribute.
        name: String,
        /// What the file says.
        value: String,
        /// What it should be.
        expected: &'static str,
    },
    /// `<default-routes>` given twice.
    #[error(
        "<default-routes> appears twice in <services> (the first is at line {first_line}); merge them"
    )]
    DuplicateDefaultRoutes {
        /// Where the first is.
        first_line: u32,
    },
    /// A default route that cannot be used.
    #[error("default route {carrier:?}: {problem}")]
    BadDefaultRoute {
        /// Its carrier.
        carrier: String,
        /// What is wrong.
        problem: String,
    },
    /// A service the engine does not have.
    #[error("unknown service {name:?}; known: partner, auth, balance, rating, routing, cdr")]
    UnknownService {
        /// The name given.
        name: String,
    },
    /// A service configured twice.
    #[error("service {name:?} is configured twice (the first is at line {first_line}); keep one")]
    DuplicateService {
        /// The service.
        name: String,
        /// Where the first is.
        first_line: u32,
    },
    /// An HTTP service without a URL.
    #[error(
        "service {service}: backend \"http\" needs a url attribute (http://... or https://...), or use backend=\"local\""
    )]
    HttpWithoutUrl {
        /// The service.
        service: &'static str,
    },
    /// A reason the engine does not have.
    #[error("unknown reason {name:?} in <causes>; known: {known}")]
    UnknownReason {
        /// The name given.
        name: String,
        /// The reasons.
        known: String,
    },
    /// A param whose value is wrong in a way its own parser explains.
    #[error("{name}: {problem}")]
    BadParam {
        /// The param.
        name: &'static str,
        /// What is wrong, and what it should be.
        problem: String,
    },
    /// One of `trusted-proxies` and `source-header` without the other.
    #[error(
        "{given} is set but {missing} is not: behind a SIP load balancer both are needed (the proxies whose header \
         is believed, and the header's name, e.g. X-Source-IP); set both, or neither"
    )]
    ProxyHalfConfigured {
        /// The one given.
        given: &'static str,
        /// The one missing.
        missing: &'static str,
    },
    /// `stale-after` no longer than `max-call-duration`.
    #[error(
        "stale-after ({stale_after:?}) must be longer than max-call-duration ({max_call_duration:?}): a call in conversation sends no events and would be swept as lost"
    )]
    StaleBeforeMaxDuration {
        /// `stale-after`.
        stale_after: Duration,
        /// `max-call-duration`.
        max_call_duration: Duration,
    },
}

const DURATION: &str = "a duration such as 500ms, 60s, 5m or 4h (a bare number is seconds)";
const POSITIVE_DURATION: &str =
    "a duration above zero such as 500ms, 60s, 5m or 4h (a bare number is seconds)";

/// Parses `750us`, `500ms`, `60s`, `5m`, `4h`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    if number.is_empty() {
        return None;
    }
    let n: u64 = number.parse().ok()?;
    match unit.trim() {
        "" | "s" => Some(Duration::from_secs(n)),
        "us" | "µs" => Some(Duration::from_micros(n)),
        "ms" => Some(Duration::from_millis(n)),
        "m" => Some(Duration::from_secs(n.checked_mul(60)?)),
        "h" => Some(Duration::from_secs(n.checked_mul(3600)?)),
        _ => None,
    }
}

/// Parses a log level: the `log` crate's names (`off`, `error`, `warn`, `info`, `debug`, `trace`) and the
/// FreeSWITCH ones that map onto them (`err`, `crit`, `alert`, `warning`, `notice`, `console`).
pub fn parse_log_level(text: &str) -> Option<LevelFilter> {
    let text = text.trim().to_ascii_lowercase();
    match text.as_str() {
        "err" | "crit" | "alert" | "emerg" => Some(LevelFilter::Error),
        "warning" => Some(LevelFilter::Warn),
        "notice" => Some(LevelFilter::Info),
        "console" => Some(LevelFilter::Debug),
        other => other.parse().ok(),
    }
}

impl RtcConfig {
    /// The settings of one service.
    pub fn service(&self, kind: ServiceKind) -> &ServiceConfig {
        let index = ServiceKind::ALL
            .iter()
            .position(|k| *k == kind)
            .unwrap_or_default();
        &self.services[index]
    }

    /// Everything the service layer needs, as configured: what the services are built from, and what they
    /// reload from.
    pub fn services_config(&self) -> ServicesConfig {
        ServicesConfig {
            services: self.services.clone(),
            http: self.http.clone(),
            partner_cache: self.partner_cache.clone(),
            default_routes: self.default_routes.clone(),
            settlement: self.settlement.clone(),
            local: self.local.clone(),
        }
    }

    /// What each service does when it cannot answer, as the engine applies it.
    pub fn fail_modes(&self) -> FailModes {
        let mut modes = FailModes::default();
        for s in &self.services {
            modes.set(s.kind, s.fail_mode);
        }
        modes
    }

    /// This configuration as `rtc_core reload` offers it to a running engine: the engine's own settings, and
    /// the services' part ([`ServicesConfig`]), which the services read.
    pub fn for_reload(&self) -> NewSettings {
        NewSettings {
            engine: self.engine.clone(),
            fail_modes: self.fail_modes(),
            services: Box::new(self.services_config()),
            origin: self.origin.clone(),
        }
    }

    /// Whether any service is answered over HTTP (the host then runs the HTTP service layer).
    pub fn any_http(&self) -> bool {
        self.services.iter().any(|s| s.backend == Backend::Http)
    }

    /// Whether any service is answered by the local backends (the host then loads their tables).
    pub fn any_local(&self) -> bool {
        self.services.iter().any(|s| s.backend == Backend::Local)
    }

    /// Reads a configuration file given on a command line. Relative table paths resolve against the
    /// FreeSWITCH conf directory the file sits in: the parent of its directory when that directory is
    /// `autoload_configs`, else the file's own directory.
    pub fn load_file(path: &Path) -> Result<RtcConfig, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            origin: origin.clone(),
            line: None,
            problem: ConfigProblem::Read(e.to_string()),
        })?;
        let dir = path.parent().unwrap_or(Path::new(""));
        let base = if dir.file_name().is_some_and(|n| n == "autoload_configs") {
            dir.parent().unwrap_or(Path::new(""))
        } else {
            dir
        };
        RtcConfig::from_xml_str(&text, base, &origin)
    }

    /// Parses configuration text: either a document whose root is `<configuration name="rtc_core.conf">`,
    /// or any larger document containing exactly one such element (as FreeSWITCH's whole XML does).
    /// Relative table paths resolve against `base_dir`; `origin` names the text in error messages.
    pub fn from_xml_str(
        text: &str,
        base_dir: &Path,
        origin: &str,
    ) -> Result<RtcConfig, ConfigError> {
        let doc = Document::parse(text).map_err(|e| ConfigError {
            origin: origin.to_owned(),
            line: Some(e.pos().row),
            problem: ConfigProblem::Xml(e.to_string()),
        })?;
        let parser = Parser { doc: &doc, origin };
        parser.parse(base_dir)
    }
}

/// Parsing state: the document and where it came from, for error positions.
struct Parser<'d, 'input> {
    /// The parsed document.
    doc: &'d Document<'input>,
    /// File path or description, for messages.
    origin: &'d str,
}

impl<'d, 'input> Parser<'d, 'input> {
    fn line_of(&self, node: Node) -> u32 {
        self.doc.text_pos_at(node.range().start).row
    }

    fn err(&self, node: Node, problem: ConfigProblem) -> ConfigError {
        ConfigError {
            origin: self.origin.to_owned(),
            line: Some(self.line_of(node)),
            problem,
        }
    }

    /// The line of a node's attribute (falls back to the node's line).
    fn attr_line(&self, node: Node, name: &str) -> u32 {
        node.attributes()
            .find(|a| a.name() == name)
            .map(|a| self.doc.text_pos_at(a.range().start).row)
            .unwrap_or_else(|| self.line_of(node))
    }

    fn find_configuration(&self) -> Result<Node<'d, 'input>, ConfigError> {
        let mut found: Option<Node<'d, 'input>> = None;
        for node in self.doc.descendants() {
            if node.has_tag_name("configuration")
                && node.attribute("name") == Some(CONFIGURATION_NAME)
            {
                if let Some(first) = found {
                    return Err(self.err(
                        node,
                        ConfigProblem::DuplicateConfiguration {
                            first_line: self.line_of(first),
                        },
                    ));
                }
                found = Some(node);
            }
        }
        found.ok_or_else(|| ConfigError {
            origin: self.origin.to_owned(),
            line: None,
            problem: ConfigProblem::NoConfiguration,
        })
    }

    fn parse(&self, base_dir: &Path) -> Result<RtcConfig, ConfigError> {
        let root = self.find_configuration()?;
        let mut config = RtcConfig {
            local: LocalFiles::under(base_dir),
            origin: self.origin.to_owned(),
            ..RtcConfig::default()
        };
        let mut seen: HashMap<&str, u32> = HashMap::new();
        let mut stale_line = None;
        for section in root.children().filter(Node::is_element) {
            let name = section.tag_name().name();
            if let Some(&first_line) = seen.get(name) {
                return Err(self.err(
                    section,
                    ConfigProblem::DuplicateSection {
                        section: name.to_owned(),
                        first_line,
                    },
                ));
            }
            match name {
                "settings" => stale_line = self.settings(section, &mut config)?,
                "local" => self.local(section, base_dir, &mut config.local)?,
                "services" => self.services(section, base_dir, &mut config)?,
                "causes" => self.causes(section, &mut config.engine)?,
                "fraud" => self.fraud(section, &mut config.engine)?,
                "audit" => self.audit(section, base_dir, &mut config)?,
                other => {
                    return Err(self.err(
                        section,
                        ConfigProblem::UnknownElement {
                            element: other.to_owned(),
                            parent: "configuration".to_owned(),
                            expected:
                                "<settings>, <local>, <services>, <causes>, <fraud> or <audit>"
                                    .to_owned(),
                        },
                    ));
                }
            }
            seen.insert(name, self.line_of(section));
        }
        if config.local.shared.global.is_some() {
            let admission = &config.engine.admission;
            config.local.shared.global = Some((admission.max_concurrent, admission.cps.per_second));
        }
        let engine = &config.engine;
        if engine.stale_after <= engine.max_call_duration {
            return Err(ConfigError {
                origin: self.origin.to_owned(),
                line: stale_line.or(Some(self.line_of(root))),
                problem: ConfigProblem::StaleBeforeMaxDuration {
                    stale_after: engine.stale_after,
                    max_call_duration: engine.max_call_duration,
                },
            });
        }
        Ok(config)
    }

    /// The `<param name=".." value=".."/>` children of a section, each checked for shape and duplicates.
    fn params(
        &self,
        section: Node<'d, 'input>,
        section_name: &'static str,
        known: &[&str],
    ) -> Result<Vec<(Node<'d, 'input>, &'d str, &'d str)>, ConfigError> {
        let mut out = Vec::new();
        let mut seen: HashMap<&str, u32> = HashMap::new();
        for param in section.children().filter(Node::is_element) {
            if !param.has_tag_name("param") {
                return Err(self.err(
                    param,
                    ConfigProblem::UnknownElement {
                        element: param.tag_name().name().to_owned(),
                        parent: section_name.to_owned(),
                        expected: "<param name=\"...\" value=\"...\"/>".to_owned(),
                    },
                ));
            }
            let (name, value) = self.param(param, section_name, known, &mut seen)?;
            out.push((param, name, value));
        }
        Ok(out)
    }

    /// One `<param>`: only `name` and `value`, a known name, not given before in the section (`seen`).
    fn param(
        &self,
        param: Node<'d, 'input>,
        section_name: &'static str,
        known: &[&str],
        seen: &mut HashMap<&'d str, u32>,
    ) -> Result<(&'d str, &'d str), ConfigError> {
        for attr in param.attributes() {
            if !matches!(attr.name(), "name" | "value") {
                return Err(self.err(
                    param,
                    ConfigProblem::UnknownAttribute {
                        element: "param",
                        attribute: attr.name().to_owned(),
                        known: "name, value".to_owned(),
                    },
                ));
            }
        }
        let name = param.attribute("name").ok_or_else(|| {
            self.err(
                param,
                ConfigProblem::MissingAttribute {
                    element: "param",
                    attribute: "name",
                },
            )
        })?;
        let value = param.attribute("value").ok_or_else(|| {
            self.err(
                param,
                ConfigProblem::MissingAttribute {
                    element: "param",
                    attribute: "value",
                },
            )
        })?;
        if !known.contains(&name) {
            return Err(self.err(
                param,
                ConfigProblem::UnknownParam {
                    section: section_name,
                    name: name.to_owned(),
                    known: known.join(", "),
                },
            ));
        }
        if let Some(&first_line) = seen.get(name) {
            return Err(self.err(
                param,
                ConfigProblem::DuplicateParam {
                    section: section_name,
                    name: name.to_owned(),
                    first_line,
                },
            ));
        }
        seen.insert(name, self.line_of(param));
        Ok((name, value))
    }

    fn bad(&self, node: Node, name: &str, value: &str, expected: &'static str) -> ConfigError {
        self.err(
            node,
            ConfigProblem::BadValue {
                name: name.to_owned(),
                value: value.to_owned(),
                expected,
            },
        )
    }

    fn positive_duration(
        &self,
        node: Node,
        name: &str,
        value: &str,
    ) -> Result<Duration, ConfigError> {
        match parse_duration(value) {
            Some(d) if !d.is_zero() => Ok(d),
            _ => Err(self.bad(node, name, value, POSITIVE_DURATION)),
        }
    }

    fn count(
        &self,
        node: Node,
        name: &str,
        value: &str,
        min: usize,
        expected: &'static str,
    ) -> Result<usize, ConfigError> {
        match value.trim().parse::<usize>() {
            Ok(n) if n >= min => Ok(n),
            _ => Err(self.bad(node, name, value, expected)),
        }
    }

    /// `<settings>`; returns the line of `stale-after` when given, for the consistency check's message.
    fn settings(&self, section: Node, config: &mut RtcConfig) -> Result<Option<u32>, ConfigError> {
        let mut stale_line = None;
        let mut trusted: Option<(Node, TrustedProxies)> = None;
        let mut header: Option<(Node, SourceHeader)> = None;
        let engine = &mut config.engine;
        for (node, name, value) in self.params(section, "settings", SETTINGS_PARAMS)? {
            match name {
                "setup-timeout" => {
                    engine.setup_timeout = self.positive_duration(node, name, value)?
                }
                "park-timeout" => {
                    engine.park_timeout = self.positive_duration(node, name, value)?
                }
                "max-call-duration" => {
                    engine.max_call_duration = self.positive_duration(node, name, value)?
                }
                "stale-after" => {
                    engine.stale_after = self.positive_duration(node, name, value)?;
                    stale_line = Some(self.line_of(node));
                }
                "linger" => {
                    engine.linger = parse_duration(value)
                        .ok_or_else(|| self.bad(node, name, value, DURATION))?
                }
                "sweep-interval" => {
                    engine.sweep_interval = self.positive_duration(node, name, value)?
                }
                "verify-after" => {
                    engine.verify_after = parse_duration(value)
                        .ok_or_else(|| self.bad(node, name, value, DURATION))?
                }
                "reservation-amount" => {
                    engine.reservation_amount = match Money::parse(value) {
                        Some(m) if m >= Money::ZERO => m,
                        _ => {
                            return Err(self.bad(
                                node,
                                name,
                                value,
                                "a decimal amount of at least 0 with at most 6 decimals, such as 1.50",
                            ));
                        }
                    }
                }
                "debit-interval" => {
                    engine.debit_interval = match parse_duration(value) {
                        Some(d)
                            if d >= Duration::from_secs(1) && d <= Duration::from_secs(3600) =>
                        {
                            Duration::from_secs(d.as_secs())
                        }
                        _ => {
                            return Err(self.bad(
                                node,
                                name,
                                value,
                                "a duration of whole seconds from 1s to 1h, such as 60s",
                            ));
                        }
                    }
                }
                "queue-capacity" => {
                    engine.queue_capacity =
                        self.count(node, name, value, 1, "a whole number of at least 1")?
                }
                "finished-traces" => {
                    engine.finished_traces =
                        self.count(node, name, value, 0, "a whole number (0 keeps none)")?
                }
                "finished-ids" => {
                    engine.finished_ids =
                        self.count(node, name, value, 0, "a whole number (0 keeps none)")?
                }
                "shutdown-calls" => {
                    engine.hangup_connected_on_shutdown = match value.trim() {
                        "keep" => false,
                        "hangup" => true,
                        _ => return Err(self.bad(node, name, value, "keep or hangup")),
                    }
                }
                "shutdown-grace" => {
                    engine.shutdown_grace = parse_duration(value)
                        .ok_or_else(|| self.bad(node, name, value, DURATION))?
                }
                "io-threads" => {
                    config.io_threads = match value.trim().parse::<usize>() {
                        Ok(n @ 1..=64) => n,
                        _ => {
                            return Err(self.bad(node, name, value, "a whole number from 1 to 64"));
                        }
                    }
                }
                "log-level" => {
                    config.log_level = parse_log_level(value).ok_or_else(|| {
                        self.bad(
                            node,
                            name,
                            value,
                            "a log level: off, error, warn, info, debug or trace",
                        )
                    })?
                }
                "max-calls" => {
                    engine.admission.max_concurrent =
                        self.count_u32(node, name, value, "a whole number (0: no limit)")?
                }
                "max-cps" => {
                    engine.admission.cps.per_second =
                        self.count_u32(node, name, value, "a whole number (0: no limit)")?
                }
                "cps-burst" => {
                    engine.admission.cps.burst = self.count_u32(
                        node,
                        name,
                        value,
                        "a whole number (0: one second's worth of max-cps)",
                    )?
                }
                "shed-queue-depth" => {
                    engine.admission.shed_queue_depth =
                        self.count(node, name, value, 0, "a whole number (0: off)")?
                }
                "transfer-context" => {
                    config.transfer_context = match value.trim() {
                        "" => None,
                        v if v.contains(char::is_whitespace) => {
                            return Err(self.bad(
                                node,
                                name,
                                value,
                                "a dialplan context name, or empty for none",
                            ));
                        }
                        v => Some(v.to_owned()),
                    }
                }
                "metrics-listen" => {
                    config.metrics_listen = match value.trim() {
                        "" => None,
                        v => Some(v.parse().map_err(|_| {
                            self.bad(
                            node,
                            name,
                            value,
                            "an address and port such as 127.0.0.1:9464, or empty for no endpoint",
                        )
                        })?),
                    }
                }
                "contexts" => {
                    engine.contexts = value
                        .split([',', ' '])
                        .map(str::trim)
                        .filter(|c| !c.is_empty())
                        .map(Into::into)
                        .collect();
                }
                "poll-interval" => {
                    engine.poll_interval = match parse_duration(value) {
                        Some(d) if d <= Duration::from_millis(50) => d,
                        _ => {
                            return Err(self.bad(
                                node,
                                name,
                                value,
                                "a duration from 0ms (woken per event) to 50ms, such as 750us",
                            ));
                        }
                    }
                }
                "shed-queue-age" => {
                    engine.admission.shed_queue_age = parse_duration(value)
                        .ok_or_else(|| self.bad(node, name, value, DURATION))?
                }
                "trusted-proxies" => {
                    let list = TrustedProxies::parse(value).map_err(|problem| {
                        self.err(
                            node,
                            ConfigProblem::BadParam {
                                name: "trusted-proxies",
                                problem: format!(
                                    "{problem}; want addresses and CIDRs separated by commas or spaces, e.g. \
                                     10.0.0.5, 10.0.1.0/24 (empty: none)"
                                ),
                            },
                        )
                    })?;
                    trusted = (!list.is_empty()).then_some((node, list));
                }
                "source-header" => {
                    header = match value.trim() {
                        "" => None,
                        v => Some((
                            node,
                            SourceHeader::parse(v).map_err(|problem| {
                                self.err(
                                    node,
                                    ConfigProblem::BadParam {
                                        name: "source-header",
                                        problem,
                                    },
                                )
                            })?,
                        )),
                    }
                }
                // `params` only lets known names through; keep this arm in step with SETTINGS_PARAMS.
                _ => {}
            }
        }
        config.proxy = match (trusted, header) {
            (None, None) => None,
            (Some((_, trusted)), Some((_, header))) => Some(ProxyTrust { trusted, header }),
            (Some((node, _)), None) => {
                return Err(self.err(
                    node,
                    ConfigProblem::ProxyHalfConfigured {
                        given: "trusted-proxies",
                        missing: "source-header",
                    },
                ));
            }
            (None, Some((node, _))) => {
                return Err(self.err(
                    node,
                    ConfigProblem::ProxyHalfConfigured {
                        given: "source-header",
                        missing: "trusted-proxies",
                    },
                ));
            }
        };
        Ok(stale_line)
    }

    fn count_u32(
        &self,
        node: Node,
        name: &str,
        value: &str,
        expected: &'static str,
    ) -> Result<u32, ConfigError> {
        let n = self.count(node, name, value, 0, expected)?;
        u32::try_from(n).map_err(|_| self.bad(node, name, value, expected))
    }

    fn local(
        &self,
        section: Node,
        base_dir: &Path,
        local: &mut LocalFiles,
    ) -> Result<(), ConfigError> {
        let path = |node: Node, name: &str, value: &str| -> Result<PathBuf, ConfigError> {
            let value = value.trim();
            if value.is_empty() {
                return Err(self.bad(node, name, value, "a file path"));
            }
            Ok(base_dir.join(value))
        };
        for (node, name, value) in self.params(section, "local", LOCAL_PARAMS)? {
            match name {
                "partners" => local.partners = path(node, name, value)?,
                "rates" => local.rates = path(node, name, value)?,
                "routes" => local.routes = path(node, name, value)?,
                "balances" => local.balances = path(node, name, value)?,
                "cdr-file" => {
                    local.cdr_file = if value.trim().is_empty() {
                        None
                    } else {
                        Some(path(node, name, value)?)
                    }
                }
                "cdr-memory" => {
                    // Accepted so that older configurations still load: CDRs are in the ledger now.
                    self.count(node, name, value, 0, "a whole number")?;
                    log::warn!(
                        "{}: <local> param cdr-memory is no longer used (CDRs are stored in the ledger); remove it",
                        self.origin
                    );
                }
                "ledger" => {
                    // The PostgreSQL URL holds a password: it may be a reference, and is shown without it.
                    let value = &secret::resolve(value, base_dir).map_err(|problem| {
                        self.err(
                            node,
                            ConfigProblem::BadParam {
                                name: "ledger",
                                problem,
                            },
                        )
                    })?;
                    local.ledger = if value.is_empty() {
                        LedgerPlace::HostDefault
                    } else if value == ":memory:" {
                        LedgerPlace::Memory
                    } else if value.starts_with("postgres://") || value.starts_with("postgresql://")
                    {
                        LedgerPlace::Postgres(value.to_string())
                    } else if value.contains("://") {
                        return Err(self.bad(
                            node,
                            name,
                            &secret::redact_url(value),
                            "a file path (the embedded SQLite ledger), a postgres:// URL (the shared ledger), \
                             :memory:, or empty for the default",
                        ));
                    } else {
                        LedgerPlace::File(PathBuf::from(value))
                    };
                }
                "ledger-node-id" => {
                    let value = value.trim();
                    if value.is_empty() {
                        local.shared.node_id = None;
                    } else if value.len() > 128
                        || !value
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
                    {
                        return Err(self.bad(
                            node,
                            name,
                            value,
                            "a node id of 1 to 128 letters, digits and - _ . : (empty: the host's name)",
                        ));
                    } else {
                        local.shared.node_id = Some(value.to_string());
                    }
                }
                "ledger-pool-size" => {
                    let n = self.count(node, name, value, 1, "a whole number from 1 to 64")?;
                    if n > 64 {
                        return Err(self.bad(node, name, value, "a whole number from 1 to 64"));
                    }
                    local.shared.pool_size = n;
                }
                "ledger-timeout" => {
                    local.shared.timeout = self.positive_duration(node, name, value)?
                }
                "ledger-lease" => {
                    let lease = self.positive_duration(node, name, value)?;
                    if lease < Duration::from_secs(3) {
                        return Err(self.bad(
                            node,
                            name,
                            value,
                            "a duration of 3s or more (the lease is renewed every second)",
                        ));
                    }
                    local.shared.lease = lease;
                }
                "ledger-global-limits" => {
                    // The values are <settings>' max-calls and max-cps, taken once every section is read.
                    local.shared.global = match value.trim() {
                        "node" => None,
                        "shared" => Some((0, 0)),
                        _ => {
                            return Err(self.bad(
                                node,
                                name,
                                value,
                                "node (each node counts its own) or shared (counted across the nodes)",
                            ));
                        }
                    };
                }
                "ledger-ca-file" => {
                    local.shared.ca_file = if value.trim().is_empty() {
                        None
                    } else {
                        Some(path(node, name, value)?)
                    };
                }
                // `params` only lets known names through; keep this arm in step with LOCAL_PARAMS.
                _ => {}
            }
        }
        Ok(())
    }

    /// `<services>`: shared `<param>`s, one `<service>` per service, and `<default-routes>`, in any order.
    fn services(
        &self,
        section: Node<'d, 'input>,
        base_dir: &Path,
        config: &mut RtcConfig,
    ) -> Result<(), ConfigError> {
        let mut seen: HashMap<ServiceKind, u32> = HashMap::new();
        let mut seen_params: HashMap<&str, u32> = HashMap::new();
        let mut routes_line: Option<u32> = None;
        for node in section.children().filter(Node::is_element) {
            match node.tag_name().name() {
                "param" => {
                    let (name, value) =
                        self.param(node, "services", SERVICES_PARAMS, &mut seen_params)?;
                    self.services_param(node, name, value, base_dir, config)?;
                    continue;
                }
                "default-routes" => {
                    if let Some(first_line) = routes_line {
                        return Err(
                            self.err(node, ConfigProblem::DuplicateDefaultRoutes { first_line })
                        );
                    }
                    routes_line = Some(self.line_of(node));
                    config.default_routes = self.default_routes(node)?;
                    continue;
                }
                "service" => {}
                other => {
                    return Err(self.err(
                        node,
                        ConfigProblem::UnknownElement {
                            element: other.to_owned(),
                            parent: "services".to_owned(),
                            expected: "<param name=\"...\" value=\"...\"/>, <service name=\"...\" .../> or <default-routes>".to_owned(),
                        },
                    ));
                }
            }
            for attr in node.attributes() {
                if !SERVICE_ATTRIBUTES.contains(&attr.name()) {
                    return Err(ConfigError {
                        origin: self.origin.to_owned(),
                        line: Some(self.doc.text_pos_at(attr.range().start).row),
                        problem: ConfigProblem::UnknownAttribute {
                            element: "service",
                            attribute: attr.name().to_owned(),
                            known: SERVICE_ATTRIBUTES.join(", "),
                        },
                    });
                }
            }
            let name = node.attribute("name").ok_or_else(|| {
                self.err(
                    node,
                    ConfigProblem::MissingAttribute {
                        element: "service",
                        attribute: "name",
                    },
                )
            })?;
            let Some(index) = ServiceKind::ALL.iter().position(|k| k.name() == name) else {
                return Err(self.err(
                    node,
                    ConfigProblem::UnknownService {
                        name: name.to_owned(),
                    },
                ));
            };
            let kind = ServiceKind::ALL[index];
            if let Some(&first_line) = seen.get(&kind) {
                return Err(self.err(
                    node,
                    ConfigProblem::DuplicateService {
                        name: name.to_owned(),
                        first_line,
                    },
                ));
            }
            seen.insert(kind, self.line_of(node));
            config.services[index] = self.service(node, kind, base_dir)?;
        }
        Ok(())
    }

    /// One shared `<param>` of `<services>`.
    fn services_param(
        &self,
        node: Node,
        name: &str,
        value: &str,
        base_dir: &Path,
        config: &mut RtcConfig,
    ) -> Result<(), ConfigError> {
        let optional_path = |value: &str| {
            let value = value.trim();
            (!value.is_empty()).then(|| base_dir.join(value))
        };
        match name {
            "max-body" => {
                config.http.max_body_bytes = match value.trim().parse::<usize>() {
                    Ok(n) if MAX_BODY_RANGE.contains(&n) => n,
                    _ => {
                        return Err(self.bad(
                            node,
                            name,
                            value,
                            "a whole number of bytes from 1024 to 16777216",
                        ));
                    }
                }
            }
            "pool-idle-timeout" => {
                config.http.pool_idle_timeout = self.positive_duration(node, name, value)?
            }
            "pool-max-idle" => {
                config.http.pool_max_idle_per_host = self.count(
                    node,
                    name,
                    value,
                    0,
                    "a whole number (0 keeps no idle connection)",
                )?
            }
            "extra-ca-file" => config.http.extra_ca_file = optional_path(value),
            "user-agent" => {
                let agent = value.trim();
                if agent.chars().any(|c| c.is_control()) {
                    return Err(self.bad(node, name, value, "text without control characters"));
                }
                config.http.user_agent = if agent.is_empty() {
                    HttpConfig::default().user_agent
                } else {
                    agent.to_owned()
                };
            }
            "partner-cache-ttl" => {
                config.partner_cache.ttl = self.positive_duration(node, name, value)?
            }
            "partner-cache-size" => {
                config.partner_cache.max_entries =
                    self.count(node, name, value, 0, "a whole number (0 caches nothing)")? as u64
            }
            "spool-file" => {
                config.settlement.spool_path = optional_path(value)
                    .ok_or_else(|| self.bad(node, name, value, "a file path"))?
            }
            "settlement-attempts" => {
                config.settlement.attempts = match value.trim().parse::<u32>() {
                    Ok(n @ 1..=100) => n,
                    _ => return Err(self.bad(node, name, value, "a whole number from 1 to 100")),
                }
            }
            "settlement-backoff" => {
                config.settlement.backoff_initial = self.positive_duration(node, name, value)?
            }
            "settlement-backoff-max" => {
                config.settlement.backoff_max = self.positive_duration(node, name, value)?
            }
            "settlement-give-up" => {
                config.settlement.give_up_after =
                    parse_duration(value).ok_or_else(|| self.bad(node, name, value, DURATION))?
            }
            "spool-replay-interval" => {
                let every =
                    parse_duration(value).ok_or_else(|| self.bad(node, name, value, DURATION))?;
                config.settlement.replay_every = (!every.is_zero()).then_some(every);
            }
            // `param` only lets known names through; keep this arm in step with SERVICES_PARAMS.
            _ => {}
        }
        Ok(())
    }

    /// `<default-routes>`: `<route carrier=".." dial-string=".." cost-per-minute=".."/>`, in failover order.
    /// A yes/no value: true, false (also yes, no, on, off).
    fn boolean(&self, node: Node, name: &str, value: &str) -> Result<bool, ConfigError> {
        match value.trim() {
            "true" | "yes" | "on" => Ok(true),
            "false" | "no" | "off" => Ok(false),
            _ => Err(self.bad(node, name, value, "true or false")),
        }
    }

    /// An element's attributes: only `known` ones.
    fn known_attributes(
        &self,
        node: Node,
        element: &'static str,
        known: &[&str],
    ) -> Result<(), ConfigError> {
        for attr in node.attributes() {
            if !known.contains(&attr.name()) {
                return Err(ConfigError {
                    origin: self.origin.to_owned(),
                    line: Some(self.doc.text_pos_at(attr.range().start).row),
                    problem: ConfigProblem::UnknownAttribute {
                        element,
                        attribute: attr.name().to_owned(),
                        known: known.join(", "),
                    },
                });
            }
        }
        Ok(())
    }

    /// `<fraud>`: params, `<rule name="...">` and `<class name="...">` elements.
    fn fraud(
        &self,
        section: Node<'d, 'input>,
        engine: &mut EngineConfig,
    ) -> Result<(), ConfigError> {
        use rtc_engine::fraud::{
            Burst, DestClass, FraudAction, FraudRules, Limit, Pumping, ShortCalls,
        };
        let mut rules = FraudRules::default();
        let mut seen_params: HashMap<&str, u32> = HashMap::new();
        let mut seen_rules: HashMap<&str, u32> = HashMap::new();
        let action = |node: Node, allowed: &[FraudAction], expected: &'static str| {
            let value = node.attribute("action").unwrap_or("");
            match FraudAction::from_name(value.trim()) {
                Some(a) if allowed.contains(&a) => Ok(a),
                _ => Err(self.bad(node, "action", value, expected)),
            }
        };
        const ANY: &[FraudAction] = &FraudAction::ALL;
        const ANY_TEXT: &str = "refuse, alert or block";
        let required = |node: Node<'d, 'input>, element: &'static str, attribute: &'static str| {
            node.attribute(attribute).ok_or_else(|| {
                self.err(node, ConfigProblem::MissingAttribute { element, attribute })
            })
        };
        let money = |node: Node, attribute: &str, value: &str| match Money::parse(value) {
            Some(m) if m > Money::ZERO => Ok(m),
            _ => Err(self.bad(node, attribute, value, "an amount above zero, e.g. 250.00")),
        };
        let number = |node: Node, attribute: &str, default: &str| -> Result<usize, ConfigError> {
            let value = node.attribute(attribute).unwrap_or(default);
            self.count(node, attribute, value, 0, "a whole number (0: not checked)")
        };
        let duration = |node: Node, attribute: &str, default: &str| {
            let value = node.attribute(attribute).unwrap_or(default);
            self.positive_duration(node, attribute, value)
        };
        for node in section.children().filter(Node::is_element) {
            match node.tag_name().name() {
                "param" => {
                    let (name, value) =
                        self.param(node, "fraud", FRAUD_PARAMS, &mut seen_params)?;
                    match name {
                        "enabled" => rules.enabled = self.boolean(node, name, value)?,
                        "max-destination-digits" => {
                            let n = self.count(node, name, value, 0, "0 (not checked) to 32")?;
                            if n > 32 {
                                return Err(self.bad(node, name, value, "0 (not checked) to 32"));
                            }
                            engine.destination_digits = n as u8;
                        }
                        "block-for" => {
                            rules.block_for = self.positive_duration(node, name, value)?
                        }
                        "block-hangup" => rules.block_hangup = self.boolean(node, name, value)?,
                        "recent-hits" => {
                            rules.recent_hits =
                                self.count(node, name, value, 1, "a whole number, 1 or more")?
                        }
                        _ => unreachable!("known params only"),
                    }
                }
                "rule" => {
                    let name = required(node, "rule", "name")?;
                    let Some((_, known)) = FRAUD_RULES.iter().find(|(n, _)| *n == name) else {
                        return Err(self.bad(
                            node,
                            "name",
                            name,
                            "spend-hour, spend-day, pumping, burst or short-calls",
                        ));
                    };
                    self.known_attributes(node, "rule", known)?;
                    if let Some(&first_line) = seen_rules.get(name) {
                        return Err(self.err(
                            node,
                            ConfigProblem::DuplicateParam {
                                section: "fraud",
                                name: format!("rule {name}"),
                                first_line,
                            },
                        ));
                    }
                    seen_rules.insert(name, self.line_of(node));
                    match name {
                        "spend-hour" | "spend-day" => {
                            let most = money(node, "most", required(node, "rule", "most")?)?;
                            let limit = Limit {
                                most,
                                action: action(node, ANY, ANY_TEXT)?,
                            };
                            match name {
                                "spend-hour" => rules.spend_hour = Some(limit),
                                _ => rules.spend_day = Some(limit),
                            }
                        }
                        "pumping" => {
                            let digits = number(node, "prefix-digits", "8")?;
                            if !(1..=15).contains(&digits) {
                                return Err(self.bad(
                                    node,
                                    "prefix-digits",
                                    node.attribute("prefix-digits").unwrap_or(""),
                                    "1 to 15",
                                ));
                            }
                            rules.pumping = Some(Pumping {
                                per_number: number(node, "per-number", "0")?.min(u32::MAX as usize)
                                    as u32,
                                per_prefix: number(node, "per-prefix", "0")?.min(u32::MAX as usize)
                                    as u32,
                                prefix_digits: digits as u8,
                                action: action(node, ANY, ANY_TEXT)?,
                            });
                        }
                        "burst" => {
                            let float = |attribute: &str, default: &str| {
                                let value = node.attribute(attribute).unwrap_or(default);
                                match value.trim().parse::<f64>() {
                                    Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
                                    _ => {
                                        Err(self.bad(node, attribute, value, "a number above zero"))
                                    }
                                }
                            };
                            let window = duration(node, "window", "10s")?;
                            if window.as_secs() == 0 || window.as_secs() > 60 {
                                return Err(self.bad(
                                    node,
                                    "window",
                                    node.attribute("window").unwrap_or(""),
                                    "whole seconds, 1s to 60s",
                                ));
                            }
                            rules.burst = Some(Burst {
                                factor: float("factor", "10")?,
                                min_per_second: float("min-per-second", "10")?,
                                window,
                                baseline: duration(node, "baseline", "1h")?,
                                memory: duration(node, "memory", "24h")?,
                                memory_size: number(node, "memory-size", "1000000")?.max(1),
                                action: action(node, ANY, ANY_TEXT)?,
                            });
                        }
                        _ => {
                            rules.short_calls = Some(ShortCalls {
                                max_talk: duration(node, "max-talk", "3s")?,
                                run: number(node, "run", "20")?.clamp(1, u32::MAX as usize) as u32,
                                action: action(
                                    node,
                                    &[FraudAction::Alert, FraudAction::Block],
                                    "alert or block (the calls have ended: there is nothing to refuse)",
                                )?,
                            });
                        }
                    }
                }
                "class" => {
                    self.known_attributes(node, "class", FRAUD_CLASS_ATTRIBUTES)?;
                    let name = required(node, "class", "name")?.trim();
                    if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c == ',') {
                        return Err(self.bad(
                            node,
                            "name",
                            name,
                            "a name without spaces or commas",
                        ));
                    }
                    let mut prefixes = Vec::new();
                    let text = required(node, "class", "prefixes")?;
                    for p in text
                        .split(|c: char| c == ',' || c.is_whitespace())
                        .filter(|p| !p.is_empty())
                    {
                        if p.len() > 15 || !p.bytes().all(|b| b.is_ascii_digit()) {
                            return Err(self.bad(
                                node,
                                "prefixes",
                                p,
                                "destination prefixes of 1 to 15 digits",
                            ));
                        }
                        prefixes.push(p.into());
                    }
                    if prefixes.is_empty() {
                        return Err(self.bad(
                            node,
                            "prefixes",
                            text,
                            "destination prefixes of 1 to 15 digits",
                        ));
                    }
                    let class_action = match node.attribute("action").map(str::trim) {
                        None | Some("") | Some("none") => None,
                        Some(_) => Some(action(node, ANY, "refuse, alert, block or none")?),
                    };
                    rules.classes.push(DestClass {
                        name: name.into(),
                        prefixes,
                        action: class_action,
                        max_call_cost: node
                            .attribute("max-call-cost")
                            .filter(|v| !v.trim().is_empty())
                            .map(|v| money(node, "max-call-cost", v))
                            .transpose()?,
                        max_duration: node
                            .attribute("max-duration")
                            .filter(|v| !v.trim().is_empty())
                            .map(|v| self.positive_duration(node, "max-duration", v))
                            .transpose()?,
                    });
                }
                other => {
                    return Err(self.err(
                        node,
                        ConfigProblem::UnknownElement {
                            element: other.to_owned(),
                            parent: "fraud".to_owned(),
                            expected: "<param name=\"...\" value=\"...\"/>, <rule name=\"...\" .../> or <class name=\"...\" .../>".to_owned(),
                        },
                    ));
                }
            }
        }
        if rules.classes.len() > 255 {
            return Err(self.bad(section, "class", "", "at most 255 classes"));
        }
        engine.fraud = rules;
        Ok(())
    }

    fn default_routes(&self, section: Node) -> Result<Vec<Route>, ConfigError> {
        let mut routes = Vec::new();
        for node in section.children().filter(Node::is_element) {
            if !node.has_tag_name("route") {
                return Err(self.err(
                    node,
                    ConfigProblem::UnknownElement {
                        element: node.tag_name().name().to_owned(),
                        parent: "default-routes".to_owned(),
                        expected:
                            "<route carrier=\"...\" dial-string=\"...\" cost-per-minute=\"...\"/>"
                                .to_owned(),
                    },
                ));
            }
            for attr in node.attributes() {
                if !ROUTE_ATTRIBUTES.contains(&attr.name()) {
                    return Err(ConfigError {
                        origin: self.origin.to_owned(),
                        line: Some(self.doc.text_pos_at(attr.range().start).row),
                        problem: ConfigProblem::UnknownAttribute {
                            element: "route",
                            attribute: attr.name().to_owned(),
                            known: ROUTE_ATTRIBUTES.join(", "),
                        },
                    });
                }
            }
            let required = |attribute: &'static str| {
                node.attribute(attribute).ok_or_else(|| {
                    self.err(
                        node,
                        ConfigProblem::MissingAttribute {
                            element: "route",
                            attribute,
                        },
                    )
                })
            };
            let carrier = required("carrier")?.trim();
            let problem = |attr: &str, problem: String| ConfigError {
                origin: self.origin.to_owned(),
                line: Some(self.attr_line(node, attr)),
                problem: ConfigProblem::BadDefaultRoute {
                    carrier: carrier.to_owned(),
                    problem,
                },
            };
            if carrier.is_empty()
                || carrier.len() > limits::MAX_NAME_LEN
                || carrier.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(problem(
                    "carrier",
                    format!(
                        "carrier must be 1 to {} characters without spaces",
                        limits::MAX_NAME_LEN
                    ),
                ));
            }
            let dial_string =
                limits::check_dial_string("dial-string", required("dial-string")?.trim())
                    .map_err(|text| problem("dial-string", text))?;
            let cost_per_minute = match node.attribute("cost-per-minute") {
                None => Money::ZERO,
                Some(text) => match Money::parse(text) {
                    Some(m) if m >= Money::ZERO && m <= limits::MAX_MONEY => m,
                    _ => {
                        return Err(problem(
                            "cost-per-minute",
                            format!(
                                "cost-per-minute {text:?} is not a decimal amount from 0 to {} with at most 6 decimals",
                                limits::MAX_MONEY
                            ),
                        ));
                    }
                },
            };
            routes.push(Route {
                carrier: carrier.into(),
                dial_string,
                cost_per_minute,
            });
        }
        if routes.len() > limits::MAX_ROUTES {
            return Err(self.err(
                section,
                ConfigProblem::BadDefaultRoute {
                    carrier: String::new(),
                    problem: format!(
                        "{} default routes; at most {} are used",
                        routes.len(),
                        limits::MAX_ROUTES
                    ),
                },
            ));
        }
        Ok(routes)
    }

    fn service(
        &self,
        node: Node,
        kind: ServiceKind,
        base_dir: &Path,
    ) -> Result<ServiceConfig, ConfigError> {
        let mut service = ServiceConfig::default_for(kind);
        // Errors point at the attribute's own line: a `<service>` is often spread over several.
        let bad = |attr: &str, value: &str, expected: &'static str| ConfigError {
            origin: self.origin.to_owned(),
            line: Some(self.attr_line(node, attr)),
            problem: ConfigProblem::BadValue {
                name: format!("service {} {attr}", kind.name()),
                value: value.to_owned(),
                expected,
            },
        };
        let positive = |attr: &str, value: &str| match parse_duration(value) {
            Some(d) if !d.is_zero() => Ok(d),
            _ => Err(bad(attr, value, POSITIVE_DURATION)),
        };
        let at_least_one = |attr: &str, value: &str| match value.trim().parse::<u32>() {
            Ok(n) if n >= 1 => Ok(n),
            _ => Err(bad(attr, value, "a whole number of at least 1")),
        };
        for attr in node.attributes() {
            let value = attr.value();
            match attr.name() {
                "backend" => {
                    service.backend = match value.trim() {
                        "local" => Backend::Local,
                        "http" => Backend::Http,
                        _ => return Err(bad("backend", value, "\"local\" or \"http\"")),
                    }
                }
                "url" => {
                    let url = value.trim();
                    service.url = if url.is_empty() {
                        None
                    } else if valid_url(url) {
                        Some(url.to_owned())
                    } else {
                        return Err(bad("url", value, "an http:// or https:// URL"));
                    }
                }
                "api-key" => {
                    let key = secret::resolve(value, base_dir).map_err(|problem| ConfigError {
                        origin: self.origin.to_owned(),
                        line: Some(self.attr_line(node, "api-key")),
                        problem: ConfigProblem::BadParam {
                            name: "api-key",
                            problem: format!("service {}: {problem}", kind.name()),
                        },
                    })?;
                    service.api_key = Some(key).filter(|k| !k.is_empty());
                }
                "timeout" => service.timeout = positive("timeout", value)?,
                "failure-rate" => {
                    let text = value.trim();
                    let text = text.strip_suffix('%').unwrap_or(text).trim_end();
                    service.breaker.failure_rate_pct = match text.parse::<u8>() {
                        Ok(n @ 1..=100) => n,
                        _ => return Err(bad("failure-rate", value, "a percentage from 1 to 100")),
                    }
                }
                "open-for" => service.breaker.open_for = positive("open-for", value)?,
                "window" => service.breaker.window = positive("window", value)?,
                "min-calls" => service.breaker.min_calls = at_least_one("min-calls", value)?,
                "half-open-probes" => {
                    service.breaker.half_open_probes = at_least_one("half-open-probes", value)?
                }
                "fail-mode" => {
                    service.fail_mode = match value.trim() {
                        "open" => FailMode::Open,
                        "closed" => FailMode::Closed,
                        _ => return Err(bad("fail-mode", value, "\"open\" or \"closed\"")),
                    }
                }
                _ => {}
            }
        }
        if service.backend == Backend::Http && service.url.is_none() {
            return Err(self.err(
                node,
                ConfigProblem::HttpWithoutUrl {
                    service: kind.name(),
                },
            ));
        }
        Ok(service)
    }

    fn causes(&self, section: Node, engine: &mut EngineConfig) -> Result<(), ConfigError> {
        let names: Vec<&str> = Reason::ALL.iter().map(|r| r.name()).collect();
        for (node, name, value) in self.params(section, "causes", &names)? {
            // `params` accepted only reason names.
            let Some(reason) = Reason::from_name(name) else {
                return Err(self.err(
                    node,
                    ConfigProblem::UnknownReason {
                        name: name.to_owned(),
                        known: names.join(", "),
                    },
                ));
            };
            match HangupCause::parse(value) {
                Some(cause) if cause != HangupCause::NONE => engine.causes.set(reason, cause),
                _ => {
                    return Err(self.bad(
                        node,
                        name,
                        value,
                        "a FreeSWITCH hangup cause name (such as CALL_REJECTED) or a non-zero cause code",
                    ));
                }
            }
        }
        Ok(())
    }
}

/// A light check that catches typos (`htps://`, a bare host); the HTTP client validates the rest.
fn valid_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/') && !r.contains(char::is_whitespace))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<RtcConfig, ConfigError> {
        let text = format!(
            "<configuration name=\"rtc_core.conf\" description=\"test\">\n{body}\n</configuration>\n"
        );
        RtcConfig::from_xml_str(&text, Path::new("/etc/freeswitch"), "test.xml")
    }

    fn error(body: &str) -> String {
        match parse(body) {
            Ok(_) => panic!("accepted: {body}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("60s"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("4h"), Some(Duration::from_secs(14_400)));
        assert_eq!(parse_duration(" 42 "), Some(Duration::from_secs(42)));
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        for bad in [
            "",
            "s",
            "1.5s",
            "-1s",
            "10 sec",
            "5d",
            "99999999999999999999h",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn log_levels() {
        assert_eq!(parse_log_level("INFO"), Some(LevelFilter::Info));
        assert_eq!(parse_log_level("warning"), Some(LevelFilter::Warn));
        assert_eq!(parse_log_level("err"), Some(LevelFilter::Error));
        assert_eq!(parse_log_level("loud"), None);
    }

    #[test]
    fn empty_configuration_is_the_defaults() {
        let config = parse("").unwrap();
        assert_eq!(config.engine, EngineConfig::default());
        assert_eq!(
            config.local,
            LocalFiles::under(Path::new("/etc/freeswitch"))
        );
        assert_eq!(
            config.service(ServiceKind::Rating),
            &ServiceConfig::default_for(ServiceKind::Rating)
        );
        assert_eq!(config.origin, "test.xml");
    }

    #[test]
    fn settings_are_applied() {
        let config = parse(
            r#"<settings>
                 <param name="setup-timeout" value="500ms"/>
                 <param name="max-call-duration" value="2h"/>
                 <param name="stale-after" value="3h"/>
                 <param name="reservation-amount" value="2.5"/>
                 <param name="queue-capacity" value="1024"/>
                 <param name="io-threads" value="3"/>
                 <param name="log-level" value="debug"/>
               </settings>
               <causes><param name="no_balance" value="CALL_REJECTED"/><param name="no_route" value="34"/></causes>"#,
        )
        .unwrap();
        assert_eq!(config.engine.setup_timeout, Duration::from_millis(500));
        assert_eq!(config.engine.max_call_duration, Duration::from_secs(7200));
        assert_eq!(config.engine.reservation_amount, Money(2_500_000));
        assert_eq!(config.engine.queue_capacity, 1024);
        assert_eq!(config.io_threads, 3);
        assert_eq!(config.log_level, LevelFilter::Debug);
        assert_eq!(
            config.engine.causes.cause(Reason::NoBalance),
            HangupCause::CALL_REJECTED
        );
        assert_eq!(
            config.engine.causes.cause(Reason::NoRoute),
            HangupCause::NORMAL_CIRCUIT_CONGESTION
        );
        assert_eq!(
            config.engine.causes.cause(Reason::NoRate),
            Reason::NoRate.default_cause()
        );
    }

    #[test]
    fn services_are_applied_over_their_defaults() {
        let config = parse(
            r#"<services>
                 <service name="balance" backend="http" url="https://billing.example/v1" api-key="k"
                          timeout="750ms" failure-rate="25%" fail-mode="open"/>
               </services>"#,
        )
        .unwrap();
        let balance = config.service(ServiceKind::Balance);
        assert_eq!(balance.backend, Backend::Http);
        assert_eq!(balance.url.as_deref(), Some("https://billing.example/v1"));
        assert_eq!(balance.api_key.as_deref(), Some("k"));
        assert_eq!(balance.timeout, Duration::from_millis(750));
        assert_eq!(balance.breaker.failure_rate_pct, 25);
        assert_eq!(balance.breaker.open_for, Duration::from_secs(10));
        assert_eq!(balance.fail_mode, FailMode::Open);
        assert_eq!(
            config.service(ServiceKind::Partner),
            &ServiceConfig::default_for(ServiceKind::Partner)
        );
    }

    #[test]
    fn local_paths_resolve_against_the_base_dir() {
        let config = parse(
            r#"<local>
                 <param name="rates" value="decks/rates.csv"/>
                 <param name="routes" value="/srv/routes.csv"/>
                 <param name="cdr-file" value="/var/log/rtc/cdr.jsonl"/>
               </local>"#,
        )
        .unwrap();
        assert_eq!(
            config.local.rates,
            PathBuf::from("/etc/freeswitch/decks/rates.csv")
        );
        assert_eq!(config.local.routes, PathBuf::from("/srv/routes.csv"));
        assert_eq!(
            config.local.partners,
            PathBuf::from("/etc/freeswitch/rtc_core/partners.csv")
        );
        assert_eq!(
            config.local.cdr_file,
            Some(PathBuf::from("/var/log/rtc/cdr.jsonl"))
        );
    }

    #[test]
    fn a_postgres_url_places_the_shared_ledger_with_this_nodes_settings() {
        let config = parse(
            r#"<local>
                 <param name="ledger" value="postgres://rtc:secret@10.0.0.5:5432/billing"/>
                 <param name="ledger-node-id" value="fs-a.example"/>
                 <param name="ledger-pool-size" value="8"/>
                 <param name="ledger-timeout" value="1500ms"/>
                 <param name="ledger-lease" value="20s"/>
                 <param name="ledger-ca-file" value="tls/db-ca.pem"/>
                 <param name="ledger-global-limits" value="shared"/>
               </local>
               <settings>
                 <param name="max-calls" value="500"/>
                 <param name="max-cps" value="60"/>
               </settings>"#,
        )
        .unwrap();
        assert_eq!(
            config.local.ledger,
            LedgerPlace::Postgres("postgres://rtc:secret@10.0.0.5:5432/billing".into())
        );
        let shared = &config.local.shared;
        assert_eq!(shared.node_id.as_deref(), Some("fs-a.example"));
        assert_eq!(shared.pool_size, 8);
        assert_eq!(shared.timeout, Duration::from_millis(1500));
        assert_eq!(shared.lease, Duration::from_secs(20));
        assert_eq!(
            shared.ca_file.as_deref(),
            Some(Path::new("/etc/freeswitch/tls/db-ca.pem"))
        );
        // The global limits, given after in <settings>, counted across the nodes.
        assert_eq!(shared.global, Some((500, 60)));
        for (param, value, expected) in [
            ("ledger", "mysql://db/x", "a postgres:// URL"),
            ("ledger-node-id", "fs a", "a node id of 1 to 128"),
            ("ledger-pool-size", "0", "from 1 to 64"),
            ("ledger-pool-size", "65", "from 1 to 64"),
            ("ledger-lease", "2s", "3s or more"),
            ("ledger-timeout", "soon", "duration"),
            (
                "ledger-global-limits",
                "all",
                "node (each node counts its own) or shared",
            ),
        ] {
            let e = error(&format!(
                "<local><param name=\"{param}\" value=\"{value}\"/></local>"
            ));
            assert!(e.contains(param) && e.contains(expected), "{e}");
        }
    }

    #[test]
    fn unknown_param_names_the_param_and_its_line() {
        let e = error(
            "<settings>\n<param name=\"setup-timeout\" value=\"5s\"/>\n<param name=\"setup-timout\" value=\"5s\"/>\n</settings>",
        );
        assert!(
            e.starts_with("test.xml:4: unknown param \"setup-timout\" in <settings>"),
            "{e}"
        );
    }

    #[test]
    fn bad_values_say_param_value_and_expectation() {
        let e = error("<settings><param name=\"park-timeout\" value=\"30 sec\"/></settings>");
        assert_eq!(
            e,
            format!("test.xml:2: park-timeout: \"30 sec\" is not {POSITIVE_DURATION}")
        );
        let e = error("<settings><param name=\"reservation-amount\" value=\"0,12\"/></settings>");
        assert!(
            e.starts_with("test.xml:2: reservation-amount: \"0,12\" is not a decimal amount"),
            "{e}"
        );
        let e = error("<settings><param name=\"io-threads\" value=\"0\"/></settings>");
        assert!(
            e.contains("io-threads: \"0\" is not a whole number from 1 to 64"),
            "{e}"
        );
        let e = error("<causes><param name=\"no_balance\" value=\"BROKE\"/></causes>");
        assert!(
            e.starts_with("test.xml:2: no_balance: \"BROKE\" is not a FreeSWITCH hangup cause"),
            "{e}"
        );
        let e = error("<causes><param name=\"no_money\" value=\"CALL_REJECTED\"/></causes>");
        assert!(
            e.starts_with(
                "test.xml:2: unknown param \"no_money\" in <causes>; known: unknown_partner"
            ),
            "{e}"
        );
    }

    #[test]
    fn service_errors() {
        let e = error("<services>\n<service name=\"rating\" backend=\"http\"/>\n</services>");
        assert_eq!(
            e,
            "test.xml:3: service rating: backend \"http\" needs a url attribute (http://... or https://...), or use backend=\"local\""
        );
        let e = error("<services>\n<service name=\"rating\"\n  timeout=\"fast\"/>\n</services>");
        assert!(
            e.starts_with(
                "test.xml:4: service rating timeout: \"fast\" is not a duration above zero"
            ),
            "{e}"
        );
        let e = error("<services><service name=\"rating\" retries=\"3\"/></services>");
        assert!(
            e.starts_with("test.xml:2: unknown attribute \"retries\" on <service>"),
            "{e}"
        );
        let e = error("<services><service name=\"fraud\"/></services>");
        assert!(
            e.starts_with("test.xml:2: unknown service \"fraud\""),
            "{e}"
        );
        let e = error("<services><service name=\"cdr\"/>\n<service name=\"cdr\"/></services>");
        assert!(
            e.starts_with(
                "test.xml:3: service \"cdr\" is configured twice (the first is at line 2)"
            ),
            "{e}"
        );
        let e = error("<services><service name=\"cdr\" failure-rate=\"0\"/></services>");
        assert!(
            e.contains("failure-rate: \"0\" is not a percentage from 1 to 100"),
            "{e}"
        );
        let e =
            error("<services><service name=\"cdr\" backend=\"http\" url=\"htps://x\"/></services>");
        assert!(
            e.contains("url: \"htps://x\" is not an http:// or https:// URL"),
            "{e}"
        );
    }

    #[test]
    fn services_params_and_default_routes_are_applied() {
        let config = parse(
            r#"<services>
                 <param name="max-body" value="8192"/>
                 <param name="pool-idle-timeout" value="20s"/>
                 <param name="pool-max-idle" value="0"/>
                 <param name="extra-ca-file" value="tls/ca.pem"/>
                 <param name="user-agent" value="carrier-x/2"/>
                 <service name="routing" backend="http" url="http://127.0.0.1:9/route"/>
                 <param name="partner-cache-ttl" value="10m"/>
                 <param name="partner-cache-size" value="500"/>
                 <param name="spool-file" value="/var/spool/x/settle.jsonl"/>
                 <param name="settlement-attempts" value="6"/>
                 <param name="settlement-backoff" value="100ms"/>
                 <param name="settlement-backoff-max" value="2s"/>
                 <param name="settlement-give-up" value="1m"/>
                 <param name="spool-replay-interval" value="0"/>
                 <default-routes>
                   <route carrier="backup" dial-string="sofia/gateway/backup/${destination}" cost-per-minute="0.02"/>
                   <route carrier="last" dial-string="error/NORMAL_TEMPORARY_FAILURE"/>
                 </default-routes>
               </services>"#,
        )
        .unwrap();
        assert_eq!(config.http.max_body_bytes, 8192);
        assert_eq!(config.http.pool_idle_timeout, Duration::from_secs(20));
        assert_eq!(config.http.pool_max_idle_per_host, 0);
        assert_eq!(
            config.http.extra_ca_file,
            Some(PathBuf::from("/etc/freeswitch/tls/ca.pem"))
        );
        assert_eq!(config.http.user_agent, "carrier-x/2");
        assert_eq!(config.partner_cache.ttl, Duration::from_secs(600));
        assert_eq!(config.partner_cache.max_entries, 500);
        let settle = &config.settlement;
        assert_eq!(
            settle.spool_path,
            PathBuf::from("/var/spool/x/settle.jsonl")
        );
        assert_eq!(settle.attempts, 6);
        assert_eq!(settle.backoff_initial, Duration::from_millis(100));
        assert_eq!(settle.backoff_max, Duration::from_secs(2));
        assert_eq!(settle.give_up_after, Duration::from_secs(60));
        assert_eq!(settle.replay_every, None);
        assert_eq!(config.default_routes.len(), 2);
        assert_eq!(config.default_routes[0].carrier, "backup");
        assert_eq!(
            config.default_routes[0].dial_string,
            "sofia/gateway/backup/${destination}"
        );
        assert_eq!(config.default_routes[0].cost_per_minute, Money(20_000));
        assert_eq!(config.default_routes[1].cost_per_minute, Money::ZERO);
        let services = config.services_config();
        assert_eq!(services.default_routes, config.default_routes);
        assert_eq!(services.settlement, config.settlement);
        assert_eq!(
            services.service(ServiceKind::Routing).backend,
            Backend::Http
        );
        assert!(config.any_http() && config.any_local());
        // An empty user-agent is the built-in one.
        let config = parse(r#"<services><param name="user-agent" value=""/></services>"#).unwrap();
        assert_eq!(config.http.user_agent, HttpConfig::default().user_agent);
    }

    #[test]
    fn services_section_errors_name_their_line() {
        let e = error("<services>\n<param name=\"pool-size\" value=\"3\"/>\n</services>");
        assert!(
            e.starts_with("test.xml:3: unknown param \"pool-size\" in <services>; known: max-body"),
            "{e}"
        );
        let e = error("<services>\n<param name=\"max-body\" value=\"10\"/></services>");
        assert!(
            e.starts_with("test.xml:3: max-body: \"10\" is not a whole number of bytes"),
            "{e}"
        );
        let e = error("<services><param name=\"spool-file\" value=\" \"/></services>");
        assert!(e.contains("spool-file: \" \" is not a file path"), "{e}");
        let e = error(
            "<services><param name=\"settlement-attempts\" value=\"2\"/>\n<param name=\"settlement-attempts\" value=\"3\"/></services>",
        );
        assert!(
            e.starts_with("test.xml:3: param \"settlement-attempts\" is given twice in <services>"),
            "{e}"
        );
        let e = error("<services>\n<breaker/></services>");
        assert!(
            e.starts_with("test.xml:3: unknown element <breaker> in <services>"),
            "{e}"
        );
        let e = error(
            "<services><default-routes>\n<route carrier=\"b\"\n dial-string=\"sofia/a|sofia/b\"/></default-routes></services>",
        );
        assert!(
            e.starts_with("test.xml:4: default route \"b\": dial-string: contains '|'"),
            "{e}"
        );
        let e = error(
            "<services><default-routes><route carrier=\"b\" dial-string=\"x\" cost=\"1\"/></default-routes></services>",
        );
        assert!(
            e.contains("unknown attribute \"cost\" on <route>; known: carrier, dial-string, cost-per-minute"),
            "{e}"
        );
        let e = error(
            "<services><default-routes><route dial-string=\"x\"/></default-routes></services>",
        );
        assert!(e.ends_with("<route> needs a \"carrier\" attribute"), "{e}");
        let e = error(
            "<services><default-routes><route carrier=\"my carrier\" dial-string=\"x\"/></default-routes></services>",
        );
        assert!(e.contains("without spaces"), "{e}");
        let e = error(
            "<services><default-routes><route carrier=\"b\" dial-string=\"x\" cost-per-minute=\"-1\"/></default-routes></services>",
        );
        assert!(
            e.contains("cost-per-minute \"-1\" is not a decimal amount"),
            "{e}"
        );
        let e = error("<services><default-routes/>\n<default-routes/></services>");
        assert!(
            e.starts_with(
                "test.xml:3: <default-routes> appears twice in <services> (the first is at line 2)"
            ),
            "{e}"
        );
        let e = error(
            "<services><default-routes><param name=\"x\" value=\"y\"/></default-routes></services>",
        );
        assert!(
            e.contains("unknown element <param> in <default-routes>"),
            "{e}"
        );
    }

    #[test]
    fn structural_errors() {
        let e = error("<setings/>");
        assert!(
            e.starts_with("test.xml:2: unknown element <setings> in <configuration>"),
            "{e}"
        );
        let e = error("<settings/>\n<settings/>");
        assert!(
            e.starts_with("test.xml:3: section <settings> appears twice"),
            "{e}"
        );
        let e = error(
            "<settings><param name=\"linger\" value=\"1s\"/><param name=\"linger\" value=\"2s\"/></settings>",
        );
        assert!(
            e.contains("param \"linger\" is given twice in <settings>"),
            "{e}"
        );
        let e = error("<settings><param name=\"linger\"/></settings>");
        assert!(e.ends_with("<param> needs a \"value\" attribute"), "{e}");
        let e = error("<settings><param name=\"linger\" value=\"1s\">\n</settings>");
        assert!(e.starts_with("test.xml:3: not well-formed XML"), "{e}");
        let e = error(
            "<settings><param name=\"max-call-duration\" value=\"5h\"/>\n<param name=\"stale-after\" value=\"5h\"/></settings>",
        );
        assert!(
            e.starts_with("test.xml:3: stale-after (18000s) must be longer than max-call-duration"),
            "{e}"
        );
        let e = RtcConfig::from_xml_str("<document/>", Path::new(""), "fs.xml")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("fs.xml: no <configuration name=\"rtc_core.conf\"> element"),
            "{e}"
        );
    }

    #[test]
    fn metrics_listen_is_an_address_and_port() {
        let parse = |v: &str| {
            RtcConfig::from_xml_str(
                &format!(
                    r#"<configuration name="rtc_core.conf"><settings><param name="metrics-listen" value="{v}"/></settings></configuration>"#
                ),
                Path::new("/c"),
                "c.xml",
            )
        };
        assert_eq!(
            parse("127.0.0.1:9464").unwrap().metrics_listen,
            Some("127.0.0.1:9464".parse().unwrap())
        );
        assert_eq!(parse("").unwrap().metrics_listen, None);
        let e = parse("localhost").unwrap_err().to_string();
        assert!(
            e.contains("metrics-listen: \"localhost\" is not an address and port"),
            "{e}"
        );
    }

    #[test]
    fn trusted_proxies_and_source_header_come_together() {
        let parse = |proxies: &str, header: &str| {
            RtcConfig::from_xml_str(
                &format!(
                    "<configuration name=\"rtc_core.conf\"><settings>\n\
                     <param name=\"trusted-proxies\" value=\"{proxies}\"/>\n\
                     <param name=\"source-header\" value=\"{header}\"/>\n\
                     </settings></configuration>"
                ),
                Path::new("/c"),
                "c.xml",
            )
        };
        let proxy = parse("10.0.0.5, 10.0.1.0/24 2001:db8::/64", "X-Source-IP")
            .unwrap()
            .proxy
            .expect("configured");
        assert_eq!(proxy.header.name(), "X-Source-IP");
        assert_eq!(
            proxy.trusted.to_string(),
            "10.0.0.5, 10.0.1.0/24, 2001:db8::/64"
        );
        assert_eq!(parse("", "").unwrap().proxy, None, "off by default");
        assert_eq!(parse(" , ", " ").unwrap().proxy, None);
        let e = parse("10.0.0.5", "").unwrap_err().to_string();
        assert!(
            e.starts_with("c.xml:2: trusted-proxies is set but source-header is not"),
            "{e}"
        );
        let e = parse("", "X-Source-IP").unwrap_err().to_string();
        assert!(
            e.starts_with("c.xml:3: source-header is set but trusted-proxies is not"),
            "{e}"
        );
        let e = parse("10.0.0.5, lb1", "X-Source-IP")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(
                "c.xml:2: trusted-proxies: \"lb1\" is not an address or a CIDR; want addresses"
            ),
            "{e}"
        );
        let e = parse("10.0.0.5", "Forwarded").unwrap_err().to_string();
        assert!(
            e.starts_with(
                "c.xml:3: source-header: \"Forwarded\": FreeSWITCH passes only X-... and P-..."
            ),
            "{e}"
        );
    }

    #[test]
    fn contexts_are_a_list() {
        let text = r#"<configuration name="rtc_core.conf">
  <settings><param name="contexts" value="public, carriers,,x"/></settings>
</configuration>"#;
        let config = RtcConfig::from_xml_str(text, Path::new("/c"), "c.xml").unwrap();
        assert_eq!(config.engine.contexts, ["public", "carriers", "x"]);
        let config = RtcConfig::from_xml_str(
            r#"<configuration name="rtc_core.conf"/>"#,
            Path::new("/c"),
            "c.xml",
        )
        .unwrap();
        assert!(
            config.engine.contexts.is_empty(),
            "every context by default"
        );
    }

    #[test]
    fn configuration_inside_a_whole_freeswitch_document() {
        let text = r#"<?xml version="1.0"?>
<document type="freeswitch/xml">
  <section name="configuration">
    <configuration name="sofia.conf"><settings><param name="whatever" value="1"/></settings></configuration>
    <configuration name="rtc_core.conf">
      <settings><param name="park-timeout" value="7s"/></settings>
      <services><service name="partner" timeout="bad"/></services>
    </configuration>
  </section>
</document>"#;
        let e = RtcConfig::from_xml_str(text, Path::new("/c"), "freeswitch.xml").unwrap_err();
        assert_eq!(e.line, Some(7));
        let fixed = text.replace("timeout=\"bad\"", "timeout=\"1s\"");
        let config = RtcConfig::from_xml_str(&fixed, Path::new("/c"), "freeswitch.xml").unwrap();
        assert_eq!(config.engine.park_timeout, Duration::from_secs(7));
        assert_eq!(
            config.service(ServiceKind::Partner).timeout,
            Duration::from_secs(1)
        );
    }

    #[test]
    fn load_file_resolves_against_the_conf_dir() {
        let dir = tempfile::tempdir().unwrap();
        let autoload = dir.path().join("autoload_configs");
        std::fs::create_dir(&autoload).unwrap();
        let body = "<configuration name=\"rtc_core.conf\"><local><param name=\"rates\" value=\"r.csv\"/></local></configuration>";
        std::fs::write(autoload.join("rtc_core.conf.xml"), body).unwrap();
        let config = RtcConfig::load_file(&autoload.join("rtc_core.conf.xml")).unwrap();
        assert_eq!(config.local.rates, dir.path().join("r.csv"));

        let other = dir.path().join("elsewhere");
        std::fs::create_dir(&other).unwrap();
        std::fs::write(other.join("my.xml"), body).unwrap();
        let config = RtcConfig::load_file(&other.join("my.xml")).unwrap();
        assert_eq!(config.local.rates, other.join("r.csv"));

        let e = RtcConfig::load_file(&dir.path().join("missing.xml")).unwrap_err();
        assert!(
            e.to_string().contains("missing.xml: cannot read the file"),
            "{e}"
        );
    }

    #[test]
    fn shipped_sample_is_the_defaults_with_every_param() {
        let path = shipped_conf_dir().join("autoload_configs/rtc_core.conf.xml");
        let config = RtcConfig::load_file(&path).unwrap();
        let defaults = RtcConfig::default();
        // The fraud rules are written out as a starting set, switched off: the rest is the defaults.
        let mut engine = config.engine.clone();
        assert!(!engine.fraud.enabled, "shipped with the fraud rules off");
        assert!(
            engine.fraud.spend_hour.is_some()
                && engine.fraud.spend_day.is_some()
                && engine.fraud.pumping.is_some()
                && engine.fraud.burst.is_some()
                && engine.fraud.short_calls.is_some()
                && engine.fraud.classes.len() == 2,
            "every rule written out: {:?}",
            engine.fraud
        );
        engine.fraud = defaults.engine.fraud.clone();
        assert_eq!(engine, defaults.engine);
        assert_eq!(config.services, defaults.services);
        assert_eq!(config.io_threads, defaults.io_threads);
        assert_eq!(config.log_level, defaults.log_level);
        assert_eq!(config.local, defaults.local);
        assert_eq!(config.proxy, defaults.proxy);
        assert_eq!(config.services_config(), defaults.services_config());
        assert_eq!(config.services_config(), ServicesConfig::default());
        let text = std::fs::read_to_string(&path).unwrap();
        for name in SETTINGS_PARAMS
            .iter()
            .chain(LOCAL_PARAMS)
            .chain(SERVICES_PARAMS)
            .filter(|n| !RETIRED_LOCAL_PARAMS.contains(n))
        {
            assert!(
                text.contains(&format!("<param name=\"{name}\"")),
                "sample lacks {name}"
            );
        }
        for reason in Reason::ALL {
            assert!(
                text.contains(&format!("<param name=\"{}\"", reason.name())),
                "sample lacks cause {}",
                reason.name()
            );
        }
        for kind in ServiceKind::ALL {
            assert!(text.contains(&format!("<service name=\"{}\"", kind.name())));
        }
        for attr in SERVICE_ATTRIBUTES.iter().chain(ROUTE_ATTRIBUTES) {
            assert!(text.contains(&format!(" {attr}=\"")), "sample lacks {attr}");
        }
        assert!(
            text.contains("<default-routes>"),
            "sample lacks <default-routes>"
        );
    }
}
