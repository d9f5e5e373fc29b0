//! The dependency graph of every resource of one environment, across every target.
//!
//! Nodes are resources with stable addresses (`azure.containerapp.kong`,
//! `kong.route.stackkits-api`, `pocketbase.collection.t_acme_nodes`,
//! `postgres.tenant.acme`); an edge `a -> b` means "`b` needs `a` first". Emitters use the
//! graph for ordering, `apply` runs along it, `kombiform graph` prints it. Pure.

use std::collections::HashMap;
use std::fmt::Write as _;

use petgraph::algo::toposort;
use petgraph::graph::{DiGraph, NodeIndex};

use kombiform_model::naming;
use kombiform_model::{Env, FieldKind, InstanceMode, KongEdition, Scope};

/// The system a resource lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    /// Azure Resource Manager.
    Azure,
    /// The Kong gateway.
    Kong,
    /// PocketBase.
    PocketBase,
    /// The platform PostgreSQL database.
    Postgres,
}

impl Target {
    /// The address prefix.
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Azure => "azure",
            Target::Kong => "kong",
            Target::PocketBase => "pocketbase",
            Target::Postgres => "postgres",
        }
    }
}

/// One resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resource {
    /// Stable address: `<target>.<type>.<name>`.
    pub address: String,
    /// Where it lives.
    pub target: Target,
}

/// The graph of one environment.
#[derive(Debug, Default)]
pub struct Graph {
    /// Edges point from a dependency to what depends on it.
    pub graph: DiGraph<Resource, ()>,
    index: HashMap<String, NodeIndex>,
}

impl Graph {
    fn node(&mut self, target: Target, kind: &str, name: &str) -> NodeIndex {
        let address = format!("{}.{kind}.{name}", target.as_str());
        if let Some(i) = self.index.get(&address) {
            return *i;
        }
        let i = self.graph.add_node(Resource {
            address: address.clone(),
            target,
        });
        self.index.insert(address, i);
        i
    }

    /// `later` needs `first`.
    fn edge(&mut self, first: NodeIndex, later: NodeIndex) {
        if first != later {
            self.graph.update_edge(first, later, ());
        }
    }

    /// The node of an address.
    pub fn find(&self, address: &str) -> Option<NodeIndex> {
        self.index.get(address).copied()
    }

    /// Number of resources.
    pub fn len(&self) -> usize {
        self.graph.node_count()
    }

    /// True when there is no resource.
    pub fn is_empty(&self) -> bool {
        self.graph.node_count() == 0
    }

    /// Addresses in an order where every dependency comes first; ties broken by address.
    /// `Err` names the resources of a cycle.
    pub fn order(&self) -> Result<Vec<&str>, Vec<String>> {
        match toposort(&self.graph, None) {
            Ok(_) => {}
            Err(c) => {
                let start = c.node_id();
                return Err(self.cycle_through(start));
            }
        }
        // Kahn's algorithm with a sorted ready set, for a deterministic order.
        let mut indegree: Vec<usize> = self
            .graph
            .node_indices()
            .map(|n| {
                self.graph
                    .neighbors_directed(n, petgraph::Direction::Incoming)
                    .count()
            })
            .collect();
        let mut ready: std::collections::BTreeSet<(&str, usize)> = self
            .graph
            .node_indices()
            .filter(|n| indegree[n.index()] == 0)
            .map(|n| (self.graph[n].address.as_str(), n.index()))
            .collect();
        let mut out = Vec::with_capacity(self.len());
        while let Some(first) = ready.pop_first() {
            out.push(first.0);
            for m in self.graph.neighbors(NodeIndex::new(first.1)) {
                indegree[m.index()] -= 1;
                if indegree[m.index()] == 0 {
                    ready.insert((self.graph[m].address.as_str(), m.index()));
                }
            }
        }
        Ok(out)
    }

    fn cycle_through(&self, start: NodeIndex) -> Vec<String> {
        // Depth-first search from `start` back to itself.
        let mut stack = vec![(start, vec![start])];
        let mut seen = std::collections::HashSet::new();
        while let Some((n, path)) = stack.pop() {
            for m in self.graph.neighbors(n) {
                if m == start {
                    return path
                        .iter()
                        .map(|i| self.graph[*i].address.clone())
                        .collect();
                }
                if seen.insert(m) {
                    let mut p = path.clone();
                    p.push(m);
                    stack.push((m, p));
                }
            }
        }
        vec![self.graph[start].address.clone()]
    }

    /// Text rendering: each resource, sorted, with what it needs.
    pub fn to_text(&self) -> String {
        let mut rows: Vec<(String, Vec<String>)> = self
            .graph
            .node_indices()
            .map(|n| {
                let mut deps: Vec<String> = self
                    .graph
                    .neighbors_directed(n, petgraph::Direction::Incoming)
                    .map(|d| self.graph[d].address.clone())
                    .collect();
                deps.sort();
                (self.graph[n].address.clone(), deps)
            })
            .collect();
        rows.sort();
        let mut out = String::new();
        for (addr, deps) in rows {
            if deps.is_empty() {
                let _ = writeln!(out, "{addr}");
            } else {
                let _ = writeln!(out, "{addr}\n    needs {}", deps.join(", "));
            }
        }
        out
    }

    /// Graphviz rendering, sorted.
    pub fn to_dot(&self, name: &str) -> String {
        let mut nodes: Vec<&Resource> = self.graph.node_weights().collect();
        nodes.sort_by(|a, b| a.address.cmp(&b.address));
        let mut edges: Vec<(&str, &str)> = self
            .graph
            .edge_indices()
            .filter_map(|e| self.graph.edge_endpoints(e))
            .map(|(a, b)| {
                (
                    self.graph[a].address.as_str(),
                    self.graph[b].address.as_str(),
                )
            })
            .collect();
        edges.sort();
        let mut out = format!(
            "digraph \"{name}\" {{\n  rankdir=LR;\n  node [shape=box, fontname=\"monospace\"];\n"
        );
        for n in nodes {
            let colour = match n.target {
                Target::Azure => "lightblue",
                Target::Kong => "palegreen",
                Target::PocketBase => "lightyellow",
                Target::Postgres => "thistle",
            };
            let _ = writeln!(
                out,
                "  \"{}\" [style=filled, fillcolor={colour}];",
                n.address
            );
        }
        for (a, b) in edges {
            let _ = writeln!(out, "  \"{a}\" -> \"{b}\";");
        }
        out.push_str("}\n");
        out
    }
}

/// Builds the graph of one environment.
pub fn build(env: Env<'_>) -> Graph {
    let mut g = Graph::default();
    let p = env.platform;
    let azure = p.azure.is_some();

    // PostgreSQL: schema, plans, tenants, quotas, flags.
    let schema = g.node(Target::Postgres, "schema", "platform");
    let mut plan_nodes = HashMap::new();
    for plan in env.plans() {
        let n = g.node(Target::Postgres, "plan", &plan.name);
        g.edge(schema, n);
        plan_nodes.insert(plan.name.as_str(), n);
    }
    let mut tenant_nodes = HashMap::new();
    for t in env.tenants() {
        let n = g.node(Target::Postgres, "tenant", &t.slug);
        if let Some(pn) = plan_nodes.get(t.plan.as_str()) {
            g.edge(*pn, n);
        }
        let q = g.node(Target::Postgres, "quota", &t.slug);
        g.edge(n, q);
        tenant_nodes.insert(t.slug.as_str(), n);
    }
    for f in env.flags() {
        let n = g.node(Target::Postgres, "flag", &f.name);
        g.edge(schema, n);
        for plan in f.plans.keys() {
            if let Some(pn) = plan_nodes.get(plan.as_str()) {
                g.edge(*pn, n);
            }
        }
        for t in f.tenants.keys() {
            if let Some(tn) = tenant_nodes.get(t.as_str()) {
                g.edge(*tn, n);
            }
        }
    }

    // Azure.
    let mut apps = HashMap::new();
    if azure {
        let logs = g.node(Target::Azure, "loganalytics", &naming::log_analytics(p));
        let kv = g.node(Target::Azure, "keyvault", &naming::key_vault(p));
        let id = g.node(Target::Azure, "identity", &naming::identity(p));
        g.edge(id, kv);
        g.node(Target::Azure, "storage", &naming::storage_account(p));
        let cae = g.node(Target::Azure, "containerenv", &naming::container_env(p));
        g.edge(logs, cae);
        let pg = g.node(Target::Azure, "postgres", &naming::postgres_server(p));
        for db in &p.postgres.databases {
            let d = g.node(Target::Azure, "postgres-database", db);
            g.edge(pg, d);
            if *db == p.postgres.platform_database {
                g.edge(d, schema);
            }
        }
        let redis = g.node(Target::Azure, "redis", &naming::redis(p));
        let kong = g.node(
            Target::Azure,
            "containerapp",
            &naming::container_app(p, "kong"),
        );
        for dep in [cae, kv, id, redis, pg] {
            g.edge(dep, kong);
        }
        apps.insert("kong", kong);
        for s in p.services.iter().filter(|s| s.enabled) {
            let a = g.node(
                Target::Azure,
                "containerapp",
                &naming::container_app(p, &s.name),
            );
            g.edge(cae, a);
            g.edge(kv, a);
            g.edge(id, a);
            apps.insert(s.name.as_str(), a);
        }
        for s in p.services.iter().filter(|s| s.enabled) {
            for d in &s.depends_on {
                if let (Some(&dep), Some(&me)) = (apps.get(d.as_str()), apps.get(s.name.as_str())) {
                    g.edge(dep, me);
                }
            }
        }
        for name in ["sso", "admin", "health"] {
            if let Some(&a) = apps.get(name) {
                g.edge(pg, a);
            }
        }
        for t in env
            .tenants()
            .filter(|t| t.instance == InstanceMode::Dedicated)
        {
            let a = g.node(Target::Azure, "containerapp", &naming::tenant_app(p, t));
            g.edge(cae, a);
            g.edge(kv, a);
            g.edge(id, a);
            if let Some(tn) = tenant_nodes.get(t.slug.as_str()) {
                g.edge(*tn, a);
            }
        }
        let alerts = g.node(Target::Azure, "actiongroup", "oncall");
        for a in ["kong-5xx", "kong-unhealthy", "postgres-cpu"] {
            let n = g.node(Target::Azure, "alert", a);
            g.edge(alerts, n);
            g.edge(logs, n);
        }
        if p.front_door.is_some() {
            let prof = g.node(Target::Azure, "frontdoor", &naming::front_door(p));
            let ep = g.node(Target::Azure, "frontdoor-endpoint", "api");
            g.edge(prof, ep);
            let mut origins = vec![("kong", kong)];
            for s in p
                .services
                .iter()
                .filter(|s| s.enabled && s.front_door_origin)
            {
                if let Some(&a) = apps.get(s.name.as_str()) {
                    origins.push((s.name.as_str(), a));
                }
            }
            for (name, app) in origins {
                let og = g.node(Target::Azure, "frontdoor-origingroup", name);
                g.edge(prof, og);
                let o = g.node(Target::Azure, "frontdoor-origin", name);
                g.edge(og, o);
                g.edge(app, o);
                let r = g.node(Target::Azure, "frontdoor-route", name);
                g.edge(ep, r);
                g.edge(og, r);
                g.edge(o, r);
            }
        }
    }

    // Kong.
    let mtls = p.kong.upstream_mtls.as_ref().map(|_| {
        let c = g.node(Target::Kong, "certificate", "upstream-client");
        let ca = g.node(Target::Kong, "ca_certificate", "upstream-ca");
        (c, ca)
    });
    for s in p.services.iter().filter(|s| s.enabled) {
        let ks = g.node(Target::Kong, "service", &s.name);
        if let Some(&a) = apps.get(s.name.as_str()) {
            g.edge(a, ks);
        }
        if let (Some((c, ca)), kombiform_model::Protocol::Https) = (mtls, s.protocol) {
            g.edge(c, ks);
            g.edge(ca, ks);
        }
        for r in &s.routes {
            let kr = g.node(Target::Kong, "route", &r.name);
            g.edge(ks, kr);
        }
    }
    if p.kong.edition == KongEdition::Enterprise {
        for plan in env.plans() {
            g.node(Target::Kong, "consumer_group", &plan.name);
        }
    }
    for t in env.tenants() {
        let c = g.node(Target::Kong, "consumer", &t.slug);
        if let Some(tn) = tenant_nodes.get(t.slug.as_str()) {
            g.edge(*tn, c);
        }
        if p.kong.edition == KongEdition::Enterprise {
            let cg = g.node(Target::Kong, "consumer_group", &t.plan);
            g.edge(cg, c);
        }
    }

    // PocketBase.
    let mut global = HashMap::new();
    for c in env
        .collections()
        .iter()
        .filter(|c| c.scope == Scope::Global)
    {
        global.insert(
            c.name.as_str(),
            g.node(Target::PocketBase, "collection", &c.name),
        );
    }
    for c in env
        .collections()
        .iter()
        .filter(|c| c.scope == Scope::Global)
    {
        for f in c.fields.iter().filter(|f| f.kind == FieldKind::Relation) {
            if let (Some(t), Some(&me)) = (f.target.as_deref(), global.get(c.name.as_str())) {
                if let Some(&tn) = global.get(t) {
                    g.edge(tn, me);
                }
            }
        }
    }
    let tenant_templates: Vec<_> = env
        .collections()
        .iter()
        .filter(|c| c.scope == Scope::Tenant)
        .collect();
    for t in env.tenants() {
        let tn = tenant_nodes.get(t.slug.as_str()).copied();
        let mut mine = HashMap::new();
        for c in &tenant_templates {
            let n = g.node(
                Target::PocketBase,
                "collection",
                &c.collection_name(Some(t)),
            );
            if let Some(tn) = tn {
                g.edge(tn, n);
            }
            mine.insert(c.name.as_str(), n);
        }
        for c in &tenant_templates {
            for f in c.fields.iter().filter(|f| f.kind == FieldKind::Relation) {
                if let (Some(target), Some(&me)) = (f.target.as_deref(), mine.get(c.name.as_str()))
                {
                    if let Some(&tg) = mine.get(target) {
                        g.edge(tg, me);
                    }
                }
            }
        }
    }
    g
}
