//! The journal's own io_uring: frame writes submitted the moment a frame is sealed, their
//! completions reaped the moment they arrive, and frame buffers reused instead of allocated.
//!
//! ## Why not glommio's file I/O
//!
//! glommio 0.9 queues a DMA write and hands it to the kernel only when its executor next polls
//! its rings, which is after every task that is ready has run. Under load that is after the
//! hundreds of appenders woken by the previous release, so each frame spent about as long
//! waiting for its submission and for the executor to notice its completion as on the disk
//! (measured: 515 µs from seal to release with 1,000 producers, where the raw device takes
//! 250 µs at the same size and depth). Its buffers cannot be reused either (a trimmed
//! `DmaBuffer` cannot grow back), so every frame allocated and faulted in fresh pages.
//!
//! ## Algorithm
//!
//! One [`Driver`] per executor (one per shard), created on first use: a small io_uring set up
//! with `SINGLE_ISSUER | DEFER_TASKRUN | TASKRUN_FLAG`: completion work stays with this ring
//! (no interrupting IPIs, no wake-ups of the thread) until the driver asks for it, and the
//! kernel raises a flag in the ring when some is pending. (Not `COOP_TASKRUN`: its work is
//! queued on the thread, shared with glommio's rings, and with it glommio's executor
//! sometimes slept forever with a timer due — docs/ARCHITECTURE.md.) Older kernels get a
//! plain ring. [`Driver::write`] pushes one `WRITE` (linked to an `FSYNC(DATASYNC)` unless
//! the file is `O_DSYNC`) and calls `io_uring_enter` at once.
//!
//! ## Who issues a write: the shard, or io_uring's workers
//!
//! Issued inline, a frame's write runs the file system's direct-I/O path and rings the
//! virtio disk's doorbell inside the shard's `io_uring_enter` (on this machine kind the
//! doorbell alone, `iowrite16`, was 7% of a busy shard's CPU, and the write's whole
//! submission 11%). With [`Submit::Workers`] the write and its fdatasync carry
//! `IOSQE_ASYNC`: io_uring hands them to its worker threads (io-wq), which the driver
//! confines with `IORING_REGISTER_IOWQ_AFF` to the CPUs no shard runs on, so the shard's
//! `io_uring_enter` only queues them and the CPU left free pays for the disk. A worker
//! blocks in the write until it is durable and then posts the completion, which is reaped
//! as before: nothing about durability or ordering changes (completions could already
//! arrive out of order). A kernel that refuses the affinity (before Linux 5.14) would let
//! the workers run on the shard's own CPU, competing with it for that CPU (not measured),
//! so the driver then issues writes inline and logs it once ([`Driver::workers`]).
//!
//! ## Completions
//!
//! Completions are reaped by [`Driver::reap`], which the journal calls on every append (two
//! loads of ring words when nothing is ready) and which a reaper task calls while anything
//! is in flight: the reaper polls, yielding to the executor between two polls through a
//! glommio timer that is due at once (so every ready task runs and glommio polls its own
//! rings first), for up to [`REAP_SPIN`] after the last submission or completion, then naps
//! [`REAP_NAP`] between polls, and ends when nothing is in flight. Callbacks run after the
//! ring and the operation table are released, so a callback may submit again.
//!
//! ## Invariants
//!
//! - A buffer handed to the kernel lives in the driver's operation table until the last CQE
//!   of its operation arrived; dropping the driver waits for every operation in flight.
//! - An operation completes exactly once, with the first error among its CQEs (a failed write
//!   cancels its linked fdatasync, which then reports `ECANCELED`), or `Ok` only if the write
//!   wrote every byte and the fdatasync (if any) returned 0.
//! - The ring is touched only by the thread that created it.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::ptr::NonNull;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use io_uring::{opcode, squeue, types, IoUring};

use super::device::FrameBuf;
use crate::constants::{BLOCK_BYTES, FRAME_BUF_POOL_MAX, JOURNAL_RING_ENTRIES};

/// How long the reaper polls without pause after the last submission or completion: longer
/// than a durable write takes on a healthy disk under load (0.1–0.5 ms here).
pub const REAP_SPIN: Duration = Duration::from_micros(500);

/// The pause between two polls once [`REAP_SPIN`] has passed (a write that slow is a busy
/// disk). Longer than the executor's own spin before it parks, so the CPU rests meanwhile.
pub const REAP_NAP: Duration = Duration::from_micros(200);

/// The pause that makes the reaper yield to the executor between two polls: due by the
/// time glommio looks at its timers again, so it only lets every ready task run and glommio
/// poll its own rings first. (Measured: polling every 1–5 µs gave the same throughput;
/// 10–20 µs cost 5–8%.)
const REAP_YIELD: Duration = Duration::from_micros(2);

/// A block-aligned buffer for direct I/O whose memory returns to the thread's pool when it is
/// dropped, so a frame reuses pages already faulted in instead of fresh ones.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    capacity: usize,
    len: usize,
}

impl AlignedBuf {
    fn layout(capacity: usize) -> Layout {
        Layout::from_size_align(capacity, BLOCK_BYTES).expect("frame buffer layout")
    }

    /// A buffer of `len` bytes (contents unspecified), from the pool when one of that capacity
    /// is free.
    pub fn new(len: usize) -> AlignedBuf {
        let capacity = len.max(BLOCK_BYTES).next_multiple_of(BLOCK_BYTES);
        if let Some(ptr) = POOL.with(|p| p.take(capacity)) {
            return AlignedBuf { ptr, capacity, len };
        }
        // Zeroed so every byte is initialized; large allocations get fresh zero pages from
        // the kernel, faulted in only as the journal fills them.
        // SAFETY: the layout has a non-zero size (at least one block).
        let raw = unsafe { alloc_zeroed(Self::layout(capacity)) };
        let ptr = NonNull::new(raw).unwrap_or_else(|| {
            std::alloc::handle_alloc_error(Self::layout(capacity));
        });
        AlignedBuf { ptr, capacity, len }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        let (ptr, capacity) = (self.ptr, self.capacity);
        if POOL.try_with(|p| p.give(ptr, capacity)).is_err() {
            // The thread is exiting and its pool is gone.
            // SAFETY: allocated in `new` (or taken from the pool, which holds only such
            // allocations) with this capacity's layout, and owned by this buffer alone.
            unsafe { dealloc(ptr.as_ptr(), Self::layout(capacity)) };
        }
    }
}

impl FrameBuf for AlignedBuf {
    fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` points to `capacity` ≥ `len` initialized bytes (zeroed at allocation,
        // or an earlier frame's) owned by this buffer.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
    fn trim(&mut self, len: usize) {
        assert!(len <= self.len, "trim may only shorten a buffer");
        self.len = len;
    }
}

/// Free frame buffers of this thread, by capacity.
struct Pool {
    free: RefCell<Vec<(usize, NonNull<u8>)>>,
}

impl Pool {
    fn take(&self, capacity: usize) -> Option<NonNull<u8>> {
        let mut free = self.free.borrow_mut();
        let i = free.iter().position(|&(c, _)| c == capacity)?;
        Some(free.swap_remove(i).1)
    }

    /// Keeps a freed buffer. A full pool lets its oldest buffer go instead, so buffers of a
    /// size no longer asked for (a recovery's zeroing) do not hold the places of frames.
    fn give(&self, ptr: NonNull<u8>, capacity: usize) {
        let mut free = self.free.borrow_mut();
        if free.len() >= FRAME_BUF_POOL_MAX {
            let (old_capacity, old) = free.remove(0);
            // SAFETY: every pooled pointer was allocated by `AlignedBuf::new` with its
            // capacity's layout and is owned by the pool alone.
            unsafe { dealloc(old.as_ptr(), AlignedBuf::layout(old_capacity)) };
        }
        free.push((capacity, ptr));
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        for (capacity, ptr) in self.free.get_mut().drain(..) {
            // SAFETY: every pooled pointer was allocated by `AlignedBuf::new` with this
            // capacity's layout and is owned by the pool alone.
            unsafe { dealloc(ptr.as_ptr(), AlignedBuf::layout(capacity)) };
        }
    }
}

thread_local! {
    static POOL: Pool = const { Pool { free: RefCell::new(Vec::new()) } };
    /// The driver of the executor running on this thread, with that executor's id.
    static DRIVER: RefCell<Option<(usize, Rc<Driver>)>> = const { RefCell::new(None) };
}

/// Called once with an operation's result.
pub type Done = Box<dyn FnOnce(io::Result<()>)>;

struct Op {
    /// Kept alive until the last CQE: the kernel reads from it (`None` for an fdatasync).
    buf: Option<AlignedBuf>,
    cqes_left: u8,
    result: io::Result<()>,
    done: Option<Done>,
}

/// One executor's journal ring (see the module docs).
pub struct Driver {
    ring: RefCell<IoUring>,
    ops: RefCell<Vec<Option<Op>>>,
    free_slots: RefCell<Vec<usize>>,
    in_flight: Cell<usize>,
    /// Results found at submission (a full ring, a failed enter), delivered by the next reap.
    failed: RefCell<Vec<(Done, io::Error)>>,
    reaper_running: Cell<bool>,
    last_event: Cell<Instant>,
    stats: Cell<DriverStats>,
    /// The workers' CPU set last asked for, and whether writes go to the workers with it.
    workers: RefCell<Option<(Vec<usize>, bool)>>,
}

/// Operations one driver submitted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DriverStats {
    pub writes: u64,
    pub datasyncs: u64,
    /// Writes handed to io_uring's workers (`IOSQE_ASYNC`).
    pub worker_writes: u64,
}

/// Who issues a frame's write to the disk (`journal_submit`; module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Submit {
    /// The shard's thread, inside its `io_uring_enter`.
    Inline,
    /// io_uring's worker threads, confined to `cpus` (none: wherever the scheduler puts
    /// them, for shards not pinned to a CPU).
    Workers { cpus: Vec<usize> },
}

/// The environment variable with which tests make the kernel's refusal of the workers'
/// CPU set (`IORING_REGISTER_IOWQ_AFF`, as before Linux 5.14) happen: `no-iowq-aff`.
pub const TEST_ENV: &str = "EVRING_TEST_JOURNAL_RING";

/// Registers `cpus` as the CPUs of `ring`'s io_uring workers.
fn register_worker_cpus(ring: &IoUring, cpus: &[usize]) -> io::Result<()> {
    if std::env::var(TEST_ENV).as_deref() == Ok("no-iowq-aff") {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    if cpus.is_empty() {
        return Ok(());
    }
    // SAFETY: `cpu_set_t` is a plain bit array, valid when zeroed.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // A CPU beyond a cpu_set_t's bits cannot be named; the kernel gets the others.
    for &cpu in cpus.iter().filter(|&&c| c < libc::CPU_SETSIZE as usize) {
        // SAFETY: `cpu` is below CPU_SETSIZE, the bit array's size.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    ring.submitter().register_iowq_aff(&set)
}

fn build_ring() -> io::Result<IoUring> {
    let entries = JOURNAL_RING_ENTRIES as u32;
    let deferred = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_taskrun_flag()
        .setup_cqsize(entries * 4)
        .build(entries);
    deferred.or_else(|e| {
        tracing::info!(error = %e, "journal io_uring without DEFER_TASKRUN (kernel before 6.1)");
        IoUring::builder().setup_cqsize(entries * 4).build(entries)
    })
}

impl Driver {
    /// The driver of the executor running on this thread, created on first use. An executor
    /// that ended took its reaper with it, so a later executor on the same thread gets a
    /// driver of its own.
    pub fn current() -> io::Result<Rc<Driver>> {
        let executor = glommio::executor().id();
        DRIVER.with(|d| {
            if let Some((id, driver)) = d.borrow().as_ref() {
                if *id == executor {
                    return Ok(driver.clone());
                }
            }
            let driver = Rc::new(Driver {
                ring: RefCell::new(build_ring()?),
                ops: RefCell::new(Vec::new()),
                free_slots: RefCell::new(Vec::new()),
                in_flight: Cell::new(0),
                failed: RefCell::new(Vec::new()),
                reaper_running: Cell::new(false),
                last_event: Cell::new(Instant::now()),
                stats: Cell::new(DriverStats::default()),
                workers: RefCell::new(None),
            });
            let old = d.borrow_mut().replace((executor, driver.clone()));
            drop(old);
            Ok(driver)
        })
    }

    /// Reaps the current executor's driver, if it has one (the journal calls this on every
    /// append).
    pub fn reap_current() {
        let executor = glommio::executor().id();
        let driver = DRIVER.with(|d| match d.borrow().as_ref() {
            Some((id, driver)) if *id == executor => Some(driver.clone()),
            _ => None,
        });
        if let Some(driver) = driver {
            driver.reap();
        }
    }

    /// Operations submitted and not yet completed.
    pub fn in_flight(&self) -> usize {
        self.in_flight.get()
    }

    /// Writes and fdatasyncs submitted so far.
    pub fn stats(&self) -> DriverStats {
        self.stats.get()
    }

    /// Whether writes of files opened with `submit` go to io_uring's workers: for
    /// [`Submit::Workers`], once the kernel took their CPU set (registered at the first ask
    /// for a set; a refusal is logged once and writes are issued inline).
    pub fn workers(&self, submit: &Submit) -> bool {
        let Submit::Workers { cpus } = submit else {
            return false;
        };
        let mut workers = self.workers.borrow_mut();
        if let Some((asked, granted)) = workers.as_ref() {
            if asked == cpus {
                return *granted;
            }
        }
        let granted = match register_worker_cpus(&self.ring.borrow(), cpus) {
            Ok(()) => {
                tracing::info!(?cpus, "journal writes issued by io_uring workers");
                true
            }
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "journal writes issued inline by the shard: the kernel refused \
                     IORING_REGISTER_IOWQ_AFF (Linux 5.14 or newer lets io_uring's workers \
                     issue them on the CPUs no shard runs on)"
                );
                false
            }
        };
        *workers = Some((cpus.clone(), granted));
        granted
    }

    /// Writes `buf` at `pos` of `fd`, followed by an fdatasync when `sync` is set, and calls
    /// `done` once with the result. Submitted to the kernel before this returns; issued by
    /// io_uring's workers when `workers` is set ([`Driver::workers`]), else by this thread.
    pub fn write(
        self: &Rc<Self>,
        fd: RawFd,
        buf: AlignedBuf,
        pos: u64,
        sync: bool,
        workers: bool,
        done: Done,
    ) {
        let (ptr, len) = (buf.ptr.as_ptr(), buf.len);
        let len32 = u32::try_from(len).expect("frame length fits in u32");
        self.count(1, u64::from(sync), u64::from(workers));
        let handoff = if workers {
            squeue::Flags::ASYNC
        } else {
            squeue::Flags::empty()
        };
        self.submit(Some(buf), done, |slot| {
            let write = opcode::Write::new(types::Fd(fd), ptr, len32)
                .offset(pos)
                .build()
                .user_data(slot << 1)
                .flags(handoff);
            if sync {
                (
                    write.flags(squeue::Flags::IO_LINK),
                    Some(datasync(fd, slot).flags(handoff)),
                )
            } else {
                (write, None)
            }
        });
    }

    /// fdatasync of `fd`; `done` is called once with the result.
    pub fn fdatasync(self: &Rc<Self>, fd: RawFd, done: Done) {
        self.count(0, 1, 0);
        self.submit(None, done, |slot| (datasync(fd, slot), None));
    }

    fn count(&self, writes: u64, datasyncs: u64, worker_writes: u64) {
        let mut st = self.stats.get();
        st.writes += writes;
        st.datasyncs += datasyncs;
        st.worker_writes += worker_writes;
        self.stats.set(st);
    }

    fn submit(
        self: &Rc<Self>,
        buf: Option<AlignedBuf>,
        done: Done,
        entries: impl FnOnce(u64) -> (squeue::Entry, Option<squeue::Entry>),
    ) {
        let slot = self.free_slots.borrow_mut().pop().unwrap_or_else(|| {
            let mut ops = self.ops.borrow_mut();
            ops.push(None);
            ops.len() - 1
        });
        let (first, second) = entries(slot as u64);
        let cqes = 1 + u8::from(second.is_some());
        let pushed = {
            let mut ring = self.ring.borrow_mut();
            let mut sq = ring.submission();
            if sq.capacity() - sq.len() < usize::from(cqes) {
                false
            } else {
                for e in std::iter::once(&first).chain(second.as_ref()) {
                    // SAFETY: the buffer an entry points to is moved into the op table below
                    // and stays there until the last CQE of this slot is reaped; the file
                    // descriptor is kept open by the segment file, which outlives its writes
                    // (the journal holds it until the frame is released).
                    unsafe { sq.push(e).expect("room checked above") };
                }
                true
            }
        };
        if !pushed {
            self.free_slots.borrow_mut().push(slot);
            self.fail_later(
                done,
                io::Error::other("journal io_uring submission queue is full"),
            );
            return;
        }
        self.ops.borrow_mut()[slot] = Some(Op {
            buf,
            cqes_left: cqes,
            result: Ok(()),
            done: Some(done),
        });
        self.in_flight.set(self.in_flight.get() + 1);
        self.last_event.set(Instant::now());
        // Entries the kernel did not take now (EBUSY, EAGAIN) stay queued; the next reap
        // hands them over.
        self.enter();
        self.ensure_reaper();
    }

    fn fail_later(self: &Rc<Self>, done: Done, e: io::Error) {
        self.failed.borrow_mut().push((done, e));
        self.ensure_reaper();
    }

    /// Hands queued entries to the kernel and runs pending completion work. EBUSY and EAGAIN
    /// (completions or kernel memory to free first) leave the entries queued for the next
    /// call; any other error means the ring itself is broken, and entries the kernel may
    /// still take point into buffers this thread owns, so it is not survivable.
    fn enter(&self) {
        loop {
            match self.ring.borrow().submit() {
                Ok(_) => return,
                Err(e) => match e.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(libc::EBUSY) | Some(libc::EAGAIN) => return,
                    _ => panic!("the journal's io_uring failed: io_uring_enter: {e}"),
                },
            }
        }
    }

    /// Collects every completion that has arrived and runs the callbacks of the operations
    /// it finished. Returns how many operations finished.
    pub fn reap(&self) -> usize {
        let failed = std::mem::take(&mut *self.failed.borrow_mut());
        let mut finished: Vec<(Done, io::Result<()>)> =
            failed.into_iter().map(|(done, e)| (done, Err(e))).collect();
        if self.in_flight.get() > 0 {
            let pending_work = {
                let mut ring = self.ring.borrow_mut();
                let sq = ring.submission();
                sq.taskrun() || sq.cq_overflow() || !sq.is_empty()
            };
            if pending_work {
                self.enter();
            }
            let mut ring = self.ring.borrow_mut();
            let mut ops = self.ops.borrow_mut();
            for cqe in ring.completion() {
                let (slot, is_write) = ((cqe.user_data() >> 1) as usize, cqe.user_data() & 1 == 0);
                let Some(op) = ops.get_mut(slot).and_then(Option::as_mut) else {
                    debug_assert!(false, "completion for an unknown journal operation");
                    continue;
                };
                let res = cqe.result();
                // The first error wins; a later CQE (the ECANCELED of an fdatasync linked to
                // a failed write) adds nothing.
                if op.result.is_ok() {
                    if res < 0 {
                        op.result = Err(io::Error::from_raw_os_error(-res));
                    } else if let (true, Some(buf)) = (is_write, &op.buf) {
                        let len = buf.len();
                        if res as usize != len {
                            op.result = Err(io::Error::new(
                                io::ErrorKind::WriteZero,
                                format!("short write: {res} of {len} bytes"),
                            ));
                        }
                    }
                }
                op.cqes_left -= 1;
                if op.cqes_left == 0 {
                    let mut op = ops[slot].take().expect("op present");
                    self.free_slots.borrow_mut().push(slot);
                    self.in_flight.set(self.in_flight.get() - 1);
                    let result = std::mem::replace(&mut op.result, Ok(()));
                    finished.push((op.done.take().expect("done once"), result));
                }
            }
        }
        if !finished.is_empty() {
            self.last_event.set(Instant::now());
        }
        let n = finished.len();
        for (done, result) in finished {
            done(result);
        }
        n
    }

    fn ensure_reaper(self: &Rc<Self>) {
        if self.reaper_running.replace(true) {
            return;
        }
        // The guard is made here, not in the task, so that a task dropped before its first
        // poll (its executor ended) still clears the flag.
        let guard = ReaperGuard(Rc::downgrade(self));
        glommio::spawn_local(reaper(guard)).detach();
    }
}

/// Clears `reaper_running` when the reaper ends, or when its executor drops it.
struct ReaperGuard(Weak<Driver>);

impl Drop for ReaperGuard {
    fn drop(&mut self) {
        if let Some(d) = self.0.upgrade() {
            d.reaper_running.set(false);
        }
    }
}

async fn reaper(guard: ReaperGuard) {
    // glommio polls a spawned task at once: pause first, so the submission that spawned the
    // reaper returns before any callback runs.
    let mut pause = REAP_YIELD;
    loop {
        glommio::timer::sleep(pause).await;
        let Some(d) = guard.0.upgrade() else { return };
        d.reap();
        if d.in_flight() == 0 && d.failed.borrow().is_empty() {
            return;
        }
        pause = if d.last_event.get().elapsed() < REAP_SPIN {
            REAP_YIELD
        } else {
            REAP_NAP
        };
    }
}

/// An fdatasync entry of operation `slot`. A CQE's user data is the slot shifted left by one,
/// its lowest bit set for the fdatasync and clear for the write.
fn datasync(fd: RawFd, slot: u64) -> squeue::Entry {
    opcode::Fsync::new(types::Fd(fd))
        .flags(types::FsyncFlags::DATASYNC)
        .build()
        .user_data(slot << 1 | 1)
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The kernel may still read buffers of operations in flight: wait for them.
        let ring = self.ring.get_mut();
        let mut left = self.in_flight.get();
        while left > 0 {
            match ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(_) => break,
            }
            for cqe in ring.completion() {
                if let Some(op) = self
                    .ops
                    .get_mut()
                    .get_mut((cqe.user_data() >> 1) as usize)
                    .and_then(Option::as_mut)
                {
                    op.cqes_left -= 1;
                    if op.cqes_left == 0 {
                        left -= 1;
                    }
                }
            }
        }
    }
}

type CompletionState = Rc<RefCell<(Option<io::Result<()>>, Option<Waker>)>>;

/// A future for one driver operation.
pub struct Completion {
    state: CompletionState,
}

impl Completion {
    /// A completion and the callback that resolves it.
    pub fn new() -> (Completion, Done) {
        let state: CompletionState = Rc::new(RefCell::new((None, None)));
        let setter = state.clone();
        let done: Done = Box::new(move |result| {
            let waker = {
                let mut s = setter.borrow_mut();
                s.0 = Some(result);
                s.1.take()
            };
            if let Some(w) = waker {
                w.wake();
            }
        });
        (Completion { state }, done)
    }
}

impl Future for Completion {
    type Output = io::Result<()>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut s = self.state.borrow_mut();
        match s.0.take() {
            Some(r) => Poll::Ready(r),
            None => {
                s.1 = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;

    fn run<T>(fut: impl Future<Output = T>) -> T {
        crate::shard::run_local(fut)
    }

    fn filled(len: usize, byte: u8) -> AlignedBuf {
        let mut buf = AlignedBuf::new(len);
        buf.bytes_mut().fill(byte);
        buf
    }

    /// Runs `test` for both ways of issuing a write: by this thread, and by io_uring's
    /// workers confined to CPU 0. `test` gets the submit to ask its driver for.
    fn each_submit(mut test: impl FnMut(Submit)) {
        for submit in [Submit::Inline, Submit::Workers { cpus: vec![0] }] {
            test(submit);
        }
    }

    /// The current driver, set to issue writes as `submit` says; whether workers issue them.
    fn driver_for(submit: &Submit) -> (Rc<Driver>, bool) {
        let driver = Driver::current().unwrap();
        let workers = driver.workers(submit);
        assert_eq!(workers, *submit != Submit::Inline, "{submit:?} is granted");
        (driver, workers)
    }

    #[test]
    fn writes_and_linked_fdatasync_land_in_the_file() {
        each_submit(|submit| {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("f");
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .custom_flags(libc::O_DIRECT)
                .open(&path)
                .unwrap();
            file.set_len(3 * 4096).unwrap();
            let fd = file.as_raw_fd();
            let (stats, workers) = run(async move {
                let (driver, workers) = driver_for(&submit);
                let (a, done_a) = Completion::new();
                let (b, done_b) = Completion::new();
                driver.write(fd, filled(4096, 0xAA), 4096, true, workers, done_a);
                driver.write(fd, filled(8192, 0xBB), 0, false, workers, done_b);
                a.await.unwrap();
                b.await.unwrap();
                let (c, done_c) = Completion::new();
                driver.fdatasync(fd, done_c);
                c.await.unwrap();
                assert_eq!(driver.in_flight(), 0);
                (driver.stats(), workers)
            });
            assert_eq!(
                stats,
                DriverStats {
                    writes: 2,
                    datasyncs: 2,
                    worker_writes: if workers { 2 } else { 0 },
                }
            );
            let bytes = std::fs::read(&path).unwrap();
            assert!(bytes[..4096].iter().all(|&b| b == 0xBB));
            assert!(bytes[4096..8192].iter().all(|&b| b == 0xBB));
            assert!(bytes[8192..].iter().all(|&b| b == 0));
            drop(file);
        });
    }

    #[test]
    fn a_failed_write_reports_its_own_error_not_the_cancelled_fdatasync() {
        each_submit(|submit| {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("ro");
            std::fs::write(&path, vec![0u8; 4096]).unwrap();
            let file = std::fs::File::open(&path).unwrap(); // read-only: writes fail with EBADF
            let fd = file.as_raw_fd();
            let calls = Rc::new(Cell::new(0));
            let seen = calls.clone();
            let result = run(async move {
                let (driver, workers) = driver_for(&submit);
                let (completion, done) = Completion::new();
                driver.write(
                    fd,
                    filled(4096, 1),
                    0,
                    true,
                    workers,
                    Box::new(move |r| {
                        seen.set(seen.get() + 1);
                        done(r)
                    }),
                );
                completion.await
            });
            let err = result.expect_err("a write to a read-only descriptor must fail");
            assert_eq!(err.raw_os_error(), Some(libc::EBADF), "{err}");
            assert_eq!(calls.get(), 1, "done is called exactly once");
        });
    }

    #[test]
    fn a_failed_fdatasync_fails_the_operation_although_the_write_succeeded() {
        // /dev/null takes any write but refuses fdatasync (EINVAL): the write's success must
        // not make the operation succeed.
        each_submit(|submit| {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/null")
                .unwrap();
            let fd = file.as_raw_fd();
            let (plain, synced) = run(async move {
                let (driver, workers) = driver_for(&submit);
                let (a, done_a) = Completion::new();
                driver.write(fd, filled(4096, 1), 0, false, workers, done_a);
                let (b, done_b) = Completion::new();
                driver.write(fd, filled(4096, 1), 0, true, workers, done_b);
                (a.await, b.await)
            });
            plain.expect("a write to /dev/null succeeds");
            let err = synced.expect_err("its fdatasync fails, so the operation must");
            assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "{err}");
        });
    }

    #[test]
    fn a_dropped_buffer_is_reused() {
        let first = AlignedBuf::new(64 * 1024);
        let ptr = first.ptr;
        drop(first);
        let second = AlignedBuf::new(64 * 1024);
        assert_eq!(second.ptr, ptr, "the pooled allocation is handed out again");
        assert_eq!(second.len(), 64 * 1024);
        let other = AlignedBuf::new(128 * 1024);
        assert_ne!(other.ptr, ptr, "a buffer of another capacity is not");
        drop(second);
        // Odd sizes freed later push the oldest out, never past the bound.
        for k in 1..=2 * FRAME_BUF_POOL_MAX {
            drop(AlignedBuf::new((32 + k) * BLOCK_BYTES));
        }
        POOL.with(|p| {
            let free = p.free.borrow();
            assert_eq!(free.len(), FRAME_BUF_POOL_MAX);
            assert!(
                free.iter().all(|&(c, _)| c != 64 * 1024),
                "the oldest went first"
            );
        });
    }

    #[test]
    fn a_later_executor_on_the_same_thread_gets_a_working_driver() {
        // The first executor's reaper dies with it; a stale driver would leave the second
        // executor's writes unreaped forever. Watchdog: fail instead of hanging.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("f");
            std::fs::write(&path, vec![0u8; 4096]).unwrap();
            let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            let fd = file.as_raw_fd();
            for _ in 0..3 {
                let r = crate::shard::run_local(async move {
                    let (c, done) = Completion::new();
                    Driver::current()
                        .unwrap()
                        .write(fd, filled(4096, 7), 0, true, false, done);
                    c.await
                });
                r.unwrap();
            }
            tx.send(()).unwrap();
        });
        rx.recv_timeout(Duration::from_secs(30))
            .expect("writes on a later executor completed");
    }
}
