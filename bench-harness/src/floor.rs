//! The `floor` targets of `evring-bench compare`: a minimal io_uring server of our own that
//! answers PING and does nothing else — the ceiling for a PING workload on this machine, to
//! hold evringd's network path (and Redis's) against — and, started with a journal file, the
//! same server made durable (the `floor-durable` targets): the ceiling for durable
//! single-event appends on this machine.
//!
//! It runs in the bench's process, on one thread pinned to CPU 0 (where evringd's only shard
//! runs by default, `pin_cpus = true`), listening on an ephemeral loopback port. It speaks
//! two protocols, chosen per connection by its first byte:
//! - RESP (first byte `*`): every `*1\r\n$4\r\nPING\r\n` is answered `+PONG\r\n`;
//! - evring's frames (anything else): HELLO is answered HELLO_OK (the version asked for, no
//!   partition addresses) and PING is answered PONG, both through `evring::protocol`'s
//!   encoder, so the reply is what evringd would send.
//!
//! Anything else closes the connection. With a journal file (durable mode) it also serves
//! single-event appends: a RESP `XADD` (any arguments) is answered with a bulk string ID
//! `1-N`, and an evring APPEND frame with APPENDED (first and last version N, partition 0,
//! LSN N), each only once the request's bytes are durable:
//! - the bytes of every append a pass reads are copied, as received, into the open frame (a
//!   4096-aligned buffer), and its reply into the frame's reply list;
//! - at the end of the pass the open frame, padded to 4096 bytes, is written with one
//!   `O_DIRECT | O_DSYNC` write at the next offset of a preallocated, zero-filled file (as
//!   evringd's segments are), by evringd's rule with its defaults: at once if no write is in
//!   flight (or done and not yet released); with writes in flight, once it holds
//!   [`PIPELINE_MIN_BYTES`] and fewer than [`DEPTH`] are; otherwise it goes on filling. An
//!   open frame that fills up (1 MiB, when clients send faster than the disk writes) is
//!   sealed to wait for its write and a new one opened: the floor buffers where evringd
//!   would make the connection wait;
//! - a frame's replies go to their connections once its write and those of every frame
//!   sealed before it completed, so each connection's replies stay in request order;
//! - the file is reused from its start when full (overwriting, which evringd never does; the
//!   cost of a write is the same);
//! - a failed or short write ends the server with an error.
//!
//! No records, checksums, indexes or streams: the ceiling any durable server of this
//! protocol has on this machine with this driver, one CPU and group commit.
//!
//! The algorithm, one pass of the loop:
//! 1. `submit_and_wait(1)`: submit what the last pass queued, wait for a completion.
//! 2. Drain the completion queue:
//!    - a multishot ACCEPT completion is a new connection: a multishot RECV is armed on it,
//!      selecting its buffers from a provided-buffer ring (`IORING_REGISTER_PBUF_RING`, 256
//!      buffers of 2 KiB). Each RECV completion names the buffer the bytes went to; the
//!      requests in it are answered into the connection's `pending` replies (a request split
//!      between two receives waits in a 128-byte carry) and the buffer goes back to the ring
//!      at once. A multishot operation the kernel ended (no `IORING_CQE_F_MORE`) is armed
//!      again, unless the connection closed;
//!    - a SEND completion frees the connection's `sending` buffer (or sends the rest).
//! 3. Publish the returned buffers (one store of the ring's tail), then one SEND per
//!    connection with replies pending and none in flight: `pending` and `sending` swap, so
//!    the replies of all the requests a pass read leave in one write.
//!
//! 4. Durable mode: seal the open frame as above; a WRITE completion (step 2) releases the
//!    replies of every frame done, oldest first, into the connections' `pending`.
//!
//! No allocation per request: the buffers are allocated once, and a connection's two reply
//! buffers (and a frame's reply list) keep their capacity (a HELLO's reply allocates its version string, once per
//! connection). The ring is set up with `IORING_SETUP_SINGLE_ISSUER |
//! IORING_SETUP_DEFER_TASKRUN` (completion work runs only when the loop asks for it), or as
//! a plain ring if the kernel refuses. Dropping [`Floor`] stops the thread: a flag, then a
//! connection to wake its ACCEPT; the thread cancels what is in flight and closes everything.

use std::io::ErrorKind;
use std::io::Write as _;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use anyhow::{anyhow, bail, Context};
use io_uring::types::{BufRingEntry, CancelBuilder, Fd};
use io_uring::{cqueue, opcode, squeue, IoUring};

use evring::protocol::{
    encode_response, opcode as op, AppendResult, FrameHeader, Response, FRAME_HEADER_BYTES,
};

use crate::codecs::RESP_PING;
use crate::disk::Aligned;

/// Submission queue entries (the completion queue has twice as many).
const RING_ENTRIES: u32 = 1024;
/// Provided buffers (a power of two, as the kernel requires) and their size.
const BUFFERS: u16 = 256;
const BUFFER_BYTES: usize = 2048;
/// The provided-buffer group RECV selects from.
const GROUP: u16 = 0;
/// The longest request the floor keeps across two receives, and so the longest it serves.
const CARRY_BYTES: usize = 4096;

/// Durable mode: the journal file's length, a frame's largest size (evringd's default
/// `journal_frame_bytes_max`), and the writes in flight at most (evringd's default
/// `in_flight_frames`).
const JOURNAL_BYTES: u64 = 256 << 20;
const FRAME_BYTES: usize = 1 << 20;
pub const DEPTH: usize = 4;
/// evringd's default `pipeline_min_bytes`: with writes in flight, the least a frame holds
/// before its write starts.
const PIPELINE_MIN_BYTES: usize = 64 * 1024;

/// `user_data`: the operation in the low byte, the connection's slot above.
const ACCEPT: u64 = 0;
const RECV: u64 = 1;
const SEND: u64 = 2;
/// A journal frame's write; the frame's sequence number above.
const WRITE: u64 = 3;

/// `evring-bench floor`'s arguments.
#[derive(clap::Args)]
pub struct FloorArgs {
    /// Serve durable appends, journaled in this file (created; on the disk to measure).
    #[arg(long)]
    journal: Option<std::path::PathBuf>,
}

/// `evring-bench floor`: starts the floor, prints `listening on ADDR`, and serves until the
/// process is killed.
pub fn main(a: FloorArgs) -> anyhow::Result<()> {
    let floor = Floor::start(a.journal.as_deref())?;
    println!("listening on {}", floor.addr());
    loop {
        std::thread::park();
    }
}

/// A running floor server; dropping it stops it.
pub struct Floor {
    addr: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Floor {
    /// Starts the server thread; returns once its ring is set up and it listens. With
    /// `journal`, a file to create (on the disk to measure), it serves durable appends.
    pub fn start(journal: Option<&Path>) -> anyhow::Result<Floor> {
        let journal = journal.map(Path::to_path_buf);
        let listener = TcpListener::bind("127.0.0.1:0").context("floor: bind")?;
        let addr = listener.local_addr()?.to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread_stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name("evring-floor".into())
            .spawn(move || serve(listener, journal, &thread_stop, &ready_tx))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Floor {
                addr,
                stop,
                thread: Some(thread),
            }),
            Ok(Err(e)) => Err(anyhow!("floor: {e}")),
            Err(_) => match thread.join() {
                Ok(r) => Err(r
                    .err()
                    .unwrap_or_else(|| anyhow!("floor: the thread ended"))),
                Err(_) => Err(anyhow!("floor: the thread panicked")),
            },
        }
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // The thread sleeps in submit_and_wait: a connection completes its ACCEPT.
        let _ = TcpStream::connect(&self.addr);
        if let Some(t) = self.thread.take() {
            match t.join() {
                Ok(Err(e)) => eprintln!("floor: {e:#}"),
                Err(_) => eprintln!("floor: the thread panicked"),
                Ok(Ok(())) => {}
            }
        }
    }
}

/// Pins the calling thread to CPU 0, as evringd pins its shard 0. Best effort.
fn pin_to_cpu0() {
    // SAFETY: cpu_set_t is plain data; all zeros is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: CPU 0 is below CPU_SETSIZE, the size of `set`.
    unsafe { libc::CPU_SET(0, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 is the calling thread.
    unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
}

/// The provided buffers: `BUFFERS` buffers of `BUFFER_BYTES` in one allocation (`data`),
/// described to the kernel by a ring of `BUFFERS` 16-byte descriptors (`ring`, page
/// aligned) whose tail we advance as buffers come back.
struct BufRing {
    ring: Aligned,
    data: Aligned,
    /// The next descriptor to fill; published to the kernel by [`BufRing::publish`].
    tail: u16,
}

impl BufRing {
    fn new() -> BufRing {
        let mut b = BufRing {
            ring: Aligned::new(usize::from(BUFFERS) * std::mem::size_of::<BufRingEntry>()),
            data: Aligned::new(usize::from(BUFFERS) * BUFFER_BYTES),
            tail: 0,
        };
        for bid in 0..BUFFERS {
            b.put(bid);
        }
        b.publish();
        b
    }

    /// Describes buffer `bid` in the next descriptor (not yet visible to the kernel).
    fn put(&mut self, bid: u16) {
        let index = usize::from(self.tail & (BUFFERS - 1));
        let base = self.ring.ptr().cast::<BufRingEntry>();
        // SAFETY: `index` < BUFFERS and the allocation holds BUFFERS descriptors
        // (BufRingEntry is the 16-byte io_uring_buf; 4096 alignment suffices). The kernel
        // reads only descriptors between its head and the published tail, and this one is at
        // the unpublished tail; of descriptor 0 it also reads `resv`, the ring's tail, which
        // the setters below do not write.
        let e = unsafe { &mut *base.add(index) };
        // (data + bid × BUFFER_BYTES is within `data`: bid < BUFFERS.)
        e.set_addr(self.data.ptr() as u64 + u64::from(bid) * BUFFER_BYTES as u64);
        e.set_len(BUFFER_BYTES as u32);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes every descriptor put so far visible to the kernel.
    fn publish(&self) {
        // SAFETY: `ring` is the page-aligned start of the descriptors, initialised (zeroed,
        // then filled by `put`); the tail field lies within descriptor 0.
        let tail = unsafe { BufRingEntry::tail(self.ring.ptr().cast::<BufRingEntry>()) };
        // SAFETY: the tail is a naturally aligned u16 the kernel only reads; an AtomicU16 has
        // the same layout, and the release store orders the descriptors' writes before it.
        unsafe { AtomicU16::from_ptr(tail.cast_mut()) }.store(self.tail, Ordering::Release);
    }

    /// The first `len` bytes of buffer `bid`, which a completion just handed back to us.
    fn buffer(&self, bid: u16, len: usize) -> &[u8] {
        assert!(
            bid < BUFFERS && len <= BUFFER_BYTES,
            "buffer {bid}, {len} bytes"
        );
        // SAFETY: in bounds (checked above); the kernel wrote these bytes before posting
        // the completion and does not touch the buffer again until `put(bid)` and
        // `publish` return it, after the caller is done with the slice.
        unsafe {
            std::slice::from_raw_parts(self.data.ptr().add(usize::from(bid) * BUFFER_BYTES), len)
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Proto {
    Resp,
    Native,
}

struct Conn {
    socket: TcpStream,
    /// Decided by the first byte received.
    proto: Option<Proto>,
    /// The start of a request the last buffer cut.
    carry: [u8; CARRY_BYTES],
    carry_len: usize,
    /// Replies to requests read since the last SEND.
    pending: Vec<u8>,
    /// Replies a SEND has in flight (or had: `sent` of them went).
    sending: Vec<u8>,
    sent: usize,
    send_in_flight: bool,
    recv_armed: bool,
    /// In this pass's list of connections to send to.
    queued: bool,
    /// Closed by the peer or refused: no more sends; freed once nothing is in flight.
    dead: bool,
    /// Durable mode: its appends whose replies wait in a frame (its slot is not reused
    /// before they are delivered).
    awaiting: usize,
}

impl Conn {
    fn new(socket: TcpStream) -> Conn {
        Conn {
            socket,
            proto: None,
            carry: [0; CARRY_BYTES],
            carry_len: 0,
            pending: Vec::with_capacity(4096),
            sending: Vec::with_capacity(4096),
            sent: 0,
            send_in_flight: false,
            recv_armed: false,
            queued: false,
            dead: false,
            awaiting: 0,
        }
    }

    /// Answers the complete requests in what was carried plus `data` into `pending` (or,
    /// appends, into the journal's open frame), and carries what is left of an incomplete
    /// one. `slot` is the connection's.
    fn receive(
        &mut self,
        mut data: &[u8],
        mut journal: Option<&mut Journal>,
        slot: usize,
    ) -> Result<(), &'static str> {
        let proto = match (self.proto, data.first()) {
            (Some(p), _) => p,
            (None, None) => return Ok(()),
            (None, Some(&b'*')) => *self.proto.insert(Proto::Resp),
            (None, Some(_)) => *self.proto.insert(Proto::Native),
        };
        if self.carry_len > 0 {
            let had = self.carry_len;
            let take = data.len().min(CARRY_BYTES - had);
            self.carry[had..had + take].copy_from_slice(&data[..take]);
            let mut to = Sink {
                pending: &mut self.pending,
                journal: journal.as_deref_mut(),
                slot,
                appends: &mut self.awaiting,
            };
            let used = answer(proto, &self.carry[..had + take], &mut to)?;
            if used == 0 {
                if take < data.len() {
                    return Err("a request longer than the floor serves");
                }
                self.carry_len = had + take;
                return Ok(());
            }
            // The carried request is complete; what follows it is still in `data`.
            data = &data[used - had..];
            self.carry_len = 0;
        }
        let mut to = Sink {
            pending: &mut self.pending,
            journal,
            slot,
            appends: &mut self.awaiting,
        };
        let used = answer(proto, data, &mut to)?;
        let rest = &data[used..];
        if rest.len() > CARRY_BYTES {
            return Err("a request longer than the floor serves");
        }
        self.carry[..rest.len()].copy_from_slice(rest);
        self.carry_len = rest.len();
        Ok(())
    }
}

/// Where a connection's replies go: at once into its `pending`, or, for an append, into the
/// journal's open frame with the request's bytes.
struct Sink<'a> {
    pending: &'a mut Vec<u8>,
    journal: Option<&'a mut Journal>,
    slot: usize,
    /// The connection's count of appends awaiting their reply.
    appends: &'a mut usize,
}

impl Sink<'_> {
    /// Journals `request` (durable mode only); its reply, written by `reply` with the
    /// append's number, follows once the frame is durable.
    fn append(
        &mut self,
        request: &[u8],
        reply: impl FnOnce(&mut Vec<u8>, u64),
    ) -> Result<(), &'static str> {
        let journal = self
            .journal
            .as_deref_mut()
            .ok_or("an append on a floor started without a journal")?;
        journal.append(request, self.slot, reply)?;
        *self.appends += 1;
        Ok(())
    }
}

/// The length of the RESP multibulk request at the front of `input` and its first argument;
/// `None` while incomplete.
fn resp_request(input: &[u8]) -> Result<Option<(usize, &[u8])>, &'static str> {
    /// The count of the `kind` line at `at` and where the line ends.
    fn count(input: &[u8], at: usize, kind: u8) -> Result<Option<(usize, usize)>, &'static str> {
        let Some(&first) = input.get(at) else {
            return Ok(None);
        };
        if first != kind {
            return Err("not a RESP multibulk request");
        }
        let Some(nl) = input[at..].iter().position(|&b| b == b'\n') else {
            return if input.len() - at > 32 {
                Err("a RESP count line too long")
            } else {
                Ok(None)
            };
        };
        let n = input[at + 1..at + nl]
            .strip_suffix(b"\r")
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| d.parse::<usize>().ok())
            .ok_or("a bad RESP count line")?;
        Ok(Some((n, at + nl + 1)))
    }
    let Some((args, mut at)) = count(input, 0, b'*')? else {
        return Ok(None);
    };
    let mut first: &[u8] = &[];
    for i in 0..args {
        let Some((len, start)) = count(input, at, b'$')? else {
            return Ok(None);
        };
        let end = start.saturating_add(len);
        if input.len() < end.saturating_add(2) {
            return Ok(None);
        }
        if i == 0 {
            first = &input[start..end];
        }
        at = end + 2;
    }
    Ok(Some((at, first)))
}

/// Answers every complete request at the front of `input` into `to`; returns the bytes they
/// took (what follows is the start of an incomplete request), or why a request is not
/// served.
fn answer(proto: Proto, input: &[u8], to: &mut Sink<'_>) -> Result<usize, &'static str> {
    let mut at = 0;
    match proto {
        Proto::Resp => loop {
            let rest = &input[at..];
            if rest.starts_with(RESP_PING) {
                to.pending.extend_from_slice(b"+PONG\r\n");
                at += RESP_PING.len();
                continue;
            }
            let Some((len, name)) = resp_request(rest)? else {
                return Ok(at);
            };
            if name.eq_ignore_ascii_case(b"XADD") {
                to.append(&rest[..len], |out, n| {
                    // The ID `1-n`, as a bulk string.
                    let id_len = 2 + n.checked_ilog10().unwrap_or(0) + 1;
                    write!(out, "${id_len}\r\n1-{n}\r\n").expect("a Vec takes every write");
                })?;
            } else if name.eq_ignore_ascii_case(b"PING") {
                to.pending.extend_from_slice(b"+PONG\r\n");
            } else {
                return Err("a RESP command other than PING or XADD");
            }
            at += len;
        },
        Proto::Native => {
            while let Some(head) = input.get(at..at + FRAME_HEADER_BYTES) {
                let head: &[u8; FRAME_HEADER_BYTES] = head.try_into().expect("16 bytes");
                let h = FrameHeader::parse(head).map_err(|_| "a malformed frame")?;
                let len = FRAME_HEADER_BYTES + h.body_len();
                if len > CARRY_BYTES {
                    return Err("a frame longer than the floor serves");
                }
                let Some(body) = input.get(at + FRAME_HEADER_BYTES..at + len) else {
                    break;
                };
                match h.opcode {
                    op::PING => encode_response(to.pending, h.request_id, 0, &Response::Pong),
                    op::APPEND => to.append(&input[at..at + len], |out, n| {
                        let appended = AppendResult {
                            first_version: n,
                            last_version: n,
                            partition: 0,
                            lsn: n,
                        };
                        encode_response(out, h.request_id, 0, &Response::Appended(appended));
                    })?,
                    op::HELLO => {
                        let version = body.get(..2).ok_or("a HELLO without a version")?;
                        let hello = Response::Hello {
                            protocol_version: u16::from_le_bytes([version[0], version[1]]),
                            server_version: "evring-bench floor".into(),
                            partition_addresses: Vec::new(),
                        };
                        encode_response(to.pending, h.request_id, 0, &hello);
                    }
                    _ => return Err("a request other than HELLO, PING or APPEND"),
                }
                at += len;
            }
            Ok(at)
        }
    }
}

/// Durable mode's journal: a preallocated file written through `O_DIRECT | O_DSYNC`, and its
/// frames, oldest first: those sealed (full and waiting for a write, being written, or
/// written and not yet released), then the open one, which the pass's appends fill.
struct Journal {
    file: std::fs::File,
    /// The next write's offset.
    at: u64,
    /// Never empty: the last is the open frame. Frame `k` has sequence number `first + k`,
    /// which its write's `user_data` carries.
    frames: std::collections::VecDeque<Frame>,
    first: u64,
    /// The sealed frames whose write was submitted (the oldest sealed ones).
    submitted: usize,
    /// Released frames, to open again.
    spare: Vec<Frame>,
    /// Appends served; the last one's number is its version, LSN and ID.
    appends: u64,
}

struct Frame {
    /// The appends' bytes, `used` of them; written padded to 4096.
    buf: Aligned,
    used: usize,
    /// The replies, one after another, and for each its connection and where it ends.
    replies: Vec<u8>,
    to: Vec<(usize, usize)>,
    /// Bytes its write covers (0 until submitted); its write completed.
    len: usize,
    done: bool,
}

impl Frame {
    fn new() -> Frame {
        Frame {
            buf: Aligned::new(FRAME_BYTES),
            used: 0,
            replies: Vec::with_capacity(64 * 1024),
            to: Vec::with_capacity(1024),
            len: 0,
            done: false,
        }
    }
}

impl Journal {
    /// Creates the file at `path`, preallocated and zero-filled as evringd's segments are.
    fn open(path: &Path) -> anyhow::Result<Journal> {
        crate::disk::prepare_file(path, JOURNAL_BYTES)?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_DIRECT | libc::O_DSYNC)
            .open(path)
            .with_context(|| format!("floor: open {} with O_DIRECT", path.display()))?;
        Ok(Journal {
            file,
            at: 0,
            frames: std::iter::once(Frame::new()).collect(),
            first: 0,
            submitted: 0,
            spare: (0..DEPTH).map(|_| Frame::new()).collect(),
            appends: 0,
        })
    }

    fn open_frame(&mut self) -> &mut Frame {
        self.frames.back_mut().expect("an open frame")
    }

    /// Copies `request` into the open frame and its reply (written by `reply` with the
    /// append's number) into the frame's replies, for connection `slot`. A full open frame
    /// is sealed, to wait for a write, and a new one opened.
    fn append(
        &mut self,
        request: &[u8],
        slot: usize,
        reply: impl FnOnce(&mut Vec<u8>, u64),
    ) -> Result<(), &'static str> {
        if request.len() > FRAME_BYTES {
            return Err("an append larger than the floor's frame");
        }
        self.appends += 1;
        let n = self.appends;
        if self.open_frame().used + request.len() > FRAME_BYTES {
            let next = self.spare.pop().unwrap_or_else(Frame::new);
            self.frames.push_back(next);
        }
        let f = self.open_frame();
        // SAFETY: `used + request.len()` ≤ FRAME_BYTES, the buffer's size; the open frame is
        // not being written (only submitted frames are), so nothing else reads or writes it.
        unsafe {
            std::ptr::copy_nonoverlapping(request.as_ptr(), f.buf.ptr().add(f.used), request.len());
        }
        f.used += request.len();
        reply(&mut f.replies, n);
        f.to.push((slot, f.replies.len()));
        Ok(())
    }

    /// Submits by the rule of the module doc: the sealed frames waiting for a write, then
    /// the open frame (sealing it), while fewer than [`DEPTH`] writes are unreleased. Each
    /// write's entry goes to `push`.
    fn seal(
        &mut self,
        mut push: impl FnMut(&squeue::Entry) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        let sealed = self.frames.len() - 1;
        let open = self.frames.back().expect("an open frame");
        if sealed < DEPTH
            && (sealed == 0 && open.used > 0 || sealed > 0 && open.used >= PIPELINE_MIN_BYTES)
        {
            let next = self.spare.pop().unwrap_or_else(Frame::new);
            self.frames.push_back(next);
        }
        while self.submitted < DEPTH && self.submitted < self.frames.len() - 1 {
            let k = self.submitted;
            let f = &mut self.frames[k];
            let len = f.used.next_multiple_of(4096);
            if self.at + len as u64 > JOURNAL_BYTES {
                self.at = 0;
            }
            let write = opcode::Write::new(Fd(self.file.as_raw_fd()), f.buf.ptr(), len as u32)
                .offset(self.at)
                .build()
                .user_data((self.first + k as u64) << 8 | WRITE);
            push(&write)?;
            self.at += len as u64;
            f.len = len;
            self.submitted += 1;
        }
        Ok(())
    }

    /// The submitted frame numbered `seq`.
    fn submitted_frame(&mut self, seq: u64) -> &mut Frame {
        usize::try_from(seq - self.first)
            .ok()
            .filter(|&k| k < self.submitted)
            .map(|k| &mut self.frames[k])
            .expect("a completion of a frame being written")
    }

    /// The write of the frame numbered `seq` completed with `res`.
    fn written(&mut self, seq: u64, res: i32) -> anyhow::Result<()> {
        let f = self.submitted_frame(seq);
        assert!(!f.done, "a second completion of a frame's write");
        if usize::try_from(res).ok() != Some(f.len) {
            bail!(
                "floor: the journal write of {} bytes returned {res} ({})",
                f.len,
                std::io::Error::from_raw_os_error(res.saturating_neg())
            );
        }
        f.done = true;
        Ok(())
    }

    /// Hands the replies of every done frame, oldest first, to `deliver` (connection slot,
    /// reply bytes), and frees those frames.
    fn release(&mut self, mut deliver: impl FnMut(usize, &[u8])) {
        while self.submitted > 0 && self.frames[0].done {
            let mut f = self.frames.pop_front().expect("a done frame");
            let mut start = 0;
            for &(slot, end) in &f.to {
                deliver(slot, &f.replies[start..end]);
                start = end;
            }
            f.replies.clear();
            f.to.clear();
            f.used = 0;
            f.len = 0;
            f.done = false;
            self.spare.push(f);
            self.first += 1;
            self.submitted -= 1;
        }
    }

    /// Writes in flight.
    fn writing(&self) -> usize {
        self.frames
            .iter()
            .take(self.submitted)
            .filter(|f| !f.done)
            .count()
    }
}

/// Queues `e` on `ring` (submitting first if the queue is full).
fn push(ring: &mut IoUring, e: &squeue::Entry) -> std::io::Result<()> {
    loop {
        // SAFETY: what every entry points to stays valid and untouched until its completion:
        // the listener and sockets live in the server until then, RECV writes only provided
        // buffers the kernel owns, a SEND's `sending` is neither changed nor freed while
        // `send_in_flight`, and a submitted journal frame is neither changed nor freed until
        // its write completed. `Server`'s `Drop` waits for the writes and cancels whatever
        // else is in flight before any of it goes.
        if unsafe { ring.submission().push(e) }.is_ok() {
            return Ok(());
        }
        ring.submit()?;
    }
}

fn new_ring() -> std::io::Result<IoUring> {
    IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(RING_ENTRIES)
        .or_else(|e| {
            eprintln!("floor: SINGLE_ISSUER | DEFER_TASKRUN refused ({e}); a plain ring");
            IoUring::new(RING_ENTRIES)
        })
}

/// The server thread: reports on `ready` once it listens, then serves until `stop`.
fn serve(
    listener: TcpListener,
    journal: Option<std::path::PathBuf>,
    stop: &AtomicBool,
    ready: &mpsc::Sender<Result<(), String>>,
) -> anyhow::Result<()> {
    pin_to_cpu0();
    let journal = match journal.as_deref().map(Journal::open).transpose() {
        Ok(j) => j,
        Err(e) => {
            let _ = ready.send(Err(format!("{e:#}")));
            return Ok(());
        }
    };
    let mut server = match Server::new(listener, journal) {
        Ok(s) => s,
        Err(e) => {
            let _ = ready.send(Err(e));
            return Ok(());
        }
    };
    let _ = ready.send(Ok(()));
    server.run(stop)
}

struct Server {
    // Fields drop in this order: the ring first (once `Drop` has cancelled all it has in
    // flight), then the buffers and sockets its operations used.
    ring: IoUring,
    bufs: BufRing,
    conns: Vec<Option<Conn>>,
    listener: TcpListener,
    /// Free slots of `conns`.
    free: Vec<usize>,
    /// Connections with replies pending, to send to at the end of the pass.
    to_send: Vec<usize>,
    /// Durable mode's journal (its frames are written by the ring: dropped after it).
    journal: Option<Journal>,
}

impl Server {
    fn new(listener: TcpListener, journal: Option<Journal>) -> Result<Server, String> {
        let bufs = BufRing::new();
        let ring = new_ring().map_err(|e| format!("io_uring setup: {e}"))?;
        // SAFETY: the descriptors are page aligned and hold BUFFERS entries; `bufs` lives in
        // the server with the ring and is dropped after it, so the memory stays valid while
        // registered.
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(bufs.ring.ptr() as u64, BUFFERS, GROUP, 0)
        }
        .map_err(|e| format!("IORING_REGISTER_PBUF_RING: {e}"))?;
        let mut s = Server {
            ring,
            bufs,
            conns: Vec::new(),
            listener,
            free: Vec::new(),
            to_send: Vec::new(),
            journal,
        };
        s.push(&s.accept()).map_err(|e| format!("io_uring: {e}"))?;
        Ok(s)
    }

    /// The loop of the module doc.
    fn run(&mut self, stop: &AtomicBool) -> anyhow::Result<()> {
        let mut completions: Vec<(u64, i32, u32)> = Vec::with_capacity(4096);
        loop {
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(anyhow!("floor: submit_and_wait: {e}")),
            }
            if stop.load(Ordering::Acquire) {
                return Ok(());
            }
            completions.clear();
            completions.extend(
                self.ring
                    .completion()
                    .map(|c| (c.user_data(), c.result(), c.flags())),
            );
            for &(user_data, res, flags) in &completions {
                let slot = (user_data >> 8) as usize;
                match user_data & 0xff {
                    ACCEPT => self.accepted(res, flags)?,
                    RECV => self.received(slot, res, flags)?,
                    SEND => self.sent(slot, res)?,
                    WRITE => self.written(user_data >> 8, res)?,
                    other => return Err(anyhow!("floor: a completion of operation {other}")),
                }
            }
            self.bufs.publish();
            if let Some(j) = self.journal.as_mut() {
                j.seal(|e| push(&mut self.ring, e))?;
            }
            self.send_pending()?;
        }
    }

    /// The write of journal frame `seq` completed: the replies of the frames now durable go
    /// to their connections.
    fn written(&mut self, seq: u64, res: i32) -> anyhow::Result<()> {
        let journal = self
            .journal
            .as_mut()
            .expect("a journal write on a floor with a journal");
        journal.written(seq, res)?;
        let (conns, to_send) = (&mut self.conns, &mut self.to_send);
        journal.release(|slot, reply| {
            let c = conns[slot].as_mut().expect("a connection awaiting replies");
            c.awaiting -= 1;
            if !c.dead {
                c.pending.extend_from_slice(reply);
            }
            if !c.queued {
                c.queued = true;
                to_send.push(slot);
            }
        });
        Ok(())
    }

    fn push(&mut self, e: &squeue::Entry) -> std::io::Result<()> {
        push(&mut self.ring, e)
    }

    fn accept(&self) -> squeue::Entry {
        opcode::AcceptMulti::new(Fd(self.listener.as_raw_fd()))
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(ACCEPT)
    }

    fn recv(&self, slot: usize) -> squeue::Entry {
        let c = self.conns[slot].as_ref().expect("a live connection");
        opcode::RecvMulti::new(Fd(c.socket.as_raw_fd()), GROUP)
            .build()
            .user_data((slot as u64) << 8 | RECV)
    }

    /// A SEND of what `sending` holds past `sent`.
    fn send(&self, slot: usize) -> squeue::Entry {
        let c = self.conns[slot].as_ref().expect("a live connection");
        let rest = &c.sending[c.sent..];
        opcode::Send::new(Fd(c.socket.as_raw_fd()), rest.as_ptr(), rest.len() as u32)
            .build()
            .user_data((slot as u64) << 8 | SEND)
    }

    fn accepted(&mut self, res: i32, flags: u32) -> anyhow::Result<()> {
        if res >= 0 {
            // SAFETY: the kernel just created this descriptor for us; nothing else owns it.
            let socket = TcpStream::from(unsafe { OwnedFd::from_raw_fd(res) });
            let _ = socket.set_nodelay(true);
            let slot = self.free.pop().unwrap_or_else(|| {
                self.conns.push(None);
                self.conns.len() - 1
            });
            self.conns[slot].insert(Conn::new(socket)).recv_armed = true;
            self.push(&self.recv(slot))?;
        }
        if !cqueue::more(flags) {
            self.push(&self.accept())?;
        }
        Ok(())
    }

    fn received(&mut self, slot: usize, res: i32, flags: u32) -> anyhow::Result<()> {
        let c = self.conns[slot]
            .as_mut()
            .expect("a RECV of a live connection");
        if let Some(bid) = cqueue::buffer_select(flags) {
            if res > 0 && !c.dead {
                if let Err(why) = c.receive(
                    self.bufs.buffer(bid, res as usize),
                    self.journal.as_mut(),
                    slot,
                ) {
                    eprintln!("floor: {why}: closing the connection");
                    c.dead = true;
                    // Ends the multishot RECV (it completes with 0).
                    let _ = c.socket.shutdown(std::net::Shutdown::Both);
                }
            }
            self.bufs.put(bid);
        }
        if !c.pending.is_empty() && !c.queued {
            c.queued = true;
            self.to_send.push(slot);
        }
        if !cqueue::more(flags) {
            // The kernel ended the RECV: out of buffers, or data still coming — arm it
            // again; else the connection closed.
            if !c.dead && (res > 0 || res == -libc::ENOBUFS) {
                self.push(&self.recv(slot))?;
            } else {
                c.recv_armed = false;
                c.dead = true;
                self.release_if_done(slot);
            }
        }
        Ok(())
    }

    fn sent(&mut self, slot: usize, res: i32) -> anyhow::Result<()> {
        let c = self.conns[slot]
            .as_mut()
            .expect("a SEND of a live connection");
        c.send_in_flight = false;
        if res < 0 {
            c.dead = true;
        } else {
            c.sent += res as usize;
            if c.sent < c.sending.len() && !c.dead {
                c.send_in_flight = true;
                self.push(&self.send(slot))?;
                return Ok(());
            }
            c.sending.clear();
            c.sent = 0;
            if !c.pending.is_empty() && !c.queued {
                c.queued = true;
                self.to_send.push(slot);
            }
        }
        self.release_if_done(slot);
        Ok(())
    }

    /// One SEND per connection with replies pending and none in flight.
    fn send_pending(&mut self) -> anyhow::Result<()> {
        for i in 0..self.to_send.len() {
            let slot = self.to_send[i];
            let Some(c) = self.conns[slot].as_mut() else {
                continue;
            };
            c.queued = false;
            if c.dead {
                self.release_if_done(slot);
                continue;
            }
            if c.send_in_flight || c.pending.is_empty() {
                continue;
            }
            std::mem::swap(&mut c.pending, &mut c.sending);
            c.sent = 0;
            c.send_in_flight = true;
            self.push(&self.send(slot))?;
        }
        self.to_send.clear();
        Ok(())
    }

    /// Frees a dead connection's slot (and closes its socket) once nothing is in flight.
    fn release_if_done(&mut self, slot: usize) {
        if self.conns[slot]
            .as_ref()
            .is_some_and(|c| c.dead && !c.recv_armed && !c.send_in_flight && c.awaiting == 0)
        {
            self.conns[slot] = None;
            self.free.push(slot);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Nothing may be in flight when the sockets and buffers go. Journal writes are waited
        // for (a write cannot be called back), the rest is cancelled and waited for.
        while self.journal.as_ref().is_some_and(|j| j.writing() > 0) {
            if self.ring.submit_and_wait(1).is_err() {
                break;
            }
            let done: Vec<(u64, i32)> = self
                .ring
                .completion()
                .map(|c| (c.user_data(), c.result()))
                .collect();
            for (user_data, _) in done {
                if let (WRITE, Some(j)) = (user_data & 0xff, self.journal.as_mut()) {
                    j.submitted_frame(user_data >> 8).done = true;
                }
            }
        }
        let _ = self.ring.submit();
        match self
            .ring
            .submitter()
            .register_sync_cancel(None, CancelBuilder::any())
        {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => eprintln!("floor: cancelling at the end: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    use crate::codecs::{Codec, Decoded, EvringCodec, Op, RespCodec};

    /// Sends `n` PINGs through `codec` in pieces of `piece` bytes, all before reading, and
    /// checks that `n` replies come back complete and in order.
    fn ping_through(addr: &str, codec: impl Codec, n: usize, piece: usize) {
        let versions = send_through(addr, codec, n, piece, |_| Op::Ping);
        assert!(versions.iter().all(Option::is_none));
    }

    /// Sends `n` requests `op(i)` through `codec` in pieces of `piece` bytes, all before
    /// reading; checks that `n` replies come back complete, without error and in order, and
    /// returns the versions they carry.
    fn send_through(
        addr: &str,
        mut codec: impl Codec,
        n: usize,
        piece: usize,
        op: impl Fn(usize) -> Op,
    ) -> Vec<Option<u64>> {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let mut out = Vec::new();
        let mut waiting = usize::from(codec.handshake(&mut out));
        let keys: Vec<u64> = (0..n)
            .map(|i| codec.encode(&mut out, &op(i), PAYLOAD))
            .collect();
        waiting += n;
        for chunk in out.chunks(piece) {
            s.write_all(chunk).unwrap();
            s.flush().unwrap();
        }
        let (mut inbuf, mut chunk, mut done) = (Vec::new(), [0u8; 4096], Vec::new());
        let mut versions = Vec::new();
        while waiting > 0 {
            let k = s.read(&mut chunk).unwrap();
            assert!(k > 0, "the floor closed the connection");
            inbuf.extend_from_slice(&chunk[..k]);
            let mut at = 0;
            while let Some((used, d)) = codec.decode(&inbuf[at..]).unwrap() {
                at += used;
                match d {
                    Decoded::Ready => waiting -= 1,
                    Decoded::Done {
                        key,
                        error,
                        first_version,
                    } => {
                        assert!(error.is_none(), "{error:?}");
                        done.push(key);
                        versions.push(first_version);
                        waiting -= 1;
                    }
                    Decoded::Nothing => {}
                }
            }
            inbuf.drain(..at);
        }
        assert_eq!(done, keys);
        versions
    }

    const PAYLOAD: usize = 100;

    fn append(i: usize) -> Op {
        Op::Append {
            stream: i % 7,
            events: 1,
            expected: None,
            conn: 3,
            seq: i as u64,
        }
    }

    #[test]
    fn the_durable_floor_answers_appends_in_order_and_writes_their_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("journal");
        let floor = Floor::start(Some(&file)).unwrap();
        for piece in [1, 7, 150, 100_000] {
            send_through(floor.addr(), RespCodec::default(), 300, piece, append);
            let versions = send_through(floor.addr(), EvringCodec::default(), 300, piece, append);
            // Each APPEND gets the next number: in order, one apart.
            let versions: Vec<u64> = versions.into_iter().map(Option::unwrap).collect();
            assert!(
                versions.windows(2).all(|w| w[1] == w[0] + 1),
                "{versions:?}"
            );
        }
        // Many connections at once.
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let addr = floor.addr().to_string();
                std::thread::spawn(move || {
                    send_through(&addr, RespCodec::default(), 2000, 4096, append)
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // The first XADD's bytes are the file's first bytes: written where replied.
        let mut first = Vec::new();
        RespCodec::default().encode(&mut first, &append(0), PAYLOAD);
        let mut head = vec![0; first.len()];
        std::fs::File::open(&file)
            .unwrap()
            .read_exact(&mut head)
            .unwrap();
        assert_eq!(head, first);
        drop(floor);
    }

    /// Appends that outgrow the open frame while [`DEPTH`] writes are in flight wait in
    /// sealed frames, are written in order as writes complete, and are answered in order.
    #[test]
    fn a_full_frame_waits_for_a_write_and_replies_stay_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(&dir.path().join("journal")).unwrap();
        let request = vec![7u8; 100 * 1024];
        // The sequence numbers of the writes submitted, in order.
        let mut writes: Vec<u64> = Vec::new();
        let collect = |writes: &mut Vec<u64>, j: &mut Journal| {
            j.seal(|e| {
                writes.push(e.get_user_data() >> 8);
                Ok(())
            })
            .unwrap();
        };
        // One small append: sealed and written at once.
        j.append(b"x", 1, |r, n| r.extend_from_slice(&n.to_le_bytes()))
            .unwrap();
        collect(&mut writes, &mut j);
        assert_eq!(writes.len(), 1);
        // 60 appends of 100 KiB: 6 MiB, more than DEPTH frames of 1 MiB.
        for _ in 0..60 {
            j.append(&request, 2, |r, n| r.extend_from_slice(&n.to_le_bytes()))
                .unwrap();
            collect(&mut writes, &mut j);
        }
        assert_eq!(writes.len(), DEPTH, "at most DEPTH writes in flight");
        assert_eq!(j.writing(), DEPTH);
        let mut replies = Vec::new();
        let mut done = 0;
        while done < writes.len() {
            let seq = writes[done];
            let len = j.submitted_frame(seq).len;
            j.written(seq, len as i32).unwrap();
            j.release(|slot, r| replies.push((slot, u64::from_le_bytes(r.try_into().unwrap()))));
            done += 1;
            collect(&mut writes, &mut j);
            assert!(j.writing() <= DEPTH);
        }
        let numbers: Vec<u64> = replies.iter().map(|&(_, n)| n).collect();
        assert_eq!(numbers, (1..=61).collect::<Vec<u64>>());
        assert_eq!(replies[0].0, 1);
        assert!(replies[1..].iter().all(|&(slot, _)| slot == 2));
        assert_eq!(writes, (0..writes.len() as u64).collect::<Vec<u64>>());
        assert_eq!(j.frames.len(), 1, "only the open frame is left");
    }

    /// Sends `bytes` on a new connection and reads until the floor closes it.
    fn send_until_closed(addr: &str, bytes: &[u8]) -> Vec<u8> {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        s.write_all(bytes).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        got
    }

    #[test]
    fn a_floor_without_a_journal_refuses_appends() {
        let floor = Floor::start(None).unwrap();
        let mut out = Vec::new();
        RespCodec::default().encode(&mut out, &append(0), PAYLOAD);
        let got = send_until_closed(floor.addr(), &out);
        assert!(got.is_empty(), "{got:?}");
    }

    #[test]
    fn the_floor_answers_resp_and_native_pings_whole_or_cut_anywhere() {
        let floor = Floor::start(None).unwrap();
        for piece in [1, 5, 14, 1000, 100_000] {
            ping_through(floor.addr(), RespCodec::default(), 500, piece);
            ping_through(floor.addr(), EvringCodec::default(), 500, piece);
        }
        // Many connections at once, each with more replies than one buffer holds.
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let addr = floor.addr().to_string();
                std::thread::spawn(move || ping_through(&addr, RespCodec::default(), 2000, 4096))
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }

    #[test]
    fn anything_but_ping_closes_the_connection() {
        let floor = Floor::start(None).unwrap();
        // Closed (replies not yet sent are dropped with it).
        let got = send_until_closed(
            floor.addr(),
            b"*1\r\n$4\r\nPING\r\n*2\r\n$4\r\nECHO\r\n$1\r\nx\r\n",
        );
        assert!(b"+PONG\r\n".starts_with(&got), "{got:?}");
        // The floor still serves other connections.
        ping_through(floor.addr(), RespCodec::default(), 3, 100);
    }
}
