//! The master's RPC service: locate, drain, status, members, and the split and merge
//! commits nodes send. Decisions are `ControlState` methods and the pure checks of
//! `commits.rs`; this file reads and writes meta around them.

use std::sync::Arc;
use std::time::Instant;

use ampstore_common::error::Error;
use ampstore_common::protocol::{Op, PROTOCOL_VERSION, Reply, Role, ServerInfo};
use ampstore_common::{Key, NodeId};
use ampstore_server::metrics::Metrics;
use ampstore_server::rpc::Service;
use ampstore_store::meta::{self, DrainRecord, Owner, PK_DRAIN};
use ampstore_store::{Expect, MetaOp};

use crate::commits::{self, Commit, MergeRequest, MergeStep, SplitRequest, SplitStep};
use crate::driver::Master;

impl Master {
    async fn locate_many(self: &Arc<Self>, start: Key, end: Option<Key>, one: bool) -> Result<Reply, Error> {
        let located = self.with_state(|st| st.locate(Instant::now(), &self.id, &start, end.as_ref(), one));
        for start in located.place {
            tokio::spawn(self.clone().assign(start));
        }
        located.answer
    }

    /// Replaces a split parent by its two children (owned by the parent's owner) in one
    /// transactional, term-checked update. Repeating a committed split answers the same.
    async fn commit_split(&self, req: SplitRequest) -> Result<Reply, Error> {
        let term = self.acting_term().ok_or_else(|| self.not_master())?;
        let done = Reply::SplitDone { left_id: req.left.0, right_id: req.right.0 };
        let parent = meta::get_range(self.meta(), &req.parent_start).await?;
        let commit = match commits::split_commit(parent.as_ref(), &req)? {
            SplitStep::Replayed => {
                // Committed already (an earlier attempt whose answer was lost).
                let right = meta::get_range(self.meta(), &req.split_key).await?;
                commits::split_replayed(right.as_ref(), &req)?;
                return Ok(done);
            }
            SplitStep::Commit(commit) => commit,
        };
        self.write(&term, commit.ops.clone()).await?;
        tracing::info!(parent = %req.parent_id, left = %req.left.0, right = %req.right.0, split_key = %req.split_key, "split committed");
        self.with_state(|st| st.note_split(Instant::now(), &commit.added));
        self.reshape_routing(&commit).await?;
        Ok(done)
    }

    /// Replaces two merged neighbours by the merged range (owned by the same node) in one
    /// transactional, term-checked update that requires both to be owned by that node in
    /// that epoch. Repeating a committed merge answers the same.
    async fn commit_merge(&self, req: MergeRequest) -> Result<Reply, Error> {
        let term = self.acting_term().ok_or_else(|| self.not_master())?;
        let left = meta::get_range(self.meta(), &req.left.1).await?;
        let right = meta::get_range(self.meta(), &req.right.1).await?;
        let commit = match commits::merge_commit(left.as_ref(), right.as_ref(), &req)? {
            MergeStep::Done => return Ok(Reply::MergeDone { merged_id: req.merged.0 }),
            MergeStep::Commit(commit) => commit,
        };
        self.write(&term, commit.ops.clone()).await?;
        tracing::info!(left = %req.left.0, right = %req.right.0, merged = %req.merged.0, range = %commit.range, "merge committed");
        self.reshape_routing(&commit).await?;
        Ok(Reply::MergeDone { merged_id: req.merged.0 })
    }

    /// Applies a committed split or merge to the routing table in memory: the descriptors
    /// it removed go, the ones it added are read back (for their versions). Much cheaper
    /// than re-reading every descriptor, which a burst of splits would do hundreds of times.
    async fn reshape_routing(&self, commit: &Commit) -> Result<(), Error> {
        let mut fresh = Vec::with_capacity(commit.added.len());
        for start in &commit.added {
            let d = meta::get_range(self.meta(), start)
                .await?
                .ok_or_else(|| Error::internal(format!("the range just recorded at {start} is missing")))?;
            fresh.push(d);
        }
        if let Err(e) = self.with_state(|st| st.apply_reshape(&commit.removed, fresh)) {
            tracing::warn!(error = %e, "routing change does not apply in memory; re-reading every range");
            self.refresh_routing().await?;
        }
        Ok(())
    }

    pub(crate) async fn drain(&self, node_id: NodeId, undo: bool) -> Result<Reply, Error> {
        let term = self.acting_term().ok_or_else(|| self.not_master())?;
        let epoch = self.with_state(|st| st.drain_epoch(&node_id))?;
        let sk = node_id.as_str().as_bytes().to_vec();
        let op = if undo {
            MetaOp::Delete { pk: PK_DRAIN.into(), sk, expect: Expect::Any }
        } else {
            MetaOp::Put { pk: PK_DRAIN.into(), sk, value: meta::encode(&DrainRecord { epoch }), expect: Expect::Any }
        };
        self.write(&term, vec![op]).await?;
        let ranges_left = self.with_state(|st| st.drained(&node_id, epoch, undo));
        if !undo {
            tracing::info!(node = %node_id, ranges_left, "draining");
        }
        Ok(Reply::Draining { node_id, ranges_left })
    }
}

impl Service for Master {
    fn server_info(&self) -> ServerInfo {
        ServerInfo { protocol_version: PROTOCOL_VERSION, server_id: self.id.clone(), role: Role::Master }
    }

    async fn handle(self: &Arc<Self>, op: Op) -> Result<Reply, Error> {
        op.validate()?;
        match op {
            Op::Ping => Ok(Reply::Pong),
            Op::Locate { key } => self.locate_many(key, None, true).await,
            Op::LocateRange { start, end } => self.locate_many(start, end, false).await,
            Op::Drain { node_id, undo } => self.drain(node_id, undo).await,
            Op::MasterStatus => Ok(Reply::Master(self.master_status())),
            Op::Members => Ok(Reply::Members(self.members())),
            Op::SplitRange {
                parent_id,
                parent_start,
                split_key,
                owner_node,
                owner_epoch,
                left_id,
                left_checkpoint,
                right_id,
                right_checkpoint,
            } => {
                let owner = Owner { node_id: owner_node, epoch: owner_epoch };
                let left = (left_id, left_checkpoint);
                let right = (right_id, right_checkpoint);
                self.commit_split(SplitRequest { parent_id, parent_start, split_key, owner, left, right }).await
            }
            Op::CommitMerge {
                left_id,
                left_start,
                right_id,
                right_start,
                owner_node,
                owner_epoch,
                merged_id,
                merged_checkpoint,
            } => {
                let owner = Owner { node_id: owner_node, epoch: owner_epoch };
                self.commit_merge(MergeRequest {
                    left: (left_id, left_start),
                    right: (right_id, right_start),
                    owner,
                    merged: (merged_id, merged_checkpoint),
                })
                .await
            }
            _ => Err(Error::invalid(
                "this is a master: send data requests to the node that serves the key (locate it first)",
            )),
        }
    }

    fn cluster_token(&self) -> Option<&str> {
        self.cluster_token.as_deref()
    }

    fn admin_token(&self) -> Option<&str> {
        self.admin_token.as_deref()
    }

    fn metrics(&self) -> Option<&Metrics> {
        Some(&self.metrics)
    }
}
