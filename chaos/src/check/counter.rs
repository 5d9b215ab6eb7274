//! Counter: every acknowledged increment is counted exactly once, and no observation of a
//! counter (a read, or the value an increment returned) is outside what the increments
//! around it allow.
//!
//! Per key, with increments that are all positive:
//! - an observation in `[call, ret]` is at least the sum of the acknowledged increments that
//!   completed before `call` (plus its own amount, for an increment's result), and at most
//!   the sum of every increment not refused that was invoked before `ret`;
//! - the final value is the sum of the acknowledged increments plus some subset of those
//!   whose outcome is unknown (each applied at most once): a lost increment or one applied
//!   twice has no such subset (increments are drawn from a wide range, so sums rarely
//!   collide).

use std::collections::BTreeMap;

use super::Verdict;
use crate::history::{Event, FINAL_PROCESS, Op, Outcome};

/// The unknown increments whose subset sums the checker enumerates, summed; past it the
/// final check says `Unknown`.
pub const UNKNOWN_SUM_MAX: i64 = 10_000_000;

#[derive(Default)]
struct KeyHistory {
    /// (completed, by) of acknowledged increments.
    acked: Vec<(u64, i64)>,
    /// (invoked, by) of every increment not refused.
    attempted: Vec<(u64, i64)>,
    /// Amounts of increments whose outcome is unknown.
    unknown: Vec<i64>,
    /// (call, ret, value seen, own amount) of reads and acknowledged increments.
    observed: Vec<(u64, u64, i64, i64)>,
    last: Option<i64>,
}

pub fn check(history: &[Event]) -> Verdict {
    let mut keys: BTreeMap<&str, KeyHistory> = BTreeMap::new();
    for e in history {
        match (&e.op, e.outcome) {
            (Op::Incr { .. }, Outcome::Fail) | (Op::ReadCounter { .. }, Outcome::Fail | Outcome::Unknown) => {}
            (Op::Incr { key, by, result }, outcome) => {
                if *by <= 0 {
                    return Verdict::Invalid(format!("key {key}: the history holds an increment of {by}"));
                }
                let k = keys.entry(key).or_default();
                k.attempted.push((e.invoked_ns, *by));
                match (outcome, result) {
                    (Outcome::Ok, Some(r)) => {
                        k.acked.push((e.completed_ns, *by));
                        k.observed.push((e.invoked_ns, e.completed_ns, *r, *by));
                    }
                    (Outcome::Ok, None) => {
                        return Verdict::Invalid(format!("key {key}: an acknowledged increment has no result"));
                    }
                    _ => k.unknown.push(*by),
                }
            }
            (Op::ReadCounter { key, value }, Outcome::Ok) => {
                let k = keys.entry(key).or_default();
                if e.process == FINAL_PROCESS {
                    k.last = Some(*value);
                } else {
                    k.observed.push((e.invoked_ns, e.completed_ns, *value, 0));
                }
            }
            _ => {}
        }
    }
    let mut unknown = Vec::new();
    for (key, k) in &keys {
        match check_key(k) {
            Verdict::Valid => {}
            Verdict::Invalid(why) => return Verdict::Invalid(format!("key {key}: {why}")),
            Verdict::Unknown(why) => unknown.push(format!("key {key}: {why}")),
        }
    }
    if unknown.is_empty() { Verdict::Valid } else { Verdict::Unknown(unknown.join("; ")) }
}

/// Sums of `(time, amount)` sorted by time, for "the total of those at or before t".
struct Prefix {
    times: Vec<u64>,
    sums: Vec<i64>,
}

impl Prefix {
    fn new(mut items: Vec<(u64, i64)>) -> Prefix {
        items.sort_unstable();
        let mut sum = 0i64;
        let sums = items.iter().map(|(_, by)| {
            sum = sum.saturating_add(*by);
            sum
        });
        let sums = sums.collect();
        Prefix { times: items.iter().map(|(t, _)| *t).collect(), sums }
    }

    /// The total of the items strictly before `t`.
    fn before(&self, t: u64) -> i64 {
        match self.times.partition_point(|x| *x < t) {
            0 => 0,
            n => self.sums[n - 1],
        }
    }

    /// The total of the items at or before `t`.
    fn through(&self, t: u64) -> i64 {
        match self.times.partition_point(|x| *x <= t) {
            0 => 0,
            n => self.sums[n - 1],
        }
    }
}

fn check_key(k: &KeyHistory) -> Verdict {
    let acked = Prefix::new(k.acked.clone());
    let attempted = Prefix::new(k.attempted.clone());
    for &(call, ret, seen, own) in &k.observed {
        let (low, high) = (acked.before(call).saturating_add(own), attempted.through(ret));
        if seen < low || seen > high {
            let what = if own > 0 { format!("an increment by {own} returned") } else { "a read saw".to_string() };
            return Verdict::Invalid(format!(
                "{what} {seen} in [{call}, {ret}] ns, outside [{low}, {high}] (what the increments around it allow)"
            ));
        }
    }
    let Some(last) = k.last else {
        return Verdict::Invalid("no final read".to_string());
    };
    let acked_sum: i64 = k.acked.iter().map(|(_, by)| by).sum();
    let extra = last - acked_sum;
    let unknown_sum: i64 = k.unknown.iter().sum();
    if extra < 0 {
        return Verdict::Invalid(format!(
            "the final value {last} is below the {acked_sum} of the acknowledged increments: an increment was lost"
        ));
    }
    if extra > unknown_sum {
        return Verdict::Invalid(format!(
            "the final value {last} is {extra} over the acknowledged increments, more than the {unknown_sum} of those \
             whose outcome is unknown: an increment was counted twice"
        ));
    }
    if unknown_sum > UNKNOWN_SUM_MAX {
        return Verdict::Unknown(format!("unknown increments sum to {unknown_sum}, over {UNKNOWN_SUM_MAX}"));
    }
    // Which sums the unknown increments can make, each used at most once.
    let mut reachable = vec![false; unknown_sum as usize + 1];
    reachable[0] = true;
    for &by in &k.unknown {
        for s in (by as usize..reachable.len()).rev() {
            reachable[s] |= reachable[s - by as usize];
        }
    }
    if !reachable[extra as usize] {
        return Verdict::Invalid(format!(
            "the final value {last} is {extra} over the acknowledged increments, which no set of the unknown \
             increments {:?} adds up to: one was lost or counted twice",
            k.unknown
        ));
    }
    Verdict::Valid
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incr(p: u32, from: u64, to: u64, outcome: Outcome, by: i64, result: Option<i64>) -> Event {
        Event { process: p, invoked_ns: from, completed_ns: to, outcome, op: Op::Incr { key: "c".into(), by, result } }
    }
    fn read(p: u32, from: u64, to: u64, value: i64) -> Event {
        Event {
            process: p,
            invoked_ns: from,
            completed_ns: to,
            outcome: Outcome::Ok,
            op: Op::ReadCounter { key: "c".into(), value },
        }
    }

    #[test]
    fn acknowledged_increments_count_once_and_unknown_ones_at_most_once() {
        let base = vec![incr(1, 0, 10, Outcome::Ok, 5, Some(5)), incr(2, 5, 15, Outcome::Ok, 7, Some(12))];
        let with = |mut h: Vec<Event>, extra: Vec<Event>| {
            h.extend(extra);
            h
        };
        assert_eq!(check(&with(base.clone(), vec![read(FINAL_PROCESS, 100, 101, 12)])), Verdict::Valid);
        // Lost: the final value misses an acknowledged increment.
        assert!(check(&with(base.clone(), vec![read(FINAL_PROCESS, 100, 101, 5)])).is_violation());
        // Counted twice: 5 more than every increment.
        assert!(check(&with(base.clone(), vec![read(FINAL_PROCESS, 100, 101, 17)])).is_violation());
        // An unknown increment may be in or out, but only once.
        let unknown = incr(3, 20, u64::MAX, Outcome::Unknown, 100, None);
        for (last, ok) in [(12, true), (112, true), (212, false), (62, false)] {
            let h = with(base.clone(), vec![unknown.clone(), read(FINAL_PROCESS, 100, 101, last)]);
            assert_eq!(!check(&h).is_violation(), ok, "final {last}");
        }
        // A refused increment never counts.
        let refused = incr(3, 20, 30, Outcome::Fail, 100, None);
        assert!(check(&with(base.clone(), vec![refused, read(FINAL_PROCESS, 100, 101, 112)])).is_violation());
        // No final read is a violation, not a pass.
        assert!(check(&base).is_violation());
    }

    #[test]
    fn observations_outside_what_the_increments_allow_are_caught() {
        let h = |extra: Event| vec![incr(1, 0, 10, Outcome::Ok, 5, Some(5)), extra, read(FINAL_PROCESS, 100, 101, 12)];
        let later = |r| incr(2, 20, 30, Outcome::Ok, 7, Some(r));
        assert_eq!(check(&h(later(12))), Verdict::Valid);
        // A result that ignores the increment completed before it began (a stale read).
        assert!(check(&h(later(7))).is_violation());
        // A read that sees an increment not yet invoked, or misses one already acknowledged.
        let mut both = h(later(12));
        both.push(read(3, 11, 12, 12));
        assert!(check(&both).is_violation(), "saw the future");
        let mut stale = h(later(12));
        stale.push(read(3, 40, 41, 5));
        assert!(check(&stale).is_violation(), "missed an acknowledged increment");
        let mut fine = h(later(12));
        fine.push(read(3, 25, 26, 5));
        assert_eq!(check(&fine), Verdict::Valid, "concurrent with the second increment");
    }
}
