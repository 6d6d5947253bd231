//! The development PKI: a CA, the server certificate and one client certificate per role,
//! created in `data_dir/pki` on first start when no TLS files are configured. Production
//! deployments issue real certificates (see README) and set `production = true`, which refuses
//! this PKI.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use mpi_core::principal::Principal;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

/// Why the PKI could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// File system.
    #[error("development PKI file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Certificate generation.
    #[error("development PKI generation: {0}")]
    Generation(#[from] rcgen::Error),
}

/// The development clients: a file alias and the principal its certificate carries.
pub const DEV_CLIENTS: [(&str, &str); 6] = [
    (
        "history-provider",
        "urn:kouiki-mpi:history-provider:dev-history-provider",
    ),
    ("network-a", "urn:kouiki-mpi:network:13-0001"),
    ("network-b", "urn:kouiki-mpi:network:27-0001"),
    ("clinician-a", "urn:kouiki-mpi:clinician:13-0001:1310123458"),
    ("clinician-b", "urn:kouiki-mpi:clinician:27-0001:2710345675"),
    ("operator", "urn:kouiki-mpi:operator:dev-operator"),
];

/// Paths of a PKI on disk.
#[derive(Debug, Clone)]
pub struct PkiPaths {
    /// The directory.
    pub dir: PathBuf,
}

impl PkiPaths {
    /// Paths under `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }
    /// The CA certificate.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    /// The server certificate.
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server.pem")
    }
    /// The server key.
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server.key")
    }
    /// A client's certificate.
    pub fn client_cert(&self, alias: &str) -> PathBuf {
        self.dir.join("clients").join(format!("{alias}.pem"))
    }
    /// A client's key.
    pub fn client_key(&self, alias: &str) -> PathBuf {
        self.dir.join("clients").join(format!("{alias}.key"))
    }
    fn complete(&self) -> bool {
        let mut files = vec![self.ca_cert(), self.server_cert(), self.server_key()];
        for (alias, _) in DEV_CLIENTS {
            files.push(self.client_cert(alias));
            files.push(self.client_key(alias));
        }
        files.iter().all(|file| file.is_file())
    }
}

/// A certificate and its private key, PEM-encoded.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    /// Certificate PEM.
    pub cert_pem: String,
    /// Private key PEM.
    pub key_pem: String,
}

/// A certificate authority that can issue server and client certificates.
pub struct CertAuthority {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl std::fmt::Debug for CertAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CertAuthority(..)")
    }
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "kouiki-mpi development");
    dn.push(DnType::CommonName, common_name);
    dn
}

fn validity(params: &mut CertificateParams, not_before: OffsetDateTime, not_after: OffsetDateTime) {
    params.not_before = not_before;
    params.not_after = not_after;
}

impl CertAuthority {
    /// A new self-signed CA named `common_name`, valid for ten years.
    pub fn generate(common_name: &str) -> Result<Self, PkiError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = name(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = OffsetDateTime::now_utc();
        validity(
            &mut params,
            now - Duration::days(1),
            now + Duration::days(3650),
        );
        Ok(Self {
            issuer: CertifiedIssuer::self_signed(params, KeyPair::generate()?)?,
        })
    }

    /// The CA certificate.
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for loopback names (`localhost`, 127.0.0.1, ::1).
    pub fn issue_server(&self) -> Result<IssuedCert, PkiError> {
        let mut params = CertificateParams::new(vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
        ])?;
        params.distinguished_name = name("kouiki-mpi server");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let now = OffsetDateTime::now_utc();
        validity(
            &mut params,
            now - Duration::days(1),
            now + Duration::days(825),
        );
        self.sign(params)
    }

    /// A client certificate naming `principal`, valid between the given instants.
    pub fn issue_client_valid(
        &self,
        principal: &Principal,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<IssuedCert, PkiError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = name(&principal.to_string());
        params.subject_alt_names = vec![SanType::URI(principal.to_uri().try_into()?)];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        validity(&mut params, not_before, not_after);
        self.sign(params)
    }

    /// A client certificate naming `principal`, valid for one year.
    pub fn issue_client(&self, principal: &Principal) -> Result<IssuedCert, PkiError> {
        let now = OffsetDateTime::now_utc();
        self.issue_client_valid(
            principal,
            now - Duration::days(1),
            now + Duration::days(365),
        )
    }

    fn sign(&self, params: CertificateParams) -> Result<IssuedCert, PkiError> {
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes `contents` to `path`, readable by the owner only when `secret`.
pub fn write_file(path: &Path, contents: &[u8], secret: bool) -> Result<(), PkiError> {
    let mut options = fs::OpenOptions::new();
    options
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if secret { 0o600 } else { 0o644 });
    let mut file = options.open(path).map_err(io_error(path))?;
    file.write_all(contents).map_err(io_error(path))?;
    file.sync_all().map_err(io_error(path))
}

/// Creates `dir` (and parents) readable by the owner only.
pub fn create_private_dir(dir: &Path) -> Result<(), PkiError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_error(dir))
}

/// Makes sure a complete development PKI exists in `dir`; creates one if not. Returns true
/// when it was created now.
pub fn ensure_dev_pki(paths: &PkiPaths) -> Result<bool, PkiError> {
    if paths.complete() {
        return Ok(false);
    }
    create_private_dir(&paths.dir.join("clients"))?;
    let ca = CertAuthority::generate("kouiki-mpi development CA")?;
    write_file(&paths.ca_cert(), ca.cert_pem().as_bytes(), false)?;
    let server = ca.issue_server()?;
    write_file(&paths.server_cert(), server.cert_pem.as_bytes(), false)?;
    write_file(&paths.server_key(), server.key_pem.as_bytes(), true)?;
    for (alias, uri) in DEV_CLIENTS {
        let principal = Principal::from_uri(uri).map_err(|error| PkiError::Io {
            path: paths.client_cert(alias),
            source: std::io::Error::other(error),
        })?;
        let client = ca.issue_client(&principal)?;
        write_file(&paths.client_cert(alias), client.cert_pem.as_bytes(), false)?;
        write_file(&paths.client_key(alias), client.key_pem.as_bytes(), true)?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn dev_pki_is_created_once_with_private_keys() {
        let dir = tempfile::tempdir().unwrap();
        let paths = PkiPaths::new(dir.path().join("pki"));
        assert!(ensure_dev_pki(&paths).unwrap());
        let ca = fs::read(paths.ca_cert()).unwrap();
        assert!(
            !ensure_dev_pki(&paths).unwrap(),
            "an existing PKI is reused"
        );
        assert_eq!(fs::read(paths.ca_cert()).unwrap(), ca);
        let mode = fs::metadata(paths.client_key("operator"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "keys are owner-only");
        for (_, uri) in DEV_CLIENTS {
            assert!(Principal::from_uri(uri).is_ok(), "{uri}");
        }
    }
}
