//! Deterministic tests of the range lifecycle: a scripted executor plays the store (each
//! effect is inspected, each completion fed back by hand), waiters are ids, and the clock is
//! an `Instant` the test advances.

use super::*;
use crate::range::batch::{self, LoggedOp};
use crate::range::core::Condition;
use crate::range::view;
use ampstore_common::protocol::RangeState;
use ampstore_common::txn::TxnWrite;
use ampstore_common::{NodeId, Version};

type Fx = Effect<u32, u32>;

fn node(n: &str) -> NodeId {
    NodeId::new(n).unwrap()
}

fn cfg() -> MachineConfig {
    MachineConfig {
        snapshot_log_bytes: u64::MAX,
        split_bytes: 0,
        hot_split_writes_per_sec: 0,
        hot_split_ms: 10_000,
        idle_release_ms: 1_000,
        child_ids: || (RangeId(101), RangeId(102)),
    }
}

fn put(key: &str) -> Write {
    Write {
        op: LoggedOp::Put { key: Key::from(key), value: b"v".to_vec() },
        condition: Condition::None,
        write_id: None,
    }
}

fn txn_id(n: u64) -> WriteId {
    WriteId::new(7, n)
}

fn prepare(n: u64, key: &str, local: bool) -> Prepare {
    Prepare {
        txn_id: txn_id(n),
        checks: Vec::new(),
        writes: vec![TxnWrite::Put { key: Key::from(key), value: b"t".to_vec() }],
        reads: Vec::new(),
        hold_ms: 5_000,
        local,
    }
}

/// The machine, its clock and its node's liveness; each step returns the effects it made.
struct Harness {
    m: RangeMachine<u32, u32>,
    now: Instant,
    admission: Admission,
}

impl Harness {
    fn new() -> Harness {
        Harness::with_cfg(cfg())
    }

    fn with_cfg(cfg: MachineConfig) -> Harness {
        let now = Instant::now();
        let core =
            RangeCore::new(RangeId(1), KeyRange::full(), node("a"), Epoch(1), Memtable::new(), Seq(0), 64 * 1024);
        let owner = Owner { node_id: node("a"), epoch: Epoch(1) };
        Harness {
            m: RangeMachine::new(core, owner, cfg, now),
            now,
            admission: Admission { live: true, epoch: Epoch(1), other_nodes_live: true },
        }
    }

    /// One input, then (as the driver does) `ApplyStaged` when the step asked for it.
    fn step(&mut self, input: Input<u32, u32>) -> Vec<Fx> {
        let mut out = self.step_raw(input);
        if out.iter().any(|e| matches!(e, Effect::ApplyStaged)) {
            out.extend(self.step_raw(Input::ApplyStaged));
        }
        out
    }

    /// One input and nothing else.
    fn step_raw(&mut self, input: Input<u32, u32>) -> Vec<Fx> {
        let mut out = Vec::new();
        self.m.handle(input, self.now, self.admission, &mut out);
        out
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
    }

    /// Writes `key` (waiter `w`) and returns the effects.
    fn write(&mut self, key: &str, w: u32) -> Vec<Fx> {
        self.step(Input::Writes(vec![(put(key), w)]))
    }

    /// Completes the batch append at `seq` and nothing else (no `ApplyStaged` after it).
    fn appended_raw(&mut self, seq: u64) -> Vec<Fx> {
        self.step_raw(Input::Appended { seq: Seq(seq), purpose: Purpose::Batch, result: AppendResult::Ok })
    }

    /// Completes the append at `seq` as the store answers it.
    fn appended(&mut self, seq: u64, purpose: Purpose, result: AppendResult) -> Vec<Fx> {
        self.step(Input::Appended { seq: Seq(seq), purpose, result })
    }
}

fn replies(fx: &[Fx]) -> Vec<(u32, Result<Reply, Error>)> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Reply(w, r) => Some((*w, r.clone())),
            _ => None,
        })
        .collect()
}

fn reply_to(fx: &[Fx], w: u32) -> Result<Reply, Error> {
    let found: Vec<_> = replies(fx).into_iter().filter(|(x, _)| *x == w).collect();
    assert_eq!(found.len(), 1, "waiter {w} must be answered exactly once: {found:?}");
    found.into_iter().next().unwrap().1
}

fn appends(fx: &[Fx]) -> Vec<(u64, Purpose)> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Append { seq, purpose, .. } => Some((seq.0, *purpose)),
            _ => None,
        })
        .collect()
}

fn stops(fx: &[Fx]) -> Vec<StopHow> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Stop(how) => Some(how.clone()),
            _ => None,
        })
        .collect()
}

fn snapshot_seqs(fx: &[Fx]) -> Vec<u64> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::WriteSnapshot(job) => Some(job.seq.0),
            _ => None,
        })
        .collect()
}

fn clears_owner(fx: &[Fx]) -> bool {
    fx.iter().any(|e| matches!(e, Effect::ClearOwner))
}

fn timers(fx: &[Fx]) -> Vec<(Timer, Duration)> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::SetTimer { timer, after } => Some((*timer, *after)),
            _ => None,
        })
        .collect()
}

fn written(seq: u64, index: u32) -> Result<Reply, Error> {
    Ok(Reply::Written { version: Version { seq: Seq(seq), index } })
}

/// Writes `keys` in one batch at the next seq and completes it.
fn commit(h: &mut Harness, keys: &[&str], first_waiter: u32) -> u64 {
    let mut fx = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        fx.extend(h.write(k, first_waiter + i as u32));
    }
    let [(seq, Purpose::Batch)] = appends(&fx)[..] else { panic!("one batch expected: {:?}", appends(&fx)) };
    let done = h.appended(seq, Purpose::Batch, AppendResult::Ok);
    assert_eq!(replies(&done).len(), 1, "the first write goes alone, the rest queue behind it");
    let more = appends(&done);
    if let [(next, Purpose::Batch)] = more[..] {
        let rest = h.appended(next, Purpose::Batch, AppendResult::Ok);
        assert_eq!(replies(&rest).len(), keys.len() - 1);
        return next;
    }
    seq
}

/// Runs `seconds` of hot checks with `per_check` writes (each durable) before each; returns
/// the appends the checks made.
fn run_hot(h: &mut Harness, seconds: u64, per_check: u64) -> Vec<(u64, Purpose)> {
    let mut made = Vec::new();
    for s in 0..seconds {
        for i in 0..per_check {
            let mut pending = appends(&h.write(&format!("k{s}-{i}"), 1));
            while let Some((seq, purpose)) = pending.pop() {
                pending.extend(appends(&h.appended(seq, purpose, AppendResult::Ok)));
            }
        }
        h.advance(HOT_CHECK);
        made.extend(appends(&h.step(Input::Timer(Timer::HotCheck))));
    }
    made
}

#[test]
fn a_hot_range_splits_only_when_another_node_could_take_half() {
    let hot_cfg = || MachineConfig { hot_split_writes_per_sec: 100, hot_split_ms: 3_000, ..cfg() };
    // Alone in the cluster: hot for three times the hot time, and no split.
    let mut h = Harness::with_cfg(hot_cfg());
    h.admission.other_nodes_live = false;
    assert!(run_hot(&mut h, 10, 200).iter().all(|(_, p)| *p != Purpose::Split), "a lone node does not split for heat");
    // Another node appears: the range, still hot, splits once the hot time has passed again.
    h.admission.other_nodes_live = true;
    let made = run_hot(&mut h, 5, 200);
    assert_eq!(made.iter().filter(|(_, p)| *p == Purpose::Split).count(), 1, "{made:?}");
    // Not hot (below the rate): no split, other nodes or not.
    let mut h = Harness::with_cfg(hot_cfg());
    assert!(run_hot(&mut h, 10, 50).iter().all(|(_, p)| *p != Purpose::Split));
}

#[test]
fn split_requested_while_a_transaction_is_held_goes_ahead_after_it_aborts() {
    let mut h = Harness::new();
    assert_eq!(commit(&mut h, &["a", "b", "c"], 1), 2);
    // A participant's prepare holds the range and reserves slot 3.
    let fx = h.step(Input::Prepare(prepare(1, "m", false), 10));
    assert!(matches!(reply_to(&fx, 10), Ok(Reply::TxnPrepared { seq: Some(Seq(3)), committed: false, .. })));
    assert!(timers(&fx).contains(&(Timer::TxnHold(txn_id(1)), Duration::from_millis(5_000))));
    // The admin split is accepted but waits for the transaction.
    let mut fx = Vec::new();
    assert_eq!(h.m.split_now(h.now, h.admission, &mut fx), Ok(()));
    assert!(appends(&fx).is_empty(), "no split entry while a transaction holds the range");
    assert!(appends(&h.step(Input::Timer(Timer::HotCheck))).is_empty(), "still held");
    // The coordinator never answers: the hold runs out and the range aborts at its slot.
    h.advance(Duration::from_secs(5));
    let fx = h.step(Input::Timer(Timer::TxnHold(txn_id(1))));
    assert_eq!(appends(&fx), [(3, Purpose::Abort)]);
    let fx = h.step(Input::Resolve { txn_id: txn_id(1), decision: TxnDecision::Resolve, reply: 11 });
    assert!(appends(&fx).is_empty(), "one abort in flight at a time");
    let fx = h.appended(3, Purpose::Abort, AppendResult::Ok);
    assert_eq!(reply_to(&fx, 11), Ok(Reply::TxnResolved { committed: false }));
    // The next check splits: the split entry goes to the slot after the abort.
    let fx = h.step(Input::Timer(Timer::HotCheck));
    assert_eq!(appends(&fx), [(4, Purpose::Split)]);
    // Writes are refused while the split entry is in flight.
    let fx = h.write("z", 12);
    assert_eq!(reply_to(&fx, 12), Err(Error::RangeLoading { retry_after_ms: SPLIT_RETRY_MS }));
    let fx = h.appended(4, Purpose::Split, AppendResult::Ok);
    let job = fx
        .iter()
        .find_map(|e| match e {
            Effect::Split(job) => Some(job),
            _ => None,
        })
        .expect("the split job goes out");
    assert_eq!((job.split_seq, job.plan.left, job.plan.right), (Seq(4), RangeId(101), RangeId(102)));
    assert_eq!(job.left.len() + job.right.len(), 3);
    assert_eq!(stops(&fx), [StopHow::Split]);
    assert!(h.m.is_stopped());
}

#[test]
fn a_release_during_an_append_waits_for_it_then_snapshots_clears_and_stops() {
    let mut h = Harness::new();
    let fx = h.write("a", 1);
    assert_eq!(appends(&fx), [(1, Purpose::Batch)]);
    // The release waits for the append in flight; new writes are refused meanwhile.
    let fx = h.step(Input::Release(Some(10)));
    assert!(fx.is_empty(), "nothing happens before the append is over");
    assert_eq!(reply_to(&h.write("b", 2), 2), Err(Error::NotOwner { hint: None }));
    // The append lands: its writer is answered, then the dirty range snapshots.
    let fx = h.appended(1, Purpose::Batch, AppendResult::Ok);
    assert_eq!(reply_to(&fx, 1), written(1, 0));
    assert_eq!(snapshot_seqs(&fx), [1]);
    assert!(!clears_owner(&fx));
    // A second release joins the first.
    assert!(h.step(Input::Release(Some(11))).is_empty());
    let fx = h.step(Input::SnapshotWritten(Ok(Seq(1))));
    assert!(clears_owner(&fx));
    assert!(stops(&fx).is_empty());
    let fx = h.step(Input::OwnerCleared(ClearOutcome::Cleared));
    let released = Ok(Reply::Released { range_id: RangeId(1) });
    assert_eq!(reply_to(&fx, 10), released);
    assert_eq!(reply_to(&fx, 11), released);
    assert_eq!(stops(&fx), [StopHow::Departed]);
}

#[test]
fn a_release_whose_owner_clear_fails_keeps_serving() {
    let mut h = Harness::new();
    let fx = h.step(Input::Release(Some(10)));
    assert!(clears_owner(&fx), "clean: no snapshot needed");
    let fx = h.step(Input::OwnerCleared(ClearOutcome::Failed(Error::unavailable("meta down"))));
    assert_eq!(reply_to(&fx, 10), Err(Error::unavailable("meta down")));
    assert!(stops(&fx).is_empty());
    assert_eq!(appends(&h.write("a", 1)), [(1, Purpose::Batch)], "serving again");
}

#[test]
fn slot_taken_during_a_merge_close_fences_once_and_answers_everyone() {
    let mut h = Harness::new();
    let plan = MergePlan { merged: RangeId(9), left: RangeId(1), right: RangeId(2) };
    assert_eq!(appends(&h.write("a", 1)), [(1, Purpose::Batch)]);
    assert!(h.write("b", 2).is_empty(), "queued behind the append in flight");
    // The merge close refuses what is queued and waits for the append in flight.
    let fx = h.step(Input::MergeClose(plan.clone(), 50));
    assert_eq!(reply_to(&fx, 2), Err(Error::RangeLoading { retry_after_ms: SPLIT_RETRY_MS }));
    assert!(appends(&fx).is_empty());
    // Whoever comes meanwhile waits or is refused.
    assert!(h.step(Input::Snapshot(20)).is_empty(), "a snapshot waits out the merge");
    let fx = h.step(Input::Release(Some(21)));
    assert!(matches!(reply_to(&fx, 21), Err(Error::Unavailable { .. })));
    let fx = h.step(Input::Prepare(prepare(1, "p", false), 22));
    assert_eq!(reply_to(&fx, 22), Err(Error::RangeLoading { retry_after_ms: SPLIT_RETRY_MS }));
    // The append lands; the merge entry goes next.
    let fx = h.appended(1, Purpose::Batch, AppendResult::Ok);
    assert_eq!(reply_to(&fx, 1), written(1, 0));
    assert_eq!(appends(&fx), [(2, Purpose::Merge)]);
    // A newer owner took slot 2.
    let fx = h.appended(2, Purpose::Merge, AppendResult::SlotTaken);
    let merge_replies: Vec<_> = fx
        .iter()
        .filter_map(|e| match e {
            Effect::ReplyMerge(m, r) => Some((*m, r.as_ref().err().cloned())),
            _ => None,
        })
        .collect();
    assert_eq!(merge_replies, [(50, Some(Error::Fenced))]);
    assert_eq!(reply_to(&fx, 20), Err(Error::NotOwner { hint: None }));
    assert!(fx.iter().any(|e| matches!(e, Effect::LearnNewOwner { seq: Seq(2) })));
    assert_eq!(stops(&fx), [StopHow::Departed], "one fencing reaction, one stop");
    assert!(matches!(fx.last(), Some(Effect::Stop(_))), "nothing runs after the stop");
    // Late inputs learn the range is gone and start nothing.
    let fx = h.write("c", 3);
    assert_eq!(reply_to(&fx, 3), Err(Error::NotOwner { hint: None }));
    assert!(h.step(Input::Timer(Timer::IdleCheck)).is_empty());
}

#[test]
fn slot_taken_on_a_batch_answers_its_writers_fenced_and_stops() {
    let mut h = Harness::new();
    assert_eq!(appends(&h.write("a", 1)), [(1, Purpose::Batch)]);
    assert!(h.write("b", 2).is_empty());
    assert!(h.step(Input::Resolve { txn_id: txn_id(5), decision: TxnDecision::Resolve, reply: 3 }).len() == 1);
    let fx = h.appended(1, Purpose::Batch, AppendResult::SlotTaken);
    assert_eq!(reply_to(&fx, 1), Err(Error::Fenced));
    assert_eq!(reply_to(&fx, 2), Err(Error::Fenced));
    assert_eq!(stops(&fx), [StopHow::Departed]);
}

#[test]
fn a_snapshot_waiter_that_needs_a_later_seq_gets_the_second_snapshot() {
    let mut h = Harness::new();
    commit(&mut h, &["a"], 1);
    let fx = h.step(Input::Snapshot(20));
    assert_eq!(snapshot_seqs(&fx), [1]);
    // More writes land while the snapshot at seq 1 is written.
    commit(&mut h, &["b"], 2);
    let fx = h.step(Input::Snapshot(21));
    assert!(snapshot_seqs(&fx).is_empty(), "one snapshot at a time");
    let fx = h.step(Input::SnapshotWritten(Ok(Seq(1))));
    assert_eq!(reply_to(&fx, 20), Ok(Reply::Snapshotted { range_id: RangeId(1), seq: Seq(1) }));
    assert!(replies(&fx).iter().all(|(w, _)| *w != 21), "seq 1 does not cover what waiter 21 asked for");
    assert_eq!(snapshot_seqs(&fx), [2], "the second snapshot starts at once");
    let fx = h.step(Input::SnapshotWritten(Ok(Seq(2))));
    assert_eq!(reply_to(&fx, 21), Ok(Reply::Snapshotted { range_id: RangeId(1), seq: Seq(2) }));
    assert!(snapshot_seqs(&fx).is_empty());
    // Nothing new since: a third caller is answered at once from the checkpoint.
    let fx = h.step(Input::Snapshot(22));
    assert_eq!(reply_to(&fx, 22), Ok(Reply::Snapshotted { range_id: RangeId(1), seq: Seq(2) }));
}

#[test]
fn a_prepare_waiting_behind_a_held_transaction_times_out_clearly() {
    let mut h = Harness::new();
    let fx = h.step(Input::Prepare(prepare(1, "a", false), 10));
    assert!(matches!(reply_to(&fx, 10), Ok(Reply::TxnPrepared { .. })));
    // A second participant's prepare waits briefly for the range.
    let fx = h.step(Input::Prepare(prepare(2, "b", false), 11));
    assert!(replies(&fx).is_empty());
    let [(Timer::TxnWait, wait)] = timers(&fx)[..] else { panic!("a wait timer: {:?}", timers(&fx)) };
    assert_eq!(wait, Duration::from_millis(50));
    // Before its deadline nothing happens.
    h.advance(Duration::from_millis(30));
    assert!(h.step(Input::Timer(Timer::TxnWait)).is_empty());
    h.advance(Duration::from_millis(20));
    let fx = h.step(Input::Timer(Timer::TxnWait));
    match reply_to(&fx, 11) {
        Err(Error::Unavailable { reason }) => assert!(reason.contains("held by another transaction"), "{reason}"),
        other => panic!("expected a clear refusal, got {other:?}"),
    }
    // The holder is untouched and can still commit.
    let fx = h.step(Input::Resolve { txn_id: txn_id(1), decision: TxnDecision::Commit, reply: 12 });
    assert_eq!(reply_to(&fx, 12), Ok(Reply::TxnResolved { committed: true }));
}

#[test]
fn a_local_transaction_waits_its_turn_then_commits() {
    let mut h = Harness::new();
    assert_eq!(appends(&h.write("a", 1)), [(1, Purpose::Batch)]);
    // An append in flight: the local transaction waits (up to its hold time).
    let fx = h.step(Input::Prepare(prepare(1, "t", true), 10));
    assert!(replies(&fx).is_empty());
    assert_eq!(timers(&fx), [(Timer::TxnWait, Duration::from_millis(5_000))]);
    // It goes first after the append; the write queued meanwhile goes after it.
    assert!(h.write("b", 2).is_empty());
    let fx = h.appended(1, Purpose::Batch, AppendResult::Ok);
    assert_eq!(appends(&fx), [(2, Purpose::Txn)]);
    let fx = h.appended(2, Purpose::Txn, AppendResult::Ok);
    assert!(matches!(reply_to(&fx, 10), Ok(Reply::TxnCommitted { .. })));
    assert_eq!(appends(&fx), [(3, Purpose::Batch)]);
}

#[test]
fn idle_release_waits_for_queued_and_in_flight_writes() {
    let mut h = Harness::new();
    let fx = h.step(Input::Start);
    assert!(timers(&fx).contains(&(Timer::IdleCheck, IDLE_CHECK)));
    assert_eq!(appends(&h.write("a", 1)), [(1, Purpose::Batch)]);
    assert!(h.write("b", 2).is_empty());
    // Long past the idle time, but writes are in flight and queued: no release.
    h.advance(Duration::from_secs(10));
    let fx = h.step(Input::Timer(Timer::IdleCheck));
    assert!(replies(&fx).is_empty() && snapshot_seqs(&fx).is_empty() && !clears_owner(&fx) && stops(&fx).is_empty());
    assert_eq!(timers(&fx), [(Timer::IdleCheck, IDLE_CHECK)], "checks again later");
    let fx = h.appended(1, Purpose::Batch, AppendResult::Ok);
    assert_eq!(reply_to(&fx, 1), written(1, 0));
    assert_eq!(appends(&fx), [(2, Purpose::Batch)]);
    let fx = h.step(Input::Timer(Timer::IdleCheck));
    assert!(snapshot_seqs(&fx).is_empty() && !clears_owner(&fx), "the second batch is still in flight");
    let fx = h.appended(2, Purpose::Batch, AppendResult::Ok);
    assert_eq!(reply_to(&fx, 2), written(2, 0));
    // Now idle with nothing to do: snapshot (dirty), clear the owner, stop.
    let fx = h.step(Input::Timer(Timer::IdleCheck));
    assert_eq!(snapshot_seqs(&fx), [2]);
    let fx = h.step(Input::SnapshotWritten(Ok(Seq(2))));
    assert!(clears_owner(&fx));
    let fx = h.step(Input::OwnerCleared(ClearOutcome::Cleared));
    assert_eq!(stops(&fx), [StopHow::Departed]);
}

#[test]
fn a_recent_write_keeps_the_range_from_idling() {
    let mut h = Harness::new();
    commit(&mut h, &["a"], 1);
    h.advance(Duration::from_millis(500));
    let fx = h.step(Input::Timer(Timer::IdleCheck));
    assert!(snapshot_seqs(&fx).is_empty() && !clears_owner(&fx));
}

#[test]
fn a_transient_append_failure_retries_the_same_slot_with_backoff() {
    let mut h = Harness::new();
    assert_eq!(appends(&h.write("a", 1)), [(1, Purpose::Batch)]);
    let fx = h.appended(1, Purpose::Batch, AppendResult::Failed(Error::unavailable("store down")));
    assert!(replies(&fx).is_empty(), "the outcome is not known yet");
    assert_eq!(timers(&fx), [(Timer::AppendRetry, Duration::from_millis(50))]);
    let fx = h.step(Input::Timer(Timer::AppendRetry));
    assert_eq!(appends(&fx), [(1, Purpose::Batch)]);
    let fx = h.appended(1, Purpose::Batch, AppendResult::Ok);
    assert_eq!(reply_to(&fx, 1), written(1, 0));
}

#[test]
fn an_ended_epoch_refuses_requests_and_drop_stops_with_timeouts_for_the_append_in_flight() {
    let mut h = Harness::new();
    assert_eq!(appends(&h.write("a", 1)), [(1, Purpose::Batch)]);
    h.admission.epoch = Epoch(2);
    assert_eq!(reply_to(&h.write("b", 2), 2), Err(Error::NotOwner { hint: None }));
    let readers_admitted = view::admits(h.m.serves_reads(), Epoch(1), h.admission.epoch, h.admission.live);
    assert!(!readers_admitted, "readers are refused too");
    let fx = h.step(Input::Drop);
    assert_eq!(reply_to(&fx, 1), Err(Error::Timeout), "the append may still land: outcome unknown");
    assert_eq!(stops(&fx), [StopHow::Departed]);
}

#[test]
fn a_release_during_a_split_entry_goes_on_when_the_split_entry_fails() {
    let mut h = Harness::new();
    commit(&mut h, &["a", "b"], 1);
    let mut fx = Vec::new();
    assert_eq!(h.m.split_now(h.now, h.admission, &mut fx), Ok(()));
    assert_eq!(appends(&fx), [(3, Purpose::Split)]);
    // The release waits for the split entry in flight.
    assert!(h.step(Input::Release(Some(10))).is_empty());
    assert_eq!(h.m.stats(h.now).state, RangeState::Releasing);
    let fx = h.appended(3, Purpose::Split, AppendResult::Failed(Error::unavailable("store down")));
    assert_eq!(snapshot_seqs(&fx), [2], "not split: the release goes on with its snapshot");
    let fx = h.step(Input::SnapshotWritten(Ok(Seq(2))));
    assert!(clears_owner(&fx));
    let fx = h.step(Input::OwnerCleared(ClearOutcome::Cleared));
    assert_eq!(reply_to(&fx, 10), Ok(Reply::Released { range_id: RangeId(1) }));
    assert_eq!(stops(&fx), [StopHow::Departed]);
}

#[test]
fn a_release_during_a_split_entry_learns_the_range_is_gone_when_it_splits() {
    let mut h = Harness::new();
    commit(&mut h, &["a", "b"], 1);
    let mut fx = Vec::new();
    assert_eq!(h.m.split_now(h.now, h.admission, &mut fx), Ok(()));
    assert!(h.step(Input::Release(Some(10))).is_empty());
    let fx = h.appended(3, Purpose::Split, AppendResult::Ok);
    assert_eq!(reply_to(&fx, 10), Err(Error::NotOwner { hint: None }));
    assert_eq!(stops(&fx), [StopHow::Split]);
}

#[test]
fn an_abort_that_finds_the_transactions_own_entry_in_its_slot_commits_it() {
    let mut h = Harness::new();
    let fx = h.step(Input::Prepare(prepare(1, "t", false), 10));
    assert!(matches!(reply_to(&fx, 10), Ok(Reply::TxnPrepared { seq: Some(Seq(1)), .. })));
    let fx = h.step(Input::Resolve { txn_id: txn_id(1), decision: TxnDecision::Resolve, reply: 11 });
    assert_eq!(appends(&fx), [(1, Purpose::Abort)]);
    // The coordinator's atomic append got there first: not a fence.
    let fx = h.appended(1, Purpose::Abort, AppendResult::SlotTaken);
    assert!(stops(&fx).is_empty());
    let [Effect::ReadSlot { seq: Seq(1) }] = fx[..] else { panic!("the slot is read back") };
    let payload = batch::TxnPayload {
        txn_id: txn_id(1),
        writes: vec![batch::logged(&TxnWrite::Put { key: Key::from("t"), value: b"t".to_vec() }, 0)],
    };
    let entry = LogEntry {
        kind: ampstore_store::EntryKind::Txn,
        writer: node("coordinator"),
        epoch: Epoch(3),
        payload: bytes::Bytes::from(batch::encode_txn(&payload)),
    };
    let fx = h.step(Input::SlotRead { seq: Seq(1), found: Ok(Some((Seq(1), entry))) });
    assert_eq!(reply_to(&fx, 11), Ok(Reply::TxnResolved { committed: true }));
    assert!(view::admits(h.m.serves_reads(), Epoch(1), h.admission.epoch, h.admission.live));
    assert_eq!(h.m.read(&Key::from("t")).unwrap().unwrap().value, b"t", "readers see the committed write");
    // Another writer's entry in the slot is a fence.
    let mut h = Harness::new();
    h.step(Input::Prepare(prepare(2, "t", false), 20));
    h.step(Input::Resolve { txn_id: txn_id(2), decision: TxnDecision::Resolve, reply: 21 });
    h.appended(1, Purpose::Abort, AppendResult::SlotTaken);
    let fence = LogEntry {
        kind: ampstore_store::EntryKind::Fence,
        writer: node("b"),
        epoch: Epoch(4),
        payload: bytes::Bytes::new(),
    };
    let fx = h.step(Input::SlotRead { seq: Seq(1), found: Ok(Some((Seq(1), fence))) });
    assert_eq!(reply_to(&fx, 21), Err(Error::Fenced));
    assert_eq!(stops(&fx), [StopHow::Departed]);
}

#[test]
fn readers_see_a_write_once_applied_and_are_refused_once_a_release_starts() {
    let mut h = Harness::new();
    assert_eq!(appends(&h.write("a", 1)), [(1, Purpose::Batch)]);
    assert!(view::admits(h.m.serves_reads(), Epoch(1), Epoch(1), true));
    assert!(!view::admits(h.m.serves_reads(), Epoch(1), Epoch(2), true), "another epoch of the node: refused");
    assert!(!view::admits(h.m.serves_reads(), Epoch(1), Epoch(1), false), "not live: refused");
    assert_eq!(h.m.read(&Key::from("a")).unwrap(), None, "in flight: not visible yet");
    let fx = h.appended(1, Purpose::Batch, AppendResult::Ok);
    assert_eq!(reply_to(&fx, 1), written(1, 0));
    // Applied before the step's effects (the reply) run: readers see it.
    assert_eq!(h.m.read(&Key::from("a")).unwrap().map(|v| v.version), Some(Version { seq: Seq(1), index: 0 }));
    assert_eq!(h.m.read(&Key::from("b")).unwrap(), None);
    // A release stops reads at once, before the snapshot and the owner's clearing.
    let fx = h.step(Input::Release(Some(10)));
    assert_eq!(snapshot_seqs(&fx), [1]);
    assert!(!h.m.serves_reads(), "releasing: readers are refused from now on");
}

#[test]
fn reads_from_the_view_keep_the_range_from_idling() {
    let mut h = Harness::new();
    commit(&mut h, &["a"], 1);
    h.advance(Duration::from_millis(900));
    h.m.touch(h.now);
    h.advance(Duration::from_millis(900));
    let fx = h.step(Input::Timer(Timer::IdleCheck));
    assert!(snapshot_seqs(&fx).is_empty() && !clears_owner(&fx), "read 900 ms ago: not idle");
    h.advance(Duration::from_millis(200));
    let fx = h.step(Input::Timer(Timer::IdleCheck));
    assert_eq!(snapshot_seqs(&fx), [1], "idle for 1.1 s: released (snapshot first)");
}

#[test]
fn writes_that_arrive_together_share_one_log_entry() {
    let mut h = Harness::new();
    let fx = h.step(Input::Writes(vec![(put("a"), 1), (put("b"), 2), (put("c"), 3)]));
    assert_eq!(appends(&fx), [(1, Purpose::Batch)], "one append for the three");
    let fx = h.appended(1, Purpose::Batch, AppendResult::Ok);
    assert_eq!(replies(&fx), [(1, written(1, 0)), (2, written(1, 1)), (3, written(1, 2))]);
    // One at a time, the first goes alone and the next two wait for its append.
    let mut h = Harness::new();
    assert_eq!(appends(&h.write("a", 1)), [(1, Purpose::Batch)]);
    assert!(appends(&h.write("b", 2)).is_empty());
    assert!(appends(&h.write("c", 3)).is_empty());
    let fx = h.appended(1, Purpose::Batch, AppendResult::Ok);
    assert_eq!(appends(&fx), [(2, Purpose::Batch)], "the two waiting writes go together next");
}

fn cond_put(key: &str, expected: Option<Version>) -> Write {
    Write { condition: Condition::Version(expected), ..put(key) }
}

/// A durable batch is staged, the next batch of plain writes goes out before it is applied
/// (so the store commits it meanwhile), and nothing of the staged batch is answered or
/// visible to readers until it is applied; then the next batch's writes follow in order.
#[test]
fn the_next_batch_goes_out_before_the_durable_one_is_applied() {
    let mut h = Harness::new();
    assert_eq!(appends(&h.write("a", 1)), [(1, Purpose::Batch)]);
    assert!(appends(&h.write("b", 2)).is_empty());
    assert!(appends(&h.write("a", 3)).is_empty());
    let fx = h.appended_raw(1);
    assert_eq!(appends(&fx), [(2, Purpose::Batch)], "the next batch goes out at once");
    assert!(matches!(fx.last(), Some(Effect::ApplyStaged)), "then the driver applies the staged batch: {}", fx.len());
    assert!(replies(&fx).is_empty(), "nothing answered before it is applied");
    assert_eq!(h.m.read(&Key::from("a")).unwrap(), None, "not visible before it is applied");
    let fx = h.step_raw(Input::ApplyStaged);
    assert_eq!(replies(&fx), [(1, written(1, 0))]);
    assert_eq!(h.m.read(&Key::from("a")).unwrap().map(|v| v.version), Some(Version { seq: Seq(1), index: 0 }));
    let fx = h.appended(2, Purpose::Batch, AppendResult::Ok);
    assert_eq!(replies(&fx), [(2, written(2, 0)), (3, written(2, 1))]);
    assert_eq!(h.m.read(&Key::from("a")).unwrap().map(|v| v.version), Some(Version { seq: Seq(2), index: 1 }));
}

/// Any input applies the staged batch before it is decided: here the next batch's append
/// completes before the driver's `ApplyStaged` came, and a conditional write that arrives
/// sees the staged write.
#[test]
fn every_input_applies_the_staged_batch_first() {
    let mut h = Harness::new();
    h.write("a", 1);
    h.write("b", 2);
    let fx = h.appended_raw(1);
    assert_eq!(appends(&fx), [(2, Purpose::Batch)]);
    // The conditional write is decided against seq 1 applied (it waits for seq 2's append).
    let fx = h.step_raw(Input::Writes(vec![(cond_put("a", Some(Version { seq: Seq(1), index: 0 })), 3)]));
    assert_eq!(replies(&fx), [(1, written(1, 0))], "the staged write is answered first");
    let fx = h.appended_raw(2);
    assert_eq!(reply_to(&fx, 2), written(2, 0));
    assert_eq!(appends(&fx), [(3, Purpose::Batch)], "the conditional write held: it goes next");
    let fx = h.appended(3, Purpose::Batch, AppendResult::Ok);
    assert_eq!(reply_to(&fx, 3), written(3, 0));
    // Completed before `ApplyStaged`: the staged batch is applied (and answered) first.
    h.write("c", 4);
    h.write("d", 5);
    let fx = h.appended_raw(4);
    assert_eq!(appends(&fx), [(5, Purpose::Batch)]);
    let fx = h.appended_raw(5);
    assert_eq!(replies(&fx), [(4, written(4, 0)), (5, written(5, 0))], "in log order");
    assert!(replies(&h.step_raw(Input::ApplyStaged)).is_empty(), "the late ApplyStaged finds nothing to do");
}

/// A write decided against the data (a version condition) is not batched before the
/// durable batch ahead of it is applied: the batch is applied first, and the condition
/// sees it.
#[test]
fn a_conditional_write_waits_for_the_durable_batch_to_be_applied() {
    let mut h = Harness::new();
    h.write("a", 1);
    let v1 = Some(Version { seq: Seq(1), index: 0 });
    assert!(appends(&h.step(Input::Writes(vec![(cond_put("a", v1), 2)]))).is_empty());
    let fx = h.appended_raw(1);
    assert!(!fx.iter().any(|e| matches!(e, Effect::ApplyStaged)), "nothing staged");
    assert_eq!(reply_to(&fx, 1), written(1, 0));
    assert_eq!(appends(&fx), [(2, Purpose::Batch)], "the condition held against the applied write");
    let fx = h.appended(2, Purpose::Batch, AppendResult::Ok);
    assert_eq!(reply_to(&fx, 2), written(2, 0));
    // Plain writes first, then a conditional one: the plain ones go before the apply, the
    // conditional one waits for the batch after.
    h.write("x", 3);
    h.write("y", 4);
    let v2 = Some(Version { seq: Seq(2), index: 0 });
    h.step(Input::Writes(vec![(cond_put("a", v2), 5)]));
    let fx = h.appended_raw(3);
    assert_eq!(appends(&fx), [(4, Purpose::Batch)]);
    h.step_raw(Input::ApplyStaged);
    let fx = h.appended(4, Purpose::Batch, AppendResult::Ok);
    assert_eq!(replies(&fx)[0], (4, written(4, 0)));
    assert_eq!(appends(&fx), [(5, Purpose::Batch)]);
    let fx = h.appended(5, Purpose::Batch, AppendResult::Ok);
    assert_eq!(reply_to(&fx, 5), written(5, 0));
}

/// A range that must split, release or run a transaction after this append does not send
/// a batch ahead: those need the log idle.
#[test]
fn nothing_goes_ahead_of_a_waiting_transaction() {
    let mut h = Harness::new();
    h.write("a", 1);
    h.step(Input::Prepare(prepare(1, "t", true), 2));
    h.write("b", 3);
    let fx = h.appended_raw(1);
    assert!(!fx.iter().any(|e| matches!(e, Effect::ApplyStaged)));
    assert_eq!(reply_to(&fx, 1), written(1, 0));
    assert_eq!(appends(&fx), [(2, Purpose::Txn)], "the waiting transaction goes first");
}

/// Nor ahead of a split that is due: the split entry needs the log idle.
#[test]
fn nothing_goes_ahead_of_a_due_split() {
    let mut h = Harness::new();
    commit(&mut h, &["a", "m"], 1);
    assert_eq!(appends(&h.write("b", 3)), [(3, Purpose::Batch)]);
    h.write("c", 4);
    h.m.split_now(h.now, h.admission, &mut Vec::new()).unwrap();
    let fx = h.appended_raw(3);
    assert!(!fx.iter().any(|e| matches!(e, Effect::ApplyStaged)));
    assert_eq!(reply_to(&fx, 3), written(3, 0));
    assert_eq!(appends(&fx), [(4, Purpose::Split)], "the split goes, not a batch ahead of it");
    assert!(matches!(reply_to(&fx, 4), Err(Error::RangeLoading { .. })), "the queued write retries on a child");
}
