//! The caller's principal, read only from the verified client certificate.

use mpi_core::principal::{Principal, PrincipalError};
use tonic::Status;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// Reads the principal from the leaf certificate that rustls verified for this connection.
/// No certificate, or one that names no principal, is `UNAUTHENTICATED`.
pub fn principal_of<T>(request: &tonic::Request<T>) -> Result<Principal, Status> {
    let certs = request
        .peer_certs()
        .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
    let leaf = certs
        .first()
        .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
    principal_from_der(leaf.as_ref()).map_err(|error| Status::unauthenticated(error.to_string()))
}

/// Parses a DER certificate and picks its principal URI.
pub fn principal_from_der(der: &[u8]) -> Result<Principal, PrincipalError> {
    let (_, cert) = X509Certificate::from_der(der)
        .map_err(|_| PrincipalError::Malformed("certificate does not parse"))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|_| PrincipalError::Malformed("bad subject alternative name"))?
        .ok_or(PrincipalError::Missing)?;
    let uris = san
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        });
    Principal::from_uris(uris)
}
