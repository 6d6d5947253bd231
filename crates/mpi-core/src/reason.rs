//! Free-text reasons that callers must give (merges, unmerges, revocations, emergencies).

/// Why a reason is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReasonError {
    /// Empty or only whitespace.
    #[error("a reason is required")]
    Empty,
    /// Longer than 500 characters.
    #[error("must be at most 500 characters")]
    TooLong,
    /// Contains control characters.
    #[error("must not contain control characters")]
    Control,
}

/// A stated reason: 1 to 500 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason(String);

impl Reason {
    /// Maximum length in characters.
    pub const MAX_CHARS: usize = 500;

    /// Validates a reason.
    pub fn parse(text: &str) -> Result<Self, ReasonError> {
        if text.trim().is_empty() {
            return Err(ReasonError::Empty);
        }
        if text.chars().count() > Self::MAX_CHARS {
            return Err(ReasonError::TooLong);
        }
        if text.chars().any(char::is_control) {
            return Err(ReasonError::Control);
        }
        Ok(Self(text.to_owned()))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        assert_eq!(
            Reason::parse("重複登録の解消").unwrap().as_str(),
            "重複登録の解消"
        );
        assert_eq!(Reason::parse("  "), Err(ReasonError::Empty));
        assert_eq!(Reason::parse(&"あ".repeat(501)), Err(ReasonError::TooLong));
        assert!(Reason::parse(&"あ".repeat(500)).is_ok());
        assert_eq!(Reason::parse("a\nb"), Err(ReasonError::Control));
    }
}
