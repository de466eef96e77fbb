//! Recovery plans, networks and VM hardware in the configuration, and the drill
//! status rule: a full valid file read back completely, and each mistake reported
//! at its line with its key and a fix.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use lifeboat_policies::config::{DiskBus, Firmware, NetworkKind};
use lifeboat_policies::{DrillState, LastDrill, Schedule, assess_drill, parse_config};

const FULL: &str = r#"[[repository]]
name = "dr-site"
url = "/srv/replica"

[[group]]
name = "prod"
repository = "dr-site"
schedule = "0 1 * * *"
timezone = "UTC"
retention = { keep_daily = 7 }

[[group.vm]]
name = "db01"
firmware = "uefi"
cpus = 2
memory = "2GiB"
machine = "q35"
libvirt_xml = "/etc/libvirt/qemu/db01.xml"
[[group.vm.disk]]
image = "/images/db01.qcow2"
[[group.vm.disk]]
image = "/images/db01-data.qcow2"
bus = "scsi"
[[group.vm.nic]]
mac = "52:54:00:AB:34:56"
network = "prod-lan"
[[group.vm.nic]]
network = "backup-lan"
model = "e1000"

[[group.vm]]
name = "web01"
[[group.vm.disk]]
image = "/images/web01.qcow2"

[[network]]
name = "dr-lan"
kind = "bridge"
bridge = "br-dr"
[[network]]
name = "drill-isolated"
kind = "user"
isolated = true
[[network]]
name = "drill-tap"
kind = "tap"
tap = "tap0"
isolated = true

[[plan]]
name = "erp"
repository = "dr-site"
standby = false
rto = "15m"
drill_schedule = "0 2 1 */3 *"
timezone = "Europe/Berlin"
overlay_dir = "/var/lib/lifeboat/drills"
pre_script = "/etc/lifeboat/erp-pre.sh"
post_script = "/etc/lifeboat/erp-post.sh"
[plan.network_map]
"prod-lan" = "dr-lan"
[plan.test_network_map]
"prod-lan" = "drill-isolated"
"backup-lan" = "drill-tap"
[[plan.boot_group]]
vms = ["db01"]
[[plan.boot_group]]
vms = ["app01", "web01"]
[[plan.vm]]
name = "db01"
cpus = 4
memory = "8GiB"
timeout = "5m"
health = { console = "login:", tcp = 5432, guest_agent = true }
[[plan.vm]]
name = "web01"

[[plan]]
name = "minimal"
repository = "dr-site"
rto = "1h"
[[plan.boot_group]]
vms = ["web01"]
"#;

#[test]
fn a_full_file_with_hardware_networks_and_plans_is_read_completely() {
    let c = parse_config(FULL, "lb.toml").unwrap();
    let db = &c.groups[0].vms[0];
    let hw = &db.hardware;
    assert_eq!(hw.firmware, Firmware::Uefi);
    assert_eq!((hw.cpus, hw.memory_mib), (2, 2048));
    assert_eq!(hw.machine.as_deref(), Some("q35"));
    assert_eq!(
        hw.libvirt_xml,
        Some(PathBuf::from("/etc/libvirt/qemu/db01.xml"))
    );
    assert_eq!(db.disks[0].bus, DiskBus::Virtio);
    assert_eq!(db.disks[1].bus, DiskBus::Scsi);
    assert_eq!(hw.nics.len(), 2);
    assert_eq!(hw.nics[0].mac.as_deref(), Some("52:54:00:ab:34:56"));
    assert_eq!(hw.nics[0].network, "prod-lan");
    assert_eq!(hw.nics[0].model, "virtio-net-pci");
    assert_eq!(
        (hw.nics[1].mac.as_deref(), hw.nics[1].model.as_str()),
        (None, "e1000")
    );

    // A VM without hardware keys gets the defaults.
    let web = &c.groups[0].vms[1].hardware;
    assert_eq!(web.firmware, Firmware::Bios);
    assert_eq!(
        (web.cpus, web.memory_mib, web.machine.as_deref()),
        (1, 1024, None)
    );
    assert!(web.nics.is_empty() && web.libvirt_xml.is_none());

    assert_eq!(c.networks.len(), 3);
    let dr = c.network("dr-lan").unwrap();
    assert_eq!(
        (dr.kind.clone(), dr.isolated),
        (NetworkKind::Bridge("br-dr".into()), false)
    );
    assert_eq!(c.network("drill-isolated").unwrap().kind, NetworkKind::User);
    assert_eq!(
        c.network("drill-tap").unwrap().kind,
        NetworkKind::Tap("tap0".into())
    );
    assert!(c.network("drill-tap").unwrap().isolated);

    let p = c.plan("erp").unwrap();
    assert_eq!(p.repository, "dr-site");
    assert!(!p.standby);
    assert_eq!(p.rto, 15 * 60);
    let s = p.drill_schedule.as_ref().unwrap();
    assert_eq!(s.expression(), "0 2 1 */3 *");
    assert_eq!(s.timezone().name(), "Europe/Berlin");
    assert_eq!(p.overlay_dir, PathBuf::from("/var/lib/lifeboat/drills"));
    assert_eq!(
        p.pre_script,
        Some(PathBuf::from("/etc/lifeboat/erp-pre.sh"))
    );
    assert_eq!(
        p.post_script,
        Some(PathBuf::from("/etc/lifeboat/erp-post.sh"))
    );
    assert_eq!(p.failover_network_for("prod-lan"), Some("dr-lan"));
    assert_eq!(p.failover_network_for("backup-lan"), None);
    assert_eq!(p.test_network_for("prod-lan"), Some("drill-isolated"));
    assert_eq!(p.test_network_for("backup-lan"), Some("drill-tap"));
    let order: Vec<&str> = p.vms_in_boot_order().collect();
    assert_eq!(order, ["db01", "app01", "web01"]);
    assert_eq!(p.boot_groups.len(), 2);

    let db = p.overrides("db01").unwrap();
    assert_eq!(
        (db.cpus, db.memory_mib, db.timeout),
        (Some(4), Some(8192), 300)
    );
    assert_eq!(db.health.console_source(), Some("login:"));
    assert!(db.health.console.as_ref().unwrap().is_match("db01 login: "));
    assert_eq!((db.health.tcp, db.health.guest_agent), (Some(5432), true));
    let web = p.overrides("web01").unwrap();
    assert_eq!((web.cpus, web.memory_mib, web.timeout), (None, None, 600));
    assert!(web.health.is_default());
    assert!(p.overrides("app01").is_none(), "app01 has no [[plan.vm]]");

    let m = c.plan("minimal").unwrap();
    assert!(m.standby, "standby defaults to true");
    assert!(m.drill_schedule.is_none());
    assert_eq!(m.overlay_dir, PathBuf::from("/var/lib/lifeboat/overlays"));
    assert!(m.network_map.is_empty() && m.vms.is_empty());
    assert!(c.plan("nope").is_none());
}

#[test]
fn overlay_dir_defaults_under_the_daemons_state_dir() {
    let text = "[daemon]\nstate_dir = \"/srv/lb\"\n[[repository]]\nname = \"r\"\nurl = \"/r\"\n\
                [[plan]]\nname = \"p\"\nrepository = \"r\"\nrto = \"1h\"\n[[plan.boot_group]]\nvms = [\"a\"]\n";
    let c = parse_config(text, "lb.toml").unwrap();
    assert_eq!(c.plans[0].overlay_dir, PathBuf::from("/srv/lb/overlays"));
}

/// `FULL` with `from` replaced by `to` (which must occur exactly once).
fn with(from: &str, to: &str) -> String {
    assert_eq!(
        FULL.matches(from).count(),
        1,
        "{from:?} must be unique in FULL"
    );
    FULL.replacen(from, to, 1)
}

/// 1-based line in `text` of the first occurrence of `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    let at = text
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not in the text"));
    text[..at].matches('\n').count() + 1
}

#[test]
fn each_mistake_names_its_line_key_and_fix() {
    // (replace this, with this, the key named, words the message holds, text on the reported line)
    let cases: &[(&str, &str, &str, &str, &str)] = &[
        (
            "firmware = \"uefi\"",
            "firmware = \"efi\"",
            "group.vm.firmware",
            "\"bios\", \"uefi\"",
            "firmware",
        ),
        (
            "cpus = 2\n",
            "cpus = 0\n",
            "group.vm.cpus",
            "outside 1..=1024",
            "cpus = 0",
        ),
        (
            "memory = \"2GiB\"",
            "memory = \"2GB\"",
            "group.vm.memory",
            "unknown unit",
            "memory = \"2GB\"",
        ),
        (
            "memory = \"2GiB\"",
            "memory = \"8MiB\"",
            "group.vm.memory",
            "less than 16MiB",
            "memory = \"8MiB\"",
        ),
        (
            "libvirt_xml = \"/etc",
            "libvirt_xml = \"etc",
            "group.vm.libvirt_xml",
            "relative path",
            "libvirt_xml",
        ),
        (
            "bus = \"scsi\"",
            "bus = \"nvme\"",
            "group.vm.disk.bus",
            "\"virtio\", \"ide\", \"sata\", \"scsi\"",
            "bus =",
        ),
        (
            "mac = \"52:54:00:AB:34:56\"",
            "mac = \"52:54:00:AB:34\"",
            "group.vm.nic.mac",
            "not a MAC",
            "mac =",
        ),
        (
            "mac = \"52:54:00:AB:34:56\"",
            "mac = \"01:54:00:AB:34:56\"",
            "group.vm.nic.mac",
            "multicast",
            "mac =",
        ),
        (
            "kind = \"bridge\"",
            "kind = \"macvtap\"",
            "network.kind",
            "\"bridge\", \"tap\", \"user\"",
            "macvtap",
        ),
        (
            "bridge = \"br-dr\"",
            "bridge = \"br-dr\"\ntap = \"t\"",
            "network.tap",
            "no effect with kind",
            "tap = \"t\"",
        ),
        (
            "bridge = \"br-dr\"",
            "",
            "network.kind",
            "needs bridge =",
            "kind = \"bridge\"",
        ),
        (
            "tap = \"tap0\"",
            "",
            "network.kind",
            "needs tap =",
            "kind = \"tap\"",
        ),
        (
            "[[plan]]\nname = \"erp\"",
            "[[network]]\nname = \"dr-lan\"\nkind = \"user\"\n[[plan]]\nname = \"erp\"",
            "network.name",
            "duplicate network name \"dr-lan\" (first used on line 37)",
            "name = \"dr-lan\"\nkind = \"user\"",
        ),
        (
            "name = \"minimal\"",
            "name = \"erp\"",
            "plan.name",
            "duplicate plan name",
            "name = \"erp\"\nrepository = \"dr-site\"\nrto = \"1h\"",
        ),
        (
            "\"prod-lan\" = \"dr-lan\"",
            "\"prod-lan\" = \"dr-wan\"",
            "plan.network_map",
            "unknown network \"dr-wan\"",
            "\"dr-wan\"",
        ),
        (
            "\"prod-lan\" = \"drill-isolated\"",
            "\"prod-lan\" = \"dr-lan\" # drill on prod",
            "plan.test_network_map",
            "not isolated",
            "# drill on prod",
        ),
        (
            "\"backup-lan\" = \"drill-tap\"",
            "\"backup-lan\" = \"nowhere\"",
            "plan.test_network_map",
            "unknown network",
            "nowhere",
        ),
        (
            "vms = [\"app01\", \"web01\"]",
            "vms = [\"app01\", \"web01\", \"db01\"]",
            "plan.boot_group.vms",
            "duplicate plan VM name \"db01\" (first used on line 66)",
            "\"web01\", \"db01\"",
        ),
        (
            "vms = [\"app01\", \"web01\"]",
            "vms = [\"app01\", \"web01\"]\n[[plan.boot_group]]\nvms = []",
            "plan.boot_group.vms",
            "boot group 3 is empty",
            "[[plan.boot_group]]\nvms = []",
        ),
        (
            "name = \"web01\"\n\n[[plan]]",
            "name = \"web02\"\n\n[[plan]]",
            "plan.vm.name",
            "in no boot group",
            "name = \"web02\"",
        ),
        (
            "repository = \"dr-site\"\nstandby",
            "repository = \"dr-sight\"\nstandby",
            "plan.repository",
            "unknown repository \"dr-sight\"",
            "dr-sight",
        ),
        (
            "console = \"login:\"",
            "console = \"login(\"",
            "plan.vm.health.console",
            "not a valid regular expression",
            "login(",
        ),
        (
            "tcp = 5432",
            "tcp = 70000",
            "plan.vm.health.tcp",
            "not a port",
            "tcp = 70000",
        ),
        (
            "rto = \"15m\"",
            "rto = \"15 minutes\"",
            "plan.rto",
            "unknown unit",
            "15 minutes",
        ),
        (
            "timeout = \"5m\"",
            "timeout = \"5\"",
            "plan.vm.timeout",
            "number without a unit",
            "timeout = \"5\"",
        ),
        (
            "drill_schedule = \"0 2 1 */3 *\"",
            "drill_schedule = \"quarterly\"",
            "plan.drill_schedule",
            "",
            "quarterly",
        ),
        (
            "timezone = \"Europe/Berlin\"",
            "timezone = \"Europe/Bonn\"",
            "plan.timezone",
            "",
            "Europe/Bonn",
        ),
        (
            "overlay_dir = \"/var",
            "overlay_dir = \"var",
            "plan.overlay_dir",
            "relative path",
            "overlay_dir",
        ),
        (
            "pre_script = \"/etc",
            "pre_script = \"etc",
            "plan.pre_script",
            "relative path",
            "pre_script",
        ),
        (
            "memory = \"8GiB\"",
            "memory = \"lots\"",
            "plan.vm.memory",
            "not a size",
            "lots",
        ),
    ];
    for (from, to, key, words, on_line) in cases {
        let text = with(from, to);
        let err = parse_config(&text, "lb.toml").unwrap_err();
        let shown = err.to_string();
        assert_eq!(err.problems.len(), 1, "{to}: {shown}");
        let p = &err.problems[0];
        assert_eq!(p.key, *key, "{to}: {shown}");
        assert!(p.message.contains(words), "{to}: {shown}");
        assert_eq!(p.line, line_of(&text, on_line), "{to}: {shown}");
    }
}

#[test]
fn a_plan_without_boot_groups_is_refused_and_its_vms_need_no_local_group() {
    let base = "[[repository]]\nname = \"r\"\nurl = \"/r\"\n[[plan]]\nname = \"p\"\nrepository = \"r\"\nrto = \"1h\"\n";
    let err = parse_config(base, "lb.toml").unwrap_err();
    assert_eq!(err.problems.len(), 1, "{err}");
    assert_eq!(
        (err.problems[0].key.as_str(), err.problems[0].line),
        ("plan.boot_group", 4)
    );
    assert!(err.problems[0].message.contains("no boot groups"), "{err}");
    // The secondary site's file: a plan of VMs no [[group]] here protects.
    let ok = format!("{base}[[plan.boot_group]]\nvms = [\"elsewhere01\"]\n");
    assert!(parse_config(&ok, "lb.toml").is_ok());
}

#[test]
fn unknown_keys_in_the_new_tables_are_refused() {
    for (from, to) in [
        (
            "isolated = true\n[[network]]",
            "isolatd = true\n[[network]]",
        ),
        ("standby = false", "standbye = false"),
        ("guest_agent = true", "guest_agnet = true"),
        ("model = \"e1000\"", "modle = \"e1000\""),
    ] {
        let err = parse_config(&with(from, to), "lb.toml").unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{to}: {err}");
    }
}

/// (schedule, last drill, now, expected state, words in the reason)
type DrillCase<'a> = (
    Option<&'a Schedule>,
    Option<LastDrill>,
    &'a str,
    DrillState,
    &'a str,
);

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

#[test]
fn drill_state_follows_the_last_drill_the_schedule_and_the_rto() {
    // Quarterly, 02:00 UTC on the 1st: after a drill on 2026-01-01 the next is due
    // 2026-04-01 02:00, overdue from 2026-04-02 02:00.
    let quarterly = Schedule::new("0 2 1 */3 *", "UTC").unwrap();
    let drill = |passed, rto| LastDrill {
        at: t("2026-01-01T02:10:00Z"),
        passed,
        measured_rto: rto,
    };
    let rto = 15 * 60;
    // (schedule, last drill, now, state, words in the reason)
    let cases: &[DrillCase] = &[
        (
            Some(&quarterly),
            None,
            "2026-01-02T00:00:00Z",
            DrillState::AtRisk,
            "never drilled",
        ),
        (
            None,
            None,
            "2026-01-02T00:00:00Z",
            DrillState::AtRisk,
            "never drilled",
        ),
        (
            Some(&quarterly),
            Some(drill(true, Some(600))),
            "2026-02-01T00:00:00Z",
            DrillState::Ok,
            "passed in 10m",
        ),
        (
            Some(&quarterly),
            Some(drill(true, None)),
            "2026-02-01T00:00:00Z",
            DrillState::Ok,
            "passed",
        ),
        (
            Some(&quarterly),
            Some(drill(false, None)),
            "2026-01-01T03:00:00Z",
            DrillState::AtRisk,
            "failed",
        ),
        (
            Some(&quarterly),
            Some(drill(true, Some(901))),
            "2026-01-01T03:00:00Z",
            DrillState::AtRisk,
            "over the RTO target of 15m",
        ),
        (
            Some(&quarterly),
            Some(drill(true, Some(900))),
            "2026-01-01T03:00:00Z",
            DrillState::Ok,
            "passed in 15m",
        ),
        // Due but within the day of grace.
        (
            Some(&quarterly),
            Some(drill(true, Some(600))),
            "2026-04-02T01:59:00Z",
            DrillState::Ok,
            "passed",
        ),
        (
            Some(&quarterly),
            Some(drill(true, Some(600))),
            "2026-04-02T02:01:00Z",
            DrillState::AtRisk,
            "overdue: one was due 2026-04-01 02:00",
        ),
        // No schedule: a passed drill never goes overdue.
        (
            None,
            Some(drill(true, Some(600))),
            "2030-01-01T00:00:00Z",
            DrillState::Ok,
            "passed",
        ),
    ];
    for (schedule, last, now, state, words) in cases {
        let a = assess_drill(*schedule, rto, last.as_ref(), t(now));
        assert_eq!(a.state, *state, "{now} {last:?}: {}", a.reason);
        assert!(a.reason.contains(words), "{now} {last:?}: {}", a.reason);
    }
}
