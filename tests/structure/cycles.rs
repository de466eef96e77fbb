//! Import loops: the strongly connected components (Tarjan) of a crate's file graph
//! that hold more than one file, each with the edges that keep it connected.

use std::collections::BTreeMap;

use super::imports::Edge;

/// Files that all reach each other through imports, and the edges among them.
#[derive(Debug)]
pub struct Loop {
    pub files: Vec<String>,
    pub edges: Vec<Edge>,
}

pub fn loops(edges: &[Edge]) -> Vec<Loop> {
    let mut graph: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for edge in edges {
        graph.entry(&edge.from).or_default().push(&edge.to);
        graph.entry(&edge.to).or_default();
    }
    let mut tarjan = Tarjan {
        graph: &graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        components: Vec::new(),
    };
    for node in graph.keys() {
        if !tarjan.index.contains_key(node) {
            tarjan.connect(node);
        }
    }
    let mut found: Vec<Loop> = tarjan
        .components
        .into_iter()
        .filter(|files| files.len() > 1)
        .map(|mut files| {
            files.sort();
            let inside = |file: &str| files.iter().any(|f| f == file);
            let edges = edges
                .iter()
                .filter(|e| inside(&e.from) && inside(&e.to))
                .cloned()
                .collect();
            Loop { files, edges }
        })
        .collect();
    found.sort_by(|a, b| a.files.cmp(&b.files));
    found
}

struct Tarjan<'g> {
    graph: &'g BTreeMap<&'g str, Vec<&'g str>>,
    index: BTreeMap<&'g str, usize>,
    low: BTreeMap<&'g str, usize>,
    stack: Vec<&'g str>,
    components: Vec<Vec<String>>,
}

impl<'g> Tarjan<'g> {
    /// Recursive: a crate's module tree is a few dozen files deep at most.
    fn connect(&mut self, node: &'g str) {
        let order = self.index.len();
        self.index.insert(node, order);
        self.low.insert(node, order);
        self.stack.push(node);
        for &next in &self.graph[node] {
            if !self.index.contains_key(next) {
                self.connect(next);
                let low = self.low[node].min(self.low[next]);
                self.low.insert(node, low);
            } else if self.stack.contains(&next) {
                let low = self.low[node].min(self.index[next]);
                self.low.insert(node, low);
            }
        }
        if self.low[node] == self.index[node] {
            let mut component = Vec::new();
            while let Some(member) = self.stack.pop() {
                component.push(member.to_owned());
                if member == node {
                    break;
                }
            }
            self.components.push(component);
        }
    }
}
