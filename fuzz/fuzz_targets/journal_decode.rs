//! Any bytes through the journal decoders (segment header, frame header, frame body,
//! records): no panic, no out-of-bounds read.
#![no_main]

use evring::journal::format::{
    check_frame_body, decode_frame_header, FrameExpect, RecordIter, SegmentMeta,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = SegmentMeta::decode(data);
    let expect = FrameExpect {
        store_id: data.get(16..32).and_then(|s| s.try_into().ok()).unwrap_or([0; 16]),
        segment_seq: data.get(32..40).map_or(0, |s| u64::from_le_bytes(s.try_into().unwrap())),
        block_index: data.get(60..64).map_or(0, |s| u32::from_le_bytes(s.try_into().unwrap())),
        frame_bytes_max: 1 << 20,
    };
    if let Ok(meta) = decode_frame_header(data, &expect) {
        let _ = check_frame_body(data, &meta);
    }
    for record in RecordIter::new(data) {
        if record.is_err() {
            break;
        }
    }
});
