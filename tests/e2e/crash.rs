//! Crash safety: the server binary as a child process, under concurrent RegisterLocations,
//! RecordConsent/RevokeConsent and FindLocations, killed with SIGKILL at random moments and
//! restarted on the same data directory. After every restart:
//! - every acknowledged registration of the cycle is found (those of all cycles every 50 cycles
//!   and at the end), and every unanswered batch is there wholly or not at all (the accepted
//!   items of a batch are stored atomically);
//! - each of those registrations still holds its ID: the same reference registered for another
//!   person is refused (the location index's claims survive through the claim log);
//! - every acknowledged consent is listed, and every acknowledged revocation is in force;
//! - the audit chain verifies and holds the event of every acknowledged call (and at most those
//!   of the calls that got no answer besides);
//! - the server answers.
//!
//! `KOUIKI_CRASH_CYCLES` sets the number of kills (default 20, the CI run);
//! `KOUIKI_CRASH_SEED` replays a run (the seed is printed). `scripts/crash-test.sh` runs 200.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mpi_proto::v1 as pb;
use mpi_server::pki::PkiPaths;
use numbers::*;
use rand::{Rng, SeedableRng};
use tonic::transport::Channel;

use crate::scene::{by_card, find_request, location};
use crate::support::*;

/// A facility of network-a's (13-0001).
const FACILITY: &str = "1310123458";
/// Persons whose disclosure grant stays; their locations are checked by FindLocations.
const STABLE: usize = 30;
/// Persons whose disclosure grant is recorded and revoked over and over.
const FLIPPING: usize = 10;
/// The service date of the locations registered in `cycle`, so that a check can ask for one
/// cycle's locations alone.
fn service_day(cycle: usize) -> String {
    let first = chrono::NaiveDate::from_ymd_opt(2025, 1, 1).unwrap();
    iso(first + chrono::Days::new((cycle % 600) as u64))
}

/// Items per RegisterLocations call.
const BATCH: usize = 8;
/// Every call of the workload gives up after this long (a killed server answers nothing).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

struct Server {
    child: Child,
    address: String,
}

fn spawn(data: &Path) -> Server {
    let (child, stdout, stderr, address) = spawn_serve(data, &[], "warn,mpi_server=info");
    // Keep draining the output so the child never blocks on a full pipe.
    std::thread::spawn(move || while stdout.recv().is_ok() || stderr.recv().is_ok() {});
    Server { child, address }
}

fn kill(mut server: Server) {
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

impl Drop for Server {
    /// A failing test must not leave its server running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn channel(server: &Server, pki: &PkiPaths, alias: &str) -> Channel {
    dev_channel(&server.address, pki, alias).await
}

/// The insurance card of the test's person `index`.
fn card(index: usize) -> pb::InsuredId {
    insured(KYOKAI, "77", &format!("{}", 5000 + index), "01")
}

fn patient(index: usize) -> pb::PatientReference {
    by_card(card(index), "1970-01-01", pb::Sex::Female)
}

/// What the clients were told, across all cycles.
#[derive(Clone, Default)]
struct Ledger {
    /// (Cycle, stable person) → references acknowledged as stored.
    stored: BTreeMap<(usize, usize), BTreeSet<String>>,
    /// Batches whose call got no answer, by cycle: (person, reference) of every item.
    unanswered: Vec<(usize, Vec<(usize, String)>)>,
    /// Flipping person → consents acknowledged as recorded.
    recorded: BTreeMap<usize, BTreeSet<String>>,
    /// Consents acknowledged as revoked.
    revoked: BTreeSet<String>,
    /// Acknowledged calls of this cycle's workload, each of which appends one audit event.
    audited: u64,
    /// Calls of this cycle's workload that got no answer: each may or may not have its event.
    unanswered_calls: u64,
    /// Events in the chain after the last check (its own verification included).
    events: u64,
}

async fn timed<T>(
    call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Option<T> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(Ok(response)) => Some(response.into_inner()),
        _ => None,
    }
}

async fn register_until_killed(
    channel: Channel,
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<AtomicBool>,
    (cycle, registrar): (usize, usize),
    seed: u64,
) {
    let mut client = pb::record_locator_client::RecordLocatorClient::new(channel);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut batch = 0;
    while !stop.load(Ordering::Acquire) {
        let items: Vec<(usize, String)> = (0..BATCH)
            .map(|item| {
                let person = rng.random_range(0..STABLE);
                (
                    person,
                    format!("crash-c{cycle}-r{registrar}-b{batch}-i{item}"),
                )
            })
            .collect();
        batch += 1;
        let request = pb::RegisterLocationsRequest {
            items: items
                .iter()
                .map(|(person, reference)| {
                    location(
                        &patient(*person),
                        FACILITY,
                        pb::RecordKind::Prescription,
                        &service_day(cycle),
                        &service_day(cycle),
                        reference,
                    )
                })
                .collect(),
        };
        let answer = timed(client.register_locations(request)).await;
        let mut ledger = ledger.lock().unwrap();
        match answer {
            Some(answer) => {
                ledger.audited += 1;
                for (result, (person, reference)) in answer.results.iter().zip(&items) {
                    assert_eq!(
                        result.outcome(),
                        pb::RegistrationOutcome::Stored,
                        "{result:?}"
                    );
                    ledger
                        .stored
                        .entry((cycle, *person))
                        .or_default()
                        .insert(reference.clone());
                }
            }
            None => {
                ledger.unanswered.push((cycle, items));
                ledger.unanswered_calls += 1;
                return;
            }
        }
    }
}

async fn flip_until_killed(
    channel: Channel,
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<AtomicBool>,
    seed: u64,
) {
    let mut client = pb::consent_client::ConsentClient::new(channel);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    while !stop.load(Ordering::Acquire) {
        let person = STABLE + rng.random_range(0..FLIPPING);
        let Some(record) = timed(client.record_consent(disclosure(person, "crash-flip"))).await
        else {
            ledger.lock().unwrap().unanswered_calls += 1;
            return;
        };
        {
            let mut ledger = ledger.lock().unwrap();
            ledger.audited += 1;
            ledger
                .recorded
                .entry(person)
                .or_default()
                .insert(record.consent_id.clone());
        }
        let revoked = timed(client.revoke_consent(pb::RevokeConsentRequest {
            consent_id: record.consent_id.clone(),
            reason: "the patient withdrew".into(),
            purge: false,
        }))
        .await;
        let Some(revoked) = revoked else {
            ledger.lock().unwrap().unanswered_calls += 1;
            return;
        };
        assert_eq!(revoked.status(), pb::ConsentStatus::Revoked);
        let mut ledger = ledger.lock().unwrap();
        ledger.audited += 1;
        ledger.revoked.insert(record.consent_id);
    }
}

async fn find_until_killed(
    channel: Channel,
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<AtomicBool>,
    finds: Arc<AtomicU64>,
    seed: u64,
) {
    let mut client = pb::record_locator_client::RecordLocatorClient::new(channel);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    while !stop.load(Ordering::Acquire) {
        let person = rng.random_range(0..STABLE + FLIPPING);
        if timed(client.find_locations(find_request(&patient(person))))
            .await
            .is_none()
        {
            ledger.lock().unwrap().unanswered_calls += 1;
            return;
        }
        ledger.lock().unwrap().audited += 1;
        finds.fetch_add(1, Ordering::Relaxed);
    }
}

fn disclosure(person: usize, evidence: &str) -> pb::RecordConsentRequest {
    pb::RecordConsentRequest {
        patient: Some(patient(person)),
        kind: pb::ConsentKind::Disclosure.into(),
        // Empty source networks: the recording network's own pointers.
        scope: Some(pb::DisclosureScope {
            recipients: Some(pb::Recipients {
                recipients: Some(pb::recipients::Recipients::AnyFacility(true)),
            }),
            ..Default::default()
        }),
        evidence_reference: evidence.into(),
        ..Default::default()
    }
}

/// Verifies the whole chain; returns the events it holds, counting this verification's own.
async fn verify_chain(server: &Server, pki: &PkiPaths) -> u64 {
    let mut audit = pb::audit_client::AuditClient::new(channel(server, pki, "operator").await);
    let report = audit
        .verify_audit_chain(pb::VerifyAuditChainRequest {
            from_sequence: 0,
            to_sequence: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(report.intact, "{report:?}");
    report.events_verified + 1
}

/// Imports the persons and gives each participation in network-a; stable persons also a
/// lasting disclosure grant.
async fn set_up(server: &Server, pki: &PkiPaths) {
    let mut history =
        QualificationHistoryClient::new(channel(server, pki, "history-provider").await);
    let records = (0..STABLE + FLIPPING)
        .map(|index| {
            record(
                &format!("synth-crash-{index:04}"),
                card(index),
                "2015-04-01",
                "",
                "1970-01-01",
                pb::Sex::Female,
            )
        })
        .collect();
    let summary = import(&mut history, records).await;
    assert_eq!(summary.accepted as usize, STABLE + FLIPPING);
    let mut consents =
        pb::consent_client::ConsentClient::new(channel(server, pki, "network-a").await);
    for person in 0..STABLE + FLIPPING {
        consents
            .record_consent(pb::RecordConsentRequest {
                patient: Some(patient(person)),
                kind: pb::ConsentKind::Participation.into(),
                evidence_reference: "crash-participation".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        if person < STABLE {
            consents
                .record_consent(disclosure(person, "crash-disclosure"))
                .await
                .unwrap();
        }
    }
}

/// Checks the restarted server against the ledger: the registrations of `cycle` only, or of
/// every cycle when it is `None`. Returns (registrations, revocations) checked and the events
/// in the chain afterwards.
async fn check(
    server: &Server,
    pki: &PkiPaths,
    ledger: &Ledger,
    cycle: Option<usize>,
) -> (usize, usize, u64) {
    // First the chain: it verifies, and it holds the event of every acknowledged call since the
    // last check (and at most those of the calls that got no answer besides).
    let events = verify_chain(server, pki).await;
    let least = ledger.events + ledger.audited + 1;
    assert!(
        (least..=least + ledger.unanswered_calls).contains(&events),
        "{events} events; {} before, {} acknowledged audited calls, {} unanswered",
        ledger.events,
        ledger.audited,
        ledger.unanswered_calls
    );
    let mut locator = pb::record_locator_client::RecordLocatorClient::new(
        channel(server, pki, "clinician-b").await,
    );
    let mut present: BTreeSet<(usize, String)> = BTreeSet::new();
    for person in 0..STABLE {
        let mut token = String::new();
        loop {
            let day = cycle.map(service_day).unwrap_or_default();
            let page = locator
                .find_locations(pb::FindLocationsRequest {
                    page_token: token,
                    page_size: 1000,
                    service_from: day.clone(),
                    service_to: day,
                    ..find_request(&patient(person))
                })
                .await
                .unwrap()
                .into_inner();
            present.extend(page.locations.into_iter().map(|l| (person, l.reference)));
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
    }
    let mut registrations = 0;
    let wanted = |of: usize| cycle.is_none_or(|cycle| cycle == of);
    for ((_, person), references) in ledger.stored.iter().filter(|((of, _), _)| wanted(*of)) {
        for reference in references {
            assert!(
                present.contains(&(*person, reference.clone())),
                "acknowledged registration {reference} of person {person} was lost"
            );
            registrations += 1;
        }
    }
    for (_, batch) in ledger.unanswered.iter().filter(|(of, _)| wanted(*of)) {
        let landed = batch.iter().filter(|item| present.contains(*item)).count();
        assert!(
            landed == 0 || landed == batch.len(),
            "an unanswered batch is half visible: {landed} of {} items",
            batch.len()
        );
    }
    // Each acknowledged registration's claim on its ID survived as well (a crash may take the
    // location index's latest commits, which are not all durable; the claim log written with
    // the locations gives them back on open): the same reference for another person is refused.
    let mut registrar = pb::record_locator_client::RecordLocatorClient::new(
        channel(server, pki, "network-a").await,
    );
    let claimed: Vec<pb::LocationRegistration> = ledger
        .stored
        .iter()
        .filter(|((of, _), _)| wanted(*of))
        .flat_map(|((of, person), references)| {
            references.iter().map(move |reference| {
                location(
                    &patient((person + 1) % STABLE),
                    FACILITY,
                    pb::RecordKind::Prescription,
                    &service_day(*of),
                    &service_day(*of),
                    reference,
                )
            })
        })
        .collect();
    for chunk in claimed.chunks(1000) {
        let answer = registrar
            .register_locations(pb::RegisterLocationsRequest {
                items: chunk.to_vec(),
            })
            .await
            .unwrap()
            .into_inner();
        for (result, item) in answer.results.iter().zip(chunk) {
            assert!(
                result.outcome() == pb::RegistrationOutcome::InvalidField
                    && result.field.ends_with("reference")
                    && result
                        .reason
                        .contains("already registered for another patient"),
                "the claim on acknowledged registration {} was lost: {result:?}",
                item.reference
            );
        }
    }

    let mut consents =
        pb::consent_client::ConsentClient::new(channel(server, pki, "operator").await);
    let mut states: BTreeMap<String, pb::ConsentStatus> = BTreeMap::new();
    for person in STABLE..STABLE + FLIPPING {
        let mut token = String::new();
        loop {
            let page = consents
                .list_consents(pb::ListConsentsRequest {
                    patient: Some(patient(person)),
                    purpose: pb::Purpose::PatientRequest.into(),
                    page_size: 1000,
                    page_token: token,
                })
                .await
                .unwrap()
                .into_inner();
            for consent in page.consents {
                states.insert(consent.consent_id.clone(), consent.status());
            }
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
    }
    for id in ledger.recorded.values().flatten() {
        assert!(
            states.contains_key(id),
            "acknowledged consent {id} was lost"
        );
    }
    for id in &ledger.revoked {
        assert_eq!(
            states.get(id),
            Some(&pb::ConsentStatus::Revoked),
            "acknowledged revocation of {id} was lost"
        );
    }

    // Every call of this check was audited too; the next check counts from here.
    (
        registrations,
        ledger.revoked.len(),
        verify_chain(server, pki).await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill_at_random_moments() {
    let cycles: usize = std::env::var("KOUIKI_CRASH_CYCLES")
        .ok()
        .map_or(20, |value| value.parse().expect("KOUIKI_CRASH_CYCLES"));
    let seed: u64 = std::env::var("KOUIKI_CRASH_SEED").ok().map_or_else(
        || rand::rng().random(),
        |value| value.parse().expect("KOUIKI_CRASH_SEED"),
    );
    eprintln!("crash test: {cycles} cycles, KOUIKI_CRASH_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    mpi_server::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let pki = PkiPaths::new(data.join("pki"));

    let mut server = tokio::task::block_in_place(|| spawn(&data));
    set_up(&server, &pki).await;
    let ledger = Arc::new(Mutex::new(Ledger {
        events: verify_chain(&server, &pki).await,
        ..Ledger::default()
    }));
    let finds = Arc::new(AtomicU64::new(0));
    let (mut registrations, mut revocations) = (0, 0);
    for cycle in 0..cycles {
        let stop = Arc::new(AtomicBool::new(false));
        let workers = vec![
            tokio::spawn(register_until_killed(
                channel(&server, &pki, "network-a").await,
                ledger.clone(),
                stop.clone(),
                (cycle, 0),
                rng.random(),
            )),
            tokio::spawn(register_until_killed(
                channel(&server, &pki, "network-a").await,
                ledger.clone(),
                stop.clone(),
                (cycle, 1),
                rng.random(),
            )),
            tokio::spawn(flip_until_killed(
                channel(&server, &pki, "network-a").await,
                ledger.clone(),
                stop.clone(),
                rng.random(),
            )),
            tokio::spawn(find_until_killed(
                channel(&server, &pki, "clinician-b").await,
                ledger.clone(),
                stop.clone(),
                finds.clone(),
                rng.random(),
            )),
        ];
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..800))).await;
        tokio::task::block_in_place(|| kill(server));
        stop.store(true, Ordering::Release);
        for worker in workers {
            worker.await.unwrap();
        }
        server = tokio::task::block_in_place(|| spawn(&data));
        let snapshot = ledger.lock().unwrap().clone();
        // This cycle's registrations after every restart; all of them now and then, and last.
        let all = (cycle + 1) % 50 == 0 || cycle + 1 == cycles;
        let events;
        (registrations, revocations, events) =
            check(&server, &pki, &snapshot, (!all).then_some(cycle)).await;
        let mut ledger = ledger.lock().unwrap();
        ledger.events = events;
        ledger.audited = 0;
        ledger.unanswered_calls = 0;
        if (cycle + 1) % 20 == 0 {
            eprintln!(
                "crash test: {} of {cycles} cycles, {registrations} registrations checked last",
                cycle + 1
            );
        }
    }
    let ledger = ledger.lock().unwrap().clone();
    eprintln!(
        "crash test: {cycles} SIGKILLs; {registrations} acknowledged registrations (each \
         cycle's checked after its restart, all of them every 50 cycles and at the end), {} \
         acknowledged consents and {revocations} acknowledged revocations checked after every \
         restart, {} unanswered batches all-or-nothing, {} finds; losses: 0",
        ledger.recorded.values().map(BTreeSet::len).sum::<usize>(),
        ledger.unanswered.len(),
        finds.load(Ordering::Relaxed)
    );
    assert!(
        registrations > 0 && revocations > 0,
        "the workload did work"
    );
    tokio::task::block_in_place(|| kill(server));
}
