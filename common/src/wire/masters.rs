//! Calling the active master: whichever of the known masters holds the lease.
//!
//! [`ActiveMaster`] tries the master that answered last first, then the others; a standby
//! answers `NotMaster` with a hint naming the lease holder, which is tried next (and
//! remembered, up to `MASTER_ADDRS_LEARNED_MAX` addresses). No one attempt may take the
//! whole deadline, so a hung master leaves time for the next one. Unless made with
//! [`ActiveMaster::one_pass`], it goes round again with backoff (the hinted delay for
//! `RangeLoading`) until the deadline.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::limits::MASTER_ADDRS_LEARNED_MAX;
use crate::wire::Call;
use crate::wire::pool::Pool;
use crate::wire::protocol::{Op, Reply};

/// The first pause between two rounds over the masters; it doubles up to `BACKOFF_MAX`.
pub const BACKOFF_START: Duration = Duration::from_millis(10);
/// The longest pause between two rounds (and the longest `RangeLoading` wait honoured). A
/// client waiting out a failover (about 1 s at default settings) tries again at most this
/// long after the keys came back.
pub const BACKOFF_MAX: Duration = Duration::from_millis(200);
/// By default one attempt gets at most this share of the call's deadline...
pub const ATTEMPT_SHARE: u32 = 4;
/// ...and at least this long...
pub const ATTEMPT_MIN: Duration = Duration::from_millis(500);
/// ...and at most this long: a node that does not answer (stopped, paused, cut off) costs a
/// client one second, after which it asks the master again; failover at default settings
/// takes about as long. A retried write carries its write id, so a slow attempt given up on
/// is applied once.
pub const ATTEMPT_MAX: Duration = Duration::from_millis(1000);
/// After an attempt timed out, the next one (on a route fresh from the master) also ends
/// this long after the owner's lease as the master sees it: a paused owner's ranges move
/// when that lease runs out, and the client should be asking again by then.
pub const ATTEMPT_LEASE_GRACE: Duration = Duration::from_millis(100);

/// The masters of one cluster, and which of them answered last.
///
/// ```no_run
/// # async fn demo() -> Result<(), ampstore_common::Error> {
/// use std::sync::Arc;
/// use std::time::{Duration, Instant};
/// use ampstore_common::protocol::Role;
/// use ampstore_common::wire::{masters::ActiveMaster, pool::Pool, routing::Locate};
/// let pool = Arc::new(Pool::new(Role::Client, "my-app", None));
/// let masters = ActiveMaster::new(vec!["127.0.0.1:7300".into(), "127.0.0.1:7310".into()], pool)?;
/// let loc = masters.call_typed(Locate { key: "user:1".into() }, Instant::now() + Duration::from_secs(5)).await?;
/// # Ok(()) }
/// ```
pub struct ActiveMaster {
    given: Vec<String>,
    /// Addresses learned from `NotMaster` hints that were not given.
    learned: Mutex<Vec<String>>,
    last_good: Mutex<Option<String>>,
    pool: Arc<Pool>,
    attempt: Option<Duration>,
    one_pass: bool,
}

impl std::fmt::Debug for ActiveMaster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActiveMaster").field("addrs", &self.addrs()).finish()
    }
}

impl ActiveMaster {
    /// The masters at `addrs` (any of them; at least one), called through `pool`.
    pub fn new(addrs: Vec<String>, pool: Arc<Pool>) -> Result<ActiveMaster, Error> {
        if addrs.is_empty() {
            return Err(Error::invalid("no master address given"));
        }
        Ok(ActiveMaster {
            given: addrs,
            learned: Mutex::default(),
            last_good: Mutex::default(),
            pool,
            attempt: None,
            one_pass: false,
        })
    }

    /// Gives each attempt at most `limit` (instead of a share of the call's deadline).
    pub fn attempt_limit(mut self, limit: Duration) -> ActiveMaster {
        self.attempt = Some(limit);
        self
    }

    /// Tries each master once per call and gives up with the last error (interactive
    /// tools), instead of going round again until the deadline.
    pub fn one_pass(mut self) -> ActiveMaster {
        self.one_pass = true;
        self
    }

    /// The pool the masters are called through.
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// Every known address: the given ones, then the learned ones.
    pub fn addrs(&self) -> Vec<String> {
        let mut all = self.given.clone();
        all.extend(lock(&self.learned).iter().cloned());
        all
    }

    /// Sends a typed request to the active master until `deadline`.
    pub async fn call_typed<C: Call>(&self, req: C, deadline: Instant) -> Result<C::Reply, Error> {
        C::reply(self.call(req.into_op(), deadline).await?)
    }

    /// Sends `op` to the active master until `deadline`. Errors that are not retryable
    /// (`Invalid`, `Unauthorized`, ...) come back at once; otherwise the last error once
    /// the deadline (or, with `one_pass`, the round) is over.
    pub async fn call(&self, op: Op, deadline: Instant) -> Result<Reply, Error> {
        let share = self.attempt.unwrap_or_else(|| {
            (deadline.saturating_duration_since(Instant::now()) / ATTEMPT_SHARE).clamp(ATTEMPT_MIN, ATTEMPT_MAX)
        });
        let mut backoff = BACKOFF_START;
        loop {
            let mut queue: VecDeque<String> = self.order().into();
            let mut tried: Vec<String> = Vec::new();
            let mut last = Error::unavailable("no master answered");
            while let Some(addr) = queue.pop_front() {
                if tried.contains(&addr) {
                    continue;
                }
                tried.push(addr.clone());
                let Some(left) = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) else {
                    last = Error::Timeout;
                    continue;
                };
                match self.pool.call_ref(&addr, &op, left.min(share)).await {
                    Ok(r) => {
                        *lock(&self.last_good) = Some(addr);
                        return Ok(r);
                    }
                    Err(Error::NotMaster { hint: Some(h) }) => {
                        self.learn(&h.rpc_addr);
                        if !tried.contains(&h.rpc_addr) {
                            queue.retain(|a| a != &h.rpc_addr);
                            queue.push_front(h.rpc_addr.clone());
                        }
                        last = Error::NotMaster { hint: Some(h) };
                    }
                    Err(e) if e.is_retryable() => last = e,
                    Err(e) => return Err(e),
                }
            }
            if self.one_pass {
                return Err(last);
            }
            wait(&last, &mut backoff, deadline).await?;
        }
    }

    /// The order of one round: the last good master first, then the rest.
    fn order(&self) -> Vec<String> {
        let mut all = self.addrs();
        if let Some(good) = lock(&self.last_good).clone()
            && let Some(i) = all.iter().position(|a| a == &good)
        {
            let good = all.remove(i);
            all.insert(0, good);
        }
        all
    }

    fn learn(&self, addr: &str) {
        if self.given.iter().any(|a| a == addr) {
            return;
        }
        let mut learned = lock(&self.learned);
        if !learned.iter().any(|a| a == addr) && learned.len() < MASTER_ADDRS_LEARNED_MAX {
            learned.push(addr.to_string());
        }
    }
}

/// Sleeps before the next round or retry (the server's hint for `RangeLoading`, else
/// doubling backoff), or gives up with `e` when the deadline would pass. The client's
/// retries use it too.
pub async fn wait(e: &Error, backoff: &mut Duration, deadline: Instant) -> Result<(), Error> {
    let pause = match e {
        Error::RangeLoading { retry_after_ms } => Duration::from_millis(*retry_after_ms).min(BACKOFF_MAX),
        _ => *backoff,
    };
    *backoff = (*backoff * 2).min(BACKOFF_MAX);
    if Instant::now() + pause >= deadline {
        return Err(e.clone());
    }
    tokio::time::sleep(pause).await;
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Address lists hold no invariant a panicking holder could break: keep going.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::error::OwnerHint;
    use crate::ids::NodeId;
    use crate::wire::data::Ping;
    use crate::wire::pool::test_server;
    use crate::wire::protocol::Role;

    fn pool() -> Arc<Pool> {
        Arc::new(Pool::new(Role::Client, "test", None))
    }

    fn hint(addr: &str) -> Error {
        Error::NotMaster { hint: Some(OwnerHint { node_id: NodeId::new("m").unwrap(), rpc_addr: addr.to_string() }) }
    }

    /// A master that counts its calls and answers with `answer`.
    async fn master(answer: test_server::Answer) -> (String, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let addr = test_server::spawn(Arc::new(move |op| {
            c.fetch_add(1, Ordering::SeqCst);
            answer(op)
        }))
        .await;
        (addr, calls)
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    #[tokio::test]
    async fn follows_a_hint_and_then_asks_the_last_good_master_first() {
        let (active, active_calls) = master(Arc::new(|_| Ok(Reply::Pong))).await;
        let hinted = active.clone();
        let (standby, standby_calls) = master(Arc::new(move |_| Err(hint(&hinted)))).await;
        let masters = ActiveMaster::new(vec![standby.clone()], pool()).unwrap();
        masters.call_typed(Ping, soon()).await.unwrap();
        assert_eq!(standby_calls.load(Ordering::SeqCst), 1);
        assert_eq!(active_calls.load(Ordering::SeqCst), 1, "the hint was followed");
        assert_eq!(masters.addrs(), vec![standby, active.clone()], "the hinted address is learned");
        masters.call_typed(Ping, soon()).await.unwrap();
        assert_eq!(standby_calls.load(Ordering::SeqCst), 1, "the last good master is asked first");
        assert_eq!(active_calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn hints_that_point_at_each_other_end_with_the_deadline() {
        let (a, _) = master(Arc::new(|_| Err(Error::NotMaster { hint: None }))).await;
        let a2 = a.clone();
        let (b, b_calls) = master(Arc::new(move |_| Err(hint(&a2)))).await;
        let masters = ActiveMaster::new(vec![a, b], pool()).unwrap().one_pass();
        let err = masters.call(Op::Ping, soon()).await.unwrap_err();
        assert!(matches!(err, Error::NotMaster { .. }), "{err:?}");
        assert_eq!(b_calls.load(Ordering::SeqCst), 1, "one round asks each master once");
        let started = Instant::now();
        let masters = ActiveMaster::new(masters.addrs(), pool()).unwrap();
        let err = masters.call(Op::Ping, Instant::now() + Duration::from_millis(300)).await.unwrap_err();
        assert!(matches!(err, Error::NotMaster { .. }), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(2), "gives up at the deadline");
    }

    #[tokio::test]
    async fn a_refusal_comes_back_at_once_and_a_wrong_reply_is_typed() {
        let (m, calls) = master(Arc::new(|_| Err(Error::Unauthorized { reason: "no".into() }))).await;
        let (other, other_calls) = master(Arc::new(|_| Ok(Reply::Pong))).await;
        let masters = ActiveMaster::new(vec![m, other.clone()], pool()).unwrap();
        let err = masters.call_typed(Ping, soon()).await.unwrap_err();
        assert!(matches!(err, Error::Unauthorized { .. }));
        assert_eq!((calls.load(Ordering::SeqCst), other_calls.load(Ordering::SeqCst)), (1, 0));
        let masters = ActiveMaster::new(vec![other], pool()).unwrap();
        let err = masters.call_typed(crate::wire::routing::Members, soon()).await.unwrap_err();
        assert_eq!(err, Error::internal("members answered with pong"));
    }

    #[tokio::test]
    async fn an_unreachable_master_is_skipped() {
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        };
        let (live, _) = master(Arc::new(|_| Ok(Reply::Pong))).await;
        let masters = ActiveMaster::new(vec![dead, live], pool()).unwrap();
        masters.call_typed(Ping, soon()).await.unwrap();
        assert!(ActiveMaster::new(Vec::new(), pool()).is_err(), "at least one address");
    }

    #[test]
    fn learned_addresses_are_bounded() {
        let masters = ActiveMaster::new(vec!["m0:1".into()], pool()).unwrap();
        for i in 0..MASTER_ADDRS_LEARNED_MAX + 5 {
            masters.learn(&format!("h{i}:1"));
        }
        masters.learn("m0:1");
        assert_eq!(masters.addrs().len(), 1 + MASTER_ADDRS_LEARNED_MAX);
    }
}
