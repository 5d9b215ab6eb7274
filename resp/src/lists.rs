//! List commands over Ampstore's append-only lists: `RPUSH`, `RPUSHX`, `LRANGE`, `LLEN`,
//! `LINDEX`. A list is read whole (up to `RESP_LIST_ELEMENTS_MAX` elements) to answer an
//! index from its end; `LLEN` and `RPUSH`'s reply count it page by page. Commands that would change a list in place answer an error that says
//! why (`table::LIST_EDITS`).

use ampstore_client::{Client, Txn};
use ampstore_common::Key;
use ampstore_common::error::Error;
use ampstore_common::limits::{LIST_KEY_BYTES_MAX, RESP_CAS_ATTEMPTS_MAX, RESP_LIST_ELEMENTS_MAX, TXN_OPS_MAX};
use bytes::Bytes;

use crate::args::{self, key, substring_range};
use crate::errors::{WRONGTYPE, from_error};
use crate::reply::Reply;
use crate::shared::Shared;

/// Elements asked for per page while reading a whole list.
const PAGE_ELEMENTS: usize = 1000;

/// Whether `key` names a list with at least one element.
pub async fn is_list(client: &Client, key: &Key) -> Result<bool, Error> {
    if key.as_bytes().len() > LIST_KEY_BYTES_MAX {
        return Ok(false);
    }
    Ok(!client.list(key.clone(), None, 1).await?.elements.is_empty())
}

/// Every element of the list at `key`, in order; an error past `RESP_LIST_ELEMENTS_MAX`.
async fn read_all(client: &Client, key: &Key) -> Result<Result<Vec<Vec<u8>>, Reply>, Error> {
    if key.as_bytes().len() > LIST_KEY_BYTES_MAX {
        return Ok(Ok(Vec::new()));
    }
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = client.list(key.clone(), after, PAGE_ELEMENTS).await?;
        out.extend(page.elements.into_iter().map(|(_, e)| e));
        if out.len() > RESP_LIST_ELEMENTS_MAX {
            return Ok(Err(Reply::err(format!(
                "ERR the list holds more than {RESP_LIST_ELEMENTS_MAX} elements (RESP_LIST_ELEMENTS_MAX), more than one \
                 command reads"
            ))));
        }
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(Ok(out)),
        }
    }
}

/// How many elements the list at `key` has: pages are counted, not kept, so any length is
/// answered (an `RPUSH` that landed must never answer an error for its reply).
async fn length(client: &Client, key: &Key) -> Result<i64, Error> {
    if key.as_bytes().len() > LIST_KEY_BYTES_MAX {
        return Ok(0);
    }
    let (mut count, mut after) = (0i64, None);
    loop {
        let page = client.list(key.clone(), after, PAGE_ELEMENTS).await?;
        count += page.elements.len() as i64;
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(count),
        }
    }
}

/// `RPUSH key element...` (and `RPUSHX`, only onto a list that has elements): appends in
/// order and answers the list's length after. Several elements are one transaction of
/// pushes, so they land together and in order, as in Redis (another client's pushes never
/// fall between them); its push ids are taken again when other pushes overtook them.
/// Each push is applied once even if retried.
pub async fn rpush(shared: &Shared, name: &str, args: &[Bytes]) -> Reply {
    let client = &shared.client;
    let k = key(&args[1]);
    let elements = &args[2..];
    if elements.len() > TXN_OPS_MAX {
        return Reply::err(format!(
            "ERR {name} takes at most {TXN_OPS_MAX} elements at once (TXN_OPS_MAX): they are one transaction"
        ));
    }
    match client.get(k.clone()).await {
        Ok(Some(_)) => return Reply::err(WRONGTYPE),
        Ok(None) => {}
        Err(e) => return from_error(&e),
    }
    if name == "RPUSHX" {
        match is_list(client, &k).await {
            Ok(true) => {}
            Ok(false) => return Reply::Int(0),
            Err(e) => return from_error(&e),
        }
    }
    let pushed = match elements {
        [one] => client.push(k.clone(), one.to_vec()).await.map(|_| ()),
        _ => push_together(client, &k, elements).await,
    };
    if let Err(e) = pushed {
        return from_error(&e);
    }
    length(client, &k).await.map_or_else(|e| from_error(&e), Reply::Int)
}

/// One transaction that appends `elements` in order, with fresh ids on each attempt.
async fn push_together(client: &Client, k: &Key, elements: &[Bytes]) -> Result<(), Error> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let txn = elements.iter().fold(Txn::new(), |txn, e| txn.push(k.clone(), e.to_vec(), client.push_id()));
        match client.commit(txn).await {
            Ok(_) => return Ok(()),
            // Another push landed after these ids were taken: take new ones.
            Err(Error::Conflict { .. }) if attempt < RESP_CAS_ATTEMPTS_MAX => continue,
            Err(e) => return Err(e),
        }
    }
}

pub async fn llen(shared: &Shared, args: &[Bytes]) -> Reply {
    let k = key(&args[1]);
    if let Some(r) = wrong_type(shared, &k).await {
        return r;
    }
    length(&shared.client, &k).await.map_or_else(|e| from_error(&e), Reply::Int)
}

/// A `WRONGTYPE` reply when `key` holds a string.
async fn wrong_type(shared: &Shared, key: &Key) -> Option<Reply> {
    match shared.client.get(key.clone()).await {
        Ok(Some(_)) => Some(Reply::err(WRONGTYPE)),
        Ok(None) => None,
        Err(e) => Some(from_error(&e)),
    }
}

pub async fn lrange(shared: &Shared, args: &[Bytes]) -> Reply {
    let (start, stop) = match (args::int(&args[2]), args::int(&args[3])) {
        (Ok(s), Ok(e)) => (s, e),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let k = key(&args[1]);
    if let Some(r) = wrong_type(shared, &k).await {
        return r;
    }
    match read_all(&shared.client, &k).await {
        Ok(Ok(all)) => {
            let range = substring_range(all.len(), start, stop);
            Reply::Array(all[range].iter().map(|e| Reply::bulk(e.clone())).collect())
        }
        Ok(Err(r)) => r,
        Err(e) => from_error(&e),
    }
}

pub async fn lindex(shared: &Shared, args: &[Bytes]) -> Reply {
    let index = match args::int(&args[2]) {
        Ok(i) => i,
        Err(r) => return r,
    };
    let k = key(&args[1]);
    if let Some(r) = wrong_type(shared, &k).await {
        return r;
    }
    match read_all(&shared.client, &k).await {
        Ok(Ok(all)) => {
            let i = if index < 0 { all.len() as i64 + index } else { index };
            match usize::try_from(i).ok().and_then(|i| all.get(i)) {
                Some(e) => Reply::bulk(e.clone()),
                None => Reply::Nil,
            }
        }
        Ok(Err(r)) => r,
        Err(e) => from_error(&e),
    }
}

/// The answer to a command that would edit a list in place.
pub fn append_only(name: &str) -> Reply {
    Reply::err(format!(
        "ERR Ampstore lists are append-only: {name} would change a list in place; append with RPUSH and read with \
         LRANGE, LLEN, LINDEX"
    ))
}
