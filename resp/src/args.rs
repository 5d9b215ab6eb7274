//! Reading command arguments the way Redis does.

use ampstore_common::Key;
use bytes::Bytes;

use crate::errors::{NOT_FLOAT, NOT_INTEGER};
use crate::reply::Reply;

/// A signed 64-bit integer argument (`ERR value is not an integer or out of range`).
pub fn int(arg: &[u8]) -> Result<i64, Reply> {
    std::str::from_utf8(arg).ok().and_then(|s| s.parse::<i64>().ok()).ok_or_else(|| Reply::err(NOT_INTEGER))
}

/// A float argument (`ERR value is not a valid float`); `inf` is refused like NaN where the
/// caller needs a finite one.
pub fn float(arg: &[u8]) -> Result<f64, Reply> {
    let s = std::str::from_utf8(arg).map_err(|_| Reply::err(NOT_FLOAT))?;
    if s.is_empty() || s.trim() != s {
        return Err(Reply::err(NOT_FLOAT));
    }
    match s.to_ascii_lowercase().as_str() {
        "inf" | "+inf" | "infinity" | "+infinity" => return Ok(f64::INFINITY),
        "-inf" | "-infinity" => return Ok(f64::NEG_INFINITY),
        _ => {}
    }
    match s.parse::<f64>() {
        Ok(f) if !f.is_nan() => Ok(f),
        _ => Err(Reply::err(NOT_FLOAT)),
    }
}

/// The argument as an upper-case word (command names, options).
pub fn word(arg: &[u8]) -> String {
    String::from_utf8_lossy(arg).to_ascii_uppercase()
}

pub fn text(arg: &Bytes) -> String {
    String::from_utf8_lossy(arg).into_owned()
}

/// A key argument.
pub fn key(arg: &Bytes) -> Key {
    Key::from(&arg[..])
}

/// Redis's `GETRANGE` / `LRANGE` indexing of `len` items: negative counts from the end, both
/// ends clamped, inclusive; an empty range when nothing is in it.
pub fn substring_range(len: usize, start: i64, end: i64) -> std::ops::Range<usize> {
    let n = len as i64;
    if n == 0 || (start < 0 && end < 0 && start > end) {
        return 0..0;
    }
    let fix = |i: i64| if i < 0 { (n + i).max(0) } else { i };
    let (start, end) = (fix(start), fix(end).min(n - 1));
    if start > end || start >= n {
        return 0..0;
    }
    start as usize..end as usize + 1
}

/// Milliseconds since the Unix epoch by this node's clock.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_and_floats_parse_like_redis() {
        assert_eq!(int(b"-12").unwrap(), -12);
        assert!(int(b"1.5").is_err());
        assert!(int(b" 1").is_err());
        assert!(int(b"99999999999999999999").is_err());
        assert_eq!(float(b"1.5").unwrap(), 1.5);
        assert_eq!(float(b"5.0e3").unwrap(), 5000.0);
        assert!(float(b"abc").is_err());
        assert!(float(b"nan").is_err());
    }
}
