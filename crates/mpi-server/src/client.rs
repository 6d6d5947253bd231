//! Connecting to a kouiki-mpi server over mutual TLS: used by the CLI, the tests and the
//! benchmarks, so all of them speak to the server exactly as a real client does.

use std::path::Path;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::pki::PkiPaths;

/// The PEM material of a client.
#[derive(Clone)]
pub struct ClientIdentity {
    /// The CA that signed the server certificate.
    pub ca_pem: Vec<u8>,
    /// The client certificate.
    pub cert_pem: Vec<u8>,
    /// The client's private key.
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientIdentity(..)")
    }
}

fn read(path: &Path) -> std::io::Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|error| std::io::Error::new(error.kind(), format!("{}: {error}", path.display())))
}

impl ClientIdentity {
    /// Reads a CA certificate, a client certificate and its key.
    pub fn from_files(ca: &Path, cert: &Path, key: &Path) -> std::io::Result<Self> {
        Ok(Self {
            ca_pem: read(ca)?,
            cert_pem: read(cert)?,
            key_pem: read(key)?,
        })
    }

    /// One of the development PKI's clients (`operator`, `network-a`, …).
    pub fn from_dev_pki(pki: &PkiPaths, alias: &str) -> std::io::Result<Self> {
        Self::from_files(
            &pki.ca_cert(),
            &pki.client_cert(alias),
            &pki.client_key(alias),
        )
    }
}

/// TLS settings for a client; `identity` `None` sends no client certificate.
pub fn tls_config(
    ca_pem: &[u8],
    identity: Option<(&[u8], &[u8])>,
    domain: &str,
) -> ClientTlsConfig {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name(domain);
    match identity {
        Some((cert, key)) => tls.identity(Identity::from_pem(cert, key)),
        None => tls,
    }
}

/// Connects to `address` (`host:port` or an `https://` URL) as `identity`. The server
/// certificate is checked against `identity.ca_pem` for the name `localhost` unless the URL's
/// host is a name.
pub async fn connect(
    address: &str,
    identity: &ClientIdentity,
) -> Result<Channel, tonic::transport::Error> {
    let url = if address.starts_with("https://") {
        address.to_owned()
    } else {
        format!("https://{address}")
    };
    let host = url
        .trim_start_matches("https://")
        .split([':', '/'])
        .next()
        .unwrap_or("localhost");
    let domain = if host.parse::<std::net::IpAddr>().is_ok() || host.starts_with('[') {
        "localhost"
    } else {
        host
    };
    let tls = tls_config(
        &identity.ca_pem,
        Some((&identity.cert_pem, &identity.key_pem)),
        domain,
    );
    Endpoint::from_shared(url)?
        .tls_config(tls)?
        .tcp_nodelay(true)
        .connect()
        .await
}
