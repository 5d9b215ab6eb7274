//! The node's RPC service: one request, validated, routed by audience to the ranges, the
//! transaction coordinator, the queue or the reshaper, and answered. No logic of its own.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use ampstore_common::Key;
use ampstore_common::error::Error;
use ampstore_common::limits::FRAME_BYTES_MAX;
use ampstore_common::lists::PushId;
use ampstore_common::protocol::{Op, PROTOCOL_VERSION, Reply, Role, ServerInfo};
use ampstore_common::write_ids::WriteKey;
use ampstore_server::completions::ConnReply;
use ampstore_server::metrics::Metrics;
use ampstore_server::rpc::{Now, Service};

use crate::range::batch::LoggedOp;
use crate::range::core::{Condition, Write};
use crate::range::handle::RangeHandle;
use crate::range::host::Responder;
use crate::shared::NodeShared;

impl Service for NodeShared {
    fn server_info(&self) -> ServerInfo {
        ServerInfo { protocol_version: PROTOCOL_VERSION, server_id: self.node_id.clone(), role: Role::Node }
    }

    fn handle(self: &Arc<Self>, op: Op) -> impl Future<Output = Result<Reply, Error>> + Send {
        self.ops_total.fetch_add(1, Ordering::Relaxed);
        async move {
            if is_range_write(&op) {
                op.validate()?;
                return range_write(self, op).await;
            }
            // Boxed: the rare arms (loads, merges, transactions) make `handle`'s state
            // large, and a write polled in its connection's task should not carry it.
            Box::pin(handle(self, op)).await
        }
    }

    fn runs_in_connection(&self, op: &Op) -> bool {
        is_range_write(op)
    }

    fn starts(&self, op: &Op) -> bool {
        matches!(
            op,
            Op::Put { .. }
                | Op::PutIfVersion { .. }
                | Op::Delete { .. }
                | Op::DeleteRange { .. }
                | Op::PutWithTtl { .. }
                | Op::Expire { .. }
                | Op::Persist { .. }
                | Op::Incr { .. }
        )
    }

    fn start(self: &Arc<Self>, op: Op, reply: ConnReply) {
        self.ops_total.fetch_add(1, Ordering::Relaxed);
        let reply = Responder::Conn(reply);
        match op.validate().and_then(|()| hand_on(self, op)) {
            Ok((range, write)) => range.write_to(write, reply),
            Err(e) => reply.send(Err(e)),
        }
    }

    fn try_now(&self, op: Op) -> Now {
        match op {
            Op::Get { .. } | Op::GetMany { .. } | Op::Scan { .. } | Op::Ttl { .. } => {
                self.ops_total.fetch_add(1, Ordering::Relaxed);
                Now::Answered(op.validate().and_then(|()| read(self, op)))
            }
            other => Now::Later(other),
        }
    }

    fn cluster_token(&self) -> Option<&str> {
        self.cluster_token.as_deref()
    }

    fn admin_token(&self) -> Option<&str> {
        self.admin_token.as_deref()
    }

    fn metrics(&self) -> Option<&Metrics> {
        Some(&self.metrics)
    }
}

/// A write of one key or span that is handed to its range and answered when the range
/// has logged it: all the waiting is for one reply, so its connection's task polls it
/// (`Service::runs_in_connection`).
fn is_range_write(op: &Op) -> bool {
    matches!(
        op,
        Op::Put { .. }
            | Op::PutIfVersion { .. }
            | Op::Delete { .. }
            | Op::DeleteRange { .. }
            | Op::Push { .. }
            | Op::PutWithTtl { .. }
            | Op::Expire { .. }
            | Op::Persist { .. }
            | Op::Incr { .. }
    )
}

/// A validated single-key (or span) write: the range it goes to, and the write. What
/// `Service::start` hands on, and what `range_write` awaits.
fn hand_on(shared: &NodeShared, op: Op) -> Result<(RangeHandle, Write), Error> {
    // Routed by the key in place (no copy of it), then the op moves into the write.
    let range = match &op {
        Op::Put { key, .. }
        | Op::PutIfVersion { key, .. }
        | Op::Delete { key, .. }
        | Op::PutWithTtl { key, .. }
        | Op::Expire { key, .. }
        | Op::Persist { key, .. }
        | Op::Incr { key, .. } => shared.ranges.route_key(key)?,
        Op::DeleteRange { start, .. } => shared.ranges.route_key(start)?,
        other => return Err(Error::internal(format!("{} is not a single-range write", other.name()))),
    };
    let (op, condition, write_id) = match op {
        Op::Put { key, value, write_id } => (LoggedOp::Put { key, value }, Condition::None, write_id),
        Op::PutIfVersion { key, value, expected, write_id } => {
            (LoggedOp::Put { key, value }, Condition::Version(expected), write_id)
        }
        Op::Delete { key, write_id } => (LoggedOp::Delete { key }, Condition::None, write_id),
        Op::DeleteRange { start, end, write_id } => (LoggedOp::DeleteRange { start, end }, Condition::None, write_id),
        // The expiry and the count are decided by the range when it logs the write.
        Op::PutWithTtl { key, value, ttl_ms, write_id } => {
            (LoggedOp::PutExpiring { key, value, expires_at_ms: 0 }, Condition::ExpiresIn(ttl_ms), write_id)
        }
        Op::Expire { key, ttl_ms, when, write_id } => {
            (LoggedOp::SetExpiry { key, expires_at_ms: None }, Condition::Expire { ttl_ms, when }, write_id)
        }
        Op::Persist { key, write_id } => {
            (LoggedOp::SetExpiry { key, expires_at_ms: None }, Condition::Persist, write_id)
        }
        Op::Incr { key, by, write_id } => {
            (LoggedOp::Counter { key, value: 0, expires_at_ms: None }, Condition::Add(by), write_id)
        }
        other => return Err(Error::internal(format!("{} is not a single-range write", other.name()))),
    };
    Ok((range, Write { op, condition, write_id: write_id.map(WriteKey::Write) }))
}

/// A validated write of `is_range_write`, handed to its range.
async fn range_write(shared: &NodeShared, op: Op) -> Result<Reply, Error> {
    match op {
        Op::Push { key, element, push_id } => push(shared, key, element, push_id).await,
        op => {
            let (range, write) = hand_on(shared, op)?;
            range.write(write).await
        }
    }
}

pub async fn handle(shared: &Arc<NodeShared>, op: Op) -> Result<Reply, Error> {
    op.validate()?;
    match op {
        Op::Ping => Ok(Reply::Pong),
        op @ (Op::Get { .. } | Op::GetMany { .. } | Op::Scan { .. } | Op::Ttl { .. }) => read(shared, op),
        op @ (Op::Put { .. }
        | Op::PutIfVersion { .. }
        | Op::Delete { .. }
        | Op::DeleteRange { .. }
        | Op::Push { .. }
        | Op::PutWithTtl { .. }
        | Op::Expire { .. }
        | Op::Persist { .. }
        | Op::Incr { .. }) => range_write(shared, op).await,
        Op::Batch { ops } => {
            // All at once, so the writes to one range share its next log entries.
            let mut tasks = tokio::task::JoinSet::new();
            let n = ops.len();
            for (i, op) in ops.into_iter().enumerate() {
                let shared = shared.clone();
                tasks.spawn(async move { (i, batched(&shared, op).await) });
            }
            let mut results: Vec<Result<Reply, Error>> = (0..n).map(|_| Err(Error::internal("not run"))).collect();
            while let Some(done) = tasks.join_next().await {
                if let Ok((i, r)) = done {
                    results[i] = r;
                }
            }
            Ok(Reply::Batch { results })
        }
        Op::Enqueue { queue, shard, task_id, payload } => {
            crate::queue::enqueue(shared, &queue, shard, task_id, payload).await
        }
        Op::Dequeue { queue, shard, start, max, visibility_ms } => {
            crate::queue::dequeue(shared, &queue, shard, start, max, visibility_ms).await
        }
        Op::TaskAck { queue, task } => crate::queue::settle(shared, &queue, task, crate::queue::Settle::Ack).await,
        Op::TaskNack { queue, task } => crate::queue::settle(shared, &queue, task, crate::queue::Settle::Nack).await,
        Op::TaskExtend { queue, task, visibility_ms } => {
            crate::queue::settle(shared, &queue, task, crate::queue::Settle::Extend { visibility_ms }).await
        }
        Op::Assign { range_id, start, claim } => shared.ranges.assign(range_id, start, claim).await,
        Op::Release { range_id } => shared.ranges.serving(range_id)?.release().await,
        Op::Split { range_id } => shared.ranges.serving(range_id)?.split_now().await.map(|()| Reply::Pong),
        Op::Snapshot { range_id } => shared.ranges.serving(range_id)?.snapshot().await,
        Op::RangeStats => Ok(Reply::Stats(shared.stats().await)),
        Op::Merge { left_id, right_id } => shared.ranges.merge(left_id, right_id).await,
        Op::Txn { txn_id, parts, hold_ms } => crate::txn::run(shared, txn_id, parts, hold_ms).await,
        Op::TxnPrepare { txn_id, range_id, checks, writes, reads, hold_ms } => {
            crate::txn::prepare(shared, txn_id, range_id, checks, writes, reads, hold_ms).await
        }
        Op::TxnResolve { txn_id, range_id, seq, decision } => {
            crate::txn::resolve(shared, txn_id, range_id, seq, decision).await
        }
        Op::Locate { .. }
        | Op::LocateRange { .. }
        | Op::Drain { .. }
        | Op::MasterStatus
        | Op::SplitRange { .. }
        | Op::CommitMerge { .. }
        | Op::Members => Err(Error::invalid("this is a node; send routing requests to the master")),
    }
}

/// A validated read, answered from the memtables of the ranges it touches, in the
/// caller's task (`Service::try_now`): no message to a range, no task.
fn read(shared: &NodeShared, op: Op) -> Result<Reply, Error> {
    match op {
        Op::Get { key } => shared.ranges.route_key(&key)?.get(&key).map(Reply::Value),
        Op::Ttl { key } => shared.ranges.route_key(&key)?.ttl(&key).map(Reply::Ttl),
        Op::GetMany { keys } => {
            let mut values = Vec::with_capacity(keys.len());
            let mut bytes = 0usize;
            for key in keys {
                let v = shared.ranges.route_key(&key)?.get(&key)?;
                bytes += v.as_ref().map_or(0, |v| v.value.len() + 32);
                if bytes > FRAME_BYTES_MAX - 64 * 1024 {
                    return Err(Error::too_large("get_many response", bytes, FRAME_BYTES_MAX));
                }
                values.push(v);
            }
            Ok(Reply::Values(values))
        }
        Op::Scan { start, end, limit, reverse } => {
            let range =
                if reverse { shared.ranges.route_below(end.as_ref())? } else { shared.ranges.route_key(&start)? };
            let page = range.scan(&start, end.as_ref(), limit as usize, reverse)?;
            Ok(Reply::ScanPage { items: page.items, resume: page.resume })
        }
        other => Err(Error::internal(format!("{} is not a read", other.name()))),
    }
}

/// One operation of a `Batch` (pushes and enqueues only; `Op::validate` checked that).
async fn batched(shared: &Arc<NodeShared>, op: Op) -> Result<Reply, Error> {
    match op {
        Op::Push { key, element, push_id } => push(shared, key, element, push_id).await,
        Op::Enqueue { queue, shard, task_id, payload } => {
            crate::queue::enqueue(shared, &queue, shard, task_id, payload).await
        }
        other => Err(Error::invalid(format!("a batch cannot hold {}", other.name()))),
    }
}

async fn push(shared: &NodeShared, key: Key, element: Vec<u8>, push_id: PushId) -> Result<Reply, Error> {
    // The element's key is a pure function of the list and the push id, so a retried push
    // finds its element in place: applied once, whatever happens. `ListTail` keeps the
    // list in the order pushes took effect.
    let element_key = ampstore_common::lists::element_key(&key, push_id);
    let range = shared.ranges.route_key(&element_key)?;
    let w = Write {
        op: LoggedOp::Put { key: element_key, value: element },
        condition: Condition::ListTail,
        write_id: Some(WriteKey::Push(push_id)),
    };
    range.write(w).await
}
