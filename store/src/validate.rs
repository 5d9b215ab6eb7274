//! Limit and shape checks shared by every backend, run before the backend is called.

use std::collections::HashSet;

use super::{AppendSlot, LogEntry, MetaOp, StoreError, StoreResult};
use ampstore_common::ids::{RangeId, Seq};
use ampstore_common::limits::{
    APPEND_ATOMIC_BYTES_MAX, APPEND_ATOMIC_SLOTS_MAX, BLOB_BYTES_MAX, BLOB_NAME_BYTES_MAX, LOG_ENTRY_BYTES_MAX,
    META_PARTITION_BYTES_MAX, META_SORT_KEY_BYTES_MAX, META_TRANSACT_OPS_MAX, META_VALUE_BYTES_MAX,
    STORE_APPEND_EACH_BYTES_MAX, STORE_APPEND_EACH_SLOTS_MAX,
};

/// Seqs and range ids are stored as signed 64-bit integers in SQLite.
const ID_MAX: u64 = i64::MAX as u64;

pub fn slot(range: RangeId, seq: Seq, entry: &LogEntry) -> StoreResult<()> {
    if range.0 > ID_MAX {
        return Err(StoreError::Invalid(format!("range id {} is over {ID_MAX}", range.0)));
    }
    if seq.0 == 0 || seq.0 > ID_MAX {
        return Err(StoreError::Invalid(format!("seq must be 1 to {ID_MAX}, got {}", seq.0)));
    }
    if entry.payload.len() > LOG_ENTRY_BYTES_MAX {
        return Err(StoreError::too_large("log entry payload", entry.payload.len(), LOG_ENTRY_BYTES_MAX));
    }
    Ok(())
}

pub fn append_atomic(slots: &[AppendSlot]) -> StoreResult<()> {
    if slots.is_empty() {
        return Err(StoreError::Invalid("append_atomic needs at least one slot".into()));
    }
    if slots.len() > APPEND_ATOMIC_SLOTS_MAX {
        return Err(StoreError::too_large("append_atomic slot count", slots.len(), APPEND_ATOMIC_SLOTS_MAX));
    }
    let mut seen = HashSet::with_capacity(slots.len());
    let mut total = 0usize;
    for s in slots {
        slot(s.range, s.seq, &s.entry)?;
        if !seen.insert((s.range, s.seq)) {
            return Err(StoreError::Invalid(format!("slot {}/{} appears twice", s.range, s.seq)));
        }
        total += s.entry.payload.len();
    }
    if total > APPEND_ATOMIC_BYTES_MAX {
        return Err(StoreError::too_large("append_atomic payload total", total, APPEND_ATOMIC_BYTES_MAX));
    }
    Ok(())
}

/// An `AppendEach` request to the store process: 1 to `STORE_APPEND_EACH_SLOTS_MAX` slots
/// of at most `STORE_APPEND_EACH_BYTES_MAX` payload bytes in all. Each slot is appended on
/// its own (a slot named twice finds itself taken the second time), so no uniqueness check.
pub fn append_each(slots: &[AppendSlot]) -> StoreResult<()> {
    if slots.is_empty() {
        return Err(StoreError::Invalid("append_each needs at least one slot".into()));
    }
    if slots.len() > STORE_APPEND_EACH_SLOTS_MAX {
        return Err(StoreError::too_large("append_each slot count", slots.len(), STORE_APPEND_EACH_SLOTS_MAX));
    }
    let total: usize = slots.iter().map(|s| s.entry.payload.len()).sum();
    if total > STORE_APPEND_EACH_BYTES_MAX {
        return Err(StoreError::too_large("append_each payload total", total, STORE_APPEND_EACH_BYTES_MAX));
    }
    Ok(())
}

pub fn range_id(range: RangeId) -> StoreResult<()> {
    if range.0 > ID_MAX {
        return Err(StoreError::Invalid(format!("range id {} is over {ID_MAX}", range.0)));
    }
    Ok(())
}

pub fn seq(seq: Seq) -> StoreResult<()> {
    if seq.0 > ID_MAX {
        return Err(StoreError::Invalid(format!("seq {} is over {ID_MAX}", seq.0)));
    }
    Ok(())
}

pub fn meta_key(pk: &str, sk: &[u8]) -> StoreResult<()> {
    if pk.is_empty() || pk.len() > META_PARTITION_BYTES_MAX {
        return Err(StoreError::Invalid(format!("meta partition must be 1 to {META_PARTITION_BYTES_MAX} bytes")));
    }
    if sk.len() > META_SORT_KEY_BYTES_MAX {
        return Err(StoreError::too_large("meta sort key", sk.len(), META_SORT_KEY_BYTES_MAX));
    }
    // DynamoDB cannot store an empty key, so the AWS backend stores zero-only keys with one
    // extra zero byte; at full length that no longer fits. Refuse it on every backend alike.
    if sk.len() == META_SORT_KEY_BYTES_MAX && sk.iter().all(|&b| b == 0) {
        return Err(StoreError::too_large("meta sort key of zero bytes only", sk.len(), META_SORT_KEY_BYTES_MAX - 1));
    }
    Ok(())
}

pub fn meta_value(value: &[u8]) -> StoreResult<()> {
    if value.len() > META_VALUE_BYTES_MAX {
        return Err(StoreError::too_large("meta value", value.len(), META_VALUE_BYTES_MAX));
    }
    Ok(())
}

pub fn expect(e: &super::Expect) -> StoreResult<()> {
    if let super::Expect::Value(v) = e {
        meta_value(v)?;
    }
    Ok(())
}

pub fn meta_transact(ops: &[MetaOp]) -> StoreResult<()> {
    if ops.is_empty() {
        return Err(StoreError::Invalid("a meta transaction needs at least one op".into()));
    }
    if ops.len() > META_TRANSACT_OPS_MAX {
        return Err(StoreError::too_large("meta transaction op count", ops.len(), META_TRANSACT_OPS_MAX));
    }
    let mut seen = HashSet::with_capacity(ops.len());
    for op in ops {
        let (pk, sk) = op.key();
        meta_key(pk, sk)?;
        expect(op.expect())?;
        if let MetaOp::Put { value, .. } = op {
            meta_value(value)?;
        }
        if !seen.insert((pk, sk)) {
            return Err(StoreError::Invalid(format!("meta item {pk}/{sk:?} appears twice in one transaction")));
        }
    }
    Ok(())
}

/// Blob names: 1 to `BLOB_NAME_BYTES_MAX` bytes of `[A-Za-z0-9_.=-]` in `/`-separated parts,
/// none empty, `.` or `..` (so a name is also a safe relative path).
pub fn blob_name(name: &str) -> StoreResult<()> {
    if name.is_empty() || name.len() > BLOB_NAME_BYTES_MAX {
        return Err(StoreError::Invalid(format!("blob name must be 1 to {BLOB_NAME_BYTES_MAX} bytes")));
    }
    for part in name.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return Err(StoreError::Invalid(format!("blob name {name:?} has an empty, '.' or '..' part")));
        }
        if part.starts_with(".tmp") {
            return Err(StoreError::Invalid(format!("blob name {name:?}: parts starting with .tmp are reserved")));
        }
        if let Some(c) = part.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '=' | '-'))) {
            return Err(StoreError::Invalid(format!("blob name {name:?} has a forbidden character {c:?}")));
        }
    }
    Ok(())
}

/// Blob prefixes for `list`: like names, but may be empty and may end with `/`.
pub fn blob_prefix(prefix: &str) -> StoreResult<()> {
    if prefix.is_empty() {
        return Ok(());
    }
    if prefix.len() > BLOB_NAME_BYTES_MAX {
        return Err(StoreError::Invalid(format!("blob prefix over {BLOB_NAME_BYTES_MAX} bytes")));
    }
    let trimmed = prefix.strip_suffix('/').unwrap_or(prefix);
    if trimmed.is_empty() {
        return Err(StoreError::Invalid("blob prefix must not be \"/\"".into()));
    }
    // The last part may be a partial name such as "snap" or "snap-"; only its characters matter.
    blob_name(trimmed)
}

pub fn blob_size(len: usize) -> StoreResult<()> {
    if len > BLOB_BYTES_MAX {
        return Err(StoreError::too_large("blob", len, BLOB_BYTES_MAX));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ampstore_common::limits::FRAME_BYTES_MAX;

    fn slots(n: usize, payload: usize) -> Vec<AppendSlot> {
        (0..n)
            .map(|i| AppendSlot {
                range: RangeId(i as u64),
                seq: Seq(1),
                entry: LogEntry {
                    kind: crate::EntryKind::Batch,
                    writer: ampstore_common::ids::NodeId::new("n1").unwrap(),
                    epoch: ampstore_common::ids::Epoch(1),
                    payload: bytes::Bytes::from(vec![0u8; payload]),
                },
            })
            .collect()
    }

    #[test]
    fn append_each_takes_up_to_its_slot_and_byte_limits() {
        const { assert!(STORE_APPEND_EACH_BYTES_MAX >= LOG_ENTRY_BYTES_MAX) };
        const { assert!(STORE_APPEND_EACH_BYTES_MAX + 1024 * STORE_APPEND_EACH_SLOTS_MAX < FRAME_BYTES_MAX) };
        assert!(matches!(append_each(&[]), Err(StoreError::Invalid(_))));
        assert!(append_each(&slots(STORE_APPEND_EACH_SLOTS_MAX, 1)).is_ok());
        assert!(matches!(append_each(&slots(STORE_APPEND_EACH_SLOTS_MAX + 1, 1)), Err(StoreError::TooLarge { .. })));
        let per = STORE_APPEND_EACH_BYTES_MAX / 4;
        let mut at_limit = slots(4, per);
        assert!(append_each(&at_limit).is_ok());
        at_limit[3].entry.payload = bytes::Bytes::from(vec![0u8; per + 1]);
        assert!(matches!(append_each(&at_limit), Err(StoreError::TooLarge { .. })));
    }

    #[test]
    fn blob_names() {
        for ok in ["a", "ranges/r1/seq-00000001.snap", "x=y/z-_.q"] {
            assert!(blob_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "/a", "a/", "a//b", "../a", "a/./b", "a b", "a\\b", ".tmp-1", "é"] {
            assert!(blob_name(bad).is_err(), "{bad}");
        }
        assert!(blob_name(&"a".repeat(BLOB_NAME_BYTES_MAX)).is_ok());
        assert!(blob_name(&"a".repeat(BLOB_NAME_BYTES_MAX + 1)).is_err());
        assert!(blob_prefix("").is_ok());
        assert!(blob_prefix("ranges/").is_ok());
        assert!(blob_prefix("/").is_err());
        assert!(blob_prefix("../").is_err());
    }
}
