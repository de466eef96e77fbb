//! Arguments of `lifeboat recovery-key`, `lifeboat metadata` and `lifeboat recover`:
//! cloud-recovery backups of Lifeboat's own configuration and state.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::defaults::DEFAULT_CONFIG;

#[derive(Debug, Subcommand)]
pub enum RecoveryKeyCommand {
    /// Create a recovery key: the private file (keep it offline: print it, escrow it)
    /// and, on stdout, the public recipient metadata backups are encrypted to
    New(RecoveryKeyNewArgs),
}

#[derive(Debug, Args)]
pub struct RecoveryKeyNewArgs {
    /// Where to write the private key (created 0600; never overwritten)
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum MetadataCommand {
    /// Write a metadata point: the configuration, the files it names, the daemon's
    /// state and each repository's newest snapshots, encrypted to the recipients
    Backup(MetadataBackupArgs),
    /// List the metadata points of a target
    List(MetadataListArgs),
    /// Open metadata points with the recovery key and check every file against the
    /// manifest (run it with the offline key, e.g. at each quarterly DR test)
    Verify(MetadataVerifyArgs),
}

#[derive(Debug, Args)]
pub struct MetadataBackupArgs {
    /// Configuration file to protect (with everything it names)
    #[arg(long, env = "LIFEBOAT_CONFIG", value_name = "FILE", default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// Where to store the point: an S3 URL or a directory, normally not at this site
    /// (repeat for several targets) [default: [metadata_backup] targets]
    #[arg(long = "to", value_name = "TARGET")]
    pub targets: Vec<String>,
    /// A recovery key's public recipient (`age1…`; repeat: primary and escrow)
    /// [default: [metadata_backup] recipients]
    #[arg(long = "recipient", value_name = "AGE1…")]
    pub recipients: Vec<String>,
    /// State directory [default: [daemon] state_dir in the configuration]
    #[arg(long, env = "LIFEBOAT_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Delete the target's points older than this after writing the new one
    /// [default: [metadata_backup] keep_within, else 7d]
    #[arg(long, value_name = "DURATION", value_parser = lifeboat_policies::parse_duration)]
    pub keep_within: Option<u64>,
    /// ...but always keep this many newest points, however old
    /// [default: [metadata_backup] keep_last, else 3]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub keep_last: Option<u64>,
    /// Where a target bucket has S3 Object Lock, lock each point for keep_within in
    /// this mode [default: [metadata_backup] lock, else governance]
    #[arg(long, value_enum, value_name = "MODE")]
    pub lock: Option<PointLockArg>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum PointLockArg {
    Governance,
    Compliance,
    Off,
}

#[derive(Debug, Args)]
pub struct MetadataVerifyArgs {
    /// The target: an S3 URL or a directory
    #[arg(long, value_name = "TARGET")]
    pub from: String,
    /// Recovery key file; repeat to give the old and the new key after a rotation
    #[arg(long, value_name = "FILE", required = true)]
    pub identity: Vec<PathBuf>,
    /// Only this point (name or prefix, or `latest`) [default: every point]
    #[arg(long)]
    pub point: Option<String>,
}

#[derive(Debug, Args)]
pub struct MetadataListArgs {
    /// The target: an S3 URL or a directory
    #[arg(long, value_name = "TARGET")]
    pub from: String,
}

#[derive(Debug, Args)]
pub struct RecoverArgs {
    /// The metadata target: an S3 URL or a directory
    #[arg(long, value_name = "TARGET")]
    pub from: String,
    /// The recovery key file (`recovery-key new --out`); repeat to give the old and
    /// the new key after a rotation
    #[arg(long, value_name = "FILE", required = true)]
    pub identity: Vec<PathBuf>,
    /// Which point: `latest` or a point name (prefix) from `metadata list`
    #[arg(long, default_value = "latest")]
    pub point: String,
    /// Where to rebuild the configuration, secrets, scripts and state
    #[arg(long, value_name = "DIR")]
    pub to: PathBuf,
    /// Show what would be written and which repositories answer; write nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Write into a directory that is not empty
    #[arg(long)]
    pub force: bool,
}
