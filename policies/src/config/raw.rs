//! The file as serde reads it: every value keeps its byte span, so validation can
//! point at the line that is wrong. `deny_unknown_fields` everywhere, because a
//! misspelt `keep_dialy` silently ignored would forget snapshots.

use std::collections::BTreeMap;

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
    #[serde(default)]
    pub(super) network: Vec<Spanned<RawNetwork>>,
    #[serde(default)]
    pub(super) plan: Vec<Spanned<RawPlan>>,
    pub(super) metadata_backup: Option<RawMetadataBackup>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetadataBackup {
    pub(super) recipients: Spanned<Vec<Spanned<String>>>,
    pub(super) targets: Spanned<Vec<Spanned<String>>>,
    pub(super) schedule: Option<Spanned<String>>,
    pub(super) timezone: Option<Spanned<String>>,
    pub(super) keep_within: Option<Spanned<String>>,
    pub(super) keep_last: Option<Spanned<i64>>,
    pub(super) rpo: Option<Spanned<String>>,
    pub(super) lock: Option<Spanned<String>>,
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
    pub(super) firmware: Option<Spanned<String>>,
    pub(super) cpus: Option<Spanned<i64>>,
    pub(super) memory: Option<Spanned<String>>,
    pub(super) machine: Option<Spanned<String>>,
    pub(super) libvirt_xml: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) nic: Vec<Spanned<RawNic>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNic {
    pub(super) mac: Option<Spanned<String>>,
    pub(super) network: Spanned<String>,
    pub(super) model: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDisk {
    pub(super) name: Option<Spanned<String>>,
    pub(super) image: Option<Spanned<String>>,
    pub(super) qmp: Option<Spanned<String>>,
    pub(super) drive: Option<Spanned<String>>,
    pub(super) nbd: Option<Spanned<String>>,
    pub(super) bus: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNetwork {
    pub(super) name: Spanned<String>,
    pub(super) kind: Spanned<String>,
    pub(super) bridge: Option<Spanned<String>>,
    pub(super) tap: Option<Spanned<String>>,
    pub(super) isolated: Option<Spanned<bool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPlan {
    pub(super) name: Spanned<String>,
    pub(super) repository: Spanned<String>,
    pub(super) standby: Option<Spanned<bool>>,
    pub(super) rto: Spanned<String>,
    pub(super) drill_schedule: Option<Spanned<String>>,
    pub(super) timezone: Option<Spanned<String>>,
    pub(super) overlay_dir: Option<Spanned<String>>,
    pub(super) pre_script: Option<Spanned<String>>,
    pub(super) post_script: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) network_map: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    pub(super) test_network_map: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    pub(super) boot_group: Vec<Spanned<RawBootGroup>>,
    #[serde(default)]
    pub(super) vm: Vec<Spanned<RawPlanVm>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBootGroup {
    pub(super) vms: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPlanVm {
    pub(super) name: Spanned<String>,
    pub(super) cpus: Option<Spanned<i64>>,
    pub(super) memory: Option<Spanned<String>>,
    pub(super) timeout: Option<Spanned<String>>,
    pub(super) health: Option<RawHealth>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHealth {
    pub(super) console: Option<Spanned<String>>,
    pub(super) tcp: Option<Spanned<i64>>,
    #[serde(default)]
    pub(super) guest_agent: bool,
}
