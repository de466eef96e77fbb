//! Replication under faults: `lifeboat replicate` (pull, run at the secondary) killed
//! with `kill -9` at seeded points of its conversation with the destination, killed
//! between a snapshot's data and its manifest, run over links that answer 500/503,
//! reset and stall, and run with the secondary unreachable. After each: every snapshot
//! the secondary holds restores byte-identical, `verify --read-data` is clean on both
//! sides, a rerun completes, and the reruns re-send no more than the packs that were in
//! flight when the process died.
//!
//! CI runs a few seeds; `scripts/reliability.sh` sets `LIFEBOAT_REPL_CRASH_SEEDS` and
//! `LIFEBOAT_REPL_FAULT_SEEDS` for the long run.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use rand::Rng;
use support::chaos::{COMMAND_LIMIT, STALL, assert_clean_failure, env_u64};
use support::faults::{Fault, FaultConfig, Proxy, Seen, is_pack_put, rng};
use support::replica::{Primary, Secondary, replicate_args};

/// Pack uploads a killed run may have had in flight (`--uploads 2`), plus the one
/// whose index entry was being written: stored, but not known to be.
const IN_FLIGHT_PACKS: u64 = 3;

/// Pack bytes the destination's server received in `seen`.
fn pack_bytes(seen: &[Seen]) -> u64 {
    seen.iter()
        .filter(|s| is_pack_put(s))
        .map(|s| s.body_len)
        .sum()
}

/// Spawns `replicate` through the secondary's proxy and SIGKILLs it as soon as the
/// proxy holds a request. Returns whether it was killed (false: it finished first).
fn run_until_held(secondary: &Secondary, from: &str) -> bool {
    let mut child = secondary
        .linked()
        .args(replicate_args(from))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + COMMAND_LIMIT;
    let killed = loop {
        if secondary.proxy.held() > 0 {
            child.kill().unwrap(); // SIGKILL: no cleanup of any kind runs
            child.wait().unwrap();
            break true;
        }
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "replicate failed without being killed");
            break false;
        }
        assert!(Instant::now() < deadline, "replicate hung");
        std::thread::sleep(Duration::from_millis(2));
    };
    secondary.proxy.release();
    killed
}

/// Runs `replicate` through the proxy and asserts it succeeded; its JSON report.
fn replicate_ok(secondary: &Secondary, from: &str) -> serde_json::Value {
    let out = secondary.replicate(from);
    assert!(
        out.status.success(),
        "replicate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn replication_killed_at_seeded_points_loses_nothing_and_resends_little() {
    let primary = Primary::new(11);
    let from = primary.repo.url.clone();

    // One uninterrupted run: what a crash-free replication uploads.
    let reference = Secondary::new(&primary, FaultConfig::none());
    let report = replicate_ok(&reference, &from);
    let seen = reference.proxy.take_seen();
    let (full_bytes, requests) = (pack_bytes(&seen), seen.len() as u64);
    let pack_max = seen.iter().filter(|s| is_pack_put(s)).map(|s| s.body_len);
    let pack_max = pack_max.max().expect("packs were uploaded");
    assert_eq!(report["snapshots_copied"], 3, "{report}");
    assert_eq!(report["bytes_sent"].as_u64(), Some(full_bytes), "{report}");
    reference.check(&primary, true);
    // A second run has nothing to send.
    let again = replicate_ok(&reference, &from);
    assert_eq!(again["bytes_sent"], 0, "{again}");
    assert_eq!(again["snapshots_present"], 3, "{again}");

    let seeds = env_u64("LIFEBOAT_REPL_CRASH_SEEDS", 3);
    let first = env_u64("LIFEBOAT_REPL_CRASH_FIRST_SEED", 1);
    let mut killed = 0;
    for seed in first..first + seeds {
        let secondary = Secondary::new(&primary, FaultConfig::none());
        let point = rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)).gen_range(1..=requests);
        secondary.proxy.hold_from(point);
        let was_killed = run_until_held(&secondary, &from);
        killed += u64::from(was_killed);
        let before = secondary.proxy.take_seen();
        let kept = secondary.check(&primary, false);
        let report = replicate_ok(&secondary, &from);
        let rerun = secondary.proxy.take_seen();
        secondary.check(&primary, true);
        let (sent_before, sent_again) = (pack_bytes(&before), pack_bytes(&rerun));
        eprintln!(
            "replicate seed {seed}: {} after {} request(s) (point {point}), {kept:?} committed; \
             pack bytes: killed run {sent_before}, rerun {sent_again}, uninterrupted {full_bytes}",
            if was_killed { "killed" } else { "finished" },
            before.len(),
        );
        assert_eq!(report["bytes_sent"].as_u64(), Some(sent_again), "{report}");
        assert!(
            sent_before + sent_again <= full_bytes + IN_FLIGHT_PACKS * pack_max,
            "seed {seed}: the killed run uploaded {sent_before} pack bytes and the rerun \
             {sent_again}; an uninterrupted run uploads {full_bytes}: more than the \
             {IN_FLIGHT_PACKS} packs (≤ {pack_max} B each) in flight was sent again"
        );
    }
    eprintln!(
        "CRASH replicate: {seeds} seed(s) from {first}, {killed} killed mid-run, {requests} \
         request(s) to the destination in an uninterrupted run"
    );
    assert!(
        killed * 2 >= seeds,
        "only {killed} of {seeds} runs were killed"
    );
    primary.check_unchanged();
}

#[test]
fn replication_killed_before_the_manifest_commits_nothing_until_rerun() {
    let primary = Primary::new(21);
    let from = primary.repo.url.clone();
    let secondary = Secondary::new(&primary, FaultConfig::none());
    // Hold the first manifest write: all of the first snapshot's packs and its index
    // are stored, its commit is in flight when the process dies.
    secondary.proxy.hold_matching("PUT", "/snapshots/");
    assert!(
        run_until_held(&secondary, &from),
        "the manifest was never written"
    );
    let before = secondary.proxy.take_seen();
    assert!(
        before.iter().any(is_pack_put) && before.iter().any(|s| s.path.contains("/index/")),
        "the killed run had not stored its packs and index yet"
    );
    assert_eq!(
        secondary.check(&primary, false),
        Vec::<String>::new(),
        "a snapshot became visible on the destination before its manifest was written"
    );
    let report = replicate_ok(&secondary, &from);
    assert_eq!(report["snapshots_copied"], 3, "{report}");
    secondary.check(&primary, true);
    primary.check_unchanged();
}

/// Runs `replicate` until it succeeds (at most `tries`): each failure must be exit 75
/// with a message saying to run it again. Returns the failed attempts.
fn until_ok_or_rerun(secondary: &Secondary, from: &str, tries: u32) -> u32 {
    for failed in 0..tries {
        let out = secondary.replicate(from);
        if out.status.success() {
            return failed;
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_clean_failure(&["replicate"], &out);
        assert_eq!(
            out.status.code(),
            Some(75),
            "not a transient failure: {stderr}"
        );
        assert!(stderr.contains("run the same command again"), "{stderr}");
    }
    panic!("replicate failed {tries} times in a row");
}

#[test]
fn replication_over_faulty_links_retries_or_asks_for_a_rerun() {
    let primary = Primary::new(31);
    let seeds = env_u64("LIFEBOAT_REPL_FAULT_SEEDS", 2);
    let permille = env_u64("LIFEBOAT_REPL_FAULT_RATE_PERMILLE", 50);
    let rate = permille as f64 / 1000.0;
    for seed in 1..=seeds {
        // The write side: a proxy in front of the secondary's server.
        let secondary = Secondary::new(&primary, FaultConfig::all(seed, rate, STALL));
        // The read side: a proxy in front of the primary's server.
        let source = Proxy::start(
            &support::s3::server().endpoint,
            FaultConfig::all(seed + 1000, rate, STALL),
        );
        let from = source.repo_url(&primary.repo.url);
        let failed = until_ok_or_rerun(&secondary, &from, 6);
        let (write, read) = (secondary.proxy.counts(), source.counts());
        eprintln!(
            "replicate fault seed {seed}: {failed} failed attempt(s)\ndestination link: \
             {write}\nsource link: {read}"
        );
        secondary.check(&primary, true);
        // Nothing went to the primary but reads.
        let writes: Vec<_> = source
            .take_seen()
            .into_iter()
            .filter(|s| !matches!(s.method.as_str(), "GET" | "HEAD"))
            .collect();
        assert!(
            writes.is_empty(),
            "replicate wrote to the primary: {writes:?}"
        );
    }
    primary.check_unchanged();
}

#[test]
fn unreachable_secondary_exits_75_naming_the_destination() {
    let primary = Primary::new(41);
    let source = Proxy::start(&support::s3::server().endpoint, FaultConfig::none());
    let from = source.repo_url(&primary.repo.url);
    let secondary = Secondary::new(&primary, FaultConfig::none());
    // Refused: nothing listens at the destination's address any more.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let refused = secondary.proxy.repo_url(&secondary.repo.url).replace(
        &secondary.proxy.endpoint,
        &format!("http://127.0.0.1:{port}"),
    );
    // Reset: the link drops every connection.
    secondary.proxy.force(&[Fault::Reset; 64]);
    for to in [refused, secondary.url.clone()] {
        let out = secondary
            .linked()
            .args(replicate_args(&from))
            .args(["--to", &to])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(75), "{stderr}");
        assert!(
            stderr.contains("destination") && stderr.contains(&to),
            "the error does not name the destination {to}: {stderr}"
        );
        assert!(stderr.contains("run the same command again"), "{stderr}");
    }
    assert_eq!(secondary.tags(), Vec::<String>::new());
    let writes: Vec<_> = source
        .take_seen()
        .into_iter()
        .filter(|s| !matches!(s.method.as_str(), "GET" | "HEAD"))
        .collect();
    assert!(
        writes.is_empty(),
        "replicate wrote to the primary: {writes:?}"
    );
    primary.check_unchanged();
}

/// Sends every request from the `after`-th on the link `proxy` to 503 SlowDown until the
/// run gives up, then heals the link. Returns the failed run's stderr.
fn fail_mid_run(secondary: &Secondary, from: &str, proxy: &Proxy, after: u64) -> String {
    let start = proxy.requests();
    let mut child = secondary
        .linked()
        .args(replicate_args(from))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    while proxy.requests() < start + after {
        assert!(child.try_wait().unwrap().is_none(), "finished too early");
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut config = FaultConfig::all(1, 1.0, STALL);
    config.kinds = vec![Fault::SlowDown];
    proxy.set_config(config);
    let out = child.wait_with_output().unwrap();
    proxy.set_config(FaultConfig::none());
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(75), "{stderr}");
    stderr
}

#[test]
fn replication_failing_mid_run_exits_75_and_a_rerun_completes() {
    let primary = Primary::new(51);
    for side in ["destination", "source"] {
        let secondary = Secondary::new(&primary, FaultConfig::none());
        let source = Proxy::start(&support::s3::server().endpoint, FaultConfig::none());
        let from = source.repo_url(&primary.repo.url);
        let (link, after) = match side {
            // After the first pack upload or so; during the reads of the first snapshot.
            "destination" => (&secondary.proxy, 8),
            _ => (&source, 12),
        };
        let stderr = fail_mid_run(&secondary, &from, link, after);
        assert!(
            stderr.contains(&format!("{side} repository")) && stderr.contains("SlowDown"),
            "the error does not say the {side} failed: {stderr}"
        );
        assert!(stderr.contains("run the same command again"), "{stderr}");
        let kept = secondary.check(&primary, false);
        eprintln!("{side} link failed mid-run: exit 75, {kept:?} committed; rerun");
        replicate_ok(&secondary, &from);
        secondary.check(&primary, true);
    }
    primary.check_unchanged();
}
