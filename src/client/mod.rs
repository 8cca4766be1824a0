//! The Rust client: one TCP connection, many requests in flight (pipelining), replies matched
//! by request id, subscriptions as a stream of events.
//!
//! Shard-aware routing: HELLO's reply names an address per partition. When the server
//! advertises addresses other than the one connected to (its `shard_ports`), the client
//! opens one more connection per distinct address and sends every request about one stream
//! (append, read, stream info, delete, trim, consumer-group requests, a stream's aggregate or
//! subscription) over the connection of the stream's partition, so the owning shard serves
//! it without a cross-shard hop. Every other request uses the first connection. An
//! advertised address that cannot be reached falls back to the first connection (the server
//! routes any request on any port).
//!
//! [`Client`] is runtime-agnostic: its request methods are `async` and their futures are
//! woken by the connection's reader thread, so they run on any executor (or none: see
//! [`BlockingClient`], which drives them with `block_on`). Writes go through a mutex-guarded
//! socket; a background thread reads every frame and completes the matching request or
//! feeds the matching subscription.

use std::collections::HashMap;
use std::future::Future;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use crate::protocol::{
    code, decode_response, encode_request, Bucket, Direction, Event, FrameHeader, GroupedAggregate,
    Groups, RecordedEvent, Request, Response, SubscribeTarget, FRAME_HEADER_BYTES,
    PROTOCOL_VERSION,
};

/// Which oldest events [`Client::trim`] deletes: the protocol's type, named here too.
pub use crate::protocol::TrimBy;

/// Consumer groups' arguments and answers ([`Client::group_create`] and the other
/// `group_*` methods): the protocol's types, named here too.
pub use crate::protocol::{
    ClaimAt, ConsumerGroupInfo, ConsumerInfo, EntryEvent, GroupClaim, GroupCommand, GroupEntry,
    GroupStart, PendingEntry, PendingRange, PendingReply, StreamId,
};

/// What [`Client::group_autoclaim`] answers.
#[derive(Clone, Debug, PartialEq)]
pub struct AutoClaimed {
    /// Where to continue the scan (`0-0`: the pending list was scanned to its end).
    pub next: StreamId,
    /// The entries claimed.
    pub entries: Vec<GroupEntry>,
    /// Pending IDs no longer in the stream, removed from the pending list.
    pub deleted: Vec<StreamId>,
}

fn name(b: impl AsRef<[u8]>) -> Vec<u8> {
    b.as_ref().to_vec()
}

/// Client-side failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// An I/O error on an established connection. Its text is the I/O error's own (no
    /// `source()`, so error chains do not print it twice).
    #[error("connection error: {0}")]
    Io(std::io::Error),
    /// The server address does not resolve (a host name that does not exist, a port that is
    /// not a number).
    #[error("cannot resolve the server address: {0}")]
    Resolve(std::io::Error),
    /// Nothing listens at the address (TCP connection refused).
    #[error("nothing listens at {addr} (connection refused)")]
    Refused { addr: std::net::SocketAddr },
    /// The TCP connection was not established within the connect timeout.
    #[error("no connection to {addr} within {} s", after.as_secs_f64())]
    ConnectTimeout {
        addr: std::net::SocketAddr,
        after: Duration,
    },
    /// The connection was accepted but nothing answered HELLO within the connect timeout.
    #[error(
        "{addr} accepted the connection but did not answer HELLO within {} s",
        after.as_secs_f64()
    )]
    HelloTimeout {
        addr: std::net::SocketAddr,
        after: Duration,
    },
    /// The peer answered HELLO with bytes that are not an evring frame: another kind of
    /// server listens there. `answer` shows what it sent.
    #[error("{addr} is not an evring server (it answered {answer})")]
    NotEvring {
        addr: std::net::SocketAddr,
        answer: String,
    },
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The expected version did not match (error 10): the server's message says what is at
    /// which version (a stream's last version for APPEND, a key's version for a key-value
    /// CAS); `current` is that version (-1: a stream with no events).
    #[error("{}", wrong_version_text(message, *current))]
    WrongExpectedVersion { current: i64, message: String },
    #[error("server error {code}: {message}")]
    Server { code: u16, message: String },
    #[error("connection closed: {0}")]
    Closed(String),
}

impl From<std::io::Error> for ClientError {
    fn from(e: std::io::Error) -> Self {
        ClientError::Io(e)
    }
}

/// The text of error 10: the server's message, which names what it is about.
fn wrong_version_text(message: &str, current: i64) -> String {
    if message.is_empty() {
        format!("wrong expected version: the current version is {current}")
    } else if message.starts_with("wrong expected version") {
        message.to_string()
    } else {
        format!("wrong expected version: {message}")
    }
}

impl ClientError {
    /// The server's error code, if the server answered with one.
    pub fn code(&self) -> Option<u16> {
        match self {
            ClientError::WrongExpectedVersion { .. } => Some(code::WRONG_EXPECTED_VERSION),
            ClientError::Server { code, .. } => Some(*code),
            _ => None,
        }
    }
}

fn server_error(code: u16, message: String, current_version: Option<i64>) -> ClientError {
    if code == code::WRONG_EXPECTED_VERSION {
        ClientError::WrongExpectedVersion {
            current: current_version.unwrap_or(-1),
            message,
        }
    } else {
        ClientError::Server { code, message }
    }
}

/// The result of an append and a stream's information: the protocol's types, named here
/// too for the client's users.
pub use crate::protocol::{AppendResult, StreamInfo};

enum Pending {
    Waiting(Option<Waker>),
    Done(Response),
}

/// What a subscription yields.
#[derive(Debug)]
pub enum SubscriptionItem {
    Events(Vec<RecordedEvent>),
    /// The server ended the subscription (e.g. code 30: too slow).
    Ended(ClientError),
}

struct Inner {
    writer: Mutex<TcpStream>,
    pending: Mutex<HashMap<u64, Pending>>,
    subs: Mutex<HashMap<u64, mpsc::Sender<SubscriptionItem>>>,
    next_id: AtomicU64,
    closed: AtomicBool,
    close_reason: Mutex<String>,
    partitions: AtomicU64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The reader thread reads from a clone of the socket: shutting it down ends that
        // thread and lets the server see the connection close.
        if let Ok(w) = self.writer.get_mut() {
            let _ = w.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// An evring connection (async API): the first connection, plus one per shard port when
/// the server advertises them.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    /// Partition → the connection to its owner; empty when the server advertises no
    /// addresses beyond the one connected to.
    routes: Arc<Vec<Arc<Inner>>>,
}

/// A reply that has not arrived yet.
pub struct ReplyFuture {
    inner: Arc<Inner>,
    id: u64,
}

impl Future for ReplyFuture {
    type Output = Result<Response, ClientError>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut pending = self.inner.pending.lock().expect("pending lock");
        match pending.remove(&self.id) {
            Some(Pending::Done(resp)) => Poll::Ready(Ok(resp)),
            Some(Pending::Waiting(_)) | None => {
                if self.inner.closed.load(Ordering::Acquire) {
                    let reason = self.inner.close_reason.lock().expect("reason").clone();
                    return Poll::Ready(Err(ClientError::Closed(reason)));
                }
                pending.insert(self.id, Pending::Waiting(Some(cx.waker().clone())));
                Poll::Pending
            }
        }
    }
}

impl Drop for ReplyFuture {
    fn drop(&mut self) {
        if let Ok(mut p) = self.inner.pending.lock() {
            p.remove(&self.id);
        }
    }
}

fn read_frame(stream: &mut impl Read) -> Result<(FrameHeader, Vec<u8>), ClientError> {
    let mut header = [0u8; FRAME_HEADER_BYTES];
    stream.read_exact(&mut header)?;
    let header = FrameHeader::parse(&header).map_err(|e| ClientError::Protocol(e.to_string()))?;
    let mut body = vec![0u8; header.body_len()];
    stream.read_exact(&mut body)?;
    Ok((header, body))
}

/// How long [`Client::connect`] waits for the TCP connection, and then for HELLO's reply.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest HELLO reply the client accepts (a server with very many partitions and long
/// addresses stays far below it); a longer "frame" is another protocol's bytes.
const HELLO_REPLY_MAX_BYTES: u32 = 16 << 20;

/// Request id of the HELLO every connection starts with.
const HELLO_ID: u64 = 1;

/// Whether `prefix` (the first bytes of the peer's answer to HELLO) can start the header of a
/// HELLO reply: a length that fits, opcode HELLO_OK or ERROR, flags 0, reserved 0, and the
/// HELLO's request id (0 too for an error).
fn plausible_hello_reply(prefix: &[u8]) -> bool {
    if prefix.len() >= 4 {
        let length = u32::from_le_bytes(prefix[..4].try_into().expect("4 bytes"));
        if !(12..=HELLO_REPLY_MAX_BYTES).contains(&length) {
            return false;
        }
    }
    let opcode = prefix.get(4).copied();
    if opcode.is_some_and(|op| {
        op != crate::protocol::opcode::HELLO_OK && op != crate::protocol::opcode::ERROR
    }) {
        return false;
    }
    if prefix.iter().skip(5).take(3).any(|b| *b != 0) {
        return false;
    }
    if prefix.len() >= FRAME_HEADER_BYTES {
        let id = u64::from_le_bytes(prefix[8..16].try_into().expect("8 bytes"));
        let error = opcode == Some(crate::protocol::opcode::ERROR);
        if id != HELLO_ID && !(error && id == 0) {
            return false;
        }
    }
    true
}

/// How a peer's bytes look in an error message: the first line as text when it is text
/// (`"HTTP/1.1 400 Bad Request"`), else the first bytes in hex.
fn describe_answer(bytes: &[u8]) -> String {
    let line = bytes.split(|b| *b == b'\n').next().unwrap_or(&[]);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if !line.is_empty() && line.iter().all(|b| (0x20..0x7f).contains(b) || *b == b'\t') {
        let text = String::from_utf8_lossy(&line[..line.len().min(80)]).into_owned();
        let more = if line.len() > 80 { "…" } else { "" };
        format!("{text:?}{more}")
    } else {
        let hex: Vec<String> = bytes.iter().take(16).map(|b| format!("{b:02x}")).collect();
        let more = if bytes.len() > 16 { " …" } else { "" };
        format!("bytes {}{more}", hex.join(" "))
    }
}

/// Reads the peer's answer to HELLO, waiting until `deadline`: a whole frame, or why there
/// is none. Bytes that cannot start a HELLO reply end the wait at once.
fn read_hello_reply(
    stream: &mut TcpStream,
    addr: std::net::SocketAddr,
    timeout: Duration,
    deadline: std::time::Instant,
) -> Result<(FrameHeader, Vec<u8>), ClientError> {
    let mut got: Vec<u8> = Vec::with_capacity(FRAME_HEADER_BYTES);
    let mut header: Option<FrameHeader> = None;
    let mut buf = [0u8; 4096];
    loop {
        let wanted = header.map_or(FRAME_HEADER_BYTES, |h| FRAME_HEADER_BYTES + h.body_len());
        if got.len() >= wanted {
            let header = header.expect("a whole frame has a header");
            return Ok((header, got.split_off(FRAME_HEADER_BYTES)));
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(if got.is_empty() {
                ClientError::HelloTimeout {
                    addr,
                    after: timeout,
                }
            } else {
                not_evring(stream, addr, got)
            });
        }
        stream.set_read_timeout(Some(left))?;
        let room = (wanted - got.len()).min(buf.len());
        let n = match stream.read(&mut buf[..room]) {
            Ok(0) if got.is_empty() => {
                return Err(ClientError::NotEvring {
                    addr,
                    answer: "nothing: it closed the connection".into(),
                })
            }
            Ok(0) => return Err(not_evring(stream, addr, got)),
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => return Err(ClientError::Io(e)),
        };
        got.extend_from_slice(&buf[..n]);
        if header.is_none() {
            if !plausible_hello_reply(&got) {
                return Err(not_evring(stream, addr, got));
            }
            if got.len() >= FRAME_HEADER_BYTES {
                let bytes: [u8; FRAME_HEADER_BYTES] =
                    got[..FRAME_HEADER_BYTES].try_into().expect("16 bytes");
                match FrameHeader::parse(&bytes) {
                    Ok(h) => header = Some(h),
                    Err(_) => return Err(not_evring(stream, addr, got)),
                }
            }
        }
    }
}

/// [`ClientError::NotEvring`] showing `got` and whatever else arrives at once (up to a line
/// of text, so an HTTP status line is shown whole).
fn not_evring(stream: &mut TcpStream, addr: std::net::SocketAddr, mut got: Vec<u8>) -> ClientError {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    let mut more = [0u8; 256];
    while got.len() < 256 && !got.contains(&b'\n') {
        match stream.read(&mut more[..256 - got.len()]) {
            Ok(n) if n > 0 => got.extend_from_slice(&more[..n]),
            _ => break,
        }
    }
    ClientError::NotEvring {
        addr,
        answer: describe_answer(&got),
    }
}

/// Connects to the first of `addrs` that accepts within `timeout` each.
fn connect_any(
    addrs: &[std::net::SocketAddr],
    timeout: Duration,
) -> Result<(TcpStream, std::net::SocketAddr), ClientError> {
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect_timeout(addr, timeout) {
            Ok(s) => return Ok((s, *addr)),
            Err(e) => {
                last = Some(match e.kind() {
                    std::io::ErrorKind::ConnectionRefused => ClientError::Refused { addr: *addr },
                    std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
                        ClientError::ConnectTimeout {
                            addr: *addr,
                            after: timeout,
                        }
                    }
                    _ => ClientError::Io(e),
                })
            }
        }
    }
    Err(last.unwrap_or_else(|| {
        ClientError::Resolve(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the address resolves to nothing",
        ))
    }))
}

/// Opens one connection, sends HELLO and returns it with HELLO's partition addresses. The
/// connection and HELLO's reply must each come within `timeout`; an answer that is not an
/// evring frame is refused at once.
fn open(
    addr: impl ToSocketAddrs,
    client_name: &str,
    auth_token: &str,
    timeout: Duration,
) -> Result<(Arc<Inner>, Vec<String>), ClientError> {
    let addrs: Vec<std::net::SocketAddr> = addr
        .to_socket_addrs()
        .map_err(ClientError::Resolve)?
        .collect();
    let (mut stream, addr) = connect_any(&addrs, timeout)?;
    stream.set_nodelay(true)?;
    let partition_addresses = hello(&mut stream, addr, client_name, auth_token, timeout)?;
    let reader = std::io::BufReader::with_capacity(64 * 1024, stream.try_clone()?);
    let inner = Arc::new(Inner {
        writer: Mutex::new(stream),
        pending: Mutex::new(HashMap::new()),
        subs: Mutex::new(HashMap::new()),
        next_id: AtomicU64::new(HELLO_ID + 1),
        closed: AtomicBool::new(false),
        close_reason: Mutex::new(String::new()),
        partitions: AtomicU64::new(partition_addresses.len() as u64),
    });
    spawn_reader(reader, Arc::downgrade(&inner))?;
    Ok((inner, partition_addresses))
}

/// Sends HELLO on a new connection and returns the partition addresses of its reply, which
/// must come within `timeout`.
fn hello(
    stream: &mut TcpStream,
    addr: std::net::SocketAddr,
    client_name: &str,
    auth_token: &str,
    timeout: Duration,
) -> Result<Vec<String>, ClientError> {
    let deadline = std::time::Instant::now() + timeout;
    let mut hello = Vec::new();
    encode_request(
        &mut hello,
        HELLO_ID,
        &Request::Hello {
            protocol_version: PROTOCOL_VERSION,
            client_name: client_name.into(),
            auth_token: auth_token.into(),
        },
    );
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(&hello)?;
    stream.set_write_timeout(None)?;
    let (header, body) = read_hello_reply(stream, addr, timeout, deadline)?;
    stream.set_read_timeout(None)?;
    let hello = decode_response(header.opcode, &body).map_err(|e| ClientError::NotEvring {
        addr,
        answer: format!("a frame that does not decode as a HELLO reply: {e}"),
    })?;
    match hello {
        Response::Hello {
            partition_addresses,
            ..
        } => Ok(partition_addresses),
        Response::Error {
            code,
            message,
            current_version,
        } => Err(server_error(code, message, current_version)),
        other => Err(ClientError::Protocol(format!(
            "unexpected HELLO reply {:?}",
            other.opcode()
        ))),
    }
}

/// Starts the connection's reader thread: it hands each reply to `weak`'s waiter or
/// subscription until the connection fails or the client is dropped.
fn spawn_reader(
    mut reader: std::io::BufReader<TcpStream>,
    weak: std::sync::Weak<Inner>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("evring-client-reader".into())
        .spawn(move || {
            let reason = loop {
                let (header, body) = match read_frame(&mut reader) {
                    Ok(f) => f,
                    Err(e) => break e.to_string(),
                };
                let Some(inner) = weak.upgrade() else {
                    return;
                };
                let resp = match decode_response(header.opcode, &body) {
                    Ok(r) => r,
                    Err(e) => break format!("undecodable reply: {e}"),
                };
                inner.dispatch(header.request_id, resp);
            };
            if let Some(inner) = weak.upgrade() {
                inner.close(reason);
            }
        })?;
    Ok(())
}

impl Client {
    /// Connects, sends HELLO and waits for its reply, each within [`CONNECT_TIMEOUT`]; when
    /// the server advertises shard ports, also connects to each (see the module docs).
    pub fn connect(
        addr: impl ToSocketAddrs,
        client_name: &str,
        auth_token: &str,
    ) -> Result<Client, ClientError> {
        Client::connect_timeout(addr, client_name, auth_token, CONNECT_TIMEOUT)
    }

    /// [`Client::connect`] with another limit on the wait for the TCP connection and then for
    /// HELLO's reply. A peer that answers with bytes that cannot be an evring frame (another
    /// protocol's server) is refused at once ([`ClientError::NotEvring`]).
    pub fn connect_timeout(
        addr: impl ToSocketAddrs,
        client_name: &str,
        auth_token: &str,
        timeout: Duration,
    ) -> Result<Client, ClientError> {
        let (inner, addresses) = open(addr, client_name, auth_token, timeout)?;
        let connected = inner.writer.lock().expect("writer lock").peer_addr()?;
        let mut routes = Vec::new();
        if addresses
            .iter()
            .any(|a| a.parse::<std::net::SocketAddr>().ok() != Some(connected))
        {
            let mut by_address: HashMap<String, Arc<Inner>> = HashMap::new();
            by_address.insert(connected.to_string(), inner.clone());
            for a in &addresses {
                let conn = match by_address.get(a) {
                    Some(c) => c.clone(),
                    None => {
                        let c = match open(a.as_str(), client_name, auth_token, timeout) {
                            Ok((c, _)) => c,
                            // Unreachable from here (NAT, firewall): the first connection
                            // serves these partitions too.
                            Err(
                                ClientError::Io(_)
                                | ClientError::Resolve(_)
                                | ClientError::Refused { .. }
                                | ClientError::ConnectTimeout { .. }
                                | ClientError::HelloTimeout { .. },
                            ) => inner.clone(),
                            Err(e) => return Err(e),
                        };
                        by_address.insert(a.clone(), c.clone());
                        c
                    }
                };
                routes.push(conn);
            }
        }
        Ok(Client {
            inner,
            routes: Arc::new(routes),
        })
    }

    /// Connections this client holds open (1 unless the server advertises shard ports).
    pub fn connections(&self) -> usize {
        let mut seen: Vec<*const Inner> = vec![Arc::as_ptr(&self.inner)];
        for r in self.routes.iter() {
            if !seen.contains(&Arc::as_ptr(r)) {
                seen.push(Arc::as_ptr(r));
            }
        }
        seen.len()
    }

    /// The connection for a request: its stream's partition's, when routing.
    fn conn_for(&self, req: &Request) -> &Arc<Inner> {
        let stream = match req {
            Request::Append { stream, .. }
            | Request::Read { stream, .. }
            | Request::StreamInfo { stream }
            | Request::DeleteStream { stream }
            | Request::Trim { stream, .. }
            | Request::Group { stream, .. } => stream,
            Request::Aggregate { stream, .. } if !stream.is_empty() => stream,
            Request::AggregateGroups(q)
                if q.stream_match == crate::protocol::NameMatch::Exact && !q.stream.is_empty() =>
            {
                &q.stream
            }
            Request::Subscribe {
                target: SubscribeTarget::Stream,
                name,
                ..
            } => name,
            _ => return &self.inner,
        };
        if self.routes.is_empty() {
            return &self.inner;
        }
        let p = crate::protocol::partition_of(stream, self.routes.len() as u32);
        &self.routes[p as usize]
    }

    /// Partition count the server announced.
    pub fn partitions(&self) -> u32 {
        self.inner.partitions.load(Ordering::Acquire) as u32
    }

    /// Sends one request (over its stream's connection when routing); the future resolves
    /// with its reply.
    pub fn request(&self, req: &Request) -> ReplyFuture {
        self.conn_for(req).request(req)
    }

    pub async fn ping(&self) -> Result<(), ClientError> {
        match self.request(&Request::Ping).await? {
            Response::Pong => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Appends events; `expected_version` is -1 (any), -2 (no stream), -3 (exists) or the
    /// stream's last version.
    pub async fn append(
        &self,
        stream: &str,
        expected_version: i64,
        events: Vec<Event>,
    ) -> Result<AppendResult, ClientError> {
        let req = Request::Append {
            stream: stream.into(),
            expected_version,
            events,
        };
        match self.request(&req).await? {
            Response::Appended(a) => Ok(a),
            other => Err(unexpected(other)),
        }
    }

    /// Reads up to `max_count` events; returns them and whether the end was reached.
    pub async fn read(
        &self,
        stream: &str,
        from_version: u64,
        max_count: u32,
        direction: Direction,
    ) -> Result<(Vec<RecordedEvent>, bool), ClientError> {
        let req = Request::Read {
            stream: stream.into(),
            from_version,
            max_count,
            direction,
        };
        match self.request(&req).await? {
            Response::Events {
                mut events,
                end_of_stream,
            } => {
                // A READ reply is one stream's; the wire leaves its name out.
                for e in &mut events {
                    e.stream = stream.to_string();
                }
                Ok((events, end_of_stream))
            }
            other => Err(unexpected(other)),
        }
    }

    pub async fn stream_info(&self, stream: &str) -> Result<StreamInfo, ClientError> {
        match self
            .request(&Request::StreamInfo {
                stream: stream.into(),
            })
            .await?
        {
            Response::StreamInfo(i) => Ok(i),
            other => Err(unexpected(other)),
        }
    }

    /// DELETE_STREAM: deletes the stream once and for all, durably; returns how many live
    /// events it held. Its name can be used again, from version 0. A stream with no events:
    /// error 11.
    pub async fn delete_stream(&self, stream: &str) -> Result<u64, ClientError> {
        let req = Request::DeleteStream {
            stream: stream.into(),
        };
        match self.request(&req).await? {
            Response::Deleted { deleted } => Ok(deleted),
            other => Err(unexpected(other)),
        }
    }

    /// TRIM: deletes the stream's oldest events as `by` says, durably; returns how many live
    /// events it deleted (0 when none matched). The stream keeps its versions: the next
    /// append continues after the last. A stream with no events: error 11.
    pub async fn trim(&self, stream: &str, by: TrimBy) -> Result<u64, ClientError> {
        let req = Request::Trim {
            stream: stream.into(),
            by,
        };
        match self.request(&req).await? {
            Response::Deleted { deleted } => Ok(deleted),
            other => Err(unexpected(other)),
        }
    }

    /// A consumer-group command on `stream` (requests 0x40–0x49), its reply as it came:
    /// for what the `group_*` methods do not cover (GROUP_CREATE or GROUP_SETID with
    /// `entries_read`, say). An error reply is [`ClientError::Server`].
    pub async fn group_command(
        &self,
        stream: &str,
        command: GroupCommand,
    ) -> Result<Response, ClientError> {
        let req = Request::Group {
            stream: stream.into(),
            command,
        };
        self.request(&req).await
    }

    /// GROUP_CREATE (XGROUP CREATE): creates consumer group `group` on `stream`, starting
    /// after `start` ([`GroupStart::Id`]`(StreamId::ZERO)`: the whole stream is new to it;
    /// [`GroupStart::Last`]: only what is appended from now on). With `mkstream` a stream
    /// with no events is created empty; without it, such a stream is error 11. A group of
    /// that name exists: error 14. Durable when it returns. The group is the RESP port's
    /// too (XREADGROUP reads with it).
    pub async fn group_create(
        &self,
        stream: &str,
        group: impl AsRef<[u8]>,
        start: GroupStart,
        mkstream: bool,
    ) -> Result<(), ClientError> {
        let command = GroupCommand::Create {
            group: name(group),
            start,
            mkstream,
            entries_read: None,
        };
        match self.group_command(stream, command).await? {
            Response::GroupOk => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// GROUP_DESTROY (XGROUP DESTROY): deletes the group, its consumers and its pending
    /// entries; `true` if it existed.
    pub async fn group_destroy(
        &self,
        stream: &str,
        group: impl AsRef<[u8]>,
    ) -> Result<bool, ClientError> {
        let command = GroupCommand::Destroy { group: name(group) };
        self.group_count(stream, command).await.map(|n| n > 0)
    }

    /// GROUP_SETID (XGROUP SETID): moves the group's last-delivered ID; entries above it are
    /// new to the group. No such group: error 13.
    pub async fn group_setid(
        &self,
        stream: &str,
        group: impl AsRef<[u8]>,
        start: GroupStart,
    ) -> Result<(), ClientError> {
        let command = GroupCommand::SetId {
            group: name(group),
            start,
            entries_read: None,
        };
        match self.group_command(stream, command).await? {
            Response::GroupOk => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// GROUP_CONSUMER create (XGROUP CREATECONSUMER): `true` if the consumer was created,
    /// `false` if it existed. Reading creates consumers too.
    pub async fn group_create_consumer(
        &self,
        stream: &str,
        group: impl AsRef<[u8]>,
        consumer: impl AsRef<[u8]>,
    ) -> Result<bool, ClientError> {
        let command = GroupCommand::Consumer {
            group: name(group),
            consumer: name(consumer),
            op: crate::protocol::ConsumerOp::Create,
        };
        self.group_count(stream, command).await.map(|n| n > 0)
    }

    /// GROUP_CONSUMER delete (XGROUP DELCONSUMER): deletes the consumer and its pending
    /// entries (they are not delivered again); returns how many it had pending.
    pub async fn group_delete_consumer(
        &self,
        stream: &str,
        group: impl AsRef<[u8]>,
        consumer: impl AsRef<[u8]>,
    ) -> Result<u64, ClientError> {
        let command = GroupCommand::Consumer {
            group: name(group),
            consumer: name(consumer),
            op: crate::protocol::ConsumerOp::Delete,
        };
        self.group_count(stream, command).await
    }

    /// GROUP_READ (XREADGROUP of one stream, not blocking), as `consumer` of `group`:
    /// with `after` `None`, at most `count` entries new to the group (0: as many as one read
    /// serves), delivered to this consumer and pending for it until acknowledged (unless
    /// `noack`); with `after` `Some(id)`, the consumer's own pending entries above `id` (its
    /// history: `StreamId::ZERO` for all of them), delivered again, each entry no longer in
    /// the stream as [`EntryEvent::Deleted`]. Each event's `stream` is `stream`. Durable when
    /// it returns: what it delivered stays pending after a crash. Nothing new: no entries.
    pub async fn group_read(
        &self,
        stream: &str,
        group: impl AsRef<[u8]>,
        consumer: impl AsRef<[u8]>,
        after: Option<StreamId>,
        count: u32,
        noack: bool,
    ) -> Result<Vec<GroupEntry>, ClientError> {
        self.group_read_blocking(stream, group, consumer, after, count, noack, Duration::ZERO)
            .await
    }

    /// [`Client::group_read`] of new entries (`after` `None`) that, finding none, waits up to
    /// `block` (at most about 49 days) for the
    /// next ones, as XREADGROUP's BLOCK: no entries when none came in time.
    #[allow(clippy::too_many_arguments)]
    pub async fn group_read_blocking(
        &self,
        stream: &str,
        group: impl AsRef<[u8]>,
        consumer: impl AsRef<[u8]>,
        after: Option<StreamId>,
        count: u32,
        noack: bool,
        block: Duration,
    ) -> Result<Vec<GroupEntry>, ClientError> {
        let command = GroupCommand::Read {
            group: name(group),
            consumer: name(consumer),
            after,
            count,
            noack,
            block_ms: u32::try_from(block.as_millis()).unwrap_or(u32::MAX),
        };
        match self.group_command(stream, command).await? {
            Response::GroupEntries(entries) => Ok(named(entries, stream)),
            other => Err(unexpected(other)),
        }
    }

    /// GROUP_ACK (XACK): removes the IDs from the group's pending entries; returns how many
    /// were pending.
    pub async fn group_ack(
        &self,
        stream: &str,
        group: impl AsRef<[u8]>,
        ids: &[StreamId],
    ) -> Result<u64, ClientError> {
        let command = GroupCommand::Ack {
            group: name(group),
            ids: ids.to_vec(),
        };
        self.group_count(stream, command).await
    }

    /// GROUP_PENDING (XPENDING): with `range` `None` the summary (how many entries are
    /// pending, the lowest and highest IDs, per consumer how many); with a range its
    /// pending entries with consumer, idle time and delivery count. No such group (or
    /// stream): error 13.
    pub async fn group_pending(
        &self,
        stream: &str,
        group: impl AsRef<[u8]>,
        range: Option<PendingRange>,
    ) -> Result<PendingReply, ClientError> {
        let command = GroupCommand::Pending {
            group: name(group),
            range,
        };
        match self.group_command(stream, command).await? {
            Response::GroupPending(p) => Ok(p),
            other => Err(unexpected(other)),
        }
    }

    /// GROUP_CLAIM (XCLAIM): gives pending entries idle at least `claim.min_idle_ms` to
    /// `claim.consumer`; returns the entries claimed (with `just_id`, IDs only). Pending IDs
    /// no longer in the stream are removed from the pending list and not returned.
    pub async fn group_claim(
        &self,
        stream: &str,
        claim: GroupClaim,
    ) -> Result<Vec<GroupEntry>, ClientError> {
        match self
            .group_command(stream, GroupCommand::Claim(Box::new(claim)))
            .await?
        {
            Response::GroupEntries(entries) => Ok(named(entries, stream)),
            other => Err(unexpected(other)),
        }
    }

    /// GROUP_AUTOCLAIM (XAUTOCLAIM): scans the group's pending entries from `start` and
    /// gives at most `count` (at least 1) idle at least `min_idle_ms` to `consumer`;
    /// continue from [`AutoClaimed::next`] until it is `0-0`.
    #[allow(clippy::too_many_arguments)]
    pub async fn group_autoclaim(
        &self,
        stream: &str,
        group: impl AsRef<[u8]>,
        consumer: impl AsRef<[u8]>,
        min_idle_ms: u64,
        start: StreamId,
        count: u32,
        just_id: bool,
    ) -> Result<AutoClaimed, ClientError> {
        let command = GroupCommand::AutoClaim {
            group: name(group),
            consumer: name(consumer),
            min_idle_ms,
            start,
            count,
            just_id,
        };
        match self.group_command(stream, command).await? {
            Response::GroupAutoClaimed {
                next,
                entries,
                deleted,
            } => Ok(AutoClaimed {
                next,
                entries: named(entries, stream),
                deleted,
            }),
            other => Err(unexpected(other)),
        }
    }

    /// GROUP_INFO (XINFO GROUPS and CONSUMERS): the stream's groups, in name order, each
    /// with its last-delivered ID, entries read, lag, pending count and consumers. A stream
    /// with no events and no groups: error 11.
    pub async fn group_info(&self, stream: &str) -> Result<Vec<ConsumerGroupInfo>, ClientError> {
        match self.group_command(stream, GroupCommand::Info).await? {
            Response::GroupInfo(groups) => Ok(groups),
            other => Err(unexpected(other)),
        }
    }

    async fn group_count(&self, stream: &str, command: GroupCommand) -> Result<u64, ClientError> {
        match self.group_command(stream, command).await? {
            Response::GroupCount(n) => Ok(n),
            other => Err(unexpected(other)),
        }
    }

    pub async fn aggregate(
        &self,
        stream: &str,
        type_prefix: &str,
        from_ns: u64,
        to_ns: u64,
        bucket_ns: u64,
    ) -> Result<Vec<Bucket>, ClientError> {
        let req = Request::Aggregate {
            stream: stream.into(),
            type_prefix: type_prefix.into(),
            from_ns,
            to_ns,
            bucket_ns,
        };
        match self.request(&req).await? {
            Response::Aggregated { buckets } => Ok(buckets),
            other => Err(unexpected(other)),
        }
    }

    /// AGGREGATE_GROUPS: filters that combine, a JSON field, group-by and top-K, across
    /// every partition the filters reach (docs/PROTOCOL.md).
    pub async fn aggregate_groups(&self, q: &GroupedAggregate) -> Result<Groups, ClientError> {
        match self
            .request(&Request::AggregateGroups(Box::new(q.clone())))
            .await?
        {
            Response::Groups(g) => Ok(g),
            other => Err(unexpected(other)),
        }
    }

    /// Server statistics as JSON text.
    /// EXECUTE: a command (bytes the model understands; JSON for `"kv"`) to `model`.
    pub async fn execute(&self, model: &str, command: Vec<u8>) -> Result<Vec<u8>, ClientError> {
        let req = Request::Execute {
            model: model.into(),
            command,
        };
        match self.request(&req).await? {
            Response::Executed { result } => Ok(result),
            other => Err(unexpected(other)),
        }
    }

    /// QUERY: a read-only question to `model`.
    pub async fn query(&self, model: &str, query: Vec<u8>) -> Result<Vec<u8>, ClientError> {
        let req = Request::Query {
            model: model.into(),
            query,
        };
        match self.request(&req).await? {
            Response::Queried { result } => Ok(result),
            other => Err(unexpected(other)),
        }
    }

    pub async fn stats(&self) -> Result<String, ClientError> {
        match self.request(&Request::Stats).await? {
            Response::Stats { json } => Ok(json),
            other => Err(unexpected(other)),
        }
    }

    /// Subscribes; history from `from` first (stream version for a stream, LSN per
    /// partition otherwise; `u64::MAX` = live only), then live events.
    pub async fn subscribe(
        &self,
        target: SubscribeTarget,
        name: &str,
        from: u64,
        type_prefix: &str,
    ) -> Result<Subscription, ClientError> {
        self.subscribe_request(Request::Subscribe {
            target,
            name: name.into(),
            from,
            type_prefix: type_prefix.into(),
            positions: Vec::new(),
        })
        .await
    }

    /// Subscribes to every partition's events (`SubscribeTarget::All`) from a checkpoint:
    /// each partition from its own position. Keep the checkpoint up to date with
    /// [`Checkpoint::advance`] as events arrive, store it (its `Display` form), and resume
    /// from it after a restart or a cut-off with no gap and no duplicate.
    pub async fn subscribe_all_from(
        &self,
        checkpoint: &Checkpoint,
        type_prefix: &str,
    ) -> Result<Subscription, ClientError> {
        self.subscribe_request(Request::Subscribe {
            target: SubscribeTarget::All,
            name: String::new(),
            from: 0,
            type_prefix: type_prefix.into(),
            positions: checkpoint.positions.clone(),
        })
        .await
    }

    async fn subscribe_request(&self, req: Request) -> Result<Subscription, ClientError> {
        let conn = self.conn_for(&req).clone();
        let id = conn.next_id.fetch_add(1, Ordering::AcqRel);
        let (tx, rx) = mpsc::channel();
        conn.subs.lock().expect("subs lock").insert(id, tx);
        conn.send_with_id(id, &req);
        let reply = ReplyFuture {
            inner: conn.clone(),
            id,
        }
        .await;
        match reply {
            Ok(Response::Subscribed) => Ok(Subscription { id, conn, rx }),
            Ok(other) => {
                conn.subs.lock().expect("subs lock").remove(&id);
                Err(unexpected(other))
            }
            Err(e) => {
                conn.subs.lock().expect("subs lock").remove(&id);
                Err(e)
            }
        }
    }
}

/// Group entries with their events' stream named (the reply leaves it out: it is the
/// request's).
fn named(mut entries: Vec<GroupEntry>, stream: &str) -> Vec<GroupEntry> {
    for e in &mut entries {
        if let EntryEvent::Event(r) = &mut e.event {
            r.stream = stream.to_string();
        }
    }
    entries
}

fn unexpected(resp: Response) -> ClientError {
    match resp {
        Response::Error {
            code,
            message,
            current_version,
        } => server_error(code, message, current_version),
        other => ClientError::Protocol(format!("unexpected reply {:?}", other.opcode())),
    }
}

impl Inner {
    /// Sends one request on this connection; the future resolves with its reply.
    fn request(self: &Arc<Self>, req: &Request) -> ReplyFuture {
        let id = self.next_id.fetch_add(1, Ordering::AcqRel);
        self.send_with_id(id, req);
        ReplyFuture {
            inner: self.clone(),
            id,
        }
    }

    fn send_with_id(&self, id: u64, req: &Request) {
        self.pending
            .lock()
            .expect("pending lock")
            .insert(id, Pending::Waiting(None));
        let mut frame = Vec::new();
        encode_request(&mut frame, id, req);
        let mut w = self.writer.lock().expect("writer lock");
        if let Err(e) = w.write_all(&frame) {
            drop(w);
            self.close(format!("write failed: {e}"));
        }
    }

    fn dispatch(&self, id: u64, resp: Response) {
        // Subscription traffic: pushes, and errors after the subscription was accepted.
        {
            let subs = self.subs.lock().expect("subs lock");
            if let Some(tx) = subs.get(&id) {
                let accepted = !self.pending.lock().expect("pending").contains_key(&id);
                match resp {
                    Response::Pushed { events } | Response::PushedV1 { events } => {
                        let _ = tx.send(SubscriptionItem::Events(events));
                        return;
                    }
                    Response::Error {
                        code,
                        message,
                        current_version,
                    } if accepted => {
                        let _ = tx.send(SubscriptionItem::Ended(server_error(
                            code,
                            message,
                            current_version,
                        )));
                        drop(subs);
                        self.subs.lock().expect("subs lock").remove(&id);
                        return;
                    }
                    _ => {}
                }
            }
        }
        let mut pending = self.pending.lock().expect("pending lock");
        if let Some(Pending::Waiting(waker)) = pending.insert(id, Pending::Done(resp)) {
            if let Some(w) = waker {
                w.wake();
            }
        } else {
            // Nobody waits for this id (a dropped future, or an error frame with id 0).
            pending.remove(&id);
        }
    }

    fn close(&self, reason: String) {
        *self.close_reason.lock().expect("reason") = reason.clone();
        self.closed.store(true, Ordering::Release);
        let wakers: Vec<Waker> = self
            .pending
            .lock()
            .expect("pending lock")
            .values_mut()
            .filter_map(|p| match p {
                Pending::Waiting(w) => w.take(),
                Pending::Done(_) => None,
            })
            .collect();
        for w in wakers {
            w.wake();
        }
        for (_, tx) in self.subs.lock().expect("subs lock").drain() {
            let _ = tx.send(SubscriptionItem::Ended(ClientError::Closed(reason.clone())));
        }
    }
}

/// A live subscription: events arrive in LSN order per partition.
pub struct Subscription {
    id: u64,
    /// The connection the subscription lives on.
    conn: Arc<Inner>,
    rx: mpsc::Receiver<SubscriptionItem>,
}

impl Subscription {
    /// The subscription's id (its request id).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The next batch, waiting up to `timeout`; `None` on timeout.
    pub fn next_timeout(&self, timeout: Duration) -> Option<SubscriptionItem> {
        self.rx.recv_timeout(timeout).ok()
    }

    /// The next batch, waiting as long as it takes.
    pub fn next(&self) -> SubscriptionItem {
        self.rx
            .recv()
            .unwrap_or_else(|_| SubscriptionItem::Ended(ClientError::Closed("closed".into())))
    }

    /// Ends the subscription.
    pub async fn unsubscribe(self) -> Result<(), ClientError> {
        self.conn.subs.lock().expect("subs lock").remove(&self.id);
        match self
            .conn
            .request(&Request::Unsubscribe {
                subscription_id: self.id,
            })
            .await?
        {
            Response::Subscribed => Ok(()),
            other => Err(unexpected(other)),
        }
    }
}

/// The same client with blocking methods.
#[derive(Clone)]
pub struct BlockingClient {
    pub client: Client,
}

impl BlockingClient {
    pub fn connect(
        addr: impl ToSocketAddrs,
        client_name: &str,
        auth_token: &str,
    ) -> Result<BlockingClient, ClientError> {
        Ok(BlockingClient {
            client: Client::connect(addr, client_name, auth_token)?,
        })
    }
    /// [`Client::connect_timeout`].
    pub fn connect_timeout(
        addr: impl ToSocketAddrs,
        client_name: &str,
        auth_token: &str,
        timeout: Duration,
    ) -> Result<BlockingClient, ClientError> {
        Ok(BlockingClient {
            client: Client::connect_timeout(addr, client_name, auth_token, timeout)?,
        })
    }
    pub fn ping(&self) -> Result<(), ClientError> {
        futures_lite::future::block_on(self.client.ping())
    }
    pub fn append(
        &self,
        stream: &str,
        expected_version: i64,
        events: Vec<Event>,
    ) -> Result<AppendResult, ClientError> {
        futures_lite::future::block_on(self.client.append(stream, expected_version, events))
    }
    pub fn read(
        &self,
        stream: &str,
        from_version: u64,
        max_count: u32,
        direction: Direction,
    ) -> Result<(Vec<RecordedEvent>, bool), ClientError> {
        futures_lite::future::block_on(self.client.read(stream, from_version, max_count, direction))
    }
    pub fn stream_info(&self, stream: &str) -> Result<StreamInfo, ClientError> {
        futures_lite::future::block_on(self.client.stream_info(stream))
    }
    pub fn stats(&self) -> Result<String, ClientError> {
        futures_lite::future::block_on(self.client.stats())
    }
    /// [`Client::delete_stream`].
    pub fn delete_stream(&self, stream: &str) -> Result<u64, ClientError> {
        futures_lite::future::block_on(self.client.delete_stream(stream))
    }
    /// [`Client::trim`].
    pub fn trim(&self, stream: &str, by: TrimBy) -> Result<u64, ClientError> {
        futures_lite::future::block_on(self.client.trim(stream, by))
    }
    /// [`Client::group_command`].
    pub fn group_command(
        &self,
        stream: &str,
        command: GroupCommand,
    ) -> Result<Response, ClientError> {
        futures_lite::future::block_on(self.client.group_command(stream, command))
    }
    /// [`Client::group_create`].
    pub fn group_create(
        &self,
        stream: &str,
        group: impl AsRef<[u8]>,
        start: GroupStart,
        mkstream: bool,
    ) -> Result<(), ClientError> {
        futures_lite::future::block_on(self.client.group_create(stream, group, start, mkstream))
    }
    /// [`Client::group_destroy`].
    pub fn group_destroy(
        &self,
        stream: &str,
        group: impl AsRef<[u8]>,
    ) -> Result<bool, ClientError> {
        futures_lite::future::block_on(self.client.group_destroy(stream, group))
    }
    /// [`Client::group_setid`].
    pub fn group_setid(
        &self,
        stream: &str,
        group: impl AsRef<[u8]>,
        start: GroupStart,
    ) -> Result<(), ClientError> {
        futures_lite::future::block_on(self.client.group_setid(stream, group, start))
    }
    /// [`Client::group_create_consumer`].
    pub fn group_create_consumer(
        &self,
        stream: &str,
        group: impl AsRef<[u8]>,
        consumer: impl AsRef<[u8]>,
    ) -> Result<bool, ClientError> {
        futures_lite::future::block_on(self.client.group_create_consumer(stream, group, consumer))
    }
    /// [`Client::group_delete_consumer`].
    pub fn group_delete_consumer(
        &self,
        stream: &str,
        group: impl AsRef<[u8]>,
        consumer: impl AsRef<[u8]>,
    ) -> Result<u64, ClientError> {
        futures_lite::future::block_on(self.client.group_delete_consumer(stream, group, consumer))
    }
    /// [`Client::group_read`].
    pub fn group_read(
        &self,
        stream: &str,
        group: impl AsRef<[u8]>,
        consumer: impl AsRef<[u8]>,
        after: Option<StreamId>,
        count: u32,
        noack: bool,
    ) -> Result<Vec<GroupEntry>, ClientError> {
        futures_lite::future::block_on(
            self.client
                .group_read(stream, group, consumer, after, count, noack),
        )
    }
    /// [`Client::group_read_blocking`].
    #[allow(clippy::too_many_arguments)]
    pub fn group_read_blocking(
        &self,
        stream: &str,
        group: impl AsRef<[u8]>,
        consumer: impl AsRef<[u8]>,
        after: Option<StreamId>,
        count: u32,
        noack: bool,
        block: Duration,
    ) -> Result<Vec<GroupEntry>, ClientError> {
        futures_lite::future::block_on(
            self.client
                .group_read_blocking(stream, group, consumer, after, count, noack, block),
        )
    }
    /// [`Client::group_ack`].
    pub fn group_ack(
        &self,
        stream: &str,
        group: impl AsRef<[u8]>,
        ids: &[StreamId],
    ) -> Result<u64, ClientError> {
        futures_lite::future::block_on(self.client.group_ack(stream, group, ids))
    }
    /// [`Client::group_pending`].
    pub fn group_pending(
        &self,
        stream: &str,
        group: impl AsRef<[u8]>,
        range: Option<PendingRange>,
    ) -> Result<PendingReply, ClientError> {
        futures_lite::future::block_on(self.client.group_pending(stream, group, range))
    }
    /// [`Client::group_claim`].
    pub fn group_claim(
        &self,
        stream: &str,
        claim: GroupClaim,
    ) -> Result<Vec<GroupEntry>, ClientError> {
        futures_lite::future::block_on(self.client.group_claim(stream, claim))
    }
    /// [`Client::group_autoclaim`].
    #[allow(clippy::too_many_arguments)]
    pub fn group_autoclaim(
        &self,
        stream: &str,
        group: impl AsRef<[u8]>,
        consumer: impl AsRef<[u8]>,
        min_idle_ms: u64,
        start: StreamId,
        count: u32,
        just_id: bool,
    ) -> Result<AutoClaimed, ClientError> {
        futures_lite::future::block_on(self.client.group_autoclaim(
            stream,
            group,
            consumer,
            min_idle_ms,
            start,
            count,
            just_id,
        ))
    }
    /// [`Client::group_info`].
    pub fn group_info(&self, stream: &str) -> Result<Vec<ConsumerGroupInfo>, ClientError> {
        futures_lite::future::block_on(self.client.group_info(stream))
    }
    pub fn execute(&self, model: &str, command: Vec<u8>) -> Result<Vec<u8>, ClientError> {
        futures_lite::future::block_on(self.client.execute(model, command))
    }
    pub fn query(&self, model: &str, query: Vec<u8>) -> Result<Vec<u8>, ClientError> {
        futures_lite::future::block_on(self.client.query(model, query))
    }
    pub fn aggregate(
        &self,
        stream: &str,
        type_prefix: &str,
        from_ns: u64,
        to_ns: u64,
        bucket_ns: u64,
    ) -> Result<Vec<Bucket>, ClientError> {
        futures_lite::future::block_on(self.client.aggregate(
            stream,
            type_prefix,
            from_ns,
            to_ns,
            bucket_ns,
        ))
    }
    pub fn aggregate_groups(&self, q: &GroupedAggregate) -> Result<Groups, ClientError> {
        futures_lite::future::block_on(self.client.aggregate_groups(q))
    }
    pub fn subscribe(
        &self,
        target: SubscribeTarget,
        name: &str,
        from: u64,
        type_prefix: &str,
    ) -> Result<Subscription, ClientError> {
        futures_lite::future::block_on(self.client.subscribe(target, name, from, type_prefix))
    }
    pub fn subscribe_all_from(
        &self,
        checkpoint: &Checkpoint,
        type_prefix: &str,
    ) -> Result<Subscription, ClientError> {
        futures_lite::future::block_on(self.client.subscribe_all_from(checkpoint, type_prefix))
    }
    pub fn partitions(&self) -> u32 {
        self.client.partitions()
    }
}

/// Where a subscription to every partition stands: per partition, the LSN of the next event
/// to deliver. Written as the positions separated by commas, in partition order
/// (`"1204,0,877"`; `-` for "live only"), so it can be stored and handed back
/// ([`Client::subscribe_all_from`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    positions: Vec<u64>,
}

impl Checkpoint {
    /// Every partition from its first event.
    pub fn beginning(partitions: u32) -> Checkpoint {
        Checkpoint {
            positions: vec![0; partitions as usize],
        }
    }

    /// Each partition from its position in `positions` (partition order; `u64::MAX`: live).
    pub fn from_positions(positions: Vec<u64>) -> Checkpoint {
        Checkpoint { positions }
    }

    /// Every partition from its next new event (live only).
    pub fn live(partitions: u32) -> Checkpoint {
        Checkpoint {
            positions: vec![u64::MAX; partitions as usize],
        }
    }

    /// Moves past `events` (pushed by a subscription to every partition).
    pub fn advance(&mut self, events: &[RecordedEvent]) {
        for e in events {
            if let Some(p) = self.positions.get_mut(e.partition as usize) {
                if *p == u64::MAX || *p <= e.lsn {
                    *p = e.lsn + 1;
                }
            }
        }
    }

    /// The position of each partition, in partition order.
    pub fn positions(&self) -> &[u64] {
        &self.positions
    }
}

impl std::fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, p) in self.positions.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if *p == u64::MAX {
                f.write_str("-")?;
            } else {
                write!(f, "{p}")?;
            }
        }
        Ok(())
    }
}

/// A checkpoint's text with a position that is neither a number nor `-`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("checkpoint position {position:?} is not a number or \"-\"")]
pub struct CheckpointParseError {
    pub position: String,
}

impl std::str::FromStr for Checkpoint {
    type Err = CheckpointParseError;
    fn from_str(text: &str) -> Result<Checkpoint, CheckpointParseError> {
        let positions = text
            .trim()
            .split(',')
            .map(|p| match p.trim() {
                "-" => Ok(u64::MAX),
                n => n.parse::<u64>().map_err(|_| CheckpointParseError {
                    position: n.to_string(),
                }),
            })
            .collect::<Result<Vec<u64>, _>>()?;
        Ok(Checkpoint { positions })
    }
}

/// An event with just a type and data (no id, server timestamp, no value).
pub fn event(event_type: &str, data: impl Into<Vec<u8>>) -> Event {
    Event {
        id: [0; 16],
        event_type: event_type.into(),
        timestamp_ns: 0,
        value: f64::NAN,
        data: data.into(),
        metadata: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello_reply_header(length: u32, opcode: u8, id: u64) -> Vec<u8> {
        let mut h = length.to_le_bytes().to_vec();
        h.extend_from_slice(&[opcode, 0, 0, 0]);
        h.extend_from_slice(&id.to_le_bytes());
        h
    }

    #[test]
    fn a_hello_reply_is_told_from_another_protocol_by_its_first_bytes() {
        let ok = hello_reply_header(40, crate::protocol::opcode::HELLO_OK, HELLO_ID);
        for n in 0..=ok.len() {
            assert!(plausible_hello_reply(&ok[..n]), "a prefix of {n} bytes");
        }
        let error = hello_reply_header(30, crate::protocol::opcode::ERROR, 0);
        assert!(plausible_hello_reply(&error));
        // HTTP: "HTTP" read as a length is over a gigabyte.
        assert!(!plausible_hello_reply(b"HTTP"));
        assert!(!plausible_hello_reply(b"SSH-2.0-OpenSSH"));
        // A length that fits but another opcode, reserved bytes set, another request id.
        assert!(!plausible_hello_reply(
            &hello_reply_header(40, 0x90, HELLO_ID)[..5]
        ));
        let mut reserved = ok.clone();
        reserved[6] = 1;
        assert!(!plausible_hello_reply(&reserved));
        assert!(!plausible_hello_reply(&hello_reply_header(
            40,
            crate::protocol::opcode::HELLO_OK,
            9
        )));
    }

    #[test]
    fn an_answer_is_shown_as_its_first_line_or_in_hex() {
        assert_eq!(
            describe_answer(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"),
            "\"HTTP/1.1 400 Bad Request\""
        );
        assert_eq!(describe_answer(&[0, 1, 0xff]), "bytes 00 01 ff");
        assert_eq!(
            describe_answer(&[7; 20]),
            "bytes 07 07 07 07 07 07 07 07 07 07 07 07 07 07 07 07 …"
        );
    }

    #[test]
    fn error_10_says_what_the_server_said_it_is_about() {
        let kv = server_error(10, "the key is at version 3".into(), Some(3));
        assert_eq!(
            kv.to_string(),
            "wrong expected version: the key is at version 3"
        );
        let stream = server_error(
            10,
            "wrong expected version: expected 0, stream \"s\" is at 2".into(),
            Some(2),
        );
        assert_eq!(
            stream.to_string(),
            "wrong expected version: expected 0, stream \"s\" is at 2"
        );
        assert_eq!(
            server_error(10, String::new(), Some(4)).to_string(),
            "wrong expected version: the current version is 4"
        );
    }

    #[test]
    fn an_io_error_is_printed_once_in_an_error_chain() {
        let e = ClientError::from(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "reset",
        ));
        // Printed as a chain is (each error, then its source's, joined by ": ").
        let mut chain = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            chain.push_str(&format!(": {s}"));
            source = s.source();
        }
        assert_eq!(chain, "connection error: reset");
    }
}
