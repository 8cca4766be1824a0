//! The Redis protocol (RESP2 and RESP3) layer, for Redis clients: a request parser that
//! accepts exactly what Redis 7.0 accepts and refuses the rest with Redis's own error texts,
//! and a reply encoder. Neither knows any command or connection.
//!
//! # Requests
//!
//! A request's first byte decides its form, as in Redis's `processInputBuffer`:
//!
//! - `*`: a **multibulk** request, `*<count>\r\n` then `count` arguments, each
//!   `$<len>\r\n<len bytes>\r\n`. Counts and lengths are read as Redis's `string2ll` reads
//!   them: an optional `-`, no `+`, no spaces, no leading zeros. A count of zero or less
//!   (`*0`, `*-1`) is an empty request, skipped without a reply.
//! - anything else: an **inline** command, one line ended by `\n` (a `\r` just before it is
//!   dropped), split as Redis's `sdssplitargs` splits it: blanks (space, `\t`, `\n`, `\v`,
//!   `\f`, `\r`) separate arguments; `"…"` takes the escapes `\xHH`, `\n`, `\r`, `\t`, `\b`,
//!   `\a` and `\<c>` for any other `c`; `'…'` takes `\'`; a closing quote must be followed by
//!   a blank or the end; a quote may open inside an argument (`a"b c"` is `ab c`). An empty
//!   or blank line is an empty request.
//!
//! Redis's quirks are kept, so that a client sees the same server: a count line ends at its
//! first `\r`, and the byte after it is skipped without being checked, as are the two bytes
//! after each argument; a NUL byte ends the search for a line's terminator (Redis searches
//! with `strchr`), so a line with a NUL before its terminator never completes and ends as a
//! "too big" error.
//!
//! # Limits and errors
//!
//! Each is a protocol error: the caller replies `-ERR ` and [`RequestError::message`], then
//! closes the connection.
//!
//! | bound | error text |
//! |---|---|
//! | count a number, at most `INT_MAX` ([`MULTIBULK_COUNT_MAX`]) | `Protocol error: invalid multibulk length` |
//! | a `\r` within 64 KiB + 1 of a `*` ([`INLINE_MAX_BYTES`]) | `Protocol error: too big mbulk count string` |
//! | each argument header starts with `$` | `Protocol error: expected '$', got 'X'` |
//! | length a number, `0 ..= max_bulk_bytes` (Redis's `proto-max-bulk-len`) | `Protocol error: invalid bulk length` |
//! | a `\r` within 64 KiB + 1 of an argument header | `Protocol error: too big bulk count string` |
//! | a `\n` within 64 KiB + 1 of an inline command's start | `Protocol error: too big inline request` |
//! | quotes of an inline command balanced | `Protocol error: unbalanced quotes in request` |
//! | before authentication, if required: count ≤ 10, length ≤ 16384 | `Protocol error: unauthenticated multibulk length` (`… bulk length`) |
//! | the whole request within `max_request_bytes` (evring's bound) | `Protocol error: request larger than N bytes` |
//!
//! Errors come in the order Redis meets them as it reads. Two departures from Redis, both so
//! that the outcome does not depend on how the bytes arrive: the 64 KiB line bound is
//! checked on the first 64 KiB + 1 bytes of the line (Redis checks what it has buffered, so
//! a longer inline line that arrives in one read passes); and `max_request_bytes` is evring's
//! own, refused as soon as a count or length shows the request cannot fit (each argument
//! after a header takes at least 6 bytes), or as soon as that many bytes are buffered
//! without the request being complete.
//!
//! # Invariants
//!
//! - [`RequestParser::parse`] never panics and never consumes: it returns
//!   [`Parsed::NeedMore`], or one request and the bytes it used, or an error.
//! - The outcome does not depend on how the bytes are split between calls: parsing a buffer
//!   whole or fed one byte at a time gives the same requests and the same error (unit tests,
//!   and the `resp_request` fuzz target).
//! - Nothing is allocated from an untrusted count before its bytes arrive: a count reserves
//!   at most 1024 argument slots, an argument's bytes are copied once they have all arrived,
//!   and a `$` length allocates nothing. What a request holds is bounded by
//!   `max_request_bytes`; between requests the parser keeps at most 16 KiB and 128 slots.
//!
//! # Replies
//!
//! [`Reply`] writes into the connection's output buffer in its [`RespVersion`] (RESP2 until
//! `HELLO 3`), as Redis 7.0's `addReply*` functions do:
//!
//! | value | RESP3 | RESP2 |
//! |---|---|---|
//! | null | `_` | `$-1` (a null array: `*-1`) |
//! | map of n | `%n` | `*2n` |
//! | set of n | `~n` | `*n` |
//! | push of n | `>n` | `*n` |
//! | double | `,` and `%.17g` | bulk string of `%.17g` |
//! | boolean | `#t` / `#f` | `:1` / `:0` |
//! | verbatim | `=` and `txt:` | bulk string |
//!
//! Simple strings, errors, integers, bulk strings and arrays are the same in both. An error
//! or simple string never carries a `\r` or `\n` (they become spaces).

pub mod rdb;
mod reply;
mod request;

#[cfg(test)]
mod rdb_tests;
#[cfg(test)]
mod reply_tests;
#[cfg(test)]
mod request_tests;

pub use reply::{format_g17, Reply, RespVersion};
pub use request::{
    string2ll, Args, ArgsIter, Parsed, RequestError, RequestLimits, RequestParser, Upper,
    INLINE_MAX_BYTES, MAX_BULK_BYTES_DEFAULT, MULTIBULK_COUNT_MAX, UNAUTHENTICATED_BULK_MAX,
    UNAUTHENTICATED_COUNT_MAX,
};
