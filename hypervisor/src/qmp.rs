//! A small async client for the QEMU Machine Protocol (QMP) over a unix socket.
//!
//! QMP is line-delimited JSON: the server greets with `{"QMP": {...}}`, the client
//! leaves capabilities negotiation with `qmp_capabilities`, then sends
//! `{"execute": CMD, "arguments": {...}, "id": N}` and gets back `{"return": ...}` or
//! `{"error": {"class": ..., "desc": ...}}` carrying the same `id`. Asynchronous
//! events (`{"event": ...}`) may arrive at any time, also between a command and its
//! reply; they are logged and skipped. Replies whose `id` is not the one awaited
//! (left over from a command that timed out) are skipped too.
//!
//! One [`Qmp`] is one connection and runs one command at a time (`&mut self`). A
//! QEMU `-qmp` socket serves one client at a time: while another client is
//! connected, QEMU does not greet, and [`Qmp::connect`] says so after
//! [`GREETING_TIMEOUT`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

/// QEMU greets at once unless another client holds the socket.
pub const GREETING_TIMEOUT: Duration = Duration::from_secs(10);
/// Block-graph commands return in milliseconds; a stuck QEMU must not hang a backup.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest reply line accepted (`query-named-block-nodes` of a big VM is < 1 MiB).
const MAX_LINE: usize = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error(
        "cannot connect to QMP socket {path}: {source} (is the VM running with -qmp unix:{path},server=on?)"
    )]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("QMP connection {path}: I/O error: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("QMP connection {path}: {message}")]
    Protocol { path: PathBuf, message: String },
    #[error("QMP {command} timed out after {} s", timeout.as_secs())]
    Timeout { command: String, timeout: Duration },
    /// QEMU refused the command: `class` is e.g. `GenericError`, `DeviceNotFound`.
    #[error("QMP {command} failed: {desc} ({class})")]
    Command {
        command: String,
        class: String,
        desc: String,
    },
}

impl QmpError {
    /// Whether the same command on a new connection may succeed: the connection broke
    /// (`Io`) or QEMU did not answer in time (`Timeout`). A socket nobody listens on,
    /// a reply that breaks the protocol and a command QEMU refused are not.
    pub fn is_retryable(&self) -> bool {
        matches!(self, QmpError::Io { .. } | QmpError::Timeout { .. })
    }

    /// The QMP error class, for a command QEMU refused.
    pub fn class(&self) -> Option<&str> {
        match self {
            QmpError::Command { class, .. } => Some(class),
            _ => None,
        }
    }

    /// QEMU's own description, for a command it refused.
    pub fn desc(&self) -> Option<&str> {
        match self {
            QmpError::Command { desc, .. } => Some(desc),
            _ => None,
        }
    }
}

/// A negotiated QMP connection.
pub struct Qmp {
    path: PathBuf,
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    next_id: u64,
    /// QEMU's version from the greeting, e.g. `7.2.22`.
    version: String,
}

impl fmt::Debug for Qmp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Qmp")
            .field("path", &self.path)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl Qmp {
    /// Connects, reads the greeting and leaves capabilities negotiation.
    pub async fn connect(path: &Path) -> Result<Qmp, QmpError> {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| QmpError::Connect {
                path: path.to_path_buf(),
                source,
            })?;
        let (read, writer) = stream.into_split();
        let mut qmp = Qmp {
            path: path.to_path_buf(),
            reader: BufReader::new(read),
            writer,
            next_id: 1,
            version: String::new(),
        };
        let greeting = match tokio::time::timeout(GREETING_TIMEOUT, qmp.read_message()).await {
            Ok(m) => m?,
            Err(_) => {
                return Err(qmp.protocol(format!(
                    "no QMP greeting within {} s: another client may hold this monitor socket \
                     (QEMU serves one client per -qmp socket; give Lifeboat its own)",
                    GREETING_TIMEOUT.as_secs()
                )));
            }
        };
        let Some(v) = greeting.get("QMP") else {
            return Err(qmp.protocol(format!("expected a QMP greeting, got {}", short(&greeting))));
        };
        let q = &v["version"]["qemu"];
        qmp.version = format!("{}.{}.{}", q["major"], q["minor"], q["micro"]);
        qmp.execute("qmp_capabilities", Value::Null).await?;
        tracing::debug!(socket = %path.display(), version = %qmp.version, "QMP connected");
        Ok(qmp)
    }

    /// QEMU's version, from the greeting.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Runs `command` (with `arguments` unless they are `null`) and returns its
    /// `return` value. Fails with [`QmpError::Command`] if QEMU refuses it.
    pub async fn execute(&mut self, command: &str, arguments: Value) -> Result<Value, QmpError> {
        match tokio::time::timeout(COMMAND_TIMEOUT, self.execute_inner(command, arguments)).await {
            Ok(r) => r,
            Err(_) => Err(QmpError::Timeout {
                command: command.to_string(),
                timeout: COMMAND_TIMEOUT,
            }),
        }
    }

    async fn execute_inner(&mut self, command: &str, arguments: Value) -> Result<Value, QmpError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = json!({ "execute": command, "id": id });
        if !arguments.is_null() {
            msg["arguments"] = arguments;
        }
        let mut line = serde_json::to_vec(&msg).expect("a JSON value serialises");
        line.push(b'\n');
        tracing::trace!(qmp = %self.path.display(), "-> {}", short(&msg));
        self.writer.write_all(&line).await.map_err(|e| self.io(e))?;
        loop {
            let reply = self.read_message().await?;
            if let Some(event) = reply.get("event") {
                // Nothing here waits for events: job and export state is polled.
                tracing::debug!(qmp = %self.path.display(), "QMP event {event}: {}", short(&reply["data"]));
                continue;
            }
            if reply.get("id") != Some(&json!(id)) {
                tracing::debug!(
                    "skipping QMP reply to an earlier command: {}",
                    short(&reply)
                );
                continue;
            }
            tracing::trace!(qmp = %self.path.display(), "<- {}", short(&reply));
            if let Some(ret) = reply.get("return") {
                return Ok(ret.clone());
            }
            if let Some(err) = reply.get("error") {
                return Err(QmpError::Command {
                    command: command.to_string(),
                    class: err["class"].as_str().unwrap_or("unknown").to_string(),
                    desc: err["desc"]
                        .as_str()
                        .unwrap_or("(no description)")
                        .to_string(),
                });
            }
            return Err(self.protocol(format!(
                "reply to {command} has neither return nor error: {}",
                short(&reply)
            )));
        }
    }

    /// Reads one newline-terminated JSON object.
    async fn read_message(&mut self) -> Result<Value, QmpError> {
        let mut line = Vec::new();
        loop {
            let path = &self.path;
            let buf = self
                .reader
                .fill_buf()
                .await
                .map_err(|source| QmpError::Io {
                    path: path.clone(),
                    source,
                })?;
            if buf.is_empty() {
                return Err(self.protocol("QEMU closed the connection (did the VM exit?)".into()));
            }
            let (take, done) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (buf.len(), false),
            };
            line.extend_from_slice(&buf[..take]);
            self.reader.consume(take);
            if line.len() > MAX_LINE {
                return Err(self.protocol(format!("a message longer than {MAX_LINE} bytes")));
            }
            if done {
                if line.iter().all(u8::is_ascii_whitespace) {
                    line.clear();
                    continue;
                }
                return serde_json::from_slice(&line)
                    .map_err(|e| self.protocol(format!("invalid JSON from QEMU: {e}")));
            }
        }
    }

    fn io(&self, source: std::io::Error) -> QmpError {
        QmpError::Io {
            path: self.path.clone(),
            source,
        }
    }

    fn protocol(&self, message: String) -> QmpError {
        QmpError::Protocol {
            path: self.path.clone(),
            message,
        }
    }
}

/// A JSON value cut short for log lines and error messages.
fn short(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}
