//! Length limits: files of at most 600 lines, functions of at most 80 outside tests.
//! A function's length runs from its `fn` line to its closing brace, both counted.

use syn::spanned::Spanned;
use syn::visit::{self, Visit};
use syn::{Block, ImplItem, Item, ItemImpl, ItemTrait, Signature, TraitItem};

use super::attrs::{impl_item_attrs, is_cfg_test, is_test_fn, item_attrs, trait_item_attrs};

pub const MAX_FILE_LINES: usize = 600;
pub const MAX_FN_LINES: usize = 80;

/// A file or function over its limit.
#[derive(Debug, PartialEq, Eq)]
pub struct TooLong {
    pub file: String,
    pub line: usize,
    /// `fn Type::name` for functions, empty for files.
    pub name: String,
    pub lines: usize,
}

pub fn long_file(file: &str, text: &str) -> Option<TooLong> {
    let lines = text.lines().count();
    (lines > MAX_FILE_LINES).then(|| TooLong {
        file: file.to_owned(),
        line: 1,
        name: String::new(),
        lines,
    })
}

/// Functions over the limit in `syntax`, skipping `#[cfg(test)]` items and test
/// functions; methods, trait defaults and functions nested in bodies count.
pub fn long_fns(file: &str, syntax: &syn::File) -> Vec<TooLong> {
    let mut walk = FnLengths {
        file,
        owners: Vec::new(),
        found: Vec::new(),
    };
    walk.visit_file(syntax);
    walk.found
}

struct FnLengths<'f> {
    file: &'f str,
    /// The impl or trait being walked, so a method reads `Type::name`.
    owners: Vec<String>,
    found: Vec<TooLong>,
}

impl FnLengths<'_> {
    fn measure(&mut self, sig: &Signature, body: &Block) {
        let start = sig.fn_token.span.start().line;
        let lines = body.brace_token.span.close().end().line + 1 - start;
        if lines > MAX_FN_LINES {
            let name = match self.owners.last() {
                Some(owner) => format!("fn {owner}::{}", sig.ident),
                None => format!("fn {}", sig.ident),
            };
            self.found.push(TooLong {
                file: self.file.to_owned(),
                line: start,
                name,
                lines,
            });
        }
    }
}

impl<'ast> Visit<'ast> for FnLengths<'_> {
    fn visit_item(&mut self, item: &'ast Item) {
        let attrs = item_attrs(item);
        if !is_cfg_test(attrs) && !is_test_fn(attrs) {
            visit::visit_item(self, item);
        }
    }

    fn visit_impl_item(&mut self, item: &'ast ImplItem) {
        let attrs = impl_item_attrs(item);
        if !is_cfg_test(attrs) && !is_test_fn(attrs) {
            visit::visit_impl_item(self, item);
        }
    }

    fn visit_trait_item(&mut self, item: &'ast TraitItem) {
        if !is_cfg_test(trait_item_attrs(item)) {
            visit::visit_trait_item(self, item);
        }
    }

    fn visit_item_impl(&mut self, item: &'ast ItemImpl) {
        let owner = match &*item.self_ty {
            syn::Type::Path(path) => path.path.segments.last().map(|s| s.ident.to_string()),
            other => Some(quote_free_name(other)),
        };
        self.owners.push(owner.unwrap_or_default());
        visit::visit_item_impl(self, item);
        self.owners.pop();
    }

    fn visit_item_trait(&mut self, item: &'ast ItemTrait) {
        self.owners.push(item.ident.to_string());
        visit::visit_item_trait(self, item);
        self.owners.pop();
    }

    fn visit_item_fn(&mut self, item: &'ast syn::ItemFn) {
        // A free fn, even one nested in a method's body, is no method of the impl.
        let owners = std::mem::take(&mut self.owners);
        self.measure(&item.sig, &item.block);
        visit::visit_item_fn(self, item);
        self.owners = owners;
    }

    fn visit_impl_item_fn(&mut self, item: &'ast syn::ImplItemFn) {
        self.measure(&item.sig, &item.block);
        visit::visit_impl_item_fn(self, item);
    }

    fn visit_trait_item_fn(&mut self, item: &'ast syn::TraitItemFn) {
        if let Some(body) = &item.default {
            self.measure(&item.sig, body);
        }
        visit::visit_trait_item_fn(self, item);
    }
}

/// A name for an impl on something other than a plain path (`impl X for &T`):
/// the line it starts on is enough to find it.
fn quote_free_name(ty: &syn::Type) -> String {
    format!("<type at line {}>", ty.span().start().line)
}
