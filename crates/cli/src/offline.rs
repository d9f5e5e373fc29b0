//! The commands that need no live system: `validate`, `build`, `graph`, `diff`,
//! `migrate-specs`, and reading and writing the files they work on (spec files in,
//! `generated/` out). Each command returns its exit code ([`crate::cli::exit`]).
//!
//! Not here: `plan`, `apply`, `state` (they talk to live systems: `cli.rs`), nor any
//! compiling of its own (that is `kombiform_spec` and `kombiform_emit`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::json;

use crate::cli::{exit, Format, GraphFormat};
use crate::{err, errln, out, outln, output, paint, progress};

use kombiform_emit::{self as emit, targets, Files};
use kombiform_model::Model;
use kombiform_spec::load::{load, Input, Loaded};

/// Loads the specs below `dir`, with a spinner on a terminal when it takes a while.
fn load_with_spinner(dir: &Path, what: &str) -> Result<(Loaded, usize)> {
    let _spinner = progress::Spinner::delayed(format!("{what} {}", dir.display()));
    load_dir(dir)
}

/// The environments of `model` an `--env` asks for (all without one); an unknown name is
/// an error naming the defined ones (printed; `None`).
fn selected_envs<'a>(model: &'a Model, env: Option<&str>) -> Option<Vec<kombiform_model::Env<'a>>> {
    match env {
        None => Some(model.envs().collect()),
        Some(name) => match model.env(name) {
            Some(e) => Some(vec![e]),
            None => {
                errln!("error: {}", unknown_env(model, name));
                None
            }
        },
    }
}

/// `unknown environment `x` (defined: local, prod)`.
pub(crate) fn unknown_env(model: &Model, name: &str) -> String {
    let known: Vec<&str> = model.platforms.iter().map(|p| p.name.as_str()).collect();
    format!(
        "unknown environment `{name}` (defined: {})",
        known.join(", ")
    )
}

/// `kombiform validate`.
pub(crate) fn validate(specs: &Path, env: Option<&str>, format: Format) -> Result<u8> {
    let (loaded, docs) = load_with_spinner(specs, "validating")?;
    if format == Format::Json {
        return validate_json(&loaded, docs, env);
    }
    let Some(model) = report(&loaded) else {
        return Ok(exit::ERROR);
    };
    if selected_envs(model, env).is_none() {
        return Ok(exit::ERROR);
    }
    outln!(
        "ok: {docs} documents in {} files: {} environments, {} plans, {} tenants, {} flags, {} collection templates",
        loaded.sources.len(),
        model.platforms.len(),
        model.plans.len(),
        model.tenants.len(),
        model.flags.len(),
        model.collections.len()
    );
    Ok(exit::OK)
}

/// `validate --format json`: `{ok, documents, files, counts, diagnostics: [{severity, code,
/// message, file, line, column, hint, related}]}`.
fn validate_json(loaded: &Loaded, docs: usize, env: Option<&str>) -> Result<u8> {
    let label = |l: &kombiform_spec::diag::Label| {
        json!({
            "file": loaded.sources.path(l.file),
            "line": l.line,
            "column": l.col,
            "message": l.message,
        })
    };
    let diagnostics: Vec<serde_json::Value> = loaded
        .diagnostics
        .iter()
        .map(|d| {
            json!({
                "severity": match d.severity {
                    kombiform_spec::diag::Severity::Error => "error",
                    kombiform_spec::diag::Severity::Warning => "warning",
                },
                "code": d.code,
                "message": d.message,
                "file": loaded.sources.path(d.primary.file),
                "line": d.primary.line,
                "column": d.primary.col,
                "hint": d.hint,
                "related": d.secondary.iter().map(label).collect::<Vec<_>>(),
            })
        })
        .collect();
    let model = loaded.model.as_ref();
    let env_error = match (model, env) {
        (Some(m), Some(name)) if m.env(name).is_none() => Some(unknown_env(m, name)),
        _ => None,
    };
    let ok = model.is_some() && !loaded.has_errors() && env_error.is_none();
    let counts = model.map(|m| {
        json!({
            "environments": m.platforms.len(),
            "plans": m.plans.len(),
            "tenants": m.tenants.len(),
            "flags": m.flags.len(),
            "collection_templates": m.collections.len(),
        })
    });
    let doc = json!({
        "ok": ok,
        "documents": docs,
        "files": loaded.sources.len(),
        "counts": counts,
        "error": env_error,
        "diagnostics": diagnostics,
    });
    outln!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(if ok { exit::OK } else { exit::ERROR })
}

/// `kombiform build`: writes (or with `check`, compares) the files of the selected
/// environments; with `--env`, only `<out>/<env>/` is touched.
pub(crate) fn build(
    specs: &Path,
    out: &Path,
    check: bool,
    env: Option<&str>,
    format: Format,
) -> Result<u8> {
    let (loaded, _) = load_with_spinner(specs, "building")?;
    let Some(model) = report(&loaded) else {
        return Ok(exit::ERROR);
    };
    if selected_envs(model, env).is_none() {
        return Ok(exit::ERROR);
    }
    let Some(files) = compile(model) else {
        return Ok(exit::ERROR);
    };
    let (files, scope) = scoped(files, out, env);
    if check {
        let problems = compare(&scope, &files)?;
        let fresh = problems.is_empty();
        if format == Format::Json {
            outln!(
                "{}",
                serde_json::to_string_pretty(&json!({
                    "up_to_date": fresh, "files": files.len(), "problems": problems,
                }))?
            );
        } else if fresh {
            outln!("{} is up to date ({} files)", scope.display(), files.len());
        } else {
            for p in &problems {
                errln!("{p}");
            }
            errln!(
                "{} is out of date: run `kombiform build` and commit the result",
                scope.display()
            );
        }
        return Ok(if fresh { exit::OK } else { exit::CHANGES });
    }
    let (written, removed) = write_out(&scope, &files)?;
    if format == Format::Json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "out": scope.display().to_string(), "files": files.len(),
                "changed": written, "removed": removed,
            }))?
        );
    } else {
        outln!(
            "built {} files into {} ({written} changed, {removed} removed)",
            files.len(),
            scope.display()
        );
    }
    Ok(exit::OK)
}

/// The files of the selected environment (all without one), relative to the directory they
/// are compared with: `out/<env>/` when an environment is selected.
fn scoped(files: Files, out: &Path, env: Option<&str>) -> (Files, PathBuf) {
    match env {
        None => (files, out.to_path_buf()),
        Some(e) => {
            let prefix = format!("{e}/");
            let files = files
                .into_iter()
                .filter_map(|(rel, text)| Some((rel.strip_prefix(&prefix)?.to_string(), text)))
                .collect();
            (files, out.join(e))
        }
    }
}

/// `kombiform graph`.
pub(crate) fn graph(specs: &Path, env: Option<&str>, format: GraphFormat) -> Result<u8> {
    let (loaded, _) = load_dir(specs)?;
    let Some(model) = report(&loaded) else {
        return Ok(exit::ERROR);
    };
    let Some(envs) = selected_envs(model, env) else {
        return Ok(exit::ERROR);
    };
    let mut json_envs = Vec::new();
    for e in envs {
        let g = targets::graph(e);
        let order = match g.order() {
            Ok(order) => order,
            Err(cycle) => {
                errln!(
                    "error[dependency-cycle]: resources of environment `{}` depend on each other: {cycle}",
                    e.name()
                );
                return Ok(exit::ERROR);
            }
        };
        match format {
            GraphFormat::Text => {
                outln!("# environment {} ({} resources)", e.name(), g.len());
                out!("{}", g.to_text());
            }
            GraphFormat::Dot => out!("{}", g.to_dot(e.name())),
            GraphFormat::Json => {
                let resources: Vec<serde_json::Value> = order
                    .iter()
                    .map(|a| json!({"address": a, "needs": g.needs(a).collect::<Vec<_>>()}))
                    .collect();
                json_envs.push(json!({"env": e.name(), "resources": resources}));
            }
        }
    }
    if format == GraphFormat::Json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&json!({ "environments": json_envs }))?
        );
    }
    Ok(exit::OK)
}

/// `kombiform diff`.
pub(crate) fn diff_cmd(specs: &Path, out: &Path, env: Option<&str>, format: Format) -> Result<u8> {
    let (loaded, _) = load_with_spinner(specs, "comparing")?;
    let Some(model) = report(&loaded) else {
        return Ok(exit::ERROR);
    };
    if selected_envs(model, env).is_none() {
        return Ok(exit::ERROR);
    }
    let Some(files) = compile(model) else {
        return Ok(exit::ERROR);
    };
    let (files, scope) = scoped(files, out, env);
    let diffs = diff(&scope, &files)?;
    if format == Format::Json {
        let files: Vec<serde_json::Value> = diffs
            .iter()
            .map(|(rel, status, d)| json!({"path": rel, "status": status, "diff": d}))
            .collect();
        outln!(
            "{}",
            serde_json::to_string_pretty(&json!({ "files": files }))?
        );
    } else if diffs.is_empty() {
        outln!("no differences");
    } else {
        let text: String = diffs.iter().map(|(_, _, d)| d.as_str()).collect();
        out!("{}", paint::unified_diff(&text, output::colour_stdout()));
    }
    Ok(if diffs.is_empty() {
        exit::OK
    } else {
        exit::CHANGES
    })
}

/// `kombiform migrate-specs`.
pub(crate) fn migrate_specs(dir: &Path, check: bool, format: Format) -> Result<u8> {
    let mut pending = Vec::new();
    let mut failed = Vec::new();
    for input in read_specs(dir)? {
        match kombiform_spec::migrate::upgrade(&input.text) {
            Err(e) => failed.push((input.path.clone(), e.to_string())),
            Ok(up) if up.changes.is_empty() => {}
            Ok(up) => {
                if !check {
                    std::fs::write(&input.path, &up.text)
                        .with_context(|| format!("writing {}", input.path))?;
                }
                pending.push((input.path.clone(), up.changes));
            }
        }
    }
    let code = if !failed.is_empty() {
        exit::ERROR
    } else if check && !pending.is_empty() {
        exit::CHANGES
    } else {
        exit::OK
    };
    if format == Format::Json {
        let files: Vec<serde_json::Value> = pending
            .iter()
            .map(|(path, changes)| json!({"path": path, "changes": changes}))
            .collect();
        let errors: Vec<serde_json::Value> = failed
            .iter()
            .map(|(path, e)| json!({"path": path, "error": e}))
            .collect();
        outln!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "check": check, "files": files, "errors": errors,
            }))?
        );
        return Ok(code);
    }
    for (path, e) in &failed {
        errln!("error: {path}: {e}");
    }
    for (path, changes) in &pending {
        for c in changes {
            outln!("{path}: {c}");
        }
    }
    match (code, pending.len(), check) {
        (exit::ERROR, _, _) => {}
        (_, 0, _) => outln!("all spec files are at the current apiVersion"),
        (_, n, true) => errln!("{n} file(s) need `kombiform migrate-specs`"),
        (_, n, false) => {
            outln!("upgraded {n} file(s); review the diff and run `kombiform validate`")
        }
    }
    Ok(code)
}

/// Prints diagnostics; returns the model when there is no error.
pub(crate) fn report(loaded: &Loaded) -> Option<&Model> {
    if !loaded.diagnostics.is_empty() {
        err!(
            "{}",
            paint::diagnostics(&loaded.render(), output::colour_stderr())
        );
    }
    loaded.model.as_ref()
}

/// Builds the files, after checking the graph of every environment for cycles.
fn compile(model: &Model) -> Option<Files> {
    match emit::compile(model) {
        Ok(files) => Some(files),
        Err(cycle) => {
            errln!("error[dependency-cycle]: {cycle}");
            None
        }
    }
}

/// Reads every `*.yaml`/`*.yml` file below `dir` (except `schema/`), sorted by path.
pub fn read_specs(dir: &Path) -> Result<Vec<Input>> {
    let meta = std::fs::metadata(dir).with_context(|| {
        format!(
            "reading spec directory {} (run kombiform where specs/ is, or give --specs DIR)",
            dir.display()
        )
    })?;
    if !meta.is_dir() {
        anyhow::bail!("{} is not a directory", dir.display());
    }
    let mut paths = Vec::new();
    collect(dir, &mut paths)?;
    paths.sort();
    let mut inputs = Vec::with_capacity(paths.len());
    for p in paths {
        let len = std::fs::metadata(&p)
            .with_context(|| format!("reading {}", p.display()))?
            .len();
        let text = if len > kombiform_spec::yaml::MAX_FILE_BYTES as u64 {
            // Do not read it: the parser reports the size from a placeholder of that size.
            " ".repeat(kombiform_spec::yaml::MAX_FILE_BYTES + 1)
        } else {
            let bytes = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
            match String::from_utf8(bytes) {
                Ok(t) => t,
                Err(_) => anyhow::bail!("{} is not UTF-8 text", p.display()),
            }
        };
        inputs.push(Input {
            path: p.display().to_string(),
            text,
        });
    }
    Ok(inputs)
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let path = entry.path();
        let ft = entry
            .file_type()
            .with_context(|| format!("reading {}", path.display()))?;
        if ft.is_dir() {
            if path.file_name().is_some_and(|n| n == "schema") {
                continue;
            }
            collect(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
    Ok(())
}

pub(crate) fn load_dir(dir: &Path) -> Result<(Loaded, usize)> {
    let loaded = load(read_specs(dir)?);
    let docs = loaded.model.as_ref().map_or(0, |m| {
        m.platforms.len() + m.plans.len() + m.tenants.len() + m.flags.len() + m.collections.len()
    });
    Ok((loaded, docs))
}

/// Every file below `dir`, relative, with `/` separators.
fn existing(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    if !dir.exists() {
        return Ok(out);
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("listing {}", d.display()))? {
            let entry = entry.with_context(|| format!("listing {}", d.display()))?;
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(rel) = path.strip_prefix(dir) {
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// What differs between `dir` and `files`, one line each.
fn compare(dir: &Path, files: &Files) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    for (rel, content) in files {
        let path = dir.join(rel);
        match std::fs::read(&path) {
            Ok(bytes) if bytes == content.as_bytes() => {}
            Ok(_) => problems.push(format!("changed: {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                problems.push(format!("missing: {}", path.display()));
            }
            Err(e) => {
                return Err(e).with_context(|| format!("reading {}", path.display()));
            }
        }
    }
    for rel in existing(dir)? {
        if !files.contains_key(&rel) {
            problems.push(format!("stale:   {}", dir.join(rel).display()));
        }
    }
    Ok(problems)
}

/// Writes changed files and removes stale ones. Returns (written, removed).
pub fn write_out(dir: &Path, files: &Files) -> Result<(usize, usize)> {
    let mut written = 0;
    for (rel, content) in files {
        let path = dir.join(rel);
        if std::fs::read(&path).is_ok_and(|b| b == content.as_bytes()) {
            continue;
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        let tmp = path.with_extension("kombiform-tmp");
        std::fs::write(&tmp, content).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
        written += 1;
    }
    let mut removed = 0;
    for rel in existing(dir)? {
        if !files.contains_key(&rel) {
            let path = dir.join(&rel);
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
            removed += 1;
        }
    }
    Ok((written, removed))
}

/// The files that differ between `dir` (old) and `files` (new): path, `changed`, `added` or
/// `removed`, and the unified diff.
fn diff(dir: &Path, files: &Files) -> Result<Vec<(String, &'static str, String)>> {
    let mut out = Vec::new();
    let mut all: Vec<String> = existing(dir)?;
    all.extend(files.keys().cloned());
    all.sort();
    all.dedup();
    for rel in all {
        let path = dir.join(&rel);
        let old = match std::fs::read(&path) {
            Ok(b) => Some(String::from_utf8_lossy(&b).into_owned()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let new = files.get(&rel);
        let status = match (&old, new) {
            (None, _) => "added",
            (Some(_), None) => "removed",
            (Some(o), Some(n)) if o == n => continue,
            _ => "changed",
        };
        let old = old.unwrap_or_default();
        let new = new.map_or("", String::as_str);
        let d = similar::TextDiff::from_lines(old.as_str(), new);
        let text = d
            .unified_diff()
            .context_radius(3)
            .header(&format!("a/{rel}"), &format!("b/{rel}"))
            .to_string();
        out.push((rel, status, text));
    }
    Ok(out)
}
