//! `evring-inspect`: reads and verifies evring journals offline.
//!
//! It takes a data directory (with a `MANIFEST`: every partition), one partition's journal
//! directory, or a single segment file, and runs the same frame scan recovery runs
//! (`evring::journal::scan`), read-only through `std::fs`. `verify` of a data directory checks
//! every file evringd reads at start-up — the MANIFEST, each partition's stream journal and
//! key-value journal, served models' journals, and every snapshot file — with the checks
//! evringd applies (the `verify` module), so it finds what `evringd` would refuse to start
//! on, and says where: file, byte offset (in a segment), failed check. A torn tail (a crash
//! during a write that was never acknowledged) is not a fault: `verify` reports it and exits
//! 0, as recovery truncates it. `list`, `dump` and `stats` read the stream journals.
//!
//! Exit status: 0 clean, 2 corruption found, 1 any other error (unreadable path, bad flags).
//! Progress goes to stderr as a bar when stderr is a terminal; results go to stdout, as text
//! or, with `--json`, as one JSON document (`dump`: one JSON object per line).

use std::collections::{HashMap, HashSet};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

use evring::constants::{FRAME_BYTES_MAX_DEFAULT, FRAME_HEADER_BYTES, IN_FLIGHT_FRAMES_DEFAULT};
use evring::error::{Corruption, JournalError};
use evring::journal::device::parse_segment_file_name;
use evring::journal::format::{RecordIter, RecordRef, StoreId};
use evring::journal::scan::{scan, FrameInfo, ScanConfig, ScanReport};
use evring::journal::{block_on, StdStorage};
use evring::manifest::Manifest;

mod verify;

#[derive(Parser)]
#[command(
    name = "evring-inspect",
    version,
    about = "Read and verify evring data directories, journals and segments offline",
    after_help = "Examples:\n  \
        evring-inspect verify /var/lib/evring\n  \
        evring-inspect list /var/lib/evring\n  \
        evring-inspect backup /var/lib/evring /backup/evring-2024-12-06"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Segments of each journal: sequence, LSN range, frames, records, header copies.
    #[command(after_help = "Examples:\n  \
        evring-inspect list /var/lib/evring\n  \
        evring-inspect list /var/lib/evring/p0 --json")]
    List(Target),
    /// Every frame and record, in LSN order.
    #[command(after_help = "Examples:\n  \
        evring-inspect dump /var/lib/evring --partition 0 --limit 20\n  \
        evring-inspect dump /var/lib/evring/p0/0000000000000000.seg --frames-only")]
    Dump(DumpArgs),
    /// Check what evringd reads at start-up, as it checks it: of a data directory, the
    /// MANIFEST, every partition's stream and key-value journals, served models' journals and
    /// every snapshot file (of a journal directory or a segment: its frames). Exit 0 when
    /// clean, 2 when damaged (the first fault is named first), 1 on other errors.
    #[command(after_help = "Examples:\n  \
        evring-inspect verify /var/lib/evring\n  \
        evring-inspect verify /backup/evring-2024-12-06 --json")]
    Verify(Target),
    /// Totals per journal: frames, records, streams, event types, bytes, fill.
    #[command(after_help = "Example:\n  evring-inspect stats /var/lib/evring --partition 0")]
    Stats(Target),
    /// The built-in key-value store of one partition as of an LSN (time travel, offline).
    #[command(after_help = "Examples:\n  \
        evring-inspect kv /var/lib/evring --partition 0\n  \
        evring-inspect kv /var/lib/evring --partition 1 --as-of 120 --prefix user-")]
    Kv(KvArgs),
    /// Copy a data directory consistently while evringd runs (or not): every partition's
    /// valid journal prefix, then the MANIFEST. Start evringd on the copy to restore it.
    #[command(after_help = "Example:\n  \
        evring-inspect backup /var/lib/evring /backup/evring-2024-12-06")]
    Backup(BackupArgs),
}

#[derive(Args)]
struct KvArgs {
    /// The data directory.
    path: PathBuf,
    /// The partition whose keys to show.
    #[arg(long, default_value_t = 0)]
    partition: u32,
    /// Show the state with every command below this LSN applied (default: all).
    #[arg(long)]
    as_of: Option<u64>,
    /// Only keys with this prefix.
    #[arg(long, default_value = "")]
    prefix: String,
    /// Output JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct BackupArgs {
    /// The data directory to copy (read only; the server may be running on it).
    source: PathBuf,
    /// Where the copy goes: a new or empty directory.
    dest: PathBuf,
    /// Output JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct Target {
    /// A data directory, a partition's journal directory, or one segment file.
    path: PathBuf,
    /// Output JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Only this partition of a data directory (`verify`: its stream and key-value stores;
    /// served models are checked only without this flag).
    #[arg(long)]
    partition: Option<u32>,
    /// The server's `frame_bytes_max` (frames larger than this are faults).
    #[arg(long, default_value_t = FRAME_BYTES_MAX_DEFAULT)]
    frame_bytes_max: usize,
    /// The server's `in_flight_frames` (how far a torn tail may reach).
    #[arg(long, default_value_t = IN_FLIGHT_FRAMES_DEFAULT)]
    in_flight_frames: usize,
}

#[derive(Args)]
struct DumpArgs {
    #[command(flatten)]
    target: Target,
    /// Start at this LSN.
    #[arg(long, default_value_t = 0)]
    from_lsn: u64,
    /// Print at most this many records per journal.
    #[arg(long)]
    limit: Option<u64>,
    /// Print frame headers only.
    #[arg(long)]
    frames_only: bool,
}

/// One journal to scan: a label and where its segments are.
struct Journal {
    name: String,
    storage: StdStorage,
    store_id: Option<StoreId>,
    bytes_on_disk: u64,
}

fn main() -> ExitCode {
    if evring::cli::print_man_if_asked::<Cli>() {
        return ExitCode::SUCCESS;
    }
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::List(t) => run(t, Mode::List),
        Command::Verify(t) if verify::is_data_dir(&t.path) => verify::verify_data_dir(t),
        Command::Verify(t) => run(t, Mode::Verify),
        Command::Stats(t) => run(t, Mode::Stats),
        Command::Backup(b) => backup(b).map(|()| Outcome::Clean),
        Command::Kv(k) => kv(k).map(|()| Outcome::Clean),
        Command::Dump(d) => run(
            &d.target,
            Mode::Dump {
                from_lsn: d.from_lsn,
                limit: d.limit.unwrap_or(u64::MAX),
                frames_only: d.frames_only,
            },
        ),
    };
    match result {
        Ok(Outcome::Clean) => ExitCode::SUCCESS,
        Ok(Outcome::Corrupt) => ExitCode::from(2),
        Err(e) => {
            eprintln!("evring-inspect: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// `evring-inspect kv`: replays the partition's key-value journal (read-only) up to the LSN.
fn kv(k: &KvArgs) -> anyhow::Result<()> {
    let manifest = Manifest::load(&k.path)?
        .ok_or_else(|| anyhow!("{} is not a data directory (no MANIFEST)", k.path.display()))?;
    if k.partition >= manifest.partitions {
        bail!(
            "there is no partition {} (the store has {})",
            k.partition,
            manifest.partitions
        );
    }
    let codec = match std::fs::read_to_string(
        Manifest::partition_dir(&k.path, k.partition).join("kv/CODEC"),
    ) {
        Ok(t) if t.trim() == "json" => evring::engine::Codec::Json,
        Ok(_) => evring::engine::Codec::Binary,
        Err(_) => bail!("partition {} has no key-value store yet", k.partition),
    };
    let (model, report) = replay_kv(k, &manifest, codec)?;
    let entries = evring::engine::kv::list(&model, &k.prefix, usize::MAX);
    print_kv(k, &entries, report.next_lsn)
}

/// Replays the partition's key-value journal into a model, every command below `--as-of`
/// applied; returns the model and the scan's report.
fn replay_kv(
    k: &KvArgs,
    manifest: &Manifest,
    codec: evring::engine::Codec,
) -> anyhow::Result<(evring::engine::kv::KvModel, ScanReport)> {
    use evring::engine::kv::{KvCommand, KvModel};
    use evring::journal::format::RECORD_KIND_COMMAND;
    let dir = Manifest::partition_dir(&k.path, k.partition).join("kv/journal");
    let storage = StdStorage::new(&dir);
    let cfg = ScanConfig {
        store_id: Some(manifest.store_id),
        frame_bytes_max: evring::constants::FRAME_BYTES_MAX_LIMIT,
        in_flight_max: evring::constants::IN_FLIGHT_FRAMES_LIMIT,
        first_segment: None,
    };
    let as_of = k.as_of.unwrap_or(u64::MAX);
    let mut model = KvModel::default();
    let mut failure: Option<String> = None;
    let report = block_on(scan(
        &storage,
        &cfg,
        |info, frame| {
            let body = &frame[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + info.meta.body_len as usize];
            for r in RecordIter::new(body).flatten() {
                if r.lsn >= as_of || r.record.kind != RECORD_KIND_COMMAND || failure.is_some() {
                    continue;
                }
                if let Err(e) = evring::engine::replay_command::<KvModel, KvCommand>(
                    codec,
                    r.record.data,
                    r.lsn,
                    r.record.timestamp_ns,
                    &mut model,
                ) {
                    failure = Some(format!("LSN {}: {e}", r.lsn));
                }
            }
        },
        |_| {},
    ))
    .map_err(|e| anyhow!("{e}"))?;
    if let Some(f) = failure {
        bail!("cannot replay the key-value journal: {f}");
    }
    Ok((model, report))
}

/// The keys `evring-inspect kv` found, as JSON or one line per key.
fn print_kv(k: &KvArgs, entries: &[Value], next_lsn: u64) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if k.json {
        let doc = json!({
            "partition": k.partition,
            "as_of": k.as_of,
            "next_lsn": next_lsn,
            "entries": entries,
        });
        writeln!(out, "{doc}")?;
    } else {
        writeln!(
            out,
            "p{}: {} keys as of LSN {} (journal ends at {})",
            k.partition,
            entries.len(),
            k.as_of.map_or("end".to_string(), |l| l.to_string()),
            next_lsn
        )?;
        for e in entries {
            writeln!(
                out,
                "{} = {} (v{})",
                e["key"].as_str().unwrap_or(""),
                e["value"].as_str().unwrap_or(""),
                e["version"]
            )?;
        }
    }
    Ok(())
}

/// `evring-inspect backup`: see `evring::journal::backup` for why the copy is consistent.
fn backup(b: &BackupArgs) -> anyhow::Result<()> {
    let manifest = Manifest::load(&b.source)?.ok_or_else(|| {
        anyhow!(
            "{} is not a data directory (no MANIFEST)",
            b.source.display()
        )
    })?;
    if b.dest.exists()
        && std::fs::read_dir(&b.dest)
            .with_context(|| format!("cannot read {}", b.dest.display()))?
            .next()
            .is_some()
    {
        bail!(
            "{} is not empty; back up into a new directory",
            b.dest.display()
        );
    }
    std::fs::create_dir_all(&b.dest)
        .with_context(|| format!("cannot create {}", b.dest.display()))?;
    let started = std::time::Instant::now();
    let mut docs = Vec::new();
    for store in backup_stores(b, &manifest)? {
        docs.push(backup_store(b, manifest.store_id, store)?);
    }
    backup_manifest(b)?;
    print_backup(b, &docs, started)
}

/// One store to back up: its label, its source and destination directories, and the
/// subdirectory of its journal (empty: the store's directory itself).
type BackupStore = (String, PathBuf, PathBuf, &'static str);

/// The stores to copy, in order. Per partition: its stream journal (with its snapshots) and
/// its key-value store; then the served models' stores.
fn backup_stores(b: &BackupArgs, manifest: &Manifest) -> anyhow::Result<Vec<BackupStore>> {
    let mut stores: Vec<BackupStore> = Vec::new();
    for p in 0..manifest.partitions {
        let src = Manifest::partition_dir(&b.source, p);
        let dst = Manifest::partition_dir(&b.dest, p);
        stores.push((format!("p{p}"), src.clone(), dst.clone(), ""));
        if src.join("kv").exists() {
            stores.push((
                format!("p{p}/kv"),
                src.join("kv"),
                dst.join("kv"),
                "journal",
            ));
        }
    }
    for e in std::fs::read_dir(&b.source)?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("model-") && e.path().is_dir() {
            stores.push((name.clone(), e.path(), b.dest.join(&name), "journal"));
        }
    }
    Ok(stores)
}

/// Copies one store: its snapshot files, its `CODEC`, then its journal's valid prefix.
/// Snapshot files are copied before their journal, so every copied snapshot's LSN is within
/// the copied journal. Returns what was copied, as the store's JSON document.
fn backup_store(
    b: &BackupArgs,
    store_id: StoreId,
    (label, src, dst, journal_sub): BackupStore,
) -> anyhow::Result<Value> {
    std::fs::create_dir_all(&dst)?;
    let snapshots = backup_snapshots(&src, &dst)?;
    if src.join("CODEC").exists() {
        evring::durable::replace(&dst.join("CODEC"), &std::fs::read(src.join("CODEC"))?)?;
    }
    let (jsrc, jdst) = if journal_sub.is_empty() {
        (src.clone(), dst.clone())
    } else {
        (src.join(journal_sub), dst.join(journal_sub))
    };
    let bytes_on_disk: u64 = std::fs::read_dir(&jsrc)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    let bar = progress_bar(bytes_on_disk, &label, b.json);
    let copied =
        evring::journal::backup::backup_journal(&jsrc, &jdst, store_id, |n| bar.set_position(n))
            .with_context(|| format!("cannot back up {} to {}", jsrc.display(), jdst.display()))?;
    bar.finish_and_clear();
    evring::durable::sync_dir(&dst)?;
    Ok(json!({
        "store": label,
        "segments": copied.segments,
        "frames": copied.frames,
        "records": copied.records,
        "end_lsn": copied.end_lsn,
        "bytes_copied": copied.bytes_copied,
        "snapshots": snapshots,
    }))
}

/// Copies the snapshot files of `src` into `dst`; returns how many it copied.
fn backup_snapshots(src: &Path, dst: &Path) -> anyhow::Result<u64> {
    let mut snapshots = 0;
    for (_, path) in evring::snapshot::list(src)? {
        let to = dst.join(path.file_name().expect("a snapshot file name"));
        match std::fs::copy(&path, &to) {
            Ok(_) => {
                std::fs::File::open(&to)?.sync_all()?;
                snapshots += 1;
            }
            // Pruned between the listing and the copy: an older one, not needed.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot copy {}", path.display())),
        }
    }
    Ok(snapshots)
}

/// The MANIFEST last, through a temporary name: a copy without one is not a data directory.
fn backup_manifest(b: &BackupArgs) -> anyhow::Result<()> {
    let text = std::fs::read(b.source.join(evring::manifest::MANIFEST_FILE))?;
    evring::durable::replace(&b.dest.join(evring::manifest::MANIFEST_FILE), &text)?;
    Ok(())
}

/// What `evring-inspect backup` copied, per store, and how long it took.
fn print_backup(b: &BackupArgs, docs: &[Value], started: std::time::Instant) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if b.json {
        let doc = json!({
            "source": b.source.display().to_string(),
            "dest": b.dest.display().to_string(),
            "seconds": started.elapsed().as_secs_f64(),
            "stores": docs,
        });
        writeln!(out, "{doc}")?;
    } else {
        for d in docs {
            writeln!(
                out,
                "{}: {} segments, {} frames, {} records up to LSN {}, {} snapshots",
                d["store"].as_str().unwrap_or(""),
                d["segments"],
                d["frames"],
                d["records"],
                d["end_lsn"],
                d["snapshots"]
            )?;
        }
        writeln!(
            out,
            "backup of {} in {} complete ({:.1} s)",
            b.source.display(),
            b.dest.display(),
            started.elapsed().as_secs_f64()
        )?;
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Mode {
    List,
    Verify,
    Stats,
    Dump {
        from_lsn: u64,
        limit: u64,
        frames_only: bool,
    },
}

enum Outcome {
    Clean,
    Corrupt,
}

/// Bytes of the segment files in `dir` (only segment `only`, when given).
fn segment_bytes(dir: &Path, only: Option<u64>) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let seq = e.file_name().to_str().and_then(parse_segment_file_name);
            seq.is_some() && (only.is_none() || seq == only)
        })
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// Finds the journals `path` names.
fn journals(path: &Path, partition: Option<u32>) -> anyhow::Result<Vec<Journal>> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if meta.is_file() {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let seq = parse_segment_file_name(name).ok_or_else(|| {
            anyhow!(
                "{} is not a segment file (NNNNNNNNNNNNNNNN.seg)",
                path.display()
            )
        })?;
        let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        return Ok(vec![Journal {
            name: path.display().to_string(),
            storage: StdStorage::only(dir, seq),
            store_id: None,
            bytes_on_disk: meta.len(),
        }]);
    }
    if let Some(manifest) = Manifest::load(path)? {
        let mut out = Vec::new();
        for p in 0..manifest.partitions {
            if partition.is_some_and(|want| want != p) {
                continue;
            }
            let dir = Manifest::partition_dir(path, p);
            out.push(Journal {
                name: format!("p{p}"),
                bytes_on_disk: segment_bytes(&dir, None),
                storage: StdStorage::new(dir),
                store_id: Some(manifest.store_id),
            });
        }
        if out.is_empty() {
            bail!(
                "{} has {} partitions; there is no partition {}",
                path.display(),
                manifest.partitions,
                partition.unwrap_or(0)
            );
        }
        return Ok(out);
    }
    let has_segments = std::fs::read_dir(path)?.flatten().any(|e| {
        e.file_name()
            .to_str()
            .and_then(parse_segment_file_name)
            .is_some()
    });
    if !has_segments {
        bail!(
            "{} is neither a data directory (no MANIFEST) nor a journal directory (no .seg files)",
            path.display()
        );
    }
    Ok(vec![Journal {
        name: path.display().to_string(),
        bytes_on_disk: segment_bytes(path, None),
        storage: StdStorage::new(path),
        store_id: None,
    }])
}

fn progress_bar(total: u64, name: &str, json: bool) -> ProgressBar {
    if json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(name.to_string());
    bar
}

/// What one scan found, whatever the mode.
struct Scanned {
    report: Option<ScanReport>,
    fault: Option<Corruption>,
    stats: Totals,
}

#[derive(Default)]
struct Totals {
    streams: HashSet<Vec<u8>>,
    types: HashMap<Vec<u8>, u64>,
    data_bytes: u64,
    frame_bytes: u64,
    min_ts: Option<u64>,
    max_ts: Option<u64>,
    printed: u64,
}

/// `list`, `verify`, `stats` and `dump` of the journals `t.path` names: scans each, then
/// reports it (with `--json`, one document for all of them; `dump`, a line per frame or record).
fn run(t: &Target, mode: Mode) -> anyhow::Result<Outcome> {
    let journals = journals(&t.path, t.partition)?;
    let mut out = std::io::stdout().lock();
    let mut docs = Vec::new();
    let mut any_corrupt = false;
    for j in &journals {
        let Some(scanned) = scan_journal(&mut out, t, mode, j)? else {
            // Standard output was closed (`| head`): stop quietly.
            return Ok(Outcome::Clean);
        };
        any_corrupt |= scanned.fault.is_some();
        report_journal(&mut out, t.json, mode, j, &scanned, &mut docs)?;
    }
    if t.json && !matches!(mode, Mode::Dump { .. }) {
        let doc = json!({"ok": !any_corrupt, "journals": docs});
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
    }
    Ok(if any_corrupt {
        Outcome::Corrupt
    } else {
        Outcome::Clean
    })
}

/// Scans one journal, handing every frame to `on_frame` (which prints what `dump` shows and
/// counts what `stats` shows). `None` when standard output was closed.
fn scan_journal(
    out: &mut impl Write,
    t: &Target,
    mode: Mode,
    j: &Journal,
) -> anyhow::Result<Option<Scanned>> {
    let cfg = ScanConfig {
        store_id: j.store_id,
        frame_bytes_max: t.frame_bytes_max,
        in_flight_max: t.in_flight_frames,
        first_segment: None,
    };
    let bar = progress_bar(j.bytes_on_disk, &j.name, t.json);
    let mut totals = Totals::default();
    let mut write_err: Option<std::io::Error> = None;
    let result = block_on(scan(
        &j.storage,
        &cfg,
        |info, frame| {
            if write_err.is_some() {
                return;
            }
            if let Err(e) = on_frame(out, mode, t.json, &j.name, info, frame, &mut totals) {
                write_err = Some(e);
            }
        },
        |bytes| bar.set_position(bytes),
    ));
    bar.finish_and_clear();
    if let Some(e) = write_err {
        // A closed pipe (`| head`) ends the dump quietly.
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            return Ok(None);
        }
        return Err(e.into());
    }
    Ok(Some(match result {
        Ok(report) => Scanned {
            report: Some(report),
            fault: None,
            stats: totals,
        },
        Err(JournalError::Corrupt(c)) => Scanned {
            report: None,
            fault: Some(c),
            stats: totals,
        },
        Err(e) => return Err(anyhow!(e).context(format!("scanning {}", j.name))),
    }))
}

/// Reports one scanned journal as the mode asks: as text now, or (with `--json`) as a
/// document added to `docs`. `dump` has printed its lines while scanning; only a fault is left.
fn report_journal(
    out: &mut impl Write,
    as_json: bool,
    mode: Mode,
    j: &Journal,
    scanned: &Scanned,
    docs: &mut Vec<Value>,
) -> anyhow::Result<()> {
    match mode {
        Mode::Dump { .. } => {
            if let Some(c) = &scanned.fault {
                if as_json {
                    writeln!(
                        out,
                        "{}",
                        json!({"journal": j.name, "fault": fault_json(c)})
                    )?;
                } else {
                    writeln!(out, "{}: FAULT {c}", j.name)?;
                }
            }
        }
        Mode::List => {
            let doc = list_doc(j, scanned);
            if as_json {
                docs.push(doc);
            } else {
                print_list(out, j, scanned)?;
            }
        }
        Mode::Verify => {
            let doc = verify_doc(j, scanned);
            if as_json {
                docs.push(doc);
            } else {
                print_verify(out, j, scanned)?;
            }
        }
        Mode::Stats => {
            let doc = stats_doc(j, scanned);
            if as_json {
                docs.push(doc);
            } else {
                print_stats(out, &doc)?;
            }
        }
    }
    Ok(())
}

/// One frame of the scan: its bytes and records counted into `totals` (for `stats`, each
/// record's stream, type and time too), and for `dump` the frame and its records in range
/// printed.
#[allow(clippy::too_many_arguments)]
fn on_frame(
    out: &mut impl Write,
    mode: Mode,
    as_json: bool,
    journal: &str,
    info: &FrameInfo,
    frame: &[u8],
    totals: &mut Totals,
) -> std::io::Result<()> {
    let m = &info.meta;
    totals.frame_bytes += u64::from(m.padded_len);
    let body = &frame[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + m.body_len as usize];
    let print = match mode {
        Mode::Dump {
            from_lsn,
            limit,
            frames_only,
        } => {
            let in_range = m.end_lsn() > from_lsn && totals.printed < limit;
            if in_range {
                print_frame(out, as_json, journal, info)?;
            }
            (!frames_only && in_range).then_some((from_lsn, limit))
        }
        _ => None,
    };
    for r in RecordIter::new(body) {
        // The scan checked the records of every frame it hands over.
        let Ok(view) = r else { break };
        let lsn = view.lsn;
        let rec = &view.record;
        totals.data_bytes += (rec.data.len() + rec.metadata.len()) as u64;
        if matches!(mode, Mode::Stats) {
            count_record(totals, rec);
        }
        let Some((from_lsn, limit)) = print else {
            continue;
        };
        if lsn < from_lsn || totals.printed >= limit {
            continue;
        }
        totals.printed += 1;
        print_record(out, as_json, journal, lsn, rec)?;
    }
    Ok(())
}

/// `stats` of one record: its stream, its event type, its time.
fn count_record(totals: &mut Totals, rec: &RecordRef<'_>) {
    if !totals.streams.contains(rec.stream) {
        totals.streams.insert(rec.stream.to_vec());
    }
    *totals.types.entry(rec.event_type.to_vec()).or_default() += 1;
    totals.min_ts = Some(
        totals
            .min_ts
            .map_or(rec.timestamp_ns, |t| t.min(rec.timestamp_ns)),
    );
    totals.max_ts = Some(
        totals
            .max_ts
            .map_or(rec.timestamp_ns, |t| t.max(rec.timestamp_ns)),
    );
}

/// `dump`'s line for a frame header.
fn print_frame(
    out: &mut impl Write,
    as_json: bool,
    journal: &str,
    info: &FrameInfo,
) -> std::io::Result<()> {
    let m = &info.meta;
    if as_json {
        let doc = json!({"journal": journal, "frame": {
            "segment_seq": info.segment_seq, "offset": info.offset,
            "first_lsn": m.first_lsn, "records": m.record_count,
            "body_len": m.body_len, "padded_len": m.padded_len,
            "acked_lsn": m.acked_lsn, "header_crc": format!("{:08x}", m.header_crc),
            "body_crc": format!("{:08x}", m.body_crc),
            "prev_crc": format!("{:08x}", m.prev_crc)}});
        writeln!(out, "{doc}")?;
    } else {
        writeln!(
            out,
            "{journal} frame seg={} off={} lsn={}..{} records={} body={} padded={} \
             acked<{} crc={:08x} prev={:08x}",
            info.segment_seq,
            info.offset,
            m.first_lsn,
            m.end_lsn(),
            m.record_count,
            m.body_len,
            m.padded_len,
            m.acked_lsn,
            m.header_crc,
            m.prev_crc
        )?;
    }
    Ok(())
}

/// `dump`'s line for a record.
fn print_record(
    out: &mut impl Write,
    as_json: bool,
    journal: &str,
    lsn: u64,
    rec: &RecordRef<'_>,
) -> std::io::Result<()> {
    let stream = String::from_utf8_lossy(rec.stream);
    let event_type = String::from_utf8_lossy(rec.event_type);
    if as_json {
        let doc = json!({"journal": journal, "record": {
            "lsn": lsn, "kind": rec.kind, "stream": stream, "stream_version": rec.stream_version,
            "event_type": event_type, "timestamp_ns": rec.timestamp_ns,
            "event_id": hex(&rec.event_id),
            "value": if rec.value.is_nan() { Value::Null } else { json!(rec.value) },
            "data": String::from_utf8_lossy(rec.data), "data_len": rec.data.len(),
            "metadata": String::from_utf8_lossy(rec.metadata)}});
        writeln!(out, "{doc}")?;
    } else {
        writeln!(
            out,
            "  lsn={lsn} {stream}@{} {event_type} ts={} value={} data[{}]={}",
            rec.stream_version,
            rec.timestamp_ns,
            rec.value,
            rec.data.len(),
            preview(rec.data)
        )?;
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The first 48 bytes of data as escaped text.
fn preview(data: &[u8]) -> String {
    let shown: String = data
        .iter()
        .take(48)
        .flat_map(|&b| std::ascii::escape_default(b))
        .map(char::from)
        .collect();
    if data.len() > 48 {
        format!("\"{shown}\"…")
    } else {
        format!("\"{shown}\"")
    }
}

fn fault_json(c: &Corruption) -> Value {
    json!({"path": c.path, "segment_seq": c.segment_seq, "offset": c.offset, "reason": c.reason})
}

/// The torn tail a clean scan found, if any: (segment, offset, bytes to zero, why).
fn torn_tail(r: &ScanReport) -> Option<(u64, u64, u64, &'static str)> {
    let fault = r.tail_fault?;
    if fault == evring::journal::format::FrameFault::Empty && r.dirty.is_none() {
        return None;
    }
    let (seg, off) = r.tail.unwrap_or((0, 0));
    let len = r.dirty.map_or(0, |d| d.len);
    Some((seg, off, len, fault.describe()))
}

fn list_doc(j: &Journal, s: &Scanned) -> Value {
    let segments: Vec<Value> = s
        .report
        .iter()
        .flat_map(|r| &r.segments)
        .map(|g| {
            json!({"seq": g.seq, "path": g.path, "bytes": g.bytes, "partition": g.meta.partition,
                   "base_lsn": g.meta.base_lsn, "created_unix_ns": g.meta.created_unix_ns,
                   "header_copies_ok": g.header_copies_ok, "frames": g.frames,
                   "records": g.records, "first_lsn": g.first_lsn, "end_lsn": g.end_lsn,
                   "used_bytes": g.end_offset})
        })
        .collect();
    json!({"journal": j.name, "segments": segments, "fault": s.fault.as_ref().map(fault_json)})
}

fn print_list(out: &mut impl Write, j: &Journal, s: &Scanned) -> std::io::Result<()> {
    writeln!(out, "{}:", j.name)?;
    if let Some(r) = &s.report {
        if r.segments.is_empty() {
            writeln!(out, "  no segments")?;
        }
        for g in &r.segments {
            let headers = match g.header_copies_ok {
                [true, true] => "headers ok",
                [true, false] => "header copy 1 damaged",
                [false, true] => "header copy 0 damaged",
                [false, false] => "both headers damaged",
            };
            let lsns = match g.first_lsn {
                Some(first) => format!("lsn {first}..{}", g.end_lsn),
                None => "empty".to_string(),
            };
            writeln!(
                out,
                "  {:>6}  {}  {} frames  {} records  {}/{} bytes used  {}  {}",
                g.seq, lsns, g.frames, g.records, g.end_offset, g.bytes, headers, g.path
            )?;
        }
    }
    if let Some(c) = &s.fault {
        writeln!(out, "  FAULT: {c}")?;
    }
    Ok(())
}

fn verify_doc(j: &Journal, s: &Scanned) -> Value {
    let (frames, records, next_lsn, torn) = match &s.report {
        Some(r) => (
            Some(r.frames),
            Some(r.records),
            Some(r.next_lsn),
            torn_tail(r).map(|(seg, off, len, why)| {
                json!({"segment_seq": seg, "offset": off, "dirty_bytes": len, "reason": why})
            }),
        ),
        None => (None, None, None, None),
    };
    json!({"journal": j.name, "ok": s.fault.is_none(), "frames": frames, "records": records,
           "next_lsn": next_lsn, "torn_tail": torn, "fault": s.fault.as_ref().map(fault_json)})
}

fn print_verify(out: &mut impl Write, j: &Journal, s: &Scanned) -> std::io::Result<()> {
    match (&s.report, &s.fault) {
        (_, Some(c)) => writeln!(
            out,
            "{}: CORRUPT segment {} ({}) offset {}: {}",
            j.name, c.segment_seq, c.path, c.offset, c.reason
        ),
        (Some(r), None) => {
            write!(
                out,
                "{}: ok, {} segments, {} frames, {} records, next LSN {}",
                j.name,
                r.segments.len(),
                r.frames,
                r.records,
                r.next_lsn
            )?;
            match torn_tail(r) {
                Some((seg, off, len, why)) => writeln!(
                    out,
                    "; torn tail at segment {seg} offset {off} ({why}): {len} bytes of an \
                     unacknowledged write, zeroed at the next start"
                ),
                None => writeln!(out),
            }
        }
        (None, None) => Ok(()),
    }
}

fn stats_doc(j: &Journal, s: &Scanned) -> Value {
    let t = &s.stats;
    let r = s.report.as_ref();
    let frames = r.map_or(0, |r| r.frames);
    let records = r.map_or(0, |r| r.records);
    let mut types: Vec<(&Vec<u8>, &u64)> = t.types.iter().collect();
    types.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let top: Vec<Value> = types
        .iter()
        .take(10)
        .map(|(name, n)| json!({"event_type": String::from_utf8_lossy(name), "records": n}))
        .collect();
    let segments = r.map_or(0, |r| r.segments.len());
    let first_lsn = r.and_then(|r| r.segments.iter().find_map(|g| g.first_lsn));
    json!({
        "journal": j.name,
        "ok": s.fault.is_none(),
        "segments": segments,
        "bytes_on_disk": j.bytes_on_disk,
        "frame_bytes": t.frame_bytes,
        "fill": if j.bytes_on_disk > 0 { t.frame_bytes as f64 / j.bytes_on_disk as f64 } else { 0.0 },
        "frames": frames,
        "records": records,
        "first_lsn": first_lsn,
        "next_lsn": r.map(|r| r.next_lsn),
        "streams": t.streams.len(),
        "event_types": t.types.len(),
        "top_event_types": top,
        "data_bytes": t.data_bytes,
        "records_per_frame": if frames > 0 { records as f64 / frames as f64 } else { 0.0 },
        "bytes_per_frame": if frames > 0 { t.frame_bytes as f64 / frames as f64 } else { 0.0 },
        "min_timestamp_ns": t.min_ts,
        "max_timestamp_ns": t.max_ts,
        "fault": s.fault.as_ref().map(fault_json),
    })
}

fn print_stats(out: &mut impl Write, d: &Value) -> std::io::Result<()> {
    writeln!(out, "{}:", d["journal"].as_str().unwrap_or(""))?;
    for key in [
        "segments",
        "bytes_on_disk",
        "frame_bytes",
        "fill",
        "frames",
        "records",
        "first_lsn",
        "next_lsn",
        "streams",
        "event_types",
        "data_bytes",
        "records_per_frame",
        "bytes_per_frame",
        "min_timestamp_ns",
        "max_timestamp_ns",
    ] {
        let v = &d[key];
        let shown = match v.as_f64() {
            Some(f) if v.is_f64() => format!("{f:.3}"),
            _ => v.to_string(),
        };
        writeln!(out, "  {key:<18} {shown}")?;
    }
    if let Some(types) = d["top_event_types"].as_array() {
        for t in types {
            writeln!(
                out,
                "  type {:<24} {}",
                t["event_type"].as_str().unwrap_or(""),
                t["records"]
            )?;
        }
    }
    if let Some(f) = d["fault"].as_object() {
        writeln!(
            out,
            "  FAULT: {} at offset {}: {}",
            f["path"].as_str().unwrap_or(""),
            f["offset"],
            f["reason"].as_str().unwrap_or("")
        )?;
    }
    Ok(())
}
