//! `lifeboat recover`: a metadata point, decrypted with the offline recovery key,
//! laid out on a new machine — configuration (its paths rewritten), secrets (0600),
//! scripts (0700), state directory (0700) — then every repository it names checked:
//! reachable, and holding the newest snapshots the point recorded.

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use lifeboat_metadata::keys::read_identity;
use lifeboat_metadata::{Bundle, FileRole, MetadataError, RepositorySummary};

use crate::args::{GlobalArgs, RecoverArgs};
use crate::commands::metadata::target::target;
use crate::config_file::global_for;
use crate::output::print_json;
use crate::repository::open;

/// Where one bundled file goes.
struct Placement {
    old: String,
    new: PathBuf,
    mode: u32,
}

pub async fn run(g: &GlobalArgs, a: RecoverArgs) -> Result<()> {
    let (name, bundle) = open_point(g, &a).await?;
    if !a.dry_run {
        check_target_dir(&a.to, a.force)?;
    }
    let to = std::path::absolute(&a.to)?;
    let placements = place(&bundle, &to)?;
    if !a.dry_run {
        write_all(&bundle, &placements, &to)?;
    }
    let config_path = to.join("lifeboat.toml");
    let checks = if a.dry_run {
        Vec::new()
    } else {
        check_repositories(g, &config_path, &bundle.repositories).await?
    };
    if g.json {
        print_json(&serde_json::json!({
            "point": name,
            "created": bundle.created,
            "host": bundle.host,
            "dry_run": a.dry_run,
            "files": placements.iter().map(|p| serde_json::json!({"from": p.old, "to": p.new})).collect::<Vec<_>>(),
            "repositories": checks,
        }));
    } else if !g.quiet {
        println!(
            "metadata point {name} (written {} on {}){}",
            bundle.created,
            bundle.host,
            if a.dry_run {
                ", dry run: nothing written"
            } else {
                ""
            }
        );
        for p in &placements {
            println!("  {} -> {}", p.old, p.new.display());
        }
        for c in &checks {
            println!(
                "  repository {}: {}",
                c["name"].as_str().unwrap_or(""),
                c["verdict"].as_str().unwrap_or("")
            );
            if let Some(vms) = c["ready"].as_array() {
                for v in vms {
                    println!("    {}", v.as_str().unwrap_or(""));
                }
            }
        }
        if !a.dry_run {
            println!(
                "ready: lifeboat status --config {0}; fail over with lifeboat failover PLAN --config {0}",
                config_path.display()
            );
        }
    }
    Ok(())
}

/// The chosen point, opened with the recovery key(s); a damaged one names the next
/// older point to try.
async fn open_point(g: &GlobalArgs, a: &RecoverArgs) -> Result<(String, Bundle)> {
    let identities = a
        .identity
        .iter()
        .map(|p| read_identity(p))
        .collect::<Result<Vec<_>, _>>()?;
    let target = target(g, &a.from).await?;
    let (name, sealed) = target.get(&a.point).await?;
    let bundle = match Bundle::open(&sealed, &identities, &name) {
        Ok(b) => b,
        Err(MetadataError::Damaged { point, detail, .. }) => {
            let older = target.older_than(&point).await.ok().flatten();
            return Err(MetadataError::Damaged {
                point,
                detail,
                older,
            }
            .into());
        }
        Err(e) => return Err(e.into()),
    };
    Ok((name, bundle))
}

fn check_target_dir(dir: &Path, force: bool) -> Result<()> {
    let has_entries = match std::fs::read_dir(dir) {
        Ok(mut entries) => entries.next().is_some(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    if has_entries && !force {
        bail!(
            "{} is not empty: recover into a new directory, or pass --force to write over \
             what is there",
            dir.display()
        );
    }
    Ok(())
}

/// Each file's new home: the configuration at `lifeboat.toml`, secrets under
/// `secrets/`, scripts under `scripts/`, libvirt XMLs under `definitions/`, state
/// files under `state/` at the same place relative to the old state directory (the
/// directory of `state.db`, or the parent of `drills/` and `failover/`). Two files of
/// the same name from different directories (`/etc/a/pass`, `/etc/b/pass`) get
/// `pass` and `pass-2`.
fn place(bundle: &Bundle, to: &Path) -> Result<Vec<Placement>> {
    let old_state = old_state_dir(bundle);
    let mut out: Vec<Placement> = Vec::new();
    for f in &bundle.files {
        let base = Path::new(&f.path)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "file".into());
        let (new, mode) = match f.role {
            FileRole::Config => (to.join("lifeboat.toml"), 0o600),
            FileRole::Secret => (to.join("secrets").join(&base), 0o600),
            FileRole::Script => (to.join("scripts").join(&base), 0o700),
            FileRole::Definition => (to.join("definitions").join(&base), 0o600),
            FileRole::StateDb | FileRole::State => {
                let rel = old_state
                    .as_deref()
                    .and_then(|s| Path::new(&f.path).strip_prefix(s).ok())
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| PathBuf::from(&base));
                (to.join("state").join(rel), 0o600)
            }
        };
        let taken = |p: &Path| out.iter().any(|o| o.new == p);
        let new = (1..)
            .map(|n| match n {
                1 => new.clone(),
                n => new.with_file_name(format!("{base}-{n}")),
            })
            .find(|p| !taken(p))
            .expect("some suffix is free");
        out.push(Placement {
            old: f.path.clone(),
            new,
            mode,
        });
    }
    Ok(out)
}

fn old_state_dir(bundle: &Bundle) -> Option<String> {
    bundle.files.iter().find_map(|f| match f.role {
        FileRole::StateDb => Path::new(&f.path).parent().map(|p| p.display().to_string()),
        FileRole::State => {
            let p = Path::new(&f.path);
            p.ancestors()
                .find(|a| {
                    a.file_name()
                        .is_some_and(|n| n == "drills" || n == "failover")
                })
                .and_then(Path::parent)
                .map(|p| p.display().to_string())
        }
        _ => None,
    })
}

fn write_all(bundle: &Bundle, placements: &[Placement], to: &Path) -> Result<()> {
    let mut dirs = std::fs::DirBuilder::new();
    dirs.recursive(true).mode(0o700);
    dirs.create(to)?;
    let old_state = old_state_dir(bundle);
    for (f, p) in bundle.files.iter().zip(placements) {
        let mut content = f.content().map_err(anyhow::Error::msg)?;
        if f.role == FileRole::Config {
            content = rewrite_config(&content, placements, old_state.as_deref(), to).into_bytes();
        }
        if let Some(parent) = p.new.parent() {
            dirs.create(parent)?;
        }
        let _ = std::fs::remove_file(&p.new);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(p.mode)
            .open(&p.new)
            .with_context(|| format!("creating {}", p.new.display()))?;
        std::io::Write::write_all(&mut file, &content)
            .and_then(|()| file.sync_all())
            .with_context(|| format!("writing {}", p.new.display()))?;
    }
    Ok(())
}

/// The configuration with every bundled file's old path, and the old state
/// directory, pointing at their new places.
fn rewrite_config(
    content: &[u8],
    placements: &[Placement],
    old_state: Option<&str>,
    to: &Path,
) -> String {
    let mut text = String::from_utf8_lossy(content).into_owned();
    for p in placements {
        text = text.replace(
            &format!("\"{}\"", p.old),
            &format!("\"{}\"", p.new.display()),
        );
    }
    if let Some(old) = old_state {
        let new = to.join("state");
        text = text.replace(&format!("\"{old}\""), &format!("\"{}\"", new.display()));
    }
    text
}

/// Opens every repository of the recovered configuration, secondary first; reports whether it holds
/// the newest snapshots the point recorded, and which VMs can be failed over.
async fn check_repositories(
    g: &GlobalArgs,
    config_path: &Path,
    recorded: &[RepositorySummary],
) -> Result<Vec<serde_json::Value>> {
    let config = crate::config_file::load(config_path)
        .context("the recovered configuration does not load")?;
    // The secondary site's first: replica destinations and plans' repositories are
    // what a failover needs, and the primary's is likely gone with its site.
    let mut repositories: Vec<_> = config.repositories.iter().collect();
    repositories.sort_by_key(|r| {
        let secondary = config.replications.iter().any(|x| x.to == r.name)
            || config.plans.iter().any(|p| p.repository == r.name);
        !secondary
    });
    let mut out = Vec::new();
    for r in repositories {
        let expected = recorded.iter().find(|s| s.name == r.name);
        let verdict;
        let mut ready = Vec::new();
        match open(&global_for(g, r)).await {
            Err(e) => verdict = format!("UNREACHABLE ({e:#})"),
            Ok(repo) => {
                let snapshots = repo.snapshots().await?;
                let missing: Vec<String> = expected
                    .map(|s| {
                        s.newest
                            .iter()
                            .filter(|n| !snapshots.iter().any(|x| x.id == n.snapshot))
                            .map(|n| format!("{}/{}", n.vm, n.disk))
                            .collect()
                    })
                    .unwrap_or_default();
                verdict = if missing.is_empty() {
                    "reachable, holds every snapshot the point recorded".to_string()
                } else {
                    format!(
                        "reachable, but lacks the recorded newest snapshot of {}",
                        missing.join(", ")
                    )
                };
                let mut vms: Vec<&str> = snapshots.iter().map(|s| s.meta.vm.as_str()).collect();
                vms.sort_unstable();
                vms.dedup();
                for vm in vms {
                    let newest = snapshots
                        .iter()
                        .filter(|s| s.meta.vm == vm)
                        .map(|s| s.meta.time.as_str())
                        .max()
                        .unwrap_or_default();
                    ready.push(format!("{vm}: can be failed over from {newest}"));
                }
            }
        }
        out.push(
            serde_json::json!({ "name": r.name, "url": r.url, "verdict": verdict, "ready": ready }),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use lifeboat_metadata::BundleFile;

    use super::*;

    #[test]
    fn files_of_the_same_name_get_homes_of_their_own_and_the_config_points_at_them() {
        let file = |role, path: &str| BundleFile::new(role, path.into(), 0o644, b"x");
        let bundle = Bundle {
            version: 1,
            created: String::new(),
            host: String::new(),
            lifeboat_version: String::new(),
            files: vec![
                file(FileRole::Config, "/etc/lb/lifeboat.toml"),
                file(FileRole::Secret, "/etc/a/pass"),
                file(FileRole::Secret, "/etc/b/pass"),
                file(FileRole::Definition, "/etc/libvirt/qemu/db01.xml"),
                file(FileRole::StateDb, "/var/lib/lb/state.db"),
                file(FileRole::State, "/var/lib/lb/drills/dr/000001.json"),
            ],
            repositories: Vec::new(),
        };
        let to = Path::new("/new");
        let placed = place(&bundle, to).unwrap();
        let new: Vec<String> = placed.iter().map(|p| p.new.display().to_string()).collect();
        assert_eq!(
            new,
            [
                "/new/lifeboat.toml",
                "/new/secrets/pass",
                "/new/secrets/pass-2",
                "/new/definitions/db01.xml",
                "/new/state/state.db",
                "/new/state/drills/dr/000001.json",
            ]
        );
        let config = "a = \"/etc/a/pass\"\nb = \"/etc/b/pass\"\nx = \"/etc/libvirt/qemu/db01.xml\"\n\
                      s = \"/var/lib/lb\"\n";
        let rewritten = rewrite_config(config.as_bytes(), &placed, Some("/var/lib/lb"), to);
        assert_eq!(
            rewritten,
            "a = \"/new/secrets/pass\"\nb = \"/new/secrets/pass-2\"\n\
             x = \"/new/definitions/db01.xml\"\ns = \"/new/state\"\n"
        );
    }
}
