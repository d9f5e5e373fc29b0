//! Kong configs checked by the project's Kong schema oracle: every generated file, as the
//! YAML text kombiform writes, goes through `kombiform_test_support::kong_oracle` (decK's
//! schema, Kong's plugin schemas, the OSS DB-less rules, references) and through our own
//! typed checks (`kong_check`). Nothing outside the repository is needed; CI runs the
//! outside validator as well (`scripts/validate-kong.sh`).

use anyhow::{bail, Context, Result};
use kombiform_emit::kong;
use kombiform_model::{KongEdition, Model, SecretRef};
use kombiform_test_support::kong_oracle::{self, Options};
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

/// Builds every Kong file of `model`, runs the oracle on its text and our checks on its
/// document; returns how many files were checked.
fn validate_all(model: &Model) -> Result<usize> {
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
        let errors = kong_oracle::check_yaml(text, &Options::for_edition(edition))?;
        if !errors.is_empty() {
            bail!("the Kong oracle rejected {rel}:\n{}", errors.join("\n"));
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
    // One per tenant, and the anonymous consumer of refused tokens.
    assert_eq!(consumers, 201);
    assert_eq!(validate_all(&enterprise(m))?, 2);
    Ok(())
}

#[test]
fn the_oracle_is_not_a_rubber_stamp() -> Result<()> {
    // Files our emitter would never write: policy cluster in DB-less, an unknown plugin
    // option, an Enterprise plugin in an OSS file.
    let m = example()?;
    let prod = m.env("prod").context("prod")?;
    let text = kong::render(prod);
    let oss = Options::for_edition(KongEdition::Oss);
    assert_eq!(kong_oracle::check_yaml(&text, &oss)?, Vec::<String>::new());
    let cluster = text.replacen("policy: \"redis\"", "policy: \"cluster\"", 1);
    assert_ne!(cluster, text, "the example has a redis rate limit");
    let errors = kong_oracle::check_yaml(&cluster, &oss)?;
    assert!(
        errors
            .iter()
            .any(|e| e.contains("'cluster' is not allowed")),
        "{errors:?}"
    );
    let enterprise_doc = kong::render(enterprise(m.clone()).env("prod").context("prod")?);
    let errors = kong_oracle::check_yaml(&enterprise_doc, &oss)?;
    assert!(
        errors
            .iter()
            .any(|e| e.contains("'openid-connect' is not bundled")),
        "{errors:?}"
    );
    Ok(())
}

#[test]
fn every_committed_kong_file_passes_the_oracle() -> Result<()> {
    // What scripts/validate-kong.sh runs the outside validator on in CI: the golden cases'
    // Kong files (the fixtures, not the editable generated/).
    let mut checked = 0;
    for case in std::fs::read_dir(kombiform_test_support::golden_dir())? {
        let kong_dir = case?.path().join("expected");
        for env in std::fs::read_dir(&kong_dir).into_iter().flatten() {
            let dir = env?.path().join("kong");
            for file in std::fs::read_dir(&dir).into_iter().flatten() {
                let path = file?.path();
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                let edition = match name {
                    "kong.yaml" => KongEdition::Oss,
                    "kong.enterprise.yaml" => KongEdition::Enterprise,
                    other => bail!("{}: unknown Kong file {other}", path.display()),
                };
                let errors = kong_oracle::check_file(&path, &Options::for_edition(edition))?;
                assert!(
                    errors.is_empty(),
                    "{}:\n{}",
                    path.display(),
                    errors.join("\n")
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 4, "only {checked} golden Kong files");
    Ok(())
}
