//! evring: the command-line client. Thin: parse flags, call `evring::client`, print.

use std::io::Read;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};
use evring::client::{BlockingClient, Checkpoint, SubscriptionItem};
use evring::protocol::{Direction, Event, RecordedEvent, SubscribeTarget};
use serde_json::json;

#[derive(Parser, Debug)]
#[command(name = "evring", version, about = "evring command-line client")]
struct Args {
    /// Server address.
    #[arg(
        long,
        env = "EVRING_ADDR",
        default_value = "127.0.0.1:7070",
        global = true
    )]
    addr: String,
    /// Auth token sent in HELLO.
    #[arg(long, env = "EVRING_TOKEN", default_value = "", global = true)]
    token: String,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Target {
    Stream,
    Partition,
    All,
    /// A model's domain events (name: the model, e.g. kv; --from: an LSN per partition).
    Model,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Check that the server answers.
    Ping,
    /// Append one event (data from --data, --file, or standard input).
    Append {
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
    },
    /// Read events of a stream.
    Read {
        stream: String,
        #[arg(long, default_value_t = 0)]
        from: u64,
        #[arg(long, default_value_t = 100)]
        count: u32,
        /// Read backwards from --from (default: from the end).
        #[arg(long)]
        backward: bool,
    },
    /// Subscribe and print events as they arrive.
    Subscribe {
        #[arg(value_enum)]
        target: Target,
        /// Stream name or partition number (empty for all).
        #[arg(default_value = "")]
        name: String,
        /// Start position (stream version, or LSN per partition); omit for live only.
        #[arg(long)]
        from: Option<u64>,
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
    /// Count/sum/min/max/average of event values over a time window.
    Aggregate {
        #[arg(long, default_value = "")]
        stream: String,
        #[arg(long, default_value = "")]
        type_prefix: String,
        #[arg(long, default_value_t = 0)]
        from_ns: u64,
        #[arg(long, default_value_t = u64::MAX)]
        to_ns: u64,
        #[arg(long, default_value_t = 0)]
        bucket_ns: u64,
    },
    /// Version and LSN range of a stream.
    Info { stream: String },
    /// Server statistics (JSON).
    Stats,
    /// Send a command to a model (JSON); the built-in model is "kv".
    Execute {
        /// Model name.
        model: String,
        /// The command as JSON, e.g. '{"op":"set","key":"a","value":"1"}'.
        command: String,
    },
    /// Ask a model a read-only question (JSON), now or as of a past LSN.
    Query {
        model: String,
        /// The query as JSON, e.g. '{"op":"get","key":"a"}'.
        query: String,
        /// Time travel: the model as of this LSN of the key's partition.
        #[arg(long)]
        as_of: Option<u64>,
    },
    /// The built-in key-value store (shorthands for execute/query on model "kv").
    Kv {
        #[command(subcommand)]
        op: KvOp,
    },
}

#[derive(Subcommand, Debug)]
enum KvOp {
    /// Set a key; prints its new version.
    Set { key: String, value: String },
    /// Read a key (now, or --as-of an LSN of its partition).
    Get {
        key: String,
        #[arg(long)]
        as_of: Option<u64>,
    },
    /// Delete a key.
    Delete { key: String },
    /// Set a key only if it is at VERSION (0: only if it does not exist).
    Cas {
        key: String,
        version: u64,
        value: String,
    },
    /// Keys with a prefix, in order.
    List {
        #[arg(default_value = "")]
        prefix: String,
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
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
    if let Err(e) = run(Args::parse()) {
        eprintln!("evring: {e:#}");
        std::process::exit(1);
    }
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
    if s.len() != 32 {
        bail!("--id must be 32 hex digits");
    }
    let mut id = [0u8; 16];
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).context("--id must be hex")?;
    }
    Ok(id)
}

/// Replaces FILE with `checkpoint` (a temporary file renamed over it, so a crash leaves the
/// old or the new checkpoint, never half of one).
fn save_checkpoint(file: Option<&std::path::Path>, checkpoint: &Checkpoint) -> anyhow::Result<()> {
    let Some(file) = file else {
        return Ok(());
    };
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, format!("{checkpoint}\n"))
        .and_then(|()| std::fs::rename(&tmp, file))
        .with_context(|| format!("cannot write checkpoint {}", file.display()))
}

fn event_json(e: &RecordedEvent) -> serde_json::Value {
    json!({
        "stream": e.stream,
        "stream_version": e.stream_version,
        "lsn": e.lsn,
        "partition": e.partition,
        "type": e.event.event_type,
        "timestamp_ns": e.event.timestamp_ns,
        "value": if e.event.value.is_nan() { serde_json::Value::Null } else { json!(e.event.value) },
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

fn run(args: Args) -> anyhow::Result<()> {
    let c = BlockingClient::connect(&args.addr, "evring-cli", &args.token)
        .with_context(|| format!("cannot talk to evringd at {}", args.addr))?;
    match args.command {
        Cmd::Execute { model, command } => {
            serde_json::from_str::<serde_json::Value>(&command)
                .context("the command must be JSON")?;
            print_result(&c.execute(&model, command.into_bytes())?, args.json)?;
        }
        Cmd::Query {
            model,
            query,
            as_of,
        } => {
            let mut q: serde_json::Value =
                serde_json::from_str(&query).context("the query must be JSON")?;
            if let Some(lsn) = as_of {
                q["as_of"] = json!(lsn);
            }
            print_result(&c.query(&model, q.to_string().into_bytes())?, args.json)?;
        }
        Cmd::Kv { op } => {
            let (is_query, body) = match op {
                KvOp::Set { key, value } => {
                    (false, json!({"op": "set", "key": key, "value": value}))
                }
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
            let bytes = body.to_string().into_bytes();
            let result = if is_query {
                c.query("kv", bytes)?
            } else {
                c.execute("kv", bytes)?
            };
            print_result(&result, args.json)?;
        }
        Cmd::Ping => {
            c.ping()?;
            println!("{}", if args.json { "{\"ok\":true}" } else { "pong" });
        }
        Cmd::Append {
            stream,
            event_type,
            data,
            file,
            expected,
            id,
            value,
        } => {
            let data = match (data, file.as_deref()) {
                (Some(d), _) => d.into_bytes(),
                (None, Some("-")) | (None, None) => {
                    let mut buf = Vec::new();
                    std::io::stdin().read_to_end(&mut buf)?;
                    buf
                }
                (None, Some(path)) => {
                    std::fs::read(path).with_context(|| format!("cannot read {path}"))?
                }
            };
            let event = Event {
                id: id.as_deref().map(parse_id).transpose()?.unwrap_or([0; 16]),
                event_type,
                timestamp_ns: 0,
                value: value.unwrap_or(f64::NAN),
                data,
                metadata: Vec::new(),
            };
            let a = c.append(&stream, parse_expected(&expected)?, vec![event])?;
            if args.json {
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
        Cmd::Read {
            stream,
            from,
            count,
            backward,
        } => {
            let (direction, from) = if backward {
                (Direction::Backward, if from == 0 { u64::MAX } else { from })
            } else {
                (Direction::Forward, from)
            };
            let (events, end) = c.read(&stream, from, count, direction)?;
            if args.json {
                let list: Vec<_> = events.iter().map(event_json).collect();
                println!("{}", json!({"events": list, "end_of_stream": end}));
            } else {
                for e in &events {
                    print_event(e, false);
                }
                if end {
                    println!("(end of stream)");
                }
            }
        }
        Cmd::Subscribe {
            target,
            name,
            from,
            type_prefix,
            count,
            checkpoint,
        } => {
            let target = match target {
                Target::Stream => SubscribeTarget::Stream,
                Target::Partition => SubscribeTarget::Partition,
                Target::All => SubscribeTarget::All,
                Target::Model => SubscribeTarget::Model,
            };
            if checkpoint.is_some() && target != SubscribeTarget::All {
                bail!("--checkpoint is for `subscribe all` (one position per partition)");
            }
            let from = from.unwrap_or(u64::MAX);
            let mut position = match &checkpoint {
                Some(file) if file.exists() => std::fs::read_to_string(file)
                    .with_context(|| format!("cannot read checkpoint {}", file.display()))?
                    .parse::<Checkpoint>()
                    .map_err(|e| anyhow::anyhow!("checkpoint {}: {e}", file.display()))?,
                _ => Checkpoint::from_positions(vec![from; c.partitions() as usize]),
            };
            let sub = match &checkpoint {
                Some(_) => c.subscribe_all_from(&position, &type_prefix)?,
                None => c.subscribe(target, &name, from, &type_prefix)?,
            };
            // Where to resume: the next stream version, or the checkpoint.
            let mut next_version = (from != u64::MAX).then_some(from);
            let mut seen = 0usize;
            loop {
                match sub.next() {
                    SubscriptionItem::Events(events) => {
                        for e in &events {
                            print_event(e, args.json);
                            next_version = Some(e.stream_version + 1);
                            seen += 1;
                            if count.is_some_and(|n| seen >= n) {
                                position.advance(std::slice::from_ref(e));
                                save_checkpoint(checkpoint.as_deref(), &position)?;
                                return Ok(());
                            }
                            position.advance(std::slice::from_ref(e));
                        }
                        save_checkpoint(checkpoint.as_deref(), &position)?;
                    }
                    SubscriptionItem::Ended(e) => {
                        let resume = match (target, &checkpoint) {
                            (_, Some(file)) => format!(
                                "resume with --checkpoint {} (it holds {position})",
                                file.display()
                            ),
                            (SubscribeTarget::Stream, _) => match next_version {
                                Some(v) => format!("resume with --from {v}"),
                                None => "resume with --from 0 or live (no --from)".into(),
                            },
                            _ => format!(
                                "the positions reached, per partition: {position} (--checkpoint \
                                 FILE keeps them for a resume)"
                            ),
                        };
                        bail!("subscription ended: {e}; {resume}");
                    }
                }
            }
        }
        Cmd::Aggregate {
            stream,
            type_prefix,
            from_ns,
            to_ns,
            bucket_ns,
        } => {
            let buckets = c.aggregate(&stream, &type_prefix, from_ns, to_ns, bucket_ns)?;
            if args.json {
                let list: Vec<_> = buckets
                    .iter()
                    .map(|b| {
                        json!({"start_ns": b.start_ns, "count": b.count, "sum": b.sum,
                               "min": b.min, "max": b.max,
                               "avg": if b.count > 0 { json!(b.sum / b.count as f64) } else { serde_json::Value::Null }})
                    })
                    .collect();
                println!("{}", json!({ "buckets": list }));
            } else {
                for b in &buckets {
                    let avg = if b.count > 0 {
                        b.sum / b.count as f64
                    } else {
                        f64::NAN
                    };
                    println!(
                        "{} count {} sum {} min {} max {} avg {}",
                        b.start_ns, b.count, b.sum, b.min, b.max, avg
                    );
                }
            }
        }
        Cmd::Info { stream } => {
            let i = c.stream_info(&stream)?;
            if args.json {
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
        Cmd::Stats => println!("{}", c.stats()?),
    }
    Ok(())
}
