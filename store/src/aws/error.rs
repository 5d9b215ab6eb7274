//! Turning SDK errors into store errors.
//!
//! Both SDKs share one error type (`SdkError` of smithy), so these helpers serve both.

use aws_sdk_dynamodb::error::{BuildError, ProvideErrorMetadata, SdkError};
use std::fmt::Debug;
use std::time::Duration;

use crate::StoreError;

/// A failure that is not one of the conditional outcomes: transient or not, the caller can
/// only retry later. `op` names the call, e.g. "dynamodb PutItem". A missing table or
/// bucket says how to create it (`connect` does not check, so this is where it shows).
pub(super) fn unavailable<E, R>(op: &str, e: &SdkError<E, R>) -> StoreError
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
    R: Debug,
{
    StoreError::Unavailable(format!("{op}: {}", message(e)))
}

/// A one-line message: the service's error code and message, or the chain of causes of a
/// failure to get an answer ("dispatch failure: io error: ... Connection refused").
/// `DisplayErrorContext` would append the `Debug` form of the whole error, raw response
/// included, which is no message for a log line or a client.
fn message<E, R>(e: &SdkError<E, R>) -> String
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
    R: Debug,
{
    if let Some(service) = e.as_service_error() {
        let code = service.code().unwrap_or("unknown error");
        let hint = match code {
            "ResourceNotFoundException" | "NoSuchBucket" => " (run `ampstore init`)",
            _ => "",
        };
        return match service.message() {
            Some(m) => format!("{code}: {m}{hint}"),
            None => format!("{code}{hint}"),
        };
    }
    let mut out = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// The HTTP status of a service's answer, `None` when no answer came (timeout, network).
pub(super) fn http_status<E>(e: &SdkError<E>) -> Option<u16> {
    e.raw_response().map(|r| r.status().as_u16())
}

/// A request builder rejected its input. Every required field is always set, so this
/// reports a bug rather than bad input; it is still an error, never a panic.
pub(super) fn build_err(e: BuildError) -> StoreError {
    StoreError::Invalid(format!("cannot build the AWS request: {e}"))
}

/// Backoff before retry `attempt` (1-based) of our own retry loops (unprocessed batch
/// items, S3 conditional-write conflicts): 50 ms doubling up to 1.6 s.
pub(super) fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(50 << attempt.saturating_sub(1).min(5))
}
