//! RENAME and RESTORE on the RESP port: the keyspace writes that make a stream from another
//! one (RENAME) or from a Redis DUMP payload (RESTORE, [`crate::resp::rdb`]).
//!
//! Both are copies, as evring keeps a stream's entries in its journal under the stream's
//! name: the entries are written again under the new key with their IDs, with the stream's
//! last ID, entries-added count, largest deleted ID and consumer groups, as one partition
//! transaction (durable together; the reply waits for it). RENAME reads the source and
//! writes the copy in one turn of the partition (`Partition::rename`), so no write to the
//! source falls between; RESTORE checks that its key is free (or deletes it, with REPLACE) in
//! the turn of its writes (`Partition::transaction_replacing`), so a write racing it cannot
//! leave a half-restored stream. Both keys of a RENAME must be in one partition (a hash tag puts them
//! there), else `-CROSSSLOT`. A copy holds at most `8 × max_read_bytes` of entries, as a
//! range reply does; a larger stream is refused with what to do.

use std::rc::Rc;

use super::api_error::ApiError;
use super::resp_commands::wrong_arity;
use super::resp_conn::RespRequest;
use super::resp_streams::{
    call, encode_fields, integer, stream_name, RespOp, RespOutcome, FIELDS_TYPE, RANGE_REPLY_READS,
};
use super::route::{OpResult, Shard};
use crate::protocol::{code, expected, partition_of, Event};
use crate::resp::rdb::{decode_stream_dump, DumpedStream};
use crate::stream::{
    ChangeRequest, GroupEdit, GroupError, GroupRequest, IdSpec, Partition, StreamError, TxWrite,
};

/// What the owner does for RENAME or RESTORE.
#[derive(Debug)]
pub enum CopyOp {
    Rename {
        src: String,
        dst: String,
    },
    Restore {
        stream: String,
        replace: bool,
        writes: Vec<TxWrite>,
    },
}

/// Runs it on the owner: `RespOutcome::Len(1)` when done, `Len(0)` when RESTORE found the
/// key taken.
pub(super) async fn run_op(p: &Partition, op: CopyOp) -> OpResult {
    let budget = RANGE_REPLY_READS * p.max_read_bytes();
    match op {
        CopyOp::Rename { src, dst } => match p.rename(&src, &dst, budget).await {
            Ok(()) => OpResult::Resp(RespOutcome::Len(1)),
            Err(StreamError::Group(GroupError::NoStream)) => {
                OpResult::Err(ApiError::new(code::STREAM_NOT_FOUND, "no such key"))
            }
            Err(StreamError::ReplyTooLarge { budget }) => OpResult::Err(ApiError::new(
                code::INVALID_ARGUMENT,
                format!(
                    "the stream holds more than {budget} bytes of entries (8 × \
                     max_read_bytes), and RENAME copies them: copy it in pages with XRANGE \
                     and XADD instead"
                ),
            )),
            Err(e) => OpResult::Err(super::resp_writes::write_error(e)),
        },
        CopyOp::Restore {
            stream,
            replace,
            writes,
        } => {
            let Some(results) = p.transaction_replacing(&stream, replace, writes).await else {
                return OpResult::Resp(RespOutcome::Len(0));
            };
            for r in results {
                if let Err(e) = r {
                    return OpResult::Err(super::resp_writes::write_error(e));
                }
            }
            OpResult::Resp(RespOutcome::Len(1))
        }
    }
}

/// RENAME key newkey
pub(super) async fn rename(shard: &Rc<Shard>, req: &RespRequest) -> Result<(), String> {
    let args = &req.args;
    if args.len() != 3 {
        return Err(wrong_arity(b"rename"));
    }
    let src = stream_name(req.ctx, &args[1])?;
    let dst = stream_name(req.ctx, &args[2])?;
    let partitions = shard.shared.partitions;
    if partition_of(&src, partitions) != partition_of(&dst, partitions) {
        return Err(
            "-CROSSSLOT Keys in request don't hash to the same slot (evring renames \
                    within a partition: give both keys the same {hash tag})"
                .into(),
        );
    }
    match call(
        shard,
        &src,
        RespOp::Copy(CopyOp::Rename {
            src: src.clone(),
            dst,
        }),
    )
    .await?
    {
        RespOutcome::Len(_) => req.answer(|r| {
            r.ok();
        }),
        other => return Err(format!("internal error: unexpected reply {other:?}")),
    }
    Ok(())
}

/// RESTORE key ttl serialized-value [REPLACE] [ABSTTL] [IDLETIME seconds] [FREQ frequency],
/// for a stream's DUMP payload and a TTL of 0 (evring keeps no TTLs).
pub(super) async fn restore(shard: &Rc<Shard>, req: &RespRequest) -> Result<(), String> {
    let args = &req.args;
    if args.len() < 4 {
        return Err(wrong_arity(b"restore"));
    }
    let mut replace = false;
    let mut j = 4;
    while j < args.len() {
        let o = args[j].to_ascii_uppercase();
        match o.as_slice() {
            b"REPLACE" => replace = true,
            b"ABSTTL" => {}
            b"IDLETIME" | b"FREQ" if j + 1 < args.len() => {
                let n = integer(&args[j + 1])?;
                if n < 0 {
                    return Err(format!(
                        "Invalid {} value, must be >= 0",
                        if o == b"FREQ" { "FREQ" } else { "IDLETIME" }
                    ));
                }
                j += 1;
            }
            _ => return Err("syntax error".into()),
        }
        j += 1;
    }
    let ttl = integer(&args[2])?;
    if ttl < 0 {
        return Err("Invalid TTL value, must be >= 0".into());
    }
    if ttl > 0 {
        return Err("evring keeps no TTLs: RESTORE takes a TTL of 0 only".into());
    }
    let dump = decode_stream_dump(&args[3]).map_err(|e| e.to_string())?;
    let stream = stream_name(req.ctx, &args[1])?;
    let writes = restore_writes(&stream, dump);
    let op = CopyOp::Restore {
        stream: stream.clone(),
        replace,
        writes,
    };
    match call(shard, &stream, RespOp::Copy(op)).await? {
        RespOutcome::Len(1) => req.answer(|r| {
            r.ok();
        }),
        RespOutcome::Len(_) => return Err("-BUSYKEY Target key name already exists.".into()),
        other => return Err(format!("internal error: unexpected reply {other:?}")),
    }
    Ok(())
}

/// The writes that make `stream` what `dump` holds: its groups, its entries with their IDs,
/// its counters.
fn restore_writes(stream: &str, dump: DumpedStream) -> Vec<TxWrite> {
    let mut writes = Vec::new();
    for g in dump.groups {
        let mut edits = vec![GroupEdit::Create {
            last_id: g.last_id,
            entries_read: g.entries_read,
        }];
        for c in g.consumers {
            edits.push(GroupEdit::Consumer {
                name: c.name,
                seen_ms: c.seen_ms,
                active_ms: c.active_ms,
            });
        }
        for p in g.pending {
            edits.push(GroupEdit::Pend {
                consumer: p.consumer,
                delivery_ms: p.delivery_ms,
                entries: vec![(p.id, p.delivery_count)],
            });
        }
        writes.push(TxWrite::Group {
            stream: stream.to_string(),
            request: GroupRequest::Set {
                group: g.name,
                edits,
            },
        });
    }
    for (id, fields) in dump.entries {
        let flat: Vec<Vec<u8>> = fields.into_iter().flat_map(|(f, v)| [f, v]).collect();
        writes.push(TxWrite::Append {
            stream: stream.to_string(),
            expected_version: expected::ANY,
            events: vec![Event {
                id: [0; 16],
                event_type: FIELDS_TYPE.to_string(),
                timestamp_ns: 0,
                value: f64::NAN,
                data: encode_fields(&flat),
                metadata: Vec::new(),
            }],
            id: IdSpec::Exact(id),
        });
    }
    writes.push(TxWrite::Change {
        stream: stream.to_string(),
        request: ChangeRequest::SetId {
            last: dump.last_id,
            entries_added: Some(dump.entries_added),
            max_deleted: dump.max_deleted_id,
        },
    });
    writes
}
