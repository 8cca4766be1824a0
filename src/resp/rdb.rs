//! A pure decoder of Redis `DUMP` payloads that hold a stream, for the RESP port's `RESTORE`.
//!
//! [`decode_stream_dump`] reads what Redis 7.0's `DUMP` writes for a stream key (and what
//! Redis 5 and 6 wrote) and returns it as plain Rust values: the live entries, the stream's
//! counters, and each consumer group with its pending entries and consumers. It reads as
//! Redis 7.0.15's `restoreCommand` → `verifyDumpPayload` → `rdbLoadObject` reads, and
//! refuses what they refuse with Redis's own texts. It never panics, uses no `unsafe`, and
//! allocates in proportion to the payload (see *Bounds*).
//!
//! # The payload
//!
//! ```text
//! <type byte> <object body> [ignored bytes] <RDB version: u16 LE> <CRC64: u64 LE>
//! ```
//!
//! - **Footer** (`verifyDumpPayload`, `src/cluster.c`): the last 10 bytes are the RDB version
//!   (at most [`RDB_VERSION`], 10 for Redis 7.0) and Redis's CRC-64 ([`crc64`]: Jones
//!   polynomial, reflected, initial value 0, no final xor) of every byte before the CRC,
//!   the version included. Less than 10 bytes, a newer version or a wrong CRC is
//!   [`DumpError::VersionOrChecksum`].
//! - **Type byte**: 15 ([`RDB_TYPE_STREAM_LISTPACKS`], Redis 5 and 6), 19
//!   ([`RDB_TYPE_STREAM_LISTPACKS_2`], Redis 7.0) or 21 ([`RDB_TYPE_STREAM_LISTPACKS_3`],
//!   Redis 7.2) is a stream. Any other type Redis 7.0 knows (0–7, 9–18) is
//!   [`DumpError::NotAStream`]; anything else is [`DumpError::BadData`], as in Redis.
//! - **Object body** (`rdbLoadObject`, `src/rdb.c`), read from the whole payload as Redis
//!   reads it (so, as in Redis, bytes after the object are ignored, and a body may run on
//!   into the footer):
//!   - the number of listpack nodes, then per node its key (an RDB string of exactly 16
//!     bytes: the node's master ID, `ms` then `seq`, big-endian) and its listpack (an RDB
//!     string);
//!   - `length`, `last_id` (`ms`, `seq`); for types ≥ 19 also `first_id`,
//!     `max_deleted_entry_id` and `entries_added`;
//!   - the number of groups, then per group: its name (RDB string), `last_id`, for types ≥ 19
//!     `entries_read` (`u64::MAX` is Redis's "invalid", [`None`] here); its global PEL: a
//!     count, then per entry a raw 16-byte big-endian ID, the delivery time (8 bytes,
//!     little-endian, `rdbLoadMillisecondTime`) and the delivery count (RDB length); its
//!     consumers: a count, then per consumer its name, seen time (8 bytes LE), for type 21
//!     the active time (8 bytes LE), and its own PEL: a count and raw 16-byte IDs, each of
//!     which must be in the group's global PEL.
//!
//! Every number above not said otherwise is an RDB **length**: one byte `00xxxxxx` (6 bits),
//! `01xxxxxx` + 1 byte (14 bits, big-endian), `0x80` + 4 bytes or `0x81` + 8 bytes
//! (big-endian). A first byte `11xxxxxx` read where a length is expected gives its low six
//! bits, as Redis's `rdbLoadLen(rdb, NULL)` does. An RDB **string** is a length and that many
//! bytes, or one of the special encodings `0xC0` (int8), `0xC1` (int16 LE), `0xC2` (int32 LE),
//! whose value is the integer's decimal text, or `0xC3`: LZF, a compressed length, the
//! uncompressed length and the compressed bytes ([`lzf_decompress`]).
//!
//! # Listpacks and stream nodes
//!
//! A listpack (`src/listpack.c`) is a 4-byte little-endian total size (equal to the string's
//! length), a 2-byte element count (65535: unknown), the elements and a final `0xFF`. Each
//! element is an encoding, its data and a *backlen* (the element's encoded size in 1–5
//! bytes, 7 bits per byte, read backwards). Encodings: `0xxxxxxx` 7-bit unsigned int;
//! `10xxxxxx` string of up to 63 bytes; `110xxxxx`+1 13-bit int; `1110xxxx`+1 string of up to
//! 4095 bytes; `0xF1`/`0xF2`/`0xF3`/`0xF4` 16/24/32/64-bit int (little-endian, two's
//! complement); `0xF0`+4 (LE) longer string. Every element is checked as Redis's deep
//! sanitization (`lpValidateNext`) checks it, the count included when known.
//!
//! A stream node's listpack (`src/t_stream.c`) starts with the master entry: `count` (live
//! entries), `deleted`, the number of master fields, the master field names, and `0`. Then
//! `count + deleted` entries follow, each `flags`, `ms - master.ms`, `seq - master.seq`
//! (modulo 2⁶⁴, so a difference may be negative), then, unless `flags` has SAMEFIELDS (2),
//! a field count and field/value pairs, else one value per master field; and last `lp-count`,
//! the number of the entry's elements before it. Entries flagged DELETED (1) are skipped.
//! An integer element is a field or value's decimal text; a string element read where a
//! number is expected must be a Redis integer (`string2ll`).
//!
//! # Legacy type 15
//!
//! As Redis 7.0 does on loading one: `entries_added = length`, `max_deleted_id = 0-0`,
//! `first_id` = the first live entry's ID, or `u64::MAX-u64::MAX` when there is none (Redis's
//! `streamGetEdgeID`; `XINFO STREAM` then shows `recorded-first-entry-id` as that), and each
//! group's `entries_read` = [`StreamCounters::estimate_read`] of its `last_id`.
//!
//! # Invariants of a decoded stream
//!
//! Checked here, so a caller can rely on them (Redis checks some only with
//! `sanitize-dump-payload yes`, some not at all; each refusal is `Bad data format`):
//!
//! - `entries` are strictly increasing by ID, each at most `last_id`, and their number is the
//!   payload's `length`;
//! - node keys are 16 bytes, node listpacks are non-empty and well-formed as above, with
//!   `lp-count` right and nothing after the last entry;
//! - group names are distinct, consumer names are distinct within their group;
//! - every pending entry is in its group's global PEL once and owned by exactly one consumer
//!   (Redis would let a second consumer silently take it over); `pending` is sorted by ID.
//!
//! # Bounds
//!
//! Nothing is allocated from a count or length before the bytes it describes are there: a
//! string's length is checked against the bytes left, an LZF string's uncompressed length
//! against 88 times its compressed length (LZF's largest expansion), and counts only bound
//! loops that each consume payload bytes. What the decoded stream holds (field, value and name
//! bytes, 32 bytes more per field/value pair, entry, pending entry and consumer, and LZF
//! output) is bounded by
//! [`MAX_DECODED_BYTES_PER_PAYLOAD_BYTE`] times the payload's size plus 64 KiB; beyond that the
//! payload is `Bad data format` (only a payload whose entries repeat long master field names
//! with tiny values could come near it).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};

use super::string2ll;
use crate::protocol::StreamId;
use crate::stream::StreamCounters;

/// The newest RDB version accepted in a payload's footer: Redis 7.0's `RDB_VERSION`.
pub const RDB_VERSION: u16 = 10;
/// Redis 5 and 6's stream type.
pub const RDB_TYPE_STREAM_LISTPACKS: u8 = 15;
/// Redis 7.0's stream type: adds `first_id`, `max_deleted_entry_id`, `entries_added` and each
/// group's `entries_read`.
pub const RDB_TYPE_STREAM_LISTPACKS_2: u8 = 19;
/// Redis 7.2's stream type: adds each consumer's active time. (A real Redis 7.2 payload carries
/// RDB version 11, which the footer check refuses, as Redis 7.0 does.)
pub const RDB_TYPE_STREAM_LISTPACKS_3: u8 = 21;
/// The bound on what a decoded stream holds, per payload byte (see the module docs).
pub const MAX_DECODED_BYTES_PER_PAYLOAD_BYTE: usize = 256;
const DECODED_BYTES_FLOOR: usize = 64 * 1024;
/// What one field/value pair or one entry is charged beyond its bytes.
const ITEM_OVERHEAD: usize = 32;
/// LZF's largest expansion: a 3-byte back reference yields 264 bytes.
const LZF_MAX_EXPANSION: usize = 88;

const STREAM_ITEM_FLAG_DELETED: i64 = 1;
const STREAM_ITEM_FLAG_SAMEFIELDS: i64 = 2;

/// Why a payload was refused. `Display` is Redis's error text after `ERR `.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DumpError {
    /// The footer is missing, names an RDB version above [`RDB_VERSION`], or its CRC is wrong.
    #[error("DUMP payload version or checksum are wrong")]
    VersionOrChecksum,
    /// The footer is right but the object is malformed.
    #[error("Bad data format")]
    BadData,
    /// A valid Redis object of a type other than stream.
    #[error("evring's RESTORE restores streams only; this DUMP payload holds another type")]
    NotAStream,
}

/// An entry's field/value pairs, in order.
pub type Fields = Vec<(Vec<u8>, Vec<u8>)>;

/// A stream as a `DUMP` payload holds it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DumpedStream {
    /// The live entries, by increasing ID, each with its field/value pairs in order.
    pub entries: Vec<(StreamId, Fields)>,
    /// The largest ID ever given (`last-generated-id`).
    pub last_id: StreamId,
    /// `recorded-first-entry-id`.
    pub first_id: StreamId,
    /// `max-deleted-entry-id`.
    pub max_deleted_id: StreamId,
    /// `entries-added`: how many entries were ever added.
    pub entries_added: u64,
    /// The consumer groups, in payload order (Redis's: by name).
    pub groups: Vec<DumpedGroup>,
}

/// A consumer group.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DumpedGroup {
    pub name: Vec<u8>,
    /// `last-delivered-id`.
    pub last_id: StreamId,
    /// `entries-read`; `None` when Redis's counter is invalid (`SCG_INVALID_ENTRIES_READ`).
    pub entries_read: Option<u64>,
    /// The group's pending entries, by increasing ID.
    pub pending: Vec<DumpedPending>,
    /// The consumers, in payload order (Redis's: by name).
    pub consumers: Vec<DumpedConsumer>,
}

/// A pending (delivered, unacknowledged) entry of a group.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DumpedPending {
    pub id: StreamId,
    /// Last delivery time, Unix ms (Redis keeps it signed; the 64 bits are kept as they are).
    pub delivery_ms: u64,
    pub delivery_count: u64,
    /// The name of the consumer whose PEL holds it.
    pub consumer: Vec<u8>,
}

/// A consumer of a group.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DumpedConsumer {
    pub name: Vec<u8>,
    /// `seen-time`, Unix ms.
    pub seen_ms: u64,
    /// `active-time`, Unix ms: only type 21 payloads carry it.
    pub active_ms: Option<u64>,
}

impl DumpedStream {
    /// The stream's counters, for [`StreamCounters::estimate_read`].
    pub fn counters(&self) -> StreamCounters {
        StreamCounters {
            length: self.entries.len() as u64,
            entries_added: self.entries_added,
            first_id: self.first_id,
            last_id: self.last_id,
            max_deleted_id: self.max_deleted_id,
        }
    }
}

/// Redis's `crc64(crc, data)` (`src/crc64.c`): CRC-64 with the Jones polynomial
/// `0xad93d23594c935a9`, reflected, no final xor; `crc64(0, b"123456789")` is
/// `0xe9c6d914c4b8d9ca`.
pub fn crc64(crc: u64, data: &[u8]) -> u64 {
    data.iter().fold(crc, |crc, &b| {
        CRC64_TABLE[((crc ^ u64::from(b)) & 0xff) as usize] ^ (crc >> 8)
    })
}

const CRC64_TABLE: [u64; 256] = crc64_table();

const fn crc64_table() -> [u64; 256] {
    let poly = 0xad93_d235_94c9_35a9_u64.reverse_bits();
    let mut table = [0u64; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u64;
        let mut bit = 0;
        while bit < 8 {
            c = if c & 1 == 1 { (c >> 1) ^ poly } else { c >> 1 };
            bit += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
}

/// Redis's `verifyDumpPayload`: the footer's RDB version is at most [`RDB_VERSION`] and its
/// CRC matches. Returns the version.
pub fn verify_dump_payload(payload: &[u8]) -> Result<u16, DumpError> {
    let footer_at = payload
        .len()
        .checked_sub(10)
        .ok_or(DumpError::VersionOrChecksum)?;
    let (covered, crc) = payload.split_at(footer_at + 2);
    let version = u16::from_le_bytes([payload[footer_at], payload[footer_at + 1]]);
    if version > RDB_VERSION || crc64(0, covered).to_le_bytes() != crc {
        return Err(DumpError::VersionOrChecksum);
    }
    Ok(version)
}

/// Decodes a `DUMP` payload holding a stream (see the module docs for the format, what is
/// checked and the bounds).
pub fn decode_stream_dump(payload: &[u8]) -> Result<DumpedStream, DumpError> {
    verify_dump_payload(payload)?;
    let mut r = Reader {
        buf: payload,
        pos: 0,
        budget: payload
            .len()
            .saturating_mul(MAX_DECODED_BYTES_PER_PAYLOAD_BYTE)
            .saturating_add(DECODED_BYTES_FLOOR),
    };
    let rdb_type = r.byte()?;
    match rdb_type {
        RDB_TYPE_STREAM_LISTPACKS | RDB_TYPE_STREAM_LISTPACKS_2 | RDB_TYPE_STREAM_LISTPACKS_3 => {
            decode_stream(&mut r, rdb_type)
        }
        0..=7 | 9..=18 => Err(DumpError::NotAStream),
        _ => Err(DumpError::BadData),
    }
}

const BAD: DumpError = DumpError::BadData;

fn decode_stream(r: &mut Reader<'_>, rdb_type: u8) -> Result<DumpedStream, DumpError> {
    let mut s = DumpedStream::default();
    let nodes = r.length()?;
    let mut node_keys = HashSet::new();
    for _ in 0..nodes {
        let key = r.string()?;
        let key: [u8; 16] = key.as_ref().try_into().map_err(|_| BAD)?;
        if !node_keys.insert(key) {
            return Err(BAD); // "Listpack re-added with existing key"
        }
        let master = id_from_be(&key);
        let lp = r.string()?;
        decode_node(master, &lp, &mut s.entries, &mut r.budget)?;
    }
    let length = r.length()?;
    s.last_id = r.id()?;
    if rdb_type >= RDB_TYPE_STREAM_LISTPACKS_2 {
        s.first_id = r.id()?;
        s.max_deleted_id = r.id()?;
        s.entries_added = r.length()?;
    } else {
        s.entries_added = length;
        s.max_deleted_id = StreamId::ZERO;
        s.first_id = s.entries.first().map_or(StreamId::MAX, |e| e.0);
    }
    if length != s.entries.len() as u64 || s.entries.last().is_some_and(|e| e.0 > s.last_id) {
        return Err(BAD);
    }
    let counters = s.counters();

    let groups = r.length()?;
    let mut group_names = HashSet::new();
    for _ in 0..groups {
        let name = r.string()?.into_owned();
        r.charge(name.len())?;
        let last_id = r.id()?;
        let entries_read = if rdb_type >= RDB_TYPE_STREAM_LISTPACKS_2 {
            Some(r.length()?).filter(|&n| n != u64::MAX)
        } else {
            counters.estimate_read(last_id)
        };
        if !group_names.insert(name.clone()) {
            return Err(BAD); // "Duplicated consumer group name"
        }

        // The global PEL: ID → (delivery time, delivery count, owner's index).
        let mut pel: BTreeMap<StreamId, (u64, u64, Option<usize>)> = BTreeMap::new();
        let pel_size = r.length()?;
        for _ in 0..pel_size {
            let id = r.raw_id()?;
            let delivery_ms = r.millis()?;
            let delivery_count = r.length()?;
            r.charge(ITEM_OVERHEAD)?;
            if pel
                .insert(id, (delivery_ms, delivery_count, None))
                .is_some()
            {
                return Err(BAD); // "Duplicated global PEL entry"
            }
        }

        let mut consumers: Vec<DumpedConsumer> = Vec::new();
        let mut consumer_names = HashSet::new();
        let consumer_count = r.length()?;
        for _ in 0..consumer_count {
            let name = r.string()?.into_owned();
            r.charge(name.len().saturating_add(ITEM_OVERHEAD))?;
            if !consumer_names.insert(name.clone()) {
                return Err(BAD); // "Duplicate stream consumer detected."
            }
            let seen_ms = r.millis()?;
            let active_ms = if rdb_type >= RDB_TYPE_STREAM_LISTPACKS_3 {
                Some(r.millis()?)
            } else {
                None
            };
            let index = consumers.len();
            consumers.push(DumpedConsumer {
                name,
                seen_ms,
                active_ms,
            });
            let own = r.length()?;
            for _ in 0..own {
                let id = r.raw_id()?;
                match pel.get_mut(&id) {
                    // "Consumer entry not found in group global PEL"
                    None => return Err(BAD),
                    // Listed twice, by this consumer or another.
                    Some((_, _, Some(_))) => return Err(BAD),
                    Some((_, _, owner)) => *owner = Some(index),
                }
            }
        }

        let mut pending = Vec::new();
        for (id, (delivery_ms, delivery_count, owner)) in pel {
            // "Stream CG PEL entry without consumer"
            let owner = owner.and_then(|i| consumers.get(i)).ok_or(BAD)?;
            r.charge(owner.name.len())?;
            pending.push(DumpedPending {
                id,
                delivery_ms,
                delivery_count,
                consumer: owner.name.clone(),
            });
        }
        s.groups.push(DumpedGroup {
            name,
            last_id,
            entries_read,
            pending,
            consumers,
        });
    }
    Ok(s)
}

/// One stream node: appends its live entries to `out` (see the module docs).
fn decode_node(
    master: StreamId,
    lp: &[u8],
    out: &mut Vec<(StreamId, Fields)>,
    budget: &mut usize,
) -> Result<(), DumpError> {
    let mut lp = Listpack::open(lp)?;
    let count = lp.int()?; // "Empty listpack inside stream" when there is none
    let deleted = lp.int()?;
    let master_field_count = lp.int()?;
    if count < 0 || deleted < 0 || master_field_count < 0 {
        return Err(BAD);
    }
    let mut master_fields = Vec::new();
    for _ in 0..master_field_count {
        let field = lp.bytes()?;
        charge(budget, field.len())?;
        master_fields.push(field);
    }
    if lp.int()? != 0 {
        return Err(BAD);
    }
    let total = count.checked_add(deleted).ok_or(BAD)?;
    for _ in 0..total {
        let flags = lp.int()?;
        let ms_diff = lp.int()?;
        let seq_diff = lp.int()?;
        // The differences are stored as `id - master` in u64 arithmetic cast to i64, so the
        // ID is the sum modulo 2^64 (a sequence difference is negative when the entry's ms is
        // larger than the master's and its seq smaller).
        let id = StreamId::new(
            master.ms.wrapping_add(ms_diff as u64),
            master.seq.wrapping_add(seq_diff as u64),
        );
        let live = flags & STREAM_ITEM_FLAG_DELETED == 0;
        let mut pairs = Vec::new();
        let (field_count, extra) = if flags & STREAM_ITEM_FLAG_SAMEFIELDS != 0 {
            for field in &master_fields {
                let value = lp.element()?;
                if live {
                    let value = value_bytes(value);
                    charge(budget, pair_cost(field, &value))?;
                    pairs.push((field.clone(), value));
                }
            }
            (master_field_count, 3)
        } else {
            let field_count = lp.int()?;
            if field_count < 0 {
                return Err(BAD);
            }
            for _ in 0..field_count {
                let field = lp.element()?;
                let value = lp.element()?;
                if live {
                    let (field, value) = (value_bytes(field), value_bytes(value));
                    charge(budget, pair_cost(&field, &value))?;
                    pairs.push((field, value));
                }
            }
            (field_count, field_count.checked_add(4).ok_or(BAD)?)
        };
        if lp.int()? != field_count.checked_add(extra).ok_or(BAD)? {
            return Err(BAD);
        }
        if live {
            if out.last().is_some_and(|(last, _)| *last >= id) {
                return Err(BAD);
            }
            charge(budget, ITEM_OVERHEAD)?;
            out.push((id, pairs));
        }
    }
    lp.finish()
}

fn pair_cost(field: &[u8], value: &[u8]) -> usize {
    field
        .len()
        .saturating_add(value.len())
        .saturating_add(ITEM_OVERHEAD)
}

fn charge(budget: &mut usize, n: usize) -> Result<(), DumpError> {
    *budget = budget.checked_sub(n).ok_or(BAD)?;
    Ok(())
}

fn id_from_be(raw: &[u8; 16]) -> StreamId {
    let (ms, seq) = raw.split_at(8);
    StreamId::new(
        u64::from_be_bytes(ms.try_into().unwrap_or_default()),
        u64::from_be_bytes(seq.try_into().unwrap_or_default()),
    )
}

/// A field or value's bytes: a string's bytes, an integer's decimal text.
fn value_bytes(e: LpElement<'_>) -> Vec<u8> {
    match e {
        LpElement::Int(v) => v.to_string().into_bytes(),
        LpElement::Str(s) => s.to_vec(),
    }
}

/// The RDB reader over the payload, with what may still be allocated.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    budget: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: u64) -> Result<&'a [u8], DumpError> {
        let n = usize::try_from(n).map_err(|_| BAD)?;
        let end = self.pos.checked_add(n).ok_or(BAD)?;
        let bytes = self.buf.get(self.pos..end).ok_or(BAD)?;
        self.pos = end;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DumpError> {
        self.take(N as u64)?.try_into().map_err(|_| BAD)
    }

    fn byte(&mut self) -> Result<u8, DumpError> {
        Ok(self.array::<1>()?[0])
    }

    fn charge(&mut self, n: usize) -> Result<(), DumpError> {
        charge(&mut self.budget, n)
    }

    /// `rdbLoadLenByRef`: `Ok((value, encoded))`, where `encoded` means a `11xxxxxx` byte
    /// whose low six bits are a special string encoding.
    fn length_or_encoding(&mut self) -> Result<(u64, bool), DumpError> {
        let first = self.byte()?;
        match first >> 6 {
            0 => Ok((u64::from(first & 0x3f), false)),
            1 => Ok((
                u64::from(first & 0x3f) << 8 | u64::from(self.byte()?),
                false,
            )),
            3 => Ok((u64::from(first & 0x3f), true)),
            _ => match first {
                0x80 => Ok((u64::from(u32::from_be_bytes(self.array()?)), false)),
                0x81 => Ok((u64::from_be_bytes(self.array()?), false)),
                _ => Err(BAD),
            },
        }
    }

    /// `rdbLoadLen(rdb, NULL)`.
    fn length(&mut self) -> Result<u64, DumpError> {
        Ok(self.length_or_encoding()?.0)
    }

    /// Two lengths: `ms` then `seq`.
    fn id(&mut self) -> Result<StreamId, DumpError> {
        let ms = self.length()?;
        Ok(StreamId::new(ms, self.length()?))
    }

    /// A raw 16-byte big-endian ID.
    fn raw_id(&mut self) -> Result<StreamId, DumpError> {
        Ok(id_from_be(&self.array()?))
    }

    /// `rdbLoadMillisecondTime`: 8 bytes, little-endian.
    fn millis(&mut self) -> Result<u64, DumpError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// `rdbGenericLoadStringObject`.
    fn string(&mut self) -> Result<Cow<'a, [u8]>, DumpError> {
        let (len, encoded) = self.length_or_encoding()?;
        if !encoded {
            return Ok(Cow::Borrowed(self.take(len)?));
        }
        let int = match len {
            0 => i64::from(i8::from_le_bytes(self.array()?)),
            1 => i64::from(i16::from_le_bytes(self.array()?)),
            2 => i64::from(i32::from_le_bytes(self.array()?)),
            3 => {
                let compressed_len = self.length()?;
                let len = self.length()?;
                let compressed = self.take(compressed_len)?;
                let len = usize::try_from(len).map_err(|_| BAD)?;
                if len > compressed.len().saturating_mul(LZF_MAX_EXPANSION) {
                    return Err(BAD);
                }
                self.charge(len)?;
                return lzf_decompress(compressed, len).map(Cow::Owned).ok_or(BAD);
            }
            _ => return Err(BAD), // "Unknown RDB string encoding type"
        };
        Ok(Cow::Owned(int.to_string().into_bytes()))
    }
}

/// LZF decompression (`src/lzf_d.c`) of `input` into exactly `out_len` bytes, as Redis's
/// `rdbLoadLzfStringObject` requires; `None` if the input is malformed, would write more than
/// `out_len` bytes, refers before the output's start, or yields fewer bytes. An `out_len` of 0
/// is the empty string whatever the input, as in Redis (`lzf_decompress` then fails with 0,
/// which equals the expected length).
///
/// Each control byte `c` is a literal run of `c + 1` bytes when `c < 32`, else a back
/// reference: length `(c >> 5) + 2` (when `c >> 5` is 7, plus the next byte), distance
/// `((c & 31) << 8) + next byte + 1`; the copy may overlap its own output.
pub fn lzf_decompress(input: &[u8], out_len: usize) -> Option<Vec<u8>> {
    if out_len == 0 {
        return Some(Vec::new());
    }
    let mut out = Vec::with_capacity(out_len);
    let mut i = 0;
    while let Some(&ctrl) = input.get(i) {
        i += 1;
        let ctrl = usize::from(ctrl);
        if ctrl < 32 {
            let run = ctrl + 1;
            if out.len() + run > out_len {
                return None;
            }
            out.extend_from_slice(input.get(i..i + run)?);
            i += run;
        } else {
            let mut len = ctrl >> 5;
            if len == 7 {
                len += usize::from(*input.get(i)?);
                i += 1;
            }
            let distance = ((ctrl & 0x1f) << 8) + usize::from(*input.get(i)?) + 1;
            i += 1;
            let len = len + 2;
            if out.len() + len > out_len {
                return None;
            }
            let start = out.len().checked_sub(distance)?;
            for k in start..start + len {
                let b = *out.get(k)?;
                out.push(b);
            }
        }
    }
    (out.len() == out_len).then_some(out)
}

/// A listpack element.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LpElement<'a> {
    Int(i64),
    Str(&'a [u8]),
}

/// A listpack read element by element, each validated as `lpValidateNext` validates it.
struct Listpack<'a> {
    /// The listpack without its final `0xFF`.
    body: &'a [u8],
    pos: usize,
    read: u32,
    count: u16,
}

const LP_HEADER: usize = 6;
const LP_COUNT_UNKNOWN: u16 = u16::MAX;

impl<'a> Listpack<'a> {
    /// `lpValidateIntegrity`'s header checks.
    fn open(lp: &'a [u8]) -> Result<Self, DumpError> {
        if lp.len() < LP_HEADER + 1 {
            return Err(BAD);
        }
        let total = u32::from_le_bytes([lp[0], lp[1], lp[2], lp[3]]);
        let (body, last) = lp.split_at(lp.len() - 1);
        if usize::try_from(total).ok() != Some(lp.len()) || last != [0xff] {
            return Err(BAD);
        }
        Ok(Listpack {
            body,
            pos: LP_HEADER,
            read: 0,
            count: u16::from_le_bytes([lp[4], lp[5]]),
        })
    }

    /// The next element, or `None` at the end.
    fn next(&mut self) -> Result<Option<LpElement<'a>>, DumpError> {
        let p = self.pos;
        let Some(&enc) = self.body.get(p) else {
            return Ok(None); // at the final 0xFF
        };
        let byte = |k: usize| self.body.get(p + k).copied().map(u64::from).ok_or(BAD);
        let string = |header: usize, len: usize| {
            let start = p + header;
            let s = self.body.get(start..start.checked_add(len).ok_or(BAD)?);
            s.map(|s| (LpElement::Str(s), header + len)).ok_or(BAD)
        };
        let int = |bytes: usize| -> Result<(LpElement<'a>, usize), DumpError> {
            let mut v = 0u64;
            for k in 0..bytes {
                v |= byte(1 + k)? << (8 * k);
            }
            let unused = 64 - 8 * bytes as u32;
            Ok((LpElement::Int(((v << unused) as i64) >> unused), 1 + bytes))
        };
        let (element, size) = match enc {
            0x00..=0x7f => (LpElement::Int(i64::from(enc)), 1),
            0x80..=0xbf => string(1, usize::from(enc & 0x3f))?,
            0xc0..=0xdf => {
                let v = (u64::from(enc & 0x1f) << 8 | byte(1)?) << 51;
                (LpElement::Int((v as i64) >> 51), 2)
            }
            0xe0..=0xef => string(2, (usize::from(enc & 0x0f) << 8) | byte(1)? as usize)?,
            0xf0 => {
                let len = byte(1)? | byte(2)? << 8 | byte(3)? << 16 | byte(4)? << 24;
                string(5, usize::try_from(len).map_err(|_| BAD)?)?
            }
            0xf1 => int(2)?,
            0xf2 => int(3)?,
            0xf3 => int(4)?,
            0xf4 => int(8)?,
            _ => return Err(BAD), // 0xf5..=0xfe: no such encoding; 0xff: an early end
        };
        let backlen = backlen_size(size);
        let next = p.checked_add(size + backlen).ok_or(BAD)?;
        if next > self.body.len() || decode_backlen(self.body, next - 1) != Some(size as u64) {
            return Err(BAD);
        }
        self.pos = next;
        self.read = self.read.checked_add(1).ok_or(BAD)?;
        Ok(Some(element))
    }

    fn element(&mut self) -> Result<LpElement<'a>, DumpError> {
        self.next()?.ok_or(BAD)
    }

    /// `lpGetIntegerIfValid`: an integer element, or a string that is a Redis integer.
    fn int(&mut self) -> Result<i64, DumpError> {
        match self.element()? {
            LpElement::Int(v) => Ok(v),
            LpElement::Str(s) => string2ll(s).ok_or(BAD),
        }
    }

    fn bytes(&mut self) -> Result<Vec<u8>, DumpError> {
        Ok(value_bytes(self.element()?))
    }

    /// Nothing after the last element, and the header's count right when known.
    fn finish(mut self) -> Result<(), DumpError> {
        if self.next()?.is_some()
            || (self.count != LP_COUNT_UNKNOWN && u32::from(self.count) != self.read)
        {
            return Err(BAD);
        }
        Ok(())
    }
}

/// `lpEncodeBacklen(NULL, l)`: how many bytes the backlen of an `l`-byte element takes
/// (Redis's bounds, off by one at the top of each band, kept as they are).
fn backlen_size(l: usize) -> usize {
    match l {
        0..=127 => 1,
        128..=16382 => 2,
        16383..=2097150 => 3,
        2097151..=268435454 => 4,
        _ => 5,
    }
}

/// `lpDecodeBacklen`: the backlen ending at `body[last]`, read backwards, 7 bits a byte, a set
/// high bit meaning another byte before; `None` past 5 bytes.
fn decode_backlen(body: &[u8], mut last: usize) -> Option<u64> {
    let mut value = 0u64;
    let mut shift = 0;
    loop {
        let b = *body.get(last)?;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(value);
        }
        shift += 7;
        if shift > 28 {
            return None;
        }
        last = last.checked_sub(1)?;
    }
}
