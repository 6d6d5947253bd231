//! The cases where hash-based linkage fails (DOMAIN.md §1), taken from a synthetic population
//! and asked over the wire. For each, the NDB-style hashes are shown to change, and the MPI still
//! links the person through the history, or says "ambiguous" where the history cannot tell.

use chrono::NaiveDate;
use mpi_proto::v1 as pb;
use mpi_synth::{Config, Holding, Person};
use pb::SamePersonAnswer::*;

use crate::support::*;

/// NDB's ID1: insurer, card number, birth date, sex.
fn id1(person: &Person, holding: &Holding) -> String {
    let id = holding.insured_id().unwrap();
    format!(
        "{}|{}|{}",
        id.canonical(),
        person.birth_date,
        person.sex.code()
    )
}

/// NDB's ID2: the name as written, birth date, sex.
fn id2(person: &Person, holding: &Holding) -> String {
    format!(
        "{}|{}|{}",
        holding.recorded_name.kanji,
        person.birth_date,
        person.sex.code()
    )
}

/// Pairs of consecutive periods of one person, neither ambiguous at the days asked.
fn transitions(person: &Person) -> impl Iterator<Item = (&Holding, &Holding)> {
    person
        .holdings
        .windows(2)
        .map(|w| (&w[0], &w[1]))
        .filter(|(before, after)| {
            before.end.is_some_and(|end| !before.ambiguous_on(end))
                && !after.ambiguous_on(after.start)
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_links_what_hashes_cannot_and_never_guesses() {
    let until = NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
    let population = mpi_synth::generate(&Config {
        persons: 20_000,
        seed: 7,
        until,
    });
    let server = TestServer::start().await;
    let mut client = server.history("history-provider").await;
    let summary = import_population(&mut client, &population).await;
    assert_eq!(summary.rejected, 0);

    let mut cases = [0usize; 4];
    for person in &population.persons {
        for (before, after) in transitions(person) {
            let end = before.end.unwrap();
            let insurer_changed = before.insurer_number.trim() != after.insurer_number.trim();
            let married_here = person
                .married_on
                .is_some_and(|day| before.start < day && day <= after.start);
            // 1. Insurer change: ID1 changes.
            // 2. Name change at marriage: ID2 changes (when the written name changed).
            // 3. Both at once, the case no hash links.
            let kind = match (insurer_changed, married_here) {
                (true, true) if id2(person, before) != id2(person, after) => 2,
                (false, true) if id2(person, before) != id2(person, after) => 1,
                (true, false) => 0,
                _ => continue,
            };
            if cases[kind] >= 25 {
                continue;
            }
            assert_ne!(
                id1(person, before),
                id1(person, after),
                "{}",
                person.reference
            );
            let answer = same(
                &mut client,
                synth_at(person, before, end),
                synth_at(person, after, after.start),
            )
            .await
            .unwrap();
            assert_eq!(
                answer,
                Same,
                "{} across {} → {}",
                person.reference,
                iso(end),
                iso(after.start)
            );
            cases[kind] += 1;
        }
    }

    // 4. Same-sex twins on one household number: ambiguous while they share it, then each
    //    resolves alone once individual numbers (枝番) exist.
    for person in population.persons.iter().filter(|p| p.twin_of.is_some()) {
        let twin = population
            .persons
            .iter()
            .find(|p| Some(&p.reference) == person.twin_of.as_ref())
            .unwrap();
        let Some(shared) = person.holdings.iter().find(|h| !h.ambiguous.is_empty()) else {
            continue;
        };
        let Some(own) = person
            .holdings
            .iter()
            .find(|h| !h.branch.is_empty() && !h.ambiguous_on(h.start))
        else {
            continue;
        };
        let Some(twin_own) = twin.holdings.iter().find(|h| !h.branch.is_empty()) else {
            continue;
        };
        let day = NaiveDate::parse_from_str(&shared.ambiguous[0].0, "%Y-%m-%d").unwrap();
        assert_eq!(
            id1(person, shared),
            id1(twin, shared),
            "ID1 cannot tell same-sex twins apart"
        );
        let answer = same(
            &mut client,
            synth_at(person, shared, day),
            synth_at(person, own, own.start),
        )
        .await
        .unwrap();
        assert_eq!(answer, Ambiguous, "{}", person.reference);
        let answer = same(
            &mut client,
            synth_at(person, own, own.start),
            synth_at(twin, twin_own, twin_own.start),
        )
        .await
        .unwrap();
        assert_eq!(
            answer, Different,
            "{} and {}",
            person.reference, twin.reference
        );
        cases[3] += 1;
        if cases[3] >= 25 {
            break;
        }
    }
    eprintln!(
        "linkage: insurer changes {}, name changes {}, marriage with insurer change {}, twin pairs {}",
        cases[0], cases[1], cases[2], cases[3]
    );
    assert!(
        cases.iter().all(|count| *count > 0),
        "every case occurs in the population: {cases:?}"
    );
}
