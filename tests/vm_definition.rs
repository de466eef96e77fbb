//! A backup records the VM's definition next to its disk (FORMAT.md §16), so that a
//! drill or failover boots the disk as it ran: from a libvirt domain XML or
//! Lifeboat's JSON given with `--definition` (the live path, over QMP, is in
//! live_vm.rs). A definition that cannot be read stops the backup before anything
//! is written.

mod support;

use support::{Kind, TestRepo};

const DOMAIN: &str = r#"<domain type='kvm'>
  <name>erp-db</name>
  <memory unit='MiB'>2048</memory>
  <vcpu>2</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <devices>
    <disk type='file' device='disk'>
      <source file='IMAGE'/><target dev='sda' bus='sata'/>
    </disk>
    <interface type='network'>
      <mac address='52:54:00:00:00:01'/><source network='prod-lan'/>
    </interface>
  </devices>
</domain>"#;

#[test]
fn backups_record_the_definition_they_are_given() {
    let repo = TestRepo::init(Kind::Local);
    let image = repo.path("root.img");
    std::fs::write(&image, vec![7u8; 1 << 20]).unwrap();
    let xml = repo.path("erp-db.xml");
    std::fs::write(&xml, DOMAIN.replace("IMAGE", image.to_str().unwrap())).unwrap();

    let out = repo.json(&[
        "backup",
        "--vm",
        "erp-db",
        "--disk",
        "root",
        "--definition",
        xml.to_str().unwrap(),
        image.to_str().unwrap(),
    ]);
    let d = &out["snapshot"]["vm_definition"];
    assert_eq!(d["source"], "libvirt", "{out}");
    assert_eq!(
        (d["cpus"].as_u64(), d["memory_mib"].as_u64()),
        (Some(2), Some(2048))
    );
    // The domain's disk whose source is the image gets its name in the repository.
    assert_eq!(
        d["disks"],
        serde_json::json!([{"name": "root", "bus": "sata"}])
    );
    assert_eq!(d["nics"][0]["network"], "prod-lan");

    // It is in the sealed manifest, so a listing (from the catalog) shows it too.
    let listed = repo.json(&["snapshots", "--vm", "erp-db"]);
    assert_eq!(listed[0]["vm_definition"], *d);

    let json = repo.path("web.json");
    std::fs::write(
        &json,
        r#"{"source":"config","cpus":1,"memory_mib":512,"disks":[{"name":"root","bus":"ide"}]}"#,
    )
    .unwrap();
    let out = repo.json(&[
        "backup",
        "--vm",
        "web",
        "--disk",
        "root",
        "--definition",
        json.to_str().unwrap(),
        image.to_str().unwrap(),
    ]);
    assert_eq!(
        out["snapshot"]["vm_definition"]["disks"][0]["bus"], "ide",
        "{out}"
    );
}

#[test]
fn a_bad_definition_stops_the_backup_before_anything_is_written() {
    let repo = TestRepo::init(Kind::Local);
    let image = repo.path("root.img");
    std::fs::write(&image, vec![7u8; 1 << 20]).unwrap();
    let cases = [
        (
            "truncated.xml",
            "<domain><vcpu>2</vcpu>",
            "libvirt domain XML",
        ),
        (
            "zero-cpus.json",
            r#"{"source":"config","cpus":0,"memory_mib":512,"disks":[]}"#,
            "cpus = 0",
        ),
        (
            "typo.json",
            r#"{"source":"config","cpu":2}"#,
            "not Lifeboat's JSON definition",
        ),
    ];
    for (name, text, expect) in cases {
        let path = repo.path(name);
        std::fs::write(&path, text).unwrap();
        let err = repo.fails(
            &[
                "backup",
                "--vm",
                "web",
                "--definition",
                path.to_str().unwrap(),
                image.to_str().unwrap(),
            ],
            1,
        );
        assert!(err.contains(expect) && err.contains(name), "{name}: {err}");
    }
    let err = repo.fails(
        &[
            "backup",
            "--vm",
            "web",
            "--definition",
            "/nonexistent.xml",
            image.to_str().unwrap(),
        ],
        1,
    );
    assert!(
        err.contains("cannot read VM definition /nonexistent.xml"),
        "{err}"
    );
    let listed = repo.json(&["snapshots"]);
    assert_eq!(listed, serde_json::json!([]), "nothing was written");
}
