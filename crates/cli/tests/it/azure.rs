//! `plan` and `apply --env prod --target azure` end to end: the `kombiform` binary against
//! `kombiform-arm-standin` (in this process, time compressed), configured the way a CI job
//! would be (`KOMBIFORM_ARM_ENDPOINT`, `AZURE_AUTHORITY_HOST`, `AZURE_*` credentials,
//! `SSL_CERT_FILE` trusting the stand-in's CA). Nothing reaches PostgreSQL or PocketBase:
//! `--target azure` connects only the Azure provider.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use anyhow::{Context, Result};
use kombiform_arm_standin::{Config, Faults, Record, StandIn};
use kombiform_emit::azure::{self, ArmResource, Kind};
use serde_json::Value;

/// A stand-in, its CA on disk and a state directory.
struct Cloud {
    runtime_handle: tokio::runtime::Handle,
    standin: StandIn,
    specs: PathBuf,
    dir: tempfile::TempDir,
    // Declared last: the stand-in's server runs on it until the end.
    _runtime: tokio::runtime::Runtime,
}

/// Values of the secrets a person provides, as `KV_*` variables.
const PROVIDED: &str = "provided-value-8d1f";

impl Cloud {
    fn start(faults: &str) -> Result<Cloud> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let standin = runtime.block_on(StandIn::start(Config {
            time_scale: 0.001,
            faults: Faults::parse(faults)?,
            ..Config::default()
        }))?;
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("standin-ca.pem"), standin.ca_pem())?;
        Ok(Cloud {
            runtime_handle: runtime.handle().clone(),
            standin,
            specs: kombiform_test_support::example_specs_dir(),
            dir,
            _runtime: runtime,
        })
    }

    fn cmd(&self, args: &[&str], provided: bool) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_kombiform"));
        c.args(args)
            .arg("--specs")
            .arg(&self.specs)
            .arg("--state-dir")
            .arg(self.dir.path().join("state"))
            .current_dir(self.dir.path())
            .env("SSL_CERT_FILE", self.dir.path().join("standin-ca.pem"))
            .env("KOMBIFORM_ARM_ENDPOINT", self.standin.url())
            .env("AZURE_AUTHORITY_HOST", self.standin.url())
            .env("AZURE_TENANT_ID", "kombiform-tests")
            .env("AZURE_CLIENT_ID", "kombiform-ci")
            .env("AZURE_CLIENT_SECRET", "not-a-real-secret")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        for (k, _) in std::env::vars() {
            if k.starts_with("KV_") {
                c.env_remove(k);
            }
        }
        if provided {
            for r in inventory() {
                if r.kind == Kind::ProvidedSecret {
                    c.env(variable(&r.name), PROVIDED);
                }
            }
        }
        c
    }

    fn run(&self, args: &[&str], provided: bool) -> Result<Output> {
        self.cmd(args, provided)
            .output()
            .context("running kombiform")
    }

    fn state_text(&self) -> String {
        let mut all = String::new();
        let dir: PathBuf = self.dir.path().join("state");
        for e in walk(&dir) {
            all.push_str(&std::fs::read_to_string(e).unwrap_or_default());
        }
        all
    }
}

fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn variable(name: &str) -> String {
    kombiform_model::secret::variable(&kombiform_model::SecretRef::KeyVault(name.to_string()))
}

fn inventory() -> Vec<ArmResource> {
    let m = kombiform_test_support::example_model();
    azure::inventory(m.env("prod").unwrap()).unwrap().all()
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The first successful PUT of each path (lower case), by position in the record.
fn first_puts(records: &[Record]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for (i, r) in records.iter().enumerate() {
        if r.method == "PUT" && r.status.is_some_and(|s| s < 300) {
            out.entry(r.path.to_ascii_lowercase()).or_insert(i);
        }
    }
    out
}

const APPLY: &[&str] = &[
    "apply",
    "--env",
    "prod",
    "--target",
    "azure",
    "--auto-approve",
    "--parallelism",
    "16",
    "--events",
    "json",
];

/// Every resource of the inventory was written, each after what it depends on was.
fn assert_created_in_order(records: &[Record]) {
    let puts = first_puts(records);
    let all = inventory();
    let ids: BTreeMap<&str, String> = all
        .iter()
        .map(|r| (r.address.as_str(), r.id.to_ascii_lowercase()))
        .collect();
    for r in &all {
        let me = puts
            .get(&r.id.to_ascii_lowercase())
            .unwrap_or_else(|| panic!("{} was never written", r.address));
        for d in &r.depends_on {
            let dep = &ids[d.as_str()];
            let at = puts[dep];
            assert!(at < *me, "{} was written before {d}", r.address);
        }
    }
}

#[test]
fn apply_from_empty_creates_the_inventory_in_order_and_in_parallel_then_plans_empty() {
    let cloud = Cloud::start("").unwrap();
    let out = cloud.run(APPLY, true).unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let records = cloud.standin.records();
    assert_created_in_order(&records);

    // In parallel: some change started while another was still running.
    let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let mut running = 0usize;
    let mut most = 0usize;
    for e in &events {
        match e["event"].as_str() {
            Some("started") => running += 1,
            Some("done") => running = running.saturating_sub(1),
            _ => {}
        }
        most = most.max(running);
    }
    assert!(most > 1, "at most {most} change(s) at once");

    // No secret value in state, plans or output; the generated ones never read back.
    let generated: Vec<String> = records
        .iter()
        .filter(|r| r.method == "PUT" && r.path.contains("/secrets/"))
        .filter_map(|r| r.body.pointer("/properties/value").and_then(Value::as_str))
        .map(str::to_string)
        .collect();
    assert_eq!(
        generated.len(),
        inventory()
            .iter()
            .filter(|r| r.type_ == "Microsoft.KeyVault/vaults/secrets")
            .count()
    );
    let plan = cloud
        .run(
            &["plan", "--env", "prod", "--target", "azure", "--json"],
            true,
        )
        .unwrap();
    let everything = format!("{}{}{}", text(&out), text(&plan), cloud.state_text());
    for secret in generated.iter().chain([&PROVIDED.to_string()]) {
        assert!(!everything.contains(secret.as_str()), "a secret leaked");
    }
    assert!(!cloud.state_text().is_empty());

    // The next plan is empty.
    assert_eq!(plan.status.code(), Some(0), "{}", text(&plan));
    let stats = cloud.standin.stats();
    assert_eq!(stats.over_limit, 0);
}

#[test]
fn throttling_and_server_errors_do_not_stop_the_apply_nor_break_the_budget() {
    let cloud = Cloud::start("429=30%,5xx=5%,seed=3").unwrap();
    let out = cloud.run(APPLY, true).unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stats = cloud.standin.stats();
    assert!(
        stats.injected_throttles > 0 && stats.injected_errors > 0,
        "{stats:?}"
    );
    assert_eq!(stats.over_limit, 0, "{stats:?}");
    assert_created_in_order(&cloud.standin.records());
    let plan = cloud
        .run(&["plan", "--env", "prod", "--target", "azure"], true)
        .unwrap();
    assert_eq!(plan.status.code(), Some(0), "{}", text(&plan));
}

#[test]
fn missing_secrets_stop_the_first_apply_with_what_to_set() {
    let cloud = Cloud::start("").unwrap();
    let out = cloud.run(APPLY, false).unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let provided: Vec<ArmResource> = inventory()
        .into_iter()
        .filter(|r| r.kind == Kind::ProvidedSecret)
        .collect();
    assert!(provided.len() >= 5);
    for r in &provided {
        assert!(
            stderr.contains(&format!(
                "az keyvault secret set --vault-name kfy-prod-kv --name {} ",
                r.name
            )),
            "{}: {stderr}",
            r.name
        );
        assert!(stderr.contains(&variable(&r.name)), "{stderr}");
    }
    // The vault and the generated secrets exist; what needs a missing secret does not.
    let puts = first_puts(&cloud.standin.records());
    for r in inventory() {
        let written = puts.contains_key(&r.id.to_ascii_lowercase());
        match r.kind {
            Kind::GeneratedSecret => assert!(written, "{}", r.address),
            Kind::ProvidedSecret => assert!(!written, "{}", r.address),
            _ if r.address == "azure.keyvault.kfy-prod-kv" => assert!(written),
            _ if r.address == "azure.containerapp.kfy-prod-kong" => assert!(!written),
            _ => {}
        }
    }
    // Once they are set, the next apply finishes.
    let out = cloud.run(APPLY, true).unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let plan = cloud
        .run(&["plan", "--env", "prod", "--target", "azure"], true)
        .unwrap();
    assert_eq!(plan.status.code(), Some(0), "{}", text(&plan));
}

#[test]
fn a_target_prefix_plans_only_its_part_of_the_graph() {
    let cloud = Cloud::start("").unwrap();
    let out = cloud
        .run(
            &[
                "plan",
                "--env",
                "prod",
                "--target",
                "azure.postgres-database.kong",
                "--json",
            ],
            true,
        )
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut addresses: Vec<&str> = plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["address"].as_str())
        .collect();
    addresses.sort_unstable();
    assert!(addresses.contains(&"azure.postgres-database.kong"));
    // Its server, the server's password secret and its vault, the group; not the apps.
    assert!(addresses.contains(&"azure.postgres.kfy-prod-pg"));
    assert!(addresses.contains(&"azure.resourcegroup.rg-kombify-prod"));
    assert!(
        !addresses
            .iter()
            .any(|a| a.starts_with("azure.containerapp.")),
        "{addresses:?}"
    );
    let out = cloud
        .run(&["plan", "--env", "prod", "--target", "nothing.here"], true)
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("matches no resource"));
}

#[test]
fn deleting_a_dedicated_tenants_instance_needs_consent() {
    let mut cloud = Cloud::start("").unwrap();
    let out = cloud.run(APPLY, true).unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // globex moves to a shared instance: its Container App is no longer wanted.
    let specs = cloud.dir.path().join("specs");
    std::fs::create_dir_all(specs.join("platform")).unwrap();
    for f in [
        "collections.yaml",
        "flags.yaml",
        "plans.yaml",
        "tenants.yaml",
        "platform/local.yaml",
        "platform/prod.yaml",
    ] {
        let from = kombiform_test_support::example_specs_dir().join(f);
        let mut body = std::fs::read_to_string(from).unwrap();
        if f == "tenants.yaml" {
            let before = "  zitadelOrgId: \"284715550000000002\"\n  instance: dedicated\n";
            assert!(body.contains(before));
            body = body.replace(before, "  zitadelOrgId: \"284715550000000002\"\n");
        }
        std::fs::write(specs.join(f), body).unwrap();
    }
    cloud.specs = specs;
    let plan = &["plan", "--env", "prod", "--target", "azure"];
    let out = cloud.run(plan, true).unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("azure.containerapp.kfy-prod-t-globex"));
    let out = cloud.run(APPLY, true).unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("azure.containerapp.kfy-prod-t-globex"),
        "{}",
        text(&out)
    );
    let mut consent = plan.to_vec();
    consent.extend(["--allow-destroy", "azure.containerapp.kfy-prod-t-globex"]);
    let out = cloud.run(&consent, true).unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

#[test]
fn a_soft_deleted_vault_is_recovered_not_failed() {
    let cloud = Cloud::start("").unwrap();
    let out = cloud.run(APPLY, true).unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // Someone deletes the vault: Key Vault keeps it soft-deleted, holding its name.
    let vars: std::collections::HashMap<&str, String> = [
        ("KOMBIFORM_ARM_ENDPOINT", cloud.standin.url()),
        ("AZURE_AUTHORITY_HOST", cloud.standin.url()),
        ("AZURE_TENANT_ID", "kombiform-tests".to_string()),
        ("AZURE_CLIENT_ID", "kombiform-ci".to_string()),
        ("AZURE_CLIENT_SECRET", "x".to_string()),
    ]
    .into_iter()
    .collect();
    let arm = kombiform_azure::Arm::new(
        kombiform_azure::ArmConfig::from_lookup(&|n| vars.get(n).cloned()).unwrap(),
        kombiform_azure::ArmOptions {
            extra_root_certificates: vec![cloud.standin.ca_pem().as_bytes().to_vec()],
            ..kombiform_azure::ArmOptions::default()
        },
    )
    .unwrap();
    let vault = inventory()
        .into_iter()
        .find(|r| r.type_ == "Microsoft.KeyVault/vaults")
        .unwrap();
    cloud
        .runtime_handle
        .block_on(arm.delete_and_wait(&vault.id, &vault.api_version))
        .unwrap();
    let out = cloud.run(APPLY, true).unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let recovered = cloud.standin.records().iter().any(|r| {
        r.method == "PUT"
            && r.path.eq_ignore_ascii_case(&vault.id)
            && r.body
                .pointer("/properties/createMode")
                .and_then(Value::as_str)
                == Some("recover")
    });
    assert!(recovered, "the vault was not recovered");
}
