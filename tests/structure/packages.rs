//! Which packages the check covers and where their crates start, read from the root
//! `Cargo.toml` so that a crate added to `[workspace] members` is covered without
//! touching the check.

use std::path::Path;

use super::sources::{Sources, join};

pub struct Package {
    /// Relative to the workspace root; empty for the root package.
    pub dir: String,
    /// Root files of its library, binaries and examples: each starts a crate whose
    /// module graph must have no loop. Test and bench targets are test code.
    pub crate_roots: Vec<String>,
}

impl Package {
    /// Whether `path` is in this package's `tests/` or `benches/`, where functions
    /// may be long (fixtures, scenarios).
    pub fn holds_as_test_code(&self, path: &str) -> bool {
        ["tests", "benches"]
            .iter()
            .any(|dir| path.starts_with(&format!("{}/", join(&self.dir, dir))))
    }
}

/// Every workspace member, and every package the workspace excludes (the fuzz
/// targets: built apart, but they are our code and import our crates' paths).
pub fn packages(root: &Path, sources: &Sources) -> Vec<Package> {
    let manifest = read_manifest(&root.join("Cargo.toml"));
    let workspace = manifest
        .get("workspace")
        .and_then(|w| w.as_table())
        .expect("the root Cargo.toml has a [workspace]");
    let mut dirs = Vec::new();
    for entry in strings(workspace.get("members")) {
        dirs.extend(expand(root, &entry));
    }
    for entry in strings(workspace.get("exclude")) {
        dirs.extend(expand(root, &entry));
    }
    dirs.into_iter()
        .map(|dir| {
            let manifest = read_manifest(&root.join(&dir).join("Cargo.toml"));
            let crate_roots = crate_roots(&dir, &manifest, sources);
            Package { dir, crate_roots }
        })
        .collect()
}

/// The package directories a `members` or `exclude` entry names: itself, or for
/// `dir/*` each subdirectory with a `Cargo.toml`.
fn expand(root: &Path, entry: &str) -> Vec<String> {
    let Some(prefix) = entry.strip_suffix("/*") else {
        let dir = join("", entry);
        return if root.join(&dir).join("Cargo.toml").is_file() {
            vec![dir]
        } else {
            Vec::new()
        };
    };
    assert!(
        !prefix.contains(['*', '?', '[']),
        "workspace entry {entry}: the structure check understands only `dir/*` globs"
    );
    let mut dirs: Vec<String> = std::fs::read_dir(root.join(prefix))
        .map(|entries| entries.flatten().collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.path().join("Cargo.toml").is_file())
        .map(|e| join(prefix, &e.file_name().to_string_lossy()))
        .collect();
    dirs.sort();
    dirs
}

/// The root files Cargo would build as the package's library, binaries and
/// examples: the paths its manifest declares, and the ones it finds by convention.
pub fn crate_roots(dir: &str, manifest: &toml::Table, sources: &Sources) -> Vec<String> {
    let mut roots: Vec<String> = Vec::new();
    if let Some(path) = manifest
        .get("lib")
        .and_then(|lib| lib.get("path"))
        .and_then(|p| p.as_str())
    {
        roots.push(join(dir, path));
    }
    for kind in ["bin", "example"] {
        let targets = manifest.get(kind).and_then(|t| t.as_array());
        for target in targets.into_iter().flatten() {
            if let Some(path) = target.get("path").and_then(|p| p.as_str()) {
                roots.push(join(dir, path));
            }
        }
    }
    roots.push(join(dir, "src/lib.rs"));
    roots.push(join(dir, "src/main.rs"));
    for targets in ["src/bin", "examples"] {
        let prefix = format!("{}/", join(dir, targets));
        let found = sources.paths().filter(|path| {
            path.strip_prefix(&prefix)
                .is_some_and(|rest| match rest.split_once('/') {
                    None => true,
                    Some((_, file)) => file == "main.rs",
                })
        });
        roots.extend(found.map(str::to_owned));
    }
    roots.retain(|root| sources.exists(root));
    roots.sort();
    roots.dedup();
    roots
}

fn read_manifest(path: &Path) -> toml::Table {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.parse()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn strings(value: Option<&toml::Value>) -> Vec<String> {
    let items = value.and_then(|v| v.as_array());
    items
        .into_iter()
        .flatten()
        .filter_map(|item| item.as_str().map(str::to_owned))
        .collect()
}
