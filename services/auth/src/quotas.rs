//! What one client address may ask how often before anyone vouches for
//! it: registrations, and calls made without an access token (logins,
//! token refreshes, and anything else sent anonymously). Per replica (see
//! [`host::quota`]); IPv6 clients count by their /64.

use std::net::IpAddr;
use std::sync::Arc;

use host::client_address::{TrustedProxies, counted_as};
use host::quota::{Quota, QuotaMetrics, Rate};
use prometheus::Registry;

use crate::error::Result;

#[derive(Debug, Clone, PartialEq)]
pub struct QuotaConfig {
    pub registrations: Option<Rate>,
    pub anonymous_calls: Option<Rate>,
    /// Password reset requests from one client address.
    pub password_resets: Option<Rate>,
    /// Password reset requests for one email address, from anywhere:
    /// known and unknown addresses alike, so that the limit tells nothing.
    pub password_resets_per_email: Option<Rate>,
    /// Email changes per account (each mails two addresses).
    pub email_changes: Option<Rate>,
}

impl Default for QuotaConfig {
    /// A classroom behind one address may register 20 at once, then 2 a
    /// minute. Anonymous calls: 300 at once, then 30 a second, far above
    /// what people logging in from one office make.
    fn default() -> QuotaConfig {
        QuotaConfig {
            registrations: Some(Rate::new(20, 1.0 / 30.0)),
            anonymous_calls: Some(Rate::new(300, 30.0)),
            // Ten at once, then one a minute, per client; three at once,
            // then one every five minutes, per address.
            password_resets: Some(Rate::new(10, 1.0 / 60.0)),
            password_resets_per_email: Some(Rate::new(3, 1.0 / 300.0)),
            // Five at once, then one an hour, per account.
            email_changes: Some(Rate::new(5, 1.0 / 3600.0)),
        }
    }
}

pub struct AddressQuotas {
    trusted_proxies: TrustedProxies,
    registrations: Arc<Quota<String>>,
    anonymous_calls: Arc<Quota<String>>,
    password_resets: Arc<Quota<String>>,
    password_resets_per_email: Arc<Quota<String>>,
    email_changes: Arc<Quota<String>>,
}

impl AddressQuotas {
    pub fn new(
        config: &QuotaConfig,
        trusted_proxies: TrustedProxies,
        registry: &Registry,
    ) -> anyhow::Result<AddressQuotas> {
        let metrics = QuotaMetrics::register(registry, "auth")?;
        Ok(AddressQuotas {
            trusted_proxies,
            registrations: Quota::new(
                "registrations",
                "registrations from this address",
                config.registrations,
                &metrics,
            ),
            anonymous_calls: Quota::new(
                "anonymous_calls",
                "calls without an access token from this address",
                config.anonymous_calls,
                &metrics,
            ),
            password_resets: Quota::new(
                "password_resets",
                "password reset requests from this address",
                config.password_resets,
                &metrics,
            ),
            password_resets_per_email: Quota::new(
                "password_resets_per_email",
                "password reset requests for this email address",
                config.password_resets_per_email,
                &metrics,
            ),
            email_changes: Quota::new(
                "email_changes",
                "email changes of this account",
                config.email_changes,
                &metrics,
            ),
        })
    }

    /// The client of a gRPC request, as the trusted proxies tell it.
    pub fn client_of<T>(&self, request: &tonic::Request<T>) -> Option<IpAddr> {
        self.trusted_proxies.client_of(request)
    }

    /// Charges an anonymous call, made over `request`'s connection, to its
    /// client's address. A call whose address is unknown is not counted.
    pub fn anonymous_call<B>(&self, request: &http::Request<B>) -> Result<()> {
        let peer = host::client_address::peer_of(request).map(|addr| addr.ip());
        let forwarded: Vec<&str> = request
            .headers()
            .get_all(host::client_address::FORWARDED_FOR)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .collect();
        match self.trusted_proxies.client(peer, &forwarded) {
            Some(address) => self.anonymous_calls.take(&counted_as(address), 1),
            None => Ok(()),
        }
    }

    /// Charges a registration to its client's address.
    pub fn registration(&self, address: Option<IpAddr>) -> Result<()> {
        match address {
            Some(address) => self.registrations.take(&counted_as(address), 1),
            None => Ok(()),
        }
    }

    /// Charges a password reset request to its client's address and to
    /// the email address it names (compared regardless of case).
    pub fn password_reset(&self, address: Option<IpAddr>, email: &str) -> Result<()> {
        if let Some(address) = address {
            self.password_resets.take(&counted_as(address), 1)?;
        }
        self.password_resets_per_email
            .take(&email.to_lowercase(), 1)
    }

    /// Charges an email change to the account, whoever makes it but an
    /// admin: each sends two mails, to addresses the caller chose.
    pub fn email_change(&self, user_id: i64) -> Result<()> {
        self.email_changes.take(&user_id.to_string(), 1)
    }
}
