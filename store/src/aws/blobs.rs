//! Blobs as objects of one S3 bucket, keyed by the blob name.
//!
//! `put_if_absent` is one `PutObject` with `If-None-Match: *`: S3 checks and publishes in one
//! step and an object becomes visible only whole, so a reader never sees part of a blob.

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::operation::get_object::GetObjectError;
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;

use super::client::{BLOB_UPLOAD_TIMEOUT, timeouts};
use super::error::{backoff, http_status, unavailable};
use crate::{BlobStore, StoreError, StoreResult, validate};
use ampstore_common::limits::{BLOB_BYTES_MAX, BLOB_LIST_NAMES_MAX};

/// Attempts at a conditional put while S3 answers 409 ConditionalRequestConflict (another
/// conditional write to the same key is in flight; S3 asks us to retry).
const PUT_ATTEMPTS: u32 = 5;
/// Most keys S3 returns per `ListObjectsV2` page.
const LIST_PAGE_KEYS: i32 = 1000;

pub(super) struct S3Blobs {
    s3: Client,
    bucket: String,
}

impl S3Blobs {
    pub fn new(s3: Client, bucket: String) -> S3Blobs {
        S3Blobs { s3, bucket }
    }
}

#[async_trait]
impl BlobStore for S3Blobs {
    async fn put_if_absent(&self, name: &str, data: Bytes) -> StoreResult<()> {
        validate::blob_name(name)?;
        validate::blob_size(data.len())?;
        let mut attempt = 1;
        loop {
            let result = self
                .s3
                .put_object()
                .bucket(&self.bucket)
                .key(name)
                .if_none_match("*")
                .body(ByteStream::from(data.clone()))
                .customize()
                .config_override(aws_sdk_s3::config::Builder::new().timeout_config(timeouts(BLOB_UPLOAD_TIMEOUT)))
                .send()
                .await;
            let e = match result {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            match http_status(&e) {
                Some(412) => {
                    return Err(StoreError::AlreadyExists { name: name.to_string() });
                }
                Some(409) if attempt < PUT_ATTEMPTS => {
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
                _ => return Err(unavailable("s3 PutObject", &e)),
            }
        }
    }

    async fn get(&self, name: &str) -> StoreResult<Option<Bytes>> {
        validate::blob_name(name)?;
        let out = match self.s3.get_object().bucket(&self.bucket).key(name).send().await {
            Ok(out) => out,
            // Only a missing key: a missing bucket (404 NoSuchBucket too) is an error.
            Err(e) if matches!(e.as_service_error(), Some(GetObjectError::NoSuchKey(_))) => {
                return Ok(None);
            }
            Err(e) => return Err(unavailable("s3 GetObject", &e)),
        };
        // No blob is ever written larger; refuse to buffer whatever claims to be.
        if let Some(len) = out.content_length
            && usize::try_from(len).map_or(true, |len| len > BLOB_BYTES_MAX)
        {
            return Err(StoreError::Corrupt(format!("blob {name} is {len} bytes, over the limit {BLOB_BYTES_MAX}")));
        }
        let data = out
            .body
            .collect()
            .await
            .map_err(|e| StoreError::Unavailable(format!("s3 GetObject {name}: reading the body: {e}")))?;
        Ok(Some(data.into_bytes()))
    }

    async fn list(&self, prefix: &str, start_after: Option<&str>) -> StoreResult<Vec<String>> {
        validate::blob_prefix(prefix)?;
        let mut names = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .s3
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_start_after(start_after.map(str::to_string))
                .set_continuation_token(token)
                .max_keys(LIST_PAGE_KEYS)
                .send()
                .await
                .map_err(|e| unavailable("s3 ListObjectsV2", &e))?;
            names.extend(page.contents.unwrap_or_default().into_iter().filter_map(|o| o.key));
            token = page.next_continuation_token;
            if names.len() >= BLOB_LIST_NAMES_MAX || token.is_none() {
                break;
            }
        }
        // S3 lists in UTF-8 byte order already; sorting keeps the contract whatever the server.
        names.sort_unstable();
        names.truncate(BLOB_LIST_NAMES_MAX);
        Ok(names)
    }

    async fn delete(&self, name: &str) -> StoreResult<()> {
        validate::blob_name(name)?;
        match self.s3.delete_object().bucket(&self.bucket).key(name).send().await {
            // S3 answers 204 for an absent key as well.
            Ok(_) => Ok(()),
            Err(e) => Err(unavailable("s3 DeleteObject", &e)),
        }
    }
}
