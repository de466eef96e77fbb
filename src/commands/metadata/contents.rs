//! What goes into a metadata point: the configuration, the files it names (password
//! files, plan scripts), the daemon's state (a consistent copy of `state.db`, drill
//! reports, failover states) and each repository's newest snapshot per disk.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use lifeboat_metadata::{BundleFile, FileRole, NewestSnapshot, RepositorySummary};
use lifeboat_policies::Config;

use crate::args::GlobalArgs;
use crate::config_file::global_for;
use crate::repository::open;

/// The files the configuration names: password files, plan scripts, libvirt XMLs.
pub(super) fn named_files(config: &Config) -> Result<Vec<BundleFile>> {
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
    for vm in config.groups.iter().flat_map(|g| &g.vms) {
        if let Some(xml) = &vm.hardware.libvirt_xml {
            files.push(read_file(xml, FileRole::Definition)?);
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    files.dedup_by(|a, b| a.path == b.path);
    Ok(files)
}

/// The daemon's database (a consistent copy), drill reports and failover states.
pub(super) fn state_files(state_dir: &Path) -> Result<Vec<BundleFile>> {
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
            settle_copy(&copy);
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

/// The copy as a recovered site must read it: the daemon that wrote it is not running
/// there (stopped when last seen), and jobs in flight at the copy never finish there.
/// Without this, `status` after `recover` would show the old daemon running for a
/// minute and those jobs running until the new daemon starts. Best effort: a
/// `state.db` of another version may lack these tables, and the copy is still worth
/// keeping as it is.
fn settle_copy(copy: &Path) {
    let settled = rusqlite::Connection::open(copy).and_then(|c| {
        c.execute_batch(
            "UPDATE daemon SET stopped_at = heartbeat_at WHERE stopped_at IS NULL;
             UPDATE jobs SET status = 'interrupted',
               finished_at = COALESCE((SELECT heartbeat_at FROM daemon WHERE id = 1), queued_at),
               error = COALESCE(error, 'in flight when this metadata backup was taken; \
               its outcome is not known here')
             WHERE status IN ('queued', 'running');",
        )
    });
    if let Err(e) = settled {
        tracing::debug!("state.db copy kept as it was: {e}");
    }
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

pub(super) fn read_file(path: &Path, role: FileRole) -> Result<BundleFile> {
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
pub(super) async fn summarise_repositories(
    g: &GlobalArgs,
    config: &Config,
) -> Vec<RepositorySummary> {
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
