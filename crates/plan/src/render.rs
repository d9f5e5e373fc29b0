//! Rendering plans for people (coloured text), pull requests (markdown) and machines (JSON).
//!
//! Text is compact by default: one line per created or deleted resource, updates and
//! replacements with their changed attributes as leaf paths (`fields[hostname].max: 253 →
//! 255`, PocketBase fields by name, not by id), long values cut; then a summary per target
//! and tenant, and when blocked, the exact `--allow-destroy` arguments. Verbose text lists
//! every attribute with whole values. JSON keeps everything. Secrets are already redacted in
//! the plan. Markdown stays under GitHub's comment limit by summarising. Pure: returns
//! strings.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::Value;

use super::{Action, Change, Plan};

/// GitHub's limit for a comment body.
pub const MARKDOWN_LIMIT: usize = 65_536;

/// Longest rendering of one value before it is shortened.
const MAX_VALUE: usize = 120;

/// ANSI colours, or none.
#[derive(Clone, Copy)]
struct Paint(bool);

impl Paint {
    fn wrap(self, code: &str, s: &str) -> String {
        if self.0 {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
    fn green(self, s: &str) -> String {
        self.wrap("32", s)
    }
    fn yellow(self, s: &str) -> String {
        self.wrap("33", s)
    }
    fn red(self, s: &str) -> String {
        self.wrap("31", s)
    }
    fn bold(self, s: &str) -> String {
        self.wrap("1", s)
    }
    fn dim(self, s: &str) -> String {
        self.wrap("2", s)
    }
}

fn symbol(a: Action) -> &'static str {
    match a {
        Action::Create => "+",
        Action::Update => "~",
        Action::Replace => "-/+",
        Action::Delete => "-",
    }
}

fn verb(a: Action) -> &'static str {
    match a {
        Action::Create => "create",
        Action::Update => "update in place",
        Action::Replace => "replace",
        Action::Delete => "delete",
    }
}

/// One leaf difference inside an attribute.
#[derive(Debug, Clone, PartialEq)]
pub struct Leaf {
    /// `name`, `fields[hostname].max`, `indexes[0]`.
    pub path: String,
    /// Before (`None`: absent).
    pub before: Option<Value>,
    /// After (`None`: absent).
    pub after: Option<Value>,
}

/// The leaf differences between two values. Arrays of objects with a `name` (or `id`) are
/// matched by it; other arrays by position.
pub fn leaves(path: &str, before: Option<&Value>, after: Option<&Value>, out: &mut Vec<Leaf>) {
    match (before, after) {
        (Some(Value::Object(b)), Some(Value::Object(a))) => {
            let mut keys: Vec<&String> = b.keys().chain(a.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                leaves(&join(path, k), b.get(k), a.get(k), out);
            }
        }
        (Some(Value::Array(b)), Some(Value::Array(a))) => {
            let key = |v: &Value| -> Option<String> {
                v.get("name")
                    .or_else(|| v.get("id"))
                    .and_then(Value::as_str)
                    .map(str::to_string)
            };
            let keyed = b.iter().chain(a.iter()).all(|v| key(v).is_some());
            if keyed && !(b.is_empty() && a.is_empty()) {
                let bm: BTreeMap<String, &Value> =
                    b.iter().filter_map(|v| key(v).map(|k| (k, v))).collect();
                let am: BTreeMap<String, &Value> =
                    a.iter().filter_map(|v| key(v).map(|k| (k, v))).collect();
                let mut names: Vec<&String> = bm.keys().chain(am.keys()).collect();
                names.sort();
                names.dedup();
                for n in names {
                    let (bv, av) = (bm.get(n).copied(), am.get(n).copied());
                    let p = format!("{path}[{n}]");
                    if bv.is_none() || av.is_none() {
                        out.push(Leaf {
                            path: p,
                            before: bv.cloned(),
                            after: av.cloned(),
                        });
                    } else {
                        leaves(&p, bv, av, out);
                    }
                }
            } else if a.len() == b.len() && a.iter().all(|v| !v.is_object() && !v.is_array()) {
                for (i, (bv, av)) in b.iter().zip(a).enumerate() {
                    leaves(&format!("{path}[{i}]"), Some(bv), Some(av), out);
                }
            } else if a != b {
                out.push(Leaf {
                    path: path.to_string(),
                    before: before.cloned(),
                    after: after.cloned(),
                });
            }
        }
        (b, a) if b != a => out.push(Leaf {
            path: path.to_string(),
            before: b.cloned(),
            after: a.cloned(),
        }),
        _ => {}
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// How much of each value to show.
#[derive(Clone, Copy)]
enum Width {
    /// Cut at [`MAX_VALUE`] characters.
    Short,
    /// Whole.
    Full,
}

fn show(v: Option<&Value>, width: Width) -> String {
    match v {
        None => "(absent)".to_string(),
        Some(v) => {
            let s = serde_json::to_string(v).unwrap_or_default();
            match width {
                Width::Short if s.chars().count() > MAX_VALUE => {
                    let cut: String = s.chars().take(MAX_VALUE).collect();
                    format!("{cut}…")
                }
                _ => s,
            }
        }
    }
}

/// The name people know an attribute by: a PocketBase field (`fields.<field id>`, keyed by
/// id because PocketBase matches fields by id) is shown by its name, `fields[hostname]`.
pub fn display_name(attr: &str, before: Option<&Value>, after: Option<&Value>) -> String {
    fn field_name(v: Option<&Value>) -> Option<&str> {
        v.and_then(|v| v.get("name")).and_then(Value::as_str)
    }
    match attr.strip_prefix("fields.") {
        Some(id) if !id.contains('.') => match field_name(after).or(field_name(before)) {
            Some(name) => format!("fields[{name}]"),
            None => attr.to_string(),
        },
        _ => attr.to_string(),
    }
}

/// The lines of a change: top-level attributes of a create or delete, leaf paths of an
/// update or replace; attributes by the names people know.
fn change_leaves(c: &Change) -> Vec<Leaf> {
    let mut out = Vec::new();
    for a in &c.attrs {
        let name = display_name(&a.name, a.before.as_ref(), a.after.as_ref());
        match c.action {
            Action::Create | Action::Delete => out.push(Leaf {
                path: name,
                before: a.before.clone(),
                after: a.after.clone(),
            }),
            _ => leaves(&name, a.before.as_ref(), a.after.as_ref(), &mut out),
        }
    }
    out
}

/// How the text plan is rendered.
#[derive(Clone, Copy, Debug, Default)]
pub struct TextOptions {
    /// ANSI colours.
    pub color: bool,
    /// Every attribute of creates and deletes, and whole values (default: one line per
    /// created or deleted resource, updates with their changed attributes, long values cut).
    pub verbose: bool,
}

/// The plan as text for people, compact; ANSI colours when `color`.
pub fn text(plan: &Plan, color: bool) -> String {
    text_with(
        plan,
        TextOptions {
            color,
            verbose: false,
        },
    )
}

/// The plan as text for people.
pub fn text_with(plan: &Plan, opts: TextOptions) -> String {
    let p = Paint(opts.color);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} for environment `{}` (specs {}, state serial {})",
        p.bold("kombiform plan"),
        plan.env,
        short(&plan.spec_hash),
        plan.state_serial
    );
    if plan.changes.is_empty() && !plan.has_state_changes() {
        let _ = writeln!(
            out,
            "\n{} {} resources match the specs.",
            p.green("No changes."),
            plan.unchanged
        );
        kept_text(&mut out, plan, p);
        return out;
    }
    out.push('\n');
    kept_text(&mut out, plan, p);
    state_changes(&mut out, plan, p);
    for c in &plan.changes {
        change_text(&mut out, plan, c, p, opts.verbose);
    }
    out.push('\n');
    let _ = writeln!(out, "{}", p.bold(&summary(plan)));
    out.push_str(&by_target_and_tenant(plan));
    blocked_text(&mut out, plan, p);
    out
}

/// One change: its head line, then its attribute lines.
fn change_text(out: &mut String, plan: &Plan, c: &Change, p: Paint, verbose: bool) {
    let head = format!("{} {}", symbol(c.action), c.address);
    let coloured = match c.action {
        Action::Create => p.green(&head),
        Action::Update => p.yellow(&head),
        Action::Replace | Action::Delete => p.red(&head),
    };
    let mut notes = vec![verb(c.action).to_string()];
    if c.destructive {
        notes.push(p.red("destructive: data is lost"));
    }
    if c.drift {
        notes.push(p.yellow("drift: changed outside kombiform"));
    }
    if let Some(why) = plan.vetoed.get(&c.address) {
        notes.push(p.red(&format!("never applied: {why}")));
    } else if plan.refused.contains(&c.address) {
        notes.push(p.red("blocked: needs consent"));
    } else if let Some(by) = plan.consented.get(&c.address) {
        notes.push(format!("consent: {by}"));
    }
    let _ = writeln!(
        out,
        "  {coloured}  {}",
        p.dim(&format!("({})", notes.join(", ")))
    );
    let listed = verbose || matches!(c.action, Action::Update | Action::Replace);
    if !listed {
        return;
    }
    let width = if verbose { Width::Full } else { Width::Short };
    let forced: Vec<String> = c
        .attrs
        .iter()
        .filter(|a| a.forces_replace)
        .map(|a| display_name(&a.name, a.before.as_ref(), a.after.as_ref()))
        .collect();
    for l in change_leaves(c) {
        let mark = if forced
            .iter()
            .any(|f| l.path == *f || l.path.starts_with(&format!("{f}.")))
        {
            p.red("  # forces replacement")
        } else {
            String::new()
        };
        let line = match c.action {
            Action::Create => format!("{}: {}", l.path, show(l.after.as_ref(), width)),
            Action::Delete => format!("{}: {}", l.path, show(l.before.as_ref(), width)),
            _ => format!(
                "{}: {} → {}",
                l.path,
                show(l.before.as_ref(), width),
                show(l.after.as_ref(), width)
            ),
        };
        let _ = writeln!(out, "      {line}{mark}");
    }
}

/// What blocks the plan and how to consent, for people.
fn blocked_text(out: &mut String, plan: &Plan, p: Paint) {
    if plan.refused.is_empty() {
        return;
    }
    let needs_consent = plan.refused.len() - plan.vetoed.len();
    let _ = writeln!(
        out,
        "\n{} nothing will be applied while {} change(s) are refused.",
        p.red("Blocked:"),
        plan.refused.len()
    );
    if needs_consent > 0 {
        let args = crate::consent_arguments(plan);
        let _ = writeln!(
            out,
            "{needs_consent} destructive change(s) need consent (or `allowDestroy: true` on the tenant's spec). Consent with:\n  {}",
            args.iter()
                .map(|a| format!("--allow-destroy {a}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    if !plan.vetoed.is_empty() {
        let _ = writeln!(
            out,
            "{} change(s) are never applied, whatever the consent; change the specs:",
            plan.vetoed.len()
        );
        for (a, why) in &plan.vetoed {
            let _ = writeln!(out, "  - {a}: {why}");
        }
    }
}

/// How many changes of each action, in words (`4 to create, 1 to delete`); `none` when
/// there are none.
fn counts_text(counts: &[usize; 4]) -> String {
    let words = ["to create", "to update", "to replace", "to delete"];
    let parts: Vec<String> = counts
        .iter()
        .zip(words)
        .filter(|(n, _)| **n > 0)
        .map(|(n, w)| format!("{n} {w}"))
        .collect();
    if parts.is_empty() {
        "none".to_string()
    } else {
        parts.join(", ")
    }
}

fn action_index(a: Action) -> usize {
    match a {
        Action::Create => 0,
        Action::Update => 1,
        Action::Replace => 2,
        Action::Delete => 3,
    }
}

/// Tenants named in a summary line before the rest are counted.
const NAMED_TENANTS: usize = 5;

/// The changes counted per target, then per tenant; tenants with the same counts share a
/// line, so a first plan of 300 tenants stays a few lines.
fn by_target_and_tenant(plan: &Plan) -> String {
    if plan.changes.is_empty() {
        return String::new();
    }
    let mut per: BTreeMap<&str, BTreeMap<Option<&str>, [usize; 4]>> = BTreeMap::new();
    for c in &plan.changes {
        let counts = per
            .entry(c.provider())
            .or_default()
            .entry(c.tenant())
            .or_insert([0; 4]);
        counts[action_index(c.action)] += 1;
    }
    let mut out = String::from("By target and tenant:\n");
    for (target, tenants) in &per {
        let mut total = [0; 4];
        for counts in tenants.values() {
            for (t, n) in total.iter_mut().zip(counts) {
                *t += n;
            }
        }
        let _ = writeln!(out, "  {target}: {}", counts_text(&total));
        if let Some(shared) = tenants.get(&None) {
            let _ = writeln!(out, "    not of a tenant: {}", counts_text(shared));
        }
        let mut groups: BTreeMap<[usize; 4], Vec<&str>> = BTreeMap::new();
        for (tenant, counts) in tenants {
            if let Some(t) = tenant {
                groups.entry(*counts).or_default().push(t);
            }
        }
        let mut groups: Vec<([usize; 4], Vec<&str>)> = groups.into_iter().collect();
        groups.sort_by(|a, b| (b.1.len(), &a.1).cmp(&(a.1.len(), &b.1)));
        for (counts, names) in groups {
            let each = if names.len() > 1 { " each" } else { "" };
            let _ = writeln!(
                out,
                "    {}: {}{each}",
                tenant_list(&names),
                counts_text(&counts)
            );
        }
    }
    out
}

/// `tenant acme`, `tenants acme, globex`, `300 tenants: acme, globex, … and 295 more`.
fn tenant_list(names: &[&str]) -> String {
    match names {
        [one] => format!("tenant {one}"),
        _ if names.len() <= NAMED_TENANTS => format!("tenants {}", names.join(", ")),
        _ => format!(
            "{} tenants: {}, … and {} more",
            names.len(),
            names[..NAMED_TENANTS].join(", "),
            names.len() - NAMED_TENANTS
        ),
    }
}

/// The fields the running platform owns whose value differs from the specs': information,
/// kept as they are.
fn kept_text(out: &mut String, plan: &Plan, p: Paint) {
    if plan.kept.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "  {}",
        p.dim("owned by the running platform, kept as they are (the specs only seed them):")
    );
    for k in &plan.kept {
        let _ = writeln!(
            out,
            "  {} {} {}: {}  {}",
            p.dim("="),
            k.address,
            k.attr,
            show(Some(&k.live), Width::Short),
            p.dim(&format!(
                "(set by {}; specs: {})",
                k.owner,
                show(Some(&k.specs), Width::Short)
            ))
        );
    }
    out.push('\n');
}

/// The state-only part of a plan: what apply records or drops without changing anything live.
fn state_changes(out: &mut String, plan: &Plan, p: Paint) {
    if !plan.has_state_changes() {
        return;
    }
    let _ = writeln!(
        out,
        "  {}",
        p.dim("state only, nothing live changes (an earlier apply was interrupted):")
    );
    for r in &plan.adopt {
        let _ = writeln!(
            out,
            "  {} {}  {}",
            p.green("="),
            r.address,
            p.dim("(adopt: live and matching the specs, not recorded)")
        );
    }
    for a in &plan.forget {
        let _ = writeln!(
            out,
            "  {} {a}  {}",
            p.yellow("~"),
            p.dim("(forget: recorded, but gone and no longer in the specs)")
        );
    }
}

/// `Plan: 1 to create, 2 to update, 0 to replace, 1 to delete; 40 unchanged; 1 drifted.`
/// State-only work follows when there is any (`; 3 to adopt, 1 to forget in state`).
pub fn summary(plan: &Plan) -> String {
    let counts = plan.counts();
    let n = |a: Action| counts.get(&a).copied().unwrap_or(0);
    let drift = plan.changes.iter().filter(|c| c.drift).count();
    let mut s = format!(
        "Plan: {} to create, {} to update, {} to replace, {} to delete; {} unchanged",
        n(Action::Create),
        n(Action::Update),
        n(Action::Replace),
        n(Action::Delete),
        plan.unchanged
    );
    if drift > 0 {
        let _ = write!(s, "; {drift} drifted");
    }
    if plan.has_state_changes() {
        let _ = write!(
            s,
            "; {} to adopt, {} to forget in state",
            plan.adopt.len(),
            plan.forget.len()
        );
    }
    s.push('.');
    s
}

fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

/// The plan as stable JSON (see docs/plan-json.md).
pub fn json(plan: &Plan) -> String {
    let mut s = serde_json::to_string_pretty(plan).unwrap_or_default();
    s.push('\n');
    s
}

/// The plan as markdown for a pull-request comment, always under [`MARKDOWN_LIMIT`]
/// characters: details are dropped, then summarised by resource type, when it would not fit.
pub fn markdown(plan: &Plan) -> String {
    let full = markdown_with(plan, usize::MAX);
    if full.len() <= MARKDOWN_LIMIT {
        return full;
    }
    let compact = markdown_with(plan, 0);
    if compact.len() <= MARKDOWN_LIMIT {
        return compact;
    }
    markdown_summary(plan)
}

fn header(plan: &Plan) -> String {
    let mut out = format!(
        "### kombiform plan: `{}`\n\n{}\n\n",
        plan.env,
        summary(plan)
    );
    if !plan.refused.is_empty() {
        let _ = writeln!(
            out,
            "> **Blocked:** {} change(s) refused. Consent with: `{}`\n",
            plan.refused.len(),
            crate::consent_arguments(plan)
                .iter()
                .map(|a| format!("--allow-destroy {a}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    out
}

fn markdown_with(plan: &Plan, detail_lines: usize) -> String {
    let mut out = header(plan);
    if !plan.kept.is_empty() {
        out.push_str("Owned by the running platform, kept as they are:\n\n");
        for k in &plan.kept {
            let _ = writeln!(
                out,
                "- `{}` {}: `{}` (set by {}; specs: `{}`)",
                k.address,
                k.attr,
                show(Some(&k.live), Width::Short),
                k.owner,
                show(Some(&k.specs), Width::Short)
            );
        }
        out.push('\n');
    }
    if plan.changes.is_empty() {
        out.push_str(if plan.has_state_changes() {
            "No live changes: apply only records the state.\n"
        } else {
            "No changes.\n"
        });
        return out;
    }
    out.push_str("| | resource | action | notes |\n|---|---|---|---|\n");
    for c in &plan.changes {
        let mut notes = Vec::new();
        if c.destructive {
            notes.push("**destructive**");
        }
        if c.drift {
            notes.push("drift");
        }
        if plan.refused.contains(&c.address) {
            notes.push("blocked");
        }
        let _ = writeln!(
            out,
            "| `{}` | `{}` | {} | {} |",
            symbol(c.action),
            c.address,
            verb(c.action),
            notes.join(", ")
        );
    }
    if detail_lines > 0 {
        out.push_str("\n<details><summary>Attribute changes</summary>\n\n```diff\n");
        for c in &plan.changes {
            let _ = writeln!(out, "{} {}", symbol(c.action), c.address);
            for l in change_leaves(c).iter().take(detail_lines) {
                match c.action {
                    Action::Create => {
                        let _ = writeln!(
                            out,
                            "+   {}: {}",
                            l.path,
                            show(l.after.as_ref(), Width::Short)
                        );
                    }
                    Action::Delete => {
                        let _ = writeln!(
                            out,
                            "-   {}: {}",
                            l.path,
                            show(l.before.as_ref(), Width::Short)
                        );
                    }
                    _ => {
                        let _ = writeln!(
                            out,
                            "-   {}: {}",
                            l.path,
                            show(l.before.as_ref(), Width::Short)
                        );
                        let _ = writeln!(
                            out,
                            "+   {}: {}",
                            l.path,
                            show(l.after.as_ref(), Width::Short)
                        );
                    }
                }
            }
        }
        out.push_str("```\n\n</details>\n");
    }
    out
}

fn markdown_summary(plan: &Plan) -> String {
    let mut out = header(plan);
    let mut by_type: BTreeMap<(String, Action), usize> = BTreeMap::new();
    for c in &plan.changes {
        let ty = c
            .address
            .rsplit_once('.')
            .map_or(c.address.as_str(), |(t, _)| t);
        let ty = ty.split('.').take(2).collect::<Vec<_>>().join(".");
        *by_type.entry((ty, c.action)).or_insert(0) += 1;
    }
    out.push_str("Too many changes to list; by resource type:\n\n| resource type | action | count |\n|---|---|---|\n");
    for ((ty, a), n) in &by_type {
        let _ = writeln!(out, "| `{ty}` | {} | {n} |", verb(*a));
    }
    let special: Vec<&Change> = plan
        .changes
        .iter()
        .filter(|c| c.destructive || c.drift)
        .collect();
    if !special.is_empty() {
        out.push_str("\nDestructive or drifted:\n\n");
        let budget = MARKDOWN_LIMIT - out.len() - 200;
        let mut used = 0;
        for (i, c) in special.iter().enumerate() {
            let line = format!("- `{}` {}\n", c.address, verb(c.action));
            if used + line.len() > budget {
                let _ = writeln!(out, "- … and {} more", special.len() - i);
                break;
            }
            used += line.len();
            out.push_str(&line);
        }
    }
    out.push_str("\nRun `kombiform plan` locally for the details.\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AttrChange, Resource};
    use serde_json::json;

    fn plan_with(changes: Vec<Change>) -> Plan {
        Plan {
            format: crate::PLAN_FORMAT,
            env: "local".into(),
            spec_hash: "abcdef0123456789".into(),
            state_serial: 3,
            fingerprints: BTreeMap::new(),
            live_hashes: BTreeMap::new(),
            changes,
            unchanged: 5,
            refused: vec![],
            vetoed: BTreeMap::new(),
            consented: BTreeMap::new(),
            adopt: vec![],
            forget: vec![],
            kept: vec![],
        }
    }

    fn update(addr: &str, before: Value, after: Value) -> Change {
        Change {
            address: addr.into(),
            action: Action::Update,
            attrs: vec![AttrChange {
                name: "fields".into(),
                before: Some(before),
                after: Some(after),
                sensitive: false,
                forces_replace: false,
            }],
            destructive: false,
            drift: true,
            desired: Some(Resource::new(addr, serde_json::Map::new())),
            live: None,
        }
    }

    #[test]
    fn nested_changes_show_as_leaf_paths() {
        let c = update(
            "pocketbase.collection.t_acme_nodes",
            json!([{"name": "hostname", "max": 253}, {"name": "online", "type": "bool"}]),
            json!([{"name": "hostname", "max": 255}, {"name": "online", "type": "bool"}]),
        );
        let t = text(&plan_with(vec![c]), false);
        assert!(t.contains("fields[hostname].max: 253 → 255"), "{t}");
        assert!(!t.contains("online"), "{t}");
        assert!(t.contains("drift"), "{t}");
        assert!(t.contains("Plan: 0 to create, 1 to update, 0 to replace, 0 to delete; 5 unchanged; 1 drifted."), "{t}");
    }

    #[test]
    fn pocketbase_fields_are_shown_by_name_and_creates_take_one_line() {
        let mut c = update(
            "pocketbase.collection.t_acme_nodes",
            json!({"name": "hostname", "max": 253}),
            json!({"name": "hostname", "max": 255}),
        );
        c.attrs[0].name = "fields.text1314505826".into();
        let mut create = update("pocketbase.collection.t_acme_users", json!(null), json!({}));
        create.action = Action::Create;
        create.attrs[0].before = None;
        let t = text(&plan_with(vec![c, create.clone()]), false);
        assert!(t.contains("fields[hostname].max: 253 → 255"), "{t}");
        assert!(!t.contains("text1314505826"), "{t}");
        assert!(
            t.contains("+ pocketbase.collection.t_acme_users  (create"),
            "{t}"
        );
        assert!(!t.contains("      fields: {}"), "a create is one line: {t}");
        let verbose = text_with(
            &plan_with(vec![create]),
            TextOptions {
                color: false,
                verbose: true,
            },
        );
        assert!(verbose.contains("      fields: {}"), "{verbose}");
    }

    #[test]
    fn the_summary_groups_tenants_with_the_same_changes() {
        let changes: Vec<Change> = (0..300)
            .flat_map(|i| {
                ["postgres.tenant", "postgres.quota"].map(|kind| {
                    let mut c = update(&format!("{kind}.t{i:03}"), json!(1), json!(2));
                    c.action = Action::Create;
                    if let Some(d) = c.desired.as_mut() {
                        d.meta.insert("tenant".into(), json!(format!("t{i:03}")));
                    }
                    c
                })
            })
            .collect();
        let s = by_target_and_tenant(&plan_with(changes));
        assert_eq!(
            s,
            "By target and tenant:\n  postgres: 600 to create\n    300 tenants: t000, t001, t002, t003, t004, … and 295 more: 2 to create each\n"
        );
    }

    #[test]
    fn no_changes_says_so() {
        let t = text(&plan_with(vec![]), true);
        assert!(t.contains("No changes."));
    }

    #[test]
    fn markdown_stays_under_the_limit() {
        let changes: Vec<Change> = (0..20_000)
            .map(|i| {
                update(
                    &format!("postgres.tenant.t{i:05}"),
                    json!({"a": 1}),
                    json!({"a": 2}),
                )
            })
            .collect();
        let md = markdown(&plan_with(changes));
        assert!(md.len() <= MARKDOWN_LIMIT, "{}", md.len());
        assert!(md.contains("postgres.tenant"), "{md}");
        let small = markdown(&plan_with(vec![update(
            "postgres.plan.pro",
            json!({"a": 1}),
            json!({"a": 2}),
        )]));
        assert!(small.contains("```diff"), "{small}");
    }

    #[test]
    fn state_only_work_is_shown_and_counted() {
        let mut p = plan_with(vec![]);
        p.adopt = vec![Resource::new("pb.c.made", serde_json::Map::new())];
        p.forget = vec!["pb.c.gone".into()];
        let t = text(&p, false);
        assert!(t.contains("= pb.c.made") && t.contains("adopt"), "{t}");
        assert!(t.contains("~ pb.c.gone") && t.contains("forget"), "{t}");
        assert!(t.contains("1 to adopt, 1 to forget in state"), "{t}");
        assert!(markdown(&p).contains("No live changes"));
    }
}
