//! A real PostgreSQL server for tests: `initdb` into a fresh temp dir, `postgres` on a free
//! 127.0.0.1 port with trust auth, stopped (`pg_ctl stop -m immediate`) and removed on drop.
//!
//! [`Postgres::start_tls`] starts one that speaks TLS only: `ssl=on` with a certificate for
//! `localhost` and `127.0.0.1` issued by a test CA, a `pg_hba.conf` of `hostssl` lines (a plain
//! TCP login finds no entry and is refused), listening on 127.0.0.1 and on
//! [`OTHER_LOOPBACK`] (a name the certificate does not hold). The helpers' own connections
//! (readiness, [`Postgres::connect`], [`Postgres::create_database`]) go through a Unix socket
//! in the temp dir, so they need no TLS.
//!
//! PostgreSQL refuses to run as root and tests run as root in CI, so when this process is root the
//! server runs as the `postgres` OS user (created if missing) through `runuser`. Durability is
//! switched off (`fsync=off` and friends): these servers hold throwaway test data.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tempfile::TempDir;

use super::process::{self, Startup, LOOPBACK, PORT_ATTEMPTS};
use super::tls::TestCa;

/// A second loopback address a [`Postgres::start_tls`] server also listens on. Its
/// certificate names `localhost` and `127.0.0.1` only, so connecting by this address is a
/// host name mismatch.
pub const OTHER_LOOPBACK: &str = "127.0.0.2";

/// The OS user the server runs as when tests run as root, and the database superuser.
const OS_USER: &str = "postgres";

/// The database superuser `initdb` creates (`-U`); trust auth means no password.
const DB_USER: &str = "postgres";

/// A running PostgreSQL server owned by one test.
pub struct Postgres {
    port: u16,
    bin_dir: PathBuf,
    data_dir: PathBuf,
    log_path: PathBuf,
    /// Whether commands run as [`OS_USER`] via `runuser` (this process is root).
    as_os_user: bool,
    /// TLS only: the Unix socket directory the helpers connect through.
    socket_dir: Option<PathBuf>,
    /// The server process (`runuser` or `postgres` itself); `None` once stopped.
    server: Option<Child>,
    /// Dropped after `server` is stopped (fields drop after `Drop::drop`), removing every file.
    dir: TempDir,
}

impl Postgres {
    /// Creates a fresh cluster in a temp dir and starts a server on a free loopback port.
    ///
    /// Fails loudly, with the fixing command, when the PostgreSQL server binaries are missing, and
    /// with the server log when the server does not come up within 30 s.
    pub fn start() -> Result<Postgres> {
        Postgres::start_with(None)
    }

    /// Like [`Postgres::start`], but TLS only, with a server certificate from `ca` for
    /// `localhost` and `127.0.0.1` (see the module documentation).
    pub fn start_tls(ca: &TestCa) -> Result<Postgres> {
        Postgres::start_with(Some(ca))
    }

    fn start_with(ca: Option<&TestCa>) -> Result<Postgres> {
        let bin_dir = server_bin_dir()?;
        let as_os_user = process::effective_uid()? == 0;

        // When we are root the dir is handed to the postgres user, which must be able to reach it:
        // /tmp is world-traversable, an arbitrary $TMPDIR (under /root, say) may not be.
        let mut builder = tempfile::Builder::new();
        builder.prefix("kombiform-pg-");
        let dir = if as_os_user {
            builder.tempdir_in("/tmp")
        } else {
            builder.tempdir()
        }
        .context("creating a temp dir for PostgreSQL")?;
        if as_os_user {
            let (uid, gid) = os_user_ids()?;
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .with_context(|| format!("chown {} to {OS_USER}", dir.path().display()))?;
        }

        let data_dir = dir.path().join("data");
        let log_path = dir.path().join("postgres.log");
        let mut pg = Postgres {
            port: 0,
            bin_dir,
            data_dir,
            log_path,
            as_os_user,
            socket_dir: None,
            server: None,
            dir,
        };

        let mut initdb = pg.command("initdb");
        initdb
            .arg("--pgdata")
            .arg(&pg.data_dir)
            .args([
                "--username",
                DB_USER,
                "--auth",
                "trust",
                "--encoding",
                "UTF8",
                "--locale",
                "C",
            ])
            .args(["--no-sync", "--no-instructions"]);
        process::run_checked(&mut initdb).context("initdb for a test PostgreSQL")?;
        let tls_args = match ca {
            Some(ca) => pg.configure_tls(ca)?,
            None => Vec::new(),
        };
        let listen = match ca {
            Some(_) => format!("{LOOPBACK},{OTHER_LOOPBACK}"),
            None => LOOPBACK.to_string(),
        };
        let sockets = pg
            .socket_dir
            .as_ref()
            .map_or_else(String::new, |d| d.display().to_string());

        for _ in 0..PORT_ATTEMPTS {
            pg.port = process::free_port()?;
            let log = File::create(&pg.log_path)
                .with_context(|| format!("creating {}", pg.log_path.display()))?;
            let log_err = log.try_clone().context("duplicating the log file handle")?;
            let mut postgres = pg.command("postgres");
            postgres
                .arg("-D")
                .arg(&pg.data_dir)
                .args(["-p", &pg.port.to_string()])
                .args(["-c", &format!("listen_addresses={listen}")])
                .args(["-c", &format!("unix_socket_directories={sockets}")])
                .args(&tls_args)
                .args([
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                ])
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log_err);
            let child = postgres
                .spawn()
                .with_context(|| format!("starting {postgres:?}"))?;
            let child = pg.server.insert(child);

            let (port, socket_dir) = (pg.port, pg.socket_dir.clone());
            let ready = || {
                connect(
                    port,
                    socket_dir.as_deref(),
                    "postgres",
                    Duration::from_secs(1),
                )
                .is_ok()
            };
            match process::wait_until_ready("postgres", child, &pg.log_path, ready)? {
                Startup::Ready => return Ok(pg),
                Startup::PortTaken => pg.stop(),
            }
        }
        Err(anyhow!(
            "postgres could not bind a free port in {PORT_ATTEMPTS} attempts"
        ))
    }

    /// Writes the server's certificate and key, and a `pg_hba.conf` that admits TLS logins
    /// only (plus the helpers' Unix socket); the `postgres` arguments that turn TLS on.
    fn configure_tls(&mut self, ca: &TestCa) -> Result<Vec<String>> {
        let cert = ca.issue(&["localhost", LOOPBACK])?;
        let cert_path = self.dir.path().join("server.crt");
        let key_path = self.dir.path().join("server.key");
        self.write_private(&cert_path, &cert.chain_pem)?;
        // PostgreSQL refuses a key file that others can read.
        self.write_private(&key_path, &cert.key_pem)?;
        let hba = format!(
            "# TLS only: a plain TCP login matches no line and is refused.\n\
             local all all trust\n\
             hostssl all all {LOOPBACK}/32 trust\n\
             hostssl all all {OTHER_LOOPBACK}/32 trust\n"
        );
        let hba_path = self.data_dir.join("pg_hba.conf");
        // Overwriting keeps the owner and mode initdb gave the file.
        fs::write(&hba_path, hba).with_context(|| format!("writing {}", hba_path.display()))?;
        self.socket_dir = Some(self.dir.path().to_path_buf());
        Ok(vec![
            "-c".into(),
            "ssl=on".into(),
            "-c".into(),
            format!("ssl_cert_file={}", cert_path.display()),
            "-c".into(),
            format!("ssl_key_file={}", key_path.display()),
        ])
    }

    /// Writes `text` to `path`, mode 0600, owned by the server's OS user.
    fn write_private(&self, path: &Path, text: &str) -> Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("creating {}", path.display()))?;
        file.write_all(text.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
        if self.as_os_user {
            let (uid, gid) = os_user_ids()?;
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .with_context(|| format!("chown {} to {OS_USER}", path.display()))?;
        }
        Ok(())
    }

    /// The host the server listens on (`127.0.0.1`).
    pub fn host(&self) -> &'static str {
        LOOPBACK
    }

    /// The TCP port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The database superuser (`postgres`); trust auth, so no password.
    pub fn user(&self) -> &'static str {
        DB_USER
    }

    /// The temp dir holding the cluster and the server log; removed on drop.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server log (stdout and stderr of `postgres`).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// URL of the default `postgres` database, e.g. `postgres://postgres@127.0.0.1:5555/postgres`
    /// (a plain TCP URL: a [`Postgres::start_tls`] server refuses it without TLS).
    pub fn url(&self) -> String {
        self.url_for("postgres")
    }

    /// URL of database `db` on this server.
    pub fn url_for(&self, db: &str) -> String {
        format!("postgres://{DB_USER}@{LOOPBACK}:{}/{db}", self.port)
    }

    /// Creates database `name` (lowercase letters, digits, `_`) and returns its URL.
    pub fn create_database(&self, name: &str) -> Result<String> {
        let valid = !name.is_empty()
            && name.len() <= 63
            && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            bail!("test database name {name:?} must be 1-63 chars of [a-z0-9_], not starting with a digit");
        }
        let mut client = self.connect("postgres")?;
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .with_context(|| format!("creating database {name} on port {}", self.port))?;
        Ok(self.url_for(name))
    }

    /// A connected client for database `db`.
    pub fn connect(&self, db: &str) -> Result<postgres::Client> {
        connect(
            self.port,
            self.socket_dir.as_deref(),
            db,
            Duration::from_secs(10),
        )
        .with_context(|| format!("connecting to {}", self.url_for(db)))
    }

    /// A command for PostgreSQL program `program`, run as [`OS_USER`] when we are root.
    fn command(&self, program: &str) -> Command {
        let program = self.bin_dir.join(program);
        let mut cmd = if self.as_os_user {
            let mut cmd = Command::new(process::system_program("runuser"));
            cmd.args(["-u", OS_USER, "--"]).arg(program);
            cmd
        } else {
            Command::new(program)
        };
        // The postgres user may not be able to read the test's cwd; the temp dir is its own.
        cmd.current_dir(self.dir.path());
        cmd
    }

    /// Stops the server (immediate shutdown) and reaps its process. Best effort: runs in `Drop`.
    fn stop(&mut self) {
        let Some(mut child) = self.server.take() else {
            return;
        };
        if matches!(child.try_wait(), Ok(None)) {
            let mut pg_ctl = self.command("pg_ctl");
            pg_ctl
                .arg("stop")
                .arg("-D")
                .arg(&self.data_dir)
                .args(["-m", "immediate", "-w", "-t", "10"])
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let stopped = pg_ctl.status().is_ok_and(|status| status.success());
            if !stopped {
                // pg_ctl failed: kill the postmaster by the pid it recorded.
                if let Some(pid) = postmaster_pid(&self.data_dir) {
                    let _ = Command::new("kill")
                        .args(["-KILL", &pid.to_string()])
                        .status();
                }
            }
        }
        process::reap(&mut child, Duration::from_secs(10));
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A plain connection over TCP to 127.0.0.1, or over the Unix socket in `socket_dir`.
fn connect(
    port: u16,
    socket_dir: Option<&Path>,
    db: &str,
    timeout: Duration,
) -> Result<postgres::Client, postgres::Error> {
    let mut config = postgres::Config::new();
    match socket_dir {
        Some(dir) => config.host_path(dir),
        None => config.host(LOOPBACK),
    };
    config
        .port(port)
        .user(DB_USER)
        .dbname(db)
        .connect_timeout(timeout)
        .connect(postgres::NoTls)
}

/// The pid on the first line of `postmaster.pid`, if the server wrote one.
fn postmaster_pid(data_dir: &Path) -> Option<u32> {
    let text = fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    text.lines().next()?.trim().parse().ok()
}

/// The directory holding `initdb`, `pg_ctl` and `postgres`: from `$PATH`, else the newest
/// `/usr/lib/postgresql/<version>/bin`. Looked up once per test binary.
fn server_bin_dir() -> Result<PathBuf> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(find_server_bin_dir)
        .clone()
        .map_err(|msg| anyhow!(msg))
}

fn find_server_bin_dir() -> Result<PathBuf, String> {
    let complete = |dir: &Path| {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|p| process::is_executable(&dir.join(p)))
    };
    if let Some(dir) =
        process::find_on_path("initdb").and_then(|p| p.parent().map(Path::to_path_buf))
    {
        if complete(&dir) {
            return Ok(dir);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, bin)| complete(bin))
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).ok_or_else(|| {
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found on PATH or in \
         /usr/lib/postgresql/*/bin: run `apt-get install postgresql` (or scripts/install-test-deps.sh)"
            .to_string()
    })
}

/// uid and gid of [`OS_USER`], creating the user (as Debian's postgresql package does) if missing.
fn os_user_ids() -> Result<(u32, u32)> {
    static IDS: OnceLock<Result<(u32, u32), String>> = OnceLock::new();
    IDS.get_or_init(|| lookup_or_create_os_user().map_err(|err| format!("{err:#}")))
        .clone()
        .map_err(|msg| anyhow!(msg))
}

fn lookup_or_create_os_user() -> Result<(u32, u32)> {
    let exists = Command::new("id")
        .args(["-u", OS_USER])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("running `id` to look up the postgres OS user")?
        .success();
    if !exists {
        let mut useradd = Command::new(process::system_program("useradd"));
        useradd.args(["--system", "--user-group", "--no-create-home"]);
        useradd.args([
            "--home-dir",
            "/var/lib/postgresql",
            "--shell",
            "/bin/bash",
            OS_USER,
        ]);
        process::run_checked(&mut useradd).context(
            "creating the postgres OS user (PostgreSQL will not run as root); \
             run scripts/install-test-deps.sh",
        )?;
    }
    let id = |flag: &str| -> Result<u32> {
        let out = process::run_checked(Command::new("id").args([flag, OS_USER]))?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.trim()
            .parse()
            .with_context(|| format!("parsing `id {flag} {OS_USER}` output {text:?}"))
    };
    Ok((id("-u")?, id("-g")?))
}
