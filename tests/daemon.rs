//! `lifeboat daemon` on a real clock with second-level cron schedules: two VMs are
//! backed up on schedule, retention bounds their snapshots, `status --json` and
//! `/metrics` report OK, and when one disk's backups start failing its state moves
//! to AT RISK and then BREACHED while the other stays OK. SIGTERM: a running job is
//! waited for (stop timeout), or interrupted after it, and the daemon exits 0 either
//! way with every job recorded.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::daemon::{Daemon, vm};
use support::disk::random_bytes;
use support::{Kind, PASSWORD, TestRepo};

/// `repo_keys`: extra lines for the `[[repository]]` table.
fn write_config(repo: &TestRepo, repo_keys: &str, body: &str) -> PathBuf {
    let pass = repo.path("passphrase");
    std::fs::write(&pass, PASSWORD).unwrap();
    let config = repo.path("lifeboat.toml");
    let text = format!(
        "[daemon]\nretry_delay = \"1s\"\n\n[[repository]]\nname = \"test\"\nurl = \"{}\"\npassword_file = \"{}\"\n{repo_keys}\n\n{body}",
        repo.url,
        pass.display()
    );
    std::fs::write(&config, text).unwrap();
    config
}

fn snapshot_count(repo: &TestRepo, vm: &str) -> usize {
    repo.json(&["snapshots", "--vm", vm])
        .as_array()
        .unwrap()
        .len()
}

#[test]
fn daemon_backs_up_on_schedule_applies_retention_and_reports_rpo() {
    let repo = TestRepo::init(Kind::Local);
    let (a, b) = (repo.path("vm-a.img"), repo.path("vm-b.img"));
    std::fs::write(&a, random_bytes(1, 4 << 20)).unwrap();
    std::fs::write(&b, random_bytes(2, 4 << 20)).unwrap();
    let config = write_config(
        &repo,
        "prune_schedule = \"*/10 * * * * *\"",
        &format!(
            r#"[[group]]
name = "lab"
repository = "test"
schedule = "*/4 * * * * *"
timezone = "UTC"
rpo = "30s"
retention = {{ keep_last = 2 }}

[[group.vm]]
name = "vm-a"
[[group.vm.disk]]
name = "root"
image = "{}"

[[group.vm]]
name = "vm-b"
[[group.vm.disk]]
name = "root"
image = "{}"
"#,
            a.display(),
            b.display()
        ),
    );
    let mut d = Daemon::start(&repo, &config, &["--jobs", "2"]);
    let ok_a = "lifeboat_rpo_state{group=\"lab\",vm=\"vm-a\",disk=\"root\"}";
    let ok_b = "lifeboat_rpo_state{group=\"lab\",vm=\"vm-b\",disk=\"root\"}";

    // Several scheduled backups of both VMs, retention applied after them, and a
    // prune on the repository's own schedule.
    d.wait(
        "4 backups per VM, forgets, a prune",
        Duration::from_secs(90),
        |d| {
            let backups = d.metric("lifeboat_jobs_total{kind=\"backup\",status=\"ok\"}")?;
            let forgets = d.metric("lifeboat_jobs_total{kind=\"forget\",status=\"ok\"}")?;
            let prunes = d.metric("lifeboat_jobs_total{kind=\"prune\",status=\"ok\"}")?;
            (backups >= 8.0 && forgets >= 2.0 && prunes >= 1.0).then_some(())
        },
    );
    let s = d.wait("both VMs OK", Duration::from_secs(30), |d| {
        let s = d.status();
        (vm(&s, "vm-a")["rpo_state"] == "OK" && vm(&s, "vm-b")["rpo_state"] == "OK").then_some(s)
    });
    assert_eq!(s["daemon"]["running"], true, "{s}");
    for name in ["vm-a", "vm-b"] {
        let v = vm(&s, name);
        assert_eq!(v["rpo_secs"], 30, "{v}");
        assert!(v["age_secs"].as_i64().unwrap() < 30, "{v}");
        let disk = &v["disks"][0];
        assert_eq!(disk["last_success"]["bytes_read"], 4 << 20, "{v}");
        assert!(disk["last_success"]["snapshot"].is_string(), "{v}");
        assert!(v["next_run"].is_string(), "{v}");
        // Retention keeps 2; at most one more was made since the last forget.
        let n = snapshot_count(&repo, name);
        assert!((1..=3).contains(&n), "{name}: {n} snapshots");
    }
    assert_eq!(d.metric(ok_a), Some(0.0));
    assert!(
        d.metric(
            "lifeboat_last_success_timestamp_seconds{group=\"lab\",vm=\"vm-a\",disk=\"root\"}"
        )
        .unwrap()
            > 1.7e9
    );
    assert_eq!(
        d.metric("lifeboat_last_backup_bytes{group=\"lab\",vm=\"vm-b\",disk=\"root\"}"),
        Some((4 << 20) as f64)
    );
    let head = d.http_get("/metrics");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    assert!(d.http_get("/").starts_with("HTTP/1.1 404"));

    // vm-b's disk disappears: its backups fail, its state goes AT RISK, then BREACHED
    // once the RPO has passed since its last good backup; vm-a stays OK meanwhile.
    std::fs::remove_file(&b).unwrap();
    let s = d.wait("vm-b AT RISK", Duration::from_secs(30), |d| {
        let s = d.status();
        (vm(&s, "vm-b")["rpo_state"] == "AT RISK").then_some(s)
    });
    let err = vm(&s, "vm-b")["last_error"].as_str().unwrap().to_string();
    assert!(err.contains("does not exist"), "{err}");
    let s = d.wait("vm-b BREACHED", Duration::from_secs(60), |d| {
        let s = d.status();
        (vm(&s, "vm-b")["rpo_state"] == "BREACHED").then_some(s)
    });
    let b_status = vm(&s, "vm-b");
    assert!(b_status["age_secs"].as_i64().unwrap() >= 30, "{b_status}");
    assert!(
        b_status["disks"][0]["rpo_reason"]
            .as_str()
            .unwrap()
            .contains("over the RPO"),
        "{b_status}"
    );
    assert_eq!(vm(&s, "vm-a")["rpo_state"], "OK", "{s}");
    assert_eq!(d.metric(ok_b), Some(2.0));
    assert!(
        d.metric("lifeboat_jobs_total{kind=\"backup\",status=\"failed\"}")
            .unwrap()
            >= 1.0
    );

    d.sigterm();
    let st = d.exit_within(Duration::from_secs(60));
    assert_eq!(st.code(), Some(0), "{}", d.log());
    let s = d.status();
    assert_eq!(s["daemon"]["running"], false, "{s}");
    assert_eq!(
        vm(&s, "vm-b")["rpo_state"],
        "BREACHED",
        "status works without the daemon"
    );

    // The group's retention by hand, with the group's repository and passphrase file.
    let out = repo
        .cmd()
        .env_remove("LIFEBOAT_PASSWORD")
        .env("LIFEBOAT_REPO", "/nonexistent")
        .args(["forget", "--group", "lab", "--json", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (plan["group"].as_str(), plan["rule"].as_str()),
        (Some("lab"), Some("last 2"))
    );
    assert_eq!(snapshot_count(&repo, "vm-a"), 2);
    assert_eq!(snapshot_count(&repo, "vm-b"), 2);
}

/// A QMP monitor that greets, takes `qmp_capabilities` and never answers: the backup
/// job hangs (as one stuck on a slow disk would) until the test lets go of it.
fn stuck_qmp(sock: &Path) -> mpsc::Sender<()> {
    let listener = UnixListener::bind(sock).unwrap();
    let (release, released) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        while let Ok((mut conn, _)) = listener.accept() {
            let _ = writeln!(
                conn,
                r#"{{"QMP": {{"version": {{"qemu": {{"micro": 0, "minor": 2, "major": 7}}, "package": ""}}, "capabilities": []}}}}"#
            );
            let mut line = String::new();
            let _ = BufReader::new(conn.try_clone().unwrap()).read_line(&mut line);
            // Hold the connection until released (or the test ends).
            let _ = released.recv();
            drop(conn);
        }
    });
    release
}

#[test]
fn sigterm_waits_for_running_jobs_then_interrupts_them() {
    let repo = TestRepo::init(Kind::Local);
    let sock = repo.path("qmp.sock");
    let release = stuck_qmp(&sock);
    let config = write_config(
        &repo,
        "",
        &format!(
            r#"[[group]]
name = "live"
repository = "test"
schedule = "* * * * * *"
forget_schedule = "0 0 1 1 *"
timezone = "UTC"
rpo = "1h"
retention = {{ keep_last = 1 }}

[[group.vm]]
name = "db01"
[[group.vm.disk]]
name = "root"
qmp = "{}"
drive = "drive0"
"#,
            sock.display()
        ),
    );
    let running = |d: &Daemon| {
        let s = d.status();
        (vm(&s, "db01")["disks"][0]["running"] == true).then_some(())
    };

    // 1. Within the stop timeout: the daemon waits for the job to end by itself.
    let mut d = Daemon::start(&repo, &config, &["--stop-timeout", "2m"]);
    d.wait("a running backup", Duration::from_secs(30), running);
    d.sigterm();
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        d.child.try_wait().unwrap().is_none(),
        "the daemon must wait for its running job:\n{}",
        d.log()
    );
    release.send(()).unwrap(); // the monitor hangs up: the backup fails on its own
    let st = d.exit_within(Duration::from_secs(30));
    assert_eq!(st.code(), Some(0), "{}", d.log());
    let s = d.status();
    let disk = &vm(&s, "db01")["disks"][0];
    assert_eq!(disk["running"], false, "{disk}");
    let err = disk["last_error"].as_str().unwrap();
    assert!(err.contains("QMP") && !err.contains("interrupted"), "{err}");
    assert!(d.log().contains("stopping: no new jobs"), "{}", d.log());
    drop(d);

    // 2. Past the stop timeout: the job is interrupted and recorded so; still exit 0.
    let mut d = Daemon::start(&repo, &config, &["--stop-timeout", "1s"]);
    d.wait("a running backup", Duration::from_secs(30), running);
    let stopped = Instant::now();
    d.sigterm();
    let st = d.exit_within(Duration::from_secs(30));
    assert_eq!(st.code(), Some(0), "{}", d.log());
    assert!(stopped.elapsed() < Duration::from_secs(20));
    let s = d.status();
    let disk = &vm(&s, "db01")["disks"][0];
    assert_eq!(disk["running"], false, "{disk}");
    assert!(
        disk["last_error"]
            .as_str()
            .unwrap()
            .contains("interrupted by the daemon's shutdown"),
        "{disk}"
    );
    assert_eq!(vm(&s, "db01")["rpo_state"], "AT RISK", "{s}");
    drop(release);
}
