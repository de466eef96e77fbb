//! The `lifeboat` command: parses arguments, opens the repository, runs one command.
//!
//! Exit codes: 0 success, 1 error, 2 usage error, 3 `verify` found damage.

mod args;
mod commands;
mod forget;
mod output;
mod password;
mod prune;

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
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    match commands::run(cli).await {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(1)
        }
    }
}
