//! A health probe for container health checks: `auth healthcheck`,
//! `chat healthcheck`.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::bail;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Asks the gRPC server listening on `listen_addr` (0.0.0.0 meaning this
/// machine) whether it is serving; over TLS when `tls` (the service has a
/// certificate), taking whatever certificate it serves (see
/// [`crate::tls::connect_to_self`]).
pub async fn probe(listen_addr: SocketAddr, tls: bool) -> anyhow::Result<()> {
    let addr = if listen_addr.ip().is_unspecified() {
        SocketAddr::from((Ipv4Addr::LOCALHOST, listen_addr.port()))
    } else {
        listen_addr
    };
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(2));
    let channel = if tls {
        endpoint
            .connect_with_connector(tower::service_fn(move |_| async move {
                crate::tls::connect_to_self(addr)
                    .await
                    .map(hyper_util::rt::TokioIo::new)
                    .map_err(|error| std::io::Error::other(format!("{error:#}")))
            }))
            .await?
    } else {
        endpoint.connect().await?
    };
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await?
        .into_inner()
        .status();
    if status != ServingStatus::Serving {
        bail!("{addr} is {status:?}");
    }
    Ok(())
}

/// Reports every one of `services` (`""` being the whole server) as `status`.
pub async fn report(
    reporter: &tonic_health::server::HealthReporter,
    services: &[&str],
    status: tonic_health::ServingStatus,
) {
    for service in services {
        reporter.set_service_status(service, status).await;
    }
}
