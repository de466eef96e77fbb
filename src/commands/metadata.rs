//! `lifeboat recovery-key new`, `lifeboat metadata backup|list` and `lifeboat
//! recover`: what goes into a metadata point (the configuration, the files it names,
//! the daemon's state, each repository's newest snapshots) and how `recover` lays it
//! out on a new machine ([`lifeboat_metadata`] seals, stores and opens the points).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use lifeboat_metadata::keys::{new_recovery_key, parse_recipient, write_key_file};
use lifeboat_metadata::target::expired;
use lifeboat_metadata::{
    Bundle, BundleFile, FileRole, MetadataTarget, NewestSnapshot, RepositorySummary,
};
use lifeboat_policies::Config;

use crate::args::{
    GlobalArgs, MetadataBackupArgs, MetadataCommand, MetadataListArgs, RecoveryKeyCommand,
};
use crate::config_file::{global_for, load};
use crate::output::{bytes, print_json};
use crate::repository::{backend_at, open};

pub fn recovery_key(g: &GlobalArgs, c: RecoveryKeyCommand) -> Result<()> {
    let RecoveryKeyCommand::New(a) = c;
    let (text, recipient) = new_recovery_key();
    write_key_file(&a.out, &text)?;
    if g.json {
        print_json(&serde_json::json!({ "recipient": recipient, "key_file": a.out }));
    } else {
        println!("{recipient}");
        if !g.quiet {
            eprintln!(
                "recovery key written to {} (0600): keep it offline (print it, escrow it) and \
                 delete it from this machine; give the recipient above to `metadata backup \
                 --recipient`",
                a.out.display()
            );
        }
    }
    Ok(())
}

pub async fn run(g: &GlobalArgs, c: MetadataCommand) -> Result<()> {
    match c {
        MetadataCommand::Backup(a) => backup(g, a).await,
        MetadataCommand::List(a) => list(g, a).await,
    }
}

async fn target(g: &GlobalArgs, address: &str) -> Result<MetadataTarget> {
    let (backend, _) = backend_at(g, address)
        .await
        .with_context(|| format!("metadata target {address}"))?;
    Ok(MetadataTarget::new(backend))
}

async fn backup(g: &GlobalArgs, a: MetadataBackupArgs) -> Result<()> {
    let recipients = a
        .recipients
        .iter()
        .map(|r| parse_recipient(r))
        .collect::<Result<Vec<_>, _>>()?;
    let config = load(&a.config)?;
    let state_dir = a
        .state_dir
        .clone()
        .unwrap_or_else(|| config.daemon.state_dir.clone());
    let mut files = vec![read_file(&a.config, FileRole::Config)?];
    files.extend(named_files(&config)?);
    files.extend(state_files(&state_dir)?);
    let repositories = summarise_repositories(g, &config).await;
    let bundle = Bundle {
        version: lifeboat_metadata::bundle::BUNDLE_VERSION,
        created: lifeboat_store::repo::now_rfc3339(),
        host: lifeboat_store::repo::hostname(),
        lifeboat_version: env!("CARGO_PKG_VERSION").to_string(),
        files,
        repositories,
    };
    let sealed = bundle.seal(&recipients)?;
    let now = time::OffsetDateTime::now_utc();
    let mut written = Vec::new();
    for address in &a.targets {
        let t = target(g, address).await?;
        let name = t
            .put(sealed.clone(), now)
            .await
            .with_context(|| format!("storing the metadata point at {address}"))?;
        written.push((t.location(), name));
        forget_expired(&t, now, &a, g.quiet || g.json).await?;
    }
    if g.json {
        print_json(&serde_json::json!({
            "points": written.iter().map(|(l, n)| serde_json::json!({"target": l, "point": n})).collect::<Vec<_>>(),
            "files": bundle.files.iter().map(|f| serde_json::json!({"role": f.role, "path": f.path, "size": f.size})).collect::<Vec<_>>(),
            "bytes": sealed.len(),
        }));
    } else if !g.quiet {
        for (location, name) in &written {
            println!(
                "metadata point {name} at {location}: {} files, {} sealed",
                bundle.files.len(),
                bytes(sealed.len() as u64)
            );
        }
    }
    Ok(())
}

/// Deletes the target's points retention lets go; an Object-Locked point stays.
async fn forget_expired(
    t: &MetadataTarget,
    now: time::OffsetDateTime,
    a: &MetadataBackupArgs,
    quiet: bool,
) -> Result<()> {
    let keep_within = time::Duration::seconds(i64::try_from(a.keep_within).unwrap_or(i64::MAX));
    for point in expired(&t.points().await?, now, keep_within, a.keep_last.max(1)) {
        match t.delete(&point).await {
            Ok(()) if !quiet => eprintln!("metadata point {point} expired and deleted"),
            Ok(()) => {}
            Err(e) => eprintln!("warning: metadata point {point} expired but stays: {e}"),
        }
    }
    Ok(())
}

/// The files the configuration names: password files and plan scripts.
fn named_files(config: &Config) -> Result<Vec<BundleFile>> {
    let mut files = Vec::new();
    for r in &config.repositories {
        if let Some(p) = &r.password_file {
            files.push(read_file(p, FileRole::Secret)?);
        }
    }
    for plan in &config.plans {
        for script in [&plan.pre_script, &plan.post_script].into_iter().flatten() {
            files.push(read_file(script, FileRole::Script)?);
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    files.dedup_by(|a, b| a.path == b.path);
    Ok(files)
}

/// The daemon's database (a consistent copy), drill reports and failover states.
fn state_files(state_dir: &Path) -> Result<Vec<BundleFile>> {
    let mut files = Vec::new();
    let db = state_dir.join("state.db");
    if db.exists() {
        let copy = std::env::temp_dir().join(format!(
            "lifeboat-metadata-{}-{}.db",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
        ));
        let result = (|| -> Result<BundleFile> {
            let conn = rusqlite::Connection::open_with_flags(
                &db,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )?;
            // A consistent snapshot even while the daemon writes.
            conn.execute("VACUUM INTO ?1", [copy.to_string_lossy()])?;
            let bytes = std::fs::read(&copy)?;
            Ok(BundleFile::new(
                FileRole::StateDb,
                absolute(&db),
                0o600,
                &bytes,
            ))
        })();
        let _ = std::fs::remove_file(&copy);
        files.push(result.with_context(|| format!("copying {}", db.display()))?);
    }
    for sub in ["drills", "failover"] {
        for path in walk(&state_dir.join(sub)) {
            if path.extension().is_some_and(|e| e == "lock") {
                continue;
            }
            files.push(read_file(&path, FileRole::State)?);
        }
    }
    Ok(files)
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

fn absolute(path: &Path) -> String {
    std::fs::canonicalize(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}

fn read_file(path: &Path, role: FileRole) -> Result<BundleFile> {
    let bytes = std::fs::read(path).with_context(|| {
        format!(
            "reading {} for the metadata backup (the configuration names it)",
            path.display()
        )
    })?;
    let mode = std::fs::metadata(path)?.permissions().mode() & 0o7777;
    Ok(BundleFile::new(role, absolute(path), mode, &bytes))
}

/// Each configured repository's id and newest snapshot per disk; an unreachable one
/// is recorded with its error, not fatal (the other site's copy still matters).
async fn summarise_repositories(g: &GlobalArgs, config: &Config) -> Vec<RepositorySummary> {
    let mut out = Vec::new();
    for r in &config.repositories {
        let mut summary = RepositorySummary {
            name: r.name.clone(),
            url: r.url.clone(),
            id: None,
            error: None,
            newest: Vec::new(),
        };
        match newest_of(g, r).await {
            Ok((id, newest)) => {
                summary.id = Some(id);
                summary.newest = newest;
            }
            Err(e) => summary.error = Some(format!("{e:#}")),
        }
        out.push(summary);
    }
    out
}

async fn newest_of(
    g: &GlobalArgs,
    r: &lifeboat_policies::config::RepositoryConfig,
) -> Result<(String, Vec<NewestSnapshot>)> {
    let repo = open(&global_for(g, r)).await?;
    let mut newest: BTreeMap<(String, String), lifeboat_store::SnapshotSummary> = BTreeMap::new();
    for s in repo.snapshots().await? {
        let key = (s.meta.vm.clone(), s.meta.disk.clone());
        if newest
            .get(&key)
            .is_none_or(|have| have.meta.time < s.meta.time)
        {
            newest.insert(key, s);
        }
    }
    let list = newest
        .into_values()
        .map(|s| NewestSnapshot {
            vm: s.meta.vm.clone(),
            disk: s.meta.disk.clone(),
            snapshot: s.id.clone(),
            time: s.meta.time.clone(),
            definition: s
                .meta
                .vm_definition
                .as_ref()
                .and_then(|d| serde_json::to_value(d).ok()),
        })
        .collect();
    Ok((repo.config().id.clone(), list))
}

async fn list(g: &GlobalArgs, a: MetadataListArgs) -> Result<()> {
    let t = target(g, &a.from).await?;
    let points = t.points().await?;
    if g.json {
        print_json(&points);
    } else if points.is_empty() {
        println!("no metadata points at {}", t.location());
    } else {
        for p in &points {
            println!("{p}");
        }
    }
    Ok(())
}
