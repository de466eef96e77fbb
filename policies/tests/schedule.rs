//! Next run times of cron schedules in a time zone, across both DST changes.

use chrono::{DateTime, Utc};
use lifeboat_policies::Schedule;

fn utc(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn runs(expr: &str, tz: &str, after: &str, n: usize) -> Vec<String> {
    Schedule::new(expr, tz)
        .unwrap()
        .upcoming(utc(after), n)
        .iter()
        .map(|t| t.format("%Y-%m-%dT%H:%MZ").to_string())
        .collect()
}

#[test]
fn next_runs_table() {
    // (cron, zone, after, expected runs in UTC)
    let cases: &[(&str, &str, &str, &[&str])] = &[
        // 01:00 Berlin: 00:00 UTC in winter, 23:00 UTC the day before in summer.
        (
            "0 1 * * *",
            "Europe/Berlin",
            "2026-03-28T12:00:00Z",
            &[
                "2026-03-29T00:00Z",
                "2026-03-29T23:00Z",
                "2026-03-30T23:00Z",
            ],
        ),
        (
            "0 1 * * *",
            "Europe/Berlin",
            "2026-10-24T12:00:00Z",
            &["2026-10-24T23:00Z", "2026-10-26T00:00Z"],
        ),
        // 02:30 does not exist on 29 March: the run is not lost, it happens right after the gap.
        (
            "30 2 * * *",
            "Europe/Berlin",
            "2026-03-28T12:00:00Z",
            &["2026-03-29T01:00Z", "2026-03-30T00:30Z"],
        ),
        // An interval job keeps its real interval through the repeated hour.
        (
            "*/30 * * * *",
            "Europe/Berlin",
            "2026-10-25T00:15:00Z",
            &[
                "2026-10-25T00:30Z",
                "2026-10-25T01:00Z",
                "2026-10-25T01:30Z",
                "2026-10-25T02:00Z",
            ],
        ),
        // 02:30 happens twice on 25 October: the job runs once, at the first.
        (
            "30 2 * * *",
            "Europe/Berlin",
            "2026-10-24T12:00:00Z",
            &["2026-10-25T00:30Z", "2026-10-26T01:30Z"],
        ),
        // Hourly jobs run every real hour: 3 runs in the 3 real hours 00–03 UTC.
        (
            "0 * * * *",
            "Europe/Berlin",
            "2026-10-24T23:30:00Z",
            &[
                "2026-10-25T00:00Z",
                "2026-10-25T01:00Z",
                "2026-10-25T02:00Z",
            ],
        ),
        // Weekly on Sunday 03:00 New York, across the US change (8 March 2026).
        (
            "0 3 * * 0",
            "America/New_York",
            "2026-03-01T12:00:00Z",
            &["2026-03-08T07:00Z", "2026-03-15T07:00Z"],
        ),
        // Month ends: "last day" via day 31 skips short months.
        (
            "0 0 31 * *",
            "UTC",
            "2026-01-31T00:00:00Z",
            &["2026-03-31T00:00Z", "2026-05-31T00:00Z"],
        ),
    ];
    for (expr, tz, after, want) in cases {
        assert_eq!(
            runs(expr, tz, after, want.len()),
            *want,
            "{expr} in {tz} after {after}"
        );
    }
}

#[test]
fn bad_input_is_explained() {
    let e = Schedule::new("0 1 * *", "UTC").unwrap_err();
    assert!(
        e.contains("not a valid cron expression") && e.contains("\"0 1 * * *\""),
        "{e}"
    );
    let e = Schedule::new("0 1 * * *", "europe/berlin").unwrap_err();
    assert!(e.contains("not an IANA time zone"), "{e}");
}
