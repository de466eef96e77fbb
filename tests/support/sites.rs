//! Two sites for replication tests: a primary repository and a replica of it, each
//! with its own passphrase (and, for S3, its own server process), and the CLI run
//! the way the secondary site runs it (pull).

use std::process::{Command, Output};

use super::{Kind, PASSWORD, TestRepo, s3};

/// The secondary site's passphrase: never the primary's, so a test catches a side
/// opened with the other side's passphrase.
pub const SECONDARY_PASSWORD: &str = "a different passphrase at the second site";

pub struct Sites {
    pub primary: TestRepo,
    pub secondary: TestRepo,
    /// Extra environment of every command at the secondary (e.g. the AWS shared
    /// credentials file its addresses' `profile=` names).
    pub env: Vec<(String, String)>,
}

impl Sites {
    /// A primary (initialised) and a secondary (not yet initialised), the secondary on
    /// the second S3 server when it is S3.
    pub fn new(primary: Kind, secondary: Kind) -> Self {
        Self::with_primary(TestRepo::init(primary), secondary)
    }

    pub fn with_primary(primary: TestRepo, secondary: Kind) -> Self {
        Self {
            primary,
            secondary: TestRepo::on(secondary, s3::second_server()),
            env: Vec::new(),
        }
    }

    /// Both sites set up: the secondary made with `init --replica-of` the primary.
    pub fn replicated(primary: Kind, secondary: Kind) -> Self {
        let sites = Self::new(primary, secondary);
        sites.init_replica(&[]);
        sites
    }

    /// The CLI at the secondary site: its repository and passphrase, the primary's
    /// passphrase as LIFEBOAT_FROM_PASSWORD.
    pub fn secondary_cmd(&self) -> Command {
        let mut c = self.secondary.cmd();
        c.env("LIFEBOAT_PASSWORD", SECONDARY_PASSWORD)
            .env("LIFEBOAT_FROM_PASSWORD", PASSWORD)
            .env_remove("LIFEBOAT_TO_PASSWORD")
            .env_remove("LIFEBOAT_FROM_PASSWORD_FILE")
            .env_remove("LIFEBOAT_TO_PASSWORD_FILE")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    pub fn run_secondary(&self, args: &[&str]) -> Output {
        self.secondary_cmd()
            .args(args)
            .output()
            .expect("running lifeboat")
    }

    /// Runs at the secondary, asserts success, returns stdout.
    pub fn secondary_ok(&self, args: &[&str]) -> String {
        let out = self.run_secondary(args);
        assert!(
            out.status.success(),
            "lifeboat {args:?} at the secondary failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn secondary_json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.secondary_ok(&[args, &["--json"]].concat());
        serde_json::from_str(&out).expect("valid JSON output")
    }

    /// `init --create-bucket --replica-of PRIMARY` at the secondary.
    pub fn init_replica(&self, extra: &[&str]) -> String {
        let primary = self.primary.url.clone();
        self.secondary_ok(
            &[
                &["init", "--create-bucket", "--replica-of", &primary],
                extra,
            ]
            .concat(),
        )
    }

    /// `replicate --from PRIMARY` (pull) at the secondary; the JSON report.
    pub fn replicate(&self, extra: &[&str]) -> serde_json::Value {
        let primary = self.primary.url.clone();
        self.secondary_json(&[&["replicate", "--from", &primary], extra].concat())
    }
}
