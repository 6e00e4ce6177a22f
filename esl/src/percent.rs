//! Percent-encoding of event header values, as FreeSWITCH's plain event format uses it.
//!
//! FreeSWITCH serialises every header value of a `text/event-plain` event through its URL encoder so that
//! newlines and colons cannot break the line format. The rules, checked against `switch_url_encode_opt`:
//! - a byte below `0x20`, above `0x7e`, or one of `\r \n space # % & + : ; < = > ? @ [ \ ] ^ ` { | } "`
//!   becomes `%XX` with upper-case hex digits;
//! - except that a `%` already followed by two *upper-case* hex digits is passed through unchanged (no double
//!   encoding), so a literal `%41` in a value reaches the wire as `%41` and decodes to `A`: that loss is
//!   FreeSWITCH's, and decoding here mirrors what its own decoder gives;
//! - an empty value is written as `_undef_`.
//!
//! These are hand-written rather than taken from the `percent-encoding` crate because FreeSWITCH's set and
//! its pass-through rule differ from every standard set that crate offers, and the decoder here must
//! decode into a reused buffer without allocating.

/// Bytes FreeSWITCH encodes besides controls and non-ASCII (`SWITCH_URL_UNSAFE`).
const UNSAFE: &[u8] = b"\r\n #%&+:;<=>?@[\\]^`{|}\"";

/// Upper-case hex digits, the only ones FreeSWITCH writes and the only ones its pass-through rule accepts.
const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// For each byte, whether FreeSWITCH's encoder escapes it (ignoring the `%XX` pass-through rule).
const ESCAPE: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = b < 0x20 || b > 0x7e;
        b += 1;
    }
    let mut i = 0;
    while i < UNSAFE.len() {
        t[UNSAFE[i] as usize] = true;
        i += 1;
    }
    t
};

/// Whether FreeSWITCH's encoder would escape `b` (ignoring the `%XX` pass-through rule).
#[inline]
fn must_escape(b: u8) -> bool {
    ESCAPE[b as usize]
}

#[inline]
fn is_upper_hex(b: u8) -> bool {
    b.is_ascii_digit() || (b'A'..=b'F').contains(&b)
}

/// Appends `value` to `out` encoded exactly as FreeSWITCH's event serialiser writes a header value
/// (including `_undef_` for an empty value).
pub fn encode_into(value: &[u8], out: &mut Vec<u8>) {
    if value.is_empty() {
        out.extend_from_slice(b"_undef_");
        return;
    }
    out.reserve(value.len());
    let mut i = 0;
    while i < value.len() {
        let b = value[i];
        let passthrough = b == b'%'
            && i + 2 < value.len() // two more bytes exist
            && is_upper_hex(value[i + 1])
            && is_upper_hex(value[i + 2]);
        if !passthrough && must_escape(b) {
            out.extend_from_slice(&[
                b'%',
                HEX_UPPER[(b >> 4) as usize],
                HEX_UPPER[(b & 0x0f) as usize],
            ]);
        } else {
            out.push(b);
        }
        i += 1;
    }
}

#[inline]
fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes `value` into `out` (cleared first) and returns the decoded bytes.
///
/// A `%` not followed by two hex digits (`%ZZ`, a truncated `%4` at the end) is kept literally: FreeSWITCH
/// never writes such a sequence, so it can only come from a value that was not encoded, and keeping it
/// loses nothing. `+` is not a space in this format.
pub fn decode_into<'o>(value: &[u8], out: &'o mut Vec<u8>) -> &'o [u8] {
    out.clear();
    out.reserve(value.len());
    let mut rest = value;
    while let Some(p) = memchr::memchr(b'%', rest) {
        out.extend_from_slice(&rest[..p]);
        let esc = &rest[p..];
        match (
            esc.get(1).copied().and_then(hex_val),
            esc.get(2).copied().and_then(hex_val),
        ) {
            (Some(hi), Some(lo)) => {
                out.push((hi << 4) | lo);
                rest = &esc[3..];
            }
            _ => {
                out.push(b'%');
                rest = &esc[1..];
            }
        }
    }
    out.extend_from_slice(rest);
    out
}

/// Percent-decodes `value` and validates the result as UTF-8 (multi-byte sequences are decoded to bytes
/// first, then validated as a whole, so `%C3%A9` is `é`). Borrows from `value` when it holds no `%`.
///
/// Returns the text, lossily repaired when invalid (U+FFFD for bad sequences), and whether it was repaired,
/// so that callers can count damaged values.
pub fn decode_text<'a>(
    value: &'a [u8],
    scratch: &'a mut Vec<u8>,
) -> (std::borrow::Cow<'a, str>, bool) {
    use std::borrow::Cow;
    let bytes: &'a [u8] = if memchr::memchr(b'%', value).is_some() {
        decode_into(value, scratch)
    } else {
        value
    };
    match std::str::from_utf8(bytes) {
        Ok(s) => (Cow::Borrowed(s), false),
        Err(_) => (String::from_utf8_lossy(bytes), true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(s: &[u8]) -> String {
        let mut out = Vec::new();
        encode_into(s, &mut out);
        String::from_utf8(out).unwrap()
    }

    fn dec(s: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        decode_into(s, &mut out).to_vec()
    }

    #[test]
    fn encodes_like_freeswitch() {
        assert_eq!(enc(b"+15551234567"), "%2B15551234567");
        assert_eq!(
            enc(b"sofia/internal/1000@10.0.0.1"),
            "sofia/internal/1000%4010.0.0.1"
        );
        assert_eq!(enc(b"2001:db8::1"), "2001%3Adb8%3A%3A1");
        assert_eq!(enc(b"a b\r\n"), "a%20b%0D%0A");
        assert_eq!(enc("José".as_bytes()), "Jos%C3%A9");
        assert_eq!(enc(b"100%"), "100%25");
        // Upper-case escapes pass through; lower-case ones do not.
        assert_eq!(enc(b"x%41y"), "x%41y");
        assert_eq!(enc(b"x%4ay"), "x%254ay");
        // Too short to be an escape at the end.
        assert_eq!(enc(b"x%4"), "x%254");
        assert_eq!(enc(b"x%41"), "x%41");
        assert_eq!(enc(b"\x7f~"), "%7F~");
        assert_eq!(enc(b""), "_undef_");
    }

    #[test]
    fn decodes_utf8_and_bad_escapes() {
        assert_eq!(dec(b"Jos%C3%A9"), "José".as_bytes());
        assert_eq!(dec(b"%E4%BD%A0%E5%A5%BD"), "你好".as_bytes());
        assert_eq!(dec(b"%f0%9f%93%9e"), "📞".as_bytes());
        assert_eq!(dec(b"%ZZ"), b"%ZZ");
        assert_eq!(dec(b"abc%4"), b"abc%4");
        assert_eq!(dec(b"%"), b"%");
        assert_eq!(dec(b"%%41"), b"%A");
        assert_eq!(dec(b"a+b"), b"a+b");
    }

    #[test]
    fn text_reports_invalid_utf8() {
        let mut scratch = Vec::new();
        let (t, bad) = decode_text(b"caf%C3", &mut scratch);
        assert!(bad);
        assert_eq!(t, "caf\u{fffd}");
        let (t, bad) = decode_text(b"plain", &mut scratch);
        assert!(!bad);
        assert!(matches!(t, std::borrow::Cow::Borrowed("plain")));
    }

    #[test]
    fn round_trips_all_bytes_except_passthrough() {
        let all: Vec<u8> = (1u8..=255).collect();
        let mut out = Vec::new();
        encode_into(&all, &mut out);
        assert_eq!(dec(&out), all);
    }
}
