//! `floor`: FindLocations against the transport floor, in one run. A bare tonic server with the
//! same mutual TLS and stream limits answers every FindLocations with a fixed response (a real
//! kouiki-mpi answer, captured first, so the same size); kouiki-mpi then answers the same load
//! without the audit log (what the audit log costs, measured: never how the server runs), and
//! then for real (consent-filtered, audited). The same client drives all three: 4 connections,
//! 64 in flight. Servers run on a runtime pinned to core 0 (with every thread they start: the
//! audit writer, the blocking pool), multi-thread with one worker as `kouiki-mpi serve` runs
//! unless `--one-thread-server` asks for the current-thread scheduler; the client runs on a
//! current-thread runtime pinned to core 1 (the cheapest tokio client: ~15 % more echo calls per
//! second than a one-worker multi-thread runtime, docs/benchmarks.md). Before kouiki-mpi is
//! measured, the client asks for every patient once, as `scale` does: the store's caches then
//! hold what the measurement reads, instead of filling during it.

use std::sync::Arc;

use anyhow::Context;
use std::time::Duration;

use mpi_proto::v1 as pb;
use mpi_server::pki::CertAuthority;
use mpi_synth::Population;
use mpi_synth::records::RecordPlan;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status};

use crate::Row;
use crate::locations::{self, Running};

/// A RecordLocator that answers FindLocations with a fixed response and nothing else.
struct Echo(pb::FindLocationsResponse);

#[tonic::async_trait]
impl pb::record_locator_server::RecordLocator for Echo {
    async fn register_locations(
        &self,
        _: Request<pb::RegisterLocationsRequest>,
    ) -> Result<Response<pb::RegisterLocationsResponse>, Status> {
        Err(Status::unimplemented("echo server"))
    }

    async fn withdraw_locations(
        &self,
        _: Request<pb::WithdrawLocationsRequest>,
    ) -> Result<Response<pb::WithdrawLocationsResponse>, Status> {
        Err(Status::unimplemented("echo server"))
    }

    async fn find_locations(
        &self,
        _: Request<pb::FindLocationsRequest>,
    ) -> Result<Response<pb::FindLocationsResponse>, Status> {
        Ok(Response::new(self.0.clone()))
    }
}

/// Pins the calling thread to `core` (when the machine has it). The core is named directly:
/// `core_affinity::get_core_ids` lists only the cores the calling thread may already use, and
/// a thread started from a pinned one inherits its pinning.
pub(crate) fn pin(core: usize) {
    core_affinity::set_for_current(core_affinity::CoreId { id: core });
}

/// How a pinned runtime schedules its tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// Tokio's multi-thread scheduler with one worker, set up as `kouiki-mpi serve` sets it up
    /// (`mpi_server::runtime::builder`, with one worker per core there).
    MultiThread,
    /// Tokio's current-thread scheduler, driven by a thread of its own.
    CurrentThread,
}

/// A runtime whose threads (and every thread they start) are pinned to one core.
pub struct Pinned {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _runtime: Option<tokio::runtime::Runtime>,
}

impl Pinned {
    /// A runtime of `flavour` on `core`.
    pub fn new(core: usize, flavour: Flavour) -> anyhow::Result<Self> {
        if flavour == Flavour::MultiThread {
            let runtime = mpi_server::runtime::builder()
                .worker_threads(1)
                .on_thread_start(move || pin(core))
                .build()?;
            return Ok(Self {
                handle: runtime.handle().clone(),
                stop: None,
                thread: None,
                _runtime: Some(runtime),
            });
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .on_thread_start(move || pin(core))
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("bench-core-{core}"))
            .spawn(move || {
                pin(core);
                let _ = runtime.block_on(stopped);
            })?;
        Ok(Self {
            handle,
            stop: Some(stop),
            thread: Some(thread),
            _runtime: None,
        })
    }

    /// Runs `work` on this runtime and waits for its result.
    pub fn run<T: Send + 'static>(
        &self,
        work: impl std::future::Future<Output = T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let (sender, receiver) = std::sync::mpsc::channel();
        self.handle.spawn(async move {
            let _ = sender.send(work.await);
        });
        Ok(receiver.recv()?)
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Starts the echo server on 127.0.0.1:0 with the TLS files `Running::start` wrote.
async fn start_echo(
    tls_dir: &std::path::Path,
    answer: pb::FindLocationsResponse,
) -> anyhow::Result<(String, tokio::sync::oneshot::Sender<()>)> {
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(
            std::fs::read(tls_dir.join("server.pem"))?,
            std::fs::read(tls_dir.join("server.key"))?,
        ))
        .client_ca_root(Certificate::from_pem(std::fs::read(
            tls_dir.join("ca.pem"),
        )?));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?.to_string();
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let router = Server::builder()
        .tls_config(tls)?
        .max_concurrent_streams(1024)
        .add_service(pb::record_locator_server::RecordLocatorServer::new(Echo(
            answer,
        )));
    tokio::spawn(router.serve_with_incoming_shutdown(incoming, async move {
        let _ = stopped.await;
    }));
    Ok((address, stop))
}

/// The echo floor beside `server`: captures one of its real answers (to echo: the size of a
/// typical FindLocations response), starts the echo server on `servers` with the TLS files in
/// `tls_dir` that `server` uses, drives it with `load` from `clients`, and stops it. Returns the
/// measurement and the answer's size in bytes.
pub(crate) fn echo_floor(
    server: &Arc<Running>,
    servers: &Pinned,
    clients: &Pinned,
    tls_dir: &std::path::Path,
    population: &Arc<Population>,
    plan: &Arc<RecordPlan>,
    load: &Load,
) -> anyhow::Result<(Row, usize)> {
    let answer = {
        let (server, population, plan) = (server.clone(), population.clone(), plan.clone());
        clients.run(async move { locations::one_answer(&server, &population, &plan).await })??
    };
    let size = prost::Message::encoded_len(&answer);
    let (address, stop) = {
        let tls_dir = tls_dir.to_path_buf();
        servers.run(async move { start_echo(&tls_dir, answer).await })??
    };
    let echo = server.target().elsewhere(address);
    let (population, plan) = (population.clone(), plan.clone());
    let Load {
        duration,
        connections,
        concurrency,
    } = *load;
    let floor = clients.run(async move {
        locations::find(
            &echo,
            &population,
            &plan,
            duration,
            connections,
            concurrency,
            "Echo floor: bare tonic, same mTLS, fixed FindLocations answer (server on core 0)",
        )
        .await
    })??;
    let _ = stop.send(());
    Ok((floor, size))
}

/// Asks for every patient once (so that the server's caches hold what the measurement reads),
/// then measures FindLocations against `server` under `load`.
fn warm_and_find(
    server: &Arc<Running>,
    clients: &Pinned,
    population: &Arc<Population>,
    plan: &Arc<RecordPlan>,
    load: &Load,
    label: &'static str,
) -> anyhow::Result<Row> {
    let Load {
        duration,
        connections,
        concurrency,
    } = *load;
    let warmed = {
        let (target, population, plan) =
            (server.target().clone(), population.clone(), plan.clone());
        clients.run(async move {
            locations::ask_each_once(&target, &population, &plan, connections, concurrency).await
        })??
    };
    eprintln!(
        "floor: warm-up asked for each of {} patients once in {:.1} s",
        warmed.0,
        warmed.1.as_secs_f64()
    );
    let (target, population, plan) = (server.target().clone(), population.clone(), plan.clone());
    clients.run(async move {
        locations::find(
            &target,
            &population,
            &plan,
            duration,
            connections,
            concurrency,
            label,
        )
        .await
    })?
}

/// Stops `server`, whose last handle this is.
fn stop(server: Arc<Running>, servers: &Pinned) -> anyhow::Result<()> {
    let server = Arc::into_inner(server).context("the server is still in use")?;
    servers.run(async move { server.stop().await })?
}

/// How the client loads each server.
#[derive(Clone, Copy)]
pub struct Load {
    /// How long each measurement runs.
    pub duration: Duration,
    /// Client connections.
    pub connections: usize,
    /// Calls in flight.
    pub concurrency: usize,
}

/// The two measurements and kouiki-mpi's ratio to the floor; kouiki-mpi with `cache_mib` of
/// store cache.
pub fn run(
    data_dir: &std::path::Path,
    population: Arc<Population>,
    plan: Arc<RecordPlan>,
    load: Load,
    server_flavour: Flavour,
    cache_mib: crate::Caches,
) -> anyhow::Result<(Vec<Row>, String)> {
    let servers = Pinned::new(0, server_flavour)?;
    let clients = Pinned::new(1, Flavour::CurrentThread)?;
    pin(1);
    let tls = tempfile::tempdir()?;
    let tls_dir = tls.path().to_path_buf();
    let ca = Arc::new(CertAuthority::generate("mpi-bench CA")?);
    let start = |audited: bool| {
        let (data_dir, tls_dir, ca) = (data_dir.to_path_buf(), tls_dir.clone(), ca.clone());
        servers
            .run(async move { Running::start(&data_dir, &tls_dir, ca, audited, cache_mib).await })?
            .map(Arc::new)
    };
    // The echo server answers with what this one answers; the audited server is measured
    // last, since `scripts/profile-floor.sh` profiles the last seconds of FindLocations.
    let unaudited = start(false)?;
    let (floor, size) = echo_floor(
        &unaudited,
        &servers,
        &clients,
        &tls_dir,
        &population,
        &plan,
        &load,
    )?;
    let bare = warm_and_find(
        &unaudited,
        &clients,
        &population,
        &plan,
        &load,
        "FindLocations without the audit log (its cost, measured; server on core 0)",
    )?;
    stop(unaudited, &servers)?;
    let server = start(true)?;
    let real = warm_and_find(
        &server,
        &clients,
        &population,
        &plan,
        &load,
        "FindLocations (mTLS, consent-filtered, audited; server on core 0)",
    )?;
    stop(server, &servers)?;
    let rate = |row: &Row| row.operations as f64 / row.seconds;
    let of_floor = |row: &Row| rate(row) / rate(&floor).max(1.0);
    let summary = format!(
        "FindLocations / echo floor: {:.0} / {:.0} = {:.2} (answers of {size} bytes; client on \
         core 1)\nFindLocations without the audit log / echo floor: {:.0} / {:.0} = {:.2}",
        rate(&real),
        rate(&floor),
        of_floor(&real),
        rate(&bare),
        rate(&floor),
        of_floor(&bare),
    );
    Ok((vec![floor, bare, real], summary))
}
