//! Refresh tokens and device tokens: 256 random bits, shown to the client once and stored
//! only as their SHA-256 digest. A slow hash would add nothing: the tokens
//! are random, not chosen by people.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use secrecy::{ExposeSecret as _, SecretString};
use sha2::{Digest as _, Sha256};

const PREFIX: &str = "rt_";
/// Device tokens are made the same way, and told apart by their prefix.
const DEVICE_PREFIX: &str = "dt_";

/// A new refresh token and the digest to store.
pub fn generate() -> (SecretString, Vec<u8>) {
    generate_with(PREFIX)
}

/// A new device token and the digest to store.
pub fn generate_device() -> (SecretString, Vec<u8>) {
    generate_with(DEVICE_PREFIX)
}

/// A new token starting with `prefix`, and the digest to store.
pub fn generate_with(prefix: &str) -> (SecretString, Vec<u8>) {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token: SecretString = format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes)).into();
    let digest = digest(token.expose_secret());
    (token, digest)
}

/// The digest a presented token is looked up by.
pub fn digest(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_unique_and_stored_only_as_digests() {
        let (first, first_digest) = generate();
        let (second, _) = generate();
        assert_ne!(first.expose_secret(), second.expose_secret());
        assert!(first.expose_secret().starts_with(PREFIX));
        assert_eq!(first_digest, digest(first.expose_secret()));
        assert_eq!(first_digest.len(), 32);
    }
}
