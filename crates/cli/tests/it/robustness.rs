//! Robustness: mutated spec files never make the loader panic.
//!
//! Deterministic mutations (a seeded generator) of the example specs: characters deleted,
//! lines duplicated or swapped, values replaced by other types, anchors and aliases
//! inserted. Whatever comes out, `load` must return diagnostics or a model, never panic.

use std::panic::{catch_unwind, AssertUnwindSafe};

use kombiform_spec::load::{load, Input};

/// A small deterministic generator (xorshift), so failures are reproducible by seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            usize::try_from(self.next() % n as u64).unwrap_or(0)
        }
    }
}

const SNIPPETS: &[&str] = &[
    "",
    "~",
    "[]",
    "{}",
    "-1",
    "1e999",
    ".nan",
    "\"",
    "'",
    "&a x",
    "*a",
    "*nope",
    "!!binary x",
    "? [a]\n: b",
    "{a: [",
    "\t",
    "- - -",
    "}",
    "---",
    "...",
    "é∂€",
    "0x",
    "99999999999999999999",
    "{keyVault: x}",
    "null",
    "true",
    "<<: *a",
];

fn mutate(text: &str, rng: &mut Rng) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    for _ in 0..1 + rng.below(4) {
        if lines.is_empty() {
            break;
        }
        let i = rng.below(lines.len());
        match rng.below(6) {
            0 => {
                let chars: Vec<char> = lines[i].chars().collect();
                if !chars.is_empty() {
                    let c = rng.below(chars.len());
                    lines[i] = chars
                        .iter()
                        .enumerate()
                        .filter(|(k, _)| *k != c)
                        .map(|(_, ch)| *ch)
                        .collect();
                }
            }
            1 => {
                let l = lines[i].clone();
                lines.insert(i, l);
            }
            2 => {
                let j = rng.below(lines.len());
                lines.swap(i, j);
            }
            3 => {
                if let Some((k, _)) = lines[i].split_once(": ") {
                    let s = SNIPPETS[rng.below(SNIPPETS.len())];
                    lines[i] = format!("{k}: {s}");
                }
            }
            4 => {
                let s = SNIPPETS[rng.below(SNIPPETS.len())];
                lines.insert(i, s.to_string());
            }
            _ => {
                lines[i] = format!("  {}", lines[i]);
            }
        }
    }
    lines.join("\n")
}

#[test]
fn mutated_specs_never_panic() {
    let base = kombiform_test_support::example_inputs();
    assert!(base.len() >= 5, "example specs not found");
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let mut with_errors = 0;
    for round in 0..120 {
        let target = rng.below(base.len());
        let inputs: Vec<Input> = base
            .iter()
            .enumerate()
            .map(|(k, i)| Input {
                path: i.path.clone(),
                text: if k == target {
                    mutate(&i.text, &mut rng)
                } else {
                    i.text.clone()
                },
            })
            .collect();
        let mutated = inputs[target].text.clone();
        let result = catch_unwind(AssertUnwindSafe(|| load(inputs)));
        match result {
            Ok(loaded) => with_errors += usize::from(loaded.has_errors()),
            Err(_) => panic!("load panicked in round {round} on:\n{mutated}"),
        }
    }
    // The mutations must actually break things most of the time, or this test proves little.
    assert!(
        with_errors > 60,
        "only {with_errors} of 120 mutations were caught"
    );
}
