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
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRepository {
    pub(super) name: Spanned<String>,
    pub(super) url: Spanned<String>,
    pub(super) immutability: Option<Spanned<String>>,
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
