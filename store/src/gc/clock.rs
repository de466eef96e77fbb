//! Unix-second timestamps, the unit of prune plans' deadlines and of pack ages.

use std::time::{SystemTime, UNIX_EPOCH};

/// The current time in unix seconds, as plan deadlines are written.
pub fn unix_time_now() -> u64 {
    unix_now()
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub(crate) fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
