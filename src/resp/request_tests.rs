//! The request parser against Redis 7.0's behaviour: framing, `sdssplitargs` quoting, every
//! error text, the limits, and independence from how the bytes are split.

use super::{
    string2ll, Parsed, RequestError, RequestLimits, RequestParser, Upper, INLINE_MAX_BYTES,
    MAX_BULK_BYTES_DEFAULT,
};

/// What parsing produced, owned, for comparisons.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Event {
    Command(Vec<Vec<u8>>, usize),
    Empty(usize),
    Error(RequestError),
}

const ROOMY: RequestLimits = RequestLimits {
    max_bulk_bytes: MAX_BULK_BYTES_DEFAULT,
    max_request_bytes: usize::MAX,
};

fn limits(max_bulk_bytes: usize, max_request_bytes: usize) -> RequestLimits {
    RequestLimits {
        max_bulk_bytes,
        max_request_bytes,
    }
}

/// One call on `buf` with a fresh parser, as an event (`None` for `NeedMore`).
fn once(l: RequestLimits, buf: &[u8]) -> Option<Event> {
    to_event(RequestParser::new(l).parse(buf))
}

fn to_event(r: Result<Parsed<'_>, RequestError>) -> Option<Event> {
    match r {
        Ok(Parsed::NeedMore) => None,
        Ok(Parsed::Empty { used }) => Some(Event::Empty(used)),
        Ok(Parsed::Command { used, args }) => Some(Event::Command(args.to_vec(), used)),
        Err(e) => Some(Event::Error(e)),
    }
}

/// Every request in `buf`, parsed from the buffer whole, up to an error or an incomplete
/// request.
fn whole(l: RequestLimits, buf: &[u8]) -> Vec<Event> {
    let mut parser = RequestParser::new(l);
    let mut events = Vec::new();
    let mut at = 0;
    while let Some(e) = to_event(parser.parse(&buf[at..])) {
        match &e {
            Event::Command(_, used) | Event::Empty(used) => at += used,
            Event::Error(_) => {
                events.push(e);
                break;
            }
        }
        events.push(e);
    }
    events
}

/// The same, with the bytes arriving in pieces of the given sizes (cycled), each request's
/// bytes dropped from the front of the pending buffer once parsed.
fn in_pieces(l: RequestLimits, buf: &[u8], sizes: &[usize]) -> Vec<Event> {
    let mut parser = RequestParser::new(l);
    let mut events = Vec::new();
    let mut pending = Vec::new();
    let mut fed = 0;
    for &size in sizes.iter().cycle() {
        if fed == buf.len() {
            break;
        }
        let end = (fed + size.max(1)).min(buf.len());
        pending.extend_from_slice(&buf[fed..end]);
        fed = end;
        while let Some(e) = to_event(parser.parse(&pending)) {
            match &e {
                Event::Command(_, used) | Event::Empty(used) => drop(pending.drain(..*used)),
                Event::Error(_) => {
                    events.push(e);
                    return events;
                }
            }
            events.push(e);
        }
    }
    events
}

fn bytewise(l: RequestLimits, buf: &[u8]) -> Vec<Event> {
    in_pieces(l, buf, &[1])
}

/// Whole, byte by byte, and split once at every point: all the same.
fn assert_split_independent(l: RequestLimits, buf: &[u8]) -> Vec<Event> {
    let expected = whole(l, buf);
    assert_eq!(
        bytewise(l, buf),
        expected,
        "byte by byte: {:?}",
        buf.escape_ascii()
    );
    for k in 0..=buf.len() {
        assert_eq!(
            in_pieces(l, buf, &[k, buf.len()]),
            expected,
            "split at {k}: {:?}",
            buf.escape_ascii()
        );
    }
    expected
}

fn cmd(args: &[&[u8]], used: usize) -> Event {
    Event::Command(args.iter().map(|a| a.to_vec()).collect(), used)
}

/// The arguments of the one inline command `line` (given without its newline).
fn inline_args(line: &[u8]) -> Result<Vec<Vec<u8>>, RequestError> {
    let mut buf = line.to_vec();
    buf.extend_from_slice(b"\r\n");
    match once(ROOMY, &buf) {
        Some(Event::Command(args, used)) => {
            assert_eq!(used, buf.len());
            Ok(args)
        }
        Some(Event::Empty(_)) => Ok(Vec::new()),
        Some(Event::Error(e)) => Err(e),
        None => panic!("inline line incomplete"),
    }
}

fn owned(args: &[&[u8]]) -> Vec<Vec<u8>> {
    args.iter().map(|a| a.to_vec()).collect()
}

const SET: &[u8] = b"*3\r\n$3\r\nSET\r\n$1\r\nx\r\n$3\r\nfoo\r\n";

#[test]
fn a_multibulk_request_at_every_split_point() {
    let events = assert_split_independent(ROOMY, SET);
    assert_eq!(events, vec![cmd(&[b"SET", b"x", b"foo"], SET.len())]);
    // Every strict prefix needs more, with a fresh parser and with one resuming.
    let mut resuming = RequestParser::new(ROOMY);
    for k in 0..SET.len() {
        assert_eq!(once(ROOMY, &SET[..k]), None, "prefix {k}");
        assert_eq!(
            resuming.parse(&SET[..k]),
            Ok(Parsed::NeedMore),
            "prefix {k}"
        );
    }
    let event = to_event(resuming.parse(SET));
    assert_eq!(event, Some(cmd(&[b"SET", b"x", b"foo"], SET.len())));
}

#[test]
fn arguments_are_binary_and_may_be_empty() {
    let buf = b"*3\r\n$4\r\n\r\n\0\xff\r\n$0\r\n\r\n$2\r\n*1\r\n";
    let events = assert_split_independent(ROOMY, buf);
    assert_eq!(events, vec![cmd(&[b"\r\n\0\xff", b"", b"*1"], buf.len())]);
}

#[test]
fn pipelined_requests_of_both_forms_in_one_buffer() {
    let mut buf = Vec::new();
    buf.extend_from_slice(SET);
    buf.extend_from_slice(b"PING\r\n");
    buf.extend_from_slice(b"*0\r\n");
    buf.extend_from_slice(b"*-1\r\n");
    buf.extend_from_slice(b"\r\n");
    buf.extend_from_slice(b"get x\n");
    buf.extend_from_slice(b"   \t \r\n");
    buf.extend_from_slice(b"*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\n");
    buf.extend_from_slice(b"*1\r\n$4\r\nPI"); // incomplete at the end
    let events = assert_split_independent(ROOMY, &buf);
    assert_eq!(
        events,
        vec![
            cmd(&[b"SET", b"x", b"foo"], SET.len()),
            cmd(&[b"PING"], 6),
            Event::Empty(4),
            Event::Empty(5),
            Event::Empty(2),
            cmd(&[b"get", b"x"], 6),
            Event::Empty(7),
            cmd(&[b"ECHO", b"hi"], 22),
        ]
    );
}

#[test]
fn args_accessors() {
    let mut parser = RequestParser::new(ROOMY);
    let Ok(Parsed::Command { used, args }) = parser.parse(SET) else {
        panic!("a command");
    };
    assert_eq!(used, SET.len());
    assert_eq!(args.len(), 3);
    assert!(!args.is_empty());
    assert_eq!(args.get(0), Some(&b"SET"[..]));
    assert_eq!(args.get(2), Some(&b"foo"[..]));
    assert_eq!(args.get(3), None);
    assert_eq!(args.iter().len(), 3);
    let joined: Vec<&[u8]> = args.into_iter().collect();
    assert_eq!(joined, [&b"SET"[..], b"x", b"foo"]);
    assert_eq!(format!("{args:?}"), r#"["SET", "x", "foo"]"#);
}

#[test]
fn inline_lines_end_at_newline_with_an_optional_carriage_return() {
    assert_eq!(once(ROOMY, b"PING\r\n"), Some(cmd(&[b"PING"], 6)));
    assert_eq!(once(ROOMY, b"PING\n"), Some(cmd(&[b"PING"], 5)));
    assert_eq!(once(ROOMY, b"PING"), None);
    assert_eq!(once(ROOMY, b"PING\r"), None);
    // Only the \r right before the \n is dropped; another one separates arguments.
    assert_eq!(once(ROOMY, b"a\rb\r\r\n"), Some(cmd(&[b"a", b"b"], 6)));
    // Empty lines, "Handle an empty query" of Redis's tests.
    assert_eq!(once(ROOMY, b"\r\n"), Some(Event::Empty(2)));
    assert_eq!(once(ROOMY, b"\n"), Some(Event::Empty(1)));
    assert_eq!(once(ROOMY, b"\r\r\n"), Some(Event::Empty(3)));
    assert_eq!(once(ROOMY, b" \x0b\x0c\t\r\n"), Some(Event::Empty(6)));
}

#[test]
fn inline_splitting_matches_sdssplitargs() {
    let cases: &[(&[u8], &[&[u8]])] = &[
        (b"  set  a   b ", &[b"set", b"a", b"b"]),
        (b"set \"a b\" 'c d'", &[b"set", b"a b", b"c d"]),
        (b"\"\"", &[b""]),
        (b"''", &[b""]),
        (b"\"\\x41\\x4a\\x4B\\x00\\xff\"", &[b"AJK\0\xff"]),
        // \x without two hex digits: the backslash escapes the x.
        (b"\"\\xZZ\\x4\"", &[b"xZZx4"]),
        (b"\"\\n\\r\\t\\b\\a\\q\\\\\\\"\"", &[b"\n\r\t\x08\x07q\\\""]),
        (b"'it\\'s'", &[b"it's"]),
        (b"'a\\nb\\\\ c'", &[b"a\\nb\\\\ c"]),
        (b"'say \"hi\"'", &[b"say \"hi\""]),
        (b"\"it's\"", &[b"it's"]),
        // A quote may open inside an argument.
        (b"a\"b c\"", &[b"ab c"]),
        (b"a'b c' d", &[b"ab c", b"d"]),
        // Any blank may follow a closing quote; \v and \f do not end an unquoted argument.
        (b"\"a\"\tb", &[b"a", b"b"]),
        (b"\"a\"\x0bb", &[b"a", b"b"]),
        (b"'a'\x0cb", &[b"a", b"b"]),
        (b"a\x0bb \x0b c", &[b"a\x0bb", b"c"]),
        (b"\xc3\xa9t\xc3\xa9 \xff", &[b"\xc3\xa9t\xc3\xa9", b"\xff"]),
        (b"a\\nb", &[b"a\\nb"]),
    ];
    for (line, expected) in cases {
        assert_eq!(
            inline_args(line),
            Ok(owned(expected)),
            "{}",
            line.escape_ascii()
        );
    }
}

#[test]
fn unbalanced_quotes_are_refused() {
    let cases: &[&[u8]] = &[
        b"\"foo",
        b"'foo",
        b"\"foo\"bar",
        b"'foo'bar",
        b"\"foo\\\"",
        b"\"foo\\",
        b"a \"b",
        b"'it\\'",
        // "Unbalanced number of quotes" of Redis's tests.
        b"set \"\"\"test-key\"\"\" test-value",
    ];
    for line in cases {
        let got = inline_args(line);
        assert_eq!(
            got,
            Err(RequestError::UnbalancedQuotes),
            "{}",
            line.escape_ascii()
        );
    }
    let buf = b"set \"\"\"test-key\"\"\" test-value\r\nping\r\n";
    let events = assert_split_independent(ROOMY, buf);
    assert_eq!(events, vec![Event::Error(RequestError::UnbalancedQuotes)]);
}

#[test]
fn counts_are_read_as_string2ll_reads_them() {
    assert_eq!(string2ll(b"0"), Some(0));
    assert_eq!(string2ll(b"-1"), Some(-1));
    assert_eq!(string2ll(b"9223372036854775807"), Some(i64::MAX));
    assert_eq!(string2ll(b"-9223372036854775808"), Some(i64::MIN));
    for bad in [
        &b""[..],
        b"-",
        b"-0",
        b"01",
        b"+1",
        b" 1",
        b"1 ",
        b"1a",
        b"9223372036854775808",
        b"-9223372036854775809",
        b"18446744073709551616",
        b"000000000000000000001",
    ] {
        assert_eq!(string2ll(bad), None, "{}", bad.escape_ascii());
    }
}

#[test]
fn empty_multibulk_requests_are_skipped() {
    // "Negative multibulk length" of Redis's tests.
    assert_eq!(once(ROOMY, b"*-10\r\n"), Some(Event::Empty(6)));
    assert_eq!(once(ROOMY, b"*0\r\n"), Some(Event::Empty(4)));
    let min = b"*-9223372036854775808\r\n";
    assert_eq!(once(ROOMY, min), Some(Event::Empty(min.len())));
}

#[test]
fn multibulk_count_errors() {
    let invalid = Some(Event::Error(RequestError::InvalidMultibulkLength));
    // "Out of range multibulk length" of Redis's tests.
    assert_eq!(once(ROOMY, b"*3000000000\r\n"), invalid);
    assert_eq!(once(ROOMY, b"*2147483648\r\n"), invalid);
    assert_eq!(once(ROOMY, b"*2147483647\r\n"), None);
    for bad in [
        &b"*\r\n"[..],
        b"*01\r\n",
        b"*+1\r\n",
        b"* 1\r\n",
        b"*-0\r\n",
        b"*x\r\n",
    ] {
        assert_eq!(once(ROOMY, bad), invalid, "{}", bad.escape_ascii());
    }
    assert_eq!(once(ROOMY, b"*-9223372036854775809\r\n"), invalid);
    // The count line ends at its first \r; a lone \n is part of it.
    assert_eq!(once(ROOMY, b"*1\n$1\r\na\r\n"), invalid);
    // The line needs one byte after its \r, which is not checked.
    assert_eq!(once(ROOMY, b"*1\r"), None);
    let quirk = b"*1\rX$1\r\naYZ";
    assert_eq!(once(ROOMY, quirk), Some(cmd(&[b"a"], quirk.len())));
}

#[test]
fn bulk_header_errors() {
    let prefix = b"*3\r\n$3\r\nSET\r\n$1\r\nx\r\n";
    let with = |tail: &[u8]| [&prefix[..], tail].concat();
    let invalid = vec![Event::Error(RequestError::InvalidBulkLength)];
    // The tests of Redis's tests/unit/protocol.tcl.
    let got_f = vec![Event::Error(RequestError::ExpectedDollar(b'f'))];
    assert_eq!(assert_split_independent(ROOMY, &with(b"fooz\r\n")), got_f);
    assert_eq!(assert_split_independent(ROOMY, &with(b"$-10\r\n")), invalid);
    assert_eq!(
        assert_split_independent(ROOMY, &with(b"$2000000000\r\n")),
        invalid
    );
    assert_eq!(
        assert_split_independent(ROOMY, &with(b"$blabla\r\n")),
        invalid
    );
    assert_eq!(assert_split_independent(ROOMY, b"*1\r\nfoo\r\n"), got_f);
    // The header is checked only once its line and the byte after its \r are in.
    assert_eq!(once(ROOMY, b"*1\r\nfoo"), None);
    assert_eq!(once(ROOMY, b"*1\r\nfoo\r"), None);
    // A \r or \n where the $ should be.
    let cr = Some(Event::Error(RequestError::ExpectedDollar(b'\r')));
    assert_eq!(once(ROOMY, b"*1\r\n\r\n"), cr);
    let lf = Some(Event::Error(RequestError::ExpectedDollar(b'\n')));
    assert_eq!(once(ROOMY, b"*1\r\n\n$1\r\n"), lf);
    // proto-max-bulk-len is inclusive.
    let l = limits(4, usize::MAX);
    let four = b"*1\r\n$4\r\nabcd\r\n";
    assert_eq!(once(l, four), Some(cmd(&[b"abcd"], four.len())));
    assert_eq!(once(l, b"*1\r\n$5\r\n"), Some(invalid[0].clone()));
    assert_eq!(once(ROOMY, b"*1\r\n$536870912\r\n"), None);
    assert_eq!(
        once(ROOMY, b"*1\r\n$536870913\r\n"),
        Some(invalid[0].clone())
    );
    // The two bytes after an argument are skipped unread.
    let quirk = b"*2\r\n$1\r\naXY$1\r\nbZW";
    assert_eq!(once(ROOMY, quirk), Some(cmd(&[b"a", b"b"], quirk.len())));
}

#[test]
fn lines_are_bounded_at_64_kib() {
    let max = INLINE_MAX_BYTES;
    let long = |first: &[u8], fill: u8, n: usize, tail: &[u8]| {
        let mut v = first.to_vec();
        v.resize(first.len() + n, fill);
        v.extend_from_slice(tail);
        v
    };
    let too_big_mbulk = Some(Event::Error(RequestError::TooBigMultibulkCountString));
    assert_eq!(once(ROOMY, &long(b"*", b'1', max - 1, b"")), None);
    assert_eq!(once(ROOMY, &long(b"*", b'1', max, b"")), too_big_mbulk);
    // A \r at the last place searched still ends the line.
    let at_edge = long(b"*", b'1', max - 1, b"\r");
    assert_eq!(once(ROOMY, &at_edge), None);
    let invalid = Some(Event::Error(RequestError::InvalidMultibulkLength));
    assert_eq!(once(ROOMY, &long(b"*", b'1', max - 1, b"\r\n")), invalid);
    assert_eq!(once(ROOMY, &long(b"*", b'1', max, b"\r\n")), too_big_mbulk);

    let too_big_bulk = Some(Event::Error(RequestError::TooBigBulkCountString));
    assert_eq!(once(ROOMY, &long(b"*1\r\n$", b'1', max - 1, b"")), None);
    assert_eq!(once(ROOMY, &long(b"*1\r\n$", b'1', max, b"")), too_big_bulk);

    let too_big_inline = Some(Event::Error(RequestError::TooBigInlineRequest));
    assert_eq!(once(ROOMY, &long(b"", b'a', max, b"")), None);
    assert_eq!(once(ROOMY, &long(b"", b'a', max + 1, b"")), too_big_inline);
    let a = vec![b'a'; max];
    assert_eq!(
        once(ROOMY, &long(b"", b'a', max, b"\n")),
        Some(cmd(&[&a], max + 1))
    );
    // Longer, even when it arrives whole (where Redis would take it).
    assert_eq!(
        once(ROOMY, &long(b"", b'a', max + 1, b"\n")),
        too_big_inline
    );
}

#[test]
fn a_nul_byte_ends_the_search_for_a_line() {
    // "Protocol desync regression test" of Redis's tests: a NUL, then bytes without end.
    let max = INLINE_MAX_BYTES;
    for (start, error) in [
        (&b"\x00"[..], RequestError::TooBigInlineRequest),
        (b"*\x00", RequestError::TooBigMultibulkCountString),
        (b"$\x00", RequestError::TooBigInlineRequest),
        (b"*1\r\n$\x00", RequestError::TooBigBulkCountString),
    ] {
        let mut buf = start.to_vec();
        while buf.len() <= max + 4 {
            buf.extend_from_slice(b"payload\r\n");
        }
        assert_eq!(whole(ROOMY, &buf), vec![Event::Error(error)]);
        assert_eq!(bytewise(ROOMY, &buf), vec![Event::Error(error)]);
    }
    assert_eq!(once(ROOMY, b"PI\x00NG\r\n"), None);
    assert_eq!(once(ROOMY, b"*1\x00\r\n$1\r\na\r\n"), None);
}

#[test]
fn authentication_bounds_when_required() {
    let mut parser = RequestParser::new(ROOMY);
    parser.set_auth_required(true);
    assert_eq!(
        parser.parse(b"*11\r\n"),
        Err(RequestError::UnauthenticatedMultibulkLength)
    );
    assert_eq!(parser.parse(b"*10\r\n"), Ok(Parsed::NeedMore));
    parser.reset();
    assert_eq!(
        parser.parse(b"*1\r\n$16385\r\n"),
        Err(RequestError::UnauthenticatedBulkLength)
    );
    assert_eq!(parser.parse(b"*1\r\n$16384\r\n"), Ok(Parsed::NeedMore));
    parser.reset();
    parser.set_auth_required(false);
    assert_eq!(parser.parse(b"*1\r\n$16385\r\n"), Ok(Parsed::NeedMore));
}

#[test]
fn the_request_bound_is_exact_and_early() {
    let l = limits(MAX_BULK_BYTES_DEFAULT, SET.len());
    assert_eq!(
        assert_split_independent(l, SET),
        vec![cmd(&[b"SET", b"x", b"foo"], SET.len())]
    );
    let too_large = Event::Error(RequestError::RequestTooLarge {
        max_request_bytes: SET.len() - 1,
    });
    let l = limits(MAX_BULK_BYTES_DEFAULT, SET.len() - 1);
    assert_eq!(assert_split_independent(l, SET), vec![too_large.clone()]);
    // Known from the last header already.
    assert_eq!(once(l, &SET[..SET.len() - 5]), Some(too_large.clone()));

    let l = limits(MAX_BULK_BYTES_DEFAULT, 1024);
    let big = Event::Error(RequestError::RequestTooLarge {
        max_request_bytes: 1024,
    });
    // A count whose arguments cannot fit, before any arrives (6 bytes each at least).
    assert_eq!(once(l, b"*169\r\n"), None);
    assert_eq!(once(l, b"*170\r\n"), Some(big.clone()));
    // A length that cannot fit, before its bytes arrive.
    assert_eq!(once(l, b"*1\r\n$1011\r\n"), None);
    assert_eq!(once(l, b"*1\r\n$1012\r\n"), Some(big.clone()));
    assert_eq!(once(l, b"*2\r\n$1005\r\n"), None);
    assert_eq!(once(l, b"*2\r\n$1006\r\n"), Some(big.clone()));
    // A line that does not end within the bound.
    let mut inline = vec![b'a'; 1023];
    assert_eq!(once(l, &inline), None);
    inline.push(b'a');
    assert_eq!(once(l, &inline), Some(big));
    let e = RequestError::RequestTooLarge {
        max_request_bytes: 1024,
    };
    assert_eq!(
        e.message(),
        b"Protocol error: request larger than 1024 bytes"
    );
    // A bound of zero refuses any byte, and takes an empty buffer.
    let none = limits(MAX_BULK_BYTES_DEFAULT, 0);
    assert_eq!(once(none, b""), None);
    assert!(matches!(once(none, b"P"), Some(Event::Error(_))));
}

#[test]
fn error_messages_are_redis_texts() {
    let cases: &[(RequestError, &[u8])] = &[
        (
            RequestError::InvalidMultibulkLength,
            b"Protocol error: invalid multibulk length",
        ),
        (
            RequestError::UnauthenticatedMultibulkLength,
            b"Protocol error: unauthenticated multibulk length",
        ),
        (
            RequestError::TooBigMultibulkCountString,
            b"Protocol error: too big mbulk count string",
        ),
        (
            RequestError::ExpectedDollar(b'f'),
            b"Protocol error: expected '$', got 'f'",
        ),
        (
            RequestError::ExpectedDollar(b'\r'),
            b"Protocol error: expected '$', got ' '",
        ),
        (
            RequestError::ExpectedDollar(0xff),
            b"Protocol error: expected '$', got '\xff'",
        ),
        (
            RequestError::InvalidBulkLength,
            b"Protocol error: invalid bulk length",
        ),
        (
            RequestError::UnauthenticatedBulkLength,
            b"Protocol error: unauthenticated bulk length",
        ),
        (
            RequestError::TooBigBulkCountString,
            b"Protocol error: too big bulk count string",
        ),
        (
            RequestError::TooBigInlineRequest,
            b"Protocol error: too big inline request",
        ),
        (
            RequestError::UnbalancedQuotes,
            b"Protocol error: unbalanced quotes in request",
        ),
    ];
    for (error, text) in cases {
        assert_eq!(error.message(), *text, "{error:?}");
    }
    assert_eq!(
        RequestError::ExpectedDollar(0xff).to_string(),
        "Protocol error: expected '$', got '\\xff'"
    );
}

#[test]
fn untrusted_counts_allocate_nothing_ahead() {
    let mut parser = RequestParser::new(ROOMY);
    assert_eq!(parser.parse(b"*1000000\r\n"), Ok(Parsed::NeedMore));
    assert!(parser.held_bytes() <= 1024 * 8, "{}", parser.held_bytes());
    parser.reset();
    assert_eq!(parser.parse(b"*1\r\n$536870912\r\n"), Ok(Parsed::NeedMore));
    assert!(parser.held_bytes() <= 1024 * 8, "{}", parser.held_bytes());
}

#[test]
fn a_large_request_is_given_back_at_the_next() {
    let mut parser = RequestParser::new(ROOMY);
    let mut buf = b"*2\r\n$3\r\nSET\r\n$1048576\r\n".to_vec();
    buf.resize(buf.len() + 1_048_576, b'v');
    buf.extend_from_slice(b"\r\n");
    let Ok(Parsed::Command { args, .. }) = parser.parse(&buf) else {
        panic!("a command");
    };
    assert_eq!(args.get(1).map(<[u8]>::len), Some(1_048_576));
    assert!(parser.held_bytes() >= 1_048_576);
    assert!(matches!(
        parser.parse(b"PING\r\n"),
        Ok(Parsed::Command { .. })
    ));
    assert!(
        parser.held_bytes() <= 16 * 1024 + 128 * 8,
        "{}",
        parser.held_bytes()
    );
}

#[test]
fn errors_and_broken_contracts_leave_a_usable_parser() {
    let mut parser = RequestParser::new(ROOMY);
    assert_eq!(
        parser.parse(b"*x\r\n"),
        Err(RequestError::InvalidMultibulkLength)
    );
    assert!(matches!(parser.parse(SET), Ok(Parsed::Command { .. })));
    // A buffer shorter than the one before: the request starts again.
    assert_eq!(parser.parse(&SET[..20]), Ok(Parsed::NeedMore));
    assert_eq!(parser.parse(&SET[..3]), Ok(Parsed::NeedMore));
    let event = to_event(parser.parse(SET));
    assert_eq!(event, Some(cmd(&[b"SET", b"x", b"foo"], SET.len())));
}

/// xorshift64*: deterministic pseudo-random numbers for the split test.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A random mix of well-formed and damaged pieces of requests.
fn random_stream(rng: &mut Rng) -> Vec<u8> {
    const PIECES: &[&[u8]] = &[
        b"*",
        b"$",
        b"\r\n",
        b"\r",
        b"\n",
        b"1",
        b"2",
        b"3",
        b"0",
        b"-1",
        b"10",
        b"\0",
        b"x",
        b"SET",
        b" ",
        b"\"",
        b"'",
        b"\\",
        b"\\x4",
        b"\\x41",
        b"*1\r\n$1\r\na\r\n",
        b"*0\r\n",
        b"PING\r\n",
        b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n",
        b"\t",
        b"\x0b",
        b"\xff",
    ];
    let mut v = Vec::new();
    for _ in 0..rng.below(24) {
        v.extend_from_slice(PIECES[rng.below(PIECES.len())]);
    }
    v
}

#[test]
fn random_streams_parse_the_same_however_split() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..4000 {
        let buf = random_stream(&mut rng);
        let l = limits(rng.below(8), 8 + rng.below(64));
        let expected = whole(l, &buf);
        assert_eq!(bytewise(l, &buf), expected, "{}", buf.escape_ascii());
        let sizes = [1 + rng.below(5), 1 + rng.below(9), 1 + rng.below(3)];
        let got = in_pieces(l, &buf, &sizes);
        assert_eq!(got, expected, "{} in {sizes:?}", buf.escape_ascii());
    }
}

#[test]
fn upper_cases_short_arguments_on_the_stack_and_long_ones_on_the_heap() {
    let short = Upper::new(b"xAdd");
    assert_eq!(short.as_slice(), b"XADD");
    assert!(short == b"XADD");
    let exact = [b'a'; Upper::INLINE];
    assert_eq!(Upper::new(&exact).as_slice(), &[b'A'; Upper::INLINE][..]);
    let long = [b'z'; Upper::INLINE + 1];
    let upper = Upper::new(&long);
    assert_eq!(upper.len(), Upper::INLINE + 1, "nothing cut off");
    assert!(upper.iter().all(|&b| b == b'Z'));
    assert_eq!(Upper::new(b"").as_slice(), b"");
    assert_eq!(Upper::new("é-x".as_bytes()).as_slice(), "é-X".as_bytes());
}
