//! `lifeboat replicate`: opens both repositories (each with its own passphrase and
//! credentials) and runs [`lifeboat_replicator::replicate`].

use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use lifeboat_replicator::failover::FailoverStates;
use lifeboat_replicator::{ReplicateReport, ReplicateRequest, Side, replicate};
use lifeboat_store::{Backend, Progress, Repository, StoreError};

use crate::args::{GlobalArgs, ReplicateArgs};
use crate::config_file;
use crate::output::{ProgressGuard, bytes, print_json, rate};
use crate::password;
use crate::repository::{backend_at, open_with};

/// Runs a replication; a transient failure (exit 75) says that a rerun resumes, since
/// the operator (or scheduler) deciding whether to retry reads only that line.
pub async fn run(g: &GlobalArgs, a: ReplicateArgs) -> Result<()> {
    run_once(g, a).await.map_err(|e| {
        if crate::exit::is_retryable(&e) {
            e.context(
                "replication stopped by a transient failure; run the same command again: \
                 it resumes where this run stopped and keeps every snapshot already copied",
            )
        } else {
            e
        }
    })
}

async fn run_once(g: &GlobalArgs, a: ReplicateArgs) -> Result<()> {
    let Some(to) = a.to.clone().or_else(|| g.repo.clone()) else {
        bail!("no destination given: pass --to REPO (or -r REPO)");
    };
    let vms = selected_vms(&a)?;
    let from_pass = password::for_side(
        a.source_password.from_password_file.as_deref(),
        "LIFEBOAT_FROM_PASSWORD",
        g.password_file.as_deref(),
    )?;
    let to_pass = password::for_side(
        a.to_password_file.as_deref(),
        "LIFEBOAT_TO_PASSWORD",
        g.password_file.as_deref(),
    )?;
    let src_backend = side_backend(g, &a.from, Side::Source).await?;
    let dst_backend = side_backend(g, &to, Side::Destination).await?;
    if src_backend.location() == dst_backend.location() {
        // Checked before either is opened: the replicator refuses too, but only after
        // a passphrase has been tried on the wrong side.
        return Err(lifeboat_replicator::ReplicateError::SameRepository {
            location: dst_backend.location(),
        }
        .into());
    }
    let src = open_side(g, src_backend, &from_pass, Side::Source).await?;
    let dst = open_side(g, dst_backend, &to_pass, Side::Destination)
        .await
        .map_err(|e| match e.downcast_ref::<StoreError>() {
            Some(StoreError::NotARepository { .. }) => anyhow!(
                "the destination {to} is not initialised: create it at the secondary site \
                 with `lifeboat -r {to} init --replica-of {}`",
                a.from
            ),
            _ => e,
        })?;
    let exclude = failed_over_at(&a, &to)?;
    for (vm, plan) in &exclude {
        if a.vm.contains(vm) {
            bail!(
                "VM {vm} is failed over onto {to} (plan {plan}): it runs there from disks \
                 newer than anything in {}, so its snapshots are not replicated into it; \
                 bring it home with `lifeboat failback {plan}` (`lifeboat failover status {plan}`)",
                a.from
            );
        }
        if !g.quiet && !g.json {
            eprintln!("{vm}: not replicated, failed over onto {to} by plan {plan}");
        }
    }
    let request = ReplicateRequest {
        vms,
        exclude: exclude.into_iter().map(|(vm, _)| vm).collect(),
        fetches: a.fetches.into(),
        uploads: a.uploads.into(),
        limit_rate: a.limit_rate,
    };
    let progress = Arc::new(Progress::default());
    let guard = ProgressGuard::start("replicate", progress.clone(), !g.quiet && !g.json);
    let report = replicate(src, dst, &request, progress).await;
    drop(guard);
    let report = report.map_err(|e| match e {
        lifeboat_replicator::ReplicateError::NotAReplica { .. } => anyhow!(
            "{e}; create the destination with `lifeboat -r {to} init --replica-of {}`",
            a.from
        ),
        other => other.into(),
    })?;
    if g.json {
        print_json(&report);
    } else if !g.quiet {
        print_text(&report);
    }
    Ok(())
}

/// The VMs (with their plan) failed over onto the repository `to`, by the failover
/// states of the configuration's state dir (`LIFEBOAT_STATE_DIR` overrides it). No
/// configuration file, no fence: replication run outside a configured site.
fn failed_over_at(a: &ReplicateArgs, to: &str) -> Result<Vec<(String, String)>> {
    if !a.config.exists() {
        return Ok(Vec::new());
    }
    let config = config_file::load(&a.config)?;
    let state_dir = std::env::var_os("LIFEBOAT_STATE_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| config.daemon.state_dir.clone());
    let states = FailoverStates::new(&state_dir);
    let same = |url: &str| url.trim_end_matches('/') == to.trim_end_matches('/');
    let mut out = Vec::new();
    for plan in &config.plans {
        let onto_here = config
            .repository(&plan.repository)
            .is_some_and(|r| same(&r.url));
        if !onto_here {
            continue;
        }
        if let Some(state) = states.read(&plan.name)? {
            out.extend(state.vms.into_iter().map(|v| (v.vm, plan.name.clone())));
        }
    }
    Ok(out)
}

/// `--vm` names, plus the VMs of `--group` in the configuration.
fn selected_vms(a: &ReplicateArgs) -> Result<Vec<String>> {
    let mut vms = a.vm.clone();
    if let Some(name) = &a.group {
        let config = config_file::load(&a.config)?;
        let (group, _) = config_file::group(&config, name)?;
        vms.extend(group.vms.iter().map(|v| v.name.clone()));
    }
    Ok(vms)
}

async fn side_backend(g: &GlobalArgs, address: &str, side: Side) -> Result<Arc<dyn Backend>> {
    let (backend, _) = backend_at(g, address)
        .await
        .with_context(|| format!("{side} repository {address}"))?;
    Ok(backend)
}

/// Opens one side; errors name the side, and a wrong passphrase names the flag and
/// variable that set that side's passphrase.
async fn open_side(
    g: &GlobalArgs,
    backend: Arc<dyn Backend>,
    pass: &str,
    side: Side,
) -> Result<Arc<Repository>> {
    let what = side.to_string();
    let flags = match side {
        Side::Source => "--from-password-file / LIFEBOAT_FROM_PASSWORD",
        Side::Destination => "--to-password-file / LIFEBOAT_TO_PASSWORD",
    };
    let address = backend.location();
    open_with(g, backend, pass).await.map_err(|e| {
        match e.downcast_ref::<StoreError>() {
            Some(StoreError::WrongPassphrase { .. }) => anyhow!(
                "{what} repository: {e} (the {what}'s passphrase comes from {flags}, else --password-file / LIFEBOAT_PASSWORD)"
            ),
            _ => e.context(format!("{what} repository {address}")),
        }
    })
}

fn print_text(r: &ReplicateReport) {
    for c in &r.copied {
        println!(
            "copied {}/{} of {} (snapshot {} → {})",
            c.vm,
            c.disk,
            c.time,
            &c.source_snapshot[..8],
            &c.snapshot[..8]
        );
    }
    println!(
        "{} snapshot(s) copied, {} already there; sent {} chunks, {} ({}); {} already at the destination; took {:.2} s",
        r.snapshots_copied,
        r.snapshots_present,
        r.chunks_sent,
        bytes(r.bytes_sent),
        rate(r.bytes_sent, r.duration_secs),
        bytes(r.bytes_skipped),
        r.duration_secs
    );
    for n in &r.newest {
        println!(
            "{}/{}: newest point on the destination {} (lag {})",
            n.vm,
            n.disk,
            n.time,
            lifeboat_policies::format_duration(n.lag_secs)
        );
    }
}
