//! The generated PocketBase rules inside one tenant, against the real PocketBase 0.40.6, for
//! every tenant collection template, tried as a hostile member would: fields only kombify-sso
//! may write (a user's Zitadel subject and role, any `writableBy: superuser` field) are refused
//! on create and update, as JSON, as multipart form and with PocketBase's `+` modifier (and
//! PocketBase's own `email` and `verified` stay out of a user's reach too); the
//! `owner` field is bound to the creator and cannot be changed, so the owner-only delete
//! holds; and a suspended tenant's users reach none of its collections.
//!
//! Every refusal is checked against a control that succeeds (the same request without the
//! forbidden field), and a refused create must be the rule's refusal (PocketBase answers a
//! failed create rule with 400 and empty `data`, a validation error names its field), so a
//! malformed test body cannot pass for a guard.
//!
//! Not a test of the emitter's text (its unit tests) or of isolation between tenants
//! (`pocketbase.rs`).

use std::cell::Cell;
use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use serde_json::{json, Map, Value};

use kombiform_emit::{pocketbase, Files};
use kombiform_model::{
    AccessLevel, CollectionKind, CollectionTemplate, Field, FieldKind, Model, Scope, Writers,
    OWNER_FIELD,
};
use kombiform_test_support::pocketbase::PocketBase;

use super::pocketbase::{call, import};

/// The tenant auth template the rules pin every caller to.
const USERS: &str = "users";

/// The password of every test user.
const PASSWORD: &str = "Tenant-Pass-123456";

/// The example model, with one field of a base template made superuser-only so that this
/// case is covered too (the example's superuser-only fields are all in `users`).
fn model() -> Result<Model> {
    let mut model = kombiform_test_support::example_model();
    let online = model
        .collections
        .iter_mut()
        .find(|c| c.name == "nodes")
        .and_then(|c| c.fields.iter_mut().find(|f| f.name == "online"))
        .context("the example has no nodes.online")?;
    online.writable_by = Some(Writers::Superuser);
    Ok(model)
}

/// A server with the model's `local` collections imported, and its superuser token.
fn server(model: &Model) -> Result<(PocketBase, String)> {
    let env = model.env("local").context("no local environment")?;
    let mut files = Files::new();
    pocketbase::emit(env, &mut files);
    let snapshot = files
        .get("local/pocketbase/collections.json")
        .context("no snapshot")?;
    let pb = PocketBase::start()?;
    let su = pb.superuser_token()?;
    import(&pb, &su, snapshot)?;
    Ok((pb, su))
}

/// The tenant templates, relation targets first.
fn tenant_templates(model: &Model) -> Vec<&CollectionTemplate> {
    let mut left: Vec<&CollectionTemplate> = model
        .collections
        .iter()
        .filter(|t| t.scope == Scope::Tenant)
        .collect();
    let mut done: Vec<&CollectionTemplate> = Vec::new();
    while !left.is_empty() {
        let ready = left.iter().position(|t| {
            t.fields
                .iter()
                .filter_map(|f| f.target.as_deref())
                .all(|x| {
                    x == t.name
                        || done.iter().any(|d| d.name == x)
                        || !left.iter().any(|l| l.name == x)
                })
        });
        done.push(left.remove(ready.unwrap_or(0)));
    }
    done
}

/// The fields a member may not write freely: superuser-only fields, and a base template's
/// ownership field.
fn guarded(t: &CollectionTemplate) -> Vec<&Field> {
    t.fields
        .iter()
        .filter(|f| f.kind != FieldKind::Autodate)
        .filter(|f| {
            f.writers(t.kind) == Writers::Superuser
                || (t.kind == CollectionKind::Base && f.name == OWNER_FIELD)
        })
        .collect()
}

/// One tenant's collections on a server: two members, alice and bob, and two records of every
/// template made by the superuser (the first owned by alice, the second by bob; for `users`,
/// alice and bob themselves).
struct Tenant<'a> {
    pb: &'a PocketBase,
    su: &'a str,
    ident: String,
    /// Template → ids of its two records.
    records: BTreeMap<String, [String; 2]>,
    /// alice's and bob's tokens.
    tokens: [String; 2],
    /// alice's and bob's e-mail addresses.
    emails: [String; 2],
    /// Makes every generated text unique (unique indexes).
    counter: Cell<u32>,
}

impl<'a> Tenant<'a> {
    /// Seeds the tenant `ident` as superuser. With `sign_in`, alice and bob get password
    /// tokens; otherwise impersonation tokens (a suspended tenant refuses sign-ins).
    fn seed(
        pb: &'a PocketBase,
        su: &'a str,
        ident: &str,
        templates: &[&CollectionTemplate],
        sign_in: bool,
    ) -> Result<Tenant<'a>> {
        let mut tenant = Tenant {
            pb,
            su,
            ident: ident.to_string(),
            records: BTreeMap::new(),
            tokens: [String::new(), String::new()],
            emails: [String::new(), String::new()],
            counter: Cell::new(0),
        };
        for t in templates {
            let mut ids: Vec<String> = Vec::new();
            for owner in 0..2 {
                let mut body = tenant.body(t, owner, |_| false);
                if t.kind == CollectionKind::Auth {
                    body.insert("verified".into(), json!(true));
                }
                let (status, created) =
                    tenant.send("POST", &tenant.path(t, None), Some(su), &body)?;
                if status != 200 {
                    bail!("seeding {}: {status} {created}", tenant.collection(t));
                }
                ids.push(created["id"].as_str().context("no id")?.to_string());
                if t.name == USERS {
                    let email = body["email"].as_str().context("no email")?;
                    tenant.tokens[owner] = tenant.token(&ids[owner], email, sign_in)?;
                    tenant.emails[owner] = email.to_string();
                }
            }
            tenant
                .records
                .insert(t.name.clone(), [ids[0].clone(), ids[1].clone()]);
        }
        Ok(tenant)
    }

    fn collection(&self, t: &CollectionTemplate) -> String {
        format!("t_{}_{}", self.ident, t.name)
    }

    fn path(&self, t: &CollectionTemplate, id: Option<&str>) -> String {
        let base = format!("/api/collections/{}/records", self.collection(t));
        id.map_or(base.clone(), |id| format!("{base}/{id}"))
    }

    fn token(&self, id: &str, email: &str, sign_in: bool) -> Result<String> {
        let users = format!("t_{}_{USERS}", self.ident);
        let (status, body) = if sign_in {
            let auth = json!({"identity": email, "password": PASSWORD});
            let path = format!("/api/collections/{users}/auth-with-password");
            self.send("POST", &path, None, auth.as_object().context("object")?)?
        } else {
            let path = format!("/api/collections/{users}/impersonate/{id}");
            self.send("POST", &path, Some(self.su), &Map::new())?
        };
        if status != 200 {
            bail!("no token for {email}: {status} {body}");
        }
        Ok(body["token"].as_str().context("no token")?.to_string())
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &Map<String, Value>,
    ) -> Result<(u16, Value)> {
        let text = Value::Object(body.clone()).to_string();
        call(self.pb, method, path, token, Some(&text))
    }

    /// The same body as `multipart/form-data` (values as form text).
    fn send_form(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: &Map<String, Value>,
    ) -> Result<(u16, Value)> {
        let boundary = "kombiform-test-boundary-7d1f";
        let mut form = String::new();
        for (k, v) in body {
            let text = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            form.push_str(&format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{text}\r\n"
            ));
        }
        form.push_str(&format!("--{boundary}--\r\n"));
        let url = format!("{}{path}", self.pb.url());
        let agent = self.pb.agent();
        let req = match method {
            "POST" => agent.post(&url),
            "PATCH" => agent.patch(&url),
            other => bail!("unsupported method {other}"),
        };
        let response = req
            .header("Authorization", token)
            .header(
                "Content-Type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(form)
            .send()
            .with_context(|| format!("{method} {url}"))?;
        let status = response.status().as_u16();
        let text = response.text()?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    fn next(&self) -> u32 {
        self.counter.set(self.counter.get() + 1);
        self.counter.get()
    }

    /// A valid value of `f`, the `v`th (0 or 1) of two different ones; `None` for autodate
    /// fields and relations without a record to point at.
    fn value(&self, f: &Field, v: usize) -> Option<Value> {
        let n = self.next();
        Some(match f.kind {
            FieldKind::Text => {
                let mut s = format!("v{v}n{n}");
                while (s.len() as f64) < f.min.unwrap_or(0.0) {
                    s.push('x');
                }
                json!(s)
            }
            FieldKind::Number => json!(f.min.unwrap_or(0.0) + v as f64),
            FieldKind::Bool => json!(v == 1),
            FieldKind::Email => json!(format!("v{v}n{n}@example.test")),
            FieldKind::Url => json!(format!("https://v{v}n{n}.example.test")),
            FieldKind::Date => json!(format!("2024-01-0{} 00:00:00.000Z", v + 1)),
            FieldKind::Select => json!(f.values[v % f.values.len()]),
            FieldKind::Json => json!({ "v": v }),
            FieldKind::Relation => json!(self.records.get(f.target.as_deref()?)?[v]),
            FieldKind::Autodate => return None,
        })
    }

    /// A valid record of `t` owned by alice (`owner` 0) or bob (1), without the fields `skip`
    /// names; an auth record also gets an e-mail address and a password.
    fn body(
        &self,
        t: &CollectionTemplate,
        owner: usize,
        skip: impl Fn(&Field) -> bool,
    ) -> Map<String, Value> {
        let mut body = Map::new();
        for f in t.fields.iter().filter(|f| !skip(f)) {
            let v = if f.target.as_deref() == Some(USERS) {
                owner
            } else {
                0
            };
            if let Some(value) = self.value(f, v) {
                body.insert(f.name.clone(), value);
            }
        }
        if t.kind == CollectionKind::Auth {
            let n = self.next();
            body.insert("email".into(), json!(format!("u{n}@{}.test", self.ident)));
            body.insert("password".into(), json!(PASSWORD));
            body.insert("passwordConfirm".into(), json!(PASSWORD));
        }
        body
    }

    /// A value of `f` that alice may not write: bob as the owner, else the second value.
    fn foreign(&self, f: &Field) -> Option<Value> {
        self.value(f, 1)
    }
}

/// Whether a create was refused by its rule: 403 for a `null` rule, 400 with no field named
/// for a failed rule (a validation error names its field).
fn refused_create(status: u16, body: &Value) -> bool {
    status == 403 || (status == 400 && body["data"].as_object().is_some_and(Map::is_empty))
}

/// Tries, as alice and bob, to write every guarded field of every template through create
/// and update, and to delete alice's records as bob; returns what got through.
fn hostile_member(tenant: &Tenant<'_>, templates: &[&CollectionTemplate]) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    for t in templates {
        create_checks(tenant, t, &mut problems)?;
        update_checks(tenant, t, &mut problems)?;
        delete_checks(tenant, t, &mut problems)?;
    }
    Ok(problems)
}

fn create_checks(
    tenant: &Tenant<'_>,
    t: &CollectionTemplate,
    problems: &mut Vec<String>,
) -> Result<()> {
    let name = tenant.collection(t);
    let path = tenant.path(t, None);
    let alice = tenant.tokens[0].as_str();
    let superuser_only = |f: &Field| f.writers(t.kind) == Writers::Superuser;
    if t.levels().create == AccessLevel::Nobody {
        let body = tenant.body(t, 0, superuser_only);
        let (status, reply) = tenant.send("POST", &path, Some(alice), &body)?;
        if !refused_create(status, &reply) {
            problems.push(format!(
                "{name}: a member created a record: {status} {reply}"
            ));
        }
        return Ok(());
    }
    let control = tenant.body(t, 0, superuser_only);
    let (status, reply) = tenant.send("POST", &path, Some(alice), &control)?;
    if status != 200 {
        bail!(
            "{name}: the control create failed, the checks would prove nothing: {status} {reply}"
        );
    }
    for f in guarded(t) {
        let Some(foreign) = tenant.foreign(f) else {
            continue;
        };
        for form in [false, true] {
            let mut body = tenant.body(t, 0, superuser_only);
            body.insert(f.name.clone(), foreign.clone());
            let (status, reply) = if form {
                tenant.send_form("POST", &path, alice, &body)?
            } else {
                tenant.send("POST", &path, Some(alice), &body)?
            };
            if !refused_create(status, &reply) {
                let how = if form { "multipart" } else { "JSON" };
                problems.push(format!(
                    "{name}: create with {}={foreign} ({how}) answered {status} {reply}",
                    f.name
                ));
            }
        }
    }
    Ok(())
}

fn update_checks(
    tenant: &Tenant<'_>,
    t: &CollectionTemplate,
    problems: &mut Vec<String>,
) -> Result<()> {
    let level = t.levels().update;
    if level == AccessLevel::Nobody {
        return Ok(());
    }
    let name = tenant.collection(t);
    let id = &tenant.records[&t.name][0];
    let path = tenant.path(t, Some(id));
    let guarded = guarded(t);
    // Control: alice may change a field members write, so refusals below are the guards'.
    let free = t.fields.iter().find(|f| {
        !guarded.iter().any(|g| g.name == f.name)
            && !matches!(f.kind, FieldKind::Relation | FieldKind::Autodate)
    });
    if let Some(f) = free {
        let value = tenant.value(f, 1).context("a free field has a value")?;
        let body = Map::from_iter([(f.name.clone(), value)]);
        let (status, reply) = tenant.send("PATCH", &path, Some(&tenant.tokens[0]), &body)?;
        if status != 200 {
            bail!(
                "{name}: alice could not change {}: {status} {reply}",
                f.name
            );
        }
    }
    if t.kind == CollectionKind::Auth {
        // PocketBase's own identity fields: only superusers (or a manage rule, which kombiform
        // never writes) change them.
        let (_, before) = call(tenant.pb, "GET", &path, Some(tenant.su), None)?;
        for body in [
            json!({"email": "taken-over@example.test"}),
            json!({"verified": false}),
        ] {
            let body = body.as_object().cloned().unwrap_or_default();
            let (status, reply) = tenant.send("PATCH", &path, Some(&tenant.tokens[0]), &body)?;
            let (_, after) = call(tenant.pb, "GET", &path, Some(tenant.su), None)?;
            if status == 200 || after != before {
                problems.push(format!("{name}: alice sent {body:?}: {status} {reply}"));
            }
        }
    }
    let actors: &[usize] = if level == AccessLevel::Member {
        &[0, 1]
    } else {
        &[0]
    };
    for f in guarded {
        let Some(foreign) = tenant.foreign(f) else {
            continue;
        };
        let (_, before) = call(tenant.pb, "GET", &path, Some(tenant.su), None)?;
        let mut bodies: Vec<(&str, Map<String, Value>)> = vec![
            ("JSON", Map::from_iter([(f.name.clone(), foreign.clone())])),
            (
                "multipart",
                Map::from_iter([(f.name.clone(), foreign.clone())]),
            ),
        ];
        if matches!(f.kind, FieldKind::Select | FieldKind::Relation) {
            let key = format!("{}+", f.name);
            bodies.push(("JSON `+`", Map::from_iter([(key, foreign.clone())])));
        }
        for &actor in actors {
            let token = tenant.tokens[actor].as_str();
            for (how, body) in &bodies {
                let (status, reply) = if *how == "multipart" {
                    tenant.send_form("PATCH", &path, token, body)?
                } else {
                    tenant.send("PATCH", &path, Some(token), body)?
                };
                let (_, after) = call(tenant.pb, "GET", &path, Some(tenant.su), None)?;
                if status != 404 || after[&f.name] != before[&f.name] {
                    let who = ["alice", "bob"][actor];
                    problems.push(format!(
                        "{name}: {who} set {}={foreign} ({how}): {status} {reply}",
                        f.name
                    ));
                }
            }
        }
    }
    Ok(())
}

fn delete_checks(
    tenant: &Tenant<'_>,
    t: &CollectionTemplate,
    problems: &mut Vec<String>,
) -> Result<()> {
    if t.levels().delete != AccessLevel::Owner || t.kind != CollectionKind::Base {
        return Ok(());
    }
    let name = tenant.collection(t);
    let id = &tenant.records[&t.name][0];
    let path = tenant.path(t, Some(id));
    let (status, _) = call(tenant.pb, "DELETE", &path, Some(&tenant.tokens[1]), None)?;
    let (exists, _) = call(tenant.pb, "GET", &path, Some(tenant.su), None)?;
    if status != 404 || exists != 200 {
        problems.push(format!(
            "{name}: bob deleted alice's record: {status}, then {exists}"
        ));
    }
    // Control: alice deletes a record of her own.
    let body = tenant.body(t, 0, |_| false);
    let (status, created) = tenant.send("POST", &tenant.path(t, None), Some(tenant.su), &body)?;
    if status != 200 {
        bail!("{name}: creating a record to delete: {status} {created}");
    }
    let own = tenant.path(t, created["id"].as_str());
    let (status, reply) = call(tenant.pb, "DELETE", &own, Some(&tenant.tokens[0]), None)?;
    if status != 204 {
        bail!("{name}: alice could not delete her own record: {status} {reply}");
    }
    Ok(())
}

#[test]
fn members_cannot_write_identity_or_ownership_fields_of_any_template() -> Result<()> {
    let model = model()?;
    let templates = tenant_templates(&model);
    assert!(templates.len() >= 4, "{} templates", templates.len());
    let (pb, su) = server(&model)?;
    let acme = Tenant::seed(&pb, &su, "acme", &templates, true)?;
    let problems = hostile_member(&acme, &templates)?;
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    Ok(())
}

#[test]
fn a_suspended_tenants_users_reach_none_of_its_collections() -> Result<()> {
    let model = model()?;
    let hooli = model
        .tenants
        .iter()
        .find(|t| t.slug == "hooli")
        .context("the example has no hooli")?;
    assert_eq!(hooli.status, kombiform_model::TenantStatus::Suspended);
    let templates = tenant_templates(&model);
    let (pb, su) = server(&model)?;
    let active = Tenant::seed(&pb, &su, "acme", &templates, true)?;
    let suspended = Tenant::seed(&pb, &su, "hooli", &templates, false)?;

    // No sign-in and no refresh of a token issued before.
    let users = "/api/collections/t_hooli_users";
    let (status, _) = call(
        &pb,
        "POST",
        &format!("{users}/auth-with-password"),
        None,
        Some(&json!({"identity": suspended.emails[0], "password": PASSWORD}).to_string()),
    )?;
    assert_eq!(status, 403, "a suspended tenant's user signed in");
    let (status, _) = call(
        &pb,
        "POST",
        &format!("{users}/auth-refresh"),
        Some(&suspended.tokens[0]),
        None,
    )?;
    assert_eq!(status, 403, "a suspended tenant's token was refreshed");

    for t in &templates {
        for (tenant, open) in [(&active, true), (&suspended, false)] {
            let name = tenant.collection(t);
            let token = Some(tenant.tokens[0].as_str());
            let own = &tenant.records[&t.name][0];
            let (list, body) = call(&pb, "GET", &tenant.path(t, None), token, None)?;
            let (view, _) = call(&pb, "GET", &tenant.path(t, Some(own)), token, None)?;
            if open {
                assert_eq!((list, view), (200, 200), "{name}: {body}");
                assert!(body["totalItems"].as_u64() > Some(0), "{name}: {body}");
                continue;
            }
            assert_eq!((list, view), (403, 403), "{name}: {body}");
            let record = tenant.body(t, 0, |f| f.writers(t.kind) == Writers::Superuser);
            let (create, _) = tenant.send("POST", &tenant.path(t, None), token, &record)?;
            let free = Map::new();
            let (update, _) = tenant.send("PATCH", &tenant.path(t, Some(own)), token, &free)?;
            let (delete, _) = call(&pb, "DELETE", &tenant.path(t, Some(own)), token, None)?;
            assert_eq!((create, update, delete), (403, 403, 403), "{name}");
        }
    }
    Ok(())
}
