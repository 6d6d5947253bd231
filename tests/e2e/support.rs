//! The test harness: `TestServer::start()` runs the real server in process on port 0 with a
//! fresh data directory and development PKI; helpers connect as each development client.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use mpi_proto::v1 as pb;
use mpi_server::client::{ClientIdentity, connect};
use mpi_server::config::{Config, FileConfig, Overrides};
use mpi_server::pki::PkiPaths;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

pub use pb::qualification_history_client::QualificationHistoryClient;

/// A running server and its data directory.
pub struct TestServer {
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    /// The development PKI, unless the test configured TLS files.
    pub pki: Option<PkiPaths>,
    data_dir: TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), mpi_server::ServerError>>>,
}

impl TestServer {
    /// Starts a server with the default limits.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts a server after `tune` adjusts its configuration.
    pub async fn start_with(tune: impl FnOnce(&mut Config)) -> Self {
        Self::start_in(tempfile::tempdir().unwrap(), tune).await
    }

    /// Starts a server on an existing data directory (a restart when it was used before).
    pub async fn start_in(data_dir: TempDir, tune: impl FnOnce(&mut Config)) -> Self {
        mpi_server::install_crypto_provider();
        let overrides = Overrides {
            listen: Some("127.0.0.1:0".into()),
            metrics_listen: Some("127.0.0.1:0".into()),
            data_dir: Some(data_dir.path().join("data")),
            ..Default::default()
        };
        let mut config = Config::resolve(FileConfig::default(), overrides).unwrap();
        tune(&mut config);
        let listener = tokio::net::TcpListener::bind(config.listen).await.unwrap();
        let metrics_listener = tokio::net::TcpListener::bind(config.metrics_listen.unwrap())
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics_addr = metrics_listener.local_addr().unwrap();
        let prepared = tokio::task::spawn_blocking(move || mpi_server::prepare(config))
            .await
            .unwrap()
            .unwrap();
        let pki = prepared.dev_pki().map(|(paths, _)| paths.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(mpi_server::serve(
            prepared,
            listener,
            Some(metrics_listener),
            async move {
                let _ = stopped.await;
            },
        ));
        Self {
            addr,
            metrics_addr,
            pki,
            data_dir,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Starts a server whose TLS files come from `ca` (the configured-files path of production).
    pub async fn start_with_ca(ca: &mpi_server::pki::CertAuthority) -> (Self, TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let server_cert = ca.issue_server().unwrap();
        let paths = [
            ("ca.pem", ca.cert_pem()),
            ("server.pem", server_cert.cert_pem),
            ("server.key", server_cert.key_pem),
        ];
        for (name, contents) in &paths {
            std::fs::write(dir.path().join(name), contents).unwrap();
        }
        let tls = mpi_server::config::TlsSource::Files {
            cert: dir.path().join("server.pem"),
            key: dir.path().join("server.key"),
            client_ca: dir.path().join("ca.pem"),
        };
        let server = Self::start_with(|config| config.tls = tls).await;
        (server, dir)
    }

    /// The data directory (its `pki/` is what `kouiki-mpi ctl --data-dir` reads).
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.path().join("data")
    }

    /// The identity of a development client (`operator`, `network-a`, …).
    pub fn identity(&self, alias: &str) -> ClientIdentity {
        ClientIdentity::from_dev_pki(self.pki.as_ref().expect("development PKI"), alias).unwrap()
    }

    /// A channel as a development client.
    pub async fn channel(&self, alias: &str) -> Channel {
        connect(&self.addr.to_string(), &self.identity(alias))
            .await
            .unwrap()
    }

    /// The QualificationHistory client of a development client.
    pub async fn history(&self, alias: &str) -> QualificationHistoryClient<Channel> {
        QualificationHistoryClient::new(self.channel(alias).await)
    }

    /// Stops the server gracefully and returns its data directory for inspection.
    pub async fn stop(mut self) -> TempDir {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
        // The directory outlives the server only through the returned handle.
        let dir = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.data_dir, dir)
    }

    /// GET /metrics over plain HTTP/1.1.
    pub async fn metrics(&self) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(self.metrics_addr)
            .await
            .unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// An insured ID in parts.
pub fn insured(insurer: &str, symbol: &str, number: &str, branch: &str) -> pb::InsuredId {
    pb::InsuredId {
        form: Some(pb::insured_id::Form::Parts(pb::InsuredIdParts {
            insurer_number: insurer.into(),
            symbol: symbol.into(),
            number: number.into(),
            branch: branch.into(),
        })),
    }
}

/// An insured ID in the one-string form.
pub fn member(member_id: &str) -> pb::InsuredId {
    pb::InsuredId {
        form: Some(pb::insured_id::Form::MemberId(member_id.into())),
    }
}

/// A qualification record.
pub fn record(
    person: &str,
    insured_id: pb::InsuredId,
    start: &str,
    end: &str,
    birth_date: &str,
    sex: pb::Sex,
) -> pb::QualificationRecord {
    pb::QualificationRecord {
        provider_person_ref: person.into(),
        insured_id: Some(insured_id),
        qualification_start: start.into(),
        qualification_end: end.into(),
        birth_date: birth_date.into(),
        sex: sex.into(),
        reason_of_loss: pb::ReasonOfLoss::Unspecified.into(),
    }
}

/// Imports records in one message and returns the summary.
pub async fn import(
    client: &mut QualificationHistoryClient<Channel>,
    records: Vec<pb::QualificationRecord>,
) -> pb::ImportQualificationsResponse {
    let messages = vec![pb::ImportQualificationsRequest { records }];
    client
        .import_qualifications(tokio_stream::iter(messages))
        .await
        .unwrap()
        .into_inner()
}

/// An insured ID (with optional demographics) as of a date.
pub fn at(insured_id: pb::InsuredId, as_of: &str) -> pb::InsuredIdAtDate {
    pb::InsuredIdAtDate {
        patient: Some(pb::InsuredPatient {
            insured_id: Some(insured_id),
            birth_date: String::new(),
            sex: 0,
        }),
        as_of: as_of.into(),
    }
}

/// The same with birth date and sex.
pub fn at_with(
    insured_id: pb::InsuredId,
    as_of: &str,
    birth_date: &str,
    sex: pb::Sex,
) -> pb::InsuredIdAtDate {
    pb::InsuredIdAtDate {
        patient: Some(pb::InsuredPatient {
            insured_id: Some(insured_id),
            birth_date: birth_date.into(),
            sex: sex.into(),
        }),
        as_of: as_of.into(),
    }
}

/// AreSamePerson's answer, or the status.
pub async fn same(
    client: &mut QualificationHistoryClient<Channel>,
    first: pb::InsuredIdAtDate,
    second: pb::InsuredIdAtDate,
) -> Result<pb::SamePersonAnswer, tonic::Status> {
    let request = pb::AreSamePersonRequest {
        first: Some(first),
        second: Some(second),
        purpose: pb::Purpose::IdentityManagement.into(),
    };
    client
        .are_same_person(request)
        .await
        .map(|r| r.into_inner().answer())
}

/// The field violations of an INVALID_ARGUMENT status, as (field, description).
pub fn violations(status: &tonic::Status) -> Vec<(String, String)> {
    use tonic_types::StatusExt;
    status
        .get_details_bad_request()
        .map(|bad| {
            bad.field_violations
                .into_iter()
                .map(|v| (v.field, v.description))
                .collect()
        })
        .unwrap_or_default()
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path)
            } else {
                files.push(path)
            }
        }
    }
    files
}

/// A date as the API writes it.
pub fn iso(day: chrono::NaiveDate) -> String {
    day.format("%Y-%m-%d").to_string()
}

/// The wire form of a domain sex.
pub fn wire_sex(sex: mpi_core::qualification::Sex) -> pb::Sex {
    use mpi_core::qualification::Sex;
    match sex {
        Sex::Male => pb::Sex::Male,
        Sex::Female => pb::Sex::Female,
        Sex::NotRecorded => pb::Sex::NotRecorded,
    }
}

/// The insured ID of a synthetic holding, as the feed writes it.
pub fn synth_insured(holding: &mpi_synth::Holding) -> pb::InsuredId {
    insured(
        &holding.insurer_number,
        &holding.symbol,
        &holding.number,
        &holding.branch,
    )
}

/// A synthetic holding's insured ID, with the person's birth date and sex, as of `day`.
pub fn synth_at(
    person: &mpi_synth::Person,
    holding: &mpi_synth::Holding,
    day: chrono::NaiveDate,
) -> pb::InsuredIdAtDate {
    at_with(
        synth_insured(holding),
        &iso(day),
        &iso(person.birth_date),
        wire_sex(person.sex),
    )
}

/// The feed record of one synthetic holding.
pub fn synth_record(
    person: &mpi_synth::Person,
    holding: &mpi_synth::Holding,
) -> pb::QualificationRecord {
    let reason = match holding.reason_of_loss.map(|r| r.code()) {
        Some(1) => pb::ReasonOfLoss::Death,
        Some(2) => pb::ReasonOfLoss::Welfare,
        Some(3) => pb::ReasonOfLoss::OtherInsurance,
        Some(_) => pb::ReasonOfLoss::Other,
        None => pb::ReasonOfLoss::Unspecified,
    };
    pb::QualificationRecord {
        reason_of_loss: reason.into(),
        ..record(
            &person.reference,
            synth_insured(holding),
            &iso(holding.start),
            &holding.end.map(iso).unwrap_or_default(),
            &iso(person.birth_date),
            wire_sex(person.sex),
        )
    }
}

/// Imports a whole synthetic population in messages of 1,000 records.
pub async fn import_population(
    client: &mut QualificationHistoryClient<Channel>,
    population: &mpi_synth::Population,
) -> pb::ImportQualificationsResponse {
    let records: Vec<_> = population
        .persons
        .iter()
        .flat_map(|person| {
            person
                .holdings
                .iter()
                .map(move |holding| synth_record(person, holding))
        })
        .collect();
    let messages: Vec<_> = records
        .chunks(1000)
        .map(|chunk| pb::ImportQualificationsRequest {
            records: chunk.to_vec(),
        })
        .collect();
    client
        .import_qualifications(tokio_stream::iter(messages))
        .await
        .unwrap()
        .into_inner()
}

/// Forwards every line of a child's output into a channel.
pub fn lines(reader: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    receiver
}

/// Waits (bounded) for a line containing `needle`; returns it. Blocks: call it through
/// `block_in_place` inside the runtime.
pub fn wait_for(receiver: &mpsc::Receiver<String>, needle: &str) -> String {
    loop {
        let line = receiver
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("no line containing {needle:?} within 30 s"));
        if line.contains(needle) {
            return line;
        }
    }
}

/// The built server binary.
pub const BINARY: &str = env!("CARGO_BIN_EXE_kouiki-mpi");

/// A started `kouiki-mpi serve`: the child, its stdout and stderr lines, and its address.
pub type Served = (
    std::process::Child,
    mpsc::Receiver<String>,
    mpsc::Receiver<String>,
    String,
);

/// The server binary started as `kouiki-mpi serve` on 127.0.0.1:0 over `data` (creating its
/// development PKI), with `extra` arguments and `RUST_LOG`, once it listens: the child, its
/// stdout and stderr lines, and the address it listens on.
pub fn spawn_serve(data: &Path, extra: &[&str], rust_log: &str) -> Served {
    spawn_serve_with(data, extra, rust_log, &[])
}

/// [`spawn_serve`] with environment variables set (`Some`) or removed (`None`).
pub fn spawn_serve_with(
    data: &Path,
    extra: &[&str],
    rust_log: &str,
    env: &[(&str, Option<&str>)],
) -> Served {
    use std::process::{Command, Stdio};
    let mut command = Command::new(BINARY);
    for (name, value) in env {
        match value {
            Some(value) => command.env(name, value),
            None => command.env_remove(name),
        };
    }
    let mut child = command
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "off",
        ])
        .args(extra)
        .arg("--data-dir")
        .arg(data)
        .env("RUST_LOG", rust_log)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = lines(child.stdout.take().unwrap());
    let stderr = lines(child.stderr.take().unwrap());
    let listening = wait_for(&stdout, "listening on");
    let address = listening.split_whitespace().nth(3).unwrap().to_owned();
    (child, stdout, stderr, address)
}

/// A channel to a `kouiki-mpi serve` at `address` as `alias`, one of the development PKI's
/// clients in `pki`.
pub async fn dev_channel(address: &str, pki: &PkiPaths, alias: &str) -> Channel {
    connect(address, &ClientIdentity::from_dev_pki(pki, alias).unwrap())
        .await
        .unwrap()
}

/// Valid synthetic insurer numbers (check digits computed, numbers invented).
pub mod numbers {
    /// 協会けんぽ, Tokyo.
    pub const KYOKAI: &str = "01139013";
    /// 健保組合, Osaka.
    pub const KENPO: &str = "06279012";
    /// 市町村国保, 6 digits.
    pub const KOKUHO: &str = "139014";
}
