//! A test aid: a [`MetaStore`] that commits writes in the real store it wraps and then
//! loses their responses on purpose.
//!
//! A write over a network can land while its answer never arrives: the caller then sees a
//! timeout, or (the AWS SDK's standard retry) resends the same write, whose condition now
//! fails against the first attempt's result. Tests wrap a real local or AWS meta store in
//! [`ResponseLosingMeta`], schedule either failure, and drive real heartbeat, lease and
//! checkpoint code through it. Nothing outside tests uses it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;

use super::{Backend, Expect, MetaItem, MetaOp, MetaStore, StoreError, StoreResult};

/// Wraps a real meta store; reads pass through, writes are committed by the real store and
/// then, per the schedule, answered as if the response had been lost.
pub struct ResponseLosingMeta {
    inner: Arc<dyn MetaStore>,
    /// Committed writes still to be answered `Unavailable` (a lost response, no retry).
    to_answer_unavailable: AtomicU32,
    /// Committed writes still to be sent a second time, answering with the second outcome
    /// (a lost response retried by the SDK).
    to_resend: AtomicU32,
    /// Writes whose response was lost so far.
    lost: AtomicU32,
}

/// Takes one unit from `counter` if it is above zero.
fn take_one(counter: &AtomicU32) -> bool {
    counter.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1)).is_ok()
}

/// What to do with a write that the real store committed.
enum AfterCommit {
    Answer,
    AnswerUnavailable,
    Resend,
}

impl ResponseLosingMeta {
    pub fn new(inner: Arc<dyn MetaStore>) -> Arc<ResponseLosingMeta> {
        Arc::new(ResponseLosingMeta {
            inner,
            to_answer_unavailable: AtomicU32::new(0),
            to_resend: AtomicU32::new(0),
            lost: AtomicU32::new(0),
        })
    }

    /// `backend` with its meta store wrapped, and the wrapper (to schedule losses on).
    pub fn wrap_backend(backend: &Backend) -> (Backend, Arc<ResponseLosingMeta>) {
        let wrapper = ResponseLosingMeta::new(backend.meta.clone());
        let wrapped = Backend { log: backend.log.clone(), meta: wrapper.clone(), blobs: backend.blobs.clone() };
        (wrapped, wrapper)
    }

    /// The next `n` writes that commit answer `Unavailable`: the caller cannot tell whether
    /// they landed.
    pub fn answer_unavailable_after_next_commits(&self, n: u32) {
        self.to_answer_unavailable.fetch_add(n, Ordering::AcqRel);
    }

    /// The next `n` writes that commit are sent once more, unchanged, and the caller gets the
    /// second answer, as after a retry by the AWS SDK.
    pub fn resend_after_next_commits(&self, n: u32) {
        self.to_resend.fetch_add(n, Ordering::AcqRel);
    }

    /// How many responses were lost so far (tests check the schedule was used).
    pub fn responses_lost(&self) -> u32 {
        self.lost.load(Ordering::Acquire)
    }

    fn after_commit(&self) -> AfterCommit {
        let next = if take_one(&self.to_resend) {
            AfterCommit::Resend
        } else if take_one(&self.to_answer_unavailable) {
            AfterCommit::AnswerUnavailable
        } else {
            return AfterCommit::Answer;
        };
        self.lost.fetch_add(1, Ordering::AcqRel);
        next
    }
}

fn lost_response() -> StoreError {
    StoreError::Unavailable("the response was lost (injected by ResponseLosingMeta)".into())
}

#[async_trait]
impl MetaStore for ResponseLosingMeta {
    async fn get(&self, pk: &str, sk: &[u8]) -> StoreResult<Option<MetaItem>> {
        self.inner.get(pk, sk).await
    }

    async fn put(&self, pk: &str, sk: &[u8], value: &[u8], expect: Expect) -> StoreResult<u64> {
        let version = self.inner.put(pk, sk, value, expect.clone()).await?;
        match self.after_commit() {
            AfterCommit::Answer => Ok(version),
            AfterCommit::AnswerUnavailable => Err(lost_response()),
            AfterCommit::Resend => self.inner.put(pk, sk, value, expect).await,
        }
    }

    async fn delete(&self, pk: &str, sk: &[u8], expect: Expect) -> StoreResult<()> {
        self.inner.delete(pk, sk, expect.clone()).await?;
        match self.after_commit() {
            AfterCommit::Answer => Ok(()),
            AfterCommit::AnswerUnavailable => Err(lost_response()),
            AfterCommit::Resend => self.inner.delete(pk, sk, expect).await,
        }
    }

    async fn transact(&self, ops: &[MetaOp]) -> StoreResult<()> {
        self.inner.transact(ops).await?;
        match self.after_commit() {
            AfterCommit::Answer => Ok(()),
            AfterCommit::AnswerUnavailable => Err(lost_response()),
            AfterCommit::Resend => self.inner.transact(ops).await,
        }
    }

    async fn query(&self, pk: &str, from: &[u8], limit: usize) -> StoreResult<Vec<(Vec<u8>, MetaItem)>> {
        self.inner.query(pk, from, limit).await
    }
}
