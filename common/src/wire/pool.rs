//! One pool of connections by address, shared by everything a process calls: the client's
//! nodes and masters, a node's transaction peers and its master, the master's nodes.
//!
//! Every connection of a pool declares the same role, name and credential (given when the
//! pool is made). A connection that closed is replaced by a new one on the next call; the
//! pool never holds more than `POOL_CONNECTIONS_MAX` of them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::error::Error;
use crate::limits::POOL_CONNECTIONS_MAX;
use crate::wire::Call;
use crate::wire::connection::Connection;
use crate::wire::protocol::{Op, Reply, Role};

/// Connections by address (`host:port`), opened on first use and reopened when closed.
///
/// ```no_run
/// # async fn demo() -> Result<(), ampstore_common::Error> {
/// use ampstore_common::protocol::Role;
/// use ampstore_common::wire::{data::Ping, pool::Pool};
/// let pool = Pool::new(Role::Client, "my-app", None);
/// pool.call_typed("127.0.0.1:7300", Ping, std::time::Duration::from_secs(1)).await?;
/// # Ok(()) }
/// ```
pub struct Pool {
    role: Role,
    name: String,
    token: Option<String>,
    max: usize,
    conns: Mutex<Conns>,
}

/// Hashed with foldhash (seeded per process): SipHash on the address cost about 400
/// instructions a call, half of finding the connection.
type Conns = HashMap<String, Arc<Connection>, foldhash::fast::RandomState>;

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("role", &self.role).field("name", &self.name).field("len", &self.len()).finish()
    }
}

impl Pool {
    /// A pool whose connections declare `role` under `name` with `token` (the cluster
    /// token for `Client`, the admin token for the cluster's own roles).
    pub fn new(role: Role, name: impl Into<String>, token: Option<String>) -> Pool {
        Pool::with_max(role, name, token, POOL_CONNECTIONS_MAX)
    }

    fn with_max(role: Role, name: impl Into<String>, token: Option<String>, max: usize) -> Pool {
        Pool { role, name: name.into(), token, max: max.max(1), conns: Mutex::default() }
    }

    /// The role every connection of this pool declares.
    pub fn role(&self) -> Role {
        self.role
    }

    /// How many connections the pool holds (closed ones included until replaced).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The open connection to `addr`, or a new one.
    pub async fn get(&self, addr: &str) -> Result<Arc<Connection>, Error> {
        if let Some(c) = self.lock().get(addr)
            && !c.is_closed()
        {
            return Ok(c.clone());
        }
        let conn = Arc::new(Connection::connect(addr, self.role, &self.name, self.token.clone()).await?);
        let mut conns = self.lock();
        if !conns.contains_key(addr) && conns.len() >= self.max {
            conns.retain(|_, c| !c.is_closed());
            if conns.len() >= self.max
                && let Some(victim) = conns.keys().next().cloned()
            {
                // Its callers keep their `Arc`; the next call to it connects again.
                conns.remove(&victim);
            }
        }
        conns.insert(addr.to_string(), conn.clone());
        Ok(conn)
    }

    /// Drops the connection to `addr` (the next call connects again).
    pub fn forget(&self, addr: &str) {
        self.lock().remove(addr);
    }

    /// Sends `op` to `addr` (see [`Connection::call`]).
    pub async fn call(&self, addr: &str, op: Op, deadline: Duration) -> Result<Reply, Error> {
        self.get(addr).await?.call(op, deadline).await
    }

    /// [`Pool::call`] without taking `op` (for retry loops: no copy of it per attempt).
    pub async fn call_ref(&self, addr: &str, op: &Op, deadline: Duration) -> Result<Reply, Error> {
        self.get(addr).await?.call_ref(op, deadline).await
    }

    /// Sends a typed request to `addr` (see [`Connection::call_typed`]).
    pub async fn call_typed<C: Call>(&self, addr: &str, req: C, deadline: Duration) -> Result<C::Reply, Error> {
        self.get(addr).await?.call_typed(req, deadline).await
    }

    fn lock(&self) -> MutexGuard<'_, Conns> {
        // The map holds no invariant a panicking holder could break: keep going.
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A minimal server for the wire's own tests: answers the hello, then every request with
/// `answer(server index, op)`.
#[cfg(test)]
pub(crate) mod test_server {
    use std::sync::Arc;

    use crate::error::Error;
    use crate::frame::{decode_body, read_frame, write_frame};
    use crate::ids::NodeId;
    use crate::wire::protocol::{Hello, HelloReply, Op, PROTOCOL_VERSION, Reply, Request, Response, ServerInfo};

    pub type Answer = Arc<dyn Fn(&Op) -> Result<Reply, Error> + Send + Sync>;

    /// Listens on a free local port; answers with `answer`. Returns the address.
    pub async fn spawn(answer: Answer) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, answer.clone()));
            }
        });
        addr
    }

    async fn serve(mut stream: tokio::net::TcpStream, answer: Answer) {
        let mut buf = Vec::new();
        let mut out = Vec::new();
        if !matches!(read_frame(&mut stream, &mut buf).await, Ok(true)) {
            return;
        }
        let Ok(hello) = decode_body::<Hello>(&buf) else { return };
        let info = ServerInfo {
            protocol_version: PROTOCOL_VERSION,
            server_id: NodeId::new("test").expect("id"),
            role: hello.role,
        };
        if write_frame(&mut stream, &HelloReply { result: Ok(info) }, &mut out).await.is_err() {
            return;
        }
        while let Ok(true) = read_frame(&mut stream, &mut buf).await {
            let Ok(req) = decode_body::<Request>(&buf) else { return };
            let resp = Response { id: req.id, result: answer(&req.op) };
            if write_frame(&mut stream, &resp, &mut out).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::data::Ping;

    fn pong() -> test_server::Answer {
        Arc::new(|_| Ok(Reply::Pong))
    }

    #[tokio::test]
    async fn one_connection_per_address_reused_until_closed() {
        let addr = test_server::spawn(pong()).await;
        let pool = Pool::new(Role::Node, "test", None);
        let a = pool.get(&addr).await.unwrap();
        let b = pool.get(&addr).await.unwrap();
        assert!(Arc::ptr_eq(&a, &b), "the same connection is shared");
        pool.call_typed(&addr, Ping, Duration::from_secs(5)).await.unwrap();
        assert_eq!(pool.len(), 1);
        assert_eq!(a.server().role, Role::Node, "the pool's role is declared");
        pool.forget(&addr);
        let c = pool.get(&addr).await.unwrap();
        assert!(!Arc::ptr_eq(&a, &c), "a forgotten address connects again");
    }

    #[tokio::test]
    async fn a_closed_connection_is_replaced() {
        // A server that closes every connection once it has answered the hello.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut buf = Vec::new();
                let _ = crate::frame::read_frame(&mut stream, &mut buf).await;
                let info = crate::protocol::ServerInfo {
                    protocol_version: crate::protocol::PROTOCOL_VERSION,
                    server_id: crate::NodeId::new("t").unwrap(),
                    role: Role::Node,
                };
                let hello = crate::protocol::HelloReply { result: Ok(info) };
                let _ = crate::frame::write_frame(&mut stream, &hello, &mut buf).await;
            }
        });
        let pool = Pool::new(Role::Client, "test", None);
        let first = pool.get(&addr).await.unwrap();
        for _ in 0..100 {
            if first.is_closed() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(first.is_closed());
        let second = pool.get(&addr).await.unwrap();
        assert!(!Arc::ptr_eq(&first, &second), "a closed connection is not handed out");
    }

    #[tokio::test]
    async fn the_pool_holds_at_most_its_bound() {
        let mut addrs = Vec::new();
        for _ in 0..3 {
            addrs.push(test_server::spawn(pong()).await);
        }
        let pool = Pool::with_max(Role::Client, "test", None, 2);
        pool.get(&addrs[0]).await.unwrap();
        pool.get(&addrs[1]).await.unwrap();
        assert_eq!(pool.len(), 2, "at the bound");
        pool.get(&addrs[2]).await.unwrap();
        assert_eq!(pool.len(), 2, "one past the bound evicts one");
        assert!(pool.lock().contains_key(&addrs[2]), "the new connection is kept");
        pool.get(&addrs[2]).await.unwrap();
        assert_eq!(pool.len(), 2, "reusing an address evicts nothing");
    }

    #[test]
    fn the_bound_is_named_and_positive() {
        let pool = Pool::new(Role::Client, "test", None);
        assert_eq!(pool.max, POOL_CONNECTIONS_MAX);
        assert_eq!(Pool::with_max(Role::Client, "t", None, 0).max, 1, "a zero bound still holds one");
    }
}
