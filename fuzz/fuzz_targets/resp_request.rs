//! Any bytes as RESP requests (multibulk and inline): no panic; the requests and the error
//! found in the buffer whole are the ones found when it arrives one byte at a time; and each
//! command, written back as a multibulk request, parses to the same arguments.
#![no_main]

use evring::resp::{Parsed, RequestError, RequestLimits, RequestParser, MAX_BULK_BYTES_DEFAULT};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, PartialEq, Eq)]
enum Event {
    Command(Vec<Vec<u8>>, usize),
    Empty(usize),
    Error(RequestError),
}

fn step(parser: &mut RequestParser, buf: &[u8]) -> Option<Event> {
    match parser.parse(buf) {
        Ok(Parsed::NeedMore) => None,
        Ok(Parsed::Empty { used }) => Some(Event::Empty(used)),
        Ok(Parsed::Command { used, args }) => {
            assert!(!args.is_empty() && used <= buf.len());
            Some(Event::Command(args.to_vec(), used))
        }
        Err(e) => Some(Event::Error(e)),
    }
}

/// Every request in `buf` parsed whole, up to an error or an incomplete request.
fn whole(limits: RequestLimits, buf: &[u8]) -> Vec<Event> {
    let mut parser = RequestParser::new(limits);
    let mut events = Vec::new();
    let mut at = 0;
    while let Some(e) = step(&mut parser, &buf[at..]) {
        let stop = matches!(e, Event::Error(_));
        if let Event::Command(_, used) | Event::Empty(used) = e {
            assert!(used > 0);
            at += used;
        }
        events.push(e);
        if stop {
            break;
        }
    }
    events
}

/// The same, the bytes arriving one at a time and each request dropped once parsed.
fn bytewise(limits: RequestLimits, buf: &[u8]) -> Vec<Event> {
    let mut parser = RequestParser::new(limits);
    let mut events = Vec::new();
    let mut pending = Vec::new();
    for &b in buf {
        pending.push(b);
        while let Some(e) = step(&mut parser, &pending) {
            let stop = matches!(e, Event::Error(_));
            if let Event::Command(_, used) | Event::Empty(used) = e {
                pending.drain(..used);
            }
            events.push(e);
            if stop {
                return events;
            }
        }
    }
    events
}

/// `args` as a multibulk request.
fn multibulk(args: &[Vec<u8>]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks the limits: Redis's defaults and no request bound, or bounds small
    // enough for the input to reach.
    let Some((&pick, buf)) = data.split_first() else {
        return;
    };
    let (max_bulk_bytes, max_request_bytes) = match pick % 4 {
        0 => (MAX_BULK_BYTES_DEFAULT, usize::MAX),
        1 => (16, 64),
        2 => (usize::from(pick / 4), 256),
        _ => (MAX_BULK_BYTES_DEFAULT, 1 + usize::from(pick) * 4),
    };
    let limits = RequestLimits {
        max_bulk_bytes,
        max_request_bytes,
    };
    let expected = whole(limits, buf);
    assert_eq!(bytewise(limits, buf), expected);
    let roomy = RequestLimits {
        max_bulk_bytes: MAX_BULK_BYTES_DEFAULT,
        max_request_bytes: usize::MAX,
    };
    for e in &expected {
        if let Event::Command(args, _) = e {
            let again = multibulk(args);
            let got = step(&mut RequestParser::new(roomy), &again);
            assert_eq!(got, Some(Event::Command(args.clone(), again.len())));
        }
    }
});
