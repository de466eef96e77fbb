//! The file as serde reads it: every value keeps its byte span, so validation can
//! point at the line that is wrong. `deny_unknown_fields` everywhere, because a
//! misspelt `keep_dialy` silently ignored would forget snapshots.

use serde::Deserialize;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) repository: Vec<RawRepository>,
    #[serde(default)]
    pub(super) group: Vec<RawGroup>,
    #[serde(default)]
    pub(super) replication: Vec<Spanned<RawReplication>>,
    pub(super) daemon: Option<RawDaemon>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReplication {
    pub(super) from: Spanned<String>,
    pub(super) to: Spanned<String>,
    pub(super) vms: Option<Vec<Spanned<String>>>,
    pub(super) groups: Option<Vec<Spanned<String>>>,
    pub(super) schedule: Option<Spanned<String>>,
    pub(super) timezone: Option<Spanned<String>>,
    pub(super) after_backup: Option<Spanned<bool>>,
    pub(super) limit_rate: Option<Spanned<String>>,
    pub(super) replication_rpo: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDaemon {
    pub(super) state_dir: Option<Spanned<String>>,
    pub(super) cache_dir: Option<Spanned<String>>,
    pub(super) max_concurrent_jobs: Option<Spanned<i64>>,
    pub(super) metrics_listen: Option<Spanned<String>>,
    pub(super) retries: Option<Spanned<i64>>,
    pub(super) retry_delay: Option<Spanned<String>>,
    pub(super) stop_timeout: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRepository {
    pub(super) name: Spanned<String>,
    pub(super) url: Spanned<String>,
    pub(super) immutability: Option<Spanned<String>>,
    pub(super) password_file: Option<Spanned<String>>,
    pub(super) timezone: Option<Spanned<String>>,
    pub(super) prune_schedule: Option<Spanned<String>>,
    pub(super) standby_dir: Option<Spanned<String>>,
    pub(super) standby_keep: Option<Spanned<i64>>,
    pub(super) standby_schedule: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGroup {
    pub(super) name: Spanned<String>,
    pub(super) repository: Spanned<String>,
    pub(super) schedule: Spanned<String>,
    pub(super) timezone: Spanned<String>,
    pub(super) rpo: Option<Spanned<String>>,
    pub(super) retention: Spanned<RawRetention>,
    pub(super) forget_schedule: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) vm: Vec<Spanned<RawVm>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRetention {
    #[serde(default)]
    pub(super) keep_last: u32,
    #[serde(default)]
    pub(super) keep_hourly: u32,
    #[serde(default)]
    pub(super) keep_daily: u32,
    #[serde(default)]
    pub(super) keep_weekly: u32,
    #[serde(default)]
    pub(super) keep_monthly: u32,
    #[serde(default)]
    pub(super) keep_yearly: u32,
    pub(super) keep_within: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawVm {
    pub(super) name: Spanned<String>,
    #[serde(default)]
    pub(super) disk: Vec<Spanned<RawDisk>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDisk {
    pub(super) name: Option<Spanned<String>>,
    pub(super) image: Option<Spanned<String>>,
    pub(super) qmp: Option<Spanned<String>>,
    pub(super) drive: Option<Spanned<String>>,
    pub(super) nbd: Option<Spanned<String>>,
}
