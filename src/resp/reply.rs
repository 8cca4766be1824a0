//! The reply encoder: Redis 7.0's `addReply*` family (`src/networking.c`) for RESP2 and RESP3,
//! writing straight into the connection's output buffer.

use std::io::Write as _;

/// The protocol a connection speaks: RESP2 until a `HELLO 3` switches it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum RespVersion {
    #[default]
    Resp2,
    Resp3,
}

/// Writes replies into `out` in the connection's protocol version. Each method appends one
/// value (an aggregate's header announces the values that must follow it) and returns the
/// writer, so that replies chain: `reply.array_len(2).bulk(b"a").int(1)`.
#[derive(Debug)]
pub struct Reply<'a> {
    out: &'a mut Vec<u8>,
    version: RespVersion,
}

impl<'a> Reply<'a> {
    pub fn new(out: &'a mut Vec<u8>, version: RespVersion) -> Self {
        Reply { out, version }
    }

    pub fn version(&self) -> RespVersion {
        self.version
    }

    /// A simple string, `+text`. A `\r` or `\n` in `text` becomes a space (the line would
    /// end there otherwise; Redis never passes one).
    pub fn simple(&mut self, text: impl AsRef<[u8]>) -> &mut Self {
        self.out.push(b'+');
        push_line_safe(self.out, text.as_ref());
        self.out.extend_from_slice(b"\r\n");
        self
    }

    /// `+OK`.
    pub fn ok(&mut self) -> &mut Self {
        self.out.extend_from_slice(b"+OK\r\n");
        self
    }

    /// An error, as Redis's `addReplyErrorFormat` writes it: `\r` and `\n` trimmed from both
    /// ends and made spaces inside; `-ERR ` in front unless the text starts with `-` (then
    /// it carries its own code: `-WRONGTYPE …`).
    pub fn error(&mut self, text: impl AsRef<[u8]>) -> &mut Self {
        let mut text = text.as_ref();
        while let [b'\r' | b'\n', rest @ ..] = text {
            text = rest;
        }
        while let [rest @ .., b'\r' | b'\n'] = text {
            text = rest;
        }
        if text.first() != Some(&b'-') {
            self.out.extend_from_slice(b"-ERR ");
        }
        push_line_safe(self.out, text);
        self.out.extend_from_slice(b"\r\n");
        self
    }

    /// An integer, `:n`.
    pub fn int(&mut self, n: i64) -> &mut Self {
        self.out.push(b':');
        push_i64(self.out, n);
        self.out.extend_from_slice(b"\r\n");
        self
    }

    /// A bulk string, `$len` and the bytes.
    pub fn bulk(&mut self, bytes: impl AsRef<[u8]>) -> &mut Self {
        let bytes = bytes.as_ref();
        self.header(b'$', bytes.len() as u64);
        self.out.extend_from_slice(bytes);
        self.out.extend_from_slice(b"\r\n");
        self
    }

    /// Null (`addReplyNull`): RESP2's null bulk string `$-1`, RESP3's `_`.
    pub fn null(&mut self) -> &mut Self {
        self.out.extend_from_slice(match self.version {
            RespVersion::Resp2 => b"$-1\r\n",
            RespVersion::Resp3 => b"_\r\n",
        });
        self
    }

    /// A null array (`addReplyNullArray`): RESP2's `*-1`, RESP3's `_`.
    pub fn null_array(&mut self) -> &mut Self {
        self.out.extend_from_slice(match self.version {
            RespVersion::Resp2 => b"*-1\r\n",
            RespVersion::Resp3 => b"_\r\n",
        });
        self
    }

    /// Bytes that are already one or more whole RESP values, copied as they are.
    pub fn encoded(&mut self, bytes: &[u8]) -> &mut Self {
        self.out.extend_from_slice(bytes);
        self
    }

    /// An array of `n` values, `*n`.
    pub fn array_len(&mut self, n: usize) -> &mut Self {
        self.header(b'*', n as u64);
        self
    }

    /// A map of `n` key-value pairs (keys and values follow alternately): RESP3's `%n`,
    /// RESP2's array of `2n`.
    pub fn map_len(&mut self, n: usize) -> &mut Self {
        match self.version {
            RespVersion::Resp2 => self.header(b'*', (n as u64).saturating_mul(2)),
            RespVersion::Resp3 => self.header(b'%', n as u64),
        }
        self
    }

    /// A set of `n` values: RESP3's `~n`, RESP2's array.
    pub fn set_len(&mut self, n: usize) -> &mut Self {
        self.header(self.pick(b'*', b'~'), n as u64);
        self
    }

    /// An out-of-band push of `n` values: RESP3's `>n`; for RESP2 an array, as Redis sends
    /// pub/sub messages to RESP2 clients.
    pub fn push_len(&mut self, n: usize) -> &mut Self {
        self.header(self.pick(b'*', b'>'), n as u64);
        self
    }

    /// A boolean: RESP3's `#t`/`#f`, RESP2's integer 1/0.
    pub fn boolean(&mut self, b: bool) -> &mut Self {
        self.out.extend_from_slice(match (self.version, b) {
            (RespVersion::Resp2, true) => b":1\r\n",
            (RespVersion::Resp2, false) => b":0\r\n",
            (RespVersion::Resp3, true) => b"#t\r\n",
            (RespVersion::Resp3, false) => b"#f\r\n",
        });
        self
    }

    /// A double as Redis 7.0's `addReplyDouble` writes it: C's `%.17g` (`0.1` is
    /// `0.10000000000000001`, `1e300` is `1.0000000000000001e+300`), infinities as `inf` and
    /// `-inf`, NaN as glibc prints it (`nan`, `-nan`); RESP3's `,` line, RESP2's bulk string.
    pub fn double(&mut self, d: f64) -> &mut Self {
        let mut text = [0u8; 32];
        let len = format_g17(d, &mut text);
        match self.version {
            RespVersion::Resp2 => return self.bulk(&text[..len]),
            RespVersion::Resp3 => {
                self.out.push(b',');
                self.out.extend_from_slice(&text[..len]);
                self.out.extend_from_slice(b"\r\n");
            }
        }
        self
    }

    /// A verbatim string (`addReplyVerbatim`): RESP3's `=len` and `fmt:` before the text,
    /// `fmt` being the first three bytes of `format` padded with spaces (`txt`, `mkd`);
    /// RESP2's bulk string of the text alone.
    pub fn verbatim(&mut self, format: &str, text: impl AsRef<[u8]>) -> &mut Self {
        let text = text.as_ref();
        if self.version == RespVersion::Resp2 {
            return self.bulk(text);
        }
        self.header(b'=', text.len() as u64 + 4);
        let mut ext = [b' '; 3];
        for (slot, b) in ext.iter_mut().zip(format.bytes()) {
            *slot = b;
        }
        self.out.extend_from_slice(&ext);
        self.out.push(b':');
        self.out.extend_from_slice(text);
        self.out.extend_from_slice(b"\r\n");
        self
    }

    fn pick(&self, resp2: u8, resp3: u8) -> u8 {
        match self.version {
            RespVersion::Resp2 => resp2,
            RespVersion::Resp3 => resp3,
        }
    }

    fn header(&mut self, prefix: u8, n: u64) {
        self.out.push(prefix);
        push_u64(self.out, n);
        self.out.extend_from_slice(b"\r\n");
    }
}

/// `text` with every `\r` and `\n` made a space (`sdsmapchars(s, "\r\n", "  ", 2)`).
fn push_line_safe(out: &mut Vec<u8>, text: &[u8]) {
    out.extend(
        text.iter()
            .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
}

fn push_u64(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    out.extend_from_slice(crate::protocol::decimal(n, &mut digits));
}

fn push_i64(out: &mut Vec<u8>, n: i64) {
    if n < 0 {
        out.push(b'-');
    }
    push_u64(out, n.unsigned_abs());
}

/// Writes `d` as C's `printf("%.17g", d)` does with glibc into `buf`; returns the length.
///
/// `%.17g` rounds to 17 significant digits (the `%.16e` digits, which Rust's formatter
/// rounds exactly as glibc does), then uses the exponent `x` of that form: `%f` style when
/// `-4 <= x < 17`, `%e` style (at least two exponent digits) otherwise; trailing zeros of
/// the fraction go, and the point with them when nothing is left.
pub fn format_g17(d: f64, buf: &mut [u8; 32]) -> usize {
    let mut at = 0;
    let mut put = |bytes: &[u8]| {
        buf[at..at + bytes.len()].copy_from_slice(bytes);
        at += bytes.len();
    };
    if d.is_sign_negative() {
        put(b"-");
    }
    if d.is_nan() || d.is_infinite() {
        put(if d.is_nan() { b"nan" } else { b"inf" });
        return at;
    }
    // "d.dddddddddddddddde<x>": 17 digits and a decimal exponent; at most 24 bytes.
    let mut sci = [0u8; 32];
    let mut cursor = &mut sci[..];
    write!(cursor, "{:.16e}", d.abs()).expect("32 bytes hold any f64 in {:.16e}");
    let written = 32 - cursor.len();
    let (mantissa, exp) = sci[..written].split_at(18);
    let exp: i32 = std::str::from_utf8(&exp[1..])
        .ok()
        .and_then(|e| e.parse().ok())
        .expect("the exponent of {:e} is an integer");
    let mut digits = [0u8; 17];
    digits[0] = mantissa[0];
    digits[1..].copy_from_slice(&mantissa[2..]);
    let significant = 17 - digits.iter().rev().take_while(|&&c| c == b'0').count();
    if (-4..17).contains(&exp) {
        if exp >= 0 {
            let int_len = exp as usize + 1;
            put(&digits[..int_len]);
            if significant > int_len {
                put(b".");
                put(&digits[int_len..significant]);
            }
        } else {
            put(b"0.");
            for _ in 0..(-exp - 1) {
                put(b"0");
            }
            put(&digits[..significant.max(1)]);
        }
    } else {
        put(&digits[..1]);
        if significant > 1 {
            put(b".");
            put(&digits[1..significant]);
        }
        put(if exp < 0 { b"e-" } else { b"e+" });
        // |x| <= 324: two or three digits.
        let abs = exp.unsigned_abs();
        if abs >= 100 {
            put(&[b'0' + (abs / 100) as u8]);
        }
        put(&[b'0' + (abs / 10 % 10) as u8, b'0' + (abs % 10) as u8]);
    }
    at
}
