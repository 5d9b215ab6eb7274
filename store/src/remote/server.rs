//! The store process's side: answers [`StoreRequest`]s from the one [`Backend`] it opened.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::{
    QueryItem, STORE_PROTOCOL_VERSION, STORE_PROTOCOL_VERSION_MIN, StoreHello, StoreReply, StoreRequest, StoreResponse,
    hot,
};
use crate::{Backend, StoreError};
use ampstore_common::frame::{decode_body, read_frame, write_frame};
use ampstore_common::limits::{
    FRAME_BYTES_MAX, META_QUERY_ITEMS_MAX, STORE_CONN_BUFFER_BYTES_KEPT, STORE_QUERY_REPLY_BYTES_MAX,
};

/// A connection must say hello within this long.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts connections until `shutdown` turns true. `admin_token`: the token every hello
/// must carry (none: hellos are not checked, as for the other servers without tokens).
pub async fn serve(
    listener: TcpListener,
    backend: Backend,
    admin_token: Option<String>,
    mut shutdown: watch::Receiver<bool>,
) {
    let token: Arc<Option<String>> = Arc::new(admin_token);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let (backend, token, stop) = (backend.clone(), token.clone(), shutdown.clone());
                    tokio::spawn(async move {
                        if let Err(e) = connection(stream, backend, &token, stop).await {
                            tracing::debug!(%peer, error = %e, "store connection ended");
                        }
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "store accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = shutdown.changed() => {
                if *shutdown.borrow() {
                    return;
                }
            }
        }
    }
}

async fn connection(
    stream: TcpStream,
    backend: Backend,
    token: &Option<String>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), String> {
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let (read, write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut writer = BufWriter::new(write);
    let (mut body, mut scratch) = (Vec::new(), Vec::new());
    let hello: StoreHello = match tokio::time::timeout(HELLO_TIMEOUT, read_frame(&mut reader, &mut body)).await {
        Err(_) => return Err("no hello in time".into()),
        Ok(Ok(true)) => decode_body(&body).map_err(|e| e.to_string())?,
        Ok(Ok(false)) => return Ok(()),
        Ok(Err(e)) => return Err(e.to_string()),
    };
    let verdict: StoreResponse = if !(STORE_PROTOCOL_VERSION_MIN..=STORE_PROTOCOL_VERSION).contains(&hello.version) {
        Err(StoreError::Invalid(format!(
            "store protocol version {} is not one this store serves ({STORE_PROTOCOL_VERSION_MIN} to {STORE_PROTOCOL_VERSION})",
            hello.version
        )))
    } else if let Some(expected) = token.as_deref()
        && !hello
            .auth_token
            .as_deref()
            .is_some_and(|g| ampstore_common::auth::same_secret(expected.as_bytes(), g.as_bytes()))
    {
        Err(StoreError::Invalid("unauthorized: the store needs the cluster's admin token".into()))
    } else {
        Ok(StoreReply::Welcome)
    };
    let welcome = verdict.is_ok();
    write_frame(&mut writer, &verdict, &mut scratch).await.map_err(|e| e.to_string())?;
    writer.flush().await.map_err(|e| e.to_string())?;
    if !welcome {
        return Err("hello refused".into());
    }
    loop {
        // A stopping store finishes the request in hand, then closes between requests.
        let read = tokio::select! {
            read = read_frame(&mut reader, &mut body) => read,
            _ = stop.wait_for(|stopped| *stopped) => return Ok(()),
        };
        match read {
            Ok(true) => {}
            Ok(false) => return Ok(()),
            Err(e) => return Err(e.to_string()),
        }
        let answer = if hot::is_append_each(&body) {
            // The frame's buffer becomes the payloads' (no copy), and comes back for the
            // next frame when the writer has let go of them.
            let frozen = Bytes::from(std::mem::take(&mut body));
            let answer = match hot::read_append_each(&frozen) {
                Some(slots) => handle(&backend, StoreRequest::AppendEach { slots }).await,
                None => decode_and_handle(&backend, &frozen).await,
            };
            if let Ok(buf) = frozen.try_into_mut() {
                body = Vec::from(buf);
            }
            answer
        } else {
            decode_and_handle(&backend, &body).await
        };
        scratch.clear();
        hot::encode_answer(&answer, &mut scratch).map_err(|e| e.to_string())?;
        writer.write_all(&scratch).await.map_err(|e| e.to_string())?;
        writer.flush().await.map_err(|e| e.to_string())?;
        // An idle connection keeps no large buffer (a log read answers up to 8 MiB).
        for buf in [&mut body, &mut scratch] {
            if buf.capacity() > STORE_CONN_BUFFER_BYTES_KEPT {
                *buf = Vec::new();
            }
        }
    }
}

async fn decode_and_handle(b: &Backend, body: &[u8]) -> StoreResponse {
    match decode_body::<StoreRequest>(body) {
        Ok(request) => handle(b, request).await,
        Err(e) => Err(StoreError::Invalid(format!("malformed store request: {e}"))),
    }
}

async fn handle(b: &Backend, request: StoreRequest) -> StoreResponse {
    Ok(match request {
        StoreRequest::Append { slot } => {
            b.log.append(slot.range, slot.seq, &slot.entry).await?;
            StoreReply::Done
        }
        StoreRequest::AppendAtomic { slots } => {
            b.log.append_atomic(&slots).await?;
            StoreReply::Done
        }
        StoreRequest::AppendEach { slots } => StoreReply::EachAppended(b.log.append_each(slots).await?),
        StoreRequest::Head { range } => StoreReply::Head(b.log.head(range).await?),
        StoreRequest::Read { range, from, limit } => {
            let limit = usize::try_from(limit).unwrap_or(usize::MAX);
            StoreReply::Entries(b.log.read(range, from, limit).await?)
        }
        StoreRequest::Truncate { range, upto } => {
            b.log.truncate(range, upto).await?;
            StoreReply::Done
        }
        StoreRequest::MetaGet { pk, sk } => StoreReply::Item(b.meta.get(&pk, &sk).await?),
        StoreRequest::MetaPut { pk, sk, value, expect } => {
            StoreReply::Version(b.meta.put(&pk, &sk, &value, expect).await?)
        }
        StoreRequest::MetaDelete { pk, sk, expect } => {
            b.meta.delete(&pk, &sk, expect).await?;
            StoreReply::Done
        }
        StoreRequest::MetaTransact { ops } => {
            b.meta.transact(&ops).await?;
            StoreReply::Done
        }
        StoreRequest::MetaQuery { pk, from, limit } => {
            let limit = usize::try_from(limit).unwrap_or(usize::MAX).clamp(1, META_QUERY_ITEMS_MAX);
            let found = b.meta.query(&pk, &from, limit).await?;
            // Meta values may be large; the answer must fit one frame. Stop early and say so.
            let mut items = Vec::with_capacity(found.len());
            let mut bytes = 0usize;
            let mut more = false;
            for (sk, item) in found {
                let size = sk.len() + item.value.len() + 32;
                if !items.is_empty() && bytes + size > STORE_QUERY_REPLY_BYTES_MAX {
                    more = true;
                    break;
                }
                bytes += size;
                items.push(QueryItem { sk, item });
            }
            const { assert!(STORE_QUERY_REPLY_BYTES_MAX < FRAME_BYTES_MAX) };
            StoreReply::Items { items, more }
        }
    })
}
