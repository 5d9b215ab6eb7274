//! `GET` of the admin ports' JSON endpoints, over hyper's HTTP/1 client connection (a kept
//! HTTP stack, already in the build through the admin servers and the AWS SDK).

use std::time::Duration;

use anyhow::Context;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Connecting, sending and reading the whole answer must fit in this.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Answers longer than this (the body) are refused.
const RESPONSE_BYTES_MAX: usize = 16 * 1024 * 1024;

/// `GET http://{addr}{path}`, expecting `200` and a JSON body.
pub async fn get_json(addr: &str, path: &str) -> anyhow::Result<serde_json::Value> {
    let body = tokio::time::timeout(TIMEOUT, fetch(addr, path))
        .await
        .map_err(|_| anyhow::anyhow!("http://{addr}{path}: no complete answer within {} s", TIMEOUT.as_secs()))?
        .with_context(|| format!("http://{addr}{path}"))?;
    serde_json::from_slice(&body).with_context(|| format!("http://{addr}{path}: the body is not JSON"))
}

async fn fetch(addr: &str, path: &str) -> anyhow::Result<Bytes> {
    let stream = TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("not an HTTP server (not an admin HTTP port?)")?;
    // The connection task ends with the request (the server closes after answering).
    let driver = tokio::spawn(conn);
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, addr)
        .header(hyper::header::ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())
        .context("bad request path")?;
    let response = sender.send_request(request).await.context("no HTTP answer (not an admin HTTP port?)")?;
    let status = response.status();
    if status != hyper::StatusCode::OK {
        driver.abort();
        anyhow::bail!("HTTP {status}");
    }
    let body = Limited::new(response.into_body(), RESPONSE_BYTES_MAX)
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("reading the answer: {e} (at most {} MiB)", RESPONSE_BYTES_MAX / (1024 * 1024)))?
        .to_bytes();
    driver.abort();
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Serves one connection with `answer` after reading the request head; returns the request.
    async fn serve_once(answer: &'static [u8]) -> (String, tokio::task::JoinHandle<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = sock.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                req.extend_from_slice(&buf[..n]);
            }
            sock.write_all(answer).await.unwrap();
            sock.shutdown().await.unwrap();
            String::from_utf8(req).unwrap()
        });
        (addr, server)
    }

    #[tokio::test]
    async fn a_chunked_json_answer_is_read() {
        let (addr, server) = serve_once(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\n[{\"id\r\n9\r\n\":\"n-1\"}]\r\n0\r\n\r\n",
        )
        .await;
        assert_eq!(get_json(&addr, "/v1/members").await.unwrap(), json!([{"id": "n-1"}]));
        let req = server.await.unwrap();
        assert!(req.starts_with("GET /v1/members HTTP/1.1\r\n"), "{req}");
        assert!(req.to_ascii_lowercase().contains("host: 127.0.0.1:"), "{req}");
    }

    #[tokio::test]
    async fn content_length_cuts_the_body() {
        let (addr, _server) = serve_once(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n[]garbage").await;
        assert_eq!(get_json(&addr, "/x").await.unwrap(), json!([]));
    }

    #[tokio::test]
    async fn non_200_names_the_status() {
        let (addr, _server) = serve_once(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n").await;
        let e = format!("{:#}", get_json(&addr, "/x").await.unwrap_err());
        assert!(e.contains("404"), "{e}");
    }

    #[tokio::test]
    async fn not_json_and_not_http_are_errors() {
        let (addr, _server) = serve_once(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello").await;
        let e = format!("{:#}", get_json(&addr, "/x").await.unwrap_err());
        assert!(e.contains("not JSON"), "{e}");
        let (addr, _server) = serve_once(b"SSH-2.0-OpenSSH\r\n\r\n").await;
        assert!(get_json(&addr, "/x").await.is_err());
        let (addr, _server) = serve_once(b"").await;
        let e = format!("{:#}", get_json(&addr, "/x").await.unwrap_err());
        assert!(e.contains("not an admin HTTP port"), "{e}");
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
