//! Garbage collection while backups run: three "hosts" (separate catalogs) back up
//! their VMs into one S3 repository in a loop while a fourth runs forget + prune in a
//! loop, for two minutes (`LIFEBOAT_CONCURRENCY_SECS` to change). Afterwards every
//! snapshot ever reported committed and not forgotten restores byte-identical, and
//! `verify --read-data` finds nothing missing. A backup may be refused (its reused
//! data was being collected) — then it must not have committed anything.

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng, rngs::StdRng};
use support::disk::{random_bytes, write_at};
use support::{Kind, TestRepo, assert_same_file};

const DISK: usize = 2 << 20;
/// Short enough that plans ripen and are swept many times during the run, longer
/// than one backup of these small disks even on a loaded machine.
const GRACE: &str = "8s";

#[derive(Default)]
struct Ledger {
    /// (snapshot id, copy of the disk it captured)
    committed: Vec<(String, PathBuf)>,
    forgotten: Vec<String>,
    refused: usize,
    prunes: usize,
    deleted_packs: u64,
}

fn host_cmd(repo: &TestRepo, host: &str) -> Command {
    let mut c = repo.cmd();
    c.env("LIFEBOAT_CACHE_DIR", repo.path(&format!("cache-{host}")));
    c
}

fn run_json(mut cmd: Command, args: &[&str]) -> Result<serde_json::Value, String> {
    let out = cmd.args(args).arg("--json").output().unwrap();
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).expect("JSON output"))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn backup_loop(repo: &TestRepo, host: usize, until: Instant, ledger: &Mutex<Ledger>) {
    let name = format!("host{host}");
    let img = repo.path(&format!("{name}.img"));
    // Hosts share a common base, so their chunks deduplicate across hosts too.
    let mut disk = random_bytes(7, DISK);
    disk[..DISK / 2].copy_from_slice(&random_bytes(100 + host as u64, DISK / 2));
    std::fs::write(&img, &disk).unwrap();
    let mut rng = StdRng::seed_from_u64(host as u64);
    let mut n = 0;
    while Instant::now() < until {
        // Rewrite a random 256 KiB so each snapshot has new and reused data.
        let at = rng.gen_range(0..(DISK as u64 - (256 << 10)));
        write_at(&img, at, &random_bytes(rng.r#gen(), 256 << 10));
        let copy = repo.path(&format!("{name}-{n}.copy"));
        std::fs::copy(&img, &copy).unwrap();
        n += 1;
        let args = [
            "backup",
            "--vm",
            &name,
            "--disk",
            "root",
            img.to_str().unwrap(),
        ];
        match run_json(host_cmd(repo, &name), &args) {
            Ok(report) => {
                let id = report["snapshot"]["id"].as_str().unwrap().to_string();
                ledger.lock().unwrap().committed.push((id, copy));
            }
            Err(err) => {
                // StoreError::GcConflict, whatever the detail.
                assert!(
                    err.contains("snapshot not committed") && err.contains("Nothing was lost"),
                    "a backup may only fail because of a prune conflict: {err}"
                );
                ledger.lock().unwrap().refused += 1;
                std::fs::remove_file(copy).unwrap();
            }
        }
    }
}

fn gc_round(repo: &TestRepo, ledger: &Mutex<Ledger>) {
    let forget =
        run_json(host_cmd(repo, "gc"), &["forget", "--keep-last", "3"]).expect("forget succeeds");
    let mut l = ledger.lock().unwrap();
    for d in forget["decisions"].as_array().unwrap() {
        if d["keep"] == false {
            l.forgotten.push(d["id"].as_str().unwrap().to_string());
        }
    }
    drop(l);
    let prune =
        run_json(host_cmd(repo, "gc"), &["prune", "--grace", GRACE]).expect("prune succeeds");
    let mut l = ledger.lock().unwrap();
    l.prunes += 1;
    l.deleted_packs += prune["sweep"]["deleted_packs"].as_u64().unwrap();
}

fn restore_all(repo: &TestRepo, ledger: &Ledger, stage: &str) {
    let listed: Vec<String> = repo
        .json(&["snapshots"])
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    for (id, copy) in &ledger.committed {
        if ledger.forgotten.contains(id) {
            continue;
        }
        assert!(
            listed.contains(id),
            "{stage}: committed snapshot {id} vanished"
        );
        let target = repo.path("restore.out");
        let _ = std::fs::remove_file(&target);
        repo.ok(&["restore", id, target.to_str().unwrap()]);
        assert_same_file(&target, copy);
    }
}

#[test]
fn backups_forget_and_prune_run_concurrently_without_loss() {
    let secs: u64 = std::env::var("LIFEBOAT_CONCURRENCY_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    let repo = Arc::new(TestRepo::init(Kind::S3));
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let until = Instant::now() + Duration::from_secs(secs);

    let hosts: Vec<_> = (0..3)
        .map(|h| {
            let (repo, ledger) = (repo.clone(), ledger.clone());
            std::thread::spawn(move || backup_loop(&repo, h, until, &ledger))
        })
        .collect();
    while Instant::now() < until {
        gc_round(&repo, &ledger);
        std::thread::sleep(Duration::from_secs(2));
    }
    for h in hosts {
        h.join().expect("backup loop");
    }

    let ledger = ledger.lock().unwrap();
    eprintln!(
        "{} snapshots committed, {} forgotten, {} refused, {} prune runs deleted {} packs",
        ledger.committed.len(),
        ledger.forgotten.len(),
        ledger.refused,
        ledger.prunes,
        ledger.deleted_packs
    );
    assert!(
        ledger.deleted_packs > 0,
        "prune reclaimed space while backups ran"
    );
    assert!(ledger.committed.len() >= 6, "the backups made progress");
    assert!(
        !ledger.forgotten.is_empty(),
        "forget ran against real history"
    );
    restore_all(&repo, &ledger, "after the run");
    repo.ok(&["verify", "--read-data"]);

    // Let every plan ripen and be swept, with no backup left to protect: still intact.
    std::thread::sleep(Duration::from_secs(9));
    let swept = repo.json(&["prune", "--grace", GRACE]);
    assert!(
        swept["sweep"]["plans_swept"].as_u64().unwrap() > 0,
        "{swept}"
    );
    restore_all(&repo, &ledger, "after the final sweep");
    repo.ok(&["verify", "--read-data"]);
}
