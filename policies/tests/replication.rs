//! `[[replication]]` tables: VM selection, when they run, and every mistake named
//! with file, line, column and key.

use lifeboat_policies::config::{ReplicatedVm, parse_rate};
use lifeboat_policies::parse_config;

/// Two groups into "onsite", one into "lab", and a replication whose keys are `keys`.
fn with(keys: &str) -> String {
    format!(
        r#"[[repository]]
name = "onsite"
url = "/srv/onsite"
[[repository]]
name = "dr"
url = "/srv/dr"
[[repository]]
name = "lab"
url = "/srv/lab"

[[group]]
name = "prod"
repository = "onsite"
schedule = "0 1 * * *"
timezone = "UTC"
retention = {{ keep_last = 3 }}
[[group.vm]]
name = "web01"
[[group.vm.disk]]
image = "/i/web01.img"
[[group.vm]]
name = "db01"
[[group.vm.disk]]
image = "/i/db01.img"

[[group]]
name = "ops"
repository = "onsite"
schedule = "0 2 * * *"
timezone = "UTC"
retention = {{ keep_last = 3 }}
[[group.vm]]
name = "mon01"
[[group.vm.disk]]
image = "/i/mon01.img"

[[group]]
name = "test"
repository = "lab"
schedule = "0 3 * * *"
timezone = "UTC"
retention = {{ keep_last = 3 }}
[[group.vm]]
name = "ci01"
[[group.vm.disk]]
image = "/i/ci01.img"

[[replication]]
{keys}
"#
    )
}

/// The line `[[replication]]` is on in [`with`] (table problems point there); the
/// keys follow it.
const TABLE_LINE: usize = 48;

fn vms(v: &[ReplicatedVm]) -> Vec<String> {
    v.iter().map(|v| format!("{}/{}", v.group, v.vm)).collect()
}

#[test]
fn replications_select_vms_and_keep_their_settings() {
    // (keys, selected VMs)
    let cases: [(&str, &[&str]); 4] = [
        (
            "from = \"onsite\"\nto = \"dr\"\nafter_backup = true",
            &["prod/web01", "prod/db01", "ops/mon01"],
        ),
        (
            "from = \"onsite\"\nto = \"dr\"\nafter_backup = true\ngroups = [\"ops\"]",
            &["ops/mon01"],
        ),
        (
            "from = \"onsite\"\nto = \"dr\"\nafter_backup = true\nvms = [\"db01\"]",
            &["prod/db01"],
        ),
        (
            "from = \"onsite\"\nto = \"dr\"\nafter_backup = true\nvms = [\"db01\", \"mon01\"]\ngroups = [\"prod\"]",
            &["prod/web01", "prod/db01", "ops/mon01"],
        ),
    ];
    for (keys, want) in cases {
        let c = parse_config(&with(keys), "x.toml").unwrap_or_else(|e| panic!("{e}"));
        let mut got = vms(&c.replications[0].vms);
        got.sort();
        let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(got, want, "{keys}");
    }
    let text = with(
        "from = \"onsite\"\nto = \"dr\"\nschedule = \"0 */6 * * *\"\ntimezone = \"Europe/Berlin\"\nlimit_rate = \"50MiB/s\"\nreplication_rpo = \"7h\"",
    );
    let c = parse_config(&text, "x.toml").unwrap();
    let r = &c.replications[0];
    assert_eq!((r.from.as_str(), r.to.as_str()), ("onsite", "dr"));
    assert_eq!(r.name(), "onsite->dr");
    assert!(!r.after_backup);
    let s = r.schedule.as_ref().unwrap();
    assert_eq!(
        (s.expression(), s.timezone()),
        ("0 */6 * * *", lifeboat_policies::Tz::Europe__Berlin)
    );
    assert_eq!(r.limit_rate.as_deref(), Some("50MiB/s"));
    assert_eq!(r.rpo, Some(7 * 3600));
    assert_eq!(r.vm_names(), ["web01", "db01", "mon01"]);
    assert!(r.covers("ops", "mon01") && !r.covers("test", "ci01"));
    assert_eq!(c.replications_of("prod", "web01").count(), 1);
    assert_eq!(c.replications_of("test", "ci01").count(), 0);
}

#[test]
fn replication_errors_name_line_column_and_key() {
    let l = TABLE_LINE;
    // (keys, line, column, key, message part)
    let cases: Vec<(&str, usize, usize, &str, &str)> = vec![
        (
            "from = \"onsite\"\nto = \"offsite\"\nafter_backup = true",
            l + 2,
            6,
            "replication.to",
            "unknown repository \"offsite\"; use one of [\"onsite\", \"dr\", \"lab\"]",
        ),
        (
            "from = \"primary\"\nto = \"dr\"\nafter_backup = true\nvms = [\"web01\"]",
            l + 1,
            8,
            "replication.from",
            "unknown repository \"primary\"",
        ),
        (
            "from = \"onsite\"\nto = \"onsite\"\nafter_backup = true",
            l + 2,
            6,
            "replication.to",
            "the destination is the source repository",
        ),
        (
            "from = \"onsite\"\nto = \"dr\"",
            l,
            1,
            "replication",
            "never runs; add after_backup = true",
        ),
        (
            "from = \"onsite\"\nto = \"dr\"\nafter_backup = false",
            l,
            1,
            "replication",
            "never runs",
        ),
        (
            "from = \"onsite\"\nto = \"dr\"\nschedule = \"0 25 * * *\"",
            l + 3,
            12,
            "replication.schedule",
            "replication \"onsite\" -> \"dr\": \"0 25 * * *\" is not a valid cron expression",
        ),
        (
            "from = \"onsite\"\nto = \"dr\"\nschedule = \"0 1 * * *\"\ntimezone = \"Mars/Base\"",
            l + 4,
            12,
            "replication.timezone",
            "is not an IANA time zone",
        ),
        (
            "from = \"onsite\"\nto = \"dr\"\nafter_backup = true\ngroups = [\"test\"]",
            l + 4,
            11,
            "replication.groups",
            "group \"test\" backs up into \"lab\", not \"onsite\"",
        ),
        (
            "from = \"onsite\"\nto = \"dr\"\nafter_backup = true\ngroups = [\"prd\"]",
            l + 4,
            11,
            "replication.groups",
            "group \"prd\" is not a [[group]] of this file",
        ),
        (
            "from = \"onsite\"\nto = \"dr\"\nafter_backup = true\nvms = [\"web01\", \"ci01\"]",
            l + 4,
            17,
            "replication.vms",
            "VM \"ci01\" is in no group backing up into \"onsite\"",
        ),
        (
            "from = \"dr\"\nto = \"onsite\"\nafter_backup = true",
            l + 1,
            8,
            "replication.from",
            "selects no VMs",
        ),
        (
            "from = \"onsite\"\nto = \"dr\"\nafter_backup = true\nlimit_rate = \"50Mbit/s\"",
            l + 4,
            14,
            "replication.limit_rate",
            "unknown unit \"Mbit\"",
        ),
        (
            "from = \"onsite\"\nto = \"dr\"\nafter_backup = true\nreplication_rpo = \"2\"",
            l + 4,
            19,
            "replication.replication_rpo",
            "number without a unit",
        ),
        (
            "from = \"onsite\"\nto = \"dr\"\nafter_backup = true\nrpo = \"2h\"",
            l + 4,
            1,
            "rpo",
            "unknown field `rpo`",
        ),
        (
            "from = \"onsite\"\nto = \"dr\"\nafter_backup = true\n[[replication]]\nfrom = \"onsite\"\nto = \"dr\"\nschedule = \"0 1 * * *\"",
            l + 4,
            1,
            "replication",
            "a second replication of the same pair (first on line 48); merge them",
        ),
    ];
    for (keys, line, column, key, needle) in cases {
        let text = with(keys);
        let err = parse_config(&text, "lb.toml").expect_err(keys);
        assert_eq!(err.problems.len(), 1, "{keys}: {err}");
        let p = &err.problems[0];
        assert_eq!(
            (p.line, p.column, p.key.as_str()),
            (line, column, key),
            "{keys}: {err}"
        );
        assert!(
            err.to_string().contains(needle),
            "{err} should contain {needle:?}"
        );
    }
}

#[test]
fn same_url_under_two_names_is_the_same_repository() {
    let text = with("from = \"onsite\"\nto = \"dr\"\nafter_backup = true")
        .replace("url = \"/srv/dr\"", "url = \"/srv/onsite/\"");
    let err = parse_config(&text, "lb.toml").unwrap_err();
    assert!(
        err.to_string().contains("the destination is the source"),
        "{err}"
    );
}

#[test]
fn rates_are_read() {
    // As `replicate --limit-rate` reads them: binary units, any case.
    let ok = [
        ("50MiB/s", 50 << 20),
        ("10MB/s", 10 << 20),
        ("512k", 512 << 10),
        ("1GiB/s", 1 << 30),
        (" 100B/s ", 100),
        ("65536", 65_536),
    ];
    for (text, want) in ok {
        assert_eq!(parse_rate(text), Ok(want), "{text}");
    }
    for (text, needle) in [
        ("MiB/s", "not a rate"),
        ("0MiB/s", "zero"),
        ("5TiB/s", "unknown unit"),
        ("99999999999999GiB", "too large"),
    ] {
        let e = parse_rate(text).unwrap_err();
        assert!(e.contains(needle), "{text}: {e}");
    }
}
