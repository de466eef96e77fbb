//! Bad input: each mistake an operator can make gets a clear error that says what is
//! wrong and what to do, and changes nothing.

mod support;

use support::disk::mixed_disk;
use support::{Kind, TestRepo, s3};

#[test]
fn wrong_passphrase_is_refused_and_changes_nothing() {
    for kind in [Kind::Local, Kind::S3] {
        let repo = TestRepo::init(kind);
        let before: Vec<String> = repo.keys("");
        let out = repo
            .cmd()
            .env("LIFEBOAT_PASSWORD", "not the passphrase")
            .args(["snapshots"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1));
        assert!(text.contains("passphrase does not open"), "{text}");
        assert!(
            !text.contains("not the passphrase"),
            "the passphrase must never be printed"
        );
        assert_eq!(repo.keys(""), before);
    }
}

#[test]
fn missing_repository_and_double_init() {
    let repo = TestRepo::new(Kind::Local);
    let text = repo.fails(&["snapshots"], 1);
    assert!(
        text.contains("no Lifeboat repository") && text.contains("init"),
        "{text}"
    );
    repo.ok(&["init"]);
    let text = repo.fails(&["init"], 1);
    assert!(text.contains("already exists"), "{text}");
}

#[test]
fn bad_fixed_chunk_sizes_are_refused_and_create_nothing() {
    let repo = TestRepo::new(Kind::Local);
    for bad in ["1000", "6000", "8MiB"] {
        let text = repo.fails(&["init", "--fixed-chunks", bad], 1);
        assert!(
            text.contains("fixed chunk size") && text.contains("multiple of 4096"),
            "{bad}: {text}"
        );
    }
    let text = repo.fails(
        &["init", "--fixed-chunks", "64KiB", "--chunk-avg", "1MiB"],
        2,
    );
    assert!(text.contains("cannot be used with"), "{text}");
    // Nothing was written: a good init still succeeds and records the chunking.
    let out = repo.ok(&["--json", "init", "--fixed-chunks", "64KiB"]);
    let init: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(init["fixed_chunk_size"], 65536, "{out}");
}

#[test]
fn missing_bucket_is_named() {
    let url = s3::server().repo_url("never-created-bucket");
    let repo = TestRepo::new(Kind::Local);
    let out = repo
        .cmd()
        .env("LIFEBOAT_REPO", &url)
        .args(["init"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("never-created-bucket") && text.contains("does not exist"),
        "{text}"
    );
    assert!(text.contains("--create-bucket"), "says what to do: {text}");
}

#[test]
fn unreachable_endpoint_fails_fast_and_clearly() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("s3://bucket/p?endpoint=http://127.0.0.1:{port}");
    let repo = TestRepo::new(Kind::Local);
    let started = std::time::Instant::now();
    let out = repo
        .cmd()
        .env("LIFEBOAT_REPO", &url)
        .args(["snapshots"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    // 75 (EX_TEMPFAIL): transient, worth retrying — the daemon retries on it.
    assert_eq!(out.status.code(), Some(75), "{text}");
    assert!(text.contains("unreachable"), "{text}");
    assert!(
        started.elapsed().as_secs() < 60,
        "gave up after {:?}",
        started.elapsed()
    );
}

#[test]
fn bad_credentials_are_reported_without_the_secret() {
    // A second server that enforces authentication: our keys are unknown to it.
    let strict = s3::start_moto(&[("INITIAL_NO_AUTH_ACTION_COUNT", "0")]);
    let repo = TestRepo::new(Kind::Local);
    let out = repo
        .cmd()
        .env("LIFEBOAT_REPO", strict.repo_url("bucket"))
        .args(["init", "--create-bucket"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("access denied") && text.contains("credentials"),
        "{text}"
    );
    assert!(
        !text.contains(s3::SECRET_KEY),
        "the secret key must never be printed"
    );
}

#[test]
fn missing_image_and_missing_passphrase() {
    let repo = TestRepo::init(Kind::Local);
    let text = repo.fails(
        &[
            "backup",
            "--vm",
            "web01",
            repo.path("nope.img").to_str().unwrap(),
        ],
        1,
    );
    assert!(
        text.contains("nope.img") && text.contains("does not exist"),
        "{text}"
    );
    assert!(repo.json(&["snapshots"]).as_array().unwrap().is_empty());

    let out = repo
        .cmd()
        .env_remove("LIFEBOAT_PASSWORD")
        .args(["snapshots"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text.contains("LIFEBOAT_PASSWORD") && text.contains("--password-file"),
        "{text}"
    );
}

#[test]
fn key_slots_add_list_remove() {
    let repo = TestRepo::init(Kind::Local);
    let img = repo.path("d.img");
    mixed_disk(&img, 2);
    repo.backup("vm", "d", &img);
    let out = repo
        .cmd()
        .env("LIFEBOAT_NEW_PASSWORD", "second operator")
        .args(["key", "add", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let keys = repo.json(&["key", "list"]);
    assert_eq!(keys.as_array().unwrap().len(), 2);
    let first = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["current"] == true)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // The slot in use cannot remove itself; the other passphrase can remove it.
    let text = repo.fails(&["key", "remove", &first], 1);
    assert!(text.contains("unlock with another passphrase"), "{text}");
    let out = repo
        .cmd()
        .env("LIFEBOAT_PASSWORD", "second operator")
        .args(["key", "remove", &first])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    repo.fails(&["snapshots"], 1);
    let out = repo
        .cmd()
        .env("LIFEBOAT_PASSWORD", "second operator")
        .args(["snapshots", "--json"])
        .output()
        .unwrap();
    let snaps: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(snaps.as_array().unwrap().len(), 1);
}
