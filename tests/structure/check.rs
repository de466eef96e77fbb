//! The whole check over a set of packages, and the report a developer reads when it
//! fails: every violation with its file and line, and what to do about it.

use std::collections::BTreeSet;
use std::fmt;

use super::cycles::{Loop, loops};
use super::imports::edges;
use super::lengths::{MAX_FILE_LINES, MAX_FN_LINES, TooLong, long_file, long_fns};
use super::modules::module_tree;
use super::packages::Package;
use super::sources::Sources;

#[derive(Debug, Default)]
pub struct Report {
    pub unparsed: Vec<String>,
    /// Each loop with the root file of the crate it is in.
    pub loops: Vec<(String, Loop)>,
    pub long_files: Vec<TooLong>,
    pub long_fns: Vec<TooLong>,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.unparsed.is_empty()
            && self.loops.is_empty()
            && self.long_files.is_empty()
            && self.long_fns.is_empty()
    }
}

pub fn check(sources: &Sources, packages: &[Package]) -> Report {
    let mut report = Report {
        unparsed: sources.unparsed.clone(),
        ..Report::default()
    };
    let mut built = BTreeSet::new();
    let mut tested_only = BTreeSet::new();
    for root in packages.iter().flat_map(|p| &p.crate_roots) {
        let tree = module_tree(root, sources);
        built.extend(tree.files.keys().cloned());
        tested_only.extend(tree.test_files.iter().cloned());
        for found in loops(&edges(&tree, sources)) {
            report.loops.push((root.clone(), found));
        }
    }
    for path in sources.paths() {
        report
            .long_files
            .extend(sources.text(path).and_then(|text| long_file(path, text)));
        let test_code = (tested_only.contains(path) && !built.contains(path))
            || packages.iter().any(|p| p.holds_as_test_code(path));
        if let Some(syntax) = sources.tree(path).filter(|_| !test_code) {
            report.long_fns.extend(long_fns(path, syntax));
        }
    }
    report
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count =
            self.unparsed.len() + self.loops.len() + self.long_files.len() + self.long_fns.len();
        writeln!(f, "the structure check found {count} problem(s)")?;
        if !self.unparsed.is_empty() {
            writeln!(
                f,
                "\nfiles syn cannot parse ({}): fix the syntax",
                self.unparsed.len()
            )?;
            for problem in &self.unparsed {
                writeln!(f, "  {problem}")?;
            }
        }
        if !self.loops.is_empty() {
            writeln!(
                f,
                "\nimport loops ({}): these files reach each other through `use` lines or paths. \
                 Move the shared item into a lower module (a sibling file both can use), or move \
                 the `use` down, so that every edge points one way:",
                self.loops.len()
            )?;
            for (root, found) in &self.loops {
                writeln!(f, "  in the crate of {root}: {}", found.files.join(", "))?;
                for edge in &found.edges {
                    writeln!(f, "    {}:{} -> {}", edge.from, edge.line, edge.to)?;
                }
            }
        }
        if !self.long_files.is_empty() {
            writeln!(
                f,
                "\nfiles over {MAX_FILE_LINES} lines ({}): split each into modules by what its parts hold:",
                self.long_files.len()
            )?;
            for long in &self.long_files {
                writeln!(f, "  {}: {} lines", long.file, long.lines)?;
            }
        }
        if !self.long_fns.is_empty() {
            writeln!(
                f,
                "\nfunctions over {MAX_FN_LINES} lines outside tests ({}): split each into named steps:",
                self.long_fns.len()
            )?;
            for long in &self.long_fns {
                writeln!(
                    f,
                    "  {}:{}: {} is {} lines",
                    long.file, long.line, long.name, long.lines
                )?;
            }
        }
        Ok(())
    }
}
