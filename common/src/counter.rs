//! Counters (`incr`): a key's value read as a signed 64-bit decimal integer, Redis's way
//! (`string2ll`): an optional `-`, then digits with no leading zero (`0` alone is zero), no
//! `+`, no spaces, no `-0`, within `i64`. An absent key counts as 0. The range owner reads,
//! adds and logs the result in one step (`node::range::core`), so an increment is one log
//! entry and no round trip.

/// The error text for a value that is not such an integer (nothing is changed).
pub const NOT_AN_INTEGER: &str = "value is not an integer or out of range";
/// The error text for a sum outside `i64` (nothing is changed).
pub const OVERFLOW: &str = "increment or decrement would overflow";

/// The value as a counter, if it is one.
pub fn parse(bytes: &[u8]) -> Option<i64> {
    let digits = bytes.strip_prefix(b"-").unwrap_or(bytes);
    let canonical = match digits {
        [] => false,
        [b'0'] => digits.len() == bytes.len(),
        [first, rest @ ..] => (b'1'..=b'9').contains(first) && rest.iter().all(u8::is_ascii_digit),
    };
    if !canonical {
        return None;
    }
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_canonical_decimal_integers_are_counters() {
        for (text, want) in [
            ("0", Some(0)),
            ("7", Some(7)),
            ("-7", Some(-7)),
            ("9223372036854775807", Some(i64::MAX)),
            ("-9223372036854775808", Some(i64::MIN)),
            ("9223372036854775808", None),
            ("-9223372036854775809", None),
            ("", None),
            ("-", None),
            ("-0", None),
            ("007", None),
            ("+7", None),
            (" 7", None),
            ("7 ", None),
            ("7.0", None),
            ("1e3", None),
            ("abc", None),
        ] {
            assert_eq!(parse(text.as_bytes()), want, "{text:?}");
        }
        assert_eq!(parse(&[0xff, b'1']), None);
    }
}
