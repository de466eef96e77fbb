//! Replication between two sites, end to end through the binary: a qcow2 VM disk backed
//! up three nights on the primary, pulled by the secondary after each, and everything
//! restorable from the secondary alone once the primary's data is gone.

mod support;

use support::disk::{Fill, make_disk};
use support::qemu::{convert, io, to_raw};
use support::sites::Sites;
use support::{Kind, TestRepo, assert_same_file};

/// The primary: three nights of a 96 MiB qcow2 disk; returns (source snapshot id, raw
/// copy of the disk that night, bytes the primary stored that night) per night.
fn three_nights(sites: &Sites) -> Vec<(String, std::path::PathBuf, u64)> {
    let repo = &sites.primary;
    let seed = repo.path("seed.raw");
    make_disk(
        &seed,
        &[
            Fill::Random {
                seed: 7,
                len: 24 << 20,
            },
            Fill::Hole { len: 48 << 20 },
            Fill::Random {
                seed: 8,
                len: 24 << 20,
            },
        ],
    );
    let img = repo.path("web01.qcow2");
    convert(&seed, "qcow2", &img);
    let mut nights = Vec::new();
    for night in 0..3 {
        if night > 0 {
            // Scattered guest writes: new data, a zeroed range, a write into a hole.
            io(&img, &format!("write -P 0x{night}1 {}M 256k", 3 + night));
            io(&img, &format!("write -z {}M 512k", 10 + night));
            io(&img, &format!("write -P 0x{night}2 {}M 64k", 50 + night));
        }
        let report = repo.backup("web01", "root", &img);
        let raw = repo.path(&format!("night{night}.raw"));
        to_raw(&img, &raw);
        nights.push((
            report["snapshot"]["id"].as_str().unwrap().to_string(),
            raw,
            report["stored_bytes"].as_u64().unwrap(),
        ));
        let pulled = sites.replicate(&[]);
        assert_eq!(pulled["snapshots_copied"], 1, "night {night}: {pulled}");
        // Only what the primary stored that night crosses the link (same packing, a
        // new pack header and index: a few percent at most).
        let sent = pulled["bytes_sent"].as_u64().unwrap();
        let stored = nights[night].2;
        assert!(
            sent as f64 <= stored as f64 * 1.05 + 64.0 * 1024.0,
            "night {night}: sent {sent} bytes for {stored} new bytes: {pulled}"
        );
        assert!(
            pulled["newest"][0]["lag_secs"].as_u64().unwrap() < 120,
            "{pulled}"
        );
    }
    nights
}

/// Restores `snapshot` (an id on the secondary) at the secondary into `target`.
fn restore_at_secondary(sites: &Sites, snapshot: &str, target: &std::path::Path) {
    sites.secondary_ok(&["restore", snapshot, target.to_str().unwrap(), "--quiet"]);
}

/// Maps source snapshot ids to secondary ids, from the secondary's snapshot list.
fn replicated_ids(sites: &Sites) -> Vec<(String, String)> {
    let list = sites.secondary_json(&["snapshots"]);
    list.as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let from = s["replicated_from"]["snapshot"]
                .as_str()
                .unwrap()
                .to_string();
            (from, s["id"].as_str().unwrap().to_string())
        })
        .collect()
}

#[test]
fn three_nights_restore_from_the_secondary_alone() {
    let sites = Sites::replicated(Kind::S3, Kind::S3);
    let nights = three_nights(&sites);

    let again = sites.replicate(&[]);
    assert_eq!(again["snapshots_copied"], 0, "{again}");
    assert_eq!(
        again["bytes_sent"], 0,
        "a second run sends no pack data: {again}"
    );
    assert_eq!(again["snapshots_present"], 3, "{again}");

    // The primary site is gone: every object of its bucket deleted.
    for key in sites.primary.keys("") {
        sites.primary.delete(&key);
    }
    assert!(sites.primary.keys("").is_empty());
    let ids = replicated_ids(&sites);
    for (source_id, raw, _) in &nights {
        let (_, replica_id) = ids
            .iter()
            .find(|(from, _)| from == source_id)
            .unwrap_or_else(|| panic!("snapshot {source_id} is not on the secondary"));
        let out = sites.secondary.path(&format!("r-{}.raw", &replica_id[..8]));
        restore_at_secondary(&sites, replica_id, &out);
        assert_same_file(&out, raw);
    }
    let verify = sites.secondary_ok(&["verify", "--read-data"]);
    assert!(verify.contains("no problems found"), "{verify}");
}

#[test]
fn any_backend_to_any_backend_and_a_replica_of_a_replica() {
    // local → S3, then that S3 replica → a local replica of it (a third site fed from
    // the second): ids stay equal all the way, nothing is copied twice.
    let sites = Sites::replicated(Kind::Local, Kind::S3);
    let repo = &sites.primary;
    let disk = repo.path("db.raw");
    make_disk(
        &disk,
        &[Fill::Random {
            seed: 3,
            len: 12 << 20,
        }],
    );
    repo.backup("db01", "data", &disk);
    sites.replicate(&[]);
    let third = Sites::with_primary(
        // The secondary, seen as the source of a third site.
        TestRepo::with_url(Kind::S3, &sites.secondary.url),
        Kind::Local,
    );
    let init = third
        .secondary_cmd()
        .env("LIFEBOAT_FROM_PASSWORD", support::sites::SECONDARY_PASSWORD)
        .args(["init", "--replica-of", &sites.secondary.url])
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let pull = third
        .secondary_cmd()
        .env("LIFEBOAT_FROM_PASSWORD", support::sites::SECONDARY_PASSWORD)
        .args(["--json", "replicate", "--from", &sites.secondary.url])
        .output()
        .unwrap();
    assert!(
        pull.status.success(),
        "{}",
        String::from_utf8_lossy(&pull.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&pull.stdout).unwrap();
    assert_eq!(report["snapshots_copied"], 1, "{report}");
    let out = third.secondary.path("db.out");
    restore_at_secondary(&third, "latest", &out);
    assert_same_file(&out, &disk);
}

#[test]
fn each_site_keeps_its_own_retention() {
    let sites = Sites::replicated(Kind::Local, Kind::Local);
    let repo = &sites.primary;
    let disk = repo.path("app.raw");
    let mut copies = Vec::new();
    for night in 0..3u64 {
        make_disk(
            &disk,
            &[Fill::Random {
                seed: 10 + night,
                len: 4 << 20,
            }],
        );
        repo.backup("app01", "root", &disk);
        let keep = repo.path(&format!("app{night}.raw"));
        std::fs::copy(&disk, &keep).unwrap();
        copies.push(keep);
    }
    sites.replicate(&[]);
    // The primary keeps one and reclaims the rest; the secondary keeps all three.
    repo.ok(&["forget", "--keep-last", "1", "--vm", "app01"]);
    // Two prunes a grace period apart: mark condemns, the second sweeps.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    repo.ok(&["prune", "--grace", "1s"]);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let swept = repo.json(&["prune", "--grace", "1s"]);
    assert!(
        swept["sweep"]["deleted_packs"].as_u64().unwrap() > 0,
        "the primary reclaimed the forgotten nights' data: {swept}"
    );
    let on_secondary = replicated_ids(&sites);
    assert_eq!(on_secondary.len(), 3);
    for (i, (_, id)) in on_secondary.iter().enumerate() {
        let out = sites.secondary.path(&format!("app-{i}.out"));
        restore_at_secondary(&sites, id, &out);
    }
    let again = sites.replicate(&[]);
    assert_eq!(again["snapshots_copied"], 0, "{again}");

    // The secondary forgets the oldest; replication does not bring it back.
    sites.secondary_ok(&["forget", "--keep-last", "2"]);
    let after = sites.replicate(&[]);
    assert_eq!(after["snapshots_copied"], 0, "{after}");
    assert_eq!(replicated_ids(&sites).len(), 2);
    // And the primary never saw the secondary's forget.
    assert_eq!(repo.json(&["snapshots"]).as_array().unwrap().len(), 1);
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let sites = Sites::new(Kind::Local, Kind::Local);
    let disk = sites.primary.path("d.raw");
    make_disk(
        &disk,
        &[Fill::Random {
            seed: 5,
            len: 2 << 20,
        }],
    );
    sites.primary.backup("vm1", "root", &disk);
    let primary_objects = sites.primary.keys("");
    let from = sites.primary.url.clone();
    let fails = |args: &[&str], code: i32, want: &str| {
        let out = sites.run_secondary(args);
        let text = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(code), "{args:?}: {text}");
        assert!(text.contains(want), "{args:?} should say {want:?}: {text}");
    };
    // Destination not initialised: says how to make it.
    fails(&["replicate", "--from", &from], 1, "init --replica-of");
    // --replica-of itself.
    let own = sites.secondary.url.clone();
    fails(
        &["init", "--replica-of", &own],
        1,
        "names the repository being created",
    );
    // Source and destination the same.
    fails(
        &["replicate", "--from", &from, "--to", &from],
        1,
        "the same repository",
    );

    // A plain repository is no replica: chunk ids would differ.
    sites.secondary_ok(&["init"]);
    let plain_objects = sites.secondary.keys("");
    fails(&["replicate", "--from", &from], 1, "init --replica-of");
    assert_eq!(sites.secondary.keys(""), plain_objects);

    // Wrong passphrase for either side names that side and where its passphrase
    // comes from.
    let wrong_source = sites
        .secondary_cmd()
        .env("LIFEBOAT_FROM_PASSWORD", "not the primary's")
        .args(["replicate", "--from", &from])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&wrong_source.stderr);
    assert_eq!(wrong_source.status.code(), Some(1), "{text}");
    assert!(
        text.contains("source repository") && text.contains("LIFEBOAT_FROM_PASSWORD"),
        "{text}"
    );
    let wrong_destination = sites
        .secondary_cmd()
        .env("LIFEBOAT_TO_PASSWORD", "not the secondary's")
        .args(["replicate", "--from", &from])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&wrong_destination.stderr);
    assert_eq!(wrong_destination.status.code(), Some(1), "{text}");
    assert!(
        text.contains("destination repository") && text.contains("LIFEBOAT_TO_PASSWORD"),
        "{text}"
    );
    assert!(
        !text.contains("not the secondary's"),
        "a passphrase was printed: {text}"
    );
    assert_eq!(
        sites.primary.keys(""),
        primary_objects,
        "the primary was changed"
    );
    assert_eq!(
        sites.secondary.keys(""),
        plain_objects,
        "the secondary was changed"
    );
}
