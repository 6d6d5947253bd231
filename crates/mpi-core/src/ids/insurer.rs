//! 保険者番号 (insurer number): 8 digits, or 6 for 市町村国保 and 国保組合 (DOMAIN.md §2.1).

use std::fmt;

use super::luhn;

/// Why a string is not an insurer number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InsurerNumberError {
    /// Nothing but spaces.
    #[error("insurer number is required")]
    Empty,
    /// A character other than an ASCII digit (after trimming spaces).
    #[error("insurer number must be ASCII digits only")]
    NotDigits,
    /// Neither 6 nor 8 digits.
    #[error("insurer number must have 6 or 8 digits, found {0}")]
    Length(usize),
    /// 都道府県番号 outside 01–47 and 51–97.
    #[error("insurer number prefecture code must be 01-47 (or 51-97), found {0:02}")]
    Prefecture(u8),
    /// The Luhn check digit does not match.
    #[error("insurer number check digit must be {expected}, found {found}")]
    CheckDigit {
        /// The digit the body implies.
        expected: u8,
        /// The digit given.
        found: u8,
    },
}

/// Something unusual about a valid insurer number: accepted, but worth logging.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsurerNumberFlag {
    /// 法別番号 not in the table of DOMAIN.md §2.1 (which comes from secondary sources).
    UnknownHoubetsu(u8),
    /// 都道府県番号 51–97: reported as alternate codes, unverified.
    AlternatePrefecture(u8),
}

/// 法別番号 seen in practice (DOMAIN.md §2.1).
const KNOWN_HOUBETSU: [u8; 17] = [1, 2, 3, 4, 6, 7, 31, 32, 33, 34, 39, 63, 67, 72, 73, 74, 75];

/// 法別番号 of 後期高齢者医療 (late-stage elderly insurance).
pub const HOUBETSU_LATE_ELDERLY: u8 = 39;

/// A valid 保険者番号, held in its canonical form: 8 ASCII digits, 6-digit numbers left-padded with
/// `0` (as FHIR does). Padding never changes the check digit.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InsurerNumber {
    digits: [u8; 8],
    /// True when the number has no 法別番号 (国保: 6 digits, or 8 digits starting with `00`).
    kokuho: bool,
}

impl InsurerNumber {
    /// Parses an insurer number; surrounding ASCII spaces are ignored (the receipt file and the
    /// qualification XML right-justify 6-digit numbers with spaces).
    pub fn parse(input: &str) -> Result<Self, InsurerNumberError> {
        let trimmed = input.trim_matches(' ');
        if trimmed.is_empty() {
            return Err(InsurerNumberError::Empty);
        }
        if !trimmed.bytes().all(|b| b.is_ascii_digit()) {
            return Err(InsurerNumberError::NotDigits);
        }
        let mut digits = [b'0'; 8];
        match trimmed.len() {
            6 => digits[2..].copy_from_slice(trimmed.as_bytes()),
            8 => digits.copy_from_slice(trimmed.as_bytes()),
            other => return Err(InsurerNumberError::Length(other)),
        }
        let kokuho = digits[0] == b'0' && digits[1] == b'0';
        let prefecture = two_digits(&digits[2..4]);
        if !(1..=47).contains(&prefecture) && !(51..=97).contains(&prefecture) {
            return Err(InsurerNumberError::Prefecture(prefecture));
        }
        // Leading zeros contribute nothing, so the 7-digit body of a padded 国保 number gives
        // the same check digit as its 5-digit body.
        let expected = luhn::check_digit(&digits[..7]).ok_or(InsurerNumberError::NotDigits)?;
        let found = digits[7] - b'0';
        if expected != found {
            return Err(InsurerNumberError::CheckDigit { expected, found });
        }
        Ok(Self { digits, kokuho })
    }

    /// The canonical 8-digit form.
    pub fn canonical(&self) -> &str {
        // Only ASCII digits are ever stored in `digits`.
        std::str::from_utf8(&self.digits).unwrap_or("")
    }

    /// The 6-digit form of a 国保 number, `None` for numbers with a 法別番号.
    pub fn six_digit(&self) -> Option<&str> {
        self.kokuho.then(|| &self.canonical()[2..])
    }

    /// The receipt-file form: 国保 numbers right-justified with spaces to 8 characters.
    pub fn receipt_form(&self) -> String {
        match self.six_digit() {
            Some(six) => format!("  {six}"),
            None => self.canonical().to_owned(),
        }
    }

    /// 法別番号, `None` for 国保 (which has none).
    pub fn houbetsu(&self) -> Option<u8> {
        (!self.kokuho).then(|| two_digits(&self.digits[..2]))
    }

    /// 都道府県番号 as written (01–47, or an unverified 51–97).
    pub fn prefecture(&self) -> u8 {
        two_digits(&self.digits[2..4])
    }

    /// True for 後期高齢者医療 (法別 39), whose numbers are personal without 枝番.
    pub fn is_late_elderly(&self) -> bool {
        self.houbetsu() == Some(HOUBETSU_LATE_ELDERLY)
    }

    /// True for 市町村国保 and 国保組合 (no 法別番号).
    pub fn is_kokuho(&self) -> bool {
        self.kokuho
    }

    /// What is unusual about this number, if anything.
    pub fn flags(&self) -> Vec<InsurerNumberFlag> {
        let mut flags = Vec::new();
        if let Some(houbetsu) = self.houbetsu()
            && !KNOWN_HOUBETSU.contains(&houbetsu)
        {
            flags.push(InsurerNumberFlag::UnknownHoubetsu(houbetsu));
        }
        let prefecture = self.prefecture();
        if prefecture > 47 {
            flags.push(InsurerNumberFlag::AlternatePrefecture(prefecture));
        }
        flags
    }
}

fn two_digits(pair: &[u8]) -> u8 {
    (pair[0] - b'0') * 10 + (pair[1] - b'0')
}

impl fmt::Display for InsurerNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.canonical())
    }
}

/// Debug never shows the number: identifiers must not reach logs by accident.
impl fmt::Debug for InsurerNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("InsurerNumber(..)")
    }
}

impl std::str::FromStr for InsurerNumber {
    type Err = InsurerNumberError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn domain_worked_examples_are_valid() {
        for number in ["06130488", "33120015", "54016027", "138057", "00138057"] {
            assert!(InsurerNumber::parse(number).is_ok(), "{number}");
        }
    }

    #[test]
    fn kokuho_forms_agree() {
        let six = InsurerNumber::parse("138057").unwrap();
        let padded = InsurerNumber::parse("00138057").unwrap();
        let spaced = InsurerNumber::parse("  138057").unwrap();
        assert_eq!(six, padded);
        assert_eq!(six, spaced);
        assert_eq!(six.canonical(), "00138057");
        assert_eq!(six.six_digit(), Some("138057"));
        assert_eq!(six.receipt_form(), "  138057");
        assert_eq!(six.houbetsu(), None);
        assert!(six.is_kokuho());
    }

    #[test]
    fn accessors() {
        let number = InsurerNumber::parse("06130488").unwrap();
        assert_eq!(number.houbetsu(), Some(6));
        assert_eq!(number.prefecture(), 13);
        assert!(number.flags().is_empty());
        assert_eq!(number.receipt_form(), "06130488");
        assert!(!number.is_late_elderly());
    }

    #[test]
    fn precise_errors() {
        assert_eq!(InsurerNumber::parse("   "), Err(InsurerNumberError::Empty));
        assert_eq!(
            InsurerNumber::parse("0613048"),
            Err(InsurerNumberError::Length(7))
        );
        assert_eq!(
            InsurerNumber::parse("0613-488"),
            Err(InsurerNumberError::NotDigits)
        );
        assert_eq!(
            InsurerNumber::parse("06130487"),
            Err(InsurerNumberError::CheckDigit {
                expected: 8,
                found: 7
            })
        );
        assert_eq!(
            InsurerNumber::parse("06480000"),
            Err(InsurerNumberError::Prefecture(48))
        );
    }

    #[test]
    fn unusual_numbers_are_flagged_not_rejected() {
        // 法別 08 is not in the table; prefecture 63 is an alternate code.
        let body = b"0813001";
        let check = luhn::check_digit(body).unwrap();
        let unknown = InsurerNumber::parse(&format!("0813001{check}")).unwrap();
        assert_eq!(unknown.flags(), vec![InsurerNumberFlag::UnknownHoubetsu(8)]);
        let check = luhn::check_digit(b"0163001").unwrap();
        let alternate = InsurerNumber::parse(&format!("0163001{check}")).unwrap();
        assert_eq!(
            alternate.flags(),
            vec![InsurerNumberFlag::AlternatePrefecture(63)]
        );
    }

    #[test]
    fn debug_hides_the_number() {
        let number = InsurerNumber::parse("06130488").unwrap();
        assert!(!format!("{number:?}").contains("0613"));
    }

    /// Valid insurer numbers: 8 digits with a known or unknown 法別, or 6-digit 国保.
    pub(crate) fn valid_insurer_number() -> impl Strategy<Value = String> {
        (0u8..100, 1u8..=47, 0u16..1000, any::<bool>()).prop_map(
            |(houbetsu, pref, serial, kokuho)| {
                let body = if kokuho {
                    format!("{pref:02}{serial:03}")
                } else {
                    format!("{:02}{pref:02}{serial:03}", houbetsu.max(1))
                };
                let check = luhn::check_digit(body.as_bytes()).unwrap();
                format!("{body}{check}")
            },
        )
    }

    proptest! {
        #[test]
        fn valid_numbers_round_trip_through_every_form(number in valid_insurer_number()) {
            let parsed = InsurerNumber::parse(&number).unwrap();
            prop_assert_eq!(InsurerNumber::parse(parsed.canonical()).unwrap(), parsed);
            prop_assert_eq!(InsurerNumber::parse(&parsed.receipt_form()).unwrap(), parsed);
            if let Some(six) = parsed.six_digit() {
                prop_assert_eq!(InsurerNumber::parse(six).unwrap(), parsed);
            }
        }

        #[test]
        fn every_single_digit_change_is_rejected(
            number in valid_insurer_number(),
            position in 0usize..8,
            delta in 1u8..10,
        ) {
            let mut bytes = number.into_bytes();
            let position = position % bytes.len();
            bytes[position] = b'0' + (bytes[position] - b'0' + delta) % 10;
            let changed = String::from_utf8(bytes).unwrap();
            prop_assert!(InsurerNumber::parse(&changed).is_err(), "{} accepted", changed);
        }

        #[test]
        fn arbitrary_input_never_panics(input in ".{0,20}") {
            let _ = InsurerNumber::parse(&input);
        }
    }
}
