//! A partition on the simulated disk, opened as start-up opens one: for the power-loss and
//! model tests (`tests/partition_sim.rs`, `tests/groups_model.rs`).

use evring::journal::{Journal, JournalConfig, SimStorage};
use evring::ring::RingConfig;
use evring::stream::{Partition, PartitionImage, PartitionLimits, Rebuild};

/// Small segments and frames, and every frame sealed as soon as the pipeline has room: the
/// most frames in flight at a crash.
pub fn journal_config(store: [u8; 16]) -> JournalConfig {
    let mut cfg = JournalConfig::new(store, 0);
    cfg.pipeline_min_bytes = 0;
    cfg.segment_bytes = 64 * 1024;
    cfg.frame_bytes_max = 16 * 1024;
    cfg.in_flight_max = 4;
    cfg
}

/// A small ring, so reads of older versions come from the journal, not the ring.
pub fn limits(idempotency_window: usize) -> PartitionLimits {
    PartitionLimits {
        idempotency_window,
        max_read_count: 100_000,
        max_read_bytes: usize::MAX,
        max_group_entries: 1 << 20,
        ring: RingConfig {
            capacity_events: 64,
            capacity_bytes: 16 * 1024,
            max_retries: 8,
        },
        write_mode: evring::journal::WriteMode::Fdatasync,
    }
}

/// Opens partition 0 on `storage` from a snapshot image and the journal after it, or from
/// the journal alone, checking that the journal continues the image.
pub async fn open_from(
    storage: SimStorage,
    image: Option<&[u8]>,
    journal: JournalConfig,
    l: PartitionLimits,
) -> Result<Partition<SimStorage>, String> {
    let (mut rebuild, resume) = match image {
        Some(bytes) => {
            let image = PartitionImage::decode(bytes).map_err(|e| e.to_string())?;
            let resume = image.resume.clone();
            (
                Rebuild::from_image(image, l.idempotency_window, l.ring)
                    .map_err(|e| e.to_string())?,
                Some(resume),
            )
        }
        None => (Rebuild::new(l.idempotency_window, l.ring), None),
    };
    let (journal, report) = Journal::open_resuming(storage, journal, resume, |info, frame| {
        rebuild.frame(info, frame)
    })
    .await
    .map_err(|e| e.to_string())?;
    if image.is_some()
        && (report.next_lsn < rebuild.from_lsn
            || rebuild.first_seen.is_some_and(|f| f > rebuild.from_lsn))
    {
        return Err(format!(
            "the journal does not continue the snapshot at LSN {} (ends at {}, first seen {:?})",
            rebuild.from_lsn, report.next_lsn, rebuild.first_seen
        ));
    }
    Ok(Partition::new(0, journal, rebuild, l))
}
