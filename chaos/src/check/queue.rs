//! Queue: every acknowledged enqueue is delivered at least once.

use std::collections::HashSet;

use super::Verdict;
use crate::history::{Event, Op, Outcome};

pub fn check(history: &[Event]) -> Verdict {
    let delivered: HashSet<u64> = history
        .iter()
        .filter_map(|e| match e.op {
            Op::Deliver { id } if e.outcome == Outcome::Ok => Some(id),
            _ => None,
        })
        .collect();
    let mut lost: Vec<u64> = history
        .iter()
        .filter_map(|e| match e.op {
            Op::Enqueue { id } if e.outcome == Outcome::Ok && !delivered.contains(&id) => Some(id),
            _ => None,
        })
        .collect();
    lost.sort_unstable();
    match lost.as_slice() {
        [] => Verdict::Valid,
        _ => Verdict::Invalid(format!(
            "{} acknowledged tasks never delivered, first {:?}",
            lost.len(),
            &lost[..lost.len().min(10)]
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_task_is_caught() {
        let ev = |outcome, op| Event { process: 1, invoked_ns: 1, completed_ns: 2, outcome, op };
        let h = vec![
            ev(Outcome::Ok, Op::Enqueue { id: 1 }),
            ev(Outcome::Ok, Op::Deliver { id: 1 }),
            ev(Outcome::Ok, Op::Deliver { id: 1 }),
            ev(Outcome::Unknown, Op::Enqueue { id: 2 }),
        ];
        assert_eq!(check(&h), Verdict::Valid, "twice is fine; an unknown enqueue may be lost");
        let mut lost = h.clone();
        lost.push(ev(Outcome::Ok, Op::Enqueue { id: 3 }));
        assert!(check(&lost).is_violation());
    }
}
