//! A Kong stand-in for the delivery path: the gateway's Container App as revisions of DB-less
//! Kong replicas that each load a config file from a mounted share.
//!
//! What it follows (Kong 3.9 and Container Apps' documented behaviour, for what the delivery
//! path uses):
//! - a replica starts from `KONG_DECLARATIVE_CONFIG` (a file of the share) and refuses to
//!   start on a config Kong would reject ([`KongReplica::start`]: YAML that does not parse, a
//!   document the schema oracle refuses, [`crate::kong_oracle`], which mirrors what
//!   `kong-validate` refuses, or one our typed checks refuse, [`crate::kong_check`]);
//! - a running replica answers `GET /status` with `{"configuration_hash": md5(file bytes),
//!   ...}` (kong@3.9.3 `kong/api/routes/health.lua`: DB-less mode reports the hash and no
//!   `database`), `GET /status/ready` with 200 once its config is loaded, and anything else
//!   with Kong's 404 (`{"message":"Not found"}`);
//! - single-revision mode ([`GatewayApp::deploy`]): a new revision starts its replicas; only
//!   when all of them are ready does it take all traffic and the previous revision stop; a
//!   revision whose replicas fail never takes traffic and the previous one keeps serving;
//! - an operator can change the running revision behind kombiform's back
//!   ([`GatewayApp::deploy_unchecked`]) or the share's bytes ([`GatewayApp::share`]).
//!
//! Not a Kong: it proxies nothing. Replicas are threads on loopback, stopped on drop.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use kombiform_model::KongEdition;

use crate::{kong_check, kong_oracle};

/// One running Kong replica.
pub struct KongReplica {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl KongReplica {
    /// Starts a replica from a config file's bytes; `Err` says why Kong would not start.
    pub fn start(bytes: &[u8], edition: KongEdition) -> Result<KongReplica> {
        load(bytes, edition)?;
        let hash = md5_hex(bytes);
        let listener = TcpListener::bind("127.0.0.1:0").context("binding a replica")?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || serve(listener, &hash, &flag));
        Ok(KongReplica {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// Where its status listener is.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its `configuration_hash`, asked over HTTP like any client of `/status` would.
    pub fn configuration_hash(&self) -> Result<String> {
        let body = get(self.addr, "/status")?;
        let v: serde_json::Value = serde_json::from_str(&body)?;
        v["configuration_hash"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("no configuration_hash in {body}"))
    }
}

impl Drop for KongReplica {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Loads a config the way Kong's declarative loader would, refusing what it refuses.
fn load(bytes: &[u8], edition: KongEdition) -> Result<()> {
    let text = std::str::from_utf8(bytes).context("the config is not UTF-8")?;
    let (docs, diags) = kombiform_spec::yaml::parse(text, 0);
    if let Some(d) = diags.first() {
        bail!("declarative config is invalid: {}", d.message);
    }
    let [doc] = docs.as_slice() else {
        bail!("declarative config is invalid: expected one document");
    };
    let mut diags = Vec::new();
    let json = doc.root.to_json(0, &mut diags);
    let mut problems = kong_oracle::check(&json, &kong_oracle::Options::for_edition(edition))?;
    problems.extend(kong_check::check(&json, edition));
    if let Some(p) = problems.first() {
        bail!("declarative config is invalid: {p}");
    }
    Ok(())
}

fn serve(listener: TcpListener, hash: &str, stop: &AtomicBool) {
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(mut stream) = stream else { continue };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let mut line = String::new();
        let mut reader = BufReader::new(&stream);
        if reader.read_line(&mut line).is_err() {
            continue;
        }
        // Drain the headers.
        let mut header = String::new();
        while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
            header.clear();
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/");
        let (status, body) = match path {
            "/status" => (
                "200 OK",
                format!(
                    r#"{{"configuration_hash":"{hash}","memory":{{}},"server":{{"connections_accepted":1}}}}"#
                ),
            ),
            "/status/ready" => ("200 OK", r#"{"message":"ready"}"#.to_string()),
            _ => ("404 Not Found", r#"{"message":"Not found"}"#.to_string()),
        };
        let _ = write!(
            stream,
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    }
}

fn get(addr: SocketAddr, path: &str) -> Result<String> {
    let url = format!("http://{addr}{path}");
    crate::http::client(Duration::from_secs(10))?
        .get(&url)
        .send()
        .with_context(|| format!("GET {url}"))?
        .text()
        .with_context(|| format!("reading {url}"))
}

/// MD5, hex: Kong's `configuration_hash` of a config loaded from a file.
pub fn md5_hex(bytes: &[u8]) -> String {
    use md5::{Digest, Md5};
    kombiform_model::hex(&Md5::digest(bytes))
}

/// One revision of the gateway app.
struct Revision {
    name: String,
    config: String,
    replicas: Vec<KongReplica>,
}

/// The gateway's Container App in single-revision mode, with its mounted share.
pub struct GatewayApp {
    share: tempfile::TempDir,
    edition: KongEdition,
    replicas: usize,
    state: Mutex<AppState>,
}

#[derive(Default)]
struct AppState {
    active: Option<Revision>,
    revisions: u32,
    failed: Vec<String>,
}

impl GatewayApp {
    /// An app of `replicas` replicas (at least 1), no revision yet.
    pub fn new(replicas: usize, edition: KongEdition) -> Result<GatewayApp> {
        Ok(GatewayApp {
            share: tempfile::tempdir().context("making the share")?,
            edition,
            replicas: replicas.max(1),
            state: Mutex::new(AppState::default()),
        })
    }

    /// The mounted share's directory.
    pub fn share(&self) -> &Path {
        self.share.path()
    }

    fn file(&self, name: &str) -> Result<PathBuf> {
        if name.is_empty() || name.contains(['/', '\\']) {
            bail!("`{name}` is not a file of the share");
        }
        Ok(self.share.path().join(name))
    }

    /// A new revision serving `config` (a file of the share); it takes all traffic only once
    /// every replica started. `Err` when a replica refused it: the previous revision keeps
    /// serving.
    pub fn deploy(&self, config: &str) -> Result<()> {
        let bytes = std::fs::read(self.file(config)?)
            .with_context(|| format!("the share has no {config}"))?;
        let mut state = self.lock();
        state.revisions += 1;
        let name = format!("kong--r{}", state.revisions);
        let mut replicas = Vec::new();
        for _ in 0..self.replicas {
            match KongReplica::start(&bytes, self.edition) {
                Ok(r) => replicas.push(r),
                Err(e) => {
                    state.failed.push(name.clone());
                    bail!("revision {name} failed: its replicas do not start: {e:#}");
                }
            }
        }
        state.active = Some(Revision {
            name,
            config: config.to_string(),
            replicas,
        });
        Ok(())
    }

    /// A revision with `bytes` as its config, made outside kombiform (no file, no checks):
    /// drift.
    pub fn deploy_unchecked(&self, config: &str, bytes: &[u8]) -> Result<()> {
        std::fs::write(self.file(config)?, bytes)?;
        self.deploy(config)
    }

    /// The serving revision's name and config file.
    pub fn serving(&self) -> Option<(String, String)> {
        self.lock()
            .active
            .as_ref()
            .map(|r| (r.name.clone(), r.config.clone()))
    }

    /// The `configuration_hash` every replica of the serving revision reports over HTTP.
    pub fn replica_hashes(&self) -> Result<Vec<String>> {
        let state = self.lock();
        state
            .active
            .iter()
            .flat_map(|r| &r.replicas)
            .map(KongReplica::configuration_hash)
            .collect()
    }

    /// Revisions that failed to start.
    pub fn failed(&self) -> Vec<String> {
        self.lock().failed.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AppState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "_format_version: \"3.0\"\nservices:\n  - name: \"a\"\n    protocol: \"http\"\n    host: \"a\"\n    port: 80\n";

    #[test]
    fn a_replica_reports_the_md5_of_its_file() {
        let r = KongReplica::start(GOOD.as_bytes(), KongEdition::Oss).unwrap();
        assert_eq!(r.configuration_hash().unwrap(), md5_hex(GOOD.as_bytes()));
        assert!(get(r.addr(), "/status/ready").unwrap().contains("ready"));
    }

    #[test]
    fn kong_refuses_what_the_checks_refuse() {
        let bad = GOOD.replace("protocol: \"http\"", "protocol: \"htps\"");
        assert!(KongReplica::start(bad.as_bytes(), KongEdition::Oss).is_err());
        assert!(KongReplica::start(b"services: [", KongEdition::Oss).is_err());
        // What only the schema oracle knows: decK's schema refuses an unknown route field.
        let unknown = GOOD.replace("    port: 80\n", "    port: 80\n    colour: \"blue\"\n");
        let e = KongReplica::start(unknown.as_bytes(), KongEdition::Oss)
            .err()
            .unwrap();
        assert!(format!("{e:#}").contains("[deck-schema]"), "{e:#}");
    }

    #[test]
    fn a_failed_revision_never_takes_traffic() {
        let app = GatewayApp::new(2, KongEdition::Oss).unwrap();
        std::fs::write(app.share().join("good.yaml"), GOOD).unwrap();
        app.deploy("good.yaml").unwrap();
        assert!(app
            .deploy_unchecked("bad.yaml", b"_format_version: \"2.1\"\n")
            .is_err());
        assert_eq!(app.serving().map(|s| s.1).as_deref(), Some("good.yaml"));
        assert_eq!(
            app.replica_hashes().unwrap(),
            vec![md5_hex(GOOD.as_bytes()); 2]
        );
        assert_eq!(app.failed(), ["kong--r2"]);
    }
}
