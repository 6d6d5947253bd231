//! Wire messages → validated domain values. Every rejection names its field path and rule;
//! only this module (with the adapters) knows both the wire and the domain types.

use chrono::NaiveDate;
use mpi_core::FieldViolation;
use mpi_core::dates::{parse_date, parse_optional_date};
use mpi_core::ids::{InsuredId, ProviderPersonRef};
use mpi_core::qualification::{
    Demographics, InsuredPatient, QualificationPeriod, QualificationRecord, ReasonOfLoss, Sex,
};
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
}
