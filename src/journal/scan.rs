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
            self.file.read_into(pos, want, &mut self.bytes).await?;
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
    let mut report = ScanReport::new(cfg.store_id);
    let files = check_segment_headers(storage, &seqs, &mut report).await?;
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
        let path = report.segments[i].path.clone();
        let segment = SegmentAt {
            store_id,
            index: i,
            seq: seqs[i],
            path: &path,
            len: report.segments[i].bytes,
            frame_bytes_max: cfg.frame_bytes_max,
        };
        let mut window = Window::new(&files[i]);
        let mut frame_progress = |read| progress(bytes_before + read);
        let end = scan_frames(
            &segment,
            &mut window,
            &mut report,
            &mut expected_lsn,
            &mut on_frame,
            &mut frame_progress,
        )
        .await?;
        let lsn = expected_lsn.unwrap_or(report.segments[i].meta.base_lsn);
        {
            let summary = &mut report.segments[i];
            summary.end_lsn = lsn;
            summary.end_offset = end.offset;
        }
        // Look ahead for frames that prove the fault hides acknowledged data.
        let dirty_end = look_ahead(&segment, &mut window, &end, lsn, lookahead).await?;
        bytes_before += window.read_total;
        progress(bytes_before);
        // Does any later segment hold frames?
        let later = i + 1..files.len();
        if rolled_over(
            &segment,
            &end,
            lsn,
            &files[later.clone()],
            &report.segments[later],
        )
        .await?
        {
            expected_lsn = Some(lsn);
            i += 1;
            continue;
        }
        // Torn (or clean) tail.
        report.set_tail(segment.seq, &end, lsn, dirty_end);
        report.bytes_scanned = bytes_before;
        return Ok(report);
    }
    report.bytes_scanned = bytes_before;
    Ok(report)
}

/// Checks the segments' headers before any frame: ids, continuity of sequence numbers,
/// sizes. Adds each segment's summary to `report` and returns the segments opened.
async fn check_segment_headers<S: Storage>(
    storage: &S,
    seqs: &[u64],
    report: &mut ScanReport,
) -> Result<Vec<S::File>, JournalError> {
    let mut files = Vec::with_capacity(seqs.len());
    for (i, &seq) in seqs.iter().enumerate() {
        if i > 0 && seq != seqs[i - 1] + 1 {
            return Err(corrupt(
                &storage.describe(seqs[i - 1] + 1),
                seqs[i - 1] + 1,
                0,
                "segment missing from the middle of the journal",
            ));
        }
        let (file, summary) = check_segment_header(storage, seq, &mut report.store_id).await?;
        report.segments.push(summary);
        files.push(file);
    }
    Ok(files)
}

/// Opens segment `seq` and checks its header: one copy at least intact, the store's id (the
/// first segment's when `store_id` is still `None`), its sequence number, its size. Returns
/// the segment and its summary, with no frame counted yet.
async fn check_segment_header<S: Storage>(
    storage: &S,
    seq: u64,
    store_id: &mut Option<StoreId>,
) -> Result<(S::File, SegmentSummary), JournalError> {
    let path = storage.describe(seq);
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
    let store_id = *store_id.get_or_insert(meta.store_id);
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
    let summary = SegmentSummary {
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
    };
    Ok((file, summary))
}

/// The segment being scanned: where it is and what its frames are checked against.
struct SegmentAt<'a> {
    store_id: StoreId,
    /// Its place in the scan's segments (and summaries).
    index: usize,
    seq: u64,
    path: &'a str,
    len: u64,
    frame_bytes_max: usize,
}

impl SegmentAt<'_> {
    /// What the frame at `offset` must say of itself.
    fn expect(&self, offset: u64) -> FrameExpect {
        FrameExpect {
            store_id: self.store_id,
            segment_seq: self.seq,
            block_index: (offset / BLOCK_BYTES as u64) as u32,
            frame_bytes_max: self.frame_bytes_max,
        }
    }

    fn corrupt(&self, offset: u64, reason: &str) -> JournalError {
        corrupt(self.path, self.seq, offset, reason)
    }

    fn io_error(&self) -> impl FnOnce(std::io::Error) -> JournalError {
        io_error(self.path.to_string())
    }
}

/// Where a segment's run of valid frames ends, and why.
struct SegmentEnd {
    /// The offset after the last valid frame.
    offset: u64,
    /// `header_crc` of the last valid frame (0 if none).
    prev_crc: u32,
    /// Why the frame at `offset` is not valid (`Empty`: nothing was written there).
    fault: FrameFault,
}

/// Checks a segment's frames in order, from the first, until one fails; each valid frame
/// goes to `on_frame` and is counted in `report`. `expected_lsn` is the LSN the next frame
/// must start with (`None`: any, the journal's first frame); `progress` gets the bytes read
/// in this segment so far.
async fn scan_frames<F: SegmentFile>(
    segment: &SegmentAt<'_>,
    window: &mut Window<'_, F>,
    report: &mut ScanReport,
    expected_lsn: &mut Option<u64>,
    on_frame: &mut impl FnMut(&FrameInfo, &[u8]),
    progress: &mut impl FnMut(u64),
) -> Result<SegmentEnd, JournalError> {
    let mut offset = SEGMENT_HEADER_BLOCKS * BLOCK_BYTES as u64;
    let mut prev_crc = 0u32;
    let mut last_indexed: Option<u64> = None;
    loop {
        let expect = segment.expect(offset);
        let got = read_frame(window, offset, segment.len, &expect)
            .await
            .map_err(segment.io_error())?;
        progress(window.read_total);
        let (meta, frame) = match got {
            Ok(found) => found,
            Err(fault) => {
                return Ok(SegmentEnd {
                    offset,
                    prev_crc,
                    fault,
                })
            }
        };
        let want_lsn = *expected_lsn.get_or_insert(meta.first_lsn);
        if meta.first_lsn != want_lsn {
            return Err(segment.corrupt(
                offset,
                &format!(
                    "frame starts at LSN {} but LSN {want_lsn} was expected",
                    meta.first_lsn
                ),
            ));
        }
        if meta.prev_crc != prev_crc {
            return Err(segment.corrupt(
                offset,
                "frame does not chain to the previous frame (prev_crc mismatch)",
            ));
        }
        let info = FrameInfo {
            segment_seq: segment.seq,
            offset,
            meta,
        };
        on_frame(&info, &frame);
        report.count_frame(segment.index, &info, &mut last_indexed);
        *expected_lsn = Some(meta.end_lsn());
        prev_crc = meta.header_crc;
        offset += u64::from(meta.padded_len);
    }
}

impl ScanReport {
    fn new(store_id: Option<StoreId>) -> ScanReport {
        ScanReport {
            store_id,
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
        }
    }

    /// The tail is in segment `seq`, where its frames end (`end`), at LSN `lsn`; the blocks
    /// after it up to `dirty_end` hold leftovers to zero.
    fn set_tail(&mut self, seq: u64, end: &SegmentEnd, lsn: u64, dirty_end: u64) {
        let offset = end.offset;
        self.next_lsn = lsn;
        self.tail = Some((seq, offset));
        self.prev_crc = end.prev_crc;
        self.tail_fault = Some(end.fault);
        if dirty_end > offset {
            self.dirty = Some(DirtyTail {
                segment_seq: seq,
                offset,
                len: dirty_end - offset,
            });
        }
    }

    /// Counts a valid frame of the `index`-th segment, and indexes it when it lies at least
    /// `INDEX_STRIDE_BYTES` past the segment's last frame indexed (`last_indexed`).
    fn count_frame(&mut self, index: usize, frame: &FrameInfo, last_indexed: &mut Option<u64>) {
        let meta = &frame.meta;
        let summary = &mut self.segments[index];
        summary.first_lsn.get_or_insert(meta.first_lsn);
        summary.frames += 1;
        summary.records += u64::from(meta.record_count);
        if last_indexed.is_none_or(|at| frame.offset >= at + INDEX_STRIDE_BYTES) {
            self.index.push(IndexEntry {
                first_lsn: meta.first_lsn,
                segment_seq: frame.segment_seq,
                offset: frame.offset,
            });
            *last_indexed = Some(frame.offset);
        }
        self.frames += 1;
        self.records += u64::from(meta.record_count);
    }
}

/// Checks every block of the look-ahead window after a segment's fault (`lookahead` bytes,
/// within the segment) for a valid frame whose `acked_lsn` shows that records from `lsn`,
/// the fault's LSN, on were acknowledged: corruption. Returns the end of the window's dirty
/// part (blocks not all zero), `end.offset` if none.
async fn look_ahead<F: SegmentFile>(
    segment: &SegmentAt<'_>,
    window: &mut Window<'_, F>,
    end: &SegmentEnd,
    lsn: u64,
    lookahead: u64,
) -> Result<u64, JournalError> {
    let offset = end.offset;
    let window_end = (offset + lookahead).min(segment.len);
    let mut dirty_end = offset;
    let mut block = offset;
    while block + BLOCK_BYTES as u64 <= window_end {
        let expect = segment.expect(block);
        let bytes = window
            .get(block, BLOCK_BYTES)
            .await
            .map_err(segment.io_error())?;
        if bytes.iter().any(|&b| b != 0) {
            dirty_end = block + BLOCK_BYTES as u64;
        }
        if block > offset {
            let later = read_frame(window, block, segment.len, &expect)
                .await
                .map_err(segment.io_error())?;
            if let Ok((meta, _)) = later {
                // Negative control (build.rs): the proof of acknowledged data beyond the
                // fault is ignored, and the damage is truncated as a torn tail.
                let proof = meta.acked_lsn > lsn;
                #[cfg(evring_mutant = "drop_damaged_acked_frame")]
                let proof = proof && false;
                if proof {
                    return Err(segment.corrupt(
                        offset,
                        &format!(
                            "{} at LSN {lsn}, but the frame at offset {block} shows LSNs up \
                             to {} were acknowledged",
                            end.fault.describe(),
                            meta.acked_lsn
                        ),
                    ));
                }
            }
        }
        block += BLOCK_BYTES as u64;
    }
    Ok(dirty_end)
}

/// Whether the journal goes on in the next segment after a segment's fault at LSN `lsn`
/// (the normal roll, rule 4 above). Any other frame in a later segment (`later_files`, with
/// their summaries `later`) is corruption.
async fn rolled_over<F: SegmentFile>(
    segment: &SegmentAt<'_>,
    end: &SegmentEnd,
    lsn: u64,
    later_files: &[F],
    later: &[SegmentSummary],
) -> Result<bool, JournalError> {
    let (offset, fault) = (end.offset, end.fault);
    for (j, (file, summary)) in later_files.iter().zip(later).enumerate() {
        let expect = FrameExpect {
            store_id: segment.store_id,
            segment_seq: summary.seq,
            block_index: SEGMENT_HEADER_BLOCKS as u32,
            frame_bytes_max: segment.frame_bytes_max,
        };
        let mut window = Window::new(file);
        let first = read_frame(
            &mut window,
            SEGMENT_HEADER_BLOCKS * BLOCK_BYTES as u64,
            summary.bytes,
            &expect,
        )
        .await
        .map_err(io_error(summary.path.clone()))?;
        let next = j == 0;
        match first {
            Err(FrameFault::Empty) => continue,
            Ok((meta, _)) if next && fault == FrameFault::Empty && meta.first_lsn == lsn => {
                return Ok(true);
            }
            // The roll happened and the new segment's first frame was torn by the
            // crash: the tail is in that segment. Only where the writer could have rolled
            // (the next frame no longer fitting in this segment).
            Err(_)
                if next
                    && fault == FrameFault::Empty
                    && segment.len - offset < segment.frame_bytes_max as u64 =>
            {
                return Ok(true);
            }
            Ok(_) => {
                return Err(segment.corrupt(
                    offset,
                    &format!(
                        "{} at LSN {lsn}, but a later segment ({}) holds frames",
                        fault.describe(),
                        summary.path
                    ),
                ))
            }
            Err(other) => {
                return Err(corrupt(
                    &summary.path,
                    summary.seq,
                    SEGMENT_HEADER_BLOCKS * BLOCK_BYTES as u64,
                    &format!(
                        "first frame of a segment after the tail: {}",
                        other.describe()
                    ),
                ))
            }
        }
    }
    Ok(false)
}

fn corrupt(path: &str, seq: u64, offset: u64, reason: &str) -> JournalError {
    JournalError::Corrupt(Corruption {
        path: path.to_string(),
        segment_seq: seq,
        offset,
        reason: reason.to_string(),
    })
}
