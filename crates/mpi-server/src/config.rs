//! Server configuration: defaults, then a TOML file, then environment and flags; validated once
//! at start. A bad setting is named in the error and the binary exits with 64 (EX_USAGE).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// A setting that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid setting `{setting}`: {problem}")]
pub struct ConfigError {
    /// The setting's name as written in the TOML file.
    pub setting: String,
    /// What is wrong with it.
    pub problem: String,
}

impl ConfigError {
    fn new(setting: &str, problem: impl Into<String>) -> Self {
        Self {
            setting: setting.to_owned(),
            problem: problem.into(),
        }
    }
}

/// The TOML file's shape; every field optional, unknown fields rejected.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `listen`.
    pub listen: Option<String>,
    /// `data_dir`.
    pub data_dir: Option<PathBuf>,
    /// `metrics_listen`.
    pub metrics_listen: Option<String>,
    /// `secret_file`.
    pub secret_file: Option<PathBuf>,
    /// `production`.
    pub production: Option<bool>,
    /// `log_format`.
    pub log_format: Option<String>,
    /// `[tls]`.
    #[serde(default)]
    pub tls: TlsFileConfig,
    /// `[limits]`.
    #[serde(default)]
    pub limits: LimitsFileConfig,
    /// `[consent]`.
    #[serde(default)]
    pub consent: ConsentFileConfig,
    /// `[store]`.
    #[serde(default)]
    pub store: StoreFileConfig,
}

/// `[store]` of the TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreFileConfig {
    /// `store.cache_mib`.
    pub cache_mib: Option<u64>,
    /// `store.read_cache_mib`.
    pub read_cache_mib: Option<u64>,
}

/// `[consent]` of the TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentFileConfig {
    /// `consent.emergency_access`.
    pub emergency_access: Option<bool>,
}

/// `[tls]` of the TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFileConfig {
    /// `tls.cert`.
    pub cert: Option<PathBuf>,
    /// `tls.key`.
    pub key: Option<PathBuf>,
    /// `tls.client_ca`.
    pub client_ca: Option<PathBuf>,
}

/// `[limits]` of the TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFileConfig {
    /// `limits.max_message_bytes`.
    pub max_message_bytes: Option<u64>,
    /// `limits.max_batch_items`.
    pub max_batch_items: Option<u64>,
    /// `limits.import_commit_records`.
    pub import_commit_records: Option<u64>,
    /// `limits.max_concurrent_streams`.
    pub max_concurrent_streams: Option<u64>,
    /// `limits.max_connections`.
    pub max_connections: Option<u64>,
    /// `limits.request_timeout_secs`.
    pub request_timeout_secs: Option<u64>,
    /// `limits.shutdown_grace_secs`.
    pub shutdown_grace_secs: Option<u64>,
}

/// Values from the environment and the command line; they override the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--listen` / `KOUIKI_MPI_LISTEN`.
    pub listen: Option<String>,
    /// `--data-dir` / `KOUIKI_MPI_DATA_DIR`.
    pub data_dir: Option<PathBuf>,
    /// `--metrics-listen` / `KOUIKI_MPI_METRICS_LISTEN`.
    pub metrics_listen: Option<String>,
    /// `--secret-file` / `KOUIKI_MPI_SECRET_FILE`.
    pub secret_file: Option<PathBuf>,
    /// `--production` / `KOUIKI_MPI_PRODUCTION`.
    pub production: Option<bool>,
    /// `--log-format` / `KOUIKI_MPI_LOG_FORMAT`.
    pub log_format: Option<String>,
    /// `--tls-cert` / `KOUIKI_MPI_TLS_CERT`.
    pub tls_cert: Option<PathBuf>,
    /// `--tls-key` / `KOUIKI_MPI_TLS_KEY`.
    pub tls_key: Option<PathBuf>,
    /// `--tls-client-ca` / `KOUIKI_MPI_TLS_CLIENT_CA`.
    pub tls_client_ca: Option<PathBuf>,
}

/// Where the TLS material comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSource {
    /// Operator-issued files.
    Files {
        /// Server certificate chain (PEM).
        cert: PathBuf,
        /// Server private key (PEM).
        key: PathBuf,
        /// CA certificates that client certificates must chain to (PEM).
        client_ca: PathBuf,
    },
    /// A development PKI created in `data_dir/pki` on first start.
    DevelopmentPki,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Limits that protect the server from heavy or hostile callers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest decoded gRPC message.
    pub max_message_bytes: usize,
    /// Most items in one batch (records per import message, locations per registration).
    pub max_batch_items: usize,
    /// Records of an import stream committed together (memory per stream grows with it; so does
    /// throughput, as the store grows). The store lets waiting writers in during a long one.
    pub import_commit_records: usize,
    /// HTTP/2 concurrent streams per connection.
    pub max_concurrent_streams: u32,
    /// Open connections; further ones wait in the listen backlog.
    pub max_connections: usize,
    /// Deadline of a unary request, and the longest wait for the next message of a stream.
    pub request_timeout: Duration,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: 4 * 1024 * 1024,
            max_batch_items: 1000,
            import_commit_records: 250_000,
            max_concurrent_streams: 128,
            max_connections: 1024,
            request_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// gRPC listen address.
    pub listen: SocketAddr,
    /// Data directory (store, secret, development PKI).
    pub data_dir: PathBuf,
    /// Prometheus endpoint address; `None` when disabled.
    pub metrics_listen: Option<SocketAddr>,
    /// The identifier-hashing secret's file.
    pub secret_file: PathBuf,
    /// Production mode: TLS files required, development PKI refused.
    pub production: bool,
    /// TLS material.
    pub tls: TlsSource,
    /// Log format.
    pub log_format: LogFormat,
    /// Limits.
    pub limits: Limits,
    /// The emergency purpose may stand in for a missing disclosure grant (with a stated
    /// reason, audited as emergency; never against an opt-out). Off by default.
    pub emergency_access: bool,
    /// Bytes of the main store files' page caches (three quarters for `mpi.redb`, a quarter for
    /// `location-index.redb`; the audit files have small fixed caches).
    pub store_cache_bytes: usize,
    /// Bytes (about) of decoded results of the store's hot reads (qualifications, persons,
    /// members, unrevoked consents and locations); zero: none.
    pub read_cache_bytes: u64,
}

/// Default `store.cache_mib`.
pub const DEFAULT_STORE_CACHE_MIB: u64 = 1024;
/// Default `store.read_cache_mib`.
pub const DEFAULT_READ_CACHE_MIB: u64 = 256;

/// Default gRPC address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
/// Default metrics address.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9464";

fn address(setting: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| {
        ConfigError::new(
            setting,
            format!("\"{value}\" is not an IP address and port"),
        )
    })
}

fn bounded(
    setting: &str,
    value: Option<u64>,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    let value = value.unwrap_or(default);
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(ConfigError::new(
            setting,
            format!("must be between {min} and {max}, found {value}"),
        ))
    }
}

impl Config {
    /// Reads the TOML file at `path`.
    pub fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| {
            ConfigError::new("config", format!("cannot read {}: {error}", path.display()))
        })?;
        toml::from_str(&text).map_err(|error| ConfigError::new("config", error.to_string()))
    }

    /// Layers defaults, the file and the overrides, and validates the result.
    pub fn resolve(file: FileConfig, overrides: Overrides) -> Result<Self, ConfigError> {
        let listen = overrides
            .listen
            .or(file.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        let listen = address("listen", &listen)?;
        let data_dir = overrides
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("./data"));
        if data_dir.as_os_str().is_empty() {
            return Err(ConfigError::new("data_dir", "must not be empty"));
        }
        let metrics = overrides
            .metrics_listen
            .or(file.metrics_listen)
            .unwrap_or_else(|| DEFAULT_METRICS_LISTEN.to_owned());
        let metrics_listen = match metrics.as_str() {
            "off" => None,
            value => Some(address("metrics_listen", value)?),
        };
        let secret_file = overrides
            .secret_file
            .or(file.secret_file)
            .unwrap_or_else(|| data_dir.join("secret.key"));
        let production = overrides.production.or(file.production).unwrap_or(false);
        let log_format = match overrides.log_format.or(file.log_format).as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(ConfigError::new(
                    "log_format",
                    format!("must be \"text\" or \"json\", found \"{other}\""),
                ));
            }
        };
        let cert = overrides.tls_cert.or(file.tls.cert);
        let key = overrides.tls_key.or(file.tls.key);
        let client_ca = overrides.tls_client_ca.or(file.tls.client_ca);
        let tls = match (cert, key, client_ca) {
            (None, None, None) if production => {
                return Err(ConfigError::new(
                    "tls",
                    "production mode needs tls.cert, tls.key and tls.client_ca; the development PKI is refused",
                ));
            }
            (None, None, None) => TlsSource::DevelopmentPki,
            (Some(cert), Some(key), Some(client_ca)) => {
                for (setting, path) in [
                    ("tls.cert", &cert),
                    ("tls.key", &key),
                    ("tls.client_ca", &client_ca),
                ] {
                    if !path.is_file() {
                        return Err(ConfigError::new(
                            setting,
                            format!("{} is not a readable file", path.display()),
                        ));
                    }
                }
                TlsSource::Files {
                    cert,
                    key,
                    client_ca,
                }
            }
            (cert, key, _) => {
                let missing = if cert.is_none() {
                    "tls.cert"
                } else if key.is_none() {
                    "tls.key"
                } else {
                    "tls.client_ca"
                };
                return Err(ConfigError::new(
                    missing,
                    "tls.cert, tls.key and tls.client_ca go together: set all three or none",
                ));
            }
        };
        let l = file.limits;
        let defaults = Limits::default();
        let limits = Limits {
            max_message_bytes: bounded(
                "limits.max_message_bytes",
                l.max_message_bytes,
                defaults.max_message_bytes as u64,
                1024,
                64 * 1024 * 1024,
            )? as usize,
            max_batch_items: bounded(
                "limits.max_batch_items",
                l.max_batch_items,
                defaults.max_batch_items as u64,
                1,
                10_000,
            )? as usize,
            import_commit_records: bounded(
                "limits.import_commit_records",
                l.import_commit_records,
                defaults.import_commit_records as u64,
                1,
                1_000_000,
            )? as usize,
            max_concurrent_streams: bounded(
                "limits.max_concurrent_streams",
                l.max_concurrent_streams,
                u64::from(defaults.max_concurrent_streams),
                1,
                10_000,
            )? as u32,
            max_connections: bounded(
                "limits.max_connections",
                l.max_connections,
                defaults.max_connections as u64,
                1,
                100_000,
            )? as usize,
            request_timeout: Duration::from_secs(bounded(
                "limits.request_timeout_secs",
                l.request_timeout_secs,
                defaults.request_timeout.as_secs(),
                1,
                3600,
            )?),
            shutdown_grace: Duration::from_secs(bounded(
                "limits.shutdown_grace_secs",
                l.shutdown_grace_secs,
                defaults.shutdown_grace.as_secs(),
                0,
                600,
            )?),
        };
        Ok(Self {
            listen,
            data_dir,
            metrics_listen,
            secret_file,
            production,
            tls,
            log_format,
            limits,
            emergency_access: file.consent.emergency_access.unwrap_or(false),
            store_cache_bytes: (bounded(
                "store.cache_mib",
                file.store.cache_mib,
                DEFAULT_STORE_CACHE_MIB,
                16,
                1 << 20,
            )? << 20) as usize,
            read_cache_bytes: bounded(
                "store.read_cache_mib",
                file.store.read_cache_mib,
                DEFAULT_READ_CACHE_MIB,
                0,
                1 << 20,
            )? << 20,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn file(text: &str) -> FileConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn defaults_are_loopback_and_development_pki() {
        let config = Config::resolve(FileConfig::default(), Overrides::default()).unwrap();
        assert_eq!(config.listen, DEFAULT_LISTEN.parse().unwrap());
        assert_eq!(config.data_dir, PathBuf::from("./data"));
        assert_eq!(config.tls, TlsSource::DevelopmentPki);
        assert_eq!(config.secret_file, PathBuf::from("./data/secret.key"));
        assert_eq!(config.limits, Limits::default());
    }

    #[test]
    fn overrides_beat_the_file() {
        let overrides = Overrides {
            listen: Some("127.0.0.1:7000".into()),
            ..Default::default()
        };
        let config = Config::resolve(
            file("listen = \"127.0.0.1:6000\"\nmetrics_listen = \"off\""),
            overrides,
        )
        .unwrap();
        assert_eq!(config.listen.port(), 7000);
        assert_eq!(config.metrics_listen, None);
    }

    #[test]
    fn the_example_configuration_parses_and_states_the_defaults() {
        let example: FileConfig =
            toml::from_str(include_str!("../../../deploy/kouiki-mpi.toml")).unwrap();
        let defaults = Limits::default();
        let limits = &example.limits;
        assert_eq!(
            limits.max_message_bytes,
            Some(defaults.max_message_bytes as u64)
        );
        assert_eq!(
            limits.max_batch_items,
            Some(defaults.max_batch_items as u64)
        );
        assert_eq!(
            limits.import_commit_records,
            Some(defaults.import_commit_records as u64)
        );
        assert_eq!(
            limits.max_concurrent_streams,
            Some(u64::from(defaults.max_concurrent_streams))
        );
        assert_eq!(
            limits.max_connections,
            Some(defaults.max_connections as u64)
        );
        assert_eq!(
            limits.request_timeout_secs,
            Some(defaults.request_timeout.as_secs())
        );
        assert_eq!(
            limits.shutdown_grace_secs,
            Some(defaults.shutdown_grace.as_secs())
        );
        assert_eq!(example.listen.as_deref(), Some(DEFAULT_LISTEN));
        assert_eq!(
            example.metrics_listen.as_deref(),
            Some(DEFAULT_METRICS_LISTEN)
        );
        assert_eq!(example.production, Some(true));
        assert_eq!(example.store.cache_mib, Some(DEFAULT_STORE_CACHE_MIB));
        assert_eq!(example.store.read_cache_mib, Some(DEFAULT_READ_CACHE_MIB));
    }

    #[test]
    fn the_read_cache_is_on_by_default_and_may_be_off() {
        let config = Config::resolve(FileConfig::default(), Overrides::default()).unwrap();
        assert_eq!(config.read_cache_bytes, DEFAULT_READ_CACHE_MIB << 20);
        let config =
            Config::resolve(file("[store]\nread_cache_mib = 0"), Overrides::default()).unwrap();
        assert_eq!(config.read_cache_bytes, 0);
    }

    #[test]
    fn bad_settings_are_named() {
        let err = Config::resolve(file("[limits]\nmax_batch_items = 0"), Overrides::default())
            .unwrap_err();
        assert_eq!(err.setting, "limits.max_batch_items");
        let err = Config::resolve(
            file("[limits]\nimport_commit_records = 1000001"),
            Overrides::default(),
        )
        .unwrap_err();
        assert_eq!(err.setting, "limits.import_commit_records");
        let err = Config::resolve(file("listen = \"nowhere\""), Overrides::default()).unwrap_err();
        assert_eq!(err.setting, "listen");
        let err = Config::resolve(file("production = true"), Overrides::default()).unwrap_err();
        assert_eq!(err.setting, "tls");
        let err = Config::resolve(file("[tls]\ncert = \"/x\""), Overrides::default()).unwrap_err();
        assert_eq!(err.setting, "tls.key");
        let err = Config::resolve(file("log_format = \"xml\""), Overrides::default()).unwrap_err();
        assert_eq!(err.setting, "log_format");
        let err = Config::resolve(
            file("[store]\nread_cache_mib = 1048577"),
            Overrides::default(),
        )
        .unwrap_err();
        assert_eq!(err.setting, "store.read_cache_mib");
        assert!(
            toml::from_str::<FileConfig>("lisen = \"x\"").is_err(),
            "unknown keys are rejected"
        );
    }
}
