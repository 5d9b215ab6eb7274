//! The task queue on a node (`ampstore_common::queue` has the layout): enqueue, lease
//! visible tasks, ack, nack and extend, each a read and a write conditional on the version
//! read, so concurrent consumers never both win one delivery.

use std::sync::Arc;

use ampstore_common::error::Error;
use ampstore_common::lists::PushId;
use ampstore_common::protocol::Reply;
use ampstore_common::queue::{self, Task, TaskRecord, TaskRef};
use ampstore_common::write_ids::WriteKey;
use ampstore_common::{Key, Seq, Version};

use crate::range::batch::LoggedOp;
use crate::range::core::{Condition, Write};
use crate::shared::NodeShared;

/// The version answered for a retry of an enqueue or ack that had already taken effect.
const ALREADY_DONE: Version = Version { seq: Seq(0), index: 0 };

/// Keys one dequeue looks at in its range (leased tasks are passed over).
const DEQUEUE_SCAN_KEYS: u32 = 1000;

use ampstore_common::clock::unix_now_ms as now_ms;

pub async fn enqueue(
    shared: &NodeShared,
    queue: &str,
    shard: u16,
    id: PushId,
    payload: Vec<u8>,
) -> Result<Reply, Error> {
    let key = queue::task_key(queue, shard, id);
    let range = shared.ranges.route_key(&key)?;
    let record = TaskRecord { payload, visible_at_ms: 0, lease: 0, deliveries: 0, acked_at_ms: 0 };
    let w = Write {
        op: LoggedOp::Put { key, value: record.encode() },
        condition: Condition::Version(None),
        write_id: Some(WriteKey::Push(id)),
    };
    match range.write(w).await {
        // Already there: a retried enqueue.
        Err(Error::Conflict { .. }) => Ok(Reply::Written { version: ALREADY_DONE }),
        other => other,
    }
}

pub async fn dequeue(
    shared: &Arc<NodeShared>,
    queue: &str,
    shard: u16,
    start: Key,
    max: u32,
    visibility_ms: u64,
) -> Result<Reply, Error> {
    let (shard_start, shard_end) = queue::shard_bounds(queue, shard);
    if start < shard_start || start >= shard_end {
        return Err(Error::invalid("dequeue start is outside the shard"));
    }
    let range = shared.ranges.route_key(&start)?;
    let page = range.scan(&start, Some(&shard_end), DEQUEUE_SCAN_KEYS as usize, false)?;
    let (items, resume) = (page.items, page.resume);
    let now = now_ms();
    let mut claims = tokio::task::JoinSet::new();
    for item in items {
        if claims.len() >= max as usize {
            break;
        }
        let Ok(rec) = TaskRecord::decode(&item.value) else {
            tracing::warn!(key = ?item.key, "a task record does not decode; skipping it");
            continue;
        };
        if rec.acked_at_ms > 0 {
            if now.saturating_sub(rec.acked_at_ms) > queue::TASK_TOMBSTONE_MS {
                // Old enough that no enqueue retry is coming: drop it (best effort).
                let w = Write {
                    op: LoggedOp::Delete { key: item.key.clone() },
                    condition: Condition::Version(Some(item.version)),
                    write_id: None,
                };
                let range = range.clone();
                tokio::spawn(async move { range.write(w).await });
            }
            continue;
        }
        if rec.visible_at_ms > now {
            continue;
        }
        let Some((task_shard, id)) = queue::parse_task_key(queue, &item.key) else { continue };
        let lease = rand::random::<u64>() | 1;
        let Some(deliveries) = rec.deliveries.checked_add(1) else {
            // Only a damaged record counts u32::MAX deliveries: skip it like one that does
            // not decode, rather than wrap the count or panic.
            tracing::warn!(key = ?item.key, "a task record counts u32::MAX deliveries; skipping it");
            continue;
        };
        let leased = TaskRecord { visible_at_ms: now + visibility_ms, lease, deliveries, ..rec };
        let w = Write {
            op: LoggedOp::Put { key: item.key.clone(), value: leased.encode() },
            condition: Condition::Version(Some(item.version)),
            write_id: None,
        };
        let range = range.clone();
        claims.spawn(async move {
            range.write(w).await.map(|_| Task {
                task: TaskRef { shard: task_shard, id, lease },
                payload: leased.payload,
                deliveries: leased.deliveries,
            })
        });
    }
    let mut tasks = Vec::new();
    while let Some(done) = claims.join_next().await {
        match done {
            Ok(Ok(task)) => tasks.push(task),
            // Another consumer leased it first.
            Ok(Err(Error::Conflict { .. })) => {}
            Ok(Err(e)) if tasks.is_empty() => return Err(e),
            Ok(Err(e)) => tracing::info!(error = %e, "leasing a task failed; it stays visible"),
            Err(e) => tracing::error!(error = %e, "a lease task failed"),
        }
    }
    tasks.sort_by_key(|t| t.task.id);
    let resume = if tasks.len() < max as usize { resume } else { None };
    Ok(Reply::Tasks { tasks, resume })
}

/// What a consumer does with a task it holds.
pub enum Settle {
    Ack,
    Nack,
    Extend { visibility_ms: u64 },
}

pub async fn settle(shared: &NodeShared, queue: &str, task: TaskRef, how: Settle) -> Result<Reply, Error> {
    let key = queue::task_key(queue, task.shard, task.id);
    let range = shared.ranges.route_key(&key)?;
    let current = range.get(&key)?;
    let Some(current) = current else {
        return match how {
            // Acked already (a retried ack): done.
            Settle::Ack => Ok(Reply::Written { version: ALREADY_DONE }),
            _ => Err(Error::conflict_on(&key, "the task is gone (acked)")),
        };
    };
    let rec = TaskRecord::decode(&current.value)?;
    if rec.acked_at_ms > 0 {
        return match how {
            Settle::Ack => Ok(Reply::Written { version: ALREADY_DONE }),
            _ => Err(Error::conflict_on(&key, "the task is gone (acked)")),
        };
    }
    if rec.lease != task.lease || task.lease == 0 {
        return Err(Error::conflict_on(&key, "the task's lease expired and it was delivered again"));
    }
    let op = match how {
        Settle::Ack => {
            let tombstone = TaskRecord {
                payload: Vec::new(),
                visible_at_ms: u64::MAX,
                lease: 0,
                deliveries: rec.deliveries,
                acked_at_ms: now_ms().max(1),
            };
            LoggedOp::Put { key, value: tombstone.encode() }
        }
        Settle::Nack => LoggedOp::Put { key, value: TaskRecord { visible_at_ms: 0, lease: 0, ..rec }.encode() },
        Settle::Extend { visibility_ms } => {
            LoggedOp::Put { key, value: TaskRecord { visible_at_ms: now_ms() + visibility_ms, ..rec }.encode() }
        }
    };
    let w = Write { op, condition: Condition::Version(Some(current.version)), write_id: None };
    match range.write(w).await? {
        Reply::Deleted { version, .. } | Reply::Written { version } => Ok(Reply::Written { version }),
        other => Err(Error::internal(format!("settling a task answered {other:?}"))),
    }
}
