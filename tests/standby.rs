//! Warm standby disks, end to end through the binary with real qemu-img, qemu-io and
//! qemu-nbd: after every nightly `standby sync`, each kept point reads exactly as
//! `lifeboat restore` of its snapshot; an incremental sync writes only what changed;
//! a crash or a full disk never costs the previous point.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::disk::{Fill, make_disk, random_bytes, write_at};
use support::qemu::{convert, io, qemu_nbd_pids, to_raw};
use support::tmpfs::Tmpfs;
use support::{Kind, TestRepo, assert_same_file};

const GRANULE: u64 = 64 << 10;

/// `standby sync --dir DIR ARGS --json`, asserting success.
fn sync(repo: &TestRepo, dir: &Path, args: &[&str]) -> Value {
    let dir = dir.to_str().unwrap();
    repo.json(&[&["standby", "sync", "--dir", dir], args].concat())
}

/// The one disk report of a sync.
fn disk_report(report: &Value) -> &Value {
    let disks = report["disks"].as_array().unwrap();
    assert_eq!(disks.len(), 1, "{report}");
    &disks[0]
}

/// Every point `points.json` lists, as (snapshot, image path).
fn points(disk_dir: &Path) -> Vec<(String, PathBuf)> {
    let text = std::fs::read(disk_dir.join("points.json")).unwrap();
    let parsed: Value = serde_json::from_slice(&text).unwrap();
    parsed["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let file = disk_dir.join(p["file"].as_str().unwrap());
            (p["snapshot"].as_str().unwrap().to_string(), file)
        })
        .collect()
}

/// Asserts every kept point's image reads byte for byte as the restore of its
/// snapshot; returns the kept snapshots, oldest first.
fn assert_points_equal_restores(repo: &TestRepo, disk_dir: &Path) -> Vec<String> {
    let kept = points(disk_dir);
    assert!(!kept.is_empty(), "no points in {}", disk_dir.display());
    for (snapshot, image) in &kept {
        let (point_raw, restored) = (repo.path("point.raw"), repo.path("restored.raw"));
        to_raw(image, &point_raw);
        repo.ok(&[
            "restore",
            snapshot,
            restored.to_str().unwrap(),
            "--overwrite",
            "-q",
        ]);
        assert_same_file(&point_raw, &restored);
    }
    kept.into_iter().map(|(s, _)| s).collect()
}

/// Bytes of the 64 KiB granules that `(offset, len)` writes touch.
fn granule_bytes(writes: &[(u64, u64)]) -> u64 {
    let mut touched: Vec<u64> = writes
        .iter()
        .flat_map(|&(o, l)| (o / GRANULE)..(o + l).div_ceil(GRANULE))
        .collect();
    touched.sort_unstable();
    touched.dedup();
    touched.len() as u64 * GRANULE
}

fn snapshot_id(backup: &Value) -> String {
    backup["snapshot"]["id"].as_str().unwrap().to_string()
}

#[test]
fn nightly_syncs_keep_points_equal_to_their_snapshots_and_write_only_changes() {
    // Fixed 64 KiB chunks (what the README recommends for CBT VM disks) make the
    // changed data exact: the granules the guest wrote.
    let repo = TestRepo::init_with(Kind::Local, &["--fixed-chunks", "64KiB"]);
    let seed_raw = repo.path("seed.raw");
    make_disk(
        &seed_raw,
        &[
            Fill::Random {
                seed: 1,
                len: 24 << 20,
            },
            Fill::Hole { len: 24 << 20 },
            Fill::Random {
                seed: 2,
                len: 8 << 20,
            },
            Fill::Hole { len: 8 << 20 },
        ],
    );
    let img = repo.path("web01.qcow2");
    convert(&seed_raw, "qcow2", &img);
    let standby = repo.path("standby");
    let disk_dir = standby.join("web01").join("root");

    let first = snapshot_id(&repo.backup("web01", "root", &img));
    let report = sync(&repo, &standby, &[]);
    let d = disk_report(&report);
    assert_eq!(d["mode"], "full", "{report}");
    assert_eq!(d["point"], first.as_str());
    assert_eq!(
        d["bytes_written"],
        32 << 20,
        "holes are not written: {report}"
    );
    assert_eq!(
        assert_points_equal_restores(&repo, &disk_dir),
        std::slice::from_ref(&first)
    );
    let again = sync(&repo, &standby, &[]);
    assert_eq!(disk_report(&again)["mode"], "unchanged", "{again}");
    assert_eq!(disk_report(&again)["bytes_written"], 0);

    // Scattered writes each night: aligned and unaligned, into data and into holes,
    // and a zeroed range; one pattern byte per write so no chunk repeats an old one.
    let nights: [&[(u64, u64)]; 3] = [
        &[
            (1 << 20, 64 << 10),
            (30 << 20, 128 << 10),
            (5_000_000, 10_000),
        ],
        &[(2 << 20, 192 << 10), (50 << 20, 4096), (60 << 20, 1 << 20)],
        &[(12 << 20, 64 << 10), (40 << 20, 300 << 10)],
    ];
    let mut kept = vec![first];
    for (night, writes) in nights.iter().enumerate() {
        for (i, &(offset, len)) in writes.iter().enumerate() {
            let pattern = 0x40 + 8 * night + i;
            io(&img, &format!("write -P {pattern:#x} {offset} {len}"));
        }
        let mut zeroed = 0;
        if night == 1 {
            // Zeroing data the previous point holds must reach the standby too.
            io(&img, "write -z 8M 256k");
            zeroed = 256 << 10;
        }
        kept.push(snapshot_id(&repo.backup("web01", "root", &img)));
        // The last night also lowers the number of points kept.
        let keep: &[&str] = if night == 2 { &["--keep", "2"] } else { &[] };
        let report = sync(&repo, &standby, keep);
        let d = disk_report(&report);
        assert_eq!(d["mode"], "incremental", "{report}");
        let changed = granule_bytes(writes);
        let written = d["bytes_written"].as_u64().unwrap();
        assert!(
            written >= changed && written <= 2 * changed,
            "night {night}: wrote {written} bytes for {changed} changed: {report}"
        );
        assert_eq!(d["bytes_zeroed"], zeroed, "{report}");
        let expected: Vec<String> = if night == 2 {
            kept[kept.len() - 2..].to_vec()
        } else {
            kept.clone()
        };
        let listed: Vec<&str> = d["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["snapshot"].as_str().unwrap())
            .collect();
        assert_eq!(listed, expected, "{report}");
        assert_eq!(assert_points_equal_restores(&repo, &disk_dir), expected);
    }
    // Folding left the two overlays' chain: base plus one overlay, nothing else.
    let mut files: Vec<String> = std::fs::read_dir(&disk_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".qcow2") || n.contains("partial"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(files.contains(&"base.qcow2".to_string()), "{files:?}");
}

#[test]
fn a_sync_killed_mid_write_leaves_the_previous_point_and_the_rerun_completes() {
    let repo = TestRepo::init(Kind::Local);
    let disk = repo.path("db.raw");
    make_disk(
        &disk,
        &[
            Fill::Random {
                seed: 7,
                len: 8 << 20,
            },
            Fill::Hole { len: 120 << 20 },
        ],
    );
    let first = snapshot_id(&repo.backup("db01", "data", &disk));
    let standby = repo.path("standby");
    let disk_dir = standby.join("db01").join("data");
    sync(&repo, &standby, &["-q"]);
    // A night that changes a lot, so the sync is still writing when it is killed.
    write_at(&disk, 16 << 20, &random_bytes(8, 96 << 20));
    let second = snapshot_id(&repo.backup("db01", "data", &disk));

    let mut child = repo
        .cmd()
        .args(["standby", "sync", "--dir", standby.to_str().unwrap(), "-q"])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let partial = loop {
        let found = std::fs::read_dir(&disk_dir).unwrap().find_map(|e| {
            let e = e.unwrap();
            let big = e.metadata().unwrap().len() > (16 << 20);
            (e.file_name().to_string_lossy().ends_with(".partial") && big).then(|| e.path())
        });
        if let Some(p) = found {
            break p;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the sync finished before it could be killed mid-write"
        );
        assert!(Instant::now() < deadline, "no .partial file appeared");
        std::thread::sleep(Duration::from_millis(2));
    };
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // qemu-nbd dies with it (pdeathsig); give the kernel a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !qemu_nbd_pids(&partial).is_empty() {
        assert!(Instant::now() < deadline, "qemu-nbd outlived lifeboat");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(partial.exists());
    assert_eq!(
        assert_points_equal_restores(&repo, &disk_dir),
        std::slice::from_ref(&first)
    );

    let report = sync(&repo, &standby, &[]);
    assert_eq!(disk_report(&report)["mode"], "incremental", "{report}");
    assert!(!partial.exists(), "the rerun removes the leftover");
    assert_eq!(
        assert_points_equal_restores(&repo, &disk_dir),
        [first, second]
    );
}

#[test]
fn a_full_standby_disk_is_a_clear_error_and_the_previous_point_stays_usable() {
    let repo = TestRepo::init(Kind::Local);
    let disk = repo.path("app.raw");
    make_disk(
        &disk,
        &[
            Fill::Random {
                seed: 3,
                len: 12 << 20,
            },
            Fill::Hole { len: 52 << 20 },
        ],
    );
    let first = snapshot_id(&repo.backup("app01", "root", &disk));
    let tmpfs = Tmpfs::mount(repo.path("small"), "24m");
    let standby = tmpfs.0.join("standby");
    let disk_dir = standby.join("app01").join("root");
    sync(&repo, &standby, &[]);
    let listed_before = std::fs::read(disk_dir.join("points.json")).unwrap();

    write_at(&disk, 20 << 20, &random_bytes(4, 24 << 20));
    repo.backup("app01", "root", &disk);
    let text = repo.fails(&["standby", "sync", "--dir", standby.to_str().unwrap()], 1);
    assert!(text.contains("no space left"), "{text}");
    assert!(text.contains(standby.to_str().unwrap()), "{text}");
    assert!(text.contains("free space"), "{text}");
    // Nothing changed: the same list, no leftover, the point still equal.
    assert_eq!(
        std::fs::read(disk_dir.join("points.json")).unwrap(),
        listed_before
    );
    let leftovers: Vec<_> = std::fs::read_dir(&disk_dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains("partial")
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert_eq!(assert_points_equal_restores(&repo, &disk_dir), [first]);
}

#[test]
fn standby_from_an_s3_repository() {
    let repo = TestRepo::init(Kind::S3);
    let disk = repo.path("s3vm.raw");
    make_disk(
        &disk,
        &[
            Fill::Random {
                seed: 11,
                len: 6 << 20,
            },
            Fill::Hole { len: 10 << 20 },
        ],
    );
    let first = snapshot_id(&repo.backup("s3vm", "root", &disk));
    let standby = repo.path("standby");
    sync(&repo, &standby, &["--vm", "s3vm"]);
    write_at(&disk, 3 << 20, &random_bytes(12, 100_000));
    write_at(&disk, 9 << 20, &random_bytes(13, 1 << 20));
    let second = snapshot_id(&repo.backup("s3vm", "root", &disk));
    let report = sync(&repo, &standby, &["--vm", "s3vm"]);
    let d = disk_report(&report);
    assert_eq!(d["mode"], "incremental", "{report}");
    // CDC chunks (1 MiB average) around two writes: far less than the 6 MiB of data.
    assert!(d["bytes_written"].as_u64().unwrap() < 5 << 20, "{report}");
    let disk_dir = standby.join("s3vm").join("root");
    assert_eq!(
        assert_points_equal_restores(&repo, &disk_dir),
        [first, second]
    );
}

#[test]
fn bad_input_is_refused_clearly_and_changes_nothing() {
    let repo = TestRepo::init(Kind::Local);
    let disk = repo.path("x.raw");
    make_disk(
        &disk,
        &[Fill::Random {
            seed: 5,
            len: 1 << 20,
        }],
    );
    let standby = repo.path("standby");

    // An empty repository, then a VM it does not have.
    let text = repo.fails(&["standby", "sync", "--dir", standby.to_str().unwrap()], 1);
    assert!(text.contains("no snapshots"), "{text}");
    repo.backup("vm1", "root", &disk);
    let text = repo.fails(
        &[
            "standby",
            "sync",
            "--dir",
            standby.to_str().unwrap(),
            "--vm",
            "nosuchvm",
        ],
        1,
    );
    assert!(text.contains("no snapshots of VM nosuchvm"), "{text}");
    assert!(text.contains("lifeboat snapshots"), "{text}");
    assert!(!standby.exists(), "nothing created for bad input");

    // A directory that cannot be created (its parent is a file), and --keep 0.
    let file = repo.path("a-file");
    std::fs::write(&file, b"x").unwrap();
    let under_file = file.join("standby");
    let text = repo.fails(
        &["standby", "sync", "--dir", under_file.to_str().unwrap()],
        1,
    );
    assert!(text.contains("not writable"), "{text}");
    assert!(text.contains(under_file.to_str().unwrap()), "{text}");
    let text = repo.fails(
        &[
            "standby",
            "sync",
            "--dir",
            standby.to_str().unwrap(),
            "--keep",
            "0",
        ],
        2,
    );
    assert!(text.contains("--keep"), "{text}");
    assert!(!standby.exists());
}

#[test]
fn a_fold_interrupted_after_its_commit_is_finished_by_the_next_run() {
    let repo = TestRepo::init(Kind::Local);
    let disk = repo.path("f.raw");
    make_disk(
        &disk,
        &[
            Fill::Random {
                seed: 21,
                len: 4 << 20,
            },
            Fill::Hole { len: 4 << 20 },
        ],
    );
    let standby = repo.path("standby");
    let disk_dir = standby.join("f01").join("root");
    let mut snaps = Vec::new();
    for night in 0..3u64 {
        write_at(&disk, night * (3 << 20), &random_bytes(30 + night, 200_000));
        snaps.push(snapshot_id(&repo.backup("f01", "root", &disk)));
        sync(&repo, &standby, &["-q"]);
    }
    // A run folding the oldest point died right after `qemu-img commit`: the oldest
    // point is marked merging, base.qcow2 already holds the second point.
    let kept = points(&disk_dir);
    assert_eq!(kept.len(), 3);
    let status = Command::new("qemu-img")
        .args(["commit", "-q", "-d", "-f", "qcow2"])
        .arg(&kept[1].1)
        .status()
        .unwrap();
    assert!(status.success());
    let path = disk_dir.join("points.json");
    let mut listed: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    listed["points"][0]["merging"] = Value::Bool(true);
    std::fs::write(&path, serde_json::to_vec(&listed).unwrap()).unwrap();

    let report = sync(&repo, &standby, &[]);
    assert_eq!(disk_report(&report)["mode"], "unchanged", "{report}");
    assert_eq!(assert_points_equal_restores(&repo, &disk_dir), snaps[1..]);
    assert!(!kept[1].1.exists(), "the folded overlay is gone");
}
