//! Integration tests of the Bicep emitter: every generated file parses with the tree-sitter
//! Bicep grammar, every deployment stays within ARM's limits at 1, 1,000 and 10,000 dedicated
//! tenants, secrets stay references, api-versions are the pinned ones, and adding a tenant
//! changes one file.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use kombiform_emit::{bicep, Files};
use kombiform_model::{EnvValue, InstanceMode, Model, SecretRef, TenantSlug};
use kombiform_test_support::synthetic::{fleet, Fleet};
use tree_sitter::{Node, Parser, Tree};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

use kombiform_test_support::example_model as example;

/// `total` generated tenants, exactly `dedicated` of them dedicated.
fn synthetic(total: usize, dedicated: usize) -> Model {
    let f = Fleet {
        tenants: total,
        dedicated,
        ..Fleet::default()
    };
    fleet(example(), f)
}

fn bicep_files(m: &Model) -> Files {
    let mut files = Files::new();
    for env in m.envs() {
        bicep::emit(env, &mut files);
    }
    files
}

fn parse(source: &str) -> Tree {
    let mut parser = Parser::new();
    parser
        .set_language(&tree_sitter_bicep::LANGUAGE.into())
        .expect("the Bicep grammar loads");
    parser
        .parse(source, None)
        .expect("the parser returns a tree")
}

/// Every ERROR and MISSING node of a Bicep source, as `line:column: problem`.
fn syntax_errors(source: &str) -> Vec<String> {
    fn visit(node: Node<'_>, source: &str, out: &mut Vec<String>) {
        if node.is_error() || node.is_missing() {
            let at = node.start_position();
            let text: String = source
                .get(node.byte_range())
                .unwrap_or("")
                .chars()
                .take(60)
                .collect();
            let what = if node.is_missing() {
                format!("missing `{}`", node.kind())
            } else {
                format!("cannot parse `{text}`")
            };
            out.push(format!("{}:{}: {what}", at.row + 1, at.column + 1));
        }
        if node.has_error() {
            let mut cursor = node.walk();
            for child in node.children(&mut cursor) {
                visit(child, source, out);
            }
        }
    }
    let tree = parse(source);
    let mut out = Vec::new();
    visit(tree.root_node(), source, &mut out);
    out
}

fn text<'s>(node: Node<'_>, source: &'s str) -> &'s str {
    source.get(node.byte_range()).unwrap_or("")
}

fn is_existing(decl: Node<'_>) -> bool {
    let mut cursor = decl.walk();
    let found = decl.children(&mut cursor).any(|c| c.kind() == "existing");
    found
}

/// The value of a resource or module declaration (its object, loop or condition).
fn decl_value(decl: Node<'_>) -> Option<Node<'_>> {
    let last = u32::try_from(decl.named_child_count().checked_sub(1)?).ok()?;
    decl.named_child(last)
}

/// Resources a file deploys, as ARM counts them: each `resource` (also `existing` ones, to
/// be safe) and `module` declaration, loops expanded. A loop must run over a `var` array
/// literal or `range(start, count)` in the same file, or the count fails.
fn resource_count(source: &str) -> usize {
    let tree = parse(source);
    let root = tree.root_node();
    let mut arrays: HashMap<&str, usize> = HashMap::new();
    let mut cursor = root.walk();
    for decl in root.named_children(&mut cursor) {
        if decl.kind() != "variable_declaration" {
            continue;
        }
        if let (Some(name), Some(value)) = (decl.named_child(0), decl.named_child(1)) {
            if value.kind() == "array" {
                let mut c = value.walk();
                let items = value
                    .named_children(&mut c)
                    .filter(|n| n.kind() != "comment" && n.kind() != "decorators")
                    .count();
                arrays.insert(text(name, source), items);
            }
        }
    }
    let mut count = 0;
    let mut cursor = root.walk();
    for decl in root.named_children(&mut cursor) {
        if decl.kind() != "resource_declaration" && decl.kind() != "module_declaration" {
            continue;
        }
        let value = decl_value(decl).expect("a declaration has a value");
        if value.kind() != "for_statement" {
            count += 1;
            continue;
        }
        let body = value.child_by_field_name("body").map(|n| n.id());
        let init = value.child_by_field_name("initializer").map(|n| n.id());
        let mut c = value.walk();
        let iterable = value
            .named_children(&mut c)
            .find(|n| {
                Some(n.id()) != body
                    && Some(n.id()) != init
                    && n.kind() != "for_loop_parameters"
                    && n.kind() != "comment"
            })
            .expect("a loop iterates over something");
        let source_text = text(iterable, source);
        let n = match iterable.kind() {
            "identifier" => *arrays
                .get(source_text)
                .unwrap_or_else(|| panic!("cannot count the loop over `{source_text}`")),
            "call_expression" if source_text.starts_with("range(") => source_text
                .trim_start_matches("range(")
                .trim_end_matches(')')
                .split(',')
                .nth(1)
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or_else(|| panic!("cannot count the loop over `{source_text}`")),
            _ => panic!("cannot count the loop over `{source_text}`"),
        };
        count += n;
    }
    count
}

/// The keys of an object node's properties.
fn object_keys<'s>(object: Node<'_>, source: &'s str) -> Vec<&'s str> {
    let mut cursor = object.walk();
    let keys = object
        .named_children(&mut cursor)
        .filter(|p| p.kind() == "object_property")
        .filter_map(|p| p.named_child(0))
        .map(|k| text(k, source).trim_matches('\''))
        .collect();
    keys
}

fn bicep_paths(files: &Files) -> impl Iterator<Item = (&String, &String)> {
    files.iter().filter(|(p, _)| p.ends_with(".bicep"))
}

// ---------------------------------------------------------------------------------------
// The grammar check
// ---------------------------------------------------------------------------------------

#[test]
fn the_syntax_check_catches_broken_files() {
    assert_eq!(
        syntax_errors("param p string = 'ok'\n"),
        Vec::<String>::new()
    );
    let unclosed = "resource x 'Microsoft.App/containerApps@2025-07-01' = {\n  name: 'a'\n";
    let errors = syntax_errors(unclosed);
    assert!(!errors.is_empty(), "an unclosed object must be reported");
    let bad_quote = "var v = {\n  name: 'O'Reilly'\n}\n";
    assert!(
        !syntax_errors(bad_quote).is_empty(),
        "an unescaped quote must be reported"
    );
    let stray = "module m 'm.bicep' = {\n  params: {\n    a: [\n  }\n}\n";
    let errors = syntax_errors(stray);
    assert!(
        errors.iter().all(|e| e.contains(':')),
        "errors carry a position: {errors:?}"
    );
    assert!(!errors.is_empty());
}

#[test]
fn every_generated_file_parses() {
    for model in [example(), synthetic(300, 300)] {
        let files = bicep_files(&model);
        assert!(files.contains_key("prod/bicep/main.bicep"));
        assert!(
            files.keys().any(|p| p.contains("/tenants/bucket-")),
            "expected main and buckets"
        );
        for (path, source) in bicep_paths(&files) {
            let errors = syntax_errors(source);
            assert!(
                errors.is_empty(),
                "{path} does not parse:\n  {}",
                errors.join("\n  ")
            );
        }
    }
}

#[test]
fn only_azure_environments_get_bicep() {
    let files = bicep_files(&example());
    assert!(files.contains_key("prod/bicep/main.bicep"));
    assert!(
        files.keys().all(|p| p.starts_with("prod/bicep/")),
        "{:?}",
        files.keys().collect::<Vec<_>>()
    );
}

#[test]
fn output_is_deterministic() {
    let m = synthetic(500, 50);
    assert_eq!(bicep_files(&m), bicep_files(&m));
}

// ---------------------------------------------------------------------------------------
// ARM limits
// ---------------------------------------------------------------------------------------

/// Bicep bytes allowed per deployment. ARM's limit is 4 MB of compiled template JSON (and
/// 1 MB compressed per deployment job); the JSON of these files is a few times their Bicep.
const BICEP_BUDGET: usize = 1024 * 1024;
const ARM_RESOURCES: usize = 800;

fn check_limits(files: &Files, dedicated: usize) {
    // main.bicep is one deployment.
    let main = &files["prod/bicep/main.bicep"];
    assert!(resource_count(main) <= ARM_RESOURCES);
    assert!(
        main.len() <= BICEP_BUDGET,
        "main.bicep: {} bytes",
        main.len()
    );
    // Each tenant bucket is a deployment of its own.
    let mut apps = 0;
    for (path, source) in files.iter().filter(|(p, _)| p.contains("/tenants/")) {
        let n = resource_count(source);
        assert!(n <= ARM_RESOURCES, "{path}: {n} resources");
        assert!(n <= bicep::MAX_PER_BUCKET + 3, "{path}: {n} resources");
        assert!(
            source.len() <= BICEP_BUDGET,
            "{path}: {} bytes",
            source.len()
        );
        apps += n - 3; // minus the environment, identity and vault references
    }
    assert_eq!(
        apps, dedicated,
        "every dedicated tenant has exactly one app"
    );
}

#[test]
fn deployments_stay_within_arm_limits_at_any_tenant_count() {
    for dedicated in [1, 1_000, 10_000] {
        let files = bicep_files(&synthetic(dedicated, dedicated));
        check_limits(&files, dedicated);
        let buckets = files.keys().filter(|p| p.contains("/tenants/")).count();
        assert!(
            buckets >= dedicated / bicep::MAX_PER_BUCKET,
            "{buckets} buckets"
        );
    }
}

#[test]
fn the_resource_counter_expands_loops() {
    let source = "var xs = [\n  { a: 1 }\n  { a: 2 }\n  { a: 3 }\n]\n\
                  resource e 'A/b@1' existing = {\n  name: 'e'\n}\n\
                  resource r 'A/b@1' = [for x in xs: {\n  name: 'r'\n}]\n\
                  module m 'm.bicep' = [for i in range(0, 7): {\n  name: 'm'\n}]\n";
    assert_eq!(resource_count(source), 1 + 3 + 7);
}

#[test]
fn adding_a_tenant_changes_one_file() {
    let before = bicep_files(&synthetic(1_000, 1_000));
    let mut model = synthetic(1_000, 1_000);
    let mut extra = model.tenants[0].clone();
    extra.slug = TenantSlug::parse("zz-new-tenant").unwrap();
    extra.zitadel_org_id = "399999999999999999".to_string();
    extra.instance = InstanceMode::Dedicated;
    model.tenants.push(extra);
    let after = bicep_files(&model);
    assert_eq!(before.len(), after.len());
    let changed: Vec<&String> = after
        .iter()
        .filter(|(p, s)| before.get(*p) != Some(*s))
        .map(|(p, _)| p)
        .collect();
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert!(changed[0].contains("/tenants/bucket-"), "{changed:?}");
    assert!(after[changed[0]].contains("'zz-new-tenant'"));
}

// ---------------------------------------------------------------------------------------
// Content
// ---------------------------------------------------------------------------------------

#[test]
fn secrets_are_references_and_secure_params_have_no_default() {
    let model = synthetic(10, 2);
    let files = bicep_files(&model);
    for (path, source) in bicep_paths(&files) {
        let tree = parse(source);
        let root = tree.root_node();
        let mut cursor = root.walk();
        let top: Vec<Node<'_>> = root.named_children(&mut cursor).collect();
        for pair in top.windows(2) {
            if pair[0].kind() == "decorators"
                && text(pair[0], source).contains("@secure()")
                && pair[1].kind() == "parameter_declaration"
            {
                assert!(
                    !text(pair[1], source).contains('='),
                    "{path}: secure parameter with a default: {}",
                    text(pair[1], source)
                );
            }
        }
    }
    let main = &files["prod/bicep/main.bicep"];
    assert!(main.contains("administratorLoginPassword: kvSecret_postgres_admin_password\n"));
    assert!(main.contains("--parameters kvSecret_postgres_admin_password=\"$(az keyvault secret show --vault-name kfy-prod-kv --name postgres-admin-password --query value -o tsv)\""));
    let platform = model.env("prod").expect("prod exists").platform;
    for s in &platform.services {
        for (name, value) in &s.env {
            if let EnvValue::Secret { .. } = value {
                assert!(
                    main.contains(&format!("{{ name: '{name}', secretRef: ")),
                    "{name} is not a secret reference"
                );
                assert!(!main.contains(&format!("{{ name: '{name}', value: ")));
            }
        }
    }
    let bucket = files
        .iter()
        .find(|(p, _)| p.contains("/tenants/"))
        .map(|(_, s)| s)
        .expect("a bucket");
    assert!(bucket.contains(
        "keyVaultUrl: '${vault.properties.vaultUri}secrets/pocketbase-superuser-password'"
    ));
    assert!(bucket.contains("{ name: 'TENANT_SLUG', value: t.slug }"));
    assert!(bucket.contains("{ name: 'POCKETBASE_SUPERUSER_PASSWORD', secretRef: "));
}

#[test]
fn api_versions_are_the_pinned_ones() {
    // ref/arm.md §2: the newest stable version per resource provider.
    let pinned: BTreeMap<&str, &str> = [
        ("Microsoft.OperationalInsights", "2026-03-01"),
        ("Microsoft.App", "2025-07-01"),
        ("Microsoft.DBforPostgreSQL", "2025-08-01"),
        ("Microsoft.Cache", "2024-11-01"),
        ("Microsoft.KeyVault", "2026-04-01"),
        ("Microsoft.Storage", "2026-09-01"),
        ("Microsoft.Cdn", "2025-06-01"),
    ]
    .into_iter()
    .collect();
    let allowed: Vec<&str> = bicep::API.entries().iter().map(|(_, v)| *v).collect();
    let files = bicep_files(&synthetic(3, 3));
    let mut seen = 0;
    for (path, source) in bicep_paths(&files) {
        let tree = parse(source);
        let root = tree.root_node();
        let mut cursor = root.walk();
        for decl in root.named_children(&mut cursor) {
            if decl.kind() != "resource_declaration" {
                continue;
            }
            let ty = decl
                .named_child(1)
                .map(|n| text(n, source).trim_matches('\''))
                .expect("a resource has a type");
            let (ty, version) = ty.split_once('@').expect("a type has an api-version");
            let provider = ty.split('/').next().unwrap_or_default();
            assert!(allowed.contains(&version), "{path}: {ty}@{version}");
            if let Some(want) = pinned.get(provider) {
                assert_eq!(version, *want, "{path}: {ty}");
                seen += 1;
            }
        }
    }
    assert!(seen >= 20, "only {seen} resources checked");
}

#[test]
fn every_tracked_resource_is_tagged() {
    let files = bicep_files(&synthetic(3, 3));
    let mut tracked = 0;
    for (path, source) in bicep_paths(&files) {
        let tree = parse(source);
        let root = tree.root_node();
        let mut cursor = root.walk();
        for decl in root.named_children(&mut cursor) {
            if decl.kind() != "resource_declaration" || is_existing(decl) {
                continue;
            }
            let mut value = decl_value(decl).expect("a resource has a body");
            if value.kind() == "for_statement" {
                value = value.child_by_field_name("body").expect("a loop body");
            }
            let keys = object_keys(value, source);
            if keys.contains(&"location") {
                tracked += 1;
                assert!(
                    keys.contains(&"tags"),
                    "{path}: untagged {}",
                    text(decl, source).lines().next().unwrap_or("")
                );
            }
        }
    }
    assert!(tracked >= 14, "only {tracked} tracked resources");
}

#[test]
fn the_platform_is_complete() {
    let files = bicep_files(&example());
    let main = &files["prod/bicep/main.bicep"];
    for ty in [
        "Microsoft.OperationalInsights/workspaces",
        "Microsoft.ManagedIdentity/userAssignedIdentities",
        "Microsoft.KeyVault/vaults",
        "Microsoft.Authorization/roleAssignments",
        "Microsoft.Storage/storageAccounts",
        "Microsoft.Storage/storageAccounts/managementPolicies",
        "Microsoft.App/managedEnvironments",
        "Microsoft.DBforPostgreSQL/flexibleServers",
        "Microsoft.Cache/redis",
        "Microsoft.Cdn/profiles/afdEndpoints/routes",
        "Microsoft.Insights/metricAlerts",
    ] {
        assert!(main.contains(&format!(" '{ty}@")), "{ty}");
    }
    // Kong and every enabled service get an app.
    for name in [
        "kong",
        "kombistack",
        "kombisim",
        "admin",
        "stackkits",
        "sso",
        "health",
    ] {
        assert!(main.contains(&format!("name: 'kfy-prod-{name}'")), "{name}");
    }
    for db in ["kombify_admin", "kombify_platform", "kong"] {
        assert!(main.contains(&format!("name: '{db}'")), "{db}");
    }
    assert!(main.contains("backupRetentionDays: 35"));
    assert!(main.contains("geoRedundantBackup: 'Enabled'"));
    assert!(main.contains("resource kongRoute") && main.contains("resource healthRoute"));
    assert!(main.contains("probePath: '/health'"));
    assert!(main.contains("isVersioningEnabled: true"));
    assert!(main.contains("daysAfterCreationGreaterThan: 90"));
    assert!(main.contains("emailAddress: 'oncall@kombify.io'"));
    assert!(main.contains("threshold: 50"));
    assert!(main.contains("principalId: identity.properties.principalId"));
    assert!(main.contains("sharedKey: logs.listKeys().primarySharedKey"));
    // The two dedicated example tenants.
    let buckets: String = files
        .iter()
        .filter(|(p, _)| p.contains("/tenants/"))
        .map(|(_, s)| s.as_str())
        .collect();
    assert!(buckets.contains("name: 'kfy-prod-t-globex', slug: 'globex'"));
    assert!(buckets.contains("name: 'kfy-prod-t-umbrella', slug: 'umbrella'"));
    assert!(buckets.contains("image: 'ghcr.io/kombify/kombistack:1.8.0'"));
}

#[test]
fn user_text_is_escaped() {
    let mut model = example();
    let p = &mut model.platforms[1];
    assert_eq!(p.name, "prod");
    if let Some(az) = p.azure.as_mut() {
        az.tags
            .insert("note".to_string(), "it's ${danger}\nnext".to_string());
    }
    let files = bicep_files(&model);
    let main = &files["prod/bicep/main.bicep"];
    assert!(main.contains(r"'note': 'it\'s \${danger}\nnext'"));
    assert!(syntax_errors(main).is_empty());
}

#[test]
fn allowed_cidrs_become_firewall_rules_written_one_at_a_time() {
    let mut model = example();
    let p = &mut model.platforms[1];
    assert_eq!(p.name, "prod");
    p.postgres.allowed_cidrs = vec!["198.51.100.0/24".into(), "203.0.113.7/32".into()];
    let files = bicep_files(&model);
    let main = &files["prod/bicep/main.bicep"];
    assert!(syntax_errors(main).is_empty(), "{main}");
    let rule_type = "'Microsoft.DBforPostgreSQL/flexibleServers/firewallRules@2025-08-01'";
    assert_eq!(
        main.matches(rule_type).count(),
        3,
        "Azure services and 2 client rules"
    );
    for (ident, name, start, end, after) in [
        (
            "allowClient0",
            "kombiform-allow-198-51-100-0-24",
            "198.51.100.0",
            "198.51.100.255",
            "allowAzure",
        ),
        (
            "allowClient1",
            "kombiform-allow-203-0-113-7-32",
            "203.0.113.7",
            "203.0.113.7",
            "allowClient0",
        ),
    ] {
        let rule = format!(
            "resource {ident} {rule_type} = {{\n  parent: postgres\n  name: '{name}'\n  \
             dependsOn: [\n    {after}\n  ]\n  properties: {{\n    startIpAddress: '{start}'\n    \
             endIpAddress: '{end}'\n  }}\n}}\n"
        );
        assert!(main.contains(&rule), "{rule}\nnot in\n{main}");
    }
    // The first database waits for the last rule: one write at a time.
    let first_db = main.find("resource databaseKombifyAdmin").unwrap();
    assert!(main[first_db..].contains("dependsOn: [\n    allowClient1\n  ]"));
    // Without allowedCidrs, only Azure's own services are let in.
    let mut plain = example();
    plain.platforms[1].postgres.allowed_cidrs.clear();
    let plain = bicep_files(&plain);
    assert!(!plain["prod/bicep/main.bicep"].contains("allowClient"));
    assert_eq!(plain["prod/bicep/main.bicep"].matches(rule_type).count(), 1);
}

#[test]
fn environment_variable_secrets_become_secure_parameters() {
    let mut model = example();
    let p = &mut model.platforms[1];
    p.postgres.admin_password = SecretRef::Env("PG_ADMIN_PASSWORD".to_string());
    if let Some(s) = p.services.iter_mut().find(|s| s.name == "admin") {
        s.env.insert(
            "API_TOKEN".to_string(),
            EnvValue::Secret {
                secret: SecretRef::Env("ADMIN_API_TOKEN".to_string()),
            },
        );
    }
    let files = bicep_files(&model);
    let main = &files["prod/bicep/main.bicep"];
    assert!(syntax_errors(main).is_empty());
    assert!(main.contains("@secure()\n@description('The PostgreSQL administrator password, from the environment variable PG_ADMIN_PASSWORD of whoever deploys')\nparam secretEnv_PG_ADMIN_PASSWORD string\n"));
    assert!(main.contains("administratorLoginPassword: secretEnv_PG_ADMIN_PASSWORD\n"));
    assert!(main.contains("param secretEnv_ADMIN_API_TOKEN string\n"));
    assert!(main.contains("{ name: 'API_TOKEN', secretRef: 'env-admin-api-token' }"));
    assert!(main.contains("{ name: 'env-admin-api-token', value: secretEnv_ADMIN_API_TOKEN }"));
    assert!(main.contains("--parameters secretEnv_ADMIN_API_TOKEN=\"$ADMIN_API_TOKEN\""));
}

// ---------------------------------------------------------------------------------------
// Size and speed at 10,000 tenants
// ---------------------------------------------------------------------------------------

#[test]
fn ten_thousand_tenants_a_tenth_dedicated() {
    for dedicated in [1_000, 10_000] {
        let model = synthetic(10_000, dedicated);
        let env = model.env("prod").expect("prod exists");
        let mut files = Files::new();
        bicep::emit(env, &mut files);
        check_limits(&files, dedicated);
    }
}

#[test]
fn dedicated_tenants_without_kombistack_are_reported() {
    let mut model = synthetic(5, 5);
    for s in &mut model.platforms[1].services {
        if s.name == "kombistack" {
            s.enabled = false;
        }
    }
    let files = bicep_files(&model);
    assert!(!files.keys().any(|p| p.contains("/tenants/")));
    assert!(files["prod/bicep/main.bicep"].contains("// 5 dedicated tenant(s) get no instance"));
}

// ---------------------------------------------------------------------------------------
// The Bicep and the ARM provider send the same thing
// ---------------------------------------------------------------------------------------

/// Leaf paths of a Bicep value: objects by key, array items as `[]`.
fn bicep_value_paths(node: Node<'_>, source: &str, at: &str, out: &mut BTreeSet<String>) {
    match node.kind() {
        "object" => {
            let mut cursor = node.walk();
            let props: Vec<Node<'_>> = node
                .named_children(&mut cursor)
                .filter(|p| p.kind() == "object_property")
                .collect();
            if props.is_empty() {
                out.insert(at.to_string());
            }
            for p in props {
                let (Some(k), Some(v)) = (p.named_child(0), p.named_child(1)) else {
                    continue;
                };
                let raw = text(k, source).trim_matches('\'');
                // `'${identity.id}'`: a key that is another resource's id.
                let key = if raw.starts_with("${") { "<id>" } else { raw };
                bicep_value_paths(v, source, &join(at, key), out);
            }
        }
        "array" => {
            let mut cursor = node.walk();
            let items: Vec<Node<'_>> = node
                .named_children(&mut cursor)
                .filter(|n| n.kind() != "comment")
                .collect();
            if items.is_empty() {
                out.insert(at.to_string());
            }
            for item in items {
                bicep_value_paths(item, source, &format!("{at}[]"), out);
            }
        }
        _ => {
            out.insert(at.to_string());
        }
    }
}

fn join(at: &str, key: &str) -> String {
    if at.is_empty() {
        key.to_string()
    } else {
        format!("{at}.{key}")
    }
}

/// Leaf paths of a JSON body, like [`bicep_value_paths`]; keys that are resource ids as `<id>`.
fn json_paths(v: &serde_json::Value, at: &str, out: &mut BTreeSet<String>) {
    match v {
        serde_json::Value::Object(m) if !m.is_empty() => {
            for (k, v) in m {
                let key = if k.starts_with("/subscriptions/") {
                    "<id>"
                } else {
                    k
                };
                json_paths(v, &join(at, key), out);
            }
        }
        serde_json::Value::Array(items) if !items.is_empty() => {
            for item in items {
                json_paths(item, &format!("{at}[]"), out);
            }
        }
        _ => {
            out.insert(at.to_string());
        }
    }
}

/// `type@api-version name` → the property paths each resource declaration of `source` sets
/// (loops expanded over the `tenants` rows).
fn declared(source: &str) -> BTreeMap<String, BTreeSet<String>> {
    let tree = parse(source);
    let root = tree.root_node();
    let mut rows: Vec<String> = Vec::new();
    let mut tags = BTreeSet::new();
    let mut cursor = root.walk();
    for decl in root.named_children(&mut cursor) {
        if decl.kind() != "variable_declaration" {
            continue;
        }
        let (Some(name), Some(value)) = (decl.named_child(0), decl.named_child(1)) else {
            continue;
        };
        if text(name, source) == "tags" {
            bicep_value_paths(value, source, "tags", &mut tags);
            continue;
        }
        if text(name, source) != "tenants" {
            continue;
        }
        let mut c = value.walk();
        for item in value
            .named_children(&mut c)
            .filter(|n| n.kind() == "object")
        {
            let mut pc = item.walk();
            for p in item.named_children(&mut pc) {
                if p.named_child(0).map(|k| text(k, source)) == Some("name") {
                    let v = p.named_child(1).map(|v| text(v, source)).unwrap_or("");
                    rows.push(v.trim_matches('\'').to_string());
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    let mut cursor = root.walk();
    for decl in root.named_children(&mut cursor) {
        if decl.kind() != "resource_declaration" || is_existing(decl) {
            continue;
        }
        let ty = decl
            .named_child(1)
            .map(|n| text(n, source).trim_matches('\''))
            .expect("a type");
        let mut body = decl_value(decl).expect("a body");
        let looped = body.kind() == "for_statement";
        if looped {
            body = body.child_by_field_name("body").expect("a loop body");
        }
        let mut name = String::new();
        let mut paths = BTreeSet::new();
        let mut c = body.walk();
        for p in body
            .named_children(&mut c)
            .filter(|p| p.kind() == "object_property")
        {
            let (Some(k), Some(v)) = (p.named_child(0), p.named_child(1)) else {
                continue;
            };
            match text(k, source) {
                "name" => name = text(v, source).trim_matches('\'').to_string(),
                "parent" | "scope" | "dependsOn" => {}
                // The `tags` variable.
                "tags" if text(v, source) == "tags" => paths.extend(tags.iter().cloned()),
                key => bicep_value_paths(v, source, key, &mut paths),
            }
        }
        if looped {
            for row in &rows {
                out.insert(format!("{ty} {row}"), paths.clone());
            }
        } else {
            out.insert(format!("{ty} {name}"), paths);
        }
    }
    out
}

#[test]
fn the_bicep_declares_exactly_what_the_provider_sends() {
    use kombiform_emit::azure;
    let mut model = synthetic(12, 4);
    // An environment-variable secret too, so both kinds of secret values are covered.
    if let Some(s) = model.platforms[1]
        .services
        .iter_mut()
        .find(|s| s.name == "admin")
    {
        s.env.insert(
            "API_TOKEN".to_string(),
            EnvValue::Secret {
                secret: SecretRef::Env("ADMIN_API_TOKEN".to_string()),
            },
        );
    }
    let env = model.env("prod").expect("prod exists");
    let files = bicep_files(&model);
    let mut in_bicep = BTreeMap::new();
    for (_, source) in bicep_paths(&files) {
        in_bicep.extend(declared(source));
    }
    let inv = azure::inventory(env).expect("prod is on Azure");
    let mut sent = BTreeMap::new();
    for r in inv.all().iter().filter(|r| r.in_bicep()) {
        // The provider's request body, every deployment-time value answered.
        let body = azure::request_body(r, &mut |_| Ok::<_, ()>(Some(serde_json::json!("x"))))
            .expect("the body resolves");
        let mut paths = BTreeSet::new();
        json_paths(&body, "", &mut paths);
        sent.insert(format!("{}@{} {}", r.type_, r.api_version, r.name), paths);
    }
    assert!(sent.len() >= 40, "{} resources", sent.len());
    let only_bicep: Vec<&String> = in_bicep.keys().filter(|k| !sent.contains_key(*k)).collect();
    let only_sent: Vec<&String> = sent.keys().filter(|k| !in_bicep.contains_key(*k)).collect();
    assert!(
        only_bicep.is_empty() && only_sent.is_empty(),
        "only in the Bicep: {only_bicep:?}\nonly sent: {only_sent:?}"
    );
    for (k, paths) in &sent {
        assert_eq!(&in_bicep[k], paths, "{k}");
    }
}
