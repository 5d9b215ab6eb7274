//! The typed error that travels over the wire.
//!
//! Every reply that is not a success carries one of these, encoded as a MessagePack map
//! `{"code": "<Variant>", ...fields}` so that other languages can read it.

use serde::{Deserialize, Serialize};

use crate::ids::NodeId;
use crate::limits::ERROR_REASON_BYTES_MAX;

/// Where the sender believes a key's range is served.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerHint {
    pub node_id: NodeId,
    pub rpc_addr: String,
}

/// An Ampstore error, as seen by clients and peers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "code")]
pub enum Error {
    /// This node does not serve the range holding the key; `hint` names who might.
    #[error("not the owner of this key's range{}", hint_text(.hint))]
    NotOwner { hint: Option<OwnerHint> },
    /// This master is not the active one; `hint` names the lease holder when known.
    #[error("not the active master{}", hint_text(.hint))]
    NotMaster { hint: Option<OwnerHint> },
    /// The range is being loaded; retry after the hinted delay.
    #[error("range is loading, retry in {retry_after_ms} ms")]
    RangeLoading { retry_after_ms: u64 },
    /// The key is outside the range the request was addressed to.
    #[error("key is outside the addressed range")]
    KeyOutOfRange,
    /// Another owner took the range; this node no longer writes to it.
    #[error("range was fenced by a newer owner")]
    Fenced,
    /// An input is over its limit (see `common::limits`).
    #[error("{what} is too large: {size} bytes, limit {max}")]
    TooLarge { what: String, size: u64, max: u64 },
    /// The request is malformed or breaks a rule.
    #[error("invalid request: {reason}")]
    Invalid { reason: String },
    /// A condition (version, expected value, slot) did not hold; `key` names the key whose
    /// condition failed, when one did.
    #[error("conflict: {reason}")]
    Conflict {
        reason: String,
        #[serde(default)]
        key: Option<crate::key::Key>,
    },
    /// The operation did not finish before its deadline; it may or may not have taken effect.
    #[error("timed out")]
    Timeout,
    /// A dependency (storage backend, peer) cannot be reached right now; retry.
    #[error("unavailable: {reason}")]
    Unavailable { reason: String },
    /// The hello did not present its role's credential (the cluster token for clients, the
    /// admin token for every other role), or the connection's role may not send this
    /// operation (`Op::allowed_for`).
    #[error("unauthorized: {reason}")]
    Unauthorized { reason: String },
    /// A bug or an unexpected state on the server side.
    #[error("internal error: {reason}")]
    Internal { reason: String },
    /// An error code this build does not know (sent by a newer peer).
    #[serde(other)]
    #[error("unknown error code from peer")]
    Unknown,
}

/// The kind of an [`Error`], without its details; convenient for matching and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    NotOwner,
    NotMaster,
    RangeLoading,
    KeyOutOfRange,
    Fenced,
    TooLarge,
    Invalid,
    Conflict,
    Timeout,
    Unavailable,
    Unauthorized,
    Internal,
    Unknown,
}

fn hint_text(hint: &Option<OwnerHint>) -> String {
    match hint {
        Some(h) => format!(" (try {} at {})", h.node_id, h.rpc_addr),
        None => String::new(),
    }
}

fn bounded(reason: String) -> String {
    if reason.len() <= ERROR_REASON_BYTES_MAX {
        return reason;
    }
    let mut cut = ERROR_REASON_BYTES_MAX;
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}...", &reason[..cut])
}

impl ErrorCode {
    /// Every code, in declaration order (`index` is the position here).
    pub const ALL: [ErrorCode; 13] = [
        ErrorCode::NotOwner,
        ErrorCode::NotMaster,
        ErrorCode::RangeLoading,
        ErrorCode::KeyOutOfRange,
        ErrorCode::Fenced,
        ErrorCode::TooLarge,
        ErrorCode::Invalid,
        ErrorCode::Conflict,
        ErrorCode::Timeout,
        ErrorCode::Unavailable,
        ErrorCode::Unauthorized,
        ErrorCode::Internal,
        ErrorCode::Unknown,
    ];

    /// The code's position in [`ErrorCode::ALL`] (tables indexed by code).
    pub fn index(self) -> usize {
        self as usize
    }

    /// The code in snake case (metrics labels, logs).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::NotOwner => "not_owner",
            ErrorCode::NotMaster => "not_master",
            ErrorCode::RangeLoading => "range_loading",
            ErrorCode::KeyOutOfRange => "key_out_of_range",
            ErrorCode::Fenced => "fenced",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Invalid => "invalid",
            ErrorCode::Conflict => "conflict",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Internal => "internal",
            ErrorCode::Unknown => "unknown",
        }
    }
}

impl Error {
    pub fn invalid(reason: impl Into<String>) -> Error {
        Error::Invalid { reason: bounded(reason.into()) }
    }

    pub fn conflict(reason: impl Into<String>) -> Error {
        Error::Conflict { reason: bounded(reason.into()), key: None }
    }

    /// A conflict on `key` (a transaction's condition or read version did not hold).
    pub fn conflict_on(key: &crate::key::Key, reason: impl Into<String>) -> Error {
        let key = (key.len() <= crate::limits::KEY_BYTES_MAX).then(|| key.clone());
        Error::Conflict { reason: bounded(reason.into()), key }
    }

    pub fn unavailable(reason: impl Into<String>) -> Error {
        Error::Unavailable { reason: bounded(reason.into()) }
    }

    pub fn internal(reason: impl Into<String>) -> Error {
        Error::Internal { reason: bounded(reason.into()) }
    }

    pub fn too_large(what: impl Into<String>, size: usize, max: usize) -> Error {
        Error::TooLarge { what: what.into(), size: size as u64, max: max as u64 }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            Error::NotOwner { .. } => ErrorCode::NotOwner,
            Error::NotMaster { .. } => ErrorCode::NotMaster,
            Error::RangeLoading { .. } => ErrorCode::RangeLoading,
            Error::KeyOutOfRange => ErrorCode::KeyOutOfRange,
            Error::Fenced => ErrorCode::Fenced,
            Error::TooLarge { .. } => ErrorCode::TooLarge,
            Error::Invalid { .. } => ErrorCode::Invalid,
            Error::Conflict { .. } => ErrorCode::Conflict,
            Error::Timeout => ErrorCode::Timeout,
            Error::Unavailable { .. } => ErrorCode::Unavailable,
            Error::Unauthorized { .. } => ErrorCode::Unauthorized,
            Error::Internal { .. } => ErrorCode::Internal,
            Error::Unknown => ErrorCode::Unknown,
        }
    }

    /// True when the same request may succeed if sent again (possibly elsewhere) later.
    /// Whether it is *safe* to resend is the caller's concern (idempotence, request ids).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.code(),
            ErrorCode::NotOwner
                | ErrorCode::NotMaster
                | ErrorCode::RangeLoading
                | ErrorCode::Fenced
                | ErrorCode::Timeout
                | ErrorCode::Unavailable
        )
    }
}

impl From<crate::ids::IdError> for Error {
    fn from(e: crate::ids::IdError) -> Error {
        match e {
            crate::ids::IdError::Invalid(reason) => Error::invalid(reason),
            overflow @ crate::ids::IdError::Overflow { .. } => Error::internal(overflow.to_string()),
        }
    }
}

impl From<crate::key::KeyError> for Error {
    fn from(e: crate::key::KeyError) -> Error {
        match e {
            crate::key::KeyError::Invalid(reason) => Error::invalid(reason),
            crate::key::KeyError::TooLarge { what, size, max } => Error::too_large(what, size, max),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(e: &Error) -> Error {
        let bytes = rmp_serde::to_vec_named(e).unwrap();
        rmp_serde::from_slice(&bytes).unwrap()
    }

    #[test]
    fn every_variant_round_trips() {
        let all = vec![
            Error::NotOwner { hint: None },
            Error::NotOwner {
                hint: Some(OwnerHint { node_id: NodeId::new("n1").unwrap(), rpc_addr: "127.0.0.1:7000".into() }),
            },
            Error::RangeLoading { retry_after_ms: 50 },
            Error::NotMaster { hint: None },
            Error::KeyOutOfRange,
            Error::Fenced,
            Error::too_large("value", 10, 5),
            Error::invalid("x"),
            Error::conflict("y"),
            Error::Timeout,
            Error::unavailable("z"),
            Error::Unauthorized { reason: "no token".into() },
            Error::internal("w"),
        ];
        for e in &all {
            assert_eq!(&round_trip(e), e);
        }
    }

    #[test]
    fn unknown_code_is_tolerated() {
        #[derive(Serialize)]
        struct Future {
            code: &'static str,
            detail: u32,
        }
        let bytes = rmp_serde::to_vec_named(&Future { code: "SomethingNew", detail: 3 }).unwrap();
        let e: Error = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(e, Error::Unknown);
    }

    #[test]
    fn reasons_are_bounded() {
        let e = Error::invalid("é".repeat(ERROR_REASON_BYTES_MAX));
        match e {
            Error::Invalid { reason } => assert!(reason.len() <= ERROR_REASON_BYTES_MAX + 3),
            _ => unreachable!(),
        }
    }

    #[test]
    fn wire_form_is_a_map_with_code() {
        let bytes = rmp_serde::to_vec_named(&Error::Fenced).unwrap();
        let v: serde_json::Value = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(v, serde_json::json!({"code": "Fenced"}));
    }
}
