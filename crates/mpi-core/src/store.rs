//! The `Store` trait: what the service needs from persistence, and nothing of any engine.
//!
//! Every method is one transaction and takes or returns a batch, so that a networked database
//! fits behind it with one round trip per call. Identifiers arrive only as keyed hashes. Methods
//! block: callers run them off the async reactor.

use std::sync::Arc;

use chrono::NaiveDate;

use crate::consent::{Consent, ConsentGrant, ConsentId, Revocation};
use crate::ids::NetworkId;
use crate::keys::{DemographicTag, IdentifierKey, PersonKey};
use crate::location::{LocationId, SubjectLocation};
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
    /// A write that does not fit the stored state (an audit append after the wrong head).
    #[error("store conflict: {0}")]
    Conflict(String),
}

/// An audit event as stored: the content bytes exactly as written, so that verification sees
/// any change to them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    /// Sequence number.
    pub sequence: u64,
    /// The previous event's hash.
    pub previous_hash: [u8; 32],
    /// This event's hash.
    pub hash: [u8; 32],
    /// `audit::encode_content` bytes.
    pub content: Vec<u8>,
}

impl AuditRow {
    /// The row of a chained event.
    pub fn of(event: &crate::audit::AuditEvent) -> Self {
        Self {
            sequence: event.sequence,
            previous_hash: event.previous_hash,
            hash: event.hash,
            content: crate::audit::encode_content(&event.event),
        }
    }
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

/// Names one merge; random, shown to callers as 32 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct MergeId(pub [u8; 16]);

impl MergeId {
    /// A fresh random merge ID.
    pub fn random() -> Self {
        Self(PersonKey::random().0)
    }

    /// 32 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        crate::keys::hex(&self.0)
    }

    /// Parses 32 hex digits.
    pub fn parse(text: &str) -> Option<Self> {
        if text.len() != 32 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let mut bytes = [0u8; 16];
        for (index, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[index * 2..index * 2 + 2], 16).ok()?;
        }
        Some(Self(bytes))
    }
}

/// Who did something, when, and why: kept with every merge and unmerge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribution {
    /// The principal, as `role:binding`.
    pub by: String,
    /// Microseconds since the Unix epoch.
    pub at_micros: i64,
    /// The stated reason.
    pub reason: String,
}

/// A request to merge the person of `merged_ref` into the person of `surviving_ref`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeRequest {
    /// The new merge's ID.
    pub merge_id: MergeId,
    /// The reference whose person absorbs the other.
    pub surviving_ref: IdentifierKey,
    /// The reference whose person is absorbed.
    pub merged_ref: IdentifierKey,
    /// Who, when, why.
    pub attribution: Attribution,
}

/// A stored merge with everything needed to undo it exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeRecord {
    /// Its ID.
    pub merge_id: MergeId,
    /// Order of merges: later merges have larger numbers.
    pub sequence: u64,
    /// The surviving reference.
    pub surviving_ref: IdentifierKey,
    /// The merged reference.
    pub merged_ref: IdentifierKey,
    /// The surviving person.
    pub surviving_person: PersonKey,
    /// The absorbed person, restored by an unmerge.
    pub merged_person: PersonKey,
    /// Every reference moved from the absorbed person to the surviving one.
    pub moved_refs: Vec<IdentifierKey>,
    /// Who merged, when, why.
    pub merged: Attribution,
    /// Who unmerged, when, why; `None` while the merge stands.
    pub unmerged: Option<Attribution>,
}

impl MergeRecord {
    /// The record of a merge just made: `moved_refs` went from `merged_person` to
    /// `surviving_person`, as the `sequence`-th merge.
    pub fn standing(
        request: &MergeRequest,
        sequence: u64,
        surviving_person: PersonKey,
        merged_person: PersonKey,
        moved_refs: Vec<IdentifierKey>,
    ) -> Self {
        Self {
            merge_id: request.merge_id,
            sequence,
            surviving_ref: request.surviving_ref,
            merged_ref: request.merged_ref,
            surviving_person,
            merged_person,
            moved_refs,
            merged: request.attribution.clone(),
            unmerged: None,
        }
    }
}

/// What a merge did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MergeOutcome {
    /// Merged; `moved` references changed person.
    Merged {
        /// How many references moved.
        moved: usize,
    },
    /// The surviving reference is unknown.
    UnknownSurviving,
    /// The merged reference is unknown.
    UnknownMerged,
    /// Both references already belong to one person; nothing changed.
    AlreadySame,
}

/// What an unmerge did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnmergeOutcome {
    /// Restored; `restored` references went back to the absorbed person.
    Unmerged {
        /// How many references moved back.
        restored: usize,
    },
    /// No merge has that ID.
    UnknownMerge,
    /// The merge was already undone.
    AlreadyUnmerged,
    /// A later merge that still stands involves one of the two persons; it must be undone
    /// first, or the clusters before this merge could not be restored exactly.
    Superseded {
        /// The later merge.
        by: MergeId,
    },
}

/// What registering one location did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterOutcome {
    /// Stored, new or with its span widened.
    Stored,
    /// The subject's person has no participation consent in force for the network.
    NoParticipation,
    /// The same (network, facility, kind, reference) is registered for another patient.
    RegisteredForAnother,
}

/// A regional ID linked to a subject: the key of the regional ID, the network, and the local ID
/// sealed under the server secret (bound to the regional key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionalLink {
    /// Keyed hash of the regional ID.
    pub regional_key: IdentifierKey,
    /// The network that issued it.
    pub network: NetworkId,
    /// The person reference it is linked to.
    pub subject: IdentifierKey,
    /// The local ID, sealed.
    pub sealed_local: Vec<u8>,
}

/// What linking a regional ID did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkOutcome {
    /// New link.
    Created,
    /// The regional ID was already linked to this subject.
    Unchanged,
    /// The subject's person has no participation consent in force for the network.
    NoParticipation,
    /// The regional ID is linked to another patient.
    LinkedToAnother,
}

/// Which consents a person view holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsentHistory {
    /// Only those not revoked: all that the disclosure rule can use. A long history of revoked
    /// consents does not slow every read.
    Unrevoked,
    /// Every consent, revoked included (ListConsents).
    Full,
}

/// What a person view reads besides the cluster's references: each caller asks for what it
/// uses (FindLocations reads no regional links, CrossReference no locations, ListConsents
/// neither, AccessDisclosure only the references), so no call pays for another's reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViewParts {
    /// Which consents, or none.
    pub consents: Option<ConsentHistory>,
    /// The cluster's locations.
    pub locations: bool,
    /// The cluster's regional-ID links.
    pub links: bool,
}

impl ViewParts {
    /// Every part, with every consent, revoked included.
    pub const EVERYTHING: Self = Self {
        consents: Some(ConsentHistory::Full),
        locations: true,
        links: true,
    };
    /// The cluster's references alone.
    pub const REFS: Self = Self {
        consents: None,
        locations: false,
        links: false,
    };
}

/// Everything the disclosure rule needs about one person, read in one consistent snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PersonView {
    /// The references of the person's cluster.
    pub refs: Vec<IdentifierKey>,
    /// The consents of the cluster (as the view was asked for), oldest first. Shared, not
    /// copied, with a store's cache when they are one reference's.
    pub consents: Arc<[Consent]>,
    /// Every location of the cluster; shared as the consents are.
    pub locations: Arc<[SubjectLocation]>,
    /// Every regional-ID link of the cluster.
    pub links: Vec<RegionalLink>,
}

/// What revoking a consent did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevokeOutcome {
    /// Revoked; for a participation, links cut and locations deleted with it.
    Revoked {
        /// The consent in its revoked state.
        consent: Box<Consent>,
        /// The subject it was attached to.
        subject: IdentifierKey,
        /// Regional-ID links of the network cut (no participation for it remains, or purge).
        links_cut: u32,
        /// Locations of the network deleted (purge only).
        locations_deleted: u32,
    },
    /// No consent has that ID.
    Unknown,
    /// It was revoked before.
    AlreadyRevoked,
}

/// After a participation consent for `network` was revoked: should the network's links of the
/// cluster be cut, and its locations deleted? Links go when no participation for the network
/// remains in force (they need one to exist); both go on purge.
pub fn revocation_effects(
    consents_after: &[Consent],
    revoked: &Consent,
    today: NaiveDate,
) -> Option<(NetworkId, bool, bool)> {
    let ConsentGrant::Participation { network } = revoked.grant else {
        return None;
    };
    let purge = revoked.revocation.as_ref().is_some_and(|r| r.purged);
    let remaining = crate::consent::participation(consents_after, network, today).is_some();
    Some((network, purge || !remaining, purge))
}

/// Reads over one consistent state of a store (a read transaction): a write committed while
/// a snapshot is alive is either wholly in it or not at all, for every read made through it.
/// What a retrieval resolves and then reads comes from one snapshot ([`Store::snapshot`]);
/// the methods of the same names on [`Store`] each take a snapshot of their own.
pub trait Snapshot {
    /// For each insured key, every stored entry with that key (in key order).
    fn qualifications_by_insured(
        &self,
        insured_keys: &[IdentifierKey],
    ) -> StoreResult<Vec<Vec<QualificationEntry>>>;

    /// For each provider reference key, the person it belongs to, if known.
    fn persons_of(&self, person_ref_keys: &[IdentifierKey]) -> StoreResult<Vec<Option<PersonKey>>>;

    /// The person's cluster and the `parts` asked for (consents, locations, links); the parts
    /// not asked for are empty.
    fn person_view(&self, person: PersonKey, parts: ViewParts) -> StoreResult<PersonView>;

    /// The subject a regional ID is linked to.
    fn regional_subject(&self, regional_key: IdentifierKey) -> StoreResult<Option<IdentifierKey>>;
}

/// Persistence for the MPI. One conformance suite (`mpi-store-conformance`) runs against every
/// implementation.
pub trait Store: Send + Sync + 'static {
    /// A snapshot of the store for several reads that must agree with each other. Hold it only
    /// for the reads: not across an `.await`, and not across a call of another method of the
    /// store (a store may hold a lock that keeps writers, and itself, waiting while the
    /// snapshot lives, or keep old pages alive).
    fn snapshot(&self) -> StoreResult<Box<dyn Snapshot + '_>>;

    /// Upserts qualification entries durably, keyed by (insured key, person reference key,
    /// start). Assigns a fresh random `PersonKey` to every person reference seen for the first
    /// time. Returns one outcome per entry, in order; a later duplicate of an earlier entry in
    /// the same batch is `Unchanged`. A store may commit a large batch in several atomic
    /// transactions, each entry with its person, to let other writers in between; on an error
    /// the earlier ones stay stored, which a replay of the batch finds `Unchanged`.
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

    /// Moves every reference of the merged reference's person to the surviving reference's
    /// person and records the merge, in one transaction.
    fn merge_persons(&self, request: &MergeRequest) -> StoreResult<MergeOutcome>;

    /// Undoes a merge in one transaction: the moved references return to the absorbed person,
    /// and the record keeps who undid it, when and why. Refused with `Superseded` while a
    /// later standing merge involves either person.
    fn unmerge_persons(
        &self,
        merge_id: MergeId,
        attribution: &Attribution,
    ) -> StoreResult<UnmergeOutcome>;

    /// The merge with this ID, if any.
    fn merge(&self, merge_id: MergeId) -> StoreResult<Option<MergeRecord>>;

    /// Appends chained audit rows and moves the chain head, which is kept apart from the rows
    /// (so that deleting rows from the end is detectable), in one durable transaction. Fails
    /// with `Conflict`, writing nothing, unless the first row follows the stored head and the
    /// rows follow each other.
    /// `index` names, per sequence number, the person references whose data the event disclosed;
    /// it is kept beside the chain for `audit_rows_of` (and is not part of the hashed content).
    fn append_audit(
        &self,
        rows: &[AuditRow],
        index: &[(u64, IdentifierKey)],
    ) -> StoreResult<crate::audit::ChainHead>;

    /// The anchored chain head (`ChainHead::EMPTY` before the first event).
    fn audit_head(&self) -> StoreResult<crate::audit::ChainHead>;

    /// Stored rows with `from <= sequence <= to`, in order, at most `limit`.
    fn audit_rows(&self, from: u64, to: u64, limit: usize) -> StoreResult<Vec<AuditRow>>;

    /// Rows indexed under any of `subjects` with `sequence >= from`, in order, each once, at
    /// most `limit`.
    fn audit_rows_of(
        &self,
        subjects: &[IdentifierKey],
        from: u64,
        limit: usize,
    ) -> StoreResult<Vec<AuditRow>>;

    /// Registers locations of `network` in one atomic, durable transaction. Each item is stored
    /// only if its subject's person has a participation consent for `network` in force on
    /// `today` (checked inside the transaction, so a concurrent revocation is either before or
    /// after the whole batch). Re-registering an existing (network, facility, kind, reference)
    /// for the same subject widens its span; for another subject it is refused.
    fn register_locations(
        &self,
        network: NetworkId,
        today: NaiveDate,
        items: &[SubjectLocation],
    ) -> StoreResult<Vec<RegisterOutcome>>;

    /// Deletes locations by their IDs in one transaction; true for each that existed.
    fn withdraw_locations(&self, ids: &[LocationId]) -> StoreResult<Vec<bool>>;

    /// The person's cluster and the `parts` asked for (consents, locations, links), from one
    /// snapshot; the parts not asked for are empty.
    fn person_view(&self, person: PersonKey, parts: ViewParts) -> StoreResult<PersonView>;

    /// Stores new consents, each attached to its subject, in one atomic, durable transaction.
    fn record_consents(&self, consents: &[(IdentifierKey, Consent)]) -> StoreResult<()>;

    /// The consent with this ID and its subject.
    fn consent(&self, id: ConsentId) -> StoreResult<Option<(IdentifierKey, Consent)>>;

    /// Revokes a consent in one durable transaction, applying `revocation_effects` to the
    /// subject's whole cluster.
    fn revoke_consent(
        &self,
        id: ConsentId,
        revocation: &Revocation,
        today: NaiveDate,
    ) -> StoreResult<RevokeOutcome>;

    /// Links a regional ID, if the subject's person has a participation consent for the link's
    /// network in force on `today` (checked inside the transaction).
    fn link_regional(&self, link: &RegionalLink, today: NaiveDate) -> StoreResult<LinkOutcome>;

    /// Removes the link of a regional ID; false when there was none.
    fn unlink_regional(&self, regional_key: IdentifierKey) -> StoreResult<bool>;

    /// The subject a regional ID is linked to.
    fn regional_subject(&self, regional_key: IdentifierKey) -> StoreResult<Option<IdentifierKey>>;
}

/// Checks that `rows` continue the chain at `head`; returns the head after them.
pub fn continue_chain(
    head: crate::audit::ChainHead,
    rows: &[AuditRow],
) -> StoreResult<crate::audit::ChainHead> {
    let mut current = head;
    for row in rows {
        if row.sequence != current.sequence + 1 || row.previous_hash != current.hash {
            return Err(StoreError::Conflict(format!(
                "audit row {} does not follow the chain head {}",
                row.sequence, current.sequence
            )));
        }
        current = crate::audit::ChainHead {
            sequence: row.sequence,
            hash: row.hash,
        };
    }
    Ok(current)
}

/// Byte encoding of audit rows and the head.
pub mod audit_codec {
    use super::{AuditRow, StoreError, StoreResult};
    use crate::audit::ChainHead;

    /// The value of an audit row (its sequence is the key): previous hash, hash, content.
    pub fn row_value(row: &AuditRow) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + row.content.len());
        out.extend_from_slice(&row.previous_hash);
        out.extend_from_slice(&row.hash);
        out.extend_from_slice(&row.content);
        out
    }

    /// Decodes a row; the content stays raw bytes.
    pub fn decode_row(sequence: u64, value: &[u8]) -> StoreResult<AuditRow> {
        if value.len() < 64 {
            return Err(StoreError::Corrupt("audit row too short".into()));
        }
        let mut previous_hash = [0u8; 32];
        previous_hash.copy_from_slice(&value[..32]);
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&value[32..64]);
        Ok(AuditRow {
            sequence,
            previous_hash,
            hash,
            content: value[64..].to_vec(),
        })
    }

    /// The head as 40 bytes.
    pub fn head_value(head: ChainHead) -> [u8; 40] {
        let mut out = [0u8; 40];
        out[..8].copy_from_slice(&head.sequence.to_be_bytes());
        out[8..].copy_from_slice(&head.hash);
        out
    }

    /// Decodes the head.
    pub fn decode_head(value: &[u8]) -> StoreResult<ChainHead> {
        if value.len() != 40 {
            return Err(StoreError::Corrupt("audit head length".into()));
        }
        let mut sequence = [0u8; 8];
        sequence.copy_from_slice(&value[..8]);
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&value[8..]);
        Ok(ChainHead {
            sequence: u64::from_be_bytes(sequence),
            hash,
        })
    }
}

/// Finds a standing merge later than `record` that involves one of its persons.
pub fn superseding_merge<'a>(
    record: &MergeRecord,
    merges: impl IntoIterator<Item = &'a MergeRecord>,
) -> Option<MergeId> {
    let persons = [record.surviving_person, record.merged_person];
    merges
        .into_iter()
        .filter(|other| other.sequence > record.sequence && other.unmerged.is_none())
        .find(|other| {
            persons.contains(&other.surviving_person) || persons.contains(&other.merged_person)
        })
        .map(|other| other.merge_id)
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

    fn put_text(out: &mut Vec<u8>, text: &str) {
        // Reasons and principals are validated to far less than 64 KiB.
        let bytes = &text.as_bytes()[..text.len().min(u16::MAX as usize)];
        out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        out.extend_from_slice(bytes);
    }

    fn put_attribution(out: &mut Vec<u8>, attribution: &Attribution) {
        out.extend_from_slice(&attribution.at_micros.to_be_bytes());
        put_text(out, &attribution.by);
        put_text(out, &attribution.reason);
    }

    /// Encodes a merge record (its ID is the key).
    pub fn merge_value(record: &MergeRecord) -> Vec<u8> {
        let mut out = Vec::with_capacity(160 + record.moved_refs.len() * 32);
        out.push(VERSION);
        out.extend_from_slice(&record.sequence.to_be_bytes());
        out.extend_from_slice(&record.surviving_ref.0);
        out.extend_from_slice(&record.merged_ref.0);
        out.extend_from_slice(&record.surviving_person.0);
        out.extend_from_slice(&record.merged_person.0);
        out.extend_from_slice(&(record.moved_refs.len() as u32).to_be_bytes());
        for moved in &record.moved_refs {
            out.extend_from_slice(&moved.0);
        }
        put_attribution(&mut out, &record.merged);
        match &record.unmerged {
            None => out.push(0),
            Some(attribution) => {
                out.push(1);
                put_attribution(&mut out, attribution);
            }
        }
        out
    }

    /// Reads a byte buffer front to back, failing on truncation.
    struct Reader<'a>(&'a [u8]);

    impl<'a> Reader<'a> {
        fn take(&mut self, count: usize) -> StoreResult<&'a [u8]> {
            if self.0.len() < count {
                return Err(StoreError::Corrupt("merge record truncated".into()));
            }
            let (head, tail) = self.0.split_at(count);
            self.0 = tail;
            Ok(head)
        }
        fn array<const N: usize>(&mut self) -> StoreResult<[u8; N]> {
            let mut out = [0u8; N];
            out.copy_from_slice(self.take(N)?);
            Ok(out)
        }
        fn text(&mut self) -> StoreResult<String> {
            let length = u16::from_be_bytes(self.array()?) as usize;
            String::from_utf8(self.take(length)?.to_vec())
                .map_err(|_| StoreError::Corrupt("merge record text".into()))
        }
        fn attribution(&mut self) -> StoreResult<Attribution> {
            let at_micros = i64::from_be_bytes(self.array()?);
            Ok(Attribution {
                at_micros,
                by: self.text()?,
                reason: self.text()?,
            })
        }
    }

    /// Decodes a merge record stored under `merge_id`.
    pub fn decode_merge(merge_id: MergeId, value: &[u8]) -> StoreResult<MergeRecord> {
        let mut reader = Reader(value);
        if reader.array::<1>()? != [VERSION] {
            return Err(StoreError::Corrupt("merge record version".into()));
        }
        let sequence = u64::from_be_bytes(reader.array()?);
        let surviving_ref = IdentifierKey(reader.array()?);
        let merged_ref = IdentifierKey(reader.array()?);
        let surviving_person = PersonKey(reader.array()?);
        let merged_person = PersonKey(reader.array()?);
        let count = u32::from_be_bytes(reader.array()?) as usize;
        if count > reader.0.len() / 32 {
            return Err(StoreError::Corrupt("merge record reference count".into()));
        }
        let moved_refs = (0..count)
            .map(|_| reader.array().map(IdentifierKey))
            .collect::<StoreResult<_>>()?;
        let merged = reader.attribution()?;
        let unmerged = match reader.array::<1>()? {
            [0] => None,
            [1] => Some(reader.attribution()?),
            _ => return Err(StoreError::Corrupt("merge record state".into())),
        };
        if !reader.0.is_empty() {
            return Err(StoreError::Corrupt(
                "merge record has trailing bytes".into(),
            ));
        }
        Ok(MergeRecord {
            merge_id,
            sequence,
            surviving_ref,
            merged_ref,
            surviving_person,
            merged_person,
            moved_refs,
            merged,
            unmerged,
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
                let _ = decode_merge(MergeId([0; 16]), &value);
                let _ = decode_merge(MergeId([0; 16]), &key);
            }
        }

        #[test]
        fn merge_records_round_trip() {
            let attribution = |by: &str| Attribution {
                by: by.into(),
                at_micros: 1_700_000_000_000_000,
                reason: "重複登録".into(),
            };
            let record = MergeRecord {
                merge_id: MergeId([1; 16]),
                sequence: 7,
                surviving_ref: IdentifierKey([2; 32]),
                merged_ref: IdentifierKey([3; 32]),
                surviving_person: PersonKey([4; 16]),
                merged_person: PersonKey([5; 16]),
                moved_refs: vec![IdentifierKey([3; 32]), IdentifierKey([6; 32])],
                merged: attribution("history-provider:hp"),
                unmerged: Some(attribution("operator:ops")),
            };
            assert_eq!(
                decode_merge(record.merge_id, &merge_value(&record)).unwrap(),
                record
            );
            let standing = MergeRecord {
                unmerged: None,
                ..record.clone()
            };
            assert_eq!(
                decode_merge(record.merge_id, &merge_value(&standing)).unwrap(),
                standing
            );
            let bytes = merge_value(&record);
            for cut in 0..bytes.len() {
                assert!(
                    decode_merge(record.merge_id, &bytes[..cut]).is_err(),
                    "truncated at {cut}"
                );
            }
            assert_eq!(
                MergeId::parse(&record.merge_id.to_hex()),
                Some(record.merge_id)
            );
            assert_eq!(MergeId::parse("xyz"), None);
        }

        #[test]
        fn day_order_is_byte_order() {
            let before = NaiveDate::from_ymd_opt(1960, 1, 1).unwrap();
            let after = NaiveDate::from_ymd_opt(2024, 1, 1).unwrap();
            assert!(encode_day(before) < encode_day(after));
        }
    }
}
