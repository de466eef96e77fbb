//! Drills (test failovers) end to end with real Linux guests under qemu-system-x86_64:
//! two VMs are backed up on the primary, replicated to the secondary, one of them
//! kept as a warm standby disk; the drill boots both in the isolated test network
//! and must tell the guest that comes up (BOOTED, marker on its console, port
//! answering, a screenshot) from the one whose kernel panics (FAILED, the panic
//! quoted), leave no QEMU, overlay or socket behind, leave the standby untouched, and
//! sign a report whose editing or deletion `drill history --verify` detects.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use support::daemon::Daemon;
use support::guest::{MARKER, qemu_pids};
use support::plan::{Rig, standby_state};
use support::tmpfs::Tmpfs;

#[test]
fn drill_boots_the_good_guest_and_names_the_panic_of_the_broken_one() {
    let rig = Rig::new(&[("web01", false), ("broken01", true)]);
    // web01 boots from a warm standby point; broken01 (no standby) from the snapshot
    // served straight from the repository over NBD.
    rig.secondary.ok(&[
        "standby",
        "sync",
        "--dir",
        rig.standby.to_str().unwrap(),
        "--vm",
        "web01",
        "-q",
    ]);
    let before = standby_state(&rig.standby);

    let out = rig.drill(&["erp", "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(4),
        "a failed VM fails the drill: {stderr}"
    );
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    let report = &result["report"];
    assert_eq!(report["verdict"], "FAILED", "{report}");
    let vm = |name: &str| -> &Value {
        report["vms"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["vm"] == name)
            .unwrap()
    };
    let (web, broken) = (vm("web01"), vm("broken01"));
    assert_eq!(web["verdict"], "BOOTED", "{web}");
    assert_eq!(web["disks"][0]["from"], "standby", "{web}");
    assert!(
        web["console_tail"].as_str().unwrap().contains(MARKER),
        "{web}"
    );
    assert!(web["first_output_secs"].as_f64().unwrap() <= web["healthy_secs"].as_f64().unwrap());
    let reports = rig.state.join("drills/dr");
    let png = std::fs::read(reports.join(web["screenshot"]["path"].as_str().unwrap())).unwrap();
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 1024,
        "a real screenshot"
    );
    let console =
        std::fs::read_to_string(reports.join(web["console"]["path"].as_str().unwrap())).unwrap();
    assert!(console.contains(MARKER), "the whole console log is kept");

    assert_eq!(broken["verdict"], "FAILED", "{broken}");
    assert_eq!(broken["disks"][0]["from"], "export", "{broken}");
    let reason = broken["reason"].as_str().unwrap();
    assert!(
        reason.contains("Kernel panic"),
        "the panic is quoted: {reason}"
    );
    assert_eq!(
        report["rto_secs"],
        Value::Null,
        "no RTO when a VM did not boot"
    );

    let html = std::fs::read_to_string(result["html"].as_str().unwrap()).unwrap();
    assert!(html.contains("data:image/png;base64,") && html.contains("Kernel panic"));

    rig.assert_nothing_left();
    assert_eq!(
        standby_state(&rig.standby),
        before,
        "the standby images are untouched"
    );

    // The chain verifies; an edited report, then a deleted one, are detected.
    let (code, text) = rig.history(true);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("chain verified"), "{text}");
    let json = PathBuf::from(result["json"].as_str().unwrap());
    let original = std::fs::read_to_string(&json).unwrap();
    std::fs::write(&json, original.replacen("\"FAILED\"", "\"PASSED\"", 1)).unwrap();
    let (code, text) = rig.history(true);
    assert_eq!(code, Some(3), "{text}");
    assert!(text.contains("edited"), "{text}");
    std::fs::remove_file(&json).unwrap();
    let (code, text) = rig.history(true);
    assert_eq!(code, Some(3), "{text}");
    assert!(text.contains("deleted here"), "{text}");
    drop(rig.primary);
}

#[test]
fn a_drill_that_cannot_run_says_why_and_leaves_nothing() {
    let rig = Rig::new(&[("web01", false)]);
    // A plan naming a VM that was never backed up.
    rig.write_config(vec!["web01", "ghost01"], "");
    let out = rig.drill(&["erp"]);
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("ghost01 has no backups"), "{text}");
    rig.assert_nothing_left();

    // A point older than any kept.
    rig.write_config(vec!["web01"], "");
    let out = rig.drill(&["erp", "--point", "2001-01-01T00:00:00Z"]);
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("oldest kept"), "{text}");

    // A pre-script that fails stops the drill before any VM starts.
    let script = rig.secondary.path("pre.sh");
    std::fs::write(&script, "#!/bin/sh\necho not today >&2\nexit 3\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    rig.write_config(
        vec!["web01"],
        &format!("pre_script = {:?}", script.display().to_string()),
    );
    let out = rig.drill(&["erp"]);
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("pre.sh failed"), "{text}");
    rig.assert_nothing_left();

    // A QEMU that cannot start (no PC takes 1024 CPUs): QEMU's own words, nothing
    // left running or on disk.
    rig.write_config_with(vec!["web01"], "", "cpus = 1024");
    let out = rig.drill(&["erp"]);
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("CPUs"), "QEMU's reason is quoted: {text}");
    rig.assert_nothing_left();

    // An overlay directory that is full: said before any VM starts, nothing left.
    {
        let _full = Tmpfs::mount(rig.overlays.clone(), "1m");
        let _ = std::fs::write(rig.overlays.join("filler"), vec![1u8; 2 << 20]);
        let out = rig.drill(&["erp"]);
        let text = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{text}");
        assert!(text.contains("no space left in"), "{text}");
        assert!(text.contains("nothing was started"), "{text}");
        assert_eq!(qemu_pids(&rig.overlays), Vec::<u32>::new());
        std::fs::remove_file(rig.overlays.join("filler")).unwrap();
        rig.assert_nothing_left();
    }

    // None of these wrote a report; a good drill then passes with an RTO.
    rig.write_config(vec!["web01"], "");
    let out = rig.drill(&["erp", "--json"]);
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        result["report"]["seq"], 1,
        "failed attempts write no report"
    );
    assert_eq!(result["report"]["verdict"], "PASSED");
    assert!(result["report"]["rto_secs"].as_f64().unwrap() > 0.0);
    assert_eq!(result["report"]["vms"][0]["disks"][0]["from"], "export");
    rig.assert_nothing_left();
}

/// The daemon runs a plan's drill_schedule: before the first drill the plan is AT
/// RISK ("never drilled"); after one, `status` and `/metrics` show it OK with its
/// RTO, and the reports the daemon's drills signed verify as one chain.
#[test]
fn scheduled_drills_show_in_status_and_metrics() {
    let rig = Rig::new(&[("web01", false)]);
    rig.write_config(vec!["web01"], r#"drill_schedule = "*/5 * * * * *""#);
    let status_before = {
        let out = rig.secondary.run(&[
            "status",
            "--json",
            "--config",
            rig.config.to_str().unwrap(),
            "--state-dir",
            rig.state.to_str().unwrap(),
        ]);
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    assert_eq!(
        status_before["drills"][0]["state"], "AT RISK",
        "{status_before}"
    );
    assert_eq!(status_before["drills"][0]["reason"], "never drilled");

    let mut daemon = Daemon::start(&rig.secondary, &rig.config, &[]);
    let status = daemon.wait("a scheduled drill to pass", Duration::from_secs(180), |d| {
        let s = d.status();
        (s["drills"][0]["last_verdict"] == "PASSED").then_some(s)
    });
    let drill = &status["drills"][0];
    assert_eq!(drill["state"], "OK", "{drill}");
    assert!(drill["rto_secs"].as_f64().unwrap() > 0.0, "{drill}");
    let state = daemon.metric("lifeboat_drill_state{plan=\"erp\"}");
    assert_eq!(state, Some(0.0), "drill state OK on /metrics");
    let success = daemon.metric("lifeboat_drill_last_success_timestamp_seconds{plan=\"erp\"}");
    assert!(success.unwrap() > 1.7e9, "{success:?}");
    assert!(
        daemon
            .metric("lifeboat_drill_rto_seconds{plan=\"erp\"}")
            .unwrap()
            > 0.0
    );
    daemon.sigterm();
    let exit = daemon.exit_within(Duration::from_secs(120));
    assert!(exit.success(), "{}", daemon.log());

    let (code, text) = rig.history(true);
    assert_eq!(code, Some(0), "the daemon's reports verify: {text}");
    // A drill the daemon's stop interrupted leaves no VM; its overlays go with the
    // next drill of the plan.
    assert_eq!(
        qemu_pids(&rig.overlays),
        Vec::<u32>::new(),
        "a QEMU is left running"
    );
}

/// Starts `drill erp --keep` and waits for its report: the VM then runs on.
fn kept_drill(rig: &Rig) -> std::process::Child {
    let mut drill = rig
        .secondary
        .cmd()
        .args([
            "drill",
            "erp",
            "--keep",
            "--config",
            rig.config.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let report = rig.state.join("drills/dr/000001.json");
    let start = std::time::Instant::now();
    while !report.exists() {
        assert!(start.elapsed() < Duration::from_secs(120), "no report");
        assert!(
            drill.try_wait().unwrap().is_none(),
            "the drill exited early"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let parsed: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(parsed["kept_running"], true, "{parsed}");
    assert_eq!(parsed["verdict"], "PASSED", "{parsed}");
    drill
}

/// `--keep` leaves the VMs running after the report (its disk served over NBD by the
/// drill all the while); a second drill of the plan is refused meanwhile (it would
/// remove the kept VM's overlays), and SIGTERM then ends the drill with nothing left.
#[test]
fn a_kept_drill_runs_until_sigterm_then_leaves_nothing() {
    let rig = Rig::new(&[("web01", false)]);
    let mut drill = kept_drill(&rig);
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        drill.try_wait().unwrap().is_none(),
        "the drill waits while the VMs run"
    );
    assert_eq!(qemu_pids(&rig.overlays).len(), 1, "the VM is kept running");
    let second = rig.drill(&["erp"]);
    let said = String::from_utf8_lossy(&second.stderr).into_owned();
    assert_eq!(second.status.code(), Some(1), "{said}");
    assert!(said.contains("kept with --keep still runs"), "{said}");
    assert_eq!(
        qemu_pids(&rig.overlays).len(),
        1,
        "the kept VM is untouched"
    );

    let pid = rustix::process::Pid::from_raw(drill.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let out = drill.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("kept running: web01"), "{stderr}");
    rig.assert_nothing_left();
}

/// A kept drill whose process is killed leaves its overlays; `drill cleanup` ends
/// whatever still runs from them and removes them, and the report stays.
#[test]
fn drill_cleanup_ends_what_a_killed_drill_left() {
    let rig = Rig::new(&[("web01", false)]);
    let mut drill = kept_drill(&rig);
    drill.kill().unwrap();
    drill.wait().unwrap();
    assert!(
        std::fs::read_dir(&rig.overlays).unwrap().next().is_some(),
        "the killed drill left its overlays"
    );
    let config = rig.config.to_str().unwrap();
    let done = rig
        .secondary
        .json(&["drill", "cleanup", "erp", "--config", config]);
    assert_eq!(done["removed"].as_array().unwrap().len(), 1, "{done}");
    rig.assert_nothing_left();
    assert!(
        rig.state.join("drills/dr/000001.json").exists(),
        "the report stays"
    );
    let again = rig
        .secondary
        .ok(&["drill", "cleanup", "erp", "--config", config]);
    assert!(again.contains("no drill left anything"), "{again}");
}
