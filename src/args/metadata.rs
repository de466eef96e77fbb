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
}

#[derive(Debug, Args)]
pub struct MetadataBackupArgs {
    /// Configuration file to protect (with everything it names)
    #[arg(long, env = "LIFEBOAT_CONFIG", value_name = "FILE", default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// Where to store the point: an S3 URL or a directory, normally not at this site
    /// (repeat for several targets)
    #[arg(long = "to", value_name = "TARGET", required = true)]
    pub targets: Vec<String>,
    /// A recovery key's public recipient (`age1…`; repeat: primary and escrow)
    #[arg(long = "recipient", value_name = "AGE1…", required = true)]
    pub recipients: Vec<String>,
    /// State directory [default: [daemon] state_dir in the configuration]
    #[arg(long, env = "LIFEBOAT_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Delete the target's points older than this after writing the new one
    #[arg(long, value_name = "DURATION", default_value = "7d", value_parser = lifeboat_policies::parse_duration)]
    pub keep_within: u64,
    /// ...but always keep this many newest points, however old
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub keep_last: usize,
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
    /// The recovery key file (`recovery-key new --out`)
    #[arg(long, value_name = "FILE")]
    pub identity: PathBuf,
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
