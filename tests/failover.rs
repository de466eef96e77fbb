//! Failover end to end with real Linux guests under qemu-system-x86_64: the primary
//! site backs up and replicates, then is lost (its repository deleted); `failover`
//! starts the plan on the secondary from the replica, on disks of its own and the
//! production network, and the VMs outlive the command. `failover status` reports
//! them (RPO, RTO, alive), `commit` releases the standby, `abort --discard` leaves no
//! QEMU, disk or socket. A failover that cannot bring every VM up starts nothing.
//! A planned failover loses nothing the guest wrote, and failback brings home only
//! what changed.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Output;

use serde_json::Value;
use std::time::Duration;
use support::guest::{MARKER, qemu_pids};

use support::plan::{PrimaryVm, Rig, note, standby_state, walk};

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn json(out: &Output) -> Value {
    assert!(out.status.success(), "{}", text(out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(out)))
}

/// The guest's HTTP answer on the host address `addr`.
fn http_get(addr: &str) -> String {
    let mut conn = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    conn.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    conn.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut body = String::new();
    conn.read_to_string(&mut body).unwrap();
    body
}

/// A backup of web01's disk `disk` from `image` on the primary (its definition is the
/// one recorded by earlier backups).
/// The backing file of a qcow2 image (read while its VM runs), if it has one.
fn backing_of(image: &str) -> Option<String> {
    let out = std::process::Command::new("qemu-img")
        .args(["info", "-U", "--output=json", image])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let info: Value = serde_json::from_slice(&out.stdout).unwrap();
    info["full-backing-filename"].as_str().map(str::to_string)
}

fn back_up(rig: &Rig, disk: &str, image: &std::path::Path) {
    let image = image.to_str().unwrap();
    rig.primary
        .ok(&["backup", "--vm", "web01", "--disk", disk, image, "-q"]);
}

fn assert_clean_replica(rig: &Rig) {
    let out = rig.secondary.run(&["verify", "--read-data"]);
    assert!(
        out.status.success(),
        "the replica verifies clean: {}",
        text(&out)
    );
}

fn assert_clean_primary(rig: &Rig) {
    let out = rig.primary.run(&["verify", "--read-data"]);
    assert!(
        out.status.success(),
        "the primary verifies clean: {}",
        text(&out)
    );
}

#[test]
fn unplanned_failover_runs_the_plan_from_the_replica_after_the_primary_is_gone() {
    let rig = Rig::new(&[("web01", false)]);
    let standby = rig.standby.to_str().unwrap();
    rig.secondary
        .ok(&["standby", "sync", "--dir", standby, "--vm", "web01", "-q"]);
    let standby_before = standby_state(&rig.standby);
    // The primary site is gone.
    std::fs::remove_dir_all(&rig.primary.url).unwrap();

    let state = json(&rig.failover(None, &["erp", "--json"]));
    assert_eq!(state["kind"], "unplanned", "{state}");
    assert_eq!(state["phase"], "running", "{state}");
    assert!(state["rto_secs"].as_f64().unwrap() > 0.0, "{state}");
    let vm = &state["vms"][0];
    assert_eq!(vm["vm"], "web01");
    assert_eq!(vm["disks"][0]["from"], "standby", "{vm}");
    assert!(vm["rpo_secs"].is_u64(), "{vm}");
    let disk = vm["disks"][0]["path"].as_str().unwrap();
    assert!(disk.starts_with(rig.overlays.to_str().unwrap()), "{disk}");
    // Not a copy: an overlay on the standby point, made in a moment whatever the size.
    assert!(
        backing_of(disk).is_some_and(|b| b.starts_with(standby)),
        "{disk} is an overlay on the standby point"
    );

    // The VM outlived the command, on the production network, serving its port.
    assert_eq!(qemu_pids(&rig.overlays).len(), 1, "the failover VM runs on");
    let addr = vm["running"]["forwards"][0][1].as_str().unwrap();
    assert!(
        http_get(addr).contains(MARKER),
        "the failed-over guest serves"
    );

    let status = json(&rig.failover(Some("status"), &["--json"]));
    assert_eq!(status[0]["plan"], "erp", "{status}");
    assert_eq!(status[0]["alive"]["web01"], true, "{status}");
    assert_eq!(status[0]["vms"][0]["rpo_secs"], vm["rpo_secs"], "{status}");
    let overview = text(
        &rig.secondary
            .run(&["status", "--config", rig.config.to_str().unwrap()]),
    );
    assert!(
        overview.contains("plan erp is FAILED OVER") && overview.contains("1/1 VMs running"),
        "{overview}"
    );
    let human = text(&rig.failover(Some("status"), &[]));
    assert!(
        human.contains("RPO") && human.contains("RUNNING"),
        "{human}"
    );

    // A second failover of the same plan is refused and changes nothing.
    let again = rig.failover(None, &["erp"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        text(&again).contains("already failed over"),
        "{}",
        text(&again)
    );
    assert_eq!(qemu_pids(&rig.overlays).len(), 1);
    // Nor is a drill (it would boot a second copy), and the standby is fenced: a
    // sync leaves the failed-over VM alone, and refuses when asked for it by name.
    let drill = rig.drill(&["erp"]);
    assert_eq!(drill.status.code(), Some(1));
    assert!(text(&drill).contains("failed over"), "{}", text(&drill));
    let sync = json(
        &rig.secondary
            .run(&["standby", "sync", "--dir", standby, "--json"]),
    );
    assert_eq!(sync["failed_over"][0][0], "web01", "{sync}");
    let named = rig
        .secondary
        .run(&["standby", "sync", "--dir", standby, "--vm", "web01"]);
    assert_eq!(named.status.code(), Some(1));
    assert!(text(&named).contains("is failed over"), "{}", text(&named));
    let fence = rig.standby.join("web01/FAILED-OVER");
    let unfenced: Vec<_> = standby_state(&rig.standby)
        .into_iter()
        .filter(|(p, _)| *p != fence)
        .collect();
    assert_eq!(unfenced, standby_before, "standby untouched");

    // Failback needs the primary's repository back (reverse replication): refused
    // before anything stops.
    let config = rig.config.to_str().unwrap();
    let early = rig
        .secondary
        .run(&["failback", "erp", "--to", "primary", "--config", config]);
    assert_eq!(early.status.code(), Some(1), "{}", text(&early));
    assert!(
        text(&early).contains("nothing was stopped"),
        "{}",
        text(&early)
    );
    assert!(http_get(addr).contains(MARKER), "the VM still runs");

    // Commit releases the standby images the VM no longer needs.
    let committed = json(&rig.failover(Some("commit"), &["erp", "--json"]));
    assert_eq!(
        committed["released_standby"][0], "web01/root",
        "{committed}"
    );
    assert!(
        !rig.standby.join("web01/root").exists(),
        "standby of web01 released"
    );
    assert!(fence.exists(), "still fenced after commit");
    assert_eq!(
        backing_of(disk),
        None,
        "commit streamed the point into the VM's own disk"
    );
    assert!(
        http_get(addr).contains(MARKER),
        "commit does not stop the VM"
    );

    // Abort without --discard is refused by the parser; with it, nothing is left.
    let refused = rig.failover(Some("abort"), &["erp"]);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    assert_eq!(qemu_pids(&rig.overlays).len(), 1);
    let out = rig.failover(
        Some("abort"),
        &["erp", "--discard", "--shutdown-timeout", "5s"],
    );
    assert!(out.status.success(), "{}", text(&out));
    rig.assert_nothing_left();
    assert!(!rig.state.join("failover/erp.json").exists());
    assert!(!fence.exists(), "abort lifts the fence");
    let status = text(&rig.failover(Some("status"), &[]));
    assert!(status.contains("no plan is failed over"), "{status}");
    assert_clean_replica(&rig);
}

#[test]
fn a_failover_that_cannot_bring_every_vm_up_starts_nothing() {
    // broken01 panics; web01 comes up but must not be left running alone. Neither has
    // a standby point: their disks are restored from the replica.
    let rig = Rig::new(&[("web01", false), ("broken01", true)]);

    let out = rig.failover(None, &["erp"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let msg = text(&out);
    assert!(
        msg.contains("broken01") && msg.contains("did not come up") && msg.contains("panic"),
        "{msg}"
    );
    rig.assert_nothing_left();
    assert!(!rig.state.join("failover/erp.json").exists(), "no state");

    // A planned failover needs final backups from `failover prepare`: refused before
    // anything is made.
    let out = rig.failover(None, &["erp", "--planned"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("not a final backup"), "{}", text(&out));
    assert!(walk(&rig.overlays).is_empty());
    assert!(!rig.state.join("failover/erp.json").exists());
    assert_clean_replica(&rig);
    assert_clean_primary(&rig);
}

/// Long enough for a TCG boot on a loaded CI host.
const BOOT: Duration = Duration::from_secs(120);

#[test]
fn planned_failover_and_failback_lose_nothing_and_move_only_what_changed() {
    let rig = Rig::new(&[("web01", false)]);
    let image = rig.primary.path("web01.img");
    let primary_dir = rig.primary.path("vm");
    std::fs::create_dir_all(&primary_dir).unwrap();
    // Production on the primary: the guest writes to its disk.
    let mut vm = PrimaryVm::start(&image, &primary_dir);
    let addr = format!("127.0.0.1:{}", vm.port);
    assert_eq!(note(&addr, "first", BOOT), "first;");
    let qmp = vm.qmp.to_str().unwrap().to_string();
    let disk = format!("root={}", image.display());

    // Prepare on the primary: ACPI shutdown, final backup; replicate; fail over.
    let prepared = rig.primary.run(&[
        "failover", "prepare", "--vm", "web01", "--qmp", &qmp, "--disk", &disk, "--json",
    ]);
    assert!(prepared.status.success(), "{}", text(&prepared));
    assert!(!vm.running(), "the primary VM is off");
    rig.secondary
        .ok(&["replicate", "--from", &rig.primary.url, "-q"]);
    // The final backups reach the warm standby too: the VM boots on an overlay of it,
    // and failback later backs that overlay up.
    let standby = rig.standby.to_str().unwrap();
    rig.secondary
        .ok(&["standby", "sync", "--dir", standby, "--vm", "web01", "-q"]);
    let state = json(&rig.failover(None, &["erp", "--planned", "--json"]));
    assert_eq!(state["kind"], "planned", "{state}");
    assert_eq!(state["vms"][0]["disks"][0]["from"], "standby", "{state}");
    let failed_over = state["vms"][0]["running"]["forwards"][0][1]
        .as_str()
        .unwrap()
        .to_string();
    // RPO zero: what the guest wrote before the shutdown is there.
    assert_eq!(note(&failed_over, "", BOOT), "first;");
    assert_eq!(note(&failed_over, "second", BOOT), "first;second;");

    // A primary that still backs up (split brain) is not replicated over the
    // failed-over VM: replication into the secondary is fenced like its standby.
    back_up(&rig, "root", &image);
    let config = rig.config.to_str().unwrap();
    let fenced = json(&rig.secondary.run(&[
        "replicate",
        "--from",
        &rig.primary.url,
        "--config",
        config,
        "--json",
    ]));
    assert_eq!(fenced["snapshots_copied"], 0, "{fenced}");
    let named = rig.secondary.run(&[
        "replicate",
        "--from",
        &rig.primary.url,
        "--config",
        config,
        "--vm",
        "web01",
    ]);
    assert_eq!(named.status.code(), Some(1), "{}", text(&named));
    assert!(
        text(&named).contains("is failed over onto"),
        "{}",
        text(&named)
    );

    // Failback: final backup on the secondary, only the changed chunks go home.
    let back = json(&rig.secondary.run(&[
        "failback",
        "erp",
        "--to",
        "primary",
        "--config",
        rig.config.to_str().unwrap(),
        "--json",
    ]));
    let (sent, disk_bytes) = (
        back["bytes_sent"].as_u64().unwrap(),
        back["disk_bytes"].as_u64().unwrap(),
    );
    assert!(sent > 0, "the changed chunk crossed: {back}");
    assert!(
        sent * 16 < disk_bytes,
        "failback moved {sent} bytes for a {disk_bytes}-byte disk where one note changed: {back}"
    );
    rig.assert_nothing_left();
    assert!(!rig.state.join("failover/erp.json").exists());

    // The planned failover back home starts from those final backups: both writes.
    let home_config = rig.primary_config(vec!["web01"]);
    let home = |args: &[&str]| {
        let config = home_config.to_str().unwrap();
        let mut all = vec!["failover"];
        all.extend(args.iter().take_while(|a| !a.starts_with('-')).copied());
        all.extend(["--config", config]);
        all.extend(args.iter().skip_while(|a| !a.starts_with('-')).copied());
        rig.primary.run(&all)
    };
    let home_state = json(&home(&["erp", "--planned", "--json"]));
    let home_addr = home_state["vms"][0]["running"]["forwards"][0][1]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(note(&home_addr, "", BOOT), "first;second;");
    let out = home(&["abort", "erp", "--discard", "--shutdown-timeout", "5s"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(qemu_pids(&rig.primary.path("overlays")), Vec::<u32>::new());
    assert!(
        walk(&rig.primary.path("overlays")).is_empty(),
        "nothing left home"
    );
    assert_clean_replica(&rig);
    assert_clean_primary(&rig);
}

#[test]
fn prepare_refuses_when_the_primary_vm_will_not_shut_down() {
    // The broken guest panics and never answers the power button.
    let rig = Rig::new(&[("broken01", true)]);
    let image = rig.primary.path("broken01.img");
    let dir = rig.primary.path("vm");
    std::fs::create_dir_all(&dir).unwrap();
    let mut vm = PrimaryVm::start(&image, &dir);
    while !vm.qmp.exists() {
        std::thread::sleep(Duration::from_millis(100));
    }
    let before = rig.primary.json(&["snapshots"]);
    let disk = format!("root={}", image.display());
    let out = rig.primary.run(&[
        "failover",
        "prepare",
        "--vm",
        "broken01",
        "--qmp",
        vm.qmp.to_str().unwrap(),
        "--disk",
        &disk,
        "--shutdown-timeout",
        "3s",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("still runs on the primary"),
        "{}",
        text(&out)
    );
    assert!(vm.running(), "never forced off");
    assert_eq!(
        rig.primary.json(&["snapshots"]),
        before,
        "nothing backed up"
    );
    drop(vm);
    assert_clean_primary(&rig);
}

#[test]
fn a_damaged_point_is_refused_and_the_next_older_one_offered() {
    let rig = Rig::new(&[("web01", false)]);
    // A newer backup whose changed data lands in packs of its own on the replica.
    let image = rig.primary.path("web01.img");
    let mut changed = vec![0u8; 256 * 1024];
    let mut x: u32 = 0x9e37_79b9;
    for b in changed.iter_mut() {
        x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        *b = (x >> 24) as u8;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(&image)
        .unwrap();
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(64 << 20)).unwrap();
    file.write_all(&changed).unwrap();
    drop(file);
    back_up(&rig, "root", &image);
    let data = std::path::Path::new(&rig.secondary.url).join("data");
    let before = walk(&data);
    rig.secondary
        .ok(&["replicate", "--from", &rig.primary.url, "-q"]);
    let new_packs: Vec<_> = walk(&data)
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    assert!(
        !new_packs.is_empty(),
        "the newer point has packs of its own"
    );
    for pack in &new_packs {
        let mut bytes = std::fs::read(pack).unwrap();
        let middle = bytes.len() / 2;
        for b in &mut bytes[middle..middle + 64] {
            *b ^= 0xff;
        }
        std::fs::write(pack, bytes).unwrap();
    }

    let out = rig.failover(None, &["erp"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let msg = text(&out);
    assert!(
        msg.contains("failed verification") && msg.contains("next older point"),
        "{msg}"
    );
    rig.assert_nothing_left();
    assert!(!rig.state.join("failover/erp.json").exists());

    // The offered point works.
    let point = msg
        .split("--point ")
        .nth(1)
        .and_then(|rest| rest.split('`').next())
        .unwrap_or_else(|| panic!("no --point offered: {msg}"));
    let state = json(&rig.failover(None, &["erp", "--point", point, "--json"]));
    assert_eq!(state["phase"], "running", "{state}");
    let out = rig.failover(
        Some("abort"),
        &["erp", "--discard", "--shutdown-timeout", "5s"],
    );
    assert!(out.status.success(), "{}", text(&out));
    rig.assert_nothing_left();
}

#[test]
fn a_secondary_without_room_for_the_disks_starts_nothing() {
    let rig = Rig::new(&[("web01", false)]);
    // A thin 1 TiB data disk: the backup is tiny, the failover copy would not be.
    let big = rig.primary.path("data.img");
    let file = std::fs::File::create(&big).unwrap();
    file.set_len(1 << 40).unwrap();
    drop(file);
    back_up(&rig, "data", &big);
    rig.secondary
        .ok(&["replicate", "--from", &rig.primary.url, "-q"]);
    let out = rig.failover(None, &["erp"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let msg = text(&out);
    assert!(
        msg.contains("not enough room") && msg.contains("bytes needed"),
        "{msg}"
    );
    rig.assert_nothing_left();
    assert!(!rig.state.join("failover/erp.json").exists());
}
