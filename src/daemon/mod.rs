//! `lifeboat daemon`: runs the configuration's schedules — a backup per disk on each
//! group's `schedule`, retention (`forget --group`) on its `forget_schedule`, `prune`
//! on a repository's `prune_schedule`, `replicate` after backups and on a
//! replication's `schedule` (see [`replication`]), `standby sync`, drills, metadata
//! backups (see [`timers`]) — and records every job in the state database.
//!
//! Rules:
//! - at most `max_concurrent_jobs` jobs at once, and never two for the same disk: a
//!   run that comes due while the disk's previous job is queued or running is
//!   recorded as `skipped`;
//! - prune runs beside backups (its lease and commit guard make that safe, see
//!   ARCHITECTURE "Garbage collection"), so a long prune never holds backups off;
//! - a run missed while the daemon was down (a disk whose next run after its last
//!   good backup is already past) is caught up at start; every replication runs
//!   once at start (incremental: it copies what was committed meanwhile);
//! - SIGTERM / SIGINT: no new jobs; queued ones are `cancelled`; running ones get
//!   `stop_timeout` to finish, then SIGTERM (recorded `interrupted`); exit 0. A
//!   second signal interrupts at once.

mod definitions;
pub mod drills;
mod job;
mod job_command;
pub mod metadata;
mod metrics;
mod replication;
pub mod state;
mod timers;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use chrono::Utc;
use lifeboat_policies::Config;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use job::{Outcome, Spec, Stage};
use job_command::{JobCommand, METADATA_JOB};
use state::{JobKey, JobResult, JobStatus, State};
use timers::{Timer, timers};

/// The scheduler wakes at least this often, to keep the heartbeat fresh and to notice
/// wall-clock jumps.
const MAX_SLEEP: Duration = Duration::from_secs(15);

/// Settings after flags, environment and the `[daemon]` table are combined (by the
/// `daemon` command).
#[derive(Debug, Clone)]
pub struct Settings {
    pub state_dir: PathBuf,
    pub cache_dir: Option<PathBuf>,
    pub jobs: usize,
    pub metrics_listen: Option<std::net::SocketAddr>,
    pub retries: u32,
    pub retry_delay: Duration,
    pub stop_timeout: Duration,
}

struct Ctx {
    config: Arc<Config>,
    exe: PathBuf,
    commands: job_command::Builder,
    settings: Settings,
    state: Arc<State>,
    slots: Arc<Semaphore>,
    in_flight: Mutex<HashSet<String>>,
    replicating: replication::Pairs,
    stage: watch::Receiver<Stage>,
}

/// Runs the schedules of `config` (read from `config_path`, which forget jobs read
/// again) until SIGTERM or SIGINT.
pub async fn run(config: Config, config_path: PathBuf, settings: Settings) -> Result<()> {
    check_passwords(&config)?;
    check_recipients(&config)?;
    let exe = std::env::current_exe().context("finding the lifeboat executable to run jobs")?;
    let state = open_state(&settings.state_dir, &config).await?;
    definitions::write_definitions(&config, &settings.state_dir)?;
    let config = Arc::new(config);
    if let Some(addr) = settings.metrics_listen {
        serve_metrics(addr, &config, &state).await?;
    }
    let (stage_tx, stage_rx) = watch::channel(Stage::Running);
    let ctx = Arc::new(Ctx {
        config: config.clone(),
        exe,
        commands: job_command::Builder {
            config_path,
            cache_dir: settings.cache_dir.clone(),
            state_dir: settings.state_dir.clone(),
        },
        slots: Arc::new(Semaphore::new(settings.jobs)),
        in_flight: Mutex::new(HashSet::new()),
        replicating: replication::Pairs::default(),
        stage: stage_rx,
        state,
        settings,
    });
    tracing::info!(
        "lifeboat daemon started: {} group(s), {} job(s) at once, state in {}",
        config.groups.len(),
        ctx.settings.jobs,
        ctx.settings.state_dir.display()
    );
    let mut jobs = JoinSet::new();
    catch_up(&ctx, &config, &mut jobs).await;
    // Each replication once at start: it copies whatever was committed while the
    // daemon was down (or by hand), and costs a listing when nothing is new.
    for ri in 0..config.replications.len() {
        jobs.spawn(replicate(ctx.clone(), ri));
    }
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    run_timers(&ctx, &config, &mut jobs, &mut term, &mut int).await;
    shutdown(&ctx, stage_tx, &mut jobs, &mut term, &mut int).await;
    let now = Utc::now();
    db(&ctx.state, move |s| s.stop_daemon(now)).await?;
    tracing::info!("lifeboat daemon stopped");
    Ok(())
}

/// Opens the state database: records jobs a previous daemon left behind as
/// interrupted, takes the heartbeat, and notes when each configured disk was first
/// scheduled (the RPO clock of a disk never backed up starts there).
async fn open_state(dir: &std::path::Path, config: &Config) -> Result<Arc<State>> {
    let state = Arc::new(State::open(dir)?);
    let now = Utc::now();
    let stale = db(&state, move |s| s.start_daemon(now)).await?;
    if stale > 0 {
        tracing::warn!("{stale} job(s) of a previous daemon were cut off; recorded as interrupted");
    }
    let disks: Vec<(String, String, String)> = config
        .groups
        .iter()
        .flat_map(|g| {
            g.vms.iter().flat_map(move |v| {
                v.disks
                    .iter()
                    .map(move |d| (g.name.clone(), v.name.clone(), d.name.clone()))
            })
        })
        .collect();
    let pairs: Vec<(String, String)> = config
        .replications
        .iter()
        .map(|r| (r.from.clone(), r.to.clone()))
        .collect();
    db(&state, move |s| {
        disks
            .iter()
            .try_for_each(|(g, v, d)| s.saw_disk(g, v, d, now))?;
        pairs
            .iter()
            .try_for_each(|(from, to)| s.saw_replication(from, to, now))
    })
    .await?;
    Ok(state)
}

async fn serve_metrics(
    addr: std::net::SocketAddr,
    config: &Arc<Config>,
    state: &Arc<State>,
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!(
            "listening for metrics on {addr} (is another daemon running? pass \
             --metrics-listen ADDR, or \"\" to turn metrics off)"
        )
    })?;
    tracing::info!("serving Prometheus metrics on http://{addr}/metrics");
    tokio::spawn(metrics::serve(listener, config.clone(), state.clone()));
    Ok(())
}

/// Fires the timers as they come due, until the first SIGTERM or SIGINT.
async fn run_timers(
    ctx: &Arc<Ctx>,
    config: &Config,
    jobs: &mut JoinSet<()>,
    term: &mut Signal,
    int: &mut Signal,
) {
    let mut timers = timers(config);
    loop {
        let now = Utc::now();
        for (timer, schedule, next) in timers.iter_mut() {
            if next.is_some_and(|t| t <= now) {
                fire(ctx, config, *timer, jobs).await;
                // From now, not from the missed time: runs skipped by a suspend or a
                // clock jump are not replayed one after another.
                *next = schedule.next_after(now);
            }
        }
        while jobs.try_join_next().is_some() {}
        if let Err(e) = db(&ctx.state, move |s| s.heartbeat(now)).await {
            tracing::warn!("{e:#}");
        }
        let wake = timers
            .iter()
            .filter_map(|(_, _, next)| *next)
            .min()
            .map_or(MAX_SLEEP, |t| (t - Utc::now()).to_std().unwrap_or_default())
            .min(MAX_SLEEP);
        tokio::select! {
            () = tokio::time::sleep(wake) => {}
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
}

/// Stop starting jobs, give running ones `stop_timeout`, then interrupt them.
async fn shutdown(
    ctx: &Ctx,
    stage: watch::Sender<Stage>,
    jobs: &mut JoinSet<()>,
    term: &mut Signal,
    int: &mut Signal,
) {
    while jobs.try_join_next().is_some() {}
    let running = jobs.len();
    tracing::info!(
        "stopping: no new jobs; waiting up to {}s for {running} job(s)",
        ctx.settings.stop_timeout.as_secs()
    );
    stage.send_replace(Stage::Stopping);
    let deadline = tokio::time::Instant::now() + ctx.settings.stop_timeout;
    let mut interrupting = false;
    loop {
        tokio::select! {
            r = jobs.join_next() => if r.is_none() { break },
            () = tokio::time::sleep_until(deadline), if !interrupting => {
                tracing::warn!("stop timeout reached: interrupting the running job(s)");
                interrupting = true;
                stage.send_replace(Stage::Interrupting);
            }
            _ = term.recv(), if !interrupting => {
                tracing::warn!("second signal: interrupting the running job(s)");
                interrupting = true;
                stage.send_replace(Stage::Interrupting);
            }
            _ = int.recv(), if !interrupting => {
                interrupting = true;
                stage.send_replace(Stage::Interrupting);
            }
        }
    }
}

/// Runs the closure on a blocking thread: SQLite calls must not stall the runtime.
async fn db<T: Send + 'static>(
    state: &Arc<State>,
    f: impl FnOnce(&State) -> Result<T> + Send + 'static,
) -> Result<T> {
    let state = state.clone();
    tokio::task::spawn_blocking(move || f(&state))
        .await
        .context("state database task panicked")?
}

/// Jobs are children with no terminal: a missing passphrase must fail here, at
/// start, not in every job at 01:00.
fn check_passwords(config: &Config) -> Result<()> {
    let env_ok = std::env::var_os("LIFEBOAT_PASSWORD").is_some_and(|p| !p.is_empty())
        || std::env::var_os("LIFEBOAT_PASSWORD_FILE").is_some();
    for r in &config.repositories {
        match &r.password_file {
            Some(f) => {
                if let Err(e) = std::fs::File::open(f) {
                    bail!(
                        "repository {:?}: cannot read its password_file {}: {e}",
                        r.name,
                        f.display()
                    );
                }
            }
            None if !env_ok && used(config, &r.name) => bail!(
                "repository {:?} has no password_file, and neither LIFEBOAT_PASSWORD_FILE nor \
                 LIFEBOAT_PASSWORD is set; add password_file = \"/etc/lifeboat/{}.pass\" to it",
                r.name,
                r.name
            ),
            None => {}
        }
    }
    Ok(())
}

/// A `[metadata_backup]` recipient that is not a real age key would fail every
/// metadata backup; say so at start instead.
fn check_recipients(config: &Config) -> Result<()> {
    for r in config.metadata_backup.iter().flat_map(|m| &m.recipients) {
        lifeboat_metadata::keys::parse_recipient(r).with_context(|| {
            "[metadata_backup] recipients: paste the age1… line `lifeboat recovery-key new` \
             printed"
        })?;
    }
    Ok(())
}

/// A repository some job opens: a group's, one with a standby, a scheduled drill's, or either end of a
/// replication (whose child may also take LIFEBOAT_FROM_PASSWORD / LIFEBOAT_TO_PASSWORD).
fn used(config: &Config, repo: &str) -> bool {
    let env = |name| std::env::var_os(name).is_some_and(|p| !p.is_empty());
    config.groups.iter().any(|g| g.repository == repo)
        || config.repository(repo).is_some_and(|r| r.standby.is_some())
        || config
            .plans
            .iter()
            .any(|p| p.repository == repo && p.drill_schedule.is_some())
        || config.replications.iter().any(|r| {
            (r.from == repo && !env("LIFEBOAT_FROM_PASSWORD"))
                || (r.to == repo && !env("LIFEBOAT_TO_PASSWORD"))
        })
}

async fn fire(ctx: &Arc<Ctx>, config: &Config, timer: Timer, jobs: &mut JoinSet<()>) {
    let w = &ctx.commands;
    match timer {
        Timer::Backup(gi) => {
            let g = &config.groups[gi];
            for (vi, vm) in g.vms.iter().enumerate() {
                for di in 0..vm.disks.len() {
                    if let Some(command) = w.backup(config, gi, vi, di) {
                        submit(ctx, command, jobs).await;
                    }
                }
            }
        }
        Timer::Forget(gi) => {
            if let Some(command) = w.forget(config, gi) {
                submit(ctx, command, jobs).await;
            }
        }
        Timer::Prune(ri) => submit(ctx, w.prune(&config.repositories[ri]), jobs).await,
        Timer::Standby(ri) => {
            if let Some(command) = w.standby(&config.repositories[ri]) {
                submit(ctx, command, jobs).await;
            }
        }
        Timer::Replicate(ri) => {
            jobs.spawn(replicate(ctx.clone(), ri));
        }
        Timer::Drill(pi) => {
            if let Some(command) = w.drill(config, &config.plans[pi]) {
                submit(ctx, command, jobs).await;
            }
        }
        Timer::Metadata => submit(ctx, w.metadata_backup(), jobs).await,
    }
}

/// Backups missed while the daemon was down run now, not at the next scheduled time.
async fn catch_up(ctx: &Arc<Ctx>, config: &Config, jobs: &mut JoinSet<()>) {
    let now = Utc::now();
    for (gi, g) in config.groups.iter().enumerate() {
        for (vi, vm) in g.vms.iter().enumerate() {
            for (di, disk) in vm.disks.iter().enumerate() {
                let (gn, vn, dn) = (g.name.clone(), vm.name.clone(), disk.name.clone());
                let history = match db(&ctx.state, move |s| s.disk_history(&gn, &vn, &dn)).await {
                    Ok(h) => h,
                    Err(e) => {
                        tracing::warn!("{e:#}");
                        continue;
                    }
                };
                let Some(last) = history.last_success else {
                    continue;
                };
                if g.schedule.next_after(last.time).is_some_and(|t| t < now) {
                    tracing::info!(
                        "{}/{}: a scheduled backup was missed while the daemon was down; running it now",
                        vm.name,
                        disk.name
                    );
                    if let Some(w) = ctx.commands.backup(config, gi, vi, di) {
                        submit(ctx, w, jobs).await;
                    }
                }
            }
        }
    }
}

/// Records the job and starts its task — or records it as skipped if its disk (or
/// group's forget, or repository's prune) already has one queued or running.
async fn submit(ctx: &Arc<Ctx>, w: JobCommand, jobs: &mut JoinSet<()>) {
    let now = Utc::now();
    let busy = !ctx
        .in_flight
        .lock()
        .expect("in-flight set poisoned")
        .insert(w.exclusive.clone());
    let label = format!("{} {}", w.key.kind, describe(&w.key));
    let key = w.key.clone();
    if busy {
        tracing::warn!("{label}: skipped, the previous job is still queued or running");
        let r = db(&ctx.state, move |s| {
            s.add_job(
                &key,
                JobStatus::Skipped,
                Some("skipped: the previous job for the same disk (or group, or repository) was still queued or running; make the schedule less frequent or the job faster"),
                now,
            )
        })
        .await;
        if let Err(e) = r {
            tracing::error!("{e:#}");
        }
        return;
    }
    let id = match db(&ctx.state, move |s| {
        s.add_job(&key, JobStatus::Queued, None, now)
    })
    .await
    {
        Ok(id) => id,
        Err(e) => {
            // Without a record the RPO evidence would lie; better not to run.
            tracing::error!("{label}: not started, cannot record it: {e:#}");
            ctx.in_flight
                .lock()
                .expect("in-flight set poisoned")
                .remove(&w.exclusive);
            return;
        }
    };
    let spec = Spec {
        label,
        exe: ctx.exe.clone(),
        args: w.args,
    };
    let ctx = ctx.clone();
    jobs.spawn(async move {
        let status = run_job(&ctx, id, &spec).await;
        ctx.in_flight
            .lock()
            .expect("in-flight set poisoned")
            .remove(&w.exclusive);
        if let (JobStatus::Ok, "backup", Some(g), Some(vm)) =
            (status, w.key.kind, &w.key.group, &w.key.vm)
        {
            after_backup(&ctx, g, vm).await;
        }
    });
}

/// Runs replication `ri` now, or once more after its run in progress.
async fn replicate(ctx: Arc<Ctx>, ri: usize) {
    let go_on = || *ctx.stage.borrow() == Stage::Running;
    let run = || run_replication(&ctx, ri);
    ctx.replicating.run_coalesced(ri, go_on, run).await;
}

/// After a committed backup of `vm` in `group`: its `after_backup` replications, side
/// by side (each pair on its own).
async fn after_backup(ctx: &Arc<Ctx>, group: &str, vm: &str) {
    let mut runs = JoinSet::new();
    for (ri, r) in ctx.config.replications.iter().enumerate() {
        if r.after_backup && r.covers(group, vm) {
            runs.spawn(replicate(ctx.clone(), ri));
        }
    }
    while runs.join_next().await.is_some() {}
}

/// Records and runs one `replicate` child.
async fn run_replication(ctx: &Arc<Ctx>, ri: usize) {
    let r = &ctx.config.replications[ri];
    let Some(w) = ctx.commands.replicate(&ctx.config, r) else {
        return;
    };
    let key = w.key.clone();
    let now = Utc::now();
    let label = format!("replicate {}", r.name());
    let id = match db(&ctx.state, move |s| {
        s.add_job(&key, JobStatus::Queued, None, now)
    })
    .await
    {
        Ok(id) => id,
        Err(e) => {
            tracing::error!("{label}: not started, cannot record it: {e:#}");
            return;
        }
    };
    let spec = Spec {
        label,
        exe: ctx.exe.clone(),
        args: w.args,
    };
    run_job(ctx, id, &spec).await;
}

fn describe(k: &JobKey) -> String {
    match (&k.vm, &k.disk, &k.group, &k.source) {
        (_, _, Some(plan), _) if k.kind == "drill" => format!("plan {plan}"),
        _ if k.kind == METADATA_JOB => "to its targets".into(),
        (Some(vm), Some(disk), _, _) => format!("{vm}/{disk}"),
        (_, _, Some(g), _) => format!("group {g}"),
        (_, _, _, Some(from)) => format!("{from}->{}", k.repository),
        _ => format!("repository {}", k.repository),
    }
}

/// Runs a recorded job when a slot is free; returns how it ended, as recorded.
async fn run_job(ctx: &Arc<Ctx>, id: i64, spec: &Spec) -> JobStatus {
    let mut stage = ctx.stage.clone();
    let slot = tokio::select! {
        slot = ctx.slots.clone().acquire_owned() => slot.ok(),
        () = job::reached(&mut stage, |s| *s != Stage::Running) => None,
    };
    let Some(_slot) = slot else {
        let r = JobResult {
            error: Some("cancelled: the daemon stopped before the job started".into()),
            ..JobResult::default()
        };
        record(ctx, id, JobStatus::Cancelled, r).await;
        return JobStatus::Cancelled;
    };
    let now = Utc::now();
    if let Err(e) = db(&ctx.state, move |s| s.job_started(id, now)).await {
        tracing::error!("{e:#}");
    }
    tracing::info!("{}: started (job {id})", spec.label);
    let s = &ctx.settings;
    let outcome = job::run(spec, s.retries, s.retry_delay, ctx.stage.clone()).await;
    let (status, result) = match outcome {
        Outcome::Ok(r) => {
            tracing::info!(
                "{}: done{}",
                spec.label,
                r.summary
                    .as_ref()
                    .map(|s| format!(" ({s})"))
                    .unwrap_or_default()
            );
            (JobStatus::Ok, r)
        }
        Outcome::Failed(r) => {
            tracing::error!(
                "{}: failed: {}",
                spec.label,
                r.error.as_deref().unwrap_or("")
            );
            (JobStatus::Failed, r)
        }
        Outcome::Interrupted(r) => {
            tracing::warn!("{}: interrupted by the shutdown", spec.label);
            (JobStatus::Interrupted, r)
        }
    };
    record(ctx, id, status, result).await;
    status
}

async fn record(ctx: &Ctx, id: i64, status: JobStatus, r: JobResult) {
    let now = Utc::now();
    if let Err(e) = db(&ctx.state, move |s| s.job_finished(id, status, &r, now)).await {
        tracing::error!("{e:#}");
    }
}
