//! The outbound side of a client connection: encoded frames queued by request tasks and
//! subscriptions ([`ConnOut`]), the limit past which the reader stops reading, and the
//! writer task that sends them a buffer at a time.
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use std::net::TcpStream;
use std::os::fd::AsRawFd;

use crate::net::NetRing;

use crate::protocol::{self, encode_response, RecordedEvent, Response};

/// The writer task of a connection: sends what the connection queued, a buffer at a time,
/// through the shard's network ring, until it is closed and drained; then shuts the write
/// side. The replies queued while one buffer is being sent go out together in the next.
pub(super) async fn write_loop(out: Rc<ConnOut>, ring: Rc<NetRing>, sock: Rc<TcpStream>) {
    let mut pending = Vec::new();
    loop {
        std::future::poll_fn(|cx| {
            if !out.buf.borrow().is_empty() || out.closed.get() {
                std::task::Poll::Ready(())
            } else {
                *out.waker.borrow_mut() = Some(cx.waker().clone());
                std::task::Poll::Pending
            }
        })
        .await;
        std::mem::swap(&mut pending, &mut *out.buf.borrow_mut());
        out.wake_reader();
        if pending.is_empty() {
            break; // closed and drained
        }
        match send_all(&ring, &sock, pending).await {
            Ok(mut sent) => {
                sent.clear();
                pending = sent;
            }
            Err(_) => {
                out.closed.set(true);
                out.wake_reader();
                break;
            }
        }
    }
    let _ = sock.shutdown(std::net::Shutdown::Write);
}

/// Sends all of `bytes` on `sock` through `ring`; gives the buffer back for reuse.
pub(super) async fn send_all(
    ring: &Rc<NetRing>,
    sock: &TcpStream,
    mut bytes: Vec<u8>,
) -> std::io::Result<Vec<u8>> {
    let mut from = 0;
    while from < bytes.len() {
        let (back, sent) = ring.send(sock.as_raw_fd(), bytes, from).await;
        bytes = back;
        match sent? {
            0 => return Err(std::io::ErrorKind::WriteZero.into()),
            n => from += n,
        }
    }
    Ok(bytes)
}

/// Outbound side of one connection: encoded frames waiting for the writer task.
pub(super) struct ConnOut {
    pub(super) buf: RefCell<Vec<u8>>,
    /// The writer task, waiting for bytes to send.
    pub(super) waker: RefCell<Option<std::task::Waker>>,
    /// The reader, waiting for the buffer to drop to `limit` (see `wait_for_room`).
    pub(super) room_waker: RefCell<Option<std::task::Waker>>,
    /// Subscription catch-ups, waiting for room for their next chunk (see `wait_for_room_for`).
    pub(super) catch_up_wakers: RefCell<Vec<std::task::Waker>>,
    pub(super) closed: Cell<bool>,
    pub(super) limit: usize,
    /// Subscriptions of this connection: id → type prefix filter is applied at the source.
    pub(super) subs: RefCell<HashMap<u64, Vec<u32>>>,
    /// Set at a server stop: the reader stops reading requests.
    pub(super) stopping: Cell<bool>,
    /// The protocol version the client's HELLO asked for (pushes name their streams from 2).
    pub(super) version: Cell<u16>,
    /// The reader, waiting between frames (see `stopped`).
    pub(super) stop_waker: RefCell<Option<std::task::Waker>>,
}

impl ConnOut {
    pub(super) fn new(limit: usize) -> ConnOut {
        ConnOut {
            buf: RefCell::new(Vec::with_capacity(4096)),
            waker: RefCell::new(None),
            room_waker: RefCell::new(None),
            catch_up_wakers: RefCell::new(Vec::new()),
            closed: Cell::new(false),
            limit,
            subs: RefCell::new(HashMap::new()),
            stopping: Cell::new(false),
            version: Cell::new(crate::protocol::PROTOCOL_VERSION),
            stop_waker: RefCell::new(None),
        }
    }

    /// Queues encoded reply bytes for the writer task.
    pub(super) fn send_bytes(&self, bytes: &[u8]) {
        if self.closed.get() || bytes.is_empty() {
            return;
        }
        self.buf.borrow_mut().extend_from_slice(bytes);
        self.wake_writer();
    }

    pub(super) fn wake_writer(&self) {
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// Resolves once the outbound buffer holds at most `limit` bytes (or the connection is
    /// closed). The writer task wakes it each time it takes the buffer.
    pub(super) async fn wait_for_room(&self) {
        std::future::poll_fn(|cx| {
            if self.closed.get() || self.buf.borrow().len() <= self.limit {
                std::task::Poll::Ready(())
            } else {
                *self.room_waker.borrow_mut() = Some(cx.waker().clone());
                std::task::Poll::Pending
            }
        })
        .await
    }

    /// Resolves once `bytes` more fit in the outbound buffer without taking it past `limit`,
    /// or it is empty, or the connection is closed, or the server is stopping. A catch-up
    /// waits here before it offers a chunk: the subscriber reads history at its own pace,
    /// where a live push to a full buffer drops the subscription (the subscriber is too
    /// slow). At a stop it waits no more: the stop ended the subscription (error 31), and
    /// the catch-up ends with it.
    pub(super) async fn wait_for_room_for(&self, bytes: usize) {
        self.wait_with_catch_ups(|| {
            let held = self.buf.borrow().len();
            self.closed.get() || self.stopping.get() || held == 0 || held + bytes <= self.limit
        })
        .await
    }

    /// Resolves once `ready` holds, checked whenever the catch-ups' wakers are woken (a
    /// stop, the writer taking the buffer, the connection closing).
    async fn wait_with_catch_ups(&self, ready: impl Fn() -> bool) {
        std::future::poll_fn(|cx| {
            if ready() {
                return std::task::Poll::Ready(());
            }
            let mut wakers = self.catch_up_wakers.borrow_mut();
            if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
                wakers.push(cx.waker().clone());
            }
            std::task::Poll::Pending
        })
        .await
    }

    /// Resolves once the connection is closed or `stop` was called (a request that waits
    /// for something else than its connection ends with it: a blocked XREAD). Its waker
    /// shares the catch-ups' list, woken at a stop and whenever the writer takes the buffer,
    /// which it does once more when the connection closes.
    pub(super) async fn ended(&self) {
        self.wait_with_catch_ups(|| self.closed.get() || self.stopping.get())
            .await
    }

    /// Resolves once `stop` was called.
    pub(super) async fn stopped(&self) {
        std::future::poll_fn(|cx| {
            if self.stopping.get() {
                std::task::Poll::Ready(())
            } else {
                *self.stop_waker.borrow_mut() = Some(cx.waker().clone());
                std::task::Poll::Pending
            }
        })
        .await
    }

    /// A server stop: the reader reads no more requests.
    pub(super) fn stop(&self) {
        self.stopping.set(true);
        if let Some(w) = self.stop_waker.borrow_mut().take() {
            w.wake();
        }
        for w in self.catch_up_wakers.take() {
            w.wake();
        }
    }

    pub(super) fn wake_reader(&self) {
        if let Some(w) = self.room_waker.borrow_mut().take() {
            w.wake();
        }
        for w in self.catch_up_wakers.take() {
            w.wake();
        }
    }

    pub(super) fn send(&self, request_id: u64, resp: &Response) {
        if self.closed.get() {
            return;
        }
        encode_response(&mut self.buf.borrow_mut(), request_id, 0, resp);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// Queues pushed events unless the buffer is over its limit; false means too slow.
    pub(super) fn push(&self, sub: u64, events: &[RecordedEvent]) -> bool {
        if self.closed.get() || !self.subs.borrow().contains_key(&sub) {
            return false;
        }
        if self.buf.borrow().len() > self.limit {
            return false;
        }
        let named = self.version.get() >= 2;
        protocol::encode_pushed(&mut self.buf.borrow_mut(), sub, events, named);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
        true
    }
}
