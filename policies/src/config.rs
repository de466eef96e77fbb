//! The configuration file (`/etc/lifeboat/lifeboat.toml` by default): repositories,
//! protection groups, their schedules, retention, RPO and the VMs and disks they
//! protect.
//!
//! ```toml
//! [[repository]]
//! name = "onsite"
//! url = "s3://backups/lifeboat?endpoint=http://minio:9000"
//! immutability = "30d"
//! password_file = "/etc/lifeboat/onsite.pass"
//! prune_schedule = "0 12 * * 0"      # optional; in `timezone` (default UTC)
//! # standby_dir = "/var/lib/lifeboat/standby"   # optional warm standby disks (see
//! # standby_schedule = "*/15 * * * *"           # `standby`): on the secondary's daemon
//!
//! [[group]]
//! name = "prod"
//! repository = "onsite"
//! schedule = "0 1 * * *"
//! timezone = "Europe/Berlin"
//! rpo = "26h"                       # nightly plus the backup time, with margin
//! retention = { keep_daily = 14, keep_weekly = 8, keep_monthly = 12, keep_yearly = 3 }
//! forget_schedule = "30 6 * * *"     # optional; the backup schedule by default
//!
//! [[group.vm]]
//! name = "web01"
//! # Hardware, all optional (see [`VmHardware`]): how a drill boots a VM
//! # backed up from image files.
//! firmware = "uefi"                 # "bios" (default) or "uefi"
//! cpus = 2                          # default 1
//! memory = "2GiB"                   # B, KiB, MiB, GiB, TiB; default 1GiB, at least 16MiB
//! machine = "q35"                   # default: the hypervisor's
//! libvirt_xml = "/etc/libvirt/qemu/web01.xml"   # where its domain definition is kept
//! [[group.vm.disk]]                 # disks boot in file order
//! image = "/var/lib/libvirt/images/web01.qcow2"
//! bus = "virtio"                    # "virtio" (default), "ide", "sata" or "scsi"
//! [[group.vm.disk]]
//! name = "data"
//! qmp = "/run/qemu/web01.qmp"
//! drive = "drive-virtio1"
//! [[group.vm.nic]]
//! mac = "52:54:00:12:34:56"         # optional
//! network = "prod-lan"              # required: the production network
//! model = "virtio-net-pci"          # default
//!
//! [[repository]]
//! name = "dr-site"                  # made with `lifeboat init --replica-of <onsite url>`
//! url = "s3://replica/lifeboat?endpoint=https://rgw.dr.example:443"
//! password_file = "/etc/lifeboat/dr-site.pass"
//!
//! [[replication]]                   # see [`replication`] for every key
//! from = "onsite"
//! to = "dr-site"
//! groups = ["prod"]                 # default: every VM backing up into `from`
//! after_backup = true               # and/or schedule = "0 */6 * * *" (+ timezone)
//! limit_rate = "50MiB/s"
//! replication_rpo = "28h"           # newest point on `to` at most this old
//!
//! [[network]]                       # the secondary cluster's networks (see [`Network`])
//! name = "dr-lan"
//! kind = "bridge"                   # "bridge" (+ bridge), "tap" (+ tap = "tap0"), "user" (NAT)
//! bridge = "br-dr"
//! [[network]]
//! name = "drill-isolated"
//! kind = "user"
//! isolated = true                   # no route out; required for a plan's test network
//!
//! [[plan]]                          # a recovery plan (see [`plan`] for every key)
//! name = "erp"
//! repository = "dr-site"            # the (replica) repository recovered from
//! standby = true                    # boot from its warm standby disks when present
//! rto = "15m"                       # target: command to last VM healthy
//! drill_schedule = "0 2 1 */3 *"    # optional, in `timezone` (default UTC)
//! timezone = "Europe/Berlin"
//! overlay_dir = "/var/lib/lifeboat/overlays" # default <state_dir>/overlays
//! pre_script = "/etc/lifeboat/erp-pre.sh"    # before the first boot group
//! post_script = "/etc/lifeboat/erp-post.sh"  # after the last group is healthy
//! [plan.network_map]                # production network -> failover network
//! "prod-lan" = "dr-lan"
//! [plan.test_network_map]           # production network -> drill network; isolated only
//! "prod-lan" = "drill-isolated"
//! [[plan.boot_group]]               # in order: the next starts once all of these are healthy
//! vms = ["db01"]
//! [[plan.boot_group]]
//! vms = ["app01", "web01"]
//! [[plan.vm]]                       # optional per-VM overrides and health check
//! name = "db01"
//! cpus = 4
//! memory = "8GiB"
//! timeout = "5m"                    # boot timeout (default 10m)
//! health = { console = "login:", tcp = 5432, guest_agent = false }
//! ```
//!
//! A plan's VMs need not be in a `[[group]]` of the same file: the secondary site's
//! configuration may hold only repositories, networks and plans.
//!
//! An optional `[daemon]` table holds the daemon's own settings (see [`DaemonSettings`]), an
//! optional `[metadata_backup]` its cloud-recovery backups (see [`MetadataBackup`]).
//!
//! Parsing is two steps: serde reads the text into `Raw*` types that keep every
//! value's byte span, then validation turns them into the checked types below. Every
//! problem (all of them, not just the first) names file, line, column and key, and
//! says what to write instead: an operator fixing a config at 01:00 should not need
//! a second attempt to find the second mistake.

use std::collections::HashMap;
use std::path::PathBuf;

pub use daemon::{DEFAULT_METRICS_LISTEN, DEFAULT_STATE_DIR, DaemonSettings, parse_listen};
pub use hardware::{DiskBus, Firmware, Nic, VmHardware, parse_mac, parse_memory};
pub use health::{DEFAULT_BOOT_TIMEOUT, HealthSpec, PlanVm};
pub use metadata_backup::{MetadataBackup, PointLock};
pub use network::{Network, NetworkKind};
pub use plan::Plan;
pub use replication::{ReplicatedVm, Replication, parse_rate};
pub use validator::{ConfigError, Problem};

use chrono_tz::Tz;
use toml::Spanned;

use crate::retention::Retention;
use crate::schedule::Schedule;

/// A checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub repositories: Vec<RepositoryConfig>,
    pub groups: Vec<Group>,
    /// `[[replication]]` tables, in file order.
    pub replications: Vec<Replication>,
    /// The `[daemon]` table; defaults when absent.
    pub daemon: DaemonSettings,
    /// `[[network]]` tables: networks of the secondary cluster, in file order.
    pub networks: Vec<Network>,
    /// `[[plan]]` tables: recovery plans, in file order.
    pub plans: Vec<Plan>,
    /// The `[metadata_backup]` table, if the daemon backs up its own metadata.
    pub metadata_backup: Option<MetadataBackup>,
}

impl Config {
    pub fn repository(&self, name: &str) -> Option<&RepositoryConfig> {
        self.repositories.iter().find(|r| r.name == name)
    }

    pub fn group(&self, name: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.name == name)
    }

    pub fn plan(&self, name: &str) -> Option<&Plan> {
        self.plans.iter().find(|p| p.name == name)
    }

    pub fn network(&self, name: &str) -> Option<&Network> {
        self.networks.iter().find(|n| n.name == name)
    }

    /// The replications that copy VM `vm` of group `group`.
    pub fn replications_of<'a>(
        &'a self,
        group: &'a str,
        vm: &'a str,
    ) -> impl Iterator<Item = &'a Replication> + 'a {
        self.replications
            .iter()
            .filter(move |r| r.covers(group, vm))
    }
}

#[derive(Debug, Clone)]
pub struct RepositoryConfig {
    pub name: String,
    pub url: String,
    /// Seconds every object stays locked (S3 Object Lock), if set.
    pub immutability: Option<u64>,
    /// File holding the passphrase; without it, jobs use the daemon's own
    /// LIFEBOAT_PASSWORD_FILE / LIFEBOAT_PASSWORD.
    pub password_file: Option<PathBuf>,
    /// When the daemon runs `lifeboat prune` on this repository (in the repository's
    /// `timezone`, UTC by default); never if unset.
    pub prune_schedule: Option<Schedule>,
    /// Warm standby disks the daemon keeps from this repository, if configured.
    pub standby: Option<standby::Standby>,
}

/// A protection group: VMs backed up together on one schedule into one repository.
#[derive(Debug, Clone)]
pub struct Group {
    pub name: String,
    /// Name of a [`RepositoryConfig`] (checked to exist).
    pub repository: String,
    pub schedule: Schedule,
    pub timezone: Tz,
    /// Seconds; the oldest a disk's last good backup may be before it is at risk.
    pub rpo: Option<u64>,
    pub retention: Retention,
    /// When the daemon applies `retention` (forget); the backup schedule if unset.
    pub forget_schedule: Schedule,
    pub vms: Vec<Vm>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vm {
    pub name: String,
    /// In boot order (file order).
    pub disks: Vec<Disk>,
    /// How to boot it (defaults when the table has no hardware keys).
    pub hardware: VmHardware,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    /// As recorded in snapshots: given, or the image's file stem, or the drive name.
    pub name: String,
    pub source: DiskSource,
    pub bus: DiskBus,
}

/// Where a disk is read from: exactly one per disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskSource {
    /// A disk image or block device.
    Image(PathBuf),
    /// A drive of a running QEMU VM, through its QMP socket.
    Qmp { socket: PathBuf, drive: String },
    /// An NBD export (`nbd://…` or `nbd+unix://…`).
    Nbd(String),
}

mod daemon;
mod disks;
pub mod hardware;
mod health;
pub mod metadata_backup;
mod network;
pub mod plan;
mod raw;
pub mod replication;
pub mod standby;
mod validator;

use plan::NetworkView;
use raw::{RawConfig, RawGroup, RawRepository, RawRetention};
use replication::{GroupView, RepoView};
use validator::Validator;

/// Parses and validates a configuration. `file_name` is only used in messages.
pub fn parse_config(text: &str, file_name: &str) -> Result<Config, ConfigError> {
    let mut v = Validator::new(text);
    let raw: RawConfig = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            let key = key_at(text, span.clone());
            let message = e.message().trim_end().replace('\n', " ");
            v.problem(span.start, key, message);
            return Err(v.into_error(file_name));
        }
    };
    let config = v.check(raw);
    if v.has_problems() {
        Err(v.into_error(file_name))
    } else {
        Ok(config)
    }
}

/// The key a syntax or type error is about: for a bad value the `key =` before it on
/// its line, for an unknown key the spanned text itself; empty if neither.
fn key_at(text: &str, span: std::ops::Range<usize>) -> &str {
    let start = span.start.min(text.len());
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    if let Some((key, _)) = text[line_start..start].split_once('=')
        && is_bare_key(key.trim())
    {
        return key.trim();
    }
    let at = text.get(span).unwrap_or("").trim();
    if is_bare_key(at) { at } else { "" }
}

fn is_bare_key(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl Validator<'_> {
    fn check(&mut self, raw: RawConfig) -> Config {
        let repositories = self.repositories(&raw.repository);
        let mut group_names = HashMap::new();
        let mut groups = Vec::new();
        for g in raw.group {
            self.name(&g.name, "group.name", "group", &mut group_names);
            if let Some(group) = self.group(g, &repositories) {
                groups.push(group);
            }
        }
        let repo_views: Vec<RepoView> = repositories
            .iter()
            .map(|r| RepoView {
                name: &r.name,
                url: &r.url,
            })
            .collect();
        let group_views: Vec<GroupView> = groups
            .iter()
            .map(|g| GroupView {
                name: &g.name,
                repository: &g.repository,
                vms: g.vms.iter().map(|v| v.name.as_str()).collect(),
            })
            .collect();
        let replications = self.replications(&raw.replication, &repo_views, &group_views);
        let daemon = match &raw.daemon {
            Some(d) => self.daemon(d),
            None => DaemonSettings::default(),
        };
        let networks = self.networks(&raw.network);
        // Every named network, valid or not: a mistake in a [[network]] is reported
        // there, not again in each plan mapping onto it.
        let network_views: Vec<NetworkView> = raw
            .network
            .iter()
            .map(|n| NetworkView {
                name: n.get_ref().name.get_ref(),
                isolated: n.get_ref().isolated.as_ref().is_some_and(|i| *i.get_ref()),
            })
            .collect();
        let repo_names: Vec<&str> = repositories.iter().map(|r| r.name.as_str()).collect();
        let plans = self.plans(&raw.plan, &repo_names, &network_views, &daemon.state_dir);
        let metadata_backup = raw
            .metadata_backup
            .as_ref()
            .and_then(|m| self.metadata_backup(m));
        Config {
            repositories,
            groups,
            replications,
            daemon,
            networks,
            plans,
            metadata_backup,
        }
    }

    fn repositories(&mut self, raw: &[RawRepository]) -> Vec<RepositoryConfig> {
        let mut names = HashMap::new();
        let mut repositories = Vec::new();
        for r in raw {
            self.name(&r.name, "repository.name", "repository", &mut names);
            if r.url.get_ref().trim().is_empty() {
                self.problem(
                    r.url.span().start,
                    "repository.url",
                    "empty url; write a path, file:///path or s3://bucket/prefix",
                );
            }
            let ctx = format!("repository {:?}: ", r.name.get_ref());
            let immutability = self.duration(&r.immutability, "repository.immutability", &ctx);
            let timezone = match &r.timezone {
                None => Some(Tz::UTC),
                Some(tz) => self.timezone(tz, "repository.timezone", &ctx),
            };
            let prune_schedule = r
                .prune_schedule
                .as_ref()
                .and_then(|expr| self.schedule(expr, timezone, "repository.prune_schedule", &ctx));
            let password_file = r
                .password_file
                .as_ref()
                .and_then(|f| self.absolute_path(f, "repository.password_file", &ctx));
            let standby = self.standby(r, timezone, &ctx);
            repositories.push(RepositoryConfig {
                name: r.name.get_ref().clone(),
                url: r.url.get_ref().clone(),
                immutability,
                password_file,
                prune_schedule,
                standby,
            });
        }
        repositories
    }

    fn group(&mut self, g: RawGroup, repositories: &[RepositoryConfig]) -> Option<Group> {
        let ctx = format!("group {:?}: ", g.name.get_ref());
        if !repositories
            .iter()
            .any(|r| r.name == *g.repository.get_ref())
        {
            let known: std::collections::BTreeSet<String> = repositories
                .iter()
                .map(|r| format!("{:?}", r.name))
                .collect();
            let known: Vec<String> = known.into_iter().collect();
            let hint = if known.is_empty() {
                "add a [[repository]] table with that name".to_string()
            } else {
                format!(
                    "use one of {}, or add a [[repository]] with that name",
                    known.join(", ")
                )
            };
            self.problem(
                g.repository.span().start,
                "group.repository",
                format!(
                    "{ctx}unknown repository {:?}; {hint}",
                    g.repository.get_ref()
                ),
            );
        }
        let timezone = self.timezone(&g.timezone, "group.timezone", &ctx);
        let schedule = self.schedule(&g.schedule, timezone, "group.schedule", &ctx);
        let forget_schedule = match &g.forget_schedule {
            Some(expr) => self.schedule(expr, timezone, "group.forget_schedule", &ctx),
            None => schedule.clone(),
        };
        let rpo = self.duration(&g.rpo, "group.rpo", &ctx);
        let retention = self.retention(&g.retention, &ctx);
        let mut vm_names = HashMap::new();
        let mut vms = Vec::new();
        for vm in &g.vm {
            self.name(&vm.get_ref().name, "group.vm.name", "VM", &mut vm_names);
            vms.push(self.vm(vm, &ctx));
        }
        Some(Group {
            name: g.name.into_inner(),
            repository: g.repository.into_inner(),
            schedule: schedule?,
            timezone: timezone?,
            rpo,
            retention: retention?,
            forget_schedule: forget_schedule?,
            vms,
        })
    }

    fn retention(&mut self, r: &Spanned<RawRetention>, ctx: &str) -> Option<Retention> {
        let raw = r.get_ref();
        let keep_within = self.duration(&raw.keep_within, "group.retention.keep_within", ctx);
        let retention = Retention {
            keep_last: raw.keep_last,
            keep_hourly: raw.keep_hourly,
            keep_daily: raw.keep_daily,
            keep_weekly: raw.keep_weekly,
            keep_monthly: raw.keep_monthly,
            keep_yearly: raw.keep_yearly,
            keep_within,
        };
        if raw.keep_within.is_none() && retention.keeps_nothing() {
            self.problem(
                r.span().start,
                "group.retention",
                format!(
                    "{ctx}this retention keeps nothing, so every snapshot would be forgotten; \
                     set at least one of keep_last, keep_hourly, keep_daily, keep_weekly, \
                     keep_monthly, keep_yearly or keep_within"
                ),
            );
            return None;
        }
        Some(retention)
    }
}
