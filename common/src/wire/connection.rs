//! One multiplexed connection to a node or master: requests are pipelined, each tagged with
//! a request id, and answers are matched to callers as they arrive in any order.
//!
//! A caller encodes its request straight into the connection's outbox (one buffer shared by
//! every caller) and wakes the writer task only when the outbox was empty; the writer first
//! lets every other ready task run (so callers woken by the same read all queue their next
//! request), then takes the whole outbox and writes it with one syscall. The reader task
//! reads into one buffer and hands every complete answer in it to its caller under one lock
//! of the waiting calls. When the connection fails, every waiting call gets `Unavailable`
//! and the connection reports itself closed, so its owner reconnects.
//!
//! A call's deadline is kept beside its entry in the waiting calls, and one timer task per
//! connection answers `Timeout` to the calls whose deadline passed: it sleeps until the
//! earliest deadline it knows of (a caller with an earlier one wakes it), so under steady
//! load it wakes about once per deadline span, not once per call. (A `tokio::time::timeout`
//! per call, registered in and removed from the runtime's timer wheel, cost about 1,000
//! instructions a call, a sixth of the load generator's work per request.)

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, oneshot};
use tokio_util::codec::Decoder;

use crate::error::Error;
use crate::frame::{FrameCodec, decode_body, read_frame, write_frame};
use crate::ids::RequestId;
use crate::limits::CONNECTION_QUEUED_BYTES_MAX;
use crate::protocol::{Hello, HelloReply, Op, PROTOCOL_VERSION, Reply, RequestRef, Role, ServerInfo};
use crate::wire::Call;
use crate::wire::hot;

/// How long connecting and the hello exchange may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection's read buffer: the answers to pipelined requests come in one read.
const READ_BUFFER_BYTES: usize = 64 * 1024;
/// Below this much free room the read buffer grows (or compacts) before the next read.
const READ_ROOM_MIN_BYTES: usize = 4 * 1024;
/// The writer's buffer is given back when a burst of large requests left it larger.
const WRITE_BUFFER_KEEP_BYTES: usize = 1024 * 1024;

type Waiter = oneshot::Sender<Result<Reply, Error>>;

/// Request ids are this connection's own counter (never chosen by the peer), so they need
/// no hashing against collisions: a multiply spreads them over the table.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, id: u64) {
        self.0 = id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type PendingMap = HashMap<u64, (Waiter, Instant), BuildHasherDefault<IdHasher>>;

/// The calls waiting for their answer, by request id, each with its deadline.
#[derive(Default)]
struct Pending {
    calls: PendingMap,
    /// When the timer task next looks for calls past their deadline: no later than the
    /// earliest deadline among `calls` (earlier when that call was answered since). `None`:
    /// no call was waiting when it last looked, and it sleeps until told.
    next_expiry: Option<Instant>,
}

/// The longest deadline a call is given (a `Duration` too large for an `Instant`).
const DEADLINE_MAX: Duration = Duration::from_secs(365 * 24 * 3600);

/// What the callers, the writer task and the reader task of one connection share.
#[derive(Default)]
struct Shared {
    /// Encoded requests not yet written.
    outbox: Mutex<Vec<u8>>,
    /// Wakes the writer: the outbox stopped being empty, or the connection is closing.
    wake_writer: Notify,
    /// Wakes callers waiting for room in a full outbox.
    room: Notify,
    /// Calls waiting for their answer, by request id, and when their deadlines pass.
    pending: Mutex<Pending>,
    /// Wakes the timer task: a call's deadline is earlier than any it knew of, or the
    /// connection is closing.
    wake_timer: Notify,
    /// The connection failed (or its owner dropped it): calls fail at once.
    closed: AtomicBool,
}

impl Shared {
    fn outbox(&self) -> MutexGuard<'_, Vec<u8>> {
        // Bytes are appended whole (`encode_frame` leaves the buffer as it was on error),
        // so a panicking holder left nothing half-written: keep going.
        self.outbox.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn pending(&self) -> MutexGuard<'_, Pending> {
        // The map holds no invariant a panicking holder could break: keep going.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Fails every waiting call and wakes everyone: the connection is gone.
    fn fail_all(&self, why: &str) {
        self.closed.store(true, Ordering::Release);
        let waiting: Vec<Waiter> = self.pending().calls.drain().map(|(_, (tx, _))| tx).collect();
        for tx in waiting {
            let _ = tx.send(Err(Error::unavailable(why.to_string())));
        }
        self.wake_writer.notify_one();
        self.wake_timer.notify_one();
        self.room.notify_waiters();
    }
}

/// Held by the connection's reader and timer tasks: if the runtime drops one of them (it
/// shut down, with the task run or not), the connection fails, so its calls get an answer
/// instead of waiting for a task that is gone.
struct FailOnDrop(Arc<Shared>);

impl Drop for FailOnDrop {
    fn drop(&mut self) {
        if !self.0.closed.load(Ordering::Acquire) || !self.0.pending().calls.is_empty() {
            self.0.fail_all("the connection's tasks stopped");
        }
    }
}

/// A connection to one server. Cheap to share (`Arc`); calls may run concurrently.
///
/// ```no_run
/// # async fn demo() -> Result<(), ampstore_common::Error> {
/// use ampstore_common::connection::Connection;
/// use ampstore_common::protocol::Role;
/// use ampstore_common::wire::data::Get;
/// let conn = Connection::connect("127.0.0.1:7300", Role::Client, "my-app", None).await?;
/// let value = conn.call_typed(Get { key: "user:1".into() }, std::time::Duration::from_secs(1)).await?;
/// # Ok(()) }
/// ```
pub struct Connection {
    addr: String,
    server: ServerInfo,
    shared: Arc<Shared>,
    next_id: AtomicU64,
}

impl Drop for Connection {
    /// The last holder let go: the writer sends what is queued and closes its side, and the
    /// server then closes the connection.
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.wake_writer.notify_one();
        self.shared.wake_timer.notify_one();
    }
}

impl Connection {
    /// Connects to `addr` and exchanges hellos.
    pub async fn connect(addr: &str, role: Role, name: &str, auth_token: Option<String>) -> Result<Connection, Error> {
        tokio::time::timeout(CONNECT_TIMEOUT, Self::connect_inner(addr, role, name, auth_token))
            .await
            .map_err(|_| Error::unavailable(format!("{addr}: no answer within {CONNECT_TIMEOUT:?}")))?
    }

    async fn connect_inner(
        addr: &str,
        role: Role,
        name: &str,
        auth_token: Option<String>,
    ) -> Result<Connection, Error> {
        let unavailable = |e: &dyn std::fmt::Display| Error::unavailable(format!("{addr}: {e}"));
        let mut stream = TcpStream::connect(addr).await.map_err(|e| unavailable(&e))?;
        stream.set_nodelay(true).map_err(|e| unavailable(&e))?;
        let hello = Hello { protocol_version: PROTOCOL_VERSION, role, client_name: name.to_string(), auth_token };
        let mut buf = Vec::with_capacity(4096);
        write_frame(&mut stream, &hello, &mut buf).await.map_err(|e| unavailable(&e))?;
        // Unbuffered: the server sends nothing behind its hello reply until asked.
        if !read_frame(&mut stream, &mut buf).await.map_err(|e| unavailable(&e))? {
            return Err(unavailable(&"closed the connection during the hello"));
        }
        let server = decode_body::<HelloReply>(&buf).map_err(|e| unavailable(&e))?.result?;
        let (rd, wr) = stream.into_split();
        let shared = Arc::new(Shared::default());
        tokio::spawn(write_loop(wr, shared.clone()));
        // The guards go in with the tasks, so they hold even if a task never runs.
        tokio::spawn(read_loop(rd, shared.clone(), FailOnDrop(shared.clone())));
        tokio::spawn(timer_loop(shared.clone(), FailOnDrop(shared.clone())));
        Ok(Connection { addr: addr.to_string(), server, shared, next_id: AtomicU64::new(1) })
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Who answered the hello.
    pub fn server(&self) -> &ServerInfo {
        &self.server
    }

    /// True once the connection failed; calls on it then fail at once.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// Sends `op` and waits for its answer for at most `deadline` (the server is told the
    /// same deadline). `Timeout` means the operation may or may not have taken effect.
    pub async fn call(&self, op: Op, deadline: Duration) -> Result<Reply, Error> {
        self.call_inner(&op, deadline, false).await
    }

    /// [`Connection::call`] without taking the operation: for callers that may send it
    /// again (retries), which then never copy it.
    pub async fn call_ref(&self, op: &Op, deadline: Duration) -> Result<Reply, Error> {
        self.call_inner(op, deadline, false).await
    }

    /// Sends a typed request and answers its typed reply: `call_typed(Get { key }, d)` is
    /// `Result<Option<Versioned>, Error>`. A reply of another variant is `Internal`.
    pub async fn call_typed<C: Call>(&self, req: C, deadline: Duration) -> Result<C::Reply, Error> {
        C::reply(self.call(req.into_op(), deadline).await?)
    }

    /// [`Connection::call_once`] for a typed request.
    pub async fn call_once_typed<C: Call>(&self, req: C, deadline: Duration) -> Result<C::Reply, Error> {
        C::reply(self.call_once(req.into_op(), deadline).await?)
    }

    /// Like [`Connection::call`], for operations that must not be repeated blindly: a
    /// connection lost after the request went out answers `Timeout` (the outcome is
    /// unknown), not `Unavailable`.
    pub async fn call_once(&self, op: Op, deadline: Duration) -> Result<Reply, Error> {
        self.call_inner(&op, deadline, true).await
    }

    async fn call_inner(&self, op: &Op, deadline: Duration, once: bool) -> Result<Reply, Error> {
        if self.is_closed() {
            return Err(self.closed_error());
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let deadline_ms = u32::try_from(deadline.as_millis()).unwrap_or(u32::MAX);
        let req = RequestRef { id: RequestId(id), deadline_ms: Some(deadline_ms), op };
        let expires = Instant::now() + deadline.min(DEADLINE_MAX);
        // Waiting before it can be written: the answer may come back before this task runs
        // again.
        let (tx, rx) = oneshot::channel();
        let earliest = {
            let mut pending = self.shared.pending();
            pending.calls.insert(id, (tx, expires));
            let earliest = pending.next_expiry.is_none_or(|t| expires < t);
            if earliest {
                pending.next_expiry = Some(expires);
            }
            earliest
        };
        if earliest {
            self.shared.wake_timer.notify_one();
        }
        let queued = match self.enqueue(&req) {
            Ok(true) => Ok(()),
            // The outbox is full: wait for the writer to take it, within the deadline.
            Ok(false) => match tokio::time::timeout(deadline, self.enqueue_when_room(&req)).await {
                Ok(r) => r,
                Err(_) => Err(Error::Timeout),
            },
            Err(e) => Err(e),
        };
        if let Err(e) = queued {
            self.shared.pending().calls.remove(&id);
            return Err(e);
        }
        // The answer, or `Timeout` from the timer task once the deadline passed.
        match rx.await {
            Ok(Err(Error::Unavailable { .. })) if once && self.is_closed() => Err(Error::Timeout),
            Ok(result) => result,
            Err(_) if once => Err(Error::Timeout),
            Err(_) => Err(self.closed_error()),
        }
    }

    fn closed_error(&self) -> Error {
        Error::unavailable(format!("{}: connection closed", self.addr))
    }

    /// Encodes `req` into the outbox when it has room (`Ok(false)` when full), and wakes the
    /// writer when the outbox was empty (otherwise it has been woken already and has not
    /// taken the outbox yet). Encoded here, from the borrowed op: too large or unencodable
    /// is the caller's error, and nothing was queued.
    fn enqueue(&self, req: &RequestRef<'_>) -> Result<bool, Error> {
        let was_empty = {
            let mut outbox = self.shared.outbox();
            if self.is_closed() {
                return Err(self.closed_error());
            }
            if !has_room(outbox.len()) {
                return Ok(false);
            }
            let was_empty = outbox.is_empty();
            // Gets, puts and deletes by hand, the rest through serde: the same bytes.
            hot::encode_request(req, &mut outbox)?;
            was_empty
        };
        if was_empty {
            self.shared.wake_writer.notify_one();
        }
        Ok(true)
    }

    async fn enqueue_when_room(&self, req: &RequestRef<'_>) -> Result<(), Error> {
        loop {
            // Registered before looking, so a writer that takes the outbox in between is seen.
            let room = self.shared.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if self.enqueue(req)? {
                return Ok(());
            }
            room.await;
        }
    }
}

/// Whether an outbox holding `queued` bytes takes another request. An empty one always does
/// (a request may be larger than the bound), so the bound is exceeded by at most one frame.
fn has_room(queued: usize) -> bool {
    queued < CONNECTION_QUEUED_BYTES_MAX
}

async fn write_loop(mut wr: tokio::net::tcp::OwnedWriteHalf, shared: Arc<Shared>) {
    let mut spare = Vec::with_capacity(READ_BUFFER_BYTES);
    // On a single-threaded runtime the writer, woken by the first caller, is queued behind
    // the callers woken with it (by the same read of answers): it runs after them without
    // yielding. A yield there only added a poll of the I/O driver (an `epoll_wait`) a write.
    let single = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread);
    loop {
        shared.wake_writer.notified().await;
        // Let every task that is ready run first: callers woken by the same read of answers
        // queue their next requests, and all of them go out in this one write. (On a
        // multi-threaded runtime the writer, just woken, would run before them.)
        if !single {
            tokio::task::yield_now().await;
        }
        let taken = std::mem::replace(&mut *shared.outbox(), std::mem::take(&mut spare));
        shared.room.notify_waiters();
        if !taken.is_empty()
            && let Err(e) = wr.write_all(&taken).await
        {
            shared.fail_all(&format!("connection lost while sending: {e}"));
            return;
        }
        spare = taken;
        spare.clear();
        if spare.capacity() > WRITE_BUFFER_KEEP_BYTES {
            spare.shrink_to(READ_BUFFER_BYTES);
        }
        if shared.closed.load(Ordering::Acquire) && shared.outbox().is_empty() {
            break;
        }
    }
    let _ = wr.shutdown().await;
}

/// Answers `Timeout` to the calls whose deadline passed (see the module's comment).
async fn timer_loop(shared: Arc<Shared>, _fail: FailOnDrop) {
    let mut expired: Vec<Waiter> = Vec::new();
    while !shared.closed.load(Ordering::Acquire) {
        let next = {
            let mut pending = shared.pending();
            let now = Instant::now();
            if pending.next_expiry.is_some_and(|t| t <= now) {
                expired.extend(pending.calls.extract_if(|_, (_, expires)| *expires <= now).map(|(_, (tx, _))| tx));
                pending.next_expiry = pending.calls.values().map(|(_, expires)| *expires).min();
            }
            pending.next_expiry
        };
        for tx in expired.drain(..) {
            let _ = tx.send(Err(Error::Timeout));
        }
        match next {
            Some(t) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(t.into()) => {}
                    _ = shared.wake_timer.notified() => {}
                }
            }
            None => shared.wake_timer.notified().await,
        }
    }
}

async fn read_loop(mut rd: tokio::net::tcp::OwnedReadHalf, shared: Arc<Shared>, _fail: FailOnDrop) {
    let mut inbuf = BytesMut::with_capacity(READ_BUFFER_BYTES);
    let mut codec = FrameCodec::default();
    // The answers of one read, handed out after the waiting calls' lock is let go.
    let mut ready: Vec<(Waiter, Result<Reply, Error>)> = Vec::new();
    let why = 'conn: loop {
        if inbuf.capacity() - inbuf.len() < READ_ROOM_MIN_BYTES {
            inbuf.reserve(READ_BUFFER_BYTES);
        }
        match rd.read_buf(&mut inbuf).await {
            Ok(0) if inbuf.is_empty() => break "the server closed the connection".to_string(),
            Ok(0) => break "the server closed the connection in the middle of a frame".to_string(),
            Ok(_) => {}
            Err(e) => break format!("connection lost: {e}"),
        }
        // Every complete answer in the buffer, under one lock of the waiting calls.
        {
            let mut pending = shared.pending();
            loop {
                let body = match codec.decode(&mut inbuf) {
                    Ok(Some(body)) => body,
                    Ok(None) => break,
                    Err(e) => break 'conn format!("connection lost: {e}"),
                };
                match hot::decode_response(&body) {
                    // An answer nobody waits for any more (its call timed out) is dropped.
                    Ok(resp) => {
                        if let Some((tx, _)) = pending.calls.remove(&resp.id.0) {
                            ready.push((tx, resp.result));
                        }
                    }
                    Err(e) => break 'conn format!("undecodable response: {e}"),
                }
            }
        }
        for (tx, result) in ready.drain(..) {
            let _ = tx.send(result);
        }
    };
    for (tx, result) in ready.drain(..) {
        let _ = tx.send(result);
    }
    shared.fail_all(&why);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::encode_frame;
    use crate::key::Key;
    use crate::protocol::{Request, Response, Versioned};
    use crate::{NodeId, Version};
    use tokio::net::TcpListener;

    #[test]
    fn the_outbox_takes_requests_below_its_bound() {
        assert!(has_room(0));
        assert!(has_room(CONNECTION_QUEUED_BYTES_MAX - 1));
        assert!(!has_room(CONNECTION_QUEUED_BYTES_MAX));
    }

    /// Accepts one connection and answers its hello as a node.
    async fn accept_hello(listener: &TcpListener) -> tokio::net::TcpStream {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        read_frame(&mut s, &mut buf).await.unwrap();
        let info =
            ServerInfo { protocol_version: PROTOCOL_VERSION, server_id: NodeId::new("t").unwrap(), role: Role::Node };
        write_frame(&mut s, &HelloReply { result: Ok(info) }, &mut buf).await.unwrap();
        s
    }

    /// A server that answers every request read in one read, in reverse order (the last
    /// first), each get with its own key as the value; it records how many requests each
    /// read brought.
    async fn reversing_server(reads: Arc<Mutex<Vec<usize>>>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let mut s = accept_hello(&listener).await;
            let mut inbuf = BytesMut::with_capacity(1 << 20);
            let mut codec = FrameCodec::default();
            while s.read_buf(&mut inbuf).await.is_ok_and(|n| n > 0) {
                let mut reqs = Vec::new();
                while let Some(body) = codec.decode(&mut inbuf).unwrap() {
                    reqs.push(decode_body::<Request>(&body).unwrap());
                }
                reads.lock().unwrap().push(reqs.len());
                let mut out = Vec::new();
                for req in reqs.into_iter().rev() {
                    let Op::Get { key } = req.op else { panic!("only gets") };
                    let value = Some(Versioned {
                        value: key.as_bytes().to_vec(),
                        version: Version { seq: crate::Seq(1), index: 0 },
                    });
                    encode_frame(&Response { id: req.id, result: Ok(Reply::Value(value)) }, &mut out).unwrap();
                }
                s.write_all(&out).await.unwrap();
            }
        });
        addr
    }

    /// Requests issued together go out in one write, and answers that come back in another
    /// order reach their own callers.
    #[tokio::test]
    async fn concurrent_calls_share_one_write_and_get_their_own_answers() {
        let reads = Arc::default();
        let addr = reversing_server(Arc::clone(&reads)).await;
        let conn = Arc::new(Connection::connect(&addr, Role::Client, "t", None).await.unwrap());
        let mut calls = tokio::task::JoinSet::new();
        for i in 0..100 {
            let conn = conn.clone();
            calls.spawn(async move {
                let key = format!("k{i}");
                let got = conn.call(Op::Get { key: Key::from(key.as_str()) }, Duration::from_secs(10)).await;
                (key, got)
            });
        }
        while let Some(done) = calls.join_next().await {
            let (key, got) = done.unwrap();
            match got {
                Ok(Reply::Value(Some(v))) => assert_eq!(v.value, key.into_bytes()),
                other => panic!("{key}: {other:?}"),
            }
        }
        assert_eq!(*reads.lock().unwrap(), vec![100], "the 100 requests came in one write");
    }

    /// A server that takes the hello and then reads nothing: what a client sends piles up.
    async fn deaf_server() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let s = accept_hello(&listener).await;
            std::future::pending::<()>().await;
            drop(s);
        });
        addr
    }

    /// A call nobody answers gets `Timeout` at its deadline (from the timer task), and its
    /// entry is gone; a later call with an earlier deadline than every waiting one wakes the
    /// timer, so it is not held to the others' deadlines.
    #[tokio::test]
    async fn unanswered_calls_time_out_at_their_own_deadline() {
        let addr = deaf_server().await;
        let conn = Arc::new(Connection::connect(&addr, Role::Client, "t", None).await.unwrap());
        let get = || Op::Get { key: Key::from("k") };
        let long = tokio::spawn({
            let conn = conn.clone();
            async move { conn.call(get(), Duration::from_secs(3)).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = Instant::now();
        assert_eq!(conn.call(get(), Duration::from_millis(150)).await, Err(Error::Timeout));
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(150) && took < Duration::from_millis(1500), "{took:?}");
        assert_eq!(conn.shared.pending().calls.len(), 1, "only the long call waits");
        let started = Instant::now();
        assert_eq!(long.await.unwrap(), Err(Error::Timeout));
        assert!(started.elapsed() > Duration::from_millis(2000), "the long call kept its own deadline");
        assert!(conn.shared.pending().calls.is_empty());
        assert!(!conn.is_closed(), "a timeout does not close the connection");
        // Calls after the timer had nothing to wait for still time out.
        assert_eq!(conn.call(get(), Duration::from_millis(50)).await, Err(Error::Timeout));
    }

    /// A connection whose runtime shut down (its tasks dropped) fails its calls at once
    /// instead of leaving them to wait for an answer nobody will hand out.
    #[tokio::test]
    async fn a_connection_whose_runtime_stopped_fails_its_calls() {
        let addr = deaf_server().await;
        // On a thread of its own: this test's runtime keeps serving the deaf server meanwhile.
        let conn = tokio::task::spawn_blocking(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let conn = rt.block_on(Connection::connect(&addr, Role::Client, "t", None)).unwrap();
            drop(rt);
            conn
        })
        .await
        .unwrap();
        assert!(conn.is_closed());
        let got = tokio::time::timeout(
            Duration::from_secs(5),
            conn.call(Op::Get { key: Key::from("k") }, Duration::from_secs(60)),
        )
        .await
        .expect("answered at once");
        assert!(matches!(got, Err(Error::Unavailable { .. })), "{got:?}");
    }

    /// Once the socket takes nothing more, the outbox fills to its bound and a further
    /// call waits for room (here: until its deadline) instead of queueing without end.
    #[tokio::test]
    async fn a_full_outbox_makes_callers_wait() {
        let addr = deaf_server().await;
        let conn = Arc::new(Connection::connect(&addr, Role::Client, "t", None).await.unwrap());
        let value = vec![7u8; crate::limits::VALUE_BYTES_MAX];
        let mut fillers = tokio::task::JoinSet::new();
        for _ in 0..200 {
            let (conn, value) = (conn.clone(), value.clone());
            fillers.spawn(async move {
                let put = Op::Put { key: Key::from("k"), value, write_id: None };
                conn.call(put, Duration::from_secs(30)).await
            });
        }
        // Until the outbox stops being drained (the socket's buffers are full).
        let mut full = false;
        for _ in 0..500 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            if !has_room(conn.shared.outbox().len()) {
                full = true;
                break;
            }
        }
        assert!(full, "the outbox reached its bound");
        let queued = conn.shared.outbox().len();
        assert!(queued < CONNECTION_QUEUED_BYTES_MAX + crate::limits::VALUE_BYTES_MAX + 1024, "at most one frame over");
        let late =
            conn.call(Op::Put { key: Key::from("k"), value: vec![1], write_id: None }, Duration::from_millis(100));
        assert_eq!(late.await, Err(Error::Timeout), "no room: waits, then times out");
        assert_eq!(conn.shared.outbox().len(), queued, "nothing was queued for it");
        fillers.abort_all();
    }
}
