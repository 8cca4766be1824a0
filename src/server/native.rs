//! The native protocol (docs/PROTOCOL.md): frames read from a connection, HELLO, and each
//! request's handling.
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_lite::io::{AsyncBufReadExt, AsyncReadExt};

use super::conn::ConnOut;
use super::route::{error_response, unexpected, OpResult, PartOp, Shard};
use super::subscriptions::SubscribeRequest;
use crate::config::Config;
use crate::protocol::{
    self, code, decode_request, partition_of, FrameHeader, Request, Response, FRAME_HEADER_BYTES,
};

/// Why a request frame could not be read: the connection ended, or an error to reply before
/// closing it (request id, code, message).
pub(super) enum FrameReadError {
    Closed(String),
    Reply(u64, u16, String),
}

/// Waits for the next request frame and reads it. Between frames a connection may idle as
/// long as it likes; once a frame has begun it must arrive whole within `frame_timeout`
/// (slowloris), a timer armed only when the frame is not already buffered.
pub(super) async fn next_frame<R: futures_lite::AsyncBufRead + futures_lite::AsyncRead + Unpin>(
    rd: &mut R,
    max_frame_bytes: u32,
    frame_timeout: Duration,
    cfg: &Config,
    out: &ConnOut,
) -> Result<(FrameHeader, Request), FrameReadError> {
    // The wait for a frame's first bytes ends when the server stops.
    let filled = futures_lite::future::or(
        async { Some(rd.fill_buf().await.map(|b| b.is_empty())) },
        async {
            out.stopped().await;
            None
        },
    )
    .await;
    match filled {
        None => return Err(FrameReadError::Closed("the server is stopping".into())),
        Some(Ok(true)) => return Err(FrameReadError::Closed("closed by the client".into())),
        Some(Ok(false)) => {}
        Some(Err(e)) => return Err(FrameReadError::Closed(format!("read: {e}"))),
    }
    // The bytes are there: this returns them without reading.
    let buffered = match rd.fill_buf().await {
        Ok(b) => b,
        Err(e) => return Err(FrameReadError::Closed(format!("read: {e}"))),
    };
    let whole = buffered.len() >= 4
        && u32::from_le_bytes(buffered[..4].try_into().expect("4 bytes")) as usize + 4
            <= buffered.len();
    let read = read_frame(rd, max_frame_bytes);
    if whole {
        return read.await;
    }
    match glommio::timer::timeout(frame_timeout, async { Ok(read.await) }).await {
        Ok(r) => r,
        Err(_) => Err(FrameReadError::Reply(
            0,
            code::MALFORMED_FRAME,
            format!(
                "frame not complete after {} ms (frame_timeout_ms)",
                cfg.frame_timeout_ms
            ),
        )),
    }
}

/// Whether the token a client presented is the server's, in time that does not depend on
/// where they differ (a byte-by-byte `!=` stops at the first difference, which lets a
/// client find the token a byte at a time by timing).
pub(super) fn token_matches(given: &str, expected: &str) -> bool {
    let (given, expected) = (given.as_bytes(), expected.as_bytes());
    let mut diff = u8::from(given.len() != expected.len());
    for (i, e) in expected.iter().enumerate() {
        diff |= e ^ given.get(i).copied().unwrap_or(!e);
    }
    std::hint::black_box(diff) == 0
}

/// Reads one request frame (header, body) and decodes it.
pub(super) async fn read_frame<R: futures_lite::AsyncRead + Unpin>(
    rd: &mut R,
    max_frame_bytes: u32,
) -> Result<(FrameHeader, Request), FrameReadError> {
    let mut header = [0u8; FRAME_HEADER_BYTES];
    if let Err(e) = rd.read_exact(&mut header).await {
        return Err(FrameReadError::Closed(format!("read: {e}")));
    }
    let header = FrameHeader::parse(&header)
        .map_err(|e| FrameReadError::Reply(0, e.code(), e.to_string()))?;
    if u64::from(header.length) + 4 > u64::from(max_frame_bytes) {
        return Err(FrameReadError::Reply(
            header.request_id,
            code::FRAME_TOO_LARGE,
            format!(
                "frame of {} bytes exceeds max_frame_bytes = {max_frame_bytes}",
                u64::from(header.length) + 4
            ),
        ));
    }
    let mut body = vec![0u8; header.body_len()];
    if let Err(e) = rd.read_exact(&mut body).await {
        return Err(FrameReadError::Closed(format!("read body: {e}")));
    }
    let request = decode_request(header.opcode, &body)
        .map_err(|e| FrameReadError::Reply(header.request_id, e.code(), e.to_string()))?;
    Ok((header, request))
}

/// `addr` as a client can reach it: a wildcard host (0.0.0.0, ::) becomes `local_ip`, the
/// address the client connected to.
pub(super) fn advertised(mut addr: SocketAddr, local_ip: Option<std::net::IpAddr>) -> String {
    if let Some(ip) = local_ip.filter(|_| addr.ip().is_unspecified()) {
        addr.set_ip(ip);
    }
    addr.to_string()
}

impl Shard {
    /// HELLO's address per partition: its owning shard's own port when `shard_ports` is on
    /// (and every shard listens), else the client port. A wildcard host (0.0.0.0, ::) is
    /// replaced by `local_ip`, the address the client connected to.
    pub(super) fn partition_addresses(&self, local_ip: Option<std::net::IpAddr>) -> Vec<String> {
        (0..self.shared.partitions)
            .map(|p| match self.shared.shard_addrs.get() {
                Some(addrs) => advertised(addrs[self.owner_of(p)], local_ip),
                None => advertised(self.shared.client_addr, local_ip),
            })
            .collect()
    }

    pub(super) async fn handle(
        self: &Rc<Self>,
        out: &Rc<ConnOut>,
        conn: u64,
        request_id: u64,
        req: Request,
    ) {
        let partitions = self.shared.partitions;
        let resp = match req {
            // The server is stopping: nothing new is started.
            _ if self.shared.stop.load(Ordering::Acquire) => Response::error(
                code::SHUTTING_DOWN,
                "the server is shutting down; retry once it is back",
            ),
            Request::Ping => Response::Pong,
            Request::Hello { .. } => {
                Response::error(code::INVALID_ARGUMENT, "HELLO was already sent")
            }
            Request::Append {
                stream,
                expected_version,
                events,
            } => {
                let p = partition_of(&stream, partitions);
                let op = PartOp::Append {
                    stream,
                    expected_version,
                    events,
                };
                match self.call(p, op).await {
                    OpResult::Appended(a) => Response::Appended {
                        first_version: a.first_version,
                        last_version: a.last_version,
                        partition: a.partition,
                        lsn: a.lsn,
                    },
                    OpResult::Err(e) => error_response(e),
                    other => unexpected(other),
                }
            }
            Request::Read {
                stream,
                from_version,
                max_count,
                direction,
            } => {
                let p = partition_of(&stream, partitions);
                let op = PartOp::Read {
                    stream,
                    from: from_version,
                    max: max_count,
                    direction,
                };
                match self.call(p, op).await {
                    OpResult::Events(events, end_of_stream) => Response::Events {
                        events,
                        end_of_stream,
                    },
                    OpResult::Err(e) => error_response(e),
                    other => unexpected(other),
                }
            }
            Request::StreamInfo { stream } => {
                let p = partition_of(&stream, partitions);
                match self.call(p, PartOp::Info { stream }).await {
                    OpResult::Info(i) => Response::StreamInfo {
                        next_version: i.next_version,
                        first_lsn: i.first_lsn,
                        last_lsn: i.last_lsn,
                    },
                    OpResult::Err(e) => error_response(e),
                    other => unexpected(other),
                }
            }
            Request::Subscribe {
                target,
                name,
                from,
                type_prefix,
                positions,
            } => {
                let sub = SubscribeRequest {
                    target,
                    name,
                    from,
                    type_prefix,
                    positions,
                };
                self.subscribe(out, conn, request_id, sub).await;
                return;
            }
            Request::Unsubscribe { subscription_id } => {
                let parts = out.subs.borrow_mut().remove(&subscription_id);
                match parts {
                    None => Response::error(
                        code::INVALID_ARGUMENT,
                        format!("no subscription with request id {subscription_id}"),
                    ),
                    Some(parts) => {
                        for p in parts {
                            let op = PartOp::Unsubscribe {
                                origin: self.id,
                                conn,
                                sub: subscription_id,
                            };
                            let _ = self.call(p, op).await;
                        }
                        Response::Subscribed
                    }
                }
            }
            Request::Stats => self.stats().await,
            Request::Aggregate {
                stream,
                type_prefix,
                from_ns,
                to_ns,
                bucket_ns,
            } => {
                self.aggregate(stream, type_prefix, from_ns, to_ns, bucket_ns)
                    .await
            }
            Request::Execute { model, command } => {
                self.model_request(&model, &command, false).await
            }
            Request::Query { model, query } => self.model_request(&model, &query, true).await,
        };
        if let Response::Error { code, .. } = &resp {
            metrics::counter!(crate::metrics::ERRORS_TOTAL, "code" => code.to_string())
                .increment(1);
        }
        out.send(request_id, &resp);
    }

    /// Aggregates over one stream's partition, or every partition for stream "".
    pub(super) async fn aggregate(
        self: &Rc<Self>,
        stream: String,
        type_prefix: String,
        from_ns: u64,
        to_ns: u64,
        bucket_ns: u64,
    ) -> Response {
        let parts: Vec<u32> = if stream.is_empty() {
            (0..self.shared.partitions).collect()
        } else {
            vec![partition_of(&stream, self.shared.partitions)]
        };
        let mut merged: Option<Vec<crate::aggregate::Bucket>> = None;
        for p in parts {
            // Through the partition's view, on this shard; through its owner only while the
            // owner is still starting (no view yet).
            let result = match self.shared.views[p as usize].get() {
                Some(view) => {
                    match view.aggregate(&stream, &type_prefix, from_ns, to_ns, bucket_ns) {
                        Ok(b) => OpResult::Buckets(b),
                        Err(e) => OpResult::Err(e.into()),
                    }
                }
                None => {
                    let op = PartOp::Aggregate {
                        stream: stream.clone(),
                        type_prefix: type_prefix.clone(),
                        from_ns,
                        to_ns,
                        bucket_ns,
                    };
                    self.call(p, op).await
                }
            };
            match result {
                OpResult::Buckets(b) => match merged.as_mut() {
                    None => merged = Some(b),
                    Some(m) => {
                        for (x, y) in m.iter_mut().zip(&b) {
                            x.merge(y);
                        }
                    }
                },
                OpResult::Err(e) => return error_response(e),
                other => return unexpected(other),
            }
        }
        Response::Aggregated {
            buckets: merged
                .unwrap_or_default()
                .into_iter()
                .map(|b| protocol::Bucket {
                    start_ns: b.start_ns,
                    count: b.count,
                    sum: b.sum,
                    min: b.min,
                    max: b.max,
                })
                .collect(),
        }
    }

    pub(super) async fn stats(self: &Rc<Self>) -> Response {
        // Read before this request's own calls to other shards.
        let cross_shard_calls = self.shared.cross_shard_calls.load(Ordering::Relaxed);
        let mut parts = Vec::new();
        for p in 0..self.shared.partitions {
            match self.call(p, PartOp::Stats).await {
                OpResult::Stats(s) => parts.push(s),
                OpResult::Err(e) => return error_response(e),
                other => return unexpected(other),
            }
        }
        let json = serde_json::json!({
            "server_version": env!("CARGO_PKG_VERSION"),
            "shards": self.shared.shards,
            "partitions": parts,
            "connections": self.shared.connections.load(Ordering::Acquire),
            "cross_shard_calls": cross_shard_calls,
        });
        Response::Stats {
            json: json.to_string(),
        }
    }
}

#[cfg(test)]
mod token_tests {
    use super::token_matches;

    #[test]
    fn tokens_match_only_when_equal_in_length_and_every_byte() {
        assert!(token_matches("s3cret", "s3cret"));
        assert!(!token_matches("s3cres", "s3cret"));
        assert!(!token_matches("s3cre", "s3cret"));
        assert!(!token_matches("s3crett", "s3cret"));
        assert!(!token_matches("", "s3cret"));
        assert!(token_matches("", ""));
    }
}

#[cfg(test)]
mod advertised_tests {
    use super::advertised;

    #[test]
    fn wildcard_hosts_become_the_address_the_client_reached() {
        let local = Some("10.1.2.3".parse().unwrap());
        assert_eq!(
            advertised("0.0.0.0:7071".parse().unwrap(), local),
            "10.1.2.3:7071"
        );
        assert_eq!(
            advertised("[::]:7071".parse().unwrap(), local),
            "10.1.2.3:7071"
        );
        assert_eq!(
            advertised("127.0.0.1:7071".parse().unwrap(), local),
            "127.0.0.1:7071"
        );
        assert_eq!(
            advertised("0.0.0.0:7071".parse().unwrap(), None),
            "0.0.0.0:7071"
        );
    }
}
