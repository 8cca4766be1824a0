//! The stream `DUMP` decoder against payloads Redis wrote (Redis 5's from the 7.0.15 test
//! suite, Redis 7.0.15's made for these tests) and crafted ones: footer, types, every
//! refusal, bounds on lengths, and no panic on any damaged payload.

use super::rdb::{
    crc64, decode_stream_dump, lzf_decompress, DumpError, DumpedConsumer, DumpedGroup,
    DumpedPending, DumpedStream, RDB_VERSION,
};
use crate::protocol::StreamId;
use crate::stream::StreamCounters;

/// From Redis 7.0.15's `tests/unit/type/stream-cgroups.tcl` ("Loading from legacy (Redis <=
/// v6.2.x, rdb_ver < 10) persistence"), made on Redis 5 by `XADD x 1-0 data a` … `XADD x 6-0
/// data f`, `XDEL x 3-0`, `XGROUP CREATE x g1 0`, `XGROUP CREATE x g2 0`, `XREADGROUP GROUP g1
/// c11 COUNT 4 STREAMS x >`, `XTRIM x MAXLEN = 2`. Type 15, RDB version 9, the node LZF'd.
const DUMP_REDIS_5: &[u8] = b"\x0F\x01\x10\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\xC3\x40\x4A\x40\x57\x16\x57\x00\x00\x00\x23\x00\x02\x01\x04\x01\x01\x01\x84\x64\x61\x74\x61\x05\x00\x01\x03\x01\x00\x20\x01\x03\x81\x61\x02\x04\x20\x0A\x00\x01\x40\x0A\x00\x62\x60\x0A\x00\x02\x40\x0A\x00\x63\x60\x0A\x40\x22\x01\x81\x64\x20\x0A\x40\x39\x20\x0A\x00\x65\x60\x0A\x00\x05\x40\x0A\x00\x66\x20\x0A\x00\xFF\x02\x06\x00\x02\x02\x67\x31\x05\x00\x04\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x3E\xF7\x83\x43\x7A\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00\x00\x3E\xF7\x83\x43\x7A\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x04\x00\x00\x00\x00\x00\x00\x00\x00\x3E\xF7\x83\x43\x7A\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x05\x00\x00\x00\x00\x00\x00\x00\x00\x3E\xF7\x83\x43\x7A\x01\x00\x00\x01\x01\x03\x63\x31\x31\x3E\xF7\x83\x43\x7A\x01\x00\x00\x04\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x04\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x05\x00\x00\x00\x00\x00\x00\x00\x00\x02\x67\x32\x00\x00\x00\x00\x09\x00\x3D\x52\xEF\x68\x67\x52\x1D\xFA";

/// Redis 7.0.15, `DUMP s` (type 19): two nodes, two tombstones, a negative seq difference, two groups.
const DUMP_7_0_GROUPS: &str = concat!(
    "13021000000000000000010000000000000005c34066406b076b0000001f000201400109846e616d6505816e0200200e",
    "000020010b85616c69636506f13930030520120d0101dffb0283626f6204dff90205200e201000fc20160c856f746865",
    "72068178020601032027202508856361726f6c06f4ff8000047f090501ff1000000000000000040000000000000000c3",
    "4054409814980000001d00030100010201846e616d6505816e02400c0000200108846461766505e04676e03c00014805",
    "206300014056076572696e05800105200b4068030301816120190c816202020181630203010a01ff0506000105030007",
    "02026761040081ffffffffffffffff03000000000000000100000000000000050d1a114ca20100000100000000000000",
    "0200000000000000000d1a114ca20100000100000000000000040000000000000000101a114ca201000001030263310d",
    "1a114ca2010000020000000000000001000000000000000500000000000000020000000000000000026332101a114ca2",
    "01000001000000000000000400000000000000000469646c65151a114ca201000000026762050081ffffffffffffffff",
    "0001026333181a114ca2010000000a0050510e35d0e7de5d",
);
/// Redis 7.0.15, `XGROUP CREATE e g $ MKSTREAM` then `DUMP e`.
const DUMP_7_0_EMPTY: &str =
    "13000000000000000000010167000081ffffffffffffffff00000a00a01a953dfb9cddde";
/// Redis 7.0.15, `DUMP big`: a 5000-byte value (32-bit string), every integer width.
const DUMP_7_0_WIDE: &str = concat!(
    "13021000000000000000010000000000000001c34099550c150c15000016000101000107018166028269310382693220",
    "0300332003003420030735038173020001022021070001f0881300007ae0ff00e0ff00e0ff00e0ff00e0ff00e0ff00e0",
    "ff00e0ff00e0ff00e0ff00e0ff00e0ff00e0ff00e0ff00e0ff00e0ff00e0ff00e0ff00e0ee0015278dc3e802f1d08a03",
    "f200127a04f3006cca8805f4008000048009e12c78e0ff00e01a000402ae0a01ff100000000000000001000000000000",
    "00021d1d0000000a0001010001010181660200010201000100018179020401ff0201020101000002010167010181ffff",
    "ffffffffffff00000a00fcf356ec60b67719",
);

fn hex(s: &str) -> Vec<u8> {
    assert!(s.len() % 2 == 0);
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn id(ms: u64, seq: u64) -> StreamId {
    StreamId::new(ms, seq)
}

fn fields(pairs: &[(&str, &str)]) -> Vec<(Vec<u8>, Vec<u8>)> {
    pairs
        .iter()
        .map(|(f, v)| (f.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
}

fn pending(ms: u64, seq: u64, delivery_ms: u64, consumer: &str) -> DumpedPending {
    DumpedPending {
        id: id(ms, seq),
        delivery_ms,
        delivery_count: 1,
        consumer: consumer.as_bytes().to_vec(),
    }
}

fn consumer(name: &str, seen_ms: u64) -> DumpedConsumer {
    DumpedConsumer {
        name: name.as_bytes().to_vec(),
        seen_ms,
        active_ms: None,
    }
}

/// `body` with a footer: the RDB version and the CRC of everything before the CRC.
fn wrap_version(body: &[u8], version: u16) -> Vec<u8> {
    let mut p = body.to_vec();
    p.extend_from_slice(&version.to_le_bytes());
    let crc = crc64(0, &p);
    p.extend_from_slice(&crc.to_le_bytes());
    p
}

fn wrap(body: &[u8]) -> Vec<u8> {
    wrap_version(body, RDB_VERSION)
}

/// An RDB length, as `rdbSaveLen` writes it.
fn len(n: u64) -> Vec<u8> {
    if n < 1 << 6 {
        vec![n as u8]
    } else if n < 1 << 14 {
        vec![0x40 | (n >> 8) as u8, n as u8]
    } else if n <= u64::from(u32::MAX) {
        let mut v = vec![0x80];
        v.extend_from_slice(&(n as u32).to_be_bytes());
        v
    } else {
        let mut v = vec![0x81];
        v.extend_from_slice(&n.to_be_bytes());
        v
    }
}

/// A plain RDB string.
fn string(s: &[u8]) -> Vec<u8> {
    let mut v = len(s.len() as u64);
    v.extend_from_slice(s);
    v
}

fn raw_id(ms: u64, seq: u64) -> Vec<u8> {
    let mut v = ms.to_be_bytes().to_vec();
    v.extend_from_slice(&seq.to_be_bytes());
    v
}

#[derive(Clone, Copy)]
enum El<'a> {
    I(i64),
    S(&'a [u8]),
}

/// A listpack as `listpack.c` encodes these elements.
fn listpack(elements: &[El<'_>]) -> Vec<u8> {
    let mut body = Vec::new();
    for e in elements {
        let mut enc = match *e {
            El::I(v @ 0..=127) => vec![v as u8],
            El::I(v @ -4096..=4095) => vec![0xc0 | ((v >> 8) & 0x1f) as u8, v as u8],
            El::I(v) if i16::try_from(v).is_ok() => {
                let mut x = vec![0xf1];
                x.extend_from_slice(&(v as i16).to_le_bytes());
                x
            }
            El::I(v) if (-(1 << 23)..1 << 23).contains(&v) => {
                let mut x = vec![0xf2];
                x.extend_from_slice(&(v as i32).to_le_bytes()[..3]);
                x
            }
            El::I(v) if i32::try_from(v).is_ok() => {
                let mut x = vec![0xf3];
                x.extend_from_slice(&(v as i32).to_le_bytes());
                x
            }
            El::I(v) => {
                let mut x = vec![0xf4];
                x.extend_from_slice(&v.to_le_bytes());
                x
            }
            El::S(s) if s.len() < 64 => {
                let mut x = vec![0x80 | s.len() as u8];
                x.extend_from_slice(s);
                x
            }
            El::S(s) if s.len() < 4096 => {
                let mut x = vec![0xe0 | (s.len() >> 8) as u8, s.len() as u8];
                x.extend_from_slice(s);
                x
            }
            El::S(s) => {
                let mut x = vec![0xf0];
                x.extend_from_slice(&(s.len() as u32).to_le_bytes());
                x.extend_from_slice(s);
                x
            }
        };
        let l = enc.len() as u64;
        let backlen: Vec<u8> = if l <= 127 {
            vec![l as u8]
        } else if l < 16383 {
            vec![(l >> 7) as u8, (l & 127) as u8 | 128]
        } else {
            vec![
                (l >> 14) as u8,
                ((l >> 7) & 127) as u8 | 128,
                (l & 127) as u8 | 128,
            ]
        };
        enc.extend_from_slice(&backlen);
        body.extend_from_slice(&enc);
    }
    let total = 6 + body.len() + 1;
    let mut lp = (total as u32).to_le_bytes().to_vec();
    lp.extend_from_slice(&(elements.len().min(65535) as u16).to_le_bytes());
    lp.extend_from_slice(&body);
    lp.push(0xff);
    lp
}

/// A stream node listpack: master fields `f`, entries `(ms_diff, seq_diff, values)` with the
/// master's fields, flags as given.
fn node(master_fields: &[&[u8]], entries: &[(i64, i64, i64, &[&[u8]])]) -> Vec<u8> {
    let live = entries.iter().filter(|e| e.0 & 1 == 0).count() as i64;
    let mut els = vec![
        El::I(live),
        El::I(entries.len() as i64 - live),
        El::I(master_fields.len() as i64),
    ];
    els.extend(master_fields.iter().map(|f| El::S(f)));
    els.push(El::I(0));
    for (flags, ms, seq, values) in entries {
        els.extend([El::I(*flags), El::I(*ms), El::I(*seq)]);
        els.extend(values.iter().map(|v| El::S(v)));
        els.push(El::I(values.len() as i64 + 3));
    }
    listpack(&els)
}

/// A type-19 body: one node keyed `master` holding `lp`, then the counters and `tail`
/// (groups and all after).
fn body19(master: (u64, u64), lp: &[u8], length: u64, last: (u64, u64), tail: &[u8]) -> Vec<u8> {
    let mut b = vec![19];
    b.extend(len(1));
    b.extend(string(&raw_id(master.0, master.1)));
    b.extend(string(lp));
    b.extend(len(length));
    b.extend(len(last.0));
    b.extend(len(last.1));
    b.extend([len(master.0), len(master.1), len(0), len(0), len(length)].concat());
    b.extend_from_slice(tail);
    b
}

fn one_entry_node() -> Vec<u8> {
    node(&[b"f"], &[(2, 0, 0, &[b"v"])])
}

fn decode(p: &[u8]) -> Result<DumpedStream, DumpError> {
    decode_stream_dump(p)
}

#[test]
fn crc64_is_redis_crc64() {
    assert_eq!(crc64(0, b"123456789"), 0xe9c6_d914_c4b8_d9ca);
    assert_eq!(crc64(0, b""), 0);
}

#[test]
fn the_redis_5_payload_decodes_as_redis_7_0_loads_it() {
    let s = decode(DUMP_REDIS_5).unwrap();
    let c11 = |ms| pending(ms, 0, 1_624_630_359_870, "c11");
    let expected = DumpedStream {
        entries: vec![
            (id(5, 0), fields(&[("data", "e")])),
            (id(6, 0), fields(&[("data", "f")])),
        ],
        last_id: id(6, 0),
        first_id: id(5, 0),
        max_deleted_id: StreamId::ZERO,
        entries_added: 2,
        groups: vec![
            DumpedGroup {
                name: b"g1".to_vec(),
                last_id: id(5, 0),
                entries_read: Some(1),
                pending: vec![c11(1), c11(2), c11(4), c11(5)],
                consumers: vec![consumer("c11", 1_624_630_359_870)],
            },
            DumpedGroup {
                name: b"g2".to_vec(),
                last_id: StreamId::ZERO,
                entries_read: Some(0),
                pending: vec![],
                consumers: vec![],
            },
        ],
    };
    assert_eq!(s, expected);
    // XINFO STREAM x FULL: lag = entries_added - entries_read (no tombstone after last_id).
    let lags: Vec<u64> = s
        .groups
        .iter()
        .map(|g| s.entries_added - g.entries_read.unwrap())
        .collect();
    assert_eq!(lags, [1, 2]);
}

#[test]
fn a_redis_7_0_payload_with_groups_decodes() {
    let s = decode(&hex(DUMP_7_0_GROUPS)).unwrap();
    let dave = "v".repeat(70);
    assert_eq!(
        s.entries,
        vec![
            (id(1, 5), fields(&[("name", "alice"), ("n", "12345")])),
            (id(2, 0), fields(&[("name", "bob"), ("n", "-7")])),
            (id(4, 0), fields(&[("name", "dave"), ("n", &dave)])),
            (id(5, 0), fields(&[("name", "erin"), ("n", "")])),
            (id(6, 0), fields(&[("a", "1"), ("b", "2"), ("c", "3")])),
        ]
    );
    assert_eq!(s.last_id, id(6, 0));
    assert_eq!(s.first_id, id(1, 5));
    assert_eq!(s.max_deleted_id, id(3, 0));
    assert_eq!(s.entries_added, 7);
    assert_eq!(
        s.groups,
        vec![
            DumpedGroup {
                name: b"ga".to_vec(),
                last_id: id(4, 0),
                entries_read: None,
                pending: vec![
                    pending(1, 5, 1_796_572_518_925, "c1"),
                    pending(2, 0, 1_796_572_518_925, "c1"),
                    pending(4, 0, 1_796_572_518_928, "c2"),
                ],
                consumers: vec![
                    consumer("c1", 1_796_572_518_925),
                    consumer("c2", 1_796_572_518_928),
                    consumer("idle", 1_796_572_518_933),
                ],
            },
            DumpedGroup {
                name: b"gb".to_vec(),
                last_id: id(5, 0),
                entries_read: None,
                pending: vec![],
                consumers: vec![consumer("c3", 1_796_572_518_936)],
            },
        ]
    );
}

#[test]
fn an_empty_redis_7_0_stream_with_a_group_decodes() {
    let s = decode(&hex(DUMP_7_0_EMPTY)).unwrap();
    assert_eq!(
        s,
        DumpedStream {
            groups: vec![DumpedGroup {
                name: b"g".to_vec(),
                ..DumpedGroup::default()
            }],
            ..DumpedStream::default()
        }
    );
}

#[test]
fn every_listpack_encoding_and_an_lzf_string_decode() {
    let s = decode(&hex(DUMP_7_0_WIDE)).unwrap();
    let z = "z".repeat(5000);
    let x = "x".repeat(300);
    let min = i64::MIN.to_string();
    assert_eq!(
        s.entries,
        vec![
            (
                id(1, 1),
                fields(&[
                    ("f", &z),
                    ("i1", "1000"),
                    ("i2", "-30000"),
                    ("i3", "8000000"),
                    ("i4", "-2000000000"),
                    ("i5", &min),
                    ("s", &x),
                ])
            ),
            (id(1, 2), fields(&[("f", "y")])),
        ]
    );
    assert_eq!(
        (s.first_id, s.last_id, s.entries_added),
        (id(1, 1), id(1, 2), 2)
    );
    assert_eq!(s.groups.len(), 1);
    assert_eq!(s.groups[0].last_id, id(1, 1));
}

#[test]
fn an_empty_legacy_stream_gets_redis_first_id() {
    // Restored into Redis 7.0.15, XINFO STREAM shows recorded-first-entry-id
    // 18446744073709551615-18446744073709551615 (streamGetEdgeID finds no entry).
    let body = [&[15u8][..], &len(0), &len(0), &len(0), &len(5), &len(0)].concat();
    let s = decode(&wrap(&body)).unwrap();
    assert_eq!(s.first_id, StreamId::MAX);
    assert_eq!((s.last_id, s.entries_added), (id(0, 5), 0));
}

#[test]
fn a_type_21_payload_carries_active_times() {
    let mut tail = len(1);
    tail.extend(string(b"g"));
    tail.extend([len(1), len(0), len(1)].concat()); // last 1-0, entries_read 1
    tail.extend(len(1));
    tail.extend(raw_id(1, 0));
    tail.extend(7u64.to_le_bytes());
    tail.extend(len(3));
    tail.extend(len(1));
    tail.extend(string(b"c"));
    tail.extend(11u64.to_le_bytes());
    tail.extend(13u64.to_le_bytes());
    tail.extend(len(1));
    tail.extend(raw_id(1, 0));
    let mut body = body19((1, 0), &one_entry_node(), 1, (1, 0), &tail);
    body[0] = 21;
    let s = decode(&wrap(&body)).unwrap();
    assert_eq!(s.entries, vec![(id(1, 0), fields(&[("f", "v")]))]);
    let g = &s.groups[0];
    assert_eq!(g.entries_read, Some(1));
    assert_eq!(
        g.consumers,
        vec![DumpedConsumer {
            name: b"c".to_vec(),
            seen_ms: 11,
            active_ms: Some(13),
        }]
    );
    assert_eq!(
        g.pending,
        vec![DumpedPending {
            id: id(1, 0),
            delivery_ms: 7,
            delivery_count: 3,
            consumer: b"c".to_vec(),
        }]
    );
    // The same as type 19 reads the active time as the PEL count: refused.
    body[0] = 19;
    assert_eq!(decode(&wrap(&body)), Err(DumpError::BadData));
}

#[test]
fn footer_errors() {
    for short in 0..10 {
        assert_eq!(
            decode(&DUMP_REDIS_5[..short]),
            Err(DumpError::VersionOrChecksum)
        );
    }
    let body = &DUMP_REDIS_5[..DUMP_REDIS_5.len() - 10];
    assert!(decode(&wrap_version(body, 10)).is_ok());
    assert_eq!(
        decode(&wrap_version(body, 11)),
        Err(DumpError::VersionOrChecksum)
    );
    assert_eq!(
        decode(&wrap_version(body, 0xff00)),
        Err(DumpError::VersionOrChecksum)
    );
}

#[test]
fn a_flipped_byte_anywhere_is_a_checksum_error() {
    for payload in [
        DUMP_REDIS_5.to_vec(),
        hex(DUMP_7_0_GROUPS),
        hex(DUMP_7_0_WIDE),
    ] {
        for at in 0..payload.len() {
            for bit in [0x01, 0x80] {
                let mut p = payload.clone();
                p[at] ^= bit;
                assert_eq!(decode(&p), Err(DumpError::VersionOrChecksum), "byte {at}");
            }
        }
    }
}

#[test]
fn a_truncated_payload_is_an_error() {
    for payload in [
        DUMP_REDIS_5.to_vec(),
        hex(DUMP_7_0_GROUPS),
        hex(DUMP_7_0_WIDE),
    ] {
        let whole = decode(&payload).unwrap();
        for cut in 0..payload.len() {
            assert!(decode(&payload[..cut]).is_err());
            // With a footer made right. The object reads on into the footer, as in Redis, so
            // a cut object may decode (the Redis 5 one cut after its node reads last_id 6-10
            // and no groups from the footer), but never as the whole, and never panics.
            if cut < payload.len() - 10 {
                if let Ok(s) = decode(&wrap(&payload[..cut])) {
                    assert_ne!(s, whole, "cut at {cut}");
                }
            }
        }
    }
}

#[test]
fn no_damage_to_the_object_panics() {
    // Every byte of each object set to each of a spread of values, the footer made right.
    for payload in [
        DUMP_REDIS_5.to_vec(),
        hex(DUMP_7_0_GROUPS),
        hex(DUMP_7_0_WIDE),
    ] {
        let body = &payload[..payload.len() - 10];
        for at in 0..body.len() {
            for v in [
                0x00, 0x01, 0x3f, 0x40, 0x7f, 0x80, 0x81, 0xc0, 0xc3, 0xe0, 0xf0, 0xf4, 0xff,
            ] {
                let mut b = body.to_vec();
                b[at] = v;
                let _ = decode(&wrap(&b));
                b[at] ^= 0x10;
                let _ = decode(&wrap(&b));
            }
        }
    }
}

#[test]
fn huge_lengths_are_bad_data_not_allocations() {
    let huge = 1u64 << 60;
    let bad = Err(DumpError::BadData);
    // Nodes.
    assert_eq!(decode(&wrap(&[&[19u8][..], &len(huge)].concat())), bad);
    // A string (the node key), as a 64-bit and as a 32-bit length.
    for l in [huge, u64::from(u32::MAX)] {
        assert_eq!(
            decode(&wrap(&[&[19u8][..], &len(1), &len(l)].concat())),
            bad
        );
    }
    // An LZF string claiming 2^60 bytes, and one claiming more than 88x its input.
    for (clen, ulen) in [(2u64, huge), (2, 177)] {
        let lzf = [&[0xc3u8][..], &len(clen), &len(ulen), &[0x01, b'a', b'b']].concat();
        let body = [&[19u8][..], &len(1), &lzf].concat();
        assert_eq!(decode(&wrap(&body)), bad);
    }
    // Groups, a global PEL, consumers, a consumer's PEL.
    let lp = one_entry_node();
    for tail in [
        len(huge),
        [len(1), string(b"g"), len(0), len(0), len(0), len(huge)].concat(),
        [
            len(1),
            string(b"g"),
            len(0),
            len(0),
            len(0),
            len(0),
            len(huge),
        ]
        .concat(),
        [
            len(1),
            string(b"g"),
            len(0),
            len(0),
            len(0),
            len(0),
            len(1),
            string(b"c"),
            vec![0; 8],
            len(huge),
        ]
        .concat(),
    ] {
        assert_eq!(decode(&wrap(&body19((1, 0), &lp, 1, (1, 0), &tail))), bad);
    }
    // Counts inside a listpack: master fields, entries, an entry's fields.
    for els in [
        vec![El::I(1), El::I(0), El::I(i64::MAX)],
        vec![El::I(1), El::I(0), El::I(i64::MAX)],
        vec![El::I(i64::MAX), El::I(0), El::I(0), El::I(0)],
        vec![El::I(i64::MAX), El::I(i64::MAX), El::I(0), El::I(0)],
        vec![
            El::I(1),
            El::I(0),
            El::I(0),
            El::I(0),
            El::I(0),
            El::I(0),
            El::I(0),
            El::I(i64::MAX),
        ],
        vec![El::I(-1), El::I(0), El::I(0), El::I(0)],
    ] {
        let body = body19((1, 0), &listpack(&els), 0, (1, 0), &len(0));
        assert_eq!(decode(&wrap(&body)), bad);
    }
}

#[test]
fn a_type_that_is_not_a_stream() {
    // SET k foo; DUMP k → type 0 (string).
    let string_obj = [&[0u8][..], &string(b"foo")].concat();
    assert_eq!(decode(&wrap(&string_obj)), Err(DumpError::NotAStream));
    for t in [1u8, 7, 9, 14, 16, 18] {
        assert_eq!(
            decode(&wrap(&[t, 0])),
            Err(DumpError::NotAStream),
            "type {t}"
        );
    }
    for t in [8u8, 20, 22, 200, 255] {
        assert_eq!(decode(&wrap(&[t, 0])), Err(DumpError::BadData), "type {t}");
    }
    // No object at all: as in Redis, the type byte is read from the footer, here the RDB
    // version 10 (a list type).
    assert_eq!(decode(&wrap(&[])), Err(DumpError::NotAStream));
}

#[test]
fn error_texts() {
    assert_eq!(
        DumpError::VersionOrChecksum.to_string(),
        "DUMP payload version or checksum are wrong"
    );
    assert_eq!(DumpError::BadData.to_string(), "Bad data format");
    assert!(DumpError::NotAStream
        .to_string()
        .contains("evring's RESTORE restores streams only"));
}

/// A group `g` (last 1-0, entries_read 1) with the global PEL `global` and consumers, each
/// with the IDs it owns.
fn group_tail(global: &[u64], consumers: &[(&[u8], &[u64])]) -> Vec<u8> {
    let mut t = [len(1), string(b"g"), len(1), len(0), len(1)].concat();
    t.extend(len(global.len() as u64));
    for ms in global {
        t.extend(raw_id(*ms, 0));
        t.extend([0u8; 8]);
        t.extend(len(1));
    }
    t.extend(len(consumers.len() as u64));
    for (name, owned) in consumers {
        t.extend(string(name));
        t.extend([0u8; 8]);
        t.extend(len(owned.len() as u64));
        for ms in *owned {
            t.extend(raw_id(*ms, 0));
        }
    }
    t
}

#[test]
fn pel_consistency() {
    let lp = node(&[b"f"], &[(2, 0, 0, &[b"v"]), (2, 1, 0, &[b"w"])]);
    let try_tail = |t: Vec<u8>| decode(&wrap(&body19((1, 0), &lp, 2, (2, 0), &t)));
    let ok = try_tail(group_tail(&[1, 2], &[(b"a", &[2]), (b"b", &[1])])).unwrap();
    let owners: Vec<_> = ok.groups[0]
        .pending
        .iter()
        .map(|p| (p.id.ms, p.consumer.clone()))
        .collect();
    assert_eq!(owners, vec![(1, b"b".to_vec()), (2, b"a".to_vec())]);
    let bad = Err(DumpError::BadData);
    // Owned but not pending; pending but not owned; owned twice; pending twice.
    assert_eq!(try_tail(group_tail(&[1], &[(b"a", &[1, 2])])), bad);
    assert_eq!(try_tail(group_tail(&[1, 2], &[(b"a", &[1])])), bad);
    assert_eq!(
        try_tail(group_tail(&[1], &[(b"a", &[1]), (b"b", &[1])])),
        bad
    );
    assert_eq!(try_tail(group_tail(&[1], &[(b"a", &[1, 1])])), bad);
    assert_eq!(try_tail(group_tail(&[1, 1], &[(b"a", &[1])])), bad);
    // Two consumers of one name; two groups of one name.
    assert_eq!(try_tail(group_tail(&[], &[(b"a", &[]), (b"a", &[])])), bad);
    let mut two = group_tail(&[], &[]);
    two[0] = 2;
    two.extend(&two.clone()[1..]);
    assert_eq!(try_tail(two), bad);
}

#[test]
fn stream_consistency() {
    let bad = Err(DumpError::BadData);
    let entries: &[(i64, i64, i64, &[&[u8]])] = &[
        (2, 0, 0, &[b"a"]),
        (3, 1, 0, &[b"b"]),
        (2, 1, 5, &[b"c"]),
        (2, 2, u64::MAX as i64, &[b"d"]),
    ];
    let lp = node(&[b"f"], entries);
    // 1-5 (master), 2-5 deleted, 2-10, 3-4 (a negative seq difference).
    let s = decode(&wrap(&body19((1, 5), &lp, 3, (3, 4), &len(0)))).unwrap();
    let ids: Vec<_> = s.entries.iter().map(|e| e.0).collect();
    assert_eq!(ids, [id(1, 5), id(2, 10), id(3, 4)]);
    // A length other than the live entries; an entry after last_id.
    assert_eq!(decode(&wrap(&body19((1, 5), &lp, 4, (3, 4), &len(0)))), bad);
    assert_eq!(decode(&wrap(&body19((1, 5), &lp, 3, (3, 3), &len(0)))), bad);
    // Entries out of order.
    let lp = node(&[b"f"], &[(2, 1, 0, &[b"a"]), (2, 0, 0, &[b"b"])]);
    assert_eq!(decode(&wrap(&body19((1, 0), &lp, 2, (9, 0), &len(0)))), bad);
    // A wrong lp-count; a master terminator other than 0.
    let mut els = vec![El::I(1), El::I(0), El::I(1), El::S(b"f"), El::I(0)];
    els.extend([El::I(2), El::I(0), El::I(0), El::S(b"v"), El::I(5)]);
    assert_eq!(
        decode(&wrap(&body19((1, 0), &listpack(&els), 1, (1, 0), &len(0)))),
        bad
    );
    els[4] = El::I(1);
    els[9] = El::I(4);
    assert_eq!(
        decode(&wrap(&body19((1, 0), &listpack(&els), 1, (1, 0), &len(0)))),
        bad
    );
    els[4] = El::I(0);
    assert!(decode(&wrap(&body19((1, 0), &listpack(&els), 1, (1, 0), &len(0)))).is_ok());
    // Numbers as strings are read as Redis integers.
    els[0] = El::S(b"1");
    assert!(decode(&wrap(&body19((1, 0), &listpack(&els), 1, (1, 0), &len(0)))).is_ok());
    els[0] = El::S(b"01");
    assert_eq!(
        decode(&wrap(&body19((1, 0), &listpack(&els), 1, (1, 0), &len(0)))),
        bad
    );
    els[0] = El::I(1);
    // An element after the last entry; a wrong element count in the header.
    let mut extra = els.clone();
    extra.push(El::I(0));
    assert_eq!(
        decode(&wrap(&body19(
            (1, 0),
            &listpack(&extra),
            1,
            (1, 0),
            &len(0)
        ))),
        bad
    );
    let mut lp = listpack(&els);
    lp[4] += 1;
    assert_eq!(decode(&wrap(&body19((1, 0), &lp, 1, (1, 0), &len(0)))), bad);
    lp[4] = 0xff;
    lp[5] = 0xff; // unknown count
    assert!(decode(&wrap(&body19((1, 0), &lp, 1, (1, 0), &len(0)))).is_ok());
    // A wrong backlen; a wrong total size; an empty listpack; a node key of 15 bytes; a node
    // key twice.
    let mut lp = listpack(&els);
    lp[8] += 1;
    assert_eq!(decode(&wrap(&body19((1, 0), &lp, 1, (1, 0), &len(0)))), bad);
    let mut lp = listpack(&els);
    lp[0] += 1;
    assert_eq!(decode(&wrap(&body19((1, 0), &lp, 1, (1, 0), &len(0)))), bad);
    assert_eq!(
        decode(&wrap(&body19((1, 0), &listpack(&[]), 0, (1, 0), &len(0)))),
        bad
    );
    let mut body = body19((1, 0), &listpack(&els), 1, (1, 0), &len(0));
    body[2] = 15;
    body.remove(3);
    assert_eq!(decode(&wrap(&body)), bad);
    let node = [string(&raw_id(1, 0)), string(&listpack(&els))].concat();
    let body = [
        &[19u8][..],
        &len(2),
        &node,
        &node,
        &len(1),
        &len(1),
        &len(0),
    ]
    .concat();
    assert_eq!(decode(&wrap(&body)), bad);
}

#[test]
fn rdb_string_encodings() {
    // The node's listpack and key may come in any RDB string form; the key must be 16 bytes.
    let lp = one_entry_node();
    let mut key_as_int = vec![19, 1, 0xc0, 7]; // int8 "7": 1 byte, not 16
    key_as_int.extend(string(&lp));
    assert_eq!(decode(&wrap(&key_as_int)), Err(DumpError::BadData));
    // An unknown string encoding (0xC4).
    assert_eq!(decode(&wrap(&[19, 1, 0xc4])), Err(DumpError::BadData));
    // A length byte 0x82: no such length encoding.
    assert_eq!(decode(&wrap(&[19, 0x82])), Err(DumpError::BadData));
}

#[test]
fn lzf() {
    // A literal run then an overlapping back reference: "ab" + 6 more from distance 2.
    assert_eq!(
        lzf_decompress(&[0x01, b'a', b'b', 0x80, 0x01], 8).unwrap(),
        b"abababab"
    );
    // The long form: length 7 + next byte + 2.
    let mut input = vec![0x00, b'z', 0xe0, 10, 0x00];
    assert_eq!(lzf_decompress(&input, 20).unwrap(), vec![b'z'; 20]);
    // Too long, too short, a reference before the start, a truncated reference or run.
    assert_eq!(lzf_decompress(&input, 19), None);
    assert_eq!(lzf_decompress(&input, 21), None);
    input[4] = 1;
    assert_eq!(lzf_decompress(&input, 20), None);
    assert_eq!(lzf_decompress(&[0x00, b'z', 0xe0, 10], 20), None);
    assert_eq!(lzf_decompress(&[0x00, b'z', 0xe0], 20), None);
    assert_eq!(lzf_decompress(&[0x05, b'z'], 6), None);
    // Zero bytes out: Redis accepts any input.
    assert_eq!(lzf_decompress(&[0xff], 0).unwrap(), b"");
}

#[test]
fn the_distance_estimate() {
    let s = StreamCounters {
        length: 3,
        entries_added: 10,
        first_id: id(5, 0),
        last_id: id(9, 0),
        max_deleted_id: StreamId::ZERO,
    };
    let est = |s: &StreamCounters, ms| s.estimate_read(id(ms, 0));
    assert_eq!(est(&s, 9), Some(10)); // the last entry
    assert_eq!(est(&s, 10), None); // the future
    assert_eq!(est(&s, 5), Some(8)); // the first entry
    assert_eq!(est(&s, 4), Some(7)); // before it
    assert_eq!(est(&s, 6), None); // inside
                                  // A tombstone before the first entry changes nothing; one at or after it, everything.
    let t = StreamCounters {
        max_deleted_id: id(4, 0),
        ..s
    };
    assert_eq!((est(&t, 4), est(&t, 5)), (Some(7), Some(8)));
    let t = StreamCounters {
        max_deleted_id: id(5, 0),
        ..s
    };
    assert_eq!((est(&t, 4), est(&t, 5), est(&t, 9)), (None, None, Some(10)));
    // Never written; empty.
    let never = StreamCounters {
        entries_added: 0,
        ..s
    };
    assert_eq!(est(&never, 100), Some(0));
    let empty = StreamCounters { length: 0, ..s };
    assert_eq!(
        (est(&empty, 3), est(&empty, 9), est(&empty, 10)),
        (Some(10), Some(10), None)
    );
    // Inconsistent counters: no estimate rather than a wrapped one.
    let odd = StreamCounters {
        entries_added: 2,
        ..s
    };
    assert_eq!(est(&odd, 4), None);
}

#[test]
fn what_a_decoded_stream_holds_is_bounded_by_the_payload() {
    // SAMEFIELDS entries repeat the master's 4000-byte field name: 2000 entries of about 10
    // listpack bytes each would decode to 8 MB from a 24 KB payload.
    let field = vec![b'f'; 4000];
    let values: &[&[u8]] = &[b"v"];
    let build = |n: usize| {
        let entries: Vec<(i64, i64, i64, &[&[u8]])> =
            (0..n).map(|i| (2, i as i64, 0, values)).collect();
        let lp = node(&[&field], &entries);
        wrap(&body19((1, 0), &lp, n as u64, (n as u64, 0), &len(0)))
    };
    let small = decode(&build(100)).unwrap();
    assert_eq!(small.entries.len(), 100);
    assert_eq!(small.entries[99].1[0].0.len(), 4000);
    assert!(decode(&build(600)).is_ok());
    assert_eq!(decode(&build(2000)), Err(DumpError::BadData));
}

#[test]
fn an_encoding_byte_read_as_a_length_is_its_low_bits() {
    // rdbLoadLen(rdb, NULL) on 0xC0..0xFF gives the low six bits: 0xC0 nodes is none.
    let body = [19u8, 0xc0, 0, 0, 0, 0, 0, 0, 0, 0, 0xc0];
    let s = decode(&wrap(&body)).unwrap();
    assert_eq!((s.entries.len(), s.groups.len()), (0, 0));
}
