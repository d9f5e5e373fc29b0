//! Tidy checks over the source tree: the invariants of ARCHITECTURE.md that code review
//! would otherwise have to catch.
//!
//! - every `.rs` file starts with a `//!` comment saying what it is;
//! - the pure stages (`spec`, `model`, `emit`, `plan`) do no IO: no filesystem, network,
//!   environment, process, clock or randomness;
//! - nothing but `cli.rs`, `main.rs` and binaries prints.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Code outside `#[cfg(test)]` modules (tests may do IO).
fn non_test_code(text: &str) -> &str {
    text.split("#[cfg(test)]").next().unwrap_or(text)
}

#[test]
fn every_rust_file_says_what_it_is() {
    let mut files = Vec::new();
    for d in ["src", "tests", "benches"] {
        rust_files(&root().join(d), &mut files);
    }
    assert!(files.len() > 10);
    let missing: Vec<String> = files
        .iter()
        .filter(|f| {
            std::fs::read_to_string(f)
                .map(|t| !t.trim_start().starts_with("//!"))
                .unwrap_or(true)
        })
        .map(|f| f.display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "files without a `//!` header: {missing:?}"
    );
}

#[test]
fn pure_stages_do_no_io() {
    const FORBIDDEN: &[&str] = &[
        "std::fs",
        "TcpStream",
        "TcpListener",
        "UdpSocket",
        "ToSocketAddrs",
        "std::env",
        "std::process",
        "SystemTime",
        "Instant::now",
        "thread_rng",
        "rand::",
        "reqwest",
        "tokio::",
        "println!",
        "eprintln!",
        "print!(",
        "eprint!(",
    ];
    let mut files = Vec::new();
    for d in ["src/spec", "src/model", "src/emit", "src/plan"] {
        rust_files(&root().join(d), &mut files);
    }
    assert!(!files.is_empty());
    let mut problems = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        for (n, line) in non_test_code(&text).lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for word in FORBIDDEN {
                if code.contains(word) {
                    problems.push(format!("{}:{}: `{word}`", f.display(), n + 1));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "IO in a pure stage:\n{}",
        problems.join("\n")
    );
}
