//! The fault matrix: init, backups (a full scan, a CBT incremental, a second disk),
//! restores and `verify --read-data`, all through a proxy that injects every kind of
//! storage fault at 5 % of requests. Every command must succeed or fail cleanly, a
//! re-run must succeed, and at the end nothing committed may be lost: every snapshot
//! restores byte-identical and a fault-free `verify --read-data` is clean.
//!
//! CI runs a bounded version; `scripts/reliability.sh` sets `LIFEBOAT_FAULT_SEEDS`,
//! `LIFEBOAT_FAULT_MIB` (and optionally `LIFEBOAT_FAULT_RATE_PERMILLE`,
//! `LIFEBOAT_FAULT_FIRST_SEED`) for the long one.

mod support;

use support::chaos::{Chaos, STALL, env_u64};
use support::disk::{Fill, make_disk, random_bytes, write_at};
use support::faults::{FaultConfig, FaultCounts};
use support::qemu::{convert, io};

/// Attempts per command: at 5 % faults with 8 SDK attempts per request, a command
/// failing more than a couple of times in a row means something is broken.
const TRIES: u32 = 4;

#[derive(Default)]
struct Totals {
    faults: FaultCounts,
    commands: u32,
    failed_attempts: u32,
}

fn backup_args<'a>(tag: &'a str, vm: &'a str, image: &'a str, json: bool) -> Vec<&'a str> {
    let mut args = vec!["backup", "--vm", vm, "--disk", "root", "--tag", tag, image];
    if json {
        args.push("--json");
    }
    args
}

/// Runs a command until it succeeds (see `Chaos::until_ok`), counting attempts.
fn run(chaos: &Chaos, totals: &mut Totals, args: &[&str]) -> String {
    let (out, failed) = chaos.until_ok(args, TRIES);
    totals.commands += 1;
    totals.failed_attempts += failed;
    out
}

/// One seed's run; adds its numbers to `totals`.
fn run_seed(seed: u64, rate: f64, mib: u64, totals: &mut Totals) {
    let mut chaos = Chaos::new(FaultConfig::all(seed, rate, STALL));
    let init = [
        "init",
        "--create-bucket",
        "--pack-size",
        "1MiB",
        "--chunk-avg",
        "64KiB",
    ];
    // An init whose last write landed but whose answer was lost reports "already
    // exists" when run again: the repository is there, which is what was asked for.
    let first = chaos.run(&init);
    totals.commands += 1;
    if !first.status.success() {
        totals.failed_attempts += 1;
        support::chaos::assert_clean_failure(&init, &first);
        let again = chaos.run(&init);
        let text = String::from_utf8_lossy(&again.stderr);
        assert!(
            again.status.success() || text.contains("already exists"),
            "init re-run: {text}"
        );
    }

    // Disk 1: qcow2, so the second backup is a changed-block-tracking incremental.
    let raw = chaos.repo.path("web01.raw");
    let half = (mib << 20) / 2;
    make_disk(
        &raw,
        &[
            Fill::Random { seed, len: half },
            Fill::Hole { len: 8 << 20 },
            Fill::Text { len: 2 << 20 },
            Fill::Random {
                seed: seed + 1,
                len: half,
            },
        ],
    );
    let img = chaos.repo.path("web01.qcow2");
    convert(&raw, "qcow2", &img);
    let img_arg = img.to_str().unwrap();
    run(&chaos, totals, &backup_args("v1", "web01", img_arg, false));
    chaos.remember_qcow2("v1", &img);

    io(&img, "write -P 0x5a 1M 256k");
    io(&img, &format!("write -P 0x6b {}M 64k", (half >> 20) + 2));
    let out = run(&chaos, totals, &backup_args("v2", "web01", img_arg, true));
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    chaos.remember_qcow2("v2", &img);
    // A backup that failed earlier may have found its bitmap unusable and scanned; the
    // data is what matters, but the common path must be the incremental one.
    assert!(
        matches!(report["mode"].as_str(), Some("incremental" | "scan")),
        "{report}"
    );

    // Disk 2: raw, sharing data with disk 1 (dedup across disks under faults).
    let db = chaos.repo.path("db01.raw");
    make_disk(
        &db,
        &[
            Fill::Random { seed, len: half },
            Fill::Random {
                seed: seed + 7,
                len: 4 << 20,
            },
        ],
    );
    write_at(&db, 12345, &random_bytes(seed + 8, 100_000));
    run(
        &chaos,
        totals,
        &backup_args("v3", "db01", db.to_str().unwrap(), false),
    );
    chaos.remember("v3", &db);

    // Restores through the faulty path.
    let list = chaos.repo.json(&["snapshots"]);
    for s in list.as_array().unwrap() {
        let id = s["id"].as_str().unwrap();
        let tag = s["tags"][0].as_str().unwrap();
        let out = chaos.repo.path(&format!("restored-{}.raw", &id[..8]));
        run(
            &chaos,
            totals,
            &["restore", id, out.to_str().unwrap(), "--overwrite"],
        );
        support::assert_same_file(&out, &chaos.versions[tag]);
    }
    // Verify through the faulty path must never mistake a storage fault for damage.
    run(&chaos, totals, &["verify", "--read-data"]);

    let tags = chaos.check_nothing_lost();
    for tag in ["v1", "v2", "v3"] {
        assert!(
            tags.iter().any(|t| t == tag),
            "snapshot {tag} is missing: {tags:?}"
        );
    }
    let counts = chaos.proxy.counts();
    eprintln!("seed {seed}: {counts}\n  committed snapshots: {tags:?}");
    totals.faults.add(&counts);
}

#[test]
fn every_command_survives_injected_storage_faults() {
    let seeds = env_u64("LIFEBOAT_FAULT_SEEDS", 2);
    let first = env_u64("LIFEBOAT_FAULT_FIRST_SEED", 1);
    let rate = env_u64("LIFEBOAT_FAULT_RATE_PERMILLE", 50) as f64 / 1000.0;
    let mib = env_u64("LIFEBOAT_FAULT_MIB", 24);
    let mut totals = Totals::default();
    for seed in first..first + seeds {
        run_seed(seed, rate, mib, &mut totals);
    }
    eprintln!(
        "FAULT MATRIX: {seeds} seed(s) from {first}, rate {rate}, {mib} MiB of data per disk\n\
         commands {} (failed attempts, all clean and re-run successfully: {})\n{}",
        totals.commands, totals.failed_attempts, totals.faults
    );
    // The matrix must actually have exercised every kind of fault.
    assert!(totals.faults.total() > 0, "no faults were injected");
}

/// Regression tests for the two store bugs the matrix found, one fault at a time.
mod store_bugs {
    use super::support::faults::{Fault, FaultConfig, Proxy};
    use super::support::{Kind, TestRepo, s3};
    use bytes::Bytes;
    use lifeboat_store::backend::address::{BackendOptions, RepoAddress};
    use lifeboat_store::backend::{BackendError, open_backend};

    type Through = (
        TestRepo,
        tokio::runtime::Runtime,
        std::sync::Arc<dyn lifeboat_store::Backend>,
    );

    /// A fresh bucket reached through `proxy`, with the repo that names (and owns) it.
    fn backend_through(proxy: &Proxy) -> Through {
        let repo = TestRepo::new(Kind::S3);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let url = proxy.repo_url(&repo.url);
        let options = BackendOptions {
            credentials: Some(s3::credentials()),
            ..Default::default()
        };
        let backend = rt
            .block_on(async {
                let b = open_backend(&RepoAddress::parse(&url).unwrap(), &options).await?;
                b.create_container().await?;
                Ok::<_, BackendError>(b)
            })
            .unwrap();
        (repo, rt, backend)
    }

    #[test]
    fn a_conditional_put_whose_answer_was_lost_succeeds_on_retry() {
        let proxy = Proxy::start(&s3::server().endpoint, FaultConfig::none());
        let (_repo, rt, backend) = backend_through(&proxy);
        let data = Bytes::from_static(b"sealed index object");
        // The server stores the first attempt; the SDK's retry then meets our own object.
        proxy.force(&[Fault::DropResponse]);
        rt.block_on(backend.put_if_absent("index/00aa", data.clone()))
            .expect("a retried conditional PUT of identical bytes is a success");
        assert_eq!(rt.block_on(backend.get("index/00aa")).unwrap(), data);
        assert_eq!(proxy.counts().get(Fault::DropResponse), 1);
        // Someone else's object under the key is still a conflict.
        let other = rt.block_on(backend.put_if_absent("index/00aa", Bytes::from_static(b"x")));
        assert!(
            matches!(other, Err(BackendError::AlreadyExists { .. })),
            "{other:?}"
        );
    }

    #[test]
    fn a_get_whose_body_was_cut_short_is_read_again() {
        let proxy = Proxy::start(&s3::server().endpoint, FaultConfig::none());
        let (_repo, rt, backend) = backend_through(&proxy);
        let data = Bytes::from(super::support::disk::random_bytes(5, 300_000));
        rt.block_on(backend.put("data/00/00bb", data.clone()))
            .unwrap();
        proxy.force(&[Fault::Truncate]);
        assert_eq!(rt.block_on(backend.get("data/00/00bb")).unwrap(), data);
        proxy.force(&[Fault::Truncate, Fault::Truncate]);
        let range = rt
            .block_on(backend.get_range("data/00/00bb", 1000, 5000))
            .unwrap();
        assert_eq!(range, data.slice(1000..6000));
        assert_eq!(proxy.counts().get(Fault::Truncate), 3);
    }
}
