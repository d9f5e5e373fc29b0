//! The PocketBase provider against the real PocketBase 0.40.6 (automigrate off): creates in
//! plan order, an exact round trip (a fresh read shows no change), drift of one attribute,
//! a field rename that keeps its data, field and tenant removals classified destructive and
//! applied without touching anything else, and a bulk read whose requests grow with pages.
//!
//! Not a test of the generic diff (`src/plan`) or of the emitter's text.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use kombiform_emit::targets::pocketbase::{self as target, PocketBase as Target};
use kombiform_emit::targets::Target as _;
use kombiform_engine::providers::pocketbase::PocketBase as Provider;
use kombiform_engine::providers::{transient, Client as _};
use kombiform_model::Model;
use kombiform_plan::{diff, Action, Change, DiffInput, Resource};

use kombiform_test_support::pocketbase::{PocketBase, SUPERUSER_EMAIL, SUPERUSER_PASSWORD};

fn example_model() -> Result<Model> {
    Ok(kombiform_test_support::example_model())
}

/// The collections the specs want (the backup schedule, always live, has its own test:
/// `pbbackup`).
fn desired(model: &Model) -> Result<Vec<Resource>> {
    let env = model.env("local").context("no local environment")?;
    Ok(target::desired(env)
        .into_iter()
        .filter(|r| r.address != target::BACKUPS)
        .collect())
}

fn connect(pb: &PocketBase, model: &Model) -> Result<Provider> {
    let env = model.env("local").context("no local environment")?;
    Ok(Provider::connect(&pb.url(), SUPERUSER_EMAIL, SUPERUSER_PASSWORD)?.managing(env))
}

/// Diff as the engine does it (nothing applied before; `managed` from state), then the
/// provider's classification. Returns the changes, the unchanged count and the destructive ones.
fn plan(
    _provider: &Provider,
    desired: &[Resource],
    live: &[Resource],
    managed: &BTreeSet<String>,
) -> (Vec<Change>, usize, Vec<String>) {
    let applied = BTreeMap::new();
    let input = DiffInput {
        desired,
        live,
        applied: &applied,
        managed,
    };
    let d = diff(&input).unwrap();
    let (mut changes, unchanged) = (d.changes, d.unchanged);
    for c in &mut changes {
        Target.classify(c);
    }
    let destructive = changes
        .iter()
        .filter(|c| c.destructive)
        .map(|c| c.address.clone())
        .collect();
    (changes, unchanged, destructive)
}

fn apply_all(provider: &Provider, changes: &[Change]) -> Result<()> {
    for c in changes {
        provider.apply(&[c])?;
    }
    Ok(())
}

/// One request as superuser; returns status and JSON body (`Null` when empty).
fn call(pb: &PocketBase, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Value)> {
    let token = pb.superuser_token()?;
    let url = format!("{}{path}", pb.url());
    // The support agent's 10 s are too short for importing 4,000 collections at once.
    let agent = kombiform_test_support::http::client(Duration::from_secs(600))?;
    let response = match method {
        "GET" => agent.get(&url).header("Authorization", &token).send(),
        "POST" | "PATCH" | "PUT" => {
            let req = match method {
                "POST" => agent.post(&url),
                "PATCH" => agent.patch(&url),
                _ => agent.put(&url),
            };
            req.header("Authorization", &token)
                .header("Content-Type", "application/json")
                .body(body.map(Value::to_string).unwrap_or_default())
                .send()
        }
        other => bail!("unsupported method {other}"),
    }
    .with_context(|| format!("{method} {url}"))?;
    let status = response.status().as_u16();
    let text = response.text()?;
    let json = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).with_context(|| format!("{method} {url}: {text}"))?
    };
    Ok((status, json))
}

/// Imports every collection the specs want in one call (test setup).
fn import_all(pb: &PocketBase, model: &Model) -> Result<()> {
    let env = model.env("local").context("no local environment")?;
    import(pb, kombiform_emit::pocketbase::collections(env))
}

fn import(pb: &PocketBase, collections: Vec<Value>) -> Result<()> {
    let body = json!({ "collections": collections, "deleteMissing": false });
    let (status, reply) = call(pb, "PUT", "/api/collections/import", Some(&body))?;
    if status != 204 {
        bail!("import answered {status}: {reply}");
    }
    Ok(())
}

fn create_record(pb: &PocketBase, collection: &str, record: &Value) -> Result<String> {
    let path = format!("/api/collections/{collection}/records");
    let (status, body) = call(pb, "POST", &path, Some(record))?;
    if status != 200 {
        bail!("creating a record in {collection} answered {status}: {body}");
    }
    Ok(body["id"].as_str().context("record without id")?.to_owned())
}

/// The collections' addresses (the backup schedule is not one).
fn addresses(resources: &[Resource]) -> BTreeSet<String> {
    resources
        .iter()
        .filter(|r| r.address != target::BACKUPS)
        .map(|r| r.address.clone())
        .collect()
}

fn summary(changes: &[Change]) -> Vec<(String, Action)> {
    changes
        .iter()
        .map(|c| (c.address.clone(), c.action))
        .collect()
}

#[test]
fn creates_in_plan_order_then_a_fresh_read_shows_no_change() -> Result<()> {
    let model = example_model()?;
    let want = desired(&model)?;
    let pb = PocketBase::start()?;
    let provider = connect(&pb, &model)?;

    let first = provider.read()?;
    // PocketBase's own collections (system ones and the default `users`) are not ours.
    assert!(
        addresses(&first.resources).is_empty(),
        "{:?}",
        addresses(&first.resources)
    );
    assert_eq!(
        first.requests, 3,
        "one page, the backup settings, the authentication"
    );

    let (changes, unchanged, destructive) =
        plan(&provider, &want, &first.resources, &BTreeSet::new());
    assert_eq!(unchanged, 0);
    assert!(destructive.is_empty());
    assert_eq!(changes.len(), want.len());
    assert!(changes.iter().all(|c| c.action == Action::Create));
    // Relation targets come first: importing one at a time only works in this order.
    for (i, c) in changes.iter().enumerate() {
        let deps = &c
            .desired
            .as_ref()
            .context("create without desired")?
            .depends_on;
        for dep in deps.iter().filter(|d| d.starts_with("pocketbase.")) {
            let at = changes.iter().position(|x| &x.address == dep);
            assert!(at.is_some_and(|at| at < i), "{} before {dep}", c.address);
        }
    }
    apply_all(&provider, &changes)?;

    let again = provider.read()?;
    assert_eq!(again.requests, 2);
    assert_eq!(addresses(&again.resources), addresses(&want));
    let (changes, unchanged, _) = plan(&provider, &want, &again.resources, &addresses(&want));
    assert!(
        changes.is_empty(),
        "normalisation is not exact: {}",
        serde_json::to_string_pretty(&changes)?
    );
    assert_eq!(unchanged, want.len());
    // Tenant and remote id are read back too.
    let nodes = again
        .resources
        .iter()
        .find(|r| r.address == "pocketbase.collection.t_stark_lab_nodes")
        .context("t_stark_lab_nodes not read")?;
    assert_eq!(nodes.meta["tenant"], "stark-lab");
    assert_eq!(nodes.meta["id"], "pbc_t_stark_lab_nodes");
    assert!(nodes
        .depends_on
        .contains(&"pocketbase.collection.t_stark_lab_stacks".to_string()));
    Ok(())
}

#[test]
fn a_rule_changed_in_pocketbase_is_an_update_of_that_attribute_only() -> Result<()> {
    let model = example_model()?;
    let want = desired(&model)?;
    let pb = PocketBase::start()?;
    import_all(&pb, &model)?;
    let provider = connect(&pb, &model)?;

    let patch = json!({"listRule": "@request.auth.id != ''"});
    let (status, body) = call(&pb, "PATCH", "/api/collections/t_acme_nodes", Some(&patch))?;
    assert_eq!(status, 200, "{body}");

    let live = provider.read()?.resources;
    let (changes, _, destructive) = plan(&provider, &want, &live, &addresses(&want));
    assert_eq!(
        summary(&changes),
        vec![(
            "pocketbase.collection.t_acme_nodes".to_string(),
            Action::Update
        )]
    );
    let names: Vec<&str> = changes[0].attrs.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, vec!["listRule"]);
    assert_eq!(
        changes[0].attrs[0].before,
        Some(json!("@request.auth.id != ''"))
    );
    assert!(destructive.is_empty());

    apply_all(&provider, &changes)?;
    let live = provider.read()?.resources;
    let (changes, _, _) = plan(&provider, &want, &live, &addresses(&want));
    assert!(changes.is_empty(), "{changes:?}");
    Ok(())
}

#[test]
fn a_renamed_field_keeps_its_data() -> Result<()> {
    let mut model = example_model()?;
    let pb = PocketBase::start()?;
    import_all(&pb, &model)?;
    let provider = connect(&pb, &model)?;
    let record = json!({"provider": "zitadel", "subject": "sub-1", "tenant": "acme",
        "orgId": "org-4711", "collection": "t_acme_users", "userId": "abcdefghijklmno"});
    let id = create_record(&pb, "_sso_mappings", &record)?;

    let sso = model
        .collections
        .iter_mut()
        .find(|c| c.name == "_sso_mappings")
        .context("no _sso_mappings template")?;
    let field = sso
        .fields
        .iter_mut()
        .find(|f| f.name == "orgId")
        .context("no orgId field")?;
    field.name = "organizationId".into();
    field.renamed_from = vec!["orgId".into()];
    let want = desired(&model)?;

    let live = provider.read()?.resources;
    let (changes, _, destructive) = plan(&provider, &want, &live, &addresses(&want));
    assert_eq!(
        summary(&changes),
        vec![(
            "pocketbase.collection._sso_mappings".to_string(),
            Action::Update
        )]
    );
    let attrs: Vec<&str> = changes[0].attrs.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(attrs, vec!["fields.text982184766"], "the old field's id");
    assert!(destructive.is_empty(), "a rename loses nothing");
    apply_all(&provider, &changes)?;

    let path = format!("/api/collections/_sso_mappings/records/{id}");
    let (status, got) = call(&pb, "GET", &path, None)?;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["organizationId"], "org-4711");
    assert!(got.get("orgId").is_none(), "{got}");
    let live = provider.read()?.resources;
    assert!(plan(&provider, &want, &live, &addresses(&want))
        .0
        .is_empty());
    Ok(())
}

#[test]
fn a_removed_field_is_destructive_and_applying_it_drops_only_that_field() -> Result<()> {
    let mut model = example_model()?;
    let pb = PocketBase::start()?;
    import_all(&pb, &model)?;
    let provider = connect(&pb, &model)?;
    let record = json!({"provider": "zitadel", "subject": "sub-1", "tenant": "acme",
        "orgId": "org-4711", "collection": "t_acme_users", "userId": "abcdefghijklmno"});
    let id = create_record(&pb, "_sso_mappings", &record)?;

    let sso = model
        .collections
        .iter_mut()
        .find(|c| c.name == "_sso_mappings")
        .context("no _sso_mappings template")?;
    sso.fields.retain(|f| f.name != "orgId");
    let want = desired(&model)?;
    let live = provider.read()?.resources;
    let (changes, _, destructive) = plan(&provider, &want, &live, &addresses(&want));
    assert_eq!(
        destructive,
        vec!["pocketbase.collection._sso_mappings".to_string()]
    );
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].attrs[0].name, "fields.text982184766");
    assert_eq!(changes[0].attrs[0].after, None);
    apply_all(&provider, &changes)?;

    let path = format!("/api/collections/_sso_mappings/records/{id}");
    let (status, got) = call(&pb, "GET", &path, None)?;
    assert_eq!(status, 200, "the record stays: {got}");
    assert!(got.get("orgId").is_none(), "{got}");
    assert_eq!(got["subject"], "sub-1");
    let live = provider.read()?.resources;
    assert!(plan(&provider, &want, &live, &addresses(&want))
        .0
        .is_empty());
    Ok(())
}

#[test]
fn removing_a_tenant_deletes_exactly_its_collections() -> Result<()> {
    let mut model = example_model()?;
    let pb = PocketBase::start()?;
    import_all(&pb, &model)?;
    let provider = connect(&pb, &model)?;
    let user = json!({"email": "alice@acme.test", "password": "Tenant-Pass-123456",
        "passwordConfirm": "Tenant-Pass-123456", "zitadelSub": "alice", "role": "member"});
    let alice = create_record(&pb, "t_acme_users", &user)?;
    let stack = json!({"name": "homelab", "stackkit": "k3s", "owner": alice});
    create_record(&pb, "t_acme_stacks", &stack)?;
    let devtest_user = json!({"email": "d@devtest.test", "password": "Tenant-Pass-123456",
        "passwordConfirm": "Tenant-Pass-123456", "zitadelSub": "d", "role": "member"});
    create_record(&pb, "t_devtest_users", &devtest_user)?;

    let before = provider.read()?.resources;
    let managed = addresses(&before);
    model.tenants.retain(|t| t.slug != "devtest");
    let want = desired(&model)?;
    let (changes, unchanged, destructive) = plan(&provider, &want, &before, &managed);
    let gone: BTreeSet<String> = ["users", "stacks", "nodes", "simulations"]
        .iter()
        .map(|t| format!("pocketbase.collection.t_devtest_{t}"))
        .collect();
    assert!(changes.iter().all(|c| c.action == Action::Delete));
    assert_eq!(addresses_of(&changes), gone);
    assert_eq!(destructive.into_iter().collect::<BTreeSet<_>>(), gone);
    assert_eq!(unchanged, want.len());
    // Dependents first: users (the relation target) goes last.
    assert_eq!(
        changes.last().map(|c| c.address.as_str()),
        Some("pocketbase.collection.t_devtest_users")
    );
    apply_all(&provider, &changes)?;

    let after = provider.read()?.resources;
    let expected: BTreeSet<String> = managed.difference(&gone).cloned().collect();
    assert_eq!(addresses(&after), expected);
    let (status, got) = call(&pb, "GET", "/api/collections/t_acme_stacks/records", None)?;
    assert_eq!(
        (status, got["totalItems"].clone()),
        (200, json!(1)),
        "{got}"
    );
    let path = format!("/api/collections/t_acme_users/records/{alice}");
    assert_eq!(call(&pb, "GET", &path, None)?.0, 200);
    // A resumed apply finds them gone and carries on.
    apply_all(&provider, &changes)?;
    Ok(())
}

#[test]
fn a_type_change_is_a_destructive_replace() -> Result<()> {
    let mut model = example_model()?;
    let pb = PocketBase::start()?;
    import_all(&pb, &model)?;
    let provider = connect(&pb, &model)?;
    let sso = model
        .collections
        .iter_mut()
        .find(|c| c.name == "_sso_mappings")
        .context("no _sso_mappings template")?;
    sso.kind = kombiform_model::CollectionKind::Auth;
    let want = desired(&model)?;
    let live = provider.read()?.resources;
    let (changes, _, destructive) = plan(&provider, &want, &live, &addresses(&want));
    assert_eq!(
        summary(&changes),
        vec![(
            "pocketbase.collection._sso_mappings".to_string(),
            Action::Replace
        )]
    );
    assert_eq!(destructive.len(), 1);
    assert!(changes[0]
        .attrs
        .iter()
        .any(|a| a.name == "type" && a.forces_replace));
    apply_all(&provider, &changes)?;
    let live = provider.read()?.resources;
    assert!(plan(&provider, &want, &live, &addresses(&want))
        .0
        .is_empty());
    let (status, got) = call(&pb, "GET", "/api/collections/_sso_mappings", None)?;
    assert_eq!((status, got["type"].clone()), (200, json!("auth")));
    Ok(())
}

fn addresses_of(changes: &[Change]) -> BTreeSet<String> {
    changes.iter().map(|c| c.address.clone()).collect()
}

/// A number from the environment, else `default`.
fn env_number(name: &str, default: u64) -> Result<u64> {
    match std::env::var(name) {
        Ok(n) => n.parse().with_context(|| format!("{name} is not a number")),
        Err(_) => Ok(default),
    }
}

#[test]
fn reading_many_tenants_takes_pages_not_collections() -> Result<()> {
    let mut model = example_model()?;
    let acme = model
        .tenants
        .iter()
        .find(|t| t.slug == "acme")
        .cloned()
        .context("no acme")?;
    // PocketBase's import cost grows with the collections already there (each save reloads
    // them all): 1,000 tenants take minutes to set up, too long for every run. By default 60
    // tenants read in pages of 100; `KOMBIFORM_PBPROV_TENANTS=1000 KOMBIFORM_PBPROV_PER_PAGE=1000`
    // measures the real thing.
    let n = env_number("KOMBIFORM_PBPROV_TENANTS", 60)?;
    let per_page = env_number("KOMBIFORM_PBPROV_PER_PAGE", 100)? as usize;
    for i in 1..=n {
        let mut t = acme.clone();
        t.slug = kombiform_model::TenantSlug::parse(&format!("bulk{i:04}")).unwrap();
        t.zitadel_org_id = format!("{}", 900_000_000_000_000_000u64 + i);
        model.tenants.push(t);
    }
    model.tenants.sort_by(|a, b| a.slug.cmp(&b.slug));
    let want = desired(&model)?;
    let pb = PocketBase::start()?;
    // In chunks of 100 collections: one import of 4,000 ran for 9 minutes and was cut off.
    let env = model.env("local").context("no local environment")?;
    let all = kombiform_emit::pocketbase::collections(env);
    for chunk in all.chunks(100) {
        import(&pb, chunk.to_vec())?;
    }
    let provider = connect(&pb, &model)?.per_page(per_page);
    let live = provider.read()?;
    // Ours plus PocketBase's five system collections and `users`.
    let total = want.len() + 6;
    let pages =
        total.div_ceil(per_page.clamp(1, kombiform_engine::providers::pocketbase::PER_PAGE)) as u64;
    assert!(
        pages >= 2,
        "{total} collections fit one page: no paging tested"
    );
    assert_eq!(
        live.resources.len(),
        want.len() + 1,
        "and the backup schedule"
    );
    assert_eq!(
        live.requests,
        pages + 2,
        "pages, the backup settings, the authentication"
    );
    let (changes, unchanged, _) = plan(&provider, &want, &live.resources, &addresses(&want));
    assert!(changes.is_empty(), "{:?}", summary(&changes));
    assert_eq!(unchanged, want.len());
    Ok(())
}

#[test]
fn an_unreachable_server_is_a_transient_failure() -> Result<()> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let err = Provider::connect(&format!("http://127.0.0.1:{port}"), "a@b.c", "secret-pw-1")
        .err()
        .context("connected to a closed port")?;
    assert!(transient(&err).is_some(), "{err:#}");
    assert!(!format!("{err:#}").contains("secret-pw-1"));
    Ok(())
}
