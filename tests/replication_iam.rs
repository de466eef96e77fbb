//! Pulling with read-only credentials: the secondary replicates from the primary's
//! bucket with a key whose IAM policy allows only s3:GetObject and s3:ListBucket there,
//! and the server enforces it (moto with IAM authorization on). Each side's keys come
//! from the `profile=` of its address, so one `replicate` uses a read-only key for the
//! source and the secondary's own read-write key for the destination.
//!
//! moto enforces signatures and policies only after `INITIAL_NO_AUTH_ACTION_COUNT`
//! requests: tests/support/moto_iam.py makes exactly that many to create the users.

mod support;

use std::path::Path;
use std::process::Command;

use support::disk::{random_bytes, write_at};
use support::faults::{FaultConfig, Proxy};
use support::sites::Sites;
use support::{Kind, TestRepo, assert_same_file, s3};

/// Requests moto_iam.py's `setup` makes (two users: user, access key, policy each).
const SETUP_REQUESTS: &str = "6";

fn iam_helper(args: &[&str]) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/moto_iam.py");
    let out = Command::new("python3")
        .arg(script)
        .args(args)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "moto_iam.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// An AWS shared credentials file with a profile per user of `keys`.
fn credentials_file(dir: &Path, keys: &serde_json::Value) -> String {
    let mut text = String::new();
    for (profile, user) in [("site-admin", "admin"), ("replica-pull", "reader")] {
        text.push_str(&format!(
            "[{profile}]\naws_access_key_id = {}\naws_secret_access_key = {}\n\n",
            keys[user][0].as_str().unwrap(),
            keys[user][1].as_str().unwrap()
        ));
    }
    let path = dir.join("aws-credentials");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn secondary_pulls_with_keys_that_cannot_write_or_delete_the_primary() {
    // moto with IAM enforcement, and its SigV4 check fixed for prefixed listings (see
    // tests/support/moto_sigv4/sitecustomize.py).
    let fix = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/moto_sigv4");
    let server = s3::start_moto(&[
        ("INITIAL_NO_AUTH_ACTION_COUNT", SETUP_REQUESTS),
        ("PYTHONPATH", fix.to_str().unwrap()),
    ]);
    let bucket = s3::unique_bucket();
    let keys = iam_helper(&["setup", &server.endpoint, &bucket]);
    // A transparent proxy: it records every request the pull makes to the primary.
    let proxy = Proxy::start(&server.endpoint, FaultConfig::none());
    let base = proxy.repo_url(&server.repo_url(&bucket));

    let mut primary = TestRepo::on(Kind::S3, &server);
    let creds = credentials_file(primary.work.path(), &keys);
    let profiles = [
        ("AWS_SHARED_CREDENTIALS_FILE".to_string(), creds.clone()),
        (
            "AWS_CONFIG_FILE".to_string(),
            primary.path("no-aws-config").display().to_string(),
        ),
    ];
    // The environment's AWS_ACCESS_KEY_ID (the shared test key) is unknown to this
    // server: every command below works only because the profile's keys win.
    primary.url = format!("{base}&profile=site-admin");
    let admin = |args: &[&str]| {
        let out = primary
            .cmd()
            .envs(profiles.clone())
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    admin(&["init", "--create-bucket", "--pack-size", "1MiB"]);
    let img = primary.path("web01.img");
    std::fs::write(&img, random_bytes(5, 3 << 20)).unwrap();
    let mut versions = Vec::new();
    for tag in ["v1", "v2"] {
        if tag == "v2" {
            write_at(&img, 1 << 20, &random_bytes(6, 512 << 10));
        }
        let image = img.display().to_string();
        admin(&[
            "backup", "--vm", "web01", "--disk", "root", "--tag", tag, &image,
        ]);
        let copy = primary.path(&format!("expect-{tag}.raw"));
        std::fs::copy(&img, &copy).unwrap();
        versions.push((tag, copy));
    }

    // The server enforces the policy: the read-only key may list, not write or delete.
    let reader = &keys["reader"];
    let probe = iam_helper(&[
        "probe",
        &server.endpoint,
        &bucket,
        reader[0].as_str().unwrap(),
        reader[1].as_str().unwrap(),
        "lifeboat/lifeboat-repository.json",
    ]);
    assert_eq!(probe["put"], 403, "{probe}");
    assert_eq!(probe["delete"], 403, "{probe}");
    assert_eq!(probe["list"], 200, "{probe}");
    // Through Lifeboat too: a backup with the read-only profile is refused.
    let pull_url = format!("{base}&profile=replica-pull");
    let image = img.display().to_string();
    let refused = primary
        .cmd()
        .envs(profiles.clone())
        .env("LIFEBOAT_REPO", &pull_url)
        .args(["backup", "--vm", "web01", "--disk", "root", &image])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("access denied"), "{stderr}");
    // And without a profile, the environment's key is refused.
    let anonymous = primary
        .cmd()
        .env("LIFEBOAT_REPO", &base)
        .args(["snapshots"])
        .output()
        .unwrap();
    assert!(
        !anonymous.status.success(),
        "moto does not enforce authentication"
    );

    // The secondary: its own bucket on the second server with the environment's keys,
    // the primary read with the read-only profile.
    let mut primary_at_secondary = TestRepo::on(Kind::S3, &server);
    primary_at_secondary.url = pull_url;
    let mut sites = Sites::with_primary(primary_at_secondary, Kind::S3);
    sites.env = profiles.to_vec();
    proxy.take_seen();
    sites.init_replica(&["--pack-size", "1MiB"]);
    let report = sites.replicate(&[]);
    assert_eq!(report["snapshots_copied"], 2, "{report}");
    let seen = proxy.take_seen();
    let writes: Vec<_> = seen
        .iter()
        .filter(|s| !matches!(s.method.as_str(), "GET" | "HEAD"))
        .collect();
    assert!(
        writes.is_empty(),
        "the pull tried to write the primary: {writes:?}"
    );
    let denied: Vec<_> = seen.iter().filter(|s| s.status == Some(403)).collect();
    assert!(denied.is_empty(), "the pull was refused reads: {denied:?}");

    // Everything restores from the secondary; both sides verify clean.
    sites.secondary_ok(&["verify", "--read-data"]);
    let list = sites.secondary_json(&["snapshots"]);
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    for s in list.as_array().unwrap() {
        let tag = s["tags"][0].as_str().unwrap();
        let (_, expected) = versions.iter().find(|(t, _)| *t == tag).unwrap();
        let out = sites.secondary.path(&format!("restored-{tag}.raw"));
        let out_arg = out.display().to_string();
        sites.secondary_ok(&["restore", s["id"].as_str().unwrap(), &out_arg]);
        assert_same_file(&out, expected);
    }
    // A profile that is not in the file: a clear error naming it, exit 1.
    let out = sites.run_secondary(&["replicate", "--from", &format!("{base}&profile=nope")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("source repository") && stderr.contains("AWS profile \"nope\""),
        "{stderr}"
    );
    let check = primary
        .cmd()
        .envs(profiles)
        .args(["verify", "--read-data"])
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");
}
