//! The payload of a `Batch` log entry: the writes of one group commit, in order.
//! A write's version is `{seq of the entry, index in this list}`.

use ampstore_common::Key;
use ampstore_common::error::Error;
use ampstore_common::lists::PushId;
use ampstore_common::protocol::WriteId;
use ampstore_common::write_ids::WriteKey;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LoggedOp {
    Put {
        key: Key,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    Delete {
        key: Key,
    },
    DeleteRange {
        start: Key,
        end: Option<Key>,
    },
    /// A put of a key that expires at `expires_at_ms` (Unix ms, the owner's clock when it
    /// logged the write: replay, moves, splits and merges all see the same moment).
    PutExpiring {
        key: Key,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        expires_at_ms: u64,
    },
    /// An existing key's expiry set (`Some`) or removed (`None`), its value kept; the entry
    /// gets this write's version. Logged only when the key existed and the condition held.
    SetExpiry {
        key: Key,
        expires_at_ms: Option<u64>,
    },
    /// An increment's result: `value` as a decimal string at `key`, with the expiry the key
    /// had. The result, not the delta, so replay needs nothing but the entry, and a retry
    /// is answered with it.
    Counter {
        key: Key,
        value: i64,
        expires_at_ms: Option<u64>,
    },
}

impl LoggedOp {
    /// The key a client routes this write by (a delete-range's start): a retry of it comes
    /// to the range holding this key.
    pub fn routing_key(&self) -> &Key {
        match self {
            LoggedOp::Put { key, .. }
            | LoggedOp::Delete { key }
            | LoggedOp::PutExpiring { key, .. }
            | LoggedOp::SetExpiry { key, .. }
            | LoggedOp::Counter { key, .. } => key,
            LoggedOp::DeleteRange { start, .. } => start,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggedWrite {
    pub op: LoggedOp,
    pub write_id: Option<WriteId>,
    /// A push's or enqueue's id, so that a range rebuilding its write-id table from the log
    /// knows it (absent from the encoding otherwise: entries without it decode as before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_id: Option<PushId>,
}

impl LoggedWrite {
    /// The write as logged, with its id.
    pub fn new(op: LoggedOp, id: Option<WriteKey>) -> LoggedWrite {
        let (write_id, push_id) = match id {
            Some(WriteKey::Write(w)) => (Some(w), None),
            Some(WriteKey::Push(p)) => (None, Some(p)),
            Some(WriteKey::Txn(_)) | None => (None, None),
        };
        LoggedWrite { op, write_id, push_id }
    }

    /// The id the write is remembered by.
    pub fn id(&self) -> Option<WriteKey> {
        self.write_id.map(WriteKey::Write).or(self.push_id.map(WriteKey::Push))
    }

    /// Upper bound of this write's share of an encoded batch, in bytes.
    pub fn encoded_bytes_max(&self) -> usize {
        Self::encoded_bytes_max_of(&self.op, self.push_id.is_some())
    }

    /// [`LoggedWrite::encoded_bytes_max`] of the write `op` would make (with a push id when
    /// `push_id`), before it is made: the batch is planned without copying the op.
    pub fn encoded_bytes_max_of(op: &LoggedOp, push_id: bool) -> usize {
        // A push id adds a field name and a map of three u64s: at most 8 + 1 + 3 * (2 + 9) bytes.
        let push_id_bytes = if push_id { 48 } else { 0 };
        ampstore_common::limits::LOGGED_WRITE_OVERHEAD_BYTES
            + push_id_bytes
            + match op {
                LoggedOp::Put { key, value } => key.len() + value.len(),
                LoggedOp::Delete { key } => key.len(),
                LoggedOp::DeleteRange { start, end } => start.len() + end.as_ref().map_or(0, Key::len),
                // An expiry, a count: a MessagePack array of two and a u64 at most (11 bytes).
                LoggedOp::PutExpiring { key, value, .. } => key.len() + value.len() + 12,
                LoggedOp::SetExpiry { key, .. } | LoggedOp::Counter { key, .. } => key.len() + 12,
            }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchPayload {
    pub writes: Vec<LoggedWrite>,
}

/// The first byte of a compact batch payload (format 1). Format 0, what nodes wrote before
/// it, is `BatchPayload` as a MessagePack map with field names: its first byte is a map
/// header (0x80..=0x8f), never this, so both decode by the first byte. See
/// `docs/architecture.md`, "The batch entry payload".
pub const BATCH_FORMAT_COMPACT: u8 = 0x01;

/// `LoggedOp` tags in the compact format.
const OP_PUT: u8 = 0;
const OP_DELETE: u8 = 1;
const OP_DELETE_RANGE: u8 = 2;
/// The ops below have a sixth element, `[expires_at_ms or nil, count or nil]`:
/// `[op, key, value, id, push id, [expires_at_ms, nil]]`
const OP_PUT_EXPIRING: u8 = 3;
/// `[op, key, nil, id, push id, [expires_at_ms or nil, nil]]`
const OP_SET_EXPIRY: u8 = 4;
/// `[op, key, nil, id, push id, [expires_at_ms or nil, value as i64]]`
const OP_COUNTER: u8 = 5;

/// Encodes `writes` as a compact batch payload: the tag byte, then one MessagePack array
/// with one array per write, `[op, key or start, value or end or nil, [client, n] or
/// [client, n, floor] (a floor above 0) or nil, [ms, client, n] or nil]`. No field or variant names (format 0 spent 35 bytes a
/// write on them, bytes the store then copied, checksummed and fsynced), and written straight
/// into the entry's buffer, not into a scratch buffer and then copied. `capacity`: the
/// expected size (an upper bound avoids growing the buffer). Fails only when a length does
/// not fit MessagePack's 32 bits, which the entry size limit rules out.
pub fn encode(writes: &[LoggedWrite], capacity: usize) -> Result<bytes::Bytes, Error> {
    use bytes::BufMut;
    let mut out = bytes::BytesMut::with_capacity(capacity);
    out.put_u8(BATCH_FORMAT_COMPACT);
    mp::array_len(&mut out, writes.len())?;
    for w in writes {
        // The sixth element only for the ops that have one: the others' bytes are as before.
        let extra = match &w.op {
            LoggedOp::PutExpiring { expires_at_ms, .. } => Some((Some(*expires_at_ms), None)),
            LoggedOp::SetExpiry { expires_at_ms, .. } => Some((*expires_at_ms, None)),
            LoggedOp::Counter { value, expires_at_ms, .. } => Some((*expires_at_ms, Some(*value))),
            _ => None,
        };
        mp::array_len(&mut out, if extra.is_some() { 6 } else { 5 })?;
        match &w.op {
            LoggedOp::Put { key, value } => {
                mp::uint(&mut out, u64::from(OP_PUT));
                mp::bin(&mut out, key.as_bytes())?;
                mp::bin(&mut out, value)?;
            }
            LoggedOp::Delete { key } => {
                mp::uint(&mut out, u64::from(OP_DELETE));
                mp::bin(&mut out, key.as_bytes())?;
                mp::nil(&mut out);
            }
            LoggedOp::DeleteRange { start, end } => {
                mp::uint(&mut out, u64::from(OP_DELETE_RANGE));
                mp::bin(&mut out, start.as_bytes())?;
                match end {
                    Some(end) => mp::bin(&mut out, end.as_bytes())?,
                    None => mp::nil(&mut out),
                }
            }
            LoggedOp::PutExpiring { key, value, .. } => {
                mp::uint(&mut out, u64::from(OP_PUT_EXPIRING));
                mp::bin(&mut out, key.as_bytes())?;
                mp::bin(&mut out, value)?;
            }
            LoggedOp::SetExpiry { key, .. } => {
                mp::uint(&mut out, u64::from(OP_SET_EXPIRY));
                mp::bin(&mut out, key.as_bytes())?;
                mp::nil(&mut out);
            }
            LoggedOp::Counter { key, .. } => {
                mp::uint(&mut out, u64::from(OP_COUNTER));
                mp::bin(&mut out, key.as_bytes())?;
                mp::nil(&mut out);
            }
        }
        match w.write_id {
            // The client's floor travels with the write, so that a range rebuilding its
            // write-id table from the log forgets and refuses what the owner did.
            Some(id) if id.floor != 0 => {
                mp::array_len(&mut out, 3)?;
                mp::uint(&mut out, id.client);
                mp::uint(&mut out, id.n);
                mp::uint(&mut out, id.floor);
            }
            Some(id) => {
                mp::array_len(&mut out, 2)?;
                mp::uint(&mut out, id.client);
                mp::uint(&mut out, id.n);
            }
            None => mp::nil(&mut out),
        }
        match w.push_id {
            Some(p) => {
                mp::array_len(&mut out, 3)?;
                mp::uint(&mut out, p.ms);
                mp::uint(&mut out, p.client);
                mp::uint(&mut out, p.n);
            }
            None => mp::nil(&mut out),
        }
        if let Some((at, count)) = extra {
            mp::array_len(&mut out, 2)?;
            match at {
                Some(at) => mp::uint(&mut out, at),
                None => mp::nil(&mut out),
            }
            match count {
                Some(count) => mp::int(&mut out, count),
                None => mp::nil(&mut out),
            }
        }
    }
    Ok(out.freeze())
}

/// One write of the compact format, as [`encode`] writes it.
#[derive(Deserialize)]
struct CompactWrite(
    u8,
    serde_bytes::ByteBuf,
    Option<serde_bytes::ByteBuf>,
    Option<CompactWriteId>,
    Option<(u64, u64, u64)>,
    /// `[expires_at_ms, count]` of the ops that have them; absent in the others (and in
    /// every entry written before them).
    #[serde(default)]
    Option<(Option<u64>, Option<i64>)>,
);

/// A write id of the compact format: `[client, n]`, or `[client, n, floor]` (entries
/// written before floors existed have only the first form).
struct CompactWriteId(WriteId);

impl<'de> Deserialize<'de> for CompactWriteId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Ids;
        impl<'de> serde::de::Visitor<'de> for Ids {
            type Value = CompactWriteId;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("[client, n] or [client, n, floor]")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                use serde::de::Error as _;
                let client = seq.next_element()?.ok_or_else(|| A::Error::invalid_length(0, &self))?;
                let n = seq.next_element()?.ok_or_else(|| A::Error::invalid_length(1, &self))?;
                let floor = seq.next_element()?.unwrap_or(0);
                if seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
                    return Err(A::Error::invalid_length(4, &self));
                }
                Ok(CompactWriteId(WriteId { client, n, floor }))
            }
        }
        d.deserialize_seq(Ids)
    }
}

/// Decodes a batch payload of either format (the log keeps entries of both).
pub fn decode(bytes: &[u8]) -> Result<BatchPayload, Error> {
    let bad = |e: &dyn std::fmt::Display| Error::internal(format!("log batch does not decode: {e}"));
    let Some((&BATCH_FORMAT_COMPACT, rest)) = bytes.split_first() else {
        // Format 0 (or garbage, which fails here).
        return rmp_serde::from_slice(bytes).map_err(|e| bad(&e));
    };
    let compact: Vec<CompactWrite> = rmp_serde::from_slice(rest).map_err(|e| bad(&e))?;
    let mut writes = Vec::with_capacity(compact.len());
    for CompactWrite(op, a, b, write_id, push_id, extra) in compact {
        let op = match (op, b, extra) {
            (OP_PUT, Some(value), None) => LoggedOp::Put { key: Key(a.into_vec()), value: value.into_vec() },
            (OP_DELETE, None, None) => LoggedOp::Delete { key: Key(a.into_vec()) },
            (OP_DELETE_RANGE, end, None) => {
                LoggedOp::DeleteRange { start: Key(a.into_vec()), end: end.map(|e| Key(e.into_vec())) }
            }
            (OP_PUT_EXPIRING, Some(value), Some((Some(expires_at_ms), None))) => {
                LoggedOp::PutExpiring { key: Key(a.into_vec()), value: value.into_vec(), expires_at_ms }
            }
            (OP_SET_EXPIRY, None, Some((expires_at_ms, None))) => {
                LoggedOp::SetExpiry { key: Key(a.into_vec()), expires_at_ms }
            }
            (OP_COUNTER, None, Some((expires_at_ms, Some(value)))) => {
                LoggedOp::Counter { key: Key(a.into_vec()), value, expires_at_ms }
            }
            (op, ..) => return Err(bad(&format!("unknown op {op} or wrong operands"))),
        };
        writes.push(LoggedWrite {
            op,
            write_id: write_id.map(|CompactWriteId(id)| id),
            push_id: push_id.map(|(ms, client, n)| PushId { ms, client, n }),
        });
    }
    Ok(BatchPayload { writes })
}

/// The few MessagePack encodings the compact format uses (the spec's smallest form of each).
mod mp {
    use ampstore_common::error::Error;
    use bytes::{BufMut, BytesMut};

    fn len32(n: usize) -> Result<u32, Error> {
        u32::try_from(n).map_err(|_| Error::internal(format!("a length of {n} does not fit a log batch")))
    }

    pub fn nil(out: &mut BytesMut) {
        out.put_u8(0xc0);
    }

    pub fn array_len(out: &mut BytesMut, n: usize) -> Result<(), Error> {
        let n = len32(n)?;
        if n < 16 {
            out.put_u8(0x90 | n as u8);
        } else if let Ok(n) = u16::try_from(n) {
            out.put_u8(0xdc);
            out.put_u16(n);
        } else {
            out.put_u8(0xdd);
            out.put_u32(n);
        }
        Ok(())
    }

    pub fn bin(out: &mut BytesMut, b: &[u8]) -> Result<(), Error> {
        let n = len32(b.len())?;
        if let Ok(n) = u8::try_from(n) {
            out.put_u8(0xc4);
            out.put_u8(n);
        } else if let Ok(n) = u16::try_from(n) {
            out.put_u8(0xc5);
            out.put_u16(n);
        } else {
            out.put_u8(0xc6);
            out.put_u32(n);
        }
        out.put_slice(b);
        Ok(())
    }

    pub fn int(out: &mut BytesMut, v: i64) {
        match u64::try_from(v) {
            Ok(v) => uint(out, v),
            Err(_) if v >= -32 => out.put_i8(v as i8),
            Err(_) => {
                out.put_u8(0xd3);
                out.put_i64(v);
            }
        }
    }

    pub fn uint(out: &mut BytesMut, v: u64) {
        if v < 0x80 {
            out.put_u8(v as u8);
        } else if let Ok(v) = u8::try_from(v) {
            out.put_u8(0xcc);
            out.put_u8(v);
        } else if let Ok(v) = u16::try_from(v) {
            out.put_u8(0xcd);
            out.put_u16(v);
        } else if let Ok(v) = u32::try_from(v) {
            out.put_u8(0xce);
            out.put_u32(v);
        } else {
            out.put_u8(0xcf);
            out.put_u64(v);
        }
    }
}

/// The payload of a `Txn` entry: one transaction's writes in one range.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnPayload {
    pub txn_id: WriteId,
    pub writes: Vec<LoggedWrite>,
}

pub fn encode_txn(payload: &TxnPayload) -> Vec<u8> {
    // Plain data: encoding into a Vec cannot fail.
    rmp_serde::to_vec_named(payload).unwrap_or_default()
}

pub fn decode_txn(bytes: &[u8]) -> Result<TxnPayload, Error> {
    rmp_serde::from_slice(bytes).map_err(|e| Error::internal(format!("transaction entry does not decode: {e}")))
}

/// A transaction's write as it goes into the log; a TTL becomes an expiry from `now_ms`
/// (the participant's clock when it prepares).
pub fn logged(w: &ampstore_common::txn::TxnWrite, now_ms: u64) -> LoggedWrite {
    use ampstore_common::txn::TxnWrite;
    let op = match w {
        TxnWrite::Put { key, value } => LoggedOp::Put { key: key.clone(), value: value.clone() },
        TxnWrite::PutWithTtl { key, value, ttl_ms } => LoggedOp::PutExpiring {
            key: key.clone(),
            value: value.clone(),
            expires_at_ms: now_ms.saturating_add(*ttl_ms),
        },
        TxnWrite::PutExpiring { key, value, expires_at_ms } => {
            LoggedOp::PutExpiring { key: key.clone(), value: value.clone(), expires_at_ms: *expires_at_ms }
        }
        TxnWrite::Delete { key } => LoggedOp::Delete { key: key.clone() },
        TxnWrite::Push { element, .. } => LoggedOp::Put { key: w.target(), value: element.clone() },
    };
    LoggedWrite { op, write_id: None, push_id: None }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every shape of write the log holds: put with a write id, delete, delete-range with and
    /// without an end, and a push (push id).
    fn sample() -> BatchPayload {
        BatchPayload {
            writes: vec![
                LoggedWrite {
                    op: LoggedOp::Put { key: Key::from("user:1"), value: b"hello".to_vec() },
                    write_id: Some(WriteId::new(7, 300)),
                    push_id: None,
                },
                LoggedWrite { op: LoggedOp::Delete { key: Key::from("user:2") }, write_id: None, push_id: None },
                LoggedWrite {
                    op: LoggedOp::DeleteRange { start: Key::from("a"), end: Some(Key::from("b")) },
                    write_id: Some(WriteId::new(u64::MAX, 1)),
                    push_id: None,
                },
                LoggedWrite {
                    op: LoggedOp::DeleteRange { start: Key::from("c"), end: None },
                    write_id: None,
                    push_id: None,
                },
                LoggedWrite {
                    op: LoggedOp::Put { key: Key::from("list:x"), value: vec![0, 255] },
                    write_id: None,
                    push_id: Some(PushId { ms: 1_700_000_000_000, client: 9, n: 2 }),
                },
            ],
        }
    }

    /// `sample()` as the format-0 encoder (named MessagePack, before issue 16) wrote it:
    /// logs written by older nodes hold such entries, and must still replay.
    const FORMAT_0_FIXTURE: &str = "81a67772697465739582a26f7081a350757482a36b6579c406757365723a31a576616c7565c40568656c6c6fa877726974655f696482a6636c69656e7407a16ecd012c82a26f7081a644656c65746581a36b6579c406757365723a32a877726974655f6964c082a26f7081ab44656c65746552616e676582a57374617274c40161a3656e64c40162a877726974655f696482a6636c69656e74cfffffffffffffffffa16e0182a26f7081ab44656c65746552616e676582a57374617274c40163a3656e64c0a877726974655f6964c083a26f7081a350757482a36b6579c4066c6973743a78a576616c7565c40200ffa877726974655f6964c0a7707573685f696483a26d73cf0000018bcfe56800a6636c69656e7409a16e02";

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    /// The writes of TTLs and counters (compact format only: format 0 predates them).
    fn ttl_and_counter_writes() -> Vec<LoggedWrite> {
        vec![
            LoggedWrite {
                op: LoggedOp::PutExpiring {
                    key: Key::from("session:1"),
                    value: b"s".to_vec(),
                    expires_at_ms: 1_800_000_000_000,
                },
                write_id: Some(WriteId::new(7, 301)),
                push_id: None,
            },
            LoggedWrite {
                op: LoggedOp::SetExpiry { key: Key::from("session:1"), expires_at_ms: Some(1_800_000_000_001) },
                write_id: None,
                push_id: None,
            },
            LoggedWrite {
                op: LoggedOp::SetExpiry { key: Key::from("session:2"), expires_at_ms: None },
                write_id: None,
                push_id: None,
            },
            LoggedWrite {
                op: LoggedOp::Counter { key: Key::from("hits"), value: -9_000_000_000, expires_at_ms: None },
                write_id: Some(WriteId::new(7, 302)),
                push_id: None,
            },
            LoggedWrite {
                op: LoggedOp::Counter { key: Key::from("hits2"), value: 5, expires_at_ms: Some(7) },
                write_id: None,
                push_id: None,
            },
            LoggedWrite {
                op: LoggedOp::Counter { key: Key::from("hits3"), value: -3, expires_at_ms: None },
                write_id: None,
                push_id: None,
            },
        ]
    }

    #[test]
    fn ttl_and_counter_writes_round_trip_beside_the_others() {
        let mut writes = sample().writes;
        writes.extend(ttl_and_counter_writes());
        for n in [i64::MIN, -33, -32, -1, 0, 127, 128, i64::MAX] {
            writes.push(LoggedWrite {
                op: LoggedOp::Counter { key: Key::from("c"), value: n, expires_at_ms: Some(n.unsigned_abs()) },
                write_id: None,
                push_id: None,
            });
        }
        let bytes = encode(&writes, 0).unwrap();
        assert_eq!(decode(&bytes).unwrap().writes, writes);
        // The older writes' bytes do not change: an entry of them alone is what it was.
        let old = encode(&sample().writes, 0).unwrap();
        assert!(bytes.starts_with(&old[..1]) && decode(&old).unwrap() == sample());
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn a_format_0_entry_still_decodes() {
        assert_eq!(decode(&unhex(FORMAT_0_FIXTURE)).unwrap(), sample());
    }

    #[test]
    fn the_compact_format_round_trips_and_is_smaller() {
        let writes = sample().writes;
        let bytes = encode(&writes, 0).unwrap();
        assert_eq!(bytes[0], BATCH_FORMAT_COMPACT);
        assert_eq!(decode(&bytes).unwrap(), sample());
        let old = unhex(FORMAT_0_FIXTURE).len();
        assert!(bytes.len() * 2 < old, "compact {} bytes, format 0 {old}", bytes.len());
    }

    /// Lengths and integers at each MessagePack size boundary survive the hand-written encoder.
    #[test]
    fn encoding_boundaries_round_trip() {
        for len in [0usize, 15, 16, 255, 256, 65_535, 65_536] {
            for n in [0u64, 0x7f, 0x80, 0xff, 0x100, 0xffff, 0x1_0000, u32::MAX as u64, u32::MAX as u64 + 1, u64::MAX] {
                let w = LoggedWrite {
                    op: LoggedOp::Put { key: Key::from("k"), value: vec![3; len] },
                    write_id: Some(WriteId::new(n, n)),
                    push_id: Some(PushId { ms: n, client: n, n }),
                };
                let writes = vec![w; if len < 300 { 17 } else { 1 }];
                let got = decode(&encode(&writes, 0).unwrap()).unwrap();
                assert_eq!(got.writes, writes, "len {len} n {n}");
            }
        }
    }

    #[test]
    fn a_damaged_compact_entry_is_an_error_not_a_panic() {
        let bytes = encode(&sample().writes, 0).unwrap();
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad_op = bytes.to_vec();
        bad_op[3] = 9; // the first write's op tag
        assert!(decode(&bad_op).is_err());
    }

    /// A write id's floor is logged (a third element) and replays; an id without one keeps
    /// the two-element form entries had before floors, and both decode.
    #[test]
    fn a_write_ids_floor_is_logged_and_replays() {
        let put = |id: WriteId| LoggedWrite {
            op: LoggedOp::Put { key: Key::from("k"), value: b"v".to_vec() },
            write_id: Some(id),
            push_id: None,
        };
        let with = put(WriteId { client: 7, n: 300, floor: 290 });
        let without = put(WriteId::new(7, 301));
        let bytes = encode(&[with.clone(), without.clone()], 0).unwrap();
        let got = decode(&bytes).unwrap().writes;
        // `==` on write ids ignores the floor (identity is client and n): compare it alone.
        assert_eq!(got.iter().map(|w| w.write_id.unwrap().floor).collect::<Vec<_>>(), [290, 0]);
        assert_eq!(got, [with, without]);
        let two = encode(&[put(WriteId::new(7, 301))], 0).unwrap();
        assert!(two.len() < encode(&[put(WriteId { client: 7, n: 301, floor: 1 })], 0).unwrap().len());
    }

    #[test]
    fn a_write_id_of_four_elements_is_an_error() {
        // [[0, "k", "v", [1, 2, 3, 4], nil]]
        let bytes = [BATCH_FORMAT_COMPACT, 0x91, 0x95, 0x00, 0xc4, 1, b'k', 0xc4, 1, b'v', 0x94, 1, 2, 3, 4, 0xc0];
        assert!(decode(&bytes).is_err());
        let three = [BATCH_FORMAT_COMPACT, 0x91, 0x95, 0x00, 0xc4, 1, b'k', 0xc4, 1, b'v', 0x93, 1, 2, 3, 0xc0];
        assert_eq!(decode(&three).unwrap().writes[0].write_id.unwrap().floor, 3);
        let one = [BATCH_FORMAT_COMPACT, 0x91, 0x95, 0x00, 0xc4, 1, b'k', 0xc4, 1, b'v', 0x91, 1, 0xc0];
        assert!(decode(&one).is_err());
    }

    /// The per-write overhead bound the batch is planned with holds for the compact format.
    #[test]
    fn the_overhead_bound_covers_the_compact_format() {
        let mut all = sample().writes;
        all.push(LoggedWrite {
            op: LoggedOp::DeleteRange { start: Key::from("a"), end: Some(Key::from("b")) },
            write_id: Some(WriteId { client: u64::MAX, n: u64::MAX, floor: u64::MAX }),
            push_id: None,
        });
        for w in all {
            let len = encode(std::slice::from_ref(&w), 0).unwrap().len();
            assert!(len <= w.encoded_bytes_max() + ampstore_common::limits::LOG_BATCH_HEADER_BYTES_MAX);
        }
    }
}
