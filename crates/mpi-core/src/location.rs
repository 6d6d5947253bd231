//! Record locations: where a patient's check-up, treatment and prescription records are held.
//!
//! A location is a pointer (network, facility, kind, the network's own reference) with the span
//! of service dates it covers. It is attached to the history provider's person reference that
//! held the patient's identifier on the service date (the *subject*), never to a person: a
//! person's locations are those of every reference in its cluster, so merges and unmerges
//! never move a location.

use chrono::NaiveDate;
use sha2::{Digest, Sha256};

use crate::ids::{FacilityCode, NetworkId};
use crate::keys::IdentifierKey;
use crate::store::codec::{decode_day, encode_day};
use crate::store::{StoreError, StoreResult};

/// The kind of record a location points to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecordKind {
    /// 健診: health check-up.
    Checkup,
    /// 診療: treatment.
    Treatment,
    /// 投薬・調剤: prescription and dispensing.
    Prescription,
}

impl RecordKind {
    /// Every kind.
    pub const ALL: [RecordKind; 3] = [Self::Checkup, Self::Treatment, Self::Prescription];

    /// The API enum number.
    pub fn code(self) -> u8 {
        match self {
            Self::Checkup => 1,
            Self::Treatment => 2,
            Self::Prescription => 3,
        }
    }

    /// From the API enum number.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.code() == code)
    }
}

/// Why a location reference is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceTextError {
    /// Empty.
    #[error("a reference is required")]
    Empty,
    /// Too long.
    #[error("must be at most {} characters", RecordReference::MAX_CHARS)]
    TooLong,
    /// Control characters or whitespace other than a plain space.
    #[error("must contain only printable characters")]
    NotPrintable,
}

/// The network's own reference of a record (an endpoint or document-registry reference), opaque
/// to the MPI: 1 to 512 printable characters.
///
/// Shared, not copied, when cloned: a retrieval clones every location it answers with out of
/// the store's read cache.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordReference(std::sync::Arc<str>);

impl RecordReference {
    /// Maximum length in characters.
    pub const MAX_CHARS: usize = 512;

    /// Validates a reference.
    pub fn parse(text: &str) -> Result<Self, ReferenceTextError> {
        if text.is_empty() {
            return Err(ReferenceTextError::Empty);
        }
        if text.chars().count() > Self::MAX_CHARS {
            return Err(ReferenceTextError::TooLong);
        }
        if text
            .chars()
            .any(|c| c.is_control() || (c.is_whitespace() && c != ' '))
        {
            return Err(ReferenceTextError::NotPrintable);
        }
        Ok(Self(std::sync::Arc::from(text)))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A 16-byte digest that names the reference inside keys.
    pub fn digest(&self) -> [u8; 16] {
        let full: [u8; 32] = Sha256::digest(self.0.as_bytes()).into();
        let mut out = [0u8; 16];
        out.copy_from_slice(&full[..16]);
        out
    }
}

/// Debug shows only the length: a reference may embed a network's own patient number.
impl std::fmt::Debug for RecordReference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RecordReference({} chars)", self.0.chars().count())
    }
}

/// What names one location: unique per network.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LocationId {
    /// The network that registered it.
    pub network: NetworkId,
    /// The facility holding the record.
    pub facility: FacilityCode,
    /// The record kind.
    pub kind: RecordKind,
    /// The network's reference.
    pub reference: RecordReference,
}

/// One record pointer as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// Network, facility, kind, reference.
    pub id: LocationId,
    /// First service date covered.
    pub first_service: NaiveDate,
    /// Last service date covered (on or after the first).
    pub last_service: NaiveDate,
    /// When it was first registered, microseconds since the Unix epoch.
    pub registered_at_micros: i64,
}

impl Location {
    /// Widens this location's span to cover `other`'s; the first registration time stays.
    pub fn widen(&mut self, other: &Location) {
        self.first_service = self.first_service.min(other.first_service);
        self.last_service = self.last_service.max(other.last_service);
    }

    /// True when the location's span meets `[from, to]` (each bound optional, inclusive).
    pub fn overlaps(&self, from: Option<NaiveDate>, to: Option<NaiveDate>) -> bool {
        from.is_none_or(|from| self.last_service >= from)
            && to.is_none_or(|to| self.first_service <= to)
    }
}

/// A location with the subject it is attached to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectLocation {
    /// The person reference that held the identifier on the service date.
    pub subject: IdentifierKey,
    /// The location.
    pub location: Location,
}

/// The byte encoding of locations, shared by the engines that store bytes.
pub mod codec {
    use super::*;

    /// Length of the part of a key that names a location within a network: network (7),
    /// facility (10), kind (1), reference digest (16).
    pub const ID_KEY_LEN: usize = 7 + 10 + 1 + 16;
    /// Length of a location key: subject (32) then the location's ID key.
    pub const KEY_LEN: usize = 32 + ID_KEY_LEN;

    /// The key naming a location within every subject: network, facility, kind, digest.
    pub fn id_key(id: &LocationId) -> [u8; ID_KEY_LEN] {
        let mut key = [0u8; ID_KEY_LEN];
        key[..7].copy_from_slice(id.network.as_str().as_bytes());
        key[7..17].copy_from_slice(id.facility.as_str().as_bytes());
        key[17] = id.kind.code();
        key[18..].copy_from_slice(&id.reference.digest());
        key
    }

    /// The key of a subject's location: subject first, so a person's locations are ranges.
    pub fn key(subject: IdentifierKey, id: &LocationId) -> [u8; KEY_LEN] {
        let mut key = [0u8; KEY_LEN];
        key[..32].copy_from_slice(&subject.0);
        key[32..].copy_from_slice(&id_key(id));
        key
    }

    /// The first and last keys of a subject's locations in one network.
    pub fn network_range(
        subject: IdentifierKey,
        network: NetworkId,
    ) -> ([u8; KEY_LEN], [u8; KEY_LEN]) {
        let mut from = [0u8; KEY_LEN];
        from[..32].copy_from_slice(&subject.0);
        from[32..39].copy_from_slice(network.as_str().as_bytes());
        let mut to = [0xffu8; KEY_LEN];
        to[..39].copy_from_slice(&from[..39]);
        (from, to)
    }

    /// The first and last keys of a subject's locations.
    pub fn subject_range(subject: IdentifierKey) -> ([u8; KEY_LEN], [u8; KEY_LEN]) {
        let mut from = [0u8; KEY_LEN];
        from[..32].copy_from_slice(&subject.0);
        let mut to = [0xffu8; KEY_LEN];
        to[..32].copy_from_slice(&subject.0);
        (from, to)
    }

    /// The value: version, first day, last day, registration time, then the fields that the
    /// key only digests (network, facility, reference text).
    pub fn value(location: &Location) -> Vec<u8> {
        let reference = location.id.reference.as_str().as_bytes();
        let mut out = Vec::with_capacity(1 + 4 + 4 + 8 + 7 + 10 + 1 + reference.len());
        out.push(1);
        out.extend_from_slice(&encode_day(location.first_service));
        out.extend_from_slice(&encode_day(location.last_service));
        out.extend_from_slice(&location.registered_at_micros.to_be_bytes());
        out.extend_from_slice(location.id.network.as_str().as_bytes());
        out.extend_from_slice(location.id.facility.as_str().as_bytes());
        out.push(location.id.kind.code());
        out.extend_from_slice(reference);
        out
    }

    /// Decodes a stored location, rejecting anything malformed.
    pub fn decode(value: &[u8]) -> StoreResult<Location> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("location {what}"));
        if value.len() < 35 || value[0] != 1 {
            return Err(corrupt("header"));
        }
        let day = |at: usize| -> StoreResult<NaiveDate> {
            let mut bytes = [0u8; 4];
            bytes.copy_from_slice(&value[at..at + 4]);
            decode_day(bytes)
        };
        let first_service = day(1)?;
        let last_service = day(5)?;
        let mut micros = [0u8; 8];
        micros.copy_from_slice(&value[9..17]);
        let text = |range: std::ops::Range<usize>| {
            std::str::from_utf8(&value[range]).map_err(|_| corrupt("text"))
        };
        let network = NetworkId::parse(text(17..24)?).map_err(|_| corrupt("network"))?;
        let facility = FacilityCode::parse(text(24..34)?).map_err(|_| corrupt("facility"))?;
        let kind = RecordKind::from_code(value[34]).ok_or_else(|| corrupt("kind"))?;
        let reference =
            RecordReference::parse(text(35..value.len())?).map_err(|_| corrupt("reference"))?;
        if last_service < first_service {
            return Err(corrupt("span"));
        }
        Ok(Location {
            id: LocationId {
                network,
                facility,
                kind,
                reference,
            },
            first_service,
            last_service,
            registered_at_micros: i64::from_be_bytes(micros),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Location {
        Location {
            id: LocationId {
                network: NetworkId::parse("13-0001").unwrap(),
                facility: FacilityCode::parse("3410712362").unwrap(),
                kind: RecordKind::Prescription,
                reference: RecordReference::parse("xds:1.2.3^doc-9 あ").unwrap(),
            },
            first_service: NaiveDate::from_ymd_opt(2021, 4, 1).unwrap(),
            last_service: NaiveDate::from_ymd_opt(2021, 6, 30).unwrap(),
            registered_at_micros: 1_700_000_000_000_000,
        }
    }

    #[test]
    fn round_trip_and_truncation() {
        let location = sample();
        let bytes = codec::value(&location);
        assert_eq!(codec::decode(&bytes).unwrap(), location);
        for cut in 0..35 {
            assert!(codec::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn widening_and_overlap() {
        let mut location = sample();
        let mut other = sample();
        other.first_service = NaiveDate::from_ymd_opt(2020, 1, 1).unwrap();
        other.last_service = other.first_service;
        location.widen(&other);
        assert_eq!(location.first_service, other.first_service);
        assert_eq!(
            location.last_service,
            NaiveDate::from_ymd_opt(2021, 6, 30).unwrap()
        );
        let day = |y, m, d| NaiveDate::from_ymd_opt(y, m, d);
        assert!(location.overlaps(None, None));
        assert!(location.overlaps(day(2021, 6, 30), None));
        assert!(!location.overlaps(day(2021, 7, 1), None));
        assert!(!location.overlaps(None, day(2019, 12, 31)));
    }

    #[test]
    fn references_are_printable_and_bounded() {
        assert_eq!(RecordReference::parse(""), Err(ReferenceTextError::Empty));
        assert_eq!(
            RecordReference::parse("a\nb"),
            Err(ReferenceTextError::NotPrintable)
        );
        assert_eq!(
            RecordReference::parse(&"x".repeat(513)),
            Err(ReferenceTextError::TooLong)
        );
        assert!(RecordReference::parse(&"文".repeat(512)).is_ok());
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = codec::decode(&bytes);
        }
    }
}
