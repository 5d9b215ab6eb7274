//! A history: what each client process invoked, and how each operation completed, with
//! monotonic timestamps. Stored as JSON lines, one [`Event`] per line, so a failing run
//! can be checked again later.

use serde::{Deserialize, Serialize};

/// How an operation ended, as the client saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// It took effect.
    Ok,
    /// It did not take effect.
    Fail,
    /// It may or may not have taken effect (a timeout, a lost connection).
    Unknown,
}

/// What an operation did. Values are small integers so histories stay readable; each
/// written value is unique per key, so reads say which write they saw.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Register workload: read `key` (`value`: what the read returned, filled in on
    /// completion; `None`: absent).
    Read { key: String, value: Option<u64> },
    /// Register workload: write `value` to `key`; with `ttl_ms`, the key expires that long
    /// after the write takes effect (by its owner's clock).
    Write {
        key: String,
        value: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ttl_ms: Option<u64>,
    },
    /// List workload: push the element `id` to the list at `key`.
    Append { key: String, id: u64 },
    /// List workload: read the list at `key` (`ids`: what it returned).
    ReadList { key: String, ids: Vec<u64> },
    /// Bank workload: the accounts were opened holding `total` between them.
    BankOpen { total: i64 },
    /// Bank workload: move `amount` from one account to another (one transaction).
    Transfer { from: String, to: String, amount: i64 },
    /// Bank workload: a consistent read of every balance (`total`: their sum).
    ReadTotal { total: i64 },
    /// Counter workload: add `by` to the counter at `key` (`result`: the value after, filled
    /// in on success).
    Incr { key: String, by: i64, result: Option<i64> },
    /// Counter workload: read the counter at `key` (absent reads as 0).
    ReadCounter { key: String, value: i64 },
    /// Queue workload: enqueue the task `id`.
    Enqueue { id: u64 },
    /// Queue workload: the task `id` was delivered to a consumer.
    Deliver { id: u64 },
}

/// The process that reads the final state after healing: its reads are the final lists,
/// the final total and the final drain of the queue.
pub const FINAL_PROCESS: u32 = u32::MAX;

/// One line of a history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The client process (one operation at a time per process).
    pub process: u32,
    /// Invocation time, ns since the run began (monotonic clock).
    pub invoked_ns: u64,
    /// Completion time; `u64::MAX` when the outcome is unknown (it may take effect at any
    /// time after the invocation).
    pub completed_ns: u64,
    pub outcome: Outcome,
    pub op: Op,
}

/// Writes a history as JSON lines.
pub fn to_json_lines(events: &[Event]) -> String {
    let mut out = String::new();
    for e in events {
        if let Ok(line) = serde_json::to_string(e) {
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}

/// Reads a history from JSON lines; names the first bad line.
pub fn from_json_lines(text: &str) -> Result<Vec<Event>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| format!("history line {}: {e}", i + 1)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histories_round_trip_through_json_lines() {
        let events = vec![
            Event {
                process: 1,
                invoked_ns: 5,
                completed_ns: 9,
                outcome: Outcome::Ok,
                op: Op::Write { key: "k".into(), value: 3, ttl_ms: Some(250) },
            },
            Event {
                process: 2,
                invoked_ns: 6,
                completed_ns: u64::MAX,
                outcome: Outcome::Unknown,
                op: Op::ReadList { key: "l".into(), ids: vec![1, 2] },
            },
        ];
        let text = to_json_lines(&events);
        assert_eq!(from_json_lines(&text).unwrap(), events);
        assert!(from_json_lines("{\"nope\": 1}\n").unwrap_err().contains("line 1"));
    }
}
