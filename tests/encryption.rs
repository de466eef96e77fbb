//! Nothing in the bucket is readable without the key.

mod support;

use support::disk::{Fill, make_disk, random_bytes};
use support::{Kind, TestRepo};

const MARKER: &[u8] = b"LIFEBOAT-PLAINTEXT-MARKER-0451-do-not-leak";

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn no_object_in_the_bucket_contains_plaintext() {
    let repo = TestRepo::init(Kind::S3);
    let img = repo.path("secret.img");
    // The marker many times: alone (compressible) and between random bytes (stored raw).
    let mut fills = vec![Fill::Bytes(MARKER.repeat(50_000))];
    for i in 0..200 {
        fills.push(Fill::Bytes(random_bytes(i, 10_000)));
        fills.push(Fill::Bytes(MARKER.to_vec()));
    }
    make_disk(&img, &fills);
    repo.ok(&[
        "backup",
        "--vm",
        "payroll-db",
        "--disk",
        "confidential-disk",
        "--tag",
        "secret-tag",
        img.to_str().unwrap(),
    ]);

    let keys = repo.keys("");
    assert!(
        keys.iter().any(|k| k.starts_with("data/"))
            && keys.iter().any(|k| k.starts_with("snapshots/"))
    );
    for key in &keys {
        let bytes = repo.get(key);
        for needle in [
            MARKER,
            b"payroll-db",
            b"confidential-disk",
            b"secret-tag",
            b"secret.img",
        ] {
            assert!(
                !contains(&bytes, needle),
                "{key} contains {:?}",
                String::from_utf8_lossy(needle)
            );
        }
        assert!(
            !contains(&bytes, support::PASSWORD.as_bytes()),
            "{key} contains the passphrase"
        );
    }
    // The only plaintext object is the format marker.
    let marker = String::from_utf8(repo.get("lifeboat-repository.json")).unwrap();
    assert!(marker.contains("lifeboat-repository"), "{marker}");
    let out = repo.path("back.img");
    repo.restore("latest", &out);
    support::assert_same_file(&out, &img);
}
