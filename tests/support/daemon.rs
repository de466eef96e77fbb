//! `lifeboat daemon` as a child process for tests: started with a config and its own
//! state directory and metrics port, asked for `status --json` and `/metrics`, polled
//! until a condition holds (failing with the daemon's log), and killed when dropped.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::TestRepo;

/// A free port for /metrics (bound, then released for the daemon to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Daemon<'a> {
    pub repo: &'a TestRepo,
    pub child: Child,
    pub config: PathBuf,
    pub state: PathBuf,
    pub log: PathBuf,
    pub port: u16,
}

impl<'a> Daemon<'a> {
    pub fn start(repo: &'a TestRepo, config: &Path, extra: &[&str]) -> Self {
        let state = repo.path("state");
        let port = free_port();
        let log = repo.path(&format!("daemon-{port}.log"));
        let mut cmd = repo.cmd();
        // The passphrase must come from the config's password_file.
        cmd.env_remove("LIFEBOAT_PASSWORD")
            .env("LIFEBOAT_LOG", "info")
            .args(["daemon", "--config"])
            .arg(config)
            .arg("--state-dir")
            .arg(&state)
            .args(["--metrics-listen", &format!("127.0.0.1:{port}")])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        let child = cmd.spawn().expect("starting the daemon");
        Self {
            repo,
            child,
            config: config.to_path_buf(),
            state,
            log,
            port,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn status(&self) -> serde_json::Value {
        let out = self
            .repo
            .cmd()
            .args(["status", "--json", "--config"])
            .arg(&self.config)
            .arg("--state-dir")
            .arg(&self.state)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The whole HTTP response, or `None` while nothing listens yet.
    pub fn try_get(&self, path: &str) -> Option<String> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        Some(text)
    }

    pub fn http_get(&self, path: &str) -> String {
        self.try_get(path).expect("the metrics endpoint answers")
    }

    /// The value of one sample line (`name{labels}`), if present.
    pub fn metric(&self, series: &str) -> Option<f64> {
        let text = self.try_get("/metrics")?;
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    /// Polls `f` until it returns `Some`, or fails with the daemon's log.
    pub fn wait<T>(
        &mut self,
        what: &str,
        limit: Duration,
        mut f: impl FnMut(&Self) -> Option<T>,
    ) -> T {
        let start = Instant::now();
        loop {
            if let Some(v) = f(self) {
                return v;
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!(
                    "daemon exited ({st}) while waiting for {what}:\n{}",
                    self.log()
                );
            }
            assert!(
                start.elapsed() < limit,
                "timed out after {limit:?} waiting for {what}; status: {}\nlog:\n{}",
                self.status(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    pub fn sigterm(&self) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    }

    /// Waits for the daemon to exit by itself.
    pub fn exit_within(&mut self, limit: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(
                start.elapsed() < limit,
                "daemon did not exit within {limit:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Daemon<'_> {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn vm<'v>(status: &'v serde_json::Value, name: &str) -> &'v serde_json::Value {
    status["vms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["vm"] == name)
        .unwrap_or_else(|| panic!("no VM {name} in {status}"))
}
