//! When replication runs happen: one run per pair at a time, and a trigger while a
//! run is in progress is neither lost nor stacked — it makes exactly one more run
//! after the current one, because one run copies everything new however many backups
//! committed meanwhile.
//!
//! The run happens inside the task that triggered it (a backup's, or a timer's), so
//! the daemon's shutdown waits for it like for any job. What a run is (recording it,
//! the `replicate` child) is the caller's closure.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;

/// Replications (by index) with a run in progress, and whether another was asked for.
#[derive(Default)]
pub struct Pairs(Mutex<HashMap<usize, bool>>);

impl Pairs {
    /// Runs `run` for pair `ri` now and again while triggers arrived during the last
    /// run; returns at once if another task is running the pair (which then runs once
    /// more). `go_on` is checked before each run: a stopping daemon starts none.
    pub async fn run_coalesced<F, Fut>(&self, ri: usize, go_on: impl Fn() -> bool, run: F)
    where
        F: Fn() -> Fut,
        Fut: Future<Output = ()>,
    {
        {
            let mut pairs = self.0.lock().expect("replication set poisoned");
            if let Some(again) = pairs.get_mut(&ri) {
                *again = true;
                return;
            }
            pairs.insert(ri, false);
        }
        loop {
            if go_on() {
                run().await;
            }
            let mut pairs = self.0.lock().expect("replication set poisoned");
            let again = pairs.get_mut(&ri).is_some_and(std::mem::take);
            if !again || !go_on() {
                pairs.remove(&ri);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::sync::Notify;

    /// Three triggers during a run make one more run, not three; another pair runs
    /// on its own meanwhile; a trigger after the runs starts a new one.
    #[tokio::test]
    async fn triggers_during_a_run_make_exactly_one_more() {
        let pairs = Arc::new(Pairs::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(Notify::new());
        let first = {
            let (pairs, runs, gate) = (pairs.clone(), runs.clone(), gate.clone());
            tokio::spawn(async move {
                pairs
                    .run_coalesced(
                        0,
                        || true,
                        || {
                            let (runs, gate) = (runs.clone(), gate.clone());
                            async move {
                                runs.fetch_add(1, Ordering::SeqCst);
                                gate.notified().await;
                            }
                        },
                    )
                    .await
            })
        };
        while runs.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        for _ in 0..3 {
            pairs
                .run_coalesced(0, || true, || async { panic!("not here") })
                .await;
        }
        let other = AtomicUsize::new(0);
        pairs
            .run_coalesced(
                1,
                || true,
                || async {
                    other.fetch_add(1, Ordering::SeqCst);
                },
            )
            .await;
        assert_eq!(other.load(Ordering::SeqCst), 1);
        gate.notify_one(); // first run ends; the one more starts
        while runs.load(Ordering::SeqCst) < 2 {
            tokio::task::yield_now().await;
        }
        gate.notify_one();
        first.await.unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        let again = AtomicUsize::new(0);
        pairs
            .run_coalesced(
                0,
                || true,
                || async {
                    again.fetch_add(1, Ordering::SeqCst);
                },
            )
            .await;
        assert_eq!(again.load(Ordering::SeqCst), 1);
        // Stopping: nothing starts.
        pairs
            .run_coalesced(0, || false, || async { panic!("stopping") })
            .await;
    }
}
