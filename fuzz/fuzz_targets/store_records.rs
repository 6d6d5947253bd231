//! The store's decoding of its own records: whatever bytes a damaged or altered file holds, the
//! decoders answer with a value or an error, never a panic; and a decoded audit row encodes
//! back to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mpi_core::consent::ConsentId;
use mpi_core::store::{MergeId, audit_codec, codec};

fuzz_target!(|data: &[u8]| {
    let _ = mpi_core::location::codec::decode(data);
    let _ = mpi_core::consent::codec::decode(ConsentId([3; 16]), data);
    let _ = mpi_core::audit::decode_content(data);
    if let Ok(row) = audit_codec::decode_row(7, data) {
        assert_eq!(audit_codec::row_value(&row), data);
    }
    let _ = audit_codec::decode_head(data);
    let _ = codec::decode_merge(MergeId([5; 16]), data);
    let _ = codec::decode_person(data);
    let split = data.len() / 2;
    let _ = codec::decode_qualification(&data[..split], &data[split..]);
    let (sequences, parsed) = mpi_store_redb::decode_audit_log_segment(data);
    assert!(parsed <= data.len());
    assert!(sequences.len() <= data.len() / 14);
});
