//! Consumer-group commands on a partition: each [`GroupRequest`] is resolved against the
//! stream index in its turn, in one synchronous step, into a [`GroupChange`]
//! ([`super::groups`]) that is journaled, applied when placed, and answered once durable
//! ([`GroupDone`]) — through [`Partition::transaction`] (`TxWrite::Group`), so a group
//! command shares the order, frames and durability of appends and other changes.
//!
//! A read delivers only visible entries (durable, published). "An entry exists" (XCLAIM,
//! XAUTOCLAIM, history reads) means: a visible version with that ID that is not deleted.
//! Requests that change nothing are not journaled (an XACK of IDs not pending, an XREADGROUP
//! that delivers nothing to a consumer that exists).

use super::groups::{GroupChange, GroupEdit, StreamCounters, StreamGroups};
use super::partition::StreamEntry;
use super::{Partition, StreamError};
use crate::journal::{PendingAppend, Storage};
use crate::protocol::StreamId;

/// A group's start: an ID, or the stream's last ID (`$`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupStart {
    Id(StreamId),
    Last,
}

/// When XCLAIM says a claimed entry was delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimTime {
    /// This long before now (IDLE ms).
    Idle(u64),
    /// At this time, ms since the Unix epoch (TIME).
    At(u64),
}

/// A consumer-group command, as a client asks for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupRequest {
    Create {
        group: Vec<u8>,
        start: GroupStart,
        mkstream: bool,
        entries_read: Option<u64>,
    },
    SetId {
        group: Vec<u8>,
        start: GroupStart,
        entries_read: Option<u64>,
    },
    Destroy {
        group: Vec<u8>,
    },
    CreateConsumer {
        group: Vec<u8>,
        consumer: Vec<u8>,
    },
    DeleteConsumer {
        group: Vec<u8>,
        consumer: Vec<u8>,
    },
    /// XREADGROUP on one stream: new entries (`after` `None`: Redis's `>`) or the consumer's
    /// pending entries above `after` (its history); at most `count`.
    Read {
        group: Vec<u8>,
        consumer: Vec<u8>,
        after: Option<StreamId>,
        count: usize,
        noack: bool,
    },
    Ack {
        group: Vec<u8>,
        ids: Vec<StreamId>,
    },
    Claim {
        group: Vec<u8>,
        consumer: Vec<u8>,
        min_idle_ms: u64,
        ids: Vec<StreamId>,
        time: Option<ClaimTime>,
        retry_count: Option<u64>,
        force: bool,
        just_id: bool,
        last_id: Option<StreamId>,
    },
    AutoClaim {
        group: Vec<u8>,
        consumer: Vec<u8>,
        min_idle_ms: u64,
        start: StreamId,
        count: usize,
        just_id: bool,
    },
    /// The group's state as these edits make it, replacing what it had (RENAME, RESTORE).
    Set {
        group: Vec<u8>,
        edits: Vec<GroupEdit>,
    },
}

impl GroupRequest {
    pub fn group(&self) -> &[u8] {
        match self {
            GroupRequest::Create { group, .. }
            | GroupRequest::SetId { group, .. }
            | GroupRequest::Destroy { group }
            | GroupRequest::CreateConsumer { group, .. }
            | GroupRequest::DeleteConsumer { group, .. }
            | GroupRequest::Read { group, .. }
            | GroupRequest::Ack { group, .. }
            | GroupRequest::Claim { group, .. }
            | GroupRequest::AutoClaim { group, .. }
            | GroupRequest::Set { group, .. } => group,
        }
    }
}

/// An entry a group command answers with: its ID and the LSN of its event (`None`: it is
/// no longer in the stream; a history read answers it with no fields).
pub type GroupEntry = (StreamId, Option<u64>);

/// What a group command did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupDone {
    /// Created, or set (OK).
    Ok,
    /// A number: DESTROY and CREATECONSUMER 1 or 0, DELCONSUMER the consumer's pending
    /// entries, XACK the entries acknowledged.
    Count(u64),
    /// XREADGROUP: whether the stream is in the reply (`>` with nothing new: not), and its
    /// entries.
    Read {
        served: bool,
        entries: Vec<GroupEntry>,
    },
    /// XCLAIM: the entries claimed (with JUSTID their IDs only: LSNs `None`).
    Claimed(Vec<GroupEntry>),
    /// XAUTOCLAIM: the next start, the entries claimed, the IDs gone from the stream
    /// (removed from the pending list).
    AutoClaimed {
        next: StreamId,
        entries: Vec<GroupEntry>,
        deleted: Vec<StreamId>,
    },
}

/// Why a group command was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    #[error("no such stream: create it with an append, or create the group with MKSTREAM")]
    NoStream,
    #[error("no such consumer group")]
    NoGroup,
    #[error("the consumer group exists already")]
    GroupExists,
    #[error("group and consumer names are at most 65,535 bytes: use a shorter name")]
    NameTooLong,
    #[error(
        "the partition holds {max} consumer-group entries (pending entries, consumers and \
         groups; max_group_entries): acknowledge entries with XACK, read with NOACK, delete \
         consumers or groups, or raise max_group_entries"
    )]
    Full { max: u64 },
}

/// What one attempt to place a group command did.
pub(super) enum GroupPlaced {
    /// Nothing to journal: answered as is.
    Nothing(GroupDone),
    /// Placed: its durability to wait for, and its answer.
    Pending(PendingAppend, GroupDone),
    /// The journal has no room now for the record (its data).
    NoRoom(Vec<u8>),
}

impl StreamEntry {
    /// The counters lag and entries-read use, over the visible versions (the first
    /// `visible`).
    pub(super) fn counters(&self, visible: usize) -> StreamCounters {
        let first =
            (self.deleted.trimmed as usize..visible).find(|&v| !self.deleted.contains(v as u64));
        let newest = self.ids[..visible]
            .last()
            .copied()
            .unwrap_or(StreamId::ZERO);
        let entries_added = match self.meta.entries_added {
            Some((n, at)) => n + (visible as u64).saturating_sub(at),
            None => visible as u64,
        };
        StreamCounters {
            length: visible as u64 - self.deleted.count(visible as u64),
            last_id: newest.max(self.meta.last_id),
            first_id: first.map_or(StreamId::ZERO, |v| self.ids[v]),
            max_deleted_id: self.max_deleted_id(),
            entries_added,
        }
    }

    /// The visible, live version with `id`.
    fn live_version(&self, id: StreamId, visible: usize) -> Option<usize> {
        self.version_of(id)
            .filter(|&v| v < visible && !self.deleted.contains(v as u64))
    }
}

/// A request resolved: the edits to journal (none: nothing to journal) and the answer.
struct Resolved {
    edits: Vec<GroupEdit>,
    done: GroupDone,
}

/// Resolves `request` against `entry` (the stream, `None` when it has no index entry) with
/// its first `visible` versions visible, at `now_ms`, with room for `room` more pending
/// entries in the partition (of `max_pending`); a read answers at most `max_count` entries
/// (the partition's `max_read_count`).
fn resolve(
    entry: Option<&StreamEntry>,
    visible: usize,
    request: &GroupRequest,
    now_ms: u64,
    room: u64,
    max_pending: u64,
    max_count: usize,
) -> Result<Resolved, StreamError> {
    let no_group = || StreamError::Group(GroupError::NoGroup);
    if let GroupRequest::Set { edits, .. } = request {
        let pending: u64 = edits
            .iter()
            .map(|e| match e {
                GroupEdit::Pend { entries, .. } => entries.len() as u64,
                _ => 0,
            })
            .sum();
        if pending > room {
            return Err(StreamError::Group(GroupError::Full { max: max_pending }));
        }
        let mut all = vec![GroupEdit::Destroy];
        all.extend(edits.iter().cloned());
        return Ok(Resolved {
            edits: all,
            done: GroupDone::Ok,
        });
    }
    if let GroupRequest::Create {
        start,
        mkstream,
        entries_read,
        group,
    } = request
    {
        let exists = entry.is_some_and(|e| visible > 0 || e.groups.created);
        if !exists && !mkstream {
            return Err(StreamError::Group(GroupError::NoStream));
        }
        if entry.is_some_and(|e| e.groups.groups.contains_key(group)) {
            return Err(StreamError::Group(GroupError::GroupExists));
        }
        let last_id = match start {
            GroupStart::Id(id) => *id,
            GroupStart::Last => entry.map_or(StreamId::ZERO, |e| e.counters(visible).last_id),
        };
        return Ok(Resolved {
            edits: vec![GroupEdit::Create {
                last_id,
                entries_read: *entries_read,
            }],
            done: GroupDone::Ok,
        });
    }
    let Some(entry) = entry.filter(|e| visible > 0 || e.groups.created) else {
        return match request {
            GroupRequest::Ack { .. } => Ok(Resolved {
                edits: Vec::new(),
                done: GroupDone::Count(0),
            }),
            GroupRequest::Destroy { .. } | GroupRequest::SetId { .. } => {
                Err(StreamError::Group(GroupError::NoStream))
            }
            GroupRequest::CreateConsumer { .. } | GroupRequest::DeleteConsumer { .. } => {
                Err(StreamError::Group(GroupError::NoStream))
            }
            _ => Err(no_group()),
        };
    };
    let group = entry.groups.groups.get(request.group());
    let nothing = |done| {
        Ok(Resolved {
            edits: Vec::new(),
            done,
        })
    };
    let Some(g) = group else {
        return match request {
            GroupRequest::Destroy { .. } => nothing(GroupDone::Count(0)),
            GroupRequest::Ack { .. } => nothing(GroupDone::Count(0)),
            _ => Err(no_group()),
        };
    };
    let counters = entry.counters(visible);
    let consumer_edit = |name: &[u8], active: bool| GroupEdit::Consumer {
        name: name.to_vec(),
        seen_ms: now_ms,
        active_ms: active.then_some(now_ms),
    };
    match request {
        GroupRequest::Create { .. } | GroupRequest::Set { .. } => {
            unreachable!("resolved above")
        }
        GroupRequest::SetId {
            start,
            entries_read,
            ..
        } => {
            let last_id = match start {
                GroupStart::Id(id) => *id,
                GroupStart::Last => counters.last_id,
            };
            Ok(Resolved {
                edits: vec![GroupEdit::SetLast {
                    last_id,
                    entries_read: *entries_read,
                }],
                done: GroupDone::Ok,
            })
        }
        GroupRequest::Destroy { .. } => Ok(Resolved {
            edits: vec![GroupEdit::Destroy],
            done: GroupDone::Count(1),
        }),
        GroupRequest::CreateConsumer { consumer, .. } => {
            if g.consumers.contains_key(consumer) {
                return nothing(GroupDone::Count(0));
            }
            Ok(Resolved {
                edits: vec![consumer_edit(consumer, false)],
                done: GroupDone::Count(1),
            })
        }
        GroupRequest::DeleteConsumer { consumer, .. } => match g.consumers.get(consumer) {
            None => nothing(GroupDone::Count(0)),
            Some(c) => Ok(Resolved {
                edits: vec![GroupEdit::DeleteConsumer {
                    name: consumer.clone(),
                }],
                done: GroupDone::Count(c.pending.len() as u64),
            }),
        },
        GroupRequest::Ack { ids, .. } => {
            let mut acked: Vec<StreamId> = Vec::new();
            for id in ids {
                if g.pending.contains_key(id) && !acked.contains(id) {
                    acked.push(*id);
                }
            }
            if acked.is_empty() {
                return nothing(GroupDone::Count(0));
            }
            let n = acked.len() as u64;
            Ok(Resolved {
                edits: vec![GroupEdit::Ack { ids: acked }],
                done: GroupDone::Count(n),
            })
        }
        GroupRequest::Read {
            consumer,
            after: None,
            count,
            noack,
            ..
        } => {
            // The group's entries read count its versions up to `last_id` when none were
            // deleted: the first version after it is searched from there.
            let guess = g
                .entries_read
                .map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX));
            let from =
                super::search::partition_point_near(&entry.ids, guess, |&id| id <= g.last_id)
                    .max(entry.deleted.trimmed as usize)
                    .min(visible);
            let mut limit = (*count).min(max_count);
            if !noack {
                // Room after the consumer the read may create.
                let room = room.saturating_sub(1);
                if room == 0 && from < visible {
                    return Err(StreamError::Group(GroupError::Full { max: max_pending }));
                }
                limit = limit.min(usize::try_from(room).unwrap_or(usize::MAX));
            }
            let versions: Vec<usize> = (from..visible)
                .filter(|&v| !entry.deleted.contains(v as u64))
                .take(limit)
                .collect();
            if versions.is_empty() {
                return nothing(GroupDone::Read {
                    served: false,
                    entries: Vec::new(),
                });
            }
            let mut last_id = g.last_id;
            let mut entries_read = g.entries_read;
            for &v in &versions {
                let id = entry.ids[v];
                if id > last_id {
                    entries_read = counters.read_after(entries_read, id);
                    last_id = id;
                }
            }
            let mut edits = vec![
                consumer_edit(consumer, true),
                GroupEdit::SetLast {
                    last_id,
                    entries_read,
                },
            ];
            if !noack {
                edits.push(GroupEdit::Pend {
                    consumer: consumer.clone(),
                    delivery_ms: now_ms,
                    entries: versions.iter().map(|&v| (entry.ids[v], 1)).collect(),
                });
            }
            Ok(Resolved {
                edits,
                done: GroupDone::Read {
                    served: true,
                    entries: versions
                        .iter()
                        .map(|&v| (entry.ids[v], Some(entry.lsns[v])))
                        .collect(),
                },
            })
        }
        GroupRequest::Read {
            consumer,
            after: Some(after),
            count,
            ..
        } => {
            let mut entries = Vec::new();
            let mut redelivered = Vec::new();
            if let (Some(c), Some(start)) = (g.consumers.get(consumer), after.successor()) {
                for id in c.pending.range(start..).take((*count).min(max_count)) {
                    match entry.live_version(*id, visible) {
                        Some(v) => {
                            entries.push((*id, Some(entry.lsns[v])));
                            let p = &g.pending[id];
                            redelivered.push((*id, p.delivery_count.saturating_add(1)));
                        }
                        None => entries.push((*id, None)),
                    }
                }
            }
            let mut edits = vec![consumer_edit(consumer, false)];
            if !redelivered.is_empty() {
                edits.push(GroupEdit::Pend {
                    consumer: consumer.clone(),
                    delivery_ms: now_ms,
                    entries: redelivered,
                });
            }
            if g.consumers.contains_key(consumer) && edits.len() == 1 {
                // Only the seen time would change (module docs of `groups`).
                edits.clear();
            }
            Ok(Resolved {
                edits,
                done: GroupDone::Read {
                    served: true,
                    entries,
                },
            })
        }
        GroupRequest::Claim {
            consumer,
            min_idle_ms,
            ids,
            time,
            retry_count,
            force,
            just_id,
            last_id,
            ..
        } => {
            let delivery_ms = match time {
                None => now_ms,
                Some(ClaimTime::Idle(ms)) => now_ms.saturating_sub(*ms),
                Some(ClaimTime::At(ms)) if *ms > now_ms => now_ms,
                Some(ClaimTime::At(ms)) => *ms,
            };
            let mut gone = Vec::new();
            let mut claimed: Vec<(StreamId, u64)> = Vec::new();
            let mut entries = Vec::new();
            let mut new_pending = 0u64;
            for id in ids {
                if claimed.iter().any(|(c, _)| c == id) || gone.contains(id) {
                    continue;
                }
                let pending = g.pending.get(id);
                let Some(v) = entry.live_version(*id, visible) else {
                    if pending.is_some() {
                        gone.push(*id);
                    }
                    continue;
                };
                let count = match pending {
                    Some(p) => {
                        if *min_idle_ms > 0 && now_ms.saturating_sub(p.delivery_ms) < *min_idle_ms {
                            continue;
                        }
                        p.delivery_count
                    }
                    None if *force => {
                        new_pending += 1;
                        0
                    }
                    None => continue,
                };
                let count = match retry_count {
                    Some(n) => *n,
                    None if *just_id => count,
                    None => count.saturating_add(1),
                };
                claimed.push((*id, count));
                entries.push((*id, (!just_id).then_some(entry.lsns[v])));
            }
            if new_pending > room {
                return Err(StreamError::Group(GroupError::Full { max: max_pending }));
            }
            let mut edits = Vec::new();
            if let Some(l) = last_id.filter(|l| *l > g.last_id) {
                edits.push(GroupEdit::SetLast {
                    last_id: l,
                    entries_read: g.entries_read,
                });
            }
            if !gone.is_empty() {
                edits.push(GroupEdit::Ack { ids: gone });
            }
            if !claimed.is_empty() {
                edits.push(consumer_edit(consumer, true));
                edits.push(GroupEdit::Pend {
                    consumer: consumer.clone(),
                    delivery_ms,
                    entries: claimed,
                });
            }
            Ok(Resolved {
                edits,
                done: GroupDone::Claimed(entries),
            })
        }
        GroupRequest::AutoClaim {
            consumer,
            min_idle_ms,
            start,
            count,
            just_id,
            ..
        } => {
            let mut left = *count;
            let mut attempts = count.saturating_mul(10);
            let mut claimed: Vec<(StreamId, u64)> = Vec::new();
            let mut entries = Vec::new();
            let mut deleted = Vec::new();
            let mut pel = g.pending.range(*start..);
            let mut next = StreamId::ZERO;
            loop {
                if attempts == 0 || left == 0 {
                    next = pel.next().map_or(StreamId::ZERO, |(id, _)| *id);
                    break;
                }
                attempts -= 1;
                let Some((id, p)) = pel.next() else { break };
                let Some(v) = entry.live_version(*id, visible) else {
                    deleted.push(*id);
                    left -= 1;
                    continue;
                };
                if *min_idle_ms > 0 && now_ms.saturating_sub(p.delivery_ms) < *min_idle_ms {
                    continue;
                }
                let n = if *just_id {
                    p.delivery_count
                } else {
                    p.delivery_count.saturating_add(1)
                };
                claimed.push((*id, n));
                entries.push((*id, (!just_id).then_some(entry.lsns[v])));
                left -= 1;
            }
            let mut edits = Vec::new();
            if !deleted.is_empty() {
                edits.push(GroupEdit::Ack {
                    ids: deleted.clone(),
                });
            }
            if !claimed.is_empty() {
                edits.push(consumer_edit(consumer, true));
                edits.push(GroupEdit::Pend {
                    consumer: consumer.clone(),
                    delivery_ms: now_ms,
                    entries: claimed,
                });
            }
            Ok(Resolved {
                edits,
                done: GroupDone::AutoClaimed {
                    next,
                    entries,
                    deleted,
                },
            })
        }
    }
}

impl<S: Storage + 'static> Partition<S> {
    /// One attempt to place a group command in the journal's open frame, in one synchronous
    /// step (in the caller's turn): resolved against the index, journaled, applied.
    pub(super) fn place_group(
        &self,
        stream: &str,
        request: &GroupRequest,
        now_ms: u64,
    ) -> Result<GroupPlaced, StreamError> {
        let resolved = {
            let st = self.state.borrow();
            let entry = st.streams.get(stream);
            if let Some(kind) = entry
                .map(|e| e.meta.kind)
                .filter(|k| *k != super::StreamKind::Stream)
            {
                return Err(StreamError::WrongType {
                    stream: stream.to_string(),
                    kind,
                });
            }
            let visible = entry.map_or(0, |e| e.visible_below(st.published_lsn));
            let max = self.limits.max_group_entries;
            // Room for the pending entries a read adds, after its consumer and group.
            let room = max.saturating_sub(st.group_entries);
            let max_count = self.limits.max_read_count;
            resolve(entry, visible, request, now_ms, room, max, max_count)?
        };
        if resolved.edits.is_empty() {
            return Ok(GroupPlaced::Nothing(resolved.done));
        }
        let change = GroupChange {
            group: request.group().to_vec(),
            edits: resolved.edits,
        };
        if !change.names_fit() {
            return Err(StreamError::Group(GroupError::NameTooLong));
        }
        {
            let st = self.state.borrow();
            let max = self.limits.max_group_entries;
            let growth = st.streams.get(stream).map_or_else(
                || StreamGroups::default().growth(&change),
                |e| e.groups.growth(&change),
            );
            if growth > max.saturating_sub(st.group_entries) {
                return Err(StreamError::Group(GroupError::Full { max }));
            }
        }
        let data = change.encode();
        match self.journal_change(stream, &data)? {
            Some(pending) => {
                let mut st = self.state.borrow_mut();
                let destroyed = change.edits.contains(&GroupEdit::Destroy);
                let entry = st.streams.entry_or_default(stream);
                let delta = entry.groups.apply(&change);
                st.group_entries = st.group_entries.saturating_add_signed(delta);
                if destroyed {
                    // Blocked readers of the group learn that it is gone.
                    st.waiters.changed(stream);
                }
                Ok(GroupPlaced::Pending(pending, resolved.done))
            }
            None => Ok(GroupPlaced::NoRoom(data)),
        }
    }

    /// The stream's groups as they are now (placed changes included), with its counters
    /// over its visible versions; `None` for no stream. Read-only: XPENDING, XINFO.
    pub fn groups_of<T>(
        &self,
        stream: &str,
        f: impl FnOnce(&StreamGroups, &StreamCounters) -> T,
    ) -> Option<T> {
        let st = self.state.borrow();
        let entry = st.streams.get(stream)?;
        let visible = entry.visible_below(st.published_lsn);
        if visible == 0 && !entry.groups.created {
            return None;
        }
        Some(f(&entry.groups, &entry.counters(visible)))
    }
}
