//! Shared harness of the fault and crash tests: a repository on the real S3 server,
//! reached by Lifeboat through a [`Proxy`], plus the checks that define "nothing was
//! lost": every committed snapshot restores byte-identical to the disk it was taken
//! of, and `verify --read-data` (on a fault-free path) finds nothing wrong.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use super::faults::{FaultConfig, Proxy};
use super::{Kind, TestRepo, assert_same_file, output_within};

/// Per-attempt S3 timeout for commands under test (`LIFEBOAT_S3_TIMEOUT`): short, so a
/// stalled request costs seconds, yet far above a healthy localhost request even on a
/// loaded machine.
pub const ATTEMPT_TIMEOUT_SECS: u64 = 5;
/// How long a stalled request hangs: well past the attempt timeout.
pub const STALL: Duration = Duration::from_secs(ATTEMPT_TIMEOUT_SECS + 3);
/// No single command may take longer than this (a hang fails the test).
pub const COMMAND_LIMIT: Duration = Duration::from_secs(600);

/// An integer from the environment, for the long runs of `scripts/reliability.sh`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A repository on the S3 test server, and a proxy in front of it.
pub struct Chaos {
    /// Direct, fault-free access (checks, tampering, inspection).
    pub repo: TestRepo,
    pub proxy: Proxy,
    /// The repository URL through the proxy.
    pub url: String,
    /// Known disk contents by snapshot tag, to compare restores against.
    pub versions: BTreeMap<String, PathBuf>,
}

impl Chaos {
    pub fn new(config: FaultConfig) -> Chaos {
        let repo = TestRepo::new(Kind::S3);
        let proxy = Proxy::start(&super::s3::server().endpoint, config);
        let url = proxy.repo_url(&repo.url);
        Chaos {
            repo,
            proxy,
            url,
            versions: BTreeMap::new(),
        }
    }

    /// The CLI, talking to storage through the proxy.
    pub fn cmd(&self) -> Command {
        let mut c = self.repo.cmd();
        c.env("LIFEBOAT_REPO", &self.url)
            .env("LIFEBOAT_S3_TIMEOUT", ATTEMPT_TIMEOUT_SECS.to_string());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        output_within(self.cmd().args(args), COMMAND_LIMIT)
    }

    /// Runs a command through the proxy until it succeeds, at most `tries` times; every
    /// failure must be a clean one (exit 75 or 1 and an `error:` line, no panic, no
    /// claim of damage). Returns stdout and the number of failed attempts.
    pub fn until_ok(&self, args: &[&str], tries: u32) -> (String, u32) {
        let mut failures = Vec::new();
        for _ in 0..tries {
            let out = self.run(args);
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            if out.status.success() {
                return (
                    String::from_utf8(out.stdout).unwrap(),
                    failures.len() as u32,
                );
            }
            assert_clean_failure(args, &out);
            failures.push(stderr);
        }
        panic!(
            "lifeboat {args:?} failed {tries} times in a row; last errors:\n{}",
            failures.join("\n---\n")
        );
    }

    /// `until_ok` with `--json`, parsed.
    pub fn json_until_ok(&self, args: &[&str], tries: u32) -> (serde_json::Value, u32) {
        let mut all = args.to_vec();
        all.push("--json");
        let (out, failed) = self.until_ok(&all, tries);
        (serde_json::from_str(&out).expect("valid JSON"), failed)
    }

    /// Records what a snapshot tagged `tag` must restore to (a copy of the disk now).
    pub fn remember(&mut self, tag: &str, disk: &std::path::Path) {
        let copy = self.repo.path(&format!("expect-{tag}.raw"));
        std::fs::copy(disk, &copy).unwrap();
        self.versions.insert(tag.to_string(), copy);
    }

    /// Records a qcow2 disk's guest-visible content for `tag`.
    pub fn remember_qcow2(&mut self, tag: &str, image: &std::path::Path) {
        let copy = self.repo.path(&format!("expect-{tag}.raw"));
        super::qemu::to_raw(image, &copy);
        self.versions.insert(tag.to_string(), copy);
    }

    /// The promise, checked on the fault-free path: `verify --read-data` is clean and
    /// every committed snapshot restores byte-identical to the disk it was taken of.
    /// Returns the tags of the committed snapshots, oldest first.
    pub fn check_nothing_lost(&self) -> Vec<String> {
        let verify = self.repo.run(&["verify", "--read-data", "--json"]);
        assert!(
            verify.status.success(),
            "verify --read-data found problems:\n{}{}",
            String::from_utf8_lossy(&verify.stdout),
            String::from_utf8_lossy(&verify.stderr)
        );
        let list = self.repo.json(&["snapshots"]);
        let mut tags = Vec::new();
        for s in list.as_array().unwrap() {
            let id = s["id"].as_str().unwrap();
            let tag = s["tags"][0]
                .as_str()
                .unwrap_or_else(|| panic!("snapshot {id} has no tag: {s}"));
            let expected = self
                .versions
                .get(tag)
                .unwrap_or_else(|| panic!("snapshot {id} has unknown tag {tag}"));
            let out = self.repo.path(&format!("check-{}.raw", &id[..8]));
            self.repo
                .ok(&["restore", id, out.to_str().unwrap(), "--overwrite"]);
            assert_same_file(&out, expected);
            std::fs::remove_file(&out).unwrap();
            tags.push(tag.to_string());
        }
        tags
    }
}

/// Asserts a failed command failed the way an operator can act on: exit code 75
/// (transient, worth retrying: what storage faults should give) or 1, an `error:` line
/// saying what went wrong, no panic, and no claim of damage (exit 3).
pub fn assert_clean_failure(args: &[&str], out: &Output) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        matches!(out.status.code(), Some(75 | 1)),
        "lifeboat {args:?} must fail cleanly with exit 75 or 1, not {}:\n{stderr}",
        out.status
    );
    assert!(
        stderr.contains("error: ") && !stderr.contains("panicked"),
        "lifeboat {args:?} failed without a clear error:\n{stderr}"
    );
}
