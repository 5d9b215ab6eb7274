//! The frame codec: a u32 big-endian length, then that many bytes of one MessagePack map
//! (`rmp_serde` named encoding, byte strings as msgpack `bin`).
//!
//! Decoding never panics and never allocates more than the announced length, which is
//! checked against [`FRAME_BYTES_MAX`] before anything is read.

use bytes::{Buf, BytesMut};
use serde::{Serialize, de::DeserializeOwned};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::Error;
use crate::limits::FRAME_BYTES_MAX;

/// Bytes of the length prefix.
pub const FRAME_HEADER_BYTES: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes is over the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("connection closed in the middle of a frame ({got} of {want} bytes)")]
    Truncated { got: usize, want: usize },
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
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    let mut de = rmp_serde::Deserializer::new(std::io::Cursor::new(body));
    let msg = T::deserialize(&mut de).map_err(|e| FrameError::Malformed(e.to_string()))?;
    let consumed = de.position() as usize;
    if consumed != body.len() {
        return Err(FrameError::Malformed(format!("{} unexpected bytes after the message", body.len() - consumed)));
    }
    Ok(msg)
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
    body.resize(len, 0);
    let mut filled = 0;
    while filled < len {
        let n = reader.read(&mut body[filled..]).await?;
        if n == 0 {
            return Err(FrameError::Truncated { got: filled, want: len });
        }
        filled += n;
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

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let mut src = BytesMut::from(&bytes[..]);
            let mut codec = FrameCodec::default();
            while let Ok(Some(body)) = codec.decode(&mut src) {
                let _ = decode_body::<Request>(&body);
            }
            let _ = codec.decode_eof(&mut src);
            let _ = decode_body::<Request>(&bytes);
        }
    }
}
