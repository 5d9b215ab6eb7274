//! Values: the limit every stored value meets.

use crate::error::Error;
use crate::limits::VALUE_BYTES_MAX;

/// Checks a value against [`VALUE_BYTES_MAX`].
pub fn validate_value(value: &[u8]) -> Result<(), Error> {
    if value.len() > VALUE_BYTES_MAX {
        return Err(Error::too_large("value", value.len(), VALUE_BYTES_MAX));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_limit_boundary() {
        assert!(validate_value(&vec![0u8; VALUE_BYTES_MAX]).is_ok());
        let err = validate_value(&vec![0u8; VALUE_BYTES_MAX + 1]).unwrap_err();
        assert_eq!(err.code(), crate::ErrorCode::TooLarge);
    }
}
