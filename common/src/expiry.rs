//! Time to live: the bounds on a TTL. A key's expiry is absolute (Unix ms by its owner's
//! clock, DESIGN §13); the TTL a caller gives is checked here before anything is written.

use crate::error::Error;
use crate::limits::TTL_MS_MAX;

/// A TTL must be 1 ms to [`TTL_MS_MAX`].
pub fn validate_ttl_ms(ttl_ms: u64) -> Result<(), Error> {
    if ttl_ms == 0 {
        return Err(Error::invalid("a TTL must be at least 1 ms (0 would expire the key at once)"));
    }
    if ttl_ms > TTL_MS_MAX {
        return Err(Error::invalid(format!("a TTL of {ttl_ms} ms is over the limit of {TTL_MS_MAX} ms (100 years)")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ttl_is_bounded_at_both_ends() {
        assert!(validate_ttl_ms(0).is_err());
        assert!(validate_ttl_ms(1).is_ok());
        assert!(validate_ttl_ms(TTL_MS_MAX).is_ok());
        assert!(validate_ttl_ms(TTL_MS_MAX + 1).is_err());
    }
}
