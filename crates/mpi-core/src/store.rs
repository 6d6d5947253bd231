//! The `Store` trait: what the service needs from persistence, and nothing of any engine.
//!
//! Every method is one transaction and takes or returns a batch, so that a networked database
//! fits behind it with one round trip per call. Identifiers arrive only as keyed hashes. Methods
//! block: callers run them off the async reactor.

use chrono::NaiveDate;

use crate::keys::{DemographicTag, IdentifierKey, PersonKey};
use crate::qualification::ReasonOfLoss;

/// Why a store call failed. The text goes to logs only, never to callers.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The engine failed (I/O, full disk, lock, connection).
    #[error("storage engine failure: {0}")]
    Engine(String),
    /// A stored record does not decode.
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
}

/// Result alias of the store.
pub type StoreResult<T> = Result<T, StoreError>;

/// A qualification period as stored: identifiers only as keys, demographics only as a tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct QualificationEntry {
    /// Keyed hash of the insured ID.
    pub insured_key: IdentifierKey,
    /// Keyed hash of the provider's person reference.
    pub person_ref_key: IdentifierKey,
    /// First day held.
    pub start: NaiveDate,
    /// Last day held, if it ended.
    pub end: Option<NaiveDate>,
    /// Keyed tag of birth date and sex.
    pub demographic: DemographicTag,
    /// Why it ended.
    pub reason_of_loss: Option<ReasonOfLoss>,
}

/// What an upsert did with one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpsertOutcome {
    /// New.
    Inserted,
    /// Existed with other values; now replaced.
    Updated,
    /// Existed exactly so.
    Unchanged,
}

/// Persistence for the MPI. One conformance suite (`mpi-store-conformance`) runs against every
/// implementation.
pub trait Store: Send + Sync + 'static {
    /// Upserts qualification entries in one atomic, durable transaction, keyed by
    /// (insured key, person reference key, start). Assigns a fresh random `PersonKey` to every
    /// person reference seen for the first time. Returns one outcome per entry, in order; a
    /// later duplicate of an earlier entry in the same batch is `Unchanged`.
    fn upsert_qualifications(
        &self,
        entries: &[QualificationEntry],
    ) -> StoreResult<Vec<UpsertOutcome>>;

    /// For each insured key, every stored entry with that key (in key order).
    fn qualifications_by_insured(
        &self,
        insured_keys: &[IdentifierKey],
    ) -> StoreResult<Vec<Vec<QualificationEntry>>>;

    /// For each provider reference key, the person it belongs to, if known.
    fn persons_of(&self, person_ref_keys: &[IdentifierKey]) -> StoreResult<Vec<Option<PersonKey>>>;
}

/// The byte encoding of stored records, shared by the engines that store bytes.
pub mod codec {
    use super::*;
    use chrono::Days;

    /// Length of a qualification key: insured key, person reference key, start day.
    pub const QUALIFICATION_KEY_LEN: usize = 32 + 32 + 4;
    /// Length of a qualification value: version, end day, demographic tag, reason.
    pub const QUALIFICATION_VALUE_LEN: usize = 1 + 4 + 16 + 1;
    const VERSION: u8 = 1;
    /// 1970-01-01, the origin of stored day numbers.
    pub const EPOCH: NaiveDate = match NaiveDate::from_ymd_opt(1970, 1, 1) {
        Some(date) => date,
        None => NaiveDate::MIN,
    };

    /// Days since 1970-01-01, with the sign bit flipped so that byte order is date order.
    pub fn encode_day(date: NaiveDate) -> [u8; 4] {
        let days = date.signed_duration_since(EPOCH).num_days();
        // Dates are validated to 1870..2199, far inside i32 days.
        let days = i32::try_from(days).unwrap_or(i32::MAX);
        ((days as u32) ^ 0x8000_0000).to_be_bytes()
    }

    /// Inverse of `encode_day`.
    pub fn decode_day(bytes: [u8; 4]) -> StoreResult<NaiveDate> {
        let days = (u32::from_be_bytes(bytes) ^ 0x8000_0000) as i32;
        let magnitude = Days::new(u64::from(days.unsigned_abs()));
        let date = if days >= 0 {
            EPOCH.checked_add_days(magnitude)
        } else {
            EPOCH.checked_sub_days(magnitude)
        };
        date.ok_or_else(|| StoreError::Corrupt("day out of range".into()))
    }

    /// The key of a qualification entry.
    pub fn qualification_key(entry: &QualificationEntry) -> [u8; QUALIFICATION_KEY_LEN] {
        let mut key = [0u8; QUALIFICATION_KEY_LEN];
        key[..32].copy_from_slice(&entry.insured_key.0);
        key[32..64].copy_from_slice(&entry.person_ref_key.0);
        key[64..].copy_from_slice(&encode_day(entry.start));
        key
    }

    /// The value of a qualification entry.
    pub fn qualification_value(entry: &QualificationEntry) -> [u8; QUALIFICATION_VALUE_LEN] {
        let mut value = [0u8; QUALIFICATION_VALUE_LEN];
        value[0] = VERSION;
        // An open period is stored as all zero bytes, which no encoded date equals.
        if let Some(end) = entry.end {
            value[1..5].copy_from_slice(&encode_day(end));
        }
        value[5..21].copy_from_slice(&entry.demographic.0);
        value[21] = entry.reason_of_loss.map_or(0, ReasonOfLoss::code);
        value
    }

    /// Decodes a stored qualification entry, rejecting anything malformed.
    pub fn decode_qualification(key: &[u8], value: &[u8]) -> StoreResult<QualificationEntry> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("qualification {what}"));
        let key: &[u8; QUALIFICATION_KEY_LEN] =
            key.try_into().map_err(|_| corrupt("key length"))?;
        let value: &[u8; QUALIFICATION_VALUE_LEN] =
            value.try_into().map_err(|_| corrupt("value length"))?;
        if value[0] != VERSION {
            return Err(corrupt("value version"));
        }
        let mut insured_key = [0u8; 32];
        insured_key.copy_from_slice(&key[..32]);
        let mut person_ref_key = [0u8; 32];
        person_ref_key.copy_from_slice(&key[32..64]);
        let start = decode_day([key[64], key[65], key[66], key[67]])?;
        let end_bytes = [value[1], value[2], value[3], value[4]];
        let end = if end_bytes == [0; 4] {
            None
        } else {
            Some(decode_day(end_bytes)?)
        };
        let mut demographic = [0u8; 16];
        demographic.copy_from_slice(&value[5..21]);
        let reason_of_loss = match value[21] {
            0 => None,
            code => Some(ReasonOfLoss::from_code(code).ok_or_else(|| corrupt("reason code"))?),
        };
        Ok(QualificationEntry {
            insured_key: IdentifierKey(insured_key),
            person_ref_key: IdentifierKey(person_ref_key),
            start,
            end,
            demographic: DemographicTag(demographic),
            reason_of_loss,
        })
    }

    /// Decodes a stored person key.
    pub fn decode_person(value: &[u8]) -> StoreResult<PersonKey> {
        value
            .try_into()
            .map(PersonKey)
            .map_err(|_| StoreError::Corrupt("person key length".into()))
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn entries_round_trip(
                insured in any::<[u8; 32]>(), person in any::<[u8; 32]>(), tag in any::<[u8; 16]>(),
                start in -40_000i64..80_000, length in proptest::option::of(0i64..20_000),
                reason in proptest::option::of(prop_oneof![Just(ReasonOfLoss::Death), Just(ReasonOfLoss::Other)]),
            ) {
                let start = EPOCH + chrono::Duration::days(start);
                let entry = QualificationEntry {
                    insured_key: IdentifierKey(insured),
                    person_ref_key: IdentifierKey(person),
                    start,
                    end: length.map(|days| start + chrono::Duration::days(days)),
                    demographic: DemographicTag(tag),
                    reason_of_loss: reason,
                };
                let decoded = decode_qualification(&qualification_key(&entry), &qualification_value(&entry)).unwrap();
                prop_assert_eq!(decoded, entry);
            }

            #[test]
            fn decoding_garbage_never_panics(key in proptest::collection::vec(any::<u8>(), 0..80), value in proptest::collection::vec(any::<u8>(), 0..30)) {
                let _ = decode_qualification(&key, &value);
                let _ = decode_person(&value);
            }
        }

        #[test]
        fn day_order_is_byte_order() {
            let before = NaiveDate::from_ymd_opt(1960, 1, 1).unwrap();
            let after = NaiveDate::from_ymd_opt(2024, 1, 1).unwrap();
            assert!(encode_day(before) < encode_day(after));
        }
    }
}
