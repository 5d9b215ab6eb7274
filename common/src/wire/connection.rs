//! One multiplexed connection to a node or master: requests are pipelined, each tagged with
//! a request id, and answers are matched to callers as they arrive in any order.
//!
//! A writer task coalesces queued requests into one socket write; a reader task hands each
//! response to the caller waiting on its id. When the connection fails, every waiting call
//! gets `Unavailable` and the connection reports itself closed, so its owner reconnects.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::Error;
use crate::frame::{decode_body, encode_frame, read_frame, write_frame};
use crate::ids::RequestId;
use crate::limits::CONNECTION_REQUESTS_IN_FLIGHT_MAX;
use crate::protocol::{Hello, HelloReply, Op, PROTOCOL_VERSION, Reply, RequestRef, Response, Role, ServerInfo};
use crate::wire::Call;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

/// How long connecting and the hello exchange may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Requests coalesced into one write stop growing past this many bytes.
const WRITE_COALESCE_BYTES: usize = 256 * 1024;
/// The first allocation for an encoded request (most requests fit).
const FRAME_CAPACITY_FIRST: usize = 256;
/// A connection's read buffer.
const READ_BUFFER_BYTES: usize = 64 * 1024;

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Reply, Error>>>>>;

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
    /// Encoded request frames, for the writer task.
    requests: mpsc::Sender<Vec<u8>>,
    pending: Pending,
    next_id: AtomicU64,
    closed: Arc<AtomicBool>,
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
        if !read_frame(&mut stream, &mut buf).await.map_err(|e| unavailable(&e))? {
            return Err(unavailable(&"closed the connection during the hello"));
        }
        let server = decode_body::<HelloReply>(&buf).map_err(|e| unavailable(&e))?.result?;
        let (rd, wr) = stream.into_split();
        let pending: Pending = Arc::default();
        let closed = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel(CONNECTION_REQUESTS_IN_FLIGHT_MAX);
        tokio::spawn(write_loop(wr, rx, pending.clone(), closed.clone()));
        tokio::spawn(read_loop(rd, pending.clone(), closed.clone()));
        Ok(Connection { addr: addr.to_string(), server, requests: tx, pending, next_id: AtomicU64::new(1), closed })
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
        self.closed.load(Ordering::Acquire)
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
            return Err(Error::unavailable(format!("{}: connection closed", self.addr)));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let deadline_ms = u32::try_from(deadline.as_millis()).unwrap_or(u32::MAX);
        // Encoded here, from the borrowed op: too large or unencodable is the caller's error,
        // and nothing was sent.
        let mut frame = Vec::with_capacity(FRAME_CAPACITY_FIRST);
        encode_frame(&RequestRef { id: RequestId(id), deadline_ms: Some(deadline_ms), op }, &mut frame)?;
        let (tx, rx) = oneshot::channel();
        self.lock_pending().insert(id, tx);
        // Most of the time the writer's queue has room: no timer for the send then.
        let sent = match self.requests.try_send(frame) {
            Ok(()) => Ok(Ok(())),
            Err(mpsc::error::TrySendError::Full(frame)) => {
                tokio::time::timeout(deadline, self.requests.send(frame)).await.map(|r| r.map_err(|_| ()))
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Ok(Err(())),
        };
        if !matches!(sent, Ok(Ok(()))) {
            self.lock_pending().remove(&id);
            return Err(if sent.is_err() {
                Error::Timeout
            } else {
                Error::unavailable(format!("{}: connection closed", self.addr))
            });
        }
        match tokio::time::timeout(deadline, rx).await {
            Ok(Ok(Err(Error::Unavailable { .. }))) if once && self.is_closed() => Err(Error::Timeout),
            Ok(Ok(result)) => result,
            Ok(Err(_)) if once => Err(Error::Timeout),
            Ok(Err(_)) => Err(Error::unavailable(format!("{}: connection closed", self.addr))),
            Err(_) => {
                self.lock_pending().remove(&id);
                Err(Error::Timeout)
            }
        }
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<Result<Reply, Error>>>> {
        lock(&self.pending)
    }
}

fn lock(pending: &Pending) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<Result<Reply, Error>>>> {
    // The map holds no invariant a panicking holder could break: keep going.
    pending.lock().unwrap_or_else(|p| p.into_inner())
}

/// Fails every waiting call: the connection is gone.
fn fail_all(pending: &Pending, closed: &AtomicBool, why: &str) {
    closed.store(true, Ordering::Release);
    for (_, tx) in lock(pending).drain() {
        let _ = tx.send(Err(Error::unavailable(why.to_string())));
    }
}

async fn write_loop(
    mut wr: tokio::net::tcp::OwnedWriteHalf,
    mut rx: mpsc::Receiver<Vec<u8>>,
    pending: Pending,
    closed: Arc<AtomicBool>,
) {
    let mut buf = Vec::with_capacity(64 * 1024);
    while let Some(first) = rx.recv().await {
        buf.clear();
        let mut next = Some(first);
        while let Some(frame) = next.take() {
            buf.extend_from_slice(&frame);
            if buf.len() < WRITE_COALESCE_BYTES {
                next = rx.try_recv().ok();
            }
        }
        if let Err(e) = wr.write_all(&buf).await {
            fail_all(&pending, &closed, &format!("connection lost while sending: {e}"));
            return;
        }
    }
    let _ = wr.shutdown().await;
}

async fn read_loop(rd: tokio::net::tcp::OwnedReadHalf, pending: Pending, closed: Arc<AtomicBool>) {
    // Buffered: the answers to pipelined requests come in one read syscall, not two each.
    let mut rd = tokio::io::BufReader::with_capacity(READ_BUFFER_BYTES, rd);
    let mut body = Vec::with_capacity(64 * 1024);
    let why = loop {
        match read_frame(&mut rd, &mut body).await {
            Ok(true) => {}
            Ok(false) => break "the server closed the connection".to_string(),
            Err(e) => break format!("connection lost: {e}"),
        }
        match decode_body::<Response>(&body) {
            Ok(resp) => {
                if let Some(tx) = lock(&pending).remove(&resp.id.0) {
                    let _ = tx.send(resp.result);
                }
            }
            Err(e) => break format!("undecodable response: {e}"),
        }
    };
    fail_all(&pending, &closed, &why);
}
