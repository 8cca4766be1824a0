//! `evring-inspect verify DATA_DIR`: checks every file evringd reads when it starts on a data
//! directory, with the checks evringd applies, so that a clean verify means a clean start.
//!
//! In order:
//!
//! - `MANIFEST` loads, and its store id is the one the journals carry. When every journal
//!   agrees on another id, the fault is the MANIFEST's (and the journals' id is used for the
//!   checks below); a journal that alone carries another id is the journal's fault.
//! - Per partition (only `--partition N` when given), its stream store `p<N>/`: the journal
//!   (the recovery scan, `evring::journal::scan`); every snapshot file
//!   (`evring::stream::read_partition_snapshot`: header, both checksums, kind,
//!   store id, partition, LSN, the image decodes and holds together); the newest good
//!   snapshot continues into the journal, or with none the journal still starts at segment 0.
//! - Its key-value store `p<N>/kv/` (when present): `CODEC` names JSON; the journal
//!   `kv/journal/` (the scan, and every command record is a `kv` command that decodes, as
//!   replay decodes it); every snapshot (`evring::engine::read_model_snapshot`, then the model
//!   decodes); the journal reaches the newest good snapshot's LSN.
//! - Each served model's store `model-<name>/` (without `--partition`): `CODEC`, the journal,
//!   the snapshots. Their model bytes are decoded as JSON when the store's codec is JSON;
//!   binary model bytes only the model's own code can decode.
//!
//! Verify is stricter than start-up in one way: a damaged snapshot is a fault here, while
//! evringd logs it and falls back to an older snapshot or the journal.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::bail;
use serde_json::{json, Value};

use evring::engine::kv::{KvCommand, KvModel};
use evring::engine::{model_snapshot_owner, read_model_snapshot, Codec};
use evring::error::{Corruption, JournalError};
use evring::journal::device::segment_file_name;
use evring::journal::format::{RecordIter, StoreId, RECORD_KIND_COMMAND};
use evring::journal::scan::{scan, ScanConfig, ScanReport};
use evring::journal::{block_on, hex, StdStorage};
use evring::manifest::{Manifest, ManifestError, MANIFEST_FILE};
use evring::stream::read_partition_snapshot;

use crate::{print_verify, progress_bar, verify_doc, Journal, Outcome, Scanned, Target, Totals};

/// What kind of store a journal with its snapshots is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A partition's streams (`p<N>/`).
    Partition(u32),
    /// A partition's key-value store (`p<N>/kv/`).
    Kv(u32),
    /// A served model (`model-<name>/`).
    Model,
}

/// One store of the data directory: its journal, and the directory of its snapshots and
/// `CODEC`.
struct Store {
    label: String,
    kind: Kind,
    dir: PathBuf,
    journal: Journal,
    scanned: Scanned,
}

/// A fault in a file that is not a journal segment (MANIFEST, a snapshot, `CODEC`).
struct FileFault {
    /// What it concerns: `MANIFEST`, a store's label.
    label: String,
    path: PathBuf,
    reason: String,
}

/// The checks of one snapshot file.
struct SnapshotCheck {
    store: String,
    path: PathBuf,
    lsn: u64,
    fault: Option<String>,
}

/// True when `path` is a data directory (it has a `MANIFEST`, readable or not).
pub(crate) fn is_data_dir(path: &Path) -> bool {
    path.join(MANIFEST_FILE).is_file()
}

/// Checks the data directory `t.path`, in the order the module documentation gives, and
/// reports every fault found.
pub(crate) fn verify_data_dir(t: &Target) -> anyhow::Result<Outcome> {
    let manifest_path = t.path.join(MANIFEST_FILE);
    let mut faults: Vec<FileFault> = Vec::new();
    let manifest = load_manifest(&t.path, &manifest_path, &mut faults)?;
    let partitions = match &manifest {
        Some(m) => m.partitions,
        // Without a readable MANIFEST, check the partition directories there are.
        None => partition_dirs(&t.path)?,
    };
    if let Some(p) = t.partition.filter(|&p| p >= partitions) {
        bail!(
            "{} has {partitions} partitions; there is no partition {p}",
            t.path.display()
        );
    }

    let mut stores = scan_stores(t, partitions)?;
    let store_id = agreed_store_id(manifest.as_ref(), &stores, &manifest_path, &mut faults);
    if let Some(want) = store_id {
        mark_foreign_journals(&mut stores, want);
    }
    let snapshots = check_stores(&mut stores, store_id, &mut faults)?;

    print(
        t,
        &manifest_path,
        manifest.as_ref(),
        &stores,
        &snapshots,
        &faults,
    )
}

/// Loads the MANIFEST. A MANIFEST that does not load is a fault (and `None`); a data
/// directory without one, or one that cannot be read, is an error.
fn load_manifest(
    data_dir: &Path,
    manifest_path: &Path,
    faults: &mut Vec<FileFault>,
) -> anyhow::Result<Option<Manifest>> {
    Ok(match Manifest::load(data_dir) {
        Ok(Some(m)) => Some(m),
        Ok(None) => bail!("{} has no MANIFEST", data_dir.display()),
        Err(e @ ManifestError::Io { .. }) => return Err(e.into()),
        Err(e) => {
            faults.push(FileFault {
                label: "MANIFEST".into(),
                path: manifest_path.to_path_buf(),
                reason: format!(
                    "{e}; restore the MANIFEST from a backup of this data directory (its \
                     store id is in every segment header: `evring-inspect list --json`)"
                ),
            });
            None
        }
    })
}

/// Scans every store to check, in the order they are reported: per partition its streams
/// and its key-value store, then (without `--partition`) the served models.
fn scan_stores(t: &Target, partitions: u32) -> anyhow::Result<Vec<Store>> {
    let mut stores = Vec::new();
    for p in (0..partitions).filter(|&p| t.partition.is_none_or(|want| want == p)) {
        let dir = Manifest::partition_dir(&t.path, p);
        stores.push(scan_store(
            t,
            format!("p{p}"),
            Kind::Partition(p),
            &dir,
            &dir,
        )?);
        let kv = dir.join("kv");
        if kv.is_dir() {
            stores.push(scan_store(
                t,
                format!("p{p}/kv"),
                Kind::Kv(p),
                &kv,
                &kv.join("journal"),
            )?);
        }
    }
    if t.partition.is_none() {
        let mut models: Vec<PathBuf> = std::fs::read_dir(&t.path)?
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("model-"))
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        models.sort();
        for dir in models {
            let label = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            stores.push(scan_store(
                t,
                label,
                Kind::Model,
                &dir,
                &dir.join("journal"),
            )?);
        }
    }
    Ok(stores)
}

/// Whose store id: the MANIFEST's, unless every journal agrees on another one (then the
/// MANIFEST is at fault).
fn agreed_store_id(
    manifest: Option<&Manifest>,
    stores: &[Store],
    manifest_path: &Path,
    faults: &mut Vec<FileFault>,
) -> Option<StoreId> {
    let journal_ids: Vec<StoreId> = stores
        .iter()
        .filter_map(|s| s.scanned.report.as_ref().and_then(|r| r.store_id))
        .collect();
    let agreed = journal_ids
        .first()
        .filter(|first| journal_ids.iter().all(|id| id == *first))
        .copied();
    match (manifest, agreed) {
        (Some(m), Some(id)) if id != m.store_id => {
            faults.push(FileFault {
                label: "MANIFEST".into(),
                path: manifest_path.to_path_buf(),
                reason: format!(
                    "its store id {} is not the store id {} every journal carries; the \
                     MANIFEST is damaged or belongs to another data directory (restore it from \
                     a backup of this one)",
                    hex(&m.store_id),
                    hex(&id)
                ),
            });
            Some(id)
        }
        (Some(m), _) => Some(m.store_id),
        (None, _) => agreed.or(journal_ids.first().copied()),
    }
}

/// A journal of another store: its first segment is at fault.
fn mark_foreign_journals(stores: &mut [Store], want: StoreId) {
    for s in stores {
        let Some(report) = &s.scanned.report else {
            continue;
        };
        match (report.store_id, report.segments.first()) {
            (Some(have), Some(first)) if have != want && s.scanned.fault.is_none() => {
                s.scanned.fault = Some(Corruption {
                    path: first.path.clone(),
                    segment_seq: first.seq,
                    offset: 0,
                    reason: format!(
                        "segment belongs to another store (store id {}; the MANIFEST says \
                         {})",
                        hex(&have),
                        hex(&want)
                    ),
                });
            }
            _ => {}
        }
    }
}

/// Per store: CODEC, snapshots, and whether the journal continues the newest good snapshot.
fn check_stores(
    stores: &mut [Store],
    store_id: Option<StoreId>,
    faults: &mut Vec<FileFault>,
) -> anyhow::Result<Vec<SnapshotCheck>> {
    let mut snapshots = Vec::new();
    for s in stores {
        let codec = match s.kind {
            Kind::Partition(_) => None,
            Kind::Kv(_) | Kind::Model => check_codec(s, faults),
        };
        let newest_good = check_snapshots(s, codec, store_id, &mut snapshots)?;
        check_continuity(s, newest_good, faults);
    }
    Ok(snapshots)
}

/// Checks every snapshot file of one store into `snapshots`; returns the newest good one
/// (its LSN and path).
fn check_snapshots(
    s: &Store,
    codec: Option<Codec>,
    store_id: Option<StoreId>,
    snapshots: &mut Vec<SnapshotCheck>,
) -> anyhow::Result<Option<(u64, PathBuf)>> {
    let mut newest_good: Option<(u64, PathBuf)> = None;
    for (lsn, path) in evring::snapshot::list(&s.dir)? {
        // Without any store id (no MANIFEST, no journal), the snapshot's own is all there is.
        let store = store_id
            .or_else(|| evring::snapshot::read_meta(&path).ok().map(|m| m.store_id))
            .unwrap_or_default();
        let fault = check_snapshot(s.kind, codec, &path, lsn, store).err();
        if fault.is_none() && newest_good.is_none() {
            newest_good = Some((lsn, path.clone()));
        }
        snapshots.push(SnapshotCheck {
            store: s.label.clone(),
            path,
            lsn,
            fault,
        });
    }
    Ok(newest_good)
}

/// Whether a store's journal, scanned clean, continues its newest good snapshot: a missing
/// start is a fault of its first segment, a gap after the snapshot the snapshot's.
fn check_continuity(
    s: &mut Store,
    newest_good: Option<(u64, PathBuf)>,
    faults: &mut Vec<FileFault>,
) {
    if let (Some(report), None) = (&s.scanned.report, &s.scanned.fault) {
        match continuity(s.kind, report, newest_good.as_ref().map(|(l, _)| *l)) {
            Ok(()) => {}
            Err(Gap::Start(reason)) => {
                let first = &report.segments[0];
                s.scanned.fault = Some(Corruption {
                    path: first.path.clone(),
                    segment_seq: first.seq,
                    offset: 0,
                    reason,
                });
            }
            Err(Gap::Snapshot(reason)) => faults.push(FileFault {
                label: s.label.clone(),
                path: newest_good.map(|(_, p)| p).unwrap_or_default(),
                reason,
            }),
        }
    }
}

/// How many partition directories (`p<N>`) `data_dir` has: one more than the highest N.
fn partition_dirs(data_dir: &Path) -> anyhow::Result<u32> {
    let mut n = 0;
    for e in std::fs::read_dir(data_dir)?.flatten() {
        let name = e.file_name();
        let Some(p) = name
            .to_str()
            .and_then(|s| s.strip_prefix('p'))
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if e.path().is_dir() {
            n = n.max(p.saturating_add(1));
        }
    }
    Ok(n)
}

/// Scans one store's journal as recovery does (the store id taken from its first segment:
/// the caller compares it with the MANIFEST's), and for a key-value store decodes every
/// command as replay does.
fn scan_store(
    t: &Target,
    label: String,
    kind: Kind,
    dir: &Path,
    journal_dir: &Path,
) -> anyhow::Result<Store> {
    let journal = Journal {
        name: label.clone(),
        storage: StdStorage::new(journal_dir),
        store_id: None,
        bytes_on_disk: crate::segment_bytes(journal_dir, None),
    };
    let cfg = ScanConfig {
        store_id: None,
        frame_bytes_max: t.frame_bytes_max,
        in_flight_max: t.in_flight_frames,
        first_segment: None,
    };
    let bar = progress_bar(journal.bytes_on_disk, &label, t.json);
    let mut replay_fault: Option<Corruption> = None;
    let result = block_on(scan(
        &journal.storage,
        &cfg,
        |info, frame| {
            if !matches!(kind, Kind::Kv(_)) || replay_fault.is_some() {
                return;
            }
            let body = &frame[evring::constants::FRAME_HEADER_BYTES
                ..evring::constants::FRAME_HEADER_BYTES + info.meta.body_len as usize];
            for r in RecordIter::new(body).flatten() {
                if r.record.kind != RECORD_KIND_COMMAND {
                    continue;
                }
                if let Err(reason) = check_kv_command(r.record.event_type, r.record.data) {
                    replay_fault = Some(Corruption {
                        path: journal_dir
                            .join(segment_file_name(info.segment_seq))
                            .display()
                            .to_string(),
                        segment_seq: info.segment_seq,
                        offset: info.offset,
                        reason: format!(
                            "the command at LSN {} cannot be replayed: {reason}",
                            r.lsn
                        ),
                    });
                    return;
                }
            }
        },
        |bytes| bar.set_position(bytes),
    ));
    bar.finish_and_clear();
    let scanned = match result {
        Ok(report) => Scanned {
            fault: replay_fault,
            report: Some(report),
            stats: Totals::default(),
        },
        Err(JournalError::Corrupt(c)) => Scanned {
            report: None,
            fault: Some(c),
            stats: Totals::default(),
        },
        Err(e) => return Err(anyhow::anyhow!(e).context(format!("scanning {label}"))),
    };
    Ok(Store {
        label,
        kind,
        dir: dir.to_path_buf(),
        journal,
        scanned,
    })
}

/// A key-value command record as the engine's replay takes it: registered under the `kv`
/// command's name, and decodable with the store's codec (JSON).
fn check_kv_command(name: &[u8], data: &[u8]) -> Result<(), String> {
    let want = <KvCommand as evring::engine::Command<KvModel>>::NAME;
    if name != want.as_bytes() {
        return Err(format!(
            "command {:?} is not a key-value command ({want:?})",
            String::from_utf8_lossy(name)
        ));
    }
    Codec::Json
        .decode::<KvCommand>(data)
        .map(|_| ())
        .map_err(|e| format!("cannot decode command {want}: {e}"))
}

/// The codec a key-value or model store's `CODEC` names, as the engine opening it requires
/// (the key-value store: JSON). A missing `CODEC` is written at the next start.
fn check_codec(s: &Store, faults: &mut Vec<FileFault>) -> Option<Codec> {
    let path = s.dir.join("CODEC");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return matches!(s.kind, Kind::Kv(_)).then_some(Codec::Json)
        }
        Err(e) => {
            faults.push(FileFault {
                label: s.label.clone(),
                path,
                reason: format!("cannot read it: {e}"),
            });
            return None;
        }
    };
    let codec = Codec::from_name(&text);
    let reason = match (s.kind, codec) {
        (Kind::Kv(_), Some(Codec::Json)) | (Kind::Model, Some(_)) => return codec,
        (Kind::Kv(_), _) => format!(
            "names the codec {:?}; the key-value store is always JSON (write \"json\" in it)",
            text.trim()
        ),
        _ => format!(
            "names the codec {:?}; it must be \"json\" or \"binary\", the codec the model's \
             store was created with",
            text.trim()
        ),
    };
    faults.push(FileFault {
        label: s.label.clone(),
        path,
        reason,
    });
    None
}

/// Checks one snapshot file as the store's recovery would before using it.
fn check_snapshot(
    kind: Kind,
    codec: Option<Codec>,
    path: &Path,
    lsn: u64,
    store: StoreId,
) -> Result<(), String> {
    match kind {
        Kind::Partition(p) => read_partition_snapshot(path, lsn, store, p)
            .map(|_| ())
            .map_err(|e| e.to_string()),
        Kind::Kv(_) | Kind::Model => {
            // A served model's engine journals as partition 0; the key-value store of
            // partition N as N. Without a known codec (no or a bad `CODEC`, reported apart),
            // the snapshot's own is taken.
            let partition = match kind {
                Kind::Kv(p) => p,
                _ => 0,
            };
            let mut owner = model_snapshot_owner(store, partition, codec.unwrap_or(Codec::Binary));
            if codec.is_none() {
                if let Ok(meta) = evring::snapshot::read_meta(path) {
                    owner.codec = meta.codec;
                }
            }
            let snap = read_model_snapshot(path, lsn, &owner).map_err(|e| e.to_string())?;
            let decoded = match (kind, codec) {
                (Kind::Kv(_), _) => Codec::Json.decode::<KvModel>(&snap.model).map(|_| ()),
                (_, Some(Codec::Json)) => Codec::Json.decode::<Value>(&snap.model).map(|_| ()),
                // Binary model bytes (or an unknown codec): only the model's code decodes them.
                _ => Ok(()),
            };
            decoded.map_err(|e| format!("the model does not decode: {e}"))
        }
    }
}

/// Why a store's journal does not continue its snapshots.
enum Gap {
    /// The journal's start is missing (a fault of its first segment).
    Start(String),
    /// The newest good snapshot is not continued by the journal (a fault of the snapshot).
    Snapshot(String),
}

/// What recovery requires of a journal and the snapshot it starts from.
fn continuity(kind: Kind, r: &ScanReport, snapshot_lsn: Option<u64>) -> Result<(), Gap> {
    let first_segment = r.segments.first().map_or(0, |s| s.seq);
    let first_lsn = r.segments.iter().find_map(|s| s.first_lsn);
    match (kind, snapshot_lsn) {
        (Kind::Partition(p), None) if first_segment > 0 => Err(Gap::Start(format!(
            "partition {p}: the journal starts at segment {first_segment} (retention removed \
             the segments before it) and no good snapshot covers them; evringd refuses to \
             start. Restore the partition's snapshot files from a backup"
        ))),
        (Kind::Partition(_), Some(from))
            if r.next_lsn < from || (from < r.next_lsn && first_lsn.is_some_and(|f| f > from)) =>
        {
            Err(Gap::Snapshot(format!(
                "covers LSNs below {from} but the journal does not continue from there (it \
                 holds LSNs {}..{}); acknowledged data may be missing and evringd refuses to \
                 start. Restore the partition from a backup, or move this snapshot aside to \
                 recover from the journal alone",
                first_lsn.unwrap_or(r.next_lsn),
                r.next_lsn
            )))
        }
        (Kind::Kv(_) | Kind::Model, Some(from)) if r.next_lsn < from => {
            Err(Gap::Snapshot(format!(
                "covers LSNs below {from} but the journal ends at {}; evringd refuses to start. \
             Restore the store from a backup",
                r.next_lsn
            )))
        }
        _ => Ok(()),
    }
}

fn file_fault_json(f: &FileFault) -> Value {
    json!({"store": f.label, "path": f.path.display().to_string(), "segment_seq": null,
           "offset": null, "reason": f.reason})
}

/// Reports the checks, as JSON or as text, and whether they found a fault.
fn print(
    t: &Target,
    manifest_path: &Path,
    manifest: Option<&Manifest>,
    stores: &[Store],
    snapshots: &[SnapshotCheck],
    faults: &[FileFault],
) -> anyhow::Result<Outcome> {
    let mut out = std::io::stdout().lock();
    let manifest_faults: Vec<&FileFault> =
        faults.iter().filter(|f| f.label == "MANIFEST").collect();
    let all_faults = all_faults(&manifest_faults, stores, snapshots, faults);
    let ok = all_faults.is_empty();
    if t.json {
        let doc = json!({
            "ok": ok,
            "manifest": {
                "path": manifest_path.display().to_string(),
                "ok": manifest_faults.is_empty(),
                "store_id": manifest.map(|m| hex(&m.store_id)),
                "partitions": manifest.map(|m| m.partitions),
                "fault": manifest_faults.first().map(|f| file_fault_json(f)),
            },
            "journals": stores.iter().map(|s| verify_doc(&s.journal, &s.scanned)).collect::<Vec<_>>(),
            "snapshots": snapshots.iter().map(|c| json!({
                "store": c.store, "path": c.path.display().to_string(), "lsn": c.lsn,
                "ok": c.fault.is_none(),
                "fault": c.fault.as_ref().map(|r| json!({"path": c.path.display().to_string(), "reason": r})),
            })).collect::<Vec<_>>(),
            "faults": all_faults,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
    } else {
        print_manifest_text(&mut out, manifest, &manifest_faults)?;
        for s in stores {
            print_store_text(&mut out, s, snapshots, faults)?;
        }
        print_faults_summary(&mut out, &all_faults)?;
    }
    Ok(if ok { Outcome::Clean } else { Outcome::Corrupt })
}

/// Every fault, in the order the checks ran: the MANIFEST, then store by store.
fn all_faults(
    manifest_faults: &[&FileFault],
    stores: &[Store],
    snapshots: &[SnapshotCheck],
    faults: &[FileFault],
) -> Vec<Value> {
    let mut all_faults: Vec<Value> = Vec::new();
    all_faults.extend(manifest_faults.iter().map(|f| file_fault_json(f)));
    for s in stores {
        if let Some(c) = &s.scanned.fault {
            all_faults.push(
                json!({"store": s.label, "path": c.path, "segment_seq": c.segment_seq,
                                   "offset": c.offset, "reason": c.reason}),
            );
        }
        for c in snapshots.iter().filter(|c| c.store == s.label) {
            if let Some(reason) = &c.fault {
                all_faults.push(
                    json!({"store": s.label, "path": c.path.display().to_string(),
                                       "segment_seq": null, "offset": null, "reason": reason}),
                );
            }
        }
        for f in faults.iter().filter(|f| f.label == s.label) {
            all_faults.push(file_fault_json(f));
        }
    }
    all_faults
}

/// The MANIFEST's line: its store id and partitions, or its faults.
fn print_manifest_text(
    out: &mut impl Write,
    manifest: Option<&Manifest>,
    manifest_faults: &[&FileFault],
) -> std::io::Result<()> {
    match (manifest, manifest_faults.is_empty()) {
        (Some(m), true) => writeln!(
            out,
            "MANIFEST: ok, store {}, {} partitions",
            hex(&m.store_id),
            m.partitions
        )?,
        _ => {
            for f in manifest_faults {
                writeln!(
                    out,
                    "MANIFEST: CORRUPT ({}): {}",
                    f.path.display(),
                    f.reason
                )?;
            }
        }
    }
    Ok(())
}

/// One store's lines: its journal, each snapshot, then its other files' faults.
fn print_store_text(
    out: &mut impl Write,
    s: &Store,
    snapshots: &[SnapshotCheck],
    faults: &[FileFault],
) -> std::io::Result<()> {
    print_verify(out, &s.journal, &s.scanned)?;
    for c in snapshots.iter().filter(|c| c.store == s.label) {
        let name = c.path.file_name().unwrap_or_default().to_string_lossy();
        match &c.fault {
            None => writeln!(out, "{} {name}: ok, LSN {}", s.label, c.lsn)?,
            Some(reason) => writeln!(
                out,
                "{} {name}: CORRUPT ({}): {reason}",
                s.label,
                c.path.display()
            )?,
        }
    }
    for f in faults.iter().filter(|f| f.label == s.label) {
        writeln!(
            out,
            "{}: CORRUPT ({}): {}",
            s.label,
            f.path.display(),
            f.reason
        )?;
    }
    Ok(())
}

/// The closing line when there are faults: how many, and the first.
fn print_faults_summary(out: &mut impl Write, all_faults: &[Value]) -> std::io::Result<()> {
    if let Some(first) = all_faults.first() {
        writeln!(
            out,
            "{} fault{} found; the first: {}{}: {}",
            all_faults.len(),
            if all_faults.len() == 1 { "" } else { "s" },
            first["path"].as_str().unwrap_or(""),
            first["offset"]
                .as_u64()
                .map_or(String::new(), |o| format!(" at offset {o}")),
            first["reason"].as_str().unwrap_or("")
        )?;
    }
    Ok(())
}
