//! The state on Azure Blob end to end: `kombiform apply --env prod --target azure` with the
//! platform spec choosing `state: {backend: azureBlob}`, against a real Azurite (HTTPS,
//! bearer tokens from the credential chain, served by `kombiform-arm-standin`) and the ARM
//! stand-in. Runs are caught in flight without timing: a proxy in front of the stand-in
//! holds ARM's answers, so a run stays inside its apply, holding the lease, until the test
//! releases or kills it.
//!
//! - two concurrent applies: the second fails at once naming the first (host, pid, command);
//! - a run killed (-9) in the middle of its apply: the next run breaks its lease (its process
//!   on this host is gone), resumes, and nothing applied is lost from the state;
//! - a run killed on another host (a UTS namespace with another host name): its lease is
//!   not broken by anyone, the next run fails naming it until the lease runs out (15 s, Blob
//!   Storage's shortest finite lease), then proceeds.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use kombiform_arm_standin::{Config, Faults, StandIn};
use kombiform_emit::azure::{self, Kind};
use kombiform_test_support::azurite::Azurite;
use kombiform_test_support::proxy::Proxy;

use super::deploy::copy_dir;

/// A deadlock guard for what a run must do (not a timing: the steps take milliseconds).
const HANG: Duration = Duration::from_secs(180);

/// The ARM stand-in, Azurite, a proxy in front of the stand-in, and specs choosing Blob state.
struct Team {
    standin: StandIn,
    azurite: Azurite,
    arm_proxy: Proxy,
    dir: tempfile::TempDir,
    // Declared last: the stand-in's server runs on it until the end.
    _runtime: tokio::runtime::Runtime,
}

/// Values of the secrets a person provides, as `KV_*` variables.
const PROVIDED: &str = "provided-value-5c2e";

impl Team {
    fn start() -> Result<Team> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let standin = runtime.block_on(StandIn::start(Config {
            time_scale: 0.001,
            faults: Faults::parse("")?,
            ..Config::default()
        }))?;
        let azurite = Azurite::start()?;
        let arm_proxy = Proxy::start(standin.addr().port())?;
        let dir = tempfile::tempdir()?;
        std::fs::write(
            dir.path().join("ca.pem"),
            format!("{}{}", standin.ca_pem(), azurite.ca_pem()),
        )?;
        let specs = dir.path().join("specs");
        copy_dir(&kombiform_test_support::example_specs_dir(), &specs)?;
        let prod = specs.join("platform").join("prod.yaml");
        let mut text = std::fs::read_to_string(&prod)?;
        text.push_str(
            "  state:\n    backend: azureBlob\n    account: kfyprodstate\n    \
             container: kombiform-state\n    leaseSeconds: 15\n",
        );
        std::fs::write(&prod, text)?;
        Ok(Team {
            standin,
            azurite,
            arm_proxy,
            dir,
            _runtime: runtime,
        })
    }

    /// `kombiform ARGS` for prod; ARM (not the token endpoint) reached through the proxy
    /// when `via_proxy`.
    fn cmd(&self, args: &[&str], via_proxy: bool) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_kombiform"));
        self.configure(&mut c, args, via_proxy);
        c
    }

    fn configure(&self, c: &mut Command, args: &[&str], via_proxy: bool) {
        let arm = if via_proxy {
            format!("https://127.0.0.1:{}", self.arm_proxy.port())
        } else {
            self.standin.url()
        };
        c.args(args)
            .arg("--specs")
            .arg(self.dir.path().join("specs"))
            .arg("--state-dir")
            .arg(self.dir.path().join("unused-local-state"))
            .current_dir(self.dir.path())
            .env("SSL_CERT_FILE", self.dir.path().join("ca.pem"))
            .env("KOMBIFORM_BLOB_ENDPOINT", self.azurite.endpoint())
            .env("KOMBIFORM_ARM_ENDPOINT", &arm)
            // Tokens come straight from the stand-in: only ARM's answers can be held.
            .env("AZURE_AUTHORITY_HOST", self.standin.url())
            .env("AZURE_TENANT_ID", "kombiform-tests")
            .env("AZURE_CLIENT_ID", "kombiform-ci")
            .env("AZURE_CLIENT_SECRET", "not-a-real-secret")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        for (k, _) in std::env::vars() {
            if k.starts_with("KV_") {
                c.env_remove(k);
            }
        }
        for r in inventory() {
            if r.kind == Kind::ProvidedSecret {
                c.env(variable(&r.name), PROVIDED);
            }
        }
    }

    fn run(&self, args: &[&str]) -> Result<Output> {
        self.cmd(args, false).output().context("running kombiform")
    }

    /// `kombiform apply` with ARM behind the proxy, its output piped.
    fn spawn_apply(&self, other_host: Option<&str>) -> Result<Child> {
        let args = APPLY_JSON;
        let mut c = match other_host {
            // Another machine: the same binary in a UTS namespace with another host name.
            Some(host) => {
                let mut c = Command::new("unshare");
                c.args([
                    "-u",
                    "sh",
                    "-c",
                    &format!("hostname {host} && exec \"$0\" \"$@\""),
                ])
                .arg(env!("CARGO_BIN_EXE_kombiform"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_kombiform")),
        };
        self.configure(&mut c, args, true);
        c.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting kombiform apply")
    }

    /// Holds ARM's answers and waits until the run holds one: it is then inside its apply,
    /// holding the state lease.
    fn catch_in_flight(&self) -> Result<()> {
        self.arm_proxy.hold();
        self.arm_proxy.wait_held(1, HANG)
    }
}

const APPLY: &[&str] = &[
    "apply",
    "--env",
    "prod",
    "--target",
    "azure",
    "--auto-approve",
];
const APPLY_JSON: &[&str] = &[
    "apply",
    "--env",
    "prod",
    "--target",
    "azure",
    "--auto-approve",
    "--format",
    "json",
];

fn variable(name: &str) -> String {
    kombiform_model::secret::variable(&kombiform_model::SecretRef::KeyVault(name.to_string()))
}

fn inventory() -> Vec<azure::ArmResource> {
    let m = kombiform_test_support::example_model();
    azure::inventory(m.env("prod").unwrap()).unwrap().all()
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// After a complete apply: the next plan has nothing to do, and the state in Blob records
/// every resource of the inventory.
fn assert_complete(team: &Team) {
    let plan = team
        .run(&["plan", "--env", "prod", "--target", "azure"])
        .unwrap();
    assert_eq!(plan.status.code(), Some(0), "{}", text(&plan));
    let list = team
        .run(&["state", "list", "--env", "prod", "--format", "json"])
        .unwrap();
    assert_eq!(list.status.code(), Some(0), "{}", text(&list));
    let listed: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let recorded: Vec<&str> = listed["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["address"].as_str())
        .collect();
    for r in inventory().iter().filter(|r| r.kind == Kind::Plain) {
        assert!(
            recorded.contains(&r.address.as_str()),
            "{} is not recorded in the Blob state: {recorded:?}",
            r.address
        );
    }
    assert!(
        listed["in_doubt"].as_array().unwrap().is_empty(),
        "{listed}"
    );
    // The local state directory was never used.
    assert!(!team.dir.path().join("unused-local-state").exists());
}

#[test]
fn two_concurrent_applies_the_second_fails_at_once_naming_the_holder() {
    let team = Team::start().unwrap();
    team.arm_proxy.hold();
    let first = team.spawn_apply(None).unwrap();
    team.arm_proxy.wait_held(1, HANG).unwrap();
    let second = team.run(APPLY).unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{}", text(&second));
    assert!(
        err.contains("the state of environment `prod` is locked by"),
        "{err}"
    );
    assert!(err.contains(&format!("pid {}", first.id())), "{err}");
    assert!(err.contains("running `"), "{err}");
    assert!(err.contains("apply --env prod --target azure"), "{err}");
    assert!(err.contains(&kombiform_sys::host()), "{err}");
    team.arm_proxy.release();
    let out = first.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_complete(&team);
}

#[test]
fn a_run_killed_mid_apply_loses_nothing_and_the_next_run_proceeds() {
    let team = Team::start().unwrap();
    let mut first = team.spawn_apply(None).unwrap();
    // Let some changes complete (each journaled in the Blob state), then catch one in flight.
    let stdout = first.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut done = Vec::new();
    while done.len() < 3 {
        let line = lines
            .next()
            .expect("the apply ended before three changes completed")
            .unwrap();
        let event: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if event["event"] == "done" {
            done.push(event["address"].as_str().unwrap_or_default().to_string());
        }
    }
    team.catch_in_flight().unwrap();
    kill(&mut first);
    team.arm_proxy.down();
    team.arm_proxy.up();

    let next = team.run(APPLY).unwrap();
    let err = String::from_utf8_lossy(&next.stderr);
    assert_eq!(next.status.code(), Some(0), "{}", text(&next));
    assert!(err.contains("breaking the stale lock of `prod`"), "{err}");
    // What the killed run completed was recorded: the next run did not create it again.
    let out = String::from_utf8_lossy(&next.stdout);
    for address in &done {
        assert!(
            !out.lines()
                .any(|l| l.contains(address.as_str()) && l.contains("create")),
            "{address} was completed by the killed run, yet created again:\n{out}"
        );
    }
    assert_complete(&team);
}

#[test]
fn the_lease_of_a_run_killed_on_another_host_runs_out_and_the_next_run_proceeds() {
    let team = Team::start().unwrap();
    team.arm_proxy.hold();
    let mut first = team.spawn_apply(Some("other-runner")).unwrap();
    team.arm_proxy.wait_held(1, HANG).unwrap();
    kill(&mut first);
    team.arm_proxy.down();
    team.arm_proxy.up();

    // Nobody here can tell whether that run is over: its lock stands, named, until its
    // lease runs out (15 s after its last renewal); then the next run proceeds.
    let refused = team.run(APPLY).unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(err.contains("@other-runner"), "{err}");
    assert!(err.contains("if that run is over"), "{err}");
    let started = Instant::now();
    let proceeded = loop {
        let out = team.run(APPLY).unwrap();
        if out.status.code() == Some(0) {
            break out;
        }
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(err.contains("@other-runner"), "{}", text(&out));
        assert!(started.elapsed() < HANG, "the lease never ran out: {err}");
        std::thread::sleep(Duration::from_secs(1));
    };
    assert!(
        !String::from_utf8_lossy(&proceeded.stderr).contains("breaking"),
        "{}",
        text(&proceeded)
    );
    assert_complete(&team);
}
