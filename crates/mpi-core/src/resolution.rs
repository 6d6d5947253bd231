//! Identity resolution as of a date: one person, ambiguous, or unknown; never a guess.

use std::collections::BTreeSet;

use chrono::NaiveDate;

use crate::keys::{Keyer, PersonKey};
use crate::qualification::InsuredPatient;
use crate::store::{QualificationEntry, Store, StoreError, StoreResult};

/// The outcome of resolving an identifier on a date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// Exactly one person held it.
    Person(PersonKey),
    /// Several persons match (for example same-sex twins on one household number).
    Ambiguous,
    /// Nobody held it on that date (or nobody with the given birth date and sex).
    Unknown,
}

/// Resolves an insured patient as of `on`.
///
/// Every qualification period of the insured ID that contains `on` is a candidate; when the
/// caller gave birth date and sex, only candidates with the same tag remain (this is what tells
/// household members apart on numbers without 枝番). Candidates are mapped to persons through
/// their provider references; one distinct person resolves, several are ambiguous.
pub fn resolve(
    store: &dyn Store,
    keyer: &Keyer,
    patient: &InsuredPatient,
    on: NaiveDate,
) -> StoreResult<Resolution> {
    let insured_key = keyer.insured(&patient.insured_id);
    let entries = store
        .qualifications_by_insured(&[insured_key])?
        .pop()
        .unwrap_or_default();
    let tag = patient
        .demographics
        .map(|d| keyer.demographic(d.birth_date, d.sex));
    let references: BTreeSet<_> = entries
        .iter()
        .filter(|entry| held_on(entry, on))
        .filter(|entry| tag.is_none_or(|tag| entry.demographic == tag))
        .map(|entry| entry.person_ref_key)
        .collect();
    if references.is_empty() {
        return Ok(Resolution::Unknown);
    }
    let references: Vec<_> = references.into_iter().collect();
    let mut persons = BTreeSet::new();
    for person in store.persons_of(&references)? {
        persons.insert(person.ok_or_else(|| {
            StoreError::Corrupt("qualification names a person reference with no person".into())
        })?);
    }
    Ok(match persons.len() {
        1 => persons
            .pop_first()
            .map_or(Resolution::Unknown, Resolution::Person),
        _ => Resolution::Ambiguous,
    })
}

fn held_on(entry: &QualificationEntry, on: NaiveDate) -> bool {
    entry.start <= on && entry.end.is_none_or(|end| on <= end)
}
