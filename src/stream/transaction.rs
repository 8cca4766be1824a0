//! Transactions: writes to one partition — appends and stream changes — placed in one turn
//! and in one synchronous step while the journal holds its open frame open
//! (`Journal::hold_seal`: an idle journal would otherwise seal the frame at the first
//! placement), so no other write falls between them and they share that frame: they become
//! durable together (a crash keeps all or none of them) and are published together (a
//! reader woken by the first sees them all).
//!
//! The exception, stated where the RESP port documents MULTI: writes that do not fit in the
//! frame's room wait for room, so they span frames in a row — still in one turn, in order,
//! with nothing between them, but each frame durable on its own.
//!
//! A set's additions ([`TxWrite::AddMembers`]) append only the members the set lacks at
//! that point of the transaction. Before the frame is held, in the transaction's turn (so no
//! other write is placed meanwhile), each such set is read whole once its placed versions
//! are visible (`Partition::set_members`); the writes before an addition in the transaction
//! are then followed: a deletion of the stream (DEL, SET, FLUSHDB) empties what it holds,
//! an addition adds its members. A set's addition thus waits for the set's earlier writes
//! to be durable, and reads the set, while it holds the partition's turn.
//!
//! Each write succeeds or fails on its own (a wrong expected version fails that append only,
//! as a command inside Redis's EXEC fails alone); a journal error fails every write not yet
//! durable.

use std::collections::HashMap;

use super::change::{in_database, ChangeRequest, SADD_TYPE};
use super::group_ops::{GroupDone, GroupError, GroupPlaced, GroupRequest};
use super::partition::{
    change_record, check_append, event_records, now_ns, ChangePlaced, Durable, IdSpec, Placed,
};
use super::sets::SetMembers;
use super::{Partition, StreamError, StreamKind};
use crate::journal::{PendingAppend, Storage};
use crate::protocol::{expected, AppendResult, Event, StreamId};

/// One write of a transaction.
#[derive(Clone, Debug)]
pub enum TxWrite {
    /// An append of events without event ids (a transaction's appends are not retried).
    Append {
        stream: String,
        expected_version: i64,
        events: Vec<Event>,
        id: IdSpec,
    },
    Change {
        stream: String,
        request: ChangeRequest,
    },
    /// A consumer-group command ([`super::group_ops`]).
    Group {
        stream: String,
        request: GroupRequest,
    },
    /// SADD: an append of a `$sadd` event for each of `members` (distinct) the set lacks
    /// (module docs); `TxDone::Changed(0)` when it lacks none.
    AddMembers {
        stream: String,
        members: Vec<Vec<u8>>,
    },
}

impl TxWrite {
    /// The stream whose partition runs the write (a database's prefix for a database
    /// deletion).
    pub fn stream(&self) -> &str {
        match self {
            TxWrite::Append { stream, .. }
            | TxWrite::Change { stream, .. }
            | TxWrite::Group { stream, .. }
            | TxWrite::AddMembers { stream, .. } => stream,
        }
    }
}

/// What a write of a transaction did.
#[derive(Debug)]
pub enum TxDone {
    /// The append, its events' stream IDs, and the stream's entries not deleted once it was
    /// placed (what LPUSH replies).
    Appended {
        result: AppendResult,
        ids: Vec<StreamId>,
        live: u64,
    },
    /// What the change deleted (1 for an XSETID; 0: nothing was done, as for an
    /// [`TxWrite::AddMembers`] of members all present).
    Changed(u64),
    /// What the group command did.
    Group(GroupDone),
}

/// A set read that failed: its error for the first addition to the set, then the same kind
/// of error for any later one of the transaction (a stream error is not `Clone`).
struct FailedRead {
    first: Option<StreamError>,
}

impl FailedRead {
    fn new(e: StreamError) -> FailedRead {
        FailedRead { first: Some(e) }
    }

    fn again(&mut self) -> StreamError {
        match self.first.take() {
            Some(e) => {
                let repeat = match &e {
                    &StreamError::SetTooLarge {
                        max_members,
                        max_bytes,
                    } => StreamError::SetTooLarge {
                        max_members,
                        max_bytes,
                    },
                    _ => StreamError::Unreadable(0),
                };
                self.first = Some(repeat);
                e
            }
            None => StreamError::Unreadable(0),
        }
    }
}

/// A write durable, to publish.
enum Durable2 {
    Append {
        first_lsn: u64,
        stream: String,
        first_version: u64,
        events: Vec<Event>,
        ids: Vec<StreamId>,
        live: u64,
    },
    Change {
        first_lsn: u64,
        stream: String,
        deleted: u64,
    },
    Group {
        first_lsn: u64,
        stream: String,
        done: GroupDone,
    },
    Done(Result<TxDone, StreamError>),
}

/// A write placed, waiting to be durable.
enum Step {
    Append {
        pending: PendingAppend,
        stream: String,
        first_version: u64,
        events: Vec<Event>,
        ids: Vec<StreamId>,
        live: u64,
    },
    Change {
        pending: PendingAppend,
        stream: String,
        deleted: u64,
    },
    Group {
        pending: PendingAppend,
        stream: String,
        done: GroupDone,
    },
    Done(Result<TxDone, StreamError>),
}

impl<S: Storage + 'static> Partition<S> {
    /// Runs `writes` as one transaction (module docs): one result per write, in order.
    pub async fn transaction(&self, writes: Vec<TxWrite>) -> Vec<Result<TxDone, StreamError>> {
        let turn = self.take_turn().await;
        self.transaction_in(turn, writes).await
    }

    /// [`Partition::transaction`] of writes that make `stream` anew (RESTORE), with the
    /// check in the same turn: when the stream is in the index (any kind, visible or only
    /// placed), `None` without `replace`, else it is deleted first — so no write to it falls
    /// between the check and the writes.
    pub async fn transaction_replacing(
        &self,
        stream: &str,
        replace: bool,
        mut writes: Vec<TxWrite>,
    ) -> Option<Vec<Result<TxDone, StreamError>>> {
        let turn = self.take_turn().await;
        if self.state.borrow().streams.contains_key(stream) {
            if !replace {
                return None;
            }
            writes.insert(
                0,
                TxWrite::Change {
                    stream: stream.to_string(),
                    request: ChangeRequest::DeleteStream,
                },
            );
        }
        Some(self.transaction_in(turn, writes).await)
    }

    /// [`Partition::transaction`] in a turn already taken.
    async fn transaction_in(
        &self,
        turn: super::turns::Turn<'_, S>,
        writes: Vec<TxWrite>,
    ) -> Vec<Result<TxDone, StreamError>> {
        let now = now_ns();
        // The sets added to, read before the frame is held (module docs).
        let mut sets = HashMap::new();
        for w in &writes {
            if let TxWrite::AddMembers { stream, .. } = w {
                if !sets.contains_key(stream) {
                    let read = self.read_set(stream).await.map_err(FailedRead::new);
                    sets.insert(stream.clone(), read);
                }
            }
        }
        // The frame stays open until every write is placed (module docs).
        let hold = self.journal.hold_seal();
        let mut steps = Vec::with_capacity(writes.len());
        for write in writes {
            // What a deletion deletes, a later addition finds absent.
            if let TxWrite::Change { stream, request } = &write {
                match request {
                    ChangeRequest::DeleteStream => {
                        if let Some(set) = sets.get_mut(stream) {
                            *set = Ok(SetMembers::default());
                        }
                    }
                    ChangeRequest::DeleteDatabase => {
                        for (name, set) in sets.iter_mut() {
                            if in_database(name, stream) {
                                *set = Ok(SetMembers::default());
                            }
                        }
                    }
                    _ => {}
                }
            }
            let step = match write {
                TxWrite::AddMembers { stream, members } => {
                    let set = sets.get_mut(&stream).expect("every set added to was read");
                    let set = match set {
                        Ok(set) => set,
                        Err(failed) => {
                            steps.push(Step::Done(Err(failed.again())));
                            continue;
                        }
                    };
                    let new: Vec<Event> = members
                        .into_iter()
                        .filter(|m| !set.index.contains(m))
                        .map(|data| Event {
                            id: [0; 16],
                            event_type: SADD_TYPE.to_string(),
                            timestamp_ns: now,
                            value: f64::NAN,
                            data,
                            metadata: Vec::new(),
                        })
                        .collect();
                    if new.is_empty() {
                        steps.push(Step::Done(Ok(TxDone::Changed(0))));
                        continue;
                    }
                    let step = self
                        .place_append_step(stream, expected::ANY, new, IdSpec::Auto, now)
                        .await;
                    if let Step::Append { events, .. } = &step {
                        for e in events {
                            set.insert(&e.data);
                        }
                    }
                    step
                }
                TxWrite::Append {
                    stream,
                    expected_version,
                    mut events,
                    id,
                } => {
                    assert!(
                        events.iter().all(|e| e.id == [0; 16]),
                        "a transaction's appends carry no event ids"
                    );
                    if let Err(e) = check_append(&stream, expected_version, &events) {
                        steps.push(Step::Done(Err(e)));
                        continue;
                    }
                    for e in &mut events {
                        if e.timestamp_ns == 0 {
                            e.timestamp_ns = now;
                        }
                    }
                    self.place_append_step(stream, expected_version, events, id, now)
                        .await
                }
                TxWrite::Change { stream, request } => {
                    self.place_change_step(stream, request).await
                }
                TxWrite::Group { stream, request } => {
                    self.place_group_step(stream, request, now / 1_000_000)
                        .await
                }
            };
            steps.push(step);
        }
        drop(hold);
        drop(turn);
        // Durable: every write's frame (one, unless the writes outgrew it) ...
        let mut durable = Vec::with_capacity(steps.len());
        for step in steps {
            durable.push(match step {
                Step::Done(result) => Durable2::Done(result),
                Step::Append {
                    pending,
                    stream,
                    first_version,
                    events,
                    ids,
                    live,
                } => match self.await_durable(pending).await {
                    Ok(a) => Durable2::Append {
                        first_lsn: a.first_lsn,
                        stream,
                        first_version,
                        events,
                        ids,
                        live,
                    },
                    Err(e) => Durable2::Done(Err(e)),
                },
                Step::Change {
                    pending,
                    stream,
                    deleted,
                } => match self.await_durable(pending).await {
                    Ok(a) => Durable2::Change {
                        first_lsn: a.first_lsn,
                        stream,
                        deleted,
                    },
                    Err(e) => Durable2::Done(Err(e)),
                },
                Step::Group {
                    pending,
                    stream,
                    done,
                } => match self.await_durable(pending).await {
                    Ok(a) => Durable2::Group {
                        first_lsn: a.first_lsn,
                        stream,
                        done,
                    },
                    Err(e) => Durable2::Done(Err(e)),
                },
            });
        }
        // ... then published in one synchronous step.
        durable
            .into_iter()
            .map(|d| match d {
                Durable2::Done(result) => result,
                Durable2::Append {
                    first_lsn,
                    stream,
                    first_version,
                    events,
                    ids,
                    live,
                } => {
                    let n = events.len() as u64;
                    self.count_appended(&events, now);
                    self.publish(
                        first_lsn,
                        Durable {
                            stream,
                            first_version,
                            events,
                            change: false,
                        },
                    );
                    Ok(TxDone::Appended {
                        result: AppendResult {
                            first_version,
                            last_version: first_version + n - 1,
                            partition: self.id,
                            lsn: first_lsn,
                        },
                        ids,
                        live,
                    })
                }
                Durable2::Change {
                    first_lsn,
                    stream,
                    deleted,
                } => {
                    self.publish(first_lsn, Durable::change(&stream));
                    Ok(TxDone::Changed(deleted))
                }
                Durable2::Group {
                    first_lsn,
                    stream,
                    done,
                } => {
                    self.publish(first_lsn, Durable::change(&stream));
                    Ok(TxDone::Group(done))
                }
            })
            .collect()
    }

    /// The members of `stream` for an addition: none unless it is a set, which is read whole
    /// once its placed versions are visible (module docs).
    async fn read_set(&self, stream: &str) -> Result<SetMembers, StreamError> {
        match self.placed_kind(stream) {
            Some((StreamKind::Set, Some(last_lsn))) => {
                self.await_published(last_lsn).await?;
                self.set_members(stream).await
            }
            _ => Ok(SetMembers::default()),
        }
    }

    /// Places one append of a transaction (waiting for room only when the journal has none).
    async fn place_append_step(
        &self,
        stream: String,
        expected_version: i64,
        events: Vec<Event>,
        id: IdSpec,
        now_ns: u64,
    ) -> Step {
        loop {
            match self.place(&stream, expected_version, &events, id, now_ns) {
                Err(e) => return Step::Done(Err(e)),
                Ok(Placed::Retry(_)) => unreachable!("events without ids are never a retry"),
                Ok(Placed::Pending(pending, first_version, _)) => {
                    let (ids, live) = {
                        let st = self.state.borrow();
                        let entry = st.streams.get(&stream).expect("placed: the stream exists");
                        let first = first_version as usize;
                        (
                            entry.ids[first..first + events.len()].to_vec(),
                            entry.live(),
                        )
                    };
                    return Step::Append {
                        pending,
                        stream,
                        first_version,
                        events,
                        ids,
                        live,
                    };
                }
                Ok(Placed::NoRoom) => {
                    let records = event_records(&stream, 0, None, &events);
                    if let Err(e) = Box::pin(self.journal.wait_for_room(&records)).await {
                        return Step::Done(Err(e.into()));
                    }
                }
            }
        }
    }

    /// Places one change of a transaction (waiting for room only when the journal has none).
    async fn place_change_step(&self, stream: String, request: ChangeRequest) -> Step {
        loop {
            match self.place_change(&stream, &request) {
                Err(e) => return Step::Done(Err(e)),
                Ok(ChangePlaced::Nothing) => return Step::Done(Ok(TxDone::Changed(0))),
                Ok(ChangePlaced::Pending(pending, deleted)) => {
                    return Step::Change {
                        pending,
                        stream,
                        deleted,
                    }
                }
                Ok(ChangePlaced::NoRoom(data)) => {
                    let record = change_record(&stream, &data);
                    let waited =
                        Box::pin(self.journal.wait_for_room(std::slice::from_ref(&record))).await;
                    if let Err(e) = waited {
                        return Step::Done(Err(e.into()));
                    }
                }
            }
        }
    }

    /// Places one group command of a transaction (waiting for room only when the journal
    /// has none).
    async fn place_group_step(&self, stream: String, request: GroupRequest, now_ms: u64) -> Step {
        loop {
            match self.place_group(&stream, &request, now_ms) {
                Err(e) => return Step::Done(Err(e)),
                Ok(GroupPlaced::Nothing(done)) => return Step::Done(Ok(TxDone::Group(done))),
                Ok(GroupPlaced::Pending(pending, done)) => {
                    return Step::Group {
                        pending,
                        stream,
                        done,
                    }
                }
                Ok(GroupPlaced::NoRoom(data)) => {
                    let record = change_record(&stream, &data);
                    let waited =
                        Box::pin(self.journal.wait_for_room(std::slice::from_ref(&record))).await;
                    if let Err(e) = waited {
                        return Step::Done(Err(e.into()));
                    }
                }
            }
        }
    }

    /// Renames stream `src` to `dst` (Redis's RENAME), replacing whatever `dst` holds: in
    /// one turn, `src`'s live entries are read and written again to `dst` with their IDs,
    /// with its last ID, entries-added and largest deleted ID and its consumer groups, and
    /// `src` is deleted — one transaction, so durable together. Refused for a stream with
    /// more than `budget` bytes of entries (a rename copies them). `NoStream` for no `src`.
    pub async fn rename(&self, src: &str, dst: &str, budget: usize) -> Result<(), StreamError> {
        let turn = self.take_turn().await;
        let (lsns, ids, counters, groups, dst_exists) = {
            let st = self.state.borrow();
            let Some(e) = st.streams.get(src) else {
                return Err(StreamError::Group(GroupError::NoStream));
            };
            let visible = e.visible_below(st.published_lsn);
            if visible == 0 && !e.groups.created {
                return Err(StreamError::Group(GroupError::NoStream));
            }
            let live: Vec<usize> = (e.deleted.trimmed as usize..visible)
                .filter(|&v| !e.deleted.contains(v as u64))
                .collect();
            (
                live.iter().map(|&v| e.lsns[v]).collect::<Vec<u64>>(),
                live.iter().map(|&v| e.ids[v]).collect::<Vec<StreamId>>(),
                e.counters(visible),
                e.groups.clone(),
                st.streams.contains_key(dst),
            )
        };
        if src == dst {
            return Ok(());
        }
        let (events, cut) = self.fetch_budget(&lsns, budget).await?;
        if cut {
            return Err(StreamError::ReplyTooLarge { budget });
        }
        let mut writes = Vec::with_capacity(events.len() + groups.groups.len() + 3);
        if dst_exists {
            writes.push(TxWrite::Change {
                stream: dst.to_string(),
                request: ChangeRequest::DeleteStream,
            });
        }
        for (group, change) in super::groups::rebuild_edits(&groups) {
            writes.push(TxWrite::Group {
                stream: dst.to_string(),
                request: GroupRequest::Set {
                    group,
                    edits: change,
                },
            });
        }
        for (id, e) in ids.iter().zip(events) {
            let mut event = e.event;
            event.id = [0; 16];
            writes.push(TxWrite::Append {
                stream: dst.to_string(),
                expected_version: crate::protocol::expected::ANY,
                events: vec![event],
                id: IdSpec::Exact(*id),
            });
        }
        writes.push(TxWrite::Change {
            stream: dst.to_string(),
            request: ChangeRequest::SetId {
                last: counters.last_id,
                entries_added: Some(counters.entries_added),
                max_deleted: counters.max_deleted_id,
            },
        });
        writes.push(TxWrite::Change {
            stream: src.to_string(),
            request: ChangeRequest::DeleteStream,
        });
        for r in self.transaction_in(turn, writes).await {
            r?;
        }
        Ok(())
    }
}
