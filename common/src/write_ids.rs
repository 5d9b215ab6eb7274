//! What a range remembers of the writes it applied, so that a retry is answered with the
//! original outcome instead of being applied again (DESIGN §4, "Exactly-once writes").
//!
//! A record names a write by its id (a plain write's [`WriteId`], a push's or enqueue's
//! [`PushId`], or a transaction's id) and keeps its outcome and when it was decided (unix
//! ms). Records live for at least [`WRITE_ID_RETENTION_MS`](crate::limits::WRITE_ID_RETENTION_MS)
//! and travel in the range's snapshot file, so a retry that reaches the
//! range after a snapshot, a move, a failover, a split or a merge still finds them.
//!
//! This file holds the records and their binary encoding; the range's table (bounded by time
//! and bytes) is in the node.

use crate::error::Error;
use crate::ids::Seq;
use crate::key::{Key, Version};
use crate::limits::{ERROR_REASON_BYTES_MAX, KEY_BYTES_MAX, WRITE_ID_RECORD_BYTES_FIXED};
use crate::lists::PushId;
use crate::protocol::{Reply, WriteId};

/// The id a write is remembered by. Ordered so that a range's table can be an ordered map
/// (denser in memory than a hash trie: `node::range::write_ids`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WriteKey {
    /// A put, conditional put, delete or delete-range sent with a write id.
    Write(WriteId),
    /// A push or an enqueue, by its push or task id.
    Push(PushId),
    /// A transaction, by its id.
    Txn(WriteId),
}

/// What a remembered write answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    /// `Reply::Written`.
    Written { version: Version },
    /// `Reply::Deleted`.
    Deleted { removed: u64, version: Version },
    /// `Error::Conflict` (a condition did not hold; nothing was written).
    Conflict { reason: String, key: Option<Key> },
    /// A transaction's outcome in this range: committed (its entry at `seq`, when it wrote
    /// here) or not.
    Txn { committed: bool, seq: Option<Seq> },
    /// `Reply::ExpiryChanged` (an expire or persist).
    ExpiryChanged { changed: bool },
    /// `Reply::Counted`: a retried increment answers the first one's value.
    Counted { value: i64, version: Version },
}

impl WriteOutcome {
    /// The outcome of a write's result, if it is one worth remembering (a reply of a write,
    /// or a failed condition). Other errors (unavailable, fenced...) wrote nothing and may be
    /// retried, so they are not remembered.
    pub fn of(result: &Result<Reply, Error>) -> Option<WriteOutcome> {
        match result {
            Ok(Reply::Written { version }) => Some(WriteOutcome::Written { version: *version }),
            Ok(Reply::Deleted { removed, version }) => {
                Some(WriteOutcome::Deleted { removed: *removed, version: *version })
            }
            Err(Error::Conflict { reason, key }) => {
                Some(WriteOutcome::Conflict { reason: reason.clone(), key: key.clone() })
            }
            Ok(Reply::ExpiryChanged { changed }) => Some(WriteOutcome::ExpiryChanged { changed: *changed }),
            Ok(Reply::Counted { value, version }) => Some(WriteOutcome::Counted { value: *value, version: *version }),
            _ => None,
        }
    }

    /// The answer a retry gets.
    pub fn to_result(&self) -> Result<Reply, Error> {
        match self {
            WriteOutcome::Written { version } => Ok(Reply::Written { version: *version }),
            WriteOutcome::Deleted { removed, version } => Ok(Reply::Deleted { removed: *removed, version: *version }),
            WriteOutcome::Conflict { reason, key } => Err(Error::Conflict { reason: reason.clone(), key: key.clone() }),
            WriteOutcome::Txn { committed, .. } => Ok(Reply::TxnResolved { committed: *committed }),
            WriteOutcome::ExpiryChanged { changed } => Ok(Reply::ExpiryChanged { changed: *changed }),
            WriteOutcome::Counted { value, version } => Ok(Reply::Counted { value: *value, version: *version }),
        }
    }

    /// What the record counts against a range's `RANGE_WRITE_IDS_BYTES_MAX`.
    pub fn accounted_bytes(&self) -> usize {
        WRITE_ID_RECORD_BYTES_FIXED
            + match self {
                WriteOutcome::Conflict { reason, key } => reason.len() + key.as_ref().map_or(0, Key::len),
                _ => 0,
            }
    }
}

/// One remembered write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteRecord {
    pub key: WriteKey,
    pub outcome: WriteOutcome,
    /// When the outcome was decided (or, for one rebuilt from the log, when it was replayed).
    pub at_unix_ms: u64,
    /// The key the write was routed by (a retry comes to the range holding it): a split
    /// gives the record to that child only. `None` (a transaction, or a record from a
    /// snapshot written before this was kept): both children keep it.
    pub data_key: Option<Key>,
}

/// A client's floor as a range keeps it: the client promised, in a write of its own, never
/// to send again a write of its with `n` below `floor` (see `WriteId::floor`). The range
/// forgets those writes' records and refuses such a write. Kept for `WRITE_ID_RETENTION_MS`
/// after `at_unix_ms` (when it was last raised), as long as the records it stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientFloor {
    pub client: u64,
    pub floor: u64,
    pub at_unix_ms: u64,
}

const KEY_WRITE: u8 = 0;
const KEY_PUSH: u8 = 1;
const KEY_TXN: u8 = 2;
/// Set on the id tag when the record's data key follows its ids (older snapshots never set
/// it, and decode to `data_key: None`).
const KEY_HAS_DATA_KEY: u8 = 0x80;
const OUT_WRITTEN: u8 = 0;
const OUT_DELETED: u8 = 1;
const OUT_CONFLICT: u8 = 2;
const OUT_TXN: u8 = 3;
const OUT_EXPIRY_CHANGED: u8 = 4;
const OUT_COUNTED: u8 = 5;

fn put_varint(out: &mut Vec<u8>, v: u64) {
    crate::varint::put(out, v);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn put_version(out: &mut Vec<u8>, v: &Version) {
    put_varint(out, v.seq.0);
    put_varint(out, u64::from(v.index));
}

/// Appends `records` and `floors` in their binary form (the snapshot's write-id section):
/// `count varint, then per record: key tag u8 (+ 0x80 when a data key follows the ids), ids
/// (varints), [data key: length varint, bytes], at_unix_ms varint, outcome tag u8, outcome
/// fields`; then, only when there are floors, `count varint, then per floor: client, floor,
/// at_unix_ms (varints)`. A section without floors is what nodes wrote before floors.
pub fn encode(records: &[WriteRecord], floors: &[ClientFloor], out: &mut Vec<u8>) {
    encode_records(records, out);
    if !floors.is_empty() {
        put_varint(out, floors.len() as u64);
        for f in floors {
            put_varint(out, f.client);
            put_varint(out, f.floor);
            put_varint(out, f.at_unix_ms);
        }
    }
}

fn encode_records(records: &[WriteRecord], out: &mut Vec<u8>) {
    put_varint(out, records.len() as u64);
    for r in records {
        let flag = if r.data_key.is_some() { KEY_HAS_DATA_KEY } else { 0 };
        match r.key {
            WriteKey::Write(id) | WriteKey::Txn(id) => {
                out.push(flag | if matches!(r.key, WriteKey::Write(_)) { KEY_WRITE } else { KEY_TXN });
                put_varint(out, id.client);
                put_varint(out, id.n);
            }
            WriteKey::Push(p) => {
                out.push(flag | KEY_PUSH);
                put_varint(out, p.ms);
                put_varint(out, p.client);
                put_varint(out, p.n);
            }
        }
        if let Some(k) = &r.data_key {
            put_bytes(out, k.as_bytes());
        }
        put_varint(out, r.at_unix_ms);
        match &r.outcome {
            WriteOutcome::Written { version } => {
                out.push(OUT_WRITTEN);
                put_version(out, version);
            }
            WriteOutcome::Deleted { removed, version } => {
                out.push(OUT_DELETED);
                put_varint(out, *removed);
                put_version(out, version);
            }
            WriteOutcome::Conflict { reason, key } => {
                out.push(OUT_CONFLICT);
                put_bytes(out, reason.as_bytes());
                match key {
                    Some(k) => {
                        out.push(1);
                        put_bytes(out, k.as_bytes());
                    }
                    None => out.push(0),
                }
            }
            WriteOutcome::Txn { committed, seq } => {
                out.push(OUT_TXN);
                out.push(u8::from(*committed));
                put_varint(out, seq.map_or(0, |s| s.0));
            }
            WriteOutcome::ExpiryChanged { changed } => {
                out.push(OUT_EXPIRY_CHANGED);
                out.push(u8::from(*changed));
            }
            WriteOutcome::Counted { value, version } => {
                out.push(OUT_COUNTED);
                // Two's complement as a varint: a small negative count costs 10 bytes,
                // rare enough not to zigzag.
                put_varint(out, *value as u64);
                put_version(out, version);
            }
        }
    }
}

/// Why a write-id section does not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Result<u8, DecodeError> {
        let b = *self.buf.get(self.pos).ok_or_else(|| DecodeError(format!("ends at offset {}", self.pos)))?;
        self.pos += 1;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        crate::varint::read(self.buf, &mut self.pos)
            .ok_or_else(|| DecodeError(format!("bad or cut varint before offset {}", self.pos)))
    }

    fn bytes(&mut self, what: &str, max: usize) -> Result<&'a [u8], DecodeError> {
        let len = self.varint()?;
        if len > max as u64 {
            return Err(DecodeError(format!("{what} length {len} is over {max}")));
        }
        let end = self.pos + len as usize;
        let s = self.buf.get(self.pos..end).ok_or_else(|| DecodeError(format!("{what} runs past the end")))?;
        self.pos = end;
        Ok(s)
    }

    fn version(&mut self) -> Result<Version, DecodeError> {
        let seq = Seq(self.varint()?);
        let index = u32::try_from(self.varint()?).map_err(|_| DecodeError("version index over u32".into()))?;
        Ok(Version { seq, index })
    }
}

/// A decoded write-id section.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteIdSection {
    pub records: Vec<WriteRecord>,
    pub floors: Vec<ClientFloor>,
}

/// Decodes a whole write-id section; at most `records_max` records and as many floors
/// (checked before allocating), and every byte must be used.
pub fn decode(buf: &[u8], records_max: usize) -> Result<WriteIdSection, DecodeError> {
    let mut r = Reader { buf, pos: 0 };
    let count = r.varint()?;
    if count > records_max as u64 {
        return Err(DecodeError(format!("{count} records, over the limit of {records_max}")));
    }
    // Each record takes at least 6 bytes: a count that cannot fit is damage, not a reason to
    // allocate.
    if count > (buf.len() / 6) as u64 {
        return Err(DecodeError(format!("{count} records cannot fit in {} bytes", buf.len())));
    }
    let mut out = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let tag = r.u8()?;
        let key = match tag & !KEY_HAS_DATA_KEY {
            KEY_WRITE => WriteKey::Write(WriteId::new(r.varint()?, r.varint()?)),
            KEY_TXN => WriteKey::Txn(WriteId::new(r.varint()?, r.varint()?)),
            KEY_PUSH => WriteKey::Push(PushId { ms: r.varint()?, client: r.varint()?, n: r.varint()? }),
            other => return Err(DecodeError(format!("unknown id tag {other}"))),
        };
        let data_key = match tag & KEY_HAS_DATA_KEY {
            0 => None,
            _ => Some(Key::from(r.bytes("data key", KEY_BYTES_MAX)?)),
        };
        let at_unix_ms = r.varint()?;
        let outcome = match r.u8()? {
            OUT_WRITTEN => WriteOutcome::Written { version: r.version()? },
            OUT_DELETED => {
                let removed = r.varint()?;
                WriteOutcome::Deleted { removed, version: r.version()? }
            }
            OUT_CONFLICT => {
                let reason = String::from_utf8_lossy(r.bytes("conflict reason", ERROR_REASON_BYTES_MAX)?).into_owned();
                let key = match r.u8()? {
                    0 => None,
                    1 => Some(Key::from(r.bytes("conflict key", KEY_BYTES_MAX)?)),
                    other => return Err(DecodeError(format!("bad key marker {other}"))),
                };
                WriteOutcome::Conflict { reason, key }
            }
            OUT_TXN => {
                let committed = match r.u8()? {
                    0 => false,
                    1 => true,
                    other => return Err(DecodeError(format!("bad committed flag {other}"))),
                };
                let seq = r.varint()?;
                WriteOutcome::Txn { committed, seq: (seq != 0).then_some(Seq(seq)) }
            }
            OUT_EXPIRY_CHANGED => match r.u8()? {
                0 => WriteOutcome::ExpiryChanged { changed: false },
                1 => WriteOutcome::ExpiryChanged { changed: true },
                other => return Err(DecodeError(format!("bad changed flag {other}"))),
            },
            OUT_COUNTED => {
                let value = r.varint()? as i64;
                WriteOutcome::Counted { value, version: r.version()? }
            }
            other => return Err(DecodeError(format!("unknown outcome tag {other}"))),
        };
        out.push(WriteRecord { key, outcome, at_unix_ms, data_key });
    }
    let mut floors = Vec::new();
    if r.pos != buf.len() {
        let count = r.varint()?;
        // Each floor takes at least 3 bytes; an empty list is never written (no floors: no
        // count), so bytes saying so are damage.
        if count == 0 || count > records_max as u64 || count > ((buf.len() - r.pos) / 3) as u64 {
            return Err(DecodeError(format!("{count} floors: over the limit or cannot fit")));
        }
        floors.reserve(count as usize);
        for _ in 0..count {
            floors.push(ClientFloor { client: r.varint()?, floor: r.varint()?, at_unix_ms: r.varint()? });
        }
    }
    if r.pos != buf.len() {
        return Err(DecodeError(format!("{} bytes after the last floor", buf.len() - r.pos)));
    }
    Ok(WriteIdSection { records: out, floors })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<WriteRecord> {
        let v = Version { seq: Seq(7), index: 3 };
        vec![
            WriteRecord {
                key: WriteKey::Write(WriteId::new(u64::MAX, 1)),
                outcome: WriteOutcome::Written { version: v },
                at_unix_ms: 1_700_000_000_000,
                data_key: Some(Key::from(&b"user:1"[..])),
            },
            WriteRecord {
                key: WriteKey::Write(WriteId::new(2, 70_000)),
                outcome: WriteOutcome::Deleted { removed: 12, version: v },
                at_unix_ms: 5,
                data_key: None,
            },
            WriteRecord {
                key: WriteKey::Push(PushId { ms: 9, client: 8, n: 7 }),
                outcome: WriteOutcome::Conflict { reason: "behind the tail".into(), key: Some(Key::from(&b"k"[..])) },
                at_unix_ms: 6,
                data_key: Some(Key::from(&[0xffu8, 0xff, 1][..])),
            },
            WriteRecord {
                key: WriteKey::Txn(WriteId::new(3, 4)),
                outcome: WriteOutcome::Txn { committed: true, seq: Some(Seq(99)) },
                at_unix_ms: 7,
                data_key: None,
            },
            WriteRecord {
                key: WriteKey::Txn(WriteId::new(3, 5)),
                outcome: WriteOutcome::Txn { committed: false, seq: None },
                at_unix_ms: 8,
                data_key: None,
            },
            WriteRecord {
                key: WriteKey::Write(WriteId::new(1, 1)),
                outcome: WriteOutcome::Conflict { reason: String::new(), key: None },
                at_unix_ms: 1,
                data_key: None,
            },
            WriteRecord {
                key: WriteKey::Write(WriteId::new(8, 1)),
                outcome: WriteOutcome::ExpiryChanged { changed: true },
                at_unix_ms: 1,
                data_key: None,
            },
            WriteRecord {
                key: WriteKey::Write(WriteId::new(8, 2)),
                outcome: WriteOutcome::Counted { value: -5, version: Version { seq: Seq(4), index: 2 } },
                at_unix_ms: 0,
                data_key: None,
            },
        ]
    }

    #[test]
    fn records_round_trip() {
        let mut buf = Vec::new();
        encode(&samples(), &[], &mut buf);
        assert_eq!(decode(&buf, 100).unwrap().records, samples());
    }

    #[test]
    fn floors_follow_the_records_and_a_section_without_them_is_unchanged() {
        let floors = [
            ClientFloor { client: u64::MAX, floor: 1 << 40, at_unix_ms: 1_700_000_000_000 },
            ClientFloor { client: 3, floor: 1, at_unix_ms: 0 },
        ];
        let (mut without, mut with) = (Vec::new(), Vec::new());
        encode(&samples(), &[], &mut without);
        encode(&samples(), &floors, &mut with);
        assert_eq!(&with[..without.len()], &without[..], "records first, as before");
        let got = decode(&with, 100).unwrap();
        assert_eq!((got.records, got.floors), (samples(), floors.to_vec()));
        assert!(decode(&without, 100).unwrap().floors.is_empty());
        for cut in without.len() + 1..with.len() {
            assert!(decode(&with[..cut], 100).is_err(), "cut at {cut}");
        }
        let mut one = Vec::new();
        encode(&samples()[..1], &floors, &mut one);
        assert!(decode(&one, 2).is_ok());
        assert!(decode(&one, 1).is_err(), "more floors than the limit");
    }

    #[test]
    fn a_record_without_a_data_key_encodes_as_before_and_a_data_key_at_the_limit_decodes() {
        // The encoding older snapshots hold: no flag, no key.
        let old = WriteRecord {
            key: WriteKey::Write(WriteId::new(1, 2)),
            outcome: WriteOutcome::Written { version: Version { seq: Seq(3), index: 0 } },
            at_unix_ms: 4,
            data_key: None,
        };
        let mut buf = Vec::new();
        encode(std::slice::from_ref(&old), &[], &mut buf);
        assert_eq!(buf, [1, KEY_WRITE, 1, 2, 4, OUT_WRITTEN, 3, 0]);
        let at_limit = WriteRecord { data_key: Some(Key::from(vec![b'k'; KEY_BYTES_MAX])), ..old.clone() };
        let mut buf = Vec::new();
        encode(std::slice::from_ref(&at_limit), &[], &mut buf);
        assert_eq!(decode(&buf, 1).unwrap().records, [at_limit]);
        let over = WriteRecord { data_key: Some(Key::from(vec![b'k'; KEY_BYTES_MAX + 1])), ..old };
        let mut buf = Vec::new();
        encode(std::slice::from_ref(&over), &[], &mut buf);
        assert!(decode(&buf, 1).is_err(), "a data key over KEY_BYTES_MAX is damage");
    }

    #[test]
    fn damage_is_an_error_never_a_panic() {
        let mut buf = Vec::new();
        encode(&samples(), &[], &mut buf);
        assert!(decode(&buf, 5).is_err(), "over the record limit");
        assert!(decode(&buf[..buf.len() - 1], 100).is_err(), "truncated");
        let mut longer = buf.clone();
        longer.push(0);
        assert!(decode(&longer, 100).is_err(), "trailing bytes");
        // A huge count in a tiny buffer is refused before allocating.
        let mut huge = Vec::new();
        put_varint(&mut huge, u64::MAX);
        assert!(decode(&huge, usize::MAX).is_err());
        for i in 0..buf.len() {
            for bit in [0x01u8, 0x80] {
                let mut damaged = buf.clone();
                damaged[i] ^= bit;
                let _ = decode(&damaged, 100);
            }
        }
    }

    #[test]
    fn only_write_outcomes_are_remembered() {
        let v = Version { seq: Seq(1), index: 0 };
        assert!(WriteOutcome::of(&Ok(Reply::Written { version: v })).is_some());
        assert!(WriteOutcome::of(&Err(Error::conflict("x"))).is_some());
        assert!(WriteOutcome::of(&Err(Error::Timeout)).is_none());
        assert!(WriteOutcome::of(&Err(Error::Fenced)).is_none());
        for r in samples() {
            if !matches!(r.outcome, WriteOutcome::Txn { .. }) {
                assert_eq!(WriteOutcome::of(&r.outcome.to_result()), Some(r.outcome.clone()));
            }
        }
    }
}
