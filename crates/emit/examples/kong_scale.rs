//! Measures the Kong emitter on a synthetic model of N tenants (default 10,000):
//! `cargo run --release --example kong_scale [N]`. Prints time and bytes per environment.
//! A measurement tool, not a test: it asserts nothing but that our checks pass.

// An example program reports on standard output.
#![allow(clippy::print_stdout, clippy::print_stderr)]
// It measures: it reads the clock and writes its report.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::time::Instant;

use anyhow::{bail, Context, Result};
use kombiform_emit::kong;
use kombiform_test_support::synthetic::{fleet, Fleet};

fn main() -> Result<()> {
    let n: usize = match std::env::args().nth(1) {
        Some(a) => a.parse().context("N must be a number")?,
        None => 10_000,
    };
    let model = kombiform_test_support::example_model();
    let f = Fleet {
        tenants: n,
        suspended_every: Some(50),
        ..Fleet::default()
    };
    let model = fleet(model, f);
    let start = Instant::now();
    let mut total = 0;
    for env in model.envs() {
        let t = Instant::now();
        let text = kong::render(env);
        println!(
            "{}: {} bytes in {:.1} ms",
            kong::path(env),
            text.len(),
            t.elapsed().as_secs_f64() * 1000.0
        );
        total += text.len();
    }
    println!(
        "kong emitter, {n} tenants, all environments: {total} bytes in {:.1} ms",
        start.elapsed().as_secs_f64() * 1000.0
    );
    let t = Instant::now();
    for env in model.envs() {
        let problems = kombiform_test_support::kong_check::check(
            &kong::document(env),
            env.platform.kong.edition,
        );
        if !problems.is_empty() {
            bail!("{}: {}", kong::path(env), problems.join("\n"));
        }
    }
    println!(
        "document + typed checks: {:.1} ms",
        t.elapsed().as_secs_f64() * 1000.0
    );
    Ok(())
}
