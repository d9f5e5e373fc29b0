//! The dependency graph of resources: one node per address, an edge `a -> b` when `b`
//! depends on `a` (`b.depends_on` names `a`). Built from the targets' desired resources, it
//! is what `kombiform graph` prints, what `build` checks for cycles and what orders a plan's
//! changes: dependencies come from one place, [`Resource::depends_on`].
//!
//! A cycle is an error naming its resources, never silently cut (a resource that depends on
//! itself is a cycle of one). A dependency on an address that is not in the graph (a target
//! left out with `--target`, a resource already gone) is kept as [`Graph::dangling`] and
//! orders nothing. Pure.
//!
//! Not here: where the resources come from (the targets in `kombiform_emit::targets`), or
//! running anything along the graph (the engine's `apply`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::{provider_of, Resource};

/// Resources that depend on each other in a circle, in dependency order: each is needed by
/// the next, and the first needs the last. Displayed as `a -> b -> c -> a`, arrows pointing
/// from what is needed to what needs it (like `kombiform graph --format dot`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cycle(pub Vec<String>);

impl std::fmt::Display for Cycle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.first() {
            Some(first) => write!(f, "{} -> {first}", self.0.join(" -> ")),
            None => f.write_str("(empty cycle)"),
        }
    }
}

impl std::error::Error for Cycle {}

/// The graph: addresses, and for each the addresses it needs.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    /// Address → the addresses (in the graph) it needs, sorted.
    needs: BTreeMap<String, BTreeSet<String>>,
    /// `(address, dependency)` pairs whose dependency is not in the graph.
    dangling: Vec<(String, String)>,
}

impl Graph {
    /// The graph of `resources` (addresses are unique; a repeated address merges).
    pub fn from_resources<'a>(resources: impl IntoIterator<Item = &'a Resource>) -> Graph {
        Graph::from_edges(
            resources
                .into_iter()
                .map(|r| (r.address.as_str(), r.depends_on.iter().map(String::as_str))),
        )
    }

    /// The graph of `(address, what it depends on)` pairs.
    pub fn from_edges<'a, D>(nodes: impl IntoIterator<Item = (&'a str, D)>) -> Graph
    where
        D: IntoIterator<Item = &'a str>,
    {
        let mut wanted: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (address, deps) in nodes {
            wanted
                .entry(address.to_string())
                .or_default()
                .extend(deps.into_iter().map(str::to_string));
        }
        let mut dangling = Vec::new();
        let known: BTreeSet<String> = wanted.keys().cloned().collect();
        for (address, deps) in &mut wanted {
            deps.retain(|d| {
                let here = known.contains(d);
                if !here {
                    dangling.push((address.clone(), d.clone()));
                }
                here
            });
        }
        Graph {
            needs: wanted,
            dangling,
        }
    }

    /// Number of resources.
    pub fn len(&self) -> usize {
        self.needs.len()
    }

    /// True when there is no resource.
    pub fn is_empty(&self) -> bool {
        self.needs.is_empty()
    }

    /// Whether `address` is a node.
    pub fn contains(&self, address: &str) -> bool {
        self.needs.contains_key(address)
    }

    /// What `address` needs (in the graph), sorted.
    pub fn needs(&self, address: &str) -> impl Iterator<Item = &str> {
        self.needs
            .get(address)
            .into_iter()
            .flatten()
            .map(String::as_str)
    }

    /// Dependencies on addresses outside the graph: `(address, dependency)`.
    pub fn dangling(&self) -> &[(String, String)] {
        &self.dangling
    }

    /// Every address, dependencies first, ties broken by address; or the first cycle found.
    pub fn order(&self) -> Result<Vec<&str>, Cycle> {
        let mut indegree: BTreeMap<&str, usize> = self
            .needs
            .iter()
            .map(|(a, deps)| (a.as_str(), deps.len()))
            .collect();
        let mut dependents: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (a, deps) in &self.needs {
            for d in deps {
                dependents.entry(d.as_str()).or_default().push(a.as_str());
            }
        }
        let mut ready: BTreeSet<&str> = indegree
            .iter()
            .filter(|(_, n)| **n == 0)
            .map(|(a, _)| *a)
            .collect();
        let mut out = Vec::with_capacity(self.needs.len());
        while let Some(next) = ready.pop_first() {
            out.push(next);
            for m in dependents.get(next).into_iter().flatten() {
                if let Some(n) = indegree.get_mut(m) {
                    *n -= 1;
                    if *n == 0 {
                        ready.insert(m);
                    }
                }
            }
        }
        if out.len() == self.needs.len() {
            return Ok(out);
        }
        let placed: BTreeSet<&str> = out.iter().copied().collect();
        Err(self.cycle_among(&placed))
    }

    /// Depth of every address: 0 when it needs nothing, else one more than its deepest need.
    pub fn depths(&self) -> Result<BTreeMap<&str, usize>, Cycle> {
        let order = self.order()?;
        let mut depth: BTreeMap<&str, usize> = BTreeMap::new();
        for a in order {
            let d = self
                .needs(a)
                .map(|n| depth.get(n).map_or(0, |d| d + 1))
                .max()
                .unwrap_or(0);
            depth.insert(a, d);
        }
        Ok(depth)
    }

    /// A cycle among the addresses not in `placed` (every one of them is on or behind one).
    fn cycle_among(&self, placed: &BTreeSet<&str>) -> Cycle {
        let Some(start) = self
            .needs
            .keys()
            .map(String::as_str)
            .find(|a| !placed.contains(a))
        else {
            return Cycle(Vec::new());
        };
        // Walk "needs" edges among the unplaced until an address repeats: every unplaced
        // address needs at least one other unplaced address.
        let mut path: Vec<&str> = vec![start];
        let mut seen: BTreeMap<&str, usize> = BTreeMap::from([(start, 0)]);
        let mut at = start;
        loop {
            let Some(next) = self.needs(at).find(|n| !placed.contains(n)) else {
                return Cycle(vec![at.to_string()]);
            };
            if let Some(&i) = seen.get(next) {
                // path[i..] is the cycle, each needing the next: reversed, it is in
                // dependency order.
                return Cycle(path[i..].iter().rev().map(|s| (*s).to_string()).collect());
            }
            seen.insert(next, path.len());
            path.push(next);
            at = next;
        }
    }

    /// Text rendering: each resource, sorted, with what it needs.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for (addr, deps) in &self.needs {
            if deps.is_empty() {
                let _ = writeln!(out, "{addr}");
            } else {
                let deps: Vec<&str> = deps.iter().map(String::as_str).collect();
                let _ = writeln!(out, "{addr}\n    needs {}", deps.join(", "));
            }
        }
        out
    }

    /// Graphviz rendering, sorted; nodes coloured by target.
    pub fn to_dot(&self, name: &str) -> String {
        let mut out = format!(
            "digraph \"{}\" {{\n  rankdir=LR;\n  node [shape=box, fontname=\"monospace\"];\n",
            dot_escape(name)
        );
        for addr in self.needs.keys() {
            let colour = match provider_of(addr) {
                "azure" => "lightblue",
                "kong" => "palegreen",
                "pocketbase" => "lightyellow",
                "postgres" => "thistle",
                _ => "white",
            };
            let _ = writeln!(
                out,
                "  \"{}\" [style=filled, fillcolor={colour}];",
                dot_escape(addr)
            );
        }
        for (addr, deps) in &self.needs {
            for d in deps {
                let _ = writeln!(out, "  \"{}\" -> \"{}\";", dot_escape(d), dot_escape(addr));
            }
        }
        out.push_str("}\n");
        out
    }
}

/// Escapes `"` and `\` for a quoted Graphviz id.
fn dot_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(nodes: &[(&str, &[&str])]) -> Graph {
        Graph::from_edges(nodes.iter().map(|(a, d)| (*a, d.iter().copied())))
    }

    #[test]
    fn order_puts_dependencies_first_and_breaks_ties_by_address() {
        let g = graph(&[("c", &["a"]), ("b", &[]), ("a", &[]), ("d", &["c", "b"])]);
        assert_eq!(g.order(), Ok(vec!["a", "b", "c", "d"]));
        let depths = g.depths().unwrap();
        assert_eq!(depths["d"], 2);
        assert_eq!(depths["b"], 0);
    }

    #[test]
    fn a_cycle_is_an_error_naming_it_never_cut() {
        let g = graph(&[("a", &["c"]), ("b", &["a"]), ("c", &["b"]), ("x", &[])]);
        let cycle = g.order().unwrap_err();
        let mut names = cycle.0.clone();
        names.sort();
        assert_eq!(names, ["a", "b", "c"]);
        // Each needs the next, the last needs the first.
        for w in cycle.0.windows(2) {
            assert!(g.needs(&w[1]).any(|n| n == w[0]), "{cycle}");
        }
        assert!(g.depths().is_err());
    }

    #[test]
    fn a_resource_that_needs_itself_is_a_cycle() {
        let g = graph(&[("a", &["a"])]);
        assert_eq!(g.order(), Err(Cycle(vec!["a".into()])));
    }

    #[test]
    fn dependencies_outside_the_graph_are_dangling_not_edges() {
        let g = graph(&[("a", &["elsewhere"])]);
        assert_eq!(g.order(), Ok(vec!["a"]));
        assert_eq!(g.dangling(), &[("a".to_string(), "elsewhere".to_string())]);
    }

    #[test]
    fn renderings_are_sorted_and_escaped() {
        let g = graph(&[("postgres.b", &["azure.a"]), ("azure.a", &[])]);
        assert_eq!(g.to_text(), "azure.a\npostgres.b\n    needs azure.a\n");
        let dot = Graph::from_edges([("x\"y", Vec::<&str>::new())]).to_dot("e");
        assert!(dot.contains("\"x\\\"y\""), "{dot}");
    }
}
