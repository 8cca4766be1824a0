//! Any bytes through the wire decoders: no panic, and whatever decodes re-encodes to a frame
//! that decodes to the same value.
#![no_main]

use evring::protocol::{
    decode_request, decode_response, encode_request, encode_response, FrameHeader,
    FRAME_HEADER_BYTES,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < FRAME_HEADER_BYTES {
        return;
    }
    let header: [u8; FRAME_HEADER_BYTES] = data[..FRAME_HEADER_BYTES].try_into().unwrap();
    let Ok(h) = FrameHeader::parse(&header) else {
        return;
    };
    let body = &data[FRAME_HEADER_BYTES..];
    if let Ok(req) = decode_request(h.opcode, body) {
        let mut out = Vec::new();
        encode_request(&mut out, h.request_id, &req);
        let again = decode_request(out[4], &out[FRAME_HEADER_BYTES..]).expect("re-decode");
        // NaN values compare unequal; compare the encodings instead.
        let mut out2 = Vec::new();
        encode_request(&mut out2, h.request_id, &again);
        assert_eq!(out, out2);
    }
    if let Ok(resp) = decode_response(h.opcode, body) {
        let mut out = Vec::new();
        encode_response(&mut out, h.request_id, 0, &resp);
        let again = decode_response(out[4], &out[FRAME_HEADER_BYTES..]).expect("re-decode");
        let mut out2 = Vec::new();
        encode_response(&mut out2, h.request_id, 0, &again);
        assert_eq!(out, out2);
    }
});
