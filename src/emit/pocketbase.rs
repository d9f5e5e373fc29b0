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
//! - Auth system fields (`password`, `tokenKey`, `email`, ...) are appended by PocketBase and
//!   are left out; the `id` field is written first so the field order stays put on re-import.
//!
//! Speed: a tenant collection differs from its template only in the tenant's ident, so each
//! template is rendered once into a [`Stencil`] (text with holes) and filled per tenant by
//! copying. The JS migration ships the stencils once plus the tenant list and fills them in
//! JavaScript the same way, so both files describe byte-identical collections.

use std::fmt::Write as _;

use minijinja::{context, AutoEscape, Environment};
use sha2::{Digest, Sha256};

use crate::emit::Files;
use crate::model::{
    AccessLevel, CollectionKind, CollectionTemplate, Env, Field, FieldKind, Index, Scope,
};

/// The tenant-scoped auth template every tenant rule pins the caller to.
const USERS: &str = "users";

/// Template of the JS migration.
const MIGRATION_TEMPLATE: &str = include_str!("../../templates/pocketbase/migration.js.j2");

/// Adds `<env>/pocketbase/collections.json` and `<env>/pocketbase/migrations/<name>.js`.
pub fn emit(env: Env<'_>, files: &mut Files) {
    let templates = creation_order(env.collections());
    let token_ttl = env.platform.sso.token_ttl_seconds;
    let globals: Vec<Stencil> = templates
        .iter()
        .filter(|t| t.scope == Scope::Global)
        .map(|t| collection(t, token_ttl))
        .collect();
    let per_tenant: Vec<Stencil> = templates
        .iter()
        .filter(|t| t.scope == Scope::Tenant)
        .map(|t| collection(t, token_ttl))
        .collect();
    let idents: Vec<String> = env.tenants().map(|t| t.ident()).collect();

    let snapshot = snapshot(&globals, &per_tenant, &idents);
    let migration = migration(env.name(), &globals, &per_tenant, &idents);
    let name = migration_file_name(&migration);
    let dir = format!("{}/pocketbase", env.name());
    files.insert(format!("{dir}/collections.json"), snapshot);
    files.insert(format!("{dir}/migrations/{name}"), migration);
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
        Scope::Tenant => vec![
            Seg::Text("t_"),
            Seg::Ident,
            Seg::Text("_"),
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

/// Renders one template into a stencil (one JSON object, no trailing newline).
fn collection(t: &CollectionTemplate, token_ttl: u32) -> Stencil {
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
    let _ = write!(s.cur, ",\"type\":\"{kind}\",\"system\":false,");
    let rules = [
        ("listRule", t.access.read),
        ("viewRule", t.access.read),
        ("createRule", t.access.create),
        ("updateRule", t.access.update),
        ("deleteRule", t.access.delete),
    ];
    for (key, level) in rules {
        let _ = write!(s.cur, "\n \"{key}\":");
        s.opt_string(rule(t, level).as_deref());
        s.raw(",");
    }
    if t.kind == CollectionKind::Auth {
        // Only superusers manage users; anyone of the collection may authenticate, since
        // the tenant is already pinned by which collection the user lives in.
        let auth_rule = if t.scope == Scope::Tenant {
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
\"autogeneratePattern\":\"[a-z0-9]{15}\",\"hidden\":false,\"presentable\":false}";

/// An API rule. Tenant rules require a signed-in user of the same tenant's `users`
/// collection; `Owner` also requires the record's owner (or, for users, the user itself);
/// `Nobody` and every rule of a global collection are `null`: superusers only.
fn rule(t: &CollectionTemplate, level: AccessLevel) -> Option<Vec<Seg<'static>>> {
    if t.scope == Scope::Global || level == AccessLevel::Nobody {
        return None;
    }
    let mut segs = vec![
        Seg::Text("@request.auth.id != '' && @request.auth.collectionName = 't_"),
        Seg::Ident,
        Seg::Text("_"),
        Seg::Text(USERS),
        Seg::Text("'"),
    ];
    if level == AccessLevel::Owner {
        segs.push(Seg::Text(match t.kind {
            CollectionKind::Auth => " && id = @request.auth.id",
            CollectionKind::Base => " && owner = @request.auth.id",
        }));
    }
    Some(segs)
}

/// One field object. Every option the model controls is written, defaults included, so a
/// removed option is reset on the next import instead of surviving the merge.
fn field(s: &mut Stencil, f: &Field, scope: Scope) {
    let ty = f.kind.as_str();
    let id_name = f.renamed_from.first().unwrap_or(&f.name);
    let _ = write!(s.cur, "{{\"id\":\"{}\",\"name\":", field_id(ty, id_name));
    s.string(&[Seg::Text(&f.name)]);
    let _ = write!(s.cur, ",\"type\":\"{ty}\"");
    if f.kind != FieldKind::Autodate {
        let _ = write!(s.cur, ",\"required\":{}", f.required);
    }
    match f.kind {
        FieldKind::Text => {
            let _ = write!(
                s.cur,
                ",\"min\":{},\"max\":{},\"pattern\":",
                length(f.min),
                length(f.max)
            );
            s.string(&[Seg::Text(f.pattern.as_deref().unwrap_or(""))]);
        }
        FieldKind::Number => {
            let _ = write!(
                s.cur,
                ",\"min\":{},\"max\":{},\"onlyInt\":false",
                number(f.min),
                number(f.max)
            );
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
            let _ = write!(
                s.cur,
                ",\"cascadeDelete\":{},\"minSelect\":0,\"maxSelect\":{}",
                f.cascade_delete,
                f.max_select.unwrap_or(1)
            );
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

/// A number option: an integer when it is one, `null` when unset (or not finite).
fn number(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() && v.fract() == 0.0 && v.abs() < 9.0e15 => {
            format!("{}", v as i64)
        }
        Some(v) if v.is_finite() => format!("{v}"),
        _ => "null".to_string(),
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
fn snapshot(globals: &[Stencil], per_tenant: &[Stencil], idents: &[String]) -> String {
    let size_hint = globals.iter().map(stencil_len).sum::<usize>()
        + idents.len()
            * per_tenant
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
    for g in globals {
        sep(&mut out);
        g.fill("", &mut out);
    }
    for ident in idents {
        for t in per_tenant {
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

/// The JS migration: the stencils once, the tenant idents, and a loop that fills them.
fn migration(env: &str, globals: &[Stencil], per_tenant: &[Stencil], idents: &[String]) -> String {
    let placeholder = placeholder(per_tenant);
    let globals: Vec<String> = globals.iter().map(|g| g.joined("")).collect();
    let templates: Vec<String> = per_tenant.iter().map(|t| t.joined(&placeholder)).collect();
    let mut jinja = Environment::new();
    jinja.set_auto_escape_callback(|_| AutoEscape::None);
    let rendered = jinja.template_from_str(MIGRATION_TEMPLATE).and_then(|tpl| {
        tpl.render(context! {
            env => env,
            placeholder => placeholder,
            globals => globals,
            templates => templates,
            tenants => minijinja::value::Serde(idents),
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
fn placeholder(per_tenant: &[Stencil]) -> String {
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
