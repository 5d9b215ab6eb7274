//! Key commands: `DEL`, `UNLINK`, `EXISTS`, `TYPE`, the `EXPIRE` family, `TTL`, `PTTL`,
//! `EXPIRETIME`, `PEXPIRETIME`, `PERSIST`, `RENAME`, `RENAMENX`, `SCAN`, `KEYS`, `RANDOMKEY`,
//! `DBSIZE`, `FLUSHDB` / `FLUSHALL`.

use std::time::Duration;

use ampstore_client::Txn;
use ampstore_common::Key;
use ampstore_common::error::Error;
use ampstore_common::limits::{RESP_CAS_ATTEMPTS_MAX, RESP_KEYS_EXAMINED_MAX, SCAN_PAGE_KEYS_MAX};
use ampstore_common::protocol::{ExpireWhen, KeyTtl};
use bytes::Bytes;

use crate::args::{self, now_ms, word};
use crate::errors::{self, SYNTAX, from_error};
use crate::reply::{OK, Reply};
use crate::shared::Shared;
use crate::strings::{key, read_current, retry_cas};
use crate::{cursor, glob, lists};

pub async fn del(shared: &Shared, args: &[Bytes]) -> Reply {
    let mut removed = 0;
    for arg in &args[1..] {
        match shared.client.delete(key(arg)).await {
            Ok(true) => removed += 1,
            Ok(false) => {}
            Err(e) => return from_error(&e),
        }
    }
    Reply::Int(removed)
}

pub async fn exists(shared: &Shared, args: &[Bytes]) -> Reply {
    let mut found = 0;
    for arg in &args[1..] {
        let k = key(arg);
        match shared.client.get(k.clone()).await {
            Ok(Some(_)) => found += 1,
            Ok(None) => {
                if matches!(lists::is_list(&shared.client, &k).await, Ok(true)) {
                    found += 1;
                }
            }
            Err(e) => return from_error(&e),
        }
    }
    Reply::Int(found)
}

pub async fn type_of(shared: &Shared, args: &[Bytes]) -> Reply {
    let k = key(&args[1]);
    match shared.client.get(k.clone()).await {
        Ok(Some(_)) => Reply::Simple("string"),
        Ok(None) => match lists::is_list(&shared.client, &k).await {
            Ok(true) => Reply::Simple("list"),
            Ok(false) => Reply::Simple("none"),
            Err(e) => from_error(&e),
        },
        Err(e) => from_error(&e),
    }
}

/// `EXPIRE`, `PEXPIRE`, `EXPIREAT`, `PEXPIREAT` with `NX`, `XX`, `GT`, `LT`. A time already
/// past deletes the key (when the condition allows), as in Redis.
pub async fn expire(shared: &Shared, name: &str, args: &[Bytes]) -> Reply {
    let k = key(&args[1]);
    let n = match args::int(&args[2]) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let mut when = ExpireWhen::Always;
    for opt in &args[3..] {
        let next = match word(opt).as_str() {
            "NX" => ExpireWhen::Nx,
            "XX" => ExpireWhen::Xx,
            "GT" => ExpireWhen::Gt,
            "LT" => ExpireWhen::Lt,
            other => return Reply::err(format!("ERR Unsupported option {other}")),
        };
        if when != ExpireWhen::Always && when != next {
            let both_order =
                matches!((when, next), (ExpireWhen::Gt, ExpireWhen::Lt) | (ExpireWhen::Lt, ExpireWhen::Gt));
            return Reply::err(if both_order {
                "ERR GT and LT options at the same time are not compatible"
            } else {
                "ERR NX and XX, GT or LT options at the same time are not compatible"
            });
        }
        when = next;
    }
    let in_seconds = name == "EXPIRE" || name == "EXPIREAT";
    let Some(ms) = (if in_seconds { n.checked_mul(1000) } else { Some(n) }) else {
        return errors::invalid_expire(name);
    };
    let relative = if name.ends_with("AT") { ms.saturating_sub(now_ms()) } else { ms };
    if relative > 0 {
        return match shared.client.expire(k, Duration::from_millis(relative as u64), when).await {
            Ok(set) => Reply::Int(i64::from(set)),
            Err(e) => from_error(&e),
        };
    }
    // In the past: the key goes, if it exists and the condition holds for a time in the past.
    let ttl = match shared.client.ttl(k.clone()).await {
        Ok(t) => t,
        Err(e) => return from_error(&e),
    };
    let allowed = match (when, ttl) {
        (_, KeyTtl::Absent) => false,
        (ExpireWhen::Always | ExpireWhen::Lt, _) => true,
        (ExpireWhen::Nx, t) => t == KeyTtl::Persistent,
        (ExpireWhen::Xx, t) => t != KeyTtl::Persistent,
        (ExpireWhen::Gt, _) => false,
    };
    if !allowed {
        return Reply::Int(0);
    }
    match shared.client.delete(k).await {
        Ok(removed) => Reply::Int(i64::from(removed)),
        Err(e) => from_error(&e),
    }
}

/// `TTL`, `PTTL`, `EXPIRETIME`, `PEXPIRETIME`: -2 for no key, -1 for no expiry.
pub async fn ttl(shared: &Shared, name: &str, args: &[Bytes]) -> Reply {
    match shared.client.ttl(key(&args[1])).await {
        Ok(KeyTtl::Absent) => Reply::Int(-2),
        Ok(KeyTtl::Persistent) => Reply::Int(-1),
        Ok(KeyTtl::ExpiresInMs(ms)) => {
            let ms = ms as i64;
            Reply::Int(match name {
                "TTL" => (ms + 500) / 1000,
                "PTTL" => ms,
                "EXPIRETIME" => (now_ms() + ms) / 1000,
                _ => now_ms() + ms,
            })
        }
        Err(e) => from_error(&e),
    }
}

pub async fn persist(shared: &Shared, args: &[Bytes]) -> Reply {
    match shared.client.persist(key(&args[1])).await {
        Ok(done) => Reply::Int(i64::from(done)),
        Err(e) => from_error(&e),
    }
}

/// `RENAME` and `RENAMENX`: one transaction that requires the source as read (and, for
/// `RENAMENX`, the destination absent), deletes the source and writes the destination with
/// the source's time to live.
pub async fn rename(shared: &Shared, name: &str, args: &[Bytes]) -> Reply {
    let (src, dst) = (key(&args[1]), key(&args[2]));
    let nx = name == "RENAMENX";
    let client = &shared.client;
    retry_cas!({
        let cur = read_current(client, &src, true).await?;
        let Some(v) = &cur.value else { return Ok(Some(Reply::err("ERR no such key"))) };
        if src == dst {
            return Ok(Some(if nx { Reply::Int(0) } else { OK }));
        }
        let mut txn = Txn::new().require_version(src.clone(), v.version);
        if nx {
            txn = txn.require_absent(dst.clone());
        }
        txn = txn.delete(src.clone());
        txn = match cur.ttl {
            Some(ttl) => txn.put_with_ttl(dst.clone(), v.value.clone(), ttl),
            None => txn.put(dst.clone(), v.value.clone()),
        };
        match client.commit(txn).await {
            Ok(_) => Ok(Some(if nx { Reply::Int(1) } else { OK })),
            Err(Error::Conflict { key: Some(k), .. }) if nx && k == dst => Ok(Some(Reply::Int(0))),
            Err(Error::Conflict { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    })
}

/// The first key after every key that starts with `prefix` (`None`: no such bound).
fn prefix_end(prefix: &[u8]) -> Option<Key> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(Key::from(end));
        }
    }
    None
}

struct ScanOptions {
    pattern: Option<Vec<u8>>,
    count: usize,
    /// `TYPE t`: only keys of that type (`string`; every other type finds nothing here).
    strings_only: Option<bool>,
}

fn parse_scan_options(rest: &[Bytes]) -> Result<ScanOptions, Reply> {
    let mut o = ScanOptions { pattern: None, count: 10, strings_only: None };
    let mut i = 0;
    while i < rest.len() {
        let Some(value) = rest.get(i + 1) else { return Err(Reply::err(SYNTAX)) };
        match word(&rest[i]).as_str() {
            "MATCH" => o.pattern = Some(value.to_vec()),
            "COUNT" => match args::int(value)? {
                n if n >= 1 => o.count = (n as usize).min(SCAN_PAGE_KEYS_MAX),
                _ => return Err(Reply::err(SYNTAX)),
            },
            "TYPE" => o.strings_only = Some(word(value) == "STRING"),
            _ => return Err(Reply::err(SYNTAX)),
        }
        i += 2;
    }
    Ok(o)
}

/// `SCAN cursor [MATCH pattern] [COUNT n] [TYPE type]`: looks at up to `n` keys from the
/// cursor (the next key, as a number: `cursor`), answers the ones that match and the cursor
/// of the key after them (`0` at the end). Keys in order, every key exactly once over a
/// whole iteration (keys written meanwhile may or may not appear, as in Redis).
pub async fn scan(shared: &Shared, args: &[Bytes]) -> Reply {
    let start = match cursor::decode(&args[1]) {
        Ok(s) => s,
        Err(e) => return Reply::err(e),
    };
    let o = match parse_scan_options(&args[2..]) {
        Ok(o) => o,
        Err(r) => return r,
    };
    let prefix = o.pattern.as_deref().map(glob::literal_prefix).unwrap_or_default();
    let start = match start {
        Some(k) => k,
        None => prefix.clone(),
    };
    let end = prefix_end(&prefix);
    let page = match shared.client.scan(Key::from(start), end, o.count, false).await {
        Ok(p) => p,
        Err(e) => return from_error(&e),
    };
    let keys: Vec<Reply> = if o.strings_only == Some(false) {
        Vec::new()
    } else {
        page.items
            .into_iter()
            .filter(|i| o.pattern.as_deref().is_none_or(|p| glob::matches(p, i.key.as_bytes())))
            .map(|i| Reply::bulk(i.key.as_bytes()))
            .collect()
    };
    let next = page.resume.map_or_else(|| "0".to_string(), |k| cursor::encode(k.as_bytes()));
    Reply::Array(vec![Reply::bulk(next), Reply::Array(keys)])
}

/// `KEYS pattern`: every matching key, from a scan bounded by the pattern's literal prefix.
/// Past `RESP_KEYS_EXAMINED_MAX` keys examined it answers an error that names `SCAN`.
pub async fn keys(shared: &Shared, args: &[Bytes]) -> Reply {
    let pattern = args[1].to_vec();
    let prefix = glob::literal_prefix(&pattern);
    let end = prefix_end(&prefix);
    let mut start = Key::from(prefix);
    let mut out = Vec::new();
    let mut examined = 0usize;
    loop {
        let page = match shared.client.scan(start, end.clone(), SCAN_PAGE_KEYS_MAX, false).await {
            Ok(p) => p,
            Err(e) => return from_error(&e),
        };
        examined += page.items.len();
        if examined > RESP_KEYS_EXAMINED_MAX {
            return Reply::err(format!(
                "ERR KEYS would examine more than {RESP_KEYS_EXAMINED_MAX} keys (RESP_KEYS_EXAMINED_MAX); use SCAN"
            ));
        }
        out.extend(
            page.items
                .into_iter()
                .filter(|i| glob::matches(&pattern, i.key.as_bytes()))
                .map(|i| Reply::bulk(i.key.as_bytes())),
        );
        match page.resume {
            Some(next) => start = next,
            None => return Reply::Array(out),
        }
    }
}

/// `RANDOMKEY`: the first key at or after a random point of the key space, else the first.
pub async fn randomkey(shared: &Shared) -> Reply {
    let point: [u8; 4] = rand::random();
    for start in [Key::from(&point[..]), Key::from("")] {
        match shared.client.scan(start, None, 1, false).await {
            Ok(page) => {
                if let Some(item) = page.items.into_iter().next() {
                    return Reply::bulk(item.key.as_bytes());
                }
            }
            Err(e) => return from_error(&e),
        }
    }
    Reply::Nil
}

/// How many keys the database holds: a scan of every key (time in proportion to the keys).
pub async fn count_keys(shared: &Shared) -> Result<u64, Error> {
    let mut start = Key::from("");
    let mut count = 0u64;
    loop {
        let page = shared.client.scan(start, None, SCAN_PAGE_KEYS_MAX, false).await?;
        count += page.items.len() as u64;
        match page.resume {
            Some(next) => start = next,
            None => return Ok(count),
        }
    }
}

pub async fn dbsize(shared: &Shared) -> Reply {
    count_keys(shared).await.map_or_else(|e| from_error(&e), |n| Reply::Int(n as i64))
}

/// `FLUSHDB` / `FLUSHALL [ASYNC|SYNC]` (the admin credential only): deletes every key.
pub async fn flush(shared: &Shared, args: &[Bytes]) -> Reply {
    match &args[1..] {
        [] => {}
        [m] if matches!(word(m).as_str(), "ASYNC" | "SYNC") => {}
        _ => return Reply::err(SYNTAX),
    }
    match shared.client.delete_range(Key::from(""), None).await {
        Ok(_) => OK,
        Err(e) => from_error(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends_bound_every_key_with_the_prefix() {
        assert_eq!(prefix_end(b"user:"), Some(Key::from("user;")));
        assert_eq!(prefix_end(b"a\xff"), Some(Key::from("b")));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        assert_eq!(prefix_end(b""), None);
    }

    #[test]
    fn scan_options_parse() {
        let b = |s: &str| s.split(' ').map(|w| Bytes::from(w.to_string())).collect::<Vec<_>>();
        let o = parse_scan_options(&b("MATCH u* COUNT 100 TYPE string")).unwrap();
        assert_eq!(o.pattern.as_deref(), Some(&b"u*"[..]));
        assert_eq!(o.count, 100);
        assert_eq!(o.strings_only, Some(true));
        assert!(parse_scan_options(&b("COUNT 0")).is_err());
        assert!(parse_scan_options(&b("MATCH")).is_err());
        assert_eq!(parse_scan_options(&b("COUNT 99999999")).unwrap().count, SCAN_PAGE_KEYS_MAX);
    }
}
