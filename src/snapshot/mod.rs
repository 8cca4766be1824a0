//! Snapshot files: a partition's in-memory state at an LSN, so a restart loads it and replays
//! only the journal after it.
//!
//! ## File
//!
//! `DATA_DIR/p<N>/snapshot-<lsn as 16 hex digits>.snap`: a 64-byte header (zerocopy struct,
//! little-endian) and a body.
//!
//! | bytes | field |
//! |---|---|
//! | 0..8 | magic `EVRSNAP1` |
//! | 8..10 | format version (1) |
//! | 10 | kind (1 = partition: streams, ring, idempotency window; 2 = an engine's model) |
//! | 11 | codec of the body (0 = binary (postcard), 1 = JSON) |
//! | 12..16 | partition |
//! | 16..32 | store id |
//! | 32..40 | LSN: the snapshot holds every record below it and nothing from it on |
//! | 40..48 | body length |
//! | 48..52 | CRC-32 (crc32fast) of the body |
//! | 52..56 | CRC-32 of header bytes 0..52 and 56..64 |
//! | 56..64 | resume segment: the first journal segment a recovery from this snapshot reads (segments below it may be deleted by retention while the snapshot is kept) |
//!
//! ## Invariants
//!
//! - A snapshot file is complete or absent: it is written to `*.tmp`, fsynced, renamed, and
//!   the directory fsynced; a leftover `*.tmp` is ignored and removed.
//! - A snapshot is used only if both checksums, the magic and version match, its kind, codec,
//!   store id and partition are its owner's, its header's LSN is its file name's, and the
//!   owner's own checks of the body pass; otherwise the next older one is tried (the caller
//!   logs why), then none (full replay). Partitions and engines load through the same
//!   [`load_newest_usable`]. A snapshot never replaces the journal: the journal still holds everything from
//!   the oldest kept snapshot on.
//! - Snapshots never block appends: the state is copied on the shard, encoded and written on
//!   glommio's blocking pool.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::journal::StoreId;

pub const SNAPSHOT_MAGIC: [u8; 8] = *b"EVRSNAP1";
pub const SNAPSHOT_VERSION: u16 = 1;
pub const SNAPSHOT_HEADER_BYTES: usize = 64;
pub const KIND_PARTITION: u8 = 1;
pub const KIND_MODEL: u8 = 2;
pub const CODEC_BINARY: u8 = 0;
pub const CODEC_JSON: u8 = 1;

#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct SnapshotHeader {
    magic: [u8; 8],
    version: U16,
    kind: u8,
    codec: u8,
    partition: U32,
    store_id: [u8; 16],
    lsn: U64,
    body_len: U64,
    body_crc: U32,
    header_crc: U32,
    resume_segment: U64,
}
const _: () = assert!(std::mem::size_of::<SnapshotHeader>() == SNAPSHOT_HEADER_BYTES);

/// What a snapshot's header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotMeta {
    pub kind: u8,
    pub codec: u8,
    pub partition: u32,
    pub store_id: StoreId,
    pub lsn: u64,
    /// The first journal segment a recovery from this snapshot reads.
    pub resume_segment: u64,
}

/// Why a snapshot file is not usable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SnapshotError {
    #[error("shorter than its 64-byte header")]
    Short,
    #[error("bad magic (not a snapshot file)")]
    Magic,
    #[error("header checksum mismatch")]
    HeaderChecksum,
    #[error("unsupported snapshot format version {0}")]
    Version(u16),
    #[error("body is {have} bytes but the header says {want}")]
    Length { have: u64, want: u64 },
    #[error("body checksum mismatch")]
    BodyChecksum,
}

/// CRC-32 of the header without its own checksum field (bytes 0..52 and 56..64).
fn header_crc(h: &SnapshotHeader) -> u32 {
    let b = h.as_bytes();
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&b[..52]);
    hasher.update(&b[56..]);
    hasher.finalize()
}

/// The header fields of a snapshot file, read and checked without its body (retention).
pub fn read_meta(path: &Path) -> io::Result<SnapshotMeta> {
    use std::io::Read;
    let mut head = [0u8; SNAPSHOT_HEADER_BYTES];
    File::open(path)?.read_exact(&mut head)?;
    let Ok((h, _)) = SnapshotHeader::read_from_prefix(&head[..]) else {
        return Err(io::Error::other("short snapshot header"));
    };
    checked_header(&h).map_err(io::Error::other)
}

/// Checks a header's magic, checksum and version; returns its fields.
fn checked_header(h: &SnapshotHeader) -> Result<SnapshotMeta, SnapshotError> {
    if h.magic != SNAPSHOT_MAGIC {
        return Err(SnapshotError::Magic);
    }
    if header_crc(h) != h.header_crc.get() {
        return Err(SnapshotError::HeaderChecksum);
    }
    if h.version.get() != SNAPSHOT_VERSION {
        return Err(SnapshotError::Version(h.version.get()));
    }
    Ok(SnapshotMeta {
        kind: h.kind,
        codec: h.codec,
        partition: h.partition.get(),
        store_id: h.store_id,
        lsn: h.lsn.get(),
        resume_segment: h.resume_segment.get(),
    })
}

/// Header followed by `body`.
pub fn encode(meta: &SnapshotMeta, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(SNAPSHOT_HEADER_BYTES + body.len());
    out.extend_from_slice(&header(meta, body));
    out.extend_from_slice(body);
    out
}

/// The header of a snapshot of `body`.
fn header(meta: &SnapshotMeta, body: &[u8]) -> [u8; SNAPSHOT_HEADER_BYTES] {
    let mut h = SnapshotHeader {
        magic: SNAPSHOT_MAGIC,
        version: SNAPSHOT_VERSION.into(),
        kind: meta.kind,
        codec: meta.codec,
        partition: meta.partition.into(),
        store_id: meta.store_id,
        lsn: meta.lsn.into(),
        body_len: (body.len() as u64).into(),
        body_crc: crc32fast::hash(body).into(),
        header_crc: 0.into(),
        resume_segment: meta.resume_segment.into(),
    };
    h.header_crc = header_crc(&h).into();
    let mut out = [0; SNAPSHOT_HEADER_BYTES];
    out.copy_from_slice(h.as_bytes());
    out
}

/// Checks a whole snapshot file's bytes; returns its header fields and body.
pub fn decode(bytes: &[u8]) -> Result<(SnapshotMeta, &[u8]), SnapshotError> {
    let Ok((h, body)) = SnapshotHeader::read_from_prefix(bytes) else {
        return Err(SnapshotError::Short);
    };
    let meta = checked_header(&h)?;
    if body.len() as u64 != h.body_len.get() {
        return Err(SnapshotError::Length {
            have: body.len() as u64,
            want: h.body_len.get(),
        });
    }
    if crc32fast::hash(body) != h.body_crc.get() {
        return Err(SnapshotError::BodyChecksum);
    }
    Ok((meta, body))
}

pub fn file_name(lsn: u64) -> String {
    format!("snapshot-{lsn:016x}.snap")
}

fn parse_file_name(name: &str) -> Option<u64> {
    let hex = name.strip_prefix("snapshot-")?.strip_suffix(".snap")?;
    (hex.len() == 16)
        .then(|| u64::from_str_radix(hex, 16).ok())
        .flatten()
}

/// Snapshot files in `dir`, newest (highest LSN) first.
pub fn list(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for e in entries {
        let e = e?;
        if let Some(lsn) = e.file_name().to_str().and_then(parse_file_name) {
            out.push((lsn, e.path()));
        }
    }
    out.sort_by_key(|x| std::cmp::Reverse(x.0));
    Ok(out)
}

/// Writes a snapshot durably: temporary file, fsync, rename, directory fsync
/// ([`crate::durable::replace_parts`]); the header and the body go to the file one after
/// the other, with no copy of the body made to join them ([`encode`]'s bytes).
pub fn write(dir: &Path, meta: &SnapshotMeta, body: &[u8]) -> io::Result<PathBuf> {
    let path = dir.join(file_name(meta.lsn));
    crate::durable::replace_parts(&path, &[&header(meta, body), body])?;
    Ok(path)
}

/// A snapshot whose file passed [`read_checked`]: its header fields, its body, and where it
/// came from.
pub struct Loaded {
    pub meta: SnapshotMeta,
    pub body: Vec<u8>,
    pub path: PathBuf,
}

/// Whose snapshots a loader accepts: the kind and codec of the body, the store and the
/// partition. A partition's are `KIND_PARTITION`/`CODEC_BINARY` with its number; an engine's
/// are `KIND_MODEL` with its store's codec and its journal's partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    pub kind: u8,
    pub codec: u8,
    pub store_id: StoreId,
    pub partition: u32,
}

/// Why a snapshot file is passed over before its body is looked at.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Unusable {
    #[error("cannot read it: {0}")]
    Read(#[source] io::Error),
    #[error(transparent)]
    Damaged(#[from] SnapshotError),
    #[error("it belongs to another store or partition")]
    Foreign,
    #[error("unknown kind {kind} or codec {codec}")]
    Kind { kind: u8, codec: u8 },
    #[error("its header names another LSN than its file name")]
    Lsn,
    #[error("its LSN {lsn} is beyond {max_lsn}, the newest this load may use")]
    Beyond { lsn: u64, max_lsn: u64 },
}

/// Reads snapshot file `path` (named for `lsn`) and checks what every owner relies on: the
/// header and both checksums ([`decode`]), the kind and codec, the store id and partition, and
/// that the header's LSN is the file name's.
pub fn read_checked(path: &Path, lsn: u64, owner: &Owner) -> Result<Loaded, Unusable> {
    let bytes = fs::read(path).map_err(Unusable::Read)?;
    let (meta, body) = decode(&bytes)?;
    if meta.store_id != owner.store_id || meta.partition != owner.partition {
        return Err(Unusable::Foreign);
    }
    if meta.kind != owner.kind || meta.codec != owner.codec {
        return Err(Unusable::Kind {
            kind: meta.kind,
            codec: meta.codec,
        });
    }
    if meta.lsn != lsn {
        return Err(Unusable::Lsn);
    }
    let body = body.to_vec();
    Ok(Loaded {
        meta,
        body,
        path: path.to_path_buf(),
    })
}

/// The newest usable snapshot of `owner` in `dir` with an LSN no higher than `max_lsn`, else
/// the next older one, and so on: each file must pass [`read_checked`], then `usable`, the
/// owner's own checks of the body, which turns it into what the owner starts from. Each file
/// passed over is reported to `skipped` with the reason; `Ok(None)` when none is usable (the
/// owner replays its whole journal). Partitions and engines both load through here.
pub fn load_newest_usable<T, E: std::error::Error>(
    dir: &Path,
    owner: &Owner,
    max_lsn: u64,
    mut usable: impl FnMut(Loaded) -> Result<T, E>,
    mut skipped: impl FnMut(&Path, &dyn std::error::Error),
) -> io::Result<Option<(T, u64, PathBuf)>> {
    for (lsn, path) in list(dir)? {
        if lsn > max_lsn {
            skipped(&path, &Unusable::Beyond { lsn, max_lsn });
            continue;
        }
        match read_checked(&path, lsn, owner) {
            Ok(loaded) => match usable(loaded) {
                Ok(t) => return Ok(Some((t, lsn, path))),
                Err(e) => skipped(&path, &e),
            },
            Err(e) => skipped(&path, &e),
        }
    }
    Ok(None)
}

/// Removes all but the `keep` newest snapshots and any leftover temporary file; returns what
/// it removed.
pub fn prune(dir: &Path, keep: usize) -> io::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    for (_, path) in list(dir)?.into_iter().skip(keep.max(1)) {
        fs::remove_file(&path)?;
        removed.push(path);
    }
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("snapshot-") && name.ends_with(".snap.tmp") {
                let _ = fs::remove_file(e.path());
                removed.push(e.path());
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(lsn: u64) -> SnapshotMeta {
        SnapshotMeta {
            kind: KIND_PARTITION,
            codec: CODEC_BINARY,
            partition: 3,
            store_id: [7; 16],
            lsn,
            resume_segment: lsn / 2,
        }
    }

    #[test]
    fn round_trip_and_every_damage_is_named() {
        let bytes = encode(&meta(42), b"state");
        let (m, body) = decode(&bytes).unwrap();
        assert_eq!(m, meta(42));
        assert_eq!(body, b"state");
        assert_eq!(decode(&bytes[..10]).unwrap_err(), SnapshotError::Short);
        let mut b = bytes.clone();
        b[0] ^= 1;
        assert_eq!(decode(&b).unwrap_err(), SnapshotError::Magic);
        let mut b = bytes.clone();
        b[33] ^= 1;
        assert_eq!(decode(&b).unwrap_err(), SnapshotError::HeaderChecksum);
        let mut b = bytes.clone();
        *b.last_mut().unwrap() ^= 1;
        assert_eq!(decode(&b).unwrap_err(), SnapshotError::BodyChecksum);
        assert!(matches!(
            decode(&bytes[..bytes.len() - 1]).unwrap_err(),
            SnapshotError::Length { .. }
        ));
    }

    #[test]
    fn newest_usable_wins_and_damaged_ones_are_passed_over_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &meta(10), b"ten").unwrap();
        write(dir.path(), &meta(20), b"twenty").unwrap();
        let newest = dir.path().join(file_name(20));
        let mut bytes = fs::read(&newest).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(&newest, bytes).unwrap();
        let owner = Owner {
            kind: KIND_PARTITION,
            codec: CODEC_BINARY,
            store_id: [7; 16],
            partition: 3,
        };
        let body = |l: Loaded| Ok::<_, Unusable>(l.body);
        let mut reasons = Vec::new();
        let (got, lsn, _) = load_newest_usable(dir.path(), &owner, u64::MAX, body, |p, r| {
            reasons.push((p.to_path_buf(), r.to_string()))
        })
        .unwrap()
        .unwrap();
        assert_eq!(lsn, 10);
        assert_eq!(got, b"ten");
        assert_eq!(reasons.len(), 1);
        assert!(reasons[0].1.contains("body checksum"), "{reasons:?}");
        // Another partition's or store's snapshot is never used, nor another kind's.
        for other in [
            Owner {
                store_id: [8; 16],
                ..owner
            },
            Owner {
                partition: 4,
                ..owner
            },
            Owner {
                kind: KIND_MODEL,
                ..owner
            },
        ] {
            assert!(
                load_newest_usable(dir.path(), &other, u64::MAX, body, |_, _| {})
                    .unwrap()
                    .is_none()
            );
        }
        // Beyond the given LSN: not used.
        assert!(load_newest_usable(dir.path(), &owner, 5, body, |_, _| {})
            .unwrap()
            .is_none());
        // A header whose LSN is not its file name's: passed over for the older one.
        fs::copy(
            dir.path().join(file_name(10)),
            dir.path().join(file_name(30)),
        )
        .unwrap();
        let mut reasons = Vec::new();
        let (_, lsn, _) = load_newest_usable(dir.path(), &owner, u64::MAX, body, |_, r| {
            reasons.push(r.to_string())
        })
        .unwrap()
        .unwrap();
        assert_eq!(lsn, 10);
        assert!(reasons[0].contains("another LSN"), "{reasons:?}");
        // The owner's own check of the body refusing: the next older one.
        write(dir.path(), &meta(40), b"forty").unwrap();
        let picky = |l: Loaded| {
            if l.meta.lsn == 10 {
                Ok(l.body)
            } else {
                Err(Unusable::Lsn)
            }
        };
        let (got, _, _) = load_newest_usable(dir.path(), &owner, u64::MAX, picky, |_, _| {})
            .unwrap()
            .unwrap();
        assert_eq!(got, b"ten");
    }

    #[test]
    fn prune_keeps_the_newest_and_clears_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        for lsn in [1, 2, 3, 4] {
            write(dir.path(), &meta(lsn), b"x").unwrap();
        }
        fs::write(
            dir.path().join("snapshot-0000000000000009.snap.tmp"),
            b"half",
        )
        .unwrap();
        let removed = prune(dir.path(), 2).unwrap();
        assert_eq!(removed.len(), 3);
        let left: Vec<u64> = list(dir.path()).unwrap().iter().map(|x| x.0).collect();
        assert_eq!(left, vec![4, 3]);
    }

    #[test]
    fn a_written_snapshot_file_holds_the_encoded_header_and_body() {
        let dir = tempfile::tempdir().unwrap();
        let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
        let path = write(dir.path(), &meta(7), &body).unwrap();
        assert_eq!(fs::read(path).unwrap(), encode(&meta(7), &body));
    }
}
