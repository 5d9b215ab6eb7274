//! What `Op::validate` answers, pinned example by example: a good and a bad input for every
//! operation that has checks, each limit of `common::limits` at its boundary and one past
//! it, and the structural rules. Every example names the exact error (variant and text), so
//! moving the checks from one place to another cannot change what a client is told.

use crate::error::Error;
use crate::ids::{Epoch, NodeId, RangeId, Seq};
use crate::key::{Key, Version};
use crate::limits::{
    BATCH_OPS_MAX, DEQUEUE_TASKS_MAX, GET_MANY_KEYS_MAX, KEY_BYTES_MAX, LIST_KEY_BYTES_MAX, QUEUE_NAME_BYTES_MAX,
    QUEUE_VISIBILITY_MS_MAX, SCAN_PAGE_KEYS_MAX, TTL_MS_MAX, TXN_BYTES_MAX, TXN_HOLD_MS_MAX, TXN_OPS_MAX,
    TXN_PART_BYTES_MAX, TXN_RANGES_MAX, VALUE_BYTES_MAX,
};
use crate::lists::PushId;
use crate::meta::Checkpoint;
use crate::queue::{QUEUE_SHARDS, TASK_RECORD_OVERHEAD_BYTES, TaskRef};
use crate::txn::{TxnCheck, TxnCondition, TxnDecision, TxnPart, TxnWrite};
use crate::wire::protocol::{ExpireWhen, Op, WriteId};

const TTL_ZERO: &str = "a TTL must be at least 1 ms (0 would expire the key at once)";
use crate::wire::{Call, admin, data, peer, routing};

/// One input and what `Op::validate` must answer for it.
pub(super) struct Example {
    pub name: &'static str,
    pub op: Op,
    pub expected: Result<(), Error>,
}

fn ok() -> Result<(), Error> {
    Ok(())
}

fn invalid(reason: &str) -> Result<(), Error> {
    Err(Error::Invalid { reason: reason.into() })
}

fn too_large(what: &str, size: usize, max: usize) -> Result<(), Error> {
    Err(Error::TooLarge { what: what.into(), size: size as u64, max: max as u64 })
}

/// A key of `len` bytes.
fn key_of(len: usize) -> Key {
    Key::new(vec![b'k'; len])
}

fn k(s: &str) -> Key {
    Key::from(s)
}

/// A key in the reserved `ff ff` namespace (lists, queues).
fn reserved() -> Key {
    Key::new(vec![0xff, 0xff, b'x'])
}

const EMPTY_KEY: &str = "key must not be empty";
const RESERVED_KEY: &str = "keys starting with bytes ff ff are reserved (lists, queues)";

fn push(key: Key, element_len: usize) -> Op {
    Op::Push { key, element: vec![0; element_len], push_id: PushId { ms: 1, client: 2, n: 3 } }
}

fn enqueue(queue: &str, shard: u16, payload_len: usize) -> Op {
    Op::Enqueue {
        queue: queue.into(),
        shard,
        task_id: PushId { ms: 1, client: 2, n: 3 },
        payload: vec![0; payload_len],
    }
}

fn dequeue(queue: &str, shard: u16, start: Key, max: u32, visibility_ms: u64) -> Op {
    Op::Dequeue { queue: queue.into(), shard, start, max, visibility_ms }
}

fn task(shard: u16) -> TaskRef {
    TaskRef { shard, id: PushId { ms: 1, client: 2, n: 3 }, lease: 1 }
}

fn delete_range(start: Key, end: Option<Key>) -> Op {
    Op::DeleteRange { start, end, write_id: None }
}

fn scan(start: Key, end: Option<Key>, limit: u32) -> Op {
    Op::Scan { start, end, limit, reverse: false }
}

fn checkpoint() -> Checkpoint {
    Checkpoint { seq: Seq(1), blob: "b".into(), merkle_root: vec![1] }
}

fn node() -> NodeId {
    NodeId::new("n1").expect("a valid node id")
}

fn split_range(parent_start: Key, split_key: Key) -> Op {
    Op::SplitRange {
        parent_id: RangeId(1),
        parent_start,
        split_key,
        owner_node: node(),
        owner_epoch: Epoch(1),
        left_id: RangeId(2),
        left_checkpoint: checkpoint(),
        right_id: RangeId(3),
        right_checkpoint: checkpoint(),
    }
}

fn commit_merge(left: (u64, Key), right: (u64, Key), merged_id: u64) -> Op {
    Op::CommitMerge {
        left_id: RangeId(left.0),
        left_start: left.1,
        right_id: RangeId(right.0),
        right_start: right.1,
        owner_node: node(),
        owner_epoch: Epoch(1),
        merged_id: RangeId(merged_id),
        merged_checkpoint: checkpoint(),
    }
}

fn put_write(key: &str, value_len: usize) -> TxnWrite {
    TxnWrite::Put { key: k(key), value: vec![0; value_len] }
}

fn part(range_id: u64, checks: Vec<TxnCheck>, writes: Vec<TxnWrite>, reads: Vec<Key>) -> TxnPart {
    TxnPart { range_id: RangeId(range_id), node_addr: "127.0.0.1:1".into(), checks, writes, reads }
}

fn txn(parts: Vec<TxnPart>, hold_ms: u64) -> Op {
    Op::Txn { txn_id: WriteId::new(1, 1), parts, hold_ms }
}

/// A transaction whose puts carry exactly `bytes` bytes of keys and values, one put per
/// part (each within the value and part limits), so only the total can be over.
fn txn_of_bytes(bytes: usize) -> Op {
    let mut parts = Vec::new();
    let mut left = bytes;
    while left > 0 {
        let key = format!("k{}", parts.len());
        let value_len = (left - key.len()).min(VALUE_BYTES_MAX);
        left -= key.len() + value_len;
        parts.push(part(parts.len() as u64, vec![], vec![put_write(&key, value_len)], vec![]));
    }
    txn(parts, 1000)
}

/// Two puts in one range carrying `bytes` bytes of keys and values in all.
fn two_puts_of_bytes(bytes: usize) -> Vec<TxnWrite> {
    let first = 1 + VALUE_BYTES_MAX;
    vec![put_write("a", VALUE_BYTES_MAX), put_write("b", bytes - first - 1)]
}

fn txn_prepare(checks: Vec<TxnCheck>, writes: Vec<TxnWrite>, reads: Vec<Key>, hold_ms: u64) -> Op {
    Op::TxnPrepare { txn_id: WriteId::new(1, 1), range_id: RangeId(1), checks, writes, reads, hold_ms }
}

/// Every example, in the order of `Op`'s variants.
pub(super) fn examples() -> Vec<Example> {
    let ex = |name: &'static str, op: Op, expected: Result<(), Error>| Example { name, op, expected };
    let payload_max = VALUE_BYTES_MAX - TASK_RECORD_OVERHEAD_BYTES;
    let last_shard = QUEUE_SHARDS - 1;
    let long_queue = "q".repeat(QUEUE_NAME_BYTES_MAX + 1);
    let bad_shard = "a queue has shards 0 to 15, got 16";
    let hold_zero = "hold_ms must be 1 to 30000, got 0";
    let part_bytes = "a transaction's writes in one range";
    vec![
        // Operations without checks: always valid.
        ex("ping", Op::Ping, ok()),
        ex("release", Op::Release { range_id: RangeId(1) }, ok()),
        ex("snapshot", Op::Snapshot { range_id: RangeId(1) }, ok()),
        ex("split", Op::Split { range_id: RangeId(1) }, ok()),
        ex("range_stats", Op::RangeStats, ok()),
        ex("drain", Op::Drain { node_id: node(), undo: true }, ok()),
        ex("master_status", Op::MasterStatus, ok()),
        ex("members", Op::Members, ok()),
        ex(
            "txn_resolve",
            Op::TxnResolve {
                txn_id: WriteId::new(1, 1),
                range_id: RangeId(1),
                seq: Some(Seq(3)),
                decision: TxnDecision::Commit,
            },
            ok(),
        ),
        // put_with_ttl, expire: a TTL of 1 ms to TTL_MS_MAX; persist, ttl, incr: a user key.
        ex("put_with_ttl", Op::PutWithTtl { key: k("k"), value: vec![1], ttl_ms: 1, write_id: None }, ok()),
        ex(
            "put_with_ttl: TTL_MS_MAX",
            Op::PutWithTtl { key: k("k"), value: vec![1], ttl_ms: TTL_MS_MAX, write_id: None },
            ok(),
        ),
        ex(
            "put_with_ttl: past TTL_MS_MAX",
            Op::PutWithTtl { key: k("k"), value: vec![1], ttl_ms: TTL_MS_MAX + 1, write_id: None },
            invalid(&format!("a TTL of {} ms is over the limit of {TTL_MS_MAX} ms (100 years)", TTL_MS_MAX + 1)),
        ),
        ex(
            "put_with_ttl: TTL 0",
            Op::PutWithTtl { key: k("k"), value: vec![1], ttl_ms: 0, write_id: None },
            invalid(TTL_ZERO),
        ),
        ex(
            "put_with_ttl: value past VALUE_BYTES_MAX",
            Op::PutWithTtl { key: k("k"), value: vec![1; VALUE_BYTES_MAX + 1], ttl_ms: 1, write_id: None },
            too_large("value", VALUE_BYTES_MAX + 1, VALUE_BYTES_MAX),
        ),
        ex(
            "expire: TTL_MS_MAX",
            Op::Expire { key: k("k"), ttl_ms: TTL_MS_MAX, when: ExpireWhen::Nx, write_id: None },
            ok(),
        ),
        ex(
            "expire: TTL 0",
            Op::Expire { key: k("k"), ttl_ms: 0, when: ExpireWhen::Always, write_id: None },
            invalid(TTL_ZERO),
        ),
        ex(
            "expire: reserved key",
            Op::Expire { key: reserved(), ttl_ms: 5, when: ExpireWhen::Always, write_id: None },
            invalid(RESERVED_KEY),
        ),
        ex("persist", Op::Persist { key: k("k"), write_id: None }, ok()),
        ex("persist: empty key", Op::Persist { key: k(""), write_id: None }, invalid(EMPTY_KEY)),
        ex("ttl", Op::Ttl { key: k("k") }, ok()),
        ex("ttl: reserved key", Op::Ttl { key: reserved() }, invalid(RESERVED_KEY)),
        ex("incr", Op::Incr { key: k("k"), by: i64::MIN, write_id: None }, ok()),
        ex(
            "incr: key past KEY_BYTES_MAX",
            Op::Incr { key: key_of(KEY_BYTES_MAX + 1), by: 1, write_id: None },
            too_large("key", KEY_BYTES_MAX + 1, KEY_BYTES_MAX),
        ),
        // get: a user key.
        ex("get", Op::Get { key: k("k") }, ok()),
        ex("get: key at KEY_BYTES_MAX", Op::Get { key: key_of(KEY_BYTES_MAX) }, ok()),
        ex(
            "get: key past KEY_BYTES_MAX",
            Op::Get { key: key_of(KEY_BYTES_MAX + 1) },
            too_large("key", KEY_BYTES_MAX + 1, KEY_BYTES_MAX),
        ),
        ex("get: empty key", Op::Get { key: k("") }, invalid(EMPTY_KEY)),
        ex("get: reserved key", Op::Get { key: reserved() }, invalid(RESERVED_KEY)),
        // get_many: GET_MANY_KEYS_MAX user keys.
        ex("get_many: no keys", Op::GetMany { keys: vec![] }, ok()),
        ex("get_many: GET_MANY_KEYS_MAX keys", Op::GetMany { keys: vec![k("k"); GET_MANY_KEYS_MAX] }, ok()),
        ex(
            "get_many: past GET_MANY_KEYS_MAX keys",
            Op::GetMany { keys: vec![k("k"); GET_MANY_KEYS_MAX + 1] },
            too_large("get_many key count", GET_MANY_KEYS_MAX + 1, GET_MANY_KEYS_MAX),
        ),
        ex("get_many: an empty key", Op::GetMany { keys: vec![k("a"), k("")] }, invalid(EMPTY_KEY)),
        ex(
            "get_many: a key past KEY_BYTES_MAX",
            Op::GetMany { keys: vec![key_of(KEY_BYTES_MAX + 1)] },
            too_large("key", KEY_BYTES_MAX + 1, KEY_BYTES_MAX),
        ),
        // put and put_if_version: a user key and a value.
        ex(
            "put: key at KEY_BYTES_MAX, value at VALUE_BYTES_MAX",
            Op::Put { key: key_of(KEY_BYTES_MAX), value: vec![0; VALUE_BYTES_MAX], write_id: None },
            ok(),
        ),
        ex(
            "put: value past VALUE_BYTES_MAX",
            Op::Put { key: k("k"), value: vec![0; VALUE_BYTES_MAX + 1], write_id: None },
            too_large("value", VALUE_BYTES_MAX + 1, VALUE_BYTES_MAX),
        ),
        ex(
            "put: key past KEY_BYTES_MAX",
            Op::Put { key: key_of(KEY_BYTES_MAX + 1), value: vec![1], write_id: None },
            too_large("key", KEY_BYTES_MAX + 1, KEY_BYTES_MAX),
        ),
        ex("put: empty key", Op::Put { key: k(""), value: vec![1], write_id: None }, invalid(EMPTY_KEY)),
        ex("put: reserved key", Op::Put { key: reserved(), value: vec![1], write_id: None }, invalid(RESERVED_KEY)),
        ex(
            "put: the key is checked before the value",
            Op::Put { key: k(""), value: vec![0; VALUE_BYTES_MAX + 1], write_id: None },
            invalid(EMPTY_KEY),
        ),
        ex(
            "put_if_version: value at VALUE_BYTES_MAX",
            Op::PutIfVersion {
                key: k("k"),
                value: vec![0; VALUE_BYTES_MAX],
                expected: Some(Version { seq: Seq(1), index: 0 }),
                write_id: None,
            },
            ok(),
        ),
        ex(
            "put_if_version: value past VALUE_BYTES_MAX",
            Op::PutIfVersion { key: k("k"), value: vec![0; VALUE_BYTES_MAX + 1], expected: None, write_id: None },
            too_large("value", VALUE_BYTES_MAX + 1, VALUE_BYTES_MAX),
        ),
        ex(
            "put_if_version: reserved key",
            Op::PutIfVersion { key: reserved(), value: vec![1], expected: None, write_id: None },
            invalid(RESERVED_KEY),
        ),
        // delete: a user key.
        ex("delete", Op::Delete { key: k("k"), write_id: None }, ok()),
        ex("delete: empty key", Op::Delete { key: k(""), write_id: None }, invalid(EMPTY_KEY)),
        ex(
            "delete: key past KEY_BYTES_MAX",
            Op::Delete { key: key_of(KEY_BYTES_MAX + 1), write_id: None },
            too_large("key", KEY_BYTES_MAX + 1, KEY_BYTES_MAX),
        ),
        // push: a list key and an element.
        ex(
            "push: key at LIST_KEY_BYTES_MAX, element at VALUE_BYTES_MAX",
            push(key_of(LIST_KEY_BYTES_MAX), VALUE_BYTES_MAX),
            ok(),
        ),
        ex(
            "push: key past LIST_KEY_BYTES_MAX",
            push(key_of(LIST_KEY_BYTES_MAX + 1), 1),
            too_large("list key", LIST_KEY_BYTES_MAX + 1, LIST_KEY_BYTES_MAX),
        ),
        ex(
            "push: key past KEY_BYTES_MAX",
            push(key_of(KEY_BYTES_MAX + 1), 1),
            too_large("key", KEY_BYTES_MAX + 1, KEY_BYTES_MAX),
        ),
        ex("push: empty key", push(k(""), 1), invalid(EMPTY_KEY)),
        ex("push: reserved key", push(reserved(), 1), invalid(RESERVED_KEY)),
        ex(
            "push: element past VALUE_BYTES_MAX",
            push(k("l"), VALUE_BYTES_MAX + 1),
            too_large("value", VALUE_BYTES_MAX + 1, VALUE_BYTES_MAX),
        ),
        // enqueue: queue name, payload, shard.
        ex("enqueue: payload at its limit, last shard", enqueue("q", last_shard, payload_max), ok()),
        ex(
            "enqueue: payload past its limit",
            enqueue("q", 0, payload_max + 1),
            too_large("task payload", payload_max + 1, payload_max),
        ),
        ex("enqueue: shard past QUEUE_SHARDS", enqueue("q", QUEUE_SHARDS, 1), invalid(bad_shard)),
        ex("enqueue: empty queue name", enqueue("", 0, 1), invalid("a queue name must not be empty")),
        ex("enqueue: queue name at QUEUE_NAME_BYTES_MAX", enqueue(&"q".repeat(QUEUE_NAME_BYTES_MAX), 0, 1), ok()),
        ex(
            "enqueue: queue name past QUEUE_NAME_BYTES_MAX",
            enqueue(&long_queue, 0, 1),
            too_large("queue name", QUEUE_NAME_BYTES_MAX + 1, QUEUE_NAME_BYTES_MAX),
        ),
        ex(
            "enqueue: the payload is checked before the shard",
            enqueue("q", QUEUE_SHARDS, payload_max + 1),
            too_large("task payload", payload_max + 1, payload_max),
        ),
        // dequeue: queue name, shard, start bound, task count, visibility.
        ex(
            "dequeue: DEQUEUE_TASKS_MAX tasks for QUEUE_VISIBILITY_MS_MAX",
            dequeue("q", last_shard, key_of(KEY_BYTES_MAX), DEQUEUE_TASKS_MAX as u32, QUEUE_VISIBILITY_MS_MAX),
            ok(),
        ),
        ex("dequeue: empty start, one task for 1 ms", dequeue("q", 0, k(""), 1, 1), ok()),
        ex("dequeue: no tasks", dequeue("q", 0, k(""), 0, 1), invalid("dequeue takes 1 to 1000 tasks, got 0")),
        ex(
            "dequeue: past DEQUEUE_TASKS_MAX tasks",
            dequeue("q", 0, k(""), DEQUEUE_TASKS_MAX as u32 + 1, 1),
            invalid("dequeue takes 1 to 1000 tasks, got 1001"),
        ),
        ex(
            "dequeue: no visibility",
            dequeue("q", 0, k(""), 1, 0),
            invalid("visibility must be 1 to 43200000 ms, got 0"),
        ),
        ex(
            "dequeue: visibility past QUEUE_VISIBILITY_MS_MAX",
            dequeue("q", 0, k(""), 1, QUEUE_VISIBILITY_MS_MAX + 1),
            invalid("visibility must be 1 to 43200000 ms, got 43200001"),
        ),
        ex(
            "dequeue: start past KEY_BYTES_MAX",
            dequeue("q", 0, key_of(KEY_BYTES_MAX + 1), 1, 1),
            too_large("key", KEY_BYTES_MAX + 1, KEY_BYTES_MAX),
        ),
        ex("dequeue: shard past QUEUE_SHARDS", dequeue("q", QUEUE_SHARDS, k(""), 1, 1), invalid(bad_shard)),
        ex(
            "dequeue: queue name past QUEUE_NAME_BYTES_MAX",
            dequeue(&long_queue, 0, k(""), 1, 1),
            too_large("queue name", QUEUE_NAME_BYTES_MAX + 1, QUEUE_NAME_BYTES_MAX),
        ),
        ex(
            "dequeue: the shard is checked before the count",
            dequeue("q", QUEUE_SHARDS, k(""), 0, 1),
            invalid(bad_shard),
        ),
        // task_ack, task_nack: queue name and the task's shard.
        ex("task_ack", Op::TaskAck { queue: "q".into(), task: task(last_shard) }, ok()),
        ex(
            "task_ack: shard past QUEUE_SHARDS",
            Op::TaskAck { queue: "q".into(), task: task(QUEUE_SHARDS) },
            invalid(bad_shard),
        ),
        ex(
            "task_ack: empty queue name",
            Op::TaskAck { queue: String::new(), task: task(0) },
            invalid("a queue name must not be empty"),
        ),
        ex("task_nack", Op::TaskNack { queue: "q".into(), task: task(last_shard) }, ok()),
        ex(
            "task_nack: shard past QUEUE_SHARDS",
            Op::TaskNack { queue: "q".into(), task: task(QUEUE_SHARDS) },
            invalid(bad_shard),
        ),
        ex(
            "task_nack: queue name past QUEUE_NAME_BYTES_MAX",
            Op::TaskNack { queue: long_queue.clone(), task: task(0) },
            too_large("queue name", QUEUE_NAME_BYTES_MAX + 1, QUEUE_NAME_BYTES_MAX),
        ),
        // task_extend: queue name, shard, visibility.
        ex(
            "task_extend: for QUEUE_VISIBILITY_MS_MAX",
            Op::TaskExtend { queue: "q".into(), task: task(0), visibility_ms: QUEUE_VISIBILITY_MS_MAX },
            ok(),
        ),
        ex(
            "task_extend: visibility past QUEUE_VISIBILITY_MS_MAX",
            Op::TaskExtend { queue: "q".into(), task: task(0), visibility_ms: QUEUE_VISIBILITY_MS_MAX + 1 },
            invalid("visibility must be 1 to 43200000 ms, got 43200001"),
        ),
        ex(
            "task_extend: no visibility",
            Op::TaskExtend { queue: "q".into(), task: task(0), visibility_ms: 0 },
            invalid("visibility must be 1 to 43200000 ms, got 0"),
        ),
        ex(
            "task_extend: shard past QUEUE_SHARDS",
            Op::TaskExtend { queue: "q".into(), task: task(QUEUE_SHARDS), visibility_ms: 1 },
            invalid(bad_shard),
        ),
        ex(
            "task_extend: empty queue name",
            Op::TaskExtend { queue: String::new(), task: task(0), visibility_ms: 1 },
            invalid("a queue name must not be empty"),
        ),
        // batch: 1 to BATCH_OPS_MAX pushes and enqueues, each valid.
        ex("batch: a push and an enqueue", Op::Batch { ops: vec![push(k("l"), 1), enqueue("q", 0, 1)] }, ok()),
        ex("batch: BATCH_OPS_MAX operations", Op::Batch { ops: vec![push(k("l"), 1); BATCH_OPS_MAX] }, ok()),
        ex(
            "batch: past BATCH_OPS_MAX operations",
            Op::Batch { ops: vec![push(k("l"), 1); BATCH_OPS_MAX + 1] },
            invalid("a batch holds 1 to 10000 operations, got 10001"),
        ),
        ex("batch: empty", Op::Batch { ops: vec![] }, invalid("a batch holds 1 to 10000 operations, got 0")),
        ex(
            "batch: a put",
            Op::Batch { ops: vec![push(k("l"), 1), Op::Put { key: k("k"), value: vec![1], write_id: None }] },
            invalid("a batch holds pushes and enqueues only, not put"),
        ),
        ex(
            "batch: a batch inside",
            Op::Batch { ops: vec![Op::Batch { ops: vec![push(k("l"), 1)] }] },
            invalid("a batch holds pushes and enqueues only, not batch"),
        ),
        ex(
            "batch: an invalid push",
            Op::Batch { ops: vec![enqueue("q", 0, 1), push(k("l"), VALUE_BYTES_MAX + 1)] },
            too_large("value", VALUE_BYTES_MAX + 1, VALUE_BYTES_MAX),
        ),
        ex(
            "batch: an invalid enqueue",
            Op::Batch { ops: vec![push(k("l"), 1), enqueue("q", QUEUE_SHARDS, 1)] },
            invalid(bad_shard),
        ),
        ex(
            "batch: operations are checked in order",
            Op::Batch { ops: vec![push(k(""), 1), Op::Ping] },
            invalid(EMPTY_KEY),
        ),
        // delete_range: a span below the reserved namespace, with an end.
        ex("delete_range", delete_range(k("a"), Some(k("b"))), ok()),
        ex("delete_range: the whole user key space", delete_range(k(""), Some(Key::user_end())), ok()),
        ex(
            "delete_range: end not above start",
            delete_range(k("b"), Some(k("a"))),
            invalid("range end a must be greater than start b"),
        ),
        ex(
            "delete_range: end equal to start",
            delete_range(k("a"), Some(k("a"))),
            invalid("range end a must be greater than start a"),
        ),
        ex(
            "delete_range: start past KEY_BYTES_MAX",
            delete_range(key_of(KEY_BYTES_MAX + 1), Some(k("z"))),
            too_large("key", KEY_BYTES_MAX + 1, KEY_BYTES_MAX),
        ),
        ex(
            "delete_range: end past KEY_BYTES_MAX",
            delete_range(k("a"), Some(key_of(KEY_BYTES_MAX + 1))),
            too_large("key", KEY_BYTES_MAX + 1, KEY_BYTES_MAX),
        ),
        ex(
            "delete_range: start in the reserved namespace",
            delete_range(Key::user_end(), Some(Key::new(vec![0xff, 0xff, 1]))),
            invalid(r"delete_range start \xff\xff is in the reserved namespace (keys from ff ff: lists, queues)"),
        ),
        ex(
            "delete_range: end into the reserved namespace",
            delete_range(k("a"), Some(Key::new(vec![0xff, 0xff, 0]))),
            invalid(
                r"delete_range end \xff\xff\x00 reaches into the reserved namespace (keys from ff ff: lists, queues); end at ff ff at most",
            ),
        ),
        ex(
            "delete_range: no end",
            delete_range(k("a"), None),
            invalid(
                "delete_range needs an end at most ff ff: no end would reach the reserved namespace (lists, queues)",
            ),
        ),
        // scan: a span and 1 to SCAN_PAGE_KEYS_MAX keys.
        ex("scan: one key", scan(k("a"), Some(k("b")), 1), ok()),
        ex("scan: SCAN_PAGE_KEYS_MAX keys over everything", scan(k(""), None, SCAN_PAGE_KEYS_MAX as u32), ok()),
        ex("scan: the reserved namespace", scan(Key::user_end(), None, 1), ok()),
        ex("scan: no keys", scan(k("a"), None, 0), invalid("scan limit must be 1 to 10000, got 0")),
        ex(
            "scan: past SCAN_PAGE_KEYS_MAX keys",
            scan(k("a"), None, SCAN_PAGE_KEYS_MAX as u32 + 1),
            invalid("scan limit must be 1 to 10000, got 10001"),
        ),
        ex(
            "scan: end not above start",
            scan(k("b"), Some(k("a")), 1),
            invalid("range end a must be greater than start b"),
        ),
        ex(
            "scan: the span is checked before the limit",
            scan(k("b"), Some(k("a")), 0),
            invalid("range end a must be greater than start b"),
        ),
        ex(
            "scan: end past KEY_BYTES_MAX",
            scan(k("a"), Some(key_of(KEY_BYTES_MAX + 1)), 1),
            too_large("key", KEY_BYTES_MAX + 1, KEY_BYTES_MAX),
        ),
        // assign: a start bound.
        ex("assign: the empty start", Op::Assign { range_id: RangeId(1), start: k(""), claim: true }, ok()),
        ex(
            "assign: start at KEY_BYTES_MAX",
            Op::Assign { range_id: RangeId(1), start: key_of(KEY_BYTES_MAX), claim: false },
            ok(),
        ),
        ex(
            "assign: start past KEY_BYTES_MAX",
            Op::Assign { range_id: RangeId(1), start: key_of(KEY_BYTES_MAX + 1), claim: false },
            too_large("key", KEY_BYTES_MAX + 1, KEY_BYTES_MAX),
        ),
        // locate: any bound, reserved and empty included.
        ex("locate: the empty key", Op::Locate { key: k("") }, ok()),
        ex("locate: a reserved key", Op::Locate { key: reserved() }, ok()),
        ex("locate: key at KEY_BYTES_MAX", Op::Locate { key: key_of(KEY_BYTES_MAX) }, ok()),
        ex(
            "locate: key past KEY_BYTES_MAX",
            Op::Locate { key: key_of(KEY_BYTES_MAX + 1) },
            too_large("key", KEY_BYTES_MAX + 1, KEY_BYTES_MAX),
        ),
        // locate_range: a span.
        ex("locate_range: everything", Op::LocateRange { start: k(""), end: None }, ok()),
        ex("locate_range", Op::LocateRange { start: k("a"), end: Some(k("b")) }, ok()),
        ex(
            "locate_range: end not above start",
            Op::LocateRange { start: k("b"), end: Some(k("a")) },
            invalid("range end a must be greater than start b"),
        ),
        ex(
            "locate_range: start past KEY_BYTES_MAX",
            Op::LocateRange { start: key_of(KEY_BYTES_MAX + 1), end: None },
            too_large("key", KEY_BYTES_MAX + 1, KEY_BYTES_MAX),
        ),
        // split_range: bounds, and the split key above the parent's start.
        ex("split_range", split_range(k(""), k("m")), ok()),
        ex("split_range: a split key in the reserved namespace", split_range(k("a"), reserved()), ok()),
        ex(
            "split_range: split key at the range start",
            split_range(k("m"), k("m")),
            invalid("split key must be above the range start"),
        ),
        ex(
            "split_range: split key below the range start",
            split_range(k("m"), k("a")),
            invalid("split key must be above the range start"),
        ),
        ex(
            "split_range: parent start past KEY_BYTES_MAX",
            split_range(key_of(KEY_BYTES_MAX + 1), k("m")),
            too_large("key", KEY_BYTES_MAX + 1, KEY_BYTES_MAX),
        ),
        ex(
            "split_range: split key past KEY_BYTES_MAX",
            split_range(k(""), key_of(KEY_BYTES_MAX + 1)),
            too_large("key", KEY_BYTES_MAX + 1, KEY_BYTES_MAX),
        ),
        // merge: two different ranges.
        ex("merge", Op::Merge { left_id: RangeId(1), right_id: RangeId(2) }, ok()),
        ex(
            "merge: a range with itself",
            Op::Merge { left_id: RangeId(1), right_id: RangeId(1) },
            invalid("a range cannot merge with itself"),
        ),
        // commit_merge: bounds, the right range above the left, three distinct ids.
        ex("commit_merge", commit_merge((1, k("")), (2, k("m")), 3), ok()),
        ex(
            "commit_merge: left start past KEY_BYTES_MAX",
            commit_merge((1, key_of(KEY_BYTES_MAX + 1)), (2, k("m")), 3),
            too_large("key", KEY_BYTES_MAX + 1, KEY_BYTES_MAX),
        ),
        ex(
            "commit_merge: right start past KEY_BYTES_MAX",
            commit_merge((1, k("")), (2, key_of(KEY_BYTES_MAX + 1)), 3),
            too_large("key", KEY_BYTES_MAX + 1, KEY_BYTES_MAX),
        ),
        ex(
            "commit_merge: right start equal to left start",
            commit_merge((1, k("m")), (2, k("m")), 3),
            invalid("the right range must start above the left one"),
        ),
        ex(
            "commit_merge: right start below left start",
            commit_merge((1, k("m")), (2, k("a")), 3),
            invalid("the right range must start above the left one"),
        ),
        ex(
            "commit_merge: left id is right id",
            commit_merge((1, k("")), (1, k("m")), 3),
            invalid("a merge needs three distinct range ids"),
        ),
        ex(
            "commit_merge: merged id is left id",
            commit_merge((1, k("")), (2, k("m")), 1),
            invalid("a merge needs three distinct range ids"),
        ),
        ex(
            "commit_merge: merged id is right id",
            commit_merge((1, k("")), (2, k("m")), 2),
            invalid("a merge needs three distinct range ids"),
        ),
        ex(
            "commit_merge: the starts are checked before the ids",
            commit_merge((1, k("m")), (1, k("a")), 1),
            invalid("the right range must start above the left one"),
        ),
        // txn: hold time, then the parts (`txn::validate_parts`).
        ex("txn", txn(vec![part(1, vec![], vec![put_write("k", 1)], vec![k("r")])], 1000), ok()),
        ex(
            "txn: held TXN_HOLD_MS_MAX",
            txn(vec![part(1, vec![], vec![put_write("k", 1)], vec![])], TXN_HOLD_MS_MAX),
            ok(),
        ),
        ex(
            "txn: held past TXN_HOLD_MS_MAX",
            txn(vec![part(1, vec![], vec![put_write("k", 1)], vec![])], TXN_HOLD_MS_MAX + 1),
            invalid("hold_ms must be 1 to 30000, got 30001"),
        ),
        ex("txn: not held", txn(vec![part(1, vec![], vec![put_write("k", 1)], vec![])], 0), invalid(hold_zero)),
        ex("txn: no parts", txn(vec![], 1000), invalid("a transaction needs at least one part")),
        ex("txn: hold time is checked before the parts", txn(vec![], 0), invalid(hold_zero)),
        ex(
            "txn: TXN_RANGES_MAX ranges",
            txn(
                (0..TXN_RANGES_MAX as u64)
                    .map(|i| part(i, vec![], vec![put_write(&format!("k{i}"), 1)], vec![]))
                    .collect(),
                1000,
            ),
            ok(),
        ),
        ex(
            "txn: past TXN_RANGES_MAX ranges",
            txn(
                (0..=TXN_RANGES_MAX as u64)
                    .map(|i| part(i, vec![], vec![put_write(&format!("k{i}"), 1)], vec![]))
                    .collect(),
                1000,
            ),
            too_large("transaction ranges", TXN_RANGES_MAX + 1, TXN_RANGES_MAX),
        ),
        ex(
            "txn: TXN_OPS_MAX checks, writes and reads",
            txn(
                vec![
                    part(
                        1,
                        vec![TxnCheck { key: k("c"), condition: TxnCondition::Absent }],
                        vec![put_write("w", 1)],
                        vec![],
                    ),
                    part(2, vec![], vec![], vec![k("r"); TXN_OPS_MAX - 2]),
                ],
                1000,
            ),
            ok(),
        ),
        ex(
            "txn: past TXN_OPS_MAX checks, writes and reads",
            txn(
                vec![
                    part(
                        1,
                        vec![TxnCheck { key: k("c"), condition: TxnCondition::Absent }],
                        vec![put_write("w", 1)],
                        vec![],
                    ),
                    part(2, vec![], vec![], vec![k("r"); TXN_OPS_MAX - 1]),
                ],
                1000,
            ),
            too_large("transaction checks and writes", TXN_OPS_MAX + 1, TXN_OPS_MAX),
        ),
        ex(
            "txn: a range twice",
            txn(
                vec![
                    part(1, vec![], vec![put_write("a", 1)], vec![]),
                    part(1, vec![], vec![put_write("b", 1)], vec![]),
                ],
                1000,
            ),
            invalid("range r1 appears twice in the transaction"),
        ),
        ex(
            "txn: a key written twice",
            txn(vec![part(1, vec![], vec![put_write("a", 1), TxnWrite::Delete { key: k("a") }], vec![])], 1000),
            invalid("key a is written twice in one transaction"),
        ),
        ex(
            "txn: a write to a reserved key",
            txn(vec![part(1, vec![], vec![TxnWrite::Delete { key: reserved() }], vec![])], 1000),
            invalid(RESERVED_KEY),
        ),
        ex(
            "txn: a check of a value past VALUE_BYTES_MAX",
            txn(
                vec![part(
                    1,
                    vec![TxnCheck { key: k("c"), condition: TxnCondition::Value(vec![0; VALUE_BYTES_MAX + 1]) }],
                    vec![],
                    vec![],
                )],
                1000,
            ),
            too_large("value", VALUE_BYTES_MAX + 1, VALUE_BYTES_MAX),
        ),
        ex("txn: a read of the empty key", txn(vec![part(1, vec![], vec![], vec![k("")])], 1000), invalid(EMPTY_KEY)),
        ex(
            "txn: TXN_PART_BYTES_MAX bytes in one range",
            txn(vec![part(1, vec![], two_puts_of_bytes(TXN_PART_BYTES_MAX), vec![])], 1000),
            ok(),
        ),
        ex(
            "txn: past TXN_PART_BYTES_MAX bytes in one range",
            txn(vec![part(1, vec![], two_puts_of_bytes(TXN_PART_BYTES_MAX + 1), vec![])], 1000),
            too_large(part_bytes, TXN_PART_BYTES_MAX + 1, TXN_PART_BYTES_MAX),
        ),
        ex("txn: TXN_BYTES_MAX bytes", txn_of_bytes(TXN_BYTES_MAX), ok()),
        ex(
            "txn: past TXN_BYTES_MAX bytes",
            txn_of_bytes(TXN_BYTES_MAX + 1),
            too_large("a transaction's writes", TXN_BYTES_MAX + 1, TXN_BYTES_MAX),
        ),
        // txn_prepare: hold time, TXN_OPS_MAX in all, user keys to read, one valid part.
        ex(
            "txn_prepare",
            txn_prepare(
                vec![TxnCheck { key: k("c"), condition: TxnCondition::Absent }],
                vec![put_write("w", 1)],
                vec![k("r")],
                TXN_HOLD_MS_MAX,
            ),
            ok(),
        ),
        ex("txn_prepare: not held", txn_prepare(vec![], vec![], vec![], 0), invalid(hold_zero)),
        ex(
            "txn_prepare: held past TXN_HOLD_MS_MAX",
            txn_prepare(vec![], vec![], vec![], TXN_HOLD_MS_MAX + 1),
            invalid("hold_ms must be 1 to 30000, got 30001"),
        ),
        ex(
            "txn_prepare: TXN_OPS_MAX checks, writes and reads",
            txn_prepare(
                vec![TxnCheck { key: k("c"), condition: TxnCondition::Absent }],
                vec![put_write("w", 1)],
                vec![k("r"); TXN_OPS_MAX - 2],
                1,
            ),
            ok(),
        ),
        ex(
            "txn_prepare: past TXN_OPS_MAX checks, writes and reads",
            txn_prepare(
                vec![TxnCheck { key: k("c"), condition: TxnCondition::Absent }],
                vec![put_write("w", 1)],
                vec![k("r"); TXN_OPS_MAX - 1],
                1,
            ),
            too_large("transaction checks, writes and reads", TXN_OPS_MAX + 1, TXN_OPS_MAX),
        ),
        ex(
            "txn_prepare: hold time is checked before the count",
            txn_prepare(vec![], vec![], vec![k("r"); TXN_OPS_MAX + 1], 0),
            invalid(hold_zero),
        ),
        ex(
            "txn_prepare: a read of a reserved key",
            txn_prepare(vec![], vec![], vec![reserved()], 1),
            invalid(RESERVED_KEY),
        ),
        ex(
            "txn_prepare: reads are checked before the part",
            txn_prepare(vec![], vec![put_write("", 1)], vec![reserved()], 1),
            invalid(RESERVED_KEY),
        ),
        ex(
            "txn_prepare: a key written twice",
            txn_prepare(vec![], vec![put_write("a", 1), put_write("a", 2)], vec![], 1),
            invalid("key a is written twice in one transaction"),
        ),
        ex(
            "txn_prepare: past TXN_PART_BYTES_MAX bytes",
            txn_prepare(vec![], two_puts_of_bytes(TXN_PART_BYTES_MAX + 1), vec![], 1),
            too_large(part_bytes, TXN_PART_BYTES_MAX + 1, TXN_PART_BYTES_MAX),
        ),
    ]
}

/// The table: `Op::validate` answers each example exactly (variant, text, sizes).
#[test]
fn op_validate_answers_each_example_exactly() {
    let examples = examples();
    let mut failures = Vec::new();
    for Example { name, op, expected } in &examples {
        let got = op.validate();
        if &got != expected {
            failures.push(format!("{name}: expected {expected:?}, got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{} of {} examples differ:\n{}", failures.len(), examples.len(), failures.join("\n"));
}

/// Every operation with checks has a good and a bad example, and every other one a good
/// example: a new operation (or new checks) shows up here.
#[test]
fn the_table_covers_every_operation() {
    use std::collections::BTreeMap;
    let mut by_name: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for Example { op, expected, .. } in examples() {
        let counts = by_name.entry(op.name()).or_default();
        if expected.is_ok() {
            counts.0 += 1;
        } else {
            counts.1 += 1;
        }
    }
    let unchecked =
        ["ping", "release", "snapshot", "split", "range_stats", "drain", "master_status", "members", "txn_resolve"];
    for op in crate::wire::protocol::tests::one_of_each() {
        let name = op.name();
        let (good, bad) = by_name.get(name).copied().unwrap_or_default();
        assert!(good > 0, "{name}: a good example");
        if unchecked.contains(&name) {
            assert_eq!(bad, 0, "{name} has no checks");
        } else {
            assert!(bad > 0, "{name}: a bad example");
        }
    }
}

/// Checks `op` as its typed request, both ways: the struct's own `Call::validate` (no `Op`
/// built) and `Op::validate` on the `Op` the struct sends. A new `Op` variant does not
/// compile here until it is placed.
fn typed_and_as_op(op: Op) -> (Result<(), Error>, Result<(), Error>) {
    fn both<C: Call + Clone>(op: &Op, req: C) -> (Result<(), Error>, Result<(), Error>) {
        let sent = req.clone().into_op();
        assert_eq!(&sent, op, "{} sends the example's op", C::NAME);
        (req.validate(), sent.validate())
    }
    let o = &op;
    match op.clone() {
        Op::Ping => both(o, data::Ping),
        Op::Get { key } => both(o, data::Get { key }),
        Op::GetMany { keys } => both(o, data::GetMany { keys }),
        Op::Put { key, value, write_id } => both(o, data::Put { key, value, write_id }),
        Op::PutIfVersion { key, value, expected, write_id } => {
            both(o, data::PutIfVersion { key, value, expected, write_id })
        }
        Op::Delete { key, write_id } => both(o, data::Delete { key, write_id }),
        Op::DeleteRange { start, end, write_id } => both(o, data::DeleteRange { start, end, write_id }),
        Op::Scan { start, end, limit, reverse } => both(o, data::Scan { start, end, limit, reverse }),
        Op::Push { key, element, push_id } => both(o, data::Push { key, element, push_id }),
        Op::Enqueue { queue, shard, task_id, payload } => both(o, data::Enqueue { queue, shard, task_id, payload }),
        Op::Dequeue { queue, shard, start, max, visibility_ms } => {
            both(o, data::Dequeue { queue, shard, start, max, visibility_ms })
        }
        Op::TaskAck { queue, task } => both(o, data::TaskAck { queue, task }),
        Op::TaskNack { queue, task } => both(o, data::TaskNack { queue, task }),
        Op::TaskExtend { queue, task, visibility_ms } => both(o, data::TaskExtend { queue, task, visibility_ms }),
        Op::Batch { ops } => both(o, data::Batch { ops }),
        Op::Txn { txn_id, parts, hold_ms } => both(o, data::Txn { txn_id, parts, hold_ms }),
        Op::Locate { key } => both(o, routing::Locate { key }),
        Op::LocateRange { start, end } => both(o, routing::LocateRange { start, end }),
        Op::Drain { node_id, undo } => both(o, routing::Drain { node_id, undo }),
        Op::MasterStatus => both(o, routing::MasterStatus),
        Op::Members => both(o, routing::Members),
        Op::Assign { range_id, start, claim } => both(o, admin::Assign { range_id, start, claim }),
        Op::Release { range_id } => both(o, admin::Release { range_id }),
        Op::Snapshot { range_id } => both(o, admin::Snapshot { range_id }),
        Op::Split { range_id } => both(o, admin::Split { range_id }),
        Op::RangeStats => both(o, admin::RangeStats),
        Op::Merge { left_id, right_id } => both(o, admin::Merge { left_id, right_id }),
        Op::TxnPrepare { txn_id, range_id, checks, writes, reads, hold_ms } => {
            both(o, peer::TxnPrepare { txn_id, range_id, checks, writes, reads, hold_ms })
        }
        Op::TxnResolve { txn_id, range_id, seq, decision } => {
            both(o, peer::TxnResolve { txn_id, range_id, seq, decision })
        }
        Op::PutWithTtl { key, value, ttl_ms, write_id } => both(o, data::PutWithTtl { key, value, ttl_ms, write_id }),
        Op::Expire { key, ttl_ms, when, write_id } => both(o, data::Expire { key, ttl_ms, when, write_id }),
        Op::Persist { key, write_id } => both(o, data::Persist { key, write_id }),
        Op::Ttl { key } => both(o, data::Ttl { key }),
        Op::Incr { key, by, write_id } => both(o, data::Incr { key, by, write_id }),
        Op::SplitRange {
            parent_id,
            parent_start,
            split_key,
            owner_node,
            owner_epoch,
            left_id,
            left_checkpoint,
            right_id,
            right_checkpoint,
        } => both(
            o,
            peer::SplitRange {
                parent_id,
                parent_start,
                split_key,
                owner_node,
                owner_epoch,
                left_id,
                left_checkpoint,
                right_id,
                right_checkpoint,
            },
        ),
        Op::CommitMerge {
            left_id,
            left_start,
            right_id,
            right_start,
            owner_node,
            owner_epoch,
            merged_id,
            merged_checkpoint,
        } => both(
            o,
            peer::CommitMerge {
                left_id,
                left_start,
                right_id,
                right_start,
                owner_node,
                owner_epoch,
                merged_id,
                merged_checkpoint,
            },
        ),
    }
}

/// Each example, as its typed request: `validate()` answers what `Op::validate` answers on
/// the request's `into_op()`, which is the table's answer.
#[test]
fn each_typed_request_validates_as_its_op() {
    for Example { name, op, expected } in examples() {
        let (typed, as_op) = typed_and_as_op(op);
        assert_eq!(typed, as_op, "{name}: the typed request and its op");
        assert_eq!(typed, expected, "{name}");
    }
}
