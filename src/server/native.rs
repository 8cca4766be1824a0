//! The native protocol (docs/PROTOCOL.md) on the connection loop ([`Protocol`]): frames
//! decoded from the bytes received, HELLO (version, token, deadline), and each request's
//! handling.
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use std::time::Instant;

use super::conn::{Admitted, ConnOut, Decoded, Fault, Permits, Protocol, Timeout};
use super::route::{error_response, unexpected, OpResult, PartOp, Shard};
use super::subscriptions::SubscribeRequest;
use super::ApiError;
use crate::aggregate::groups::{self, Plan};
use crate::constants::HELLO_FRAME_BYTES_MAX;
use crate::protocol::{
    self, code, decode_request, encode_response, partition_of, Direction, Event, FrameHeader,
    GroupedAggregate, NameMatch, Request, Response, StreamId, TrimBy, FRAME_HEADER_BYTES,
    PROTOCOL_VERSION, PROTOCOL_VERSION_MIN,
};
use crate::stream::{ChangeRequest, IdSpec, Partition, StreamError, Trim};

/// The native protocol on one connection: whether HELLO was accepted, and its deadline.
pub(super) struct Native {
    shard: Rc<Shard>,
    out: Rc<ConnOut>,
    local_ip: Option<std::net::IpAddr>,
    /// Until HELLO is accepted: by when it must be.
    hello_deadline: Option<Instant>,
}

/// One request frame: its request id and the request.
pub(super) struct Frame {
    request_id: u64,
    request: Request,
}

fn error_frame(request_id: u64, code: u16, message: impl Into<String>) -> Vec<u8> {
    let mut out = Vec::new();
    encode_response(&mut out, request_id, 0, &Response::error(code, message));
    out
}

fn fault(request_id: u64, code: u16, message: String) -> Fault {
    Fault {
        reply: error_frame(request_id, code, message.clone()),
        reason: message,
    }
}

impl Protocol for Native {
    type Request = Frame;

    fn open(shard: &Rc<Shard>, out: &Rc<ConnOut>, local_ip: Option<std::net::IpAddr>) -> Self {
        let hello_timeout = Duration::from_millis(u64::from(shard.shared.config.hello_timeout_ms));
        Native {
            shard: shard.clone(),
            out: out.clone(),
            local_ip,
            hello_deadline: Some(Instant::now() + hello_timeout),
        }
    }

    fn refuse(message: &str) -> Vec<u8> {
        error_frame(0, code::OVERLOADED, message)
    }

    fn handshake_deadline(&self) -> Option<Instant> {
        self.hello_deadline
    }

    fn timeout(&self, what: Timeout) -> Fault {
        let cfg = &self.shard.shared.config;
        match what {
            Timeout::Frame => fault(
                0,
                code::MALFORMED_FRAME,
                format!(
                    "frame not complete after {} ms (frame_timeout_ms)",
                    cfg.frame_timeout_ms
                ),
            ),
            Timeout::Handshake => fault(
                0,
                code::NOT_AUTHENTICATED,
                format!(
                    "no HELLO within {} ms of connecting (hello_timeout_ms); the first request \
                     on a connection must be HELLO",
                    cfg.hello_timeout_ms
                ),
            ),
        }
    }

    /// A frame: its 16-byte header, checked as soon as it is there (a length beyond the
    /// limit is refused before the body arrives — until HELLO, the largest HELLO's), then its
    /// body, decoded.
    fn decode(&mut self, buf: &[u8]) -> Decoded<Frame> {
        let Some(header) = buf.get(..FRAME_HEADER_BYTES) else {
            return Decoded::Partial {
                need: FRAME_HEADER_BYTES,
            };
        };
        let header = match FrameHeader::parse(header.try_into().expect("16 bytes")) {
            Ok(h) => h,
            Err(e) => return Decoded::Fault(fault(0, e.code(), e.to_string())),
        };
        let mut max = self.shard.shared.config.request_frame_bytes_max;
        if self.hello_deadline.is_some() {
            max = max.min(HELLO_FRAME_BYTES_MAX);
        }
        let total = u64::from(header.length) + 4;
        if total > u64::from(max) {
            return Decoded::Fault(fault(
                header.request_id,
                code::FRAME_TOO_LARGE,
                format!("frame of {total} bytes exceeds request_frame_bytes_max = {max}"),
            ));
        }
        let Some(body) = buf.get(FRAME_HEADER_BYTES..total as usize) else {
            return Decoded::Partial {
                need: total as usize,
            };
        };
        match decode_request(header.opcode, body) {
            Ok(request) => Decoded::Request(
                Frame {
                    request_id: header.request_id,
                    request,
                },
                total as usize,
            ),
            Err(e) => Decoded::Fault(fault(header.request_id, e.code(), e.to_string())),
        }
    }

    /// Until HELLO is accepted, only HELLO: its version and token are checked and it is
    /// answered here. After it, PING is answered here too; every other request runs.
    fn admit(&mut self, frame: Frame) -> Admitted<Frame> {
        if self.hello_deadline.is_none() {
            // PING needs nothing of a partition: answered here, with no task. Replies may
            // come in any order (docs/PROTOCOL.md), so it need not wait for those before it.
            if matches!(frame.request, Request::Ping)
                && !self.shard.shared.stop.load(Ordering::Acquire)
            {
                self.out.send(frame.request_id, &Response::Pong);
                return Admitted::Done;
            }
            let heavy = matches!(
                frame.request,
                Request::Aggregate { .. } | Request::AggregateGroups(_)
            );
            return Admitted::Run {
                request: frame,
                heavy,
            };
        }
        let id = frame.request_id;
        let Request::Hello {
            protocol_version,
            auth_token,
            ..
        } = frame.request
        else {
            return Admitted::Close(fault(
                id,
                code::NOT_AUTHENTICATED,
                "the first request on a connection must be HELLO".into(),
            ));
        };
        if !(PROTOCOL_VERSION_MIN..=PROTOCOL_VERSION).contains(&protocol_version) {
            return Admitted::Close(fault(
                id,
                code::UNSUPPORTED_VERSION,
                format!(
                    "protocol version {protocol_version} is not supported; this server speaks \
                     {PROTOCOL_VERSION_MIN} to {PROTOCOL_VERSION}"
                ),
            ));
        }
        let cfg = &self.shard.shared.config;
        if !cfg.auth_token.is_empty() && !token_matches(&auth_token, &cfg.auth_token) {
            return Admitted::Close(fault(
                id,
                code::NOT_AUTHENTICATED,
                "wrong auth token".into(),
            ));
        }
        self.hello_deadline = None;
        self.out.version.set(protocol_version);
        self.out.send(
            id,
            &Response::Hello {
                protocol_version,
                server_version: env!("CARGO_PKG_VERSION").into(),
                partition_addresses: self.shard.partition_addresses(self.local_ip),
            },
        );
        Admitted::Done
    }

    fn is_read(frame: &Frame) -> bool {
        matches!(frame.request, Request::Read { .. })
    }

    fn run_now(
        shard: &Rc<Shard>,
        out: &Rc<ConnOut>,
        frame: Frame,
        permits: Permits,
        _clock: &super::conn::LazyClock,
    ) -> Option<(Frame, Permits)> {
        let Frame {
            request_id,
            request,
        } = frame;
        match request {
            Request::Append {
                stream,
                expected_version,
                events,
            } => {
                let reply = super::placed::Reply::Native {
                    out: out.clone(),
                    request_id,
                };
                let not_now = shard.append_now(
                    reply,
                    stream,
                    expected_version,
                    events,
                    IdSpec::Auto,
                    permits,
                )?;
                let request = Request::Append {
                    stream: not_now.stream,
                    expected_version,
                    events: not_now.events,
                };
                Some((
                    Frame {
                        request_id,
                        request,
                    },
                    not_now.permits,
                ))
            }
            request => Some((
                Frame {
                    request_id,
                    request,
                },
                permits,
            )),
        }
    }

    async fn run(shard: Rc<Shard>, out: Rc<ConnOut>, conn: u64, frame: Frame) {
        shard
            .handle(&out, conn, frame.request_id, frame.request)
            .await
    }
}

/// Sends `resp`, the reply to request `request_id` (an error is counted).
pub(super) fn send_reply(out: &ConnOut, request_id: u64, resp: &Response) {
    if let Response::Error { code, .. } = resp {
        metrics::counter!(crate::metrics::ERRORS_TOTAL, "code" => code.to_string()).increment(1);
    }
    out.send(request_id, resp);
}

/// The change a TRIM asks for (docs/PROTOCOL.md): the newest `n` kept; the versions below
/// `v` deleted; or the entries whose stream IDs' milliseconds are below the time's (rounded
/// down), which for events appended without an explicit ID are those the server placed
/// before that clock time, since an automatic ID's milliseconds are the server's clock when
/// the event was placed (or the stream's last ID's, when the clock is behind it).
fn trim_request(by: TrimBy) -> ChangeRequest {
    let trim = |keep_last, min_id| {
        ChangeRequest::Trim(Trim {
            keep_last,
            min_id,
            unit: 1,
            max_remove: None,
        })
    };
    match by {
        TrimBy::KeepLast(n) => trim(Some(n), None),
        TrimBy::BeforeVersion(v) => ChangeRequest::BeforeVersion(v),
        TrimBy::OlderThanNs(ns) => trim(None, Some(StreamId::new(ns / 1_000_000, 0))),
    }
}

/// DELETE_STREAM's or TRIM's part on the owner of the stream's partition: the change,
/// journaled and applied in its turn, answered once durable. The reply counts live events: a
/// TRIM's are those it deleted; a DELETE_STREAM's are the live events the stream showed when
/// the request reached the partition (events placed but not yet acknowledged then are deleted
/// too without being counted). A stream with no visible event is not found (error 11), as
/// for STREAM_INFO.
pub(super) async fn change_op(p: &Partition, stream: String, request: ChangeRequest) -> OpResult {
    let not_found = |stream: &str| {
        OpResult::Err(ApiError::new(
            code::STREAM_NOT_FOUND,
            format!(
                "stream {stream:?} not found: it has no events (never appended to, or deleted \
                 already); check the name, stream names are case-sensitive"
            ),
        ))
    };
    if stream.is_empty() {
        return OpResult::Err(StreamError::EmptyStreamName.into());
    }
    if !p.has_stream(&stream) {
        return not_found(&stream);
    }
    let delete = request == ChangeRequest::DeleteStream;
    let live = p.live_entries(&stream);
    match p.change(&stream, request).await {
        // Deleted by another request before this one's turn came.
        Ok(0) if delete => not_found(&stream),
        Ok(_) if delete => OpResult::Deleted(live),
        Ok(n) => OpResult::Deleted(n),
        Err(e) => OpResult::Err(e.into()),
    }
}

/// Whether the token a client presented is the server's, in time that does not depend on
/// where they differ (a byte-by-byte `!=` stops at the first difference, which lets a
/// client find the token a byte at a time by timing).
pub(super) fn token_matches(given: impl AsRef<[u8]>, expected: impl AsRef<[u8]>) -> bool {
    let (given, expected) = (given.as_ref(), expected.as_ref());
    let mut diff = u8::from(given.len() != expected.len());
    for (i, e) in expected.iter().enumerate() {
        diff |= e ^ given.get(i).copied().unwrap_or(!e);
    }
    std::hint::black_box(diff) == 0
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

    /// Runs one request and sends its reply (a SUBSCRIBE replies through its subscription).
    /// One arm per request type: the dispatch table reads best in one place, and each arm
    /// that does more than a line has its own function below.
    pub(super) async fn handle(
        self: &Rc<Self>,
        out: &Rc<ConnOut>,
        conn: u64,
        request_id: u64,
        req: Request,
    ) {
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
            } => self.append(stream, expected_version, events).await,
            Request::Read {
                stream,
                from_version,
                max_count,
                direction,
            } => self.read(stream, from_version, max_count, direction).await,
            Request::StreamInfo { stream } => self.stream_info(stream).await,
            Request::DeleteStream { stream } => {
                Box::pin(self.change(stream, ChangeRequest::DeleteStream)).await
            }
            Request::Trim { stream, by } => Box::pin(self.change(stream, trim_request(by))).await,
            Request::Group { stream, command } => Box::pin(self.group(stream, command)).await,
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
                Box::pin(self.subscribe(out, conn, request_id, sub)).await;
                return;
            }
            Request::Unsubscribe { subscription_id } => {
                Box::pin(self.unsubscribe(out, conn, subscription_id)).await
            }
            Request::Stats => Box::pin(self.stats()).await,
            Request::Aggregate {
                stream,
                type_prefix,
                from_ns,
                to_ns,
                bucket_ns,
            } => {
                // The v1 form is the grouped form's one group: the stream by name, the type
                // by prefix, the value column.
                let q = GroupedAggregate {
                    bucket_ns,
                    stream,
                    event_type: type_prefix,
                    type_match: NameMatch::Prefix,
                    ..GroupedAggregate::window(from_ns, to_ns)
                };
                match Box::pin(self.aggregate(q)).await {
                    Ok(mut g) => Response::Aggregated {
                        buckets: g.groups.pop().map(|g| g.buckets).unwrap_or_default(),
                    },
                    Err(e) => e,
                }
            }
            Request::AggregateGroups(q) => match Box::pin(self.aggregate(*q)).await {
                Ok(g) => Response::Groups(g),
                Err(e) => e,
            },
            Request::Execute { model, command } => {
                Box::pin(self.model_request(&model, &command, false)).await
            }
            Request::Query { model, query } => {
                Box::pin(self.model_request(&model, &query, true)).await
            }
        };
        send_reply(out, request_id, &resp);
    }

    /// APPEND: at the stream's partition.
    pub(super) async fn append(
        self: &Rc<Self>,
        stream: String,
        expected_version: i64,
        events: Vec<Event>,
    ) -> Response {
        let p = partition_of(&stream, self.shared.partitions);
        let op = PartOp::Append {
            stream,
            expected_version,
            events,
            id: IdSpec::Auto,
        };
        match self.call(p, op).await {
            OpResult::Appended(Ok((a, _))) => Response::Appended(a),
            OpResult::Appended(Err(e)) => error_response(e.into()),
            OpResult::Err(e) => error_response(e),
            other => unexpected(other),
        }
    }

    /// READ: at the stream's partition.
    async fn read(
        self: &Rc<Self>,
        stream: String,
        from_version: u64,
        max_count: u32,
        direction: Direction,
    ) -> Response {
        let p = partition_of(&stream, self.shared.partitions);
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

    /// STREAM_INFO: at the stream's partition.
    pub(super) async fn stream_info(self: &Rc<Self>, stream: String) -> Response {
        let p = partition_of(&stream, self.shared.partitions);
        match self.call(p, PartOp::Info { stream }).await {
            OpResult::Info(i) => Response::StreamInfo(i),
            OpResult::Err(e) => error_response(e),
            other => unexpected(other),
        }
    }

    /// DELETE_STREAM and TRIM: at the stream's partition, answered once the change is
    /// durable.
    async fn change(self: &Rc<Self>, stream: String, request: ChangeRequest) -> Response {
        let p = partition_of(&stream, self.shared.partitions);
        match self.call(p, PartOp::Change { stream, request }).await {
            OpResult::Deleted(deleted) => Response::Deleted { deleted },
            OpResult::Err(e) => error_response(e),
            other => unexpected(other),
        }
    }

    /// UNSUBSCRIBE: the connection forgets the subscription, and each partition it spans
    /// drops it.
    async fn unsubscribe(
        self: &Rc<Self>,
        out: &Rc<ConnOut>,
        conn: u64,
        subscription_id: u64,
    ) -> Response {
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

    /// Aggregates over one stream's partition (a stream named whole), or every partition:
    /// each partition's groups from its view on this shard (from its owner when views are
    /// off), merged by key, then ranked.
    pub(super) async fn aggregate(
        self: &Rc<Self>,
        q: GroupedAggregate,
    ) -> Result<protocol::Groups, Response> {
        let plan = Plan::new(&q).map_err(|e| error_response(StreamError::from(e).into()))?;
        let parts: Vec<u32> = if q.stream_match == NameMatch::Exact && !q.stream.is_empty() {
            vec![partition_of(&q.stream, self.shared.partitions)]
        } else {
            (0..self.shared.partitions).collect()
        };
        let mut merged: Option<protocol::Groups> = None;
        for p in parts {
            let result = match self.shared.views[p as usize].get() {
                Some(view) => match view.aggregate(&plan) {
                    Ok(g) => OpResult::Groups(g),
                    Err(e) => OpResult::Err(e.into()),
                },
                None => {
                    self.call(p, PartOp::Aggregate(Box::new(plan.clone())))
                        .await
                }
            };
            let groups = match result {
                OpResult::Groups(g) => g,
                OpResult::Err(e) => return Err(error_response(e)),
                other => return Err(unexpected(other)),
            };
            match merged.as_mut() {
                None => merged = Some(groups),
                Some(m) => groups::merge(&plan, m, groups)
                    .map_err(|e| error_response(StreamError::from(e).into()))?,
            }
        }
        let merged = merged.expect("a server has at least one partition");
        Ok(groups::finish(&plan, merged))
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
