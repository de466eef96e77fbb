//! What each kind of job runs: the child's command line (`lifeboat backup …`,
//! `forget --group …`, `prune`, `replicate --from … --to …`, `standby sync`, `drill`,
//! `metadata backup`) and the key that keeps
//! two of the same (a disk's backups, a group's forgets, a repository's prunes, a
//! pair's replications) from running at once.

use std::ffi::OsString;
use std::path::PathBuf;

use lifeboat_policies::Config;
use lifeboat_policies::config::{DiskSource, Plan, Replication, RepositoryConfig};

use super::definitions::definition_arg;
use super::state::JobKey;

/// The jobs-table kind of the daemon's metadata backups.
pub const METADATA_JOB: &str = "metadata";

/// What a job is for, what it must not run beside, and its child's arguments.
pub struct JobCommand {
    pub key: JobKey,
    /// At most one queued-or-running job per exclusive key (a disk, a group's
    /// forget, a repository's prune).
    pub exclusive: String,
    pub args: Vec<OsString>,
}

/// Builds jobs' command lines; knows what every child needs besides its own args.
pub struct Builder {
    /// Absolute, so `forget --config` finds it whatever the child's directory.
    pub config_path: PathBuf,
    pub cache_dir: Option<PathBuf>,
    /// The daemon's state directory (VM definition files, drill reports).
    pub state_dir: PathBuf,
}

impl Builder {
    /// The arguments every job's child gets: JSON output, the repository, its
    /// passphrase file and the cache.
    fn global_args(&self, repo: &RepositoryConfig) -> Vec<OsString> {
        let mut args: Vec<OsString> =
            vec!["--json".into(), "--repo".into(), repo.url.clone().into()];
        if let Some(f) = &repo.password_file {
            args.extend(["--password-file".into(), f.clone().into_os_string()]);
        }
        if let Some(c) = &self.cache_dir {
            args.extend(["--cache-dir".into(), c.clone().into_os_string()]);
        }
        args
    }

    pub fn backup(
        &self,
        config: &Config,
        group: usize,
        vm: usize,
        disk: usize,
    ) -> Option<JobCommand> {
        let g = &config.groups[group];
        let repo = config.repository(&g.repository)?;
        let (v, d) = (&g.vms[vm], &g.vms[vm].disks[disk]);
        let mut args = self.global_args(repo);
        args.extend(["backup".into(), "--vm".into(), v.name.clone().into()]);
        args.extend(["--disk".into(), d.name.clone().into()]);
        if let Some(definition) = definition_arg(&self.state_dir, v) {
            args.extend(["--definition".into(), definition]);
        }
        match &d.source {
            DiskSource::Image(p) => args.push(p.clone().into_os_string()),
            DiskSource::Nbd(uri) => args.push(uri.clone().into()),
            DiskSource::Qmp { socket, drive } => args.extend([
                "--qmp".into(),
                socket.clone().into_os_string(),
                "--drive".into(),
                drive.clone().into(),
            ]),
        }
        Some(JobCommand {
            key: JobKey {
                kind: "backup",
                group: Some(g.name.clone()),
                repository: repo.name.clone(),
                source: None,
                vm: Some(v.name.clone()),
                disk: Some(d.name.clone()),
            },
            exclusive: format!("disk {}/{}", v.name, d.name),
            args,
        })
    }

    /// `forget --group`: the group's retention, read by the child from the same file.
    pub fn forget(&self, config: &Config, group: usize) -> Option<JobCommand> {
        let g = &config.groups[group];
        let repo = config.repository(&g.repository)?;
        let mut args = self.global_args(repo);
        args.extend([
            "forget".into(),
            "--config".into(),
            self.config_path.clone().into(),
        ]);
        args.extend(["--group".into(), g.name.clone().into()]);
        Some(JobCommand {
            key: JobKey {
                kind: "forget",
                group: Some(g.name.clone()),
                repository: repo.name.clone(),
                source: None,
                vm: None,
                disk: None,
            },
            exclusive: format!("forget {}", g.name),
            args,
        })
    }

    /// `prune` with its defaults (24 h grace); its GC lease keeps it alone across hosts.
    pub fn prune(&self, repo: &RepositoryConfig) -> JobCommand {
        let mut args = self.global_args(repo);
        args.push("prune".into());
        JobCommand {
            key: JobKey {
                kind: "prune",
                group: None,
                repository: repo.name.clone(),
                source: None,
                vm: None,
                disk: None,
            },
            exclusive: format!("prune {}", repo.name),
            args,
        }
    }

    /// `standby sync` of the repository's warm standby disks (every VM it holds).
    pub fn standby(&self, repo: &RepositoryConfig) -> Option<JobCommand> {
        let standby = repo.standby.as_ref()?;
        let mut args = self.global_args(repo);
        args.extend([
            "standby".into(),
            "sync".into(),
            "--dir".into(),
            standby.dir.clone().into_os_string(),
            "--keep".into(),
            standby.keep.to_string().into(),
        ]);
        Some(JobCommand {
            key: JobKey {
                kind: "standby",
                group: None,
                repository: repo.name.clone(),
                source: None,
                vm: None,
                disk: None,
            },
            exclusive: format!("standby {}", repo.name),
            args,
        })
    }

    /// `drill PLAN` of a plan's `drill_schedule`: the plan's repository (its
    /// passphrase file), the same configuration and state directory.
    pub fn drill(&self, config: &Config, plan: &Plan) -> Option<JobCommand> {
        let repo = config.repository(&plan.repository)?;
        let mut args = self.global_args(repo);
        args.extend([
            "drill".into(),
            plan.name.clone().into(),
            "--config".into(),
            self.config_path.clone().into_os_string(),
            "--state-dir".into(),
            self.state_dir.clone().into_os_string(),
        ]);
        Some(JobCommand {
            key: JobKey {
                kind: "drill",
                // A drill's "group" is its plan.
                group: Some(plan.name.clone()),
                repository: repo.name.clone(),
                source: None,
                vm: None,
                disk: None,
            },
            exclusive: format!("drill {}", plan.name),
            args,
        })
    }

    /// `metadata backup` of the configuration's `[metadata_backup]`: the child reads
    /// targets, recipients and retention from the same file, and opens every
    /// repository (its passphrase file, else the daemon's passphrase) to record its
    /// newest snapshots.
    pub fn metadata_backup(&self) -> JobCommand {
        let mut args: Vec<OsString> = vec!["--json".into()];
        if let Some(c) = &self.cache_dir {
            args.extend(["--cache-dir".into(), c.clone().into_os_string()]);
        }
        args.extend([
            "metadata".into(),
            "backup".into(),
            "--config".into(),
            self.config_path.clone().into_os_string(),
            "--state-dir".into(),
            self.state_dir.clone().into_os_string(),
        ]);
        JobCommand {
            key: JobKey {
                kind: METADATA_JOB,
                group: None,
                // Not a repository: the jobs table needs a name, and this one reads
                // as what the job protects.
                repository: "lifeboat metadata".into(),
                source: None,
                vm: None,
                disk: None,
            },
            exclusive: METADATA_JOB.into(),
            args,
        }
    }

    /// `replicate` of replication `r`: both repositories' passphrase files (without
    /// one, the child falls back to LIFEBOAT_FROM_PASSWORD / LIFEBOAT_TO_PASSWORD, then
    /// the daemon's own passphrase), its VMs by name, its rate limit.
    pub fn replicate(&self, config: &Config, r: &Replication) -> Option<JobCommand> {
        let from = config.repository(&r.from)?;
        let to = config.repository(&r.to)?;
        let mut args: Vec<OsString> = vec!["--json".into()];
        if let Some(c) = &self.cache_dir {
            args.extend(["--cache-dir".into(), c.clone().into_os_string()]);
        }
        args.extend([
            "replicate".into(),
            "--from".into(),
            from.url.clone().into(),
            "--to".into(),
            to.url.clone().into(),
        ]);
        for (flag, repo) in [("--from-password-file", from), ("--to-password-file", to)] {
            if let Some(f) = &repo.password_file {
                args.extend([flag.into(), f.clone().into_os_string()]);
            }
        }
        for vm in r.vm_names() {
            args.extend(["--vm".into(), vm.into()]);
        }
        if let Some(rate) = &r.limit_rate {
            args.extend(["--limit-rate".into(), rate.into()]);
        }
        Some(JobCommand {
            key: JobKey {
                kind: "replicate",
                group: None,
                repository: to.name.clone(),
                source: Some(from.name.clone()),
                vm: None,
                disk: None,
            },
            exclusive: format!("replicate {}", r.name()),
            args,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicate_passes_both_passphrase_files_vms_and_rate() {
        let text = r#"
[[repository]]
name = "onsite"
url = "s3://a/lb?endpoint=http://127.0.0.1:9000"
password_file = "/etc/lb/onsite.pass"
[[repository]]
name = "dr"
url = "/srv/dr"
[[group]]
name = "prod"
repository = "onsite"
schedule = "0 1 * * *"
timezone = "UTC"
retention = { keep_last = 3 }
[[group.vm]]
name = "web01"
[[group.vm.disk]]
image = "/i/web01.img"
[[group.vm]]
name = "db01"
[[group.vm.disk]]
image = "/i/db01.img"
[[replication]]
from = "onsite"
to = "dr"
after_backup = true
limit_rate = "50MiB/s"
"#;
        let config = lifeboat_policies::parse_config(text, "t.toml").unwrap();
        let b = Builder {
            config_path: "/etc/lb.toml".into(),
            cache_dir: Some("/var/cache/lb".into()),
            state_dir: "/var/lib/lb".into(),
        };
        let w = b.replicate(&config, &config.replications[0]).unwrap();
        let args: Vec<String> = w.args.iter().map(|a| a.to_string_lossy().into()).collect();
        assert_eq!(
            args.join(" "),
            "--json --cache-dir /var/cache/lb replicate \
             --from s3://a/lb?endpoint=http://127.0.0.1:9000 --to /srv/dr \
             --from-password-file /etc/lb/onsite.pass --vm web01 --vm db01 --limit-rate 50MiB/s"
        );
        assert_eq!(
            (
                w.key.kind,
                w.key.repository.as_str(),
                w.key.source.as_deref()
            ),
            ("replicate", "dr", Some("onsite"))
        );
        assert_eq!(w.exclusive, "replicate onsite->dr");
    }
}
