//! Time-based one-time passwords (RFC 6238 over RFC 4226): HMAC-SHA-1, six
//! digits, 30 s steps, as every authenticator app computes them by
//! default; and the recovery codes that stand in for them.

use hmac::{Hmac, Mac as _};
use rand::RngCore as _;
use sha1::Sha1;

/// Seconds per step.
pub const STEP_SECS: u64 = 30;
/// Digits per code.
pub const DIGITS: u32 = 6;
/// Steps either side of now that are accepted: a clock off by up to 30 s,
/// or a code typed as it turned.
pub const SKEW_STEPS: u64 = 1;
/// Bytes of a secret: 160 bits, as RFC 4226 recommends.
pub const SECRET_BYTES: usize = 20;
/// Recovery codes per enrolment.
pub const RECOVERY_CODES: usize = 10;

/// A new random secret.
pub fn new_secret() -> Vec<u8> {
    let mut secret = vec![0u8; SECRET_BYTES];
    rand::rng().fill_bytes(&mut secret);
    secret
}

/// The step `unix_secs` falls in.
pub fn step_at(unix_secs: u64) -> u64 {
    unix_secs / STEP_SECS
}

/// The code for `step` (RFC 4226's HOTP with the step as counter).
pub fn code_at(secret: &[u8], step: u64) -> u32 {
    // HMAC takes keys of any length.
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(secret) else {
        unreachable!("HMAC accepts every key length")
    };
    mac.update(&step.to_be_bytes());
    let hash = mac.finalize().into_bytes();
    let offset = usize::from(hash[hash.len() - 1] & 0x0f);
    let binary = u32::from_be_bytes([
        hash[offset] & 0x7f,
        hash[offset + 1],
        hash[offset + 2],
        hash[offset + 3],
    ]);
    binary % 10u32.pow(DIGITS)
}

/// The step within [`SKEW_STEPS`] of `now_step`, and after `after`, whose
/// code `code` is, if any.
pub fn matching_step(secret: &[u8], code: &str, now_step: u64, after: u64) -> Option<u64> {
    let code: u32 = parse_code(code)?;
    (now_step.saturating_sub(SKEW_STEPS)..=now_step + SKEW_STEPS)
        .filter(|step| *step > after)
        .find(|step| constant_time_eq(code_at(secret, *step), code))
}

/// Six ASCII digits, spaces ignored ("123 456").
pub fn parse_code(code: &str) -> Option<u32> {
    let digits: String = code.chars().filter(|c| *c != ' ').collect();
    if digits.len() != DIGITS as usize || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn constant_time_eq(a: u32, b: u32) -> bool {
    (a ^ b) == 0
}

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// RFC 4648 base32, without padding, as authenticator apps take secrets.
pub fn base32(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for byte in bytes {
        buffer = (buffer << 8) | u32::from(*byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(BASE32[((buffer >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(BASE32[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

/// The `otpauth://` URI of a secret, for a QR code (Google
/// Authenticator's key URI format).
pub fn otpauth_uri(issuer: &str, account: &str, secret: &[u8]) -> String {
    let label = format!("{}:{}", encode(issuer), encode(account));
    format!(
        "otpauth://totp/{label}?secret={}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECS}",
        base32(secret),
        encode(issuer)
    )
}

/// Percent-encodes all but unreserved characters (RFC 3986).
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// New recovery codes: ten characters of base32 each (50 bits), shown in
/// two groups of five ("abcde-fghij").
pub fn new_recovery_codes() -> Vec<String> {
    (0..RECOVERY_CODES)
        .map(|_| {
            let mut bytes = [0u8; 7];
            rand::rng().fill_bytes(&mut bytes);
            let code = base32(&bytes)[..10].to_lowercase();
            format!("{}-{}", &code[..5], &code[5..])
        })
        .collect()
}

/// A recovery code as it is compared: lower case, without dashes or
/// spaces. `None` if it cannot be one.
pub fn normalize_recovery_code(code: &str) -> Option<String> {
    let normalized: String = code
        .chars()
        .filter(|c| *c != '-' && *c != ' ')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    (normalized.len() == 10
        && normalized
            .bytes()
            .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b)))
    .then_some(normalized)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238, appendix B, SHA-1: the secret "12345678901234567890" and
    /// the eight-digit codes at the listed times, whose last six digits
    /// are the six-digit codes.
    #[test]
    fn codes_match_rfc_6238s_test_vectors() {
        let secret = b"12345678901234567890";
        for (time, eight_digits) in [
            (59u64, 94_287_082u32),
            (1_111_111_109, 7_081_804),
            (1_111_111_111, 14_050_471),
            (1_234_567_890, 89_005_924),
            (2_000_000_000, 69_279_037),
            (20_000_000_000, 65_353_130),
        ] {
            assert_eq!(
                code_at(secret, step_at(time)),
                eight_digits % 1_000_000,
                "at {time}"
            );
        }
    }

    #[test]
    fn a_code_matches_within_one_step_and_only_after_the_last_used() {
        let secret = b"12345678901234567890";
        let now = step_at(1_111_111_111);
        let code = format!("{:06}", code_at(secret, now - 1));
        assert_eq!(matching_step(secret, &code, now, 0), Some(now - 1));
        assert_eq!(matching_step(secret, &code, now, now - 1), None, "replayed");
        assert_eq!(matching_step(secret, &code, now + 2, 0), None, "too old");
        assert_eq!(matching_step(secret, "12345", now, 0), None);
        assert_eq!(matching_step(secret, "abcdef", now, 0), None);
    }

    #[test]
    fn base32_is_rfc_4648s() {
        // RFC 4648, section 10, unpadded.
        for (bytes, encoded) in [
            (&b""[..], ""),
            (b"f", "MY"),
            (b"fo", "MZXQ"),
            (b"foo", "MZXW6"),
            (b"foob", "MZXW6YQ"),
            (b"fooba", "MZXW6YTB"),
            (b"foobar", "MZXW6YTBOI"),
        ] {
            assert_eq!(base32(bytes), encoded);
        }
        assert!(
            otpauth_uri("chat", "ada lovelace", b"foobar")
                .starts_with("otpauth://totp/chat:ada%20lovelace?secret=MZXW6YTBOI&issuer=chat")
        );
    }

    #[test]
    fn recovery_codes_are_distinct_and_read_back_however_typed() {
        let codes = new_recovery_codes();
        assert_eq!(codes.len(), RECOVERY_CODES);
        let distinct: std::collections::HashSet<_> = codes.iter().collect();
        assert_eq!(distinct.len(), RECOVERY_CODES);
        let code = &codes[0];
        let bare = code.replace('-', "");
        assert_eq!(
            normalize_recovery_code(code).as_deref(),
            Some(bare.as_str())
        );
        assert_eq!(
            normalize_recovery_code(&code.to_uppercase()).as_deref(),
            Some(bare.as_str())
        );
        assert_eq!(normalize_recovery_code("123456"), None);
    }
}
