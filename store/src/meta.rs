//! Typed access to the meta table: the records of `crate::meta` (re-exported here,
//! so `crate::meta` is the one path for both) read and written through a
//! [`MetaStore`].

use serde::{Deserialize, Serialize};

use ampstore_common::ids::NodeId;
use ampstore_common::key::{Key, KeyRange};
pub use ampstore_common::meta::*;

use crate::{Expect, MetaItem, MetaOp, MetaStore, StoreError, StoreResult, own_write};

/// The condition every write of the master active in `term` carries.
pub fn term_check(term: &TermRecord) -> MetaOp {
    MetaOp::Check { pk: PK_MASTER.into(), sk: SK_TERM.to_vec(), expect: Expect::Value(encode(term)) }
}

pub fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    // Records are plain structs of strings, integers and byte strings: encoding cannot fail.
    rmp_serde::to_vec_named(record).unwrap_or_default()
}

pub fn decode<T: for<'de> Deserialize<'de>>(what: &str, bytes: &[u8]) -> StoreResult<T> {
    rmp_serde::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("{what} record: {e}")))
}

/// A meta item decoded as `T`, with the version to condition the next write on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned<T> {
    pub version: u64,
    pub record: T,
}

fn decode_item<T: for<'de> Deserialize<'de>>(what: &str, item: MetaItem) -> StoreResult<Versioned<T>> {
    Ok(Versioned { version: item.version, record: decode(what, &item.value)? })
}

pub async fn get_node(meta: &dyn MetaStore, node: &NodeId) -> StoreResult<Option<Versioned<NodeRecord>>> {
    meta.get(PK_NODE, node.as_str().as_bytes()).await?.map(|i| decode_item("node", i)).transpose()
}

pub async fn get_range(meta: &dyn MetaStore, start: &Key) -> StoreResult<Option<Versioned<RangeDescriptor>>> {
    meta.get(PK_RANGE, start.as_bytes()).await?.map(|i| decode_item("range", i)).transpose()
}

/// Writes a range descriptor conditional on `expect` (its sort key is the range start).
/// A retry that finds exactly this descriptor stored counts as written ([`own_write::put`]):
/// checkpoints and owner changes are unique to their writer, and a descriptor already in
/// the state this write wants overwrites nobody's change.
pub async fn put_range(meta: &dyn MetaStore, desc: &RangeDescriptor, expect: Expect) -> StoreResult<u64> {
    own_write::put(meta, PK_RANGE, desc.range.start.as_bytes(), &encode(desc), expect).await
}

/// Every range descriptor, in key order.
pub async fn list_ranges(meta: &dyn MetaStore) -> StoreResult<Vec<Versioned<RangeDescriptor>>> {
    Ok(list_partition(meta, PK_RANGE, "range").await?.into_iter().map(|(_, v)| v).collect())
}

/// Every node record, with its node id.
pub async fn list_nodes(meta: &dyn MetaStore) -> StoreResult<Vec<(NodeId, Versioned<NodeRecord>)>> {
    node_keyed(list_partition(meta, PK_NODE, "node").await?)
}

/// Every drain record, with its node id.
pub async fn list_drains(meta: &dyn MetaStore) -> StoreResult<Vec<(NodeId, Versioned<DrainRecord>)>> {
    node_keyed(list_partition(meta, PK_DRAIN, "drain").await?)
}

fn node_keyed<T>(items: Vec<(Vec<u8>, Versioned<T>)>) -> StoreResult<Vec<(NodeId, Versioned<T>)>> {
    items
        .into_iter()
        .map(|(sk, v)| {
            let id = std::str::from_utf8(&sk)
                .ok()
                .and_then(|s| NodeId::new(s).ok())
                .ok_or_else(|| StoreError::Corrupt(format!("node id {sk:?} in meta")))?;
            Ok((id, v))
        })
        .collect()
}

async fn list_partition<T: for<'de> Deserialize<'de>>(
    meta: &dyn MetaStore,
    pk: &str,
    what: &str,
) -> StoreResult<Vec<(Vec<u8>, Versioned<T>)>> {
    let mut out = Vec::new();
    let mut from: Vec<u8> = Vec::new();
    loop {
        let page = meta.query(pk, &from, ampstore_common::limits::META_QUERY_ITEMS_MAX).await?;
        let full = page.len() == ampstore_common::limits::META_QUERY_ITEMS_MAX;
        for (sk, item) in page {
            from = sk.clone();
            from.push(0);
            out.push((sk, decode_item(what, item)?));
        }
        if !full {
            return Ok(out);
        }
    }
}

/// The current master term, if any master was ever active.
pub async fn get_term(meta: &dyn MetaStore) -> StoreResult<Option<TermRecord>> {
    meta.get(PK_MASTER, SK_TERM).await?.map(|i| decode("term", &i.value)).transpose()
}

/// The master lease, if any master was ever active.
pub async fn get_lease(meta: &dyn MetaStore) -> StoreResult<Option<Versioned<LeaseRecord>>> {
    meta.get(PK_MASTER, SK_LEASE).await?.map(|i| decode_item("lease", i)).transpose()
}

/// Creates the first range, covering the whole key space, if there is no range yet.
/// Safe to call from several processes at once.
pub async fn ensure_first_range(meta: &dyn MetaStore) -> StoreResult<()> {
    if !meta.query(PK_RANGE, b"", 1).await?.is_empty() {
        return Ok(());
    }
    let desc = RangeDescriptor {
        range_id: FIRST_RANGE_ID,
        range: KeyRange::full(),
        generation: 1,
        owner: None,
        checkpoint: None,
    };
    match put_range(meta, &desc, Expect::Absent).await {
        Ok(_) | Err(StoreError::ConditionFailed { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LocalConfig;
    use crate::local::LocalStore;

    #[tokio::test]
    async fn first_range_once_and_records_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalStore::open(dir.path(), &LocalConfig::default()).unwrap().backend();
        ensure_first_range(b.meta.as_ref()).await.unwrap();
        ensure_first_range(b.meta.as_ref()).await.unwrap();
        let all = list_ranges(b.meta.as_ref()).await.unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].version, 1);
        assert_eq!(all[0].record.range, KeyRange::full());
        let got = get_range(b.meta.as_ref(), &Key::default()).await.unwrap().unwrap();
        assert_eq!(got.record.range_id, FIRST_RANGE_ID);
        assert!(decode::<RangeDescriptor>("range", b"\xc1").is_err());
    }
}
