//! The PocketBase emitter's output against the real PocketBase 0.40.6: the snapshot imports,
//! re-importing it changes nothing (and keeps data and tokens), the rules keep anonymous
//! users and other tenants out, and the JS migration creates the same collections.
//!
//! Not a test of the emitter's text (the unit tests in `src/emit/pocketbase.rs` do that).

use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

use kombiform_emit::{pocketbase, Files};

use kombiform_test_support::pocketbase::PocketBase;

/// The example specs' PocketBase files for `env`.
fn emitted(env: &str) -> Result<Files> {
    let model = kombiform_test_support::example_model();
    let env = model
        .env(env)
        .ok_or_else(|| anyhow!("no environment {env}"))?;
    let mut files = Files::new();
    pocketbase::emit(env, &mut files);
    Ok(files)
}

fn snapshot_text(files: &Files) -> Result<&str> {
    files
        .get("local/pocketbase/collections.json")
        .map(String::as_str)
        .context("no local/pocketbase/collections.json")
}

/// One request; returns the status and the body parsed as JSON (`Null` when empty).
pub(crate) fn call(
    pb: &PocketBase,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Result<(u16, Value)> {
    let url = format!("{}{path}", pb.url());
    let agent = pb.agent();
    let response = match (method, body) {
        ("DELETE", _) => {
            let mut req = agent.delete(&url);
            if let Some(t) = token {
                req = req.header("Authorization", t);
            }
            req.send()
        }
        ("GET", _) => {
            let mut req = agent.get(&url);
            if let Some(t) = token {
                req = req.header("Authorization", t);
            }
            req.send()
        }
        (_, body) => {
            let mut req = match method {
                "POST" => agent.post(&url),
                "PUT" => agent.put(&url),
                "PATCH" => agent.patch(&url),
                other => bail!("unsupported method {other}"),
            };
            if let Some(t) = token {
                req = req.header("Authorization", t);
            }
            req.header("Content-Type", "application/json")
                .body(body.unwrap_or("{}").to_string())
                .send()
        }
    }
    .with_context(|| format!("{method} {url}"))?;
    let status = response.status().as_u16();
    let text = response
        .text()
        .with_context(|| format!("reading the response of {method} {url}"))?;
    let json = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).with_context(|| format!("{method} {url}: {text}"))?
    };
    Ok((status, json))
}

/// Every collection, sorted by name, without the `created`/`updated` timestamps (every
/// import bumps them, per the reference).
fn collections(pb: &PocketBase, token: &str) -> Result<Vec<Value>> {
    let (status, body) = call(
        pb,
        "GET",
        "/api/collections?perPage=1000&sort=name",
        Some(token),
        None,
    )?;
    if status != 200 {
        bail!("listing collections answered {status}: {body}");
    }
    if body["totalItems"].as_u64() > Some(1000) {
        bail!("more than one page of collections: {}", body["totalItems"]);
    }
    let mut items = body["items"]
        .as_array()
        .cloned()
        .context("no items in the collection list")?;
    for item in &mut items {
        if let Some(map) = item.as_object_mut() {
            map.remove("created");
            map.remove("updated");
        }
    }
    Ok(items)
}

pub(crate) fn import(pb: &PocketBase, token: &str, snapshot: &str) -> Result<()> {
    let (status, body) = call(
        pb,
        "PUT",
        "/api/collections/import",
        Some(token),
        Some(snapshot),
    )?;
    if status != 204 {
        bail!("import answered {status}: {body}");
    }
    Ok(())
}

/// Creates a user in `collection` (as superuser) and returns its id and a password token.
fn user(pb: &PocketBase, su: &str, collection: &str, email: &str) -> Result<(String, String)> {
    let password = "Tenant-Pass-123456";
    let body = json!({
        "email": email, "password": password, "passwordConfirm": password,
        "verified": true, "zitadelSub": email, "role": "member",
    });
    let path = format!("/api/collections/{collection}/records");
    let (status, created) = call(pb, "POST", &path, Some(su), Some(&body.to_string()))?;
    if status != 200 {
        bail!("creating {email} answered {status}: {created}");
    }
    let id = created["id"]
        .as_str()
        .context("user without id")?
        .to_owned();
    let auth = json!({"identity": email, "password": password}).to_string();
    let path = format!("/api/collections/{collection}/auth-with-password");
    let (status, body) = call(pb, "POST", &path, None, Some(&auth))?;
    if status != 200 {
        bail!("{email} could not sign in: {status} {body}");
    }
    let token = body["token"].as_str().context("no token")?.to_owned();
    Ok((id, token))
}

fn items(body: &Value) -> usize {
    body["items"].as_array().map_or(usize::MAX, Vec::len)
}

#[test]
fn snapshot_imports_reimports_as_a_no_op_and_confines_tenants() -> Result<()> {
    let files = emitted("local")?;
    let snapshot = snapshot_text(&files)?;
    let wanted: Value = serde_json::from_str(snapshot)?;
    let wanted = wanted["collections"]
        .as_array()
        .context("no collections in the snapshot")?;

    let pb = PocketBase::start()?;
    let su = pb.superuser_token()?;
    import(&pb, &su, snapshot)?;

    let live = collections(&pb, &su)?;
    for c in wanted {
        let found = live.iter().find(|l| l["name"] == c["name"]);
        let found = found.with_context(|| format!("{} was not created", c["name"]))?;
        assert_eq!(found["id"], c["id"]);
        assert_eq!(found["listRule"], c["listRule"], "{}", c["name"]);
        assert_eq!(found["deleteRule"], c["deleteRule"], "{}", c["name"]);
        // PocketBase appends its own (auth system fields, system indexes); ours come first.
        let ours = c["fields"].as_array().context("fields")?;
        let theirs = found["fields"].as_array().context("live fields")?;
        for (a, b) in ours.iter().zip(theirs) {
            assert_eq!(
                (&a["id"], &a["name"]),
                (&b["id"], &b["name"]),
                "{}",
                c["name"]
            );
        }
        let our_ix = c["indexes"].as_array().context("indexes")?;
        let live_ix = found["indexes"].as_array().context("live indexes")?;
        assert_eq!(our_ix[..], live_ix[..our_ix.len()], "{}", c["name"]);
    }

    // Data and a signed-in user, to show re-import keeps both.
    let (alice, alice_token) = user(&pb, &su, "t_acme_users", "alice@acme.test")?;
    let (_bob, bob_token) = user(&pb, &su, "t_globex_users", "bob@globex.test")?;
    let stack = json!({"name": "homelab", "stackkit": "k3s", "owner": alice}).to_string();
    let (status, created) = call(
        &pb,
        "POST",
        "/api/collections/t_acme_stacks/records",
        Some(&alice_token),
        Some(&stack),
    )?;
    assert_eq!(status, 200, "alice creating a stack: {created}");
    let stack_id = created["id"].as_str().context("stack id")?.to_owned();

    let before = collections(&pb, &su)?;
    import(&pb, &su, snapshot)?;
    let after = collections(&pb, &su)?;
    assert_eq!(
        before, after,
        "re-importing the snapshot changed the schema"
    );

    // Alice's token still works (the auth collection's token secret was not rotated) and
    // her record survived.
    let (status, list) = call(
        &pb,
        "GET",
        "/api/collections/t_acme_stacks/records",
        Some(&alice_token),
        None,
    )?;
    assert_eq!((status, items(&list)), (200, 1), "{list}");
    let view = format!("/api/collections/t_acme_users/records/{alice}");
    let (status, me) = call(&pb, "GET", &view, Some(&alice_token), None)?;
    assert_eq!(status, 200, "{me}");

    // Anonymous: nothing listed, nothing created.
    let (status, list) = call(
        &pb,
        "GET",
        "/api/collections/t_acme_stacks/records",
        None,
        None,
    )?;
    assert_eq!((status, items(&list)), (200, 0), "{list}");
    let (status, _) = call(
        &pb,
        "POST",
        "/api/collections/t_acme_stacks/records",
        None,
        Some(&stack),
    )?;
    assert!(
        matches!(status, 400 | 403),
        "anonymous create answered {status}"
    );
    let (status, list) = call(
        &pb,
        "GET",
        "/api/collections/_sso_mappings/records",
        None,
        None,
    )?;
    assert_eq!(status, 403, "{list}");

    // A user of another tenant sees nothing of acme and cannot touch it.
    let (status, list) = call(
        &pb,
        "GET",
        "/api/collections/t_acme_stacks/records",
        Some(&bob_token),
        None,
    )?;
    assert_eq!((status, items(&list)), (200, 0), "{list}");
    let record = format!("/api/collections/t_acme_stacks/records/{stack_id}");
    let (status, _) = call(&pb, "GET", &record, Some(&bob_token), None)?;
    assert_eq!(status, 404);
    let (status, _) = call(
        &pb,
        "PATCH",
        &record,
        Some(&bob_token),
        Some(r#"{"name":"pwned"}"#),
    )?;
    assert_eq!(status, 404);
    let (status, users) = call(
        &pb,
        "GET",
        "/api/collections/t_acme_users/records",
        Some(&bob_token),
        None,
    )?;
    assert_eq!((status, items(&users)), (200, 0), "{users}");
    Ok(())
}

#[test]
fn migration_creates_the_same_collections_as_the_snapshot() -> Result<()> {
    let files = emitted("local")?;
    let snapshot = snapshot_text(&files)?;
    let (name, js) = files
        .iter()
        .find(|(p, _)| p.starts_with("local/pocketbase/migrations/"))
        .context("no migration emitted")?;
    let name = name.rsplit('/').next().context("migration file name")?;

    let imported = PocketBase::start()?;
    let su = imported.superuser_token()?;
    import(&imported, &su, snapshot)?;
    let by_import = collections(&imported, &su)?;

    // `migrate up` on a second server's data dir. The server is running, but the collection
    // list is read from the database, so it shows what the migration wrote.
    let migrated = PocketBase::start()?;
    let migrations = migrated.dir().join("kombiform_migrations");
    std::fs::create_dir_all(&migrations)?;
    std::fs::write(migrations.join(name), js)?;
    let out = Command::new(kombiform_test_support::pocketbase::executable()?)
        .current_dir(migrated.dir())
        .arg("migrate")
        .arg("up")
        .arg("--dir")
        .arg(migrated.dir().join("pb_data"))
        .arg("--migrationsDir")
        .arg(&migrations)
        .stdin(Stdio::null())
        .output()
        .context("running pocketbase migrate up")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(&format!("Applied {name}")),
        "migrate up failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let su2 = migrated.superuser_token()?;
    let by_migration = collections(&migrated, &su2)?;
    assert_eq!(by_import.len(), by_migration.len());
    for (a, b) in by_import.iter().zip(&by_migration) {
        assert_eq!(a, b, "collection {} differs", a["name"]);
    }

    // And the snapshot on top of the migration is a no-op.
    import(&migrated, &su2, snapshot)?;
    assert_eq!(collections(&migrated, &su2)?, by_migration);
    Ok(())
}
