//! The meta store in DynamoDB table `{prefix}-meta`.
//!
//! One item per meta item: partition key `p` (S), sort key `k` (B), attributes `ver` (N, the
//! version) and `val` (B, the value). A put is `SET val = :val ADD ver :one`: `ADD` on a new
//! item starts from 0, so versions are 1 on creation and bumped by every write, like the
//! embedded backend. Conditions are DynamoDB condition expressions, so they are checked and
//! applied atomically by DynamoDB itself.
//!
//! Sort keys are stored in the form [`sort_key`] describes (never empty, order kept).

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, ConditionCheck, Delete, ReturnValue, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update,
};

use super::error::{build_err, unavailable};
use super::item::{Item, bin, num, take_bytes, take_u64};
use super::sort_key;
use super::transact::{CONDITION_FAILED, transact_write};
use crate::{Expect, MetaItem, MetaOp, MetaStore, StoreError, StoreResult, validate};
use ampstore_common::limits::META_QUERY_ITEMS_MAX;

/// The update of every put.
const PUT_UPDATE: &str = "SET val = :val ADD ver :one";
/// `ConditionCheck` needs an expression; this one holds for every item, present or not.
const ALWAYS: &str = "attribute_exists(p) OR attribute_not_exists(p)";
const ALL_OLD: ReturnValuesOnConditionCheckFailure = ReturnValuesOnConditionCheckFailure::AllOld;

pub(super) struct DynamoMeta {
    ddb: Client,
    table: String,
}

fn key(pk: &str, sk: &[u8]) -> StoreResult<Item> {
    Ok(Item::from([("p".into(), AttributeValue::S(pk.to_string())), ("k".into(), sort_key::encode(sk)?)]))
}

fn decode_item(item: &mut Item) -> StoreResult<MetaItem> {
    Ok(MetaItem { version: take_u64(item, "ver")?, value: take_bytes(item, "val")? })
}

/// One meta op in DynamoDB terms: its key, its condition and the values both refer to.
struct Request {
    key: Item,
    condition: Option<&'static str>,
    values: Item,
}

impl Request {
    fn new(pk: &str, sk: &[u8], expect: &Expect) -> StoreResult<Request> {
        let mut values = Item::new();
        let condition = match expect {
            Expect::Any => None,
            Expect::Absent => Some("attribute_not_exists(p)"),
            Expect::Version(v) => {
                values.insert(":expect".into(), num(*v));
                Some("ver = :expect")
            }
            Expect::Value(v) => {
                values.insert(":expect".into(), bin(v.clone()));
                Some("val = :expect")
            }
        };
        Ok(Request { key: key(pk, sk)?, condition, values })
    }

    fn put(pk: &str, sk: &[u8], value: &[u8], expect: &Expect) -> StoreResult<Request> {
        let mut r = Request::new(pk, sk, expect)?;
        r.values.insert(":val".into(), bin(value));
        r.values.insert(":one".into(), num(1));
        Ok(r)
    }

    /// The key, the condition expression and the expression values (`None` when there are
    /// none: DynamoDB rejects an empty `ExpressionAttributeValues`).
    fn into_parts(self) -> (Item, Option<String>, Option<Item>) {
        let values = (!self.values.is_empty()).then_some(self.values);
        (self.key, self.condition.map(str::to_string), values)
    }
}

/// One op of a transaction as a `TransactWriteItems` action.
fn transact_item(table: &str, op: &MetaOp) -> StoreResult<TransactWriteItem> {
    let action = TransactWriteItem::builder();
    let action = match op {
        MetaOp::Put { pk, sk, value, expect } => {
            let (key, condition, values) = Request::put(pk, sk, value, expect)?.into_parts();
            let update = Update::builder()
                .table_name(table)
                .set_key(Some(key))
                .update_expression(PUT_UPDATE)
                .set_condition_expression(condition)
                .set_expression_attribute_values(values)
                .return_values_on_condition_check_failure(ALL_OLD)
                .build()
                .map_err(build_err)?;
            action.update(update)
        }
        MetaOp::Delete { pk, sk, expect } => {
            let (key, condition, values) = Request::new(pk, sk, expect)?.into_parts();
            let delete = Delete::builder()
                .table_name(table)
                .set_key(Some(key))
                .set_condition_expression(condition)
                .set_expression_attribute_values(values)
                .return_values_on_condition_check_failure(ALL_OLD)
                .build()
                .map_err(build_err)?;
            action.delete(delete)
        }
        MetaOp::Check { pk, sk, expect } => {
            let (key, condition, values) = Request::new(pk, sk, expect)?.into_parts();
            let check = ConditionCheck::builder()
                .table_name(table)
                .set_key(Some(key))
                .condition_expression(condition.as_deref().unwrap_or(ALWAYS))
                .set_expression_attribute_values(values)
                .return_values_on_condition_check_failure(ALL_OLD)
                .build()
                .map_err(build_err)?;
            action.condition_check(check)
        }
    };
    Ok(action.build())
}

/// Explains a failed condition like the embedded backend does, from the item DynamoDB
/// returned with the failure (`ALL_OLD`; none when the item does not exist).
fn condition_failed(op_index: Option<usize>, pk: &str, sk: &[u8], expect: &Expect, old: Option<&Item>) -> StoreError {
    let found = match old.map(|item| take_u64(&mut item.clone(), "ver")) {
        Some(Ok(v)) => format!("found version {v}"),
        Some(Err(_)) => "found an item without a readable version".to_string(),
        None => "found no item".to_string(),
    };
    let why = match expect {
        Expect::Any => format!("condition failed, {found}"),
        Expect::Absent => format!("expected no item, {found}"),
        Expect::Version(v) => format!("expected version {v}, {found}"),
        Expect::Value(_) => format!("expected value differs, {found}"),
    };
    StoreError::ConditionFailed { op_index, detail: format!("{pk}/{}: {why}", String::from_utf8_lossy(sk)) }
}

impl DynamoMeta {
    pub fn new(ddb: Client, table: String) -> DynamoMeta {
        DynamoMeta { ddb, table }
    }
}

#[async_trait]
impl MetaStore for DynamoMeta {
    async fn get(&self, pk: &str, sk: &[u8]) -> StoreResult<Option<MetaItem>> {
        validate::meta_key(pk, sk)?;
        let out = self
            .ddb
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(pk, sk)?))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| unavailable("dynamodb GetItem", &e))?;
        out.item.map(|mut item| decode_item(&mut item)).transpose()
    }

    async fn put(&self, pk: &str, sk: &[u8], value: &[u8], expect: Expect) -> StoreResult<u64> {
        validate::meta_key(pk, sk)?;
        validate::expect(&expect)?;
        validate::meta_value(value)?;
        let (key, condition, values) = Request::put(pk, sk, value, &expect)?.into_parts();
        let result = self
            .ddb
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .update_expression(PUT_UPDATE)
            .set_condition_expression(condition)
            .set_expression_attribute_values(values)
            .return_values(ReturnValue::UpdatedNew)
            .return_values_on_condition_check_failure(ALL_OLD)
            .send()
            .await;
        match result {
            Ok(out) => take_u64(&mut out.attributes.unwrap_or_default(), "ver"),
            Err(e) => match e.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(failed)) => {
                    Err(condition_failed(None, pk, sk, &expect, failed.item()))
                }
                _ => Err(unavailable("dynamodb UpdateItem", &e)),
            },
        }
    }

    async fn delete(&self, pk: &str, sk: &[u8], expect: Expect) -> StoreResult<()> {
        validate::meta_key(pk, sk)?;
        validate::expect(&expect)?;
        let (key, condition, values) = Request::new(pk, sk, &expect)?.into_parts();
        let result = self
            .ddb
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .set_condition_expression(condition)
            .set_expression_attribute_values(values)
            .return_values_on_condition_check_failure(ALL_OLD)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) => match e.as_service_error() {
                Some(DeleteItemError::ConditionalCheckFailedException(failed)) => {
                    Err(condition_failed(None, pk, sk, &expect, failed.item()))
                }
                _ => Err(unavailable("dynamodb DeleteItem", &e)),
            },
        }
    }

    async fn transact(&self, ops: &[MetaOp]) -> StoreResult<()> {
        validate::meta_transact(ops)?;
        let items = ops.iter().map(|op| transact_item(&self.table, op)).collect::<StoreResult<Vec<_>>>()?;
        let reasons = match transact_write(&self.ddb, items).await? {
            Ok(()) => return Ok(()),
            Err(reasons) => reasons,
        };
        // Reasons come in the order of the ops; report the first failed condition.
        let (i, (reason, op)) = reasons
            .iter()
            .zip(ops)
            .enumerate()
            .find(|(_, (reason, _))| reason.code() == Some(CONDITION_FAILED))
            .ok_or_else(|| StoreError::Unavailable("dynamodb TransactWriteItems: no failed condition named".into()))?;
        let (pk, sk) = op.key();
        Err(condition_failed(Some(i), pk, sk, op.expect(), reason.item()))
    }

    async fn query(&self, pk: &str, from: &[u8], limit: usize) -> StoreResult<Vec<(Vec<u8>, MetaItem)>> {
        validate::meta_key(pk, from)?;
        let limit = limit.clamp(1, META_QUERY_ITEMS_MAX);
        let (condition, from) = sort_key::at_or_after(from);
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let remaining = i32::try_from(limit - out.len()).unwrap_or(i32::MAX);
            let page = self
                .ddb
                .query()
                .table_name(&self.table)
                .key_condition_expression(condition)
                .expression_attribute_values(":p", AttributeValue::S(pk.to_string()))
                .expression_attribute_values(":from", from.clone())
                .consistent_read(true)
                .limit(remaining)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| unavailable("dynamodb Query", &e))?;
            for mut item in page.items.unwrap_or_default() {
                let sk = sort_key::decode(take_bytes(&mut item, "k")?)?;
                out.push((sk, decode_item(&mut item)?));
                if out.len() >= limit {
                    return Ok(out);
                }
            }
            match page.last_evaluated_key {
                Some(last) => start = Some(last),
                None => return Ok(out),
            }
        }
    }
}
