//! The alert rules (`conf/prometheus/rtc_core.rules.yml`) and the Grafana dashboard (`conf/grafana/rtc_core.json`)
//! against the module's real metrics page: every metric they name is one `rtc_core metrics` exports (the page is
//! rendered by `report::metrics` from a running engine with local and HTTP services, not from a list); every alert
//! has a severity, a summary, a description and a runbook section that exists, and unit tests that fire it and
//! that do not; and `promtool check rules` / `promtool test rules` pass when promtool is installed.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mod_rtc_core::histogram::Histogram;
use mod_rtc_core::report::{self, LedgerFigures};
use rtc_config::RtcConfig;
use rtc_config::services::Backend;
use rtc_engine::engine::{Query, QueryReply};
use rtc_engine::event::{CallEvent, EventKind};
use rtc_engine::id::CallId;
use rtc_engine::service::ServiceKind;
use rtc_engine::testkit::RecordingControl;
use rtc_host::Host;

const RULES: &str = "conf/prometheus/rtc_core.rules.yml";
const RULE_TESTS: &str = "conf/prometheus/rtc_core.rules.test.yml";
const DASHBOARD: &str = "conf/grafana/rtc_core.json";
const RUNBOOK: &str = "docs/runbook.md";

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The metrics page of an engine that has decided calls: the shipped local tables, the routing service over HTTP
/// (unreachable, so its breaker and failure counters show), the local ledger.
fn exported_page() -> String {
    let mut config = RtcConfig::default();
    let routing = config
        .services
        .iter_mut()
        .find(|s| s.kind == ServiceKind::Routing)
        .expect("a routing service");
    routing.backend = Backend::Http;
    // Nothing listens on port 9 (discard) here: the request fails at once.
    routing.url = Some("http://127.0.0.1:9/routing".into());
    // An audit trail, so that its families are on the page.
    let dir = tempfile::tempdir().expect("temp dir");
    config.audit = Some(rtc_config::audit::AuditConfig::new(
        dir.path().join("audit.jsonl"),
    ));
    let control = RecordingControl::default();
    let host = Host::start(&config, Box::new(control.clone())).expect("engine");
    for n in 1..=3u128 {
        let mut ev = CallEvent::new(CallId::from_u128(n), EventKind::ChannelCreate, 1);
        ev.source_ip = Some(IpAddr::from([127, 0, 0, 1]));
        ev.destination = "442079460000".into();
        host.engine().submit_event(ev).expect("event taken");
        let deadline = Instant::now() + Duration::from_secs(10);
        while control.take().is_empty() {
            assert!(Instant::now() < deadline, "no decision for call {n}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let status = match host.engine().query(Query::Status, Duration::from_secs(5)) {
        Ok(QueryReply::Status(s)) => *s,
        other => panic!("{other:?}"),
    };
    let monitor = host.monitor().expect("an HTTP service");
    let breakers = monitor.breakers();
    let handler = Histogram::new();
    handler.record(900);
    let page = report::metrics(
        &status,
        &host.engine().intake(),
        Some(&breakers),
        &monitor.counters(),
        &host.service_times().snapshot(),
        Some(&LedgerFigures {
            path: ":memory:",
            stats: host.ledger().expect("a local ledger").stats(),
        }),
        &config,
        &handler.snapshot(),
        host.audit().map(|a| a.stats()).as_ref(),
    );
    host.shutdown(Duration::from_secs(1));
    page
}

/// Every series name on the page (a histogram's `_bucket`, `_sum` and `_count` included), by family type.
fn exported_names(page: &str) -> BTreeMap<String, String> {
    let mut names = BTreeMap::new();
    for line in page.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("name and type");
            if kind == "histogram" {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"), kind.to_owned());
                }
            } else {
                names.insert(name.to_owned(), kind.to_owned());
            }
        }
    }
    names
}

/// PromQL words that are not metric names: operators, modifiers, and the aggregations (which may come before their
/// parentheses: `sum by (le) (...)`).
const KEYWORDS: &str = "and or unless bool offset inf nan sum min max avg group stddev stdvar count count_values \
                        bottomk topk quantile";
/// Modifiers followed by a list of label names in parentheses (or, for the group ones, alone).
const LABEL_LISTS: &str = "by without on ignoring group_left group_right";

fn is_one_of(word: &str, words: &str) -> bool {
    words.split_whitespace().any(|w| w == word)
}

/// The metric names a PromQL expression selects: identifiers outside strings, label matchers, ranges and label
/// lists, that are neither functions, keywords nor Grafana variables.
fn metric_names(expr: &str) -> BTreeSet<String> {
    // Blank out quoted strings, `{...}` matchers and `[...]` ranges.
    let mut plain = String::with_capacity(expr.len());
    let mut closing: Option<char> = None;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in expr.chars() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            plain.push(' ');
            continue;
        }
        match (closing, c) {
            (_, '"' | '\'' | '`') => {
                quote = Some(c);
                plain.push(' ');
            }
            (None, '{') => {
                closing = Some('}');
                plain.push(' ');
            }
            (None, '[') => {
                closing = Some(']');
                plain.push(' ');
            }
            (Some(end), c) if c == end => {
                closing = None;
                plain.push(' ');
            }
            (Some(_), _) => plain.push(' '),
            (None, c) => plain.push(c),
        }
    }
    let chars: Vec<char> = plain.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_digit() || c == '.' {
            // A number (1e3, 0.5): not a name.
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
            continue;
        }
        if !(c.is_ascii_alphabetic() || c == '_' || c == ':' || c == '$') {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len()
            && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '_' | ':' | '$'))
        {
            i += 1;
        }
        let word: String = chars[start..i].iter().collect();
        let mut next = i;
        while next < chars.len() && chars[next].is_whitespace() {
            next += 1;
        }
        let opens = chars.get(next) == Some(&'(');
        let label_list = is_one_of(&word, LABEL_LISTS);
        if label_list && opens {
            // Skip the label list.
            while i < chars.len() && chars[i] != ')' {
                i += 1;
            }
            continue;
        }
        if word.starts_with('$') || opens || label_list || is_one_of(&word, KEYWORDS) {
            continue;
        }
        names.insert(word);
    }
    names
}

/// One alerting rule as the rules file writes it.
#[derive(Debug, Default)]
struct Alert {
    name: String,
    expr: String,
    fields: BTreeMap<String, String>,
}

/// The alerting rules, read from the file's own layout (`- alert:` blocks; `expr: |` blocks or one line; labels
/// and annotations one per line). `promtool check rules` checks the YAML itself.
fn alerts(rules: &str) -> Vec<Alert> {
    let mut out: Vec<Alert> = Vec::new();
    let mut lines = rules.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if let Some(name) = trimmed.strip_prefix("- alert:") {
            out.push(Alert {
                name: name.trim().to_owned(),
                ..Alert::default()
            });
            continue;
        }
        let Some(alert) = out.last_mut() else {
            continue;
        };
        if trimmed.starts_with("- record:") {
            panic!("recording rules are not expected here: {line}");
        }
        let Some((key, value)) = trimmed.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if key == "expr" && (value == "|" || value == ">") {
            let indent = line.len() - trimmed.len();
            while let Some(next) = lines.peek() {
                let next_indent = next.len() - next.trim_start().len();
                if !next.trim().is_empty() && next_indent <= indent {
                    break;
                }
                alert.expr.push_str(next.trim());
                alert.expr.push('\n');
                lines.next();
            }
        } else if key == "expr" {
            alert.expr = value.to_owned();
        } else if !key.contains(' ') && !value.is_empty() {
            let value = value.trim_matches('"').trim_matches('\'');
            alert.fields.insert(key.to_owned(), value.to_owned());
        }
    }
    out
}

/// Every `expr` of the dashboard's panels, and the metrics its template variables query.
fn dashboard_exprs(dashboard: &serde_json::Value) -> Vec<String> {
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("expr", serde_json::Value::String(e)) => out.push(e.clone()),
                        _ => walk(v, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    for var in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let query = match &var["query"] {
            serde_json::Value::String(q) => q.clone(),
            serde_json::Value::Object(q) => q["query"].as_str().unwrap_or_default().to_owned(),
            _ => continue,
        };
        // label_values(metric, label): the metric only.
        if let Some(args) = query.strip_prefix("label_values(") {
            let args = args.trim_end_matches(')');
            let metric = args.rsplit_once(',').map_or(args, |(m, _)| m);
            out.push(metric.to_owned());
        } else if !query.is_empty() && var["type"] == "query" {
            out.push(query);
        }
    }
    out
}

/// GitHub's anchor of a Markdown heading.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            'a'..='z' | '0'..='9' | '_' | '-' => Some(c),
            ' ' => Some('-'),
            _ => None,
        })
        .collect()
}

#[test]
fn promql_names_are_told_from_functions_labels_and_keywords() {
    let names = metric_names(
        r#"histogram_quantile(0.99, sum by (instance, le) (rate(rtc_a_bucket{service=~"x|y", le!="1"}[5m])))
           > 1 and on (instance) sum without(job) (increase(rtc_b_total[$__rate_interval] offset 1h)) / ignoring(x)
           group_left rtc_c > bool 1e3 or absent(rtc_d{a="}"})"#,
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["rtc_a_bucket", "rtc_b_total", "rtc_c", "rtc_d"]
    );
}

#[test]
fn every_metric_the_rules_and_the_dashboard_name_is_exported() {
    let page = exported_page();
    let exported = exported_names(&page);
    // The families this work added are on the page, with their types.
    for (name, kind) in [
        ("rtc_engine_call_setup_seconds_bucket", "histogram"),
        ("rtc_engine_state_seconds_bucket", "histogram"),
        ("rtc_engine_event_lag_seconds_bucket", "histogram"),
        ("rtc_service_request_seconds_bucket", "histogram"),
        ("rtc_breaker_state", "gauge"),
        ("rtc_service_events_total", "counter"),
    ] {
        assert_eq!(
            exported.get(name).map(String::as_str),
            Some(kind),
            "{name}: {page}"
        );
    }
    if cfg!(target_os = "linux") {
        for name in [
            "rtc_process_cpu_seconds_total",
            "rtc_process_cpu_cores",
            "rtc_process_resident_memory_bytes",
            "rtc_process_memory_limit_bytes",
        ] {
            assert!(exported.contains_key(name), "{name}: {page}");
        }
    }
    for (service, backend) in [
        ("partner", "local"),
        ("balance", "local"),
        ("routing", "http"),
    ] {
        let series = format!(
            "rtc_service_request_seconds_count{{service=\"{service}\",backend=\"{backend}\"}} "
        );
        assert!(page.contains(&series), "{series}: {page}");
    }

    let mut used: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for alert in alerts(&read(RULES)) {
        for name in metric_names(&alert.expr) {
            used.entry(name)
                .or_default()
                .insert(format!("{RULES}: {}", alert.name));
        }
    }
    let dashboard: serde_json::Value =
        serde_json::from_str(&read(DASHBOARD)).expect("the dashboard is JSON");
    for expr in dashboard_exprs(&dashboard) {
        for name in metric_names(&expr) {
            used.entry(name)
                .or_default()
                .insert(format!("{DASHBOARD}: {expr}"));
        }
    }
    assert!(used.len() > 20, "too few metrics found: {used:?}");
    let mut missing = Vec::new();
    for (name, places) in &used {
        if !exported.contains_key(name) {
            missing.push(format!("{name} (used by {places:?})"));
        }
    }
    assert!(
        missing.is_empty(),
        "not on the metrics page:\n{}",
        missing.join("\n")
    );
}

#[test]
fn every_alert_is_actionable_and_tested() {
    let rules = alerts(&read(RULES));
    assert!(rules.len() >= 15, "{rules:?}");
    let runbook = read(RUNBOOK);
    let sections: BTreeSet<String> = runbook
        .lines()
        .filter_map(|l| l.strip_prefix("## ").or_else(|| l.strip_prefix("### ")))
        .map(anchor)
        .collect();
    let tests = read(RULE_TESTS);
    let mut seen = BTreeSet::new();
    for alert in &rules {
        let name = &alert.name;
        assert!(seen.insert(name.clone()), "{name} defined twice");
        assert!(!alert.expr.trim().is_empty(), "{name}: no expr");
        let field = |key: &str| {
            alert
                .fields
                .get(key)
                .unwrap_or_else(|| panic!("{name}: no {key}"))
        };
        assert!(
            ["critical", "warning", "info"].contains(&field("severity").as_str()),
            "{name}"
        );
        assert!(field("summary").len() > 20, "{name}: summary too short");
        assert!(
            field("description").len() > 40,
            "{name}: description too short"
        );
        let runbook_ref = field("runbook");
        let section = runbook_ref
            .strip_prefix("docs/runbook.md#")
            .unwrap_or_else(|| {
                panic!("{name}: runbook {runbook_ref} is not docs/runbook.md#<section>")
            });
        assert!(
            sections.contains(section),
            "{name}: {RUNBOOK} has no section #{section} (sections: {sections:?})"
        );
        assert!(
            runbook.contains(&format!("`{name}`")),
            "{name}: not named in {RUNBOOK}"
        );
        // A case that fires it and one that does not: `alertname: X` followed by expected alerts, or by none.
        let (mut fires, mut quiet) = (false, false);
        let mut lines = tests.lines();
        while let Some(line) = lines.next() {
            if line.trim() != format!("- alertname: {name}").as_str()
                && line.trim() != format!("alertname: {name}").as_str()
            {
                continue;
            }
            match lines.next().map(str::trim) {
                Some("exp_alerts: []") => quiet = true,
                Some("exp_alerts:") => fires = true,
                other => panic!("{name}: alertname followed by {other:?}"),
            }
        }
        assert!(fires, "{name}: no unit test in which it fires");
        assert!(quiet, "{name}: no unit test in which it stays quiet");
    }
}

/// Runs promtool with `args`, or says it is skipped.
fn promtool(args: &[&str]) -> Option<String> {
    let out = match std::process::Command::new("promtool")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
    {
        Ok(out) => out,
        Err(_) => return None,
    };
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {}: {said}", args.join(" "));
    Some(said)
}

#[test]
fn promtool_checks_and_tests_the_rules() {
    let Some(checked) = promtool(&["check", "rules", RULES]) else {
        println!("skipped: promtool not found");
        return;
    };
    assert!(checked.contains("SUCCESS"), "{checked}");
    let tested = promtool(&["test", "rules", RULE_TESTS]).expect("promtool ran once");
    assert!(tested.contains("SUCCESS"), "{tested}");

    // The dashboard's queries parse: each as a recording rule, Grafana's variables given values.
    let dashboard: serde_json::Value =
        serde_json::from_str(&read(DASHBOARD)).expect("the dashboard is JSON");
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, expr) in dashboard_exprs(&dashboard).iter().enumerate() {
        let expr = expr
            .replace("$__rate_interval", "5m")
            .replace("$instance", ".*")
            .replace("$partner", ".*");
        let quoted = serde_json::to_string(&expr).expect("a JSON string is YAML");
        rules.push_str(&format!(
            "      - record: dashboard:query_{i}\n        expr: {quoted}\n"
        ));
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("dashboard.rules.yml");
    std::fs::write(&file, rules).expect("write");
    let checked = promtool(&["check", "rules", file.to_str().expect("utf-8 path")])
        .expect("promtool ran once");
    assert!(checked.contains("SUCCESS"), "{checked}");

    // The page the rules read passes Prometheus's own linter, histograms and all.
    let page = dir.path().join("metrics.txt");
    std::fs::write(&page, exported_page()).expect("write");
    let out = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&page).expect("the page"))
        .output()
        .expect("promtool ran before");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {said}"
    );
}
