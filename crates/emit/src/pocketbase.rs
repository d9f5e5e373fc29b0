//! PocketBase emitter: collection templates × tenants → `<env>/pocketbase/collections.json`
//! (the body of `PUT /api/collections/import`) and the same collections as one JS migration.
//!
//! Not an API client: applying the snapshot is the PocketBase provider's job. The facts this
//! relies on were verified against PocketBase 0.40.6 (`shared/ref/pocketbase.md`):
//! - Import matches collections by `id` and fields by `id` and merges (`deleteMissing:false`
//!   never drops anything). So every id here is explicit and derived from names only:
//!   collection `pbc_<collection name>` (unique because names are; no hash, so no collision
//!   across 40,000 collections), field `<type><crc32(name)>`, exactly what PocketBase computes
//!   for a field without an id, so a field created elsewhere by name is the same field.
//!   A renamed field keeps the id of its first name (`renamedFrom[0]`), so data is kept.
//! - Relation `collectionId` must be an id, which is why ids are computable from names.
//! - Import merges a collection's top-level keys (a key left out keeps its live value), so
//!   every rule is written, `null` included; but it replaces each listed field as a whole (an
//!   option left out is reset to its default), so field options at their default are left out.
//! - Auth system fields (`password`, `tokenKey`, `email`, ...) are appended by PocketBase and
//!   are left out; the `id` field is written first so the field order stays put on re-import.
//!
//! - Rules can guard single fields (`@request.body.f:isset`/`:changed`), and a rule evaluates
//!   the value PocketBase will store (JSON, multipart, `@jsonPayload` and `+`/`-` modifiers
//!   alike); see `rule`. A `null` rule and a `null` `authRule` shut everyone but superusers
//!   out, tokens already issued included: that is what a suspended tenant gets.
//!
//! Speed: a tenant collection differs from its template only in the tenant's ident (and, for
//! a suspended tenant, its rules), so each template is rendered twice into a [`Stencil`] (text
//! with holes), once with the rules of an active tenant and once of a suspended one, and
//! filled per tenant by copying. The JS migration ships the stencils once plus the tenant list
//! (and which tenants are suspended) and fills them in JavaScript the same way, so both files
//! describe byte-identical collections.

use std::fmt::Write as _;

use minijinja::{context, AutoEscape, Environment};
use sha2::{Digest, Sha256};

use crate::Files;
use kombiform_model::{
    naming, AccessLevel, CollectionKind, CollectionTemplate, Env, Field, FieldKind, Index, Scope,
    TenantStatus, Writers, OWNER_FIELD,
};

/// The tenant-scoped auth template every tenant rule pins the caller to.
const USERS: &str = "users";

/// Template of the JS migration.
const MIGRATION_TEMPLATE: &str = include_str!("../templates/pocketbase/migration.js.j2");

/// Adds `<env>/pocketbase/collections.json` and `<env>/pocketbase/migrations/<name>.js`.
pub fn emit(env: Env<'_>, files: &mut Files) {
    let stencils = Stencils::of(env);
    let tenants = tenants(env);
    let snapshot = snapshot(&stencils, &tenants);
    let migration = migration(env.name(), &stencils, &tenants);
    let name = migration_file_name(&migration);
    let dir = format!("{}/pocketbase", env.name());
    files.insert(format!("{dir}/collections.json"), snapshot);
    files.insert(format!("{dir}/migrations/{name}"), migration);
}

/// The collections of `collections.json`, in its order, each one the JSON object the import
/// API takes (for the PocketBase provider, which imports them one at a time). The text of
/// each is exactly what `collections.json` holds; a collection that would not parse (a bug
/// the unit tests rule out) comes back as a JSON string saying so, never as a panic.
pub fn collections(env: Env<'_>) -> Vec<serde_json::Value> {
    let stencils = Stencils::of(env);
    let tenants = tenants(env);
    let mut out =
        Vec::with_capacity(stencils.globals.len() + stencils.active.len() * tenants.len());
    let mut text = String::new();
    let mut push = |stencil: &Stencil, ident: &str| {
        text.clear();
        stencil.fill(ident, &mut text);
        out.push(serde_json::from_str(&text).unwrap_or_else(|e| {
            serde_json::Value::String(format!(
                "kombiform bug: emitted collection is not JSON: {e}"
            ))
        }));
    };
    for g in &stencils.globals {
        push(g, "");
    }
    for (ident, suspended) in &tenants {
        for t in stencils.tenant(*suspended) {
            push(t, ident);
        }
    }
    out
}

/// Every template of an environment rendered once: the global collections, and the tenant
/// collections as active tenants get them and as suspended tenants get them.
struct Stencils {
    globals: Vec<Stencil>,
    active: Vec<Stencil>,
    suspended: Vec<Stencil>,
}

impl Stencils {
    fn of(env: Env<'_>) -> Stencils {
        let templates = creation_order(env.collections());
        let token_ttl = env.platform.sso.token_ttl_seconds;
        let render = |scope: Scope, status: TenantStatus| -> Vec<Stencil> {
            templates
                .iter()
                .filter(|t| t.scope == scope)
                .map(|t| collection(t, token_ttl, status))
                .collect()
        };
        Stencils {
            globals: render(Scope::Global, TenantStatus::Active),
            active: render(Scope::Tenant, TenantStatus::Active),
            suspended: render(Scope::Tenant, TenantStatus::Suspended),
        }
    }

    /// The tenant stencils for an active (`false`) or suspended (`true`) tenant.
    fn tenant(&self, suspended: bool) -> &[Stencil] {
        if suspended {
            &self.suspended
        } else {
            &self.active
        }
    }
}

/// The environment's tenants in order: (ident, whether suspended).
fn tenants(env: Env<'_>) -> Vec<(String, bool)> {
    env.tenants()
        .map(|t| (t.ident(), t.status == TenantStatus::Suspended))
        .collect()
}

/// Templates in an order where every relation target comes before the collections that
/// point at it (ties by name), so both files list collections in a creatable order.
fn creation_order(templates: &[CollectionTemplate]) -> Vec<&CollectionTemplate> {
    let mut done: Vec<&CollectionTemplate> = Vec::with_capacity(templates.len());
    let mut left: Vec<&CollectionTemplate> = templates.iter().collect();
    while !left.is_empty() {
        let ready = left.iter().position(|t| {
            t.fields
                .iter()
                .filter_map(|f| f.target.as_deref())
                .all(|target| {
                    target == t.name
                        || done.iter().any(|d| d.name == target)
                        || !left.iter().any(|l| l.name == target)
                })
        });
        // Validation rejects relation cycles; should one slip through, keep name order.
        done.push(left.remove(ready.unwrap_or(0)));
    }
    done
}

// ---------------------------------------------------------------------------------------
// Stencils: rendered text with holes for the tenant ident
// ---------------------------------------------------------------------------------------

/// A collection's JSON with holes where the tenant's ident goes. `parts` has one more entry
/// than there are holes; a global collection has no holes.
#[derive(Debug, Default)]
struct Stencil {
    parts: Vec<String>,
    cur: String,
}

/// A piece of a string value: literal text or the tenant's ident.
#[derive(Clone, Copy)]
enum Seg<'a> {
    Text(&'a str),
    Ident,
}

impl Stencil {
    fn raw(&mut self, s: &str) {
        self.cur.push_str(s);
    }

    fn hole(&mut self) {
        self.parts.push(std::mem::take(&mut self.cur));
    }

    /// A JSON string made of `segs`.
    fn string(&mut self, segs: &[Seg<'_>]) {
        self.cur.push('"');
        for seg in segs {
            match seg {
                Seg::Text(s) => escape_into(&mut self.cur, s),
                Seg::Ident => self.hole(),
            }
        }
        self.cur.push('"');
    }

    /// A JSON string or `null`.
    fn opt_string(&mut self, segs: Option<&[Seg<'_>]>) {
        match segs {
            Some(segs) => self.string(segs),
            None => self.raw("null"),
        }
    }

    fn finish(mut self) -> Stencil {
        self.hole();
        self
    }

    /// Appends the stencil with every hole filled by `ident`.
    fn fill(&self, ident: &str, out: &mut String) {
        for (i, part) in self.parts.iter().enumerate() {
            if i > 0 {
                out.push_str(ident);
            }
            out.push_str(part);
        }
    }

    /// Appends the stencil with every hole filled by `ident`, as its own JSON text.
    fn joined(&self, with: &str) -> String {
        let mut s = String::new();
        self.fill(with, &mut s);
        s
    }
}

/// Escapes `s` for a JSON string (and a JS string: U+2028/2029 are escaped too).
fn escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
}

// ---------------------------------------------------------------------------------------
// One collection
// ---------------------------------------------------------------------------------------

/// The collection's name as segments: `t_<ident>_<template>` or the global name.
fn name_segs(template: &str, scope: Scope) -> Vec<Seg<'_>> {
    match scope {
        // The shape of `naming::tenant_collection`, with a hole for the tenant.
        Scope::Tenant => vec![
            Seg::Text(naming::TENANT_COLLECTION_PREFIX),
            Seg::Ident,
            Seg::Text(naming::TENANT_COLLECTION_SEPARATOR),
            Seg::Text(template),
        ],
        Scope::Global => vec![Seg::Text(template)],
    }
}

/// The collection id: `pbc_` + the collection name.
fn id_segs(template: &str, scope: Scope) -> Vec<Seg<'_>> {
    let mut segs = vec![Seg::Text("pbc_")];
    segs.extend(name_segs(template, scope));
    segs
}

/// Renders one template into a stencil (one JSON object, no trailing newline), with the
/// rules of a tenant of `status` (global templates: `Active`).
fn collection(t: &CollectionTemplate, token_ttl: u32, status: TenantStatus) -> Stencil {
    let mut s = Stencil::default();
    let name = name_segs(&t.name, t.scope);
    let kind = match t.kind {
        CollectionKind::Base => "base",
        CollectionKind::Auth => "auth",
    };
    s.raw("{\"id\":");
    s.string(&id_segs(&t.name, t.scope));
    s.raw(",\"name\":");
    s.string(&name);
    let _ = write!(s.cur, ",\"type\":\"{kind}\",");
    let open = status == TenantStatus::Active;
    let levels = t.levels();
    let rules = [
        ("listRule", Op::Read, levels.read),
        ("viewRule", Op::Read, levels.read),
        ("createRule", Op::Create, levels.create),
        ("updateRule", Op::Update, levels.update),
        ("deleteRule", Op::Delete, levels.delete),
    ];
    for (key, op, level) in rules {
        let _ = write!(s.cur, "\n \"{key}\":");
        let rule = if open { rule(t, op, level) } else { None };
        s.opt_string(rule.as_deref());
        s.raw(",");
    }
    if t.kind == CollectionKind::Auth {
        // Only superusers manage users; anyone of the collection may authenticate, since
        // the tenant is already pinned by which collection the user lives in. A suspended
        // tenant's users cannot authenticate (nor refresh a token).
        let auth_rule = if t.scope == Scope::Tenant && open {
            "\"\""
        } else {
            "null"
        };
        let _ = write!(
            s.cur,
            "\n \"authRule\":{auth_rule},\"manageRule\":null,\
             \"passwordAuth\":{{\"enabled\":true,\"identityFields\":[\"email\"]}},\
             \"oauth2\":{{\"enabled\":false}},\"mfa\":{{\"enabled\":false}},\"otp\":{{\"enabled\":false}},\
             \n \"authToken\":{{\"duration\":{token_ttl}}},\"passwordResetToken\":{{\"duration\":1800}},\
             \"emailChangeToken\":{{\"duration\":1800}},\"verificationToken\":{{\"duration\":86400}},\
             \"fileToken\":{{\"duration\":180}},"
        );
    }
    s.raw("\n \"fields\":[\n  ");
    s.raw(ID_FIELD);
    for f in &t.fields {
        s.raw(",\n  ");
        field(&mut s, f, t.scope);
    }
    s.raw("\n ],\n \"indexes\":[");
    let mut seen: Vec<&Index> = Vec::new();
    for ix in &t.indexes {
        if seen.contains(&ix) {
            continue;
        }
        s.raw(if seen.is_empty() { "\n  " } else { ",\n  " });
        seen.push(ix);
        index(&mut s, t, ix);
    }
    s.raw(if seen.is_empty() { "]}" } else { "\n ]}" });
    s.finish()
}

/// The primary key field exactly as PocketBase defines it; written so it stays first.
const ID_FIELD: &str =
    "{\"id\":\"text3208210256\",\"name\":\"id\",\"type\":\"text\",\"system\":true,\
\"primaryKey\":true,\"required\":true,\"min\":15,\"max\":15,\"pattern\":\"^[a-z0-9]+$\",\
\"autogeneratePattern\":\"[a-z0-9]{15}\"}";

/// What a rule is for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Read,
    Create,
    Update,
    Delete,
}

/// An API rule of an active tenant. Tenant rules require a signed-in user of the same
/// tenant's `users` collection; `Owner` also requires the record's owner (or, for users, the
/// user itself); `Nobody` and every rule of a global collection are `null`: superusers only.
///
/// Create and update rules also keep members off the fields they may not write (verified
/// against PocketBase 0.40.6, for JSON and multipart bodies, `@jsonPayload`, and the `+`/`-`
/// modifiers, which PocketBase resolves into the final value before the rule sees it):
/// - a superuser-only field ([`Writers::Superuser`]): `@request.body.f:isset = false` on
///   create, `@request.body.f:changed = false` on update (a client may send the unchanged
///   value back);
/// - the ownership field of a base template: `@request.body.owner = @request.auth.id` on
///   create (a member creates records owned by themselves only), and unchangeable on update,
///   by the owner too (a record is never given away or taken over through the API).
fn rule(t: &CollectionTemplate, op: Op, level: AccessLevel) -> Option<Vec<Seg<'_>>> {
    if t.scope == Scope::Global || level == AccessLevel::Nobody {
        return None;
    }
    let mut segs = vec![Seg::Text(
        "@request.auth.id != '' && @request.auth.collectionName = '",
    )];
    segs.extend(name_segs(USERS, Scope::Tenant));
    segs.push(Seg::Text("'"));
    if level == AccessLevel::Owner {
        segs.push(Seg::Text(match t.kind {
            CollectionKind::Auth => " && id = @request.auth.id",
            CollectionKind::Base => " && owner = @request.auth.id",
        }));
    }
    if matches!(op, Op::Create | Op::Update) {
        for f in &t.fields {
            if let Some(guard) = write_guard(t.kind, f, op) {
                segs.extend([Seg::Text(" && @request.body."), Seg::Text(&f.name)]);
                segs.push(Seg::Text(guard));
            }
        }
    }
    Some(segs)
}

/// The condition after `@request.body.<field>` that keeps members from writing `f` in a
/// create or update, if they may not write it freely.
fn write_guard(kind: CollectionKind, f: &Field, op: Op) -> Option<&'static str> {
    let owner = kind == CollectionKind::Base && f.name == OWNER_FIELD;
    let superuser = f.kind != FieldKind::Autodate && f.writers(kind) == Writers::Superuser;
    match op {
        Op::Create if superuser => Some(":isset = false"),
        Op::Create if owner => Some(" = @request.auth.id"),
        Op::Update if superuser || owner => Some(":changed = false"),
        _ => None,
    }
}

/// One field object. Import replaces a field as a whole (verified: an option left out is
/// reset to its default), so options at their default value are left out.
fn field(s: &mut Stencil, f: &Field, scope: Scope) {
    let ty = f.kind.as_str();
    let id_name = f.renamed_from.first().unwrap_or(&f.name);
    let _ = write!(s.cur, "{{\"id\":\"{}\",\"name\":", field_id(ty, id_name));
    s.string(&[Seg::Text(&f.name)]);
    let _ = write!(s.cur, ",\"type\":\"{ty}\"");
    if f.required && f.kind != FieldKind::Autodate {
        s.raw(",\"required\":true");
    }
    match f.kind {
        FieldKind::Text => {
            for (key, v) in [("min", length(f.min)), ("max", length(f.max))] {
                if v > 0 {
                    let _ = write!(s.cur, ",\"{key}\":{v}");
                }
            }
            if let Some(p) = f.pattern.as_deref().filter(|p| !p.is_empty()) {
                s.raw(",\"pattern\":");
                s.string(&[Seg::Text(p)]);
            }
        }
        FieldKind::Number => {
            for (key, v) in [("min", f.min), ("max", f.max)] {
                if let Some(v) = number(v) {
                    let _ = write!(s.cur, ",\"{key}\":{v}");
                }
            }
        }
        FieldKind::Select => {
            s.raw(",\"values\":[");
            for (i, v) in f.values.iter().enumerate() {
                if i > 0 {
                    s.raw(",");
                }
                s.string(&[Seg::Text(v)]);
            }
            let _ = write!(s.cur, "],\"maxSelect\":{}", f.max_select.unwrap_or(1));
        }
        FieldKind::Relation => {
            s.raw(",\"collectionId\":");
            let target = f.target.as_deref().unwrap_or_default();
            s.string(&id_segs(target, scope));
            if f.cascade_delete {
                s.raw(",\"cascadeDelete\":true");
            }
            let _ = write!(s.cur, ",\"maxSelect\":{}", f.max_select.unwrap_or(1));
        }
        FieldKind::Autodate => {
            let _ = write!(
                s.cur,
                ",\"onCreate\":true,\"onUpdate\":{}",
                f.name == "updated"
            );
        }
        FieldKind::Bool | FieldKind::Email | FieldKind::Url | FieldKind::Date | FieldKind::Json => {
        }
    }
    s.raw("}");
}

/// PocketBase's id for a field without one: type name + CRC-32 (IEEE) of the field name.
fn field_id(ty: &str, name: &str) -> String {
    format!("{ty}{}", crc32(name.as_bytes()))
}

/// A text length option: a non-negative integer, 0 when unset.
fn length(v: Option<f64>) -> u64 {
    // `as` saturates: negative and NaN become 0, huge values the largest u64.
    v.map_or(0, |v| v.round() as u64)
}

/// A number option: an integer when it is one; `None` when unset or not finite (PocketBase's
/// default, `null`, means no limit).
fn number(v: Option<f64>) -> Option<String> {
    match v {
        Some(v) if v.is_finite() && v.fract() == 0.0 && v.abs() < 9.0e15 => {
            Some(format!("{}", v as i64))
        }
        Some(v) if v.is_finite() => Some(format!("{v}")),
        _ => None,
    }
}

/// `CREATE [UNIQUE] INDEX` for one index. The name is `idx_<collection>_<8 hex>`, the hex a
/// CRC-32 of the index definition: the fixed-width suffix makes the name unique across
/// collections (SQLite index names are global), and it only changes when the index does.
/// A unique index skips rows whose optional text-like fields are empty, like PocketBase's
/// own `email` index, so that records without a value do not collide.
fn index(s: &mut Stencil, t: &CollectionTemplate, ix: &Index) {
    let mut def = String::from(if ix.unique { "unique:" } else { "index:" });
    def.push_str(&ix.fields.join(","));
    let name = name_segs(&t.name, t.scope);
    s.raw("\"CREATE ");
    if ix.unique {
        s.raw("UNIQUE ");
    }
    s.raw("INDEX `idx_");
    for seg in &name {
        match seg {
            Seg::Text(x) => escape_into(&mut s.cur, x),
            Seg::Ident => s.hole(),
        }
    }
    let _ = write!(s.cur, "_{:08x}` ON `", crc32(def.as_bytes()));
    for seg in &name {
        match seg {
            Seg::Text(x) => escape_into(&mut s.cur, x),
            Seg::Ident => s.hole(),
        }
    }
    s.raw("` (");
    for (i, f) in ix.fields.iter().enumerate() {
        if i > 0 {
            s.raw(", ");
        }
        s.raw("`");
        escape_into(&mut s.cur, f);
        s.raw("`");
    }
    s.raw(")");
    if ix.unique {
        let optional = ix.fields.iter().filter(|name| {
            t.fields.iter().any(|f| {
                &f.name == *name
                    && !f.required
                    && matches!(
                        f.kind,
                        FieldKind::Text | FieldKind::Email | FieldKind::Url | FieldKind::Date
                    )
            })
        });
        for (i, f) in optional.enumerate() {
            s.raw(if i == 0 { " WHERE `" } else { " AND `" });
            escape_into(&mut s.cur, f);
            s.raw("` != ''");
        }
    }
    s.raw("\"");
}

// ---------------------------------------------------------------------------------------
// The two files
// ---------------------------------------------------------------------------------------

/// `collections.json`: globals, then each tenant's collections in creation order.
fn snapshot(stencils: &Stencils, tenants: &[(String, bool)]) -> String {
    let size_hint = stencils.globals.iter().map(stencil_len).sum::<usize>()
        + tenants.len()
            * stencils
                .active
                .iter()
                .map(|s| stencil_len(s) + 40)
                .sum::<usize>();
    let mut out = String::with_capacity(size_hint + 64);
    out.push_str("{\"collections\":[\n");
    let mut first = true;
    let mut sep = |out: &mut String| {
        if !first {
            out.push_str(",\n");
        }
        first = false;
    };
    for g in &stencils.globals {
        sep(&mut out);
        g.fill("", &mut out);
    }
    for (ident, suspended) in tenants {
        for t in stencils.tenant(*suspended) {
            sep(&mut out);
            t.fill(ident, &mut out);
        }
    }
    out.push_str("\n],\n\"deleteMissing\":false}\n");
    out
}

fn stencil_len(s: &Stencil) -> usize {
    s.parts.iter().map(String::len).sum()
}

/// The JS migration: the stencils once, the tenant idents (and which are suspended), and a
/// loop that fills them.
fn migration(env: &str, stencils: &Stencils, tenants: &[(String, bool)]) -> String {
    let all_tenant: Vec<&Stencil> = stencils.active.iter().chain(&stencils.suspended).collect();
    let placeholder = placeholder(&all_tenant);
    let joined =
        |set: &[Stencil]| -> Vec<String> { set.iter().map(|t| t.joined(&placeholder)).collect() };
    let globals: Vec<String> = stencils.globals.iter().map(|g| g.joined("")).collect();
    let (templates, suspended_templates) = (joined(&stencils.active), joined(&stencils.suspended));
    let idents: Vec<&str> = tenants.iter().map(|(i, _)| i.as_str()).collect();
    let suspended: Vec<&str> = tenants
        .iter()
        .filter(|(_, s)| *s)
        .map(|(i, _)| i.as_str())
        .collect();
    let mut jinja = Environment::new();
    jinja.set_auto_escape_callback(|_| AutoEscape::None);
    let rendered = jinja.template_from_str(MIGRATION_TEMPLATE).and_then(|tpl| {
        tpl.render(context! {
            env => env,
            placeholder => placeholder,
            globals => globals,
            templates => templates,
            suspended_templates => suspended_templates,
            tenants => minijinja::value::Serde(&idents),
            suspended => minijinja::value::Serde(&suspended),
        })
    });
    // The template is part of the binary and its inputs are plain strings: rendering can
    // only fail on a bug, which the unit tests catch. Leave the failure visible in the file.
    match rendered {
        // minijinja drops the template's final newline.
        Ok(text) => text + "\n",
        Err(e) => format!("throw new Error({:?});\n", e.to_string()),
    }
}

/// The text standing for the tenant ident in the migration's templates: `{tenant}`, with
/// more braces if a template already contains it, so that splitting on it is exact.
fn placeholder(per_tenant: &[&Stencil]) -> String {
    let mut p = "{tenant}".to_string();
    while per_tenant
        .iter()
        .any(|t| t.parts.iter().any(|part| part.contains(&p)))
    {
        p = format!("{{{p}}}");
    }
    p
}

/// `1700000000_kombiform_<12 hex of SHA-256>.js`. PocketBase records each migration file by
/// name and never runs a recorded one again, so a fixed name would apply the first snapshot
/// only; naming the file after its content makes every changed snapshot a new migration.
/// The numeric prefix is fixed (no clock) and only keeps PocketBase's naming convention.
fn migration_file_name(content: &str) -> String {
    let digest = Sha256::digest(content.as_bytes());
    let mut hex = String::with_capacity(12);
    for b in digest.iter().take(6) {
        let _ = write!(hex, "{b:02x}");
    }
    format!("1700000000_kombiform_{hex}.js")
}

// ---------------------------------------------------------------------------------------
// CRC-32 (IEEE), as Go's hash/crc32.ChecksumIEEE that PocketBase uses for field ids
// ---------------------------------------------------------------------------------------

const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

fn crc32(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in bytes {
        c = CRC_TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

#[cfg(test)]
mod tests {

    use serde_json::Value;

    use super::*;
    use kombiform_model::Model;

    use kombiform_test_support::example_model;
    use kombiform_test_support::synthetic::{fleet, Fleet};

    fn emit_env(model: &Model, env: &str) -> Files {
        let mut files = Files::new();
        emit(model.env(env).expect("environment exists"), &mut files);
        files
    }

    fn snapshot_of(files: &Files, env: &str) -> Value {
        let text = &files[&format!("{env}/pocketbase/collections.json")];
        serde_json::from_str(text).expect("collections.json is JSON")
    }

    fn migration_of<'a>(files: &'a Files, env: &str) -> (&'a str, &'a str) {
        let prefix = format!("{env}/pocketbase/migrations/");
        let (path, text) = files
            .iter()
            .find(|(p, _)| p.starts_with(&prefix))
            .expect("a migration");
        (&path[prefix.len()..], text)
    }

    fn collections(snapshot: &Value) -> &Vec<Value> {
        snapshot["collections"]
            .as_array()
            .expect("collections array")
    }

    fn by_name<'a>(snapshot: &'a Value, name: &str) -> &'a Value {
        collections(snapshot)
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no collection {name}"))
    }

    /// The example model with `n` more tenants.
    fn model_with_tenants(n: usize) -> Model {
        let f = Fleet {
            tenants: n,
            keep_existing: true,
            ..Fleet::default()
        };
        fleet(example_model(), f)
    }

    #[test]
    fn field_ids_are_pocketbases_own() {
        // Ids PocketBase 0.40.6 gave these fields (shared/ref/pocketbase.md and a live GET).
        assert_eq!(field_id("text", "id"), "text3208210256");
        assert_eq!(field_id("text", "tenant"), "text1314505826");
        assert_eq!(field_id("password", "password"), "password901924565");
        assert_eq!(field_id("text", "tokenKey"), "text2504183744");
        assert_eq!(field_id("email", "email"), "email3885137012");
        assert_eq!(field_id("autodate", "created"), "autodate2990389176");
        assert_eq!(field_id("autodate", "updated"), "autodate3332085495");
    }

    #[test]
    fn snapshot_has_globals_and_every_tenant_collection() {
        let model = example_model();
        let files = emit_env(&model, "local");
        let snap = snapshot_of(&files, "local");
        assert_eq!(snap["deleteMissing"], false);
        let tenants = model.env("local").expect("local").tenants().count();
        let names: Vec<&str> = collections(&snap)
            .iter()
            .map(|c| c["name"].as_str().expect("name"))
            .collect();
        assert_eq!(names.len(), 1 + 4 * tenants);
        assert_eq!(names[0], "_sso_mappings");
        // Creation order inside a tenant: users before stacks before nodes/simulations.
        assert_eq!(
            &names[1..5],
            [
                "t_acme_users",
                "t_acme_stacks",
                "t_acme_nodes",
                "t_acme_simulations"
            ]
        );
        assert!(names.contains(&"t_stark_lab_nodes"), "{names:?}");
        // devtest only exists in local.
        assert!(names.contains(&"t_devtest_users"));
        let prod = snapshot_of(&emit_env(&model, "prod"), "prod");
        assert!(!collections(&prod)
            .iter()
            .any(|c| c["name"] == "t_devtest_users"));
    }

    #[test]
    fn ids_are_unique_and_relations_stay_in_the_tenant() {
        let snap = snapshot_of(&emit_env(&example_model(), "local"), "local");
        let mut ids: Vec<&str> = collections(&snap)
            .iter()
            .map(|c| c["id"].as_str().expect("id"))
            .collect();
        ids.sort_unstable();
        let n = ids.len();
        ids.dedup();
        assert_eq!(ids.len(), n, "collection ids collide");
        for c in collections(&snap) {
            let name = c["name"].as_str().expect("name");
            assert_eq!(c["id"], format!("pbc_{name}"));
            let mut field_ids: Vec<&str> = Vec::new();
            for f in c["fields"].as_array().expect("fields") {
                field_ids.push(f["id"].as_str().expect("field id"));
                if f["type"] == "relation" {
                    let target = f["collectionId"].as_str().expect("collectionId");
                    assert!(
                        ids.contains(&target),
                        "{name}: {target} is not a collection"
                    );
                    let tenant_prefix = name.rsplit_once('_').map(|(p, _)| p);
                    let stays =
                        tenant_prefix.is_some_and(|p| target.starts_with(&format!("pbc_{p}_")));
                    assert!(stays, "{name} points outside its tenant: {target}");
                }
            }
            let before = field_ids.len();
            field_ids.sort_unstable();
            field_ids.dedup();
            assert_eq!(field_ids.len(), before, "{name}: field ids collide");
        }
    }

    #[test]
    fn rules_require_a_user_of_the_same_tenant() {
        let snap = snapshot_of(&emit_env(&example_model(), "local"), "local");
        let member = "@request.auth.id != '' && @request.auth.collectionName = 't_stark_lab_users'";
        let nodes = by_name(&snap, "t_stark_lab_nodes");
        assert_eq!(nodes["listRule"], member);
        assert_eq!(
            nodes["createRule"],
            format!("{member} && @request.body.owner = @request.auth.id")
        );
        assert_eq!(
            nodes["updateRule"],
            format!("{member} && @request.body.owner:changed = false")
        );
        assert_eq!(
            nodes["deleteRule"],
            format!("{member} && owner = @request.auth.id")
        );
        let users = by_name(&snap, "t_stark_lab_users");
        assert_eq!(users["createRule"], Value::Null);
        assert_eq!(
            users["updateRule"],
            format!(
                "{member} && id = @request.auth.id \
                 && @request.body.zitadelSub:changed = false && @request.body.role:changed = false"
            )
        );
        assert_eq!(users["authRule"], "");
        assert_eq!(users["passwordAuth"]["enabled"], true);
        assert_eq!(users["oauth2"]["enabled"], false);
        assert_eq!(users["authToken"]["duration"], 900);
        let sims = by_name(&snap, "t_stark_lab_simulations");
        assert_eq!(sims["updateRule"], Value::Null);
        let global = by_name(&snap, "_sso_mappings");
        for rule in RULES {
            assert_eq!(global[rule], Value::Null, "{rule}");
        }
    }

    const RULES: [&str; 5] = [
        "listRule",
        "viewRule",
        "createRule",
        "updateRule",
        "deleteRule",
    ];

    #[test]
    fn superuser_only_fields_are_guarded_on_create_and_update() {
        let mut model = example_model();
        let nodes = model
            .collections
            .iter_mut()
            .find(|c| c.name == "nodes")
            .expect("nodes");
        let online = nodes
            .fields
            .iter_mut()
            .find(|f| f.name == "online")
            .expect("online");
        online.writable_by = Some(Writers::Superuser);
        let users = model
            .collections
            .iter_mut()
            .find(|c| c.name == "users")
            .expect("users");
        users.access.create = Some(AccessLevel::Member);
        let snap = snapshot_of(&emit_env(&model, "local"), "local");
        let member = "@request.auth.id != '' && @request.auth.collectionName = 't_acme_users'";
        let nodes = by_name(&snap, "t_acme_nodes");
        assert_eq!(
            nodes["createRule"],
            format!(
                "{member} && @request.body.owner = @request.auth.id \
                 && @request.body.online:isset = false"
            )
        );
        assert_eq!(
            nodes["updateRule"],
            format!(
                "{member} && @request.body.owner:changed = false \
                 && @request.body.online:changed = false"
            )
        );
        // Every field of a user record is kombify-sso's unless it says otherwise.
        let users = by_name(&snap, "t_acme_users");
        assert_eq!(
            users["createRule"],
            format!(
                "{member} && @request.body.zitadelSub:isset = false \
                 && @request.body.role:isset = false"
            )
        );
    }

    #[test]
    fn a_suspended_tenant_keeps_its_collections_behind_superuser_only_rules() {
        let model = example_model();
        let hooli = model
            .tenants
            .iter()
            .find(|t| t.slug == "hooli")
            .expect("hooli");
        assert_eq!(hooli.status, TenantStatus::Suspended);
        let snap = snapshot_of(&emit_env(&model, "local"), "local");
        for template in ["users", "stacks", "nodes", "simulations"] {
            let open = by_name(&snap, &format!("t_acme_{template}"));
            let closed = by_name(&snap, &format!("t_hooli_{template}"));
            for rule in RULES {
                assert_eq!(closed[rule], Value::Null, "{template} {rule}");
            }
            // Only the rules differ: the fields, indexes and data stay.
            let text = serde_json::to_string(open).expect("json");
            let mut open =
                serde_json::from_str::<Value>(&text.replace("acme", "hooli")).expect("json");
            for rule in RULES {
                open[rule] = Value::Null;
            }
            if template == "users" {
                assert_eq!(open["authRule"], "");
                open["authRule"] = Value::Null;
            }
            assert_eq!(&open, closed, "{template}");
        }
    }

    #[test]
    fn fields_map_to_pocketbase_options() {
        let snap = snapshot_of(&emit_env(&example_model(), "local"), "local");
        let field = |c: &str, f: &str| -> Value {
            by_name(&snap, c)["fields"]
                .as_array()
                .expect("fields")
                .iter()
                .find(|x| x["name"] == f)
                .cloned()
                .unwrap_or_else(|| panic!("no field {c}.{f}"))
        };
        let id = field("t_acme_nodes", "id");
        assert_eq!(id["primaryKey"], true);
        let host = field("t_acme_nodes", "hostname");
        assert_eq!(host["max"], 253);
        assert_eq!(host["pattern"], "^[a-z0-9.-]+$");
        assert_eq!(host["required"], true);
        let cpu = field("t_acme_nodes", "cpuCores");
        assert_eq!(
            (cpu["min"].clone(), cpu["max"].clone()),
            (1.into(), 512.into())
        );
        assert_eq!(field("t_acme_nodes", "memoryMb")["max"], Value::Null);
        let stack = field("t_acme_nodes", "stack");
        assert_eq!(stack["collectionId"], "pbc_t_acme_stacks");
        assert_eq!(stack["cascadeDelete"], true);
        assert_eq!(stack["maxSelect"], 1);
        let role = field("t_acme_users", "role");
        assert_eq!(
            role["values"],
            serde_json::json!(["owner", "admin", "member"])
        );
        let created = field("t_acme_stacks", "created");
        assert_eq!(
            (created["onCreate"].clone(), created["onUpdate"].clone()),
            (true.into(), false.into())
        );
    }

    #[test]
    fn updated_autodate_and_renames_and_optional_unique_indexes() {
        let mut model = example_model();
        let stacks = model
            .collections
            .iter_mut()
            .find(|c| c.name == "stacks")
            .expect("stacks");
        let mut updated = stacks.fields[5].clone();
        updated.name = "updated".into();
        stacks.fields.push(updated);
        stacks.fields[1].name = "kit".into();
        stacks.fields[1].renamed_from = vec!["stackkit".into()];
        stacks.fields[1].required = false;
        stacks.indexes.push(Index {
            fields: vec!["kit".into(), "status".into()],
            unique: true,
        });
        let snap = snapshot_of(&emit_env(&model, "local"), "local");
        let c = by_name(&snap, "t_acme_stacks");
        let fields = c["fields"].as_array().expect("fields");
        let f = |n: &str| fields.iter().find(|f| f["name"] == n).expect("field");
        assert_eq!(f("updated")["onUpdate"], true);
        assert_eq!(f("kit")["id"], field_id("text", "stackkit"));
        let last = c["indexes"].as_array().expect("indexes").last().cloned();
        let last = last
            .and_then(|v| v.as_str().map(str::to_owned))
            .expect("an index");
        assert!(
            last.starts_with("CREATE UNIQUE INDEX `idx_t_acme_stacks_")
                && last.ends_with(" ON `t_acme_stacks` (`kit`, `status`) WHERE `kit` != ''"),
            "{last}"
        );
    }

    #[test]
    fn index_names_are_unique_across_the_database() {
        let snap = snapshot_of(&emit_env(&example_model(), "local"), "local");
        let mut names: Vec<String> = Vec::new();
        for c in collections(&snap) {
            for ix in c["indexes"].as_array().expect("indexes") {
                let sql = ix.as_str().expect("sql");
                let name = sql.split('`').nth(1).expect("quoted name");
                names.push(name.to_ascii_lowercase());
            }
        }
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n);
        assert!(n > 20);
    }

    /// Does what the migration's JavaScript does, on the migration's own text, and
    /// compares the result with collections.json.
    #[test]
    fn migration_expands_to_the_snapshot() {
        let model = example_model();
        let files = emit_env(&model, "local");
        let snap = snapshot_of(&files, "local");
        let (name, js) = migration_of(&files, "local");
        assert!(name.starts_with("1700000000_kombiform_") && name.ends_with(".js"));
        assert!(js.contains("app.importCollections(collections, false);"));
        let array = |start: &str| -> Value {
            let from = js.find(start).expect("section") + start.len();
            let len = js[from..].find(";\n").expect("section end");
            let text = js[from..from + len].trim_end_matches(')');
            serde_json::from_str(text).expect("section is JSON")
        };
        let globals = array("const globals = ");
        let templates = array("const templates = ");
        let suspended_templates = array("const suspendedTemplates = ");
        let tenants = array("const tenants = ");
        let suspended = array("const suspended = new Set(");
        assert_eq!(suspended, serde_json::json!(["hooli"]));
        let mut expanded: Vec<Value> = globals.as_array().expect("globals").clone();
        for ident in tenants.as_array().expect("tenants") {
            let set = if suspended.as_array().expect("set").contains(ident) {
                &suspended_templates
            } else {
                &templates
            };
            let ident = ident.as_str().expect("ident");
            for t in set.as_array().expect("templates") {
                let text = serde_json::to_string(t).expect("json");
                let filled = text.split("{tenant}").collect::<Vec<_>>().join(ident);
                expanded.push(serde_json::from_str(&filled).expect("filled json"));
            }
        }
        assert_eq!(&expanded, collections(&snap));
    }

    #[test]
    fn collections_are_the_snapshot_entries() {
        let model = example_model();
        let env = model.env("local").expect("local");
        let snap = snapshot_of(&emit_env(&model, "local"), "local");
        assert_eq!(&super::collections(env), collections(&snap));
    }

    #[test]
    fn placeholder_avoids_text_in_templates() {
        let mut model = example_model();
        let nodes = model
            .collections
            .iter_mut()
            .find(|c| c.name == "nodes")
            .expect("nodes");
        nodes.fields[0].pattern = Some("^{tenant}$".into());
        let files = emit_env(&model, "local");
        let (_, js) = migration_of(&files, "local");
        assert!(
            js.contains(".split(\"{{tenant}}\")"),
            "placeholder not escalated"
        );
        assert!(js.contains("\"pattern\":\"^{tenant}$\""));
    }

    #[test]
    fn output_is_deterministic_and_the_migration_is_named_by_content() {
        let model = example_model();
        let a = emit_env(&model, "local");
        assert_eq!(a, emit_env(&model, "local"));
        let more = model_with_tenants(1);
        let b = emit_env(&more, "local");
        assert_ne!(migration_of(&a, "local").0, migration_of(&b, "local").0);
    }

    #[test]
    fn size_grows_linearly_with_tenants() {
        let size = |n: usize| -> (usize, usize) {
            let files = emit_env(&model_with_tenants(n), "prod");
            let snap = files["prod/pocketbase/collections.json"].len();
            (snap, migration_of(&files, "prod").1.len())
        };
        let (s1, m1) = size(200);
        let (s2, m2) = size(400);
        let per_tenant = (s2 - s1) / 200;
        assert!(
            (s1 - 200 * per_tenant) < s1 / 4,
            "snapshot not linear: {s1} {s2}"
        );
        assert!(per_tenant < 8_000, "{per_tenant} bytes per tenant");
        // The migration carries one line per tenant, not its collections.
        assert!(
            (m2 - m1) / 200 < 32,
            "migration grows {} per tenant",
            (m2 - m1) / 200
        );
    }
}
