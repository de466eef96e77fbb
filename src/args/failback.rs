//! Arguments of `lifeboat failback`: bring a failed-over plan home to the primary.

use clap::Args;

use super::drill::DrillFiles;

const FAILBACK_HELP: &str = "\
Run on the secondary while the plan is failed over, once the primary site is back and
its repository reachable. Failback:
  1. replicates this site's repository to the primary's (--to), checking that the
     reverse direction works before anything is stopped;
  2. shuts the failed-over VMs down (ACPI, never forced: a VM that does not power off
     in time stops the failback, and nothing is backed up);
  3. takes their final backups here (only the chunks they changed since the failover
     are new) and replicates them to the primary: only those chunks cross the link;
  4. removes the failover's disks, fence and state on this site.
Then, on the primary: `lifeboat failover PLAN --planned` starts the VMs from those
final backups, with nothing lost.";

#[derive(Debug, Args)]
#[command(after_long_help = FAILBACK_HELP)]
pub struct FailbackArgs {
    /// The failed-over recovery plan
    #[arg(value_name = "PLAN")]
    pub plan: String,
    /// The primary site's repository (a [[repository]] name of the configuration)
    #[arg(long, value_name = "REPOSITORY")]
    pub to: String,
    /// How long each guest gets to power off before the failback gives up
    #[arg(long, value_name = "DURATION", default_value = "120s", value_parser = lifeboat_policies::parse_duration)]
    pub shutdown_timeout: u64,
    #[command(flatten)]
    pub files: DrillFiles,
}
