//! The client side: [`CommitLog`] and [`MetaStore`] over connections to the store process.
//!
//! One call uses one connection at a time (request, then answer); concurrent calls take
//! other connections from a pool of at most `STORE_CLIENT_CONNECTIONS_MAX`. Every call has
//! a deadline (`STORE_CALL_DEADLINE_MS`); a call that passes it, or whose connection
//! breaks, is `Unavailable`, which callers already treat as "may or may not have happened"
//! (the same as a DynamoDB timeout).
//!
//! Appends do not take a connection each: they queue in [`AppendQueue`], and the appends
//! queued together go in one `AppendEach` request (see the module above for why). At most
//! `STORE_APPEND_EACH_IN_FLIGHT_MAX` such requests are in flight; appends that come while
//! they are wait for the next one, so the more ranges append at once the more slots each
//! request carries, with no timer. Each slot's outcome is its own: a slot taken by a fence
//! fails only its own range's append. A queued append waits for at most the requests out
//! before it (each bounded by the call deadline) and then its own: a store that stops
//! answering costs it a few deadlines, never forever
//! (`append_requests_in_flight_stop_at_the_bound`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use tokio::sync::oneshot;

use super::{STORE_PROTOCOL_VERSION, StoreHello, StoreReply, StoreRequest, StoreResponse};
use crate::{AppendSlot, CommitLog, Expect, LogEntry, MetaItem, MetaOp, MetaStore, StoreError, StoreResult, validate};
use ampstore_common::frame::{decode_body, read_frame, write_frame};
use ampstore_common::ids::{RangeId, Seq};
use ampstore_common::limits::{
    META_QUERY_ITEMS_MAX, STORE_APPEND_EACH_BYTES_MAX, STORE_APPEND_EACH_IN_FLIGHT_MAX, STORE_APPEND_EACH_SLOTS_MAX,
    STORE_CALL_DEADLINE_MS, STORE_CLIENT_CONNECTIONS_MAX, STORE_CONN_BUFFER_BYTES_KEPT,
};

/// The commit log and meta store of a store process at one address.
#[derive(Clone)]
pub struct RemoteStore {
    inner: Arc<Inner>,
}

struct Inner {
    addr: String,
    auth_token: Option<String>,
    idle: Mutex<Vec<Conn>>,
    permits: Semaphore,
    deadline: Duration,
    appends: Mutex<AppendQueue>,
    /// Where the append senders run: the runtime the client was made in, when there was one.
    runtime: Option<tokio::runtime::Handle>,
}

/// One append waiting for its `AppendEach`.
struct QueuedAppend {
    slot: AppendSlot,
    reply: oneshot::Sender<StoreResult<()>>,
}

/// The appends waiting to be sent, and how many `AppendEach` requests are out.
#[derive(Default)]
struct AppendQueue {
    waiting: Vec<QueuedAppend>,
    sending: usize,
}

impl AppendQueue {
    /// Takes the longest prefix of the waiting appends that fits one request (at least one).
    fn take_batch(&mut self) -> Vec<QueuedAppend> {
        let mut bytes = 0usize;
        let mut n = 0;
        for q in &self.waiting {
            let size = q.slot.entry.payload.len();
            if n > 0 && (n == STORE_APPEND_EACH_SLOTS_MAX || bytes + size > STORE_APPEND_EACH_BYTES_MAX) {
                break;
            }
            bytes += size;
            n += 1;
        }
        let rest = self.waiting.split_off(n);
        std::mem::replace(&mut self.waiting, rest)
    }

    /// Queues `append`; true when fewer than the most senders are out: the caller starts
    /// one (counted in `sending` now). The sender takes its batch when it first runs, not
    /// here, so that the appends queued until then go with it.
    fn push(&mut self, append: QueuedAppend) -> bool {
        self.waiting.push(append);
        let start = self.sending < STORE_APPEND_EACH_IN_FLIGHT_MAX;
        if start {
            self.sending += 1;
        }
        start
    }

    /// The next batch for a sender, or `None` (and one sender fewer) when nothing waits.
    fn next(&mut self) -> Option<Vec<QueuedAppend>> {
        if self.waiting.is_empty() {
            self.sending -= 1;
            None
        } else {
            Some(self.take_batch())
        }
    }
}

/// Counts one sender out of the append queue even when its task is dropped (the runtime it
/// was spawned on stopped): when it was the last sender the waiting appends are failed
/// then, so that none waits forever.
struct Sending {
    inner: Arc<Inner>,
    /// Set once `AppendQueue::next` has counted this sender out.
    counted_out: bool,
}

impl Drop for Sending {
    fn drop(&mut self) {
        if self.counted_out {
            return;
        }
        let mut queue = self.inner.appends.lock().unwrap_or_else(|p| p.into_inner());
        queue.sending -= 1;
        if queue.sending == 0 {
            // Dropping the senders answers their appends `Unavailable` (never sent).
            queue.waiting.clear();
        }
    }
}

struct Conn {
    /// Buffered for reading: an answer's length and body come in one system call, not two.
    stream: BufReader<TcpStream>,
    body: Vec<u8>,
    scratch: Vec<u8>,
}

impl Conn {
    async fn open(addr: &str, auth_token: Option<String>) -> StoreResult<Conn> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| StoreError::Unavailable(format!("cannot reach the store at {addr}: {e}")))?;
        stream.set_nodelay(true).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let mut conn = Conn { stream: BufReader::new(stream), body: Vec::new(), scratch: Vec::new() };
        let hello = StoreHello { version: STORE_PROTOCOL_VERSION, auth_token };
        write_frame(&mut conn.stream, &hello, &mut conn.scratch).await.map_err(|e| lost(addr, e))?;
        match conn.receive(addr).await? {
            Ok(StoreReply::Welcome) => Ok(conn),
            Ok(other) => Err(StoreError::Unavailable(format!("the store at {addr} answered the hello with {other:?}"))),
            // A refused hello (wrong token, other version) is a configuration error: say so.
            Err(StoreError::Invalid(why)) => Err(StoreError::Invalid(format!("the store at {addr} refused: {why}"))),
            Err(e) => Err(e),
        }
    }

    /// False when the store closed the connection while it sat in the pool (it restarted).
    fn still_open(&self) -> bool {
        let mut probe = [0u8; 1];
        // Between calls nothing is buffered: every answer was read whole.
        self.stream.buffer().is_empty()
            && matches!(self.stream.get_ref().try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }

    async fn receive(&mut self, addr: &str) -> StoreResult<StoreResponse> {
        match read_frame(&mut self.stream, &mut self.body).await {
            Ok(true) => decode_body(&self.body)
                .map_err(|e| StoreError::Unavailable(format!("the store at {addr} sent a malformed answer: {e}"))),
            Ok(false) => Err(StoreError::Unavailable(format!("the store at {addr} closed the connection"))),
            Err(e) => Err(lost(addr, e)),
        }
    }

    /// Drops buffers grown past `STORE_CONN_BUFFER_BYTES_KEPT` by a large request or answer.
    fn trim(&mut self) {
        for buf in [&mut self.body, &mut self.scratch] {
            if buf.capacity() > STORE_CONN_BUFFER_BYTES_KEPT {
                *buf = Vec::new();
            }
        }
    }

    async fn round_trip(&mut self, addr: &str, request: &StoreRequest) -> StoreResult<StoreResponse> {
        write_frame(&mut self.stream, request, &mut self.scratch).await.map_err(|e| lost(addr, e))?;
        self.stream.flush().await.map_err(|e| lost(addr, e))?;
        self.receive(addr).await
    }
}

fn lost(addr: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("connection to the store at {addr} failed: {e}"))
}

impl RemoteStore {
    /// A client of the store at `addr`; connects on first use.
    pub fn new(addr: &str, auth_token: Option<String>) -> RemoteStore {
        RemoteStore::with_deadline(addr, auth_token, Duration::from_millis(STORE_CALL_DEADLINE_MS))
    }

    /// A client whose calls give up after `deadline`.
    pub fn with_deadline(addr: &str, auth_token: Option<String>, deadline: Duration) -> RemoteStore {
        RemoteStore {
            inner: Arc::new(Inner {
                addr: addr.to_string(),
                auth_token,
                idle: Mutex::new(Vec::new()),
                permits: Semaphore::new(STORE_CLIENT_CONNECTIONS_MAX),
                deadline,
                appends: Mutex::new(AppendQueue::default()),
                runtime: tokio::runtime::Handle::try_current().ok(),
            }),
        }
    }

    /// Connects once and says hello: refuses a wrong address or token up front.
    pub async fn check(&self) -> StoreResult<()> {
        let conn = Conn::open(&self.inner.addr, self.inner.auth_token.clone()).await?;
        self.put_back(conn);
        Ok(())
    }

    fn take_idle(&self) -> Option<Conn> {
        let mut idle = self.inner.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(conn) = idle.pop() {
            if conn.still_open() {
                return Some(conn);
            }
        }
        None
    }

    fn put_back(&self, conn: Conn) {
        self.inner.idle.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
    }

    async fn call(&self, request: StoreRequest) -> StoreResult<StoreReply> {
        let inner = &self.inner;
        let _permit =
            inner.permits.acquire().await.map_err(|_| StoreError::Unavailable("store client closed".into()))?;
        let idle = self.take_idle();
        let attempt = async {
            let mut conn = match idle {
                Some(c) => c,
                None => Conn::open(&inner.addr, inner.auth_token.clone()).await?,
            };
            let answer = conn.round_trip(&inner.addr, &request).await?;
            Ok::<_, StoreError>((conn, answer))
        };
        match tokio::time::timeout(inner.deadline, attempt).await {
            Err(_) => Err(StoreError::Unavailable(format!(
                "the store at {} did not answer within {} ms",
                inner.addr,
                inner.deadline.as_millis()
            ))),
            Ok(Err(e)) => Err(e),
            Ok(Ok((mut conn, answer))) => {
                conn.trim();
                self.put_back(conn);
                answer
            }
        }
    }
}

impl RemoteStore {
    /// Queues one append now (and starts a sender when fewer than
    /// `STORE_APPEND_EACH_IN_FLIGHT_MAX` are out); the future waits for its outcome.
    fn queue_append(&self, slot: AppendSlot) -> impl std::future::Future<Output = StoreResult<()>> + Send + 'static {
        let (reply, outcome) = oneshot::channel();
        let start = self.inner.appends.lock().unwrap_or_else(|p| p.into_inner()).push(QueuedAppend { slot, reply });
        if start {
            // A task of its own: the caller may be dropped (its range stopped) while the
            // request is out, and the other appends of the batch still need their answers.
            // The guard goes with the task: a task dropped before it ever ran still counts
            // its sender out. It runs on the runtime the client was made in (a node's
            // multi-thread runtime), not on the caller's: a range's actor thread goes on
            // applying its last batch while the request goes out.
            let sending = Sending { inner: self.inner.clone(), counted_out: false };
            let task = self.clone().send_appends(sending);
            match &self.inner.runtime {
                Some(rt) => drop(rt.spawn(task)),
                None => drop(tokio::spawn(task)),
            }
        }
        let addr = self.inner.addr.clone();
        async move {
            outcome
                .await
                .map_err(|_| StoreError::Unavailable(format!("the append to the store at {addr} was dropped")))?
        }
    }

    /// Sends the waiting appends, answers them, and goes on while more wait.
    async fn send_appends(self, mut sending: Sending) {
        loop {
            let next = self.inner.appends.lock().unwrap_or_else(|p| p.into_inner()).next();
            let Some(batch) = next else {
                sending.counted_out = true;
                return;
            };
            let (slots, replies): (Vec<_>, Vec<_>) = batch.into_iter().map(|q| (q.slot, q.reply)).unzip();
            let n = slots.len();
            match self.call(StoreRequest::AppendEach { slots }).await {
                Ok(StoreReply::EachAppended(outcomes)) if outcomes.len() == n => {
                    for (reply, outcome) in replies.into_iter().zip(outcomes) {
                        let _ = reply.send(outcome);
                    }
                }
                Ok(other) => {
                    let e = unexpected("an append of several slots", other);
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
                Err(e) => {
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
        }
    }
}

fn unexpected(what: &str, reply: StoreReply) -> StoreError {
    StoreError::Unavailable(format!("the store answered {what} with {reply:?}"))
}

#[async_trait]
impl CommitLog for RemoteStore {
    async fn append(&self, range: RangeId, seq: Seq, entry: &LogEntry) -> StoreResult<()> {
        validate::slot(range, seq, entry)?;
        self.queue_append(AppendSlot { range, seq, entry: entry.clone() }).await
    }

    fn start_append(self: Arc<Self>, range: RangeId, seq: Seq, entry: LogEntry) -> crate::AppendFuture {
        if let Err(e) = validate::slot(range, seq, &entry) {
            return Box::pin(std::future::ready(Err(e)));
        }
        Box::pin(self.queue_append(AppendSlot { range, seq, entry }))
    }

    async fn append_atomic(&self, slots: &[AppendSlot]) -> StoreResult<()> {
        validate::append_atomic(slots)?;
        match self.call(StoreRequest::AppendAtomic { slots: slots.to_vec() }).await? {
            StoreReply::Done => Ok(()),
            other => Err(unexpected("an atomic append", other)),
        }
    }

    async fn head(&self, range: RangeId) -> StoreResult<Option<Seq>> {
        validate::range_id(range)?;
        match self.call(StoreRequest::Head { range }).await? {
            StoreReply::Head(head) => Ok(head),
            other => Err(unexpected("a head", other)),
        }
    }

    async fn read(&self, range: RangeId, from: Seq, limit: usize) -> StoreResult<Vec<(Seq, LogEntry)>> {
        validate::range_id(range)?;
        validate::seq(from)?;
        match self.call(StoreRequest::Read { range, from, limit: limit as u64 }).await? {
            StoreReply::Entries(entries) => Ok(entries),
            other => Err(unexpected("a read", other)),
        }
    }

    async fn truncate(&self, range: RangeId, upto: Seq) -> StoreResult<()> {
        validate::range_id(range)?;
        validate::seq(upto)?;
        match self.call(StoreRequest::Truncate { range, upto }).await? {
            StoreReply::Done => Ok(()),
            other => Err(unexpected("a truncation", other)),
        }
    }
}

#[async_trait]
impl MetaStore for RemoteStore {
    async fn get(&self, pk: &str, sk: &[u8]) -> StoreResult<Option<MetaItem>> {
        validate::meta_key(pk, sk)?;
        match self.call(StoreRequest::MetaGet { pk: pk.to_string(), sk: sk.to_vec() }).await? {
            StoreReply::Item(item) => Ok(item),
            other => Err(unexpected("a meta get", other)),
        }
    }

    async fn put(&self, pk: &str, sk: &[u8], value: &[u8], expect: Expect) -> StoreResult<u64> {
        let (pk, sk, value) = (pk.to_string(), sk.to_vec(), value.to_vec());
        // The same checks as a one-op transaction, as the other backends make.
        let op = MetaOp::Put { pk: pk.clone(), sk: sk.clone(), value: value.clone(), expect: expect.clone() };
        validate::meta_transact(std::slice::from_ref(&op))?;
        match self.call(StoreRequest::MetaPut { pk, sk, value, expect }).await? {
            StoreReply::Version(v) => Ok(v),
            other => Err(unexpected("a meta put", other)),
        }
    }

    async fn delete(&self, pk: &str, sk: &[u8], expect: Expect) -> StoreResult<()> {
        let op = MetaOp::Delete { pk: pk.to_string(), sk: sk.to_vec(), expect: expect.clone() };
        validate::meta_transact(std::slice::from_ref(&op))?;
        match self.call(StoreRequest::MetaDelete { pk: pk.to_string(), sk: sk.to_vec(), expect }).await? {
            StoreReply::Done => Ok(()),
            other => Err(unexpected("a meta delete", other)),
        }
    }

    async fn transact(&self, ops: &[MetaOp]) -> StoreResult<()> {
        validate::meta_transact(ops)?;
        match self.call(StoreRequest::MetaTransact { ops: ops.to_vec() }).await? {
            StoreReply::Done => Ok(()),
            other => Err(unexpected("a meta transaction", other)),
        }
    }

    async fn query(&self, pk: &str, from: &[u8], limit: usize) -> StoreResult<Vec<(Vec<u8>, MetaItem)>> {
        validate::meta_key(pk, from)?;
        let limit = limit.clamp(1, META_QUERY_ITEMS_MAX);
        let mut out: Vec<(Vec<u8>, MetaItem)> = Vec::new();
        let mut from = from.to_vec();
        loop {
            let request =
                StoreRequest::MetaQuery { pk: pk.to_string(), from: from.clone(), limit: (limit - out.len()) as u64 };
            let (items, more) = match self.call(request).await? {
                StoreReply::Items { items, more } => (items, more),
                other => return Err(unexpected("a meta query", other)),
            };
            let got = items.len();
            for q in items {
                from = q.sk.clone();
                from.push(0);
                out.push((q.sk, q.item));
            }
            // `more` with nothing in it would loop forever: the store always sends one item.
            if !more || got == 0 || out.len() >= limit {
                return Ok(out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EntryKind;
    use crate::config::LocalConfig;
    use crate::local::LocalStore;
    use ampstore_common::ids::{Epoch, NodeId};
    use ampstore_common::limits::LOG_ENTRY_BYTES_MAX;

    #[tokio::test]
    async fn a_pooled_connection_keeps_at_most_the_kept_buffer_bytes() {
        const { assert!(STORE_CONN_BUFFER_BYTES_KEPT > LOG_ENTRY_BYTES_MAX) };
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path(), &LocalConfig::default()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (_stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(super::super::serve(listener, store.backend(), None, stopped));
        let remote = RemoteStore::new(&addr, None);
        let entry = |bytes: usize| LogEntry {
            kind: EntryKind::Batch,
            writer: NodeId::new("n1").unwrap(),
            epoch: Epoch(1),
            payload: bytes::Bytes::from(vec![7u8; bytes]),
        };
        // Entries of the largest size, read back in answers of several MiB.
        for seq in 1..=8u64 {
            remote.append(RangeId(1), Seq(seq), &entry(LOG_ENTRY_BYTES_MAX)).await.unwrap();
        }
        let pooled = |r: &RemoteStore| {
            let idle = r.inner.idle.lock().unwrap();
            idle.iter().map(|c| c.body.capacity().max(c.scratch.capacity())).max().unwrap_or(0)
        };
        // An append of the largest size keeps its buffer (the next append reuses it).
        assert!(pooled(&remote) >= LOG_ENTRY_BYTES_MAX, "{}", pooled(&remote));
        let read = remote.read(RangeId(1), Seq(1), 100).await.unwrap();
        assert_eq!(read.len(), 8);
        assert!(pooled(&remote) <= STORE_CONN_BUFFER_BYTES_KEPT, "{}", pooled(&remote));
    }
}
