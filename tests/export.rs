//! Instant recovery: `lifeboat export` serves a snapshot's disk read-only over NBD
//! straight from the repository. Real `qemu-img` reads it back byte for byte, a
//! qcow2 overlay on it takes writes while reads of untouched blocks come from the
//! repository, writes to the export itself are refused, and SIGTERM stops it
//! cleanly with its socket removed. With `--migrate`, the rest of the disk is streamed
//! into the running VM's overlay, durably, and the export stops by itself.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::disk::{Fill, make_disk, mixed_disk};
use support::{Kind, TestRepo, assert_same_file};

fn wait_for_socket(path: &Path) {
    let start = Instant::now();
    while !path.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the export never listened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs a QEMU tool and asserts it succeeded (its stderr in the message).
fn qemu_ok(tool: &str, args: &[&str]) {
    let out = qemu(tool, args);
    assert!(
        out.status.success(),
        "{tool} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn qemu(tool: &str, args: &[&str]) -> std::process::Output {
    Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {tool}: {e}"))
}

#[test]
fn an_exported_snapshot_reads_as_the_disk_and_boots_overlays() {
    let repo = TestRepo::init(Kind::S3);
    let image = repo.path("web01.img");
    // Sector-aligned: QEMU's NBD client sees whole 512-byte sectors.
    make_disk(
        &image,
        &[
            Fill::Random {
                seed: 7,
                len: 3 << 20,
            },
            Fill::Hole { len: 4 << 20 },
            Fill::Text { len: 2 << 20 },
            Fill::Zeros { len: 1 << 20 },
            Fill::Random {
                seed: 8,
                len: 1 << 20,
            },
        ],
    );
    repo.backup("web01", "root", &image);
    let socket = repo.path("web01.sock");
    let mut export = repo
        .cmd()
        .args([
            "export", "latest", "--vm", "web01", "--disk", "root", "--nbd",
        ])
        .arg(format!("unix:{}", socket.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_socket(&socket);
    let uri = format!("nbd+unix:///?socket={}", socket.display());

    let copy = repo.path("copy.raw");
    qemu_ok(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "raw",
            &uri,
            copy.to_str().unwrap(),
        ],
    );
    assert_same_file(&image, &copy);

    let overlay = repo.path("web01.qcow2");
    qemu_ok(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            &uri,
            "-F",
            "raw",
            overlay.to_str().unwrap(),
        ],
    );
    qemu_ok(
        "qemu-io",
        &[
            "-f",
            "qcow2",
            "-c",
            "write -P 0x55 0 64k",
            overlay.to_str().unwrap(),
        ],
    );
    // Through the overlay: its own write first, the repository's data beneath.
    let through = repo.path("through.raw");
    qemu_ok(
        "qemu-img",
        &[
            "convert",
            "-f",
            "qcow2",
            "-O",
            "raw",
            overlay.to_str().unwrap(),
            through.to_str().unwrap(),
        ],
    );
    let (original, seen) = (
        std::fs::read(&image).unwrap(),
        std::fs::read(&through).unwrap(),
    );
    assert!(
        seen[..64 << 10].iter().all(|b| *b == 0x55),
        "the overlay's write"
    );
    assert!(
        seen[64 << 10..] == original[64 << 10..],
        "the export's data beneath"
    );

    let out = qemu("qemu-io", &["-f", "raw", "-c", "write 0 512", &uri]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("ermission") || text.contains("read-only") || !out.status.success(),
        "{text}"
    );

    let pid = rustix::process::Pid::from_raw(export.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let status = export.wait().unwrap();
    assert!(status.success(), "export exits cleanly on SIGTERM");
    assert!(!socket.exists(), "the socket is removed");
}

#[test]
fn export_bad_input_is_refused_before_serving() {
    let repo = TestRepo::init(Kind::Local);
    let image = repo.path("web01.img");
    mixed_disk(&image, 3);
    repo.backup("web01", "root", &image);
    let err = repo.fails(
        &["export", "latest", "--vm", "web01", "--nbd", "nowhere"],
        1,
    );
    assert!(err.contains("neither unix:PATH nor HOST:PORT"), "{err}");
    let err = repo.fails(&["export", "deadbeef", "--nbd", "unix:/tmp/x.sock"], 1);
    assert!(err.contains("deadbeef"), "{err}");
}

/// `export --migrate QMP`: once a VM runs on an overlay backed by the export, the rest
/// of the disk is streamed into the overlay while the VM runs, and the export stops by
/// itself; the overlay then stands alone and reads as the snapshot.
#[test]
fn migrate_streams_the_export_into_the_running_vms_overlay_then_stops() {
    let repo = TestRepo::init(Kind::Local);
    let image = repo.path("db01.img");
    make_disk(
        &image,
        &[
            Fill::Random {
                seed: 9,
                len: 6 << 20,
            },
            Fill::Hole { len: 2 << 20 },
        ],
    );
    repo.backup("db01", "root", &image);
    let (socket, qmp) = (repo.path("db01.sock"), repo.path("db01.qmp"));
    let mut export = repo
        .cmd()
        .args([
            "export", "latest", "--vm", "db01", "--disk", "root", "--nbd",
        ])
        .arg(format!("unix:{}", socket.display()))
        .arg("--migrate")
        .arg(&qmp)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_socket(&socket);
    let overlay = repo.path("db01.qcow2");
    let uri = format!("nbd+unix:///?socket={}", socket.display());
    qemu_ok(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", "-b", &uri, "-F", "raw"]
            .into_iter()
            .chain([overlay.to_str().unwrap()])
            .collect::<Vec<_>>(),
    );
    // A VM with nothing but the disk: streaming needs no guest.
    let mut vm = Command::new("qemu-system-x86_64")
        .args([
            "-machine",
            "none",
            "-nodefaults",
            "-display",
            "none",
            "-drive",
        ])
        .arg(format!(
            "file={},format=qcow2,if=none,id=disk0",
            overlay.display()
        ))
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", qmp.display()))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = export.try_wait().unwrap() {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the export did not finish migrating"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(export.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("migrated: drive disk0"), "{stderr}");
    assert!(!socket.exists(), "the export stopped");
    assert!(
        vm.try_wait().unwrap().is_none(),
        "the VM runs on without it"
    );
    vm.kill().unwrap();
    vm.wait().unwrap();

    let info = qemu(
        "qemu-img",
        &["info", "--output=json", overlay.to_str().unwrap()],
    );
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert!(info.get("backing-filename").is_none(), "{info}");
    let copy = repo.path("copy.raw");
    qemu_ok(
        "qemu-img",
        &[
            "convert",
            "-f",
            "qcow2",
            "-O",
            "raw",
            overlay.to_str().unwrap(),
            copy.to_str().unwrap(),
        ],
    );
    assert_same_file(&image, &copy);
}
