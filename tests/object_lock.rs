//! Immutable repositories on a real S3 server with Object Lock (moto enforces it):
//! every pack, index object and manifest is locked when written; a locked object
//! cannot be deleted; forget keeps locked snapshots and says so; prune skips locked
//! objects, reports them, and everything still restores.

mod support;

use std::time::{Duration, SystemTime};

use support::disk::random_bytes;
use support::{Kind, TestRepo, assert_same_file};

fn id(report: &serde_json::Value) -> String {
    report["snapshot"]["id"].as_str().unwrap().to_string()
}

#[test]
fn locked_objects_survive_forget_and_prune() {
    let repo = TestRepo::new(Kind::S3);
    let init = repo.json(&["init", "--create-bucket", "--immutable", "1h"]);
    assert_eq!(init["immutability"]["period_secs"], 3600, "{init}");
    assert_eq!(init["immutability"]["mode"], "compliance", "{init}");

    let img = repo.path("d.img");
    std::fs::write(&img, random_bytes(1, 2 << 20)).unwrap();
    let first = id(&repo.backup("vm", "d", &img));
    let copy1 = repo.path("d1.copy");
    std::fs::copy(&img, &copy1).unwrap();
    std::fs::write(&img, random_bytes(2, 2 << 20)).unwrap();
    let second = id(&repo.backup("vm", "d", &img));

    // Every kind of history object carries a lock about an hour long.
    let soon = SystemTime::now() + Duration::from_secs(50 * 60);
    for prefix in ["data/", "index/", "snapshots/"] {
        let keys = repo.keys(prefix);
        assert!(!keys.is_empty(), "{prefix}");
        for key in keys {
            let until = repo
                .retain_until(&key)
                .unwrap_or_else(|| panic!("{key} is not locked"));
            assert!(until > soon, "{key} locked only until {until:?}");
        }
    }
    // Key slots and config are not history: they stay replaceable.
    assert!(repo.retain_until("config").is_none());

    // A locked object cannot be deleted, by Lifeboat or by anyone using its backend.
    let pack = repo.keys("data/")[0].clone();
    let refused = repo.try_delete(&pack).unwrap_err();
    assert!(
        refused.contains("locked (S3 Object Lock) until"),
        "{refused}"
    );
    assert!(repo.keys("data/").contains(&pack));
    // And the server itself refuses, even a delete of the exact version (boto3 is
    // installed with moto).
    let (bucket, endpoint) = bucket_and_endpoint(&repo.url);
    let script = format!(
        "import boto3,sys\n\
         s3=boto3.client('s3',endpoint_url='{endpoint}',region_name='us-east-1')\n\
         key='lifeboat/{pack}'\n\
         v=s3.head_object(Bucket='{bucket}',Key=key)['VersionId']\n\
         try:\n    s3.delete_object(Bucket='{bucket}',Key=key,VersionId=v)\nexcept Exception as e:\n    print('refused', e); sys.exit(0)\n\
         print('deleted'); sys.exit(1)\n"
    );
    let mut python = std::process::Command::new("python3");
    support::s3::set_credentials(&mut python);
    let out = python.arg("-c").arg(&script).output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.contains("refused"),
        "{said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(repo.keys("data/").contains(&pack));

    // forget cannot remove a locked snapshot: it keeps it and says so.
    let forget = repo.json(&["forget", "--keep-last", "1"]);
    assert_eq!(forget["locked"].as_array().unwrap().len(), 1, "{forget}");
    assert_eq!(repo.keys("snapshots/").len(), 2);

    // Garbage that is locked: an orphan pack (as an interrupted backup leaves, here
    // junk) written with a lock. Prune condemns it, then cannot delete it: skipped
    // and reported, like the old index objects its index rewrite cannot delete.
    let orphan = format!("data/ab/{}", "ab".repeat(32));
    repo.put_locked(&orphan, b"not a pack".to_vec(), Duration::from_secs(3600));
    std::thread::sleep(Duration::from_millis(2100));
    let mark = repo.json(&["prune", "--grace", "1s"]);
    assert_eq!(mark["mark"]["orphan_packs"], 1, "{mark}");
    let skipped_index = mark["mark"]["locked_skipped"].as_array().unwrap();
    assert!(
        skipped_index
            .iter()
            .any(|s| s[0].as_str().unwrap().starts_with("index/")),
        "{mark}"
    );
    std::thread::sleep(Duration::from_millis(1100));
    let sweep = repo.ok(&["prune", "--grace", "1s"]);
    assert!(sweep.contains("Object Lock: skipped"), "{sweep}");
    assert!(sweep.contains(&format!("{orphan} locked until")), "{sweep}");
    assert!(
        repo.keys("data/").contains(&orphan),
        "the locked orphan is still there"
    );

    // History is intact.
    for (snapshot, expected) in [(&first, &copy1), (&second, &img)] {
        let target = repo.path(&format!("{snapshot}.out"));
        repo.restore(snapshot, &target);
        assert_same_file(&target, expected);
    }
}

/// `s3://bucket/lifeboat?endpoint=URL` → (bucket, URL).
fn bucket_and_endpoint(url: &str) -> (String, String) {
    let rest = url.strip_prefix("s3://").unwrap();
    let bucket = rest.split('/').next().unwrap().to_string();
    let endpoint = rest.split("endpoint=").nth(1).unwrap().to_string();
    (bucket, endpoint)
}

#[test]
fn immutable_needs_a_bucket_with_object_lock() {
    let repo = TestRepo::new(Kind::S3);
    repo.ok(&["init", "--create-bucket"]);
    // A second repository prefix in the same plain bucket cannot be immutable.
    let url = repo.url.replace("/lifeboat?", "/lifeboat-locked?");
    let out = repo
        .cmd()
        .env("LIFEBOAT_REPO", &url)
        .args(["init", "--immutable", "30d"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("does not have S3 Object Lock enabled"),
        "{text}"
    );
}
