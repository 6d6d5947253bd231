//! `mpi-bench`: throughput of kouiki-mpi on a synthetic population, printed as a Markdown
//! table for `docs/benchmarks.md`.
//!
//! - `import`: ImportQualifications over mutual TLS against the real server (redb store,
//!   durable commits) on 127.0.0.1, the whole feed of a population in one stream.
//! - `resolve`: identity resolution as of a date, in process, on the store that import wrote.
//!
//! Run with `cargo run --release -p mpi-bench -- all --persons 100000`.

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
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// ImportQualifications over mTLS, durable.
    Import,
    /// Resolution in process (after an import).
    Resolve,
    /// Both.
    All,
}

struct Row {
    name: &'static str,
    operations: u64,
    seconds: f64,
    note: String,
}

fn horizon() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 1).unwrap_or(NaiveDate::MIN)
}

fn iso(day: NaiveDate) -> String {
    day.format("%Y-%m-%d").to_string()
}

fn wire_record(person: &Person, holding: &Holding) -> pb::QualificationRecord {
    pb::QualificationRecord {
        provider_person_ref: person.reference.clone(),
        insured_id: Some(pb::InsuredId {
            form: Some(pb::insured_id::Form::Parts(pb::InsuredIdParts {
                insurer_number: holding.insurer_number.clone(),
                symbol: holding.symbol.clone(),
                number: holding.number.clone(),
                branch: holding.branch.clone(),
            })),
        }),
        qualification_start: iso(holding.start),
        qualification_end: holding.end.map(iso).unwrap_or_default(),
        birth_date: iso(person.birth_date),
        sex: match person.sex {
            Sex::Male => pb::Sex::Male,
            Sex::Female => pb::Sex::Female,
            Sex::NotRecorded => pb::Sex::NotRecorded,
        }
        .into(),
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

/// Starts the real server on 127.0.0.1:0 over `data_dir` and imports the population's feed.
async fn import(
    population: &Population,
    data_dir: &std::path::Path,
    batch: usize,
) -> anyhow::Result<Row> {
    mpi_server::install_crypto_provider();
    let overrides = Overrides {
        listen: Some("127.0.0.1:0".into()),
        metrics_listen: Some("off".into()),
        data_dir: Some(data_dir.to_path_buf()),
        ..Default::default()
    };
    let mut config = Config::resolve(FileConfig::default(), overrides)?;
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
    let started = Instant::now();
    let summary = client.import_qualifications(messages).await?.into_inner();
    let seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        summary.accepted == records && summary.rejected == 0,
        "import was not clean: {summary:?}"
    );
    let _ = stop.send(());
    server.await??;
    Ok(Row {
        name: "ImportQualifications (mTLS, durable)",
        operations: records,
        seconds,
        note: format!(
            "{} persons, batches of {batch_size}",
            population.persons.len()
        ),
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
    })
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut rows = Vec::new();
    rows.push(runtime.block_on(import(&population, &data_dir, cli.batch))?);
    if matches!(cli.command, Command::Resolve | Command::All) {
        rows.push(resolve(&population, &data_dir, cli.threads)?);
    }
    if matches!(cli.command, Command::Import) {
        rows.truncate(1);
    }
    let bytes: u64 = std::fs::metadata(data_dir.join("mpi.redb"))
        .map(|m| m.len())
        .unwrap_or(0);
    println!("| benchmark | operations | seconds | per second | notes |");
    println!("|---|---:|---:|---:|---|");
    for row in &rows {
        println!(
            "| {} | {} | {:.2} | {:.0} | {} |",
            row.name,
            row.operations,
            row.seconds,
            row.operations as f64 / row.seconds,
            row.note
        );
    }
    println!(
        "\nstore file: {:.1} MiB ({:.0} bytes per record)",
        bytes as f64 / 1048576.0,
        bytes as f64 / population.record_count().max(1) as f64
    );
    Ok(())
}
