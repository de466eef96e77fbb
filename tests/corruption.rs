//! Corruption tests: seeded random bit flips, truncations and deletions of every kind
//! of repository object (packs, index objects, manifests, key slots, config).
//!
//! Each round copies a pristine repository (three snapshots, two key slots), damages
//! one object, and checks what an operator would rely on: `verify` detects it and names
//! the object and the affected snapshots; every snapshot either restores byte-identical
//! or is refused with a clear error and no target file; after index damage,
//! `repair index` makes everything restorable again. Rounds per (kind, damage) come from
//! `LIFEBOAT_CORRUPTION_ROUNDS` (default 1; `scripts/corruption.sh` runs long versions),
//! and every test prints its figures as `corruption: KIND DAMAGE tried N detected N`.

mod support;

use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng, rngs::StdRng};
use support::disk::{Fill, make_disk, mixed_disk};
use support::{Kind, PASSWORD, TestRepo, assert_same_file};

const SECOND_PASSWORD: &str = "second operator passphrase";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Object {
    Pack,
    Index,
    Manifest,
    KeySlot,
    Config,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Damage {
    FlipBit,
    Truncate,
    Delete,
}

const DAMAGES: [Damage; 3] = [Damage::FlipBit, Damage::Truncate, Damage::Delete];

struct Snap {
    id: String,
    image: PathBuf,
}

impl Snap {
    fn short(&self) -> &str {
        &self.id[..8]
    }
}

/// The repository every round starts from: three snapshots (two sharing chunks) in
/// many small packs, and two key slots.
struct Pristine {
    repo: TestRepo,
    snaps: Vec<Snap>,
    /// `(slot id, its passphrase)`.
    slots: Vec<(String, &'static str)>,
}

fn pristine() -> Pristine {
    let repo = TestRepo::new(Kind::Local);
    // Small chunks and packs: many packs and chunks per snapshot, so damage hits
    // some snapshots and not others.
    repo.ok(&["init", "--chunk-avg", "64K", "--pack-size", "512K"]);
    let mut snaps = Vec::new();
    for (vm, disk, seed) in [("web01", "root", 7), ("db01", "data", 100)] {
        let image = repo.path(&format!("{vm}-{disk}.img"));
        mixed_disk(&image, seed);
        let report = repo.backup(vm, disk, &image);
        let id = report["snapshot"]["id"].as_str().unwrap().to_string();
        snaps.push(Snap { id, image });
    }
    // web01/root again, partly changed: shares most chunks with the first snapshot.
    let image = repo.path("web01-root-2.img");
    mixed_disk(&image, 7);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&image)
        .unwrap();
    let changed = repo.path("changed.bin");
    make_disk(
        &changed,
        &[Fill::Random {
            seed: 9,
            len: 300_000,
        }],
    );
    std::os::unix::fs::FileExt::write_all_at(&file, &std::fs::read(&changed).unwrap(), 1 << 20)
        .unwrap();
    let report = repo.backup("web01", "root", &image);
    let id = report["snapshot"]["id"].as_str().unwrap().to_string();
    snaps.push(Snap { id, image });

    let out = repo
        .cmd()
        .env("LIFEBOAT_NEW_PASSWORD", SECOND_PASSWORD)
        .args(["key", "add"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let mut slots = Vec::new();
    for k in repo.json(&["key", "list"]).as_array().unwrap() {
        let pass = if k["current"].as_bool().unwrap() {
            PASSWORD
        } else {
            SECOND_PASSWORD
        };
        slots.push((k["id"].as_str().unwrap().to_string(), pass));
    }
    assert_eq!(slots.len(), 2);
    Pristine { repo, snaps, slots }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), dest).unwrap();
        }
    }
}

/// Output of one CLI run: exit code and stdout + stderr.
struct Run {
    code: i32,
    text: String,
}

fn run(repo: &TestRepo, password: &str, args: &[&str]) -> Run {
    let out = repo
        .cmd()
        .env("LIFEBOAT_PASSWORD", password)
        .args(args)
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        text: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// Damages `key` as `damage` says, choosing the position with `rng`; describes it.
fn apply(repo: &TestRepo, key: &str, damage: Damage, rng: &mut StdRng) -> String {
    let mut bytes = repo.get(key);
    match damage {
        Damage::FlipBit => {
            let (at, bit) = (rng.gen_range(0..bytes.len()), rng.gen_range(0..8));
            bytes[at] ^= 1 << bit;
            repo.put(key, bytes);
            format!("flipped bit {bit} of byte {at} in {key}")
        }
        Damage::Truncate => {
            let len = rng.gen_range(0..bytes.len());
            bytes.truncate(len);
            repo.put(key, bytes);
            format!("truncated {key} to {len} bytes")
        }
        Damage::Delete => {
            repo.delete(key);
            format!("deleted {key}")
        }
    }
}

/// Restores `snap`: either the result is byte-identical to the backed-up image (true),
/// or restore fails with a clear error and leaves no target file behind (false).
fn restore_or_refuse(repo: &TestRepo, password: &str, snap: &Snap, what: &str) -> bool {
    let target = repo.path(&format!("restored-{}.img", snap.short()));
    let partial = repo.path(&format!("restored-{}.img.lifeboat-partial", snap.short()));
    let r = run(
        repo,
        password,
        &["restore", &snap.id, target.to_str().unwrap()],
    );
    if r.code == 0 {
        assert_same_file(&target, &snap.image);
        std::fs::remove_file(&target).unwrap();
        return true;
    }
    assert_eq!(r.code, 1, "{what}: restore of {}: {}", snap.short(), r.text);
    assert!(
        ["damaged", "in no index", "no snapshot"]
            .iter()
            .any(|m| r.text.contains(m)),
        "{what}: restore of {} failed without a clear reason:\n{}",
        snap.short(),
        r.text
    );
    assert!(
        !target.exists(),
        "{what}: a refused restore left {target:?}"
    );
    assert!(
        !partial.exists(),
        "{what}: a refused restore left {partial:?}"
    );
    false
}

/// Restores every snapshot; returns the ones refused.
fn restore_all<'a>(
    repo: &TestRepo,
    password: &str,
    snaps: &'a [Snap],
    what: &str,
) -> Vec<&'a Snap> {
    snaps
        .iter()
        .filter(|s| !restore_or_refuse(repo, password, s, what))
        .collect()
}

/// One round: copy the pristine repository, damage one object, check the outcome.
/// Returns whether the damage was detected (the checks assert everything else).
fn round(p: &Pristine, object: Object, damage: Damage, seed: u64) -> bool {
    let mut rng = StdRng::seed_from_u64(seed);
    let repo = TestRepo::new(Kind::Local);
    copy_dir(&p.repo.path("repo"), &repo.path("repo"));
    // The host has used the repository before: its catalog is warm.
    repo.ok(&["snapshots"]);
    let prefix = match object {
        Object::Pack => "data/",
        Object::Index => "index/",
        Object::Manifest => "snapshots/",
        Object::KeySlot => "keys/",
        Object::Config => "config",
    };
    let victim = if object == Object::Config {
        prefix.to_string()
    } else {
        let keys = repo.keys(prefix);
        keys[rng.gen_range(0..keys.len())].clone()
    };
    let what = apply(&repo, &victim, damage, &mut rng);
    let what = format!("seed {seed}: {what}");
    eprintln!("{what}");
    match object {
        Object::Pack => pack_round(&repo, p, &victim, damage, &what),
        Object::Index => index_round(&repo, p, &victim, damage, &what),
        Object::Manifest => manifest_round(&repo, p, &victim, damage, &what),
        Object::KeySlot => key_slot_round(&repo, p, &victim, damage, &what),
        Object::Config => {
            let r = run(&repo, PASSWORD, &["verify"]);
            assert_eq!(r.code, 1, "{what}: {}", r.text);
            r.text.contains("object config is damaged")
        }
    }
}

fn pack_round(repo: &TestRepo, p: &Pristine, pack: &str, damage: Damage, what: &str) -> bool {
    let r = run(repo, PASSWORD, &["verify", "--read-data"]);
    let detected = r.code == 3 && r.text.contains(pack);
    let named: Vec<&Snap> = p
        .snaps
        .iter()
        .filter(|s| r.text.contains(s.short()))
        .collect();
    assert!(
        !named.is_empty(),
        "{what}: verify names no snapshot:\n{}",
        r.text
    );
    let refused = restore_all(repo, PASSWORD, &p.snaps, what);
    for s in &refused {
        assert!(
            r.text.contains(s.short()),
            "{what}: restore refused {} but verify did not name it:\n{}",
            s.short(),
            r.text
        );
    }
    if damage == Damage::Delete {
        assert!(
            !refused.is_empty(),
            "{what}: data is gone, yet every restore succeeded"
        );
    }
    detected
}

fn index_round(repo: &TestRepo, p: &Pristine, index: &str, damage: Damage, what: &str) -> bool {
    let r = run(repo, PASSWORD, &["verify"]);
    let names_damage = match damage {
        Damage::Delete => p.snaps.iter().any(|s| r.text.contains(s.short())),
        _ => r.text.contains(index),
    };
    let detected = r.code == 3 && names_damage;
    restore_all(repo, PASSWORD, &p.snaps, what);
    let report = repo.json(&["repair", "index"]);
    assert!(
        report["packs_damaged"].as_array().unwrap().is_empty(),
        "{what}: {report}"
    );
    assert_eq!(
        report["packs_scanned"], report["packs_indexed"],
        "{what}: {report}"
    );
    let r = run(repo, PASSWORD, &["verify"]);
    assert_eq!(r.code, 0, "{what}: verify after repair:\n{}", r.text);
    // The repository itself is whole again, not just this host's catalog.
    std::fs::remove_dir_all(repo.path("cache")).unwrap();
    let refused = restore_all(repo, PASSWORD, &p.snaps, what);
    assert!(
        refused.is_empty(),
        "{what}: not restorable after repair index"
    );
    detected
}

fn manifest_round(repo: &TestRepo, p: &Pristine, key: &str, damage: Damage, what: &str) -> bool {
    let r = run(repo, PASSWORD, &["verify"]);
    let snap = p.snaps.iter().find(|s| key.ends_with(&s.id)).unwrap();
    let detected = match damage {
        // Looks exactly like a `forget` run by another host: a warning, not damage.
        Damage::Delete => {
            assert_eq!(r.code, 0, "{what}: {}", r.text);
            r.text.contains("no longer in the repository") && r.text.contains(snap.short())
        }
        _ => r.code == 3 && r.text.contains(key),
    };
    let refused = restore_all(repo, PASSWORD, &p.snaps, what);
    let refused: Vec<&str> = refused.iter().map(|s| s.short()).collect();
    assert_eq!(refused, vec![snap.short()], "{what}");
    detected
}

fn key_slot_round(repo: &TestRepo, p: &Pristine, key: &str, damage: Damage, what: &str) -> bool {
    let (victim_pass, other_pass) = match p.slots.iter().find(|(id, _)| key.ends_with(id)) {
        Some((_, pass)) if *pass == PASSWORD => (PASSWORD, SECOND_PASSWORD),
        _ => (SECOND_PASSWORD, PASSWORD),
    };
    // The other passphrase still opens everything.
    let check = run(repo, other_pass, &["verify"]);
    assert!(
        restore_all(repo, other_pass, &p.snaps, what).is_empty(),
        "{what}"
    );
    let own = run(repo, victim_pass, &["snapshots"]);
    if own.code != 0 {
        assert_eq!(own.code, 1, "{what}: {}", own.text);
        assert!(
            own.text.contains("does not open") || own.text.contains("damaged"),
            "{what}: unclear error:\n{}",
            own.text
        );
    }
    match damage {
        // Looks exactly like `key remove`; found when the passphrase is next used.
        Damage::Delete => check.code == 0 && own.code == 1 && own.text.contains("does not open"),
        _ => check.code == 3 && check.text.contains(key),
    }
}

/// Runs the rounds for one object kind and asserts every corruption was detected.
fn corruption_rounds(object: Object, seed_base: u64) {
    let rounds: u64 = std::env::var("LIFEBOAT_CORRUPTION_ROUNDS")
        .ok()
        .map(|v| {
            v.parse()
                .expect("LIFEBOAT_CORRUPTION_ROUNDS must be a number")
        })
        .unwrap_or(1);
    let p = pristine();
    let mut missed = Vec::new();
    for damage in DAMAGES {
        let mut detected = 0;
        for i in 0..rounds {
            let seed = seed_base + 1000 * damage as u64 + i;
            if round(&p, object, damage, seed) {
                detected += 1;
            } else {
                missed.push(seed);
            }
        }
        eprintln!("corruption: {object:?} {damage:?} tried {rounds} detected {detected}");
    }
    assert!(
        missed.is_empty(),
        "undetected {object:?} damage, seeds {missed:?}"
    );
}

#[test]
fn damaged_packs_are_detected_and_never_restored() {
    corruption_rounds(Object::Pack, 10_000);
}

#[test]
fn damaged_index_objects_are_detected_and_repaired() {
    corruption_rounds(Object::Index, 20_000);
}

#[test]
fn damaged_manifests_are_detected_and_only_their_snapshot_is_lost() {
    corruption_rounds(Object::Manifest, 30_000);
}

#[test]
fn damaged_key_slots_are_detected_and_the_other_passphrase_still_opens() {
    corruption_rounds(Object::KeySlot, 40_000);
}

#[test]
fn damaged_config_gives_a_clear_error() {
    corruption_rounds(Object::Config, 50_000);
}
