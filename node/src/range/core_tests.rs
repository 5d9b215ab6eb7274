//! Deterministic tests of the range state machine: the "log" is a map, waiters are ids.

use super::*;
use std::collections::BTreeMap;

use ampstore_common::protocol::{ExpireWhen, KeyTtl};

type Core = RangeCore<u32>;

fn node(n: &str) -> NodeId {
    NodeId::new(n).unwrap()
}

fn core_for(owner: &str, epoch: u64) -> Core {
    RangeCore::new(RangeId(1), KeyRange::full(), node(owner), Epoch(epoch), Memtable::new(), Seq(0), 64 * 1024)
}

fn put(key: &str, value: &str) -> Write {
    Write {
        op: LoggedOp::Put { key: Key::from(key), value: value.as_bytes().to_vec() },
        condition: Condition::None,
        write_id: None,
    }
}

fn put_if(key: &str, value: &str, expected: Option<Version>) -> Write {
    Write { condition: Condition::Version(expected), ..put(key, value) }
}

fn v(seq: u64, index: u32) -> Version {
    Version { seq: Seq(seq), index }
}

/// A stand-in for the commit log: slots written at most once.
#[derive(Default)]
struct Log(BTreeMap<u64, LogEntry>);

impl Log {
    fn append(&mut self, seq: Seq, e: LogEntry) -> bool {
        if self.0.contains_key(&seq.0) {
            return false;
        }
        self.0.insert(seq.0, e);
        true
    }
}

/// Runs the core's batches into `log` until nothing is pending; returns replies in order.
fn drive(core: &mut Core, log: &mut Log) -> Vec<Outcome<u32>> {
    let mut out = Vec::new();
    loop {
        let plan = core.next_batch();
        out.extend(plan.early);
        let Some((seq, entry)) = plan.append else { break };
        if log.append(seq, entry) {
            out.extend(core.on_appended(seq));
        } else {
            out.extend(core.on_fenced());
            break;
        }
    }
    out
}

#[test]
fn group_commit_takes_all_pending_writes_in_order() {
    let mut core = core_for("a", 1);
    let mut log = Log::default();
    for i in 0..5u32 {
        assert!(core.submit(put(&format!("k{i}"), &format!("v{i}")), i).is_none());
    }
    let plan = core.next_batch();
    let (seq, entry) = plan.append.unwrap();
    assert_eq!(seq, Seq(1));
    // One append in flight: no second batch, but reads are served.
    assert!(core.submit(put("late", "x"), 99).is_none());
    assert!(core.next_batch().append.is_none());
    assert_eq!(core.get(&Key::from("k0")).unwrap(), None, "not applied before durable");
    let payload = batch::decode(&entry.payload).unwrap();
    let keys: Vec<String> = payload
        .writes
        .iter()
        .map(|w| match &w.op {
            LoggedOp::Put { key, .. } => key.to_string(),
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(keys, ["k0", "k1", "k2", "k3", "k4"]);
    assert!(log.append(seq, entry));
    let replies = core.on_appended(seq);
    let order: Vec<u32> = replies.iter().map(|(w, _)| *w).collect();
    assert_eq!(order, [0, 1, 2, 3, 4]);
    for (i, (_, r)) in replies.iter().enumerate() {
        assert_eq!(r, &Ok(Reply::Written { version: v(1, i as u32) }));
    }
    // The late write is the next batch, at seq 2.
    let replies = drive(&mut core, &mut log);
    assert_eq!(replies, vec![(99, Ok(Reply::Written { version: v(2, 0) }))]);
    assert_eq!(core.get(&Key::from("k3")).unwrap().unwrap().version, v(1, 3));
}

#[test]
fn batches_are_bounded_by_bytes() {
    let mut core =
        RangeCore::<u32>::new(RangeId(1), KeyRange::full(), node("a"), Epoch(1), Memtable::new(), Seq(0), 1000);
    let mut log = Log::default();
    for i in 0..10u32 {
        assert!(core.submit(put(&format!("k{i}"), &"x".repeat(300)), i).is_none());
    }
    let replies = drive(&mut core, &mut log);
    assert_eq!(replies.len(), 10);
    assert!(log.0.len() >= 4, "10 writes of ~400 bytes in batches of at most 1000: {} batches", log.0.len());
    for e in log.0.values() {
        assert!(e.payload.len() <= 1000, "a batch of {} bytes: the size bounds must hold", e.payload.len());
    }
    // A single write bigger than the batch limit still goes through, alone.
    assert!(core.submit(put("big", &"y".repeat(5000)), 50).is_none());
    assert_eq!(drive(&mut core, &mut log).len(), 1);
}

#[test]
fn versions_and_conditions() {
    let mut core = core_for("a", 1);
    let mut log = Log::default();
    core.submit(put("k", "1"), 1);
    drive(&mut core, &mut log);
    let ver = core.get(&Key::from("k")).unwrap().unwrap().version;
    assert_eq!(ver, v(1, 0));
    // In one batch: a matching CAS, a stale CAS (sees the first), create-if-absent on an
    // existing key, create-if-absent on a new key, and a CAS on that new key.
    core.submit(put_if("k", "2", Some(ver)), 2);
    core.submit(put_if("k", "3", Some(ver)), 3);
    core.submit(put_if("k", "4", None), 4);
    core.submit(put_if("n", "1", None), 5);
    core.submit(put_if("n", "2", Some(v(2, 1))), 6);
    let mut replies = drive(&mut core, &mut log);
    replies.sort_by_key(|(w, _)| *w);
    assert_eq!(replies[0], (2, Ok(Reply::Written { version: v(2, 0) })));
    assert!(matches!(&replies[1], (3, Err(Error::Conflict { .. }))));
    assert!(matches!(&replies[2], (4, Err(Error::Conflict { .. }))));
    assert_eq!(replies[3], (5, Ok(Reply::Written { version: v(2, 1) })));
    assert_eq!(replies[4], (6, Ok(Reply::Written { version: v(2, 2) })));
    assert_eq!(core.get(&Key::from("k")).unwrap().unwrap().value, b"2");
    assert_eq!(core.get(&Key::from("n")).unwrap().unwrap().value, b"2");
    // Deletes carry a version and count what they removed.
    core.submit(Write { op: LoggedOp::Delete { key: Key::from("k") }, condition: Condition::None, write_id: None }, 7);
    core.submit(Write { op: LoggedOp::Delete { key: Key::from("zz") }, condition: Condition::None, write_id: None }, 8);
    let replies = drive(&mut core, &mut log);
    assert_eq!(replies[0], (7, Ok(Reply::Deleted { removed: 1, version: v(3, 0) })));
    assert_eq!(replies[1], (8, Ok(Reply::Deleted { removed: 0, version: v(3, 1) })));
    // A condition after a delete_range in the same batch sees the keys gone.
    core.submit(
        Write {
            op: LoggedOp::DeleteRange { start: Key::from("a"), end: None },
            condition: Condition::None,
            write_id: None,
        },
        9,
    );
    core.submit(put_if("n", "3", None), 10);
    let replies = drive(&mut core, &mut log);
    assert_eq!(replies[0], (9, Ok(Reply::Deleted { removed: 1, version: v(4, 0) })));
    assert_eq!(replies[1], (10, Ok(Reply::Written { version: v(4, 1) })));
    assert_eq!(core.keys(), 1);
}

#[test]
fn fenced_append_refuses_everything_after() {
    let mut a = core_for("a", 1);
    let mut log = Log::default();
    a.submit(put("k", "1"), 1);
    assert_eq!(drive(&mut a, &mut log).len(), 1);
    // Another owner fences the log at the next slot.
    assert!(log.append(
        Seq(2),
        LogEntry { kind: EntryKind::Fence, writer: node("b"), epoch: Epoch(1), payload: Bytes::new() }
    ));
    a.submit(put("k", "2"), 2);
    a.submit(put("j", "2"), 3);
    let plan = a.next_batch();
    let (seq, entry) = plan.append.unwrap();
    assert_eq!(seq, Seq(2));
    assert!(!log.append(seq, entry), "slot taken");
    a.submit(put("x", "queued behind the failed append"), 4);
    let mut replies = a.on_fenced();
    replies.sort_by_key(|(w, _)| *w);
    assert_eq!(replies, vec![(2, Err(Error::Fenced)), (3, Err(Error::Fenced)), (4, Err(Error::Fenced))]);
    assert!(a.is_fenced());
    assert_eq!(a.submit(put("k", "3"), 5), Some((5, Err(Error::Fenced))));
    assert!(a.next_batch().append.is_none());
    // Nothing of the failed batch was applied.
    assert_eq!(a.get(&Key::from("k")).unwrap().unwrap().value, b"1");
}

#[test]
fn replay_after_a_fence_by_another_owner() {
    let mut log = Log::default();
    let mut a = core_for("a", 1);
    a.submit(put("k", "a1"), 1);
    a.submit(put("j", "a1"), 2);
    drive(&mut a, &mut log);
    a.submit(put("k", "a2"), 3);
    drive(&mut a, &mut log);
    // B takes over: fence at head + 1, then writes.
    let head = *log.0.keys().last().unwrap();
    let mut b = core_for("b", 4);
    for (seq, e) in &log.0 {
        b.replay(Seq(*seq), e).unwrap();
    }
    let fence = LogEntry { kind: EntryKind::Fence, writer: node("b"), epoch: Epoch(4), payload: Bytes::new() };
    assert!(log.append(Seq(head + 1), fence));
    b.fenced_at(Seq(head + 1));
    b.submit(put("k", "b1"), 4);
    assert_eq!(drive(&mut b, &mut log), vec![(4, Ok(Reply::Written { version: v(4, 0) }))]);
    // A's late append loses its slot.
    a.submit(put("k", "a3"), 5);
    assert_eq!(drive(&mut a, &mut log), vec![(5, Err(Error::Fenced))]);
    // A third owner replays everything: A's batches, B's fence and B's batch.
    let mut c = core_for("c", 1);
    for (seq, e) in &log.0 {
        c.replay(Seq(*seq), e).unwrap();
    }
    assert_eq!(c.applied(), Seq(4));
    assert_eq!(c.get(&Key::from("k")).unwrap(), Some(Versioned { value: b"b1".to_vec(), version: v(4, 0) }));
    assert_eq!(c.get(&Key::from("j")).unwrap(), Some(Versioned { value: b"a1".to_vec(), version: v(1, 1) }));
    // Replay refuses gaps.
    let mut d = core_for("d", 1);
    assert!(d.replay(Seq(2), &log.0[&2]).is_err());
}

#[test]
fn retried_write_ids_apply_once() {
    let mut core = core_for("a", 1);
    let mut log = Log::default();
    let id = WriteKey::Write(WriteId::new(7, 1));
    let w = Write { write_id: Some(id), ..put("k", "1") };
    assert!(core.submit(w.clone(), 1).is_none());
    // The retry arrives while the first is pending: it follows the first's outcome.
    assert!(core.submit(w.clone(), 2).is_none());
    let replies = drive(&mut core, &mut log);
    assert_eq!(replies.len(), 2);
    assert!(replies.iter().all(|(_, r)| r == &Ok(Reply::Written { version: v(1, 0) })));
    // A retry after it was applied gets the same answer, and nothing is logged.
    assert_eq!(core.submit(w.clone(), 3), Some((3, Ok(Reply::Written { version: v(1, 0) }))));
    assert_eq!(log.0.len(), 1);
    // After replay on another owner the write id is still known.
    let mut b = core_for("b", 1);
    b.replay(Seq(1), &log.0[&1]).unwrap();
    assert_eq!(b.submit(w, 4), Some((4, Ok(Reply::Written { version: v(1, 0) }))));
}

/// S3: the write-id table travels in the snapshot. A write applied, overwritten by a later
/// write, then checkpointed (log truncated) and loaded elsewhere: the retry is answered with
/// the first outcome and does not overwrite the later write.
#[test]
fn a_retry_after_a_checkpoint_and_a_move_is_answered_not_applied() {
    let mut a = core_for("a", 1);
    a.set_clock(1_000);
    let mut log = Log::default();
    let first = Write { write_id: Some(WriteKey::Write(WriteId::new(7, 1))), ..put("k", "first") };
    let second = Write { write_id: Some(WriteKey::Write(WriteId::new(8, 1))), ..put("k", "second") };
    let del = Write {
        op: LoggedOp::Delete { key: Key::from("gone") },
        condition: Condition::None,
        write_id: Some(WriteKey::Write(WriteId::new(7, 2))),
    };
    let cond = Write { write_id: Some(WriteKey::Write(WriteId::new(7, 3))), ..put_if("c", "x", Some(v(9, 9))) };
    a.submit(put("gone", "1"), 0);
    drive(&mut a, &mut log);
    a.submit(first.clone(), 1);
    drive(&mut a, &mut log);
    a.submit(second, 2);
    a.submit(del.clone(), 3);
    a.submit(cond.clone(), 4);
    let replies = drive(&mut a, &mut log);
    let conflict = replies.iter().find(|(w, _)| *w == 4).map(|(_, r)| r.clone()).unwrap();
    assert!(matches!(conflict, Err(Error::Conflict { .. })));
    // Snapshot at the applied seq; the log below it is gone.
    let (seq, data, write_ids, _) = a.snapshot_view();
    let records = write_ids.records();
    log.0.retain(|s, _| *s > seq.0);
    let mut b = RangeCore::<u32>::new(RangeId(1), KeyRange::full(), node("b"), Epoch(1), data, seq, 64 * 1024)
        .with_write_ids(super::super::write_ids::WriteIdTable::from_records(records, Vec::new(), 2_000));
    b.set_clock(2_000);
    assert_eq!(b.submit(first, 5), Some((5, Ok(Reply::Written { version: v(2, 0) }))));
    assert_eq!(b.get(&Key::from("k")).unwrap().unwrap().value, b"second".to_vec(), "the retry did not overwrite");
    assert_eq!(b.submit(del, 6), Some((6, Ok(Reply::Deleted { removed: 1, version: v(3, 1) }))));
    assert_eq!(b.submit(cond, 7), Some((7, conflict)), "a conflict is answered as it was");
    // Past the retention the id is forgotten (and the retry would be a new write).
    b.set_clock(2_000 + ampstore_common::limits::WRITE_ID_RETENTION_MS + 1);
    assert_eq!(b.write_ids().len(), 0);
}

/// S3 on a hot range: far more writes than the old 10,000-id cap, then a retry of the first.
#[test]
fn a_hot_range_remembers_every_write_id_of_the_retention() {
    let mut core = core_for("a", 1);
    core.set_clock(1);
    let mut log = Log::default();
    let first = Write { write_id: Some(WriteKey::Write(WriteId::new(1, 0))), ..put("k", "first") };
    core.submit(first.clone(), 0);
    drive(&mut core, &mut log);
    for n in 1..=50_000u64 {
        let w = Write { write_id: Some(WriteKey::Write(WriteId::new(2, n))), ..put("k", "later") };
        core.submit(w, 1);
        if n % 500 == 0 {
            drive(&mut core, &mut log);
        }
    }
    drive(&mut core, &mut log);
    assert_eq!(core.submit(first, 2), Some((2, Ok(Reply::Written { version: v(1, 0) }))));
    assert_eq!(core.get(&Key::from("k")).unwrap().unwrap().value, b"later".to_vec());
}

/// A push's id is logged with it, so a range that rebuilds its table from the log tail
/// knows it (the element may be gone by then, e.g. a queue task acked).
#[test]
fn push_ids_are_rebuilt_from_the_log() {
    let mut a = core_for("a", 1);
    let mut log = Log::default();
    let pid = ampstore_common::lists::PushId { ms: 5, client: 6, n: 7 };
    let push = Write {
        op: LoggedOp::Put { key: Key::from("task"), value: b"t".to_vec() },
        condition: Condition::Version(None),
        write_id: Some(WriteKey::Push(pid)),
    };
    a.submit(push.clone(), 1);
    drive(&mut a, &mut log);
    a.submit(Write { op: LoggedOp::Delete { key: Key::from("task") }, condition: Condition::None, write_id: None }, 2);
    drive(&mut a, &mut log);
    let mut b = core_for("b", 1);
    for (s, e) in &log.0 {
        b.replay(Seq(*s), e).unwrap();
    }
    assert_eq!(b.submit(push, 3), Some((3, Ok(Reply::Written { version: v(1, 0) }))));
    assert!(b.get(&Key::from("task")).unwrap().is_none(), "the acked task did not come back");
}

#[test]
fn keys_outside_the_range_are_refused() {
    let range = KeyRange::new(Key::from("b"), Some(Key::from("m"))).unwrap();
    let mut core = RangeCore::<u32>::new(RangeId(2), range, node("a"), Epoch(1), Memtable::new(), Seq(0), 4096);
    assert_eq!(core.submit(put("a", "x"), 1), Some((1, Err(Error::KeyOutOfRange))));
    assert_eq!(core.submit(put("m", "x"), 2), Some((2, Err(Error::KeyOutOfRange))));
    assert_eq!(core.get(&Key::from("z")), Err(Error::KeyOutOfRange));
    let dr = |s: &str, e: Option<&str>| Write {
        op: LoggedOp::DeleteRange { start: Key::from(s), end: e.map(Key::from) },
        condition: Condition::None,
        write_id: None,
    };
    assert_eq!(core.submit(dr("c", None), 3), Some((3, Err(Error::KeyOutOfRange))));
    assert_eq!(core.submit(dr("c", Some("n")), 4), Some((4, Err(Error::KeyOutOfRange))));
    assert!(core.submit(dr("c", Some("m")), 5).is_none());
}

#[test]
fn scans_page_and_resume_within_the_range() {
    let range = KeyRange::new(Key::from("b"), Some(Key::from("m"))).unwrap();
    let mut core = RangeCore::<u32>::new(RangeId(2), range, node("a"), Epoch(1), Memtable::new(), Seq(0), 1 << 20);
    let mut log = Log::default();
    for k in ["b", "c", "d", "e", "f"] {
        core.submit(put(k, k), 0);
    }
    drive(&mut core, &mut log);
    let page = |start: &str, end: Option<&str>, limit, reverse| {
        let Reply::ScanPage { items, resume } =
            core.scan(&Key::from(start), end.map(Key::from).as_ref(), limit, reverse).unwrap()
        else {
            unreachable!()
        };
        (items.into_iter().map(|i| i.key.to_string()).collect::<Vec<_>>(), resume.map(|k| k.to_string()))
    };
    assert_eq!(page("c", None, 2, false), (vec!["c".into(), "d".into()], Some("d\\x00".into())));
    assert_eq!(
        page("d\0", None, 10, false),
        (vec!["e".into(), "f".into()], Some("m".into())),
        "continues in the next range"
    );
    assert_eq!(page("b", Some("e"), 10, false), (vec!["b".into(), "c".into(), "d".into()], None));
    assert_eq!(page("a", Some("m"), 10, true).0, vec!["f", "e", "d", "c", "b"], "reverse from the range end");
    assert_eq!(page("a", Some("m"), 10, true).1, Some("b".into()), "continues below the range start");
    // A reverse page belongs to the range holding the key just below `end`.
    assert_eq!(core.scan(&Key::from("a"), Some(&Key::from("z")), 1, true), Err(Error::KeyOutOfRange));
    assert_eq!(core.scan(&Key::from("a"), None, 1, true), Err(Error::KeyOutOfRange));
    assert_eq!(page("b", Some("e"), 2, true), (vec!["d".into(), "c".into()], Some("c".into())));
    assert_eq!(page("b", Some("c"), 2, true), (vec!["b".into()], None));
    assert_eq!(core.scan(&Key::from("a"), None, 1, false), Err(Error::KeyOutOfRange));
    assert_eq!(core.scan(&Key::from("a"), Some(&Key::from("b")), 1, true), Err(Error::KeyOutOfRange));
}

#[test]
fn snapshot_view_is_frozen_while_writes_continue() {
    let mut core = core_for("a", 1);
    let mut log = Log::default();
    core.submit(put("k", "1"), 1);
    drive(&mut core, &mut log);
    let (seq, view, _, bytes) = core.snapshot_view();
    core.submit(put("k", "2"), 2);
    core.submit(put("j", "2"), 3);
    drive(&mut core, &mut log);
    assert_eq!(seq, Seq(1));
    assert_eq!(view.get(b"k").unwrap().value(), b"1");
    assert!(view.get(b"j").is_none());
    assert!(core.is_dirty());
    core.on_checkpoint(seq, bytes);
    assert_eq!(core.checkpoint_seq(), Seq(1));
    assert!(core.is_dirty(), "seq 2 is after the checkpoint");
    assert!(core.log_bytes_since_checkpoint() > 0);
}

#[test]
fn split_key_halves_the_data_and_divide_covers_every_key() {
    let mut c = core_for("a", 1);
    let mut log = Log::default();
    let value = "x".repeat(100);
    for i in 0..10u32 {
        c.submit(put(&format!("k{i}"), &value), i);
    }
    drive(&mut c, &mut log);
    let key = c.split_key().unwrap();
    assert_eq!(key, Key::from("k5"));
    let (left, right) = c.divide(&key);
    assert_eq!((left.len(), right.len()), (5, 5));
    assert!(left.iter().all(|e| e.key() < key.as_bytes()) && right.iter().all(|e| e.key() >= key.as_bytes()));
    // The split entry closes the log; replaying it elsewhere yields the same plan, and a
    // batch after it is refused.
    let split = SplitPlan { split_key: key.clone(), left: RangeId(7), right: RangeId(8) };
    let (sseq, entry) = c.split_entry(&split);
    assert!(log.append(sseq, entry));
    c.on_split_appended(sseq, split.clone());
    assert_eq!(c.split_state(), Some(&(sseq, split.clone())));
    let mut r = core_for("b", 1);
    let batch = log.0.values().next().unwrap().clone();
    for (seq, e) in &log.0 {
        r.replay(Seq(*seq), e).unwrap();
    }
    assert_eq!(r.split_state().map(|s| &s.1), Some(&split));
    assert_eq!(r.keys(), 10);
    assert!(r.replay(sseq.next(), &batch).is_err(), "no batch after a split");
    let fence = LogEntry { kind: EntryKind::Fence, writer: node("b"), epoch: Epoch(1), payload: Bytes::new() };
    let mut r2 = core_for("b", 1);
    for (seq, e) in &log.0 {
        r2.replay(Seq(*seq), e).unwrap();
    }
    r2.replay(sseq.next(), &fence).unwrap();
}

#[test]
fn a_single_key_range_has_no_split_key() {
    let mut c = core_for("a", 1);
    let mut log = Log::default();
    c.submit(put("only", &"x".repeat(1000)), 1);
    drive(&mut c, &mut log);
    assert_eq!(c.split_key(), None);
    c.submit(put("other", "y"), 2);
    drive(&mut c, &mut log);
    assert_eq!(c.split_key(), Some(Key::from("other")));
}

#[test]
fn a_merge_entry_closes_the_log_until_a_fence_reopens_it() {
    let mut c = core_for("a", 1);
    let mut log = Log::default();
    c.submit(put("k1", "v1"), 1);
    drive(&mut c, &mut log);
    let plan = MergePlan { merged: RangeId(9), left: RangeId(1), right: RangeId(2) };
    let (mseq, entry) = c.merge_entry(&plan);
    assert!(log.append(mseq, entry));
    c.on_merge_appended(mseq, plan.clone());
    assert_eq!(c.merge_state(), Some(&(mseq, plan.clone())));
    assert_eq!(c.applied(), mseq);
    let batch = log.0.values().next().unwrap().clone();

    // Replayed elsewhere: closed; a batch or a split right after the merge entry is refused.
    let replayed = |log: &Log| {
        let mut r = core_for("b", 1);
        for (seq, e) in &log.0 {
            r.replay(Seq(*seq), e).unwrap();
        }
        r
    };
    let mut r = replayed(&log);
    assert_eq!(r.merge_state().map(|s| &s.1), Some(&plan));
    assert!(r.replay(mseq.next(), &batch).is_err(), "no batch after a merge entry");
    let split = SplitPlan { split_key: Key::from("k1"), left: RangeId(7), right: RangeId(8) };
    let split_entry = LogEntry { kind: EntryKind::Split, writer: node("a"), epoch: Epoch(1), payload: split.encode() };
    assert!(replayed(&log).replay(mseq.next(), &split_entry).is_err(), "no split after a merge entry");

    // The loader's fence reopens it (and says which merge it abandoned); writes continue
    // with versions above the merge entry.
    let (fseq, fence) = r.reopen_entry();
    assert_eq!(fseq, mseq.next());
    assert!(log.append(fseq, fence));
    assert_eq!(r.fenced_at(fseq), Some(plan));
    assert!(r.merge_state().is_none());
    r.submit(put("k2", "v2"), 2);
    let out = drive(&mut r, &mut log);
    assert_eq!(out, vec![(2, Ok(Reply::Written { version: v(fseq.0 + 1, 0) }))]);
    // Replaying the whole history (merge, fence, batch) yields the open range.
    let again = replayed(&log);
    assert!(again.merge_state().is_none());
    assert_eq!(again.keys(), 2);
}

#[test]
fn merged_data_is_the_union_and_keeps_versions() {
    let mut left = RangeCore::<u32>::new(
        RangeId(1),
        KeyRange::new(Key::from(""), Some(Key::from("m"))).unwrap(),
        node("a"),
        Epoch(1),
        Memtable::new(),
        Seq(0),
        64 * 1024,
    );
    let mut right = RangeCore::<u32>::new(
        RangeId(2),
        KeyRange::new(Key::from("m"), None).unwrap(),
        node("a"),
        Epoch(1),
        Memtable::new(),
        Seq(0),
        64 * 1024,
    );
    let (mut ll, mut rl) = (Log::default(), Log::default());
    for i in 0..5u32 {
        left.submit(put(&format!("a{i}"), "l"), i);
        drive(&mut left, &mut ll);
        right.submit(put(&format!("x{i}"), "r"), i);
        right.submit(put(&format!("y{i}"), "r"), i);
        drive(&mut right, &mut rl);
    }
    let (_, l, _, _) = left.snapshot_view();
    let (_, r, _, _) = right.snapshot_view();
    let merged = l.clone().union(r.clone());
    assert_eq!(merged.len(), 15);
    let same = |a: &Entry, b: &Entry| (a.key(), a.value(), a.version()) == (b.key(), b.value(), b.version());
    assert!(merged.iter().all(|e| l.get(e.key()).or_else(|| r.get(e.key())).is_some_and(|s| same(s, e))));
}

fn wid(n: u64) -> WriteId {
    WriteId::new(7, n)
}

fn tput(k: &str, v: &str) -> TxnWrite {
    TxnWrite::Put { key: Key::from(k), value: v.as_bytes().to_vec() }
}

fn check(k: &str, condition: TxnCondition) -> TxnCheck {
    TxnCheck { key: Key::from(k), condition }
}

#[test]
fn a_prepared_transaction_holds_the_range_and_commits_at_its_slot() {
    let mut c = core_for("a", 1);
    let mut log = Log::default();
    c.submit(put("x", "1"), 1);
    drive(&mut c, &mut log);
    let vx = c.get(&Key::from("x")).unwrap().unwrap().version;

    // Conditions are checked against the applied data; a failed one names its key.
    let err = c.txn_prepare(wid(1), &[check("x", TxnCondition::Absent)], &[tput("y", "2")]).unwrap_err();
    assert!(matches!(&err, Error::Conflict { key: Some(k), .. } if k.as_bytes() == b"x"), "{err:?}");
    let err = c.txn_prepare(wid(1), &[check("x", TxnCondition::Value(b"other".to_vec()))], &[]).unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }));
    assert!(c.txn_held().is_none(), "a failed prepare holds nothing");

    let checks = [check("x", TxnCondition::Version(vx)), check("y", TxnCondition::Absent)];
    let seq = c.txn_prepare(wid(2), &checks, &[tput("y", "2"), TxnWrite::Delete { key: Key::from("x") }]).unwrap();
    assert_eq!(seq, Some(c.next_seq()), "the next slot is reserved");
    // Again (a retried prepare): the same slot. Another transaction: refused.
    assert_eq!(c.txn_prepare(wid(2), &checks, &[tput("y", "2")]).unwrap(), seq);
    assert!(matches!(c.txn_prepare(wid(3), &[], &[tput("z", "3")]), Err(Error::Unavailable { .. })));
    // Writes queue but no batch goes out while held.
    c.submit(put("z", "after"), 9);
    assert!(c.next_batch().append.is_none());

    // The coordinator wrote the entry at the slot: commit applies it there.
    let (eseq, entry) = c.txn_entry().unwrap();
    assert_eq!(Some(eseq), seq);
    assert_eq!(entry.kind, EntryKind::Txn);
    assert!(log.append(eseq, entry));
    let versions = c.txn_commit().unwrap();
    assert_eq!(versions, vec![v(eseq.0, 0), v(eseq.0, 1)]);
    assert!(c.get(&Key::from("x")).unwrap().is_none());
    assert_eq!(c.get(&Key::from("y")).unwrap().unwrap().version, v(eseq.0, 0));
    // The queued write goes out after it.
    let out = drive(&mut c, &mut log);
    assert_eq!(out, vec![(9, Ok(Reply::Written { version: v(eseq.0 + 1, 0) }))]);

    // A replay of the log gives the same data.
    let mut r = core_for("b", 1);
    for (s, e) in &log.0 {
        r.replay(Seq(*s), e).unwrap();
    }
    assert_eq!(r.snapshot_view().1, c.snapshot_view().1);
}

#[test]
fn an_aborted_transaction_gives_up_its_slot_and_a_read_only_one_reserves_none() {
    let mut c = core_for("a", 1);
    let mut log = Log::default();
    let seq = c.txn_prepare(wid(1), &[], &[tput("k", "v")]).unwrap().unwrap();
    let (aseq, abort) = c.txn_abort_entry().unwrap();
    assert_eq!((aseq, abort.kind), (seq, EntryKind::Abort));
    assert!(log.append(aseq, abort));
    c.txn_aborted();
    assert!(c.txn_held().is_none() && c.get(&Key::from("k")).unwrap().is_none());
    assert_eq!(c.next_seq(), seq.next());

    // No writes: a hold without a slot, released without touching the log.
    assert_eq!(c.txn_prepare(wid(2), &[check("k", TxnCondition::Absent)], &[]).unwrap(), None);
    assert!(c.txn_held().is_some() && c.txn_entry().is_none() && c.txn_abort_entry().is_none());
    c.txn_release();
    assert!(c.txn_held().is_none());

    // Replaying an abort applies nothing.
    let mut r = core_for("b", 1);
    for (s, e) in &log.0 {
        r.replay(Seq(*s), e).unwrap();
    }
    assert_eq!(r.keys(), 0);
    assert_eq!(r.next_seq(), seq.next());
}

fn push(list: &str, ms: u64, element: &str) -> Write {
    let id = ampstore_common::lists::PushId { ms, client: 1, n: 0 };
    Write {
        op: LoggedOp::Put {
            key: ampstore_common::lists::element_key(&Key::from(list), id),
            value: element.as_bytes().to_vec(),
        },
        condition: Condition::ListTail,
        write_id: None,
    }
}

#[test]
fn a_push_behind_the_lists_last_element_is_refused_and_a_retry_is_answered() {
    let mut c = core_for("a", 1);
    let mut log = Log::default();
    c.submit(push("l", 10, "a"), 1);
    c.submit(push("l", 20, "b"), 2);
    c.submit(push("other", 5, "x"), 3);
    // In one batch: behind an element of the same batch.
    c.submit(push("l", 15, "late"), 4);
    let out = drive(&mut c, &mut log);
    let result = |w: u32| out.iter().find(|(id, _)| *id == w).map(|(_, r)| r.clone()).unwrap();
    assert!(result(1).is_ok() && result(2).is_ok() && result(3).is_ok(), "another list does not interfere");
    let last = ampstore_common::lists::element_key(
        &Key::from("l"),
        ampstore_common::lists::PushId { ms: 20, client: 1, n: 0 },
    );
    match result(4) {
        Err(Error::Conflict { key: Some(k), .. }) => assert_eq!(k, last),
        other => panic!("{other:?}"),
    }
    let applied = log.0.len();
    // Behind a stored element: refused. A retry of a stored element: its version, no write.
    c.submit(push("l", 12, "late"), 5);
    c.submit(push("l", 10, "a"), 6);
    c.submit(push("l", 21, "c"), 7);
    let out = drive(&mut c, &mut log);
    let result = |w: u32| out.iter().find(|(id, _)| *id == w).map(|(_, r)| r.clone()).unwrap();
    assert!(matches!(result(5), Err(Error::Conflict { key: Some(ref k), .. }) if *k == last));
    assert_eq!(result(6), Ok(Reply::Written { version: v(1, 0) }));
    assert!(result(7).is_ok());
    assert_eq!(log.0.len(), applied + 1, "only the new element was written");
    // A transaction's push is held to the same rule.
    let behind = TxnWrite::Push {
        key: Key::from("l"),
        element: b"t".to_vec(),
        push_id: ampstore_common::lists::PushId { ms: 11, client: 1, n: 0 },
    };
    assert!(matches!(c.txn_prepare(wid(1), &[], &[behind]), Err(Error::Conflict { .. })));
}

#[test]
fn a_split_never_cuts_a_list() {
    let mut c = core_for("a", 1);
    let mut log = Log::default();
    for ms in 0..10 {
        c.submit(push("l", ms, &"x".repeat(100)), ms as u32);
    }
    drive(&mut c, &mut log);
    assert_eq!(c.split_key(), None, "one list and nothing else: no split");
    c.submit(put("a", "small"), 20);
    drive(&mut c, &mut log);
    let family = ampstore_common::lists::family(&Key::from("l"));
    assert_eq!(c.split_key(), Some(Key(family.clone())), "before the list");
    c.submit(push("m", 1, "y"), 21);
    drive(&mut c, &mut log);
    let key = c.split_key().unwrap();
    assert!(key == Key(family.clone()) || key > ampstore_common::lists::family_end(&family), "{key}");
}

/// S6: a range that stops with an append in flight answers its writers (and the callers
/// following their ids) `Timeout`, outcome unknown; queued writes were not written.
#[test]
fn stopping_with_an_append_in_flight_answers_unknown() {
    let mut core = core_for("a", 1);
    let id = WriteKey::Write(WriteId::new(1, 1));
    core.submit(Write { write_id: Some(id), ..put("k", "1") }, 1);
    assert!(core.next_batch().append.is_some());
    core.submit(Write { write_id: Some(id), ..put("k", "1") }, 2);
    core.submit(put("q", "queued"), 3);
    let mut out = core.abandon_in_flight();
    out.extend(core.refuse_pending(Error::NotOwner { hint: None }));
    out.sort_by_key(|(w, _)| *w);
    assert_eq!(out, vec![(1, Err(Error::Timeout)), (2, Err(Error::Timeout)), (3, Err(Error::NotOwner { hint: None }))]);
    assert!(!core.has_work());
}

/// A1: at the default batch size (the store's entry limit), a batch of DeleteRanges with
/// write ids whose `n` is large and 0.5 KB keys, and of pushes with large values, encodes to
/// at most `LOG_ENTRY_BYTES_MAX`.
#[test]
fn a_batch_never_exceeds_the_log_entry_limit_at_the_default_batch_size() {
    use ampstore_common::limits::LOG_ENTRY_BYTES_MAX;
    let mut core = RangeCore::<u32>::new(
        RangeId(1),
        KeyRange::full(),
        node("a"),
        Epoch(1),
        Memtable::new(),
        Seq(0),
        LOG_ENTRY_BYTES_MAX,
    );
    let mut log = Log::default();
    for i in 0..2000u64 {
        let start = Key::from(format!("{i:0>500}"));
        let end = Key::from(format!("{i:0>500}~"));
        let w = Write {
            op: LoggedOp::DeleteRange { start, end: Some(end) },
            condition: Condition::None,
            write_id: Some(WriteKey::Write(WriteId::new(u64::MAX, u64::MAX - i))),
        };
        assert!(core.submit(w, i as u32).is_none());
    }
    for i in 0..40u64 {
        let pid = ampstore_common::lists::PushId { ms: u64::MAX, client: u64::MAX, n: u64::MAX - i };
        let w = Write {
            op: LoggedOp::Put { key: Key::from(format!("p{i:0>900}")), value: vec![7; 40_000 + i as usize] },
            condition: Condition::None,
            write_id: Some(WriteKey::Push(pid)),
        };
        assert!(core.submit(w, 10_000 + i as u32).is_none());
    }
    let mut batches = 0;
    loop {
        let plan = core.next_batch();
        let Some((seq, entry)) = plan.append else { break };
        assert!(
            entry.payload.len() <= LOG_ENTRY_BYTES_MAX,
            "batch {batches} is {} bytes, over the store's limit of {LOG_ENTRY_BYTES_MAX}",
            entry.payload.len()
        );
        assert!(log.append(seq, entry));
        core.on_appended(seq);
        batches += 1;
    }
    assert!(batches >= 3 && !core.has_work());
}

/// A1: a store that refuses an entry for good (too large, invalid) fails that batch's
/// writers with the store's error instead of retrying the same slot forever; the next
/// batch goes to the same slot.
#[test]
fn a_refused_append_fails_its_batch_and_the_range_goes_on() {
    let mut core = core_for("a", 1);
    let id = WriteKey::Write(WriteId::new(1, 1));
    core.submit(Write { write_id: Some(id), ..put("k", "1") }, 1);
    let (seq, _) = core.next_batch().append.unwrap();
    core.submit(Write { write_id: Some(id), ..put("k", "1") }, 2);
    let err = Error::too_large("log entry", 400_000, 358_400);
    let mut out = core.on_append_refused(err.clone());
    out.sort_by_key(|(w, _)| *w);
    assert_eq!(out, vec![(1, Err(err.clone())), (2, Err(err))]);
    assert!(core.write_ids().get(&id).is_none(), "a refused write is not remembered: a retry may try again");
    core.submit(put("k", "2"), 3);
    let (next, _) = core.next_batch().append.unwrap();
    assert_eq!(next, seq, "the refused slot is still free");
}

/// Issue 14 item 4: a violated safety invariant (an append reported at another seq than the
/// one in flight; a transaction committed at a slot that is not the next one) stops the
/// range with an error, in release builds too: no panic, nothing applied, writes refused.
#[test]
fn a_violated_invariant_stops_the_range_without_panicking() {
    let mut core = core_for("a", 1);
    core.submit(put("k", "1"), 1);
    let (seq, _) = core.next_batch().append.unwrap();
    let out = core.on_appended(seq.next());
    assert!(matches!(out.as_slice(), [(1, Err(Error::Internal { .. }))]), "{out:?}");
    assert!(core.broken().is_some_and(|r| r.contains("seq")), "{:?}", core.broken());
    assert!(core.get(&Key::from("k")).unwrap().is_none(), "nothing applied");
    assert!(matches!(core.submit(put("k", "2"), 2), Some((2, Err(Error::Internal { .. })))));
    assert!(core.next_batch().append.is_none());

    // Reserved slot = next seq.
    let mut t = core_for("a", 1);
    let id = WriteId::new(1, 1);
    t.txn_prepare(id, &[], &[ampstore_common::txn::TxnWrite::Put { key: Key::from("t"), value: b"v".to_vec() }])
        .unwrap();
    // Something moved the next seq under the hold (a bug): the commit must not apply at a
    // slot that is not the reserved one.
    t.next_seq = t.next_seq.next();
    assert!(t.txn_commit().is_err());
    assert!(t.broken().is_some());
    assert!(t.get(&Key::from("t")).unwrap().is_none());
}

/// The last slot of a log has no next one: a range whose checkpoint or last entry sits
/// there (only a damaged stored seq does) stops with an error instead of panicking.
#[test]
fn a_log_at_its_last_slot_stops_the_range_instead_of_panicking() {
    let at_end = |seq: u64| {
        RangeCore::new(RangeId(1), KeyRange::full(), node("a"), Epoch(1), Memtable::new(), Seq(seq), 64 * 1024)
    };
    let core = at_end(u64::MAX);
    assert!(core.broken().is_some_and(|r| r.contains("no log slot after")), "{:?}", core.broken());
    let mut core = at_end(u64::MAX - 1);
    assert!(core.broken().is_none());
    core.submit(put("k", "1"), 1);
    let (seq, _) = core.next_batch().append.unwrap();
    assert_eq!(seq, Seq(u64::MAX));
    let out = core.on_appended(seq);
    assert!(matches!(out.as_slice(), [(1, Ok(_))]), "the write at the last slot is applied: {out:?}");
    assert!(core.broken().is_some_and(|r| r.contains("no log slot after")), "{:?}", core.broken());
    assert!(matches!(core.submit(put("k", "2"), 2), Some((2, Err(Error::Internal { .. })))));
}

/// A transaction entry at the transaction limits (most writes, most bytes per range, the
/// largest ids) fits one log entry: `LOGGED_TXN_WRITE_OVERHEAD_BYTES` bounds a write's
/// encoding in it.
#[test]
fn a_transaction_entry_at_the_limits_fits_one_log_entry() {
    use ampstore_common::limits::{LOG_ENTRY_BYTES_MAX, TXN_OPS_MAX, TXN_PART_BYTES_MAX};
    let ops = TXN_OPS_MAX;
    let per_write = TXN_PART_BYTES_MAX / ops;
    let writes: Vec<LoggedWrite> = (0..ops)
        .map(|i| {
            let key = format!("{i:0>8}");
            LoggedWrite::new(
                LoggedOp::Put { key: Key::from(key.as_str()), value: vec![1; per_write - key.len()] },
                None,
            )
        })
        .collect();
    let payload = batch::TxnPayload { txn_id: WriteId::new(u64::MAX, u64::MAX), writes };
    let bytes = batch::encode_txn(&payload).len();
    assert!(bytes <= LOG_ENTRY_BYTES_MAX, "{bytes} bytes, over {LOG_ENTRY_BYTES_MAX}");
    // And one write of a whole part (one big value).
    let big = vec![LoggedWrite::new(
        LoggedOp::Put { key: Key::from(vec![7u8; 1024]), value: vec![1; TXN_PART_BYTES_MAX - 1024] },
        None,
    )];
    let payload = batch::TxnPayload { txn_id: WriteId::new(u64::MAX, u64::MAX), writes: big };
    assert!(batch::encode_txn(&payload).len() <= LOG_ENTRY_BYTES_MAX);
}

/// The driver's contract with the core is checked in release builds too: a call out of
/// order breaks the range (it stops with the reason) instead of going on, or panicking.
#[test]
fn calls_out_of_order_break_the_range_in_release_builds_too() {
    let mut core = core_for("a", 1);
    core.on_checkpoint(Seq(5), 0);
    assert!(core.broken().is_some_and(|r| r.contains("checkpoint at")), "{:?}", core.broken());

    let mut core = core_for("a", 1);
    core.submit(put("k1", "v1"), 1);
    let plan = SplitPlan { split_key: Key::from("k1"), left: RangeId(7), right: RangeId(8) };
    let _ = core.split_entry(&plan);
    assert!(core.broken().is_some_and(|r| r.contains("split entry with")), "{:?}", core.broken());

    let mut core = core_for("a", 1);
    let outside = SplitPlan { split_key: Key::from(""), left: RangeId(7), right: RangeId(8) };
    let _ = core.split_entry(&outside);
    assert!(core.broken().is_some_and(|r| r.contains("not strictly inside")), "{:?}", core.broken());

    let mut core = core_for("a", 1);
    core.submit(put("k1", "v1"), 1);
    let merge = MergePlan { merged: RangeId(9), left: RangeId(1), right: RangeId(2) };
    let _ = core.merge_entry(&merge);
    assert!(core.broken().is_some_and(|r| r.contains("merge entry with")), "{:?}", core.broken());
}

/// Conditions decided inside a batch see the unconditional writes before them in it (the
/// batch overlay is built only when the first conditional write comes, issue 16): a put,
/// a delete and a delete-range, then conditions on each.
#[test]
fn a_condition_sees_the_unconditional_writes_before_it_in_its_batch() {
    let mut core = core_for("a", 1);
    let mut log = Log::default();
    core.submit(put("gone", "0"), 0);
    drive(&mut core, &mut log);
    core.submit(put("k", "1"), 1);
    core.submit(
        Write { op: LoggedOp::Delete { key: Key::from("gone") }, condition: Condition::None, write_id: None },
        2,
    );
    core.submit(put("r1", "x"), 3);
    core.submit(
        Write {
            op: LoggedOp::DeleteRange { start: Key::from("r"), end: Some(Key::from("s")) },
            condition: Condition::None,
            write_id: None,
        },
        4,
    );
    core.submit(put_if("k", "2", Some(v(2, 0))), 5);
    core.submit(put_if("gone", "again", None), 6);
    core.submit(put_if("r1", "y", None), 7);
    core.submit(put_if("k", "3", Some(v(2, 0))), 8);
    let mut replies = drive(&mut core, &mut log);
    replies.sort_by_key(|(w, _)| *w);
    assert_eq!(replies[4], (5, Ok(Reply::Written { version: v(2, 4) })));
    assert_eq!(replies[5], (6, Ok(Reply::Written { version: v(2, 5) })));
    assert_eq!(replies[6], (7, Ok(Reply::Written { version: v(2, 6) })));
    assert!(matches!(&replies[7], (8, Err(Error::Conflict { .. }))), "{:?}", replies[7]);
    assert_eq!(core.get(&Key::from("k")).unwrap().unwrap().value, b"2");
}

/// A write refused because the queue is full leaves its id free: its retry is queued and
/// written, not made to follow a write that never happened.
#[test]
fn a_write_refused_for_a_full_queue_can_be_retried() {
    let mut core = core_for("a", 1);
    let mut log = Log::default();
    for i in 0..RANGE_PENDING_WRITES_MAX as u32 {
        assert!(core.submit(put(&format!("k{i}"), "v"), i).is_none());
    }
    let id = WriteKey::Write(WriteId::new(3, 9));
    let w = Write { write_id: Some(id), ..put("late", "1") };
    let refused = core.submit(w.clone(), 1_000_000);
    assert!(matches!(refused, Some((_, Err(Error::Unavailable { .. })))), "{refused:?}");
    while !drive(&mut core, &mut log).is_empty() {}
    assert!(core.submit(w, 1_000_001).is_none(), "queued, not following or answered");
    let replies = drive(&mut core, &mut log);
    assert_eq!(replies.len(), 1);
    assert!(matches!(replies[0], (1_000_001, Ok(Reply::Written { .. }))));
}

// ----- client floors (`WriteId::floor`) -----

fn put_id(key: &str, value: &str, client: u64, n: u64, floor: u64) -> Write {
    Write { write_id: Some(WriteKey::Write(WriteId { client, n, floor })), ..put(key, value) }
}

/// A client's floor forgets its older records at once (not after the retention), and a
/// delayed duplicate of a forgotten write is refused instead of being applied a second time:
/// here it would have overwritten a later value of its key.
#[test]
fn a_floor_forgets_older_records_and_refuses_their_duplicates() {
    let mut core = core_for("a", 1);
    core.set_clock(1_000);
    let mut log = Log::default();
    for n in 1..=100 {
        core.submit(put_id(&format!("k{n}"), "old", 7, n, 1), n as u32);
    }
    // Another client's records stay whatever client 7 promises.
    core.submit(put_id("other", "x", 8, 1, 0), 0);
    drive(&mut core, &mut log);
    assert_eq!(core.write_ids().len(), 101);
    // Client 7 has finished with everything below 101.
    core.submit(put_id("k1", "new", 7, 101, 101), 101);
    drive(&mut core, &mut log);
    assert_eq!(core.write_ids().len(), 2, "7/101 and 8/1 are remembered; 7/1..=100 forgotten");
    // The duplicate of 7/1 comes late: refused, and k1 keeps the later value.
    let late = core.submit(put_id("k1", "old", 7, 1, 1), 500);
    assert!(matches!(late, Some((500, Err(Error::Invalid { .. })))), "{late:?}");
    assert!(drive(&mut core, &mut log).is_empty(), "nothing was queued");
    assert_eq!(core.get(&Key::from("k1")).unwrap().unwrap().value, b"new".to_vec());
    // The remembered ones still answer their retries.
    assert_eq!(
        core.submit(put_id("k1", "new", 7, 101, 101), 501),
        Some((501, Ok(Reply::Written { version: v(2, 0) })))
    );
    assert!(core.submit(put_id("other", "x", 8, 1, 0), 502).unwrap().1.is_ok());
}

#[test]
fn a_floor_above_the_writes_own_number_is_refused() {
    let mut core = core_for("a", 1);
    let refused = core.submit(put_id("k", "v", 7, 5, 6), 1);
    assert!(matches!(refused, Some((1, Err(Error::Invalid { .. })))), "{refused:?}");
    assert_eq!(core.write_ids().floor_of(7), 0, "a refused write moves no floor");
    assert!(core.submit(put_id("k", "v", 7, 5, 5), 2).is_none(), "a floor equal to n is fine");
}

/// The floor travels in the log (the new owner replays it) and in the snapshot (with the
/// records it left), so a duplicate is refused after a move either way.
#[test]
fn a_floor_survives_replay_and_a_snapshot() {
    let mut a = core_for("a", 1);
    a.set_clock(1_000);
    let mut log = Log::default();
    a.submit(put_id("k", "old", 7, 1, 0), 1);
    drive(&mut a, &mut log);
    a.submit(put_id("k", "new", 7, 2, 2), 2);
    drive(&mut a, &mut log);
    // Replay on another owner: 7/1 is forgotten and refused.
    let mut b = core_for("b", 1);
    b.set_clock(1_000);
    b.replay(Seq(1), &log.0[&1]).unwrap();
    b.replay(Seq(2), &log.0[&2]).unwrap();
    assert_eq!(b.write_ids().len(), 1);
    assert!(matches!(b.submit(put_id("k", "old", 7, 1, 0), 3), Some((3, Err(Error::Invalid { .. })))));
    // From a snapshot without the log.
    let (seq, data, write_ids, _) = a.snapshot_view();
    let (records, floors) = (write_ids.records(), write_ids.floors());
    assert_eq!(floors.len(), 1);
    let mut c = RangeCore::<u32>::new(RangeId(1), KeyRange::full(), node("c"), Epoch(1), data, seq, 64 * 1024)
        .with_write_ids(super::super::write_ids::WriteIdTable::from_records(records, floors, 2_000));
    c.set_clock(2_000);
    assert!(matches!(c.submit(put_id("k", "old", 7, 1, 0), 4), Some((4, Err(Error::Invalid { .. })))));
    assert_eq!(c.get(&Key::from("k")).unwrap().unwrap().value, b"new".to_vec());
}

// ----- TTL and counters -----

fn put_ttl(key: &str, value: &str, ttl_ms: u64) -> Write {
    Write {
        op: LoggedOp::PutExpiring { key: Key::from(key), value: value.as_bytes().to_vec(), expires_at_ms: 0 },
        condition: Condition::ExpiresIn(ttl_ms),
        write_id: None,
    }
}

fn expire(key: &str, ttl_ms: u64, when: ExpireWhen) -> Write {
    Write {
        op: LoggedOp::SetExpiry { key: Key::from(key), expires_at_ms: None },
        condition: Condition::Expire { ttl_ms, when },
        write_id: None,
    }
}

fn persist(key: &str) -> Write {
    Write {
        op: LoggedOp::SetExpiry { key: Key::from(key), expires_at_ms: None },
        condition: Condition::Persist,
        write_id: None,
    }
}

fn incr(key: &str, by: i64) -> Write {
    Write {
        op: LoggedOp::Counter { key: Key::from(key), value: 0, expires_at_ms: None },
        condition: Condition::Add(by),
        write_id: None,
    }
}

/// Submits `w` alone and drives it; its one answer.
fn one(core: &mut Core, log: &mut Log, w: Write) -> Result<Reply, Error> {
    assert!(core.submit(w, 1).is_none());
    let out = drive(core, log);
    assert_eq!(out.len(), 1, "{out:?}");
    out.into_iter().next().unwrap().1
}

fn ttl_of(core: &Core, key: &str) -> KeyTtl {
    super::super::memtable::ttl(&core.data.read(), &KeyRange::full(), &Key::from(key), core.now_unix_ms).unwrap()
}

#[test]
fn a_ttl_is_stamped_by_the_owner_and_the_key_vanishes_at_it() {
    let (mut core, mut log) = (core_for("a", 1), Log::default());
    core.set_clock(1_000);
    one(&mut core, &mut log, put_ttl("s", "x", 3_000)).unwrap();
    assert_eq!(ttl_of(&core, "s"), KeyTtl::ExpiresInMs(3_000));
    // The log holds the absolute expiry the owner stamped.
    let payload = batch::decode(&log.0[&1].payload).unwrap();
    assert!(matches!(payload.writes[0].op, LoggedOp::PutExpiring { expires_at_ms: 4_000, .. }));
    core.set_clock(3_999);
    assert!(core.get(&Key::from("s")).unwrap().is_some());
    core.set_clock(4_000);
    assert_eq!(core.get(&Key::from("s")).unwrap(), None, "absent to reads at its expiry");
    assert_eq!(ttl_of(&core, "s"), KeyTtl::Absent);
    // A conditional put sees it absent; a plain put clears the expiry.
    one(&mut core, &mut log, put_if("s", "y", None)).unwrap();
    assert_eq!(ttl_of(&core, "s"), KeyTtl::Persistent);
    // Replay from the log gives the same data, expiries included.
    let mut again = core_for("a", 1);
    for (seq, entry) in &log.0 {
        again.replay(Seq(*seq), entry).unwrap();
    }
    assert_eq!(*again.data.read(), *core.data.read());
}

#[test]
fn expire_and_persist_follow_redis_conditions() {
    let (mut core, mut log) = (core_for("a", 1), Log::default());
    core.set_clock(10_000);
    let changed = |r: Result<Reply, Error>| match r {
        Ok(Reply::ExpiryChanged { changed }) => changed,
        other => panic!("{other:?}"),
    };
    assert!(!changed(one(&mut core, &mut log, expire("none", 5_000, ExpireWhen::Always))), "no such key");
    assert!(!changed(one(&mut core, &mut log, persist("none"))));
    one(&mut core, &mut log, put("k", "v")).unwrap();
    let written = core.data.read().get(b"k").unwrap().version();
    assert!(!changed(one(&mut core, &mut log, persist("k"))), "no expiry to remove");
    assert!(!changed(one(&mut core, &mut log, expire("k", 5_000, ExpireWhen::Xx))), "XX: no expiry yet");
    assert!(!changed(one(&mut core, &mut log, expire("k", 5_000, ExpireWhen::Gt))), "GT: none is infinitely late");
    assert!(changed(one(&mut core, &mut log, expire("k", 5_000, ExpireWhen::Nx))));
    assert_eq!(ttl_of(&core, "k"), KeyTtl::ExpiresInMs(5_000));
    let entry = core.data.read().get(b"k").cloned().unwrap();
    assert_eq!(entry.value(), b"v", "the value is kept");
    assert!(entry.version() > written, "an expiry change is a write");
    assert!(!changed(one(&mut core, &mut log, expire("k", 9_000, ExpireWhen::Nx))), "NX: has one");
    assert!(!changed(one(&mut core, &mut log, expire("k", 4_000, ExpireWhen::Gt))));
    assert!(changed(one(&mut core, &mut log, expire("k", 9_000, ExpireWhen::Gt))));
    assert!(!changed(one(&mut core, &mut log, expire("k", 9_500, ExpireWhen::Lt))));
    assert!(changed(one(&mut core, &mut log, expire("k", 2_000, ExpireWhen::Lt))));
    assert!(changed(one(&mut core, &mut log, expire("k", 3_000, ExpireWhen::Xx))));
    assert_eq!(ttl_of(&core, "k"), KeyTtl::ExpiresInMs(3_000));
    assert!(changed(one(&mut core, &mut log, persist("k"))));
    assert_eq!(ttl_of(&core, "k"), KeyTtl::Persistent);
    // An expired key is absent to expire as well.
    one(&mut core, &mut log, put_ttl("gone", "x", 10)).unwrap();
    core.set_clock(10_010);
    assert!(!changed(one(&mut core, &mut log, expire("gone", 5_000, ExpireWhen::Always))));
}

#[test]
fn counters_add_keep_the_expiry_and_refuse_what_is_not_an_integer() {
    let (mut core, mut log) = (core_for("a", 1), Log::default());
    core.set_clock(1_000);
    let counted = |r: Result<Reply, Error>| match r {
        Ok(Reply::Counted { value, .. }) => value,
        other => panic!("{other:?}"),
    };
    assert_eq!(counted(one(&mut core, &mut log, incr("c", 5))), 5, "absent counts as 0");
    assert_eq!(counted(one(&mut core, &mut log, incr("c", -7))), -2);
    assert_eq!(core.get(&Key::from("c")).unwrap().unwrap().value, b"-2");
    // Several increments of one key in one batch: each sees the one before.
    for i in 0..5 {
        assert!(core.submit(incr("c", 1), i).is_none());
    }
    let values: Vec<i64> = drive(&mut core, &mut log).into_iter().map(|(_, r)| counted(r)).collect();
    assert_eq!(values, [-1, 0, 1, 2, 3]);
    // The expiry stays.
    one(&mut core, &mut log, expire("c", 60_000, ExpireWhen::Always)).unwrap();
    assert_eq!(counted(one(&mut core, &mut log, incr("c", 10))), 13);
    assert_eq!(ttl_of(&core, "c"), KeyTtl::ExpiresInMs(60_000));
    // Overflow and a non-integer value: an error, nothing changed, nothing logged.
    one(&mut core, &mut log, put("max", &i64::MAX.to_string())).unwrap();
    one(&mut core, &mut log, put("text", "12a")).unwrap();
    let logged = log.0.len();
    let err = one(&mut core, &mut log, incr("max", 1)).unwrap_err();
    assert!(err.to_string().contains(ampstore_common::counter::OVERFLOW), "{err}");
    let err = one(&mut core, &mut log, incr("text", 1)).unwrap_err();
    assert!(err.to_string().contains(ampstore_common::counter::NOT_AN_INTEGER), "{err}");
    assert_eq!(log.0.len(), logged, "nothing logged");
    assert_eq!(core.get(&Key::from("max")).unwrap().unwrap().value, i64::MAX.to_string().as_bytes());
    assert_eq!(counted(one(&mut core, &mut log, incr("max", -1))), i64::MAX - 1);
    // Replay gives the same counters.
    let mut again = core_for("a", 1);
    for (seq, entry) in &log.0 {
        again.replay(Seq(*seq), entry).unwrap();
    }
    assert_eq!(*again.data.read(), *core.data.read());
}

#[test]
fn a_retried_increment_is_answered_its_first_value() {
    let (mut core, mut log) = (core_for("a", 1), Log::default());
    let id = WriteId::new(9, 1);
    let w = Write { write_id: Some(WriteKey::Write(id)), ..incr("c", 3) };
    let first = one(&mut core, &mut log, w.clone());
    one(&mut core, &mut log, incr("c", 100)).unwrap();
    // The retry is answered at once from the table, with the first result.
    let again = core.submit(w.clone(), 2).expect("answered from the write-id table").1;
    assert_eq!(again, first);
    assert!(matches!(first, Ok(Reply::Counted { value: 3, .. })));
    // Also after a replay (failover): the table is rebuilt from the log.
    let mut replayed = core_for("a", 1);
    for (seq, entry) in &log.0 {
        replayed.replay(Seq(*seq), entry).unwrap();
    }
    assert_eq!(replayed.submit(w, 3).expect("answered").1, first);
}

#[test]
fn the_sweep_deletes_expired_keys_through_the_log_and_spares_rewritten_ones() {
    let (mut core, mut log) = (core_for("a", 1), Log::default());
    core.set_clock(1_000);
    for i in 0..20 {
        assert!(core.submit(put_ttl(&format!("t{i:02}"), "x", 500), i).is_none());
    }
    assert!(core.submit(put("keep", "x"), 99).is_none());
    drive(&mut core, &mut log);
    assert!(!core.sweep_expired(), "nothing expired yet");
    core.set_clock(1_500);
    assert!(core.sweep_expired());
    assert_eq!(core.expired_due(), 20);
    // A put of one of them comes before the sweep's batch: that key is newer, kept.
    assert!(core.submit(put("t03", "new"), 100).is_none());
    let replies = drive(&mut core, &mut log);
    assert_eq!(replies.len(), 1, "the sweep's deletes have no waiter");
    assert_eq!(core.expired_due(), 0);
    let keys: Vec<Vec<u8>> = core.data.read().iter().map(|e| e.key().to_vec()).collect();
    assert_eq!(keys, [b"keep".to_vec(), b"t03".to_vec()]);
    assert_eq!(core.data.read().expiring(), 0);
    assert_eq!(core.data_bytes(), core.data.read().iter().map(Entry::data_bytes).sum::<u64>());
    // The deletes are in the log: a replay ends with the same data.
    let mut again = core_for("a", 1);
    for (seq, entry) in &log.0 {
        again.replay(Seq(*seq), entry).unwrap();
    }
    assert_eq!(*again.data.read(), *core.data.read());
    assert!(!core.sweep_expired());
}
