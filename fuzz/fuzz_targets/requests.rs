//! Request validation: arbitrary bytes decoded as each request message the server takes, then
//! validated as the server does. Nothing panics; a refusal names at least one field and rule.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mpi_core::ids::network::NetworkId;
use mpi_proto::v1 as pb;
use mpi_server::convert;
use prost::Message;

fn refused_with_fields<T>(checked: convert::Checked<T>) {
    if let Err(violations) = checked {
        assert!(!violations.is_empty(), "a refusal without a field");
        for violation in violations {
            assert!(!violation.field.is_empty() && !violation.rule.is_empty());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    let network = NetworkId::parse("13-0001").expect("a valid network");
    match selector % 9 {
        0 => {
            if let Ok(message) = pb::RegisterLocationsRequest::decode(bytes) {
                for item in &message.items {
                    refused_with_fields(convert::registration(item, network));
                }
            }
        }
        1 => {
            if let Ok(message) = pb::FindLocationsRequest::decode(bytes) {
                refused_with_fields(convert::find_request(&message, network));
            }
        }
        2 => {
            if let Ok(message) = pb::RecordConsentRequest::decode(bytes) {
                refused_with_fields(convert::consent_request(&message, Some(network)));
                refused_with_fields(convert::consent_request(&message, None));
            }
        }
        3 => {
            if let Ok(message) = pb::ImportQualificationsRequest::decode(bytes) {
                for record in &message.records {
                    refused_with_fields(convert::qualification_record(record));
                }
            }
        }
        4 => {
            if let Ok(message) = pb::LinkRegionalIdRequest::decode(bytes) {
                refused_with_fields(convert::link_request(&message, network));
            }
        }
        5 => {
            if let Ok(message) = pb::CrossReferenceRequest::decode(bytes) {
                refused_with_fields(convert::cross_reference_request(&message, network));
            }
        }
        6 => {
            if let Ok(message) = pb::RevokeConsentRequest::decode(bytes) {
                refused_with_fields(convert::revoke_request(&message));
            }
        }
        7 => {
            if let Ok(message) = pb::AccessDisclosureRequest::decode(bytes) {
                refused_with_fields(convert::access_disclosure_request(&message));
            }
        }
        _ => {
            if let Ok(message) = pb::ListConsentsRequest::decode(bytes) {
                refused_with_fields(convert::list_consents_request(&message));
            }
        }
    }
});
