//! A real Azurite (Microsoft's Blob Storage emulator, npm package `azurite`) for tests: the
//! Blob service only, on a free loopback port, over HTTPS with a certificate of a test CA,
//! with bearer tokens checked (`--oauth basic`: issuer, audience and lifetime; Azurite checks
//! no signature), its data in a temp dir, stopped on drop.
//!
//! Blob Storage's real lease rules apply (finite leases of 15 to 60 seconds, acquire, renew,
//! release, break) because it is the real emulator. Not a fake: nothing here answers a
//! request itself.

use std::fs;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::process::{self, Startup, LOOPBACK, PORT_ATTEMPTS};
use crate::tls::TestCa;

/// The account Azurite serves (its well-known development account).
pub const ACCOUNT: &str = "devstoreaccount1";

/// A running Azurite Blob service.
pub struct Azurite {
    child: Child,
    port: u16,
    ca_pem: String,
    dir: tempfile::TempDir,
}

/// `azurite-blob`, or a loud error naming the command that installs it.
fn executable() -> Result<PathBuf> {
    process::find_on_path("azurite-blob").context(
        "azurite-blob is not installed (the Blob state tests run the real Azurite): run \
         `bash scripts/install-test-deps.sh` (it runs `npm install -g azurite`)",
    )
}

impl Azurite {
    /// Starts Azurite's Blob service on a free port of 127.0.0.1, HTTPS only, bearer tokens
    /// required to be well-formed (`--oauth basic`).
    pub fn start() -> Result<Azurite> {
        let exe = executable()?;
        let dir = tempfile::tempdir().context("creating Azurite's temp dir")?;
        let ca = TestCa::new("kombiform azurite test CA")?;
        let cert = ca.issue(&[LOOPBACK, "localhost"])?;
        let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        fs::write(&cert_path, &cert.chain_pem).context("writing Azurite's certificate")?;
        fs::write(&key_path, &cert.key_pem).context("writing Azurite's key")?;
        let data = dir.path().join("data");
        fs::create_dir_all(&data).context("creating Azurite's data dir")?;
        for _ in 0..PORT_ATTEMPTS {
            let port = process::free_port()?;
            let log = dir.path().join(format!("azurite-{port}.log"));
            let mut child = spawn(&exe, port, &data, &cert_path, &key_path, &log)?;
            match process::wait_until_ready("azurite", &mut child, &log, || listening(port)) {
                Ok(Startup::Ready) => {
                    return Ok(Azurite {
                        child,
                        port,
                        ca_pem: ca.pem(),
                        dir,
                    })
                }
                Ok(Startup::PortTaken) => process::reap(&mut child, Duration::ZERO),
                Err(e) => {
                    process::reap(&mut child, Duration::ZERO);
                    return Err(e);
                }
            }
        }
        bail!("azurite: every port tried was taken")
    }

    /// The Blob endpoint of the development account:
    /// `https://127.0.0.1:PORT/devstoreaccount1`.
    pub fn endpoint(&self) -> String {
        format!("https://{LOOPBACK}:{}/{ACCOUNT}", self.port)
    }

    /// The Blob endpoint with another port (a proxy in front of Azurite).
    pub fn endpoint_at(port: u16) -> String {
        format!("https://{LOOPBACK}:{port}/{ACCOUNT}")
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The CA certificate (PEM) clients must trust.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Its temp dir (data, certificate, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

fn spawn(exe: &Path, port: u16, data: &Path, cert: &Path, key: &Path, log: &Path) -> Result<Child> {
    let out = fs::File::create(log).context("creating Azurite's log")?;
    let err = out
        .try_clone()
        .context("duplicating Azurite's log handle")?;
    Command::new(exe)
        .arg("--blobHost")
        .arg(LOOPBACK)
        .arg("--blobPort")
        .arg(port.to_string())
        .arg("--location")
        .arg(data)
        .arg("--cert")
        .arg(cert)
        .arg("--key")
        .arg(key)
        .args([
            "--oauth",
            "basic",
            "--disableTelemetry",
            "--skipApiVersionCheck",
        ])
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .with_context(|| format!("starting {}", exe.display()))
}

fn listening(port: u16) -> bool {
    TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )
    .is_ok()
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
