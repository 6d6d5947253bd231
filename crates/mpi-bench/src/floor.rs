//! `floor`: FindLocations against the transport floor, in one run. A bare tonic server with the
//! same mutual TLS and stream limits answers every FindLocations with a fixed response (a real
//! kouiki-mpi answer, captured first, so the same size); kouiki-mpi then answers the same load
//! without the audit log (what the audit log costs, measured: never how the server runs); the
//! echo server then answers once more, each call only after a record of its own is durable in a
//! log grouped as the audit log groups its events (what making an audit event durable before
//! answering costs on this machine at the least, with such a group commit: [`Echo::durable`]);
//! and kouiki-mpi answers for real (consent-filtered, audited). The same client drives all
//! four: 4 connections, 64 in flight. Servers run on a runtime pinned to core 0 (with every
//! thread they start: the audit writer, the blocking pool), multi-thread with one worker as
//! `kouiki-mpi serve` runs unless `--one-thread-server` asks for the current-thread scheduler;
//! the client runs on a current-thread runtime pinned to core 1 (the cheapest tokio client:
//! ~15 % more echo calls per second than a one-worker multi-thread runtime,
//! docs/benchmarks.md). Before kouiki-mpi is measured, the client asks for every patient once,
//! as `scale` does: the store's caches then hold what the measurement reads, instead of filling
//! during it.

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

/// A RecordLocator that answers FindLocations with a fixed response and nothing else; with a
/// durable log ([`Echo::durable`]), only once the call's record is durable in it.
struct Echo {
    answer: pb::FindLocationsResponse,
    log: Option<tokio::sync::mpsc::Sender<Append>>,
}

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
        request: Request<pb::FindLocationsRequest>,
    ) -> Result<Response<pb::FindLocationsResponse>, Status> {
        if let Some(log) = &self.log {
            // The request, to the size of an audit event's content.
            let mut content = prost::Message::encode_to_vec(request.get_ref());
            content.resize(FRAME_BYTES - FRAME_HEAD, 0);
            let (durable, done) = tokio::sync::oneshot::channel();
            let stopped = || Status::unavailable("the durable echo's log stopped");
            log.send(Append { content, durable })
                .await
                .map_err(|_| stopped())?;
            done.await.map_err(|_| stopped())?;
        }
        Ok(Response::new(self.answer.clone()))
    }
}

/// A record to make durable, and whom to tell.
struct Append {
    content: Vec<u8>,
    durable: tokio::sync::oneshot::Sender<()>,
}

/// The mean size of a FindLocations' audit frame in the audit log (length, sequence, subject,
/// both hashes, the event), measured over the log's segments after a `floor` run: 332 bytes.
const FRAME_BYTES: usize = 332;
/// A frame's bytes besides its content: length (4), sequence (8), both hashes (64).
const FRAME_HEAD: usize = 4 + 8 + 64;
/// The durable echo's log file: the audit log's segment size.
const LOG_BYTES: u64 = 32 << 20;

impl Echo {
    /// The echo of `answer` with a durable log at `path`: what the echo floor does not do and
    /// kouiki-mpi must do for every FindLocations, make an audit event durable before answering,
    /// at its least. Each call hands a record the size of a FindLocations' audit frame to a
    /// writer thread, which chains the records as the audit log does (`event_hash`), takes them
    /// in groups as the audit log does (`audit_log::Groups`), writes each group into the file,
    /// filled with zeros beforehand (so that a sync changes no metadata, as with the audit log's
    /// segments), and syncs it; then the calls answer. The records are kept nowhere else (no
    /// `audit.redb`, no disclosure index). Fills the file, durably, and starts the writer thread
    /// (on the calling thread's cores), which ends once the echo is dropped.
    fn durable(
        answer: pb::FindLocationsResponse,
        path: &std::path::Path,
    ) -> anyhow::Result<(Self, std::thread::JoinHandle<std::io::Result<()>>)> {
        let file = std::fs::File::create(path)?;
        {
            use std::io::Write as _;
            let mut zeros = std::io::BufWriter::new(&file);
            zeros.write_all(&vec![0; LOG_BYTES as usize])?;
            zeros.flush()?;
        }
        file.sync_all()?;
        let (appends, receiver) = tokio::sync::mpsc::channel(16_384);
        let writer = std::thread::Builder::new()
            .name("durable-echo".into())
            .spawn(move || write_appends(&file, receiver))?;
        Ok((
            Self {
                answer,
                log: Some(appends),
            },
            writer,
        ))
    }
}

/// The durable echo's writer: chains, writes and syncs each group, then answers its calls. A
/// failed write or sync ends it: every call waiting, and every later one, fails.
fn write_appends(
    file: &std::fs::File,
    mut receiver: tokio::sync::mpsc::Receiver<Append>,
) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt as _;
    let mut groups = mpi_server::audit_log::Groups::default();
    let mut head = mpi_core::audit::ChainHead::EMPTY;
    let (mut frames, mut offset) = (Vec::new(), 0u64);
    while let Some(group) = groups.next(&mut receiver) {
        frames.clear();
        for append in &group {
            let sequence = head.sequence + 1;
            let hash = mpi_core::audit::event_hash(&head.hash, sequence, &append.content);
            let length = u32::try_from(FRAME_HEAD - 4 + append.content.len()).unwrap_or(u32::MAX);
            frames.extend_from_slice(&length.to_le_bytes());
            frames.extend_from_slice(&sequence.to_be_bytes());
            frames.extend_from_slice(&head.hash);
            frames.extend_from_slice(&hash);
            frames.extend_from_slice(&append.content);
            head = mpi_core::audit::ChainHead { sequence, hash };
        }
        let bytes = frames.len() as u64;
        if offset + bytes > LOG_BYTES {
            // Over the file again from its start: its size never changes.
            offset = 0;
        }
        file.write_all_at(&frames, offset)?;
        file.sync_data()?;
        groups.committed();
        offset += bytes;
        for append in group {
            let _ = append.durable.send(());
        }
    }
    Ok(())
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

/// Starts an echo server (`service`) on 127.0.0.1:0 with the TLS files `Running::start` wrote;
/// returns its address, what stops it, and its task, which ends once it has stopped and
/// dropped `service`.
async fn start_echo<S: pb::record_locator_server::RecordLocator>(
    tls_dir: &std::path::Path,
    service: S,
) -> anyhow::Result<(
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
)> {
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
        .add_service(pb::record_locator_server::RecordLocatorServer::new(service));
    let served = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async move {
        let _ = stopped.await;
    }));
    Ok((address, stop, served))
}

/// What the echo servers need besides the kouiki-mpi server whose answer they echo: the TLS
/// files that server uses (in `tls_dir`), the runtimes they run on (`servers`) and the client
/// runs on (`clients`), and the load, asking for the population's patients as the service is
/// asked.
pub(crate) struct Echoes<'a> {
    pub(crate) servers: &'a Pinned,
    pub(crate) clients: &'a Pinned,
    pub(crate) tls_dir: &'a std::path::Path,
    pub(crate) population: &'a Arc<Population>,
    pub(crate) plan: &'a Arc<RecordPlan>,
    pub(crate) load: Load,
}

impl Echoes<'_> {
    /// One of `server`'s real answers, to echo: the size of a typical FindLocations response.
    fn answer(&self, server: &Arc<Running>) -> anyhow::Result<pb::FindLocationsResponse> {
        let (server, population, plan) =
            (server.clone(), self.population.clone(), self.plan.clone());
        self.clients
            .run(async move { locations::one_answer(&server, &population, &plan).await })?
    }

    /// Starts `service` as an echo server beside `server`, drives it with the load, and stops
    /// it.
    fn measure<S: pb::record_locator_server::RecordLocator>(
        &self,
        server: &Running,
        service: S,
        label: &'static str,
    ) -> anyhow::Result<Row> {
        let (address, stop, served) = {
            let tls_dir = self.tls_dir.to_path_buf();
            self.servers
                .run(async move { start_echo(&tls_dir, service).await })??
        };
        let echo = server.target().elsewhere(address);
        let measured = find(
            self.clients,
            echo,
            self.population,
            self.plan,
            &self.load,
            label,
        );
        let _ = stop.send(());
        // Stopped, and the service dropped, before this returns.
        self.servers.run(served)???;
        measured
    }

    /// The echo floor beside `server`: the bare echo server of one of its answers. Returns the
    /// measurement and the answer.
    pub(crate) fn floor(
        &self,
        server: &Arc<Running>,
    ) -> anyhow::Result<(Row, pb::FindLocationsResponse)> {
        let answer = self.answer(server)?;
        let row = self.measure(
            server,
            Echo {
                answer: answer.clone(),
                log: None,
            },
            "Echo floor: bare tonic, same mTLS, fixed FindLocations answer (server on core 0)",
        )?;
        Ok((row, answer))
    }

    /// The echo server with one durable, chained append per call before it answers
    /// ([`Echo::durable`]), its log a file in `log_dir`.
    pub(crate) fn durable(
        &self,
        server: &Running,
        answer: pb::FindLocationsResponse,
        log_dir: &std::path::Path,
    ) -> anyhow::Result<Row> {
        let path = log_dir.join("durable-echo.log");
        let (echo, writer) = {
            let path = path.clone();
            // Started from the servers' runtime, so its writer thread is on their core.
            self.servers
                .run(async move { Echo::durable(answer, &path) })??
        };
        let measured = self.measure(
            server,
            echo,
            "Echo with a durable, chained append per call (group commit; server on core 0)",
        );
        let written = writer
            .join()
            .map_err(|_| anyhow::anyhow!("the durable echo's writer panicked"))?;
        std::fs::remove_file(&path)?;
        // A failed write or sync fails the calls too: name the cause first.
        written.context("the durable echo's log")?;
        measured
    }
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
        connections,
        concurrency,
        ..
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
    find(
        clients,
        server.target().clone(),
        population,
        plan,
        load,
        label,
    )
}

/// Drives `target` with the FindLocations `load` from `clients` and measures it as `label`.
fn find(
    clients: &Pinned,
    target: locations::Target,
    population: &Arc<Population>,
    plan: &Arc<RecordPlan>,
    load: &Load,
    label: &'static str,
) -> anyhow::Result<Row> {
    let (population, plan) = (population.clone(), plan.clone());
    let Load {
        duration,
        connections,
        concurrency,
    } = *load;
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
    // The echo servers answer with what this one answers. The audited server comes last, since
    // `scripts/profile-floor.sh` reads the phases in this order: the echo floor, then
    // FindLocations without the audit log until the audited server's writer appears. The
    // durable echo runs beside the server without the audit log (idle, and writing nothing),
    // its log on the disk of the server's data.
    let unaudited = start(false)?;
    let echoes = Echoes {
        servers: &servers,
        clients: &clients,
        tls_dir: &tls_dir,
        population: &population,
        plan: &plan,
        load,
    };
    let (floor, answer) = echoes.floor(&unaudited)?;
    let size = prost::Message::encoded_len(&answer);
    let bare = warm_and_find(
        &unaudited,
        &clients,
        &population,
        &plan,
        &load,
        "FindLocations without the audit log (its cost, measured; server on core 0)",
    )?;
    let durable = echoes.durable(&unaudited, answer, data_dir)?;
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
    let of_floor = |row: &Row| {
        format!(
            "{:.0} / {:.0} = {:.2}",
            rate(row),
            rate(&floor),
            rate(row) / rate(&floor).max(1.0)
        )
    };
    let summary = format!(
        "FindLocations / echo floor: {} (answers of {size} bytes; client on core 1)\n\
         FindLocations without the audit log / echo floor: {}\n\
         Echo with a durable append per call / echo floor: {}",
        of_floor(&real),
        of_floor(&bare),
        of_floor(&durable),
    );
    Ok((vec![floor, bare, durable, real], summary))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A frame of the durable echo's log.
    struct Frame {
        sequence: u64,
        previous: [u8; 32],
        hash: [u8; 32],
        content: Vec<u8>,
    }

    /// The frames at the start of the durable echo's log, up to the zeros after them.
    fn frames(path: &std::path::Path) -> Vec<Frame> {
        let bytes = std::fs::read(path).unwrap();
        let mut found = Vec::new();
        let mut at = 0;
        loop {
            let length = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            if length == 0 {
                return found;
            }
            let frame = &bytes[at + 4..at + 4 + length];
            found.push(Frame {
                sequence: u64::from_be_bytes(frame[..8].try_into().unwrap()),
                previous: frame[8..40].try_into().unwrap(),
                hash: frame[40..72].try_into().unwrap(),
                content: frame[72..].to_vec(),
            });
            at += 4 + length;
        }
    }

    #[test]
    fn a_durable_echo_answers_each_call_once_its_record_is_in_the_log_and_chained() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let (echo, writer) = Echo::durable(pb::FindLocationsResponse::default(), &path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), LOG_BYTES);
        let log = echo.log.clone().unwrap();
        for n in 1..=3u8 {
            let (durable, done) = tokio::sync::oneshot::channel();
            let content = vec![n; FRAME_BYTES - FRAME_HEAD];
            log.blocking_send(Append { content, durable }).unwrap();
            done.blocking_recv().unwrap();
            // Written when the call is told, so in the file for any reader now.
            assert_eq!(frames(&path).len(), usize::from(n));
        }
        drop((log, echo));
        writer.join().unwrap().unwrap();
        let mut previous = mpi_core::audit::GENESIS;
        for (n, frame) in frames(&path).into_iter().enumerate() {
            let Frame {
                sequence,
                previous: before,
                hash,
                content,
            } = frame;
            assert_eq!(sequence, n as u64 + 1);
            assert_eq!(before, previous, "chained to the record before");
            assert_eq!(
                hash,
                mpi_core::audit::event_hash(&before, sequence, &content)
            );
            assert_eq!(content, vec![sequence as u8; FRAME_BYTES - FRAME_HEAD]);
            assert_eq!(4 + 8 + 64 + content.len(), FRAME_BYTES);
            previous = hash;
        }
    }
}
