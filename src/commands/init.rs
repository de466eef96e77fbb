//! `lifeboat init`: creates a repository with the chunking, compression, pack size
//! and immutability the flags ask for.

use anyhow::{Context, Result, bail};
use lifeboat_store::backend::LockMode;
use lifeboat_store::backend::address::RepoAddress;
use lifeboat_store::format::config::{ChunkerParams, Immutability};
use lifeboat_store::keys::slot::DEFAULT_KDF;
use lifeboat_store::{InitOptions, Repository, init_repository, open_repository};

use crate::args::{GlobalArgs, InitArgs, LockModeArg};
use crate::output::print_json;
use crate::password;
use crate::repository::{backend, backend_at, cache_dir};

pub async fn run(g: &GlobalArgs, a: InitArgs) -> Result<()> {
    let (backend, address) = backend(g).await?;
    let location = backend.location();
    // A local repository is just a directory: creating it is what `init` means.
    let create_container = a.create_bucket || matches!(address, RepoAddress::Local(_));
    let mut options = options(&a, create_container);
    if let Some(source) = &a.replica_of {
        options = replica_options(g, &a, source, &location, options).await?;
    }
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
            "replica_of": repo.config().replica_of.as_ref().map(|r| serde_json::json!({
                "repository": r.repository,
                "location": r.location,
            })),
        }));
    } else if !g.quiet {
        print_text(&repo, &location);
    }
    Ok(())
}

/// `options` with the chunking and chunk-id key of the repository at `source`, which
/// is opened (not synced: only its keys and config are needed) with its passphrase.
async fn replica_options(
    g: &GlobalArgs,
    a: &InitArgs,
    source: &str,
    location: &str,
    options: InitOptions,
) -> Result<InitOptions> {
    let (source_backend, _) = backend_at(g, source)
        .await
        .with_context(|| format!("source repository {source}"))?;
    if source_backend.location() == location {
        bail!(
            "--replica-of names the repository being created ({location}); give the source repository at the other site"
        );
    }
    let pass = password::for_side(
        a.source_password.from_password_file.as_deref(),
        "LIFEBOAT_FROM_PASSWORD",
        g.password_file.as_deref(),
    )?;
    let source_repo = open_repository(source_backend, &pass, &cache_dir(g))
        .await
        .with_context(|| {
            format!(
                "opening the source repository {source} (its passphrase comes from \
                 --from-password-file / LIFEBOAT_FROM_PASSWORD, else --password-file / \
                 LIFEBOAT_PASSWORD)"
            )
        })?;
    Ok(lifeboat_replicator::replica_options(&source_repo, options))
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
        ..InitOptions::default()
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
    if let Some(r) = &repo.config().replica_of {
        println!(
            "replica of {} (repository {}): chunking and chunk ids shared with it; \
             passphrase, retention and Object Lock are this repository's own",
            r.location,
            &r.repository[..8]
        );
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
