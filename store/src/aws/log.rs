//! The commit log in DynamoDB table `{prefix}-log`.
//!
//! One item per entry: partition key `r` (N, range id), sort key `s` (N, seq), attributes
//! `k` (N, kind), `w` (S, writer node id), `e` (N, epoch), `p` (B, payload). Every read is
//! strongly consistent, so a reader sees every acknowledged append.

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, DeleteRequest, Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem, WriteRequest,
};
use bytes::Bytes;

use super::error::{backoff, build_err, unavailable};
use super::item::{Item, bin, num, take_bytes, take_string, take_u64};
use super::transact::{CONDITION_FAILED, transact_write};
use crate::{AppendSlot, CommitLog, EntryKind, LogEntry, StoreError, StoreResult, validate};
use ampstore_common::ids::{Epoch, NodeId, RangeId, Seq};
use ampstore_common::limits::{LOG_READ_BYTES_MAX, LOG_READ_ENTRIES_MAX};

/// The condition of every append: the slot holds no entry yet.
const SLOT_EMPTY: &str = "attribute_not_exists(s)";
/// Most delete requests in one `BatchWriteItem` (a DynamoDB limit).
const BATCH_DELETE_MAX: usize = 25;
/// Attempts at one batch of deletes while DynamoDB leaves some unprocessed (throttling).
const BATCH_ATTEMPTS: u32 = 8;

pub(super) struct DynamoLog {
    ddb: Client,
    table: String,
}

fn key(range: RangeId, seq: Seq) -> Item {
    Item::from([("r".into(), num(range.0)), ("s".into(), num(seq.0))])
}

fn encode(range: RangeId, seq: Seq, entry: &LogEntry) -> Item {
    let mut item = key(range, seq);
    item.insert("k".into(), num(u64::from(entry.kind.as_u8())));
    item.insert("w".into(), AttributeValue::S(entry.writer.as_str().to_string()));
    item.insert("e".into(), num(entry.epoch.0));
    item.insert("p".into(), bin(entry.payload.to_vec()));
    item
}

fn decode(mut item: Item) -> StoreResult<(Seq, LogEntry)> {
    let seq = take_u64(&mut item, "s")?;
    let kind = take_u64(&mut item, "k")?;
    let kind = u8::try_from(kind)
        .ok()
        .and_then(EntryKind::from_u8)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown log entry kind {kind}")))?;
    let writer =
        NodeId::new(take_string(&mut item, "w")?).map_err(|e| StoreError::Corrupt(format!("log entry writer: {e}")))?;
    let epoch = take_u64(&mut item, "e")?;
    let payload = take_bytes(&mut item, "p")?;
    Ok((Seq(seq), LogEntry { kind, writer, epoch: Epoch(epoch), payload: Bytes::from(payload) }))
}

/// Whether a slot that failed our condition holds exactly `entry`: then an earlier attempt
/// of this same write landed (the SDK retried after a lost response) and the append
/// succeeded. An unreadable item is someone else's.
fn holds(stored: Option<&Item>, entry: &LogEntry) -> bool {
    stored.is_some_and(|item| decode(item.clone()).is_ok_and(|(_, e)| e == *entry))
}

impl DynamoLog {
    pub fn new(ddb: Client, table: String) -> DynamoLog {
        DynamoLog { ddb, table }
    }

    async fn get_item(&self, range: RangeId, seq: Seq) -> StoreResult<Option<Item>> {
        let out = self
            .ddb
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(range, seq)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| unavailable("dynamodb GetItem", &e))?;
        Ok(out.item)
    }

    /// Deletes `keys` (at most [`BATCH_DELETE_MAX`]), resending what DynamoDB leaves
    /// unprocessed with a growing backoff.
    async fn delete_batch(&self, keys: Vec<Item>) -> StoreResult<()> {
        let mut pending = keys
            .into_iter()
            .map(|k| {
                DeleteRequest::builder()
                    .set_key(Some(k))
                    .build()
                    .map(|d| WriteRequest::builder().delete_request(d).build())
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(build_err)?;
        let mut attempt = 1;
        loop {
            let out = self
                .ddb
                .batch_write_item()
                .request_items(&self.table, pending)
                .send()
                .await
                .map_err(|e| unavailable("dynamodb BatchWriteItem", &e))?;
            pending = out.unprocessed_items.and_then(|mut m| m.remove(&self.table)).unwrap_or_default();
            if pending.is_empty() {
                return Ok(());
            }
            if attempt == BATCH_ATTEMPTS {
                return Err(StoreError::Unavailable(format!(
                    "dynamodb BatchWriteItem: {} deletes still unprocessed after {attempt} attempts",
                    pending.len()
                )));
            }
            tokio::time::sleep(backoff(attempt)).await;
            attempt += 1;
        }
    }
}

#[async_trait]
impl CommitLog for DynamoLog {
    async fn append(&self, range: RangeId, seq: Seq, entry: &LogEntry) -> StoreResult<()> {
        validate::slot(range, seq, entry)?;
        let result = self
            .ddb
            .put_item()
            .table_name(&self.table)
            .set_item(Some(encode(range, seq, entry)))
            .condition_expression(SLOT_EMPTY)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        let e = match result {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        let Some(PutItemError::ConditionalCheckFailedException(failed)) = e.as_service_error() else {
            return Err(unavailable("dynamodb PutItem", &e));
        };
        // ALL_OLD hands back the item that failed the condition; read it if a server did not.
        let stored = match failed.item() {
            Some(item) => Some(item.clone()),
            None => self.get_item(range, seq).await?,
        };
        if holds(stored.as_ref(), entry) {
            return Ok(());
        }
        Err(StoreError::SlotTaken { range, seq })
    }

    async fn append_atomic(&self, slots: &[AppendSlot]) -> StoreResult<()> {
        validate::append_atomic(slots)?;
        let items = slots
            .iter()
            .map(|s| {
                Put::builder()
                    .table_name(&self.table)
                    .set_item(Some(encode(s.range, s.seq, &s.entry)))
                    .condition_expression(SLOT_EMPTY)
                    .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
                    .build()
                    .map(|p| TransactWriteItem::builder().put(p).build())
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(build_err)?;
        let reasons = match transact_write(&self.ddb, items).await? {
            Ok(()) => return Ok(()),
            Err(reasons) => reasons,
        };
        // Reasons come in the order of the actions: index i is slots[i].
        let taken: Vec<(&AppendSlot, Option<&Item>)> = reasons
            .iter()
            .zip(slots)
            .filter(|(reason, _)| reason.code() == Some(CONDITION_FAILED))
            .map(|(reason, slot)| (slot, reason.item()))
            .collect();
        if taken.len() == slots.len() && taken.iter().all(|(s, item)| holds(*item, &s.entry)) {
            return Ok(());
        }
        Err(StoreError::SlotsTaken { slots: taken.iter().map(|(s, _)| (s.range, s.seq)).collect() })
    }

    async fn head(&self, range: RangeId) -> StoreResult<Option<Seq>> {
        validate::range_id(range)?;
        let out = self
            .ddb
            .query()
            .table_name(&self.table)
            .key_condition_expression("r = :r")
            .expression_attribute_values(":r", num(range.0))
            .scan_index_forward(false)
            .limit(1)
            .consistent_read(true)
            .projection_expression("s")
            .send()
            .await
            .map_err(|e| unavailable("dynamodb Query", &e))?;
        match out.items.unwrap_or_default().into_iter().next() {
            Some(mut item) => Ok(Some(Seq(take_u64(&mut item, "s")?))),
            None => Ok(None),
        }
    }

    async fn read(&self, range: RangeId, from: Seq, limit: usize) -> StoreResult<Vec<(Seq, LogEntry)>> {
        validate::range_id(range)?;
        validate::seq(from)?;
        let limit = limit.clamp(1, LOG_READ_ENTRIES_MAX);
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut start = None;
        loop {
            // A page is also cut at 1 MB by DynamoDB; follow LastEvaluatedKey for the rest.
            let remaining = i32::try_from(limit - out.len()).unwrap_or(i32::MAX);
            let page = self
                .ddb
                .query()
                .table_name(&self.table)
                .key_condition_expression("r = :r AND s >= :from")
                .expression_attribute_values(":r", num(range.0))
                .expression_attribute_values(":from", num(from.0))
                .consistent_read(true)
                .limit(remaining)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| unavailable("dynamodb Query", &e))?;
            for item in page.items.unwrap_or_default() {
                let (seq, entry) = decode(item)?;
                bytes += entry.payload.len();
                out.push((seq, entry));
                if out.len() >= limit || bytes >= LOG_READ_BYTES_MAX {
                    return Ok(out);
                }
            }
            match page.last_evaluated_key {
                Some(last) => start = Some(last),
                None => return Ok(out),
            }
        }
    }

    async fn truncate(&self, range: RangeId, upto: Seq) -> StoreResult<()> {
        validate::range_id(range)?;
        validate::seq(upto)?;
        // The head only grows, so a check that passes now still holds during the deletes.
        let head = self.head(range).await?.map_or(0, |s| s.0);
        if upto.0 > head.max(1) {
            return Err(StoreError::Invalid(format!(
                "cannot truncate {range} up to {upto}: the head is {head} and must stay"
            )));
        }
        if upto.0 <= Seq::FIRST.0 {
            return Ok(());
        }
        let mut start = None;
        loop {
            let page = self
                .ddb
                .query()
                .table_name(&self.table)
                .key_condition_expression("r = :r AND s < :upto")
                .expression_attribute_values(":r", num(range.0))
                .expression_attribute_values(":upto", num(upto.0))
                .consistent_read(true)
                .projection_expression("s")
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| unavailable("dynamodb Query", &e))?;
            // Rebuild each key from its seq rather than trusting the returned attributes.
            let keys = page
                .items
                .unwrap_or_default()
                .into_iter()
                .map(|mut item| Ok(key(range, Seq(take_u64(&mut item, "s")?))))
                .collect::<StoreResult<Vec<_>>>()?;
            for chunk in keys.chunks(BATCH_DELETE_MAX) {
                self.delete_batch(chunk.to_vec()).await?;
            }
            // Resuming after a deleted key is fine: the start key need not exist.
            match page.last_evaluated_key {
                Some(last) => start = Some(last),
                None => return Ok(()),
            }
        }
    }
}
