//! 被保険者等記号・番号等 (insured ID): 保険者番号 + 記号 + 番号 + optional 枝番 (DOMAIN.md §2.2).

use std::fmt;

use unicode_normalization::UnicodeNormalization;

use super::insurer::{InsurerNumber, InsurerNumberError};

/// Which card field a rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CardField {
    /// 記号.
    Symbol,
    /// 番号.
    Number,
}

impl CardField {
    /// The field's name in the API.
    pub fn name(self) -> &'static str {
        match self {
            Self::Symbol => "symbol",
            Self::Number => "number",
        }
    }
}

/// Why the parts of an insured ID are invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InsuredIdError {
    /// The insurer number is invalid.
    #[error(transparent)]
    Insurer(#[from] InsurerNumberError),
    /// 番号 is empty.
    #[error("number is required")]
    NumberRequired,
    /// A card field has whitespace, a colon or a control character.
    #[error("{} must not contain whitespace, colons or control characters", .0.name())]
    ForbiddenCharacter(CardField),
    /// A card field mixes half-width and full-width characters, or uses half-width kana.
    #[error("{} must be all half-width alphanumerics or all full-width characters, not mixed", .0.name())]
    MixedWidth(CardField),
    /// A card field is longer than 38 bytes (19 full-width characters).
    #[error("{} must be at most 38 bytes (19 full-width characters)", .0.name())]
    TooLong(CardField),
    /// 枝番 is not exactly two digits.
    #[error("branch must be exactly two digits 00-99 or empty")]
    Branch,
    /// A 後期高齢者医療 number carries a 枝番.
    #[error("branch must be empty for 後期高齢者医療 (法別 39) numbers")]
    BranchOnLateElderly,
    /// The one-string form does not have four colon-separated fields.
    #[error("member_id must be \"insurer8:symbol:number:branch\" with four fields")]
    MemberIdShape,
    /// The one-string form is longer than 51 characters.
    #[error("member_id must be at most 51 characters")]
    MemberIdTooLong,
    /// The one-string form's insurer number is not 8 digits.
    #[error("member_id insurer number must be exactly 8 digits")]
    MemberIdInsurer,
}

impl InsuredIdError {
    /// The sub-field of the insured ID the error is about, for field paths.
    pub fn field(&self) -> &'static str {
        match self {
            Self::Insurer(_) => "insurer_number",
            Self::NumberRequired => "number",
            Self::ForbiddenCharacter(field) | Self::MixedWidth(field) | Self::TooLong(field) => {
                field.name()
            }
            Self::Branch | Self::BranchOnLateElderly => "branch",
            Self::MemberIdShape | Self::MemberIdTooLong | Self::MemberIdInsurer => "member_id",
        }
    }
}

/// A 記号 or 番号: the raw form as given (trimmed of nothing) and its NFKC key form.
#[derive(Clone, PartialEq, Eq, Hash)]
struct CardText {
    raw: String,
    key: String,
}

/// Width class of a card field.
#[derive(PartialEq, Eq)]
enum Width {
    Half,
    Full,
}

impl CardText {
    fn parse(input: &str, field: CardField) -> Result<Option<Self>, InsuredIdError> {
        if input.is_empty() {
            return Ok(None);
        }
        let mut width = None;
        let mut bytes = 0usize;
        for c in input.chars() {
            if c.is_whitespace() || c.is_control() || c == ':' || c == '：' {
                return Err(InsuredIdError::ForbiddenCharacter(field));
            }
            let this = if c.is_ascii_alphanumeric() || c == '-' {
                Width::Half
            } else if c.is_ascii() || ('\u{FF61}'..='\u{FF9F}').contains(&c) {
                // Other ASCII symbols and half-width katakana are in neither class.
                return Err(InsuredIdError::MixedWidth(field));
            } else {
                Width::Full
            };
            bytes += if this == Width::Half { 1 } else { 2 };
            match &width {
                None => width = Some(this),
                Some(seen) if *seen != this => return Err(InsuredIdError::MixedWidth(field)),
                Some(_) => {}
            }
        }
        if bytes > 38 {
            return Err(InsuredIdError::TooLong(field));
        }
        let key = if width == Some(Width::Half) {
            // ASCII letters, digits and '-' are their own NFKC form, and none of them is a
            // variation selector, a hyphen variant or a long-vowel mark: the key is the input.
            input.to_owned()
        } else {
            normalize_key(input)
        };
        Ok(Some(Self {
            raw: input.to_owned(),
            key,
        }))
    }

    /// The full-width form used in the one-string member ID.
    fn full_width(&self) -> String {
        self.raw.chars().map(to_full_width).collect()
    }
}

/// NFKC, variation selectors stripped, every hyphen variant unified to `-`; a long-vowel mark
/// between two digits is a hyphen written with the wrong key.
fn normalize_key(input: &str) -> String {
    let normalized: Vec<char> = input
        .nfkc()
        .filter(|c| !matches!(c, '\u{FE00}'..='\u{FE0F}' | '\u{E0100}'..='\u{E01EF}'))
        .collect();
    let mut key = String::with_capacity(normalized.len());
    for (index, &c) in normalized.iter().enumerate() {
        let hyphen = match c {
            '\u{2010}'..='\u{2015}' | '\u{2212}' | '\u{FE63}' => true,
            '\u{30FC}' => {
                let before = index.checked_sub(1).and_then(|i| normalized.get(i));
                let after = normalized.get(index + 1);
                before.is_some_and(char::is_ascii_digit) && after.is_some_and(char::is_ascii_digit)
            }
            _ => false,
        };
        key.push(if hyphen { '-' } else { c });
    }
    key
}

/// Half-width ASCII alphanumerics and hyphen to their full-width forms; anything else unchanged.
fn to_full_width(c: char) -> char {
    match c {
        '-' => '－',
        c if c.is_ascii_alphanumeric() => {
            // U+FF01..U+FF5E mirror U+0021..U+007E at a fixed offset.
            char::from_u32(c as u32 + 0xFEE0).unwrap_or(c)
        }
        c => c,
    }
}

/// 枝番: two ASCII digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Branch([u8; 2]);

impl Branch {
    /// Parses a branch; full-width digits are accepted and stored as ASCII.
    pub fn parse(input: &str) -> Result<Option<Self>, InsuredIdError> {
        if input.is_empty() {
            return Ok(None);
        }
        let normalized: String = input.nfkc().collect();
        match normalized.as_bytes() {
            [a, b] if a.is_ascii_digit() && b.is_ascii_digit() => Ok(Some(Self([*a, *b]))),
            _ => Err(InsuredIdError::Branch),
        }
    }

    /// The two digits.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

/// A valid individual insured identifier.
///
/// Equality and hashing use the canonical key (NFKC forms), so `１８７` and `187` are one number.
#[derive(Clone)]
pub struct InsuredId {
    insurer: InsurerNumber,
    symbol: Option<CardText>,
    number: CardText,
    branch: Option<Branch>,
    canonical: String,
}

impl InsuredId {
    /// Builds an insured ID from the card's fields.
    pub fn from_parts(
        insurer_number: &str,
        symbol: &str,
        number: &str,
        branch: &str,
    ) -> Result<Self, InsuredIdError> {
        let insurer = InsurerNumber::parse(insurer_number)?;
        let symbol = CardText::parse(symbol, CardField::Symbol)?;
        let number =
            CardText::parse(number, CardField::Number)?.ok_or(InsuredIdError::NumberRequired)?;
        let branch = Branch::parse(branch)?;
        if branch.is_some() && insurer.is_late_elderly() {
            return Err(InsuredIdError::BranchOnLateElderly);
        }
        let canonical = format!(
            "{}:{}:{}:{}",
            insurer.canonical(),
            symbol.as_ref().map_or("", |s| s.key.as_str()),
            number.key,
            branch.as_ref().map_or("", Branch::as_str),
        );
        Ok(Self {
            insurer,
            symbol,
            number,
            branch,
            canonical,
        })
    }

    /// Parses the JP Core / CLINS one-string form `保険者番号8:記号:番号:枝番` (at most 51
    /// characters, colons kept for empty fields).
    pub fn parse_member_id(input: &str) -> Result<Self, InsuredIdError> {
        if input.chars().count() > 51 {
            return Err(InsuredIdError::MemberIdTooLong);
        }
        let fields: Vec<&str> = input.split(':').collect();
        let [insurer, symbol, number, branch] = fields.as_slice() else {
            return Err(InsuredIdError::MemberIdShape);
        };
        if insurer.len() != 8 || !insurer.bytes().all(|b| b.is_ascii_digit()) {
            return Err(InsuredIdError::MemberIdInsurer);
        }
        let ascii_pair = branch.len() == 2 && branch.bytes().all(|b| b.is_ascii_digit());
        if !branch.is_empty() && !ascii_pair {
            return Err(InsuredIdError::Branch);
        }
        Self::from_parts(insurer, symbol, number, branch)
    }

    /// The one-string form with 記号 and 番号 in full-width characters, as JP Core writes them.
    ///
    /// Fails with `MemberIdTooLong` for a half-width field longer than 19 characters: valid
    /// under the receipt rule (38 bytes), it has no full-width form within the 51-character limit.
    pub fn to_member_id(&self) -> Result<String, InsuredIdError> {
        let symbol = self
            .symbol
            .as_ref()
            .map(CardText::full_width)
            .unwrap_or_default();
        let number = self.number.full_width();
        if symbol.chars().count() > 19 || number.chars().count() > 19 {
            return Err(InsuredIdError::MemberIdTooLong);
        }
        Ok(format!(
            "{}:{symbol}:{number}:{}",
            self.insurer.canonical(),
            self.branch.as_ref().map_or("", Branch::as_str),
        ))
    }

    /// The canonical key form hashed for storage: `insurer8:symbolKey:numberKey:branch`.
    pub fn canonical(&self) -> &str {
        &self.canonical
    }

    /// The insurer number.
    pub fn insurer(&self) -> &InsurerNumber {
        &self.insurer
    }

    /// 記号 as given.
    pub fn symbol_raw(&self) -> &str {
        self.symbol.as_ref().map_or("", |s| s.raw.as_str())
    }

    /// 番号 as given.
    pub fn number_raw(&self) -> &str {
        &self.number.raw
    }

    /// 枝番, if any.
    pub fn branch(&self) -> Option<Branch> {
        self.branch
    }

    /// True when the number names one person by itself: it has a 枝番, or it is a
    /// 後期高齢者医療 number. Otherwise it is household-level and needs birth date and sex.
    pub fn is_personal(&self) -> bool {
        self.branch.is_some() || self.insurer.is_late_elderly()
    }
}

impl PartialEq for InsuredId {
    fn eq(&self, other: &Self) -> bool {
        self.canonical == other.canonical
    }
}

impl Eq for InsuredId {}

impl std::hash::Hash for InsuredId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.canonical.hash(state);
    }
}

/// Debug never shows the number: identifiers must not reach logs by accident.
impl fmt::Debug for InsuredId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("InsuredId(..)")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ids::luhn;
    use proptest::prelude::*;

    #[test]
    fn jp_core_examples_parse_and_emit_exactly() {
        // DOMAIN.md's illustration "00012345" fails the Luhn check (it implies 4): the shape
        // parses, the insurer number is rejected precisely.
        assert_eq!(
            InsuredId::parse_member_id("00012345:あいう:１８７:05"),
            Err(InsuredIdError::Insurer(InsurerNumberError::CheckDigit {
                expected: 4,
                found: 5
            }))
        );
        let id = InsuredId::parse_member_id("06130488:あいう:１８７:05").unwrap();
        assert_eq!(id.to_member_id().unwrap(), "06130488:あいう:１８７:05");
        assert_eq!(id.canonical(), "06130488:あいう:187:05");
        let bare = InsuredId::parse_member_id("00138057::１８７:").unwrap();
        assert_eq!(bare.to_member_id().unwrap(), "00138057::１８７:");
        assert!(!bare.is_personal());
        assert!(bare.branch().is_none());
    }

    #[test]
    fn full_width_and_half_width_are_one_key() {
        let half = InsuredId::from_parts("06130488", "12-34", "187", "05").unwrap();
        let full = InsuredId::from_parts("06130488", "１２－３４", "１８７", "05").unwrap();
        let dash = InsuredId::from_parts("06130488", "１２ー３４", "１８７", "０５").unwrap();
        assert_eq!(half, full);
        assert_eq!(half, dash);
        assert_eq!(
            half.to_member_id().unwrap(),
            "06130488:１２－３４:１８７:05"
        );
        let long = InsuredId::from_parts("06130488", "", &"1".repeat(20), "").unwrap();
        assert_eq!(long.to_member_id(), Err(InsuredIdError::MemberIdTooLong));
    }

    #[test]
    fn late_elderly_is_personal_without_branch() {
        let check = luhn::check_digit(b"3913001").unwrap();
        let insurer = format!("3913001{check}");
        let id = InsuredId::from_parts(&insurer, "", "12345678", "").unwrap();
        assert!(id.is_personal());
        assert_eq!(
            InsuredId::from_parts(&insurer, "", "12345678", "01"),
            Err(InsuredIdError::BranchOnLateElderly)
        );
    }

    #[test]
    fn precise_errors() {
        let err =
            |s: &str, n: &str, b: &str| InsuredId::from_parts("06130488", s, n, b).unwrap_err();
        assert_eq!(err("", "", ""), InsuredIdError::NumberRequired);
        assert_eq!(
            err("1 2", "1", ""),
            InsuredIdError::ForbiddenCharacter(CardField::Symbol)
        );
        assert_eq!(
            err("", "1:2", ""),
            InsuredIdError::ForbiddenCharacter(CardField::Number)
        );
        assert_eq!(
            err("12あ", "1", ""),
            InsuredIdError::MixedWidth(CardField::Symbol)
        );
        assert_eq!(
            err("", "ｱｲｳ", ""),
            InsuredIdError::MixedWidth(CardField::Number)
        );
        assert_eq!(
            err("", &"1".repeat(39), ""),
            InsuredIdError::TooLong(CardField::Number)
        );
        assert_eq!(
            err("", &"あ".repeat(20), ""),
            InsuredIdError::TooLong(CardField::Number)
        );
        assert!(InsuredId::from_parts("06130488", "", &"1".repeat(38), "").is_ok());
        assert!(InsuredId::from_parts("06130488", "", &"あ".repeat(19), "").is_ok());
        assert_eq!(err("", "1", "5"), InsuredIdError::Branch);
        assert_eq!(err("", "1", "a1"), InsuredIdError::Branch);
        assert_eq!(
            InsuredId::parse_member_id("06130488:1:2"),
            Err(InsuredIdError::MemberIdShape)
        );
        assert_eq!(
            InsuredId::parse_member_id("138057::1:"),
            Err(InsuredIdError::MemberIdInsurer)
        );
        assert_eq!(err("", "1", "5").field(), "branch");
    }

    #[test]
    fn debug_hides_the_number() {
        let id = InsuredId::from_parts("06130488", "12", "187", "05").unwrap();
        let shown = format!("{id:?}");
        assert!(!shown.contains("187") && !shown.contains("0613"));
    }

    fn half_width_text(max: usize) -> impl Strategy<Value = String> {
        proptest::string::string_regex(&format!("[A-Za-z0-9][A-Za-z0-9-]{{0,{}}}", max - 1))
            .unwrap()
    }

    fn full_width_text() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                proptest::char::range('０', '９'),
                proptest::char::range('あ', 'ん'),
                proptest::char::range('ア', 'ン'),
                Just('－'),
                Just('渡'),
                Just('邊'),
            ],
            1..=19,
        )
        .prop_map(|chars| chars.into_iter().collect())
    }

    /// Valid insured IDs as (insurer, symbol, number, branch) parts.
    pub(crate) fn valid_parts() -> impl Strategy<Value = (String, String, String, String)> {
        (
            super::super::insurer::tests::valid_insurer_number(),
            prop_oneof![Just(String::new()), half_width_text(38), full_width_text()],
            prop_oneof![half_width_text(38), full_width_text()],
            prop_oneof![
                Just(String::new()),
                (0u8..100).prop_map(|b| format!("{b:02}"))
            ],
        )
            .prop_filter(
                "late-elderly numbers carry no branch",
                |(insurer, _, _, branch)| !insurer.starts_with("39") || branch.is_empty(),
            )
    }

    proptest! {
        #[test]
        fn valid_ids_round_trip_through_every_form((insurer, symbol, number, branch) in valid_parts()) {
            let id = InsuredId::from_parts(&insurer, &symbol, &number, &branch).unwrap();
            let fits = symbol.chars().count() <= 19 && number.chars().count() <= 19;
            let Ok(member_id) = id.to_member_id() else {
                prop_assert!(!fits, "a value that fits must have a member ID");
                return Ok(());
            };
            prop_assert!(member_id.chars().count() <= 51);
            let reparsed = InsuredId::parse_member_id(&member_id).unwrap();
            prop_assert_eq!(&reparsed, &id);
            prop_assert_eq!(reparsed.to_member_id().unwrap(), member_id);
            let again = InsuredId::from_parts(
                id.insurer().canonical(), id.symbol_raw(), id.number_raw(),
                id.branch().as_ref().map_or("", Branch::as_str),
            ).unwrap();
            prop_assert_eq!(again.canonical(), id.canonical());
        }

        #[test]
        fn the_key_of_any_accepted_text_is_its_normal_form(text in prop_oneof![
            half_width_text(38),
            full_width_text(),
            "[０-９1a\u{2010}\u{2212}\u{30FC}\u{FE00}\u{FE63}-]{1,12}",
            ".{1,20}",
        ]) {
            if let Ok(Some(parsed)) = CardText::parse(&text, CardField::Number) {
                prop_assert_eq!(parsed.key, normalize_key(&text));
            }
        }

        #[test]
        fn arbitrary_input_never_panics(a in ".{0,12}", b in ".{0,40}", c in ".{0,4}", m in ".{0,60}") {
            let _ = InsuredId::from_parts(&a, &b, &b, &c);
            let _ = InsuredId::parse_member_id(&m);
        }
    }
}
