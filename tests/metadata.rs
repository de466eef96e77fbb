//! Cloud recovery: a site's configuration, secrets, scripts and state, backed up as
//! a metadata point to an S3 bucket of its own (encrypted to an offline recovery key),
//! survive the loss of the site: on a bare directory, `lifeboat recover` with only the
//! key rebuilds them, checks the repositories, and the replica restores the right
//! bytes with the recovered secrets. The bucket shows no plaintext; the wrong key, an
//! altered point and a non-empty directory are refused.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;
use support::disk::mixed_disk;
use support::{Kind, PASSWORD, TestRepo};

const MARKER: &str = "SITE-CONFIG-MARKER-7f3a";

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A protected site: its repository, a replica, and the files Lifeboat runs with.
struct Site {
    primary: TestRepo,
    secondary: TestRepo,
    dir: tempfile::TempDir,
    config: PathBuf,
    disk: PathBuf,
}

impl Site {
    fn new() -> Site {
        let primary = TestRepo::init(Kind::Local);
        let disk = primary.path("db01.img");
        mixed_disk(&disk, 7);
        primary.ok(&[
            "backup",
            "--vm",
            "db01",
            "--disk",
            "root",
            disk.to_str().unwrap(),
            "-q",
        ]);
        let secondary = TestRepo::new(Kind::Local);
        secondary.ok(&["init", "--replica-of", &primary.url]);
        secondary.ok(&["replicate", "--from", &primary.url, "-q"]);
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("pass"), PASSWORD).unwrap();
        std::fs::set_permissions(d.join("pass"), std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(d.join("pre.sh"), "#!/bin/sh\nexit 0\n").unwrap();
        std::fs::create_dir_all(d.join("state/drills/dr")).unwrap();
        std::fs::write(d.join("state/drills/dr/000001.json"), "{\"seq\":1}").unwrap();
        let db = rusqlite::Connection::open(d.join("state/state.db")).unwrap();
        db.execute_batch("CREATE TABLE jobs(name TEXT); INSERT INTO jobs VALUES('nightly-db01');")
            .unwrap();
        drop(db);
        let config = d.join("lifeboat.toml");
        std::fs::write(
            &config,
            format!(
                r#"# {MARKER}
[daemon]
state_dir = "{state}"

[[repository]]
name = "site-a"
url = "{primary}"
password_file = "{pass}"

[[repository]]
name = "dr"
url = "{secondary}"
password_file = "{pass}"

[[network]]
name = "drill-net"
kind = "user"
isolated = true

[[plan]]
name = "erp"
repository = "dr"
rto = "5m"
overlay_dir = "{overlays}"
pre_script = "{pre}"
[plan.test_network_map]
"prod-lan" = "drill-net"
[[plan.boot_group]]
vms = ["db01"]
"#,
                state = d.join("state").display(),
                primary = primary.url,
                secondary = secondary.url,
                pass = d.join("pass").display(),
                overlays = d.join("overlays").display(),
                pre = d.join("pre.sh").display(),
            ),
        )
        .unwrap();
        Site {
            primary,
            secondary,
            dir,
            config,
            disk,
        }
    }
}

fn new_key(repo: &TestRepo, path: &Path) -> String {
    repo.ok(&["recovery-key", "new", "--out", path.to_str().unwrap()])
        .trim()
        .to_string()
}

#[test]
fn a_lost_site_is_rebuilt_from_its_metadata_bucket_and_the_recovery_key() {
    let site = Site::new();
    let vault = tempfile::tempdir().unwrap();
    let key = vault.path().join("recovery.key");
    let recipient = new_key(&site.primary, &key);
    assert!(recipient.starts_with("age1"), "{recipient}");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let metadata = TestRepo::init(Kind::S3);
    let config = site.config.to_str().unwrap();
    let out = site.primary.json(&[
        "metadata",
        "backup",
        "--config",
        config,
        "--to",
        &metadata.url,
        "--recipient",
        &recipient,
    ]);
    let roles: Vec<&str> = out["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["role"].as_str().unwrap())
        .collect();
    for role in ["config", "secret", "script", "state_db", "state"] {
        assert!(roles.contains(&role), "{role} missing: {out}");
    }
    // Nothing readable in the bucket.
    let objects = metadata.keys("metadata/");
    assert_eq!(objects.len(), 1, "{objects:?}");
    let sealed = metadata.get(&objects[0]);
    for secret in [MARKER.as_bytes(), PASSWORD.as_bytes(), b"nightly-db01"] {
        assert!(!sealed.windows(secret.len()).any(|w| w == secret));
    }

    // The site is lost: configuration, secrets, scripts, state, and the primary bucket.
    let original = std::fs::read(&site.disk).unwrap();
    std::fs::remove_dir_all(site.dir.path()).unwrap();
    std::fs::remove_dir_all(&site.primary.url).unwrap();

    let fresh = tempfile::tempdir().unwrap();
    let to = fresh.path().join("lifeboat");
    let recover = |identity: &Path, to: &Path, extra: &[&str]| -> Output {
        let mut args = vec![
            "recover",
            "--from",
            metadata.url.as_str(),
            "--identity",
            identity.to_str().unwrap(),
            "--to",
            to.to_str().unwrap(),
        ];
        args.extend(extra);
        site.secondary.run(&args)
    };
    // The wrong key reads nothing and writes nothing.
    let other = vault.path().join("other.key");
    new_key(&site.primary, &other);
    let wrong = recover(&other, &to, &[]);
    assert_eq!(wrong.status.code(), Some(1));
    assert!(
        text(&wrong).contains("cannot be decrypted with this recovery key"),
        "{}",
        text(&wrong)
    );
    assert!(!to.exists());

    let out = recover(&key, &to, &["--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let repo = |name: &str| {
        report["repositories"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap()["verdict"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        report["repositories"][0]["name"], "dr",
        "the plan's (secondary) repository is checked first: {report}"
    );
    assert!(repo("dr").contains("holds every snapshot"), "{report}");
    assert!(repo("site-a").contains("UNREACHABLE"), "{report}");

    let recovered = std::fs::read_to_string(to.join("lifeboat.toml")).unwrap();
    assert!(recovered.contains(MARKER));
    let new_pass = to.join("secrets/pass");
    assert!(
        recovered.contains(&format!("\"{}\"", new_pass.display())),
        "{recovered}"
    );
    assert!(
        recovered.contains(&format!("\"{}\"", to.join("state").display())),
        "{recovered}"
    );
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(std::fs::read_to_string(&new_pass).unwrap(), PASSWORD);
    assert_eq!(mode(&new_pass), 0o600);
    assert_eq!(mode(&to.join("scripts/pre.sh")), 0o700);
    assert_eq!(mode(&to), 0o700);
    assert!(to.join("state/drills/dr/000001.json").exists());
    let db = rusqlite::Connection::open(to.join("state/state.db")).unwrap();
    let job: String = db
        .query_row("SELECT name FROM jobs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(job, "nightly-db01", "the job history is back");

    // The recovered secrets open the replica, which restores the right bytes.
    let restored = fresh.path().join("db01.raw");
    let out = site.secondary.run(&[
        "--password-file",
        new_pass.to_str().unwrap(),
        "restore",
        "latest",
        "--vm",
        "db01",
        "--disk",
        "root",
        restored.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        std::fs::read(&restored).unwrap() == original,
        "restored bytes differ"
    );

    // A second recovery into the same directory is refused.
    let again = recover(&key, &to, &[]);
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&again).contains("is not empty"), "{}", text(&again));
}

#[test]
fn an_altered_point_is_refused_and_the_next_older_one_offered() {
    let site = Site::new();
    let vault = tempfile::tempdir().unwrap();
    let key = vault.path().join("recovery.key");
    let recipient = new_key(&site.primary, &key);
    let target = vault.path().join("metadata");
    let target = target.to_str().unwrap();
    let config = site.config.to_str().unwrap();
    for _ in 0..2 {
        site.primary.ok(&[
            "metadata",
            "backup",
            "--config",
            config,
            "--to",
            target,
            "--recipient",
            &recipient,
            "-q",
        ]);
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    let points: Vec<String> = serde_json::from_str(
        &site
            .primary
            .ok(&["metadata", "list", "--from", target, "--json"]),
    )
    .unwrap();
    assert_eq!(points.len(), 2, "{points:?}");
    let newest = Path::new(target).join(format!("metadata/{}.age", points[1]));
    let mut bytes = std::fs::read(&newest).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(&newest, bytes).unwrap();

    let to = vault.path().join("rebuilt");
    let args = |point: &str| {
        vec![
            "recover".to_string(),
            "--from".into(),
            target.into(),
            "--identity".into(),
            key.to_str().unwrap().into(),
            "--to".into(),
            to.to_str().unwrap().into(),
            "--point".into(),
            point.into(),
        ]
    };
    let run = |point: &str| {
        let a = args(point);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        site.secondary.run(&a)
    };
    let out = run("latest");
    assert_eq!(out.status.code(), Some(1));
    let msg = text(&out);
    assert!(
        msg.contains("damaged or was altered") && msg.contains(&points[0]),
        "{msg}"
    );
    assert!(!to.exists(), "nothing written");
    let out = run(&points[0]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(to.join("lifeboat.toml").exists());

    // Retention: with only a second kept by age, only the newest point stays.
    site.primary.ok(&[
        "metadata",
        "backup",
        "--config",
        config,
        "--to",
        target,
        "--recipient",
        &recipient,
        "--keep-within",
        "1s",
        "--keep-last",
        "1",
        "-q",
    ]);
    let left: Vec<String> = serde_json::from_str(
        &site
            .primary
            .ok(&["metadata", "list", "--from", target, "--json"]),
    )
    .unwrap();
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(
        left[0] > points[1],
        "the new point is the one kept: {left:?}"
    );
}
