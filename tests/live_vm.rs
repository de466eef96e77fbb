//! Point-in-time backups of a running VM through the CLI (`lifeboat backup --qmp
//! SOCKET --drive NODE`), against a real qemu-system-x86_64 under TCG: the guest keeps
//! writing while the backup reads, and the snapshot is still exactly the disk at the
//! point in time between the hooks. Afterwards the VM still runs and nothing Lifeboat
//! created is left in QEMU but its one dirty bitmap.

mod support;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::vm::{NODE, Vm};
use support::{Kind, TestRepo};

const MIB: usize = 1 << 20;
const KIB: usize = 1 << 10;
/// The guest data the test writes: P1 before the first backup, P2 during it.
const P1: u8 = 0xaa;
const P2: u8 = 0xbb;
const DATA_MIB: usize = 8;

fn live_args<'a>(vm: &'a Vm, hooks: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["backup", "--vm", "web01", "--disk", "data", "--qmp"];
    args.push(vm.qmp_socket.to_str().unwrap());
    args.extend(["--drive", NODE]);
    args.extend(hooks);
    args
}

/// Asserts the VM runs on, with no job, export or node left by Lifeboat, and
/// `bitmaps` Lifeboat bitmaps on the drive, all recording.
fn assert_clean(vm: &Vm, nodes: &[String], bitmaps: usize) {
    assert_eq!(vm.status(), "running", "the VM keeps running");
    assert_eq!(
        vm.block_jobs(),
        Vec::<serde_json::Value>::new(),
        "no block job is left"
    );
    assert_eq!(
        vm.exports(),
        Vec::<serde_json::Value>::new(),
        "no export is left"
    );
    assert_eq!(vm.nodes(), nodes, "no scratch node is left");
    assert_eq!(
        vm.lifeboat_bitmaps().len(),
        bitmaps,
        "bitmaps: {:?}",
        vm.bitmaps()
    );
    assert!(
        vm.bitmaps().iter().all(|b| b["recording"] == true),
        "{:?}",
        vm.bitmaps()
    );
}

/// Restores `snapshot` and checks it holds `regions` (offset MiB, length, byte) and
/// zeros elsewhere.
fn assert_restores(repo: &TestRepo, snapshot: &str, regions: &[(usize, usize, u8)]) {
    let out = repo.path(&format!("restored-{}.raw", &snapshot[..8]));
    repo.restore(snapshot, &out);
    let data = std::fs::read(&out).unwrap();
    let mut expected = vec![0u8; 64 * MIB];
    for &(mib, len, byte) in regions {
        expected[mib * MIB..mib * MIB + len].fill(byte);
    }
    assert_eq!(data.len(), expected.len());
    if let Some(at) = data.iter().zip(&expected).position(|(a, b)| a != b) {
        panic!(
            "snapshot {snapshot}: byte {at} is {:#04x}, not {:#04x}",
            data[at], expected[at]
        );
    }
}

/// A live backup given no --definition records the running VM's, read over QMP: what
/// a drill needs to boot the disk as it ran.
fn assert_definition_read_over_qmp(snapshot: &serde_json::Value) {
    let d = &snapshot["vm_definition"];
    assert_eq!(d["source"], "qmp", "{snapshot}");
    assert_eq!(
        (d["cpus"].as_u64(), d["memory_mib"].as_u64()),
        (Some(1), Some(64)),
        "{d}"
    );
    assert_eq!(d["firmware"], "bios", "{d}");
    assert!(
        d["machine"].as_str().unwrap().starts_with("pc-i440fx"),
        "{d}"
    );
    assert_eq!(
        d["disks"],
        serde_json::json!([{"name": snapshot["disk"], "bus": "virtio"}])
    );
    assert_eq!(
        d["nics"],
        serde_json::json!([{"mac": support::vm::NIC_MAC, "network": "prod-lan", "model": "e1000"}])
    );
}

fn wait_for(path: &Path, stop: &AtomicBool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !path.exists() {
        if stop.load(Ordering::SeqCst) || Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

#[test]
fn live_backup_of_a_running_vm_is_point_in_time() {
    live_point_in_time(&[]);
}

#[test]
fn live_backup_into_fixed_chunks_is_point_in_time() {
    live_point_in_time(&["--fixed-chunks", "64KiB"]);
}

fn live_point_in_time(init_options: &[&str]) {
    let started = Instant::now();
    // Dropped last, also on panic: the VM is killed first, then the temp dir removed.
    let repo = TestRepo::init_with(Kind::Local, init_options);
    let disk = repo.path("data.qcow2");
    support::qemu::create_qcow2(&disk, "64M");
    let vm = Vm::start(repo.work.path(), &disk);
    let nodes = vm.nodes();
    vm.io(&format!("write -P {P1:#04x} 0 {DATA_MIB}M"));

    // The post hook marks the point in time, then holds the backup until the guest
    // has overwritten all the data once, so every read happens after P2 is on the
    // live disk: only copy-before-write can make the snapshot P1.
    let marker = repo.path("post-hook-ran");
    let overwritten = repo.path("overwritten-once");
    let post = format!(
        "touch {m}; i=0; while [ ! -e {o} ] && [ $i -lt 1000 ]; do sleep 0.01; i=$((i+1)); done",
        m = marker.display(),
        o = overwritten.display()
    );
    let hooks = [
        "--pre-hook",
        "echo freezing the guest >&2",
        "--post-hook",
        &post,
    ];
    let stop = AtomicBool::new(false);
    let passes = AtomicUsize::new(0);
    let first = std::thread::scope(|s| {
        s.spawn(|| {
            if !wait_for(&marker, &stop) {
                return;
            }
            // Keep writing P2 over the same data while the backup reads.
            while !stop.load(Ordering::SeqCst) {
                for mib in 0..DATA_MIB {
                    vm.io(&format!("write -P {P2:#04x} {mib}M 1M"));
                }
                if passes.fetch_add(1, Ordering::SeqCst) == 0 {
                    std::fs::write(&overwritten, b"").unwrap();
                }
            }
        });
        let out = repo.run(&[live_args(&vm, &hooks), vec!["--json"]].concat());
        stop.store(true, Ordering::SeqCst);
        out
    });
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(first.status.success(), "live backup failed: {stderr}");
    let first: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    assert!(
        passes.load(Ordering::SeqCst) >= 1,
        "the guest wrote during the backup"
    );
    assert_eq!(first["mode"], "scan", "{first}");
    assert_definition_read_over_qmp(&first["snapshot"]);
    assert_clean(&vm, &nodes, 1);
    let first_id = first["snapshot"]["id"].as_str().unwrap().to_string();
    assert_restores(&repo, &first_id, &[(0, DATA_MIB * MIB, P1)]);

    // The second backup reads only what the guest wrote since the point in time.
    let second = repo.json(&live_args(&vm, &[]));
    assert_eq!(second["mode"], "incremental", "{second}");
    let dirty = second["bytes_dirty"].as_u64().unwrap() as usize;
    assert!(
        (DATA_MIB * MIB..=(DATA_MIB + 1) * MIB).contains(&dirty),
        "{second}"
    );
    assert_clean(&vm, &nodes, 1);
    let bitmap = vm.lifeboat_bitmaps();
    let second_id = second["snapshot"]["id"].as_str().unwrap();
    assert_restores(&repo, second_id, &[(0, DATA_MIB * MIB, P2)]);

    // A failing pre hook aborts before the point in time; the post hook still runs
    // (to thaw a partial freeze), and nothing changes in QEMU.
    let taken = repo.path("post-hook-saw");
    let post = format!("echo $LIFEBOAT_SNAPSHOT_TAKEN > {}", taken.display());
    let hooks = [
        "--pre-hook",
        "echo cannot freeze >&2; exit 7",
        "--post-hook",
        &post,
    ];
    let text = repo.fails(&live_args(&vm, &hooks), 1);
    assert!(
        text.contains("cannot freeze"),
        "the hook's stderr is reported: {text}"
    );
    assert_eq!(std::fs::read_to_string(&taken).unwrap().trim(), "0");
    assert_clean(&vm, &nodes, 1);
    assert_eq!(vm.lifeboat_bitmaps(), bitmap, "the bitmap is untouched");
    let snapshots = repo.json(&["snapshots", "--vm", "web01"]);
    assert_eq!(snapshots.as_array().map(Vec::len), Some(2), "{snapshots}");

    vm.quit();
    eprintln!("live VM test took {:.1} s", started.elapsed().as_secs_f64());
}

#[test]
fn failed_and_killed_live_backups_lose_no_change() {
    let repo = TestRepo::init(Kind::Local);
    let disk = repo.path("data.qcow2");
    support::qemu::create_qcow2(&disk, "64M");
    let vm = Vm::start(repo.work.path(), &disk);
    let nodes = vm.nodes();
    vm.io(&format!("write -P {P1:#04x} 0 {DATA_MIB}M"));
    repo.json(&live_args(&vm, &[]));

    // Fails after the point in time: the post hook takes the repository away.
    vm.io("write -P 0xc1 16M 1M");
    let repo_dir = repo.path("repo");
    let away = repo.path("repo.away");
    let (r, a) = (repo_dir.display(), away.display());
    let post = format!("mv {r} {a} && touch {r}");
    repo.fails(&live_args(&vm, &["--post-hook", &post]), 1);
    std::fs::remove_file(&repo_dir).unwrap();
    std::fs::rename(&away, &repo_dir).unwrap();
    assert_clean(&vm, &nodes, 1);

    // Killed right after the point in time, while the post hook runs: the job and
    // scratch nodes stay in QEMU until the next backup removes them.
    vm.io("write -P 0xc2 20M 64k");
    let (marker, pid) = (repo.path("post-hook-ran"), repo.path("hook.pid"));
    let post = format!(
        "echo $$ > {}; touch {}; exec sleep 60",
        pid.display(),
        marker.display()
    );
    let mut child = repo
        .cmd()
        .args(live_args(&vm, &["--post-hook", &post]))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        wait_for(&marker, &AtomicBool::new(false)),
        "the post hook ran"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let hook: u32 = std::fs::read_to_string(&pid)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let _ = std::process::Command::new("kill")
        .arg(hook.to_string())
        .status();
    assert_eq!(vm.block_jobs().len(), 1, "the killed backup left its job");
    vm.io("write -P 0xc3 24M 64k");

    let report = repo.json(&live_args(&vm, &[]));
    assert_eq!(report["mode"], "incremental", "{report}");
    assert_eq!(
        report["bytes_dirty"],
        MIB + 128 * KIB,
        "every write since backup 1: {report}"
    );
    assert_clean(&vm, &nodes, 1);
    let regions = [
        (0, DATA_MIB * MIB, P1),
        (16, MIB, 0xc1),
        (20, 64 * KIB, 0xc2),
        (24, 64 * KIB, 0xc3),
    ];
    assert_restores(&repo, report["snapshot"]["id"].as_str().unwrap(), &regions);
    vm.quit();
}
