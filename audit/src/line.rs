//! One audit line: what the host records ([`Entry`]), how the writer stamps and chains it into a JSON line, and
//! how a line is read back and its hash checked.
//!
//! A line is one JSON object, its fields always in this order:
//!
//! ```text
//! {"seq":42,"ts":"2026-05-01T12:00:00.123456Z","kind":"rate","call":"<uuid>","partner":"acme","by":"engine",
//!  "caller":"4420******12","destination":"33*****78","asked":{..},"answered":{..},"prev":"<64 hex>","hash":"<64 hex>"}
//! ```
//!
//! `hash` is the hex SHA-256 of the line's own text without the hash field (the bytes from `{` to the `"prev"`
//! value's closing quote, then `}`), and `prev` is the previous line's `hash` (64 zeros for the first line ever):
//! a changed byte changes the hash, and a removed line leaves a gap in `seq` and a `prev` that matches nothing.

use std::time::SystemTime;

use serde::Serialize;
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::hex;
use crate::numbers::NumberPolicy;

/// The `kind`s of the decisions and actions the trail records (a host may add others).
pub mod kind {
    /// The partner a call was identified as (or none).
    pub const PARTNER: &str = "partner";
    /// The authentication's result.
    pub const AUTH: &str = "auth";
    /// A reservation of the partner's money: made, extended, or refused.
    pub const RESERVATION: &str = "reservation";
    /// The rate found for the destination.
    pub const RATE: &str = "rate";
    /// The routes chosen, in failover order.
    pub const ROUTES: &str = "routes";
    /// A call refused, with its reason and hangup cause.
    pub const REFUSED: &str = "refused";
    /// A fraud rule that fired, and what it did.
    pub const FRAUD: &str = "fraud";
    /// A call's money settled: committed, released, its CDR.
    pub const SETTLEMENT: &str = "settlement";
    /// `rtc_core reload`.
    pub const RELOAD: &str = "reload";
    /// `rtc_core topup`.
    pub const TOPUP: &str = "topup";
    /// `rtc_core unblock`.
    pub const UNBLOCK: &str = "unblock";
    /// The module loaded (or `rtc-core esl` started).
    pub const LOAD: &str = "load";
    /// The module unloading (or `rtc-core esl` stopping).
    pub const UNLOAD: &str = "unload";
}

/// One business decision or operator action, as the host records it. The writer adds `seq`, `ts` (the time of
/// [`crate::AuditLog::record`]), `prev` and `hash`, and writes `caller` and `destination` under the
/// [`NumberPolicy`].
///
/// Numbers belong in `caller` and `destination`. Inside `asked` and `answered`, the values of keys named like a
/// number (see [`NUMBER_KEYS`]) get the policy too, and those of keys named like a secret ([`SECRET_KEYS`]) are
/// written `***`: a safety net, not a licence to put secrets there.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// What was decided or done: one of [`kind`].
    pub kind: &'static str,
    /// The call's UUID, when it concerns a call.
    pub call: Option<String>,
    /// The partner, when known.
    pub partner: Option<String>,
    /// Who decided or asked: `engine`, `api` (fs_cli), `app` (the dialplan app), `module`, `esl`, or the
    /// service that answered (`partner service (http)`, `balance service (local)`, ...).
    pub by: String,
    /// The calling number.
    pub caller: Option<String>,
    /// The called number.
    pub destination: Option<String>,
    /// What was asked (`Null`: nothing to say).
    pub asked: Value,
    /// What was answered or done (`Null`: nothing to say).
    pub answered: Value,
}

impl Entry {
    /// An entry of `kind` by `by`, every other field empty.
    pub fn new(kind: &'static str, by: impl Into<String>) -> Entry {
        Entry {
            kind,
            call: None,
            partner: None,
            by: by.into(),
            caller: None,
            destination: None,
            asked: Value::Null,
            answered: Value::Null,
        }
    }
}

/// Keys (compared without case) inside `asked` and `answered` whose string values are numbers, written under the
/// [`NumberPolicy`].
pub const NUMBER_KEYS: &[&str] = &[
    "caller",
    "callee",
    "destination",
    "number",
    "caller_id_number",
    "destination_number",
    "ani",
    "dnis",
];

/// Parts of keys (compared without case) inside `asked` and `answered` whose values are written `***`.
pub const SECRET_KEYS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "api_key",
    "api-key",
    "apikey",
    "authorization",
];

/// The `prev` of the first line ever.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Where the chain stands: the next line's `seq` and `prev`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Chain {
    /// `seq` of the next line.
    pub next_seq: u64,
    /// `hash` of the last line ([`GENESIS`] before the first).
    pub prev: String,
}

impl Chain {
    /// Before the first line ever.
    pub fn genesis() -> Chain {
        Chain {
            next_seq: 1,
            prev: GENESIS.to_owned(),
        }
    }

    /// After `link`.
    pub fn after(link: &Link) -> Chain {
        Chain {
            next_seq: link.seq + 1,
            prev: link.hash.clone(),
        }
    }
}

/// A line's fields in their written order, without `hash`.
#[derive(Serialize)]
struct Body<'a> {
    seq: u64,
    ts: &'a str,
    kind: &'a str,
    call: Option<&'a str>,
    partner: Option<&'a str>,
    by: &'a str,
    caller: Option<&'a str>,
    destination: Option<&'a str>,
    asked: Scrubbed<'a>,
    answered: Scrubbed<'a>,
    prev: &'a str,
}

/// RFC 3339 in UTC with microseconds.
pub(crate) fn timestamp(at: SystemTime) -> String {
    let ts = jiff::Timestamp::try_from(at).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    format!("{ts:.6}")
}

/// `entry` recorded at `at` as the next line of `chain` (newline included); advances `chain`.
pub(crate) fn render(
    entry: &Entry,
    at: SystemTime,
    chain: &mut Chain,
    numbers: &NumberPolicy,
) -> Vec<u8> {
    let caller = entry.caller.as_deref().map(|n| numbers.apply(n));
    let destination = entry.destination.as_deref().map(|n| numbers.apply(n));
    let ts = timestamp(at);
    let body = Body {
        seq: chain.next_seq,
        ts: &ts,
        kind: entry.kind,
        call: entry.call.as_deref(),
        partner: entry.partner.as_deref(),
        by: &entry.by,
        caller: caller.as_deref(),
        destination: destination.as_deref(),
        asked: Scrubbed {
            value: &entry.asked,
            numbers,
        },
        answered: Scrubbed {
            value: &entry.answered,
            numbers,
        },
        prev: &chain.prev,
    };
    // Serializing strings and `Value`s (whose map keys are strings) into memory cannot fail.
    let mut line = serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec());
    let hash = hex::encode(&Sha256::digest(&line));
    line.pop();
    line.extend_from_slice(b",\"hash\":\"");
    line.extend_from_slice(hash.as_bytes());
    line.extend_from_slice(b"\"}\n");
    chain.next_seq += 1;
    chain.prev = hash;
    line
}

/// A value written with its numbers under the policy and its secrets hidden, at any depth; the entry itself is
/// left as it is (a batch that fails is written again from it).
struct Scrubbed<'a> {
    value: &'a Value,
    numbers: &'a NumberPolicy,
}

impl Serialize for Scrubbed<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let inner = |value| Scrubbed {
            value,
            numbers: self.numbers,
        };
        match self.value {
            Value::Object(map) => {
                let mut out = s.serialize_map(Some(map.len()))?;
                for (key, value) in map {
                    let lower = key.to_ascii_lowercase();
                    if SECRET_KEYS.iter().any(|s| lower.contains(s)) {
                        out.serialize_entry(key, "***")?;
                    } else if let (true, Value::String(n)) =
                        (NUMBER_KEYS.contains(&lower.as_str()), value)
                    {
                        out.serialize_entry(key, &self.numbers.apply(n))?;
                    } else {
                        out.serialize_entry(key, &inner(value))?;
                    }
                }
                out.end()
            }
            Value::Array(items) => {
                let mut out = s.serialize_seq(Some(items.len()))?;
                for value in items {
                    out.serialize_element(&inner(value))?;
                }
                out.end()
            }
            other => other.serialize(s),
        }
    }
}

/// What the chain needs of a line: its `seq`, `prev` and `hash`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Link {
    pub seq: u64,
    pub prev: String,
    pub hash: String,
}

/// Why a line is not a sound audit line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum LineProblem {
    /// Not a JSON object.
    NotJson(String),
    /// A field missing or of the wrong form.
    Shape(&'static str),
    /// The text does not hash to its `hash`: the line was changed.
    Changed { seq: u64 },
}

impl std::fmt::Display for LineProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LineProblem::NotJson(e) => write!(f, "not a JSON object: {e}"),
            LineProblem::Shape(what) => write!(f, "not an audit line: {what}"),
            LineProblem::Changed { seq } => write!(
                f,
                "seq {seq}: the line does not match its hash: it was changed after it was written"
            ),
        }
    }
}

/// The hash field as the writer ends every line with it.
const HASH_FIELD: &str = ",\"hash\":\"";

/// Reads one line (without its newline) and checks its hash against its text.
pub(crate) fn read_link(line: &[u8]) -> Result<Link, LineProblem> {
    let text = std::str::from_utf8(line)
        .map_err(|_| LineProblem::NotJson("not UTF-8 text".into()))?
        .trim_end_matches('\r');
    let value: Value =
        serde_json::from_str(text).map_err(|e| LineProblem::NotJson(e.to_string()))?;
    let object = value
        .as_object()
        .ok_or_else(|| LineProblem::NotJson("not an object".into()))?;
    let seq = object
        .get("seq")
        .and_then(Value::as_u64)
        .filter(|&s| s > 0)
        .ok_or(LineProblem::Shape("no seq (a whole number from 1)"))?;
    let prev = object
        .get("prev")
        .and_then(Value::as_str)
        .filter(|p| hex::is_hash(p))
        .ok_or(LineProblem::Shape("no prev (64 hex characters)"))?;
    let hash = object
        .get("hash")
        .and_then(Value::as_str)
        .filter(|h| hex::is_hash(h))
        .ok_or(LineProblem::Shape("no hash (64 hex characters)"))?;
    // The hash field ends the line, as written; the text before it, closed, is what was hashed.
    let at = text
        .rfind(HASH_FIELD)
        .filter(|&at| text[at + HASH_FIELD.len()..] == format!("{hash}\"}}"))
        .ok_or(LineProblem::Shape("the hash is not the line's last field"))?;
    let mut hasher = Sha256::new();
    hasher.update(&text.as_bytes()[..at]);
    hasher.update(b"}");
    if hex::encode(&hasher.finalize()) != hash {
        return Err(LineProblem::Changed { seq });
    }
    Ok(Link {
        seq,
        prev: prev.to_owned(),
        hash: hash.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Entry {
        Entry {
            call: Some("6f1c".into()),
            partner: Some("acme".into()),
            caller: Some("442071234512".into()),
            destination: Some("33123456789".into()),
            asked: json!({"destination": "33123456789", "api_key": "k", "deep": [{"Password": "p"}]}),
            answered: json!({"rate": "0.010000"}),
            ..Entry::new(kind::RATE, "rating service (local)")
        }
    }

    #[test]
    fn lines_have_fixed_fields_chain_and_check() {
        let mut chain = Chain::genesis();
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_micros(1_777_000_000_123_456);
        let first = render(&sample(), at, &mut chain, &NumberPolicy::Mask);
        let text = std::str::from_utf8(&first).unwrap();
        assert!(text.ends_with("\"}\n"));
        assert!(text.starts_with(
            "{\"seq\":1,\"ts\":\"2026-04-24T03:06:40.123456Z\",\"kind\":\"rate\",\"call\":\"6f1c\",\
             \"partner\":\"acme\",\"by\":\"rating service (local)\",\"caller\":\"4420******12\",\
             \"destination\":\"3312*****89\",\"asked\":{\"destination\":\"3312*****89\",\"api_key\":\"***\",\
             \"deep\":[{\"Password\":\"***\"}]},\"answered\":{\"rate\":\"0.010000\"},\"prev\":\"0000"
        ), "{text}");
        let link = read_link(text.trim_end().as_bytes()).unwrap();
        assert_eq!((link.seq, link.prev.as_str()), (1, GENESIS));
        assert_eq!(chain, Chain::after(&link));
        let second = render(
            &Entry::new(kind::RELOAD, "api"),
            at,
            &mut chain,
            &NumberPolicy::Plain,
        );
        let second = std::str::from_utf8(&second).unwrap().trim_end();
        assert!(second.contains("\"call\":null,\"partner\":null,\"by\":\"api\",\"caller\":null"));
        assert_eq!(read_link(second.as_bytes()).unwrap().prev, link.hash);

        let changed = text.trim_end().replace("acme", "acne");
        assert_eq!(
            read_link(changed.as_bytes()),
            Err(LineProblem::Changed { seq: 1 })
        );
        let reordered = text.trim_end().replace(",\"hash\"", ",\"x\":1,\"hash\"");
        assert_eq!(
            read_link(reordered.as_bytes()),
            Err(LineProblem::Changed { seq: 1 })
        );
        assert!(matches!(
            read_link(b"{\"seq\":1"),
            Err(LineProblem::NotJson(_))
        ));
        assert_eq!(
            read_link(b"{\"seq\":0}"),
            Err(LineProblem::Shape("no seq (a whole number from 1)"))
        );
        let moved = format!(
            "{{\"hash\":\"{}\",\"seq\":1,\"prev\":\"{GENESIS}\"}}",
            link.hash
        );
        assert_eq!(
            read_link(moved.as_bytes()),
            Err(LineProblem::Shape("the hash is not the line's last field"))
        );
    }
}
