//! Callers' and callees' numbers as the audit trail and the CDR exports write them: in the clear, masked, or
//! encrypted with the operator's key ([`NumberPolicy`]).
//!
//! What it protects against: a leaked audit or CDR export file (a copied backup, a log shipped to the wrong
//! place) does not reveal the subscribers' numbers. Masking cannot be undone, though a masked number keeps its
//! first digits (the country and area) and its last two, so the few thousand candidates for one mask are easy to
//! list: it hides a number from a reader, not from someone who already knows it and wants to confirm it.
//! Encryption can be undone only with the key (`rtc-core audit show --key-file`). Neither protects against
//! someone who holds the key, or who reaches the running switch (its memory, FreeSWITCH's own logs and CDRs, the
//! ledger's CDR table, which keeps the numbers in the clear for billing).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chacha20poly1305::aead::{Aead, Generate, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use crate::hex;

/// How a number is written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum NumberPolicy {
    /// As it is.
    #[default]
    Plain,
    /// Its first digits (up to four) and last two kept, at least four characters replaced by `*`
    /// (`442071234512` → `4420******12`); irreversible.
    Mask,
    /// `enc:` and the base64 of a random 24-byte nonce followed by the XChaCha20-Poly1305 ciphertext and tag;
    /// reversible with the key ([`NumberKey::decrypt`]). The same number encrypts differently each time.
    Encrypt(NumberKey),
}

/// What encrypted numbers start with.
pub const ENCRYPTED_PREFIX: &str = "enc:";

/// Bound to every ciphertext as associated data: a value encrypted for another purpose with the same key does
/// not decrypt as a number.
const AAD: &[u8] = b"rtc-audit number v1";

/// Bytes of an XChaCha20 nonce.
const NONCE_LEN: usize = 24;

impl NumberPolicy {
    /// `number` as this policy writes it.
    pub fn apply(&self, number: &str) -> String {
        match self {
            NumberPolicy::Plain => number.to_owned(),
            NumberPolicy::Mask => mask(number),
            NumberPolicy::Encrypt(key) => key.encrypt(number),
        }
    }

    /// `plain`, `mask` or `encrypt`, as the configuration names the policy.
    pub fn name(&self) -> &'static str {
        match self {
            NumberPolicy::Plain => "plain",
            NumberPolicy::Mask => "mask",
            NumberPolicy::Encrypt(_) => "encrypt",
        }
    }
}

/// Keeps a leading `+`, then of the rest at most four leading characters and the last two, so that at least four
/// are hidden (all of a number of four characters or fewer).
fn mask(number: &str) -> String {
    let (plus, rest) = match number.strip_prefix('+') {
        Some(rest) => ("+", rest),
        None => ("", number),
    };
    let chars: Vec<char> = rest.chars().collect();
    let n = chars.len();
    let tail = n.saturating_sub(4).min(2);
    let head = n.saturating_sub(tail + 4).min(4);
    let mut out = String::with_capacity(number.len());
    out.push_str(plus);
    out.extend(&chars[..head]);
    out.extend(std::iter::repeat_n('*', n - head - tail));
    out.extend(&chars[n - tail..]);
    out
}

/// The operator's 32-byte key for numbers, given as 64 hex characters. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct NumberKey([u8; 32]);

impl std::fmt::Debug for NumberKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NumberKey(***)")
    }
}

/// Why a key or an encrypted number cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NumberError {
    /// The key is not 64 hex characters (the text itself is never shown).
    #[error(
        "the number key is not 64 hex characters (32 bytes); make one with `openssl rand -hex 32`"
    )]
    BadKey,
    /// Not `enc:` followed by base64.
    #[error("not an encrypted number (enc: and base64)")]
    NotEncrypted,
    /// The key does not open it: another key, or a changed value.
    #[error("the key does not decrypt it: another key, or the value was changed")]
    WrongKey,
}

impl NumberKey {
    /// The key from its 64 hex characters (surrounding white space ignored).
    pub fn from_hex(text: &str) -> Result<NumberKey, NumberError> {
        hex::decode32(text.trim())
            .map(NumberKey)
            .ok_or(NumberError::BadKey)
    }

    /// The key from its bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> NumberKey {
        NumberKey(bytes)
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&self.0.into())
    }

    /// `number` encrypted: `enc:` + base64(nonce ‖ ciphertext ‖ tag).
    pub fn encrypt(&self, number: &str) -> String {
        let nonce = XNonce::generate();
        let payload = Payload {
            msg: number.as_bytes(),
            aad: AAD,
        };
        match self.cipher().encrypt(&nonce, payload) {
            Ok(sealed) => {
                let mut bytes = Vec::with_capacity(NONCE_LEN + sealed.len());
                bytes.extend_from_slice(&nonce);
                bytes.extend_from_slice(&sealed);
                format!("{ENCRYPTED_PREFIX}{}", BASE64.encode(bytes))
            }
            // Only a message longer than the cipher's limit (256 GiB) fails: never written in the clear.
            Err(_) => mask(number),
        }
    }

    /// The number [`NumberKey::encrypt`] gave `text`.
    pub fn decrypt(&self, text: &str) -> Result<String, NumberError> {
        let encoded = text
            .strip_prefix(ENCRYPTED_PREFIX)
            .ok_or(NumberError::NotEncrypted)?;
        let bytes = BASE64
            .decode(encoded)
            .map_err(|_| NumberError::NotEncrypted)?;
        if bytes.len() < NONCE_LEN {
            return Err(NumberError::NotEncrypted);
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let nonce = XNonce::try_from(nonce).map_err(|_| NumberError::NotEncrypted)?;
        let plain = self
            .cipher()
            .decrypt(
                &nonce,
                Payload {
                    msg: sealed,
                    aad: AAD,
                },
            )
            .map_err(|_| NumberError::WrongKey)?;
        String::from_utf8(plain).map_err(|_| NumberError::WrongKey)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn masks_keep_a_short_head_and_the_last_two() {
        assert_eq!(mask("44207123412"), "4420*****12");
        assert_eq!(mask("442071234512"), "4420******12");
        assert_eq!(mask("+442071234512"), "+4420******12");
        assert_eq!(mask("0612345678"), "0612****78");
        assert_eq!(mask("12345678"), "12****78");
        assert_eq!(mask("123456"), "****56");
        assert_eq!(mask("12345"), "****5");
        assert_eq!(mask("1234"), "****");
        assert_eq!(mask("12"), "**");
        assert_eq!(mask(""), "");
        assert_eq!(mask("alice"), "****e");
        assert_eq!(NumberPolicy::Plain.apply("123"), "123");
    }

    #[test]
    fn encrypted_numbers_decrypt_with_the_key_only() {
        let key = NumberKey::from_hex(KEY).unwrap();
        let policy = NumberPolicy::Encrypt(key.clone());
        let a = policy.apply("442071234512");
        let b = policy.apply("442071234512");
        assert!(a.starts_with("enc:"), "{a}");
        assert_ne!(a, b, "a random nonce per value");
        assert!(!a.contains("442071234512"));
        assert_eq!(key.decrypt(&a).unwrap(), "442071234512");
        assert_eq!(key.decrypt(&b).unwrap(), "442071234512");
        let other = NumberKey::from_bytes([7; 32]);
        assert_eq!(other.decrypt(&a), Err(NumberError::WrongKey));
        let mut changed = a.clone().into_bytes();
        let at = 10;
        changed[at] = if changed[at] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            key.decrypt(std::str::from_utf8(&changed).unwrap()),
            Err(NumberError::WrongKey)
        );
        assert_eq!(key.decrypt("4420"), Err(NumberError::NotEncrypted));
        assert_eq!(key.decrypt("enc:!!"), Err(NumberError::NotEncrypted));
        assert_eq!(key.decrypt("enc:AAAA"), Err(NumberError::NotEncrypted));
    }

    #[test]
    fn keys_are_64_hex_characters_and_never_shown() {
        assert!(NumberKey::from_hex(&format!(" {} \n", KEY.to_uppercase())).is_ok());
        for bad in [
            "",
            "00",
            &KEY[1..],
            &format!("{KEY}00"),
            &KEY.replace('0', "g"),
        ] {
            assert_eq!(NumberKey::from_hex(bad), Err(NumberError::BadKey), "{bad}");
        }
        let key = NumberKey::from_hex(KEY).unwrap();
        assert_eq!(format!("{key:?}"), "NumberKey(***)");
        assert_eq!(
            format!("{:?}", NumberPolicy::Encrypt(key)),
            "Encrypt(NumberKey(***))"
        );
    }
}
