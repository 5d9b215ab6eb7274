//! `SCAN`'s cursor: the next key to look at, written as a decimal integer, because clients
//! parse cursors as integers (redis-py calls `int()` on it). The key's bytes with a 1 byte in
//! front (so leading zero bytes survive) are read as one big-endian number; `0` is the start
//! and the end, as in Redis.

use ampstore_common::limits::KEY_BYTES_MAX;

/// The cursor that resumes a scan at `key`.
pub fn encode(key: &[u8]) -> String {
    let mut number: Vec<u8> = Vec::with_capacity(key.len() + 1);
    number.push(1);
    number.extend_from_slice(key);
    // Repeated division by 10^19 of the base-256 number.
    let mut groups: Vec<u64> = Vec::new();
    while !(number.is_empty()) {
        let mut rem: u128 = 0;
        let mut quotient = Vec::with_capacity(number.len());
        for &byte in &number {
            let cur = (rem << 8) | u128::from(byte);
            let q = cur / 10_000_000_000_000_000_000u128;
            rem = cur % 10_000_000_000_000_000_000u128;
            if !(quotient.is_empty() && q == 0) {
                quotient.push(q as u8);
            }
        }
        groups.push(rem as u64);
        number = quotient;
    }
    let mut out = String::new();
    for (i, g) in groups.iter().rev().enumerate() {
        if i == 0 {
            out.push_str(&g.to_string());
        } else {
            out.push_str(&format!("{g:019}"));
        }
    }
    out
}

/// The key a cursor resumes at: `Ok(None)` for `0` (the start), an error for anything that is
/// not a cursor this server gave.
pub fn decode(cursor: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let invalid = || "ERR invalid cursor".to_string();
    if cursor == b"0" {
        return Ok(None);
    }
    // A key of KEY_BYTES_MAX bytes needs about 2.41 digits per byte.
    if cursor.is_empty() || cursor.len() > (KEY_BYTES_MAX + 1) * 241 / 100 + 2 || !cursor.iter().all(u8::is_ascii_digit)
    {
        return Err(invalid());
    }
    // Multiply-and-add in base 256, little-endian limbs.
    let mut limbs: Vec<u8> = Vec::new();
    for &d in cursor {
        let mut carry = u32::from(d - b'0');
        for limb in limbs.iter_mut() {
            let v = u32::from(*limb) * 10 + carry;
            *limb = v as u8;
            carry = v >> 8;
        }
        while carry > 0 {
            limbs.push(carry as u8);
            carry >>= 8;
        }
    }
    limbs.reverse();
    match limbs.split_first() {
        Some((1, key)) if key.len() <= KEY_BYTES_MAX => Ok(Some(key.to_vec())),
        _ => Err(invalid()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_any_key() {
        for key in [&b""[..], b"a", b"\0\0x", b"user:42", &[0xfe; 1024]] {
            let c = encode(key);
            assert!(c.bytes().all(|b| b.is_ascii_digit()), "{c}");
            assert_eq!(decode(c.as_bytes()).unwrap().as_deref(), Some(key));
        }
        assert_eq!(encode(b""), "1");
        assert_eq!(encode(b"a"), (256 + 97).to_string());
    }

    #[test]
    fn foreign_cursors_are_refused() {
        assert_eq!(decode(b"0").unwrap(), None);
        for bad in [&b"abc"[..], b"", b"2", b"-5", &[b'9'; 3000]] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn every_key_round_trips(key in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            proptest::prop_assert_eq!(decode(encode(&key).as_bytes()).unwrap(), Some(key));
        }
    }
}
