//! `MULTI` / `EXEC` / `DISCARD` / `WATCH` / `UNWATCH`: the queued commands run as one
//! Ampstore transaction, across ranges, with a version check for every watched key (`EXEC`
//! answers a null array when one changed since `WATCH`).
//!
//! Commands inside see the writes queued before them, as in Redis: the transaction's reads
//! return values as of the moment it took effect, and a key written earlier in the queue is
//! answered from that write instead. `INCR` and its relatives read the key before the commit
//! and require that version, so they are atomic too (a key another client changes in between
//! makes the whole `EXEC` run again, up to `RESP_CAS_ATTEMPTS_MAX` times).

use std::collections::HashMap;

use ampstore_client::Txn;
use ampstore_common::Key;
use ampstore_common::error::Error;
use ampstore_common::limits::{RESP_CAS_ATTEMPTS_MAX, RESP_MULTI_COMMANDS_MAX, RESP_WATCHED_KEYS_MAX};
use bytes::Bytes;

use crate::args::{self, word};
use crate::errors::{NOT_INTEGER, SYNTAX, from_error};
use crate::reply::{OK, Reply};
use crate::session::Session;
use crate::shared::Shared;
use crate::strings::{self, Expiry, key};

/// Whether a command can run inside `MULTI` here; the error says why not.
pub fn queueable(name: &str, args: &[Bytes]) -> Result<(), Reply> {
    match name {
        "GET" | "MGET" | "EXISTS" | "DEL" | "UNLINK" | "INCR" | "DECR" | "INCRBY" | "DECRBY" | "PING" | "ECHO"
        | "SETEX" | "PSETEX" => Ok(()),
        "MSET" if args.len() % 2 == 1 => Ok(()),
        "MSET" => Err(crate::errors::arity(name)),
        "SET" => match &args[3..] {
            [] => Ok(()),
            [opt, _] if matches!(word(opt).as_str(), "EX" | "PX") => Ok(()),
            _ => Err(Reply::err(format!(
                "ERR inside MULTI, SET takes only EX or PX (Ampstore runs MULTI as one transaction of reads and \
                 writes; {} needs a read first)",
                args[3..].iter().map(|a| word(a)).collect::<Vec<_>>().join(" ")
            ))),
        },
        other => Err(Reply::err(format!(
            "ERR {other} is not supported inside MULTI: Ampstore runs MULTI as one transaction of GET, MGET, \
             EXISTS, SET, SETEX, PSETEX, MSET, DEL, UNLINK, INCR, DECR, INCRBY, DECRBY"
        ))),
    }
}

pub fn multi(session: &mut Session) -> Reply {
    if session.multi.is_some() {
        return Reply::err("ERR MULTI calls can not be nested");
    }
    session.multi = Some(Vec::new());
    session.multi_failed = false;
    OK
}

/// Queues a command inside `MULTI`: `QUEUED`, or the error that makes `EXEC` abort.
pub fn queue(session: &mut Session, name: &str, args: Vec<Bytes>) -> Reply {
    let Some(queued) = session.multi.as_mut() else { return Reply::err("ERR not in MULTI") };
    if queued.len() >= RESP_MULTI_COMMANDS_MAX {
        session.multi_failed = true;
        return Reply::err(format!(
            "ERR a MULTI holds at most {RESP_MULTI_COMMANDS_MAX} commands (RESP_MULTI_COMMANDS_MAX)"
        ));
    }
    if let Err(r) = queueable(name, &args) {
        session.multi_failed = true;
        return r;
    }
    queued.push(args);
    Reply::Simple("QUEUED")
}

pub fn discard(session: &mut Session) -> Reply {
    if session.multi.take().is_none() {
        return Reply::err("ERR DISCARD without MULTI");
    }
    session.watched.clear();
    session.multi_failed = false;
    OK
}

pub async fn watch(shared: &Shared, session: &mut Session, args: &[Bytes]) -> Reply {
    if session.multi.is_some() {
        return Reply::err("ERR WATCH inside MULTI is not allowed");
    }
    for arg in &args[1..] {
        let k = key(arg);
        if session.watched.iter().any(|(w, _)| *w == k) {
            continue;
        }
        if session.watched.len() >= RESP_WATCHED_KEYS_MAX {
            return Reply::err(format!(
                "ERR a connection watches at most {RESP_WATCHED_KEYS_MAX} keys (RESP_WATCHED_KEYS_MAX)"
            ));
        }
        match shared.client.get(k.clone()).await {
            Ok(v) => session.watched.push((k, v.map(|v| v.version))),
            Err(e) => return from_error(&e),
        }
    }
    OK
}

/// A key's value at one point of the queue: known from a write queued before it, or the
/// transaction's `n`th read.
#[derive(Clone)]
enum Source {
    Known(Option<Vec<u8>>),
    Read(usize),
}

enum Pending {
    Done(Reply),
    Get(Source),
    Mget(Vec<Source>),
    Exists(Vec<Source>),
    Deleted(Vec<Source>),
}

struct Plan {
    txn: Txn,
    reads: usize,
    /// Each written key's value after the commands so far (`None`: deleted), with the
    /// expiry its last write set; the transaction writes only these final states.
    overlay: HashMap<Key, (Option<Vec<u8>>, Expiry)>,
    /// Written keys in the order first written.
    written: Vec<Key>,
    pending: Vec<Pending>,
}

impl Plan {
    fn source(&mut self, k: &Key) -> Source {
        if let Some((v, _)) = self.overlay.get(k) {
            return Source::Known(v.clone());
        }
        self.txn = std::mem::take(&mut self.txn).read(k.clone());
        self.reads += 1;
        Source::Read(self.reads - 1)
    }

    fn write(&mut self, k: Key, value: Option<Vec<u8>>, expiry: Expiry) {
        if !self.overlay.contains_key(&k) {
            self.written.push(k.clone());
        }
        self.overlay.insert(k, (value, expiry));
    }

    /// The transaction with each written key's final state (one write per key).
    fn finish(mut self) -> (Txn, Vec<Pending>) {
        let mut txn = self.txn;
        for k in self.written {
            txn = match self.overlay.remove(&k) {
                Some((Some(v), Expiry::In(ttl))) => txn.put_with_ttl(k, v, ttl),
                Some((Some(v), _)) => txn.put(k, v),
                _ => txn.delete(k),
            };
        }
        (txn, self.pending)
    }
}

/// Builds one attempt's transaction: reads the counters' keys first (and requires them
/// unchanged), then adds each command's reads and writes in order.
async fn plan(
    shared: &Shared,
    queued: &[Vec<Bytes>],
    watched: &[(Key, Option<ampstore_common::Version>)],
) -> Result<Plan, Error> {
    let mut p = Plan { txn: Txn::new(), reads: 0, overlay: HashMap::new(), written: Vec::new(), pending: Vec::new() };
    for (k, v) in watched {
        p.txn = std::mem::take(&mut p.txn).read_as(k.clone(), *v);
    }
    let mut counted: HashMap<Key, Option<Vec<u8>>> = HashMap::new();
    for args in queued {
        let name = word(&args[0]);
        match name.as_str() {
            "GET" => {
                let s = p.source(&key(&args[1]));
                p.pending.push(Pending::Get(s));
            }
            "MGET" | "EXISTS" => {
                let s: Vec<Source> = args[1..].iter().map(|a| p.source(&key(a))).collect();
                p.pending.push(if name == "MGET" { Pending::Mget(s) } else { Pending::Exists(s) });
            }
            "DEL" | "UNLINK" => {
                let mut s = Vec::new();
                for a in &args[1..] {
                    let k = key(a);
                    s.push(p.source(&k));
                    p.write(k, None, Expiry::Unset);
                }
                p.pending.push(Pending::Deleted(s));
            }
            "SET" => {
                let expiry = match &args[3..] {
                    [opt, n] => strings::parse_expiry("set", &word(opt), n),
                    _ => Ok(Expiry::Unset),
                };
                match expiry {
                    Ok(e) => {
                        p.write(key(&args[1]), Some(args[2].to_vec()), e);
                        p.pending.push(Pending::Done(OK));
                    }
                    Err(r) => p.pending.push(Pending::Done(r)),
                }
            }
            "SETEX" | "PSETEX" => {
                let opt = if name == "SETEX" { "EX" } else { "PX" };
                match strings::parse_expiry(&name, opt, &args[2]) {
                    Ok(e) => {
                        p.write(key(&args[1]), Some(args[3].to_vec()), e);
                        p.pending.push(Pending::Done(OK));
                    }
                    Err(r) => p.pending.push(Pending::Done(r)),
                }
            }
            "MSET" => {
                for pair in args[1..].chunks(2) {
                    p.write(key(&pair[0]), Some(pair[1].to_vec()), Expiry::Unset);
                }
                p.pending.push(Pending::Done(OK));
            }
            "INCR" | "DECR" | "INCRBY" | "DECRBY" => {
                let k = key(&args[1]);
                let by = match name.as_str() {
                    "INCR" => Some(1),
                    "DECR" => Some(-1),
                    "INCRBY" => args::int(&args[2]).ok(),
                    _ => args::int(&args[2]).ok().and_then(i64::checked_neg),
                };
                let base = match p.overlay.get(&k) {
                    Some((v, _)) => v.clone(),
                    None => match counted.get(&k) {
                        Some(v) => v.clone(),
                        None => {
                            let v = shared.client.get(k.clone()).await?;
                            // A watched key is checked at its watched version already.
                            if !watched.iter().any(|(w, _)| *w == k) {
                                p.txn = std::mem::take(&mut p.txn).read_as(k.clone(), v.as_ref().map(|v| v.version));
                            }
                            let v = v.map(|v| v.value);
                            counted.insert(k.clone(), v.clone());
                            v
                        }
                    },
                };
                let current = match base {
                    None => Some(0),
                    Some(b) => std::str::from_utf8(&b).ok().and_then(|s| s.parse::<i64>().ok()),
                };
                match (current, by) {
                    (Some(c), Some(by)) => match c.checked_add(by) {
                        Some(n) => {
                            p.write(k, Some(n.to_string().into_bytes()), Expiry::Unset);
                            p.pending.push(Pending::Done(Reply::Int(n)));
                        }
                        None => p.pending.push(Pending::Done(Reply::err("ERR increment or decrement would overflow"))),
                    },
                    _ => p.pending.push(Pending::Done(Reply::err(NOT_INTEGER))),
                }
            }
            "PING" => p.pending.push(Pending::Done(match args.get(1) {
                Some(m) => Reply::bulk(m.to_vec()),
                None => Reply::Simple("PONG"),
            })),
            "ECHO" => p.pending.push(Pending::Done(Reply::bulk(args[1].to_vec()))),
            _ => p.pending.push(Pending::Done(Reply::err(SYNTAX))),
        }
    }
    Ok(p)
}

pub async fn exec(shared: &Shared, session: &mut Session) -> Reply {
    let Some(queued) = session.multi.take() else { return Reply::err("ERR EXEC without MULTI") };
    let watched = std::mem::take(&mut session.watched);
    if std::mem::take(&mut session.multi_failed) {
        return Reply::err("EXECABORT Transaction discarded because of previous errors.");
    }
    for _ in 0..RESP_CAS_ATTEMPTS_MAX {
        let (txn, pending) = match plan(shared, &queued, &watched).await {
            Ok(p) => p.finish(),
            Err(e) => return from_error(&e),
        };
        let values: Vec<Option<Vec<u8>>> = if txn.is_empty() {
            Vec::new()
        } else {
            match shared.client.commit(txn).await {
                Ok(outcome) => outcome.values.into_iter().map(|(_, v)| v.map(|v| v.value)).collect(),
                Err(Error::Conflict { key: Some(k), .. }) if watched.iter().any(|(w, _)| *w == k) => {
                    return Reply::NilArray;
                }
                Err(Error::Conflict { .. }) => continue,
                Err(e) => return from_error(&e),
            }
        };
        let value = |s: &Source| -> Option<Vec<u8>> {
            match s {
                Source::Known(v) => v.clone(),
                Source::Read(i) => values.get(*i).cloned().flatten(),
            }
        };
        let replies = pending
            .into_iter()
            .map(|pending| match pending {
                Pending::Done(r) => r,
                Pending::Get(s) => value(&s).map_or(Reply::Nil, Reply::Bulk),
                Pending::Mget(s) => Reply::Array(s.iter().map(|s| value(s).map_or(Reply::Nil, Reply::Bulk)).collect()),
                Pending::Exists(s) | Pending::Deleted(s) => {
                    Reply::Int(s.iter().filter(|s| value(s).is_some()).count() as i64)
                }
            })
            .collect();
        return Reply::Array(replies);
    }
    Reply::err(format!("ERR the keys changed under {RESP_CAS_ATTEMPTS_MAX} attempts in a row; try again"))
}
