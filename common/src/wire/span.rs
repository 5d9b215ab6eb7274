//! The check of a key span `[start, end)`, shared by the requests that carry one: data's
//! `DeleteRange` and `Scan`, routing's `LocateRange`.

use crate::error::Error;
use crate::key::Key;

/// Checks the bounds of `[start, end)` (`end = None`: no upper bound).
pub fn validate_span(start: &Key, end: Option<&Key>) -> Result<(), Error> {
    Key::validate_bound(start.as_bytes())?;
    if let Some(end) = end {
        Key::validate_bound(end.as_bytes())?;
        if end <= start {
            return Err(Error::invalid(format!("range end {end} must be greater than start {start}")));
        }
    }
    Ok(())
}
