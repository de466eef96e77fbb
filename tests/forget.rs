//! `lifeboat forget`: dry run lists every snapshot with its reasons and changes
//! nothing; a real run deletes exactly the forgotten manifests, and the kept
//! snapshots still restore byte-identical. No keep rule at all is refused.

mod support;

use support::disk::{random_bytes, write_at};
use support::{Kind, TestRepo, assert_same_file};

fn id(report: &serde_json::Value) -> String {
    report["snapshot"]["id"].as_str().unwrap().to_string()
}

/// Four backups of one small disk, changed between backups; returns (ids oldest
/// first, a copy of the disk at each backup).
fn four_backups(repo: &TestRepo) -> (Vec<String>, Vec<std::path::PathBuf>) {
    let img = repo.path("web01-root.img");
    std::fs::write(&img, random_bytes(1, 2 << 20)).unwrap();
    let (mut ids, mut copies) = (Vec::new(), Vec::new());
    for n in 0..4u64 {
        write_at(&img, n * 300_000, &random_bytes(100 + n, 64 * 1024));
        ids.push(id(&repo.backup("web01", "root", &img)));
        let copy = repo.path(&format!("at{n}.img"));
        std::fs::copy(&img, &copy).unwrap();
        copies.push(copy);
    }
    (ids, copies)
}

fn manifests(repo: &TestRepo) -> Vec<String> {
    repo.keys("snapshots/")
}

#[test]
fn forget_keeps_last_and_removes_the_rest() {
    let repo = TestRepo::init(Kind::Local);
    let (ids, copies) = four_backups(&repo);
    let before = manifests(&repo);
    assert_eq!(before.len(), 4);

    // Dry run, text: every snapshot is listed with its verdict; nothing changes.
    let text = repo.ok(&["forget", "--keep-last", "2", "--dry-run"]);
    assert!(text.contains("web01/root:"), "{text}");
    for (i, id) in ids.iter().enumerate() {
        let line = text.lines().find(|l| l.contains(&id[..8])).expect("listed");
        if i >= 2 {
            assert!(
                line.trim_start().starts_with("keep") && line.contains("last 2"),
                "{line}"
            );
        } else {
            assert!(line.trim_start().starts_with("remove"), "{line}");
        }
    }
    assert!(text.contains("would keep 2 and remove 2"), "{text}");
    assert_eq!(manifests(&repo), before, "a dry run changes nothing");

    // Dry run, JSON.
    let plan = repo.json(&["forget", "--keep-last", "2", "--dry-run"]);
    assert_eq!(plan["dry_run"], true);
    assert_eq!(plan["would_forget"], 2);
    let decisions = plan["decisions"].as_array().unwrap();
    assert_eq!(decisions.len(), 4);
    for d in decisions {
        let i = ids
            .iter()
            .position(|x| x == d["id"].as_str().unwrap())
            .unwrap();
        assert_eq!(d["keep"], i >= 2, "{d}");
        let reasons: Vec<&str> = d["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap())
            .collect();
        assert_eq!(reasons, if i >= 2 { vec!["last 2"] } else { vec![] }, "{d}");
    }

    // The real thing: exactly the two oldest manifests go.
    let done = repo.json(&["forget", "--keep-last", "2"]);
    assert_eq!(done["forgotten"], 2, "{done}");
    assert!(done["note"].as_str().unwrap().contains("prune"), "{done}");
    let after = manifests(&repo);
    let expected: Vec<String> = before
        .iter()
        .filter(|k| !k.ends_with(&ids[0]) && !k.ends_with(&ids[1]))
        .cloned()
        .collect();
    assert_eq!(after, expected);

    let listed: Vec<String> = repo
        .json(&["snapshots"])
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, ids[2..].to_vec());

    // Kept snapshots still restore byte-identical; forgotten ones are gone.
    for i in 2..4 {
        let out = repo.path(&format!("restored{i}.img"));
        repo.restore(&ids[i][..8], &out);
        assert_same_file(&out, &copies[i]);
    }
    let text = repo.fails(
        &[
            "restore",
            &ids[0][..12],
            repo.path("gone.img").to_str().unwrap(),
        ],
        1,
    );
    assert!(text.contains("no snapshot"), "{text}");

    // Filters: a rule for another VM touches nothing here.
    let other = repo.json(&["forget", "--keep-last", "1", "--vm", "db01"]);
    assert_eq!(other["decisions"].as_array().unwrap().len(), 0);
    assert_eq!(manifests(&repo).len(), 2);
}

#[test]
fn forget_without_a_rule_is_refused_and_changes_nothing() {
    let repo = TestRepo::init(Kind::Local);
    let img = repo.path("disk.img");
    std::fs::write(&img, random_bytes(7, 1 << 20)).unwrap();
    repo.backup("web01", "root", &img);
    let before = manifests(&repo);
    for args in [
        &["forget"][..],
        &["forget", "--dry-run", "--vm", "web01"],
        &["forget", "--keep-daily", "0"],
    ] {
        let text = repo.fails(args, 1);
        assert!(text.contains("no keep rule given"), "{text}");
        assert!(text.contains("--keep-last"), "{text}");
    }
    assert_eq!(manifests(&repo), before);
    let text = repo.fails(
        &["forget", "--keep-last", "1", "--timezone", "Mars/Olympus"],
        2,
    );
    assert!(text.contains("not an IANA time zone"), "{text}");
}

#[test]
fn forget_group_errors_name_the_problem() {
    let repo = TestRepo::new(Kind::Local);
    let config = repo.path("lb.toml");
    // A missing file says how to point at one.
    let text = repo.fails(
        &[
            "forget",
            "--group",
            "prod",
            "--config",
            config.to_str().unwrap(),
        ],
        1,
    );
    assert!(
        text.contains("reading the configuration") && text.contains("--config FILE"),
        "{text}"
    );
    // An invalid file lists file:line:column: key.
    std::fs::write(&config, "[[group]]\nname = \"prod\"\nrpo = 5\n").unwrap();
    let text = repo.fails(
        &[
            "forget",
            "--group",
            "prod",
            "--config",
            config.to_str().unwrap(),
        ],
        1,
    );
    assert!(text.contains("lb.toml:3:7: rpo: invalid type"), "{text}");
    // An unknown group lists the known ones.
    std::fs::write(
        &config,
        "[[repository]]\nname = \"r\"\nurl = \"/x\"\n[[group]]\nname = \"prod\"\nrepository = \"r\"\nschedule = \"0 1 * * *\"\ntimezone = \"UTC\"\nretention = { keep_last = 1 }\n",
    )
    .unwrap();
    let text = repo.fails(
        &[
            "forget",
            "--group",
            "lab",
            "--config",
            config.to_str().unwrap(),
        ],
        1,
    );
    assert!(
        text.contains("no group \"lab\" in the configuration; groups: prod"),
        "{text}"
    );
    // A group's rule and flags do not mix.
    let text = repo.fails(&["forget", "--group", "prod", "--keep-last", "3"], 2);
    assert!(text.contains("cannot be used with"), "{text}");
}
