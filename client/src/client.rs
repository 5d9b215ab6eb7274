//! The routing client: finds the node that serves a key through the masters, caches the
//! answer, sends the request straight to that node over one multiplexed connection per
//! node, and retries what can be retried (`NotOwner`, `RangeLoading`, `NotMaster`, lost
//! connections, timeouts of writes that carry a write id) with bounded backoff until the
//! call's deadline.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use ampstore_common::error::Error;
use ampstore_common::limits::{GET_MANY_KEYS_MAX, SCAN_PAGE_KEYS_MAX};
use ampstore_common::protocol::{ExpireWhen, KeyTtl};
use ampstore_common::protocol::{MasterStatus, Op, RangeLocation, Reply, Role, ScanItem, Versioned, WriteId};
use ampstore_common::wire::Call;
use ampstore_common::wire::connection::Connection;
use ampstore_common::wire::data::{
    Delete, DeleteRange, Expire, Get, GetMany, Incr, Persist, Ping, Put, PutIfVersion, PutWithTtl, Scan, Ttl,
};
use ampstore_common::wire::masters::ActiveMaster;
use ampstore_common::wire::pool::Pool;
use ampstore_common::wire::routing::{self, Locate, LocateRange};
use ampstore_common::{Key, Version};

/// How a [`Client`] behaves.
///
/// ```no_run
/// # async fn demo() -> Result<(), ampstore_client::Error> {
/// let mut cfg = ampstore_client::ClientConfig::new(&["127.0.0.1:7300"]);
/// cfg.token = std::fs::read_to_string("ampstore-data/cluster.token").ok().map(|t| t.trim().to_string());
/// let client = ampstore_client::Client::with_config(cfg).await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// RPC addresses of the masters (any of them; the client finds the active one).
    pub masters: Vec<String>,
    /// The credential of `role`: for an application (role `Client`) the cluster token
    /// (`cluster.token`), when the cluster has one.
    pub token: Option<String>,
    /// The role every hello declares. Applications keep `Client`, which allows the data
    /// operations; the cluster's own processes that use this client (a collector) set their
    /// role and the admin token.
    pub role: Role,
    /// How long one call (with all its retries) may take.
    pub call_deadline: Duration,
    /// Shown in server logs.
    pub name: String,
    /// Collector RPC addresses: pushes and enqueues go through them (batched per range),
    /// failing over to the next collector and then to the nodes directly. Empty: direct.
    /// [`Client::discover_collectors`] fills it from the cluster's gossip.
    pub collectors: Vec<String>,
    /// A node this client runs inside (its RESP listener): requests routed to that node are
    /// served in process, without a socket. `None` for every other client.
    pub local: Option<ampstore_common::wire::local::Local>,
}

impl ClientConfig {
    pub fn new(masters: &[impl AsRef<str>]) -> ClientConfig {
        ClientConfig {
            masters: masters.iter().map(|m| m.as_ref().to_string()).collect(),
            token: None,
            role: Role::Client,
            call_deadline: Duration::from_secs(10),
            name: "ampstore-client".into(),
            collectors: Vec::new(),
            local: None,
        }
    }
}

/// A connection to an Ampstore cluster. Cheap to clone; clones share routes and connections.
///
/// ```no_run
/// # async fn demo() -> Result<(), ampstore_client::Error> {
/// use ampstore_client::Client;
/// let client = Client::connect(&["127.0.0.1:7300"]).await?;
/// client.put("user:1", "alice").await?;
/// assert_eq!(client.get("user:1").await?.map(|v| v.value), Some(b"alice".to_vec()));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    cfg: ClientConfig,
    /// Cached locations by range start.
    /// Shared entries: a call takes its route with a reference count, not a copy.
    routes: RwLock<BTreeMap<Key, Arc<RangeLocation>>>,
    /// Connections to nodes, masters and collectors, by address.
    pool: Arc<Pool>,
    /// The masters, the one that answered last first.
    masters: ActiveMaster,
    client_id: u64,
    writes: AtomicU64,
    /// The numbers of the plain writes (put, conditional put, delete, delete-range) this
    /// client has handed out and not yet finished: the lowest is the floor every new write
    /// carries (`WriteId::floor`), so ranges forget the records of finished writes at once.
    open_writes: OpenWrites,
    /// Collector addresses in use (see `ClientConfig::collectors`).
    pub(crate) collectors: RwLock<Vec<String>>,
    /// The collector tried first (the last one that answered).
    pub(crate) collector: AtomicUsize,
}

/// The numbers of a client's open plain writes (see [`Client::begin_write`]), lowest first.
///
/// A sorted queue rather than an ordered set: numbers are taken under its lock, so a new
/// one is above every open one and goes at the back, and calls mostly finish in the order
/// they started, so a finished one is mostly at the front. (A `BTreeSet` here cost about
/// 1,000 instructions a write, insert and remove, a fifth of the client's work on a put.)
#[derive(Default)]
pub(crate) struct OpenWrites(Mutex<std::collections::VecDeque<u64>>);

impl OpenWrites {
    /// Opens a write numbered from `counter`; its floor is the lowest open number.
    fn open<'a>(&'a self, client: u64, counter: &AtomicU64) -> OpenWrite<'a> {
        let mut open = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let n = counter.fetch_add(1, Ordering::Relaxed);
        match open.back() {
            // Not reached while every number is taken here, under this lock; kept sorted anyway.
            Some(&last) if last > n => {
                let at = open.partition_point(|&o| o < n);
                open.insert(at, n);
            }
            _ => open.push_back(n),
        }
        let floor = open.front().copied().unwrap_or(n);
        OpenWrite { open_writes: self, id: WriteId { client, n, floor } }
    }

    /// Closes write `n`.
    fn close(&self, n: u64) {
        let mut open = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if open.front() == Some(&n) {
            open.pop_front();
        } else if let Ok(at) = open.binary_search(&n) {
            open.remove(at);
        }
    }
}

/// A plain write's id while its call runs; dropping it closes the write (see
/// [`Client::begin_write`]).
pub(crate) struct OpenWrite<'a> {
    open_writes: &'a OpenWrites,
    pub(crate) id: WriteId,
}

impl Drop for OpenWrite<'_> {
    fn drop(&mut self) {
        self.open_writes.close(self.id.n);
    }
}

/// One page of a scan.
///
/// ```no_run
/// # async fn demo(client: ampstore_client::Client) -> Result<(), ampstore_client::Error> {
/// let page: ampstore_client::ScanPage = client.scan("a", Some("b".into()), 10, false).await?;
/// println!("{} items, more: {}", page.items.len(), page.resume.is_some());
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanPage {
    pub items: Vec<ScanItem>,
    /// Where the next page starts (forward: its `start`; reverse: its `end`); `None` when
    /// the span is exhausted.
    pub resume: Option<Key>,
}

pub(crate) use ampstore_common::wire::masters::BACKOFF_START;
/// A call deadline must fit inside the window in which nodes remember a write id
/// (`WRITE_ID_RETENTION_MS`): every retry of a write then reaches a node that still knows
/// whether the write was applied.
fn check_call_deadline(deadline: Duration) -> Result<(), Error> {
    let max = Duration::from_millis(ampstore_common::limits::CLIENT_CALL_DEADLINE_MS_MAX);
    if deadline.is_zero() || deadline > max {
        return Err(Error::invalid(format!(
            "call_deadline must be more than 0 and at most {} ms (the window in which a retried write is recognised)",
            max.as_millis()
        )));
    }
    Ok(())
}

/// One attempt on a node gets at most this share of the call deadline (and at least
/// `ATTEMPT_MIN`), so a request stuck on a paused or cut-off node is sent again, within the
/// same call, to wherever the master moved its range. Writes that cannot be retried safely
/// (no write id) get the whole deadline.
/// A TTL in whole ms, refused when it rounds to 0 or passes `TTL_MS_MAX` (before anything
/// is sent: the node checks the same).
fn ttl_ms(ttl: Duration) -> Result<u64, Error> {
    let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    ampstore_common::expiry::validate_ttl_ms(ms)?;
    Ok(ms)
}

use ampstore_common::wire::masters::{ATTEMPT_LEASE_GRACE, ATTEMPT_MAX, ATTEMPT_MIN, ATTEMPT_SHARE};

impl Client {
    /// Connects to a cluster through its masters (at least one must answer).
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), ampstore_client::Error> {
    /// let client = ampstore_client::Client::connect(&["127.0.0.1:7300", "127.0.0.1:7310"]).await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect(masters: &[impl AsRef<str>]) -> Result<Client, Error> {
        Client::with_config(ClientConfig::new(masters)).await
    }

    /// Connects with explicit settings (token, deadline).
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), ampstore_client::Error> {
    /// use ampstore_client::{Client, ClientConfig};
    /// let mut cfg = ClientConfig::new(&["127.0.0.1:7300"]);
    /// cfg.token = Some("s3cret".into());
    /// cfg.call_deadline = std::time::Duration::from_secs(3);
    /// let client = Client::with_config(cfg).await?;
    /// # Ok(()) }
    /// ```
    pub async fn with_config(cfg: ClientConfig) -> Result<Client, Error> {
        if cfg.masters.is_empty() {
            return Err(Error::invalid("no master address given"));
        }
        check_call_deadline(cfg.call_deadline)?;
        let collectors = RwLock::new(cfg.collectors.clone());
        let pool = Arc::new(Pool::new(cfg.role, cfg.name.clone(), cfg.token.clone()));
        // A hung master must not eat the whole deadline: the next one may be active.
        let masters = ActiveMaster::new(cfg.masters.clone(), pool.clone())?
            .attempt_limit((cfg.call_deadline / ATTEMPT_SHARE).clamp(ATTEMPT_MIN, ATTEMPT_MAX));
        let client = Client {
            inner: Arc::new(Inner {
                collectors,
                collector: AtomicUsize::new(0),
                cfg,
                routes: RwLock::default(),
                pool,
                masters,
                client_id: rand::random(),
                writes: AtomicU64::new(0),
                open_writes: OpenWrites::default(),
            }),
        };
        client.master_call(Ping, Instant::now() + client.inner.cfg.call_deadline).await?;
        Ok(client)
    }

    /// The value and version at `key`, `None` when absent.
    ///
    /// ```no_run
    /// # async fn demo(client: ampstore_client::Client) -> Result<(), ampstore_client::Error> {
    /// if let Some(v) = client.get("user:1").await? {
    ///     println!("{} (version {})", String::from_utf8_lossy(&v.value), v.version);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn get(&self, key: impl Into<Key>) -> Result<Option<Versioned>, Error> {
        self.keyed_own(Get { key: key.into() }).await
    }

    /// Several keys at once, across ranges; answers in the order of `keys`.
    ///
    /// ```no_run
    /// # async fn demo(client: ampstore_client::Client) -> Result<(), ampstore_client::Error> {
    /// let values = client.get_many(vec!["a".into(), "b".into()]).await?;
    /// assert_eq!(values.len(), 2);
    /// # Ok(()) }
    /// ```
    pub async fn get_many(&self, keys: Vec<Key>) -> Result<Vec<Option<Versioned>>, Error> {
        if keys.len() > GET_MANY_KEYS_MAX {
            return Err(Error::too_large("get_many key count", keys.len(), GET_MANY_KEYS_MAX));
        }
        let deadline = self.deadline();
        let mut out: Vec<Option<Versioned>> = vec![None; keys.len()];
        // Group by range; a group that fails (the range moved) is retried on its own.
        let mut pending: Vec<usize> = (0..keys.len()).collect();
        let mut backoff = BACKOFF_START;
        while !pending.is_empty() {
            let mut groups: BTreeMap<(Key, String), Vec<usize>> = BTreeMap::new();
            for &i in &pending {
                let loc = self.route(&keys[i], deadline).await?;
                groups.entry((loc.start.clone(), loc.node_addr.clone())).or_default().push(i);
            }
            let mut failed = Vec::new();
            let mut last_err = None;
            // The ranges' groups all at once: a get_many costs its slowest range, not their sum.
            let mut calls = tokio::task::JoinSet::new();
            for ((_, addr), idx) in groups {
                let op = GetMany { keys: idx.iter().map(|&i| keys[i].clone()).collect() }.into_op();
                let attempt = self.attempt_deadline(&op, deadline);
                let client = self.clone();
                calls.spawn(async move {
                    let answer = client.node_call(&addr, op, attempt).await.and_then(GetMany::reply);
                    (idx, answer)
                });
            }
            while let Some(done) = calls.join_next().await {
                let (idx, answer) = done.map_err(|e| Error::internal(format!("a get_many call failed: {e}")))?;
                match answer {
                    Ok(values) if values.len() == idx.len() => {
                        for (i, v) in idx.into_iter().zip(values) {
                            out[i] = v;
                        }
                    }
                    Ok(values) => {
                        return Err(Error::internal(format!(
                            "get_many answered {} values for {} keys",
                            values.len(),
                            idx.len()
                        )));
                    }
                    Err(e) if e.is_retryable() => {
                        self.forget(&keys[idx[0]]);
                        failed.extend(idx);
                        last_err = Some(e);
                    }
                    Err(e) => return Err(e),
                }
            }
            pending = failed;
            if let Some(e) = last_err {
                self.wait(&e, &mut backoff, deadline).await?;
            }
        }
        Ok(out)
    }

    /// Writes `value` at `key` and returns the version it got. Retried writes are applied
    /// once (every write carries a write id).
    ///
    /// ```no_run
    /// # async fn demo(client: ampstore_client::Client) -> Result<(), ampstore_client::Error> {
    /// let version = client.put("user:1", b"alice".to_vec()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn put(&self, key: impl Into<Key>, value: impl Into<Vec<u8>>) -> Result<Version, Error> {
        let write = self.begin_write();
        self.keyed_own(Put { key: key.into(), value: value.into(), write_id: Some(write.id) }).await
    }

    /// Writes only if the key's version is `expected` (`None`: only if the key is absent);
    /// otherwise `Conflict`.
    ///
    /// ```no_run
    /// # async fn demo(client: ampstore_client::Client) -> Result<(), ampstore_client::Error> {
    /// let v1 = client.put_if_version("counter", "1", None).await?;
    /// client.put_if_version("counter", "2", Some(v1)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn put_if_version(
        &self,
        key: impl Into<Key>,
        value: impl Into<Vec<u8>>,
        expected: Option<Version>,
    ) -> Result<Version, Error> {
        let write = self.begin_write();
        self.keyed_own(PutIfVersion { key: key.into(), value: value.into(), expected, write_id: Some(write.id) }).await
    }

    /// Writes `value` at `key`, to expire `ttl` after the node serving it logs the write
    /// (whole milliseconds, 1 ms to 100 years: `TTL_MS_MAX`). Until then reads see it; from
    /// then on every read finds it absent, and the node deletes it in the background. A later
    /// plain [`Client::put`] clears the expiry; [`Client::incr`] keeps it.
    ///
    /// ```no_run
    /// # async fn demo(client: ampstore_client::Client) -> Result<(), ampstore_client::Error> {
    /// use std::time::Duration;
    /// client.put_with_ttl("session:42", "user=7", Duration::from_secs(30)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn put_with_ttl(
        &self,
        key: impl Into<Key>,
        value: impl Into<Vec<u8>>,
        ttl: Duration,
    ) -> Result<Version, Error> {
        let write = self.begin_write();
        let ttl_ms = ttl_ms(ttl)?;
        self.keyed_own(PutWithTtl { key: key.into(), value: value.into(), ttl_ms, write_id: Some(write.id) }).await
    }

    /// Sets `key` to expire `ttl` from now, if `when` holds (Redis's EXPIRE with NX, XX, GT,
    /// LT; [`ExpireWhen::Always`] is plain EXPIRE). Returns whether the expiry changed:
    /// `false` when the key is absent or `when` does not hold.
    ///
    /// ```no_run
    /// # async fn demo(client: ampstore_client::Client) -> Result<(), ampstore_client::Error> {
    /// use ampstore_client::ExpireWhen;
    /// use std::time::Duration;
    /// let set = client.expire("session:42", Duration::from_secs(60), ExpireWhen::Gt).await?;
    /// # Ok(()) }
    /// ```
    pub async fn expire(&self, key: impl Into<Key>, ttl: Duration, when: ExpireWhen) -> Result<bool, Error> {
        let write = self.begin_write();
        let ttl_ms = ttl_ms(ttl)?;
        self.keyed_own(Expire { key: key.into(), ttl_ms, when, write_id: Some(write.id) }).await
    }

    /// Removes `key`'s expiry; returns whether it had one (`false` also when it is absent).
    pub async fn persist(&self, key: impl Into<Key>) -> Result<bool, Error> {
        let write = self.begin_write();
        self.keyed_own(Persist { key: key.into(), write_id: Some(write.id) }).await
    }

    /// How long `key` has to live: [`KeyTtl::Absent`] (no such key),
    /// [`KeyTtl::Persistent`] (no expiry) or [`KeyTtl::ExpiresInMs`];
    /// [`KeyTtl::remaining`] gives the last as a `Duration`.
    ///
    /// ```no_run
    /// # async fn demo(client: ampstore_client::Client) -> Result<(), ampstore_client::Error> {
    /// use ampstore_client::KeyTtl;
    /// match client.ttl("session:42").await? {
    ///     KeyTtl::Absent => println!("no such key"),
    ///     KeyTtl::Persistent => println!("never expires"),
    ///     KeyTtl::ExpiresInMs(ms) => println!("expires in {ms} ms"),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn ttl(&self, key: impl Into<Key>) -> Result<KeyTtl, Error> {
        self.keyed_own(Ttl { key: key.into() }).await
    }

    /// Adds `by` to the signed 64-bit decimal integer at `key` (an absent key counts as 0)
    /// and returns the new value: one read-modify-write in the node serving the key, one
    /// log entry, keeping the key's expiry. A value that is not such an integer, or a sum
    /// outside `i64`, is `Invalid` and changes nothing. Retried, it is applied once and
    /// answers the first result.
    ///
    /// ```no_run
    /// # async fn demo(client: ampstore_client::Client) -> Result<(), ampstore_client::Error> {
    /// let hits = client.incr("hits:home", 1).await?;
    /// # Ok(()) }
    /// ```
    pub async fn incr(&self, key: impl Into<Key>, by: i64) -> Result<i64, Error> {
        let write = self.begin_write();
        Ok(self.keyed_own(Incr { key: key.into(), by, write_id: Some(write.id) }).await?.value)
    }

    /// [`Client::incr`] by `-by` (`i64::MIN` cannot be negated: `Invalid`).
    pub async fn decr(&self, key: impl Into<Key>, by: i64) -> Result<i64, Error> {
        let negated = by.checked_neg().ok_or_else(|| Error::invalid(ampstore_common::counter::OVERFLOW))?;
        self.incr(key, negated).await
    }

    /// Deletes `key`; returns whether it existed.
    ///
    /// ```no_run
    /// # async fn demo(client: ampstore_client::Client) -> Result<(), ampstore_client::Error> {
    /// let existed = client.delete("user:1").await?;
    /// # Ok(()) }
    /// ```
    pub async fn delete(&self, key: impl Into<Key>) -> Result<bool, Error> {
        let write = self.begin_write();
        Ok(self.keyed_own(Delete { key: key.into(), write_id: Some(write.id) }).await?.removed > 0)
    }

    /// Deletes every key in `[start, end)` (`end = None`: no upper bound), range by range
    /// (each range's part is atomic; the whole is not). Returns how many keys existed.
    ///
    /// ```no_run
    /// # async fn demo(client: ampstore_client::Client) -> Result<(), ampstore_client::Error> {
    /// let removed = client.delete_range("session:", Some("session;".into())).await?;
    /// # Ok(()) }
    /// ```
    pub async fn delete_range(&self, start: impl Into<Key>, end: Option<Key>) -> Result<u64, Error> {
        let start = start.into();
        ampstore_common::wire::span::validate_span(&start, end.as_ref())?;
        let end = Some(user_end(end));
        if start >= Key::user_end() {
            return Ok(0);
        }
        let deadline = self.deadline();
        let mut pos = start;
        let mut removed = 0;
        let mut backoff = BACKOFF_START;
        loop {
            let loc = self.route(&pos, deadline).await?;
            let piece_end = match (&loc.end, &end) {
                (Some(r), Some(e)) => Some(r.min(e).clone()),
                (Some(r), None) => Some(r.clone()),
                (None, e) => e.clone(),
            };
            let write = self.begin_write();
            let req = DeleteRange { start: pos.clone(), end: piece_end.clone(), write_id: Some(write.id) };
            match self.keyed_until(&pos, req.into_op(), deadline).await {
                Ok(reply) => removed += DeleteRange::reply(reply)?.removed,
                // The cached route was older than a split: the piece ran past the range.
                // Route again (the piece shrinks to the range as it is now).
                Err(e @ Error::KeyOutOfRange) => {
                    self.forget_range(&loc);
                    self.wait(&e, &mut backoff, deadline).await?;
                    continue;
                }
                Err(e) => return Err(e),
            }
            drop(write);
            match (piece_end, &end) {
                (Some(p), Some(e)) if &p < e => pos = p,
                (Some(p), None) => pos = p,
                _ => return Ok(removed),
            }
        }
    }

    /// Up to `limit` keys of `[start, end)` in order (descending with `reverse`), across
    /// ranges; continue from `resume`. Every key is returned exactly once across pages, even
    /// while ranges move.
    ///
    /// ```no_run
    /// # async fn demo(client: ampstore_client::Client) -> Result<(), ampstore_client::Error> {
    /// let mut start = ampstore_client::Key::from("user:");
    /// loop {
    ///     let page = client.scan(start.clone(), Some("user;".into()), 100, false).await?;
    ///     for item in &page.items {
    ///         println!("{}", item.key);
    ///     }
    ///     match page.resume {
    ///         Some(next) => start = next,
    ///         None => break,
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn scan(
        &self,
        start: impl Into<Key>,
        end: Option<Key>,
        limit: usize,
        reverse: bool,
    ) -> Result<ScanPage, Error> {
        let start = start.into();
        ampstore_common::wire::span::validate_span(&start, end.as_ref())?;
        if start >= Key::user_end() {
            return Ok(ScanPage { items: Vec::new(), resume: None });
        }
        self.scan_raw(start, Some(user_end(end)), limit, reverse).await
    }

    /// A scan over any keys, the reserved namespace included (lists, queues).
    pub(crate) async fn scan_raw(
        &self,
        start: Key,
        end: Option<Key>,
        limit: usize,
        reverse: bool,
    ) -> Result<ScanPage, Error> {
        if limit == 0 {
            return Err(Error::invalid("scan limit must be above 0"));
        }
        let deadline = self.deadline();
        let mut items: Vec<ScanItem> = Vec::new();
        // Forward: `pos` is the next start; reverse: the next (exclusive) end.
        let (mut lo, mut hi) = (start.clone(), end.clone());
        let mut backoff = BACKOFF_START;
        while items.len() < limit {
            let want = (limit - items.len()).min(SCAN_PAGE_KEYS_MAX) as u32;
            let loc = if reverse {
                self.route_below(&lo, hi.as_ref(), deadline).await?
            } else {
                self.route(&lo, deadline).await?
            };
            let op = Scan { start: lo.clone(), end: hi.clone(), limit: want, reverse }.into_op();
            let attempt = self.attempt_deadline(&op, deadline);
            match self.node_call(&loc.node_addr, op, attempt).await.and_then(Scan::reply) {
                Ok(ampstore_common::wire::data::Page { items: page, resume }) => {
                    debug_assert!(page.len() <= want as usize);
                    items.extend(page);
                    match resume {
                        None => return Ok(ScanPage { items, resume: None }),
                        Some(r) if reverse => hi = Some(r),
                        Some(r) => lo = r,
                    }
                }
                Err(e) if e.is_retryable() => {
                    self.forget_range(&loc);
                    self.wait(&e, &mut backoff, deadline).await?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(ScanPage { items, resume: Some(if reverse { hi.unwrap_or_default() } else { lo }) })
    }

    /// A scan as a sequence of pages fetched on demand.
    ///
    /// ```no_run
    /// # async fn demo(client: ampstore_client::Client) -> Result<(), ampstore_client::Error> {
    /// let mut scanner = client.scanner("", None, false);
    /// while let Some(item) = scanner.next().await? {
    ///     println!("{} = {} bytes", item.key, item.value.len());
    /// }
    /// # Ok(()) }
    /// ```
    pub fn scanner(&self, start: impl Into<Key>, end: Option<Key>, reverse: bool) -> Scanner {
        let start = start.into();
        let end = Some(user_end(end));
        Scanner {
            client: self.clone(),
            next: Some(if reverse { end.clone().unwrap_or_default() } else { start.clone() }),
            start,
            end,
            reverse,
            buffer: std::collections::VecDeque::new(),
            first: true,
        }
    }

    /// Where `key` is served.
    ///
    /// ```no_run
    /// # async fn demo(client: ampstore_client::Client) -> Result<(), ampstore_client::Error> {
    /// let loc = client.locate("user:1").await?;
    /// println!("range {} on {} at {}", loc.range_id, loc.node_id, loc.node_addr);
    /// # Ok(()) }
    /// ```
    pub async fn locate(&self, key: impl Into<Key>) -> Result<RangeLocation, Error> {
        let key = key.into();
        self.forget(&key);
        Ok(RangeLocation::clone(&*self.route(&key, self.deadline()).await?))
    }

    /// Every range and where it is served, in key order.
    ///
    /// ```no_run
    /// # async fn demo(client: ampstore_client::Client) -> Result<(), ampstore_client::Error> {
    /// for r in client.ranges().await? {
    ///     println!("{} [{}, {:?}) on {}", r.range_id, r.start, r.end, r.node_id);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn ranges(&self) -> Result<Vec<RangeLocation>, Error> {
        let deadline = self.deadline();
        let mut out: Vec<RangeLocation> = Vec::new();
        let mut from = Key::default();
        loop {
            let page = self.master_call(LocateRange { start: from.clone(), end: None }, deadline).await?;
            let Some(last) = page.last().cloned() else { return Ok(out) };
            self.remember(&page.iter().cloned().map(Arc::new).collect::<Vec<_>>());
            out.extend(page);
            match last.end {
                Some(e) => from = e,
                None => return Ok(out),
            }
        }
    }

    /// The active master's view of the cluster.
    ///
    /// ```no_run
    /// # async fn demo(client: ampstore_client::Client) -> Result<(), ampstore_client::Error> {
    /// let status = client.master_status().await?;
    /// println!("term {:?}, {} ranges", status.active_term, status.ranges.len());
    /// # Ok(()) }
    /// ```
    pub async fn master_status(&self) -> Result<MasterStatus, Error> {
        match self.master_call(routing::MasterStatus, self.deadline()).await? {
            s if s.active_term.is_some() => Ok(s),
            _ => Err(Error::NotMaster { hint: None }),
        }
    }

    // ---- internals ---------------------------------------------------------------------

    pub(crate) fn deadline(&self) -> Instant {
        Instant::now() + self.inner.cfg.call_deadline
    }

    /// A number from this client's write counter, for ids that carry no floor (transactions,
    /// push ids).
    pub(crate) fn write_id(&self) -> WriteId {
        WriteId::new(self.inner.client_id, self.inner.writes.fetch_add(1, Ordering::Relaxed))
    }

    /// The id of a new plain write, open until the returned guard is dropped (when the call
    /// is over: answered, or given up on; the write is never sent again after that). Its
    /// floor is the lowest open write's number, this one included. The number is taken
    /// under the lock: otherwise a later number could be opened, and its floor computed,
    /// before an earlier one is open, and the range would refuse the earlier write.
    pub(crate) fn begin_write(&self) -> OpenWrite<'_> {
        self.inner.open_writes.open(self.inner.client_id, &self.inner.writes)
    }

    /// Sends `req` to the node serving `key`, re-routing and retrying until the call
    /// deadline; answers its typed reply.
    pub(crate) async fn keyed<C: Call>(&self, key: &Key, req: C) -> Result<C::Reply, Error> {
        C::reply(self.keyed_until(key, req.into_op(), self.deadline()).await?)
    }

    /// [`Client::keyed`] for a request on one key (get, put, conditional put, delete),
    /// routed by the key it carries (no copy of it).
    async fn keyed_own<C: Call>(&self, req: C) -> Result<C::Reply, Error> {
        let op = req.into_op();
        let key = match &op {
            Op::Get { key }
            | Op::Put { key, .. }
            | Op::PutIfVersion { key, .. }
            | Op::Delete { key, .. }
            | Op::PutWithTtl { key, .. }
            | Op::Expire { key, .. }
            | Op::Persist { key, .. }
            | Op::Ttl { key }
            | Op::Incr { key, .. } => key,
            _ => return Err(Error::internal("keyed_own: not a request on one key")),
        };
        C::reply(self.keyed_until_ref(key, &op, self.deadline()).await?)
    }

    /// One attempt at `req` on the node serving `key`, within a tenth of the call deadline.
    pub(crate) async fn keyed_once<C: Call>(&self, key: &Key, req: C) -> Result<C::Reply, Error> {
        C::reply(self.keyed_once_op(key, req.into_op()).await?)
    }

    async fn keyed_once_op(&self, key: &Key, op: Op) -> Result<Reply, Error> {
        op.validate()?;
        let deadline = Instant::now() + self.inner.cfg.call_deadline / 10;
        let loc = self.route(key, deadline).await?;
        let result = self.node_call(&loc.node_addr, op, deadline).await;
        if result.as_ref().is_err_and(Error::is_retryable) {
            self.forget_range(&loc);
        }
        result
    }

    /// Sends `op` to the node serving `key`, re-routing and retrying until `deadline`.
    pub(crate) async fn keyed_until(&self, key: &Key, op: Op, deadline: Instant) -> Result<Reply, Error> {
        self.keyed_until_ref(key, &op, deadline).await
    }

    /// [`Client::keyed_until`] with a borrowed `op`.
    async fn keyed_until_ref(&self, key: &Key, op: &Op, deadline: Instant) -> Result<Reply, Error> {
        op.validate()?;
        let mut backoff = BACKOFF_START;
        let mut timed_out = false;
        loop {
            let loc = self.route(key, deadline).await?;
            let attempt = if timed_out {
                self.attempt_deadline_after_timeout(op, &loc, deadline)
            } else {
                self.attempt_deadline(op, deadline)
            };
            match self.node_call_ref(&loc.node_addr, op, attempt).await {
                Ok(r) => return Ok(r),
                // A timed-out write without a write id might have landed: not ours to retry.
                Err(Error::Timeout) if op.is_write() && !has_write_id(op) => return Err(Error::Timeout),
                Err(e) if e.is_retryable() => {
                    timed_out = matches!(e, Error::Timeout);
                    self.forget_range(&loc);
                    self.wait(&e, &mut backoff, deadline).await?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Sleeps before a retry, or gives up with `e` when the deadline would pass (one backoff
    /// rule for the client and `ActiveMaster`: `wire::masters::wait`).
    pub(crate) async fn wait(&self, e: &Error, backoff: &mut Duration, deadline: Instant) -> Result<(), Error> {
        ampstore_common::wire::masters::wait(e, backoff, deadline).await
    }

    /// When one attempt of `op` gives up (see `ATTEMPT_SHARE`).
    fn attempt_deadline(&self, op: &Op, deadline: Instant) -> Instant {
        attempt_end(op, self.inner.cfg.call_deadline, deadline, Instant::now())
    }

    /// [`Client::attempt_deadline`] for an attempt after one that timed out, on a route just
    /// fetched from the master (see [`attempt_end_after_timeout`]).
    fn attempt_deadline_after_timeout(&self, op: &Op, loc: &RangeLocation, deadline: Instant) -> Instant {
        attempt_end_after_timeout(op, self.inner.cfg.call_deadline, loc.lease_ms_left, deadline, Instant::now())
    }

    pub(crate) fn remaining(deadline: Instant) -> Result<Duration, Error> {
        deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()).ok_or(Error::Timeout)
    }

    pub(crate) async fn node_call(&self, addr: &str, op: Op, deadline: Instant) -> Result<Reply, Error> {
        if let Some(local) = self.local_for(addr) {
            return Self::local_call(local, op, deadline).await;
        }
        let conn = self.conn(addr).await?;
        conn.call(op, Self::remaining(deadline)?).await
    }

    /// [`Client::node_call`] without taking `op` (a retry loop sends it again, uncopied).
    pub(crate) async fn node_call_ref(&self, addr: &str, op: &Op, deadline: Instant) -> Result<Reply, Error> {
        if let Some(local) = self.local_for(addr) {
            return Self::local_call(local, op.clone(), deadline).await;
        }
        let conn = self.conn(addr).await?;
        conn.call_ref(op, Self::remaining(deadline)?).await
    }

    /// The in-process node, when `addr` is its address ([`ClientConfig::local`]).
    fn local_for(&self, addr: &str) -> Option<&ampstore_common::wire::local::Local> {
        self.inner.cfg.local.as_ref().filter(|l| l.0.rpc_addr() == addr)
    }

    async fn local_call(
        local: &ampstore_common::wire::local::Local,
        op: Op,
        deadline: Instant,
    ) -> Result<Reply, Error> {
        let left = Self::remaining(deadline)?;
        tokio::time::timeout(left, local.0.call(op)).await.unwrap_or(Err(Error::Timeout))
    }

    pub(crate) async fn conn(&self, addr: &str) -> Result<Arc<Connection>, Error> {
        self.inner.pool.get(addr).await
    }

    /// Sends `req` to the active master (`ActiveMaster`: the last one that answered first,
    /// then the others, following `NotMaster` hints) until `deadline`.
    pub(crate) async fn master_call<C: Call>(&self, req: C, deadline: Instant) -> Result<C::Reply, Error> {
        self.inner.masters.call_typed(req, deadline).await
    }

    /// The location of the range holding `key`: cached, else asked of the master.
    pub(crate) async fn route(&self, key: &Key, deadline: Instant) -> Result<Arc<RangeLocation>, Error> {
        if let Some(loc) = self.cached(key) {
            return Ok(loc);
        }
        let loc = Arc::new(self.master_call(Locate { key: key.clone() }, deadline).await?);
        self.remember(std::slice::from_ref(&loc));
        Ok(loc)
    }

    /// The location of the range holding the keys just below `end` (reverse scans).
    async fn route_below(
        &self,
        start: &Key,
        end: Option<&Key>,
        deadline: Instant,
    ) -> Result<Arc<RangeLocation>, Error> {
        {
            let routes = self.inner.routes.read().unwrap_or_else(|p| p.into_inner());
            let below = match end {
                Some(e) => routes.range::<Key, _>((Bound::Unbounded, Bound::Excluded(e))).next_back(),
                None => routes.iter().next_back(),
            };
            if let Some((_, loc)) = below
                && match (&loc.end, end) {
                    (None, _) => true,
                    (Some(le), Some(e)) => le >= e,
                    (Some(_), None) => false,
                }
            {
                return Ok(loc.clone());
            }
        }
        let locs = self.master_call(LocateRange { start: start.clone(), end: end.cloned() }, deadline).await?;
        let locs: Vec<Arc<RangeLocation>> = locs.into_iter().map(Arc::new).collect();
        self.remember(&locs);
        // At most `LOCATE_RANGES_MAX` come back; the last one may not reach `end`.
        match locs.last() {
            Some(l) if l.end.as_ref().is_none_or(|le| end.is_some_and(|e| le >= e)) => Ok(l.clone()),
            _ => self.route(&locs.last().and_then(|l| l.end.clone()).unwrap_or_default(), deadline).await,
        }
    }

    pub(crate) fn cached(&self, key: &Key) -> Option<Arc<RangeLocation>> {
        let routes = self.inner.routes.read().unwrap_or_else(|p| p.into_inner());
        let (_, loc) = routes.range::<Key, _>((Bound::Unbounded, Bound::Included(key))).next_back()?;
        loc.contains(key).then(|| loc.clone())
    }

    fn remember(&self, locs: &[Arc<RangeLocation>]) {
        let mut routes = self.inner.routes.write().unwrap_or_else(|p| p.into_inner());
        for loc in locs {
            // Drop cached ranges this one overlaps (bounds changed by a split or merge).
            let stale: Vec<Key> = routes
                .range::<Key, _>((Bound::Unbounded, loc.end.as_ref().map_or(Bound::Unbounded, Bound::Excluded)))
                .filter(|(_, c)| c.end.as_ref().is_none_or(|ce| ce > &loc.start))
                .map(|(s, _)| s.clone())
                .collect();
            for s in stale {
                routes.remove(&s);
            }
            routes.insert(loc.start.clone(), loc.clone());
        }
    }

    fn forget(&self, key: &Key) {
        if let Some(loc) = self.cached(key) {
            self.forget_range(&loc);
        }
    }

    pub(crate) fn forget_range(&self, loc: &RangeLocation) {
        self.inner.routes.write().unwrap_or_else(|p| p.into_inner()).remove(&loc.start);
    }
}

/// Pages of a scan, fetched as they are consumed (see [`Client::scanner`]).
///
/// ```no_run
/// # async fn demo(client: ampstore_client::Client) -> Result<(), ampstore_client::Error> {
/// let mut newest_first = client.scanner("log:", Some("log;".into()), true);
/// if let Some(last) = newest_first.next().await? {
///     println!("latest entry {}", last.key);
/// }
/// # Ok(()) }
/// ```
pub struct Scanner {
    client: Client,
    start: Key,
    end: Option<Key>,
    reverse: bool,
    /// Where the next page begins; `None` once exhausted.
    next: Option<Key>,
    buffer: std::collections::VecDeque<ScanItem>,
    first: bool,
}

impl Scanner {
    /// The next item, `None` at the end.
    pub async fn next(&mut self) -> Result<Option<ScanItem>, Error> {
        if let Some(item) = self.buffer.pop_front() {
            return Ok(Some(item));
        }
        let Some(pos) = self.next.take() else { return Ok(None) };
        let page = if self.reverse {
            let end = if self.first && self.end.is_none() { None } else { Some(pos) };
            self.client.scan(self.start.clone(), end, 1000, true).await?
        } else {
            self.client.scan(pos, self.end.clone(), 1000, false).await?
        };
        self.first = false;
        self.next = page.resume;
        self.buffer.extend(page.items);
        Ok(self.buffer.pop_front())
    }
}

/// The end of a user scan or delete: at most the end of the user key space (lists and
/// queues live above it).
fn user_end(end: Option<Key>) -> Key {
    match end {
        Some(e) if e < Key::user_end() => e,
        _ => Key::user_end(),
    }
}

/// When an attempt of `op` started at `now` gives up: a share of the call deadline between
/// [`ATTEMPT_MIN`] and [`ATTEMPT_MAX`], never past the call's `deadline`. A write without a
/// write id gets the whole call: giving up on it would leave its outcome unknown.
fn attempt_end(op: &Op, call_deadline: Duration, deadline: Instant, now: Instant) -> Instant {
    if op.is_write() && !has_write_id(op) {
        return deadline;
    }
    deadline.min(now + (call_deadline / ATTEMPT_SHARE).clamp(ATTEMPT_MIN, ATTEMPT_MAX))
}

/// [`attempt_end`] for an attempt after one that timed out, on a route fresh from the
/// master: it also ends [`ATTEMPT_LEASE_GRACE`] after the owner's lease as the master sees
/// it (`lease_ms_left`), when a paused owner's range moves and asking again finds the new
/// owner.
fn attempt_end_after_timeout(
    op: &Op,
    call_deadline: Duration,
    lease_ms_left: u64,
    deadline: Instant,
    now: Instant,
) -> Instant {
    if op.is_write() && !has_write_id(op) {
        return deadline;
    }
    let lease_end = now + Duration::from_millis(lease_ms_left) + ATTEMPT_LEASE_GRACE;
    attempt_end(op, call_deadline, deadline, now).min(lease_end)
}

/// Whether a retry of `op` after a timeout is safe (it is applied once whatever happens).
fn has_write_id(op: &Op) -> bool {
    matches!(
        op,
        Op::Push { .. }
            | Op::Enqueue { .. }
            | Op::TaskAck { .. }
            | Op::Put { write_id: Some(_), .. }
            | Op::PutIfVersion { write_id: Some(_), .. }
            | Op::Delete { write_id: Some(_), .. }
            | Op::DeleteRange { write_id: Some(_), .. }
    )
}

#[cfg(test)]
mod open_write_tests {
    use super::*;

    /// A write's floor is the lowest number still open, so it never passes a write that may
    /// still be sent (a range refuses writes below their client's floor).
    #[test]
    fn the_floor_is_the_lowest_open_write() {
        let (open, counter) = (OpenWrites::default(), AtomicU64::new(5));
        let a = open.open(1, &counter);
        assert_eq!((a.id.n, a.id.floor), (5, 5), "alone, a write's floor is its own number");
        let b = open.open(1, &counter);
        let c = open.open(1, &counter);
        assert_eq!((c.id.n, c.id.floor), (7, 5));
        drop(b);
        assert_eq!(open.open(1, &counter).id.floor, 5, "a is still open");
        drop(a);
        assert_eq!(open.open(1, &counter).id.floor, 7, "c is the lowest open now");
        drop(c);
        let last = open.open(1, &counter);
        assert_eq!((last.id.n, last.id.floor), (10, 10));
    }

    /// Writes closed in any order (and numbers taken elsewhere in between, as transaction
    /// and push ids are): every floor is the lowest open number, as a set of the open
    /// numbers says, and closing everything leaves nothing behind.
    #[test]
    fn floors_follow_the_open_set_whatever_the_closing_order() {
        let (open, counter) = (OpenWrites::default(), AtomicU64::new(0));
        let mut model = std::collections::BTreeSet::new();
        let mut live = Vec::new();
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            match x % 8 {
                // A number that is not a plain write (no entry, no floor).
                0 => {
                    counter.fetch_add(1 + x % 3, Ordering::Relaxed);
                }
                1..=4 if live.len() < 40 => {
                    let w = open.open(7, &counter);
                    model.insert(w.id.n);
                    assert_eq!(w.id.floor, *model.first().unwrap());
                    assert_eq!(w.id.client, 7);
                    live.push(w);
                }
                _ if !live.is_empty() => {
                    let w = live.swap_remove((x >> 8) as usize % live.len());
                    model.remove(&w.id.n);
                    drop(w);
                }
                _ => {}
            }
            assert!(open.0.lock().unwrap().iter().eq(model.iter()));
        }
        drop(live);
        assert!(open.0.lock().unwrap().is_empty());
    }

    /// A number below an open one (not reached through `open`, which takes numbers under
    /// its lock) still goes in its place.
    #[test]
    fn a_lower_number_goes_in_order() {
        let (open, counter) = (OpenWrites::default(), AtomicU64::new(10));
        let a = open.open(1, &counter);
        counter.store(3, Ordering::Relaxed);
        let b = open.open(1, &counter);
        assert_eq!((b.id.n, b.id.floor), (3, 3));
        assert!(open.0.lock().unwrap().iter().eq([3, 10].iter()));
        drop(a);
        drop(b);
        assert!(open.0.lock().unwrap().is_empty());
    }

    /// Numbers are taken and floors computed under one lock: from many threads, no write
    /// ever carries a floor above a number another thread opened and has not closed.
    #[test]
    fn concurrent_writes_never_get_a_floor_above_an_open_one() {
        let (open, counter) = (Arc::new(OpenWrites::default()), Arc::new(AtomicU64::new(0)));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (open, counter) = (open.clone(), counter.clone());
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        let w = open.open(1, &counter);
                        // Everything below the floor was closed: none of it is still open.
                        let set = open.0.lock().unwrap();
                        assert!(set.iter().all(|&o| o >= w.id.floor), "floor {} passes an open write", w.id.floor);
                        assert!(set.iter().zip(set.iter().skip(1)).all(|(a, b)| a < b), "kept sorted");
                        assert!(w.id.floor <= w.id.n);
                        drop(set);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }
}

#[cfg(test)]
mod deadline_tests {
    use super::*;
    use ampstore_common::limits::{CLIENT_CALL_DEADLINE_MS_MAX, WRITE_ID_RETENTION_MS};

    #[test]
    fn the_call_deadline_fits_inside_the_write_id_retention() {
        let max = Duration::from_millis(CLIENT_CALL_DEADLINE_MS_MAX);
        assert!(check_call_deadline(max).is_ok());
        assert!(check_call_deadline(max + Duration::from_millis(1)).is_err());
        assert!(check_call_deadline(Duration::ZERO).is_err());
        assert!(check_call_deadline(ClientConfig::new(&["x"]).call_deadline).is_ok(), "the default is allowed");
        const { assert!(CLIENT_CALL_DEADLINE_MS_MAX <= WRITE_ID_RETENTION_MS && WRITE_ID_RETENTION_MS >= 60_000) };
    }

    /// A node that does not answer costs a client at most `ATTEMPT_MAX` per attempt (with
    /// the default 10 s call deadline an attempt used to wait 2.5 s, longer than a whole
    /// failover), and after a timeout no longer than the owner's lease.
    #[test]
    fn an_attempt_gives_up_within_the_failover_time() {
        let now = Instant::now();
        let call = ClientConfig::new(&["x"]).call_deadline;
        let deadline = now + call;
        let get = Get { key: Key::from("k") }.into_op();
        assert_eq!(attempt_end(&get, call, deadline, now), now + ATTEMPT_MAX);
        let short = Duration::from_millis(800);
        assert_eq!(attempt_end(&get, short, now + short, now), now + ATTEMPT_MIN, "at least ATTEMPT_MIN");
        assert_eq!(attempt_end(&get, call, now + Duration::from_millis(300), now), now + Duration::from_millis(300));
        let lease_end = attempt_end_after_timeout(&get, call, 50, deadline, now);
        assert_eq!(lease_end, now + Duration::from_millis(50) + ATTEMPT_LEASE_GRACE);
        assert_eq!(attempt_end_after_timeout(&get, call, 60_000, deadline, now), now + ATTEMPT_MAX);
        // A write without a write id may not be given up on: its outcome would be unknown.
        let put = Op::Put { key: Key::from("k"), value: vec![1], write_id: None };
        assert_eq!(attempt_end(&put, call, deadline, now), deadline);
    }
}
