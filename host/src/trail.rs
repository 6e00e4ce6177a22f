//! The audit trail as a host keeps it: started from `<audit>` before the engine, fed with the engine's decisions
//! ([`TrailSink`]) and the operators' actions ([`operator_action`]), stopped after the engine has settled its calls.

use std::path::Path;

use rtc_audit::{AuditLog, AuditSettings, AuditWriter, Entry};
use rtc_config::RtcConfig;
use rtc_config::services::Backend;
use rtc_engine::audit::{AuditRecord, AuditSink, Audited};
use rtc_engine::service::ServiceKind;
use serde_json::{Value, json};

/// The trail's writer and its recording handle.
pub struct Trail {
    /// Records lines (cheap to clone; never blocks).
    pub log: AuditLog,
    /// Stops the writer thread once everything is recorded.
    pub writer: AuditWriter,
}

/// Starts the trail `<audit>` asks for (`None`: no `file`); a relative file is under `dir` (FreeSWITCH's db
/// directory for the module, the working directory for `rtc-core esl`).
pub fn start(
    config: &RtcConfig,
    dir: Option<&Path>,
) -> Result<Option<Trail>, rtc_audit::AuditError> {
    let Some(audit) = &config.audit else {
        return Ok(None);
    };
    let file = match dir {
        Some(dir) if audit.file.is_relative() => dir.join(&audit.file),
        _ => audit.file.clone(),
    };
    let settings = AuditSettings {
        file,
        max_bytes: audit.max_bytes,
        keep: audit.keep,
        numbers: rtc_services::number_policy(&audit.numbers),
        queue: audit.queue,
    };
    let path = settings.file.display().to_string();
    let (log, writer) = rtc_audit::start(settings)?;
    log::info!("audit trail: {path}");
    Ok(Some(Trail { log, writer }))
}

/// Records an operator's action (`kind`: reload, topup, unblock, load, unload) done through `by` (`api`, `module`,
/// `rtc-core esl`).
pub fn operator_action(
    log: &AuditLog,
    kind: &'static str,
    by: &str,
    partner: Option<&str>,
    asked: Value,
    answered: Value,
) {
    let mut entry = Entry::new(kind, by);
    entry.partner = partner.map(str::to_owned);
    entry.asked = asked;
    entry.answered = answered;
    log.record(entry);
}

/// The engine's end of the trail: each decision as one line, naming the service (and its backend) that answered.
pub struct TrailSink {
    log: AuditLog,
    /// "partner service (local)", ... by [`ServiceKind::index`] order.
    by: Vec<String>,
}

impl TrailSink {
    /// A sink recording into `log`, naming the backends `config` gives each service.
    pub fn new(log: AuditLog, config: &RtcConfig) -> TrailSink {
        let by = ServiceKind::ALL
            .iter()
            .map(|kind| {
                let backend = match config.service(*kind).backend {
                    Backend::Local => "local",
                    Backend::Http => "http",
                };
                format!("{} service ({backend})", kind.name())
            })
            .collect();
        TrailSink { log, by }
    }

    fn by(&self, what: &Audited) -> String {
        match what.service() {
            Some(kind) => {
                let i = ServiceKind::ALL
                    .iter()
                    .position(|k| *k == kind)
                    .unwrap_or(0);
                self.by[i].clone()
            }
            None => "engine".to_owned(),
        }
    }
}

/// What was asked and answered, as the line's `asked` and `answered`.
fn asked_answered(record: &AuditRecord) -> (Value, Value) {
    match &record.what {
        Audited::Partner { source_ip, found } => (
            json!({ "source_ip": source_ip.map(|ip| ip.to_string()) }),
            json!({ "found": found, "partner": record.partner.as_deref() }),
        ),
        Audited::Auth { allowed } => (Value::Null, json!({ "allowed": allowed })),
        Audited::Reservation {
            asked,
            held,
            refused,
        } => (
            json!({ "amount": asked.to_string() }),
            match (held, refused) {
                (Some((id, amount)), _) => json!({ "reservation": id, "held": amount.to_string() }),
                (None, refused) => json!({ "refused": refused }),
            },
        ),
        Audited::Rate(rate) => (
            Value::Null,
            match rate {
                Some(r) => json!({
                    "per_minute": r.per_minute.to_string(),
                    "connect_fee": r.connect_fee.to_string(),
                    "increment_s": r.increment_s,
                    "minimum_s": r.minimum_s,
                }),
                None => json!({ "rate": null }),
            },
        ),
        Audited::Routes(carriers) => (Value::Null, json!({ "carriers": carriers })),
        Audited::ServiceFailed {
            failure, skipped, ..
        } => (
            Value::Null,
            json!({ "failure": failure, "carried_on": skipped }),
        ),
        Audited::Refused { reason, cause } => {
            (Value::Null, json!({ "reason": reason, "cause": cause }))
        }
        Audited::Fraud {
            rule,
            action,
            value,
            limit,
            detail,
        } => (
            Value::Null,
            json!({ "rule": rule, "action": action, "value": value, "limit": limit, "detail": detail }),
        ),
        Audited::Settlement {
            state,
            reservation,
            committed,
            talk_s,
            billed_s,
        } => (
            json!({ "reservation": reservation }),
            json!({
                "state": state,
                "committed": committed.map(|m| m.to_string()),
                "released": reservation.is_some() && committed.is_none(),
                "talk_s": talk_s,
                "billed_s": billed_s,
            }),
        ),
    }
}

impl AuditSink for TrailSink {
    fn record(&mut self, record: AuditRecord) {
        let mut entry = Entry::new(record.what.kind(), self.by(&record.what));
        let (asked, answered) = asked_answered(&record);
        entry.call = Some(record.call.to_string());
        entry.partner = record.partner.as_deref().map(str::to_owned);
        if !record.caller.is_empty() {
            entry.caller = Some(record.caller.to_string());
        }
        entry.destination = Some(record.destination.to_string());
        entry.asked = asked;
        entry.answered = answered;
        self.log.record(entry);
    }
}
