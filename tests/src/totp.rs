//! RFC 6238 codes, computed the way an authenticator app does, apart from
//! the service's own implementation, for tests that log in with a second
//! factor.

use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac as _};

/// RFC 4648 base32, padding optional.
pub fn base32_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let (mut bytes, mut buffer, mut bits) = (Vec::new(), 0u64, 0u32);
    for c in text.trim_end_matches('=').chars() {
        let value = ALPHABET.find(c).expect("a base32 character") as u64;
        buffer = (buffer << 5) | value;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            bytes.push((buffer >> bits) as u8);
        }
    }
    bytes
}

/// The code of `secret` at unix time `at`, with `digits` digits (RFC 6238,
/// HMAC-SHA-1, 30 s steps).
pub fn code_at(secret: &[u8], at: u64, digits: u32) -> String {
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret).expect("any key length");
    mac.update(&(at / 30).to_be_bytes());
    let hash = mac.finalize().into_bytes();
    let offset = (hash[19] & 0x0f) as usize;
    let value = u32::from_be_bytes([
        hash[offset] & 0x7f,
        hash[offset + 1],
        hash[offset + 2],
        hash[offset + 3],
    ]) % 10u32.pow(digits);
    format!("{value:0width$}", width = digits as usize)
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}
