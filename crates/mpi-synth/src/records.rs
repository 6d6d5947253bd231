//! Synthetic record events: check-ups, treatments and prescriptions at facilities of several
//! regional networks, each on a day when the person held one of their insured IDs, and the
//! consents each person gave. From these follow the ground truth of FindLocations: what every
//! clinician outside those networks must see for every person.
//!
//! Everything is derived from the population and a seed, so the same inputs give the same
//! events. Facility codes are invented with valid check digits.

use chrono::{Days, NaiveDate};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::{Population, with_check};

/// A regional network and its facilities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    /// `PP-NNNN`.
    pub id: String,
    /// 10-digit facility codes with valid check digits.
    pub facilities: Vec<String>,
}

/// What a person consented to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsentClass {
    /// Participation in every network that holds their records, and disclosure of all of them
    /// to any facility.
    Full,
    /// Participation only: the networks may index the records, nobody outside sees them.
    ParticipationOnly,
    /// Nothing: registrations are refused.
    None,
}

/// One record held at a facility.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordEvent {
    /// Index of the person in the population.
    pub person: usize,
    /// Index of the holding valid on the service date.
    pub holding: usize,
    /// Index of the network.
    pub network: usize,
    /// The facility code.
    pub facility: String,
    /// 1 check-up, 2 treatment, 3 prescription (the API's numbers).
    pub kind: u8,
    /// The service date.
    pub service_date: NaiveDate,
    /// The network's reference, unique per event.
    pub reference: String,
}

/// The record events of a population and its consents.
#[derive(Debug, Clone)]
pub struct RecordPlan {
    /// The networks.
    pub networks: Vec<Network>,
    /// Every event, grouped by person.
    pub events: Vec<RecordEvent>,
    /// Per person, what they consented to. Persons who hold no unambiguous insured ID on the
    /// horizon cannot be named by their card that day and are always `None`.
    pub consent: Vec<ConsentClass>,
}

impl RecordPlan {
    /// The networks in which a person has records.
    pub fn networks_of(&self, person: usize) -> Vec<usize> {
        let mut networks: Vec<usize> = self
            .events
            .iter()
            .filter(|e| e.person == person)
            .map(|e| e.network)
            .collect();
        networks.sort_unstable();
        networks.dedup();
        networks
    }

    /// For every person, the networks in which they have records (one pass over the events).
    pub fn networks_by_person(&self) -> Vec<Vec<usize>> {
        let mut by_person = vec![Vec::new(); self.consent.len()];
        for event in &self.events {
            let networks: &mut Vec<usize> = &mut by_person[event.person];
            if !networks.contains(&event.network) {
                networks.push(event.network);
            }
        }
        for networks in &mut by_person {
            networks.sort_unstable();
        }
        by_person
    }
}

/// Makes `networks` networks (at most 47) of five facilities each, and about
/// `events_per_person` events per person (between none and twice that), with consents drawn
/// 70 % full, 15 % participation only, 15 % none.
pub fn plan_records(
    population: &Population,
    networks: usize,
    events_per_person: usize,
    seed: u64,
) -> RecordPlan {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_4ec0);
    let networks: Vec<Network> = (0..networks.clamp(1, 47))
        .map(|index| {
            let prefecture = index + 1;
            let facilities = (0..5)
                .map(|serial| {
                    let table = if serial % 3 == 2 { 4 } else { 1 };
                    with_check(&format!("{prefecture:02}{table}01{:04}", 1000 + serial))
                })
                .collect();
            Network {
                id: format!("{prefecture:02}-0001"),
                facilities,
            }
        })
        .collect();
    let mut events = Vec::new();
    let mut consent = Vec::with_capacity(population.persons.len());
    for (person_index, person) in population.persons.iter().enumerate() {
        let named_today = person.card_on(population.until).is_some();
        let draw = rng.random_range(0..100);
        consent.push(match draw {
            _ if !named_today => ConsentClass::None,
            0..70 => ConsentClass::Full,
            70..85 => ConsentClass::ParticipationOnly,
            _ => ConsentClass::None,
        });
        let count = rng.random_range(0..=2 * events_per_person);
        // A person with no insured number has no number to register a record by.
        if person.holdings.is_empty() {
            continue;
        }
        for serial in 0..count {
            let holding_index = rng.random_range(0..person.holdings.len());
            let holding = &person.holdings[holding_index];
            let last = holding
                .end
                .unwrap_or(population.until)
                .min(population.until);
            let span = (last - holding.start).num_days().max(0) as u64;
            let day = holding
                .start
                .checked_add_days(Days::new(rng.random_range(0..=span)))
                .unwrap_or(holding.start);
            // A day on which the number is truly ambiguous cannot be registered by it.
            if holding.ambiguous_on(day) {
                continue;
            }
            let network = rng.random_range(0..networks.len());
            let facilities = &networks[network].facilities;
            let facility = facilities[rng.random_range(0..facilities.len())].clone();
            events.push(RecordEvent {
                person: person_index,
                holding: holding_index,
                network,
                reference: format!("doc/{}/{serial}", person.reference),
                facility,
                kind: rng.random_range(1..=3),
                service_date: day,
            });
        }
    }
    RecordPlan {
        networks,
        events,
        consent,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::{Config, generate};
    use mpi_core::ids::{FacilityCode, NetworkId};

    #[test]
    fn a_person_without_holdings_gets_no_events() {
        let mut population = generate(&Config {
            persons: 50,
            seed: 5,
            until: NaiveDate::from_ymd_opt(2025, 6, 1).unwrap(),
        });
        population.persons[7].holdings.clear();
        let plan = plan_records(&population, 3, 10, 1);
        assert_eq!(plan.consent[7], ConsentClass::None);
        assert!(plan.events.iter().all(|e| e.person != 7));
        assert!(!plan.events.is_empty());
    }

    #[test]
    fn events_fall_in_their_holdings_with_valid_codes_and_repeat_per_seed() {
        let population = generate(&Config {
            persons: 300,
            seed: 3,
            until: NaiveDate::from_ymd_opt(2025, 6, 1).unwrap(),
        });
        let plan = plan_records(&population, 4, 3, 9);
        assert_eq!(plan.consent.len(), 300);
        assert!(plan.events.len() > 500, "{}", plan.events.len());
        for network in &plan.networks {
            NetworkId::parse(&network.id).unwrap();
            for facility in &network.facilities {
                FacilityCode::parse(facility).unwrap();
            }
        }
        for event in &plan.events {
            let holding = &population.persons[event.person].holdings[event.holding];
            assert!(holding.holds_on(event.service_date));
            assert!(event.service_date <= population.until);
        }
        for class in [
            ConsentClass::Full,
            ConsentClass::ParticipationOnly,
            ConsentClass::None,
        ] {
            assert!(plan.consent.contains(&class), "{class:?}");
        }
        let by_person = plan.networks_by_person();
        for person in [0, 1, 17, 299] {
            assert_eq!(by_person[person], plan.networks_of(person));
        }
        let again = plan_records(&population, 4, 3, 9);
        assert_eq!(again.events, plan.events);
        assert_eq!(again.consent, plan.consent);
    }
}
