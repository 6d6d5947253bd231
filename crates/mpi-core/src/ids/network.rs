//! Identifiers of regional networks and of the people they and the history provider know:
//! `NetworkId`, `RegionalId` (地域ID) and `ProviderPersonRef`.

use std::fmt;

/// Why a network ID, regional ID or provider reference is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    /// Network ID not of the form `PP-NNNN`.
    #[error(
        "network ID must be \"PP-NNNN\": prefecture 00-47 (00 for networks across prefectures), a hyphen, 4 digits 0001-9999"
    )]
    NetworkId,
    /// Empty opaque reference.
    #[error("must not be empty")]
    Empty,
    /// Too long opaque reference.
    #[error("must be at most {0} characters")]
    TooLong(usize),
    /// Character outside `[A-Za-z0-9._-]`.
    #[error("must contain only A-Z, a-z, 0-9, '.', '_' and '-'")]
    Charset,
}

/// A regional health-information network (地域医療連携ネットワーク): `PP-NNNN`, with PP the
/// prefecture code (00 for networks spanning prefectures) and NNNN a serial number.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NetworkId([u8; 7]);

impl NetworkId {
    /// Parses `PP-NNNN`.
    pub fn parse(input: &str) -> Result<Self, ReferenceError> {
        let bytes = input.as_bytes();
        let shape_ok = bytes.len() == 7
            && bytes[2] == b'-'
            && bytes[..2].iter().chain(&bytes[3..]).all(u8::is_ascii_digit);
        if !shape_ok {
            return Err(ReferenceError::NetworkId);
        }
        let prefecture = (bytes[0] - b'0') * 10 + (bytes[1] - b'0');
        if prefecture > 47 || &bytes[3..] == b"0000" {
            return Err(ReferenceError::NetworkId);
        }
        let mut id = [0u8; 7];
        id.copy_from_slice(bytes);
        Ok(Self(id))
    }

    /// `PP-NNNN`.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

impl fmt::Display for NetworkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for NetworkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NetworkId({})", self.as_str())
    }
}

fn opaque(input: &str, max: usize) -> Result<String, ReferenceError> {
    if input.is_empty() {
        return Err(ReferenceError::Empty);
    }
    if input.len() > max {
        return Err(ReferenceError::TooLong(max));
    }
    if !input
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(ReferenceError::Charset);
    }
    Ok(input.to_owned())
}

/// A network's own patient ID (地域ID), meaningful only with its network.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RegionalId {
    network: NetworkId,
    local: String,
}

impl RegionalId {
    /// Maximum length of the local part.
    pub const MAX_LEN: usize = 64;

    /// Builds a regional ID from its network and local part (1 to 64 of `[A-Za-z0-9._-]`).
    pub fn new(network: NetworkId, local: &str) -> Result<Self, ReferenceError> {
        Ok(Self {
            network,
            local: opaque(local, Self::MAX_LEN)?,
        })
    }

    /// The issuing network.
    pub fn network(&self) -> NetworkId {
        self.network
    }

    /// The network's local ID.
    pub fn local(&self) -> &str {
        &self.local
    }

    /// The canonical key form hashed for storage.
    pub fn canonical(&self) -> String {
        format!("{}:{}", self.network, self.local)
    }
}

/// Debug never shows the local ID.
impl fmt::Debug for RegionalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RegionalId({}:..)", self.network)
    }
}

/// The history provider's stable reference for a person (opaque, 1 to 64 of `[A-Za-z0-9._-]`).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ProviderPersonRef(String);

impl ProviderPersonRef {
    /// Maximum length.
    pub const MAX_LEN: usize = 64;

    /// Parses a provider reference.
    pub fn parse(input: &str) -> Result<Self, ReferenceError> {
        opaque(input, Self::MAX_LEN).map(Self)
    }

    /// The reference as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Debug never shows the reference: it is a pseudonym of the provider's, still personal.
impl fmt::Debug for ProviderPersonRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProviderPersonRef(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn network_ids() {
        assert_eq!(NetworkId::parse("13-0001").unwrap().as_str(), "13-0001");
        assert!(NetworkId::parse("00-0420").is_ok());
        for bad in [
            "13-0000",
            "48-0001",
            "130001",
            "13_0001",
            "13-001",
            "１３-0001",
        ] {
            assert_eq!(
                NetworkId::parse(bad),
                Err(ReferenceError::NetworkId),
                "{bad}"
            );
        }
    }

    #[test]
    fn regional_ids() {
        let network = NetworkId::parse("27-0001").unwrap();
        let id = RegionalId::new(network, "P-000123.a_b").unwrap();
        assert_eq!(id.canonical(), "27-0001:P-000123.a_b");
        assert!(!format!("{id:?}").contains("000123"));
        assert_eq!(RegionalId::new(network, ""), Err(ReferenceError::Empty));
        assert_eq!(
            RegionalId::new(network, "a b"),
            Err(ReferenceError::Charset)
        );
        assert_eq!(
            RegionalId::new(network, &"a".repeat(65)),
            Err(ReferenceError::TooLong(64))
        );
    }

    proptest! {
        #[test]
        fn valid_references_round_trip(local in "[A-Za-z0-9._-]{1,64}", pref in 0u8..=47, serial in 1u16..=9999) {
            let network = NetworkId::parse(&format!("{pref:02}-{serial:04}")).unwrap();
            prop_assert_eq!(NetworkId::parse(network.as_str()).unwrap(), network);
            let id = RegionalId::new(network, &local).unwrap();
            prop_assert_eq!(id.local(), local.as_str());
            let reference = ProviderPersonRef::parse(&local).unwrap();
            prop_assert_eq!(reference.as_str(), local.as_str());
        }

        #[test]
        fn arbitrary_input_never_panics(input in ".{0,70}") {
            let _ = NetworkId::parse(&input);
            let _ = ProviderPersonRef::parse(&input);
        }
    }
}
