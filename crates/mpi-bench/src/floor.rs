//! `floor`: FindLocations against the transport floor, in one run. A bare tonic server with the
//! same mutual TLS and stream limits answers every FindLocations with a fixed response (a real
//! kouiki-mpi answer, captured first, so the same size); kouiki-mpi then answers the same load
//! for real (consent-filtered, audited). The same client drives both: 4 connections, 64 in
//! flight. Servers run on a runtime pinned to core 0 (with every thread they start), the client
//! on a runtime pinned to core 1.

use std::sync::Arc;
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
fn pin(core: usize) {
    core_affinity::set_for_current(core_affinity::CoreId { id: core });
}

fn runtime(core: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .on_thread_start(move || pin(core))
        .build()?)
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

/// The two measurements and kouiki-mpi's ratio to the floor.
pub fn run(
    data_dir: &std::path::Path,
    population: &Population,
    plan: &RecordPlan,
    duration: Duration,
    connections: usize,
    concurrency: usize,
) -> anyhow::Result<(Vec<Row>, String)> {
    let servers = runtime(0)?;
    let clients = runtime(1)?;
    pin(1);
    let tls = tempfile::tempdir()?;
    let ca = Arc::new(CertAuthority::generate("mpi-bench CA")?);
    let server = servers.block_on(Running::start(data_dir, tls.path(), ca.clone(), true))?;
    // A real answer, to echo: the size of a typical FindLocations response.
    let answer = clients.block_on(locations::one_answer(&server, population, plan))?;
    let size = prost::Message::encoded_len(&answer);
    let (echo_address, stop_echo) = servers.block_on(start_echo(tls.path(), answer))?;
    let echo = locations::Target::new(echo_address, ca);
    let floor = clients.block_on(locations::find(
        &echo,
        population,
        plan,
        duration,
        connections,
        concurrency,
        "Echo floor: bare tonic, same mTLS, fixed FindLocations answer (server on core 0)",
    ))?;
    let _ = stop_echo.send(());
    let real = clients.block_on(locations::find(
        server.target(),
        population,
        plan,
        duration,
        connections,
        concurrency,
        "FindLocations (mTLS, consent-filtered, audited; server on core 0)",
    ))?;
    servers.block_on(server.stop())?;
    let rate = |row: &Row| row.operations as f64 / row.seconds;
    let summary = format!(
        "FindLocations / echo floor: {:.0} / {:.0} = {:.2} (answers of {size} bytes; client on core 1)",
        rate(&real),
        rate(&floor),
        rate(&real) / rate(&floor).max(1.0)
    );
    Ok((vec![floor, real], summary))
}
