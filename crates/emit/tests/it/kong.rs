//! Kong configs checked by the external oracle: every generated file goes through
//! `shared/tools/kong-validate` (decK's schema, Kong's plugin schemas, the OSS DB-less rules)
//! and through our own typed checks (`emit::kong::check`).
//!
//! Needs python3 with PyYAML and jsonschema; a missing one fails loudly with the fix.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};
use kombiform_emit::kong;
use kombiform_model::{KongEdition, Model, SecretRef};
use kombiform_test_support::synthetic::{fleet, Fleet};

fn example() -> Result<Model> {
    Ok(kombiform_test_support::example_model())
}

fn enterprise(mut m: Model) -> Model {
    for p in &mut m.platforms {
        p.kong.edition = KongEdition::Enterprise;
        p.kong.session_secret = Some(SecretRef::KeyVault("kong-session-secret".into()));
    }
    m
}

/// `n` tenants across every plan, every 50th suspended.
fn synthetic(m: Model, n: usize) -> Result<Model> {
    let f = Fleet {
        tenants: n,
        suspended_every: Some(50),
        ..Fleet::default()
    };
    Ok(fleet(m, f))
}

fn validator() -> Result<PathBuf> {
    let shared = std::env::var_os("SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| kombiform_test_support::workspace_root().join("../shared"));
    let v = shared.join("tools/kong-validate");
    if !v.is_file() {
        bail!(
            "{} not found: set SHARED to the directory holding tools/kong-validate",
            v.display()
        );
    }
    let probe = Command::new("python3")
        .args(["-c", "import yaml, jsonschema"])
        .output()
        .context("running python3 (install python3)")?;
    if !probe.status.success() {
        bail!(
            "python3 lacks PyYAML or jsonschema: run `pip install pyyaml jsonschema` \
             (or scripts/install-test-deps.sh)\n{}",
            String::from_utf8_lossy(&probe.stderr)
        );
    }
    Ok(v)
}

/// The flags each edition's file must pass with. The validator has no schema for the
/// Enterprise `openid-connect` plugin, so it is allowed by name (our typed check covers it).
fn flags(edition: KongEdition) -> &'static [&'static str] {
    match edition {
        KongEdition::Oss => &["--strict-plugins", "--oss-dbless"],
        KongEdition::Enterprise => &["--strict-plugins", "--allow-plugin", "openid-connect"],
    }
}

/// Builds every Kong file of `model` into a temp dir, runs the validator and our checks on
/// each; returns how many files were checked.
fn validate_all(model: &Model) -> Result<usize> {
    let v = validator()?;
    let dir = tempfile::tempdir()?;
    let files = kombiform_emit::build(model);
    let mut n = 0;
    for env in model.envs() {
        let rel = kong::path(env);
        let text = files
            .get(&rel)
            .with_context(|| format!("build made no {rel}"))?;
        let edition = env.platform.kong.edition;
        let problems = kombiform_test_support::kong_check::check(&kong::document(env), edition);
        if !problems.is_empty() {
            bail!("{rel}: our checks failed:\n{}", problems.join("\n"));
        }
        let path = dir.path().join(rel.replace('/', "_"));
        std::fs::write(&path, text)?;
        let out = Command::new("python3")
            .arg(&v)
            .arg(&path)
            .args(flags(edition))
            .output()
            .context("running kong-validate")?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() || !stdout.starts_with("ACCEPTED") {
            bail!(
                "kong-validate rejected {rel} ({}):\n{stdout}{}",
                flags(edition).join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        n += 1;
    }
    Ok(n)
}

#[test]
fn example_specs_pass_kong_validate() -> Result<()> {
    assert_eq!(validate_all(&example()?)?, 2);
    Ok(())
}

#[test]
fn enterprise_example_passes_kong_validate() -> Result<()> {
    assert_eq!(validate_all(&enterprise(example()?))?, 2);
    Ok(())
}

#[test]
fn two_hundred_tenants_pass_kong_validate() -> Result<()> {
    let m = synthetic(example()?, 200)?;
    assert_eq!(validate_all(&m)?, 2);
    let prod = m.env("prod").context("prod")?;
    let doc = kong::document(prod);
    let consumers = doc["consumers"].as_array().map_or(0, Vec::len);
    assert_eq!(consumers, 200);
    assert_eq!(validate_all(&enterprise(m))?, 2);
    Ok(())
}

#[test]
fn the_validator_is_not_a_rubber_stamp() -> Result<()> {
    // A file our emitter would never write: policy cluster in DB-less, a plain Redis password.
    let v = validator()?;
    let m = example()?;
    let prod = m.env("prod").context("prod")?;
    let text = kong::render(prod).replacen("policy: \"redis\"", "policy: \"cluster\"", 1);
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("kong.yaml");
    std::fs::write(&path, text)?;
    let out = Command::new("python3")
        .arg(&v)
        .arg(&path)
        .args(flags(KongEdition::Oss))
        .output()?;
    assert!(
        !out.status.success(),
        "kong-validate accepted policy cluster"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("'cluster' is not allowed"));
    Ok(())
}
