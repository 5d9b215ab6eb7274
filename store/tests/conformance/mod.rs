//! The storage conformance suite: every function here runs against every backend
//! (see `store_conformance.rs`, which instantiates it per backend).

use ampstore_common::limits::{
    APPEND_ATOMIC_BYTES_MAX, APPEND_ATOMIC_SLOTS_MAX, BLOB_NAME_BYTES_MAX, LOG_ENTRY_BYTES_MAX,
    META_SORT_KEY_BYTES_MAX, META_TRANSACT_OPS_MAX, META_VALUE_BYTES_MAX,
};
use ampstore_common::{Epoch, NodeId, RangeId, Seq};
use ampstore_store::{AppendSlot, Backend, EntryKind, Expect, LogEntry, MetaOp, StoreError};
use bytes::Bytes;
use std::collections::BTreeMap;

pub fn entry(kind: EntryKind, payload: impl Into<Vec<u8>>) -> LogEntry {
    LogEntry { kind, writer: NodeId::new("node-a").unwrap(), epoch: Epoch(3), payload: Bytes::from(payload.into()) }
}

fn batch(payload: &str) -> LogEntry {
    entry(EntryKind::Batch, payload.as_bytes().to_vec())
}

/// A range id no other test uses (backends may be shared between tests).
fn fresh_range() -> RangeId {
    RangeId(rand::random::<u64>() >> 2)
}

fn fresh_partition() -> String {
    format!("p{:016x}", rand::random::<u64>())
}

pub async fn append_empty_slot_then_taken_slot(b: &Backend) {
    let r = fresh_range();
    b.log.append(r, Seq(1), &batch("one")).await.unwrap();
    let err = b.log.append(r, Seq(1), &batch("other")).await.unwrap_err();
    assert_eq!(err, StoreError::SlotTaken { range: r, seq: Seq(1) });
    // The loser changed nothing.
    let got = b.log.read(r, Seq(1), 10).await.unwrap();
    assert_eq!(got, vec![(Seq(1), batch("one"))]);
    // Every kind round-trips with writer and epoch.
    let kinds = [EntryKind::Fence, EntryKind::Split, EntryKind::Txn, EntryKind::Abort, EntryKind::Merge];
    for (i, kind) in kinds.into_iter().enumerate() {
        let e = LogEntry {
            kind,
            writer: NodeId::new(format!("w{i}")).unwrap(),
            epoch: Epoch(i as u64 * 7),
            payload: Bytes::new(),
        };
        b.log.append(r, Seq(2 + i as u64), &e).await.unwrap();
        assert_eq!(b.log.read(r, Seq(2 + i as u64), 1).await.unwrap(), vec![(Seq(2 + i as u64), e)]);
    }
    // Slot 0 does not exist.
    assert!(matches!(b.log.append(r, Seq(0), &batch("x")).await, Err(StoreError::Invalid(_))));
}

pub async fn head_empty_after_appends_after_truncation(b: &Backend) {
    let r = fresh_range();
    assert_eq!(b.log.head(r).await.unwrap(), None);
    for s in 1..=5 {
        b.log.append(r, Seq(s), &batch(&format!("e{s}"))).await.unwrap();
        assert_eq!(b.log.head(r).await.unwrap(), Some(Seq(s)));
    }
    // Another range's log is separate.
    let other = fresh_range();
    assert_eq!(b.log.head(other).await.unwrap(), None);

    b.log.truncate(r, Seq(4)).await.unwrap();
    assert_eq!(b.log.head(r).await.unwrap(), Some(Seq(5)));
    let left: Vec<u64> = b.log.read(r, Seq(1), 100).await.unwrap().iter().map(|(s, _)| s.0).collect();
    assert_eq!(left, vec![4, 5]);
    // Truncating up to the head keeps the head entry.
    b.log.truncate(r, Seq(5)).await.unwrap();
    assert_eq!(b.log.head(r).await.unwrap(), Some(Seq(5)));
    assert_eq!(b.log.read(r, Seq(1), 100).await.unwrap(), vec![(Seq(5), batch("e5"))]);
    // Beyond the head is refused: the head must stay.
    assert!(matches!(b.log.truncate(r, Seq(6)).await, Err(StoreError::Invalid(_))));
    // Truncated slots are not reusable in practice because appends go after the head;
    // the slot after the head is free.
    b.log.append(r, Seq(6), &batch("e6")).await.unwrap();
    assert_eq!(b.log.head(r).await.unwrap(), Some(Seq(6)));
}

pub async fn read_from_a_seq(b: &Backend) {
    let r = fresh_range();
    for s in 1..=20 {
        b.log.append(r, Seq(s), &batch(&format!("e{s}"))).await.unwrap();
    }
    let got = b.log.read(r, Seq(8), 5).await.unwrap();
    let seqs: Vec<u64> = got.iter().map(|(s, _)| s.0).collect();
    assert_eq!(seqs, vec![8, 9, 10, 11, 12]);
    assert_eq!(got[0].1, batch("e8"));
    assert_eq!(b.log.read(r, Seq(20), 5).await.unwrap().len(), 1);
    assert!(b.log.read(r, Seq(21), 5).await.unwrap().is_empty());
    // Paging through the whole log with small pages sees every entry once, in order.
    let mut next = Seq(1);
    let mut all = Vec::new();
    loop {
        let page = b.log.read(r, next, 3).await.unwrap();
        let Some((last, _)) = page.last() else { break };
        next = last.next();
        all.extend(page.into_iter().map(|(s, _)| s.0));
    }
    assert_eq!(all, (1..=20).collect::<Vec<_>>());
}

pub async fn large_entries_read_back_intact(b: &Backend) {
    let r = fresh_range();
    let big: Vec<u8> = (0..LOG_ENTRY_BYTES_MAX).map(|i| (i * 7 % 251) as u8).collect();
    b.log.append(r, Seq(1), &entry(EntryKind::Batch, big.clone())).await.unwrap();
    let got = b.log.read(r, Seq(1), 1).await.unwrap();
    assert_eq!(got[0].1.payload.len(), LOG_ENTRY_BYTES_MAX);
    assert_eq!(&got[0].1.payload[..], &big[..]);
}

pub async fn append_atomic_all_or_nothing(b: &Backend) {
    let (r1, r2, r3) = (fresh_range(), fresh_range(), fresh_range());
    b.log.append(r2, Seq(1), &batch("already")).await.unwrap();
    let slot = |range, seq, p: &str| AppendSlot { range, seq: Seq(seq), entry: batch(p) };
    // One taken slot among three: nothing is written.
    let err = b.log.append_atomic(&[slot(r1, 1, "t1"), slot(r2, 1, "t2"), slot(r3, 1, "t3")]).await.unwrap_err();
    assert_eq!(err, StoreError::SlotsTaken { slots: vec![(r2, Seq(1))] });
    assert_eq!(b.log.head(r1).await.unwrap(), None);
    assert_eq!(b.log.head(r3).await.unwrap(), None);
    assert_eq!(b.log.read(r2, Seq(1), 5).await.unwrap(), vec![(Seq(1), batch("already"))]);
    // All free: everything is written.
    b.log.append_atomic(&[slot(r1, 1, "t1"), slot(r2, 2, "t2"), slot(r3, 1, "t3")]).await.unwrap();
    assert_eq!(b.log.read(r1, Seq(1), 5).await.unwrap(), vec![(Seq(1), batch("t1"))]);
    assert_eq!(b.log.read(r2, Seq(2), 5).await.unwrap(), vec![(Seq(2), batch("t2"))]);
    assert_eq!(b.log.head(r3).await.unwrap(), Some(Seq(1)));
    // Several slots of one range in one step.
    b.log.append_atomic(&[slot(r1, 2, "a"), slot(r1, 3, "b")]).await.unwrap();
    assert_eq!(b.log.head(r1).await.unwrap(), Some(Seq(3)));
    // The same slot twice in one call is refused.
    let dup = b.log.append_atomic(&[slot(r1, 4, "a"), slot(r1, 4, "b")]).await.unwrap_err();
    assert!(matches!(dup, StoreError::Invalid(_)), "{dup:?}");
    assert_eq!(b.log.head(r1).await.unwrap(), Some(Seq(3)));
    // Exactly the slot limit is allowed.
    let r4 = fresh_range();
    let many: Vec<AppendSlot> = (1..=APPEND_ATOMIC_SLOTS_MAX as u64).map(|s| slot(r4, s, "m")).collect();
    b.log.append_atomic(&many).await.unwrap();
    assert_eq!(b.log.head(r4).await.unwrap(), Some(Seq(APPEND_ATOMIC_SLOTS_MAX as u64)));
}

pub async fn concurrent_appenders_win_each_slot_once(b: &Backend) {
    const APPENDERS: usize = 8;
    const SLOTS: u64 = 25;
    let r = fresh_range();
    let log = b.log.clone();
    let mut tasks = Vec::new();
    for w in 0..APPENDERS {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut won = Vec::new();
            for s in 1..=SLOTS {
                match log.append(r, Seq(s), &batch(&format!("w{w}-s{s}"))).await {
                    Ok(()) => won.push(s),
                    Err(StoreError::SlotTaken { range, seq }) => {
                        assert_eq!((range, seq), (r, Seq(s)))
                    }
                    Err(e) => panic!("appender {w} slot {s}: {e}"),
                }
            }
            (w, won)
        }));
    }
    let mut winner: BTreeMap<u64, usize> = BTreeMap::new();
    for t in tasks {
        let (w, won) = t.await.unwrap();
        for s in won {
            assert!(winner.insert(s, w).is_none(), "slot {s} won twice");
        }
    }
    assert_eq!(winner.keys().copied().collect::<Vec<_>>(), (1..=SLOTS).collect::<Vec<_>>());
    // What is stored is the winner's entry.
    for (seq, e) in b.log.read(r, Seq(1), 100).await.unwrap() {
        assert_eq!(e, batch(&format!("w{}-s{}", winner[&seq.0], seq.0)));
    }
}

pub async fn meta_conditional_updates(b: &Backend) {
    let pk = fresh_partition();
    let m = &b.meta;
    assert_eq!(m.get(&pk, b"k").await.unwrap(), None);
    // Absent: create once.
    assert_eq!(m.put(&pk, b"k", b"v1", Expect::Absent).await.unwrap(), 1);
    let err = m.put(&pk, b"k", b"v1b", Expect::Absent).await.unwrap_err();
    assert!(matches!(err, StoreError::ConditionFailed { op_index: None, .. }), "{err:?}");
    // Version CAS.
    assert_eq!(m.put(&pk, b"k", b"v2", Expect::Version(1)).await.unwrap(), 2);
    assert!(matches!(m.put(&pk, b"k", b"x", Expect::Version(1)).await, Err(StoreError::ConditionFailed { .. })));
    assert!(matches!(m.put(&pk, b"nokey", b"x", Expect::Version(1)).await, Err(StoreError::ConditionFailed { .. })));
    // Expected-value CAS.
    assert_eq!(m.put(&pk, b"k", b"v3", Expect::Value(b"v2".to_vec())).await.unwrap(), 3);
    assert!(matches!(
        m.put(&pk, b"k", b"x", Expect::Value(b"v2".to_vec())).await,
        Err(StoreError::ConditionFailed { .. })
    ));
    // Any.
    assert_eq!(m.put(&pk, b"k", b"v4", Expect::Any).await.unwrap(), 4);
    let item = m.get(&pk, b"k").await.unwrap().unwrap();
    assert_eq!((item.version, item.value.as_slice()), (4, &b"v4"[..]));
    // Conditional delete.
    assert!(matches!(m.delete(&pk, b"k", Expect::Version(3)).await, Err(StoreError::ConditionFailed { .. })));
    assert!(m.get(&pk, b"k").await.unwrap().is_some());
    m.delete(&pk, b"k", Expect::Version(4)).await.unwrap();
    assert_eq!(m.get(&pk, b"k").await.unwrap(), None);
    m.delete(&pk, b"k", Expect::Any).await.unwrap();
    assert!(matches!(m.delete(&pk, b"k", Expect::Version(4)).await, Err(StoreError::ConditionFailed { .. })));
    // A recreated item starts again at version 1; binary and empty sort keys work.
    assert_eq!(m.put(&pk, b"k", b"again", Expect::Absent).await.unwrap(), 1);
    assert_eq!(m.put(&pk, b"", b"empty", Expect::Absent).await.unwrap(), 1);
    assert_eq!(m.put(&pk, b"\x00\xff", b"bin", Expect::Absent).await.unwrap(), 1);
    assert_eq!(m.get(&pk, b"").await.unwrap().unwrap().value, b"empty");
    assert_eq!(m.get(&pk, b"\x00\xff").await.unwrap().unwrap().value, b"bin");
    assert_eq!(m.put(&pk, b"e", b"", Expect::Absent).await.unwrap(), 1);
    assert_eq!(m.get(&pk, b"e").await.unwrap().unwrap().value, b"");
}

pub async fn meta_concurrent_cas_has_one_winner(b: &Backend) {
    let pk = fresh_partition();
    b.meta.put(&pk, b"lease", b"start", Expect::Absent).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let meta = b.meta.clone();
        let pk = pk.clone();
        tasks.push(tokio::spawn(async move {
            meta.put(&pk, b"lease", format!("holder-{i}").as_bytes(), Expect::Version(1)).await
        }));
    }
    let mut wins = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(v) => {
                assert_eq!(v, 2);
                wins += 1;
            }
            Err(StoreError::ConditionFailed { .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(wins, 1);
}

pub async fn meta_transactions(b: &Backend) {
    let pk = fresh_partition();
    let m = &b.meta;
    m.put(&pk, b"a", b"a1", Expect::Absent).await.unwrap();
    m.put(&pk, b"gone", b"g", Expect::Absent).await.unwrap();
    let put = |sk: &[u8], v: &[u8], expect| MetaOp::Put { pk: pk.clone(), sk: sk.to_vec(), value: v.to_vec(), expect };
    // Step 2 fails: nothing of steps 0, 1, 3 happens.
    let ops = vec![
        put(b"a", b"a2", Expect::Version(1)),
        put(b"b", b"b1", Expect::Absent),
        MetaOp::Check { pk: pk.clone(), sk: b"c".to_vec(), expect: Expect::Version(7) },
        MetaOp::Delete { pk: pk.clone(), sk: b"gone".to_vec(), expect: Expect::Any },
    ];
    let err = m.transact(&ops).await.unwrap_err();
    assert!(matches!(err, StoreError::ConditionFailed { op_index: Some(2), .. }), "{err:?}");
    assert_eq!(m.get(&pk, b"a").await.unwrap().unwrap().version, 1);
    assert_eq!(m.get(&pk, b"b").await.unwrap(), None);
    assert!(m.get(&pk, b"gone").await.unwrap().is_some());
    // With a holding check, all of it happens.
    let other = fresh_partition();
    m.put(&other, b"term", b"5", Expect::Absent).await.unwrap();
    let ops = vec![
        put(b"a", b"a2", Expect::Version(1)),
        put(b"b", b"b1", Expect::Absent),
        MetaOp::Check { pk: other.clone(), sk: b"term".to_vec(), expect: Expect::Value(b"5".to_vec()) },
        MetaOp::Delete { pk: pk.clone(), sk: b"gone".to_vec(), expect: Expect::Version(1) },
    ];
    m.transact(&ops).await.unwrap();
    let a = m.get(&pk, b"a").await.unwrap().unwrap();
    assert_eq!((a.version, a.value.as_slice()), (2, &b"a2"[..]));
    assert_eq!(m.get(&pk, b"b").await.unwrap().unwrap().version, 1);
    assert_eq!(m.get(&pk, b"gone").await.unwrap(), None);
    assert_eq!(m.get(&other, b"term").await.unwrap().unwrap().version, 1, "a check writes nothing");
    // The same item twice is refused before anything happens.
    let err = m.transact(&[put(b"z", b"1", Expect::Any), put(b"z", b"2", Expect::Any)]).await.unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
    assert_eq!(m.get(&pk, b"z").await.unwrap(), None);
}

pub async fn meta_ordered_query(b: &Backend) {
    let pk = fresh_partition();
    let keys: Vec<&[u8]> = vec![b"b", b"", b"a\xff", b"a", b"\xff", b"a\x00", b"ab", b"B"];
    for k in &keys {
        b.meta.put(&pk, k, k, Expect::Absent).await.unwrap();
    }
    b.meta.put(&fresh_partition(), b"a", b"other partition", Expect::Absent).await.unwrap();
    let mut sorted = keys.clone();
    sorted.sort();
    let all: Vec<Vec<u8>> = b.meta.query(&pk, b"", 100).await.unwrap().into_iter().map(|(k, _)| k).collect();
    assert_eq!(all, sorted.iter().map(|k| k.to_vec()).collect::<Vec<_>>());
    let from_a: Vec<Vec<u8>> = b.meta.query(&pk, b"a", 3).await.unwrap().into_iter().map(|(k, _)| k).collect();
    assert_eq!(from_a, vec![b"a".to_vec(), b"a\x00".to_vec(), b"ab".to_vec()]);
    let items = b.meta.query(&pk, b"ab", 100).await.unwrap();
    assert_eq!(items[0].0, b"ab");
    assert_eq!(items[0].1.value, b"ab");
    assert_eq!(items[0].1.version, 1);
    assert!(b.meta.query(&fresh_partition(), b"", 10).await.unwrap().is_empty());
}

pub async fn blobs(b: &Backend) {
    let prefix = format!("t{:016x}", rand::random::<u64>());
    let name = |s: &str| format!("{prefix}/{s}");
    let data = Bytes::from((0..100_000u32).map(|i| (i % 253) as u8).collect::<Vec<u8>>());
    b.blobs.put_if_absent(&name("ranges/r1/s1"), data.clone()).await.unwrap();
    let err = b.blobs.put_if_absent(&name("ranges/r1/s1"), Bytes::from_static(b"other")).await.unwrap_err();
    assert_eq!(err, StoreError::AlreadyExists { name: name("ranges/r1/s1") });
    assert_eq!(b.blobs.get(&name("ranges/r1/s1")).await.unwrap(), Some(data.clone()));
    assert_eq!(b.blobs.get(&name("missing")).await.unwrap(), None);
    b.blobs.put_if_absent(&name("ranges/r1/s2"), Bytes::new()).await.unwrap();
    assert_eq!(b.blobs.get(&name("ranges/r1/s2")).await.unwrap(), Some(Bytes::new()));
    b.blobs.put_if_absent(&name("ranges/r2/s1"), Bytes::from_static(b"x")).await.unwrap();
    b.blobs.put_if_absent(&name("ranges/r10/s1"), Bytes::from_static(b"y")).await.unwrap();

    let list = b.blobs.list(&name("ranges/r1/"), None).await.unwrap();
    assert_eq!(list, vec![name("ranges/r1/s1"), name("ranges/r1/s2")]);
    let list = b.blobs.list(&name("ranges/r1"), None).await.unwrap();
    assert_eq!(list, vec![name("ranges/r1/s1"), name("ranges/r1/s2"), name("ranges/r10/s1")]);
    let list = b.blobs.list(&name(""), Some(&name("ranges/r1/s2"))).await.unwrap();
    assert_eq!(list, vec![name("ranges/r10/s1"), name("ranges/r2/s1")]);

    b.blobs.delete(&name("ranges/r1/s1")).await.unwrap();
    assert_eq!(b.blobs.get(&name("ranges/r1/s1")).await.unwrap(), None);
    b.blobs.delete(&name("ranges/r1/s1")).await.unwrap();
    assert_eq!(b.blobs.list(&name("ranges/r1/"), None).await.unwrap(), vec![name("ranges/r1/s2")]);
    // After a delete the name is free again.
    b.blobs.put_if_absent(&name("ranges/r1/s1"), Bytes::from_static(b"new")).await.unwrap();
    // Unsafe names are refused.
    for bad in ["../escape", "/abs", "a//b", "a b"] {
        assert!(matches!(b.blobs.put_if_absent(bad, Bytes::new()).await, Err(StoreError::Invalid(_))), "{bad}");
    }
}

pub async fn concurrent_blob_puts_have_one_winner(b: &Backend) {
    let name = format!("t{:016x}/race", rand::random::<u64>());
    let mut tasks = Vec::new();
    for i in 0..8u8 {
        let blobs = b.blobs.clone();
        let name = name.clone();
        tasks.push(tokio::spawn(async move { (i, blobs.put_if_absent(&name, Bytes::from(vec![i; 1000])).await) }));
    }
    let mut winner = None;
    for t in tasks {
        match t.await.unwrap() {
            (i, Ok(())) => assert!(winner.replace(i).is_none(), "two winners"),
            (_, Err(StoreError::AlreadyExists { .. })) => {}
            (_, Err(e)) => panic!("{e}"),
        }
    }
    let w = winner.expect("one winner");
    assert_eq!(b.blobs.get(&name).await.unwrap().unwrap(), Bytes::from(vec![w; 1000]));
}

fn assert_too_large(r: Result<impl std::fmt::Debug, StoreError>, what: &str) {
    match r {
        Err(StoreError::TooLarge { what: w, size, max }) => {
            assert!(w.contains(what), "expected {what}, got {w}");
            assert!(size > max);
        }
        other => panic!("expected TooLarge({what}), got {other:?}"),
    }
}

/// Over-limit inputs are refused with `TooLarge` (checked before the backend is called;
/// `oversize_refused_without_backend` proves that part for the AWS backend), and nothing
/// is written; inputs exactly at the limits are accepted.
pub async fn oversize_refused(b: &Backend) {
    let r = fresh_range();
    assert_too_large(
        b.log.append(r, Seq(1), &entry(EntryKind::Batch, vec![0; LOG_ENTRY_BYTES_MAX + 1])).await,
        "log entry",
    );
    assert_eq!(b.log.head(r).await.unwrap(), None);
    let slots: Vec<AppendSlot> = (1..=APPEND_ATOMIC_SLOTS_MAX as u64 + 1)
        .map(|s| AppendSlot { range: r, seq: Seq(s), entry: batch("x") })
        .collect();
    assert_too_large(b.log.append_atomic(&slots).await, "slot count");
    // 12 entries of 350 KiB = 4.3 MB: over the transaction byte limit.
    let per = LOG_ENTRY_BYTES_MAX;
    let n = APPEND_ATOMIC_BYTES_MAX / per + 1;
    let slots: Vec<AppendSlot> = (1..=n as u64)
        .map(|s| AppendSlot { range: r, seq: Seq(s), entry: entry(EntryKind::Batch, vec![1; per]) })
        .collect();
    assert_too_large(b.log.append_atomic(&slots).await, "payload total");
    assert_eq!(b.log.head(r).await.unwrap(), None);

    let pk = fresh_partition();
    assert_too_large(b.meta.put(&pk, b"k", &vec![0; META_VALUE_BYTES_MAX + 1], Expect::Any).await, "meta value");
    assert_too_large(b.meta.put(&pk, &vec![0; META_SORT_KEY_BYTES_MAX + 1], b"v", Expect::Any).await, "sort key");
    // The one full-length key no backend stores (see validate::meta_key); one zero fewer is fine.
    assert_too_large(b.meta.put(&pk, &vec![0; META_SORT_KEY_BYTES_MAX], b"v", Expect::Any).await, "zero bytes only");
    b.meta.put(&pk, &vec![0; META_SORT_KEY_BYTES_MAX - 1], b"v", Expect::Absent).await.unwrap();
    b.meta.delete(&pk, &vec![0; META_SORT_KEY_BYTES_MAX - 1], Expect::Version(1)).await.unwrap();
    let ops: Vec<MetaOp> = (0..=META_TRANSACT_OPS_MAX)
        .map(|i| MetaOp::Put { pk: pk.clone(), sk: i.to_string().into_bytes(), value: vec![], expect: Expect::Any })
        .collect();
    assert_too_large(b.meta.transact(&ops).await, "op count");
    assert!(b.meta.query(&pk, b"", 10).await.unwrap().is_empty());
    assert!(matches!(
        b.blobs.put_if_absent(&"a".repeat(BLOB_NAME_BYTES_MAX + 1), Bytes::new()).await,
        Err(StoreError::Invalid(_))
    ));

    // At the limits.
    b.meta.put(&pk, &vec![7; META_SORT_KEY_BYTES_MAX], &vec![0; META_VALUE_BYTES_MAX], Expect::Absent).await.unwrap();
    let ops: Vec<MetaOp> = (0..META_TRANSACT_OPS_MAX)
        .map(|i| MetaOp::Put {
            pk: pk.clone(),
            sk: format!("t{i:03}").into_bytes(),
            value: vec![],
            expect: Expect::Absent,
        })
        .collect();
    b.meta.transact(&ops).await.unwrap();
    assert_eq!(b.meta.query(&pk, b"t", 1000).await.unwrap().len(), META_TRANSACT_OPS_MAX);
}

/// A conditional write whose response was lost, then retried, counts as written when the
/// item holds exactly its value; someone else's value is still a failed condition
/// (`store::own_write`, DESIGN section 4).
pub async fn meta_own_writes_survive_lost_responses(b: &Backend) {
    use ampstore_store::lost_responses::ResponseLosingMeta;
    use ampstore_store::own_write;

    let pk = fresh_partition();
    let (wrapped, losing) = ResponseLosingMeta::wrap_backend(b);
    let m = wrapped.meta.as_ref();
    assert_eq!(own_write::put(m, &pk, b"k", b"v1", Expect::Absent).await, Ok(1));
    // The response is lost and we retry: the retry's condition fails on our own write.
    losing.answer_unavailable_after_next_commits(1);
    assert_eq!(own_write::put(m, &pk, b"k", b"v2", Expect::Version(1)).await, Ok(2));
    // The store client resends by itself (the AWS SDK's retry): same.
    losing.resend_after_next_commits(1);
    assert!(matches!(m.put(&pk, b"k", b"v3", Expect::Version(2)).await, Err(StoreError::ConditionFailed { .. })));
    losing.resend_after_next_commits(1);
    assert_eq!(own_write::put(m, &pk, b"k", b"v4", Expect::Version(3)).await, Ok(4));
    assert_eq!(losing.responses_lost(), 3);
    // Someone else's write in between is still a failure, even when our retry follows a lost
    // response.
    assert_eq!(b.meta.put(&pk, b"k", b"theirs", Expect::Version(4)).await, Ok(5));
    let err = own_write::put(m, &pk, b"k", b"v6", Expect::Version(4)).await.unwrap_err();
    assert!(matches!(err, StoreError::ConditionFailed { op_index: None, .. }), "{err:?}");
    // Transactions: a retry after a lost response finds every put in place.
    let ops = [
        MetaOp::Put { pk: pk.clone(), sk: b"k".to_vec(), value: b"t1".to_vec(), expect: Expect::Version(5) },
        MetaOp::Put { pk: pk.clone(), sk: b"j".to_vec(), value: b"t1".to_vec(), expect: Expect::Absent },
    ];
    losing.answer_unavailable_after_next_commits(1);
    assert_eq!(own_write::transact(m, &ops).await, Ok(()));
    assert_eq!(b.meta.get(&pk, b"k").await.unwrap().map(|i| i.version), Some(6));
    // ...but a transaction whose condition fails at once is not read back as ours.
    let err = own_write::transact(m, &ops).await.unwrap_err();
    assert!(matches!(err, StoreError::ConditionFailed { op_index: Some(_), .. }), "{err:?}");
}
