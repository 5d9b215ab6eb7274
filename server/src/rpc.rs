//! The RPC server of nodes and masters: MessagePack frames over TCP (see docs/protocol.md).
//!
//! What a server does with a request is its [`Service`]; this file owns the connection.
//!
//! Each connection is one task, which owns its socket and every request in flight on it:
//! - it reads into one buffer (pipelined frames arrive in one read syscall) and takes every
//!   complete frame in it before reading again;
//! - a request the service can answer at once ([`Service::try_now`]: a read from a range's
//!   published view) is answered there; a plain write is handed on ([`Service::start`])
//!   with a [`ConnReply`], and its answer comes back through the connection's queue of
//!   answers (`completions`: no future, channel or timer per request; its deadline is kept
//!   by one scan every `DEADLINE_SCAN`); another that waits (a push handed to its range)
//!   is polled by the connection task itself in a `FuturesUnordered`, with no task of its
//!   own ([`Service::runs_in_connection`]); the rare long ones (loads, merges,
//!   transactions) still get a task, so they run on any core and never hold up the
//!   connection's reads;
//! - every answer ready at that moment is encoded into one buffer and written with one
//!   write syscall, once nothing more is immediately ready; answers carry their request's
//!   id and go out in the order they complete;
//! - at most `CONNECTION_REQUESTS_IN_FLIGHT_MAX` requests are in flight: at the bound the
//!   connection takes no further frame (and reads nothing more) until one finishes, so a
//!   client that pipelines more waits in TCP's flow control.
//!
//! Bad input never stops the node: a frame over the limit, a truncated frame or bytes that
//! are not a request close that connection (with an error frame first where one can be sent
//! and a logged reason); a well-formed frame of the wrong shape gets an `Invalid` reply and
//! the connection goes on.

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::codec::Decoder;

use crate::completions::{ConnReply, Sink, Slots, Waiting};
use crate::metrics::Metrics;
use ampstore_common::error::Error;
use ampstore_common::frame::{FrameCodec, FrameError, decode_body, encode_frame};
use ampstore_common::ids::RequestId;
use ampstore_common::limits::CONNECTION_REQUESTS_IN_FLIGHT_MAX;
use ampstore_common::protocol::{Hello, HelloReply, Op, PROTOCOL_VERSION, Reply, Response, Role, ServerInfo};
use ampstore_common::wire::hot;

/// What [`Service::try_now`] did with a request.
pub enum Now {
    /// Answered at once.
    Answered(Result<Reply, Error>),
    /// Needs waiting: [`Service::handle`] answers it in a task of its own.
    Later(Op),
}

/// What a server does with requests.
pub trait Service: Send + Sync + 'static {
    /// Sent in the hello reply.
    fn server_info(&self) -> ServerInfo;

    /// Answers one request; called concurrently for pipelined requests.
    fn handle(self: &Arc<Self>, op: Op) -> impl Future<Output = Result<Reply, Error>> + Send;

    /// Answers `op` at once when that needs no waiting (nothing to send anywhere, no lock
    /// held long); otherwise gives it back, and it goes to [`Service::handle`] in a task of
    /// its own. Called in the connection's task, in request order.
    fn try_now(&self, op: Op) -> Now {
        Now::Later(op)
    }

    /// True when waiting for `op` (one that [`Service::try_now`] gave back) is cheap and
    /// short: handing a write to its range and waiting for the range's answer. Such a
    /// request is polled by the connection's task, with no task of its own; any other gets
    /// a task (it may run long or use CPU, which must not hold up the connection).
    fn runs_in_connection(&self, _op: &Op) -> bool {
        false
    }

    /// True when `op` (one that [`Service::try_now`] gave back) is handed on with
    /// [`Service::start`]: no future, no task; its answer comes back through the
    /// connection's queue of answers (`completions`). Checked before `runs_in_connection`.
    fn starts(&self, _op: &Op) -> bool {
        false
    }

    /// Hands on `op` (one [`Service::starts`] accepted); whoever finishes it sends its
    /// answer (or error) with `reply`, from any thread. Called in the connection's task, in
    /// request order. A `reply` dropped unsent answers `Timeout`.
    fn start(self: &Arc<Self>, op: Op, reply: ConnReply) {
        reply.send(Err(Error::internal(format!("{} cannot be handed on here", op.name()))));
    }

    /// The token a hello with role `Client` must present (app servers hold it). With neither
    /// token set, no hello is checked (development and tests); roles still limit operations.
    fn cluster_token(&self) -> Option<&str> {
        None
    }

    /// The token a hello with any other role must present (masters, nodes, collectors,
    /// operators; never handed to clients).
    fn admin_token(&self) -> Option<&str> {
        None
    }

    /// Where request counts and latencies go.
    fn metrics(&self) -> Option<&Metrics> {
        None
    }
}

/// Binds a TCP listener and returns it with the address it got (port 0 picks one).
pub async fn bind(addr: &str) -> Result<(TcpListener, String), Error> {
    let listener =
        TcpListener::bind(addr).await.map_err(|e| Error::unavailable(format!("cannot listen on {addr}: {e}")))?;
    let local = listener.local_addr().map_err(|e| Error::internal(e.to_string()))?.to_string();
    Ok((listener, local))
}

use ampstore_common::auth::same_secret;

/// The tokens a server checks hellos against.
#[derive(Clone, Copy, Debug, Default)]
struct Tokens<'a> {
    cluster: Option<&'a str>,
    admin: Option<&'a str>,
}

/// Whether a hello's token is the credential of its role: the cluster token for `Client`,
/// the admin token for every other role. A server with only a cluster token accepts no
/// other role (configuration requires both; this keeps a half-configured server closed).
fn check_hello_token(tokens: Tokens<'_>, role: Role, given: Option<&str>) -> Result<(), Error> {
    let (expected, which) = if role.needs_admin_token() {
        match (tokens.admin, tokens.cluster) {
            (None, Some(_)) => {
                return Err(Error::Unauthorized {
                    reason: format!("role {role} needs the admin token and this server has none"),
                });
            }
            (admin, _) => (admin, "admin token"),
        }
    } else {
        (tokens.cluster, "cluster token")
    };
    match (expected, given) {
        (None, _) => Ok(()),
        (Some(_), None) => Err(Error::Unauthorized { reason: format!("role {role} must present the {which}") }),
        (Some(e), Some(g)) if same_secret(e.as_bytes(), g.as_bytes()) => Ok(()),
        (Some(_), Some(_)) => Err(Error::Unauthorized { reason: format!("wrong {which} for role {role}") }),
    }
}

const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection's read buffer: pipelined requests of this size come in one read.
const READ_BUFFER_BYTES: usize = 64 * 1024;
/// Below this much free room the read buffer grows (or compacts) before the next read, so a
/// read syscall is never wasted on a few bytes.
const READ_ROOM_MIN_BYTES: usize = 4 * 1024;
/// Answers coalesced into one write stop growing past this many bytes (then they are written
/// and coalescing starts again).
const WRITE_COALESCE_BYTES: usize = 256 * 1024;
/// The write buffer is given back when a burst of large answers left it larger than this.
const WRITE_BUFFER_KEEP_BYTES: usize = 1024 * 1024;
/// How often a connection with requests handed on (`Service::start`) looks for ones past
/// their deadline: one timer per connection instead of one per request, so a deadline is
/// kept to within this much.
const DEADLINE_SCAN: Duration = Duration::from_millis(100);

/// Accepts connections until `shutdown` turns true.
pub async fn serve<S: Service>(listener: TcpListener, service: Arc<S>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tokio::spawn(connection(stream, peer, service.clone()));
                }
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => return,
        }
    }
}

/// Used to answer a request that does not decode but carries an id.
#[derive(Deserialize)]
struct IdOnly {
    id: RequestId,
}

async fn connection<S: Service>(mut stream: TcpStream, peer: SocketAddr, service: Arc<S>) {
    let _ = stream.set_nodelay(true);
    let mut inbuf = BytesMut::with_capacity(READ_BUFFER_BYTES);
    let mut scratch = Vec::with_capacity(4096);

    // Hello.
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, read_one_frame(&mut stream, &mut inbuf)).await {
        Err(_) => return tracing::debug!(%peer, "closing: no hello in time"),
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            tracing::warn!(%peer, error = %e, "closing: bad hello frame");
            return reject_hello(&mut stream, e.into(), &mut scratch).await;
        }
        Ok(Ok(Some(body))) => match decode_body::<Hello>(&body) {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "closing: first frame is not a hello");
                return reject_hello(&mut stream, e.into(), &mut scratch).await;
            }
        },
    };
    let tokens = Tokens { cluster: service.cluster_token(), admin: service.admin_token() };
    if let Err(e) = hello.validate().and_then(|()| check_hello_token(tokens, hello.role, hello.auth_token.as_deref())) {
        tracing::warn!(%peer, error = %e, "closing: hello refused");
        return reject_hello(&mut stream, e, &mut scratch).await;
    }
    // From here the role is proved (or, with no tokens configured, taken as declared).
    let role = hello.role;
    let info = service.server_info();
    debug_assert_eq!(info.protocol_version, PROTOCOL_VERSION);
    scratch.clear();
    if encode_frame(&HelloReply { result: Ok(info) }, &mut scratch).is_err()
        || stream.write_all(&scratch).await.is_err()
    {
        return;
    }
    // Frames the client sent right behind its hello are already in `inbuf`.
    serve_requests(&mut stream, inbuf, &peer.to_string(), role, &service).await;
}

/// Reads until one whole frame is in `inbuf` and takes it out. `None`: the stream ended
/// cleanly before a frame started.
async fn read_one_frame<T: AsyncRead + Unpin>(
    io: &mut T,
    inbuf: &mut BytesMut,
) -> Result<Option<BytesMut>, FrameError> {
    let mut codec = FrameCodec::default();
    loop {
        if let Some(body) = codec.decode(inbuf)? {
            return Ok(Some(body));
        }
        if io.read_buf(inbuf).await? == 0 {
            return codec.decode_eof(inbuf);
        }
    }
}

/// What a request in flight answers: its id, its operation (`Op::index`, for the metrics),
/// when it was read, and its result.
type Done = (RequestId, usize, Instant, Result<Reply, Error>);

/// Serves requests on one connection past its hello (see the module doc), until the peer
/// closes it (after answering what was taken), a write fails, or a frame ends it.
/// `inbuf` holds what was read behind the hello.
pub(crate) async fn serve_requests<S: Service, T: AsyncRead + AsyncWrite + Unpin>(
    io: &mut T,
    mut inbuf: BytesMut,
    peer: &str,
    role: Role,
    service: &Arc<S>,
) {
    let mut codec = FrameCodec::default();
    let mut out = Vec::with_capacity(READ_BUFFER_BYTES);
    let mut in_flight = FuturesUnordered::new();
    // Requests handed on (`Service::start`), and where their answers come back.
    let sink = Arc::new(Sink::default());
    let mut slots = Slots::default();
    let mut answers = Vec::new();
    let mut scan = Box::pin(tokio::time::sleep(DEADLINE_SCAN));
    // False once the peer closed its side or a frame ended the connection: what is in
    // flight is still answered, nothing more is taken.
    let mut taking = true;
    // A request in flight finished since the last write (its answer is in `out`).
    let mut finished = false;
    // The bound on requests in flight stopped the taking of frames (some may be read
    // already): once requests finish, take again before waiting for more input.
    let mut held_back;
    loop {
        // Every complete frame already read, up to the bound on requests in flight.
        while taking && in_flight.len() + slots.busy() < CONNECTION_REQUESTS_IN_FLIGHT_MAX {
            let body = match codec.decode(&mut inbuf) {
                Ok(Some(body)) => body,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "closing connection");
                    push_response(&Response { id: RequestId(0), result: Err(e.into()) }, &mut out);
                    taking = false;
                    break;
                }
            };
            match take_request(service, role, peer, &body) {
                Taken::Answered(id, result) => push_response(&Response { id, result }, &mut out),
                Taken::Later(id, op, deadline, started) => {
                    if service.starts(&op) {
                        let waiting =
                            Waiting { id, op_index: op.index(), started, deadline: deadline.map(|d| started + d) };
                        service.start(op, slots.hand_on(&sink, waiting));
                    } else {
                        let inline = service.runs_in_connection(&op);
                        in_flight.push(run(service, id, op, deadline, inline, started));
                    }
                }
                Taken::Close(resp) => {
                    push_response(&resp, &mut out);
                    taking = false;
                }
            }
            if out.len() >= WRITE_COALESCE_BYTES && !flush(io, &mut out).await {
                return;
            }
        }
        held_back = taking && in_flight.len() + slots.busy() >= CONNECTION_REQUESTS_IN_FLIGHT_MAX;
        // Every request that finished meanwhile (polled with this task's waker, so one that
        // finishes later wakes it).
        let mut yielded = false;
        loop {
            while let Poll::Ready(Some(done)) =
                std::future::poll_fn(|cx| Poll::Ready(in_flight.poll_next_unpin(cx))).await
            {
                answer(service.as_ref(), done, &mut out);
                finished = true;
                if out.len() >= WRITE_COALESCE_BYTES && !flush(io, &mut out).await {
                    return;
                }
            }
            if slots.busy() > 0 {
                sink.take(&mut answers);
                for (slot, generation, result) in answers.drain(..) {
                    if let Some(w) = slots.finish(slot, generation) {
                        answer(service.as_ref(), (w.id, w.op_index, w.started, result), &mut out);
                        finished = true;
                    }
                }
                if out.len() >= WRITE_COALESCE_BYTES && !flush(io, &mut out).await {
                    return;
                }
            }
            // Writes finish in bunches: a node's ranges whose log appends were answered
            // together (one store request) answer their waiters one range after the other,
            // from other threads. Let them run once before writing, so that their answers
            // to this connection share one write (and the peer's next requests one read):
            // one write per range's answer made 16 ranges on a node cost about twice the
            // CPU per durable put of one range (issue 16, docs/benchmarks.md).
            if yielded || !finished || (in_flight.is_empty() && slots.busy() == 0) {
                break;
            }
            yielded = true;
            tokio::task::yield_now().await;
        }
        finished = false;
        // Nothing more is ready now: everything answered goes out in one write.
        if !flush(io, &mut out).await {
            return;
        }
        if !taking && in_flight.is_empty() && slots.busy() == 0 {
            break;
        }
        // Wait for more input or for a request in flight to finish.
        let reading = taking && in_flight.len() + slots.busy() < CONNECTION_REQUESTS_IN_FLIGHT_MAX;
        if reading && held_back {
            // Frames the bound held back may be in `inbuf` already: no read would bring them.
            continue;
        }
        if reading && inbuf.capacity() - inbuf.len() < READ_ROOM_MIN_BYTES {
            inbuf.reserve(READ_BUFFER_BYTES);
        }
        tokio::select! {
            biased;
            Some(done) = in_flight.next(), if !in_flight.is_empty() => {
                answer(service.as_ref(), done, &mut out);
                finished = true;
            }
            // Answers of requests handed on: taken at the top of the loop.
            () = std::future::poll_fn(|cx| sink.poll_ready(cx)), if slots.busy() > 0 => {}
            () = &mut scan, if slots.any_deadline() => {
                for w in slots.overdue(Instant::now()) {
                    answer(service.as_ref(), (w.id, w.op_index, w.started, Err(Error::Timeout)), &mut out);
                    finished = true;
                }
                scan.as_mut().reset(tokio::time::Instant::now() + DEADLINE_SCAN);
            }
            read = io.read_buf(&mut inbuf), if reading => match read {
                Ok(0) => {
                    if !inbuf.is_empty() {
                        tracing::info!(%peer, bytes = inbuf.len(), "closing connection: it ended in the middle of a frame");
                    }
                    taking = false;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::info!(%peer, error = %e, "closing connection");
                    return;
                }
            },
            else => break,
        }
    }
    let _ = io.shutdown().await;
}

/// What became of one frame.
enum Taken {
    /// Answered at once (or refused).
    Answered(RequestId, Result<Reply, Error>),
    /// To be answered when it finishes, within its deadline (and when it was read).
    Later(RequestId, Op, Option<Duration>, Instant),
    /// The frame is not a request: answer this and close the connection.
    Close(Response),
}

fn take_request<S: Service>(service: &Arc<S>, role: Role, peer: &str, body: &[u8]) -> Taken {
    let started = Instant::now();
    // The hot requests (get, put, delete) by hand, the rest through serde: same results.
    let req = match hot::decode_request(body) {
        Ok(r) => r,
        Err(e) => {
            return match decode_body::<IdOnly>(body) {
                Ok(IdOnly { id }) => {
                    tracing::debug!(%peer, error = %e, "request of the wrong shape");
                    Taken::Answered(id, Err(e.into()))
                }
                Err(_) => {
                    tracing::warn!(%peer, error = %e, "closing: frame is not a request");
                    Taken::Close(Response { id: RequestId(0), result: Err(e.into()) })
                }
            };
        }
    };
    let op_index = req.op.index();
    // Refused for the role, or answered at once: nothing in flight.
    let now = match req.op.allowed_for(role) {
        Err(e) => {
            tracing::info!(%peer, %role, op = req.op.name(), "refused: operation not allowed for the role");
            Now::Answered(Err(e))
        }
        Ok(()) => service.try_now(req.op),
    };
    match now {
        Now::Answered(result) => {
            observe(service.as_ref(), op_index, &result, started);
            Taken::Answered(req.id, result)
        }
        Now::Later(op) => Taken::Later(req.id, op, req.deadline_ms.map(|ms| Duration::from_millis(ms.into())), started),
    }
}

/// Answers one request that had to wait: in the connection's task (`inline`), or in a task
/// of its own.
async fn run<S: Service>(
    service: &Arc<S>,
    id: RequestId,
    op: Op,
    deadline: Option<Duration>,
    inline: bool,
    started: Instant,
) -> Done {
    let op_index = op.index();
    let result = if inline {
        // Boxed: the handler's future (every op's path) is large, and this future is moved
        // into `FuturesUnordered` and polled from there: unboxed, those moves copied it
        // (about 1,200 instructions of memcpy a request, callgrind).
        within(deadline, Box::pin(service.handle(op))).await
    } else {
        let service = service.clone();
        tokio::spawn(async move { within(deadline, service.handle(op)).await })
            .await
            .unwrap_or_else(|e| Err(Error::internal(format!("the request's task failed: {e}"))))
    };
    (id, op_index, started, result)
}

/// `work`'s result, or `Timeout` once the caller's deadline passed (it has stopped waiting).
async fn within(deadline: Option<Duration>, work: impl Future<Output = Result<Reply, Error>>) -> Result<Reply, Error> {
    match deadline {
        Some(d) => tokio::time::timeout(d, work).await.unwrap_or(Err(Error::Timeout)),
        None => work.await,
    }
}

fn answer<S: Service>(service: &S, (id, op_index, started, result): Done, out: &mut Vec<u8>) {
    observe(service, op_index, &result, started);
    push_response(&Response { id, result }, out);
}

/// Writes what `out` holds (one syscall when the socket takes it all) and empties it;
/// false when the connection is gone.
async fn flush<T: AsyncWrite + Unpin>(io: &mut T, out: &mut Vec<u8>) -> bool {
    if out.is_empty() {
        return true;
    }
    let ok = io.write_all(out).await.is_ok();
    out.clear();
    if out.capacity() > WRITE_BUFFER_KEEP_BYTES {
        out.shrink_to(READ_BUFFER_BYTES);
    }
    ok
}

/// Counts a request and its latency in the service's metrics.
fn observe<S: Service>(service: &S, op: usize, result: &Result<Reply, Error>, started: Instant) {
    if let Some(m) = service.metrics() {
        m.observe_request(op, result.as_ref().err().map(Error::code), started.elapsed());
    }
}

async fn reject_hello<T: AsyncWrite + Unpin>(wr: &mut T, err: Error, scratch: &mut Vec<u8>) {
    scratch.clear();
    if encode_frame(&HelloReply { result: Err(err) }, scratch).is_ok() {
        let _ = wr.write_all(scratch).await;
    }
    let _ = wr.shutdown().await;
}

fn push_response(resp: &Response, buf: &mut Vec<u8>) {
    // The hot replies (value, written, deleted) by hand, the rest through serde: same bytes.
    if let Err(e) = hot::encode_response(resp, buf) {
        // Too large to send (or unencodable): tell the caller instead.
        let fallback = Response { id: resp.id, result: Err(Error::from(e)) };
        let _ = encode_frame(&fallback, buf);
    }
}

#[cfg(test)]
#[path = "rpc_tests.rs"]
mod rpc_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked_only_when_configured() {
        let none = Tokens::default();
        for role in [Role::Client, Role::Node, Role::Admin] {
            assert!(check_hello_token(none, role, None).is_ok());
            assert!(check_hello_token(none, role, Some("x")).is_ok());
        }
        let cluster_only = Tokens { cluster: Some("s3cret"), admin: None };
        assert!(check_hello_token(cluster_only, Role::Client, Some("s3cret")).is_ok());
        let unauthorized = |r: Result<(), Error>| matches!(r, Err(Error::Unauthorized { .. }));
        assert!(unauthorized(check_hello_token(cluster_only, Role::Client, None)));
        assert!(unauthorized(check_hello_token(cluster_only, Role::Client, Some("s3creT"))));
        assert!(unauthorized(check_hello_token(cluster_only, Role::Client, Some("s3cret2"))));
        // No admin token: no internal role gets in, whatever it presents.
        assert!(unauthorized(check_hello_token(cluster_only, Role::Master, Some("s3cret"))));
        assert!(unauthorized(check_hello_token(cluster_only, Role::Admin, None)));
    }

    /// The role must match the credential: the cluster token never opens an internal role,
    /// and the admin token is not a client's credential.
    #[test]
    fn the_role_must_match_its_credential() {
        let both = Tokens { cluster: Some("app"), admin: Some("ops") };
        let unauthorized = |r: Result<(), Error>| matches!(r, Err(Error::Unauthorized { .. }));
        assert!(check_hello_token(both, Role::Client, Some("app")).is_ok());
        assert!(unauthorized(check_hello_token(both, Role::Client, Some("ops"))));
        assert!(unauthorized(check_hello_token(both, Role::Client, None)));
        for role in [Role::Master, Role::Node, Role::Collector, Role::Admin] {
            assert!(check_hello_token(both, role, Some("ops")).is_ok(), "{role}");
            assert!(unauthorized(check_hello_token(both, role, Some("app"))), "{role} with the cluster token");
            assert!(unauthorized(check_hello_token(both, role, None)), "{role} without a token");
        }
        // Only an admin token: data connections are open, internal roles are not.
        let admin_only = Tokens { cluster: None, admin: Some("ops") };
        assert!(check_hello_token(admin_only, Role::Client, None).is_ok());
        assert!(unauthorized(check_hello_token(admin_only, Role::Node, None)));
        assert!(check_hello_token(admin_only, Role::Node, Some("ops")).is_ok());
    }
}
