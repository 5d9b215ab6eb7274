//! The AWS backend: the commit log and the meta store in DynamoDB, blobs in S3.
//!
//! Same semantics as the embedded backend ([`super::local`]), checked by the same
//! conformance suite. Tables are `{prefix}-log` and `{prefix}-meta`; both are created, with
//! the bucket, by [`AwsStore::init`] (`ampstore init`), never by [`AwsStore::connect`].
//!
//! Every write that decides something is a conditional write, so the stores stay correct with
//! any number of processes writing at once:
//! - log slot: `PutItem` with `attribute_not_exists(s)`; several slots: one
//!   `TransactWriteItems`.
//! - meta item: `UpdateItem` / `DeleteItem` / `TransactWriteItems` conditional on the version
//!   or value the caller expects.
//! - blob: `PutObject` with `If-None-Match: *`.
//!
//! Errors: a failed condition becomes its typed [`StoreError`](super::StoreError); anything
//! else (throttling after the SDK's retries, timeouts, a missing table) is `Unavailable`.

use std::sync::Arc;

use super::Backend;
use crate::config::AwsConfig;
use ampstore_common::error::Error;

mod blobs;
mod client;
mod error;
mod init;
mod item;
mod log;
mod meta;
mod sort_key;
mod transact;

pub use init::{InitReport, InitResource, ResourceKind};

use blobs::S3Blobs;
use log::DynamoLog;
use meta::DynamoMeta;

/// The AWS store: one DynamoDB client and one S3 client, shared by the three stores.
pub struct AwsStore {
    log: Arc<DynamoLog>,
    meta: Arc<DynamoMeta>,
    blobs: Arc<S3Blobs>,
}

impl AwsStore {
    /// Prepares the clients for the tables and the bucket of `cfg`, which must exist
    /// (`ampstore init`). Sends no request: a store that cannot be reached at startup
    /// answers `Unavailable` until it can (and names `ampstore init` if a table or the
    /// bucket is missing), the same as one that goes away later.
    pub async fn connect(cfg: &AwsConfig) -> Result<AwsStore, Error> {
        let clients = client::Clients::new(cfg).await;
        Ok(AwsStore {
            log: Arc::new(DynamoLog::new(clients.ddb.clone(), log_table(cfg))),
            meta: Arc::new(DynamoMeta::new(clients.ddb, meta_table(cfg))),
            blobs: Arc::new(S3Blobs::new(clients.s3, cfg.bucket.clone())),
        })
    }

    /// Creates the tables and the bucket of `cfg` where missing and waits until the tables
    /// are active. Running it again is harmless; the report says what already existed.
    pub async fn init(cfg: &AwsConfig) -> Result<InitReport, Error> {
        let clients = client::Clients::new(cfg).await;
        init::run(&clients, cfg).await
    }

    /// The three stores as trait objects.
    pub fn backend(&self) -> Backend {
        Backend { log: self.log.clone(), meta: self.meta.clone(), blobs: self.blobs.clone() }
    }
}

fn log_table(cfg: &AwsConfig) -> String {
    format!("{}-log", cfg.prefix)
}

fn meta_table(cfg: &AwsConfig) -> String {
    format!("{}-meta", cfg.prefix)
}
