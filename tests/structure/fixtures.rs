//! The check on small in-memory crates: each test plants one kind of problem (or a
//! look-alike that is fine) and asserts what is found, so a check that stopped
//! seeing loops or long functions fails here rather than passing quietly.

use std::collections::BTreeMap;

use super::check::check;
use super::cycles::loops;
use super::imports::edges;
use super::lengths::{long_file, long_fns};
use super::modules::module_tree;
use super::packages::{Package, crate_roots};
use super::sources::Sources;

fn sources(files: &[(&str, &str)]) -> Sources {
    let texts: BTreeMap<String, String> = files
        .iter()
        .map(|(path, text)| (path.to_string(), text.to_string()))
        .collect();
    let sources = Sources::from_texts(texts);
    assert!(sources.unparsed.is_empty(), "{:?}", sources.unparsed);
    sources
}

/// The edges of the crate rooted at `src/lib.rs`, as `from:line -> to`.
fn crate_edges(files: &[(&str, &str)]) -> Vec<String> {
    let sources = sources(files);
    let tree = module_tree("src/lib.rs", &sources);
    edges(&tree, &sources)
        .into_iter()
        .map(|e| format!("{}:{} -> {}", e.from, e.line, e.to))
        .collect()
}

fn crate_loops(files: &[(&str, &str)]) -> Vec<Vec<String>> {
    let sources = sources(files);
    let tree = module_tree("src/lib.rs", &sources);
    loops(&edges(&tree, &sources))
        .into_iter()
        .map(|found| found.files)
        .collect()
}

/// A free function spanning exactly `lines` lines, its `fn` line and `}` included.
fn function_of(name: &str, lines: usize) -> String {
    let body = "    let _ = 1;\n".repeat(lines - 2);
    format!("fn {name}() {{\n{body}}}\n")
}

#[test]
fn two_files_that_import_each_other_are_a_loop() {
    let files = [
        ("src/lib.rs", "mod a;\nmod b;\n"),
        ("src/a.rs", "use crate::b::B;\npub struct A;\n"),
        ("src/b.rs", "\nuse crate::a::A;\npub struct B;\n"),
    ];
    assert_eq!(crate_loops(&files), [["src/a.rs", "src/b.rs"]]);
    assert_eq!(
        crate_edges(&files),
        ["src/a.rs:1 -> src/b.rs", "src/b.rs:2 -> src/a.rs"]
    );
}

#[test]
fn declaring_a_child_module_is_no_edge() {
    let files = [
        ("src/lib.rs", "mod a;\npub struct Root;\n"),
        ("src/a.rs", "use crate::Root;\n"),
    ];
    assert_eq!(crate_edges(&files), ["src/a.rs:1 -> src/lib.rs"]);
    assert!(crate_loops(&files).is_empty());
}

#[test]
fn a_super_path_in_code_is_an_edge_to_the_parent() {
    let files = [
        ("src/lib.rs", "mod gc;\n"),
        (
            "src/gc/mod.rs",
            "mod guard;\npub fn unix_now() -> u64 { 0 }\n",
        ),
        (
            "src/gc/guard.rs",
            "fn f() -> u64 {\n    super::unix_now()\n}\n",
        ),
    ];
    assert_eq!(crate_edges(&files), ["src/gc/guard.rs:2 -> src/gc/mod.rs"]);
    assert!(crate_loops(&files).is_empty());
}

#[test]
fn a_pub_use_of_a_child_in_its_parent_is_an_edge_and_can_close_a_loop() {
    let files = [
        ("src/lib.rs", "mod gc;\n"),
        (
            "src/gc/mod.rs",
            "mod guard;\npub use guard::check;\nfn helper() {}\n",
        ),
        (
            "src/gc/guard.rs",
            "pub fn check() {\n    super::helper();\n}\n",
        ),
    ];
    assert_eq!(
        crate_edges(&files),
        [
            "src/gc/guard.rs:2 -> src/gc/mod.rs",
            "src/gc/mod.rs:2 -> src/gc/guard.rs"
        ]
    );
    assert_eq!(crate_loops(&files), [["src/gc/guard.rs", "src/gc/mod.rs"]]);
}

#[test]
fn a_path_resolves_to_the_deepest_module_file_it_names() {
    let files = [
        ("src/lib.rs", "mod gc;\nmod repo;\n"),
        ("src/gc/mod.rs", "pub mod guard;\npub struct Plan;\n"),
        ("src/gc/guard.rs", "pub fn before_commit() {}\n"),
        (
            "src/repo.rs",
            "fn commit() {\n    crate::gc::guard::before_commit();\n    let _ = crate::gc::Plan;\n}\n",
        ),
    ];
    assert_eq!(
        crate_edges(&files),
        [
            "src/repo.rs:2 -> src/gc/guard.rs",
            "src/repo.rs:3 -> src/gc/mod.rs"
        ]
    );
}

#[test]
fn use_trees_globs_self_and_child_names_are_edges() {
    let files = [
        ("src/lib.rs", "mod a;\nmod b;\nmod c;\n"),
        ("src/a.rs", "mod inner;\nuse self::inner::X;\n"),
        ("src/a/inner.rs", "use super::super::b::*;\npub struct X;\n"),
        ("src/c.rs", "use crate::{\n    a::{self},\n    b::Y,\n};\n"),
        (
            "src/b.rs",
            "pub struct Y;\nfn f() {\n    child::g();\n}\nmod child;\n",
        ),
        ("src/b/child.rs", "pub fn g() {}\n"),
    ];
    assert_eq!(
        crate_edges(&files),
        [
            "src/a.rs:2 -> src/a/inner.rs",
            "src/a/inner.rs:1 -> src/b.rs",
            "src/b.rs:3 -> src/b/child.rs",
            "src/c.rs:2 -> src/a.rs",
            "src/c.rs:3 -> src/b.rs",
        ]
    );
}

#[test]
fn other_crates_locals_and_aliases_are_no_edges() {
    let files = [
        ("src/lib.rs", "mod gc;\nmod repo;\n"),
        ("src/gc/mod.rs", "pub mod guard;\n"),
        ("src/gc/guard.rs", "pub fn f() {}\n"),
        (
            "src/repo.rs",
            "use std::fmt;\nuse crate::gc::guard;\nfn g(gc: u8) {\n    guard::f();\n    \
             tokio::spawn(gc);\n    let _ = ::std::mem::size_of::<u8>();\n}\n",
        ),
    ];
    assert_eq!(crate_edges(&files), ["src/repo.rs:2 -> src/gc/guard.rs"]);
}

#[test]
fn paths_inside_macro_arguments_are_edges() {
    let files = [
        ("src/lib.rs", "mod a;\nmod b;\n"),
        (
            "src/a.rs",
            "fn f() {\n    println!(\"{}\", crate::b::NAME);\n}\n",
        ),
        ("src/b.rs", "pub const NAME: &str = \"b\";\n"),
    ];
    assert_eq!(crate_edges(&files), ["src/a.rs:2 -> src/b.rs"]);
}

#[test]
fn an_inline_module_is_part_of_its_file() {
    let files = [
        ("src/lib.rs", "mod a;\nmod b;\n"),
        (
            "src/a.rs",
            "mod inner {\n    pub fn g() {\n        super::super::b::h();\n    }\n}\n",
        ),
        (
            "src/b.rs",
            "pub fn h() {}\nfn k() {\n    crate::a::inner::g();\n}\n",
        ),
    ];
    assert_eq!(crate_loops(&files), [["src/a.rs", "src/b.rs"]]);
}

#[test]
fn test_modules_and_their_files_are_ignored() {
    let files = [
        ("src/lib.rs", "mod a;\nmod b;\n"),
        (
            "src/a.rs",
            "pub fn x() {}\n#[cfg(test)]\nmod tests {\n    use crate::b::y;\n}\n\
             #[cfg(all(test, unix))]\nfn only_in_tests() { crate::b::y() }\n",
        ),
        (
            "src/b.rs",
            "pub fn y() {\n    crate::a::x()\n}\n#[cfg(test)]\nmod tests;\n",
        ),
        ("src/b/tests.rs", "use crate::a::x;\nuse super::y;\n"),
    ];
    assert_eq!(crate_edges(&files), ["src/b.rs:2 -> src/a.rs"]);
    let sources = sources(&files);
    let tree = module_tree("src/lib.rs", &sources);
    assert!(tree.test_files.contains("src/b/tests.rs"));
    assert!(!tree.files.contains_key("src/b/tests.rs"));
}

#[test]
fn not_test_and_any_test_code_is_checked() {
    let files = [
        ("src/lib.rs", "mod a;\nmod b;\n"),
        (
            "src/a.rs",
            "#[cfg(not(test))]\nuse crate::b::y;\n#[cfg(any(test, unix))]\npub fn x() {}\n",
        ),
        ("src/b.rs", "pub fn y() {\n    crate::a::x()\n}\n"),
    ];
    assert_eq!(crate_loops(&files), [["src/a.rs", "src/b.rs"]]);
}

#[test]
fn path_attributes_and_non_mod_rs_children_are_followed() {
    let files = [
        ("src/lib.rs", "#[path = \"other/x.rs\"]\nmod x;\nmod y;\n"),
        ("src/other/x.rs", "mod z;\nuse crate::y::Y;\n"),
        ("src/other/z.rs", "use crate::x::X;\npub struct Z;\n"),
        ("src/y.rs", "mod w;\npub struct Y;\n"),
        ("src/y/w.rs", "use crate::x::z::Z;\n"),
    ];
    assert_eq!(
        crate_edges(&files),
        [
            "src/other/x.rs:2 -> src/y.rs",
            "src/other/z.rs:1 -> src/other/x.rs",
            "src/y/w.rs:1 -> src/other/z.rs",
        ]
    );
}

#[test]
fn a_function_of_81_lines_is_flagged_and_one_of_80_is_not() {
    let text = format!("{}{}", function_of("long", 81), function_of("fits", 80));
    let syntax = syn::parse_file(&text).unwrap();
    let found = long_fns("src/a.rs", &syntax);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        (found[0].line, found[0].name.as_str(), found[0].lines),
        (1, "fn long", 81)
    );
}

#[test]
fn methods_trait_defaults_and_nested_functions_are_measured() {
    let nested = function_of("nested", 81).replace('\n', "\n    ");
    let text = format!(
        "impl Repo {{\n{m}}}\ntrait Walk {{\n{d}}}\nfn outer() {{\n    {nested}\n}}\n",
        m = function_of("open", 81),
        d = function_of("walk", 81),
    );
    let syntax = syn::parse_file(&text).unwrap();
    let names: Vec<String> = long_fns("src/a.rs", &syntax)
        .into_iter()
        .map(|f| format!("{}:{}", f.name, f.line))
        .collect();
    assert_eq!(
        names,
        [
            "fn Repo::open:2",
            "fn Walk::walk:85",
            "fn outer:167",
            "fn nested:168"
        ]
    );
}

#[test]
fn test_functions_and_test_modules_may_be_long() {
    let text = format!(
        "#[test]\n{}#[tokio::test]\nasync {}#[cfg(test)]\nmod tests {{\n{}}}\n",
        function_of("a", 90),
        function_of("b", 90),
        function_of("c", 90),
    );
    let syntax = syn::parse_file(&text).unwrap();
    assert_eq!(long_fns("src/a.rs", &syntax), []);
}

#[test]
fn a_file_of_601_lines_is_flagged_and_one_of_600_is_not() {
    assert_eq!(long_file("a.rs", &"//\n".repeat(600)), None);
    assert_eq!(
        long_file("a.rs", &"//\n".repeat(601)).map(|f| f.lines),
        Some(601)
    );
}

#[test]
fn the_report_names_every_violation_and_skips_test_directories_for_functions() {
    let long = function_of("long", 81);
    let files = [
        ("store/src/lib.rs", "mod a;\nmod b;\n".to_owned()),
        (
            "store/src/a.rs",
            "use crate::b::B;\npub struct A;\n".to_owned(),
        ),
        (
            "store/src/b.rs",
            format!("use crate::a::A;\npub struct B;\n{long}"),
        ),
        (
            "store/tests/big.rs",
            format!("{long}{}", "//\n".repeat(600)),
        ),
    ];
    let files: Vec<(&str, &str)> = files.iter().map(|(p, t)| (*p, t.as_str())).collect();
    let sources = sources(&files);
    let package = Package {
        dir: "store".to_owned(),
        crate_roots: vec!["store/src/lib.rs".to_owned()],
    };
    let report = check(&sources, &[package]).to_string();
    for expected in [
        "found 3 problem(s)",
        "store/src/a.rs:1 -> store/src/b.rs",
        "store/src/b.rs:1 -> store/src/a.rs",
        "store/tests/big.rs: 681 lines",
        "store/src/b.rs:3: fn long is 81 lines",
        "Move the shared item into a lower module",
        "split each into named steps",
    ] {
        assert!(
            report.contains(expected),
            "{expected:?} missing from:\n{report}"
        );
    }
    assert!(!report.contains("store/tests/big.rs:1:"), "{report}");
}

#[test]
fn crate_roots_come_from_the_manifest_and_cargo_conventions() {
    let sources = sources(&[
        ("hv/src/lib.rs", ""),
        ("hv/src/bin/tool.rs", ""),
        ("hv/src/bin/big/main.rs", ""),
        ("hv/src/bin/big/part.rs", ""),
        ("hv/examples/demo.rs", ""),
        ("hv/launch/main.rs", ""),
        ("hv/tests/it.rs", ""),
    ]);
    let manifest: toml::Table = "[[bin]]\nname = \"launch\"\npath = \"launch/main.rs\"\n"
        .parse()
        .unwrap();
    assert_eq!(
        crate_roots("hv", &manifest, &sources),
        [
            "hv/examples/demo.rs",
            "hv/launch/main.rs",
            "hv/src/bin/big/main.rs",
            "hv/src/bin/tool.rs",
            "hv/src/lib.rs",
        ]
    );
}
