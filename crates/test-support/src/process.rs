//! Process plumbing shared by the server helpers: free ports, finding executables, running a
//! command with its output in the error, and waiting for a spawned server to become ready.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// How long a server may take to become ready before the test fails.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How often a server is started on a fresh port when the port was taken in between.
pub(crate) const PORT_ATTEMPTS: usize = 3;

/// Loopback address every test server binds to.
pub(crate) const LOOPBACK: &str = "127.0.0.1";

/// A free TCP port on 127.0.0.1: bind port 0, read the port the kernel chose, release it.
///
/// Another process can take the port before the server binds it; callers retry on
/// "address already in use" (see [`Startup::PortTaken`]).
pub fn free_port() -> Result<u16> {
    let listener =
        TcpListener::bind((LOOPBACK, 0)).context("binding 127.0.0.1:0 to find a free port")?;
    let port = listener
        .local_addr()
        .context("reading the address of a bound listener")?
        .port();
    Ok(port)
}

/// The first executable file named `name` in the directories of `$PATH`.
pub(crate) fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

/// A system program (`runuser`, `useradd`) from `$PATH`, else from the sbin/bin dirs a
/// non-login root shell may lack on its `$PATH`; else the bare name, so the spawn error names it.
pub(crate) fn system_program(name: &str) -> PathBuf {
    find_on_path(name)
        .or_else(|| {
            ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
                .iter()
                .map(|dir| Path::new(dir).join(name))
                .find(|candidate| is_executable(candidate))
        })
        .unwrap_or_else(|| PathBuf::from(name))
}

/// Whether `path` is a regular file (after following links) with an execute bit set.
pub(crate) fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// Runs `cmd` to completion; a non-zero exit is an error carrying the command and its output.
pub(crate) fn run_checked(cmd: &mut Command) -> Result<Output> {
    let output = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !output.status.success() {
        bail!(
            "{cmd:?} failed with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        );
    }
    Ok(output)
}

/// The effective user id of this process, read from `/proc/self/status`.
pub(crate) fn effective_uid() -> Result<u32> {
    let status = fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .context("no Uid: line in /proc/self/status")?;
    // Fields: real, effective, saved, filesystem.
    let effective = line
        .split_whitespace()
        .nth(1)
        .context("no effective uid in /proc/self/status")?;
    effective
        .parse()
        .with_context(|| format!("parsing effective uid {effective:?}"))
}

/// The last `max_lines` lines of a server's log file, for error messages.
pub(crate) fn log_tail(path: &Path, max_lines: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            let start = lines.len().saturating_sub(max_lines);
            lines[start..].join("\n")
        }
        Err(err) => format!("(could not read {}: {err})", path.display()),
    }
}

/// How a server start ended, short of a hard error.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Startup {
    /// The readiness probe succeeded.
    Ready,
    /// The server exited because its port was taken; start it again on another port.
    PortTaken,
}

/// Polls `ready` until it returns true, the server process exits, or [`READY_TIMEOUT`] passes.
///
/// An early exit is [`Startup::PortTaken`] when the log says the address was in use, otherwise an
/// error with the log's tail. The caller still owns `child` and must stop it on error.
pub(crate) fn wait_until_ready(
    what: &str,
    child: &mut Child,
    log: &Path,
    mut ready: impl FnMut() -> bool,
) -> Result<Startup> {
    let started = Instant::now();
    loop {
        if let Some(status) = child
            .try_wait()
            .with_context(|| format!("checking on {what}"))?
        {
            let tail = log_tail(log, 60);
            if tail.to_ascii_lowercase().contains("address already in use") {
                return Ok(Startup::PortTaken);
            }
            bail!(
                "{what} exited with {status} before it was ready; log {}:\n{tail}",
                log.display()
            );
        }
        if ready() {
            return Ok(Startup::Ready);
        }
        if started.elapsed() > READY_TIMEOUT {
            bail!(
                "{what} was not ready after {READY_TIMEOUT:?}; log {}:\n{}",
                log.display(),
                log_tail(log, 60)
            );
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Waits up to `timeout` for `child` to exit, then kills it; always reaps it.
pub(crate) fn reap(child: &mut Child, timeout: Duration) {
    let started = Instant::now();
    while started.elapsed() < timeout {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => return,
            Ok(None) => thread::sleep(Duration::from_millis(20)),
        }
    }
    // Best effort: this runs in Drop, where there is no one left to report to.
    let _ = child.kill();
    let _ = child.wait();
}
