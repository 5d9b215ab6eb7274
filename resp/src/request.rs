//! Parsing RESP requests: a multibulk (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`, what every client
//! library sends) or an inline line (`GET k\r\n`, what telnet sends). Every length is checked
//! against `common::limits` when it arrives, before the bytes it announces are buffered.
//!
//! Hand-written rather than `redis-protocol`: requests are a small subset of RESP (arrays of
//! bulk strings), and the crate neither parses inline commands nor lets a server refuse an
//! oversized bulk string before buffering it.

use ampstore_common::limits::{RESP_ARGS_MAX, RESP_BULK_BYTES_MAX, RESP_COMMAND_BYTES_MAX, RESP_INLINE_BYTES_MAX};
use bytes::{Bytes, BytesMut};

/// Why a request cannot be parsed. The connection answers it as `-ERR Protocol error: ...`
/// and closes, as Redis does: after a framing error the rest of the stream has no meaning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtocolError(pub String);

impl std::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Protocol error: {}", self.0)
    }
}

fn error<T>(what: impl Into<String>) -> Result<T, ProtocolError> {
    Err(ProtocolError(what.into()))
}

/// Takes the first complete command off `buf`: `Ok(None)` while more bytes are needed,
/// `Ok(Some(args))` with the command (never empty), or the protocol error. Empty inline lines
/// are skipped.
pub fn parse(buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    loop {
        let Some(&first) = buf.first() else { return Ok(None) };
        if first == b'*' {
            return parse_multibulk(buf);
        }
        match parse_inline(buf)? {
            Some(args) if args.is_empty() => continue,
            other => return Ok(other),
        }
    }
}

/// The position of the `\r\n` ending the line that starts at `from`, if it has arrived.
/// `limit` bounds how far a line may run before it is an error.
fn line_end(buf: &[u8], from: usize, limit: usize, what: &str) -> Result<Option<usize>, ProtocolError> {
    let window = &buf[from..buf.len().min(from + limit + 2)];
    match window.windows(2).position(|w| w == b"\r\n") {
        Some(i) => Ok(Some(from + i)),
        None if window.len() >= limit + 2 => error(format!("{what} is too long")),
        None => Ok(None),
    }
}

/// A decimal length after a `*` or `$` marker (at most 20 bytes).
fn parse_len(digits: &[u8], what: &str) -> Result<i64, ProtocolError> {
    std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .map_or_else(|| error(format!("invalid {what} length")), Ok)
}

fn parse_multibulk(buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    let Some(end) = line_end(buf, 1, 20, "multibulk length")? else { return Ok(None) };
    let count = parse_len(&buf[1..end], "multibulk")?;
    if count > RESP_ARGS_MAX as i64 {
        return error(format!("{count} arguments is over the limit of {RESP_ARGS_MAX} (RESP_ARGS_MAX)"));
    }
    if count <= 0 {
        // `*0` and `*-1` are empty commands: Redis skips them.
        let _ = buf.split_to(end + 2);
        return parse(buf);
    }
    let count = count as usize;
    // First pass: find where each argument is, without copying, until one is missing.
    let mut spans: Vec<(usize, usize)> = Vec::with_capacity(count);
    let mut at = end + 2;
    for _ in 0..count {
        let Some(&marker) = buf.get(at) else { return Ok(None) };
        if marker != b'$' {
            return error(format!("expected '$', got '{}'", char::from(marker).escape_default()));
        }
        let Some(end) = line_end(buf, at + 1, 20, "bulk length")? else { return Ok(None) };
        let len = parse_len(&buf[at + 1..end], "bulk")?;
        if len < 0 {
            return error("invalid bulk length");
        }
        let len = len as usize;
        if len > RESP_BULK_BYTES_MAX {
            return error(format!(
                "a bulk string of {len} bytes is over the limit of {RESP_BULK_BYTES_MAX} (RESP_BULK_BYTES_MAX)"
            ));
        }
        let data = end + 2;
        if data + len > RESP_COMMAND_BYTES_MAX {
            return error(format!(
                "a command is over the limit of {RESP_COMMAND_BYTES_MAX} bytes (RESP_COMMAND_BYTES_MAX)"
            ));
        }
        if buf.len() < data + len + 2 {
            // Room for the rest, so the socket reads fill it without reallocating each time.
            buf.reserve(data + len + 2 - buf.len());
            return Ok(None);
        }
        if &buf[data + len..data + len + 2] != b"\r\n" {
            return error("a bulk string does not end with CRLF");
        }
        spans.push((data, len));
        at = data + len + 2;
    }
    let whole = buf.split_to(at).freeze();
    Ok(Some(spans.into_iter().map(|(from, len)| whole.slice(from..from + len)).collect()))
}

fn parse_inline(buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    // Inline lines may end with a bare `\n` too (Redis accepts both).
    let window = &buf[..buf.len().min(RESP_INLINE_BYTES_MAX + 1)];
    let Some(nl) = window.iter().position(|&b| b == b'\n') else {
        if window.len() > RESP_INLINE_BYTES_MAX {
            return error(format!("an inline command is over the limit of {RESP_INLINE_BYTES_MAX} bytes"));
        }
        return Ok(None);
    };
    let line = buf.split_to(nl + 1).freeze();
    let text = line.slice(..line.len() - 1);
    let text = if text.ends_with(b"\r") { text.slice(..text.len() - 1) } else { text };
    let args = split_inline(&text)?;
    if args.len() > RESP_ARGS_MAX {
        return error(format!("{} arguments is over the limit of {RESP_ARGS_MAX}", args.len()));
    }
    Ok(Some(args))
}

/// Splits an inline line into arguments: whitespace separates them, and `"..."` (with `\"`,
/// `\\`, `\n`, `\r`, `\t`, `\xHH`) or `'...'` quote one, as in `redis-cli` and Redis's own
/// inline parser.
fn split_inline(line: &[u8]) -> Result<Vec<Bytes>, ProtocolError> {
    let mut args = Vec::new();
    let mut i = 0;
    while i < line.len() {
        while i < line.len() && line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= line.len() {
            break;
        }
        let mut arg = Vec::new();
        match line[i] {
            b'"' => {
                i += 1;
                loop {
                    let Some(&c) = line.get(i) else { return error("unbalanced quotes in request") };
                    i += 1;
                    match c {
                        b'"' => break,
                        b'\\' => {
                            let Some(&e) = line.get(i) else { return error("unbalanced quotes in request") };
                            i += 1;
                            match e {
                                b'n' => arg.push(b'\n'),
                                b'r' => arg.push(b'\r'),
                                b't' => arg.push(b'\t'),
                                b'x' => {
                                    let hex = line.get(i..i + 2).and_then(|h| std::str::from_utf8(h).ok());
                                    match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                                        Some(b) => {
                                            arg.push(b);
                                            i += 2;
                                        }
                                        None => arg.push(b'x'),
                                    }
                                }
                                other => arg.push(other),
                            }
                        }
                        other => arg.push(other),
                    }
                }
            }
            b'\'' => {
                i += 1;
                loop {
                    let Some(&c) = line.get(i) else { return error("unbalanced quotes in request") };
                    i += 1;
                    match c {
                        b'\'' => break,
                        b'\\' if line.get(i) == Some(&b'\'') => {
                            arg.push(b'\'');
                            i += 1;
                        }
                        other => arg.push(other),
                    }
                }
            }
            _ => {
                while i < line.len() && !line[i].is_ascii_whitespace() {
                    arg.push(line[i]);
                    i += 1;
                }
                args.push(Bytes::from(arg));
                continue;
            }
        }
        // A closing quote must be followed by a space or the end (Redis's rule).
        if i < line.len() && !line[i].is_ascii_whitespace() {
            return error("unbalanced quotes in request");
        }
        args.push(Bytes::from(arg));
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(input: &[u8]) -> Result<Vec<Vec<Vec<u8>>>, ProtocolError> {
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(cmd) = parse(&mut buf)? {
            out.push(cmd.iter().map(|b| b.to_vec()).collect());
        }
        Ok(out)
    }

    #[test]
    fn multibulk_and_inline_commands_parse() {
        let got = parse_all(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nPING\r\n\r\nSET a \"b c\\x41\"\n").unwrap();
        assert_eq!(
            got,
            vec![
                vec![b"GET".to_vec(), b"k".to_vec()],
                vec![b"PING".to_vec()],
                vec![b"SET".to_vec(), b"a".to_vec(), b"b cA".to_vec()]
            ]
        );
    }

    #[test]
    fn a_command_split_anywhere_waits_for_the_rest() {
        let whole = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nva\r\nl\r\n";
        for cut in 0..whole.len() {
            let mut buf = BytesMut::from(&whole[..cut]);
            assert_eq!(parse(&mut buf).unwrap(), None, "cut at {cut}");
            buf.extend_from_slice(&whole[cut..]);
            let cmd = parse(&mut buf).unwrap().unwrap();
            assert_eq!(cmd[2].as_ref(), b"va\r\nl");
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn the_argument_count_limit_is_exact() {
        let at_limit = format!("*{RESP_ARGS_MAX}\r\n");
        assert_eq!(parse(&mut BytesMut::from(at_limit.as_bytes())).unwrap(), None);
        let over = format!("*{}\r\n", RESP_ARGS_MAX + 1);
        assert!(parse(&mut BytesMut::from(over.as_bytes())).unwrap_err().0.contains("RESP_ARGS_MAX"));
    }

    #[test]
    fn the_bulk_limit_is_checked_before_the_bytes_arrive() {
        let at_limit = format!("*2\r\n$3\r\nGET\r\n${RESP_BULK_BYTES_MAX}\r\n");
        assert_eq!(parse(&mut BytesMut::from(at_limit.as_bytes())).unwrap(), None);
        let over = format!("*2\r\n$3\r\nGET\r\n${}\r\n", RESP_BULK_BYTES_MAX + 1);
        assert!(parse(&mut BytesMut::from(over.as_bytes())).unwrap_err().0.contains("RESP_BULK_BYTES_MAX"));
    }

    #[test]
    fn the_inline_limit_is_exact() {
        let mut at_limit = vec![b'a'; RESP_INLINE_BYTES_MAX];
        assert_eq!(parse(&mut BytesMut::from(&at_limit[..])).unwrap(), None);
        at_limit.push(b'\n');
        assert_eq!(parse(&mut BytesMut::from(&at_limit[..])).unwrap().unwrap().len(), 1);
        let over = vec![b'a'; RESP_INLINE_BYTES_MAX + 1];
        assert!(parse(&mut BytesMut::from(&over[..])).is_err());
    }

    #[test]
    fn malformed_requests_are_errors_not_panics() {
        for bad in [
            &b"*x\r\n"[..],
            b"*1\r\n+GET\r\n",
            b"*1\r\n$-5\r\n",
            b"*1\r\n$3\r\nGETxx",
            b"*1\r\n$abc\r\n",
            b"\"unterminated\r\n",
            b"*99999999999999999999999\r\n",
        ] {
            assert!(parse_all(bad).is_err(), "{bad:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_parse_or_fail_without_panicking(input in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let _ = parse_all(&input);
        }
    }
}
