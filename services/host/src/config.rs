//! Reading settings: every service reads its variables through a lookup
//! function (the environment, or the stack's defaults layered under it).

use std::net::SocketAddr;

/// Looks a variable up by name.
pub trait Vars: Fn(&str) -> Option<String> {}
impl<F: Fn(&str) -> Option<String>> Vars for F {}

/// Parses `name`, or `default` when it is unset.
pub fn var_or<T>(var: &impl Vars, name: &str, default: &str) -> anyhow::Result<T>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    let value = var(name).unwrap_or_else(|| default.to_owned());
    value
        .parse()
        .map_err(|error| anyhow::anyhow!("{name}={value:?} is not valid: {error}"))
}

/// An address, `default` when unset, none when `off` or empty.
pub fn optional_addr(
    var: &impl Vars,
    name: &str,
    default: Option<SocketAddr>,
) -> anyhow::Result<Option<SocketAddr>> {
    match var(name) {
        Some(value) if value.is_empty() || value == "off" => Ok(None),
        Some(value) => value
            .parse()
            .map(Some)
            .map_err(|error| anyhow::anyhow!("{name}={value:?} is not valid: {error}")),
        None => Ok(default),
    }
}

/// Binds `addr`, saying what for when it cannot.
pub async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|error| match addr.port() {
            0 => anyhow::anyhow!("cannot listen for {what} on {addr}: {error}"),
            port => anyhow::anyhow!(
                "cannot listen for {what} on {addr}: is port {port} already taken? ({error})"
            ),
        })
}

/// Connections accepted from `listener`, with Nagle's algorithm off: small
/// gRPC responses would otherwise wait for the peer's delayed ACK (about
/// 40 ms on Linux).
pub fn incoming(listener: tokio::net::TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_values_take_the_default_and_bad_ones_name_the_variable() {
        let vars = |name: &str| (name == "PORT").then(|| "not a number".to_owned());
        assert_eq!(var_or::<u16>(&vars, "OTHER", "7").ok(), Some(7));
        let error = var_or::<u16>(&vars, "PORT", "7").expect_err("a bad value");
        assert!(error.to_string().starts_with("PORT=\"not a number\""));
    }

    #[test]
    fn addresses_can_be_turned_off() {
        let default = Some(SocketAddr::from(([0, 0, 0, 0], 9101)));
        let off = |_: &str| Some("off".to_owned());
        let unset = |_: &str| None;
        assert_eq!(optional_addr(&off, "ADDR", default).ok(), Some(None));
        assert_eq!(optional_addr(&unset, "ADDR", default).ok(), Some(default));
    }
}
