//! `lifeboat init`: creates a repository with the chunking, compression, pack size
//! and immutability the flags ask for.

use anyhow::Result;
use lifeboat_store::backend::LockMode;
use lifeboat_store::backend::address::RepoAddress;
use lifeboat_store::format::config::{ChunkerParams, Immutability};
use lifeboat_store::keys::slot::DEFAULT_KDF;
use lifeboat_store::{InitOptions, Repository, init_repository};

use crate::args::{GlobalArgs, InitArgs, LockModeArg};
use crate::output::print_json;
use crate::password;
use crate::repository::{backend, cache_dir};

pub async fn run(g: &GlobalArgs, a: InitArgs) -> Result<()> {
    let (backend, address) = backend(g).await?;
    let location = backend.location();
    // A local repository is just a directory: creating it is what `init` means.
    let create_container = a.create_bucket || matches!(address, RepoAddress::Local(_));
    let options = options(&a, create_container);
    let pass = password::current(g.password_file.as_deref(), true)?;
    let repo = init_repository(backend, &pass, &options, &cache_dir(g)).await?;
    if g.json {
        print_json(&serde_json::json!({
            "repository": location,
            "id": repo.config().id,
            "chunker": repo.config().chunker,
            "fixed_chunk_size": repo.config().fixed_chunk_size,
            "key_slot": repo.slot_id(),
            "immutability": repo.config().immutability,
        }));
    } else if !g.quiet {
        print_text(&repo, &location);
    }
    Ok(())
}

fn options(a: &InitArgs, create_container: bool) -> InitOptions {
    let base = ChunkerParams::from_avg(a.chunk_avg);
    let chunker = ChunkerParams {
        min: a.chunk_min.unwrap_or(base.min),
        avg: a.chunk_avg,
        max: a.chunk_max.unwrap_or(base.max),
    };
    InitOptions {
        chunker,
        fixed_chunk_size: a.fixed_chunks,
        compression_level: a.compression,
        pack_size: a.pack_size,
        create_container,
        kdf: DEFAULT_KDF,
        immutability: a.immutable.map(|period_secs| Immutability {
            period_secs,
            mode: match a.lock_mode {
                LockModeArg::Compliance => LockMode::Compliance,
                LockModeArg::Governance => LockMode::Governance,
            },
        }),
    }
}

fn print_text(repo: &Repository, location: &str) {
    println!(
        "created repository {} at {location}",
        &repo.config().id[..8]
    );
    if let Some(size) = repo.config().fixed_chunk_size {
        println!("chunking: fixed {size}-byte chunks, aligned");
    }
    if let Some(i) = repo.config().immutability {
        println!(
            "immutable: every pack, index and snapshot is locked ({:?} mode) for {} after it is written",
            i.mode,
            lifeboat_policies::format_duration(i.period_secs)
        );
    }
    println!(
        "keep the passphrase safe: without it the backups cannot be read by anyone, including you"
    );
}
