//! Tidy checks over the whole source tree: the invariants of ARCHITECTURE.md that no lint
//! can state. (What lints can state is in the lint tables of the manifests and in
//! `clippy.toml`/`clippy-pure.toml`: no printing outside the binaries, no IO in the pure
//! crates, no unwrap on user input.)
//!
//! - every `.rs` file of every crate starts with a `//!` comment saying what it is, and each
//!   crate root also says what the crate is not;
//! - no test is ignored or expected to panic;
//! - every crate takes the workspace lints, and each pure crate (model, spec, plan, emit)
//!   uses `clippy-pure.toml`.

use std::path::{Path, PathBuf};

use kombiform_test_support::workspace_root;

/// The pure crates: no IO, enforced by `clippy-pure.toml`.
const PURE: &[&str] = &["model", "spec", "plan", "emit"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
        .map(|e| e.map(|e| e.path()));
    for p in entries {
        let p = p.unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()));
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn crate_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(workspace_root().join("crates"))
        .expect("listing crates/")
        .map(|e| e.expect("a crates/ entry").path())
        .filter(|p| p.join("Cargo.toml").exists())
        .collect();
    dirs.sort();
    assert!(
        dirs.len() >= 8,
        "expected the workspace's crates, found {dirs:?}"
    );
    dirs
}

fn all_rust_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in crate_dirs() {
        rust_files(&dir, &mut files);
    }
    files
}

fn header(text: &str) -> String {
    text.lines()
        .take_while(|l| l.starts_with("//!"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn every_rust_file_says_what_it_is() {
    let files = all_rust_files();
    assert!(files.len() > 50, "only {} files found", files.len());
    let missing: Vec<String> = files
        .iter()
        .filter(|f| {
            let text = std::fs::read_to_string(f).expect("a readable source file");
            !text.starts_with("//!")
        })
        .map(|f| f.display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "files without a `//!` header: {missing:#?}"
    );
}

#[test]
fn every_crate_root_says_what_it_is_not() {
    let mut vague = Vec::new();
    for dir in crate_dirs() {
        let root = dir.join("src/lib.rs");
        if !root.exists() {
            continue;
        }
        let text = std::fs::read_to_string(&root).expect("a readable lib.rs");
        let head = header(&text);
        if !(head.contains("//! Not ") || head.contains(". Not ") || head.contains("is not")) {
            vague.push(root.display().to_string());
        }
    }
    assert!(
        vague.is_empty(),
        "crate roots whose header does not say what the crate is not: {vague:#?}"
    );
}

#[test]
fn no_test_is_ignored_or_expected_to_panic() {
    let mut found = Vec::new();
    for f in all_rust_files() {
        let text = std::fs::read_to_string(&f).expect("a readable source file");
        for (n, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("#[ignore") || code.starts_with("#[should_panic") {
                found.push(format!("{}:{}: {code}", f.display(), n + 1));
            }
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn every_crate_takes_the_lints_and_pure_crates_the_pure_clippy_settings() {
    for dir in crate_dirs() {
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).expect("a manifest");
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("?");
        assert!(
            manifest.contains("[lints]\nworkspace = true"),
            "{name}: the crate must take the workspace lints"
        );
        let clippy = std::fs::read_to_string(dir.join("clippy.toml")).ok();
        let pure = std::fs::read_to_string(workspace_root().join("clippy-pure.toml"))
            .expect("clippy-pure.toml");
        if PURE.contains(&name) {
            assert_eq!(
                clippy.as_deref(),
                Some(pure.as_str()),
                "{name} is pure: its clippy.toml must be clippy-pure.toml"
            );
        } else {
            assert!(
                clippy.is_none(),
                "{name} is not pure: it uses the workspace clippy.toml"
            );
        }
    }
}
