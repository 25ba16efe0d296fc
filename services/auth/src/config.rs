//! Settings, read from `AUTH_*` environment variables. docs/auth.md lists
//! them with their defaults; [`Config::with_defaults`] is the same list in
//! code.

use std::time::Duration;

use anyhow::{Context as _, bail};
use host::config::var_or;
use host::quota::rate_var as rate;
use host::server::Edge;
use secrecy::{ExposeSecret as _, SecretString};

pub use crate::mail::{MailConfig, SmtpConfig, SmtpSecurity};
pub use crate::quotas::QuotaConfig;

#[derive(Debug, Clone)]
pub struct Config {
    /// Where it listens and how connections are kept (`AUTH_GRPC_ADDR`,
    /// `AUTH_HTTP_ADDR`, `AUTH_METRICS_ADDR`, `AUTH_CORS_ORIGINS`,
    /// `AUTH_HTTP2_KEEPALIVE_*`).
    pub edge: Edge,
    pub database: DatabaseConfig,
    pub tokens: TokenConfig,
    pub passwords: PasswordConfig,
    pub lockout: LockoutConfig,
    pub devices: DeviceConfig,
    /// What one client address may ask how often (`AUTH_QUOTA_*`).
    pub quotas: QuotaConfig,
    /// An admin to create at start-up if no user has that name yet: how the
    /// first admin comes to be.
    pub bootstrap_admin: Option<BootstrapAdmin>,
    /// `Check` fails closed (`UNAVAILABLE`) while the rules and revocations
    /// held in memory cannot be confirmed to be at most this old.
    pub policy_max_staleness: Duration,
    /// How often expired refresh tokens, dead families, old revocations
    /// and idle login throttles are deleted.
    pub prune_interval: Duration,
    /// What services present (`authorization: Bearer <secret>`) to call
    /// on their own behalf: to watch revocations and to look up names and
    /// ids. `None` leaves `WatchRevocations` open (development), and the
    /// lookups to what the access rules allow users.
    pub service_secret: Option<SecretString>,
    /// Under mutual TLS (`AUTH_CLIENT_CA_FILE`), the common names of the
    /// client certificates that are services (`AUTH_SERVICE_CLIENT_NAMES`,
    /// comma-separated; `chat`): of the certificates the client CA issues,
    /// only these open what services may call.
    pub service_client_names: Vec<String>,
    /// Where mail goes, and how long the tokens it carries work.
    pub mail: MailConfig,
}

#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    pub url: SecretString,
    pub max_connections: u32,
}

#[derive(Debug, Clone)]
pub struct TokenConfig {
    pub access_ttl: Duration,
    /// How long a refresh token lives unless rotated.
    pub refresh_ttl: Duration,
    /// How long a login's refresh token family lives at most, rotated or
    /// not: then its user logs in again.
    pub family_ttl: Duration,
    /// Keys for signing access tokens (HS256). The first signs; all of them
    /// verify, so a new key can be put first while tokens signed with the
    /// old one are still in use.
    pub signing_keys: Vec<SigningKey>,
    /// The most sessions (families) a user keeps open; a login past it
    /// ends the least recently used (`AUTH_SESSIONS_PER_USER`).
    pub sessions_per_user: u32,
}

#[derive(Debug, Clone)]
pub struct SigningKey {
    /// Goes into each token's `kid` header, to find the key that verifies it.
    pub id: String,
    pub secret: SecretString,
}

/// argon2id parameters; the defaults are OWASP's (19 MiB, 2 passes, 1 lane).
#[derive(Debug, Clone)]
pub struct PasswordConfig {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    /// How many hashes may be computed at once; more wait their turn, so
    /// that a burst of logins can neither starve other calls of CPU nor
    /// exhaust memory.
    pub max_concurrent_hashes: usize,
    /// Password checks (logins) that may wait for a turn; they are served
    /// before new passwords.
    pub queued_checks: usize,
    /// New passwords (registrations, changes) that may wait for a turn;
    /// past it, they are refused at once with a retry delay.
    pub queued_new_hashes: usize,
}

/// Brute-force protection, after Keycloak's: after `max_failures`
/// consecutive failed logins the account is locked, for `wait_increment`
/// more with each further failure, up to `max_wait`. Failures older than
/// `failure_reset` are forgotten.
#[derive(Debug, Clone)]
pub struct LockoutConfig {
    pub max_failures: u32,
    pub wait_increment: Duration,
    pub max_wait: Duration,
    pub failure_reset: Duration,
    /// Failed logins from one client address (an IPv6 /64), across every
    /// name, before that address is locked out the same way: credential
    /// stuffing. Clients presenting a valid device token are not counted.
    pub address_max_failures: u32,
    /// An address's failures are forgotten after this long without one.
    pub address_failure_reset: Duration,
}

/// Device tokens: what a login hands the client so that its next logins
/// are throttled per device, not per name.
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    pub ttl: Duration,
    /// The most a user holds; past it, the oldest go.
    pub per_user: u32,
}

#[derive(Debug, Clone)]
pub struct BootstrapAdmin {
    pub name: String,
    pub email: String,
    pub password: SecretString,
}

/// Signs tokens only where `AUTH_DEV_MODE=true` and no key is configured.
const DEV_SIGNING_KEY: &str = "dev-mode-only-insecure-signing-key-never-use-in-production";
const MIN_SECRET_LEN: usize = 32;
/// No lifetime or wait may exceed this (a hundred years): larger ones
/// overflow timestamps.
const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

impl Config {
    /// Every setting at its default, with the given database and keys.
    pub fn with_defaults(database_url: SecretString, signing_keys: Vec<SigningKey>) -> Config {
        Config {
            edge: Edge::with_ports(50051, 8081, 9101),
            database: DatabaseConfig {
                url: database_url,
                max_connections: 10,
            },
            tokens: TokenConfig {
                access_ttl: Duration::from_secs(5 * 60),
                refresh_ttl: Duration::from_secs(24 * 60 * 60),
                family_ttl: Duration::from_secs(30 * 24 * 60 * 60),
                signing_keys,
                sessions_per_user: 100,
            },
            passwords: PasswordConfig {
                memory_kib: 19 * 1024,
                iterations: 2,
                parallelism: 1,
                max_concurrent_hashes: std::thread::available_parallelism().map_or(2, usize::from),
                queued_checks: 256,
                queued_new_hashes: 16,
            },
            lockout: LockoutConfig {
                max_failures: 5,
                wait_increment: Duration::from_secs(60),
                max_wait: Duration::from_secs(15 * 60),
                failure_reset: Duration::from_secs(12 * 60 * 60),
                address_max_failures: 20,
                address_failure_reset: Duration::from_secs(15 * 60),
            },
            devices: DeviceConfig {
                ttl: Duration::from_secs(30 * 24 * 60 * 60),
                per_user: 10,
            },
            quotas: QuotaConfig::default(),
            bootstrap_admin: None,
            policy_max_staleness: Duration::from_secs(5),
            prune_interval: Duration::from_secs(5 * 60),
            service_secret: None,
            service_client_names: vec!["chat".to_owned()],
            mail: MailConfig::default(),
        }
    }

    /// Refuses settings that cannot work: empty limits, lifetimes of zero
    /// or too large to add to a timestamp.
    pub fn validate(&self) -> anyhow::Result<()> {
        let at_least_one = [
            (
                "AUTH_DATABASE_MAX_CONNECTIONS",
                self.database.max_connections as u64,
            ),
            (
                "AUTH_MAX_CONCURRENT_HASHES",
                self.passwords.max_concurrent_hashes as u64,
            ),
            (
                "AUTH_LOCKOUT_MAX_FAILURES",
                u64::from(self.lockout.max_failures),
            ),
            (
                "AUTH_LOCKOUT_ADDRESS_MAX_FAILURES",
                u64::from(self.lockout.address_max_failures),
            ),
            (
                "AUTH_DEVICE_TOKENS_PER_USER",
                u64::from(self.devices.per_user),
            ),
            (
                "AUTH_SESSIONS_PER_USER",
                u64::from(self.tokens.sessions_per_user),
            ),
        ];
        for (name, value) in at_least_one {
            if value == 0 {
                bail!("{name} must be at least 1");
            }
        }
        let durations = [
            ("AUTH_ACCESS_TOKEN_TTL_SECS", self.tokens.access_ttl),
            ("AUTH_REFRESH_TOKEN_TTL_SECS", self.tokens.refresh_ttl),
            ("AUTH_REFRESH_FAMILY_TTL_SECS", self.tokens.family_ttl),
            (
                "AUTH_LOCKOUT_WAIT_INCREMENT_SECS",
                self.lockout.wait_increment,
            ),
            ("AUTH_LOCKOUT_MAX_WAIT_SECS", self.lockout.max_wait),
            (
                "AUTH_LOCKOUT_FAILURE_RESET_SECS",
                self.lockout.failure_reset,
            ),
            (
                "AUTH_LOCKOUT_ADDRESS_FAILURE_RESET_SECS",
                self.lockout.address_failure_reset,
            ),
            ("AUTH_DEVICE_TOKEN_TTL_SECS", self.devices.ttl),
            ("AUTH_POLICY_MAX_STALENESS_MS", self.policy_max_staleness),
            ("AUTH_PRUNE_INTERVAL_SECS", self.prune_interval),
        ];
        for (name, value) in durations {
            if value.is_zero() {
                bail!("{name} must be more than zero");
            }
            if value > MAX_DURATION {
                bail!("{name} is too long (at most {} s)", MAX_DURATION.as_secs());
            }
        }
        if self.policy_max_staleness < 2 * host::notifications::SILENCE_LIMIT {
            bail!(
                "AUTH_POLICY_MAX_STALENESS_MS must be at least {} ms",
                (2 * host::notifications::SILENCE_LIMIT).as_millis()
            );
        }
        if self.lockout.max_failures > 1000 {
            bail!("AUTH_LOCKOUT_MAX_FAILURES must be at most 1000");
        }
        if self.lockout.address_max_failures > 1_000_000 {
            bail!("AUTH_LOCKOUT_ADDRESS_MAX_FAILURES must be at most 1000000");
        }
        if self.devices.per_user > 1000 {
            bail!("AUTH_DEVICE_TOKENS_PER_USER must be at most 1000");
        }
        if self.tokens.sessions_per_user > 1000 {
            bail!("AUTH_SESSIONS_PER_USER must be at most 1000");
        }
        // Chat keeps no answer for a user the revocation feed named in the
        // last 10 s: no replica may answer from older state than that.
        if self.policy_max_staleness > host::notifications::MAX_STALENESS {
            bail!(
                "AUTH_POLICY_MAX_STALENESS_MS must be at most {} ms",
                host::notifications::MAX_STALENESS.as_millis()
            );
        }
        if self
            .service_secret
            .as_ref()
            .is_some_and(|secret| secret.expose_secret().len() < MIN_SECRET_LEN)
        {
            bail!("AUTH_SERVICE_SECRET must be at least {MIN_SECRET_LEN} bytes");
        }
        let mut ids = std::collections::HashSet::new();
        for key in &self.tokens.signing_keys {
            if !ids.insert(key.id.as_str()) {
                bail!("AUTH_JWT_KEYS names key {:?} twice", key.id);
            }
        }
        Ok(())
    }

    pub fn from_env() -> anyhow::Result<Config> {
        Config::from_vars(|name| std::env::var(name).ok())
    }

    /// Reads the settings through `var`, which looks a variable up by name.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> anyhow::Result<Config> {
        let database_url: SecretString = var("AUTH_DATABASE_URL")
            .context("AUTH_DATABASE_URL is not set (postgres://user:password@host:port/database)")?
            .into();
        let dev_mode = var_or(&var, "AUTH_DEV_MODE", "false")?;
        let signing_keys = match var("AUTH_JWT_KEYS") {
            Some(keys) => parse_signing_keys(&keys)?,
            None if dev_mode => {
                tracing::warn!(
                    "AUTH_DEV_MODE: signing access tokens with the public development key"
                );
                vec![SigningKey {
                    id: "dev".to_owned(),
                    secret: DEV_SIGNING_KEY.into(),
                }]
            }
            None => bail!(
                "AUTH_JWT_KEYS is not set (id:secret[,id:secret...]; or AUTH_DEV_MODE=true for development)"
            ),
        };
        let defaults = Config::with_defaults(database_url, signing_keys);
        let seconds = |name: &str, default: Duration| -> anyhow::Result<Duration> {
            Ok(Duration::from_secs(var_or(
                &var,
                name,
                &default.as_secs().to_string(),
            )?))
        };
        let bootstrap_admin = match var("AUTH_BOOTSTRAP_ADMIN_NAME") {
            Some(name) => Some(BootstrapAdmin {
                name,
                email: var("AUTH_BOOTSTRAP_ADMIN_EMAIL").context("AUTH_BOOTSTRAP_ADMIN_NAME is set, so AUTH_BOOTSTRAP_ADMIN_EMAIL must be too")?,
                password: var("AUTH_BOOTSTRAP_ADMIN_PASSWORD").context("AUTH_BOOTSTRAP_ADMIN_NAME is set, so AUTH_BOOTSTRAP_ADMIN_PASSWORD must be too")?
                    .into(),
            }),
            None => None,
        };
        let config = Config {
            edge: Edge::from_vars(&var, "AUTH", defaults.edge.clone())?,
            database: DatabaseConfig {
                url: defaults.database.url,
                max_connections: var_or(
                    &var,
                    "AUTH_DATABASE_MAX_CONNECTIONS",
                    &defaults.database.max_connections.to_string(),
                )?,
            },
            tokens: TokenConfig {
                access_ttl: seconds("AUTH_ACCESS_TOKEN_TTL_SECS", defaults.tokens.access_ttl)?,
                refresh_ttl: seconds("AUTH_REFRESH_TOKEN_TTL_SECS", defaults.tokens.refresh_ttl)?,
                family_ttl: seconds("AUTH_REFRESH_FAMILY_TTL_SECS", defaults.tokens.family_ttl)?,
                signing_keys: defaults.tokens.signing_keys,
                sessions_per_user: var_or(
                    &var,
                    "AUTH_SESSIONS_PER_USER",
                    &defaults.tokens.sessions_per_user.to_string(),
                )?,
            },
            passwords: PasswordConfig {
                memory_kib: var_or(
                    &var,
                    "AUTH_ARGON2_MEMORY_KIB",
                    &defaults.passwords.memory_kib.to_string(),
                )?,
                iterations: var_or(
                    &var,
                    "AUTH_ARGON2_ITERATIONS",
                    &defaults.passwords.iterations.to_string(),
                )?,
                parallelism: var_or(
                    &var,
                    "AUTH_ARGON2_PARALLELISM",
                    &defaults.passwords.parallelism.to_string(),
                )?,
                max_concurrent_hashes: var_or(
                    &var,
                    "AUTH_MAX_CONCURRENT_HASHES",
                    &defaults.passwords.max_concurrent_hashes.to_string(),
                )?,
                queued_checks: var_or(
                    &var,
                    "AUTH_HASH_QUEUE_CHECKS",
                    &defaults.passwords.queued_checks.to_string(),
                )?,
                queued_new_hashes: var_or(
                    &var,
                    "AUTH_HASH_QUEUE_NEW_PASSWORDS",
                    &defaults.passwords.queued_new_hashes.to_string(),
                )?,
            },
            lockout: LockoutConfig {
                max_failures: var_or(
                    &var,
                    "AUTH_LOCKOUT_MAX_FAILURES",
                    &defaults.lockout.max_failures.to_string(),
                )?,
                wait_increment: seconds(
                    "AUTH_LOCKOUT_WAIT_INCREMENT_SECS",
                    defaults.lockout.wait_increment,
                )?,
                max_wait: seconds("AUTH_LOCKOUT_MAX_WAIT_SECS", defaults.lockout.max_wait)?,
                failure_reset: seconds(
                    "AUTH_LOCKOUT_FAILURE_RESET_SECS",
                    defaults.lockout.failure_reset,
                )?,
                address_max_failures: var_or(
                    &var,
                    "AUTH_LOCKOUT_ADDRESS_MAX_FAILURES",
                    &defaults.lockout.address_max_failures.to_string(),
                )?,
                address_failure_reset: seconds(
                    "AUTH_LOCKOUT_ADDRESS_FAILURE_RESET_SECS",
                    defaults.lockout.address_failure_reset,
                )?,
            },
            devices: DeviceConfig {
                ttl: seconds("AUTH_DEVICE_TOKEN_TTL_SECS", defaults.devices.ttl)?,
                per_user: var_or(
                    &var,
                    "AUTH_DEVICE_TOKENS_PER_USER",
                    &defaults.devices.per_user.to_string(),
                )?,
            },
            quotas: QuotaConfig {
                registrations: rate(
                    &var,
                    "AUTH_QUOTA_REGISTRATIONS",
                    defaults.quotas.registrations,
                )?,
                anonymous_calls: rate(
                    &var,
                    "AUTH_QUOTA_ANONYMOUS_CALLS",
                    defaults.quotas.anonymous_calls,
                )?,
                password_resets: rate(
                    &var,
                    "AUTH_QUOTA_PASSWORD_RESETS",
                    defaults.quotas.password_resets,
                )?,
                password_resets_per_email: rate(
                    &var,
                    "AUTH_QUOTA_PASSWORD_RESETS_PER_EMAIL",
                    defaults.quotas.password_resets_per_email,
                )?,
                email_changes: rate(
                    &var,
                    "AUTH_QUOTA_EMAIL_CHANGES",
                    defaults.quotas.email_changes,
                )?,
            },
            bootstrap_admin,
            policy_max_staleness: Duration::from_millis(var_or(
                &var,
                "AUTH_POLICY_MAX_STALENESS_MS",
                &defaults.policy_max_staleness.as_millis().to_string(),
            )?),
            prune_interval: seconds("AUTH_PRUNE_INTERVAL_SECS", defaults.prune_interval)?,
            // AUTH_WATCH_SECRET is its name from when it only opened the
            // revocation feed.
            service_secret: var("AUTH_SERVICE_SECRET")
                .or_else(|| var("AUTH_WATCH_SECRET"))
                .filter(|secret| !secret.is_empty())
                .map(SecretString::from),
            service_client_names: match var("AUTH_SERVICE_CLIENT_NAMES") {
                Some(names) => names
                    .split(',')
                    .map(str::trim)
                    .filter(|name| !name.is_empty())
                    .map(str::to_owned)
                    .collect(),
                None => defaults.service_client_names.clone(),
            },
            mail: MailConfig::from_vars(&var)?,
        };
        config.validate()?;
        Ok(config)
    }
}

/// `id:secret[,id:secret...]`; secrets of at least 32 bytes.
pub fn parse_signing_keys(keys: &str) -> anyhow::Result<Vec<SigningKey>> {
    let keys = keys
        .split(',')
        .map(|pair| {
            let (id, secret) = pair
                .trim()
                .split_once(':')
                .context("AUTH_JWT_KEYS entries look like id:secret")?;
            if id.is_empty() {
                bail!("AUTH_JWT_KEYS has a key without an id");
            }
            if secret.len() < MIN_SECRET_LEN {
                bail!("AUTH_JWT_KEYS key {id:?} is shorter than {MIN_SECRET_LEN} bytes");
            }
            Ok(SigningKey {
                id: id.to_owned(),
                secret: secret.into(),
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if keys.is_empty() {
        bail!("AUTH_JWT_KEYS names no key");
    }
    let mut ids = std::collections::HashSet::new();
    if let Some(twice) = keys.iter().find(|key| !ids.insert(key.id.as_str())) {
        bail!("AUTH_JWT_KEYS names key {:?} twice", twice.id);
    }
    Ok(keys)
}

impl SigningKey {
    pub fn secret_bytes(&self) -> &[u8] {
        self.secret.expose_secret().as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signing_keys_parse_in_order() {
        let keys = parse_signing_keys(
            "new:0123456789abcdef0123456789abcdef, old:fedcba9876543210fedcba9876543210",
        )
        .expect("valid keys");
        assert_eq!(
            keys.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(),
            ["new", "old"]
        );
    }

    #[test]
    fn short_or_unnamed_signing_keys_are_refused() {
        assert!(parse_signing_keys("k:short").is_err());
        assert!(parse_signing_keys(":0123456789abcdef0123456789abcdef").is_err());
        assert!(parse_signing_keys("no-colon").is_err());
    }

    fn vars(extra: &[(&str, &str)]) -> anyhow::Result<Config> {
        let mut all = vec![
            ("AUTH_DATABASE_URL", "postgres://u@db/auth"),
            ("AUTH_JWT_KEYS", "k:0123456789abcdef0123456789abcdef"),
        ];
        all.extend_from_slice(extra);
        Config::from_vars(|name| {
            all.iter()
                .rev()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        })
    }

    #[test]
    fn the_defaults_are_valid() {
        vars(&[]).expect("valid defaults");
    }

    #[test]
    fn impossible_settings_are_refused_at_start_up() {
        for (name, value, says) in [
            (
                "AUTH_JWT_KEYS",
                "k:0123456789abcdef0123456789abcdef,k:fedcba9876543210fedcba9876543210",
                "twice",
            ),
            ("AUTH_MAX_CONCURRENT_HASHES", "0", "at least 1"),
            ("AUTH_DATABASE_MAX_CONNECTIONS", "0", "at least 1"),
            ("AUTH_LOCKOUT_MAX_FAILURES", "0", "at least 1"),
            ("AUTH_ACCESS_TOKEN_TTL_SECS", "0", "more than zero"),
            (
                "AUTH_REFRESH_TOKEN_TTL_SECS",
                "18446744073709551615",
                "too long",
            ),
            ("AUTH_REFRESH_FAMILY_TTL_SECS", "99999999999999", "too long"),
            ("AUTH_LOCKOUT_MAX_WAIT_SECS", "99999999999999", "too long"),
            ("AUTH_POLICY_MAX_STALENESS_MS", "10", "at least"),
            ("AUTH_POLICY_MAX_STALENESS_MS", "10000", "at most"),
            ("AUTH_SESSIONS_PER_USER", "0", "at least 1"),
            ("AUTH_SESSIONS_PER_USER", "1001", "at most"),
        ] {
            let error = vars(&[(name, value)]).expect_err(name).to_string();
            assert!(
                error.contains(name) && error.contains(says),
                "{name}={value}: {error}"
            );
        }
    }

    #[test]
    fn debug_output_hides_secrets() {
        let config = Config::with_defaults(
            "postgres://u:hunter2@db/auth".to_owned().into(),
            parse_signing_keys("k:0123456789abcdef0123456789abcdef").expect("valid key"),
        );
        let debug = format!("{config:?}");
        assert!(!debug.contains("hunter2"));
        assert!(!debug.contains("0123456789abcdef"));
    }
}
