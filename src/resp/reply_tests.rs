//! The reply encoder, byte for byte against what Redis 7.0 writes, in RESP2 and RESP3.

use super::{format_g17, Reply, RespVersion};

fn encode(version: RespVersion, write: impl FnOnce(&mut Reply<'_>)) -> Vec<u8> {
    let mut out = Vec::new();
    write(&mut Reply::new(&mut out, version));
    out
}

/// The bytes `write` gives in RESP2 and in RESP3.
fn both(write: impl Fn(&mut Reply<'_>)) -> (Vec<u8>, Vec<u8>) {
    (
        encode(RespVersion::Resp2, &write),
        encode(RespVersion::Resp3, &write),
    )
}

fn pair(resp2: &[u8], resp3: &[u8]) -> (Vec<u8>, Vec<u8>) {
    (resp2.to_vec(), resp3.to_vec())
}

fn same(bytes: &[u8]) -> (Vec<u8>, Vec<u8>) {
    pair(bytes, bytes)
}

#[test]
fn values_common_to_both_versions() {
    assert_eq!(both(|r| _ = r.ok()), same(b"+OK\r\n"));
    assert_eq!(both(|r| _ = r.simple("PONG")), same(b"+PONG\r\n"));
    assert_eq!(both(|r| _ = r.int(0)), same(b":0\r\n"));
    assert_eq!(both(|r| _ = r.int(-42)), same(b":-42\r\n"));
    assert_eq!(
        both(|r| _ = r.int(i64::MIN)),
        same(b":-9223372036854775808\r\n")
    );
    assert_eq!(
        both(|r| _ = r.int(i64::MAX)),
        same(b":9223372036854775807\r\n")
    );
    assert_eq!(both(|r| _ = r.bulk(b"foo")), same(b"$3\r\nfoo\r\n"));
    assert_eq!(both(|r| _ = r.bulk("")), same(b"$0\r\n\r\n"));
    assert_eq!(
        both(|r| _ = r.bulk(b"a\r\nb\0")),
        same(b"$5\r\na\r\nb\0\r\n")
    );
    assert_eq!(both(|r| _ = r.array_len(0)), same(b"*0\r\n"));
    assert_eq!(
        both(|r| _ = r.array_len(2).bulk("a").int(1)),
        same(b"*2\r\n$1\r\na\r\n:1\r\n")
    );
    let mut long = b"$10000\r\n".to_vec();
    long.extend_from_slice(&[b'x'; 10000]);
    long.extend_from_slice(b"\r\n");
    assert_eq!(
        both(|r| {
            r.bulk(vec![b'x'; 10000]);
        }),
        same(&long)
    );
}

#[test]
fn errors_carry_a_code_and_no_line_break() {
    assert_eq!(
        both(|r| _ = r.error("syntax error")),
        same(b"-ERR syntax error\r\n")
    );
    assert_eq!(
        both(|r| _ = r.error("-WRONGTYPE Operation against a key")),
        same(b"-WRONGTYPE Operation against a key\r\n")
    );
    // addReplyErrorFormat: trimmed at both ends, spaces inside.
    assert_eq!(
        both(|r| _ = r.error("\r\nbad\r\nthing\n\r")),
        same(b"-ERR bad  thing\r\n")
    );
    assert_eq!(both(|r| _ = r.error("")), same(b"-ERR \r\n"));
    assert_eq!(
        both(|r| _ = r.error(b"Protocol error: expected '$', got '\xff'")),
        same(b"-ERR Protocol error: expected '$', got '\xff'\r\n")
    );
    assert_eq!(both(|r| _ = r.simple("a\r\nb")), same(b"+a  b\r\n"));
}

#[test]
fn values_that_differ_between_versions() {
    assert_eq!(both(|r| _ = r.null()), pair(b"$-1\r\n", b"_\r\n"));
    assert_eq!(both(|r| _ = r.null_array()), pair(b"*-1\r\n", b"_\r\n"));
    assert_eq!(both(|r| _ = r.map_len(2)), pair(b"*4\r\n", b"%2\r\n"));
    assert_eq!(both(|r| _ = r.map_len(0)), pair(b"*0\r\n", b"%0\r\n"));
    assert_eq!(both(|r| _ = r.set_len(3)), pair(b"*3\r\n", b"~3\r\n"));
    assert_eq!(both(|r| _ = r.push_len(3)), pair(b"*3\r\n", b">3\r\n"));
    assert_eq!(both(|r| _ = r.boolean(true)), pair(b":1\r\n", b"#t\r\n"));
    assert_eq!(both(|r| _ = r.boolean(false)), pair(b":0\r\n", b"#f\r\n"));
    assert_eq!(
        both(|r| _ = r.double(1.5)),
        pair(b"$3\r\n1.5\r\n", b",1.5\r\n")
    );
    assert_eq!(
        both(|r| _ = r.double(0.1)),
        pair(
            b"$19\r\n0.10000000000000001\r\n",
            b",0.10000000000000001\r\n"
        )
    );
    assert_eq!(
        both(|r| _ = r.double(f64::INFINITY)),
        pair(b"$3\r\ninf\r\n", b",inf\r\n")
    );
    assert_eq!(
        both(|r| _ = r.double(f64::NEG_INFINITY)),
        pair(b"$4\r\n-inf\r\n", b",-inf\r\n")
    );
    assert_eq!(
        both(|r| _ = r.verbatim("txt", "Some string")),
        pair(b"$11\r\nSome string\r\n", b"=15\r\ntxt:Some string\r\n")
    );
    // Only three bytes of the format count; a shorter one is padded with spaces.
    assert_eq!(
        both(|r| _ = r.verbatim("markdown", "# x")),
        pair(b"$3\r\n# x\r\n", b"=7\r\nmar:# x\r\n")
    );
    assert_eq!(
        both(|r| _ = r.verbatim("md", "")),
        pair(b"$0\r\n\r\n", b"=4\r\nmd :\r\n")
    );
}

#[test]
fn a_nested_reply_in_both_versions() {
    let write = |r: &mut Reply<'_>| {
        r.map_len(2)
            .bulk("name")
            .simple("x")
            .bulk("tags")
            .set_len(2)
            .bulk("a")
            .null();
    };
    assert_eq!(
        both(write),
        pair(
            b"*4\r\n$4\r\nname\r\n+x\r\n$4\r\ntags\r\n*2\r\n$1\r\na\r\n$-1\r\n",
            b"%2\r\n$4\r\nname\r\n+x\r\n$4\r\ntags\r\n~2\r\n$1\r\na\r\n_\r\n"
        )
    );
    let mut out = b"kept".to_vec();
    let r = Reply::new(&mut out, RespVersion::Resp3);
    assert_eq!(r.version(), RespVersion::Resp3);
    assert_eq!(RespVersion::default(), RespVersion::Resp2);
    Reply::new(&mut out, RespVersion::Resp3).ok();
    assert_eq!(out, b"kept+OK\r\n");
}

fn g17(d: f64) -> String {
    let mut buf = [0u8; 32];
    let len = format_g17(d, &mut buf);
    String::from_utf8(buf[..len].to_vec()).expect("ASCII")
}

#[test]
fn doubles_are_printed_as_percent_17g() {
    let cases: &[(f64, &str)] = &[
        (0.0, "0"),
        (-0.0, "-0"),
        (1.0, "1"),
        (-2.5, "-2.5"),
        (0.1, "0.10000000000000001"),
        (1.0 / 3.0, "0.33333333333333331"),
        (100.0, "100"),
        (1e16, "10000000000000000"),
        (1e17, "1e+17"),
        (123456789012345680.0, "1.2345678901234568e+17"),
        (0.0001, "0.0001"),
        (0.00001, "1.0000000000000001e-05"),
        (1e300, "1.0000000000000001e+300"),
        (1e-300, "1e-300"),
        (f64::MAX, "1.7976931348623157e+308"),
        (f64::MIN_POSITIVE, "2.2250738585072014e-308"),
        (5e-324, "4.9406564584124654e-324"),
        (f64::INFINITY, "inf"),
        (f64::NEG_INFINITY, "-inf"),
        (f64::NAN, "nan"),
        (-f64::NAN, "-nan"),
    ];
    for (d, text) in cases {
        assert_eq!(g17(*d), *text, "{d:e}");
    }
}

/// glibc's `snprintf(buf, 64, "%.17g", d)`.
fn libc_g17(d: f64) -> String {
    let mut buf = [0u8; 64];
    // SAFETY: `buf` is writable for the 64 bytes passed as its size; the format is a
    // NUL-terminated literal with one conversion, `%.17g`, matched by one `f64` argument.
    let n = unsafe {
        libc::snprintf(
            buf.as_mut_ptr().cast::<libc::c_char>(),
            buf.len(),
            c"%.17g".as_ptr(),
            d,
        )
    };
    let n = usize::try_from(n).expect("snprintf succeeded");
    String::from_utf8(buf[..n].to_vec()).expect("ASCII")
}

#[test]
fn doubles_match_the_c_library() {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let specials = [
        0.5,
        2.0_f64.powi(53) + 1.0,
        9.999_999_999_999_999e16,
        1e-5,
        1e-4,
    ];
    for d in specials {
        assert_eq!(g17(d), libc_g17(d), "{d:e}");
    }
    for _ in 0..200_000 {
        let bits = next();
        // Any bit pattern (all exponents, NaNs and subnormals included), and values with
        // small exponents, where the fixed notation is used.
        let any = f64::from_bits(bits);
        let small = f64::from_bits(bits & 0x800f_ffff_ffff_ffff | (0x3f0 + bits % 0x50) << 52);
        let short = (bits % 2_000_000) as f64 / 1000.0 - 1000.0;
        for d in [any, small, short] {
            assert_eq!(g17(d), libc_g17(d), "{:#x}", d.to_bits());
        }
    }
}
