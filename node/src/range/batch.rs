//! The payload of a `Batch` log entry: the writes of one group commit, in order.
//! A write's version is `{seq of the entry, index in this list}`.

use ampstore_common::Key;
use ampstore_common::error::Error;
use ampstore_common::lists::PushId;
use ampstore_common::protocol::WriteId;
use ampstore_common::write_ids::WriteKey;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LoggedOp {
    Put {
        key: Key,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    Delete {
        key: Key,
    },
    DeleteRange {
        start: Key,
        end: Option<Key>,
    },
}

impl LoggedOp {
    /// The key a client routes this write by (a delete-range's start): a retry of it comes
    /// to the range holding this key.
    pub fn routing_key(&self) -> &Key {
        match self {
            LoggedOp::Put { key, .. } | LoggedOp::Delete { key } => key,
            LoggedOp::DeleteRange { start, .. } => start,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggedWrite {
    pub op: LoggedOp,
    pub write_id: Option<WriteId>,
    /// A push's or enqueue's id, so that a range rebuilding its write-id table from the log
    /// knows it (absent from the encoding otherwise: entries without it decode as before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_id: Option<PushId>,
}

impl LoggedWrite {
    /// The write as logged, with its id.
    pub fn new(op: LoggedOp, id: Option<WriteKey>) -> LoggedWrite {
        let (write_id, push_id) = match id {
            Some(WriteKey::Write(w)) => (Some(w), None),
            Some(WriteKey::Push(p)) => (None, Some(p)),
            Some(WriteKey::Txn(_)) | None => (None, None),
        };
        LoggedWrite { op, write_id, push_id }
    }

    /// The id the write is remembered by.
    pub fn id(&self) -> Option<WriteKey> {
        self.write_id.map(WriteKey::Write).or(self.push_id.map(WriteKey::Push))
    }

    /// Upper bound of this write's share of an encoded batch, in bytes.
    pub fn encoded_bytes_max(&self) -> usize {
        Self::encoded_bytes_max_of(&self.op, self.push_id.is_some())
    }

    /// [`LoggedWrite::encoded_bytes_max`] of the write `op` would make (with a push id when
    /// `push_id`), before it is made: the batch is planned without copying the op.
    pub fn encoded_bytes_max_of(op: &LoggedOp, push_id: bool) -> usize {
        // A push id adds a field name and a map of three u64s: at most 8 + 1 + 3 * (2 + 9) bytes.
        let push_id_bytes = if push_id { 48 } else { 0 };
        ampstore_common::limits::LOGGED_WRITE_OVERHEAD_BYTES
            + push_id_bytes
            + match op {
                LoggedOp::Put { key, value } => key.len() + value.len(),
                LoggedOp::Delete { key } => key.len(),
                LoggedOp::DeleteRange { start, end } => start.len() + end.as_ref().map_or(0, Key::len),
            }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchPayload {
    pub writes: Vec<LoggedWrite>,
}

pub fn encode(payload: &BatchPayload, out: &mut Vec<u8>) {
    out.clear();
    // Plain data (byte strings, integers, enums): encoding into a Vec cannot fail.
    let _ = rmp_serde::encode::write_named(out, payload);
}

pub fn decode(bytes: &[u8]) -> Result<BatchPayload, Error> {
    rmp_serde::from_slice(bytes).map_err(|e| Error::internal(format!("log batch does not decode: {e}")))
}

/// The payload of a `Txn` entry: one transaction's writes in one range.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnPayload {
    pub txn_id: WriteId,
    pub writes: Vec<LoggedWrite>,
}

pub fn encode_txn(payload: &TxnPayload) -> Vec<u8> {
    // Plain data: encoding into a Vec cannot fail.
    rmp_serde::to_vec_named(payload).unwrap_or_default()
}

pub fn decode_txn(bytes: &[u8]) -> Result<TxnPayload, Error> {
    rmp_serde::from_slice(bytes).map_err(|e| Error::internal(format!("transaction entry does not decode: {e}")))
}

/// A transaction's write as it goes into the log.
pub fn logged(w: &ampstore_common::txn::TxnWrite) -> LoggedWrite {
    use ampstore_common::txn::TxnWrite;
    let op = match w {
        TxnWrite::Put { key, value } => LoggedOp::Put { key: key.clone(), value: value.clone() },
        TxnWrite::Delete { key } => LoggedOp::Delete { key: key.clone() },
        TxnWrite::Push { element, .. } => LoggedOp::Put { key: w.target(), value: element.clone() },
    };
    LoggedWrite { op, write_id: None, push_id: None }
}
