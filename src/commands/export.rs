//! `lifeboat export`: serves a snapshot's disk read-only over NBD straight from the
//! repository ([`lifeboat_restore::export::SnapshotDisk`] behind
//! [`lifeboat_hypervisor::nbd_server`]) until Ctrl-C or SIGTERM, or with `--migrate`
//! until the VM booted on it has had the rest of the disk streamed into its overlay.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use lifeboat_hypervisor::block_stream::{drive_backed_by, stream_into_overlays};
use lifeboat_hypervisor::nbd_server::{ListenAddress, NbdServer};
use lifeboat_hypervisor::qmp::Qmp;
use lifeboat_restore::export::{ExportOptions, SnapshotDisk};
use tokio::signal::unix::{SignalKind, signal};

use crate::args::{ExportArgs, GlobalArgs};
use crate::output::{bytes, print_json};
use crate::repository::{open, with_selection_advice};

/// How long `--migrate` waits for the VM to come up on the export.
const MIGRATE_WAIT: Duration = Duration::from_secs(600);
/// How long the stream may take: a day covers many TiB from a repository on S3.
const STREAM_LIMIT: Duration = Duration::from_secs(24 * 3600);

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
    let (migrated_tx, migrated_rx) = tokio::sync::oneshot::channel::<()>();
    let migration = a.migrate.clone().map(|qmp| {
        let backing = a.nbd.strip_prefix("unix:").unwrap_or(&a.nbd).to_string();
        let (drive, quiet) = (a.drive.clone(), g.quiet || g.json);
        tokio::spawn(async move {
            let r = migrate(&qmp, drive, &backing, quiet).await;
            if r.is_ok() {
                let _ = migrated_tx.send(());
            }
            r
        })
    });
    // Stops on a signal, or once the migration is done; a failed migration keeps
    // serving (the VM still reads from the export) until a signal.
    let stop = async move {
        tokio::select! {
            () = stop_signal() => {}
            Ok(()) = migrated_rx => {}
        }
    };
    server
        .serve(name, Arc::new(disk), stop)
        .await
        .context("serving the export")?;
    match migration {
        None => Ok(()),
        Some(task) if !task.is_finished() => {
            task.abort();
            bail!("stopped before the migration finished: the VM still reads from the export")
        }
        Some(task) => task.await.context("the migration task")?,
    }
}

/// Waits for the VM behind `qmp` to run on an overlay backed by this export, then
/// streams the rest of the disk into the overlay.
async fn migrate(qmp: &Path, drive: Option<String>, backing: &str, quiet: bool) -> Result<()> {
    let waited = std::time::Instant::now();
    let drive = loop {
        let found = match &drive {
            Some(d) => Qmp::connect(qmp).await.map(|_| Some(d.clone())),
            None => drive_backed_by(qmp, backing).await,
        };
        match found {
            Ok(Some(d)) => break d,
            Ok(None) | Err(_) if waited.elapsed() < MIGRATE_WAIT => {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Ok(None) => bail!(
                "no drive of the VM at {} is backed by {backing}; pass --drive ID",
                qmp.display()
            ),
            Err(e) => return Err(e).context("--migrate: no VM answers on that QMP socket"),
        }
    };
    if !quiet {
        eprintln!("migrating: streaming the rest of the disk into the overlay of drive {drive}");
    }
    stream_into_overlays(qmp, std::slice::from_ref(&drive), STREAM_LIMIT)
        .await
        .with_context(|| format!("--migrate: streaming into drive {drive}"))?;
    if !quiet {
        eprintln!("migrated: drive {drive} no longer reads from the export; stopping it");
    }
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
