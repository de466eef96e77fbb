//! Arguments of `lifeboat replicate` and of `init --replica-of`: two repositories, so
//! two addresses and two passphrases.

use std::path::PathBuf;

use clap::Args;

/// The source repository's passphrase (the destination's is the usual
/// --password-file / LIFEBOAT_PASSWORD).
#[derive(Debug, Clone, Args)]
pub struct SourcePassword {
    /// Read the source repository's passphrase from this file [else
    /// LIFEBOAT_FROM_PASSWORD, else the same passphrase as the destination]
    #[arg(long, env = "LIFEBOAT_FROM_PASSWORD_FILE", value_name = "FILE")]
    pub from_password_file: Option<PathBuf>,
}

/// Copy snapshots, and only the data the destination lacks, to a replica at another
/// site. Run it on the secondary site (pull, the default and safer way: it needs only
/// read access to the primary's bucket), or on the primary (push).
#[derive(Debug, Args)]
pub struct ReplicateArgs {
    /// Source repository (the primary site), as for -r
    #[arg(long, value_name = "REPO")]
    pub from: String,
    /// Destination repository, made with `init --replica-of` [default: -r/--repo]
    #[arg(long, value_name = "REPO")]
    pub to: Option<String>,
    #[command(flatten)]
    pub source_password: SourcePassword,
    /// Read the destination's passphrase from this file [else LIFEBOAT_TO_PASSWORD,
    /// else --password-file / LIFEBOAT_PASSWORD]
    #[arg(long, env = "LIFEBOAT_TO_PASSWORD_FILE", value_name = "FILE")]
    pub to_password_file: Option<PathBuf>,
    /// Only this VM's snapshots (repeatable) [default: all]
    #[arg(long, value_name = "NAME")]
    pub vm: Vec<String>,
    /// Only the VMs of this protection group of the configuration
    #[arg(long, value_name = "NAME")]
    pub group: Option<String>,
    /// Configuration file, for --group; when it exists, VMs a plan of it has failed
    /// over onto the destination (`failover status`) are never replicated into it
    #[arg(long, env = "LIFEBOAT_CONFIG", value_name = "FILE",
          default_value = super::DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// Average rate limit on what is sent to the destination, e.g. 50MiB/s (binary
    /// units, per second) [default: unlimited]
    #[arg(long, value_name = "RATE", value_parser = lifeboat_policies::config::parse_rate)]
    pub limit_rate: Option<u64>,
    /// Ranged reads in flight on the source
    #[arg(long, value_name = "N", default_value_t = 8,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub fetches: u16,
    /// Pack uploads in flight to the destination
    #[arg(long, value_name = "N", default_value_t = 4,
          value_parser = clap::value_parser!(u16).range(1..=64))]
    pub uploads: u16,
}
