//! What readers see: whether the range still serves reads (the connection tasks read its
//! memtable directly, `range::view`), its statistics, and its use by reads (idle release).

use std::time::Instant;

#[cfg(test)]
use ampstore_common::error::Error;
use ampstore_common::protocol::{RangeState, RangeStats};

use super::{Phase, RangeMachine};

impl<W, M> RangeMachine<W, M> {
    pub fn stats(&self, now: Instant) -> RangeStats {
        let state = match self.phase {
            _ if self.releasing() => RangeState::Releasing,
            Phase::MergeClosing { .. } | Phase::MergeAppending { .. } | Phase::MergeClosed => RangeState::Merging,
            _ => RangeState::Serving,
        };
        RangeStats {
            range_id: self.core.range_id(),
            range: self.core.range().clone(),
            state,
            keys: self.core.keys(),
            data_bytes: self.core.data_bytes(),
            applied_seq: self.core.applied(),
            checkpoint_seq: self.core.checkpoint_seq(),
            log_bytes_since_checkpoint: self.core.log_bytes_since_checkpoint(),
            error: None,
            idle_ms: now.saturating_duration_since(self.heat.last_used).as_millis() as u64,
            write_id_bytes: self.core.write_ids().bytes() as u64,
        }
    }

    /// Whether reads may be served from this range's data (before the node's liveness is
    /// checked, which readers do themselves): not once it releases, is fenced or stopped.
    pub fn serves_reads(&self) -> bool {
        !(self.core.is_fenced() || self.releasing() || self.is_stopped())
    }

    /// The value at `key` in the applied data (what readers see; the machine's tests).
    #[cfg(test)]
    pub fn read(&self, key: &ampstore_common::Key) -> Result<Option<ampstore_common::protocol::Versioned>, Error> {
        self.core.get(key)
    }

    /// Readers used the range (reading its memtable directly) since the last step.
    pub fn touch(&mut self, now: Instant) {
        self.heat.last_used = now;
    }
}
