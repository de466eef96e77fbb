//! `lifeboat export`: serves a snapshot's disk read-only over NBD straight from the
//! repository ([`lifeboat_restore::export::SnapshotDisk`] behind
//! [`lifeboat_hypervisor::nbd_server`]) until Ctrl-C or SIGTERM.

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use lifeboat_hypervisor::nbd_server::{ListenAddress, NbdServer};
use lifeboat_restore::export::{ExportOptions, SnapshotDisk};
use tokio::signal::unix::{SignalKind, signal};

use crate::args::{ExportArgs, GlobalArgs};
use crate::output::{bytes, print_json};
use crate::repository::{open, with_selection_advice};

pub async fn run(g: &GlobalArgs, a: ExportArgs) -> Result<()> {
    let address = parse_address(&a.nbd)?;
    let repo = open(g).await?;
    let snapshot = repo
        .find_snapshot(&a.snapshot, a.vm.as_deref(), a.disk.as_deref())
        .await
        .map_err(with_selection_advice)?;
    let options = ExportOptions {
        cache_bytes: u64::from(a.cache),
        read_ahead_bytes: u64::from(a.read_ahead),
        fetches: a.fetches.max(1),
    };
    let disk = SnapshotDisk::open(repo, &snapshot, options).await?;
    let server = NbdServer::bind(&address)
        .await
        .with_context(|| format!("serving NBD on {}", a.nbd))?;
    // Its Display is the URI a client opens (the real port when 0 was asked).
    let uri = server.local_addr().to_string();
    if g.json {
        print_json(&serde_json::json!({
            "snapshot": snapshot.id,
            "vm": snapshot.meta.vm,
            "disk": snapshot.meta.disk,
            "size": disk.size(),
            "nbd": uri,
        }));
    } else if !g.quiet {
        eprintln!(
            "serving {}/{} (snapshot {}, {}) read-only on {uri}; Ctrl-C stops",
            snapshot.meta.vm,
            snapshot.meta.disk,
            snapshot.short_id(),
            bytes(disk.size())
        );
    }
    let name = format!("{}/{}", snapshot.meta.vm, snapshot.meta.disk);
    server
        .serve(name, Arc::new(disk), stop_signal())
        .await
        .context("serving the export")?;
    Ok(())
}

/// `unix:PATH` or `HOST:PORT`.
fn parse_address(text: &str) -> Result<ListenAddress> {
    if let Some(path) = text.strip_prefix("unix:") {
        if path.is_empty() {
            bail!("--nbd unix: needs a socket path, e.g. unix:/run/lifeboat/web01.sock");
        }
        return Ok(ListenAddress::Unix(path.into()));
    }
    let addr = text.parse().with_context(|| {
        format!("--nbd {text:?} is neither unix:PATH nor HOST:PORT (e.g. 127.0.0.1:10809)")
    })?;
    Ok(ListenAddress::Tcp(addr))
}

async fn stop_signal() {
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
