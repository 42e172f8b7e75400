//! `backoff`: jittered exponential backoff, bounded by `LAB_RETRY_DEADLINE`:
//! what a careful application does.

use super::Failure;
use rand::Rng;
use std::time::Duration;

pub fn pause(f: &Failure, deadline: Duration) -> Option<Duration> {
    let left = deadline.saturating_sub(f.spent);
    if left.is_zero() {
        return None;
    }
    Some(backoff_pause(f.attempt).min(left))
}

/// 10 ms doubling to 1 s, each pause drawn from [d/2, d).
pub fn backoff_pause(attempt: u32) -> Duration {
    let exp = attempt.saturating_sub(1).min(7);
    let d = Duration::from_millis(10 << exp).min(Duration::from_secs(1));
    let half = d / 2;
    let jitter = rand::rng().random_range(0..=half.as_micros() as u64);
    half + Duration::from_micros(jitter)
}
