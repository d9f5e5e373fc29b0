//! Golden tests: `tests/golden/<case>/specs/` in, `tests/golden/<case>/expected/` out.
//!
//! A valid case expects every generated file and `graph/<env>.txt` (what `kombiform graph`
//! prints); a broken case expects `diagnostics.txt`, the rendered diagnostics. `UPDATE_EXPECT=1 cargo test --test it golden` rewrites the expected
//! files (review the diff before committing). Files in `expected/` that the case no longer
//! produces fail the test, so stale snapshots cannot linger.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use kombiform_spec::load::{load, Input};

use kombiform_test_support::{golden_dir, workspace_root};

/// Reads the spec files of a case with display paths relative to the case (`specs/x.yaml`).
/// A case with a `base` file naming another case (`minimal`) starts from that case's spec
/// files; its own files replace those of the same name. Broken-spec cases hold only the file
/// they break.
fn read_case_specs(case: &Path) -> Result<Vec<Input>> {
    let mut files: BTreeMap<String, Input> = BTreeMap::new();
    let base = case.join("base");
    if base.exists() {
        let name = std::fs::read_to_string(&base)
            .with_context(|| format!("reading {}", base.display()))?;
        for input in read_case_specs(&golden_dir().join(name.trim()))? {
            files.insert(input.path.clone(), input);
        }
    }
    let specs = case.join("specs");
    if specs.exists() || !base.exists() {
        let inputs = kombiform::cli::read_specs(&specs)
            .with_context(|| format!("reading {}", specs.display()))?;
        for mut i in inputs {
            i.path = Path::new(&i.path)
                .strip_prefix(case)
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| i.path.clone());
            files.insert(i.path.clone(), i);
        }
    }
    Ok(files.into_values().collect())
}

/// What a case produces: generated files, or `diagnostics.txt`.
fn produce(case: &Path) -> Result<BTreeMap<String, String>> {
    let loaded = load(read_case_specs(case)?);
    let mut out = BTreeMap::new();
    match &loaded.model {
        Some(model) if loaded.diagnostics.is_empty() => {
            let files = kombiform_emit::compile(model).map_err(|e| anyhow::anyhow!("{e}"))?;
            out.extend(files);
            // `kombiform graph` output, pinned too: every resource and what it needs.
            for env in model.envs() {
                let graph = kombiform_emit::targets::graph(env);
                out.insert(format!("graph/{}.txt", env.name()), graph.to_text());
            }
        }
        _ => {
            out.insert("diagnostics.txt".to_string(), loaded.render());
        }
    }
    Ok(out)
}

fn existing(dir: &Path) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    if !dir.exists() {
        return Ok(out);
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("listing {}", d.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path
                    .strip_prefix(dir)
                    .map(|p| p.to_string_lossy().replace('\\', "/"))
                    .unwrap_or_default();
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                out.insert(rel, text);
            }
        }
    }
    Ok(out)
}

fn write_expected(dir: &Path, files: &BTreeMap<String, String>) -> Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    for (rel, text) in files {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Compares one case; returns a readable report of the differences.
fn check_case(case: &Path, update: bool) -> Result<Option<String>> {
    let produced = produce(case)?;
    let expected_dir = case.join("expected");
    if update {
        write_expected(&expected_dir, &produced)?;
        return Ok(None);
    }
    let expected = existing(&expected_dir)?;
    let mut report = String::new();
    for (rel, text) in &produced {
        match expected.get(rel) {
            None => report.push_str(&format!("  missing expected file: {rel}\n")),
            Some(e) if e != text => {
                let diff = similar::TextDiff::from_lines(e.as_str(), text.as_str());
                let udiff = diff
                    .unified_diff()
                    .context_radius(2)
                    .header(&format!("expected/{rel}"), &format!("actual/{rel}"))
                    .to_string();
                let short: String = udiff
                    .lines()
                    .take(60)
                    .map(|l| format!("    {l}\n"))
                    .collect();
                report.push_str(&format!("  differs: {rel}\n{short}"));
            }
            Some(_) => {}
        }
    }
    for rel in expected.keys() {
        if !produced.contains_key(rel) {
            report.push_str(&format!(
                "  stale expected file (no longer produced): {rel}\n"
            ));
        }
    }
    Ok((!report.is_empty()).then_some(report))
}

fn cases() -> Result<Vec<PathBuf>> {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(golden_dir())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("specs").is_dir())
        .collect();
    cases.sort();
    Ok(cases)
}

#[test]
fn golden_cases_match() -> Result<()> {
    let update = std::env::var_os("UPDATE_EXPECT").is_some_and(|v| v == "1");
    let cases = cases()?;
    assert!(
        cases.len() >= 3,
        "expected golden cases under {}",
        golden_dir().display()
    );
    let mut failures = String::new();
    for case in &cases {
        if let Some(report) = check_case(case, update)? {
            failures.push_str(&format!("{}:\n{report}", case.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "golden files differ (run `UPDATE_EXPECT=1 cargo test --test it golden` and review the diff):\n{failures}"
    );
    Ok(())
}

#[test]
fn error_cases_cover_many_distinct_mistakes() -> Result<()> {
    // Each err-* case is one mistake; together they must exercise many diagnostic codes.
    let mut codes = std::collections::BTreeSet::new();
    let mut error_cases = 0;
    for case in cases()? {
        let name = case
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !name.starts_with("err-") {
            continue;
        }
        error_cases += 1;
        let loaded = load(read_case_specs(&case)?);
        assert!(
            loaded.has_errors(),
            "{name} is an error case but its specs are valid"
        );
        codes.extend(loaded.diagnostics.iter().map(|d| d.code));
    }
    assert!(error_cases >= 30, "only {error_cases} error cases");
    assert!(
        codes.len() >= 25,
        "only {} distinct codes: {codes:?}",
        codes.len()
    );
    Ok(())
}

#[test]
fn example_specs_are_valid_and_build_twice_identically() -> Result<()> {
    let specs = workspace_root().join("specs");
    let build = || -> Result<BTreeMap<String, String>> {
        let loaded = load(kombiform::cli::read_specs(&specs)?);
        let model = loaded
            .model
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("{}", loaded.render()))?;
        kombiform_emit::compile(model)
            .ok()
            .ok_or_else(|| anyhow::anyhow!("cycle"))
    };
    let a = build()?;
    let b = build()?;
    assert_eq!(a, b, "two builds of the same specs differ");
    Ok(())
}

#[test]
fn published_schema_is_current() -> Result<()> {
    let path = workspace_root().join("specs/schema/kombiform.schema.json");
    let committed = std::fs::read_to_string(&path)?;
    assert!(
        committed == kombiform_spec::schema::schema_text(),
        "{} is stale: run `cargo run -- schema > specs/schema/kombiform.schema.json`",
        path.display()
    );
    Ok(())
}
