//! The storage layer: a commit log, a metadata store and a blob store (DESIGN section 3),
//! the typed meta records' accessors ([`meta`]), the snapshot file format ([`snapshot`]) and
//! the backend settings ([`config`]).
//!
//! Rules of this crate:
//! - it depends on `ampstore-common` only (never on `ampstore-server`, gossip or the client);
//! - nothing here panics on bytes read from disk or the network: a typed [`StoreError`];
//! - every limit is a named constant in `ampstore_common::limits`.
//!
//! Each trait has an embedded implementation ([`local`]: SQLite plus a directory), a remote
//! one ([`remote`]: the embedded store served by one process, `ampstore store`) and an AWS
//! one (`aws`, feature `aws`: DynamoDB plus S3). All pass the same conformance suite
//! (`store/tests/store_conformance.rs`). Limits are checked here, in [`validate`], before
//! any backend is called, so both backends reject the same inputs with the same errors.

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use std::path::Path;

use crate::config::{BackendConfig, BackendKind};
use ampstore_common::error::Error;
use ampstore_common::ids::{Epoch, NodeId, RangeId, Seq};

#[cfg(feature = "aws")]
pub mod aws;
pub mod config;
pub mod local;
pub mod lost_responses;
pub mod meta;
pub mod own_write;
pub mod remote;
pub mod snapshot;
pub mod validate;

/// What a log entry records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EntryKind {
    /// A batch of writes (group commit).
    Batch,
    /// A new owner's claim: every later append by an older owner fails on its slot.
    Fence,
    /// The range split; its log is closed.
    Split,
    /// A cross-range transaction's writes for this range.
    Txn,
    /// A reserved transaction slot that was abandoned.
    Abort,
    /// The range is closing to merge with its neighbour: no writes follow unless a `Fence`
    /// reopens it (the merge was abandoned before the master recorded it).
    Merge,
}

impl EntryKind {
    pub fn as_u8(self) -> u8 {
        match self {
            EntryKind::Batch => 1,
            EntryKind::Fence => 2,
            EntryKind::Split => 3,
            EntryKind::Txn => 4,
            EntryKind::Abort => 5,
            EntryKind::Merge => 6,
        }
    }

    pub fn from_u8(v: u8) -> Option<EntryKind> {
        Some(match v {
            1 => EntryKind::Batch,
            2 => EntryKind::Fence,
            3 => EntryKind::Split,
            4 => EntryKind::Txn,
            5 => EntryKind::Abort,
            6 => EntryKind::Merge,
            _ => return None,
        })
    }
}

/// One commit-log entry. The payload is opaque to the store (the node encodes batches).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    pub kind: EntryKind,
    /// The node that wrote it, in which epoch: tells a reader whose fence or batch it is.
    pub writer: NodeId,
    pub epoch: Epoch,
    /// Serialised as MessagePack bin (the `bytes` crate's serde), not an array of numbers.
    pub payload: Bytes,
}

/// One slot of an atomic multi-range append.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendSlot {
    pub range: RangeId,
    pub seq: Seq,
    pub entry: LogEntry,
}

/// A meta item: an opaque value with a version that every write bumps (1 on creation).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaItem {
    pub version: u64,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
}

/// The condition a meta write (or check) requires of the item's current state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Expect {
    /// No condition.
    Any,
    /// The item must not exist.
    Absent,
    /// The item must exist with this version.
    Version(u64),
    /// The item must exist with this exact value.
    Value(#[serde(with = "serde_bytes")] Vec<u8>),
}

/// One step of a transactional meta update.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaOp {
    Put {
        pk: String,
        #[serde(with = "serde_bytes")]
        sk: Vec<u8>,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        expect: Expect,
    },
    Delete {
        pk: String,
        #[serde(with = "serde_bytes")]
        sk: Vec<u8>,
        expect: Expect,
    },
    /// Writes nothing; the transaction fails unless the condition holds.
    Check {
        pk: String,
        #[serde(with = "serde_bytes")]
        sk: Vec<u8>,
        expect: Expect,
    },
}

impl MetaOp {
    pub fn key(&self) -> (&str, &[u8]) {
        match self {
            MetaOp::Put { pk, sk, .. } | MetaOp::Delete { pk, sk, .. } | MetaOp::Check { pk, sk, .. } => (pk, sk),
        }
    }

    pub fn expect(&self) -> &Expect {
        match self {
            MetaOp::Put { expect, .. } | MetaOp::Delete { expect, .. } | MetaOp::Check { expect, .. } => expect,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum StoreError {
    /// `append` found its slot already written (by a fence or another writer).
    #[error("log slot {range}/{seq} is already taken")]
    SlotTaken { range: RangeId, seq: Seq },
    /// `append_atomic` found these slots taken and wrote nothing.
    #[error("log slots already taken: {slots:?}; nothing was written")]
    SlotsTaken { slots: Vec<(RangeId, Seq)> },
    /// A meta condition did not hold; `op_index` is the failing step of a transaction.
    #[error("meta condition failed{}: {detail}", .op_index.map(|i| format!(" at step {i}")).unwrap_or_default())]
    ConditionFailed { op_index: Option<usize>, detail: String },
    /// `put_if_absent` found the blob already there.
    #[error("blob {name} already exists")]
    AlreadyExists { name: String },
    #[error("{what} is too large: {size}, limit {max}")]
    TooLarge { what: String, size: u64, max: u64 },
    #[error("invalid storage request: {0}")]
    Invalid(String),
    /// The backend could not be reached or refused for a transient reason; retry later.
    /// The write may or may not have happened (callers read back when it matters).
    #[error("storage backend unavailable: {0}")]
    Unavailable(String),
    /// Stored data could not be decoded.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

impl StoreError {
    pub fn too_large(what: impl Into<String>, size: usize, max: usize) -> StoreError {
        StoreError::TooLarge { what: what.into(), size: size as u64, max: max as u64 }
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Error {
        match e {
            StoreError::SlotTaken { .. } | StoreError::SlotsTaken { .. } | StoreError::ConditionFailed { .. } => {
                Error::conflict(e.to_string())
            }
            StoreError::AlreadyExists { .. } => Error::conflict(e.to_string()),
            StoreError::TooLarge { what, size, max } => Error::TooLarge { what, size, max },
            StoreError::Invalid(m) => Error::invalid(m),
            StoreError::Unavailable(m) => Error::unavailable(m),
            StoreError::Corrupt(m) => Error::internal(format!("stored data is corrupt: {m}")),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// An append under way (`CommitLog::start_append`).
pub type AppendFuture = std::pin::Pin<Box<dyn std::future::Future<Output = StoreResult<()>> + Send + 'static>>;

/// Per-range ordered log entries keyed `(range, seq)`; every slot is written at most once.
#[async_trait]
pub trait CommitLog: Send + Sync + 'static {
    /// Writes `entry` at `(range, seq)` if that slot is empty, else `SlotTaken`.
    /// Returns once the entry is durable.
    async fn append(&self, range: RangeId, seq: Seq, entry: &LogEntry) -> StoreResult<()>;

    /// [`CommitLog::append`], started now: a store that queues appends (the store process's
    /// client) has queued this one before it returns, so that a caller that goes on with
    /// other work on its thread (a range applying its last batch) does not hold the append
    /// back. The default starts the append when the future is first polled.
    fn start_append(self: Arc<Self>, range: RangeId, seq: Seq, entry: LogEntry) -> AppendFuture {
        Box::pin(async move { self.append(range, seq, &entry).await })
    }

    /// Writes all slots or none (1 to `APPEND_ATOMIC_SLOTS_MAX` slots, at most
    /// `APPEND_ATOMIC_BYTES_MAX` payload bytes, no slot twice). `SlotsTaken` lists the slots
    /// that were already written.
    async fn append_atomic(&self, slots: &[AppendSlot]) -> StoreResult<()>;

    /// Appends each slot on its own, as [`CommitLog::append`] would (a taken or invalid slot
    /// fails alone; the others are written), and returns one outcome per slot, in order.
    /// 1 to `STORE_APPEND_EACH_SLOTS_MAX` slots of at most `STORE_APPEND_EACH_BYTES_MAX`
    /// payload bytes. The store process serves it (`AppendEach`) so that the appends of many
    /// ranges cost one request and one answer; this default makes the appends one by one.
    async fn append_each(&self, slots: Vec<AppendSlot>) -> StoreResult<Vec<StoreResult<()>>> {
        validate::append_each(&slots)?;
        let mut outcomes = Vec::with_capacity(slots.len());
        for slot in &slots {
            outcomes.push(self.append(slot.range, slot.seq, &slot.entry).await);
        }
        Ok(outcomes)
    }

    /// The highest written seq of the range, `None` for a log never written.
    /// Truncation never removes the head entry, so the head never goes back.
    async fn head(&self, range: RangeId) -> StoreResult<Option<Seq>>;

    /// Entries with seq >= `from`, ascending: at most `limit` (capped at
    /// `LOG_READ_ENTRIES_MAX`) and about `LOG_READ_BYTES_MAX` bytes, at least one entry if any.
    async fn read(&self, range: RangeId, from: Seq, limit: usize) -> StoreResult<Vec<(Seq, LogEntry)>>;

    /// Removes the entries with seq < `upto` (they are covered by a checkpoint at `upto` or
    /// later). `upto` must not be above the head, so the head entry always stays.
    async fn truncate(&self, range: RangeId, upto: Seq) -> StoreResult<()>;
}

/// Small items under `(partition, sort key)` with conditional and transactional updates.
#[async_trait]
pub trait MetaStore: Send + Sync + 'static {
    async fn get(&self, pk: &str, sk: &[u8]) -> StoreResult<Option<MetaItem>>;

    /// Writes the item if `expect` holds and returns its new version.
    async fn put(&self, pk: &str, sk: &[u8], value: &[u8], expect: Expect) -> StoreResult<u64>;

    /// Deletes the item if `expect` holds (deleting an absent item with `Any` succeeds).
    async fn delete(&self, pk: &str, sk: &[u8], expect: Expect) -> StoreResult<()>;

    /// Applies every op or none (1 to `META_TRANSACT_OPS_MAX` ops, each item at most once).
    async fn transact(&self, ops: &[MetaOp]) -> StoreResult<()>;

    /// Items of partition `pk` with sort key >= `from`, ascending by sort key (bytewise),
    /// at most `limit` (capped at `META_QUERY_ITEMS_MAX`).
    async fn query(&self, pk: &str, from: &[u8], limit: usize) -> StoreResult<Vec<(Vec<u8>, MetaItem)>>;
}

/// Immutable named blobs (snapshots).
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Stores the blob unless one with that name exists (`AlreadyExists`). Atomic: a reader
    /// sees the whole blob or nothing.
    async fn put_if_absent(&self, name: &str, data: Bytes) -> StoreResult<()>;

    async fn get(&self, name: &str) -> StoreResult<Option<Bytes>>;

    /// Names starting with `prefix` and after `start_after`, ascending, at most
    /// `BLOB_LIST_NAMES_MAX` (call again with the last name for more).
    async fn list(&self, prefix: &str, start_after: Option<&str>) -> StoreResult<Vec<String>>;

    /// Removes the blob; removing an absent blob succeeds.
    async fn delete(&self, name: &str) -> StoreResult<()>;
}

/// The three stores of one backend.
#[derive(Clone)]
pub struct Backend {
    pub log: Arc<dyn CommitLog>,
    pub meta: Arc<dyn MetaStore>,
    pub blobs: Arc<dyn BlobStore>,
}

impl Backend {
    /// Opens the backend the configuration selects. The local backend creates its files in
    /// `local_dir`; the AWS backend expects its tables and bucket (`ampstore init`).
    /// `admin_token` is the credential for a store process (`backend.local.server`).
    pub async fn open(cfg: &BackendConfig, local_dir: &Path, admin_token: Option<String>) -> Result<Backend, Error> {
        match cfg.kind {
            BackendKind::Local => match &cfg.local.server {
                None => Ok(local::LocalStore::open(local_dir, &cfg.local)?.backend()),
                Some(addr) => {
                    // Two clients, two pools: appends that hold every connection of the
                    // log's pool never make a heartbeat or a lease renewal wait for one.
                    let log = remote::RemoteStore::new(addr, admin_token.clone());
                    let meta = remote::RemoteStore::new(addr, admin_token);
                    wait_for_store(&log, addr).await?;
                    Ok(Backend {
                        log: Arc::new(log),
                        meta: Arc::new(meta),
                        blobs: Arc::new(local::FileBlobStore::open(&local::blob_dir(local_dir))?),
                    })
                }
            },
            BackendKind::Aws => open_aws(cfg).await,
        }
    }
}

/// How long a process waits at start for the store process (started beside it by `up` or
/// the chaos suite) to accept connections.
const STORE_START_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

async fn wait_for_store(remote: &remote::RemoteStore, addr: &str) -> Result<(), Error> {
    let started = std::time::Instant::now();
    loop {
        match remote.check().await {
            Ok(()) => return Ok(()),
            // A refused hello (wrong token or version) does not get better by waiting.
            Err(StoreError::Invalid(why)) => return Err(Error::invalid(why)),
            Err(e) if started.elapsed() >= STORE_START_WAIT => {
                return Err(Error::unavailable(format!(
                    "the store process at {addr} (backend.local.server) did not answer within {} s: {e}",
                    STORE_START_WAIT.as_secs()
                )));
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    }
}

#[cfg(feature = "aws")]
async fn open_aws(cfg: &BackendConfig) -> Result<Backend, Error> {
    Ok(aws::AwsStore::connect(&cfg.aws).await?.backend())
}

#[cfg(not(feature = "aws"))]
async fn open_aws(_cfg: &BackendConfig) -> Result<Backend, Error> {
    Err(Error::invalid("this build has no AWS backend: rebuild with `--features aws`"))
}
