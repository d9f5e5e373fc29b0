//! The `kombiform` binary as a Unix tool: a closed pipe ends output quietly (exit 0, no
//! panic), colour only on terminals and never with `NO_COLOR`, and `kombiform graph`
//! prints exactly the pinned graph of a golden case.

use std::io::Read;
use std::process::{Command, Stdio};

use kombiform_test_support::golden_dir;

fn kombiform() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kombiform"))
}

#[test]
fn a_closed_pipe_is_a_quiet_exit() {
    let example = kombiform_test_support::example_specs_dir();
    for format in ["dot", "text"] {
        let mut child = kombiform()
            .args(["graph", "--format", format, "--specs"])
            .arg(&example)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Read one line, then close the pipe: what `| head -1` does.
        let mut stdout = child.stdout.take().unwrap();
        let mut first = [0u8; 16];
        stdout.read_exact(&mut first).unwrap();
        drop(stdout);
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(0), "{format}: {stderr}");
        assert!(!stderr.contains("panicked"), "{format}: {stderr}");
    }
}

#[test]
fn graph_prints_the_pinned_graph() {
    let case = golden_dir().join("minimal");
    let out = kombiform()
        .args(["graph", "--env", "local", "--specs"])
        .arg(case.join("specs"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    let pinned = std::fs::read_to_string(case.join("expected/graph/local.txt")).unwrap();
    let (header, body) = text.split_once('\n').unwrap();
    assert!(header.starts_with("# environment local ("), "{header}");
    assert_eq!(body, pinned);
}

#[test]
fn no_colour_on_a_pipe_or_with_no_color() {
    // Plans are the coloured output; a broken spec's diagnostics go to stderr. Neither may
    // carry escape codes when not on a terminal, NO_COLOR or not.
    for no_color in [None, Some("1")] {
        let mut cmd = kombiform();
        cmd.args(["validate", "--specs"])
            .arg(golden_dir().join("err-bad-slug/specs"));
        if let Some(v) = no_color {
            cmd.env("NO_COLOR", v);
        }
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(1));
        let all = [out.stdout, out.stderr].concat();
        assert!(!all.contains(&0x1b), "escape codes on a pipe");
    }
}
