//! A real S3-compatible server for tests: `moto_server` on 127.0.0.1, started once per
//! test binary and stopped when the binary exits (its shell wrapper waits on our stdin
//! pipe, which closes when we die). Set `LIFEBOAT_TEST_S3_ENDPOINT` to use a server you
//! started yourself (e.g. MinIO or s3s-fs) instead.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub const ACCESS_KEY: &str = "lifeboat-test";
pub const SECRET_KEY: &str = "lifeboat-test-secret-do-not-log";

pub struct Server {
    pub endpoint: String,
    /// Keeps the wrapper alive; dropping it (process exit) stops the server.
    _stdin: Mutex<Option<ChildStdin>>,
    _child: Mutex<Option<Child>>,
}

impl Server {
    pub fn repo_url(&self, bucket: &str) -> String {
        format!("s3://{bucket}/lifeboat?endpoint={}", self.endpoint)
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `moto_server` with extra environment; waits until it accepts connections.
pub fn start_moto(extra_env: &[(&str, &str)]) -> Server {
    let port = free_port();
    let log = std::env::temp_dir().join(format!("lifeboat-moto-{port}.log"));
    let script = format!(
        "if command -v moto_server >/dev/null; then m=moto_server; else m='python3 -m moto.server'; fi; \
         $m -H 127.0.0.1 -p {port} >{} 2>&1 & pid=$!; read _unused; kill $pid",
        log.display()
    );
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(script).stdin(Stdio::piped());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .expect("starting moto_server (install it: pip install 'moto[server]')");
    let stdin = child.stdin.take();
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "moto_server did not start within 60 s; see {}",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Server {
        endpoint: format!("http://127.0.0.1:{port}"),
        _stdin: Mutex::new(stdin),
        _child: Mutex::new(Some(child)),
    }
}

/// The shared test server.
pub fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| match std::env::var("LIFEBOAT_TEST_S3_ENDPOINT") {
        Ok(endpoint) => Server {
            endpoint,
            _stdin: Mutex::new(None),
            _child: Mutex::new(None),
        },
        Err(_) => start_moto(&[]),
    })
}

/// A second server, for tests of two sites (replication): its own process, port and
/// buckets, so "the primary site is gone" can be played by deleting the first's data.
pub fn second_server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| start_moto(&[]))
}

/// A bucket name no other test in this run uses.
pub fn unique_bucket() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "lb-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn set_credentials(cmd: &mut Command) {
    cmd.env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_REGION", "us-east-1")
        .env_remove("AWS_SESSION_TOKEN");
}

/// Credentials for the test process's own S3 access (inspecting and tampering).
pub fn credentials() -> lifeboat_store::backend::address::StaticCredentials {
    lifeboat_store::backend::address::StaticCredentials {
        access_key_id: ACCESS_KEY.into(),
        secret_access_key: SECRET_KEY.into(),
    }
}
