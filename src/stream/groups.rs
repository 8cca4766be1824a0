//! Consumer groups (Redis 7.0's, `t_stream.c`): a stream's groups, each with its last
//! delivered ID, its entries-read counter, its pending entries list (PEL: every entry
//! delivered and not acknowledged, with its consumer, last delivery time and delivery count)
//! and its consumers.
//!
//! ## Journaled as edits
//!
//! A group command is resolved against the stream index in its turn, in one synchronous step,
//! into a [`GroupChange`]: the group it touches and a list of [`GroupEdit`]s, each of which
//! *sets* state (a group's cursor, a consumer's times, pending entries' owner, time and count)
//! rather than describing the command. The change is journaled as a record of kind 4 (op 6,
//! docs/FORMAT.md), applied to the index when placed, and applied again by recovery in LSN
//! order. Applying is deterministic and needs nothing but the edits, so recovery restores the
//! state exactly; a snapshot carries the state ([`StreamGroups`]) whole.
//!
//! ## Invariants (checked by [`StreamGroups::check`] in tests and at start-up)
//!
//! - A pending entry's consumer exists in its group, and the consumer's own list holds the
//!   entry's ID; a consumer's list holds only IDs pending with it as owner.
//! - Group entries — pending entries, consumers and groups — are counted per partition
//!   (`group_entries`, [`StreamGroups::entries`]); the bound `max_group_entries` is checked
//!   before a change that adds any is placed ([`StreamGroups::growth`]).
//!
//! What is not journaled: the seen time of a read that delivers nothing and changes nothing
//! else (Redis does not persist it either); after a restart a consumer's seen time is that of
//! its last journaled change.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::protocol::StreamId;

/// A stream's consumer groups, and whether the stream exists without entries.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StreamGroups {
    /// The stream exists even with no version (XGROUP CREATE … MKSTREAM, or a group created
    /// on it): set by every group creation, cleared only by the stream's deletion.
    pub created: bool,
    pub groups: BTreeMap<Vec<u8>, Group>,
}

/// One consumer group.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Group {
    /// The last ID delivered to the group (XREADGROUP `>` delivers entries above it).
    pub last_id: StreamId,
    /// Entries read up to `last_id` (`None`: not known, Redis's `SCG_INVALID_ENTRIES_READ`).
    pub entries_read: Option<u64>,
    pub pending: BTreeMap<StreamId, Pending>,
    pub consumers: BTreeMap<Vec<u8>, Consumer>,
}

/// A pending entry: delivered, not acknowledged.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Pending {
    /// Its consumer's name, shared by the entries one edit made pending (encoded as the
    /// bytes of the name).
    pub consumer: Arc<[u8]>,
    /// Milliseconds since the Unix epoch of its last delivery.
    pub delivery_ms: u64,
    pub delivery_count: u64,
}

/// A consumer of a group.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Consumer {
    /// Its last attempted interaction (a read, a claim), ms since the Unix epoch.
    pub seen_ms: u64,
    /// Its last successful interaction (entries read or claimed); `None`: never.
    pub active_ms: Option<u64>,
    /// The IDs pending with it.
    pub pending: BTreeSet<StreamId>,
}

/// One edit of a group's state (module docs). Each sets state, so applying an edit again
/// after the same edits leaves the same state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupEdit {
    /// The group exists with this cursor (created if missing; an existing group's pending
    /// entries and consumers stay).
    Create {
        last_id: StreamId,
        entries_read: Option<u64>,
    },
    /// The group's cursor.
    SetLast {
        last_id: StreamId,
        entries_read: Option<u64>,
    },
    /// The group is gone.
    Destroy,
    /// The consumer exists (created if missing) with these times (`active_ms` `None`:
    /// unchanged).
    Consumer {
        name: Vec<u8>,
        seen_ms: u64,
        active_ms: Option<u64>,
    },
    /// The consumer is gone, and its pending entries with it.
    DeleteConsumer { name: Vec<u8> },
    /// These entries are pending with `consumer` (which exists), delivered at
    /// `delivery_ms`, each with its delivery count.
    Pend {
        consumer: Vec<u8>,
        delivery_ms: u64,
        entries: Vec<(StreamId, u64)>,
    },
    /// These entries are not pending (acknowledged, or gone from the stream).
    Ack { ids: Vec<StreamId> },
}

/// The edits of one group of a stream: the data of a change record with op 6.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupChange {
    pub group: Vec<u8>,
    pub edits: Vec<GroupEdit>,
}

/// The op byte of a group change in a change record (docs/FORMAT.md).
pub const GROUP_OP: u8 = 6;

/// Names and ID lists in a record are bounded by what a frame holds; these bound what a
/// decoder accepts before allocating.
const MAX_NAME: usize = 64 * 1024;

fn put_name(out: &mut Vec<u8>, name: &[u8]) {
    let n = u16::try_from(name.len()).expect("group and consumer names are below 64 KiB");
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(name);
}

fn put_id(out: &mut Vec<u8>, id: StreamId) {
    out.extend_from_slice(&id.ms.to_le_bytes());
    out.extend_from_slice(&id.seq.to_le_bytes());
}

fn put_opt(out: &mut Vec<u8>, v: Option<u64>) {
    out.extend_from_slice(&v.unwrap_or(u64::MAX).to_le_bytes());
}

/// Reads a change record's data from the front.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn opt(&mut self) -> Option<Option<u64>> {
        let v = self.u64()?;
        Some((v != u64::MAX).then_some(v))
    }
    fn id(&mut self) -> Option<StreamId> {
        Some(StreamId::new(self.u64()?, self.u64()?))
    }
    fn name(&mut self) -> Option<Vec<u8>> {
        let n = self.u16()? as usize;
        self.take(n).map(<[u8]>::to_vec)
    }
    /// A count of items of at least `item` bytes each, checked against what is left.
    fn count(&mut self, item: usize) -> Option<usize> {
        let n = self.u32()? as usize;
        (n.checked_mul(item)? <= self.0.len()).then_some(n)
    }
}

impl GroupChange {
    /// `u8 6, name, u32 n, n × edit`; an edit is a tag byte and its fields (docs/FORMAT.md):
    /// 1 Create and 2 SetLast `id, u64 entries_read` (`u64::MAX`: unknown); 3 Destroy; 4
    /// Consumer `name, u64 seen_ms, u64 active_ms` (`u64::MAX`: unchanged); 5 DeleteConsumer
    /// `name`; 6 Pend `name, u64 delivery_ms, u32 n, n × (id, u64 count)`; 7 Ack `u32 n, n ×
    /// id`. A name is `u16 len` and its bytes; an ID `u64 ms, u64 seq`; all little-endian.
    pub fn encode(&self) -> Vec<u8> {
        let len = self.encoded_len();
        let mut out = Vec::with_capacity(len);
        out.push(GROUP_OP);
        put_name(&mut out, &self.group);
        out.extend_from_slice(&(self.edits.len() as u32).to_le_bytes());
        for e in &self.edits {
            match e {
                GroupEdit::Create {
                    last_id,
                    entries_read,
                } => {
                    out.push(1);
                    put_id(&mut out, *last_id);
                    put_opt(&mut out, *entries_read);
                }
                GroupEdit::SetLast {
                    last_id,
                    entries_read,
                } => {
                    out.push(2);
                    put_id(&mut out, *last_id);
                    put_opt(&mut out, *entries_read);
                }
                GroupEdit::Destroy => out.push(3),
                GroupEdit::Consumer {
                    name,
                    seen_ms,
                    active_ms,
                } => {
                    out.push(4);
                    put_name(&mut out, name);
                    out.extend_from_slice(&seen_ms.to_le_bytes());
                    put_opt(&mut out, *active_ms);
                }
                GroupEdit::DeleteConsumer { name } => {
                    out.push(5);
                    put_name(&mut out, name);
                }
                GroupEdit::Pend {
                    consumer,
                    delivery_ms,
                    entries,
                } => {
                    out.push(6);
                    put_name(&mut out, consumer);
                    out.extend_from_slice(&delivery_ms.to_le_bytes());
                    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
                    for (id, count) in entries {
                        put_id(&mut out, *id);
                        out.extend_from_slice(&count.to_le_bytes());
                    }
                }
                GroupEdit::Ack { ids } => {
                    out.push(7);
                    out.extend_from_slice(&(ids.len() as u32).to_le_bytes());
                    for id in ids {
                        put_id(&mut out, *id);
                    }
                }
            }
        }
        assert_eq!(out.len(), len, "encoded_len counts every byte");
        out
    }

    /// The bytes [`Self::encode`] writes (so it allocates once).
    fn encoded_len(&self) -> usize {
        let name = |n: &[u8]| 2 + n.len();
        let edits: usize = self
            .edits
            .iter()
            .map(|e| {
                1 + match e {
                    GroupEdit::Create { .. } | GroupEdit::SetLast { .. } => 16 + 8,
                    GroupEdit::Destroy => 0,
                    GroupEdit::Consumer { name: n, .. } => name(n) + 8 + 8,
                    GroupEdit::DeleteConsumer { name: n } => name(n),
                    GroupEdit::Pend {
                        consumer, entries, ..
                    } => name(consumer) + 8 + 4 + entries.len() * 24,
                    GroupEdit::Ack { ids } => 4 + ids.len() * 16,
                }
            })
            .sum();
        1 + name(&self.group) + 4 + edits
    }

    /// The change in a record's data (which starts with [`GROUP_OP`]); `None` for bytes
    /// that are not one.
    pub fn decode(data: &[u8]) -> Option<GroupChange> {
        let mut r = Reader(data);
        if r.u8()? != GROUP_OP {
            return None;
        }
        let group = r.name()?;
        let n = r.count(1)?;
        let mut edits = Vec::with_capacity(n);
        for _ in 0..n {
            edits.push(match r.u8()? {
                1 => GroupEdit::Create {
                    last_id: r.id()?,
                    entries_read: r.opt()?,
                },
                2 => GroupEdit::SetLast {
                    last_id: r.id()?,
                    entries_read: r.opt()?,
                },
                3 => GroupEdit::Destroy,
                4 => GroupEdit::Consumer {
                    name: r.name()?,
                    seen_ms: r.u64()?,
                    active_ms: r.opt()?,
                },
                5 => GroupEdit::DeleteConsumer { name: r.name()? },
                6 => {
                    let consumer = r.name()?;
                    let delivery_ms = r.u64()?;
                    let k = r.count(24)?;
                    let mut entries = Vec::with_capacity(k);
                    for _ in 0..k {
                        entries.push((r.id()?, r.u64()?));
                    }
                    GroupEdit::Pend {
                        consumer,
                        delivery_ms,
                        entries,
                    }
                }
                7 => {
                    let k = r.count(16)?;
                    let mut ids = Vec::with_capacity(k);
                    for _ in 0..k {
                        ids.push(r.id()?);
                    }
                    GroupEdit::Ack { ids }
                }
                _ => return None,
            });
        }
        r.0.is_empty().then_some(GroupChange { group, edits })
    }

    /// Whether every name (the group's, its consumers') fits the encoding's `u16` length.
    pub fn names_fit(&self) -> bool {
        self.group.len() < MAX_NAME
            && self.edits.iter().all(|e| match e {
                GroupEdit::Consumer { name, .. }
                | GroupEdit::DeleteConsumer { name }
                | GroupEdit::Pend { consumer: name, .. } => name.len() < MAX_NAME,
                _ => true,
            })
    }
}

impl StreamGroups {
    /// Applies `change`; returns the change in [`StreamGroups::entries`].
    pub fn apply(&mut self, change: &GroupChange) -> i64 {
        let mut delta = 0i64;
        for edit in &change.edits {
            if let GroupEdit::Create {
                last_id,
                entries_read,
            } = edit
            {
                self.created = true;
                if !self.groups.contains_key(&change.group) {
                    delta += 1;
                }
                let g = self.groups.entry(change.group.clone()).or_default();
                g.last_id = *last_id;
                g.entries_read = *entries_read;
                continue;
            }
            if let GroupEdit::Destroy = edit {
                if let Some(g) = self.groups.remove(&change.group) {
                    delta -= 1 + g.pending.len() as i64 + g.consumers.len() as i64;
                }
                continue;
            }
            let Some(g) = self.groups.get_mut(&change.group) else {
                continue;
            };
            delta += g.apply(edit);
        }
        delta
    }

    /// Entries of every group: its pending entries, its consumers, and itself (what
    /// `max_group_entries` bounds).
    pub fn entries(&self) -> u64 {
        self.groups
            .values()
            .map(|g| 1 + g.pending.len() as u64 + g.consumers.len() as u64)
            .sum()
    }

    /// How many entries applying `change` may add at most.
    pub fn growth(&self, change: &GroupChange) -> u64 {
        let g = self.groups.get(&change.group);
        let mut new_consumers: Vec<&[u8]> = Vec::new();
        let mut n = 0u64;
        for edit in &change.edits {
            match edit {
                GroupEdit::Create { .. } => n += u64::from(g.is_none()),
                GroupEdit::Consumer { name, .. } | GroupEdit::Pend { consumer: name, .. } => {
                    if !g.is_some_and(|g| g.consumers.contains_key(name))
                        && !new_consumers.contains(&name.as_slice())
                    {
                        new_consumers.push(name);
                        n += 1;
                    }
                    if let GroupEdit::Pend { entries, .. } = edit {
                        // Entries above every pending ID (new deliveries, usually) are not
                        // pending: no lookup each.
                        let newest = g
                            .and_then(|g| g.pending.last_key_value())
                            .map(|(id, _)| *id);
                        n += entries
                            .iter()
                            .filter(|(id, _)| {
                                newest.is_none_or(|newest| *id > newest)
                                    || !g.is_some_and(|g| g.pending.contains_key(id))
                            })
                            .count() as u64;
                    }
                }
                _ => {}
            }
        }
        n
    }

    /// Checks the invariants of the module docs; panics on a broken one.
    pub fn check(&self) {
        for (name, g) in &self.groups {
            for (id, p) in &g.pending {
                let c = g.consumers.get(&*p.consumer).unwrap_or_else(|| {
                    panic!("group {name:?}: pending {id} names a missing consumer")
                });
                assert!(
                    c.pending.contains(id),
                    "group {name:?}: pending {id} missing from its consumer's list"
                );
            }
            for (cname, c) in &g.consumers {
                for id in &c.pending {
                    assert!(
                        g.pending.get(id).is_some_and(|p| *p.consumer == **cname),
                        "group {name:?}: consumer {cname:?} lists {id}, not pending with it"
                    );
                }
            }
        }
    }
}

impl Group {
    /// Applies one edit (not Create or Destroy); returns the change in pending entries and
    /// consumers.
    fn apply(&mut self, edit: &GroupEdit) -> i64 {
        match edit {
            GroupEdit::Create { .. } | GroupEdit::Destroy => {
                unreachable!("applied by StreamGroups::apply")
            }
            GroupEdit::SetLast {
                last_id,
                entries_read,
            } => {
                self.last_id = *last_id;
                self.entries_read = *entries_read;
                0
            }
            GroupEdit::Consumer {
                name,
                seen_ms,
                active_ms,
            } => {
                let added = !self.consumers.contains_key(name);
                let c = self.consumers.entry(name.clone()).or_default();
                c.seen_ms = *seen_ms;
                if active_ms.is_some() {
                    c.active_ms = *active_ms;
                }
                i64::from(added)
            }
            GroupEdit::DeleteConsumer { name } => {
                let Some(c) = self.consumers.remove(name) else {
                    return 0;
                };
                for id in &c.pending {
                    self.pending.remove(id);
                }
                -1 - c.pending.len() as i64
            }
            GroupEdit::Pend {
                consumer,
                delivery_ms,
                entries,
            } => {
                let mut added = 0;
                if !self.consumers.contains_key(consumer) {
                    self.consumers.insert(consumer.clone(), Consumer::default());
                    added += 1;
                }
                // Entries pending with another consumer until now: off its list after.
                let mut taken: Vec<(Arc<[u8]>, StreamId)> = Vec::new();
                let c = self.consumers.get_mut(consumer).expect("made above");
                let name: Arc<[u8]> = Arc::from(consumer.as_slice());
                for &(id, count) in entries {
                    let previous = self.pending.insert(
                        id,
                        Pending {
                            consumer: name.clone(),
                            delivery_ms: *delivery_ms,
                            delivery_count: count,
                        },
                    );
                    match previous {
                        Some(p) if *p.consumer != **consumer => taken.push((p.consumer, id)),
                        Some(_) => {}
                        None => added += 1,
                    }
                    c.pending.insert(id);
                }
                unlist(&mut self.consumers, taken);
                added
            }
            GroupEdit::Ack { ids } => {
                let pending = &mut self.pending;
                let gone = ids
                    .iter()
                    .filter_map(|id| pending.remove(id).map(|p| (p.consumer, *id)));
                -(unlist(&mut self.consumers, gone) as i64)
            }
        }
    }
}

/// Takes each ID off its consumer's list of pending IDs; returns how many it was given. The
/// IDs of one consumer come one after another (an XACK's or a claim's usually all do): one
/// lookup per run.
fn unlist(
    consumers: &mut BTreeMap<Vec<u8>, Consumer>,
    ids: impl IntoIterator<Item = (Arc<[u8]>, StreamId)>,
) -> usize {
    let mut n = 0;
    let mut at: Option<(Arc<[u8]>, Option<&mut Consumer>)> = None;
    for (name, id) in ids {
        n += 1;
        if at.as_ref().is_none_or(|(c, _)| *c != name) {
            let c = consumers.get_mut(&*name);
            at = Some((name, c));
        }
        if let Some((_, Some(c))) = &mut at {
            c.pending.remove(&id);
        }
    }
    n
}

/// Edits that make each group of `groups` again from nothing (a renamed or restored
/// stream's groups), by group name.
pub fn rebuild_edits(groups: &StreamGroups) -> Vec<(Vec<u8>, Vec<GroupEdit>)> {
    groups
        .groups
        .iter()
        .map(|(name, g)| {
            let mut edits = vec![GroupEdit::Create {
                last_id: g.last_id,
                entries_read: g.entries_read,
            }];
            for (cname, c) in &g.consumers {
                edits.push(GroupEdit::Consumer {
                    name: cname.clone(),
                    seen_ms: c.seen_ms,
                    active_ms: c.active_ms,
                });
            }
            for (id, p) in &g.pending {
                edits.push(GroupEdit::Pend {
                    consumer: p.consumer.to_vec(),
                    delivery_ms: p.delivery_ms,
                    entries: vec![(*id, p.delivery_count)],
                });
            }
            (name.clone(), edits)
        })
        .collect()
}

/// What lag and entries-read computations need of a stream (Redis's `stream` fields).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamCounters {
    pub length: u64,
    pub last_id: StreamId,
    pub first_id: StreamId,
    pub max_deleted_id: StreamId,
    pub entries_added: u64,
}

impl StreamCounters {
    /// Whether an entry deleted by XDEL may lie at or after `start` (Redis's
    /// `streamRangeHasTombstones` with no end).
    pub fn has_tombstones_from(&self, start: StreamId) -> bool {
        if self.length == 0 || self.max_deleted_id == StreamId::ZERO {
            return false;
        }
        if self.first_id > self.max_deleted_id {
            return false;
        }
        start <= self.max_deleted_id
    }

    /// The entries-read counter of `id`: its distance from the first entry ever added, when
    /// it can be known (Redis's `streamEstimateDistanceFromFirstEverEntry`).
    pub fn estimate_read(&self, id: StreamId) -> Option<u64> {
        if self.entries_added == 0 {
            return Some(0);
        }
        if self.length == 0 && id <= self.last_id {
            return Some(self.entries_added);
        }
        if id == self.last_id {
            return Some(self.entries_added);
        }
        if id > self.last_id {
            return None;
        }
        if self.max_deleted_id == StreamId::ZERO || self.max_deleted_id < self.first_id {
            // (Redis subtracts unchecked; counters with fewer added than live say nothing.)
            let before_first = self.entries_added.checked_sub(self.length)?;
            if id < self.first_id {
                return Some(before_first);
            }
            if id == self.first_id {
                return before_first.checked_add(1);
            }
        }
        None
    }

    /// A group's lag: entries not delivered to it yet, when it can be known (Redis's
    /// `streamReplyWithCGLag`).
    pub fn lag(&self, g: &Group) -> Option<u64> {
        if self.entries_added == 0 {
            return Some(0);
        }
        if let Some(read) = g.entries_read {
            if !self.has_tombstones_from(g.last_id) {
                return Some(self.entries_added.saturating_sub(read));
            }
        }
        self.estimate_read(g.last_id)
            .map(|read| self.entries_added.saturating_sub(read))
    }

    /// The group's entries-read counter after delivering `id` (above its last ID), as
    /// `streamReplyWithRange` moves it.
    pub fn read_after(&self, entries_read: Option<u64>, id: StreamId) -> Option<u64> {
        match entries_read {
            Some(n) if !self.has_tombstones_from(id) => Some(n + 1),
            _ if self.entries_added != 0 => self.estimate_read(id),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(ms: u64) -> StreamId {
        StreamId::new(ms, 0)
    }

    /// A snapshot holds a pending entry's consumer as the bytes of the name: sharing the
    /// name (`Arc<[u8]>`) encodes as the `Vec<u8>` each entry once held, in both codecs.
    #[test]
    fn a_shared_consumer_name_encodes_as_its_bytes() {
        #[derive(serde::Serialize)]
        struct Owned {
            consumer: Vec<u8>,
            delivery_ms: u64,
            delivery_count: u64,
        }
        let shared = Pending {
            consumer: Arc::from(&b"worker-7"[..]),
            delivery_ms: 1_700_000_000_000,
            delivery_count: 3,
        };
        let owned = Owned {
            consumer: b"worker-7".to_vec(),
            delivery_ms: 1_700_000_000_000,
            delivery_count: 3,
        };
        let bin = postcard::to_allocvec(&shared).unwrap();
        assert_eq!(bin, postcard::to_allocvec(&owned).unwrap());
        assert_eq!(postcard::from_bytes::<Pending>(&bin).unwrap(), shared);
        let json = serde_json::to_string(&shared).unwrap();
        assert_eq!(json, serde_json::to_string(&owned).unwrap());
        assert_eq!(serde_json::from_str::<Pending>(&json).unwrap(), shared);
    }

    #[test]
    fn changes_round_trip_and_truncations_are_refused() {
        let c = GroupChange {
            group: b"g".to_vec(),
            edits: vec![
                GroupEdit::Create {
                    last_id: id(5),
                    entries_read: None,
                },
                GroupEdit::SetLast {
                    last_id: id(6),
                    entries_read: Some(3),
                },
                GroupEdit::Consumer {
                    name: b"alice".to_vec(),
                    seen_ms: 7,
                    active_ms: Some(8),
                },
                GroupEdit::Pend {
                    consumer: b"alice".to_vec(),
                    delivery_ms: 9,
                    entries: vec![(id(1), 1), (id(2), 4)],
                },
                GroupEdit::Ack { ids: vec![id(1)] },
                GroupEdit::DeleteConsumer {
                    name: b"bob".to_vec(),
                },
                GroupEdit::Destroy,
            ],
        };
        let bytes = c.encode();
        assert_eq!(GroupChange::decode(&bytes), Some(c));
        for cut in 0..bytes.len() {
            assert_eq!(GroupChange::decode(&bytes[..cut]), None, "cut at {cut}");
        }
        let mut huge = vec![GROUP_OP, 1, 0, b'g'];
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(GroupChange::decode(&huge), None);
    }

    #[test]
    fn a_name_too_long_for_its_u16_length_is_caught_before_encoding() {
        let long = vec![b'c'; 65_536];
        let pend = GroupChange {
            group: b"g".to_vec(),
            edits: vec![GroupEdit::Pend {
                consumer: long.clone(),
                delivery_ms: 1,
                entries: vec![(id(1), 1)],
            }],
        };
        assert!(!pend.names_fit());
        let group = GroupChange {
            group: long,
            edits: vec![GroupEdit::Destroy],
        };
        assert!(!group.names_fit());
        let fine = GroupChange {
            group: vec![b'g'; 65_535],
            edits: vec![GroupEdit::DeleteConsumer {
                name: vec![b'c'; 65_535],
            }],
        };
        assert!(fine.names_fit());
        assert_eq!(GroupChange::decode(&fine.encode()), Some(fine));
    }

    #[test]
    fn edits_keep_the_pending_lists_consistent() {
        let mut s = StreamGroups::default();
        let change = |edits| GroupChange {
            group: b"g".to_vec(),
            edits,
        };
        assert_eq!(
            s.apply(&change(vec![GroupEdit::Create {
                last_id: StreamId::ZERO,
                entries_read: None
            }])),
            1,
            "the group"
        );
        let pend = |who: &[u8], ids: &[u64]| GroupEdit::Pend {
            consumer: who.to_vec(),
            delivery_ms: 1,
            entries: ids.iter().map(|&m| (id(m), 1)).collect(),
        };
        let growth = s.growth(&change(vec![pend(b"a", &[1, 2, 3])]));
        assert_eq!(growth, 4, "consumer a and three entries");
        assert_eq!(s.apply(&change(vec![pend(b"a", &[1, 2, 3])])), 4);
        assert_eq!(
            s.growth(&change(vec![pend(b"a", &[2, 3, 4])])),
            1,
            "entry 4 alone is new"
        );
        assert_eq!(
            s.growth(&change(vec![pend(b"a", &[5, 6])])),
            2,
            "entries above every pending ID"
        );
        assert_eq!(
            s.apply(&change(vec![pend(b"b", &[2])])),
            1,
            "consumer b; 2 reassigned"
        );
        s.check();
        let g = &s.groups[&b"g".to_vec()];
        assert_eq!(g.consumers[&b"a".to_vec()].pending.len(), 2);
        assert_eq!(*g.pending[&id(2)].consumer, *b"b");
        assert_eq!(
            s.apply(&change(vec![GroupEdit::Ack {
                ids: vec![id(1), id(9)]
            }])),
            -1
        );
        assert_eq!(
            s.apply(&change(vec![GroupEdit::DeleteConsumer {
                name: b"b".to_vec()
            }])),
            -2,
            "consumer b and its entry 2"
        );
        s.check();
        assert_eq!(s.entries(), 1 + 1 + 1, "the group, consumer a, its entry 3");
        assert_eq!(s.apply(&change(vec![GroupEdit::Destroy])), -3);
        assert!(s.groups.is_empty() && s.created);
    }

    #[test]
    fn lag_and_read_counters_follow_redis() {
        // 5 entries added, 3-0 deleted (t_stream.c's "lag with XDELs" test).
        let s = StreamCounters {
            length: 4,
            last_id: id(5),
            first_id: id(1),
            max_deleted_id: id(3),
            entries_added: 5,
        };
        let g = Group::default();
        assert_eq!(s.lag(&g), None, "a tombstone after 0-0");
        assert_eq!(s.read_after(None, id(1)), None);
        assert_eq!(s.read_after(None, id(5)), Some(5));
        let g = Group {
            last_id: id(5),
            entries_read: Some(5),
            ..Group::default()
        };
        assert_eq!(s.lag(&g), Some(0));
        let empty = StreamCounters {
            length: 0,
            last_id: StreamId::ZERO,
            first_id: StreamId::ZERO,
            max_deleted_id: StreamId::ZERO,
            entries_added: 0,
        };
        assert_eq!(empty.lag(&Group::default()), Some(0));
        let full = StreamCounters {
            length: 5,
            last_id: id(5),
            first_id: id(1),
            max_deleted_id: StreamId::ZERO,
            entries_added: 5,
        };
        assert_eq!(full.lag(&Group::default()), Some(5));
        assert_eq!(full.read_after(None, id(1)), Some(1));
        assert_eq!(full.read_after(Some(1), id(2)), Some(2));
    }
}
