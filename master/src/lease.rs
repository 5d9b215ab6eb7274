//! The master lease, "noisy tyrant" style (DESIGN section 4).
//!
//! The active master rewrites the lease item with a fresh random `rvn` every heartbeat,
//! conditional on the version it last wrote. A standby watches the item and takes over, by
//! a conditional write that bumps `term`, only after it has seen the same `rvn` for a full
//! `lease_ms` on its own monotonic clock: no clocks are compared between machines. The
//! active master counts itself active only until `send time of its last successful renewal +
//! lease_ms - margin_ms`, so a paused master stops acting before anyone can take over.
//!
//! [`LeaseCore`] is the decision logic, with time passed in (tested deterministically);
//! [`tick`] is one round against the meta store. Its writes go through `own_write`: a retry
//! that fails its condition on the lease this very round wrote (same fresh `rvn`) keeps the
//! lease; only someone else's lease loses it.

use std::time::{Duration, Instant};

use ampstore_common::{NodeId, Term};
use ampstore_store::meta::{self, LeaseRecord, PK_MASTER, SK_LEASE, SK_TERM, TermRecord, Versioned};
use ampstore_store::{Expect, MetaOp, MetaStore, StoreError, own_write};

/// What to write next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Nothing to write: someone else holds a lease that is still being renewed.
    Wait,
    /// No lease exists: create it in `term`.
    Create { term: Term },
    /// We hold it: rewrite it, conditional on `version`.
    Renew { version: u64, term: Term },
    /// The holder stopped renewing: take it over in `term`, conditional on `version`.
    TakeOver { version: u64, term: Term },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Role {
    Standby,
    Active { term: Term, version: u64, valid_until: Instant },
}

pub(crate) struct LeaseCore {
    me: NodeId,
    lease: Duration,
    margin: Duration,
    role: Role,
    /// The holder's `rvn` as last seen, and when it was first seen (our clock).
    seen: Option<(u64, Instant)>,
    holder: Option<(NodeId, String)>,
}

impl LeaseCore {
    pub(crate) fn new(me: NodeId, lease_ms: u64, margin_ms: u64) -> LeaseCore {
        debug_assert!(margin_ms < lease_ms);
        LeaseCore {
            me,
            lease: Duration::from_millis(lease_ms),
            margin: Duration::from_millis(margin_ms),
            role: Role::Standby,
            seen: None,
            holder: None,
        }
    }

    /// The term we are active in at `now`, if any. Every routing write is conditional on it.
    pub(crate) fn active_term(&self, now: Instant) -> Option<Term> {
        match &self.role {
            Role::Active { term, valid_until, .. } if now < *valid_until => Some(*term),
            _ => None,
        }
    }

    /// The term we hold and the instant (our clock) until which we may act in it.
    pub(crate) fn active_until(&self) -> Option<(Term, Instant)> {
        match &self.role {
            Role::Active { term, valid_until, .. } => Some((*term, *valid_until)),
            Role::Standby => None,
        }
    }

    /// The lease holder and its RPC address as last read.
    pub(crate) fn holder(&self) -> Option<&(NodeId, String)> {
        self.holder.as_ref()
    }

    /// Decides the next write from the lease item as just read.
    pub(crate) fn next_step(&mut self, now: Instant, current: Option<&Versioned<LeaseRecord>>) -> Step {
        self.holder = current.map(|c| (c.record.holder.clone(), c.record.rpc_addr.clone()));
        let Some(cur) = current else {
            self.role = Role::Standby;
            self.seen = None;
            return Step::Create { term: Term(1) };
        };
        let rec = &cur.record;
        if let Role::Active { term, version, .. } = &self.role
            && rec.holder == self.me
            && rec.term == *term
            && cur.version == *version
        {
            return Step::Renew { version: cur.version, term: *term };
        }
        // Someone else's lease (or ours from a term we no longer hold).
        self.role = Role::Standby;
        match self.seen {
            Some((rvn, since)) if rvn == rec.rvn => {
                if now.saturating_duration_since(since) >= self.lease {
                    match rec.term.next() {
                        Ok(term) => Step::TakeOver { version: cur.version, term },
                        // A damaged lease at the last term: no takeover can be ordered after
                        // it, so nobody takes over (an operator must repair the record).
                        Err(e) => {
                            tracing::error!(error = %e, "the master lease cannot be taken over");
                            Step::Wait
                        }
                    }
                } else {
                    Step::Wait
                }
            }
            _ => {
                self.seen = Some((rec.rvn, now));
                Step::Wait
            }
        }
    }

    /// A `Create`, `Renew` or `TakeOver` sent at `sent_at` succeeded: the item is now at
    /// `version` in `term`.
    pub(crate) fn on_written(&mut self, term: Term, version: u64, sent_at: Instant) {
        self.seen = None;
        self.role = Role::Active { term, version, valid_until: sent_at + (self.lease - self.margin) };
    }

    /// A conditional write failed: someone else wrote the item. We are not active.
    pub(crate) fn on_lost(&mut self) {
        self.role = Role::Standby;
        self.seen = None;
    }
}

/// One round: read the lease, decide, write. Returns the active term afterwards, if any.
pub(crate) async fn tick(
    meta_store: &dyn MetaStore,
    core: &mut LeaseCore,
    rpc_addr: &str,
) -> Result<Option<Term>, StoreError> {
    let now = Instant::now();
    let current = match meta_store.get(PK_MASTER, SK_LEASE).await? {
        Some(item) => {
            Some(Versioned { version: item.version, record: meta::decode::<LeaseRecord>("lease", &item.value)? })
        }
        None => None,
    };
    let (term, expect) = match core.next_step(now, current.as_ref()) {
        Step::Wait => return Ok(core.active_term(Instant::now())),
        Step::Create { term } => (term, Expect::Absent),
        Step::Renew { version, term } | Step::TakeOver { version, term } => (term, Expect::Version(version)),
    };
    let record = LeaseRecord {
        holder: core.me.clone(),
        term,
        rvn: rand::random(),
        rpc_addr: rpc_addr.to_string(),
        lease_ms: core.lease.as_millis() as u64,
    };
    let sent_at = Instant::now();
    let renewal = matches!(expect, Expect::Version(_)) && core.active_term(sent_at).is_some();
    let written = if renewal {
        own_write::put(meta_store, PK_MASTER, SK_LEASE, &meta::encode(&record), expect).await
    } else {
        // A new term: the lease and the term item change together, so a deposed master's
        // routing writes (which check the term item) fail from this moment on.
        let term_record = TermRecord { term, holder: core.me.clone() };
        let ops = [
            MetaOp::Put { pk: PK_MASTER.into(), sk: SK_LEASE.to_vec(), value: meta::encode(&record), expect },
            MetaOp::Put {
                pk: PK_MASTER.into(),
                sk: SK_TERM.to_vec(),
                value: meta::encode(&term_record),
                expect: Expect::Any,
            },
        ];
        match own_write::transact(meta_store, &ops).await {
            Ok(()) => meta_store
                .get(PK_MASTER, SK_LEASE)
                .await?
                .map(|i| i.version)
                .ok_or_else(|| StoreError::Unavailable("the lease vanished right after it was written".into())),
            Err(e) => Err(e),
        }
    };
    match written {
        Ok(version) => {
            core.on_written(term, version, sent_at);
            core.holder = Some((core.me.clone(), rpc_addr.to_string()));
        }
        Err(StoreError::ConditionFailed { .. }) => core.on_lost(),
        Err(e) => return Err(e),
    }
    Ok(core.active_term(Instant::now()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ampstore_server::config::LocalConfig;
    use ampstore_store::local::LocalStore;
    use ampstore_store::lost_responses::ResponseLosingMeta;

    fn lease(holder: &str, term: u64, rvn: u64, version: u64) -> Versioned<LeaseRecord> {
        Versioned {
            version,
            record: LeaseRecord {
                holder: NodeId::new(holder).unwrap(),
                term: Term(term),
                rvn,
                rpc_addr: String::new(),
                lease_ms: 1000,
            },
        }
    }

    fn core(me: &str) -> LeaseCore {
        LeaseCore::new(NodeId::new(me).unwrap(), 1000, 200)
    }

    #[test]
    fn creates_then_renews() {
        let t0 = Instant::now();
        let mut a = core("a");
        assert_eq!(a.next_step(t0, None), Step::Create { term: Term(1) });
        a.on_written(Term(1), 1, t0);
        assert_eq!(a.active_term(t0), Some(Term(1)));
        assert_eq!(a.next_step(t0, Some(&lease("a", 1, 7, 1))), Step::Renew { version: 1, term: Term(1) });
        // Active only until send time + lease - margin.
        assert_eq!(a.active_term(t0 + Duration::from_millis(799)), Some(Term(1)));
        assert_eq!(a.active_term(t0 + Duration::from_millis(800)), None);
    }

    /// A lease damaged to the last term cannot be taken over (no term follows it): the
    /// standby waits and logs, where it used to panic in debug builds or wrap to term 0.
    #[test]
    fn a_lease_at_the_last_term_is_not_taken_over() {
        let t0 = Instant::now();
        let mut b = core("b");
        assert_eq!(b.next_step(t0, Some(&lease("a", u64::MAX, 5, 9))), Step::Wait);
        let later = t0 + Duration::from_millis(5000);
        assert_eq!(b.next_step(later, Some(&lease("a", u64::MAX, 5, 9))), Step::Wait);
        // One below the last term still has a successor.
        assert_eq!(b.next_step(later, Some(&lease("a", u64::MAX - 1, 6, 10))), Step::Wait);
        assert_eq!(
            b.next_step(later + Duration::from_millis(1000), Some(&lease("a", u64::MAX - 1, 6, 10))),
            Step::TakeOver { version: 10, term: Term(u64::MAX) }
        );
    }

    #[test]
    fn standby_waits_while_rvn_changes_and_takes_over_after_a_full_lease() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut b = core("b");
        // The holder keeps renewing: new rvn each time, so B never takes over.
        for (i, t) in [0u64, 900, 1800, 2700].into_iter().enumerate() {
            assert_eq!(b.next_step(ms(t), Some(&lease("a", 3, i as u64, i as u64 + 1))), Step::Wait);
        }
        // The holder stops: the same rvn for less than a lease is not enough...
        assert_eq!(b.next_step(ms(3000), Some(&lease("a", 3, 99, 9))), Step::Wait);
        assert_eq!(b.next_step(ms(3999), Some(&lease("a", 3, 99, 9))), Step::Wait);
        // ...a full lease on B's own clock is.
        assert_eq!(b.next_step(ms(4000), Some(&lease("a", 3, 99, 9))), Step::TakeOver { version: 9, term: Term(4) });
        assert_eq!(b.active_term(ms(4000)), None, "not active before the write lands");
    }

    #[test]
    fn an_active_master_that_sees_another_holder_steps_down() {
        let t0 = Instant::now();
        let mut a = core("a");
        a.on_written(Term(1), 1, t0);
        assert_eq!(a.next_step(t0, Some(&lease("b", 2, 5, 2))), Step::Wait);
        assert_eq!(a.active_term(t0), None);
        // Our own record from an older term does not count as ours either.
        let mut a = core("a");
        a.on_written(Term(2), 4, t0);
        assert_eq!(a.next_step(t0, Some(&lease("a", 1, 5, 3))), Step::Wait);
    }

    #[tokio::test]
    async fn two_masters_one_active_and_takeover_bumps_the_term() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalStore::open(dir.path(), &LocalConfig::default()).unwrap().backend();
        let mut a = LeaseCore::new(NodeId::new("a").unwrap(), 300, 50);
        let mut s = LeaseCore::new(NodeId::new("s").unwrap(), 300, 50);
        assert_eq!(tick(b.meta.as_ref(), &mut a, "a:1").await.unwrap(), Some(Term(1)));
        // While A renews, the standby never becomes active.
        for _ in 0..6 {
            assert_eq!(tick(b.meta.as_ref(), &mut s, "s:1").await.unwrap(), None);
            assert_eq!(tick(b.meta.as_ref(), &mut a, "a:1").await.unwrap(), Some(Term(1)));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // A stops renewing (killed or paused): after a full lease the standby takes over.
        let stopped = Instant::now();
        let term = loop {
            if let Some(t) = tick(b.meta.as_ref(), &mut s, "s:1").await.unwrap() {
                break t;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(term, Term(2));
        assert!(stopped.elapsed() >= Duration::from_millis(300), "took over after {:?}", stopped.elapsed());
        // A comes back: its own clock says its lease ran out, and it sees the new holder,
        // so it stays standby (a renewal racing the takeover would fail on the version).
        assert_eq!(a.active_term(Instant::now()), None);
        assert_eq!(tick(b.meta.as_ref(), &mut a, "a:1").await.unwrap(), None);
        assert_eq!(tick(b.meta.as_ref(), &mut s, "s:1").await.unwrap(), Some(Term(2)));
    }

    #[tokio::test]
    async fn lease_renewal_whose_response_was_lost_keeps_the_lease() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalStore::open(dir.path(), &LocalConfig::default()).unwrap().backend();
        let (wrapped, losing) = ResponseLosingMeta::wrap_backend(&b);
        let meta = wrapped.meta.as_ref();
        let mut a = LeaseCore::new(NodeId::new("a").unwrap(), 3000, 500);
        assert_eq!(tick(meta, &mut a, "a:1").await, Ok(Some(Term(1))));
        losing.answer_unavailable_after_next_commits(1);
        assert_eq!(tick(meta, &mut a, "a:1").await, Ok(Some(Term(1))), "the renewal whose response was lost");
        losing.resend_after_next_commits(1);
        assert_eq!(tick(meta, &mut a, "a:1").await, Ok(Some(Term(1))), "the renewal resent after a lost response");
        assert_eq!(losing.responses_lost(), 2);
        assert_eq!(tick(meta, &mut a, "a:1").await, Ok(Some(Term(1))), "the next renewal");
    }

    #[tokio::test]
    async fn lease_creation_whose_response_was_lost_takes_the_lease() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalStore::open(dir.path(), &LocalConfig::default()).unwrap().backend();
        let (wrapped, losing) = ResponseLosingMeta::wrap_backend(&b);
        let meta = wrapped.meta.as_ref();
        let mut a = LeaseCore::new(NodeId::new("a").unwrap(), 3000, 500);
        losing.answer_unavailable_after_next_commits(1);
        assert_eq!(tick(meta, &mut a, "a:1").await, Ok(Some(Term(1))));
        assert_eq!(losing.responses_lost(), 1);
        assert_eq!(tick(meta, &mut a, "a:1").await, Ok(Some(Term(1))), "the next renewal");
        assert_eq!(meta::get_term(meta).await.unwrap().map(|t| t.term), Some(Term(1)));
    }

    #[tokio::test]
    async fn renewal_whose_condition_fails_on_another_masters_lease_is_still_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalStore::open(dir.path(), &LocalConfig::default()).unwrap().backend();
        let mut a = LeaseCore::new(NodeId::new("a").unwrap(), 3000, 500);
        assert_eq!(tick(b.meta.as_ref(), &mut a, "a:1").await, Ok(Some(Term(1))));
        // Another master wrote the lease after our read: the read-back finds its value, not ours.
        let cur = meta::get_lease(b.meta.as_ref()).await.unwrap().unwrap();
        let theirs = LeaseRecord { holder: NodeId::new("s").unwrap(), term: Term(2), rvn: 1, ..cur.record.clone() };
        b.meta.put(PK_MASTER, SK_LEASE, &meta::encode(&theirs), Expect::Version(cur.version)).await.unwrap();
        let step = a.next_step(Instant::now(), Some(&cur));
        assert_eq!(step, Step::Renew { version: cur.version, term: Term(1) });
        let mine = LeaseRecord { holder: a.me.clone(), term: Term(1), rvn: 2, rpc_addr: "a:1".into(), lease_ms: 3000 };
        let written =
            own_write::put(b.meta.as_ref(), PK_MASTER, SK_LEASE, &meta::encode(&mine), Expect::Version(cur.version))
                .await;
        assert!(matches!(written, Err(StoreError::ConditionFailed { .. })), "{written:?}");
    }
}
