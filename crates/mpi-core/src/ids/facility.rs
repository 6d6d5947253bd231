//! 医療機関コード / 薬局コード (facility code): 10 digits with a Luhn check (DOMAIN.md §2.3).

use std::fmt;

use super::luhn;

/// Why a string is not a facility code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FacilityCodeError {
    /// Not exactly 10 ASCII digits.
    #[error("facility code must be exactly 10 ASCII digits")]
    Shape,
    /// 都道府県 outside 01–47.
    #[error("facility code prefecture must be 01-47, found {0:02}")]
    Prefecture(u8),
    /// Neither check rule matches.
    #[error("facility code check digit must be {expected} (9-digit rule), found {found}")]
    CheckDigit {
        /// The digit the standard 9-digit rule implies.
        expected: u8,
        /// The digit given.
        found: u8,
    },
}

/// Which check-digit rule a facility code passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CheckRule {
    /// Luhn over the 9 preceding digits (the ministry's rule).
    Standard,
    /// Luhn over the last 6 body digits only, reported for some old Kanto codes.
    LegacySixDigit,
}

/// 点数表 codes; other values are accepted (the list is from secondary sources).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScoreTable {
    /// 1: medical.
    Medical,
    /// 2: non-insurance check-up (JP Core).
    Checkup,
    /// 3: dental.
    Dental,
    /// 4: pharmacy.
    Pharmacy,
    /// 6: home nursing (JP Core).
    HomeNursing,
    /// Any other digit.
    Other(u8),
}

/// A valid 10-digit facility code.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FacilityCode {
    digits: [u8; 10],
    rule: CheckRule,
}

impl FacilityCode {
    /// Parses a facility code, trying the standard rule first and the legacy one second.
    pub fn parse(input: &str) -> Result<Self, FacilityCodeError> {
        let bytes = input.as_bytes();
        if bytes.len() != 10 || !bytes.iter().all(u8::is_ascii_digit) {
            return Err(FacilityCodeError::Shape);
        }
        let prefecture = (bytes[0] - b'0') * 10 + (bytes[1] - b'0');
        if !(1..=47).contains(&prefecture) {
            return Err(FacilityCodeError::Prefecture(prefecture));
        }
        let found = bytes[9] - b'0';
        let standard = luhn::check_digit(&bytes[..9]).ok_or(FacilityCodeError::Shape)?;
        let rule = if standard == found {
            CheckRule::Standard
        } else if luhn::check_digit(&bytes[3..9]) == Some(found) {
            CheckRule::LegacySixDigit
        } else {
            return Err(FacilityCodeError::CheckDigit {
                expected: standard,
                found,
            });
        };
        let mut digits = [0u8; 10];
        digits.copy_from_slice(bytes);
        Ok(Self { digits, rule })
    }

    /// The 10 digits.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.digits).unwrap_or("")
    }

    /// The rule the check digit passed.
    pub fn check_rule(&self) -> CheckRule {
        self.rule
    }

    /// 都道府県.
    pub fn prefecture(&self) -> u8 {
        (self.digits[0] - b'0') * 10 + (self.digits[1] - b'0')
    }

    /// 点数表.
    pub fn score_table(&self) -> ScoreTable {
        match self.digits[2] - b'0' {
            1 => ScoreTable::Medical,
            2 => ScoreTable::Checkup,
            3 => ScoreTable::Dental,
            4 => ScoreTable::Pharmacy,
            6 => ScoreTable::HomeNursing,
            other => ScoreTable::Other(other),
        }
    }
}

impl fmt::Display for FacilityCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for FacilityCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FacilityCode({})", self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn domain_examples() {
        for code in ["3410712362", "1840140055", "3618010015"] {
            let parsed = FacilityCode::parse(code).unwrap();
            assert_eq!(parsed.check_rule(), CheckRule::Standard, "{code}");
        }
        let legacy = FacilityCode::parse("1318814790").unwrap();
        assert_eq!(legacy.check_rule(), CheckRule::LegacySixDigit);
        assert_eq!(
            FacilityCode::parse("1840140055").unwrap().score_table(),
            ScoreTable::Pharmacy
        );
        assert_eq!(FacilityCode::parse("3410712362").unwrap().prefecture(), 34);
    }

    #[test]
    fn jp_core_sample_codes_are_fictional() {
        assert!(matches!(
            FacilityCode::parse("1311234567"),
            Err(FacilityCodeError::CheckDigit { .. })
        ));
    }

    #[test]
    fn shape_errors() {
        assert_eq!(
            FacilityCode::parse("341071236"),
            Err(FacilityCodeError::Shape)
        );
        assert_eq!(
            FacilityCode::parse("34107123６2"),
            Err(FacilityCodeError::Shape)
        );
        assert_eq!(
            FacilityCode::parse("4810712362"),
            Err(FacilityCodeError::Prefecture(48))
        );
    }

    fn valid_standard_code() -> impl Strategy<Value = String> {
        (1u8..=47, 0u8..10, 0u32..1_000_000).prop_map(|(pref, table, rest)| {
            let body = format!("{pref:02}{table}{rest:06}");
            let check = luhn::check_digit(body.as_bytes()).unwrap();
            format!("{body}{check}")
        })
    }

    proptest! {
        #[test]
        fn valid_codes_round_trip(code in valid_standard_code()) {
            let parsed = FacilityCode::parse(&code).unwrap();
            prop_assert_eq!(parsed.as_str(), code.as_str());
            prop_assert_eq!(parsed.check_rule(), CheckRule::Standard);
        }

        /// Luhn catches every single-digit change under the standard rule. Because the legacy
        /// rule is also accepted, a changed code can pass by that rule instead; it is then
        /// recorded as legacy, never as standard.
        #[test]
        fn single_digit_changes_never_pass_the_standard_rule(
            code in valid_standard_code(),
            position in 0usize..10,
            delta in 1u8..10,
        ) {
            let mut bytes = code.into_bytes();
            bytes[position] = b'0' + (bytes[position] - b'0' + delta) % 10;
            let changed = String::from_utf8(bytes).unwrap();
            match FacilityCode::parse(&changed) {
                Err(_) => {}
                Ok(parsed) => prop_assert_eq!(parsed.check_rule(), CheckRule::LegacySixDigit),
            }
        }

        #[test]
        fn arbitrary_input_never_panics(input in ".{0,12}") {
            let _ = FacilityCode::parse(&input);
        }
    }
}
