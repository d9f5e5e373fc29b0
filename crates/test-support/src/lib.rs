//! Test support for every crate of the workspace (not published): real servers on loopback,
//! the fixtures tests read, synthetic specs for scale tests and benchmarks, and the typed
//! checks of generated Kong configs.
//!
//! - [`azurite`]: the real Blob Storage emulator (HTTPS, bearer tokens), for the Blob state
//!   backend.
//! - [`pocketbase`], [`postgres`]: real servers, each on a free port with its own temp dir,
//!   stopped and removed on drop. Nothing here fakes a server; a missing dependency is an
//!   error naming the command that installs it (`scripts/install-test-deps.sh`).
//! - [`example_model`] and friends: the example specs as a fixture
//!   (`tests/fixtures/example-specs/`, a frozen copy), never the editable `specs/` of the
//!   working tree.
//! - [`synthetic`]: the example platform with N generated tenants.
//! - [`kong_check`]: typed checks of a generated Kong document.
//! - [`kong_standin`]: the gateway as revisions of Kong replicas loading a config file from a
//!   share (the delivery path's stand-in).
//! - [`kong_jwt`]: Kong's `jwt` plugin as it selects a credential and verifies a token.
//! - [`kong_oracle`]: the Kong schema oracle: decK's and Kong's published schemas (test data
//!   in `tests/fixtures/kong/`) and Kong OSS 3.9's DB-less rules, nothing outside the
//!   repository.
//! - [`http`]: the blocking HTTP client tests talk to those servers with (reqwest).
//! - [`tls`]: certificate authorities made at test time, for servers that speak TLS.
//! - [`proxy`]: a TCP proxy between a client and a real server that injects the faults of a
//!   real network (answers held back, connections reset, connections refused).
//!
//! Depends on the model, the spec loader and `kombiform-sys` only, so that every other
//! crate's tests can use it without a dependency cycle. Not a mock layer and not part of any shipped binary.

pub mod azurite;
pub mod http;
pub mod kong_check;
pub mod kong_jwt;
pub mod kong_oracle;
pub mod kong_standin;
pub mod pocketbase;
pub mod postgres;
mod process;
pub mod proxy;
pub mod synthetic;
pub mod tls;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use kombiform_model::{KongEdition, Model, SecretRef};
use kombiform_spec::load::{load, Input};

pub use process::free_port;

/// The workspace's root directory (where `Cargo.toml` with `[workspace]` is).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `tests/golden/`: the golden cases, one directory each.
pub fn golden_dir() -> PathBuf {
    workspace_root().join("tests/golden")
}

/// The example specs as a fixture: a frozen copy of the bundled specs, so that editing
/// `specs/` never breaks a test that is not about `specs/`.
pub fn example_specs_dir() -> PathBuf {
    workspace_root().join("tests/fixtures/example-specs")
}

/// Every `*.yaml` file below `dir` (except `schema/`), sorted by path, as loader inputs.
pub fn read_spec_dir(dir: &Path) -> Result<Vec<Input>> {
    let mut paths = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("listing {}", d.display()))? {
            let path = entry?.path();
            if path.is_dir() && !path.ends_with("schema") {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml") {
                paths.push(path);
            }
        }
    }
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let text =
                std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
            Ok(Input {
                path: p.display().to_string(),
                text,
            })
        })
        .collect()
}

/// The model of `inputs`, or an error with the rendered diagnostics.
pub fn model_from(inputs: Vec<Input>) -> Result<Model> {
    let loaded = load(inputs);
    match loaded.model {
        Some(m) if !loaded.has_errors() => Ok(m),
        _ => bail!("the specs are invalid:\n{}", loaded.render()),
    }
}

/// The example specs' inputs (the fixture, see [`example_specs_dir`]).
pub fn example_inputs() -> Vec<Input> {
    match read_spec_dir(&example_specs_dir()) {
        Ok(inputs) => inputs,
        Err(e) => panic!("reading the example fixture: {e:#}"),
    }
}

/// The example model. Panics (in a test) when the fixture is unreadable or invalid.
pub fn example_model() -> Model {
    match model_from(example_inputs()) {
        Ok(m) => m,
        Err(e) => panic!("{e:#}"),
    }
}

/// The example model with every environment switched to Kong Enterprise.
pub fn enterprise_model() -> Model {
    let mut m = example_model();
    for p in &mut m.platforms {
        p.kong.edition = KongEdition::Enterprise;
        p.kong.session_secret = Some(SecretRef::KeyVault("kong-session-secret".into()));
        p.kong.authorization_code = Some(kombiform_model::AuthorizationCode {
            client_id: "284713422512963586".into(),
            client_secret: SecretRef::KeyVault("kong-oidc-client-secret".into()),
            redirect_uri: format!("https://api.{}/auth/callback", p.domain),
            logout_redirect_uri: format!("https://app.{}/", p.domain),
        });
    }
    m
}
