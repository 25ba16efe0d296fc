//! A TCP relay between a service and its PostgreSQL that can be cut, to
//! make the database go away for one service (as a stopped server would:
//! open connections reset, new ones refused) while the tests' shared
//! server keeps running.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

pub struct Relay {
    pub addr: SocketAddr,
    upstream: SocketAddr,
    /// Tells the open connections to drop.
    cut: Arc<Notify>,
    /// While set, nothing is forwarded and nothing is closed: the peers see
    /// a network that went silent (a vanished client, a half-open socket).
    frozen: Arc<tokio::sync::watch::Sender<bool>>,
    /// Accepting connections while set.
    accepting: Mutex<Option<JoinHandle<()>>>,
}

impl Relay {
    /// Relays to `upstream` until dropped.
    pub async fn start(upstream: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the relay");
        let addr = listener.local_addr().expect("the relay's address");
        let cut = Arc::new(Notify::new());
        let frozen = Arc::new(tokio::sync::watch::Sender::new(false));
        let accepting = accept(listener, upstream, cut.clone(), frozen.clone());
        Relay {
            addr,
            upstream,
            cut,
            frozen,
            accepting: Mutex::new(Some(accepting)),
        }
    }

    /// Drops every open connection and stops listening: new ones are
    /// refused.
    pub fn cut(&self) {
        if let Some(accepting) = self.accepting.lock().expect("the relay").take() {
            accepting.abort();
        }
        self.cut.notify_waiters();
    }

    /// Stops forwarding anything, without closing anything.
    pub fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    /// Listens and relays again, on the same address.
    pub async fn restore(&self) {
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        };
        *self.accepting.lock().expect("the relay") = Some(accept(
            listener,
            self.upstream,
            self.cut.clone(),
            self.frozen.clone(),
        ));
    }

    /// `database_url` with its host and port replaced by the relay's.
    pub fn url_for(&self, database_url: &str) -> String {
        let (scheme, rest) = database_url.split_once("://").expect("a URL");
        let (authority, path) = rest.split_once('/').expect("a database");
        let userinfo = authority
            .rsplit_once('@')
            .map(|(user, _)| format!("{user}@"));
        format!(
            "{scheme}://{}{}/{path}",
            userinfo.unwrap_or_default(),
            self.addr
        )
    }
}

fn accept(
    listener: TcpListener,
    upstream: SocketAddr,
    cut: Arc<Notify>,
    frozen: Arc<tokio::sync::watch::Sender<bool>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let cut = cut.clone();
            let frozen = frozen.clone();
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    return;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::select! {
                    () = pump(client_read, server_write, frozen.subscribe()) => {}
                    () = pump(server_read, client_write, frozen.subscribe()) => {}
                    () = cut.notified() => {}
                }
            });
        }
    })
}

/// Copies `from` to `to` until either ends, pausing while frozen.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut frozen: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut buffer = vec![0; 16 * 1024];
    loop {
        if frozen.wait_for(|frozen| !frozen).await.is_err() {
            return;
        }
        let read = tokio::select! {
            read = from.read(&mut buffer) => read,
            _ = frozen.wait_for(|frozen| *frozen) => continue,
        };
        match read {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if to.write_all(&buffer[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.cut();
    }
}

/// The host and port of a `postgres://` URL.
pub fn server_of(database_url: &str) -> SocketAddr {
    let rest = database_url.split_once("://").expect("a URL").1;
    let authority = rest
        .split_once('/')
        .map_or(rest, |(authority, _)| authority);
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let host_port = host_port.replace("localhost", "127.0.0.1");
    std::net::ToSocketAddrs::to_socket_addrs(&host_port)
        .expect("a host and port")
        .next()
        .expect("an address")
}
