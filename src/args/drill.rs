//! Arguments of `lifeboat drill`: a test failover of a recovery plan, and the history
//! of drill reports.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::defaults::DEFAULT_CONFIG;

const DRILL_HELP: &str = "\
A drill boots every VM of the plan on this (secondary) site from its recovery point —
copy-on-write overlays on the warm standby disks, or on the snapshots served from the
replica over NBD (instant recovery, no full restore first) —
in the plan's isolated test network, waits for each VM's health checks, keeps the
evidence (console log, screenshot, timings, verdict), then stops the VMs and removes
the overlays. Production, backups and replication go on untouched.

The report is written as JSON and HTML under <state_dir>/drills/<repository>/, signed
and hash-chained, with a sealed copy in the repository: `lifeboat drill history
--verify` detects an edited or deleted report.

Exit status: 0 when every VM booted, 4 when the drill ran and a VM did not boot, 1
when the drill could not run (nothing is left running).";

/// `lifeboat drill PLAN` or `lifeboat drill history`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, after_long_help = DRILL_HELP)]
pub struct DrillArgs {
    #[command(subcommand)]
    pub command: Option<DrillCommand>,
    #[command(flatten)]
    pub run: DrillRunArgs,
}

#[derive(Debug, Args)]
pub struct DrillRunArgs {
    /// The recovery plan to drill (a [[plan]] of the configuration)
    #[arg(value_name = "PLAN", required = true)]
    pub plan: Option<String>,
    /// Recovery point: `latest`, a snapshot id (prefix) of one of the plan's VMs, or
    /// an RFC 3339 time (the newest point at or before it)
    #[arg(long, default_value = "latest")]
    pub point: String,
    #[command(flatten)]
    pub files: DrillFiles,
    /// Leave the VMs running after the report for manual checks (console logs and
    /// forwarded ports are printed); Ctrl-C or SIGTERM then stops them and removes
    /// the overlays
    #[arg(long)]
    pub keep: bool,
    /// Ranged reads in flight when a disk is served from the repository (no standby point)
    #[arg(long, default_value_t = 16)]
    pub fetches: usize,
}

/// The configuration and the state directory the reports live in.
#[derive(Debug, Clone, Args)]
pub struct DrillFiles {
    /// Configuration file: plans, networks, repositories
    #[arg(long, env = "LIFEBOAT_CONFIG", value_name = "FILE", default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// State directory (reports go to <DIR>/drills/) [default: [daemon] state_dir in
    /// the configuration, else /var/lib/lifeboat]
    #[arg(long, env = "LIFEBOAT_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum DrillCommand {
    /// List the drill reports; with --verify, check their signatures, their chain,
    /// their evidence files and the repository's copies
    History(DrillHistoryArgs),
    /// End what a drill of the plan left: stop VMs still running from its overlay
    /// directory (a `--keep` drill whose terminal is gone, a killed drill) and remove
    /// their overlays. Reports and evidence stay
    Cleanup(DrillCleanupArgs),
}

#[derive(Debug, Args)]
pub struct DrillCleanupArgs {
    /// The recovery plan (a [[plan]] of the configuration)
    #[arg(value_name = "PLAN")]
    pub plan: String,
    #[command(flatten)]
    pub files: DrillFiles,
}

#[derive(Debug, Args)]
pub struct DrillHistoryArgs {
    /// Check the chain (needs the repository's passphrase: the signing key derives
    /// from it); exits 3 when something does not hold
    #[arg(long)]
    pub verify: bool,
    /// Only the reports of plans recovering from this configured repository
    #[arg(long, value_name = "NAME")]
    pub repository: Option<String>,
    #[command(flatten)]
    pub files: DrillFiles,
}
