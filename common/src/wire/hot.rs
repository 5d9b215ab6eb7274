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
//! encoders write: fixmaps with exactly the fields, in order, names as fixstr, keys and
//! values as `bin`; integers in any MessagePack form that fits the field, as serde's
//! visitors take them). Anything else, however valid (fields in another order, an array for a
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
// The fixed parts of the messages: map headers and field and variant names, as the bytes
// `rmp::encode::write_map_len` and `write_str` write for them (a fixmap, a fixstr),
// written and compared whole. One call per field name through `rmp` was half of what
// these functions cost (a `memcmp` call per name compared, a marker and a copy per name
// written); `hot_tests` checks every one of these against `rmp`'s own encoding.
// ---------------------------------------------------------------------------------------

/// `{` 3 entries, `"id":`
pub(crate) const REQUEST_ID: &[u8; 4] = b"\x83\xa2id";
/// `"deadline_ms":`
pub(crate) const DEADLINE_MS: &[u8; 12] = b"\xabdeadline_ms";
/// `"op": {"Get": {"key":`
pub(crate) const OP_GET: &[u8; 13] = b"\xa2op\x81\xa3Get\x81\xa3key";
/// `"op": {"Put": {` 3 entries `"key":`
pub(crate) const OP_PUT: &[u8; 13] = b"\xa2op\x81\xa3Put\x83\xa3key";
/// `"op": {"Delete": {` 2 entries `"key":`
pub(crate) const OP_DELETE: &[u8; 16] = b"\xa2op\x81\xa6Delete\x82\xa3key";
/// `"value":`
pub(crate) const VALUE: &[u8; 6] = b"\xa5value";
/// `"write_id":`
pub(crate) const WRITE_ID: &[u8; 9] = b"\xa8write_id";
/// `{` 2 entries `"client":` (a write id without a floor)
pub(crate) const CLIENT: &[u8; 8] = b"\x82\xa6client";
/// `{` 3 entries `"client":` (a write id with a floor)
pub(crate) const CLIENT_FLOOR: &[u8; 8] = b"\x83\xa6client";
/// `"n":`
pub(crate) const N: &[u8; 2] = b"\xa1n";
/// `"floor":`
pub(crate) const FLOOR: &[u8; 6] = b"\xa5floor";
/// `{` 2 entries `"id":`
pub(crate) const RESPONSE_ID: &[u8; 4] = b"\x82\xa2id";
/// `"result": {"Ok": {"Value":`
pub(crate) const OK_VALUE: &[u8; 18] = b"\xa6result\x81\xa2Ok\x81\xa5Value";
/// `"result": {"Ok": {"Written": {"version":`
pub(crate) const OK_WRITTEN: &[u8; 29] = b"\xa6result\x81\xa2Ok\x81\xa7Written\x81\xa7version";
/// `"result": {"Ok": {"Deleted": {` 2 entries `"removed":`
pub(crate) const OK_DELETED: &[u8; 29] = b"\xa6result\x81\xa2Ok\x81\xa7Deleted\x82\xa7removed";
/// `{` 2 entries `"value":` (a `Versioned`)
pub(crate) const VERSIONED: &[u8; 7] = b"\x82\xa5value";
/// `"version":`
pub(crate) const VERSION: &[u8; 8] = b"\xa7version";
/// `{` 2 entries `"seq":` (a `Version`)
pub(crate) const SEQ: &[u8; 5] = b"\x82\xa3seq";
/// `"index":`
pub(crate) const INDEX: &[u8; 6] = b"\xa5index";
/// MessagePack's `nil` (an `Option`'s `None`).
const NIL: u8 = 0xc0;

// ---------------------------------------------------------------------------------------
// Encoding: what `write_named` writes, field by field. `None` for any other message (and
// for a write error, which a `Vec` never returns).
// ---------------------------------------------------------------------------------------

/// Writes `req` when its op is a hot one; `None` (with `buf` partly written, which the
/// caller truncates) for any other op.
fn write_request(req: &RequestRef<'_>, buf: &mut Vec<u8>) -> Option<()> {
    let (head, key): (&[u8], &Key) = match req.op {
        Op::Get { key } => (OP_GET, key),
        Op::Put { key, .. } => (OP_PUT, key),
        Op::Delete { key, .. } => (OP_DELETE, key),
        _ => return None,
    };
    buf.extend_from_slice(REQUEST_ID);
    uint(buf, req.id.0)?;
    buf.extend_from_slice(DEADLINE_MS);
    match req.deadline_ms {
        Some(ms) => uint(buf, ms.into())?,
        None => buf.push(NIL),
    }
    buf.extend_from_slice(head);
    bin(buf, key.as_bytes())?;
    match req.op {
        Op::Put { value, write_id, .. } => {
            buf.extend_from_slice(VALUE);
            bin(buf, value)?;
            buf.extend_from_slice(WRITE_ID);
            write_id_opt(buf, write_id)
        }
        Op::Delete { write_id, .. } => {
            buf.extend_from_slice(WRITE_ID);
            write_id_opt(buf, write_id)
        }
        _ => Some(()),
    }
}

/// Writes `resp` when it carries a hot reply; `None` for any other (errors included).
fn write_response(resp: &Response, buf: &mut Vec<u8>) -> Option<()> {
    let Ok(reply) = &resp.result else { return None };
    if !matches!(reply, Reply::Value(_) | Reply::Written { .. } | Reply::Deleted { .. }) {
        return None;
    }
    buf.extend_from_slice(RESPONSE_ID);
    uint(buf, resp.id.0)?;
    // `Result` and `Reply` are enums: a map of one entry, the variant's name to its content.
    match reply {
        Reply::Value(None) => {
            buf.extend_from_slice(OK_VALUE);
            buf.push(NIL);
            Some(())
        }
        Reply::Value(Some(Versioned { value, version })) => {
            buf.extend_from_slice(OK_VALUE);
            buf.extend_from_slice(VERSIONED);
            bin(buf, value)?;
            buf.extend_from_slice(VERSION);
            write_version(buf, version)
        }
        Reply::Written { version } => {
            buf.extend_from_slice(OK_WRITTEN);
            write_version(buf, version)
        }
        Reply::Deleted { removed, version } => {
            buf.extend_from_slice(OK_DELETED);
            uint(buf, *removed)?;
            buf.extend_from_slice(VERSION);
            write_version(buf, version)
        }
        _ => None,
    }
}

fn write_version(buf: &mut Vec<u8>, version: &Version) -> Option<()> {
    buf.extend_from_slice(SEQ);
    uint(buf, version.seq.0)?;
    buf.extend_from_slice(INDEX);
    uint(buf, version.index.into())
}

fn write_id_opt(buf: &mut Vec<u8>, write_id: &Option<WriteId>) -> Option<()> {
    match write_id {
        None => buf.push(NIL),
        // `floor` is left out when 0, as serde's `skip_serializing_if` does.
        Some(WriteId { client, n, floor }) => {
            buf.extend_from_slice(if *floor == 0 { CLIENT } else { CLIENT_FLOOR });
            uint(buf, *client)?;
            buf.extend_from_slice(N);
            uint(buf, *n)?;
            if *floor != 0 {
                buf.extend_from_slice(FLOOR);
                uint(buf, *floor)?;
            }
        }
    }
    Some(())
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

/// The rest of a body being decoded. `rmp`'s readers advance it; fixed parts and byte
/// strings are taken from it whole.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    /// Takes `fixed` if the body goes on with it. An array compare of a known size, so
    /// no `memcmp` call. The names in `fixed` are ASCII: bytes equal to them are valid
    /// UTF-8, as `rmp_serde` requires of a name.
    #[inline(always)]
    fn fixed<const LEN: usize>(&mut self, fixed: &[u8; LEN]) -> Option<()> {
        let (head, rest) = self.0.split_first_chunk::<LEN>()?;
        if head != fixed {
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
            Some((&NIL, rest)) => {
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
        let with_floor = if self.fixed(CLIENT).is_some() {
            false
        } else {
            self.fixed(CLIENT_FLOOR)?;
            true
        };
        let client = self.u64()?;
        self.fixed(N)?;
        let n = self.u64()?;
        let floor = if with_floor {
            self.fixed(FLOOR)?;
            self.u64()?
        } else {
            0
        };
        Some(Some(WriteId { client, n, floor }))
    }

    fn version(&mut self) -> Option<Version> {
        self.fixed(SEQ)?;
        let seq = Seq(self.u64()?);
        self.fixed(INDEX)?;
        let index = self.u32()?;
        Some(Version { seq, index })
    }

    /// The whole body was the message (a body with more after it is `decode_body`'s error).
    fn done(&self) -> Option<()> {
        self.0.is_empty().then_some(())
    }
}

/// A request in the canonical shape with a `Get`, `Put` or `Delete` op.
pub(crate) fn read_request(body: &[u8]) -> Option<Request> {
    let mut rd = Reader(body);
    rd.fixed(REQUEST_ID)?;
    let id = RequestId(rd.u64()?);
    rd.fixed(DEADLINE_MS)?;
    let deadline_ms = if rd.nil() { None } else { Some(rd.u32()?) };
    let op = if rd.fixed(OP_GET).is_some() {
        Op::Get { key: rd.key()? }
    } else if rd.fixed(OP_PUT).is_some() {
        let key = rd.key()?;
        rd.fixed(VALUE)?;
        let value = rd.bin()?.to_vec();
        rd.fixed(WRITE_ID)?;
        Op::Put { key, value, write_id: rd.write_id_opt()? }
    } else {
        rd.fixed(OP_DELETE)?;
        let key = rd.key()?;
        rd.fixed(WRITE_ID)?;
        Op::Delete { key, write_id: rd.write_id_opt()? }
    };
    rd.done()?;
    Some(Request { id, deadline_ms, op })
}

/// A response in the canonical shape with a `Value`, `Written` or `Deleted` reply.
pub(crate) fn read_response(body: &[u8]) -> Option<Response> {
    let mut rd = Reader(body);
    rd.fixed(RESPONSE_ID)?;
    let id = RequestId(rd.u64()?);
    let reply = if rd.fixed(OK_VALUE).is_some() {
        if rd.nil() {
            Reply::Value(None)
        } else {
            rd.fixed(VERSIONED)?;
            let value = rd.bin()?.to_vec();
            rd.fixed(VERSION)?;
            Reply::Value(Some(Versioned { value, version: rd.version()? }))
        }
    } else if rd.fixed(OK_WRITTEN).is_some() {
        Reply::Written { version: rd.version()? }
    } else {
        rd.fixed(OK_DELETED)?;
        let removed = rd.u64()?;
        rd.fixed(VERSION)?;
        Reply::Deleted { removed, version: rd.version()? }
    };
    rd.done()?;
    Some(Response { id, result: Ok(reply) })
}

#[cfg(test)]
#[path = "hot_tests.rs"]
mod hot_tests;
