//! Continuous replication from the daemon, across two real S3 servers (two moto
//! processes = two sites, the second behind the fault proxy = the link between them):
//! a group backs up a small qcow2 disk every few seconds, an `after_backup`
//! replication copies each new point to the secondary, and `status --json`, the
//! status table and `/metrics` show the replica's lag OK with the point really on
//! the secondary. Then the link is cut: replication runs fail, the lag state goes
//! AT RISK, then BREACHED once `replication_rpo` has passed, while the backup RPO of
//! the same disk stays OK.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use support::daemon::{Daemon, vm};
use support::faults::{Fault, FaultConfig, Proxy};
use support::{Kind, PASSWORD, TestRepo, qemu, s3};

const DR_PASSWORD: &str = "a different passphrase for the secondary";

/// Seconds; long enough that a run against the cut link (the S3 client retries a
/// refused or reset request for up to ~30 s) is recorded as failed before the newest
/// point on the replica gets this old.
const REPLICATION_RPO: u64 = 45;

fn config(repo: &TestRepo, dr_url: &str, image: &std::path::Path) -> PathBuf {
    let (pass, dr_pass) = (repo.path("primary.pass"), repo.path("dr.pass"));
    std::fs::write(&pass, PASSWORD).unwrap();
    std::fs::write(&dr_pass, DR_PASSWORD).unwrap();
    let text = format!(
        r#"[daemon]
retries = 0

[[repository]]
name = "primary"
url = "{}"
password_file = "{}"

[[repository]]
name = "dr"
url = "{dr_url}"
password_file = "{}"
standby_dir = "{}"
standby_keep = 2
standby_schedule = "*/2 * * * * *"

[[group]]
name = "lab"
repository = "primary"
schedule = "*/3 * * * * *"
forget_schedule = "0 0 1 1 *"
timezone = "UTC"
rpo = "1m"
retention = {{ keep_last = 50 }}

[[group.vm]]
name = "vm-a"
[[group.vm.disk]]
name = "root"
image = "{}"

[[replication]]
from = "primary"
to = "dr"
after_backup = true
limit_rate = "50MiB/s"
replication_rpo = "{REPLICATION_RPO}s"
"#,
        repo.url,
        pass.display(),
        dr_pass.display(),
        repo.path("standby").display(),
        image.display()
    );
    let path = repo.path("lifeboat.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The disk's replica entry in `status --json`.
fn replica(status: &serde_json::Value) -> serde_json::Value {
    vm(status, "vm-a")["disks"][0]["replicas"][0].clone()
}

#[test]
fn daemon_replicates_after_backups_and_reports_lag_until_the_link_is_cut() {
    let repo = TestRepo::init(Kind::S3);
    let secondary = s3::start_moto(&[]);
    let link = Proxy::start(&secondary.endpoint, FaultConfig::none());
    let dr_url = link.repo_url(&secondary.repo_url(&s3::unique_bucket()));
    let dr = |args: &[&str]| {
        let mut c = repo.cmd();
        c.env("LIFEBOAT_REPO", &dr_url)
            .env("LIFEBOAT_PASSWORD", DR_PASSWORD)
            .env("LIFEBOAT_FROM_PASSWORD", PASSWORD)
            .args(args);
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    dr(&["init", "--create-bucket", "--replica-of", &repo.url]);
    let image = repo.path("vm-a.qcow2");
    qemu::create_qcow2(&image, "8M");
    qemu::io(&image, "write -P 0x5a 1M 2M");
    let config = config(&repo, &dr_url, &image);
    let mut d = Daemon::start(&repo, &config, &[]);
    let lag = "lifeboat_replication_lag_seconds{group=\"lab\",vm=\"vm-a\",disk=\"root\",destination=\"dr\"}";
    let state = "lifeboat_replication_rpo_state{group=\"lab\",vm=\"vm-a\",disk=\"root\",destination=\"dr\"}";

    // Healthy link: each backup is followed by a replication; the replica's newest
    // point is seconds old and OK.
    let s = d.wait("a replicated point, OK", Duration::from_secs(60), |d| {
        let s = d.status();
        (replica(&s)["state"] == "OK" && vm(&s, "vm-a")["replica_state"] == "OK").then_some(s)
    });
    let r = replica(&s);
    assert_eq!(r["destination"], "dr", "{r}");
    assert_eq!(r["replication_rpo_secs"], REPLICATION_RPO, "{r}");
    assert!(
        r["lag_secs"].as_i64().unwrap() < REPLICATION_RPO as i64,
        "{r}"
    );
    assert!(r["newest"].is_string(), "{r}");
    assert!(vm(&s, "vm-a")["replica_lag_secs"].is_i64(), "{s}");
    assert!(d.metric(lag).unwrap() < REPLICATION_RPO as f64);
    assert_eq!(d.metric(state), Some(0.0));
    assert_eq!(
        d.metric("lifeboat_replication_rpo_seconds{group=\"lab\",vm=\"vm-a\",disk=\"root\",destination=\"dr\"}"),
        Some(REPLICATION_RPO as f64)
    );
    let sent = "lifeboat_replication_bytes_sent_total{source=\"primary\",destination=\"dr\"}";
    assert!(
        d.metric(sent).unwrap() > 0.0,
        "the first run sent the disk's data"
    );
    assert!(
        d.metric("lifeboat_jobs_total{kind=\"replicate\",status=\"ok\"}")
            .unwrap()
            >= 1.0
    );
    // The point is really on the secondary, readable with its own passphrase.
    let snaps: serde_json::Value =
        serde_json::from_str(&dr(&["--json", "snapshots", "--vm", "vm-a"])).unwrap();
    assert!(!snaps.as_array().unwrap().is_empty(), "{snaps}");
    standby_follows_the_replica(&repo, &mut d, &dr);
    let table = status_text(&d);
    assert!(table.contains("REPLICA (LAG)"), "{table}");
    assert!(table.contains("replica dr: lag "), "{table}");

    // The link is cut: every request to the secondary is reset. Runs fail (AT RISK),
    // then the newest point outgrows the replication RPO (BREACHED); the backups to
    // the primary go on, so the backup RPO stays OK.
    link.set_config(FaultConfig {
        rate: 1.0,
        kinds: vec![Fault::Reset],
        ..FaultConfig::none()
    });
    let cut = std::time::Instant::now();
    let s = d.wait("replica AT RISK", Duration::from_secs(60), |d| {
        let s = d.status();
        (replica(&s)["state"] == "AT RISK").then_some(s)
    });
    assert!(
        replica(&s)["reason"]
            .as_str()
            .unwrap()
            .contains("replication attempt failed"),
        "{s}"
    );
    assert!(replica(&s)["last_error"].is_string(), "{s}");
    assert_eq!(d.metric(state), Some(1.0));
    eprintln!("AT RISK {:?} after the cut", cut.elapsed());
    let s = d.wait("replica BREACHED", Duration::from_secs(90), |d| {
        let s = d.status();
        (replica(&s)["state"] == "BREACHED").then_some(s)
    });
    eprintln!("BREACHED {:?} after the cut", cut.elapsed());
    let v = vm(&s, "vm-a");
    assert_eq!(v["replica_state"], "BREACHED", "{v}");
    assert_eq!(v["rpo_state"], "OK", "backups to the primary go on: {v}");
    // Whole seconds, rounded down: just over the RPO may read as equal to it.
    assert!(
        v["replica_lag_secs"].as_i64().unwrap() >= REPLICATION_RPO as i64,
        "{v}"
    );
    assert_eq!(d.metric(state), Some(2.0));
    assert!(d.metric(lag).unwrap() >= REPLICATION_RPO as f64);
    assert!(
        d.metric("lifeboat_jobs_total{kind=\"replicate\",status=\"failed\"}")
            .unwrap()
            >= 1.0
    );
    assert!(
        status_text(&d).contains("BREACHED ("),
        "{}",
        status_text(&d)
    );
}

/// The `standby_*` keys of the replica's repository: the daemon keeps a standby image
/// of the disk (a job of its own, on its schedule) that reads exactly as the
/// secondary's restore of the same point. (One daemon plays both sites here; in a
/// deployment the secondary's daemon has the standby, next to its cluster's storage.)
fn standby_follows_the_replica(repo: &TestRepo, d: &mut Daemon, dr: &dyn Fn(&[&str]) -> String) {
    let points_file = repo.path("standby/vm-a/root/points.json");
    let points: serde_json::Value = d.wait("a standby point", Duration::from_secs(60), |_| {
        let text = std::fs::read_to_string(&points_file).ok()?;
        let points: serde_json::Value = serde_json::from_str(&text).ok()?;
        (!points["points"].as_array()?.is_empty()).then_some(points)
    });
    let newest = points["points"].as_array().unwrap().last().unwrap().clone();
    let image = repo
        .path("standby/vm-a/root")
        .join(newest["file"].as_str().unwrap());
    let (from_standby, restored) = (repo.path("standby.raw"), repo.path("restored.raw"));
    // The daemon may be folding an older point into the base at this moment (qemu's
    // image locks then refuse a reader for an instant): try again briefly.
    let converted = (0..20).any(|_| {
        let ok = std::process::Command::new("qemu-img")
            .args(["convert", "-O", "raw"])
            .arg(&image)
            .arg(&from_standby)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            std::thread::sleep(Duration::from_millis(250));
        }
        ok
    });
    assert!(
        converted,
        "qemu-img convert of {} kept failing",
        image.display()
    );
    let snapshot = newest["snapshot"].as_str().unwrap();
    dr(&["restore", snapshot, restored.to_str().unwrap(), "--quiet"]);
    support::assert_same_file(&from_standby, &restored);
    assert!(
        d.metric("lifeboat_jobs_total{kind=\"standby\",status=\"ok\"}")
            .unwrap()
            >= 1.0
    );
}

fn status_text(d: &Daemon) -> String {
    let out = d
        .repo
        .cmd()
        .args(["status", "--config"])
        .arg(&d.config)
        .arg("--state-dir")
        .arg(&d.state)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}
