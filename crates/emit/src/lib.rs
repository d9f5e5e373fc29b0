//! Emitters: the model → the files under `generated/`, byte for byte deterministic.
//!
//! One module per target. Each adds files for one environment to a [`Files`] set, keyed
//! by path relative to the output directory (`prod/kong/kong.yaml`). No emitter reads the
//! clock, the environment or the disk, and no emitter writes a secret: secrets stay
//! references (Key Vault names, environment variable names, Kong vault references).
//! Writing the files is the CLI's job.
//!
//! [`targets`] says what each managed system should hold, as resources with addresses and
//! dependencies: their graph is checked for cycles before anything is emitted ([`compile`]),
//! printed by `kombiform graph`, and planned by the engine.
//!
//! Not here: reading specs or validating them (`kombiform_spec`), live state or applying
//! (`kombiform_engine`).

use std::collections::BTreeMap;

use kombiform_model::Model;

pub mod azure;
pub mod bicep;
pub mod kong;
pub mod pocketbase;
pub mod services;
pub mod sql;
pub mod targets;

/// Generated files: relative path → content.
pub type Files = BTreeMap<String, String>;

/// Builds every file for every environment.
pub fn build(model: &Model) -> Files {
    let mut files = Files::new();
    for env in model.envs() {
        sql::emit(env, &mut files);
        services::emit(env, &mut files);
        pocketbase::emit(env, &mut files);
        kong::emit(env, &mut files);
        bicep::emit(env, &mut files);
    }
    files
}

/// Every file for every environment, after checking the graph of each environment for
/// dependency cycles and its Kong routes for shadowing (Kong 3.9's ranking): `Err` names the
/// environment and the resources of the cycle, or the routes and a request both match.
pub fn compile(model: &Model) -> Result<Files, String> {
    for env in model.envs() {
        if let Err(cycle) = targets::graph(env).order() {
            return Err(format!(
                "resources of environment `{}` depend on each other: {cycle}",
                env.name(),
            ));
        }
        if let Some(shadow) = kong::shadowing(env).first() {
            return Err(format!(
                "the Kong config of environment `{}` has routes that shadow each other: {shadow}",
                env.name(),
            ));
        }
    }
    Ok(build(model))
}
