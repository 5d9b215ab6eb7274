//! The task queue's layout (DESIGN section 9): tasks are keys under the queue's prefix in
//! the reserved namespace, spread over [`QUEUE_SHARDS`] shards so that one queue spans as
//! many ranges as its load splits it into.
//!
//! Task key: `ff ff 'Q' | len(queue) u16 | queue | shard u16 | task id (24 bytes)`. Task ids
//! are like push ids (client clock ms, client id, counter), so each shard is roughly FIFO.
//! The value is a [`TaskRecord`]: the payload, when the task is visible again, and the
//! lease of its current delivery. A dequeue leases visible tasks by rewriting them
//! conditionally on their version (so one delivery wins), an ack deletes the task if the
//! caller's lease is still the current one (leaving a tombstone for a while, so a late
//! retry of its enqueue cannot bring it back), and an expired lease makes the task visible
//! again: delivery is at least once, and an acked task is gone.

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::key::{Key, RESERVED_PREFIX};
use crate::limits::{DEQUEUE_TASKS_MAX, QUEUE_NAME_BYTES_MAX, QUEUE_VISIBILITY_MS_MAX, VALUE_BYTES_MAX};
use crate::lists::{PUSH_ID_BYTES, PushId};

/// Shards of every queue.
pub const QUEUE_SHARDS: u16 = 16;
const QUEUE_TAG: u8 = b'Q';
/// Room in a value for the record around the payload.
pub const TASK_RECORD_OVERHEAD_BYTES: usize = 128;

/// A task as it is stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
    /// Unix ms from which the task may be dequeued (0: now).
    pub visible_at_ms: u64,
    /// The lease of the current delivery (0: never delivered, or nacked).
    pub lease: u64,
    pub deliveries: u32,
    /// Unix ms of the ack (0: not acked). An acked task stays as a tombstone for
    /// [`TASK_TOMBSTONE_MS`], so a late retry of its enqueue cannot bring it back.
    #[serde(default)]
    pub acked_at_ms: u64,
}

/// How long an acked task's tombstone stays (far longer than any client retries an enqueue).
pub const TASK_TOMBSTONE_MS: u64 = 10 * 60 * 1000;

impl TaskRecord {
    pub fn encode(&self) -> Vec<u8> {
        rmp_serde::to_vec_named(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<TaskRecord, Error> {
        rmp_serde::from_slice(bytes).map_err(|e| Error::internal(format!("task record does not decode: {e}")))
    }
}

/// A delivered task, as a consumer names it to ack, nack or extend it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TaskRef {
    pub shard: u16,
    pub id: PushId,
    pub lease: u64,
}

impl std::fmt::Display for TaskRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04x}{}{:016x}", self.shard, self.id, self.lease)
    }
}

impl std::str::FromStr for TaskRef {
    type Err = Error;
    fn from_str(s: &str) -> Result<TaskRef, Error> {
        let bad = || Error::invalid(format!("a task id is 68 hex digits (as dequeue printed it), got {s:?}"));
        if s.len() != 68 || !s.is_ascii() {
            return Err(bad());
        }
        let shard = u16::from_str_radix(&s[..4], 16).map_err(|_| bad())?;
        let id: PushId = s[4..52].parse().map_err(|_| bad())?;
        let lease = u64::from_str_radix(&s[52..], 16).map_err(|_| bad())?;
        if shard >= QUEUE_SHARDS {
            return Err(bad());
        }
        Ok(TaskRef { shard, id, lease })
    }
}

/// A dequeued task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub task: TaskRef,
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
    /// How many times it has been delivered, this time included.
    pub deliveries: u32,
}

pub fn validate_queue(queue: &str) -> Result<(), Error> {
    if queue.is_empty() {
        return Err(Error::invalid("a queue name must not be empty"));
    }
    if queue.len() > QUEUE_NAME_BYTES_MAX {
        return Err(Error::too_large("queue name", queue.len(), QUEUE_NAME_BYTES_MAX));
    }
    Ok(())
}

pub fn validate_payload(payload: &[u8]) -> Result<(), Error> {
    let max = VALUE_BYTES_MAX - TASK_RECORD_OVERHEAD_BYTES;
    if payload.len() > max {
        return Err(Error::too_large("task payload", payload.len(), max));
    }
    Ok(())
}

pub fn validate_dequeue(max: u32, visibility_ms: u64) -> Result<(), Error> {
    if max == 0 || max as usize > DEQUEUE_TASKS_MAX {
        return Err(Error::invalid(format!("dequeue takes 1 to {DEQUEUE_TASKS_MAX} tasks, got {max}")));
    }
    if visibility_ms == 0 || visibility_ms > QUEUE_VISIBILITY_MS_MAX {
        return Err(Error::invalid(format!(
            "visibility must be 1 to {QUEUE_VISIBILITY_MS_MAX} ms, got {visibility_ms}"
        )));
    }
    Ok(())
}

/// The prefix of one shard of `queue`.
pub fn shard_prefix(queue: &str, shard: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(7 + queue.len() + PUSH_ID_BYTES);
    out.extend_from_slice(&RESERVED_PREFIX);
    out.push(QUEUE_TAG);
    out.extend_from_slice(&(queue.len() as u16).to_be_bytes());
    out.extend_from_slice(queue.as_bytes());
    out.extend_from_slice(&shard.to_be_bytes());
    out
}

pub fn task_key(queue: &str, shard: u16, id: PushId) -> Key {
    let mut k = shard_prefix(queue, shard);
    k.extend_from_slice(&id.to_bytes());
    Key(k)
}

/// `[start, end)` of one shard's keys.
pub fn shard_bounds(queue: &str, shard: u16) -> (Key, Key) {
    let p = shard_prefix(queue, shard);
    let mut end = p.clone();
    end.extend_from_slice(&[0xFF; PUSH_ID_BYTES + 1]);
    (Key(p), Key(end))
}

/// The shard and id of a task key of `queue`.
pub fn parse_task_key(queue: &str, key: &Key) -> Option<(u16, PushId)> {
    let mut base = shard_prefix(queue, 0);
    base.truncate(base.len() - 2);
    let rest = key.as_bytes().strip_prefix(base.as_slice())?;
    if rest.len() != 2 + PUSH_ID_BYTES {
        return None;
    }
    let shard = u16::from_be_bytes([rest[0], rest[1]]);
    Some((shard, PushId::from_bytes(&rest[2..])?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::KEY_BYTES_MAX;

    #[test]
    fn task_keys_group_by_queue_and_shard_and_parse_back() {
        let id = PushId { ms: 5, client: 6, n: 7 };
        let k = task_key("jobs", 3, id);
        assert_eq!(parse_task_key("jobs", &k), Some((3, id)));
        assert_eq!(parse_task_key("job", &k), None);
        let (s, e) = shard_bounds("jobs", 3);
        assert!(s <= k && k < e);
        let (s4, _) = shard_bounds("jobs", 4);
        assert!(e <= s4, "shards do not overlap");
        assert!(k >= Key::user_end());
        let longest = "q".repeat(QUEUE_NAME_BYTES_MAX);
        assert!(shard_bounds(&longest, QUEUE_SHARDS - 1).1.len() <= KEY_BYTES_MAX);
        let t = TaskRef { shard: 3, id, lease: 99 };
        assert_eq!(t.to_string().parse::<TaskRef>().unwrap(), t);
        assert!("0".parse::<TaskRef>().is_err());
    }

    #[test]
    fn limits_hold_at_their_boundaries() {
        validate_queue(&"q".repeat(QUEUE_NAME_BYTES_MAX)).unwrap();
        assert!(validate_queue(&"q".repeat(QUEUE_NAME_BYTES_MAX + 1)).is_err());
        assert!(validate_queue("").is_err());
        validate_payload(&vec![0; VALUE_BYTES_MAX - TASK_RECORD_OVERHEAD_BYTES]).unwrap();
        assert!(validate_payload(&vec![0; VALUE_BYTES_MAX - TASK_RECORD_OVERHEAD_BYTES + 1]).is_err());
        let rec = TaskRecord {
            payload: vec![0; VALUE_BYTES_MAX - TASK_RECORD_OVERHEAD_BYTES],
            visible_at_ms: u64::MAX,
            lease: u64::MAX,
            deliveries: u32::MAX,
            acked_at_ms: u64::MAX,
        };
        assert!(rec.encode().len() <= VALUE_BYTES_MAX);
        validate_dequeue(DEQUEUE_TASKS_MAX as u32, QUEUE_VISIBILITY_MS_MAX).unwrap();
        assert!(validate_dequeue(DEQUEUE_TASKS_MAX as u32 + 1, 1).is_err());
        assert!(validate_dequeue(1, QUEUE_VISIBILITY_MS_MAX + 1).is_err());
        assert!(validate_dequeue(0, 1).is_err());
    }
}
