//! `failover PLAN`: start every VM of a recovery plan on the secondary, for real —
//! writable disks of their own, the production network mapping, boot groups in
//! order with health checks — and leave them running after Lifeboat exits.
//!
//! All or nothing: if any VM does not come up healthy (or anything fails before),
//! every VM already started is stopped, the writable disks are removed and the state
//! file with them, so the operator can retry (an older point, more room) from a clean
//! slate. The standby images and the repository are only read.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use lifeboat_hypervisor::launch::{BootOutcome, VmLauncher, watch_boot};
use lifeboat_policies::config::{DEFAULT_BOOT_TIMEOUT, Network, Plan};
use lifeboat_store::{Repository, SnapshotSummary};

use super::disks::{DiskSources, check_room};
use super::error::FailoverError;
use super::state::{
    FailedOverDisk, FailedOverVm, FailoverKind, FailoverState, FailoverStates, LockedPlan, Phase,
};
use crate::drill::boot::{NetworkUse, STOP_GRACE, StartedVm, launch_spec, start_group, verdict};
use crate::drill::disks::sanitize;
use crate::drill::{PointChoice, VmPoint, point_time, select_point};
use crate::standby::{fence, unfence};

/// The tag `failover prepare` puts on a VM's final backups, taken after it shut down
/// on the primary: a planned failover starts only from such points.
pub const FINAL_BACKUP_TAG: &str = "lifeboat-final-before-failover";

/// What to fail over, and where.
pub struct FailoverRequest {
    pub plan: Plan,
    pub networks: Vec<Network>,
    pub point: PointChoice,
    pub kind: FailoverKind,
    /// The repository's warm standby directory, when the secondary keeps one.
    pub standby_dir: Option<PathBuf>,
    pub states: FailoverStates,
    /// Ranged reads in flight when a disk is restored from the repository.
    pub fetches: usize,
    /// Must start detachable VMs (`QemuLauncher::detachable`): they outlive Lifeboat.
    pub launcher: Arc<dyn VmLauncher>,
}

/// Starts the plan on the secondary; returns the recorded state (also written to
/// `<state_dir>/failover/<plan>.json`).
pub async fn fail_over(
    repo: Arc<Repository>,
    req: FailoverRequest,
) -> Result<FailoverState, FailoverError> {
    let started = Instant::now();
    let locked = req.states.lock(&req.plan.name)?;
    if let Some(state) = locked.read()? {
        return Err(FailoverError::AlreadyFailedOver {
            plan: req.plan.name.clone(),
            since: state.started,
            state: locked.path.clone(),
        });
    }
    let snapshots = repo.snapshots().await?;
    let points = select_points(&req, &snapshots)?;
    let primary = match req.kind {
        FailoverKind::Planned => {
            check_final(&req.plan.name, &points, &snapshots)?;
            "shut down by `failover prepare`; its final backups are the points used".to_string()
        }
        FailoverKind::Unplanned => "unreachable or lost (not checked): make sure the primary \
            copies never run on the production network again before failback"
            .to_string(),
    };
    let dir = req
        .plan
        .overlay_dir
        .join(format!("failover-{}", sanitize(&req.plan.name)));
    std::fs::create_dir_all(&dir)
        .map_err(|e| FailoverError::io("cannot create the failover directory", &dir, e))?;
    if let Err(e) = check_room(&req.plan.overlay_dir, points.iter().map(|(_, _, p)| p)) {
        let _ = std::fs::remove_dir(&dir);
        return Err(e);
    }
    let mut state = FailoverState::new(&req.plan.name, req.kind, dir.clone());
    state.repository = repo.location();
    state.point = req.point.to_string();
    state.primary = primary;
    locked.write(&state)?;
    let standby_dir = req.standby_dir.as_deref();
    if let Some(root) = standby_dir {
        for (_, vm, _) in &points {
            if let Err(e) = fence(root, vm, &req.plan.name) {
                unfence_all(root, &points);
                let _ = std::fs::remove_dir_all(&dir);
                let _ = locked.remove();
                return Err(e.into());
            }
        }
    }
    let mut starting = Starting {
        locked: &locked,
        state,
        running: Vec::new(),
    };
    match starting.groups(&repo, &req, &points, started).await {
        Ok(()) => starting.finish(started),
        Err(e) => {
            starting.roll_back().await;
            if let Some(root) = standby_dir {
                unfence_all(root, &points);
            }
            Err(offer_older_point(e, &snapshots, &req.plan.name))
        }
    }
}

/// A point that failed verification: name the next older one to fail over to.
fn offer_older_point(e: FailoverError, snapshots: &[SnapshotSummary], plan: &str) -> FailoverError {
    let FailoverError::PointDamaged {
        vm,
        snapshot,
        detail,
        ..
    } = e
    else {
        return e;
    };
    let damaged_time = snapshots
        .iter()
        .find(|s| s.id == snapshot)
        .map(|s| s.meta.time.clone())
        .unwrap_or_default();
    let older = snapshots
        .iter()
        .filter(|s| s.meta.vm == vm && s.meta.time < damaged_time)
        .max_by(|a, b| a.meta.time.cmp(&b.meta.time));
    let advice = match older {
        Some(s) => format!(
            "The next older point of {vm} is {} (snapshot {}): `lifeboat failover {plan} \
             --point {}`; `lifeboat verify --read-data` shows what else is damaged",
            s.meta.time,
            s.short_id(),
            s.meta.time
        ),
        None => format!(
            "{vm} has no older point in this repository; `lifeboat verify --read-data` shows \
             what is damaged, `lifeboat repair index` may recover it"
        ),
    };
    FailoverError::PointDamaged {
        vm,
        snapshot,
        detail,
        advice,
    }
}

fn unfence_all(root: &std::path::Path, points: &[(usize, String, VmPoint)]) {
    for (_, vm, _) in points {
        if let Err(e) = unfence(root, vm) {
            tracing::warn!("{e}");
        }
    }
}

/// A failover between its state's first write and its VMs' detaching.
struct Starting<'a> {
    locked: &'a LockedPlan,
    state: FailoverState,
    running: Vec<StartedVm>,
}

impl Starting<'_> {
    async fn groups(
        &mut self,
        repo: &Arc<Repository>,
        req: &FailoverRequest,
        points: &[(usize, String, VmPoint)],
        started: Instant,
    ) -> Result<(), FailoverError> {
        let sources = DiskSources {
            repo,
            standby_dir: if req.plan.standby {
                req.standby_dir.as_deref()
            } else {
                None
            },
            fetches: req.fetches,
        };
        let groups = points.iter().map(|(g, ..)| *g).max().unwrap_or(0);
        let now = time::OffsetDateTime::now_utc();
        for group in 1..=groups {
            let mut ready = Vec::new();
            for (_, vm, point) in points.iter().filter(|(g, ..)| *g == group) {
                let vm_dir = self.state.dir.join(sanitize(vm));
                let (prepared, disks) = sources.make(vm, point, &vm_dir).await?;
                let mut warnings = Vec::new();
                let spec = launch_spec(
                    &prepared,
                    &req.plan,
                    (&req.networks, NetworkUse::Production),
                    &vm_dir,
                    &mut warnings,
                );
                let timeout = req
                    .plan
                    .overrides(vm)
                    .map_or(DEFAULT_BOOT_TIMEOUT, |o| o.timeout);
                let rpo = point_time(point).map_or(0, |t| (now - t).whole_seconds().max(0) as u64);
                self.state
                    .vms
                    .push(record(vm, group, disks, rpo, &warnings));
                ready.push((prepared, spec, Duration::from_secs(timeout), warnings));
            }
            let vms = start_group(req.launcher.as_ref(), ready, &req.plan, started)
                .await
                .map_err(|(e, _)| FailoverError::from(e))?;
            self.running.extend(vms);
            self.watch_group(group, started).await?;
        }
        Ok(())
    }

    /// Waits for the group's VMs to be healthy; the first that is not fails the
    /// failover.
    async fn watch_group(&mut self, group: usize, started: Instant) -> Result<(), FailoverError> {
        let watches = join_all(
            self.running
                .iter_mut()
                .filter(|vm| {
                    self.state
                        .vms
                        .iter()
                        .any(|r| r.vm == vm.ready.vm && r.group == group)
                })
                .map(|vm| async move {
                    let watch = watch_boot(vm.running.as_mut(), &vm.checks, vm.timeout).await;
                    (
                        vm.ready.vm.clone(),
                        vm.running.console_log().to_path_buf(),
                        watch,
                    )
                }),
        )
        .await;
        for (vm, console, watch) in watches {
            if watch.outcome == BootOutcome::Healthy {
                if let Some(r) = self.state.vms.iter_mut().find(|r| r.vm == vm) {
                    r.healthy_secs = started.elapsed().as_secs_f64();
                }
                continue;
            }
            let (_, why) = verdict(&watch.outcome);
            return Err(FailoverError::Unhealthy { vm, why, console });
        }
        Ok(())
    }

    /// Every VM healthy: hand them over to run on, and record them.
    fn finish(mut self, started: Instant) -> Result<FailoverState, FailoverError> {
        for vm in std::mem::take(&mut self.running) {
            let name = vm.ready.vm.clone();
            let detached = vm.running.detach()?;
            if let Some(r) = self.state.vms.iter_mut().find(|r| r.vm == name) {
                r.running = Some(detached);
            }
            // The disks are the VM's own; nothing else in `ready` must outlive it.
            drop(vm.ready);
        }
        self.state.phase = Phase::Running;
        self.state.rto_secs = Some(started.elapsed().as_secs_f64());
        self.locked.write(&self.state)?;
        Ok(self.state)
    }

    /// Stops what started, removes the disks and the state: as if never run.
    async fn roll_back(self) {
        join_all(self.running.into_iter().map(|vm| async move {
            if let Err(e) = vm.running.stop(STOP_GRACE).await {
                tracing::warn!(vm = %vm.ready.vm, "stopping a failover VM: {e}");
            }
        }))
        .await;
        if let Err(e) = std::fs::remove_dir_all(&self.state.dir) {
            tracing::warn!(dir = %self.state.dir.display(), "removing the failover's disks: {e}");
        }
        if let Err(e) = self.locked.remove() {
            tracing::warn!("{e}");
        }
    }
}

fn record(
    vm: &str,
    group: usize,
    disks: Vec<FailedOverDisk>,
    rpo: u64,
    warnings: &[String],
) -> FailedOverVm {
    FailedOverVm {
        vm: vm.to_string(),
        group,
        disks,
        rpo_secs: rpo,
        healthy_secs: 0.0,
        running: None,
        warnings: warnings.to_vec(),
    }
}

/// Every VM's recovery point, with its boot group (1-based).
fn select_points(
    req: &FailoverRequest,
    snapshots: &[SnapshotSummary],
) -> Result<Vec<(usize, String, VmPoint)>, FailoverError> {
    let mut points = Vec::new();
    for (g, vms) in req.plan.boot_groups.iter().enumerate() {
        for vm in vms {
            points.push((g + 1, vm.clone(), select_point(vm, snapshots, &req.point)?));
        }
    }
    Ok(points)
}

/// A planned failover starts only from final backups: every disk's point carries
/// [`FINAL_BACKUP_TAG`] and is that disk's newest snapshot (nothing was written on the
/// primary after it).
fn check_final(
    plan: &str,
    points: &[(usize, String, VmPoint)],
    snapshots: &[SnapshotSummary],
) -> Result<(), FailoverError> {
    for (_, vm, point) in points {
        for (disk, s) in point {
            let refuse = |reason: String| FailoverError::NotPrepared {
                plan: plan.to_string(),
                reason,
            };
            if !s.meta.tags.iter().any(|t| t == FINAL_BACKUP_TAG) {
                return Err(refuse(format!(
                    "the newest point of {vm}/{disk} ({}, {}) is not a final backup taken after \
                     the VM shut down",
                    s.short_id(),
                    s.meta.time
                )));
            }
            let newer = snapshots
                .iter()
                .any(|o| o.meta.vm == *vm && o.meta.disk == *disk && o.meta.time > s.meta.time);
            if newer {
                return Err(refuse(format!(
                    "{vm}/{disk} has a snapshot newer than its final backup: the VM ran on the \
                     primary after it was prepared"
                )));
            }
        }
    }
    Ok(())
}
