//! The caller's principal, read only from the verified client certificate.

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};

use mpi_core::principal::{Principal, PrincipalError};
use tonic::Status;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// Principals kept by [`Principals`] before it starts afresh: far more client certificates
/// than one server sees in use at once (about 250 networks, a few systems each), at about
/// 1 KiB apiece.
pub const PRINCIPALS_KEPT: usize = 4096;

/// The principals of the client certificates seen so far, by the certificate's DER.
///
/// A connection presents the same verified certificate on every call, and parsing it cost
/// ≈ 2.7 µs of the server's core per FindLocations (docs/benchmarks.md, "FindLocations on the
/// server's core"). The principal is a function of the certificate's bytes alone, so
/// remembering it cannot change an answer: the key is the whole DER, compared in full, and
/// only certificates rustls has already verified reach it. Failures are not kept. The map is
/// bounded: when it holds `capacity` certificates it is emptied before the next is added.
#[derive(Debug)]
pub struct Principals {
    known: RwLock<HashMap<Box<[u8]>, Principal, foldhash::fast::RandomState>>,
    capacity: usize,
}

impl Default for Principals {
    fn default() -> Self {
        Self::with_capacity(PRINCIPALS_KEPT)
    }
}

impl Principals {
    /// An empty map that keeps at most `capacity` certificates (at least one).
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            known: RwLock::new(HashMap::default()),
            capacity: capacity.max(1),
        }
    }

    /// The principal of the leaf certificate that rustls verified for this connection. No
    /// certificate, or one that names no principal, is `UNAUTHENTICATED`.
    pub fn of<T>(&self, request: &tonic::Request<T>) -> Result<Principal, Status> {
        let certs = request
            .peer_certs()
            .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
        let leaf = certs
            .first()
            .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
        self.of_der(leaf.as_ref())
            .map_err(|error| Status::unauthenticated(error.to_string()))
    }

    /// The principal `der` names, parsed once per distinct certificate.
    pub fn of_der(&self, der: &[u8]) -> Result<Principal, PrincipalError> {
        if let Some(known) = self
            .known
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(der)
        {
            return Ok(known.clone());
        }
        let principal = principal_from_der(der)?;
        let mut known = self.known.write().unwrap_or_else(PoisonError::into_inner);
        if known.len() >= self.capacity {
            known.clear();
        }
        known.insert(der.into(), principal.clone());
        Ok(principal)
    }

    /// How many certificates are kept.
    pub fn len(&self) -> usize {
        self.known
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::pki::CertAuthority;

    fn der_for(ca: &CertAuthority, uri: &str) -> Vec<u8> {
        let issued = ca.issue_client(&Principal::from_uri(uri).unwrap()).unwrap();
        let (_, pem) = x509_parser::pem::parse_x509_pem(issued.cert_pem.as_bytes()).unwrap();
        pem.contents
    }

    #[test]
    fn a_kept_principal_is_the_parsed_one() {
        let ca = CertAuthority::generate("test CA").unwrap();
        let principals = Principals::default();
        let der = der_for(&ca, "urn:kouiki-mpi:network:13-0001");
        let first = principals.of_der(&der).unwrap();
        assert_eq!(first, principal_from_der(&der).unwrap());
        assert_eq!(principals.len(), 1);
        assert_eq!(principals.of_der(&der).unwrap(), first, "the kept answer");
        assert_eq!(principals.len(), 1, "one entry per certificate");
        let other = der_for(&ca, "urn:kouiki-mpi:operator:alice");
        assert_eq!(
            principals.of_der(&other).unwrap(),
            principal_from_der(&other).unwrap()
        );
        assert_ne!(principals.of_der(&other).unwrap(), first);
        assert_eq!(principals.len(), 2);
    }

    #[test]
    fn a_certificate_differing_in_one_byte_is_parsed_anew() {
        let ca = CertAuthority::generate("test CA").unwrap();
        let principals = Principals::default();
        let der = der_for(&ca, "urn:kouiki-mpi:network:13-0001");
        principals.of_der(&der).unwrap();
        let mut altered = der.clone();
        let last = altered.len() - 1;
        altered[last] ^= 1;
        // The signature's last byte: still a certificate naming the same principal, but not
        // the same bytes, so it gets an entry of its own (what it names is parsed from it).
        assert_eq!(
            principals.of_der(&altered).unwrap(),
            principals.of_der(&der).unwrap()
        );
        assert_eq!(principals.len(), 2);
    }

    #[test]
    fn failures_are_not_kept() {
        let principals = Principals::default();
        assert!(matches!(
            principals.of_der(b"not a certificate"),
            Err(PrincipalError::Malformed(_))
        ));
        assert!(principals.is_empty());
    }

    #[test]
    fn the_map_is_bounded() {
        let ca = CertAuthority::generate("test CA").unwrap();
        let principals = Principals::with_capacity(3);
        let ders: Vec<Vec<u8>> = (1..=7)
            .map(|n| der_for(&ca, &format!("urn:kouiki-mpi:network:13-000{n}")))
            .collect();
        for der in &ders {
            let principal = principals.of_der(der).unwrap();
            assert_eq!(principal, principal_from_der(der).unwrap());
            assert!(principals.len() <= 3, "{} kept", principals.len());
        }
        // Emptied at the fourth and the seventh: the last one is kept.
        assert_eq!(principals.len(), 1);
    }
}
