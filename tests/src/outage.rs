//! A TCP relay between a service and its PostgreSQL that can be cut, to
//! make the database go away for one service (as a stopped server would:
//! open connections reset, new ones refused) while the tests' shared
//! server keeps running.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub struct Relay {
    pub addr: SocketAddr,
    route: Arc<Route>,
    /// How many cuts there have been: a connection accepted before the
    /// latest drops, however far it got (a cut that only woke connections
    /// already waiting would miss one still connecting upstream).
    cut: Arc<tokio::sync::watch::Sender<u64>>,
    /// What is held back ([`HELD_BOTH_WAYS`], [`HELD_REPLIES`]): nothing
    /// held is closed, the peers see a network that went silent (a
    /// vanished client, a half-open socket, an answer lost on the way).
    frozen: Arc<tokio::sync::watch::Sender<u8>>,
    /// Accepting connections while set.
    accepting: Mutex<Option<JoinHandle<()>>>,
}

impl Relay {
    /// Relays to `upstream` until dropped.
    pub async fn start(upstream: SocketAddr) -> Relay {
        Relay::route(Route {
            first: upstream,
            rest: upstream,
            accepted: AtomicUsize::new(0),
        })
        .await
    }

    /// Relays the first connection to `first` and every later one to
    /// `rest`, as a load balancer may spread one client's connections.
    pub async fn split(first: SocketAddr, rest: SocketAddr) -> Relay {
        Relay::route(Route {
            first,
            rest,
            accepted: AtomicUsize::new(0),
        })
        .await
    }

    async fn route(route: Route) -> Relay {
        let route = Arc::new(route);
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the relay");
        let addr = listener.local_addr().expect("the relay's address");
        let cut = Arc::new(tokio::sync::watch::Sender::new(0));
        let frozen = Arc::new(tokio::sync::watch::Sender::new(0));
        let accepting = accept(listener, route.clone(), cut.clone(), frozen.clone());
        Relay {
            addr,
            route,
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
        self.cut.send_modify(|cuts| *cuts += 1);
    }

    /// Stops forwarding anything, without closing anything.
    pub fn freeze(&self) {
        self.frozen.send_modify(|held| *held |= HELD_BOTH_WAYS);
    }

    /// Forwards what the client sends, but holds back what the server
    /// answers: requests are served, their answers never arrive.
    pub fn hold_replies(&self) {
        self.frozen.send_modify(|held| *held |= HELD_REPLIES);
    }

    /// Listens and relays again, on the same address, holding nothing.
    pub async fn restore(&self) {
        self.frozen.send_replace(0);
        if self.accepting.lock().expect("the relay").is_some() {
            return;
        }
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        };
        *self.accepting.lock().expect("the relay") = Some(accept(
            listener,
            self.route.clone(),
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

/// Held: both ways.
const HELD_BOTH_WAYS: u8 = 1;
/// Held: from the server to the client.
const HELD_REPLIES: u8 = 2;

/// Where accepted connections go.
struct Route {
    first: SocketAddr,
    rest: SocketAddr,
    accepted: AtomicUsize,
}

fn accept(
    listener: TcpListener,
    route: Arc<Route>,
    cut: Arc<tokio::sync::watch::Sender<u64>>,
    frozen: Arc<tokio::sync::watch::Sender<u8>>,
) -> JoinHandle<()> {
    // Connections this listener accepts belong to the cuts so far: one
    // accepted in the instant after a cut, before the listener stops,
    // drops too.
    let generation = *cut.borrow();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let upstream = match route.accepted.fetch_add(1, Ordering::Relaxed) {
                0 => route.first,
                _ => route.rest,
            };
            let mut cut = cut.subscribe();
            let frozen = frozen.clone();
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    return;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                // A cut wins over anything the pumps could still forward.
                tokio::select! {
                    biased;
                    _ = cut.wait_for(|cuts| *cuts != generation) => {}
                    () = pump(client_read, server_write, frozen.subscribe(), HELD_BOTH_WAYS) => {}
                    () = pump(server_read, client_write, frozen.subscribe(), HELD_BOTH_WAYS | HELD_REPLIES) => {}
                }
            });
        }
    })
}

/// Copies `from` to `to` until either ends, pausing while any of the
/// `held_by` flags is set.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut frozen: tokio::sync::watch::Receiver<u8>,
    held_by: u8,
) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut buffer = vec![0; 16 * 1024];
    loop {
        if frozen.wait_for(|held| held & held_by == 0).await.is_err() {
            return;
        }
        let read = tokio::select! {
            read = from.read(&mut buffer) => read,
            _ = frozen.wait_for(|held| held & held_by != 0) => continue,
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
