//! Transactions (DESIGN section 9): conditions and writes over any keys, committed
//! atomically, serializable for the keys they touch.
//!
//! The client groups a transaction by range (it knows the routing) and sends it to the
//! node serving the first written key, which coordinates. A transaction within one range is
//! one conditional log entry; across ranges the participants reserve log slots and the
//! coordinator writes them all at once.

use std::collections::BTreeMap;

use ampstore_common::protocol::Versioned;
use ampstore_common::txn::{TxnCheck, TxnCondition, TxnPart, TxnWrite};
use ampstore_common::wire::Call;
use ampstore_common::wire::data::{self, Committed};
use ampstore_common::{Error, Key, RangeId, Version};

use crate::client::{BACKOFF_START, Client};

/// How long each participant holds a transaction before resolving it on its own.
pub const TXN_HOLD_MS: u64 = 2000;

/// A transaction being built: conditions that must hold and writes to make, over any keys.
///
/// ```no_run
/// # async fn demo(client: ampstore_client::Client) -> Result<(), ampstore_client::Error> {
/// use ampstore_client::Txn;
/// // Move 10 from a to b, both read first; fails with `Conflict` if either changed since.
/// let (a, b) = (client.get("acct:a").await?.unwrap(), client.get("acct:b").await?.unwrap());
/// let balance = |v: &[u8]| String::from_utf8_lossy(v).parse::<i64>().unwrap_or(0);
/// let txn = Txn::new()
///     .require_version("acct:a", a.version)
///     .require_version("acct:b", b.version)
///     .put("acct:a", (balance(&a.value) - 10).to_string())
///     .put("acct:b", (balance(&b.value) + 10).to_string());
/// client.commit(txn).await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Txn {
    checks: Vec<TxnCheck>,
    writes: Vec<TxnWrite>,
    reads: Vec<Key>,
}

impl Txn {
    pub fn new() -> Txn {
        Txn::default()
    }

    /// Commit only if `key` holds no value.
    pub fn require_absent(mut self, key: impl Into<Key>) -> Txn {
        self.checks.push(TxnCheck { key: key.into(), condition: TxnCondition::Absent });
        self
    }

    /// Commit only if `key` still holds `version` (as an earlier read returned it).
    pub fn require_version(mut self, key: impl Into<Key>, version: Version) -> Txn {
        self.checks.push(TxnCheck { key: key.into(), condition: TxnCondition::Version(version) });
        self
    }

    /// Commit only if `key` holds exactly `value`.
    pub fn require_value(mut self, key: impl Into<Key>, value: impl Into<Vec<u8>>) -> Txn {
        self.checks.push(TxnCheck { key: key.into(), condition: TxnCondition::Value(value.into()) });
        self
    }

    /// Commit only if `key` is as a read saw it: at `seen` (a version), or absent (`None`).
    pub fn read_as(self, key: impl Into<Key>, seen: Option<Version>) -> Txn {
        match seen {
            Some(v) => self.require_version(key, v),
            None => self.require_absent(key),
        }
    }

    pub fn put(mut self, key: impl Into<Key>, value: impl Into<Vec<u8>>) -> Txn {
        self.writes.push(TxnWrite::Put { key: key.into(), value: value.into() });
        self
    }

    /// A put whose key expires `ttl` after the transaction's coordinator starts it: the
    /// coordinator (the node serving the first part) stamps one absolute expiry by its wall
    /// clock, so every participant stores the same one (whole ms, 1 ms to 100 years; checked
    /// when the transaction is committed).
    pub fn put_with_ttl(mut self, key: impl Into<Key>, value: impl Into<Vec<u8>>, ttl: std::time::Duration) -> Txn {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        self.writes.push(TxnWrite::PutWithTtl { key: key.into(), value: value.into(), ttl_ms });
        self
    }

    pub fn delete(mut self, key: impl Into<Key>) -> Txn {
        self.writes.push(TxnWrite::Delete { key: key.into() });
        self
    }

    /// Appends `element` to the list at `key` as part of the transaction, with push id `id`
    /// (from [`Client::push_id`]; the same id again adds nothing). An id below the list's
    /// last element fails the transaction with `Conflict` naming that element (lists keep
    /// the order pushes took effect): take a fresh id and commit again.
    pub fn push(mut self, key: impl Into<Key>, element: impl Into<Vec<u8>>, id: ampstore_common::lists::PushId) -> Txn {
        self.writes.push(TxnWrite::Push { key: key.into(), element: element.into(), push_id: id });
        self
    }

    /// Also return `key`'s value as of the moment the transaction took effect (before its
    /// own writes), in [`TxnOutcome::values`].
    pub fn read(mut self, key: impl Into<Key>) -> Txn {
        self.reads.push(key.into());
        self
    }

    pub fn is_empty(&self) -> bool {
        self.checks.is_empty() && self.writes.is_empty() && self.reads.is_empty()
    }
}

/// A committed transaction: the version each written key got, in the order written, and
/// the values read (as of the moment it took effect), in the order asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnOutcome {
    pub versions: Vec<(Key, Version)>,
    pub values: Vec<(Key, Option<Versioned>)>,
}

impl Client {
    /// Commits `txn` atomically: every write lands, and only if every condition held at one
    /// moment, or nothing does. A condition that failed answers `Conflict` naming its key
    /// (`Error::Conflict { key, .. }`); the caller reads again and retries. Ranges that are
    /// busy (moving, splitting, held by another transaction) are retried until the call
    /// deadline. `Timeout` means the outcome is unknown.
    ///
    /// ```no_run
    /// # async fn demo(client: ampstore_client::Client) -> Result<(), ampstore_client::Error> {
    /// use ampstore_client::Txn;
    /// // Create a user only if the name is free, with its index entry, atomically.
    /// client.commit(Txn::new().require_absent("name:ann").put("name:ann", "u42").put("user:u42", "ann")).await?;
    /// # Ok(()) }
    /// ```
    pub async fn commit(&self, txn: Txn) -> Result<TxnOutcome, Error> {
        if txn.is_empty() {
            return Err(Error::invalid("an empty transaction"));
        }
        let deadline = self.deadline();
        let mut backoff = BACKOFF_START;
        // One id for every attempt: a participant that already committed this transaction
        // answers a retry with that outcome instead of applying it again.
        let txn_id = self.write_id();
        loop {
            let parts = self.group(&txn, deadline).await?;
            let coordinator = parts[0].node_addr.clone();
            let req = data::Txn { txn_id, parts: parts.clone(), hold_ms: TXN_HOLD_MS };
            req.validate()?;
            let sent = match self.conn(&coordinator).await {
                Ok(conn) => conn.call_once_typed(req, Self::remaining(deadline)?).await,
                Err(e) => Err(e),
            };
            match sent {
                Ok(Committed { versions, values }) => {
                    let mut out = Vec::with_capacity(txn.writes.len());
                    for (part, vs) in parts.iter().zip(versions) {
                        out.extend(part.writes.iter().map(TxnWrite::target).zip(vs));
                    }
                    let mut read: BTreeMap<Key, Option<Versioned>> = BTreeMap::new();
                    for (part, vs) in parts.iter().zip(values) {
                        read.extend(part.reads.iter().cloned().zip(vs));
                    }
                    let values = txn.reads.iter().map(|k| (k.clone(), read.get(k).cloned().flatten())).collect();
                    return Ok(TxnOutcome { versions: out, values });
                }
                // Nothing was written (a refused prepare or an abandoned transaction), so a
                // retry is safe; a timeout (outcome unknown) is the caller's to resolve.
                Err(e) if e.is_retryable() && !matches!(e, Error::Timeout) => {
                    for part in &parts {
                        let key = part
                            .writes
                            .first()
                            .map(TxnWrite::target)
                            .or(part.checks.first().map(|c| c.key.clone()))
                            .or(part.reads.first().cloned());
                        if let Some(loc) = key.and_then(|k| self.cached(&k)) {
                            self.forget_range(&loc);
                        }
                    }
                    self.wait(&e, &mut backoff, deadline).await?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads `keys` as of one moment across any ranges: the values (with versions) that
    /// all held at once. A transaction with reads only: every range involved is held at one
    /// moment, and each read happens while its range is held.
    ///
    /// ```no_run
    /// # async fn demo(client: ampstore_client::Client) -> Result<(), ampstore_client::Error> {
    /// let both = client.read_consistent(vec!["acct:a".into(), "acct:b".into()]).await?;
    /// # Ok(()) }
    /// ```
    pub async fn read_consistent(&self, keys: Vec<Key>) -> Result<Vec<Option<Versioned>>, Error> {
        let mut txn = Txn::new();
        for k in keys {
            txn = txn.read(k);
        }
        Ok(self.commit(txn).await?.values.into_iter().map(|(_, v)| v).collect())
    }

    /// The transaction's parts by range, the first written key's range first (its node
    /// coordinates).
    async fn group(&self, txn: &Txn, deadline: std::time::Instant) -> Result<Vec<TxnPart>, Error> {
        let mut parts: Vec<TxnPart> = Vec::new();
        let mut index: BTreeMap<RangeId, usize> = BTreeMap::new();
        let keys = txn
            .writes
            .iter()
            .map(|w| (w.target(), Some(w), None, false))
            .chain(txn.checks.iter().map(|c| (c.key.clone(), None, Some(c), false)))
            .chain(txn.reads.iter().map(|k| (k.clone(), None, None, true)));
        for (key, write, check, read) in keys {
            let loc = self.route(&key, deadline).await?;
            let i = *index.entry(loc.range_id).or_insert_with(|| {
                parts.push(TxnPart {
                    range_id: loc.range_id,
                    node_addr: loc.node_addr.clone(),
                    checks: Vec::new(),
                    writes: Vec::new(),
                    reads: Vec::new(),
                });
                parts.len() - 1
            });
            parts[i].writes.extend(write.cloned());
            parts[i].checks.extend(check.cloned());
            if read && !parts[i].reads.contains(&key) {
                parts[i].reads.push(key);
            }
        }
        Ok(parts)
    }
}
