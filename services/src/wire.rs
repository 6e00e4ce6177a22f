//! The HTTP services' wire contract: the JSON body sent for each request, and how each answer is read,
//! checked and turned into an [`Outcome`]. `docs/services.md` and `docs/openapi.yaml` describe the same
//! contract for the people implementing the services; keep the three in step.
//!
//! # Choices
//! - Money travels as a decimal string with at most 6 decimals (`"0.012000"`), never a JSON number: a
//!   float would round, and the engine counts in millionths.
//! - Unknown fields in answers are **ignored** (no `deny_unknown_fields`): the services are the operator's
//!   and evolve on their own schedule; a field added to a service must not turn into refused calls. Every
//!   field the engine relies on is **required** — including the nullable ones (`"partner": null` must be
//!   written out), so that an empty `{}` is an error, not a silent "unknown partner".
//! - Every value is range-checked before it reaches a call: a wrong answer becomes
//!   `Outcome::Failed(kind, Error)` and the service's fail mode decides, never a crash or a bad bridge.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use compact_str::CompactString;
use serde::{Deserialize, Serialize, Serializer};

use rtc_config::limits::{self, MAX_MONEY, MAX_NAME_LEN, MAX_ROUTES};
use rtc_engine::domain::{Cdr, Money, PartnerId, PartnerInfo, Rate, Reservation, Route};
use rtc_engine::fraud::PartnerFraud;
use rtc_engine::id::CallId;
use rtc_engine::service::{Outcome, ServiceKind, ServiceRequest};

/// Longest rate prefix, in characters.
pub const MAX_PREFIX_LEN: usize = 32;
/// Billing increment bounds, in seconds.
pub const INCREMENT_RANGE: std::ops::RangeInclusive<u16> = 1..=3600;
/// Longest minimum billed duration, in seconds.
pub const MAX_MINIMUM_S: u16 = 3600;

/// One HTTP operation: which service, which path under its URL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// Partner service: who is calling.
    IdentifyPartner,
    /// Auth service: may the partner place the call.
    Authenticate,
    /// Balance service: hold money for a call.
    Reserve,
    /// Balance service: debit a talking call's next interval.
    Extend,
    /// Balance service: settle a reservation with the call's cost.
    Commit,
    /// Balance service: give a reservation back.
    Release,
    /// Rating service: the call's price.
    Rate,
    /// Routing service: where the call goes.
    Route,
    /// CDR service: the call's record.
    Cdr,
}

impl Operation {
    /// The operation that carries `request`.
    pub fn of(request: &ServiceRequest) -> Operation {
        match request {
            ServiceRequest::IdentifyPartner { .. } => Operation::IdentifyPartner,
            ServiceRequest::Authenticate { .. } => Operation::Authenticate,
            ServiceRequest::ReserveBalance { .. } => Operation::Reserve,
            ServiceRequest::ExtendBalance { .. } => Operation::Extend,
            ServiceRequest::CommitBalance { .. } => Operation::Commit,
            ServiceRequest::ReleaseBalance { .. } => Operation::Release,
            ServiceRequest::Rate { .. } => Operation::Rate,
            ServiceRequest::Route { .. } => Operation::Route,
            ServiceRequest::WriteCdr(_) => Operation::Cdr,
        }
    }

    /// The service the operation belongs to.
    pub const fn service(self) -> ServiceKind {
        match self {
            Operation::IdentifyPartner => ServiceKind::Partner,
            Operation::Authenticate => ServiceKind::Auth,
            Operation::Reserve | Operation::Extend | Operation::Commit | Operation::Release => {
                ServiceKind::Balance
            }
            Operation::Rate => ServiceKind::Rating,
            Operation::Route => ServiceKind::Routing,
            Operation::Cdr => ServiceKind::Cdr,
        }
    }

    /// Appended to the service's URL: the balance service has four operations, the others one.
    pub const fn path(self) -> &'static str {
        match self {
            Operation::Reserve => "/reserve",
            Operation::Extend => "/extend",
            Operation::Commit => "/commit",
            Operation::Release => "/release",
            _ => "",
        }
    }

    /// Settlement operations must not be lost: retried, then spooled.
    pub const fn is_settlement(self) -> bool {
        matches!(
            self,
            Operation::Commit | Operation::Release | Operation::Cdr
        )
    }

    /// The operation's name: its path under the service's URL, and its spool and metric label.
    pub const fn name(self) -> &'static str {
        match self {
            Operation::IdentifyPartner => "identify_partner",
            Operation::Authenticate => "authenticate",
            Operation::Reserve => "reserve",
            Operation::Extend => "extend",
            Operation::Commit => "commit",
            Operation::Release => "release",
            Operation::Rate => "rate",
            Operation::Route => "route",
            Operation::Cdr => "cdr",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

fn money<S: Serializer>(m: &Money, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(m)
}

fn opt_money<S: Serializer>(m: &Option<Money>, s: S) -> Result<S::Ok, S::Error> {
    match m {
        Some(m) => s.collect_str(m),
        None => s.serialize_none(),
    }
}

#[derive(Serialize)]
struct PartnerRequest {
    call_id: CallId,
    source_ip: Option<IpAddr>,
}

#[derive(Serialize)]
struct AuthRequest<'a> {
    call_id: CallId,
    partner_id: PartnerId,
    source_ip: Option<IpAddr>,
    caller: &'a str,
    destination: &'a str,
    auth_user: &'a str,
}

#[derive(Serialize)]
struct ReserveRequest {
    call_id: CallId,
    partner_id: PartnerId,
    #[serde(serialize_with = "money")]
    amount: Money,
    /// The reservation should free itself this many seconds from now unless extended or settled.
    expires_in_s: u64,
}

#[derive(Serialize)]
struct ExtendRequest {
    call_id: CallId,
    partner_id: PartnerId,
    reservation_id: u64,
    /// The amount first reserved, as in a commit.
    #[serde(serialize_with = "money")]
    reserved: Money,
    #[serde(serialize_with = "money")]
    debit: Money,
    #[serde(serialize_with = "money")]
    unit: Money,
    paid_s: u32,
    expires_in_s: u64,
}

#[derive(Serialize)]
struct CommitRequest {
    call_id: CallId,
    partner_id: PartnerId,
    reservation_id: u64,
    #[serde(serialize_with = "money")]
    reserved: Money,
    #[serde(serialize_with = "money")]
    cost: Money,
}

#[derive(Serialize)]
struct ReleaseRequest {
    call_id: CallId,
    partner_id: PartnerId,
    reservation_id: u64,
    #[serde(serialize_with = "money")]
    amount: Money,
}

#[derive(Serialize)]
struct DestinationRequest<'a> {
    call_id: CallId,
    partner_id: PartnerId,
    destination: &'a str,
}

#[derive(Serialize)]
struct CdrRequest<'a> {
    call_id: CallId,
    caller: &'a str,
    destination: &'a str,
    source_ip: Option<IpAddr>,
    partner: Option<&'a str>,
    final_state: &'a str,
    reason: Option<&'a str>,
    hangup_cause: String,
    hangup_cause_code: u16,
    carrier: Option<&'a str>,
    #[serde(serialize_with = "opt_money")]
    rate_per_minute: Option<Money>,
    setup_us: Option<u64>,
    talk_s: u64,
    billed_s: u64,
    #[serde(serialize_with = "money")]
    cost: Money,
    started_at_us: u64,
    ended_at_us: u64,
}

fn cdr_body(cdr: &Cdr) -> CdrRequest<'_> {
    CdrRequest {
        call_id: cdr.uuid,
        caller: &cdr.caller,
        destination: &cdr.destination,
        source_ip: cdr.source_ip,
        partner: cdr.partner.as_deref(),
        final_state: cdr.final_state,
        reason: cdr.reason,
        hangup_cause: cdr.hangup_cause.to_string(),
        hangup_cause_code: cdr.hangup_cause.0,
        carrier: cdr.carrier.as_deref(),
        rate_per_minute: cdr.rate_per_minute,
        setup_us: cdr.setup_us,
        talk_s: cdr.talk_s,
        billed_s: cdr.billed_s,
        cost: cdr.cost,
        started_at_us: cdr.started_at_us,
        ended_at_us: cdr.ended_at_us,
    }
}

/// The JSON body for `request`.
pub fn encode(request: &ServiceRequest) -> serde_json::Value {
    let value = match request {
        ServiceRequest::IdentifyPartner { call, source_ip } => {
            serde_json::to_value(PartnerRequest {
                call_id: *call,
                source_ip: *source_ip,
            })
        }
        ServiceRequest::Authenticate {
            call,
            partner,
            source_ip,
            caller,
            destination,
            auth_user,
        } => serde_json::to_value(AuthRequest {
            call_id: *call,
            partner_id: *partner,
            source_ip: *source_ip,
            caller,
            destination,
            auth_user,
        }),
        ServiceRequest::ReserveBalance {
            call,
            partner,
            amount,
            ttl,
            ..
        } => serde_json::to_value(ReserveRequest {
            call_id: *call,
            partner_id: *partner,
            amount: *amount,
            expires_in_s: ttl.as_secs(),
        }),
        ServiceRequest::ExtendBalance {
            call,
            partner,
            reservation,
            debit,
            unit,
            paid_s,
            ttl,
            ..
        } => serde_json::to_value(ExtendRequest {
            call_id: *call,
            partner_id: *partner,
            reservation_id: reservation.id,
            reserved: reservation.amount,
            debit: *debit,
            unit: *unit,
            paid_s: *paid_s,
            expires_in_s: ttl.as_secs(),
        }),
        ServiceRequest::CommitBalance {
            call,
            partner,
            reservation,
            cost,
        } => serde_json::to_value(CommitRequest {
            call_id: *call,
            partner_id: *partner,
            reservation_id: reservation.id,
            reserved: reservation.amount,
            cost: *cost,
        }),
        ServiceRequest::ReleaseBalance {
            call,
            partner,
            reservation,
        } => serde_json::to_value(ReleaseRequest {
            call_id: *call,
            partner_id: *partner,
            reservation_id: reservation.id,
            amount: reservation.amount,
        }),
        ServiceRequest::Rate {
            call,
            partner,
            destination,
        }
        | ServiceRequest::Route {
            call,
            partner,
            destination,
        } => serde_json::to_value(DestinationRequest {
            call_id: *call,
            partner_id: *partner,
            destination,
        }),
        ServiceRequest::WriteCdr(cdr) => serde_json::to_value(cdr_body(cdr)),
    };
    // Serialising these plain structs into a Value cannot fail (no maps with non-string keys, no I/O).
    value.unwrap_or(serde_json::Value::Null)
}

/// Why an answer was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum Invalid {
    /// Not JSON, or not the shape of the contract (missing or mistyped field).
    #[error("answer is not the expected JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Well-formed, but a value is out of range.
    #[error("answer has an invalid value: {0}")]
    Value(String),
}

fn invalid(text: impl Into<String>) -> Invalid {
    Invalid::Value(text.into())
}

/// A money string from an answer: decimal, at most 6 decimals, `0 ≤ value ≤ MAX_MONEY`.
fn parse_money(field: &str, text: &str) -> Result<Money, Invalid> {
    let m = Money::parse(text).ok_or_else(|| {
        invalid(format!(
            "{field}: {text:?} is not a decimal amount with at most 6 decimals"
        ))
    })?;
    if m < Money::ZERO || m > MAX_MONEY {
        return Err(invalid(format!(
            "{field}: {text} is outside 0..={MAX_MONEY}"
        )));
    }
    Ok(m)
}

/// A money string that may be negative (what a partner can still reserve): at most `MAX_MONEY` either way.
fn parse_signed_money(field: &str, text: &str) -> Result<Money, Invalid> {
    let m = Money::parse(text).ok_or_else(|| {
        invalid(format!(
            "{field}: {text:?} is not a decimal amount with at most 6 decimals"
        ))
    })?;
    if m.0.unsigned_abs() > MAX_MONEY.0.unsigned_abs() {
        return Err(invalid(format!(
            "{field}: {text} is outside -{MAX_MONEY}..={MAX_MONEY}"
        )));
    }
    Ok(m)
}

/// The optional `available` of a balance answer: what the partner can still reserve, maybe negative.
fn available(text: Option<&str>) -> Result<Option<Money>, Invalid> {
    text.map(|a| parse_signed_money("available", a)).transpose()
}

/// A name or label: 1..=max bytes, no control characters (see [`limits::check_text`]).
fn check_text(field: &str, text: &str, max: usize) -> Result<CompactString, Invalid> {
    limits::check_text(field, text, max).map_err(Invalid::Value)
}

/// Makes a nullable field required: `null` is accepted, a missing field is not.
fn nullable<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d)
}

#[derive(Deserialize)]
struct PartnerAnswer {
    #[serde(deserialize_with = "nullable")]
    partner: Option<PartnerBody>,
}

#[derive(Deserialize)]
struct PartnerBody {
    id: PartnerId,
    name: String,
    max_concurrent: u32,
    /// Optional: services written before it existed keep working (0: no limit).
    #[serde(default)]
    max_cps: u32,
    /// Optional: most one call may cost (null or absent: no cap).
    #[serde(default)]
    max_call_cost: Option<String>,
    /// Optional: risky destination classes (`<fraud>` `<class>` names) the partner may call.
    #[serde(default)]
    fraud_allow: Vec<String>,
    /// Optional: the partner's own most per rolling hour / day for the spend rules.
    #[serde(default)]
    max_spend_hour: Option<String>,
    #[serde(default)]
    max_spend_day: Option<String>,
}

#[derive(Deserialize)]
struct AuthAnswer {
    allowed: bool,
    /// Logged with the call, for operators.
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Deserialize)]
struct ReserveAnswer {
    reserved: bool,
    #[serde(default)]
    reservation_id: Option<u64>,
    #[serde(default)]
    amount: Option<String>,
    /// Optional: what the partner can still reserve afterwards (for `rtc_max_duration`).
    #[serde(default)]
    available: Option<String>,
}

#[derive(Deserialize)]
struct ExtendAnswer {
    extended: bool,
    #[serde(default)]
    granted: Option<String>,
    #[serde(default)]
    available: Option<String>,
}

#[derive(Deserialize)]
struct RateAnswer {
    #[serde(deserialize_with = "nullable")]
    rate: Option<RateBody>,
}

#[derive(Deserialize)]
struct RateBody {
    per_minute: String,
    increment: u16,
    minimum: u16,
    prefix: String,
    /// Optional: charged once when the call is answered.
    #[serde(default)]
    connect_fee: Option<String>,
}

#[derive(Deserialize)]
struct RouteAnswer {
    routes: Vec<RouteBody>,
}

#[derive(Deserialize)]
struct RouteBody {
    carrier: String,
    dial_string: String,
    cost_per_minute: String,
}

/// A partner's own fraud settings from the partner service's answer (`None`: none given).
fn partner_fraud(p: &PartnerBody) -> Result<Option<Box<PartnerFraud>>, Invalid> {
    let mut allow = Vec::with_capacity(p.fraud_allow.len());
    for class in &p.fraud_allow {
        allow.push(check_text("partner.fraud_allow", class, MAX_NAME_LEN)?);
    }
    let money = |field: &'static str, value: &Option<String>| {
        value.as_deref().map(|m| parse_money(field, m)).transpose()
    };
    let fraud = PartnerFraud {
        allow,
        spend_hour: money("partner.max_spend_hour", &p.max_spend_hour)?,
        spend_day: money("partner.max_spend_day", &p.max_spend_day)?,
    };
    Ok((!fraud.is_empty()).then(|| Box::new(fraud)))
}

/// Reads a 2xx answer to `operation`. Settlement answers (commit, release, CDR) are not read: any 2xx is
/// success, and they yield no outcome (`Ok(None)`).
pub fn decode(operation: Operation, call: CallId, body: &[u8]) -> Result<Option<Outcome>, Invalid> {
    let outcome = match operation {
        Operation::IdentifyPartner => {
            let answer: PartnerAnswer = serde_json::from_slice(body)?;
            match answer.partner {
                None => Outcome::PartnerUnknown,
                Some(p) => Outcome::PartnerFound(PartnerInfo {
                    id: p.id,
                    name: check_text("partner.name", &p.name, MAX_NAME_LEN)?,
                    max_concurrent: p.max_concurrent,
                    max_cps: p.max_cps,
                    max_call_cost: p
                        .max_call_cost
                        .as_deref()
                        .map(|m| parse_money("partner.max_call_cost", m))
                        .transpose()?,
                    fraud: partner_fraud(&p)?,
                }),
            }
        }
        Operation::Authenticate => {
            let answer: AuthAnswer = serde_json::from_slice(body)?;
            if answer.allowed {
                Outcome::AuthOk
            } else {
                if let Some(reason) = answer.reason {
                    log::info!(
                        "call {call}: auth service denied the call: {}",
                        truncate(&reason, 200)
                    );
                }
                Outcome::AuthDenied
            }
        }
        Operation::Reserve => {
            let answer: ReserveAnswer = serde_json::from_slice(body)?;
            if !answer.reserved {
                Outcome::BalanceInsufficient
            } else {
                let id = answer
                    .reservation_id
                    .ok_or_else(|| invalid("reservation_id: required when reserved is true"))?;
                let text = answer
                    .amount
                    .ok_or_else(|| invalid("amount: required when reserved is true"))?;
                let amount = parse_money("amount", &text)?;
                if amount == Money::ZERO {
                    return Err(invalid(
                        "amount: a reservation must be above zero (answer reserved:false instead)",
                    ));
                }
                let available = available(answer.available.as_deref())?;
                Outcome::BalanceReserved {
                    reservation: Reservation { id, amount },
                    available,
                }
            }
        }
        Operation::Extend => {
            let answer: ExtendAnswer = serde_json::from_slice(body)?;
            if !answer.extended {
                Outcome::BalanceInsufficient
            } else {
                let text = answer
                    .granted
                    .ok_or_else(|| invalid("granted: required when extended is true"))?;
                let granted = parse_money("granted", &text)?;
                let available = available(answer.available.as_deref())?;
                Outcome::BalanceExtended { granted, available }
            }
        }
        Operation::Rate => {
            let answer: RateAnswer = serde_json::from_slice(body)?;
            match answer.rate {
                None => Outcome::RateNone,
                Some(r) => Outcome::RateFound(check_rate(r)?),
            }
        }
        Operation::Route => {
            let answer: RouteAnswer = serde_json::from_slice(body)?;
            if answer.routes.len() > MAX_ROUTES {
                return Err(invalid(format!(
                    "routes: {} routes, at most {MAX_ROUTES} are accepted",
                    answer.routes.len()
                )));
            }
            if answer.routes.is_empty() {
                Outcome::RoutesNone
            } else {
                let routes = answer
                    .routes
                    .iter()
                    .enumerate()
                    .map(|(i, r)| check_route(i, r))
                    .collect::<Result<Vec<Route>, Invalid>>()?;
                Outcome::RoutesFound(Arc::from(routes))
            }
        }
        Operation::Commit | Operation::Release | Operation::Cdr => return Ok(None),
    };
    Ok(Some(outcome))
}

fn check_rate(r: RateBody) -> Result<Rate, Invalid> {
    let per_minute = parse_money("rate.per_minute", &r.per_minute)?;
    if !INCREMENT_RANGE.contains(&r.increment) {
        return Err(invalid(format!(
            "rate.increment: {} is outside {}..={} seconds",
            r.increment,
            INCREMENT_RANGE.start(),
            INCREMENT_RANGE.end()
        )));
    }
    if r.minimum > MAX_MINIMUM_S {
        return Err(invalid(format!(
            "rate.minimum: {} is above {MAX_MINIMUM_S} seconds",
            r.minimum
        )));
    }
    let digits = r.prefix.strip_prefix('+').unwrap_or(&r.prefix);
    if r.prefix.len() > MAX_PREFIX_LEN || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(format!(
            "rate.prefix: {:?} is not up to {MAX_PREFIX_LEN} digits",
            truncate(&r.prefix, 40)
        )));
    }
    let connect_fee = match r.connect_fee.as_deref() {
        Some(fee) => parse_money("rate.connect_fee", fee)?,
        None => Money::ZERO,
    };
    Ok(Rate {
        per_minute,
        connect_fee,
        increment_s: r.increment,
        minimum_s: r.minimum,
        // At most MAX_PREFIX_LEN (32) bytes: fits.
        prefix_len: r.prefix.len() as u8,
    })
}

/// Checks a dial string: FreeSWITCH must get exactly one bridge target per route (see
/// [`limits::check_dial_string`]).
pub fn check_dial_string(field: &str, dial: &str) -> Result<CompactString, Invalid> {
    limits::check_dial_string(field, dial).map_err(Invalid::Value)
}

fn check_route(i: usize, r: &RouteBody) -> Result<Route, Invalid> {
    Ok(Route {
        carrier: check_text(&format!("routes[{i}].carrier"), &r.carrier, MAX_NAME_LEN)?,
        dial_string: check_dial_string(&format!("routes[{i}].dial_string"), &r.dial_string)?,
        cost_per_minute: parse_money(&format!("routes[{i}].cost_per_minute"), &r.cost_per_minute)?,
    })
}

/// At most `max` characters of `text`, for messages.
pub fn truncate(text: &str, max: usize) -> String {
    let mut out: String = text.chars().take(max).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc_config::limits::MAX_DIAL_STRING_LEN;
    use rtc_engine::HangupCause;

    fn call() -> CallId {
        CallId::from_u128(0xabc)
    }

    #[test]
    fn request_bodies_follow_the_contract() {
        let body = encode(&ServiceRequest::IdentifyPartner {
            call: call(),
            source_ip: Some("203.0.113.7".parse().unwrap()),
        });
        assert_eq!(
            body,
            serde_json::json!({"call_id": "00000000-0000-0000-0000-000000000abc", "source_ip": "203.0.113.7"})
        );
        let body = encode(&ServiceRequest::CommitBalance {
            call: call(),
            partner: 4,
            reservation: Reservation {
                id: 99,
                amount: Money(1_000_000),
            },
            cost: Money(12_000),
        });
        assert_eq!(
            body,
            serde_json::json!({"call_id": "00000000-0000-0000-0000-000000000abc", "partner_id": 4,
                "reservation_id": 99, "reserved": "1.000000", "cost": "0.012000"})
        );
        let cdr = Cdr {
            uuid: call(),
            caller: "100".into(),
            destination: "4420".into(),
            source_ip: None,
            partner: Some("acme".into()),
            final_state: "COMPLETED",
            reason: None,
            hangup_cause: HangupCause::NORMAL_CLEARING,
            carrier: None,
            rate_per_minute: Some(Money(12_000)),
            setup_us: Some(900),
            talk_s: 61,
            billed_s: 66,
            cost: Money(13_200),
            started_at_us: 1,
            ended_at_us: 2,
        };
        let body = encode(&ServiceRequest::WriteCdr(Box::new(cdr)));
        assert_eq!(body["hangup_cause"], "NORMAL_CLEARING");
        assert_eq!(body["hangup_cause_code"], 16);
        assert_eq!(body["cost"], "0.013200");
        assert_eq!(body["rate_per_minute"], "0.012000");
        assert_eq!(body["carrier"], serde_json::Value::Null);
    }

    fn ok(op: Operation, body: &str) -> Outcome {
        decode(op, call(), body.as_bytes()).unwrap().unwrap()
    }

    fn bad(op: Operation, body: &str) -> String {
        decode(op, call(), body.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn partner_answers() {
        assert_eq!(
            ok(
                Operation::IdentifyPartner,
                r#"{"partner":{"id":7,"name":"acme","max_concurrent":30},"extra":1}"#
            ),
            Outcome::PartnerFound(PartnerInfo {
                id: 7,
                name: "acme".into(),
                max_concurrent: 30,
                max_cps: 0,
                max_call_cost: None,
                fraud: None,
            })
        );
        assert_eq!(
            ok(
                Operation::IdentifyPartner,
                r#"{"partner":{"id":7,"name":"acme","max_concurrent":0,"max_call_cost":"25.00"}}"#
            ),
            Outcome::PartnerFound(PartnerInfo {
                id: 7,
                name: "acme".into(),
                max_concurrent: 0,
                max_cps: 0,
                max_call_cost: Some(Money(25_000_000)),
                fraud: None,
            })
        );
        assert_eq!(
            ok(Operation::IdentifyPartner, r#"{"partner":null}"#),
            Outcome::PartnerUnknown
        );
        assert!(bad(Operation::IdentifyPartner, "{}").contains("missing field `partner`"));
        assert!(
            bad(
                Operation::IdentifyPartner,
                r#"{"partner":{"id":-1,"name":"a","max_concurrent":1}}"#
            )
            .contains("expected JSON")
        );
        assert!(
            bad(
                Operation::IdentifyPartner,
                r#"{"partner":{"id":1,"name":"a\nb","max_concurrent":1}}"#
            )
            .contains("control character")
        );
        assert!(
            bad(
                Operation::IdentifyPartner,
                r#"{"partner":{"id":1,"name":"","max_concurrent":1}}"#
            )
            .contains("partner.name")
        );
        assert!(bad(Operation::IdentifyPartner, "<html>").contains("expected JSON"));
    }

    #[test]
    fn auth_and_balance_answers() {
        assert_eq!(
            ok(Operation::Authenticate, r#"{"allowed":true}"#),
            Outcome::AuthOk
        );
        assert_eq!(
            ok(
                Operation::Authenticate,
                r#"{"allowed":false,"reason":"ip not allowed"}"#
            ),
            Outcome::AuthDenied
        );
        assert!(bad(Operation::Authenticate, r#"{"allowed":"yes"}"#).contains("expected JSON"));
        assert_eq!(
            ok(
                Operation::Reserve,
                r#"{"reserved":true,"reservation_id":12,"amount":"1.5"}"#
            ),
            Outcome::BalanceReserved {
                reservation: Reservation {
                    id: 12,
                    amount: Money(1_500_000)
                },
                available: None,
            }
        );
        assert_eq!(
            ok(
                Operation::Reserve,
                r#"{"reserved":true,"reservation_id":12,"amount":"1.5","available":"-2.25"}"#
            ),
            Outcome::BalanceReserved {
                reservation: Reservation {
                    id: 12,
                    amount: Money(1_500_000)
                },
                available: Some(Money(-2_250_000)),
            }
        );
        assert_eq!(
            ok(Operation::Reserve, r#"{"reserved":false}"#),
            Outcome::BalanceInsufficient
        );
        for body in [
            r#"{"reserved":true,"amount":"1.0"}"#,
            r#"{"reserved":true,"reservation_id":1}"#,
            r#"{"reserved":true,"reservation_id":1,"amount":"-1.0"}"#,
            r#"{"reserved":true,"reservation_id":1,"amount":"0"}"#,
            r#"{"reserved":true,"reservation_id":1,"amount":"1000000.000001"}"#,
            r#"{"reserved":true,"reservation_id":1,"amount":"0.0000001"}"#,
            r#"{"reserved":true,"reservation_id":1,"amount":1.0}"#,
        ] {
            assert!(
                decode(Operation::Reserve, call(), body.as_bytes()).is_err(),
                "{body}"
            );
        }
        assert_eq!(decode(Operation::Commit, call(), b"").unwrap(), None);
    }

    #[test]
    fn extend_answers() {
        assert_eq!(
            ok(
                Operation::Extend,
                r#"{"extended":true,"granted":"0.120000","available":"10"}"#
            ),
            Outcome::BalanceExtended {
                granted: Money(120_000),
                available: Some(Money(10_000_000))
            }
        );
        assert_eq!(
            ok(Operation::Extend, r#"{"extended":false}"#),
            Outcome::BalanceInsufficient
        );
        for body in [
            r#"{"extended":true}"#,
            r#"{"extended":true,"granted":"-1"}"#,
            r#"{"extended":true,"granted":0.12}"#,
            r#"{"granted":"1"}"#,
        ] {
            assert!(
                decode(Operation::Extend, call(), body.as_bytes()).is_err(),
                "{body}"
            );
        }
        let body = encode(&ServiceRequest::ExtendBalance {
            call: call(),
            partner: 4,
            reservation: Reservation {
                id: 99,
                amount: Money(1_000_000),
            },
            debit: Money(720_000),
            unit: Money(1_200),
            paid_s: 60,
            context: Box::default(),
            ttl: std::time::Duration::from_secs(180),
        });
        assert_eq!(
            body,
            serde_json::json!({"call_id": "00000000-0000-0000-0000-000000000abc", "partner_id": 4,
                "reservation_id": 99, "reserved": "1.000000", "debit": "0.720000", "unit": "0.001200", "paid_s": 60,
                "expires_in_s": 180})
        );
    }

    #[test]
    fn rate_answers() {
        assert_eq!(
            ok(
                Operation::Rate,
                r#"{"rate":{"per_minute":"0.012000","increment":6,"minimum":0,"prefix":"4420"}}"#
            ),
            Outcome::RateFound(Rate {
                per_minute: Money(12_000),
                connect_fee: Money::ZERO,
                increment_s: 6,
                minimum_s: 0,
                prefix_len: 4
            })
        );
        assert_eq!(ok(Operation::Rate, r#"{"rate":null}"#), Outcome::RateNone);
        let rate = |per: &str, inc: i64, min: i64, prefix: &str| {
            format!(
                r#"{{"rate":{{"per_minute":"{per}","increment":{inc},"minimum":{min},"prefix":"{prefix}"}}}}"#
            )
        };
        assert!(bad(Operation::Rate, &rate("0.01", 0, 0, "44")).contains("increment"));
        assert!(bad(Operation::Rate, &rate("0.01", 3601, 0, "44")).contains("increment"));
        assert!(
            decode(
                Operation::Rate,
                call(),
                rate("0.01", 3600, 3600, "+44").as_bytes()
            )
            .is_ok()
        );
        assert!(bad(Operation::Rate, &rate("0.01", 6, 3601, "44")).contains("minimum"));
        assert!(bad(Operation::Rate, &rate("-0.01", 6, 0, "44")).contains("outside"));
        assert!(bad(Operation::Rate, &rate("0.01", 6, 0, "44a")).contains("prefix"));
        assert!(bad(Operation::Rate, &rate("0.01", 6, 0, &"4".repeat(33))).contains("prefix"));
        assert!(bad(Operation::Rate, &rate("0.01", 70000, 0, "4")).contains("expected JSON"));
    }

    #[test]
    fn route_answers() {
        let got = ok(
            Operation::Route,
            r#"{"routes":[{"carrier":"a","dial_string":"sofia/gateway/a/4420","cost_per_minute":"0.005"}]}"#,
        );
        let Outcome::RoutesFound(routes) = got else {
            panic!("{got:?}")
        };
        assert_eq!(routes[0].dial_string, "sofia/gateway/a/4420");
        assert_eq!(routes[0].cost_per_minute, Money(5_000));
        assert_eq!(
            ok(Operation::Route, r#"{"routes":[]}"#),
            Outcome::RoutesNone
        );
        assert!(bad(Operation::Route, r#"{"routes":null}"#).contains("expected JSON"));
        let route = r#"{"carrier":"a","dial_string":"sofia/gateway/a/1","cost_per_minute":"0"}"#;
        let many = format!(r#"{{"routes":[{}]}}"#, vec![route; 17].join(","));
        assert!(bad(Operation::Route, &many).contains("at most 16"));
        let sixteen = format!(r#"{{"routes":[{}]}}"#, vec![route; 16].join(","));
        assert!(decode(Operation::Route, call(), sixteen.as_bytes()).is_ok());
        for dial in [
            r"sofia/gateway/a/1\nhangup",
            r"sofia/gateway/a/1\r",
            "sofia/gateway/a/1|sofia/gateway/b/1",
            "",
        ] {
            let body = format!(
                r#"{{"routes":[{{"carrier":"a","dial_string":"{dial}","cost_per_minute":"0"}}]}}"#
            );
            assert!(
                bad(Operation::Route, &body).contains("routes[0].dial_string"),
                "{dial}"
            );
        }
        let long = "x".repeat(MAX_DIAL_STRING_LEN + 1);
        let body = format!(
            r#"{{"routes":[{{"carrier":"a","dial_string":"{long}","cost_per_minute":"0"}}]}}"#
        );
        assert!(bad(Operation::Route, &body).contains("outside 1..=1024"));
    }

    proptest::proptest! {
        /// Any bytes at all give an outcome or an error, never a panic.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            for op in [Operation::IdentifyPartner, Operation::Authenticate, Operation::Reserve,
                       Operation::Rate, Operation::Route] {
                let _ = decode(op, call(), &bytes);
            }
        }
    }
}
