//! Appends answered without a task: a native APPEND, or an XADD without trimming outside a
//! transaction, whose partition is on this shard, whose turn is free and whose journal has
//! room is placed as the connection loop reads it
//! ([`Partition::try_append_now`]); the connection goes on reading while the append waits
//! in its partition's queue of placed appends for its frame. One completer task per
//! partition, alive while the queue holds any, finishes them in placing order as their
//! frames settle ([`Partition::finish_append`]: counted, published, answered) — the work an
//! append's own task did after its wait, without a task (and its allocation, scheduling and
//! wake-ups) per request.
//!
//! Invariants:
//! - the queue is in placing order, which is LSN order within the partition; the journal
//!   releases durable frames in LSN order, so while the front's frame has not settled no
//!   later one is durable, and the completer waits for the front alone (when the journal
//!   fails, a later frame may fail before the front: its answer waits for the front's);
//! - an append is answered once, after its frame settled: durable, or the journal failed
//!   and it gets the error an append's task would have;
//! - the request's in-flight permits stay with it in the queue until it is answered, so the
//!   connection's limits (and the wait for replies at a server stop) count it as before;
//! - anything that would wait before placing — another append's turn, no room, a retry,
//!   a stopping server, a partition on another shard — goes to a task as before.
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::atomic::Ordering;

use super::conn::{ConnOut, LazyClock, Permits};
use super::resp_conn::RespRequest;
use super::route::{error_response, Shard};
use crate::protocol::{partition_of, AppendResult, Event, Response, StreamId};
use crate::stream::{AppendNow, IdSpec, Partition, PlacedAppend, StreamError};

/// Each local partition's queue of placed appends (created at its first).
#[derive(Default)]
pub(super) struct PlacedQueues(RefCell<HashMap<u32, Rc<Queue>>>);

#[derive(Default)]
struct Queue {
    waiting: RefCell<VecDeque<Waiting>>,
    /// Its completer task runs.
    completing: Cell<bool>,
}

/// A placed append, waiting for its frame.
struct Waiting {
    placed: PlacedAppend,
    reply: Reply,
    /// Held until it is answered.
    _permits: Permits,
}

/// How a placed append is answered.
pub(super) enum Reply {
    /// A native APPEND: APPENDED or an error.
    Native { out: Rc<ConnOut>, request_id: u64 },
    /// An XADD: its entry's ID, nil (NOMKSTREAM, `make` false, and no stream) or an error.
    Resp { req: RespRequest, make: bool },
}

impl Reply {
    /// Answers with `result`; an XADD's INFO commandstats time ends at `clock`.
    fn send(
        self,
        result: Result<(AppendResult, Option<StreamId>), StreamError>,
        clock: &LazyClock,
    ) {
        match self {
            Reply::Native { out, request_id } => {
                let resp = match result {
                    Ok((appended, _)) => Response::Appended(appended),
                    Err(e) => error_response(e.into()),
                };
                super::native::send_reply(&out, request_id, &resp);
            }
            Reply::Resp { req, make } => {
                req.end_at(clock.now());
                let added = match result {
                    Ok((_, first_id)) => Ok(first_id.expect("a placed XADD has its ID")),
                    Err(e) => Err(super::resp_writes::write_error(e)),
                };
                super::resp_writes::answer_added(&req, make, added);
            }
        }
    }
}

/// An append [`Shard::append_now`] did not place: what it was given back.
pub(super) struct NotNow {
    pub(super) reply: Reply,
    pub(super) stream: String,
    pub(super) events: Vec<Event>,
    pub(super) permits: Permits,
}

impl Shard {
    /// An append answered through `reply` without a task when it can be (see the module
    /// docs); otherwise given back, with its permits, for a task.
    pub(super) fn append_now(
        self: &Rc<Self>,
        reply: Reply,
        stream: String,
        expected_version: i64,
        events: Vec<Event>,
        id: IdSpec,
        permits: Permits,
    ) -> Option<NotNow> {
        let p = partition_of(&stream, self.shared.partitions);
        let part = match self.partitions.get(&p) {
            Some(part) if !self.shared.stop.load(Ordering::Acquire) => part.clone(),
            _ => {
                return Some(NotNow {
                    reply,
                    stream,
                    events,
                    permits,
                })
            }
        };
        match part.try_append_now(stream, expected_version, events, id) {
            AppendNow::Later { stream, events } => Some(NotNow {
                reply,
                stream,
                events,
                permits,
            }),
            AppendNow::Failed(e) => {
                reply.send(Err(e), &LazyClock::default());
                None
            }
            AppendNow::Placed(placed) => {
                let queue = self.placed.0.borrow_mut().entry(p).or_default().clone();
                queue.waiting.borrow_mut().push_back(Waiting {
                    placed,
                    reply,
                    _permits: permits,
                });
                if !queue.completing.replace(true) {
                    glommio::spawn_local(complete(part, queue)).detach();
                }
                None
            }
        }
    }
}

/// The completer of a partition's queue: answers its appends as their frames settle, in
/// order, and ends when the queue is empty.
async fn complete(part: Rc<Partition>, queue: Rc<Queue>) {
    loop {
        let front = queue.waiting.borrow().front().map(|w| w.placed.settled());
        let Some(settled) = front else {
            queue.completing.set(false);
            return;
        };
        settled.await;
        // The appends answered now share one reading of the clock, and report to the
        // metrics once.
        let clock = LazyClock::default();
        let _metrics = part.defer_metrics();
        loop {
            let next = {
                let mut waiting = queue.waiting.borrow_mut();
                match waiting.front() {
                    Some(w) if w.placed.is_settled() => waiting.pop_front(),
                    _ => None,
                }
            };
            let Some(w) = next else { break };
            w.reply.send(part.finish_append(w.placed), &clock);
        }
    }
}
