//! The network's own io_uring: each shard accepts, receives and sends on its client sockets
//! through a ring of its own instead of glommio's.
//!
//! ## Why not glommio's sockets
//!
//! glommio 0.9 reads a socket by trying `recv(2)` and, when nothing is there, arming a poll
//! request on its latency ring and trying again when it fires. That ring interrupts the
//! thread for every completion: the poll completion, raised on the CPU where the client's
//! bytes were processed, reaches the shard's thread as task work with a reschedule IPI — 13%
//! of the shard's samples at 50 connections × 1 request in flight — plus the poll request's
//! own submission and task work (about 10%) and the `recv` that found nothing
//! (docs/BENCHMARKS.md, *The network path on the shard's own io_uring*).
//!
//! ## Algorithm
//!
//! One [`NetRing`] per executor (one per shard), created when the shard starts, set up with
//! `SINGLE_ISSUER | COOP_TASKRUN | TASKRUN_FLAG`: a completion raised on another CPU is
//! queued as task work for the shard's thread *without* an IPI; the thread runs it at its
//! next entry into the kernel, or at once if it sleeps. (Not `DEFER_TASKRUN`: with it the
//! kernel signals the ring's eventfd about 16 ms late on this kernel, measured, so a shard
//! cannot sleep in glommio and wake for a request; napping on a timer instead stalled the
//! 50 × 1 load.) `SINGLE_ISSUER` needs Linux 6.0 and is dropped on 5.19; a ring that refuses
//! `COOP_TASKRUN` falls back to a plain ring, logged. Provided-buffer rings need 5.19: on an
//! older kernel evringd refuses to start, naming the feature ([`NetRing::probe`]).
//!
//! - **Operations.** [`NetRing::accept`], [`NetRing::recv`] and [`NetRing::send`] push one
//!   entry each and return a future for its completion. Entries pushed while the reaper is
//!   passing wait for its next pass, so the receives and replies of a pass go to the kernel
//!   in one `io_uring_enter`; while it is parked they are submitted at once.
//! - **Receives** are single-shot `RECV`s with buffer select from a registered ring of
//!   provided buffers ([`NET_RECV_BUFFERS`] × [`NET_RECV_BUFFER_BYTES`] per shard). A
//!   connection holds a kernel buffer only between the completion and its copy into the
//!   connection's input buffer (the next time its task runs); an idle connection holds none.
//!   A receive armed after the connection's input was used up sets `POLL_FIRST`: the kernel
//!   waits for data instead of trying a read that would find nothing. A receive is armed
//!   only when the connection wants bytes, so a connection that stops reading (its client
//!   does not read its replies) leaves its bytes to TCP's flow control.
//! - **Sends** move the connection's queued replies into the operation (the kernel reads
//!   from them until the completion) and hand them back with the count sent.
//! - **The reaper** is a task that enters the ring when work is pending (submitting,
//!   running task work) and collects completions, waking their futures. It yields to the
//!   executor between two passes through a glommio timer due at once (every ready task runs
//!   first), as the journal's reaper does, for [`NET_SPIN`] after the last completion; then
//!   it parks on an eventfd registered with the ring, read through glommio, which the
//!   kernel signals when it posts a completion: glommio's executor sleeps in its own ring
//!   until a client sends something.
//!
//! ## Invariants
//!
//! - A buffer the kernel writes (a provided buffer) or reads (a send's bytes) stays alive
//!   until the completion of its operation; a future dropped before its completion leaves
//!   its operation *abandoned* in the table (a receive or accept is cancelled), and the
//!   completion frees it. Dropping the ring cancels everything in flight and waits for it.
//! - A provided buffer is owned by the kernel from registration until a completion names it,
//!   then by that receive until its bytes are copied, then returned to the ring.
//! - An operation's completion is delivered exactly once; a completion for a slot not in
//!   flight crashes the shard.
//! - The ring is touched only by the thread that created it.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU16, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, squeue, types, IoUring};

/// Submission-queue entries of each shard's network ring (completion queue: four times as
/// many). A full queue is submitted and reused at once, so this bounds a batch, not the
/// connections.
pub const NET_RING_ENTRIES: u32 = 1024;

/// Provided receive buffers per shard (a power of two), and the bytes of each: what one
/// receive may take at once (a receive takes a whole buffer however few bytes arrived).
/// 256 × 16 KiB = 4 MiB per shard, in the memory formula of docs/OPERATIONS.md.
pub const NET_RECV_BUFFERS: u16 = 256;
pub const NET_RECV_BUFFER_BYTES: usize = 16 * 1024;
const _: () = assert!(
    NET_RECV_BUFFERS.is_power_of_two(),
    "the ring's index is a mask"
);

/// How long the reaper passes without pause after the last completion before it parks:
/// longer than a client takes to send its next request after a reply under load, so a busy
/// shard never pays the eventfd's wake-up.
pub const NET_SPIN: Duration = Duration::from_micros(500);

/// The pause that makes the reaper yield to the executor between two passes (as the
/// journal's reaper).
const NET_YIELD: Duration = Duration::from_micros(2);

/// The buffer group of the provided receive buffers.
const BUF_GROUP: u16 = 0;

/// `IORING_RECVSEND_POLL_FIRST` (in a receive's `ioprio`): wait for data before reading.
const RECVSEND_POLL_FIRST: u16 = 1;

/// User data of entries whose completion nobody awaits (cancellations).
const IGNORED: u64 = u64::MAX;

thread_local! {
    /// The network ring of the executor running on this thread, with that executor's id.
    static NET: RefCell<Option<(usize, Rc<NetRing>)>> = const { RefCell::new(None) };
}

/// Where an operation is.
enum State {
    /// Submitted (or queued); the future waiting for it, if polled.
    Waiting(Option<Waker>),
    /// Completed: the CQE's result and flags, not yet taken by its future.
    Done(i32, u32),
    /// Its future was dropped: the completion frees it.
    Abandoned,
}

struct Op {
    state: State,
    /// A send's bytes: the kernel reads them until the completion.
    bytes: Option<Vec<u8>>,
    /// An accept: an abandoned one's result is a connection nobody will serve, to close.
    accept: bool,
}

/// Frees what the completion of an abandoned operation holds: its provided buffer, or the
/// descriptor an accept returned.
fn release(bufs: &BufRing, op: &Op, res: i32, flags: u32) {
    if let Some(bid) = cqueue::buffer_select(flags) {
        bufs.push(bid);
    }
    if op.accept && res >= 0 {
        // SAFETY: the descriptor a completed accept returned, owned by nobody else.
        unsafe { libc::close(res) };
    }
}

/// The provided receive buffers: one allocation of `NET_RECV_BUFFERS` buffers and the
/// page-aligned ring of entries through which they are handed to the kernel.
struct BufRing {
    entries: *mut types::BufRingEntry,
    data: *mut u8,
    /// The next tail to publish (a free-running `u16`, as the kernel's).
    tail: Cell<u16>,
}

impl BufRing {
    fn entries_layout() -> Layout {
        let bytes = usize::from(NET_RECV_BUFFERS) * std::mem::size_of::<types::BufRingEntry>();
        Layout::from_size_align(bytes.max(4096), 4096).expect("buffer ring layout")
    }

    fn data_layout() -> Layout {
        Layout::from_size_align(usize::from(NET_RECV_BUFFERS) * NET_RECV_BUFFER_BYTES, 4096)
            .expect("receive buffers layout")
    }

    fn new() -> BufRing {
        // SAFETY: both layouts have non-zero sizes.
        let (entries, data) = unsafe {
            (
                alloc_zeroed(Self::entries_layout()),
                alloc_zeroed(Self::data_layout()),
            )
        };
        if entries.is_null() {
            std::alloc::handle_alloc_error(Self::entries_layout());
        }
        if data.is_null() {
            std::alloc::handle_alloc_error(Self::data_layout());
        }
        let ring = BufRing {
            entries: entries.cast(),
            data,
            tail: Cell::new(0),
        };
        for bid in 0..NET_RECV_BUFFERS {
            ring.push(bid);
        }
        ring.publish();
        ring
    }

    /// Queues buffer `bid` for the kernel (visible at the next [`BufRing::publish`]).
    fn push(&self, bid: u16) {
        assert!(bid < NET_RECV_BUFFERS, "buffer id {bid} out of range");
        let tail = self.tail.get();
        let index = usize::from(tail & (NET_RECV_BUFFERS - 1));
        // SAFETY: `index` < NET_RECV_BUFFERS entries allocated in `new`; the kernel reads an
        // entry only between the published head and tail, and this one lies past the
        // published tail until `publish`.
        let entry = unsafe { &mut *self.entries.add(index) };
        entry.set_addr(self.buffer_ptr(bid) as u64);
        entry.set_len(NET_RECV_BUFFER_BYTES as u32);
        entry.set_bid(bid);
        self.tail.set(tail.wrapping_add(1));
    }

    /// Makes the pushed buffers visible to the kernel.
    fn publish(&self) {
        // SAFETY: the tail field overlays the first entry's last field; `entries` is the
        // page-aligned base of the ring allocated in `new`.
        let tail = unsafe { types::BufRingEntry::tail(self.entries) } as *const AtomicU16;
        // SAFETY: the field is a naturally aligned u16 the kernel reads concurrently, so it
        // is accessed as an atomic; Release orders the entries written before it.
        unsafe { &*tail }.store(self.tail.get(), Ordering::Release);
    }

    fn buffer_ptr(&self, bid: u16) -> *mut u8 {
        assert!(bid < NET_RECV_BUFFERS, "buffer id {bid} out of range");
        // SAFETY: bid < NET_RECV_BUFFERS (asserted), so the offset stays inside the data
        // allocation.
        unsafe { self.data.add(usize::from(bid) * NET_RECV_BUFFER_BYTES) }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        if self.entries.is_null() {
            return; // leaked (see NetRing's Drop)
        }
        // SAFETY: allocated in `new` with these layouts; the kernel is done with them
        // (NetRing's Drop waited for every operation, or leaked them instead).
        unsafe {
            dealloc(self.entries.cast(), Self::entries_layout());
            dealloc(self.data, Self::data_layout());
        }
    }
}

/// One executor's network ring (see the module docs).
pub struct NetRing {
    ring: RefCell<IoUring>,
    ops: RefCell<Vec<Option<Op>>>,
    free_slots: RefCell<Vec<usize>>,
    /// The wakers of one reaper pass, kept between passes so a pass allocates nothing.
    wakers: RefCell<Vec<Waker>>,
    in_flight: Cell<usize>,
    bufs: BufRing,
    /// Signalled by the kernel when a completion is posted (COOP rings): the idle reaper
    /// parks on it.
    eventfd: OwnedFd,
    /// Entries pushed and not yet handed to the kernel.
    queued: Cell<bool>,
    /// The reaper is parked: entries are submitted as they are pushed.
    parked: Cell<bool>,
    reaper_running: Cell<bool>,
    last_event: Cell<Instant>,
    /// Whether the ring has COOP_TASKRUN (false: the fallback of older kernels).
    coop: bool,
}

/// Why the network ring could not start, naming the kernel feature missing.
fn feature_error(feature: &str, e: io::Error) -> io::Error {
    io::Error::new(
        e.kind(),
        format!(
            "the network io_uring needs {feature} (Linux 5.19 or later): {e}; \
             run evringd on a newer kernel"
        ),
    )
}

/// The ring: `SINGLE_ISSUER | COOP_TASKRUN | TASKRUN_FLAG` (Linux 6.0), else the same
/// without `SINGLE_ISSUER` (5.19), else a plain ring (logged; `force_plain`: the tests'
/// switch). Returns whether the ring has `COOP_TASKRUN`.
fn build_ring(force_plain: bool) -> io::Result<(IoUring, bool)> {
    let coop = |single_issuer: bool| {
        let mut b = IoUring::builder();
        if single_issuer {
            b.setup_single_issuer();
        }
        b.setup_coop_taskrun()
            .setup_taskrun_flag()
            .setup_cqsize(NET_RING_ENTRIES * 4)
            .build(NET_RING_ENTRIES)
    };
    let why = if force_plain {
        format!("{TEST_ENV}=plain")
    } else {
        match coop(true).or_else(|_| coop(false)) {
            Ok(ring) => return Ok((ring, true)),
            Err(e) => e.to_string(),
        }
    };
    tracing::info!(
        reason = %why,
        "network io_uring without COOP_TASKRUN (kernel before 5.19): completions from the \
         other CPU interrupt the shard's thread"
    );
    let ring = IoUring::builder()
        .setup_cqsize(NET_RING_ENTRIES * 4)
        .build(NET_RING_ENTRIES)
        .map_err(|e| feature_error("io_uring_setup", e))?;
    Ok((ring, false))
}

impl NetRing {
    /// The ring of the executor running on this thread, created on first use (a later
    /// executor on the same thread gets its own: the first one's reaper ended with it).
    pub fn current() -> io::Result<Rc<NetRing>> {
        let executor = glommio::executor().id();
        NET.with(|n| {
            if let Some((id, ring)) = n.borrow().as_ref() {
                if *id == executor {
                    return Ok(ring.clone());
                }
            }
            let ring = Rc::new(NetRing::new(test_fault())?);
            let old = n.borrow_mut().replace((executor, ring.clone()));
            drop(old);
            Ok(ring)
        })
    }

    /// Sets up (and drops) a network ring as a shard would, so a kernel without a feature it
    /// needs is reported at start-up, before recovery, in one line.
    pub fn probe() -> io::Result<()> {
        NetRing::new(test_fault()).map(drop)
    }

    fn new(fault: Option<TestFault>) -> io::Result<NetRing> {
        let (ring, coop) = build_ring(fault == Some(TestFault::PlainRing))?;
        if fault == Some(TestFault::NoBufRing) {
            return Err(feature_error(
                "IORING_REGISTER_PBUF_RING (provided-buffer rings)",
                io::Error::from_raw_os_error(libc::EINVAL),
            ));
        }
        let bufs = BufRing::new();
        // SAFETY: the entries stay allocated (and the ring registered) until the ring is
        // dropped: `bufs` is a field dropped after `ring` is closed (NetRing's Drop).
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                bufs.entries as u64,
                NET_RECV_BUFFERS,
                BUF_GROUP,
                0,
            )
        }
        .map_err(|e| feature_error("IORING_REGISTER_PBUF_RING (provided-buffer rings)", e))?;
        // SAFETY: eventfd(2) with valid flags; a non-negative result is a new descriptor we
        // own.
        let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if efd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `efd` was just created and is owned by nothing else.
        let eventfd = unsafe { OwnedFd::from_raw_fd(efd) };
        ring.submitter()
            .register_eventfd(eventfd.as_raw_fd())
            .map_err(|e| feature_error("IORING_REGISTER_EVENTFD", e))?;
        Ok(NetRing {
            eventfd,
            ring: RefCell::new(ring),
            ops: RefCell::new(Vec::new()),
            free_slots: RefCell::new(Vec::new()),
            wakers: RefCell::new(Vec::new()),
            in_flight: Cell::new(0),
            bufs,
            queued: Cell::new(false),
            parked: Cell::new(false),
            reaper_running: Cell::new(false),
            last_event: Cell::new(Instant::now()),
            coop,
        })
    }

    /// Whether the ring runs with COOP_TASKRUN (false: the plain fallback).
    pub fn coop(&self) -> bool {
        self.coop
    }

    /// Operations submitted and not yet completed (abandoned ones included).
    pub fn in_flight(&self) -> usize {
        self.in_flight.get()
    }

    /// Accepts a connection on listening socket `fd`.
    pub fn accept(self: &Rc<Self>, fd: RawFd) -> OpFuture {
        let entry = opcode::Accept::new(types::Fd(fd), std::ptr::null_mut(), std::ptr::null_mut())
            .flags(libc::SOCK_CLOEXEC)
            .build();
        self.start(entry, None, true)
    }

    /// Receives into one provided buffer; `poll_first`: the caller expects no data yet.
    pub fn recv(self: &Rc<Self>, fd: RawFd, poll_first: bool) -> RecvFuture {
        let entry = opcode::Recv::new(
            types::Fd(fd),
            std::ptr::null_mut(),
            NET_RECV_BUFFER_BYTES as u32,
        )
        .buf_group(BUF_GROUP)
        .ioprio(if poll_first { RECVSEND_POLL_FIRST } else { 0 })
        .build()
        .flags(squeue::Flags::BUFFER_SELECT);
        RecvFuture {
            op: self.start(entry, None, false),
        }
    }

    /// Sends `bytes[from..]` on `fd`; resolves to the buffer and the count sent.
    pub fn send(self: &Rc<Self>, fd: RawFd, bytes: Vec<u8>, from: usize) -> SendFuture {
        assert!(from < bytes.len(), "a send of nothing");
        let rest = &bytes[from..];
        let len = u32::try_from(rest.len()).unwrap_or(u32::MAX);
        let entry = opcode::Send::new(types::Fd(fd), rest.as_ptr(), len)
            .flags(libc::MSG_NOSIGNAL)
            .build();
        SendFuture {
            op: self.start(entry, Some(bytes), false),
        }
    }

    fn start(
        self: &Rc<Self>,
        entry: squeue::Entry,
        bytes: Option<Vec<u8>>,
        accept: bool,
    ) -> OpFuture {
        let slot = self.free_slots.borrow_mut().pop().unwrap_or_else(|| {
            let mut ops = self.ops.borrow_mut();
            ops.push(None);
            ops.len() - 1
        });
        {
            let mut ops = self.ops.borrow_mut();
            assert!(
                ops[slot].is_none(),
                "network op slot {slot} reused while live"
            );
            ops[slot] = Some(Op {
                state: State::Waiting(None),
                bytes,
                accept,
            });
        }
        self.in_flight.set(self.in_flight.get() + 1);
        self.push(&entry.user_data(slot as u64));
        self.ensure_reaper();
        OpFuture {
            ring: self.clone(),
            slot,
            taken: false,
        }
    }

    /// Queues `entry` for the reaper's next pass, or hands it to the kernel at once while the
    /// reaper is parked (an operation started, or a cancellation: either must not wait for
    /// the shard's next activity).
    fn push(&self, entry: &squeue::Entry) {
        loop {
            let pushed = {
                let mut ring = self.ring.borrow_mut();
                let mut sq = ring.submission();
                // SAFETY: every buffer an entry points to lives in the op table (a send's
                // bytes) or in `bufs` (provided buffers) until its completion, and the
                // descriptors stay open while their connection awaits the operation (a
                // closed one fails the operation, it does not reach other memory).
                unsafe { sq.push(entry) }.is_ok()
            };
            if pushed {
                self.queued.set(true);
                if self.parked.get() {
                    self.enter();
                }
                return;
            }
            // A full queue: hand it to the kernel and push again.
            self.enter();
        }
    }

    /// Hands queued entries to the kernel and runs pending completion work. EBUSY and EAGAIN
    /// leave them queued for the next pass; any other error means the ring is broken, and
    /// entries the kernel may still take point into buffers of this thread, so it is not
    /// survivable.
    fn enter(&self) {
        self.queued.set(false);
        loop {
            match self.ring.borrow().submit() {
                Ok(_) => return,
                Err(e) => match e.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(libc::EBUSY) | Some(libc::EAGAIN) => {
                        self.queued.set(true);
                        return;
                    }
                    _ => panic!("the network io_uring failed: io_uring_enter: {e}"),
                },
            }
        }
    }

    /// One reaper pass: submits what is queued, runs completion work, records every
    /// completion and wakes its future. Returns how many operations completed.
    pub fn reap(&self) -> usize {
        let pending_work = {
            let mut ring = self.ring.borrow_mut();
            let sq = ring.submission();
            self.queued.get() || sq.taskrun() || sq.cq_overflow() || !sq.is_empty()
        };
        if pending_work {
            self.enter();
        }
        let mut wakers = std::mem::take(&mut *self.wakers.borrow_mut());
        let mut n = 0;
        {
            let mut ring = self.ring.borrow_mut();
            let mut ops = self.ops.borrow_mut();
            for cqe in ring.completion() {
                if cqe.user_data() == IGNORED {
                    continue;
                }
                let slot = cqe.user_data() as usize;
                let Some(op) = ops.get_mut(slot).and_then(Option::as_mut) else {
                    panic!("a completion for network op slot {slot}, which is not in flight");
                };
                n += 1;
                self.in_flight.set(self.in_flight.get() - 1);
                match std::mem::replace(&mut op.state, State::Done(cqe.result(), cqe.flags())) {
                    State::Waiting(w) => wakers.extend(w),
                    State::Abandoned => {
                        // Nobody takes it: free the slot and what it holds.
                        release(&self.bufs, op, cqe.result(), cqe.flags());
                        ops[slot] = None;
                        self.free_slots.borrow_mut().push(slot);
                    }
                    State::Done(..) => unreachable!("network op {slot} completed twice"),
                }
            }
        }
        self.bufs.publish();
        if n > 0 {
            self.last_event.set(Instant::now());
        }
        for w in wakers.drain(..) {
            w.wake();
        }
        *self.wakers.borrow_mut() = wakers;
        n
    }

    fn ensure_reaper(self: &Rc<Self>) {
        if self.reaper_running.replace(true) {
            return;
        }
        let guard = ReaperGuard(Rc::downgrade(self));
        glommio::spawn_local(reaper(guard)).detach();
    }

    /// A glommio file on a copy of the eventfd, through which the parked reaper waits.
    fn park_file(&self) -> glommio::io::BufferedFile {
        // SAFETY: dup(2) of a descriptor this ring owns.
        let dup = unsafe { libc::dup(self.eventfd.as_raw_fd()) };
        assert!(
            dup >= 0,
            "dup of the network ring's eventfd: {}",
            io::Error::last_os_error()
        );
        // SAFETY: `dup` is a fresh descriptor owned by nothing else; the file closes it.
        unsafe { glommio::io::BufferedFile::from_raw_fd(dup) }
    }

    /// Returns a provided buffer a receive is done with.
    fn give_back(&self, bid: u16) {
        self.bufs.push(bid);
        self.bufs.publish();
    }

    /// Cancels the operation in `slot`, whose future is gone.
    fn abandon(&self, slot: usize) {
        let mut ops = self.ops.borrow_mut();
        let op = ops[slot].as_mut().expect("abandoned op present");
        match std::mem::replace(&mut op.state, State::Abandoned) {
            State::Waiting(_) => {
                drop(ops);
                let cancel = opcode::AsyncCancel::new(slot as u64)
                    .build()
                    .user_data(IGNORED);
                self.push(&cancel);
            }
            State::Done(res, flags) => {
                // Completed and never taken: free it now.
                release(&self.bufs, op, res, flags);
                self.bufs.publish();
                ops[slot] = None;
                drop(ops);
                self.free_slots.borrow_mut().push(slot);
            }
            State::Abandoned => unreachable!("network op {slot} abandoned twice"),
        }
    }
}

/// The environment variable with which tests make the network ring start as on an older
/// kernel: `plain` (no COOP_TASKRUN: the fallback) or `no-buf-ring` (provided-buffer rings
/// refused: the start-up error).
pub const TEST_ENV: &str = "EVRING_TEST_NET_RING";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TestFault {
    PlainRing,
    NoBufRing,
}

fn test_fault() -> Option<TestFault> {
    match std::env::var(TEST_ENV).ok()?.as_str() {
        "plain" => Some(TestFault::PlainRing),
        "no-buf-ring" => Some(TestFault::NoBufRing),
        other => {
            tracing::warn!("{TEST_ENV}={other:?} is not plain or no-buf-ring; ignored");
            None
        }
    }
}

/// Clears `reaper_running` when the reaper ends, or when its executor drops it.
struct ReaperGuard(Weak<NetRing>);

impl Drop for ReaperGuard {
    fn drop(&mut self) {
        if let Some(r) = self.0.upgrade() {
            r.reaper_running.set(false);
            r.parked.set(false);
        }
    }
}

async fn reaper(guard: ReaperGuard) {
    // glommio polls a spawned task at once: pause first, so the operation that spawned the
    // reaper is returned before any completion is reaped.
    let mut park_file: Option<glommio::io::BufferedFile> = None;
    loop {
        glommio::timer::sleep(NET_YIELD).await;
        let Some(r) = guard.0.upgrade() else { return };
        r.reap();
        if r.in_flight() == 0 {
            return;
        }
        if r.last_event.get().elapsed() < NET_SPIN {
            continue;
        }
        // Idle: park until the kernel posts a completion. From here entries are submitted
        // as they are pushed; a completion posted between the last reap and the read below
        // has signalled the eventfd already, so the read returns at once.
        r.parked.set(true);
        r.reap();
        let file = park_file.get_or_insert_with(|| r.park_file());
        drop(r);
        let read = file.read_at(0, 8).await;
        let Some(r) = guard.0.upgrade() else { return };
        r.parked.set(false);
        if let Err(e) = read {
            panic!("reading the network ring's eventfd failed: {e}");
        }
    }
}

impl Drop for NetRing {
    fn drop(&mut self) {
        // Cancel everything in flight and wait for it: the kernel may still write provided
        // buffers or read send bytes until each operation's completion.
        let ring = self.ring.get_mut();
        let slots: Vec<u64> = self
            .ops
            .get_mut()
            .iter()
            .enumerate()
            .filter(|(_, op)| {
                matches!(
                    op,
                    Some(Op {
                        state: State::Waiting(_) | State::Abandoned,
                        ..
                    })
                )
            })
            .map(|(i, _)| i as u64)
            .collect();
        for slot in slots {
            let cancel = opcode::AsyncCancel::new(slot).build().user_data(IGNORED);
            // SAFETY: a cancel entry points to no memory.
            while unsafe { ring.submission().push(&cancel) }.is_err() {
                let _ = ring.submit();
            }
        }
        let mut left = self.in_flight.get();
        let deadline = Instant::now() + Duration::from_secs(5);
        while left > 0 && Instant::now() < deadline {
            match ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(_) => break,
            }
            for cqe in ring.completion() {
                if cqe.user_data() != IGNORED {
                    left -= 1;
                }
            }
        }
        if left > 0 {
            // The kernel may still touch the buffers: leak them rather than free memory in
            // use.
            tracing::error!(
                left,
                "network io_uring operations did not finish; leaking buffers"
            );
            std::mem::forget(std::mem::replace(&mut self.bufs, BufRing::empty()));
        }
    }
}

impl BufRing {
    /// A ring owning nothing (what replaces a leaked one).
    fn empty() -> BufRing {
        BufRing {
            entries: std::ptr::null_mut(),
            data: std::ptr::null_mut(),
            tail: Cell::new(0),
        }
    }
}

/// A future for one operation's completion: the CQE's result and flags.
pub struct OpFuture {
    ring: Rc<NetRing>,
    slot: usize,
    taken: bool,
}

impl Future for OpFuture {
    type Output = (i32, u32);
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<(i32, u32)> {
        assert!(!self.taken, "network op polled after it completed");
        let mut ops = self.ring.ops.borrow_mut();
        let op = ops[self.slot].as_mut().expect("awaited op present");
        match &mut op.state {
            State::Done(res, flags) => {
                let out = (*res, *flags);
                ops[self.slot] = None;
                drop(ops);
                self.ring.free_slots.borrow_mut().push(self.slot);
                self.taken = true;
                Poll::Ready(out)
            }
            State::Waiting(w) => {
                *w = Some(cx.waker().clone());
                Poll::Pending
            }
            State::Abandoned => unreachable!("a live future's op is abandoned"),
        }
    }
}

/// A CQE's result as a count or an error.
fn io_result(res: i32) -> io::Result<usize> {
    if res < 0 {
        Err(io::Error::from_raw_os_error(-res))
    } else {
        Ok(res as usize)
    }
}

impl Drop for OpFuture {
    fn drop(&mut self) {
        if !self.taken {
            self.ring.abandon(self.slot);
        }
    }
}

/// A receive's future: resolves to the bytes received (empty at end of stream).
pub struct RecvFuture {
    op: OpFuture,
}

/// Bytes received into a provided buffer; the buffer returns to the kernel when this drops.
pub struct Received {
    ring: Rc<NetRing>,
    bid: u16,
    len: usize,
}

impl std::ops::Deref for Received {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: the completion that named buffer `bid` gave it to this value until it
        // drops; the kernel wrote `len` ≤ NET_RECV_BUFFER_BYTES bytes into it.
        unsafe { std::slice::from_raw_parts(self.ring.bufs.buffer_ptr(self.bid), self.len) }
    }
}

impl Drop for Received {
    fn drop(&mut self) {
        self.ring.give_back(self.bid);
    }
}

impl Future for RecvFuture {
    type Output = io::Result<Option<Received>>;
    /// `Ok(None)`: end of stream; `Err(ENOBUFS)`: every provided buffer was in use, try again.
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let (res, flags) = std::task::ready!(Pin::new(&mut self.op).poll(cx));
        let bid = cqueue::buffer_select(flags);
        if res < 0 {
            assert!(bid.is_none(), "a failed receive holds no buffer");
            return Poll::Ready(Err(io::Error::from_raw_os_error(-res)));
        }
        let ring = self.op.ring.clone();
        match bid {
            None => {
                assert_eq!(res, 0, "a receive of {res} bytes without a buffer");
                Poll::Ready(Ok(None))
            }
            Some(bid) => {
                let received = Received {
                    ring,
                    bid,
                    len: res as usize,
                };
                if res == 0 {
                    return Poll::Ready(Ok(None));
                }
                assert!(received.len <= NET_RECV_BUFFER_BYTES);
                Poll::Ready(Ok(Some(received)))
            }
        }
    }
}

/// A send's future: resolves to the bytes given and how many of them (from the offset given)
/// the kernel took.
pub struct SendFuture {
    op: OpFuture,
}

impl Future for SendFuture {
    type Output = (Vec<u8>, io::Result<usize>);
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Take the bytes before the op's slot is freed by the completion's poll.
        let slot = self.op.slot;
        let done = {
            let ops = self.op.ring.ops.borrow();
            let op = ops[slot].as_ref().expect("send op present");
            matches!(op.state, State::Done(..))
        };
        if !done {
            let _ = Pin::new(&mut self.op).poll(cx);
            return Poll::Pending;
        }
        let kept = self.op.ring.ops.borrow_mut()[slot]
            .as_mut()
            .expect("send op present")
            .bytes
            .take()
            .expect("a send holds its bytes");
        let (res, _) = std::task::ready!(Pin::new(&mut self.op).poll(cx));
        let result = io_result(res);
        Poll::Ready((kept, result))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    /// Receives on `fd` until `want` bytes arrived (or the end of the stream).
    async fn receive_exactly(ring: &Rc<NetRing>, fd: RawFd, want: usize) -> Vec<u8> {
        let mut got = Vec::new();
        let mut starved = 0;
        while got.len() < want {
            match ring.recv(fd, got.is_empty()).await {
                Ok(Some(bytes)) => got.extend_from_slice(&bytes),
                Ok(None) => break,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    // Nothing else runs here that could hold buffers: they leaked.
                    starved += 1;
                    assert!(starved < 1000, "every provided buffer is gone");
                    glommio::executor().yield_task_queue_now().await
                }
                Err(e) => panic!("recv: {e}"),
            }
        }
        got
    }

    /// Accepts one connection on `listener` through `ring`, echoes `rounds` messages of
    /// `len` bytes back, then expects the end of the stream. The client runs on a thread.
    fn echo(ring_fault: Option<TestFault>, rounds: usize, len: usize) -> bool {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let client = std::thread::spawn(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            for round in 0..rounds {
                let msg = vec![round as u8; len];
                s.write_all(&msg).unwrap();
                let mut back = vec![0; len];
                s.read_exact(&mut back).unwrap();
                assert_eq!(back, msg, "round {round} echoed");
            }
        });
        let coop = crate::shard::run_local(async move {
            let ring = Rc::new(NetRing::new(ring_fault).unwrap());
            let (fd, _) = ring.accept(listener.as_raw_fd()).await;
            assert!(fd >= 0, "accept: {}", io::Error::from_raw_os_error(-fd));
            // SAFETY: the accepted descriptor is owned by nothing else.
            let conn = unsafe { TcpStream::from_raw_fd(fd) };
            for _ in 0..rounds {
                let msg = receive_exactly(&ring, fd, len).await;
                assert_eq!(msg.len(), len);
                let mut from = 0;
                while from < msg.len() {
                    let (back, sent) = ring.send(fd, msg.clone(), from).await;
                    assert_eq!(back, msg, "the send gives its bytes back");
                    from += sent.unwrap();
                }
            }
            assert!(
                receive_exactly(&ring, fd, 1).await.is_empty(),
                "end of stream"
            );
            drop(conn);
            assert_eq!(ring.in_flight(), 0);
            ring.coop()
        });
        client.join().unwrap();
        coop
    }

    #[test]
    fn accepts_receives_and_sends_on_loopback() {
        // More rounds than provided buffers: each receive's buffer must come back.
        assert!(echo(None, 3 * usize::from(NET_RECV_BUFFERS), 100));
        // Messages larger than one buffer arrive in several receives.
        assert!(echo(None, 4, 5 * NET_RECV_BUFFER_BYTES + 7));
    }

    #[test]
    fn the_plain_fallback_serves_the_same() {
        assert!(!echo(Some(TestFault::PlainRing), 50, 100));
    }

    #[test]
    fn a_refused_buffer_ring_is_an_error_naming_the_feature() {
        let err = crate::shard::run_local(async { NetRing::new(Some(TestFault::NoBufRing)).err() })
            .expect("the ring must refuse to start");
        let msg = err.to_string();
        assert!(msg.contains("IORING_REGISTER_PBUF_RING"), "{msg}");
        assert!(msg.contains("newer kernel"), "{msg}");
    }

    /// Waits until `ring` has no operation in flight; fails if `what` is still in flight
    /// after `within`.
    async fn settle(ring: &NetRing, within: Duration, what: &str) {
        let deadline = Instant::now() + within;
        while ring.in_flight() > 0 {
            assert!(Instant::now() < deadline, "{what}: never completed");
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
    }

    #[test]
    fn a_receive_dropped_while_the_reaper_is_parked_is_cancelled_at_once() {
        // A connection timing out on an idle shard drops its receive while the reaper sleeps;
        // its cancellation must reach the kernel then, not at the shard's next activity: until
        // it does, the kernel holds the socket open.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let client = std::thread::spawn(move || TcpStream::connect(addr).unwrap());
        crate::shard::run_local(async move {
            let ring = Rc::new(NetRing::new(None).unwrap());
            let (fd, _) = ring.accept(listener.as_raw_fd()).await;
            assert!(fd >= 0);
            // SAFETY: the accepted descriptor is owned by nothing else.
            let _conn = unsafe { TcpStream::from_raw_fd(fd) };
            let mut recv = ring.recv(fd, true);
            assert!(futures_lite::future::poll_once(&mut recv).await.is_none());
            // Idle for longer than the reaper spins: it parks.
            glommio::timer::sleep(NET_SPIN * 20).await;
            assert!(ring.parked.get(), "the idle reaper parked");
            drop(recv);
            settle(
                &ring,
                Duration::from_secs(5),
                "the receive dropped while parked",
            )
            .await;
        });
        drop(client.join().unwrap());
    }

    #[test]
    fn a_dropped_receive_is_cancelled_and_holds_no_buffer() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let client = std::thread::spawn(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            wait.recv().unwrap();
            s.write_all(b"after the cancel").unwrap();
            s
        });
        crate::shard::run_local(async move {
            let ring = Rc::new(NetRing::new(None).unwrap());
            let (fd, _) = ring.accept(listener.as_raw_fd()).await;
            assert!(fd >= 0);
            // SAFETY: the accepted descriptor is owned by nothing else.
            let _conn = unsafe { TcpStream::from_raw_fd(fd) };
            // Many receives armed and dropped before any byte arrives: each is cancelled,
            // and none may keep a buffer or its slot.
            for _ in 0..2 * usize::from(NET_RECV_BUFFERS) {
                let mut recv = ring.recv(fd, true);
                assert!(futures_lite::future::poll_once(&mut recv).await.is_none());
                drop(recv);
            }
            settle(&ring, Duration::from_secs(10), "the cancelled receives").await;
            go.send(()).unwrap();
            let got = receive_exactly(&ring, fd, b"after the cancel".len()).await;
            assert_eq!(
                got, b"after the cancel",
                "the bytes went to the live receive"
            );
            assert_eq!(ring.free_slots.borrow().len(), ring.ops.borrow().len());
        });
        drop(client.join().unwrap());
    }
}
