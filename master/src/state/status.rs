//! The master's view of itself, its nodes and its ranges, as `MasterStatus` and the admin
//! port show it.

use std::collections::HashMap;
use std::time::Instant;

use ampstore_common::NodeId;
use ampstore_common::protocol::{MasterStatus, NodeView, RangeView};

use super::ControlState;

impl ControlState {
    /// The master's view for `MasterStatus` and the admin port.
    pub(crate) fn status(&self, now: Instant, me: &NodeId, writes_refused_on_term: u64) -> MasterStatus {
        let active = self.active(now);
        let mut owned: HashMap<&NodeId, u64> = HashMap::new();
        let mut ranges = Vec::new();
        for d in active.into_iter().flat_map(|a| a.routing.iter()) {
            let r = &d.record;
            if let Some(o) = &r.owner {
                *owned.entry(&o.node_id).or_default() += 1;
            }
            let load = r.owner.as_ref().and_then(|o| self.nodes.get(&o.node_id)).map(|w| &w.load);
            ranges.push(RangeView {
                range_id: r.range_id,
                range: r.range.clone(),
                generation: r.generation,
                owner: r.owner.as_ref().map(|o| o.node_id.clone()),
                owner_epoch: r.owner.as_ref().map(|o| o.epoch),
                data_bytes: load.and_then(|l| l.range_bytes.get(&r.range_id).copied()).unwrap_or(0),
                log_bytes: load.and_then(|l| l.range_log_bytes.get(&r.range_id).copied()).unwrap_or(0),
            });
        }
        let nodes = self
            .nodes
            .iter()
            .map(|(id, w)| NodeView {
                node_id: id.clone(),
                rpc_addr: w.record.record.rpc_addr.clone(),
                epoch: w.record.record.epoch,
                state: self.nodes.state(now, id),
                draining: w.is_draining(),
                ranges: owned.get(id).copied().unwrap_or(0),
                data_bytes: w.load.data_bytes,
                resident_bytes: w.load.resident_bytes,
                memory_budget_bytes: w.load.memory_budget_bytes,
                ops_per_sec: w.load.ops_per_sec,
                lease_ms_left: self.nodes.lease_ms_left(now, id),
            })
            .collect();
        MasterStatus {
            master_id: me.clone(),
            active_term: active.map(|a| a.term.term),
            lease_holder: self.holder.as_ref().map(|h| h.0.clone()),
            lease_holder_rpc: self.holder.as_ref().map(|h| h.1.clone()),
            nodes,
            ranges,
            writes_refused_on_term,
        }
    }
}
