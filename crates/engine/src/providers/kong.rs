//! The Kong provider: delivers an environment's declarative config to every gateway replica
//! at once, with rollback, and reads back what serves traffic.
//!
//! # Design: one immutable file per config, one revision per file
//! Kong runs DB-less on Container Apps with 2–10 replicas; its Admin API stays on loopback
//! (an Admin API `POST /config` would reach one replica behind the ingress, and must never be
//! reachable unauthenticated). Instead, each config is a file named by its content
//! (`kong-<sha256 prefix>.yaml`, [`kombiform_emit::targets::kong::file_name`]) on storage the
//! gateway mounts, and the gateway's app gets a new revision whose `KONG_DECLARATIVE_CONFIG`
//! names that file ([`Runtime::activate`]). Kong reads the file once at start and refuses to
//! start on a config it rejects, so:
//! - every replica of a revision serves the same bytes (the file never changes under its
//!   name; its replicas report `configuration_hash` = the MD5 of those bytes);
//! - a bad config never reaches traffic: the new revision never becomes ready, the previous
//!   one keeps all traffic, and apply fails naming the refused file;
//! - rollback is one apply of the previous specs: its file is still there (files are kept),
//!   the same name is activated again in a new revision;
//! - drift shows in plan: [`Client::read`] reports the config the serving revision names,
//!   recomputes its SHA-256 from the stored bytes (a file edited in place no longer matches
//!   its name), and marks the config mixed when replicas disagree;
//! - size is no issue: a 13 MB file (10,000 tenants) is a file, not a request body (no
//!   `nginx_admin_client_max_body_size`).
//!
//! Next to each config the provider stores a manifest (the Kong resources of that config), so
//! that a plan can show which entities and token keys a change adds or removes without parsing
//! 13 MB of YAML.
//!
//! Runtimes: [`DirRuntime`] (a directory a local gateway mounts; `KOMBIFORM_KONG_DIR`) and,
//! on Azure, the gateway's Container App with an Azure Files share (not in this module yet).
//! Not here: what the config says (`kombiform_emit::kong`), or which resources it has
//! (`kombiform_emit::targets::kong`).

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use md5::{Digest as _, Md5};
use serde::{Deserialize, Serialize};

use super::{Client, LiveRead, Registration};
use kombiform_emit::targets::kong::{self as target, CONFIG};
use kombiform_model::Env;
use kombiform_plan::{Change, Resource};

/// The registered provider.
pub const REGISTRATION: Registration = Registration {
    target: &target::Kong,
    connect: connect_env,
    available,
};

/// The variable naming the directory a local gateway mounts its config from.
pub const DIR_ENV: &str = "KOMBIFORM_KONG_DIR";

/// Whether `env` has a gateway runtime kombiform delivers to: a local directory when
/// [`DIR_ENV`] is set.
fn available(_env: Env<'_>) -> bool {
    std::env::var_os(DIR_ENV).is_some_and(|v| !v.is_empty())
}

fn connect_env(env: Env<'_>) -> Result<Box<dyn Client>> {
    let dir = std::env::var_os(DIR_ENV)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| anyhow!("{DIR_ENV} is not set"))?;
    let runtime = DirRuntime::new(PathBuf::from(dir))?;
    Ok(Box::new(KongClient::new(env, Box::new(runtime))))
}

/// Where the gateway runs, as far as delivery needs it.
pub trait Runtime: Send + Sync {
    /// Stores `bytes` under `name`. Idempotent: the same bytes are not written again; other
    /// bytes under the name (a file edited in place behind kombiform's back) are replaced,
    /// so a content-addressed name always holds its content after apply.
    fn put(&self, name: &str, bytes: &[u8]) -> Result<()>;
    /// The bytes stored under `name`, if any.
    fn get(&self, name: &str) -> Result<Option<Vec<u8>>>;
    /// Starts a revision of the gateway serving the config file `name` and returns once it
    /// takes all traffic; on failure the previous revision keeps serving.
    fn activate(&self, name: &str) -> Result<()>;
    /// What serves traffic now.
    fn serving(&self) -> Result<Serving>;
}

/// The serving revision.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Serving {
    /// The config file it names, if any revision serves.
    pub config: Option<String>,
    /// The `configuration_hash` (Kong's `/status`) of each of its replicas, where known.
    pub replicas: Vec<String>,
}

/// A gateway's client: the rendered config of the specs and where to deliver it.
pub struct KongClient {
    runtime: Box<dyn Runtime>,
    text: String,
    desired: Vec<Resource>,
}

/// What is stored next to each config: its Kong resources.
#[derive(Serialize, Deserialize)]
struct Manifest {
    resources: Vec<Resource>,
}

/// The manifest's name for a config file.
pub fn manifest_name(config: &str) -> String {
    format!("{}.manifest.json", config.trim_end_matches(".yaml"))
}

/// Kong's `configuration_hash` of a config loaded from a file: the MD5 of its bytes, hex
/// (kong@3.9.3 `kong/db/declarative/init.lua` `unserialize`).
pub fn kong_hash(bytes: &[u8]) -> String {
    kombiform_model::hex(&Md5::digest(bytes))
}

impl KongClient {
    /// A client delivering the config of `env`'s specs to `runtime`.
    pub fn new(env: Env<'_>, runtime: Box<dyn Runtime>) -> KongClient {
        let text = kombiform_emit::kong::render(env);
        let desired = target::desired_with(env, &text);
        KongClient::with_config(text, desired, runtime)
    }

    /// A client delivering `text` (whose resources are `desired`) to `runtime`.
    pub fn with_config(
        text: String,
        desired: Vec<Resource>,
        runtime: Box<dyn Runtime>,
    ) -> KongClient {
        KongClient {
            runtime,
            text,
            desired,
        }
    }

    fn file(&self) -> String {
        target::file_name(&target::sha256_hex(self.text.as_bytes()))
    }
}

impl Client for KongClient {
    fn read(&self) -> Result<LiveRead> {
        let serving = self.runtime.serving()?;
        let Some(config) = &serving.config else {
            return Ok(LiveRead {
                resources: Vec::new(),
                requests: 1,
            });
        };
        let manifest = self
            .runtime
            .get(&manifest_name(config))?
            .with_context(|| format!("the manifest of the serving config {config} is missing"))?;
        let manifest: Manifest = serde_json::from_slice(&manifest)
            .with_context(|| format!("reading the manifest of {config}"))?;
        let bytes = self
            .runtime
            .get(config)?
            .with_context(|| format!("the serving config {config} is missing from storage"))?;
        let mut resources = manifest.resources;
        for r in resources.iter_mut().filter(|r| r.address == CONFIG) {
            let sha = target::sha256_hex(&bytes);
            let expected = kong_hash(&bytes);
            let agree = serving.replicas.iter().all(|h| *h == expected);
            r.attrs.insert("file".into(), config.clone().into());
            r.attrs.insert("bytes".into(), bytes.len().into());
            // A file changed in place, or replicas on another config, is drift.
            let sha = if agree { sha } else { format!("mixed:{sha}") };
            r.attrs.insert("sha256".into(), sha.into());
        }
        Ok(LiveRead {
            resources,
            requests: 3,
        })
    }

    fn batched(&self) -> bool {
        true
    }

    fn apply(&self, changes: &[&Change]) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let file = self.file();
        let manifest = serde_json::to_vec(&Manifest {
            resources: self.desired.clone(),
        })?;
        self.runtime.put(&manifest_name(&file), &manifest)?;
        self.runtime.put(&file, self.text.as_bytes())?;
        self.runtime
            .activate(&file)
            .with_context(|| format!("activating Kong config {file}"))?;
        let serving = self.runtime.serving()?;
        let expected = kong_hash(self.text.as_bytes());
        if serving.config.as_deref() != Some(file.as_str()) {
            bail!(
                "Kong serves {:?} after activating {file}",
                serving.config.as_deref().unwrap_or("nothing")
            );
        }
        if let Some(other) = serving.replicas.iter().find(|h| **h != expected) {
            bail!("a Kong replica serves config {other}, not {expected} ({file})");
        }
        Ok(())
    }
}

/// A directory a local gateway mounts: `configs/<name>` holds every config and manifest,
/// `active` names the config to serve (written atomically). A local gateway picks it up on
/// restart; there are no replicas to ask.
pub struct DirRuntime {
    dir: PathBuf,
}

impl DirRuntime {
    /// The runtime of `dir`, created if missing.
    pub fn new(dir: PathBuf) -> Result<DirRuntime> {
        std::fs::create_dir_all(dir.join("configs"))
            .with_context(|| format!("creating {}", dir.display()))?;
        Ok(DirRuntime { dir })
    }

    fn path(&self, name: &str) -> Result<PathBuf> {
        if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
            bail!("`{name}` is not a config file name");
        }
        Ok(self.dir.join("configs").join(name))
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {}", path.display()))
}

impl Runtime for DirRuntime {
    fn put(&self, name: &str, bytes: &[u8]) -> Result<()> {
        if self.get(name)?.as_deref() == Some(bytes) {
            return Ok(());
        }
        write_atomically(&self.path(name)?, bytes)
    }

    fn get(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let path = self.path(name)?;
        match std::fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    fn activate(&self, name: &str) -> Result<()> {
        if !self.path(name)?.exists() {
            bail!("no stored config {name}");
        }
        write_atomically(&self.dir.join("active"), name.as_bytes())
    }

    fn serving(&self) -> Result<Serving> {
        let path = self.dir.join("active");
        let config = match std::fs::read_to_string(&path) {
            Ok(s) => Some(s.trim().to_string()).filter(|s| !s.is_empty()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        Ok(Serving {
            config,
            replicas: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kong_hash_is_md5_hex() {
        assert_eq!(kong_hash(b""), "d41d8cd98f00b204e9800998ecf8427e");
    }

    #[test]
    fn manifest_names_follow_their_config() {
        assert_eq!(manifest_name("kong-0123.yaml"), "kong-0123.manifest.json");
    }

    #[test]
    fn the_directory_runtime_refuses_paths() {
        let dir = tempfile::tempdir().unwrap();
        let r = DirRuntime::new(dir.path().to_path_buf()).unwrap();
        assert!(r.put("../x", b"").is_err());
        assert!(r.activate("kong-missing.yaml").is_err());
        r.put("kong-a.yaml", b"a").unwrap();
        r.put("kong-a.yaml", b"a").unwrap();
        assert_eq!(r.get("kong-a.yaml").unwrap().unwrap(), b"a");
        // Bytes edited in place are put back.
        std::fs::write(dir.path().join("configs/kong-a.yaml"), b"b").unwrap();
        r.put("kong-a.yaml", b"a").unwrap();
        assert_eq!(r.get("kong-a.yaml").unwrap().unwrap(), b"a");
        r.activate("kong-a.yaml").unwrap();
        assert_eq!(r.serving().unwrap().config.as_deref(), Some("kong-a.yaml"));
    }
}
