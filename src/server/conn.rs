//! Client connections: accepting them, their outbound buffer and writer task, and the
//! connection loop.
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};

use super::native::{next_frame, token_matches, FrameReadError};
use super::route::{PartOp, Shard};
use crate::constants::HELLO_FRAME_BYTES_MAX;
use crate::protocol::{
    self, code, encode_response, RecordedEvent, Request, Response, PROTOCOL_VERSION,
    PROTOCOL_VERSION_MIN,
};

/// Outbound side of one connection: encoded frames waiting for the writer task.
pub(super) struct ConnOut {
    pub(super) buf: RefCell<Vec<u8>>,
    /// The writer task, waiting for bytes to send.
    pub(super) waker: RefCell<Option<std::task::Waker>>,
    /// The reader, waiting for the buffer to drop to `limit` (see `wait_for_room`).
    pub(super) room_waker: RefCell<Option<std::task::Waker>>,
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
    }

    pub(super) fn wake_reader(&self) {
        if let Some(w) = self.room_waker.borrow_mut().take() {
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

impl Shard {
    /// At a server stop, after the journals closed: ends every subscription of this shard's
    /// connections with error 31 and stops each connection's reader, so the connection
    /// answers what it read (error 31 since the stop began), sends what is queued and
    /// closes. Waits for that, two seconds at most.
    pub async fn shut_down_connections(&self) {
        let conns: Vec<Rc<ConnOut>> = self.conns.borrow().values().cloned().collect();
        for out in conns {
            let subs: Vec<u64> = out.subs.borrow_mut().drain().map(|(id, _)| id).collect();
            for sub in subs {
                out.send(
                    sub,
                    &Response::error(
                        code::SHUTTING_DOWN,
                        "subscription ended: the server is shutting down; resubscribe from the \
                         last position received once it is back",
                    ),
                );
            }
            out.stop();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while !self.conns.borrow().is_empty() && std::time::Instant::now() < deadline {
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Accepts connections until the listener fails.
    pub async fn accept_loop(self: Rc<Self>, listener: TcpListener) {
        loop {
            match listener.accept().await {
                Ok(stream) => {
                    let shard = self.clone();
                    glommio::spawn_local(async move { shard.serve(stream).await }).detach();
                }
                Err(e) => {
                    if self.shared.stop.load(Ordering::Acquire) {
                        return;
                    }
                    metrics::counter!(crate::metrics::ACCEPT_FAILURES).increment(1);
                    if let Some(repeats) = self.accept_failures.occurred(std::time::Instant::now())
                    {
                        tracing::warn!(
                            error = %e,
                            repeats_since_last_logged = repeats,
                            "accepting a client connection failed (logged at most every {} s); \
                             \"Too many open files\" means the open-file limit is too low for \
                             the load: raise it (LimitNOFILE= in the unit, ulimit -n) or lower \
                             max_connections",
                            crate::log_limit::REPEAT_PERIOD.as_secs()
                        );
                    }
                    glommio::timer::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }

    pub(super) async fn serve(self: Rc<Self>, stream: TcpStream) {
        let cfg = &self.shared.config;
        let count = self.shared.connections.fetch_add(1, Ordering::AcqRel) + 1;
        metrics::gauge!(crate::metrics::CONNECTIONS).set(count as f64);
        let peer = stream.peer_addr().ok();
        // The address this client reached us at: HELLO advertises shard ports on it when
        // the listener is bound to a wildcard address.
        let local_ip = stream.local_addr().ok().map(|a| a.ip());
        let _ = stream.set_nodelay(true);
        let (rd, mut wr) = futures_lite::io::split(stream);
        // Pipelined requests arrive many to a segment: one recv fills the buffer with
        // several frames instead of two reads per frame.
        let mut rd = futures_lite::io::BufReader::with_capacity(64 * 1024, rd);
        if count > cfg.max_connections as usize {
            self.shared.connections.fetch_sub(1, Ordering::AcqRel);
            let mut frame = Vec::new();
            encode_response(
                &mut frame,
                0,
                0,
                &Response::error(
                    code::OVERLOADED,
                    format!(
                        "too many connections (max_connections = {})",
                        cfg.max_connections
                    ),
                ),
            );
            let _ = wr.write_all(&frame).await;
            let _ = wr.close().await;
            return;
        }
        let conn_id = self.next_conn.get();
        self.next_conn.set(conn_id + 1);
        let out = Rc::new(ConnOut {
            buf: RefCell::new(Vec::with_capacity(4096)),
            waker: RefCell::new(None),
            room_waker: RefCell::new(None),
            closed: Cell::new(false),
            limit: cfg.connection_buffer_bytes as usize,
            subs: RefCell::new(HashMap::new()),
            stopping: Cell::new(false),
            version: Cell::new(PROTOCOL_VERSION),
            stop_waker: RefCell::new(None),
        });
        self.conns.borrow_mut().insert(conn_id, out.clone());
        let writer = {
            let out = out.clone();
            glommio::spawn_local(async move {
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
                    if wr.write_all(&pending).await.is_err() || wr.flush().await.is_err() {
                        out.closed.set(true);
                        out.wake_reader();
                        break;
                    }
                    pending.clear();
                }
                let _ = wr.close().await;
            })
        };
        let permits = Rc::new(glommio::sync::Semaphore::new(u64::from(
            cfg.max_in_flight_per_connection,
        )));
        let mut hello_done = false;
        let frame_timeout = Duration::from_millis(u64::from(cfg.frame_timeout_ms));
        let heavy_slots =
            (u64::from(cfg.connection_buffer_bytes) / u64::from(cfg.max_read_bytes)).max(1);
        let heavy = Rc::new(glommio::sync::Semaphore::new(heavy_slots));
        let hello_deadline =
            std::time::Instant::now() + Duration::from_millis(u64::from(cfg.hello_timeout_ms));
        let reason = loop {
            // A client that does not read its replies is not read either: the outbound
            // buffer stays near `connection_buffer_bytes` instead of growing without bound.
            out.wait_for_room().await;
            // Between frames a connection may idle as long as it likes (until a server stop).
            if out.stopping.get() {
                break "the server is stopping".to_string();
            }
            let result = if hello_done {
                next_frame(&mut rd, cfg.max_frame_bytes, frame_timeout, cfg, &out).await
            } else {
                // Until HELLO is accepted: a frame no larger than the largest HELLO, and the
                // whole of it by `hello_timeout_ms` after the accept.
                let left = hello_deadline.saturating_duration_since(std::time::Instant::now());
                let max = cfg.max_frame_bytes.min(HELLO_FRAME_BYTES_MAX);
                let next = next_frame(&mut rd, max, frame_timeout, cfg, &out);
                match glommio::timer::timeout(left, async { Ok(next.await) }).await {
                    Ok(r) => r,
                    Err(_) => Err(FrameReadError::Reply(
                        0,
                        code::NOT_AUTHENTICATED,
                        format!(
                            "no HELLO within {} ms of connecting (hello_timeout_ms); the first \
                             request on a connection must be HELLO",
                            cfg.hello_timeout_ms
                        ),
                    )),
                }
            };
            let (header, request) = match result {
                Ok(got) => got,
                Err(FrameReadError::Closed(reason)) => break reason,
                Err(FrameReadError::Reply(request_id, code, msg)) => {
                    out.send(request_id, &Response::error(code, msg.clone()));
                    break msg;
                }
            };
            if !hello_done {
                match request {
                    Request::Hello {
                        protocol_version,
                        auth_token,
                        ..
                    } => {
                        if !(PROTOCOL_VERSION_MIN..=PROTOCOL_VERSION).contains(&protocol_version) {
                            out.send(
                                header.request_id,
                                &Response::error(
                                    code::UNSUPPORTED_VERSION,
                                    format!(
                                        "protocol version {protocol_version} is not supported; \
                                         this server speaks {PROTOCOL_VERSION_MIN} to \
                                         {PROTOCOL_VERSION}"
                                    ),
                                ),
                            );
                            break "unsupported protocol version".into();
                        }
                        out.version.set(protocol_version);
                        if !cfg.auth_token.is_empty()
                            && !token_matches(&auth_token, &cfg.auth_token)
                        {
                            out.send(
                                header.request_id,
                                &Response::error(code::NOT_AUTHENTICATED, "wrong auth token"),
                            );
                            break "wrong auth token".into();
                        }
                        hello_done = true;
                        out.send(
                            header.request_id,
                            &Response::Hello {
                                protocol_version,
                                server_version: env!("CARGO_PKG_VERSION").into(),
                                partition_addresses: self.partition_addresses(local_ip),
                            },
                        );
                        continue;
                    }
                    _ => {
                        out.send(
                            header.request_id,
                            &Response::error(
                                code::NOT_AUTHENTICATED,
                                "the first request on a connection must be HELLO",
                            ),
                        );
                        break "request before HELLO".into();
                    }
                }
            }
            let Ok(permit) = permits.acquire_static_permit(1).await else {
                break "permits closed".into();
            };
            // Requests with large replies also take room from `heavy`, so the replies being
            // built at once add at most about `connection_buffer_bytes` (READ) or one
            // AGGREGATE reply to what waits in the outbound buffer.
            let weight = match request {
                Request::Read { .. } => 1,
                Request::Aggregate { .. } => heavy_slots,
                _ => 0,
            };
            let heavy_permit = if weight > 0 {
                match heavy.acquire_static_permit(weight).await {
                    Ok(p) => Some(p),
                    Err(_) => break "permits closed".into(),
                }
            } else {
                None
            };
            let shard = self.clone();
            let out2 = out.clone();
            glommio::spawn_local(async move {
                shard
                    .handle(&out2, conn_id, header.request_id, request)
                    .await;
                drop(heavy_permit);
                drop(permit);
            })
            .detach();
        };
        tracing::debug!(?peer, %reason, "connection closing");
        if self.shared.stop.load(Ordering::Acquire) {
            // A server stop: the requests this connection read get their replies before the
            // writer sends what is queued and closes.
            let _ = permits
                .acquire_permit(u64::from(cfg.max_in_flight_per_connection))
                .await;
        }
        out.closed.set(true);
        if let Some(w) = out.waker.borrow_mut().take() {
            w.wake();
        }
        writer.await;
        if out.stopping.get() {
            // The replies are sent and the write side shut. Read what the client still sends
            // until it closes (two seconds at most): closing a socket with unread input resets
            // the connection, which can destroy replies the client has not read yet.
            let drain = async {
                let mut sink = [0u8; 4096];
                while let Ok(n) = rd.read(&mut sink).await {
                    if n == 0 {
                        break;
                    }
                }
                Ok(())
            };
            let _ = glommio::timer::timeout(Duration::from_secs(2), drain).await;
        }
        // Drop the connection's subscriptions at their partitions.
        let subs: Vec<(u64, Vec<u32>)> = out.subs.borrow_mut().drain().collect();
        for (sub, parts) in subs {
            for p in parts {
                let _ = self
                    .call(
                        p,
                        PartOp::Unsubscribe {
                            origin: self.id,
                            conn: conn_id,
                            sub,
                        },
                    )
                    .await;
            }
        }
        self.conns.borrow_mut().remove(&conn_id);
        let left = self.shared.connections.fetch_sub(1, Ordering::AcqRel) - 1;
        metrics::gauge!(crate::metrics::CONNECTIONS).set(left as f64);
    }
}
