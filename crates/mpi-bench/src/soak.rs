//! `soak`: the mixed load (90 % FindLocations, 9 % RegisterLocations of 10 pointers, 1 %
//! consent changes: a disclosure grant recorded and revoked) first as fast as 64 workers go, to
//! find the maximum, then at a fixed fraction of it (open loop: requests are sent on schedule,
//! whatever the answers take) for a bounded time. Every window it reports operations, refused
//! sends and failed calls, latency percentiles by kind (from the scheduled send), the mean
//! answer size and the process's resident memory.
//!
//! The registrations re-send pointers the first network already registered, each with a later
//! last service date (a network reporting further visits under the same reference): the store
//! rewrites them in place, so every call takes the full write path while the population's
//! pointers stay as many as at the start. New pointers at this rate would double a 100,000-person
//! store in ten minutes and make the answers the finds return ever longer; how the cost grows
//! with the data is what the scale curve measures, not the soak.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mpi_core::ids::NetworkId;
use mpi_core::principal::Principal;
use mpi_proto::v1 as pb;
use mpi_synth::Population;
use mpi_synth::records::{ConsentClass, RecordPlan};
use tonic::transport::Channel;

use crate::iso;
use crate::locations::{
    Running, any_facility_disclosure, disclosing_patients, outside_clinician, percentiles,
    registration, treatment, wire_patient,
};

/// Requests in flight at most during the open-loop phase; a send beyond it counts as an error
/// (the service did not keep up).
const IN_FLIGHT_CAP: usize = 2048;

/// What one operation needs: channels and the patients to name.
pub(crate) struct Mix {
    finder: Vec<Channel>,
    network: Channel,
    /// Persons who consented to disclosure, by today's card.
    disclosed: Vec<pb::PatientReference>,
    /// Pointers the first network registered for persons taking part in it, as registered.
    events: Vec<pb::LocationRegistration>,
    /// Their first service dates.
    dates: Vec<chrono::NaiveDate>,
    /// The last date a re-sent pointer may name.
    until: chrono::NaiveDate,
    /// Persons of the first network with a participation consent, by today's card.
    members: Vec<pb::PatientReference>,
    counter: AtomicU64,
}

impl Mix {
    pub(crate) async fn prepare(
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
        let events = ours.iter().map(|e| registration(population, e)).collect();
        let dates = ours.iter().map(|e| e.service_date).collect();
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
            dates,
            until: population.until,
            members,
            counter: AtomicU64::new(0),
        })
    }

    /// Runs the next operation of the mix; its kind, and the locations a find returned.
    async fn one(&self) -> (Op, Result<usize, tonic::Status>) {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let op = match n % 100 {
            0..90 => Op::Find,
            90..99 => Op::Register,
            _ => Op::Consent,
        };
        (op, self.run(op, n).await)
    }

    async fn run(&self, op: Op, n: u64) -> Result<usize, tonic::Status> {
        let pick = |len: usize| (n.wrapping_mul(2_654_435_761) % len.max(1) as u64) as usize;
        match op {
            Op::Find => {
                let channel = self.finder[n as usize % self.finder.len()].clone();
                let mut client = pb::record_locator_client::RecordLocatorClient::new(channel);
                let answer = client
                    .find_locations(treatment(
                        self.disclosed[pick(self.disclosed.len())].clone(),
                    ))
                    .await?;
                return Ok(answer.into_inner().locations.len());
            }
            Op::Register => {
                let mut client =
                    pb::record_locator_client::RecordLocatorClient::new(self.network.clone());
                let items: Vec<_> = (0..10)
                    .map(|i| {
                        let at = pick(self.events.len()).wrapping_add(i) % self.events.len();
                        let later = self.dates[at]
                            .checked_add_days(chrono::Days::new(1 + n % 90))
                            .map_or(self.until, |day| day.min(self.until));
                        pb::LocationRegistration {
                            last_service_date: iso(later.max(self.dates[at])),
                            ..self.events[at].clone()
                        }
                    })
                    .collect();
                let answer = client
                    .register_locations(pb::RegisterLocationsRequest { items })
                    .await?
                    .into_inner();
                if let Some(other) = answer
                    .results
                    .iter()
                    .find(|r| r.outcome() != pb::RegistrationOutcome::Stored)
                {
                    return Err(tonic::Status::internal(format!(
                        "a re-sent pointer was not stored: {:?}",
                        other.outcome()
                    )));
                }
            }
            Op::Consent => {
                let mut client = pb::consent_client::ConsentClient::new(self.network.clone());
                let patient = self.members[pick(self.members.len())].clone();
                let recorded = client
                    .record_consent(any_facility_disclosure(
                        patient,
                        "",
                        format!("soak-form-{n}"),
                    ))
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
        Ok(0)
    }
}

/// The kinds of operation in the mix.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Find,
    Register,
    Consent,
}

/// What one window saw, by kind.
#[derive(Default)]
struct Window {
    /// Latencies (µs from the scheduled send) of finds, registrations, consent changes.
    latencies: [Vec<u64>; 3],
    /// Calls answered with an error status.
    failed: u64,
    /// Sends refused because `IN_FLIGHT_CAP` calls were waiting.
    refused: u64,
    /// Locations returned by the finds.
    located: u64,
    /// The first error status of the window.
    first_failure: Option<String>,
}

impl Window {
    fn record(&mut self, op: Op, micros: u64, outcome: &Result<usize, tonic::Status>) {
        self.latencies[op as usize].push(micros);
        match outcome {
            Ok(located) => self.located += *located as u64,
            Err(status) => {
                self.failed += 1;
                self.first_failure
                    .get_or_insert_with(|| format!("{:?}: {}", status.code(), status.message()));
            }
        }
    }
}

pub(crate) fn resident_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| status_mib(&status, "VmRSS:"))
        .unwrap_or(0.0)
}

/// The field `name` (such as `VmRSS:`, in kB) of a `/proc/PID/status` text, in MiB.
pub(crate) fn status_mib(status: &str, name: &str) -> Option<f64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(name))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map(|kib| kib / 1024.0)
}

/// The mixed load's maximum: 64 workers, each sending its next operation when the last is
/// answered, for `duration`. Operations per second.
pub(crate) async fn maximum(mix: &Arc<Mix>, duration: Duration) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..64 {
        let mix = mix.clone();
        workers.push(tokio::spawn(async move {
            let mut done = 0u64;
            while started.elapsed() < duration {
                mix.one().await.1?;
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
    println!(
        "| t (s) | sent | per s | refused | failed | find p50 ms | find p99 ms | find p99.9 ms | register p99 ms | consent p99 ms | locations per find | resident MiB |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let seen = Arc::new(std::sync::Mutex::new(Window::default()));
    let slots = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT_CAP));
    let started = Instant::now();
    let tick = Duration::from_millis(10);
    let per_tick = rate * tick.as_secs_f64();
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let (mut owed, mut window_start, mut sent_in_window) = (0.0f64, Instant::now(), 0u64);
    let mut total_errors = 0;
    let mut report = |sent: u64, seconds: f64| {
        let taken = std::mem::take(&mut *seen.lock().unwrap_or_else(|e| e.into_inner()));
        let [finds, registers, consents] = taken.latencies;
        let found = finds.len().max(1) as u64;
        let ms = |micros: u64| micros as f64 / 1000.0;
        let (f, r, c) = (
            percentiles(finds),
            percentiles(registers),
            percentiles(consents),
        );
        total_errors += taken.refused + taken.failed;
        println!(
            "| {:.0} | {sent} | {:.0} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} | {:.0} |",
            started.elapsed().as_secs_f64(),
            sent as f64 / seconds,
            taken.refused,
            taken.failed,
            ms(f.p50),
            ms(f.p99),
            ms(f.p999),
            ms(r.p99),
            ms(c.p99),
            taken.located as f64 / found as f64,
            resident_mib()
        );
        if let Some(failure) = taken.first_failure {
            println!("first failure of the window: {failure}");
        }
    };
    while started.elapsed() < duration {
        ticker.tick().await;
        owed += per_tick;
        while owed >= 1.0 {
            owed -= 1.0;
            sent_in_window += 1;
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                seen.lock().unwrap_or_else(|e| e.into_inner()).refused += 1;
                continue;
            };
            let (mix, seen) = (mix.clone(), seen.clone());
            let scheduled = Instant::now();
            tokio::spawn(async move {
                let (op, outcome) = mix.one().await;
                let micros = scheduled.elapsed().as_micros() as u64;
                seen.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .record(op, micros, &outcome);
                drop(permit);
            });
        }
        if window_start.elapsed() >= window {
            report(sent_in_window, window_start.elapsed().as_secs_f64());
            (window_start, sent_in_window) = (Instant::now(), 0);
        }
    }
    // Let what is in flight finish; its answers and errors make the last window.
    let _ = slots.acquire_many(IN_FLIGHT_CAP as u32).await;
    if sent_in_window > 0 {
        report(sent_in_window, window_start.elapsed().as_secs_f64());
    }
    println!(
        "soak: {total_errors} errors (refused or failed) in {} s",
        started.elapsed().as_secs()
    );
    anyhow::ensure!(total_errors == 0, "{total_errors} errors during the soak");
    Ok(())
}
