//! Consumer groups on the native protocol (requests 0x40–0x49, docs/PROTOCOL.md,
//! *Consumer groups*). A request becomes the RESP port's [`GroupOp`] and runs on the
//! stream's partition owner through the same code (`resp_groups::run_op`: a state change
//! as one `TxWrite::Group` transaction, answered once durable, its entries then fetched by
//! LSN; GROUP_PENDING and GROUP_INFO as read-only views of the group state). Only the
//! translation of arguments, answers and errors lives here: a group made through either
//! protocol is the same state, used through the other.
//!
//! A GROUP_READ of new entries with `block_ms` that finds none waits as XREADGROUP's BLOCK
//! does (`resp_read::group_wait`: one wait at the partition, read as the group when woken).

use std::rc::Rc;

use super::api_error::ApiError;
use super::resp_groups::{
    ConsumerInfo as ViewConsumer, EntryForm, GroupAnswer, GroupInfo, GroupItem, GroupOp, InfoWhat,
    Items, PendingAnswer, PendingQuery,
};
use super::resp_read::{group_wait, GroupRead};
use super::resp_streams::{RespOp, RespOutcome, WRONGTYPE};
use super::route::{error_response, unexpected, OpResult, PartOp, Shard};
use crate::protocol::{
    code, partition_of, ClaimAt, ConsumerGroupInfo, ConsumerInfo, ConsumerOp, EntryEvent,
    GroupCommand, GroupEntry, GroupStart, PendingEntry, PendingReply, Response,
};
use crate::stream::{self, ClaimTime, GroupError, GroupRequest, StreamError};

/// The group layer's start for the wire's.
fn start(s: GroupStart) -> stream::GroupStart {
    match s {
        GroupStart::Id(id) => stream::GroupStart::Id(id),
        GroupStart::Last => stream::GroupStart::Last,
    }
}

/// The owner's operation for a native group command, or why the arguments are refused.
fn group_op(stream: &str, command: GroupCommand) -> Result<GroupOp, ApiError> {
    let write = |request| GroupOp::Write {
        stream: stream.to_string(),
        request,
        form: EntryForm::Events,
    };
    Ok(match command {
        GroupCommand::Create {
            group,
            start: s,
            mkstream,
            entries_read,
        } => write(GroupRequest::Create {
            group,
            start: start(s),
            mkstream,
            entries_read,
        }),
        GroupCommand::Destroy { group } => write(GroupRequest::Destroy { group }),
        GroupCommand::SetId {
            group,
            start: s,
            entries_read,
        } => write(GroupRequest::SetId {
            group,
            start: start(s),
            entries_read,
        }),
        GroupCommand::Consumer {
            group,
            consumer,
            op: ConsumerOp::Create,
        } => write(GroupRequest::CreateConsumer { group, consumer }),
        GroupCommand::Consumer {
            group,
            consumer,
            op: ConsumerOp::Delete,
        } => write(GroupRequest::DeleteConsumer { group, consumer }),
        GroupCommand::Read {
            group,
            consumer,
            after,
            count,
            noack,
            ..
        } => write(GroupRequest::Read {
            group,
            consumer,
            after,
            // 0: as many as one read serves (the partition's max_read_count).
            count: if count == 0 {
                usize::MAX
            } else {
                count as usize
            },
            noack,
        }),
        GroupCommand::Ack { group, ids } => write(GroupRequest::Ack { group, ids }),
        GroupCommand::Pending { group, range } => GroupOp::Pending {
            stream: stream.to_string(),
            group,
            query: range.map(|r| PendingQuery {
                min_idle_ms: r.min_idle_ms,
                start: r.start,
                end: r.end,
                count: r.count as usize,
                consumer: r.consumer,
            }),
        },
        GroupCommand::Claim(c) => write(GroupRequest::Claim {
            group: c.group,
            consumer: c.consumer,
            min_idle_ms: c.min_idle_ms,
            ids: c.ids,
            time: match c.at {
                ClaimAt::Now => None,
                ClaimAt::IdleMs(ms) => Some(ClaimTime::Idle(ms)),
                ClaimAt::UnixMs(ms) => Some(ClaimTime::At(ms)),
            },
            retry_count: c.retry_count,
            force: c.force,
            just_id: c.just_id,
            last_id: c.last_id,
        }),
        GroupCommand::AutoClaim {
            group,
            consumer,
            min_idle_ms,
            start,
            count,
            just_id,
        } => {
            if count == 0 {
                return Err(ApiError::new(
                    code::INVALID_ARGUMENT,
                    "GROUP_AUTOCLAIM count is 0: ask for at least 1 entry",
                ));
            }
            write(GroupRequest::AutoClaim {
                group,
                consumer,
                min_idle_ms,
                start,
                count: count as usize,
                just_id,
            })
        }
        GroupCommand::Info => GroupOp::Info {
            stream: stream.to_string(),
            what: InfoWhat::Groups { full: None },
        },
    })
}

/// A refusal of the group state as a native error: its code and what to do.
pub(super) fn group_error(stream: &str, group: &[u8], e: &GroupError) -> ApiError {
    let group = String::from_utf8_lossy(group);
    match e {
        GroupError::NameTooLong => ApiError::new(code::INVALID_ARGUMENT, e.to_string()),
        GroupError::NoStream => ApiError::new(
            code::STREAM_NOT_FOUND,
            format!(
                "stream {stream:?} not found: it has no events; append to it first, or create \
                 the group with mkstream"
            ),
        ),
        GroupError::NoGroup => ApiError::new(
            code::NO_GROUP,
            format!(
                "no consumer group {group:?} on stream {stream:?}: create it with GROUP_CREATE \
                 (evring group create {stream} {group}); names are case-sensitive"
            ),
        ),
        GroupError::GroupExists => ApiError::new(
            code::GROUP_EXISTS,
            format!(
                "consumer group {group:?} exists already on stream {stream:?}: read with it, \
                 move its start with GROUP_SETID, or GROUP_DESTROY it first"
            ),
        ),
        GroupError::Full { max } => ApiError::new(
            code::GROUPS_FULL,
            format!(
                "the partition of stream {stream:?} holds {max} consumer-group entries \
                 (pending entries, consumers and groups; max_group_entries): acknowledge \
                 entries with GROUP_ACK, read with noack, delete consumers or groups, or raise \
                 max_group_entries"
            ),
        ),
    }
}

fn entries(items: Items) -> Vec<GroupEntry> {
    items
        .list
        .into_iter()
        .map(|item| match item {
            GroupItem::Entry(id, Some(event)) => GroupEntry {
                id,
                event: EntryEvent::Event(event),
            },
            GroupItem::Entry(id, None) => GroupEntry {
                id,
                event: EntryEvent::Deleted,
            },
            GroupItem::Id(id) => GroupEntry {
                id,
                event: EntryEvent::IdOnly,
            },
            GroupItem::Fields(..) => unreachable!("a native request asks for events"),
        })
        .collect()
}

fn consumer_info(c: ViewConsumer) -> ConsumerInfo {
    ConsumerInfo {
        name: c.name,
        pending: c.pending_count,
        seen_ms: c.seen_ms,
        active_ms: c.active_ms,
    }
}

fn group_info(g: GroupInfo) -> ConsumerGroupInfo {
    ConsumerGroupInfo {
        name: g.name,
        last_delivered: g.last_id,
        entries_read: g.entries_read,
        lag: g.lag,
        pending: g.pending_count,
        consumers: g.consumers.into_iter().map(consumer_info).collect(),
    }
}

/// The reply for the owner's answer.
fn response(stream: &str, group: &[u8], answer: GroupAnswer) -> Response {
    match answer {
        GroupAnswer::Ok => Response::GroupOk,
        GroupAnswer::Count(n) => Response::GroupCount(n),
        GroupAnswer::Read { items, .. } | GroupAnswer::Claimed(items) => {
            Response::GroupEntries(entries(items))
        }
        GroupAnswer::AutoClaimed {
            next,
            items,
            deleted,
        } => Response::GroupAutoClaimed {
            next,
            entries: entries(items),
            deleted,
        },
        GroupAnswer::Pending(PendingAnswer::Summary {
            count,
            range,
            consumers,
        }) => Response::GroupPending(PendingReply::Summary {
            count,
            range,
            consumers,
        }),
        GroupAnswer::Pending(PendingAnswer::Entries(list)) => {
            Response::GroupPending(PendingReply::Entries(
                list.into_iter()
                    .map(|(id, consumer, idle_ms, deliveries)| PendingEntry {
                        id,
                        consumer,
                        idle_ms,
                        deliveries,
                    })
                    .collect(),
            ))
        }
        GroupAnswer::Groups(list) => {
            Response::GroupInfo(list.into_iter().map(group_info).collect())
        }
        GroupAnswer::Refused(e) => error_response(group_error(stream, group, &e)),
        GroupAnswer::NoKey | GroupAnswer::Gone => {
            error_response(group_error(stream, group, &GroupError::NoStream))
        }
    }
}

/// The group a command names ("" for GROUP_INFO).
fn group_of(command: &GroupCommand) -> Vec<u8> {
    match command {
        GroupCommand::Create { group, .. }
        | GroupCommand::Destroy { group }
        | GroupCommand::SetId { group, .. }
        | GroupCommand::Consumer { group, .. }
        | GroupCommand::Read { group, .. }
        | GroupCommand::Ack { group, .. }
        | GroupCommand::Pending { group, .. }
        | GroupCommand::AutoClaim { group, .. } => group.clone(),
        GroupCommand::Claim(c) => c.group.clone(),
        GroupCommand::Info => Vec::new(),
    }
}

impl Shard {
    /// A group command (0x40–0x49) at the stream's partition.
    pub(super) async fn group(self: &Rc<Self>, stream: String, command: GroupCommand) -> Response {
        if stream.is_empty() {
            return error_response(StreamError::EmptyStreamName.into());
        }
        let group = group_of(&command);
        // A read of new entries with a block waits when it finds none.
        let wait = match &command {
            GroupCommand::Read {
                consumer,
                after: None,
                count,
                noack,
                block_ms,
                ..
            } if *block_ms > 0 => Some((
                GroupRead {
                    group: group.clone(),
                    consumer: consumer.clone(),
                    noack: *noack,
                },
                if *count == 0 {
                    usize::MAX
                } else {
                    *count as usize
                },
                std::time::Duration::from_millis(u64::from(*block_ms)),
            )),
            _ => None,
        };
        let op = match group_op(&stream, command) {
            Ok(op) => op,
            Err(e) => return error_response(e),
        };
        let p = partition_of(&stream, self.shared.partitions);
        match self.call(p, PartOp::Resp(RespOp::Group(op))).await {
            OpResult::Resp(RespOutcome::Group(GroupAnswer::Read { items, .. }))
                if items.is_empty() && wait.is_some() =>
            {
                let (g, count, block) = wait.expect("checked");
                match group_wait(self, &stream, g, count, block).await {
                    Ok(entries) => Response::GroupEntries(
                        entries
                            .into_iter()
                            .map(|(id, event)| GroupEntry {
                                id,
                                event: EntryEvent::Event(event),
                            })
                            .collect(),
                    ),
                    // What a blocked XREADGROUP is told, in the native protocol's terms.
                    Err(e) if e.message.starts_with("-NOGROUP") => {
                        error_response(group_error(&stream, &group, &GroupError::NoGroup))
                    }
                    Err(e) if e.message.starts_with("-UNBLOCKED") => {
                        error_response(group_error(&stream, &group, &GroupError::NoStream))
                    }
                    Err(e) => error_response(e),
                }
            }
            OpResult::Resp(RespOutcome::Group(answer)) => response(&stream, &group, answer),
            OpResult::Err(e) if e.message == WRONGTYPE => Response::error(
                code::INVALID_ARGUMENT,
                format!(
                    "{stream:?} is a list (made with LPUSH/RPUSH on the RESP port), not a \
                     stream: consumer groups read streams"
                ),
            ),
            OpResult::Err(e) => error_response(e),
            other => unexpected(other),
        }
    }
}
