//! Start-up and serving: data directory, secret, store, TLS, services, health, reflection,
//! metrics, limits, and a graceful shutdown with a bounded drain.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use mpi_core::keys::Keyer;
use mpi_core::service::Mpi;
use mpi_proto::v1 as pb;
use mpi_store_redb::RedbStore;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic_health::ServingStatus;

use crate::config::{Config, TlsSource};
use crate::metrics::{self, Metrics};
use crate::pki::{self, PkiPaths};
use crate::secret;
use crate::services::{
    AuditAdapter, ConsentAdapter, Ctx, FederationAdapter, QualificationHistoryAdapter,
    RecordLocatorAdapter,
};

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Development PKI.
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
    /// Server secret.
    #[error(transparent)]
    Secret(#[from] secret::SecretError),
    /// Store.
    #[error("store: {0}")]
    Store(#[from] mpi_core::store::StoreError),
    /// TLS material.
    #[error("tls: {0}")]
    Tls(String),
    /// Transport.
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// Reflection descriptors.
    #[error("reflection: {0}")]
    Reflection(String),
    /// I/O.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Installs the process-wide rustls crypto provider (ring), once. Calling it again is harmless.
pub fn install_crypto_provider() {
    // An error only means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Everything built from the configuration before the listener starts.
pub struct Prepared {
    config: Config,
    mpi: Mpi,
    audit: crate::audit_log::AuditLog,
    audit_writer: crate::audit_log::AuditWriter,
    tls: ServerTlsConfig,
    dev_pki: Option<(PkiPaths, bool)>,
    unaudited: bool,
    /// The store, for its read cache's metrics.
    store: Arc<RedbStore>,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Prepared(..)")
    }
}

impl Prepared {
    /// Serves without writing audit events, to measure what the audit log costs (the FindLocations
    /// benchmark runs with and without it). No configuration setting, flag or environment
    /// variable leads here: only a program that links this library and calls it, and `serve`
    /// then logs a warning at start.
    pub fn unaudited_for_benchmark(mut self) -> Self {
        self.audit = crate::audit_log::AuditLog::discarding();
        self.unaudited = true;
        self
    }

    /// The development PKI directory, when the server uses one, and whether it was created now.
    pub fn dev_pki(&self) -> Option<(&PkiPaths, bool)> {
        self.dev_pki
            .as_ref()
            .map(|(paths, created)| (paths, *created))
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }
}

fn read(path: &PathBuf) -> Result<Vec<u8>, ServerError> {
    std::fs::read(path)
        .map_err(|error| ServerError::Tls(format!("cannot read {}: {error}", path.display())))
}

/// Creates the data directory, the secret, the store and the TLS material. Blocking.
pub fn prepare(config: Config) -> Result<Prepared, ServerError> {
    pki::create_private_dir(&config.data_dir)?;
    let secret = secret::load_or_create(&config.secret_file)?;
    let store = Arc::new(RedbStore::open_with_caches(
        &config.data_dir.join("mpi.redb"),
        config.store_cache_bytes,
        config.read_cache_bytes,
    )?);
    let mpi =
        Mpi::new(store.clone(), Keyer::new(&secret)).with_emergency_access(config.emergency_access);
    let (audit, audit_writer) = crate::audit_log::AuditLog::start(mpi.store().clone())?;
    let (cert, key, client_ca, dev_pki) = match &config.tls {
        TlsSource::Files {
            cert,
            key,
            client_ca,
        } => (cert.clone(), key.clone(), client_ca.clone(), None),
        TlsSource::DevelopmentPki => {
            let paths = PkiPaths::new(config.data_dir.join("pki"));
            let created = pki::ensure_dev_pki(&paths)?;
            (
                paths.server_cert(),
                paths.server_key(),
                paths.ca_cert(),
                Some((paths, created)),
            )
        }
    };
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(read(&cert)?, read(&key)?))
        .client_ca_root(Certificate::from_pem(read(&client_ca)?))
        .timeout(Duration::from_secs(10));
    Ok(Prepared {
        config,
        mpi,
        audit,
        audit_writer,
        tls,
        dev_pki,
        unaudited: false,
        store,
    })
}

/// A TCP connection holding one of the `max_connections` permits until it closes.
struct LimitedStream {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl Connected for LimitedStream {
    type ConnectInfo = TcpConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for LimitedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for LimitedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Serves gRPC on `listener` (and metrics on `metrics_listener`) until `shutdown` completes,
/// then stops accepting, reports NOT_SERVING, and waits at most `limits.shutdown_grace` for
/// in-flight requests before closing what remains.
pub async fn serve(
    prepared: Prepared,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let Prepared {
        config,
        mpi,
        audit,
        audit_writer,
        tls,
        unaudited,
        store,
        ..
    } = prepared;
    if unaudited {
        tracing::warn!("serving WITHOUT the audit log (benchmark mode): calls leave no trace");
    }
    let limits = config.limits.clone();
    let metrics = Arc::new(Metrics::default().with_read_cache(store));
    let ctx = Ctx::new(mpi, audit, metrics.clone(), limits.clone());

    let (health, health_service) = tonic_health::server::health_reporter();
    for name in mpi_proto::SERVICE_NAMES {
        health
            .set_service_status(name, ServingStatus::Serving)
            .await;
    }
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(mpi_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|error| ServerError::Reflection(error.to_string()))?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(mpi_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|error| ServerError::Reflection(error.to_string()))?;

    let max = limits.max_message_bytes;
    macro_rules! limited {
        ($server:ty, $adapter:expr) => {
            <$server>::new($adapter)
                .max_decoding_message_size(max)
                .max_encoding_message_size(max)
        };
    }
    let router = Server::builder()
        .tls_config(tls)?
        .max_concurrent_streams(limits.max_concurrent_streams)
        .concurrency_limit_per_connection(limits.max_concurrent_streams as usize)
        .tcp_nodelay(true)
        .layer(tower::util::MapResponseLayer::new(
            crate::status::rewrite_limit_headers::<tonic::body::Body>,
        ))
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(limited!(
            pb::qualification_history_server::QualificationHistoryServer<_>,
            QualificationHistoryAdapter(ctx.clone())
        ))
        .add_service(limited!(
            pb::record_locator_server::RecordLocatorServer<_>,
            RecordLocatorAdapter(ctx.clone())
        ))
        .add_service(limited!(
            pb::federation_server::FederationServer<_>,
            FederationAdapter(ctx.clone())
        ))
        .add_service(limited!(
            pb::consent_server::ConsentServer<_>,
            ConsentAdapter(ctx.clone())
        ))
        .add_service(limited!(
            pb::audit_server::AuditServer<_>,
            AuditAdapter(ctx)
        ));

    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let incoming = TcpListenerStream::new(listener).then(move |accepted| {
        let connections = connections.clone();
        async move {
            let stream = accepted?;
            // The builder's `tcp_nodelay` applies only to listeners tonic binds itself; without
            // it here, small answers wait for the peer's delayed ACK (about 40 ms each).
            stream.set_nodelay(true)?;
            // Waiting here leaves further connections in the listen backlog.
            let permit = connections
                .acquire_owned()
                .await
                .map_err(io::Error::other)?;
            Ok::<_, io::Error>(LimitedStream {
                stream,
                _permit: permit,
            })
        }
    });

    let (stop_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let drain_started = stop_tx.subscribe();
    let mut metrics_stop = stop_tx.subscribe();
    let metrics_task = metrics_listener.map(|listener| {
        tokio::spawn(metrics::serve(listener, metrics, async move {
            let _ = metrics_stop.recv().await;
        }))
    });
    let signal = {
        let health = health.clone();
        async move {
            shutdown.await;
            tracing::info!("shutdown requested; draining");
            for name in mpi_proto::SERVICE_NAMES {
                health
                    .set_service_status(name, ServingStatus::NotServing)
                    .await;
            }
            health
                .set_service_status("", ServingStatus::NotServing)
                .await;
            let _ = stop_tx.send(());
        }
    };
    let grace = limits.shutdown_grace;
    let deadline = async move {
        let mut drain_started = drain_started;
        let _ = drain_started.recv().await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        served = router.serve_with_incoming_shutdown(incoming, signal) => served?,
        () = deadline => tracing::warn!(grace_secs = grace.as_secs(), "drain deadline passed; closing remaining connections"),
    }
    if let Some(task) = metrics_task {
        match tokio::time::timeout(Duration::from_secs(2), task).await {
            Ok(Ok(Err(error))) => {
                tracing::warn!(error = %error, "metrics endpoint stopped with an error")
            }
            Ok(_) => {}
            Err(_) => tracing::warn!("metrics endpoint did not stop in time"),
        }
    }
    // Every request handler is gone with the router; the writer then commits what is left,
    // releases the store and ends.
    if !audit_writer.join(Duration::from_secs(5)).await {
        tracing::warn!("the audit writer did not finish within 5 s");
    }
    tracing::info!("server stopped");
    Ok(())
}
