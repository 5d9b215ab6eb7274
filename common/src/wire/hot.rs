//! The hottest messages, encoded and decoded by hand with `rmp`'s low-level functions:
//! requests whose op is `Get`, `Put` or `Delete`, and responses whose result is a `Value`,
//! `Written` or `Deleted` reply. Everything else, and anything these functions do not
//! recognise, goes through the serde path of [`crate::frame`].
//!
//! Why: through `rmp_serde`, a GET's request decode and response encode were four tenths
//! of the node's instructions (field names matched through generic identifier visitors,
//! enum tags through `deserialize_enum`, every name checked as UTF-8) and a third of the
//! load generator's. The bytes do not change: the encoders write exactly what
//! `rmp_serde::encode::write_named` writes (maps with the field names, in declaration
//! order, integers in their smallest form, byte strings as `bin`), which `hot_tests`
//! checks against the serde encoding for arbitrary messages, and `wire_golden` against the
//! golden file.
//!
//! The decoders accept only the one canonical shape of each message (the shape the
//! encoders write: a map with exactly the fields, in order, names as `str`, keys and values
//! as `bin`). Anything else, however valid (fields in another order, an array for a
//! struct, a key as `str`), or invalid, returns `None`, and the caller decodes the body
//! with [`decode_body`], so it is accepted, or refused with the same typed error, exactly
//! as before. The limit checks of `decode_body` hold for what is decoded here: the shapes
//! nest at most 5 deep (`check_nesting` allows [`FRAME_NESTING_DEPTH_MAX`]) and are walked
//! without recursion, and a body with bytes after the message is never taken here.
//! The operation's own limits (`Op::validate`) are checked by the server on the decoded
//! `Op`, whichever path decoded it.
//!
//! [`FRAME_NESTING_DEPTH_MAX`]: crate::limits::FRAME_NESTING_DEPTH_MAX

use rmp::{decode, encode};

use crate::frame::{FRAME_HEADER_BYTES, FrameError, decode_body, encode_frame};
use crate::ids::{RequestId, Seq};
use crate::key::{Key, Version};
use crate::limits::FRAME_BYTES_MAX;
use crate::protocol::{Op, Reply, Request, RequestRef, Response, Versioned, WriteId};

/// Appends one frame holding `req` to `buf`, like [`encode_frame`] (same bytes, same
/// errors, `buf` as it was on error).
pub fn encode_request(req: &RequestRef<'_>, buf: &mut Vec<u8>) -> Result<(), FrameError> {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; FRAME_HEADER_BYTES]);
    if write_request(req, buf).is_some() && finish_frame(buf, start) {
        return Ok(());
    }
    buf.truncate(start);
    encode_frame(req, buf)
}

/// Appends one frame holding `resp` to `buf`, like [`encode_frame`] (same bytes, same
/// errors, `buf` as it was on error).
pub fn encode_response(resp: &Response, buf: &mut Vec<u8>) -> Result<(), FrameError> {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; FRAME_HEADER_BYTES]);
    if write_response(resp, buf).is_some() && finish_frame(buf, start) {
        return Ok(());
    }
    buf.truncate(start);
    encode_frame(resp, buf)
}

/// Decodes a request body, like `decode_body::<Request>` (same result for every body).
pub fn decode_request(body: &[u8]) -> Result<Request, FrameError> {
    match read_request(body) {
        Some(req) => Ok(req),
        None => decode_body(body),
    }
}

/// Decodes a response body, like `decode_body::<Response>` (same result for every body).
pub fn decode_response(body: &[u8]) -> Result<Response, FrameError> {
    match read_response(body) {
        Some(resp) => Ok(resp),
        None => decode_body(body),
    }
}

/// Writes the length prefix of the frame that starts at `start`; false when the body is
/// over [`FRAME_BYTES_MAX`] (the caller leaves the error to `encode_frame`, which says so).
fn finish_frame(buf: &mut [u8], start: usize) -> bool {
    let body_len = buf.len() - start - FRAME_HEADER_BYTES;
    if body_len > FRAME_BYTES_MAX {
        return false;
    }
    buf[start..start + FRAME_HEADER_BYTES].copy_from_slice(&(body_len as u32).to_be_bytes());
    true
}

// ---------------------------------------------------------------------------------------
// Encoding: what `write_named` writes, field by field. `None` for any other message (and
// for a write error, which a `Vec` never returns).
// ---------------------------------------------------------------------------------------

/// Writes `req` when its op is a hot one; `None` (with `buf` partly written, which the
/// caller truncates) for any other op.
fn write_request(req: &RequestRef<'_>, buf: &mut Vec<u8>) -> Option<()> {
    if !matches!(req.op, Op::Get { .. } | Op::Put { .. } | Op::Delete { .. }) {
        return None;
    }
    map(buf, 3)?;
    name(buf, "id")?;
    uint(buf, req.id.0)?;
    name(buf, "deadline_ms")?;
    match req.deadline_ms {
        Some(ms) => uint(buf, ms.into())?,
        None => encode::write_nil(buf).ok()?,
    }
    name(buf, "op")?;
    // An enum's struct variant: a map of one entry, the variant's name to its fields' map.
    map(buf, 1)?;
    match req.op {
        Op::Get { key } => {
            name(buf, "Get")?;
            map(buf, 1)?;
            name(buf, "key")?;
            bin(buf, key.as_bytes())?;
        }
        Op::Put { key, value, write_id } => {
            name(buf, "Put")?;
            map(buf, 3)?;
            name(buf, "key")?;
            bin(buf, key.as_bytes())?;
            name(buf, "value")?;
            bin(buf, value)?;
            name(buf, "write_id")?;
            write_id_opt(buf, write_id)?;
        }
        Op::Delete { key, write_id } => {
            name(buf, "Delete")?;
            map(buf, 2)?;
            name(buf, "key")?;
            bin(buf, key.as_bytes())?;
            name(buf, "write_id")?;
            write_id_opt(buf, write_id)?;
        }
        _ => return None,
    }
    Some(())
}

/// Writes `resp` when it carries a hot reply; `None` for any other (errors included).
fn write_response(resp: &Response, buf: &mut Vec<u8>) -> Option<()> {
    let Ok(reply) = &resp.result else { return None };
    if !matches!(reply, Reply::Value(_) | Reply::Written { .. } | Reply::Deleted { .. }) {
        return None;
    }
    map(buf, 2)?;
    name(buf, "id")?;
    uint(buf, resp.id.0)?;
    name(buf, "result")?;
    // `Result` is an enum of two newtype variants: `{"Ok": reply}`.
    map(buf, 1)?;
    name(buf, "Ok")?;
    map(buf, 1)?;
    match reply {
        Reply::Value(None) => {
            name(buf, "Value")?;
            encode::write_nil(buf).ok()?;
        }
        Reply::Value(Some(Versioned { value, version })) => {
            name(buf, "Value")?;
            map(buf, 2)?;
            name(buf, "value")?;
            bin(buf, value)?;
            name(buf, "version")?;
            write_version(buf, version)?;
        }
        Reply::Written { version } => {
            name(buf, "Written")?;
            map(buf, 1)?;
            name(buf, "version")?;
            write_version(buf, version)?;
        }
        Reply::Deleted { removed, version } => {
            name(buf, "Deleted")?;
            map(buf, 2)?;
            name(buf, "removed")?;
            uint(buf, *removed)?;
            name(buf, "version")?;
            write_version(buf, version)?;
        }
        _ => return None,
    }
    Some(())
}

fn write_version(buf: &mut Vec<u8>, version: &Version) -> Option<()> {
    map(buf, 2)?;
    name(buf, "seq")?;
    uint(buf, version.seq.0)?;
    name(buf, "index")?;
    uint(buf, version.index.into())
}

fn write_id_opt(buf: &mut Vec<u8>, write_id: &Option<WriteId>) -> Option<()> {
    match write_id {
        None => encode::write_nil(buf).ok(),
        Some(WriteId { client, n }) => {
            map(buf, 2)?;
            name(buf, "client")?;
            uint(buf, *client)?;
            name(buf, "n")?;
            uint(buf, *n)
        }
    }
}

fn map(buf: &mut Vec<u8>, len: u32) -> Option<()> {
    encode::write_map_len(buf, len).ok().map(drop)
}

fn name(buf: &mut Vec<u8>, s: &str) -> Option<()> {
    encode::write_str(buf, s).ok()
}

/// An unsigned integer in its smallest form, as `rmp_serde` writes every unsigned field.
fn uint(buf: &mut Vec<u8>, v: u64) -> Option<()> {
    encode::write_uint(buf, v).ok().map(drop)
}

/// A byte string as `bin` (the `serde_bytes` fields: keys and values). A length over
/// `u32::MAX` fails here as in `rmp_serde`, whose error the fallback then returns.
fn bin(buf: &mut Vec<u8>, data: &[u8]) -> Option<()> {
    u32::try_from(data.len()).ok()?;
    encode::write_bin(buf, data).ok()
}

// ---------------------------------------------------------------------------------------
// Decoding: the canonical shape only; `None` for anything else.
// ---------------------------------------------------------------------------------------

/// The rest of a body being decoded. `rmp`'s readers advance it; byte strings are taken
/// from it whole.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    /// A map of exactly `len` entries.
    fn map(&mut self, len: u32) -> Option<()> {
        (decode::read_map_len(&mut self.0).ok()? == len).then_some(())
    }

    /// A `str` equal to `name`. Compared as bytes: the names are ASCII, so the bytes equal
    /// them only when they are valid UTF-8 too, as `rmp_serde` requires.
    fn name(&mut self, name: &str) -> Option<()> {
        let len = decode::read_str_len(&mut self.0).ok()?;
        let (got, rest) = self.0.split_at_checked(usize::try_from(len).ok()?)?;
        if got != name.as_bytes() {
            return None;
        }
        self.0 = rest;
        Some(())
    }

    /// Any integer that fits a `u64`, as serde's `u64` visitor accepts (fixints, unsigned
    /// and non-negative signed forms).
    fn u64(&mut self) -> Option<u64> {
        decode::read_int::<u64, _>(&mut self.0).ok()
    }

    fn u32(&mut self) -> Option<u32> {
        decode::read_int::<u32, _>(&mut self.0).ok()
    }

    /// A `bin`, borrowed.
    fn bin(&mut self) -> Option<&'a [u8]> {
        let len = decode::read_bin_len(&mut self.0).ok()?;
        let (data, rest) = self.0.split_at_checked(usize::try_from(len).ok()?)?;
        self.0 = rest;
        Some(data)
    }

    /// Takes a `nil` if one is next: `Option`'s `None`.
    fn nil(&mut self) -> bool {
        match self.0.split_first() {
            Some((&0xc0, rest)) => {
                self.0 = rest;
                true
            }
            _ => false,
        }
    }

    fn key(&mut self) -> Option<Key> {
        self.bin().map(|b| Key::new(b.to_vec()))
    }

    fn write_id_opt(&mut self) -> Option<Option<WriteId>> {
        if self.nil() {
            return Some(None);
        }
        self.map(2)?;
        self.name("client")?;
        let client = self.u64()?;
        self.name("n")?;
        let n = self.u64()?;
        Some(Some(WriteId { client, n }))
    }

    fn version(&mut self) -> Option<Version> {
        self.map(2)?;
        self.name("seq")?;
        let seq = Seq(self.u64()?);
        self.name("index")?;
        let index = self.u32()?;
        Some(Version { seq, index })
    }

    /// The whole body was the message (a body with more after it is `decode_body`'s error).
    fn done(&self) -> Option<()> {
        self.0.is_empty().then_some(())
    }
}

/// The next bytes are a `str`: which of `names` it is (its index), without consuming it
/// unless it is one of them.
fn variant(rd: &mut Reader<'_>, names: &[&str]) -> Option<usize> {
    let mut peek = Reader(rd.0);
    let len = decode::read_str_len(&mut peek.0).ok()?;
    let got = peek.0.get(..usize::try_from(len).ok()?)?;
    let index = names.iter().position(|n| n.as_bytes() == got)?;
    rd.0 = &peek.0[got.len()..];
    Some(index)
}

/// A request in the canonical shape with a `Get`, `Put` or `Delete` op.
pub(crate) fn read_request(body: &[u8]) -> Option<Request> {
    let mut rd = Reader(body);
    rd.map(3)?;
    rd.name("id")?;
    let id = RequestId(rd.u64()?);
    rd.name("deadline_ms")?;
    let deadline_ms = if rd.nil() { None } else { Some(rd.u32()?) };
    rd.name("op")?;
    rd.map(1)?;
    let op = match variant(&mut rd, &["Get", "Put", "Delete"])? {
        0 => {
            rd.map(1)?;
            rd.name("key")?;
            Op::Get { key: rd.key()? }
        }
        1 => {
            rd.map(3)?;
            rd.name("key")?;
            let key = rd.key()?;
            rd.name("value")?;
            let value = rd.bin()?.to_vec();
            rd.name("write_id")?;
            Op::Put { key, value, write_id: rd.write_id_opt()? }
        }
        _ => {
            rd.map(2)?;
            rd.name("key")?;
            let key = rd.key()?;
            rd.name("write_id")?;
            Op::Delete { key, write_id: rd.write_id_opt()? }
        }
    };
    rd.done()?;
    Some(Request { id, deadline_ms, op })
}

/// A response in the canonical shape with a `Value`, `Written` or `Deleted` reply.
pub(crate) fn read_response(body: &[u8]) -> Option<Response> {
    let mut rd = Reader(body);
    rd.map(2)?;
    rd.name("id")?;
    let id = RequestId(rd.u64()?);
    rd.name("result")?;
    rd.map(1)?;
    rd.name("Ok")?;
    rd.map(1)?;
    let reply = match variant(&mut rd, &["Value", "Written", "Deleted"])? {
        0 if rd.nil() => Reply::Value(None),
        0 => {
            rd.map(2)?;
            rd.name("value")?;
            let value = rd.bin()?.to_vec();
            rd.name("version")?;
            Reply::Value(Some(Versioned { value, version: rd.version()? }))
        }
        1 => {
            rd.map(1)?;
            rd.name("version")?;
            Reply::Written { version: rd.version()? }
        }
        _ => {
            rd.map(2)?;
            rd.name("removed")?;
            let removed = rd.u64()?;
            rd.name("version")?;
            Reply::Deleted { removed, version: rd.version()? }
        }
    };
    rd.done()?;
    Some(Response { id, result: Ok(reply) })
}

#[cfg(test)]
#[path = "hot_tests.rs"]
mod hot_tests;
