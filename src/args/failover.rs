//! Arguments of `lifeboat failover`: run a recovery plan on this (secondary) site for
//! real, see how it runs, and end or settle it.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::drill::DrillFiles;

const FAILOVER_HELP: &str = "\
A failover starts every VM of the plan on this (secondary) site, for real: each VM gets
writable disks of its own under <overlay_dir>/failover-<plan>/ (qcow2 overlays on the
warm standby point, which `failover commit` later streams into them; else restored from
the replica), its NICs go to the plan's network_map
(production), boot groups start in order, and each must pass its health checks. The VMs
keep running after this command returns. If any VM does not come up, every VM started is
stopped and the disks removed: nothing is left half-started.

Unplanned (the primary site is lost): starts from the replica's newest point (or
--point); `failover status` shows the achieved RPO, the age of that point.
Planned (--planned): only from final backups that `failover prepare` took on the primary
after the VMs shut down, and replicated here; nothing is lost.

The state is kept in <state_dir>/failover/<plan>.json until `failover abort --discard`.
Never let the primary copies run on the production network while the failover runs.";

/// `lifeboat failover PLAN` or `lifeboat failover status|abort|commit`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, after_long_help = FAILOVER_HELP)]
pub struct FailoverArgs {
    #[command(subcommand)]
    pub command: Option<FailoverCommand>,
    #[command(flatten)]
    pub run: FailoverRunArgs,
}

#[derive(Debug, Args)]
pub struct FailoverRunArgs {
    /// The recovery plan to fail over (a [[plan]] of the configuration)
    #[arg(value_name = "PLAN", required = true)]
    pub plan: Option<String>,
    /// Recovery point: `latest`, a snapshot id (prefix) of one of the plan's VMs, or
    /// an RFC 3339 time (the newest point at or before it)
    #[arg(long, default_value = "latest")]
    pub point: String,
    /// The primary VMs were shut down and their final backups replicated
    /// (`failover prepare`): refuse unless every point is such a final backup
    #[arg(long, conflicts_with = "point")]
    pub planned: bool,
    #[command(flatten)]
    pub files: DrillFiles,
    /// Ranged reads in flight when a disk is restored from the repository
    #[arg(long, default_value_t = 16)]
    pub fetches: usize,
}

#[derive(Debug, Subcommand)]
pub enum FailoverCommand {
    /// Which plans are failed over: each VM, whether it runs, its point, RPO and RTO
    Status(FailoverStatusArgs),
    /// End a failover: stop its VMs and delete their disks (what they wrote is lost)
    Abort(FailoverAbortArgs),
    /// Keep the failover: stream the standby data into the VMs' own disks (live), then
    /// release the warm standby images of its VMs
    Commit(FailoverPlanArgs),
    /// On the primary, before a planned failover: shut the VM down (ACPI, never
    /// forced) and take the final backup of its disks that `failover --planned`
    /// starts from; then replicate
    Prepare(FailoverPrepareArgs),
}

#[derive(Debug, Args)]
pub struct FailoverPrepareArgs {
    /// The VM's name in the repository
    #[arg(long)]
    pub vm: String,
    /// The running VM's QMP socket (what receives the ACPI power-off)
    #[arg(long, value_name = "SOCKET")]
    pub qmp: PathBuf,
    /// A disk of the VM as NAME=IMAGE (repeat for each disk); backed up once the VM is off
    #[arg(long = "disk", value_name = "NAME=IMAGE", required = true, value_parser = parse_disk)]
    pub disks: Vec<(String, PathBuf)>,
    /// The VM's definition (Lifeboat JSON or libvirt XML) [default: the one recorded
    /// with its newest snapshot]
    #[arg(long, value_name = "FILE")]
    pub definition: Option<PathBuf>,
    /// How long the guest gets to power off; if it is still running then, nothing is
    /// backed up and the command fails
    #[arg(long, value_name = "DURATION", default_value = "120s", value_parser = lifeboat_policies::parse_duration)]
    pub shutdown_timeout: u64,
}

fn parse_disk(text: &str) -> Result<(String, PathBuf), String> {
    match text.split_once('=') {
        Some((name, image)) if !name.is_empty() && !image.is_empty() => {
            Ok((name.to_string(), PathBuf::from(image)))
        }
        _ => Err(format!(
            "expected NAME=IMAGE (e.g. root=/var/lib/vms/web01.qcow2), got {text:?}"
        )),
    }
}

#[derive(Debug, Args)]
pub struct FailoverStatusArgs {
    /// Only this plan
    #[arg(value_name = "PLAN")]
    pub plan: Option<String>,
    #[command(flatten)]
    pub files: DrillFiles,
}

#[derive(Debug, Args)]
pub struct FailoverPlanArgs {
    #[arg(value_name = "PLAN")]
    pub plan: String,
    #[command(flatten)]
    pub files: DrillFiles,
}

#[derive(Debug, Args)]
pub struct FailoverAbortArgs {
    #[command(flatten)]
    pub target: FailoverPlanArgs,
    /// Confirms that the VMs' disks on this site, and everything written to them
    /// since the failover, are deleted
    #[arg(long, required = true)]
    pub discard: bool,
    /// How long each guest gets to power off (ACPI) before QEMU is stopped
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = lifeboat_policies::parse_duration)]
    pub shutdown_timeout: u64,
}
