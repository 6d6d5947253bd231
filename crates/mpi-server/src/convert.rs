//! Wire messages → validated domain values. Every rejection names its field path and rule;
//! only this module (with the adapters) knows both the wire and the domain types.

use chrono::NaiveDate;
use mpi_core::consent::{
    Consent, ConsentGrant, ConsentId, ConsentStatus, DisclosureScope, Purpose, Recipients,
    SourceNetworks,
};
use mpi_core::dates::{parse_date, parse_optional_date};
use mpi_core::ids::{FacilityCode, InsuredId, NetworkId, ProviderPersonRef, RegionalId};
use mpi_core::location::{Location, LocationId, RecordKind, RecordReference};
use mpi_core::qualification::{
    Demographics, InsuredPatient, QualificationPeriod, QualificationRecord, ReasonOfLoss, Sex,
};
use mpi_core::records::{LocationFilter, NewConsent, Page, PatientRef, Registration, Why};
use mpi_core::{FieldViolation, ServiceError};
use mpi_proto::v1 as pb;

/// Validation result: every violation found, not only the first.
pub type Checked<T> = Result<T, Vec<FieldViolation>>;

fn join(prefix: &str, field: &str) -> String {
    if prefix.is_empty() {
        field.to_owned()
    } else {
        format!("{prefix}.{field}")
    }
}

/// A required insured ID at `field`.
pub fn insured_id(field: &str, message: Option<&pb::InsuredId>) -> Checked<InsuredId> {
    let form = message.and_then(|m| m.form.as_ref()).ok_or_else(|| {
        vec![FieldViolation::new(
            field,
            "insured ID is required (parts or member_id)",
        )]
    })?;
    match form {
        pb::insured_id::Form::Parts(parts) => InsuredId::from_parts(
            &parts.insurer_number,
            &parts.symbol,
            &parts.number,
            &parts.branch,
        )
        .map_err(|error| {
            vec![FieldViolation::new(
                join(&join(field, "parts"), error.field()),
                &error,
            )]
        }),
        pb::insured_id::Form::MemberId(member_id) => InsuredId::parse_member_id(member_id)
            .map_err(|error| vec![FieldViolation::new(join(field, "member_id"), &error)]),
    }
}

/// A required date at `field`.
pub fn date(field: &str, value: &str) -> Checked<NaiveDate> {
    if value.is_empty() {
        return Err(vec![FieldViolation::new(
            field,
            "is required (\"YYYY-MM-DD\")",
        )]);
    }
    parse_date(value).map_err(|error| vec![FieldViolation::new(field, &error)])
}

/// An optional date at `field`.
pub fn optional_date(field: &str, value: &str) -> Checked<Option<NaiveDate>> {
    parse_optional_date(value).map_err(|error| vec![FieldViolation::new(field, &error)])
}

/// Sex, where given (`SEX_UNSPECIFIED` is absent).
pub fn optional_sex(field: &str, value: i32) -> Checked<Option<Sex>> {
    match pb::Sex::try_from(value) {
        Ok(pb::Sex::Unspecified) => Ok(None),
        Ok(pb::Sex::Male) => Ok(Some(Sex::Male)),
        Ok(pb::Sex::Female) => Ok(Some(Sex::Female)),
        Ok(pb::Sex::NotRecorded) => Ok(Some(Sex::NotRecorded)),
        Err(_) => Err(vec![FieldViolation::new(
            field,
            format!("unknown sex value {value}"),
        )]),
    }
}

/// Collects the violations of several checks, or their values when all passed.
macro_rules! all_ok {
    ($($name:ident = $check:expr;)*) => {
        let mut violations: Vec<FieldViolation> = Vec::new();
        $(
            let $name = match $check {
                Ok(value) => Some(value),
                Err(found) => { violations.extend(found); None }
            };
        )*
        if !violations.is_empty() {
            return Err(violations);
        }
        // Every check passed, so every value is present.
        $(let Some($name) = $name else { return Err(violations) };)*
    };
}

/// An insured patient at `field`: the ID and, optionally, birth date and sex together.
pub fn insured_patient(
    field: &str,
    message: Option<&pb::InsuredPatient>,
) -> Checked<InsuredPatient> {
    let Some(message) = message else {
        return Err(vec![FieldViolation::new(field, "patient is required")]);
    };
    all_ok! {
        insured = insured_id(&join(field, "insured_id"), message.insured_id.as_ref());
        birth_date = optional_date(&join(field, "birth_date"), &message.birth_date);
        sex = optional_sex(&join(field, "sex"), message.sex);
    }
    let demographics = match (birth_date, sex) {
        (Some(birth_date), Some(sex)) => Some(Demographics { birth_date, sex }),
        (None, None) => None,
        (Some(_), None) => {
            return Err(vec![FieldViolation::new(
                join(field, "sex"),
                "is required when birth_date is given",
            )]);
        }
        (None, Some(_)) => {
            return Err(vec![FieldViolation::new(
                join(field, "birth_date"),
                "is required when sex is given",
            )]);
        }
    };
    Ok(InsuredPatient {
        insured_id: insured,
        demographics,
    })
}

/// One record of the history feed; field paths are relative to the record.
pub fn qualification_record(record: &pb::QualificationRecord) -> Checked<QualificationRecord> {
    all_ok! {
        person_ref = provider_ref("provider_person_ref", &record.provider_person_ref);
        insured = insured_id("insured_id", record.insured_id.as_ref());
        start = date("qualification_start", &record.qualification_start);
        end = optional_date("qualification_end", &record.qualification_end);
        birth_date = date("birth_date", &record.birth_date);
        sex = optional_sex("sex", record.sex)
            .and_then(|sex| sex.ok_or_else(|| vec![FieldViolation::new("sex", "is required")]));
        reason_of_loss = reason_of_loss(record.reason_of_loss);
    }
    let period = QualificationPeriod::new(start, end)
        .map_err(|error| vec![FieldViolation::new("qualification_end", &error)])?;
    if start < birth_date {
        return Err(vec![FieldViolation::new(
            "qualification_start",
            "must not be before birth_date",
        )]);
    }
    if reason_of_loss.is_some() && end.is_none() {
        return Err(vec![FieldViolation::new(
            "reason_of_loss",
            "is only allowed with qualification_end",
        )]);
    }
    Ok(QualificationRecord {
        person_ref,
        insured_id: insured,
        period,
        birth_date,
        sex,
        reason_of_loss,
    })
}

fn reason_of_loss(value: i32) -> Checked<Option<ReasonOfLoss>> {
    match pb::ReasonOfLoss::try_from(value) {
        Ok(pb::ReasonOfLoss::Unspecified) => Ok(None),
        Ok(pb::ReasonOfLoss::Death) => Ok(Some(ReasonOfLoss::Death)),
        Ok(pb::ReasonOfLoss::Welfare) => Ok(Some(ReasonOfLoss::Welfare)),
        Ok(pb::ReasonOfLoss::OtherInsurance) => Ok(Some(ReasonOfLoss::OtherInsurance)),
        Ok(pb::ReasonOfLoss::Other) => Ok(Some(ReasonOfLoss::Other)),
        Err(_) => Err(vec![FieldViolation::new(
            "reason_of_loss",
            format!("unknown reason value {value}"),
        )]),
    }
}

/// A required provider person reference at `field`.
pub fn provider_ref(field: &str, value: &str) -> Checked<ProviderPersonRef> {
    ProviderPersonRef::parse(value).map_err(|error| vec![FieldViolation::new(field, &error)])
}

/// A required reason at `field`.
pub fn reason(field: &str, value: &str) -> Checked<mpi_core::reason::Reason> {
    mpi_core::reason::Reason::parse(value).map_err(|error| vec![FieldViolation::new(field, &error)])
}

/// A merge ID at `field`.
pub fn merge_id(field: &str, value: &str) -> Checked<mpi_core::store::MergeId> {
    mpi_core::store::MergeId::parse(value).ok_or_else(|| {
        vec![FieldViolation::new(
            field,
            "must be the 32 hex digits MergePersons returned",
        )]
    })
}

/// A timestamp from microseconds since the Unix epoch.
pub fn timestamp(micros: i64) -> pbjson_types::Timestamp {
    pbjson_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1000) as i32,
    }
}

/// MergePersons: the surviving and merged references and the reason.
pub fn merge_request(
    message: &pb::MergePersonsRequest,
) -> Checked<(
    ProviderPersonRef,
    ProviderPersonRef,
    mpi_core::reason::Reason,
)> {
    all_ok! {
        surviving = provider_ref("surviving_person_ref", &message.surviving_person_ref);
        merged = provider_ref("merged_person_ref", &message.merged_person_ref);
        why = reason("reason", &message.reason);
    }
    Ok((surviving, merged, why))
}

/// UnmergePersons: the merge and the reason.
pub fn unmerge_request(
    message: &pb::UnmergePersonsRequest,
) -> Checked<(mpi_core::store::MergeId, mpi_core::reason::Reason)> {
    all_ok! {
        merge = merge_id("merge_id", &message.merge_id);
        why = reason("reason", &message.reason);
    }
    Ok((merge, why))
}

/// One side of AreSamePerson at `field`: the patient and the day (today in Japan if not given).
fn insured_at(
    field: &str,
    side: Option<&pb::InsuredIdAtDate>,
) -> Checked<(InsuredPatient, NaiveDate)> {
    let Some(side) = side else {
        return Err(vec![FieldViolation::new(field, "is required")]);
    };
    all_ok! {
        patient = insured_patient(&join(field, "patient"), side.patient.as_ref());
        as_of = optional_date(&join(field, "as_of"), &side.as_of);
    }
    Ok((
        patient,
        as_of.unwrap_or_else(mpi_core::dates::today_in_japan),
    ))
}

/// AreSamePerson: both sides; the purpose must be stated.
pub fn are_same_person_request(
    message: &pb::AreSamePersonRequest,
) -> Checked<((InsuredPatient, NaiveDate), (InsuredPatient, NaiveDate))> {
    all_ok! {
        first = insured_at("first", message.first.as_ref());
        second = insured_at("second", message.second.as_ref());
        _purpose = purpose("purpose", message.purpose);
    }
    Ok((first, second))
}

/// A purpose that must be given.
pub fn purpose(field: &str, value: i32) -> Checked<pb::Purpose> {
    match pb::Purpose::try_from(value) {
        Ok(pb::Purpose::Unspecified) => {
            Err(vec![FieldViolation::new(field, "purpose is required")])
        }
        Ok(purpose) => Ok(purpose),
        Err(_) => Err(vec![FieldViolation::new(
            field,
            format!("unknown purpose value {value}"),
        )]),
    }
}

/// A purpose that must be given, as the domain's.
pub fn domain_purpose(field: &str, value: i32) -> Checked<Purpose> {
    purpose(field, value).and_then(|_| {
        u8::try_from(value)
            .ok()
            .and_then(Purpose::from_code)
            .ok_or_else(|| vec![FieldViolation::new(field, "purpose is required")])
    })
}

/// A required record kind at `field`.
pub fn record_kind(field: &str, value: i32) -> Checked<RecordKind> {
    match u8::try_from(value).ok().and_then(RecordKind::from_code) {
        Some(kind) => Ok(kind),
        None if value == 0 => Err(vec![FieldViolation::new(field, "record kind is required")]),
        None => Err(vec![FieldViolation::new(
            field,
            format!("unknown record kind value {value}"),
        )]),
    }
}

/// A list of record kinds (empty means every kind); duplicates are harmless.
pub fn record_kinds(field: &str, values: &[i32]) -> Checked<Vec<RecordKind>> {
    let mut violations = Vec::new();
    let mut kinds = Vec::new();
    for (index, value) in values.iter().enumerate() {
        match record_kind(&format!("{field}[{index}]"), *value) {
            Ok(kind) if !kinds.contains(&kind) => kinds.push(kind),
            Ok(_) => {}
            Err(found) => violations.extend(found),
        }
    }
    if violations.is_empty() {
        Ok(kinds)
    } else {
        Err(violations)
    }
}

/// A required network ID at `field`.
pub fn network_id(field: &str, value: &str) -> Checked<NetworkId> {
    NetworkId::parse(value).map_err(|error| vec![FieldViolation::new(field, &error)])
}

/// A required facility code at `field`.
pub fn facility_code(field: &str, value: &str) -> Checked<FacilityCode> {
    FacilityCode::parse(value).map_err(|error| vec![FieldViolation::new(field, &error)])
}

/// Fails with PERMISSION_DENIED when a request names a network other than the caller's own
/// (an empty field means the caller's own). A malformed ID is INVALID_ARGUMENT.
pub fn own_network(field: &str, value: &str, caller: NetworkId) -> Result<(), ServiceError> {
    if value.is_empty() {
        return Ok(());
    }
    let named = network_id(field, value).map_err(ServiceError::InvalidArgument)?;
    if named == caller {
        Ok(())
    } else {
        Err(ServiceError::PermissionDenied(format!(
            "{field}: network {caller} may act only for itself, not for {named}"
        )))
    }
}

/// A regional ID of `network` at `field`.
pub fn regional_id(field: &str, value: &str, network: NetworkId) -> Checked<RegionalId> {
    RegionalId::new(network, value).map_err(|error| vec![FieldViolation::new(field, &error)])
}

/// A patient reference at `field`: by insured ID, or by the caller's own regional ID (only
/// callers bound to a network have one).
pub fn patient_ref(
    field: &str,
    message: Option<&pb::PatientReference>,
    caller_network: Option<NetworkId>,
) -> Checked<PatientRef> {
    match message.and_then(|m| m.patient.as_ref()) {
        None => Err(vec![FieldViolation::new(
            field,
            "patient is required (insured or regional_id)",
        )]),
        Some(pb::patient_reference::Patient::Insured(insured)) => {
            insured_patient(&join(field, "insured"), Some(insured)).map(PatientRef::Insured)
        }
        Some(pb::patient_reference::Patient::RegionalId(local)) => {
            let field = join(field, "regional_id");
            match caller_network {
                Some(network) => regional_id(&field, local, network).map(PatientRef::Regional),
                None => Err(vec![FieldViolation::new(
                    field,
                    "only callers bound to a network can name a patient by regional ID; use insured",
                )]),
            }
        }
    }
}

/// A record reference at `field`.
pub fn record_reference(field: &str, value: &str) -> Checked<RecordReference> {
    RecordReference::parse(value).map_err(|error| vec![FieldViolation::new(field, &error)])
}

/// One item of RegisterLocations; field paths are relative to the item. The caller's network
/// is the location's.
pub fn registration(item: &pb::LocationRegistration, network: NetworkId) -> Checked<Registration> {
    all_ok! {
        patient = patient_ref("patient", item.patient.as_ref(), Some(network));
        facility = facility_code("facility_code", &item.facility_code);
        kind = record_kind("kind", item.kind);
        first = date("first_service_date", &item.first_service_date);
        last = optional_date("last_service_date", &item.last_service_date);
        reference = record_reference("reference", &item.reference);
    }
    let last = last.unwrap_or(first);
    if last < first {
        return Err(vec![FieldViolation::new(
            "last_service_date",
            "must not be before first_service_date",
        )]);
    }
    let today = mpi_core::dates::today_in_japan();
    if first > today {
        return Err(vec![FieldViolation::new(
            "first_service_date",
            "must not be in the future",
        )]);
    }
    Ok(Registration {
        patient,
        location: Location {
            id: LocationId {
                network,
                facility,
                kind,
                reference,
            },
            first_service: first,
            last_service: last,
            registered_at_micros: 0,
        },
    })
}

/// One key of WithdrawLocations at `field`, in the caller's network.
pub fn location_key(field: &str, key: &pb::LocationKey, network: NetworkId) -> Checked<LocationId> {
    all_ok! {
        facility = facility_code(&join(field, "facility_code"), &key.facility_code);
        kind = record_kind(&join(field, "kind"), key.kind);
        reference = record_reference(&join(field, "reference"), &key.reference);
    }
    Ok(LocationId {
        network,
        facility,
        kind,
        reference,
    })
}

/// Purpose and, for emergencies, the reason.
pub fn why(purpose_field: &str, purpose: i32, reason_field: &str, reason: &str) -> Checked<Why> {
    let purpose = domain_purpose(purpose_field, purpose)?;
    match (purpose, reason.is_empty()) {
        (Purpose::Emergency, _) => {
            let reason = self::reason(reason_field, reason)?;
            Ok(Why {
                purpose,
                emergency_reason: Some(reason),
            })
        }
        (_, true) => Ok(Why {
            purpose,
            emergency_reason: None,
        }),
        (_, false) => Err(vec![FieldViolation::new(
            reason_field,
            "is only allowed with PURPOSE_EMERGENCY",
        )]),
    }
}

/// Default and largest page sizes (common.proto).
pub const PAGE_DEFAULT: usize = 100;
/// See [`PAGE_DEFAULT`].
pub const PAGE_MAX: usize = 1000;

/// A page: size 0 means the default, larger than the maximum is capped; the token is the one
/// the previous page returned.
pub fn page(size_field: &str, size: i32, token_field: &str, token: &str) -> Checked<Page> {
    all_ok! {
        size = match size {
            0 => Ok(PAGE_DEFAULT),
            n if n < 0 => Err(vec![FieldViolation::new(size_field, "must not be negative")]),
            n => Ok((n as usize).min(PAGE_MAX)),
        };
        offset = page_token(token_field, token);
    }
    Ok(Page {
        size,
        offset: offset as usize,
    })
}

/// A page token: empty for the first page, else the decimal position the server returned.
pub fn page_token(field: &str, token: &str) -> Checked<u64> {
    if token.is_empty() {
        return Ok(0);
    }
    token
        .parse::<u64>()
        .ok()
        .filter(|_| token.len() <= 20 && token.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| {
            vec![FieldViolation::new(
                field,
                "is not a page token this server issued",
            )]
        })
}

/// FindLocations.
pub fn find_request(
    message: &pb::FindLocationsRequest,
    network: NetworkId,
) -> Checked<(PatientRef, LocationFilter, Why, Page)> {
    all_ok! {
        patient = patient_ref("patient", message.patient.as_ref(), Some(network));
        kinds = record_kinds("kinds", &message.kinds);
        from = optional_date("service_from", &message.service_from);
        to = optional_date("service_to", &message.service_to);
        why = why("purpose", message.purpose, "emergency_reason", &message.emergency_reason);
        page = page("page_size", message.page_size, "page_token", &message.page_token);
    }
    if let (Some(from), Some(to)) = (from, to)
        && to < from
    {
        return Err(vec![FieldViolation::new(
            "service_to",
            "must not be before service_from",
        )]);
    }
    Ok((patient, LocationFilter { kinds, from, to }, why, page))
}

/// CrossReference.
pub fn cross_reference_request(
    message: &pb::CrossReferenceRequest,
    network: NetworkId,
) -> Checked<(PatientRef, NetworkId, Why)> {
    all_ok! {
        patient = patient_ref("patient", message.patient.as_ref(), Some(network));
        target = network_id("target_network_id", &message.target_network_id);
        why = why("purpose", message.purpose, "emergency_reason", &message.emergency_reason);
    }
    Ok((patient, target, why))
}

/// LinkRegionalId: the patient, the day, the regional ID of the caller's network.
pub fn link_request(
    message: &pb::LinkRegionalIdRequest,
    network: NetworkId,
) -> Checked<(InsuredPatient, NaiveDate, RegionalId)> {
    all_ok! {
        patient = insured_patient("patient", message.patient.as_ref());
        as_of = optional_date("as_of", &message.as_of);
        regional = regional_id("regional_id", &message.regional_id, network);
    }
    Ok((
        patient,
        as_of.unwrap_or_else(mpi_core::dates::today_in_japan),
        regional,
    ))
}

/// UnlinkRegionalId.
pub fn unlink_request(
    message: &pb::UnlinkRegionalIdRequest,
    network: NetworkId,
) -> Checked<RegionalId> {
    all_ok! {
        regional = regional_id("regional_id", &message.regional_id, network);
        _why = reason("reason", &message.reason);
    }
    Ok(regional)
}

fn network_list(field: &str, values: &[String]) -> Checked<Vec<NetworkId>> {
    if values.is_empty() {
        return Err(vec![FieldViolation::new(field, "must name at least one")]);
    }
    let mut violations = Vec::new();
    let mut found = Vec::new();
    for (index, value) in values.iter().enumerate() {
        match network_id(&format!("{field}[{index}]"), value) {
            Ok(network) => found.push(network),
            Err(more) => violations.extend(more),
        }
    }
    if violations.is_empty() {
        Ok(found)
    } else {
        Err(violations)
    }
}

fn disclosure_scope(field: &str, scope: Option<&pb::DisclosureScope>) -> Checked<DisclosureScope> {
    let Some(scope) = scope else {
        return Err(vec![FieldViolation::new(
            field,
            "is required for a disclosure consent",
        )]);
    };
    let recipients_field = join(field, "recipients");
    let recipients = match scope
        .recipients
        .as_ref()
        .and_then(|r| r.recipients.as_ref())
    {
        None => Err(vec![FieldViolation::new(
            &recipients_field,
            "is required (any_facility, networks or facilities)",
        )]),
        Some(pb::recipients::Recipients::AnyFacility(true)) => Ok(Recipients::AnyFacility),
        Some(pb::recipients::Recipients::AnyFacility(false)) => Err(vec![FieldViolation::new(
            join(&recipients_field, "any_facility"),
            "must be true when set",
        )]),
        Some(pb::recipients::Recipients::Networks(list)) => network_list(
            &join(&recipients_field, "networks.network_ids"),
            &list.network_ids,
        )
        .map(Recipients::Networks),
        Some(pb::recipients::Recipients::Facilities(list)) => {
            let field = join(&recipients_field, "facilities.facility_codes");
            if list.facility_codes.is_empty() {
                Err(vec![FieldViolation::new(field, "must name at least one")])
            } else {
                list.facility_codes
                    .iter()
                    .enumerate()
                    .map(|(index, code)| facility_code(&format!("{field}[{index}]"), code))
                    .collect::<Result<Vec<_>, _>>()
                    .map(Recipients::Facilities)
            }
        }
    };
    let sources = match (
        scope.all_source_networks,
        scope.source_network_ids.is_empty(),
    ) {
        (true, true) => Ok(SourceNetworks::All),
        (true, false) => Err(vec![FieldViolation::new(
            join(field, "source_network_ids"),
            "must be empty when all_source_networks is set",
        )]),
        (false, true) => Ok(SourceNetworks::Recording),
        (false, false) => network_list(
            &join(field, "source_network_ids"),
            &scope.source_network_ids,
        )
        .map(SourceNetworks::Listed),
    };
    let purposes = scope
        .purposes
        .iter()
        .enumerate()
        .map(|(index, p)| domain_purpose(&format!("{}[{index}]", join(field, "purposes")), *p))
        .collect::<Result<Vec<_>, _>>();
    all_ok! {
        recipients = recipients;
        sources = sources;
        kinds = record_kinds(&join(field, "kinds"), &scope.kinds);
        purposes = purposes;
    }
    Ok(DisclosureScope {
        sources,
        recipients,
        kinds,
        purposes,
    })
}

/// An evidence reference: 1 to 128 printable characters.
pub fn evidence(field: &str, value: &str) -> Checked<String> {
    if value.trim().is_empty() {
        return Err(vec![FieldViolation::new(
            field,
            "is required (the consent form or document ID)",
        )]);
    }
    if value.chars().count() > mpi_core::records::EVIDENCE_MAX_CHARS {
        return Err(vec![FieldViolation::new(
            field,
            format!(
                "must be at most {} characters",
                mpi_core::records::EVIDENCE_MAX_CHARS
            ),
        )]);
    }
    if value.chars().any(char::is_control) {
        return Err(vec![FieldViolation::new(
            field,
            "must not contain control characters",
        )]);
    }
    Ok(value.to_owned())
}

/// RecordConsent. A network caller's empty `network_id` is its own network; an operator must
/// name it for participation and disclosure and must leave it empty for an opt-out.
pub fn consent_request(
    message: &pb::RecordConsentRequest,
    caller_network: Option<NetworkId>,
) -> Checked<NewConsent> {
    let network = || match (message.network_id.is_empty(), caller_network) {
        (true, Some(own)) => Ok(own),
        (true, None) => Err(vec![FieldViolation::new(
            "network_id",
            "is required: the network the consent was given to",
        )]),
        (false, _) => network_id("network_id", &message.network_id),
    };
    let grant = match pb::ConsentKind::try_from(message.kind) {
        Ok(pb::ConsentKind::Participation) => network().and_then(|network| {
            if message.scope.is_some() {
                Err(vec![FieldViolation::new(
                    "scope",
                    "is only allowed for a disclosure consent",
                )])
            } else {
                Ok(ConsentGrant::Participation { network })
            }
        }),
        Ok(pb::ConsentKind::Disclosure) => {
            all_ok! {
                network = network();
                scope = disclosure_scope("scope", message.scope.as_ref());
            }
            Ok(ConsentGrant::Disclosure { network, scope })
        }
        Ok(pb::ConsentKind::OptOut) => {
            if !message.network_id.is_empty() {
                Err(vec![FieldViolation::new(
                    "network_id",
                    "must be empty for an opt-out (it applies everywhere)",
                )])
            } else if message.scope.is_some() {
                Err(vec![FieldViolation::new(
                    "scope",
                    "is only allowed for a disclosure consent",
                )])
            } else {
                Ok(ConsentGrant::OptOut)
            }
        }
        Ok(pb::ConsentKind::Unspecified) => Err(vec![FieldViolation::new(
            "kind",
            "consent kind is required",
        )]),
        Err(_) => Err(vec![FieldViolation::new(
            "kind",
            format!("unknown consent kind value {}", message.kind),
        )]),
    };
    all_ok! {
        patient = patient_ref("patient", message.patient.as_ref(), caller_network);
        grant = grant;
        valid_from = optional_date("valid_from", &message.valid_from);
        valid_until = optional_date("valid_until", &message.valid_until);
        evidence = evidence("evidence_reference", &message.evidence_reference);
    }
    Ok(NewConsent {
        patient,
        grant,
        valid_from,
        valid_until,
        evidence,
    })
}

/// A consent ID at `field`.
pub fn consent_id(field: &str, value: &str) -> Checked<ConsentId> {
    ConsentId::parse(value).ok_or_else(|| {
        vec![FieldViolation::new(
            field,
            "must be the 32 hex digits RecordConsent returned",
        )]
    })
}

/// RevokeConsent.
pub fn revoke_request(
    message: &pb::RevokeConsentRequest,
) -> Checked<(ConsentId, mpi_core::reason::Reason)> {
    all_ok! {
        id = consent_id("consent_id", &message.consent_id);
        why = reason("reason", &message.reason);
    }
    Ok((id, why))
}

/// ListConsents.
pub fn list_consents_request(message: &pb::ListConsentsRequest) -> Checked<(PatientRef, Page)> {
    all_ok! {
        patient = patient_ref("patient", message.patient.as_ref(), None);
        _purpose = purpose("purpose", message.purpose);
        page = page("page_size", message.page_size, "page_token", &message.page_token);
    }
    Ok((patient, page))
}

fn micros(field: &str, value: Option<&pbjson_types::Timestamp>) -> Checked<Option<i64>> {
    let Some(value) = value else { return Ok(None) };
    if !(0..1_000_000_000).contains(&value.nanos) {
        return Err(vec![FieldViolation::new(
            field,
            "nanos must be between 0 and 999999999",
        )]);
    }
    value
        .seconds
        .checked_mul(1_000_000)
        .and_then(|s| s.checked_add(i64::from(value.nanos / 1000)))
        .map(Some)
        .ok_or_else(|| vec![FieldViolation::new(field, "is out of range")])
}

/// AccessDisclosure: the patient, the period, the page size and where to continue.
pub fn access_disclosure_request(
    message: &pb::AccessDisclosureRequest,
) -> Checked<(PatientRef, Option<i64>, Option<i64>, Page)> {
    all_ok! {
        patient = patient_ref("patient", message.patient.as_ref(), None);
        from = micros("from", message.from.as_ref());
        to = micros("to", message.to.as_ref());
        _purpose = purpose("purpose", message.purpose);
        page = page("page_size", message.page_size, "page_token", &message.page_token);
    }
    if let (Some(from), Some(to)) = (from, to)
        && to < from
    {
        return Err(vec![FieldViolation::new("to", "must not be before from")]);
    }
    Ok((patient, from, to, page))
}

/// A date on the wire.
pub fn wire_date(date: NaiveDate) -> String {
    mpi_core::dates::format_date(date)
}

/// A stored location on the wire.
pub fn wire_location(location: &Location) -> pb::Location {
    pb::Location {
        network_id: location.id.network.as_str().to_owned(),
        facility_code: location.id.facility.as_str().to_owned(),
        kind: i32::from(location.id.kind.code()),
        first_service_date: wire_date(location.first_service),
        last_service_date: wire_date(location.last_service),
        reference: location.id.reference.as_str().to_owned(),
        registered_at: Some(timestamp(location.registered_at_micros)),
    }
}

fn strings<T: ToString>(items: &[T]) -> Vec<String> {
    items.iter().map(ToString::to_string).collect()
}

/// A stored consent on the wire, with its state as of today.
pub fn wire_consent(consent: &Consent) -> pb::ConsentRecord {
    let today = mpi_core::dates::today_in_japan();
    let (kind, network, scope) = match &consent.grant {
        ConsentGrant::Participation { network } => {
            (pb::ConsentKind::Participation, network.to_string(), None)
        }
        ConsentGrant::OptOut => (pb::ConsentKind::OptOut, String::new(), None),
        ConsentGrant::Disclosure { network, scope } => {
            let (source_network_ids, all_source_networks) = match &scope.sources {
                SourceNetworks::Recording => (Vec::new(), false),
                SourceNetworks::Listed(list) => (strings(list), false),
                SourceNetworks::All => (Vec::new(), true),
            };
            let recipients = match &scope.recipients {
                Recipients::AnyFacility => pb::recipients::Recipients::AnyFacility(true),
                Recipients::Networks(list) => {
                    pb::recipients::Recipients::Networks(pb::NetworkIds {
                        network_ids: strings(list),
                    })
                }
                Recipients::Facilities(list) => {
                    pb::recipients::Recipients::Facilities(pb::FacilityCodes {
                        facility_codes: strings(list),
                    })
                }
            };
            let scope = pb::DisclosureScope {
                source_network_ids,
                all_source_networks,
                recipients: Some(pb::Recipients {
                    recipients: Some(recipients),
                }),
                kinds: scope.kinds.iter().map(|k| i32::from(k.code())).collect(),
                purposes: scope.purposes.iter().map(|p| i32::from(p.code())).collect(),
            };
            (
                pb::ConsentKind::Disclosure,
                network.to_string(),
                Some(scope),
            )
        }
    };
    let status = match consent.status(today) {
        ConsentStatus::Active => pb::ConsentStatus::Active,
        ConsentStatus::Revoked => pb::ConsentStatus::Revoked,
        ConsentStatus::Expired => pb::ConsentStatus::Expired,
    };
    let revocation = consent.revocation.as_ref();
    pb::ConsentRecord {
        consent_id: consent.id.to_hex(),
        kind: kind.into(),
        network_id: network,
        scope,
        valid_from: wire_date(consent.valid_from),
        valid_until: consent.valid_until.map(wire_date).unwrap_or_default(),
        evidence_reference: consent.evidence.clone(),
        status: status.into(),
        recorded_by: consent.recorded_by.clone(),
        recorded_at: Some(timestamp(consent.recorded_at_micros)),
        revoked_by: revocation.map(|r| r.by.clone()).unwrap_or_default(),
        revoked_at: revocation.map(|r| timestamp(r.at_micros)),
        revocation_reason: revocation.map(|r| r.reason.clone()).unwrap_or_default(),
        purged: revocation.is_some_and(|r| r.purged),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parts(insurer: &str, number: &str, branch: &str) -> Option<pb::InsuredId> {
        Some(pb::InsuredId {
            form: Some(pb::insured_id::Form::Parts(pb::InsuredIdParts {
                insurer_number: insurer.into(),
                symbol: String::new(),
                number: number.into(),
                branch: branch.into(),
            })),
        })
    }

    #[test]
    fn field_paths_name_the_broken_part() {
        let error = insured_id(
            "first.patient.insured_id",
            parts("06130487", "1", "").as_ref(),
        )
        .unwrap_err();
        assert_eq!(
            error[0].field,
            "first.patient.insured_id.parts.insurer_number"
        );
        assert_eq!(
            error[0].rule,
            "insurer number check digit must be 8, found 7"
        );
        let error = insured_id("x", parts("06130488", "1", "1").as_ref()).unwrap_err();
        assert_eq!(error[0].field, "x.parts.branch");
        let error = insured_id("x", None).unwrap_err();
        assert_eq!(error[0].field, "x");
    }

    #[test]
    fn records_report_every_violation() {
        let record = pb::QualificationRecord {
            provider_person_ref: "p 1".into(),
            insured_id: parts("06130488", "1", "01"),
            qualification_start: "2020-13-01".into(),
            birth_date: String::new(),
            ..Default::default()
        };
        let fields: Vec<_> = qualification_record(&record)
            .unwrap_err()
            .into_iter()
            .map(|v| v.field)
            .collect();
        assert_eq!(
            fields,
            [
                "provider_person_ref",
                "qualification_start",
                "birth_date",
                "sex"
            ]
        );
    }

    mod hostile {
        //! Property tests over request validation (the `requests` fuzz target's functions):
        //! whatever the fields hold, validation answers, and a refusal names a field and a rule.
        use super::*;
        use proptest::prelude::*;

        fn text() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<String>(),
                "[0-9０-９:\\- ]{0,40}",
                "[0-9]{4}-[0-9]{2}-[0-9]{2}",
                "[0-9]{2}-[0-9]{4}",
                "[0-9]{10}",
            ]
        }

        fn patient() -> impl Strategy<Value = Option<pb::PatientReference>> {
            use pb::patient_reference::Patient;
            let insured = (text(), text(), text(), text(), text(), any::<i32>()).prop_map(
                |(insurer, symbol, number, branch, birth, sex)| {
                    Patient::Insured(pb::InsuredPatient {
                        insured_id: Some(pb::InsuredId {
                            form: Some(pb::insured_id::Form::Parts(pb::InsuredIdParts {
                                insurer_number: insurer,
                                symbol,
                                number,
                                branch,
                            })),
                        }),
                        birth_date: birth,
                        sex,
                    })
                },
            );
            let member = (text(), text()).prop_map(|(member, birth)| {
                Patient::Insured(pb::InsuredPatient {
                    insured_id: Some(pb::InsuredId {
                        form: Some(pb::insured_id::Form::MemberId(member)),
                    }),
                    birth_date: birth,
                    sex: 0,
                })
            });
            let regional = text().prop_map(Patient::RegionalId);
            proptest::option::of(prop_oneof![insured, member, regional].prop_map(|patient| {
                pb::PatientReference {
                    patient: Some(patient),
                }
            }))
        }

        fn answered<T>(checked: Checked<T>) -> Result<(), TestCaseError> {
            if let Err(violations) = checked {
                prop_assert!(!violations.is_empty());
                for violation in violations {
                    prop_assert!(!violation.field.is_empty() && !violation.rule.is_empty());
                }
            }
            Ok(())
        }

        fn network() -> NetworkId {
            NetworkId::parse("13-0001").unwrap()
        }

        proptest! {
            #[test]
            fn registrations(patient in patient(), facility in text(), kind in any::<i32>(),
                first in text(), last in text(), reference in text(), network_id in text()) {
                let item = pb::LocationRegistration {
                    patient,
                    facility_code: facility,
                    kind,
                    first_service_date: first,
                    last_service_date: last,
                    reference,
                    network_id,
                };
                answered(registration(&item, network()))?;
            }

            #[test]
            fn finds(patient in patient(), kinds in proptest::collection::vec(any::<i32>(), 0..4),
                from in text(), to in text(), purpose in any::<i32>(), reason in text(),
                size in any::<i32>(), token in text()) {
                let message = pb::FindLocationsRequest {
                    patient,
                    kinds,
                    service_from: from,
                    service_to: to,
                    purpose,
                    emergency_reason: reason,
                    page_size: size,
                    page_token: token,
                };
                answered(find_request(&message, network()))?;
            }

            #[test]
            fn consents(patient in patient(), kind in any::<i32>(), network_id in text(),
                sources in proptest::collection::vec(text(), 0..3), all in any::<bool>(),
                from in text(), until in text(), evidence in text()) {
                let message = pb::RecordConsentRequest {
                    patient,
                    kind,
                    network_id,
                    scope: Some(pb::DisclosureScope {
                        source_network_ids: sources,
                        all_source_networks: all,
                        ..Default::default()
                    }),
                    valid_from: from,
                    valid_until: until,
                    evidence_reference: evidence,
                };
                answered(consent_request(&message, Some(network())))?;
                answered(consent_request(&message, None))?;
            }

            #[test]
            fn links_and_revocations(patient in patient(), date in text(), local in text(),
                id in text(), reason in text(), purge in any::<bool>()) {
                let insured = match patient.and_then(|p| p.patient) {
                    Some(pb::patient_reference::Patient::Insured(insured)) => Some(insured),
                    _ => None,
                };
                let link = pb::LinkRegionalIdRequest {
                    patient: insured,
                    as_of: date,
                    regional_id: local,
                    network_id: String::new(),
                };
                answered(link_request(&link, network()))?;
                answered(revoke_request(&pb::RevokeConsentRequest { consent_id: id, reason, purge }))?;
            }
        }
    }
}
