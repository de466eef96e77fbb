//! End-to-end: back up, change blocks, back up again, restore every snapshot
//! byte-identical — against a local directory and a real S3 server.

mod support;

use support::disk::{Fill, make_disk, mixed_disk, random_bytes, write_at};
use support::{Kind, TestRepo, assert_same_file};

fn id(report: &serde_json::Value) -> String {
    report["snapshot"]["id"].as_str().unwrap().to_string()
}

fn incremental_round_trip(kind: Kind) {
    let repo = TestRepo::init(kind);
    let img = repo.path("web01-root.img");
    let size = mixed_disk(&img, 1);
    let first = repo.backup("web01", "root", &img);
    assert_eq!(first["disk_size"], size);
    // 8 MiB of holes and written zeros, less the partial 4 KiB blocks at unaligned edges.
    assert!(
        first["zero_bytes"].as_u64().unwrap() >= (8 << 20) - 3 * 4096,
        "holes and zero runs are zero extents: {first}"
    );
    let night1 = repo.path("night1.img");
    std::fs::copy(&img, &night1).unwrap();

    // The guest writes a few blocks: over data, and into what was a hole.
    write_at(&img, 1 << 20, &random_bytes(99, 64 * 1024));
    write_at(&img, (4 << 20) + 12345, b"a write into the former hole");
    let second = repo.backup("web01", "root", &img);
    let (chunks, new) = (
        second["chunks"].as_u64().unwrap(),
        second["new_chunks"].as_u64().unwrap(),
    );
    assert!(new < chunks, "unchanged data is deduplicated: {second}");
    assert!(
        second["new_bytes"].as_u64().unwrap() < 9 << 20,
        "only chunks around the writes are new: {second}"
    );

    let listed = repo.json(&["snapshots"]);
    assert_eq!(listed.as_array().unwrap().len(), 2);

    let out1 = repo.path("restored1.img");
    repo.restore(&id(&first)[..8], &out1);
    assert_same_file(&out1, &night1);
    let out2 = repo.path("restored2.img");
    let restored = repo.restore("latest", &out2);
    assert_eq!(restored["snapshot"], id(&second));
    assert_same_file(&out2, &img);

    // A restore never silently replaces an existing disk.
    let text = repo.fails(&["restore", "latest", out2.to_str().unwrap()], 1);
    assert!(text.contains("--overwrite"), "{text}");
    repo.ok(&["restore", "latest", out2.to_str().unwrap(), "--overwrite"]);
    assert_same_file(&out2, &img);

    let verify = repo.json(&["verify", "--read-data"]);
    assert_eq!(verify["problems"].as_array().unwrap().len(), 0, "{verify}");
    assert_eq!(verify["snapshots"], 2);
}

#[test]
fn incremental_round_trip_local() {
    incremental_round_trip(Kind::Local);
}

#[test]
fn incremental_round_trip_s3() {
    incremental_round_trip(Kind::S3);
}

fn shared_data_is_stored_once(kind: Kind) {
    let repo = TestRepo::init(kind);
    let (a, b) = (repo.path("a.img"), repo.path("b.img"));
    make_disk(
        &a,
        &[
            Fill::Random {
                seed: 10,
                len: 12 << 20,
            },
            Fill::Text { len: 1 << 20 },
        ],
    );
    make_disk(
        &b,
        &[
            Fill::Random {
                seed: 10,
                len: 12 << 20,
            },
            Fill::Random {
                seed: 11,
                len: 2 << 20,
            },
        ],
    );
    let ra = repo.backup("db01", "data", &a);
    let rb = repo.backup("db02", "data", &b);
    assert!(ra["stored_bytes"].as_u64().unwrap() >= 12 << 20);
    // The 12 MiB both disks share is stored once: the second disk adds its own 2 MiB
    // plus at most the chunk that straddles the boundary (max chunk 4 MiB).
    let added = rb["stored_bytes"].as_u64().unwrap();
    assert!(
        added <= (2 << 20) + (4 << 20) + (64 << 10),
        "second disk stored {added} bytes: {rb}"
    );
    for (img, vm) in [(&a, "db01"), (&b, "db02")] {
        let out = repo.path(&format!("{vm}.out"));
        repo.ok(&["restore", "latest", "--vm", vm, out.to_str().unwrap()]);
        assert_same_file(&out, img);
    }
    // `latest` without a VM is ambiguous here, and says so.
    let text = repo.fails(&["restore", "latest", repo.path("x").to_str().unwrap()], 1);
    assert!(text.contains("ambiguous"), "{text}");
}

#[test]
fn shared_data_is_stored_once_local() {
    shared_data_is_stored_once(Kind::Local);
}

#[test]
fn shared_data_is_stored_once_s3() {
    shared_data_is_stored_once(Kind::S3);
}

#[test]
fn deleted_catalog_is_rebuilt_from_the_repository() {
    let repo = TestRepo::init(Kind::Local);
    let img = repo.path("d.img");
    mixed_disk(&img, 5);
    repo.backup("vm", "d", &img);
    std::fs::remove_dir_all(repo.path("cache")).unwrap();
    let again = repo.backup("vm", "d", &img);
    assert_eq!(
        again["new_chunks"], 0,
        "dedup works from the rebuilt catalog: {again}"
    );
    let out = repo.path("out.img");
    repo.restore("latest", &out);
    assert_same_file(&out, &img);
}

#[test]
fn a_killed_backup_resumes_without_uploading_again() {
    let repo = TestRepo::new(Kind::Local);
    repo.ok(&["init", "--pack-size", "1MiB", "--chunk-avg", "64KiB"]);
    let img = repo.path("big.img");
    make_disk(
        &img,
        &[Fill::Random {
            seed: 3,
            len: 96 << 20,
        }],
    );
    let mut child = repo
        .cmd()
        .args([
            "backup",
            "--vm",
            "vm",
            "--disk",
            "big",
            img.to_str().unwrap(),
            "--json",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let data = std::path::Path::new(&repo.url).join("data");
    let count_packs = || walk_files(&data);
    while count_packs() < 20 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "backup finished before it could be killed"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL: no cleanup runs
    child.wait().unwrap();
    assert!(
        repo.json(&["snapshots"]).as_array().unwrap().is_empty(),
        "no half snapshot is visible"
    );
    let uploaded = count_packs();
    let resumed = repo.backup("vm", "big", &img);
    let (chunks, new) = (
        resumed["chunks"].as_u64().unwrap(),
        resumed["new_chunks"].as_u64().unwrap(),
    );
    assert!(
        chunks - new >= (uploaded as u64 - 1) * 8,
        "{uploaded} packs were reused: {resumed}"
    );
    let out = repo.path("out.img");
    repo.restore("latest", &out);
    assert_same_file(&out, &img);
    assert_eq!(
        repo.json(&["verify", "--read-data"])["problems"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
}

fn walk_files(dir: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            if e.path().is_dir() {
                walk_files(&e.path())
            } else {
                usize::from(!e.file_name().to_string_lossy().starts_with(".tmp"))
            }
        })
        .sum()
}
