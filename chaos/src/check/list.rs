//! List-append (push): every acknowledged push is in the final list, no element appears
//! twice, and every successful read is a prefix of the final list.

use std::collections::{BTreeMap, HashSet};

use super::Verdict;
use crate::history::{Event, Op, Outcome};

pub fn check(history: &[Event], final_lists: &BTreeMap<String, Vec<u64>>) -> Verdict {
    let empty = Vec::new();
    for (key, list) in final_lists {
        let mut seen = HashSet::new();
        if let Some(dup) = list.iter().find(|id| !seen.insert(**id)) {
            return Verdict::Invalid(format!("list {key}: element {dup} appears twice"));
        }
    }
    for e in history.iter().filter(|e| e.outcome == Outcome::Ok) {
        match &e.op {
            Op::Append { key, id } if !final_lists.get(key).unwrap_or(&empty).contains(id) => {
                return Verdict::Invalid(format!("list {key}: acknowledged element {id} is lost"));
            }
            Op::ReadList { key, ids } => {
                let last = final_lists.get(key).unwrap_or(&empty);
                if ids.len() > last.len() || last[..ids.len()] != ids[..] {
                    return Verdict::Invalid(format!(
                        "list {key}: a read at {} ns returned {ids:?}, not a prefix of the final list",
                        e.invoked_ns
                    ));
                }
            }
            _ => {}
        }
    }
    Verdict::Valid
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(op: Op) -> Event {
        Event { process: 1, invoked_ns: 1, completed_ns: 2, outcome: Outcome::Ok, op }
    }

    #[test]
    fn lost_duplicated_and_reordered_elements_are_caught() {
        let fin: BTreeMap<String, Vec<u64>> = [("l".to_string(), vec![1, 2, 3])].into();
        let append = |id| ok(Op::Append { key: "l".into(), id });
        let read = |ids: Vec<u64>| ok(Op::ReadList { key: "l".into(), ids });
        assert_eq!(check(&[append(1), append(3), read(vec![1, 2])], &fin), Verdict::Valid);
        // An unknown append may be missing.
        let unknown = Event { outcome: Outcome::Unknown, ..append(9) };
        assert_eq!(check(&[unknown], &fin), Verdict::Valid);
        assert!(check(&[append(4)], &fin).is_violation(), "lost");
        assert!(check(&[read(vec![2])], &fin).is_violation(), "not a prefix");
        assert!(check(&[read(vec![1, 2, 3, 4])], &fin).is_violation(), "longer than final");
        let dup: BTreeMap<String, Vec<u64>> = [("l".to_string(), vec![1, 2, 1])].into();
        assert!(check(&[], &dup).is_violation(), "duplicate");
    }
}
