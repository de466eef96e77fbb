//! Running `qemu-nbd` to read an image file through the NBD client.
//!
//! [`QemuNbd`] exports one image read-only (or, with [`QemuNbd::start_writable`],
//! writable) on a unix socket inside a private (0700)
//! temporary directory, so no other user can connect, and nothing listens on the
//! network. The export stays up for several clients (`--shared=8`, `--persistent`)
//! until [`QemuNbd::stop`] or drop kills the process; the directory goes with it.
//!
//! `-B BITMAP` makes qemu-nbd offer `qemu:dirty-bitmap:BITMAP` for a persistent
//! qcow2 bitmap, the changed-block map of an incremental backup.
//!
//! qemu-nbd dies with Lifeboat, also when Lifeboat is killed (SIGKILL, OOM killer):
//! it is started through util-linux's `setpriv --pdeathsig KILL`. An orphaned
//! qemu-nbd would keep the image locked, and the VM could not start from it until an
//! operator found and killed the process. The kernel sends the signal when the
//! *thread* that spawned the child exits, so qemu-nbd must be started from a thread
//! that lives as long as the export: a tokio worker or the main thread (never
//! `spawn_blocking`, whose threads retire when idle).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::UnixStream;
use tokio::process::{Child, Command};

use crate::nbd::NbdAddress;
use crate::nbd::handshake::abort_probe;
use crate::qemu_img::detect_format;
use crate::tool::{ToolError, find_program};

/// The export name qemu-nbd serves.
const EXPORT: &str = "disk";
/// qemu-nbd opens the image and listens within milliseconds; a slow disk or a large
/// qcow2 (refcount checks) can take longer, but not this long.
const START_TIMEOUT: Duration = Duration::from_secs(15);
const TOOL: &str = "qemu-nbd";
/// How much of qemu-nbd's stderr to keep for error messages.
const STDERR_TAIL: usize = 4096;
/// sockaddr_un holds 108 bytes including the NUL.
const MAX_SOCKET_PATH: usize = 107;

/// A running `qemu-nbd` serving one image read-only. Killed (and reaped) on
/// [`stop`](Self::stop) or drop.
#[derive(Debug)]
pub struct QemuNbd {
    child: Option<Child>,
    socket: PathBuf,
    /// Removed (with the socket) on drop, after the process is killed.
    _dir: tempfile::TempDir,
}

impl QemuNbd {
    /// Starts `qemu-nbd --read-only --persistent --shared=8 -f FORMAT -x disk -k SOCK
    /// [-B BITMAP] IMAGE` and returns once it accepts connections. With `format`
    /// `None` the format is detected with [`detect_format`]; pass it explicitly for
    /// images a guest can write to, since a raw disk can be made to look like qcow2.
    pub async fn start(
        image: &Path,
        format: Option<&str>,
        bitmap: Option<&str>,
    ) -> Result<QemuNbd, ToolError> {
        Self::launch(image, format, bitmap, false).await
    }

    /// Starts a *writable* export of `image` (same command line without
    /// `--read-only`), for filling an image Lifeboat owns, such as a standby
    /// overlay. qcow2 backing files stay read-only. Writes are durable once the
    /// client's `NBD_CMD_FLUSH` returns; killing qemu-nbd before that may lose them
    /// (never the image's consistency: qcow2 orders its metadata updates).
    pub async fn start_writable(image: &Path, format: &str) -> Result<QemuNbd, ToolError> {
        Self::launch(image, Some(format), None, true).await
    }

    async fn launch(
        image: &Path,
        format: Option<&str>,
        bitmap: Option<&str>,
        writable: bool,
    ) -> Result<QemuNbd, ToolError> {
        // Absolute path: QEMU would read "host:file" as a protocol, "-x" as an option.
        let image = tokio::fs::canonicalize(image)
            .await
            .map_err(|e| failed(format!("cannot open image {}: {e}", image.display())))?;
        let format = match format {
            Some(f) => f.to_string(),
            None => detect_format(&image).await?,
        };
        check_names(&format, bitmap)?;
        let dir =
            private_dir().map_err(|e| failed(format!("cannot create a socket directory: {e}")))?;
        let socket = dir.path().join("nbd.sock");
        let mut child = qemu_nbd_command(&image, &format, bitmap, &socket, writable)?
            .spawn()
            .map_err(|source| ToolError::Spawn { tool: TOOL, source })?;
        let tail = Arc::new(Mutex::new(String::new()));
        let drain = child
            .stderr
            .take()
            .map(|stderr| tokio::spawn(drain_stderr(stderr, tail.clone())));

        if let Err(why) = wait_ready(&mut child, &socket).await {
            let _ = child.start_kill();
            let _ = child.wait().await;
            if let Some(drain) = drain {
                let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
            }
            let stderr = tail
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .trim()
                .to_string();
            return Err(failed(format!(
                "cannot export {} ({format}{}): {why}{}",
                image.display(),
                bitmap.map(|b| format!(", bitmap {b}")).unwrap_or_default(),
                if stderr.is_empty() {
                    String::new()
                } else {
                    format!(": {stderr}")
                }
            )));
        }
        tracing::debug!(pid = child.id(), image = %image.display(), %format, ?bitmap, "qemu-nbd started");
        Ok(QemuNbd {
            child: Some(child),
            socket,
            _dir: dir,
        })
    }

    /// Where to connect: `nbd+unix:///disk?socket=<private dir>/nbd.sock`.
    pub fn address(&self) -> NbdAddress {
        NbdAddress::Unix {
            socket: self.socket.clone(),
            export: EXPORT.to_string(),
        }
    }

    /// The qemu-nbd process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    /// Kills qemu-nbd and waits for it to exit. A read-only export cannot be damaged
    /// by that; a writable one keeps what was flushed.
    pub async fn stop(mut self) -> Result<(), ToolError> {
        if let Some(mut child) = self.child.take() {
            // Fails only if it already exited, which wait() then reports.
            let _ = child.start_kill();
            let status = child
                .wait()
                .await
                .map_err(|e| failed(format!("cannot wait for the process to exit: {e}")))?;
            tracing::debug!(%status, "qemu-nbd stopped");
        }
        Ok(())
    }
}

impl Drop for QemuNbd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            // Reap it without blocking: on the runtime when there is one; otherwise
            // tokio's orphan queue collects it at a later SIGCHLD.
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = child.wait().await;
                });
            }
        }
    }
}

fn failed(message: String) -> ToolError {
    ToolError::Failed {
        tool: TOOL,
        message,
    }
}

/// The format and bitmap names go on qemu-nbd's command line: refuse anything that
/// is not a plain name.
fn check_names(format: &str, bitmap: Option<&str>) -> Result<(), ToolError> {
    if format.is_empty()
        || !format
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(failed(format!("invalid image format {format:?}")));
    }
    if bitmap.is_some_and(|b| b.is_empty() || b.contains('\0')) {
        return Err(failed("empty or invalid bitmap name".into()));
    }
    Ok(())
}

/// The full command line: an export of `image` on `socket` (read-only unless
/// `writable`), under [`pdeathsig_command`].
fn qemu_nbd_command(
    image: &Path,
    format: &str,
    bitmap: Option<&str>,
    socket: &Path,
    writable: bool,
) -> Result<Command, ToolError> {
    let mut cmd = pdeathsig_command()?;
    if !writable {
        cmd.arg("--read-only");
    }
    // Keep serving after a client leaves: the lead may connect several times.
    cmd.arg("--persistent")
        .arg("--shared=8")
        .arg(format!("--format={format}"))
        .arg(format!("--export-name={EXPORT}"))
        .arg("--socket")
        .arg(socket);
    if let Some(b) = bitmap {
        cmd.arg("--bitmap").arg(b);
    }
    cmd.arg(image)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        // Backstop for paths where neither stop() nor our Drop runs the kill.
        .kill_on_drop(true);
    Ok(cmd)
}

/// `setpriv --pdeathsig KILL -- qemu-nbd`, or plain `qemu-nbd` (with a warning) where
/// setpriv is missing. Fails clearly when qemu-nbd itself is not installed: through
/// setpriv that would otherwise only show as an early exit.
fn pdeathsig_command() -> Result<Command, ToolError> {
    let Some(qemu_nbd) = find_program(TOOL) else {
        return Err(ToolError::Spawn {
            tool: TOOL,
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "not found in PATH"),
        });
    };
    match find_program("setpriv") {
        Some(setpriv) => {
            let mut cmd = Command::new(setpriv);
            cmd.args(["--pdeathsig", "KILL", "--"]).arg(qemu_nbd);
            Ok(cmd)
        }
        None => {
            tracing::warn!(
                "setpriv (util-linux) not found: if Lifeboat is killed, its qemu-nbd keeps \
                 running and keeps the image locked until it is killed by hand"
            );
            Ok(Command::new(qemu_nbd))
        }
    }
}

/// A 0700 directory with a short enough path for a unix socket.
fn private_dir() -> std::io::Result<tempfile::TempDir> {
    let builder = || {
        let mut b = tempfile::Builder::new();
        b.prefix("lifeboat-nbd-");
        b
    };
    let dir = builder().tempdir()?;
    if dir.path().join("nbd.sock").as_os_str().len() <= MAX_SOCKET_PATH {
        return Ok(dir);
    }
    // $TMPDIR is too deep for sockaddr_un; /tmp always fits.
    builder().tempdir_in("/tmp")
}

/// Waits until qemu-nbd answers an NBD greeting on the socket, or exits, or times out.
async fn wait_ready(child: &mut Child, socket: &Path) -> Result<(), String> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Err(format!("it exited during startup ({status})"));
        }
        // The socket file appears at bind(); connecting proves it listens, and the
        // probe (greeting, then NBD_OPT_ABORT) that it speaks NBD, without making
        // qemu-nbd log a failed negotiation.
        if socket.exists()
            && let Ok(mut stream) = UnixStream::connect(socket).await
            && abort_probe(&mut stream).await.is_ok()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "qemu-nbd did not accept connections within {} s",
                START_TIMEOUT.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Forwards qemu-nbd's stderr to the log and keeps its tail for error messages.
/// Reading it also keeps qemu-nbd from blocking on a full pipe.
async fn drain_stderr(stderr: tokio::process::ChildStderr, tail: Arc<Mutex<String>>) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::warn!("qemu-nbd: {line}");
        let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
        t.push_str(&line);
        t.push('\n');
        if t.len() > STDERR_TAIL {
            let cut = t.len() - STDERR_TAIL;
            let cut = (cut..t.len())
                .find(|&i| t.is_char_boundary(i))
                .unwrap_or(t.len());
            t.drain(..cut);
        }
    }
}
