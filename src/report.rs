//! The text of `rtc_core status | calls | call | breakers | metrics`, from the engine's answers and the module's
//! own counters. Pure formatting: unit-tested without FreeSWITCH.
//!
//! `metrics` is the Prometheus text exposition format (version 0.0.4), written directly rather than through the
//! prometheus-client crate: every value here is a snapshot another owner already keeps (the engine thread's
//! counters, the handler's atomics, the breakers), read once per scrape; prometheus-client would have us mirror
//! each into its own registry types on every scrape (or implement its collector and encoder traits), more code
//! than the format itself, which is a stable, line-oriented text. A unit test checks the output's shape.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use rtc_config::RtcConfig;
use rtc_engine::call::CallView;
use rtc_engine::core::{CallSummary, FraudReport, FraudSummary, StatusReport};
use rtc_engine::engine::IntakeStats;
use rtc_engine::stats::Buckets;
use rtc_ledger::{AccountStatus, LedgerStats};
use rtc_proxy::{Outcome, ProxyTrust};
use rtc_services::ServicesMonitor;
use rtc_services::breaker::{BreakerState, BreakerStatus};
use rtc_services::stats::{CounterValue, ResponseTime, backend_name};

use crate::events;
use crate::guard;
use crate::histogram::Snapshot;

/// The previous `status` sample (when, engine events), for the events-per-second figure.
static LAST_SAMPLE: Mutex<Option<(Instant, u64)>> = Mutex::new(None);

/// Events per second since the previous `status`, or since `started` on the first one; and over how long.
fn events_rate(events: u64, started: Instant) -> (f64, f64) {
    let now = Instant::now();
    let mut last = LAST_SAMPLE.lock().unwrap_or_else(|p| p.into_inner());
    let (since, before) = match *last {
        Some((at, n)) if at > started && n <= events => (at, n),
        _ => (started, 0),
    };
    *last = Some((now, events));
    let secs = now.duration_since(since).as_secs_f64();
    if secs <= 0.0 {
        (0.0, 0.0)
    } else {
        ((events - before) as f64 / secs, secs)
    }
}

/// What the services layer looks like, for `status` and `breakers`.
pub fn breaker_states(monitor: Option<&ServicesMonitor>) -> Option<Vec<BreakerStatus>> {
    monitor.map(ServicesMonitor::breakers)
}

/// `status`'s line about the load balancers' rule `proxy` (the one in force) and what the handler counted of it.
pub fn source_header_line(proxy: Option<&ProxyTrust>) -> String {
    let c = events::STATS.sources.counts();
    match proxy {
        None => format!(
            "source header: none (every call is identified by its transport source){}\n",
            if c == Default::default() {
                String::new()
            } else {
                format!(
                    "; before the last reload: believed {}, absent {}, refused {}, spoofed {}",
                    c.believed, c.absent, c.refused, c.spoofed
                )
            }
        ),
        Some(p) => format!(
            "source header: {} from trusted proxies {}: believed {}, absent {}, refused {}; spoofed {} (the header \
             from other sources, ignored)\n",
            p.header, p.trusted, c.believed, c.absent, c.refused, c.spoofed
        ),
    }
}

/// The local ledger's file and writer figures, for `status` and `metrics`.
#[derive(Clone, Debug)]
pub struct LedgerFigures<'a> {
    /// The file (or `:memory:`).
    pub path: &'a str,
    /// The writer's counters, read once.
    pub stats: LedgerStats,
}

/// `rtc_core status`.
#[allow(clippy::too_many_arguments)]
pub fn status(
    status: &StatusReport,
    intake: &IntakeStats,
    breakers: Option<&[BreakerStatus]>,
    ledger: Option<&LedgerFigures<'_>>,
    config: &RtcConfig,
    reloads: u32,
    pending: &[&str],
    started: Instant,
) -> String {
    let mut out = String::new();
    let s = &status.stats;
    let _ = writeln!(
        out,
        "engine: running, uptime {} s, configuration {} (reloaded {reloads} times{})",
        status.uptime_s,
        config.origin,
        if pending.is_empty() {
            String::new()
        } else {
            format!("; waiting for a module reload: {}", pending.join(", "))
        }
    );
    let by_state: Vec<String> = status
        .by_state
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(name, n)| format!("{name} {n}"))
        .collect();
    let _ = writeln!(
        out,
        "live calls: {}{}",
        status.live_calls,
        if by_state.is_empty() {
            String::new()
        } else {
            format!(" ({})", by_state.join(", "))
        }
    );
    let (rate, over) = events_rate(s.events, started);
    let _ = writeln!(
        out,
        "events: {} applied, {rate:.1}/s over the last {over:.1} s; lag p50 {} us, p99 {} us",
        s.events, s.event_lag_p50_us, s.event_lag_p99_us
    );
    let _ = writeln!(
        out,
        "queue: depth {} of {} (full {} times, refused after stop {}), control queue {}",
        intake.queue_depth,
        intake.queue_capacity,
        intake.queue_full,
        intake.refused_closed,
        intake.control_depth
    );
    let m = &events::STATS;
    let h = m.handler_ns.snapshot();
    let _ = writeln!(
        out,
        "intake: accepted {}, dropped (queue_full {}, malformed {}, no_engine {}), parks without rtc_core=true {}, \
         own legs {}; handler p50 {} ns, p99 {} ns, max {} ns",
        m.accepted.load(Relaxed),
        m.queue_full.load(Relaxed),
        m.malformed.load(Relaxed),
        m.no_engine.load(Relaxed),
        m.unmarked_parks.load(Relaxed),
        s.own_legs,
        h.quantile(0.5),
        h.quantile(0.99),
        h.max()
    );
    let reasons: Vec<String> = s
        .by_reason
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(r, n)| format!("{r} {n}"))
        .collect();
    let _ = writeln!(
        out,
        "calls: created {}, completed {}, rejected {}, failed {}{}{}",
        s.calls_created,
        s.completed,
        s.rejected,
        s.failed,
        if reasons.is_empty() {
            String::new()
        } else {
            format!(" (reasons: {})", reasons.join(", "))
        },
        if config.engine.contexts.is_empty() {
            String::new()
        } else {
            format!(
                "; taken from contexts {} only ({} channels elsewhere left to the dialplan)",
                config.engine.contexts.join(", "),
                s.other_context
            )
        }
    );
    let _ = writeln!(out, "breakers: {}", breakers_line(breakers));
    let _ = writeln!(out, "ledger: {}", ledger_line(ledger));
    let _ = writeln!(
        out,
        "billing: every {} s; extensions {} asked, {} granted, {} refused; low balance {}, cost capped {}, \
         billing failures {}; service results pending {}",
        config.engine.debit_interval.as_secs(),
        s.extensions,
        s.extensions_granted,
        s.extensions_refused,
        s.low_balance,
        s.cost_capped,
        s.billing_failures,
        status.pending_results
    );
    let a = &config.engine.admission;
    let limit = |n: u64| {
        if n == 0 {
            "none".to_owned()
        } else {
            n.to_string()
        }
    };
    let _ = writeln!(
        out,
        "admission: limits concurrent {}, cps {}, shed above queue depth {} or age {} ms; {} calls admitted now, {} in all; refused limit_reached {}{}",
        limit(u64::from(a.max_concurrent)),
        limit(u64::from(a.cps.per_second)),
        limit(a.shed_queue_depth as u64),
        limit(a.shed_queue_age.as_millis() as u64),
        status.admission.active,
        status.admission.admitted,
        s.reason_count(rtc_engine::reason::Reason::LimitReached),
        {
            let by: Vec<String> = status
                .admission
                .refused
                .iter()
                .filter(|(_, n)| *n > 0)
                .map(|(name, n)| format!("{name} {n}"))
                .collect();
            if by.is_empty() {
                String::new()
            } else {
                format!(" ({})", by.join(", "))
            }
        }
    );
    let _ = writeln!(
        out,
        "panics caught: {}; headers: {}",
        guard::panics_caught(),
        if freeswitch_sys::USING_STUB {
            "stub (not built against a FreeSWITCH install)"
        } else {
            "freeswitch"
        }
    );
    out
}

fn ledger_line(ledger: Option<&LedgerFigures<'_>>) -> String {
    let Some(LedgerFigures { path, stats: l }) = ledger else {
        return "none (no service is local)".to_owned();
    };
    format!(
        "{path}: {} commits of {} requests ({} refused), commit avg {} us, max {} us; queued {}, waiting settlements \
         {}, lost settlements {}; storage failures {}{}; expired reservations {}; recovered from dead nodes {}",
        l.batches,
        l.requests,
        l.refused,
        l.commit_us_total.checked_div(l.batches).unwrap_or(0),
        l.commit_us_max,
        l.queued,
        l.waiting,
        l.lost,
        l.storage_failures,
        if l.breaker_open {
            format!(
                " (breaker open: reservations refused, {} so far)",
                l.breaker_refused
            )
        } else {
            String::new()
        },
        l.expired_reservations,
        l.recovered_reservations
    )
}

fn breakers_line(breakers: Option<&[BreakerStatus]>) -> String {
    match breakers {
        None => "none: every service is local".to_owned(),
        Some([]) => "none: no service is http".to_owned(),
        Some(list) => list
            .iter()
            .map(|b| format!("{} {}", b.service.name(), b.state.name()))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// `rtc_core calls`.
pub fn calls(list: &[CallSummary], limit: usize) -> String {
    let mut out = String::from("uuid,state,partner,caller,destination,age_ms\n");
    for c in list {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{}",
            c.uuid,
            c.state,
            c.partner.as_deref().unwrap_or_default(),
            c.caller,
            c.destination,
            c.age_ms
        );
    }
    let _ = writeln!(
        out,
        "{} total{}",
        list.len(),
        if list.len() >= limit {
            format!(" (first {limit} shown)")
        } else {
            String::new()
        }
    );
    out
}

/// `rtc_core call <uuid>`: the call and its trace (from → to, cause, +time since creation).
pub fn call(view: &CallView) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "uuid: {}", view.uuid);
    let _ = writeln!(out, "state: {}", view.state);
    if let Some(r) = view.reason {
        let _ = writeln!(out, "reason: {r}");
    }
    if let Some(c) = &view.hangup_cause {
        let _ = writeln!(out, "hangup_cause: {c}");
    }
    if let Some(p) = &view.partner {
        let _ = writeln!(out, "partner: {p}");
    }
    let _ = writeln!(out, "caller: {}", view.caller);
    let _ = writeln!(out, "destination: {}", view.destination);
    let _ = writeln!(
        out,
        "source_ip: {}",
        view.source_ip.map(|ip| ip.to_string()).unwrap_or_default()
    );
    if let Some(rate) = &view.rate_per_minute {
        let _ = writeln!(out, "rate_per_minute: {rate}");
    }
    if let Some(debited) = &view.debited {
        // Real-time billing: debited so far, and the seconds of talk it pays for.
        let _ = writeln!(out, "debited: {debited}");
        let _ = writeln!(out, "paid_s: {}", view.paid_s);
    }
    if !view.routes.is_empty() {
        let _ = writeln!(
            out,
            "routes: {} (next {})",
            view.routes.join(" | "),
            view.route_index
        );
    }
    let _ = writeln!(out, "age_ms: {}", view.age_ms);
    let _ = writeln!(out, "trace:");
    for t in &view.trace {
        let _ = writeln!(
            out,
            "  {} -> {} on {} at +{}.{:03} ms",
            t.from,
            t.to,
            t.cause,
            t.at_us / 1000,
            t.at_us % 1000
        );
    }
    if view.trace_dropped > 0 {
        let _ = writeln!(
            out,
            "  ({} transitions dropped from the middle)",
            view.trace_dropped
        );
    }
    out
}

/// Live calls per partner name, or why the engine did not say.
pub type LiveByPartner = Result<HashMap<String, u32>, String>;

/// `rtc_core balance <partner>`: one `key: value` per line.
pub fn balance(account: &AccountStatus, live: &LiveByPartner) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "partner: {}", account.name);
    let _ = writeln!(out, "balance: {}", account.balance);
    let _ = writeln!(out, "reserved: {}", account.reserved);
    let _ = writeln!(out, "available: {}", account.available());
    let _ = writeln!(out, "credit_limit: {}", account.credit_limit);
    let _ = writeln!(out, "open_reservations: {}", account.open_reservations);
    match live {
        Ok(by_name) => {
            let n = by_name.get(&account.name).copied().unwrap_or(0);
            let _ = writeln!(out, "live_calls: {n}");
        }
        Err(why) => {
            let _ = writeln!(
                out,
                "live_calls: unknown (the engine did not answer: {why})"
            );
        }
    }
    out
}

/// `rtc_core balance`: one CSV line per account (live calls empty when the engine did not answer).
pub fn balances(accounts: &[AccountStatus], live: &LiveByPartner) -> String {
    let mut out = String::from("partner,balance,reserved,available,live_calls\n");
    for a in accounts {
        let calls = match live {
            Ok(by_name) => by_name.get(&a.name).copied().unwrap_or(0).to_string(),
            Err(_) => String::new(),
        };
        let _ = writeln!(
            out,
            "{},{},{},{},{calls}",
            csv_field(&a.name),
            a.balance,
            a.reserved,
            a.available()
        );
    }
    out
}

/// A CSV field, quoted when it holds a comma, a quote or a line break (RFC 4180).
fn csv_field(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\"")).into()
    } else {
        text.into()
    }
}

/// `rtc_core breakers`.
pub fn breakers(list: Option<&[BreakerStatus]>) -> String {
    let Some(list) = list.filter(|l| !l.is_empty()) else {
        return format!("{}\n", breakers_line(list));
    };
    let mut out = String::from(
        "service,state,failure_rate_pct,calls_in_window,failures_in_window,opened_ago_ms,ends_in_ms,opened,half_opened,closed\n",
    );
    for b in list {
        let ms = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
        let _ = writeln!(
            out,
            "{},{},{:.1},{},{},{},{},{},{},{}",
            b.service.name(),
            b.state.name(),
            b.failure_rate,
            b.calls_in_window,
            b.failures_in_window,
            ms(b.opened_ago_ms),
            ms(b.ends_in_ms),
            b.transitions.opened,
            b.transitions.half_opened,
            b.transitions.closed
        );
    }
    out
}

/// Unix seconds as RFC 3339 in UTC.
fn utc(s: u64) -> String {
    jiff::Timestamp::from_second(s as i64).map_or_else(|_| format!("{s} s"), |t| t.to_string())
}

/// `rtc_core fraud`: the summary line, the blocks in force, the latest hits (CSV, newest first).
pub fn fraud(f: &FraudReport) -> String {
    let s = &f.summary;
    let mut out = String::new();
    if !s.enabled {
        out.push_str(
            "fraud rules: off (<fraud> <param name=\"enabled\" value=\"true\"/> turns them on)\n",
        );
    } else {
        let by_action = |action: &str| -> u64 {
            s.hits
                .iter()
                .filter(|(_, a, _)| *a == action)
                .map(|(_, _, n)| n)
                .sum()
        };
        let _ = writeln!(
            out,
            "fraud rules: on; {} partner(s) blocked; hits: {} refuse, {} alert, {} block; {} new calls refused while \
             blocked; {} live calls cut",
            s.blocked_partners,
            by_action("refuse"),
            by_action("alert"),
            by_action("block"),
            s.blocked_refusals,
            s.calls_cut
        );
    }
    out.push_str("blocked: partner,rule,since,until,refused,detail\n");
    for b in &f.blocks {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{}",
            csv_field(&b.partner),
            b.rule,
            utc(b.since_s),
            utc(b.until_s),
            b.refused,
            csv_field(&b.detail)
        );
    }
    out.push_str("recent hits: time,partner,rule,action,destination,class,detail\n");
    for h in &f.recent {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{}",
            utc(h.at_s),
            csv_field(&h.partner),
            h.rule,
            h.action,
            csv_field(&h.destination),
            csv_field(h.class.as_deref().unwrap_or("")),
            csv_field(&h.detail)
        );
    }
    out
}

/// The audit trail's families (when `<audit>` keeps one).
fn audit_metrics(e: &mut Exposition, a: &rtc_audit::AuditStats) {
    e.one(
        "rtc_audit_lines_total",
        "counter",
        "Lines written to the audit trail.",
        a.lines,
    );
    e.one(
        "rtc_audit_dropped_total",
        "counter",
        "Audit entries not written: the writer's queue was full, or it kept failing.",
        a.dropped,
    );
    e.one(
        "rtc_audit_write_errors_total",
        "counter",
        "Audit trail writes, opens and rotations that failed (each logged).",
        a.write_errors,
    );
    e.one(
        "rtc_audit_rotations_total",
        "counter",
        "Audit trail files rotated by size.",
        a.rotations,
    );
}

/// `rtc_core status`'s audit line.
pub fn audit_line(path: Option<&str>, a: &rtc_audit::AuditStats) -> String {
    format!(
        "audit: {} lines written, {} dropped, {} write errors, {} rotations{}\n",
        a.lines,
        a.dropped,
        a.write_errors,
        a.rotations,
        path.map(|p| format!(" ({p})")).unwrap_or_default()
    )
}

/// The fraud rules' families: hits per rule and action, blocks, cuts, and each partner's spend in the hour.
fn fraud_metrics(e: &mut Exposition, f: &FraudSummary) {
    e.family(
        "rtc_fraud_hits_total",
        "counter",
        "Fraud rule hits, per rule and action (refuse, alert, block); repeated alerts included.",
    );
    for (rule, action, n) in &f.hits {
        e.sample(
            "rtc_fraud_hits_total",
            &[("rule", rule), ("action", action)],
            n,
        );
    }
    e.one(
        "rtc_fraud_blocked_partners",
        "gauge",
        "Partners blocked by a fraud rule now (their new calls are refused).",
        f.blocked_partners,
    );
    e.one(
        "rtc_fraud_blocked_refusals_total",
        "counter",
        "New calls refused because their partner was blocked.",
        f.blocked_refusals,
    );
    e.one(
        "rtc_fraud_calls_cut_total",
        "counter",
        "Live calls hung up (or refused in setup) by a fraud block.",
        f.calls_cut,
    );
    e.family(
        "rtc_partner_spend_hour",
        "gauge",
        "Money charged and reserved per partner in the rolling hour (account currency), as the spend rules count it.",
    );
    for (partner, money) in &f.spend_hour {
        e.sample(
            "rtc_partner_spend_hour",
            &[("partner", partner)],
            money.to_string(),
        );
    }
}

/// A Prometheus text exposition, metric family by family.
struct Exposition {
    /// The text so far.
    out: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let v = v
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n");
                let _ = write!(self.out, "{k}=\"{v}\"");
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// One histogram's samples (its family written before): cumulative `_bucket`s with `labels` and `le`, `_sum`,
    /// `_count`.
    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], b: &Buckets) {
        let bucket = format!("{name}_bucket");
        for (le, n) in b.cumulative() {
            let le = if le.is_finite() {
                le.to_string()
            } else {
                "+Inf".to_owned()
            };
            let mut with_le = labels.to_vec();
            with_le.push(("le", &le));
            self.sample(&bucket, &with_le, n);
        }
        self.sample(&format!("{name}_sum"), labels, b.sum_s);
        self.sample(&format!("{name}_count"), labels, b.count());
    }
}

/// Upper bounds (ns) of the handler histogram's Prometheus buckets: powers of two, where the module's
/// log-linear buckets have exact boundaries.
const HANDLER_BOUNDS_NS: [u64; 12] = [
    128, 256, 512, 1024, 2048, 4096, 8192, 16_384, 65_536, 262_144, 1_048_576, 16_777_216,
];

/// `rtc_core metrics`.
#[allow(clippy::too_many_arguments)]
pub fn metrics(
    status: &StatusReport,
    intake: &IntakeStats,
    breakers: Option<&[BreakerStatus]>,
    service_counters: &[CounterValue],
    service_times: &[ResponseTime],
    ledger: Option<&LedgerFigures<'_>>,
    config: &RtcConfig,
    handler: &Snapshot,
    audit: Option<&rtc_audit::AuditStats>,
) -> String {
    let mut e = Exposition { out: String::new() };
    let s = &status.stats;
    e.one(
        "rtc_engine_uptime_seconds",
        "gauge",
        "Seconds since the engine started.",
        status.uptime_s,
    );
    e.one(
        "rtc_engine_events_total",
        "counter",
        "Channel events applied by the engine.",
        s.events,
    );
    e.one(
        "rtc_engine_service_results_total",
        "counter",
        "Business service results applied by the engine.",
        s.results,
    );
    e.one(
        "rtc_engine_transitions_total",
        "counter",
        "Call state transitions applied.",
        s.transitions,
    );
    e.family(
        "rtc_engine_inputs_ignored_total",
        "counter",
        "Inputs that changed nothing, by why.",
    );
    for (why, n) in [
        ("absorbed", s.absorbed),
        ("duplicate", s.duplicate_events),
        ("late", s.late_events),
        ("after_end", s.after_end_events),
        ("unknown_channel", s.unknown_events),
        ("foreign_leg", s.foreign_legs),
        ("own_leg", s.own_leg_events),
        ("other_context", s.other_context),
        ("stale_result", s.stale_results),
        ("illegal", s.illegal_total()),
    ] {
        e.sample("rtc_engine_inputs_ignored_total", &[("why", why)], n);
    }
    e.one(
        "rtc_engine_calls_created_total",
        "counter",
        "Calls the engine started deciding.",
        s.calls_created,
    );
    e.family(
        "rtc_engine_calls_finished_total",
        "counter",
        "Calls finished, by final state.",
    );
    for (state, n) in [
        ("COMPLETED", s.completed),
        ("REJECTED", s.rejected),
        ("FAILED", s.failed),
    ] {
        e.sample("rtc_engine_calls_finished_total", &[("state", state)], n);
    }
    e.family(
        "rtc_engine_calls_by_reason_total",
        "counter",
        "Finished calls refused or failed, by reason.",
    );
    for (reason, n) in &s.by_reason {
        e.sample("rtc_engine_calls_by_reason_total", &[("reason", reason)], n);
    }
    e.family("rtc_engine_live_calls", "gauge", "Live calls, by state.");
    for (state, n) in &status.by_state {
        e.sample("rtc_engine_live_calls", &[("state", state)], n);
    }
    for (name, help, n) in [
        (
            "rtc_engine_swept_total",
            "Calls removed by the sweep.",
            s.swept,
        ),
        (
            "rtc_engine_channels_gone_total",
            "Live calls whose channel was gone though no hangup was seen (lost events), settled then.",
            s.channels_gone,
        ),
        (
            "rtc_engine_timers_fired_total",
            "Timers fired.",
            s.timers_fired,
        ),
        (
            "rtc_engine_service_requests_total",
            "Service requests emitted.",
            s.requests,
        ),
        (
            "rtc_engine_commands_total",
            "Call-control commands emitted.",
            s.commands,
        ),
        ("rtc_engine_cdrs_total", "CDRs written.", s.cdrs),
        (
            "rtc_engine_decisions_delivered_total",
            "Decisions handed to a waiting dialplan app.",
            s.decisions_delivered,
        ),
        (
            "rtc_engine_orphan_reservations_released_total",
            "Reservations that arrived for calls already gone, released.",
            s.orphan_reservations_released,
        ),
    ] {
        e.one(name, "counter", help, n);
    }
    latency_metrics(&mut e, status, service_times);
    e.one(
        "rtc_engine_queue_depth",
        "gauge",
        "Events waiting in the engine's inbound queue.",
        intake.queue_depth,
    );
    e.one(
        "rtc_engine_queue_capacity",
        "gauge",
        "Capacity of the engine's inbound queue.",
        intake.queue_capacity,
    );
    e.one(
        "rtc_engine_queue_full_total",
        "counter",
        "Events refused because the engine's queue was full.",
        intake.queue_full,
    );
    e.one(
        "rtc_engine_control_queue_depth",
        "gauge",
        "Results, queries and decisions waiting for the engine thread.",
        intake.control_depth,
    );
    let m = &events::STATS;
    e.family(
        "rtc_module_events_total",
        "counter",
        "Channel events seen by the module's handler, by outcome.",
    );
    for (outcome, c) in [
        ("accepted", &m.accepted),
        ("queue_full", &m.queue_full),
        ("malformed", &m.malformed),
        ("no_engine", &m.no_engine),
        ("unmarked_park", &m.unmarked_parks),
    ] {
        e.sample(
            "rtc_module_events_total",
            &[("outcome", outcome)],
            c.load(Relaxed),
        );
    }
    let sources = m.sources.counts();
    e.family(
        "rtc_module_source_header_total",
        "counter",
        "New SIP calls' source header (behind a load balancer), by outcome: believed (a trusted proxy's), absent (a \
         trusted proxy's call without it), refused (a trusted proxy's, not an address), spoofed (from a source that \
         is not a trusted proxy: ignored).",
    );
    for outcome in Outcome::ALL {
        e.sample(
            "rtc_module_source_header_total",
            &[("outcome", outcome.name())],
            sources.get(outcome),
        );
    }
    e.family(
        "rtc_module_event_handler_seconds",
        "histogram",
        "Time spent in the module's event handler on FreeSWITCH's dispatch threads.",
    );
    for bound in HANDLER_BOUNDS_NS {
        e.sample(
            "rtc_module_event_handler_seconds_bucket",
            &[("le", &format!("{}", bound as f64 / 1e9))],
            handler.count_at_most(bound),
        );
    }
    e.sample(
        "rtc_module_event_handler_seconds_bucket",
        &[("le", "+Inf")],
        handler.count(),
    );
    e.sample(
        "rtc_module_event_handler_seconds_sum",
        &[],
        handler.sum() as f64 / 1e9,
    );
    e.sample(
        "rtc_module_event_handler_seconds_count",
        &[],
        handler.count(),
    );
    e.one(
        "rtc_module_panics_total",
        "counter",
        "Panics contained by the module's guard.",
        guard::panics_caught(),
    );
    if let Some(list) = breakers.filter(|l| !l.is_empty()) {
        e.family(
            "rtc_breaker_state",
            "gauge",
            "Circuit breaker state per HTTP service: 0 closed, 1 half-open, 2 open.",
        );
        for b in list {
            let v = match b.state {
                BreakerState::Closed => 0,
                BreakerState::HalfOpen => 1,
                BreakerState::Open => 2,
            };
            e.sample("rtc_breaker_state", &[("service", b.service.name())], v);
        }
        e.family(
            "rtc_breaker_opened_total",
            "counter",
            "Times each breaker opened.",
        );
        for b in list {
            e.sample(
                "rtc_breaker_opened_total",
                &[("service", b.service.name())],
                b.transitions.opened,
            );
        }
    }
    if !service_counters.is_empty() {
        e.family(
            "rtc_service_events_total",
            "counter",
            "Business service layer events, by service and event.",
        );
        for c in service_counters {
            e.sample(
                "rtc_service_events_total",
                &[("service", c.service.name()), ("event", c.event.name())],
                c.value,
            );
        }
    }
    let a = &config.engine.admission;
    e.family(
        "rtc_admission_limit",
        "gauge",
        "Configured global admission limits (0: none).",
    );
    for (limit, v) in [
        ("max_concurrent", u64::from(a.max_concurrent)),
        ("cps", u64::from(a.cps.per_second)),
        ("shed_queue_depth", a.shed_queue_depth as u64),
    ] {
        e.sample("rtc_admission_limit", &[("limit", limit)], v);
    }
    e.one(
        "rtc_admission_refused_total",
        "counter",
        "Calls refused by admission control (reason limit_reached).",
        s.reason_count(rtc_engine::reason::Reason::LimitReached),
    );
    e.one(
        "rtc_admission_active_calls",
        "gauge",
        "Calls holding an admission place.",
        u64::from(status.admission.active),
    );
    e.family(
        "rtc_partner_active_calls",
        "gauge",
        "Live calls per partner (holding an admission place), for every partner seen since start.",
    );
    for p in &status.by_partner {
        e.sample(
            "rtc_partner_active_calls",
            &[("partner_id", &p.id.to_string()), ("partner", &p.name)],
            p.active,
        );
    }
    e.family(
        "rtc_admission_refusals_total",
        "counter",
        "Admission refusals per limit.",
    );
    for (limit, n) in &status.admission.refused {
        e.sample("rtc_admission_refusals_total", &[("limit", limit)], *n);
    }
    billing_metrics(&mut e, status);
    fraud_metrics(&mut e, &status.fraud);
    if let Some(a) = audit {
        audit_metrics(&mut e, a);
    }
    if let Some(l) = ledger {
        ledger_metrics(&mut e, &l.stats);
    }
    e.out
}

/// The latency histograms (event lag, call setup, time in state, services' response times) and the process's CPU
/// and memory.
fn latency_metrics(e: &mut Exposition, status: &StatusReport, service_times: &[ResponseTime]) {
    let s = &status.stats;
    e.family(
        "rtc_engine_event_lag_seconds",
        "histogram",
        "Delay from an event's FreeSWITCH timestamp to its application by the engine (sampled: one event in eight).",
    );
    e.histogram("rtc_engine_event_lag_seconds", &[], &s.event_lag);
    e.one(
        "rtc_engine_event_lag_max_seconds",
        "gauge",
        "Longest sampled event lag since the engine started.",
        s.event_lag_max_us as f64 / 1e6,
    );
    e.family(
        "rtc_engine_call_setup_seconds",
        "histogram",
        "Time from a call's creation to its decision: routes found (PARKED) or refused (REJECTED).",
    );
    e.histogram("rtc_engine_call_setup_seconds", &[], &s.call_setup);
    e.family(
        "rtc_engine_state_seconds",
        "histogram",
        "Time calls spent in a state before leaving it, by state.",
    );
    for (state, b) in &s.state_time {
        e.histogram("rtc_engine_state_seconds", &[("state", state)], b);
    }
    if !service_times.is_empty() {
        e.family(
            "rtc_service_request_seconds",
            "histogram",
            "Business service response time, by service and backend: an HTTP request from send to answer or failure; \
             a local backend's answer on the engine thread (reservations and debits: until the ledger answered; \
             settlements and CDRs: their hand-off to the ledger writer).",
        );
        for t in service_times {
            e.histogram(
                "rtc_service_request_seconds",
                &[
                    ("service", t.service.name()),
                    ("backend", backend_name(t.backend)),
                ],
                &t.buckets,
            );
        }
    }
    if let Some(p) = crate::process::read() {
        e.one(
            "rtc_process_cpu_seconds_total",
            "counter",
            "CPU time (user and system) of the process the module runs in: FreeSWITCH's, the module's share included.",
            p.cpu_seconds,
        );
        e.one(
            "rtc_process_cpu_cores",
            "gauge",
            "CPUs the process (FreeSWITCH, the module inside it) may use: its CPU affinity and cgroup quota.",
            p.cpu_cores,
        );
        e.one(
            "rtc_process_resident_memory_bytes",
            "gauge",
            "Resident memory of the process the module runs in: FreeSWITCH's, the module's share included.",
            p.resident_bytes,
        );
        e.one(
            "rtc_process_memory_limit_bytes",
            "gauge",
            "Memory the process may use: its cgroup's limit (memory.max, or v1 memory.limit_in_bytes) when set, \
             else the machine's MemTotal.",
            p.memory_limit_bytes,
        );
    }
}

/// Real-time billing, from the engine's counters.
fn billing_metrics(e: &mut Exposition, status: &StatusReport) {
    let s = &status.stats;
    for (name, help, n) in [
        (
            "rtc_billing_extensions_total",
            "Debits of a connected call's next interval asked of the balance service.",
            s.extensions,
        ),
        (
            "rtc_billing_extensions_granted_total",
            "Interval debits granted (whole or in part).",
            s.extensions_granted,
        ),
        (
            "rtc_billing_extensions_refused_total",
            "Interval debits refused: the partner's money could not pay the next interval.",
            s.extensions_refused,
        ),
        (
            "rtc_billing_low_balance_total",
            "Connected calls warned that their partner's money runs out (rtc_core::low_balance).",
            s.low_balance,
        ),
        (
            "rtc_billing_cost_capped_total",
            "Connected calls stopped at their partner's per-call cost cap.",
            s.cost_capped,
        ),
        (
            "rtc_billing_failures_total",
            "Connected calls whose billing stopped because the balance service failed (hung up when paid time ran out).",
            s.billing_failures,
        ),
    ] {
        e.one(name, "counter", help, n);
    }
    e.one(
        "rtc_engine_pending_results",
        "gauge",
        "Decision and debit requests sent to services that answer later, not answered yet.",
        status.pending_results,
    );
}

/// The local ledger's writer.
fn ledger_metrics(e: &mut Exposition, l: &LedgerStats) {
    for (name, help, n) in [
        (
            "rtc_ledger_commits_total",
            "Ledger transactions committed durably (one fsync each, for a whole batch).",
            l.batches,
        ),
        (
            "rtc_ledger_requests_total",
            "Requests the ledger applied or refused.",
            l.requests,
        ),
        (
            "rtc_ledger_refused_total",
            "Requests the ledger refused (nothing changed): unknown account, not enough money, reused reference.",
            l.refused,
        ),
        (
            "rtc_ledger_storage_failures_total",
            "Batches rolled back because the ledger file could not be written (disk full, I/O error).",
            l.storage_failures,
        ),
        (
            "rtc_ledger_expired_requests_total",
            "Requests that waited past their bound for the ledger writer and were not applied.",
            l.expired_requests,
        ),
        (
            "rtc_ledger_expired_reservations_total",
            "Reservations nobody settled before their expiry, settled by the ledger.",
            l.expired_reservations,
        ),
        (
            "rtc_ledger_lost_settlements_total",
            "Settlements that could not be written before the ledger closed (each logged whole; recovered at the next start).",
            l.lost,
        ),
        (
            "rtc_ledger_cdrs_total",
            "CDRs stored in the ledger.",
            l.cdrs,
        ),
        (
            "rtc_ledger_breaker_refused_total",
            "Requests refused at once while the ledger's database was failing (the breaker open).",
            l.breaker_refused,
        ),
        (
            "rtc_ledger_recovered_reservations_total",
            "Reservations of nodes that stopped renewing their lease, settled by this node (shared ledger).",
            l.recovered_reservations,
        ),
    ] {
        e.one(name, "counter", help, n);
    }
    e.one(
        "rtc_ledger_breaker_open",
        "gauge",
        "1 while the ledger's database is failing and reservations are refused at once.",
        u64::from(l.breaker_open),
    );
    for (name, help, n) in [
        (
            "rtc_ledger_queued",
            "Requests waiting for the ledger writer.",
            l.queued,
        ),
        (
            "rtc_ledger_waiting_settlements",
            "Settlements waiting for the database to take them again after a storage failure.",
            l.waiting,
        ),
        (
            "rtc_ledger_largest_batch_requests",
            "Most requests committed in one transaction.",
            l.largest_batch,
        ),
    ] {
        e.one(name, "gauge", help, n);
    }
    e.one(
        "rtc_ledger_commit_seconds_total",
        "counter",
        "Time spent committing ledger transactions (the fsyncs).",
        l.commit_us_total as f64 / 1e6,
    );
    e.one(
        "rtc_ledger_commit_seconds_max",
        "gauge",
        "Longest ledger commit since load.",
        l.commit_us_max as f64 / 1e6,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::histogram::Histogram;
    use rtc_engine::engine::{Query, QueryReply};
    use rtc_engine::testkit::RecordingControl;
    use rtc_host::Host;
    use std::time::Duration;

    fn engine_answers() -> (StatusReport, IntakeStats, LedgerStats) {
        let host = Host::start(&RtcConfig::default(), Box::new(RecordingControl::default()))
            .expect("engine");
        let status = match host.engine().query(Query::Status, Duration::from_secs(5)) {
            Ok(QueryReply::Status(s)) => *s,
            other => panic!("{other:?}"),
        };
        let intake = host.engine().intake();
        let ledger = host.ledger().expect("a local ledger").stats();
        host.shutdown(Duration::from_secs(1));
        (status, intake, ledger)
    }

    #[test]
    fn metrics_are_well_formed_prometheus_text() {
        let (status, intake, stats) = engine_answers();
        let h = Histogram::new();
        for ns in [100, 300, 900, 5000] {
            h.record(ns);
        }
        let text = metrics(
            &status,
            &intake,
            None,
            &[],
            &[],
            Some(&LedgerFigures {
                path: ":memory:",
                stats,
            }),
            &RtcConfig::default(),
            &h.snapshot(),
            None,
        );
        let mut typed = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("name and type");
                assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
                assert!(typed.insert(name.to_owned()), "family typed twice: {name}");
                continue;
            }
            if line.starts_with("# HELP ") {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("series and value");
            assert!(value.parse::<f64>().is_ok(), "{line}");
            let name = series.split('{').next().expect("name");
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| typed.contains(*f)))
                .unwrap_or(name);
            assert!(typed.contains(family), "sample before its TYPE: {line}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
                "{line}"
            );
        }
        assert!(
            text.contains("rtc_module_event_handler_seconds_bucket{le=\"0.000000256\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("rtc_module_event_handler_seconds_bucket{le=\"+Inf\"} 4\n"));
        assert!(text.contains("rtc_module_event_handler_seconds_count 4\n"));
        assert!(text.contains("rtc_engine_queue_capacity 65536\n"), "{text}");
        for family in [
            "rtc_ledger_commits_total",
            "rtc_ledger_storage_failures_total",
            "rtc_ledger_queued",
            "rtc_ledger_waiting_settlements",
            "rtc_ledger_lost_settlements_total",
            "rtc_ledger_commit_seconds_total",
            "rtc_ledger_commit_seconds_max",
            "rtc_billing_extensions_total",
            "rtc_billing_low_balance_total",
            "rtc_billing_cost_capped_total",
            "rtc_billing_failures_total",
        ] {
            assert!(typed.contains(family), "{family} missing: {text}");
        }
        promtool_agrees(&text);
    }

    /// `promtool check metrics` (Prometheus's own linter: format, and names by unit and type) on `text`, when
    /// promtool is installed; skipped, and said so, when it is not.
    fn promtool_agrees(text: &str) {
        use std::io::Write;
        let child = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn();
        let Ok(mut child) = child else {
            println!("skipped: promtool check metrics (promtool is not on PATH)");
            return;
        };
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write to promtool");
        let out = child.wait_with_output().expect("promtool ran");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let findings: Vec<&str> = said.lines().filter(|l| !l.trim().is_empty()).collect();
        assert!(
            findings.is_empty() && out.status.success(),
            "promtool check metrics: {said}"
        );
    }

    #[test]
    fn status_and_breakers_without_http_services() {
        let (s, intake, stats) = engine_answers();
        let ledger = LedgerFigures {
            path: "/var/lib/freeswitch/db/rtc_core.db",
            stats,
        };
        let text = status(
            &s,
            &intake,
            None,
            Some(&ledger),
            &RtcConfig::default(),
            0,
            &[],
            Instant::now(),
        );
        for want in [
            "engine: running",
            "live calls: 0",
            "events: 0 applied",
            "queue: depth 0 of 65536",
            "breakers: none: every service is local",
            "ledger: /var/lib/freeswitch/db/rtc_core.db: ",
            "storage failures 0; expired reservations 0",
            "billing: every 60 s; extensions 0 asked, 0 granted, 0 refused; low balance 0",
            "admission: limits concurrent none",
        ] {
            assert!(text.contains(want), "{want}: {text}");
        }
        assert_eq!(breakers(None), "none: every service is local\n");
    }

    #[test]
    fn status_and_metrics_show_no_secret_of_the_configuration() {
        let (s, intake, stats) = engine_answers();
        let url = "postgres://rtc:Pg-s3cret@db:5432/billing";
        let mut config = RtcConfig::default();
        config.local.ledger = rtc_config::local::LedgerPlace::Postgres(url.into());
        for service in &mut config.services {
            service.url = Some("https://rtc:Url-s3cret@svc.example/v1".into());
            service.api_key = Some("Api-s3cret".into());
        }
        // The place the shared ledger reports itself by.
        let place = rtc_ledger_pg::redact(url);
        let ledger = LedgerFigures {
            path: &place,
            stats,
        };
        let text = status(
            &s,
            &intake,
            None,
            Some(&ledger),
            &config,
            0,
            &[],
            Instant::now(),
        ) + &metrics(
            &s,
            &intake,
            None,
            &[],
            &[],
            Some(&ledger),
            &config,
            &Histogram::new().snapshot(),
            None,
        );
        assert!(
            text.contains("ledger: postgres://rtc:***@db:5432/billing: "),
            "{text}"
        );
        for secret in ["Pg-s3cret", "Url-s3cret", "Api-s3cret"] {
            assert!(!text.contains(secret), "{secret}: {text}");
        }
    }

    #[test]
    fn balances_one_per_line_and_as_csv() {
        use rtc_ledger::{AccountId, Money};
        let account = |name: &str, balance: i64| AccountStatus {
            id: AccountId(1),
            name: name.to_owned(),
            balance: Money(balance),
            reserved: Money(250_000),
            credit_limit: Money(1_000_000),
            open_reservations: 1,
        };
        let live: LiveByPartner = Ok([("lab".to_owned(), 2)].into_iter().collect());
        assert_eq!(
            balance(&account("lab", 10_500_000), &live),
            "partner: lab\nbalance: 10.500000\nreserved: 0.250000\navailable: 11.250000\ncredit_limit: 1.000000\n\
             open_reservations: 1\nlive_calls: 2\n"
        );
        assert!(
            balance(&account("lab", 0), &Err("timed out".into()))
                .ends_with("live_calls: unknown (the engine did not answer: timed out)\n")
        );
        assert_eq!(
            balances(&[account("lab", 0), account("a,\"b\"", -5)], &live),
            "partner,balance,reserved,available,live_calls\nlab,0.000000,0.250000,0.750000,2\n\
             \"a,\"\"b\"\"\",-0.000005,0.250000,0.749995,0\n"
        );
    }
}
