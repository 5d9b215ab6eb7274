//! The embedded backend: commit log and meta in one SQLite file, blobs as files.
//!
//! Several processes may open the same directory at once. SQLite runs in WAL mode with a
//! `busy_timeout`; every write transaction starts with `BEGIN IMMEDIATE`, so waiting for the
//! write lock happens up front rather than failing half-way. Each process has exactly one
//! writer thread ([`writer`]) that commits the queued appends of many ranges, truncations
//! and meta updates in one transaction (group commit at the storage layer). Reads use a
//! small pool of read-only connections and see every committed write.

use async_trait::async_trait;
use bytes::Bytes;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

use super::{
    AppendSlot, Backend, CommitLog, EntryKind, Expect, LogEntry, MetaItem, MetaOp, MetaStore, StoreError, StoreResult,
    validate,
};
use crate::config::{LocalConfig, SyncMode};
use ampstore_common::error::Error;
use ampstore_common::ids::{Epoch, NodeId, RangeId, Seq};
use ampstore_common::limits::{
    LOCAL_WRITER_QUEUE_DEPTH, LOG_READ_BYTES_MAX, LOG_READ_ENTRIES_MAX, META_QUERY_ITEMS_MAX,
};

mod blobs;
mod writer;

pub use blobs::FileBlobStore;
use writer::{Reply, WriteOp, WriteRequest};

/// File name of the database inside the store directory.
pub const DB_FILE: &str = "store.db";
/// Directory of the blobs inside the store directory.
pub const BLOB_DIR: &str = "blobs";

/// The file format this build writes (`PRAGMA user_version`). 0: the log table is
/// `WITHOUT ROWID` keyed by `(range_id, seq)` (up to `cab8308`); 1: the log is a rowid table
/// with a unique index on `(range_id, seq)`. A file of format 0 is converted when the writer
/// opens it (`migrate`); a file of a later format is refused.
pub(crate) const FORMAT: i64 = 1;

/// Format 1. The log is a rowid table, not `WITHOUT ROWID`: its rows (a batch, ~5 KB at
/// 24 puts) do not fit a 4 KiB page, and a `WITHOUT ROWID` table keeps whole rows in its
/// interior pages too, so every insert's seek compared keys by reading rows' overflow pages
/// (`sqlite3BtreeIndexMoveto`, about a fifth of the store process's instructions per
/// durable put; SQLite advises rows under a twentieth of a page there). A rowid table
/// appends rows at its right edge and seeks the small `(range_id, seq, rowid)` index.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS log (
    range_id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    kind INTEGER NOT NULL,
    writer TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    payload BLOB NOT NULL,
    UNIQUE (range_id, seq)
);
CREATE TABLE IF NOT EXISTS meta (
    pk TEXT NOT NULL,
    sk BLOB NOT NULL,
    version INTEGER NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (pk, sk)
) WITHOUT ROWID;
";

pub(crate) fn sql_err(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(format!("sqlite: {e}"))
}

/// The embedded store: one SQLite database plus one blob directory.
pub struct LocalStore {
    inner: Arc<Inner>,
    blobs: Arc<FileBlobStore>,
}

struct Inner {
    db_path: PathBuf,
    busy_timeout: Duration,
    /// The writer thread's lanes: meta writes, and everything else (see [`writer`]).
    meta_writes: mpsc::Sender<WriteRequest>,
    log_writes: mpsc::Sender<WriteRequest>,
    readers: Mutex<Vec<Connection>>,
}

/// Where the blobs of the embedded store in `dir` live.
pub fn blob_dir(dir: &Path) -> PathBuf {
    dir.join(BLOB_DIR)
}

impl LocalStore {
    /// Opens (creating if needed) the store in `dir` and starts this process's writer thread.
    pub fn open(dir: &Path, cfg: &LocalConfig) -> Result<LocalStore, Error> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::unavailable(format!("cannot create store directory {}: {e}", dir.display())))?;
        let db_path = dir.join(DB_FILE);
        let busy_timeout = Duration::from_millis(cfg.busy_timeout_ms);
        let conn = open_writer_connection(&db_path, busy_timeout, cfg.synchronous)
            .map_err(|e| Error::unavailable(format!("cannot open {}: {e}", db_path.display())))?;
        let (meta_writes, meta) = mpsc::channel(LOCAL_WRITER_QUEUE_DEPTH);
        let (log_writes, log) = mpsc::channel(LOCAL_WRITER_QUEUE_DEPTH);
        writer::spawn(conn, writer::Lanes { meta, log })
            .map_err(|e| Error::internal(format!("cannot start the store writer thread: {e}")))?;
        let blobs = FileBlobStore::open(&dir.join(BLOB_DIR))?;
        Ok(LocalStore {
            inner: Arc::new(Inner { db_path, busy_timeout, meta_writes, log_writes, readers: Mutex::new(Vec::new()) }),
            blobs: Arc::new(blobs),
        })
    }

    /// The three stores as trait objects.
    pub fn backend(&self) -> Backend {
        Backend {
            log: Arc::new(LocalLog(self.inner.clone())),
            meta: Arc::new(LocalMeta(self.inner.clone())),
            blobs: self.blobs.clone(),
        }
    }
}

fn open_writer_connection(path: &Path, busy_timeout: Duration, sync: SyncMode) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(busy_timeout)?;
    // journal_mode needs the write lock when it changes the mode; busy_timeout covers that.
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(rusqlite::Error::InvalidParameterName(format!("journal_mode is {mode}, WAL required")));
    }
    conn.pragma_update(
        None,
        "synchronous",
        match sync {
            SyncMode::Full => "FULL",
            SyncMode::Normal => "NORMAL",
        },
    )?;
    // Under the write lock: of several processes opening one old file, one converts it.
    conn.execute_batch("BEGIN IMMEDIATE")?;
    match migrate(&conn) {
        Ok(()) => conn.execute_batch("COMMIT")?,
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(e);
        }
    }
    Ok(conn)
}

/// Brings the file to [`FORMAT`] inside the caller's transaction: creates the tables of a
/// new file, or converts a format 0 log (the same rows, copied into the format 1 table).
fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let format: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if format > FORMAT {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "the store file has format {format}; this build reads formats 0 to {FORMAT} (upgrade ampstore)"
        )));
    }
    if format == FORMAT {
        return Ok(());
    }
    let old_log: bool =
        conn.query_row("SELECT COUNT(*) > 0 FROM sqlite_schema WHERE type = 'table' AND name = 'log'", [], |r| {
            r.get(0)
        })?;
    if old_log {
        conn.execute_batch("ALTER TABLE log RENAME TO log_format0")?;
    }
    conn.execute_batch(SCHEMA)?;
    if old_log {
        let rows = conn.execute(
            "INSERT INTO log (range_id, seq, kind, writer, epoch, payload)
             SELECT range_id, seq, kind, writer, epoch, payload FROM log_format0 ORDER BY range_id, seq",
            [],
        )?;
        conn.execute_batch("DROP TABLE log_format0")?;
        tracing::info!(rows, "converted the store's log table to format {FORMAT}");
    }
    conn.pragma_update(None, "user_version", FORMAT)?;
    Ok(())
}

impl Inner {
    async fn write(&self, op: WriteOp) -> StoreResult<u64> {
        let (reply, rx) = oneshot::channel();
        let lane = if op.is_meta() { &self.meta_writes } else { &self.log_writes };
        lane.send(WriteRequest { op, reply: Reply::One(reply) })
            .await
            .map_err(|_| StoreError::Unavailable("the store writer thread has stopped".into()))?;
        rx.await.map_err(|_| StoreError::Unavailable("the store writer thread dropped a request".into()))?
    }

    /// Appends each slot on its own in the next group commit: one request to the writer for
    /// all of them, one outcome per slot.
    async fn write_each(&self, slots: Vec<AppendSlot>) -> StoreResult<Vec<StoreResult<()>>> {
        let (reply, rx) = oneshot::channel();
        self.log_writes
            .send(WriteRequest { op: WriteOp::AppendEach(slots), reply: Reply::Each(reply) })
            .await
            .map_err(|_| StoreError::Unavailable("the store writer thread has stopped".into()))?;
        rx.await.map_err(|_| StoreError::Unavailable("the store writer thread dropped a request".into()))?
    }

    /// Runs `f` on a pooled read-only connection in the blocking pool.
    async fn read<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let inner = self.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = inner.readers.lock().map(|mut pool| pool.pop()).unwrap_or(None);
            let conn = match pooled {
                Some(c) => c,
                None => {
                    let c = Connection::open_with_flags(
                        &inner.db_path,
                        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                    )
                    .map_err(sql_err)?;
                    c.busy_timeout(inner.busy_timeout).map_err(sql_err)?;
                    c
                }
            };
            let out = f(&conn);
            if let Ok(mut pool) = inner.readers.lock()
                && pool.len() < 16
            {
                pool.push(conn);
            }
            out
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("read task failed: {e}")))?
    }
}

/// Decodes one log row; anything unexpected on disk is `Corrupt`, never a panic.
pub(crate) fn decode_log_row(kind: i64, writer: String, epoch: i64, payload: Vec<u8>) -> StoreResult<LogEntry> {
    let kind = u8::try_from(kind)
        .ok()
        .and_then(EntryKind::from_u8)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown log entry kind {kind}")))?;
    let writer = NodeId::new(writer).map_err(|e| StoreError::Corrupt(format!("log entry writer: {e}")))?;
    let epoch = u64::try_from(epoch).map_err(|_| StoreError::Corrupt(format!("negative epoch {epoch}")))?;
    Ok(LogEntry { kind, writer, epoch: Epoch(epoch), payload: Bytes::from(payload) })
}

pub(crate) fn head_of(conn: &Connection, range: RangeId) -> StoreResult<Option<Seq>> {
    let seq: Option<i64> = conn
        .query_row("SELECT MAX(seq) FROM log WHERE range_id = ?1", params![range.0 as i64], |r| r.get(0))
        .map_err(sql_err)?;
    Ok(seq.map(|s| Seq(s as u64)))
}

pub(crate) fn meta_get(conn: &Connection, pk: &str, sk: &[u8]) -> StoreResult<Option<MetaItem>> {
    conn.query_row("SELECT version, value FROM meta WHERE pk = ?1 AND sk = ?2", params![pk, sk], |r| {
        Ok(MetaItem { version: r.get::<_, i64>(0)? as u64, value: r.get(1)? })
    })
    .optional()
    .map_err(sql_err)
}

struct LocalLog(Arc<Inner>);

#[async_trait]
impl CommitLog for LocalLog {
    async fn append(&self, range: RangeId, seq: Seq, entry: &LogEntry) -> StoreResult<()> {
        validate::slot(range, seq, entry)?;
        self.0.write(WriteOp::Append(AppendSlot { range, seq, entry: entry.clone() })).await.map(|_| ())
    }

    async fn append_atomic(&self, slots: &[AppendSlot]) -> StoreResult<()> {
        validate::append_atomic(slots)?;
        self.0.write(WriteOp::AppendAtomic(slots.to_vec())).await.map(|_| ())
    }

    async fn append_each(&self, slots: Vec<AppendSlot>) -> StoreResult<Vec<StoreResult<()>>> {
        validate::append_each(&slots)?;
        // A slot that fails its own checks fails alone, as its own `append` would.
        let mut outcomes: Vec<StoreResult<()>> = Vec::with_capacity(slots.len());
        let mut valid = Vec::with_capacity(slots.len());
        for slot in slots {
            match validate::slot(slot.range, slot.seq, &slot.entry) {
                Ok(()) => {
                    outcomes.push(Ok(()));
                    valid.push(slot);
                }
                Err(e) => outcomes.push(Err(e)),
            }
        }
        if valid.is_empty() {
            return Ok(outcomes);
        }
        let mut written = self.0.write_each(valid).await?.into_iter();
        for outcome in outcomes.iter_mut().filter(|o| o.is_ok()) {
            *outcome = written
                .next()
                .unwrap_or_else(|| Err(StoreError::Unavailable("the store writer answered too few slots".into())));
        }
        Ok(outcomes)
    }

    async fn head(&self, range: RangeId) -> StoreResult<Option<Seq>> {
        validate::range_id(range)?;
        self.0.read(move |c| head_of(c, range)).await
    }

    async fn read(&self, range: RangeId, from: Seq, limit: usize) -> StoreResult<Vec<(Seq, LogEntry)>> {
        validate::range_id(range)?;
        validate::seq(from)?;
        let limit = limit.clamp(1, LOG_READ_ENTRIES_MAX);
        self.0
            .read(move |c| {
                let mut stmt = c
                    .prepare_cached(
                        "SELECT seq, kind, writer, epoch, payload FROM log
                         WHERE range_id = ?1 AND seq >= ?2 ORDER BY seq LIMIT ?3",
                    )
                    .map_err(sql_err)?;
                let mut rows = stmt.query(params![range.0 as i64, from.0 as i64, limit as i64]).map_err(sql_err)?;
                let mut out = Vec::new();
                let mut bytes = 0usize;
                while let Some(row) = rows.next().map_err(sql_err)? {
                    let seq: i64 = row.get(0).map_err(sql_err)?;
                    let entry = decode_log_row(
                        row.get(1).map_err(sql_err)?,
                        row.get(2).map_err(sql_err)?,
                        row.get(3).map_err(sql_err)?,
                        row.get(4).map_err(sql_err)?,
                    )?;
                    bytes += entry.payload.len();
                    out.push((Seq(seq as u64), entry));
                    if bytes >= LOG_READ_BYTES_MAX {
                        break;
                    }
                }
                Ok(out)
            })
            .await
    }

    async fn truncate(&self, range: RangeId, upto: Seq) -> StoreResult<()> {
        validate::range_id(range)?;
        validate::seq(upto)?;
        self.0.write(WriteOp::Truncate { range, upto }).await.map(|_| ())
    }
}

struct LocalMeta(Arc<Inner>);

#[async_trait]
impl MetaStore for LocalMeta {
    async fn get(&self, pk: &str, sk: &[u8]) -> StoreResult<Option<MetaItem>> {
        validate::meta_key(pk, sk)?;
        let (pk, sk) = (pk.to_string(), sk.to_vec());
        self.0.read(move |c| meta_get(c, &pk, &sk)).await
    }

    async fn put(&self, pk: &str, sk: &[u8], value: &[u8], expect: Expect) -> StoreResult<u64> {
        let op = MetaOp::Put { pk: pk.to_string(), sk: sk.to_vec(), value: value.to_vec(), expect };
        validate::meta_transact(std::slice::from_ref(&op))?;
        self.0.write(WriteOp::Meta { ops: vec![op], single: true }).await
    }

    async fn delete(&self, pk: &str, sk: &[u8], expect: Expect) -> StoreResult<()> {
        let op = MetaOp::Delete { pk: pk.to_string(), sk: sk.to_vec(), expect };
        validate::meta_transact(std::slice::from_ref(&op))?;
        self.0.write(WriteOp::Meta { ops: vec![op], single: true }).await.map(|_| ())
    }

    async fn transact(&self, ops: &[MetaOp]) -> StoreResult<()> {
        validate::meta_transact(ops)?;
        self.0.write(WriteOp::Meta { ops: ops.to_vec(), single: false }).await.map(|_| ())
    }

    async fn query(&self, pk: &str, from: &[u8], limit: usize) -> StoreResult<Vec<(Vec<u8>, MetaItem)>> {
        validate::meta_key(pk, from)?;
        let limit = limit.clamp(1, META_QUERY_ITEMS_MAX);
        let (pk, from) = (pk.to_string(), from.to_vec());
        self.0
            .read(move |c| {
                let mut stmt = c
                    .prepare_cached(
                        "SELECT sk, version, value FROM meta WHERE pk = ?1 AND sk >= ?2 ORDER BY sk LIMIT ?3",
                    )
                    .map_err(sql_err)?;
                let rows = stmt
                    .query_map(params![pk, from, limit as i64], |r| {
                        Ok((
                            r.get::<_, Vec<u8>>(0)?,
                            MetaItem { version: r.get::<_, i64>(1)? as u64, value: r.get(2)? },
                        ))
                    })
                    .map_err(sql_err)?;
                rows.collect::<Result<Vec<_>, _>>().map_err(sql_err)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The schema of format 0, as files written up to `cab8308` have it.
    const SCHEMA_FORMAT_0: &str = "
        CREATE TABLE log (
            range_id INTEGER NOT NULL, seq INTEGER NOT NULL, kind INTEGER NOT NULL,
            writer TEXT NOT NULL, epoch INTEGER NOT NULL, payload BLOB NOT NULL,
            PRIMARY KEY (range_id, seq)
        ) WITHOUT ROWID;
        CREATE TABLE meta (
            pk TEXT NOT NULL, sk BLOB NOT NULL, version INTEGER NOT NULL, value BLOB NOT NULL,
            PRIMARY KEY (pk, sk)
        ) WITHOUT ROWID;";

    fn entry(n: u8) -> LogEntry {
        LogEntry {
            kind: EntryKind::Batch,
            writer: NodeId::new("n1").unwrap(),
            epoch: Epoch(2),
            payload: Bytes::from(vec![n; 5000 + usize::from(n)]),
        }
    }

    fn log_table_sql(dir: &Path) -> String {
        let conn = Connection::open(dir.join(DB_FILE)).unwrap();
        conn.query_row("SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = 'log'", [], |r| r.get(0)).unwrap()
    }

    #[tokio::test]
    async fn a_new_store_file_keeps_its_log_in_a_rowid_table() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalStore::open(dir.path(), &LocalConfig::default()).unwrap().backend();
        b.log.append(RangeId(1), Seq(1), &entry(1)).await.unwrap();
        let sql = log_table_sql(dir.path());
        assert!(!sql.to_uppercase().contains("WITHOUT ROWID"), "{sql}");
    }

    /// A file written in format 0 opens: its entries and meta items read back the same, its
    /// taken slots stay taken, and it is format 1 afterwards.
    #[tokio::test]
    async fn a_format_0_file_is_converted_and_keeps_its_entries() {
        let dir = tempfile::tempdir().unwrap();
        {
            let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
            conn.execute_batch(SCHEMA_FORMAT_0).unwrap();
            for (range, seq, n) in [(1i64, 1i64, 1u8), (1, 2, 2), (1, 3, 3), (2, 7, 4)] {
                let e = entry(n);
                conn.execute(
                    "INSERT INTO log (range_id, seq, kind, writer, epoch, payload) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![range, seq, i64::from(e.kind.as_u8()), e.writer.as_str(), 2i64, &e.payload[..]],
                )
                .unwrap();
            }
            conn.execute("INSERT INTO meta (pk, sk, version, value) VALUES ('p', x'01', 3, x'0203')", []).unwrap();
        }
        let b = LocalStore::open(dir.path(), &LocalConfig::default()).unwrap().backend();
        assert_eq!(
            b.log.read(RangeId(1), Seq(1), 10).await.unwrap(),
            vec![(Seq(1), entry(1)), (Seq(2), entry(2)), (Seq(3), entry(3))]
        );
        assert_eq!(b.log.read(RangeId(2), Seq(1), 10).await.unwrap(), vec![(Seq(7), entry(4))]);
        assert_eq!(b.log.head(RangeId(1)).await.unwrap(), Some(Seq(3)));
        assert_eq!(b.meta.get("p", &[1]).await.unwrap(), Some(MetaItem { version: 3, value: vec![2, 3] }));
        assert!(matches!(b.log.append(RangeId(1), Seq(3), &entry(9)).await, Err(StoreError::SlotTaken { .. })));
        b.log.append(RangeId(1), Seq(4), &entry(5)).await.unwrap();
        assert_eq!(b.log.head(RangeId(1)).await.unwrap(), Some(Seq(4)));
        let sql = log_table_sql(dir.path());
        assert!(!sql.to_uppercase().contains("WITHOUT ROWID"), "{sql}");
        let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
        let format: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(format, FORMAT);
        // Opening it again converts nothing.
        drop(b);
        let b = LocalStore::open(dir.path(), &LocalConfig::default()).unwrap().backend();
        assert_eq!(b.log.head(RangeId(1)).await.unwrap(), Some(Seq(4)));
    }

    #[test]
    fn a_file_of_a_later_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
            conn.pragma_update(None, "user_version", FORMAT + 1).unwrap();
        }
        let err = LocalStore::open(dir.path(), &LocalConfig::default()).err().expect("refused");
        assert!(err.to_string().contains("format"), "{err}");
    }
}
