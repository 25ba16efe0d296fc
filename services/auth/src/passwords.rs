//! Password hashing with argon2id, kept off the async runtime's worker
//! threads and bounded in how many hashes run at once.

use std::sync::Arc;

use anyhow::Context as _;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use prometheus::IntGauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::PasswordConfig;
use crate::domain::Password;
use crate::error::Result;

#[derive(Clone)]
pub struct PasswordHasher {
    argon2: Argon2<'static>,
    /// One permit per hash in flight; the rest queue here, not on the
    /// blocking pool, whose threads would each hold 19 MiB. The blocking
    /// task owns its permit, so a caller that goes away mid-hash (a reset
    /// stream) frees it only when the hash is done.
    permits: Arc<Semaphore>,
    /// Hashes being computed right now, for Prometheus.
    in_flight: IntGauge,
    /// Verified against when a login names no user, so that an unknown name
    /// takes as long as a wrong password.
    dummy_hash: Arc<str>,
}

impl PasswordHasher {
    pub fn new(config: &PasswordConfig) -> anyhow::Result<PasswordHasher> {
        let params = Params::new(
            config.memory_kib,
            config.iterations,
            config.parallelism,
            None,
        )
        .map_err(|error| anyhow::anyhow!("invalid argon2 parameters: {error}"))?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let dummy_hash = argon2
            .hash_password(
                b"no user has this password",
                &SaltString::generate(&mut OsRng),
            )
            .map_err(|error| anyhow::anyhow!("hashing the dummy password: {error}"))?
            .to_string();
        Ok(PasswordHasher {
            argon2,
            permits: Arc::new(Semaphore::new(config.max_concurrent_hashes.max(1))),
            in_flight: IntGauge::new(
                "auth_password_hashes_in_flight",
                "argon2id hashes being computed; never above AUTH_MAX_CONCURRENT_HASHES.",
            )?,
            dummy_hash: dummy_hash.into(),
        })
    }

    /// The gauge of hashes in flight, to register with Prometheus.
    pub fn in_flight(&self) -> &IntGauge {
        &self.in_flight
    }

    /// A PHC string (`$argon2id$v=19$m=...`) with a fresh salt.
    pub async fn hash(&self, password: &Password) -> Result<String> {
        let argon2 = self.argon2.clone();
        let password = password.clone();
        self.run(move || {
            argon2
                .hash_password(
                    password.expose().as_bytes(),
                    &SaltString::generate(&mut OsRng),
                )
                .map(|hash| hash.to_string())
                .map_err(|error| anyhow::anyhow!("hashing a password: {error}"))
        })
        .await
    }

    /// Whether `password` matches `stored`; with no stored hash, checks
    /// against the dummy one (and answers no) to take the same time.
    pub async fn verify(&self, password: &Password, stored: Option<&str>) -> Result<bool> {
        let argon2 = self.argon2.clone();
        let password = password.clone();
        let known = stored.is_some();
        let stored = stored.map_or_else(|| self.dummy_hash.to_string(), str::to_owned);
        self.run(move || {
            let parsed = PasswordHash::new(&stored)
                .map_err(|error| anyhow::anyhow!("a stored hash is corrupt: {error}"))?;
            Ok(argon2
                .verify_password(password.expose().as_bytes(), &parsed)
                .is_ok()
                && known)
        })
        .await
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
    ) -> Result<T> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .context("the hashing semaphore is closed")?;
        let in_flight = self.in_flight.clone();
        Ok(tokio::task::spawn_blocking(move || {
            let _hashing = Hashing::start(in_flight, permit);
            work()
        })
        .await
        .context("a hashing task panicked")??)
    }
}

/// One hash being computed: counted, and holding its permit, until dropped
/// (on return or panic alike).
struct Hashing {
    in_flight: IntGauge,
    _permit: OwnedSemaphorePermit,
}

impl Hashing {
    fn start(in_flight: IntGauge, permit: OwnedSemaphorePermit) -> Hashing {
        in_flight.inc();
        Hashing {
            in_flight,
            _permit: permit,
        }
    }
}

impl Drop for Hashing {
    fn drop(&mut self) {
        self.in_flight.dec();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn owasp_defaults() -> PasswordConfig {
        PasswordConfig {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
            max_concurrent_hashes: 2,
        }
    }

    fn password(text: &str) -> Password {
        Password::parse("password", text.into()).expect("a valid password")
    }

    #[tokio::test]
    async fn hashes_are_argon2id_phc_strings_with_the_configured_parameters() {
        let hasher = PasswordHasher::new(&owasp_defaults()).expect("valid parameters");
        let hash = hasher
            .hash(&password("correct horse"))
            .await
            .expect("hashing");
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
    }

    #[tokio::test]
    async fn only_the_right_password_verifies() {
        let hasher = PasswordHasher::new(&owasp_defaults()).expect("valid parameters");
        let hash = hasher
            .hash(&password("correct horse"))
            .await
            .expect("hashing");
        assert!(
            hasher
                .verify(&password("correct horse"), Some(&hash))
                .await
                .expect("verifying")
        );
        assert!(
            !hasher
                .verify(&password("wrong horse"), Some(&hash))
                .await
                .expect("verifying")
        );
    }

    #[tokio::test]
    async fn no_password_verifies_without_a_stored_hash() {
        let hasher = PasswordHasher::new(&owasp_defaults()).expect("valid parameters");
        assert!(
            !hasher
                .verify(&password("no user has this password"), None)
                .await
                .expect("verifying")
        );
    }

    /// Callers that give up mid-hash (a client resetting its stream) must
    /// not let more hashes run than the bound: each would hold its memory
    /// and a blocking thread until done.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cancelled_callers_never_let_more_hashes_run_than_the_bound() {
        let mut config = owasp_defaults();
        config.iterations = 8;
        let hasher = PasswordHasher::new(&config).expect("valid parameters");
        let stored = hasher
            .hash(&password("correct horse"))
            .await
            .expect("hashing");
        let mut most = 0;
        for _ in 0..40 {
            let task = tokio::spawn({
                let (hasher, stored) = (hasher.clone(), stored.clone());
                async move { hasher.verify(&password("guess"), Some(&stored)).await }
            });
            tokio::time::sleep(Duration::from_millis(2)).await;
            task.abort();
            most = most.max(hasher.in_flight().get());
        }
        while hasher.in_flight().get() > 0 {
            most = most.max(hasher.in_flight().get());
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert!(most >= 1, "no hash was ever seen running");
        assert!(
            most <= config.max_concurrent_hashes as i64,
            "{most} hashes ran at once, above the bound of {}",
            config.max_concurrent_hashes
        );
    }

    #[tokio::test]
    async fn two_salts_give_two_hashes() {
        let hasher = PasswordHasher::new(&owasp_defaults()).expect("valid parameters");
        let first = hasher
            .hash(&password("same password"))
            .await
            .expect("hashing");
        let second = hasher
            .hash(&password("same password"))
            .await
            .expect("hashing");
        assert_ne!(first, second);
    }
}
