//! Test support: runs the real `lifeboat` binary against a local directory or a real
//! S3-compatible server (`moto_server`, started here on 127.0.0.1), builds disk images,
//! and tampers with repository objects through the store's own backends.

#![allow(dead_code)]

pub mod chaos;
pub mod daemon;
pub mod disk;
pub mod faults;
pub mod guest;
pub mod plan;
pub mod qemu;
pub mod replica;
pub mod s3;
pub mod sites;
pub mod tls;
pub mod tmpfs;
pub mod vm;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use lifeboat_store::backend::address::{BackendOptions, RepoAddress};
use lifeboat_store::{Backend, backend::open_backend};

pub const PASSWORD: &str = "correct horse battery staple";

/// Where a test repository lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Local,
    S3,
}

/// One test's repository plus everything needed to run the CLI against it.
pub struct TestRepo {
    pub kind: Kind,
    pub url: String,
    pub work: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
    backend: Arc<dyn Backend>,
}

impl TestRepo {
    pub fn new(kind: Kind) -> Self {
        Self::on(kind, s3::server())
    }

    /// A repository whose S3 bucket (for `Kind::S3`) is on `server`: a second site.
    pub fn on(kind: Kind, server: &s3::Server) -> Self {
        let work = tempfile::tempdir().expect("temp dir");
        let url = match kind {
            Kind::Local => work.path().join("repo").display().to_string(),
            Kind::S3 => server.repo_url(&s3::unique_bucket()),
        };
        Self::in_dir(kind, url, work)
    }

    /// Another handle on the repository at `url` (its own work dir and catalog cache).
    pub fn with_url(kind: Kind, url: &str) -> Self {
        Self::in_dir(
            kind,
            url.to_string(),
            tempfile::tempdir().expect("temp dir"),
        )
    }

    fn in_dir(kind: Kind, url: String, work: tempfile::TempDir) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let address = RepoAddress::parse(&url).unwrap();
        let options = BackendOptions {
            credentials: Some(s3::credentials()),
            ..Default::default()
        };
        let backend = rt.block_on(open_backend(&address, &options)).unwrap();
        Self {
            kind,
            url,
            work,
            rt,
            backend,
        }
    }

    /// A repository, already initialised with the default password.
    pub fn init(kind: Kind) -> Self {
        Self::init_with(kind, &[])
    }

    /// A repository made with extra `init` options (e.g. `--fixed-chunks 64KiB`).
    pub fn init_with(kind: Kind, options: &[&str]) -> Self {
        let repo = Self::new(kind);
        repo.ok(&[&["init", "--create-bucket"], options].concat());
        repo
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.work.path().join(name)
    }

    /// The CLI, pointed at this repository, with its own catalog cache.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_lifeboat"));
        c.env("LIFEBOAT_REPO", &self.url)
            .env("LIFEBOAT_PASSWORD", PASSWORD)
            .env("LIFEBOAT_CACHE_DIR", self.work.path().join("cache"))
            .env_remove("LIFEBOAT_PASSWORD_FILE")
            .env_remove("AWS_ENDPOINT_URL")
            .env_remove("AWS_PROFILE");
        s3::set_credentials(&mut c);
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("running lifeboat")
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "lifeboat {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs with `--json` and parses stdout.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.push("--json");
        serde_json::from_str(&self.ok(&all)).expect("valid JSON output")
    }

    /// Runs, asserts failure with exit code `code`; returns stdout + stderr.
    pub fn fails(&self, args: &[&str], code: i32) -> String {
        let out = self.run(args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            out.status.code(),
            Some(code),
            "lifeboat {args:?} should exit {code}:\n{text}"
        );
        text
    }

    pub fn backup(&self, vm: &str, disk: &str, image: &Path) -> serde_json::Value {
        self.json(&[
            "backup",
            "--vm",
            vm,
            "--disk",
            disk,
            image.to_str().unwrap(),
        ])
    }

    pub fn restore(&self, snapshot: &str, target: &Path) -> serde_json::Value {
        self.json(&["restore", snapshot, target.to_str().unwrap()])
    }

    // Direct object access, for tampering and inspection.

    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let mut keys: Vec<String> = self
            .rt
            .block_on(self.backend.list(prefix))
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        keys.sort();
        keys
    }

    pub fn get(&self, key: &str) -> Vec<u8> {
        self.rt.block_on(self.backend.get(key)).unwrap().to_vec()
    }

    pub fn put(&self, key: &str, data: Vec<u8>) {
        self.rt
            .block_on(self.backend.put(key, data.into()))
            .unwrap()
    }

    pub fn delete(&self, key: &str) {
        self.rt.block_on(self.backend.delete(key)).unwrap()
    }

    pub fn try_delete(&self, key: &str) -> Result<(), String> {
        self.rt
            .block_on(self.backend.delete(key))
            .map_err(|e| e.to_string())
    }

    /// The object's Object Lock retain-until date, if locked.
    pub fn retain_until(&self, key: &str) -> Option<std::time::SystemTime> {
        self.rt.block_on(self.backend.retain_until(key)).unwrap()
    }

    /// Writes an object locked (compliance mode) for `period`.
    pub fn put_locked(&self, key: &str, data: Vec<u8>, period: std::time::Duration) {
        let lock = lifeboat_store::backend::ObjectLock {
            mode: lifeboat_store::backend::LockMode::Compliance,
            retain_until: std::time::SystemTime::now() + period,
        };
        self.rt
            .block_on(self.backend.put_locked(key, data.into(), false, lock))
            .unwrap()
    }
}

/// Runs `cmd` to completion, killing it and panicking if it takes longer than `limit`:
/// a hung command must fail its test, not stall CI.
pub fn output_within(cmd: &mut Command, limit: std::time::Duration) -> Output {
    use std::io::Read;
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running lifeboat");
    // Drained on threads so a chatty command cannot block on a full pipe.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {limit:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// Asserts two files have identical contents, naming the first differing offset.
pub fn assert_same_file(a: &Path, b: &Path) {
    let (x, y) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    assert_eq!(
        x.len(),
        y.len(),
        "{} and {} differ in size",
        a.display(),
        b.display()
    );
    if let Some(at) = x.iter().zip(&y).position(|(p, q)| p != q) {
        panic!("{} and {} differ at offset {at}", a.display(), b.display());
    }
}
