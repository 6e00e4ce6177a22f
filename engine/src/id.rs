//! Call identifiers: FreeSWITCH channel UUIDs held as 16 bytes.

use std::fmt;
use std::str::FromStr;

/// A FreeSWITCH channel UUID (`Unique-ID`), stored as its 16 bytes rather than a 36-byte string so that
/// registry keys stay small and hash fast.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct CallId([u8; 16]);

/// Why a text is not a channel UUID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a channel UUID (want 8-4-4-4-12 hex digits): {0:?}")]
pub struct BadCallId(pub String);

impl CallId {
    /// Builds an id from raw bytes (tests, simulators).
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        CallId(bytes)
    }

    /// Builds an id from a number: handy for simulators and tests that need many distinct calls.
    pub const fn from_u128(n: u128) -> Self {
        CallId(n.to_be_bytes())
    }

    /// The UUID of this call's outbound leg for route attempt `attempt` (0 for the first route): hosts place
    /// each route's leg with it (`origination_uuid`), so the engine knows which route a leg carries without
    /// being told, and a failed attempt with no leg at all can still be reported as that leg's hangup. Derived,
    /// so a replay gives the same one; its first bytes (`b1d6e...` over the call's own) keep it apart from the
    /// call's UUID, and it differs for each of the 256 attempts. Version and variant are the call's.
    pub const fn leg(self, attempt: u8) -> CallId {
        let mut b = self.0;
        b[0] ^= 0xB1;
        b[1] ^= 0xD6;
        b[2] ^= 0xE0 | (attempt & 0x0F);
        b[3] ^= attempt;
        CallId(b)
    }

    /// The route attempt whose leg (by [`CallId::leg`]) is `leg`, among the first `attempts`.
    pub fn attempt_of(self, leg: CallId, attempts: usize) -> Option<u8> {
        (0..attempts.min(256)).find_map(|i| (self.leg(i as u8) == leg).then_some(i as u8))
    }

    /// The UUID's 16 bytes.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// Parses the canonical hyphenated form FreeSWITCH writes (`a1b2c3d4-...`), either case.
    /// Works on bytes so that it never allocates: it runs on FreeSWITCH's event threads.
    pub fn parse(text: &str) -> Result<Self, BadCallId> {
        let b = text.as_bytes();
        if b.len() != 36 || b[8] != b'-' || b[13] != b'-' || b[18] != b'-' || b[23] != b'-' {
            return Err(BadCallId(truncate(text)));
        }
        let mut out = [0u8; 16];
        let mut n = 0;
        let mut i = 0;
        while i < 36 {
            if matches!(i, 8 | 13 | 18 | 23) {
                i += 1;
                continue;
            }
            let hi = hex(b[i]).ok_or_else(|| BadCallId(truncate(text)))?;
            let lo = hex(b[i + 1]).ok_or_else(|| BadCallId(truncate(text)))?;
            out[n] = (hi << 4) | lo;
            n += 1;
            i += 2;
        }
        Ok(CallId(out))
    }

    /// Writes the canonical lower-case hyphenated form into `buf` without allocating.
    pub fn encode<'a>(&self, buf: &'a mut [u8; 36]) -> &'a str {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut j = 0;
        for (i, byte) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                buf[j] = b'-';
                j += 1;
            }
            buf[j] = DIGITS[(byte >> 4) as usize];
            buf[j + 1] = DIGITS[(byte & 0x0f) as usize];
            j += 2;
        }
        // Only ASCII hex digits and hyphens were written.
        std::str::from_utf8(buf).unwrap_or_default()
    }
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn truncate(text: &str) -> String {
    text.chars().take(64).collect()
}

impl FromStr for CallId {
    type Err = BadCallId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CallId::parse(s)
    }
}

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 36];
        f.write_str(self.encode(&mut buf))
    }
}

impl fmt::Debug for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl serde::Serialize for CallId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; 36];
        s.serialize_str(self.encode(&mut buf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempt_legs_differ_per_attempt_and_from_the_call() {
        let a = CallId::parse("4b2a1c3e-9f10-4d2b-8a7e-0123456789ab").unwrap();
        let legs: std::collections::HashSet<CallId> = (0..=255u8).map(|i| a.leg(i)).collect();
        assert_eq!(legs.len(), 256);
        assert!(!legs.contains(&a));
        assert_eq!(a.attempt_of(a.leg(3), 4), Some(3));
        assert_eq!(
            a.attempt_of(a.leg(3), 3),
            None,
            "beyond the attempts asked about"
        );
        assert_eq!(a.attempt_of(a, 4), None);
        assert_eq!(
            a.leg(1).to_string()[14..15],
            a.to_string()[14..15],
            "version kept"
        );
    }

    #[test]
    fn round_trips_canonical_form() {
        let text = "4b2a1c3e-9f10-4d2b-8a7e-0123456789ab";
        let id = CallId::parse(text).unwrap();
        assert_eq!(id.to_string(), text);
        let upper = CallId::parse(&text.to_uppercase()).unwrap();
        assert_eq!(upper, id);
    }

    #[test]
    fn rejects_malformed_ids() {
        for bad in [
            "",
            "4b2a1c3e9f104d2b8a7e0123456789ab",
            "4b2a1c3e-9f10-4d2b-8a7e-0123456789ag",
            "4b2a1c3e-9f10-4d2b-8a7e_0123456789ab",
            "4b2a1c3e-9f10-4d2b-8a7e-0123456789abc",
            "ééééééé-9f10-4d2b-8a7e-0123456789ab",
        ] {
            let err = CallId::parse(bad).unwrap_err();
            assert!(err.to_string().contains("not a channel UUID"), "{bad}");
        }
    }

    #[test]
    fn numbers_make_distinct_ids() {
        assert_ne!(CallId::from_u128(1), CallId::from_u128(2));
        assert_eq!(
            CallId::from_u128(1).to_string(),
            "00000000-0000-0000-0000-000000000001"
        );
    }
}
