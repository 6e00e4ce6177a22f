//! Behind a SIP load balancer: a call's original source address, taken from a header the balancer adds, and
//! believed only when the call came from one of the operator's trusted proxies.
//!
//! Partners are identified by the address a call comes from. Behind a balancer (Kamailio or OpenSIPS dispatching to
//! several FreeSWITCH nodes) every call comes from the balancer, so the balancer passes the caller's address on in a
//! header of its own (`X-Source-IP: <caller>`, or `X-Forwarded-For`). A header is text anyone can write: it is
//! believed only from a transport source that is a trusted proxy, and counted and warned about (a spoofing attempt)
//! from anyone else, whose call is identified by its transport source as it would be without this rule.
//!
//! Both hosts use it the same way: the FreeSWITCH module (its event handler and its dialplan app) and the ESL host's
//! intake read the header where FreeSWITCH puts it — the channel variable `sip_h_<name>`, which mod_sofia sets from an
//! INVITE's `X-...` and `P-...` headers ([`SourceHeader`]) — and ask [`ProxyTrust::judge`] for the call's source.
//!
//! # Layout
//! - [`TrustedProxies`]: the balancers' addresses and networks (`trusted-proxies`).
//! - [`SourceHeader`]: the header's name (`source-header`) and the channel variables FreeSWITCH copies it into.
//! - [`ProxyTrust`]: both; [`ProxyTrust::judge`] is the decision, a pure function.
//! - [`Verdict`], [`Refusal`], [`Outcome`]: what was decided, and why a trusted proxy's header was not believed.
//! - [`Reporter`]: counters by outcome and warnings rate-limited so that a flood cannot fill the log.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use ipnet::IpNet;
use serde::Serialize;

/// The addresses and networks of the SIP proxies (load balancers) whose source header is believed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    /// Networks; a bare address is its own /32 or /128.
    nets: Vec<IpNet>,
}

impl TrustedProxies {
    /// Parses a list of addresses and CIDRs separated by commas or white space (`10.0.0.5, 10.1.0.0/24 2001:db8::/64`);
    /// host bits of a CIDR are ignored, as in the partners table. Empty text is an empty list. The error names the
    /// entry that is neither.
    pub fn parse(text: &str) -> Result<TrustedProxies, String> {
        let mut nets = Vec::new();
        for entry in text
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|e| !e.is_empty())
        {
            let net = match entry.parse::<IpNet>() {
                Ok(net) => net.trunc(),
                Err(_) => match entry.parse::<IpAddr>() {
                    Ok(ip) => IpNet::from(ip.to_canonical()),
                    Err(_) => return Err(format!("{entry:?} is not an address or a CIDR")),
                },
            };
            if !nets.contains(&net) {
                nets.push(net);
            }
        }
        Ok(TrustedProxies { nets })
    }

    /// No proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// Whether `ip` is one of them (an IPv4-mapped IPv6 address counts as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|n| n.contains(&ip))
    }
}

impl fmt::Display for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, n) in self.nets.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            if n.prefix_len() == n.max_prefix_len() {
                write!(f, "{}", n.addr())?;
            } else {
                write!(f, "{n}")?;
            }
        }
        Ok(())
    }
}

/// The SIP header a trusted proxy writes the caller's address in, e.g. `X-Source-IP` or `X-Forwarded-For`.
///
/// mod_sofia copies an INVITE's `X-...` and `P-...` headers into channel variables `sip_h_<name>` (the name as the
/// INVITE spells it; channel variables are looked up without regard to case), and a second header of the same name
/// into `sip_h_<name>-1`. Other headers reach the channel only as `sip_i_...` with the profile's
/// `parse-all-invite-headers`, in another form: they are not accepted here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceHeader {
    /// The header's name, as configured.
    name: String,
}

/// Longest header name accepted.
pub const MAX_HEADER_NAME: usize = 64;

impl SourceHeader {
    /// Checks a header name: an RFC 3261 token starting with `X-` or `P-` (either case), at most
    /// [`MAX_HEADER_NAME`] characters. The error says what is wrong and why.
    pub fn parse(text: &str) -> Result<SourceHeader, String> {
        let name = text.trim();
        let token = |c: char| c.is_ascii_alphanumeric() || "-.!%*_+`'~".contains(c);
        if name.is_empty() || name.len() > MAX_HEADER_NAME || !name.chars().all(token) {
            return Err(format!(
                "{name:?} is not a SIP header name (letters, digits and -.!%*_+`'~, at most {MAX_HEADER_NAME})"
            ));
        }
        let prefix = name.get(..2).unwrap_or("");
        if !(prefix.eq_ignore_ascii_case("X-") || prefix.eq_ignore_ascii_case("P-"))
            || name.len() < 3
        {
            return Err(format!(
                "{name:?}: FreeSWITCH passes only X-... and P-... headers of an INVITE on to the channel (as \
                 sip_h_<name>), so the module could never read it; have the balancer write an X- header such as \
                 X-Source-IP"
            ));
        }
        Ok(SourceHeader {
            name: name.to_owned(),
        })
    }

    /// The header's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The channel variable mod_sofia copies the (first) header into: `sip_h_<name>`.
    pub fn variable(&self) -> String {
        format!("sip_h_{}", self.name)
    }

    /// The channel variable of a second header of the same name: `sip_h_<name>-1`. Its presence means the INVITE
    /// carried the header twice, e.g. the caller's own and the one the balancer appended.
    pub fn repeated_variable(&self) -> String {
        format!("sip_h_{}-1", self.name)
    }
}

impl fmt::Display for SourceHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// The operator's rule: which proxies are trusted, and the header they write the caller's address in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyTrust {
    /// Transport sources whose header is believed.
    pub trusted: TrustedProxies,
    /// The header.
    pub header: SourceHeader,
}

/// Why a trusted proxy's header was not believed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The header, or the entry that counts in a list, is empty.
    Empty,
    /// Not an IP address.
    NotAnAddress,
    /// An address no call comes from: unspecified, multicast or broadcast.
    NotUnicast,
    /// The INVITE carried the header more than once (mod_sofia keeps the first, the caller's if the balancer appended
    /// its own after it).
    Repeated,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::Empty => "empty",
            Refusal::NotAnAddress => "not an IP address",
            Refusal::NotUnicast => "not a unicast address",
            Refusal::Repeated => {
                "the header appears more than once in the INVITE (the first may be the caller's own: have the \
                 balancer remove it before adding its own)"
            }
        })
    }
}

/// What [`ProxyTrust::judge`] decided about a new call's source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict<'a> {
    /// Not from a trusted proxy, no header: identified by its transport source, as without this rule.
    Direct,
    /// From a trusted proxy, whose header names the call's original source.
    Believed {
        /// The caller's address, from the header.
        original: IpAddr,
        /// The proxy (the transport source).
        proxy: IpAddr,
    },
    /// From a trusted proxy without the header: identified by the proxy's own address.
    Absent {
        /// The proxy.
        proxy: IpAddr,
    },
    /// From a trusted proxy whose header could not be believed: identified by the proxy's own address.
    Refused {
        /// The proxy.
        proxy: IpAddr,
        /// The header's value.
        value: &'a str,
        /// What is wrong with it.
        why: Refusal,
    },
    /// Not from a trusted proxy, yet carrying the header: ignored (identified by its transport source) and counted.
    Spoofed {
        /// Where the call really came from.
        transport: IpAddr,
        /// The header's value.
        value: &'a str,
    },
}

impl Verdict<'_> {
    /// The address the call is identified by: the original source when believed, else the transport source.
    pub fn source(&self, transport: IpAddr) -> IpAddr {
        match self {
            Verdict::Believed { original, .. } => *original,
            _ => transport,
        }
    }

    /// What is counted of it (nothing for a call that has nothing to do with proxies).
    pub fn outcome(&self) -> Option<Outcome> {
        match self {
            Verdict::Direct => None,
            Verdict::Believed { .. } => Some(Outcome::Believed),
            Verdict::Absent { .. } => Some(Outcome::Absent),
            Verdict::Refused { .. } => Some(Outcome::Refused),
            Verdict::Spoofed { .. } => Some(Outcome::Spoofed),
        }
    }
}

/// The outcomes counted: the label of `rtc_module_source_header_total` and the ESL host's counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A trusted proxy's header, believed.
    Believed,
    /// A trusted proxy's call without the header.
    Absent,
    /// A trusted proxy's header, not believed (see [`Refusal`]).
    Refused,
    /// The header from a source that is not a trusted proxy: ignored.
    Spoofed,
}

impl Outcome {
    /// Every outcome, in counter order.
    pub const ALL: [Outcome; 4] = [
        Outcome::Believed,
        Outcome::Absent,
        Outcome::Refused,
        Outcome::Spoofed,
    ];

    /// Its name in metrics and reports.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Believed => "believed",
            Outcome::Absent => "absent",
            Outcome::Refused => "refused",
            Outcome::Spoofed => "spoofed",
        }
    }
}

impl ProxyTrust {
    /// The source of a new call that came from `transport`, whose [`SourceHeader`] variable holds `header` (`None`:
    /// absent), and whose repeated-header variable was present (`repeated`).
    ///
    /// From a trusted proxy, the header is a single address (`X-Source-IP: 192.0.2.10`) or a comma-separated list as
    /// `X-Forwarded-For` carries: the list is read from the right, the end the trusted proxy wrote, and the first
    /// entry that is not itself a trusted proxy is the caller (every entry trusted: the leftmost). The entries left of
    /// it are what the caller or untrusted hops wrote, never read. An entry may be `a.b.c.d`, `a.b.c.d:port`, an IPv6
    /// address, `[v6]` or `[v6]:port`. Anything else in the entry that counts is refused, not guessed at.
    pub fn judge<'a>(
        &self,
        transport: IpAddr,
        header: Option<&'a str>,
        repeated: bool,
    ) -> Verdict<'a> {
        let transport = transport.to_canonical();
        if !self.trusted.contains(transport) {
            return match header {
                Some(value) => Verdict::Spoofed { transport, value },
                None => Verdict::Direct,
            };
        }
        let proxy = transport;
        let Some(value) = header else {
            return Verdict::Absent { proxy };
        };
        let refused = |why| Verdict::Refused { proxy, value, why };
        if repeated {
            return refused(Refusal::Repeated);
        }
        let mut leftmost = None;
        for entry in value.rsplit(',') {
            let ip = match entry_address(entry) {
                Ok(ip) => ip,
                Err(why) => return refused(why),
            };
            if !self.trusted.contains(ip) {
                return Verdict::Believed {
                    original: ip,
                    proxy,
                };
            }
            leftmost = Some(ip);
        }
        match leftmost {
            Some(original) => Verdict::Believed { original, proxy },
            None => refused(Refusal::Empty),
        }
    }
}

/// One entry of the header: an address, with or without port and brackets.
fn entry_address(entry: &str) -> Result<IpAddr, Refusal> {
    let entry = entry.trim_matches(|c: char| c.is_whitespace() || c == '"');
    if entry.is_empty() {
        return Err(Refusal::Empty);
    }
    let ip = entry
        .parse::<IpAddr>()
        .or_else(|_| entry.parse::<SocketAddr>().map(|s| s.ip()))
        .or_else(|_| {
            entry
                .strip_prefix('[')
                .and_then(|e| e.strip_suffix(']'))
                .ok_or(Refusal::NotAnAddress)?
                .parse::<IpAddr>()
                .map_err(|_| Refusal::NotAnAddress)
        })
        .map_err(|_| Refusal::NotAnAddress)?
        .to_canonical();
    let broadcast = matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
    if ip.is_unspecified() || ip.is_multicast() || broadcast {
        return Err(Refusal::NotUnicast);
    }
    Ok(ip)
}

/// Counts by [`Outcome`], as read at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SourceCounts {
    /// Trusted proxies' headers believed.
    pub believed: u64,
    /// Trusted proxies' calls without the header.
    pub absent: u64,
    /// Trusted proxies' headers refused.
    pub refused: u64,
    /// Headers from sources that are not trusted proxies, ignored.
    pub spoofed: u64,
}

impl SourceCounts {
    /// The count of `outcome`.
    pub fn get(&self, outcome: Outcome) -> u64 {
        match outcome {
            Outcome::Believed => self.believed,
            Outcome::Absent => self.absent,
            Outcome::Refused => self.refused,
            Outcome::Spoofed => self.spoofed,
        }
    }
}

/// What [`Reporter::record`] did about a verdict, besides counting it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logged {
    /// Nothing to say (a call that has nothing to do with proxies).
    Nothing,
    /// A line at debug level (believed, absent).
    Debug,
    /// A warning (refused, spoofed).
    Warned,
    /// A warning held back by the rate limit; counted, and said with the next warning let through.
    Suppressed,
}

/// Counts verdicts and warns about the ones an operator must see (spoofed, refused) — at most
/// [`WARNINGS_PER_MINUTE`] a minute after a burst of as many, each one saying how many were held back since the
/// previous — so that a flood of forged headers cannot fill the log. Usable from many threads at once (FreeSWITCH's
/// event dispatch threads): atomics, and `governor`'s lock-free rate limiter.
pub struct Reporter {
    /// One counter per [`Outcome`], in [`Outcome::ALL`] order.
    counts: [AtomicU64; 4],
    /// Warnings let through; made on first use so that a reporter can be a `static`.
    limiter: OnceLock<DefaultDirectRateLimiter>,
    /// Warnings held back since the last one let through.
    suppressed: AtomicU64,
}

/// Warnings let through per minute, and at once after a quiet spell.
pub const WARNINGS_PER_MINUTE: u32 = 10;

impl fmt::Debug for Reporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reporter")
            .field("counts", &self.counts())
            .field("suppressed", &self.suppressed.load(Ordering::Relaxed))
            .finish()
    }
}

impl Default for Reporter {
    fn default() -> Self {
        Reporter::new()
    }
}

impl Reporter {
    /// A reporter with nothing counted, warning at most [`WARNINGS_PER_MINUTE`] times a minute.
    pub const fn new() -> Reporter {
        Reporter {
            counts: [const { AtomicU64::new(0) }; 4],
            limiter: OnceLock::new(),
            suppressed: AtomicU64::new(0),
        }
    }

    /// A reporter warning at most as `quota` allows (tests).
    pub fn with_quota(quota: Quota) -> Reporter {
        let r = Reporter::new();
        let _ = r.limiter.set(RateLimiter::direct(quota));
        r
    }

    /// Zeroes the counters (a module load starts afresh).
    pub fn reset(&self) {
        for c in &self.counts {
            c.store(0, Ordering::Relaxed);
        }
        self.suppressed.store(0, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn counts(&self) -> SourceCounts {
        let n = |o: Outcome| self.counts[o as usize].load(Ordering::Relaxed);
        SourceCounts {
            believed: n(Outcome::Believed),
            absent: n(Outcome::Absent),
            refused: n(Outcome::Refused),
            spoofed: n(Outcome::Spoofed),
        }
    }

    /// Counts `verdict` on the new call `call` and logs it: believed and absent at debug level, refused and spoofed as
    /// rate-limited warnings naming the call, the transport source and the header's value.
    pub fn record(
        &self,
        call: &dyn fmt::Display,
        header: &SourceHeader,
        verdict: &Verdict<'_>,
    ) -> Logged {
        let Some(outcome) = verdict.outcome() else {
            return Logged::Nothing;
        };
        self.counts[outcome as usize].fetch_add(1, Ordering::Relaxed);
        match outcome {
            Outcome::Believed | Outcome::Absent => {
                log::debug!("{}", message(call, header, verdict));
                Logged::Debug
            }
            Outcome::Refused | Outcome::Spoofed => {
                let limiter = self.limiter.get_or_init(|| {
                    RateLimiter::direct(Quota::per_minute(
                        NonZeroU32::new(WARNINGS_PER_MINUTE).unwrap_or(NonZeroU32::MIN),
                    ))
                });
                if limiter.check().is_err() {
                    self.suppressed.fetch_add(1, Ordering::Relaxed);
                    return Logged::Suppressed;
                }
                let held = self.suppressed.swap(0, Ordering::Relaxed);
                let tail = match held {
                    0 => String::new(),
                    n => format!(
                        " ({n} more such warnings held back since the previous one; at most {WARNINGS_PER_MINUTE} a \
                         minute)"
                    ),
                };
                log::warn!("{}{tail}", message(call, header, verdict));
                Logged::Warned
            }
        }
    }
}

/// A header value as a log shows it: quoted, control characters escaped, at most 80 characters.
pub fn shown(value: &str) -> String {
    const MOST: usize = 80;
    match value.char_indices().nth(MOST) {
        Some((cut, _)) => format!("{:?}... ({} bytes)", &value[..cut], value.len()),
        None => format!("{value:?}"),
    }
}

/// What the log says about `verdict` on call `call`.
pub fn message(call: &dyn fmt::Display, header: &SourceHeader, verdict: &Verdict<'_>) -> String {
    match verdict {
        Verdict::Direct => format!("call {call}: not from a trusted proxy, no {header} header"),
        Verdict::Believed { original, proxy } => {
            format!(
                "call {call}: source {original}, from the {header} header of trusted proxy {proxy}"
            )
        }
        Verdict::Absent { proxy } => format!(
            "call {call}: from trusted proxy {proxy} without a {header} header: identified by the proxy's own \
             address"
        ),
        Verdict::Refused { proxy, value, why } => format!(
            "call {call}: trusted proxy {proxy} sent {header}: {}: {why}; not believed: the call is identified by the \
             proxy's own address {proxy} (normally no partner's: unknown_partner). Check what the balancer writes in \
             {header}",
            shown(value)
        ),
        Verdict::Spoofed { transport, value } => format!(
            "call {call}: {header}: {} from {transport}, which is not a trusted proxy: ignored (a spoofing \
             attempt?); the call is identified by its transport source {transport}",
            shown(value)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn trust(proxies: &str) -> ProxyTrust {
        ProxyTrust {
            trusted: TrustedProxies::parse(proxies).expect("proxies"),
            header: SourceHeader::parse("X-Source-IP").expect("header"),
        }
    }

    #[test]
    fn trusted_proxies_are_addresses_and_networks() {
        let t =
            TrustedProxies::parse(" 10.0.0.5,10.1.0.9/24\n2001:db8::/64  ::1 ,").expect("parse");
        assert_eq!(t.to_string(), "10.0.0.5, 10.1.0.0/24, 2001:db8::/64, ::1");
        for yes in [
            "10.0.0.5",
            "10.1.0.200",
            "2001:db8::7",
            "::1",
            "::ffff:10.0.0.5",
        ] {
            assert!(t.contains(ip(yes)), "{yes}");
        }
        for no in ["10.0.0.6", "10.1.1.1", "2001:db8:1::1", "127.0.0.1"] {
            assert!(!t.contains(ip(no)), "{no}");
        }
        assert!(TrustedProxies::parse("").expect("empty").is_empty());
        assert!(TrustedProxies::parse(" , ").expect("empty").is_empty());
        let e = TrustedProxies::parse("10.0.0.1, lb1.example").unwrap_err();
        assert!(
            e.contains("\"lb1.example\" is not an address or a CIDR"),
            "{e}"
        );
        assert!(TrustedProxies::parse("10.0.0.0/33").is_err());
        // An IPv4-mapped address given as a proxy is its IPv4 address.
        assert!(
            TrustedProxies::parse("::ffff:192.0.2.1")
                .expect("mapped")
                .contains(ip("192.0.2.1"))
        );
    }

    #[test]
    fn source_headers_are_x_or_p_headers() {
        let h = SourceHeader::parse(" X-Source-IP ").expect("header");
        assert_eq!(h.name(), "X-Source-IP");
        assert_eq!(h.variable(), "sip_h_X-Source-IP");
        assert_eq!(h.repeated_variable(), "sip_h_X-Source-IP-1");
        for ok in ["x-forwarded-for", "P-Source-IP", "X-Real.IP"] {
            assert!(SourceHeader::parse(ok).is_ok(), "{ok}");
        }
        for (bad, says) in [
            ("", "not a SIP header name"),
            ("X Source", "not a SIP header name"),
            ("X-Source:", "not a SIP header name"),
            ("Forwarded", "only X-... and P-..."),
            ("X-", "only X-... and P-..."),
            ("Via", "only X-... and P-..."),
        ] {
            let e = SourceHeader::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        assert!(SourceHeader::parse(&format!("X-{}", "a".repeat(MAX_HEADER_NAME))).is_err());
    }

    #[test]
    fn a_trusted_proxys_header_is_believed() {
        let t = trust("127.0.0.1 10.0.0.0/24 2001:db8:1b::/48");
        let believed =
            |transport: &str, value: &str| match t.judge(ip(transport), Some(value), false) {
                Verdict::Believed { original, proxy } => {
                    assert_eq!(proxy, ip(transport).to_canonical());
                    original
                }
                other => panic!("{transport} {value}: {other:?}"),
            };
        assert_eq!(believed("127.0.0.1", "192.0.2.10"), ip("192.0.2.10"));
        assert_eq!(believed("10.0.0.7", " 192.0.2.10 "), ip("192.0.2.10"));
        assert_eq!(believed("10.0.0.7", "192.0.2.10:5060"), ip("192.0.2.10"));
        assert_eq!(believed("10.0.0.7", "2001:db8:a::5"), ip("2001:db8:a::5"));
        assert_eq!(believed("10.0.0.7", "[2001:db8:a::5]"), ip("2001:db8:a::5"));
        assert_eq!(
            believed("10.0.0.7", "[2001:db8:a::5]:5060"),
            ip("2001:db8:a::5")
        );
        assert_eq!(believed("10.0.0.7", "::ffff:192.0.2.10"), ip("192.0.2.10"));
        // IPv6 balancer, and an IPv4-mapped transport source.
        assert_eq!(believed("2001:db8:1b::2", "192.0.2.10"), ip("192.0.2.10"));
        assert_eq!(believed("::ffff:10.0.0.7", "192.0.2.10"), ip("192.0.2.10"));
        // X-Forwarded-For: read from the right; trusted hops are skipped; the caller's own entries are never read.
        assert_eq!(
            believed("10.0.0.7", "203.0.113.66, 192.0.2.10"),
            ip("192.0.2.10")
        );
        assert_eq!(
            believed("10.0.0.7", "garbage, 192.0.2.10, 10.0.0.9"),
            ip("192.0.2.10")
        );
        assert_eq!(believed("10.0.0.7", "10.0.0.8, 10.0.0.9"), ip("10.0.0.8"));
        assert_eq!(
            t.judge(ip("10.0.0.7"), Some("192.0.2.10"), false)
                .source(ip("10.0.0.7")),
            ip("192.0.2.10")
        );
    }

    #[test]
    fn a_trusted_proxys_call_without_the_header_is_the_proxys() {
        let t = trust("127.0.0.1");
        let v = t.judge(ip("127.0.0.1"), None, false);
        assert_eq!(
            v,
            Verdict::Absent {
                proxy: ip("127.0.0.1")
            }
        );
        assert_eq!(v.source(ip("127.0.0.1")), ip("127.0.0.1"));
        assert_eq!(v.outcome(), Some(Outcome::Absent));
    }

    #[test]
    fn a_trusted_proxys_unusable_header_is_refused() {
        let t = trust("10.0.0.0/24");
        let proxy = ip("10.0.0.7");
        for (value, why) in [
            ("", Refusal::Empty),
            ("  ", Refusal::Empty),
            ("192.0.2.10,", Refusal::Empty),
            ("not-an-ip", Refusal::NotAnAddress),
            ("192.0.2", Refusal::NotAnAddress),
            ("192.0.2.10/24", Refusal::NotAnAddress),
            ("192.0.2.10, garbage", Refusal::NotAnAddress),
            ("0.0.0.0", Refusal::NotUnicast),
            ("::", Refusal::NotUnicast),
            ("255.255.255.255", Refusal::NotUnicast),
            ("224.0.0.1", Refusal::NotUnicast),
        ] {
            let v = t.judge(proxy, Some(value), false);
            assert_eq!(v, Verdict::Refused { proxy, value, why }, "{value:?}");
            assert_eq!(v.source(proxy), proxy, "identified by the proxy");
        }
        // Twice in the INVITE: the first may be the caller's own.
        assert_eq!(
            t.judge(proxy, Some("192.0.2.10"), true),
            Verdict::Refused {
                proxy,
                value: "192.0.2.10",
                why: Refusal::Repeated
            }
        );
    }

    #[test]
    fn the_header_from_anyone_else_is_ignored() {
        let t = trust("127.0.0.1");
        for transport in ["127.0.0.2", "192.0.2.200", "2001:db8::1"] {
            let v = t.judge(ip(transport), Some("192.0.2.10"), false);
            assert_eq!(
                v,
                Verdict::Spoofed {
                    transport: ip(transport),
                    value: "192.0.2.10"
                }
            );
            assert_eq!(v.source(ip(transport)), ip(transport));
            assert_eq!(
                t.judge(ip(transport), Some("x"), true).outcome(),
                Some(Outcome::Spoofed)
            );
            assert_eq!(t.judge(ip(transport), None, false), Verdict::Direct);
            assert_eq!(Verdict::Direct.outcome(), None);
        }
    }

    #[test]
    fn warnings_name_call_source_and_value_and_are_rate_limited() {
        let header = SourceHeader::parse("X-Source-IP").expect("header");
        let spoofed = Verdict::Spoofed {
            transport: ip("127.0.0.2"),
            value: "192.0.2.10\nforged line",
        };
        let text = message(&"c-1", &header, &spoofed);
        assert!(
            text.starts_with(
                "call c-1: X-Source-IP: \"192.0.2.10\\nforged line\" from 127.0.0.2, which is not a trusted proxy"
            ),
            "{text}"
        );
        let long = "1".repeat(500);
        assert!(
            shown(&long).ends_with("... (500 bytes)"),
            "{}",
            shown(&long)
        );
        let refused = Verdict::Refused {
            proxy: ip("10.0.0.7"),
            value: "junk",
            why: Refusal::NotAnAddress,
        };
        let text = message(&"c-2", &header, &refused);
        assert!(
            text.contains(
                "trusted proxy 10.0.0.7 sent X-Source-IP: \"junk\": not an IP address; not believed"
            ) && text.contains("unknown_partner"),
            "{text}"
        );

        // Three at once, then one per hour: the fourth and fifth are held back, counted all the same.
        let quota = Quota::with_period(Duration::from_secs(3600))
            .expect("period")
            .allow_burst(NonZeroU32::new(3).expect("3"));
        let r = Reporter::with_quota(quota);
        let logged: Vec<Logged> = (0..5).map(|_| r.record(&"c", &header, &spoofed)).collect();
        assert_eq!(
            logged,
            [
                Logged::Warned,
                Logged::Warned,
                Logged::Warned,
                Logged::Suppressed,
                Logged::Suppressed
            ]
        );
        assert_eq!(r.record(&"c", &header, &refused), Logged::Suppressed);
        let believed = Verdict::Believed {
            original: ip("192.0.2.10"),
            proxy: ip("10.0.0.7"),
        };
        assert_eq!(r.record(&"c", &header, &believed), Logged::Debug);
        assert_eq!(r.record(&"c", &header, &Verdict::Direct), Logged::Nothing);
        let c = r.counts();
        assert_eq!((c.spoofed, c.refused, c.believed, c.absent), (5, 1, 1, 0));
        assert_eq!(r.suppressed.load(Ordering::Relaxed), 3);
        for o in Outcome::ALL {
            assert_eq!(c.get(o), [1, 0, 1, 5][o as usize], "{}", o.name());
        }
        r.reset();
        assert_eq!(r.counts(), SourceCounts::default());
    }
}
