//! Reading a Redis set whole: a set is a stream of `$sadd` events
//! ([`super::SADD_TYPE`]), its members the distinct data of its live events, first seen
//! first. SADD appends only members not present (`TxWrite::AddMembers`), so a set written
//! by the RESP port holds each member once; a native APPEND of `$sadd` events may repeat
//! one, which still counts once.
//!
//! A set is read whole — by SADD, to learn which of its members are new, and by SMEMBERS,
//! SCARD and SISMEMBER — so its size is bounded: at most [`MAX_SET_MEMBERS`] live events and
//! [`SET_READ_READS`] × `max_read_bytes` bytes of them, or the command is refused
//! (`StreamError::SetTooLarge`) and the set is left as it was.

use std::collections::HashSet;

use super::{Partition, StreamError};
use crate::journal::Storage;
use crate::protocol::StreamId;

/// The most live events a set read whole may have.
pub const MAX_SET_MEMBERS: u64 = 1_000_000;

/// The most bytes of events a set read whole may have, as multiples of the partition's
/// `max_read_bytes` (as the RESP port bounds a range reply).
pub const SET_READ_READS: usize = 8;

/// A set's members, first seen first, and the same as a hash set.
#[derive(Debug, Default)]
pub struct SetMembers {
    pub ordered: Vec<Vec<u8>>,
    pub index: HashSet<Vec<u8>>,
}

impl SetMembers {
    /// Adds `m` if it is not a member: whether it was added.
    pub fn insert(&mut self, m: &[u8]) -> bool {
        if self.index.contains(m) {
            return false;
        }
        self.index.insert(m.to_vec());
        self.ordered.push(m.to_vec());
        true
    }
}

impl<S: Storage + 'static> Partition<S> {
    /// The visible members of `stream`, read whole (module docs); none for a stream that
    /// does not exist. The caller checks that the stream is a set.
    pub async fn set_members(&self, stream: &str) -> Result<SetMembers, StreamError> {
        let max_bytes = SET_READ_READS.saturating_mul(self.max_read_bytes());
        let too_large = StreamError::SetTooLarge {
            max_members: MAX_SET_MEMBERS,
            max_bytes,
        };
        if self.live_entries(stream) > MAX_SET_MEMBERS {
            return Err(too_large);
        }
        let mut out = SetMembers::default();
        let mut start = StreamId::ZERO;
        let mut bytes = 0usize;
        loop {
            let got = match self
                .range(stream, start, StreamId::MAX, usize::MAX, false)
                .await
            {
                Ok((got, _cut)) => got,
                Err(StreamError::StreamNotFound(_)) => return Ok(out),
                Err(e) => return Err(e),
            };
            let Some(&(last, _)) = got.last() else {
                return Ok(out);
            };
            for (_, e) in got {
                bytes = bytes.saturating_add(e.event.data.len());
                if bytes > max_bytes {
                    return Err(too_large);
                }
                out.insert(&e.event.data);
            }
            start = match last.successor() {
                Some(id) => id,
                None => return Ok(out),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::change::StreamMeta;
    use super::super::StreamKind;
    use crate::protocol::StreamId;

    /// `StreamMeta` as snapshots before strings and sets had it (docs/FORMAT.md).
    #[derive(serde::Serialize)]
    struct OldMeta {
        last_id: StreamId,
        entries_added: Option<(u64, u64)>,
        max_deleted_id: StreamId,
        list: bool,
    }

    #[test]
    fn an_older_snapshots_list_flag_reads_as_the_kind_and_new_kinds_take_new_bytes() {
        for list in [false, true] {
            let old = OldMeta {
                last_id: StreamId::new(5, 1),
                entries_added: Some((3, 2)),
                max_deleted_id: StreamId::new(4, 0),
                list,
            };
            let bytes = postcard::to_allocvec(&old).unwrap();
            let new: StreamMeta = postcard::from_bytes(&bytes).unwrap();
            let kind = if list {
                StreamKind::List
            } else {
                StreamKind::Stream
            };
            assert_eq!(new.kind, kind);
            assert_eq!(new.last_id, old.last_id);
            assert_eq!(new.entries_added, old.entries_added);
            assert_eq!(postcard::to_allocvec(&new).unwrap(), bytes);
        }
        for (kind, byte) in [(StreamKind::String, 2u8), (StreamKind::Set, 3)] {
            let meta = StreamMeta {
                kind,
                ..StreamMeta::default()
            };
            let bytes = postcard::to_allocvec(&meta).unwrap();
            assert_eq!(bytes.last(), Some(&byte));
            let back: StreamMeta = postcard::from_bytes(&bytes).unwrap();
            assert_eq!(back, meta);
        }
    }
}
