//! DynamoDB attribute values: building them, and reading them back defensively.
//!
//! Items come from the network: a missing or ill-typed attribute is `Corrupt`, never a panic.

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use std::collections::HashMap;

use crate::{StoreError, StoreResult};

pub(super) type Item = HashMap<String, AttributeValue>;

pub(super) fn num(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub(super) fn bin(v: impl Into<Vec<u8>>) -> AttributeValue {
    AttributeValue::B(Blob::new(v))
}

fn take(item: &mut Item, name: &str) -> StoreResult<AttributeValue> {
    item.remove(name).ok_or_else(|| StoreError::Corrupt(format!("dynamodb item has no attribute {name:?}")))
}

fn ill_typed(name: &str, want: &str) -> StoreError {
    StoreError::Corrupt(format!("dynamodb attribute {name:?} is not {want}"))
}

/// Removes a number attribute that must hold a u64.
pub(super) fn take_u64(item: &mut Item, name: &str) -> StoreResult<u64> {
    match take(item, name)? {
        AttributeValue::N(n) => n.parse().map_err(|_| ill_typed(name, "an unsigned 64-bit number")),
        _ => Err(ill_typed(name, "a number")),
    }
}

pub(super) fn take_string(item: &mut Item, name: &str) -> StoreResult<String> {
    match take(item, name)? {
        AttributeValue::S(s) => Ok(s),
        _ => Err(ill_typed(name, "a string")),
    }
}

pub(super) fn take_bytes(item: &mut Item, name: &str) -> StoreResult<Vec<u8>> {
    match take(item, name)? {
        AttributeValue::B(b) => Ok(b.into_inner()),
        _ => Err(ill_typed(name, "binary")),
    }
}

/// A fresh `ClientRequestToken` for `TransactWriteItems`: the SDK resends the same token when
/// it retries, and DynamoDB applies a token at most once (for 10 minutes), so a retry after
/// a lost response does not run the transaction twice. 32 hex digits (the limit is 36).
pub(super) fn request_token() -> String {
    format!("{:032x}", rand::random::<u128>())
}
