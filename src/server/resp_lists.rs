//! The RESP port's lists: LPUSH, RPUSH, LLEN and LRANGE, on streams that are Redis lists.
//!
//! A list is a stream whose events are list pushes (`crate::stream::is_list_push`): each
//! element an event of type `$lpush` or `$rpush` whose data is the element, in push order.
//! The list is those elements with every `$lpush` put at the head and every `$rpush` at the
//! tail, in the order they were pushed. A list is journaled, acknowledged once durable,
//! deleted (DEL, FLUSHDB) and recovered as any stream is; the native protocol reads its
//! events. The partition keeps the kinds apart: list pushes to a stream, or other events
//! to a list, are refused (WRONGTYPE), and the stream, string and set commands refuse a
//! list; the list commands refuse the other kinds.
//!
//! This is the part of Redis's lists that transactions and type checks need; there is no
//! LPOP, RPOP, LINSERT or blocking pop. LRANGE reads the whole list (at most
//! [`MAX_LIST_READ`] elements).

use std::collections::VecDeque;
use std::rc::Rc;

use super::api_error::ApiError;
use super::resp_commands::wrong_arity;
use super::resp_conn::RespRequest;
use super::resp_streams::{call, integer, range_all, stream_name, RespOp, RespOutcome, WRONGTYPE};
use super::route::{OpResult, Shard};
use crate::protocol::{code, StreamId};
use crate::stream::{Partition, StreamKind, LPUSH_TYPE};

/// The most elements LRANGE reads of a list: a longer list is refused with an error.
pub const MAX_LIST_READ: u64 = 1_000_000;

/// What the owner of a list's partition does for a list command.
#[derive(Debug)]
pub enum ListOp {
    Len {
        stream: String,
    },
    /// LRANGE: the whole list.
    Range {
        stream: String,
    },
}

/// Runs LLEN or LRANGE (LPUSH and RPUSH are writes: [`super::resp_writes`]).
pub(super) async fn run(shard: &Rc<Shard>, req: &RespRequest, name: &[u8]) -> Result<(), String> {
    let args = &req.args;
    let op = match name {
        b"LLEN" if args.len() == 2 => ListOp::Len {
            stream: stream_name(req.ctx, &args[1])?,
        },
        b"LRANGE" if args.len() == 4 => ListOp::Range {
            stream: stream_name(req.ctx, &args[1])?,
        },
        _ => return Err(wrong_arity(&name.to_ascii_lowercase())),
    };
    let range = match name {
        b"LRANGE" => Some((integer(&args[2])?, integer(&args[3])?)),
        _ => None,
    };
    let stream = match &op {
        ListOp::Len { stream } | ListOp::Range { stream } => stream.clone(),
    };
    match call(shard, &stream, RespOp::List(op)).await? {
        RespOutcome::Len(n) => req.answer(|r| {
            r.int(n as i64);
        }),
        RespOutcome::List(list) => {
            let (start, stop) = range.expect("LRANGE's bounds were read");
            let picked = slice(list.len(), start, stop);
            req.answer(|r| {
                r.array_len(picked.len());
                for i in picked {
                    r.bulk(&list[i]);
                }
            });
        }
        other => return Err(format!("internal error: unexpected reply {other:?}")),
    }
    Ok(())
}

/// The indexes LRANGE `start stop` names in a list of `len` (negative: from the end), as
/// Redis clamps them.
fn slice(len: usize, start: i64, stop: i64) -> std::ops::Range<usize> {
    let len = len as i64;
    let start = if start < 0 {
        (len + start).max(0)
    } else {
        start
    };
    let stop = if stop < 0 {
        len + stop
    } else {
        stop.min(len - 1)
    };
    if start > stop || start >= len {
        return 0..0;
    }
    start as usize..stop as usize + 1
}

/// Runs a list command on the partition's owner.
pub(super) async fn run_op(p: &Partition, op: ListOp) -> OpResult {
    let wrong_type = || OpResult::Err(ApiError::new(code::INVALID_ARGUMENT, WRONGTYPE));
    let outcome = match op {
        ListOp::Len { stream } => match p.stream_kind(&stream) {
            Some(k) if k != StreamKind::List => return wrong_type(),
            _ => RespOutcome::Len(p.live_entries(&stream)),
        },
        ListOp::Range { stream } => match p.stream_kind(&stream) {
            Some(StreamKind::Stream | StreamKind::String | StreamKind::Set) => return wrong_type(),
            None => RespOutcome::List(Vec::new()),
            Some(StreamKind::List) => {
                let n = p.live_entries(&stream);
                if n > MAX_LIST_READ {
                    return OpResult::Err(ApiError::new(
                        code::INVALID_ARGUMENT,
                        format!(
                            "the list has {n} elements; LRANGE reads lists of at most \
                             {MAX_LIST_READ} on this server"
                        ),
                    ));
                }
                let all = (StreamId::ZERO, StreamId::MAX);
                match Box::pin(range_all(p, &stream, all.0, all.1, n as usize, false)).await {
                    Ok(entries) => {
                        let mut list = VecDeque::with_capacity(entries.len());
                        for (_, e) in entries {
                            if e.event.event_type == LPUSH_TYPE {
                                list.push_front(e.event.data);
                            } else {
                                list.push_back(e.event.data);
                            }
                        }
                        RespOutcome::List(list.into())
                    }
                    Err(e) => return OpResult::Err(e.into()),
                }
            }
        },
    };
    OpResult::Resp(outcome)
}

#[cfg(test)]
mod tests {
    use super::slice;

    #[test]
    fn ranges_clamp_as_redis_clamps_them() {
        assert_eq!(slice(5, 0, -1), 0..5);
        assert_eq!(slice(5, 1, 2), 1..3);
        assert_eq!(slice(5, -2, -1), 3..5);
        assert_eq!(slice(5, -100, 100), 0..5);
        assert_eq!(slice(5, 3, 1), 0..0);
        assert_eq!(slice(5, 5, 10), 0..0);
        assert_eq!(slice(0, 0, -1), 0..0);
        assert_eq!(slice(5, 0, -6), 0..0);
    }
}
