//! The RPC server of nodes and masters: MessagePack frames over TCP (see docs/protocol.md).
//!
//! What a server does with a request is its [`Service`]; this file owns the connection.
//!
//! Each connection: a hello, then requests read through a buffer (pipelined frames arrive
//! in one read syscall) and handled concurrently (at most `CONNECTION_REQUESTS_IN_FLIGHT_MAX`
//! at once), with responses written by one writer task that coalesces whatever is ready
//! into one write. A request the service can answer at once ([`Service::try_now`]: a read
//! from a range's published view) is answered in the connection's task, with no task of
//! its own. Bad input never stops the node: a frame
//! over the limit, a truncated frame or bytes that are not a request close that connection
//! (with an error frame first where one can be sent and a logged reason); a well-formed
//! frame of the wrong shape gets an `Invalid` reply and the connection goes on.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};

use crate::metrics::Metrics;
use ampstore_common::error::Error;
use ampstore_common::frame::{FrameError, decode_body, encode_frame, read_frame};
use ampstore_common::ids::RequestId;
use ampstore_common::limits::CONNECTION_REQUESTS_IN_FLIGHT_MAX;
use ampstore_common::protocol::{Hello, HelloReply, Op, PROTOCOL_VERSION, Reply, Request, Response, Role, ServerInfo};

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
/// Responses coalesced into one write stop growing past this many bytes.
const WRITE_COALESCE_BYTES: usize = 256 * 1024;

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

async fn connection<S: Service>(stream: TcpStream, peer: SocketAddr, service: Arc<S>) {
    let _ = stream.set_nodelay(true);
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::with_capacity(READ_BUFFER_BYTES, rd);
    let mut body = Vec::with_capacity(4096);
    let mut scratch = Vec::with_capacity(4096);

    // Hello.
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, read_frame(&mut rd, &mut body)).await {
        Err(_) => return tracing::debug!(%peer, "closing: no hello in time"),
        Ok(Ok(false)) => return,
        Ok(Err(e)) => {
            tracing::warn!(%peer, error = %e, "closing: bad hello frame");
            return reject_hello(&mut wr, e.into(), &mut scratch).await;
        }
        Ok(Ok(true)) => match decode_body::<Hello>(&body) {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "closing: first frame is not a hello");
                return reject_hello(&mut wr, e.into(), &mut scratch).await;
            }
        },
    };
    let tokens = Tokens { cluster: service.cluster_token(), admin: service.admin_token() };
    if let Err(e) = hello.validate().and_then(|()| check_hello_token(tokens, hello.role, hello.auth_token.as_deref())) {
        tracing::warn!(%peer, error = %e, "closing: hello refused");
        return reject_hello(&mut wr, e, &mut scratch).await;
    }
    // From here the role is proved (or, with no tokens configured, taken as declared).
    let role = hello.role;
    let info = service.server_info();
    debug_assert_eq!(info.protocol_version, PROTOCOL_VERSION);
    scratch.clear();
    if encode_frame(&HelloReply { result: Ok(info) }, &mut scratch).is_err() || wr.write_all(&scratch).await.is_err() {
        return;
    }

    let (tx, rx) = mpsc::channel::<Response>(CONNECTION_REQUESTS_IN_FLIGHT_MAX);
    let writer = tokio::spawn(write_loop(wr, rx));
    let permits = Arc::new(Semaphore::new(CONNECTION_REQUESTS_IN_FLIGHT_MAX));
    loop {
        match read_frame(&mut rd, &mut body).await {
            Ok(true) => {}
            Ok(false) => break,
            Err(e @ FrameError::TooLarge { .. }) => {
                tracing::warn!(%peer, error = %e, "closing connection");
                let _ = tx.send(Response { id: RequestId(0), result: Err(e.into()) }).await;
                break;
            }
            Err(e) => {
                tracing::info!(%peer, error = %e, "closing connection");
                break;
            }
        }
        let req = match decode_body::<Request>(&body) {
            Ok(r) => r,
            Err(e) => match decode_body::<IdOnly>(&body) {
                Ok(IdOnly { id }) => {
                    tracing::debug!(%peer, error = %e, "request of the wrong shape");
                    let _ = tx.send(Response { id, result: Err(e.into()) }).await;
                    continue;
                }
                Err(_) => {
                    tracing::warn!(%peer, error = %e, "closing: frame is not a request");
                    let _ = tx.send(Response { id: RequestId(0), result: Err(e.into()) }).await;
                    break;
                }
            },
        };
        let started = std::time::Instant::now();
        let op_name = req.op.name();
        let op_index = req.op.index();
        // Refused for the role, or answered at once: no task of its own.
        let now = match req.op.allowed_for(role) {
            Err(e) => {
                tracing::info!(%peer, %role, op = op_name, "refused: operation not allowed for the role");
                Now::Answered(Err(e))
            }
            Ok(()) => service.try_now(req.op),
        };
        let op = match now {
            Now::Answered(result) => {
                observe(service.as_ref(), op_index, &result, started);
                if tx.send(Response { id: req.id, result }).await.is_err() {
                    break;
                }
                continue;
            }
            Now::Later(op) => op,
        };
        let Ok(permit) = permits.clone().acquire_owned().await else { break };
        let (service, tx) = (service.clone(), tx.clone());
        tokio::spawn(async move {
            let work = service.handle(op);
            let result = match req.deadline_ms {
                Some(ms) => {
                    tokio::time::timeout(Duration::from_millis(ms.into()), work).await.unwrap_or(Err(Error::Timeout))
                }
                None => work.await,
            };
            observe(service.as_ref(), op_index, &result, started);
            let _ = tx.send(Response { id: req.id, result }).await;
            drop(permit);
        });
    }
    drop(tx);
    let _ = writer.await;
}

/// Counts a request and its latency in the service's metrics.
fn observe<S: Service>(service: &S, op: usize, result: &Result<Reply, Error>, started: std::time::Instant) {
    if let Some(m) = service.metrics() {
        m.observe_request(op, result.as_ref().err().map(Error::code), started.elapsed());
    }
}

async fn reject_hello(wr: &mut OwnedWriteHalf, err: Error, scratch: &mut Vec<u8>) {
    scratch.clear();
    if encode_frame(&HelloReply { result: Err(err) }, scratch).is_ok() {
        let _ = wr.write_all(scratch).await;
    }
    let _ = wr.shutdown().await;
}

async fn write_loop(mut wr: OwnedWriteHalf, mut rx: mpsc::Receiver<Response>) {
    let mut buf = Vec::with_capacity(64 * 1024);
    while let Some(first) = rx.recv().await {
        buf.clear();
        push_response(&first, &mut buf);
        while buf.len() < WRITE_COALESCE_BYTES {
            match rx.try_recv() {
                Ok(more) => push_response(&more, &mut buf),
                Err(_) => break,
            }
        }
        if wr.write_all(&buf).await.is_err() {
            return;
        }
    }
    let _ = wr.shutdown().await;
}

fn push_response(resp: &Response, buf: &mut Vec<u8>) {
    if let Err(e) = encode_frame(resp, buf) {
        // Too large to send (or unencodable): tell the caller instead.
        let fallback = Response { id: resp.id, result: Err(Error::from(e)) };
        let _ = encode_frame(&fallback, buf);
    }
}

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
