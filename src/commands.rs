//! One function per subcommand. Library errors get their context here, and every
//! command that reports has a text and a `--json` form.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use lifeboat_backup::{BackupRequest, run_backup};
use lifeboat_restore::{RestoreRequest, VerifyOptions, restore_snapshot, verify_repository};
use lifeboat_store::backend::LockMode;
use lifeboat_store::backend::address::{BackendOptions, RepoAddress};
use lifeboat_store::backend::open_backend;
use lifeboat_store::format::config::{ChunkerParams, Immutability};
use lifeboat_store::keys::slot::DEFAULT_KDF;
use lifeboat_store::{
    Backend, InitOptions, Progress, Repository, StoreError, default_cache_dir, init_repository,
    open_repository,
};

use crate::args::{
    BackupArgs, Cli, Command, GlobalArgs, InitArgs, KeyCommand, LockModeArg, RestoreArgs,
    SnapshotsArgs, VerifyArgs,
};
use crate::output::{ProgressGuard, bytes, print_json, rate};
use crate::password;

pub async fn run(cli: Cli) -> Result<ExitCode> {
    let g = &cli.global;
    match cli.command {
        Command::Init(a) => init(g, a).await,
        Command::Backup(a) => backup(g, a).await,
        Command::Snapshots(a) => snapshots(g, a).await,
        Command::Restore(a) => restore(g, a).await,
        Command::Verify(a) => return verify(g, a).await,
        Command::Forget(a) => crate::forget::forget(g, a).await,
        Command::Prune(a) => crate::prune::prune(g, a).await,
        Command::Key(k) => key(g, k).await,
        Command::Daemon(a) => crate::daemon::run(g, a).await,
        Command::Status(a) => crate::status::status(g, a).await,
        Command::Repair(r) => crate::repair::repair(g, r).await,
    }?;
    Ok(ExitCode::SUCCESS)
}

async fn backend(g: &GlobalArgs) -> Result<(Arc<dyn Backend>, RepoAddress)> {
    let Some(repo) = g.repo.as_deref() else {
        bail!("no repository given: pass -r/--repo or set LIFEBOAT_REPO");
    };
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

fn cache_dir(g: &GlobalArgs) -> PathBuf {
    g.cache_dir.clone().unwrap_or_else(default_cache_dir)
}

/// Opens the repository and brings the catalog up to date.
pub(crate) async fn open(g: &GlobalArgs) -> Result<Arc<Repository>> {
    let (backend, _) = backend(g).await?;
    let pass = password::current(g.password_file.as_deref(), false)?;
    let repo = open_repository(backend, &pass, &cache_dir(g)).await?;
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

async fn init(g: &GlobalArgs, a: InitArgs) -> Result<()> {
    let (backend, address) = backend(g).await?;
    let location = backend.location();
    let base = ChunkerParams::from_avg(a.chunk_avg);
    let chunker = ChunkerParams {
        min: a.chunk_min.unwrap_or(base.min),
        avg: a.chunk_avg,
        max: a.chunk_max.unwrap_or(base.max),
    };
    let options = InitOptions {
        chunker,
        fixed_chunk_size: a.fixed_chunks,
        compression_level: a.compression,
        pack_size: a.pack_size,
        // A local repository is just a directory: creating it is what `init` means.
        create_container: a.create_bucket || matches!(address, RepoAddress::Local(_)),
        kdf: DEFAULT_KDF,
        immutability: a.immutable.map(|period_secs| Immutability {
            period_secs,
            mode: match a.lock_mode {
                LockModeArg::Compliance => LockMode::Compliance,
                LockModeArg::Governance => LockMode::Governance,
            },
        }),
    };
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
    Ok(())
}

/// A disk ready to read: an image file (`cbt`), or a running VM's drive (`live`).
enum Prepared {
    Image(lifeboat_backup::cbt::PreparedDisk),
    Live(lifeboat_backup::live::LiveDisk),
}

impl Prepared {
    fn source(&self) -> Arc<dyn lifeboat_backup::source::DiskSource> {
        match self {
            Prepared::Image(p) => p.source.clone(),
            Prepared::Live(l) => l.source.clone(),
        }
    }

    fn mode(&self) -> lifeboat_backup::ReadMode {
        match self {
            Prepared::Image(p) => p.mode.clone(),
            Prepared::Live(l) => l.mode.clone(),
        }
    }

    fn new_bitmap(&self) -> Option<String> {
        match self {
            Prepared::Image(p) => p.new_bitmap.clone(),
            Prepared::Live(l) => l.new_bitmap.clone(),
        }
    }

    async fn committed(self) -> Result<(), lifeboat_backup::BackupError> {
        match self {
            Prepared::Image(p) => p.committed().await,
            Prepared::Live(l) => l.committed().await,
        }
    }

    async fn failed(self) {
        match self {
            Prepared::Image(p) => p.failed().await,
            Prepared::Live(l) => l.failed().await,
        }
    }
}

async fn backup(g: &GlobalArgs, a: BackupArgs) -> Result<()> {
    let is_nbd = a
        .image
        .as_ref()
        .is_some_and(|i| lifeboat_backup::cbt::is_nbd_uri(&i.to_string_lossy()));
    let disk = match (&a.disk, &a.image, &a.drive) {
        (Some(d), _, _) => d.clone(),
        (None, Some(_), _) if is_nbd => bail!("name the disk of an NBD export with --disk"),
        (None, Some(image), _) => image
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .context("cannot name the disk after the image path; pass --disk")?,
        (None, None, Some(drive)) => drive.clone(),
        (None, None, None) => bail!("pass a disk image, or --qmp and --drive"),
    };
    if let Some(image) = &a.image
        && !is_nbd
        && !image.exists()
    {
        bail!("disk image {} does not exist", image.display());
    }
    // The repository's key derivation and the image's `qemu-img` calls take similar
    // time and need nothing from each other: run them side by side.
    let (repo, started) = match (&a.qmp, &a.drive, &a.image) {
        (Some(_), Some(_), _) | (_, _, None) => (open(g).await?, None),
        (_, _, Some(image)) => {
            let (repo, started) = tokio::join!(open(g), lifeboat_backup::cbt::start(image));
            let started = started?;
            match repo {
                Ok(repo) => (repo, Some(started)),
                Err(e) => {
                    started.abandon().await;
                    return Err(e);
                }
            }
        }
    };
    let workers = a
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let prepared = match (&a.qmp, &a.drive, &a.image) {
        (Some(qmp), Some(drive), _) => {
            let hooks = lifeboat_backup::live::Hooks {
                pre: a.pre_hook.clone(),
                post: a.post_hook.clone(),
            };
            let live = lifeboat_backup::live::prepare_live(qmp, drive, &repo, &a.vm, &disk, &hooks)
                .await
                .with_context(|| {
                    format!(
                        "preparing a point-in-time view of drive {drive} through {}",
                        qmp.display()
                    )
                })?;
            Prepared::Live(live)
        }
        (_, _, Some(_)) => {
            let started = started.context("internal error: image not started")?;
            Prepared::Image(lifeboat_backup::cbt::prepare(started, &repo, &a.vm, &disk).await?)
        }
        _ => bail!("pass a disk image, or --qmp and --drive"),
    };
    let request = BackupRequest {
        vm: a.vm,
        disk,
        source: prepared.source(),
        mode: prepared.mode(),
        cbt_bitmap: prepared.new_bitmap(),
        tags: a.tags,
        workers,
        upload_concurrency: a.uploads,
    };
    let progress = Arc::new(Progress::default());
    let guard = ProgressGuard::start("backup", progress.clone(), !g.quiet && !g.json);
    let result = run_backup(repo, request, progress).await;
    drop(guard);
    let report = match result {
        Ok(report) => {
            prepared
                .committed()
                .await
                .context("snapshot committed, but cleaning up old dirty bitmaps failed")?;
            report
        }
        Err(e) => {
            prepared.failed().await;
            return Err(e.into());
        }
    };
    if g.json {
        print_json(&report);
    } else if !g.quiet {
        let reused = if report.chunks == 0 {
            100.0
        } else {
            100.0 * (report.chunks - report.new_chunks) as f64 / report.chunks as f64
        };
        println!(
            "snapshot {} saved: vm {} disk {}",
            report.snapshot.short_id(),
            report.snapshot.meta.vm,
            report.snapshot.meta.disk
        );
        println!("  mode {}: {}", report.mode, report.mode_reason);
        let dirty = report
            .bytes_dirty
            .map(|d| format!(", dirty {}", bytes(d)))
            .unwrap_or_default();
        println!(
            "  disk {}{dirty}, read {}, zero/holes {}",
            bytes(report.disk_size),
            bytes(report.bytes_read),
            bytes(report.zero_bytes)
        );
        println!(
            "  chunks {} ({} new, {reused:.1}% deduplicated), new data {} stored as {} in {} pack(s)",
            report.chunks,
            report.new_chunks,
            bytes(report.new_bytes),
            bytes(report.stored_bytes),
            report.packs
        );
        println!(
            "  took {:.2} s, {} of disk",
            report.duration_secs,
            rate(report.disk_size, report.duration_secs)
        );
    }
    Ok(())
}

async fn snapshots(g: &GlobalArgs, a: SnapshotsArgs) -> Result<()> {
    let repo = open(g).await?;
    let list: Vec<_> = repo
        .snapshots()
        .await?
        .into_iter()
        .filter(|s| a.vm.as_deref().is_none_or(|v| s.meta.vm == v))
        .filter(|s| a.disk.as_deref().is_none_or(|d| s.meta.disk == d))
        .collect();
    if g.json {
        print_json(&list);
        return Ok(());
    }
    println!(
        "{:<10} {:<24} {:<16} {:<12} {:>11}  HOST",
        "ID", "TIME", "VM", "DISK", "SIZE"
    );
    for s in &list {
        println!(
            "{:<10} {:<24} {:<16} {:<12} {:>11}  {}",
            s.short_id(),
            s.meta.time,
            s.meta.vm,
            s.meta.disk,
            bytes(s.meta.size),
            s.meta.host
        );
    }
    println!("{} snapshot(s)", list.len());
    Ok(())
}

/// The store says what is wrong with a snapshot selection; the flags that fix it are
/// the command line's to name.
fn with_selection_advice(e: StoreError) -> anyhow::Error {
    match e {
        StoreError::AmbiguousLatest { .. } => anyhow::anyhow!("{e}; add --vm and --disk"),
        StoreError::NoSuchSnapshot { .. } => {
            anyhow::anyhow!("{e}; list them with `lifeboat snapshots`")
        }
        other => other.into(),
    }
}

async fn restore(g: &GlobalArgs, a: RestoreArgs) -> Result<()> {
    let repo = open(g).await?;
    let snapshot = repo
        .find_snapshot(&a.snapshot, a.vm.as_deref(), a.disk.as_deref())
        .await
        .map_err(with_selection_advice)?;
    let progress = Arc::new(Progress::default());
    let guard = ProgressGuard::start("restore", progress.clone(), !g.quiet && !g.json);
    let request = RestoreRequest {
        snapshot,
        target: a.target,
        overwrite: a.overwrite,
        concurrency: a.fetches,
    };
    let report = restore_snapshot(repo, request, progress).await?;
    drop(guard);
    if g.json {
        print_json(&report);
    } else if !g.quiet {
        println!(
            "restored snapshot {} ({}/{}) to {}: {} disk, {} written, took {:.2} s ({})",
            &report.snapshot[..8],
            report.vm,
            report.disk,
            report.target,
            bytes(report.disk_size),
            bytes(report.bytes_written),
            report.duration_secs,
            rate(report.disk_size, report.duration_secs)
        );
    }
    Ok(())
}

/// Exit code of a verify that ran fine but found damage.
const EXIT_DAMAGED: u8 = 3;

async fn verify(g: &GlobalArgs, a: VerifyArgs) -> Result<ExitCode> {
    let repo = open(g).await?;
    let progress = Arc::new(Progress::default());
    let guard = ProgressGuard::start(
        "verify",
        progress.clone(),
        !g.quiet && !g.json && a.read_data.is_some(),
    );
    let options = VerifyOptions {
        read_data_percent: a.read_data,
    };
    let report = verify_repository(repo, &options, progress).await?;
    drop(guard);
    if g.json {
        print_json(&report);
    } else {
        println!(
            "checked {} snapshot(s), {} index object(s), {} pack(s); read {} pack(s), {} chunk(s), {}",
            report.snapshots,
            report.index_objects,
            report.packs,
            report.packs_read,
            report.chunks_read,
            bytes(report.bytes_read)
        );
        for p in &report.problems {
            println!("DAMAGED {}: {}", p.object, p.detail);
        }
        for d in &report.damaged_snapshots {
            let offsets: Vec<String> = d.offsets.iter().map(|o| o.to_string()).collect();
            println!(
                "snapshot {} ({}/{}) cannot be fully restored: {} chunk(s), {} affected, at disk offset(s) {}",
                d.snapshot,
                d.vm,
                d.disk,
                d.damaged_chunks,
                bytes(d.damaged_bytes),
                offsets.join(", ")
            );
        }
        if report.is_ok() {
            println!("no problems found");
        }
    }
    Ok(if report.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_DAMAGED)
    })
}

async fn key(g: &GlobalArgs, k: KeyCommand) -> Result<()> {
    let repo = open(g).await?;
    match k {
        KeyCommand::Add { new_password_file } => {
            let pass = password::new(new_password_file.as_deref())?;
            let id = repo.add_key(&pass, DEFAULT_KDF).await?;
            if g.json {
                print_json(&serde_json::json!({ "added": id }));
            } else {
                println!("added key slot {id}");
            }
        }
        KeyCommand::List => {
            let keys = repo.list_keys().await?;
            if g.json {
                print_json(&keys);
            } else {
                println!("  {:<17} {:<24} HOST", "ID", "CREATED");
                for k in keys {
                    println!(
                        "{} {:<17} {:<24} {}",
                        if k.current { "*" } else { " " },
                        k.id,
                        k.created,
                        k.host
                    );
                }
            }
        }
        KeyCommand::Remove { id } => {
            repo.remove_key(&id).await?;
            if g.json {
                print_json(&serde_json::json!({ "removed": id }));
            } else {
                println!("removed key slot {id}");
            }
        }
    }
    Ok(())
}
