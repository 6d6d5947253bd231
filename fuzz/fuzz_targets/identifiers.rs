//! Identifier parsing: every form of insured ID, insurer numbers, facility codes, network and
//! regional IDs, principals from certificate URIs. Nothing panics; an insured ID survives its
//! one-string form and an insurer number its canonical form.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mpi_core::ids::facility::FacilityCode;
use mpi_core::ids::insured::InsuredId;
use mpi_core::ids::insurer::InsurerNumber;
use mpi_core::ids::network::{NetworkId, RegionalId};
use mpi_core::principal::Principal;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // Split into the four card fields on a separator the input chooses.
    let parts: Vec<&str> = text.splitn(4, '\u{1f}').collect();
    let field = |i: usize| parts.get(i).copied().unwrap_or("");
    for id in [
        InsuredId::from_parts(field(0), field(1), field(2), field(3)).ok(),
        InsuredId::parse_member_id(&text).ok(),
    ]
    .into_iter()
    .flatten()
    {
        // The one-string form is the documented round trip (when it fits its length).
        if let Ok(member_id) = id.to_member_id() {
            let again = InsuredId::parse_member_id(&member_id).expect("a member ID parses again");
            assert_eq!(again, id);
            assert_eq!(again.canonical(), id.canonical());
        }
    }
    if let Ok(insurer) = InsurerNumber::parse(&text) {
        assert_eq!(InsurerNumber::parse(insurer.canonical()), Ok(insurer));
        let _ = InsurerNumber::parse(&insurer.receipt_form());
    }
    let _ = FacilityCode::parse(&text);
    if let Ok(network) = NetworkId::parse(&text) {
        let _ = RegionalId::new(network, field(1));
    }
    let _ = Principal::from_uri(&text);
});
