//! Security checks: passphrases, S3 secrets and key material never reach stdout,
//! stderr or `--json` (not even at trace log level, not in errors); what Lifeboat
//! writes locally is owner-only; `https://` endpoints are verified, and turning that
//! off takes an explicit `--insecure-tls` that warns on every run.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

use support::disk::mixed_disk;
use support::{Kind, PASSWORD, TestRepo, s3, tls};

const NEW_PASSWORD: &str = "second slot passphrase, also secret";

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Long string values of a stored key slot (wrapped key, salt, nonce): key material.
fn key_material(repo: &TestRepo) -> Vec<String> {
    fn strings(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::String(s) if s.len() >= 16 => out.push(s.clone()),
            serde_json::Value::Array(a) => a.iter().for_each(|v| strings(v, out)),
            serde_json::Value::Object(o) => o.values().for_each(|v| strings(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for key in repo.keys("keys/") {
        let slot: serde_json::Value = serde_json::from_slice(&repo.get(&key)).unwrap();
        strings(&slot, &mut out);
    }
    assert!(!out.is_empty(), "found no key material to look for");
    out
}

fn assert_no_secrets(what: &str, out: &Output, material: &[String]) {
    let all = text(out);
    for secret in [PASSWORD, NEW_PASSWORD, s3::SECRET_KEY] {
        assert!(
            !all.contains(secret),
            "{what} printed the secret {secret:?}:\n{all}"
        );
    }
    for m in material {
        assert!(!all.contains(m.as_str()), "{what} printed key material {m}");
    }
}

#[test]
fn secrets_never_appear_in_output_logs_or_errors() {
    let repo = TestRepo::new(Kind::S3);
    let img = repo.path("web01.img");
    mixed_disk(&img, 3);
    let restored = repo.path("out.img");
    let (img, restored) = (img.to_str().unwrap(), restored.to_str().unwrap());
    let mut outputs = Vec::new();
    for log in ["trace", "debug"] {
        let run = |args: &[&str]| {
            let out = repo
                .cmd()
                .env("LIFEBOAT_LOG", log)
                .env("LIFEBOAT_NEW_PASSWORD", NEW_PASSWORD)
                .args(args)
                .output()
                .unwrap();
            (format!("LIFEBOAT_LOG={log} lifeboat {args:?}"), out)
        };
        if log == "trace" {
            outputs.push(run(&["init", "--create-bucket", "--json"]));
        }
        outputs.push(run(&["backup", "--vm", "web01", img, "--json"]));
        outputs.push(run(&["snapshots", "--json"]));
        outputs.push(run(&["key", "add", "--json"]));
        outputs.push(run(&["key", "list", "--json"]));
        outputs.push(run(&["verify", "--read-data", "--json"]));
        outputs.push(run(&["restore", "latest", restored, "--overwrite"]));
    }
    for (what, out) in &outputs {
        assert!(out.status.success(), "{what} failed:\n{}", text(out));
    }
    // Failures: a wrong passphrase, and storage that cannot be reached, with trace logs.
    let wrong = repo
        .cmd()
        .env("LIFEBOAT_LOG", "trace")
        .env("LIFEBOAT_PASSWORD", format!("{PASSWORD} but wrong"))
        .args(["snapshots", "--json"])
        .output()
        .unwrap();
    assert_eq!(wrong.status.code(), Some(1), "{}", text(&wrong));
    assert!(
        text(&wrong).contains("passphrase does not open"),
        "{}",
        text(&wrong)
    );
    outputs.push(("wrong passphrase".into(), wrong));
    let unreachable = repo
        .cmd()
        .env("LIFEBOAT_LOG", "trace")
        .env(
            "LIFEBOAT_REPO",
            "s3://nowhere/x?endpoint=http://127.0.0.1:9",
        )
        .args(["snapshots"])
        .output()
        .unwrap();
    // 75: a transient failure, worth retrying.
    assert_eq!(
        unreachable.status.code(),
        Some(75),
        "{}",
        text(&unreachable)
    );
    outputs.push(("unreachable storage".into(), unreachable));

    let material = key_material(&repo);
    for (what, out) in &outputs {
        assert_no_secrets(what, out, &material);
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Every file under `dir` is 0600 and every directory 0700; returns how many files.
fn assert_owner_only(dir: &Path) -> usize {
    assert_eq!(mode(dir), 0o700, "{} must be 0700", dir.display());
    let mut files = 0;
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files += assert_owner_only(&path);
        } else {
            assert_eq!(mode(&path), 0o600, "{} must be 0600", path.display());
            files += 1;
        }
    }
    files
}

#[test]
fn key_files_objects_and_catalog_are_owner_only() {
    let repo = TestRepo::init(Kind::Local);
    let img = repo.path("web01.img");
    mixed_disk(&img, 4);
    repo.backup("web01", "root", &img);
    repo.cmd()
        .env("LIFEBOAT_NEW_PASSWORD", NEW_PASSWORD)
        .args(["key", "add"])
        .output()
        .unwrap();
    let repo_files = assert_owner_only(Path::new(&repo.url));
    assert!(
        repo_files >= 5,
        "expected keys, config, packs, index, manifest"
    );
    let cache_files = assert_owner_only(&repo.path("cache"));
    assert!(cache_files >= 1, "expected the catalog");
}

#[test]
fn https_endpoints_are_verified_and_insecure_tls_is_explicit_and_loud() {
    let repo = TestRepo::new(Kind::S3);
    let endpoint = tls::start(repo.work.path(), &s3::server().endpoint);
    let url = format!(
        "s3://{}/lifeboat?endpoint={}",
        s3::unique_bucket(),
        endpoint.endpoint
    );
    let run = |extra_env: &[(&str, &str)], args: &[&str]| {
        let mut cmd = repo.cmd();
        cmd.env("LIFEBOAT_REPO", &url)
            .env("LIFEBOAT_S3_TIMEOUT", "20")
            .env_remove("LIFEBOAT_INSECURE_TLS");
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        cmd.args(args).output().unwrap()
    };

    // A certificate from an unknown CA is refused, at once, saying why and what to do.
    let started = std::time::Instant::now();
    let refused = run(&[], &["init", "--create-bucket"]);
    let said = text(&refused);
    assert_eq!(refused.status.code(), Some(1), "{said}");
    assert!(
        said.contains("certificate"),
        "names the certificate problem: {said}"
    );
    assert!(
        said.contains("SSL_CERT_FILE"),
        "says how to trust it: {said}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "a certificate error is not retried for {:?}",
        started.elapsed()
    );

    // Trusting the certificate is the right fix: verified, and no warning.
    let cert = endpoint.ca.to_str().unwrap();
    let trusted = run(&[("SSL_CERT_FILE", cert)], &["init", "--create-bucket"]);
    assert!(trusted.status.success(), "{}", text(&trusted));
    assert!(!text(&trusted).contains("WARNING"), "{}", text(&trusted));

    // --insecure-tls works without trusting anything, and warns on every command,
    // on stderr, even with --json and --quiet.
    let flagged = run(&[], &["snapshots", "--json", "--quiet", "--insecure-tls"]);
    let stderr = String::from_utf8_lossy(&flagged.stderr);
    assert!(flagged.status.success(), "{}", text(&flagged));
    assert!(
        stderr.contains("WARNING: TLS certificate verification is OFF"),
        "{stderr}"
    );
    let json: serde_json::Value = serde_json::from_slice(&flagged.stdout).unwrap();
    assert_eq!(json, serde_json::json!([]));
    let by_env = run(&[("LIFEBOAT_INSECURE_TLS", "1")], &["snapshots"]);
    assert!(by_env.status.success(), "{}", text(&by_env));
    assert!(String::from_utf8_lossy(&by_env.stderr).contains("verification is OFF"));
}
