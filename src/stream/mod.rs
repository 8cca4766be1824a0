//! The stream layer: one partition's streams on its journal and ring. It does no networking
//! and spawns no tasks; the server calls it on the partition's owning shard.
//!
//! - [`partition`]: the [`Partition`] — appends (expected versions, idempotency, placement in
//!   arrival order, durability, publication in LSN order), reads, stream info, aggregations,
//!   subscriber sinks, statistics.
//! - [`idempotency`]: the idempotency rule.
//! - [`turns`]: the arrival order of appends.
//! - [`payload`]: the ring payload encoding and its decoding.
//! - [`image`]: snapshot images and the rebuild at start-up.
//! - [`groups`]: consumer-group state and its journaled edits; [`group_ops`]: the group
//!   commands resolved against the index.
//! - [`waiters`]: readers waiting for streams' next entries (the RESP port's blocking XREAD).
//! - [`view`]: [`PartitionView`], the partition as any shard reads it without its owner.
//! - [`error`]: [`StreamError`], which the server maps to wire codes.

mod change;
mod error;
mod group_ops;
mod groups;
mod idempotency;
mod image;
mod partition;
mod payload;
mod search;
mod sets;
mod streams;
mod transaction;
mod turns;
mod view;
mod waiters;

pub use change::{
    database_of, in_database, is_list_push, ChangeRequest, Deleted, StreamChange, Trim, DATABASES,
    LPUSH_TYPE, RPUSH_TYPE, SADD_TYPE, SET_TYPE,
};
pub use error::{ImageError, ShortPayload, StreamError};
pub use group_ops::{ClaimTime, GroupDone, GroupEntry, GroupError, GroupRequest, GroupStart};
pub use groups::{Consumer, Group, GroupChange, GroupEdit, Pending, StreamCounters, StreamGroups};
pub use image::{
    partition_image_of, partition_snapshot_owner, read_partition_snapshot, PartitionImage, Rebuild,
};
pub use partition::{
    AppendNow, IdSpec, MetricsDeferred, Partition, PartitionLimits, PartitionStats, PlacedAppend,
    PublishSink, StreamKind, StreamSummary,
};
pub use payload::reply_bytes;
pub use sets::{SetMembers, MAX_SET_MEMBERS, SET_READ_READS};
pub use transaction::{TxDone, TxWrite};
pub use view::{DetachedRing, PartitionView};
pub use waiters::{WaitEnd, WaitKey};
