//! evring: the command-line client. Thin: parse flags, call `evring::client`, print.

use std::io::{IsTerminal, Read};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use evring::client::{
    AppendResult, BlockingClient, Checkpoint, ClaimAt, ClientError, EntryEvent, GroupClaim,
    GroupEntry, GroupStart, PendingRange, PendingReply, StreamId, StreamInfo, SubscriptionItem,
    TrimBy,
};
use evring::protocol::{
    code, Bucket, Direction, Event, GroupOrder, GroupedAggregate, Groups, NameMatch, RecordedEvent,
    SubscribeTarget,
};
use evring::window::WindowText;
use serde_json::json;

/// How long the CLI waits for the TCP connection, and then for the server's answer to HELLO.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Most groups one aggregation may hold (the server's bound, and its default).
const GROUPS_MAX: u32 = evring::aggregate::groups::GROUPS_MAX;

#[derive(Parser, Debug)]
#[command(
    name = "evring",
    version,
    about = "evring command-line client",
    long_about = "evring command-line client: append, read, subscribe to, aggregate, trim \
        and delete the events of an evringd server, read them with consumer groups, and use \
        its key-value store.\n\n\
        The server address and token come from --addr and --token, or from the environment \
        variables EVRING_ADDR and EVRING_TOKEN. evringd ignores these two variables (and \
        EVRING_LOG), so they can stay exported in a shell that also starts evringd; evringd's \
        own settings are EVRING_<KEY> variables named after its configuration keys \
        (EVRING_LISTEN, EVRING_AUTH_TOKEN, …).\n\n\
        The connection and the server's answer to HELLO must each come within 3 seconds.",
    after_help = "Examples:\n  \
        evring ping\n  \
        evring --addr 10.0.0.5:7070 append orders-1 --type Created --data '{\"qty\":1}'\n  \
        EVRING_ADDR=localhost:7070 evring read orders-1"
)]
struct Args {
    /// Server address, HOST:PORT (a host name or an IP address; IPv6 in brackets: [::1]:7070).
    #[arg(
        long,
        env = "EVRING_ADDR",
        default_value = "127.0.0.1:7070",
        global = true
    )]
    addr: String,
    /// Auth token sent in HELLO (the server's auth_token; empty: none).
    #[arg(long, env = "EVRING_TOKEN", default_value = "", global = true)]
    token: String,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Target {
    /// One stream's events (NAME: the stream; --from: a stream version).
    Stream,
    /// One partition's events (NAME: the partition number; --from: an LSN of the partition).
    Partition,
    /// Every stream's events (no NAME; --from: an LSN of each partition).
    All,
    /// A model's domain events (NAME: the model, e.g. kv; --from: an LSN per partition).
    Model,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Check that the server answers.
    #[command(after_help = "Examples:\n  evring ping\n  evring --addr localhost:7070 ping")]
    Ping,
    /// Append one event (data from --data, --file, or standard input).
    #[command(
        long_about = "Append one event to a stream and print its version, partition and LSN.\n\n\
            The event data comes from --data, from --file, or else from standard input. When \
            standard input is a terminal and neither --data nor --file is given, evring says \
            on standard error that it reads the data from the terminal (end it with Ctrl-D).",
        after_help = "Examples:\n  \
            evring append orders-1 --type Created --data '{\"qty\":1}'\n  \
            evring append orders-1 --type Paid --file payment.json --expected 0\n  \
            echo '{\"qty\":2}' | evring append orders-1 --type Changed"
    )]
    Append(AppendArgs),
    /// Read events of a stream.
    #[command(after_help = "Examples:\n  \
        evring read orders-1\n  \
        evring read orders-1 --from 10 --count 5\n  \
        evring read orders-1 --backward --count 1")]
    Read {
        /// The stream to read.
        stream: String,
        /// First version to read (with --backward: the version to read down from).
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Read at most this many events.
        #[arg(long, default_value_t = 100)]
        count: u32,
        /// Read backwards from --from (default: from the end).
        #[arg(long)]
        backward: bool,
    },
    /// Subscribe and print events as they arrive.
    #[command(
        long_about = "Subscribe and print events as they arrive: the history from --from \
            first, then live events. Without --from only new events are printed.\n\n\
            When the server ends the subscription (it stops: error 31; the subscriber reads too \
            slowly: error 30) or the connection closes, evring exits with status 1 and says \
            where to resume: --from N for a stream or a partition, the --checkpoint FILE (or \
            the positions reached) for all.",
        after_help = "Examples:\n  \
            evring subscribe stream orders-1 --from 0\n  \
            evring subscribe partition 0 --from 0 --count 10\n  \
            evring subscribe all --checkpoint orders.ckpt --type-prefix Order\n  \
            evring subscribe model kv --from 0"
    )]
    Subscribe {
        /// What to follow.
        #[arg(value_enum)]
        target: Target,
        /// The stream name (stream), partition number (partition) or model name (model);
        /// none for all.
        name: Option<String>,
        /// Start position (stream version, or LSN per partition); omit for live only.
        #[arg(long)]
        from: Option<u64>,
        /// Only events whose type starts with this prefix.
        #[arg(long, default_value = "")]
        type_prefix: String,
        /// Stop after this many events.
        #[arg(long)]
        count: Option<usize>,
        /// (all) Resume from the checkpoint in FILE — one position per partition — and keep
        /// it there, replaced after every batch printed. A missing FILE starts from --from
        /// (or live). Events after the last write are printed again after a crash of this
        /// command: at least once, never skipped.
        #[arg(long, value_name = "FILE")]
        checkpoint: Option<std::path::PathBuf>,
    },
    /// Count/sum/min/max/average of a number over a time window, overall or per group.
    #[command(
        long_about = "Count, sum, min, max and average of a number over the events held in \
            the server's memory, in a time window, in one bucket or in buckets of a fixed \
            width: over every event that passes the filters, or per group.\n\n\
            The number is the event's value (evring append --value), or with --field \
            data.<key>[.<key>...] a number in the event's JSON data. An event without one (no \
            value; a field that is absent or not a number) is not counted but reported as \
            missing. The filters combine: --stream or --stream-prefix, --type or \
            --type-prefix, and --where data.<key>=VALUE (the field of the event's JSON data \
            equal to VALUE: a string by its text, a number by value, true or false).\n\n\
            --group-by stream, type or data.<key>[.<key>...] aggregates per group and prints \
            each group's key and totals, then its buckets (with --bucket). An event without \
            the group-by field is in no group (ungrouped). Groups come by key; --top K shows \
            only the K first by --order (count, sum or avg, largest first): --order matters \
            only with --top. The server refuses a window that holds more than --max-groups \
            groups (default and at most 10000) rather than answer with part of them. The \
            last line counts the events matched, those without a number (missing; with \
            --top, in the groups shown) and those without the group-by field (ungrouped), \
            and the groups shown of all.\n\n\
            The window is --from (or --since before --to) up to --to, which defaults to now. \
            Times are RFC 3339 (2024-12-06T08:00:00Z, 2024-12-06T09:00:00+01:00) or Unix \
            times with a unit (1733472000s, 1733472000000ms, 1733472000000000000ns); \
            durations are a number and a unit: ns, us, ms, s, m, h, d (90s, 10m, 1h30m). \
            --from-ns, --to-ns and --bucket-ns take Unix nanoseconds. At most 100000 \
            buckets. A bucket without events shows count 0, sum 0 and no min, max or average \
            (\"-\" in text, null in JSON).",
        after_help = "Examples:\n  \
            evring aggregate --since 10m\n  \
            evring aggregate --stream orders-1 --since 1h --bucket 5m\n  \
            evring aggregate --type-prefix Paid --from 2024-12-06T08:00:00Z --to 2024-12-06T09:00:00Z --bucket 1m\n  \
            evring aggregate --from 1733472000s --bucket 1h\n  \
            evring aggregate --since 10m --group-by data.label --field data.value --top 5 --order sum\n  \
            evring aggregate --since 1h --where data.label=cpu_usage --field data.value --bucket 1m\n  \
            evring aggregate --since 1h --stream-prefix orders- --group-by stream\n  \
            evring aggregate --since 1d --type Paid --field data.amount --group-by data.currency --max-groups 100"
    )]
    Aggregate(AggregateArgs),
    /// Version and LSN range of a stream.
    #[command(after_help = "Example:\n  evring info orders-1")]
    Info {
        /// The stream.
        stream: String,
    },
    /// Delete a stream and every event of it, durably.
    #[command(
        long_about = "Delete a stream and every event of it, and print how many events it \
            held. evring returns once the deletion is durable: the events never come back, \
            not after a crash or a restart either. Reads and subscriptions no longer see them. \
            The name can be used again: the next event appended to it is version 0 of a new \
            stream.\n\n\
            A stream with no events is not found (error 11); evring exits with status 1.",
        after_help = "Examples:\n  \
            evring delete orders-1\n  \
            evring --json delete orders-1"
    )]
    Delete {
        /// The stream to delete.
        stream: String,
    },
    /// Delete the oldest events of a stream, durably.
    #[command(
        long_about = "Delete the oldest events of a stream, and print how many were deleted. \
            Exactly one rule: --keep-last N keeps the newest N events; --before-version V \
            deletes every event whose version is below V; --older-than deletes the events \
            appended before a point in time, given as an age (a number and a unit: ns, us, \
            ms, s, m, h, d; 90s, 10m, 1h30m, 7d: older than that long ago) or as an RFC 3339 \
            time (2024-12-06T08:00:00Z, 2024-12-06T09:00:00+01:00).\n\n\
            --older-than goes by each event's stream ID: an event is deleted when its ID's \
            milliseconds are below the time's. An event appended without an explicit ID \
            (every event appended with evring, and XADD *) has the server's clock at its \
            append as its ID's milliseconds; for events added over the RESP port with \
            explicit IDs, the milliseconds are what the writer chose. The event's timestamp \
            field plays no part.\n\n\
            evring returns once the deletion is durable: the events never come back. The \
            stream keeps its versions: the next event appended continues after the last. A \
            stream with no events is not found (error 11); evring exits with status 1.",
        after_help = "Examples:\n  \
            evring trim orders-1 --keep-last 1000\n  \
            evring trim orders-1 --before-version 250\n  \
            evring trim orders-1 --older-than 7d\n  \
            evring trim orders-1 --older-than 2024-12-06T08:00:00Z"
    )]
    Trim(TrimArgs),
    /// Server statistics (JSON).
    #[command(after_help = "Example:\n  evring stats")]
    Stats,
    /// Send a command to a model (JSON); the built-in model is "kv".
    #[command(after_help = "Example:\n  \
        evring execute kv '{\"op\":\"set\",\"key\":\"a\",\"value\":\"1\"}'")]
    Execute {
        /// Model name.
        model: String,
        /// The command as JSON, e.g. '{"op":"set","key":"a","value":"1"}'.
        command: String,
    },
    /// Ask a model a read-only question (JSON), now or as of a past LSN.
    #[command(after_help = "Examples:\n  \
        evring query kv '{\"op\":\"get\",\"key\":\"a\"}'\n  \
        evring query kv '{\"op\":\"get\",\"key\":\"a\"}' --as-of 12")]
    Query {
        /// Model name.
        model: String,
        /// The query as JSON, e.g. '{"op":"get","key":"a"}'.
        query: String,
        /// Time travel: the model as of this LSN of the key's partition.
        #[arg(long)]
        as_of: Option<u64>,
    },
    /// The built-in key-value store (shorthands for execute/query on model "kv").
    #[command(after_help = "Examples:\n  \
        evring kv set color blue\n  \
        evring kv get color\n  \
        evring kv cas color 1 green")]
    Kv {
        #[command(subcommand)]
        op: KvOp,
    },
    /// Consumer groups: create, read as a consumer, acknowledge, list pending, claim.
    #[command(
        long_about = "Consumer groups (Redis's XGROUP, XREADGROUP, XACK, XPENDING, XCLAIM, \
            XINFO GROUPS over the native protocol). The consumers of one group share a \
            stream's entries: each entry read as new goes to one consumer and stays pending \
            for it until acknowledged. Each change returns once durable. A group made here is \
            the RESP port's too, and the other way round.\n\n\
            IDs are stream IDs, MS-SEQ (1733472000000-0) or MS; $ is the stream's last.",
        after_help = "Examples:\n  \
            evring group create orders-1 billing --start 0\n  \
            evring group read orders-1 billing worker-1 --count 10\n  \
            evring group ack orders-1 billing 1733472000000-0\n  \
            evring group pending orders-1 billing\n  \
            evring group claim orders-1 billing worker-2 --min-idle 60000 1733472000000-0\n  \
            evring group info orders-1"
    )]
    Group {
        #[command(subcommand)]
        op: GroupOp,
    },
}

#[derive(Subcommand, Debug)]
enum GroupOp {
    /// Create a group; it reads the entries after --start.
    #[command(
        after_help = "Examples:\n  evring group create orders-1 billing --start 0\n  evring group create orders-1 billing --mkstream"
    )]
    Create {
        /// The stream.
        stream: String,
        /// The consumer group.
        group: String,
        /// Entries above this ID are new to the group: 0 for the whole stream, $ for only
        /// what is appended from now on.
        #[arg(long, default_value = "$", value_name = "ID|$")]
        start: String,
        /// Create the stream (empty) if it has no events.
        #[arg(long)]
        mkstream: bool,
    },
    /// Delete a group, its consumers and pending entries.
    #[command(after_help = "Examples:\n  evring group destroy orders-1 billing")]
    Destroy {
        /// The stream.
        stream: String,
        /// The consumer group.
        group: String,
    },
    /// Move a group's last-delivered ID.
    #[command(after_help = "Examples:\n  evring group setid orders-1 billing 0")]
    Setid {
        /// The stream.
        stream: String,
        /// The consumer group.
        group: String,
        /// Entries above this ID are new to the group; $: the stream's last.
        #[arg(value_name = "ID|$")]
        id: String,
    },
    /// Read as CONSUMER: new entries, or with --history the consumer's pending ones.
    #[command(
        after_help = "Examples:\n  evring group read orders-1 billing worker-1 --count 10\n  evring group read orders-1 billing worker-1 --block-ms 5000\n  evring group read orders-1 billing worker-1 --history 0"
    )]
    Read {
        /// The stream.
        stream: String,
        /// The consumer group.
        group: String,
        /// The consumer (created when it first reads or claims).
        consumer: String,
        /// At most this many entries.
        #[arg(long, default_value_t = 10)]
        count: u32,
        /// Do not make the entries pending (no acknowledgement needed).
        #[arg(long)]
        noack: bool,
        /// Read the consumer's pending entries above this ID (0: all) instead of new ones.
        #[arg(long, value_name = "ID", conflicts_with = "block_ms")]
        history: Option<String>,
        /// With nothing new, wait up to this many milliseconds for new entries.
        #[arg(long, value_name = "MS", default_value_t = 0)]
        block_ms: u32,
    },
    /// Acknowledge entries: they leave the pending list.
    #[command(
        after_help = "Examples:\n  evring group ack orders-1 billing 1733472000000-0 1733472000000-1"
    )]
    Ack {
        /// The stream.
        stream: String,
        /// The consumer group.
        group: String,
        /// Entry IDs, MS-SEQ.
        #[arg(required = true, value_name = "ID")]
        ids: Vec<String>,
    },
    /// The group's pending entries: a summary, or with --count/--consumer/--min-idle a list.
    #[command(
        after_help = "Examples:\n  evring group pending orders-1 billing\n  evring group pending orders-1 billing --count 10 --consumer worker-1"
    )]
    Pending {
        /// The stream.
        stream: String,
        /// The consumer group.
        group: String,
        /// List at most this many pending entries (with consumer, idle time, deliveries).
        #[arg(long)]
        count: Option<u32>,
        /// List only this consumer's entries.
        #[arg(long)]
        consumer: Option<String>,
        /// List only entries idle at least this many milliseconds.
        #[arg(long, value_name = "MS")]
        min_idle: Option<u64>,
    },
    /// Give pending entries idle at least --min-idle ms to CONSUMER.
    #[command(
        after_help = "Examples:\n  evring group claim orders-1 billing worker-2 --min-idle 60000 1733472000000-0"
    )]
    Claim {
        /// The stream.
        stream: String,
        /// The consumer group.
        group: String,
        /// The consumer (created when it first reads or claims).
        consumer: String,
        /// Only entries idle at least this many milliseconds.
        #[arg(long, value_name = "MS", default_value_t = 0)]
        min_idle: u64,
        /// Entry IDs, MS-SEQ.
        #[arg(required = true, value_name = "ID")]
        ids: Vec<String>,
        /// Print the IDs only, and leave delivery counts as they are.
        #[arg(long)]
        justid: bool,
        /// Claim IDs that are not pending yet, if they are in the stream.
        #[arg(long)]
        force: bool,
    },
    /// The stream's groups with their consumers.
    #[command(after_help = "Examples:\n  evring group info orders-1")]
    Info {
        /// The stream.
        stream: String,
    },
}

#[derive(Subcommand, Debug)]
enum KvOp {
    /// Set a key; prints its new version.
    #[command(after_help = "Example:\n  evring kv set color blue")]
    Set {
        /// The key.
        key: String,
        /// The value (text).
        value: String,
    },
    /// Read a key (now, or --as-of an LSN of its partition).
    #[command(after_help = "Examples:\n  evring kv get color\n  evring kv get color --as-of 3")]
    Get {
        /// The key.
        key: String,
        /// Time travel: the key as of this LSN of its partition.
        #[arg(long)]
        as_of: Option<u64>,
    },
    /// Delete a key.
    #[command(after_help = "Example:\n  evring kv delete color")]
    Delete {
        /// The key.
        key: String,
    },
    /// Set a key only if it is at VERSION (0: only if it does not exist).
    #[command(after_help = "Examples:\n  \
        evring kv cas color 0 blue     # only if color does not exist\n  \
        evring kv cas color 1 green    # only if color is at version 1")]
    Cas {
        /// The key.
        key: String,
        /// The version the key must be at (0: the key must not exist).
        version: u64,
        /// The new value.
        value: String,
    },
    /// Keys with a prefix, in order.
    #[command(after_help = "Examples:\n  evring kv list\n  evring kv list user- --limit 10")]
    List {
        /// Only keys starting with this prefix (default: every key).
        #[arg(default_value = "")]
        prefix: String,
        /// Return at most this many keys (at most 10000).
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
}

/// `evring trim`'s arguments: the stream and exactly one rule.
#[derive(clap::Args, Debug)]
#[command(group(
    clap::ArgGroup::new("rule")
        .required(true)
        .args(["keep_last", "before_version", "older_than"])
))]
struct TrimArgs {
    /// The stream to trim.
    stream: String,
    /// Keep the newest N events and delete the others.
    #[arg(long, value_name = "N")]
    keep_last: Option<u64>,
    /// Delete every event whose version is below V.
    #[arg(long, value_name = "V")]
    before_version: Option<u64>,
    /// Delete the events appended before this time: an age (7d, 1h30m) or an RFC 3339 time.
    #[arg(long, value_name = "AGE|TIME")]
    older_than: Option<String>,
}

/// `evring append`'s arguments.
#[derive(clap::Args, Debug)]
struct AppendArgs {
    /// The stream to append to (created by its first event).
    stream: String,
    /// Event type.
    #[arg(long = "type", default_value = "event")]
    event_type: String,
    /// Event data as text.
    #[arg(long, conflicts_with = "file")]
    data: Option<String>,
    /// Read the event data from this file ("-" for standard input).
    #[arg(long)]
    file: Option<String>,
    /// Expected version: any, no-stream, exists, or the stream's last version.
    #[arg(long, default_value = "any")]
    expected: String,
    /// Event id (32 hex digits) for idempotent retries.
    #[arg(long)]
    id: Option<String>,
    /// Numeric value for aggregations.
    #[arg(long)]
    value: Option<f64>,
}

/// What `evring aggregate --top` ranks groups by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Order {
    /// The events counted (those with a number).
    Count,
    /// The sum of their numbers.
    Sum,
    /// The average of their numbers.
    Avg,
}

/// `--where data.<key>[.<key>…]=VALUE`.
#[derive(Clone, Debug)]
struct WhereEq {
    field: String,
    value: String,
}

/// `evring aggregate`'s flags.
#[derive(clap::Args, Debug)]
struct AggregateArgs {
    /// Only this stream's events (its whole name; default: every stream).
    #[arg(long, value_name = "NAME", conflicts_with = "stream_prefix")]
    stream: Option<String>,
    /// Only the events of the streams whose name starts with P.
    #[arg(long, value_name = "P")]
    stream_prefix: Option<String>,
    /// Only events of this type (the whole type; default: every type).
    #[arg(long = "type", value_name = "NAME", conflicts_with = "type_prefix")]
    event_type: Option<String>,
    /// Only events whose type starts with P.
    #[arg(long, value_name = "P")]
    type_prefix: Option<String>,
    /// The number aggregated: value (the event's value) or data.<key>[.<key>...], a number
    /// in the event's JSON data.
    #[arg(long, value_name = "FIELD", default_value = "value", value_parser = parse_field)]
    field: String,
    /// Only events whose JSON data has this field equal to VALUE: data.<key>[.<key>...]=VALUE
    /// (split at the first "=").
    #[arg(long = "where", value_name = "data.KEY=VALUE", value_parser = parse_where)]
    where_eq: Option<WhereEq>,
    /// One group per stream, per type, or per value of a field of the event's JSON data
    /// (data.<key>[.<key>...]).
    #[arg(long, value_name = "stream|type|data.KEY", value_parser = parse_group_by)]
    group_by: Option<String>,
    /// Show only the K first groups by --order (largest first); default: every group, by key.
    #[arg(long, value_name = "K", requires = "group_by",
          value_parser = clap::value_parser!(u32).range(1..))]
    top: Option<u32>,
    /// What --top ranks the groups by; without --top the groups come by key.
    #[arg(long, value_enum, default_value = "count")]
    order: Order,
    /// Refuse a window that holds more than N groups (default and at most 10000).
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=i64::from(GROUPS_MAX)))]
    max_groups: Option<u32>,
    /// Window start: RFC 3339 or a Unix time with a unit (1733472000s, …ms, …us, …ns).
    #[arg(long, value_name = "TIME", conflicts_with_all = ["since", "from_ns"])]
    from: Option<String>,
    /// Window end (same forms as --from; default: now).
    #[arg(long, value_name = "TIME", conflicts_with = "to_ns")]
    to: Option<String>,
    /// Window start as a duration before the end: 30s, 10m, 2h, 1d.
    #[arg(long, value_name = "DURATION", conflicts_with = "from_ns")]
    since: Option<String>,
    /// Bucket width (1s, 1m, 1h, …); omit for one bucket over the whole window.
    #[arg(long, value_name = "DURATION", conflicts_with = "bucket_ns")]
    bucket: Option<String>,
    /// Window start in Unix nanoseconds (default: 0, all the events held).
    #[arg(long, value_name = "NS")]
    from_ns: Option<u64>,
    /// Window end in Unix nanoseconds (default: now).
    #[arg(long, value_name = "NS")]
    to_ns: Option<u64>,
    /// Bucket width in nanoseconds (0: one bucket).
    #[arg(long, value_name = "NS")]
    bucket_ns: Option<u64>,
}

/// Whether `text` names a field of an event's JSON data: `data.<key>[.<key>…]`, no key empty.
fn is_data_path(text: &str) -> bool {
    text.strip_prefix("data.")
        .is_some_and(|keys| keys.split('.').all(|k| !k.is_empty()))
}

/// `--field`: "value", or a path into the event's JSON data.
fn parse_field(text: &str) -> Result<String, String> {
    match text {
        "value" => Ok(text.into()),
        path if is_data_path(path) => Ok(path.into()),
        _ => Err(
            "expected value (the event's value) or data.<key>[.<key>...], a number in \
                  the event's JSON data, e.g. --field data.amount"
                .into(),
        ),
    }
}

/// `--where`: `data.<key>[.<key>…]=VALUE`, split at the first `=`.
fn parse_where(text: &str) -> Result<WhereEq, String> {
    let form = "expected data.<key>[.<key>...]=VALUE, e.g. --where data.label=cpu_usage";
    let Some((field, value)) = text.split_once('=') else {
        return Err(format!("no \"=\" in it; {form}"));
    };
    if !is_data_path(field) {
        return Err(format!(
            "{field:?} is not a field of the event's JSON data (data.<key>); {form}"
        ));
    }
    Ok(WhereEq {
        field: field.into(),
        value: value.into(),
    })
}

/// `--group-by`: stream, type, or a path into the event's JSON data.
fn parse_group_by(text: &str) -> Result<String, String> {
    match text {
        "stream" | "type" => Ok(text.into()),
        path if is_data_path(path) => Ok(path.into()),
        _ => Err(
            "expected stream, type or data.<key>[.<key>...] (a field of the event's \
                  JSON data), e.g. --group-by data.label"
                .into(),
        ),
    }
}

/// An AGGREGATE refused because the window reaches back before what a ring holds: the
/// server names the first time it can answer from (`aggregate from N or later`); say it as
/// this command's flag too.
fn with_retry_hint(e: ClientError) -> anyhow::Error {
    let from = match &e {
        ClientError::Server { code, message } if *code == code::INVALID_ARGUMENT => message
            .split_once("aggregate from ")
            .and_then(|(_, rest)| rest.split(' ').next()?.parse::<u64>().ok()),
        _ => None,
    };
    match from {
        Some(ns) => anyhow!(e).context(format!(
            "the window is older than what the server holds in memory; retry with --from {ns}ns \
             ({})",
            format_rfc3339(ns)
        )),
        None => e.into(),
    }
}

/// Prints a model's JSON result: as is with --json, else pretty.
fn print_result(bytes: &[u8], as_json: bool) -> anyhow::Result<()> {
    let v: serde_json::Value =
        serde_json::from_slice(bytes).context("the server's result is not JSON")?;
    if as_json {
        println!("{v}");
    } else {
        println!("{}", serde_json::to_string_pretty(&v)?);
    }
    Ok(())
}

fn main() {
    if evring::cli::print_man_if_asked::<Args>() {
        return;
    }
    let matches = Args::command().get_matches();
    let addr_from_env = matches.value_source("addr") == Some(ValueSource::EnvVariable);
    let args = match Args::from_arg_matches(&matches) {
        Ok(args) => args,
        Err(e) => e.exit(),
    };
    if let Err(e) = run(args, addr_from_env) {
        eprintln!("evring: {e:#}");
        std::process::exit(1);
    }
}

/// Checks that `addr` is HOST:PORT; the error says what is wrong with it.
fn check_addr(addr: &str) -> Result<(), String> {
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Err("the port is missing".into());
    };
    if host.is_empty() {
        return Err("the host is missing".into());
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err("an IPv6 address goes in brackets: [::1]:7070".into());
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!("{port:?} is not a port number (1-65535)")),
    }
}

/// Connects to the server at `args.addr`, with messages that say what to do when that fails.
fn connect(args: &Args, addr_from_env: bool) -> anyhow::Result<BlockingClient> {
    let addr = args.addr.as_str();
    let named = if addr_from_env {
        format!("EVRING_ADDR={addr}")
    } else {
        format!("--addr {addr}")
    };
    if let Err(why) = check_addr(addr) {
        bail!("{named}: expected HOST:PORT (e.g. 127.0.0.1:7070 or localhost:7070): {why}");
    }
    let fix = "give evringd's client address (its `listen` setting, 127.0.0.1:7070 by default) \
               with --addr HOST:PORT or EVRING_ADDR";
    BlockingClient::connect_timeout(addr, "evring-cli", &args.token, CONNECT_TIMEOUT).map_err(|e| {
        match e {
            ClientError::Refused { .. } => anyhow!(
                "no evringd answers at {addr} (connection refused): start evringd, or {fix}"
            ),
            ClientError::Resolve(e) => {
                anyhow!("{named}: cannot resolve the host ({e}); check the host name")
            }
            ClientError::ConnectTimeout { .. } => anyhow!(
                "no connection to {addr} within {} s (a host that is down, or a firewall \
                 dropping the connection): check the address, or {fix}",
                CONNECT_TIMEOUT.as_secs()
            ),
            ClientError::HelloTimeout { .. } => anyhow!(
                "{addr} accepted the connection but did not answer within {} s: it is not an \
                 evring server, or evringd is overloaded; {fix}",
                CONNECT_TIMEOUT.as_secs()
            ),
            ClientError::NotEvring { answer, .. } => {
                anyhow!("{addr} is not an evring server (it answered {answer}); {fix}")
            }
            ClientError::Server { code, message } if code == code::NOT_AUTHENTICATED => anyhow!(
                "evringd at {addr} refused the connection ({message}): pass the server's \
                 auth_token with --token or EVRING_TOKEN"
            ),
            other => anyhow!("cannot talk to evringd at {addr}: {other}"),
        }
    })
}

fn parse_expected(s: &str) -> anyhow::Result<i64> {
    Ok(match s {
        "any" => -1,
        "no-stream" => -2,
        "exists" => -3,
        n => n.parse::<i64>().ok().filter(|v| *v >= 0).with_context(|| {
            format!("--expected {n:?}: use any, no-stream, exists or a version")
        })?,
    })
}

fn parse_id(s: &str) -> anyhow::Result<[u8; 16]> {
    if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("--id {s:?}: an event id is 32 hex digits");
    }
    let mut id = [0u8; 16];
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).context("--id must be hex")?;
    }
    Ok(id)
}

/// Unix time now, in nanoseconds.
fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos().min(u128::from(u64::MAX)) as u64)
}

use evring::rfc3339::format_ns as format_rfc3339;

/// The window and bucket width of `evring aggregate`, in Unix nanoseconds: `[from, to)`
/// ([`evring::window::aggregate_window`], its messages naming the flags).
#[allow(clippy::too_many_arguments)]
fn aggregate_window(
    from: Option<&str>,
    to: Option<&str>,
    since: Option<&str>,
    bucket: Option<&str>,
    from_ns: Option<u64>,
    to_ns: Option<u64>,
    bucket_ns: Option<u64>,
    now: u64,
) -> anyhow::Result<(u64, u64, u64)> {
    let w = WindowText {
        from,
        to,
        since,
        bucket,
        from_ns,
        to_ns,
        bucket_ns,
    };
    evring::window::aggregate_window(&w, now, &|name| format!("--{name}")).map_err(|e| anyhow!(e))
}

/// Replaces FILE with `checkpoint` (`evring::durable::replace`: a temporary file, fsynced and
/// renamed over it, so a crash leaves the old or the new checkpoint, never half of one).
fn save_checkpoint(file: Option<&std::path::Path>, checkpoint: &Checkpoint) -> anyhow::Result<()> {
    let Some(file) = file else {
        return Ok(());
    };
    evring::durable::replace(file, format!("{checkpoint}\n").as_bytes())
        .with_context(|| format!("cannot write checkpoint {}", file.display()))
}

/// A number that may be NaN (an empty bucket's min, max, average) as JSON: null for NaN.
fn json_number(v: f64) -> serde_json::Value {
    if v.is_nan() {
        serde_json::Value::Null
    } else {
        json!(v)
    }
}

/// The same in text: "-" for NaN.
fn text_number(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else {
        v.to_string()
    }
}

fn event_json(e: &RecordedEvent) -> serde_json::Value {
    json!({
        "stream": e.stream,
        "stream_version": e.stream_version,
        "lsn": e.lsn,
        "partition": e.partition,
        "type": e.event.event_type,
        "timestamp_ns": e.event.timestamp_ns,
        "value": json_number(e.event.value),
        "data": String::from_utf8_lossy(&e.event.data),
        "metadata": String::from_utf8_lossy(&e.event.metadata),
    })
}

fn print_event(e: &RecordedEvent, as_json: bool) {
    if as_json {
        println!("{}", event_json(e));
    } else {
        println!(
            "{} v{} lsn {} p{} {} {}",
            e.stream,
            e.stream_version,
            e.lsn,
            e.partition,
            e.event.event_type,
            String::from_utf8_lossy(&e.event.data)
        );
    }
}

/// Why a subscription ended, without repeating "subscription ended".
fn ended_reason(e: &ClientError) -> String {
    match e {
        ClientError::Server { code, message } => {
            let message = message
                .strip_prefix("subscription ended: ")
                .unwrap_or(message);
            format!("error {code}: {message}")
        }
        ClientError::Closed(reason) => format!("the connection closed: {reason}"),
        other => other.to_string(),
    }
}

/// Runs the subcommand. One arm per subcommand: the table reads best in one place; each arm
/// takes its arguments apart, calls the server and hands the answer to its printer.
fn run(args: Args, addr_from_env: bool) -> anyhow::Result<()> {
    let as_json = args.json;
    match &args.command {
        Cmd::Execute { model, command } => {
            serde_json::from_str::<serde_json::Value>(command)
                .context("the command must be JSON")?;
            let c = connect(&args, addr_from_env)?;
            print_result(&c.execute(model, command.clone().into_bytes())?, as_json)?;
        }
        Cmd::Query {
            model,
            query,
            as_of,
        } => {
            let mut q: serde_json::Value =
                serde_json::from_str(query).context("the query must be JSON")?;
            if let Some(lsn) = as_of {
                q["as_of"] = json!(lsn);
            }
            let c = connect(&args, addr_from_env)?;
            print_result(&c.query(model, q.to_string().into_bytes())?, as_json)?;
        }
        Cmd::Kv { op } => kv(&args, addr_from_env, op, as_json)?,
        Cmd::Ping => {
            let c = connect(&args, addr_from_env)?;
            c.ping()?;
            println!("{}", if as_json { "{\"ok\":true}" } else { "pong" });
        }
        Cmd::Append(a) => append(&args, addr_from_env, a)?,
        Cmd::Read {
            stream,
            from,
            count,
            backward,
        } => {
            let (direction, from) = if *backward {
                (
                    Direction::Backward,
                    if *from == 0 { u64::MAX } else { *from },
                )
            } else {
                (Direction::Forward, *from)
            };
            let c = connect(&args, addr_from_env)?;
            let (events, end) = c.read(stream, from, *count, direction)?;
            print_events(&events, end, as_json);
        }
        Cmd::Subscribe {
            target,
            name,
            from,
            type_prefix,
            count,
            checkpoint,
        } => subscribe(
            &args,
            addr_from_env,
            *target,
            name.as_deref(),
            *from,
            type_prefix,
            *count,
            checkpoint.as_deref(),
        )?,
        Cmd::Aggregate(a) => aggregate(&args, addr_from_env, a)?,
        Cmd::Info { stream } => {
            let c = connect(&args, addr_from_env)?;
            print_stream_info(stream, &c.stream_info(stream)?, as_json);
        }
        Cmd::Delete { stream } => {
            let c = connect(&args, addr_from_env)?;
            let deleted = c.delete_stream(stream)?;
            if as_json {
                println!("{}", json!({"stream": stream, "deleted": deleted}));
            } else {
                println!("deleted stream {stream} ({})", events_text(deleted));
            }
        }
        Cmd::Trim(t) => trim(&args, addr_from_env, t)?,
        Cmd::Group { op } => group(&connect(&args, addr_from_env)?, op, as_json)?,
        Cmd::Stats => println!("{}", connect(&args, addr_from_env)?.stats()?),
    }
    Ok(())
}

/// A stream ID as the CLI takes it: `MS-SEQ` or `MS` (sequence 0).
fn parse_stream_id(text: &str) -> anyhow::Result<StreamId> {
    let bad = || anyhow!("{text:?} is not a stream ID: expected MS-SEQ (1733472000000-0) or MS");
    let (ms, seq) = match text.split_once('-') {
        Some((ms, seq)) => (ms, seq),
        None => (text, "0"),
    };
    Ok(StreamId::new(
        ms.parse().map_err(|_| bad())?,
        seq.parse().map_err(|_| bad())?,
    ))
}

/// A group's start: `$` (the stream's last) or an ID.
fn parse_group_start(text: &str) -> anyhow::Result<GroupStart> {
    if text == "$" {
        return Ok(GroupStart::Last);
    }
    parse_stream_id(text).map(GroupStart::Id)
}

fn lossy(b: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(b)
}

/// Group entries, one a line: the ID, then the event as `evring read` prints it, or
/// `(deleted)` for a pending entry no longer in the stream.
fn print_group_entries(entries: &[GroupEntry], as_json: bool) {
    for e in entries {
        match (&e.event, as_json) {
            (EntryEvent::Event(r), true) => {
                let mut j = event_json(r);
                j["id"] = json!(e.id.to_string());
                println!("{j}");
            }
            (EntryEvent::Event(r), false) => {
                print!("{} ", e.id);
                print_event(r, false);
            }
            (EntryEvent::Deleted, true) => {
                println!("{}", json!({"id": e.id.to_string(), "deleted": true}))
            }
            (EntryEvent::Deleted, false) => println!("{} (deleted)", e.id),
            (EntryEvent::IdOnly, true) => println!("{}", json!({"id": e.id.to_string()})),
            (EntryEvent::IdOnly, false) => println!("{}", e.id),
        }
    }
}

/// `evring group …`.
fn group(c: &BlockingClient, op: &GroupOp, as_json: bool) -> anyhow::Result<()> {
    let ids_of = |ids: &[String]| {
        ids.iter()
            .map(|t| parse_stream_id(t))
            .collect::<Result<Vec<_>, _>>()
    };
    match op {
        GroupOp::Create {
            stream,
            group,
            start,
            mkstream,
        } => {
            c.group_create(stream, group, parse_group_start(start)?, *mkstream)?;
            if as_json {
                println!(
                    "{}",
                    json!({"stream": stream, "group": group, "created": true})
                );
            } else {
                println!("created group {group} on {stream} (from {start})");
            }
        }
        GroupOp::Destroy { stream, group } => {
            let gone = c.group_destroy(stream, group)?;
            if as_json {
                println!(
                    "{}",
                    json!({"stream": stream, "group": group, "destroyed": gone})
                );
            } else if gone {
                println!("destroyed group {group} on {stream}");
            } else {
                println!("no group {group} on {stream}");
            }
        }
        GroupOp::Setid { stream, group, id } => {
            c.group_setid(stream, group, parse_group_start(id)?)?;
            if as_json {
                println!(
                    "{}",
                    json!({"stream": stream, "group": group, "last_delivered": id})
                );
            } else {
                println!("group {group} on {stream} now delivers after {id}");
            }
        }
        GroupOp::Read {
            stream,
            group,
            consumer,
            count,
            noack,
            history,
            block_ms,
        } => {
            let after = history.as_deref().map(parse_stream_id).transpose()?;
            let block = std::time::Duration::from_millis(u64::from(*block_ms));
            let entries =
                c.group_read_blocking(stream, group, consumer, after, *count, *noack, block)?;
            print_group_entries(&entries, as_json);
            if entries.is_empty() && !as_json {
                eprintln!("(no entries)");
            }
        }
        GroupOp::Ack { stream, group, ids } => {
            let n = c.group_ack(stream, group, &ids_of(ids)?)?;
            if as_json {
                println!(
                    "{}",
                    json!({"stream": stream, "group": group, "acknowledged": n})
                );
            } else {
                println!("acknowledged {n} of {}", ids.len());
            }
        }
        GroupOp::Pending {
            stream,
            group,
            count,
            consumer,
            min_idle,
        } => {
            let range = (count.is_some() || consumer.is_some() || min_idle.is_some()).then(|| {
                PendingRange {
                    min_idle_ms: min_idle.unwrap_or(0),
                    start: StreamId::ZERO,
                    end: StreamId::MAX,
                    count: count.unwrap_or(100),
                    consumer: consumer.as_ref().map(|c| c.as_bytes().to_vec()),
                }
            });
            match c.group_pending(stream, group, range)? {
                PendingReply::Summary {
                    count,
                    range,
                    consumers,
                } => {
                    if as_json {
                        let consumers: serde_json::Map<String, serde_json::Value> = consumers
                            .iter()
                            .map(|(n, k)| (lossy(n).into_owned(), json!(k)))
                            .collect();
                        println!(
                            "{}",
                            json!({
                                "pending": count,
                                "lowest": range.map(|r| r.0.to_string()),
                                "highest": range.map(|r| r.1.to_string()),
                                "consumers": consumers,
                            })
                        );
                    } else {
                        match range {
                            Some((lo, hi)) => println!("{count} pending, {lo} .. {hi}"),
                            None => println!("0 pending"),
                        }
                        for (name, n) in &consumers {
                            println!("  {}: {n}", lossy(name));
                        }
                    }
                }
                PendingReply::Entries(list) => {
                    for p in &list {
                        if as_json {
                            println!(
                                "{}",
                                json!({
                                    "id": p.id.to_string(),
                                    "consumer": lossy(&p.consumer),
                                    "idle_ms": p.idle_ms,
                                    "deliveries": p.deliveries,
                                })
                            );
                        } else {
                            println!(
                                "{} {} idle {} ms, delivered {}x",
                                p.id,
                                lossy(&p.consumer),
                                p.idle_ms,
                                p.deliveries
                            );
                        }
                    }
                }
            }
        }
        GroupOp::Claim {
            stream,
            group,
            consumer,
            min_idle,
            ids,
            justid,
            force,
        } => {
            let claim = GroupClaim {
                group: group.as_bytes().to_vec(),
                consumer: consumer.as_bytes().to_vec(),
                min_idle_ms: *min_idle,
                ids: ids_of(ids)?,
                at: ClaimAt::Now,
                retry_count: None,
                force: *force,
                just_id: *justid,
                last_id: None,
            };
            let entries = c.group_claim(stream, claim)?;
            print_group_entries(&entries, as_json);
            if !as_json {
                eprintln!("claimed {} of {} for {consumer}", entries.len(), ids.len());
            }
        }
        GroupOp::Info { stream } => {
            for g in c.group_info(stream)? {
                if as_json {
                    let consumers: Vec<_> = g
                        .consumers
                        .iter()
                        .map(|c| {
                            json!({
                                "name": lossy(&c.name),
                                "pending": c.pending,
                                "seen_ms": c.seen_ms,
                                "active_ms": c.active_ms,
                            })
                        })
                        .collect();
                    println!(
                        "{}",
                        json!({
                            "group": lossy(&g.name),
                            "last_delivered": g.last_delivered.to_string(),
                            "entries_read": g.entries_read,
                            "lag": g.lag,
                            "pending": g.pending,
                            "consumers": consumers,
                        })
                    );
                } else {
                    let opt = |v: Option<u64>| v.map_or("?".to_string(), |n| n.to_string());
                    println!(
                        "group {}: last delivered {}, entries read {}, lag {}, {} pending",
                        lossy(&g.name),
                        g.last_delivered,
                        opt(g.entries_read),
                        opt(g.lag),
                        g.pending
                    );
                    for c in &g.consumers {
                        println!("  consumer {}: {} pending", lossy(&c.name), c.pending);
                    }
                }
            }
        }
    }
    Ok(())
}

/// "1 event", "3 events".
fn events_text(n: u64) -> String {
    format!("{n} event{}", if n == 1 { "" } else { "s" })
}

/// `evring trim`: the rule, the request, what it deleted.
fn trim(args: &Args, addr_from_env: bool, t: &TrimArgs) -> anyhow::Result<()> {
    let by = match (t.keep_last, t.before_version, t.older_than.as_deref()) {
        (Some(n), _, _) => TrimBy::KeepLast(n),
        (None, Some(v), _) => TrimBy::BeforeVersion(v),
        (None, None, Some(text)) => TrimBy::OlderThanNs(older_than_ns(text, now_ns())?),
        (None, None, None) => bail!("give one of --keep-last, --before-version, --older-than"),
    };
    let c = connect(args, addr_from_env)?;
    let deleted = c.trim(&t.stream, by)?;
    let stream = &t.stream;
    if args.json {
        let rule = match by {
            TrimBy::KeepLast(n) => json!({"keep_last": n}),
            TrimBy::BeforeVersion(v) => json!({"before_version": v}),
            TrimBy::OlderThanNs(ns) => json!({"older_than_ns": ns}),
        };
        println!(
            "{}",
            json!({"stream": stream, "deleted": deleted, "rule": rule})
        );
    } else {
        let rule = match by {
            TrimBy::KeepLast(n) => format!("all but the newest {}", events_text(n)),
            TrimBy::BeforeVersion(v) => format!("the versions below {v}"),
            TrimBy::OlderThanNs(ns) => format!("those older than {}", format_rfc3339(ns)),
        };
        println!(
            "trimmed {stream}: deleted {} ({rule})",
            events_text(deleted)
        );
    }
    Ok(())
}

/// `--older-than`: an age back from `now` (a duration, as `--since` takes) or an RFC 3339
/// time (as `--from` takes); in Unix nanoseconds. A Unix time with a unit (`1733472000s`)
/// reads as a duration, so it is not offered.
fn older_than_ns(text: &str, now: u64) -> anyhow::Result<u64> {
    use evring::window::{parse_duration, parse_rfc3339, parse_time};
    if let Ok(age) = parse_duration(text) {
        return now
            .checked_sub(age)
            .with_context(|| format!("--older-than {text} reaches back before 1970"));
    }
    if parse_rfc3339(text.trim()).is_some() {
        return parse_time("--older-than", text).map_err(|e| anyhow!(e));
    }
    bail!(
        "--older-than {text:?}: expected an age, a number and a unit (ns, us, ms, s, m, h, d: \
         90s, 10m, 1h30m, 7d), or an RFC 3339 time (2024-12-06T08:00:00Z, \
         2024-12-06T09:00:00+01:00)"
    )
}

/// `evring append`: one event, its data from --data, --file or standard input.
fn append(args: &Args, addr_from_env: bool, a: &AppendArgs) -> anyhow::Result<()> {
    let expected_version = parse_expected(&a.expected)?;
    let id =
        a.id.as_deref()
            .map(parse_id)
            .transpose()?
            .unwrap_or([0; 16]);
    let c = connect(args, addr_from_env)?;
    let data = event_data(a.data.as_deref(), a.file.as_deref())?;
    let event = Event {
        id,
        event_type: a.event_type.clone(),
        timestamp_ns: 0,
        value: a.value.unwrap_or(f64::NAN),
        data,
        metadata: Vec::new(),
    };
    let appended = c
        .append(&a.stream, expected_version, vec![event])
        .map_err(|e| append_error(e, &a.stream, &a.expected))?;
    print_appended(&a.stream, &appended, args.json);
    Ok(())
}

/// `evring kv`: a set, delete or compare-and-set through EXECUTE, a get or list through
/// QUERY, on the key-value model.
fn kv(args: &Args, addr_from_env: bool, op: &KvOp, as_json: bool) -> anyhow::Result<()> {
    let (is_query, body) = match op {
        KvOp::Set { key, value } => (false, json!({"op": "set", "key": key, "value": value})),
        KvOp::Delete { key } => (false, json!({"op": "delete", "key": key})),
        KvOp::Cas {
            key,
            version,
            value,
        } => (
            false,
            json!({"op": "cas", "key": key, "expected_version": version, "value": value}),
        ),
        KvOp::Get { key, as_of } => {
            let mut q = json!({"op": "get", "key": key});
            if let Some(lsn) = as_of {
                q["as_of"] = json!(lsn);
            }
            (true, q)
        }
        KvOp::List { prefix, limit } => (
            true,
            json!({"op": "list", "prefix": prefix, "limit": limit}),
        ),
    };
    let c = connect(args, addr_from_env)?;
    let bytes = body.to_string().into_bytes();
    let result = if is_query {
        c.query("kv", bytes)?
    } else {
        match (c.execute("kv", bytes), op) {
            (Ok(r), _) => r,
            (
                Err(ClientError::WrongExpectedVersion { current, .. }),
                KvOp::Cas { key, version, .. },
            ) => {
                if current <= 0 {
                    bail!(
                        "key {key:?} not set: the key does not exist, so it is not \
                         at version {version} (version 0 creates a key that does not \
                         exist)"
                    );
                }
                let asked = if *version == 0 {
                    "0, which asks for a key that does not exist".to_string()
                } else {
                    version.to_string()
                };
                bail!(
                    "key {key:?} not set: the key is at version {current}, not {asked} \
                     (`evring kv get {key}` shows it)"
                );
            }
            (Err(e), _) => return Err(e.into()),
        }
    };
    print_result(&result, as_json)?;
    Ok(())
}

/// `evring append`'s event data: --data, else the --file, else standard input (also for
/// --file -).
fn event_data(data: Option<&str>, file: Option<&str>) -> anyhow::Result<Vec<u8>> {
    Ok(match (data, file) {
        (Some(d), _) => d.to_string().into_bytes(),
        (None, Some("-")) | (None, None) => {
            if std::io::stdin().is_terminal() {
                eprintln!(
                    "evring: reading the event data from standard input; end with \
                     Ctrl-D, or pass --data TEXT or --file FILE"
                );
            }
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .context("cannot read the event data from standard input")?;
            buf
        }
        (None, Some(path)) => {
            std::fs::read(path).with_context(|| format!("cannot read --file {path}"))?
        }
    })
}

/// `evring append`'s error for `e`: a wrong expected version says where the stream is and
/// what --expected to retry with.
fn append_error(e: ClientError, stream: &str, expected: &str) -> anyhow::Error {
    let ClientError::WrongExpectedVersion { current, .. } = e else {
        return e.into();
    };
    let state = if current < 0 {
        "has no events".to_string()
    } else {
        format!("is at version {current}")
    };
    let retry = if current < 0 {
        "--expected no-stream".to_string()
    } else {
        format!("--expected {current}")
    };
    anyhow!(
        "nothing appended: stream {stream:?} {state}, which --expected \
         {expected} does not allow; read it, then retry with {retry}"
    )
}

/// `evring append`'s output: where the event went.
fn print_appended(stream: &str, a: &AppendResult, as_json: bool) {
    if as_json {
        println!(
            "{}",
            json!({"first_version": a.first_version, "last_version": a.last_version,
                   "partition": a.partition, "lsn": a.lsn})
        );
    } else {
        println!(
            "appended {stream} v{} (partition {}, lsn {})",
            a.first_version, a.partition, a.lsn
        );
    }
}

/// `evring read`'s output: the events, and whether the stream ends there.
fn print_events(events: &[RecordedEvent], end: bool, as_json: bool) {
    if as_json {
        let list: Vec<_> = events.iter().map(event_json).collect();
        println!("{}", json!({"events": list, "end_of_stream": end}));
    } else {
        for e in events {
            print_event(e, false);
        }
        if end {
            println!("(end of stream)");
        }
    }
}

/// `evring info`'s output.
fn print_stream_info(stream: &str, i: &StreamInfo, as_json: bool) {
    if as_json {
        println!(
            "{}",
            json!({"next_version": i.next_version, "first_lsn": i.first_lsn, "last_lsn": i.last_lsn})
        );
    } else {
        println!(
            "{stream}: next version {}, LSNs {}..={}",
            i.next_version, i.first_lsn, i.last_lsn
        );
    }
}

/// `evring aggregate`: the window, the request, the answer printed.
fn aggregate(args: &Args, addr_from_env: bool, a: &AggregateArgs) -> anyhow::Result<()> {
    let window = aggregate_window(
        a.from.as_deref(),
        a.to.as_deref(),
        a.since.as_deref(),
        a.bucket.as_deref(),
        a.from_ns,
        a.to_ns,
        a.bucket_ns,
        now_ns(),
    )?;
    let q = grouped_request(a, window);
    let c = connect(args, addr_from_env)?;
    let groups = c.aggregate_groups(&q).map_err(with_retry_hint)?;
    let grouped = a.group_by.is_some();
    if args.json {
        println!("{}", groups_json(&groups, window, grouped));
    } else {
        print_groups(&groups, window.2, grouped);
    }
    Ok(())
}

/// The AGGREGATE_GROUPS request `evring aggregate`'s flags ask for over `window`.
fn grouped_request(a: &AggregateArgs, window: (u64, u64, u64)) -> GroupedAggregate {
    let (from_ns, to_ns, bucket_ns) = window;
    let name_filter = |exact: &Option<String>, prefix: &Option<String>| match prefix {
        Some(p) => (p.clone(), NameMatch::Prefix),
        None => (exact.clone().unwrap_or_default(), NameMatch::Exact),
    };
    let (stream, stream_match) = name_filter(&a.stream, &a.stream_prefix);
    let (event_type, type_match) = name_filter(&a.event_type, &a.type_prefix);
    let (where_field, where_value) = a
        .where_eq
        .clone()
        .map_or_else(Default::default, |w| (w.field, w.value));
    GroupedAggregate {
        bucket_ns,
        stream,
        stream_match,
        event_type,
        type_match,
        field: a.field.clone(),
        where_field,
        where_value,
        group_by: a.group_by.clone().unwrap_or_default(),
        order: match a.order {
            Order::Count => GroupOrder::Count,
            Order::Sum => GroupOrder::Sum,
            Order::Avg => GroupOrder::Average,
        },
        top_k: a.top.unwrap_or(0),
        max_groups: a.max_groups.unwrap_or(0),
        ..GroupedAggregate::window(from_ns, to_ns)
    }
}

/// The events of the groups shown that had no number to aggregate.
fn missing(g: &Groups) -> u64 {
    g.groups.iter().map(|x| x.missing).sum()
}

/// A bucket (or a group's total) as JSON: no min, max or average (NaN) as null.
fn bucket_json(b: &Bucket) -> serde_json::Value {
    json!({"start_ns": b.start_ns, "start": format_rfc3339(b.start_ns), "count": b.count,
           "sum": json_number(b.sum), "min": json_number(b.min), "max": json_number(b.max),
           "avg": json_number(b.average())})
}

/// `evring aggregate --json`: the window, the counts and the buckets (without --group-by)
/// or the groups, each with its key, totals and buckets.
fn groups_json(
    g: &Groups,
    (from, to, bucket): (u64, u64, u64),
    grouped: bool,
) -> serde_json::Value {
    let mut out = json!({"from_ns": from, "to_ns": to, "bucket_ns": bucket,
                         "matched": g.matched, "missing": missing(g)});
    if !grouped {
        let buckets: Vec<_> = g
            .groups
            .iter()
            .flat_map(|x| &x.buckets)
            .map(bucket_json)
            .collect();
        out["buckets"] = json!(buckets);
        return out;
    }
    let groups: Vec<_> = g
        .groups
        .iter()
        .map(|x| {
            let t = x.total();
            json!({"key": x.key, "missing": x.missing, "count": t.count,
                   "sum": json_number(t.sum), "min": json_number(t.min),
                   "max": json_number(t.max), "avg": json_number(t.average()),
                   "buckets": x.buckets.iter().map(bucket_json).collect::<Vec<_>>()})
        })
        .collect();
    out["ungrouped"] = json!(g.ungrouped);
    out["groups_total"] = json!(g.groups_total);
    out["groups"] = json!(groups);
    out
}

/// A bucket's (or a group's total's) figures in text: "-" for no min, max or average.
fn figures(b: &Bucket) -> String {
    format!(
        "count {} sum {} min {} max {} avg {}",
        b.count,
        b.sum,
        text_number(b.min),
        text_number(b.max),
        text_number(b.average())
    )
}

/// `evring aggregate`'s text: one line per bucket without --group-by; with it, per group its
/// key, totals and missing count, then (with buckets) one indented line per bucket. Then a
/// line of counts.
fn print_groups(g: &Groups, bucket_ns: u64, grouped: bool) {
    if grouped {
        for x in &g.groups {
            println!("{:?} {} missing {}", x.key, figures(&x.total()), x.missing);
            if bucket_ns > 0 {
                for b in &x.buckets {
                    println!("  {} {}", format_rfc3339(b.start_ns), figures(b));
                }
            }
        }
    } else {
        for b in g.groups.iter().flat_map(|x| &x.buckets) {
            println!("{} {}", format_rfc3339(b.start_ns), figures(b));
        }
    }
    let mut counts = format!("matched {} events, missing {}", g.matched, missing(g));
    if grouped {
        counts.push_str(&format!(
            ", ungrouped {}, groups shown {} of {}",
            g.ungrouped,
            g.groups.len(),
            g.groups_total
        ));
    }
    println!("{counts}");
}

/// `evring subscribe`: prints events until --count is reached (exit 0) or the subscription
/// ends (an error naming where to resume).
#[allow(clippy::too_many_arguments)]
fn subscribe(
    args: &Args,
    addr_from_env: bool,
    target: Target,
    name: Option<&str>,
    from: Option<u64>,
    type_prefix: &str,
    count: Option<usize>,
    checkpoint: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let name = subscribe_name(target, name)?;
    let wire_target = match target {
        Target::Stream => SubscribeTarget::Stream,
        Target::Partition => SubscribeTarget::Partition,
        Target::All => SubscribeTarget::All,
        Target::Model => SubscribeTarget::Model,
    };
    if checkpoint.is_some() && target != Target::All {
        bail!("--checkpoint is for `subscribe all` (one position per partition)");
    }
    let c = connect(args, addr_from_env)?;
    let from = from.unwrap_or(u64::MAX);
    let mut position = start_position(checkpoint, from, c.partitions())?;
    let sub = match checkpoint {
        Some(_) => c.subscribe_all_from(&position, type_prefix)?,
        None => c.subscribe(wire_target, name, from, type_prefix)?,
    };
    // Where to resume: the next stream version (stream) or LSN (partition), or the
    // checkpoint.
    let mut next = (from != u64::MAX).then_some(from);
    let mut seen = 0usize;
    loop {
        match sub.next() {
            SubscriptionItem::Events(events) => {
                for e in &events {
                    print_event(e, args.json);
                    next = Some(match target {
                        Target::Stream => e.stream_version + 1,
                        _ => e.lsn + 1,
                    });
                    seen += 1;
                    position.advance(std::slice::from_ref(e));
                    if count.is_some_and(|n| seen >= n) {
                        save_checkpoint(checkpoint, &position)?;
                        return Ok(());
                    }
                }
                save_checkpoint(checkpoint, &position)?;
            }
            SubscriptionItem::Ended(e) => {
                let resume = resume_hint(target, checkpoint, next, &position);
                bail!("subscription ended ({}); {resume}", ended_reason(&e));
            }
        }
    }
}

/// The NAME `evring subscribe` follows (empty for `all`), or what the command line lacks.
fn subscribe_name(target: Target, name: Option<&str>) -> anyhow::Result<&str> {
    Ok(match (target, name) {
        (Target::All, None) => "",
        (Target::All, Some(n)) => bail!(
            "subscribe all takes no NAME (it follows every stream); to follow one stream: \
             evring subscribe stream {n}"
        ),
        (Target::Stream, None) => {
            bail!("subscribe stream needs the stream's name: evring subscribe stream NAME [--from VERSION]")
        }
        (Target::Partition, None) => bail!(
            "subscribe partition needs the partition number: evring subscribe partition N \
             [--from LSN]"
        ),
        (Target::Model, None) => {
            bail!("subscribe model needs the model's name: evring subscribe model kv [--from LSN]")
        }
        (Target::Partition, Some(n)) if n.parse::<u32>().is_err() => {
            bail!("subscribe partition {n:?}: the partition is a number (0, 1, …)")
        }
        (_, Some("")) => bail!("subscribe: NAME is empty (a stream, partition or model name)"),
        (_, Some(n)) => n,
    })
}

/// Where `subscribe all` starts: the positions saved in `--checkpoint` when the file exists,
/// else `from` in every partition.
fn start_position(
    checkpoint: Option<&std::path::Path>,
    from: u64,
    partitions: u32,
) -> anyhow::Result<Checkpoint> {
    Ok(match checkpoint {
        Some(file) if file.exists() => std::fs::read_to_string(file)
            .with_context(|| format!("cannot read checkpoint {}", file.display()))?
            .parse::<Checkpoint>()
            .map_err(|e| anyhow!("checkpoint {}: {e}", file.display()))?,
        _ => Checkpoint::from_positions(vec![from; partitions as usize]),
    })
}

/// How to resume a subscription that ended: the checkpoint file, the `--from` to pass, or
/// the positions reached.
fn resume_hint(
    target: Target,
    checkpoint: Option<&std::path::Path>,
    next: Option<u64>,
    position: &Checkpoint,
) -> String {
    match (target, checkpoint) {
        (_, Some(file)) => format!(
            "resume with --checkpoint {} (it holds {position})",
            file.display()
        ),
        (Target::Stream | Target::Partition, _) => match next {
            Some(v) => format!("resume with --from {v}"),
            None => "resume with --from 0, or live (no --from)".into(),
        },
        _ => format!(
            "the positions reached, per partition: {position} (--checkpoint FILE \
             keeps them for a resume)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use evring::window::{format_duration, parse_duration, parse_time};

    const S: u64 = 1_000_000_000;

    #[test]
    fn older_than_is_an_age_or_an_rfc3339_time() {
        let now = 1_733_472_000 * S;
        assert_eq!(older_than_ns("7d", now).unwrap(), now - 7 * 86_400 * S);
        assert_eq!(older_than_ns("1h30m", now).unwrap(), now - 5_400 * S);
        assert_eq!(older_than_ns("2024-12-06T08:00:00Z", 0).unwrap(), now);
        let err = older_than_ns("100000d", now).unwrap_err().to_string();
        assert!(err.contains("before 1970"), "{err}");
        for bad in ["", "7", "yesterday", "2024-12-06"] {
            let err = older_than_ns(bad, now).unwrap_err().to_string();
            assert!(err.contains("expected an age"), "{bad}: {err}");
        }
        let err = older_than_ns("1969-12-31T23:59:59Z", now)
            .unwrap_err()
            .to_string();
        assert!(err.contains("outside the range"), "{err}");
    }

    #[test]
    fn durations_take_units_and_sums() {
        assert_eq!(parse_duration("10m"), Ok(600 * S));
        assert_eq!(parse_duration("90s"), Ok(90 * S));
        assert_eq!(parse_duration("1h30m"), Ok(5400 * S));
        assert_eq!(parse_duration("2d"), Ok(2 * 86_400 * S));
        assert_eq!(parse_duration("500ms"), Ok(S / 2));
        assert_eq!(parse_duration("7ns"), Ok(7));
        for bad in ["", "10", "m", "10x", "1.5h", "-1s", "99999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn times_are_rfc3339_or_unix_times_with_a_unit() {
        let t = 1_733_472_000 * S;
        assert_eq!(parse_time("--from", "2024-12-06T08:00:00Z").unwrap(), t);
        assert_eq!(parse_time("--from", "2024-12-06t08:00:00z").unwrap(), t);
        assert_eq!(
            parse_time("--from", "2024-12-06 09:00:00+01:00").unwrap(),
            t
        );
        assert_eq!(
            parse_time("--from", "2024-12-06T07:30:00-00:30").unwrap(),
            t
        );
        assert_eq!(
            parse_time("--from", "2024-12-06T08:00:00.25Z").unwrap(),
            t + S / 4
        );
        assert_eq!(parse_time("--from", "1733472000s").unwrap(), t);
        assert_eq!(parse_time("--from", "1733472000000ms").unwrap(), t);
        assert_eq!(parse_time("--from", "1733472000000000us").unwrap(), t);
        assert_eq!(parse_time("--from", "1733472000000000000ns").unwrap(), t);
        assert_eq!(parse_time("--from", "1970-01-01T00:00:00Z").unwrap(), 0);
        assert_eq!(
            parse_time("--from", "2000-02-29T00:00:00Z").unwrap(),
            951_782_400 * S
        );
        let err = parse_time("--from", "1733472000").unwrap_err().to_string();
        assert!(err.contains("1733472000s"), "{err}");
        for bad in [
            "yesterday",
            "2024-13-01T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2024-12-06T24:00:00Z",
            "2024-12-06T08:00:00",
            "2024-12-06T08:00:00+1:00",
            "1969-12-31T23:59:59Z",
            "99999999999999999999s",
        ] {
            assert!(parse_time("--from", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_print_in_their_largest_whole_unit() {
        assert_eq!(format_duration(60 * S), "1m");
        assert_eq!(format_duration(90 * S), "90s");
        assert_eq!(format_duration(1_500_000), "1500us");
        assert_eq!(format_duration(7), "7ns");
        assert_eq!(format_duration(0), "0ns");
    }

    #[test]
    fn rfc3339_output_reads_back() {
        for ns in [
            0,
            1,
            1_733_472_000 * S,
            1_733_472_000 * S + 120_000_000,
            951_782_400 * S,
        ] {
            let text = format_rfc3339(ns);
            assert_eq!(parse_time("--from", &text).unwrap(), ns, "{text}");
        }
        assert_eq!(format_rfc3339(1_733_472_000 * S), "2024-12-06T08:00:00Z");
        assert_eq!(format_rfc3339(S / 2), "1970-01-01T00:00:00.5Z");
    }

    #[test]
    fn the_aggregate_window_defaults_to_now_and_bounds_the_buckets() {
        let now = 1_733_472_000 * S;
        let w = |since, bucket, from_ns, bucket_ns| {
            aggregate_window(None, None, since, bucket, from_ns, None, bucket_ns, now)
        };
        assert_eq!(
            w(Some("10m"), None, None, None).unwrap(),
            (now - 600 * S, now, 0)
        );
        assert_eq!(
            w(Some("1h"), Some("1m"), None, None).unwrap(),
            (now - 3600 * S, now, 60 * S)
        );
        assert_eq!(w(None, None, None, None).unwrap(), (0, now, 0));
        // With --since, the first bucket starts on a multiple of the width.
        let later = now + 1234 * S + 5;
        let since = |since, bucket| {
            aggregate_window(
                None,
                None,
                Some(since),
                Some(bucket),
                None,
                None,
                None,
                later,
            )
            .unwrap()
        };
        assert_eq!(since("10m", "1h"), (now, later, 3600 * S));
        assert_eq!(since("90s", "1m"), (now + 1140 * S, later, 60 * S));
        // The old flags: --from-ns and --bucket-ns without --to-ns end at now.
        assert_eq!(
            w(None, None, Some(now - 60 * S), Some(S)).unwrap(),
            (now - 60 * S, now, S)
        );
        let err = w(None, None, Some(now - 3600 * S), Some(1_000_000))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("3600000 buckets of 1ms") && err.contains("at most 100000"),
            "{err}"
        );
        let err = aggregate_window(
            Some("2030-01-01T00:00:00Z"),
            None,
            None,
            None,
            None,
            None,
            None,
            now,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("empty"), "{err}");
    }

    #[test]
    fn aggregate_flags_make_the_grouped_request() {
        let request = |flags: &[&str]| {
            let argv = [&["evring", "aggregate"][..], flags].concat();
            let args = Args::try_parse_from(argv).unwrap();
            let Cmd::Aggregate(a) = &args.command else {
                unreachable!("evring aggregate")
            };
            grouped_request(a, (1, 2, 0))
        };
        let window = GroupedAggregate::window(1, 2);
        // The defaults: every stream and type, the event's value, one group.
        assert_eq!(
            request(&[]),
            GroupedAggregate {
                field: "value".into(),
                ..window.clone()
            }
        );
        assert_eq!(
            request(&[
                "--stream-prefix",
                "orders-",
                "--type",
                "Paid",
                "--where",
                "data.note=a=b",
                "--field",
                "data.amount.total",
                "--group-by",
                "data.currency",
                "--top",
                "3",
                "--order",
                "avg",
                "--max-groups",
                "50",
            ]),
            GroupedAggregate {
                stream: "orders-".into(),
                stream_match: NameMatch::Prefix,
                event_type: "Paid".into(),
                type_match: NameMatch::Exact,
                field: "data.amount.total".into(),
                where_field: "data.note".into(),
                where_value: "a=b".into(),
                group_by: "data.currency".into(),
                order: GroupOrder::Average,
                top_k: 3,
                max_groups: 50,
                ..window.clone()
            }
        );
        let q = request(&[
            "--stream",
            "s-1",
            "--type-prefix",
            "Pa",
            "--group-by",
            "type",
        ]);
        assert_eq!(
            (
                q.stream.as_str(),
                q.stream_match,
                q.event_type.as_str(),
                q.type_match
            ),
            ("s-1", NameMatch::Exact, "Pa", NameMatch::Prefix)
        );
        assert_eq!(
            (q.group_by.as_str(), q.order, q.top_k),
            ("type", GroupOrder::Count, 0)
        );
        for bad in ["data.", "data..x", "data", "value.x", "amount", ""] {
            assert!(parse_field(bad).is_err(), "--field {bad}");
            assert!(parse_group_by(bad).is_err(), "--group-by {bad}");
            assert!(parse_where(&format!("{bad}=1")).is_err(), "--where {bad}=1");
        }
        assert!(parse_where("data.x").is_err());
        assert!(parse_where("data.x=").is_ok_and(|w| w.value.is_empty()));
    }

    #[test]
    fn addresses_need_a_host_and_a_port() {
        assert!(check_addr("127.0.0.1:7070").is_ok());
        assert!(check_addr("localhost:7070").is_ok());
        assert!(check_addr("[::1]:7070").is_ok());
        assert!(check_addr("127.0.0.1")
            .unwrap_err()
            .contains("port is missing"));
        assert!(check_addr(":7070").unwrap_err().contains("host is missing"));
        assert!(check_addr("::1:7070").unwrap_err().contains("brackets"));
        assert!(check_addr("host:http").unwrap_err().contains("port number"));
        assert!(check_addr("host:0").is_err());
    }
}
