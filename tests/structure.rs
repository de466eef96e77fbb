//! The structure check of issue 16, run by `cargo test` and so by CI: no import
//! loop between the modules (files) of any crate, no file over 600 lines, no
//! function over 80 lines outside tests.
//!
//! It reads the syntax of every crate of the workspace (syn), found from the root
//! `Cargo.toml`, so a crate added to `[workspace] members` is covered as soon as it is
//! added. There is no allow-list: a violation is fixed, not excused.
//!
//! The helpers live in `tests/structure/`; `#[path]` keeps Cargo from taking them for
//! test targets of their own.

#[path = "structure/attrs.rs"]
mod attrs;
#[path = "structure/check.rs"]
mod check;
#[path = "structure/cycles.rs"]
mod cycles;
#[path = "structure/fixtures.rs"]
mod fixtures;
#[path = "structure/imports.rs"]
mod imports;
#[path = "structure/lengths.rs"]
mod lengths;
#[path = "structure/modules.rs"]
mod modules;
#[path = "structure/packages.rs"]
mod packages;
#[path = "structure/sources.rs"]
mod sources;

use std::path::Path;

#[test]
fn workspace_has_no_import_loop_long_file_or_long_function() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let sources = sources::Sources::load(root);
    let packages = packages::packages(root, &sources);
    let report = check::check(&sources, &packages);
    assert!(report.is_clean(), "{report}");
}
