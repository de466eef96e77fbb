//! What each kind of job runs: the child's command line (`lifeboat backup …`,
//! `forget --group …`, `prune`) and the key that keeps two of the same (a disk's
//! backups, a group's forgets, a repository's prunes) from running at once.

use std::ffi::OsString;
use std::path::PathBuf;

use lifeboat_policies::Config;
use lifeboat_policies::config::{DiskSource, RepositoryConfig};

use super::state::JobKey;

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
                vm: None,
                disk: None,
            },
            exclusive: format!("prune {}", repo.name),
            args,
        }
    }
}
