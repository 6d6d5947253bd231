//! Which role may call which operation (DESIGN.md §3), in one table.

use crate::error::ServiceError;
use crate::principal::{Principal, Role};

/// Every operation of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum Operation {
    ImportQualifications,
    MergePersons,
    UnmergePersons,
    AreSamePerson,
    RegisterLocations,
    WithdrawLocations,
    FindLocations,
    LinkRegionalId,
    UnlinkRegionalId,
    CrossReference,
    RecordConsent,
    RevokeConsent,
    ListConsents,
    AccessDisclosure,
    VerifyAuditChain,
    ExportAuditEvents,
}

impl Operation {
    /// Every operation, for metrics and documentation.
    pub const ALL: [Operation; 16] = [
        Self::ImportQualifications,
        Self::MergePersons,
        Self::UnmergePersons,
        Self::AreSamePerson,
        Self::RegisterLocations,
        Self::WithdrawLocations,
        Self::FindLocations,
        Self::LinkRegionalId,
        Self::UnlinkRegionalId,
        Self::CrossReference,
        Self::RecordConsent,
        Self::RevokeConsent,
        Self::ListConsents,
        Self::AccessDisclosure,
        Self::VerifyAuditChain,
        Self::ExportAuditEvents,
    ];

    /// The RPC name.
    pub fn name(self) -> &'static str {
        match self {
            Self::ImportQualifications => "ImportQualifications",
            Self::MergePersons => "MergePersons",
            Self::UnmergePersons => "UnmergePersons",
            Self::AreSamePerson => "AreSamePerson",
            Self::RegisterLocations => "RegisterLocations",
            Self::WithdrawLocations => "WithdrawLocations",
            Self::FindLocations => "FindLocations",
            Self::LinkRegionalId => "LinkRegionalId",
            Self::UnlinkRegionalId => "UnlinkRegionalId",
            Self::CrossReference => "CrossReference",
            Self::RecordConsent => "RecordConsent",
            Self::RevokeConsent => "RevokeConsent",
            Self::ListConsents => "ListConsents",
            Self::AccessDisclosure => "AccessDisclosure",
            Self::VerifyAuditChain => "VerifyAuditChain",
            Self::ExportAuditEvents => "ExportAuditEvents",
        }
    }

    /// The roles allowed to call it. Bindings (own network only) are checked by the operation.
    pub fn allowed_roles(self) -> &'static [Role] {
        use Role::*;
        match self {
            Self::ImportQualifications => &[HistoryProvider],
            Self::MergePersons | Self::UnmergePersons => &[HistoryProvider, Operator],
            Self::AreSamePerson => &[HistoryProvider, Network, Operator],
            Self::RegisterLocations | Self::WithdrawLocations => &[Network],
            Self::LinkRegionalId | Self::UnlinkRegionalId => &[Network],
            Self::FindLocations => &[Clinician],
            Self::CrossReference => &[Clinician, Network],
            Self::RecordConsent | Self::RevokeConsent => &[Network, Operator],
            Self::ListConsents
            | Self::AccessDisclosure
            | Self::VerifyAuditChain
            | Self::ExportAuditEvents => &[Operator],
        }
    }
}

/// Fails with `PermissionDenied` unless the principal's role may call the operation.
pub fn authorize(principal: &Principal, operation: Operation) -> Result<(), ServiceError> {
    if operation.allowed_roles().contains(&principal.role()) {
        Ok(())
    } else {
        Err(ServiceError::PermissionDenied(format!(
            "role {} may not call {}",
            principal.role(),
            operation.name()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::NetworkId;

    #[test]
    fn table_matches_design() {
        let network = Principal::Network(NetworkId::parse("13-0001").unwrap());
        let operator = Principal::Operator("ops".into());
        assert!(authorize(&network, Operation::RegisterLocations).is_ok());
        assert!(authorize(&network, Operation::FindLocations).is_err());
        assert!(authorize(&operator, Operation::VerifyAuditChain).is_ok());
        assert!(authorize(&operator, Operation::ImportQualifications).is_err());
        for operation in Operation::ALL {
            assert!(
                !operation.allowed_roles().is_empty(),
                "{}",
                operation.name()
            );
            assert!(!operation.allowed_roles().contains(&Role::ResearchDb));
        }
    }
}
