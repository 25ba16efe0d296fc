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
        let accepting = accept(listener, upstream, cut.clone());
        Relay {
            addr,
            upstream,
            cut,
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

    /// Listens and relays again, on the same address.
    pub async fn restore(&self) {
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        };
        *self.accepting.lock().expect("the relay") =
            Some(accept(listener, self.upstream, self.cut.clone()));
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

fn accept(listener: TcpListener, upstream: SocketAddr, cut: Arc<Notify>) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let cut = cut.clone();
            tokio::spawn(async move {
                let Ok(mut server) = TcpStream::connect(upstream).await else {
                    return;
                };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                    () = cut.notified() => {}
                }
            });
        }
    })
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
