//! Access tokens: HS256 JWTs naming the user, their role and the token
//! version current when issued (see `token_revocations`).
//!
//! Every guarded call of another service brings its token to `Check`, the
//! same token many times over its life. [`AccessTokens::verify`] keeps the
//! tokens whose signature it checked, at most [`VERIFIED_KEPT`] of them,
//! with what they say: a token seen again, byte for byte, is only checked
//! for expiry. Revocations are not the token's to say, and are applied to
//! every check afterwards (see `AccessPolicy`).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::TokenConfig;
use crate::domain::{Role, UserId};

/// Who a valid access token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user_id: UserId,
    pub name: String,
    pub role: Role,
    /// The user's token version when the token was issued.
    pub token_version: i64,
    /// When the token expires, in seconds since the Unix epoch (0 for a
    /// principal about to be issued a token).
    pub expires_at: u64,
    /// The refresh token family (the login) the token was issued for;
    /// none in tokens issued before tokens carried it.
    pub session: Option<uuid::Uuid>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    /// The user id.
    sub: String,
    name: String,
    role: String,
    ver: i64,
    /// The session (refresh token family) the token belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sid: Option<uuid::Uuid>,
    jti: String,
    iat: u64,
    exp: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("access token expired")]
    Expired,
    #[error("access token is invalid")]
    Invalid,
}

/// The most verified tokens kept. Past it, expired ones are dropped; if
/// that is not enough, all of them.
pub const VERIFIED_KEPT: usize = 16_384;

pub struct AccessTokens {
    signing_key_id: String,
    signing_key: EncodingKey,
    verifying_keys: HashMap<String, DecodingKey>,
    validation: Validation,
    ttl: Duration,
    /// Tokens whose signature and claims were found valid, by their text.
    verified: RwLock<HashMap<Arc<str>, Principal>>,
}

impl AccessTokens {
    pub fn new(config: &TokenConfig) -> anyhow::Result<AccessTokens> {
        let first = config
            .signing_keys
            .first()
            .ok_or_else(|| anyhow::anyhow!("no access token signing key configured"))?;
        let mut validation = Validation::new(Algorithm::HS256);
        // Tokens are issued and checked by this service's replicas alone.
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub", "iat"]);
        Ok(AccessTokens {
            signing_key_id: first.id.clone(),
            signing_key: EncodingKey::from_secret(first.secret_bytes()),
            verifying_keys: config
                .signing_keys
                .iter()
                .map(|key| (key.id.clone(), DecodingKey::from_secret(key.secret_bytes())))
                .collect(),
            validation,
            ttl: config.access_ttl,
            verified: RwLock::default(),
        })
    }

    /// How long an access token lives.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    pub fn issue(&self, principal: &Principal) -> crate::error::Result<String> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(anyhow::Error::from)?
            .as_secs();
        let claims = Claims {
            sub: principal.user_id.to_string(),
            name: principal.name.clone(),
            role: principal.role.as_str().to_owned(),
            ver: principal.token_version,
            sid: principal.session,
            jti: uuid::Uuid::new_v4().to_string(),
            iat: now,
            exp: now + self.ttl.as_secs(),
        };
        let header = Header {
            kid: Some(self.signing_key_id.clone()),
            ..Header::new(Algorithm::HS256)
        };
        Ok(jsonwebtoken::encode(&header, &claims, &self.signing_key)
            .map_err(anyhow::Error::from)?)
    }

    pub fn verify(&self, token: &str) -> Result<Principal, TokenError> {
        let known = self
            .verified
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(token)
            .cloned();
        if let Some(principal) = known {
            // As jsonwebtoken decides, with no leeway.
            return if principal.expires_at < unix_now() {
                Err(TokenError::Expired)
            } else {
                Ok(principal)
            };
        }
        let principal = self.verify_signed(token)?;
        self.keep(token, &principal);
        Ok(principal)
    }

    fn keep(&self, token: &str, principal: &Principal) {
        let mut verified = self
            .verified
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if verified.len() >= VERIFIED_KEPT {
            let now = unix_now();
            verified.retain(|_, kept| kept.expires_at >= now);
            if verified.len() >= VERIFIED_KEPT {
                verified.clear();
            }
        }
        verified.insert(token.into(), principal.clone());
    }

    /// Tokens kept now.
    #[cfg(test)]
    fn kept(&self) -> usize {
        self.verified
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    fn verify_signed(&self, token: &str) -> Result<Principal, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid)?;
        let key = header
            .kid
            .and_then(|kid| self.verifying_keys.get(&kid))
            .ok_or(TokenError::Invalid)?;
        let claims = jsonwebtoken::decode::<Claims>(token, key, &self.validation)
            .map_err(|error| match error.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            })?
            .claims;
        Ok(Principal {
            user_id: UserId(claims.sub.parse().map_err(|_| TokenError::Invalid)?),
            name: claims.name,
            role: Role::from_db(&claims.role)
                .filter(|role| *role != Role::Anonymous)
                .ok_or(TokenError::Invalid)?,
            token_version: claims.ver,
            expires_at: claims.exp,
            session: claims.sid,
        })
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SigningKey;

    fn config(keys: &[(&str, &str)]) -> TokenConfig {
        TokenConfig {
            access_ttl: Duration::from_secs(300),
            refresh_ttl: Duration::from_secs(3600),
            family_ttl: Duration::from_secs(3600),
            sessions_per_user: 100,
            signing_keys: keys
                .iter()
                .map(|(id, secret)| SigningKey {
                    id: (*id).to_owned(),
                    secret: (*secret).to_owned().into(),
                })
                .collect(),
        }
    }

    fn ada() -> Principal {
        Principal {
            user_id: UserId(7),
            name: "ada".into(),
            role: Role::Admin,
            token_version: 3,
            session: Some(uuid::Uuid::nil()),
            expires_at: 0,
        }
    }

    const KEY_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const KEY_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn an_issued_token_verifies_to_its_principal() {
        let tokens = AccessTokens::new(&config(&[("a", KEY_A)])).expect("valid config");
        let token = tokens.issue(&ada()).expect("issuing");
        let verified = tokens.verify(&token).expect("valid");
        assert!(verified.expires_at > 0);
        assert_eq!(
            Principal {
                expires_at: 0,
                ..verified
            },
            ada()
        );
    }

    #[test]
    fn tokens_signed_with_an_older_key_still_verify_after_rotation() {
        let old = AccessTokens::new(&config(&[("a", KEY_A)])).expect("valid config");
        let rotated =
            AccessTokens::new(&config(&[("b", KEY_B), ("a", KEY_A)])).expect("valid config");
        let token = old.issue(&ada()).expect("issuing");
        let verified = rotated.verify(&token).expect("valid");
        assert_eq!(
            Principal {
                expires_at: 0,
                ..verified
            },
            ada()
        );
    }

    #[test]
    fn tokens_from_unknown_keys_or_tampered_are_invalid() {
        let ours = AccessTokens::new(&config(&[("a", KEY_A)])).expect("valid config");
        let theirs = AccessTokens::new(&config(&[("a", KEY_B)])).expect("valid config");
        assert_eq!(
            ours.verify(&theirs.issue(&ada()).expect("issuing")),
            Err(TokenError::Invalid)
        );

        let token = ours.issue(&ada()).expect("issuing");
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        parts[1] = parts[1].chars().rev().collect();
        assert_eq!(ours.verify(&parts.join(".")), Err(TokenError::Invalid));
        assert_eq!(ours.verify("not a token"), Err(TokenError::Invalid));
    }

    #[test]
    fn a_token_verified_before_still_expires() {
        let mut short = config(&[("a", KEY_A)]);
        short.access_ttl = Duration::from_secs(1);
        let tokens = AccessTokens::new(&short).expect("valid config");
        let token = tokens.issue(&ada()).expect("issuing");
        assert!(tokens.verify(&token).is_ok());
        assert_eq!(tokens.kept(), 1);
        std::thread::sleep(Duration::from_millis(2100));
        assert_eq!(tokens.verify(&token), Err(TokenError::Expired));
    }

    #[test]
    fn only_valid_tokens_are_kept_and_never_more_than_the_bound() {
        let ours = AccessTokens::new(&config(&[("a", KEY_A)])).expect("valid config");
        let theirs = AccessTokens::new(&config(&[("a", KEY_B)])).expect("valid config");
        let forged = theirs.issue(&ada()).expect("issuing");
        for _ in 0..2 {
            assert_eq!(ours.verify(&forged), Err(TokenError::Invalid));
        }
        assert_eq!(ours.kept(), 0);
        for _ in 0..VERIFIED_KEPT + 10 {
            let token = ours.issue(&ada()).expect("issuing");
            assert!(ours.verify(&token).is_ok());
            assert!(ours.kept() <= VERIFIED_KEPT);
        }
    }

    #[test]
    fn expired_tokens_are_told_apart() {
        let mut expired = config(&[("a", KEY_A)]);
        expired.access_ttl = Duration::ZERO;
        let tokens = AccessTokens::new(&expired).expect("valid config");
        let token = tokens.issue(&ada()).expect("issuing");
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(tokens.verify(&token), Err(TokenError::Expired));
    }
}
