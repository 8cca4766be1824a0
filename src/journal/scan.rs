//! Scanning a journal: the one routine that recovery, readers' index rebuild and
//! `evring-inspect` share.
//!
//! ## How a torn tail is told from corruption
//!
//! The writer keeps at most `in_flight_max` frames between the oldest frame not yet
//! acknowledged and the newest submitted, never pipelines across a segment boundary (it
//! drains before it moves to the next segment), and stamps each frame with `acked_lsn`: every
//! LSN below it was acknowledged when the frame was sealed. So after a crash:
//!
//! 1. Frames are checked in order (header fields, header CRC, body CRC, records, LSN
//!    continuity, the `prev_crc` chain). The first frame that fails is the *fault*.
//! 2. A frame whose checksums are valid but whose LSN or chain does not follow is corruption:
//!    the writer never leaves such a frame (torn-tail windows are zeroed at recovery).
//! 3. Every block of the look-ahead window (`in_flight_max × frame_bytes_max` from the fault,
//!    the most that could have been in flight) is checked for a valid frame. A valid frame
//!    whose `acked_lsn` is above the fault's LSN proves the fault's records were acknowledged:
//!    corruption. Valid frames that prove nothing were in flight and unacknowledged.
//! 4. A later segment holding frames is corruption, except the normal roll: the fault is an
//!    empty block less than `frame_bytes_max` before the segment's end (where the writer rolls)
//!    and the next segment's first frame carries exactly the next LSN, or is itself torn (the
//!    crash hit the new segment's first write; the scan goes on there and rules 1–3 decide).
//! 5. Otherwise the fault is a torn tail: everything from it on was never acknowledged. The
//!    scan reports the dirty part of the window so the journal zeroes it before writing again.
//!
//! Corruption stops the scan with the segment's path, the byte offset and the check that
//! failed. The residual blind spot: a frame corrupted after its acknowledgement, when fewer
//! than `in_flight_max` frames were sealed after it before the crash, looks like a torn tail
//! (docs/FORMAT.md discusses it).

use super::device::{SegmentFile, Storage};
use super::format::{
    check_frame_body, decode_frame_header, FrameExpect, FrameFault, FrameMeta, SegmentMeta, StoreId,
};
use crate::constants::{BLOCK_BYTES, INDEX_STRIDE_BYTES, SCAN_CHUNK_BYTES, SEGMENT_HEADER_BLOCKS};
use crate::error::{Corruption, JournalError};

/// What the scan checks frames against.
#[derive(Clone, Debug)]
pub struct ScanConfig {
    /// The store's id; `None` takes it from the first segment (offline tools).
    pub store_id: Option<StoreId>,
    pub frame_bytes_max: usize,
    pub in_flight_max: usize,
    /// Scan frames from this segment on; earlier segments only get their headers checked
    /// (a snapshot covers them). `None`: every segment.
    pub first_segment: Option<u64>,
}

/// One frame as the scan met it.
#[derive(Clone, Copy, Debug)]
pub struct FrameInfo {
    pub segment_seq: u64,
    /// Byte offset of the frame in its segment.
    pub offset: u64,
    pub meta: FrameMeta,
}

/// What the scan learned about one segment.
#[derive(Clone, Debug)]
pub struct SegmentSummary {
    pub seq: u64,
    pub path: String,
    pub meta: SegmentMeta,
    pub bytes: u64,
    /// Whether header copies 0 and 1 were valid.
    pub header_copies_ok: [bool; 2],
    pub frames: u64,
    pub records: u64,
    pub first_lsn: Option<u64>,
    /// LSN after the last record in this segment (equal to `first_lsn` if it has none).
    pub end_lsn: u64,
    /// Offset after the last valid frame.
    pub end_offset: u64,
}

/// A sparse map from LSN to the position of the frame that starts with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IndexEntry {
    pub first_lsn: u64,
    pub segment_seq: u64,
    pub offset: u64,
}

/// Bytes after the tail that hold leftovers of unacknowledged writes and must be zeroed
/// before the journal writes again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirtyTail {
    pub segment_seq: u64,
    pub offset: u64,
    pub len: u64,
}

/// The result of a clean scan.
#[derive(Clone, Debug)]
pub struct ScanReport {
    pub store_id: Option<StoreId>,
    pub segments: Vec<SegmentSummary>,
    pub frames: u64,
    pub records: u64,
    /// The LSN the next record will get.
    pub next_lsn: u64,
    /// Where the next frame goes: segment and offset (None for an empty directory).
    pub tail: Option<(u64, u64)>,
    /// `header_crc` of the last valid frame of the tail segment (0 if none).
    pub prev_crc: u32,
    /// Why the scan stopped where it did (`Empty` for a clean end).
    pub tail_fault: Option<FrameFault>,
    pub dirty: Option<DirtyTail>,
    pub index: Vec<IndexEntry>,
    pub bytes_scanned: u64,
}

/// Reads a segment through a sliding buffer.
struct Window<'a, F: SegmentFile> {
    file: &'a F,
    start: u64,
    bytes: Vec<u8>,
    read_total: u64,
}

impl<'a, F: SegmentFile> Window<'a, F> {
    fn new(file: &'a F) -> Self {
        Window {
            file,
            start: 0,
            bytes: Vec::new(),
            read_total: 0,
        }
    }

    /// The bytes [pos, pos + len), fewer only at the end of the file.
    async fn get(&mut self, pos: u64, len: usize) -> std::io::Result<&[u8]> {
        let have_end = self.start + self.bytes.len() as u64;
        if pos < self.start || pos + len as u64 > have_end {
            let want = len.max(SCAN_CHUNK_BYTES);
            self.bytes = self.file.read_at(pos, want).await?;
            self.read_total += self.bytes.len() as u64;
            self.start = pos;
        }
        let from = (pos - self.start) as usize;
        let to = (from + len).min(self.bytes.len());
        Ok(&self.bytes[from.min(to)..to])
    }
}

/// A frame read and fully checked at `offset`, or why not.
async fn read_frame<F: SegmentFile>(
    window: &mut Window<'_, F>,
    offset: u64,
    seg_len: u64,
    expect: &FrameExpect,
) -> std::io::Result<Result<(FrameMeta, Vec<u8>), FrameFault>> {
    if offset + BLOCK_BYTES as u64 > seg_len {
        return Ok(Err(FrameFault::Empty));
    }
    let head = window.get(offset, BLOCK_BYTES).await?;
    let meta = match decode_frame_header(head, expect) {
        Ok(meta) => meta,
        Err(fault) => return Ok(Err(fault)),
    };
    if offset + u64::from(meta.padded_len) > seg_len {
        return Ok(Err(FrameFault::Lengths));
    }
    let frame = window.get(offset, meta.padded_len as usize).await?.to_vec();
    if let Err(fault) = check_frame_body(&frame, &meta) {
        return Ok(Err(fault));
    }
    Ok(Ok((meta, frame)))
}

fn io_error(storage_path: String) -> impl FnOnce(std::io::Error) -> JournalError {
    move |source| JournalError::Io {
        path: storage_path,
        source,
    }
}

/// Scans every segment in `storage`, calling `on_frame` with each valid frame and its bytes,
/// and `progress` with the bytes read so far.
pub async fn scan<S: Storage>(
    storage: &S,
    cfg: &ScanConfig,
    mut on_frame: impl FnMut(&FrameInfo, &[u8]),
    mut progress: impl FnMut(u64),
) -> Result<ScanReport, JournalError> {
    let seqs = storage
        .list_segments()
        .await
        .map_err(io_error("segment directory".into()))?;
    let mut report = ScanReport {
        store_id: cfg.store_id,
        segments: Vec::new(),
        frames: 0,
        records: 0,
        next_lsn: 0,
        tail: None,
        prev_crc: 0,
        tail_fault: None,
        dirty: None,
        index: Vec::new(),
        bytes_scanned: 0,
    };
    // Headers first: ids, continuity of sequence numbers, sizes.
    let mut files = Vec::with_capacity(seqs.len());
    for (i, &seq) in seqs.iter().enumerate() {
        let path = storage.describe(seq);
        if i > 0 && seq != seqs[i - 1] + 1 {
            return Err(corrupt(
                &storage.describe(seqs[i - 1] + 1),
                seqs[i - 1] + 1,
                0,
                "segment missing from the middle of the journal",
            ));
        }
        let file = storage
            .open_segment(seq)
            .await
            .map_err(io_error(path.clone()))?;
        let bytes = storage
            .segment_len(seq)
            .await
            .map_err(io_error(path.clone()))?;
        let head = file
            .read_at(0, 2 * BLOCK_BYTES)
            .await
            .map_err(io_error(path.clone()))?;
        let copies = [
            SegmentMeta::decode(head.get(..BLOCK_BYTES).unwrap_or(&[])),
            SegmentMeta::decode(head.get(BLOCK_BYTES..).unwrap_or(&[])),
        ];
        let header_copies_ok = [copies[0].is_ok(), copies[1].is_ok()];
        let meta = match (copies[0], copies[1]) {
            (Ok(m), _) | (Err(_), Ok(m)) => m,
            (Err(e), Err(_)) => {
                return Err(corrupt(
                    &path,
                    seq,
                    0,
                    &format!("both segment header copies are damaged ({e})"),
                ))
            }
        };
        let store_id = *report.store_id.get_or_insert(meta.store_id);
        if meta.store_id != store_id {
            return Err(corrupt(&path, seq, 0, "segment belongs to another store"));
        }
        if meta.segment_seq != seq {
            return Err(corrupt(
                &path,
                seq,
                0,
                "segment header names another sequence number than its file name",
            ));
        }
        if meta.segment_bytes != bytes {
            return Err(corrupt(
                &path,
                seq,
                bytes.min(meta.segment_bytes),
                &format!(
                    "segment is {bytes} bytes long but its header says {} (truncated or extended)",
                    meta.segment_bytes
                ),
            ));
        }
        report.segments.push(SegmentSummary {
            seq,
            path,
            meta,
            bytes,
            header_copies_ok,
            frames: 0,
            records: 0,
            first_lsn: None,
            end_lsn: 0,
            end_offset: SEGMENT_HEADER_BLOCKS * BLOCK_BYTES as u64,
        });
        files.push(file);
    }
    let Some(store_id) = report.store_id else {
        return Ok(report);
    };
    let lookahead = (cfg.in_flight_max * cfg.frame_bytes_max) as u64;
    let mut expected_lsn: Option<u64> = None;
    let mut bytes_before = 0u64;
    let mut i = 0;
    while i < files.len() {
        if cfg.first_segment.is_some_and(|first| seqs[i] < first) && i + 1 < files.len() {
            i += 1;
            continue;
        }
        let file = &files[i];
        let seq = seqs[i];
        let seg_len = report.segments[i].bytes;
        let path = report.segments[i].path.clone();
        let mut window = Window::new(file);
        let mut offset = SEGMENT_HEADER_BLOCKS * BLOCK_BYTES as u64;
        let mut prev_crc = 0u32;
        let mut last_indexed: Option<u64> = None;
        let fault = loop {
            let expect = FrameExpect {
                store_id,
                segment_seq: seq,
                block_index: (offset / BLOCK_BYTES as u64) as u32,
                frame_bytes_max: cfg.frame_bytes_max,
            };
            let got = read_frame(&mut window, offset, seg_len, &expect)
                .await
                .map_err(io_error(path.clone()))?;
            progress(bytes_before + window.read_total);
            let (meta, frame) = match got {
                Ok(found) => found,
                Err(fault) => break fault,
            };
            let want_lsn = *expected_lsn.get_or_insert(meta.first_lsn);
            if meta.first_lsn != want_lsn {
                return Err(corrupt(
                    &path,
                    seq,
                    offset,
                    &format!(
                        "frame starts at LSN {} but LSN {want_lsn} was expected",
                        meta.first_lsn
                    ),
                ));
            }
            if meta.prev_crc != prev_crc {
                return Err(corrupt(
                    &path,
                    seq,
                    offset,
                    "frame does not chain to the previous frame (prev_crc mismatch)",
                ));
            }
            let info = FrameInfo {
                segment_seq: seq,
                offset,
                meta,
            };
            on_frame(&info, &frame);
            let summary = &mut report.segments[i];
            summary.first_lsn.get_or_insert(meta.first_lsn);
            summary.frames += 1;
            summary.records += u64::from(meta.record_count);
            if last_indexed.is_none_or(|at| offset >= at + INDEX_STRIDE_BYTES) {
                report.index.push(IndexEntry {
                    first_lsn: meta.first_lsn,
                    segment_seq: seq,
                    offset,
                });
                last_indexed = Some(offset);
            }
            report.frames += 1;
            report.records += u64::from(meta.record_count);
            expected_lsn = Some(meta.end_lsn());
            prev_crc = meta.header_crc;
            offset += u64::from(meta.padded_len);
        };
        let lsn = expected_lsn.unwrap_or(report.segments[i].meta.base_lsn);
        {
            let summary = &mut report.segments[i];
            summary.end_lsn = lsn;
            summary.end_offset = offset;
        }
        // Look ahead for frames that prove the fault hides acknowledged data.
        let window_end = (offset + lookahead).min(seg_len);
        let mut dirty_end = offset;
        let mut block = offset;
        while block + BLOCK_BYTES as u64 <= window_end {
            let expect = FrameExpect {
                store_id,
                segment_seq: seq,
                block_index: (block / BLOCK_BYTES as u64) as u32,
                frame_bytes_max: cfg.frame_bytes_max,
            };
            let bytes = window
                .get(block, BLOCK_BYTES)
                .await
                .map_err(io_error(path.clone()))?;
            if bytes.iter().any(|&b| b != 0) {
                dirty_end = block + BLOCK_BYTES as u64;
            }
            if block > offset {
                let later = read_frame(&mut window, block, seg_len, &expect)
                    .await
                    .map_err(io_error(path.clone()))?;
                if let Ok((meta, _)) = later {
                    // Negative control (build.rs): the proof of acknowledged data beyond the
                    // fault is ignored, and the damage is truncated as a torn tail.
                    let proof = meta.acked_lsn > lsn;
                    #[cfg(evring_mutant = "drop_damaged_acked_frame")]
                    let proof = proof && false;
                    if proof {
                        return Err(corrupt(
                            &path,
                            seq,
                            offset,
                            &format!(
                                "{} at LSN {lsn}, but the frame at offset {block} shows LSNs up \
                                 to {} were acknowledged",
                                fault.describe(),
                                meta.acked_lsn
                            ),
                        ));
                    }
                }
            }
            block += BLOCK_BYTES as u64;
        }
        bytes_before += window.read_total;
        progress(bytes_before);
        // Does any later segment hold frames?
        let mut rolled = false;
        for j in i + 1..files.len() {
            let expect = FrameExpect {
                store_id,
                segment_seq: seqs[j],
                block_index: SEGMENT_HEADER_BLOCKS as u32,
                frame_bytes_max: cfg.frame_bytes_max,
            };
            let mut later = Window::new(&files[j]);
            let first = read_frame(
                &mut later,
                SEGMENT_HEADER_BLOCKS * BLOCK_BYTES as u64,
                report.segments[j].bytes,
                &expect,
            )
            .await
            .map_err(io_error(report.segments[j].path.clone()))?;
            match first {
                Err(FrameFault::Empty) => continue,
                Ok((meta, _))
                    if j == i + 1 && fault == FrameFault::Empty && meta.first_lsn == lsn =>
                {
                    rolled = true;
                    break;
                }
                // The roll happened and the new segment's first frame was torn by the
                // crash: the tail is in that segment. Only where the writer could have rolled
                // (the next frame no longer fitting in this segment).
                Err(_)
                    if j == i + 1
                        && fault == FrameFault::Empty
                        && seg_len - offset < cfg.frame_bytes_max as u64 =>
                {
                    rolled = true;
                    break;
                }
                Ok(_) => {
                    return Err(corrupt(
                        &path,
                        seq,
                        offset,
                        &format!(
                            "{} at LSN {lsn}, but a later segment ({}) holds frames",
                            fault.describe(),
                            report.segments[j].path
                        ),
                    ))
                }
                Err(other) => {
                    return Err(corrupt(
                        &report.segments[j].path,
                        seqs[j],
                        SEGMENT_HEADER_BLOCKS * BLOCK_BYTES as u64,
                        &format!(
                            "first frame of a segment after the tail: {}",
                            other.describe()
                        ),
                    ))
                }
            }
        }
        if rolled {
            expected_lsn = Some(lsn);
            i += 1;
            continue;
        }
        // Torn (or clean) tail.
        report.next_lsn = lsn;
        report.tail = Some((seq, offset));
        report.prev_crc = prev_crc;
        report.tail_fault = Some(fault);
        if dirty_end > offset {
            report.dirty = Some(DirtyTail {
                segment_seq: seq,
                offset,
                len: dirty_end - offset,
            });
        }
        report.bytes_scanned = bytes_before;
        return Ok(report);
    }
    report.bytes_scanned = bytes_before;
    Ok(report)
}

fn corrupt(path: &str, seq: u64, offset: u64, reason: &str) -> JournalError {
    JournalError::Corrupt(Corruption {
        path: path.to_string(),
        segment_seq: seq,
        offset,
        reason: reason.to_string(),
    })
}
