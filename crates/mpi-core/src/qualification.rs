//! Qualification records (資格履歴): which insured ID a person held, from when to when.

use chrono::NaiveDate;

use crate::ids::{InsuredId, ProviderPersonRef};

/// Sex as the qualification system records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sex {
    /// 1.
    Male,
    /// 2.
    Female,
    /// 3: not recorded.
    NotRecorded,
}

impl Sex {
    /// The qualification system's code (1, 2, 3).
    pub fn code(self) -> u8 {
        match self {
            Self::Male => 1,
            Self::Female => 2,
            Self::NotRecorded => 3,
        }
    }

    /// From the qualification system's code.
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Self::Male),
            2 => Some(Self::Female),
            3 => Some(Self::NotRecorded),
            _ => None,
        }
    }
}

/// ReasonOfLoss of the qualification system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReasonOfLoss {
    /// 01.
    Death,
    /// 02: public assistance.
    Welfare,
    /// 03: moved to another insurance.
    OtherInsurance,
    /// 99.
    Other,
}

impl ReasonOfLoss {
    /// The qualification system's code.
    pub fn code(self) -> u8 {
        match self {
            Self::Death => 1,
            Self::Welfare => 2,
            Self::OtherInsurance => 3,
            Self::Other => 99,
        }
    }

    /// From the qualification system's code.
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Self::Death),
            2 => Some(Self::Welfare),
            3 => Some(Self::OtherInsurance),
            99 => Some(Self::Other),
            _ => None,
        }
    }
}

/// Why a period is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("qualification_end must not be before qualification_start")]
pub struct PeriodError;

/// A closed or open span of days, both ends inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct QualificationPeriod {
    start: NaiveDate,
    end: Option<NaiveDate>,
}

impl QualificationPeriod {
    /// A period from `start` to `end` (inclusive; `None` while it lasts).
    pub fn new(start: NaiveDate, end: Option<NaiveDate>) -> Result<Self, PeriodError> {
        match end {
            Some(end) if end < start => Err(PeriodError),
            _ => Ok(Self { start, end }),
        }
    }

    /// First day.
    pub fn start(&self) -> NaiveDate {
        self.start
    }

    /// Last day, if it ended.
    pub fn end(&self) -> Option<NaiveDate> {
        self.end
    }

    /// True when `day` lies in the period.
    pub fn contains(&self, day: NaiveDate) -> bool {
        self.start <= day && self.end.is_none_or(|end| day <= end)
    }
}

/// One validated record of the history feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QualificationRecord {
    /// The provider's reference for the person.
    pub person_ref: ProviderPersonRef,
    /// The insured ID held.
    pub insured_id: InsuredId,
    /// When it was held.
    pub period: QualificationPeriod,
    /// Birth date.
    pub birth_date: NaiveDate,
    /// Sex.
    pub sex: Sex,
    /// Why the qualification ended, if it did and the reason is known.
    pub reason_of_loss: Option<ReasonOfLoss>,
}

/// Birth date and sex, which tell apart household members sharing a number without 枝番.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Demographics {
    /// Birth date.
    pub birth_date: NaiveDate,
    /// Sex.
    pub sex: Sex,
}

/// A patient named by an insured ID, with demographics where the caller has them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InsuredPatient {
    /// The insured ID.
    pub insured_id: InsuredId,
    /// Birth date and sex, if given.
    pub demographics: Option<Demographics>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods() {
        let day = |d| NaiveDate::from_ymd_opt(2024, 4, d).unwrap();
        assert_eq!(
            QualificationPeriod::new(day(2), Some(day(1))),
            Err(PeriodError)
        );
        let closed = QualificationPeriod::new(day(1), Some(day(3))).unwrap();
        assert!(closed.contains(day(1)) && closed.contains(day(3)) && !closed.contains(day(4)));
        let open = QualificationPeriod::new(day(1), None).unwrap();
        assert!(
            open.contains(day(30)) && !open.contains(NaiveDate::from_ymd_opt(2024, 3, 31).unwrap())
        );
    }

    #[test]
    fn codes_round_trip() {
        for sex in [Sex::Male, Sex::Female, Sex::NotRecorded] {
            assert_eq!(Sex::from_code(sex.code()), Some(sex));
        }
        for reason in [
            ReasonOfLoss::Death,
            ReasonOfLoss::Welfare,
            ReasonOfLoss::OtherInsurance,
            ReasonOfLoss::Other,
        ] {
            assert_eq!(ReasonOfLoss::from_code(reason.code()), Some(reason));
        }
        assert_eq!(Sex::from_code(0), None);
    }
}
