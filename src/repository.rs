//! Reaching the repository a command names: its storage backend (with the loud
//! `--insecure-tls` warning), the local catalog cache, and opening it with the
//! passphrase and bringing the catalog up to date. Every command but `status` and
//! `daemon` starts here.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use lifeboat_store::backend::address::{BackendOptions, RepoAddress};
use lifeboat_store::backend::open_backend;
use lifeboat_store::{Backend, Repository, StoreError, default_cache_dir, open_repository};

use crate::args::GlobalArgs;
use crate::password;

/// The storage backend `-r/--repo` names, and its parsed address.
pub async fn backend(g: &GlobalArgs) -> Result<(Arc<dyn Backend>, RepoAddress)> {
    let Some(repo) = g.repo.as_deref() else {
        bail!("no repository given: pass -r/--repo or set LIFEBOAT_REPO");
    };
    backend_at(g, repo).await
}

/// The storage backend at `repo` (an address as -r takes it).
pub async fn backend_at(g: &GlobalArgs, repo: &str) -> Result<(Arc<dyn Backend>, RepoAddress)> {
    let address = RepoAddress::parse(repo)?;
    if g.insecure_tls {
        // Every run, even with --quiet or --json (stderr only): an unauthenticated
        // connection must never become something nobody remembers switching on.
        eprintln!(
            "WARNING: TLS certificate verification is OFF (--insecure-tls / \
             LIFEBOAT_INSECURE_TLS): anyone between this host and the storage endpoint can \
             impersonate it and read or alter the traffic (backup contents stay encrypted). \
             Trust the endpoint's CA with SSL_CERT_FILE instead."
        );
    }
    let options = BackendOptions {
        insecure_tls: g.insecure_tls,
        ..Default::default()
    };
    let backend = open_backend(&address, &options).await?;
    Ok((backend, address))
}

/// Where the local catalog cache lives.
pub fn cache_dir(g: &GlobalArgs) -> PathBuf {
    g.cache_dir.clone().unwrap_or_else(default_cache_dir)
}

/// Opens the repository and brings the catalog up to date.
pub async fn open(g: &GlobalArgs) -> Result<Arc<Repository>> {
    let (backend, _) = backend(g).await?;
    let pass = password::current(g.password_file.as_deref(), false)?;
    open_with(g, backend, &pass).await
}

/// Opens the repository at `backend` with `pass` and brings the catalog up to date.
pub async fn open_with(
    g: &GlobalArgs,
    backend: Arc<dyn Backend>,
    pass: &str,
) -> Result<Arc<Repository>> {
    let repo = open_repository(backend, pass, &cache_dir(g)).await?;
    let sync = repo
        .sync_catalog()
        .await
        .context("reading the repository index")?;
    for (key, detail) in &sync.damaged {
        if !g.quiet {
            eprintln!("warning: skipped damaged object {key}: {detail}");
        }
    }
    for (id, what) in &sync.vanished {
        if !g.quiet {
            eprintln!(
                "warning: snapshot {} ({what}) is no longer in the repository: forgotten by another host, or its manifest was deleted or lost",
                &id[..id.len().min(8)]
            );
        }
    }
    Ok(Arc::new(repo))
}

/// The store says what is wrong with a snapshot selection; the flags that fix it are
/// the command line's to name.
pub fn with_selection_advice(e: StoreError) -> anyhow::Error {
    match e {
        StoreError::AmbiguousLatest { .. } => anyhow::anyhow!("{e}; add --vm and --disk"),
        StoreError::NoSuchSnapshot { .. } => {
            anyhow::anyhow!("{e}; list them with `lifeboat snapshots`")
        }
        other => other.into(),
    }
}
