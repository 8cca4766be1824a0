//! The request parser: Redis 7.0's `processMultibulkBuffer` and `processInlineBuffer`
//! (`src/networking.c`), with `string2ll` (`src/util.c`) for the counts and `sdssplitargs`
//! (`src/sds.c`) for inline commands, made incremental and resumable.
//!
//! The module documentation ([`crate::resp`]) describes the framing, the limits and the
//! invariants; this file follows the C code step by step, and the comments name the places
//! where it departs from it.

use std::fmt;

/// Longest line without its terminator: an inline command, or a `*`/`$` count line
/// (Redis's `PROTO_INLINE_MAX_SIZE`).
pub const INLINE_MAX_BYTES: usize = 64 * 1024;

/// Largest multibulk count Redis 7.0 accepts (`INT_MAX`; 6.2 and earlier refused counts above
/// 1024 × 1024).
pub const MULTIBULK_COUNT_MAX: i64 = i32::MAX as i64;

/// Redis's default `proto-max-bulk-len`: 512 MiB.
pub const MAX_BULK_BYTES_DEFAULT: usize = 512 * 1024 * 1024;

/// Largest multibulk count accepted before authentication (when the caller says one is
/// required).
pub const UNAUTHENTICATED_COUNT_MAX: i64 = 10;

/// Largest bulk length accepted before authentication (when the caller says one is
/// required).
pub const UNAUTHENTICATED_BULK_MAX: i64 = 16384;

/// The fewest bytes one more argument of a multibulk request can take: `$0\r\n\r\n`.
const ARG_BYTES_MIN: usize = 6;

/// Argument slots reserved from a multibulk count, at most (Redis reserves the same); more
/// grow as arguments arrive.
const ARGS_RESERVED_MAX: usize = 1024;

/// Capacity the argument bytes and the argument table keep between commands; a larger
/// command's buffers are shrunk back to these when the next command starts.
const KEPT_DATA_BYTES: usize = 16 * 1024;
const KEPT_ARGS: usize = 128;

/// The bounds of one connection's requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestLimits {
    /// Largest bulk argument (Redis's `proto-max-bulk-len`, [`MAX_BULK_BYTES_DEFAULT`]); a
    /// larger `$` length is `invalid bulk length`.
    pub max_bulk_bytes: usize,
    /// evring's bound on the bytes of one whole request, headers included; a request that
    /// cannot fit is [`RequestError::RequestTooLarge`]. Redis has no such bound.
    pub max_request_bytes: usize,
}

/// A protocol error. Redis replies `-ERR ` followed by [`RequestError::message`], then closes
/// the connection; so should the caller (the parser is reset and the rest of the buffer is
/// not parsed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestError {
    /// `*` count not a number (as `string2ll` reads one) or above [`MULTIBULK_COUNT_MAX`].
    InvalidMultibulkLength,
    /// `*` count above [`UNAUTHENTICATED_COUNT_MAX`] while authentication is required.
    UnauthenticatedMultibulkLength,
    /// No `\r` in the [`INLINE_MAX_BYTES`] + 1 bytes after a `*`.
    TooBigMultibulkCountString,
    /// An argument header that does not start with `$`; the byte it starts with.
    ExpectedDollar(u8),
    /// `$` length not a number, negative, or above `max_bulk_bytes`.
    InvalidBulkLength,
    /// `$` length above [`UNAUTHENTICATED_BULK_MAX`] while authentication is required.
    UnauthenticatedBulkLength,
    /// No `\r` in the [`INLINE_MAX_BYTES`] + 1 bytes of an argument header.
    TooBigBulkCountString,
    /// No `\n` in the [`INLINE_MAX_BYTES`] + 1 bytes of an inline command.
    TooBigInlineRequest,
    /// An inline command `sdssplitargs` refuses: an unclosed quote, or a closing quote
    /// followed by something other than a space.
    UnbalancedQuotes,
    /// evring's bound: the request needs more than `max_request_bytes`.
    RequestTooLarge { max_request_bytes: usize },
}

impl RequestError {
    /// The error text, exactly as Redis sends it after `-ERR ` (for
    /// [`RequestError::ExpectedDollar`] the byte itself, a `\r` or `\n` made a space as
    /// Redis's `addReplyErrorFormat` does).
    pub fn message(&self) -> Vec<u8> {
        let text = match self {
            RequestError::InvalidMultibulkLength => "invalid multibulk length",
            RequestError::UnauthenticatedMultibulkLength => "unauthenticated multibulk length",
            RequestError::TooBigMultibulkCountString => "too big mbulk count string",
            RequestError::ExpectedDollar(got) => {
                let got = if matches!(got, b'\r' | b'\n') {
                    b' '
                } else {
                    *got
                };
                let mut m = b"Protocol error: expected '$', got '".to_vec();
                m.extend_from_slice(&[got, b'\'']);
                return m;
            }
            RequestError::InvalidBulkLength => "invalid bulk length",
            RequestError::UnauthenticatedBulkLength => "unauthenticated bulk length",
            RequestError::TooBigBulkCountString => "too big bulk count string",
            RequestError::TooBigInlineRequest => "too big inline request",
            RequestError::UnbalancedQuotes => "unbalanced quotes in request",
            RequestError::RequestTooLarge { max_request_bytes } => {
                return format!("Protocol error: request larger than {max_request_bytes} bytes")
                    .into_bytes();
            }
        };
        format!("Protocol error: {text}").into_bytes()
    }
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &b in &self.message() {
            if b.is_ascii_graphic() || b == b' ' {
                write!(f, "{}", b as char)?;
            } else {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for RequestError {}

/// What one call of [`RequestParser::parse`] found at the start of the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<'p> {
    /// The request is not complete: call again with the same bytes and more after them.
    NeedMore,
    /// A request with no arguments (`*0`, `*-1`, an empty or blank inline line): Redis skips
    /// it without a reply. Its `used` bytes are to be dropped.
    Empty { used: usize },
    /// A complete command of `used` bytes (at least one argument).
    Command { used: usize, args: Args<'p> },
}

/// The arguments of a parsed command, borrowed from the parser (not from the input buffer,
/// which the caller may drain at once).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Args<'p> {
    data: &'p [u8],
    ends: &'p [usize],
}

impl<'p> Args<'p> {
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Argument `i`, from 0 (the command name).
    pub fn get(&self, i: usize) -> Option<&'p [u8]> {
        let end = *self.ends.get(i)?;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        Some(&self.data[start..end])
    }

    pub fn iter(&self) -> ArgsIter<'p> {
        ArgsIter {
            args: *self,
            next: 0,
        }
    }

    /// The arguments as owned byte strings.
    pub fn to_vec(&self) -> Vec<Vec<u8>> {
        self.iter().map(<[u8]>::to_vec).collect()
    }
}

impl fmt::Debug for Args<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.iter().map(|a| a.escape_ascii().to_string()))
            .finish()
    }
}

impl<'p> IntoIterator for Args<'p> {
    type Item = &'p [u8];
    type IntoIter = ArgsIter<'p>;
    fn into_iter(self) -> ArgsIter<'p> {
        self.iter()
    }
}

/// Iterator over [`Args`].
#[derive(Clone, Debug)]
pub struct ArgsIter<'p> {
    args: Args<'p>,
    next: usize,
}

impl<'p> Iterator for ArgsIter<'p> {
    type Item = &'p [u8];
    fn next(&mut self) -> Option<&'p [u8]> {
        let arg = self.args.get(self.next)?;
        self.next += 1;
        Some(arg)
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.args.len() - self.next;
        (left, Some(left))
    }
}

impl ExactSizeIterator for ArgsIter<'_> {}

/// How far the current request has been read. Offsets count from the request's first byte,
/// which is the first byte of the buffer the caller passes.
#[derive(Clone, Copy, Debug, Default)]
struct Progress {
    /// Bytes of the request already parsed (0 until a multibulk count line is read).
    pos: usize,
    /// Where the search for the current line's terminator resumes.
    scanned: usize,
    /// Multibulk arguments still to read.
    remaining: usize,
    /// Length of the argument whose `$` header has been read, before its bytes arrive.
    bulk: Option<usize>,
}

/// The end of a line, as Redis looks for it.
enum Line {
    /// At this offset.
    Found(usize),
    NeedMore,
    /// Not in the first [`INLINE_MAX_BYTES`] + 1 bytes: never will be.
    TooLong,
}

/// One step of parsing.
enum Step {
    NeedMore,
    /// The request ends at this offset.
    Done(usize),
}

/// An incremental RESP request parser for one connection.
///
/// The caller keeps the bytes it has read and calls [`RequestParser::parse`] with all of
/// them that are not yet consumed, starting at the request's first byte. On
/// [`Parsed::NeedMore`] it keeps them, reads more, and calls again with the same bytes and
/// the new ones after them; the parser resumes where it stopped (it remembers offsets, not
/// bytes). On [`Parsed::Command`] or [`Parsed::Empty`] it drops `used` bytes and calls again
/// for the next request. After an error it replies with the message and closes.
#[derive(Debug)]
pub struct RequestParser {
    limits: RequestLimits,
    auth_required: bool,
    progress: Progress,
    /// The arguments' bytes, one after the other.
    data: Vec<u8>,
    /// Where each argument ends in `data`.
    ends: Vec<usize>,
}

impl RequestParser {
    pub fn new(limits: RequestLimits) -> Self {
        RequestParser {
            limits,
            auth_required: false,
            progress: Progress::default(),
            data: Vec::new(),
            ends: Vec::new(),
        }
    }

    pub fn limits(&self) -> RequestLimits {
        self.limits
    }

    /// Whether the connection must still authenticate: Redis then refuses multibulk counts
    /// above [`UNAUTHENTICATED_COUNT_MAX`] and bulk lengths above
    /// [`UNAUTHENTICATED_BULK_MAX`]. Off by default.
    pub fn set_auth_required(&mut self, required: bool) {
        self.auth_required = required;
    }

    /// Bytes the parser holds (the capacity of its argument buffers), for memory
    /// accounting. They grow with the arguments that have arrived (up to about twice their
    /// bytes, as vectors grow, and the up to 1024 slots a count reserves), and go back to at
    /// most 16 KiB and 128 slots when the next request starts.
    pub fn held_bytes(&self) -> usize {
        self.data.capacity() + self.ends.capacity() * std::mem::size_of::<usize>()
    }

    /// Forgets a partly read request (for a caller that discards its buffer).
    pub fn reset(&mut self) {
        self.progress = Progress::default();
        self.data.clear();
        self.ends.clear();
    }

    /// Parses the request at the start of `buf` (see the type's documentation for the
    /// calling contract). Consumes nothing itself: the caller drops `used` bytes.
    pub fn parse(&mut self, buf: &[u8]) -> Result<Parsed<'_>, RequestError> {
        if self.progress.pos > buf.len() || self.progress.scanned > buf.len() {
            // The buffer shrank under a partly read request: the contract was broken.
            // Start the request again rather than index past the end.
            self.progress = Progress::default();
        }
        if self.progress.pos == 0 {
            self.start_request();
        }
        let max = self.limits.max_request_bytes;
        let view = &buf[..buf.len().min(max)];
        let step = match view.first() {
            None if buf.is_empty() => Ok(Step::NeedMore),
            None => Err(self.too_large()),
            Some(b'*') => self.multibulk(view),
            Some(_) => self.inline(view),
        };
        let step = match step {
            // The request needs a byte past the bound: it cannot fit.
            Ok(Step::NeedMore) if buf.len() >= max && !buf.is_empty() => Err(self.too_large()),
            other => other,
        };
        match step {
            Err(e) => {
                self.reset();
                Err(e)
            }
            Ok(Step::NeedMore) => Ok(Parsed::NeedMore),
            Ok(Step::Done(used)) => {
                self.progress = Progress::default();
                if self.ends.is_empty() {
                    return Ok(Parsed::Empty { used });
                }
                let args = Args {
                    data: &self.data,
                    ends: &self.ends,
                };
                Ok(Parsed::Command { used, args })
            }
        }
    }

    fn too_large(&self) -> RequestError {
        RequestError::RequestTooLarge {
            max_request_bytes: self.limits.max_request_bytes,
        }
    }

    /// Empties the argument buffers for a new request, giving back what a large one grew.
    fn start_request(&mut self) {
        self.data.clear();
        self.ends.clear();
        if self.data.capacity() > KEPT_DATA_BYTES {
            self.data.shrink_to(KEPT_DATA_BYTES);
        }
        if self.ends.capacity() > KEPT_ARGS {
            self.ends.shrink_to(KEPT_ARGS);
        }
    }

    /// Finds the terminator of the line that starts at `start` as Redis does, with `strchr`
    /// on a NUL-terminated buffer: the search also stops at a NUL byte, and a line is too
    /// long once more than [`INLINE_MAX_BYTES`] bytes are buffered from `start` without its
    /// terminator before any NUL.
    ///
    /// Redis looks at everything buffered, so a longer line that arrives in one read passes
    /// its search; here only the first [`INLINE_MAX_BYTES`] + 1 bytes are searched, which
    /// makes the outcome independent of how the bytes arrive (it is what Redis does when
    /// they arrive in reads of up to 64 KiB).
    fn find_line(&mut self, view: &[u8], start: usize, terminator: u8) -> Line {
        let window_end = view.len().min(start + INLINE_MAX_BYTES + 1);
        let from = self.progress.scanned.max(start).min(window_end);
        let hit = view[from..window_end]
            .iter()
            .position(|&b| b == terminator || b == 0)
            .map(|i| from + i);
        match hit {
            Some(at) if view[at] == terminator => return Line::Found(at),
            // A NUL: the search will stop here whatever arrives.
            Some(at) => self.progress.scanned = at,
            None => self.progress.scanned = window_end,
        }
        if view.len() - start > INLINE_MAX_BYTES {
            Line::TooLong
        } else {
            Line::NeedMore
        }
    }

    /// `processMultibulkBuffer`: the count line, then each `$` header and its bytes.
    fn multibulk(&mut self, view: &[u8]) -> Result<Step, RequestError> {
        if self.progress.pos == 0 {
            let Some(count) = self.count_line(view)? else {
                return Ok(Step::NeedMore);
            };
            if count <= 0 {
                return Ok(Step::Done(self.progress.pos));
            }
            let count = count as usize;
            let least = ARG_BYTES_MIN.saturating_mul(count);
            if self.progress.pos.saturating_add(least) > self.limits.max_request_bytes {
                return Err(self.too_large());
            }
            self.progress.remaining = count;
            self.ends.reserve(count.min(ARGS_RESERVED_MAX));
        }
        while self.progress.remaining > 0 {
            let len = match self.progress.bulk {
                Some(len) => len,
                None => match self.bulk_header(view)? {
                    Some(len) => len,
                    None => return Ok(Step::NeedMore),
                },
            };
            let start = self.progress.pos;
            // Within max_request_bytes, checked with the header.
            let end = start.saturating_add(len).saturating_add(2);
            if view.len() < end {
                return Ok(Step::NeedMore);
            }
            // The two bytes after the argument are skipped unread, as Redis skips them.
            self.data.extend_from_slice(&view[start..start + len]);
            self.ends.push(self.data.len());
            self.progress = Progress {
                pos: end,
                scanned: end,
                remaining: self.progress.remaining - 1,
                bulk: None,
            };
        }
        Ok(Step::Done(self.progress.pos))
    }

    /// The `*<count>\r\n` line: the count, or `None` until the line and one byte after its
    /// `\r` have arrived (that byte is skipped unread, as Redis skips it).
    fn count_line(&mut self, view: &[u8]) -> Result<Option<i64>, RequestError> {
        let cr = match self.find_line(view, 0, b'\r') {
            Line::Found(at) => at,
            Line::NeedMore => return Ok(None),
            Line::TooLong => return Err(RequestError::TooBigMultibulkCountString),
        };
        if cr + 2 > view.len() {
            return Ok(None);
        }
        let count = string2ll(&view[1..cr])
            .filter(|&n| n <= MULTIBULK_COUNT_MAX)
            .ok_or(RequestError::InvalidMultibulkLength)?;
        if count > UNAUTHENTICATED_COUNT_MAX && self.auth_required {
            return Err(RequestError::UnauthenticatedMultibulkLength);
        }
        self.progress.pos = cr + 2;
        self.progress.scanned = cr + 2;
        Ok(Some(count))
    }

    /// A `$<len>\r\n` header at `pos`: the length, or `None` until it has arrived.
    fn bulk_header(&mut self, view: &[u8]) -> Result<Option<usize>, RequestError> {
        let start = self.progress.pos;
        let cr = match self.find_line(view, start, b'\r') {
            Line::Found(at) => at,
            Line::NeedMore => return Ok(None),
            Line::TooLong => return Err(RequestError::TooBigBulkCountString),
        };
        if cr + 2 > view.len() {
            return Ok(None);
        }
        if view[start] != b'$' {
            return Err(RequestError::ExpectedDollar(view[start]));
        }
        let max_bulk = self.limits.max_bulk_bytes as u64;
        let len = string2ll(&view[start + 1..cr])
            .filter(|&n| n >= 0 && n as u64 <= max_bulk)
            .ok_or(RequestError::InvalidBulkLength)?;
        if len > UNAUTHENTICATED_BULK_MAX && self.auth_required {
            return Err(RequestError::UnauthenticatedBulkLength);
        }
        let len = len as usize;
        // This argument, and the fewest bytes the ones after it can take, must fit.
        let rest = ARG_BYTES_MIN.saturating_mul(self.progress.remaining - 1);
        let least_end = (cr + 2)
            .saturating_add(len)
            .saturating_add(2)
            .saturating_add(rest);
        if least_end > self.limits.max_request_bytes {
            return Err(self.too_large());
        }
        self.progress.pos = cr + 2;
        self.progress.scanned = cr + 2;
        self.progress.bulk = Some(len);
        Ok(Some(len))
    }

    /// `processInlineBuffer`: one line, ended by `\n` or `\r\n`, split by `sdssplitargs`.
    fn inline(&mut self, view: &[u8]) -> Result<Step, RequestError> {
        let newline = match self.find_line(view, 0, b'\n') {
            Line::Found(at) => at,
            Line::NeedMore => return Ok(Step::NeedMore),
            Line::TooLong => return Err(RequestError::TooBigInlineRequest),
        };
        let line = match &view[..newline] {
            [line @ .., b'\r'] => line,
            line => line,
        };
        split_args(line, &mut self.data, &mut self.ends)?;
        Ok(Step::Done(newline + 1))
    }
}

/// Redis's `string2ll`: an optional `-`, then `0` alone or a digit 1–9 and more digits, fewer
/// than 21 bytes in all, within `i64` (so no `+`, no spaces, no leading zeros, no `-0`).
pub fn string2ll(s: &[u8]) -> Option<i64> {
    if s.is_empty() || s.len() >= 21 {
        return None;
    }
    if s == b"0" {
        return Some(0);
    }
    let (negative, digits) = match s {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, s),
    };
    if !matches!(digits.first(), Some(b'1'..=b'9')) {
        return None;
    }
    let mut v: u64 = 0;
    for &c in digits {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    if negative {
        // -(2^63) is i64::MIN; anything larger overflows.
        (v <= 1 << 63).then(|| (v as i64).wrapping_neg())
    } else {
        i64::try_from(v).ok()
    }
}

/// C's `isspace` in the C locale.
fn is_c_space(c: u8) -> bool {
    c == b' ' || (b'\t'..=b'\r').contains(&c)
}

fn hex_value(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// Redis's `sdssplitargs` over `line` (which the caller has searched up to its first NUL,
/// so the end of the slice is the C string's end): each argument's bytes go to `data`, its
/// end to `ends`.
fn split_args(line: &[u8], data: &mut Vec<u8>, ends: &mut Vec<usize>) -> Result<(), RequestError> {
    let at = |i: usize| line.get(i).copied().unwrap_or(0);
    // An argument is never longer than its source.
    data.reserve(line.len());
    let mut p = 0;
    loop {
        while at(p) != 0 && is_c_space(at(p)) {
            p += 1;
        }
        if at(p) == 0 {
            return Ok(());
        }
        p = split_token(line, p, data).ok_or(RequestError::UnbalancedQuotes)?;
        ends.push(data.len());
    }
}

/// One `sdssplitargs` token starting at `p`: its bytes appended to `out`, and where the
/// search for the next one starts; `None` for unbalanced quotes.
fn split_token(line: &[u8], mut p: usize, out: &mut Vec<u8>) -> Option<usize> {
    let at = |i: usize| line.get(i).copied().unwrap_or(0);
    // A closing quote must be followed by a space or the end.
    let closes = |i: usize| at(i + 1) == 0 || is_c_space(at(i + 1));
    let (mut in_double, mut in_single, mut done) = (false, false, false);
    while !done {
        let c = at(p);
        if in_double {
            let hex = (at(p + 1) == b'x')
                .then(|| Some(hex_value(at(p + 2))? << 4 | hex_value(at(p + 3))?))
                .flatten();
            match (c, hex) {
                (b'\\', Some(byte)) => {
                    out.push(byte);
                    p += 3;
                }
                (b'\\', None) if at(p + 1) != 0 => {
                    p += 1;
                    out.push(match at(p) {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 0x08,
                        b'a' => 0x07,
                        other => other,
                    });
                }
                (b'"', _) if closes(p) => done = true,
                (b'"', _) | (0, _) => return None,
                _ => out.push(c),
            }
        } else if in_single {
            match c {
                b'\\' if at(p + 1) == b'\'' => {
                    p += 1;
                    out.push(b'\'');
                }
                b'\'' if closes(p) => done = true,
                b'\'' | 0 => return None,
                _ => out.push(c),
            }
        } else {
            match c {
                b' ' | b'\n' | b'\r' | b'\t' | 0 => done = true,
                b'"' => in_double = true,
                b'\'' => in_single = true,
                _ => out.push(c),
            }
        }
        if at(p) != 0 {
            p += 1;
        }
    }
    Some(p)
}

/// An argument upper-cased, to match against command and option names: on the stack when
/// it is no longer than [`Upper::INLINE`] bytes (every name is), on the heap otherwise.
pub struct Upper {
    inline: [u8; Upper::INLINE],
    len: usize,
    heap: Option<Vec<u8>>,
}

impl Upper {
    /// The longest argument upper-cased without an allocation.
    pub const INLINE: usize = 32;

    pub fn new(arg: &[u8]) -> Upper {
        let mut inline = [0u8; Upper::INLINE];
        if arg.len() > Upper::INLINE {
            return Upper {
                inline,
                len: 0,
                heap: Some(arg.to_ascii_uppercase()),
            };
        }
        for (to, from) in inline.iter_mut().zip(arg) {
            *to = from.to_ascii_uppercase();
        }
        Upper {
            inline,
            len: arg.len(),
            heap: None,
        }
    }

    pub fn as_slice(&self) -> &[u8] {
        match &self.heap {
            Some(heap) => heap,
            None => &self.inline[..self.len],
        }
    }
}

impl std::ops::Deref for Upper {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl<const N: usize> PartialEq<&[u8; N]> for Upper {
    fn eq(&self, other: &&[u8; N]) -> bool {
        self.as_slice() == other.as_slice()
    }
}
