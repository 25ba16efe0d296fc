//! Settings, read from `CHAT_*` environment variables (docs/chat.md lists
//! them with their defaults).

use std::time::Duration;

use anyhow::Context as _;
use host::config::var_or;
use host::quota::rate_var as rate;
use host::server::Edge;
use secrecy::SecretString;

pub use crate::quotas::QuotaConfig;

/// How often watched chats are compared with the database, by default.
pub const DEFAULT_FANOUT_POLL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct Config {
    /// Where it listens and how connections are kept (`CHAT_GRPC_ADDR`,
    /// `CHAT_HTTP_ADDR`, `CHAT_METRICS_ADDR`, `CHAT_CORS_ORIGINS`,
    /// `CHAT_HTTP2_KEEPALIVE_*`).
    pub edge: Edge,
    pub database: DatabaseConfig,
    pub auth: AuthConfig,
    /// How many events a stream's receiver holds before it lags; a lagging
    /// stream catches up from the database.
    pub stream_buffer: usize,
    /// A stream whose client reads nothing for this long, with messages
    /// waiting, is ended with `RESOURCE_EXHAUSTED`.
    pub stream_stall_timeout: Duration,
    /// How replicas tell each other of new messages and deleted chats.
    pub fanout: Fanout,
    /// How chat proves itself to NATS, and whom it trusts there.
    pub fanout_auth: FanoutAuth,
    /// How often open streams' chats are compared with the database, which
    /// finds whatever the fan-out lost.
    pub fanout_poll: Duration,
    /// What one user may do how often (`CHAT_QUOTA_*`).
    pub quotas: QuotaConfig,
    /// How sends share transactions.
    pub group_commit: GroupCommitConfig,
}

/// How replicas tell each other of new messages and deleted chats (see
/// [`crate::bus`]).
#[derive(Clone, PartialEq, Eq)]
pub enum Fanout {
    /// PostgreSQL's `NOTIFY`: nothing else to run.
    Postgres,
    /// A NATS server or cluster: `nats://host:port`, several comma-separated,
    /// each with credentials if the servers want them
    /// (`nats://user:password@host:port`, `tls://...` for TLS).
    Nats(String),
}

/// Credentials and TLS for the NATS fan-out (`CHAT_FANOUT_USER`,
/// `CHAT_FANOUT_PASSWORD`, `CHAT_FANOUT_CA_FILE`): kept apart from the URL,
/// so that no address in a log carries them.
#[derive(Debug, Clone, Default)]
pub struct FanoutAuth {
    pub user: Option<String>,
    pub password: Option<SecretString>,
    /// PEM certificates that sign the NATS servers' own (with `tls://`
    /// URLs); unset trusts the system's roots.
    pub ca_file: Option<std::path::PathBuf>,
}

/// Never shows the credentials a NATS URL carries.
impl std::fmt::Debug for Fanout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fanout::Postgres => f.write_str("Postgres"),
            Fanout::Nats(_) => write!(f, "Nats({})", self.redacted()),
        }
    }
}

impl Fanout {
    /// The servers' addresses, without the user names and passwords they
    /// carry: what a log line may show.
    pub fn redacted(&self) -> String {
        match self {
            Fanout::Postgres => "postgres".to_owned(),
            Fanout::Nats(url) => url
                .split(',')
                .map(|server| {
                    let server = server.trim();
                    match (server.split_once("://"), server.rfind('@')) {
                        (Some((scheme, _)), Some(at)) => {
                            format!("{scheme}://***@{}", &server[at + 1..])
                        }
                        _ => server.to_owned(),
                    }
                })
                .collect::<Vec<_>>()
                .join(","),
        }
    }

    /// From `CHAT_FANOUT_URL`: empty or unset is PostgreSQL.
    pub fn parse(url: Option<&str>) -> anyhow::Result<Fanout> {
        let Some(url) = url.map(str::trim).filter(|url| !url.is_empty()) else {
            return Ok(Fanout::Postgres);
        };
        for server in url.split(',') {
            let server = server.trim();
            let scheme_ok = ["nats://", "tls://"]
                .iter()
                .any(|scheme| server.starts_with(scheme) && server.len() > scheme.len());
            anyhow::ensure!(
                scheme_ok,
                "CHAT_FANOUT_URL names NATS servers as nats://host:port (or tls://), comma-separated, not {server:?}"
            );
        }
        Ok(Fanout::Nats(url.to_owned()))
    }
}

#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    pub url: SecretString,
    pub max_connections: u32,
}

#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// The auth service's gRPC address, as a URI (`http://host:port`).
    pub url: String,
    /// The longest an access check may take; shorter when the guarded call
    /// itself has less time left.
    pub check_timeout: Duration,
    /// What chat presents to auth when it calls on its own behalf: to
    /// watch revocations and to look up names and ids (auth's
    /// `AUTH_SERVICE_SECRET`). Required when read from the environment.
    pub service_secret: Option<SecretString>,
    /// How chat reaches an `https://` auth.
    pub tls: AuthTls,
    /// How long auth's answers to `Check` are kept (see
    /// [`crate::access_cache`]); zero keeps none
    /// (`CHAT_ACCESS_CACHE_TTL_MS`).
    pub access_cache_ttl: Duration,
}

/// TLS to auth: the CA that issued auth's certificate (`CHAT_AUTH_CA_FILE`;
/// the system's roots without it) and chat's own client certificate for
/// mutual TLS (`CHAT_AUTH_CLIENT_CERT_FILE`, `CHAT_AUTH_CLIENT_KEY_FILE`).
#[derive(Debug, Clone, Default)]
pub struct AuthTls {
    pub ca_file: Option<std::path::PathBuf>,
    pub client_cert_file: Option<std::path::PathBuf>,
    pub client_key_file: Option<std::path::PathBuf>,
}

impl Config {
    pub fn with_defaults(database_url: SecretString, auth_url: String) -> Config {
        Config {
            edge: Edge::with_ports(50052, 8082, 9102),
            database: DatabaseConfig {
                url: database_url,
                max_connections: 10,
            },
            auth: AuthConfig {
                url: auth_url,
                check_timeout: Duration::from_secs(2),
                service_secret: None,
                tls: AuthTls::default(),
                access_cache_ttl: Duration::from_secs(30),
            },
            stream_buffer: 256,
            stream_stall_timeout: Duration::from_secs(10),
            fanout: Fanout::Postgres,
            fanout_auth: FanoutAuth::default(),
            fanout_poll: DEFAULT_FANOUT_POLL,
            quotas: QuotaConfig::default(),
            group_commit: GroupCommitConfig::default(),
        }
    }

    pub fn from_env() -> anyhow::Result<Config> {
        Config::from_vars(|name| std::env::var(name).ok())
    }

    /// Reads the settings through `var`, which looks a variable up by name.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> anyhow::Result<Config> {
        let database_url: SecretString = var("CHAT_DATABASE_URL")
            .context("CHAT_DATABASE_URL is not set (postgres://user:password@host:port/database)")?
            .into();
        let auth_url = var("CHAT_AUTH_URL").unwrap_or_else(|| "http://127.0.0.1:50051".to_owned());
        let defaults = Config::with_defaults(database_url, auth_url);
        let fanout_poll = Duration::from_millis(var_or(
            &var,
            "CHAT_FANOUT_POLL_MS",
            &defaults.fanout_poll.as_millis().to_string(),
        )?);
        anyhow::ensure!(
            !fanout_poll.is_zero(),
            "CHAT_FANOUT_POLL_MS must be at least 1"
        );
        let writers: usize = var_or(
            &var,
            "CHAT_SEND_WRITERS",
            &defaults.group_commit.writers.to_string(),
        )?;
        let max_batch: usize = var_or(
            &var,
            "CHAT_SEND_BATCH_MAX",
            &defaults.group_commit.max_batch.to_string(),
        )?;
        // The hub holds at most 256 messages per chat that arrive ahead of a
        // gap, as one writer's batch can arrive ahead of another's.
        anyhow::ensure!(
            (1..=8).contains(&writers),
            "CHAT_SEND_WRITERS must be 1 to 8"
        );
        anyhow::ensure!(
            (1..=256).contains(&max_batch),
            "CHAT_SEND_BATCH_MAX must be 1 to 256"
        );
        let path = |name: &str| {
            var(name)
                .filter(|path| !path.trim().is_empty())
                .map(std::path::PathBuf::from)
        };
        let auth_tls = AuthTls {
            ca_file: path("CHAT_AUTH_CA_FILE"),
            client_cert_file: path("CHAT_AUTH_CLIENT_CERT_FILE"),
            client_key_file: path("CHAT_AUTH_CLIENT_KEY_FILE"),
        };
        anyhow::ensure!(
            auth_tls.client_cert_file.is_some() == auth_tls.client_key_file.is_some(),
            "CHAT_AUTH_CLIENT_CERT_FILE and CHAT_AUTH_CLIENT_KEY_FILE go together"
        );
        let tls_settings = auth_tls.ca_file.is_some() || auth_tls.client_cert_file.is_some();
        anyhow::ensure!(
            !tls_settings || defaults.auth.url.starts_with("https://"),
            "CHAT_AUTH_CA_FILE and CHAT_AUTH_CLIENT_CERT_FILE are for TLS: CHAT_AUTH_URL must be https://"
        );
        Ok(Config {
            edge: Edge::from_vars(&var, "CHAT", defaults.edge.clone())?,
            database: DatabaseConfig {
                max_connections: var_or(
                    &var,
                    "CHAT_DATABASE_MAX_CONNECTIONS",
                    &defaults.database.max_connections.to_string(),
                )?,
                ..defaults.database
            },
            auth: AuthConfig {
                check_timeout: Duration::from_millis(var_or(
                    &var,
                    "CHAT_AUTH_CHECK_TIMEOUT_MS",
                    &defaults.auth.check_timeout.as_millis().to_string(),
                )?),
                service_secret: service_secret(&var, &auth_tls)?,
                tls: auth_tls,
                access_cache_ttl: Duration::from_millis(var_or(
                    &var,
                    "CHAT_ACCESS_CACHE_TTL_MS",
                    &defaults.auth.access_cache_ttl.as_millis().to_string(),
                )?),
                ..defaults.auth
            },
            stream_buffer: var_or(
                &var,
                "CHAT_STREAM_BUFFER",
                &defaults.stream_buffer.to_string(),
            )?,
            stream_stall_timeout: Duration::from_millis(var_or(
                &var,
                "CHAT_STREAM_STALL_TIMEOUT_MS",
                &defaults.stream_stall_timeout.as_millis().to_string(),
            )?),
            group_commit: GroupCommitConfig { writers, max_batch },
            fanout: Fanout::parse(var("CHAT_FANOUT_URL").as_deref())?,
            fanout_auth: {
                let auth = FanoutAuth {
                    user: var("CHAT_FANOUT_USER").filter(|user| !user.is_empty()),
                    password: var("CHAT_FANOUT_PASSWORD")
                        .filter(|password| !password.is_empty())
                        .map(SecretString::from),
                    ca_file: var("CHAT_FANOUT_CA_FILE")
                        .filter(|path| !path.is_empty())
                        .map(std::path::PathBuf::from),
                };
                anyhow::ensure!(
                    auth.user.is_some() == auth.password.is_some(),
                    "CHAT_FANOUT_USER and CHAT_FANOUT_PASSWORD go together"
                );
                auth
            },
            fanout_poll,
            quotas: QuotaConfig {
                sends: rate(&var, "CHAT_QUOTA_SENDS", defaults.quotas.sends)?,
                chats_created: rate(
                    &var,
                    "CHAT_QUOTA_CHATS_CREATED",
                    defaults.quotas.chats_created,
                )?,
                members_added: rate(
                    &var,
                    "CHAT_QUOTA_MEMBERS_ADDED",
                    defaults.quotas.members_added,
                )?,
                open_streams: match var("CHAT_QUOTA_OPEN_STREAMS").as_deref().map(str::trim) {
                    None => defaults.quotas.open_streams,
                    Some("off") => None,
                    Some(most) => Some(
                        most.parse::<u32>()
                            .ok()
                            .filter(|most| *most > 0)
                            .context("CHAT_QUOTA_OPEN_STREAMS is a number above 0, or off")?,
                    ),
                },
                read_marks: rate(&var, "CHAT_QUOTA_READ_MARKS", defaults.quotas.read_marks)?,
                typing: rate(&var, "CHAT_QUOTA_TYPING", defaults.quotas.typing)?,
            },
        })
    }
}

/// `CHAT_AUTH_SERVICE_SECRET` (or its former name,
/// `CHAT_AUTH_WATCH_SECRET`): required, unless chat proves who it is with
/// a client certificate.
fn service_secret(
    var: &impl Fn(&str) -> Option<String>,
    tls: &AuthTls,
) -> anyhow::Result<Option<SecretString>> {
    let secret = var("CHAT_AUTH_SERVICE_SECRET")
        .or_else(|| var("CHAT_AUTH_WATCH_SECRET"))
        .filter(|secret| !secret.is_empty())
        .map(SecretString::from);
    if secret.is_none() && tls.client_cert_file.is_none() {
        anyhow::bail!(
            "CHAT_AUTH_SERVICE_SECRET is not set: chat presents it to auth (auth's AUTH_SERVICE_SECRET) to look up names and ids and to watch revocations, unless it has a client certificate for mutual TLS (CHAT_AUTH_CLIENT_CERT_FILE)"
        );
    }
    Ok(secret)
}

/// How sends share transactions (see [`crate::group_commit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupCommitConfig {
    /// Batches committed at once (`CHAT_SEND_WRITERS`): while one flushes,
    /// the next gathers.
    pub writers: usize,
    /// The most sends one batch takes (`CHAT_SEND_BATCH_MAX`).
    pub max_batch: usize,
}

impl Default for GroupCommitConfig {
    fn default() -> GroupCommitConfig {
        GroupCommitConfig {
            writers: 2,
            max_batch: 256,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fanout_is_postgres_unless_nats_servers_are_named() {
        assert_eq!(Fanout::parse(None).ok(), Some(Fanout::Postgres));
        assert_eq!(Fanout::parse(Some(" ")).ok(), Some(Fanout::Postgres));
        assert_eq!(
            Fanout::parse(Some("nats://a:4222,tls://b:4222")).ok(),
            Some(Fanout::Nats("nats://a:4222,tls://b:4222".to_owned()))
        );
        for wrong in ["a:4222", "http://a:4222", "nats://", "nats://a:4222,"] {
            assert!(Fanout::parse(Some(wrong)).is_err(), "{wrong:?}");
        }
    }

    #[test]
    fn nats_credentials_never_show() {
        let fanout = Fanout::parse(Some("nats://chat:s3cret@a:4222, tls://b:4222")).expect("valid");
        for shown in [fanout.redacted(), format!("{fanout:?}")] {
            assert!(
                !shown.contains("s3cret") && !shown.contains("chat:"),
                "{shown}"
            );
            assert!(
                shown.contains("a:4222") && shown.contains("tls://b:4222"),
                "{shown}"
            );
        }
    }

    #[test]
    fn a_poll_interval_of_zero_is_refused() {
        let vars = |poll: &'static str| {
            move |name: &str| match name {
                "CHAT_DATABASE_URL" => Some("postgres://localhost/chat".to_owned()),
                "CHAT_FANOUT_POLL_MS" => Some(poll.to_owned()),
                "CHAT_AUTH_SERVICE_SECRET" => Some("a-service-secret".to_owned()),
                _ => None,
            }
        };
        assert!(Config::from_vars(vars("0")).is_err());
        let config = Config::from_vars(vars("250")).expect("valid settings");
        assert_eq!(config.fanout_poll, Duration::from_millis(250));
    }

    #[test]
    fn the_service_secret_is_required_and_read_by_its_former_name_too() {
        let vars = |secret: Option<(&'static str, &'static str)>| {
            move |name: &str| match name {
                "CHAT_DATABASE_URL" => Some("postgres://localhost/chat".to_owned()),
                _ => secret
                    .filter(|(variable, _)| *variable == name)
                    .map(|(_, value)| value.to_owned()),
            }
        };
        let missing = Config::from_vars(vars(None)).expect_err("no secret");
        assert!(
            missing.to_string().contains("CHAT_AUTH_SERVICE_SECRET"),
            "{missing}"
        );
        assert!(Config::from_vars(vars(Some(("CHAT_AUTH_SERVICE_SECRET", "")))).is_err());
        let former = Config::from_vars(vars(Some(("CHAT_AUTH_WATCH_SECRET", "s"))))
            .expect("the former name");
        assert_eq!(
            former
                .auth
                .service_secret
                .as_ref()
                .map(secrecy::ExposeSecret::expose_secret),
            Some("s")
        );
    }
}
