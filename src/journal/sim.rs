//! A deterministic simulated disk for the journal's tests.
//!
//! It keeps, per segment file, the bytes the operating system would show (`data`) apart from
//! the bytes that survive a power loss (`durable`): a write lands in `data` and in a list of
//! pending writes; `sync` applies the pending writes to `durable`. [`SimStorage::crash_image`]
//! builds the disk as a power loss would leave it: `durable` plus, for each write still
//! pending, a seeded choice of dropped, applied whole, or torn at a 512-byte sector boundary
//! (a prefix of its sectors reached the media).
//!
//! Faults are scheduled by operation number in a [`FaultPlan`]: a crash after the n-th
//! operation (from then on every operation fails, as if the machine were gone), EIO or
//! ENOSPC on the n-th write or sync, a write misdirected by some blocks, and ENOSPC when a
//! segment is created. Bit flips and garbage are applied directly with
//! [`SimStorage::flip_bit`] and [`SimStorage::overwrite`]. Everything is driven by one seed,
//! so a failing run is reproduced from the seed it prints.
//!
//! All futures complete without waiting, so the simulator runs under any executor and under
//! [`crate::journal::block_on`]. With [`FaultPlan::defer_completions`] the completion of a
//! frame's durable write arrives later, as from a real device's completion queue (the next
//! append reaps it, or a task queued behind the ready ones delivers it), which needs a glommio
//! executor.

use std::cell::{RefCell, RefMut};
use std::collections::BTreeMap;
use std::io;
use std::rc::Rc;

use super::device::{write_then_sync, SegmentFile, Storage};
use crate::constants::{BLOCK_BYTES, SECTOR_BYTES};

/// Faults to inject, by operation count (writes and syncs are counted separately, from 1).
#[derive(Clone, Debug, Default)]
pub struct FaultPlan {
    /// After this many writes+syncs in total, the device is gone: every later call fails.
    pub crash_after_ops: Option<u64>,
    /// The n-th write fails with this error kind (and writes nothing).
    pub fail_write: Option<(u64, io::ErrorKind)>,
    /// The n-th sync fails with this error kind (and makes nothing durable).
    pub fail_sync: Option<(u64, io::ErrorKind)>,
    /// The n-th write lands this many blocks away from where it was aimed.
    pub misdirect_write: Option<(u64, i64)>,
    /// Creating a segment fails with ENOSPC while this is set.
    pub create_enospc: bool,
    /// Durable writes of frames complete later, as on a real device's completion queue:
    /// delivered by the journal's next append ([`Storage::poll_completions`]) or, failing
    /// that, after the tasks that are ready now. Off: they complete before the call returns.
    pub defer_completions: bool,
}

#[derive(Clone, Debug, Default)]
struct SimFile {
    data: Vec<u8>,
    durable: Vec<u8>,
    pending: Vec<(u64, Vec<u8>)>,
    /// Blocks holding acknowledged data ([`Storage::acknowledged`]): a write touching one
    /// panics. Kept across crash images, since acknowledged data is durable.
    acked: std::collections::BTreeSet<u64>,
}

/// Counters the tests read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    pub writes: u64,
    pub syncs: u64,
    pub bytes_written: u64,
    /// Segments made from spares.
    pub recycled: u64,
}

#[derive(Debug)]
struct SimDisk {
    files: BTreeMap<u64, SimFile>,
    /// Retired segments kept for reuse, by their former sequence number.
    spares: BTreeMap<u64, SimFile>,
    rng: u64,
    faults: FaultPlan,
    ops: u64,
    crashed: bool,
    stats: SimStats,
}

impl SimDisk {
    fn next_rand(&mut self) -> u64 {
        // xorshift64*: deterministic, good enough to pick fates.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Counts one operation; fails if the device is (or now becomes) crashed.
    fn op(&mut self) -> io::Result<()> {
        if self.crashed {
            return Err(gone());
        }
        self.ops += 1;
        if let Some(limit) = self.faults.crash_after_ops {
            if self.ops > limit {
                self.crashed = true;
                return Err(gone());
            }
        }
        Ok(())
    }
}

fn gone() -> io::Error {
    io::Error::other("simulated power loss: device gone")
}

fn missing(seq: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("no simulated segment {seq}"),
    )
}

/// Completions of durable writes not delivered yet (`FaultPlan::defer_completions`).
type Deferred = Rc<RefCell<Vec<(Box<dyn FnOnce(io::Result<()>)>, io::Result<()>)>>>;

fn deliver(deferred: &Deferred) {
    let ready = std::mem::take(&mut *deferred.borrow_mut());
    for (done, result) in ready {
        done(result);
    }
}

/// The simulated disk. Cloning shares the same disk.
#[derive(Clone)]
pub struct SimStorage {
    disk: Rc<RefCell<SimDisk>>,
    deferred: Deferred,
}

impl std::fmt::Debug for SimStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimStorage")
            .field("disk", &self.disk)
            .field("deferred", &self.deferred.borrow().len())
            .finish()
    }
}

impl SimStorage {
    pub fn new(seed: u64) -> Self {
        SimStorage {
            disk: Rc::new(RefCell::new(SimDisk {
                files: BTreeMap::new(),
                spares: BTreeMap::new(),
                rng: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
                faults: FaultPlan::default(),
                ops: 0,
                crashed: false,
                stats: SimStats::default(),
            })),
            deferred: Rc::default(),
        }
    }

    /// The fault schedule, to change between steps.
    pub fn faults(&self) -> RefMut<'_, FaultPlan> {
        RefMut::map(self.disk.borrow_mut(), |d| &mut d.faults)
    }

    pub fn stats(&self) -> SimStats {
        self.disk.borrow().stats
    }

    pub fn is_crashed(&self) -> bool {
        self.disk.borrow().crashed
    }

    /// Segments made from spares so far.
    pub fn recycled(&self) -> u64 {
        self.disk.borrow().stats.recycled
    }

    /// Writes and syncs performed so far.
    pub fn ops(&self) -> u64 {
        self.disk.borrow().ops
    }

    /// The disk as a power loss at this instant would leave it, as a fresh device with the
    /// same seed stream and no faults scheduled. Unsynced writes are dropped, kept, or torn.
    pub fn crash_image(&self) -> SimStorage {
        let mut disk = self.disk.borrow_mut();
        let mut files = BTreeMap::new();
        let seqs: Vec<u64> = disk.files.keys().copied().collect();
        for seq in seqs {
            let mut image = disk.files[&seq].durable.clone();
            let pending = disk.files[&seq].pending.clone();
            for (pos, bytes) in pending {
                let sectors = bytes.len() / SECTOR_BYTES;
                let keep_sectors = match disk.next_rand() % 3 {
                    0 => 0,
                    1 => sectors,
                    _ => (disk.next_rand() % (sectors as u64 + 1)) as usize,
                };
                let keep = keep_sectors * SECTOR_BYTES;
                let pos = pos as usize;
                image[pos..pos + keep].copy_from_slice(&bytes[..keep]);
            }
            files.insert(
                seq,
                SimFile {
                    data: image.clone(),
                    durable: image,
                    pending: Vec::new(),
                    acked: disk.files[&seq].acked.clone(),
                },
            );
        }
        let rng = disk.next_rand() | 1;
        // Spares hold retired data only: what their durable bytes say.
        let spares = disk
            .spares
            .iter()
            .map(|(&seq, f)| {
                let image = f.durable.clone();
                (
                    seq,
                    SimFile {
                        data: image.clone(),
                        durable: image,
                        ..SimFile::default()
                    },
                )
            })
            .collect();
        SimStorage {
            disk: Rc::new(RefCell::new(SimDisk {
                files,
                spares,
                rng,
                faults: FaultPlan::default(),
                ops: 0,
                crashed: false,
                stats: SimStats::default(),
            })),
            deferred: Rc::default(),
        }
    }

    /// Flips one bit, in both the visible and the durable bytes (media corruption).
    pub fn flip_bit(&self, seq: u64, offset: u64, bit: u8) {
        let mut disk = self.disk.borrow_mut();
        let file = disk.files.get_mut(&seq).expect("flip_bit: no such segment");
        file.data[offset as usize] ^= 1 << bit;
        file.durable[offset as usize] ^= 1 << bit;
    }

    /// Overwrites bytes in both the visible and the durable image (garbage, misplaced data).
    pub fn overwrite(&self, seq: u64, offset: u64, bytes: &[u8]) {
        let mut disk = self.disk.borrow_mut();
        let file = disk
            .files
            .get_mut(&seq)
            .expect("overwrite: no such segment");
        let at = offset as usize;
        file.data[at..at + bytes.len()].copy_from_slice(bytes);
        file.durable[at..at + bytes.len()].copy_from_slice(bytes);
    }

    /// A copy of the durable bytes of segment `seq`.
    pub fn durable_bytes(&self, seq: u64) -> Option<Vec<u8>> {
        self.disk
            .borrow()
            .files
            .get(&seq)
            .map(|f| f.durable.clone())
    }

    /// Removes a segment outright (an operator deleting a file).
    pub fn delete(&self, seq: u64) {
        self.disk.borrow_mut().files.remove(&seq);
    }
}

/// A handle on one simulated segment.
pub struct SimSegment {
    disk: Rc<RefCell<SimDisk>>,
    deferred: Deferred,
    seq: u64,
}

impl SegmentFile for SimSegment {
    type Buf = Vec<u8>;

    fn alloc_buf(&self, len: usize) -> Vec<u8> {
        // Garbage, not zeros: the journal must write every byte it submits.
        vec![0xEE; len]
    }

    async fn write_at(&self, buf: Vec<u8>, pos: u64) -> io::Result<()> {
        let mut disk = self.disk.borrow_mut();
        disk.op()?;
        disk.stats.writes += 1;
        let nth = disk.stats.writes;
        if let Some((n, kind)) = disk.faults.fail_write {
            if n == nth {
                return Err(io::Error::new(kind, "simulated write failure"));
            }
        }
        if let Some(file) = disk.files.get(&self.seq) {
            // The journal's rule, checked where the write was aimed (a misdirected write is
            // the device's fault, not the journal's).
            let blocks =
                pos / BLOCK_BYTES as u64..(pos + buf.len() as u64).div_ceil(BLOCK_BYTES as u64);
            if let Some(b) = file.acked.range(blocks).next() {
                panic!(
                    "a write to segment {} at offset {pos} ({} bytes) would overwrite block {b}, \
                     which holds acknowledged data: a block holding acknowledged data is never \
                     written again",
                    self.seq,
                    buf.len()
                );
            }
        }
        let mut pos = pos as i64;
        if let Some((n, delta)) = disk.faults.misdirect_write {
            if n == nth {
                pos += delta * BLOCK_BYTES as i64;
            }
        }
        disk.stats.bytes_written += buf.len() as u64;
        let file = disk
            .files
            .get_mut(&self.seq)
            .ok_or_else(|| missing(self.seq))?;
        let at = usize::try_from(pos).map_err(|_| io::Error::other("negative offset"))?;
        if at + buf.len() > file.data.len() {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "simulated write past the end of a preallocated segment",
            ));
        }
        file.data[at..at + buf.len()].copy_from_slice(&buf);
        file.pending.push((at as u64, buf));
        Ok(())
    }

    async fn sync(&self) -> io::Result<()> {
        let mut disk = self.disk.borrow_mut();
        disk.op()?;
        disk.stats.syncs += 1;
        let nth = disk.stats.syncs;
        if let Some((n, kind)) = disk.faults.fail_sync {
            if n == nth {
                // A failed fsync may have dropped the dirty pages: forget the pending writes
                // from the durable side, as Linux does.
                let file = disk
                    .files
                    .get_mut(&self.seq)
                    .ok_or_else(|| missing(self.seq))?;
                file.pending.clear();
                return Err(io::Error::new(kind, "simulated fdatasync failure"));
            }
        }
        let file = disk
            .files
            .get_mut(&self.seq)
            .ok_or_else(|| missing(self.seq))?;
        for (pos, bytes) in std::mem::take(&mut file.pending) {
            let at = pos as usize;
            file.durable[at..at + bytes.len()].copy_from_slice(&bytes);
        }
        Ok(())
    }

    fn write_durable(
        self: Rc<Self>,
        buf: Vec<u8>,
        pos: u64,
        done: Box<dyn FnOnce(io::Result<()>)>,
    ) {
        if !self.disk.borrow().faults.defer_completions {
            return write_then_sync(self, buf, pos, done);
        }
        // The simulated write and sync never wait, so they happen now; only the completion
        // is held back, delivered by the next append or by a task behind the ready ones.
        let deferred = self.deferred.clone();
        let hold = Box::new(move |result: io::Result<()>| {
            let first = {
                let mut queue = deferred.borrow_mut();
                queue.push((done, result));
                queue.len() == 1
            };
            if first {
                glommio::spawn_local(async move {
                    futures_lite::future::yield_now().await;
                    deliver(&deferred);
                })
                .detach();
            }
        });
        write_then_sync(self, buf, pos, hold);
    }

    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Vec<u8>> {
        let disk = self.disk.borrow();
        if disk.crashed {
            return Err(gone());
        }
        let file = disk.files.get(&self.seq).ok_or_else(|| missing(self.seq))?;
        let start = (pos as usize).min(file.data.len());
        let end = start.saturating_add(len).min(file.data.len());
        Ok(file.data[start..end].to_vec())
    }
}

impl Storage for SimStorage {
    type File = SimSegment;

    async fn list_segments(&self) -> io::Result<Vec<u64>> {
        Ok(self.disk.borrow().files.keys().copied().collect())
    }

    async fn open_segment(&self, seq: u64) -> io::Result<SimSegment> {
        if !self.disk.borrow().files.contains_key(&seq) {
            return Err(missing(seq));
        }
        Ok(SimSegment {
            disk: self.disk.clone(),
            deferred: self.deferred.clone(),
            seq,
        })
    }

    async fn create_segment(
        &self,
        seq: u64,
        bytes: u64,
        header_block: &[u8],
    ) -> io::Result<SimSegment> {
        let mut disk = self.disk.borrow_mut();
        disk.op()?;
        if disk.faults.create_enospc {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "simulated ENOSPC while preparing a segment",
            ));
        }
        let mut data = vec![0u8; bytes as usize];
        data[..header_block.len()].copy_from_slice(header_block);
        data[BLOCK_BYTES..BLOCK_BYTES + header_block.len()].copy_from_slice(header_block);
        disk.files.insert(
            seq,
            SimFile {
                durable: data.clone(),
                data,
                pending: Vec::new(),
                acked: Default::default(),
            },
        );
        Ok(SimSegment {
            disk: self.disk.clone(),
            deferred: self.deferred.clone(),
            seq,
        })
    }

    async fn remove_segment(&self, seq: u64) -> io::Result<()> {
        self.disk.borrow_mut().files.remove(&seq);
        Ok(())
    }

    async fn retire_segment(&self, seq: u64) -> io::Result<()> {
        let mut disk = self.disk.borrow_mut();
        disk.op()?;
        let mut file = disk.files.remove(&seq).ok_or_else(|| missing(seq))?;
        // Retired: what it held is no longer the journal's (a snapshot covers it).
        file.acked.clear();
        disk.spares.insert(seq, file);
        Ok(())
    }

    async fn list_spares(&self) -> io::Result<Vec<(u64, u64)>> {
        Ok(self
            .disk
            .borrow()
            .spares
            .iter()
            .map(|(&seq, f)| (seq, f.data.len() as u64))
            .collect())
    }

    async fn recycle_segment(
        &self,
        spare: u64,
        seq: u64,
        header_block: &[u8],
    ) -> io::Result<SimSegment> {
        let mut disk = self.disk.borrow_mut();
        disk.op()?;
        let mut file = disk.spares.remove(&spare).ok_or_else(|| missing(spare))?;
        disk.stats.recycled += 1;
        // Like `create_segment`, durable under the new name in one step; the old frames
        // beyond block 2 stay.
        let mut head = vec![0u8; 3 * BLOCK_BYTES];
        head[..header_block.len()].copy_from_slice(header_block);
        head[BLOCK_BYTES..BLOCK_BYTES + header_block.len()].copy_from_slice(header_block);
        file.pending.clear();
        file.data[..head.len()].copy_from_slice(&head);
        file.durable = file.data.clone();
        disk.files.insert(seq, file);
        Ok(SimSegment {
            disk: self.disk.clone(),
            deferred: self.deferred.clone(),
            seq,
        })
    }

    async fn remove_spare(&self, spare: u64) -> io::Result<()> {
        self.disk.borrow_mut().spares.remove(&spare);
        Ok(())
    }

    async fn segment_len(&self, seq: u64) -> io::Result<u64> {
        let disk = self.disk.borrow();
        let file = disk.files.get(&seq).ok_or_else(|| missing(seq))?;
        Ok(file.data.len() as u64)
    }

    fn describe(&self, seq: u64) -> String {
        format!("sim:{}", super::device::segment_file_name(seq))
    }

    fn poll_completions(&self) {
        deliver(&self.deferred);
    }

    fn acknowledged(&self, seq: u64, offset: u64, len: u64) {
        assert!(
            offset % BLOCK_BYTES as u64 == 0 && len % BLOCK_BYTES as u64 == 0,
            "frames are whole blocks"
        );
        let mut disk = self.disk.borrow_mut();
        let file = disk
            .files
            .get_mut(&seq)
            .expect("an acknowledged frame is in an existing segment");
        // Acknowledged means durable: the bytes survive any crash from now on.
        let (at, end) = (offset as usize, (offset + len) as usize);
        assert_eq!(
            file.durable[at..end],
            file.data[at..end],
            "an acknowledged frame is durable"
        );
        file.acked
            .extend(offset / BLOCK_BYTES as u64..(offset + len) / BLOCK_BYTES as u64);
    }
}
