//! Crash tests: `kill -9` Lifeboat at seeded random points of its conversation with
//! storage, during backup, forget and prune. The proxy in front of the S3 server holds every
//! request from number N on, so the process is killed with exactly N requests answered
//! and the next one in flight. After each crash: `verify --read-data` passes, every
//! committed snapshot restores byte-identical, and running the command again completes
//! — for a backup, uploading only what the killed run had not stored yet.
//!
//! CI runs a few seeds per command; `scripts/reliability.sh` sets
//! `LIFEBOAT_CRASH_SEEDS` (seeds per command) for the long run.
//!

mod support;

use std::time::{Duration, Instant};

use rand::Rng;
use support::chaos::{COMMAND_LIMIT, Chaos, env_u64};
use support::disk::{Fill, make_disk, random_bytes, write_at};
use support::faults::{FaultConfig, Seen, is_pack_put, rng};

/// Pack uploads a killed backup may have had in flight (`--uploads` default 2) plus
/// the one whose catalog entry was being written: stored, but not known to be.
const UNRECORDED_PACKS: usize = 3;

/// One command to crash, with what the repository holds before it and what must hold
/// after a successful re-run.
struct CrashCase {
    name: &'static str,
    /// Builds the state before the command, on the fault-free path.
    setup: fn(&mut Chaos, u64),
    /// The command that is killed, then run again to completion.
    command: fn(&Chaos) -> Vec<String>,
    /// Wait after the crash before the re-run.
    rerun_after: Duration,
    /// Checks after the re-run succeeded (nothing-lost is checked by the harness).
    after_rerun: fn(&Chaos, &CrashRun),
}

/// What one crash and its re-run did, as seen by the proxy.
struct CrashRun {
    seed: u64,
    /// Whether the process was killed (false: it finished before the crash point).
    killed: bool,
    /// Requests the killed run had answered.
    before_kill: Vec<Seen>,
    rerun: Vec<Seen>,
    /// The same command on an identical repository, never interrupted.
    reference: Vec<Seen>,
}

fn init(chaos: &Chaos) {
    chaos.repo.ok(&[
        "init",
        "--create-bucket",
        "--pack-size",
        "1MiB",
        "--chunk-avg",
        "64KiB",
    ]);
}

fn backup_args(chaos: &Chaos, vm: &str, tag: &str) -> Vec<String> {
    let image = chaos.repo.path(&format!("{vm}.img"));
    ["backup", "--vm", vm, "--disk", "root", "--tag", tag]
        .into_iter()
        .map(String::from)
        .chain([image.display().to_string(), "--json".into()])
        .collect()
}

/// A backup of a fresh disk, with one committed snapshot of another disk already there.
fn backup_case() -> CrashCase {
    CrashCase {
        name: "backup",
        setup: |chaos, seed| {
            init(chaos);
            let other = chaos.repo.path("db01.img");
            std::fs::write(&other, random_bytes(seed ^ 0xdb, 2 << 20)).unwrap();
            let args = backup_args(chaos, "db01", "db01-v1");
            chaos
                .repo
                .ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
            chaos.remember("db01-v1", &other);
            let img = chaos.repo.path("web01.img");
            make_disk(
                &img,
                &[
                    Fill::Random {
                        seed,
                        len: 12 << 20,
                    },
                    Fill::Hole { len: 2 << 20 },
                    Fill::Text { len: 1 << 20 },
                    Fill::Random {
                        seed: seed + 1,
                        len: 2 << 20,
                    },
                ],
            );
            // Shares a stretch with db01, so the killed run also deduplicates.
            write_at(&img, 15 << 20, &random_bytes(seed ^ 0xdb, 1 << 20));
            chaos.remember("web01-v1", &img);
        },
        command: |chaos| backup_args(chaos, "web01", "web01-v1"),
        rerun_after: Duration::ZERO,
        after_rerun: |chaos, run| {
            let tags = chaos.check_nothing_lost();
            assert!(tags.contains(&"web01-v1".to_string()), "{tags:?}");
            // The re-run uploads only what the killed run had not: together they store
            // no more packs than one uninterrupted run, give or take those in flight.
            let count = |seen: &[Seen]| seen.iter().filter(|s| is_pack_put(s)).count();
            let (before, again, full) = (
                count(&run.before_kill),
                count(&run.rerun),
                count(&run.reference),
            );
            assert!(
                before + again <= full + UNRECORDED_PACKS,
                "seed {}: the killed run stored {before} packs, the re-run {again}, an \
                 uninterrupted run stores {full}: uploaded data was not reused",
                run.seed
            );
        },
    }
}

/// `forget --keep-last 2` over four snapshots of one disk.
fn forget_case() -> CrashCase {
    CrashCase {
        name: "forget",
        setup: |chaos, seed| {
            init(chaos);
            let img = chaos.repo.path("web01.img");
            std::fs::write(&img, random_bytes(seed, 2 << 20)).unwrap();
            for n in 1..=4u64 {
                write_at(&img, n * 300_000, &random_bytes(seed + n, 64 << 10));
                let tag = format!("v{n}");
                let args = backup_args(chaos, "web01", &tag);
                chaos
                    .repo
                    .ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
                chaos.remember(&tag, &img);
                // Snapshot times have millisecond resolution; keep them distinct.
                std::thread::sleep(Duration::from_millis(5));
            }
        },
        command: |_| {
            ["forget", "--keep-last", "2", "--json"]
                .map(String::from)
                .to_vec()
        },
        rerun_after: Duration::ZERO,
        after_rerun: |chaos, _| {
            let tags = chaos.check_nothing_lost();
            assert_eq!(tags, ["v3", "v4"], "forget kept the two newest");
        },
    }
}

/// `prune` sweeping and repacking the data of two forgotten snapshots (an earlier
/// prune has condemned it), with two kept snapshots sharing some of it.
fn prune_case() -> CrashCase {
    CrashCase {
        name: "prune",
        setup: |chaos, seed| {
            (forget_case().setup)(chaos, seed);
            chaos.repo.ok(&["forget", "--keep-last", "2"]);
            chaos.versions.retain(|tag, _| tag == "v3" || tag == "v4");
            // Unused data must be older than the grace period to be condemned (first
            // prune), and condemned for longer than it to be swept (the crashed one).
            std::thread::sleep(Duration::from_millis(2100));
            chaos.repo.ok(&PRUNE);
            std::thread::sleep(Duration::from_millis(1100));
        },
        command: |_| {
            PRUNE
                .iter()
                .map(|s| s.to_string())
                .chain(["--json".into()])
                .collect()
        },
        // The killed prune's GC lease must run out before another prune may start.
        rerun_after: Duration::from_millis(1500),
        after_rerun: |chaos, _| {
            let tags = chaos.check_nothing_lost();
            assert_eq!(tags, ["v3", "v4"]);
        },
    }
}

const PRUNE: [&str; 5] = ["prune", "--grace", "1s", "--lease", "1s"];

/// Runs `case` once, uninterrupted, on a fresh repository: the requests it makes.
fn reference_run(case: &CrashCase, seed: u64) -> Vec<Seen> {
    let mut chaos = Chaos::new(FaultConfig::none());
    (case.setup)(&mut chaos, seed);
    chaos.proxy.take_seen();
    let args = (case.command)(&chaos);
    chaos.until_ok(&args.iter().map(String::as_str).collect::<Vec<_>>(), 1);
    chaos.proxy.take_seen()
}

/// Kills `case`'s command after a seeded random number of answered requests, checks
/// nothing was lost, re-runs it and checks again. Returns whether it was killed.
fn crash_once(case: &CrashCase, seed: u64, reference: &[Seen]) -> bool {
    let mut chaos = Chaos::new(FaultConfig::none());
    (case.setup)(&mut chaos, seed);
    chaos.proxy.take_seen();
    let args = (case.command)(&chaos);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    // Anywhere from the first request to the last one of a normal run (whose count
    // varies a little with timing, so a run may still finish first).
    let point = rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)).gen_range(1..=reference.len() as u64);
    chaos.proxy.hold_from(chaos.proxy.requests() + point);
    let mut child = chaos
        .cmd()
        .args(&args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + COMMAND_LIMIT;
    let killed = loop {
        if chaos.proxy.held() > 0 {
            child.kill().unwrap(); // SIGKILL: no cleanup of any kind runs
            child.wait().unwrap();
            break true;
        }
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{args:?} failed without being killed");
            break false;
        }
        assert!(Instant::now() < deadline, "{args:?} hung");
        std::thread::sleep(Duration::from_millis(2));
    };
    chaos.proxy.release();
    let before_kill = chaos.proxy.take_seen();
    eprintln!(
        "{} seed {seed}: {} after {} answered request(s) (point {point})",
        case.name,
        if killed { "killed" } else { "finished" },
        before_kill.len()
    );

    chaos.check_nothing_lost();
    std::thread::sleep(case.rerun_after);
    chaos.until_ok(&args, 1);
    let run = CrashRun {
        seed,
        killed,
        before_kill,
        rerun: chaos.proxy.take_seen(),
        reference: reference.to_vec(),
    };
    (case.after_rerun)(&chaos, &run);
    run.killed
}

/// Crashes `case` at `seeds` seeded points; prints and checks the number of real crashes.
fn crash_at_random_points(case: &CrashCase, seeds: u64) {
    let first = env_u64("LIFEBOAT_CRASH_FIRST_SEED", 1);
    let reference = reference_run(case, first);
    let mut killed = 0;
    for seed in first..first + seeds {
        killed += u64::from(crash_once(case, seed, &reference));
    }
    eprintln!(
        "CRASH {}: {seeds} seed(s) from {first}, {killed} killed mid-command, {} request(s) \
         in an uninterrupted run; every crash lost nothing and every re-run completed",
        case.name,
        reference.len()
    );
    // A run may finish before its crash point; most must not.
    assert!(
        killed * 2 >= seeds,
        "only {killed} of {seeds} runs were killed mid-command"
    );
}

#[test]
fn backup_killed_at_random_points_loses_nothing_and_resumes() {
    crash_at_random_points(&backup_case(), env_u64("LIFEBOAT_CRASH_SEEDS", 4));
}

#[test]
fn forget_killed_at_random_points_loses_nothing() {
    crash_at_random_points(&forget_case(), env_u64("LIFEBOAT_CRASH_SEEDS", 3));
}

#[test]
fn prune_killed_at_random_points_loses_nothing() {
    crash_at_random_points(&prune_case(), env_u64("LIFEBOAT_CRASH_SEEDS", 2));
}
