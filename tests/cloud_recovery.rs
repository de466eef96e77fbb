//! The cloud-recovery drill: a site's daemon backs up three VMs in two groups,
//! replicates them to a second repository and, on its `[metadata_backup]` schedule
//! (seconds here), seals metadata points to an offline recovery key in a bucket of
//! their own; `status` and `/metrics` show the metadata target OK. Then the site is
//! lost — configuration, passphrase file, state directory, catalog cache and the
//! primary repository — and on a bare directory `lifeboat recover` with only the key
//! brings back a configuration whose `status` shows the same groups, VMs and job
//! history, and whose recovered secrets restore the right bytes from the replica.
//! Separately: points go under Object Lock where the bucket has it, so retention
//! cannot delete one early.

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use support::daemon::{Daemon, vm};
use support::disk::random_bytes;
use support::{Kind, PASSWORD, TestRepo};

const VMS: [(&str, &str); 3] = [("web01", "front"), ("app01", "front"), ("db01", "data")];

fn site_config(primary: &TestRepo, secondary: &TestRepo, meta: &str, recipient: &str) -> String {
    let mut text = format!(
        r#"[daemon]
state_dir = "{state}"
retry_delay = "1s"

[[repository]]
name = "site-a"
url = "{primary}"
password_file = "{pass}"

[[repository]]
name = "dr"
url = "{secondary}"
password_file = "{pass}"

[[replication]]
from = "site-a"
to = "dr"
after_backup = true

[metadata_backup]
recipients = ["{recipient}"]
targets = ["{meta}"]
schedule = "*/3 * * * * *"
keep_within = "1h"
keep_last = 2
"#,
        state = primary.path("state").display(),
        primary = primary.url,
        secondary = secondary.url,
        pass = primary.path("pass").display(),
    );
    for group in ["front", "data"] {
        text.push_str(&format!(
            "\n[[group]]\nname = \"{group}\"\nrepository = \"site-a\"\nschedule = \"*/5 * * * * *\"\n\
             timezone = \"UTC\"\nrpo = \"1h\"\nretention = {{ keep_last = 3 }}\n"
        ));
        for (name, _) in VMS.iter().filter(|(_, g)| *g == group) {
            text.push_str(&format!(
                "[[group.vm]]\nname = \"{name}\"\n[[group.vm.disk]]\nname = \"root\"\nimage = \"{}\"\n",
                primary.path(&format!("{name}.img")).display()
            ));
        }
    }
    text
}

/// `status --json` of a configuration, run without any passphrase.
fn status(repo: &TestRepo, config: &Path) -> Value {
    let out = repo
        .cmd()
        .env_remove("LIFEBOAT_PASSWORD")
        .args(["status", "--json", "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_site_rebuilt_from_the_daemons_metadata_points_shows_the_same_vms_and_history() {
    let primary = TestRepo::init(Kind::Local);
    let secondary = TestRepo::new(Kind::Local);
    secondary.ok(&["init", "--replica-of", &primary.url]);
    let metadata = TestRepo::init(Kind::S3);
    let vault = tempfile::tempdir().unwrap();
    let key = vault.path().join("recovery.key");
    let recipient = primary
        .ok(&["recovery-key", "new", "--out", key.to_str().unwrap()])
        .trim()
        .to_string();
    std::fs::write(primary.path("pass"), PASSWORD).unwrap();
    for (i, (name, _)) in VMS.iter().enumerate() {
        std::fs::write(
            primary.path(&format!("{name}.img")),
            random_bytes(i as u64 + 1, 2 << 20),
        )
        .unwrap();
    }
    let config = primary.path("lifeboat.toml");
    std::fs::write(
        &config,
        site_config(&primary, &secondary, &metadata.url, &recipient),
    )
    .unwrap();

    let mut d = Daemon::start(&primary, &config, &["--jobs", "2"]);
    d.wait(
        "every VM backed up and replicated",
        Duration::from_secs(120),
        |d| {
            let backups = d.metric("lifeboat_jobs_total{kind=\"backup\",status=\"ok\"}")?;
            let copies = d.metric("lifeboat_jobs_total{kind=\"replicate\",status=\"ok\"}")?;
            let s = d.status();
            let all = VMS
                .iter()
                .all(|(name, _)| vm(&s, name)["disks"][0]["last_success"].is_object());
            (all && backups >= 3.0 && copies >= 1.0).then_some(())
        },
    );
    let since = chrono::Utc::now();
    let target = format!(
        "lifeboat_metadata_backup_state{{target=\"{}\"}}",
        metadata.url
    );
    // Two points after that: the schedule of seconds keeps producing them.
    let before = d.wait(
        "two metadata points written after the backups",
        Duration::from_secs(60),
        |d| {
            let s = d.status();
            let m = &s["metadata_backups"][0];
            let last: chrono::DateTime<chrono::Utc> = m["last_success"].as_str()?.parse().ok()?;
            let ok = d.metric("lifeboat_jobs_total{kind=\"metadata\",status=\"ok\"}")?;
            (last > since + chrono::Duration::seconds(3) && ok >= 2.0).then_some(s)
        },
    );
    let m = &before["metadata_backups"][0];
    assert_eq!(m["state"], "OK", "{m}");
    assert_eq!(m["rpo_secs"], 6, "twice the 3 s interval: {m}");
    assert_eq!(d.metric(&target), Some(0.0));
    let points = metadata.keys("metadata/");
    assert!(points.len() >= 2, "{points:?}");
    for p in &points {
        let sealed = metadata.get(p);
        assert!(
            !sealed
                .windows(PASSWORD.len())
                .any(|w| w == PASSWORD.as_bytes())
        );
    }
    d.sigterm();
    assert!(d.exit_within(Duration::from_secs(60)).success());
    drop(d);

    // The site is lost.
    for gone in ["lifeboat.toml", "pass", "state", "cache"] {
        let p = primary.path(gone);
        if p.is_dir() {
            std::fs::remove_dir_all(&p).unwrap();
        } else {
            std::fs::remove_file(&p).unwrap();
        }
    }
    std::fs::remove_dir_all(&primary.url).unwrap();

    let fresh = tempfile::tempdir().unwrap();
    let to = fresh.path().join("lifeboat");
    let out = secondary.run(&[
        "recover",
        "--from",
        &metadata.url,
        "--identity",
        key.to_str().unwrap(),
        "--to",
        to.to_str().unwrap(),
    ]);
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{report}");
    assert!(report.contains("db01: can be failed over from"), "{report}");

    // The rebuilt site knows the same groups and VMs, each with its backup history;
    // the old site's daemon and its jobs in flight are not shown as running here.
    let after = status(&secondary, &to.join("lifeboat.toml"));
    assert_eq!(after["daemon"]["running"], false, "{after}");
    for (name, group) in VMS {
        let (old, new) = (vm(&before, name), vm(&after, name));
        assert_eq!(new["group"], group, "{new}");
        let (was, is) = (
            &old["disks"][0]["last_success"],
            &new["disks"][0]["last_success"],
        );
        assert!(is["snapshot"].is_string(), "{name} lost its history: {new}");
        assert_eq!(new["disks"][0]["running"], false, "{new}");
        // The history is the site's own, as of the point: never newer than what the
        // site saw last.
        let time = |v: &Value| {
            v["time"]
                .as_str()
                .unwrap()
                .parse::<chrono::DateTime<chrono::Utc>>()
                .unwrap()
        };
        assert!(time(is) <= time(was), "{name}: {is} vs {was}");
    }
    // The rebuilt site keeps backing its metadata up to the same target.
    assert_eq!(
        after["metadata_backups"][0]["target"],
        metadata.url.as_str()
    );

    // The recovered passphrase file opens the replica, which restores db01's bytes.
    let restored = fresh.path().join("db01.raw");
    let pass = to.join("secrets/pass");
    secondary.ok(&[
        "--password-file",
        pass.to_str().unwrap(),
        "restore",
        "latest",
        "--vm",
        "db01",
        "--disk",
        "root",
        restored.to_str().unwrap(),
    ]);
    assert!(std::fs::read(&restored).unwrap() == random_bytes(3, 2 << 20));
}

#[test]
fn points_are_locked_where_the_bucket_has_object_lock_so_retention_cannot_delete_them_early() {
    let bucket = TestRepo::new(Kind::S3);
    bucket.ok(&["init", "--create-bucket", "--immutable", "1h"]);
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("lifeboat.toml");
    std::fs::write(&config, "# nothing protected yet\n").unwrap();
    let recipient = bucket
        .ok(&[
            "recovery-key",
            "new",
            "--out",
            work.path().join("k").to_str().unwrap(),
        ])
        .trim()
        .to_string();
    let backup = |to: &str, extra: &[&str]| {
        let mut args = vec![
            "metadata",
            "backup",
            "--config",
            config.to_str().unwrap(),
            "--state-dir",
            work.path().to_str().unwrap(),
            "--to",
            to,
            "--recipient",
            &recipient,
        ];
        args.extend(extra);
        bucket.run(&args)
    };
    let out = backup(&bucket.url, &["--json", "--keep-within", "1d"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let until: chrono::DateTime<chrono::Utc> = report["points"][0]["locked_until"]
        .as_str()
        .unwrap_or_else(|| panic!("not locked: {report}"))
        .parse()
        .unwrap();
    let ahead = until - chrono::Utc::now();
    assert!(
        ahead > chrono::Duration::hours(23) && ahead <= chrono::Duration::days(1),
        "locked for keep_within: {until}"
    );

    // Retention now says the first point may go; its lock says no, and it stays.
    std::thread::sleep(Duration::from_millis(2100));
    let out = backup(&bucket.url, &["--keep-within", "1s", "--keep-last", "1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("expired but stays"), "{stderr}");
    assert_eq!(bucket.keys("metadata/").len(), 2);

    // A directory has no Object Lock: the point is stored unlocked, not refused.
    let dir = work.path().join("offsite");
    let out = backup(dir.to_str().unwrap(), &["--json", "--lock", "compliance"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["points"][0]["locked_until"].is_null(), "{report}");
}
