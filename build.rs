//! Build script of the `lifeboat` binary: records the commit it was built from, so
//! `lifeboat --version` says exactly which code a site runs ("0.1.0 (4d2af06)"; a
//! build outside a git checkout says "unknown", one with uncommitted changes adds
//! "-modified").

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    let commit = git(&["rev-parse", "--short=7", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let modified =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    let suffix = if modified { "-modified" } else { "" };
    println!("cargo:rustc-env=LIFEBOAT_COMMIT={commit}{suffix}");
    // A new commit moves HEAD or the branch it names. (Not the index: every `git add`
    // would relink the binary; "-modified" is for builds from a dirty tree, not dev.)
    for path in [".git/HEAD", ".git/packed-refs"] {
        println!("cargo:rerun-if-changed={path}");
    }
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        println!("cargo:rerun-if-changed=.git/{branch}");
    }
}
