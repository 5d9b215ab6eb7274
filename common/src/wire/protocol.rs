//! The request/response envelope spoken between clients, nodes and masters.
//!
//! A connection starts with one [`Hello`] frame from the caller and one [`HelloReply`] frame
//! from the server. After that the caller sends [`Request`] frames and the server sends
//! [`Response`] frames carrying the same [`RequestId`]; responses may come back in any order,
//! so a caller can pipeline. `docs/protocol.md` describes the bytes.

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::ids::{Epoch, NodeId, RangeId, RequestId, Seq, Term};
use crate::key::{Key, KeyRange, Version};
use crate::limits::AUTH_TOKEN_BYTES_MAX;
use crate::lists::PushId;
use crate::meta::Checkpoint;
use crate::queue::{Task, TaskRef};
use crate::txn::{TxnCheck, TxnDecision, TxnPart, TxnWrite};

/// The protocol version this build speaks. A server answers a hello with another version
/// with `Invalid` and closes the connection.
pub const PROTOCOL_VERSION: u32 = 1;

pub use crate::member::Role;

/// First frame on every connection, from the caller.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol_version: u32,
    pub role: Role,
    /// Free text for logs (a program name).
    pub client_name: String,
    /// The credential for `role`: the cluster token for `Client`, the admin token for every
    /// other role (when the server has tokens configured).
    pub auth_token: Option<String>,
}

impl Hello {
    pub fn validate(&self) -> Result<(), Error> {
        if self.protocol_version != PROTOCOL_VERSION {
            return Err(Error::invalid(format!(
                "protocol version {} is not supported (this server speaks {PROTOCOL_VERSION})",
                self.protocol_version
            )));
        }
        if self.client_name.len() > 256 {
            return Err(Error::too_large("client name", self.client_name.len(), 256));
        }
        if let Some(t) = &self.auth_token
            && t.len() > AUTH_TOKEN_BYTES_MAX
        {
            return Err(Error::too_large("auth token", t.len(), AUTH_TOKEN_BYTES_MAX));
        }
        Ok(())
    }
}

/// The server's answer to a [`Hello`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloReply {
    pub result: Result<ServerInfo, Error>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerInfo {
    pub protocol_version: u32,
    pub server_id: NodeId,
    pub role: Role,
}

/// Identifies one logical write across retries, so a node applies it once.
/// `client` is random per client instance; `n` counts its writes. Ordered (client, then
/// n) so that a range's write-id table can be an ordered map.
///
/// `floor` is not part of the identity (equality, order and hash look at `client` and `n`
/// only): it is the client's promise that it has finished with every write of its own
/// below `floor` (answered, or given up on) and will never send one of them again. A range
/// then forgets those writes' records and refuses such a write if it still arrives (a
/// duplicate delayed in the network), instead of keeping every record for the whole
/// `WRITE_ID_RETENTION_MS` (DESIGN §4, "Exactly-once writes"; `docs/architecture.md`).
/// 0, the default and what older clients send (the field is left out of the encoding
/// then), promises nothing.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct WriteId {
    pub client: u64,
    pub n: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub floor: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl WriteId {
    /// An id that promises nothing about the client's other writes.
    pub const fn new(client: u64, n: u64) -> WriteId {
        WriteId { client, n, floor: 0 }
    }
}

impl PartialEq for WriteId {
    fn eq(&self, other: &Self) -> bool {
        (self.client, self.n) == (other.client, other.n)
    }
}
impl Eq for WriteId {}
impl PartialOrd for WriteId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for WriteId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.client, self.n).cmp(&(other.client, other.n))
    }
}
impl std::hash::Hash for WriteId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (self.client, self.n).hash(state);
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub id: RequestId,
    /// How long the caller will wait, from when the server reads the frame.
    pub deadline_ms: Option<u32>,
    pub op: Op,
}

/// A [`Request`] that borrows its operation: encodes to the same bytes (the MessagePack map
/// has the same field names), so a caller that may have to send `op` again need not copy it.
#[derive(Debug, Serialize)]
pub struct RequestRef<'a> {
    pub id: RequestId,
    pub deadline_ms: Option<u32>,
    pub op: &'a Op,
}

/// The data operations. Admin and routing operations join this enum in later steps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Ping,
    Get {
        key: Key,
    },
    GetMany {
        keys: Vec<Key>,
    },
    Put {
        key: Key,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        write_id: Option<WriteId>,
    },
    /// Put only if the key's current version is `expected` (`None`: only if absent).
    PutIfVersion {
        key: Key,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        expected: Option<Version>,
        write_id: Option<WriteId>,
    },
    Delete {
        key: Key,
        write_id: Option<WriteId>,
    },
    /// Appends `element` to the list at `key` (`crate::lists`), idempotent by `push_id`:
    /// sent to the node serving the element's key. Answers `Written`.
    Push {
        key: Key,
        #[serde(with = "serde_bytes")]
        element: Vec<u8>,
        push_id: PushId,
    },
    /// Adds a task to a queue's shard (`crate::queue`), idempotent by `task_id`: sent to the
    /// node serving the task's key. Answers `Written`.
    Enqueue {
        queue: String,
        shard: u16,
        task_id: PushId,
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
    },
    /// Leases up to `max` visible tasks of one shard from `start` on, within the range that
    /// holds `start`, for `visibility_ms`. Answers `Tasks`; `resume` is where the shard goes
    /// on (in the next range, or past a full page).
    Dequeue {
        queue: String,
        shard: u16,
        start: Key,
        max: u32,
        visibility_ms: u64,
    },
    /// Deletes a delivered task if `task.lease` is still its lease. Answers `Written`;
    /// `Conflict` when the lease expired and the task was delivered again.
    TaskAck {
        queue: String,
        task: TaskRef,
    },
    /// Makes a delivered task visible again at once (same lease rule as `TaskAck`).
    TaskNack {
        queue: String,
        task: TaskRef,
    },
    /// Keeps a delivered task invisible for `visibility_ms` more from now.
    TaskExtend {
        queue: String,
        task: TaskRef,
        visibility_ms: u64,
    },
    /// Several pushes and enqueues at once (a collector's batch for one range): each is
    /// applied as if sent alone; they share log entries. Answers `Batch` with one result
    /// per operation, in order, once every one is durable or failed.
    Batch {
        ops: Vec<Op>,
    },
    /// Master: the cluster's members as its gossip sees them (clients find collectors so).
    Members,
    /// Deletes every key in `[start, end)`; `end = None` means no upper bound.
    DeleteRange {
        start: Key,
        end: Option<Key>,
        write_id: Option<WriteId>,
    },
    /// One page of keys in `[start, end)`, ascending or (with `reverse`) descending.
    Scan {
        start: Key,
        end: Option<Key>,
        limit: u32,
        reverse: bool,
    },
    /// Admin: load and serve the range whose descriptor starts at `start`. The descriptor
    /// must name this node in its current epoch, or, with `claim` (tests and tools until a
    /// master runs), the node records itself as owner first, which it does only when the
    /// range has no owner or its owner's epoch is over.
    Assign {
        range_id: RangeId,
        start: Key,
        claim: bool,
    },
    /// Admin: stop serving a range (snapshot first when it changed) and clear its owner.
    Release {
        range_id: RangeId,
    },
    /// Admin: snapshot a range now and truncate its log.
    Snapshot {
        range_id: RangeId,
    },
    /// Admin: split a range at the key that halves its data (the chaos suite's forced
    /// splits), now or as soon as what it is doing (an append, a transaction, a snapshot)
    /// is done. Answers `Pong` once the split is requested; `Invalid` when the range has no
    /// split key (one key, or one list).
    Split {
        range_id: RangeId,
    },
    /// Admin: the node's ranges and their state.
    RangeStats,
    /// Master: where the range holding `key` is served. An unserved range is assigned on the
    /// spot and the answer is `RangeLoading` until its new owner serves it.
    Locate {
        key: Key,
    },
    /// Master: the ranges covering `[start, end)` in key order (at most
    /// `LOCATE_RANGES_MAX`; ask again from the last range's end for more).
    LocateRange {
        start: Key,
        end: Option<Key>,
    },
    /// Master: move every range off `node_id` and place nothing new on it until it restarts
    /// (a new epoch), or, with `undo`, stop draining it.
    Drain {
        node_id: NodeId,
        undo: bool,
    },
    /// Master: its role, term, and view of nodes and ranges.
    MasterStatus,
    /// Node to master: the range `parent_id` (starting at `parent_start`, owned by
    /// `owner_node` in `owner_epoch`) closed its log with a split at `split_key`; both
    /// children's snapshots are stored. The master records the two children (owned by the
    /// same node) in place of the parent in one transactional update. Idempotent.
    SplitRange {
        parent_id: RangeId,
        parent_start: Key,
        split_key: Key,
        owner_node: NodeId,
        owner_epoch: Epoch,
        left_id: RangeId,
        left_checkpoint: Checkpoint,
        right_id: RangeId,
        right_checkpoint: Checkpoint,
    },
    /// Master to node: merge the adjacent ranges `left_id` and `right_id`, both served by
    /// this node, into one new range (closing both logs, storing the merged snapshot,
    /// asking the master to commit, loading the result). Answers `MergeDone`.
    Merge {
        left_id: RangeId,
        right_id: RangeId,
    },
    /// Node to master: `left_id` (at `left_start`) and `right_id` (at `right_start`), both
    /// owned by `owner_node` in `owner_epoch`, closed their logs for a merge and the merged
    /// range's snapshot is stored. The master records `merged_id` in place of both in one
    /// transactional update. Idempotent.
    CommitMerge {
        left_id: RangeId,
        left_start: Key,
        right_id: RangeId,
        right_start: Key,
        owner_node: NodeId,
        owner_epoch: Epoch,
        merged_id: RangeId,
        merged_checkpoint: Checkpoint,
    },
    /// A transaction (`crate::txn`), sent to the node that serves `parts[0]`'s range, which
    /// coordinates it; each participant holds it at most `hold_ms`. Answers `TxnCommitted`,
    /// or `Conflict` naming the key whose condition failed. With no writes at all it commits
    /// nothing and succeeds only if every check held at one moment (a consistent read).
    Txn {
        txn_id: WriteId,
        parts: Vec<TxnPart>,
        hold_ms: u64,
    },
    /// Coordinator to participant: check the conditions against the range's applied data,
    /// hold the range (no other append until resolved) and, with writes, reserve its next
    /// log slot. Answers `TxnPrepared`.
    TxnPrepare {
        txn_id: WriteId,
        range_id: RangeId,
        checks: Vec<TxnCheck>,
        writes: Vec<TxnWrite>,
        #[serde(default)]
        reads: Vec<Key>,
        hold_ms: u64,
    },
    /// Coordinator to participant: finish a prepared transaction (`seq`: the slot the
    /// participant reserved, so a participant that restarted since can still answer from its
    /// log). Answers `TxnResolved`.
    TxnResolve {
        txn_id: WriteId,
        range_id: RangeId,
        seq: Option<Seq>,
        decision: TxnDecision,
    },
    /// Writes `value` at `key`, expiring `ttl_ms` after the range's owner logs it (1 to
    /// `TTL_MS_MAX`). Answers `Written`.
    PutWithTtl {
        key: Key,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        ttl_ms: u64,
        write_id: Option<WriteId>,
    },
    /// Sets an existing key to expire `ttl_ms` from now (1 to `TTL_MS_MAX`) if `when`
    /// holds. Answers `ExpiryChanged` (false: no such key, or `when` did not hold).
    Expire {
        key: Key,
        ttl_ms: u64,
        when: ExpireWhen,
        write_id: Option<WriteId>,
    },
    /// Removes a key's expiry. Answers `ExpiryChanged` (false: no such key, or no expiry).
    Persist {
        key: Key,
        write_id: Option<WriteId>,
    },
    /// How long a key has to live. Answers `Ttl`.
    Ttl {
        key: Key,
    },
    /// Adds `by` to the signed 64-bit decimal integer at `key` (absent: 0), keeping its
    /// expiry. Answers `Counted` with the new value; `Invalid` when the value is not such an
    /// integer or the sum overflows (nothing changes).
    Incr {
        key: Key,
        by: i64,
        write_id: Option<WriteId>,
    },
}

/// When `Expire` sets the expiry (Redis's EXPIRE options).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExpireWhen {
    /// Whatever the key's expiry.
    #[default]
    Always,
    /// Only when the key has no expiry (`NX`).
    Nx,
    /// Only when the key has an expiry (`XX`).
    Xx,
    /// Only when the new expiry is later than the current one (`GT`; no expiry counts as
    /// infinitely late, so never).
    Gt,
    /// Only when the new expiry is earlier than the current one (`LT`; no expiry counts as
    /// infinitely late, so always).
    Lt,
}

/// How long a key has to live (the answer to `Ttl`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyTtl {
    /// No such key (or it expired).
    Absent,
    /// The key never expires.
    Persistent,
    /// The key expires in this many ms (at least 1).
    ExpiresInMs(u64),
}

impl KeyTtl {
    /// The time left, for a key that expires.
    pub fn remaining(&self) -> Option<std::time::Duration> {
        match self {
            KeyTtl::ExpiresInMs(ms) => Some(std::time::Duration::from_millis(*ms)),
            KeyTtl::Absent | KeyTtl::Persistent => None,
        }
    }
}

/// Every operation's name (`Op::name`), by `Op::index`.
pub const OP_NAMES: [&str; 36] = [
    "ping",
    "get",
    "push",
    "batch",
    "members",
    "enqueue",
    "dequeue",
    "task_ack",
    "task_nack",
    "task_extend",
    "get_many",
    "put",
    "put_if_version",
    "delete",
    "delete_range",
    "scan",
    "assign",
    "release",
    "snapshot",
    "split",
    "range_stats",
    "locate",
    "locate_range",
    "drain",
    "master_status",
    "split_range",
    "merge",
    "commit_merge",
    "txn",
    "txn_prepare",
    "txn_resolve",
    "put_with_ttl",
    "expire",
    "persist",
    "ttl",
    "incr",
];

impl Op {
    /// Whether a connection whose hello proved `role` may send this operation (DESIGN §4,
    /// "Authorization"). Data operations are open to every role; the internal and admin
    /// ones only to the processes that send them, so the cluster token an app server holds
    /// can never move, release, split or merge ranges, or take part in a transaction's
    /// two-phase protocol. Refusals are `Unauthorized`. The server checks it for every
    /// request before acting.
    pub fn allowed_for(&self, role: Role) -> Result<(), Error> {
        let allowed: &[Role] = match self {
            Op::Ping
            | Op::Get { .. }
            | Op::GetMany { .. }
            | Op::Put { .. }
            | Op::PutIfVersion { .. }
            | Op::Delete { .. }
            | Op::DeleteRange { .. }
            | Op::Scan { .. }
            | Op::Push { .. }
            | Op::Enqueue { .. }
            | Op::Dequeue { .. }
            | Op::TaskAck { .. }
            | Op::TaskNack { .. }
            | Op::TaskExtend { .. }
            | Op::Txn { .. }
            | Op::PutWithTtl { .. }
            | Op::Expire { .. }
            | Op::Persist { .. }
            | Op::Ttl { .. }
            | Op::Incr { .. }
            | Op::Locate { .. }
            | Op::LocateRange { .. }
            | Op::MasterStatus
            | Op::Members => return Ok(()),
            // A batch's operations skip the per-operation path (one log entry for many).
            Op::Batch { .. } => &[Role::Collector],
            // Placement is the active master's alone: anyone else would bypass its term.
            Op::Assign { .. } | Op::Release { .. } | Op::Merge { .. } => &[Role::Master],
            Op::Snapshot { .. } | Op::Split { .. } | Op::RangeStats => &[Role::Master, Role::Admin],
            Op::Drain { .. } => &[Role::Admin],
            // Only the range's owner commits its split or merge, and only a coordinating
            // node prepares and resolves (a forged commit replaces a live owner's range).
            Op::SplitRange { .. } | Op::CommitMerge { .. } | Op::TxnPrepare { .. } | Op::TxnResolve { .. } => {
                &[Role::Node]
            }
        };
        if allowed.contains(&role) {
            return Ok(());
        }
        let names: Vec<&str> = allowed.iter().map(|r| r.as_str()).collect();
        Err(Error::Unauthorized { reason: format!("{} is for role {}, not {role}", self.name(), names.join(" or ")) })
    }

    /// The operation's name in snake case (metrics labels, logs).
    pub fn name(&self) -> &'static str {
        // `index` is below `OP_NAMES.len()` by construction (both list every variant).
        OP_NAMES[self.index()]
    }

    /// The operation's position in [`OP_NAMES`] (tables indexed by operation).
    pub fn index(&self) -> usize {
        match self {
            Op::Ping => 0,
            Op::Get { .. } => 1,
            Op::Push { .. } => 2,
            Op::Batch { .. } => 3,
            Op::Members => 4,
            Op::Enqueue { .. } => 5,
            Op::Dequeue { .. } => 6,
            Op::TaskAck { .. } => 7,
            Op::TaskNack { .. } => 8,
            Op::TaskExtend { .. } => 9,
            Op::GetMany { .. } => 10,
            Op::Put { .. } => 11,
            Op::PutIfVersion { .. } => 12,
            Op::Delete { .. } => 13,
            Op::DeleteRange { .. } => 14,
            Op::Scan { .. } => 15,
            Op::Assign { .. } => 16,
            Op::Release { .. } => 17,
            Op::Snapshot { .. } => 18,
            Op::Split { .. } => 19,
            Op::RangeStats => 20,
            Op::Locate { .. } => 21,
            Op::LocateRange { .. } => 22,
            Op::Drain { .. } => 23,
            Op::MasterStatus => 24,
            Op::SplitRange { .. } => 25,
            Op::Merge { .. } => 26,
            Op::CommitMerge { .. } => 27,
            Op::Txn { .. } => 28,
            Op::TxnPrepare { .. } => 29,
            Op::TxnResolve { .. } => 30,
            Op::PutWithTtl { .. } => 31,
            Op::Expire { .. } => 32,
            Op::Persist { .. } => 33,
            Op::Ttl { .. } => 34,
            Op::Incr { .. } => 35,
        }
    }

    /// True for operations that change data.
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            Op::Put { .. }
                | Op::PutIfVersion { .. }
                | Op::Delete { .. }
                | Op::DeleteRange { .. }
                | Op::Txn { .. }
                | Op::Push { .. }
                | Op::Batch { .. }
                | Op::Enqueue { .. }
                | Op::Dequeue { .. }
                | Op::TaskAck { .. }
                | Op::TaskNack { .. }
                | Op::TaskExtend { .. }
        )
    }
}

pub use crate::value::validate_value;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub id: RequestId,
    pub result: Result<Reply, Error>,
}

/// A value with the version of the write that set it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versioned {
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    pub version: Version,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanItem {
    pub key: Key,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    pub version: Version,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    Pong,
    /// Answer to `Get`: `None` when the key is absent.
    Value(Option<Versioned>),
    /// Answer to `GetMany`, in the order of the request's keys.
    Values(Vec<Option<Versioned>>),
    /// Answer to `Put` and `PutIfVersion`.
    Written {
        version: Version,
    },
    /// Answer to `Delete` and `DeleteRange`: how many keys existed and were removed.
    Deleted {
        removed: u64,
        version: Version,
    },
    /// Answer to `Scan`: one page, which never crosses the end of the range that served it.
    /// `resume` is where to continue, `None` when `[start, end)` is exhausted. Forward it is
    /// the next page's `start` (inclusive); reverse it is the next page's `end` (exclusive).
    ScanPage {
        items: Vec<ScanItem>,
        resume: Option<Key>,
    },
    Assigned {
        range_id: RangeId,
        serving_from: Seq,
    },
    Released {
        range_id: RangeId,
    },
    Snapshotted {
        range_id: RangeId,
        seq: Seq,
    },
    Stats(NodeStats),
    /// Answer to `Locate`.
    Location(RangeLocation),
    /// Answer to `LocateRange`, in key order.
    Locations(Vec<RangeLocation>),
    /// Answer to `Drain`: how many ranges the node still holds.
    Draining {
        node_id: NodeId,
        ranges_left: u64,
    },
    /// Answer to `MasterStatus`.
    Master(MasterStatus),
    /// Answer to `SplitRange`: the children are recorded.
    SplitDone {
        left_id: RangeId,
        right_id: RangeId,
    },
    /// Answer to `Merge` and `CommitMerge`: the merged range is recorded (and, for `Merge`,
    /// serves on the node).
    MergeDone {
        merged_id: RangeId,
    },
    /// Answer to `Txn`: committed; the version of each write, part by part, in order.
    TxnCommitted {
        versions: Vec<Vec<Version>>,
        /// The values of each part's `reads`, as of the moment every part was held.
        #[serde(default)]
        values: Vec<Vec<Option<Versioned>>>,
    },
    /// Answer to `TxnPrepare`: held; with writes, the reserved slot, and the writer and
    /// epoch its entry must carry.
    TxnPrepared {
        seq: Option<Seq>,
        writer: NodeId,
        epoch: Epoch,
        /// The values of the prepare's `reads`, read while held.
        #[serde(default)]
        values: Vec<Option<Versioned>>,
        /// This participant committed this transaction already (a retry of it): nothing is
        /// held, `seq` is where its entry went. Absent from the encoding when false.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        committed: bool,
    },
    /// Answer to `Batch`: one result per operation, in order.
    Batch {
        results: Vec<Result<Reply, Error>>,
    },
    /// Answer to `Members`.
    Members(Vec<crate::member::MemberView>),
    /// Answer to `Dequeue`: the tasks leased, and where the shard goes on.
    Tasks {
        tasks: Vec<Task>,
        resume: Option<Key>,
    },
    /// Answer to `TxnResolve`: whether the transaction's entry is in the range's log.
    TxnResolved {
        committed: bool,
    },
    /// Answer to `Expire` and `Persist`: whether the key's expiry changed.
    ExpiryChanged {
        changed: bool,
    },
    /// Answer to `Incr`: the counter's new value and the write's version.
    Counted {
        value: i64,
        version: Version,
    },
    /// Answer to `Ttl`.
    Ttl(KeyTtl),
}

impl Reply {
    /// The reply's name in snake case (errors, logs).
    pub fn name(&self) -> &'static str {
        match self {
            Reply::Pong => "pong",
            Reply::Value(_) => "value",
            Reply::Values(_) => "values",
            Reply::Written { .. } => "written",
            Reply::Deleted { .. } => "deleted",
            Reply::ScanPage { .. } => "scan_page",
            Reply::Assigned { .. } => "assigned",
            Reply::Released { .. } => "released",
            Reply::Snapshotted { .. } => "snapshotted",
            Reply::Stats(_) => "stats",
            Reply::Location(_) => "location",
            Reply::Locations(_) => "locations",
            Reply::Draining { .. } => "draining",
            Reply::Master(_) => "master",
            Reply::SplitDone { .. } => "split_done",
            Reply::MergeDone { .. } => "merge_done",
            Reply::TxnCommitted { .. } => "txn_committed",
            Reply::TxnPrepared { .. } => "txn_prepared",
            Reply::Batch { .. } => "batch",
            Reply::Members(_) => "members",
            Reply::Tasks { .. } => "tasks",
            Reply::TxnResolved { .. } => "txn_resolved",
            Reply::ExpiryChanged { .. } => "expiry_changed",
            Reply::Counted { .. } => "counted",
            Reply::Ttl(_) => "ttl",
        }
    }
}

/// Where one range is served, as the active master knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeLocation {
    pub range_id: RangeId,
    pub start: Key,
    /// `None`: no upper bound.
    pub end: Option<Key>,
    pub node_id: NodeId,
    pub node_addr: String,
    /// How long the owner's liveness lease has left as the master sees it (its last
    /// heartbeat plus the liveness duration): a cached route is good at least that long.
    pub lease_ms_left: u64,
}

impl RangeLocation {
    pub fn contains(&self, key: &Key) -> bool {
        key >= &self.start && self.end.as_ref().is_none_or(|e| key < e)
    }
}

/// A master's view of the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterStatus {
    pub master_id: NodeId,
    /// The term this master is active in, `None` when it is a standby.
    pub active_term: Option<Term>,
    /// The lease holder as last read from meta.
    pub lease_holder: Option<NodeId>,
    pub lease_holder_rpc: Option<String>,
    pub nodes: Vec<NodeView>,
    pub ranges: Vec<RangeView>,
    /// Routing writes refused because the term moved on (this master was deposed).
    pub writes_refused_on_term: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    pub node_id: NodeId,
    pub rpc_addr: String,
    pub epoch: Epoch,
    pub state: NodeState,
    pub draining: bool,
    pub ranges: u64,
    pub data_bytes: u64,
    pub resident_bytes: u64,
    pub memory_budget_bytes: u64,
    pub ops_per_sec: u64,
    pub lease_ms_left: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeView {
    pub range_id: RangeId,
    pub range: KeyRange,
    pub generation: u64,
    pub owner: Option<NodeId>,
    pub owner_epoch: Option<Epoch>,
    pub data_bytes: u64,
    /// Log bytes since the range's last snapshot (what a load would replay).
    #[serde(default)]
    pub log_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStats {
    pub node_id: NodeId,
    pub epoch: Epoch,
    /// Milliseconds of liveness left by the node's own clock (0: not serving anything).
    pub liveness_ms_left: u64,
    pub ranges: Vec<RangeStats>,
    /// Resident memory of the node process (RSS).
    #[serde(default)]
    pub resident_bytes: u64,
    /// Requests served since the node started (for ops/s).
    #[serde(default)]
    pub ops_total: u64,
    /// The node releases idle ranges to keep its data under this (0: no budget).
    #[serde(default)]
    pub memory_budget_bytes: u64,
    /// The node's split size (`node.split_bytes`); the master merges neighbours whose
    /// combined data is under a quarter of it (0: splits and merges off).
    #[serde(default)]
    pub split_bytes: u64,
}

/// Defines a state enum that travels as its lowercase name, a plain string on the wire and
/// in JSON, exactly as when it was a `String`; a name this build does not know reads as
/// `Unknown` (a newer process may report a new state), never as a decode error.
macro_rules! wire_state {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal,)* }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(from = "String", into = "&'static str")]
        pub enum $name {
            $($(#[$vdoc])* $variant,)*
            /// A state this build does not know.
            Unknown,
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                    $name::Unknown => "unknown",
                }
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> $name {
                match s.as_str() {
                    $($text => $name::$variant,)*
                    _ => $name::Unknown,
                }
            }
        }

        impl From<$name> for &'static str {
            fn from(s: $name) -> &'static str {
                s.as_str()
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

wire_state! {
    /// What a node is doing with a range (`RangeStats::state`).
    RangeState {
        /// Reading its snapshot and log.
        Loading => "loading",
        Serving => "serving",
        /// Snapshotting before it lets go.
        Releasing => "releasing",
        /// Closing its log into a merge.
        Merging => "merging",
        /// Not served, with the reason in `RangeStats::error`.
        Failed => "failed",
        /// Let go while the stats were gathered.
        Released => "released",
    }
}

wire_state! {
    /// What the master knows of a node (`NodeView::state`).
    NodeState {
        Live => "live",
        /// Its epoch ended (or it is silent): waiting for it to register again.
        Dead => "dead",
        /// A live record, but the master cannot reach it (no recent stats).
        Unreachable => "unreachable",
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeStats {
    pub range_id: RangeId,
    pub range: KeyRange,
    pub state: RangeState,
    pub keys: u64,
    /// Bytes of keys and values held.
    pub data_bytes: u64,
    pub applied_seq: Seq,
    pub checkpoint_seq: Seq,
    pub log_bytes_since_checkpoint: u64,
    /// Why the range is not served, when it failed to load.
    pub error: Option<String>,
    /// Milliseconds since a client last read or wrote the range.
    #[serde(default)]
    pub idle_ms: u64,
    /// Bytes of the range's remembered write ids (as counted against
    /// `RANGE_WRITE_IDS_BYTES_MAX`): right after a load about as much as the data, so a
    /// node's memory budget counts them with `data_bytes`.
    #[serde(default)]
    pub write_id_bytes: u64,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::limits::{GET_MANY_KEYS_MAX, SCAN_PAGE_KEYS_MAX, VALUE_BYTES_MAX};

    #[test]
    fn a_request_that_borrows_its_op_encodes_to_the_same_bytes() {
        let op = Op::Put { key: Key::from("k"), value: vec![7; 40], write_id: Some(WriteId::new(3, 9)) };
        let owned = Request { id: RequestId(5), deadline_ms: Some(250), op: op.clone() };
        let borrowed = RequestRef { id: RequestId(5), deadline_ms: Some(250), op: &op };
        let (mut a, mut b) = (Vec::new(), Vec::new());
        crate::frame::encode_frame(&owned, &mut a).unwrap();
        crate::frame::encode_frame(&borrowed, &mut b).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn operation_names_are_distinct_and_each_index_has_its_name() {
        let names: std::collections::BTreeSet<_> = OP_NAMES.iter().collect();
        assert_eq!(names.len(), OP_NAMES.len());
        assert_eq!(Op::Ping.name(), "ping");
        assert_eq!(Op::RangeStats.name(), "range_stats");
        assert_eq!(Op::Get { key: Key::from("k") }.index(), 1);
        assert_eq!(OP_NAMES[Op::MasterStatus.index()], "master_status");
    }

    #[test]
    fn states_travel_as_the_strings_they_were_and_unknown_names_are_not_errors() {
        for &state in RangeState::ALL {
            let as_enum = rmp_serde::to_vec_named(&state).unwrap();
            let as_string = rmp_serde::to_vec_named(state.as_str()).unwrap();
            assert_eq!(as_enum, as_string, "{state}");
            assert_eq!(rmp_serde::from_slice::<RangeState>(&as_string).unwrap(), state);
        }
        for &state in NodeState::ALL {
            let json = serde_json::to_string(&state).unwrap();
            assert_eq!(json, format!("\"{}\"", state.as_str()));
            assert_eq!(serde_json::from_str::<NodeState>(&json).unwrap(), state);
        }
        let newer = rmp_serde::to_vec_named("rebalancing").unwrap();
        assert_eq!(rmp_serde::from_slice::<RangeState>(&newer).unwrap(), RangeState::Unknown);
        assert_eq!(serde_json::from_str::<NodeState>("\"suspect\"").unwrap(), NodeState::Unknown);
    }
    use crate::ErrorCode;
    use crate::limits::KEY_BYTES_MAX;

    #[test]
    fn envelope_round_trips() {
        let reqs = vec![
            Op::Ping,
            Op::Get { key: Key::from("a") },
            Op::GetMany { keys: vec![Key::from("a"), Key::from("b")] },
            Op::PutIfVersion {
                key: Key::from("a"),
                value: b"v".to_vec(),
                expected: Some(Version { seq: Seq(3), index: 1 }),
                write_id: Some(WriteId::new(1, 2)),
            },
            Op::Delete { key: Key::from("a"), write_id: None },
            Op::DeleteRange { start: Key::from("a"), end: None, write_id: None },
            Op::Scan { start: Key::from(""), end: Some(Key::from("z")), limit: 10, reverse: true },
        ];
        for op in reqs {
            let r = Request { id: RequestId(1), deadline_ms: None, op };
            let bytes = rmp_serde::to_vec_named(&r).unwrap();
            assert_eq!(rmp_serde::from_slice::<Request>(&bytes).unwrap(), r);
        }
        let resp = Response {
            id: RequestId(9),
            result: Ok(Reply::ScanPage {
                items: vec![ScanItem {
                    key: Key::from("k"),
                    value: vec![0; 3],
                    version: Version { seq: Seq(1), index: 0 },
                }],
                resume: Some(Key::from("k")),
            }),
        };
        let bytes = rmp_serde::to_vec_named(&resp).unwrap();
        assert_eq!(rmp_serde::from_slice::<Response>(&bytes).unwrap(), resp);
        let err = Response { id: RequestId(9), result: Err(Error::Fenced) };
        let bytes = rmp_serde::to_vec_named(&err).unwrap();
        assert_eq!(rmp_serde::from_slice::<Response>(&bytes).unwrap(), err);
    }

    #[test]
    fn values_are_msgpack_bin() {
        let op = Op::Put { key: Key::from("k"), value: vec![7; 3], write_id: None };
        let bytes = rmp_serde::to_vec_named(&op).unwrap();
        // bin8 of length 3 followed by the bytes must appear verbatim.
        assert!(bytes.windows(5).any(|w| w == [0xc4, 3, 7, 7, 7]));
    }

    #[test]
    fn limits_at_the_boundary() {
        let key_ok = Key::new(vec![b'k'; KEY_BYTES_MAX]);
        let key_big = Key::new(vec![b'k'; KEY_BYTES_MAX + 1]);
        let put = |key: Key, len: usize| Op::Put { key, value: vec![0; len], write_id: None };
        assert!(put(key_ok.clone(), VALUE_BYTES_MAX).validate().is_ok());
        assert_eq!(put(key_ok.clone(), VALUE_BYTES_MAX + 1).validate().unwrap_err().code(), ErrorCode::TooLarge);
        assert_eq!(put(key_big.clone(), 1).validate().unwrap_err().code(), ErrorCode::TooLarge);
        assert_eq!(put(Key::from(""), 1).validate().unwrap_err().code(), ErrorCode::Invalid);

        let many = |n: usize| Op::GetMany { keys: vec![Key::from("a"); n] };
        assert!(many(GET_MANY_KEYS_MAX).validate().is_ok());
        assert_eq!(many(GET_MANY_KEYS_MAX + 1).validate().unwrap_err().code(), ErrorCode::TooLarge);

        let scan = |limit: u32| Op::Scan { start: Key::from("a"), end: None, limit, reverse: false };
        assert!(scan(SCAN_PAGE_KEYS_MAX as u32).validate().is_ok());
        assert!(scan(SCAN_PAGE_KEYS_MAX as u32 + 1).validate().is_err());
        assert!(scan(0).validate().is_err());
        let inverted = Op::Scan { start: Key::from("b"), end: Some(Key::from("a")), limit: 1, reverse: false };
        assert!(inverted.validate().is_err());
    }

    /// One operation of every kind, for tables over all of them.
    pub(crate) fn one_of_each() -> Vec<Op> {
        use crate::meta::Checkpoint;
        use crate::queue::TaskRef;
        let k = || Key::from("k");
        let id = WriteId::new(1, 1);
        let cp = || Checkpoint { seq: Seq(0), blob: "b".into(), merkle_root: vec![] };
        let node = || NodeId::new("n1").unwrap();
        let task = TaskRef { shard: 0, id: PushId::default(), lease: 1 };
        vec![
            Op::Ping,
            Op::Get { key: k() },
            Op::GetMany { keys: vec![k()] },
            Op::Put { key: k(), value: vec![], write_id: None },
            Op::PutIfVersion { key: k(), value: vec![], expected: None, write_id: None },
            Op::Delete { key: k(), write_id: None },
            Op::Push { key: k(), element: vec![], push_id: PushId::default() },
            Op::Enqueue { queue: "q".into(), shard: 0, task_id: PushId::default(), payload: vec![] },
            Op::Dequeue { queue: "q".into(), shard: 0, start: k(), max: 1, visibility_ms: 1000 },
            Op::TaskAck { queue: "q".into(), task },
            Op::TaskNack { queue: "q".into(), task },
            Op::TaskExtend { queue: "q".into(), task, visibility_ms: 1000 },
            Op::Batch { ops: vec![] },
            Op::Members,
            Op::DeleteRange { start: k(), end: Some(Key::from("l")), write_id: None },
            Op::Scan { start: k(), end: None, limit: 1, reverse: false },
            Op::Assign { range_id: RangeId(1), start: Key::from(""), claim: true },
            Op::Release { range_id: RangeId(1) },
            Op::Snapshot { range_id: RangeId(1) },
            Op::Split { range_id: RangeId(1) },
            Op::RangeStats,
            Op::Locate { key: k() },
            Op::LocateRange { start: k(), end: None },
            Op::Drain { node_id: node(), undo: false },
            Op::MasterStatus,
            Op::SplitRange {
                parent_id: RangeId(1),
                parent_start: Key::from(""),
                split_key: k(),
                owner_node: node(),
                owner_epoch: Epoch(1),
                left_id: RangeId(2),
                left_checkpoint: cp(),
                right_id: RangeId(3),
                right_checkpoint: cp(),
            },
            Op::Merge { left_id: RangeId(1), right_id: RangeId(2) },
            Op::PutWithTtl { key: k(), value: b"v".to_vec(), ttl_ms: 1000, write_id: None },
            Op::Expire { key: k(), ttl_ms: 1000, when: ExpireWhen::Gt, write_id: None },
            Op::Persist { key: k(), write_id: None },
            Op::Ttl { key: k() },
            Op::Incr { key: k(), by: -3, write_id: None },
            Op::CommitMerge {
                left_id: RangeId(1),
                left_start: Key::from(""),
                right_id: RangeId(2),
                right_start: k(),
                owner_node: node(),
                owner_epoch: Epoch(1),
                merged_id: RangeId(3),
                merged_checkpoint: cp(),
            },
            Op::Txn { txn_id: id, parts: vec![], hold_ms: 1000 },
            Op::TxnPrepare {
                txn_id: id,
                range_id: RangeId(1),
                checks: vec![],
                writes: vec![],
                reads: vec![],
                hold_ms: 1,
            },
            Op::TxnResolve { txn_id: id, range_id: RangeId(1), seq: None, decision: TxnDecision::Resolve },
        ]
    }

    /// DESIGN §4: which role may send which operation. Every operation is listed, so a new
    /// one fails here until it is placed.
    #[test]
    fn operations_are_authorized_by_role() {
        use Role::*;
        let all = [Client, Master, Node, Collector, Admin];
        let table: &[(&str, &[Role])] = &[
            ("ping", &all),
            ("get", &all),
            ("get_many", &all),
            ("put", &all),
            ("put_if_version", &all),
            ("delete", &all),
            ("put_with_ttl", &all),
            ("expire", &all),
            ("persist", &all),
            ("ttl", &all),
            ("incr", &all),
            ("push", &all),
            ("enqueue", &all),
            ("dequeue", &all),
            ("task_ack", &all),
            ("task_nack", &all),
            ("task_extend", &all),
            ("batch", &[Collector]),
            ("members", &all),
            ("delete_range", &all),
            ("scan", &all),
            ("assign", &[Master]),
            ("release", &[Master]),
            ("snapshot", &[Master, Admin]),
            ("split", &[Master, Admin]),
            ("range_stats", &[Master, Admin]),
            ("locate", &all),
            ("locate_range", &all),
            ("drain", &[Admin]),
            ("master_status", &all),
            ("split_range", &[Node]),
            ("merge", &[Master]),
            ("commit_merge", &[Node]),
            ("txn", &all),
            ("txn_prepare", &[Node]),
            ("txn_resolve", &[Node]),
        ];
        let ops = one_of_each();
        assert_eq!(ops.len(), table.len(), "every operation has a row");
        for op in &ops {
            let (_, allowed) = table.iter().find(|(name, _)| *name == op.name()).expect("a row for every operation");
            for role in all {
                let got = op.allowed_for(role);
                if allowed.contains(&role) {
                    assert!(got.is_ok(), "{} from {role}: {got:?}", op.name());
                } else {
                    let err = got.expect_err(&format!("{} from {role} must be refused", op.name()));
                    assert_eq!(err.code(), ErrorCode::Unauthorized, "{} from {role}", op.name());
                    assert!(err.to_string().contains(op.name()), "{err}");
                }
            }
        }
    }

    #[test]
    fn roles_are_lowercase_on_the_wire() {
        for role in [Role::Client, Role::Master, Role::Node, Role::Collector, Role::Admin] {
            let bytes = rmp_serde::to_vec_named(&role).unwrap();
            assert_eq!(rmp_serde::from_slice::<String>(&bytes).unwrap(), role.as_str());
            assert_eq!(rmp_serde::from_slice::<Role>(&bytes).unwrap(), role);
        }
        assert!(!Role::Client.needs_admin_token());
        assert!(Role::Admin.needs_admin_token() && Role::Node.needs_admin_token());
    }

    /// A6: no user write reaches the reserved `ff ff` namespace (lists and queues change only
    /// through their own operations).
    #[test]
    fn user_writes_never_touch_the_reserved_namespace() {
        use crate::txn::{TxnCheck, TxnCondition, TxnPart, TxnWrite};
        let reserved = Key::new(vec![0xff, 0xff, 1, b'q']);
        let id = WriteId::new(1, 1);
        let txn_part = |checks: Vec<TxnCheck>, writes: Vec<TxnWrite>| Op::Txn {
            txn_id: id,
            parts: vec![TxnPart {
                range_id: RangeId(1),
                node_addr: "127.0.0.1:1".into(),
                checks,
                writes,
                reads: vec![],
            }],
            hold_ms: 1000,
        };
        let refused = [
            Op::Put { key: reserved.clone(), value: vec![1], write_id: None },
            Op::PutIfVersion { key: reserved.clone(), value: vec![1], expected: None, write_id: None },
            Op::Delete { key: reserved.clone(), write_id: None },
            Op::DeleteRange { start: Key::user_end(), end: None, write_id: None },
            Op::DeleteRange { start: reserved.clone(), end: Some(Key::new(vec![0xff, 0xff, 2])), write_id: None },
            Op::DeleteRange { start: Key::from("a"), end: None, write_id: None },
            Op::DeleteRange { start: Key::from("a"), end: Some(Key::new(vec![0xff, 0xff, 0])), write_id: None },
            Op::DeleteRange { start: Key::from(""), end: None, write_id: None },
            txn_part(vec![], vec![TxnWrite::Put { key: reserved.clone(), value: vec![1] }]),
            txn_part(vec![], vec![TxnWrite::Delete { key: reserved.clone() }]),
            txn_part(vec![TxnCheck { key: reserved.clone(), condition: TxnCondition::Absent }], vec![]),
        ];
        for op in refused {
            let err = op.validate().expect_err(&format!("{op:?} must be refused"));
            assert_eq!(err.code(), ErrorCode::Invalid, "{op:?}");
            assert!(err.to_string().contains("reserved"), "names the reserved namespace: {err}");
        }
        // What the product client sends: every delete clipped at `ff ff`.
        let allowed = [
            Op::DeleteRange { start: Key::from(""), end: Some(Key::user_end()), write_id: None },
            Op::DeleteRange { start: Key::from("a"), end: Some(Key::from("b")), write_id: None },
            Op::DeleteRange { start: Key::new(vec![0xff, 0xfe]), end: Some(Key::user_end()), write_id: None },
        ];
        for op in allowed {
            assert!(op.validate().is_ok(), "{op:?}");
        }
    }

    #[test]
    fn hello_checks_version_and_token() {
        let mut h =
            Hello { protocol_version: PROTOCOL_VERSION, role: Role::Client, client_name: "t".into(), auth_token: None };
        assert!(h.validate().is_ok());
        h.auth_token = Some("x".repeat(AUTH_TOKEN_BYTES_MAX));
        assert!(h.validate().is_ok());
        h.auth_token = Some("x".repeat(AUTH_TOKEN_BYTES_MAX + 1));
        assert!(h.validate().is_err());
        h.auth_token = None;
        h.protocol_version = PROTOCOL_VERSION + 1;
        assert_eq!(h.validate().unwrap_err().code(), ErrorCode::Invalid);
    }
}
