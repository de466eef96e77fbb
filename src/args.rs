//! Command-line arguments (clap derive).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

mod defaults;
mod drill;
mod export;
mod failback;
mod failover;
mod metadata;
mod replicate;

pub use defaults::{DEFAULT_CONFIG, parse_size};
pub use drill::{
    DrillArgs, DrillCleanupArgs, DrillCommand, DrillFiles, DrillHistoryArgs, DrillRunArgs,
};
pub use export::ExportArgs;
pub use failback::FailbackArgs;
pub use failover::{
    FailoverAbortArgs, FailoverArgs, FailoverCommand, FailoverPlanArgs, FailoverPrepareArgs,
    FailoverRunArgs, FailoverStatusArgs,
};
pub use metadata::{
    MetadataBackupArgs, MetadataCommand, MetadataListArgs, MetadataVerifyArgs, PointLockArg,
    RecoverArgs, RecoveryKeyCommand,
};
pub use replicate::{ReplicateArgs, SourcePassword};

/// Lifeboat: encrypted, deduplicated backups of VM disks to S3-compatible storage.
#[derive(Debug, Parser)]
#[command(
    name = "lifeboat",
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("LIFEBOAT_COMMIT"), ")"),
    about,
    long_about = None
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Repository: /path, file:///path or s3://bucket/prefix[?endpoint=URL&region=R]
    #[arg(short = 'r', long = "repo", env = "LIFEBOAT_REPO", global = true)]
    pub repo: Option<String>,
    /// Read the passphrase from this file (else LIFEBOAT_PASSWORD, else a prompt)
    #[arg(long, env = "LIFEBOAT_PASSWORD_FILE", global = true)]
    pub password_file: Option<PathBuf>,
    /// Where the local catalog cache lives [default: ~/.cache/lifeboat]
    #[arg(long, env = "LIFEBOAT_CACHE_DIR", global = true)]
    pub cache_dir: Option<PathBuf>,
    /// Print machine-readable JSON on stdout instead of text
    #[arg(long, global = true)]
    pub json: bool,
    /// No progress bars or informational messages
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// DANGEROUS: accept any TLS certificate from an https:// S3 endpoint (self-signed
    /// test rigs). Prefer trusting its CA via SSL_CERT_FILE. Warns on every run.
    #[arg(
        long,
        env = "LIFEBOAT_INSECURE_TLS",
        global = true,
        value_parser = clap::builder::BoolishValueParser::new(),
        num_args = 0,
        default_missing_value = "true",
        default_value = "false"
    )]
    pub insecure_tls: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a new repository
    Init(InitArgs),
    /// Back up one VM disk (raw image file or block device)
    Backup(BackupArgs),
    /// List snapshots
    Snapshots(SnapshotsArgs),
    /// Restore a snapshot to a file or block device
    Restore(RestoreArgs),
    /// Check the repository: structure always, data with --read-data
    Verify(VerifyArgs),
    /// Forget snapshots that no keep rule keeps (deletes their manifests; the data
    /// stays until `prune` reclaims it)
    Forget(ForgetArgs),
    /// Reclaim space: delete data no snapshot uses (safe while backups run)
    Prune(PruneArgs),
    /// Manage the passphrases (key slots) that open the repository
    #[command(subcommand)]
    Key(KeyCommand),
    /// Run the configured schedules: backups, retention and prune, with job history,
    /// retries and Prometheus metrics (stops cleanly on SIGTERM)
    Daemon(DaemonArgs),
    /// Show each configured VM's last good backup, its RPO state (OK / AT RISK /
    /// BREACHED), last error and next run, from the daemon's job history
    #[command(after_long_help = RPO_RULE_HELP)]
    Status(StatusArgs),
    /// Repair the repository (`repair index`: rebuild the index from the packs)
    #[command(subcommand)]
    Repair(RepairCommand),
    /// Copy snapshots to a replica at a second site, sending only the data it lacks
    Replicate(ReplicateArgs),
    /// Warm standby disks: qcow2 images kept at the newest recovery points, ready to boot
    #[command(subcommand)]
    Standby(StandbyCommand),
    /// Test failover: boot a recovery plan's VMs on this site in an isolated network,
    /// prove they come up, keep signed evidence (`drill history --verify`)
    Drill(DrillArgs),
    /// Disaster recovery: run a recovery plan's VMs on this site for real (the
    /// primary is lost or shut down); `failover status`, `abort`, `commit`
    Failover(FailoverArgs),
    /// Bring a failed-over plan home: final backups of its VMs here, replicated to
    /// the primary (only what changed), then `failover --planned` there
    Failback(FailbackArgs),
    /// Recovery keys for metadata backups (`recovery-key new --out FILE`)
    #[command(subcommand)]
    RecoveryKey(RecoveryKeyCommand),
    /// Cloud-recovery backups of Lifeboat's own configuration and state
    #[command(subcommand)]
    Metadata(MetadataCommand),
    /// Rebuild Lifeboat's configuration and state on a new machine from a metadata
    /// backup and the offline recovery key
    Recover(RecoverArgs),
    /// Serve a snapshot's disk read-only over NBD straight from the repository
    /// (instant recovery: boot a VM on an overlay backed by it)
    Export(ExportArgs),
}

/// Shown by `lifeboat status --help`; README says the same.
const RPO_RULE_HELP: &str = "\
RPO states (per disk; a VM shows its worst disk). The age of a backup is measured from
its start, the moment its data was read:
  BREACHED  the last good backup is older than the group's rpo, or the disk was never
            backed up and rpo has passed since the daemon first scheduled it
  AT RISK   not breached, but: no good backup yet, or the latest attempt failed, or
            the next scheduled run (taking as long as the last good one) would finish
            after the rpo runs out, or nothing is scheduled
  OK        otherwise
Set rpo above the schedule interval plus the backup time (a nightly schedule needs
e.g. rpo = \"26h\"), or every disk is AT RISK by design.
Status reads the configuration and the daemon's job history (state.db) only: backups
made by hand with `lifeboat backup` do not count.";

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Configuration file: repositories, groups, schedules, retention, RPO
    #[arg(long, env = "LIFEBOAT_CONFIG", value_name = "FILE", default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// Directory of the job history database (state.db) [default: [daemon] state_dir
    /// in the configuration, else /var/lib/lifeboat]
    #[arg(long, env = "LIFEBOAT_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Jobs run at once, never two on the same disk [default: [daemon]
    /// max_concurrent_jobs, else 2]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: Option<u16>,
    /// Serve Prometheus metrics on http://ADDR/metrics; "" turns them off [default:
    /// [daemon] metrics_listen, else 127.0.0.1:9188]
    #[arg(long, value_name = "ADDR", value_parser = parse_listen_arg)]
    pub metrics_listen: Option<Listen>,
    /// On SIGTERM or Ctrl-C, wait this long for running jobs to finish before
    /// interrupting them (an interrupted backup resumes: uploaded data is reused)
    /// [default: [daemon] stop_timeout, else 10m]
    #[arg(long, value_name = "DURATION", value_parser = lifeboat_policies::parse_duration)]
    pub stop_timeout: Option<u64>,
    /// Wait before retrying a transient failure; doubles after each attempt [default:
    /// [daemon] retry_delay, else 1m]
    #[arg(long, value_name = "DURATION", value_parser = lifeboat_policies::parse_duration)]
    pub retry_delay: Option<u64>,
}

/// A metrics listen address, or off.
#[derive(Debug, Clone, Copy)]
pub struct Listen(pub Option<std::net::SocketAddr>);

fn parse_listen_arg(s: &str) -> Result<Listen, String> {
    lifeboat_policies::config::parse_listen(s).map(Listen)
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Configuration file: which VMs to report, their RPO and schedules
    #[arg(long, env = "LIFEBOAT_CONFIG", value_name = "FILE", default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// Directory of the daemon's job history database [default: [daemon] state_dir
    /// in the configuration, else /var/lib/lifeboat]
    #[arg(long, env = "LIFEBOAT_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Only this protection group
    #[arg(long, value_name = "NAME")]
    pub group: Option<String>,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Average chunk size (min = avg/4, max = avg*4 unless given), e.g. 1MiB
    #[arg(long, value_parser = parse_size, default_value = "1MiB")]
    pub chunk_avg: u32,
    /// Minimum chunk size [default: avg/4]
    #[arg(long, value_parser = parse_size)]
    pub chunk_min: Option<u32>,
    /// Maximum chunk size [default: avg*4]
    #[arg(long, value_parser = parse_size)]
    pub chunk_max: Option<u32>,
    /// Cut disks into fixed, aligned chunks of SIZE (a multiple of 4KiB, at most 4MiB)
    /// instead of content-defined ones. For changed-block-tracked VM disks: at the dirty
    /// bitmap's granularity (64KiB) a nightly incremental reads and stores about what
    /// changed, at the price of more chunks per disk. Cannot be changed later.
    #[arg(long, value_name = "SIZE", value_parser = parse_size,
          conflicts_with_all = ["chunk_avg", "chunk_min", "chunk_max"])]
    pub fixed_chunks: Option<u32>,
    /// zstd compression level (1-22)
    #[arg(long, default_value_t = 3)]
    pub compression: i32,
    /// Target pack size (16-32 MiB suits S3)
    #[arg(long, value_parser = parse_size, default_value = "16MiB")]
    pub pack_size: u32,
    /// Create the bucket (or directory) if it does not exist
    #[arg(long)]
    pub create_bucket: bool,
    /// Immutable backups: lock every pack, index and snapshot with S3 Object Lock for
    /// this long (e.g. 30d). The bucket must have Object Lock enabled
    /// (`--create-bucket` creates it so). Fixed for the repository's lifetime.
    #[arg(long, value_name = "DURATION", value_parser = lifeboat_policies::parse_duration)]
    pub immutable: Option<u64>,
    /// With --immutable: `compliance` (nobody can delete early, not even the bucket
    /// owner) or `governance` (principals with s3:BypassGovernanceRetention can)
    #[arg(
        long,
        value_name = "MODE",
        default_value = "compliance",
        requires = "immutable"
    )]
    pub lock_mode: LockModeArg,
    /// Make this repository a replica of SOURCE for `lifeboat replicate`: it takes
    /// SOURCE's chunking settings and chunk-id key; its passphrase, retention and
    /// Object Lock stay its own. Needs SOURCE's passphrase (--from-password-file).
    #[arg(long, value_name = "SOURCE",
          conflicts_with_all = ["chunk_avg", "chunk_min", "chunk_max", "fixed_chunks"])]
    pub replica_of: Option<String>,
    #[command(flatten)]
    pub source_password: SourcePassword,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LockModeArg {
    Compliance,
    Governance,
}

/// Garbage collection in two phases a grace period apart: mark condemns unused packs,
/// a later prune sweeps (deletes) them. Run it regularly, e.g. daily.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Data must be unused and this old before it is condemned, and condemned data
    /// waits this long before deletion. Must exceed your longest backup run.
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = lifeboat_policies::parse_duration)]
    pub grace: u64,
    /// Repack packs with less than this share of live data (percent)
    #[arg(long, value_name = "PERCENT", default_value = "50", value_parser = parse_percent_or_zero)]
    pub repack_below: f64,
    /// How long the GC lease lasts if this prune dies without releasing it
    #[arg(long, value_name = "DURATION", default_value = "15m", value_parser = lifeboat_policies::parse_duration)]
    pub lease: u64,
    /// Report what would be condemned, repacked and deleted; change nothing
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Name of the VM the disk belongs to
    #[arg(long)]
    pub vm: String,
    /// Name of the disk within the VM [default: the image's file name, or the --drive]
    #[arg(long)]
    pub disk: Option<String>,
    /// Tag the snapshot (repeatable)
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Threads hashing, compressing and encrypting [default: number of cores]
    #[arg(long)]
    pub workers: Option<usize>,
    /// Pack uploads in flight (each holds a 16 MiB pack in memory; raise for
    /// high-latency object stores)
    #[arg(long, default_value_t = 2)]
    pub uploads: usize,
    /// Disk image (qcow2, raw, VHDX, VMDK, …) or block device; not with --qmp
    #[arg(required_unless_present = "qmp", conflicts_with = "qmp")]
    pub image: Option<PathBuf>,
    /// Back up a drive of a running QEMU VM through this QMP unix socket: a
    /// crash-consistent point-in-time view, read while the VM keeps running
    #[arg(long, value_name = "SOCKET", requires = "drive")]
    pub qmp: Option<PathBuf>,
    /// With --qmp: the drive's block node name (or its device / qdev id)
    #[arg(long, value_name = "NODE", requires = "qmp")]
    pub drive: Option<String>,
    /// With --qmp: shell command run just before the point in time (e.g. a guest-agent
    /// fsfreeze); if it fails, the backup is aborted
    #[arg(long, value_name = "CMD", requires = "qmp")]
    pub pre_hook: Option<String>,
    /// With --qmp: shell command run just after the point in time (e.g. thaw); runs
    /// even if the pre hook or the snapshot failed
    #[arg(long, value_name = "CMD", requires = "qmp")]
    pub post_hook: Option<String>,
    /// The VM's definition to record with the disk, so a drill or failover boots it as
    /// it ran: Lifeboat's JSON or a libvirt domain XML (`virsh dumpxml`). With --qmp
    /// and no --definition, it is read from the running VM
    #[arg(long, value_name = "FILE")]
    pub definition: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SnapshotsArgs {
    /// Only this VM's snapshots
    #[arg(long)]
    pub vm: Option<String>,
    /// Only this disk's snapshots
    #[arg(long)]
    pub disk: Option<String>,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Snapshot id (or unique prefix), or `latest`
    pub snapshot: String,
    /// File or block device to write the disk to
    pub target: PathBuf,
    /// With `latest`: which VM
    #[arg(long)]
    pub vm: Option<String>,
    /// With `latest`: which disk
    #[arg(long)]
    pub disk: Option<String>,
    /// Replace an existing non-empty target file
    #[arg(long)]
    pub overwrite: bool,
    /// Ranged reads in flight
    #[arg(long, default_value_t = 8)]
    pub fetches: usize,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Also download and check data: all of it, or PERCENT of the packs chosen at random
    #[arg(long, value_name = "PERCENT", num_args = 0..=1, default_missing_value = "100", value_parser = parse_percent)]
    pub read_data: Option<f64>,
}

/// Rules apply to each VM disk's history separately, like restic's `forget`.
#[derive(Debug, Args)]
pub struct ForgetArgs {
    /// Apply this protection group's retention and time zone from the configuration
    /// to its VMs' snapshots, in its repository (instead of --keep-* flags and --repo)
    #[arg(long, value_name = "NAME", conflicts_with_all = [
        "keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly",
        "keep_yearly", "keep_within", "timezone",
    ])]
    pub group: Option<String>,
    /// Configuration file read by --group
    #[arg(long, env = "LIFEBOAT_CONFIG", value_name = "FILE", default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// Only this VM's snapshots
    #[arg(long)]
    pub vm: Option<String>,
    /// Only this disk's snapshots
    #[arg(long)]
    pub disk: Option<String>,
    /// Keep the N newest snapshots
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_last: u32,
    /// Keep the newest snapshot of each of the last N hours that have one
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_hourly: u32,
    /// Keep the newest snapshot of each of the last N days that have one
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_daily: u32,
    /// Keep the newest snapshot of each of the last N ISO weeks that have one
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_weekly: u32,
    /// Keep the newest snapshot of each of the last N months that have one
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_monthly: u32,
    /// Keep the newest snapshot of each of the last N years that have one
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_yearly: u32,
    /// Keep every snapshot younger than DURATION (e.g. 7d, 36h) before the newest one
    #[arg(long, value_name = "DURATION", value_parser = lifeboat_policies::parse_duration)]
    pub keep_within: Option<u64>,
    /// IANA time zone whose hours, days, weeks, months and years count
    #[arg(long, value_name = "TZ", default_value = "UTC", value_parser = lifeboat_policies::parse_timezone)]
    pub timezone: lifeboat_policies::Tz,
    /// Only list what would be kept and removed, and why; change nothing
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Subcommand)]
pub enum RepairCommand {
    /// Rebuild lost or damaged index objects from the packs' own headers (writes the
    /// new index first, then deletes the old objects; safe beside a running backup)
    Index(RepairIndexArgs),
}

#[derive(Debug, Args)]
pub struct RepairIndexArgs {
    /// Scan the packs and report what would be written and deleted; change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Packs listed per new index object (bounds the memory the rebuild needs)
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub packs_per_index: u32,
}

#[derive(Debug, Subcommand)]
pub enum StandbyCommand {
    /// Bring each disk's standby images forward to its newest snapshot, writing only
    /// what changed; keep the last N points
    Sync(StandbySyncArgs),
}

#[derive(Debug, Args)]
pub struct StandbySyncArgs {
    /// Standby directory (DIR/<vm>/<disk>/ gets base.qcow2, overlays and points.json)
    #[arg(long)]
    pub dir: PathBuf,
    /// Recovery points kept per disk
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    pub keep: u64,
    /// Only this VM (repeat for several; default: every VM in the repository)
    #[arg(long = "vm", value_name = "NAME")]
    pub vms: Vec<String>,
    /// Ranged reads in flight
    #[arg(long, default_value_t = 32)]
    pub fetches: usize,
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Add a passphrase (read from --new-password-file, LIFEBOAT_NEW_PASSWORD or a prompt)
    Add {
        /// Read the new passphrase from this file
        #[arg(long)]
        new_password_file: Option<PathBuf>,
    },
    /// List key slots
    List,
    /// Remove a key slot (not the last one, nor the one in use)
    Remove {
        /// Key slot id, as `key list` shows it
        id: String,
    },
}

fn parse_percent_or_zero(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("{s:?} is not a percentage"))?;
    if (0.0..=100.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{s:?} must be in [0, 100]"))
    }
}

fn parse_percent(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("{s:?} is not a percentage"))?;
    if v > 0.0 && v <= 100.0 {
        Ok(v)
    } else {
        Err(format!("{s:?} must be in (0, 100]"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        for (input, want) in [
            ("4096", Some(4096)),
            ("256K", Some(262144)),
            ("1MiB", Some(1 << 20)),
            ("2 mb", Some(2 << 20)),
            ("x", None),
            ("8GiB", None),
        ] {
            assert_eq!(parse_size(input).ok(), want, "{input}");
        }
        assert_eq!(parse_percent("10%").unwrap(), 10.0);
        assert!(parse_percent("0").is_err());
        assert!(parse_percent("101").is_err());
    }
}
