//! Golden bytes of the wire encoding.
//!
//! Every kind of frame a peer sends (a hello and its two replies, a request for every `Op`
//! variant, a response for every `Reply` variant and for every `Error` variant) is built
//! from fixed, fully populated values, encoded with `encode_frame` and compared byte for
//! byte with `tests/golden/wire.txt`. A refactor of the protocol types that must not change
//! the wire (splitting `Op` and `Reply` by audience, typed requests) proves that it does
//! not by leaving this test green with the file untouched.
//!
//! The file holds one line per message, `name hex`, where hex is the whole frame (the
//! 4-byte length prefix and the MessagePack body). To accept an intended change of the
//! wire, rewrite it and review the diff (every changed line is a change old peers see):
//!
//! ```text
//! AMPSTORE_BLESS_GOLDEN=1 cargo test -p ampstore-common --test wire_golden
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;

use ampstore_common::error::{Error, OwnerHint};
use ampstore_common::frame::{FRAME_HEADER_BYTES, decode_body, encode_frame};
use ampstore_common::ids::{Epoch, NodeId, RangeId, RequestId, Seq, Term};
use ampstore_common::key::{Key, KeyRange, Version};
use ampstore_common::lists::PushId;
use ampstore_common::member::{GossipLoad, MemberState, MemberView};
use ampstore_common::meta::Checkpoint;
use ampstore_common::protocol::{
    ExpireWhen, Hello, HelloReply, KeyTtl, MasterStatus, NodeStats, NodeView, Op, PROTOCOL_VERSION, RangeLocation,
    RangeStats, RangeView, Reply, Request, Response, Role, ScanItem, ServerInfo, Versioned, WriteId,
};
use ampstore_common::queue::{Task, TaskRef};
use ampstore_common::txn::{TxnCheck, TxnCondition, TxnDecision, TxnPart, TxnWrite};
use serde::Serialize;
use serde::de::DeserializeOwned;

const GOLDEN_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/wire.txt");
const BLESS_VAR: &str = "AMPSTORE_BLESS_GOLDEN";
const BLESS_COMMAND: &str = "AMPSTORE_BLESS_GOLDEN=1 cargo test -p ampstore-common --test wire_golden";

// ---------------------------------------------------------------------------------------
// Variant names: the guard that every variant has a golden message.
// ---------------------------------------------------------------------------------------

/// Defines `fn $fn(&$ty) -> &'static str` as a match with one arm per variant and no
/// wildcard, and `const $list` holding the same names. A new variant does not compile until
/// it gets an arm here, and the arm puts its name in the list, which
/// `every_variant_has_a_golden_message` requires the samples below to cover.
macro_rules! variant_names {
    ($fn:ident, $list:ident, $ty:ty { $($pat:pat => $name:literal),* $(,)? }) => {
        fn $fn(value: &$ty) -> &'static str {
            match value {
                $($pat => $name),*
            }
        }
        const $list: &[&str] = &[$($name),*];
    };
}

variant_names!(op_name, OP_NAMES, Op {
    Op::Ping => "ping",
    Op::Get { .. } => "get",
    Op::GetMany { .. } => "get_many",
    Op::Put { .. } => "put",
    Op::PutIfVersion { .. } => "put_if_version",
    Op::Delete { .. } => "delete",
    Op::Push { .. } => "push",
    Op::Enqueue { .. } => "enqueue",
    Op::Dequeue { .. } => "dequeue",
    Op::TaskAck { .. } => "task_ack",
    Op::TaskNack { .. } => "task_nack",
    Op::TaskExtend { .. } => "task_extend",
    Op::Batch { .. } => "batch",
    Op::Members => "members",
    Op::DeleteRange { .. } => "delete_range",
    Op::Scan { .. } => "scan",
    Op::Assign { .. } => "assign",
    Op::Release { .. } => "release",
    Op::Snapshot { .. } => "snapshot",
    Op::Split { .. } => "split",
    Op::RangeStats => "range_stats",
    Op::Locate { .. } => "locate",
    Op::LocateRange { .. } => "locate_range",
    Op::Drain { .. } => "drain",
    Op::MasterStatus => "master_status",
    Op::SplitRange { .. } => "split_range",
    Op::Merge { .. } => "merge",
    Op::CommitMerge { .. } => "commit_merge",
    Op::Txn { .. } => "txn",
    Op::TxnPrepare { .. } => "txn_prepare",
    Op::TxnResolve { .. } => "txn_resolve",
    Op::PutWithTtl { .. } => "put_with_ttl",
    Op::Expire { .. } => "expire",
    Op::Persist { .. } => "persist",
    Op::Ttl { .. } => "ttl",
    Op::Incr { .. } => "incr",
});

variant_names!(reply_name, REPLY_NAMES, Reply {
    Reply::Pong => "pong",
    Reply::Value(_) => "value",
    Reply::Values(_) => "values",
    Reply::Written { .. } => "written",
    Reply::Deleted { .. } => "deleted",
    Reply::ScanPage { .. } => "scan_page",
    Reply::Assigned { .. } => "assigned",
    Reply::Released { .. } => "released",
    Reply::Snapshotted { .. } => "snapshotted",
    Reply::Stats(_) => "stats",
    Reply::Location(_) => "location",
    Reply::Locations(_) => "locations",
    Reply::Draining { .. } => "draining",
    Reply::Master(_) => "master",
    Reply::SplitDone { .. } => "split_done",
    Reply::MergeDone { .. } => "merge_done",
    Reply::TxnCommitted { .. } => "txn_committed",
    Reply::TxnPrepared { .. } => "txn_prepared",
    Reply::Batch { .. } => "batch",
    Reply::Members(_) => "members",
    Reply::Tasks { .. } => "tasks",
    Reply::TxnResolved { .. } => "txn_resolved",
    Reply::ExpiryChanged { .. } => "expiry_changed",
    Reply::Counted { .. } => "counted",
    Reply::Ttl(_) => "ttl",
});

variant_names!(error_name, ERROR_NAMES, Error {
    Error::NotOwner { .. } => "not_owner",
    Error::NotMaster { .. } => "not_master",
    Error::RangeLoading { .. } => "range_loading",
    Error::KeyOutOfRange => "key_out_of_range",
    Error::Fenced => "fenced",
    Error::TooLarge { .. } => "too_large",
    Error::Invalid { .. } => "invalid",
    Error::Conflict { .. } => "conflict",
    Error::Timeout => "timeout",
    Error::Unavailable { .. } => "unavailable",
    Error::Unauthorized { .. } => "unauthorized",
    Error::Internal { .. } => "internal",
    Error::Unknown => "unknown",
});

// ---------------------------------------------------------------------------------------
// Sample values. Fixed, distinct and non-default everywhere (Some for options, non-empty
// vectors, non-zero ids), so that a field that moves, vanishes or changes its encoding
// shows in the bytes. Never derived from run-time state (no random ids, no clocks).
// ---------------------------------------------------------------------------------------

/// One id for every request and response: per-message ids would shift every line when a
/// message is inserted.
const REQUEST_ID: RequestId = RequestId(70_000);

fn key(s: &str) -> Key {
    Key::from(s)
}

fn node(s: &str) -> NodeId {
    NodeId::new(s).expect("a valid node id")
}

fn write_id() -> WriteId {
    WriteId::new(0x5eed_0000_0000_0001, 42)
}

fn push_id() -> PushId {
    PushId { ms: 1_700_000_000_123, client: 0x5eed_0000_0000_0002, n: 7 }
}

fn version(seq: u64, index: u32) -> Version {
    Version { seq: Seq(seq), index }
}

fn versioned(value: &str, seq: u64) -> Versioned {
    Versioned { value: value.as_bytes().to_vec(), version: version(seq, 1) }
}

fn task_ref() -> TaskRef {
    // A lease over 2^32: the u64 encoding.
    TaskRef { shard: 3, id: push_id(), lease: 0x1_0000_0005 }
}

fn checkpoint(seq: u64) -> Checkpoint {
    Checkpoint { seq: Seq(seq), blob: format!("snapshots/{seq}.snap"), merkle_root: vec![0xde, 0xad, 0xbe, 0xef, 0x01] }
}

/// A key in the reserved namespace: the bytes that are not UTF-8 travel as `bin` too.
fn queue_key() -> Key {
    Key::new(vec![0xff, 0xff, 0x01, b'q', 0x00, 0x03])
}

fn owner_hint() -> OwnerHint {
    OwnerHint { node_id: node("node-2"), rpc_addr: "10.0.0.2:7000".into() }
}

fn txn_checks() -> Vec<TxnCheck> {
    vec![
        TxnCheck { key: key("acct:a"), condition: TxnCondition::Version(version(30, 0)) },
        TxnCheck { key: key("acct:b"), condition: TxnCondition::Value(b"100".to_vec()) },
        TxnCheck { key: key("acct:c"), condition: TxnCondition::Absent },
    ]
}

fn txn_writes() -> Vec<TxnWrite> {
    vec![
        TxnWrite::Put { key: key("acct:a"), value: b"90".to_vec() },
        TxnWrite::Delete { key: key("acct:c") },
        TxnWrite::Push { key: key("list:audit"), element: b"moved 10".to_vec(), push_id: push_id() },
    ]
}

fn push_op() -> Op {
    Op::Push { key: key("list:events"), element: b"clicked".to_vec(), push_id: push_id() }
}

fn enqueue_op() -> Op {
    Op::Enqueue { queue: "emails".into(), shard: 3, task_id: push_id(), payload: b"send to bob".to_vec() }
}

/// One operation of every variant, in the enum's order.
fn ops() -> Vec<Op> {
    vec![
        Op::Ping,
        Op::Get { key: key("user:1") },
        Op::GetMany { keys: vec![key("user:1"), Key::new(vec![0x00, 0xfe, 0x7f])] },
        Op::Put { key: key("user:1"), value: b"alice".to_vec(), write_id: Some(write_id()) },
        Op::PutIfVersion {
            key: key("user:1"),
            value: b"alice v2".to_vec(),
            expected: Some(version(41, 2)),
            write_id: Some(write_id()),
        },
        Op::Delete { key: key("user:1"), write_id: Some(write_id()) },
        push_op(),
        enqueue_op(),
        Op::Dequeue { queue: "emails".into(), shard: 3, start: queue_key(), max: 16, visibility_ms: 30_000 },
        Op::TaskAck { queue: "emails".into(), task: task_ref() },
        Op::TaskNack { queue: "emails".into(), task: task_ref() },
        Op::TaskExtend { queue: "emails".into(), task: task_ref(), visibility_ms: 60_000 },
        // What a collector sends: pushes and enqueues together.
        Op::Batch { ops: vec![push_op(), enqueue_op()] },
        Op::Members,
        Op::DeleteRange { start: key("a"), end: Some(key("m")), write_id: Some(write_id()) },
        Op::Scan { start: key("a"), end: Some(key("m")), limit: 100, reverse: true },
        Op::Assign { range_id: RangeId(12), start: key("m"), claim: true },
        Op::Release { range_id: RangeId(12) },
        Op::Snapshot { range_id: RangeId(12) },
        Op::Split { range_id: RangeId(12) },
        Op::RangeStats,
        Op::Locate { key: key("user:1") },
        Op::LocateRange { start: key("a"), end: Some(key("m")) },
        Op::Drain { node_id: node("node-2"), undo: true },
        Op::MasterStatus,
        Op::SplitRange {
            parent_id: RangeId(12),
            parent_start: key("m"),
            split_key: key("s"),
            owner_node: node("node-1"),
            owner_epoch: Epoch(5),
            left_id: RangeId(13),
            left_checkpoint: checkpoint(200),
            right_id: RangeId(14),
            right_checkpoint: checkpoint(201),
        },
        Op::Merge { left_id: RangeId(13), right_id: RangeId(14) },
        Op::CommitMerge {
            left_id: RangeId(13),
            left_start: key("m"),
            right_id: RangeId(14),
            right_start: key("s"),
            owner_node: node("node-1"),
            owner_epoch: Epoch(5),
            merged_id: RangeId(15),
            merged_checkpoint: checkpoint(300),
        },
        Op::Txn {
            txn_id: write_id(),
            parts: vec![
                TxnPart {
                    range_id: RangeId(12),
                    node_addr: "10.0.0.1:7000".into(),
                    checks: txn_checks(),
                    writes: txn_writes(),
                    reads: vec![key("acct:d")],
                },
                TxnPart {
                    range_id: RangeId(16),
                    node_addr: "10.0.0.2:7000".into(),
                    checks: vec![TxnCheck { key: key("x:1"), condition: TxnCondition::Absent }],
                    writes: vec![TxnWrite::Put { key: key("x:1"), value: b"1".to_vec() }],
                    reads: vec![key("x:2")],
                },
            ],
            hold_ms: 2_000,
        },
        Op::TxnPrepare {
            txn_id: write_id(),
            range_id: RangeId(16),
            checks: txn_checks(),
            writes: txn_writes(),
            reads: vec![key("acct:d")],
            hold_ms: 2_000,
        },
        Op::TxnResolve { txn_id: write_id(), range_id: RangeId(16), seq: Some(Seq(77)), decision: TxnDecision::Commit },
        Op::PutWithTtl { key: key("session:9"), value: b"token".to_vec(), ttl_ms: 30_000, write_id: Some(write_id()) },
        Op::Expire { key: key("session:9"), ttl_ms: 60_000, when: ExpireWhen::Gt, write_id: Some(write_id()) },
        Op::Persist { key: key("session:9"), write_id: None },
        Op::Ttl { key: key("session:9") },
        Op::Incr { key: key("hits"), by: -42, write_id: Some(write_id()) },
    ]
}

fn range_location(range_id: u64, start: &str, end: &str) -> RangeLocation {
    RangeLocation {
        range_id: RangeId(range_id),
        start: key(start),
        end: Some(key(end)),
        node_id: node("node-1"),
        node_addr: "10.0.0.1:7000".into(),
        lease_ms_left: 4_500,
    }
}

fn member(id: &str, role: Role, state: MemberState, gossip: &str) -> MemberView {
    MemberView {
        id: node(id),
        role: Some(role),
        gossip: gossip.parse().expect("a socket address"),
        rpc: Some("10.0.0.3:7000".into()),
        admin: Some("10.0.0.3:7080".into()),
        state,
        bump: 2,
        since_unix_ms: 1_700_000_000_000,
        load: Some(GossipLoad { resident_bytes: 64 << 20, ranges: 9, ops_per_sec: 1_200 }),
    }
}

/// One reply of every variant, in the enum's order.
fn replies() -> Vec<Reply> {
    vec![
        Reply::Pong,
        Reply::Value(Some(versioned("alice", 41))),
        // A `None` among the values: a missing key keeps its place in the answer.
        Reply::Values(vec![Some(versioned("alice", 41)), None]),
        Reply::Written { version: version(41, 2) },
        Reply::Deleted { removed: 3, version: version(42, 0) },
        Reply::ScanPage {
            items: vec![
                ScanItem { key: key("a:1"), value: b"one".to_vec(), version: version(10, 0) },
                ScanItem { key: key("a:2"), value: b"two".to_vec(), version: version(11, 3) },
            ],
            resume: Some(key("a:3")),
        },
        Reply::Assigned { range_id: RangeId(12), serving_from: Seq(101) },
        Reply::Released { range_id: RangeId(12) },
        Reply::Snapshotted { range_id: RangeId(12), seq: Seq(150) },
        Reply::Stats(NodeStats {
            node_id: node("node-1"),
            epoch: Epoch(5),
            liveness_ms_left: 8_000,
            ranges: vec![RangeStats {
                range_id: RangeId(12),
                range: KeyRange { start: key("m"), end: Some(key("s")) },
                state: ampstore_common::protocol::RangeState::Failed,
                keys: 1_000,
                data_bytes: 123_456,
                applied_seq: Seq(150),
                checkpoint_seq: Seq(100),
                log_bytes_since_checkpoint: 9_999,
                error: Some("snapshot checksum mismatch".into()),
                idle_ms: 60_000,
                write_id_bytes: 64_000,
            }],
            resident_bytes: 200 << 20,
            ops_total: 5_000_000,
            memory_budget_bytes: 1 << 30,
            split_bytes: 64 << 20,
        }),
        Reply::Location(range_location(12, "m", "s")),
        Reply::Locations(vec![range_location(12, "m", "s"), range_location(14, "s", "z")]),
        Reply::Draining { node_id: node("node-2"), ranges_left: 4 },
        Reply::Master(MasterStatus {
            master_id: node("master-1"),
            active_term: Some(Term(9)),
            lease_holder: Some(node("master-1")),
            lease_holder_rpc: Some("10.0.0.9:7100".into()),
            nodes: vec![NodeView {
                node_id: node("node-1"),
                rpc_addr: "10.0.0.1:7000".into(),
                epoch: Epoch(5),
                state: ampstore_common::protocol::NodeState::Live,
                draining: true,
                ranges: 7,
                data_bytes: 1 << 20,
                resident_bytes: 200 << 20,
                memory_budget_bytes: 1 << 30,
                ops_per_sec: 1_200,
                lease_ms_left: 4_500,
            }],
            ranges: vec![RangeView {
                range_id: RangeId(12),
                range: KeyRange { start: key("m"), end: Some(key("s")) },
                generation: 3,
                owner: Some(node("node-1")),
                owner_epoch: Some(Epoch(5)),
                data_bytes: 123_456,
                log_bytes: 9_999,
            }],
            writes_refused_on_term: 2,
        }),
        Reply::SplitDone { left_id: RangeId(13), right_id: RangeId(14) },
        Reply::MergeDone { merged_id: RangeId(15) },
        Reply::TxnCommitted {
            versions: vec![vec![version(50, 0), version(50, 1)], vec![version(60, 0)]],
            values: vec![vec![Some(versioned("10", 30))], vec![None]],
        },
        Reply::TxnPrepared {
            seq: Some(Seq(77)),
            writer: node("node-1"),
            epoch: Epoch(5),
            values: vec![Some(versioned("10", 30))],
            committed: true,
        },
        // One result per operation of a batch: a success and a failure.
        Reply::Batch {
            results: vec![
                Ok(Reply::Written { version: version(80, 0) }),
                Err(Error::Conflict { reason: "task already enqueued".into(), key: Some(queue_key()) }),
            ],
        },
        Reply::Members(vec![
            member("collector-1", Role::Collector, MemberState::Alive, "10.0.0.3:7946"),
            member("admin-1", Role::Admin, MemberState::Suspect, "[fd00::3]:7946"),
        ]),
        Reply::Tasks {
            tasks: vec![Task { task: task_ref(), payload: b"send to bob".to_vec(), deliveries: 2 }],
            resume: Some(queue_key()),
        },
        Reply::TxnResolved { committed: true },
        Reply::ExpiryChanged { changed: true },
        Reply::Counted { value: -9_000_000_000, version: Version { seq: Seq(12), index: 3 } },
        Reply::Ttl(KeyTtl::ExpiresInMs(29_500)),
    ]
}

/// One error of every variant, in the enum's order.
fn errors() -> Vec<Error> {
    vec![
        Error::NotOwner { hint: Some(owner_hint()) },
        Error::NotMaster { hint: Some(owner_hint()) },
        Error::RangeLoading { retry_after_ms: 250 },
        Error::KeyOutOfRange,
        Error::Fenced,
        Error::TooLarge { what: "value".into(), size: 2_000_000, max: 1_048_576 },
        Error::Invalid { reason: "key must not be empty".into() },
        Error::Conflict { reason: "version 41.2 expected".into(), key: Some(key("user:1")) },
        Error::Timeout,
        Error::Unavailable { reason: "meta store unreachable".into() },
        Error::Unauthorized { reason: "drain is for role admin, not client".into() },
        Error::Internal { reason: "unexpected state".into() },
        // What a peer's unknown code decodes to; it encodes as its own name.
        Error::Unknown,
    ]
}

fn request(op: Op) -> Request {
    Request { id: REQUEST_ID, deadline_ms: Some(1_500), op }
}

fn response(result: Result<Reply, Error>) -> Response {
    Response { id: REQUEST_ID, result }
}

/// A message of one of the four frame types, so that it can be encoded and decoded back
/// as what it is.
#[derive(Debug)]
enum Msg {
    Hello(Hello),
    HelloReply(HelloReply),
    Request(Request),
    Response(Response),
}

impl Msg {
    fn encode(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        match self {
            Msg::Hello(m) => encode_frame(m, &mut buf),
            Msg::HelloReply(m) => encode_frame(m, &mut buf),
            Msg::Request(m) => encode_frame(m, &mut buf),
            Msg::Response(m) => encode_frame(m, &mut buf),
        }
        .expect("every golden message encodes");
        buf
    }

    /// Checks that `frame` (length prefix and body) decodes with `decode_body` to this value.
    fn check_decodes_from(&self, frame: &[u8]) -> Result<(), String> {
        let body = frame_body(frame)?;
        match self {
            Msg::Hello(m) => check_round_trip(m, body),
            Msg::HelloReply(m) => check_round_trip(m, body),
            Msg::Request(m) => check_round_trip(m, body),
            Msg::Response(m) => check_round_trip(m, body),
        }
    }
}

fn check_round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(want: &T, body: &[u8]) -> Result<(), String> {
    match decode_body::<T>(body) {
        Ok(got) if got == *want => Ok(()),
        Ok(got) => Err(format!("gives {got:?}, want {want:?}")),
        Err(e) => Err(format!("fails: {e}")),
    }
}

/// The body of a frame, after checking that its length prefix is right.
fn frame_body(frame: &[u8]) -> Result<&[u8], String> {
    if frame.len() < FRAME_HEADER_BYTES {
        return Err(format!("{} bytes is shorter than a frame header", frame.len()));
    }
    let (header, body) = frame.split_at(FRAME_HEADER_BYTES);
    let len = u32::from_be_bytes(header.try_into().expect("4 bytes")) as usize;
    if len != body.len() {
        return Err(format!("length prefix says {len} bytes, the body has {}", body.len()));
    }
    Ok(body)
}

/// Every golden message, named, in the order of the file. The main messages are named after
/// their variant (`request.<op>`, `response.<reply>`, `response.err.<error>`); the few
/// extra ones pin encodings the main values do not reach.
fn golden_messages() -> Vec<(String, Msg)> {
    let mut out = vec![
        (
            "hello".to_string(),
            Msg::Hello(Hello {
                protocol_version: PROTOCOL_VERSION,
                role: Role::Client,
                client_name: "golden-test".into(),
                auth_token: Some("cluster-token-1".into()),
            }),
        ),
        (
            "hello_reply.ok".to_string(),
            Msg::HelloReply(HelloReply {
                result: Ok(ServerInfo {
                    protocol_version: PROTOCOL_VERSION,
                    server_id: node("node-1"),
                    role: Role::Node,
                }),
            }),
        ),
        (
            "hello_reply.err".to_string(),
            Msg::HelloReply(HelloReply { result: Err(Error::Unauthorized { reason: "wrong cluster token".into() }) }),
        ),
    ];
    for op in ops() {
        out.push((format!("request.{}", op_name(&op)), Msg::Request(request(op))));
    }
    for reply in replies() {
        out.push((format!("response.{}", reply_name(&reply)), Msg::Response(response(Ok(reply)))));
    }
    for error in errors() {
        out.push((format!("response.err.{}", error_name(&error)), Msg::Response(response(Err(error)))));
    }
    // `None` encodes as nil with the field present (not left out): a request without
    // deadline or write id.
    out.push((
        "request.put.no_options".to_string(),
        Msg::Request(Request {
            id: REQUEST_ID,
            deadline_ms: None,
            op: Op::Put { key: key("user:1"), value: b"alice".to_vec(), write_id: None },
        }),
    ));
    // `committed: false` is left out of the encoding (skip_serializing_if).
    out.push((
        "response.txn_prepared.not_committed".to_string(),
        Msg::Response(response(Ok(Reply::TxnPrepared {
            seq: None,
            writer: node("node-1"),
            epoch: Epoch(5),
            values: vec![],
            committed: false,
        }))),
    ));
    // The other decision and the other roles, so that every unit variant of the nested enums
    // is pinned too.
    out.push((
        "request.txn_resolve.resolve".to_string(),
        Msg::Request(request(Op::TxnResolve {
            txn_id: write_id(),
            range_id: RangeId(16),
            seq: None,
            decision: TxnDecision::Resolve,
        })),
    ));
    out.push((
        "response.members.other_states".to_string(),
        Msg::Response(response(Ok(Reply::Members(vec![
            member("master-1", Role::Master, MemberState::Down, "10.0.0.9:7946"),
            MemberView {
                role: None,
                rpc: None,
                admin: None,
                load: None,
                ..member("client-1", Role::Client, MemberState::Left, "10.0.0.4:7946")
            },
        ])))),
    ));
    out
}

// ---------------------------------------------------------------------------------------
// The golden file.
// ---------------------------------------------------------------------------------------

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(hex: &str) -> Result<Vec<u8>, String> {
    if !hex.len().is_multiple_of(2) || !hex.is_ascii() {
        return Err("not an even number of hex digits".into());
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).map_err(|_| format!("bad hex digits {:?}", &hex[i..i + 2])))
        .collect()
}

fn render(encoded: &[(String, Vec<u8>)]) -> String {
    let mut out = String::from(
        "# Golden bytes of the wire encoding, one frame per line: `name hex` (4-byte length, MessagePack body).\n\
         # Written by common/tests/wire_golden.rs with AMPSTORE_BLESS_GOLDEN=1; a changed line is a wire change.\n",
    );
    for (name, bytes) in encoded {
        out.push_str(&format!("{name} {}\n", to_hex(bytes)));
    }
    out
}

/// The file's entries by name (`#` lines and blank lines are comments).
fn parse(text: &str) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let mut entries = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, hex) = line.split_once(' ').ok_or_else(|| format!("line {}: not `name hex`", i + 1))?;
        let bytes = from_hex(hex.trim()).map_err(|e| format!("line {}: {e}", i + 1))?;
        if entries.insert(name.to_string(), bytes).is_some() {
            return Err(format!("line {}: {name} appears twice", i + 1));
        }
    }
    Ok(entries)
}

/// Where two frames first differ, counted in the body: the length prefix differs whenever
/// the length does, which would say nothing.
fn first_body_difference(a: &[u8], b: &[u8]) -> usize {
    let (a, b) = (a.get(FRAME_HEADER_BYTES..).unwrap_or_default(), b.get(FRAME_HEADER_BYTES..).unwrap_or_default());
    a.iter().zip(b).position(|(x, y)| x != y).unwrap_or(a.len().min(b.len()))
}

#[test]
fn wire_encoding_matches_golden_file() {
    let messages = golden_messages();
    let encoded: Vec<(String, Vec<u8>)> = messages.iter().map(|(name, msg)| (name.clone(), msg.encode())).collect();

    // What we encode today must decode back to the same value.
    let mut problems = Vec::new();
    for ((name, msg), (_, bytes)) in messages.iter().zip(&encoded) {
        if let Err(e) = msg.check_decodes_from(bytes) {
            problems.push(format!("{name}: decoding the fresh encoding {e}"));
        }
    }
    assert!(problems.is_empty(), "round trip failed:\n  {}", problems.join("\n  "));

    if std::env::var(BLESS_VAR).is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(std::path::Path::new(GOLDEN_PATH).parent().expect("a parent directory"))
            .expect("create the golden directory");
        std::fs::write(GOLDEN_PATH, render(&encoded)).expect("write the golden file");
        eprintln!("wrote {} messages to {GOLDEN_PATH}", encoded.len());
        return;
    }

    let text = match std::fs::read_to_string(GOLDEN_PATH) {
        Ok(text) => text,
        Err(e) => panic!("cannot read the golden file {GOLDEN_PATH}: {e}\nCreate it with:\n  {BLESS_COMMAND}"),
    };
    let golden =
        parse(&text).unwrap_or_else(|e| panic!("{GOLDEN_PATH} is malformed: {e}\nRewrite it with:\n  {BLESS_COMMAND}"));

    // The golden bytes must decode to today's values (what an old peer sent is still read
    // the same), and today's encoding must be exactly those bytes.
    let mut details = Vec::new();
    for ((name, msg), (_, bytes)) in messages.iter().zip(&encoded) {
        let Some(want) = golden.get(name) else {
            problems.push(format!("{name}: missing from the golden file"));
            continue;
        };
        if let Err(e) = msg.check_decodes_from(want) {
            problems.push(format!("{name}: decoding the golden bytes {e}"));
        }
        if want != bytes {
            let at = first_body_difference(want, bytes);
            problems.push(format!(
                "{name}: encodes differently (bodies first differ at byte {at}; frame of {} bytes in the file, {} now)",
                want.len(),
                bytes.len()
            ));
            if details.len() < 3 {
                details.push(format!("{name}\n    golden: {}\n    now:    {}", to_hex(want), to_hex(bytes)));
            }
        }
    }
    let produced: BTreeSet<&str> = encoded.iter().map(|(name, _)| name.as_str()).collect();
    for name in golden.keys().filter(|name| !produced.contains(name.as_str())) {
        problems.push(format!("{name}: in the golden file but no longer produced"));
    }
    assert!(
        problems.is_empty(),
        "the wire encoding differs from {GOLDEN_PATH}:\n  {}\n\n{}\n\nIf the change of the wire is intended \
         (old peers will see it: consider PROTOCOL_VERSION), rewrite the file with\n  {BLESS_COMMAND}\nand \
         review its diff.",
        problems.join("\n  "),
        details.join("\n"),
    );
}

/// The hand-written encoders and decoders of the hot messages (`wire::hot`, which the node
/// and the client use for every request and response) write and read the golden bytes too:
/// for every request and response here, hot or not, the same frame and the same value.
#[test]
fn the_hot_path_reads_and_writes_the_golden_bytes() {
    use ampstore_common::protocol::RequestRef;
    use ampstore_common::wire::hot::{decode_request, decode_response, encode_request, encode_response};
    let text = std::fs::read_to_string(GOLDEN_PATH).expect("the golden file");
    let golden = parse(&text).expect("a well-formed golden file");
    let mut checked = 0;
    for (name, msg) in golden_messages() {
        let want = &golden[&name];
        let body = frame_body(want).expect("a golden frame");
        let mut got = Vec::new();
        match &msg {
            Msg::Request(m) => {
                encode_request(&RequestRef { id: m.id, deadline_ms: m.deadline_ms, op: &m.op }, &mut got).unwrap();
                assert_eq!(&decode_request(body).unwrap(), m, "{name}: decoded");
            }
            Msg::Response(m) => {
                encode_response(m, &mut got).unwrap();
                assert_eq!(&decode_response(body).unwrap(), m, "{name}: decoded");
            }
            Msg::Hello(_) | Msg::HelloReply(_) => continue,
        }
        assert!(
            &got == want,
            "{name}: encodes differently\n    golden: {}\n    now:    {}",
            to_hex(want),
            to_hex(&got)
        );
        checked += 1;
    }
    assert!(checked > 50, "requests and responses checked: {checked}");
}

/// Every variant of `Op`, `Reply` and `Error` has its golden message, once.
#[test]
fn every_variant_has_a_golden_message() {
    fn check(what: &str, all: &[&str], covered: Vec<&'static str>) {
        let all_set: BTreeSet<&str> = all.iter().copied().collect();
        assert_eq!(all_set.len(), all.len(), "{what}: a name is given to two variants in variant_names!");
        let covered_set: BTreeSet<&str> = covered.iter().copied().collect();
        assert_eq!(covered_set.len(), covered.len(), "{what}: a variant has two samples: {covered:?}");
        // `covered` comes from the same exhaustive match, so it can only fall short.
        let missing: Vec<&str> = all_set.difference(&covered_set).copied().collect();
        assert!(missing.is_empty(), "{what}: no golden sample for {missing:?}: add one value of each to the samples");
    }
    check("Op", OP_NAMES, ops().iter().map(op_name).collect());
    check("Reply", REPLY_NAMES, replies().iter().map(reply_name).collect());
    check("Error", ERROR_NAMES, errors().iter().map(error_name).collect());
    // And each of them is in the golden messages under its name.
    let names: BTreeSet<String> = golden_messages().into_iter().map(|(name, _)| name).collect();
    let expected = OP_NAMES
        .iter()
        .map(|n| format!("request.{n}"))
        .chain(REPLY_NAMES.iter().map(|n| format!("response.{n}")))
        .chain(ERROR_NAMES.iter().map(|n| format!("response.err.{n}")));
    for name in expected {
        assert!(names.contains(&name), "no golden message {name}");
    }
}
