//! Per-key linearizability of a read/write register (the algorithm of Wing & Gong as
//! Porcupine runs it): search for an order of the operations, consistent with real time,
//! in which every read returns the latest write. Keys are independent, so each is checked
//! alone. A failed operation took no effect and is left out; an unknown read says nothing
//! and is left out; an unknown write may take effect at any time after its invocation (its
//! completion is at infinity, so it may also linearize after everything, i.e. never).
//!
//! A write with a TTL leaves its value until it expires, then nothing. Its expiry is its
//! effect time plus the TTL, and the effect time is somewhere in the write's interval; so a
//! read may see the value if it began before the latest possible expiry (the write's
//! completion plus the TTL), and may see the key absent if it ended after the earliest
//! possible expiry (the write's invocation plus the TTL), each with [`EXPIRY_SLACK_NS`] for
//! the millisecond rounding of the owner's clock. A read that saw it expired leaves the
//! register empty: expiry is permanent until the next write. An expired key is therefore
//! treated as absent only after its expiry.

use std::collections::{BTreeMap, HashSet};

use super::Verdict;
use crate::history::{Event, Op, Outcome};

/// Operations of one key the search will take on.
pub const OPS_PER_KEY_MAX: usize = 4096;
/// Search steps per key before giving up with `Unknown`.
pub const STEPS_PER_KEY_MAX: u64 = 5_000_000;
/// How far an expiry may be from the history's clock: the owner stamps and checks expiries
/// in whole milliseconds of its wall clock, the history records a monotonic clock.
pub const EXPIRY_SLACK_NS: u64 = 5_000_000;

#[derive(Clone, Copy, Debug)]
enum RegOp {
    Read(Option<u64>),
    /// A value, and its TTL in ns if it expires.
    Write(u64, Option<u64>),
}

/// The register: empty, or the value of the write at this index (its interval and TTL
/// say when it may expire).
type State = Option<(u64, usize)>;

pub fn check(history: &[Event]) -> Verdict {
    let mut by_key: BTreeMap<&str, Vec<(u64, u64, RegOp)>> = BTreeMap::new();
    for e in history {
        let (key, op) = match (&e.op, e.outcome) {
            (_, Outcome::Fail) => continue,
            (Op::Read { .. }, Outcome::Unknown) => continue,
            (Op::Read { key, value }, Outcome::Ok) => (key, RegOp::Read(*value)),
            (Op::Write { key, value, ttl_ms }, _) => {
                (key, RegOp::Write(*value, ttl_ms.map(|ms| ms.saturating_mul(1_000_000))))
            }
            _ => continue,
        };
        let completed = if e.outcome == Outcome::Unknown { u64::MAX } else { e.completed_ns };
        by_key.entry(key.as_str()).or_default().push((e.invoked_ns, completed, op));
    }
    let mut unknown = Vec::new();
    for (key, ops) in by_key {
        match check_key(&ops) {
            Verdict::Valid => {}
            Verdict::Invalid(why) => return Verdict::Invalid(format!("key {key}: {why}")),
            Verdict::Unknown(why) => unknown.push(format!("key {key}: {why}")),
        }
    }
    if unknown.is_empty() { Verdict::Valid } else { Verdict::Unknown(unknown.join("; ")) }
}

/// One entry of the time line: an operation's call or return.
struct Entry {
    time: u64,
    op: usize,
    call: bool,
}

fn check_key(ops: &[(u64, u64, RegOp)]) -> Verdict {
    if ops.len() > OPS_PER_KEY_MAX {
        return Verdict::Unknown(format!("{} operations, over the {OPS_PER_KEY_MAX} the search takes", ops.len()));
    }
    let mut entries: Vec<Entry> = Vec::with_capacity(ops.len() * 2);
    for (i, (call, ret, _)) in ops.iter().enumerate() {
        entries.push(Entry { time: *call, op: i, call: true });
        entries.push(Entry { time: *ret, op: i, call: false });
    }
    // Calls before returns at equal times: operations that touch are concurrent.
    entries.sort_by_key(|e| (e.time, !e.call));
    let n = entries.len();
    // A doubly linked list over entry indices, with a head sentinel at `n`.
    let mut next: Vec<usize> = (0..=n).map(|i| if i == n { if n == 0 { n } else { 0 } } else { i + 1 }).collect();
    let mut prev: Vec<usize> = (0..=n)
        .map(|i| {
            if i == 0 {
                n
            } else if i == n {
                n - 1
            } else {
                i - 1
            }
        })
        .collect();
    let mut ret_of = vec![0usize; ops.len()];
    for (idx, e) in entries.iter().enumerate() {
        if !e.call {
            ret_of[e.op] = idx;
        }
    }
    let words = ops.len().div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, State)> = HashSet::new();
    let mut stack: Vec<(usize, State)> = Vec::new();
    let mut state: State = None;
    let mut cur = next[n];
    let mut steps = 0u64;
    let unlink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, i: usize| {
        let (p, nx) = (prev[i], next[i]);
        next[p] = nx;
        prev[nx] = p;
    };
    let relink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, i: usize| {
        let (p, nx) = (prev[i], next[i]);
        next[p] = i;
        prev[nx] = i;
    };
    while next[n] != n {
        steps += 1;
        if steps > STEPS_PER_KEY_MAX {
            return Verdict::Unknown(format!("no verdict within {STEPS_PER_KEY_MAX} search steps"));
        }
        if cur != n && entries[cur].call {
            let op = entries[cur].op;
            let after = match ops[op].2 {
                RegOp::Write(v, _) => Some(Some((v, op))),
                RegOp::Read(seen) => read_from(ops, state, seen, ops[op].0, ops[op].1),
            };
            if let Some(after) = after {
                let mut lin = linearized.clone();
                lin[op / 64] |= 1 << (op % 64);
                if cache.insert((lin.clone(), after)) {
                    stack.push((cur, state));
                    linearized = lin;
                    state = after;
                    unlink(&mut next, &mut prev, ret_of[op]);
                    unlink(&mut next, &mut prev, cur);
                    cur = next[n];
                    continue;
                }
            }
            cur = next[cur];
            continue;
        }
        // An operation returned before being linearized (or the scan passed the end with
        // calls that cannot go next): undo the last choice.
        let Some((call_idx, before)) = stack.pop() else {
            return Verdict::Invalid(describe(ops, &entries, if cur == n { next[n] } else { cur }));
        };
        let op = entries[call_idx].op;
        linearized[op / 64] &= !(1 << (op % 64));
        state = before;
        relink(&mut next, &mut prev, ret_of[op]);
        relink(&mut next, &mut prev, call_idx);
        cur = next[call_idx];
    }
    Verdict::Valid
}

/// The register after a read of `seen` in `[call, ret]` from `state`, if the read can
/// see that.
fn read_from(ops: &[(u64, u64, RegOp)], state: State, seen: Option<u64>, call: u64, ret: u64) -> Option<State> {
    let Some((value, write)) = state else {
        return seen.is_none().then_some(None);
    };
    let (w_call, w_ret, op) = ops[write];
    let ttl_ns = match op {
        RegOp::Write(_, Some(ttl_ns)) => ttl_ns,
        _ => return (seen == Some(value)).then_some(state),
    };
    match seen {
        Some(v) if v == value => {
            let latest_expiry = w_ret.saturating_add(ttl_ns).saturating_add(EXPIRY_SLACK_NS);
            (call < latest_expiry).then_some(state)
        }
        Some(_) => None,
        None => {
            let earliest_expiry = w_call.saturating_add(ttl_ns).saturating_sub(EXPIRY_SLACK_NS);
            (ret >= earliest_expiry).then_some(None)
        }
    }
}

fn describe(ops: &[(u64, u64, RegOp)], entries: &[Entry], at: usize) -> String {
    match entries.get(at).map(|e| (e.op, ops[e.op])) {
        Some((i, (call, ret, op))) => {
            format!(
                "no linearization: operation {i} ({op:?}, invoked at {call} ns, completed at {ret} ns) cannot be placed"
            )
        }
        None => "no linearization".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(process: u32, from: u64, to: u64, outcome: Outcome, op: Op) -> Event {
        Event { process, invoked_ns: from, completed_ns: to, outcome, op }
    }
    fn w(p: u32, from: u64, to: u64, v: u64) -> Event {
        ev(p, from, to, Outcome::Ok, Op::Write { key: "k".into(), value: v, ttl_ms: None })
    }
    /// A write whose key expires `ttl_ms` after it (times here are in ms).
    fn wt(p: u32, from: u64, to: u64, v: u64, ttl_ms: u64) -> Event {
        ev(p, from * MS, to * MS, Outcome::Ok, Op::Write { key: "k".into(), value: v, ttl_ms: Some(ttl_ms) })
    }
    fn rt(p: u32, from: u64, to: u64, v: Option<u64>) -> Event {
        r(p, from * MS, to * MS, v)
    }
    const MS: u64 = 1_000_000;

    #[test]
    fn an_expired_key_is_absent_only_after_its_expiry() {
        // Written in [0, 10] ms with a 100 ms TTL: it expires somewhere in [100, 110] ms.
        let ok = |h: &[Event]| check(h) == Verdict::Valid;
        assert!(ok(&[wt(1, 0, 10, 1, 100), rt(2, 20, 30, Some(1)), rt(2, 120, 130, None)]));
        // Around the expiry either answer is right.
        assert!(ok(&[wt(1, 0, 10, 1, 100), rt(2, 105, 106, Some(1))]));
        assert!(ok(&[wt(1, 0, 10, 1, 100), rt(2, 105, 106, None)]));
        // Absent before the earliest expiry: a lost write.
        assert!(check(&[wt(1, 0, 10, 1, 100), rt(2, 50, 60, None)]).is_violation());
        // Still there well after the latest expiry: the key never expired.
        assert!(check(&[wt(1, 0, 10, 1, 100), rt(2, 200, 210, Some(1))]).is_violation());
        // Seen expired, then seen again: expiry does not come undone.
        let h = [wt(1, 0, 10, 1, 100), rt(2, 103, 104, None), rt(2, 106, 107, Some(1))];
        assert!(check(&h).is_violation());
        // A plain write after it clears the TTL; a TTL write after a plain one sets it.
        assert!(ok(&[wt(1, 0, 10, 1, 100), w(1, 20 * MS, 30 * MS, 2), rt(2, 500, 510, Some(2))]));
        assert!(ok(&[w(1, 0, 10 * MS, 2), wt(1, 20, 30, 3, 50), rt(2, 500, 510, None)]));
        // An unknown TTL write may land late, so its value may be seen any time later.
        let unknown = ev(1, 0, 5, Outcome::Unknown, Op::Write { key: "k".into(), value: 7, ttl_ms: Some(1) });
        assert!(ok(&[unknown.clone(), rt(2, 900, 901, Some(7))]));
        assert!(ok(&[unknown, rt(2, 900, 901, None)]));
    }
    fn r(p: u32, from: u64, to: u64, v: Option<u64>) -> Event {
        ev(p, from, to, Outcome::Ok, Op::Read { key: "k".into(), value: v })
    }

    #[test]
    fn sequential_and_concurrent_histories_that_are_linearizable_pass() {
        assert_eq!(check(&[]), Verdict::Valid);
        assert_eq!(check(&[r(1, 0, 1, None), w(1, 2, 3, 1), r(2, 4, 5, Some(1))]), Verdict::Valid);
        // Overlapping write and read: the read may see either.
        assert_eq!(check(&[w(1, 0, 10, 1), r(2, 5, 6, None)]), Verdict::Valid);
        assert_eq!(check(&[w(1, 0, 10, 1), r(2, 5, 6, Some(1))]), Verdict::Valid);
        // Two concurrent writes, then reads agreeing on the second.
        let h = [w(1, 0, 10, 1), w(2, 0, 10, 2), r(3, 11, 12, Some(1)), r(3, 13, 14, Some(1))];
        assert_eq!(check(&h), Verdict::Valid);
        // An unknown write may have happened...
        let unknown = ev(1, 0, 5, Outcome::Unknown, Op::Write { key: "k".into(), value: 7, ttl_ms: None });
        assert_eq!(check(&[unknown.clone(), r(2, 20, 21, Some(7))]), Verdict::Valid);
        // ...or not.
        assert_eq!(check(&[unknown, r(2, 20, 21, None)]), Verdict::Valid);
        // A failed write never happened.
        let failed = ev(1, 0, 5, Outcome::Fail, Op::Write { key: "k".into(), value: 8, ttl_ms: None });
        assert!(check(&[failed, r(2, 20, 21, Some(8))]).is_violation());
    }

    #[test]
    fn a_stale_read_a_lost_write_and_a_read_from_nowhere_are_caught() {
        // Stale read: after the write completed, a read still sees the old value.
        let h = [w(1, 0, 1, 1), w(1, 2, 3, 2), r(2, 4, 5, Some(1))];
        assert!(check(&h).is_violation(), "{:?}", check(&h));
        // Lost write: acknowledged, then read as absent.
        let h = [w(1, 0, 1, 1), r(2, 2, 3, None)];
        assert!(check(&h).is_violation());
        // A value nobody wrote.
        assert!(check(&[r(1, 0, 1, Some(99))]).is_violation());
        // Reads going back in time: 2 then 1, after both writes completed in that order.
        let h = [w(1, 0, 1, 1), w(1, 2, 3, 2), r(2, 4, 5, Some(2)), r(2, 6, 7, Some(1))];
        assert!(check(&h).is_violation());
        // Another key's history is independent.
        let other = ev(3, 0, 1, Outcome::Ok, Op::Read { key: "j".into(), value: None });
        assert_eq!(check(&[w(1, 0, 1, 1), other]), Verdict::Valid);
    }

    /// Histories made by a real register (each operation takes effect at a point inside
    /// its interval) are always accepted, whatever the overlap; changing one read's value
    /// to one never written is always caught.
    #[test]
    fn generated_linearizable_histories_pass_and_corrupted_ones_fail() {
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut rand = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        for round in 0..200 {
            let mut value: Option<u64> = None;
            let mut events = Vec::new();
            let mut t = 0u64;
            for i in 0..(5 + rand(30)) {
                // The effect happens at `t`; the interval stretches around it.
                t += 1 + rand(5);
                let (from, to) = (t.saturating_sub(rand(20)), t + rand(20));
                if rand(2) == 0 {
                    value = Some(round * 1000 + i);
                    events.push(w((i % 4) as u32, from, to, round * 1000 + i));
                } else {
                    events.push(r((i % 4) as u32, from, to, value));
                }
            }
            assert_eq!(check(&events), Verdict::Valid, "round {round}: {events:?}");
            if let Some(i) = events.iter().position(|e| matches!(e.op, Op::Read { .. })) {
                events[i].op = Op::Read { key: "k".into(), value: Some(u64::MAX) };
                assert!(check(&events).is_violation(), "round {round}");
            }
        }
    }
}
