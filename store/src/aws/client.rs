//! Building the DynamoDB and S3 clients from the configuration.

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_dynamodb::config::Credentials;
use std::time::Duration;

use crate::config::AwsConfig;

/// Time to open a connection: an endpoint that does not answer fails fast.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Whole-operation bound, retries included. Every DynamoDB call and every S3 call except
/// the upload of a blob is small (blobs get [`BLOB_UPLOAD_TIMEOUT`]).
const OPERATION_TIMEOUT: Duration = Duration::from_secs(10);
/// Whole-operation bound of `PutObject`: a blob may be `BLOB_BYTES_MAX` (512 MiB).
/// Downloads need no such bound: the operation ends with the response headers and the SDK's
/// stalled-stream protection watches the body.
pub(super) const BLOB_UPLOAD_TIMEOUT: Duration = Duration::from_secs(600);

pub(super) struct Clients {
    pub ddb: aws_sdk_dynamodb::Client,
    pub s3: aws_sdk_s3::Client,
}

impl Clients {
    /// Both clients share one SDK configuration. With an endpoint (a local test server) the
    /// credentials are static test ones unless `AWS_ACCESS_KEY_ID` is set, and S3 uses
    /// path-style addressing (`http://host/bucket/key`, no bucket DNS names). Without one,
    /// the standard credential chain and AWS endpoints. The SDK's standard retry stays on.
    pub async fn new(cfg: &AwsConfig) -> Clients {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(cfg.region.clone()))
            .timeout_config(timeouts(OPERATION_TIMEOUT));
        if let Some(endpoint) = &cfg.endpoint {
            loader = loader.endpoint_url(endpoint);
            if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
                loader = loader.credentials_provider(Credentials::new("test", "test", None, None, "static"));
            }
        }
        let sdk = loader.load().await;
        let s3 = aws_sdk_s3::config::Builder::from(&sdk).force_path_style(cfg.endpoint.is_some()).build();
        Clients { ddb: aws_sdk_dynamodb::Client::new(&sdk), s3: aws_sdk_s3::Client::from_conf(s3) }
    }
}

/// The connect timeout plus the given whole-operation timeout.
pub(super) fn timeouts(operation: Duration) -> TimeoutConfig {
    TimeoutConfig::builder().connect_timeout(CONNECT_TIMEOUT).operation_timeout(operation).build()
}
