//! Transactions on the wire (DESIGN section 9): what a transaction checks and writes in
//! each range it touches, and the limits every part must meet.
//!
//! A transaction is a list of parts, one per range. The client groups its checks and
//! writes by range (it knows the routing) and sends the whole list to the node that owns
//! the first part's range, which coordinates: one part is one conditional batch; several
//! use the reserved-slot protocol (`TxnPrepare`, one `append_atomic`, `TxnResolve`).

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::ids::RangeId;
use crate::key::{Key, Version};
use crate::limits::{TXN_BYTES_MAX, TXN_HOLD_MS_MAX, TXN_OPS_MAX, TXN_PART_BYTES_MAX, TXN_RANGES_MAX};
use crate::lists::{self, PushId};
use crate::value::validate_value;

/// What a transaction requires of a key for it to commit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnCondition {
    /// The key holds no value.
    Absent,
    /// The key holds exactly this version (what an earlier read saw).
    Version(Version),
    /// The key holds exactly this value.
    Value(#[serde(with = "serde_bytes")] Vec<u8>),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnCheck {
    pub key: Key,
    pub condition: TxnCondition,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnWrite {
    Put {
        key: Key,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    Delete {
        key: Key,
    },
    /// Appends `element` to the list at `key` (`crate::lists`), as a push with `push_id`.
    Push {
        key: Key,
        #[serde(with = "serde_bytes")]
        element: Vec<u8>,
        push_id: PushId,
    },
    /// A put whose key expires `ttl_ms` after the coordinator starts the transaction (the
    /// coordinator's wall clock: it turns this into [`TxnWrite::PutExpiring`] before anything
    /// is prepared; 1 to `TTL_MS_MAX`).
    PutWithTtl {
        key: Key,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        ttl_ms: u64,
    },
    /// A put whose key expires at `expires_at_ms` (Unix ms, the coordinator's clock). The
    /// coordinator turns every `PutWithTtl` into this before it prepares, so the participant
    /// and the log entry the coordinator writes agree on the expiry.
    PutExpiring {
        key: Key,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        expires_at_ms: u64,
    },
}

impl TxnWrite {
    /// This write with a TTL made absolute from `now_ms` (the coordinator's clock); every
    /// other write as it is.
    pub fn stamped(self, now_ms: u64) -> TxnWrite {
        match self {
            TxnWrite::PutWithTtl { key, value, ttl_ms } => {
                TxnWrite::PutExpiring { key, value, expires_at_ms: now_ms.saturating_add(ttl_ms) }
            }
            other => other,
        }
    }

    /// The key this write changes (for a push, its element's key): it decides the range.
    pub fn target(&self) -> Key {
        match self {
            TxnWrite::Put { key, .. }
            | TxnWrite::Delete { key }
            | TxnWrite::PutWithTtl { key, .. }
            | TxnWrite::PutExpiring { key, .. } => key.clone(),
            TxnWrite::Push { key, push_id, .. } => lists::element_key(key, *push_id),
        }
    }

    fn bytes(&self) -> usize {
        match self {
            TxnWrite::Put { key, value } => key.len() + value.len(),
            TxnWrite::PutWithTtl { key, value, .. } | TxnWrite::PutExpiring { key, value, .. } => {
                key.len() + value.len() + 8
            }
            TxnWrite::Delete { key } => key.len(),
            TxnWrite::Push { key, element, .. } => key.len() + lists::PUSH_ID_BYTES + 8 + element.len(),
        }
    }
}

/// One range's share of a transaction, and where that range is served (as the client's
/// routing knows it; a stale address makes the transaction fail with `NotOwner`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnPart {
    pub range_id: RangeId,
    pub node_addr: String,
    pub checks: Vec<TxnCheck>,
    pub writes: Vec<TxnWrite>,
    /// Keys to read while the range is held (all parts are held at one moment, so the
    /// values read across ranges are consistent).
    #[serde(default)]
    pub reads: Vec<Key>,
}

/// How a coordinator tells a participant to finish.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnDecision {
    /// The transaction's entries are in every reserved slot: apply.
    Commit,
    /// Not committed (or the coordinator does not know): write `Abort` at the reserved slot,
    /// or, if the slot holds this transaction's entry after all, apply it.
    Resolve,
}

/// Checks the limits of a whole transaction.
pub fn validate_parts(parts: &[TxnPart]) -> Result<(), Error> {
    if parts.is_empty() {
        return Err(Error::invalid("a transaction needs at least one part"));
    }
    if parts.len() > TXN_RANGES_MAX {
        return Err(Error::too_large("transaction ranges", parts.len(), TXN_RANGES_MAX));
    }
    let ops: usize = parts.iter().map(|p| p.checks.len() + p.writes.len() + p.reads.len()).sum();
    if ops > TXN_OPS_MAX {
        return Err(Error::too_large("transaction checks and writes", ops, TXN_OPS_MAX));
    }
    let mut bytes = 0usize;
    for (i, p) in parts.iter().enumerate() {
        if parts[..i].iter().any(|q| q.range_id == p.range_id) {
            return Err(Error::invalid(format!("range {} appears twice in the transaction", p.range_id)));
        }
        validate_part(&p.checks, &p.writes)?;
        p.reads.iter().try_for_each(|k| Key::validate_user_key(k.as_bytes()))?;
        bytes += p.writes.iter().map(TxnWrite::bytes).sum::<usize>();
    }
    if bytes > TXN_BYTES_MAX {
        return Err(Error::too_large("a transaction's writes", bytes, TXN_BYTES_MAX));
    }
    Ok(())
}

/// Checks one range's share: keys, values, its bytes (it must fit one log entry), and that
/// no key is written twice.
pub fn validate_part(checks: &[TxnCheck], writes: &[TxnWrite]) -> Result<(), Error> {
    let mut bytes = 0usize;
    for c in checks {
        Key::validate_user_key(c.key.as_bytes())?;
        if let TxnCondition::Value(v) = &c.condition {
            validate_value(v)?;
        }
    }
    let mut targets: Vec<Key> = Vec::with_capacity(writes.len());
    for w in writes {
        match w {
            TxnWrite::Put { key, value } => {
                Key::validate_user_key(key.as_bytes())?;
                validate_value(value)?;
            }
            TxnWrite::PutWithTtl { key, value, ttl_ms } => {
                Key::validate_user_key(key.as_bytes())?;
                validate_value(value)?;
                crate::expiry::validate_ttl_ms(*ttl_ms)?;
            }
            TxnWrite::PutExpiring { key, value, expires_at_ms } => {
                Key::validate_user_key(key.as_bytes())?;
                validate_value(value)?;
                if *expires_at_ms == 0 {
                    return Err(Error::invalid("expires_at_ms must be at least 1 (Unix ms)"));
                }
            }
            TxnWrite::Delete { key } => Key::validate_user_key(key.as_bytes())?,
            TxnWrite::Push { key, element, .. } => {
                lists::validate_list_key(key)?;
                validate_value(element)?;
            }
        }
        let target = w.target();
        if targets.contains(&target) {
            return Err(Error::invalid(format!("key {target} is written twice in one transaction")));
        }
        targets.push(target);
        bytes += w.bytes();
    }
    if bytes > TXN_PART_BYTES_MAX {
        return Err(Error::too_large("a transaction's writes in one range", bytes, TXN_PART_BYTES_MAX));
    }
    Ok(())
}

pub fn validate_hold_ms(hold_ms: u64) -> Result<(), Error> {
    if hold_ms == 0 || hold_ms > TXN_HOLD_MS_MAX {
        return Err(Error::invalid(format!("hold_ms must be 1 to {TXN_HOLD_MS_MAX}, got {hold_ms}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::VALUE_BYTES_MAX;

    fn put(k: &str, n: usize) -> TxnWrite {
        TxnWrite::Put { key: Key::from(k), value: vec![0; n] }
    }

    fn part(id: u64, writes: Vec<TxnWrite>) -> TxnPart {
        TxnPart { range_id: RangeId(id), node_addr: String::new(), checks: vec![], writes, reads: vec![] }
    }

    #[test]
    fn a_ttl_is_stamped_into_an_absolute_expiry_and_bounded() {
        let w = TxnWrite::PutWithTtl { key: Key::from("k"), value: b"v".to_vec(), ttl_ms: 1_000 };
        assert!(validate_part(&[], std::slice::from_ref(&w)).is_ok());
        let stamped = w.stamped(5_000);
        assert!(matches!(&stamped, TxnWrite::PutExpiring { expires_at_ms: 6_000, .. }), "{stamped:?}");
        assert_eq!(stamped.target(), Key::from("k"));
        assert_eq!(put("k", 1).stamped(5_000), put("k", 1), "other writes are left alone");
        for ttl_ms in [0, crate::limits::TTL_MS_MAX + 1] {
            let w = TxnWrite::PutWithTtl { key: Key::from("k"), value: vec![], ttl_ms };
            assert!(validate_part(&[], &[w]).is_err(), "ttl {ttl_ms} accepted");
        }
        let at = TxnWrite::PutWithTtl { key: Key::from("k"), value: vec![], ttl_ms: crate::limits::TTL_MS_MAX };
        assert!(validate_part(&[], &[at]).is_ok());
        let zero = TxnWrite::PutExpiring { key: Key::from("k"), value: vec![], expires_at_ms: 0 };
        assert!(validate_part(&[], &[zero]).is_err());
    }

    #[test]
    fn limits_hold_at_their_boundaries() {
        assert!(validate_parts(&[]).is_err());
        let parts: Vec<TxnPart> = (0..TXN_RANGES_MAX as u64).map(|i| part(i, vec![put("k", 1)])).collect();
        validate_parts(&parts).unwrap();
        let more: Vec<TxnPart> = (0..=TXN_RANGES_MAX as u64).map(|i| part(i, vec![put("k", 1)])).collect();
        assert!(matches!(validate_parts(&more), Err(Error::TooLarge { .. })));

        let writes: Vec<TxnWrite> = (0..TXN_OPS_MAX).map(|i| put(&format!("k{i}"), 1)).collect();
        validate_parts(&[part(1, writes.clone())]).unwrap();
        let mut over = writes;
        over.push(put("one-more", 1));
        assert!(matches!(validate_parts(&[part(1, over)]), Err(Error::TooLarge { .. })));

        // Bytes per range: full values up to the entry budget.
        let full = TXN_PART_BYTES_MAX / VALUE_BYTES_MAX;
        let mut writes: Vec<TxnWrite> = (0..full).map(|i| put(&format!("{i}"), VALUE_BYTES_MAX - 1)).collect();
        let used: usize = writes.iter().map(TxnWrite::bytes).sum();
        writes.push(put("x", TXN_PART_BYTES_MAX - used - 1));
        validate_part(&[], &writes).unwrap();
        writes.push(put("y", 1));
        assert!(matches!(validate_part(&[], &writes), Err(Error::TooLarge { .. })));

        // Bytes in all: parts of the per-range maximum until the total budget is used.
        let per_part = TXN_PART_BYTES_MAX / VALUE_BYTES_MAX * VALUE_BYTES_MAX;
        let parts_full = TXN_BYTES_MAX / per_part;
        let mut parts: Vec<TxnPart> = (0..parts_full as u64)
            .map(|i| {
                part(i, (0..per_part / VALUE_BYTES_MAX).map(|j| put(&format!("{j}"), VALUE_BYTES_MAX - 1)).collect())
            })
            .collect();
        let used: usize = parts.iter().flat_map(|p| p.writes.iter()).map(TxnWrite::bytes).sum();
        parts.push(part(999, vec![put("r", TXN_BYTES_MAX - used - 1)]));
        validate_parts(&parts).unwrap();
        parts.push(part(1000, vec![put("s", 1)]));
        assert!(matches!(validate_parts(&parts), Err(Error::TooLarge { .. })));

        validate_hold_ms(TXN_HOLD_MS_MAX).unwrap();
        assert!(validate_hold_ms(TXN_HOLD_MS_MAX + 1).is_err());
        assert!(validate_hold_ms(0).is_err());
    }

    #[test]
    fn a_key_written_twice_or_a_range_twice_is_refused() {
        assert!(validate_part(&[], &[put("a", 1), TxnWrite::Delete { key: Key::from("a") }]).is_err());
        assert!(validate_parts(&[part(1, vec![put("a", 1)]), part(1, vec![put("b", 1)])]).is_err());
        assert!(validate_part(&[], &[put("", 1)]).is_err(), "empty key");
    }
}
