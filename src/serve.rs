//! `kouiki-mpi serve` and `kouiki-mpi dev-pki`: start-up in the order tracing → validated config
//! (exit 64 on a bad setting) → crypto provider → build → serve → SIGTERM/SIGINT → bounded drain.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use mpi_server::config::{Config, ConfigError, FileConfig, LogFormat, Overrides};
use mpi_server::pki::{self, DEV_CLIENTS, PkiPaths};

/// EX_USAGE: the configuration is wrong.
const EXIT_CONFIG: u8 = 64;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML configuration file (see deploy/kouiki-mpi.toml).
    #[arg(long, env = "KOUIKI_MPI_CONFIG")]
    config: Option<PathBuf>,
    /// gRPC listen address [default: 127.0.0.1:50051].
    #[arg(long, env = "KOUIKI_MPI_LISTEN")]
    listen: Option<String>,
    /// Data directory: store, secret, development PKI [default: ./data].
    #[arg(long, env = "KOUIKI_MPI_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Prometheus endpoint address, or "off" [default: 127.0.0.1:9464].
    #[arg(long, env = "KOUIKI_MPI_METRICS_LISTEN")]
    metrics_listen: Option<String>,
    /// Identifier-hashing secret file [default: DATA_DIR/secret.key].
    #[arg(long, env = "KOUIKI_MPI_SECRET_FILE")]
    secret_file: Option<PathBuf>,
    /// Production mode: requires --tls-cert, --tls-key and --tls-client-ca; refuses the development PKI.
    #[arg(long, env = "KOUIKI_MPI_PRODUCTION")]
    production: Option<bool>,
    /// Log format: text or json [default: text].
    #[arg(long, env = "KOUIKI_MPI_LOG_FORMAT")]
    log_format: Option<String>,
    /// Server certificate chain (PEM).
    #[arg(long, env = "KOUIKI_MPI_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// Server private key (PEM).
    #[arg(long, env = "KOUIKI_MPI_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// CA certificates that client certificates must chain to (PEM).
    #[arg(long, env = "KOUIKI_MPI_TLS_CLIENT_CA")]
    tls_client_ca: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DevPkiArgs {
    /// Data directory [default: ./data].
    #[arg(long, env = "KOUIKI_MPI_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
}

fn load_config(args: ServeArgs) -> Result<Config, ConfigError> {
    let file = match &args.config {
        Some(path) => Config::read_file(path)?,
        None => FileConfig::default(),
    };
    let overrides = Overrides {
        listen: args.listen,
        data_dir: args.data_dir,
        metrics_listen: args.metrics_listen,
        secret_file: args.secret_file,
        production: args.production,
        log_format: args.log_format,
        tls_cert: args.tls_cert,
        tls_key: args.tls_key,
        tls_client_ca: args.tls_client_ca,
    };
    Config::resolve(file, overrides)
}

/// The process's log, on standard error (`mpi_server::logging`).
fn init_tracing(format: LogFormat) {
    use std::io::IsTerminal;
    // Colours only for a person at a terminal; files and journald get plain text.
    let ansi = std::io::stderr().is_terminal();
    mpi_server::logging::install(format, std::io::stderr, ansi);
}

fn print_dev_pki(paths: &PkiPaths, created: bool) {
    let verb = if created { "created" } else { "using" };
    println!(
        "development PKI {verb} in {} (not for production)",
        paths.dir.display()
    );
    println!("  CA certificate: {}", paths.ca_cert().display());
    for (alias, uri) in DEV_CLIENTS {
        println!(
            "  client {alias:<17} {} ({uri})",
            paths.client_cert(alias).display()
        );
    }
}

/// `kouiki-mpi serve`.
pub fn run(args: ServeArgs) -> ExitCode {
    let config = match load_config(args) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("kouiki-mpi: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    init_tracing(config.log_format);
    mpi_server::install_crypto_provider();
    tracing::info!(
        allocator_retains_freed_memory = mpi_alloc::retains_freed_memory(),
        scheduler_lifo_slot_disabled = mpi_server::runtime::LIFO_SLOT_DISABLED,
        "process settings"
    );
    if !mpi_server::runtime::LIFO_SLOT_DISABLED {
        tracing::warn!(
            "built without `--cfg tokio_unstable` (set by .cargo/config.toml; a RUSTFLAGS \
             variable replaces it): answers are written one at a time, at a cost in throughput"
        );
    }
    let runtime = match mpi_server::runtime::builder().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("kouiki-mpi: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(serve(config))
}

async fn serve(config: Config) -> ExitCode {
    let listen = config.listen;
    let metrics_listen = config.metrics_listen;
    let prepared = match tokio::task::spawn_blocking(move || mpi_server::prepare(config)).await {
        Ok(Ok(prepared)) => prepared,
        Ok(Err(error)) => {
            eprintln!("kouiki-mpi: {error}");
            return ExitCode::FAILURE;
        }
        Err(error) => {
            eprintln!("kouiki-mpi: start-up failed: {error}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("kouiki-mpi: invalid setting `listen`: cannot bind {listen}: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let metrics_listener = match metrics_listen {
        None => None,
        Some(address) => match tokio::net::TcpListener::bind(address).await {
            Ok(listener) => Some(listener),
            Err(error) => {
                eprintln!(
                    "kouiki-mpi: invalid setting `metrics_listen`: cannot bind {address}: {error}"
                );
                return ExitCode::from(EXIT_CONFIG);
            }
        },
    };
    if let Some((paths, created)) = prepared.dev_pki() {
        print_dev_pki(paths, created);
    }
    let bound = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    println!("kouiki-mpi listening on {bound} (gRPC, mutual TLS)");
    if let Some(listener) = &metrics_listener {
        let address = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        println!("metrics on http://{address}/metrics");
    }
    match mpi_server::serve(prepared, listener, metrics_listener, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("kouiki-mpi: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut terminate), Ok(mut interrupt)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the server with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM received"),
        _ = interrupt.recv() => tracing::info!("SIGINT received"),
    }
}

/// `kouiki-mpi dev-pki`.
pub fn dev_pki(args: DevPkiArgs) -> ExitCode {
    let paths = PkiPaths::new(args.data_dir.join("pki"));
    if let Err(error) = pki::create_private_dir(&args.data_dir)
        .and_then(|()| pki::ensure_dev_pki(&paths).map(|created| print_dev_pki(&paths, created)))
    {
        eprintln!("kouiki-mpi: {error}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
