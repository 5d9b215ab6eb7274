//! String and counter commands: `GET`, `SET` and its relatives, `MGET`, `MSET`, `MSETNX`,
//! `APPEND`, `STRLEN`, `GETRANGE`, `SETRANGE`, `INCR` and its relatives.
//!
//! Commands that read a key and then write it (`SET ... NX|XX|GET|KEEPTTL`, `GETSET`,
//! `GETDEL`, `APPEND`, `SETRANGE`, `INCRBYFLOAT`) read it, then commit the write in a
//! transaction that requires the version they read (absent stays absent): if another client
//! wrote the key in between, the command reads again and retries (up to
//! `RESP_CAS_ATTEMPTS_MAX`). So each is atomic, like Redis's.

use std::time::Duration;

use ampstore_client::{Client, Txn};
use ampstore_common::Key;
use ampstore_common::error::Error;
use ampstore_common::limits::{GET_MANY_KEYS_MAX, RESP_CAS_ATTEMPTS_MAX, VALUE_BYTES_MAX};
use ampstore_common::protocol::{KeyTtl, Versioned};
use bytes::Bytes;

use crate::args::{self, now_ms, word};
pub use crate::args::{key, substring_range};
use crate::errors::{self, SYNTAX, WRONGTYPE, from_error};
use crate::lists;
use crate::reply::{OK, Reply};
use crate::shared::Shared;

/// A key as one read saw it: its value and version, and its time left (`None`: none).
pub struct Current {
    pub value: Option<Versioned>,
    pub ttl: Option<Duration>,
}

impl Current {
    pub fn bytes(&self) -> Option<&[u8]> {
        self.value.as_ref().map(|v| v.value.as_slice())
    }
}

pub async fn read_current(client: &Client, key: &Key, with_ttl: bool) -> Result<Current, Error> {
    let value = client.get(key.clone()).await?;
    let ttl = match (&value, with_ttl) {
        (Some(_), true) => match client.ttl(key.clone()).await? {
            KeyTtl::ExpiresInMs(ms) => Some(Duration::from_millis(ms)),
            _ => None,
        },
        _ => None,
    };
    Ok(Current { value, ttl })
}

/// What to write in place of what a read saw.
pub enum NewValue {
    Put(Vec<u8>, Option<Duration>),
    Delete,
}

/// Writes `new` to `key` only if it still holds what `seen` saw: `Ok(false)` when it does
/// not (read again and retry).
pub async fn write_if_unchanged(client: &Client, key: &Key, seen: &Current, new: NewValue) -> Result<bool, Error> {
    let txn = Txn::new().read_as(key.clone(), seen.value.as_ref().map(|v| v.version));
    let txn = match new {
        NewValue::Put(value, Some(ttl)) => txn.put_with_ttl(key.clone(), value, ttl),
        NewValue::Put(value, None) => txn.put(key.clone(), value),
        NewValue::Delete => txn.delete(key.clone()),
    };
    match client.commit(txn).await {
        Ok(_) => Ok(true),
        Err(Error::Conflict { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Runs `step` (read, decide, write if unchanged) until its write lands or it answers
/// without writing; gives up after `RESP_CAS_ATTEMPTS_MAX` conflicts.
macro_rules! retry_cas {
    ($body:block) => {{
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let step: Result<Option<Reply>, Error> = async { $body }.await;
            match step {
                Ok(Some(reply)) => break reply,
                Ok(None) if attempt < RESP_CAS_ATTEMPTS_MAX => continue,
                Ok(None) => {
                    break Reply::err(format!(
                        "ERR the key changed under {RESP_CAS_ATTEMPTS_MAX} attempts in a row; try again"
                    ));
                }
                Err(e) => break from_error(&e),
            }
        }
    }};
}
pub(crate) use retry_cas;

/// When a `SET` / `GETEX` key should expire.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Expiry {
    /// As the command's kind says: `SET` clears it, `GETEX` leaves it.
    Unset,
    In(Duration),
    /// An absolute time already past: the key is deleted.
    Past,
    Keep,
    Persist,
}

/// Reads `EX s`, `PX ms`, `EXAT s`, `PXAT ms` at `args[i]`: the expiry, or the error.
pub fn parse_expiry(cmd: &str, opt: &str, value: &[u8]) -> Result<Expiry, Reply> {
    let n = args::int(value)?;
    let invalid = || errors::invalid_expire(cmd);
    let ms: i64 = match opt {
        "EX" | "EXAT" => n.checked_mul(1000).ok_or_else(invalid)?,
        _ => n,
    };
    if n <= 0 {
        return Err(invalid());
    }
    let relative = match opt {
        "EXAT" | "PXAT" => ms.saturating_sub(now_ms()),
        _ => ms,
    };
    if relative <= 0 {
        return Ok(Expiry::Past);
    }
    Ok(Expiry::In(Duration::from_millis(relative as u64)))
}

pub async fn get(shared: &Shared, args: &[Bytes]) -> Reply {
    let k = key(&args[1]);
    match shared.client.get(k.clone()).await {
        Ok(Some(v)) => Reply::Bulk(v.value),
        Ok(None) => miss(shared, &k).await,
        Err(e) => from_error(&e),
    }
}

/// `GET`'s answer for a key with no string: `WRONGTYPE` when it names a list, else nil.
async fn miss(shared: &Shared, k: &Key) -> Reply {
    match lists::is_list(&shared.client, k).await {
        Ok(true) => Reply::err(WRONGTYPE),
        _ => Reply::Nil,
    }
}

/// The serving of a run of pipelined `GET`s: one `get_many` per `GET_MANY_KEYS_MAX` keys
/// (each range's keys in one request, the ranges at once), replies in order.
pub async fn get_run(shared: &Shared, keys: Vec<Key>) -> Vec<Reply> {
    let mut out = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(GET_MANY_KEYS_MAX) {
        match shared.client.get_many(chunk.to_vec()).await {
            Ok(values) => {
                for (k, v) in chunk.iter().zip(values) {
                    out.push(match v {
                        Some(v) => Reply::Bulk(v.value),
                        None => miss(shared, k).await,
                    });
                }
            }
            Err(e) => out.extend(chunk.iter().map(|_| from_error(&e))),
        }
    }
    out
}

struct SetOptions {
    expiry: Expiry,
    nx: bool,
    xx: bool,
    get: bool,
}

fn parse_set_options(rest: &[Bytes]) -> Result<SetOptions, Reply> {
    let mut o = SetOptions { expiry: Expiry::Unset, nx: false, xx: false, get: false };
    let mut i = 0;
    while i < rest.len() {
        let opt = word(&rest[i]);
        match opt.as_str() {
            "NX" if !o.xx => o.nx = true,
            "XX" if !o.nx => o.xx = true,
            "GET" => o.get = true,
            "KEEPTTL" if o.expiry == Expiry::Unset => o.expiry = Expiry::Keep,
            "EX" | "PX" | "EXAT" | "PXAT" if o.expiry == Expiry::Unset => {
                let Some(value) = rest.get(i + 1) else { return Err(Reply::err(SYNTAX)) };
                o.expiry = parse_expiry("set", &opt, value)?;
                i += 1;
            }
            _ => return Err(Reply::err(SYNTAX)),
        }
        i += 1;
    }
    Ok(o)
}

pub async fn set(shared: &Shared, args: &[Bytes]) -> Reply {
    let opts = match parse_set_options(&args[3..]) {
        Ok(o) => o,
        Err(r) => return r,
    };
    set_with(shared, key(&args[1]), args[2].to_vec(), opts.expiry, opts.nx, opts.xx, opts.get).await
}

/// `SET key value` with its options; `get` answers the old value instead of `OK`, and a
/// condition that fails answers nil.
async fn set_with(shared: &Shared, k: Key, value: Vec<u8>, expiry: Expiry, nx: bool, xx: bool, get: bool) -> Reply {
    let client = &shared.client;
    if !nx && !xx && !get && expiry != Expiry::Keep {
        let done = match expiry {
            Expiry::In(ttl) => client.put_with_ttl(k, value, ttl).await.map(|_| ()),
            Expiry::Past => client.delete(k).await.map(|_| ()),
            _ => client.put(k, value).await.map(|_| ()),
        };
        return done.map_or_else(|e| from_error(&e), |_| OK);
    }
    retry_cas!({
        let cur = read_current(client, &k, expiry == Expiry::Keep).await?;
        let old = || cur.bytes().map_or(Reply::Nil, Reply::bulk);
        if (nx && cur.value.is_some()) || (xx && cur.value.is_none()) {
            return Ok(Some(if get { old() } else { Reply::Nil }));
        }
        let new = match expiry {
            Expiry::In(ttl) => NewValue::Put(value.clone(), Some(ttl)),
            Expiry::Keep => NewValue::Put(value.clone(), cur.ttl),
            Expiry::Past => NewValue::Delete,
            _ => NewValue::Put(value.clone(), None),
        };
        if write_if_unchanged(client, &k, &cur, new).await? {
            return Ok(Some(if get { old() } else { OK }));
        }
        Ok(None)
    })
}

pub async fn setnx(shared: &Shared, args: &[Bytes]) -> Reply {
    match set_with(shared, key(&args[1]), args[2].to_vec(), Expiry::Unset, true, false, false).await {
        Reply::Nil => Reply::Int(0),
        r if r.is_error() => r,
        _ => Reply::Int(1),
    }
}

/// `SETEX key seconds value` and `PSETEX key ms value`.
pub async fn setex(shared: &Shared, name: &str, args: &[Bytes]) -> Reply {
    let opt = if name == "SETEX" { "EX" } else { "PX" };
    match parse_expiry(name, opt, &args[2]) {
        Ok(expiry) => set_with(shared, key(&args[1]), args[3].to_vec(), expiry, false, false, false).await,
        Err(r) => r,
    }
}

pub async fn getset(shared: &Shared, args: &[Bytes]) -> Reply {
    set_with(shared, key(&args[1]), args[2].to_vec(), Expiry::Unset, false, false, true).await
}

pub async fn getdel(shared: &Shared, args: &[Bytes]) -> Reply {
    let k = key(&args[1]);
    retry_cas!({
        let cur = read_current(&shared.client, &k, false).await?;
        let Some(v) = &cur.value else { return Ok(Some(Reply::Nil)) };
        if write_if_unchanged(&shared.client, &k, &cur, NewValue::Delete).await? {
            return Ok(Some(Reply::bulk(v.value.clone())));
        }
        Ok(None)
    })
}

/// `GETEX key [EX s | PX ms | EXAT s | PXAT ms | PERSIST]`: the value, and the new expiry
/// set after the read (a write between the two is possible, as with two commands).
pub async fn getex(shared: &Shared, args: &[Bytes]) -> Reply {
    let k = key(&args[1]);
    let expiry = match &args[2..] {
        [] => Expiry::Unset,
        [p] if word(p) == "PERSIST" => Expiry::Persist,
        [opt, value] => match word(opt).as_str() {
            o @ ("EX" | "PX" | "EXAT" | "PXAT") => match parse_expiry("getex", o, value) {
                Ok(e) => e,
                Err(r) => return r,
            },
            _ => return Reply::err(SYNTAX),
        },
        _ => return Reply::err(SYNTAX),
    };
    let client = &shared.client;
    let value = match client.get(k.clone()).await {
        Ok(Some(v)) => v.value,
        Ok(None) => return Reply::Nil,
        Err(e) => return from_error(&e),
    };
    let done = match expiry {
        Expiry::In(ttl) => client.expire(k, ttl, Default::default()).await.map(|_| ()),
        Expiry::Persist => client.persist(k).await.map(|_| ()),
        Expiry::Past => client.delete(k).await.map(|_| ()),
        _ => Ok(()),
    };
    done.map_or_else(|e| from_error(&e), |_| Reply::Bulk(value))
}

pub async fn mget(shared: &Shared, args: &[Bytes]) -> Reply {
    let keys: Vec<Key> = args[1..].iter().map(key).collect();
    let mut out = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(GET_MANY_KEYS_MAX) {
        match shared.client.get_many(chunk.to_vec()).await {
            Ok(values) => out.extend(values.into_iter().map(|v| v.map_or(Reply::Nil, |v| Reply::Bulk(v.value)))),
            Err(e) => return from_error(&e),
        }
    }
    Reply::Array(out)
}

/// `MSET` and `MSETNX`: one transaction across every range the keys live in.
pub async fn mset(shared: &Shared, name: &str, args: &[Bytes]) -> Reply {
    if args.len() % 2 != 1 {
        return errors::arity(name);
    }
    let nx = name == "MSETNX";
    // A key given twice takes its last value, as in Redis (a transaction writes a key once).
    let mut last: std::collections::HashMap<&[u8], usize> = std::collections::HashMap::new();
    for (i, pair) in args[1..].chunks(2).enumerate() {
        last.insert(&pair[0][..], i);
    }
    let mut txn = Txn::new();
    for (i, pair) in args[1..].chunks(2).enumerate() {
        if last.get(&pair[0][..]) != Some(&i) {
            continue;
        }
        if nx {
            txn = txn.require_absent(key(&pair[0]));
        }
        txn = txn.put(key(&pair[0]), pair[1].to_vec());
    }
    match shared.client.commit(txn).await {
        Ok(_) if nx => Reply::Int(1),
        Ok(_) => OK,
        Err(Error::Conflict { .. }) if nx => Reply::Int(0),
        Err(e) => from_error(&e),
    }
}

pub async fn append(shared: &Shared, args: &[Bytes]) -> Reply {
    let k = key(&args[1]);
    retry_cas!({
        let cur = read_current(&shared.client, &k, true).await?;
        let mut value = cur.bytes().unwrap_or_default().to_vec();
        if value.len() + args[2].len() > VALUE_BYTES_MAX {
            return Ok(Some(too_big()));
        }
        value.extend_from_slice(&args[2]);
        let len = value.len() as i64;
        if write_if_unchanged(&shared.client, &k, &cur, NewValue::Put(value, cur.ttl)).await? {
            return Ok(Some(Reply::Int(len)));
        }
        Ok(None)
    })
}

fn too_big() -> Reply {
    Reply::err(format!("ERR string exceeds maximum allowed size ({VALUE_BYTES_MAX} bytes, VALUE_BYTES_MAX)"))
}

pub async fn strlen(shared: &Shared, args: &[Bytes]) -> Reply {
    match shared.client.get(key(&args[1])).await {
        Ok(v) => Reply::Int(v.map_or(0, |v| v.value.len() as i64)),
        Err(e) => from_error(&e),
    }
}

pub fn substring(value: &[u8], start: i64, end: i64) -> &[u8] {
    &value[substring_range(value.len(), start, end)]
}

pub async fn getrange(shared: &Shared, args: &[Bytes]) -> Reply {
    let (start, end) = match (args::int(&args[2]), args::int(&args[3])) {
        (Ok(s), Ok(e)) => (s, e),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    match shared.client.get(key(&args[1])).await {
        Ok(v) => Reply::bulk(substring(v.as_ref().map_or(&[][..], |v| &v.value), start, end)),
        Err(e) => from_error(&e),
    }
}

pub async fn setrange(shared: &Shared, args: &[Bytes]) -> Reply {
    let k = key(&args[1]);
    let offset = match args::int(&args[2]) {
        Ok(o) if o >= 0 => o as usize,
        Ok(_) => return Reply::err("ERR offset is out of range"),
        Err(r) => return r,
    };
    let patch = &args[3];
    if offset.saturating_add(patch.len()) > VALUE_BYTES_MAX {
        return too_big();
    }
    retry_cas!({
        let cur = read_current(&shared.client, &k, true).await?;
        let mut value = cur.bytes().unwrap_or_default().to_vec();
        if patch.is_empty() {
            // Redis creates nothing and changes nothing for an empty patch.
            return Ok(Some(Reply::Int(value.len() as i64)));
        }
        if value.len() < offset + patch.len() {
            value.resize(offset + patch.len(), 0);
        }
        value[offset..offset + patch.len()].copy_from_slice(patch);
        let len = value.len() as i64;
        if write_if_unchanged(&shared.client, &k, &cur, NewValue::Put(value, cur.ttl)).await? {
            return Ok(Some(Reply::Int(len)));
        }
        Ok(None)
    })
}

/// `INCR`, `DECR`, `INCRBY`, `DECRBY`: one counter operation in the key's range.
pub async fn incr(shared: &Shared, name: &str, args: &[Bytes]) -> Reply {
    let by = match name {
        "INCR" => 1,
        "DECR" => -1,
        _ => match args::int(&args[2]) {
            Ok(n) if name == "INCRBY" => n,
            Ok(n) => match n.checked_neg() {
                Some(n) => n,
                None => return Reply::err("ERR decrement would overflow"),
            },
            Err(r) => return r,
        },
    };
    match shared.client.incr(key(&args[1]), by).await {
        Ok(n) => Reply::Int(n),
        Err(e) => from_error(&e),
    }
}

pub async fn incrbyfloat(shared: &Shared, args: &[Bytes]) -> Reply {
    let k = key(&args[1]);
    let by = match args::float(&args[2]) {
        Ok(f) if f.is_finite() => f,
        Ok(_) => return Reply::err("ERR increment would produce NaN or Infinity"),
        Err(r) => return r,
    };
    retry_cas!({
        let cur = read_current(&shared.client, &k, true).await?;
        let base = match cur.bytes() {
            None => 0.0,
            Some(b) => match args::float(b) {
                Ok(f) => f,
                Err(r) => return Ok(Some(r)),
            },
        };
        let sum = base + by;
        if !sum.is_finite() {
            return Ok(Some(Reply::err("ERR increment would produce NaN or Infinity")));
        }
        let text = crate::reply::format_double(sum);
        if write_if_unchanged(&shared.client, &k, &cur, NewValue::Put(text.clone().into_bytes(), cur.ttl)).await? {
            return Ok(Some(Reply::bulk(text)));
        }
        Ok(None)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn getrange_indexes_like_redis() {
        let v = b"This is a string";
        assert_eq!(substring(v, 0, 3), b"This");
        assert_eq!(substring(v, -3, -1), b"ing");
        assert_eq!(substring(v, 0, -1), v);
        assert_eq!(substring(v, 10, 100), b"string");
        assert_eq!(substring(v, 5, 3), b"");
        assert_eq!(substring(v, -1, -5), b"");
        assert_eq!(substring(b"", 0, -1), b"");
    }

    #[test]
    fn set_options_parse_like_redis() {
        let b = |s: &str| s.split(' ').map(|w| Bytes::from(w.to_string())).collect::<Vec<_>>();
        assert!(parse_set_options(&b("NX XX")).is_err());
        assert!(parse_set_options(&b("EX 10 PX 10")).is_err());
        assert!(parse_set_options(&b("EX 0")).is_err());
        assert!(parse_set_options(&b("EX")).is_err());
        assert!(parse_set_options(&b("KEEPTTL EX 5")).is_err());
        let o = parse_set_options(&b("PX 1500 NX GET")).unwrap();
        assert!(o.nx && o.get && o.expiry == Expiry::In(Duration::from_millis(1500)));
        assert_eq!(parse_set_options(&b("EXAT 1")).unwrap().expiry, Expiry::Past);
    }
}
