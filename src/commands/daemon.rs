//! `lifeboat daemon`: combines flags, environment and the configuration's `[daemon]`
//! table into the daemon's settings and runs it (`daemon/`).

use std::time::Duration;

use anyhow::{Context, Result};
use lifeboat_policies::Config;

use crate::args::{DaemonArgs, GlobalArgs};
use crate::config_file;
use crate::daemon::{self, Settings};

pub async fn run(g: &GlobalArgs, a: DaemonArgs) -> Result<()> {
    // Absolute, so the `forget --config` of a job finds it whatever its directory.
    let config_path = std::path::absolute(&a.config)
        .with_context(|| format!("resolving the configuration path {}", a.config.display()))?;
    let config = config_file::load(&config_path)?;
    let settings = settings(g, &a, &config);
    daemon::run(config, config_path, settings).await
}

/// Flags (and their environment variables) win over the `[daemon]` table.
fn settings(g: &GlobalArgs, a: &DaemonArgs, config: &Config) -> Settings {
    let d = &config.daemon;
    Settings {
        state_dir: a.state_dir.clone().unwrap_or_else(|| d.state_dir.clone()),
        cache_dir: g.cache_dir.clone().or_else(|| d.cache_dir.clone()),
        jobs: a.jobs.map_or(d.max_concurrent_jobs, usize::from),
        metrics_listen: a.metrics_listen.map_or(d.metrics_listen, |l| l.0),
        retries: d.retries,
        retry_delay: Duration::from_secs(a.retry_delay.unwrap_or(d.retry_delay)),
        stop_timeout: Duration::from_secs(a.stop_timeout.unwrap_or(d.stop_timeout)),
    }
}
