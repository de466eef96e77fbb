//! What a prune may do: grace period, repack threshold, lease lifetime, dry run.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// How long condemned data waits before deletion, and how old a pack must be to
    /// be condemned at all. Must exceed the longest backup run.
    pub grace: Duration,
    /// Repack packs whose live bytes are below this fraction of their size.
    pub repack_below: f64,
    /// How long the GC lease lasts without renewal.
    pub lease_ttl: Duration,
    /// Decide and report, change nothing.
    pub dry_run: bool,
}

impl Default for PruneOptions {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(24 * 3600),
            repack_below: 0.5,
            lease_ttl: Duration::from_secs(15 * 60),
            dry_run: false,
        }
    }
}
