//! The floors between crates (docs/ARCHITECTURE.md): which of our crates each crate
//! may depend on. Run by `cargo test`, so by CI: a dependency that points up or
//! sideways (say `replicator` on `backup`) fails here, before it becomes a loop that
//! four features are built on.
//!
//! `tests/structure.rs` checks the modules inside each crate; this checks the crates.

use std::collections::BTreeSet;
use std::path::Path;

/// Each crate of ours, and the crates of ours it may use. Keep in step with the
/// crate table of docs/ARCHITECTURE.md.
const FLOORS: &[(&str, &[&str])] = &[
    // Pure data and decisions; no I/O, nothing of ours.
    ("lifeboat-policies", &[]),
    // The format, keys, backends, catalog and the shared read/write paths.
    ("lifeboat-store", &[]),
    // QMP, NBD, qemu-nbd / qemu-img: knows nothing about repositories.
    ("lifeboat-hypervisor", &[]),
    (
        "lifeboat-backup",
        &["lifeboat-store", "lifeboat-hypervisor"],
    ),
    (
        "lifeboat-restore",
        &["lifeboat-store", "lifeboat-hypervisor"],
    ),
    // Never `backup`: replication, standby, drills and failover read and write
    // repositories through `store`, and start VMs through `hypervisor`.
    (
        "lifeboat-replicator",
        &[
            "lifeboat-store",
            "lifeboat-hypervisor",
            "lifeboat-restore",
            "lifeboat-policies",
        ],
    ),
    // Metadata points are sealed and stored through the store's backends only; what
    // goes into them is the binary's business (it reads the configuration).
    ("lifeboat-metadata", &["lifeboat-store"]),
];

/// The binary maps arguments to library requests: it may use every crate.
const BINARY: &str = "lifeboat";

#[test]
fn every_crate_depends_only_on_the_floors_below_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let workspace = read_toml(&root.join("Cargo.toml"));
    let members = workspace["workspace"]["members"]
        .as_array()
        .expect("[workspace] members is a list");
    let mut problems = Vec::new();
    for member in members {
        let dir = root.join(member.as_str().expect("members are paths"));
        let manifest = read_toml(&dir.join("Cargo.toml"));
        let name = manifest["package"]["name"]
            .as_str()
            .expect("every member has a package name");
        let ours = our_dependencies(&manifest);
        if name == BINARY {
            continue;
        }
        let Some((_, allowed)) = FLOORS.iter().find(|(crate_name, _)| *crate_name == name) else {
            problems.push(format!(
                "{name}: not in the floors table of tests/layering.rs; add it there and to \
                 the crate table of docs/ARCHITECTURE.md, with the crates it may use"
            ));
            continue;
        };
        for dep in ours.difference(&allowed.iter().map(|s| s.to_string()).collect()) {
            problems.push(format!(
                "{name} depends on {dep}, which is not below it (allowed: {}); move the \
                 shared code down into a crate both may use",
                if allowed.is_empty() {
                    "none of ours".to_string()
                } else {
                    allowed.join(", ")
                }
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Our crates named in `[dependencies]` (dev-dependencies are test code).
fn our_dependencies(manifest: &toml::Table) -> BTreeSet<String> {
    manifest
        .get("dependencies")
        .and_then(|d| d.as_table())
        .into_iter()
        .flat_map(|deps| deps.keys())
        .filter(|name| name.starts_with("lifeboat"))
        .cloned()
        .collect()
}

fn read_toml(path: &Path) -> toml::Table {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.parse()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
