//! Configuration parsing: a full valid file, and every validation error naming the
//! file, line, column and key.

use std::path::PathBuf;

use lifeboat_policies::config::DiskSource;
use lifeboat_policies::parse_config;

const GOOD: &str = r#"
[[repository]]
name = "onsite"
url = "s3://backups/lifeboat?endpoint=http://minio:9000"
immutability = "30d"

[[group]]
name = "prod"
repository = "onsite"
schedule = "0 1 * * *"
timezone = "Europe/Berlin"
rpo = "24h"
retention = { keep_daily = 14, keep_weekly = 8, keep_monthly = 12, keep_yearly = 3, keep_within = "2d" }

[[group.vm]]
name = "web01"
[[group.vm.disk]]
image = "/var/lib/images/web01-root.qcow2"
[[group.vm.disk]]
qmp = "/run/qemu/web01.qmp"
drive = "drive-virtio1"
[[group.vm.disk]]
name = "scratch"
nbd = "nbd://10.0.0.5:10809/scratch"
"#;

#[test]
fn valid_config_is_read_completely() {
    let c = parse_config(GOOD, "lifeboat.toml").unwrap();
    assert_eq!(c.repositories.len(), 1);
    assert_eq!(c.repositories[0].immutability, Some(30 * 86_400));
    let g = &c.groups[0];
    assert_eq!((g.name.as_str(), g.repository.as_str()), ("prod", "onsite"));
    assert_eq!(g.timezone, lifeboat_policies::Tz::Europe__Berlin);
    assert_eq!(g.rpo, Some(86_400));
    assert_eq!(g.retention.keep_daily, 14);
    assert_eq!(g.retention.keep_within, Some(2 * 86_400));
    let disks = &g.vms[0].disks;
    let names: Vec<&str> = disks.iter().map(|d| d.name.as_str()).collect();
    // Default disk names match `lifeboat backup`: image file stem, else the drive.
    assert_eq!(names, ["web01-root", "drive-virtio1", "scratch"]);
    assert_eq!(
        disks[0].source,
        DiskSource::Image(PathBuf::from("/var/lib/images/web01-root.qcow2"))
    );
    assert!(matches!(&disks[1].source, DiskSource::Qmp { drive, .. } if drive == "drive-virtio1"));
    assert!(matches!(&disks[2].source, DiskSource::Nbd(u) if u.starts_with("nbd://")));
}

#[test]
fn empty_file_is_an_empty_config() {
    let c = parse_config("", "x.toml").unwrap();
    assert!(c.repositories.is_empty() && c.groups.is_empty());
}

/// A group around one replaceable line, so each case states only what it breaks.
fn group_with(line: &str) -> String {
    format!(
        r#"[[repository]]
name = "onsite"
url = "/srv/backups"

[[group]]
name = "prod"
repository = "onsite"
schedule = "0 1 * * *"
timezone = "UTC"
retention = {{ keep_last = 3 }}
{line}
[[group.vm]]
name = "web01"
[[group.vm.disk]]
image = "/images/web01.img"
"#
    )
}

#[test]
fn every_error_names_file_line_column_and_key() {
    // (config, line, column, key, text the message must contain)
    let cases: Vec<(String, usize, usize, &str, &str)> = vec![
        (
            GOOD.replace("repository = \"onsite\"", "repository = \"offsite\""),
            9,
            14,
            "group.repository",
            "unknown repository \"offsite\"; use one of \"onsite\"",
        ),
        (
            GOOD.replace("0 1 * * *", "0 25 * * *"),
            10,
            12,
            "group.schedule",
            "not a valid cron expression",
        ),
        (
            GOOD.replace("Europe/Berlin", "Europe/Berln"),
            11,
            12,
            "group.timezone",
            "is not an IANA time zone",
        ),
        (
            GOOD.replace("\"24h\"", "\"24\""),
            12,
            7,
            "group.rpo",
            "number without a unit",
        ),
        (
            GOOD.replace("\"30d\"", "\"1y\""),
            5,
            16,
            "repository.immutability",
            "unknown unit 'y'",
        ),
        (
            GOOD.replace("keep_within = \"2d\"", "keep_within = \"2days\""),
            13,
            99,
            "group.retention.keep_within",
            "unknown unit 'a'",
        ),
        (
            group_with("").replace("keep_last = 3", "keep_daily = 0"),
            10,
            13,
            "group.retention",
            "keeps nothing",
        ),
        (
            group_with("").replace("image = \"/images/web01.img\"", "name = \"root\""),
            14,
            1,
            "group.vm.disk",
            "disk 1: no source; give exactly one source",
        ),
        (
            group_with("").replace(
                "image = \"/images/web01.img\"",
                "image = \"/a.img\"\nnbd = \"nbd://h/e\"",
            ),
            14,
            1,
            "group.vm.disk",
            "2 sources (image, nbd)",
        ),
        (
            group_with("").replace("image = \"/images/web01.img\"", "qmp = \"/run/q.qmp\""),
            15,
            7,
            "group.vm.disk.qmp",
            "qmp needs drive",
        ),
        (
            group_with("").replace("image = \"/images/web01.img\"", "nbd = \"nbd://h/e\""),
            14,
            1,
            "group.vm.disk.name",
            "an NBD disk needs name",
        ),
        (
            format!(
                "{}[[group.vm.disk]]\nimage = \"/other/web01.img\"\n",
                group_with("")
            ),
            16,
            1,
            "group.vm.disk.name",
            "duplicate disk name \"web01\" (first used on line 14)",
        ),
        (
            format!(
                "{}[[group.vm]]\nname = \"web01\"\n[[group.vm.disk]]\nimage = \"/b.img\"\n",
                group_with("")
            ),
            17,
            8,
            "group.vm.name",
            "duplicate VM name \"web01\" (first used on line 13)",
        ),
        (
            format!(
                "{}[[repository]]\nname = \"onsite\"\nurl = \"/x\"\n",
                group_with("")
            ),
            17,
            8,
            "repository.name",
            "duplicate repository name \"onsite\" (first used on line 2)",
        ),
        (
            format!("{}[[group.vm]]\nname = \"db01\"\n", group_with("")),
            16,
            1,
            "group.vm.disk",
            "VM \"db01\": no disks",
        ),
        (
            group_with("keep_daily = 7"),
            11,
            1,
            "keep_daily",
            "unknown field `keep_daily`",
        ),
        (
            group_with("rpo = 24"),
            11,
            7,
            "rpo",
            "invalid type: integer `24`, expected a string",
        ),
        (
            group_with("").replace("name = \"prod\"\n", ""),
            5,
            1,
            "",
            "missing field `name`",
        ),
        (
            group_with("rpo = \"24h"),
            11,
            11,
            "rpo",
            "invalid basic string",
        ),
    ];
    for (text, line, column, key, needle) in cases {
        let err = parse_config(&text, "/etc/lifeboat/lifeboat.toml")
            .expect_err(&format!("should be refused:\n{text}"));
        assert_eq!(err.problems.len(), 1, "one problem expected: {err}");
        let p = &err.problems[0];
        assert_eq!(
            (p.line, p.column, p.key.as_str()),
            (line, column, key),
            "{err}"
        );
        let shown = err.to_string();
        let prefix = format!("/etc/lifeboat/lifeboat.toml:{line}:{column}: ");
        assert!(shown.starts_with(&prefix), "{shown}");
        assert!(
            shown.contains(needle),
            "{shown:?} should contain {needle:?}"
        );
    }
}

#[test]
fn all_problems_are_reported_in_file_order() {
    let text = GOOD
        .replace("\"30d\"", "\"30\"")
        .replace("Europe/Berlin", "Mars/Olympus")
        .replace("image = \"/var/lib/images/web01-root.qcow2\"", "");
    let err = parse_config(&text, "lb.toml").unwrap_err();
    let lines: Vec<usize> = err.problems.iter().map(|p| p.line).collect();
    assert_eq!(lines, [5, 11, 17], "{err}");
    assert_eq!(err.to_string().lines().count(), 3);
}

#[test]
fn daemon_keys_are_read_with_defaults() {
    let c = parse_config(GOOD, "lifeboat.toml").unwrap();
    let g = &c.groups[0];
    // No forget_schedule: retention runs on the backup schedule.
    assert_eq!(g.forget_schedule.expression(), "0 1 * * *");
    assert_eq!(c.repositories[0].password_file, None);
    assert!(c.repositories[0].prune_schedule.is_none());
    assert_eq!(c.daemon, lifeboat_policies::DaemonSettings::default());

    let text = group_with("forget_schedule = \"*/10 * * * * *\"").replace(
        "url = \"/srv/backups\"",
        "url = \"/srv/backups\"\npassword_file = \"/etc/lb.pass\"\nprune_schedule = \"0 3 * * 0\"\ntimezone = \"Europe/Berlin\"",
    ) + "[daemon]\nstate_dir = \"/srv/lb-state\"\nmax_concurrent_jobs = 3\nmetrics_listen = \"\"\nretries = 0\nretry_delay = \"5s\"\nstop_timeout = \"1h\"\n";
    let c = parse_config(&text, "x.toml").unwrap();
    let r = &c.repositories[0];
    assert_eq!(r.password_file, Some(PathBuf::from("/etc/lb.pass")));
    let prune = r.prune_schedule.as_ref().unwrap();
    assert_eq!(prune.timezone(), lifeboat_policies::Tz::Europe__Berlin);
    assert_eq!(c.groups[0].forget_schedule.expression(), "*/10 * * * * *");
    let d = &c.daemon;
    assert_eq!(d.state_dir, PathBuf::from("/srv/lb-state"));
    assert_eq!(
        (d.max_concurrent_jobs, d.metrics_listen, d.retries),
        (3, None, 0)
    );
    assert_eq!((d.retry_delay, d.stop_timeout), (5, 3_600));
}

#[test]
fn daemon_key_errors_name_line_and_key() {
    let base = group_with("");
    // (text, line, column, key, message part)
    let cases = [
        (
            base.replace(
                "retention = {",
                "forget_schedule = \"61 * * * *\"\nretention = {",
            ),
            10,
            19,
            "group.forget_schedule",
            "not a valid cron expression",
        ),
        (
            base.replace(
                "url = \"/srv/backups\"",
                "url = \"/srv/backups\"\npassword_file = \"pass.txt\"",
            ),
            4,
            17,
            "repository.password_file",
            "is a relative path; write an absolute one",
        ),
        (
            base.replace(
                "url = \"/srv/backups\"",
                "url = \"/srv/backups\"\nprune_schedule = \"sometimes\"",
            ),
            4,
            18,
            "repository.prune_schedule",
            "repository \"onsite\": \"sometimes\" is not a valid cron expression",
        ),
        (
            format!("{base}[daemon]\nmax_concurrent_jobs = 0\n"),
            17,
            23,
            "daemon.max_concurrent_jobs",
            "0 is out of range; write a number from 1 to 64",
        ),
        (
            format!("{base}[daemon]\nmetrics_listen = \"localhost\"\n"),
            17,
            18,
            "daemon.metrics_listen",
            "not an address to listen on",
        ),
        (
            format!("{base}[daemon]\nstop_timeout = \"10\"\n"),
            17,
            16,
            "daemon.stop_timeout",
            "number without a unit",
        ),
        (
            format!("{base}[daemon]\nworkers = 4\n"),
            17,
            1,
            "workers",
            "unknown field `workers`",
        ),
    ];
    for (text, line, column, key, needle) in cases {
        let err = parse_config(&text, "lb.toml").expect_err(&text);
        assert_eq!(err.problems.len(), 1, "{err}");
        let p = &err.problems[0];
        assert_eq!(
            (p.line, p.column, p.key.as_str()),
            (line, column, key),
            "{err}"
        );
        assert!(
            err.to_string().contains(needle),
            "{err} should contain {needle:?}"
        );
    }
}

/// The example shipped for operators must stay valid as the format evolves.
#[test]
fn shipped_example_config_parses() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/lifeboat.example.toml"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let c = parse_config(&text, path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.repositories.len(), 3);
    assert_eq!(c.groups.len(), 2);
    let r = &c.replications[0];
    assert_eq!((r.from.as_str(), r.to.as_str()), ("onsite", "dr-site"));
    assert_eq!(r.vm_names(), ["web01", "db01"]);
    assert!(c.repositories[0].prune_schedule.is_some());
    assert_eq!(c.daemon.max_concurrent_jobs, 2);
    let vms: usize = c.groups.iter().map(|g| g.vms.len()).sum();
    assert_eq!(vms, 3);
    let plan = c.plan("erp").unwrap();
    assert_eq!(plan.test_network_for("prod-lan"), Some("drill-net"));
    assert!(plan.drill_schedule.is_some());
    let m = c.metadata_backup.as_ref().unwrap();
    assert_eq!(m.schedule.expression(), "0 */12 * * *");
    assert_eq!(m.targets.len(), 1);
}
