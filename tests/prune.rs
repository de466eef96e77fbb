//! `lifeboat prune`: forgotten snapshots' data is condemned by one run and deleted by
//! a later one after the grace period; mostly-dead packs are repacked; what is still
//! used restores byte-identical; and data that was pruned is uploaded afresh when it
//! shows up again (nothing deduplicates against deleted packs). Object Lock: a locked
//! object cannot be deleted, prune skips it and says so.

mod support;

use support::disk::{random_bytes, write_at};
use support::{Kind, TestRepo, assert_same_file};

fn id(report: &serde_json::Value) -> String {
    report["snapshot"]["id"].as_str().unwrap().to_string()
}

/// Snapshots: a1, a2 (a1 with 3 of 4 MiB rewritten), b1, b2 (b rewritten entirely).
/// Returns (a2, b2) ids and copies of a1, a2, b2.
struct History {
    a2: String,
    b2: String,
    a1_copy: std::path::PathBuf,
    a2_copy: std::path::PathBuf,
    b2_copy: std::path::PathBuf,
}

fn history(repo: &TestRepo) -> History {
    let a = repo.path("a.img");
    std::fs::write(&a, random_bytes(1, 4 << 20)).unwrap();
    repo.backup("vm-a", "root", &a);
    let a1_copy = repo.path("a1.copy");
    std::fs::copy(&a, &a1_copy).unwrap();
    write_at(&a, 1 << 20, &random_bytes(2, 3 << 20));
    let a2 = id(&repo.backup("vm-a", "root", &a));
    let a2_copy = repo.path("a2.copy");
    std::fs::copy(&a, &a2_copy).unwrap();

    let b = repo.path("b.img");
    std::fs::write(&b, random_bytes(3, 2 << 20)).unwrap();
    repo.backup("vm-b", "root", &b);
    std::fs::write(&b, random_bytes(4, 2 << 20)).unwrap();
    let b2 = id(&repo.backup("vm-b", "root", &b));
    let b2_copy = repo.path("b2.copy");
    std::fs::copy(&b, &b2_copy).unwrap();
    History {
        a2,
        b2,
        a1_copy,
        a2_copy,
        b2_copy,
    }
}

fn prune_reclaims(kind: Kind) {
    let repo = TestRepo::init(kind);
    let h = history(&repo);
    repo.ok(&["forget", "--keep-last", "1"]);
    let packs_before = repo.keys("data/");
    assert_eq!(
        packs_before.len(),
        4,
        "one pack per backup: {packs_before:?}"
    );

    // Packs must be older than the grace period (1 s) to be condemned.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    // Dry run: decides, changes nothing.
    let dry = repo.json(&["prune", "--grace", "1s", "--dry-run"]);
    assert_eq!(dry["mark"]["condemned_packs"], 1, "{dry}");
    assert_eq!(dry["mark"]["repacked_packs"], 1, "{dry}");
    assert_eq!(repo.keys("data/"), packs_before);
    assert!(repo.keys("gc/").is_empty());

    // A grace period not yet over protects everything.
    let young = repo.json(&["prune", "--grace", "1h"]);
    assert_eq!(young["mark"]["condemned_packs"], 0, "{young}");
    assert_eq!(young["mark"]["young_packs"], 4, "{young}");

    // Mark: b1's pack is all garbage, a1's is 3/4 garbage and gets repacked.
    let mark = repo.json(&["prune", "--grace", "1s"]);
    assert_eq!(mark["mark"]["condemned_packs"], 2, "{mark}");
    assert_eq!(mark["mark"]["repacked_packs"], 1, "{mark}");
    assert_eq!(mark["sweep"]["deleted_packs"], 0, "{mark}");
    assert_eq!(repo.keys("gc/").len(), 1, "one plan");
    assert_eq!(
        repo.keys("data/").len(),
        5,
        "repack added a pack, nothing deleted yet"
    );
    // Still restorable between mark and sweep.
    repo.restore(&h.a2, &repo.path("a2.mid"));
    assert_same_file(&repo.path("a2.mid"), &h.a2_copy);

    // Sweep: once the grace period (1 s) is over, the two condemned packs go.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let sweep = repo.json(&["prune", "--grace", "1s"]);
    assert_eq!(sweep["sweep"]["plans_swept"], 1, "{sweep}");
    assert_eq!(sweep["sweep"]["deleted_packs"], 2, "{sweep}");
    assert_eq!(sweep["sweep"]["resurrected"], 0, "{sweep}");
    assert!(
        sweep["sweep"]["freed_bytes"].as_u64().unwrap() > 4 << 20,
        "{sweep}"
    );
    let after = repo.keys("data/");
    assert_eq!(after.len(), 3, "{after:?}");

    for (snapshot, copy) in [(&h.a2, &h.a2_copy), (&h.b2, &h.b2_copy)] {
        let target = repo.path(&format!("{snapshot}.out"));
        repo.restore(snapshot, &target);
        assert_same_file(&target, copy);
    }
    repo.ok(&["verify", "--read-data"]);

    // a1's unique data was deleted: backing it up again must upload it, not reuse
    // chunks that are gone, and the result must restore.
    let again = repo.backup("vm-a", "old", &h.a1_copy);
    let target = repo.path("a1.out");
    repo.restore(&id(&again), &target);
    assert_same_file(&target, &h.a1_copy);
    repo.ok(&["verify", "--read-data"]);
}

#[test]
fn prune_reclaims_forgotten_data_local() {
    prune_reclaims(Kind::Local);
}

#[test]
fn prune_reclaims_forgotten_data_s3() {
    prune_reclaims(Kind::S3);
}
