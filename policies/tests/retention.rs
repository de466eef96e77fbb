//! Retention against hand-computed expectations: keep-last, ISO weeks (incl. week 53
//! and a week 1 that starts in December), month and year ends, time zones, both DST
//! changes in Europe/Berlin, keep-within and per-disk grouping.

use chrono::{DateTime, Utc};
use lifeboat_policies::{Retention, SnapshotRef, Tz, apply_retention};

fn utc(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn snaps(times: &[&str]) -> Vec<SnapshotRef> {
    times
        .iter()
        .map(|t| SnapshotRef {
            id: t.to_string(),
            vm: "web01".into(),
            disk: "root".into(),
            time: utc(t),
        })
        .collect()
}

/// `(id, reasons)` for every snapshot, newest first; forgotten ones have no reasons.
fn run(times: &[&str], rule: Retention, tz: Tz, now: &str) -> Vec<(String, Vec<String>)> {
    apply_retention(&snaps(times), &rule, utc(now), tz)
        .into_iter()
        .map(|d| {
            assert_eq!(d.keep, !d.reasons.is_empty());
            (d.snapshot.id, d.reasons)
        })
        .collect()
}

fn expect(rows: &[(&str, &[&str])]) -> Vec<(String, Vec<String>)> {
    rows.iter()
        .map(|(id, r)| (id.to_string(), r.iter().map(|s| s.to_string()).collect()))
        .collect()
}

const NOW: &str = "2030-01-01T00:00:00Z";
const BERLIN: Tz = Tz::Europe__Berlin;

struct Case {
    name: &'static str,
    times: &'static [&'static str],
    rule: Retention,
    tz: Tz,
    /// Newest first: (snapshot time, reasons it is kept; empty = forgotten).
    want: &'static [(&'static str, &'static [&'static str])],
}

fn rule(f: impl FnOnce(&mut Retention)) -> Retention {
    let mut r = Retention::default();
    f(&mut r);
    r
}

#[test]
fn retention_table() {
    let cases = vec![
        Case {
            name: "keep-last keeps the newest N",
            times: &[
                "2026-11-18T01:00:00Z",
                "2026-11-19T01:00:00Z",
                "2026-11-20T01:00:00Z",
                "2026-11-21T01:00:00Z",
            ],
            rule: rule(|r| r.keep_last = 3),
            tz: Tz::UTC,
            want: &[
                ("2026-11-21T01:00:00Z", &["last 3"]),
                ("2026-11-20T01:00:00Z", &["last 3"]),
                ("2026-11-19T01:00:00Z", &["last 3"]),
                ("2026-11-18T01:00:00Z", &[]),
            ],
        },
        Case {
            name: "daily in UTC: newest per day",
            times: &[
                "2026-11-18T13:00:00Z",
                "2026-11-19T01:00:00Z",
                "2026-11-20T01:00:00Z",
                "2026-11-20T23:30:00Z",
            ],
            rule: rule(|r| r.keep_daily = 2),
            tz: Tz::UTC,
            want: &[
                ("2026-11-20T23:30:00Z", &["daily 2026-11-20"]),
                ("2026-11-20T01:00:00Z", &[]),
                ("2026-11-19T01:00:00Z", &["daily 2026-11-19"]),
                ("2026-11-18T13:00:00Z", &[]),
            ],
        },
        Case {
            name: "daily in Berlin: 23:30 UTC is the next day",
            times: &[
                "2026-11-18T13:00:00Z",
                "2026-11-19T01:00:00Z",
                "2026-11-20T01:00:00Z",
                "2026-11-20T23:30:00Z",
            ],
            rule: rule(|r| r.keep_daily = 2),
            tz: BERLIN,
            want: &[
                ("2026-11-20T23:30:00Z", &["daily 2026-11-21"]),
                ("2026-11-20T01:00:00Z", &["daily 2026-11-20"]),
                ("2026-11-19T01:00:00Z", &[]),
                ("2026-11-18T13:00:00Z", &[]),
            ],
        },
        Case {
            name: "periods without snapshots do not count",
            times: &[
                "2026-11-01T12:00:00Z",
                "2026-11-10T12:00:00Z",
                "2026-11-20T12:00:00Z",
            ],
            rule: rule(|r| r.keep_daily = 3),
            tz: Tz::UTC,
            want: &[
                ("2026-11-20T12:00:00Z", &["daily 2026-11-20"]),
                ("2026-11-10T12:00:00Z", &["daily 2026-11-10"]),
                ("2026-11-01T12:00:00Z", &["daily 2026-11-01"]),
            ],
        },
        Case {
            // 2020 has 53 ISO weeks (28 Dec 2020 – 3 Jan 2021 is 2020-W53); 2025-W01
            // starts on Monday 30 December 2024.
            name: "ISO weeks: week 53 and a week 1 that starts in December",
            times: &[
                "2020-12-28T12:00:00Z",
                "2021-01-03T12:00:00Z",
                "2021-01-04T12:00:00Z",
                "2024-12-29T12:00:00Z",
                "2024-12-30T12:00:00Z",
                "2025-01-05T12:00:00Z",
            ],
            rule: rule(|r| r.keep_weekly = 10),
            tz: Tz::UTC,
            want: &[
                ("2025-01-05T12:00:00Z", &["weekly 2025-W01"]),
                ("2024-12-30T12:00:00Z", &[]),
                ("2024-12-29T12:00:00Z", &["weekly 2024-W52"]),
                ("2021-01-04T12:00:00Z", &["weekly 2021-W01"]),
                ("2021-01-03T12:00:00Z", &["weekly 2020-W53"]),
                ("2020-12-28T12:00:00Z", &[]),
            ],
        },
        Case {
            name: "ISO weeks: N limits the number of weeks",
            times: &[
                "2024-12-22T12:00:00Z",
                "2024-12-29T12:00:00Z",
                "2024-12-30T12:00:00Z",
            ],
            rule: rule(|r| r.keep_weekly = 1),
            tz: Tz::UTC,
            want: &[
                ("2024-12-30T12:00:00Z", &["weekly 2025-W01"]),
                ("2024-12-29T12:00:00Z", &[]),
                ("2024-12-22T12:00:00Z", &[]),
            ],
        },
        Case {
            // In Berlin 2025-12-31T23:30Z is already 00:30 on 1 January 2026.
            name: "month and year ends in Berlin",
            times: &[
                "2025-12-31T22:30:00Z",
                "2025-12-31T23:30:00Z",
                "2026-01-31T12:00:00Z",
                "2026-02-28T12:00:00Z",
                "2026-03-01T00:30:00Z",
            ],
            rule: rule(|r| {
                r.keep_monthly = 3;
                r.keep_yearly = 2;
            }),
            tz: BERLIN,
            want: &[
                ("2026-03-01T00:30:00Z", &["monthly 2026-03", "yearly 2026"]),
                ("2026-02-28T12:00:00Z", &["monthly 2026-02"]),
                ("2026-01-31T12:00:00Z", &["monthly 2026-01"]),
                ("2025-12-31T23:30:00Z", &[]),
                ("2025-12-31T22:30:00Z", &["yearly 2025"]),
            ],
        },
        Case {
            name: "month and year ends in UTC",
            times: &[
                "2025-12-31T22:30:00Z",
                "2025-12-31T23:30:00Z",
                "2026-01-31T12:00:00Z",
                "2026-02-28T12:00:00Z",
                "2026-03-01T00:30:00Z",
            ],
            rule: rule(|r| {
                r.keep_monthly = 3;
                r.keep_yearly = 2;
            }),
            tz: Tz::UTC,
            want: &[
                ("2026-03-01T00:30:00Z", &["monthly 2026-03", "yearly 2026"]),
                ("2026-02-28T12:00:00Z", &["monthly 2026-02"]),
                ("2026-01-31T12:00:00Z", &["monthly 2026-01"]),
                ("2025-12-31T23:30:00Z", &["yearly 2025"]),
                ("2025-12-31T22:30:00Z", &[]),
            ],
        },
        Case {
            // 29 March 2026, 01:00 UTC: Berlin jumps from 02:00 CET to 03:00 CEST.
            name: "DST spring: the missing hour is no period",
            times: &[
                "2026-03-29T00:00:00Z",
                "2026-03-29T00:30:00Z",
                "2026-03-29T01:00:00Z",
                "2026-03-29T01:30:00Z",
                "2026-03-29T02:00:00Z",
                "2026-03-29T02:30:00Z",
            ],
            rule: rule(|r| {
                r.keep_hourly = 10;
                r.keep_daily = 5;
            }),
            tz: BERLIN,
            want: &[
                (
                    "2026-03-29T02:30:00Z",
                    &["hourly 2026-03-29T04:00+02:00", "daily 2026-03-29"],
                ),
                ("2026-03-29T02:00:00Z", &[]),
                ("2026-03-29T01:30:00Z", &["hourly 2026-03-29T03:00+02:00"]),
                ("2026-03-29T01:00:00Z", &[]),
                ("2026-03-29T00:30:00Z", &["hourly 2026-03-29T01:00+01:00"]),
                ("2026-03-29T00:00:00Z", &[]),
            ],
        },
        Case {
            // 25 October 2026, 01:00 UTC: Berlin goes back from 03:00 CEST to 02:00
            // CET, so 02:00–03:00 happens twice: two hourly periods, one day.
            name: "DST autumn: the repeated hour is two periods",
            times: &[
                "2026-10-23T22:30:00Z",
                "2026-10-24T23:45:00Z",
                "2026-10-25T00:15:00Z",
                "2026-10-25T00:45:00Z",
                "2026-10-25T01:15:00Z",
                "2026-10-25T01:45:00Z",
                "2026-10-25T02:15:00Z",
            ],
            rule: rule(|r| {
                r.keep_hourly = 10;
                r.keep_daily = 5;
            }),
            tz: BERLIN,
            want: &[
                (
                    "2026-10-25T02:15:00Z",
                    &["hourly 2026-10-25T03:00+01:00", "daily 2026-10-25"],
                ),
                ("2026-10-25T01:45:00Z", &["hourly 2026-10-25T02:00+01:00"]),
                ("2026-10-25T01:15:00Z", &[]),
                ("2026-10-25T00:45:00Z", &["hourly 2026-10-25T02:00+02:00"]),
                ("2026-10-25T00:15:00Z", &[]),
                ("2026-10-24T23:45:00Z", &["hourly 2026-10-25T01:00+02:00"]),
                (
                    "2026-10-23T22:30:00Z",
                    &["hourly 2026-10-24T00:00+02:00", "daily 2026-10-24"],
                ),
            ],
        },
        Case {
            name: "every rule that keeps a snapshot is listed",
            times: &["2026-11-19T08:00:00Z", "2026-11-20T08:00:00Z"],
            rule: Retention {
                keep_last: 1,
                keep_hourly: 1,
                keep_daily: 1,
                keep_weekly: 1,
                keep_monthly: 1,
                keep_yearly: 1,
                keep_within: Some(86_400),
            },
            tz: Tz::UTC,
            want: &[
                (
                    "2026-11-20T08:00:00Z",
                    &[
                        "last 1",
                        "hourly 2026-11-20T08:00+00:00",
                        "daily 2026-11-20",
                        "weekly 2026-W47",
                        "monthly 2026-11",
                        "yearly 2026",
                        "within 1d",
                    ],
                ),
                ("2026-11-19T08:00:00Z", &["within 1d"]),
            ],
        },
    ];
    for c in cases {
        assert_eq!(
            run(c.times, c.rule, c.tz, NOW),
            expect(c.want),
            "{}",
            c.name
        );
    }
}

#[test]
fn keep_within_counts_back_from_the_newest_snapshot_or_now() {
    let times = [
        "2026-11-12T23:00:00Z",
        "2026-11-13T01:00:00Z",
        "2026-11-20T01:00:00Z",
    ];
    let within = rule(|r| r.keep_within = Some(7 * 86_400));
    // Backups stopped long ago: the window ends at the newest snapshot, so nothing expires.
    assert_eq!(
        run(&times, within.clone(), Tz::UTC, "2027-06-01T00:00:00Z"),
        expect(&[
            ("2026-11-20T01:00:00Z", &["within 7d"]),
            ("2026-11-13T01:00:00Z", &["within 7d"]),
            ("2026-11-12T23:00:00Z", &[]),
        ])
    );
    // A snapshot stamped after `now` by a wrong clock does not push older ones out:
    // the window ends at `now`, so 12 November 23:00 is still inside it.
    assert_eq!(
        run(&times, within, Tz::UTC, "2026-11-19T12:00:00Z"),
        expect(&[
            ("2026-11-20T01:00:00Z", &["within 7d"]),
            ("2026-11-13T01:00:00Z", &["within 7d"]),
            ("2026-11-12T23:00:00Z", &["within 7d"]),
        ])
    );
    assert_eq!(
        run(
            &times,
            rule(|r| r.keep_within = Some(7 * 86_400)),
            Tz::UTC,
            "2026-11-20T00:00:00Z"
        ),
        expect(&[
            ("2026-11-20T01:00:00Z", &["within 7d"]),
            ("2026-11-13T01:00:00Z", &["within 7d"]),
            ("2026-11-12T23:00:00Z", &[]),
        ])
    );
}

#[test]
fn rules_apply_per_disk() {
    let mut all = snaps(&["2026-11-19T01:00:00Z", "2026-11-20T01:00:00Z"]);
    let mut other = snaps(&["2026-11-18T01:00:00Z", "2026-11-21T01:00:00Z"]);
    for s in &mut other {
        s.disk = "data".into();
        s.id = format!("data-{}", s.id);
    }
    all.extend(other);
    let decisions = apply_retention(&all, &rule(|r| r.keep_last = 1), utc(NOW), Tz::UTC);
    let got: Vec<(&str, bool)> = decisions
        .iter()
        .map(|d| (d.snapshot.id.as_str(), d.keep))
        .collect();
    // Disks in name order ("data" < "root"), each newest first, one kept per disk.
    assert_eq!(
        got,
        [
            ("data-2026-11-21T01:00:00Z", true),
            ("data-2026-11-18T01:00:00Z", false),
            ("2026-11-20T01:00:00Z", true),
            ("2026-11-19T01:00:00Z", false),
        ]
    );
    let groups = lifeboat_policies::group_by_disk(&all);
    assert_eq!(groups.len(), 2);
    assert_eq!(
        groups[&("web01".to_string(), "data".to_string())][0].id,
        "data-2026-11-18T01:00:00Z"
    );
}

#[test]
fn empty_rule_keeps_nothing_and_says_so() {
    assert!(Retention::default().keeps_nothing());
    assert_eq!(Retention::default().describe(), "nothing");
    let r = rule(|r| {
        r.keep_last = 3;
        r.keep_within = Some(7 * 86_400);
    });
    assert!(!r.keeps_nothing());
    assert_eq!(r.describe(), "last 3, within 7d");
}
