//! Who is calling: the role and binding read from the verified client certificate.
//!
//! A certificate names its principal in exactly one URI subject alternative name:
//! `urn:kouiki-mpi:history-provider:NAME`, `urn:kouiki-mpi:network:PP-NNNN`,
//! `urn:kouiki-mpi:clinician:PP-NNNN:FACILITYCODE`, `urn:kouiki-mpi:operator:NAME` or
//! `urn:kouiki-mpi:research-db:NAME`. Nothing in a request can change it.

use std::fmt;

use crate::ids::{FacilityCode, NetworkId};

/// The prefix of every principal URI.
pub const URI_PREFIX: &str = "urn:kouiki-mpi:";

/// Caller roles (DESIGN.md §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The history management and provision body (履歴管理提供主体).
    HistoryProvider,
    /// A regional network, bound to its network ID.
    Network,
    /// A clinician system, bound to a facility and its network.
    Clinician,
    /// An operator of the MPI.
    Operator,
    /// A research database (later).
    ResearchDb,
}

impl Role {
    /// The role's name in principal URIs and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HistoryProvider => "history-provider",
            Self::Network => "network",
            Self::Clinician => "clinician",
            Self::Operator => "operator",
            Self::ResearchDb => "research-db",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A verified caller.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Principal {
    /// The history provider, by name.
    HistoryProvider(String),
    /// A regional network.
    Network(NetworkId),
    /// A clinician system at a facility of a network.
    Clinician {
        /// The facility's network.
        network: NetworkId,
        /// The facility.
        facility: FacilityCode,
    },
    /// An operator, by name.
    Operator(String),
    /// A research database, by name.
    ResearchDb(String),
}

/// Why a certificate does not name a principal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrincipalError {
    /// No `urn:kouiki-mpi:` URI in the certificate.
    #[error("client certificate names no kouiki-mpi principal")]
    Missing,
    /// More than one principal URI.
    #[error("client certificate names more than one kouiki-mpi principal")]
    Several,
    /// A principal URI that does not parse.
    #[error("client certificate principal is malformed: {0}")]
    Malformed(&'static str),
}

fn name(value: &str) -> Result<String, PrincipalError> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(value.to_owned())
    } else {
        Err(PrincipalError::Malformed("bad name"))
    }
}

impl Principal {
    /// Parses a principal URI.
    pub fn from_uri(uri: &str) -> Result<Self, PrincipalError> {
        let rest = uri
            .strip_prefix(URI_PREFIX)
            .ok_or(PrincipalError::Missing)?;
        let mut parts = rest.split(':');
        let role = parts.next().unwrap_or("");
        let first = parts
            .next()
            .ok_or(PrincipalError::Malformed("missing binding"))?;
        let second = parts.next();
        if parts.next().is_some() {
            return Err(PrincipalError::Malformed("too many fields"));
        }
        let network =
            || NetworkId::parse(first).map_err(|_| PrincipalError::Malformed("bad network ID"));
        let principal = match (role, second) {
            ("history-provider", None) => Self::HistoryProvider(name(first)?),
            ("operator", None) => Self::Operator(name(first)?),
            ("research-db", None) => Self::ResearchDb(name(first)?),
            ("network", None) => Self::Network(network()?),
            ("clinician", Some(facility)) => Self::Clinician {
                network: network()?,
                facility: FacilityCode::parse(facility)
                    .map_err(|_| PrincipalError::Malformed("bad facility code"))?,
            },
            _ => return Err(PrincipalError::Malformed("unknown role or wrong fields")),
        };
        Ok(principal)
    }

    /// Picks the one principal among a certificate's URI names (other URIs are ignored).
    pub fn from_uris<'a>(uris: impl IntoIterator<Item = &'a str>) -> Result<Self, PrincipalError> {
        let mut found = None;
        for uri in uris.into_iter().filter(|uri| uri.starts_with(URI_PREFIX)) {
            if found.is_some() {
                return Err(PrincipalError::Several);
            }
            found = Some(Self::from_uri(uri)?);
        }
        found.ok_or(PrincipalError::Missing)
    }

    /// The URI to put in a certificate.
    pub fn to_uri(&self) -> String {
        format!("{URI_PREFIX}{self}")
    }

    /// The role.
    pub fn role(&self) -> Role {
        match self {
            Self::HistoryProvider(_) => Role::HistoryProvider,
            Self::Network(_) => Role::Network,
            Self::Clinician { .. } => Role::Clinician,
            Self::Operator(_) => Role::Operator,
            Self::ResearchDb(_) => Role::ResearchDb,
        }
    }

    /// The network the caller is bound to, for networks and clinicians.
    pub fn network(&self) -> Option<NetworkId> {
        match self {
            Self::Network(network) | Self::Clinician { network, .. } => Some(*network),
            _ => None,
        }
    }
}

/// `role:binding`, for example `clinician:13-0001:1310112349`; used in audit events and logs.
impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let role = self.role();
        match self {
            Self::HistoryProvider(name) | Self::Operator(name) | Self::ResearchDb(name) => {
                write!(f, "{role}:{name}")
            }
            Self::Network(network) => write!(f, "{role}:{network}"),
            Self::Clinician { network, facility } => write!(f, "{role}:{network}:{facility}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_round_trip() {
        for uri in [
            "urn:kouiki-mpi:history-provider:hp-1",
            "urn:kouiki-mpi:network:13-0001",
            "urn:kouiki-mpi:clinician:13-0001:3410712362",
            "urn:kouiki-mpi:operator:ops",
        ] {
            assert_eq!(Principal::from_uri(uri).unwrap().to_uri(), uri);
        }
    }

    #[test]
    fn rejects_malformed() {
        assert!(Principal::from_uri("urn:kouiki-mpi:network:13-0001:x").is_err());
        assert!(Principal::from_uri("urn:kouiki-mpi:clinician:13-0001").is_err());
        assert!(Principal::from_uri("urn:kouiki-mpi:clinician:13-0001:1311234567").is_err());
        assert!(Principal::from_uri("urn:kouiki-mpi:admin:root").is_err());
        assert_eq!(
            Principal::from_uris([
                "https://example.invalid",
                "urn:kouiki-mpi:operator:a",
                "urn:kouiki-mpi:operator:b"
            ]),
            Err(PrincipalError::Several)
        );
        assert_eq!(
            Principal::from_uris(["spiffe://x"]),
            Err(PrincipalError::Missing)
        );
    }
}
