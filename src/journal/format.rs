//! The on-disk format: segment headers, frame headers and records (docs/FORMAT.md has the
//! byte tables).
//!
//! Everything here is pure: it encodes into and decodes from byte slices and never touches a
//! file. The header structs are `zerocopy`-derived with explicit little-endian field types, so
//! their layout is the layout on disk with no hand-written byte shuffling; the compile-time
//! size assertions below pin that layout.
//!
//! Invariants:
//! - A frame starts on a block boundary, its `padded_len` is a multiple of `BLOCK_BYTES`, and
//!   the bytes between the end of its body and `padded_len` are zero.
//! - `header_crc` covers every header byte after itself (so it covers `body_crc`, which covers
//!   the body): one valid header CRC plus one valid body CRC vouch for the whole frame.
//! - `prev_crc` is the previous frame's `header_crc` in the same segment (0 for the first), so
//!   frames form a hash chain; `block_index` is the frame's own offset / `BLOCK_BYTES`, so a
//!   write that landed at the wrong place is detected.
//! - Records inside a body are 8-byte aligned and carry consecutive LSNs starting at the
//!   frame's `first_lsn`.
//! - Decoding never panics on any input: every length is checked against the bytes present.

use crate::protocol::StreamId;
use zerocopy::byteorder::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::constants::{
    BLOCK_BYTES, FRAME_HEADER_BYTES, NAME_BYTES_MAX, RECORD_ALIGN, RECORD_HEADER_BYTES,
};

/// Magic at the start of each segment header copy: "EVRSEG" + format generation.
pub const SEGMENT_MAGIC: u64 = u64::from_le_bytes(*b"EVRSEG\x00\x01");
/// Magic at the start of every frame: "EVFR".
pub const FRAME_MAGIC: u32 = u32::from_le_bytes(*b"EVFR");
/// Format version written in segment and frame headers.
pub const FORMAT_VERSION: u16 = 1;
/// Frame kind: a group commit of records.
pub const FRAME_KIND_DATA: u8 = 1;

/// Size of one segment header copy (the struct is at the start of its block).
pub const SEGMENT_HEADER_BYTES: usize = 72;

/// A 128-bit store identity, random at `init`; every header carries it so a segment from
/// another store is never mistaken for ours.
pub type StoreId = [u8; 16];

/// Segment header, written twice (blocks 0 and 1) before the segment becomes visible.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct SegmentHeader {
    pub magic: U64,
    /// CRC32 of bytes 12..72 of this header.
    pub header_crc: U32,
    pub version: U16,
    pub reserved0: U16,
    pub store_id: StoreId,
    pub partition: U32,
    pub reserved1: U32,
    pub segment_seq: U64,
    /// LSN of the first record this segment may hold.
    pub base_lsn: U64,
    pub segment_bytes: U64,
    pub created_unix_ns: U64,
}
const _: () = assert!(std::mem::size_of::<SegmentHeader>() == SEGMENT_HEADER_BYTES);

/// Fields of a segment header, as the code uses them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentMeta {
    pub store_id: StoreId,
    pub partition: u32,
    pub segment_seq: u64,
    pub base_lsn: u64,
    pub segment_bytes: u64,
    pub created_unix_ns: u64,
}

impl SegmentMeta {
    /// One block holding the encoded header followed by zeros.
    pub fn encode_block(&self) -> Vec<u8> {
        let mut header = SegmentHeader {
            magic: SEGMENT_MAGIC.into(),
            header_crc: 0.into(),
            version: FORMAT_VERSION.into(),
            reserved0: 0.into(),
            store_id: self.store_id,
            partition: self.partition.into(),
            reserved1: 0.into(),
            segment_seq: self.segment_seq.into(),
            base_lsn: self.base_lsn.into(),
            segment_bytes: self.segment_bytes.into(),
            created_unix_ns: self.created_unix_ns.into(),
        };
        header.header_crc = crc32fast::hash(&header.as_bytes()[12..]).into();
        let mut block = vec![0u8; BLOCK_BYTES];
        block[..SEGMENT_HEADER_BYTES].copy_from_slice(header.as_bytes());
        block
    }

    /// Decodes and checks one header copy.
    pub fn decode(bytes: &[u8]) -> Result<SegmentMeta, &'static str> {
        let Ok((header, _)) = SegmentHeader::read_from_prefix(bytes) else {
            return Err("segment header shorter than 72 bytes");
        };
        if header.magic.get() != SEGMENT_MAGIC {
            return Err("bad segment magic");
        }
        if crc32fast::hash(&header.as_bytes()[12..]) != header.header_crc.get() {
            return Err("segment header checksum mismatch");
        }
        if header.version.get() != FORMAT_VERSION {
            return Err("unsupported segment format version");
        }
        Ok(SegmentMeta {
            store_id: header.store_id,
            partition: header.partition.get(),
            segment_seq: header.segment_seq.get(),
            base_lsn: header.base_lsn.get(),
            segment_bytes: header.segment_bytes.get(),
            created_unix_ns: header.created_unix_ns.get(),
        })
    }
}

/// Frame header: the first `FRAME_HEADER_BYTES` of every frame.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct FrameHeader {
    pub magic: U32,
    /// CRC32 of header bytes 8..96 (everything after this field, `body_crc` included).
    pub header_crc: U32,
    /// CRC32 of the body (`body_len` bytes after the header).
    pub body_crc: U32,
    pub version: U16,
    pub kind: u8,
    pub flags: u8,
    pub store_id: StoreId,
    pub segment_seq: U64,
    pub first_lsn: U64,
    pub record_count: U32,
    pub body_len: U32,
    /// Header + body + zero padding: a multiple of `BLOCK_BYTES`.
    pub padded_len: U32,
    /// The frame's offset in its segment / `BLOCK_BYTES`.
    pub block_index: U32,
    /// `header_crc` of the previous frame in this segment, 0 for the first frame.
    pub prev_crc: U32,
    pub partition: U32,
    /// Every LSN below this was acknowledged durable when this frame was sealed.
    pub acked_lsn: U64,
    /// Spare for a replication term (0 today).
    pub term: U64,
    pub reserved: U64,
}
const _: () = assert!(std::mem::size_of::<FrameHeader>() == FRAME_HEADER_BYTES);

/// Decoded frame header fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameMeta {
    pub header_crc: u32,
    pub body_crc: u32,
    pub store_id: StoreId,
    pub segment_seq: u64,
    pub first_lsn: u64,
    pub record_count: u32,
    pub body_len: u32,
    pub padded_len: u32,
    pub block_index: u32,
    pub prev_crc: u32,
    pub partition: u32,
    pub acked_lsn: u64,
}

impl FrameMeta {
    /// The LSN after the last record of this frame.
    pub fn end_lsn(&self) -> u64 {
        self.first_lsn + u64::from(self.record_count)
    }
}

/// Why a frame header or body was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameFault {
    /// The header block is all zeros: nothing was ever written here.
    Empty,
    BadMagic,
    HeaderChecksum,
    Version,
    Kind,
    StoreId,
    SegmentSeq,
    /// The header names another block than the one it was read from (misdirected write).
    BlockIndex,
    Lengths,
    BodyChecksum,
    /// The body's records do not parse or their LSNs are not consecutive.
    Records,
}

impl FrameFault {
    pub fn describe(self) -> &'static str {
        match self {
            FrameFault::Empty => "no frame (zero block)",
            FrameFault::BadMagic => "bad frame magic",
            FrameFault::HeaderChecksum => "frame header checksum mismatch",
            FrameFault::Version => "unsupported frame version",
            FrameFault::Kind => "unknown frame kind",
            FrameFault::StoreId => "frame belongs to another store",
            FrameFault::SegmentSeq => "frame belongs to another segment",
            FrameFault::BlockIndex => "frame written at the wrong offset (block index mismatch)",
            FrameFault::Lengths => "frame lengths out of range",
            FrameFault::BodyChecksum => "frame body checksum mismatch",
            FrameFault::Records => "frame records malformed",
        }
    }
}

impl std::fmt::Display for FrameFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.describe())
    }
}

/// Writes a frame header in place at the start of `frame` (whose body is already in place
/// after the header and whose padding is already zero) and returns its `header_crc`.
pub fn seal_frame(frame: &mut [u8], meta: &FrameMeta) -> u32 {
    assert!(frame.len() >= FRAME_HEADER_BYTES + meta.body_len as usize);
    assert_eq!(frame.len(), meta.padded_len as usize);
    assert_eq!(frame.len() % BLOCK_BYTES, 0);
    let body_end = FRAME_HEADER_BYTES + meta.body_len as usize;
    let body_crc = crc32fast::hash(&frame[FRAME_HEADER_BYTES..body_end]);
    let mut header = FrameHeader {
        magic: FRAME_MAGIC.into(),
        header_crc: 0.into(),
        body_crc: body_crc.into(),
        version: FORMAT_VERSION.into(),
        kind: FRAME_KIND_DATA,
        flags: 0,
        store_id: meta.store_id,
        segment_seq: meta.segment_seq.into(),
        first_lsn: meta.first_lsn.into(),
        record_count: meta.record_count.into(),
        body_len: meta.body_len.into(),
        padded_len: meta.padded_len.into(),
        block_index: meta.block_index.into(),
        prev_crc: meta.prev_crc.into(),
        partition: meta.partition.into(),
        acked_lsn: meta.acked_lsn.into(),
        term: 0.into(),
        reserved: 0.into(),
    };
    let header_crc = crc32fast::hash(&header.as_bytes()[8..]);
    header.header_crc = header_crc.into();
    frame[..FRAME_HEADER_BYTES].copy_from_slice(header.as_bytes());
    header_crc
}

/// What a frame header is checked against.
#[derive(Clone, Copy, Debug)]
pub struct FrameExpect {
    pub store_id: StoreId,
    pub segment_seq: u64,
    /// The block this header was read from.
    pub block_index: u32,
    /// Largest acceptable `padded_len`.
    pub frame_bytes_max: usize,
}

/// Decodes and checks a frame header read from `block` (at least `FRAME_HEADER_BYTES`).
pub fn decode_frame_header(block: &[u8], expect: &FrameExpect) -> Result<FrameMeta, FrameFault> {
    let Ok((header, _)) = FrameHeader::read_from_prefix(block) else {
        return Err(FrameFault::Lengths);
    };
    if header.magic.get() != FRAME_MAGIC {
        if block[..FRAME_HEADER_BYTES].iter().all(|&b| b == 0) {
            return Err(FrameFault::Empty);
        }
        return Err(FrameFault::BadMagic);
    }
    if crc32fast::hash(&header.as_bytes()[8..]) != header.header_crc.get() {
        return Err(FrameFault::HeaderChecksum);
    }
    if header.version.get() != FORMAT_VERSION {
        return Err(FrameFault::Version);
    }
    if header.kind != FRAME_KIND_DATA {
        return Err(FrameFault::Kind);
    }
    if header.store_id != expect.store_id {
        return Err(FrameFault::StoreId);
    }
    if header.segment_seq.get() != expect.segment_seq {
        return Err(FrameFault::SegmentSeq);
    }
    if header.block_index.get() != expect.block_index {
        return Err(FrameFault::BlockIndex);
    }
    let padded = header.padded_len.get() as usize;
    let body = header.body_len.get() as usize;
    if padded == 0
        || padded % BLOCK_BYTES != 0
        || padded > expect.frame_bytes_max
        || FRAME_HEADER_BYTES + body > padded
        || header.record_count.get() == 0
    {
        return Err(FrameFault::Lengths);
    }
    Ok(FrameMeta {
        header_crc: header.header_crc.get(),
        body_crc: header.body_crc.get(),
        store_id: header.store_id,
        segment_seq: header.segment_seq.get(),
        first_lsn: header.first_lsn.get(),
        record_count: header.record_count.get(),
        body_len: header.body_len.get(),
        padded_len: header.padded_len.get(),
        block_index: header.block_index.get(),
        prev_crc: header.prev_crc.get(),
        partition: header.partition.get(),
        acked_lsn: header.acked_lsn.get(),
    })
}

/// Checks the body CRC and that the records parse with consecutive LSNs.
/// `frame` is the whole padded frame.
pub fn check_frame_body(frame: &[u8], meta: &FrameMeta) -> Result<(), FrameFault> {
    let body_end = FRAME_HEADER_BYTES + meta.body_len as usize;
    if frame.len() < body_end {
        return Err(FrameFault::Lengths);
    }
    let body = &frame[FRAME_HEADER_BYTES..body_end];
    if crc32fast::hash(body) != meta.body_crc {
        return Err(FrameFault::BodyChecksum);
    }
    let mut count = 0u64;
    for record in RecordIter::new(body) {
        let record = record.map_err(|_| FrameFault::Records)?;
        if record.lsn != meta.first_lsn + count {
            return Err(FrameFault::Records);
        }
        count += 1;
    }
    if count != u64::from(meta.record_count) {
        return Err(FrameFault::Records);
    }
    Ok(())
}

/// Record flag bit 0: a stream ID (`u64 ms`, `u64 seq`) follows the header, before the
/// fields (docs/FORMAT.md). Event records written by this version carry one.
pub const RECORD_FLAG_STREAM_ID: u8 = 1;

/// Bytes of a record's stream ID.
pub const RECORD_STREAM_ID_BYTES: usize = 16;

/// Record kinds.
pub const RECORD_KIND_EVENT: u8 = 1;
pub const RECORD_KIND_COMMAND: u8 = 2;
pub const RECORD_KIND_CONTROL: u8 = 3;
/// A change to a stream that is not an event: entries deleted, a trim, the stream deleted
/// (`stream::StreamChange`, its bytes in the data field).
pub const RECORD_KIND_CHANGE: u8 = 4;

/// Fixed part of a record.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RecordHeader {
    /// Unpadded length of the record: header + stream + type + data + metadata.
    pub len: U32,
    pub kind: u8,
    pub flags: u8,
    pub stream_len: U16,
    pub type_len: U16,
    pub reserved0: U16,
    pub data_len: U32,
    pub meta_len: U32,
    pub reserved1: U32,
    pub lsn: U64,
    pub stream_version: U64,
    pub timestamp_ns: U64,
    pub event_id: [u8; 16],
    /// `f64::to_bits` of the event value (NaN = none).
    pub value: U64,
}
const _: () = assert!(std::mem::size_of::<RecordHeader>() == RECORD_HEADER_BYTES);

/// A record to append (borrowed fields). The LSN is assigned by the journal.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RecordRef<'a> {
    pub kind: u8,
    /// The event's stream ID; `None` in records written before events carried IDs (and in
    /// non-event records).
    pub id: Option<StreamId>,
    pub stream_version: u64,
    pub timestamp_ns: u64,
    pub event_id: [u8; 16],
    pub value: f64,
    pub stream: &'a [u8],
    pub event_type: &'a [u8],
    pub data: &'a [u8],
    pub metadata: &'a [u8],
}

impl<'a> RecordRef<'a> {
    /// A plain event record with no id, no value and no metadata.
    pub fn event(stream: &'a [u8], event_type: &'a [u8], data: &'a [u8]) -> Self {
        RecordRef {
            kind: RECORD_KIND_EVENT,
            id: None,
            stream_version: 0,
            timestamp_ns: 0,
            event_id: [0; 16],
            value: f64::NAN,
            stream,
            event_type,
            data,
            metadata: &[],
        }
    }

    /// Bytes this record takes in a frame body, padding included.
    pub fn encoded_len(&self) -> usize {
        align_up(self.unpadded_len(), RECORD_ALIGN)
    }

    fn unpadded_len(&self) -> usize {
        RECORD_HEADER_BYTES
            + if self.id.is_some() {
                RECORD_STREAM_ID_BYTES
            } else {
                0
            }
            + self.stream.len()
            + self.event_type.len()
            + self.data.len()
            + self.metadata.len()
    }

    /// Checks the lengths fit the format's fields.
    pub fn validate(&self) -> Result<(), &'static str> {
        if self.stream.len() > NAME_BYTES_MAX || self.event_type.len() > NAME_BYTES_MAX {
            return Err("stream name or event type longer than 65535 bytes");
        }
        if self.unpadded_len() > u32::MAX as usize {
            return Err("record longer than 4 GiB");
        }
        Ok(())
    }

    /// Encodes at the start of `out` (which must hold `encoded_len()` bytes, zeroed) with the
    /// given LSN. Padding bytes are written as zero.
    pub fn encode(&self, lsn: u64, out: &mut [u8]) {
        let len = self.unpadded_len();
        let header = RecordHeader {
            len: (len as u32).into(),
            kind: self.kind,
            flags: if self.id.is_some() {
                RECORD_FLAG_STREAM_ID
            } else {
                0
            },
            stream_len: (self.stream.len() as u16).into(),
            type_len: (self.event_type.len() as u16).into(),
            reserved0: 0.into(),
            data_len: (self.data.len() as u32).into(),
            meta_len: (self.metadata.len() as u32).into(),
            reserved1: 0.into(),
            lsn: lsn.into(),
            stream_version: self.stream_version.into(),
            timestamp_ns: self.timestamp_ns.into(),
            event_id: self.event_id,
            value: self.value.to_bits().into(),
        };
        out[..RECORD_HEADER_BYTES].copy_from_slice(header.as_bytes());
        let mut at = RECORD_HEADER_BYTES;
        if let Some(id) = self.id {
            out[at..at + 8].copy_from_slice(&id.ms.to_le_bytes());
            out[at + 8..at + 16].copy_from_slice(&id.seq.to_le_bytes());
            at += RECORD_STREAM_ID_BYTES;
        }
        for field in [self.stream, self.event_type, self.data, self.metadata] {
            out[at..at + field.len()].copy_from_slice(field);
            at += field.len();
        }
        out[at..self.encoded_len()].fill(0);
    }
}

/// A decoded record borrowing from a frame body.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RecordView<'a> {
    pub lsn: u64,
    pub record: RecordRef<'a>,
}

impl RecordView<'_> {
    pub fn to_owned(&self) -> OwnedRecord {
        OwnedRecord {
            lsn: self.lsn,
            kind: self.record.kind,
            id: self.record.id,
            stream_version: self.record.stream_version,
            timestamp_ns: self.record.timestamp_ns,
            event_id: self.record.event_id,
            value: self.record.value,
            stream: self.record.stream.to_vec(),
            event_type: self.record.event_type.to_vec(),
            data: self.record.data.to_vec(),
            metadata: self.record.metadata.to_vec(),
        }
    }
}

/// A record with owned fields, as readers hand it out.
#[derive(Clone, Debug, PartialEq)]
pub struct OwnedRecord {
    pub lsn: u64,
    pub kind: u8,
    pub id: Option<StreamId>,
    pub stream_version: u64,
    pub timestamp_ns: u64,
    pub event_id: [u8; 16],
    pub value: f64,
    pub stream: Vec<u8>,
    pub event_type: Vec<u8>,
    pub data: Vec<u8>,
    pub metadata: Vec<u8>,
}

impl OwnedRecord {
    pub fn as_ref(&self) -> RecordRef<'_> {
        RecordRef {
            kind: self.kind,
            id: self.id,
            stream_version: self.stream_version,
            timestamp_ns: self.timestamp_ns,
            event_id: self.event_id,
            value: self.value,
            stream: &self.stream,
            event_type: &self.event_type,
            data: &self.data,
            metadata: &self.metadata,
        }
    }
}

/// Iterates the records of a frame body; yields an error (once) on malformed input.
pub struct RecordIter<'a> {
    body: &'a [u8],
    at: usize,
    failed: bool,
}

impl<'a> RecordIter<'a> {
    pub fn new(body: &'a [u8]) -> Self {
        Self::starting_at(body, 0)
    }

    /// The records of `body` from byte `at` on, which must be where one of them starts
    /// (a [`RecordIter::position`] of an iterator over the same body).
    pub fn starting_at(body: &'a [u8], at: usize) -> Self {
        assert!(at <= body.len(), "a record position is inside its body");
        RecordIter {
            body,
            at,
            failed: false,
        }
    }

    /// The byte offset in the body of the record `next` returns.
    pub fn position(&self) -> usize {
        self.at
    }
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = Result<RecordView<'a>, &'static str>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.at >= self.body.len() {
            return None;
        }
        let rest = &self.body[self.at..];
        let result = decode_record(rest);
        match result {
            Ok((view, used)) => {
                self.at += used;
                Some(Ok(view))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// Decodes one record at the start of `bytes`; returns it and the padded bytes it used.
fn decode_record(bytes: &[u8]) -> Result<(RecordView<'_>, usize), &'static str> {
    let Ok((header, _)) = RecordHeader::read_from_prefix(bytes) else {
        return Err("record header truncated");
    };
    let len = header.len.get() as usize;
    let stream_len = header.stream_len.get() as usize;
    let type_len = header.type_len.get() as usize;
    let data_len = header.data_len.get() as usize;
    let meta_len = header.meta_len.get() as usize;
    let has_id = header.flags & RECORD_FLAG_STREAM_ID != 0;
    if header.flags & !RECORD_FLAG_STREAM_ID != 0 {
        return Err("unknown record flags");
    }
    let declared = RECORD_HEADER_BYTES
        .checked_add(if has_id { RECORD_STREAM_ID_BYTES } else { 0 })
        .and_then(|n| n.checked_add(stream_len))
        .and_then(|n| n.checked_add(type_len))
        .and_then(|n| n.checked_add(data_len))
        .and_then(|n| n.checked_add(meta_len))
        .ok_or("record lengths overflow")?;
    if declared != len {
        return Err("record length does not match its fields");
    }
    if len > bytes.len() {
        return Err("record runs past the frame body");
    }
    if !matches!(
        header.kind,
        RECORD_KIND_EVENT | RECORD_KIND_COMMAND | RECORD_KIND_CONTROL | RECORD_KIND_CHANGE
    ) {
        return Err("unknown record kind");
    }
    let mut at = RECORD_HEADER_BYTES;
    let mut take = |n: usize| {
        let field = &bytes[at..at + n];
        at += n;
        field
    };
    let id = has_id.then(|| {
        let b = take(RECORD_STREAM_ID_BYTES);
        StreamId::new(
            u64::from_le_bytes(b[..8].try_into().expect("8 bytes")),
            u64::from_le_bytes(b[8..].try_into().expect("8 bytes")),
        )
    });
    let stream = take(stream_len);
    let event_type = take(type_len);
    let data = take(data_len);
    let metadata = take(meta_len);
    // The last record of a body may end without padding only if the body ends there.
    let used = align_up(len, RECORD_ALIGN).min(bytes.len());
    Ok((
        RecordView {
            lsn: header.lsn.get(),
            record: RecordRef {
                kind: header.kind,
                id,
                stream_version: header.stream_version.get(),
                timestamp_ns: header.timestamp_ns.get(),
                event_id: header.event_id,
                value: f64::from_bits(header.value.get()),
                stream,
                event_type,
                data,
                metadata,
            },
        },
        used,
    ))
}

/// Rounds `n` up to a multiple of `align` (a power of two).
pub const fn align_up(n: usize, align: usize) -> usize {
    (n + align - 1) & !(align - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expect(block_index: u32) -> FrameExpect {
        FrameExpect {
            store_id: [7; 16],
            segment_seq: 3,
            block_index,
            frame_bytes_max: 1 << 20,
        }
    }

    fn frame_with(records: &[RecordRef<'_>], first_lsn: u64, block_index: u32) -> Vec<u8> {
        let body_len: usize = records.iter().map(|r| r.encoded_len()).sum();
        let padded = align_up(FRAME_HEADER_BYTES + body_len, BLOCK_BYTES);
        let mut frame = vec![0u8; padded];
        let mut at = FRAME_HEADER_BYTES;
        for (i, r) in records.iter().enumerate() {
            r.encode(first_lsn + i as u64, &mut frame[at..]);
            at += r.encoded_len();
        }
        let meta = FrameMeta {
            header_crc: 0,
            body_crc: 0,
            store_id: [7; 16],
            segment_seq: 3,
            first_lsn,
            record_count: records.len() as u32,
            body_len: body_len as u32,
            padded_len: padded as u32,
            block_index,
            prev_crc: 99,
            partition: 1,
            acked_lsn: first_lsn,
        };
        seal_frame(&mut frame, &meta);
        frame
    }

    #[test]
    fn frame_round_trips_records_and_header_fields() {
        let mut a = RecordRef::event(b"orders-1", b"OrderPlaced", b"{\"qty\":3}");
        a.value = 12.5;
        a.event_id = [1; 16];
        a.metadata = b"m";
        a.id = Some(StreamId::new(1_733_472_000_000, 7));
        let b = RecordRef::event(b"orders-2", b"", b"");
        // Header, ID, the four fields (8 + 11 + 9 + 1 bytes), padded to 8.
        assert_eq!(a.encoded_len(), 120);
        let frame = frame_with(&[a, b], 40, 5);
        assert_eq!(frame.len(), BLOCK_BYTES);
        let meta = decode_frame_header(&frame, &expect(5)).unwrap();
        assert_eq!(meta.first_lsn, 40);
        assert_eq!(meta.end_lsn(), 42);
        assert_eq!(meta.prev_crc, 99);
        check_frame_body(&frame, &meta).unwrap();
        let body = &frame[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + meta.body_len as usize];
        let got: Vec<_> = RecordIter::new(body).map(|r| r.unwrap()).collect();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].lsn, 40);
        assert_eq!(got[0].record, a);
        assert_eq!(got[1].lsn, 41);
        assert_eq!(got[1].record.stream, b"orders-2");
        assert_eq!(
            got[1].record.id, None,
            "a record without an ID (an older format's)"
        );
    }

    #[test]
    fn the_stream_id_follows_the_header_under_flag_bit_0_and_other_flags_are_refused() {
        let mut r = RecordRef::event(b"s", b"t", b"d");
        r.id = Some(StreamId::new(5, 3));
        r.value = 1.0;
        let mut buf = vec![0u8; r.encoded_len()];
        r.encode(9, &mut buf);
        assert_eq!(buf[5], RECORD_FLAG_STREAM_ID);
        assert_eq!(&buf[72..80], &5u64.to_le_bytes());
        assert_eq!(&buf[80..88], &3u64.to_le_bytes());
        assert_eq!(&buf[88..91], b"std");
        assert_eq!(RecordIter::new(&buf).next().unwrap().unwrap().record, r);
        let mut bad = buf.clone();
        bad[5] |= 2;
        assert_eq!(
            RecordIter::new(&bad).next().unwrap().err(),
            Some("unknown record flags")
        );
        // Without the flag the lengths no longer add up.
        buf[5] = 0;
        assert!(RecordIter::new(&buf).next().unwrap().is_err());
    }

    #[test]
    fn misdirected_frame_is_rejected_by_block_index() {
        let frame = frame_with(&[RecordRef::event(b"s", b"t", b"d")], 0, 5);
        assert_eq!(
            decode_frame_header(&frame, &expect(6)),
            Err(FrameFault::BlockIndex)
        );
    }

    #[test]
    fn any_flipped_bit_in_a_frame_is_detected() {
        let frame = frame_with(&[RecordRef::event(b"stream", b"type", b"payload")], 9, 2);
        let meta = decode_frame_header(&frame, &expect(2)).unwrap();
        let used = FRAME_HEADER_BYTES + meta.body_len as usize;
        for byte in 0..used {
            for bit in 0..8 {
                let mut bad = frame.clone();
                bad[byte] ^= 1 << bit;
                let ok = decode_frame_header(&bad, &expect(2))
                    .and_then(|m| check_frame_body(&bad, &m).map(|_| m));
                assert!(ok.is_err(), "flip of byte {byte} bit {bit} went unnoticed");
            }
        }
    }

    #[test]
    fn zero_block_reads_as_empty() {
        let block = vec![0u8; BLOCK_BYTES];
        assert_eq!(
            decode_frame_header(&block, &expect(2)),
            Err(FrameFault::Empty)
        );
    }

    #[test]
    fn segment_header_round_trips_and_detects_damage() {
        let meta = SegmentMeta {
            store_id: [3; 16],
            partition: 2,
            segment_seq: 17,
            base_lsn: 1000,
            segment_bytes: 1 << 20,
            created_unix_ns: 5,
        };
        let mut block = meta.encode_block();
        assert_eq!(SegmentMeta::decode(&block), Ok(meta));
        block[30] ^= 0x10;
        assert!(SegmentMeta::decode(&block).is_err());
        assert!(SegmentMeta::decode(&block[..10]).is_err());
    }

    #[test]
    fn record_decoder_rejects_lengths_past_the_body() {
        let r = RecordRef::event(b"s", b"t", b"data");
        let mut buf = vec![0u8; r.encoded_len()];
        r.encode(0, &mut buf);
        // Claim more data than present.
        buf[12] = 200;
        let mut it = RecordIter::new(&buf);
        assert!(it.next().unwrap().is_err());
        assert!(it.next().is_none());
        // Truncated header.
        assert!(RecordIter::new(&buf[..10]).next().unwrap().is_err());
    }
}
