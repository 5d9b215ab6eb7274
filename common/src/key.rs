//! Keys, key ranges and per-key versions.
//!
//! Keys are byte strings ordered lexicographically. A range is half-open, `[start, end)`,
//! and `end = None` means "no upper bound". The whole key space is `[b"", None)`.

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::ids::Seq;
use crate::limits::KEY_BYTES_MAX;

/// Keys starting with these bytes hold lists and queues; users cannot write them directly.
pub const RESERVED_PREFIX: [u8; 2] = [0xFF, 0xFF];

/// A key: 0 to [`KEY_BYTES_MAX`] bytes, compared byte by byte. Travels as msgpack `bin`.
///
/// The empty key is valid as a range boundary (the start of the key space); user keys are
/// checked with [`Key::validate_user_key`].
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Key(#[serde(with = "serde_bytes")] pub Vec<u8>);

/// Ordered and hashed as its bytes (the derives go through the `Vec<u8>`, which orders and
/// hashes as its slice), so maps keyed by `Key` can be searched with a borrowed `&[u8]`.
impl std::borrow::Borrow<[u8]> for Key {
    fn borrow(&self) -> &[u8] {
        &self.0
    }
}

impl Key {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Key {
        Key(bytes.into())
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Checks the limits a key written or read by a user must meet: 1 to
    /// [`KEY_BYTES_MAX`] bytes, not in the reserved namespace ([`RESERVED_PREFIX`]).
    pub fn validate_user_key(bytes: &[u8]) -> Result<(), KeyError> {
        if bytes.is_empty() {
            return Err(KeyError::Invalid("key must not be empty".into()));
        }
        if bytes.starts_with(&RESERVED_PREFIX) {
            return Err(KeyError::Invalid("keys starting with bytes ff ff are reserved (lists, queues)".into()));
        }
        Self::validate_bound(bytes)
    }

    /// The end of the user key space: every user key sorts below it, every internal key
    /// (list elements, queue tasks) at or above it.
    pub fn user_end() -> Key {
        Key(RESERVED_PREFIX.to_vec())
    }

    /// Checks the limit a range boundary must meet (the empty key is allowed).
    pub fn validate_bound(bytes: &[u8]) -> Result<(), KeyError> {
        if bytes.len() > KEY_BYTES_MAX {
            return Err(KeyError::TooLarge { what: "key", size: bytes.len(), max: KEY_BYTES_MAX });
        }
        Ok(())
    }
}

/// Why a key or range bound was refused: its own small type, so this module needs nothing
/// from `error` (which names keys); it converts into [`crate::Error`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not allowed here (becomes `Invalid`).
    #[error("{0}")]
    Invalid(String),
    /// Over a size limit (becomes `TooLarge`).
    #[error("{what} of {size} bytes is over the limit of {max}")]
    TooLarge { what: &'static str, size: usize, max: usize },
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self)
    }
}

/// Printable form: the key as text where it is printable ASCII, `\xNN` escapes elsewhere.
impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &b in &self.0 {
            if b.is_ascii_graphic() || b == b' ' {
                if b == b'\\' {
                    f.write_str("\\\\")?;
                } else {
                    write!(f, "{}", b as char)?;
                }
            } else {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

impl From<&str> for Key {
    fn from(s: &str) -> Key {
        Key(s.as_bytes().to_vec())
    }
}

impl From<String> for Key {
    fn from(s: String) -> Key {
        Key(s.into_bytes())
    }
}

impl From<&String> for Key {
    fn from(s: &String) -> Key {
        Key(s.as_bytes().to_vec())
    }
}

impl From<&[u8]> for Key {
    fn from(s: &[u8]) -> Key {
        Key(s.to_vec())
    }
}

impl From<Vec<u8>> for Key {
    fn from(v: Vec<u8>) -> Key {
        Key(v)
    }
}

/// A half-open key range `[start, end)`; `end = None` is unbounded.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KeyRange {
    pub start: Key,
    pub end: Option<Key>,
}

impl KeyRange {
    /// The whole key space.
    pub fn full() -> KeyRange {
        KeyRange { start: Key::default(), end: None }
    }

    /// `[start, end)`; rejects an empty or inverted range and over-long bounds.
    pub fn new(start: Key, end: Option<Key>) -> Result<KeyRange, KeyError> {
        Key::validate_bound(start.as_bytes())?;
        if let Some(end) = &end {
            Key::validate_bound(end.as_bytes())?;
            if end <= &start {
                return Err(KeyError::Invalid(format!("range end {end} must be greater than start {start}")));
            }
        }
        Ok(KeyRange { start, end })
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.as_bytes() && self.end.as_ref().is_none_or(|e| key < e.as_bytes())
    }

    /// True when the two ranges share at least one key.
    pub fn overlaps(&self, other: &KeyRange) -> bool {
        let self_starts_before_other_ends = other.end.as_ref().is_none_or(|e| self.start.as_bytes() < e.as_bytes());
        let other_starts_before_self_ends = self.end.as_ref().is_none_or(|e| other.start.as_bytes() < e.as_bytes());
        self_starts_before_other_ends && other_starts_before_self_ends
    }

    /// Splits at `at` into `[start, at)` and `[at, end)`; `at` must lie strictly inside.
    pub fn split_at(&self, at: Key) -> Result<(KeyRange, KeyRange), KeyError> {
        if at <= self.start || !self.contains(at.as_bytes()) {
            return Err(KeyError::Invalid(format!("split key {at} is not strictly inside {self}")));
        }
        Ok((
            KeyRange { start: self.start.clone(), end: Some(at.clone()) },
            KeyRange { start: at, end: self.end.clone() },
        ))
    }

    /// True when `self` ends exactly where `next` starts.
    pub fn is_left_neighbour_of(&self, next: &KeyRange) -> bool {
        self.end.as_ref() == Some(&next.start)
    }
}

impl fmt::Debug for KeyRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self)
    }
}

impl fmt::Display for KeyRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.end {
            Some(end) => write!(f, "[\"{}\", \"{}\")", self.start, end),
            None => write!(f, "[\"{}\", +inf)", self.start),
        }
    }
}

/// The version of a key: the log seq of the batch that wrote it and the write's index in
/// that batch. Versions of one range grow strictly with every write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Version {
    pub seq: Seq,
    pub index: u32,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.seq.0, self.index)
    }
}

#[cfg(test)]
mod tests {
    /// A map keyed by `Key` searched with `&[u8]` bounds finds what `Key` bounds find
    /// (`Borrow<[u8]>` must order as `Key` does), also for prefixes and the empty key.
    #[test]
    fn borrowed_bounds_order_as_keys_do() {
        use std::ops::Bound;
        let starts: Vec<&[u8]> = vec![b"", b"a", b"ab", b"b", b"\xff", b"\xff\xff\x01"];
        let map: std::collections::BTreeMap<super::Key, usize> =
            starts.iter().enumerate().map(|(i, s)| (super::Key::from(*s), i)).collect();
        for probe in [&b""[..], b"a", b"aa", b"ab", b"abc", b"b", b"c", b"\xff", b"\xff\xff", b"\xff\xff\x02"] {
            let owned = map.range(..=super::Key::from(probe)).next_back().map(|(_, i)| *i);
            let borrowed =
                map.range::<[u8], _>((Bound::Unbounded, Bound::Included(probe))).next_back().map(|(_, i)| *i);
            assert_eq!(owned, borrowed, "{probe:?}");
        }
    }

    use super::*;

    fn r(s: &str, e: Option<&str>) -> KeyRange {
        KeyRange::new(Key::from(s), e.map(Key::from)).unwrap()
    }

    #[test]
    fn contains_is_half_open() {
        let kr = r("b", Some("d"));
        assert!(!kr.contains(b"a"));
        assert!(kr.contains(b"b"));
        assert!(kr.contains(b"c\xff\xff"));
        assert!(!kr.contains(b"d"));
        let unbounded = r("b", None);
        assert!(unbounded.contains(b"\xff\xff\xff"));
        assert!(KeyRange::full().contains(b""));
    }

    #[test]
    fn ordering_is_lexicographic_bytes() {
        assert!(Key::from("a") < Key::from("ab"));
        assert!(Key::from("ab") < Key::from("b"));
        assert!(Key::from(&b"\x00"[..]) > Key::from(""));
        assert!(Key::from(&b"\xff"[..]) > Key::from("zzz"));
    }

    #[test]
    fn new_rejects_empty_and_inverted() {
        assert!(KeyRange::new(Key::from("b"), Some(Key::from("b"))).is_err());
        assert!(KeyRange::new(Key::from("c"), Some(Key::from("b"))).is_err());
    }

    #[test]
    fn overlaps() {
        assert!(r("a", Some("c")).overlaps(&r("b", Some("d"))));
        assert!(!r("a", Some("b")).overlaps(&r("b", Some("d"))));
        assert!(r("a", None).overlaps(&r("x", None)));
        assert!(!r("x", None).overlaps(&r("a", Some("x"))));
    }

    #[test]
    fn split_and_neighbours() {
        let (left, right) = r("a", None).split_at(Key::from("m")).unwrap();
        assert_eq!(left, r("a", Some("m")));
        assert_eq!(right, r("m", None));
        assert!(left.is_left_neighbour_of(&right));
        assert!(r("a", Some("m")).split_at(Key::from("a")).is_err());
        assert!(r("a", Some("m")).split_at(Key::from("m")).is_err());
    }

    #[test]
    fn key_limit_boundary() {
        assert!(Key::validate_user_key(&vec![1u8; KEY_BYTES_MAX]).is_ok());
        let err = Key::validate_user_key(&vec![1u8; KEY_BYTES_MAX + 1]).unwrap_err();
        assert_eq!(crate::Error::from(err).code(), crate::ErrorCode::TooLarge);
        assert!(Key::validate_user_key(b"").is_err());
        assert!(Key::validate_bound(b"").is_ok());
    }

    #[test]
    fn display_escapes() {
        assert_eq!(Key::new(b"a\x00\\".to_vec()).to_string(), "a\\x00\\\\");
    }

    #[test]
    fn key_is_msgpack_bin() {
        let bytes = rmp_serde::to_vec_named(&Key::from("ab")).unwrap();
        // 0xc4 = bin8, then length 2.
        assert_eq!(bytes, vec![0xc4, 2, b'a', b'b']);
    }
}
