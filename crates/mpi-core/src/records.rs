//! The operations on record locations, regional-ID links, consents and access disclosure:
//! registration, withdrawal, retrieval under the disclosure rule, cross-reference, consent
//! history and "who looked at my records?".
//!
//! Every operation returns, besides its result, the [`AuditNote`] that the transport writes into
//! the audit chain before it answers: the person concerned (pseudonymous), the references whose
//! data was disclosed, the purpose, the count and the consents that decided it.

use std::collections::BTreeSet;

use chrono::NaiveDate;

use crate::audit::decode_content;
use crate::consent::{
    self, Consent, ConsentGrant, ConsentId, Purpose, Requester, Revocation, SourceNetworks,
};
use crate::error::{FieldViolation, ServiceError, ServiceResult};
use crate::ids::{NetworkId, RegionalId};
use crate::keys::{IdentifierKey, PersonKey};
use crate::location::{Location, LocationId, RecordKind, SubjectLocation};
use crate::principal::Principal;
use crate::qualification::InsuredPatient;
use crate::reason::Reason;
use crate::resolution::{Resolved, Subject, resolve_many};
use crate::service::{Mpi, now_micros};
use crate::store::{
    ConsentHistory, LinkOutcome, RegionalLink, RegisterOutcome, RevokeOutcome, Snapshot, ViewParts,
};

/// What FindLocations reads: the unrevoked consents (the disclosure rule's) and the locations,
/// not the regional links.
const LOCATIONS: ViewParts = ViewParts {
    consents: Some(ConsentHistory::Unrevoked),
    locations: true,
    links: false,
};

/// What CrossReference reads: the unrevoked consents and the regional links, not the locations.
const LINKS: ViewParts = ViewParts {
    consents: Some(ConsentHistory::Unrevoked),
    locations: false,
    links: true,
};

/// How a request names a patient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatientRef {
    /// By insured ID (with birth date and sex where the number is household-level).
    Insured(InsuredPatient),
    /// By the caller's own network's regional ID.
    Regional(RegionalId),
}

/// What the audit event of a call records beyond its caller, action and outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditNote {
    /// The stated purpose.
    pub purpose: Option<Purpose>,
    /// The one person concerned.
    pub person: Option<PersonKey>,
    /// The references whose data was disclosed (indexed for access disclosure).
    pub disclosed_subjects: Vec<IdentifierKey>,
    /// How many items were disclosed or changed.
    pub count: u32,
    /// Emergency access, with its reason.
    pub emergency: Option<String>,
    /// The consents that decided the outcome.
    pub deciding: Vec<ConsentId>,
    /// An outcome more precise than the status code (for example `PURGED`).
    pub outcome: Option<&'static str>,
}

/// A result with the audit note of the call that produced it.
pub type Noted<T> = (ServiceResult<T>, AuditNote);

/// One location to register, as validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The patient, resolved as of the first service date.
    pub patient: PatientRef,
    /// The location (its registration time is set when stored).
    pub location: Location,
}

/// The result of one registration item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemOutcome {
    /// Stored or widened.
    Stored,
    /// No person held the identifier on the service date.
    UnknownPatient,
    /// Several persons match.
    AmbiguousPatient,
    /// No participation consent in force for the caller's network.
    NoParticipation,
    /// A field broke a rule.
    Invalid(Vec<FieldViolation>),
}

/// What FindLocations filters on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocationFilter {
    /// Record kinds; empty means every kind.
    pub kinds: Vec<RecordKind>,
    /// Service-date span, inclusive, each bound optional.
    pub from: Option<NaiveDate>,
    /// See `from`.
    pub to: Option<NaiveDate>,
}

/// A page request: at most `size` items after the first `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// Items per page (already capped by the transport).
    pub size: usize,
    /// Items skipped.
    pub offset: usize,
}

/// One page of results and where the next one starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paged<T> {
    /// The items.
    pub items: Vec<T>,
    /// The offset of the next page; `None` on the last.
    pub next: Option<usize>,
}

fn paginate<T>(all: Vec<T>, page: Page) -> Paged<T> {
    let total = all.len();
    let items: Vec<T> = all.into_iter().skip(page.offset).take(page.size).collect();
    let end = page.offset.saturating_add(items.len());
    Paged {
        next: (end < total).then_some(end),
        items,
    }
}

/// Why a retrieval is asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Why {
    /// The purpose.
    pub purpose: Purpose,
    /// The stated emergency reason (required with the emergency purpose).
    pub emergency_reason: Option<Reason>,
}

/// A new consent as validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewConsent {
    /// The patient, resolved as of today.
    pub patient: PatientRef,
    /// What it grants.
    pub grant: ConsentGrant,
    /// First day; today when not given.
    pub valid_from: Option<NaiveDate>,
    /// Last day, inclusive.
    pub valid_until: Option<NaiveDate>,
    /// The consent form or document ID.
    pub evidence: String,
}

/// One retrieval of a patient's data, for access disclosure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisclosureRecord {
    /// The audit event.
    pub sequence: u64,
    /// When, microseconds since the Unix epoch.
    pub at_micros: i64,
    /// The caller.
    pub principal: String,
    /// `FindLocations` or `CrossReference`.
    pub action: String,
    /// The purpose.
    pub purpose: Option<Purpose>,
    /// Emergency access and its reason.
    pub emergency: Option<String>,
    /// How many pointers or IDs were disclosed.
    pub disclosed: u32,
}

/// The actions whose events are disclosures of a patient's data.
pub const DISCLOSING_ACTIONS: [&str; 2] = ["FindLocations", "CrossReference"];

/// Maximum length of a consent's evidence reference.
pub const EVIDENCE_MAX_CHARS: usize = 128;

fn not_found_patient() -> ServiceError {
    ServiceError::NotFound("no person holds that identifier on that date".into())
}

fn ambiguous_patient() -> ServiceError {
    ServiceError::FailedPrecondition(
        "the identifier matches several persons; give birth_date and sex".into(),
    )
}

impl Mpi {
    fn resolve_regional(&self, reads: &dyn Snapshot, id: &RegionalId) -> ServiceResult<Resolved> {
        let Some(reference) = reads.regional_subject(self.keyer().regional(id))? else {
            return Ok(Resolved::Unknown);
        };
        Ok(match reads.persons_of(&[reference])?.pop().flatten() {
            Some(person) => Resolved::One(Subject { person, reference }),
            None => Resolved::Unknown,
        })
    }

    /// Resolves a patient as of `on` on `reads`, or fails with NOT_FOUND or
    /// FAILED_PRECONDITION.
    fn subject(
        &self,
        reads: &dyn Snapshot,
        patient: &PatientRef,
        on: NaiveDate,
    ) -> ServiceResult<Subject> {
        let resolved = match patient {
            PatientRef::Insured(insured) => resolve_many(reads, self.keyer(), &[(insured, on)])?
                .pop()
                .unwrap_or(Resolved::Unknown),
            PatientRef::Regional(id) => self.resolve_regional(reads, id)?,
        };
        match resolved {
            Resolved::One(subject) => Ok(subject),
            Resolved::Ambiguous => Err(ambiguous_patient()),
            Resolved::Unknown => Err(not_found_patient()),
        }
    }

    /// RegisterLocations: resolves each valid item as of its first service date and stores the
    /// accepted ones in one atomic transaction; one outcome per item, in order.
    pub fn register_locations(
        &self,
        network: NetworkId,
        items: Vec<Result<Registration, Vec<FieldViolation>>>,
    ) -> ServiceResult<Vec<ItemOutcome>> {
        // Calls resolve one at a time: the store has one writer, and many calls resolving at
        // once would only take its core from it (see `Mpi::registration_reads`).
        let resolving = self
            .registration_reads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Every item is resolved on one snapshot, dropped before the write below.
        let reads = self.store().snapshot()?;
        let now = now_micros();
        let mut outcomes: Vec<Option<ItemOutcome>> = Vec::with_capacity(items.len());
        let mut insured: Vec<(usize, &InsuredPatient, NaiveDate)> = Vec::new();
        let mut subjects: Vec<Option<IdentifierKey>> = vec![None; items.len()];
        for (index, item) in items.iter().enumerate() {
            match item {
                Err(violations) => outcomes.push(Some(ItemOutcome::Invalid(violations.clone()))),
                Ok(registration) => {
                    outcomes.push(None);
                    match &registration.patient {
                        PatientRef::Insured(patient) => {
                            insured.push((index, patient, registration.location.first_service));
                        }
                        PatientRef::Regional(id) => match self.resolve_regional(&*reads, id)? {
                            Resolved::One(subject) => subjects[index] = Some(subject.reference),
                            _ => outcomes[index] = Some(ItemOutcome::UnknownPatient),
                        },
                    }
                }
            }
        }
        let asked: Vec<_> = insured.iter().map(|(_, p, on)| (*p, *on)).collect();
        for ((index, _, _), resolved) in
            insured
                .iter()
                .zip(resolve_many(&*reads, self.keyer(), &asked)?)
        {
            match resolved {
                Resolved::One(subject) => subjects[*index] = Some(subject.reference),
                Resolved::Ambiguous => outcomes[*index] = Some(ItemOutcome::AmbiguousPatient),
                Resolved::Unknown => outcomes[*index] = Some(ItemOutcome::UnknownPatient),
            }
        }
        let mut writes = Vec::new();
        let mut positions = Vec::new();
        for (index, item) in items.into_iter().enumerate() {
            if let (Ok(registration), Some(subject)) = (item, subjects[index]) {
                let mut location = registration.location;
                location.registered_at_micros = now;
                writes.push(SubjectLocation { subject, location });
                positions.push(index);
            }
        }
        let today = crate::dates::today_in_japan();
        drop(reads);
        drop(resolving);
        let stored = self.store().register_locations(network, today, &writes)?;
        for (index, outcome) in positions.into_iter().zip(stored) {
            outcomes[index] = Some(match outcome {
                RegisterOutcome::Stored => ItemOutcome::Stored,
                RegisterOutcome::NoParticipation => ItemOutcome::NoParticipation,
                RegisterOutcome::RegisteredForAnother => {
                    ItemOutcome::Invalid(vec![FieldViolation::new(
                        "reference",
                        "is already registered for another patient at this facility and kind; withdraw it first",
                    )])
                }
            });
        }
        Ok(outcomes
            .into_iter()
            .map(|outcome| outcome.unwrap_or(ItemOutcome::UnknownPatient))
            .collect())
    }

    /// WithdrawLocations: deletes the caller's network's locations; the positions of those not
    /// found.
    pub fn withdraw_locations(&self, ids: &[LocationId]) -> ServiceResult<(u32, Vec<u32>)> {
        let found = self.store().withdraw_locations(ids)?;
        let missing: Vec<u32> = found
            .iter()
            .enumerate()
            .filter(|(_, found)| !**found)
            .map(|(index, _)| index as u32)
            .collect();
        Ok((found.len() as u32 - missing.len() as u32, missing))
    }

    fn requester(&self, principal: &Principal, why: &Why) -> ServiceResult<Requester> {
        let (network, facility) = match principal {
            Principal::Clinician { network, facility } => (*network, Some(*facility)),
            Principal::Network(network) => (*network, None),
            _ => {
                return Err(ServiceError::PermissionDenied(
                    "only clinicians and networks retrieve patient data".into(),
                ));
            }
        };
        Ok(Requester {
            network,
            facility,
            purpose: why.purpose,
            emergency_bypass: why.purpose == Purpose::Emergency
                && why.emergency_reason.is_some()
                && self.emergency_access(),
        })
    }

    /// What a retrieval starts from: who asks, today, and the `parts` of the patient's data it
    /// reads, as of today (in one snapshot); the note learns the person and whose data is about
    /// to be disclosed.
    fn disclosure_view(
        &self,
        principal: &Principal,
        patient: &PatientRef,
        why: &Why,
        parts: ViewParts,
        note: &mut AuditNote,
    ) -> ServiceResult<(Requester, NaiveDate, crate::store::PersonView)> {
        let requester = self.requester(principal, why)?;
        let today = crate::dates::today_in_japan();
        let reads = self.store().snapshot()?;
        let subject = self.subject(&*reads, patient, today)?;
        note.person = Some(subject.person);
        let view = reads.person_view(subject.person, parts)?;
        note.disclosed_subjects = view.refs.clone();
        Ok((requester, today, view))
    }

    fn note_for(why: &Why) -> AuditNote {
        AuditNote {
            purpose: Some(why.purpose),
            emergency: (why.purpose == Purpose::Emergency).then(|| {
                why.emergency_reason
                    .as_ref()
                    .map(|r| r.as_str().to_owned())
                    .unwrap_or_default()
            }),
            ..AuditNote::default()
        }
    }

    /// FindLocations: every location of the patient's cluster that the disclosure rule lets the
    /// caller see, filtered and paged.
    pub fn find_locations(
        &self,
        principal: &Principal,
        patient: &PatientRef,
        filter: &LocationFilter,
        why: &Why,
        page: Page,
    ) -> Noted<Paged<Location>> {
        let mut note = Self::note_for(why);
        let result = (|| {
            let (requester, today, view) =
                self.disclosure_view(principal, patient, why, LOCATIONS, &mut note)?;
            let mut deciding = BTreeSet::new();
            let mut shown: Vec<Location> = view
                .locations
                .iter()
                .map(|located| &located.location)
                .filter(|l| filter.kinds.is_empty() || filter.kinds.contains(&l.id.kind))
                .filter(|l| l.overlaps(filter.from, filter.to))
                .filter(|l| {
                    match consent::decide(
                        &view.consents,
                        l.id.network,
                        Some(l.id.kind),
                        &requester,
                        today,
                    ) {
                        Some(allowed) => {
                            deciding.extend(allowed.deciding);
                            true
                        }
                        None => false,
                    }
                })
                .cloned()
                .collect();
            shown.sort_by(|a, b| {
                (a.first_service, &a.id, a.last_service).cmp(&(
                    b.first_service,
                    &b.id,
                    b.last_service,
                ))
            });
            let paged = paginate(shown, page);
            note.count = paged.items.len() as u32;
            note.deciding = deciding.into_iter().collect();
            Ok(paged)
        })();
        (result, note)
    }

    /// CrossReference: the target network's regional IDs for the patient, when the disclosure
    /// rule lets the caller see data the target network holds (a grant must cover every kind);
    /// otherwise none.
    pub fn cross_reference(
        &self,
        principal: &Principal,
        patient: &PatientRef,
        target: NetworkId,
        why: &Why,
    ) -> Noted<Vec<String>> {
        let mut note = Self::note_for(why);
        let result = (|| {
            let (requester, today, view) =
                self.disclosure_view(principal, patient, why, LINKS, &mut note)?;
            let Some(allowed) = consent::decide(&view.consents, target, None, &requester, today)
            else {
                return Ok(Vec::new());
            };
            let mut ids = Vec::new();
            for link in view.links.iter().filter(|link| link.network == target) {
                let local = self
                    .keyer()
                    .open(&link.regional_key, &link.sealed_local)
                    .map_err(|_| {
                        crate::store::StoreError::Corrupt("sealed regional ID does not open".into())
                    })?;
                ids.push(String::from_utf8(local).map_err(|_| {
                    crate::store::StoreError::Corrupt("regional ID is not UTF-8".into())
                })?);
            }
            ids.sort();
            note.count = ids.len() as u32;
            if !ids.is_empty() {
                note.deciding = allowed.deciding;
            }
            Ok(ids)
        })();
        (result, note)
    }

    /// LinkRegionalId: links the caller's network's regional ID to the patient as of `as_of`;
    /// true when the link is new.
    pub fn link_regional_id(
        &self,
        patient: &InsuredPatient,
        as_of: NaiveDate,
        regional: &RegionalId,
    ) -> Noted<bool> {
        let mut note = AuditNote::default();
        let result = (|| {
            let subject = self.subject(
                &*self.store().snapshot()?,
                &PatientRef::Insured(patient.clone()),
                as_of,
            )?;
            note.person = Some(subject.person);
            let regional_key = self.keyer().regional(regional);
            let link = RegionalLink {
                regional_key,
                network: regional.network(),
                subject: subject.reference,
                sealed_local: self
                    .keyer()
                    .seal(&regional_key, regional.local().as_bytes()),
            };
            let today = crate::dates::today_in_japan();
            match self.store().link_regional(&link, today)? {
                LinkOutcome::Created => {
                    note.count = 1;
                    Ok(true)
                }
                LinkOutcome::Unchanged => Ok(false),
                LinkOutcome::NoParticipation => Err(ServiceError::FailedPrecondition(format!(
                    "the patient has no participation consent for network {} in force",
                    regional.network()
                ))),
                LinkOutcome::LinkedToAnother => Err(ServiceError::FailedPrecondition(
                    "regional_id is linked to another patient; unlink it first".into(),
                )),
            }
        })();
        (result, note)
    }

    /// UnlinkRegionalId: removes the caller's network's link.
    pub fn unlink_regional_id(&self, regional: &RegionalId) -> Noted<()> {
        let mut note = AuditNote::default();
        let result = (|| {
            let resolved = self.resolve_regional(&*self.store().snapshot()?, regional)?;
            if let Resolved::One(subject) = resolved {
                note.person = Some(subject.person);
            }
            if self
                .store()
                .unlink_regional(self.keyer().regional(regional))?
            {
                note.count = 1;
                Ok(())
            } else {
                Err(ServiceError::NotFound(
                    "regional_id is not linked to any patient".into(),
                ))
            }
        })();
        (result, note)
    }

    /// RecordConsent: checks what the caller may record, resolves the patient as of today and
    /// stores the consent.
    pub fn record_consent(&self, principal: &Principal, new: NewConsent) -> Noted<Consent> {
        let mut note = AuditNote::default();
        let result = (|| {
            let (subject, consent) = self.prepare_consent(principal, new)?;
            note.person = Some(subject.person);
            self.store()
                .record_consents(&[(subject.reference, consent.clone())])?;
            note.count = 1;
            note.deciding = vec![consent.id];
            Ok(consent)
        })();
        (result, note)
    }

    /// Records many consents at once (a bulk load by an operator's tool), each checked as
    /// RecordConsent checks it; the accepted ones are stored in one transaction. One result
    /// per consent, in order.
    pub fn record_consents(
        &self,
        principal: &Principal,
        news: Vec<NewConsent>,
    ) -> ServiceResult<Vec<ServiceResult<ConsentId>>> {
        let mut accepted = Vec::new();
        let results = news
            .into_iter()
            .map(|new| {
                let (subject, consent) = self.prepare_consent(principal, new)?;
                let id = consent.id;
                accepted.push((subject.reference, consent));
                Ok(id)
            })
            .collect();
        self.store().record_consents(&accepted)?;
        Ok(results)
    }

    /// Checks what the caller may record and resolves the patient as of today.
    fn prepare_consent(
        &self,
        principal: &Principal,
        new: NewConsent,
    ) -> ServiceResult<(Subject, Consent)> {
        if let Principal::Network(own) = principal {
            let foreign = |n: &NetworkId| n != own;
            match &new.grant {
                ConsentGrant::OptOut => {
                    return Err(ServiceError::PermissionDenied(
                        "networks record participation and disclosure only; an opt-out is recorded by an operator".into(),
                    ));
                }
                ConsentGrant::Participation { network } if foreign(network) => {
                    return Err(ServiceError::PermissionDenied(format!(
                        "network {own} may record consents for its own network only"
                    )));
                }
                ConsentGrant::Disclosure { network, scope } => {
                    let sources_ok = match &scope.sources {
                        SourceNetworks::Recording => true,
                        SourceNetworks::Listed(list) => !list.iter().any(foreign),
                        SourceNetworks::All => false,
                    };
                    if foreign(network) || !sources_ok {
                        return Err(ServiceError::PermissionDenied(format!(
                            "network {own} may record disclosure of its own network's data only"
                        )));
                    }
                }
                _ => {}
            }
        }
        let today = crate::dates::today_in_japan();
        let valid_from = new.valid_from.unwrap_or(today);
        if new.valid_until.is_some_and(|until| until < valid_from) {
            return Err(ServiceError::invalid(
                "valid_until",
                "must not be before valid_from",
            ));
        }
        let subject = self.subject(&*self.store().snapshot()?, &new.patient, today)?;
        let consent = Consent {
            id: ConsentId::random(),
            grant: new.grant,
            valid_from,
            valid_until: new.valid_until,
            evidence: new.evidence,
            recorded_by: principal.to_string(),
            recorded_at_micros: now_micros(),
            revocation: None,
        };
        Ok((subject, consent))
    }

    /// RevokeConsent: an operator, or the network that recorded it. With `purge` (participation
    /// only) the network's pointers and links for the patient are deleted too.
    pub fn revoke_consent(
        &self,
        principal: &Principal,
        id: ConsentId,
        reason: &Reason,
        purge: bool,
    ) -> Noted<Consent> {
        let mut note = AuditNote {
            deciding: vec![id],
            ..AuditNote::default()
        };
        let result = (|| {
            let Some((subject, stored)) = self.store().consent(id)? else {
                return Err(ServiceError::NotFound("consent_id names no consent".into()));
            };
            note.person = self.store().persons_of(&[subject])?.pop().flatten();
            let allowed = match principal {
                Principal::Operator(_) => true,
                Principal::Network(_) => stored.recorded_by == principal.to_string(),
                _ => false,
            };
            if !allowed {
                return Err(ServiceError::PermissionDenied(
                    "only an operator or the network that recorded a consent may revoke it".into(),
                ));
            }
            if purge && !matches!(stored.grant, ConsentGrant::Participation { .. }) {
                return Err(ServiceError::invalid(
                    "purge",
                    "only a participation consent can be revoked with purge",
                ));
            }
            let revocation = Revocation {
                by: principal.to_string(),
                at_micros: now_micros(),
                reason: reason.as_str().to_owned(),
                purged: purge,
            };
            let today = crate::dates::today_in_japan();
            match self.store().revoke_consent(id, &revocation, today)? {
                RevokeOutcome::Revoked {
                    consent,
                    links_cut,
                    locations_deleted,
                    ..
                } => {
                    note.count = links_cut + locations_deleted;
                    if purge {
                        note.outcome = Some("PURGED");
                    }
                    Ok(*consent)
                }
                RevokeOutcome::Unknown => {
                    Err(ServiceError::NotFound("consent_id names no consent".into()))
                }
                RevokeOutcome::AlreadyRevoked => Err(ServiceError::FailedPrecondition(
                    "the consent was already revoked".into(),
                )),
            }
        })();
        (result, note)
    }

    /// ListConsents: the patient's whole consent history, oldest first.
    pub fn list_consents(&self, patient: &PatientRef, page: Page) -> Noted<Paged<Consent>> {
        let mut note = AuditNote::default();
        let result = (|| {
            let reads = self.store().snapshot()?;
            let subject = self.subject(&*reads, patient, crate::dates::today_in_japan())?;
            note.person = Some(subject.person);
            let view = reads.person_view(
                subject.person,
                ViewParts {
                    consents: Some(ConsentHistory::Full),
                    ..ViewParts::REFS
                },
            )?;
            let paged = paginate(view.consents.to_vec(), page);
            note.count = paged.items.len() as u32;
            Ok(paged)
        })();
        (result, note)
    }

    /// AccessDisclosure: the retrievals of the patient's data (every reference of the cluster)
    /// with `from <= at < to`, from sequence `after` on, at most `limit`; and the sequence to
    /// continue from.
    pub fn access_disclosure(
        &self,
        patient: &PatientRef,
        from_micros: Option<i64>,
        to_micros: Option<i64>,
        after: u64,
        limit: usize,
    ) -> Noted<(Vec<DisclosureRecord>, Option<u64>)> {
        let mut note = AuditNote::default();
        let result = (|| {
            let view = {
                // Dropped before the audit reads below: a store may hold a lock while a snapshot lives.
                let reads = self.store().snapshot()?;
                let subject = self.subject(&*reads, patient, crate::dates::today_in_japan())?;
                note.person = Some(subject.person);
                reads.person_view(subject.person, ViewParts::REFS)?
            };
            let mut entries = Vec::new();
            let mut next = after;
            loop {
                let rows = self.store().audit_rows_of(&view.refs, next, limit)?;
                let exhausted = rows.len() < limit;
                for row in rows {
                    next = row.sequence + 1;
                    let event = decode_content(&row.content).map_err(|_| {
                        crate::store::StoreError::Corrupt(format!(
                            "audit event {} does not decode",
                            row.sequence
                        ))
                    })?;
                    let in_period = from_micros.is_none_or(|from| event.at_micros >= from)
                        && to_micros.is_none_or(|to| event.at_micros < to);
                    if !in_period || !DISCLOSING_ACTIONS.contains(&event.action.as_str()) {
                        continue;
                    }
                    entries.push(DisclosureRecord {
                        sequence: row.sequence,
                        at_micros: event.at_micros,
                        principal: event.principal,
                        action: event.action,
                        purpose: Purpose::from_code(event.purpose),
                        emergency: event.emergency.then_some(event.emergency_reason),
                        disclosed: event.count,
                    });
                    if entries.len() == limit {
                        note.count = entries.len() as u32;
                        return Ok((entries, Some(next)));
                    }
                }
                if exhausted {
                    note.count = entries.len() as u32;
                    return Ok((entries, None));
                }
            }
        })();
        (result, note)
    }
}
