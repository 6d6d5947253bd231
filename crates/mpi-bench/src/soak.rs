//! `soak`: the mixed load (90 % FindLocations, 9 % RegisterLocations of 10 new pointers, 1 %
//! consent changes: a disclosure grant recorded and revoked) first as fast as 64 workers go, to
//! find the maximum, then at a fixed fraction of it (open loop: requests are sent on schedule,
//! whatever the answers take) for a bounded time. Every window it reports operations, errors,
//! latency percentiles (from the scheduled send) and the process's resident memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mpi_core::ids::NetworkId;
use mpi_core::principal::Principal;
use mpi_proto::v1 as pb;
use mpi_synth::Population;
use mpi_synth::records::{ConsentClass, RecordPlan};
use tokio::sync::Mutex;
use tonic::transport::Channel;

use crate::iso;
use crate::locations::{
    Running, disclosing_patients, outside_clinician, percentiles, treatment, wire_patient,
};

/// Requests in flight at most during the open-loop phase; a send beyond it counts as an error
/// (the service did not keep up).
const IN_FLIGHT_CAP: usize = 2048;

/// What one operation needs: channels and the patients to name.
struct Mix {
    finder: Vec<Channel>,
    network: Channel,
    /// Persons who consented to disclosure, by today's card.
    disclosed: Vec<pb::PatientReference>,
    /// Events of the first network whose person takes part in it: (patient on the event's
    /// date, facility, kind, date).
    events: Vec<(pb::PatientReference, String, i32, String)>,
    /// Persons of the first network with a participation consent, by today's card.
    members: Vec<pb::PatientReference>,
    counter: AtomicU64,
}

impl Mix {
    async fn prepare(
        server: &Running,
        population: &Population,
        plan: &RecordPlan,
    ) -> anyhow::Result<Self> {
        let today = |index: usize| {
            let person = &population.persons[index];
            person
                .card_on(population.until)
                .map(|holding| wire_patient(person, holding))
        };
        let takes_part = |index: usize| {
            matches!(
                plan.consent[index],
                ConsentClass::Full | ConsentClass::ParticipationOnly
            )
        };
        let disclosed = disclosing_patients(population, plan);
        let ours: Vec<_> = plan
            .events
            .iter()
            .filter(|e| e.network == 0 && takes_part(e.person))
            .collect();
        let events = ours
            .iter()
            .map(|e| {
                (
                    wire_patient(&population.persons[e.person], e.holding),
                    e.facility.clone(),
                    i32::from(e.kind),
                    iso(e.service_date),
                )
            })
            .collect();
        let mut members: Vec<usize> = ours.iter().map(|e| e.person).collect();
        members.dedup();
        let members = members.into_iter().filter_map(today).collect();
        let doctor = outside_clinician()?;
        let mut finder = Vec::new();
        for _ in 0..4 {
            finder.push(server.channel(&doctor).await?);
        }
        let network = Principal::Network(NetworkId::parse(&plan.networks[0].id)?);
        Ok(Self {
            finder,
            network: server.channel(&network).await?,
            disclosed,
            events,
            members,
            counter: AtomicU64::new(0),
        })
    }

    /// Runs the next operation of the mix; Ok when every call of it was answered OK.
    async fn one(&self) -> Result<(), tonic::Status> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let pick = |len: usize| (n.wrapping_mul(2_654_435_761) % len.max(1) as u64) as usize;
        match n % 100 {
            0..90 => {
                let channel = self.finder[n as usize % self.finder.len()].clone();
                let mut client = pb::record_locator_client::RecordLocatorClient::new(channel);
                client
                    .find_locations(treatment(
                        self.disclosed[pick(self.disclosed.len())].clone(),
                    ))
                    .await?;
            }
            90..99 => {
                let mut client =
                    pb::record_locator_client::RecordLocatorClient::new(self.network.clone());
                let items = (0..10)
                    .map(|i| {
                        let (patient, facility, kind, date) = &self.events
                            [pick(self.events.len()).wrapping_add(i) % self.events.len()];
                        pb::LocationRegistration {
                            patient: Some(patient.clone()),
                            facility_code: facility.clone(),
                            kind: *kind,
                            first_service_date: date.clone(),
                            last_service_date: String::new(),
                            reference: format!("soak-{n}-{i}"),
                            network_id: String::new(),
                        }
                    })
                    .collect();
                client
                    .register_locations(pb::RegisterLocationsRequest { items })
                    .await?;
            }
            _ => {
                let mut client = pb::consent_client::ConsentClient::new(self.network.clone());
                let patient = self.members[pick(self.members.len())].clone();
                let recorded = client
                    .record_consent(pb::RecordConsentRequest {
                        patient: Some(patient),
                        kind: pb::ConsentKind::Disclosure.into(),
                        scope: Some(pb::DisclosureScope {
                            recipients: Some(pb::Recipients {
                                recipients: Some(pb::recipients::Recipients::AnyFacility(true)),
                            }),
                            ..Default::default()
                        }),
                        evidence_reference: format!("soak-form-{n}"),
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                client
                    .revoke_consent(pb::RevokeConsentRequest {
                        consent_id: recorded.consent_id,
                        reason: "soak: withdrawn".into(),
                        purge: false,
                    })
                    .await?;
            }
        }
        Ok(())
    }
}

fn resident_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<f64>()
                        .ok()
                })
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// The mixed load's maximum: 64 workers, each sending its next operation when the last is
/// answered, for `duration`. Operations per second.
async fn maximum(mix: &Arc<Mix>, duration: Duration) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..64 {
        let mix = mix.clone();
        workers.push(tokio::spawn(async move {
            let mut done = 0u64;
            while started.elapsed() < duration {
                mix.one().await?;
                done += 1;
            }
            Ok::<_, tonic::Status>(done)
        }));
    }
    let mut done = 0;
    for worker in workers {
        done += worker.await??;
    }
    Ok(done as f64 / started.elapsed().as_secs_f64())
}

/// Measures the maximum, then runs the mix at `fraction` of it for `duration`, printing one
/// Markdown row per `window`.
pub async fn run(
    server: &Running,
    population: &Population,
    plan: &RecordPlan,
    duration: Duration,
    window: Duration,
    fraction: f64,
) -> anyhow::Result<()> {
    let mix = Arc::new(Mix::prepare(server, population, plan).await?);
    anyhow::ensure!(
        !mix.disclosed.is_empty() && !mix.events.is_empty() && !mix.members.is_empty(),
        "the population is too small for the mix"
    );
    let max = maximum(&mix, Duration::from_secs(10)).await?;
    let rate = max * fraction;
    println!(
        "mixed load maximum: {max:.0} operations/s (64 workers, 10 s); soak at {:.0} % = {rate:.0}/s for {} s",
        fraction * 100.0,
        duration.as_secs()
    );
    println!("| t (s) | operations | per s | errors | p50 ms | p99 ms | p99.9 ms | resident MiB |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    let latencies = Arc::new(Mutex::new(Vec::<u64>::new()));
    let errors = Arc::new(AtomicU64::new(0));
    let slots = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT_CAP));
    let started = Instant::now();
    let tick = Duration::from_millis(10);
    let per_tick = rate * tick.as_secs_f64();
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let (mut owed, mut window_start, mut sent_in_window) = (0.0f64, Instant::now(), 0u64);
    let mut total_errors = 0;
    let report = |taken: Vec<u64>, failed: u64, sent: u64, seconds: f64| {
        let l = percentiles(taken);
        println!(
            "| {:.0} | {sent} | {:.0} | {failed} | {:.2} | {:.2} | {:.2} | {:.0} |",
            started.elapsed().as_secs_f64(),
            sent as f64 / seconds,
            l.p50 as f64 / 1000.0,
            l.p99 as f64 / 1000.0,
            l.p999 as f64 / 1000.0,
            resident_mib()
        );
    };
    while started.elapsed() < duration {
        ticker.tick().await;
        owed += per_tick;
        while owed >= 1.0 {
            owed -= 1.0;
            sent_in_window += 1;
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                errors.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let (mix, latencies, errors) = (mix.clone(), latencies.clone(), errors.clone());
            let scheduled = Instant::now();
            tokio::spawn(async move {
                let result = mix.one().await;
                let micros = scheduled.elapsed().as_micros() as u64;
                if result.is_err() {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                latencies.lock().await.push(micros);
                drop(permit);
            });
        }
        if window_start.elapsed() >= window {
            let taken = std::mem::take(&mut *latencies.lock().await);
            let failed = errors.swap(0, Ordering::Relaxed);
            total_errors += failed;
            report(
                taken,
                failed,
                sent_in_window,
                window_start.elapsed().as_secs_f64(),
            );
            (window_start, sent_in_window) = (Instant::now(), 0);
        }
    }
    // Let what is in flight finish; its answers and errors make the last window.
    let _ = slots.acquire_many(IN_FLIGHT_CAP as u32).await;
    let failed = errors.swap(0, Ordering::Relaxed);
    total_errors += failed;
    if sent_in_window > 0 {
        let taken = std::mem::take(&mut *latencies.lock().await);
        report(
            taken,
            failed,
            sent_in_window,
            window_start.elapsed().as_secs_f64(),
        );
    }
    println!(
        "soak: {total_errors} errors in {} s",
        started.elapsed().as_secs()
    );
    anyhow::ensure!(total_errors == 0, "{total_errors} errors during the soak");
    Ok(())
}
