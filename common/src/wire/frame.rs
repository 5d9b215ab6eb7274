//! The frame codec: a u32 big-endian length, then that many bytes of one MessagePack map
//! (`rmp_serde` named encoding, byte strings as msgpack `bin`).
//!
//! Decoding never panics and never allocates more than the announced length, which is
//! checked against [`FRAME_BYTES_MAX`] before anything is read; the nesting of arrays and
//! maps is checked against [`FRAME_NESTING_DEPTH_MAX`] before the body is decoded.

use bytes::{Buf, BytesMut};
use serde::{Serialize, de::DeserializeOwned};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::Error;
use crate::limits::{FRAME_BYTES_MAX, FRAME_NESTING_DEPTH_MAX};

/// Bytes of the length prefix.
pub const FRAME_HEADER_BYTES: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes is over the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("connection closed in the middle of a frame ({got} of {want} bytes)")]
    Truncated { got: usize, want: usize },
    /// Arrays and maps nest deeper than any message of the protocol: refused before decoding,
    /// because serde decodes nesting by recursion and a deep enough frame would overflow
    /// the stack (which aborts the whole process).
    #[error("frame nests arrays and maps more than {max} deep")]
    TooDeep { max: usize },
    #[error("frame is not a valid message: {0}")]
    Malformed(String),
    #[error("frame could not be encoded: {0}")]
    Encode(String),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

impl From<FrameError> for Error {
    fn from(e: FrameError) -> Error {
        match e {
            FrameError::TooLarge { len, max } => Error::too_large("frame", len, max),
            FrameError::TooDeep { max } => Error::too_large("frame nesting depth", max + 1, max),
            FrameError::Malformed(m) => Error::invalid(m),
            FrameError::Truncated { .. } | FrameError::Io(_) => Error::unavailable(e.to_string()),
            FrameError::Encode(m) => Error::internal(m),
        }
    }
}

/// Appends one frame holding `msg` to `buf` (which may already hold earlier frames, so a
/// caller can batch several frames into one write and reuse the buffer).
/// On error `buf` is left as it was.
pub fn encode_frame<T: Serialize + ?Sized>(msg: &T, buf: &mut Vec<u8>) -> Result<(), FrameError> {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; FRAME_HEADER_BYTES]);
    if let Err(e) = rmp_serde::encode::write_named(buf, msg) {
        buf.truncate(start);
        return Err(FrameError::Encode(e.to_string()));
    }
    let body_len = buf.len() - start - FRAME_HEADER_BYTES;
    if body_len > FRAME_BYTES_MAX {
        buf.truncate(start);
        return Err(FrameError::TooLarge { len: body_len, max: FRAME_BYTES_MAX });
    }
    buf[start..start + FRAME_HEADER_BYTES].copy_from_slice(&(body_len as u32).to_be_bytes());
    Ok(())
}

/// Decodes one message from a frame body. The whole body must be one message: trailing
/// bytes are an error, so a desynchronised stream is noticed at once.
/// The nesting is checked first ([`check_nesting`]), so no frame can make the decoder
/// recurse deeper than [`FRAME_NESTING_DEPTH_MAX`].
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    let end = check_nesting(body, FRAME_NESTING_DEPTH_MAX)?;
    if end != body.len() {
        return Err(FrameError::Malformed(format!("{} unexpected bytes after the message", body.len() - end)));
    }
    // From the slice, not through `io::Read`: strings and byte strings are copied out in one
    // piece (through a reader, `read_to_end` grew them; a tenth of a client's instructions).
    rmp_serde::from_slice(body).map_err(|e| FrameError::Malformed(e.to_string()))
}

/// Walks the first MessagePack value in `body` without decoding it, iteratively (its memory
/// is one counter per open array or map, at most `max_depth` of them), and refuses it with
/// [`FrameError::TooDeep`] when arrays and maps nest more than `max_depth` deep (a scalar at
/// the top is depth 0, a map at the top depth 1). A value cut short is `Malformed`. It
/// stops at the end of the first value and returns where it ends; `decode_body` checks that
/// nothing follows. `max_depth` is at most [`FRAME_NESTING_DEPTH_MAX`] (a larger one is taken
/// as that limit: nothing deeper is decoded anyway).
pub fn check_nesting(body: &[u8], max_depth: usize) -> Result<usize, FrameError> {
    let max_depth = max_depth.min(FRAME_NESTING_DEPTH_MAX);
    // Values still to read in each open array or map (a map's count is keys plus values).
    // On the stack: every frame of both sides goes through here, and a heap allocation was
    // a sixth of its cost.
    let mut open = OpenStack { counts: [0; FRAME_NESTING_DEPTH_MAX], len: 0 };
    let mut pos = 0usize;
    loop {
        let marker = *body.get(pos).ok_or_else(|| FrameError::Malformed("message is cut short".into()))?;
        pos += 1;
        // What follows the marker: `skip` bytes of payload, or a container of `children`.
        let (skip, children): (u64, Option<u64>) = match marker {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, None),
            0x80..=0x8f => (0, Some(2 * u64::from(marker & 0x0f))),
            0x90..=0x9f => (0, Some(u64::from(marker & 0x0f))),
            0xa0..=0xbf => (u64::from(marker & 0x1f), None),
            0xc1 => return Err(FrameError::Malformed("byte c1 is never used in MessagePack".into())),
            // bin 8/16/32, str 8/16/32: a length, then that many bytes.
            0xc4 | 0xd9 => (be_uint(body, &mut pos, 1)?, None),
            0xc5 | 0xda => (be_uint(body, &mut pos, 2)?, None),
            0xc6 | 0xdb => (be_uint(body, &mut pos, 4)?, None),
            // ext 8/16/32: a length, a type byte, then the data.
            0xc7 => (be_uint(body, &mut pos, 1)? + 1, None),
            0xc8 => (be_uint(body, &mut pos, 2)? + 1, None),
            0xc9 => (be_uint(body, &mut pos, 4)? + 1, None),
            0xca => (4, None),
            0xcb => (8, None),
            0xcc | 0xd0 => (1, None),
            0xcd | 0xd1 => (2, None),
            0xce | 0xd2 => (4, None),
            0xcf | 0xd3 => (8, None),
            // fixext 1/2/4/8/16: a type byte, then the data.
            0xd4 => (2, None),
            0xd5 => (3, None),
            0xd6 => (5, None),
            0xd7 => (9, None),
            0xd8 => (17, None),
            0xdc => (0, Some(be_uint(body, &mut pos, 2)?)),
            0xdd => (0, Some(be_uint(body, &mut pos, 4)?)),
            0xde => (0, Some(2 * be_uint(body, &mut pos, 2)?)),
            0xdf => (0, Some(2 * be_uint(body, &mut pos, 4)?)),
        };
        // A length may claim more than the body holds: that is cut short, never a slice past
        // the end (and usize::try_from keeps 32-bit targets honest).
        pos = usize::try_from(skip)
            .ok()
            .and_then(|skip| pos.checked_add(skip))
            .filter(|&end| end <= body.len())
            .ok_or_else(|| FrameError::Malformed("message is cut short".into()))?;
        if let Some(n) = children {
            // An empty container counts too: the decoder still descends into it.
            if open.len() >= max_depth {
                return Err(FrameError::TooDeep { max: max_depth });
            }
            if n > 0 {
                open.push(n);
                continue;
            }
        }
        // The value is complete (a scalar or an empty container): count it in its parent,
        // and close every parent it completes.
        loop {
            match open.last_mut() {
                None => return Ok(pos),
                Some(left) => {
                    *left -= 1;
                    if *left > 0 {
                        break;
                    }
                    open.pop();
                }
            }
        }
    }
}

/// The counts of `check_nesting`'s open containers, at most `FRAME_NESTING_DEPTH_MAX`
/// (`check_nesting` refuses a deeper value before pushing).
struct OpenStack {
    counts: [u64; FRAME_NESTING_DEPTH_MAX],
    len: usize,
}

impl OpenStack {
    fn len(&self) -> usize {
        self.len
    }

    fn push(&mut self, n: u64) {
        // `check_nesting` checks the depth first; a slot past the end is never written.
        if let Some(slot) = self.counts.get_mut(self.len) {
            *slot = n;
            self.len += 1;
        }
    }

    fn last_mut(&mut self) -> Option<&mut u64> {
        self.len.checked_sub(1).and_then(|i| self.counts.get_mut(i))
    }

    fn pop(&mut self) {
        self.len = self.len.saturating_sub(1);
    }
}

/// Reads a big-endian unsigned integer of `bytes` bytes (1, 2 or 4) at `pos`.
fn be_uint(body: &[u8], pos: &mut usize, bytes: usize) -> Result<u64, FrameError> {
    let end = pos.checked_add(bytes).filter(|&end| end <= body.len());
    let field = end.map(|end| &body[*pos..end]).ok_or_else(|| FrameError::Malformed("message is cut short".into()))?;
    *pos += bytes;
    Ok(field.iter().fold(0u64, |v, &b| (v << 8) | u64::from(b)))
}

/// Reads the length prefix and checks it against the limit.
fn body_len(header: [u8; FRAME_HEADER_BYTES], max: usize) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    Ok(len)
}

/// Reads one frame body into `body` (cleared first, so the caller reuses one buffer).
/// Returns `Ok(false)` on a clean end of stream before a frame starts.
pub async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R, body: &mut Vec<u8>) -> Result<bool, FrameError> {
    let mut header = [0u8; FRAME_HEADER_BYTES];
    let mut got = 0;
    while got < FRAME_HEADER_BYTES {
        let n = reader.read(&mut header[got..]).await?;
        if n == 0 {
            if got == 0 {
                return Ok(false);
            }
            return Err(FrameError::Truncated { got, want: FRAME_HEADER_BYTES });
        }
        got += n;
    }
    let len = body_len(header, FRAME_BYTES_MAX)?;
    body.clear();
    body.reserve(len);
    // Into the spare capacity, not a zero-filled body: zeroing every body first cost the
    // store process ~4 % of its instructions per durable put (issue 16). `take` stops the
    // read at the frame's end (the next frame's bytes stay in the reader).
    while body.len() < len {
        let want = (len - body.len()) as u64;
        let n = (&mut *reader).take(want).read_buf(body).await?;
        if n == 0 {
            return Err(FrameError::Truncated { got: body.len(), want: len });
        }
    }
    Ok(true)
}

/// Encodes `msg` into `scratch` (cleared first) and writes it as one frame.
pub async fn write_frame<W: AsyncWrite + Unpin, T: Serialize + ?Sized>(
    writer: &mut W,
    msg: &T,
    scratch: &mut Vec<u8>,
) -> Result<(), FrameError> {
    scratch.clear();
    encode_frame(msg, scratch)?;
    writer.write_all(scratch).await?;
    Ok(())
}

/// A `tokio_util` codec yielding frame bodies, for use with `FramedRead`.
#[derive(Debug, Clone)]
pub struct FrameCodec {
    max_body_bytes: usize,
}

impl Default for FrameCodec {
    fn default() -> Self {
        FrameCodec { max_body_bytes: FRAME_BYTES_MAX }
    }
}

impl FrameCodec {
    /// A codec with a lower limit than [`FRAME_BYTES_MAX`] (never higher).
    pub fn with_max_body_bytes(max_body_bytes: usize) -> FrameCodec {
        FrameCodec { max_body_bytes: max_body_bytes.min(FRAME_BYTES_MAX) }
    }
}

impl tokio_util::codec::Decoder for FrameCodec {
    type Item = BytesMut;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, FrameError> {
        if src.len() < FRAME_HEADER_BYTES {
            return Ok(None);
        }
        let mut header = [0u8; FRAME_HEADER_BYTES];
        header.copy_from_slice(&src[..FRAME_HEADER_BYTES]);
        let len = body_len(header, self.max_body_bytes)?;
        if src.len() < FRAME_HEADER_BYTES + len {
            src.reserve(FRAME_HEADER_BYTES + len - src.len());
            return Ok(None);
        }
        src.advance(FRAME_HEADER_BYTES);
        Ok(Some(src.split_to(len)))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, FrameError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            None => {
                let want = if src.len() < FRAME_HEADER_BYTES {
                    FRAME_HEADER_BYTES
                } else {
                    FRAME_HEADER_BYTES + u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize
                };
                Err(FrameError::Truncated { got: src.len(), want })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::RequestId;
    use crate::key::Key;
    use crate::protocol::{Op, Request};
    use tokio_util::codec::Decoder;

    #[test]
    fn a_body_is_one_message_and_nothing_after_it() {
        use crate::protocol::{Op, Request};
        let req = Request { id: RequestId(7), deadline_ms: Some(100), op: Op::Get { key: Key::from("k") } };
        let body = rmp_serde::to_vec_named(&req).unwrap();
        assert_eq!(decode_body::<Request>(&body).unwrap(), req);
        let mut longer = body.clone();
        longer.extend_from_slice(&[0xc0, 0xc0]);
        match decode_body::<Request>(&longer) {
            Err(FrameError::Malformed(why)) => assert_eq!(why, "2 unexpected bytes after the message"),
            other => panic!("trailing bytes must be refused, got {other:?}"),
        }
        assert!(matches!(decode_body::<Request>(&body[..body.len() - 1]), Err(FrameError::Malformed(_))));
        assert_eq!(check_nesting(&longer, FRAME_NESTING_DEPTH_MAX).unwrap(), body.len(), "where the first value ends");
    }

    fn sample() -> Request {
        Request {
            id: RequestId(7),
            deadline_ms: Some(1500),
            op: Op::Put { key: Key::from("k"), value: vec![1, 2, 3], write_id: None },
        }
    }

    #[test]
    fn round_trip_through_codec() {
        let mut buf = Vec::new();
        encode_frame(&sample(), &mut buf).unwrap();
        encode_frame(&sample(), &mut buf).unwrap();
        let mut src = BytesMut::from(&buf[..]);
        let mut codec = FrameCodec::default();
        for _ in 0..2 {
            let body = codec.decode(&mut src).unwrap().unwrap();
            let got: Request = decode_body(&body).unwrap();
            assert_eq!(got, sample());
        }
        assert!(codec.decode(&mut src).unwrap().is_none());
        assert!(codec.decode_eof(&mut src).unwrap().is_none());
    }

    #[test]
    fn partial_frames_wait_for_more() {
        let mut buf = Vec::new();
        encode_frame(&sample(), &mut buf).unwrap();
        let mut codec = FrameCodec::default();
        let mut src = BytesMut::new();
        for (i, b) in buf.iter().enumerate() {
            src.extend_from_slice(&[*b]);
            let out = codec.decode(&mut src).unwrap();
            assert_eq!(out.is_some(), i == buf.len() - 1);
        }
    }

    #[test]
    fn truncated_frame_at_eof_is_an_error() {
        let mut buf = Vec::new();
        encode_frame(&sample(), &mut buf).unwrap();
        for cut in 1..buf.len() {
            let mut src = BytesMut::from(&buf[..cut]);
            let err = FrameCodec::default().decode_eof(&mut src).unwrap_err();
            assert!(matches!(err, FrameError::Truncated { .. }), "cut {cut}: {err}");
        }
    }

    #[test]
    fn oversized_length_is_rejected_before_reading() {
        let mut src = BytesMut::new();
        src.extend_from_slice(&((FRAME_BYTES_MAX + 1) as u32).to_be_bytes());
        let err = FrameCodec::default().decode(&mut src).unwrap_err();
        assert!(
            matches!(err, FrameError::TooLarge { len, max } if len == FRAME_BYTES_MAX + 1 && max == FRAME_BYTES_MAX)
        );
        // Exactly at the limit is accepted (it waits for the body).
        let mut src = BytesMut::new();
        src.extend_from_slice(&(FRAME_BYTES_MAX as u32).to_be_bytes());
        assert!(FrameCodec::default().decode(&mut src).unwrap().is_none());
    }

    #[test]
    fn encoding_over_the_limit_fails_and_leaves_buffer() {
        let big = vec![0u8; FRAME_BYTES_MAX];
        let mut buf = vec![9u8];
        let err = encode_frame(&serde_bytes::Bytes::new(&big), &mut buf).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { .. }));
        assert_eq!(buf, vec![9u8]);
        // A body of exactly FRAME_BYTES_MAX bytes encodes: bin32 header is 5 bytes.
        let exact = vec![0u8; FRAME_BYTES_MAX - 5];
        let mut buf = Vec::new();
        encode_frame(&serde_bytes::Bytes::new(&exact), &mut buf).unwrap();
        assert_eq!(buf.len(), FRAME_HEADER_BYTES + FRAME_BYTES_MAX);
    }

    #[test]
    fn garbage_and_wrong_shapes_are_malformed() {
        for body in [&b""[..], b"\xc1", b"\xff\xff\xff", b"\x81\xa2id\xc0", b"\xdf\xff\xff\xff\xff"] {
            assert!(matches!(decode_body::<Request>(body), Err(FrameError::Malformed(_))));
        }
        // A valid message followed by junk.
        let mut body = rmp_serde::to_vec_named(&sample()).unwrap();
        body.push(0);
        assert!(matches!(decode_body::<Request>(&body), Err(FrameError::Malformed(_))));
    }

    #[tokio::test]
    async fn async_read_write() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            let mut scratch = Vec::new();
            for _ in 0..3 {
                write_frame(&mut a, &sample(), &mut scratch).await.unwrap();
            }
            a.write_all(&[0, 0]).await.unwrap();
        });
        let mut body = Vec::new();
        for _ in 0..3 {
            assert!(read_frame(&mut b, &mut body).await.unwrap());
            assert_eq!(decode_body::<Request>(&body).unwrap(), sample());
        }
        writer.await.unwrap();
        assert!(matches!(read_frame(&mut b, &mut body).await, Err(FrameError::Truncated { got: 2, want: 4 })));
    }

    /// A body read into a reused buffer is exactly the frame's bytes (none of the next
    /// frame's, none left over from a longer body read before), also when it arrives in
    /// small pieces.
    #[tokio::test]
    async fn read_frame_reads_exactly_one_body_into_a_reused_buffer() {
        let (mut a, mut b) = tokio::io::duplex(7);
        let writer = tokio::spawn(async move {
            for body in [vec![1u8; 300], vec![2u8; 5], vec![], vec![3u8; 40]] {
                a.write_all(&(body.len() as u32).to_be_bytes()).await.unwrap();
                a.write_all(&body).await.unwrap();
            }
            a.write_all(&10u32.to_be_bytes()).await.unwrap();
            a.write_all(&[4u8; 6]).await.unwrap();
        });
        let mut body = Vec::new();
        for want in [vec![1u8; 300], vec![2u8; 5], vec![], vec![3u8; 40]] {
            assert!(read_frame(&mut b, &mut body).await.unwrap());
            assert_eq!(body, want);
        }
        // Read before joining the writer: its last bytes do not fit the pipe's 7 bytes.
        assert!(matches!(read_frame(&mut b, &mut body).await, Err(FrameError::Truncated { got: 6, want: 10 })));
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn async_read_clean_eof_and_limits() {
        let (a, mut b) = tokio::io::duplex(64);
        drop(a);
        let mut body = Vec::new();
        assert!(!read_frame(&mut b, &mut body).await.unwrap());

        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        assert!(matches!(read_frame(&mut b, &mut body).await, Err(FrameError::TooLarge { .. })));
    }

    /// The smallest depth limit `body` passes: how deep its arrays and maps nest.
    fn depth_of(body: &[u8]) -> usize {
        (0..=FRAME_NESTING_DEPTH_MAX).find(|&d| check_nesting(body, d).is_ok()).expect("deeper than the limit")
    }

    /// `depth` arrays, each holding the next, around nothing.
    fn nested_arrays(depth: usize) -> Vec<u8> {
        let mut body = vec![0x91; depth.saturating_sub(1)];
        if depth > 0 {
            body.push(0x90);
        }
        body
    }

    /// A request frame body whose op is `levels` `Batch`es, each holding the next, around a
    /// `Ping`: `{id, deadline_ms, op: {Batch: {ops: [{Batch: {ops: [ ... Ping ]}}]}}}`.
    /// Each level nests 3 deep (the enum's map, the variant's map, the `ops` array).
    fn nested_batch_body(levels: usize) -> Vec<u8> {
        let mut body = vec![0x83, 0xa2, b'i', b'd', 0x01, 0xab];
        body.extend_from_slice(b"deadline_ms");
        body.push(0xc0);
        body.extend_from_slice(&[0xa2, b'o', b'p']);
        for _ in 0..levels {
            body.extend_from_slice(&[0x81, 0xa5]);
            body.extend_from_slice(b"Batch");
            body.extend_from_slice(&[0x81, 0xa3, b'o', b'p', b's', 0x91]);
        }
        body.push(0xa4);
        body.extend_from_slice(b"Ping");
        body
    }

    fn version(seq: u64) -> crate::key::Version {
        crate::key::Version { seq: crate::ids::Seq(seq), index: 3 }
    }

    /// The deepest messages of the protocol, one of each shape that nests.
    fn deepest_messages() -> Vec<(&'static str, Vec<u8>)> {
        use crate::error::{Error, OwnerHint};
        use crate::ids::{Epoch, NodeId, RangeId, Term};
        use crate::key::KeyRange;
        use crate::lists::PushId;
        use crate::protocol::*;
        use crate::txn::{TxnCheck, TxnCondition, TxnPart, TxnWrite};
        let id = RequestId(u64::MAX);
        let push_id = PushId { ms: 1, client: 2, n: 3 };
        let part = TxnPart {
            range_id: RangeId(1),
            node_addr: "127.0.0.1:7000".into(),
            checks: vec![
                TxnCheck { key: Key::from("a"), condition: TxnCondition::Version(version(9)) },
                TxnCheck { key: Key::from("b"), condition: TxnCondition::Absent },
            ],
            writes: vec![
                TxnWrite::Push { key: Key::from("l"), element: vec![1], push_id },
                TxnWrite::Put { key: Key::from("p"), value: vec![2] },
            ],
            reads: vec![Key::from("r")],
        };
        let node = NodeId::new("n1").unwrap();
        let request = |op| rmp_serde::to_vec_named(&Request { id, deadline_ms: Some(9), op }).unwrap();
        let response = |result| rmp_serde::to_vec_named(&Response { id, result }).unwrap();
        let versioned = Versioned { value: vec![1], version: version(4) };
        vec![
            ("txn", request(Op::Txn { txn_id: WriteId::new(1, 2), parts: vec![part.clone()], hold_ms: 10 })),
            (
                "txn_prepare",
                request(Op::TxnPrepare {
                    txn_id: WriteId::new(1, 2),
                    range_id: RangeId(1),
                    checks: part.checks.clone(),
                    writes: part.writes.clone(),
                    reads: part.reads.clone(),
                    hold_ms: 10,
                }),
            ),
            (
                "batch",
                request(Op::Batch {
                    ops: vec![
                        Op::Push { key: Key::from("l"), element: vec![1], push_id },
                        Op::Enqueue { queue: "q".into(), shard: 1, task_id: push_id, payload: vec![2] },
                    ],
                }),
            ),
            (
                "txn_committed",
                response(Ok(Reply::TxnCommitted {
                    versions: vec![vec![version(1)]],
                    values: vec![vec![Some(versioned.clone()), None]],
                })),
            ),
            ("values", response(Ok(Reply::Values(vec![Some(versioned)])))),
            (
                "master_status",
                response(Ok(Reply::Master(MasterStatus {
                    master_id: node.clone(),
                    active_term: Some(Term(3)),
                    lease_holder: Some(node.clone()),
                    lease_holder_rpc: Some("a".into()),
                    nodes: vec![NodeView {
                        node_id: node.clone(),
                        rpc_addr: "a".into(),
                        epoch: Epoch(2),
                        state: crate::protocol::NodeState::Live,
                        draining: false,
                        ranges: 1,
                        data_bytes: 1,
                        resident_bytes: 1,
                        memory_budget_bytes: 1,
                        ops_per_sec: 1,
                        lease_ms_left: 1,
                    }],
                    ranges: vec![RangeView {
                        range_id: RangeId(1),
                        range: KeyRange::new(Key::from("a"), Some(Key::from("b"))).unwrap(),
                        generation: 1,
                        owner: Some(node.clone()),
                        owner_epoch: Some(Epoch(2)),
                        data_bytes: 1,
                        log_bytes: 1,
                    }],
                    writes_refused_on_term: 0,
                }))),
            ),
            (
                "not_owner",
                response(Err(Error::NotOwner { hint: Some(OwnerHint { node_id: node, rpc_addr: "a".into() }) })),
            ),
            ("conflict", response(Err(Error::Conflict { reason: "x".into(), key: Some(Key::from("k")) }))),
        ]
    }

    /// Every real message shape fits the limit with room to spare (so a field added later
    /// does not make real traffic fail), and decodes through `decode_body`.
    #[test]
    fn real_messages_nest_well_within_the_limit() {
        let mut deepest = 0;
        for (name, body) in deepest_messages() {
            let depth = depth_of(&body);
            assert!(depth <= FRAME_NESTING_DEPTH_MAX / 2, "{name} nests {depth} deep");
            eprintln!("{name}: {depth} deep");
            deepest = deepest.max(depth);
        }
        assert!(deepest >= 6, "the sample shapes should include the deep ones, deepest is {deepest}");
        for (name, body) in deepest_messages() {
            let is_response = ["txn_committed", "values", "master_status", "not_owner", "conflict"].contains(&name);
            let ok = if is_response {
                decode_body::<crate::protocol::Response>(&body).is_ok()
            } else {
                decode_body::<Request>(&body).is_ok()
            };
            assert!(ok, "{name} does not decode");
        }
    }

    #[test]
    fn nesting_at_the_limit_passes_and_one_more_is_too_deep() {
        let at = nested_arrays(FRAME_NESTING_DEPTH_MAX);
        check_nesting(&at, FRAME_NESTING_DEPTH_MAX).unwrap();
        // It reaches the decoder, which finds the wrong shape.
        assert!(matches!(decode_body::<Request>(&at), Err(FrameError::Malformed(_))));
        let over = nested_arrays(FRAME_NESTING_DEPTH_MAX + 1);
        assert!(matches!(decode_body::<Request>(&over), Err(FrameError::TooDeep { max: FRAME_NESTING_DEPTH_MAX })));
        // Maps count the same, and so does an empty container at the bottom.
        // `{nil: {nil: ... nil}}`, then the same with an empty map in place of the last nil.
        let mut maps_at = [0x81, 0xc0].repeat(FRAME_NESTING_DEPTH_MAX);
        maps_at.push(0xc0);
        check_nesting(&maps_at, FRAME_NESTING_DEPTH_MAX).unwrap();
        let mut maps_over = maps_at[..maps_at.len() - 1].to_vec();
        maps_over.push(0x80);
        assert!(matches!(check_nesting(&maps_over, FRAME_NESTING_DEPTH_MAX), Err(FrameError::TooDeep { .. })));
        // A larger bound than the limit is the limit (the counts live in a fixed array).
        assert!(matches!(check_nesting(&over, FRAME_NESTING_DEPTH_MAX + 10), Err(FrameError::TooDeep { .. })));
        check_nesting(&at, FRAME_NESTING_DEPTH_MAX + 10).unwrap();
        // The wire error is TooLarge, naming the depth.
        let err: Error = FrameError::TooDeep { max: FRAME_NESTING_DEPTH_MAX }.into();
        assert!(
            matches!(&err, Error::TooLarge { size, max, .. } if *size == FRAME_NESTING_DEPTH_MAX as u64 + 1 && *max == FRAME_NESTING_DEPTH_MAX as u64),
            "{err:?}"
        );
    }

    /// A nested `Batch` within the depth limit decodes, and `Op::validate` refuses it.
    #[test]
    fn a_batch_in_a_batch_is_refused() {
        let levels = (FRAME_NESTING_DEPTH_MAX - 1) / 3;
        let req: Request = decode_body(&nested_batch_body(levels)).unwrap();
        assert!(matches!(req.op.validate(), Err(Error::Invalid { .. })), "{:?}", req.op.validate());
        assert!(matches!(decode_body::<Request>(&nested_batch_body(levels + 1)), Err(FrameError::TooDeep { .. })));
    }

    /// 100,000 nested `Batch`es (300,000 levels of maps and arrays, 1.5 MB) are refused
    /// before decoding. Before the nesting check this overflowed the test thread's stack and
    /// aborted the process.
    #[test]
    fn a_deeply_nested_batch_is_too_deep_not_a_stack_overflow() {
        let body = nested_batch_body(100_000);
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&body);
        let mut src = BytesMut::from(&frame[..]);
        let got = FrameCodec::default().decode(&mut src).unwrap().unwrap();
        assert!(matches!(decode_body::<Request>(&got), Err(FrameError::TooDeep { .. })));
        // What a server that cannot decode a request does next: look for its id.
        #[derive(serde::Deserialize)]
        struct IdOnly {
            #[allow(dead_code)]
            id: RequestId,
        }
        assert!(matches!(decode_body::<IdOnly>(&got), Err(FrameError::TooDeep { .. })));
        // Deep arrays with huge claimed lengths and nothing after them are cut short or too
        // deep, never a read past the end.
        assert!(decode_body::<Request>(&[0xdd, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(matches!(decode_body::<Request>(&[0xdf, 0xff, 0xff, 0xff, 0xff, 0xc0]), Err(FrameError::Malformed(_))));
    }

    /// A real request with some of its bytes replaced (and maybe cut short), in a frame
    /// with a valid length prefix: it decodes to some request or fails with a typed error,
    /// and whatever decodes can be validated, never a panic. Unlike random bytes, this gets
    /// past the length prefix and the first markers into the message's fields.
    fn rich_request() -> Vec<u8> {
        let (_, body) = deepest_messages().into_iter().find(|(name, _)| *name == "txn").unwrap();
        body
    }

    proptest::proptest! {
        #[test]
        fn mutated_requests_decode_or_fail_typed(
            edits in proptest::collection::vec((proptest::num::usize::ANY, proptest::num::u8::ANY), 1..6),
            cut in proptest::option::of(proptest::num::usize::ANY),
        ) {
            let mut body = rich_request();
            for (at, byte) in edits {
                let at = at % body.len();
                body[at] = byte;
            }
            if let Some(cut) = cut {
                body.truncate(cut % (body.len() + 1));
            }
            let mut frame = (body.len() as u32).to_be_bytes().to_vec();
            frame.extend_from_slice(&body);
            let mut src = BytesMut::from(&frame[..]);
            let got = FrameCodec::default().decode(&mut src).unwrap().unwrap();
            proptest::prop_assert_eq!(&got[..], &body[..]);
            match decode_body::<Request>(&got) {
                Ok(req) => {
                    let _ = req.op.validate();
                    // A request that decodes encodes back to a message that decodes to it.
                    let again: Request = decode_body(&rmp_serde::to_vec_named(&req).unwrap()).unwrap();
                    proptest::prop_assert_eq!(again, req);
                }
                Err(FrameError::Malformed(_) | FrameError::TooDeep { .. }) => {}
                Err(e) => proptest::prop_assert!(false, "unexpected error {e}"),
            }
        }
    }
}
