//! The QEMU side of a live backup: what it creates in the VM's block graph, and how
//! each thing is undone. See the parent module for the sequence and why.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use lifeboat_hypervisor::nbd::NbdAddress;
use lifeboat_hypervisor::qmp::{Qmp, QmpError};
use serde_json::{Value, json};

use super::nodes::{Names, NodeInfo};
use super::plan::Plan;
use crate::error::BackupError;

/// How long QEMU may take to drop an export or end a cancelled job.
const GONE_TIMEOUT: Duration = Duration::from_secs(60);
/// sockaddr_un holds 108 bytes including the NUL.
const MAX_SOCKET_PATH: usize = 107;
const SCRATCH_PREFIX: &str = "lifeboat-scratch-";

pub(super) fn err(what: &str, e: QmpError) -> BackupError {
    BackupError::Source {
        path: what.to_string(),
        source: std::io::Error::other(e.to_string()),
    }
}

fn fail(what: &str, message: String) -> BackupError {
    BackupError::Source {
        path: what.to_string(),
        source: std::io::Error::other(message),
    }
}

/// Undo steps, registered as each object comes to exist and run in reverse.
#[derive(Debug)]
enum Undo {
    Node(String),
    Job(String),
    NbdServer,
    Export(String),
}

/// One backup's QMP connection and everything it has changed in QEMU.
#[derive(Debug)]
pub(super) struct Session {
    qmp: Qmp,
    pub node: String,
    /// "drive NODE of VM NAME", for messages.
    pub what: String,
    pub names: Names,
    undo: Vec<Undo>,
    /// The fleece image and the NBD socket; removed after the nodes are deleted.
    scratch: Option<tempfile::TempDir>,
    /// Added by the transaction: records every write after the point in time.
    pub new_bitmap: Option<String>,
    /// The previous bitmap, disabled by the transaction.
    frozen: Option<String>,
    /// Bitmaps of an interrupted backup, merged into `frozen` by the transaction.
    merged: Vec<String>,
}

impl Session {
    pub fn new(qmp: Qmp, what: String) -> Session {
        Session {
            qmp,
            node: String::new(),
            what,
            names: Names::for_node(""),
            undo: Vec::new(),
            scratch: None,
            new_bitmap: None,
            frozen: None,
            merged: Vec::new(),
        }
    }

    pub fn set_node(&mut self, node: &str, what: String) {
        self.node = node.to_string();
        self.names = Names::for_node(node);
        self.what = what;
    }

    pub async fn qmp(&mut self, command: &str, args: Value) -> Result<Value, BackupError> {
        self.qmp
            .execute(command, args)
            .await
            .map_err(|e| err(&self.what, e))
    }

    async fn nodes(&mut self) -> Result<Vec<NodeInfo>, BackupError> {
        let v = self
            .qmp("query-named-block-nodes", json!({"flat": true}))
            .await?;
        serde_json::from_value(v).map_err(|e| {
            fail(
                &self.what,
                format!("unexpected query-named-block-nodes reply: {e}"),
            )
        })
    }

    /// Finds the block node `name`, or the node inserted in the drive/device `name`.
    pub async fn resolve(&mut self, name: &str) -> Result<NodeInfo, BackupError> {
        let nodes = self.nodes().await?;
        if let Some(n) = nodes.iter().find(|n| n.node_name == name) {
            return Ok(n.clone());
        }
        let blocks = self.qmp("query-block", Value::Null).await?;
        let peripheral = format!("/machine/peripheral/{name}/");
        let inserted = blocks.as_array().into_iter().flatten().find_map(|b| {
            let qdev = b["qdev"].as_str().unwrap_or("");
            let hit = b["device"] == name || qdev == name || qdev.starts_with(&peripheral);
            hit.then(|| b["inserted"]["node-name"].as_str()).flatten()
        });
        if let Some(n) = inserted.and_then(|i| nodes.iter().find(|n| n.node_name == i)) {
            return Ok(n.clone());
        }
        let named: Vec<&str> = nodes
            .iter()
            .map(|n| n.node_name.as_str())
            .filter(|n| !n.starts_with('#'))
            .collect();
        Err(fail(
            &self.what,
            format!(
                "the VM has no block node or drive named {name:?} (named nodes: {})",
                named.join(", ")
            ),
        ))
    }

    pub async fn node_info(&mut self) -> Result<NodeInfo, BackupError> {
        let node = self.node.clone();
        self.resolve(&node).await
    }

    /// Removes the job, export, NBD server and scratch nodes a killed backup of this
    /// drive left behind (recognised by name), and their scratch file.
    pub async fn clean_stale(&mut self) -> Result<(), BackupError> {
        let nodes = self.nodes().await?;
        let mut files = Vec::new();
        for name in [self.names.scratch.clone(), self.names.fleece.clone()] {
            if let Some(n) = nodes.iter().find(|n| n.node_name == name) {
                self.undo.push(Undo::Node(name));
                files.push(PathBuf::from(&n.file));
            }
        }
        let jobs = self.qmp("query-block-jobs", Value::Null).await?;
        if listed(&jobs, "device", &self.names.job) {
            self.undo.push(Undo::Job(self.names.job.clone()));
        }
        let exports = self.qmp("query-block-exports", Value::Null).await?;
        let export = listed(&exports, "id", &self.names.export);
        if export || !self.undo.is_empty() {
            // Started after the job, so it was that run's (QEMU has only one).
            self.undo.push(Undo::NbdServer);
        }
        if export {
            self.undo.push(Undo::Export(self.names.export.clone()));
        }
        if !self.undo.is_empty() {
            tracing::warn!(
                "{}: removing what an interrupted backup left in QEMU: {:?}",
                self.what,
                self.undo
            );
            self.teardown().await?;
            for f in files {
                // Only ever delete inside a directory Lifeboat created.
                if let Some(dir) = f.parent()
                    && dir
                        .file_name()
                        .is_some_and(|d| d.to_string_lossy().starts_with(SCRATCH_PREFIX))
                    && let Err(e) = std::fs::remove_dir_all(dir)
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    tracing::warn!(
                        "cannot remove stale scratch directory {}: {e}",
                        dir.display()
                    );
                }
            }
        }
        Ok(())
    }

    /// Step 1: the fleece image, a qcow2 backed by the live node. QEMU creates the
    /// file itself (`blockdev-create`), so it works whatever user QEMU runs as, as
    /// long as it can write to the scratch directory.
    pub async fn create_fleece(&mut self, size: u64) -> Result<(), BackupError> {
        let dir = scratch_dir().map_err(|e| {
            fail(
                &self.what,
                format!("cannot create a scratch directory: {e}"),
            )
        })?;
        let file = dir.path().join("fleece.qcow2");
        self.scratch = Some(dir);
        self.create(json!({"driver": "file", "filename": file, "size": 0}))
            .await?;
        let scratch = self.names.scratch.clone();
        self.qmp(
            "blockdev-add",
            json!({"driver": "file", "node-name": scratch, "filename": file}),
        )
        .await?;
        self.undo.push(Undo::Node(scratch.clone()));
        self.create(json!({"driver": "qcow2", "file": scratch, "size": size}))
            .await?;
        let fleece = self.names.fleece.clone();
        let args =
            json!({"driver": "qcow2", "node-name": fleece, "file": scratch, "backing": self.node});
        self.qmp("blockdev-add", args).await?;
        self.undo.push(Undo::Node(fleece));
        Ok(())
    }

    /// Runs a `blockdev-create` job to its end.
    async fn create(&mut self, options: Value) -> Result<(), BackupError> {
        let id = format!("{}-create-{:08x}", self.names.job, rand::random::<u32>());
        self.qmp("blockdev-create", json!({"job-id": id, "options": options}))
            .await?;
        let deadline = Instant::now() + GONE_TIMEOUT;
        loop {
            let jobs = self.qmp("query-jobs", Value::Null).await?;
            let job = jobs
                .as_array()
                .into_iter()
                .flatten()
                .find(|j| j["id"] == id.as_str());
            match job {
                Some(j) if j["status"] == "concluded" => {
                    let error = j["error"].as_str().map(str::to_string);
                    self.qmp("job-dismiss", json!({ "id": id })).await?;
                    return match error {
                        None => Ok(()),
                        Some(e) => Err(fail(
                            &self.what,
                            format!("creating the scratch image failed: {e}"),
                        )),
                    };
                }
                None => return Err(fail(&self.what, format!("job {id} vanished"))),
                Some(_) if Instant::now() > deadline => {
                    return Err(fail(
                        &self.what,
                        format!("creating the scratch image (job {id}) hangs"),
                    ));
                }
                Some(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    /// Records what the transaction did, for rollback.
    pub fn snapshot_taken(&mut self, new_bitmap: String, plan: &Plan) {
        self.new_bitmap = Some(new_bitmap);
        self.undo.push(Undo::Job(self.names.job.clone()));
        if let Plan::Incremental { bitmap, merge, .. } = plan {
            self.frozen = Some(bitmap.clone());
            self.merged = merge.clone();
        }
    }

    /// Step 5: exports the fleece node read-only on a socket in the scratch directory.
    pub async fn export(&mut self, bitmap: Option<&str>) -> Result<NbdAddress, BackupError> {
        let socket = self
            .scratch
            .as_ref()
            .expect("scratch dir exists")
            .path()
            .join("nbd.sock");
        let start = json!({"addr": {"type": "unix", "data": {"path": socket}}});
        match self.qmp.execute("nbd-server-start", start).await {
            Ok(_) => self.undo.push(Undo::NbdServer),
            Err(e) if e.desc().is_some_and(|d| d.contains("already running")) => {
                return Err(fail(
                    &self.what,
                    "QEMU's NBD server is already running (used by libvirt, or by another backup of \
                     this VM); QEMU has only one, and Lifeboat needs it for the point-in-time export"
                        .into(),
                ));
            }
            Err(e) => return Err(err(&self.what, e)),
        }
        let export = self.names.export.clone();
        let mut args = json!({"type": "nbd", "id": export, "node-name": self.names.fleece,
                              "name": export, "writable": false});
        if let Some(b) = bitmap {
            args["bitmaps"] = json!([b]);
        }
        self.qmp("block-export-add", args).await?;
        self.undo.push(Undo::Export(export.clone()));
        Ok(NbdAddress::Unix { socket, export })
    }

    /// Whether the job that holds the point-in-time view still runs.
    pub async fn view_intact(&mut self) -> Result<(), BackupError> {
        let jobs = self.qmp("query-block-jobs", Value::Null).await?;
        let job = jobs
            .as_array()
            .into_iter()
            .flatten()
            .find(|j| j["device"] == self.names.job.as_str());
        match job.and_then(|j| j["status"].as_str()) {
            Some("running" | "paused" | "ready") => Ok(()),
            status => Err(fail(
                &self.what,
                format!(
                    "the point-in-time view was lost during the backup (job {} is {}): the snapshot \
                     just committed may mix data from different moments; delete it and back up again",
                    self.names.job,
                    status.unwrap_or("gone")
                ),
            )),
        }
    }

    /// Runs every registered undo step, newest first, then removes the scratch
    /// directory. Keeps going after errors and returns the first.
    pub async fn teardown(&mut self) -> Result<(), BackupError> {
        let mut first = None;
        while let Some(step) = self.undo.pop() {
            if let Err(e) = self.undo_one(&step).await {
                tracing::warn!("{}: undoing {step:?}: {e}", self.what);
                first.get_or_insert(e);
            }
        }
        if let Some(dir) = self.scratch.take()
            && let Err(e) = dir.close()
        {
            tracing::warn!("{}: removing the scratch directory: {e}", self.what);
        }
        first.map_or(Ok(()), Err)
    }

    async fn undo_one(&mut self, step: &Undo) -> Result<(), BackupError> {
        let r = match step {
            // Hard: drop our (normally closed) connection instead of failing.
            Undo::Export(id) => {
                self.qmp
                    .execute("block-export-del", json!({"id": id, "mode": "hard"}))
                    .await
            }
            Undo::NbdServer => self.qmp.execute("nbd-server-stop", Value::Null).await,
            Undo::Job(id) => {
                self.qmp
                    .execute("block-job-cancel", json!({"device": id, "force": true}))
                    .await
            }
            Undo::Node(n) => {
                self.qmp
                    .execute("blockdev-del", json!({ "node-name": n }))
                    .await
            }
        };
        match r {
            Ok(_) => {}
            Err(e) if already_gone(&e) => return Ok(()),
            Err(e) => return Err(err(&self.what, e)),
        }
        // Export removal and job cancellation finish asynchronously.
        match step {
            Undo::Export(id) => self.wait_gone("query-block-exports", "id", id).await,
            Undo::Job(id) => self.wait_gone("query-block-jobs", "device", id).await,
            _ => Ok(()),
        }
    }

    async fn wait_gone(&mut self, query: &str, key: &str, id: &str) -> Result<(), BackupError> {
        let deadline = Instant::now() + GONE_TIMEOUT;
        while listed(&self.qmp(query, Value::Null).await?, key, id) {
            if Instant::now() > deadline {
                return Err(fail(
                    &self.what,
                    format!("{id} still listed by {query} after {GONE_TIMEOUT:?}"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// After a commit: every Lifeboat bitmap but the new one goes.
    pub async fn keep_new_bitmap(&mut self) -> Result<(), BackupError> {
        let info = self.node_info().await?;
        let keep = self.new_bitmap.clone();
        let old: Vec<String> = info
            .lifeboat_bitmaps()
            .filter_map(|b| b.name.clone())
            .filter(|n| Some(n) != keep.as_ref())
            .collect();
        let mut first = Ok(());
        for name in old {
            let args = json!({"node": self.node, "name": name});
            if let Err(e) = self.qmp("block-dirty-bitmap-remove", args).await {
                first = first.and(Err(e));
            }
        }
        first
    }

    /// After a failure: fold the new bitmap (and any merged ones) back into the
    /// previous one and let it record again, atomically, so no write is lost.
    pub async fn restore_bitmaps(&mut self) {
        let Some(new) = self.new_bitmap.take() else {
            return;
        };
        let remove = |name: &str| json!({"type": "block-dirty-bitmap-remove", "data": {"node": self.node, "name": name}});
        let mut actions = Vec::new();
        if let Some(prev) = &self.frozen {
            actions.push(json!({"type": "block-dirty-bitmap-merge", "data": {
                "node": self.node, "target": prev, "bitmaps": [new]}}));
            actions.push(json!({"type": "block-dirty-bitmap-enable", "data": {"node": self.node, "name": prev}}));
            actions.extend(self.merged.iter().map(|m| remove(m)));
        }
        actions.push(remove(&new));
        if let Err(e) = self.qmp("transaction", json!({ "actions": actions })).await {
            // The new bitmap stays: the next backup then merges it or reads everything.
            tracing::warn!(
                "{}: restoring the dirty bitmaps after a failure: {e}",
                self.what
            );
        }
    }

    /// Tears everything down and restores the bitmaps, logging problems.
    pub async fn rollback(&mut self) {
        if let Err(e) = self.teardown().await {
            tracing::warn!(
                "{}: cleanup after a failed backup incomplete: {e}",
                self.what
            );
        }
        self.restore_bitmaps().await;
    }
}

/// Whether a QMP array reply has an element whose `key` is `id`.
fn listed(reply: &Value, key: &str, id: &str) -> bool {
    reply.as_array().into_iter().flatten().any(|x| x[key] == id)
}

/// QEMU's ways of saying the thing to remove does not exist (any more).
fn already_gone(e: &QmpError) -> bool {
    e.class() == Some("DeviceNotActive")
        || e.class() == Some("DeviceNotFound")
        || e.desc().is_some_and(|d| {
            d.contains("not found")
                || d.contains("not running")
                || d.contains("Failed to find node")
        })
}

/// A private (0700) directory for the fleece image and the NBD socket, with a path
/// short enough for a unix socket.
fn scratch_dir() -> std::io::Result<tempfile::TempDir> {
    let make = |parent: PathBuf| {
        tempfile::Builder::new()
            .prefix(SCRATCH_PREFIX)
            .tempdir_in(parent)
    };
    let dir = make(std::env::temp_dir())?;
    if dir.path().join("nbd.sock").as_os_str().len() <= MAX_SOCKET_PATH {
        return Ok(dir);
    }
    make(PathBuf::from("/tmp"))
}
