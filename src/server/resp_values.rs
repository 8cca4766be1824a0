//! The RESP port's strings and sets: GET, SMEMBERS, SCARD and SISMEMBER (SET and SADD are
//! writes: [`super::resp_writes`]), on streams that are Redis strings and sets.
//!
//! A string is a stream of `$set` events (`crate::stream::SET_TYPE`): its value is the
//! newest one's data. SET deletes the key and appends one in one transaction, so a string
//! written by the RESP port holds one event. A set is a stream of `$sadd` events
//! (`crate::stream::SADD_TYPE`): its members are the distinct data of its live events
//! (`crate::stream::Partition::set_members`). Both are journaled, acknowledged once
//! durable, deleted and recovered as any stream is; the partition keeps each kind apart
//! (`crate::stream::StreamKind`): an append of another kind's events is refused
//! (WRONGTYPE), and so are the stream and list commands on them, and these commands on the
//! other kinds.
//!
//! A set is read whole (SMEMBERS, SCARD, SISMEMBER alike), so the sets served are bounded
//! (`crate::stream::MAX_SET_MEMBERS` members, `SET_READ_READS` × `max_read_bytes` bytes),
//! and so is SMEMBERS's reply.

use std::rc::Rc;

use super::api_error::ApiError;
use super::resp_commands::wrong_arity;
use super::resp_conn::RespRequest;
use super::resp_streams::{call, stream_name, RespOp, RespOutcome, WRONGTYPE};
use super::route::{OpResult, Shard};
use crate::protocol::{code, StreamId};
use crate::stream::{Partition, StreamKind};

/// What the owner of a string's or set's partition does for a command.
#[derive(Debug)]
pub enum ValueOp {
    /// GET: the string's value.
    Get { stream: String },
    /// SMEMBERS: the set's members.
    Members { stream: String },
    /// SCARD: how many members.
    Card { stream: String },
    /// SISMEMBER: whether `member` is one.
    IsMember { stream: String, member: Vec<u8> },
}

/// Runs GET, SMEMBERS, SCARD or SISMEMBER.
pub(super) async fn run(shard: &Rc<Shard>, req: &RespRequest, name: &[u8]) -> Result<(), String> {
    let args = &req.args;
    let stream = |i: usize| stream_name(req.ctx, &args[i]);
    let op = match name {
        b"GET" if args.len() == 2 => ValueOp::Get { stream: stream(1)? },
        b"SMEMBERS" if args.len() == 2 => ValueOp::Members { stream: stream(1)? },
        b"SCARD" if args.len() == 2 => ValueOp::Card { stream: stream(1)? },
        b"SISMEMBER" if args.len() == 3 => ValueOp::IsMember {
            stream: stream(1)?,
            member: args[2].clone(),
        },
        _ => return Err(wrong_arity(&name.to_ascii_lowercase())),
    };
    let key = match &op {
        ValueOp::Get { stream }
        | ValueOp::Members { stream }
        | ValueOp::Card { stream }
        | ValueOp::IsMember { stream, .. } => stream.clone(),
    };
    match call(shard, &key, RespOp::Value(op)).await? {
        RespOutcome::Value(v) => req.answer(|r| match v {
            Some(v) => {
                r.bulk(&v);
            }
            None => {
                r.null();
            }
        }),
        RespOutcome::Len(n) => req.answer(|r| {
            r.int(n as i64);
        }),
        RespOutcome::Members(members) => req.answer(|r| {
            r.set_len(members.len());
            for m in &members {
                r.bulk(m);
            }
        }),
        other => return Err(format!("internal error: unexpected reply {other:?}")),
    }
    Ok(())
}

/// Runs a string or set command on the partition's owner.
pub(super) async fn run_op(p: &Partition, op: ValueOp) -> OpResult {
    let wrong_type = || OpResult::Err(ApiError::new(code::INVALID_ARGUMENT, WRONGTYPE));
    let outcome = match op {
        ValueOp::Get { stream } => match p.stream_kind(&stream) {
            None => RespOutcome::Value(None),
            Some(StreamKind::String) => {
                let all = (StreamId::ZERO, StreamId::MAX);
                match Box::pin(p.range(&stream, all.0, all.1, 1, true)).await {
                    Ok((newest, _)) => {
                        RespOutcome::Value(newest.into_iter().next().map(|(_, e)| e.event.data))
                    }
                    Err(crate::stream::StreamError::StreamNotFound(_)) => RespOutcome::Value(None),
                    Err(e) => return OpResult::Err(e.into()),
                }
            }
            Some(_) => return wrong_type(),
        },
        ValueOp::Members { stream }
        | ValueOp::Card { stream }
        | ValueOp::IsMember { stream, .. }
            if p.stream_kind(&stream).is_some_and(|k| k != StreamKind::Set) =>
        {
            return wrong_type()
        }
        ValueOp::Members { stream } => match Box::pin(p.set_members(&stream)).await {
            Ok(set) => RespOutcome::Members(set.ordered),
            Err(e) => return OpResult::Err(e.into()),
        },
        ValueOp::Card { stream } => match Box::pin(p.set_members(&stream)).await {
            Ok(set) => RespOutcome::Len(set.ordered.len() as u64),
            Err(e) => return OpResult::Err(e.into()),
        },
        ValueOp::IsMember { stream, member } => match Box::pin(p.set_members(&stream)).await {
            Ok(set) => RespOutcome::Len(u64::from(set.index.contains(&member))),
            Err(e) => return OpResult::Err(e.into()),
        },
    };
    OpResult::Resp(outcome)
}
