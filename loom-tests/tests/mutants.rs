//! Negative controls: the same model must FAIL when the ring is built with a deliberate bug
//! (`--cfg evring_mutant="..."`, see run.sh). Without a mutant these tests are skipped.
#![cfg(all(
    evring_loom,
    any(
        evring_mutant = "no_recheck",
        evring_mutant = "no_release_fence",
        evring_mutant = "no_evict_mark"
    )
))]

use loom::thread;
use loom_tests::ring::{ring, NewEvent, RingConfig};

#[test]
#[should_panic(expected = "torn")]
fn the_model_catches_the_mutant() {
    loom::model(|| {
        let (mut w, r) = ring(RingConfig {
            capacity_events: 2,
            capacity_bytes: 16,
            max_retries: 2,
        });
        let reader = thread::spawn(move || {
            for e in r.suffix(0, usize::MAX) {
                assert_eq!(e.value, e.lsn as f64, "torn value");
                assert_eq!(e.payload, vec![e.lsn as u8 + 1; 16], "torn payload");
            }
        });
        for lsn in 0..3u64 {
            let p = vec![lsn as u8 + 1; 16];
            w.push(&NewEvent {
                lsn,
                timestamp_ns: lsn,
                value: lsn as f64,
                type_id: 0,
                stream_id: 0,
                stream_version: lsn,
                payload: &p,
            })
            .unwrap();
        }
        reader.join().unwrap();
    });
}
