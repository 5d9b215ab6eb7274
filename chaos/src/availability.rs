//! The availability rule: every fault must be followed by serving again (every probe key
//! answering a read) within the failover time expected for that kind of fault, derived
//! from the run's own failure-detection settings, plus [`AVAILABILITY_MARGIN_MS`]. A fault
//! after which the keys were never served again is a violation too. Pure, so a saved
//! summary is judged again exactly as the run judged it (`--replay`).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::nemesis::FaultReport;

/// How much longer than expected a fault may keep the probe keys unserved. Covers a
/// client's retries (a quarter of the call deadline per attempt), process start-up after
/// a restart, and a slow 2-core machine running every process of the cluster.
pub const AVAILABILITY_MARGIN_MS: u64 = 10_000;

/// Estimated time for a node to load a range it was newly assigned (open its log, replay
/// the tail, take the epoch), on top of failure detection.
pub const RANGE_LOAD_MS: u64 = 1_000;

/// The settings the expected failover times are derived from; written into `summary.json`
/// so a replay uses the run's own values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailoverBounds {
    /// `node.liveness_ms`: a node silent this long is declared dead.
    pub liveness_ms: u64,
    /// `node.liveness_margin_ms`: how much longer the master waits before moving its ranges.
    pub liveness_margin_ms: u64,
    /// `master.lease_ms`: a standby takes over once the active master's lease ran out.
    pub lease_ms: u64,
    /// See [`RANGE_LOAD_MS`].
    pub range_load_ms: u64,
    /// See [`AVAILABILITY_MARGIN_MS`].
    pub margin_ms: u64,
}

impl FailoverBounds {
    /// From a dead node's last sign of life until its ranges serve elsewhere.
    fn node_failover_ms(&self) -> u64 {
        self.liveness_ms + self.liveness_margin_ms + self.range_load_ms
    }

    /// The failover time expected after a fault of kind `nemesis` held `hold_ms`; `None`
    /// for a fault that needs no failover (`split`) or a kind this rule does not know.
    pub fn expected_ms(&self, nemesis: &str, hold_ms: u64) -> Option<u64> {
        match nemesis {
            // The node is gone: detection, then a range load on another node.
            "kill" => Some(self.node_failover_ms()),
            // A paused node may hold things up (on the embedded backend a whole cluster's
            // writes) until it resumes; then at most one more failover.
            "pause" => Some(hold_ms + self.node_failover_ms()),
            // The same for a partition: until healed, then at most one more failover.
            "partition" => Some(hold_ms + self.node_failover_ms()),
            // The standby takes over when the dead master's lease ran out.
            "master" => Some(self.lease_ms),
            _ => None,
        }
    }
}

/// One fault that kept the keys unserved too long.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AvailabilityViolation {
    pub nemesis: String,
    /// When the fault started, since the workload started.
    pub at_ms: u64,
    /// The fault with its target (e.g. `kill n1`).
    pub fault: String,
    /// Measured "serving again"; `None`: never served again before the probe gave up.
    pub measured_ms: Option<u64>,
    pub expected_ms: u64,
    /// Expected plus the margin.
    pub allowed_ms: u64,
}

impl fmt::Display for AvailabilityViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = |ms: u64| format!("{:.1} s", ms as f64 / 1000.0);
        write!(f, "{} at {} ({}): ", self.nemesis, s(self.at_ms), self.fault)?;
        match self.measured_ms {
            Some(m) => write!(f, "serving again after {}", s(m))?,
            None => write!(f, "never served again")?,
        }
        write!(f, ", allowed {} (expected {} + margin)", s(self.allowed_ms), s(self.expected_ms))
    }
}

/// The rule's result for a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Availability {
    /// `ok` or `violation`.
    pub verdict: String,
    pub bounds: FailoverBounds,
    pub violations: Vec<AvailabilityViolation>,
}

impl Availability {
    pub fn is_violation(&self) -> bool {
        !self.violations.is_empty()
    }

    /// The summary line: `availability: ok` or `availability: VIOLATION` and the faults.
    pub fn render(&self) -> String {
        if self.violations.is_empty() {
            return format!(
                "availability: ok (every fault served again within expected + {} s)\n",
                self.bounds.margin_ms / 1000
            );
        }
        let mut out = format!(
            "availability: VIOLATION ({} fault(s) over expected + {} s)\n",
            self.violations.len(),
            self.bounds.margin_ms / 1000
        );
        for v in &self.violations {
            out += &format!("  {v}\n");
        }
        out
    }
}

/// Judges every fault of a run against `bounds`.
pub fn check(faults: &[FaultReport], bounds: &FailoverBounds) -> Availability {
    let mut violations = Vec::new();
    for f in faults {
        let Some(expected_ms) = bounds.expected_ms(&f.nemesis, f.hold_ms) else { continue };
        let allowed_ms = expected_ms + bounds.margin_ms;
        if f.failover_ms.is_none_or(|m| m > allowed_ms) {
            violations.push(AvailabilityViolation {
                nemesis: f.nemesis.clone(),
                at_ms: f.at_ms,
                fault: f.fault.clone(),
                measured_ms: f.failover_ms,
                expected_ms,
                allowed_ms,
            });
        }
    }
    let verdict = if violations.is_empty() { "ok" } else { "violation" }.to_string();
    Availability { verdict, bounds: *bounds, violations }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: FailoverBounds = FailoverBounds {
        liveness_ms: 1500,
        liveness_margin_ms: 400,
        lease_ms: 2000,
        range_load_ms: 1000,
        margin_ms: 10_000,
    };

    fn fault(nemesis: &str, fault: &str, at_ms: u64, hold_ms: u64, failover_ms: Option<u64>) -> FaultReport {
        FaultReport {
            at_ms,
            nemesis: nemesis.into(),
            fault: fault.into(),
            hold_ms,
            failover_ms,
            recovered_ms: Some(50),
            note: None,
        }
    }

    #[test]
    fn expected_times_follow_the_kind_and_the_run_settings() {
        assert_eq!(BOUNDS.expected_ms("kill", 4000), Some(2900));
        assert_eq!(BOUNDS.expected_ms("pause", 3000), Some(5900));
        assert_eq!(BOUNDS.expected_ms("partition", 6000), Some(8900));
        assert_eq!(BOUNDS.expected_ms("master", 3000), Some(2000));
        assert_eq!(BOUNDS.expected_ms("split", 0), None);
    }

    #[test]
    fn faults_within_their_bound_pass() {
        let faults = vec![
            fault("kill", "kill n1", 2000, 2000, Some(1700)),
            // Just at the bound: expected 2.9 s + 10 s.
            fault("kill", "kill n2", 9000, 1000, Some(12_900)),
            fault("pause", "pause n0", 15_000, 3000, Some(3100)),
            fault("partition", "partition n0 | m0,m1,n1,n2", 22_000, 5000, Some(5200)),
            fault("master", "kill the active master m0", 30_000, 2000, Some(2100)),
            // A split measures nothing and is not judged.
            fault("split", "split (key #3)", 35_000, 0, None),
        ];
        let a = check(&faults, &BOUNDS);
        assert!(!a.is_violation(), "{a:?}");
        assert_eq!(a.verdict, "ok");
        assert!(a.render().starts_with("availability: ok"), "{}", a.render());
    }

    #[test]
    fn a_fault_over_its_bound_fails_and_is_named() {
        let faults = vec![
            fault("kill", "kill n1", 2000, 2000, Some(1700)),
            fault("pause", "pause n2", 14_200, 3000, Some(30_000)),
        ];
        let a = check(&faults, &BOUNDS);
        assert_eq!(a.verdict, "violation");
        assert_eq!(
            a.violations,
            vec![AvailabilityViolation {
                nemesis: "pause".into(),
                at_ms: 14_200,
                fault: "pause n2".into(),
                measured_ms: Some(30_000),
                expected_ms: 5900,
                allowed_ms: 15_900,
            }]
        );
        let text = a.render();
        assert!(text.starts_with("availability: VIOLATION"), "{text}");
        assert!(
            text.contains(
                "pause at 14.2 s (pause n2): serving again after 30.0 s, allowed 15.9 s (expected 5.9 s + margin)"
            ),
            "{text}"
        );
    }

    #[test]
    fn a_fault_never_served_again_fails() {
        let mut never = fault("master", "kill the active master m1", 40_000, 1500, None);
        never.recovered_ms = None;
        let a = check(&[never], &BOUNDS);
        assert!(a.is_violation());
        assert_eq!(a.violations[0].measured_ms, None);
        assert!(
            a.render().contains("master at 40.0 s (kill the active master m1): never served again, allowed 12.0 s"),
            "{}",
            a.render()
        );
    }
}
