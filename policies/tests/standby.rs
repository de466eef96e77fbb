//! `standby_dir`, `standby_keep`, `standby_schedule` of a `[[repository]]`: the daemon's
//! warm standby job. Each case is a repository table and what parsing must say.

use std::path::PathBuf;

use lifeboat_policies::config::standby::DEFAULT_STANDBY_KEEP;
use lifeboat_policies::parse_config;

fn repository(extra: &str) -> String {
    format!("[[repository]]\nname = \"dr\"\nurl = \"/srv/replica\"\n{extra}\n")
}

#[test]
fn a_standby_needs_a_dir_and_a_schedule_and_keeps_three_points_by_default() {
    let c = parse_config(
        &repository(
            "standby_dir = \"/var/lib/lifeboat/standby\"\nstandby_schedule = \"*/15 * * * *\"",
        ),
        "lb.toml",
    )
    .unwrap();
    let s = c.repositories[0].standby.as_ref().unwrap();
    assert_eq!(s.dir, PathBuf::from("/var/lib/lifeboat/standby"));
    assert_eq!(s.keep, DEFAULT_STANDBY_KEEP);
    let plain = parse_config(&repository(""), "lb.toml").unwrap();
    assert!(plain.repositories[0].standby.is_none());
}

#[test]
fn bad_standby_settings_name_the_line_key_and_fix() {
    // (the repository table's extra lines, the key named, words the message must hold)
    let cases: &[(&str, &str, &str)] = &[
        (
            "standby_dir = \"/var/lib/lifeboat/standby\"",
            "repository.standby_dir",
            "needs standby_schedule",
        ),
        (
            "standby_dir = \"standby\"\nstandby_schedule = \"0 * * * *\"",
            "repository.standby_dir",
            "relative path",
        ),
        (
            "standby_dir = \"/s\"\nstandby_keep = 0\nstandby_schedule = \"0 * * * *\"",
            "repository.standby_keep",
            "outside 1..=64",
        ),
        (
            "standby_dir = \"/s\"\nstandby_schedule = \"every hour\"",
            "repository.standby_schedule",
            "",
        ),
        (
            "standby_keep = 3",
            "repository.standby_keep",
            "without standby_dir",
        ),
    ];
    for (extra, key, words) in cases {
        let err = parse_config(&repository(extra), "lb.toml").unwrap_err();
        let text = err.to_string();
        assert_eq!(err.problems.len(), 1, "{extra}: {text}");
        assert!(
            text.contains(key) && text.contains(words),
            "{extra}: {text}"
        );
        assert!(err.problems[0].line >= 4, "{extra}: {text}");
    }
}
