//! Which addresses a node connects to on a request's word. A transaction names each part's
//! participant by address (`TxnPart::node_addr`, from the client's routing); a coordinator
//! that connected wherever a request said would let any client make the node open
//! connections to arbitrary hosts (review S7). So a participant address must be the current
//! RPC address of a live node in the meta store (its node record, not ended), or this
//! node's own.
//!
//! The records are read at most once per [`LIVE_ADDRS_TTL`], and once more for an unknown
//! address (a node that just registered) but not more often than [`REREAD_MIN`], so a
//! flood of bad addresses costs no more than a few meta reads a second.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ampstore_common::error::Error;
use ampstore_common::txn::TxnPart;
use ampstore_store::meta;

use ampstore_store::MetaStore;

/// How long a read of the node records is used for addresses it lists.
const LIVE_ADDRS_TTL: Duration = Duration::from_secs(2);
/// The soonest the node records are read again for an address the last read did not list.
const REREAD_MIN: Duration = Duration::from_millis(200);

/// The RPC addresses of the live nodes, as last read from the meta store.
#[derive(Default)]
pub struct LiveNodeAddrs {
    cached: Mutex<Option<ReadAddrs>>,
}

#[derive(Clone)]
struct ReadAddrs {
    read_at: Instant,
    addrs: HashSet<String>,
}

/// What a check does with a cached read.
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    Known,
    Unknown,
    ReadAgain,
}

fn decide(cached: Option<&ReadAddrs>, addr: &str, now: Instant) -> Decision {
    let Some(c) = cached else { return Decision::ReadAgain };
    let age = now.saturating_duration_since(c.read_at);
    match (c.addrs.contains(addr), age) {
        (true, age) if age < LIVE_ADDRS_TTL => Decision::Known,
        (false, age) if age < REREAD_MIN => Decision::Unknown,
        _ => Decision::ReadAgain,
    }
}

impl LiveNodeAddrs {
    /// `Ok` when every part's address is this node or a live node's current RPC address;
    /// else `NotOwner` (nothing was sent anywhere: the client locates the ranges again and
    /// retries, which is what a stale route needs).
    pub async fn check_parts(&self, own_addr: &str, meta: &dyn MetaStore, parts: &[TxnPart]) -> Result<(), Error> {
        for part in parts {
            if part.node_addr != own_addr && !self.is_live(meta, &part.node_addr).await? {
                tracing::info!(addr = %part.node_addr, range = %part.range_id, "transaction names no live node");
                return Err(Error::NotOwner { hint: None });
            }
        }
        Ok(())
    }

    async fn is_live(&self, meta: &dyn MetaStore, addr: &str) -> Result<bool, Error> {
        let cached = self.cached.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match decide(cached.as_ref(), addr, Instant::now()) {
            Decision::Known => return Ok(true),
            Decision::Unknown => return Ok(false),
            Decision::ReadAgain => {}
        }
        let read_at = Instant::now();
        let addrs: HashSet<String> = meta::list_nodes(meta)
            .await?
            .into_iter()
            .filter(|(_, n)| !n.record.ended)
            .map(|(_, n)| n.record.rpc_addr)
            .collect();
        let live = addrs.contains(addr);
        *self.cached.lock().unwrap_or_else(|p| p.into_inner()) = Some(ReadAddrs { read_at, addrs });
        Ok(live)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_read_again_only_when_stale_or_unknown_for_a_while() {
        let t0 = Instant::now();
        let read = ReadAddrs { read_at: t0, addrs: HashSet::from(["10.0.0.1:7100".to_string()]) };
        assert_eq!(decide(None, "10.0.0.1:7100", t0), Decision::ReadAgain);
        assert_eq!(decide(Some(&read), "10.0.0.1:7100", t0), Decision::Known);
        assert_eq!(decide(Some(&read), "10.0.0.1:7100", t0 + LIVE_ADDRS_TTL), Decision::ReadAgain);
        // An address the read did not list: refused at once, read again only after a while
        // (a node that just registered gets in, a flood of bad addresses does not read meta).
        assert_eq!(decide(Some(&read), "169.254.169.254:80", t0), Decision::Unknown);
        assert_eq!(decide(Some(&read), "169.254.169.254:80", t0 + REREAD_MIN), Decision::ReadAgain);
    }
}
