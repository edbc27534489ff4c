//! Wall-clock time as the index records it: nanoseconds since the Unix
//! epoch (receive times, commitment deadlines and retry times).

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in nanoseconds since the Unix epoch: 0 for a clock set before
/// 1970, `u64::MAX` after the year 2554.
pub(crate) fn unix_now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
