//! A certificate authority for development and tests: it issues server and
//! client certificates for `localhost` and `127.0.0.1`, as PEM, for the
//! development stack (`STACK_TLS=1`) and for the tests that check TLS. Never
//! for production: whoever holds the CA's key can issue anything.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData as _,
};
use time::{Duration, OffsetDateTime};

pub use rcgen::Error;

/// What a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    Server,
    Client,
}

/// A CA, its key held in memory.
pub struct DevCa {
    issuer: Issuer<'static, KeyPair>,
    /// The CA's certificate, which clients are told to trust.
    pub cert_pem: String,
}

/// A certificate the CA issued, with its key.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_der: Vec<u8>,
    /// The key's SubjectPublicKeyInfo, DER.
    pub spki_der: Vec<u8>,
}

impl DevCa {
    /// A new CA named `name`, valid from an hour ago for `days`.
    pub fn generate(name: &str, days: i64) -> Result<DevCa, Error> {
        let mut params = CertificateParams::new(Vec::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        (params.not_before, params.not_after) = from_an_hour_ago(Duration::days(days));
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(DevCa {
            issuer: Issuer::new(params, key),
            cert_pem: cert.pem(),
        })
    }

    /// A certificate named `name`, for `localhost` and `127.0.0.1`, valid
    /// from an hour ago for `days`.
    pub fn issue(&self, name: &str, usage: Usage, days: i64) -> Result<Issued, Error> {
        self.issue_between(name, usage, from_an_hour_ago(Duration::days(days)))
    }

    /// A certificate valid between these times (an expired one, say).
    pub fn issue_between(
        &self,
        name: &str,
        usage: Usage,
        (not_before, not_after): (OffsetDateTime, OffsetDateTime),
    ) -> Result<Issued, Error> {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![match usage {
            Usage::Server => ExtendedKeyUsagePurpose::ServerAuth,
            Usage::Client => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        params.not_before = not_before;
        params.not_after = not_after;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().to_vec(),
            spki_der: key.subject_public_key_info(),
        })
    }
}

fn from_an_hour_ago(span: Duration) -> (OffsetDateTime, OffsetDateTime) {
    let now = OffsetDateTime::now_utc();
    (now - Duration::hours(1), now + span)
}
