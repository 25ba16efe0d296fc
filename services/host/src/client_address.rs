//! Who is calling, by network address: the connection's peer, or, when
//! that peer is a configured trusted proxy, the address it forwarded in
//! `X-Forwarded-For`. Entries are read from the right, skipping trusted
//! proxies, so that a client cannot pick its own address by sending the
//! header itself.

use std::net::{IpAddr, Ipv6Addr};

use anyhow::Context as _;

/// The metadata key the REST gateway and proxies forward addresses in.
pub const FORWARDED_FOR: &str = "x-forwarded-for";

/// Networks whose connections may say whom they forward for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<Network>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Network {
    address: IpAddr,
    prefix: u8,
}

impl Network {
    fn contains(&self, address: IpAddr) -> bool {
        match (self.address, canonical(address)) {
            (IpAddr::V4(network), IpAddr::V4(address)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(network) & mask == u32::from(address) & mask
            }
            (IpAddr::V6(network), IpAddr::V6(address)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(network) & mask == u128::from(address) & mask
            }
            _ => false,
        }
    }
}

impl TrustedProxies {
    /// A comma-separated list of addresses and CIDR networks
    /// (`10.0.0.0/8, ::1`); empty trusts nobody.
    pub fn parse(list: &str) -> anyhow::Result<TrustedProxies> {
        let mut networks = Vec::new();
        for entry in list
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
        {
            let (address, prefix) = match entry.split_once('/') {
                Some((address, prefix)) => (address, Some(prefix)),
                None => (entry, None),
            };
            let address: IpAddr = address
                .parse()
                .with_context(|| format!("{entry:?} is not an address or a CIDR network"))?;
            let address = canonical(address);
            let most = if address.is_ipv4() { 32 } else { 128 };
            let prefix = match prefix {
                Some(prefix) => prefix
                    .parse::<u8>()
                    .ok()
                    .filter(|prefix| *prefix <= most)
                    .with_context(|| format!("{entry:?} has a bad prefix length"))?,
                None => most,
            };
            networks.push(Network { address, prefix });
        }
        Ok(TrustedProxies(networks))
    }

    fn trusts(&self, address: IpAddr) -> bool {
        self.0.iter().any(|network| network.contains(address))
    }

    /// The client's address: the peer's, unless the peer is trusted, then
    /// the rightmost forwarded address that is not itself trusted.
    pub fn client(&self, peer: Option<IpAddr>, forwarded_for: &[&str]) -> Option<IpAddr> {
        let mut client = canonical(peer?);
        let mut forwarded = forwarded_for
            .iter()
            .rev()
            .flat_map(|header| header.rsplit(','))
            .map(str::trim);
        while self.trusts(client) {
            match forwarded.next().map(str::parse::<IpAddr>) {
                Some(Ok(address)) => client = canonical(address),
                // A trusted proxy that forwards garbage, or nothing: the
                // proxy is the client.
                _ => break,
            }
        }
        Some(client)
    }

    /// The client of a gRPC request (see [`TrustedProxies::client`]).
    pub fn client_of<T>(&self, request: &tonic::Request<T>) -> Option<IpAddr> {
        let forwarded: Vec<&str> = request
            .metadata()
            .get_all(FORWARDED_FOR)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .collect();
        self.client(request.remote_addr().map(|addr| addr.ip()), &forwarded)
    }
}

/// The peer of the connection an HTTP request came over, plaintext or TLS.
pub fn peer_of<B>(request: &http::Request<B>) -> Option<std::net::SocketAddr> {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    let extensions = request.extensions();
    extensions
        .get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr)
        .or_else(|| {
            extensions
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|info| info.get_ref().remote_addr())
        })
}

/// IPv4-mapped IPv6 addresses as the IPv4 addresses they are.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        v4 => v4,
    }
}

/// What one client is counted as: an IPv4 address, or an IPv6 /64 (one
/// subscriber's usual allocation, which it can spread over at will).
pub fn counted_as(address: IpAddr) -> String {
    match canonical(address) {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let network = u128::from(v6) & (u128::MAX << 64);
            format!("{}/64", Ipv6Addr::from(network))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let trusted = TrustedProxies::parse("10.0.0.0/8").expect("parses");
        assert_eq!(
            trusted.client(Some(ip("203.0.113.9")), &["198.51.100.1"]),
            Some(ip("203.0.113.9"))
        );
        assert_eq!(
            TrustedProxies::default().client(Some(ip("127.0.0.1")), &["1.2.3.4"]),
            Some(ip("127.0.0.1"))
        );
    }

    #[test]
    fn a_trusted_chain_is_read_from_the_right() {
        let trusted = TrustedProxies::parse("10.0.0.0/8, ::1").expect("parses");
        // The client claims 1.2.3.4; the outer proxy saw 198.51.100.7.
        assert_eq!(
            trusted.client(Some(ip("10.1.2.3")), &["1.2.3.4, 198.51.100.7", "10.9.9.9"]),
            Some(ip("198.51.100.7"))
        );
        assert_eq!(
            trusted.client(Some(ip("::1")), &["garbage"]),
            Some(ip("::1"))
        );
        assert_eq!(
            trusted.client(Some(ip("::ffff:10.0.0.1")), &["192.0.2.5"]),
            Some(ip("192.0.2.5"))
        );
    }

    #[test]
    fn bad_lists_are_refused() {
        for list in ["10.0.0.0/33", "nonsense", "::1/129", "1.2.3.4/x"] {
            assert!(TrustedProxies::parse(list).is_err(), "{list}");
        }
        assert_eq!(
            TrustedProxies::parse(" ").expect("empty"),
            TrustedProxies::default()
        );
    }

    #[test]
    fn ipv6_clients_count_by_their_64() {
        assert_eq!(
            counted_as(ip("2001:db8:1:2:3:4:5:6")),
            counted_as(ip("2001:db8:1:2:ffff::1"))
        );
        assert_ne!(
            counted_as(ip("2001:db8:1:2::1")),
            counted_as(ip("2001:db8:1:3::1"))
        );
        assert_eq!(counted_as(ip("::ffff:192.0.2.1")), "192.0.2.1");
    }
}
