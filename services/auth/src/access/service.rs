//! Calls a service makes to auth on its own behalf: chat's lookups of
//! names and ids, and its watch of revocations. They carry the service
//! secret (`authorization: Bearer <AUTH_SERVICE_SECRET>`) instead of a
//! user's token, and the secret opens these endpoints only.

use sha2::Digest as _;

/// The endpoints a service credential may call, besides
/// `AccessService/WatchRevocations` (which is not behind the rules).
pub const SERVICE_ENDPOINTS: [&str; 2] = [
    "/auth.v1.UserService/LookupUsernames",
    "/auth.v1.UserService/LookupUserIds",
];

/// The service secret, kept only as its SHA-256.
#[derive(Clone)]
pub struct ServiceSecret([u8; 32]);

impl ServiceSecret {
    pub fn new(secret: &str) -> ServiceSecret {
        ServiceSecret(sha2::Sha256::digest(secret.as_bytes()).into())
    }

    /// Whether `authorization` metadata presents this secret. Digests are
    /// compared, so the time taken tells nothing of the secret.
    pub fn presented_in(&self, authorization: Option<&str>) -> bool {
        authorization
            .and_then(|value| value.strip_prefix("Bearer "))
            .is_some_and(|secret| ServiceSecret::new(secret).0 == self.0)
    }
}

impl std::fmt::Debug for ServiceSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServiceSecret(..)")
    }
}
