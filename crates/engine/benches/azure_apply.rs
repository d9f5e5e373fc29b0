//! Benchmark: `apply` of the example's `prod` Azure inventory from empty against
//! `kombiform-arm-standin` with 100 ms latency on every call, against the ideal schedule of
//! its graph; then the requests of a no-change `plan`.
//!
//! Run with `cargo bench --bench azure_apply`. The stand-in runs in this process with its
//! time compressed (`--time-scale`, so long-running operations take a few hundred ms) and
//! `latency=100ms`. The apply runs through the engine as the CLI would (`ops::make_plan`,
//! `apply::apply`, parallelism 32). Each resource's own duration is taken from the apply's
//! events; the ideal schedule is the longest path through the dependency graph weighted by
//! those durations (what unlimited parallelism with zero overhead would take), reported with
//! the unweighted critical path (resources on it) × the mean per-resource time. The ratio
//! wall / ideal is the figure to watch (aim: within 1.10). Without `--bench` (`cargo test
//! --all-targets`) it is a smoke test with 5 ms latency.
//!
//! Knobs: `KOMBIFORM_AZBENCH_LATENCY_MS` (default 100), `KOMBIFORM_AZBENCH_PARALLELISM`
//! (default 32), `KOMBIFORM_AZBENCH_SCALE` (stand-in time scale, default 0.002).

// A benchmark reports its figures on standard output.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, Result};
use kombiform_arm_standin::{Config, Faults, StandIn};
use kombiform_azure::{Arm, ArmConfig, ArmOptions};
use kombiform_emit::azure;
use kombiform_engine::apply::{self, Event, Interrupt, Recorder};
use kombiform_engine::ops;
use kombiform_engine::providers::azure::Azure;
use kombiform_engine::providers::{Client, Provider};
use kombiform_engine::state::State;
use kombiform_plan::{Change, Plan};

/// The bench keeps no state: it measures the calls, not the journal.
struct NoState;

impl Recorder for NoState {
    fn started(&mut self, _: &[&Change]) -> Result<()> {
        Ok(())
    }
    fn done(&mut self, _: &[&Change]) -> Result<()> {
        Ok(())
    }
}

fn main() {
    if let Err(e) = run() {
        eprintln!("azure_apply: {e:#}");
        std::process::exit(1);
    }
}

fn knob<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Every `KV_*` variable has a value: the person-provided secrets are "given".
fn lookup(name: &str) -> Option<String> {
    name.starts_with("KV_")
        .then(|| "bench-provided-value".to_string())
}

fn run() -> Result<()> {
    let bench = std::env::args().any(|a| a == "--bench");
    let latency_ms: u64 = if bench {
        knob("KOMBIFORM_AZBENCH_LATENCY_MS", 100)
    } else {
        5
    };
    let parallelism: usize = knob("KOMBIFORM_AZBENCH_PARALLELISM", 32);
    let scale: f64 = knob("KOMBIFORM_AZBENCH_SCALE", 0.002);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let standin = runtime.block_on(StandIn::start(Config {
        time_scale: scale,
        faults: Faults::parse(&format!("latency={latency_ms}ms"))?,
        ..Config::default()
    }))?;
    let model = kombiform_test_support::example_model();
    let env = model.env("prod").context("the example has prod")?;
    let connect = || -> Result<Provider> {
        let vars: HashMap<&str, String> = [
            ("KOMBIFORM_ARM_ENDPOINT", standin.url()),
            ("AZURE_AUTHORITY_HOST", standin.url()),
            ("AZURE_TENANT_ID", "kombiform-bench".into()),
            ("AZURE_CLIENT_ID", "kombiform-bench".into()),
            ("AZURE_CLIENT_SECRET", "not-a-secret".into()),
        ]
        .into_iter()
        .collect();
        let config = ArmConfig::from_lookup(&|n| vars.get(n).cloned())?;
        let arm = Arm::new(
            config,
            ArmOptions {
                extra_root_certificates: vec![standin.ca_pem().as_bytes().to_vec()],
                ..ArmOptions::default()
            },
        )?;
        let inventory = azure::inventory(env).context("prod is on Azure")?;
        Ok(Provider {
            target: &kombiform_emit::targets::azure::Azure,
            client: Arc::new(Azure::new(inventory, arm, lookup)?),
        })
    };
    let state = State::new("prod", "bench");

    // Apply from empty.
    let providers = vec![connect()?];
    let live = ops::read_live(&providers)?;
    let plan = ops::make_plan(env, "bench", &state, &providers, &live, &[])?;
    let by_name: BTreeMap<String, Arc<dyn Client>> = providers
        .iter()
        .map(|p| (p.name().to_string(), Arc::clone(&p.client)))
        .collect();
    let opts = apply::Options {
        parallelism,
        ..apply::Options::default()
    };
    let durations: Mutex<HashMap<String, u64>> = Mutex::new(HashMap::new());
    let observe = |e: &Event| {
        if let Event::Done {
            address,
            elapsed_ms,
            ..
        } = e
        {
            if let Ok(mut d) = durations.lock() {
                d.insert(address.clone(), *elapsed_ms);
            }
        }
    };
    let started = Instant::now();
    let report = apply::apply(
        &plan,
        &by_name,
        &opts,
        &mut NoState,
        &Interrupt::new(),
        &observe,
    );
    let wall_ms = started.elapsed().as_secs_f64() * 1000.0;
    anyhow::ensure!(report.succeeded(), "the apply failed: {:?}", report.failed);
    let durations = durations.into_inner().unwrap_or_default();
    let (ideal_ms, path_len) = ideal(&plan, &durations);
    let mean = durations.values().sum::<u64>() as f64 / durations.len().max(1) as f64;
    let stats = standin.stats();

    // A no-change plan, from a fresh client (nothing cached).
    let providers = vec![connect()?];
    let t0 = Instant::now();
    let live = ops::read_live(&providers)?;
    let again = ops::make_plan(env, "bench", &state, &providers, &live, &[])?;
    let plan_ms = t0.elapsed().as_secs_f64() * 1000.0;
    let unexpected: Vec<&str> = again
        .changes
        .iter()
        .filter(|c| c.action != kombiform_plan::Action::Create)
        .map(|c| c.address.as_str())
        .collect();
    anyhow::ensure!(
        !again.has_changes(),
        "the plan after the apply is not empty: {unexpected:?} {:?}",
        again.changes.iter().map(|c| &c.address).collect::<Vec<_>>()
    );

    println!("azure_apply: the example's prod inventory, {} resources, stand-in latency {latency_ms} ms/call, time scale {scale}, parallelism {parallelism}", plan.changes.len());
    println!("  apply wall time         {wall_ms:>9.0} ms");
    println!("  ideal schedule          {ideal_ms:>9.0} ms  (longest dependency path weighted by each resource's own time)");
    println!(
        "  critical path × mean    {:>9.0} ms  ({path_len} resources × {mean:.0} ms)",
        path_len as f64 * mean
    );
    println!(
        "  wall / ideal            {:>9.3}",
        wall_ms / ideal_ms.max(1.0)
    );
    println!(
        "  apply requests          {:>9}  ({} reads, {} writes, {} deletes; {} over ARM's limits)",
        stats.requests, stats.reads, stats.writes, stats.deletes, stats.over_limit
    );
    println!(
        "  no-change plan          {:>9} requests, {plan_ms:.0} ms",
        live.requests
    );
    anyhow::ensure!(stats.over_limit == 0, "the apply went over ARM's limits");
    Ok(())
}

/// The ideal schedule: the longest path through the plan's dependencies, each resource
/// weighted by its own duration; and the number of resources on the longest unweighted path.
fn ideal(plan: &Plan, durations: &HashMap<String, u64>) -> (f64, usize) {
    let deps: HashMap<&str, Vec<&str>> = plan
        .changes
        .iter()
        .map(|c| {
            let d = c
                .desired
                .as_ref()
                .map(|r| r.depends_on.iter().map(String::as_str).collect())
                .unwrap_or_default();
            (c.address.as_str(), d)
        })
        .collect();
    let mut finish: HashMap<&str, (f64, usize)> = HashMap::new();
    // Changes come in dependency order.
    for c in &plan.changes {
        let own = durations.get(&c.address).copied().unwrap_or(0) as f64;
        let (before, len) = deps[c.address.as_str()]
            .iter()
            .filter_map(|d| finish.get(d))
            .fold((0.0f64, 0usize), |(t, l), (dt, dl)| {
                (t.max(*dt), l.max(*dl))
            });
        finish.insert(&c.address, (before + own, len + 1));
    }
    finish
        .values()
        .fold((0.0, 0), |(t, l), (ft, fl)| (t.max(*ft), l.max(*fl)))
}
