//! The hand-written encoders write exactly the serde bytes, and the hand-written decoders
//! agree with serde on every body: the same message where they take it, nothing where they
//! do not (then the caller's serde path decides, so errors are serde's own).

use proptest::prelude::*;

use super::*;
use crate::frame::{check_nesting, decode_body, encode_frame};
use crate::limits::FRAME_NESTING_DEPTH_MAX;

fn key() -> impl Strategy<Value = Key> {
    // Up to 300 bytes: bin 8 and bin 16 lengths.
    proptest::collection::vec(any::<u8>(), 0..300).prop_map(Key::new)
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![proptest::collection::vec(any::<u8>(), 0..40), proptest::collection::vec(any::<u8>(), 200..600)]
}

/// Integers of every width, so every `write_uint` form comes up.
fn int() -> impl Strategy<Value = u64> {
    prop_oneof![0..128u64, 128..256u64, 256..65_536u64, 65_536..=u64::from(u32::MAX), any::<u64>()]
}

fn write_id() -> impl Strategy<Value = Option<WriteId>> {
    // A floor of 0 is left out of the encoding; any other is a third field.
    proptest::option::of((int(), int(), prop_oneof![Just(0u64), int()]).prop_map(|(client, n, floor)| WriteId {
        client,
        n,
        floor,
    }))
}

fn version() -> impl Strategy<Value = Version> {
    (int(), any::<u32>()).prop_map(|(seq, index)| Version { seq: Seq(seq), index })
}

fn hot_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        key().prop_map(|key| Op::Get { key }),
        (key(), bytes(), write_id()).prop_map(|(key, value, write_id)| Op::Put { key, value, write_id }),
        (key(), write_id()).prop_map(|(key, write_id)| Op::Delete { key, write_id }),
    ]
}

fn hot_request() -> impl Strategy<Value = Request> {
    (int(), proptest::option::of(any::<u32>()), hot_op()).prop_map(|(id, deadline_ms, op)| Request {
        id: RequestId(id),
        deadline_ms,
        op,
    })
}

fn hot_reply() -> impl Strategy<Value = Reply> {
    prop_oneof![
        proptest::option::of((bytes(), version()).prop_map(|(value, version)| Versioned { value, version }))
            .prop_map(Reply::Value),
        version().prop_map(|version| Reply::Written { version }),
        (int(), version()).prop_map(|(removed, version)| Reply::Deleted { removed, version }),
    ]
}

fn hot_response() -> impl Strategy<Value = Response> {
    (int(), hot_reply()).prop_map(|(id, reply)| Response { id: RequestId(id), result: Ok(reply) })
}

fn as_ref(req: &Request) -> RequestRef<'_> {
    RequestRef { id: req.id, deadline_ms: req.deadline_ms, op: &req.op }
}

/// Frames `msg` both ways; they must be the same bytes.
fn same_frame_request(req: &Request) -> Vec<u8> {
    let (mut fast, mut serde) = (vec![9u8], vec![9u8]);
    encode_request(&as_ref(req), &mut fast).unwrap();
    encode_frame(req, &mut serde).unwrap();
    assert_eq!(fast, serde, "{req:?}");
    serde.split_off(1 + FRAME_HEADER_BYTES)
}

fn same_frame_response(resp: &Response) -> Vec<u8> {
    let (mut fast, mut serde) = (vec![9u8], vec![9u8]);
    encode_response(resp, &mut fast).unwrap();
    encode_frame(resp, &mut serde).unwrap();
    assert_eq!(fast, serde, "{resp:?}");
    serde.split_off(1 + FRAME_HEADER_BYTES)
}

/// Where the fast decoder takes a body, serde takes it too, as the same message; and the
/// public decoder answers as serde does on every body.
fn agrees_request(body: &[u8]) {
    let serde = decode_body::<Request>(body);
    if let Some(fast) = read_request(body) {
        match &serde {
            Ok(s) => assert_eq!(&fast, s, "{body:02x?}"),
            Err(e) => panic!("fast decoder took a body serde refuses ({e}): {body:02x?}"),
        }
    }
    assert_eq!(format!("{:?}", decode_request(body)), format!("{serde:?}"));
}

fn agrees_response(body: &[u8]) {
    let serde = decode_body::<Response>(body);
    if let Some(fast) = read_response(body) {
        match &serde {
            Ok(s) => assert_eq!(&fast, s, "{body:02x?}"),
            Err(e) => panic!("fast decoder took a body serde refuses ({e}): {body:02x?}"),
        }
    }
    assert_eq!(format!("{:?}", decode_response(body)), format!("{serde:?}"));
}

/// Damages a body: cut, a byte changed, bytes inserted or appended.
fn damaged(body: &[u8], how: u8, at: usize, byte: u8) -> Vec<u8> {
    let mut b = body.to_vec();
    let at = if b.is_empty() { 0 } else { at % (b.len() + 1) };
    match how % 4 {
        0 => b.truncate(at),
        1 if at < b.len() => b[at] = byte,
        1 => b.push(byte),
        2 => b.insert(at, byte),
        _ => b.extend_from_slice(&[byte, 0xc0]),
    }
    b
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn hot_requests_encode_to_the_serde_bytes_and_decode_as_serde_does(req in hot_request()) {
        let body = same_frame_request(&req);
        // Debug shows a write id's floor, which `==` (identity: client and n) ignores.
        prop_assert_eq!(format!("{:?}", read_request(&body)), format!("{:?}", Some(req)), "the canonical shape is taken");
        agrees_request(&body);
    }

    #[test]
    fn hot_responses_encode_to_the_serde_bytes_and_decode_as_serde_does(resp in hot_response()) {
        let body = same_frame_response(&resp);
        prop_assert_eq!(read_response(&body), Some(resp), "the canonical shape is taken");
        agrees_response(&body);
    }

    #[test]
    fn damaged_requests_never_panic_and_decode_as_serde_does(
        req in hot_request(), how in any::<u8>(), at in any::<usize>(), byte in any::<u8>(),
    ) {
        let body = rmp_serde::to_vec_named(&req).unwrap();
        agrees_request(&damaged(&body, how, at, byte));
    }

    #[test]
    fn damaged_responses_never_panic_and_decode_as_serde_does(
        resp in hot_response(), how in any::<u8>(), at in any::<usize>(), byte in any::<u8>(),
    ) {
        let body = rmp_serde::to_vec_named(&resp).unwrap();
        agrees_response(&damaged(&body, how, at, byte));
    }

    #[test]
    fn arbitrary_bodies_decode_as_serde_does(body in proptest::collection::vec(any::<u8>(), 0..80)) {
        agrees_request(&body);
        agrees_response(&body);
    }
}

/// Every other op and reply, and error results, go through serde, to the same bytes.
#[test]
fn other_messages_go_through_serde_unchanged() {
    for op in crate::protocol::tests::one_of_each() {
        let req = Request { id: RequestId(3), deadline_ms: None, op };
        let body = same_frame_request(&req);
        agrees_request(&body);
        assert_eq!(decode_request(&body).unwrap(), req);
    }
    let others = [
        Ok(Reply::Pong),
        Ok(Reply::Values(vec![None])),
        Ok(Reply::TxnResolved { committed: true }),
        Err(crate::error::Error::Fenced),
        Err(crate::error::Error::Timeout),
    ];
    for result in others {
        let resp = Response { id: RequestId(4), result };
        let body = same_frame_response(&resp);
        assert!(read_response(&body).is_none());
        assert_eq!(decode_response(&body).unwrap(), resp);
    }
}

/// Valid encodings other than the canonical one are left to serde, which takes them as
/// before: fields in another order, a struct as an array, a key as `str`, an integer in a
/// longer or signed form.
#[test]
fn valid_non_canonical_bodies_decode_as_before() {
    use rmp::encode as e;
    let get = |key: &[u8]| Request { id: RequestId(5), deadline_ms: None, op: Op::Get { key: Key::new(key) } };
    // Fields in another order.
    let mut b = Vec::new();
    e::write_map_len(&mut b, 3).unwrap();
    e::write_str(&mut b, "op").unwrap();
    e::write_map_len(&mut b, 1).unwrap();
    e::write_str(&mut b, "Get").unwrap();
    e::write_map_len(&mut b, 1).unwrap();
    e::write_str(&mut b, "key").unwrap();
    e::write_bin(&mut b, b"k").unwrap();
    e::write_str(&mut b, "id").unwrap();
    e::write_uint(&mut b, 5).unwrap();
    e::write_str(&mut b, "deadline_ms").unwrap();
    e::write_nil(&mut b).unwrap();
    assert!(read_request(&b).is_none());
    assert_eq!(decode_request(&b).unwrap(), get(b"k"));
    // The key as `str`, the id as a u64 and as a signed integer.
    for id in [&[0xcfu8, 0, 0, 0, 0, 0, 0, 0, 5][..], &[0xd0, 5][..]] {
        let mut b = Vec::new();
        e::write_map_len(&mut b, 3).unwrap();
        e::write_str(&mut b, "id").unwrap();
        b.extend_from_slice(id);
        e::write_str(&mut b, "deadline_ms").unwrap();
        e::write_nil(&mut b).unwrap();
        e::write_str(&mut b, "op").unwrap();
        e::write_map_len(&mut b, 1).unwrap();
        e::write_str(&mut b, "Get").unwrap();
        e::write_map_len(&mut b, 1).unwrap();
        e::write_str(&mut b, "key").unwrap();
        let canonical = b.clone();
        e::write_bin(&mut b, b"k").unwrap();
        agrees_request(&b);
        assert_eq!(decode_request(&b).unwrap(), get(b"k"));
        let mut as_str = canonical;
        e::write_str(&mut as_str, "k").unwrap();
        assert!(read_request(&as_str).is_none());
        assert_eq!(decode_request(&as_str).unwrap(), get(b"k"));
    }
}

/// Invalid values in the canonical shape: serde's errors, word for word.
#[test]
fn out_of_range_and_wrong_types_get_serdes_errors() {
    let req = Request { id: RequestId(1), deadline_ms: Some(7), op: Op::Get { key: Key::from("k") } };
    let body = rmp_serde::to_vec_named(&req).unwrap();
    // deadline_ms 7 is the byte after the name "deadline_ms".
    let at = body.windows(11).position(|w| w == b"deadline_ms").unwrap() + 11;
    assert_eq!(body[at], 7);
    for replacement in [
        &[0xcf, 0, 0, 0, 1, 0, 0, 0, 0][..], // over u32
        &[0xff][..],                         // negative
        &[0xa1, b'7'][..],                   // a string
        &[0xcb, 0, 0, 0, 0, 0, 0, 0, 0][..], // a float
    ] {
        let mut b = body[..at].to_vec();
        b.extend_from_slice(replacement);
        b.extend_from_slice(&body[at + 1..]);
        assert!(read_request(&b).is_none());
        let (fast, serde) = (decode_request(&b), decode_body::<Request>(&b));
        assert!(serde.is_err(), "{replacement:02x?}");
        assert_eq!(format!("{fast:?}"), format!("{serde:?}"));
    }
}

/// The fast decoders take only shallow shapes, so nothing they take could fail the nesting
/// check, and a message with bytes after it is left to `decode_body`, which refuses it.
#[test]
fn the_limits_of_decode_body_still_hold() {
    let req = Request {
        id: RequestId(1),
        deadline_ms: None,
        op: Op::Put { key: Key::from("k"), value: vec![1], write_id: Some(WriteId::new(1, 2)) },
    };
    let body = rmp_serde::to_vec_named(&req).unwrap();
    assert!(check_nesting(&body, 3).is_err() && check_nesting(&body, 4).is_ok(), "a hot request nests 4 deep");
    let resp = Response {
        id: RequestId(1),
        result: Ok(Reply::Value(Some(Versioned { value: vec![1], version: Version { seq: Seq(1), index: 0 } }))),
    };
    let resp = rmp_serde::to_vec_named(&resp).unwrap();
    assert!(check_nesting(&resp, 4).is_err() && check_nesting(&resp, 5).is_ok(), "a hot response nests 5 deep");
    assert!(check_nesting(&resp, FRAME_NESTING_DEPTH_MAX).is_ok(), "so the limit never refuses one");
    let mut longer = body.clone();
    longer.push(0xc0);
    assert!(read_request(&longer).is_none());
    assert!(matches!(decode_request(&longer), Err(FrameError::Malformed(m)) if m.contains("unexpected bytes")));
}

/// A value too large for a frame is refused with `encode_frame`'s error, and the buffer is
/// left as it was.
#[test]
fn an_oversized_frame_is_refused_like_encode_frame_does() {
    let req = Request {
        id: RequestId(1),
        deadline_ms: None,
        op: Op::Put { key: Key::from("k"), value: vec![0; FRAME_BYTES_MAX], write_id: None },
    };
    let mut buf = vec![1, 2, 3];
    let err = encode_request(&as_ref(&req), &mut buf).unwrap_err();
    assert!(matches!(err, FrameError::TooLarge { max, .. } if max == FRAME_BYTES_MAX), "{err:?}");
    assert_eq!(buf, [1, 2, 3]);
    // A value over 65,535 bytes (bin 32) is the serde bytes too.
    let fits = Request { op: Op::Put { key: Key::from("k"), value: vec![7; 70_000], write_id: None }, ..req };
    same_frame_request(&fits);
}

/// Every fixed part is what `rmp` writes for its map headers and names.
#[test]
fn the_fixed_parts_are_rmps_own_encoding() {
    use rmp::encode as e;
    enum Part {
        Map(u32),
        Name(&'static str),
    }
    use Part::{Map, Name};
    let table: &[(&[u8], &[Part])] = &[
        (REQUEST_ID, &[Map(3), Name("id")]),
        (DEADLINE_MS, &[Name("deadline_ms")]),
        (OP_GET, &[Name("op"), Map(1), Name("Get"), Map(1), Name("key")]),
        (OP_PUT, &[Name("op"), Map(1), Name("Put"), Map(3), Name("key")]),
        (OP_DELETE, &[Name("op"), Map(1), Name("Delete"), Map(2), Name("key")]),
        (VALUE, &[Name("value")]),
        (WRITE_ID, &[Name("write_id")]),
        (CLIENT, &[Map(2), Name("client")]),
        (N, &[Name("n")]),
        (RESPONSE_ID, &[Map(2), Name("id")]),
        (OK_VALUE, &[Name("result"), Map(1), Name("Ok"), Map(1), Name("Value")]),
        (OK_WRITTEN, &[Name("result"), Map(1), Name("Ok"), Map(1), Name("Written"), Map(1), Name("version")]),
        (OK_DELETED, &[Name("result"), Map(1), Name("Ok"), Map(1), Name("Deleted"), Map(2), Name("removed")]),
        (VERSIONED, &[Map(2), Name("value")]),
        (VERSION, &[Name("version")]),
        (SEQ, &[Map(2), Name("seq")]),
        (INDEX, &[Name("index")]),
    ];
    for (fixed, parts) in table {
        let mut want = Vec::new();
        for part in *parts {
            match part {
                Map(n) => drop(e::write_map_len(&mut want, *n).unwrap()),
                Name(s) => e::write_str(&mut want, s).unwrap(),
            }
        }
        assert_eq!(*fixed, &want[..], "{:?}", String::from_utf8_lossy(fixed));
    }
}
