//! The source files the check reads: every `.rs` file of the workspace by its path
//! relative to the workspace root (always with `/`), its text and its syntax tree.
//! Tests build one from a handful of in-memory files instead of the disk.

use std::collections::BTreeMap;
use std::path::Path;

pub struct Sources {
    texts: BTreeMap<String, String>,
    trees: BTreeMap<String, syn::File>,
    /// Files syn could not parse, as `path:line: error`; the check fails on them
    /// rather than silently skipping their imports and functions.
    pub unparsed: Vec<String>,
}

impl Sources {
    pub fn from_texts(texts: BTreeMap<String, String>) -> Self {
        let mut trees = BTreeMap::new();
        let mut unparsed = Vec::new();
        for (path, text) in &texts {
            match syn::parse_file(text) {
                Ok(tree) => {
                    trees.insert(path.clone(), tree);
                }
                Err(e) => unparsed.push(format!("{path}:{}: {e}", e.span().start().line)),
            }
        }
        Sources {
            texts,
            trees,
            unparsed,
        }
    }

    /// Every `.rs` file under `root`, skipping build output (`target/` of a package)
    /// and hidden directories (`.git/`, editor state).
    pub fn load(root: &Path) -> Self {
        let mut texts = BTreeMap::new();
        read_dir(root, "", &mut texts);
        Self::from_texts(texts)
    }

    pub fn exists(&self, path: &str) -> bool {
        self.texts.contains_key(path)
    }

    pub fn text(&self, path: &str) -> Option<&str> {
        self.texts.get(path).map(String::as_str)
    }

    pub fn tree(&self, path: &str) -> Option<&syn::File> {
        self.trees.get(path)
    }

    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.texts.keys().map(String::as_str)
    }
}

fn read_dir(dir: &Path, relative: &str, texts: &mut BTreeMap<String, String>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let entry = entry.expect("directory entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = join(relative, &name);
        let kind = entry.file_type().expect("file type");
        // Cargo's build output sits beside a Cargo.toml; a module named `target` doesn't.
        let build_output = name == "target" && dir.join("Cargo.toml").is_file();
        if kind.is_dir() && !build_output && !name.starts_with('.') {
            read_dir(&entry.path(), &path, texts);
        } else if kind.is_file() && name.ends_with(".rs") {
            let text =
                std::fs::read_to_string(entry.path()).unwrap_or_else(|e| panic!("{path}: {e}"));
            texts.insert(path, text);
        }
    }
}

/// `dir/name`, where `dir` may be empty (the workspace root) and `name` may climb
/// out of it with `..` (a `#[path]` attribute).
pub fn join(dir: &str, name: &str) -> String {
    let mut parts: Vec<&str> = dir
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    parts.join("/")
}

/// The directory holding `path` (empty at the workspace root).
pub fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(dir, _)| dir)
}
