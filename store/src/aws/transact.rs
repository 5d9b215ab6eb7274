//! One `TransactWriteItems` call, shared by the log (`append_atomic`) and meta (`transact`).

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{CancellationReason, TransactWriteItem};

use super::error::unavailable;
use super::item::request_token;
use crate::{StoreError, StoreResult};

const OP: &str = "dynamodb TransactWriteItems";

/// The code DynamoDB gives a cancelled action whose condition did not hold.
pub(super) const CONDITION_FAILED: &str = "ConditionalCheckFailed";

/// Runs the transaction with a fresh client request token (so the SDK's retries are
/// idempotent). `Ok(Ok(()))`: committed. `Ok(Err(reasons))`: cancelled because at least one
/// condition failed; the reasons come in the order of `items`. A cancellation for any other
/// reason (a conflicting transaction, throttling) and every other failure is `Unavailable`.
pub(super) async fn transact_write(
    ddb: &Client,
    items: Vec<TransactWriteItem>,
) -> StoreResult<Result<(), Vec<CancellationReason>>> {
    let result =
        ddb.transact_write_items().set_transact_items(Some(items)).client_request_token(request_token()).send().await;
    let e = match result {
        Ok(_) => return Ok(Ok(())),
        Err(e) => e,
    };
    let Some(TransactWriteItemsError::TransactionCanceledException(canceled)) = e.as_service_error() else {
        return Err(unavailable(OP, &e));
    };
    let reasons = canceled.cancellation_reasons();
    if !reasons.iter().any(|r| r.code() == Some(CONDITION_FAILED)) {
        let codes: Vec<&str> = reasons.iter().filter_map(|r| r.code()).filter(|c| *c != "None").collect();
        return Err(StoreError::Unavailable(format!("{OP}: cancelled ({})", codes.join(", "))));
    }
    Ok(Err(reasons.to_vec()))
}
