//! Harness of the replication fault and crash tests: a primary with a few snapshots
//! (small packs, so a run uploads many), and fresh secondaries made with
//! `init --replica-of` it, each reached through its own [`Proxy`] (the link between
//! the sites), plus the check that defines "nothing was lost" for a replica.

use std::path::PathBuf;
use std::process::{Command, Output};

use super::chaos::{ATTEMPT_TIMEOUT_SECS, COMMAND_LIMIT};
use super::disk::{random_bytes, write_at};
use super::faults::{FaultConfig, Proxy};
use super::sites::SECONDARY_PASSWORD;
use super::{Kind, PASSWORD, TestRepo, assert_same_file, output_within, s3};

/// Pack size of both sites: small, so a replication uploads a dozen packs.
pub const PACK_SIZE: &str = "1MiB";

/// The primary site: a repository with three nightly snapshots of one disk.
pub struct Primary {
    pub repo: TestRepo,
    /// (tag, what the snapshot restores to), oldest first.
    pub versions: Vec<(String, PathBuf)>,
}

impl Primary {
    /// Three snapshots (`v1`..`v3`) of a 4 MiB disk, 1 MiB of it rewritten each night.
    pub fn new(seed: u64) -> Primary {
        let repo = TestRepo::init_with(
            Kind::S3,
            &["--pack-size", PACK_SIZE, "--chunk-avg", "64KiB"],
        );
        let img = repo.path("web01.img");
        std::fs::write(&img, random_bytes(seed, 4 << 20)).unwrap();
        let mut versions = Vec::new();
        for n in 1..=3u64 {
            if n > 1 {
                write_at(&img, n * 900_000, &random_bytes(seed + n, 1 << 20));
            }
            let tag = format!("v{n}");
            let image = img.display().to_string();
            repo.ok(&[
                "backup", "--vm", "web01", "--disk", "root", "--tag", &tag, &image,
            ]);
            let copy = repo.path(&format!("expect-{tag}.raw"));
            std::fs::copy(&img, &copy).unwrap();
            versions.push((tag, copy));
            // Snapshot times have millisecond resolution; keep them distinct.
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        Primary { repo, versions }
    }

    /// `verify --read-data` is clean and the snapshot list is what it was made with:
    /// replication never changes the primary.
    pub fn check_unchanged(&self) {
        self.repo.ok(&["verify", "--read-data"]);
        let tags: Vec<String> = tags_of(&self.repo.json(&["snapshots"]));
        let want: Vec<&String> = self.versions.iter().map(|(t, _)| t).collect();
        assert_eq!(tags.iter().collect::<Vec<_>>(), want, "the primary changed");
    }
}

/// A secondary site on the second S3 server, reached through `proxy`.
pub struct Secondary {
    pub repo: TestRepo,
    /// The link between the sites, on the secondary's side.
    pub proxy: Proxy,
    /// The secondary's repository URL through the proxy.
    pub url: String,
}

impl Secondary {
    /// A fresh replica of `primary` (initialised on the fault-free path).
    pub fn new(primary: &Primary, config: FaultConfig) -> Secondary {
        let server = s3::second_server();
        let repo = TestRepo::on(Kind::S3, server);
        let proxy = Proxy::start(&server.endpoint, config);
        let url = proxy.repo_url(&repo.url);
        let secondary = Secondary { repo, proxy, url };
        let out = secondary
            .direct()
            .args(["init", "--create-bucket", "--pack-size", PACK_SIZE])
            .args(["--replica-of", &primary.repo.url])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        secondary
    }

    /// The CLI at the secondary site, straight to its server (checks).
    pub fn direct(&self) -> Command {
        let mut c = self.repo.cmd();
        c.env("LIFEBOAT_PASSWORD", SECONDARY_PASSWORD)
            .env("LIFEBOAT_FROM_PASSWORD", PASSWORD)
            .env("LIFEBOAT_S3_TIMEOUT", ATTEMPT_TIMEOUT_SECS.to_string());
        c
    }

    /// The CLI at the secondary site, its own repository through the proxy.
    pub fn linked(&self) -> Command {
        let mut c = self.direct();
        c.env("LIFEBOAT_REPO", &self.url);
        c
    }

    /// `replicate --from FROM --uploads 2 --json` through the proxy.
    pub fn replicate(&self, from: &str) -> Output {
        output_within(self.linked().args(replicate_args(from)), COMMAND_LIMIT)
    }

    /// The secondary's snapshot tags, oldest first (fault-free path).
    pub fn tags(&self) -> Vec<String> {
        let out = self
            .direct()
            .args(["snapshots", "--json"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        tags_of(&serde_json::from_slice(&out.stdout).unwrap())
    }

    /// Nothing lost: `verify --read-data` clean, every snapshot there restores
    /// byte-identical to the primary's disk of that night, and (when `complete`) all
    /// of the primary's snapshots are there. Returns the tags present.
    pub fn check(&self, primary: &Primary, complete: bool) -> Vec<String> {
        let verify = self
            .direct()
            .args(["verify", "--read-data"])
            .output()
            .unwrap();
        assert!(
            verify.status.success(),
            "verify --read-data on the secondary: {}",
            String::from_utf8_lossy(&verify.stderr)
        );
        let out = self
            .direct()
            .args(["snapshots", "--json"])
            .output()
            .unwrap();
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        for s in list.as_array().unwrap() {
            let (id, tag) = (s["id"].as_str().unwrap(), s["tags"][0].as_str().unwrap());
            let (_, expected) = primary
                .versions
                .iter()
                .find(|(t, _)| t == tag)
                .unwrap_or_else(|| panic!("unknown snapshot {tag} on the secondary"));
            let dest = self.repo.path(&format!("restored-{tag}.raw"));
            let dest_arg = dest.display().to_string();
            let out = self
                .direct()
                .args(["restore", id, &dest_arg, "--overwrite"])
                .output()
                .unwrap();
            assert!(out.status.success(), "restore {tag}: {out:?}");
            assert_same_file(&dest, expected);
            std::fs::remove_file(&dest).unwrap();
        }
        let tags = tags_of(&list);
        if complete {
            let want: Vec<String> = primary.versions.iter().map(|(t, _)| t.clone()).collect();
            assert_eq!(tags, want, "the secondary lacks snapshots of the primary");
        }
        tags
    }
}

pub fn replicate_args(from: &str) -> Vec<String> {
    ["replicate", "--from", from, "--uploads", "2", "--json"]
        .map(String::from)
        .to_vec()
}

/// Tags (first tag of each snapshot) of a `snapshots --json` list, oldest first.
pub fn tags_of(list: &serde_json::Value) -> Vec<String> {
    let mut snaps: Vec<(String, String)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["time"].as_str().unwrap_or_default().to_string(),
                s["tags"][0].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    snaps.sort();
    snaps.into_iter().map(|(_, tag)| tag).collect()
}
