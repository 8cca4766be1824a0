//! Changes to a stream that are not events — entries deleted, a trim, the stream deleted —
//! journaled as records of kind 4 (docs/FORMAT.md) in LSN order with the events, applied to
//! the stream index when placed (as an append's versions are), and replayed by recovery in
//! the same order, so deleted entries never come back.
//!
//! Data of a change record: `u8 op`, then for op 1 (entries deleted) `u32 n` and `n × u64
//! version`; op 2 (trimmed) `u64 version`: every version below it is deleted; op 3 (stream
//! deleted) nothing; op 4 (a database's streams deleted) nothing — the record's stream field
//! names the database: "" for database 0 (every stream whose name does not start with a NUL
//! byte), `"\0N\0"` for database N (the streams whose names start with it). All integers
//! little-endian.

use std::collections::BTreeSet;

use super::partition::StreamEntry;

/// A change to a stream (or, for [`StreamChange::DeleteDatabase`], to every stream of the
/// database the record's stream field names, see [`in_database`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamChange {
    /// These versions are deleted (those that exist and are not deleted already).
    DeleteVersions(Vec<u64>),
    /// Every version below this one is deleted.
    TrimBefore(u64),
    /// The stream is deleted: its name can be used again, from version 0 and ID 0-0.
    DeleteStream,
    /// Every stream of a database is deleted.
    DeleteDatabase,
}

impl StreamChange {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            StreamChange::DeleteVersions(v) => {
                out.push(1);
                out.extend_from_slice(&(v.len() as u32).to_le_bytes());
                for x in v {
                    out.extend_from_slice(&x.to_le_bytes());
                }
            }
            StreamChange::TrimBefore(v) => {
                out.push(2);
                out.extend_from_slice(&v.to_le_bytes());
            }
            StreamChange::DeleteStream => out.push(3),
            StreamChange::DeleteDatabase => out.push(4),
        }
        out
    }

    /// The change in a record's data; `None` for bytes that are not one.
    pub fn decode(data: &[u8]) -> Option<StreamChange> {
        let u64_at = |at: usize| -> Option<u64> {
            Some(u64::from_le_bytes(data.get(at..at + 8)?.try_into().ok()?))
        };
        match *data.first()? {
            1 => {
                let n = u32::from_le_bytes(data.get(1..5)?.try_into().ok()?) as usize;
                if data.len() != 5 + n.checked_mul(8)? {
                    return None;
                }
                (0..n)
                    .map(|i| u64_at(5 + 8 * i))
                    .collect::<Option<Vec<u64>>>()
                    .map(StreamChange::DeleteVersions)
            }
            2 if data.len() == 9 => u64_at(1).map(StreamChange::TrimBefore),
            3 if data.len() == 1 => Some(StreamChange::DeleteStream),
            4 if data.len() == 1 => Some(StreamChange::DeleteDatabase),
            _ => None,
        }
    }
}

/// A change as a client asks for it, resolved against the stream index in the change's turn
/// (so it sees every append placed before it) into the [`StreamChange`] that is journaled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChangeRequest {
    /// Delete the entries with these IDs (XDEL).
    Ids(Vec<crate::protocol::StreamId>),
    /// Delete the oldest entries (XTRIM): see [`Trim`].
    Trim(Trim),
    /// Delete every version below this one (the native TRIM's `before_version`); a version
    /// beyond the stream's last deletes every entry it has.
    BeforeVersion(u64),
    DeleteStream,
    DeleteDatabase,
}

/// Which oldest entries a trim deletes: those beyond the newest `keep_last`, or those with IDs
/// below `min_id`; in whole multiples of `unit` entries (1: exact; Redis's `~` trims whole
/// nodes), at most `max_remove` of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trim {
    pub keep_last: Option<u64>,
    pub min_id: Option<crate::protocol::StreamId>,
    pub unit: u64,
    pub max_remove: Option<u64>,
}

impl StreamEntry {
    /// The journaled form of `request` for this stream.
    pub(super) fn resolve(&self, request: &ChangeRequest) -> StreamChange {
        match request {
            ChangeRequest::Ids(ids) => StreamChange::DeleteVersions(
                ids.iter()
                    .filter_map(|id| self.ids.binary_search(id).ok())
                    .map(|v| v as u64)
                    .collect(),
            ),
            ChangeRequest::Trim(t) => StreamChange::TrimBefore(self.trim_point(t)),
            ChangeRequest::BeforeVersion(v) => {
                StreamChange::TrimBefore((*v).min(self.lsns.len() as u64))
            }
            ChangeRequest::DeleteStream => StreamChange::DeleteStream,
            ChangeRequest::DeleteDatabase => StreamChange::DeleteDatabase,
        }
    }

    /// The version a trim deletes every version below.
    fn trim_point(&self, t: &Trim) -> u64 {
        let live_versions =
            (self.deleted.trimmed..self.lsns.len() as u64).filter(|&v| !self.deleted.contains(v));
        let live = self.live();
        let mut remove = match (t.keep_last, t.min_id) {
            (Some(n), _) => live.saturating_sub(n),
            (None, Some(min)) => live_versions
                .clone()
                .take_while(|&v| self.ids[v as usize] < min)
                .count() as u64,
            (None, None) => 0,
        };
        remove -= remove % t.unit.max(1);
        if let Some(max) = t.max_remove {
            remove = remove.min(max);
        }
        match live_versions.take(remove as usize).last() {
            Some(v) => v + 1,
            None => self.deleted.trimmed,
        }
    }
}

/// What is deleted of a stream: every version below `trimmed`, and the versions in `deleted`
/// (all at or above `trimmed`).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Deleted {
    pub trimmed: u64,
    pub deleted: BTreeSet<u64>,
    /// The largest version an entry deletion (not a trim) deleted.
    pub max_deleted: Option<u64>,
}

impl Deleted {
    pub fn contains(&self, version: u64) -> bool {
        version < self.trimmed || self.deleted.contains(&version)
    }

    /// Versions deleted of the first `versions`.
    pub fn count(&self, versions: u64) -> u64 {
        self.trimmed.min(versions) + self.deleted.range(..versions).count() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.trimmed == 0 && self.deleted.is_empty()
    }
}

/// Whether stream `name` belongs to the database `prefix` names: "" for database 0 (a name
/// that does not start with a NUL byte), else the names that start with `prefix`.
pub fn in_database(name: &str, prefix: &str) -> bool {
    if prefix.is_empty() {
        !name.starts_with('\0')
    } else {
        name.starts_with(prefix)
    }
}

/// Applies `change` of the stream (or database) `stream` to the index `streams`.
pub(super) fn apply_change(
    streams: &mut std::collections::HashMap<String, StreamEntry>,
    stream: &str,
    change: &StreamChange,
) {
    match change {
        StreamChange::DeleteStream => {
            streams.remove(stream);
        }
        StreamChange::DeleteDatabase => streams.retain(|name, _| !in_database(name, stream)),
        other => {
            if let Some(e) = streams.get_mut(stream) {
                e.apply(other);
            }
        }
    }
}

impl StreamEntry {
    /// Applies `change` (not a stream deletion, which removes the entry); returns how many
    /// live versions it deleted.
    pub(super) fn apply(&mut self, change: &StreamChange) -> u64 {
        let versions = self.lsns.len() as u64;
        match change {
            StreamChange::DeleteVersions(list) => {
                let mut n = 0;
                for &v in list {
                    if v < versions && !self.deleted.contains(v) {
                        self.deleted.deleted.insert(v);
                        self.deleted.max_deleted = self.deleted.max_deleted.max(Some(v));
                        n += 1;
                    }
                }
                n
            }
            StreamChange::TrimBefore(v) => {
                let v = (*v).min(versions);
                if v <= self.deleted.trimmed {
                    return 0;
                }
                let before = self.live();
                self.deleted.trimmed = v;
                self.deleted.deleted = self.deleted.deleted.split_off(&v);
                before - self.live()
            }
            StreamChange::DeleteStream | StreamChange::DeleteDatabase => {
                unreachable!("a stream deletion removes the entry")
            }
        }
    }

    /// Versions not deleted.
    pub(super) fn live(&self) -> u64 {
        let versions = self.lsns.len() as u64;
        versions - self.deleted.count(versions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::StreamId;

    #[test]
    fn changes_round_trip_and_anything_else_is_refused() {
        for c in [
            StreamChange::DeleteVersions(vec![3, 1, 9]),
            StreamChange::DeleteVersions(Vec::new()),
            StreamChange::TrimBefore(7),
            StreamChange::DeleteStream,
            StreamChange::DeleteDatabase,
        ] {
            assert_eq!(StreamChange::decode(&c.encode()), Some(c));
        }
        for bad in [&[][..], &[0], &[1, 1, 0, 0, 0], &[2, 1], &[3, 0], &[9]] {
            assert_eq!(StreamChange::decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn deletions_and_trims_count_live_versions() {
        let mut e = StreamEntry::default();
        for v in 0..10u64 {
            e.push(100 + v, StreamId::new(1, v + 1));
        }
        assert_eq!(e.apply(&StreamChange::DeleteVersions(vec![2, 5, 5, 42])), 2);
        assert_eq!(e.live(), 8);
        assert_eq!(e.apply(&StreamChange::TrimBefore(4)), 3, "0, 1 and 3");
        assert_eq!(e.live(), 5);
        assert!(e.deleted.contains(0) && e.deleted.contains(5) && !e.deleted.contains(4));
        assert_eq!(e.deleted.deleted.len(), 1, "2 went into the trim");
        assert_eq!(e.apply(&StreamChange::TrimBefore(2)), 0);
        assert_eq!(e.apply(&StreamChange::TrimBefore(99)), 5);
        assert_eq!(e.live(), 0);
    }

    #[test]
    fn a_trim_before_a_version_is_journaled_within_the_stream() {
        let mut e = StreamEntry::default();
        for v in 0..5u64 {
            e.push(100 + v, StreamId::new(1, v + 1));
        }
        let at = |v| e.resolve(&ChangeRequest::BeforeVersion(v));
        assert_eq!(at(3), StreamChange::TrimBefore(3));
        assert_eq!(at(0), StreamChange::TrimBefore(0));
        assert_eq!(
            at(u64::MAX),
            StreamChange::TrimBefore(5),
            "every version it has"
        );
    }
}
