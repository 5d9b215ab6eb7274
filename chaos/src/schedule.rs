//! The fault schedule: which fault starts when, and how long it lasts, drawn from a seed.
//! Pure, so a run's faults can be reproduced (and tested) without a cluster. One fault at
//! a time, each followed by a quiet gap for the cluster to recover in.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::rng::Rng;

/// A kind of fault (`--nemesis`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Nemesis {
    /// SIGKILL a node, restart it later.
    Kill,
    /// SIGSTOP a node for longer than the liveness window, then SIGCONT.
    Pause,
    /// Cut the network between two groups of processes.
    Partition,
    /// SIGKILL the active master, restart it later.
    Master,
    /// Force a range to split.
    Split,
}

impl Nemesis {
    pub const ALL: [Nemesis; 5] = [Nemesis::Kill, Nemesis::Pause, Nemesis::Partition, Nemesis::Master, Nemesis::Split];

    pub fn name(self) -> &'static str {
        match self {
            Nemesis::Kill => "kill",
            Nemesis::Pause => "pause",
            Nemesis::Partition => "partition",
            Nemesis::Master => "master",
            Nemesis::Split => "split",
        }
    }
}

impl FromStr for Nemesis {
    type Err = String;
    fn from_str(s: &str) -> Result<Nemesis, String> {
        Nemesis::ALL
            .into_iter()
            .find(|n| n.name() == s)
            .ok_or_else(|| format!("unknown nemesis {s:?}; choose from kill, pause, partition, master, split"))
    }
}

/// A process of the cluster, by kind and index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Proc {
    Master(usize),
    Node(usize),
}

impl fmt::Display for Proc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Proc::Master(i) => write!(f, "m{i}"),
            Proc::Node(i) => write!(f, "n{i}"),
        }
    }
}

/// One fault.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Fault {
    /// SIGKILL the node that serves the range holding workload key number `pick` (modulo
    /// the number of probe keys; any node when none serves it), restart it when healed.
    KillNode { pick: u64 },
    /// SIGSTOP a node picked like `KillNode`'s, SIGCONT when healed.
    PauseNode { pick: u64 },
    /// No traffic between any process of `a` and any process of `b` (clients still reach
    /// everyone, so an isolated process keeps getting requests).
    Partition { a: Vec<Proc>, b: Vec<Proc> },
    /// Kill whichever master is active when the fault starts.
    KillActiveMaster,
    /// Split the range holding this workload key (`Split` needs no healing).
    Split { key_index: u64 },
}

impl Fault {
    pub fn nemesis(&self) -> Nemesis {
        match self {
            Fault::KillNode { .. } => Nemesis::Kill,
            Fault::PauseNode { .. } => Nemesis::Pause,
            Fault::Partition { .. } => Nemesis::Partition,
            Fault::KillActiveMaster => Nemesis::Master,
            Fault::Split { .. } => Nemesis::Split,
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = |ps: &[Proc]| ps.iter().map(Proc::to_string).collect::<Vec<_>>().join(",");
        match self {
            Fault::KillNode { pick } => write!(f, "kill the node serving key #{}", pick % 100),
            Fault::PauseNode { pick } => write!(f, "pause the node serving key #{}", pick % 100),
            Fault::Partition { a, b } => write!(f, "partition {} | {}", names(a), names(b)),
            Fault::KillActiveMaster => write!(f, "kill the active master"),
            Fault::Split { key_index } => write!(f, "split (key #{key_index})"),
        }
    }
}

/// A fault and when: it starts `at_ms` after the workload starts and is healed `hold_ms`
/// later.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Step {
    pub at_ms: u64,
    pub hold_ms: u64,
    pub fault: Fault,
}

#[derive(Clone, Debug)]
pub struct ScheduleSpec {
    pub duration_ms: u64,
    pub nemeses: Vec<Nemesis>,
    pub nodes: usize,
    pub masters: usize,
    /// The nodes' liveness window: a pause lasts longer than this.
    pub liveness_ms: u64,
}

/// Faults start after this much quiet work, so every workload has done something.
pub const WARMUP_MS: u64 = 2_000;
/// The last fault is healed at least this long before the end.
pub const COOLDOWN_MS: u64 = 3_000;

pub fn schedule(spec: &ScheduleSpec, seed: u64) -> Vec<Step> {
    let mut rng = Rng::new(seed ^ 0x5EED_F00D);
    let mut steps = Vec::new();
    if spec.nemeses.is_empty() || spec.nodes == 0 {
        return steps;
    }
    let mut at = WARMUP_MS;
    loop {
        let nemesis = *rng.pick(&spec.nemeses);
        let (fault, hold_ms) = match nemesis {
            Nemesis::Kill => (Fault::KillNode { pick: rng.next_u64() }, rng.between(1_000, 4_000)),
            Nemesis::Pause => (Fault::PauseNode { pick: rng.next_u64() }, spec.liveness_ms + rng.between(500, 2_000)),
            Nemesis::Partition => (partition(spec, &mut rng), rng.between(2_000, 6_000)),
            Nemesis::Master => (Fault::KillActiveMaster, rng.between(1_000, 3_000)),
            Nemesis::Split => (Fault::Split { key_index: rng.next_u64() }, 0),
        };
        if at + hold_ms + COOLDOWN_MS > spec.duration_ms {
            break;
        }
        steps.push(Step { at_ms: at, hold_ms, fault });
        at += hold_ms + rng.between(1_500, 3_500);
    }
    steps
}

/// One node alone, the masters away from the nodes, or two random halves.
fn partition(spec: &ScheduleSpec, rng: &mut Rng) -> Fault {
    let masters: Vec<Proc> = (0..spec.masters).map(Proc::Master).collect();
    let nodes: Vec<Proc> = (0..spec.nodes).map(Proc::Node).collect();
    let everyone: Vec<Proc> = masters.iter().chain(&nodes).copied().collect();
    match rng.below(3) {
        0 => {
            let alone = Proc::Node(rng.below(spec.nodes as u64) as usize);
            Fault::Partition { a: vec![alone], b: everyone.into_iter().filter(|p| *p != alone).collect() }
        }
        1 if !masters.is_empty() => Fault::Partition { a: masters, b: nodes },
        _ => {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            for p in everyone {
                if rng.percent(50) { a.push(p) } else { b.push(p) }
            }
            if a.is_empty() || b.is_empty() {
                // Degenerate draw: fall back to one node alone.
                let alone = Proc::Node(0);
                let rest = a.into_iter().chain(b).filter(|p| *p != alone).collect();
                return Fault::Partition { a: vec![alone], b: rest };
            }
            Fault::Partition { a, b }
        }
    }
}

/// The longest schedule file `--schedule` reads.
pub const SCHEDULE_FILE_BYTES_MAX: usize = 1 << 20;

/// Reads an explicit schedule (`ampstore chaos --schedule FILE`): one fault a line, as
/// `AT_MS HOLD_MS FAULT`, where FAULT is written the way a run prints it (`kill the node
/// serving key #3`, `pause the node serving key #0`, `partition m0,m1 | n0,n1,n2`,
/// `kill the active master`, `split (key #7)`). Blank lines and lines starting with `#` are
/// skipped.
/// Steps must start in order and not overlap, and every process named must exist.
pub fn parse_steps(text: &str, masters: usize, nodes: usize) -> Result<Vec<Step>, String> {
    if text.len() > SCHEDULE_FILE_BYTES_MAX {
        return Err(format!("the schedule is over {SCHEDULE_FILE_BYTES_MAX} bytes"));
    }
    let mut steps: Vec<Step> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        // Whole-line comments only: `#` also appears in `key #N`.
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let step = parse_step(line, masters, nodes).map_err(|e| format!("schedule line {}: {e}: {raw:?}", i + 1))?;
        if let Some(prev) = steps.last()
            && prev.at_ms + prev.hold_ms > step.at_ms
        {
            return Err(format!("schedule line {}: starts before the fault above is healed", i + 1));
        }
        steps.push(step);
    }
    if steps.is_empty() {
        return Err("the schedule has no faults".into());
    }
    Ok(steps)
}

fn parse_step(line: &str, masters: usize, nodes: usize) -> Result<Step, String> {
    let mut words = line.splitn(3, char::is_whitespace);
    let number = |w: Option<&str>, what: &str| -> Result<u64, String> {
        let w = w.ok_or_else(|| format!("no {what}"))?;
        w.parse::<u64>().map_err(|_| format!("{what} {w:?} is not a number of milliseconds"))
    };
    let at_ms = number(words.next(), "AT_MS")?;
    let hold_ms = number(words.next(), "HOLD_MS")?;
    let fault = parse_fault(words.next().unwrap_or("").trim(), masters, nodes)?;
    if matches!(fault, Fault::Split { .. }) && hold_ms != 0 {
        return Err("a split is not healed: its HOLD_MS must be 0".into());
    }
    Ok(Step { at_ms, hold_ms, fault })
}

fn parse_fault(text: &str, masters: usize, nodes: usize) -> Result<Fault, String> {
    let key = |rest: &str| rest.trim().parse::<u64>().map_err(|_| format!("key number {rest:?} is not a number"));
    if let Some(rest) = text.strip_prefix("kill the node serving key #") {
        return Ok(Fault::KillNode { pick: key(rest)? });
    }
    if let Some(rest) = text.strip_prefix("pause the node serving key #") {
        return Ok(Fault::PauseNode { pick: key(rest)? });
    }
    if text == "kill the active master" {
        return Ok(Fault::KillActiveMaster);
    }
    if let Some(rest) = text.strip_prefix("split (key #").and_then(|r| r.strip_suffix(')')) {
        return Ok(Fault::Split { key_index: key(rest)? });
    }
    if let Some(rest) = text.strip_prefix("partition ") {
        let (a, b) = rest.split_once('|').ok_or("a partition is `partition A,B | C,D`")?;
        let group = |g: &str| -> Result<Vec<Proc>, String> {
            g.split(',').map(|p| parse_proc(p.trim(), masters, nodes)).collect()
        };
        let (a, b) = (group(a)?, group(b)?);
        if a.iter().any(|p| b.contains(p)) {
            return Err("a process is on both sides of the partition".into());
        }
        return Ok(Fault::Partition { a, b });
    }
    Err("unknown fault (see docs/chaos.md for the forms)".into())
}

fn parse_proc(name: &str, masters: usize, nodes: usize) -> Result<Proc, String> {
    let (kind, count) = match name.split_at_checked(1) {
        Some(("m", _)) => (Proc::Master as fn(usize) -> Proc, masters),
        Some(("n", _)) => (Proc::Node as fn(usize) -> Proc, nodes),
        _ => return Err(format!("process {name:?} is not mN or nN")),
    };
    let index: usize = name[1..].parse().map_err(|_| format!("process {name:?} is not mN or nN"))?;
    if index >= count {
        return Err(format!("process {name:?} does not exist (indices start at 0)"));
    }
    Ok(kind(index))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(nemeses: Vec<Nemesis>, duration_ms: u64) -> ScheduleSpec {
        ScheduleSpec { duration_ms, nemeses, nodes: 3, masters: 2, liveness_ms: 1500 }
    }

    #[test]
    fn a_seed_gives_one_schedule_of_non_overlapping_faults_inside_the_run() {
        let s = spec(Nemesis::ALL.to_vec(), 600_000);
        let steps = schedule(&s, 42);
        assert_eq!(steps, schedule(&s, 42));
        assert_ne!(steps, schedule(&s, 43));
        assert!(steps[0].at_ms >= WARMUP_MS);
        for w in steps.windows(2) {
            assert!(w[0].at_ms + w[0].hold_ms < w[1].at_ms, "one fault at a time: {w:?}");
        }
        let last = steps.last().unwrap();
        assert!(last.at_ms + last.hold_ms + COOLDOWN_MS <= s.duration_ms);
        for n in Nemesis::ALL {
            assert!(steps.iter().any(|st| st.fault.nemesis() == n), "{n:?} never drawn");
        }
        for st in &steps {
            match &st.fault {
                Fault::PauseNode { .. } => assert!(st.hold_ms > s.liveness_ms),
                Fault::Partition { a, b } => {
                    assert!(!a.is_empty() && !b.is_empty() && a.iter().all(|p| !b.contains(p)), "{a:?} {b:?}")
                }
                _ => {}
            }
        }
    }

    #[test]
    fn only_the_chosen_nemeses_and_none_in_a_run_too_short() {
        let steps = schedule(&spec(vec![Nemesis::Pause], 60_000), 1);
        assert!(!steps.is_empty() && steps.iter().all(|s| s.fault.nemesis() == Nemesis::Pause));
        assert!(schedule(&spec(vec![Nemesis::Kill], WARMUP_MS + COOLDOWN_MS), 1).is_empty());
        assert!(schedule(&spec(vec![], 60_000), 1).is_empty());
        assert!("kill".parse::<Nemesis>().is_ok() && "nuke".parse::<Nemesis>().is_err());
    }

    #[test]
    fn a_schedule_file_reads_back_what_a_run_prints() {
        let steps = schedule(&spec(Nemesis::ALL.to_vec(), 120_000), 9);
        let text: String = steps.iter().map(|s| format!("{} {} {}\n", s.at_ms, s.hold_ms, s.fault)).collect();
        let text = format!("# a comment\n\n{text}");
        let back = parse_steps(&text, 2, 3).unwrap();
        assert_eq!(back.len(), steps.len());
        for (a, b) in back.iter().zip(&steps) {
            assert_eq!((a.at_ms, a.hold_ms, a.fault.to_string()), (b.at_ms, b.hold_ms, b.fault.to_string()));
        }
    }

    #[test]
    fn a_bad_schedule_file_is_refused_with_its_line() {
        let bad = [
            ("", "no faults"),
            ("1000 x kill the active master", "HOLD_MS"),
            ("1000 2000 nuke everything", "unknown fault"),
            ("1000 2000 partition m0 | n3", "does not exist"),
            ("1000 2000 partition m0,n1 | n1", "both sides"),
            ("1000 2000 split (key #1)", "HOLD_MS must be 0"),
            ("1000 5000 kill the active master\n3000 1000 kill the active master", "line 2"),
        ];
        for (text, want) in bad {
            let e = parse_steps(text, 2, 3).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
        }
        assert!(parse_steps(&" ".repeat(SCHEDULE_FILE_BYTES_MAX + 1), 2, 3).unwrap_err().contains("bytes"));
        let ok = parse_steps("2000 3500 partition m0,m1 | n0,n1,n2\n9000 3000 kill the node serving key #0", 2, 3);
        assert_eq!(ok.unwrap()[1].fault, Fault::KillNode { pick: 0 });
    }
}
