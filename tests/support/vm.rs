//! A real QEMU VM (qemu-system-x86_64 under TCG, no OS: it sits in the BIOS and keeps
//! running) with one qcow2 data disk on a virtio-blk device, and two QMP sockets: one
//! for Lifeboat, one for the test, which writes into the disk through the guest's own
//! device path (`qemu-io -d`, so writes pass the backup's copy-before-write filter
//! exactly like guest writes do) and inspects the block graph.
//!
//! The VM is quit on [`Vm::quit`] and killed on drop (also when a test panics).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Block node name of the data disk's qcow2 layer (where the bitmaps live).
pub const NODE: &str = "disk0";
/// The MAC of the test VM's one NIC.
pub const NIC_MAC: &str = "52:54:00:aa:bb:cc";
/// QOM path of the virtio-blk backend: `qemu-io -d` writes through its BlockBackend.
const DEVICE: &str = "/machine/peripheral/vdisk0/virtio-backend";

pub struct Vm {
    child: Option<Child>,
    /// The QMP socket for Lifeboat.
    pub qmp_socket: PathBuf,
    monitor: Mutex<Monitor>,
}

struct Monitor {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Monitor {
    fn connect(path: &Path) -> Monitor {
        let stream = UnixStream::connect(path).expect("connect to the test QMP socket");
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let mut m = Monitor {
            writer: stream.try_clone().unwrap(),
            reader: BufReader::new(stream),
        };
        let greeting = m.read();
        assert!(greeting.get("QMP").is_some(), "QMP greeting: {greeting}");
        m.execute("qmp_capabilities", Value::Null)
            .expect("qmp_capabilities");
        m
    }

    fn read(&mut self) -> Value {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("reading QMP");
        assert!(!line.is_empty(), "QEMU closed the test's QMP connection");
        serde_json::from_str(&line).expect("QMP sends JSON")
    }

    fn execute(&mut self, command: &str, args: Value) -> Result<Value, Value> {
        let mut msg = json!({ "execute": command });
        if !args.is_null() {
            msg["arguments"] = args;
        }
        writeln!(self.writer, "{msg}").expect("writing QMP");
        loop {
            let reply = self.read();
            if reply.get("event").is_some() {
                continue;
            }
            if let Some(r) = reply.get("return") {
                return Ok(r.clone());
            }
            return Err(reply["error"].clone());
        }
    }
}

impl Vm {
    /// Starts a VM with `disk` (a qcow2) as node [`NODE`]; sockets live in `dir`.
    pub fn start(dir: &Path, disk: &Path) -> Vm {
        let qmp_socket = dir.join("qmp-lifeboat.sock");
        let test_socket = dir.join("qmp-test.sock");
        let mut child = Command::new("qemu-system-x86_64")
            .args(["-machine", "pc,accel=tcg", "-m", "64", "-display", "none"])
            .args(["-nodefaults", "-no-user-config"])
            .arg("-blockdev")
            .arg(format!(
                "driver=file,filename={},node-name=disk0-file",
                disk.display()
            ))
            .args([
                "-blockdev",
                &format!("driver=qcow2,file=disk0-file,node-name={NODE}"),
            ])
            .args(["-device", &format!("virtio-blk-pci,drive={NODE},id=vdisk0")])
            // A NIC, so the definition a live backup records has one to report.
            .args(["-netdev", "user,id=prod-lan,restrict=on"])
            .args([
                "-device",
                &format!("e1000,netdev=prod-lan,mac={NIC_MAC},id=nic0"),
            ])
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", qmp_socket.display()))
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", test_socket.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("running qemu-system-x86_64 (install qemu-system-x86)");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !(qmp_socket.exists() && test_socket.exists()) {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("qemu-system-x86_64 exited at startup: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "QEMU did not create its QMP sockets"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let monitor = Mutex::new(Monitor::connect(&test_socket));
        Vm {
            child: Some(child),
            qmp_socket,
            monitor,
        }
    }

    /// Runs a QMP command on the test's socket.
    pub fn qmp(&self, command: &str, args: Value) -> Result<Value, Value> {
        self.monitor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .execute(command, args)
    }

    /// Runs one qemu-io command (e.g. `write -P 0xaa 0 1M`) through the guest's
    /// virtio-blk device, as a guest write.
    pub fn io(&self, command: &str) {
        let line = format!("qemu-io -d {DEVICE} \"{command}\"");
        let out = self
            .qmp("human-monitor-command", json!({ "command-line": line }))
            .unwrap_or_else(|e| panic!("{line}: {e}"));
        assert_eq!(out, "", "{line} printed an error");
    }

    /// `running`, `paused`, …
    pub fn status(&self) -> String {
        self.qmp("query-status", Value::Null).unwrap()["status"]
            .as_str()
            .unwrap()
            .to_string()
    }

    pub fn block_jobs(&self) -> Vec<Value> {
        self.qmp("query-block-jobs", Value::Null)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    pub fn exports(&self) -> Vec<Value> {
        self.qmp("query-block-exports", Value::Null)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    /// Names of all block nodes, sorted.
    pub fn nodes(&self) -> Vec<String> {
        let nodes = self
            .qmp("query-named-block-nodes", json!({"flat": true}))
            .unwrap();
        let mut names: Vec<String> = nodes
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["node-name"].as_str().unwrap().to_string())
            .collect();
        names.sort();
        names
    }

    /// The dirty bitmaps of node [`NODE`], as QEMU reports them (name, recording, …).
    pub fn bitmaps(&self) -> Vec<Value> {
        let nodes = self
            .qmp("query-named-block-nodes", json!({"flat": true}))
            .unwrap();
        let node = nodes
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["node-name"] == NODE)
            .expect("data disk node")
            .clone();
        node["dirty-bitmaps"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Names of the Lifeboat bitmaps on [`NODE`].
    pub fn lifeboat_bitmaps(&self) -> Vec<String> {
        self.bitmaps()
            .iter()
            .filter_map(|b| b["name"].as_str())
            .filter(|n| n.starts_with("lifeboat-"))
            .map(str::to_string)
            .collect()
    }

    /// Quits QEMU cleanly (persistent bitmaps are written back to the qcow2).
    pub fn quit(mut self) {
        let _ = self.qmp("quit", Value::Null);
        if let Some(mut child) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
