//! Replies and their encoding in RESP2 or RESP3 (what the connection's `HELLO` chose).

use bytes::{BufMut, BytesMut};

/// One reply. `Map` is an array of pairs in RESP2 and a map in RESP3; `Nil` is a null bulk
/// string (`$-1`) in RESP2, `NilArray` a null array (`*-1`, what `EXEC` answers when a watched
/// key changed); both are `_` in RESP3.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    Simple(&'static str),
    Error(String),
    Int(i64),
    Bulk(Vec<u8>),
    Nil,
    NilArray,
    Array(Vec<Reply>),
    Map(Vec<(Reply, Reply)>),
}

pub const OK: Reply = Reply::Simple("OK");

impl Reply {
    pub fn bulk(bytes: impl Into<Vec<u8>>) -> Reply {
        Reply::Bulk(bytes.into())
    }

    pub fn text(s: &str) -> Reply {
        Reply::Bulk(s.as_bytes().to_vec())
    }

    /// An error reply: `text` starts with its code (`ERR`, `WRONGTYPE`, `NOAUTH`, ...).
    pub fn err(text: impl Into<String>) -> Reply {
        Reply::Error(text.into())
    }

    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }

    /// Appends the reply to `out` in protocol version `proto` (2 or 3).
    pub fn encode(&self, proto: u8, out: &mut BytesMut) {
        match self {
            Reply::Simple(s) => line(out, b'+', s.as_bytes()),
            Reply::Error(s) => line(out, b'-', clean(s).as_bytes()),
            Reply::Int(n) => line(out, b':', itoa(*n).as_bytes()),
            Reply::Bulk(b) => {
                line(out, b'$', itoa(b.len() as i64).as_bytes());
                out.put_slice(b);
                out.put_slice(b"\r\n");
            }
            Reply::Nil if proto >= 3 => out.put_slice(b"_\r\n"),
            Reply::Nil => out.put_slice(b"$-1\r\n"),
            Reply::NilArray if proto >= 3 => out.put_slice(b"_\r\n"),
            Reply::NilArray => out.put_slice(b"*-1\r\n"),
            Reply::Array(items) => {
                line(out, b'*', itoa(items.len() as i64).as_bytes());
                for item in items {
                    item.encode(proto, out);
                }
            }
            Reply::Map(pairs) => {
                if proto >= 3 {
                    line(out, b'%', itoa(pairs.len() as i64).as_bytes());
                } else {
                    line(out, b'*', itoa(2 * pairs.len() as i64).as_bytes());
                }
                for (k, v) in pairs {
                    k.encode(proto, out);
                    v.encode(proto, out);
                }
            }
        }
    }
}

fn line(out: &mut BytesMut, marker: u8, body: &[u8]) {
    out.reserve(body.len() + 3);
    out.put_u8(marker);
    out.put_slice(body);
    out.put_slice(b"\r\n");
}

fn itoa(n: i64) -> String {
    n.to_string()
}

/// A simple string or error may not hold CR or LF (they end the line): replaced by spaces.
fn clean(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains(['\r', '\n']) { s.replace(['\r', '\n'], " ").into() } else { s.into() }
}

/// A double the way Redis prints one (`INCRBYFLOAT`): the shortest decimal that reads back
/// the same, no exponent, no trailing `.0`; `inf` / `-inf` for infinities.
pub fn format_double(d: f64) -> String {
    if d.is_infinite() {
        return if d > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if d.is_nan() {
        return "nan".into();
    }
    if d == d.trunc() && d.abs() < 1e17 {
        return format!("{}", d as i64);
    }
    format!("{d}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(r: &Reply, proto: u8) -> String {
        let mut out = BytesMut::new();
        r.encode(proto, &mut out);
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn replies_encode_in_both_protocols() {
        assert_eq!(enc(&OK, 2), "+OK\r\n");
        assert_eq!(enc(&Reply::Nil, 2), "$-1\r\n");
        assert_eq!(enc(&Reply::Nil, 3), "_\r\n");
        assert_eq!(enc(&Reply::NilArray, 2), "*-1\r\n");
        assert_eq!(enc(&Reply::Int(-3), 2), ":-3\r\n");
        assert_eq!(enc(&Reply::bulk("a\r\nb"), 2), "$4\r\na\r\nb\r\n");
        let map = Reply::Map(vec![(Reply::text("k"), Reply::Int(1))]);
        assert_eq!(enc(&map, 2), "*2\r\n$1\r\nk\r\n:1\r\n");
        assert_eq!(enc(&map, 3), "%1\r\n$1\r\nk\r\n:1\r\n");
        assert_eq!(enc(&Reply::err("ERR a\r\nb"), 2), "-ERR a  b\r\n");
    }

    #[test]
    fn doubles_print_like_redis() {
        assert_eq!(format_double(10.5), "10.5");
        assert_eq!(format_double(5.0e3), "5000");
        assert_eq!(format_double(-0.1), "-0.1");
        assert_eq!(format_double(f64::INFINITY), "inf");
    }
}
