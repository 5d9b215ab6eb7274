//! The wall clock, in Unix milliseconds: what expiries, remembered writes and task leases are
//! measured against (DESIGN §13: a key expires by its owner's clock).

/// Milliseconds since the Unix epoch; 0 if the clock reads before it.
pub fn unix_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
