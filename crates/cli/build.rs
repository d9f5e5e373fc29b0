//! Build script of the `kombiform` binary: embeds the commit it is built from
//! (`KOMBIFORM_BUILD_COMMIT`, e.g. `commit v0.1.0-12-g3ca378e1f2a4`) so that `kombiform
//! --version` names it. Outside a git checkout (a source tarball) or without git it says
//! so instead of failing; `KOMBIFORM_BUILD_COMMIT` set in the build environment wins (for
//! packagers who know the commit).

// A build script talks to cargo on standard output; that is what these lines are.
#![allow(clippy::print_stdout)]

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo:rerun-if-env-changed=KOMBIFORM_BUILD_COMMIT");
    if let Ok(given) = std::env::var("KOMBIFORM_BUILD_COMMIT") {
        println!("cargo:rustc-env=KOMBIFORM_BUILD_COMMIT={given}");
        return;
    }
    let commit = match git(&["describe", "--always", "--tags", "--abbrev=12"]) {
        Some(d) => format!("commit {d}"),
        None => "commit unknown: built outside a git checkout".to_string(),
    };
    // Build again when HEAD moves: HEAD itself, the branch it points at, packed refs.
    for path in ["HEAD", "packed-refs"] {
        if let Some(p) = git(&["rev-parse", "--git-path", path]) {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        if let Some(p) = git(&["rev-parse", "--git-path", &branch]) {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    println!("cargo:rustc-env=KOMBIFORM_BUILD_COMMIT={commit}");
}
