//! Coordinating a transaction (DESIGN section 9). The node serving the first part's range
//! coordinates:
//!
//! - one part: the range checks the conditions and writes the transaction's entry itself
//!   (one conditional log entry);
//! - several: every participant range checks its conditions against its applied data,
//!   holds itself (no other append goes out) and reserves its next log slot; the
//!   coordinator then writes every participant's `Txn` entry at its reserved slot with one
//!   `append_atomic`, and tells the participants to apply. A participant that hears nothing
//!   within `hold_ms` writes an `Abort` at its slot; if the slot is taken by the
//!   transaction's entry, the transaction committed and it applies it. So the log slots are
//!   the only decision point: whatever the coordinator does or fails to do, every
//!   participant reaches the same outcome.
//!
//! A transaction with no writes holds every participant at once after checking: a
//! consistent read of the versions it checks.

use std::sync::Arc;
use std::time::Duration;

use ampstore_common::error::Error;
use ampstore_common::protocol::{Op, Reply, WriteId};
use ampstore_common::txn::{TxnCheck, TxnDecision, TxnPart, TxnWrite};
use ampstore_common::wire::Call;
use ampstore_common::wire::peer::{Prepared, TxnPrepare, TxnResolve};
use ampstore_common::{Key, RangeId, Seq, Version};
use ampstore_store::{AppendSlot, EntryKind, LogEntry};
use bytes::Bytes;

use crate::range::batch::{self, TxnPayload};
use crate::range::machine::Prepare;
use crate::shared::NodeShared;
use crate::test_points::crash_point;

/// Deadline of a resolve call to a participant (it may append an abort first).
const RESOLVE_DEADLINE: Duration = Duration::from_secs(5);

pub async fn run(shared: &Arc<NodeShared>, txn_id: WriteId, parts: Vec<TxnPart>, hold_ms: u64) -> Result<Reply, Error> {
    // A TTL becomes an absolute expiry here, once, so that every participant's hold and the
    // entries this coordinator writes for them carry the same expiry (DESIGN section 13).
    let now_ms = crate::range::memtable::unix_now_ms();
    let parts: Vec<TxnPart> = parts
        .into_iter()
        .map(|mut p| {
            p.writes = p.writes.into_iter().map(|w| w.stamped(now_ms)).collect();
            p
        })
        .collect();
    if let [part] = parts.as_slice() {
        let prepare = Prepare {
            txn_id,
            checks: part.checks.clone(),
            writes: part.writes.clone(),
            reads: part.reads.clone(),
            hold_ms,
            local: true,
        };
        return shared.ranges.serving(part.range_id)?.txn_prepare(prepare).await;
    }
    // The parts' addresses come from the client: connect only to live nodes.
    shared.live_node_addrs.check_parts(&shared.rpc_addr, shared.backend.meta.as_ref(), &parts).await?;
    let prepares = parts
        .iter()
        .map(|p| {
            let req = TxnPrepare {
                txn_id,
                range_id: p.range_id,
                checks: p.checks.clone(),
                writes: p.writes.clone(),
                reads: p.reads.clone(),
                hold_ms,
            };
            Some((p.node_addr.clone(), req, Duration::from_millis(hold_ms)))
        })
        .collect();
    let results = call_all(shared, prepares).await;
    let mut prepared = Vec::with_capacity(parts.len());
    let mut failure: Option<Error> = None;
    for r in results {
        match r {
            Ok(p) => prepared.push(Some(p)),
            Err(e) => {
                prepared.push(None);
                // The failed condition is the most useful answer.
                if failure.is_none() || matches!(e, Error::Conflict { .. }) {
                    failure = Some(e);
                }
            }
        }
    }
    if let Some(e) = failure {
        resolve_all(shared, txn_id, &parts, &prepared, TxnDecision::Resolve).await;
        return Err(e);
    }
    // A retry of a transaction that committed: every participant remembers it (the outcome
    // travels with the range), so answer it again without writing anything.
    let already: Vec<bool> = prepared.iter().flatten().map(|p| p.committed).collect();
    if already.iter().any(|c| *c) {
        if already.iter().all(|c| *c) {
            return Ok(committed_reply(&parts, &prepared));
        }
        // Some participants remember it committed and others do not (they forgot it, past
        // the retention): give the holds back and say the outcome is unknown.
        resolve_all(shared, txn_id, &parts, &prepared, TxnDecision::Resolve).await;
        return Err(Error::Timeout);
    }
    crash_point("txn:prepared");
    let slots: Vec<AppendSlot> = parts
        .iter()
        .zip(&prepared)
        .filter_map(|(part, p)| {
            let p = p.as_ref()?;
            let seq = p.seq?;
            let payload = TxnPayload { txn_id, writes: part.writes.iter().map(|w| batch::logged(w, now_ms)).collect() };
            let entry = LogEntry {
                kind: EntryKind::Txn,
                writer: p.writer.clone(),
                epoch: p.epoch,
                payload: Bytes::from(batch::encode_txn(&payload)),
            };
            Some(AppendSlot { range: part.range_id, seq, entry })
        })
        .collect();
    if !slots.is_empty()
        && let Err(e) = shared.backend.log.append_atomic(&slots).await
    {
        // Not written by this call, or maybe written (an error after the store acted, or
        // slots taken by this transaction's own earlier attempt): the participants decide
        // from their slots. Only when every one of them is sure it did not commit may the
        // client retry; when any is unsure the outcome is unknown.
        tracing::info!(?txn_id, error = %e, "transaction append did not succeed; resolving from the log");
        let outcomes = resolve_all(shared, txn_id, &parts, &prepared, TxnDecision::Resolve).await;
        let decided: Vec<Option<bool>> =
            outcomes.into_iter().zip(&prepared).filter(|(_, p)| p.is_some()).map(|(o, _)| o).collect();
        return match (decided.iter().all(|o| *o == Some(true)), decided.iter().all(|o| *o == Some(false))) {
            (true, _) => Ok(committed_reply(&parts, &prepared)),
            (_, true) => Err(Error::unavailable(format!("transaction not committed ({e}); retry"))),
            _ => Err(Error::Timeout),
        };
    }
    crash_point("txn:appended");
    // Participants that miss this resolve themselves from their slots.
    resolve_all(shared, txn_id, &parts, &prepared, TxnDecision::Commit).await;
    Ok(committed_reply(&parts, &prepared))
}

fn committed_reply(parts: &[TxnPart], prepared: &[Option<Prepared>]) -> Reply {
    let versions = parts
        .iter()
        .zip(prepared)
        .map(|(part, p)| match p.as_ref().and_then(|p| p.seq) {
            Some(seq) => (0..part.writes.len()).map(|i| Version { seq, index: i as u32 }).collect(),
            None => Vec::new(),
        })
        .collect();
    let values = prepared.iter().map(|p| p.as_ref().map(|p| p.values.clone()).unwrap_or_default()).collect();
    Reply::TxnCommitted { versions, values }
}

/// Tells every prepared participant the decision; returns what each answered (committed or
/// not; `None` for those not prepared or not answering).
async fn resolve_all(
    shared: &Arc<NodeShared>,
    txn_id: WriteId,
    parts: &[TxnPart],
    prepared: &[Option<Prepared>],
    decision: TxnDecision,
) -> Vec<Option<bool>> {
    let calls = parts
        .iter()
        .zip(prepared)
        .map(|(part, p)| {
            let p = p.as_ref()?;
            let req = TxnResolve { txn_id, range_id: part.range_id, seq: p.seq, decision };
            Some((part.node_addr.clone(), req, RESOLVE_DEADLINE))
        })
        .collect();
    call_all(shared, calls)
        .await
        .into_iter()
        .zip(parts)
        .map(|(r, part)| match r {
            Ok(committed) => Some(committed),
            Err(Error::Internal { reason }) if reason == NOT_CALLED => None,
            Err(e) => {
                tracing::info!(?txn_id, range = %part.range_id, error = %e, "resolve not answered; the participant resolves itself");
                None
            }
        })
        .collect()
}

const NOT_CALLED: &str = "not called";

/// Makes every call at once; answers in the order of `calls` (`None`: no call), each
/// checked for its reply type.
async fn call_all<C>(
    shared: &Arc<NodeShared>,
    calls: Vec<Option<(String, C, Duration)>>,
) -> Vec<Result<C::Reply, Error>>
where
    C: Call,
    C::Reply: Send + 'static,
{
    let mut tasks = tokio::task::JoinSet::new();
    let n = calls.len();
    for (i, c) in calls.into_iter().enumerate() {
        let Some((addr, req, deadline)) = c else { continue };
        let fut = call(shared.clone(), addr, req.into_op(), deadline);
        tasks.spawn(async move { (i, fut.await.and_then(C::reply)) });
    }
    let mut out: Vec<Result<C::Reply, Error>> = (0..n).map(|_| Err(Error::internal(NOT_CALLED))).collect();
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok((i, r)) => out[i] = r,
            Err(e) => tracing::error!(error = %e, "a transaction call task failed"),
        }
    }
    out
}

/// A participant's side of `TxnResolve`: the range resolves its hold; a range that no
/// longer holds the transaction (it restarted, or resolved it already) answers from what it
/// remembers or from its log slot.
pub async fn resolve(
    shared: &Arc<NodeShared>,
    txn_id: WriteId,
    range_id: RangeId,
    seq: Option<Seq>,
    decision: TxnDecision,
) -> Result<Reply, Error> {
    if let Ok(range) = shared.ranges.serving(range_id) {
        match range.txn_resolve(txn_id, decision).await {
            // It does not hold the transaction: answer from the log below.
            Err(Error::Invalid { .. }) => {}
            other => return other,
        }
    }
    let Some(seq) = seq else { return Ok(Reply::TxnResolved { committed: false }) };
    let found = shared.backend.log.read(range_id, seq, 1).await?;
    let committed = match found.into_iter().next() {
        Some((s, e)) if s == seq && e.kind == EntryKind::Txn => batch::decode_txn(&e.payload)?.txn_id == txn_id,
        Some((s, _)) if s == seq => false,
        // The log is dense, so a later entry means the slot was filled and then truncated by
        // a checkpoint: what it held is not known here (the range's remembered outcomes,
        // asked above, did not have it). Unknown, never "not committed".
        Some(_) => return Err(Error::Timeout),
        None => false,
    };
    Ok(Reply::TxnResolved { committed })
}

/// Sends `op` to the node at `addr`; a participant on this node is reached through its
/// range directly (never back through the service).
async fn call(shared: Arc<NodeShared>, addr: String, op: Op, deadline: Duration) -> Result<Reply, Error> {
    if addr == shared.rpc_addr {
        return call_local(&shared, op).await;
    }
    call_peer(&shared, &addr, op, deadline).await
}

/// A participant's side of a call to this node: what the service does for these two ops.
async fn call_local(shared: &Arc<NodeShared>, op: Op) -> Result<Reply, Error> {
    op.validate()?;
    match op {
        Op::TxnPrepare { txn_id, range_id, checks, writes, reads, hold_ms } => {
            prepare(shared, txn_id, range_id, checks, writes, reads, hold_ms).await
        }
        Op::TxnResolve { txn_id, range_id, seq, decision } => resolve(shared, txn_id, range_id, seq, decision).await,
        other => Err(Error::internal(format!("a transaction does not send {}", other.name()))),
    }
}

/// A participant's side of `TxnPrepare`: the range checks, holds itself and reserves its
/// next log slot.
pub async fn prepare(
    shared: &NodeShared,
    txn_id: WriteId,
    range_id: RangeId,
    checks: Vec<TxnCheck>,
    writes: Vec<TxnWrite>,
    reads: Vec<Key>,
    hold_ms: u64,
) -> Result<Reply, Error> {
    let prepare = Prepare { txn_id, checks, writes, reads, hold_ms, local: false };
    shared.ranges.serving(range_id)?.txn_prepare(prepare).await
}

async fn call_peer(shared: &NodeShared, addr: &str, op: Op, deadline: Duration) -> Result<Reply, Error> {
    shared.pool.call(addr, op, deadline).await
}
