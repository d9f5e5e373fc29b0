//! Benchmark: validate + build of synthetic specs with 1,000 and 10,000 tenants.
//!
//! Run with `cargo bench --bench pipeline`. Each size runs in a child process of its own,
//! so that its peak memory (VmHWM) is its own. Reports wall time, peak memory, output size
//! and the 10k/1k ratios (linear growth means a time ratio near 10).

// A benchmark reports its figures on standard output.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::Command;
use std::time::Instant;

use kombiform_spec::load::load;
use kombiform_test_support::synthetic::synthetic_specs;

const SIZES: &[usize] = &[1_000, 10_000];
const RUNS: usize = 3;
/// `cargo test --all-targets` runs this binary without `--bench`: then one small run only,
/// as a smoke test that the benchmark still works.
const SMOKE: &[usize] = &[100];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(pos) = args.iter().position(|a| a == "--child") {
        let n = args
            .get(pos + 1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(1000);
        child(n);
        return;
    }
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("cannot find the benchmark binary: {e}");
            std::process::exit(1);
        }
    };
    let full = args.iter().any(|a| a == "--bench");
    let (sizes, runs) = if full { (SIZES, RUNS) } else { (SMOKE, 1) };
    println!("kombiform validate+build benchmark ({runs} runs per size, best time, peak memory of the run)");
    println!(
        "{:>8} {:>10} {:>10} {:>10} {:>12} {:>8}",
        "tenants", "parse+val", "build", "total", "peak RSS", "output"
    );
    let mut results = Vec::new();
    for &n in sizes {
        let mut best: Option<Vec<f64>> = None;
        for _ in 0..runs {
            let out = Command::new(&exe)
                .arg("--child")
                .arg(n.to_string())
                .output();
            let out = match out {
                Ok(o) if o.status.success() => o,
                Ok(o) => {
                    eprintln!("child failed: {}", String::from_utf8_lossy(&o.stderr));
                    std::process::exit(1);
                }
                Err(e) => {
                    eprintln!("cannot run child: {e}");
                    std::process::exit(1);
                }
            };
            let line = String::from_utf8_lossy(&out.stdout);
            let nums: Vec<f64> = line
                .split_whitespace()
                .filter_map(|s| s.parse().ok())
                .collect();
            if nums.len() != 5 {
                eprintln!("unexpected child output: {line}");
                std::process::exit(1);
            }
            if best.as_ref().is_none_or(|b| nums[2] < b[2]) {
                best = Some(nums);
            }
        }
        let b = best.unwrap_or_default();
        println!(
            "{:>8} {:>8.0}ms {:>8.0}ms {:>8.0}ms {:>9.1} MB {:>6.1}MB",
            n,
            b[0],
            b[1],
            b[2],
            b[3] / 1024.0,
            b[4] / 1e6
        );
        results.push(b);
    }
    if let [small, large] = results.as_slice() {
        println!(
            "ratio 10k/1k: time {:.2}x, peak memory {:.2}x, output {:.2}x (10x = linear)",
            large[2] / small[2],
            large[3] / small[3],
            large[4] / small[4]
        );
    }
}

/// One measured run: prints `parse_ms build_ms total_ms peak_kb output_bytes`.
fn child(n: usize) {
    let inputs = synthetic_specs(n);
    let dir = std::env::temp_dir().join(format!("kombiform-bench-{}-{n}", std::process::id()));
    let start = Instant::now();
    let loaded = load(inputs);
    let Some(model) = loaded.model.as_ref() else {
        eprintln!("{}", loaded.render());
        std::process::exit(1);
    };
    let parsed = start.elapsed();
    let Some(files) = kombiform_emit::compile(model).ok() else {
        std::process::exit(1);
    };
    if let Err(e) = kombiform::cli::write_out(&dir, &files) {
        eprintln!("{e:#}");
        std::process::exit(1);
    }
    let total = start.elapsed();
    let bytes: usize = files.values().map(String::len).sum();
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "{:.1} {:.1} {:.1} {} {}",
        parsed.as_secs_f64() * 1e3,
        (total - parsed).as_secs_f64() * 1e3,
        total.as_secs_f64() * 1e3,
        peak_rss_kb(),
        bytes
    );
}

fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}
