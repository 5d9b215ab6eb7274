//! A minimal HTTP/1.1 client for the admin ports' JSON endpoints (`GET` only, one request
//! per connection), so the CLI needs no HTTP stack.

use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Connecting, sending and reading the whole answer must fit in this.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Answers longer than this (headers included) are refused.
const RESPONSE_BYTES_MAX: u64 = 16 * 1024 * 1024;

/// `GET http://{addr}{path}`, expecting `200` and a JSON body.
pub async fn get_json(addr: &str, path: &str) -> anyhow::Result<serde_json::Value> {
    let raw = tokio::time::timeout(TIMEOUT, fetch(addr, path))
        .await
        .map_err(|_| anyhow::anyhow!("http://{addr}{path}: no complete answer within {} s", TIMEOUT.as_secs()))?
        .with_context(|| format!("http://{addr}{path}"))?;
    parse_response(&raw).with_context(|| format!("http://{addr}{path}"))
}

async fn fetch(addr: &str, path: &str) -> anyhow::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(addr).await?;
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    (&mut stream).take(RESPONSE_BYTES_MAX + 1).read_to_end(&mut raw).await?;
    if raw.len() as u64 > RESPONSE_BYTES_MAX {
        anyhow::bail!("answer longer than {} MiB", RESPONSE_BYTES_MAX / (1024 * 1024));
    }
    Ok(raw)
}

/// Splits a complete response (the connection was closed after it) into status, headers
/// and body, and parses the body as JSON.
fn parse_response(raw: &[u8]) -> anyhow::Result<serde_json::Value> {
    if raw.is_empty() {
        anyhow::bail!("the connection closed without an answer (not an admin HTTP port?)");
    }
    if !raw.starts_with(b"HTTP/") {
        anyhow::bail!("not an HTTP answer (not an admin HTTP port?)");
    }
    let head_end =
        find(raw, b"\r\n\r\n").ok_or_else(|| anyhow::anyhow!("truncated HTTP answer (no end of headers)"))?;
    let head = std::str::from_utf8(&raw[..head_end]).context("HTTP headers are not UTF-8")?;
    let rest = &raw[head_end + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let (version, code) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    if !version.starts_with("HTTP/1.") {
        anyhow::bail!("not an HTTP/1 answer: {status_line:?}");
    }
    if code != "200" {
        anyhow::bail!("{status_line}");
    }
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.split(',').any(|v| v.trim().eq_ignore_ascii_case("chunked"));
        } else if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse::<usize>().with_context(|| format!("bad Content-Length {value:?}"))?);
        }
    }
    let body = if chunked {
        decode_chunked(rest)?
    } else if let Some(n) = length {
        rest.get(..n).ok_or_else(|| anyhow::anyhow!("truncated body: {} of {n} bytes", rest.len()))?.to_vec()
    } else {
        rest.to_vec()
    };
    serde_json::from_slice(&body).context("the body is not JSON")
}

/// Decodes a `Transfer-Encoding: chunked` body (extensions and trailers are skipped).
fn decode_chunked(mut rest: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = find(rest, b"\r\n").ok_or_else(|| anyhow::anyhow!("truncated chunked body"))?;
        let size_line = std::str::from_utf8(&rest[..line_end]).context("bad chunk size line")?;
        let size_hex = size_line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16).with_context(|| format!("bad chunk size {size_hex:?}"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        let chunk = rest.get(..size).ok_or_else(|| anyhow::anyhow!("truncated chunk ({size} bytes announced)"))?;
        body.extend_from_slice(chunk);
        rest = rest[size..].strip_prefix(b"\r\n").ok_or_else(|| anyhow::anyhow!("chunk not followed by CRLF"))?;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn plain_body_with_content_length() {
        let raw = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 14\r\n\r\n[{\"id\":\"n-1\"}]";
        assert_eq!(parse_response(raw).unwrap(), json!([{"id": "n-1"}]));
    }

    #[test]
    fn content_length_cuts_the_body() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n[]garbage";
        assert_eq!(parse_response(raw).unwrap(), json!([]));
    }

    #[test]
    fn body_to_end_without_length() {
        let raw = b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{\"a\": 1}";
        assert_eq!(parse_response(raw).unwrap(), json!({"a": 1}));
    }

    #[test]
    fn chunked_body_is_decoded() {
        let raw = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
                    5\r\n[{\"id\r\n\
                    a;ext=1\r\n\":\"n-1\"},{\r\n\
                    B\r\n\"id\":\"n-2\"}\r\n\
                    1\r\n]\r\n\
                    0\r\nx-trailer: 1\r\n\r\n";
        assert_eq!(parse_response(raw).unwrap(), json!([{"id": "n-1"}, {"id": "n-2"}]));
    }

    #[test]
    fn truncated_chunk_is_an_error() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n[1,2]";
        let e = parse_response(raw).unwrap_err().to_string();
        assert!(e.contains("truncated chunk"), "{e}");
    }

    #[test]
    fn non_200_names_the_status_line() {
        let raw = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(parse_response(raw).unwrap_err().to_string(), "HTTP/1.1 404 Not Found");
    }

    #[test]
    fn not_json_and_not_http_are_errors() {
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n\r\nhello").is_err());
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
        assert!(parse_response(b"").unwrap_err().to_string().contains("without an answer"));
        assert!(parse_response(b"\x00\x01").unwrap_err().to_string().starts_with("not an HTTP answer"));
    }

    #[tokio::test]
    async fn get_json_over_tcp() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while find(&req, b"\r\n\r\n").is_none() {
                let n = sock.read(&mut buf).await.unwrap();
                req.extend_from_slice(&buf[..n]);
            }
            sock.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\n[]\r\n0\r\n\r\n").await.unwrap();
            String::from_utf8(req).unwrap()
        });
        assert_eq!(get_json(&addr, "/v1/members").await.unwrap(), json!([]));
        let req = server.await.unwrap();
        assert!(req.starts_with("GET /v1/members HTTP/1.1\r\n"), "{req}");
        assert!(req.contains("Connection: close\r\n"), "{req}");
    }

    #[tokio::test]
    async fn refused_connection_names_the_address() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let e = format!("{:#}", get_json(&addr, "/v1/members").await.unwrap_err());
        assert!(e.contains(&format!("http://{addr}/v1/members")), "{e}");
    }
}
