//! Data requests: what application servers (and collectors) send to the node serving a key.
//! Each request's checks are in its `validate` clause (its `validate_fields`): the client
//! runs them through `Call::validate` before sending, the node through `Op::validate` on
//! every request it decodes.

use crate::error::Error;
use crate::expiry::validate_ttl_ms;
use crate::key::{Key, Version};
use crate::limits::{BATCH_OPS_MAX, GET_MANY_KEYS_MAX, SCAN_PAGE_KEYS_MAX};
use crate::lists::{self, PushId};
use crate::queue::{self, QUEUE_SHARDS, Task, TaskRef};
use crate::txn::{self, TxnPart};
use crate::value::validate_value;
use crate::wire::protocol::{ExpireWhen, KeyTtl, Op, ScanItem, Versioned, WriteId};
use crate::wire::request;
use crate::wire::span::validate_span;

/// The answer to [`Delete`] and [`DeleteRange`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Removed {
    /// How many keys existed and were removed.
    pub removed: u64,
    pub version: Version,
}

/// The answer to [`Scan`]: one page that never crosses the end of the range that served it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    pub items: Vec<ScanItem>,
    /// Where to continue (forward: the next `start`; reverse: the next `end`), `None` when
    /// the span is exhausted.
    pub resume: Option<Key>,
}

/// The answer to [`Dequeue`]: the tasks leased and where the shard goes on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tasks {
    pub tasks: Vec<Task>,
    pub resume: Option<Key>,
}

/// The answer to [`Txn`]: the version of each write and the values of each part's reads,
/// part by part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    pub versions: Vec<Vec<Version>>,
    pub values: Vec<Vec<Option<Versioned>>>,
}

request! {
    /// Is the server there? (Any role; masters answer it too.)
    Ping as "ping" -> () { Reply::Pong => () }
}

request! {
    /// The value and version at `key`, `None` when absent.
    Get { key: Key } as "get" -> Option<Versioned> { Reply::Value(v) => v }
    validate { Ok(Key::validate_user_key(key.as_bytes())?) }
}

request! {
    /// Several keys of one range, answered in order.
    GetMany { keys: Vec<Key> } as "get_many" -> Vec<Option<Versioned>> { Reply::Values(v) => v }
    validate {
        if keys.len() > GET_MANY_KEYS_MAX {
            return Err(Error::too_large("get_many key count", keys.len(), GET_MANY_KEYS_MAX));
        }
        Ok(keys.iter().try_for_each(|k| Key::validate_user_key(k.as_bytes()))?)
    }
}

request! {
    /// Writes `value` at `key`; answers the write's version.
    Put { key: Key, value: Vec<u8>, write_id: Option<WriteId> }
    as "put" -> Version { Reply::Written { version } => version }
    validate {
        Key::validate_user_key(key.as_bytes())?;
        validate_value(value)
    }
}

request! {
    /// Writes only if the key's version is `expected` (`None`: only if absent).
    PutIfVersion { key: Key, value: Vec<u8>, expected: Option<Version>, write_id: Option<WriteId> }
    as "put_if_version" -> Version { Reply::Written { version } => version }
    // `expected` may be any version or none: the checks are a put's.
    validate { Put::validate_fields(key, value, write_id) }
}

request! {
    /// Deletes `key`.
    Delete { key: Key, write_id: Option<WriteId> }
    as "delete" -> Removed { Reply::Deleted { removed, version } => Removed { removed, version } }
    validate { Ok(Key::validate_user_key(key.as_bytes())?) }
}

request! {
    /// Deletes `[start, end)` within one range.
    DeleteRange { start: Key, end: Option<Key>, write_id: Option<WriteId> }
    as "delete_range" -> Removed { Reply::Deleted { removed, version } => Removed { removed, version } }
    validate {
        validate_span(start, end.as_ref())?;
        validate_user_span(start, end.as_ref())
    }
}

request! {
    /// Writes `value` at `key`, expiring `ttl_ms` after the owner logs it.
    PutWithTtl { key: Key, value: Vec<u8>, ttl_ms: u64, write_id: Option<WriteId> }
    as "put_with_ttl" -> Version { Reply::Written { version } => version }
    validate {
        Put::validate_fields(key, value, write_id)?;
        validate_ttl_ms(*ttl_ms)
    }
}

request! {
    /// Sets an existing key to expire `ttl_ms` from now, if `when` holds.
    Expire { key: Key, ttl_ms: u64, when: ExpireWhen, write_id: Option<WriteId> }
    as "expire" -> bool { Reply::ExpiryChanged { changed } => changed }
    validate {
        Key::validate_user_key(key.as_bytes())?;
        validate_ttl_ms(*ttl_ms)
    }
}

request! {
    /// Removes a key's expiry.
    Persist { key: Key, write_id: Option<WriteId> }
    as "persist" -> bool { Reply::ExpiryChanged { changed } => changed }
    validate { Ok(Key::validate_user_key(key.as_bytes())?) }
}

request! {
    /// How long a key has to live.
    Ttl { key: Key } as "ttl" -> KeyTtl { Reply::Ttl(t) => t }
    validate { Ok(Key::validate_user_key(key.as_bytes())?) }
}

request! {
    /// Adds `by` to the counter at `key`; answers the new value and the write's version.
    Incr { key: Key, by: i64, write_id: Option<WriteId> }
    as "incr" -> Counted { Reply::Counted { value, version } => Counted { value, version } }
    validate { Ok(Key::validate_user_key(key.as_bytes())?) }
}

/// The answer to [`Incr`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counted {
    pub value: i64,
    pub version: Version,
}

request! {
    /// One page of `[start, end)` within the range that serves it.
    Scan { start: Key, end: Option<Key>, limit: u32, reverse: bool }
    as "scan" -> Page { Reply::ScanPage { items, resume } => Page { items, resume } }
    validate {
        validate_span(start, end.as_ref())?;
        if *limit == 0 || *limit as usize > SCAN_PAGE_KEYS_MAX {
            return Err(Error::invalid(format!("scan limit must be 1 to {SCAN_PAGE_KEYS_MAX}, got {limit}")));
        }
        Ok(())
    }
}

request! {
    /// Appends an element to a list, idempotent by `push_id`.
    Push { key: Key, element: Vec<u8>, push_id: PushId }
    as "push" -> Version { Reply::Written { version } => version }
    validate {
        lists::validate_list_key(key)?;
        validate_value(element)
    }
}

request! {
    /// Adds a task to a queue's shard, idempotent by `task_id`.
    Enqueue { queue: String, shard: u16, task_id: PushId, payload: Vec<u8> }
    as "enqueue" -> Version { Reply::Written { version } => version }
    validate {
        queue::validate_queue(queue)?;
        queue::validate_payload(payload)?;
        validate_shard(*shard)
    }
}

request! {
    /// Leases up to `max` visible tasks of one shard from `start` on.
    Dequeue { queue: String, shard: u16, start: Key, max: u32, visibility_ms: u64 }
    as "dequeue" -> Tasks { Reply::Tasks { tasks, resume } => Tasks { tasks, resume } }
    validate {
        queue::validate_queue(queue)?;
        validate_shard(*shard)?;
        Key::validate_bound(start.as_bytes())?;
        queue::validate_dequeue(*max, *visibility_ms)
    }
}

request! {
    /// Deletes a delivered task if its lease is still current.
    TaskAck { queue: String, task: TaskRef } as "task_ack" -> Version { Reply::Written { version } => version }
    validate {
        queue::validate_queue(queue)?;
        validate_shard(task.shard)
    }
}

request! {
    /// Makes a delivered task visible again at once.
    TaskNack { queue: String, task: TaskRef } as "task_nack" -> Version { Reply::Written { version } => version }
    // The same task reference as an ack, so the same checks.
    validate { TaskAck::validate_fields(queue, task) }
}

request! {
    /// Keeps a delivered task invisible for `visibility_ms` more.
    TaskExtend { queue: String, task: TaskRef, visibility_ms: u64 }
    as "task_extend" -> Version { Reply::Written { version } => version }
    validate {
        queue::validate_queue(queue)?;
        validate_shard(task.shard)?;
        queue::validate_dequeue(1, *visibility_ms)
    }
}

request! {
    /// Several pushes and enqueues of one range (a collector's batch): one result each.
    Batch { ops: Vec<Op> } as "batch" -> Vec<Result<crate::wire::protocol::Reply, Error>> {
        Reply::Batch { results } => results
    }
    validate {
        if ops.is_empty() || ops.len() > BATCH_OPS_MAX {
            return Err(Error::invalid(format!("a batch holds 1 to {BATCH_OPS_MAX} operations, got {}", ops.len())));
        }
        // Only what a collector batches, and each checked as if sent alone: the node applies
        // a batch's operations without validating them again.
        for op in ops {
            if !matches!(op, Op::Push { .. } | Op::Enqueue { .. }) {
                return Err(Error::invalid(format!("a batch holds pushes and enqueues only, not {}", op.name())));
            }
            op.validate()?;
        }
        Ok(())
    }
}

request! {
    /// A transaction, sent to the node serving `parts[0]`'s range, which coordinates it.
    Txn { txn_id: WriteId, parts: Vec<TxnPart>, hold_ms: u64 }
    as "txn" -> Committed { Reply::TxnCommitted { versions, values } => Committed { versions, values } }
    validate {
        txn::validate_hold_ms(*hold_ms)?;
        txn::validate_parts(parts)
    }
}

/// A user write over `[start, end)` must stay below the reserved `ff ff` namespace: lists
/// and queues change only through their own operations (a raw delete over it would lose
/// acknowledged tasks). So the end must be given and at most `ff ff`; the product client
/// clips every delete there.
fn validate_user_span(start: &Key, end: Option<&Key>) -> Result<(), Error> {
    let reserved = Key::user_end();
    if start >= &reserved {
        return Err(Error::invalid(format!(
            "delete_range start {start} is in the reserved namespace (keys from ff ff: lists, queues)"
        )));
    }
    match end {
        Some(end) if end <= &reserved => Ok(()),
        Some(end) => Err(Error::invalid(format!(
            "delete_range end {end} reaches into the reserved namespace (keys from ff ff: lists, queues); \
             end at ff ff at most"
        ))),
        None => Err(Error::invalid(
            "delete_range needs an end at most ff ff: no end would reach the reserved namespace (lists, queues)",
        )),
    }
}

/// The shard of a queue operation (`Enqueue`, `Dequeue`, a task's ack, nack or extend).
fn validate_shard(shard: u16) -> Result<(), Error> {
    if shard >= QUEUE_SHARDS {
        return Err(Error::invalid(format!("a queue has shards 0 to {}, got {shard}", QUEUE_SHARDS - 1)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::Seq;
    use crate::wire::protocol::Reply;
    use crate::wire::test_util::check;

    fn v(n: u64) -> Version {
        Version { seq: Seq(n), index: 0 }
    }

    #[test]
    fn each_request_sends_the_old_op_and_checks_its_reply() {
        let wid = Some(WriteId::new(7, 3));
        let k = Key::from("k");
        check(Ping, Op::Ping, Reply::Pong);
        let got = check(Get { key: k.clone() }, Op::Get { key: k.clone() }, Reply::Value(None));
        assert_eq!(got, None);
        check(GetMany { keys: vec![k.clone()] }, Op::GetMany { keys: vec![k.clone()] }, Reply::Values(vec![None]));
        let put = Put { key: k.clone(), value: b"v".to_vec(), write_id: wid };
        let version = check(
            put,
            Op::Put { key: k.clone(), value: b"v".to_vec(), write_id: wid },
            Reply::Written { version: v(4) },
        );
        assert_eq!(version, v(4));
        check(
            PutIfVersion { key: k.clone(), value: b"v".to_vec(), expected: Some(v(1)), write_id: wid },
            Op::PutIfVersion { key: k.clone(), value: b"v".to_vec(), expected: Some(v(1)), write_id: wid },
            Reply::Written { version: v(2) },
        );
        let removed = check(
            Delete { key: k.clone(), write_id: None },
            Op::Delete { key: k.clone(), write_id: None },
            Reply::Deleted { removed: 1, version: v(5) },
        );
        assert_eq!(removed, Removed { removed: 1, version: v(5) });
        check(
            DeleteRange { start: k.clone(), end: Some(Key::from("z")), write_id: wid },
            Op::DeleteRange { start: k.clone(), end: Some(Key::from("z")), write_id: wid },
            Reply::Deleted { removed: 0, version: v(5) },
        );
        let page = check(
            Scan { start: k.clone(), end: None, limit: 10, reverse: true },
            Op::Scan { start: k.clone(), end: None, limit: 10, reverse: true },
            Reply::ScanPage { items: Vec::new(), resume: Some(Key::from("a")) },
        );
        assert_eq!(page, Page { items: Vec::new(), resume: Some(Key::from("a")) });
        let push_id = PushId { ms: 1, client: 2, n: 3 };
        check(
            Push { key: k.clone(), element: b"e".to_vec(), push_id },
            Op::Push { key: k.clone(), element: b"e".to_vec(), push_id },
            Reply::Written { version: v(1) },
        );
        check(
            Enqueue { queue: "q".into(), shard: 2, task_id: push_id, payload: b"p".to_vec() },
            Op::Enqueue { queue: "q".into(), shard: 2, task_id: push_id, payload: b"p".to_vec() },
            Reply::Written { version: v(1) },
        );
        check(
            Dequeue { queue: "q".into(), shard: 1, start: k.clone(), max: 5, visibility_ms: 100 },
            Op::Dequeue { queue: "q".into(), shard: 1, start: k.clone(), max: 5, visibility_ms: 100 },
            Reply::Tasks { tasks: Vec::new(), resume: None },
        );
        let task = TaskRef { shard: 1, id: push_id, lease: 9 };
        check(
            TaskAck { queue: "q".into(), task },
            Op::TaskAck { queue: "q".into(), task },
            Reply::Written { version: v(1) },
        );
        check(
            TaskNack { queue: "q".into(), task },
            Op::TaskNack { queue: "q".into(), task },
            Reply::Written { version: v(1) },
        );
        check(
            TaskExtend { queue: "q".into(), task, visibility_ms: 5 },
            Op::TaskExtend { queue: "q".into(), task, visibility_ms: 5 },
            Reply::Written { version: v(1) },
        );
        let inner = Op::Push { key: k.clone(), element: b"e".to_vec(), push_id };
        let results = check(
            Batch { ops: vec![inner.clone()] },
            Op::Batch { ops: vec![inner] },
            Reply::Batch { results: vec![Ok(Reply::Written { version: v(1) })] },
        );
        assert_eq!(results.len(), 1);
        let txn_id = WriteId::new(1, 1);
        let committed = check(
            Txn { txn_id, parts: Vec::new(), hold_ms: 100 },
            Op::Txn { txn_id, parts: Vec::new(), hold_ms: 100 },
            Reply::TxnCommitted { versions: vec![vec![v(3)]], values: Vec::new() },
        );
        assert_eq!(committed.versions, vec![vec![v(3)]]);
    }
}
