//! The store process's protocol beyond the conformance suite: credentials, answers too big
//! for one frame, a store that restarts under its clients, and one that stops answering.

use std::time::{Duration, Instant};

use ampstore_common::limits::{META_VALUE_BYTES_MAX, STORE_QUERY_REPLY_BYTES_MAX};
use ampstore_common::{RangeId, Seq};
use ampstore_store::config::LocalConfig;
use ampstore_store::local::LocalStore;
use ampstore_store::remote::{RemoteStore, serve};
use ampstore_store::{CommitLog, Expect, MetaStore, StoreError};

struct Served {
    addr: String,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

async fn serve_on(dir: &std::path::Path, addr: &str, token: Option<&str>) -> Served {
    let store = LocalStore::open(dir, &LocalConfig::default()).unwrap();
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(serve(listener, store.backend(), token.map(String::from), stopped));
    Served { addr, stop, task }
}

#[tokio::test]
async fn a_wrong_or_missing_admin_token_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve_on(dir.path(), "127.0.0.1:0", Some("right")).await;
    for token in [None, Some("wrong".to_string())] {
        let err = RemoteStore::new(&s.addr, token.clone()).check().await.unwrap_err();
        assert!(matches!(&err, StoreError::Invalid(m) if m.contains("unauthorized")), "{token:?}: {err:?}");
        let err = RemoteStore::new(&s.addr, token).get("p", b"k").await.unwrap_err();
        assert!(matches!(&err, StoreError::Invalid(m) if m.contains("unauthorized")), "{err:?}");
    }
    let ok = RemoteStore::new(&s.addr, Some("right".into()));
    ok.check().await.unwrap();
    assert_eq!(ok.get("p", b"k").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_answer_larger_than_one_reply_arrives_whole_and_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve_on(dir.path(), "127.0.0.1:0", None).await;
    let store = RemoteStore::new(&s.addr, None);
    // Just over two replies' worth of values at the largest size a meta value may have.
    let count = 2 * STORE_QUERY_REPLY_BYTES_MAX / META_VALUE_BYTES_MAX + 3;
    for i in 0..count {
        store
            .put("big", format!("k{i:04}").as_bytes(), &vec![i as u8; META_VALUE_BYTES_MAX], Expect::Any)
            .await
            .unwrap();
    }
    let items = store.query("big", b"", 1000).await.unwrap();
    assert_eq!(items.len(), count);
    for (i, (sk, item)) in items.iter().enumerate() {
        assert_eq!(sk, format!("k{i:04}").as_bytes());
        assert_eq!(item.value.len(), META_VALUE_BYTES_MAX);
        assert_eq!(item.value[0], i as u8);
    }
    // The limit still holds across replies.
    assert_eq!(store.query("big", b"", count - 1).await.unwrap().len(), count - 1);
    assert_eq!(store.query("big", b"k0002", 1000).await.unwrap().len(), count - 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_carry_on_after_the_store_process_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve_on(dir.path(), "127.0.0.1:0", None).await;
    let store = RemoteStore::new(&s.addr, None);
    let entry = |n: u8| ampstore_store::LogEntry {
        kind: ampstore_store::EntryKind::Batch,
        writer: ampstore_common::NodeId::new("n1").unwrap(),
        epoch: ampstore_common::Epoch(1),
        payload: bytes::Bytes::from(vec![n; 10]),
    };
    // Several pooled connections.
    let mut appends = Vec::new();
    for i in 1..=8u64 {
        let store = store.clone();
        appends.push(tokio::spawn(async move { store.append(RangeId(1), Seq(i), &entry(i as u8)).await }));
    }
    for a in appends {
        a.await.unwrap().unwrap();
    }
    let addr = s.addr.clone();
    let _ = s.stop.send(true);
    s.task.await.unwrap();
    // The listener is gone; the pooled connections' server side is closed when their tasks
    // see the stop. Restart on the same address and the same files.
    let s2 = loop {
        match tokio::net::TcpListener::bind(&addr).await {
            Ok(l) => {
                drop(l);
                break serve_on(dir.path(), &addr, None).await;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let mut ok = 0;
    let started = Instant::now();
    while ok < 3 && started.elapsed() < Duration::from_secs(10) {
        match store.head(RangeId(1)).await {
            Ok(head) => {
                assert_eq!(head, Some(Seq(8)), "the restarted store has every acknowledged append");
                ok += 1;
            }
            // At most the calls on connections that broke mid-call; then fresh connections.
            Err(StoreError::Unavailable(_)) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(ok, 3, "the client never reached the restarted store");
    drop(s2);
}

#[tokio::test]
async fn a_store_that_stops_answering_costs_a_call_its_deadline_not_forever() {
    // Accepts connections and never answers (a stopped process: the kernel still accepts).
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let _keep = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let store = RemoteStore::with_deadline(&addr, None, Duration::from_millis(300));
    let started = Instant::now();
    let err = store.get("p", b"k").await.unwrap_err();
    assert!(matches!(&err, StoreError::Unavailable(m) if m.contains("did not answer")), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
}

/// A store that welcomes every connection and answers meta puts, but never answers an
/// append: the log side of a saturated store.
async fn store_stuck_on_appends() -> String {
    use ampstore_common::frame::{decode_body, read_frame, write_frame};
    use ampstore_store::remote::{StoreReply, StoreRequest, StoreResponse};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut body, mut scratch) = (Vec::new(), Vec::new());
                let welcome: StoreResponse = Ok(StoreReply::Welcome);
                if !matches!(read_frame(&mut stream, &mut body).await, Ok(true)) {
                    return;
                }
                write_frame(&mut stream, &welcome, &mut scratch).await.unwrap();
                while let Ok(true) = read_frame(&mut stream, &mut body).await {
                    match decode_body::<StoreRequest>(&body).unwrap() {
                        StoreRequest::MetaPut { .. } => {
                            let answer: StoreResponse = Ok(StoreReply::Version(1));
                            write_frame(&mut stream, &answer, &mut scratch).await.unwrap();
                        }
                        _ => std::future::pending::<()>().await,
                    }
                }
            });
        }
    });
    addr
}

/// Appends that hold every connection of the log's pool leave the meta store its own: a
/// node's heartbeat never waits for a connection behind its ranges' appends.
#[tokio::test]
async fn meta_calls_have_connections_of_their_own() {
    use ampstore_common::limits::STORE_CLIENT_CONNECTIONS_MAX;
    use ampstore_store::config::{BackendConfig, BackendKind};
    use ampstore_store::{Backend, EntryKind, LogEntry};
    let addr = store_stuck_on_appends().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = BackendConfig {
        kind: BackendKind::Local,
        local: LocalConfig { server: Some(addr), ..LocalConfig::default() },
        ..BackendConfig::default()
    };
    let b = Backend::open(&cfg, dir.path(), None).await.unwrap();
    for i in 0..STORE_CLIENT_CONNECTIONS_MAX as u64 + 1 {
        let log = b.log.clone();
        tokio::spawn(async move {
            let entry = LogEntry {
                kind: EntryKind::Batch,
                writer: ampstore_common::NodeId::new("n1").unwrap(),
                epoch: ampstore_common::Epoch(1),
                payload: bytes::Bytes::from_static(b"x"),
            };
            let _ = log.append(RangeId(1 + i), Seq(1), &entry).await;
        });
    }
    for _ in 0..1000 {
        tokio::task::yield_now().await;
    }
    let beat = tokio::time::timeout(Duration::from_secs(2), b.meta.put("node", b"n1", b"beat", Expect::Any)).await;
    assert!(matches!(beat, Ok(Ok(1))), "the meta put waited behind the appends: {beat:?}");
}

/// A TCP relay to the store that counts the requests clients send (the frames after each
/// connection's hello). With `hold_answers` it passes no answer back (a store that is slow
/// to answer).
async fn counting_relay(store: String, hold_answers: bool) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let frames = std::sync::Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let counted = frames.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = tokio::net::TcpStream::connect(&store).await.unwrap();
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            tokio::spawn(async move {
                if hold_answers {
                    // Passes the hello's answer back, then keeps both ends open and answers
                    // nothing more.
                    let mut header = [0u8; 4];
                    if sr.read_exact(&mut header).await.is_err() {
                        return;
                    }
                    let mut body = vec![0u8; u32::from_be_bytes(header) as usize];
                    if sr.read_exact(&mut body).await.is_err()
                        || cw.write_all(&header).await.is_err()
                        || cw.write_all(&body).await.is_err()
                    {
                        return;
                    }
                    let _ends = (sr, cw);
                    std::future::pending::<()>().await;
                } else {
                    let _ = tokio::io::copy(&mut sr, &mut cw).await;
                }
            });
            let counted = counted.clone();
            tokio::spawn(async move {
                // Frame by frame: a u32 big-endian length, then the body.
                let mut hello = true;
                loop {
                    let mut header = [0u8; 4];
                    if cr.read_exact(&mut header).await.is_err() {
                        return;
                    }
                    let mut body = vec![0u8; u32::from_be_bytes(header) as usize];
                    if cr.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    if !std::mem::take(&mut hello) {
                        counted.fetch_add(1, Ordering::SeqCst);
                    }
                    if sw.write_all(&header).await.is_err() || sw.write_all(&body).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, frames)
}

/// The appends of many ranges that are ready together go to the store in one request (and
/// come back in one answer), not one request each: that doubled the CPU per durable put of
/// a node with 16 ranges against one with one range (issue 16). Each slot keeps its own
/// outcome: a taken slot fails only its own append.
#[tokio::test]
async fn appends_of_many_ranges_ready_together_travel_in_one_request() {
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().unwrap();
    let s = serve_on(dir.path(), "127.0.0.1:0", None).await;
    let (relay, frames) = counting_relay(s.addr.clone(), false).await;
    let store = RemoteStore::new(&relay, None);
    let entry = |n: u8| ampstore_store::LogEntry {
        kind: ampstore_store::EntryKind::Batch,
        writer: ampstore_common::NodeId::new("n1").unwrap(),
        epoch: ampstore_common::Epoch(1),
        payload: bytes::Bytes::from(vec![n; 100]),
    };
    // Range 5's slot 1 is taken before (a fence, say).
    store.append(RangeId(5), Seq(1), &entry(0)).await.unwrap();
    let before = frames.load(Ordering::SeqCst);
    let ranges = 16u64;
    // Spawned one after the other on this one thread: all are queued before any is sent.
    let tasks: Vec<_> = (1..=ranges)
        .map(|r| {
            let (store, entry) = (store.clone(), entry(r as u8));
            tokio::spawn(async move { store.append(RangeId(r), Seq(1), &entry).await })
        })
        .collect();
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.unwrap());
    }
    let requests = frames.load(Ordering::SeqCst) - before;
    assert!(requests <= 2, "{ranges} appends ready together took {requests} requests");
    for (r, outcome) in (1..=ranges).zip(&outcomes) {
        if r == 5 {
            assert!(matches!(outcome, Err(StoreError::SlotTaken { range: RangeId(5), seq: Seq(1) })), "{outcome:?}");
        } else {
            assert!(outcome.is_ok(), "range {r}: {outcome:?}");
            let read = store.read(RangeId(r), Seq(1), 10).await.unwrap();
            assert_eq!(read, vec![(Seq(1), entry(r as u8))]);
        }
    }
    assert_eq!(store.read(RangeId(5), Seq(1), 10).await.unwrap(), vec![(Seq(1), entry(0))]);
}

/// At most `STORE_APPEND_EACH_IN_FLIGHT_MAX` append requests are out at once: appends made
/// while they are wait (and go together in the next one), whatever their number.
#[tokio::test]
async fn append_requests_in_flight_stop_at_the_bound() {
    use ampstore_common::limits::STORE_APPEND_EACH_IN_FLIGHT_MAX;
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().unwrap();
    let s = serve_on(dir.path(), "127.0.0.1:0", None).await;
    let (relay, requests) = counting_relay(s.addr.clone(), true).await;
    let store = RemoteStore::with_deadline(&relay, None, Duration::from_millis(1500));
    let entry = ampstore_store::LogEntry {
        kind: ampstore_store::EntryKind::Batch,
        writer: ampstore_common::NodeId::new("n1").unwrap(),
        epoch: ampstore_common::Epoch(1),
        payload: bytes::Bytes::from_static(b"x"),
    };
    // One append after the other, each given time to be sent on its own.
    let mut tasks = Vec::new();
    for r in 1..=(STORE_APPEND_EACH_IN_FLIGHT_MAX as u64 + 3) {
        let (store, entry) = (store.clone(), entry.clone());
        tasks.push(tokio::spawn(async move { store.append(RangeId(r), Seq(1), &entry).await }));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(requests.load(Ordering::SeqCst), STORE_APPEND_EACH_IN_FLIGHT_MAX);
    // No answer comes: every append ends `Unavailable` (outcome unknown) within its deadlines.
    for t in tasks {
        let outcome = tokio::time::timeout(Duration::from_secs(10), t).await.expect("answered").unwrap();
        assert!(matches!(outcome, Err(StoreError::Unavailable(_))), "{outcome:?}");
    }
}

/// `start_append` queues the append before it returns, and the request goes out on the
/// runtime the client was made in: the append lands while its future is never polled and
/// the caller's own thread is busy (a range applying its last batch). With the default
/// (start on first poll) nothing would be written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_started_is_sent_before_its_future_is_polled() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve_on(dir.path(), "127.0.0.1:0", None).await;
    let store = std::sync::Arc::new(RemoteStore::new(&s.addr, None));
    store.check().await.unwrap();
    let entry = ampstore_store::LogEntry {
        kind: ampstore_store::EntryKind::Batch,
        writer: ampstore_common::NodeId::new("n1").unwrap(),
        epoch: ampstore_common::Epoch(1),
        payload: bytes::Bytes::from_static(b"started"),
    };
    // Started from a thread outside the client's runtime, which then blocks (never polls).
    let (started, store2, e2) = (std::sync::mpsc::channel(), store.clone(), entry.clone());
    let blocked = std::thread::spawn(move || {
        let fut = store2.start_append(RangeId(9), Seq(1), e2);
        started.0.send(()).unwrap();
        std::thread::sleep(Duration::from_secs(3));
        drop(fut);
    });
    started.1.recv().unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    let reader = RemoteStore::new(&s.addr, None);
    loop {
        let found = reader.read(RangeId(9), Seq(1), 1).await.unwrap();
        if let Some((seq, e)) = found.first() {
            assert_eq!((*seq, e), (Seq(1), &entry));
            break;
        }
        assert!(Instant::now() < deadline, "the started append was not sent while its future sat unpolled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    blocked.join().unwrap();
}
