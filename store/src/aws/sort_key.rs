//! The stored form of meta sort keys.
//!
//! DynamoDB rejects an empty binary key attribute and a sort key over 1024 bytes, but a meta
//! sort key is 0 to `META_SORT_KEY_BYTES_MAX` (1024) bytes, and `b""` (the start of the key
//! space) is a common one. So a key made only of zero bytes, `b""` included, is stored with
//! one more zero byte, and every other key as it is. Stored keys are never empty and keep
//! the order of the keys (DynamoDB orders binary keys bytewise): a zero-only key sorts
//! before every key that has a nonzero byte, with or without the extra byte.
//!
//! One key cannot be stored: 1024 zero bytes. Some key has to give, because there is one
//! more key of 0 to 1024 bytes than there are keys of 1 to 1024 bytes; with this encoding
//! it is the least likely one, rather than, say, every 1024-byte key.

use aws_sdk_dynamodb::types::AttributeValue;

use super::item::bin;
use crate::{StoreError, StoreResult};

/// DynamoDB's limit on a sort key.
const STORED_BYTES_MAX: usize = 1024;

fn zeros_only(sk: &[u8]) -> bool {
    sk.iter().all(|&b| b == 0)
}

fn stored(sk: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(sk.len() + 1);
    if zeros_only(sk) {
        out.push(0);
    }
    out.extend_from_slice(sk);
    out
}

pub(super) fn encode(sk: &[u8]) -> StoreResult<AttributeValue> {
    let out = stored(sk);
    if out.len() > STORED_BYTES_MAX {
        return Err(StoreError::too_large(
            "meta sort key of zero bytes only (the AWS backend cannot store 1024 of them)",
            sk.len(),
            STORED_BYTES_MAX - 1,
        ));
    }
    Ok(bin(out))
}

pub(super) fn decode(mut stored: Vec<u8>) -> StoreResult<Vec<u8>> {
    if stored.is_empty() {
        return Err(StoreError::Corrupt("empty meta sort key".into()));
    }
    if zeros_only(&stored) {
        stored.pop();
    }
    Ok(stored)
}

/// The key condition (on `p = :p` and `:from`) of a query for sort keys >= `from`.
pub(super) fn at_or_after(from: &[u8]) -> (&'static str, AttributeValue) {
    let from_stored = stored(from);
    if from_stored.len() > STORED_BYTES_MAX {
        // `from` is the one key without a stored form. No zero-only key is >= it, and every
        // other key is > 1024 zero bytes, which is the stored form of 1023 zero bytes.
        return ("p = :p AND k > :from", bin(from));
    }
    ("p = :p AND k >= :from", bin(from_stored))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(v: AttributeValue) -> Vec<u8> {
        match v {
            AttributeValue::B(b) => b.into_inner(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn keeps_order_and_round_trips() {
        // Every key of 0 to 4 bytes over {0, 1, 255}.
        let mut keys: Vec<Vec<u8>> = vec![Vec::new()];
        let mut last = keys.clone();
        for _ in 0..4 {
            last = last.iter().flat_map(|k| [0u8, 1, 255].map(|b| [k.as_slice(), &[b]].concat())).collect();
            keys.extend(last.iter().cloned());
        }
        let stored: Vec<Vec<u8>> = keys.iter().map(|k| raw(encode(k).unwrap())).collect();
        for (i, a) in keys.iter().enumerate() {
            assert!(!stored[i].is_empty());
            assert_eq!(&decode(stored[i].clone()).unwrap(), a);
            for (j, b) in keys.iter().enumerate() {
                assert_eq!(a.cmp(b), stored[i].cmp(&stored[j]), "{a:?} {b:?}");
            }
        }
    }

    #[test]
    fn limits() {
        assert_eq!(raw(encode(b"").unwrap()), vec![0]);
        assert_eq!(raw(encode(&[7; 1024]).unwrap()).len(), 1024);
        assert_eq!(raw(encode(&[0; 1023]).unwrap()).len(), 1024);
        assert!(matches!(encode(&[0; 1024]), Err(StoreError::TooLarge { .. })));
        assert_eq!(at_or_after(&[0; 1024]).0, "p = :p AND k > :from");
        assert!(decode(Vec::new()).is_err());
    }
}
