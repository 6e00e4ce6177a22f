//! Fraud rules, decided on the engine thread from counters it keeps: no service round trip, no lock, no I/O.
//!
//! # Layout
//! - [`action`] — what a rule does when it hits ([`FraudAction`]), and the rules' names ([`Rule`]).
//! - [`rules`] — the rules as configured ([`FraudRules`]) and a partner's own overrides ([`PartnerFraud`]).
//! - [`classes`] — destination classes by longest prefix ([`DestClass`], [`ClassTable`]).
//! - [`window`] — money in the rolling hour and day, and the rate of calls to new destinations.
//! - this file — [`Guard`]: the counters per partner and destination, and the checks at each point of a call:
//!   [`Guard::admit`] when its partner is known, [`Guard::reserved`] and [`Guard::spent`] as money moves,
//!   [`Guard::ended`] at its end.
//!
//! The engine asks; the guard answers with a [`Verdict`]: the hits, whether the call is refused, and the live
//! calls to cut when a block hangs them up. The engine carries it out (reason `fraud`, the `rtc_core::fraud`
//! event, the audit trail); the guard only counts and decides.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod action;
pub mod classes;
pub mod rules;
pub mod window;

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;

use compact_str::{CompactString, format_compact};
use foldhash::fast::{FixedState, RandomState};
use rtc_money::Money;
use serde::Serialize;

pub use action::{FraudAction, Rule};
pub use classes::{ClassTable, DestClass};
pub use rules::{Burst, FraudRules, Limit, PartnerFraud, Pumping, ShortCalls};
use window::{BurstMeter, SpendWindow};

/// A partner, as the engine numbers it.
pub type PartnerKey = u32;

/// Most destination digits E.164 allows.
pub const E164_MAX_DIGITS: u8 = 15;

/// Why a destination is not a number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InvalidDestination {
    /// Empty once normalised.
    Empty,
    /// A character that is not a digit, at this byte.
    NotDigits(usize),
    /// More digits than allowed.
    TooLong(usize),
}

impl std::fmt::Display for InvalidDestination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InvalidDestination::Empty => write!(f, "empty destination"),
            InvalidDestination::NotDigits(at) => {
                write!(
                    f,
                    "not a number: a character other than a digit at position {}",
                    at + 1
                )
            }
            InvalidDestination::TooLong(n) => write!(f, "{n} digits, more than allowed"),
        }
    }
}

/// The digits of a destination: one leading `+` dropped; then only digits, at most `max_digits` (0: any length).
pub fn normalize_destination(
    destination: &str,
    max_digits: u8,
) -> Result<&str, InvalidDestination> {
    let digits = destination.strip_prefix('+').unwrap_or(destination);
    if digits.is_empty() {
        return Err(InvalidDestination::Empty);
    }
    if let Some(at) = digits.bytes().position(|b| !b.is_ascii_digit()) {
        return Err(InvalidDestination::NotDigits(
            at + destination.len() - digits.len(),
        ));
    }
    if max_digits != 0 && digits.len() > usize::from(max_digits) {
        return Err(InvalidDestination::TooLong(digits.len()));
    }
    Ok(digits)
}

/// One rule that hit.
#[derive(Clone, Debug, Serialize)]
pub struct Hit {
    /// The rule.
    pub rule: Rule,
    /// What it did.
    pub action: FraudAction,
    /// The partner.
    pub partner: PartnerKey,
    /// The call's destination (digits).
    pub destination: CompactString,
    /// The destination's class, when it has one.
    pub class: Option<CompactString>,
    /// The figure that hit (calls, calls per second, money in units of the account currency).
    pub value: f64,
    /// The most the rule allows.
    pub limit: f64,
    /// The same in words, for the log, the event and `rtc_core fraud`.
    pub detail: CompactString,
    /// Engine time of the hit (ms).
    pub at_ms: u64,
}

/// Which of a blocked partner's live calls a block hangs up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// All of them.
    Partner,
    /// Those to this number.
    Number(CompactString),
    /// Those into this prefix.
    Prefix(CompactString),
    /// Those into this class.
    Class(CompactString),
}

/// Live calls to hang up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cut {
    /// Whose.
    pub partner: PartnerKey,
    /// Which.
    pub scope: Scope,
}

impl Guard {
    /// Whether `destination` falls in `cut`'s scope.
    pub fn in_scope(&self, scope: &Scope, destination: &str) -> bool {
        match scope {
            Scope::Partner => true,
            Scope::Number(n) => destination.strip_prefix('+').unwrap_or(destination) == n.as_str(),
            Scope::Prefix(p) => destination
                .strip_prefix('+')
                .unwrap_or(destination)
                .starts_with(p.as_str()),
            Scope::Class(c) => {
                let n = self
                    .classes
                    .class_of(destination.strip_prefix('+').unwrap_or(destination));
                n != 0 && self.rules.classes[usize::from(n) - 1].name == *c
            }
        }
    }
}

/// What the guard says of a call.
#[derive(Clone, Debug, Default)]
pub struct Verdict {
    /// The rules that hit and are reported (an alert repeated within a minute for the same partner and rule is
    /// only counted, in [`GuardStats`]).
    pub hits: Vec<Hit>,
    /// The call is refused, because of this rule.
    pub refused: Option<Rule>,
    /// The call is refused because its partner is blocked (no new hit).
    pub blocked: bool,
    /// Live calls to hang up now (a block with `block-hangup`).
    pub cut: Option<Cut>,
    /// The destination's class (0: none), for its caps.
    pub class: u8,
}

impl Verdict {
    /// Whether the call may go on.
    pub fn passes(&self) -> bool {
        self.refused.is_none() && !self.blocked
    }
}

/// A call the guard is asked about, once its partner is known.
#[derive(Clone, Copy, Debug)]
pub struct NewCall<'a> {
    /// Its partner.
    pub partner: PartnerKey,
    /// Its destination.
    pub destination: &'a str,
    /// What its reservation will hold.
    pub reserve: Money,
    /// The partner's own settings.
    pub own: Option<&'a PartnerFraud>,
}

/// A call that ended, as the guard counted it.
#[derive(Clone, Copy, Debug)]
pub struct EndedCall<'a> {
    /// Its partner.
    pub partner: PartnerKey,
    /// Its destination.
    pub destination: &'a str,
    /// Whether [`Guard::admit`] let it through (it holds a place in the live counts).
    pub admitted: bool,
    /// What its reservation held (released now).
    pub reserved: Money,
    /// What it cost beyond what was debited while it talked (charged now).
    pub charged: Money,
    /// Whether it was answered, and how long it talked.
    pub answered: bool,
    /// Seconds of talk.
    pub talk_s: u64,
}

/// A partner's block.
#[derive(Clone, Debug, Serialize)]
pub struct Block {
    /// The partner.
    pub partner: PartnerKey,
    /// The rule that blocked it.
    pub rule: Rule,
    /// What it said.
    pub detail: CompactString,
    /// Engine time it started and ends (ms).
    pub since_ms: u64,
    /// Engine time it ends (ms).
    pub until_ms: u64,
    /// New calls refused since.
    pub refused: u64,
}

/// The guard's counters.
#[derive(Clone, Debug, Default, Serialize)]
pub struct GuardStats {
    /// Hits per rule and action: `hits[rule.index()][action.index()]`.
    pub hits: [[u64; 3]; 7],
    /// New calls refused while their partner was blocked.
    pub blocked_refusals: u64,
    /// Partners blocked so far.
    pub blocks: u64,
    /// Times a partner's remembered destinations were forgotten at once (more than `memory-size`).
    pub memory_resets: u64,
}

/// Counters kept per partner.
struct PartnerState {
    spend: SpendWindow,
    /// Money held by the partner's live calls' reservations.
    reserved: i64,
    burst: BurstMeter,
    /// Short answered calls in a row.
    short_run: u32,
    /// Engine time of the last reported hit per rule (ms), for throttling alerts.
    last_report_ms: [u64; 7],
}

impl PartnerState {
    fn new(window: u8) -> Self {
        PartnerState {
            spend: SpendWindow::default(),
            reserved: 0,
            burst: BurstMeter::new(window),
            short_run: 0,
            last_report_ms: [0; 7],
        }
    }
}

/// Told into a prefix's key, so that a prefix and a number of the same digits never share one.
const PREFIX_TAG: u64 = 0x9e37_79b9_7f4a_7c15;

/// How often an alert of the same rule for the same partner is reported (the rest are counted).
const REPORT_EVERY_MS: u64 = 60_000;

/// The fraud rules and their counters.
pub struct Guard {
    rules: FraudRules,
    classes: ClassTable,
    partners: HashMap<PartnerKey, PartnerState, RandomState>,
    /// Per (partner, destination number): its live calls (pumping) and when it was last called (bursts), in one
    /// entry, so that a call's number is one probe.
    dests: HashMap<u64, Dest, Prehashed>,
    /// Live calls per (partner, destination prefix).
    prefixes: HashMap<u64, u32, Prehashed>,
    blocks: HashMap<PartnerKey, Block, RandomState>,
    recent: VecDeque<Hit>,
    stats: GuardStats,
}

/// A destination's (or a prefix's) hash for `partner`, the key of the per-destination maps: one hash per call, and
/// maps that take it as it is ([`Prehashed`]).
fn key(partner: PartnerKey, text: &str) -> u64 {
    FixedState::with_seed(0x5eed_f4a0d).hash_one((partner, text))
}

/// Hashing for maps whose keys are already hashes ([`key`]): the key itself. Hand-written because it is four lines;
/// the keys are foldhash outputs, spread over all 64 bits.
#[derive(Clone, Copy, Default)]
struct KeyIsHash(u64);

impl std::hash::Hasher for KeyIsHash {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used (u64 keys); anything else folds in byte by byte.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Prehashed = std::hash::BuildHasherDefault<KeyIsHash>;

/// One destination number of one partner.
#[derive(Clone, Copy, Default)]
struct Dest {
    /// Its live calls (with the pumping rule).
    live: u32,
    /// The second (since the engine's start) plus one it was last called (with the burst rule); 0: not lately.
    seen: u32,
}

/// Adds `by` (1 or -1) to a live count; a count reaching 0 leaves the map. One probe.
fn bump(map: &mut HashMap<u64, u32, Prehashed>, k: u64, by: i32) -> u32 {
    use std::collections::hash_map::Entry;
    match map.entry(k) {
        Entry::Occupied(mut o) => {
            let n = o.get().saturating_add_signed(by);
            if n == 0 {
                o.remove();
            } else {
                *o.get_mut() = n;
            }
            n
        }
        Entry::Vacant(v) if by > 0 => *v.insert(by as u32),
        Entry::Vacant(_) => 0,
    }
}

fn units(m: Money) -> f64 {
    m.0 as f64 / Money::MICROS_PER_UNIT as f64
}

impl Guard {
    /// A guard with `rules` and no history.
    pub fn new(rules: FraudRules) -> Self {
        Guard {
            classes: ClassTable::build(&rules.classes),
            rules,
            partners: HashMap::default(),
            dests: HashMap::default(),
            prefixes: HashMap::default(),
            blocks: HashMap::default(),
            recent: VecDeque::new(),
            stats: GuardStats::default(),
        }
    }

    /// Takes new rules, keeping the counters and blocks.
    pub fn reconfigure(&mut self, rules: FraudRules) {
        if rules.pumping.as_ref().map(|p| p.prefix_digits)
            != self.rules.pumping.as_ref().map(|p| p.prefix_digits)
        {
            // Counted under other keys (or not at all) from now on: start the live counts afresh. Calls live now are
            // not in them; their ends find nothing to take back.
            self.dests.values_mut().for_each(|d| d.live = 0);
            self.dests.retain(|_, d| d.seen != 0);
            self.prefixes.clear();
        }
        self.classes = ClassTable::build(&rules.classes);
        self.rules = rules;
        while self.recent.len() > self.rules.recent_hits {
            self.recent.pop_front();
        }
    }

    /// The rules in force.
    pub fn rules(&self) -> &FraudRules {
        &self.rules
    }

    /// Whether any rule runs.
    pub fn enabled(&self) -> bool {
        self.rules.enabled
    }

    /// Class `n` (1-based, as in [`Verdict::class`]).
    pub fn class(&self, n: u8) -> Option<&DestClass> {
        usize::from(n)
            .checked_sub(1)
            .and_then(|i| self.rules.classes.get(i))
    }

    /// The counters.
    pub fn stats(&self) -> &GuardStats {
        &self.stats
    }

    /// The latest hits, oldest first.
    pub fn recent(&self) -> impl DoubleEndedIterator<Item = &Hit> {
        self.recent.iter()
    }

    /// Partners blocked now.
    pub fn blocks(&self, now_ms: u64) -> Vec<&Block> {
        let mut list: Vec<&Block> = self
            .blocks
            .values()
            .filter(|b| b.until_ms > now_ms)
            .collect();
        list.sort_by_key(|b| b.since_ms);
        list
    }

    /// Lifts `partner`'s block; the block it had, if any.
    pub fn unblock(&mut self, partner: PartnerKey, now_ms: u64) -> Option<Block> {
        self.blocks.remove(&partner).filter(|b| b.until_ms > now_ms)
    }

    /// Money charged and reserved by `partner` in the rolling hour.
    pub fn spend_hour(&self, partner: PartnerKey, now_ms: u64) -> Money {
        match self.partners.get(&partner) {
            Some(p) => {
                let (hour, _) = p.spend.clone().totals(now_ms);
                Money(hour.0.saturating_add(p.reserved))
            }
            None => Money::ZERO,
        }
    }

    /// Partners with counters.
    pub fn partners(&self) -> impl Iterator<Item = PartnerKey> + '_ {
        self.partners.keys().copied()
    }

    fn state(&mut self, partner: PartnerKey) -> &mut PartnerState {
        let window = self
            .rules
            .burst
            .as_ref()
            .map_or(10, |b| b.window.as_secs().clamp(1, 60) as u8);
        self.partners
            .entry(partner)
            .or_insert_with(|| PartnerState::new(window))
    }

    /// A call whose partner is known: may it go on? Counts it when it may.
    pub fn admit(&mut self, call: NewCall<'_>, now_ms: u64) -> Verdict {
        let mut verdict = Verdict::default();
        if !self.rules.enabled {
            return verdict;
        }
        let partner = call.partner;
        if let Some(block) = self.blocks.get_mut(&partner) {
            if block.until_ms > now_ms {
                block.refused += 1;
                self.stats.blocked_refusals += 1;
                verdict.blocked = true;
                return verdict;
            }
            self.blocks.remove(&partner);
        }
        let dest = call
            .destination
            .strip_prefix('+')
            .unwrap_or(call.destination);
        let class = self.classes.class_of(dest);
        verdict.class = class;

        // Risky destinations.
        if let Some(c) = self.class(class)
            && let Some(action) = c.action
            && !call.own.is_some_and(|o| o.allow.contains(&c.name))
        {
            let name = c.name.clone();
            let detail = || {
                format_compact!(
                    "destination {dest} is in class {name}, not allowed for the partner"
                )
            };
            let scope = || Scope::Class(name.clone());
            self.hit(
                &mut verdict,
                Rule::RiskyDestination,
                action,
                partner,
                dest,
                1.0,
                0.0,
                detail,
                scope,
                now_ms,
            );
        }

        // Spend velocity: charged in the window, held by live calls, and what this call will hold.
        self.spend_check(
            &mut verdict,
            partner,
            dest,
            call.reserve,
            call.own,
            false,
            now_ms,
        );

        // Pumping and bursts: the number's live calls counted and its last call noted at once (one probe), taken
        // back if the call is refused (it holds no place, and its destination is as new as before).
        let number_key = key(partner, dest);
        let second = (now_ms / 1000).min(u64::from(u32::MAX - 1)) as u32 + 1;
        let (counting, remembering) = (self.rules.pumping.is_some(), self.rules.burst.is_some());
        let before = if counting || remembering {
            self.remember_memory(second);
            let d = self.dests.entry(number_key).or_default();
            let before = *d;
            if counting {
                d.live += 1;
            }
            if remembering {
                d.seen = second;
            }
            Some(before)
        } else {
            None
        };
        let mut prefix_key = None;
        if let Some(p) = self.rules.pumping.clone() {
            let live = before.map_or(0, |d| d.live) + 1;
            if p.per_number != 0 && live > p.per_number {
                let detail = || {
                    format_compact!(
                        "{live} live calls to {dest} with this one; most {}",
                        p.per_number
                    )
                };
                let scope = || Scope::Number(dest.into());
                self.hit(
                    &mut verdict,
                    Rule::PumpingNumber,
                    p.action,
                    partner,
                    dest,
                    f64::from(live),
                    f64::from(p.per_number),
                    detail,
                    scope,
                    now_ms,
                );
            }
            let prefix = &dest[..dest.len().min(usize::from(p.prefix_digits))];
            let k = key(partner, prefix) ^ PREFIX_TAG;
            prefix_key = Some(k);
            let live = bump(&mut self.prefixes, k, 1);
            if p.per_prefix != 0 && live > p.per_prefix {
                let detail = || {
                    format_compact!(
                        "{live} live calls into {prefix} with this one; most {}",
                        p.per_prefix
                    )
                };
                let scope = || Scope::Prefix(prefix.into());
                self.hit(
                    &mut verdict,
                    Rule::PumpingPrefix,
                    p.action,
                    partner,
                    dest,
                    f64::from(live),
                    f64::from(p.per_prefix),
                    detail,
                    scope,
                    now_ms,
                );
            }
        }

        // Bursts to destinations the partner has not called within `memory`.
        if let Some(b) = self.rules.burst.clone() {
            let memory_s = b.memory.as_secs().min(u64::from(u32::MAX)) as u32;
            let alpha = 1.0 / b.baseline.as_secs_f64().max(1.0);
            let last = before.map_or(0, |d| d.seen);
            let new_destination = last == 0 || second - last > memory_s;
            let state = self.state(partner);
            if new_destination {
                let baseline = state.burst.baseline;
                let n = state.burst.count(now_ms, alpha);
                let window = state.burst.window_s();
                let threshold = (b.factor * baseline).max(b.min_per_second);
                // The window's average, or this second alone when it is already past: a burst is seen in its
                // first second, before it has filled the window.
                let rate = (f64::from(n) / f64::from(window)).max(f64::from(state.burst.current()));
                if rate > threshold {
                    state.burst.flag();
                    let detail = || {
                        format_compact!(
                            "{n} calls to new destinations in {window} s (up to {rate:.1}/s); the partner's usual is \
                         {baseline:.2}/s, most {threshold:.1}/s"
                        )
                    };
                    self.hit(
                        &mut verdict,
                        Rule::Burst,
                        b.action,
                        partner,
                        dest,
                        rate,
                        threshold,
                        detail,
                        || Scope::Partner,
                        now_ms,
                    );
                }
            }
        }

        if !verdict.passes() {
            if let Some(before) = before {
                use std::collections::hash_map::Entry;
                if let Entry::Occupied(mut o) = self.dests.entry(number_key) {
                    if before.live == 0 && before.seen == 0 {
                        o.remove();
                    } else {
                        *o.get_mut() = before;
                    }
                }
            }
            if let Some(k) = prefix_key {
                bump(&mut self.prefixes, k, -1);
            }
        }
        verdict
    }

    /// Keeps the remembered destinations within `memory-size`: when full, those with no live call and not called
    /// within `memory` are forgotten; when still full, every one with no live call (counted in `memory_resets`).
    fn remember_memory(&mut self, second: u32) {
        let Some(b) = &self.rules.burst else {
            return;
        };
        if self.dests.len() < b.memory_size {
            return;
        }
        let memory_s = b.memory.as_secs().min(u64::from(u32::MAX)) as u32;
        self.dests
            .retain(|_, d| d.live > 0 || (d.seen != 0 && second - d.seen <= memory_s));
        if self.dests.len() >= b.memory_size {
            self.dests.retain(|_, d| d.live > 0);
            self.dests.values_mut().for_each(|d| d.seen = 0);
            self.stats.memory_resets += 1;
        }
    }

    /// Money held for one of `partner`'s calls (its reservation, once made).
    pub fn reserved(&mut self, partner: PartnerKey, amount: Money) {
        if self.rules.enabled {
            let s = self.state(partner);
            s.reserved = s.reserved.saturating_add(amount.0.max(0));
        }
    }

    /// Money charged to `partner` while a call talks (an interval's debit): checks the spend limits.
    pub fn spent(
        &mut self,
        partner: PartnerKey,
        destination: &str,
        amount: Money,
        own: Option<&PartnerFraud>,
        now_ms: u64,
    ) -> Verdict {
        let mut verdict = Verdict::default();
        if !self.rules.enabled || amount <= Money::ZERO {
            return verdict;
        }
        self.state(partner).spend.add(amount, now_ms);
        if self
            .blocks
            .get(&partner)
            .is_some_and(|b| b.until_ms > now_ms)
        {
            return verdict;
        }
        let dest = destination.strip_prefix('+').unwrap_or(destination);
        self.spend_check(&mut verdict, partner, dest, Money::ZERO, own, true, now_ms);
        verdict
    }

    /// The spend rules: what `partner` was charged in the rolling hour and day, plus what its live calls hold, plus
    /// `reserve` (a new call's), against its own most or the rule's. While calls talk (`talking`) there is no call
    /// to refuse: past the limit a `block` blocks (and cuts), anything else is reported as an alert; with `refuse`,
    /// the partner's new calls are refused at admission meanwhile.
    #[allow(clippy::too_many_arguments)]
    fn spend_check(
        &mut self,
        verdict: &mut Verdict,
        partner: PartnerKey,
        dest: &str,
        reserve: Money,
        own: Option<&PartnerFraud>,
        talking: bool,
        now_ms: u64,
    ) {
        if self.rules.spend_hour.is_none() && self.rules.spend_day.is_none() {
            return;
        }
        let state = self.state(partner);
        let (hour, day) = state.spend.totals(now_ms);
        let held = state.reserved.saturating_add(reserve.0.max(0));
        for (rule, spent, limit, own_most) in [
            (
                Rule::SpendHour,
                hour,
                self.rules.spend_hour.clone(),
                own.and_then(|o| o.spend_hour),
            ),
            (
                Rule::SpendDay,
                day,
                self.rules.spend_day.clone(),
                own.and_then(|o| o.spend_day),
            ),
        ] {
            let Some(limit) = limit else { continue };
            let most = own_most.unwrap_or(limit.most);
            let total = Money(spent.0.saturating_add(held));
            if total <= most {
                continue;
            }
            let action = match (talking, limit.action) {
                (true, FraudAction::Block) => FraudAction::Block,
                (true, _) => FraudAction::Alert,
                (false, action) => action,
            };
            let window = match rule {
                Rule::SpendHour => "hour",
                _ => "day",
            };
            let with = if talking { "" } else { " with this call" };
            let detail = || {
                format_compact!(
                    "{total} charged and reserved in the last {window}{with}; most {most}"
                )
            };
            let (value, limit) = (units(total), units(most));
            self.hit(
                verdict,
                rule,
                action,
                partner,
                dest,
                value,
                limit,
                detail,
                || Scope::Partner,
                now_ms,
            );
        }
    }

    /// A call of `partner` ended: its live counts drop, its cost is charged, and a run of short calls is looked at.
    pub fn ended(&mut self, call: EndedCall<'_>, now_ms: u64) -> Verdict {
        let mut verdict = Verdict::default();
        if !self.rules.enabled {
            return verdict;
        }
        let partner = call.partner;
        let dest = call
            .destination
            .strip_prefix('+')
            .unwrap_or(call.destination);
        if call.admitted
            && let Some(p) = &self.rules.pumping
        {
            let prefix = &dest[..dest.len().min(usize::from(p.prefix_digits))];
            let prefix_key = key(partner, prefix) ^ PREFIX_TAG;
            use std::collections::hash_map::Entry;
            if let Entry::Occupied(mut o) = self.dests.entry(key(partner, dest)) {
                let d = o.get_mut();
                d.live = d.live.saturating_sub(1);
                // Kept while the burst rule remembers it.
                if d.live == 0 && d.seen == 0 {
                    o.remove();
                }
            }
            bump(&mut self.prefixes, prefix_key, -1);
        }
        let short = self.rules.short_calls.clone();
        let state = self.state(partner);
        state.reserved = state.reserved.saturating_sub(call.reserved.0.max(0)).max(0);
        if call.charged > Money::ZERO {
            state.spend.add(call.charged, now_ms);
        }
        let Some(short) = short else {
            return verdict;
        };
        if !call.answered {
            return verdict;
        }
        if call.talk_s > short.max_talk.as_secs() {
            state.short_run = 0;
            return verdict;
        }
        state.short_run += 1;
        let run = state.short_run;
        if run >= short.run.max(1) {
            state.short_run = 0;
            if self
                .blocks
                .get(&partner)
                .is_some_and(|b| b.until_ms > now_ms)
            {
                return verdict;
            }
            let detail = || {
                format_compact!(
                    "{run} answered calls in a row talked {} s or less",
                    short.max_talk.as_secs()
                )
            };
            self.hit(
                &mut verdict,
                Rule::ShortCalls,
                short.action,
                partner,
                dest,
                f64::from(run),
                f64::from(short.run),
                detail,
                || Scope::Partner,
                now_ms,
            );
        }
        verdict
    }

    /// Records a hit into `verdict`: counted, kept, and carried out (refusal, block, cut). The words and the scope
    /// are made only when the hit is reported: a burst of alerts past a limit costs a count each.
    #[allow(clippy::too_many_arguments)]
    fn hit(
        &mut self,
        verdict: &mut Verdict,
        rule: Rule,
        action: FraudAction,
        partner: PartnerKey,
        dest: &str,
        value: f64,
        limit: f64,
        detail: impl FnOnce() -> CompactString,
        scope: impl FnOnce() -> Scope,
        now_ms: u64,
    ) {
        self.stats.hits[rule.index()][action.index()] += 1;
        let state = self.state(partner);
        let last = &mut state.last_report_ms[rule.index()];
        // Alerts repeat for every call past a limit: report one a minute per partner and rule; refusals and blocks
        // are each reported.
        let report = action != FraudAction::Alert
            || *last == 0
            || now_ms.saturating_sub(*last) >= REPORT_EVERY_MS;
        if !report {
            return;
        }
        *last = now_ms.max(1);
        let detail = detail();
        let class = self.class(verdict.class).map(|c| c.name.clone());
        let hit = Hit {
            rule,
            action,
            partner,
            destination: dest.into(),
            class,
            value,
            limit,
            detail: detail.clone(),
            at_ms: now_ms,
        };
        match action {
            FraudAction::Alert => {}
            FraudAction::Refuse => {
                verdict.refused.get_or_insert(rule);
            }
            FraudAction::Block => {
                verdict.refused = Some(rule);
                if self
                    .blocks
                    .get(&partner)
                    .is_none_or(|b| b.until_ms <= now_ms)
                {
                    self.stats.blocks += 1;
                    self.blocks.insert(
                        partner,
                        Block {
                            partner,
                            rule,
                            detail,
                            since_ms: now_ms,
                            until_ms: now_ms + self.rules.block_for.as_millis() as u64,
                            refused: 0,
                        },
                    );
                    if self.rules.block_hangup {
                        verdict.cut = Some(Cut {
                            partner,
                            scope: scope(),
                        });
                    }
                }
            }
        }
        if self.recent.len() >= self.rules.recent_hits.max(1) {
            self.recent.pop_front();
        }
        self.recent.push_back(hit.clone());
        verdict.hits.push(hit);
    }
}

#[cfg(test)]
mod tests;
