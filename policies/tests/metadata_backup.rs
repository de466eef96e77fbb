//! `[metadata_backup]`: the daemon's cloud-recovery backups. Each case is the table's
//! lines and what parsing must say.

use lifeboat_policies::config::PointLock;
use lifeboat_policies::config::metadata_backup::{
    DEFAULT_METADATA_KEEP_LAST, DEFAULT_METADATA_KEEP_WITHIN,
};
use lifeboat_policies::parse_config;

const RECIPIENT: &str = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";

fn table(extra: &str) -> String {
    format!(
        "[metadata_backup]\nrecipients = [\"{RECIPIENT}\"]\ntargets = [\"/mnt/offsite/meta\"]\n{extra}\n"
    )
}

#[test]
fn defaults_are_twelve_hourly_kept_a_week_locked_in_governance_mode() {
    let c = parse_config(&table(""), "lb.toml").unwrap();
    let m = c.metadata_backup.unwrap();
    assert_eq!(m.recipients, [RECIPIENT]);
    assert_eq!(m.targets, ["/mnt/offsite/meta"]);
    assert_eq!(m.schedule.expression(), "0 */12 * * *");
    assert_eq!(m.keep_within, DEFAULT_METADATA_KEEP_WITHIN);
    assert_eq!(m.keep_last, DEFAULT_METADATA_KEEP_LAST);
    assert_eq!(m.rpo, 24 * 3600, "twice the 12 h interval");
    assert_eq!(m.lock, PointLock::Governance);
    assert!(
        parse_config("", "lb.toml")
            .unwrap()
            .metadata_backup
            .is_none()
    );

    let c = parse_config(
        &table("schedule = \"*/5 * * * * *\"\nkeep_within = \"1h\"\nkeep_last = 1\nlock = \"off\""),
        "lb.toml",
    )
    .unwrap();
    let m = c.metadata_backup.unwrap();
    assert_eq!(m.rpo, 10, "a schedule in seconds gets an RPO in seconds");
    assert_eq!(
        (m.keep_within, m.keep_last, m.lock),
        (3600, 1, PointLock::Off)
    );
}

#[test]
fn bad_metadata_backup_settings_name_the_line_key_and_fix() {
    // (lines after [metadata_backup], the key named, words the message must hold)
    let target = "targets = [\"/m\"]";
    let cases: &[(String, &str, &str)] = &[
        (
            format!("recipients = []\n{target}"),
            "metadata_backup.recipients",
            "give 1 to 8",
        ),
        (
            format!("recipients = [\"AGE-SECRET-KEY-1XYZ\"]\n{target}"),
            "metadata_backup.recipients",
            "never the key file",
        ),
        (
            format!("recipients = [\"{RECIPIENT}\"]\ntargets = []"),
            "metadata_backup.targets",
            "at least one target",
        ),
        (
            format!("recipients = [\"{RECIPIENT}\"]\ntargets = [\"meta\"]"),
            "metadata_backup.targets",
            "absolute directory",
        ),
        (
            format!("recipients = [\"{RECIPIENT}\"]\n{target}\nkeep_last = 0"),
            "metadata_backup.keep_last",
            "at least the newest",
        ),
        (
            format!("recipients = [\"{RECIPIENT}\"]\n{target}\nlock = \"forever\""),
            "metadata_backup.lock",
            "\"compliance\"",
        ),
        (
            format!("recipients = [\"{RECIPIENT}\"]\n{target}\nschedule = \"twice a day\""),
            "metadata_backup.schedule",
            "",
        ),
        (
            format!("recipients = [\"{RECIPIENT}\"]\n{target}\nkeep_withn = \"7d\""),
            "keep_withn",
            "unknown field",
        ),
    ];
    for (lines, key, words) in cases {
        let text = format!("[metadata_backup]\n{lines}\n");
        let err = parse_config(&text, "lb.toml").unwrap_err();
        let message = err.to_string();
        assert_eq!(err.problems.len(), 1, "{lines}: {message}");
        assert!(
            message.contains(key) && message.contains(words),
            "{lines}: {message}"
        );
        assert!(err.problems[0].line >= 2, "{lines}: {message}");
    }
}
