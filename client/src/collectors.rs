//! Sending pushes and enqueues through collectors (DESIGN section 9): a collector batches
//! them per range and answers each once it is durable. The client keeps a list of
//! collectors, sticks to the one that answered last, moves to the next when one fails, and
//! goes to the nodes directly when none answers. Both operations are idempotent (push ids,
//! task ids), so sending one again elsewhere never applies it twice.

use std::sync::atomic::Ordering;

use ampstore_common::member::MemberState;
use ampstore_common::protocol::{Op, RangeLocation, Reply, Role};
use ampstore_common::wire::Call;
use ampstore_common::wire::routing::Members;
use ampstore_common::{Error, ErrorCode, Key};

use crate::client::Client;

impl Client {
    /// Finds the cluster's live collectors through the master's gossip view and sends
    /// pushes and enqueues through them from now on. Returns how many it found (0: direct).
    ///
    /// ```no_run
    /// # async fn demo(client: ampstore_client::Client) -> Result<(), ampstore_client::Error> {
    /// if client.discover_collectors().await? > 0 {
    ///     client.push("clicks", b"home".to_vec()).await?; // batched by a collector
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn discover_collectors(&self) -> Result<usize, Error> {
        let members = self.master_call(Members, self.deadline()).await?;
        let found: Vec<String> = members
            .into_iter()
            .filter(|m| m.role == Some(Role::Collector) && m.state == MemberState::Alive)
            .filter_map(|m| m.rpc)
            .collect();
        let n = found.len();
        self.set_collectors(found);
        Ok(n)
    }

    /// Uses these collectors from now on (empty: send directly to the nodes).
    pub fn set_collectors(&self, addrs: Vec<String>) {
        *self.inner.collectors.write().unwrap_or_else(|p| p.into_inner()) = addrs;
    }

    pub fn collectors(&self) -> Vec<String> {
        self.inner.collectors.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The range holding `key` as the route cache has it, without asking anyone (`None`: not
    /// cached).
    pub fn cached_range_id(&self, key: &Key) -> Option<ampstore_common::RangeId> {
        self.cached(key).map(|loc| loc.range_id)
    }

    /// Where the range holding `key` is served (from the route cache when it can).
    pub async fn locate_cached(&self, key: &Key) -> Result<RangeLocation, Error> {
        Ok(RangeLocation::clone(&*self.route(key, self.deadline()).await?))
    }

    /// `req` sent once to the node at `addr`, within the call deadline (no re-routing).
    pub async fn call_node<C: Call>(&self, addr: &str, req: C) -> Result<C::Reply, Error> {
        C::reply(self.node_call(addr, req.into_op(), self.deadline()).await?)
    }

    /// Sends an idempotent `op` through a collector if the client has any: `None` when
    /// none answered (the caller goes direct).
    pub(crate) async fn via_collector(&self, op: &Op) -> Option<Result<Reply, Error>> {
        let collectors = self.collectors();
        if collectors.is_empty() {
            return None;
        }
        let first = self.inner.collector.load(Ordering::Relaxed);
        for k in 0..collectors.len() {
            let i = (first + k) % collectors.len();
            match self.node_call_ref(&collectors[i], op, self.deadline()).await {
                Ok(reply) => {
                    self.inner.collector.store(i, Ordering::Relaxed);
                    return Some(Ok(reply));
                }
                // The request itself is wrong: no other path will take it either.
                Err(e) if matches!(e.code(), ErrorCode::Invalid | ErrorCode::TooLarge | ErrorCode::Unauthorized) => {
                    return Some(Err(e));
                }
                Err(e) => tracing::debug!(collector = %collectors[i], error = %e, "collector failed; trying the next"),
            }
        }
        None
    }
}
