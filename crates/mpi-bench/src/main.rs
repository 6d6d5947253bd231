//! `mpi-bench`: throughput of kouiki-mpi on a synthetic population, printed as a Markdown
//! table for `docs/benchmarks.md`.
//!
//! - `import`: ImportQualifications over mutual TLS against the real server (redb store,
//!   durable commits) on 127.0.0.1, the whole feed of a population in one stream.
//! - `resolve`: identity resolution as of a date, in process, on the store that import wrote.
//! - `locations`: RegisterLocations (batches of 1,000, durable) and FindLocations
//!   (consent-filtered, audited) over mutual TLS, with the audit log on and off in one run.
//!
//! - `audit-commit`: wall and CPU time of one durable append to the audit chain, by group size.
//! - `floor`: FindLocations against a bare tonic echo server with the same mutual TLS.
//! - `soak`: the mixed load at 70 % of its maximum for 10 minutes (errors, p99, memory).
//!
//! Run with `cargo run --release -p mpi-bench -- all --persons 100000`.

/// The allocator `kouiki-mpi serve` runs with, set as it sets it (see its `main.rs`), so that
/// the server measured here allocates as the real one does.
#[global_allocator]
static ALLOCATOR: mpi_alloc::Allocator = mpi_alloc::Allocator;

mod floor;
mod locations;
mod pace;
mod scale;
mod soak;

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use chrono::NaiveDate;
use clap::{Parser, Subcommand};
use mpi_core::keys::Keyer;
use mpi_core::qualification::{Demographics, InsuredPatient, Sex};
use mpi_core::resolution::Resolution;
use mpi_core::service::Mpi;
use mpi_proto::v1 as pb;
use mpi_server::client::{ClientIdentity, connect};
use mpi_server::config::{Config, FileConfig, Overrides};
use mpi_store_redb::RedbStore;
use mpi_synth::{Holding, Person, Population};

#[derive(Debug, Parser)]
#[command(name = "mpi-bench", about = "kouiki-mpi benchmarks")]
struct Cli {
    /// Persons in the synthetic population.
    #[arg(long, default_value_t = 100_000, global = true)]
    persons: usize,
    /// Seed of the population.
    #[arg(long, default_value_t = 1, global = true)]
    seed: u64,
    /// Records per ImportQualifications message.
    #[arg(long, default_value_t = 1000, global = true)]
    batch: usize,
    /// Resolver threads for `resolve`.
    #[arg(long, default_value_t = 2, global = true)]
    threads: usize,
    /// `locations`: record networks of the synthetic plan.
    #[arg(long, default_value_t = 3, global = true)]
    networks: usize,
    /// `locations`: record events per person on average.
    #[arg(long, default_value_t = 10, global = true)]
    events: usize,
    /// `locations`: seconds of FindLocations load per measurement.
    #[arg(long, default_value_t = 10, global = true)]
    seconds: u64,
    /// `locations`: client connections.
    #[arg(long, default_value_t = 4, global = true)]
    connections: usize,
    /// `locations`: requests in flight.
    #[arg(long, default_value_t = 64, global = true)]
    concurrency: usize,
    /// `locations`: RegisterLocations batches in flight per network.
    #[arg(long, default_value_t = 8, global = true)]
    register_in_flight: usize,
    /// `floor`, `scale`: run the server on tokio's current-thread scheduler (default: the
    /// multi-thread scheduler with one worker, as `kouiki-mpi serve` runs).
    #[arg(long, global = true)]
    one_thread_server: bool,
    /// `locations`: rounds of (audit on, audit off) FindLocations measurements.
    #[arg(long, default_value_t = 2, global = true)]
    rounds: usize,
    /// Page cache of the store files of every server the benchmark starts, in MiB
    /// (`store.cache_mib`).
    #[arg(long, default_value_t = mpi_server::config::DEFAULT_STORE_CACHE_MIB, global = true)]
    cache_mib: u64,
    /// Read cache of every server the benchmark starts, in MiB (`store.read_cache_mib`; 0:
    /// none). The default holds the retrievals of the routine run's million persons (≈ 2.5 KiB
    /// each as the cache weighs them).
    #[arg(long, default_value_t = 4096, global = true)]
    read_cache_mib: u64,
    /// The file the servers this process starts log into, as `kouiki-mpi serve` logs
    /// (`RUST_LOG`, default `info`), so that the benchmark measures the log too. Default: a
    /// file in a temporary directory, removed at the end.
    #[arg(long, global = true)]
    server_log: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// ImportQualifications over mTLS, durable.
    Import,
    /// Resolution in process (after an import).
    Resolve,
    /// RegisterLocations and FindLocations, audit on and off (after an import).
    Locations,
    /// All of them.
    All,
    /// The cost of one durable audit append (group commit) by group size, in process.
    AuditCommit,
    /// How long opening the store takes after a crash that took the location index's last
    /// non-durable commits: the replay of the claim log, in process.
    ClaimReplay {
        /// Claims the index holds durably.
        #[arg(long, default_value_t = 7_300_000)]
        held: u64,
        /// Claims in the log that the index lost (10 s of registration at ≈ 55,000/s).
        #[arg(long, default_value_t = 550_000)]
        logged: u64,
        /// Drop the kernel's page cache before the replay (needs root).
        #[arg(long)]
        cold: bool,
    },
    /// FindLocations against a bare tonic echo server with the same TLS, in one run, servers
    /// pinned to core 0 and the client to core 1 (after an import and registration).
    Floor,
    /// The scale curve: import, registration, FindLocations (at its maximum and at half of it)
    /// and the mixed load's maximum at each population size, server pinned to core 0 and
    /// client to core 1; bytes per location and resident memory. `--persons` is not used.
    Scale {
        /// Population sizes, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "100000,1000000")]
        sizes: Vec<usize>,
        /// Where to write a PNG plot of throughput and p99 against population size.
        #[arg(long)]
        plot: Option<std::path::PathBuf>,
        /// Run the open-loop FindLocations at this many calls per second instead of half the
        /// maximum (to see how latency depends on load).
        #[arg(long)]
        open_loop_rate: Option<f64>,
        /// Serve without the audit log (to measure what it costs; never how the server runs).
        #[arg(long)]
        unaudited: bool,
        /// Further open loops at these rates (calls per second, comma-separated), each for
        /// `--seconds`, after the one at half the maximum: FindLocations latency against the
        /// load, printed as a second table.
        #[arg(long, value_delimiter = ',')]
        latency_rates: Vec<f64>,
    },
    /// The server over a data directory (audited unless `--unaudited`), pinned to one core,
    /// until standard input closes (what `scale` runs as a child process, so that the server's
    /// memory is measured alone).
    #[command(hide = true)]
    Serve {
        /// The data directory.
        #[arg(long)]
        data_dir: std::path::PathBuf,
        /// Where `ca.pem`, `server.pem` and `server.key` are.
        #[arg(long)]
        tls_dir: std::path::PathBuf,
        /// The core to run on.
        #[arg(long, default_value_t = 0)]
        core: usize,
        /// Without the audit log (to measure what it costs).
        #[arg(long)]
        unaudited: bool,
    },
    /// Mixed load at a fraction of its maximum for a bounded time: errors, p99 and resident
    /// memory over time (after an import and registration).
    Soak {
        /// Seconds of mixed load.
        #[arg(long, default_value_t = 600)]
        duration: u64,
        /// Seconds per reported window.
        #[arg(long, default_value_t = 30)]
        window: u64,
        /// Fraction of the measured maximum to run at.
        #[arg(long, default_value_t = 0.7)]
        fraction: f64,
    },
}

struct Row {
    name: &'static str,
    operations: u64,
    seconds: f64,
    note: String,
    latency: Option<locations::Latency>,
}

fn server_flavour(cli: &Cli) -> floor::Flavour {
    if cli.one_thread_server {
        floor::Flavour::CurrentThread
    } else {
        floor::Flavour::MultiThread
    }
}

fn horizon() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 1).unwrap_or(NaiveDate::MIN)
}

fn iso(day: NaiveDate) -> String {
    day.format("%Y-%m-%d").to_string()
}

fn wire_insured(holding: &Holding) -> pb::InsuredId {
    pb::InsuredId {
        form: Some(pb::insured_id::Form::Parts(pb::InsuredIdParts {
            insurer_number: holding.insurer_number.clone(),
            symbol: holding.symbol.clone(),
            number: holding.number.clone(),
            branch: holding.branch.clone(),
        })),
    }
}

fn wire_sex(sex: Sex) -> pb::Sex {
    match sex {
        Sex::Male => pb::Sex::Male,
        Sex::Female => pb::Sex::Female,
        Sex::NotRecorded => pb::Sex::NotRecorded,
    }
}

fn wire_record(person: &Person, holding: &Holding) -> pb::QualificationRecord {
    pb::QualificationRecord {
        provider_person_ref: person.reference.clone(),
        insured_id: Some(wire_insured(holding)),
        qualification_start: iso(holding.start),
        qualification_end: holding.end.map(iso).unwrap_or_default(),
        birth_date: iso(person.birth_date),
        sex: wire_sex(person.sex).into(),
        reason_of_loss: match holding.reason_of_loss.map(|r| r.code()) {
            Some(1) => pb::ReasonOfLoss::Death,
            Some(2) => pb::ReasonOfLoss::Welfare,
            Some(3) => pb::ReasonOfLoss::OtherInsurance,
            Some(_) => pb::ReasonOfLoss::Other,
            None => pb::ReasonOfLoss::Unspecified,
        }
        .into(),
    }
}

/// The store caches of a benchmark server, in MiB.
#[derive(Debug, Clone, Copy)]
pub struct Caches {
    /// `store.cache_mib`.
    pub page_mib: u64,
    /// `store.read_cache_mib`.
    pub read_mib: u64,
}

impl Cli {
    fn caches(&self) -> Caches {
        Caches {
            page_mib: self.cache_mib,
            read_mib: self.read_cache_mib,
        }
    }
}

/// Installs the process's log as `kouiki-mpi serve` installs it, into `path` or a file in a
/// temporary directory (returned, to be removed at the end).
fn server_log(path: Option<&std::path::Path>) -> anyhow::Result<Option<tempfile::TempDir>> {
    let (path, dir) = match path {
        Some(path) => (path.to_path_buf(), None),
        None => {
            let dir = tempfile::tempdir()?;
            (dir.path().join("server.log"), Some(dir))
        }
    };
    let file = std::fs::File::create(&path)
        .with_context(|| format!("cannot create the server log {}", path.display()))?;
    mpi_server::logging::install(
        mpi_server::config::LogFormat::Text,
        std::sync::Mutex::new(file),
        false,
    );
    Ok(dir)
}

/// The configuration of a benchmark server: 127.0.0.1:0 over `data_dir`, no metrics listener,
/// the store caches `cache_mib`, the development PKI unless the caller sets `tls`.
fn local_config(data_dir: &std::path::Path, cache_mib: Caches) -> anyhow::Result<Config> {
    mpi_server::install_crypto_provider();
    let overrides = Overrides {
        listen: Some("127.0.0.1:0".into()),
        metrics_listen: Some("off".into()),
        data_dir: Some(data_dir.to_path_buf()),
        ..Default::default()
    };
    let mut config = Config::resolve(FileConfig::default(), overrides)?;
    config.store_cache_bytes = (cache_mib.page_mib << 20) as usize;
    config.read_cache_bytes = cache_mib.read_mib << 20;
    Ok(config)
}

/// Starts the real server on 127.0.0.1:0 over `data_dir` and imports the population's feed,
/// with an operator changing a consent beside it ([`consent_probe`]).
async fn import(
    population: &Population,
    data_dir: &std::path::Path,
    batch: usize,
    cache_mib: Caches,
) -> anyhow::Result<(Row, Row)> {
    let mut config = local_config(data_dir, cache_mib)?;
    config.limits.max_batch_items = batch.max(1000);
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let address = listener.local_addr()?.to_string();
    let prepared = tokio::task::spawn_blocking(move || mpi_server::prepare(config)).await??;
    let pki = prepared.dev_pki().context("development PKI")?.0.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(mpi_server::serve(prepared, listener, None, async move {
        let _ = stopped.await;
    }));
    let channel = connect(
        &address,
        &ClientIdentity::from_dev_pki(&pki, "history-provider")?,
    )
    .await?;
    let mut client = pb::qualification_history_client::QualificationHistoryClient::new(channel)
        .max_encoding_message_size(64 << 20);

    // Messages are built as the stream is consumed, as a real feeder would.
    let records = population.record_count() as u64;
    let persons = population.persons.clone();
    let batch_size = batch.max(1);
    let messages = tokio_stream::iter(
        persons
            .into_iter()
            .flat_map(|person| {
                let holdings = person.holdings.clone();
                holdings
                    .into_iter()
                    .map(move |holding| wire_record(&person, &holding))
            })
            .collect::<Vec<_>>()
            .chunks(batch_size)
            .map(|chunk| pb::ImportQualificationsRequest {
                records: chunk.to_vec(),
            })
            .collect::<Vec<_>>(),
    );
    let operator = connect(&address, &ClientIdentity::from_dev_pki(&pki, "operator")?).await?;
    let first = &population.persons[0];
    let patient = first
        .card_on(population.until)
        .map(|holding| locations::wire_patient(first, holding))
        .context("the first synthetic person holds no card today")?;
    let (importing, imported) = tokio::sync::watch::channel(false);
    let probe = tokio::spawn(consent_probe(operator, patient, imported));
    let started = Instant::now();
    let summary = client.import_qualifications(messages).await;
    let seconds = started.elapsed().as_secs_f64();
    let _ = importing.send(true);
    let probed = probe.await??;
    let summary = summary?.into_inner();
    anyhow::ensure!(
        summary.accepted == records && summary.rejected == 0,
        "import was not clean: {summary:?}"
    );
    let _ = stop.send(());
    server.await??;
    let import = Row {
        name: "ImportQualifications (mTLS, durable)",
        operations: records,
        seconds,
        note: format!(
            "{} persons, batches of {batch_size}",
            population.persons.len()
        ),
        latency: None,
    };
    Ok((import, probed))
}

/// The network the probe's consents are given to (any valid network ID).
const PROBE_NETWORK: &str = "13-0001";

/// Milliseconds between two consent changes of [`consent_probe`].
const PROBE_PAUSE_MS: u64 = 200;

/// An operator recording a disclosure consent and revoking it, one call after the other with a
/// pause between pairs, while an import runs (until `done`): how long a consent change waits
/// for the store's single writer behind the import's commits. Calls answered NOT_FOUND (the
/// patient's records not yet committed) are retried and not counted.
async fn consent_probe(
    operator: tonic::transport::Channel,
    patient: pb::PatientReference,
    mut done: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Row> {
    let mut client = pb::consent_client::ConsentClient::new(operator);
    let mut micros = Vec::new();
    let started = Instant::now();
    let mut n = 0u64;
    while !*done.borrow() {
        n += 1;
        let sent = Instant::now();
        let recorded = client
            .record_consent(locations::any_facility_disclosure(
                patient.clone(),
                PROBE_NETWORK,
                format!("import-probe-{n}"),
            ))
            .await;
        match recorded {
            Ok(recorded) => {
                micros.push(sent.elapsed().as_micros() as u64);
                let sent = Instant::now();
                client
                    .revoke_consent(pb::RevokeConsentRequest {
                        consent_id: recorded.into_inner().consent_id,
                        reason: "import probe: withdrawn".into(),
                        purge: false,
                    })
                    .await?;
                micros.push(sent.elapsed().as_micros() as u64);
            }
            Err(status) if status.code() == tonic::Code::NotFound => {}
            Err(status) => return Err(status.into()),
        }
        let pause = tokio::time::sleep(std::time::Duration::from_millis(PROBE_PAUSE_MS));
        tokio::select! {
            () = pause => {}
            _ = done.changed() => {}
        }
    }
    let changes = micros.len() as u64;
    let slowest = micros.iter().copied().max().unwrap_or(0);
    Ok(Row {
        name: "RecordConsent, RevokeConsent during the import (operator)",
        operations: changes,
        seconds: started.elapsed().as_secs_f64(),
        note: format!(
            "one record and one revoke every {PROBE_PAUSE_MS} ms once the patient is stored; slowest {:.0} ms",
            slowest as f64 / 1000.0
        ),
        latency: Some(locations::percentiles(micros)),
    })
}

/// Resolves every holding on its start day, with birth date and sex, on `threads` threads.
fn resolve(
    population: &Population,
    data_dir: &std::path::Path,
    threads: usize,
) -> anyhow::Result<Row> {
    let secret = mpi_server::secret::load_or_create(&data_dir.join("secret.key"))?;
    let store = RedbStore::open(&data_dir.join("mpi.redb"))?;
    let mpi = Mpi::new(Arc::new(store), Keyer::new(&secret));
    let queries: Vec<(InsuredPatient, NaiveDate)> = population
        .persons
        .iter()
        .flat_map(|person| {
            person.holdings.iter().filter_map(move |holding| {
                let patient = InsuredPatient {
                    insured_id: holding.insured_id()?,
                    demographics: Some(Demographics {
                        birth_date: person.birth_date,
                        sex: person.sex,
                    }),
                };
                Some((patient, holding.start))
            })
        })
        .collect();
    let threads = threads.max(1);
    let chunk = queries.len().div_ceil(threads);
    let started = Instant::now();
    let resolved = std::thread::scope(|scope| {
        let handles: Vec<_> = queries
            .chunks(chunk.max(1))
            .map(|part| {
                let mpi = mpi.clone();
                scope.spawn(move || {
                    part.iter()
                        .map(|(patient, day)| {
                            mpi.resolve(patient, *day)
                                .map(|r| !matches!(r, Resolution::Unknown))
                        })
                        .filter(|found| matches!(found, Ok(true)))
                        .count()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().unwrap_or(0))
            .sum::<usize>()
    });
    let seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        resolved == queries.len(),
        "only {resolved} of {} resolved",
        queries.len()
    );
    Ok(Row {
        name: "Resolution as of a date (in process)",
        operations: queries.len() as u64,
        seconds,
        note: format!("{threads} threads, birth date and sex given"),
        latency: None,
    })
}

fn main() -> anyhow::Result<()> {
    mpi_alloc::retain_freed_memory();
    let cli = Cli::parse();
    let _log_dir = server_log(cli.server_log.as_deref())?;
    if matches!(cli.command, Command::AuditCommit) {
        return audit_commit();
    }
    if let Command::ClaimReplay { held, logged, cold } = cli.command {
        let dir = tempfile::tempdir()?;
        let took = mpi_store_redb::measure::claim_replay(dir.path(), held, logged, cold)?;
        println!("| claims held | claims replayed | page cache | replay s |");
        println!("|---:|---:|---|---:|");
        println!(
            "| {held} | {logged} | {} | {:.2} |",
            if cold { "dropped" } else { "as left" },
            took.as_secs_f64()
        );
        return Ok(());
    }
    if let Command::Serve {
        data_dir,
        tls_dir,
        core,
        unaudited,
    } = &cli.command
    {
        let how = locations::ChildServer {
            cache_mib: cli.caches(),
            core: *core,
            flavour: server_flavour(&cli),
            audited: !unaudited,
        };
        return locations::serve_child(data_dir, tls_dir, how);
    }
    if let Command::Scale {
        sizes,
        plot,
        open_loop_rate,
        unaudited,
        latency_rates,
    } = &cli.command
    {
        let settings = scale::Settings {
            seed: cli.seed,
            batch: cli.batch,
            networks: cli.networks,
            events: cli.events,
            register_in_flight: cli.register_in_flight,
            seconds: cli.seconds,
            flavour: server_flavour(&cli),
            cache_mib: cli.caches(),
            open_loop_rate: *open_loop_rate,
            latency_rates: latency_rates.clone(),
            audited: !unaudited,
        };
        if *unaudited {
            println!(
                "Served without the audit log (--unaudited): a measurement of what it costs, not how the server runs.\n"
            );
        }
        let mut points = Vec::new();
        for &persons in sizes {
            points.push(scale::measure(persons, &settings)?);
        }
        scale::print(&points);
        if let Some(path) = plot {
            let caption = format!(
                "kouiki-mpi scale curve ({} cores, server pinned to core 0, client to core 1; {} MiB store cache, {} MiB read cache)",
                std::thread::available_parallelism().map_or(0, usize::from),
                cli.cache_mib,
                cli.read_cache_mib
            );
            scale::plot(&points, path, &caption)?;
            println!("plot written to {}", path.display());
        }
        return Ok(());
    }
    let started = Instant::now();
    let population = mpi_synth::generate(&mpi_synth::Config {
        persons: cli.persons,
        seed: cli.seed,
        until: horizon(),
    });
    eprintln!(
        "population: {} persons, {} records, generated in {:.1} s",
        population.persons.len(),
        population.record_count(),
        started.elapsed().as_secs_f64()
    );
    let dir = tempfile::tempdir()?;
    let data_dir = dir.path().join("data");
    // The runtime `kouiki-mpi serve` runs on: the servers started in this process run on it.
    let runtime = mpi_server::runtime::builder().build()?;
    let mut rows = Vec::new();
    let (imported, probed) =
        runtime.block_on(import(&population, &data_dir, cli.batch, cli.caches()))?;
    rows.push(imported);
    if matches!(cli.command, Command::Import) {
        rows.push(probed);
    }
    if matches!(cli.command, Command::Floor) {
        let plan =
            mpi_synth::records::plan_records(&population, cli.networks, cli.events, cli.seed);
        locations::load_consents(&population, &plan, &data_dir)?;
        let tls = tempfile::tempdir()?;
        let ca = Arc::new(mpi_server::pki::CertAuthority::generate("mpi-bench CA")?);
        rows.push(runtime.block_on(async {
            let server =
                locations::Running::start(&data_dir, tls.path(), ca, true, cli.caches()).await?;
            let register =
                locations::register(&server, &population, &plan, cli.register_in_flight).await?;
            server.stop().await?;
            anyhow::Ok(register)
        })?);
        drop(runtime);
        let (measured, summary) = floor::run(
            &data_dir,
            Arc::new(population),
            Arc::new(plan),
            floor::Load {
                duration: std::time::Duration::from_secs(cli.seconds.max(1)),
                connections: cli.connections,
                concurrency: cli.concurrency,
            },
            server_flavour(&cli),
            cli.caches(),
        )?;
        rows.extend(measured);
        print_rows(&rows);
        println!("\n{summary}");
        return Ok(());
    }
    if let Command::Soak {
        duration,
        window,
        fraction,
    } = cli.command
    {
        let plan =
            mpi_synth::records::plan_records(&population, cli.networks, cli.events, cli.seed);
        locations::load_consents(&population, &plan, &data_dir)?;
        let tls = tempfile::tempdir()?;
        let ca = Arc::new(mpi_server::pki::CertAuthority::generate("mpi-bench CA")?);
        return runtime.block_on(async {
            let server =
                locations::Running::start(&data_dir, tls.path(), ca, true, cli.caches()).await?;
            let register =
                locations::register(&server, &population, &plan, cli.register_in_flight).await?;
            println!(
                "set-up: {} persons, {} locations registered in {:.1} s",
                population.persons.len(),
                register.operations,
                register.seconds
            );
            soak::run(
                &server,
                &population,
                &plan,
                std::time::Duration::from_secs(duration.max(1)),
                std::time::Duration::from_secs(window.max(1)),
                fraction.clamp(0.01, 1.0),
            )
            .await?;
            server.stop().await
        });
    }
    if matches!(cli.command, Command::Resolve | Command::All) {
        rows.push(resolve(&population, &data_dir, cli.threads)?);
    }
    let file_size = || {
        std::fs::metadata(data_dir.join("mpi.redb"))
            .map(|m| m.len())
            .unwrap_or(0)
    };
    let bytes = file_size();
    let mut extra = Vec::new();
    if matches!(cli.command, Command::Locations | Command::All) {
        let plan =
            mpi_synth::records::plan_records(&population, cli.networks, cli.events, cli.seed);
        let loading = Instant::now();
        let consents = locations::load_consents(&population, &plan, &data_dir)?;
        eprintln!(
            "record plan: {} events in {} networks; {consents} consents loaded in {:.1} s",
            plan.events.len(),
            plan.networks.len(),
            loading.elapsed().as_secs_f64()
        );
        let tls = tempfile::tempdir()?;
        let ca = Arc::new(mpi_server::pki::CertAuthority::generate("mpi-bench CA")?);
        let main_file = data_dir.join("mpi.redb");
        let allocated =
            move || -> anyhow::Result<u64> { Ok(RedbStore::open(&main_file)?.allocated_bytes()?) };
        let before = allocated.clone()()?;
        let (register, after, finds) = runtime.block_on(async {
            let server =
                locations::Running::start(&data_dir, tls.path(), ca.clone(), true, cli.caches())
                    .await?;
            let register =
                locations::register(&server, &population, &plan, cli.register_in_flight).await?;
            server.stop().await?;
            let after = tokio::task::spawn_blocking(allocated).await??;
            let duration = std::time::Duration::from_secs(cli.seconds.max(1));
            let mut finds = Vec::new();
            for _ in 0..cli.rounds.max(1) {
                for audited in [true, false] {
                    let server = locations::Running::start(
                        &data_dir,
                        tls.path(),
                        ca.clone(),
                        audited,
                        cli.caches(),
                    )
                    .await?;
                    let label = if audited {
                        "FindLocations (mTLS, consent-filtered, audit ON)"
                    } else {
                        "FindLocations (mTLS, consent-filtered, audit OFF)"
                    };
                    finds.push((
                        audited,
                        locations::find(
                            server.target(),
                            &population,
                            &plan,
                            duration,
                            cli.connections,
                            cli.concurrency,
                            label,
                        )
                        .await?,
                    ));
                    server.stop().await?;
                }
            }
            anyhow::Ok((register, after, finds))
        })?;
        let stored = register.operations.max(1);
        extra.push(format!(
            "locations: {:.0} bytes of store pages per stored location ({:.1} MiB of pages in use after registration, store file {:.1} MiB)",
            after.saturating_sub(before) as f64 / stored as f64,
            after as f64 / 1048576.0,
            file_size() as f64 / 1048576.0
        ));
        let rate = |audited: bool| {
            let runs: Vec<f64> = finds
                .iter()
                .filter(|(a, _)| *a == audited)
                .map(|(_, row)| row.operations as f64 / row.seconds)
                .collect();
            runs.iter().sum::<f64>() / runs.len().max(1) as f64
        };
        extra.push(format!(
            "audit on / audit off FindLocations throughput: {:.0} / {:.0} = {:.2}",
            rate(true),
            rate(false),
            rate(true) / rate(false).max(1.0)
        ));
        rows.push(register);
        rows.extend(finds.into_iter().map(|(_, row)| row));
    }
    print_rows(&rows);
    println!(
        "\nstore file after import: {:.1} MiB ({:.0} bytes per qualification record)",
        bytes as f64 / 1048576.0,
        bytes as f64 / population.record_count().max(1) as f64
    );
    for line in extra {
        println!("{line}");
    }
    Ok(())
}

/// Prints `rows` as a Markdown table.
fn print_rows(rows: &[Row]) {
    println!(
        "| benchmark | operations | seconds | per second | p50 ms | p99 ms | p99.9 ms | notes |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---|");
    for row in rows {
        let (p50, p99, p999) = match row.latency {
            Some(l) => (
                format!("{:.2}", l.p50 as f64 / 1000.0),
                format!("{:.2}", l.p99 as f64 / 1000.0),
                format!("{:.2}", l.p999 as f64 / 1000.0),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        println!(
            "| {} | {} | {:.2} | {:.0} | {p50} | {p99} | {p999} | {} |",
            row.name,
            row.operations,
            row.seconds,
            row.operations as f64 / row.seconds,
            row.note
        );
    }
}

/// CPU seconds this thread has used (user and system), from `/proc/thread-self/stat`.
fn thread_cpu_seconds() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat")?;
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .context("unexpected /proc/thread-self/stat")?
        .1
        .split(' ')
        .collect();
    let ticks = |index: usize| -> anyhow::Result<f64> {
        Ok(fields.get(index).context("short stat")?.parse::<f64>()?)
    };
    // utime and stime, in clock ticks of 1/100 s on Linux.
    Ok((ticks(11)? + ticks(12)?) / 100.0)
}

fn audit_events(
    head: mpi_core::audit::ChainHead,
    group: u64,
) -> Vec<mpi_core::audit::NewAuditEvent> {
    (0..group)
        .map(|i| mpi_core::audit::NewAuditEvent {
            at_micros: 1_767_225_600_000_000 + (head.sequence + i) as i64,
            principal: "clinician:1310000001".into(),
            action: "FindLocations".into(),
            purpose: 1,
            person_key: Some(mpi_core::keys::PersonKey([7; 16])),
            outcome: "OK".into(),
            count: 10,
            emergency: false,
            emergency_reason: String::new(),
            deciding_consents: vec!["0123456789abcdef0123456789abcdef".into()],
        })
        .collect()
}

/// Appends audit events in groups of 1, 4, 16 and 64, each group one durable append, and
/// prints wall and CPU time per append: through the store (the append-only log, as the audit
/// writer does) and, for comparison, as one redb transaction per group over the same three
/// tables the log is folded into (what the store did before it had the log).
fn audit_commit() -> anyhow::Result<()> {
    use mpi_core::audit::{ChainHead, chain_rows};
    use mpi_core::keys::IdentifierKey;
    use mpi_core::store::{Store, audit_codec};
    const EVENTS: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("audit");
    const HEAD: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("audit_head");
    const SUBJECTS: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("subjects");
    let dir = tempfile::tempdir()?;
    let store = RedbStore::open(&dir.path().join("mpi.redb"))?;
    let scratch = redb::Database::create(dir.path().join("scratch.redb"))?;
    println!(
        "| durable append | events per append | appends | wall µs per append | wall p50 / p99 / p99.9 µs | CPU µs per append | CPU µs per event |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for through_log in [true, false] {
        let mut head = ChainHead::EMPTY;
        for group in [1u64, 4, 16, 64] {
            let appends = 12_000 / group;
            let (wall, cpu) = (Instant::now(), thread_cpu_seconds()?);
            let mut each = Vec::with_capacity(appends as usize);
            for _ in 0..appends {
                let one = Instant::now();
                let events = audit_events(head, group);
                let (rows, next) = chain_rows(head, events.iter());
                let index: Vec<(u64, IdentifierKey)> = rows
                    .iter()
                    .map(|row| (row.sequence, IdentifierKey([row.sequence as u8; 32])))
                    .collect();
                if through_log {
                    head = store.append_audit(&rows, &index)?;
                    each.push(one.elapsed().as_micros() as u64);
                    continue;
                }
                let txn = scratch.begin_write()?;
                {
                    let mut table = txn.open_table(EVENTS)?;
                    let mut subjects = txn.open_table(SUBJECTS)?;
                    for (row, (_, subject)) in rows.iter().zip(&index) {
                        table.insert(row.sequence, audit_codec::row_value(row).as_slice())?;
                        subjects.insert(row.sequence, subject.0.as_slice())?;
                    }
                    txn.open_table(HEAD)?
                        .insert("head", audit_codec::head_value(next).as_slice())?;
                }
                txn.commit()?;
                head = next;
                each.push(one.elapsed().as_micros() as u64);
            }
            let wall = wall.elapsed().as_secs_f64();
            let cpu = thread_cpu_seconds()? - cpu;
            let latency = locations::percentiles(each);
            println!(
                "| {} | {group} | {appends} | {:.0} | {} / {} / {} | {:.0} | {:.1} |",
                if through_log {
                    "audit log (store)"
                } else {
                    "redb transaction"
                },
                wall / appends as f64 * 1e6,
                latency.p50,
                latency.p99,
                latency.p999,
                cpu / appends as f64 * 1e6,
                cpu / (appends * group) as f64 * 1e6
            );
        }
    }
    Ok(())
}
