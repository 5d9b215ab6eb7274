//! Runs every checker that applies to a history. The final state is in the history itself
//! (the events of [`FINAL_PROCESS`]), so a saved history is checked again exactly as the
//! run checked it.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::check::{self, Verdict};
use crate::history::{Event, FINAL_PROCESS, Op, Outcome};
use crate::workload::Workload;

#[derive(Clone, Debug, Serialize)]
pub struct WorkloadVerdict {
    pub workload: Workload,
    /// `valid`, `invalid` or `unknown`.
    pub verdict: &'static str,
    pub detail: String,
}

impl WorkloadVerdict {
    pub fn is_violation(&self) -> bool {
        self.verdict == "invalid"
    }
}

pub fn check_all(history: &[Event]) -> Vec<WorkloadVerdict> {
    let mut out = Vec::new();
    let has = |f: fn(&Op) -> bool| history.iter().any(|e| f(&e.op));
    if has(|op| matches!(op, Op::Read { .. } | Op::Write { .. })) {
        out.push(verdict(Workload::Register, check::register::check(history)));
    }
    if has(|op| matches!(op, Op::Append { .. } | Op::ReadList { .. })) {
        out.push(verdict(Workload::ListAppend, list(history)));
    }
    if has(|op| matches!(op, Op::BankOpen { .. } | Op::ReadTotal { .. } | Op::Transfer { .. })) {
        out.push(verdict(Workload::Bank, bank(history)));
    }
    if has(|op| matches!(op, Op::Enqueue { .. } | Op::Deliver { .. })) {
        out.push(verdict(Workload::Queue, check::queue::check(history)));
    }
    if has(|op| matches!(op, Op::Incr { .. } | Op::ReadCounter { .. })) {
        out.push(verdict(Workload::Counter, check::counter::check(history)));
    }
    out
}

fn verdict(workload: Workload, v: Verdict) -> WorkloadVerdict {
    let (verdict, detail) = match v {
        Verdict::Valid => ("valid", String::new()),
        Verdict::Invalid(why) => ("invalid", why),
        Verdict::Unknown(why) => ("unknown", why),
    };
    WorkloadVerdict { workload, verdict, detail }
}

fn is_final(e: &Event) -> bool {
    e.process == FINAL_PROCESS && e.outcome == Outcome::Ok
}

fn list(history: &[Event]) -> Verdict {
    let mut finals: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for e in history.iter().filter(|e| is_final(e)) {
        if let Op::ReadList { key, ids } = &e.op {
            finals.insert(key.clone(), ids.clone());
        }
    }
    let pushed_to = history.iter().filter_map(|e| match &e.op {
        Op::Append { key, .. } => Some(key),
        _ => None,
    });
    for key in pushed_to {
        if !finals.contains_key(key) {
            return Verdict::Invalid(format!("list {key}: no final read in the history"));
        }
    }
    check::list::check(history, &finals)
}

fn bank(history: &[Event]) -> Verdict {
    let opened = history.iter().find_map(|e| match e.op {
        Op::BankOpen { total } if e.outcome == Outcome::Ok => Some(total),
        _ => None,
    });
    let mut last = history.iter().filter(|e| is_final(e)).filter_map(|e| match e.op {
        Op::ReadTotal { total } => Some(total),
        _ => None,
    });
    match (opened, last.next_back()) {
        (Some(opened), Some(last)) => check::bank::check(history, opened, last),
        (None, _) => Verdict::Invalid("the history does not say what the accounts opened with".into()),
        (_, None) => Verdict::Invalid("no final total in the history".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(process: u32, op: Op) -> Event {
        Event { process, invoked_ns: 1, completed_ns: 2, outcome: Outcome::Ok, op }
    }

    #[test]
    fn every_workload_in_a_history_is_checked_with_its_final_state() {
        let h = vec![
            ev(1, Op::Write { key: "r".into(), value: 1, ttl_ms: None }),
            ev(2, Op::Append { key: "l".into(), id: 7 }),
            ev(FINAL_PROCESS, Op::ReadList { key: "l".into(), ids: vec![7] }),
            ev(FINAL_PROCESS, Op::BankOpen { total: 50 }),
            ev(3, Op::ReadTotal { total: 50 }),
            ev(FINAL_PROCESS, Op::ReadTotal { total: 50 }),
            ev(4, Op::Enqueue { id: 9 }),
            ev(FINAL_PROCESS, Op::Deliver { id: 9 }),
            ev(5, Op::Incr { key: "c".into(), by: 3, result: Some(3) }),
            ev(FINAL_PROCESS, Op::ReadCounter { key: "c".into(), value: 3 }),
        ];
        let v = check_all(&h);
        assert_eq!(v.len(), 5);
        assert!(v.iter().all(|v| v.verdict == "valid"), "{v:?}");
        // A partial transaction, a lost element and a lost task each show.
        let mut bad = h.clone();
        bad[4] = ev(3, Op::ReadTotal { total: 40 });
        bad[2] = ev(FINAL_PROCESS, Op::ReadList { key: "l".into(), ids: vec![] });
        bad.remove(7);
        bad.pop();
        bad.push(ev(FINAL_PROCESS, Op::ReadCounter { key: "c".into(), value: 6 }));
        let v = check_all(&bad);
        let invalid: Vec<Workload> = v.iter().filter(|v| v.is_violation()).map(|v| v.workload).collect();
        assert_eq!(invalid, vec![Workload::ListAppend, Workload::Bank, Workload::Queue, Workload::Counter]);
        // A final state missing from the history is a violation, not a pass.
        let no_final = vec![ev(2, Op::Append { key: "l".into(), id: 7 })];
        assert!(check_all(&no_final)[0].is_violation());
    }
}
