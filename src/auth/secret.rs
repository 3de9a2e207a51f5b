//! Token secrets: `enc_<name>_<43 characters>`, the characters 256 random bits in URL-safe
//! base64. The name in the secret lets enc read the one stored record it must match; the store
//! keeps only the secret's SHA-256, and the comparison takes the same time wherever it fails.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::domain::TokenName;

pub const PREFIX: &str = "enc_";
/// 32 random bytes in base64 without padding.
const RANDOM_CHARS: usize = 43;

/// A secret as made, shown to its creator once; its `Debug` hides it.
pub struct Secret(String);

impl Secret {
    pub fn generate(name: &TokenName) -> Secret {
        let mut random = [0u8; 32];
        getrandom::fill(&mut random).expect("the operating system's random source");
        Secret(format!("{PREFIX}{name}_{}", URL_SAFE_NO_PAD.encode(random)))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// The name of the token a presented secret claims to be, if it has the secrets' form.
pub fn token_name(secret: &str) -> Option<TokenName> {
    let rest = secret.strip_prefix(PREFIX)?;
    let split = rest.len().checked_sub(RANDOM_CHARS + 1)?;
    let (name, random) = rest.split_at(split);
    let random = random.strip_prefix('_')?;
    let well_formed = random.len() == RANDOM_CHARS
        && random
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !well_formed {
        return None;
    }
    TokenName::parse(name).ok()
}

pub fn sha256(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Lower-case hex, as the store keeps digests.
fn hex(digest: &[u8; 32]) -> [u8; 64] {
    let mut text = [0; 64];
    for (i, b) in digest.iter().enumerate() {
        text[2 * i] = HEX[usize::from(b >> 4)];
        text[2 * i + 1] = HEX[usize::from(b & 0xf)];
    }
    text
}

pub fn sha256_hex(secret: &str) -> String {
    hex(&sha256(secret))
        .iter()
        .map(|&b| char::from(b))
        .collect()
}

/// Whether `digest` is the one stored as `stored` (hex), in time independent of where they
/// differ.
pub fn matches_hex(digest: &[u8; 32], stored: &str) -> bool {
    hex(digest)[..].ct_eq(stored.as_bytes()).into()
}

/// Whether two digests are the same, in constant time.
pub fn matches(digest: &[u8; 32], other: &[u8; 32]) -> bool {
    digest.ct_eq(other).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_carry_their_name_and_256_random_bits() {
        let name = TokenName::parse("puppet-eu_1").unwrap();
        let a = Secret::generate(&name);
        let b = Secret::generate(&name);
        assert_ne!(a.expose(), b.expose());
        assert!(a.expose().starts_with("enc_puppet-eu_1_"));
        assert_eq!(a.expose().len(), "enc_puppet-eu_1_".len() + 43);
        assert_eq!(token_name(a.expose()), Some(name));
        assert_eq!(format!("{a:?}"), "Secret(…)");
    }

    #[test]
    fn malformed_secrets_name_nothing() {
        let good = Secret::generate(&TokenName::parse("ci").unwrap());
        let cut = &good.expose()[..good.expose().len() - 1];
        for bad in [
            "",
            "enc_",
            "enc_ci",
            cut,
            &good.expose().replace("enc_", "xyz_"),
            &format!("{}=", good.expose()),
        ] {
            assert_eq!(token_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn hashes_compare_whole() {
        // Of the secrets' form, made here so that nothing secret-like is in the source.
        let secret = &format!("{PREFIX}ci_{}", "7".repeat(RANDOM_CHARS));
        let stored = sha256_hex(secret);
        assert_eq!(stored.len(), 64);
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            "the FIPS 180-2 test vector, in lower-case hex"
        );
        assert!(matches_hex(&sha256(secret), &stored));
        assert!(!matches_hex(&sha256("enc_ci_x"), &stored));
        assert!(!matches_hex(&sha256(secret), &stored.to_uppercase()));
        assert!(matches(&sha256(secret), &sha256(secret)));
        assert!(!matches(&sha256(&format!("{secret}x")), &sha256(secret)));
    }
}
