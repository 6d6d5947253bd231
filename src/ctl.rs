//! `kouiki-mpi ctl`: a client for every RPC. It uses the development PKI of the data directory
//! by default (`--as` picks the client), or the certificates given. Requests can be written
//! with flags for the common calls, or as proto3 JSON with `--request` for any call; responses
//! are printed as an outline, or as JSON with `--json`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use mpi_proto::v1 as pb;
use mpi_server::client::{ClientIdentity, connect};
use mpi_server::pki::PkiPaths;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_stream::StreamExt;
use tonic::transport::Channel;

use crate::render;

#[derive(Debug, Args)]
pub struct CtlArgs {
    /// Server address.
    #[arg(
        long,
        env = "KOUIKI_MPI_ADDR",
        default_value = "127.0.0.1:50051",
        global = true
    )]
    addr: String,
    /// Data directory whose development PKI to use.
    #[arg(
        long,
        env = "KOUIKI_MPI_DATA_DIR",
        default_value = "./data",
        global = true
    )]
    data_dir: PathBuf,
    /// Development PKI client to act as; each command has a sensible default.
    #[arg(long = "as", value_enum, global = true)]
    role: Option<DevClient>,
    /// Client certificate (PEM), instead of the development PKI.
    #[arg(long, requires_all = ["key", "ca"], global = true)]
    cert: Option<PathBuf>,
    /// Client private key (PEM).
    #[arg(long, requires_all = ["cert", "ca"], global = true)]
    key: Option<PathBuf>,
    /// CA certificate of the server (PEM).
    #[arg(long, requires_all = ["cert", "key"], global = true)]
    ca: Option<PathBuf>,
    /// Print responses as proto3 JSON.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: CtlCommand,
}

/// The development PKI's clients.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum DevClient {
    HistoryProvider,
    NetworkA,
    NetworkB,
    ClinicianA,
    ClinicianB,
    Operator,
}

impl DevClient {
    fn alias(self) -> &'static str {
        match self {
            Self::HistoryProvider => "history-provider",
            Self::NetworkA => "network-a",
            Self::NetworkB => "network-b",
            Self::ClinicianA => "clinician-a",
            Self::ClinicianB => "clinician-b",
            Self::Operator => "operator",
        }
    }
}

/// A request given as proto3 JSON: inline, `@FILE`, or `-` for standard input.
#[derive(Debug, Args)]
struct JsonRequest {
    /// The request as proto3 JSON (inline, @FILE or - for stdin); fields are those of the proto.
    #[arg(long, default_value = "{}")]
    request: String,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum SexArg {
    Male,
    Female,
    NotRecorded,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum PurposeArg {
    Treatment,
    Emergency,
    CareCoordination,
    PatientRequest,
    IdentityManagement,
    Audit,
}

impl From<PurposeArg> for pb::Purpose {
    fn from(purpose: PurposeArg) -> Self {
        match purpose {
            PurposeArg::Treatment => Self::Treatment,
            PurposeArg::Emergency => Self::Emergency,
            PurposeArg::CareCoordination => Self::CareCoordination,
            PurposeArg::PatientRequest => Self::PatientRequest,
            PurposeArg::IdentityManagement => Self::IdentityManagement,
            PurposeArg::Audit => Self::Audit,
        }
    }
}

fn sex(value: Option<SexArg>) -> i32 {
    match value {
        None => pb::Sex::Unspecified,
        Some(SexArg::Male) => pb::Sex::Male,
        Some(SexArg::Female) => pb::Sex::Female,
        Some(SexArg::NotRecorded) => pb::Sex::NotRecorded,
    }
    .into()
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum KindArg {
    Checkup,
    Treatment,
    Prescription,
}

impl From<KindArg> for pb::RecordKind {
    fn from(kind: KindArg) -> Self {
        match kind {
            KindArg::Checkup => Self::Checkup,
            KindArg::Treatment => Self::Treatment,
            KindArg::Prescription => Self::Prescription,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum GrantArg {
    /// The patient lets the network index their records and link their regional ID.
    Participation,
    /// Whose pointers may be shown to whom.
    Disclosure,
}

/// The patient of a consent command, by the card (as of today).
#[derive(Debug, Args)]
struct PatientArgs {
    /// The insured ID on the card, "保険者番号8:記号:番号:枝番".
    #[arg(long)]
    patient: String,
    /// Birth date, for a household-level number without 枝番.
    #[arg(long, default_value = "")]
    birth_date: String,
    /// Sex, with --birth-date.
    #[arg(long, value_enum)]
    sex: Option<SexArg>,
}

impl PatientArgs {
    fn reference(&self) -> pb::PatientReference {
        pb::PatientReference {
            patient: Some(pb::patient_reference::Patient::Insured(member_patient(
                &self.patient,
                &self.birth_date,
                self.sex,
            ))),
        }
    }
}

/// Consents for operators (and networks, with --as): record, opt out, revoke, list.
#[derive(Debug, Subcommand)]
enum ConsentCommand {
    /// Record a participation or disclosure consent.
    Record {
        #[command(flatten)]
        patient: PatientArgs,
        #[arg(long, value_enum)]
        kind: GrantArg,
        /// The network the consent was given to, "PP-NNNN" (a network caller may omit it).
        #[arg(long, default_value = "")]
        network: String,
        /// Disclosure: who may retrieve: "any", "networks:PP-NNNN,..." or
        /// "facilities:CODE,...".
        #[arg(long, default_value = "any")]
        recipients: String,
        /// Disclosure: whose pointers: "own" (the network's), "all", or "PP-NNNN,...".
        #[arg(long, default_value = "own")]
        sources: String,
        /// Disclosure: record kinds (default every kind).
        #[arg(long, value_enum, value_delimiter = ',')]
        kinds: Vec<KindArg>,
        /// Disclosure: purposes (default every purpose except emergency).
        #[arg(long, value_enum, value_delimiter = ',')]
        purposes: Vec<PurposeArg>,
        /// First day in force, YYYY-MM-DD (default today).
        #[arg(long, default_value = "")]
        valid_from: String,
        /// Last day in force, YYYY-MM-DD (default until revoked).
        #[arg(long, default_value = "")]
        valid_until: String,
        /// The consent form or document ID.
        #[arg(long)]
        evidence: String,
    },
    /// Record an opt-out: global dissent that overrides every grant, emergency included.
    OptOut {
        #[command(flatten)]
        patient: PatientArgs,
        /// The opt-out form or document ID.
        #[arg(long)]
        evidence: String,
    },
    /// Revoke a consent or an opt-out by its ID.
    Revoke {
        /// The ID the consent was recorded with.
        #[arg(long)]
        consent_id: String,
        /// Why (required).
        #[arg(long)]
        reason: String,
        /// Participation only: also delete the network's pointers and links (right to deletion).
        #[arg(long)]
        purge: bool,
    },
    /// The patient's whole consent history, revoked and expired included.
    List {
        #[command(flatten)]
        patient: PatientArgs,
    },
}

#[derive(Debug, Subcommand)]
enum CtlCommand {
    /// Health of the server and of each service.
    Health,
    /// QualificationHistory.ImportQualifications: stream a history feed (JSON Lines or CSV).
    #[command(alias = "import-qualifications")]
    ImportHistory {
        /// The feed: JSON Lines of QualificationRecord (proto3 JSON), or CSV with the header
        /// provider_person_ref,insurer_number,symbol,number,branch,qualification_start,
        /// qualification_end,birth_date,sex,reason_of_loss (dates YYYY-MM-DD or YYYYMMDD, sex
        /// 1/2/3, reason 01/02/03/99).
        file: PathBuf,
        /// The format; by default from the file name (.csv is CSV, anything else JSON Lines).
        #[arg(long, value_enum)]
        format: Option<crate::import::Format>,
        /// Records per message (at most the server's limits.max_batch_items).
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Write a synthetic population: a history feed and its ground truth (no server needed).
    Synth {
        /// Number of persons.
        #[arg(long)]
        persons: usize,
        /// Seed; the same seed and --until give the same output.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Last day of the histories (YYYY-MM-DD) [default: today in Japan].
        #[arg(long)]
        until: Option<String>,
        /// Output directory: history.jsonl (the feed) and truth.jsonl (the ground truth).
        #[arg(long, default_value = "synth")]
        out: PathBuf,
    },
    /// QualificationHistory.MergePersons: two provider references are one person.
    MergePersons {
        /// The reference whose person absorbs the other.
        #[arg(long)]
        surviving: String,
        /// The reference whose person is absorbed.
        #[arg(long)]
        merged: String,
        /// Why (required).
        #[arg(long)]
        reason: String,
    },
    /// QualificationHistory.UnmergePersons: undo a merge by its ID.
    UnmergePersons {
        /// The ID MergePersons returned.
        #[arg(long)]
        merge_id: String,
        /// Why the merge was wrong (required).
        #[arg(long)]
        reason: String,
    },
    /// QualificationHistory.AreSamePerson: do two insured IDs belong to one person?
    AreSamePerson {
        /// First insured ID in the one-string form "保険者番号8:記号:番号:枝番".
        #[arg(long)]
        first: String,
        /// Date the first ID is resolved on ("YYYY-MM-DD"; default today).
        #[arg(long, default_value = "")]
        first_as_of: String,
        /// Birth date for a household-level first ID.
        #[arg(long, default_value = "")]
        first_birth_date: String,
        /// Sex for a household-level first ID.
        #[arg(long, value_enum)]
        first_sex: Option<SexArg>,
        /// Second insured ID.
        #[arg(long)]
        second: String,
        #[arg(long, default_value = "")]
        second_as_of: String,
        #[arg(long, default_value = "")]
        second_birth_date: String,
        #[arg(long, value_enum)]
        second_sex: Option<SexArg>,
        /// Purpose of use.
        #[arg(long, value_enum, default_value = "identity-management")]
        purpose: PurposeArg,
    },
    /// Consents and opt-outs, readably: record, opt-out, revoke, list.
    Consent {
        #[command(subcommand)]
        command: ConsentCommand,
    },
    /// Who retrieved this patient's pointers, when and why (Audit.AccessDisclosure, every page).
    WhoLooked {
        #[command(flatten)]
        patient: PatientArgs,
    },
    /// RecordLocator.RegisterLocations (as network-a unless --as).
    RegisterLocations(JsonRequest),
    /// RecordLocator.WithdrawLocations.
    WithdrawLocations(JsonRequest),
    /// RecordLocator.FindLocations (as clinician-a unless --as).
    FindLocations(JsonRequest),
    /// Federation.LinkRegionalId.
    LinkRegionalId(JsonRequest),
    /// Federation.UnlinkRegionalId.
    UnlinkRegionalId(JsonRequest),
    /// Federation.CrossReference.
    CrossReference(JsonRequest),
    /// Consent.RecordConsent.
    RecordConsent(JsonRequest),
    /// Consent.RevokeConsent.
    RevokeConsent(JsonRequest),
    /// Consent.ListConsents.
    ListConsents(JsonRequest),
    /// Audit.AccessDisclosure.
    AccessDisclosure(JsonRequest),
    /// Audit.VerifyAuditChain: verify the audit hash chain through the server.
    VerifyAuditChain(JsonRequest),
    /// Verify the audit chain of a stopped server's data directory, offline (no server needed);
    /// exits 1 when the chain is broken.
    AuditVerify {
        /// First sequence number (0: the first event).
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Last sequence number (0: the last event; then events cut off the end are found too).
        #[arg(long, default_value_t = 0)]
        to: u64,
    },
    /// Audit.ExportAuditEvents: a range of the audit chain as JSON Lines, for an external archive.
    ExportAuditEvents(JsonRequest),
}

impl CtlCommand {
    /// The client a command acts as unless `--as` says otherwise.
    fn default_client(&self) -> DevClient {
        use CtlCommand::*;
        match self {
            Health
            | ListConsents(_)
            | AccessDisclosure(_)
            | VerifyAuditChain(_)
            | ExportAuditEvents(_)
            | Consent { .. }
            | WhoLooked { .. } => DevClient::Operator,
            ImportHistory { .. }
            | Synth { .. }
            | AuditVerify { .. }
            | MergePersons { .. }
            | UnmergePersons { .. }
            | AreSamePerson { .. } => DevClient::HistoryProvider,
            RegisterLocations(_) | WithdrawLocations(_) | LinkRegionalId(_)
            | UnlinkRegionalId(_) => DevClient::NetworkA,
            RecordConsent(_) | RevokeConsent(_) => DevClient::Operator,
            FindLocations(_) | CrossReference(_) => DevClient::ClinicianA,
        }
    }
}

/// `kouiki-mpi ctl`.
pub fn run(args: CtlArgs) -> ExitCode {
    mpi_server::install_crypto_provider();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("kouiki-mpi ctl: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(execute(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(CtlError::Status(status)) => {
            let violations = field_violations(&status);
            if violations.is_empty() {
                eprintln!("error: {:?}: {}", status.code(), status.message());
            } else {
                eprintln!("error: {:?}", status.code());
                for violation in violations {
                    eprintln!("  {}: {}", violation.field, violation.description);
                }
            }
            ExitCode::from(1)
        }
        Err(CtlError::Broken) => ExitCode::from(1),
        Err(CtlError::Other(error)) => {
            eprintln!("kouiki-mpi ctl: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn field_violations(status: &tonic::Status) -> Vec<tonic_types::FieldViolation> {
    use tonic_types::StatusExt;
    status
        .get_details_bad_request()
        .map(|bad| bad.field_violations)
        .unwrap_or_default()
}

pub(crate) enum CtlError {
    Status(tonic::Status),
    /// The audit chain does not verify (already reported).
    Broken,
    Other(anyhow::Error),
}

impl From<tonic::Status> for CtlError {
    fn from(status: tonic::Status) -> Self {
        Self::Status(status)
    }
}

impl From<anyhow::Error> for CtlError {
    fn from(error: anyhow::Error) -> Self {
        Self::Other(error)
    }
}

fn identity(args: &CtlArgs) -> anyhow::Result<ClientIdentity> {
    if let (Some(cert), Some(key), Some(ca)) = (&args.cert, &args.key, &args.ca) {
        return Ok(ClientIdentity::from_files(ca, cert, key)?);
    }
    let client = args.role.unwrap_or_else(|| args.command.default_client());
    let pki = PkiPaths::new(args.data_dir.join("pki"));
    ClientIdentity::from_dev_pki(&pki, client.alias()).map_err(|error| {
        anyhow::anyhow!(
            "{error}\n(no development PKI there: start the server first, run `kouiki-mpi dev-pki`, or pass --data-dir / --cert --key --ca)"
        )
    })
}

fn read_request<T: DeserializeOwned>(request: &JsonRequest) -> anyhow::Result<T> {
    let text = match request.request.as_str() {
        "-" => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text)?;
            text
        }
        inline if inline.starts_with('@') => std::fs::read_to_string(&inline[1..])?,
        inline => inline.to_owned(),
    };
    serde_json::from_str(&text)
        .map_err(|error| anyhow::anyhow!("--request is not a valid request: {error}"))
}

fn print<T: Serialize>(json: bool, response: &T) -> anyhow::Result<()> {
    let value = serde_json::to_value(response)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print!("{}", render::outline(&value));
    }
    Ok(())
}

fn member_patient(
    member_id: &str,
    birth_date: &str,
    sex_arg: Option<SexArg>,
) -> pb::InsuredPatient {
    pb::InsuredPatient {
        insured_id: Some(pb::InsuredId {
            form: Some(pb::insured_id::Form::MemberId(member_id.to_owned())),
        }),
        birth_date: birth_date.to_owned(),
        sex: sex(sex_arg),
    }
}

macro_rules! unary {
    ($client:ident, $method:ident, $type:ty, $request:expr, $json:expr) => {{
        let request: $type = read_request($request)?;
        let response = $client.$method(request).await?.into_inner();
        print($json, &response)?;
    }};
}

async fn execute(args: CtlArgs) -> Result<(), CtlError> {
    if let CtlCommand::AuditVerify { from, to } = &args.command {
        return audit_verify(&args.data_dir, *from, *to, args.json);
    }
    if let CtlCommand::Synth {
        persons,
        seed,
        until,
        out,
    } = &args.command
    {
        return synth(*persons, *seed, until.as_deref(), out, args.json).map_err(CtlError::Other);
    }
    let identity = identity(&args)?;
    let channel: Channel = connect(&args.addr, &identity)
        .await
        .map_err(|error| anyhow::anyhow!("cannot connect to {}: {error:?}", args.addr))?;
    let json = args.json;
    let mut history =
        pb::qualification_history_client::QualificationHistoryClient::new(channel.clone());
    let mut locator = pb::record_locator_client::RecordLocatorClient::new(channel.clone());
    let mut federation = pb::federation_client::FederationClient::new(channel.clone());
    let mut consent = pb::consent_client::ConsentClient::new(channel.clone());
    let mut audit = pb::audit_client::AuditClient::new(channel.clone());
    match &args.command {
        CtlCommand::Health => health(channel, json).await?,
        CtlCommand::ImportHistory {
            file,
            format,
            batch,
            quiet,
        } => {
            use std::io::IsTerminal;
            let format = format.unwrap_or_else(|| crate::import::detect(file));
            let progress = !quiet && !json && std::io::stderr().is_terminal();
            let report =
                crate::import::import_history(channel.clone(), file, format, *batch, progress)
                    .await?;
            if json {
                print(true, &report)?;
            } else {
                println!(
                    "{} records in {:.1} s ({:.0} records/s): {} accepted, {} unchanged, {} rejected",
                    report.records,
                    report.seconds,
                    report.records_per_second,
                    report.accepted,
                    report.unchanged,
                    report.rejected
                );
                for rejection in report.rejections.iter().take(50) {
                    println!(
                        "  line {}: {}: {}",
                        rejection.line, rejection.field, rejection.reason
                    );
                }
                if report.rejections.len() > 50 || report.rejections_truncated {
                    println!("  … more rejections (use --json for the full list)");
                }
            }
        }
        CtlCommand::Synth { .. } | CtlCommand::AuditVerify { .. } => {}
        CtlCommand::MergePersons {
            surviving,
            merged,
            reason,
        } => {
            let request = pb::MergePersonsRequest {
                surviving_person_ref: surviving.clone(),
                merged_person_ref: merged.clone(),
                reason: reason.clone(),
            };
            print(json, &history.merge_persons(request).await?.into_inner())?;
        }
        CtlCommand::UnmergePersons { merge_id, reason } => {
            let request = pb::UnmergePersonsRequest {
                merge_id: merge_id.clone(),
                reason: reason.clone(),
            };
            print(json, &history.unmerge_persons(request).await?.into_inner())?;
        }
        CtlCommand::AreSamePerson {
            first,
            first_as_of,
            first_birth_date,
            first_sex,
            second,
            second_as_of,
            second_birth_date,
            second_sex,
            purpose,
        } => {
            let request = pb::AreSamePersonRequest {
                first: Some(pb::InsuredIdAtDate {
                    patient: Some(member_patient(first, first_birth_date, *first_sex)),
                    as_of: first_as_of.clone(),
                }),
                second: Some(pb::InsuredIdAtDate {
                    patient: Some(member_patient(second, second_birth_date, *second_sex)),
                    as_of: second_as_of.clone(),
                }),
                purpose: pb::Purpose::from(*purpose).into(),
            };
            let response = history.are_same_person(request).await?.into_inner();
            if json {
                print(true, &response)?;
            } else {
                let answer = match response.answer() {
                    pb::SamePersonAnswer::Same => "same",
                    pb::SamePersonAnswer::Different => "different",
                    pb::SamePersonAnswer::Ambiguous => "ambiguous",
                    pb::SamePersonAnswer::Unknown => "unknown",
                    pb::SamePersonAnswer::Unspecified => "unspecified",
                };
                println!("{answer}");
            }
        }
        CtlCommand::Consent { command } => consent_command(&mut consent, command, json).await?,
        CtlCommand::WhoLooked { patient } => who_looked(&mut audit, patient, json).await?,
        CtlCommand::RegisterLocations(request) => unary!(
            locator,
            register_locations,
            pb::RegisterLocationsRequest,
            request,
            json
        ),
        CtlCommand::WithdrawLocations(request) => unary!(
            locator,
            withdraw_locations,
            pb::WithdrawLocationsRequest,
            request,
            json
        ),
        CtlCommand::FindLocations(request) => unary!(
            locator,
            find_locations,
            pb::FindLocationsRequest,
            request,
            json
        ),
        CtlCommand::LinkRegionalId(request) => unary!(
            federation,
            link_regional_id,
            pb::LinkRegionalIdRequest,
            request,
            json
        ),
        CtlCommand::UnlinkRegionalId(request) => unary!(
            federation,
            unlink_regional_id,
            pb::UnlinkRegionalIdRequest,
            request,
            json
        ),
        CtlCommand::CrossReference(request) => unary!(
            federation,
            cross_reference,
            pb::CrossReferenceRequest,
            request,
            json
        ),
        CtlCommand::RecordConsent(request) => unary!(
            consent,
            record_consent,
            pb::RecordConsentRequest,
            request,
            json
        ),
        CtlCommand::RevokeConsent(request) => unary!(
            consent,
            revoke_consent,
            pb::RevokeConsentRequest,
            request,
            json
        ),
        CtlCommand::ListConsents(request) => unary!(
            consent,
            list_consents,
            pb::ListConsentsRequest,
            request,
            json
        ),
        CtlCommand::AccessDisclosure(request) => unary!(
            audit,
            access_disclosure,
            pb::AccessDisclosureRequest,
            request,
            json
        ),
        CtlCommand::VerifyAuditChain(request) => unary!(
            audit,
            verify_audit_chain,
            pb::VerifyAuditChainRequest,
            request,
            json
        ),
        CtlCommand::ExportAuditEvents(request) => {
            let request: pb::ExportAuditEventsRequest = read_request(request)?;
            let mut events = audit.export_audit_events(request).await?.into_inner();
            while let Some(event) = events.next().await {
                println!(
                    "{}",
                    serde_json::to_string(&event?).map_err(anyhow::Error::from)?
                );
            }
        }
    }
    Ok(())
}

async fn health(channel: Channel, json: bool) -> Result<(), CtlError> {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
    let mut client = HealthClient::new(channel);
    let mut report = serde_json::Map::new();
    for service in std::iter::once("").chain(mpi_proto::SERVICE_NAMES) {
        let status = client
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await?
            .into_inner()
            .status();
        let name = if service.is_empty() {
            "server"
        } else {
            service
        };
        let text = match status {
            ServingStatus::Serving => "SERVING",
            ServingStatus::NotServing => "NOT_SERVING",
            ServingStatus::ServiceUnknown => "SERVICE_UNKNOWN",
            ServingStatus::Unknown => "UNKNOWN",
        };
        report.insert(name.to_owned(), serde_json::Value::String(text.to_owned()));
    }
    print(json, &serde_json::Value::Object(report))?;
    Ok(())
}

fn synth(
    persons: usize,
    seed: u64,
    until: Option<&str>,
    out: &Path,
    json: bool,
) -> anyhow::Result<()> {
    let until = match until {
        Some(text) => {
            mpi_core::dates::parse_date(text).map_err(|e| anyhow::anyhow!("--until {e}"))?
        }
        None => mpi_core::dates::today_in_japan(),
    };
    anyhow::ensure!(
        until >= mpi_synth::HISTORY_START,
        "--until must not be before {}",
        mpi_synth::HISTORY_START
    );
    let population = mpi_synth::generate(&mpi_synth::Config {
        persons,
        seed,
        until,
    });
    std::fs::create_dir_all(out)?;
    let mut feed = std::io::BufWriter::new(std::fs::File::create(out.join("history.jsonl"))?);
    population.write_feed(&mut feed)?;
    std::io::Write::flush(&mut feed)?;
    let mut truth = std::io::BufWriter::new(std::fs::File::create(out.join("truth.jsonl"))?);
    population.write_truth(&mut truth)?;
    std::io::Write::flush(&mut truth)?;
    let summary = population.summary();
    if json {
        print(true, &summary)?;
    } else {
        println!(
            "wrote {} and {}",
            out.join("history.jsonl").display(),
            out.join("truth.jsonl").display()
        );
        print(false, &summary)?;
    }
    Ok(())
}

/// Offline verification of a stopped server's store.
fn audit_verify(data_dir: &Path, from: u64, to: u64, json: bool) -> Result<(), CtlError> {
    let path = data_dir.join("mpi.redb");
    if !path.is_file() {
        return Err(CtlError::Other(anyhow::anyhow!(
            "{} does not exist",
            path.display()
        )));
    }
    let store = mpi_store_redb::RedbStore::open(&path)
        .map_err(|error| anyhow::anyhow!("{}: {error} (stop the server first)", path.display()))?;
    let verification = mpi_core::audit::verify_store(&store, from, to)
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    let report = pb::VerifyAuditChainResponse {
        intact: verification.intact(),
        events_verified: verification.verified,
        first_broken_sequence: verification.broken.as_ref().map_or(0, |broken| broken.0),
        failure: verification
            .broken
            .clone()
            .map(|broken| broken.1)
            .unwrap_or_default(),
        head_hash: mpi_core::keys::hex(&verification.head.hash),
    };
    print(json, &report)?;
    if verification.intact() {
        Ok(())
    } else {
        Err(CtlError::Broken)
    }
}

fn split_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect()
}

fn recipients(text: &str) -> anyhow::Result<pb::recipients::Recipients> {
    use pb::recipients::Recipients;
    if text == "any" {
        return Ok(Recipients::AnyFacility(true));
    }
    if let Some(list) = text.strip_prefix("networks:") {
        return Ok(Recipients::Networks(pb::NetworkIds {
            network_ids: split_list(list),
        }));
    }
    if let Some(list) = text.strip_prefix("facilities:") {
        return Ok(Recipients::Facilities(pb::FacilityCodes {
            facility_codes: split_list(list),
        }));
    }
    anyhow::bail!(
        "--recipients must be \"any\", \"networks:PP-NNNN,...\" or \"facilities:CODE,...\""
    )
}

fn scope(
    recipients_text: &str,
    sources: &str,
    kinds: &[KindArg],
    purposes: &[PurposeArg],
) -> anyhow::Result<pb::DisclosureScope> {
    let (source_network_ids, all_source_networks) = match sources {
        "own" => (Vec::new(), false),
        "all" => (Vec::new(), true),
        list => (split_list(list), false),
    };
    Ok(pb::DisclosureScope {
        source_network_ids,
        all_source_networks,
        recipients: Some(pb::Recipients {
            recipients: Some(recipients(recipients_text)?),
        }),
        kinds: kinds
            .iter()
            .map(|k| pb::RecordKind::from(*k).into())
            .collect(),
        purposes: purposes
            .iter()
            .map(|p| pb::Purpose::from(*p).into())
            .collect(),
    })
}

/// A timestamp as RFC 3339 in UTC.
fn instant(timestamp: Option<&pbjson_types::Timestamp>) -> String {
    timestamp
        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| "-".into())
}

/// One consent as two or three readable lines.
fn consent_lines(consent: &pb::ConsentRecord) -> String {
    let kind = match consent.kind() {
        pb::ConsentKind::Participation => "participation",
        pb::ConsentKind::Disclosure => "disclosure",
        pb::ConsentKind::OptOut => "opt-out",
        pb::ConsentKind::Unspecified => "unspecified",
    };
    let status = match consent.status() {
        pb::ConsentStatus::Active => "ACTIVE",
        pb::ConsentStatus::Revoked => "REVOKED",
        pb::ConsentStatus::Expired => "EXPIRED",
        pb::ConsentStatus::Unspecified => "-",
    };
    let network = if consent.network_id.is_empty() {
        "every network".to_owned()
    } else {
        format!("network {}", consent.network_id)
    };
    let until = if consent.valid_until.is_empty() {
        "until revoked".to_owned()
    } else {
        format!("until {}", consent.valid_until)
    };
    let mut out = format!(
        "{}  {kind}  {network}  {status}  from {} {until}  evidence {}\n",
        consent.consent_id, consent.valid_from, consent.evidence_reference
    );
    if let Some(scope) = &consent.scope {
        let to = match scope
            .recipients
            .as_ref()
            .and_then(|r| r.recipients.as_ref())
        {
            Some(pb::recipients::Recipients::AnyFacility(_)) => "any facility".to_owned(),
            Some(pb::recipients::Recipients::Networks(list)) => {
                format!("networks {}", list.network_ids.join(", "))
            }
            Some(pb::recipients::Recipients::Facilities(list)) => {
                format!("facilities {}", list.facility_codes.join(", "))
            }
            None => "-".to_owned(),
        };
        let of = if scope.all_source_networks {
            "every network's pointers".to_owned()
        } else if scope.source_network_ids.is_empty() {
            "its own pointers".to_owned()
        } else {
            format!("pointers of {}", scope.source_network_ids.join(", "))
        };
        out.push_str(&format!("    discloses {of} to {to}\n"));
    }
    out.push_str(&format!(
        "    recorded by {} at {}\n",
        consent.recorded_by,
        instant(consent.recorded_at.as_ref())
    ));
    if !consent.revoked_by.is_empty() {
        out.push_str(&format!(
            "    revoked by {} at {}: {}{}\n",
            consent.revoked_by,
            instant(consent.revoked_at.as_ref()),
            consent.revocation_reason,
            if consent.purged { " (purged)" } else { "" }
        ));
    }
    out
}

async fn consent_command(
    client: &mut pb::consent_client::ConsentClient<Channel>,
    command: &ConsentCommand,
    json: bool,
) -> Result<(), CtlError> {
    let recorded = match command {
        ConsentCommand::Record {
            patient,
            kind,
            network,
            recipients,
            sources,
            kinds,
            purposes,
            valid_from,
            valid_until,
            evidence,
        } => {
            let (kind, scope) = match kind {
                GrantArg::Participation => (pb::ConsentKind::Participation, None),
                GrantArg::Disclosure => (
                    pb::ConsentKind::Disclosure,
                    Some(scope(recipients, sources, kinds, purposes)?),
                ),
            };
            let request = pb::RecordConsentRequest {
                patient: Some(patient.reference()),
                kind: kind.into(),
                network_id: network.clone(),
                scope,
                valid_from: valid_from.clone(),
                valid_until: valid_until.clone(),
                evidence_reference: evidence.clone(),
            };
            client.record_consent(request).await?.into_inner()
        }
        ConsentCommand::OptOut { patient, evidence } => {
            let request = pb::RecordConsentRequest {
                patient: Some(patient.reference()),
                kind: pb::ConsentKind::OptOut.into(),
                evidence_reference: evidence.clone(),
                ..Default::default()
            };
            client.record_consent(request).await?.into_inner()
        }
        ConsentCommand::Revoke {
            consent_id,
            reason,
            purge,
        } => {
            let request = pb::RevokeConsentRequest {
                consent_id: consent_id.clone(),
                reason: reason.clone(),
                purge: *purge,
            };
            client.revoke_consent(request).await?.into_inner()
        }
        ConsentCommand::List { patient } => {
            let mut all = Vec::new();
            let mut page_token = String::new();
            loop {
                let page = client
                    .list_consents(pb::ListConsentsRequest {
                        patient: Some(patient.reference()),
                        purpose: pb::Purpose::PatientRequest.into(),
                        page_size: 1000,
                        page_token,
                    })
                    .await?
                    .into_inner();
                all.extend(page.consents);
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            if json {
                print(
                    true,
                    &pb::ListConsentsResponse {
                        consents: all,
                        next_page_token: String::new(),
                    },
                )?;
            } else {
                println!("{} consents", all.len());
                for consent in &all {
                    print!("{}", consent_lines(consent));
                }
            }
            return Ok(());
        }
    };
    if json {
        print(true, &recorded)?;
    } else {
        print!("{}", consent_lines(&recorded));
    }
    Ok(())
}

async fn who_looked(
    client: &mut pb::audit_client::AuditClient<Channel>,
    patient: &PatientArgs,
    json: bool,
) -> Result<(), CtlError> {
    let mut entries = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .access_disclosure(pb::AccessDisclosureRequest {
                patient: Some(patient.reference()),
                purpose: pb::Purpose::PatientRequest.into(),
                page_size: 1000,
                page_token,
                ..Default::default()
            })
            .await?
            .into_inner();
        entries.extend(page.entries);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    if json {
        print(
            true,
            &pb::AccessDisclosureResponse {
                entries,
                next_page_token: String::new(),
            },
        )?;
        return Ok(());
    }
    println!("{} retrievals", entries.len());
    for entry in &entries {
        let purpose = pb::Purpose::try_from(entry.purpose)
            .map(|p| {
                p.as_str_name()
                    .trim_start_matches("PURPOSE_")
                    .to_lowercase()
            })
            .unwrap_or_else(|_| "-".into());
        let emergency = if entry.emergency {
            format!("  EMERGENCY: {}", entry.emergency_reason)
        } else {
            String::new()
        };
        println!(
            "{}  {}  {}  for {purpose}  {} disclosed  (event {}){emergency}",
            instant(entry.at.as_ref()),
            entry.principal,
            entry.action,
            entry.disclosed,
            entry.sequence
        );
    }
    Ok(())
}
