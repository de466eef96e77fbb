//! Changed-block tracking with real qemu-img, qemu-io and qemu-nbd: incremental backups
//! read only what changed, and every snapshot restores to exactly the disk as it was.

mod support;

use support::disk::{Fill, make_disk};
use support::qemu::{bitmaps, convert, create_qcow2, io, qemu_nbd_pids, to_raw};
use support::{Kind, TestRepo, assert_same_file};

fn lifeboat_bitmaps(image: &std::path::Path) -> Vec<String> {
    bitmaps(image)
        .into_iter()
        .filter(|b| b.starts_with("lifeboat-"))
        .collect()
}

/// Fixed chunks at the bitmap's granularity, as `bench/cbt_incremental.sh` uses them.
const FIXED_64K: &[&str] = &["--fixed-chunks", "64KiB"];

#[test]
fn qcow2_incremental_backups_read_only_what_changed() {
    // Dirty blocks plus about one to two average chunks (1 MiB) of context each.
    incremental_nights(&[], |_dirty| 8 << 20);
}

#[test]
fn qcow2_incremental_backups_with_fixed_chunks_read_only_dirty_granules() {
    // Cells are the bitmap's 64 KiB granules: exactly the dirty bytes are read.
    incremental_nights(FIXED_64K, |dirty| dirty);
}

/// Four nights of writes into a qcow2 backed up with `init_options`; each incremental
/// may read at most `max_read(bytes_dirty)`, and every night restores byte-identical.
fn incremental_nights(init_options: &[&str], max_read: impl Fn(u64) -> u64) {
    let repo = TestRepo::init_with(Kind::Local, init_options);
    // Guest data is incompressible and varied (constant patterns make every chunk
    // cut at the maximum size, which is not what real disks look like).
    let seed_raw = repo.path("seed.raw");
    make_disk(
        &seed_raw,
        &[
            Fill::Random {
                seed: 1,
                len: 24 << 20,
            },
            Fill::Hole { len: 40 << 20 },
            Fill::Random {
                seed: 2,
                len: 16 << 20,
            },
            Fill::Hole { len: 48 << 20 },
        ],
    );
    let img = repo.path("web01.qcow2");
    convert(&seed_raw, "qcow2", &img);

    let mut nights = Vec::new();
    let first = repo.backup("web01", "root", &img);
    assert_eq!(first["mode"], "scan", "{first}");
    assert!(
        first["mode_reason"]
            .as_str()
            .unwrap()
            .contains("first backup"),
        "{first}"
    );
    nights.push((
        first["snapshot"]["id"].as_str().unwrap().to_string(),
        repo.path("night0.raw"),
    ));
    to_raw(&img, &nights[0].1);
    assert_eq!(
        lifeboat_bitmaps(&img).len(),
        1,
        "the first backup starts tracking"
    );

    let writes = [
        "write -P 0x33 1M 64k",
        "write -P 0x44 40M 128k", // into unallocated space
        "write -z 2M 1M",         // zeroes over data
    ];
    for (night, write) in writes.iter().enumerate() {
        io(&img, write);
        io(&img, &format!("write -P 0x5{night} {}M 4k", 70 + night));
        let report = repo.backup("web01", "root", &img);
        assert_eq!(report["mode"], "incremental", "{report}");
        let read = report["bytes_read"].as_u64().unwrap();
        let dirty = report["bytes_dirty"].as_u64().unwrap();
        assert!(
            read > 0 && read <= max_read(dirty),
            "night {night}: read {read} bytes of a 128 MiB disk: {report}"
        );
        assert!(dirty <= 2 << 20, "{report}");
        assert_eq!(
            lifeboat_bitmaps(&img).len(),
            1,
            "old bitmaps are removed after commit"
        );
        let raw = repo.path(&format!("night{}.raw", night + 1));
        to_raw(&img, &raw);
        nights.push((report["snapshot"]["id"].as_str().unwrap().to_string(), raw));
    }
    for (id, raw) in &nights {
        let out = repo.path(&format!("restored-{}.raw", &id[..8]));
        repo.restore(id, &out);
        assert_same_file(&out, raw);
    }
}

#[test]
fn an_incremental_manifest_equals_a_full_one() {
    incremental_equals_full(&[]);
}

#[test]
fn an_incremental_manifest_equals_a_full_one_with_fixed_chunks() {
    incremental_equals_full(FIXED_64K);
}

fn incremental_equals_full(init_options: &[&str]) {
    // The same image backed up incrementally and in full (as another VM) must give
    // identical chunk lists: dedup across hosts and CBT depend on it.
    let incremental = TestRepo::init_with(Kind::Local, init_options);
    let img = incremental.path("d.qcow2");
    create_qcow2(&img, "32M");
    io(&img, "write -P 0x61 0 6M");
    incremental.backup("vm", "d", &img);
    io(&img, "write -P 0x62 3M 100k");
    io(&img, "write -z 5M 2M");
    let inc = incremental.backup("vm", "d", &img);
    assert_eq!(inc["mode"], "incremental");

    let raw = incremental.path("d.raw");
    to_raw(&img, &raw);
    let full = incremental.backup("vm-full", "d", &raw);
    assert_eq!(full["mode"], "scan");
    assert_eq!(
        full["chunks"], inc["chunks"],
        "full {full}\nincremental {inc}"
    );
    assert_eq!(full["zero_bytes"], inc["zero_bytes"]);
    assert_eq!(
        full["new_chunks"], 0,
        "every chunk of the full read was already stored: {full}"
    );
}

#[test]
fn a_killed_backup_loses_no_change_and_leaves_no_export_behind() {
    let repo = TestRepo::init(Kind::Local);
    let img = repo.path("db.qcow2");
    create_qcow2(&img, "256M");
    io(&img, "write -P 0x10 0 200M");
    repo.backup("db", "data", &img);
    // Enough change that the incremental is still reading when it is killed.
    io(&img, "write -P 0x20 100M 40M");

    // Kill the backup (SIGKILL: no cleanup of its own) once its export is up.
    let mut child = repo
        .cmd()
        .args([
            "backup",
            "--vm",
            "db",
            "--disk",
            "data",
            img.to_str().unwrap(),
            "--json",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    while qemu_nbd_pids(&img).is_empty() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the backup ended before its export could be seen"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // Its qemu-nbd dies with it: an orphan would keep the image locked (no VM could
    // start from it) until someone killed it by hand.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !qemu_nbd_pids(&img).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "qemu-nbd outlived the killed backup: {:?}",
            qemu_nbd_pids(&img)
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(
        lifeboat_bitmaps(&img).len(),
        2,
        "killed between its bitmaps"
    );

    io(&img, "write -P 0x30 150M 64k");
    let report = repo.backup("db", "data", &img);
    assert_eq!(report["mode"], "incremental", "{report}");
    let raw = repo.path("now.raw");
    to_raw(&img, &raw);
    let out = repo.path("restored.raw");
    repo.restore("latest", &out);
    assert_same_file(&out, &raw);
    assert_eq!(
        lifeboat_bitmaps(&img).len(),
        1,
        "leftover bitmaps are cleaned up"
    );
}

#[test]
fn missing_bitmap_falls_back_to_a_scan_and_says_why() {
    let repo = TestRepo::init(Kind::Local);
    let img = repo.path("x.qcow2");
    create_qcow2(&img, "16M");
    io(&img, "write -P 0x7 0 1M");
    repo.backup("x", "x", &img);
    for b in lifeboat_bitmaps(&img) {
        std::process::Command::new("qemu-img")
            .args(["bitmap", "--remove"])
            .arg(&img)
            .arg(&b)
            .status()
            .unwrap();
    }
    // A lone consistent bitmap that is not the snapshot's (here: made by hand) is
    // exported early while the repository opens; the scan must still read everything.
    let added = std::process::Command::new("qemu-img")
        .args(["bitmap", "--add"])
        .arg(&img)
        .arg("lifeboat-not-this-repos")
        .status()
        .unwrap();
    assert!(added.success());
    io(&img, "write -P 0x8 512k 64k");
    let report = repo.backup("x", "x", &img);
    assert_eq!(report["mode"], "scan");
    assert!(
        report["mode_reason"].as_str().unwrap().contains("missing"),
        "{report}"
    );
    let (raw, out) = (repo.path("x.raw"), repo.path("x.restored"));
    to_raw(&img, &raw);
    repo.restore(report["snapshot"]["id"].as_str().unwrap(), &out);
    assert_same_file(&out, &raw);
    assert_eq!(
        lifeboat_bitmaps(&img).len(),
        1,
        "only the new bitmap is left"
    );
    let next = repo.backup("x", "x", &img);
    assert_eq!(next["mode"], "incremental", "{next}");
}

#[test]
fn vhdx_and_vmdk_images_back_up_by_scanning() {
    let repo = TestRepo::init(Kind::Local);
    let raw = repo.path("src.raw");
    support::disk::mixed_disk(&raw, 11);
    for format in ["vhdx", "vmdk"] {
        let img = repo.path(&format!("disk.{format}"));
        convert(&raw, format, &img);
        let report = repo.backup("win01", format, &img);
        assert_eq!(report["mode"], "scan");
        assert!(
            report["mode_reason"].as_str().unwrap().contains(format),
            "{report}"
        );
        let out = repo.path(&format!("restored-{format}.raw"));
        repo.ok(&[
            "restore",
            "latest",
            "--vm",
            "win01",
            "--disk",
            format,
            out.to_str().unwrap(),
        ]);
        // The format rounds the virtual size up; what the guest sees is the reference.
        let guest_view = repo.path(&format!("guest-{format}.raw"));
        to_raw(&img, &guest_view);
        assert_same_file(&out, &guest_view);
        let (restored, original) = (std::fs::read(&out).unwrap(), std::fs::read(&raw).unwrap());
        assert_eq!(
            &restored[..original.len()],
            &original[..],
            "the original data is intact"
        );
    }
}

#[test]
fn an_existing_nbd_export_backs_up_by_scanning() {
    let repo = TestRepo::init(Kind::Local);
    let raw = repo.path("exported.raw");
    // NBD sizes are whole sectors: keep the disk aligned so the two files compare.
    make_disk(
        &raw,
        &[
            Fill::Random {
                seed: 21,
                len: 3 << 20,
            },
            Fill::Hole { len: 4 << 20 },
            Fill::Text { len: 1 << 20 },
            Fill::Zeros { len: 1 << 20 },
        ],
    );
    let socket = repo.path("nbd.sock");
    let mut server = std::process::Command::new("qemu-nbd")
        .args([
            "--read-only",
            "--persistent",
            "--format=raw",
            "--export-name=disk0",
            "-k",
        ])
        .arg(&socket)
        .arg(&raw)
        .spawn()
        .unwrap();
    while !socket.exists() {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let uri = format!("nbd+unix:///disk0?socket={}", socket.display());
    let report = repo.json(&["backup", "--vm", "app", "--disk", "data", &uri]);
    server.kill().unwrap();
    server.wait().unwrap();
    assert_eq!(report["mode"], "scan", "{report}");
    assert!(
        report["bytes_read"].as_u64().unwrap() < report["disk_size"].as_u64().unwrap(),
        "holes are skipped"
    );
    let out = repo.path("restored.raw");
    repo.restore("latest", &out);
    assert_same_file(&out, &raw);
}
