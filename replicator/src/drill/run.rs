//! One drill from start to report: choose each VM's recovery point, run the
//! pre-script, boot the plan group by group on throwaway disks in the test network,
//! capture evidence, stop everything and remove the disks, then sign and store the
//! report. A failure before a VM starts (no backups, no space, QEMU missing) is an
//! error and leaves nothing behind; a VM that does not boot is a FAILED verdict.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lifeboat_hypervisor::launch::VmLauncher;
use lifeboat_policies::config::{Network, Plan};
use lifeboat_store::{Repository, SnapshotSummary};

use super::boot::{NetworkUse, STOP_GRACE, StartedVm, launch_spec, start_group, watch_group};
use super::disks::{DiskSources, ReadyVm, sanitize};
use super::error::DrillError;
use super::leftovers::remove_dead_leftovers;
use super::report::{
    DrillReport, DrillVerdict, REPORT_VERSION, ReportChain, VmResult, VmVerdict, render_html,
    store_in_repository,
};
use super::select::{PointChoice, VmPoint, point_time, select_point};

/// What to drill, and where.
pub struct DrillRequest {
    pub plan: Plan,
    pub networks: Vec<Network>,
    pub point: PointChoice,
    /// The repository's warm standby directory, when the secondary keeps one.
    pub standby_dir: Option<PathBuf>,
    /// Where the signed reports and their evidence are kept.
    pub reports_dir: PathBuf,
    /// Ranged reads in flight when a disk is served from the repository.
    pub fetches: usize,
    pub launcher: Arc<dyn VmLauncher>,
    /// Leave the VMs running after the report (`DrillOutcome::kept`).
    pub keep: bool,
}

/// The finished drill.
#[derive(Debug)]
pub struct DrillOutcome {
    pub report: DrillReport,
    pub json: PathBuf,
    pub html: PathBuf,
    /// Why the repository has no copy of the report, if it has none.
    pub repository_copy_error: Option<String>,
    /// With `keep`: the VMs still running.
    pub kept: Option<KeptDrill>,
}

pub async fn run_drill(
    repo: Arc<Repository>,
    req: DrillRequest,
) -> Result<DrillOutcome, DrillError> {
    let started = Instant::now();
    let started_at = lifeboat_store::repo::now_rfc3339();
    // Every VM's point first: a plan naming a VM without backups stops here, before
    // anything is created or started.
    let points = select_points(&req, &repo.snapshots().await?)?;
    let chain = ReportChain::open_for_append(&req.reports_dir, repo.evidence_key())?;
    let (seq, previous) = chain.next()?;
    let evidence_dir = chain.evidence_dir(seq);
    remove_dead_leftovers(&req.plan)?;
    let _ = std::fs::remove_dir_all(&evidence_dir);
    let work_dir = req
        .plan
        .overlay_dir
        .join(format!("drill-{seq:06}-{}", sanitize(&req.plan.name)));
    for dir in [&evidence_dir, &work_dir] {
        std::fs::create_dir_all(dir).map_err(|source| DrillError::OverlayDir {
            dir: dir.clone(),
            source,
        })?;
    }
    let dirs = (work_dir.as_path(), evidence_dir.as_path(), chain.dir());
    let mut booted = match boot_plan(&repo, &req, &points, dirs, started).await {
        Ok(b) => b,
        Err(e) => {
            // No report: the evidence of a drill that could not run is not kept.
            let _ = std::fs::remove_dir_all(&work_dir);
            let _ = std::fs::remove_dir_all(&evidence_dir);
            return Err(e);
        }
    };
    let running = std::mem::take(&mut booted.running);
    let (kept, cleanup_secs) = if req.keep {
        let kept = KeptDrill {
            vms: running,
            work_dir: work_dir.clone(),
        };
        (Some(kept), 0.0)
    } else {
        let cleanup = Instant::now();
        end_drill(running, &work_dir).await?;
        (None, cleanup.elapsed().as_secs_f64())
    };
    let mut report = DrillReport {
        version: REPORT_VERSION,
        seq,
        plan: req.plan.name.clone(),
        repository: repo.location(),
        repository_id: repo.config().id.clone(),
        point: req.point.to_string(),
        host: lifeboat_store::repo::hostname(),
        started: started_at,
        finished: lifeboat_store::repo::now_rfc3339(),
        verdict: DrillVerdict::Failed,
        rto_secs: None,
        rto_target_secs: Some(req.plan.rto),
        prepare_secs: booted.prepare_secs,
        cleanup_secs,
        kept_running: kept.is_some(),
        vms: Vec::new(),
        previous,
        signature: String::new(),
    };
    judge(&mut report, booted, &points);
    let mut outcome = publish(&repo, &chain, report).await?;
    outcome.kept = kept;
    Ok(outcome)
}

/// A VM left running by a drill with `keep`.
#[derive(Debug, Clone)]
pub struct KeptVm {
    pub vm: String,
    /// Its serial console log (growing while it runs).
    pub console: PathBuf,
    /// Guest TCP port → where it answers on the host.
    pub ports: Vec<(u16, std::net::SocketAddr)>,
}

/// The VMs of a drill run with `keep`, left running for manual checks (their NBD
/// exports and standby holds with them) until [`KeptDrill::end`].
pub struct KeptDrill {
    vms: Vec<StartedVm>,
    work_dir: PathBuf,
}

impl std::fmt::Debug for KeptDrill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.vms.iter().map(|v| v.ready.vm.as_str()).collect();
        f.debug_struct("KeptDrill").field("vms", &names).finish()
    }
}

impl KeptDrill {
    /// Each kept VM, its serial console log and where its forwarded guest ports answer.
    pub fn vms(&self) -> Vec<KeptVm> {
        self.vms
            .iter()
            .map(|vm| {
                let ports = vm
                    .forwards
                    .iter()
                    .filter_map(|p| Some((*p, vm.running.forwarded_port(*p)?)))
                    .collect();
                KeptVm {
                    vm: vm.ready.vm.clone(),
                    console: vm.running.console_log().to_path_buf(),
                    ports,
                }
            })
            .collect()
    }

    /// Stops the VMs and removes their overlays.
    pub async fn end(self) -> Result<(), DrillError> {
        end_drill(self.vms, &self.work_dir).await
    }
}

/// Stops every VM (before its exports and standby holds go with it), then removes
/// the drill's overlays.
async fn end_drill(vms: Vec<StartedVm>, work_dir: &Path) -> Result<(), DrillError> {
    stop_all(vms).await;
    std::fs::remove_dir_all(work_dir).map_err(|source| DrillError::OverlayDir {
        dir: work_dir.to_path_buf(),
        source,
    })
}

/// What a drill that was killed (daemon stopped, host rebooted) left: its overlays and
/// the evidence of the report it never wrote. Its VMs died with it (QEMU runs with
/// a parent-death signal). Called under the chain's lock, which every drill of a
/// plan on this repository holds, so nothing removed here is in use.
/// Every VM's recovery point, with its boot group (1-based).
fn select_points(
    req: &DrillRequest,
    snapshots: &[SnapshotSummary],
) -> Result<Vec<(usize, String, VmPoint)>, DrillError> {
    req.plan
        .boot_groups
        .iter()
        .enumerate()
        .flat_map(|(g, vms)| vms.iter().map(move |vm| (g + 1, vm.clone())))
        .map(|(g, vm)| select_point(&vm, snapshots, &req.point).map(|p| (g, vm, p)))
        .collect()
}

/// The verdict, the RTO and each VM's point age.
fn judge(report: &mut DrillReport, booted: Booted, points: &[(usize, String, VmPoint)]) {
    let now = time::OffsetDateTime::now_utc();
    let mut vms = booted.results;
    for vm in &mut vms {
        if let Some((_, _, point)) = points.iter().find(|(_, name, _)| *name == vm.vm) {
            vm.point_age_secs = point_time(point).map(|t| (now - t).whole_seconds().max(0) as u64);
        }
    }
    let all_booted = vms.iter().all(|v| v.verdict == VmVerdict::Booted);
    report.verdict = if all_booted {
        DrillVerdict::Passed
    } else {
        DrillVerdict::Failed
    };
    report.rto_secs = booted.last_healthy.filter(|_| all_booted);
    report.vms = vms;
}

/// Signs the report into the chain (JSON and HTML) and stores its sealed copy in the
/// repository.
async fn publish(
    repo: &Repository,
    chain: &ReportChain,
    mut report: DrillReport,
) -> Result<DrillOutcome, DrillError> {
    let json = chain.append(&mut report)?;
    // Rendered after signing, so the page shows the signature.
    let html_path = json.with_extension("html");
    std::fs::write(&html_path, render_html(&report, chain.dir()))
        .map_err(|e| DrillError::evidence(&html_path, e))?;
    let repository_copy_error = store_in_repository(repo, &report)
        .await
        .err()
        .map(|e| e.to_string());
    Ok(DrillOutcome {
        report,
        json,
        html: html_path,
        repository_copy_error,
        kept: None,
    })
}

/// What booting the plan produced.
struct Booted {
    results: Vec<VmResult>,
    /// Seconds from the drill's start to the last VM healthy.
    last_healthy: Option<f64>,
    /// Lifeboat's time preparing disks and starting VMs.
    prepare_secs: f64,
    /// The VMs, still running: the caller stops them (or keeps them).
    running: Vec<StartedVm>,
}

async fn boot_plan(
    repo: &Arc<Repository>,
    req: &DrillRequest,
    points: &[(usize, String, VmPoint)],
    (work_dir, evidence_dir, reports_dir): (&Path, &Path, &Path),
    started: Instant,
) -> Result<Booted, DrillError> {
    run_script(req.plan.pre_script.as_deref(), &req.plan.name).await?;
    let sources = DiskSources {
        repo,
        standby_dir: if req.plan.standby {
            req.standby_dir.as_deref()
        } else {
            None
        },
        work_dir,
        fetches: req.fetches,
    };
    let mut run = GroupRun {
        results: Vec::new(),
        running: Vec::new(),
        prepare: Duration::ZERO,
        failed_group: None,
    };
    let groups = points.iter().map(|(g, ..)| *g).max().unwrap_or(0);
    for group in 1..=groups {
        let members: Vec<&(usize, String, VmPoint)> =
            points.iter().filter(|(g, ..)| *g == group).collect();
        if let Err(e) = run
            .group(
                &sources,
                req,
                group,
                &members,
                (evidence_dir, reports_dir),
                started,
            )
            .await
        {
            stop_all(run.running).await;
            return Err(e);
        }
    }
    let last_healthy = run
        .results
        .iter()
        .map(|r| r.healthy_secs)
        .collect::<Option<Vec<f64>>>()
        .and_then(|h| h.into_iter().reduce(f64::max));
    let post = match run.failed_group {
        None => run_script(req.plan.post_script.as_deref(), &req.plan.name).await,
        Some(_) => Ok(()),
    };
    if let Err(e) = post {
        stop_all(run.running).await;
        return Err(e);
    }
    Ok(Booted {
        results: run.results,
        last_healthy,
        prepare_secs: run.prepare.as_secs_f64(),
        running: run.running,
    })
}

/// The plan's groups so far: results, VMs running, time spent preparing, the first
/// group that did not come up.
struct GroupRun {
    results: Vec<VmResult>,
    running: Vec<StartedVm>,
    prepare: Duration,
    failed_group: Option<usize>,
}

impl GroupRun {
    /// Boots one group (or records it as not started after a failed one). VMs of
    /// earlier groups keep running: later groups may need them.
    async fn group(
        &mut self,
        sources: &DiskSources<'_>,
        req: &DrillRequest,
        group: usize,
        members: &[&(usize, String, VmPoint)],
        (evidence_dir, reports_dir): (&Path, &Path),
        started: Instant,
    ) -> Result<(), DrillError> {
        if let Some(failed) = self.failed_group {
            let skipped = members
                .iter()
                .map(|(g, vm, point)| not_started(*g, vm, point, failed));
            self.results.extend(skipped);
            return Ok(());
        }
        let t = Instant::now();
        let ready = prepare_group(sources, req, members, sources.work_dir).await?;
        let mut vms = start_group(req.launcher.as_ref(), ready, &req.plan, started)
            .await
            .map_err(|(e, _)| e)?;
        self.prepare += t.elapsed();
        let watched = watch_group(group, &mut vms, evidence_dir, reports_dir).await;
        self.running.extend(vms);
        let results = watched?;
        if results.iter().any(|r| r.verdict != VmVerdict::Booted) {
            self.failed_group = Some(group);
        }
        self.results.extend(results);
        Ok(())
    }
}

type ReadyToStart = (
    ReadyVm,
    lifeboat_hypervisor::launch::LaunchSpec,
    Duration,
    Vec<String>,
);

async fn prepare_group(
    sources: &DiskSources<'_>,
    req: &DrillRequest,
    members: &[&(usize, String, VmPoint)],
    work_dir: &Path,
) -> Result<Vec<ReadyToStart>, DrillError> {
    let mut ready = Vec::new();
    for (_, vm, point) in members {
        let prepared = sources.prepare(vm, point).await?;
        let mut warnings = Vec::new();
        let run_dir = work_dir.join(sanitize(vm));
        let spec = launch_spec(
            &prepared,
            &req.plan,
            (&req.networks, NetworkUse::Drill),
            &run_dir,
            &mut warnings,
        );
        let timeout = Duration::from_secs(
            req.plan
                .overrides(vm)
                .map_or(lifeboat_policies::config::DEFAULT_BOOT_TIMEOUT, |o| {
                    o.timeout
                }),
        );
        ready.push((prepared, spec, timeout, warnings));
    }
    Ok(ready)
}

async fn stop_all(vms: Vec<StartedVm>) {
    futures::future::join_all(vms.into_iter().map(|vm| async move {
        if let Err(e) = vm.running.stop(STOP_GRACE).await {
            tracing::warn!(vm = %vm.ready.vm, "stopping the drilled VM: {e}");
        }
    }))
    .await;
}

fn not_started(group: usize, vm: &str, point: &VmPoint, failed: usize) -> VmResult {
    VmResult {
        vm: vm.to_string(),
        group,
        verdict: VmVerdict::NotStarted,
        reason: format!("boot group {failed} did not come up, so group {group} was not started"),
        disks: point
            .values()
            .map(|s: &SnapshotSummary| super::report::BootedDisk {
                disk: s.meta.disk.clone(),
                snapshot: s.id.clone(),
                time: s.meta.time.clone(),
                from: "not started".into(),
            })
            .collect(),
        point_age_secs: None,
        checks: Vec::new(),
        started_secs: None,
        first_output_secs: None,
        healthy_secs: None,
        console_tail: String::new(),
        console: None,
        screenshot: None,
        warnings: Vec::new(),
    }
}

/// Runs a plan's pre- or post-script with the plan's name in `LIFEBOAT_PLAN`.
async fn run_script(script: Option<&Path>, plan: &str) -> Result<(), DrillError> {
    let Some(script) = script else { return Ok(()) };
    let status = tokio::process::Command::new(script)
        .env("LIFEBOAT_PLAN", plan)
        .env("LIFEBOAT_DRILL", "1")
        .status()
        .await
        .map_err(|source| DrillError::ScriptStart {
            script: script.display().to_string(),
            source,
        })?;
    if status.success() {
        Ok(())
    } else {
        Err(DrillError::Script {
            script: script.display().to_string(),
            status: status.to_string(),
        })
    }
}
