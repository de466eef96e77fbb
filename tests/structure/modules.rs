//! The module tree of one crate, found the way rustc finds it: from the crate root,
//! follow each `mod name;` to `name.rs` or `name/mod.rs` (or its `#[path]`), and
//! note inline `mod name { .. }` blocks as modules living in their file.

use std::collections::{BTreeMap, BTreeSet};

use syn::{Item, ItemMod, Lit};

use super::attrs::is_cfg_test;
use super::sources::{Sources, join, parent};

/// A module's path from the crate root, without `crate`: `["gc", "guard"]`.
pub type ModulePath = Vec<String>;

#[derive(Default)]
pub struct ModuleTree {
    /// Every module compiled outside tests (inline ones too) and the file it lives
    /// in; the crate root is the empty path.
    pub modules: BTreeMap<ModulePath, String>,
    /// Every module file compiled outside tests, and the module it holds.
    pub files: BTreeMap<String, ModulePath>,
    /// Module files reached only through `#[cfg(test)]` modules.
    pub test_files: BTreeSet<String>,
}

pub fn module_tree(root: &str, sources: &Sources) -> ModuleTree {
    let mut walk = Walk {
        sources,
        tree: ModuleTree::default(),
    };
    walk.enter_file(root.to_owned(), Vec::new(), false, true);
    walk.tree
}

struct Walk<'a> {
    sources: &'a Sources,
    tree: ModuleTree,
}

/// Where a run of items sits: its file, its module, and the directory in which a
/// `mod name;` among them looks for `name.rs`.
struct Place<'p> {
    file: &'p str,
    module: ModulePath,
    dir: String,
    inline: bool,
    test: bool,
}

impl Walk<'_> {
    /// `mod_rs`: a crate root, a `mod.rs` or a file loaded through `#[path]`, whose
    /// child modules sit beside it rather than in a directory named after it.
    fn enter_file(&mut self, file: String, module: ModulePath, test: bool, mod_rs: bool) {
        let seen = self.tree.files.contains_key(&file) || self.tree.test_files.contains(&file);
        if test {
            self.tree.test_files.insert(file.clone());
        } else {
            self.tree.modules.insert(module.clone(), file.clone());
            self.tree.files.insert(file.clone(), module.clone());
        }
        let Some(syntax) = self.sources.tree(&file).filter(|_| !seen) else {
            return;
        };
        let dir = match (
            mod_rs || file.ends_with("/mod.rs"),
            file.strip_suffix(".rs"),
        ) {
            (false, Some(stem)) => stem.to_owned(),
            _ => parent(&file).to_owned(),
        };
        let place = Place {
            file: &file,
            module,
            dir,
            inline: false,
            test,
        };
        self.items(&syntax.items, &place);
    }

    fn items(&mut self, items: &[Item], place: &Place) {
        for item in items {
            if let Item::Mod(declared) = item {
                self.module(declared, place);
            }
        }
    }

    fn module(&mut self, declared: &ItemMod, place: &Place) {
        let name = declared.ident.to_string();
        let test = place.test || is_cfg_test(&declared.attrs);
        let mut module = place.module.clone();
        module.push(name.clone());
        let path_attr = path_attribute(declared);
        if let Some((_, items)) = &declared.content {
            if !test {
                self.tree
                    .modules
                    .insert(module.clone(), place.file.to_owned());
            }
            let inner = Place {
                file: place.file,
                module,
                dir: join(&place.dir, &name),
                inline: true,
                test,
            };
            self.items(items, &inner);
            return;
        }
        let by_path = path_attr.is_some();
        let file = match path_attr {
            // Outside inline blocks `#[path]` is relative to the declaring file's
            // directory, inside them to the block's module directory.
            Some(path) if place.inline => Some(join(&place.dir, &path)),
            Some(path) => Some(join(parent(place.file), &path)),
            None => [format!("{name}.rs"), format!("{name}/mod.rs")]
                .into_iter()
                .map(|candidate| join(&place.dir, &candidate))
                .find(|candidate| self.sources.exists(candidate)),
        };
        if let Some(file) = file.filter(|f| self.sources.exists(f)) {
            self.enter_file(file, module, test, by_path);
        }
    }
}

fn path_attribute(declared: &ItemMod) -> Option<String> {
    declared.attrs.iter().find_map(|attr| {
        let syn::Meta::NameValue(pair) = &attr.meta else {
            return None;
        };
        match &pair.value {
            syn::Expr::Lit(lit) if pair.path.is_ident("path") => match &lit.lit {
                Lit::Str(path) => Some(path.value()),
                _ => None,
            },
            _ => None,
        }
    })
}
