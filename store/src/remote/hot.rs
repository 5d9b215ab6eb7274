//! The store process's hottest message, by hand: the `AppendEach` request (decoded) and its
//! `EachAppended` answer (encoded), in exactly the bytes `rmp_serde::encode::write_named`
//! writes for them, so the wire does not change (the tests check both against serde).
//!
//! Why: through `rmp_serde` the request's decode was about a seventh of the store process's
//! instructions per durable put (field and variant names matched through serde's identifier
//! visitors and checked as UTF-8, every payload copied out of the frame). The decoder
//! accepts only the canonical shape (the one `write_named` writes: maps of exactly the
//! fields, in declaration order, names as fixstr, the payload as `bin`; integers in any
//! form that fits, as serde's visitors take them) and hands back payloads that share the
//! frame's buffer. Anything else, valid or not, returns `None` and the caller decodes the
//! body with `decode_body`, which accepts it or refuses it exactly as before. The shape
//! nests 5 deep (under `FRAME_NESTING_DEPTH_MAX`) and is walked without recursion; a body
//! with bytes after the message is never taken here. The slots' own checks
//! (`validate::append_each`, `validate::slot`) run on the decoded slots as before.

use bytes::Bytes;
use rmp::{decode, encode};

use super::StoreResponse;
use crate::{AppendSlot, EntryKind, LogEntry, StoreError};
use ampstore_common::frame::{FRAME_HEADER_BYTES, FrameError, encode_frame};
use ampstore_common::ids::{Epoch, NodeId, RangeId, Seq};
use ampstore_common::limits::FRAME_BYTES_MAX;

/// `{"AppendEach": {"slots":`
const APPEND_EACH: &[u8; 19] = b"\x81\xaaAppendEach\x81\xa5slots";
/// `{` 3 entries `"range":`
const SLOT_RANGE: &[u8; 7] = b"\x83\xa5range";
/// `"seq":`
const SEQ: &[u8; 4] = b"\xa3seq";
/// `"entry": {` 4 entries `"kind":`
const ENTRY_KIND: &[u8; 12] = b"\xa5entry\x84\xa4kind";
/// `"writer":`
const WRITER: &[u8; 7] = b"\xa6writer";
/// `"epoch":`
const EPOCH: &[u8; 6] = b"\xa5epoch";
/// `"payload":`
const PAYLOAD: &[u8; 8] = b"\xa7payload";
/// `{"Ok": {"EachAppended":`
const OK_EACH_APPENDED: &[u8; 18] = b"\x81\xa2Ok\x81\xacEachAppended";
/// `{"Ok": nil}`: one slot appended.
const SLOT_OK: &[u8; 5] = b"\x81\xa2Ok\xc0";

/// Whether `body` is an `AppendEach` request in the canonical shape's first bytes (the
/// caller then hands it to [`read_append_each`] as `Bytes`).
pub(super) fn is_append_each(body: &[u8]) -> bool {
    body.starts_with(APPEND_EACH)
}

/// The slots of an `AppendEach` request in the canonical shape, their payloads sharing
/// `body`; `None` for anything else.
pub(super) fn read_append_each(body: &Bytes) -> Option<Vec<AppendSlot>> {
    let mut rd = Reader { body, pos: 0 };
    rd.fixed(APPEND_EACH)?;
    let n = rd.array_len()?;
    // Each slot takes far more than 8 bytes: a count beyond that is not this body's.
    if n > body.len() / 8 {
        return None;
    }
    let mut slots = Vec::with_capacity(n);
    for _ in 0..n {
        rd.fixed(SLOT_RANGE)?;
        let range = RangeId(rd.u64()?);
        rd.fixed(SEQ)?;
        let seq = Seq(rd.u64()?);
        rd.fixed(ENTRY_KIND)?;
        let kind = entry_kind(rd.str()?)?;
        rd.fixed(WRITER)?;
        let writer = NodeId::new(rd.str()?).ok()?;
        rd.fixed(EPOCH)?;
        let epoch = Epoch(rd.u64()?);
        rd.fixed(PAYLOAD)?;
        let payload = rd.bin()?;
        slots.push(AppendSlot { range, seq, entry: LogEntry { kind, writer, epoch, payload } });
    }
    (rd.pos == body.len()).then_some(slots)
}

/// The variant `rmp_serde` names `name` (unit variants are written as their name).
fn entry_kind(name: &str) -> Option<EntryKind> {
    Some(match name {
        "Batch" => EntryKind::Batch,
        "Fence" => EntryKind::Fence,
        "Split" => EntryKind::Split,
        "Txn" => EntryKind::Txn,
        "Abort" => EntryKind::Abort,
        "Merge" => EntryKind::Merge,
        // Anything else goes through serde (which refuses it).
        _ => return None,
    })
}

/// Appends one frame holding `answer` to `buf`, as `encode_frame` does (same bytes, same
/// errors): an `EachAppended` by hand (its failed slots through serde, each on its own),
/// anything else through serde.
pub(super) fn encode_answer(answer: &StoreResponse, buf: &mut Vec<u8>) -> Result<(), FrameError> {
    let start = buf.len();
    if let Ok(super::StoreReply::EachAppended(outcomes)) = answer {
        buf.extend_from_slice(&[0u8; FRAME_HEADER_BYTES]);
        if write_each_appended(outcomes, buf).is_some() {
            let body_len = buf.len() - start - FRAME_HEADER_BYTES;
            if body_len <= FRAME_BYTES_MAX {
                buf[start..start + FRAME_HEADER_BYTES].copy_from_slice(&(body_len as u32).to_be_bytes());
                return Ok(());
            }
        }
        buf.truncate(start);
    }
    encode_frame(answer, buf)
}

fn write_each_appended(outcomes: &[Result<(), StoreError>], buf: &mut Vec<u8>) -> Option<()> {
    buf.extend_from_slice(OK_EACH_APPENDED);
    encode::write_array_len(buf, u32::try_from(outcomes.len()).ok()?).ok()?;
    for outcome in outcomes {
        match outcome {
            Ok(()) => buf.extend_from_slice(SLOT_OK),
            Err(_) => rmp_serde::encode::write_named(buf, outcome).ok()?,
        }
    }
    Some(())
}

/// The rest of the body being decoded.
struct Reader<'a> {
    body: &'a Bytes,
    pos: usize,
}

impl Reader<'_> {
    fn rest(&self) -> &[u8] {
        &self.body[self.pos..]
    }

    fn fixed<const LEN: usize>(&mut self, fixed: &[u8; LEN]) -> Option<()> {
        let head = self.rest().first_chunk::<LEN>()?;
        if head != fixed {
            return None;
        }
        self.pos += LEN;
        Some(())
    }

    /// Runs one of `rmp`'s readers on the rest and advances past what it read.
    fn read<T>(&mut self, f: impl FnOnce(&mut &[u8]) -> Option<T>) -> Option<T> {
        let mut rest = self.rest();
        let before = rest.len();
        let out = f(&mut rest)?;
        self.pos += before - rest.len();
        Some(out)
    }

    /// Any integer that fits a `u64`, as serde's `u64` visitor takes it.
    fn u64(&mut self) -> Option<u64> {
        self.read(|r| decode::read_int::<u64, _>(r).ok())
    }

    fn array_len(&mut self) -> Option<usize> {
        self.read(|r| decode::read_array_len(r).ok()).and_then(|n| usize::try_from(n).ok())
    }

    /// A `str`, borrowed (checked as UTF-8, as serde does).
    fn str(&mut self) -> Option<&str> {
        let len = usize::try_from(self.read(|r| decode::read_str_len(r).ok())?).ok()?;
        let start = self.pos;
        let end = start.checked_add(len).filter(|&e| e <= self.body.len())?;
        self.pos = end;
        std::str::from_utf8(&self.body[start..end]).ok()
    }

    /// A `bin`, as a slice of the body (no copy).
    fn bin(&mut self) -> Option<Bytes> {
        let len = usize::try_from(self.read(|r| decode::read_bin_len(r).ok())?).ok()?;
        let start = self.pos;
        let end = start.checked_add(len).filter(|&e| e <= self.body.len())?;
        self.pos = end;
        Some(self.body.slice(start..end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::{StoreReply, StoreRequest};
    use ampstore_common::frame::decode_body;

    fn slot(range: u64, seq: u64, kind: EntryKind, payload: Vec<u8>) -> AppendSlot {
        AppendSlot {
            range: RangeId(range),
            seq: Seq(seq),
            entry: LogEntry {
                kind,
                writer: NodeId::new("n-3f9a1c0b7d2e4a61").unwrap(),
                epoch: Epoch(range.wrapping_mul(7)),
                payload: Bytes::from(payload),
            },
        }
    }

    fn encoded(req: &StoreRequest) -> Bytes {
        let mut buf = Vec::new();
        encode_frame(req, &mut buf).unwrap();
        Bytes::from(buf).slice(FRAME_HEADER_BYTES..)
    }

    /// Every kind, integers of every width, payloads empty to large, 0 to many slots: the
    /// hand decoder reads serde's bytes as serde does.
    #[test]
    fn the_hand_decoder_reads_what_serde_writes() {
        // Every kind there is (a new one fails here until `entry_kind` knows it).
        let kinds: Vec<EntryKind> = (0..=u8::MAX).filter_map(EntryKind::from_u8).collect();
        let ints = [0u64, 1, 127, 128, 255, 256, 65_535, 65_536, u32::MAX as u64, u32::MAX as u64 + 1, u64::MAX];
        for n in [0usize, 1, 3, 16, 17, 300] {
            let slots: Vec<AppendSlot> = (0..n)
                .map(|i| {
                    let payload = vec![i as u8; [0, 1, 31, 32, 255, 256, 70_000][i % 7]];
                    slot(ints[i % ints.len()], ints[(i + 3) % ints.len()], kinds[i % kinds.len()], payload)
                })
                .collect();
            let req = StoreRequest::AppendEach { slots: slots.clone() };
            let body = encoded(&req);
            assert!(is_append_each(&body));
            assert_eq!(read_append_each(&body), Some(slots), "{n} slots");
            assert_eq!(decode_body::<StoreRequest>(&body).unwrap(), req);
        }
    }

    #[test]
    fn payloads_share_the_frame() {
        let body = encoded(&StoreRequest::AppendEach { slots: vec![slot(1, 2, EntryKind::Batch, vec![9; 5000])] });
        let slots = read_append_each(&body).unwrap();
        let p = &slots[0].entry.payload;
        assert!(body.as_ptr_range().contains(&p.as_ptr()), "the payload was copied");
    }

    /// Anything not in the canonical shape is left to serde: other requests, a cut or
    /// padded body, a bad node id, a kind this decoder does not know.
    #[test]
    fn anything_else_is_left_to_serde() {
        let good = encoded(&StoreRequest::AppendEach { slots: vec![slot(1, 2, EntryKind::Batch, vec![9; 40])] });
        assert!(!is_append_each(&encoded(&StoreRequest::Head { range: RangeId(1) })));
        for cut in 0..good.len() {
            assert_eq!(read_append_each(&good.slice(..cut)), None, "cut at {cut}");
        }
        let mut padded = good.to_vec();
        padded.push(0xc0);
        assert_eq!(read_append_each(&Bytes::from(padded)), None);
        let bad_writer = good.to_vec();
        let at = bad_writer.windows(3).position(|w| w == b"n-3").unwrap();
        let mut bad = bad_writer.clone();
        bad[at] = b'/';
        assert_eq!(read_append_each(&Bytes::from(bad.clone())), None);
        assert!(decode_body::<StoreRequest>(&bad).is_err(), "serde refuses it too");
        // A count far beyond the body is refused before anything is allocated.
        let mut huge = APPEND_EACH.to_vec();
        huge.extend_from_slice(&[0xdd, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(read_append_each(&Bytes::from(huge)), None);
    }

    #[test]
    fn the_hand_encoded_answer_is_serdes() {
        let answers: Vec<StoreResponse> = vec![
            Ok(StoreReply::EachAppended(vec![])),
            Ok(StoreReply::EachAppended(vec![Ok(()); 20])),
            Ok(StoreReply::EachAppended(vec![
                Ok(()),
                Err(StoreError::SlotTaken { range: RangeId(3), seq: Seq(9) }),
                Err(StoreError::Invalid("x".into())),
                Ok(()),
            ])),
            Ok(StoreReply::Done),
            Err(StoreError::Unavailable("y".into())),
        ];
        for a in answers {
            let (mut hand, mut serde) = (vec![1u8], vec![1u8]);
            encode_answer(&a, &mut hand).unwrap();
            encode_frame(&a, &mut serde).unwrap();
            assert_eq!(hand, serde, "{a:?}");
        }
    }
}
