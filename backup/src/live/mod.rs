//! Crash-consistent, point-in-time backups of a running QEMU VM's disk ("pull mode",
//! as libvirt's `virDomainBackupBegin` does it), driven over QMP.
//!
//! # The approach: image fleecing with a `sync: none` backup job
//!
//! ```text
//!  guest ──► [copy-before-write filter] ──► drive node (live qcow2, bitmaps)
//!                     │ old data, before it is overwritten          ▲ backing
//!                     ▼                                             │
//!            fleece node (temporary qcow2) ─────────────────────────┘
//!                     │ read-only NBD export on a private unix socket
//!                     ▼
//!              NbdClient ─► NbdSource ─► the backup pipeline
//! ```
//!
//! 1. Create a temporary qcow2 (`blockdev-create` + `blockdev-add`) whose backing is
//!    the live drive node. Unwritten, it reads exactly like the drive.
//! 2. Run the pre hook (e.g. `guest-fsfreeze-freeze` for application consistency).
//! 3. One QMP `transaction`: add the new persistent bitmap, disable the previous
//!    one, and start `blockdev-backup sync=none` from the drive into the fleece
//!    node. The job inserts a copy-before-write filter above the drive: from then on
//!    every guest write first copies the old data into the fleece node. So the fleece
//!    node shows the disk frozen at the transaction, while the guest runs on.
//! 4. Run the post hook (thaw), whatever the transaction did.
//! 5. `nbd-server-start` + `block-export-add` of the fleece node, read-only, with
//!    `bitmaps: [previous]`. QEMU 7.2 finds the bitmap through the backing chain;
//!    it must not be recording to be exported, which step 3 ensured.
//! 6. Read it with [`NbdClient`] (`base:allocation` + `qemu:dirty-bitmap:PREV`).
//!
//! **Why crash-consistent:** a transaction runs with all guest I/O drained, so every
//! write the guest completed before it is in the view and none after it is: exactly
//! what the disk would hold had the host lost power at that instant. The bitmap
//! actions come before the job in the transaction, so even a write that slipped in
//! between would be in the view *and* in the new bitmap (read twice, never missed):
//! the new bitmap holds every write that is not in the view, and the previous one
//! every write between the last snapshot and the view.
//!
//! **Why not `copy-before-write` + `snapshot-access` (QEMU ≥ 7.0)?** Tried on 7.2:
//! it works only after `blockdev-add` of the filter *and* a `qom-set` of the guest
//! device's `drive` property onto it (otherwise `snapshot-access` fails with a
//! permission conflict on the drive), and the export then finds the bitmap only by
//! `{node, name}`, not by name. Neither `blockdev-add` nor `qom-set` is a transaction
//! action, so the point in time could not be tied atomically to the bitmaps; and it
//! rewires the guest device (Lifeboat would need its QOM path, and a crash would
//! leave the guest attached to Lifeboat's filter). The backup job inserts the same
//! filter internally, inside the transaction, without touching the device. Its one
//! drawback, shared with libvirt on this QEMU: the job's filter fails *guest writes*
//! if the fleece image cannot grow (scratch disk full; 7.2's `blockdev-backup` has
//! no `on-cbw-error=break-snapshot`), so the scratch directory (`$TMPDIR`) must hold
//! all data the guest overwrites while the backup runs.
//!
//! # Bitmaps, and why no change is lost
//! Lifeboat bitmaps are named [`BITMAP_PREFIX`] + 16 hex. After a committed snapshot
//! the previous bitmap is removed and the new one kept. After a failure the new one
//! is merged back into the previous one, which is re-enabled, and the new one removed
//! (one transaction), so the next backup still sees every write since the last
//! committed snapshot. A backup that is killed leaves the previous bitmap disabled and
//! the new one recording: the next run merges the recording Lifeboat bitmaps into the
//! previous one inside its transaction, so nothing is lost there either.
//!
//! # Cleanup
//! Each object (scratch nodes, job, NBD server, export) registers its undo step as
//! soon as it exists; the steps run in reverse on commit, on failure and on errors
//! halfway. Objects are named after a hash of the drive node, so objects that a
//! killed run left behind are recognised and removed by the next backup of the same
//! drive. QEMU serves one client per QMP socket, so while Lifeboat holds its socket
//! no other Lifeboat process can be using it.

mod graph;
mod hooks;
mod nodes;
mod plan;

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use lifeboat_hypervisor::nbd::{ALLOCATION_CONTEXT, NbdClient, dirty_bitmap_context};
use lifeboat_hypervisor::qmp::Qmp;
use lifeboat_store::Repository;
use lifeboat_store::format::vm_definition::VmDefinition;
use serde_json::{Value, json};

use crate::cbt::{BITMAP_PREFIX, previous_snapshot};
use crate::definition::capture_from_qmp;
use crate::error::BackupError;
use crate::request::ReadMode;
use crate::source::{DiskSource, NbdSource, nbd_err};
use graph::Session;
pub use hooks::Hooks;
use nodes::NodeInfo;
use plan::{Plan, plan, short_id};

/// A running VM's disk prepared for backup: a point-in-time NBD view + read mode.
/// Call [`committed`](Self::committed) or [`failed`](Self::failed) when done.
pub struct LiveDisk {
    pub source: Arc<dyn DiskSource>,
    pub mode: ReadMode,
    /// The bitmap this backup started; the snapshot records it for the next one.
    pub new_bitmap: Option<String>,
    /// The running VM's definition, read on the same QMP connection (QEMU serves
    /// one client per monitor socket), when the caller asked for it.
    /// (Boxed: it is large and rarely there.)
    pub definition: Option<Box<VmDefinition>>,
    session: Option<Session>,
}

impl fmt::Debug for LiveDisk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LiveDisk")
            .field("source", &self.source)
            .field("mode", &self.mode.name())
            .field("new_bitmap", &self.new_bitmap)
            .finish_non_exhaustive()
    }
}

/// Prepares `node` (a block node name, or a device/qdev id) of the VM behind
/// `qmp_socket` for a backup of `vm`/`disk`: takes the point-in-time view between the
/// hooks and exports it. On error everything created so far is torn down again.
pub async fn prepare_live(
    qmp_socket: &Path,
    node: &str,
    repo: &Repository,
    vm: &str,
    disk: &str,
    hooks: &Hooks,
    read_definition: bool,
) -> Result<LiveDisk, BackupError> {
    let what = format!("drive {node} of VM {vm}");
    let mut qmp = Qmp::connect(qmp_socket)
        .await
        .map_err(|e| graph::err(&what, e))?;
    let definition = match read_definition {
        true => live_definition(&mut qmp, node, disk).await.map(Box::new),
        false => None,
    };
    let mut session = Session::new(qmp, what);
    let info = session.resolve(node).await?;
    let what = format!("drive {} of VM {vm}", info.node_name);
    session.set_node(&info.node_name, what.clone());
    // Objects a killed run left behind hold the previous bitmap busy; remove them
    // before reading the bitmaps.
    session.clean_stale().await?;
    let info = session.node_info().await?;
    let plan = plan(previous_snapshot(repo, vm, disk).await?, &info);
    if let Plan::Scan { reason } = &plan {
        tracing::warn!("{what}: full read: {reason}");
    }
    let env = hooks::Env {
        vm: vm.to_string(),
        disk: disk.to_string(),
        node: info.node_name.clone(),
    };
    match start(&mut session, &info, plan, hooks, &env, qmp_socket).await {
        Ok((source, mode)) => Ok(LiveDisk {
            source,
            mode,
            new_bitmap: session.new_bitmap.clone(),
            definition,
            session: Some(session),
        }),
        Err(e) => {
            session.rollback().await;
            Err(e)
        }
    }
}

/// Steps 1–6 of the module docs. Every object created registers its undo step in
/// `s` at once, so the caller can always roll back.
async fn start(
    s: &mut Session,
    info: &NodeInfo,
    plan: Plan,
    hooks: &Hooks,
    env: &hooks::Env,
    qmp_socket: &Path,
) -> Result<(Arc<dyn DiskSource>, ReadMode), BackupError> {
    s.create_fleece(info.virtual_size()).await?;
    take_point_in_time(s, info, &plan, hooks, env).await?;
    let source = open_view(s, &plan, qmp_socket).await?;
    let mode = read_mode(plan, &source).await?;
    Ok((Arc::new(source), mode))
}

/// Steps 2–4: the pre hook, the transaction that fixes the point in time, and the
/// post hook, which runs whatever happened before it.
async fn take_point_in_time(
    s: &mut Session,
    info: &NodeInfo,
    plan: &Plan,
    hooks: &Hooks,
    env: &hooks::Env,
) -> Result<(), BackupError> {
    if let Err(e) = hooks::run(hooks.pre.as_deref(), "pre", env, &[]).await {
        // The pre hook may have done part of its work (frozen some filesystems):
        // give the post hook the chance to undo it.
        post_hook(hooks, env, false).await;
        return Err(BackupError::Source {
            path: s.what.clone(),
            source: std::io::Error::other(format!("backup aborted: {e}")),
        });
    }
    let new_bitmap = format!("{BITMAP_PREFIX}{:016x}", rand::random::<u64>());
    let actions = transaction_actions(s, info, plan, &new_bitmap);
    let tx = s.qmp("transaction", json!({ "actions": actions })).await;
    if tx.is_ok() {
        s.snapshot_taken(new_bitmap, plan);
    }
    post_hook(hooks, env, tx.is_ok()).await;
    tx.map(drop)
}

/// Step 3's actions: add the new bitmap; for an incremental, disable the previous
/// one and merge an interrupted backup's bitmaps into it; then start the job whose
/// copy-before-write filter holds the view. Bitmaps first: see the module docs.
fn transaction_actions(s: &Session, info: &NodeInfo, plan: &Plan, new_bitmap: &str) -> Vec<Value> {
    let mut actions = vec![json!({"type": "block-dirty-bitmap-add", "data": {
        "node": s.node, "name": new_bitmap,
        // Only qcow2 stores bitmaps; elsewhere tracking lasts while the VM runs.
        "persistent": info.drv == "qcow2",
    }})];
    if let Plan::Incremental {
        bitmap,
        granularity,
        merge,
        ..
    } = plan
    {
        // Same granularity, so a merge after a failure loses no precision.
        actions[0]["data"]["granularity"] = json!(granularity);
        actions.push(
            json!({"type": "block-dirty-bitmap-disable", "data": {"node": s.node, "name": bitmap}}),
        );
        if !merge.is_empty() {
            actions.push(json!({"type": "block-dirty-bitmap-merge", "data": {
                "node": s.node, "target": bitmap, "bitmaps": merge}}));
        }
    }
    actions.push(json!({"type": "blockdev-backup", "data": {
        "job-id": s.names.job, "device": s.node, "target": s.names.fleece, "sync": "none",
    }}));
    actions
}

/// Steps 5–6: export the view (with the previous bitmap, for an incremental) and
/// connect to it.
async fn open_view(
    s: &mut Session,
    plan: &Plan,
    qmp_socket: &Path,
) -> Result<NbdSource, BackupError> {
    let bitmap = match plan {
        Plan::Incremental { bitmap, .. } => Some(bitmap.as_str()),
        Plan::Scan { .. } => None,
    };
    let address = s.export(bitmap).await?;
    let mut contexts = vec![ALLOCATION_CONTEXT.to_string()];
    contexts.extend(bitmap.map(dirty_bitmap_context));
    let description = format!(
        "{} (point-in-time view via QMP {})",
        s.what,
        qmp_socket.display()
    );
    let client = NbdClient::connect(&address, &contexts)
        .await
        .map_err(|e| nbd_err(&s.what, e))?;
    Ok(NbdSource::new(client, description))
}

/// What the backup reads: everything, or what the previous bitmap marks dirty in
/// the view.
async fn read_mode(plan: Plan, source: &NbdSource) -> Result<ReadMode, BackupError> {
    let (prev, bitmap, merge) = match plan {
        Plan::Scan { reason } => return Ok(ReadMode::Full { reason }),
        Plan::Incremental {
            prev,
            bitmap,
            merge,
            ..
        } => (prev, bitmap, merge),
    };
    let dirty = source.dirty_ranges(&bitmap).await?;
    let mut reason = format!(
        "QEMU dirty bitmap {bitmap} since snapshot {} (point-in-time export of the running VM)",
        short_id(&prev.id)
    );
    if !merge.is_empty() {
        reason.push_str(&format!(
            ", merged with {} bitmap(s) of an interrupted backup",
            merge.len()
        ));
    }
    Ok(ReadMode::Incremental {
        parent: prev.id,
        previous: Arc::new(prev.manifest.extents),
        dirty,
        reason,
    })
}

async fn post_hook(hooks: &Hooks, env: &hooks::Env, taken: bool) {
    let flag = [("LIFEBOAT_SNAPSHOT_TAKEN", if taken { "1" } else { "0" })];
    if let Err(e) = hooks::run(hooks.post.as_deref(), "post", env, &flag).await {
        // The view is taken (or not) either way; a failed thaw is the operator's to see.
        tracing::error!("{e}");
    }
}

impl LiveDisk {
    /// The snapshot is committed: tear down the export, job and fleece, remove the
    /// old Lifeboat bitmaps and keep the new one. Fails if the point-in-time view was
    /// lost during the backup (its job gone): the snapshot is then not trustworthy,
    /// and the bitmaps are handled as after a failure, so the next backup is a scan.
    pub async fn committed(mut self) -> Result<(), BackupError> {
        let mut s = self
            .session
            .take()
            .expect("a LiveDisk has a session until consumed");
        drop(self); // closes our NBD connection before the export goes
        let intact = s.view_intact().await;
        let torn = s.teardown().await;
        if let Err(e) = intact {
            s.restore_bitmaps().await;
            return Err(e);
        }
        let kept = s.keep_new_bitmap().await;
        torn.and(kept)
    }

    /// The backup failed: tear everything down and fold the new bitmap back into the
    /// previous one, so the next backup still sees every change since the last
    /// committed snapshot. Problems are logged: the backup error is what matters.
    pub async fn failed(mut self) {
        let mut s = self
            .session
            .take()
            .expect("a LiveDisk has a session until consumed");
        drop(self);
        s.rollback().await;
    }
}

impl Drop for LiveDisk {
    fn drop(&mut self) {
        if let Some(s) = &self.session {
            tracing::warn!(
                "{}: backup abandoned without committed() or failed(); its job, export and \
                 scratch nodes stay in QEMU until the next backup of this drive removes them",
                s.what
            );
        }
    }
}

/// Longest a live backup waits for the VM's definition: a monitor too slow to answer
/// a few queries costs the snapshot its definition, not the backup its time.
const DEFINITION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

async fn live_definition(qmp: &mut Qmp, drive: &str, disk: &str) -> Option<VmDefinition> {
    match tokio::time::timeout(DEFINITION_TIMEOUT, capture_from_qmp(qmp, drive, disk)).await {
        Ok(Ok(d)) => Some(d),
        Ok(Err(e)) => {
            tracing::warn!(
                "cannot read the VM definition over QMP ({e}); the snapshot records none"
            );
            None
        }
        Err(_) => {
            tracing::warn!(
                "the VM's monitor did not describe the VM within {} s; the snapshot records no definition",
                DEFINITION_TIMEOUT.as_secs()
            );
            None
        }
    }
}
