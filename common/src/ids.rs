//! Identifiers: ranges, nodes, epochs, log sequence numbers, master terms and request ids.

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::limits::NODE_ID_BYTES_MAX;

/// Identity of one key range. Never reused: a split creates two new ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RangeId(pub u64);

impl fmt::Display for RangeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "r{}", self.0)
    }
}

/// Position of an entry in one range's commit log. Entries are dense: the first is 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Seq(pub u64);

impl Seq {
    /// Seq of the first entry of every log.
    pub const FIRST: Seq = Seq(1);

    /// The following slot. Panics only on u64 overflow, which 2^64 appends cannot reach;
    /// for a seq read from storage (where a damaged value can be `u64::MAX`) use
    /// [`Seq::checked_next`].
    pub fn next(self) -> Seq {
        Seq(self.0.checked_add(1).expect("log seq overflow"))
    }

    /// The following slot, or `Internal` when this is the last one: only a damaged stored
    /// value gets there.
    pub fn checked_next(self) -> Result<Seq, IdError> {
        self.0.checked_add(1).map(Seq).ok_or_else(|| overflow("log seq", self.0))
    }
}

/// Why an identifier could not be made: its own small type, so this module needs nothing
/// from `error` (which names identifiers); it converts into [`crate::Error`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Not a valid identifier (becomes `Invalid`).
    #[error("{0}")]
    Invalid(String),
    /// A counter read from storage that cannot be bumped: only a damaged value (or one
    /// written by a bug) is at `u64::MAX`, so it becomes `Internal`, never a wrap to 0.
    #[error("{what} {value} cannot be incremented (corrupt stored value?)")]
    Overflow { what: String, value: u64 },
}

fn overflow(what: &str, value: u64) -> IdError {
    IdError::Overflow { what: what.into(), value }
}

/// `value + 1` for a counter read from storage (a meta item's version, a generation), as
/// `Internal` when it would overflow.
pub fn checked_increment(what: &str, value: u64) -> Result<u64, IdError> {
    value.checked_add(1).ok_or_else(|| overflow(what, value))
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A node's liveness epoch. The master bumps it to declare the node dead; an owner is
/// `{node_id, epoch}`, so a bump revokes every range the node held in that epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Epoch(pub u64);

impl Epoch {
    /// The following epoch (a node's next registration, or the master ending this one), or
    /// `Internal` when the stored epoch is already the last.
    pub fn next(self) -> Result<Epoch, IdError> {
        self.0.checked_add(1).map(Epoch).ok_or_else(|| overflow("epoch", self.0))
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "e{}", self.0)
    }
}

/// A master term: bumped by every takeover; every master write is conditional on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Term(pub u64);

impl Term {
    /// The following master term (a takeover), or `Internal` when the stored term is
    /// already the last.
    pub fn next(self) -> Result<Term, IdError> {
        self.0.checked_add(1).map(Term).ok_or_else(|| overflow("master term", self.0))
    }
}

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t{}", self.0)
    }
}

/// Id of one request on one connection; responses carry it back (pipelining, any order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RequestId(pub u64);

/// Stable name of a node (or master, or collector): created on first start and kept in the
/// process's data dir. 1 to 64 characters of `[A-Za-z0-9_.-]`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct NodeId(String);

impl NodeId {
    /// Validates `s` as a node id.
    pub fn new(s: impl Into<String>) -> Result<NodeId, IdError> {
        let s = s.into();
        if s.is_empty() || s.len() > NODE_ID_BYTES_MAX {
            return Err(IdError::Invalid(format!("node id must be 1 to {NODE_ID_BYTES_MAX} bytes, got {}", s.len())));
        }
        if let Some(bad) = s.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))) {
            return Err(IdError::Invalid(format!(
                "node id may hold only letters, digits, '_', '-' and '.', found {bad:?}"
            )));
        }
        Ok(NodeId(s))
    }

    /// A fresh random id such as `n-3f9a1c0b7d2e4a61`.
    pub fn random() -> NodeId {
        NodeId(format!("n-{:016x}", rand::random::<u64>()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for NodeId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        NodeId::new(s).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn increments_of_stored_counters_fail_at_the_top_instead_of_wrapping() {
        assert_eq!(Seq(u64::MAX - 1).checked_next().unwrap(), Seq(u64::MAX));
        assert!(matches!(Seq(u64::MAX).checked_next(), Err(IdError::Overflow { .. })));
        assert_eq!(Epoch(u64::MAX - 1).next().unwrap(), Epoch(u64::MAX));
        assert!(matches!(Epoch(u64::MAX).next(), Err(IdError::Overflow { .. })));
        assert_eq!(Term(u64::MAX - 1).next().unwrap(), Term(u64::MAX));
        assert!(matches!(Term(u64::MAX).next(), Err(IdError::Overflow { .. })));
        assert_eq!(checked_increment("version", u64::MAX - 1).unwrap(), u64::MAX);
        assert!(matches!(checked_increment("version", u64::MAX), Err(IdError::Overflow { .. })));
    }

    #[test]
    fn node_id_bounds() {
        assert!(NodeId::new("a").is_ok());
        assert!(NodeId::new("x".repeat(NODE_ID_BYTES_MAX)).is_ok());
        assert!(NodeId::new("x".repeat(NODE_ID_BYTES_MAX + 1)).is_err());
        assert!(NodeId::new("").is_err());
        assert!(NodeId::new("a b").is_err());
        assert!(NodeId::new("node/1").is_err());
        let r = NodeId::random();
        assert!(NodeId::new(r.as_str()).is_ok());
    }

    #[test]
    fn node_id_deserialize_validates() {
        let bytes = rmp_serde::to_vec_named("bad id!").unwrap();
        assert!(rmp_serde::from_slice::<NodeId>(&bytes).is_err());
        let bytes = rmp_serde::to_vec_named("n-1").unwrap();
        assert_eq!(rmp_serde::from_slice::<NodeId>(&bytes).unwrap().as_str(), "n-1");
    }
}
