//! The command line as a newcomer meets it, pinned in golden files under
//! `tests/golden/cli/`: every `--help`, usage and other errors with their exit codes, and
//! rendered plans (built in the test: no server needed). `UPDATE_EXPECT=1 cargo test -p
//! kombiform --test it cli_golden` rewrites them; review the diff. A file of a pinned
//! directory that no test produces any more fails the test.
//!
//! Also here, without golden files: exit codes have one meaning each, `--format json` is
//! JSON everywhere, completions, manual pages and `--version`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{Context, Result};
use serde_json::{json, Value};

use kombiform_plan::render::{self, TextOptions};
use kombiform_plan::{Change, Consent, DiffInput, Plan, Resource, PLAN_FORMAT};
use kombiform_test_support::{example_specs_dir, golden_dir};

fn kombiform() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kombiform"));
    c.env_remove("NO_COLOR").stdin(Stdio::null());
    c
}

fn pinned_dir(name: &str) -> PathBuf {
    golden_dir().join("cli").join(name)
}

/// Compares `produced` with the files of `tests/golden/cli/<dir>/` (or rewrites them).
fn check_pinned(dir: &str, produced: &BTreeMap<String, String>) -> Result<()> {
    let root = pinned_dir(dir);
    if std::env::var_os("UPDATE_EXPECT").is_some_and(|v| v == "1") {
        if root.exists() {
            std::fs::remove_dir_all(&root)?;
        }
        std::fs::create_dir_all(&root)?;
        for (name, text) in produced {
            std::fs::write(root.join(name), text)?;
        }
        return Ok(());
    }
    let mut report = String::new();
    for (name, text) in produced {
        let path = root.join(name);
        let expected = std::fs::read_to_string(&path).unwrap_or_default();
        if &expected != text {
            let diff = similar::TextDiff::from_lines(expected.as_str(), text.as_str());
            let udiff = diff
                .unified_diff()
                .context_radius(2)
                .header(&format!("expected/{name}"), &format!("actual/{name}"))
                .to_string();
            let short: String = udiff
                .lines()
                .take(80)
                .map(|l| format!("    {l}\n"))
                .collect();
            report.push_str(&format!("  differs: {name}\n{short}"));
        }
    }
    for entry in std::fs::read_dir(&root).with_context(|| format!("listing {}", root.display()))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if !produced.contains_key(&name) {
            report.push_str(&format!("  stale (no longer produced): {name}\n"));
        }
    }
    assert!(
        report.is_empty(),
        "{} differs (run `UPDATE_EXPECT=1 cargo test -p kombiform --test it cli_golden` and review the diff):\n{report}",
        root.display()
    );
    Ok(())
}

/// `$ kombiform ARGS`, the exit code, and both streams, with `replace` applied (temporary
/// paths made stable).
fn transcript(args: &[&str], out: &Output, replace: &[(&str, &str)]) -> String {
    let mut s = format!(
        "$ kombiform {}\nexit {}\n--- stdout\n{}--- stderr\n{}",
        args.join(" "),
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for (from, to) in replace {
        s = s.replace(from, to);
    }
    s
}

/// The example specs with one mistake (a tenant's plan misspelt), copied into `dir`.
fn broken_specs(dir: &Path) -> Result<PathBuf> {
    let specs = dir.join("broken-specs");
    super::deploy::copy_dir(&example_specs_dir(), &specs)?;
    let tenants = specs.join("tenants.yaml");
    let text = std::fs::read_to_string(&tenants)?;
    anyhow::ensure!(
        text.contains("  plan: pro\n"),
        "no `plan: pro` in tenants.yaml"
    );
    std::fs::write(&tenants, text.replacen("  plan: pro\n", "  plan: prp\n", 1))?;
    Ok(specs)
}

fn run(args: &[&str], dir: &Path) -> Result<Output> {
    kombiform()
        .args(args)
        .current_dir(dir)
        .output()
        .context("running kombiform")
}

#[test]
fn every_help_is_pinned_with_examples_and_environment() -> Result<()> {
    let commands: &[&[&str]] = &[
        &[],
        &["validate"],
        &["build"],
        &["graph"],
        &["diff"],
        &["migrate-specs"],
        &["schema"],
        &["plan"],
        &["apply"],
        &["state"],
        &["state", "list"],
        &["state", "show"],
        &["state", "check"],
        &["state", "repair"],
        &["state", "unlock"],
        &["completions"],
        &["man"],
    ];
    let dir = tempfile::tempdir()?;
    let mut produced = BTreeMap::new();
    for cmd in commands {
        let mut args = cmd.to_vec();
        args.push("--help");
        let out = run(&args, dir.path())?;
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert!(out.stderr.is_empty(), "{args:?}");
        let text = String::from_utf8(out.stdout)?;
        assert!(!text.contains('\x1b'), "no colour on a pipe: {args:?}");
        let top = cmd.first().copied().unwrap_or("kombiform");
        assert!(
            text.contains("Example") && text.contains("Exit codes"),
            "{args:?} has no example or exit codes:\n{text}"
        );
        if !cmd.is_empty() && !["completions", "man", "schema"].contains(&top) {
            assert!(text.contains("Environment"), "{args:?}:\n{text}");
        }
        assert!(text.contains("--color <WHEN>"), "{args:?}");
        let name = if cmd.is_empty() {
            "kombiform".to_string()
        } else {
            cmd.join("-")
        };
        produced.insert(format!("{name}.txt"), text);
    }
    check_pinned("help", &produced)
}

#[test]
fn errors_exit_1_with_a_message_that_says_what_to_do() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let tmp = dir.path().display().to_string();
    let fixtures = example_specs_dir().display().to_string();
    let broken = broken_specs(dir.path())?;
    let broken = broken.display().to_string();
    let cases: Vec<(&str, Vec<&str>)> = vec![
        ("no-command", vec![]),
        ("unknown-flag", vec!["validate", "--bogus"]),
        ("unknown-command", vec!["deploy"]),
        ("plan-without-env", vec!["plan"]),
        ("bad-format", vec!["validate", "--format", "yaml"]),
        ("bad-color", vec!["--color", "sometimes", "validate"]),
        (
            "validate-unknown-env",
            vec!["validate", "--specs", &fixtures, "--env", "nope"],
        ),
        (
            "validate-broken-specs",
            vec!["validate", "--specs", &broken],
        ),
        (
            "graph-unknown-env",
            vec!["graph", "--specs", &fixtures, "--env", "nope"],
        ),
        (
            "build-unknown-env",
            vec!["build", "--specs", &fixtures, "--env", "nope"],
        ),
        (
            "plan-unknown-env",
            vec!["plan", "--specs", &fixtures, "--env", "nope"],
        ),
        (
            "state-list-unknown-env",
            vec!["state", "list", "--specs", &fixtures, "--env", "nope"],
        ),
        (
            "state-check-unknown-env",
            vec!["state", "check", "--specs", &fixtures, "--env", "nope"],
        ),
        (
            "state-unlock-unknown-env",
            vec![
                "state", "unlock", "x", "--specs", &fixtures, "--env", "nope",
            ],
        ),
        (
            "apply-without-plan-or-env",
            vec!["apply", "--specs", &fixtures],
        ),
        ("apply-missing-file", vec!["apply", "missing.plan.json"]),
        ("missing-specs-dir", vec!["validate", "--specs", "nowhere"]),
    ];
    let mut produced = BTreeMap::new();
    for (name, args) in &cases {
        let out = run(args, dir.path())?;
        assert_eq!(
            out.status.code(),
            Some(1),
            "{name}: every error exits 1\n{}",
            transcript(args, &out, &[])
        );
        let text = transcript(
            args,
            &out,
            &[(&fixtures, "<example-specs>"), (&tmp, "<tmp>")],
        );
        produced.insert(format!("{name}.txt"), text);
    }
    check_pinned("errors", &produced)
}

#[test]
fn exit_codes_mean_one_thing_each() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let specs = example_specs_dir();
    let specs = specs.to_str().context("path")?;
    let out_dir = dir.path().join("gen");
    let gen = out_dir.to_str().context("path")?;
    let code =
        |args: &[&str]| -> Result<i32> { Ok(run(args, dir.path())?.status.code().unwrap_or(-1)) };
    assert_eq!(code(&["validate", "--specs", specs])?, 0);
    assert_eq!(
        code(&["diff", "--specs", specs, "--out", gen])?,
        2,
        "differences"
    );
    assert_eq!(
        code(&["build", "--specs", specs, "--out", gen, "--check"])?,
        2
    );
    assert_eq!(code(&["build", "--specs", specs, "--out", gen])?, 0);
    assert_eq!(
        code(&["build", "--specs", specs, "--out", gen, "--check"])?,
        0
    );
    assert_eq!(code(&["diff", "--specs", specs, "--out", gen])?, 0);
    // --env narrows build and diff to <out>/<env>/.
    std::fs::remove_dir_all(out_dir.join("prod"))?;
    assert_eq!(
        code(&["diff", "--specs", specs, "--out", gen, "--env", "local"])?,
        0
    );
    assert_eq!(
        code(&["diff", "--specs", specs, "--out", gen, "--env", "prod"])?,
        2
    );
    assert_eq!(
        code(&["build", "--specs", specs, "--out", gen, "--env", "prod"])?,
        0
    );
    assert_eq!(
        code(&["build", "--specs", specs, "--out", gen, "--check"])?,
        0
    );
    assert_eq!(code(&["--help"])?, 0);
    assert_eq!(code(&["--version"])?, 0);
    assert_eq!(
        code(&["validate", "--bogus"])?,
        1,
        "a usage error is not a difference"
    );
    Ok(())
}

/// The JSON a command printed.
fn json_of(args: &[&str], dir: &Path) -> Result<(i32, Value)> {
    let out = run(args, dir)?;
    let v = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "{args:?} printed no JSON: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })?;
    Ok((out.status.code().unwrap_or(-1), v))
}

#[test]
fn format_json_is_the_one_way_to_ask_for_json() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let specs = example_specs_dir();
    let specs = specs.to_str().context("path")?;
    let broken = broken_specs(dir.path())?;
    let broken = broken.to_str().context("path")?;
    let gen = dir.path().join("gen");
    let gen = gen.to_str().context("path")?;

    let (code, v) = json_of(
        &["validate", "--specs", specs, "--format", "json"],
        dir.path(),
    )?;
    assert_eq!(
        (code, &v["ok"], &v["counts"]["tenants"]),
        (0, &json!(true), &json!(7))
    );
    let (code, v) = json_of(
        &["validate", "--specs", broken, "--format", "json"],
        dir.path(),
    )?;
    assert_eq!(code, 1);
    let d = &v["diagnostics"][0];
    assert_eq!(d["code"], "unknown-plan", "{v}");
    assert!(
        d["line"].as_u64().is_some_and(|l| l > 0) && d["hint"].is_string(),
        "{v}"
    );

    let (code, v) = json_of(
        &["diff", "--specs", specs, "--out", gen, "--format", "json"],
        dir.path(),
    )?;
    assert_eq!(code, 2);
    assert!(v["files"]
        .as_array()
        .is_some_and(|f| f.iter().all(|f| f["status"] == "added")));
    let (code, v) = json_of(
        &["build", "--specs", specs, "--out", gen, "--format", "json"],
        dir.path(),
    )?;
    assert_eq!((code, &v["removed"]), (0, &json!(0)));
    let (code, v) = json_of(
        &[
            "build", "--specs", specs, "--out", gen, "--check", "--format", "json",
        ],
        dir.path(),
    )?;
    assert_eq!((code, &v["up_to_date"]), (0, &json!(true)));
    let (code, v) = json_of(
        &[
            "graph", "--specs", specs, "--env", "local", "--format", "json",
        ],
        dir.path(),
    )?;
    assert_eq!(code, 0);
    let resources = v["environments"][0]["resources"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(resources.len() > 10, "{v}");
    // In order: whatever a resource needs comes before it.
    let mut seen = BTreeSet::new();
    for r in &resources {
        for need in r["needs"].as_array().into_iter().flatten() {
            assert!(
                seen.contains(need.as_str().unwrap_or("")),
                "{r} before {need}"
            );
        }
        seen.insert(r["address"].as_str().unwrap_or("").to_string());
    }
    let (code, v) = json_of(
        &[
            "migrate-specs",
            "--specs",
            specs,
            "--check",
            "--format",
            "json",
        ],
        dir.path(),
    )?;
    assert_eq!((code, &v["files"]), (0, &json!([])));
    let (code, v) = json_of(
        &[
            "state", "list", "--specs", specs, "--env", "local", "--format", "json",
        ],
        dir.path(),
    )?;
    assert_eq!(
        (code, &v["resources"]),
        (0, &json!([])),
        "never applied: nothing recorded"
    );
    Ok(())
}

#[test]
fn version_names_the_commit() -> Result<()> {
    let out = run(&["--version"], Path::new("."))?;
    let text = String::from_utf8(out.stdout)?;
    let commit = text
        .strip_prefix(&format!("kombiform {} (commit ", env!("CARGO_PKG_VERSION")))
        .and_then(|r| r.strip_suffix(")\n"))
        .with_context(|| format!("unexpected --version: {text}"))?;
    assert!(
        commit.starts_with("unknown")
            || commit.rsplit('-').next().is_some_and(|h| h
                .trim_start_matches('g')
                .chars()
                .all(|c| c.is_ascii_hexdigit())),
        "{text}"
    );
    // The same version on every command.
    let sub = run(&["plan", "--version"], Path::new("."))?;
    assert_eq!(
        String::from_utf8(sub.stdout)?,
        text.replacen("kombiform", "kombiform-plan", 1)
    );
    Ok(())
}

#[test]
fn completions_and_manual_pages_come_from_the_cli_definition() -> Result<()> {
    let dir = tempfile::tempdir()?;
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef kombiform"),
        ("fish", "complete -c kombiform"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let out = run(&["completions", shell], dir.path())?;
        assert_eq!(out.status.code(), Some(0), "{shell}");
        let text = String::from_utf8(out.stdout)?;
        assert!(text.contains(marker), "{shell}: no `{marker}`");
        for word in ["allow-destroy", "migrate-specs", "--format"] {
            assert!(text.contains(word), "{shell} completes no {word}");
        }
    }
    let out = run(&["man"], dir.path())?;
    let page = String::from_utf8(out.stdout)?;
    assert!(
        page.starts_with(".ie") || page.contains(".TH kombiform 1"),
        "{page}"
    );
    assert!(page.contains("completions"), "the page lists the commands");
    let man_dir = dir.path().join("man1");
    let out = run(
        &["man", "--out", man_dir.to_str().context("path")?],
        dir.path(),
    )?;
    assert_eq!(out.status.code(), Some(0));
    let mut pages: Vec<String> = std::fs::read_dir(&man_dir)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<_>>()?;
    pages.sort();
    assert!(pages.contains(&"kombiform.1".to_string()), "{pages:?}");
    assert!(pages.contains(&"kombiform-plan.1".to_string()), "{pages:?}");
    assert!(
        pages.contains(&"kombiform-state.1".to_string()),
        "{pages:?}"
    );
    let plan_page = std::fs::read_to_string(man_dir.join("kombiform-plan.1"))?;
    assert!(plan_page.contains("allow\\-destroy"), "{plan_page}");
    Ok(())
}

#[test]
fn color_always_colours_diagnostics_and_diffs_even_on_a_pipe() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broken = broken_specs(dir.path())?;
    let broken = broken.to_str().context("path")?;
    let out = run(
        &["--color", "always", "validate", "--specs", broken],
        dir.path(),
    )?;
    let err = String::from_utf8(out.stderr)?;
    assert!(
        err.contains("\x1b[1;31merror\x1b[0m[unknown-plan]"),
        "{err:?}"
    );
    let out = kombiform()
        .args(["validate", "--specs", broken, "--color", "auto"])
        .output()?;
    assert!(!out.stderr.contains(&0x1b), "auto on a pipe: no colour");
    let specs = example_specs_dir();
    let gen = dir.path().join("gen");
    let out = run(
        &[
            "diff",
            "--color=always",
            "--specs",
            specs.to_str().context("path")?,
            "--out",
            gen.to_str().context("path")?,
        ],
        dir.path(),
    )?;
    let diff = String::from_utf8(out.stdout)?;
    assert!(diff.contains("\x1b[32m+"), "additions coloured");
    let out = run(
        &["--color", "never", "validate", "--specs", broken],
        dir.path(),
    )?;
    assert!(!out.stderr.contains(&0x1b));
    Ok(())
}

// ---- plans, rendered -----------------------------------------------------------------

fn res(address: &str, attrs: Value, tenant: Option<&str>) -> Resource {
    let mut r = Resource::new(address, attrs.as_object().cloned().unwrap_or_default());
    if let Some(t) = tenant {
        r.meta.insert("tenant".into(), json!(t));
        if !address.starts_with("postgres.tenant.") {
            r.depends_on = vec![format!("postgres.tenant.{t}")];
        }
    }
    r
}

fn data(mut r: Resource) -> Resource {
    r.data_bearing = true;
    r
}

/// A tenant's resources as the specs want them.
fn tenant(slug: &str, plan: &str) -> Vec<Resource> {
    let ident = slug.replace('-', "_");
    vec![
        data(res(
            &format!("postgres.tenant.{slug}"),
            json!({"slug": slug, "plan": plan, "status": "active"}),
            Some(slug),
        )),
        res(
            &format!("postgres.quota.{slug}"),
            json!({"tenant": slug, "max_users": 25, "max_nodes": 50}),
            Some(slug),
        ),
        data(res(
            &format!("pocketbase.collection.t_{ident}_nodes"),
            json!({
                "name": format!("t_{ident}_nodes"), "type": "base",
                "listRule": "@request.auth.id != ''",
                "fields.text1314505826": {"name": "hostname", "type": "text", "max": 253, "required": true},
                "fields.bool1748787223": {"name": "online", "type": "bool"},
                "indexes": [format!("CREATE UNIQUE INDEX idx_{ident}_host ON t_{ident}_nodes (hostname)")],
            }),
            Some(slug),
        )),
        data(res(
            &format!("pocketbase.collection.t_{ident}_users"),
            json!({"name": format!("t_{ident}_users"), "type": "auth"}),
            Some(slug),
        )),
    ]
}

fn platform() -> Vec<Resource> {
    vec![
        res(
            "postgres.table.tenants",
            json!({"columns": ["slug", "plan", "status"]}),
            None,
        ),
        res(
            "postgres.plan.pro",
            json!({"max_users": 25, "max_nodes": 50}),
            None,
        ),
    ]
}

/// A plan through the real diff and consent: `live` against `desired`, everything live
/// managed, `applied` as recorded, `vetoed` as a target would say.
fn plan_of(
    desired: &[Resource],
    live: &[Resource],
    applied: &[(&str, Value)],
    consent: &Consent,
    vetoed: &[(&str, &str)],
) -> Result<Plan> {
    let applied: BTreeMap<String, serde_json::Map<String, Value>> = applied
        .iter()
        .map(|(a, v)| ((*a).to_string(), v.as_object().cloned().unwrap_or_default()))
        .collect();
    let managed = live.iter().map(|r| r.address.clone()).collect();
    let diff = kombiform_plan::diff(&DiffInput {
        desired,
        live,
        applied: &applied,
        managed: &managed,
    })
    .map_err(|c| anyhow::anyhow!("{c}"))?;
    let mut changes: Vec<Change> = diff.changes;
    for c in &mut changes {
        // What the PocketBase target sees and the generic diff cannot: a dropped field.
        if c.action == kombiform_plan::Action::Update
            && c.attrs
                .iter()
                .any(|a| a.name.starts_with("fields.") && a.after.is_none())
        {
            c.destructive = true;
        }
    }
    let vetoed: BTreeMap<String, String> = vetoed
        .iter()
        .map(|(a, why)| ((*a).to_string(), (*why).to_string()))
        .collect();
    let refused = kombiform_plan::refused(&changes, consent, |c| vetoed.contains_key(&c.address));
    Ok(Plan {
        format: PLAN_FORMAT,
        env: "local".into(),
        spec_hash: "8929436b98ba0d1c2e3f4a5b6c7d8e9f".into(),
        state_serial: 12,
        fingerprints: BTreeMap::new(),
        live_hashes: BTreeMap::new(),
        consented: kombiform_plan::consented(&changes, consent),
        changes,
        unchanged: diff.unchanged,
        refused,
        vetoed,
        adopt: vec![],
        forget: vec![],
        kept: vec![],
    })
}

fn text(plan: &Plan, verbose: bool) -> String {
    render::text_with(
        plan,
        TextOptions {
            color: false,
            verbose,
        },
    )
}

#[test]
fn plans_are_rendered_for_people() -> Result<()> {
    let mut produced = BTreeMap::new();

    // A first plan: one line per created resource, a summary per target and tenant.
    let mut desired = platform();
    for (slug, plan) in [("acme", "pro"), ("globex", "pro"), ("stark-lab", "free")] {
        desired.extend(tenant(slug, plan));
    }
    let first = plan_of(&desired, &[], &[], &Consent::default(), &[])?;
    let shown = text(&first, false);
    assert_eq!(
        shown.lines().filter(|l| l.starts_with("  + ")).count(),
        first.changes.len(),
        "one line per create, nothing more:\n{shown}"
    );
    assert!(!shown.contains("fields."), "{shown}");
    produced.insert("first-plan.txt".to_string(), shown);
    let one = plan_of(&tenant("acme", "pro"), &[], &[], &Consent::default(), &[])?;
    produced.insert("first-plan-verbose.txt".to_string(), text(&one, true));

    // 300 tenants: the summary stays a few lines.
    let mut many = platform();
    for i in 0..300 {
        many.extend(tenant(&format!("t{i:03}"), "pro"));
    }
    let big = text(&plan_of(&many, &[], &[], &Consent::default(), &[])?, false);
    let summary = &big[big.find("\nPlan:").context("summary")? + 1..];
    assert!(summary.lines().count() < 12, "{summary}");
    produced.insert("300-tenants-summary.txt".to_string(), summary.to_string());

    // Updates: changed attributes by name, PocketBase fields by field name; drift; a
    // replacement; a dropped field (destructive) consented by the spec.
    let live = tenant("acme", "pro");
    let mut desired = live.clone();
    desired[1].attrs.insert("max_users".into(), json!(50));
    let nodes = &mut desired[2].attrs;
    nodes.insert(
        "fields.text1314505826".into(),
        json!({"name": "hostname", "type": "text", "max": 255, "required": true}),
    );
    nodes.insert(
        "fields.bool1748787223".into(),
        json!({"name": "is_online", "type": "bool"}),
    );
    nodes.insert("listRule".into(), Value::Null);
    nodes.insert(
        "fields.json2001081480".into(),
        json!({"name": "labels", "type": "json", "maxSize": 0}),
    );
    desired[3].attrs.insert("type".into(), json!("base"));
    desired[3].replace_on = vec!["type".into()];
    let mut live = live;
    live[3].replace_on = vec!["type".into()];
    live[2].attrs.insert(
        "fields.number3009067695".into(),
        json!({"name": "cpu", "type": "number"}),
    );
    let applied_quota = json!({"tenant": "acme", "max_users": 30, "max_nodes": 50});
    let consent = Consent {
        spec_tenants: ["acme".to_string()].into(),
        ..Consent::default()
    };
    let updates = plan_of(
        &desired,
        &live,
        &[("postgres.quota.acme", applied_quota)],
        &consent,
        &[],
    )?;
    let shown = text(&updates, false);
    for needle in [
        "fields[hostname].max: 253 → 255",
        "fields[is_online].name: \"online\" → \"is_online\"",
        "fields[cpu]: {\"name\":\"cpu\",\"type\":\"number\"} → (absent)",
        "consent: the specs: tenant `acme` has `allowDestroy: true`",
    ] {
        assert!(shown.contains(needle), "{needle}:\n{shown}");
    }
    assert!(!shown.contains("1314505826"), "{shown}");
    produced.insert("updates.txt".to_string(), shown);

    // Blocked: a removed tenant (one consent argument for all of it), a global collection
    // (its address), a change no consent allows.
    let mut live = platform();
    live.extend(tenant("acme", "pro"));
    live.extend(tenant("stark-lab", "free"));
    live.push(data(res(
        "pocketbase.collection.audit",
        json!({"name": "audit"}),
        None,
    )));
    let mut desired = platform();
    desired.extend(tenant("acme", "pro"));
    desired[0].attrs.insert(
        "columns".into(),
        json!(["slug", "plan", "status", "region"]),
    );
    let blocked = plan_of(
        &desired,
        &live,
        &[],
        &Consent::default(),
        &[(
            "postgres.table.tenants",
            "a lossy column type change (text to integer)",
        )],
    )?;
    let shown = text(&blocked, false);
    assert!(
        shown.contains(
            "--allow-destroy pocketbase.collection.audit --allow-destroy tenant:stark-lab\n"
        ),
        "{shown}"
    );
    produced.insert("blocked.txt".to_string(), shown);
    produced.insert("blocked.md".to_string(), render::markdown(&blocked));
    let without_veto = plan_of(&desired, &live, &[], &Consent::default(), &[])?;
    assert_eq!(
        kombiform_plan::consent_arguments(&without_veto),
        vec![
            "pocketbase.collection.audit".to_string(),
            "tenant:stark-lab".to_string()
        ]
    );

    // Consent from the command line and from recorded state, said where it came from.
    let consent = Consent {
        allowed: [
            "tenant:stark-lab".to_string(),
            "pocketbase.collection.audit".to_string(),
        ]
        .into(),
        recorded_tenants: ["globex".to_string()].into(),
        ..Consent::default()
    };
    let mut live2 = live.clone();
    live2.extend(tenant("globex", "pro"));
    let consented = plan_of(&desired[..], &live2, &[], &consent, &[])?;
    let shown = text(&consented, false);
    assert!(
        shown.contains("consent: recorded state: tenant `globex`"),
        "{shown}"
    );
    assert!(
        shown.contains("consent: --allow-destroy tenant:stark-lab"),
        "{shown}"
    );
    assert!(!shown.contains("Blocked"), "{shown}");
    produced.insert("consented.txt".to_string(), shown);

    // The JSON plan keeps everything the text leaves out.
    let json_plan: Value = serde_json::from_str(&render::json(&first))?;
    let create = &json_plan["changes"][0];
    assert!(
        create["attrs"][0].get("before").is_some_and(Value::is_null),
        "{create}"
    );
    let nodes = json_plan["changes"]
        .as_array()
        .and_then(|c| {
            c.iter()
                .find(|c| c["address"] == "pocketbase.collection.t_acme_nodes")
        })
        .context("nodes")?;
    assert!(nodes["attrs"].as_array().is_some_and(|a| a
        .iter()
        .any(|a| a["name"] == "fields.text1314505826" && a["after"]["max"] == 253)));
    check_pinned("plans", &produced)
}
