//! The record-location benchmarks: RegisterLocations (batches of 1,000, durable) and
//! FindLocations (consent-filtered, audited) over mutual TLS against the real server, with the
//! audit log on and off in one run.
//!
//! The server's TLS comes from a CA this program generates, so that every network of the
//! synthetic record plan and a clinician of a network outside it get certificates. Consents are
//! loaded in process (one transaction per 10,000) before the server starts: they are set-up,
//! not what is measured.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use mpi_core::consent::{ConsentGrant, DisclosureScope, Recipients, SourceNetworks};
use mpi_core::ids::{FacilityCode, NetworkId};
use mpi_core::keys::Keyer;
use mpi_core::principal::Principal;
use mpi_core::qualification::{Demographics, InsuredPatient};
use mpi_core::records::{NewConsent, PatientRef};
use mpi_core::service::Mpi;
use mpi_proto::v1 as pb;
use mpi_server::client::{ClientIdentity, connect};
use mpi_server::config::TlsSource;
use mpi_server::pki::CertAuthority;
use mpi_store_redb::RedbStore;
use mpi_synth::records::{ConsentClass, RecordPlan};
use mpi_synth::{Person, Population};
use tonic::transport::Channel;

use crate::{Row, iso, wire_insured, wire_sex};

/// Where a benchmark client connects: an address and the CA that issues its certificates.
#[derive(Clone)]
pub struct Target {
    address: String,
    ca: Arc<CertAuthority>,
}

impl Target {
    /// A server at `address` whose clients `ca` certifies.
    pub fn new(address: String, ca: Arc<CertAuthority>) -> Self {
        Self { address, ca }
    }

    /// Another server at `address` whose clients the same CA certifies.
    pub fn elsewhere(&self, address: String) -> Self {
        Self::new(address, self.ca.clone())
    }

    /// A new connection as `principal`.
    pub async fn channel(&self, principal: &Principal) -> anyhow::Result<Channel> {
        let issued = self.ca.issue_client(principal)?;
        let identity = ClientIdentity {
            ca_pem: self.ca.cert_pem().into_bytes(),
            cert_pem: issued.cert_pem.into_bytes(),
            key_pem: issued.key_pem.into_bytes(),
        };
        Ok(connect(&self.address, &identity).await?)
    }
}

/// A server running for the benchmark.
pub struct Running {
    target: Target,
    serving: Serving,
}

/// Where the server of [`Running`] runs.
enum Serving {
    /// On a runtime of this process.
    InProcess(Served),
    /// In a child process (`mpi-bench serve`), stopped by closing its standard input.
    Child(std::process::Child),
}

/// A server started in this process by [`serve_files`].
pub struct Served {
    /// Where it listens.
    pub address: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), mpi_server::ServerError>>,
}

impl Served {
    /// Stops the server and waits until its store is closed.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.task.await??;
        Ok(())
    }
}

/// Writes the CA certificate and a server certificate and key it issues into `tls_dir`, as
/// [`serve_files`] and the echo server read them.
fn write_server_tls(tls_dir: &Path, ca: &CertAuthority) -> anyhow::Result<()> {
    let server_cert = ca.issue_server()?;
    for (name, contents) in [
        ("ca.pem", ca.cert_pem()),
        ("server.pem", server_cert.cert_pem),
        ("server.key", server_cert.key_pem),
    ] {
        std::fs::write(tls_dir.join(name), contents)?;
    }
    Ok(())
}

/// Starts the real server on 127.0.0.1:0 over `data_dir` with the TLS files in `tls_dir`.
pub async fn serve_files(
    data_dir: &Path,
    tls_dir: &Path,
    audited: bool,
    cache_mib: crate::Caches,
) -> anyhow::Result<Served> {
    let mut config = crate::local_config(data_dir, cache_mib)?;
    config.tls = TlsSource::Files {
        cert: tls_dir.join("server.pem"),
        key: tls_dir.join("server.key"),
        client_ca: tls_dir.join("ca.pem"),
    };
    config.limits.max_concurrent_streams = 1024;
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let address = listener.local_addr()?.to_string();
    let mut prepared = tokio::task::spawn_blocking(move || mpi_server::prepare(config)).await??;
    if !audited {
        prepared = prepared.unaudited_for_benchmark();
    }
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(mpi_server::serve(prepared, listener, None, async move {
        let _ = stopped.await;
    }));
    Ok(Served {
        address,
        stop,
        task,
    })
}

/// What `mpi-bench serve` prints on its first line of standard output, before the address.
const LISTENING: &str = "listening ";

/// How `mpi-bench serve` runs the server.
#[derive(Debug, Clone, Copy)]
pub struct ChildServer {
    /// Page cache of the store files, in MiB.
    pub cache_mib: crate::Caches,
    /// The core the whole process is pinned to.
    pub core: usize,
    /// How its runtime schedules tasks.
    pub flavour: crate::floor::Flavour,
    /// Whether disclosures are audited (false only to measure what the audit log costs).
    pub audited: bool,
}

/// `mpi-bench serve`: serves `data_dir` with the TLS files of `tls_dir` as `how` says; prints
/// [`LISTENING`] and the address, and stops when standard input closes.
pub fn serve_child(data_dir: &Path, tls_dir: &Path, how: ChildServer) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    crate::floor::pin(how.core);
    let runtime = crate::floor::Pinned::new(how.core, how.flavour)?;
    let (data_dir, tls_dir) = (data_dir.to_path_buf(), tls_dir.to_path_buf());
    let served = runtime
        .run(async move { serve_files(&data_dir, &tls_dir, how.audited, how.cache_mib).await })??;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{LISTENING}{}", served.address)?;
    stdout.flush()?;
    drop(stdout);
    // Anything read, or the end of input, stops the server.
    let _ = std::io::stdin().read(&mut [0u8; 1]);
    runtime.run(served.stop())?
}

impl Running {
    /// Starts the real server on 127.0.0.1:0 over `data_dir`, with TLS from `ca` and
    /// `cache_mib` of page cache for the store files.
    pub async fn start(
        data_dir: &Path,
        tls_dir: &Path,
        ca: Arc<CertAuthority>,
        audited: bool,
        cache_mib: crate::Caches,
    ) -> anyhow::Result<Self> {
        write_server_tls(tls_dir, &ca)?;
        let served = serve_files(data_dir, tls_dir, audited, cache_mib).await?;
        Ok(Self {
            target: Target::new(served.address.clone(), ca),
            serving: Serving::InProcess(served),
        })
    }

    /// The server in a child process (this program's `serve`, run as `how` says), so that its
    /// resident memory is its own.
    pub fn spawn(
        data_dir: &Path,
        tls_dir: &Path,
        ca: Arc<CertAuthority>,
        how: ChildServer,
    ) -> anyhow::Result<Self> {
        use std::io::BufRead;
        use std::process::{Command, Stdio};
        write_server_tls(tls_dir, &ca)?;
        let mut command = Command::new(std::env::current_exe()?);
        command
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--tls-dir")
            .arg(tls_dir)
            .arg("--cache-mib")
            .arg(how.cache_mib.page_mib.to_string())
            .arg("--read-cache-mib")
            .arg(how.cache_mib.read_mib.to_string())
            .arg("--core")
            .arg(how.core.to_string());
        if how.flavour == crate::floor::Flavour::CurrentThread {
            command.arg("--one-thread-server");
        }
        if !how.audited {
            command.arg("--unaudited");
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting `mpi-bench serve`")?;
        let mut line = String::new();
        if let Some(stdout) = child.stdout.take() {
            std::io::BufReader::new(stdout).read_line(&mut line)?;
        }
        let Some(address) = line.trim().strip_prefix(LISTENING) else {
            let _ = child.kill();
            let status = child.wait()?;
            anyhow::bail!("`mpi-bench serve` did not start ({status})");
        };
        Ok(Self {
            target: Target::new(address.to_string(), ca),
            serving: Serving::Child(child),
        })
    }

    /// Resident memory of a child server, now and at its peak, in MiB (`None` in process).
    pub fn child_resident_mib(&self) -> Option<(f64, f64)> {
        let Serving::Child(child) = &self.serving else {
            return None;
        };
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).ok()?;
        Some((
            crate::soak::status_mib(&status, "VmRSS:")?,
            crate::soak::status_mib(&status, "VmHWM:")?,
        ))
    }

    /// Where clients connect.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// A new connection as `principal`.
    pub async fn channel(&self, principal: &Principal) -> anyhow::Result<Channel> {
        self.target.channel(principal).await
    }

    /// Stops the server and waits until its store is closed (a child for at most a minute).
    pub async fn stop(self) -> anyhow::Result<()> {
        match self.serving {
            Serving::InProcess(served) => served.stop().await,
            Serving::Child(mut child) => {
                drop(child.stdin.take());
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    if let Some(status) = child.try_wait()? {
                        anyhow::ensure!(status.success(), "`mpi-bench serve` ended with {status}");
                        return Ok(());
                    }
                    if Instant::now() > deadline {
                        let _ = child.kill();
                        let _ = child.wait();
                        anyhow::bail!("`mpi-bench serve` did not stop within a minute");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

fn insured_patient(person: &Person, holding: usize) -> Option<InsuredPatient> {
    Some(InsuredPatient {
        insured_id: person.holdings[holding].insured_id()?,
        demographics: Some(Demographics {
            birth_date: person.birth_date,
            sex: person.sex,
        }),
    })
}

/// Loads the plan's consents into the store in process; returns how many.
pub fn load_consents(
    population: &Population,
    plan: &RecordPlan,
    data_dir: &Path,
) -> anyhow::Result<usize> {
    let secret = mpi_server::secret::load_or_create(&data_dir.join("secret.key"))?;
    let store = RedbStore::open(&data_dir.join("mpi.redb"))?;
    let mpi = Mpi::new(Arc::new(store), Keyer::new(&secret));
    let operator = Principal::Operator("bench".into());
    let mut consents = Vec::new();
    let networks_by_person = plan.networks_by_person();
    for (index, person) in population.persons.iter().enumerate() {
        let class = plan.consent[index];
        let card = person.card_on(population.until);
        let (Some(card), true) = (card, class != ConsentClass::None) else {
            continue;
        };
        let patient = insured_patient(person, card).context("synthetic insured ID")?;
        for &network in &networks_by_person[index] {
            consents.push(NewConsent {
                patient: PatientRef::Insured(patient.clone()),
                grant: ConsentGrant::Participation {
                    network: NetworkId::parse(&plan.networks[network].id)?,
                },
                valid_from: None,
                valid_until: None,
                evidence: format!("form/{}", person.reference),
            });
        }
        if class == ConsentClass::Full {
            consents.push(NewConsent {
                patient: PatientRef::Insured(patient),
                grant: ConsentGrant::Disclosure {
                    network: NetworkId::parse(&plan.networks[0].id)?,
                    scope: DisclosureScope {
                        sources: SourceNetworks::All,
                        recipients: Recipients::AnyFacility,
                        kinds: Vec::new(),
                        purposes: Vec::new(),
                    },
                },
                valid_from: None,
                valid_until: None,
                evidence: format!("form/{}", person.reference),
            });
        }
    }
    let total = consents.len();
    let mut rest = consents;
    while !rest.is_empty() {
        let tail = rest.split_off(rest.len().min(10_000));
        let results = mpi.record_consents(&operator, rest)?;
        anyhow::ensure!(
            results.iter().all(Result::is_ok),
            "a consent was refused while loading"
        );
        rest = tail;
    }
    Ok(total)
}

/// A RecordConsent for a disclosure to any facility, the one the benchmark's operators and
/// networks record and revoke beside their loads. An empty `network_id` means the caller's
/// own network (a network's call); an operator names one.
pub(crate) fn any_facility_disclosure(
    patient: pb::PatientReference,
    network_id: &str,
    evidence_reference: String,
) -> pb::RecordConsentRequest {
    pb::RecordConsentRequest {
        patient: Some(patient),
        kind: pb::ConsentKind::Disclosure.into(),
        network_id: network_id.into(),
        scope: Some(pb::DisclosureScope {
            recipients: Some(pb::Recipients {
                recipients: Some(pb::recipients::Recipients::AnyFacility(true)),
            }),
            ..Default::default()
        }),
        evidence_reference,
        ..Default::default()
    }
}

pub(crate) fn wire_patient(person: &Person, holding: usize) -> pb::PatientReference {
    pb::PatientReference {
        patient: Some(pb::patient_reference::Patient::Insured(
            pb::InsuredPatient {
                insured_id: Some(wire_insured(&person.holdings[holding])),
                birth_date: iso(person.birth_date),
                sex: wire_sex(person.sex).into(),
            },
        )),
    }
}

/// Every network registers its events concurrently, 1,000 per call, `in_flight` calls at a
/// time; durable when answered.
/// The RegisterLocations item of a planned event: the person by the card of the service date.
pub(crate) fn registration(
    population: &Population,
    event: &mpi_synth::records::RecordEvent,
) -> pb::LocationRegistration {
    pb::LocationRegistration {
        patient: Some(wire_patient(
            &population.persons[event.person],
            event.holding,
        )),
        facility_code: event.facility.clone(),
        kind: i32::from(event.kind),
        first_service_date: iso(event.service_date),
        last_service_date: String::new(),
        reference: event.reference.clone(),
        network_id: String::new(),
    }
}

pub async fn register(
    server: &Running,
    population: &Population,
    plan: &RecordPlan,
    in_flight: usize,
) -> anyhow::Result<Row> {
    let mut batches = Vec::new();
    for (index, network) in plan.networks.iter().enumerate() {
        let items: Vec<pb::LocationRegistration> = plan
            .events
            .iter()
            .filter(|e| e.network == index)
            .map(|e| registration(population, e))
            .collect();
        let requests: Vec<_> = items
            .chunks(1000)
            .map(|chunk| pb::RegisterLocationsRequest {
                items: chunk.to_vec(),
            })
            .collect();
        let principal = Principal::Network(NetworkId::parse(&network.id)?);
        let channel = server.channel(&principal).await?;
        // Each network keeps `in_flight` batches in flight over its connection.
        let lanes = in_flight.max(1);
        let mut split: Vec<Vec<pb::RegisterLocationsRequest>> = vec![Vec::new(); lanes];
        for (position, request) in requests.into_iter().enumerate() {
            split[position % lanes].push(request);
        }
        for lane in split {
            batches.push((channel.clone(), lane));
        }
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (channel, requests) in batches {
        tasks.push(tokio::spawn(async move {
            let mut client = pb::record_locator_client::RecordLocatorClient::new(channel)
                .max_encoding_message_size(16 << 20);
            let mut stored = 0u64;
            for request in requests {
                let results = client
                    .register_locations(request)
                    .await?
                    .into_inner()
                    .results;
                stored += results
                    .iter()
                    .filter(|r| r.outcome() == pb::RegistrationOutcome::Stored)
                    .count() as u64;
            }
            Ok::<u64, tonic::Status>(stored)
        }));
    }
    let mut stored = 0;
    for task in tasks {
        stored += task.await??;
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(Row {
        name: "RegisterLocations (mTLS, durable)",
        operations: stored,
        seconds,
        note: format!(
            "{} networks in parallel, {in_flight} batches of 1,000 in flight each; {} events, {} refused (no participation)",
            plan.networks.len(),
            plan.events.len(),
            plan.events.len() as u64 - stored
        ),
        latency: None,
    })
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Latency {
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
}

pub(crate) fn percentiles(mut micros: Vec<u64>) -> Latency {
    micros.sort_unstable();
    let at = |q: f64| {
        micros
            .get(((micros.len() as f64 * q) as usize).min(micros.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    Latency {
        p50: at(0.50),
        p99: at(0.99),
        p999: at(0.999),
    }
}

/// Persons who consented to disclosure, by today's card.
pub(crate) fn disclosing_patients(
    population: &Population,
    plan: &RecordPlan,
) -> Vec<pb::PatientReference> {
    population
        .persons
        .iter()
        .enumerate()
        .filter(|(index, _)| plan.consent[*index] == ConsentClass::Full)
        .filter_map(|(_, person)| {
            person
                .card_on(population.until)
                .map(|h| wire_patient(person, h))
        })
        .collect()
}

/// FindLocations for treatment of `patient`, the first page.
pub(crate) fn treatment(patient: pb::PatientReference) -> pb::FindLocationsRequest {
    pb::FindLocationsRequest {
        patient: Some(patient),
        purpose: pb::Purpose::Treatment.into(),
        ..Default::default()
    }
}

/// A clinician of a network outside the record plan (47-0001, Okinawa).
pub(crate) fn outside_clinician() -> anyhow::Result<Principal> {
    let body = "471014701";
    let check = mpi_core::ids::luhn::check_digit(body.as_bytes()).context("check digit")?;
    Ok(Principal::Clinician {
        network: NetworkId::parse("47-0001")?,
        facility: FacilityCode::parse(&format!("{body}{check}"))?,
    })
}

/// One FindLocations answer of a typical size (the one closest to 10 pointers among the first
/// 100 persons who consented to disclosure).
pub async fn one_answer(
    server: &Running,
    population: &Population,
    plan: &RecordPlan,
) -> anyhow::Result<pb::FindLocationsResponse> {
    let mut client = pb::record_locator_client::RecordLocatorClient::new(
        server.channel(&outside_clinician()?).await?,
    );
    let mut best: Option<pb::FindLocationsResponse> = None;
    for patient in disclosing_patients(population, plan).into_iter().take(100) {
        let answer = client
            .find_locations(treatment(patient))
            .await?
            .into_inner();
        let distance = |a: &pb::FindLocationsResponse| a.locations.len().abs_diff(10);
        if best
            .as_ref()
            .is_none_or(|b| distance(&answer) < distance(b))
        {
            best = Some(answer);
        }
    }
    best.context("no consenting persons to ask for")
}

/// What every FindLocations load starts from: the patients it asks for (those who consented
/// to disclosure) and `connections` connections of the clinician outside the record networks.
async fn find_set_up(
    server: &Target,
    population: &Population,
    plan: &RecordPlan,
    connections: usize,
) -> anyhow::Result<(Arc<Vec<pb::PatientReference>>, Vec<Channel>)> {
    let patients = Arc::new(disclosing_patients(population, plan));
    anyhow::ensure!(!patients.is_empty(), "no consenting persons to ask for");
    let doctor = outside_clinician()?;
    let mut channels = Vec::new();
    for _ in 0..connections.max(1) {
        channels.push(server.channel(&doctor).await?);
    }
    Ok((patients, channels))
}

/// FindLocations by today's card for persons who consented to disclosure, from a clinician
/// outside the record networks, for `duration`, over `connections` connections with
/// `concurrency` requests in flight.
pub async fn find(
    server: &Target,
    population: &Population,
    plan: &RecordPlan,
    duration: Duration,
    connections: usize,
    concurrency: usize,
    label: &'static str,
) -> anyhow::Result<Row> {
    let (patients, channels) = find_set_up(server, population, plan, connections).await?;
    let started = Instant::now();
    let deadline = started + duration;
    let mut workers = Vec::new();
    for worker in 0..concurrency.max(1) {
        let channel = channels[worker % channels.len()].clone();
        let patients = patients.clone();
        workers.push(tokio::spawn(async move {
            let mut client = pb::record_locator_client::RecordLocatorClient::new(channel);
            let mut latencies = Vec::new();
            let mut disclosed = 0u64;
            let mut next = worker * 7919;
            while Instant::now() < deadline {
                let patient = patients[next % patients.len()].clone();
                next += concurrency.max(1);
                let asked = Instant::now();
                let answer = client
                    .find_locations(treatment(patient))
                    .await?
                    .into_inner();
                latencies.push(asked.elapsed().as_micros() as u64);
                disclosed += answer.locations.len() as u64;
            }
            Ok::<_, tonic::Status>((latencies, disclosed))
        }));
    }
    let mut latencies = Vec::new();
    let mut disclosed = 0;
    for worker in workers {
        let (mine, found) = worker.await??;
        latencies.extend(mine);
        disclosed += found;
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(find_row(
        label,
        latencies,
        seconds,
        disclosed,
        format!("{connections} connections, {concurrency} in flight"),
    ))
}

/// Asks for every patient that [`find`] asks for exactly once, `concurrency` calls in flight
/// over `connections`: afterwards every store page a measurement reads has been read once, so
/// a store cache that holds the store serves the measurement from memory at every population
/// size (a fixed-time warm-up covers a smaller share of a larger population). Returns the
/// calls made and how long they took.
pub async fn ask_each_once(
    server: &Target,
    population: &Population,
    plan: &RecordPlan,
    connections: usize,
    concurrency: usize,
) -> anyhow::Result<(usize, Duration)> {
    let (patients, channels) = find_set_up(server, population, plan, connections).await?;
    let started = Instant::now();
    let taken = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = Vec::new();
    for worker in 0..concurrency.max(1) {
        let (channel, patients, taken) = (
            channels[worker % channels.len()].clone(),
            patients.clone(),
            taken.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut client = pb::record_locator_client::RecordLocatorClient::new(channel);
            loop {
                let next = taken.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(patient) = patients.get(next) else {
                    return Ok::<_, tonic::Status>(());
                };
                client.find_locations(treatment(patient.clone())).await?;
            }
        }));
    }
    for worker in workers {
        worker.await??;
    }
    Ok((patients.len(), started.elapsed()))
}

/// The row of a FindLocations measurement: `how` it was driven, then the mean answer size.
fn find_row(
    label: &'static str,
    latencies: Vec<u64>,
    seconds: f64,
    disclosed: u64,
    how: String,
) -> Row {
    let operations = latencies.len() as u64;
    Row {
        name: label,
        operations,
        seconds,
        note: format!(
            "{how}, {:.1} locations per answer",
            disclosed as f64 / operations.max(1) as f64
        ),
        latency: Some(percentiles(latencies)),
    }
}

/// A call slower than this counts as slow in [`slow_windows_line`].
const SLOW_MICROS: u64 = 10_000;

/// A window in which the client's thread waited at least this long for its core is named by
/// [`slow_windows_line`].
const CLIENT_WAIT_MICROS: u64 = 2_000;

/// How long a thread has waited for a core, in microseconds, from the text of its
/// `/proc/.../schedstat` (time on the CPU, time waiting on a run queue, both in nanoseconds,
/// then the number of time slices).
fn run_delay_micros(schedstat: &str) -> Option<u64> {
    let nanos: u64 = schedstat.split_whitespace().nth(1)?.parse().ok()?;
    Some(nanos / 1000)
}

/// [`run_delay_micros`] of the calling thread; `None` where the kernel does not say.
fn own_run_delay_micros() -> Option<u64> {
    run_delay_micros(&std::fs::read_to_string("/proc/thread-self/schedstat").ok()?)
}

/// When the slow calls were sent: per 100 ms window of the run, how many took over
/// [`SLOW_MICROS`] and the slowest, the ten worst windows in time order; `None` if none was
/// slow. A tail that comes in bursts points at a stall; one spread evenly, at a cost per call.
/// `waits` holds, per window, how long the client's own thread waited for its core (another
/// thread ran on it: the client's core is its own, so a thread of another process or of the
/// kernel): calls due then were sent late, a stall of the machine and not of the server. The line names those of at least [`CLIENT_WAIT_MICROS`], among the worst windows
/// and in all.
fn slow_windows_line(
    label: &str,
    began: chrono::DateTime<chrono::Utc>,
    slow: &std::collections::BTreeMap<u64, (u32, u64)>,
    waits: &std::collections::BTreeMap<u64, u64>,
) -> Option<String> {
    let total: u32 = slow.values().map(|(calls, _)| calls).sum();
    if total == 0 {
        return None;
    }
    let mut worst: Vec<_> = slow.iter().collect();
    worst.sort_by_key(|(_, (calls, _))| std::cmp::Reverse(*calls));
    worst.truncate(10);
    worst.sort();
    let windows: Vec<String> = worst
        .iter()
        .map(|(window, (calls, max))| {
            let waited = waits.get(window).copied().unwrap_or(0);
            let client = if waited >= CLIENT_WAIT_MICROS {
                format!(", client off its core {:.1} ms", waited as f64 / 1000.0)
            } else {
                String::new()
            };
            format!(
                "{:.1} s: {calls} (max {:.1} ms{client})",
                **window as f64 / 10.0,
                *max as f64 / 1000.0
            )
        })
        .collect();
    let off: Vec<&u64> = waits
        .values()
        .filter(|&&waited| waited >= CLIENT_WAIT_MICROS)
        .collect();
    Some(format!(
        "{label} (from {}): {total} calls over {} ms in {} windows of 100 ms; the worst: {}; \
         the client's thread waited for its core {:.1} ms or more in {} windows ({:.1} ms in all)",
        began.format("%H:%M:%S%.3f"),
        SLOW_MICROS / 1000,
        slow.len(),
        windows.join(", "),
        CLIENT_WAIT_MICROS as f64 / 1000.0,
        off.len(),
        off.into_iter().sum::<u64>() as f64 / 1000.0,
    ))
}

/// FindLocations as in [`find`], but open loop: `rate` calls per second, each sent on its own
/// due time whatever the answers take ([`crate::pace::Pacer`]), each timed from that due time,
/// for `duration`. A call that would make more than 2,048 wait is not sent, and counted: the second
/// value returned, which is 0 at a rate the service sustains (the row's latencies are then
/// those of the calls sent only). Any error fails the run. When the slow calls were sent is
/// printed from [`slow_windows_line`].
pub async fn paced_find(
    server: &Target,
    population: &Population,
    plan: &RecordPlan,
    rate: f64,
    duration: Duration,
    connections: usize,
    label: &'static str,
) -> anyhow::Result<(Row, u64)> {
    const CAP: u32 = 2048;
    let (patients, channels) = find_set_up(server, population, plan, connections).await?;
    let clients: Vec<_> = channels
        .into_iter()
        .map(pb::record_locator_client::RecordLocatorClient::new)
        .collect();
    let slots = Arc::new(tokio::sync::Semaphore::new(CAP as usize));
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel();
    let (mut sent, mut refused) = (0u64, 0u64);
    let (started, began) = (Instant::now(), chrono::Utc::now());
    let mut pacer = crate::pace::Pacer::new(started, rate)?;
    // Per 100 ms window, how long this (the client's) thread waited for its core.
    let mut waits = std::collections::BTreeMap::<u64, u64>::new();
    let (mut window, mut delay_before) = (0u64, own_run_delay_micros());
    while pacer.peek() < started + duration {
        let scheduled = pacer.next().await;
        let due_window = scheduled.duration_since(started).as_millis() as u64 / 100;
        if due_window != window {
            let delay = own_run_delay_micros();
            if let (Some(before), Some(now)) = (delay_before, delay) {
                waits.insert(window, now.saturating_sub(before));
            }
            (window, delay_before) = (due_window, delay);
        }
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            refused += 1;
            continue;
        };
        let mut client = clients[sent as usize % clients.len()].clone();
        let patient = patients[(sent as usize).wrapping_mul(7919) % patients.len()].clone();
        let sender = sender.clone();
        let offset = scheduled.duration_since(started);
        sent += 1;
        tokio::spawn(async move {
            let answer = client.find_locations(treatment(patient)).await;
            let micros = scheduled.elapsed().as_micros() as u64;
            let _ = sender.send(answer.map(|a| (offset, micros, a.into_inner().locations.len())));
            drop(permit);
        });
    }
    let _ = slots.acquire_many(CAP).await?;
    drop(sender);
    let seconds = started.elapsed().as_secs_f64();
    let (mut latencies, mut disclosed, mut failed) = (Vec::new(), 0u64, 0u64);
    let mut slow = std::collections::BTreeMap::<u64, (u32, u64)>::new();
    while let Some(outcome) = receiver.recv().await {
        match outcome {
            Ok((offset, micros, found)) => {
                latencies.push(micros);
                disclosed += found as u64;
                if micros > SLOW_MICROS {
                    let window = slow.entry(offset.as_millis() as u64 / 100).or_default();
                    *window = (window.0 + 1, window.1.max(micros));
                }
            }
            Err(_) => failed += 1,
        }
    }
    if let Some(line) = slow_windows_line(label, began, &slow, &waits) {
        eprintln!("{line}");
    }
    anyhow::ensure!(
        failed == 0,
        "{label}: {failed} calls failed at {rate:.0}/s ({refused} not sent, 2,048 waiting)"
    );
    if refused > 0 {
        eprintln!("{label}: fell behind at {rate:.0}/s: {refused} calls not sent (2,048 waiting)");
    }
    let row = find_row(
        label,
        latencies,
        seconds,
        disclosed,
        format!("open loop at {rate:.0}/s, {connections} connections"),
    );
    Ok((row, refused))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn the_run_delay_is_the_second_field_of_schedstat_in_microseconds() {
        assert_eq!(run_delay_micros("350594 2500000 17\n"), Some(2500));
        assert_eq!(run_delay_micros("350594"), None);
        assert_eq!(run_delay_micros("350594 x 1"), None);
        #[cfg(target_os = "linux")]
        assert!(own_run_delay_micros().is_some());
    }

    #[test]
    fn slow_windows_name_the_client_waiting_for_its_core() {
        let began = chrono::DateTime::parse_from_rfc3339("2026-12-05T07:00:00Z")
            .unwrap()
            .to_utc();
        assert_eq!(
            slow_windows_line("loop", began, &BTreeMap::new(), &BTreeMap::new()),
            None
        );
        // Window 12 (1.2 s): 40 slow calls while the client was off its core for 9.5 ms;
        // window 30: 3 slow calls, the client waited 1 ms (under the threshold).
        let slow = BTreeMap::from([(12, (40, 19_400)), (30, (3, 10_500))]);
        let waits = BTreeMap::from([(5, 2_500), (12, 9_500), (30, 1_000)]);
        let line = slow_windows_line("loop", began, &slow, &waits).unwrap();
        assert_eq!(
            line,
            "loop (from 07:00:00.000): 43 calls over 10 ms in 2 windows of 100 ms; the worst: \
             1.2 s: 40 (max 19.4 ms, client off its core 9.5 ms), 3.0 s: 3 (max 10.5 ms); \
             the client's thread waited for its core 2.0 ms or more in 2 windows (12.0 ms in all)"
        );
    }
}
