//! The embedded store served by one process (`ampstore store`), so that no other process
//! ever holds its SQLite write lock.
//!
//! SQLite serialises writers with a file lock. When several processes open one store file
//! and one of them is stopped (SIGSTOP, a debugger, a VM pause) inside a write transaction,
//! every other process waits for that lock: masters cannot renew their lease or end the
//! stopped node's epoch, and no node can append. The chaos suite's pause nemesis found
//! exactly that (a node paused for 8 s froze the whole cluster for 8 s). A store process
//! that alone opens the file removes the shared lock: a paused node holds nothing but its
//! own connections, as with DynamoDB.
//!
//! Clients (masters, nodes, collectors) select it with `backend.local.server = "ADDR"`: the
//! commit log and the meta store go over TCP ([`RemoteStore`]); blobs stay files in
//! `backend.local.dir` (each blob is written once, atomically, by rename, so several
//! processes may share the directory without a lock).
//!
//! The protocol is the RPC framing of `common::frame` (length-prefixed MessagePack):
//! a [`StoreHello`] first, then one [`StoreRequest`] answered by one [`StoreResponse`] at a
//! time on each connection; a client opens more connections for concurrent calls
//! (`STORE_CLIENT_CONNECTIONS_MAX`), and the store's writer thread commits whatever the
//! connections queued together (group commit).
//!
//! Appends of many ranges travel together: a node with many ranges has one append in
//! flight per range, and one request and one answer per append made the node's and the
//! store's CPU per durable put about twice that of one range (issue 16,
//! `docs/benchmarks.md`, "Many ranges on one node"). [`RemoteStore`] therefore sends the
//! appends that are ready together as one `AppendEach` (at most
//! `STORE_APPEND_EACH_IN_FLIGHT_MAX` of them in flight), which the store hands to its writer
//! as one request and answers with one frame: each slot's own outcome.

use serde::{Deserialize, Serialize};

use super::{AppendSlot, Expect, LogEntry, MetaItem, MetaOp, StoreError};
use ampstore_common::ids::{RangeId, Seq};

mod client;
mod hot;
mod server;

pub use client::RemoteStore;
pub use server::serve;

/// Sent first on every connection.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StoreHello {
    /// Must be [`STORE_PROTOCOL_VERSION`].
    pub version: u32,
    /// The cluster's admin token, when the store has one (`admin.token`).
    pub auth_token: Option<String>,
}

/// The version of this protocol, what clients say in their hello. 2 added `AppendEach`.
pub const STORE_PROTOCOL_VERSION: u32 = 2;

/// The oldest version a store still serves: a client of version 1 (which never sends
/// `AppendEach`) keeps working against a newer store, so the store is upgraded first.
pub const STORE_PROTOCOL_VERSION_MIN: u32 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum StoreRequest {
    Append {
        slot: AppendSlot,
    },
    AppendAtomic {
        slots: Vec<AppendSlot>,
    },
    /// Each slot appended on its own (version 2): answered by `EachAppended`.
    AppendEach {
        slots: Vec<AppendSlot>,
    },
    Head {
        range: RangeId,
    },
    Read {
        range: RangeId,
        from: Seq,
        limit: u64,
    },
    Truncate {
        range: RangeId,
        upto: Seq,
    },
    MetaGet {
        pk: String,
        #[serde(with = "serde_bytes")]
        sk: Vec<u8>,
    },
    MetaPut {
        pk: String,
        #[serde(with = "serde_bytes")]
        sk: Vec<u8>,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        expect: Expect,
    },
    MetaDelete {
        pk: String,
        #[serde(with = "serde_bytes")]
        sk: Vec<u8>,
        expect: Expect,
    },
    MetaTransact {
        ops: Vec<MetaOp>,
    },
    MetaQuery {
        pk: String,
        #[serde(with = "serde_bytes")]
        from: Vec<u8>,
        limit: u64,
    },
}

/// One item of a meta query answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QueryItem {
    #[serde(with = "serde_bytes")]
    pub sk: Vec<u8>,
    pub item: MetaItem,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum StoreReply {
    /// The hello was accepted.
    Welcome,
    Done,
    /// One outcome per slot of an `AppendEach`, in its order.
    EachAppended(Vec<Result<(), StoreError>>),
    Head(Option<Seq>),
    Entries(Vec<(Seq, LogEntry)>),
    Item(Option<MetaItem>),
    Version(u64),
    /// `more`: the answer stopped short of the limit to fit in one frame; ask again after
    /// the last key.
    Items {
        items: Vec<QueryItem>,
        more: bool,
    },
}

pub type StoreResponse = Result<StoreReply, StoreError>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EntryKind;
    use ampstore_common::frame::{decode_body, encode_frame};
    use ampstore_common::ids::{Epoch, NodeId};

    #[test]
    fn requests_and_answers_survive_the_frame_codec() {
        let entry = LogEntry {
            kind: EntryKind::Batch,
            writer: NodeId::new("n1").unwrap(),
            epoch: Epoch(3),
            payload: bytes::Bytes::from_static(&[0, 1, 2, 255]),
        };
        let reqs = vec![
            StoreRequest::Append { slot: AppendSlot { range: RangeId(1), seq: Seq(2), entry: entry.clone() } },
            StoreRequest::MetaTransact {
                ops: vec![MetaOp::Put {
                    pk: "p".into(),
                    sk: vec![0, 255],
                    value: vec![7; 3],
                    expect: Expect::Value(vec![1]),
                }],
            },
            StoreRequest::MetaQuery { pk: "p".into(), from: vec![], limit: 10 },
        ];
        for r in reqs {
            let mut buf = Vec::new();
            encode_frame(&r, &mut buf).unwrap();
            assert_eq!(decode_body::<StoreRequest>(&buf[4..]).unwrap(), r);
        }
        let answers: Vec<StoreResponse> = vec![
            Ok(StoreReply::Entries(vec![(Seq(2), entry)])),
            Err(StoreError::SlotTaken { range: RangeId(1), seq: Seq(2) }),
            Err(StoreError::ConditionFailed { op_index: Some(0), detail: "x".into() }),
        ];
        for a in answers {
            let mut buf = Vec::new();
            encode_frame(&a, &mut buf).unwrap();
            assert_eq!(decode_body::<StoreResponse>(&buf[4..]).unwrap(), a);
        }
    }

    #[test]
    fn a_payload_travels_as_bytes_not_as_a_list_of_numbers() {
        let entry = LogEntry {
            kind: EntryKind::Batch,
            writer: NodeId::new("n1").unwrap(),
            epoch: Epoch(3),
            payload: bytes::Bytes::from(vec![200u8; 1000]),
        };
        let mut buf = Vec::new();
        encode_frame(&StoreRequest::Append { slot: AppendSlot { range: RangeId(1), seq: Seq(2), entry } }, &mut buf)
            .unwrap();
        assert!(buf.len() < 1100, "1000 payload bytes took {} bytes", buf.len());
    }
}
