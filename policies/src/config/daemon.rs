//! The optional `[daemon]` table: where the daemon keeps its state, how many jobs it
//! runs at once, how it retries, where it serves metrics and how long it waits for
//! running jobs when asked to stop.
//!
//! ```toml
//! [daemon]
//! state_dir = "/var/lib/lifeboat"
//! max_concurrent_jobs = 2
//! metrics_listen = "127.0.0.1:9188"   # "" turns the metrics endpoint off
//! retries = 2                         # extra attempts after a transient failure
//! retry_delay = "1m"                  # doubles after every attempt
//! stop_timeout = "10m"                # then running jobs are interrupted
//! ```
//!
//! Command-line flags and environment variables of `lifeboat daemon` override these.

use std::net::SocketAddr;
use std::path::PathBuf;

use toml::Spanned;

use super::raw::RawDaemon;
use super::validator::Validator;

/// More attempts than this only delays the error report: a transient failure that
/// outlasts ten backoffs is an outage, and the next scheduled run will try again.
const MAX_RETRIES: i64 = 10;

/// Checked `[daemon]` settings, with defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonSettings {
    pub state_dir: PathBuf,
    /// Catalog cache of the jobs; the CLI's default cache when unset.
    pub cache_dir: Option<PathBuf>,
    pub max_concurrent_jobs: usize,
    /// `None` when turned off.
    pub metrics_listen: Option<SocketAddr>,
    /// Extra attempts after a failure the job reports as transient.
    pub retries: u32,
    /// Seconds before the first retry; doubles after each.
    pub retry_delay: u64,
    /// Seconds a stopping daemon waits for running jobs before interrupting them.
    pub stop_timeout: u64,
}

pub const DEFAULT_STATE_DIR: &str = "/var/lib/lifeboat";
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9188";

impl Default for DaemonSettings {
    fn default() -> Self {
        Self {
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            cache_dir: None,
            max_concurrent_jobs: 2,
            metrics_listen: DEFAULT_METRICS_LISTEN.parse().ok(),
            retries: 2,
            retry_delay: 60,
            stop_timeout: 600,
        }
    }
}

/// Parses a metrics listen address; empty means off.
pub fn parse_listen(text: &str) -> Result<Option<SocketAddr>, String> {
    let t = text.trim();
    if t.is_empty() {
        return Ok(None);
    }
    t.parse().map(Some).map_err(|_| {
        format!(
            "{text:?} is not an address to listen on; write IP:PORT, e.g. \"127.0.0.1:9188\" \
             or \"[::]:9188\", or \"\" to turn metrics off"
        )
    })
}

impl Validator<'_> {
    pub(super) fn daemon(&mut self, raw: &RawDaemon) -> DaemonSettings {
        let mut d = DaemonSettings::default();
        let ctx = "[daemon]: ";
        if let Some(p) = &raw.state_dir
            && let Some(p) = self.absolute_path(p, "daemon.state_dir", ctx)
        {
            d.state_dir = p;
        }
        if let Some(p) = &raw.cache_dir {
            d.cache_dir = self.absolute_path(p, "daemon.cache_dir", ctx);
        }
        if let Some(n) = self.count(
            &raw.max_concurrent_jobs,
            1,
            64,
            "daemon.max_concurrent_jobs",
        ) {
            d.max_concurrent_jobs = n as usize;
        }
        if let Some(n) = self.count(&raw.retries, 0, MAX_RETRIES, "daemon.retries") {
            d.retries = n as u32;
        }
        if let Some(listen) = &raw.metrics_listen {
            match parse_listen(listen.get_ref()) {
                Ok(addr) => d.metrics_listen = addr,
                Err(e) => self.problem(
                    listen.span().start,
                    "daemon.metrics_listen",
                    format!("{ctx}{e}"),
                ),
            }
        }
        if let Some(s) = self.duration(&raw.retry_delay, "daemon.retry_delay", ctx) {
            d.retry_delay = s;
        }
        if let Some(s) = self.duration(&raw.stop_timeout, "daemon.stop_timeout", ctx) {
            d.stop_timeout = s;
        }
        d
    }

    fn count(&mut self, n: &Option<Spanned<i64>>, min: i64, max: i64, key: &str) -> Option<i64> {
        let n = n.as_ref()?;
        let v = *n.get_ref();
        if (min..=max).contains(&v) {
            Some(v)
        } else {
            self.problem(
                n.span().start,
                key,
                format!("[daemon]: {v} is out of range; write a number from {min} to {max}"),
            );
            None
        }
    }
}
