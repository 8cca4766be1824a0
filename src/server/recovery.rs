//! A shard's life: recovering its partitions (snapshot, then the journal after it, then the
//! partition's key-value store), listening, joining the other shards, serving until the
//! stop, and the clean stop.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use glommio::channels::shared_channel::ConnectedSender;
use std::net::TcpListener;

use super::checks::listen_on;
use super::native::Native;
use super::resp_conn::Resp;
use super::route::{Shard, ShardMsg, Shared};
use super::snapshots::{load_snapshot, SnapshotTasks};
use super::{served_model, Ready, ShardEndpoints};
use crate::engine::kv::{KvCommand, KvModel};
use crate::engine::Engine;
use crate::error::StartError;
use crate::journal::uring::Submit;
use crate::journal::{DiskStorage, Journal, JournalConfig};
use crate::manifest::Manifest;
use crate::protocol::partition_of;
use crate::stream::{Partition, PartitionLimits, Rebuild};

/// What one shard starts from.
pub(super) struct ShardStart {
    pub(super) model: Option<Arc<dyn served_model::ModelFactory>>,
    pub(super) shard_id: usize,
    pub(super) owned: Vec<u32>,
    /// The server's partition count.
    pub(super) partitions: u32,
    pub(super) data_dir: std::path::PathBuf,
    pub(super) journal: JournalConfig,
    pub(super) limits: PartitionLimits,
    /// Who issues this shard's journal writes (`journal_submit`).
    pub(super) submit: Submit,
    pub(super) endpoints: ShardEndpoints,
    /// The client port (shard 0's resolved address for the shards after it).
    pub(super) bind_addr: SocketAddr,
    /// This shard's own port (`shard_ports`), if any.
    pub(super) shard_addr: Option<SocketAddr>,
    /// The RESP port (shard 0's resolved address for the shards after it), if on.
    pub(super) resp_addr: Option<SocketAddr>,
    /// Set by the starter once shard 0 is up.
    pub(super) shared: Arc<std::sync::OnceLock<Arc<Shared>>>,
    /// A later shard failed to start: give up waiting.
    pub(super) stop_early: Arc<AtomicBool>,
}

/// The listeners a shard accepts on.
struct Listeners {
    client: TcpListener,
    own: Option<TcpListener>,
    resp: Option<TcpListener>,
}

impl ShardStart {
    /// Recovers, listens, reports `ready`, joins the other shards, serves until the stop,
    /// then stops cleanly.
    pub(super) async fn run(mut self, ready: &mpsc::Sender<Ready>) -> Result<(), StartError> {
        let endpoints = std::mem::take(&mut self.endpoints);
        let mut partitions = HashMap::new();
        let mut kv = HashMap::new();
        for &p in &self.owned {
            partitions.insert(p, Rc::new(self.recover_partition(p).await?));
            kv.insert(p, self.open_kv(p).await?);
        }
        let net = crate::net::NetRing::current().map_err(|source| StartError::IoUring {
            hint: super::NET_RING_HINT,
            source,
        })?;
        let listeners = self.listen()?;
        let client_addr = local_addr(&listeners.client, self.bind_addr, "")?;
        let own_addr = match (&listeners.own, self.shard_addr) {
            (Some(l), Some(a)) => Some(local_addr(l, a, " (this shard's port)")?),
            _ => None,
        };
        let resp_addr = match (&listeners.resp, self.resp_addr) {
            (Some(l), Some(a)) => Some(local_addr(l, a, " (the RESP port)")?),
            _ => None,
        };
        let listening = super::Listening {
            client: client_addr,
            own: own_addr,
            resp: resp_addr,
        };
        if ready.send(Ok(listening)).is_err() {
            return Ok(()); // start-up was abandoned
        }
        let Some(shared) = self.wait_for_shared().await else {
            return Ok(());
        };
        let shard_cell: Rc<std::cell::RefCell<Option<Rc<Shard>>>> = Rc::default();
        let senders = connect(endpoints, &shard_cell).await;
        let served = self.open_served_model().await?;
        if shared.config.views {
            for (&p, part) in &partitions {
                let _ = shared.views[p as usize].set(part.view());
            }
        }
        let shard = Shard::new(
            self.shard_id,
            shared.clone(),
            partitions,
            kv,
            served,
            senders,
            net,
        );
        *shard_cell.borrow_mut() = Some(shard.clone());
        glommio::spawn_local(shard.clone().accept_loop::<Native>(listeners.client)).detach();
        if let Some(l) = listeners.own {
            glommio::spawn_local(shard.clone().accept_loop::<Native>(l)).detach();
        }
        if let Some(l) = listeners.resp {
            glommio::spawn_local(shard.clone().accept_loop::<Resp>(l)).detach();
        }
        let snapshots = SnapshotTasks::start(&shard, &self.data_dir, self.journal.store_id);
        while !shared.stop.load(Ordering::Acquire) {
            glommio::timer::sleep(Duration::from_millis(10)).await;
        }
        tracing::info!(shard = self.shard_id, "stopping: draining in-flight frames");
        snapshots.stop(&shard, &self.data_dir).await;
        shard.shut_down_connections().await;
        Ok(())
    }

    /// Recovers partition `p`: its newest usable snapshot, then the journal after it.
    async fn recover_partition(&self, p: u32) -> Result<Partition, StartError> {
        let dir = Manifest::partition_dir(&self.data_dir, p);
        let journal_err = |source| StartError::Journal {
            partition: p,
            source,
        };
        let storage = DiskStorage::open(&dir)
            .map_err(|source| StartError::Path {
                what: "open the journal directory",
                path: dir.clone(),
                source,
            })?
            .with_write_mode(self.limits.write_mode)
            .with_submit(self.submit.clone());
        let mut cfg = self.journal.clone();
        cfg.partition = p;
        let started = Instant::now();
        let snapshot = load_snapshot(&dir, self.journal.store_id, p, &self.limits);
        let snapshot_path = snapshot.as_ref().map(|s| s.2.clone());
        let (mut rebuild, resume) = match snapshot {
            Some((rebuild, resume, _)) => (rebuild, resume),
            None => (
                Rebuild::new(self.limits.idempotency_window, self.limits.ring),
                None,
            ),
        };
        let (journal, report) = Journal::open_resuming(storage, cfg, resume, |info, frame| {
            rebuild.frame(info, frame)
        })
        .await
        .map_err(journal_err)?;
        match &snapshot_path {
            // Retention removed the journal's beginning; only a snapshot covers it. Replaying
            // what is left would renumber stream versions: refuse rather than serve that.
            None if report.first_segment > 0 => {
                return Err(StartError::RetainedWithoutSnapshot {
                    partition: p,
                    first_segment: report.first_segment,
                })
            }
            // The journal must hold everything from the snapshot's LSN on, with no gap.
            Some(path)
                if report.next_lsn < rebuild.from_lsn
                    || rebuild.first_seen.is_some_and(|f| f > rebuild.from_lsn) =>
            {
                return Err(StartError::SnapshotGap {
                    partition: p,
                    snapshot: path.clone(),
                    from: rebuild.from_lsn,
                    journal_end: report.next_lsn,
                    first_scanned: rebuild.first_seen,
                });
            }
            _ => {}
        }
        tracing::info!(
            partition = p,
            shard = self.shard_id,
            segments = report.segments,
            frames = report.frames,
            events = rebuild.events,
            snapshot = snapshot_path.as_ref().map(|p| p.display().to_string()),
            snapshot_lsn = rebuild.from_lsn,
            next_lsn = report.next_lsn,
            bytes_scanned = report.bytes_scanned,
            torn_tail_zeroed = report.torn_tail_zeroed.is_some(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "partition recovered"
        );
        let partition = Partition::new(p, journal, rebuild, self.limits);
        // Every stream must be where its name routes (hash tags changed where braced names
        // route): serving one from the wrong partition would split it in two.
        let mut misrouted = None;
        partition.for_each_stream("", |name, _| {
            let routes_to = partition_of(name, self.partitions);
            if routes_to != p && misrouted.is_none() {
                misrouted = Some((name.to_string(), routes_to));
            }
        });
        if let Some((stream, routes_to)) = misrouted {
            return Err(StartError::MisroutedStream {
                partition: p,
                stream,
                routes_to,
            });
        }
        Ok(partition)
    }

    /// Partition `p`'s key-value store: an engine with its own journal in `p<N>/kv/`.
    async fn open_kv(&self, p: u32) -> Result<Engine<KvModel>, StartError> {
        let dir = Manifest::partition_dir(&self.data_dir, p).join("kv");
        let kv_cfg = self.journal.clone();
        Engine::<KvModel>::builder(&format!("kv-p{p}"), kv_cfg.store_id)
            // JSON: the commands are JSON on the wire already, and their serde enums are
            // internally tagged, which the binary codec cannot decode.
            .codec(crate::engine::Codec::Json)
            .journal_config(|j| {
                *j = kv_cfg;
                j.partition = p;
                j.segment_bytes = j.segment_bytes.min(64 << 20);
            })
            .command::<KvCommand>()
            .open(&dir)
            .await
            .map_err(|source| StartError::KvStore {
                partition: p,
                source,
            })
    }

    /// The client port's listener (SO_REUSEPORT: every shard listens on it) and this shard's
    /// own port's.
    fn listen(&self) -> Result<Listeners, StartError> {
        let open = |addr: SocketAddr, what: &str| {
            listen_on(addr).map_err(|source| StartError::Listen {
                addr,
                what: what.to_string(),
                source,
            })
        };
        let own = match self.shard_addr {
            Some(a) => Some(open(a, &format!(" (shard {}'s port)", self.shard_id))?),
            None => None,
        };
        let resp = match self.resp_addr {
            Some(a) => Some(open(a, " (the RESP port, resp_listen)")?),
            None => None,
        };
        Ok(Listeners {
            client: open(self.bind_addr, "")?,
            own,
            resp,
        })
    }

    /// The shared state, once the starter set it (after shard 0 is up); `None` if start-up
    /// was abandoned meanwhile.
    async fn wait_for_shared(&self) -> Option<Arc<Shared>> {
        loop {
            if let Some(s) = self.shared.get() {
                return Some(s.clone());
            }
            if self.stop_early.load(Ordering::Acquire) {
                return None;
            }
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
    }

    /// A user's model, on the shard that owns partition 0.
    async fn open_served_model(
        &self,
    ) -> Result<Option<(String, Rc<dyn served_model::ModelService>)>, StartError> {
        let Some(f) = self.model.as_ref().filter(|_| self.shard_id == 0) else {
            return Ok(None);
        };
        let dir = self.data_dir.join(format!("model-{}", f.name()));
        let mut cfg = self.journal.clone();
        cfg.segment_bytes = cfg.segment_bytes.min(64 << 20);
        let service = f.open(dir, cfg).await.map_err(|source| StartError::Model {
            name: f.name().to_string(),
            source: source.into(),
        })?;
        Ok(Some((f.name().to_string(), service)))
    }
}

/// The address `l` is bound to.
fn local_addr(l: &TcpListener, addr: SocketAddr, what: &str) -> Result<SocketAddr, StartError> {
    l.local_addr().map_err(|e| StartError::Listen {
        addr,
        what: what.to_string(),
        source: e,
    })
}

/// Connects this shard's channels to every other shard: its senders, and a task per
/// receiver that serves what arrives once the shard exists (`cell`). Connecting an
/// endpoint waits for its peer, so receivers connect in their own tasks while this one
/// connects the senders (sequential connects would deadlock shards).
async fn connect(
    endpoints: ShardEndpoints,
    cell: &Rc<std::cell::RefCell<Option<Rc<Shard>>>>,
) -> Vec<Option<ConnectedSender<ShardMsg>>> {
    for rx in endpoints.receivers {
        let cell = cell.clone();
        glommio::spawn_local(async move {
            let rx = rx.connect().await;
            let shard = loop {
                if let Some(s) = cell.borrow().clone() {
                    break s;
                }
                glommio::timer::sleep(Duration::from_millis(1)).await;
            };
            shard.receive_loop(rx).await;
        })
        .detach();
    }
    let mut senders = Vec::new();
    for s in endpoints.senders {
        senders.push(match s {
            Some(s) => Some(s.connect().await),
            None => None,
        });
    }
    senders
}
