//! Damaged repositories: every kind of damage gives a clear error naming what it
//! affects, and restore never writes data it could not verify.

mod support;

use support::disk::mixed_disk;
use support::{Kind, TestRepo};

struct Damaged {
    repo: TestRepo,
    snapshot: String,
}

/// A repository with one snapshot of `web01/root`.
fn backed_up(kind: Kind) -> Damaged {
    let repo = TestRepo::init(kind);
    let img = repo.path("root.img");
    mixed_disk(&img, 7);
    let report = repo.backup("web01", "root", &img);
    let snapshot = report["snapshot"]["id"].as_str().unwrap()[..8].to_string();
    Damaged { repo, snapshot }
}

impl Damaged {
    fn only(&self, prefix: &str) -> String {
        let keys = self.repo.keys(prefix);
        assert!(!keys.is_empty(), "no {prefix} objects");
        keys[0].clone()
    }

    /// Restore must fail with `expect` in its message and leave no target behind.
    fn restore_refuses(&self, expect: &str) {
        let target = self.repo.path("restored.img");
        let text = self
            .repo
            .fails(&["restore", "latest", target.to_str().unwrap()], 1);
        assert!(
            text.contains(expect),
            "restore error should mention {expect:?}:\n{text}"
        );
        assert!(!target.exists(), "no restored image may appear");
        assert!(
            !self.repo.path("restored.img.lifeboat-partial").exists(),
            "no partial file left"
        );
    }

    /// Verify must exit 3 and name the snapshot, the disk and an offset.
    fn verify_names_damage(&self, args: &[&str], object: &str) -> String {
        let mut all = vec!["verify"];
        all.extend_from_slice(args);
        let text = self.repo.fails(&all, 3);
        assert!(
            text.contains(object),
            "verify should name {object}:\n{text}"
        );
        assert!(
            text.contains(&self.snapshot),
            "verify should name snapshot {}:\n{text}",
            self.snapshot
        );
        assert!(
            text.contains("web01/root"),
            "verify should name the disk:\n{text}"
        );
        assert!(
            text.contains("disk offset"),
            "verify should give offsets:\n{text}"
        );
        text
    }
}

fn flipped_bit_in_pack(kind: Kind) {
    let d = backed_up(kind);
    let pack = d.only("data/");
    let mut bytes = d.repo.get(&pack);
    bytes[100] ^= 0x01; // inside the first chunk blob
    d.repo.put(&pack, bytes);
    d.restore_refuses("damaged at disk offset");
    let text = d.verify_names_damage(&["--read-data"], &pack);
    assert!(
        text.contains("authentication failed") || text.contains("does not match"),
        "{text}"
    );
}

#[test]
fn flipped_bit_in_pack_local() {
    flipped_bit_in_pack(Kind::Local);
}

#[test]
fn flipped_bit_in_pack_s3() {
    flipped_bit_in_pack(Kind::S3);
}

fn truncated_pack(kind: Kind) {
    let d = backed_up(kind);
    let pack = d.only("data/");
    let bytes = d.repo.get(&pack);
    d.repo.put(&pack, bytes[..bytes.len() / 2].to_vec());
    // Found without reading data: the index says the pack is longer.
    let text = d.verify_names_damage(&[], &pack);
    assert!(text.contains("truncated"), "{text}");
    d.restore_refuses("damaged at disk offset");
}

#[test]
fn truncated_pack_local() {
    truncated_pack(Kind::Local);
}

#[test]
fn truncated_pack_s3() {
    truncated_pack(Kind::S3);
}

fn missing_pack(kind: Kind) {
    let d = backed_up(kind);
    let pack = d.only("data/");
    d.repo.delete(&pack);
    let text = d.verify_names_damage(&[], &pack);
    assert!(text.contains("missing"), "{text}");
    d.restore_refuses("damaged at disk offset");
}

#[test]
fn missing_pack_local() {
    missing_pack(Kind::Local);
}

#[test]
fn missing_pack_s3() {
    missing_pack(Kind::S3);
}

fn truncated_manifest_and_index(kind: Kind) {
    let d = backed_up(kind);
    let manifest = d.only("snapshots/");
    let bytes = d.repo.get(&manifest);
    d.repo.put(&manifest, bytes[..bytes.len() - 7].to_vec());
    let index = d.only("index/");
    let bytes = d.repo.get(&index);
    d.repo.put(&index, bytes[..bytes.len() - 1].to_vec());
    // A host without a cached catalog reads every object: listing warns about the
    // unreadable ones instead of failing outright.
    std::fs::remove_dir_all(d.repo.path("cache")).unwrap();
    let out = d.repo.run(&["snapshots"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&manifest) && stderr.contains(&index),
        "{stderr}"
    );
    let text = d.repo.fails(&["verify"], 3);
    assert!(text.contains(&manifest) && text.contains(&index), "{text}");
    assert!(text.contains("authentication failed"), "{text}");
}

#[test]
fn truncated_manifest_and_index_local() {
    truncated_manifest_and_index(Kind::Local);
}

#[test]
fn truncated_manifest_and_index_s3() {
    truncated_manifest_and_index(Kind::S3);
}

#[test]
fn missing_index_makes_chunks_unlocatable_not_silently_zero() {
    let d = backed_up(Kind::Local);
    d.repo.delete(&d.only("index/"));
    std::fs::remove_dir_all(d.repo.path("cache")).unwrap();
    d.restore_refuses("in no index");
    d.verify_names_damage(&[], "snapshot");
}

#[test]
fn after_verify_finds_a_lost_pack_the_next_backup_stores_the_data_again() {
    let d = backed_up(Kind::Local);
    d.repo.delete(&d.only("data/"));
    d.repo.fails(&["verify"], 3);
    let img = d.repo.path("root.img");
    let again = d.repo.backup("web01", "root", &img);
    assert!(
        again["new_chunks"].as_u64().unwrap() > 0,
        "lost chunks are uploaded again: {again}"
    );
    let out = d.repo.path("healed.img");
    d.repo
        .restore(again["snapshot"]["id"].as_str().unwrap(), &out);
    support::assert_same_file(&out, &img);
}

fn repair_index_rebuilds_lost_index(kind: Kind) {
    let d = backed_up(kind);
    let img = d.repo.path("root.img");
    let index = d.only("index/");
    d.repo.delete(&index);
    std::fs::remove_dir_all(d.repo.path("cache")).unwrap();
    d.restore_refuses("in no index");

    let dry = d.repo.json(&["repair", "index", "--dry-run"]);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["index_objects_written"], 1, "{dry}");
    assert!(d.repo.keys("index/").is_empty(), "a dry run writes nothing");

    let report = d.repo.json(&["repair", "index"]);
    let packs = d.repo.keys("data/").len() as u64;
    assert_eq!(report["packs_scanned"].as_u64(), Some(packs), "{report}");
    assert_eq!(report["packs_indexed"].as_u64(), Some(packs), "{report}");
    assert!(report["chunks_indexed"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(d.repo.keys("index/").len(), 1);
    d.repo.ok(&["verify"]);
    let out = d.repo.path("repaired.img");
    d.repo.restore("latest", &out);
    support::assert_same_file(&out, &img);
}

#[test]
fn repair_index_rebuilds_lost_index_local() {
    repair_index_rebuilds_lost_index(Kind::Local);
}

#[test]
fn repair_index_rebuilds_lost_index_s3() {
    repair_index_rebuilds_lost_index(Kind::S3);
}

#[test]
fn repair_index_reports_damaged_packs_and_keeps_what_it_cannot_replace() {
    let d = backed_up(Kind::Local);
    let pack = d.only("data/");
    let mut bytes = d.repo.get(&pack);
    let n = bytes.len();
    bytes[n - 12] ^= 0x80; // inside the sealed pack header
    d.repo.put(&pack, bytes);
    let text = d.repo.ok(&["repair", "index"]);
    assert!(text.contains(&format!("DAMAGED {pack}")), "{text}");
    assert!(text.contains("kept"), "{text}");
    // The blobs are intact and the old index entries were carried over: restore works.
    let out = d.repo.path("restored.img");
    d.repo.restore("latest", &out);
    support::assert_same_file(&out, &d.repo.path("root.img"));
    // verify still reports the pack itself.
    d.verify_names_damage(&["--read-data"], &pack);
}

/// Chunks only this host's catalog knows (uploaded, never listed in an index object,
/// as a killed backup leaves them) are not proof that a snapshot is restorable: no
/// other host can find them.
#[test]
fn verify_does_not_count_chunks_only_this_hosts_catalog_knows() {
    let d = backed_up(Kind::Local);
    d.repo.delete(&d.only("index/"));
    let catalog = std::fs::read_dir(d.repo.path("cache"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "sqlite"))
        .unwrap();
    let db = rusqlite::Connection::open(&catalog).unwrap();
    db.execute_batch("UPDATE chunks SET indexed = 0; DELETE FROM index_objects;")
        .unwrap();
    drop(db);
    let text = d.verify_names_damage(&[], "no index object lists");
    assert!(text.contains("repair index"), "{text}");
    d.repo.ok(&["repair", "index"]);
    d.repo.ok(&["verify"]);
}
