//! `--limit-rate`: an average byte rate on what is sent to the destination.
//!
//! A virtual clock: each send is scheduled after the previous one's share of the
//! budget. Bytes are counted as blobs enter a pack, so packs (16 MiB) still leave in
//! bursts, but the average over a pack or more is the limit — which is what a WAN
//! link's other users feel.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// A bytes-per-second limit shared by everything one replication sends.
#[derive(Debug)]
pub struct RateLimit {
    bytes_per_sec: f64,
    next_free: Mutex<Option<Instant>>,
}

impl RateLimit {
    pub fn new(bytes_per_sec: u64) -> Self {
        Self {
            bytes_per_sec: bytes_per_sec.max(1) as f64,
            next_free: Mutex::new(None),
        }
    }

    /// Waits until `bytes` more may be sent.
    pub async fn take(&self, bytes: u64) {
        let start = {
            let mut next = self.next_free.lock().expect("rate limit clock poisoned");
            let now = Instant::now();
            let start = next.map_or(now, |n| n.max(now));
            *next = Some(start + Duration::from_secs_f64(bytes as f64 / self.bytes_per_sec));
            start
        };
        tokio::time::sleep_until(start).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn sends_are_spread_to_the_limit() {
        let limit = RateLimit::new(1000);
        let t0 = Instant::now();
        for _ in 0..5 {
            limit.take(500).await;
        }
        // Five sends of 500 bytes at 1000 B/s: the fifth may start after 2 s.
        assert_eq!(Instant::now() - t0, Duration::from_secs(2));
    }
}
