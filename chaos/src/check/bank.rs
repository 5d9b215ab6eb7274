//! Bank: every consistent read of all balances sums to the total the accounts started
//! with (a partial transfer would show as a different sum), and so does the final read.

use super::Verdict;
use crate::history::{Event, Op, Outcome};

pub fn check(history: &[Event], expected_total: i64, final_total: i64) -> Verdict {
    for e in history.iter().filter(|e| e.outcome == Outcome::Ok) {
        if let Op::ReadTotal { total } = e.op
            && total != expected_total
        {
            return Verdict::Invalid(format!(
                "a read at {} ns saw a total of {total}, not {expected_total}: a partial transaction",
                e.invoked_ns
            ));
        }
    }
    if final_total != expected_total {
        return Verdict::Invalid(format!("the final total is {final_total}, not {expected_total}"));
    }
    Verdict::Valid
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_transaction_is_caught() {
        let read = |total| Event {
            process: 1,
            invoked_ns: 1,
            completed_ns: 2,
            outcome: Outcome::Ok,
            op: Op::ReadTotal { total },
        };
        assert_eq!(check(&[read(100), read(100)], 100, 100), Verdict::Valid);
        assert!(check(&[read(100), read(90)], 100, 100).is_violation());
        assert!(check(&[read(100)], 100, 110).is_violation());
        // A failed read says nothing.
        let failed = Event { outcome: Outcome::Fail, ..read(5) };
        assert_eq!(check(&[failed], 100, 100), Verdict::Valid);
    }
}
