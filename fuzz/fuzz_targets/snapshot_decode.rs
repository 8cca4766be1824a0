//! Any bytes as a snapshot file: the header and checksum checks, then (as start-up does for
//! a file whose checksums pass) the partition image decoder and the rebuild from it. No
//! panic, no unbounded allocation.
#![no_main]

use evring::ring::RingConfig;
use evring::stream::{PartitionImage, Rebuild};
use evring::snapshot;
use libfuzzer_sys::fuzz_target;

fn rebuild(body: &[u8]) {
    if let Ok(image) = PartitionImage::decode(body) {
        let ring = RingConfig {
            capacity_events: 64,
            capacity_bytes: 64 * 1024,
            max_retries: 8,
        };
        let _ = Rebuild::from_image(image, 16, ring);
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok((_, body)) = snapshot::decode(data) {
        rebuild(body);
    }
    // The body decoder sees arbitrary bytes too (a checksum collision must not crash it).
    rebuild(data);
    // And a well-formed file around the bytes round-trips.
    let meta = snapshot::SnapshotMeta {
        kind: snapshot::KIND_PARTITION,
        codec: snapshot::CODEC_BINARY,
        partition: 0,
        store_id: [1; 16],
        lsn: data.len() as u64,
        resume_segment: 7,
    };
    let file = snapshot::encode(&meta, data);
    let (m, body) = snapshot::decode(&file).expect("an encoded snapshot decodes");
    assert_eq!(m, meta);
    assert_eq!(body, data);
});
