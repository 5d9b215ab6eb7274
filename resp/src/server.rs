//! The RESP listener and the connection loop.
//!
//! A connection reads what has arrived, parses up to `RESP_PIPELINE_ROUND_COMMANDS_MAX`
//! commands (a round), serves them in order and writes all their replies at once. In a round,
//! a run of plain `GET`s is served as `get_many` calls (each range's keys in one request, the
//! ranges at once), and a run of plain `SET`s and `INCR`s on distinct keys of one range is sent at once
//! (the range applies them in the order sent, and commits them in one log append); anything
//! else runs one command at a time, so a connection's commands take effect in the order sent.
//! A framing error is answered and closes the connection; a client that does not take its
//! replies within `RESP_WRITE_STALL_MS` is closed.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ampstore_common::limits::{
    GET_MANY_KEYS_MAX, RESP_COMMAND_BYTES_MAX, RESP_CONNECTIONS_MAX, RESP_PIPELINE_ROUND_COMMANDS_MAX,
    RESP_ROUND_REPLY_BYTES_MAX, RESP_WRITE_STALL_MS,
};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::exec::{Outcome, execute};
use crate::reply::Reply;
use crate::request;
use crate::session::{Access, Session};
use crate::shared::Shared;
use crate::strings;

/// Buffers above this after a round are given back (one large pipeline does not keep its
/// memory for the connection's life).
const BUFFER_BYTES_KEPT: usize = 64 * 1024;

/// How long a connection closed for a framing error keeps reading (and dropping) input.
const LINGER: Duration = Duration::from_secs(2);

/// Accepts connections until the task is dropped.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a RESP connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            if shared.connected.fetch_add(1, Ordering::Relaxed) >= RESP_CONNECTIONS_MAX {
                let mut stream = stream;
                let _ = stream.write_all(b"-ERR max number of clients reached\r\n").await;
            } else {
                connection(&shared, stream, peer.to_string()).await;
            }
            shared.connected.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

async fn connection(shared: &Shared, stream: TcpStream, peer: String) {
    let _ = stream.set_nodelay(true);
    let id = shared.next_client_id.fetch_add(1, Ordering::Relaxed);
    let mut session = Session::new(id, peer, !shared.needs_auth());
    let (mut rd, mut wr) = stream.into_split();
    let mut input = BytesMut::with_capacity(16 * 1024);
    let mut out = BytesMut::with_capacity(16 * 1024);
    let stall = Duration::from_millis(RESP_WRITE_STALL_MS);
    let mut round: VecDeque<Vec<Bytes>> = VecDeque::new();
    let mut broken = None;
    loop {
        while broken.is_none() && round.len() < RESP_PIPELINE_ROUND_COMMANDS_MAX {
            match request::parse(&mut input) {
                Ok(Some(cmd)) => round.push_back(cmd),
                Ok(None) => break,
                Err(e) => {
                    broken = Some(e);
                    break;
                }
            }
        }
        if round.is_empty() && broken.is_none() {
            if input.capacity() > BUFFER_BYTES_KEPT && input.is_empty() {
                input = BytesMut::with_capacity(16 * 1024);
            }
            match rd.read_buf(&mut input).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
        let close = serve_round(shared, &mut session, &mut round, &mut out).await;
        let broken_now = round.is_empty() && broken.is_some();
        if broken_now && let Some(e) = &broken {
            Reply::err(format!("ERR {e}")).encode(session.proto, &mut out);
        }
        if !out.is_empty() {
            match tokio::time::timeout(stall, wr.write_all(&out)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return,
                Err(_) => {
                    tracing::info!(client = session.id, "closing a RESP connection that stopped reading its replies");
                    return;
                }
            }
            out.clear();
            if out.capacity() > BUFFER_BYTES_KEPT {
                out = BytesMut::with_capacity(16 * 1024);
            }
        }
        if close || broken_now {
            let _ = wr.shutdown().await;
            if broken_now {
                linger(&mut rd).await;
            }
            return;
        }
    }
}

/// After a framing error was answered and the write side closed: reads and drops what the
/// client is still sending (the rest of an oversized value) for a moment, so that its send
/// completes and it reads the error instead of failing on a reset connection.
async fn linger(rd: &mut tokio::net::tcp::OwnedReadHalf) {
    let mut sink = vec![0u8; 64 * 1024];
    let mut dropped = 0usize;
    let until = tokio::time::Instant::now() + LINGER;
    while dropped < RESP_COMMAND_BYTES_MAX {
        match tokio::time::timeout_at(until, rd.read(&mut sink)).await {
            Ok(Ok(n)) if n > 0 => dropped += n,
            _ => return,
        }
    }
}

/// A plain `GET key` that may join a run.
fn plain_get(session: &Session, cmd: &[Bytes]) -> bool {
    cmd.len() == 2 && session.multi.is_none() && session.access != Access::None && cmd[0].eq_ignore_ascii_case(b"GET")
}

/// A single-key write without options that may join a run: `SET key value`, `INCR key`,
/// `DECR key`, `INCRBY key n`, `DECRBY key n`.
fn plain_write(session: &Session, cmd: &[Bytes]) -> bool {
    if session.multi.is_some() || session.access == Access::None {
        return false;
    }
    let name = &cmd[0];
    match cmd.len() {
        2 => name.eq_ignore_ascii_case(b"INCR") || name.eq_ignore_ascii_case(b"DECR"),
        3 => {
            name.eq_ignore_ascii_case(b"SET")
                || name.eq_ignore_ascii_case(b"INCRBY")
                || name.eq_ignore_ascii_case(b"DECRBY")
        }
        _ => false,
    }
}

/// Takes the next command off `round` if `pred` holds for it.
fn next_if(round: &mut VecDeque<Vec<Bytes>>, pred: impl Fn(&[Bytes]) -> bool) -> Option<Vec<Bytes>> {
    if round.front().is_some_and(|c| pred(c)) { round.pop_front() } else { None }
}

/// Serves `round`'s commands in order, appending their replies to `out`, until it is empty
/// or `out` holds `RESP_ROUND_REPLY_BYTES_MAX` (the rest waits for the write). Returns
/// whether the connection closes after it (`QUIT`).
async fn serve_round(
    shared: &Shared,
    session: &mut Session,
    round: &mut VecDeque<Vec<Bytes>>,
    out: &mut BytesMut,
) -> bool {
    while out.len() < RESP_ROUND_REPLY_BYTES_MAX
        && let Some(cmd) = round.pop_front()
    {
        let next_is =
            |round: &VecDeque<Vec<Bytes>>, pred: &dyn Fn(&[Bytes]) -> bool| round.front().is_some_and(|c| pred(c));
        if plain_get(session, &cmd) && next_is(round, &|c| plain_get(session, c)) {
            let mut keys = vec![strings::key(&cmd[1])];
            // Bounded so that one run's replies stay near RESP_ROUND_REPLY_BYTES_MAX.
            while keys.len() < GET_MANY_KEYS_MAX
                && let Some(next) = next_if(round, |c| plain_get(session, c))
            {
                keys.push(strings::key(&next[1]));
            }
            shared.commands_total.fetch_add(keys.len() as u64, Ordering::Relaxed);
            for reply in strings::get_run(shared, keys).await {
                reply.encode(session.proto, out);
            }
            continue;
        }
        if plain_write(session, &cmd) && next_is(round, &|c| plain_write(session, c)) {
            let mut run = vec![cmd];
            while run.len() < GET_MANY_KEYS_MAX
                && let Some(next) = next_if(round, |c| plain_write(session, c))
            {
                run.push(next);
            }
            shared.commands_total.fetch_add(run.len() as u64, Ordering::Relaxed);
            for reply in write_run(shared, run).await {
                reply.encode(session.proto, out);
            }
            continue;
        }
        match execute(shared, session, cmd).await {
            Outcome::Reply(r) => r.encode(session.proto, out),
            Outcome::Close(r) => {
                r.encode(session.proto, out);
                return true;
            }
        }
    }
    false
}

/// A run of plain single-key writes: sent together when their keys are distinct and the
/// route cache puts them in one range (the range applies them in the order they were sent,
/// and commits them in one log append); otherwise one after the other.
async fn write_run(shared: &Shared, run: Vec<Vec<Bytes>>) -> Vec<Reply> {
    let mut together = {
        let mut seen = std::collections::HashSet::with_capacity(run.len());
        run.iter().all(|c| seen.insert(&c[1][..]))
    };
    if together {
        // From the route cache only: a key not cached sends the run one at a time.
        let first = shared.client.cached_range_id(&strings::key(&run[0][1]));
        together = first.is_some() && run.iter().all(|c| shared.client.cached_range_id(&strings::key(&c[1])) == first);
    }
    let write = |cmd: Vec<Bytes>| async move {
        let name = crate::args::word(&cmd[0]);
        if name == "SET" { strings::set(shared, &cmd).await } else { strings::incr(shared, &name, &cmd).await }
    };
    if together {
        // Polled in order (each sends before the next is polled); only woken ones are polled
        // again.
        run.into_iter().map(write).collect::<futures_util::stream::FuturesOrdered<_>>().collect::<Vec<_>>().await
    } else {
        let mut out = Vec::with_capacity(run.len());
        for cmd in run {
            out.push(write(cmd).await);
        }
        out
    }
}
