//! `lifeboat forget`: applies a retention rule — given as flags, or a protection
//! group's from the configuration (`--group`) — to every (VM, disk) history, and
//! deletes the manifests of the snapshots no rule keeps.
//!
//! Only manifests go: the chunks and packs stay until a garbage collection (`prune`)
//! finds them unreferenced, so forget is quick and never touches data
//! another snapshot might share.

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use lifeboat_policies::{Decision, Retention, Scope, SnapshotRef, Tz, apply_retention};
use lifeboat_store::{BackendError, Repository, StoreError};

use crate::args::{ForgetArgs, GlobalArgs};
use crate::config_file;
use crate::output::print_json;
use crate::repository::open;

const PRUNE_NOTE: &str =
    "forgotten snapshots' data stays in the repository until `lifeboat prune` reclaims it";

/// The rule to apply and where: from flags, or from a configured group.
struct Plan {
    global: GlobalArgs,
    rule: Retention,
    timezone: Tz,
    group: Option<String>,
    scope: Scope,
}

fn plan(g: &GlobalArgs, a: &ForgetArgs) -> Result<Plan> {
    if let Some(name) = &a.group {
        let config = config_file::load(&a.config)?;
        let (group, repo) = config_file::group(&config, name)?;
        return Ok(Plan {
            global: config_file::global_for(g, repo),
            rule: group.retention.clone(),
            timezone: group.timezone,
            group: Some(group.name.clone()),
            scope: Scope {
                vm: a.vm.clone(),
                disk: a.disk.clone(),
                vms: Some(group.vms.iter().map(|v| v.name.clone()).collect()),
            },
        });
    }
    let rule = Retention {
        keep_last: a.keep_last,
        keep_hourly: a.keep_hourly,
        keep_daily: a.keep_daily,
        keep_weekly: a.keep_weekly,
        keep_monthly: a.keep_monthly,
        keep_yearly: a.keep_yearly,
        keep_within: a.keep_within,
    };
    // Checked before opening the repository: with no rule, every snapshot would go.
    if rule.keeps_nothing() {
        bail!(
            "no keep rule given, so forget would remove every snapshot; pass at least one of \
             --keep-last, --keep-hourly, --keep-daily, --keep-weekly, --keep-monthly, \
             --keep-yearly or --keep-within, or --group NAME to use a configured group's"
        );
    }
    Ok(Plan {
        global: g.clone(),
        rule,
        timezone: a.timezone,
        group: None,
        scope: Scope {
            vm: a.vm.clone(),
            disk: a.disk.clone(),
            vms: None,
        },
    })
}

pub async fn run(g: &GlobalArgs, a: ForgetArgs) -> Result<()> {
    let plan = plan(g, &a)?;
    let repo = open(&plan.global).await?;
    let refs = snapshots_in_scope(&repo, &plan.scope).await?;
    let decisions = apply_retention(&refs, &plan.rule, Utc::now(), plan.timezone);
    let (removed, locked) = if a.dry_run {
        (Vec::new(), Vec::new())
    } else {
        forget_unkept(g, &repo, &decisions).await?
    };
    report(g, &a, &plan, &decisions, &removed, &locked);
    Ok(())
}

async fn snapshots_in_scope(repo: &Repository, scope: &Scope) -> Result<Vec<SnapshotRef>> {
    let mut refs = Vec::new();
    for s in repo.snapshots().await? {
        if !scope.contains(&s.meta.vm, &s.meta.disk) {
            continue;
        }
        let time: DateTime<Utc> = DateTime::parse_from_rfc3339(&s.meta.time)
            .with_context(|| format!("snapshot {} has a bad time {:?}", s.id, s.meta.time))?
            .with_timezone(&Utc);
        refs.push(SnapshotRef {
            id: s.id,
            vm: s.meta.vm,
            disk: s.meta.disk,
            time,
        });
    }
    Ok(refs)
}

/// Deletes the manifests of the snapshots no rule keeps; returns those removed and
/// those an Object Lock kept.
async fn forget_unkept(
    g: &GlobalArgs,
    repo: &Repository,
    decisions: &[Decision],
) -> Result<(Vec<String>, Vec<String>)> {
    let mut removed = Vec::new();
    let mut locked = Vec::new();
    for d in decisions.iter().filter(|d| !d.keep) {
        match repo.forget_snapshot(&d.snapshot.id).await {
            Ok(()) => removed.push(d.snapshot.id.clone()),
            // Immutable repository: history stays until its lock runs out.
            Err(StoreError::Backend(e @ BackendError::Locked { .. })) => {
                if !g.quiet {
                    eprintln!("warning: snapshot {} kept: {e}", d.snapshot.id);
                }
                locked.push(d.snapshot.id.clone());
            }
            Err(e) => {
                return Err(e).with_context(|| format!("forgetting snapshot {}", d.snapshot.id));
            }
        }
    }
    Ok((removed, locked))
}

fn report(
    g: &GlobalArgs,
    a: &ForgetArgs,
    plan: &Plan,
    decisions: &[Decision],
    removed: &[String],
    locked: &[String],
) {
    let rule = &plan.rule;
    let forget_count = decisions.iter().filter(|d| !d.keep).count();
    if g.json {
        print_json(&serde_json::json!({
            "dry_run": a.dry_run,
            "group": plan.group,
            "rule": rule.describe(),
            "timezone": plan.timezone.name(),
            "decisions": decisions,
            "kept": decisions.len() - forget_count,
            "forgotten": if a.dry_run { 0 } else { removed.len() },
            "locked": locked,
            "would_forget": if a.dry_run { forget_count } else { 0 },
            "note": PRUNE_NOTE,
        }));
        return;
    }
    if g.quiet {
        return;
    }
    let group = plan
        .group
        .as_ref()
        .map(|g| format!(" of group {g}"))
        .unwrap_or_default();
    println!(
        "rule{group}: keep {} (periods in {})",
        rule.describe(),
        plan.timezone.name()
    );
    let mut disk = None;
    for d in decisions {
        let s = &d.snapshot;
        if disk != Some((&s.vm, &s.disk)) {
            println!("{}/{}:", s.vm, s.disk);
            disk = Some((&s.vm, &s.disk));
        }
        let verdict = match (d.keep, a.dry_run) {
            (true, _) => "keep  ",
            (false, true) => "remove",
            (false, false) if locked.contains(&s.id) => "locked",
            (false, false) => "removed",
        };
        println!(
            "  {verdict:<7} {} {}  {}",
            &s.id[..8.min(s.id.len())],
            s.time.format("%Y-%m-%dT%H:%M:%SZ"),
            d.reasons.join(", ")
        );
    }
    let kept = decisions.len() - forget_count;
    if a.dry_run {
        println!(
            "dry run: would keep {kept} and remove {forget_count} snapshot(s); nothing changed"
        );
    } else {
        println!(
            "kept {kept}, removed {} snapshot(s); {PRUNE_NOTE}",
            removed.len()
        );
    }
}
