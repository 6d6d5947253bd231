//! Thin tonic adapters: principal from the certificate, role check, conversion, the service
//! call off the reactor, error mapping, metrics and a log line. No business rule lives here.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use mpi_core::audit::NewAuditEvent;
use mpi_core::authz::{Operation, authorize};
use mpi_core::consent::Purpose;
use mpi_core::principal::Principal;
use mpi_core::qualification::QualificationRecord;
use mpi_core::records::{AuditNote, ItemOutcome, Noted};
use mpi_core::service::{ImportCounts, Mpi, SamePerson};
use mpi_core::{ServiceError, ServiceResult};
use mpi_proto::v1 as pb;
use tokio::task::JoinHandle;
use tonic::{Request, Response, Status, Streaming};

use crate::audit_log::AuditLog;
use crate::config::Limits;
use crate::convert;
use crate::identity::Principals;
use crate::metrics::Metrics;
use crate::status::to_status;

/// Rejections listed in an import summary (all are counted).
const IMPORT_REJECTIONS_LISTED: usize = 1000;

/// What every adapter shares.
#[derive(Clone)]
pub struct Ctx {
    mpi: Mpi,
    audit: AuditLog,
    metrics: Arc<Metrics>,
    limits: Limits,
    principals: Arc<Principals>,
}

impl Ctx {
    /// Shared state of the adapters.
    pub fn new(mpi: Mpi, audit: AuditLog, metrics: Arc<Metrics>, limits: Limits) -> Self {
        Self {
            mpi,
            audit,
            metrics,
            limits,
            principals: Arc::new(Principals::default()),
        }
    }

    fn finish<T>(&self, operation: Operation, started: Instant, result: &Result<T, Status>) {
        let code = match result {
            Ok(_) => tonic::Code::Ok,
            Err(status) => status.code(),
        };
        let elapsed = started.elapsed();
        self.metrics.observe(operation.name(), code, elapsed);
        // Not at `info`: a line per call cost FindLocations 3-7 us of its ~27 (see `logging`).
        let (rpc, code_name, micros) = (
            operation.name(),
            crate::metrics::code_name(code),
            elapsed.as_micros() as u64,
        );
        if crate::logging::server_failed(code) {
            tracing::warn!(rpc, code = code_name, micros, "rpc failed");
        } else {
            tracing::debug!(rpc, code = code_name, micros, "rpc");
        }
    }

    /// Appends the audit event of a finished call and waits until it is durable. If the
    /// audit log cannot take it, the call fails: nothing is answered unaudited.
    async fn audited<T>(
        &self,
        operation: Operation,
        principal: &Principal,
        result: Result<T, Status>,
        note: AuditNote,
    ) -> Result<T, Status> {
        let code = match &result {
            Ok(_) => tonic::Code::Ok,
            Err(status) => status.code(),
        };
        let outcome = match (&result, note.outcome) {
            (Ok(_), Some(precise)) => precise,
            _ => crate::metrics::code_name(code),
        };
        let event = NewAuditEvent {
            at_micros: mpi_core::service::now_micros(),
            principal: principal.to_string(),
            action: operation.name().to_owned(),
            purpose: note.purpose.map_or(0, Purpose::code),
            person_key: note.person,
            outcome: outcome.to_owned(),
            count: note.count,
            emergency: note.emergency.is_some(),
            emergency_reason: note.emergency.unwrap_or_default(),
            deciding_consents: note.deciding.iter().map(|id| id.to_hex()).collect(),
        };
        // Only an answered call disclosed anything.
        let disclosed = if result.is_ok() {
            note.disclosed_subjects
        } else {
            Vec::new()
        };
        self.audit
            .record(event, disclosed)
            .await
            .map_err(to_status)?;
        result
    }

    /// Runs a unary RPC: admit, then `work` on a blocking thread.
    async fn unary<Req, Resp, F>(
        &self,
        operation: Operation,
        request: Request<Req>,
        work: F,
    ) -> Result<Response<Resp>, Status>
    where
        Req: Send + 'static,
        Resp: Send + 'static,
        F: FnOnce(&Mpi, &Principal, Req) -> ServiceResult<Resp> + Send + 'static,
    {
        self.unary_noted(operation, request, move |mpi, principal, message| {
            (work(mpi, principal, message), AuditNote::default())
        })
        .await
    }

    /// Runs a unary RPC whose work also says what its audit event records.
    async fn unary_noted<Req, Resp, F>(
        &self,
        operation: Operation,
        request: Request<Req>,
        work: F,
    ) -> Result<Response<Resp>, Status>
    where
        Req: Send + 'static,
        Resp: Send + 'static,
        F: FnOnce(&Mpi, &Principal, Req) -> Noted<Resp> + Send + 'static,
    {
        let started = Instant::now();
        let deadline = self.limits.request_timeout;
        let call = async {
            let principal = self.principals.of(&request)?;
            let (decided, note) = match authorize(&principal, operation) {
                Err(denied) => (Err(to_status(denied)), AuditNote::default()),
                Ok(()) => {
                    let mpi = self.mpi.clone();
                    let message = request.into_inner();
                    if served_on_the_reactor(operation) {
                        let (result, note) = work(&mpi, &principal, message);
                        (result.map_err(to_status), note)
                    } else {
                        let caller = principal.clone();
                        blocking_noted(move || work(&mpi, &caller, message)).await
                    }
                }
            };
            self.audited(operation, &principal, decided, note).await
        };
        // A unary call has the whole request timeout; streams are bounded per message instead.
        let result = match tokio::time::timeout(deadline, call).await {
            Ok(result) => result,
            Err(_) => Err(Status::deadline_exceeded(format!(
                "no answer within {} s",
                deadline.as_secs()
            ))),
        };
        self.finish(operation, started, &result);
        result.map(Response::new)
    }
}

/// Whether `operation` runs on the reactor thread instead of a blocking thread: the bounded
/// reads of one person (a few B-tree look-ups, mostly in the store's page cache, tens of microseconds).
/// Handing them to the blocking pool cost more than the work: with 64 calls in flight it ran
/// 64 threads, and every call paid two thread wake-ups (docs/benchmarks.md, "the floor").
/// Writes, scans and anything whose size the caller chooses stay on blocking threads.
fn served_on_the_reactor(operation: Operation) -> bool {
    matches!(
        operation,
        Operation::FindLocations | Operation::CrossReference | Operation::AreSamePerson
    )
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> ServiceResult<T> + Send + 'static,
) -> Result<T, Status> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(to_status),
        Err(error) => {
            tracing::error!(error = %error, "service task failed");
            Err(Status::internal("internal error"))
        }
    }
}

async fn blocking_noted<T: Send + 'static>(
    work: impl FnOnce() -> Noted<T> + Send + 'static,
) -> (Result<T, Status>, AuditNote) {
    match tokio::task::spawn_blocking(work).await {
        Ok((result, note)) => (result.map_err(to_status), note),
        Err(error) => {
            tracing::error!(error = %error, "service task failed");
            (
                Err(Status::internal("internal error")),
                AuditNote::default(),
            )
        }
    }
}

/// The result of a call refused before it did anything: nothing to note beyond the refusal.
fn refused<T>(error: ServiceError) -> Noted<T> {
    (Err(error), AuditNote::default())
}

fn invalid(violations: Vec<mpi_core::FieldViolation>) -> ServiceError {
    ServiceError::InvalidArgument(violations)
}

/// The network a network or clinician caller is bound to.
fn bound_network(principal: &Principal) -> ServiceResult<mpi_core::ids::NetworkId> {
    principal.network().ok_or_else(|| {
        ServiceError::PermissionDenied("the caller is not bound to a network".into())
    })
}

fn register(
    mpi: &Mpi,
    principal: &Principal,
    message: &pb::RegisterLocationsRequest,
    max_batch: usize,
    note: &mut AuditNote,
) -> ServiceResult<pb::RegisterLocationsResponse> {
    let network = bound_network(principal)?;
    if message.items.is_empty() {
        return Err(ServiceError::invalid(
            "items",
            "must hold at least one location",
        ));
    }
    if message.items.len() > max_batch {
        return Err(ServiceError::ResourceExhausted(format!(
            "items: at most {max_batch} locations per call, found {}",
            message.items.len()
        )));
    }
    for (index, item) in message.items.iter().enumerate() {
        convert::own_network(
            &format!("items[{index}].network_id"),
            &item.network_id,
            network,
        )?;
    }
    let items = message
        .items
        .iter()
        .map(|item| convert::registration(item, network))
        .collect();
    let outcomes = mpi.register_locations(network, items)?;
    let results: Vec<pb::RegistrationResult> = outcomes
        .into_iter()
        .enumerate()
        .map(|(index, outcome)| {
            let (outcome, field, reason) = match outcome {
                ItemOutcome::Stored => (
                    pb::RegistrationOutcome::Stored,
                    String::new(),
                    String::new(),
                ),
                ItemOutcome::UnknownPatient => (
                    pb::RegistrationOutcome::UnknownPatient,
                    "patient".to_owned(),
                    "no person holds that identifier on the first service date".to_owned(),
                ),
                ItemOutcome::AmbiguousPatient => (
                    pb::RegistrationOutcome::AmbiguousPatient,
                    "patient".to_owned(),
                    "the identifier matches several persons; give birth_date and sex".to_owned(),
                ),
                ItemOutcome::NoParticipation => (
                    pb::RegistrationOutcome::NoParticipationConsent,
                    "patient".to_owned(),
                    format!("no participation consent for network {network} in force"),
                ),
                ItemOutcome::Invalid(violations) => {
                    let first = violations.into_iter().next();
                    (
                        pb::RegistrationOutcome::InvalidField,
                        first.as_ref().map(|v| v.field.clone()).unwrap_or_default(),
                        first.map(|v| v.rule).unwrap_or_default(),
                    )
                }
            };
            pb::RegistrationResult {
                index: index as u32,
                outcome: outcome.into(),
                field,
                reason,
            }
        })
        .collect();
    note.count = results
        .iter()
        .filter(|r| r.outcome == i32::from(pb::RegistrationOutcome::Stored))
        .count() as u32;
    Ok(pb::RegisterLocationsResponse { results })
}

fn withdraw(
    mpi: &Mpi,
    principal: &Principal,
    message: &pb::WithdrawLocationsRequest,
    max_batch: usize,
    note: &mut AuditNote,
) -> ServiceResult<pb::WithdrawLocationsResponse> {
    let network = bound_network(principal)?;
    if message.locations.len() > max_batch {
        return Err(ServiceError::ResourceExhausted(format!(
            "locations: at most {max_batch} keys per call, found {}",
            message.locations.len()
        )));
    }
    for (index, key) in message.locations.iter().enumerate() {
        convert::own_network(
            &format!("locations[{index}].network_id"),
            &key.network_id,
            network,
        )?;
    }
    let mut violations = Vec::new();
    if message.locations.is_empty() {
        violations.push(mpi_core::FieldViolation::new(
            "locations",
            "must name at least one location",
        ));
    }
    let mut ids = Vec::new();
    for (index, key) in message.locations.iter().enumerate() {
        match convert::location_key(&format!("locations[{index}]"), key, network) {
            Ok(id) => ids.push(id),
            Err(found) => violations.extend(found),
        }
    }
    if let Err(found) = convert::reason("reason", &message.reason) {
        violations.extend(found);
    }
    if !violations.is_empty() {
        return Err(invalid(violations));
    }
    let (withdrawn, not_found) = mpi.withdraw_locations(&ids)?;
    note.count = withdrawn;
    Ok(pb::WithdrawLocationsResponse {
        withdrawn,
        not_found,
    })
}

/// `QualificationHistory`.
#[derive(Clone)]
pub struct QualificationHistoryAdapter(pub Ctx);

/// Accumulates an import's counts and rejections.
#[derive(Default)]
struct ImportSummary {
    counts: ImportCounts,
    rejected: u64,
    rejections: Vec<pb::RecordRejection>,
}

impl ImportSummary {
    fn reject(&mut self, record_index: u64, violations: Vec<mpi_core::FieldViolation>) {
        self.rejected += 1;
        for violation in violations {
            if self.rejections.len() < IMPORT_REJECTIONS_LISTED {
                self.rejections.push(pb::RecordRejection {
                    record_index,
                    field: violation.field,
                    reason: violation.rule,
                });
            }
        }
    }

    fn add(&mut self, counts: ImportCounts) {
        self.counts.accepted += counts.accepted;
        self.counts.unchanged += counts.unchanged;
    }

    fn into_response(self) -> pb::ImportQualificationsResponse {
        let truncated = self.rejections.len() as u64 >= IMPORT_REJECTIONS_LISTED as u64
            && self.rejected > self.rejections.len() as u64;
        pb::ImportQualificationsResponse {
            accepted: self.counts.accepted,
            unchanged: self.counts.unchanged,
            rejected: self.rejected,
            rejections: self.rejections,
            rejections_truncated: truncated,
        }
    }
}

impl QualificationHistoryAdapter {
    async fn import(
        &self,
        request: Request<Streaming<pb::ImportQualificationsRequest>>,
    ) -> Result<pb::ImportQualificationsResponse, Status> {
        tracing::debug!("import stream opened");
        let mut stream = request.into_inner();
        let mut summary = ImportSummary::default();
        let mut record_index: u64 = 0;
        // Records kept before one commit (`limits.import_commit_records`); with one batch being
        // keyed and one committing, that bounds the stream's memory. The keys are random, so a
        // commit rewrites about one page per record until it holds more records than its tree
        // has leaves: at 1,000,000 persons, commits of 50,000 imported ≈ 50,000 records/s and
        // of 250,000 ≈ 95,000/s (docs/benchmarks.md).
        let commit_records = self.0.limits.import_commit_records.max(1);
        // Grown as records come, so that a short stream does not reserve a whole batch.
        let mut pending: Vec<QualificationRecord> = Vec::new();
        // One commit runs while the next batch is read and validated.
        let mut in_flight: Option<JoinHandle<ServiceResult<ImportCounts>>> = None;
        let max_batch = self.0.limits.max_batch_items;
        let idle = self.0.limits.request_timeout;
        loop {
            // However long the whole feed, each message must come within the request timeout,
            // so an idle client cannot hold a stream (and its memory) forever.
            let next = tokio::time::timeout(idle, stream.message())
                .await
                .map_err(|_| {
                    Status::deadline_exceeded(format!(
                        "no import message within {} s",
                        idle.as_secs()
                    ))
                })?;
            let Some(message) = next.map_err(crate::status::limit_status)? else {
                break;
            };
            if message.records.len() > max_batch {
                return Err(Status::resource_exhausted(format!(
                    "records: at most {max_batch} records per message, found {}",
                    message.records.len()
                )));
            }
            for record in &message.records {
                match convert::qualification_record(record) {
                    Ok(record) => pending.push(record),
                    Err(violations) => summary.reject(record_index, violations),
                }
                record_index += 1;
            }
            if pending.len() >= commit_records {
                let batch = std::mem::take(&mut pending);
                // Keyed on another thread while the previous batch commits.
                let mpi = self.0.mpi.clone();
                let keyed = tokio::task::spawn_blocking(move || Ok(mpi.key_qualifications(&batch)));
                if let Some(previous) = in_flight.take() {
                    summary.add(joined(previous).await?);
                }
                let entries = joined(keyed).await?;
                let mpi = self.0.mpi.clone();
                in_flight = Some(tokio::task::spawn_blocking(move || {
                    mpi.store_qualifications(&entries)
                }));
            }
        }
        if let Some(previous) = in_flight.take() {
            summary.add(joined(previous).await?);
        }
        if !pending.is_empty() {
            let mpi = self.0.mpi.clone();
            summary.add(blocking(move || mpi.import_qualifications(&pending)).await?);
        }
        tracing::info!(
            accepted = summary.counts.accepted,
            unchanged = summary.counts.unchanged,
            rejected = summary.rejected,
            "import finished"
        );
        Ok(summary.into_response())
    }
}

/// The result of an import's keying or commit task.
async fn joined<T>(handle: JoinHandle<ServiceResult<T>>) -> Result<T, Status> {
    match handle.await {
        Ok(result) => result.map_err(to_status),
        Err(error) => {
            tracing::error!(error = %error, "import task failed");
            Err(Status::internal("internal error"))
        }
    }
}

#[tonic::async_trait]
impl pb::qualification_history_server::QualificationHistory for QualificationHistoryAdapter {
    async fn import_qualifications(
        &self,
        request: Request<Streaming<pb::ImportQualificationsRequest>>,
    ) -> Result<Response<pb::ImportQualificationsResponse>, Status> {
        let started = Instant::now();
        let operation = Operation::ImportQualifications;
        let result = match self.0.principals.of(&request) {
            Err(status) => Err(status),
            Ok(principal) => {
                let decided = match authorize(&principal, operation) {
                    Err(denied) => Err(to_status(denied)),
                    Ok(()) => self.import(request).await,
                };
                let count = decided.as_ref().map_or(0, |summary| {
                    u32::try_from(summary.accepted + summary.unchanged).unwrap_or(u32::MAX)
                });
                let note = AuditNote {
                    count,
                    ..AuditNote::default()
                };
                self.0.audited(operation, &principal, decided, note).await
            }
        };
        self.0
            .finish(Operation::ImportQualifications, started, &result);
        result.map(Response::new)
    }

    async fn merge_persons(
        &self,
        request: Request<pb::MergePersonsRequest>,
    ) -> Result<Response<pb::MergePersonsResponse>, Status> {
        self.0
            .unary(
                Operation::MergePersons,
                request,
                |mpi, principal, message| {
                    let (surviving, merged, reason) =
                        convert::merge_request(&message).map_err(invalid)?;
                    let (merge_id, at) =
                        mpi.merge_persons(principal, &surviving, &merged, &reason)?;
                    tracing::info!(merge_id = %merge_id.to_hex(), "persons merged");
                    Ok(pb::MergePersonsResponse {
                        merge_id: merge_id.to_hex(),
                        merged_at: Some(convert::timestamp(at)),
                    })
                },
            )
            .await
    }

    async fn unmerge_persons(
        &self,
        request: Request<pb::UnmergePersonsRequest>,
    ) -> Result<Response<pb::UnmergePersonsResponse>, Status> {
        self.0
            .unary(
                Operation::UnmergePersons,
                request,
                |mpi, principal, message| {
                    let (merge_id, reason) = convert::unmerge_request(&message).map_err(invalid)?;
                    let at = mpi.unmerge_persons(principal, merge_id, &reason)?;
                    tracing::info!(merge_id = %merge_id.to_hex(), "merge undone");
                    Ok(pb::UnmergePersonsResponse {
                        unmerged_at: Some(convert::timestamp(at)),
                    })
                },
            )
            .await
    }

    async fn are_same_person(
        &self,
        request: Request<pb::AreSamePersonRequest>,
    ) -> Result<Response<pb::AreSamePersonResponse>, Status> {
        self.0
            .unary(
                Operation::AreSamePerson,
                request,
                |mpi, _principal, message| {
                    let (first, second) =
                        convert::are_same_person_request(&message).map_err(invalid)?;
                    let answer = mpi.are_same_person((&first.0, first.1), (&second.0, second.1))?;
                    let answer = match answer {
                        SamePerson::Same => pb::SamePersonAnswer::Same,
                        SamePerson::Different => pb::SamePersonAnswer::Different,
                        SamePerson::Ambiguous => pb::SamePersonAnswer::Ambiguous,
                        SamePerson::Unknown => pb::SamePersonAnswer::Unknown,
                    };
                    Ok(pb::AreSamePersonResponse {
                        answer: answer.into(),
                    })
                },
            )
            .await
    }
}

/// `RecordLocator`.
#[derive(Clone)]
pub struct RecordLocatorAdapter(pub Ctx);

#[tonic::async_trait]
impl pb::record_locator_server::RecordLocator for RecordLocatorAdapter {
    async fn register_locations(
        &self,
        request: Request<pb::RegisterLocationsRequest>,
    ) -> Result<Response<pb::RegisterLocationsResponse>, Status> {
        let max_batch = self.0.limits.max_batch_items;
        self.0
            .unary_noted(
                Operation::RegisterLocations,
                request,
                move |mpi, principal, message| {
                    let mut note = AuditNote::default();
                    let result = register(mpi, principal, &message, max_batch, &mut note);
                    (result, note)
                },
            )
            .await
    }

    async fn withdraw_locations(
        &self,
        request: Request<pb::WithdrawLocationsRequest>,
    ) -> Result<Response<pb::WithdrawLocationsResponse>, Status> {
        let max_batch = self.0.limits.max_batch_items;
        self.0
            .unary_noted(
                Operation::WithdrawLocations,
                request,
                move |mpi, principal, message| {
                    let mut note = AuditNote::default();
                    let result = withdraw(mpi, principal, &message, max_batch, &mut note);
                    (result, note)
                },
            )
            .await
    }

    async fn find_locations(
        &self,
        request: Request<pb::FindLocationsRequest>,
    ) -> Result<Response<pb::FindLocationsResponse>, Status> {
        self.0
            .unary_noted(
                Operation::FindLocations,
                request,
                |mpi, principal, message| {
                    let network = match bound_network(principal) {
                        Ok(network) => network,
                        Err(error) => return refused(error),
                    };
                    let (patient, filter, why, page) =
                        match convert::find_request(&message, network) {
                            Ok(checked) => checked,
                            Err(violations) => return refused(invalid(violations)),
                        };
                    let (result, note) =
                        mpi.find_locations(principal, &patient, &filter, &why, page);
                    let response = result.map(|paged| pb::FindLocationsResponse {
                        locations: paged.items.iter().map(convert::wire_location).collect(),
                        next_page_token: paged.next.map(|n| n.to_string()).unwrap_or_default(),
                    });
                    (response, note)
                },
            )
            .await
    }
}

/// `Federation`.
#[derive(Clone)]
pub struct FederationAdapter(pub Ctx);

#[tonic::async_trait]
impl pb::federation_server::Federation for FederationAdapter {
    async fn link_regional_id(
        &self,
        request: Request<pb::LinkRegionalIdRequest>,
    ) -> Result<Response<pb::LinkRegionalIdResponse>, Status> {
        self.0
            .unary_noted(
                Operation::LinkRegionalId,
                request,
                |mpi, principal, message| {
                    let checked = bound_network(principal).and_then(|network| {
                        convert::own_network("network_id", &message.network_id, network)?;
                        convert::link_request(&message, network).map_err(invalid)
                    });
                    let (patient, as_of, regional) = match checked {
                        Ok(checked) => checked,
                        Err(error) => return refused(error),
                    };
                    let (result, note) = mpi.link_regional_id(&patient, as_of, &regional);
                    (
                        result.map(|created| pb::LinkRegionalIdResponse { created }),
                        note,
                    )
                },
            )
            .await
    }

    async fn unlink_regional_id(
        &self,
        request: Request<pb::UnlinkRegionalIdRequest>,
    ) -> Result<Response<pb::UnlinkRegionalIdResponse>, Status> {
        self.0
            .unary_noted(
                Operation::UnlinkRegionalId,
                request,
                |mpi, principal, message| {
                    let checked = bound_network(principal).and_then(|network| {
                        convert::own_network("network_id", &message.network_id, network)?;
                        convert::unlink_request(&message, network).map_err(invalid)
                    });
                    let regional = match checked {
                        Ok(checked) => checked,
                        Err(error) => return refused(error),
                    };
                    let (result, note) = mpi.unlink_regional_id(&regional);
                    (result.map(|()| pb::UnlinkRegionalIdResponse {}), note)
                },
            )
            .await
    }

    async fn cross_reference(
        &self,
        request: Request<pb::CrossReferenceRequest>,
    ) -> Result<Response<pb::CrossReferenceResponse>, Status> {
        self.0
            .unary_noted(
                Operation::CrossReference,
                request,
                |mpi, principal, message| {
                    let checked = bound_network(principal).and_then(|network| {
                        convert::cross_reference_request(&message, network).map_err(invalid)
                    });
                    let (patient, target, why) = match checked {
                        Ok(checked) => checked,
                        Err(error) => return refused(error),
                    };
                    let (result, note) = mpi.cross_reference(principal, &patient, target, &why);
                    let response = result.map(|regional_ids| pb::CrossReferenceResponse {
                        target_network_id: target.to_string(),
                        regional_ids,
                    });
                    (response, note)
                },
            )
            .await
    }
}

/// `Consent`.
#[derive(Clone)]
pub struct ConsentAdapter(pub Ctx);

#[tonic::async_trait]
impl pb::consent_server::Consent for ConsentAdapter {
    async fn record_consent(
        &self,
        request: Request<pb::RecordConsentRequest>,
    ) -> Result<Response<pb::ConsentRecord>, Status> {
        self.0
            .unary_noted(
                Operation::RecordConsent,
                request,
                |mpi, principal, message| {
                    let new = match convert::consent_request(&message, principal.network()) {
                        Ok(new) => new,
                        Err(violations) => return refused(invalid(violations)),
                    };
                    let (result, note) = mpi.record_consent(principal, new);
                    (result.map(|consent| convert::wire_consent(&consent)), note)
                },
            )
            .await
    }

    async fn revoke_consent(
        &self,
        request: Request<pb::RevokeConsentRequest>,
    ) -> Result<Response<pb::ConsentRecord>, Status> {
        self.0
            .unary_noted(
                Operation::RevokeConsent,
                request,
                |mpi, principal, message| {
                    let (id, reason) = match convert::revoke_request(&message) {
                        Ok(checked) => checked,
                        Err(violations) => return refused(invalid(violations)),
                    };
                    let (result, note) = mpi.revoke_consent(principal, id, &reason, message.purge);
                    (result.map(|consent| convert::wire_consent(&consent)), note)
                },
            )
            .await
    }

    async fn list_consents(
        &self,
        request: Request<pb::ListConsentsRequest>,
    ) -> Result<Response<pb::ListConsentsResponse>, Status> {
        self.0
            .unary_noted(
                Operation::ListConsents,
                request,
                |mpi, _principal, message| {
                    let (patient, page) = match convert::list_consents_request(&message) {
                        Ok(checked) => checked,
                        Err(violations) => return refused(invalid(violations)),
                    };
                    let (result, note) = mpi.list_consents(&patient, page);
                    let response = result.map(|paged| pb::ListConsentsResponse {
                        consents: paged.items.iter().map(convert::wire_consent).collect(),
                        next_page_token: paged.next.map(|n| n.to_string()).unwrap_or_default(),
                    });
                    (response, note)
                },
            )
            .await
    }
}

/// `Audit`.
#[derive(Clone)]
pub struct AuditAdapter(pub Ctx);

/// The stream type of `ExportAuditEvents`.
pub type AuditEventStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::AuditEvent, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl pb::audit_server::Audit for AuditAdapter {
    async fn access_disclosure(
        &self,
        request: Request<pb::AccessDisclosureRequest>,
    ) -> Result<Response<pb::AccessDisclosureResponse>, Status> {
        self.0
            .unary_noted(
                Operation::AccessDisclosure,
                request,
                |mpi, _principal, message| {
                    let (patient, from, to, page) =
                        match convert::access_disclosure_request(&message) {
                            Ok(checked) => checked,
                            Err(violations) => return refused(invalid(violations)),
                        };
                    let (result, note) =
                        mpi.access_disclosure(&patient, from, to, page.offset as u64, page.size);
                    let response = result.map(|(entries, next)| pb::AccessDisclosureResponse {
                        entries: entries
                            .into_iter()
                            .map(|entry| pb::DisclosureEntry {
                                sequence: entry.sequence,
                                at: Some(convert::timestamp(entry.at_micros)),
                                principal: entry.principal,
                                action: entry.action,
                                purpose: entry.purpose.map_or(0, |p| i32::from(p.code())),
                                emergency: entry.emergency.is_some(),
                                emergency_reason: entry.emergency.unwrap_or_default(),
                                disclosed: entry.disclosed,
                            })
                            .collect(),
                        next_page_token: next.map(|n| n.to_string()).unwrap_or_default(),
                    });
                    (response, note)
                },
            )
            .await
    }

    async fn verify_audit_chain(
        &self,
        request: Request<pb::VerifyAuditChainRequest>,
    ) -> Result<Response<pb::VerifyAuditChainResponse>, Status> {
        self.0
            .unary(
                Operation::VerifyAuditChain,
                request,
                |mpi, _principal, message| {
                    let (from, to) = (message.from_sequence, message.to_sequence);
                    if to != 0 && from > to {
                        return Err(ServiceError::invalid(
                            "to_sequence",
                            "must not be below from_sequence",
                        ));
                    }
                    let verification =
                        mpi_core::audit::verify_store(mpi.store().as_ref(), from, to)?;
                    if let Some((sequence, why)) = &verification.broken {
                        tracing::error!(sequence, failure = %why, "audit chain broken");
                    }
                    Ok(pb::VerifyAuditChainResponse {
                        intact: verification.intact(),
                        events_verified: verification.verified,
                        first_broken_sequence: verification
                            .broken
                            .as_ref()
                            .map_or(0, |broken| broken.0),
                        failure: verification
                            .broken
                            .map(|broken| broken.1)
                            .unwrap_or_default(),
                        head_hash: mpi_core::keys::hex(&verification.head.hash),
                    })
                },
            )
            .await
    }

    type ExportAuditEventsStream = AuditEventStream;

    async fn export_audit_events(
        &self,
        request: Request<pb::ExportAuditEventsRequest>,
    ) -> Result<Response<Self::ExportAuditEventsStream>, Status> {
        let started = Instant::now();
        let operation = Operation::ExportAuditEvents;
        let result = async {
            let principal = self.0.principals.of(&request)?;
            let decided = authorize(&principal, operation)
                .map_err(to_status)
                .and_then(|()| {
                    let message = request.get_ref();
                    let (from, to) = (message.from_sequence, message.to_sequence);
                    if to != 0 && from > to {
                        return Err(to_status(ServiceError::invalid(
                            "to_sequence",
                            "must not be below from_sequence",
                        )));
                    }
                    Ok((from.max(1), if to == 0 { u64::MAX } else { to }))
                });
            // The export is audited before the first event leaves (and so exports itself when
            // the range reaches the end).
            let (from, to) = self
                .0
                .audited(operation, &principal, decided, AuditNote::default())
                .await?;
            Ok::<_, Status>(export_stream(self.0.mpi.clone(), from, to))
        }
        .await;
        self.0.finish(operation, started, &result);
        result.map(Response::new)
    }
}

/// Rows read per store call while exporting.
const EXPORT_PAGE: usize = 1000;

/// Streams the stored events `from..=to`, page by page, decoded for the wire.
fn export_stream(mpi: Mpi, from: u64, to: u64) -> AuditEventStream {
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        let mut next = from;
        while next <= to {
            let store = mpi.store().clone();
            let page =
                tokio::task::spawn_blocking(move || store.audit_rows(next, to, EXPORT_PAGE)).await;
            let rows = match page {
                Ok(Ok(rows)) => rows,
                Ok(Err(error)) => {
                    let _ = sender
                        .send(Err(to_status(ServiceError::Store(error))))
                        .await;
                    return;
                }
                Err(_) => {
                    let _ = sender.send(Err(Status::internal("internal error"))).await;
                    return;
                }
            };
            let full = rows.len() == EXPORT_PAGE;
            for row in rows {
                next = row.sequence + 1;
                if sender.send(wire_event(&row)).await.is_err() {
                    return;
                }
            }
            if !full {
                return;
            }
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(receiver))
}

/// One stored audit row on the wire. A row whose content does not decode is an error in the
/// stream, not a silent gap: the chain is then broken and VerifyAuditChain says where.
fn wire_event(row: &mpi_core::store::AuditRow) -> Result<pb::AuditEvent, Status> {
    let event = mpi_core::audit::decode_content(&row.content).map_err(|error| {
        tracing::error!(sequence = row.sequence, error = %error, "audit row does not decode");
        Status::data_loss(format!("audit event {} does not decode", row.sequence))
    })?;
    Ok(pb::AuditEvent {
        sequence: row.sequence,
        at: Some(convert::timestamp(event.at_micros)),
        principal: event.principal,
        action: event.action,
        purpose: i32::from(event.purpose),
        person_key: event.person_key.map(|key| key.to_hex()).unwrap_or_default(),
        outcome: event.outcome,
        count: event.count,
        emergency: event.emergency,
        emergency_reason: event.emergency_reason,
        deciding_consent_ids: event.deciding_consents,
        previous_hash: mpi_core::keys::hex(&row.previous_hash),
        hash: mpi_core::keys::hex(&row.hash),
    })
}
