//! The one writer thread of a process: group commit for every write to the SQLite file.
//!
//! It blocks for the first queued request, takes every other request already queued (up to
//! `LOCAL_WRITER_BATCH_BYTES_MAX`), applies them in order inside one `BEGIN IMMEDIATE`
//! transaction, commits (one fsync with `synchronous=FULL`), and only then answers each
//! request. A condition failure (taken slot, failed meta condition) fails only its own
//! request; an SQLite error fails the whole transaction and every request in it.
//!
//! Requests come in two lanes. Meta writes (node heartbeats, the master's lease renewals and
//! every other meta write) have their own queue, and every group takes all of them first:
//! a heartbeat never waits behind the appends of a saturated store, only for the one group
//! in progress. Without that, a heartbeat queued behind a few groups of appends could
//! outlast the node's liveness and end a healthy node's epoch. Requests of the two lanes are
//! concurrent (each caller waits for its answer before it sends what depends on it), so
//! taking one lane first reorders nothing a caller could see.

use rusqlite::{Connection, params};
use tokio::sync::{mpsc, oneshot};

use super::{head_of, meta_get, sql_err};
use crate::{AppendSlot, Expect, MetaItem, MetaOp, StoreError, StoreResult};
use ampstore_common::ids::{RangeId, Seq};
use ampstore_common::limits::LOCAL_WRITER_BATCH_BYTES_MAX;

pub(super) enum WriteOp {
    Append(AppendSlot),
    /// Several slots (of different ranges) appended each on its own, as `Append`s would be,
    /// answered together: one request to the writer and one answer for all of them.
    AppendEach(Vec<AppendSlot>),
    AppendAtomic(Vec<AppendSlot>),
    Truncate {
        range: RangeId,
        upto: Seq,
    },
    /// `single`: a lone put or delete (errors carry no op index; a put returns its version).
    Meta {
        ops: Vec<MetaOp>,
        single: bool,
    },
}

impl WriteOp {
    fn payload_bytes(&self) -> usize {
        match self {
            WriteOp::Append(s) => s.entry.payload.len(),
            WriteOp::AppendAtomic(slots) | WriteOp::AppendEach(slots) => {
                slots.iter().map(|s| s.entry.payload.len()).sum()
            }
            WriteOp::Truncate { .. } => 0,
            WriteOp::Meta { ops, .. } => ops
                .iter()
                .map(|op| match op {
                    MetaOp::Put { value, .. } => value.len(),
                    _ => 0,
                })
                .sum(),
        }
    }
}

pub(super) struct WriteRequest {
    pub op: WriteOp,
    pub reply: Reply,
}

/// Where a request's outcome goes.
pub(super) enum Reply {
    /// The new version for a single meta put, 0 otherwise.
    One(oneshot::Sender<StoreResult<u64>>),
    /// `AppendEach`: one outcome per slot, in order (or one error for all when the group
    /// failed).
    Each(oneshot::Sender<StoreResult<Vec<StoreResult<()>>>>),
}

/// What applying one request came to (before the group commits).
enum Outcome {
    One(StoreResult<u64>),
    Each(Vec<StoreResult<()>>),
}

impl Reply {
    fn send(self, outcome: Outcome) {
        // A caller that gave up has dropped its receiver: nothing to do then.
        match (self, outcome) {
            (Reply::One(tx), Outcome::One(r)) => {
                let _ = tx.send(r);
            }
            (Reply::Each(tx), Outcome::Each(r)) => {
                let _ = tx.send(Ok(r));
            }
            // `apply` answers each kind of request with its own kind of outcome.
            (Reply::One(tx), Outcome::Each(_)) => {
                let _ = tx.send(Err(StoreError::Invalid("the store writer mixed up two answers".into())));
            }
            (Reply::Each(tx), Outcome::One(_)) => {
                let _ = tx.send(Err(StoreError::Invalid("the store writer mixed up two answers".into())));
            }
        }
    }

    fn fail(self, err: StoreError) {
        match self {
            Reply::One(tx) => {
                let _ = tx.send(Err(err));
            }
            Reply::Each(tx) => {
                let _ = tx.send(Err(err));
            }
        }
    }
}

impl WriteOp {
    /// Whether the request goes in the meta lane (taken first by every group).
    pub(super) fn is_meta(&self) -> bool {
        matches!(self, WriteOp::Meta { .. })
    }
}

/// The receiving ends of the two lanes.
pub(super) struct Lanes {
    pub meta: mpsc::Receiver<WriteRequest>,
    pub log: mpsc::Receiver<WriteRequest>,
}

pub(super) fn spawn(conn: Connection, lanes: Lanes) -> std::io::Result<()> {
    // The thread waits on two queues at once, which takes a (one-thread) runtime of its own.
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    std::thread::Builder::new()
        .name("ampstore-store-writer".into())
        .spawn(move || runtime.block_on(run(conn, lanes)))?;
    Ok(())
}

async fn run(mut conn: Connection, mut lanes: Lanes) {
    let mut batch: Vec<WriteRequest> = Vec::new();
    // Ends when every sender (every handle of the store) is dropped.
    loop {
        let first = tokio::select! {
            biased;
            Some(req) = lanes.meta.recv() => req,
            Some(req) = lanes.log.recv() => req,
            else => return,
        };
        batch.push(first);
        take_group(&mut lanes, &mut batch);
        // Blocking is fine here: this thread does nothing else.
        commit_batch(&mut conn, &mut batch);
    }
}

/// Adds to `batch` (holding the request that woke the writer) every queued meta write, then
/// queued appends and truncations up to `LOCAL_WRITER_BATCH_BYTES_MAX` of payload.
fn take_group(lanes: &mut Lanes, batch: &mut Vec<WriteRequest>) {
    let mut bytes: usize = batch.iter().map(|r| r.op.payload_bytes()).sum();
    while let Ok(req) = lanes.meta.try_recv() {
        bytes += req.op.payload_bytes();
        batch.push(req);
    }
    while bytes < LOCAL_WRITER_BATCH_BYTES_MAX {
        match lanes.log.try_recv() {
            Ok(req) => {
                bytes += req.op.payload_bytes();
                batch.push(req);
            }
            Err(_) => break,
        }
    }
}

fn commit_batch(conn: &mut Connection, batch: &mut Vec<WriteRequest>) {
    let outcome = in_transaction(conn, |conn| {
        let mut results = Vec::with_capacity(batch.len());
        for req in batch.iter() {
            results.push(apply(conn, &req.op)?);
        }
        Ok(results)
    });
    match outcome {
        Ok(results) => {
            debug_assert_eq!(results.len(), batch.len());
            for (req, result) in batch.drain(..).zip(results) {
                req.reply.send(result);
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, requests = batch.len(), "store commit failed");
            let err = sql_err(e);
            for req in batch.drain(..) {
                req.reply.fail(err.clone());
            }
        }
    }
}

/// Runs `f` inside one `BEGIN IMMEDIATE` transaction and commits it; on any error rolls it
/// back (nothing of it stays) and returns that error. The BEGIN and COMMIT statements are
/// cached: `Connection::transaction` parses them anew for every group, which cost the store
/// process ~7,000 instructions per group commit, 8% of its instructions per durable put
/// (issue 16, `docs/benchmarks.md`).
fn in_transaction<T>(conn: &mut Connection, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
    let result = f(conn).and_then(|out| {
        conn.prepare_cached("COMMIT")?.execute([])?;
        Ok(out)
    });
    // A failed step, or a failed COMMIT that left the transaction open (SQLite rolls some
    // failures back itself: then there is nothing to roll back).
    if result.is_err() && !conn.is_autocommit() {
        // The callers get the first error; a failed rollback leaves the connection unusable
        // for the next group, which then fails (and says why) on its BEGIN.
        if let Err(e) = conn.execute_batch("ROLLBACK") {
            tracing::warn!(error = %e, "store rollback failed");
        }
    }
    result
}

/// Outer error: SQLite failed (abort the transaction). Inner: this request's own outcome.
fn apply(tx: &Connection, op: &WriteOp) -> rusqlite::Result<Outcome> {
    if let WriteOp::AppendEach(slots) = op {
        let mut outcomes = Vec::with_capacity(slots.len());
        // One statement for all the slots (a cache lookup, by the SQL's text, per slot
        // otherwise).
        let mut insert = tx.prepare_cached(INSERT_SLOT)?;
        for slot in slots {
            outcomes.push(if insert_with(&mut insert, slot)? {
                Ok(())
            } else {
                Err(StoreError::SlotTaken { range: slot.range, seq: slot.seq })
            });
        }
        return Ok(Outcome::Each(outcomes));
    }
    apply_one(tx, op).map(Outcome::One)
}

fn apply_one(tx: &Connection, op: &WriteOp) -> rusqlite::Result<StoreResult<u64>> {
    match op {
        WriteOp::Append(slot) => {
            if insert_slot(tx, slot)? {
                Ok(Ok(0))
            } else {
                Ok(Err(StoreError::SlotTaken { range: slot.range, seq: slot.seq }))
            }
        }
        WriteOp::AppendAtomic(slots) => {
            let mut taken = Vec::new();
            for s in slots {
                if slot_exists(tx, s.range, s.seq)? {
                    taken.push((s.range, s.seq));
                }
            }
            if !taken.is_empty() {
                return Ok(Err(StoreError::SlotsTaken { slots: taken }));
            }
            for s in slots {
                let inserted = insert_slot(tx, s)?;
                debug_assert!(inserted, "slot checked empty under the write lock");
            }
            Ok(Ok(0))
        }
        WriteOp::Truncate { range, upto } => {
            let head = match head_of(tx, *range) {
                Ok(h) => h.map_or(0, |s| s.0),
                Err(e) => return Ok(Err(e)),
            };
            if upto.0 > head.max(1) {
                return Ok(Err(StoreError::Invalid(format!(
                    "cannot truncate {range} up to {upto}: the head is {head} and must stay"
                ))));
            }
            tx.prepare_cached("DELETE FROM log WHERE range_id = ?1 AND seq < ?2")?
                .execute(params![range.0 as i64, upto.0 as i64])?;
            Ok(Ok(0))
        }
        WriteOp::Meta { ops, single } => apply_meta(tx, ops, *single),
        WriteOp::AppendEach(_) => Ok(Err(StoreError::Invalid("append_each answered as one".into()))),
    }
}

const INSERT_SLOT: &str =
    "INSERT OR IGNORE INTO log (range_id, seq, kind, writer, epoch, payload) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";

fn insert_slot(tx: &Connection, s: &AppendSlot) -> rusqlite::Result<bool> {
    insert_with(&mut tx.prepare_cached(INSERT_SLOT)?, s)
}

/// Inserts `s` with the prepared [`INSERT_SLOT`]; false when the slot was taken.
fn insert_with(insert: &mut rusqlite::CachedStatement<'_>, s: &AppendSlot) -> rusqlite::Result<bool> {
    let n = insert.execute(params![
        s.range.0 as i64,
        s.seq.0 as i64,
        i64::from(s.entry.kind.as_u8()),
        s.entry.writer.as_str(),
        s.entry.epoch.0 as i64,
        &s.entry.payload[..],
    ])?;
    Ok(n == 1)
}

fn slot_exists(tx: &Connection, range: RangeId, seq: Seq) -> rusqlite::Result<bool> {
    tx.prepare_cached("SELECT 1 FROM log WHERE range_id = ?1 AND seq = ?2")?
        .exists(params![range.0 as i64, seq.0 as i64])
}

/// Explains why `expect` does not hold for `current`, or `None` when it holds.
pub(crate) fn expect_mismatch(expect: &Expect, current: Option<&MetaItem>) -> Option<String> {
    let found = || match current {
        Some(item) => format!("found version {}", item.version),
        None => "found no item".to_string(),
    };
    match (expect, current) {
        (Expect::Any, _) => None,
        (Expect::Absent, None) => None,
        (Expect::Absent, Some(_)) => Some(format!("expected no item, {}", found())),
        (Expect::Version(v), Some(item)) if item.version == *v => None,
        (Expect::Version(v), _) => Some(format!("expected version {v}, {}", found())),
        (Expect::Value(v), Some(item)) if &item.value == v => None,
        (Expect::Value(_), _) => Some(format!("expected value differs, {}", found())),
    }
}

fn apply_meta(tx: &Connection, ops: &[MetaOp], single: bool) -> rusqlite::Result<StoreResult<u64>> {
    // Check every condition first (we hold the write lock), then write: all or nothing.
    let mut currents = Vec::with_capacity(ops.len());
    for (i, op) in ops.iter().enumerate() {
        let (pk, sk) = op.key();
        let current = match meta_get(tx, pk, sk) {
            Ok(c) => c,
            Err(e) => return Ok(Err(e)),
        };
        if let Some(why) = expect_mismatch(op.expect(), current.as_ref()) {
            return Ok(Err(StoreError::ConditionFailed {
                op_index: if single { None } else { Some(i) },
                detail: format!("{pk}/{}: {why}", String::from_utf8_lossy(sk)),
            }));
        }
        currents.push(current.map(|c| c.version));
    }
    let mut last_version = 0;
    for (op, current) in ops.iter().zip(currents) {
        match op {
            MetaOp::Put { pk, sk, value, .. } => {
                let version = current.map_or(1, |v| v + 1);
                tx.prepare_cached("INSERT OR REPLACE INTO meta (pk, sk, version, value) VALUES (?1, ?2, ?3, ?4)")?
                    .execute(params![pk, sk, version as i64, value])?;
                last_version = version;
            }
            MetaOp::Delete { pk, sk, .. } => {
                tx.prepare_cached("DELETE FROM meta WHERE pk = ?1 AND sk = ?2")?.execute(params![pk, sk])?;
            }
            MetaOp::Check { .. } => {}
        }
    }
    Ok(Ok(if single { last_version } else { 0 }))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use crate::config::LocalConfig;
    use crate::local::LocalStore;
    use crate::{EntryKind, Expect, LogEntry};
    use ampstore_common::ids::{Epoch, NodeId, RangeId, Seq};
    use ampstore_common::limits::{LOCAL_WRITER_BATCH_BYTES_MAX, LOG_ENTRY_BYTES_MAX};

    /// An SQLite failure inside a group fails every request of it, leaves nothing of it
    /// written and no transaction open: the next group commits.
    #[test]
    fn a_failed_group_is_rolled_back_and_the_next_one_commits() {
        use super::{WriteOp, WriteRequest, commit_batch};
        use crate::AppendSlot;
        let dir = tempfile::tempdir().unwrap();
        let mut conn = rusqlite::Connection::open(dir.path().join("db")).unwrap();
        conn.execute_batch(super::super::SCHEMA).unwrap();
        let slot = |seq| AppendSlot {
            range: RangeId(1),
            seq: Seq(seq),
            entry: LogEntry {
                kind: EntryKind::Batch,
                writer: NodeId::new("n1").unwrap(),
                epoch: Epoch(1),
                payload: bytes::Bytes::from_static(b"p"),
            },
        };
        let group = |ops: Vec<WriteOp>| {
            let mut answers = Vec::new();
            let batch = ops
                .into_iter()
                .map(|op| {
                    let (reply, rx) = tokio::sync::oneshot::channel();
                    answers.push(rx);
                    WriteRequest { op, reply: super::Reply::One(reply) }
                })
                .collect::<Vec<_>>();
            (batch, answers)
        };
        // The first request of the group is written, the second hits a missing table (an
        // SQLite error, not a failed condition).
        let (mut batch, answers) = group(vec![
            WriteOp::Meta {
                ops: vec![crate::MetaOp::Put {
                    pk: "p".into(),
                    sk: b"k".to_vec(),
                    value: vec![1],
                    expect: Expect::Any,
                }],
                single: true,
            },
            WriteOp::Append(slot(1)),
        ]);
        conn.execute_batch("DROP TABLE log").unwrap();
        commit_batch(&mut conn, &mut batch);
        for mut rx in answers {
            let got = rx.try_recv().unwrap();
            assert!(matches!(got, Err(crate::StoreError::Unavailable(_))), "{got:?}");
        }
        assert!(conn.is_autocommit(), "no transaction left open");
        let rows: i64 = conn.query_row("SELECT COUNT(*) FROM meta", [], |r| r.get(0)).unwrap();
        assert_eq!(rows, 0, "the meta put of the failed group was rolled back");
        conn.execute_batch(super::super::SCHEMA).unwrap();
        let (mut batch, answers) = group(vec![WriteOp::Append(slot(1)), WriteOp::Append(slot(1))]);
        commit_batch(&mut conn, &mut batch);
        let got: Vec<_> = answers.into_iter().map(|mut rx| rx.try_recv().unwrap()).collect();
        assert!(matches!(got[0], Ok(0)));
        assert!(matches!(got[1], Err(crate::StoreError::SlotTaken { .. })), "{:?}", got[1]);
    }

    /// A node's heartbeat (a meta put) queued behind several group commits' worth of
    /// appends commits in the next group, not after all of them: a heartbeat that waits for
    /// appends can outlast the node's liveness under saturating writes and end a healthy
    /// node's epoch.
    #[tokio::test]
    async fn a_meta_write_does_not_queue_behind_appends() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalStore::open(dir.path(), &LocalConfig::default()).unwrap().backend();
        let payload = bytes::Bytes::from(vec![7u8; LOG_ENTRY_BYTES_MAX]);
        let appends = 6 * LOCAL_WRITER_BATCH_BYTES_MAX / LOG_ENTRY_BYTES_MAX;
        let done = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for i in 0..appends {
            let (log, done, payload) = (b.log.clone(), done.clone(), payload.clone());
            let entry =
                LogEntry { kind: EntryKind::Batch, writer: NodeId::new("n1").unwrap(), epoch: Epoch(1), payload };
            tasks.push(tokio::spawn(async move {
                log.append(RangeId(1 + i as u64 % 8), Seq(1 + i as u64 / 8), &entry).await.unwrap();
                done.fetch_add(1, Ordering::SeqCst);
            }));
        }
        // Let every append reach the writer's queue first.
        for _ in 0..appends * 4 {
            tokio::task::yield_now().await;
        }
        b.meta.put("node", b"n1", b"beat", Expect::Any).await.unwrap();
        let appended_before = done.load(Ordering::SeqCst);
        for t in tasks {
            t.await.unwrap();
        }
        assert!(
            appended_before <= 2 * LOCAL_WRITER_BATCH_BYTES_MAX / LOG_ENTRY_BYTES_MAX,
            "the meta write waited for {appended_before} of {appends} appends queued before it"
        );
    }
}
