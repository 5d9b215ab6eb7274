//! The connection loop of `rpc`, driven by raw frames: pipelined requests answered with
//! their ids, out-of-order completion, one write per batch of ready answers, and the bound
//! on requests in flight.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use ampstore_common::error::Error;
use ampstore_common::frame::{FrameCodec, decode_body, encode_frame};
use ampstore_common::ids::{NodeId, RequestId, Seq};
use ampstore_common::limits::CONNECTION_REQUESTS_IN_FLIGHT_MAX;
use ampstore_common::protocol::{
    Hello, HelloReply, Op, PROTOCOL_VERSION, Reply, Request, Response, Role, ServerInfo, Versioned,
};
use ampstore_common::{Key, Version};
use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_util::codec::Decoder;

use super::{Now, Service};

/// Gets are answered at once (value = the key); a put waits until the test opens its gate
/// (`open(key)`), then answers with the version `index` = its value's first byte.
#[derive(Default)]
struct Gated {
    gates: Mutex<HashMap<Vec<u8>, Vec<oneshot::Sender<()>>>>,
    /// Puts whose `handle` has started and not finished.
    running: AtomicUsize,
    /// The most puts running at once.
    running_max: AtomicUsize,
    /// Puts `handle` was called for.
    started: AtomicUsize,
    /// Puts are handed on (`Service::start`) instead of awaited in the connection.
    hand_on: bool,
    /// Handed-on puts waiting for their key's gate: their reply and their tag.
    handed: Mutex<HashMap<Vec<u8>, Vec<HandedOn>>>,
}

impl Gated {
    /// Lets every put of `key` that waits (or will wait) finish.
    fn open(&self, key: &str) {
        for tx in self.gates.lock().unwrap().remove(key.as_bytes()).unwrap_or_default() {
            let _ = tx.send(());
        }
        for (reply, tag) in self.handed.lock().unwrap().remove(key.as_bytes()).unwrap_or_default() {
            reply.send(Ok(Reply::Written { version: version(u32::from(tag)) }));
        }
    }

    fn handing_on() -> Gated {
        Gated { hand_on: true, ..Gated::default() }
    }

    /// Handed-on puts waiting now.
    fn handed(&self) -> usize {
        self.handed.lock().unwrap().values().map(Vec::len).sum()
    }

    /// Drops the replies of `key`'s handed-on puts unsent.
    fn drop_replies(&self, key: &str) {
        self.handed.lock().unwrap().remove(key.as_bytes());
    }
}

/// A put handed on to `Gated`: its reply and its tag (the version's index it answers).
type HandedOn = (super::ConnReply, u8);

fn version(index: u32) -> Version {
    Version { seq: Seq(1), index }
}

impl Service for Gated {
    fn server_info(&self) -> ServerInfo {
        ServerInfo { protocol_version: PROTOCOL_VERSION, server_id: NodeId::new("test").unwrap(), role: Role::Node }
    }

    fn handle(self: &Arc<Self>, op: Op) -> impl Future<Output = Result<Reply, Error>> + Send {
        let this = self.clone();
        async move {
            let Op::Put { key, value, .. } = op else { return Err(Error::invalid("only puts wait")) };
            let (tx, rx) = oneshot::channel();
            this.gates.lock().unwrap().entry(key.as_bytes().to_vec()).or_default().push(tx);
            this.started.fetch_add(1, Ordering::SeqCst);
            let now = this.running.fetch_add(1, Ordering::SeqCst) + 1;
            this.running_max.fetch_max(now, Ordering::SeqCst);
            let _ = rx.await;
            this.running.fetch_sub(1, Ordering::SeqCst);
            Ok(Reply::Written { version: version(u32::from(value.first().copied().unwrap_or(0))) })
        }
    }

    fn try_now(&self, op: Op) -> Now {
        match op {
            Op::Get { key } => {
                Now::Answered(Ok(Reply::Value(Some(Versioned { value: key.as_bytes().to_vec(), version: version(0) }))))
            }
            other => Now::Later(other),
        }
    }

    fn runs_in_connection(&self, op: &Op) -> bool {
        matches!(op, Op::Put { .. })
    }

    fn starts(&self, op: &Op) -> bool {
        self.hand_on && matches!(op, Op::Put { .. })
    }

    fn start(self: &Arc<Self>, op: Op, reply: super::ConnReply) {
        let Op::Put { key, value, .. } = op else { return reply.send(Err(Error::invalid("only puts"))) };
        let tag = value.first().copied().unwrap_or(0);
        self.handed.lock().unwrap().entry(key.as_bytes().to_vec()).or_default().push((reply, tag));
    }
}

fn get(id: u64, key: &str) -> Request {
    Request { id: RequestId(id), deadline_ms: Some(10_000), op: Op::Get { key: Key::from(key) } }
}

fn put(id: u64, key: &str, tag: u8) -> Request {
    Request {
        id: RequestId(id),
        deadline_ms: Some(10_000),
        op: Op::Put { key: Key::from(key), value: vec![tag], write_id: None },
    }
}

/// A connection to a served `Gated` on a free local port, past the hello.
async fn connect(service: Arc<Gated>) -> (TcpStream, BytesMut) {
    let (listener, addr) = super::bind("127.0.0.1:0").await.unwrap();
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let _keep = _stop_tx;
        super::serve(listener, service, stop).await
    });
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    let hello =
        Hello { protocol_version: PROTOCOL_VERSION, role: Role::Client, client_name: "t".into(), auth_token: None };
    encode_frame(&hello, &mut buf).unwrap();
    s.write_all(&buf).await.unwrap();
    let mut inbuf = BytesMut::new();
    let body = next_frame(&mut s, &mut inbuf).await.expect("hello reply");
    decode_body::<HelloReply>(&body).unwrap().result.unwrap();
    (s, inbuf)
}

/// The next frame body from `s` (None on a clean end of stream).
async fn next_frame<R: AsyncRead + Unpin>(s: &mut R, inbuf: &mut BytesMut) -> Option<BytesMut> {
    let mut codec = FrameCodec::default();
    loop {
        if let Some(body) = codec.decode(inbuf).unwrap() {
            return Some(body);
        }
        if s.read_buf(inbuf).await.unwrap() == 0 {
            return None;
        }
    }
}

async fn next_response<R: AsyncRead + Unpin>(s: &mut R, inbuf: &mut BytesMut) -> Response {
    let body = tokio::time::timeout(Duration::from_secs(10), next_frame(s, inbuf)).await.expect("an answer in time");
    decode_body(&body.expect("a frame")).unwrap()
}

/// The ids of the next `n` answers, sorted (they come in the order requests finish).
async fn answered_ids<R: AsyncRead + Unpin>(s: &mut R, inbuf: &mut BytesMut, n: usize) -> Vec<u64> {
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        ids.push(next_response(s, inbuf).await.id.0);
    }
    ids.sort_unstable();
    ids
}

async fn send_all(s: &mut TcpStream, reqs: &[Request]) {
    let mut buf = Vec::new();
    for r in reqs {
        encode_frame(r, &mut buf).unwrap();
    }
    s.write_all(&buf).await.unwrap();
}

/// Waits until `f` holds (the service's tasks run on other threads).
async fn until(mut f: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("condition not reached in 5 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_pipelined_gets_in_one_write_are_answered_with_their_ids() {
    let (mut s, mut inbuf) = connect(Arc::new(Gated::default())).await;
    let n = 500u64;
    let reqs: Vec<Request> = (1..=n).map(|i| get(i, &format!("k{i}"))).collect();
    send_all(&mut s, &reqs).await;
    for i in 1..=n {
        let resp = next_response(&mut s, &mut inbuf).await;
        // Gets are answered inline, so in request order.
        assert_eq!(resp.id, RequestId(i));
        match resp.result {
            Ok(Reply::Value(Some(v))) => assert_eq!(v.value, format!("k{i}").into_bytes()),
            other => panic!("request {i}: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_gets_and_puts_are_answered_as_they_complete() {
    let service = Arc::new(Gated::default());
    let (mut s, mut inbuf) = connect(service.clone()).await;
    send_all(&mut s, &[put(1, "a", 1), get(2, "x"), put(3, "b", 3), get(4, "y")]).await;
    // The gets do not wait for the puts before them.
    assert_eq!(next_response(&mut s, &mut inbuf).await.id, RequestId(2));
    assert_eq!(next_response(&mut s, &mut inbuf).await.id, RequestId(4));
    until(|| service.started.load(Ordering::SeqCst) == 2).await;
    // The later put finishes first, and is answered first, under its own id.
    service.open("b");
    let r = next_response(&mut s, &mut inbuf).await;
    assert_eq!((r.id, r.result), (RequestId(3), Ok(Reply::Written { version: version(3) })));
    service.open("a");
    let r = next_response(&mut s, &mut inbuf).await;
    assert_eq!((r.id, r.result), (RequestId(1), Ok(Reply::Written { version: version(1) })));
}

/// At the bound, the connection takes no further request until one in flight finishes:
/// exactly `CONNECTION_REQUESTS_IN_FLIGHT_MAX` run at once, the next one waits (it is not
/// refused, and a get behind it waits too: requests are taken in order).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_stop_at_the_bound() {
    let service = Arc::new(Gated::default());
    let (mut s, mut inbuf) = connect(service.clone()).await;
    let max = CONNECTION_REQUESTS_IN_FLIGHT_MAX as u64;
    let mut reqs: Vec<Request> = (1..=max).map(|i| put(i, "held", 0)).collect();
    reqs.push(put(max + 1, "last", 0));
    reqs.push(get(max + 2, "after"));
    send_all(&mut s, &reqs).await;
    until(|| service.started.load(Ordering::SeqCst) == CONNECTION_REQUESTS_IN_FLIGHT_MAX).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(service.started.load(Ordering::SeqCst), CONNECTION_REQUESTS_IN_FLIGHT_MAX, "one past the bound waits");
    assert!(
        tokio::time::timeout(Duration::from_millis(100), next_frame(&mut s, &mut inbuf)).await.is_err(),
        "nothing is answered while every request in flight waits"
    );
    service.open("held");
    // Every held put, and the get once the connection takes requests again (in any order:
    // the get may go out between two batches of finished puts).
    let ids = answered_ids(&mut s, &mut inbuf, max as usize + 1).await;
    assert_eq!(ids, (1..=max).chain([max + 2]).collect::<Vec<_>>(), "every held put and the get, once");
    until(|| service.started.load(Ordering::SeqCst) == CONNECTION_REQUESTS_IN_FLIGHT_MAX + 1).await;
    service.open("last");
    assert_eq!(next_response(&mut s, &mut inbuf).await.id, RequestId(max + 1));
    assert_eq!(service.running_max.load(Ordering::SeqCst), CONNECTION_REQUESTS_IN_FLIGHT_MAX);
}

/// A stream whose reads come from a byte string and whose writes are counted.
struct Counting {
    input: std::io::Cursor<Vec<u8>>,
    /// After the input: pending forever (an open connection), or end of stream.
    hold_open: bool,
    output: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl AsyncRead for Counting {
    fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let pos = self.input.position() as usize;
        let left = &self.input.get_ref()[pos..];
        if left.is_empty() && self.hold_open {
            return Poll::Pending;
        }
        let n = left.len().min(buf.remaining());
        buf.put_slice(&left[..n]);
        self.input.set_position((pos + n) as u64);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Counting {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        self.output.lock().unwrap().push(data.to_vec());
        Poll::Ready(Ok(data.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn responses(writes: &[Vec<u8>]) -> Vec<Response> {
    let mut src = BytesMut::from(&writes.concat()[..]);
    let mut codec = FrameCodec::default();
    let mut out = Vec::new();
    while let Some(body) = codec.decode(&mut src).unwrap() {
        out.push(decode_body(&body).unwrap());
    }
    assert!(src.is_empty());
    out
}

/// Pipelined gets that arrive together are answered in one write (one syscall), not one
/// write per answer.
#[tokio::test]
async fn gets_read_together_are_answered_in_one_write() {
    let mut input = Vec::new();
    for i in 1..=200 {
        encode_frame(&get(i, "k"), &mut input).unwrap();
    }
    let output = Arc::default();
    let mut io = Counting { input: std::io::Cursor::new(input), hold_open: true, output: Arc::clone(&output) };
    let service = Arc::new(Gated::default());
    let served = super::serve_requests(&mut io, BytesMut::new(), "test", Role::Client, &service);
    // The connection stays open; the test stops it once the answers are out.
    let _ = tokio::time::timeout(Duration::from_millis(200), served).await;
    let writes = output.lock().unwrap().clone();
    assert_eq!(writes.len(), 1, "one write for every answer ready at once");
    let ids: Vec<u64> = responses(&writes).iter().map(|r| r.id.0).collect();
    assert_eq!(ids, (1..=200).collect::<Vec<_>>());
}

/// Puts that finish together are answered in one write, and a connection whose peer
/// stops sending still answers what it took before it closes.
#[tokio::test]
async fn puts_finishing_together_are_answered_in_one_write() {
    let mut input = Vec::new();
    for i in 1..=50 {
        encode_frame(&put(i, "k", i as u8), &mut input).unwrap();
    }
    let output = Arc::default();
    let mut io = Counting { input: std::io::Cursor::new(input), hold_open: false, output: Arc::clone(&output) };
    let service = Arc::new(Gated::default());
    let opener = {
        let service = service.clone();
        async move {
            until(|| service.started.load(Ordering::SeqCst) == 50).await;
            service.open("k");
        }
    };
    let served = super::serve_requests(&mut io, BytesMut::new(), "test", Role::Client, &service);
    tokio::time::timeout(Duration::from_secs(10), async { tokio::join!(served, opener) }).await.expect("served");
    let writes = output.lock().unwrap().clone();
    assert_eq!(writes.len(), 1, "one write for the answers that became ready together");
    let mut got: Vec<(u64, Result<Reply, Error>)> =
        responses(&writes).into_iter().map(|r| (r.id.0, r.result)).collect();
    got.sort_by_key(|(id, _)| *id);
    let want: Vec<(u64, Result<Reply, Error>)> =
        (1..=50).map(|i| (i, Ok(Reply::Written { version: version(i as u32) }))).collect();
    assert_eq!(got, want);
}

/// Puts that finish one moment apart (a node's ranges answering their writes one after the
/// other once the store answered their appends together) are answered in one write when
/// the second finishes while the connection lets the others run once before writing.
#[tokio::test]
async fn puts_finishing_one_moment_apart_are_answered_in_one_write() {
    let mut input = Vec::new();
    encode_frame(&put(1, "a", 1), &mut input).unwrap();
    encode_frame(&put(2, "b", 2), &mut input).unwrap();
    let output = Arc::default();
    let mut io = Counting { input: std::io::Cursor::new(input), hold_open: false, output: Arc::clone(&output) };
    let service = Arc::new(Gated::default());
    // A task of its own on this one thread: "a", then, once the connection has run, "b".
    let opener = tokio::spawn({
        let service = service.clone();
        async move {
            until(|| service.started.load(Ordering::SeqCst) == 2).await;
            service.open("a");
            tokio::task::yield_now().await;
            service.open("b");
        }
    });
    let served = super::serve_requests(&mut io, BytesMut::new(), "test", Role::Client, &service);
    tokio::time::timeout(Duration::from_secs(10), served).await.expect("served");
    opener.await.unwrap();
    let writes = output.lock().unwrap().clone();
    let mut got: Vec<u64> = responses(&writes).into_iter().map(|r| r.id.0).collect();
    got.sort();
    assert_eq!(got, vec![1, 2]);
    assert_eq!(writes.len(), 1, "one write for answers finishing one moment apart");
}

/// Puts handed on (`Service::start`) are answered with their ids and results when they
/// finish, in the order they finish, and a get meanwhile at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handed_on_puts_are_answered_as_they_finish() {
    let service = Arc::new(Gated::handing_on());
    let (mut s, mut inbuf) = connect(service.clone()).await;
    send_all(&mut s, &[put(1, "a", 11), put(2, "b", 12), get(3, "g"), put(4, "a", 14)]).await;
    assert_eq!(next_response(&mut s, &mut inbuf).await.id, RequestId(3));
    until(|| service.handed() == 3).await;
    service.open("b");
    let r = next_response(&mut s, &mut inbuf).await;
    assert_eq!((r.id, r.result), (RequestId(2), Ok(Reply::Written { version: version(12) })));
    service.open("a");
    let mut rest: Vec<(u64, Result<Reply, Error>)> = Vec::new();
    for _ in 0..2 {
        let r = next_response(&mut s, &mut inbuf).await;
        rest.push((r.id.0, r.result));
    }
    rest.sort_by_key(|(id, _)| *id);
    assert_eq!(
        rest,
        [(1, Ok(Reply::Written { version: version(11) })), (4, Ok(Reply::Written { version: version(14) }))]
    );
}

/// A handed-on put past its deadline is answered `Timeout` (within the connection's scan
/// interval) and its late answer is dropped; one whose reply is dropped unsent is answered
/// `Timeout` at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handed_on_put_past_its_deadline_or_dropped_answers_timeout() {
    let service = Arc::new(Gated::handing_on());
    let (mut s, mut inbuf) = connect(service.clone()).await;
    let mut late = put(1, "late", 1);
    late.deadline_ms = Some(50);
    let t0 = std::time::Instant::now();
    send_all(&mut s, &[late]).await;
    let r = next_response(&mut s, &mut inbuf).await;
    assert_eq!((r.id, r.result), (RequestId(1), Err(Error::Timeout)));
    assert!(t0.elapsed() < Duration::from_secs(2), "answered {:?} after", t0.elapsed());
    service.open("late");
    send_all(&mut s, &[put(2, "gone", 2)]).await;
    until(|| service.handed() == 1).await;
    service.drop_replies("gone");
    let r = next_response(&mut s, &mut inbuf).await;
    assert_eq!((r.id, r.result), (RequestId(2), Err(Error::Timeout)), "the late answer of 1 never went out");
}

/// Requests handed on count against the bound on requests in flight; once their answers
/// come, the frames held back behind the bound (already read) are taken. One thread: every
/// answer is queued before the connection runs again, so it takes them all in one go (the
/// case that once left the held-back get unread until the client sent more).
#[tokio::test]
async fn handed_on_requests_stop_at_the_bound() {
    let service = Arc::new(Gated::handing_on());
    let (mut s, mut inbuf) = connect(service.clone()).await;
    let max = CONNECTION_REQUESTS_IN_FLIGHT_MAX as u64;
    let mut reqs: Vec<Request> = (1..=max).map(|i| put(i, "held", 0)).collect();
    reqs.push(get(max + 1, "after"));
    send_all(&mut s, &reqs).await;
    until(|| service.handed() == CONNECTION_REQUESTS_IN_FLIGHT_MAX).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(100), next_frame(&mut s, &mut inbuf)).await.is_err(),
        "one past the bound waits"
    );
    service.open("held");
    assert_eq!(answered_ids(&mut s, &mut inbuf, max as usize + 1).await, (1..=max + 1).collect::<Vec<_>>());
}
