//! The session a login leaves behind, and the clients that use it.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use api::auth::v1 as auth_pb;
use api::auth::v1::auth_service_client::AuthServiceClient;
use api::auth::v1::user_service_client::UserServiceClient;
use api::chat::v1::chat_service_client::ChatServiceClient;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use tonic::transport::Channel;

/// Refresh the access token when it has less than this left.
const REFRESH_MARGIN_SECS: u64 = 15;

#[derive(Serialize, Deserialize, Default)]
struct Session {
    /// Empty once logged out.
    username: String,
    refresh_token: String,
    access_token: String,
    /// The device token of each name logged in with here, by its lower
    /// case: kept across logouts, since it is no credential, only what lets
    /// auth count this device's failed logins apart from strangers'.
    #[serde(default)]
    device_tokens: std::collections::BTreeMap<String, String>,
}

pub struct Client {
    auth: Channel,
    chat: Channel,
    session_file: PathBuf,
}

impl Client {
    pub fn new(
        auth_url: &str,
        chat_url: &str,
        ca_file: Option<&std::path::Path>,
        config_dir: PathBuf,
    ) -> anyhow::Result<Client> {
        let ca = match ca_file {
            Some(path) => Some(tonic::transport::Certificate::from_pem(
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
            )),
            None => None,
        };
        let channel = |url: &str| -> anyhow::Result<Channel> {
            let mut endpoint = Channel::from_shared(url.to_owned())
                .with_context(|| format!("{url} is not a server address"))?
                // What the user's session list shows this client as.
                .user_agent(concat!("chatctl/", env!("CARGO_PKG_VERSION")))
                .context("the client's name")?;
            if url.starts_with("https://") {
                let tls = tonic::transport::ClientTlsConfig::new();
                let tls = match &ca {
                    Some(ca) => tls.ca_certificate(ca.clone()),
                    None => tls.with_native_roots(),
                };
                endpoint = endpoint
                    .tls_config(tls)
                    .with_context(|| format!("TLS to {url}"))?;
            }
            Ok(endpoint.connect_lazy())
        };
        Ok(Client {
            auth: channel(auth_url)?,
            chat: channel(chat_url)?,
            session_file: config_dir.join("session.json"),
        })
    }

    pub fn users(&self) -> UserServiceClient<Channel> {
        UserServiceClient::new(self.auth.clone())
    }

    /// The id of the user the kept session belongs to, if any.
    pub fn own_id(&self) -> Option<i64> {
        let session = self.stored().ok()?;
        claims(&session.access_token)?["sub"].as_str()?.parse().ok()
    }

    pub fn sessions(&self) -> AuthServiceClient<Channel> {
        AuthServiceClient::new(self.auth.clone())
    }

    pub fn chats(&self) -> ChatServiceClient<Channel> {
        ChatServiceClient::new(self.chat.clone())
    }

    /// Logs in; for an account with two-factor login on, `code` is asked
    /// for once the password is found right.
    pub async fn login(
        &mut self,
        name: &str,
        password: &str,
        code: impl FnOnce() -> anyhow::Result<String>,
    ) -> anyhow::Result<()> {
        let mut device_tokens = self
            .stored()
            .map(|kept| kept.device_tokens)
            .unwrap_or_default();
        let key = name.to_lowercase();
        let mut auth = AuthServiceClient::new(self.auth.clone());
        let mut tokens = auth
            .login(auth_pb::LoginRequest {
                username: name.to_owned(),
                password: password.to_owned(),
                device_token: device_tokens.get(&key).cloned().unwrap_or_default(),
                accepts_second_factor: true,
            })
            .await?
            .into_inner();
        if !tokens.second_factor_challenge.is_empty() {
            let done = auth
                .complete_login(auth_pb::CompleteLoginRequest {
                    challenge: tokens.second_factor_challenge,
                    code: code()?,
                })
                .await?
                .into_inner();
            tokens = auth_pb::LoginResponse {
                refresh_token: done.refresh_token,
                access_token: done.access_token,
                device_token: done.device_token,
                ..Default::default()
            };
        }
        device_tokens.insert(key, tokens.device_token);
        self.save(&Session {
            username: name.to_owned(),
            refresh_token: tokens.refresh_token,
            access_token: tokens.access_token,
            device_tokens,
        })
    }

    pub async fn logout(&mut self) -> anyhow::Result<()> {
        let session = self.load()?;
        AuthServiceClient::new(self.auth.clone())
            .logout(auth_pb::LogoutRequest {
                refresh_token: session.refresh_token,
            })
            .await?;
        self.save(&Session {
            device_tokens: session.device_tokens,
            ..Session::default()
        })
    }

    /// The signed-in user, as auth has them now: the access token names
    /// the id, and `UserService/Get` answers for it. (`AccessService/Check`
    /// is for services, and under mutual TLS refuses clients like this.)
    pub async fn whoami(&mut self) -> anyhow::Result<auth_pb::User> {
        let session = self.load()?;
        let id: i64 = claims(&session.access_token)
            .and_then(|claims| claims["sub"].as_str()?.parse().ok())
            .context("not logged in (the session holds no access token)")?;
        let request = self.authorized(auth_pb::GetRequest { id }).await?;
        UserServiceClient::new(self.auth.clone())
            .get(request)
            .await?
            .into_inner()
            .user
            .context("no user in the answer")
    }

    pub async fn authorized<T>(&mut self, message: T) -> anyhow::Result<tonic::Request<T>> {
        let mut session = self.load()?;
        if expires_within(&session.access_token, REFRESH_MARGIN_SECS) {
            let mut sessions = AuthServiceClient::new(self.auth.clone());
            session.refresh_token = sessions
                .get_refresh_token(auth_pb::GetRefreshTokenRequest {
                    refresh_token: session.refresh_token.clone(),
                })
                .await
                .context("the session has ended: log in again")?
                .into_inner()
                .refresh_token;
            // Saved at once: the old refresh token is spent.
            self.save(&session)?;
            session.access_token = sessions
                .get_access_token(auth_pb::GetAccessTokenRequest {
                    refresh_token: session.refresh_token.clone(),
                })
                .await?
                .into_inner()
                .access_token;
            self.save(&session)?;
        }
        let mut request = tonic::Request::new(message);
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", session.access_token)
                .parse()
                .context("the stored access token is corrupt: log in again")?,
        );
        Ok(request)
    }

    fn load(&self) -> anyhow::Result<Session> {
        let session = self.stored()?;
        if session.refresh_token.is_empty() {
            anyhow::bail!("not logged in: run chatctl login NAME");
        }
        Ok(session)
    }

    /// What the session file holds, logged in or not.
    fn stored(&self) -> anyhow::Result<Session> {
        let text = std::fs::read_to_string(&self.session_file)
            .map_err(|_| anyhow::anyhow!("not logged in: run chatctl login NAME"))?;
        serde_json::from_str(&text).context("the stored session is corrupt: log in again")
    }

    fn save(&self, session: &Session) -> anyhow::Result<()> {
        if let Some(dir) = self.session_file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        write_private(&self.session_file, &serde_json::to_vec_pretty(session)?)
    }
}

/// Writes a file only its owner may read: it holds tokens. The bytes go to
/// a new file made with that mode, which then replaces the old one: a file
/// left readable by others (made by hand, or by an older chatctl) is
/// tightened too, and a crash mid-write leaves the old session whole. A
/// session file that is a symbolic link is written where it points.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let target = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    // Each process stages its own file: two chatctl runs at once never
    // write into one.
    let staged = target.with_extension(format!("json.{}.new", std::process::id()));
    let written = stage(&staged, bytes).and_then(|()| {
        std::fs::rename(&staged, &target).with_context(|| format!("writing {}", target.display()))
    });
    if written.is_err() {
        let _ = std::fs::remove_file(&staged);
    }
    written
}

/// `bytes` in a new file at `staged` that only its owner may read.
fn stage(staged: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(staged)
        .with_context(|| format!("writing {}", staged.display()))?;
    // A file staged earlier and left behind keeps its old mode: set it.
    std::fs::set_permissions(staged, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(())
}

/// Whether a JWT's `exp` is less than `margin` seconds away. The token is
/// not verified here; the server does that.
/// A JWT's claims, read without checking its signature: what the client
/// learns of its own token (auth checks it on every call).
fn claims(token: &str) -> Option<serde_json::Value> {
    let payload = token.split('.').nth(1)?;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice(&json).ok()
}

fn expires_within(token: &str, margin: u64) -> bool {
    let exp = claims(token).and_then(|claims| claims["exp"].as_u64());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    exp.is_none_or(|exp| exp <= now + margin)
}

pub fn default_config_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_CONFIG_HOME") {
        return Ok(PathBuf::from(dir).join("chatctl"));
    }
    let home = std::env::var_os("HOME")
        .context("neither XDG_CONFIG_HOME nor HOME is set: use --config-dir")?;
    Ok(PathBuf::from(home).join(".config").join("chatctl"))
}

/// One line for any error: a server's status as its code and message.
pub fn describe(error: &anyhow::Error) -> String {
    if let Some(status) = error.downcast_ref::<tonic::Status>() {
        let code = match status.code() {
            tonic::Code::InvalidArgument => "invalid argument",
            tonic::Code::NotFound => "not found",
            tonic::Code::AlreadyExists => "already exists",
            tonic::Code::PermissionDenied => "permission denied",
            tonic::Code::Unauthenticated => "not authenticated (log in again?)",
            tonic::Code::ResourceExhausted => "refused for now",
            tonic::Code::Aborted => "conflict, try again",
            tonic::Code::FailedPrecondition => "not possible now",
            tonic::Code::Unavailable => "service unavailable",
            tonic::Code::DeadlineExceeded => "timed out",
            tonic::Code::Internal | tonic::Code::Unknown
                if std::error::Error::source(status).is_some() =>
            {
                "connection lost"
            }
            tonic::Code::Internal | tonic::Code::Unknown => "server error",
            other => return format!("{other:?}: {}", status.message()),
        };
        let message = status.message().lines().next().unwrap_or_default();
        return format!("{code}: {message}");
    }
    format!("{error:#}")
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token_expiring_at(exp: u64) -> String {
        let payload =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{{\"exp\":{exp}}}"));
        format!("header.{payload}.signature")
    }

    #[test]
    fn tokens_near_or_past_expiry_are_refreshed() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        assert!(expires_within(&token_expiring_at(now + 5), 15));
        assert!(expires_within(&token_expiring_at(now - 5), 15));
        assert!(!expires_within(&token_expiring_at(now + 300), 15));
        assert!(expires_within("garbage", 15));
    }

    #[test]
    fn statuses_become_one_line() {
        let error = anyhow::Error::from(tonic::Status::not_found("chat 5 not found\nmore"));
        assert_eq!(describe(&error), "not found: chat 5 not found");
    }
}
