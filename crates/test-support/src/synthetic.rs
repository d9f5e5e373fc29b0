//! Synthetic specs for benchmarks and scale tests: the example platform with N tenants.
//!
//! Not used by the pipeline itself. The generated text goes through the same loader as
//! files on disk, so a benchmark measures the real work (parsing included).

use std::fmt::Write as _;

use kombiform_spec::load::Input;

/// The example specs' shared documents (platforms, plans, flags, collection templates),
/// embedded so that benchmarks do not depend on the working directory.
const BASE: &[(&str, &str)] = &[
    (
        "specs/platform/local.yaml",
        include_str!("../../../tests/golden/example/specs/platform/local.yaml"),
    ),
    (
        "specs/platform/prod.yaml",
        include_str!("../../../tests/golden/example/specs/platform/prod.yaml"),
    ),
    (
        "specs/plans.yaml",
        include_str!("../../../tests/golden/example/specs/plans.yaml"),
    ),
    (
        "specs/flags.yaml",
        include_str!("../../../tests/golden/example/specs/flags.yaml"),
    ),
    (
        "specs/collections.yaml",
        include_str!("../../../tests/golden/example/specs/collections.yaml"),
    ),
];

/// The example platform with `tenants` synthetic tenants (every tenth one dedicated on the
/// enterprise plan) instead of the example tenants.
pub fn synthetic_specs(tenants: usize) -> Vec<Input> {
    let mut inputs: Vec<Input> = BASE
        .iter()
        .map(|(path, text)| Input {
            path: (*path).to_string(),
            text: (*text).to_string(),
        })
        .collect();
    // The example flags name example tenants; point them at synthetic ones.
    for input in &mut inputs {
        if input.path.ends_with("flags.yaml") {
            input.text = input
                .text
                .replace("acme: true", "t00001: true")
                .replace("hooli: false", "t00002: false");
        }
    }
    // Split tenants over files of 1,000 documents, as a real repository might.
    let plans = ["free", "pro", "enterprise"];
    for chunk in 0..tenants.div_ceil(1000) {
        let mut text = String::new();
        for i in chunk * 1000..((chunk + 1) * 1000).min(tenants) {
            let n = i + 1;
            let dedicated = n % 10 == 0;
            let plan = if dedicated {
                "enterprise"
            } else {
                plans[n % 3]
            };
            let _ = write!(
                text,
                "---\napiVersion: kombify.io/v1\nkind: Tenant\nmetadata:\n  name: t{n:05}\nspec:\n  displayName: \"Tenant {n} GmbH\"\n  plan: {plan}\n  zitadelOrgId: \"{}\"\n  instance: {}\n",
                300_000_000_000_000_000u64 + n as u64,
                if dedicated { "dedicated" } else { "shared" }
            );
        }
        inputs.push(Input {
            path: format!("specs/tenants/tenants-{chunk:03}.yaml"),
            text,
        });
    }
    inputs
}

#[cfg(test)]
mod tests {
    use super::*;
    use kombiform_spec::load::load;

    #[test]
    fn synthetic_specs_are_valid() {
        let loaded = load(synthetic_specs(50));
        assert!(!loaded.has_errors(), "{}", loaded.render());
        assert_eq!(loaded.model.map(|m| m.tenants.len()), Some(50));
    }
}
