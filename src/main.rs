//! The `lifeboat` command: parses arguments, runs one command (`commands/`).
//!
//! Exit codes: 0 success, 1 error, 2 usage error, 3 `verify` found damage, 75 a
//! transient failure worth retrying (see `exit.rs`).

mod args;
mod commands;
mod config_file;
mod daemon;
mod exit;
mod final_backup;
mod output;
mod password;
mod repository;

use std::process::ExitCode;

use clap::Parser;

/// Blocking-pool threads per core (file I/O, catalog, decryption on restore). Each
/// thread can grow its own malloc arena and keep its peak, so a big pool costs real
/// memory for no speed: the work is CPU- or disk-bound.
const BLOCKING_THREADS_PER_CORE: usize = 2;

fn main() -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(
            BLOCKING_THREADS_PER_CORE * std::thread::available_parallelism().map_or(2, |n| n.get()),
        )
        .build()
        .expect("starting the async runtime");
    runtime.block_on(run())
}

async fn run() -> ExitCode {
    let cli = args::Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LIFEBOAT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_log_level(&cli))),
        )
        .init();
    match commands::run(cli).await {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            exit::for_error(&err)
        }
    }
}

/// The daemon logs each job's start and end (its journal is the operator's record);
/// one-shot commands only warn.
fn default_log_level(cli: &args::Cli) -> &'static str {
    if matches!(cli.command, args::Command::Daemon(_)) {
        "info"
    } else {
        "warn"
    }
}
