//! The import edges of one crate: file A -> file B when A names a path into B's
//! module, in a `use` (`use crate::a::b::C`, `use super::x`, `pub use child::X`), in
//! code (`crate::gc::unix_now()`, `super::helper()`), or in a macro's arguments
//! (`format!("{}", crate::x::Y)`). Declaring `mod child;` is not an edge, and
//! neither is anything under `#[cfg(test)]`: test code may reach up to its parent.

use std::collections::BTreeMap;

use proc_macro2::{Spacing, TokenStream, TokenTree};
use syn::visit::{self, Visit};
use syn::{ImplItem, Item, ItemMod, ItemUse, TraitItem, UseTree};

use super::attrs::{impl_item_attrs, is_cfg_test, item_attrs, trait_item_attrs};
use super::modules::{ModulePath, ModuleTree};
use super::sources::Sources;

/// `from` names a path into `to`, first at line `line` of `from`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Edge {
    pub from: String,
    pub line: usize,
    pub to: String,
}

/// Every edge between two different files of the crate, with its first line.
pub fn edges(tree: &ModuleTree, sources: &Sources) -> Vec<Edge> {
    let mut first: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (file, module) in &tree.files {
        let Some(syntax) = sources.tree(file) else {
            continue;
        };
        let mut refs = Refs {
            module: module.clone(),
            found: Vec::new(),
        };
        refs.visit_file(syntax);
        for found in refs.found {
            let Some(to) = resolve(tree, &found.module, &found.segments) else {
                continue;
            };
            if to != file {
                let line = first
                    .entry((file.clone(), to.to_owned()))
                    .or_insert(found.line);
                *line = (*line).min(found.line);
            }
        }
    }
    first
        .into_iter()
        .map(|((from, to), line)| Edge { from, line, to })
        .collect()
}

/// The file holding the deepest module that `segments`, written inside `here`,
/// names: `crate::gc::guard::before_commit` -> `gc/guard.rs`, `crate::gc::Plan` ->
/// `gc/mod.rs`. `None` for paths into other crates, and for names that a `use`
/// brought into scope (the `use` itself is the edge).
fn resolve<'t>(tree: &'t ModuleTree, here: &[String], segments: &[String]) -> Option<&'t str> {
    let first = segments.first()?;
    let absolute: ModulePath = match first.as_str() {
        "crate" => segments[1..].to_vec(),
        "self" => [here, &segments[1..]].concat(),
        "super" => {
            let ups = segments.iter().take_while(|s| *s == "super").count();
            let stays = here.len().checked_sub(ups)?;
            [&here[..stays], &segments[ups..]].concat()
        }
        child => {
            let as_child = [here, &[child.to_owned()]].concat();
            tree.modules.get(&as_child)?;
            [here, segments].concat()
        }
    };
    (0..=absolute.len())
        .rev()
        .find_map(|len| tree.modules.get(&absolute[..len]))
        .map(String::as_str)
}

struct Ref {
    module: ModulePath,
    segments: Vec<String>,
    line: usize,
}

/// Collects every path a file writes, with the module it is written in.
struct Refs {
    module: ModulePath,
    found: Vec<Ref>,
}

impl Refs {
    /// A path of one segment counts only when it is `super` or `crate` (`use
    /// super::*`); longer ones are resolved later against the module tree.
    fn record(&mut self, segments: Vec<String>, line: usize) {
        let anchored = matches!(
            segments.first().map(String::as_str),
            Some("crate" | "self" | "super")
        );
        if segments.len() >= 2 || anchored {
            self.found.push(Ref {
                module: self.module.clone(),
                segments,
                line,
            });
        }
    }

    /// Paths in a macro's tokens: runs of `ident :: ident ...` not preceded by `::`.
    /// A single identifier may be a local variable named like a module: not a path.
    fn record_tokens(&mut self, tokens: TokenStream) {
        let tokens: Vec<TokenTree> = tokens.into_iter().collect();
        let mut i = 0;
        while i < tokens.len() {
            match &tokens[i] {
                TokenTree::Group(group) => self.record_tokens(group.stream()),
                TokenTree::Ident(ident) if !follows_path_separator(&tokens, i) => {
                    let mut segments = vec![ident.to_string()];
                    while let (Some(a), Some(b), Some(TokenTree::Ident(next))) =
                        (tokens.get(i + 1), tokens.get(i + 2), tokens.get(i + 3))
                    {
                        if !(is_joint_colon(a) && is_colon(b)) {
                            break;
                        }
                        segments.push(next.to_string());
                        i += 3;
                    }
                    if segments.len() >= 2 {
                        self.record(segments, ident.span().start().line);
                    }
                }
                _ => {}
            }
            i += 1;
        }
    }
}

fn follows_path_separator(tokens: &[TokenTree], i: usize) -> bool {
    i >= 2 && is_joint_colon(&tokens[i - 2]) && is_colon(&tokens[i - 1])
}

fn is_colon(token: &TokenTree) -> bool {
    matches!(token, TokenTree::Punct(p) if p.as_char() == ':')
}

fn is_joint_colon(token: &TokenTree) -> bool {
    matches!(token, TokenTree::Punct(p) if p.as_char() == ':' && p.spacing() == Spacing::Joint)
}

/// Every path a `use` tree imports, with the line of its last segment.
fn use_paths(
    tree: &UseTree,
    prefix: &mut Vec<String>,
    line: usize,
    out: &mut Vec<(Vec<String>, usize)>,
) {
    match tree {
        UseTree::Path(path) => {
            prefix.push(path.ident.to_string());
            use_paths(&path.tree, prefix, path.ident.span().start().line, out);
            prefix.pop();
        }
        UseTree::Name(name) if name.ident == "self" => out.push((prefix.clone(), line)),
        UseTree::Name(name) => out.push((
            [&prefix[..], &[name.ident.to_string()]].concat(),
            name.ident.span().start().line,
        )),
        UseTree::Rename(rename) => out.push((
            [&prefix[..], &[rename.ident.to_string()]].concat(),
            rename.ident.span().start().line,
        )),
        UseTree::Glob(_) => out.push((prefix.clone(), line)),
        UseTree::Group(group) => {
            for tree in &group.items {
                use_paths(tree, prefix, line, out);
            }
        }
    }
}

impl<'ast> Visit<'ast> for Refs {
    fn visit_item(&mut self, item: &'ast Item) {
        if !is_cfg_test(item_attrs(item)) {
            visit::visit_item(self, item);
        }
    }

    fn visit_impl_item(&mut self, item: &'ast ImplItem) {
        if !is_cfg_test(impl_item_attrs(item)) {
            visit::visit_impl_item(self, item);
        }
    }

    fn visit_trait_item(&mut self, item: &'ast TraitItem) {
        if !is_cfg_test(trait_item_attrs(item)) {
            visit::visit_trait_item(self, item);
        }
    }

    fn visit_item_mod(&mut self, module: &'ast ItemMod) {
        // `mod child;` names no item; an inline block is more of this file.
        if let Some((_, items)) = &module.content {
            self.module.push(module.ident.to_string());
            for item in items {
                self.visit_item(item);
            }
            self.module.pop();
        }
    }

    fn visit_item_use(&mut self, import: &'ast ItemUse) {
        if import.leading_colon.is_some() {
            return;
        }
        let mut paths = Vec::new();
        use_paths(&import.tree, &mut Vec::new(), 0, &mut paths);
        for (segments, line) in paths {
            self.record(segments, line);
        }
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        if path.leading_colon.is_none() && path.segments.len() >= 2 {
            let segments = path.segments.iter().map(|s| s.ident.to_string()).collect();
            let line = path.segments[0].ident.span().start().line;
            self.record(segments, line);
        }
        visit::visit_path(self, path);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        self.visit_path(&mac.path);
        self.record_tokens(mac.tokens.clone());
    }

    // `pub(in crate::x)` and attributes (`#[cfg]`, `#[derive]`) name no item.
    fn visit_visibility(&mut self, _: &'ast syn::Visibility) {}

    fn visit_attribute(&mut self, _: &'ast syn::Attribute) {}
}
