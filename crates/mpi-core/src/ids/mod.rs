//! Identifiers: each type can only be built valid, has a canonical form, and says precisely why
//! an input is not one. `Debug` never prints a personal identifier.

pub mod facility;
pub mod insured;
pub mod insurer;
pub mod luhn;
pub mod network;

pub use facility::{CheckRule, FacilityCode, FacilityCodeError, ScoreTable};
pub use insured::{Branch, CardField, InsuredId, InsuredIdError};
pub use insurer::{InsurerNumber, InsurerNumberError, InsurerNumberFlag};
pub use network::{NetworkId, ProviderPersonRef, ReferenceError, RegionalId};
