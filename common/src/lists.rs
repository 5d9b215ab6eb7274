//! Lists (push): where a list's elements live in the key space, and push ids.
//!
//! The element pushed at list `key` with push id `id` is stored at the internal key
//! `ff ff 'L' | len(key) u16 | key | id` (24 bytes, big-endian). So a list's elements sort
//! by push id, a push is idempotent by construction (the same id writes the same key), and
//! a client routes a push like any write. Push ids are picked by the client: its clock in
//! milliseconds, its random client id, then its own counter.
//!
//! Clocks alone would let a slow push land *before* an element someone already read, so
//! the list's order would not be the order pushes took effect. The range enforces that
//! order instead: a push whose id is not above every element of its list is refused with a
//! `Conflict` naming the list's last element (unless that very id is already there: then
//! it is a retry, and succeeds), and the client re-stamps it above that element. A list
//! never straddles two ranges (split keys are moved out of list families, see
//! [`split_point_outside`]), so one range sees the whole list. Reads therefore always
//! return a prefix of every later read.

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::key::{Key, RESERVED_PREFIX};
use crate::limits::LIST_KEY_BYTES_MAX;

const LIST_TAG: u8 = b'L';
pub const PUSH_ID_BYTES: usize = 24;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PushId {
    pub ms: u64,
    pub client: u64,
    pub n: u64,
}

impl PushId {
    pub fn to_bytes(self) -> [u8; PUSH_ID_BYTES] {
        let mut out = [0u8; PUSH_ID_BYTES];
        out[..8].copy_from_slice(&self.ms.to_be_bytes());
        out[8..16].copy_from_slice(&self.client.to_be_bytes());
        out[16..].copy_from_slice(&self.n.to_be_bytes());
        out
    }

    pub fn from_bytes(b: &[u8]) -> Option<PushId> {
        if b.len() != PUSH_ID_BYTES {
            return None;
        }
        let word = |i: usize| u64::from_be_bytes(b[i..i + 8].try_into().unwrap_or_default());
        Some(PushId { ms: word(0), client: word(8), n: word(16) })
    }
}

impl std::fmt::Display for PushId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}{:016x}{:016x}", self.ms, self.client, self.n)
    }
}

impl std::str::FromStr for PushId {
    type Err = Error;
    fn from_str(s: &str) -> Result<PushId, Error> {
        let bad = || Error::invalid(format!("a push id is 48 hex digits, got {s:?}"));
        if s.len() != 48 || !s.is_ascii() {
            return Err(bad());
        }
        let word = |i: usize| u64::from_str_radix(&s[i..i + 16], 16).map_err(|_| bad());
        Ok(PushId { ms: word(0)?, client: word(16)?, n: word(32)? })
    }
}

/// Checks a list's key: a user key short enough for its elements' keys.
pub fn validate_list_key(key: &Key) -> Result<(), Error> {
    Key::validate_user_key(key.as_bytes())?;
    if key.len() > LIST_KEY_BYTES_MAX {
        return Err(Error::too_large("list key", key.len(), LIST_KEY_BYTES_MAX));
    }
    Ok(())
}

/// The prefix every element key of the list at `key` starts with.
pub fn family(key: &Key) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + key.len() + PUSH_ID_BYTES);
    out.extend_from_slice(&RESERVED_PREFIX);
    out.push(LIST_TAG);
    out.extend_from_slice(&(key.len() as u16).to_be_bytes());
    out.extend_from_slice(key.as_bytes());
    out
}

pub fn element_key(key: &Key, id: PushId) -> Key {
    let mut k = family(key);
    k.extend_from_slice(&id.to_bytes());
    Key(k)
}

/// The bounds `[start, end)` of a list's element keys after `after` (exclusive).
pub fn bounds(key: &Key, after: Option<PushId>) -> (Key, Key) {
    let fam = family(key);
    let start = match after {
        Some(id) => {
            let mut k = fam.clone();
            k.extend_from_slice(&id.to_bytes());
            k.push(0); // just above `after`
            k
        }
        None => fam.clone(),
    };
    let mut end = fam;
    end.extend_from_slice(&[0xFF; PUSH_ID_BYTES + 1]);
    (Key(start), Key(end))
}

/// The push id of an element key of the list at `key`.
pub fn push_id_of(key: &Key, element_key: &Key) -> Option<PushId> {
    element_key.as_bytes().strip_prefix(family(key).as_slice()).and_then(PushId::from_bytes)
}

/// The family prefix of an element key (`None` for any other key).
pub fn family_of(element_key: &[u8]) -> Option<&[u8]> {
    let rest = element_key.strip_prefix(&RESERVED_PREFIX)?.strip_prefix(&[LIST_TAG])?;
    let len = u16::from_be_bytes(rest.get(..2)?.try_into().ok()?) as usize;
    let family_len = RESERVED_PREFIX.len() + 1 + 2 + len;
    (element_key.len() == family_len + PUSH_ID_BYTES).then(|| &element_key[..family_len])
}

/// A key above every element key of `family`, and below every other list's family that
/// sorts after it.
pub fn family_end(family: &[u8]) -> Key {
    let mut k = family.to_vec();
    k.extend_from_slice(&[0xFF; PUSH_ID_BYTES + 1]);
    Key(k)
}

/// The push id a client re-stamps a push with after the range refused it because
/// `last_element` (an element key) is already in the list: above it, and not before now.
pub fn restamp(last_element: &Key, now_ms: u64, client: u64, n: u64) -> Option<PushId> {
    let family = family_of(last_element.as_bytes())?;
    let last = PushId::from_bytes(&last_element.as_bytes()[family.len()..])?;
    Some(PushId { ms: now_ms.max(last.ms.saturating_add(1)), client, n })
}

/// Where a range may split near `candidate` so that no list straddles two ranges: the
/// candidate itself when it is not an element key, else the start of its list's family
/// when that is above `range_start`, else the end of the family (the caller checks that
/// the range still has keys at or above it).
pub fn split_point_outside(candidate: &Key, range_start: &Key) -> Key {
    match family_of(candidate.as_bytes()) {
        None => candidate.clone(),
        Some(family) if family > range_start.as_bytes() => Key(family.to_vec()),
        Some(family) => family_end(family),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::KEY_BYTES_MAX;

    #[test]
    fn elements_sort_by_push_id_inside_their_list_and_above_user_keys() {
        let (a, b) = (Key::from("list"), Key::from("list2"));
        let id = |ms, n| PushId { ms, client: 9, n };
        let e1 = element_key(&a, id(5, 1));
        let e2 = element_key(&a, id(5, 2));
        let e3 = element_key(&a, id(6, 0));
        assert!(e1 < e2 && e2 < e3);
        let (start, end) = bounds(&a, None);
        assert!(start <= e1 && e3 < end);
        assert!(element_key(&b, id(0, 0)) >= end || element_key(&b, id(0, 0)) < start, "another list is outside");
        let (after, _) = bounds(&a, Some(id(5, 1)));
        assert!(after > e1 && after <= e2);
        assert!(e1 >= Key::user_end());
        assert_eq!(push_id_of(&a, &e2), Some(id(5, 2)));
        assert_eq!(push_id_of(&b, &e2), None);
        let s = id(5, 2).to_string();
        assert_eq!(s.parse::<PushId>().unwrap(), id(5, 2));
        assert!("zz".parse::<PushId>().is_err());
    }

    #[test]
    fn list_keys_leave_room_for_the_element_suffix() {
        let longest = Key::from("k".repeat(LIST_KEY_BYTES_MAX));
        validate_list_key(&longest).unwrap();
        assert!(element_key(&longest, PushId::default()).len() <= KEY_BYTES_MAX);
        assert!(bounds(&longest, Some(PushId::default())).1.len() <= KEY_BYTES_MAX);
        assert!(validate_list_key(&Key::from("k".repeat(LIST_KEY_BYTES_MAX + 1))).is_err());
        assert!(validate_list_key(&Key::new(vec![0xFF, 0xFF, 1])).is_err(), "reserved");
    }

    #[test]
    fn split_points_never_fall_inside_a_list() {
        let list = Key::from("l");
        let id = |ms| PushId { ms, client: 1, n: 0 };
        let (e1, e2) = (element_key(&list, id(1)), element_key(&list, id(2)));
        let fam = family(&list);
        assert_eq!(family_of(e2.as_bytes()), Some(fam.as_slice()));
        assert_eq!(family_of(fam.as_slice()), None, "the family prefix is not an element");
        assert_eq!(family_of(b"user"), None);
        // A user key stays; an element key moves to its family's start, or past its end
        // when the family starts the range.
        assert_eq!(split_point_outside(&Key::from("m"), &Key::from("a")), Key::from("m"));
        assert_eq!(split_point_outside(&e2, &Key::from("a")), Key(fam.clone()));
        let end = split_point_outside(&e2, &e1);
        assert!(end > e2 && end > element_key(&list, PushId { ms: u64::MAX, client: u64::MAX, n: u64::MAX }));
        assert!(end < family(&Key::from("m")).into(), "below the next list");
        // Re-stamping lands above the last element, and not before now.
        assert_eq!(restamp(&e2, 0, 7, 3), Some(PushId { ms: 3, client: 7, n: 3 }));
        assert_eq!(restamp(&e2, 50, 7, 3), Some(PushId { ms: 50, client: 7, n: 3 }));
        assert_eq!(restamp(&Key::from("x"), 50, 7, 3), None);
    }
}
