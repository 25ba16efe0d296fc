//! Password hashing with argon2id, kept off the async runtime's worker
//! threads and bounded in how many hashes run at once.
//!
//! Each hash works through `memory_kib` of memory (19 MiB by default).
//! Verifications, which logins make, take it from [`Scratch`]: at most one
//! block of memory per hash in flight, kept between hashes and handed back
//! to the system after [`SCRATCH_IDLE`] without any. Allocated afresh for
//! every hash, that memory would be mapped, faulted in page by page and
//! unmapped each time (with the images' allocator settings), which costs a
//! login flood about a third of its time in the kernel; left to the
//! allocator's free lists, it would stay resident for good.
//!
//! Hashing threads run at a lower priority than the rest of the service
//! ([`HASHING_NICENESS`]): a login flood still gets every core nothing else
//! wants, but the access checks other services wait on, and the rest of
//! each login, are scheduled first.

use std::cell::Cell;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use prometheus::IntGauge;

use crate::config::PasswordConfig;
use crate::domain::Password;
use crate::error::Result;
use crate::hash_queue::{HashQueue, Priority, Turn};

#[derive(Clone)]
pub struct PasswordHasher {
    argon2: Argon2<'static>,
    /// One turn per hash in flight; the rest queue here, checks first, not
    /// on the blocking pool, whose threads would each hold 19 MiB. The
    /// blocking task owns its turn, so a caller that goes away mid-hash (a
    /// reset stream) frees it only when the hash is done.
    queue: HashQueue,
    /// Hashes being computed right now, for Prometheus.
    in_flight: IntGauge,
    /// Verified against when a login names no user, so that an unknown name
    /// takes as long as a wrong password.
    dummy_hash: Arc<str>,
    scratch: Arc<Scratch>,
}

/// How long hash memory is kept with no hash needing it.
pub const SCRATCH_IDLE: Duration = Duration::from_secs(10);

/// Hash memory between hashes: one buffer per hash that ran at once, at
/// most one per permit.
struct Scratch {
    /// How long memory is kept unused.
    idle: Duration,
    pool: Mutex<Pool>,
}

#[derive(Default)]
struct Pool {
    free: Vec<Vec<Block>>,
    last_used: Option<Instant>,
    /// Whether a task is waiting to free idle memory.
    pruning: bool,
}

impl Scratch {
    fn new(idle: Duration) -> Scratch {
        Scratch {
            idle,
            pool: Mutex::default(),
        }
    }

    fn pool(&self) -> std::sync::MutexGuard<'_, Pool> {
        self.pool
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn take(&self) -> Vec<Block> {
        self.pool().free.pop().unwrap_or_default()
    }

    /// Takes `blocks` back, and frees all of it once idle long enough.
    fn give(self: &Arc<Self>, blocks: Vec<Block>) {
        let mut pool = self.pool();
        pool.free.push(blocks);
        pool.last_used = Some(Instant::now());
        if !std::mem::replace(&mut pool.pruning, true) {
            let scratch = self.clone();
            tokio::spawn(async move { scratch.prune().await });
        }
    }

    /// Sleeps until the memory has been idle long enough, frees it, and
    /// ends (the next `give` starts another).
    async fn prune(&self) {
        loop {
            let idle_at = self.pool().last_used.map(|at| at + self.idle);
            if let Some(idle_at) = idle_at {
                tokio::time::sleep_until(idle_at.into()).await;
            }
            let mut pool = self.pool();
            if pool.last_used.is_none_or(|at| at.elapsed() >= self.idle) {
                let free = std::mem::take(&mut pool.free);
                pool.pruning = false;
                drop(pool);
                drop(free);
                return;
            }
        }
    }

    /// Buffers held now.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.pool().free.len()
    }
}

/// Whether `password` hashes to `stored` (a PHC string), working in
/// `blocks` (grown if the stored parameters need more).
fn verify_with(
    password: &[u8],
    stored: &PasswordHash<'_>,
    blocks: &mut Vec<Block>,
) -> anyhow::Result<bool> {
    let corrupt = |what: &str| anyhow::anyhow!("a stored hash is corrupt: {what}");
    let algorithm = Algorithm::try_from(stored.algorithm).map_err(|_| corrupt("algorithm"))?;
    let version = stored
        .version
        .map(Version::try_from)
        .transpose()
        .map_err(|_| corrupt("version"))?
        .unwrap_or_default();
    let params = Params::try_from(stored).map_err(|_| corrupt("parameters"))?;
    let salt = stored.salt.ok_or_else(|| corrupt("no salt"))?;
    let mut salt_bytes = [0u8; 64];
    let salt = salt
        .decode_b64(&mut salt_bytes)
        .map_err(|_| corrupt("salt"))?;
    let expected = stored.hash.ok_or_else(|| corrupt("no hash"))?;
    let needed = params.block_count();
    if blocks.len() < needed {
        blocks.resize(needed, Block::default());
    }
    let mut output = vec![0u8; expected.len()];
    Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password, salt, &mut output, &mut blocks[..needed])
        .map_err(|error| anyhow::anyhow!("verifying a password: {error}"))?;
    let output = argon2::password_hash::Output::new(&output).map_err(|_| corrupt("length"))?;
    // Constant-time, as Output compares.
    Ok(output == expected)
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
            queue: HashQueue::new(
                config.max_concurrent_hashes,
                config.queued_checks,
                config.queued_new_hashes,
            ),
            in_flight: IntGauge::new(
                "auth_password_hashes_in_flight",
                "argon2id hashes being computed; never above AUTH_MAX_CONCURRENT_HASHES.",
            )?,
            dummy_hash: dummy_hash.into(),
            scratch: Arc::new(Scratch::new(SCRATCH_IDLE)),
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
        self.run(Priority::NewHash, move || {
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
        let password = password.clone();
        let known = stored.is_some();
        let stored = stored.map_or_else(|| self.dummy_hash.to_string(), str::to_owned);
        let scratch = self.scratch.clone();
        let verified = self
            .run(Priority::Check, move || {
                let parsed = PasswordHash::new(&stored)
                    .map_err(|error| anyhow::anyhow!("a stored hash is corrupt: {error}"))?;
                // Taken and given back under the permit: never more
                // buffers than permits.
                let mut blocks = scratch.take();
                let verified = verify_with(password.expose().as_bytes(), &parsed, &mut blocks);
                scratch.give(blocks);
                verified
            })
            .await?;
        Ok(verified && known)
    }

    async fn run<T: Send + 'static>(
        &self,
        priority: Priority,
        work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
    ) -> Result<T> {
        let permit = self.queue.turn(priority).await?;
        let in_flight = self.in_flight.clone();
        Ok(tokio::task::spawn_blocking(move || {
            let _hashing = Hashing::start(in_flight, permit);
            yield_to_the_rest();
            work()
        })
        .await
        .context("a hashing task panicked")??)
    }
}

/// The nice value hashing threads run at, above the service's other
/// threads' 0. Under contention the kernel gives a thread at 10 about a
/// tenth of the time of one at 0.
pub const HASHING_NICENESS: i32 = 10;

/// Lowers this thread's priority for good (a thread may not raise its own
/// priority back without privileges), once per thread of the blocking
/// pool. Failing to is logged and harmless.
fn yield_to_the_rest() {
    thread_local! {
        static LOWERED: Cell<bool> = const { Cell::new(false) };
    }
    if LOWERED.get() {
        return;
    }
    LOWERED.set(true);
    let thread = rustix::thread::gettid();
    if let Err(error) = rustix::process::setpriority_process(Some(thread), HASHING_NICENESS) {
        tracing::warn!(%error, "could not lower the priority of a hashing thread");
    }
}

/// One hash being computed: counted, and holding its permit, until dropped
/// (on return or panic alike).
struct Hashing {
    in_flight: IntGauge,
    _permit: Turn,
}

impl Hashing {
    fn start(in_flight: IntGauge, permit: Turn) -> Hashing {
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
            queued_checks: 256,
            queued_new_hashes: 256,
        }
    }

    fn password(text: &str) -> Password {
        Password::parse("password", text.into()).expect("a valid password")
    }

    async fn verifies(hasher: &PasswordHasher, text: &str, hash: &str) -> bool {
        hasher
            .verify(&password(text), Some(hash))
            .await
            .expect("verifying")
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

    /// The nice value of the calling thread.
    fn niceness() -> i32 {
        rustix::process::getpriority_process(Some(rustix::thread::gettid()))
            .expect("reading this thread's priority")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hashing_runs_at_a_lower_priority_than_the_runtime() {
        let hasher = PasswordHasher::new(&owasp_defaults()).expect("valid parameters");
        let runtime = niceness();
        let hashing = hasher
            .run(Priority::Check, || Ok(niceness()))
            .await
            .expect("a hashing task");
        assert_eq!(hashing, HASHING_NICENESS.max(runtime));
        assert_eq!(niceness(), runtime, "the runtime's threads keep theirs");
    }

    #[tokio::test]
    async fn verification_reuses_its_memory_and_frees_it_when_idle() {
        let mut hasher = PasswordHasher::new(&owasp_defaults()).expect("valid parameters");
        hasher.scratch = Arc::new(Scratch::new(Duration::from_millis(300)));
        let hash = hasher
            .hash(&password("correct horse"))
            .await
            .expect("hashing");
        for _ in 0..3 {
            assert!(verifies(&hasher, "correct horse", &hash).await);
            assert_eq!(
                hasher.scratch.held(),
                1,
                "one verification at a time, one buffer"
            );
        }
        tokio::time::sleep(Duration::from_millis(900)).await;
        assert_eq!(hasher.scratch.held(), 0, "idle memory is freed");
        // And taken again afterwards.
        assert!(!verifies(&hasher, "wrong horse", &hash).await);
        assert_eq!(hasher.scratch.held(), 1);
    }

    #[tokio::test]
    async fn however_many_verify_at_once_memory_is_held_for_the_permits_only() {
        let hasher = PasswordHasher::new(&owasp_defaults()).expect("valid parameters");
        let hash = hasher
            .hash(&password("correct horse"))
            .await
            .expect("hashing");
        let right = password("correct horse");
        let verifications = (0..8).map(|_| hasher.verify(&right, Some(&hash)));
        for verified in futures::future::join_all(verifications).await {
            assert!(verified.expect("verifying"));
        }
        assert!(
            hasher.scratch.held() <= 2,
            "{} buffers",
            hasher.scratch.held()
        );
    }

    #[tokio::test]
    async fn hashes_made_with_other_parameters_still_verify() {
        let hasher = PasswordHasher::new(&owasp_defaults()).expect("valid parameters");
        let older = PasswordHasher::new(&PasswordConfig {
            memory_kib: 24 * 1024,
            iterations: 1,
            ..owasp_defaults()
        })
        .expect("valid parameters");
        let hash = older
            .hash(&password("correct horse"))
            .await
            .expect("hashing");
        assert!(
            hash.starts_with("$argon2id$v=19$m=24576,t=1,p=1$"),
            "{hash}"
        );
        assert!(verifies(&hasher, "correct horse", &hash).await);
        assert!(!verifies(&hasher, "wrong horse", &hash).await);
        // A smaller hash after a larger one, in the same (grown) memory.
        let small = hasher
            .hash(&password("correct horse"))
            .await
            .expect("hashing");
        assert!(verifies(&hasher, "correct horse", &small).await);
    }

    #[tokio::test]
    async fn a_corrupt_stored_hash_never_matches() {
        let hasher = PasswordHasher::new(&owasp_defaults()).expect("valid parameters");
        let hash = hasher
            .hash(&password("correct horse"))
            .await
            .expect("hashing");
        let truncated = &hash[..hash.len() - 4];
        let no_salt = hash
            .rsplitn(3, '$')
            .last()
            .expect("a PHC string")
            .to_owned()
            + "$";
        for corrupt in ["not a hash", truncated, &no_salt] {
            assert!(
                hasher
                    .verify(&password("correct horse"), Some(corrupt))
                    .await
                    .map_or(true, |ok| !ok),
                "{corrupt}"
            );
        }
    }

    #[tokio::test]
    async fn only_the_right_password_verifies() {
        let hasher = PasswordHasher::new(&owasp_defaults()).expect("valid parameters");
        let hash = hasher
            .hash(&password("correct horse"))
            .await
            .expect("hashing");
        assert!(verifies(&hasher, "correct horse", &hash).await);
        assert!(!verifies(&hasher, "wrong horse", &hash).await);
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
