//! Every size and count limit of Ampstore, in one place.
//!
//! Limits are enforced on both sides of every boundary (client and node, node and storage)
//! and each one has a test at its boundary. Units are in the names.

/// Largest key, in bytes.
pub const KEY_BYTES_MAX: usize = 1024;

/// Largest value, in bytes.
pub const VALUE_BYTES_MAX: usize = 256 * 1024;

/// Largest frame on the wire (the MessagePack body, without the 4-byte length prefix).
pub const FRAME_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Deepest nesting of MessagePack arrays and maps in one frame, checked before decoding
/// (serde decodes nesting by recursion, so an unbounded depth could overflow the stack).
/// The deepest message of the protocol nests 9 deep (a `Txn` request: its parts' checks
/// with version conditions; `frame::tests` measures every deep shape), so this leaves room
/// for fields added later. A `Batch` inside a `Batch` is refused by `Op::validate` anyway.
pub const FRAME_NESTING_DEPTH_MAX: usize = 32;

/// Largest payload of one commit-log entry (one batch). Chosen so that an entry plus its
/// key attributes fits a DynamoDB item (400 KB).
pub const LOG_ENTRY_BYTES_MAX: usize = 350 * 1024;

/// Most slots one `append_atomic` may write (DynamoDB TransactWriteItems allows 100 actions).
pub const APPEND_ATOMIC_SLOTS_MAX: usize = 100;

/// Most payload bytes one `append_atomic` may write in total (DynamoDB caps a transaction at
/// 4 MB; moto does not enforce it, so we always check it ourselves).
pub const APPEND_ATOMIC_BYTES_MAX: usize = 4_000_000;

/// Most entries one `CommitLog::read` call returns.
pub const LOG_READ_ENTRIES_MAX: usize = 1000;

/// Largest value of one meta item (range descriptors, leases, node records are small).
pub const META_VALUE_BYTES_MAX: usize = 350 * 1024;

/// Largest meta partition name, in bytes.
pub const META_PARTITION_BYTES_MAX: usize = 64;

/// Largest meta sort key, in bytes (a range's start key is a sort key, so at least a key).
pub const META_SORT_KEY_BYTES_MAX: usize = KEY_BYTES_MAX;

/// Most operations in one transactional meta update (DynamoDB TransactWriteItems).
pub const META_TRANSACT_OPS_MAX: usize = 100;

/// Most items one `MetaStore::query` call returns.
pub const META_QUERY_ITEMS_MAX: usize = 1000;

/// Largest blob name, in bytes.
pub const BLOB_NAME_BYTES_MAX: usize = 512;

/// Largest blob (a snapshot of one range; ranges split long before this).
pub const BLOB_BYTES_MAX: usize = 512 * 1024 * 1024;

/// Most names one `BlobStore::list` call returns.
pub const BLOB_LIST_NAMES_MAX: usize = 10_000;

/// Largest scan page, in bytes of keys and values.
pub const SCAN_PAGE_BYTES_MAX: usize = 1024 * 1024;

/// Most keys in one scan page.
pub const SCAN_PAGE_KEYS_MAX: usize = 10_000;

/// Most ranges one `LocateRange` answer lists.
pub const LOCATE_RANGES_MAX: usize = 1000;

/// Most range moves a master runs at once (`master.moves_in_flight_max`).
pub const MASTER_MOVES_IN_FLIGHT_MAX: u64 = 64;

/// Most gossip seeds in the configuration.
pub const GOSSIP_SEEDS_MAX: usize = 64;

/// Largest gossip UDP packet sent or accepted (sealed, with the envelope).
pub const GOSSIP_PACKET_BYTES_MAX: usize = 1400;

/// Most members the gossip view tracks (guards against a flood of fake identities).
pub const GOSSIP_MEMBERS_MAX: usize = 4096;

/// Smallest split size a node accepts (smaller would split ranges of a few keys).
pub const SPLIT_BYTES_MIN: u64 = 4096;

/// Most keys in one `get_many`.
pub const GET_MANY_KEYS_MAX: usize = 1000;

/// Target uncompressed size of one snapshot block.
pub const SNAPSHOT_BLOCK_BYTES_TARGET: usize = 64 * 1024;

/// Most entries a snapshot may hold (guards the reader against a hostile index).
pub const SNAPSHOT_ENTRIES_MAX: u64 = 100_000_000;

/// Most blocks a snapshot may hold.
pub const SNAPSHOT_BLOCKS_MAX: u32 = 1_000_000;

/// Queue depth of the embedded backend's writer task (requests waiting for a commit).
pub const LOCAL_WRITER_QUEUE_DEPTH: usize = 4096;

/// How long a call to the store process (`backend.local.server`) may take before it is
/// `Unavailable` (outcome unknown). As long as the embedded store's own `busy_timeout`
/// default: a call never gives up sooner than the file lock would have.
pub const STORE_CALL_DEADLINE_MS: u64 = 10_000;

/// Most buffer bytes a pooled connection to the store process keeps between calls (for the
/// request it encodes and the answer it reads): a log read of up to `LOG_READ_BYTES_MAX`
/// must not leave 8 MiB behind in each of up to `STORE_CLIENT_CONNECTIONS_MAX` connections.
/// Above a node's largest append batch (`LOG_ENTRY_BYTES_MAX`), so appends reuse theirs.
pub const STORE_CONN_BUFFER_BYTES_KEPT: usize = 512 * 1024;

/// Most connections one process keeps to the store process (one per call in flight).
pub const STORE_CLIENT_CONNECTIONS_MAX: usize = 64;

/// Most key and value bytes in one answer to a meta query from the store process; a longer
/// answer is cut after the item that crosses it and continued by the client (well under
/// `FRAME_BYTES_MAX`, which a page of 1,000 items of up to `META_VALUE_BYTES_MAX` would pass).
pub const STORE_QUERY_REPLY_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Most log slots in one `AppendEach` request to the store process: the appends of that
/// many ranges that were ready together travel in one frame and are answered by one.
pub const STORE_APPEND_EACH_SLOTS_MAX: usize = 256;

/// Most payload bytes in one `AppendEach` request. At least one entry of the largest size
/// (`LOG_ENTRY_BYTES_MAX`) fits, and the whole request stays well under `FRAME_BYTES_MAX`
/// (each slot adds under 100 bytes of framing to its payload).
pub const STORE_APPEND_EACH_BYTES_MAX: usize = 8 * 1024 * 1024;

/// Most `AppendEach` requests one process has in flight to the store process. Appends that
/// become ready while they are out wait and go together in the next one (as the writes of
/// one range wait for its append in flight): two, so that the store's writer can commit one
/// while the other travels.
pub const STORE_APPEND_EACH_IN_FLIGHT_MAX: usize = 2;

/// Most payload bytes the embedded writer commits in one SQLite transaction.
pub const LOCAL_WRITER_BATCH_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Longest auth token in a hello frame, in bytes.
pub const AUTH_TOKEN_BYTES_MAX: usize = 256;

/// Longest node id, in bytes.
pub const NODE_ID_BYTES_MAX: usize = 64;

/// Longest free-text reason carried in a wire error, in bytes (longer ones are cut).
pub const ERROR_REASON_BYTES_MAX: usize = 1024;

/// Largest uncompressed snapshot block: a block closes once it reaches the target, so it
/// can exceed the target by at most one entry (key, value and encoding overhead).
pub const SNAPSHOT_BLOCK_RAW_BYTES_MAX: usize = SNAPSHOT_BLOCK_BYTES_TARGET + KEY_BYTES_MAX + VALUE_BYTES_MAX + 64;

/// Most payload bytes one `CommitLog::read` call returns (it returns at least one entry).
pub const LOG_READ_BYTES_MAX: usize = 8 * 1024 * 1024;

/// How long a range remembers a write id (with its outcome) after applying it, so that a
/// retry is answered with the original outcome instead of being applied again. At least
/// the longest client call deadline (`CLIENT_CALL_DEADLINE_MS_MAX`), with room for the
/// clocks of two nodes to differ (the records carry wall-clock times across moves).
pub const WRITE_ID_RETENTION_MS: u64 = 90_000;

/// Longest call deadline a client may set: every retry of a write falls inside it, so
/// inside `WRITE_ID_RETENTION_MS`.
pub const CLIENT_CALL_DEADLINE_MS_MAX: u64 = 60_000;

/// What one remembered write counts against `RANGE_WRITE_IDS_BYTES_MAX` (its id, outcome and
/// time as held in memory), plus the text of a conflict.
pub const WRITE_ID_RECORD_BYTES_FIXED: usize = 64;

/// What one client's floor (`WriteId::floor`) counts against `RANGE_WRITE_IDS_BYTES_MAX`:
/// an entry of the range's floor map (client, floor, time, and the map's own share).
pub const WRITE_ID_FLOOR_BYTES_FIXED: usize = 48;

/// Bytes of remembered writes one range keeps. Sized for a range written 20,000 times a
/// second for all of `WRITE_ID_RETENTION_MS` (1.8 million records); beyond it the oldest
/// records go first and a warning is logged (a hot range splits long before).
pub const RANGE_WRITE_IDS_BYTES_MAX: usize = 128 * 1024 * 1024;

/// Largest uncompressed write-id section of a snapshot: a range's remembered writes at
/// their byte bound, with room for their encoding (checked before allocating).
pub const SNAPSHOT_WRITE_IDS_RAW_BYTES_MAX: usize = 2 * RANGE_WRITE_IDS_BYTES_MAX;

/// Most records a snapshot's write-id section may hold (checked before allocating).
pub const SNAPSHOT_WRITE_IDS_MAX: usize = RANGE_WRITE_IDS_BYTES_MAX / WRITE_ID_RECORD_BYTES_FIXED;

/// Writes waiting in one range for the next batch; beyond it writes are refused (Unavailable).
pub const RANGE_PENDING_WRITES_MAX: usize = 100_000;

/// Requests one connection may have in progress at once (pipelining depth).
pub const CONNECTION_REQUESTS_IN_FLIGHT_MAX: usize = 1024;

/// Bytes of encoded requests a client connection queues for its writer before a caller
/// waits for the writer to take them (a request is queued whole, so the queue holds at most
/// this plus one frame). Enough for a full pipeline of small requests in one write.
pub const CONNECTION_QUEUED_BYTES_MAX: usize = 1024 * 1024;

/// Most arbiter (range actor) threads a node may run.
pub const NODE_ARBITERS_MAX: u64 = 256;

/// Ranges one transaction may touch: one reserved log slot each, all written by one
/// `append_atomic`.
pub const TXN_RANGES_MAX: usize = APPEND_ATOMIC_SLOTS_MAX;

/// Checks and writes in one transaction, over all its ranges.
pub const TXN_OPS_MAX: usize = 1000;

/// Encoding overhead of one write in a log entry, at most (field names, headers, ids): 90
/// bytes for the largest shape (a `DeleteRange` with both bounds and a write id with a
/// floor whose numbers take 9 bytes each, in the named format 0), rounded up. A push id adds its own 48 (`batch.rs`).
pub const LOGGED_WRITE_OVERHEAD_BYTES: usize = 96;

/// Encoding overhead of one write in a transaction's log entry, at most: such a write
/// carries no write id or push id (about 40 bytes for the largest shape, a put with bin32
/// key and value headers), rounded up.
pub const LOGGED_TXN_WRITE_OVERHEAD_BYTES: usize = 64;

/// Encoding overhead of a log batch around its writes, at most (a map, the field name, an
/// array header).
pub const LOG_BATCH_HEADER_BYTES_MAX: usize = 16;

/// Bytes of keys and values a transaction writes in one range: its log entry, with room
/// for the encoding of up to `TXN_OPS_MAX` writes.
pub const TXN_PART_BYTES_MAX: usize = LOG_ENTRY_BYTES_MAX - TXN_OPS_MAX * LOGGED_TXN_WRITE_OVERHEAD_BYTES - 1024;

/// Bytes of keys and values a transaction writes in all: its entries go into one
/// `append_atomic`.
pub const TXN_BYTES_MAX: usize =
    APPEND_ATOMIC_BYTES_MAX - TXN_OPS_MAX * LOGGED_TXN_WRITE_OVERHEAD_BYTES - TXN_RANGES_MAX * 1024;

/// The longest a participant holds a transaction (its reserved slot) before it resolves
/// the transaction itself.
pub const TXN_HOLD_MS_MAX: u64 = 30_000;

/// Longest key of a list: its elements' keys add a 5-byte prefix and a 24-byte push id
/// (and list reads a 25-byte bound), all within `KEY_BYTES_MAX`.
pub const LIST_KEY_BYTES_MAX: usize = KEY_BYTES_MAX - 64;

/// Longest queue name (its task keys add 7 bytes of prefix and a 24-byte task id).
pub const QUEUE_NAME_BYTES_MAX: usize = 256;

/// Most tasks one dequeue may lease.
pub const DEQUEUE_TASKS_MAX: usize = 1000;

/// Longest visibility timeout of a dequeued task (12 hours).
pub const QUEUE_VISIBILITY_MS_MAX: u64 = 12 * 3600 * 1000;

/// Longest batching window of a collector.
pub const COLLECTOR_WINDOW_MS_MAX: u64 = 1000;

/// Largest batch a collector sends to one range: what one log entry holds.
pub const COLLECTOR_BATCH_BYTES_MAX: usize = LOG_ENTRY_BYTES_MAX;

/// Most operations in one `Batch` request.
pub const BATCH_OPS_MAX: usize = 10_000;

/// Operations a collector holds for its batches at once; beyond it new ones are refused
/// (`Unavailable`: the client tries another collector or goes direct).
pub const COLLECTOR_WAITING_MAX: usize = 100_000;

/// Attempts, in all, at one conditional meta write whose earlier attempts had an unknown
/// outcome (`store::own_write`): enough to ride out one lost response, few enough that a
/// heartbeat or lease renewal still finishes within its period.
pub const OWN_WRITE_ATTEMPTS_MAX: u32 = 3;

/// Most open connections one `Pool` (`wire::pool`) keeps: a process talks to a few
/// masters and to the nodes of its cluster, far fewer than this. At the limit a closed
/// connection is dropped first, then an arbitrary one (its callers keep their `Arc`).
pub const POOL_CONNECTIONS_MAX: usize = 1024;

/// Most master addresses an `ActiveMaster` (`wire::masters`) learns from `NotMaster`
/// hints beyond the ones it was given (a hint is a master's word, not a list to grow without
/// bound).
pub const MASTER_ADDRS_LEARNED_MAX: usize = 16;

/// The longest time to live a key may be given (`put_with_ttl`, `expire`): 100 years, in
/// ms. A longer one is refused (`Invalid`), never clipped; so is 0 (Redis deletes the key
/// on a TTL of 0 or less: here that is a mistake the caller hears about, nothing changes).
pub const TTL_MS_MAX: u64 = 100 * 365 * 24 * 3600 * 1000;

/// Entries of a range the expiry sweep looks at per tick (`range::machine::EXPIRY_SWEEP`,
/// 100 ms): a range of a million keys is swept in two seconds, at a few ms of CPU a tick.
pub const EXPIRY_SWEEP_ENTRIES_MAX: usize = 50_000;

/// Expired keys a range deletes per sweep tick (ordinary deletes in its next log entry):
/// 100,000 a second per range.
pub const EXPIRY_DELETES_PER_SWEEP_MAX: usize = 10_000;

/// Arguments in one RESP command (`resp::request`): an `MSET` of `TXN_OPS_MAX` pairs fits.
/// More is a protocol error (Redis's own limit is 1024 * 1024; ours keeps one command's
/// parse bounded).
pub const RESP_ARGS_MAX: usize = 2 * TXN_OPS_MAX + 1;

/// Bytes of one RESP bulk string: the largest value a key may hold. A longer one is refused
/// when its length arrives, before any of it is buffered (Redis: `proto-max-bulk-len`).
pub const RESP_BULK_BYTES_MAX: usize = VALUE_BYTES_MAX;

/// Bytes of one RESP command with all its arguments (the largest frame the RPC takes).
pub const RESP_COMMAND_BYTES_MAX: usize = FRAME_BYTES_MAX;

/// Bytes of one inline command line (`PING\r\n` typed into telnet); Redis's limit too.
pub const RESP_INLINE_BYTES_MAX: usize = 64 * 1024;

/// Open RESP connections per node; one more is answered `-ERR max number of clients
/// reached` and closed (Redis's `maxclients` default).
pub const RESP_CONNECTIONS_MAX: usize = 10_000;

/// Commands of a pipeline parsed and served per round before their replies are written:
/// a pipeline of any length is served in rounds of this many.
pub const RESP_PIPELINE_ROUND_COMMANDS_MAX: usize = 1024;

/// How long a RESP connection may take to accept its replies: a client that stops reading
/// is closed after this, so it holds no more than one round of replies.
pub const RESP_WRITE_STALL_MS: u64 = 30_000;

/// Keys `KEYS` examines before it answers an error that names `SCAN` instead.
pub const RESP_KEYS_EXAMINED_MAX: usize = 100_000;

/// Elements of one list that `LRANGE` and `LINDEX` read (`LLEN` counts pages without keeping them).
pub const RESP_LIST_ELEMENTS_MAX: usize = 100_000;

/// Commands queued in one `MULTI` (one Ampstore transaction holds `TXN_OPS_MAX` operations).
pub const RESP_MULTI_COMMANDS_MAX: usize = TXN_OPS_MAX;

/// Keys one connection may `WATCH` at once.
pub const RESP_WATCHED_KEYS_MAX: usize = 1000;

/// Attempts of a read-modify-write command (`APPEND`, `SETRANGE`, `RENAME`, `SET ... XX`)
/// whose version check failed because another client wrote the key in between.
pub const RESP_CAS_ATTEMPTS_MAX: u32 = 32;

/// Reply bytes a RESP connection gathers before it writes them: a round of commands stops
/// here and goes on after the write, so a pipeline of large `GET`s holds at most this much
/// (plus one reply) for a client that reads slowly or not at all.
pub const RESP_ROUND_REPLY_BYTES_MAX: usize = 4 * 1024 * 1024;
