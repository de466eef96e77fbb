//! `lifeboat --version` names the commit the binary was built from, so an operator
//! (or a bug report) can say exactly which code a site runs.

use std::process::Command;

#[test]
fn version_names_the_commit_it_was_built_from() {
    let out = Command::new(env!("CARGO_BIN_EXE_lifeboat"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let prefix = concat!("lifeboat ", env!("CARGO_PKG_VERSION"), " (");
    assert!(text.starts_with(prefix), "{text}");
    let head = Command::new("git")
        .args(["rev-parse", "--short=7", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    match head {
        Some(commit) => assert!(text.contains(&format!("({commit}")), "{text} vs {commit}"),
        None => assert!(text.contains("(unknown)"), "{text}"),
    }
}
