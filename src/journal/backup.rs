//! Online backup: a consistent copy of a journal that a running evringd is writing.
//!
//! ## Why a plain `cp` is not enough
//!
//! The writer keeps up to `in_flight_frames` frames in flight and they may reach the disk out
//! of order, so a copy that reads a segment front to back while it grows can catch a hole (a
//! frame not yet written when the copy passed its offset) followed by frames written after
//! it. Recovery rightly calls such a journal corrupt: a hole followed by later acknowledged
//! frames is exactly what a lost write of acknowledged data looks like.
//!
//! ## What the copy does instead
//!
//! It copies the longest *valid prefix* of the journal: segment by segment in sequence order,
//! frame by frame from the first block after the header, each frame checked as recovery
//! checks it (header and body CRCs, records, the segment's sequence number and block index,
//! LSN continuity and the `prev_crc` chain). At the first block that is not such a frame it
//! moves to the next segment only for the writer's normal roll (the next segment's first frame
//! carries exactly the next LSN); otherwise the copy ends there. Blocks are written once and
//! never rewritten while they hold acknowledged data, so a block read as a valid frame is
//! final; a frame read half-written fails its CRC and ends the copy.
//!
//! The result is a journal whose frames are a prefix of the source's LSN order, followed by
//! zeros to each segment's full size (segments are preallocated and written through, as the
//! journal makes them): every event acknowledged before the backup began is in it, events
//! acknowledged during it may be, and recovery of the copy finds a clean tail.
//!
//! The source is only read; the copy is fsynced (files and directories) before it reports.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::device::{list_segment_dir, segment_file_name};
use super::format::{check_frame_body, decode_frame_header, FrameExpect, SegmentMeta, StoreId};
use crate::constants::{BLOCK_BYTES, FRAME_BYTES_MAX_LIMIT, SEGMENT_HEADER_BLOCKS};

/// What one journal's copy holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JournalBackup {
    pub segments: u64,
    pub frames: u64,
    pub records: u64,
    /// LSN after the last copied record (the first LSN if none).
    pub end_lsn: u64,
    /// Bytes of frames and headers copied (not counting the zero fill).
    pub bytes_copied: u64,
}

/// Copies the valid prefix of the journal in `src` (a partition's journal directory) to
/// `dst` (created; must not hold segments). `store_id` is checked against every segment.
/// `progress` is called with the bytes copied so far.
pub fn backup_journal(
    src: &Path,
    dst: &Path,
    store_id: StoreId,
    mut progress: impl FnMut(u64),
) -> io::Result<JournalBackup> {
    std::fs::create_dir_all(dst)?;
    if !list_segment_dir(dst)?.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} already holds journal segments", dst.display()),
        ));
    }
    let mut out = JournalBackup::default();
    let mut expected_lsn: Option<u64> = None;
    let seqs = list_segment_dir(src)?;
    for (i, &seq) in seqs.iter().enumerate() {
        if i > 0 && seq != seqs[i - 1] + 1 {
            break;
        }
        let path = src.join(segment_file_name(seq));
        let file = match File::open(&path) {
            Ok(f) => f,
            // Removed by retention between the listing and now: nothing newer can follow.
            Err(e) if e.kind() == io::ErrorKind::NotFound && out.segments == 0 => continue,
            Err(e) => return Err(e),
        };
        let mut head = vec![0u8; SEGMENT_HEADER_BLOCKS as usize * BLOCK_BYTES];
        read_full(&file, &mut head, 0)?;
        let meta = match SegmentMeta::decode(&head[..BLOCK_BYTES])
            .or_else(|_| SegmentMeta::decode(&head[BLOCK_BYTES..]))
        {
            Ok(m) if m.store_id == store_id && m.segment_seq == seq => m,
            // A segment still being prepared (its header is written last) or not ours: the
            // journal's copy ends before it.
            _ => break,
        };
        let dst_path = dst.join(segment_file_name(seq));
        let mut copy = Copy::create(&dst_path, &head)?;
        let mut offset = head.len() as u64;
        let mut prev_crc = 0u32;
        while let Some((frame, meta_f)) =
            read_valid_frame(&file, offset, meta.segment_bytes, store_id, seq)?
        {
            let want = *expected_lsn.get_or_insert(meta_f.first_lsn);
            if meta_f.first_lsn != want || meta_f.prev_crc != prev_crc {
                break;
            }
            copy.write(&frame, offset)?;
            offset += frame.len() as u64;
            prev_crc = meta_f.header_crc;
            expected_lsn = Some(meta_f.end_lsn());
            out.frames += 1;
            out.records += u64::from(meta_f.record_count);
            out.bytes_copied += frame.len() as u64;
            progress(out.bytes_copied);
        }
        copy.finish(meta.segment_bytes)?;
        out.segments += 1;
        out.bytes_copied += head.len() as u64;
        // The copy goes on to the next segment only if the writer rolled into it exactly
        // where this segment's valid frames end (it never pipelines across a roll).
        if !rolled_next(src, seq, store_id, expected_lsn)? {
            break;
        }
    }
    out.end_lsn = expected_lsn.unwrap_or(0);
    crate::durable::sync_dir(dst)?;
    Ok(out)
}

/// Whether segment `seq + 1` exists and its first frame starts at `lsn` (the writer rolled).
fn rolled_next(src: &Path, seq: u64, store_id: StoreId, lsn: Option<u64>) -> io::Result<bool> {
    let Some(lsn) = lsn else { return Ok(false) };
    let path = src.join(segment_file_name(seq + 1));
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    let offset = SEGMENT_HEADER_BLOCKS * BLOCK_BYTES as u64;
    Ok(matches!(
        read_valid_frame(&file, offset, len, store_id, seq + 1)?,
        Some((_, m)) if m.first_lsn == lsn
    ))
}

/// Reads the frame at `offset` if it is a whole, valid frame of segment `seq`.
fn read_valid_frame(
    file: &File,
    offset: u64,
    segment_bytes: u64,
    store_id: StoreId,
    seq: u64,
) -> io::Result<Option<(Vec<u8>, super::format::FrameMeta)>> {
    if offset + BLOCK_BYTES as u64 > segment_bytes {
        return Ok(None);
    }
    let mut block = vec![0u8; BLOCK_BYTES];
    if read_full(file, &mut block, offset)? < BLOCK_BYTES {
        return Ok(None);
    }
    let expect = FrameExpect {
        store_id,
        segment_seq: seq,
        block_index: (offset / BLOCK_BYTES as u64) as u32,
        frame_bytes_max: FRAME_BYTES_MAX_LIMIT,
    };
    let Ok(meta) = decode_frame_header(&block, &expect) else {
        return Ok(None);
    };
    let len = meta.padded_len as usize;
    if offset + len as u64 > segment_bytes {
        return Ok(None);
    }
    let mut frame = block;
    frame.resize(len, 0);
    if len > BLOCK_BYTES
        && read_full(file, &mut frame[BLOCK_BYTES..], offset + BLOCK_BYTES as u64)?
            < len - BLOCK_BYTES
    {
        return Ok(None);
    }
    if check_frame_body(&frame, &meta).is_err() {
        return Ok(None);
    }
    Ok(Some((frame, meta)))
}

fn read_full(file: &File, buf: &mut [u8], pos: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        let n = file.read_at(&mut buf[done..], pos + done as u64)?;
        if n == 0 {
            break;
        }
        done += n;
    }
    Ok(done)
}

/// A segment copy being written: header, frames, then zeros to the full size.
struct Copy {
    file: File,
    written: u64,
}

impl Copy {
    fn create(path: &Path, head: &[u8]) -> io::Result<Copy> {
        let file = OpenOptions::new().write(true).create_new(true).open(path)?;
        file.write_all_at(head, 0)?;
        Ok(Copy {
            file,
            written: head.len() as u64,
        })
    }

    fn write(&mut self, frame: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(frame, offset)?;
        self.written = offset + frame.len() as u64;
        Ok(())
    }

    /// Writes zeros up to `segment_bytes` (the journal expects written-through space) and
    /// syncs the file.
    fn finish(mut self, segment_bytes: u64) -> io::Result<()> {
        let zeros = vec![0u8; 1 << 20];
        let mut at = self.written;
        let mut w = io::BufWriter::new(&mut self.file);
        io::Seek::seek(&mut w, io::SeekFrom::Start(at))?;
        while at < segment_bytes {
            let n = (segment_bytes - at).min(zeros.len() as u64) as usize;
            w.write_all(&zeros[..n])?;
            at += n as u64;
        }
        w.flush()?;
        drop(w);
        self.file.sync_all()
    }
}
