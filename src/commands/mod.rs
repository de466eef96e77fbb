//! One module per subcommand. Each maps its arguments (and the configuration) to a
//! library request, runs it, and renders the result as text or `--json`. Library
//! errors get their context here. Command modules never use each other: what they
//! share is in `repository.rs`, `output.rs`, `config_file.rs` and `daemon/`.

mod backup;
mod daemon;
mod drill;
mod export;
mod failback;
mod failover;
mod forget;
mod init;
mod key;
mod metadata;
mod prune;
mod recover;
mod repair;
mod replicate;
mod restore;
mod snapshots;
mod standby;
mod status;
mod verify;

use std::process::ExitCode;

use anyhow::Result;

use crate::args::{Cli, Command};

pub async fn run(cli: Cli) -> Result<ExitCode> {
    let g = &cli.global;
    match cli.command {
        Command::Init(a) => init::run(g, a).await,
        Command::Backup(a) => backup::run(g, a).await,
        Command::Snapshots(a) => snapshots::run(g, a).await,
        Command::Restore(a) => restore::run(g, a).await,
        Command::Verify(a) => return verify::run(g, a).await,
        Command::Drill(a) => return drill::run(g, a).await,
        Command::Failover(a) => return failover::run(g, a).await,
        Command::Failback(a) => return failback::run(g, a).await,
        Command::RecoveryKey(c) => metadata::recovery_key(g, c),
        Command::Metadata(c) => metadata::run(g, c).await,
        Command::Recover(a) => recover::run(g, a).await,
        Command::Export(a) => export::run(g, a).await,
        Command::Forget(a) => forget::run(g, a).await,
        Command::Prune(a) => prune::run(g, a).await,
        Command::Key(k) => key::run(g, k).await,
        Command::Daemon(a) => daemon::run(g, a).await,
        Command::Status(a) => status::run(g, a).await,
        Command::Repair(r) => repair::run(g, r).await,
        Command::Replicate(a) => replicate::run(g, a).await,
        Command::Standby(c) => standby::run(g, c).await,
    }?;
    Ok(ExitCode::SUCCESS)
}
