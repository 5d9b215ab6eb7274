//! One storage conformance suite, run against every backend. Test names say which:
//! `local::...` (SQLite + files) and `aws::...` (DynamoDB + S3, feature `aws`).
//!
//! The AWS tests need a DynamoDB/S3 protocol server: `./scripts/test` starts moto and sets
//! `AMPSTORE_TEST_AWS_ENDPOINT`. Without it they fail (they never skip).

mod conformance;

use ampstore_store::Backend;
use ampstore_store::config::LocalConfig;
use ampstore_store::local::LocalStore;

/// A backend plus whatever must live as long as it (a temporary directory).
pub struct TestBackend {
    pub backend: Backend,
    _guard: Box<dyn std::any::Any + Send>,
}

impl std::ops::Deref for TestBackend {
    type Target = Backend;
    fn deref(&self) -> &Backend {
        &self.backend
    }
}

async fn local_backend() -> TestBackend {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path(), &LocalConfig::default()).unwrap();
    TestBackend { backend: store.backend(), _guard: Box::new(dir) }
}

/// The embedded store behind a store process's protocol: served in this test process on a
/// loopback port, reached through `RemoteStore` exactly as masters and nodes reach it.
async fn remote_backend() -> TestBackend {
    use ampstore_store::remote::{RemoteStore, serve};
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path(), &LocalConfig::default()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(serve(listener, store.backend(), Some("admin-secret".into()), stopped));
    let remote = RemoteStore::new(&addr, Some("admin-secret".into()));
    remote.check().await.unwrap();
    let backend = Backend {
        log: std::sync::Arc::new(remote.clone()),
        meta: std::sync::Arc::new(remote),
        blobs: store.backend().blobs,
    };
    TestBackend { backend, _guard: Box::new((dir, stop)) }
}

#[cfg(feature = "aws")]
pub fn aws_test_endpoint() -> String {
    std::env::var("AMPSTORE_TEST_AWS_ENDPOINT").unwrap_or_else(|_| {
        panic!(
            "AMPSTORE_TEST_AWS_ENDPOINT is not set. The AWS backend tests need a DynamoDB/S3 server: \
             run them through ./scripts/test, which starts moto and sets it"
        )
    })
}

#[cfg(feature = "aws")]
pub fn aws_test_config(endpoint: String) -> ampstore_store::config::AwsConfig {
    let id = rand::random::<u64>();
    ampstore_store::config::AwsConfig {
        endpoint: Some(endpoint),
        region: "us-east-1".into(),
        prefix: format!("t{id:016x}"),
        bucket: format!("t-{id:016x}"),
    }
}

#[cfg(feature = "aws")]
async fn aws_backend() -> TestBackend {
    use ampstore_store::aws::AwsStore;
    let cfg = aws_test_config(aws_test_endpoint());
    AwsStore::init(&cfg).await.unwrap();
    let store = AwsStore::connect(&cfg).await.unwrap();
    TestBackend { backend: store.backend(), _guard: Box::new(()) }
}

macro_rules! conformance_suite {
    ($name:ident, $make:ident) => {
        mod $name {
            use super::*;

            conformance_suite!(@tests $make,
                append_empty_slot_then_taken_slot,
                head_empty_after_appends_after_truncation,
                read_from_a_seq,
                large_entries_read_back_intact,
                append_atomic_all_or_nothing,
                concurrent_appenders_win_each_slot_once,
                meta_conditional_updates,
                meta_concurrent_cas_has_one_winner,
                meta_transactions,
                meta_ordered_query,
                blobs,
                concurrent_blob_puts_have_one_winner,
                oversize_refused,
                meta_own_writes_survive_lost_responses,
            );
        }
    };
    (@tests $make:ident, $($test:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $test() {
                let b = $make().await;
                conformance::$test(&b).await;
            }
        )*
    };
}

conformance_suite!(local, local_backend);

conformance_suite!(remote, remote_backend);

#[cfg(feature = "aws")]
conformance_suite!(aws, aws_backend);

/// The AWS backend checks limits before any request: against an endpoint where nothing
/// listens, over-limit input still gets `TooLarge`, while a valid request gets `Unavailable`.
#[cfg(feature = "aws")]
#[tokio::test]
async fn aws_oversize_refused_without_backend() {
    use ampstore_common::limits::{LOG_ENTRY_BYTES_MAX, META_VALUE_BYTES_MAX};
    use ampstore_common::{RangeId, Seq};
    use ampstore_store::aws::AwsStore;
    use ampstore_store::{EntryKind, Expect, StoreError};

    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let cfg = aws_test_config(endpoint);
    let b = AwsStore::connect(&cfg).await.unwrap().backend();
    let big = conformance::entry(EntryKind::Batch, vec![0; LOG_ENTRY_BYTES_MAX + 1]);
    assert!(matches!(b.log.append(RangeId(1), Seq(1), &big).await, Err(StoreError::TooLarge { .. })));
    let err = b.meta.put("p", b"k", &vec![0; META_VALUE_BYTES_MAX + 1], Expect::Any).await;
    assert!(matches!(err, Err(StoreError::TooLarge { .. })));
    let small = conformance::entry(EntryKind::Batch, vec![0; 10]);
    let err = b.log.append(RangeId(1), Seq(1), &small).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
}
