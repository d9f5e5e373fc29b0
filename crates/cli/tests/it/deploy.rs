//! `plan` and `apply` end to end: the `kombiform` binary against a real PostgreSQL and a
//! real PocketBase, with the example specs' `local` environment pointed at them.
//!
//! Each test gets its own servers, spec copy and state directory. The binary runs as a
//! child process, so tests can kill it (-9) mid-apply and run two at once.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use anyhow::{Context, Result};
use serde_json::Value;

use kombiform_test_support::pocketbase::{PocketBase, SUPERUSER_EMAIL, SUPERUSER_PASSWORD};
use kombiform_test_support::postgres::Postgres;
use kombiform_test_support::proxy::Proxy;

pub(crate) struct Lab {
    pub(crate) pg: Postgres,
    pub(crate) pb: PocketBase,
    pub(crate) dir: tempfile::TempDir,
    /// Between kombiform and PostgreSQL / PocketBase, when started with [`Lab::proxied`].
    pub(crate) pg_proxy: Option<Proxy>,
    pub(crate) pb_proxy: Option<Proxy>,
}

pub(crate) fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let target = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &target)?;
        } else {
            std::fs::copy(e.path(), &target)?;
        }
    }
    Ok(())
}

impl Lab {
    pub(crate) fn start() -> Result<Lab> {
        Lab::start_with(false)
    }

    /// A lab whose kombiform reaches PostgreSQL and PocketBase through fault-injecting
    /// proxies (the tests' own connections go straight to the servers).
    pub(crate) fn proxied() -> Result<Lab> {
        Lab::start_with(true)
    }

    fn start_with(proxied: bool) -> Result<Lab> {
        let pg = Postgres::start()?;
        pg.create_database("kombify_platform")?;
        let pb = PocketBase::start()?;
        let (pg_proxy, pb_proxy) = if proxied {
            let pb_port = pb
                .url()
                .rsplit(':')
                .next()
                .and_then(|p| p.parse::<u16>().ok())
                .context("the PocketBase URL has no port")?;
            (Some(Proxy::start(pg.port())?), Some(Proxy::start(pb_port)?))
        } else {
            (None, None)
        };
        let pg_port = pg_proxy.as_ref().map_or(pg.port(), Proxy::port);
        let pb_url = pb_proxy.as_ref().map_or(pb.url(), Proxy::http_url);
        let dir = tempfile::tempdir()?;
        let specs = dir.path().join("specs");
        copy_dir(&kombiform_test_support::example_specs_dir(), &specs)?;
        let local = specs.join("platform/local.yaml");
        let text = std::fs::read_to_string(&local)?;
        let text = text
            .replace("    port: 5432\n", &format!("    port: {pg_port}\n"))
            .replace(
                "  pocketbase:\n    url: http://127.0.0.1:8090\n    superuserEmail: admin@kombify.localhost",
                &format!("  pocketbase:\n    url: {pb_url}\n    superuserEmail: {SUPERUSER_EMAIL}"),
            );
        anyhow::ensure!(
            text.contains(&pb_url),
            "could not point local.yaml at the test PocketBase"
        );
        std::fs::write(&local, text)?;
        Ok(Lab {
            pg,
            pb,
            dir,
            pg_proxy,
            pb_proxy,
        })
    }

    pub(crate) fn specs(&self) -> PathBuf {
        self.dir.path().join("specs")
    }

    pub(crate) fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_kombiform"));
        c.args(args)
            .current_dir(self.dir.path())
            .env("POCKETBASE_SUPERUSER_PASSWORD", SUPERUSER_PASSWORD)
            .env("PGPASSWORD", "")
            .env("PG_KOMBIFY_SSO_PASSWORD", "sso-role-password")
            .env("PG_KOMBIFY_HEALTH_PASSWORD", "health-role-password")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        c
    }

    pub(crate) fn run(&self, args: &[&str]) -> Result<Output> {
        self.cmd(args).output().context("running kombiform")
    }

    pub(crate) fn apply(&self, extra: &[&str]) -> Result<Output> {
        let mut args = vec!["apply", "--env", "local", "--auto-approve"];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    pub(crate) fn plan_json(&self) -> Result<(i32, Value)> {
        let out = self.run(&["plan", "--env", "local", "--format", "json"])?;
        let v: Value = serde_json::from_slice(&out.stdout).with_context(|| {
            format!(
                "plan --format json printed no JSON: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
        Ok((out.status.code().unwrap_or(-1), v))
    }

    pub(crate) fn edit(&self, file: &str, from: &str, to: &str) -> Result<()> {
        let path = self.specs().join(file);
        let text = std::fs::read_to_string(&path)?;
        anyhow::ensure!(text.contains(from), "{file} has no `{from}`");
        std::fs::write(&path, text.replacen(from, to, 1))?;
        Ok(())
    }

    pub(crate) fn sql(&self, query: &str) -> Result<Vec<postgres::Row>> {
        let mut c = self.pg.connect("kombify_platform")?;
        Ok(c.query(query, &[])?)
    }

    pub(crate) fn collections(&self) -> Result<Vec<String>> {
        let token = self.pb.superuser_token()?;
        let res = self
            .pb
            .agent()
            .get(format!("{}/api/collections?perPage=1000", self.pb.url()))
            .header("Authorization", &token)
            .send()?;
        let v: Value = res.json()?;
        let mut names: Vec<String> = v["items"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|c| c["system"] != Value::Bool(true))
                    .filter_map(|c| c["name"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        Ok(names)
    }
}

pub(crate) fn text(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub(crate) fn addresses(plan: &Value) -> Vec<String> {
    let mut v: Vec<String> = plan["changes"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c["address"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn apply_from_empty_then_nothing_to_do_and_audited() -> Result<()> {
    let lab = Lab::start()?;
    let (code, plan) = lab.plan_json()?;
    assert_eq!(code, 2, "{plan}");
    assert!(plan["changes"].as_array().is_some_and(|c| c.len() > 30));
    let out = lab.apply(&[])?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let (code, plan) = lab.plan_json()?;
    assert_eq!(
        code,
        0,
        "a second plan must be clean: {}",
        addresses(&plan).join("\n")
    );
    assert!(lab.collections()?.contains(&"t_acme_nodes".to_string()));
    let rows = lab.sql("SELECT result FROM kombify.audit_log WHERE action = 'apply'")?;
    assert_eq!(rows.len(), 1, "one audit row in PostgreSQL");
    let audit = std::fs::read_to_string(lab.dir.path().join(".kombiform/audit/local.jsonl"))?;
    assert_eq!(
        audit.lines().count(),
        1,
        "one audit record in the state backend"
    );
    let listed = lab.run(&["state", "list", "--env", "local"])?;
    assert!(String::from_utf8_lossy(&listed.stdout).contains("pocketbase.collection.t_acme_users"));
    Ok(())
}

#[test]
fn changing_a_tenants_plan_changes_exactly_its_rows() -> Result<()> {
    let lab = Lab::start()?;
    let out = lab.apply(&[])?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    lab.edit(
        "tenants.yaml",
        "name: acme\nspec:\n  displayName: ACME Homelabs GmbH\n  plan: pro",
        "name: acme\nspec:\n  displayName: ACME Homelabs GmbH\n  plan: enterprise",
    )?;
    let (code, plan) = lab.plan_json()?;
    assert_eq!(code, 2);
    assert_eq!(
        addresses(&plan),
        vec![
            "postgres.quota.acme".to_string(),
            "postgres.tenant.acme".to_string()
        ]
    );
    let quota = plan["changes"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["address"] == "postgres.quota.acme"))
        .cloned()
        .unwrap_or_default();
    let names: Vec<&str> = quota["attrs"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x["name"].as_str()).collect())
        .unwrap_or_default();
    for attr in [
        "max_users",
        "max_nodes",
        "rate_limit_second",
        "rate_limit_minute",
    ] {
        assert!(
            names.contains(&attr),
            "{attr} missing from the quota change: {names:?}"
        );
    }
    let out = lab.apply(&[])?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let (code, _) = lab.plan_json()?;
    assert_eq!(code, 0);
    let rows = lab.sql("SELECT max_users FROM kombify.quotas WHERE tenant = 'acme'")?;
    assert_eq!(rows.first().map(|r| r.get::<_, i32>(0)), Some(500));
    Ok(())
}

#[test]
fn removing_a_tenant_needs_consent_and_removes_only_its_data() -> Result<()> {
    let lab = Lab::start()?;
    let out = lab.apply(&[])?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let tenants = lab.specs().join("tenants.yaml");
    let t = std::fs::read_to_string(&tenants)?;
    let start = t
        .find("---\napiVersion: kombify.io/v1\nkind: Tenant\nmetadata:\n  name: stark-lab")
        .context("stark-lab")?;
    let end = t[start + 4..]
        .find("---\n")
        .map_or(t.len(), |i| start + 4 + i);
    std::fs::write(&tenants, format!("{}{}", &t[..start], &t[end..]))?;
    let before = lab.collections()?;

    let (code, plan) = lab.plan_json()?;
    assert_eq!(code, 3, "blocked by the guard");
    assert!(plan["refused"].as_array().is_some_and(|r| !r.is_empty()));
    let out = lab.apply(&[])?;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("kombiform apply --env local --allow-destroy tenant:stark-lab\n"),
        "the exact consent, once for the tenant:\n{err}"
    );
    assert_eq!(
        lab.collections()?,
        before,
        "a refused apply changes nothing"
    );

    // A saved blocked plan is not called appliable; applied with the consent it names, it
    // runs exactly as saved.
    let file = lab.dir.path().join("remove.plan.json");
    let file_arg = file.display().to_string();
    let out = lab.run(&["plan", "--env", "local", "--save", &file_arg])?;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains(&format!(
            "It is blocked: apply it only with consent to what it destroys:\n  kombiform apply {file_arg} --allow-destroy tenant:stark-lab"
        )) && !shown.contains("Apply exactly this plan"),
        "{shown}"
    );
    let out = lab.run(&["apply", &file_arg])?;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!(
        "kombiform apply {file_arg} --allow-destroy tenant:stark-lab"
    )));
    let out = lab.run(&["apply", &file_arg, "--allow-destroy", "tenant:stark-lab"])?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let after = lab.collections()?;
    let gone: Vec<&String> = before.iter().filter(|c| !after.contains(c)).collect();
    assert!(
        !gone.is_empty() && gone.iter().all(|c| c.starts_with("t_stark_lab_")),
        "{gone:?}"
    );
    assert_eq!(before.len() - gone.len(), after.len());
    assert!(lab
        .sql("SELECT 1 FROM kombify.tenants WHERE slug = 'stark-lab'")?
        .is_empty());
    assert_eq!(
        lab.sql("SELECT 1 FROM kombify.tenants WHERE slug = 'acme'")?
            .len(),
        1
    );
    let (code, _) = lab.plan_json()?;
    assert_eq!(code, 0);
    Ok(())
}

/// Starts `apply` with JSON events and kills it (-9) after `n` completed changes.
fn apply_and_kill_after(lab: &Lab, n: usize) -> Result<usize> {
    let mut child: Child = lab
        .cmd(&[
            "apply",
            "--env",
            "local",
            "--auto-approve",
            "--parallelism",
            "1",
            "--format",
            "json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut done = 0;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if line.contains("\"event\":\"done\"") {
            done += 1;
            if done >= n {
                child.kill()?; // SIGKILL
                break;
            }
        }
    }
    child.wait()?;
    Ok(done)
}

#[test]
fn a_killed_apply_is_resumed_by_running_again() -> Result<()> {
    // The end state of an uninterrupted run, to compare against.
    let reference = Lab::start()?;
    let (_, plan) = reference.plan_json()?;
    let total = plan["changes"].as_array().map_or(0, Vec::len);
    let desired: std::collections::BTreeSet<String> = addresses(&plan).into_iter().collect();
    assert!(total > 30);
    let out = reference.apply(&[])?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let (_, clean) = reference.plan_json()?;
    let want: BTreeMap<String, Value> = serde_json::from_value(clean["live_hashes"].clone())?;

    for kill_after in [1, total / 2, total - 2] {
        let lab = Lab::start()?;
        let done = apply_and_kill_after(&lab, kill_after)?;
        assert!(
            done >= kill_after.min(total),
            "killed after {done} of {kill_after}"
        );
        let (code, _) = lab.plan_json()?;
        assert_eq!(code, 2, "work remains after the kill at {kill_after}");
        let out = lab.apply(&[])?;
        assert_eq!(
            out.status.code(),
            Some(0),
            "resume after {kill_after}: {}",
            text(&out)
        );
        let (code, after) = lab.plan_json()?;
        assert_eq!(code, 0, "clean after resuming from {kill_after}");
        let got: BTreeMap<String, Value> = serde_json::from_value(after["live_hashes"].clone())?;
        assert_eq!(got, want, "end state after a kill at {kill_after} differs");
        let (recorded, in_doubt) = super::recovery::recorded(&lab)?;
        let missing: Vec<&String> = desired.difference(&recorded).collect();
        assert!(
            missing.is_empty() && in_doubt == 0,
            "after a kill at {kill_after}, live resources are not recorded: {missing:?}"
        );
    }
    Ok(())
}

#[test]
fn a_second_apply_fails_fast_on_the_lock_and_names_the_holder() -> Result<()> {
    let lab = Lab::start()?;
    let mut first = lab
        .cmd(&[
            "apply",
            "--env",
            "local",
            "--auto-approve",
            "--parallelism",
            "1",
            "--format",
            "json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let pid = first.id();
    let mut lines = BufReader::new(first.stdout.take().context("no stdout")?).lines();
    // Once the first apply reports progress it holds the lock: freeze it there.
    for line in lines.by_ref() {
        if line?.contains("\"event\":\"started\"") {
            break;
        }
    }
    let _ = Command::new("kill")
        .args(["-STOP", &pid.to_string()])
        .status();
    // The first apply is stopped while it holds the lock: a second apply that waited for
    // the lock would never return; it must fail at once.
    let second = lab.apply(&[])?;
    let _ = Command::new("kill")
        .args(["-CONT", &pid.to_string()])
        .status();
    for _ in lines.by_ref() {}
    let status = first.wait()?;
    assert_eq!(second.status.code(), Some(1), "{}", text(&second));
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains(&pid.to_string()),
        "the error names the holder's pid: {err}"
    );
    assert!(err.contains("state unlock"), "{err}");
    assert!(status.success(), "the first apply completes");
    Ok(())
}

#[test]
fn out_of_band_changes_show_as_drift_and_stale_plans_are_refused() -> Result<()> {
    let lab = Lab::start()?;
    let out = lab.apply(&[])?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let plan_file = lab.dir.path().join("saved.plan.json");
    lab.edit(
        "flags.yaml",
        "  default: false\n  rolloutPercent: 25",
        "  default: false\n  rolloutPercent: 30",
    )?;
    let out = lab.run(&[
        "plan",
        "--env",
        "local",
        "--save",
        &plan_file.display().to_string(),
    ])?;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    // Someone edits the database directly.
    lab.sql("UPDATE kombify.plans SET max_users = 999 WHERE name = 'pro'")?;
    let (code, plan) = lab.plan_json()?;
    assert_eq!(code, 2);
    let pro = plan["changes"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["address"] == "postgres.plan.pro"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(pro["drift"], Value::Bool(true), "{pro}");

    let out = lab.run(&["apply", &plan_file.display().to_string()])?;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("stale") && err.contains("postgres.plan.pro"),
        "{err}"
    );
    let rows = lab.sql("SELECT rollout_percent FROM kombify.flags WHERE name = 'new-dashboard'")?;
    assert_eq!(
        rows.first().map(|r| r.get::<_, Option<i16>>(0)),
        Some(Some(25)),
        "nothing applied"
    );
    Ok(())
}

/// A request to the lab's PocketBase: (status, JSON body or `Null`).
fn pb_call(
    lab: &Lab,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> Result<(u16, Value)> {
    let url = format!("{}{path}", lab.pb.url());
    let agent = lab.pb.agent();
    let res = match (method, body) {
        ("GET", _) => agent.get(&url).header("Authorization", token).send()?,
        ("POST", b) => agent
            .post(&url)
            .header("Authorization", token)
            .json(&b.unwrap_or(Value::Null))
            .send()?,
        (other, _) => anyhow::bail!("unsupported method {other}"),
    };
    let status = res.status().as_u16();
    let text = res.text().unwrap_or_default();
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

#[test]
fn suspending_a_tenant_is_a_planned_rule_change_that_shuts_and_reopens_its_data() -> Result<()> {
    let lab = Lab::start()?;
    let out = lab.apply(&[])?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // A member of acme with a token issued before the suspension, and a record of theirs.
    let su = lab.pb.superuser_token()?;
    let password = "Tenant-Pass-123456";
    let (status, user) = pb_call(
        &lab,
        "POST",
        "/api/collections/t_acme_users/records",
        &su,
        Some(serde_json::json!({
        "email": "alice@acme.test", "password": password, "passwordConfirm": password,
        "verified": true, "zitadelSub": "310000000000000042", "role": "member"})),
    )?;
    assert_eq!(status, 200, "{user}");
    let alice = user["id"].as_str().context("user id")?;
    let impersonate = format!("/api/collections/t_acme_users/impersonate/{alice}");
    let (status, auth) = pb_call(
        &lab,
        "POST",
        &impersonate,
        &su,
        Some(serde_json::json!({"duration": 3600})),
    )?;
    assert_eq!(status, 200, "{auth}");
    let token = auth["token"].as_str().context("token")?;
    let stack = serde_json::json!({"name": "homelab", "stackkit": "k3s", "owner": alice});
    let (status, body) = pb_call(
        &lab,
        "POST",
        "/api/collections/t_acme_stacks/records",
        token,
        Some(stack),
    )?;
    assert_eq!(status, 200, "{body}");
    let stacks = "/api/collections/t_acme_stacks/records";
    let access = || -> Result<u16> { Ok(pb_call(&lab, "GET", stacks, token, None)?.0) };
    assert_eq!(access()?, 200);

    let active = "  plan: pro\n  zitadelOrgId: \"284715550000000001\"\n";
    let suspended = "  plan: pro\n  zitadelOrgId: \"284715550000000001\"\n  status: suspended\n";
    let acme_collections: Vec<String> = ["nodes", "simulations", "stacks", "users"]
        .iter()
        .map(|t| format!("pocketbase.collection.t_acme_{t}"))
        .collect();
    for (from, to, open) in [(active, suspended, false), (suspended, active, true)] {
        lab.edit("tenants.yaml", from, to)?;
        // `kombiform plan` shows the rules of exactly acme's collections changing.
        let out = lab.run(&["plan", "--env", "local"])?;
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        let shown = String::from_utf8_lossy(&out.stdout);
        for c in &acme_collections {
            assert!(
                shown.contains(&format!("~ {c}")),
                "{c} not in the plan:\n{shown}"
            );
        }
        let rule_to = if open { "null → " } else { " → null" };
        assert!(
            shown.contains("listRule: ") && shown.contains(rule_to),
            "{shown}"
        );
        let (_, plan) = lab.plan_json()?;
        let mut expected = acme_collections.clone();
        expected.push("postgres.tenant.acme".to_string());
        assert_eq!(addresses(&plan), expected);
        assert!(
            plan["changes"]
                .as_array()
                .is_some_and(|a| a.iter().all(|c| c["destructive"] != Value::Bool(true))),
            "{plan}"
        );

        let out = lab.apply(&[])?;
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        // At once: the same token, no new sign-in.
        assert_eq!(access()?, if open { 200 } else { 403 });
        let (status, list) = pb_call(&lab, "GET", stacks, &su, None)?;
        assert_eq!(
            (status, list["totalItems"].as_u64()),
            (200, Some(1)),
            "data kept"
        );
    }
    Ok(())
}

#[test]
fn wrong_or_missing_credentials_name_the_variable_to_set() -> Result<()> {
    let lab = Lab::start()?;
    let out = lab
        .cmd(&["plan", "--env", "local"])
        .env("POCKETBASE_SUPERUSER_PASSWORD", "not-the-password")
        .output()?;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "PocketBase refused the password of superuser {SUPERUSER_EMAIL}: set POCKETBASE_SUPERUSER_PASSWORD to it"
        )),
        "{err}"
    );
    let out = lab
        .cmd(&["plan", "--env", "local"])
        .env_remove("POCKETBASE_SUPERUSER_PASSWORD")
        .output()?;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("set environment variable POCKETBASE_SUPERUSER_PASSWORD"),
        "{}",
        text(&out)
    );
    Ok(())
}

/// A copy of the example specs whose local servers are on free ports nobody listens on.
fn specs_with_nothing_listening(dir: &Path) -> Result<()> {
    let specs = dir.join("specs");
    copy_dir(&kombiform_test_support::example_specs_dir(), &specs)?;
    let local = specs.join("platform/local.yaml");
    let text = std::fs::read_to_string(&local)?;
    let pg = kombiform_test_support::free_port()?;
    let pb = kombiform_test_support::free_port()?;
    let text = text
        .replace("    port: 5432\n", &format!("    port: {pg}\n"))
        .replace(
            "url: http://127.0.0.1:8090",
            &format!("url: http://127.0.0.1:{pb}"),
        );
    anyhow::ensure!(
        text.contains(&format!("port: {pg}")),
        "could not move local.yaml"
    );
    std::fs::write(&local, text)?;
    Ok(())
}

#[test]
fn nothing_listening_points_at_the_local_servers_script() -> Result<()> {
    let dir = tempfile::tempdir()?;
    specs_with_nothing_listening(dir.path())?;
    let out = Command::new(env!("CARGO_BIN_EXE_kombiform"))
        .args(["plan", "--env", "local"])
        .current_dir(dir.path())
        .env("POCKETBASE_SUPERUSER_PASSWORD", SUPERUSER_PASSWORD)
        .env("PGPASSWORD", "")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .output()?;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "\nhint: nothing is listening there: start the local servers with `./scripts/local-up.sh`"
        ),
        "{err}"
    );
    assert!(
        !err.contains('\r') && !err.contains('\x1b'),
        "no spinner or colour on a pipe: {err:?}"
    );
    Ok(())
}

#[test]
fn on_a_terminal_plan_shows_what_it_is_doing() -> Result<()> {
    // A pseudo-terminal from util-linux's `script`: stderr is a terminal there.
    let dir = tempfile::tempdir()?;
    specs_with_nothing_listening(dir.path())?;
    let bin = env!("CARGO_BIN_EXE_kombiform");
    let out = Command::new("script")
        .args(["-qec", &format!("{bin} plan --env local"), "/dev/null"])
        .current_dir(dir.path())
        .env("POCKETBASE_SUPERUSER_PASSWORD", SUPERUSER_PASSWORD)
        .env("PGPASSWORD", "")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .output()
        .context("running script (util-linux) for a pseudo-terminal")?;
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(
        screen.contains("\r\x1b[2K⠋ connecting to the live systems of `local` (0 s)"),
        "a spinner names what it waits for: {screen:?}"
    );
    assert!(
        screen.contains("\x1b[2K") && screen.contains("hint: nothing is listening there"),
        "the spinner is cleared before the error: {screen:?}"
    );
    let quiet = Command::new("script")
        .args([
            "-qec",
            &format!("{bin} plan --env local --quiet"),
            "/dev/null",
        ])
        .current_dir(dir.path())
        .env("POCKETBASE_SUPERUSER_PASSWORD", SUPERUSER_PASSWORD)
        .env("PGPASSWORD", "")
        .stdin(Stdio::null())
        .output()?;
    let screen = String::from_utf8_lossy(&quiet.stdout);
    assert!(
        !screen.contains("connecting to the live systems"),
        "--quiet: {screen:?}"
    );
    Ok(())
}

#[test]
fn the_gateway_config_is_planned_with_its_hash_and_delivered_by_apply() -> Result<()> {
    // A local gateway's runtime: the directory it mounts (KOMBIFORM_KONG_DIR).
    let lab = Lab::start()?;
    let gateway = lab.dir.path().join("gateway");
    let run = |args: &[&str]| {
        lab.cmd(args)
            .env("KOMBIFORM_KONG_DIR", &gateway)
            .output()
            .context("running kombiform")
    };
    let out = run(&["plan", "--env", "local", "--format", "json"])?;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let plan: Value = serde_json::from_slice(&out.stdout)?;
    let config = plan["changes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["address"] == "kong.config.gateway")
        .context("the Kong config is a resource of the plan")?;
    let shown = config.to_string();
    // The first 64-hex-digit value after the attribute's name.
    let sha = shown
        .split("\"sha256\"")
        .nth(1)
        .and_then(|rest| {
            rest.split('"')
                .find(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
        })
        .context("the plan shows the config's sha256")?
        .to_string();
    assert_eq!(sha.len(), 64, "{shown}");
    let text_plan = run(&["plan", "--env", "local"])?;
    assert!(
        String::from_utf8_lossy(&text_plan.stdout).contains("kong.config.gateway"),
        "{}",
        text(&text_plan)
    );

    let out = lab
        .cmd(&["apply", "--env", "local", "--auto-approve"])
        .env("KOMBIFORM_KONG_DIR", &gateway)
        .output()?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let active = std::fs::read_to_string(gateway.join("active"))?;
    assert_eq!(active.trim(), format!("kong-{}.yaml", &sha[..16]));
    let served = std::fs::read(gateway.join("configs").join(active.trim()))?;
    assert_eq!(
        kombiform_emit::targets::kong::sha256_hex(&served),
        sha,
        "the delivered bytes are the planned ones"
    );
    let out = run(&["plan", "--env", "local", "--format", "json"])?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    Ok(())
}
