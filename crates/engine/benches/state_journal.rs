//! Benchmark: the local state backend at 10,000 tenants' worth of resources (50,000).
//! Single journal appends (one fsync each, the per-change figure), batched appends (one fsync
//! per batch of 100, as a batched provider's transaction), a load that replays the whole
//! journal, the compaction, and a load of the snapshot. Reported as times and as ratios
//! against the single append (`cargo bench -p kombiform-engine --bench state_journal`).
//!
//! Run without `--bench` (as `cargo test --all-targets` does), it is a smoke run of 500
//! resources. Not a test: it asserts nothing but that the backend works.

// A benchmark reports its figures on standard output.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use kombiform_engine::state::{LocalBackend, StateBackend};
use kombiform_plan::{Action, Change, Resource};
use serde_json::json;

const ENV: &str = "bench";

fn create(i: usize) -> Change {
    let attrs = json!({"slug": format!("c{i}"), "plan": "pro", "note": "x".repeat(200)});
    let r = Resource::new(
        format!("postgres.tenant.c{i}"),
        attrs.as_object().cloned().unwrap_or_default(),
    );
    Change {
        address: r.address.clone(),
        action: Action::Create,
        attrs: Vec::new(),
        destructive: false,
        drift: false,
        desired: Some(r),
        live: None,
    }
}

fn main() -> Result<()> {
    let full = std::env::args().any(|a| a == "--bench");
    let (n, single, batch) = if full {
        (50_000, 2_000, 100)
    } else {
        (500, 50, 50)
    };
    let dir = tempfile::tempdir().context("a temp dir")?;
    let backend = LocalBackend::new(dir.path());
    let mut state = backend.load(ENV)?;
    let mut journal = backend.journal(ENV)?;
    let changes: Vec<Change> = (0..n).map(create).collect();

    let t = Instant::now();
    for c in &changes[..single] {
        journal.record(&mut state, c)?;
    }
    let singles = t.elapsed();
    let t = Instant::now();
    for chunk in changes[single..].chunks(batch) {
        let refs: Vec<&Change> = chunk.iter().collect();
        journal.record_all(&mut state, &refs)?;
    }
    let batched = t.elapsed();
    let t = Instant::now();
    let replayed = backend.load(ENV)?;
    let replay = t.elapsed();
    anyhow::ensure!(replayed == state, "the replayed state differs");
    let t = Instant::now();
    backend.compact(ENV, &state)?;
    let compact = t.elapsed();
    let t = Instant::now();
    let loaded = backend.load(ENV)?;
    let load = t.elapsed();
    anyhow::ensure!(loaded == state, "the loaded snapshot differs");

    let per = |d: Duration, k: usize| d.as_secs_f64() * 1e6 / k as f64;
    let single_us = per(singles, single);
    let batched_us = per(batched, n - single);
    println!("state backend, {n} resources (this machine, one run):");
    println!("  single append     {single_us:>9.0} µs per change (fsync each)");
    println!(
        "  batched append    {batched_us:>9.1} µs per change (batches of {batch}): {:.0}x cheaper",
        single_us / batched_us.max(f64::EPSILON)
    );
    println!("  load (replay all) {:>9.0} ms", replay.as_secs_f64() * 1e3);
    println!(
        "  compaction        {:>9.0} ms",
        compact.as_secs_f64() * 1e3
    );
    println!(
        "  load (snapshot)   {:>9.0} ms: replay/snapshot {:.1}x",
        load.as_secs_f64() * 1e3,
        replay.as_secs_f64() / load.as_secs_f64().max(f64::EPSILON)
    );
    Ok(())
}
