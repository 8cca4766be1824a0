//! The `floor` targets of `evring-bench compare`: a minimal io_uring server of our own that
//! answers PING and does nothing else — the ceiling for a PING workload on this machine, to
//! hold evringd's network path (and Redis's) against.
//!
//! It runs in the bench's process, on one thread pinned to CPU 0 (where evringd's only shard
//! runs by default, `pin_cpus = true`), listening on an ephemeral loopback port. It speaks
//! two protocols, chosen per connection by its first byte:
//! - RESP (first byte `*`): every `*1\r\n$4\r\nPING\r\n` is answered `+PONG\r\n`;
//! - evring's frames (anything else): HELLO is answered HELLO_OK (the version asked for, no
//!   partition addresses) and PING is answered PONG, both through `evring::protocol`'s
//!   encoder, so the reply is what evringd would send.
//!
//! Anything else closes the connection: the floor serves no appends.
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
//! No allocation per request: the buffers are allocated once, and a connection's two reply
//! buffers keep their capacity (a HELLO's reply allocates its version string, once per
//! connection). The ring is set up with `IORING_SETUP_SINGLE_ISSUER |
//! IORING_SETUP_DEFER_TASKRUN` (completion work runs only when the loop asks for it), or as
//! a plain ring if the kernel refuses. Dropping [`Floor`] stops the thread: a flag, then a
//! connection to wake its ACCEPT; the thread cancels what is in flight and closes everything.

use std::io::ErrorKind;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use anyhow::{anyhow, Context};
use io_uring::types::{BufRingEntry, CancelBuilder, Fd};
use io_uring::{cqueue, opcode, squeue, IoUring};

use evring::protocol::{encode_response, opcode as op, FrameHeader, Response, FRAME_HEADER_BYTES};

use crate::codecs::RESP_PING;
use crate::disk::Aligned;

/// Submission queue entries (the completion queue has twice as many).
const RING_ENTRIES: u32 = 1024;
/// Provided buffers (a power of two, as the kernel requires) and their size.
const BUFFERS: u16 = 256;
const BUFFER_BYTES: usize = 2048;
/// The provided-buffer group RECV selects from.
const GROUP: u16 = 0;
/// The longest request the floor keeps across two receives (a HELLO with a long client
/// name is the longest it serves).
const CARRY_BYTES: usize = 128;

/// `user_data`: the operation in the low byte, the connection's slot above.
const ACCEPT: u64 = 0;
const RECV: u64 = 1;
const SEND: u64 = 2;

/// A running floor server; dropping it stops it.
pub struct Floor {
    addr: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Floor {
    /// Starts the server thread; returns once its ring is set up and it listens.
    pub fn start() -> anyhow::Result<Floor> {
        let listener = TcpListener::bind("127.0.0.1:0").context("floor: bind")?;
        let addr = listener.local_addr()?.to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread_stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name("evring-floor".into())
            .spawn(move || serve(listener, &thread_stop, &ready_tx))?;
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
        }
    }

    /// Answers the complete requests in what was carried plus `data` into `pending`, and
    /// carries what is left of an incomplete one.
    fn receive(&mut self, mut data: &[u8]) -> Result<(), &'static str> {
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
            let used = answer(proto, &self.carry[..had + take], &mut self.pending)?;
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
        let used = answer(proto, data, &mut self.pending)?;
        let rest = &data[used..];
        if rest.len() > CARRY_BYTES {
            return Err("a request longer than the floor serves");
        }
        self.carry[..rest.len()].copy_from_slice(rest);
        self.carry_len = rest.len();
        Ok(())
    }
}

/// Answers every complete request at the front of `input` into `out`; returns the bytes
/// they took (what follows is the start of an incomplete request), or why a request is not
/// served.
fn answer(proto: Proto, input: &[u8], out: &mut Vec<u8>) -> Result<usize, &'static str> {
    let mut at = 0;
    match proto {
        Proto::Resp => loop {
            let rest = &input[at..];
            if rest.starts_with(RESP_PING) {
                out.extend_from_slice(b"+PONG\r\n");
                at += RESP_PING.len();
            } else if RESP_PING.starts_with(rest) {
                return Ok(at);
            } else {
                return Err("a RESP command other than PING");
            }
        },
        Proto::Native => {
            while let Some(head) = input.get(at..at + FRAME_HEADER_BYTES) {
                let head: &[u8; FRAME_HEADER_BYTES] = head.try_into().expect("16 bytes");
                let h = FrameHeader::parse(head).map_err(|_| "a malformed frame")?;
                let len = FRAME_HEADER_BYTES + h.body_len();
                if len > CARRY_BYTES {
                    return Err("a frame larger than a HELLO or PING");
                }
                let Some(body) = input.get(at + FRAME_HEADER_BYTES..at + len) else {
                    break;
                };
                match h.opcode {
                    op::PING => encode_response(out, h.request_id, 0, &Response::Pong),
                    op::HELLO => {
                        let version = body.get(..2).ok_or("a HELLO without a version")?;
                        let hello = Response::Hello {
                            protocol_version: u16::from_le_bytes([version[0], version[1]]),
                            server_version: "evring-bench floor".into(),
                            partition_addresses: Vec::new(),
                        };
                        encode_response(out, h.request_id, 0, &hello);
                    }
                    _ => return Err("a request other than HELLO or PING"),
                }
                at += len;
            }
            Ok(at)
        }
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
    stop: &AtomicBool,
    ready: &mpsc::Sender<Result<(), String>>,
) -> anyhow::Result<()> {
    pin_to_cpu0();
    let mut server = match Server::new(listener) {
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
}

impl Server {
    fn new(listener: TcpListener) -> Result<Server, String> {
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
                    other => return Err(anyhow!("floor: a completion of operation {other}")),
                }
            }
            self.bufs.publish();
            self.send_pending()?;
        }
    }

    /// Queues `e` (submitting first if the queue is full).
    fn push(&mut self, e: &squeue::Entry) -> std::io::Result<()> {
        loop {
            // SAFETY: what every entry points to stays valid and untouched until its
            // completion: the listener and sockets live in the server until then, RECV writes
            // only provided buffers the kernel owns, and a SEND's `sending` is neither
            // changed nor freed while `send_in_flight`. `Drop` cancels whatever is in flight
            // before any of it goes.
            if unsafe { self.ring.submission().push(e) }.is_ok() {
                return Ok(());
            }
            self.ring.submit()?;
        }
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
                if let Err(why) = c.receive(self.bufs.buffer(bid, res as usize)) {
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
            if c.dead || c.send_in_flight || c.pending.is_empty() {
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
            .is_some_and(|c| c.dead && !c.recv_armed && !c.send_in_flight)
        {
            self.conns[slot] = None;
            self.free.push(slot);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Nothing may be in flight when the sockets and buffers go: cancel it all, and wait.
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
    fn ping_through(addr: &str, mut codec: impl Codec, n: usize, piece: usize) {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let mut out = Vec::new();
        let mut waiting = usize::from(codec.handshake(&mut out));
        let keys: Vec<u64> = (0..n)
            .map(|_| codec.encode(&mut out, &Op::Ping, 0))
            .collect();
        waiting += n;
        for chunk in out.chunks(piece) {
            s.write_all(chunk).unwrap();
            s.flush().unwrap();
        }
        let (mut inbuf, mut chunk, mut done) = (Vec::new(), [0u8; 4096], Vec::new());
        while waiting > 0 {
            let k = s.read(&mut chunk).unwrap();
            assert!(k > 0, "the floor closed the connection");
            inbuf.extend_from_slice(&chunk[..k]);
            let mut at = 0;
            while let Some((used, d)) = codec.decode(&inbuf[at..]).unwrap() {
                at += used;
                match d {
                    Decoded::Ready => waiting -= 1,
                    Decoded::Done { key, error, .. } => {
                        assert!(error.is_none());
                        done.push(key);
                        waiting -= 1;
                    }
                    Decoded::Nothing => {}
                }
            }
            inbuf.drain(..at);
        }
        assert_eq!(done, keys);
    }

    #[test]
    fn the_floor_answers_resp_and_native_pings_whole_or_cut_anywhere() {
        let floor = Floor::start().unwrap();
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
        let floor = Floor::start().unwrap();
        let mut s = TcpStream::connect(floor.addr()).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        s.write_all(b"*1\r\n$4\r\nPING\r\n*2\r\n$4\r\nECHO\r\n$1\r\nx\r\n")
            .unwrap();
        // Closed (replies not yet sent are dropped with it).
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        assert!(b"+PONG\r\n".starts_with(&got), "{got:?}");
        // The floor still serves other connections.
        ping_through(floor.addr(), RespCodec::default(), 3, 100);
    }
}
