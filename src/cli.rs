//! The command line: parse arguments, read files, call the pipeline, print, exit code.
//!
//! The only module (with `main.rs`) that prints or decides exit codes. Exit codes:
//! 0 success (or no differences), 1 errors (invalid specs, IO), 2 differences found
//! (`build --check`, `diff`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

use crate::emit::{self, Files};
use crate::model::{graph, Model};
use crate::spec::load::{load, Input, Loaded};

/// kombiform: compile kombify platform specs into Kong, Bicep, PocketBase, SQL and service
/// configuration.
#[derive(Debug, Parser)]
#[command(name = "kombiform", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check the specs: schema and semantic rules, every problem at once.
    Validate {
        /// Directory of spec files.
        #[arg(long, default_value = "specs")]
        specs: PathBuf,
    },
    /// Generate every file into the output directory.
    Build {
        /// Directory of spec files.
        #[arg(long, default_value = "specs")]
        specs: PathBuf,
        /// Output directory (owned by kombiform: files it did not generate are removed).
        #[arg(long, default_value = "generated")]
        out: PathBuf,
        /// Write nothing; fail (exit 2) if the output directory is not up to date.
        #[arg(long)]
        check: bool,
    },
    /// Print the dependency graph of every resource.
    Graph {
        /// Directory of spec files.
        #[arg(long, default_value = "specs")]
        specs: PathBuf,
        /// Only this environment (default: all).
        #[arg(long)]
        env: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: GraphFormat,
    },
    /// Show how a fresh build differs from the output directory (unified diff).
    Diff {
        /// Directory of spec files.
        #[arg(long, default_value = "specs")]
        specs: PathBuf,
        /// Output directory to compare against.
        #[arg(long, default_value = "generated")]
        out: PathBuf,
    },
    /// Upgrade spec files written for an older apiVersion, in place.
    MigrateSpecs {
        /// Directory of spec files.
        #[arg(long, default_value = "specs")]
        specs: PathBuf,
        /// Write nothing; exit 2 if a file needs upgrading.
        #[arg(long)]
        check: bool,
    },
    /// Print the JSON Schema of spec documents.
    Schema,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum GraphFormat {
    Text,
    Dot,
}

/// Runs the CLI and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> Result<u8> {
    match cli.command {
        Command::Validate { specs } => {
            let (loaded, docs) = load_dir(&specs)?;
            let Some(model) = report(&loaded) else {
                return Ok(1);
            };
            println!(
                "ok: {docs} documents in {} files: {} environments, {} plans, {} tenants, {} flags, {} collection templates",
                loaded.sources.len(),
                model.platforms.len(),
                model.plans.len(),
                model.tenants.len(),
                model.flags.len(),
                model.collections.len()
            );
            Ok(0)
        }
        Command::Build { specs, out, check } => {
            let (loaded, _) = load_dir(&specs)?;
            let Some(model) = report(&loaded) else {
                return Ok(1);
            };
            let Some(files) = compile(model) else {
                return Ok(1);
            };
            if check {
                let problems = compare(&out, &files)?;
                if problems.is_empty() {
                    println!("{} is up to date ({} files)", out.display(), files.len());
                    return Ok(0);
                }
                for p in &problems {
                    eprintln!("{p}");
                }
                eprintln!(
                    "{} is out of date: run `kombiform build` and commit the result",
                    out.display()
                );
                return Ok(2);
            }
            let (written, removed) = write_out(&out, &files)?;
            println!(
                "built {} files into {} ({written} changed, {removed} removed)",
                files.len(),
                out.display()
            );
            Ok(0)
        }
        Command::Graph { specs, env, format } => {
            let (loaded, _) = load_dir(&specs)?;
            let Some(model) = report(&loaded) else {
                return Ok(1);
            };
            let envs: Vec<_> = match &env {
                Some(name) => match model.env(name) {
                    Some(e) => vec![e],
                    None => {
                        let known: Vec<&str> =
                            model.platforms.iter().map(|p| p.name.as_str()).collect();
                        eprintln!(
                            "error: unknown environment `{name}` (defined: {})",
                            known.join(", ")
                        );
                        return Ok(1);
                    }
                },
                None => model.envs().collect(),
            };
            for e in envs {
                let g = graph::build(e);
                if let Err(cycle) = g.order() {
                    eprintln!("error[dependency-cycle]: {}", cycle.join(" -> "));
                    return Ok(1);
                }
                match format {
                    GraphFormat::Text => {
                        println!("# environment {} ({} resources)", e.name(), g.len());
                        print!("{}", g.to_text());
                    }
                    GraphFormat::Dot => print!("{}", g.to_dot(e.name())),
                }
            }
            Ok(0)
        }
        Command::Diff { specs, out } => {
            let (loaded, _) = load_dir(&specs)?;
            let Some(model) = report(&loaded) else {
                return Ok(1);
            };
            let Some(files) = compile(model) else {
                return Ok(1);
            };
            let text = diff(&out, &files)?;
            if text.is_empty() {
                println!("no differences");
                Ok(0)
            } else {
                print!("{text}");
                Ok(2)
            }
        }
        Command::MigrateSpecs { specs, check } => migrate_specs(&specs, check),
        Command::Schema => {
            print!("{}", crate::spec::schema::schema_text());
            Ok(0)
        }
    }
}

fn migrate_specs(dir: &Path, check: bool) -> Result<u8> {
    let mut pending = 0;
    let mut failed = false;
    for input in read_specs(dir)? {
        match crate::spec::migrate::upgrade(&input.text) {
            Err(e) => {
                eprintln!("error: {}: {e}", input.path);
                failed = true;
            }
            Ok(up) if up.changes.is_empty() => {}
            Ok(up) => {
                pending += 1;
                for c in &up.changes {
                    println!("{}: {c}", input.path);
                }
                if !check {
                    std::fs::write(&input.path, &up.text)
                        .with_context(|| format!("writing {}", input.path))?;
                }
            }
        }
    }
    if failed {
        return Ok(1);
    }
    match (pending, check) {
        (0, _) => {
            println!("all spec files are at the current apiVersion");
            Ok(0)
        }
        (n, true) => {
            eprintln!("{n} file(s) need `kombiform migrate-specs`");
            Ok(2)
        }
        (n, false) => {
            println!("upgraded {n} file(s); review the diff and run `kombiform validate`");
            Ok(0)
        }
    }
}

/// Prints diagnostics; returns the model when there is no error.
fn report(loaded: &Loaded) -> Option<&Model> {
    if !loaded.diagnostics.is_empty() {
        eprint!("{}", loaded.render());
    }
    loaded.model.as_ref()
}

/// Builds the files, after checking the graph of every environment for cycles.
pub fn compile(model: &Model) -> Option<Files> {
    for env in model.envs() {
        if let Err(cycle) = graph::build(env).order() {
            eprintln!(
                "error[dependency-cycle]: resources of environment `{}` depend on each other: {}",
                env.name(),
                cycle.join(" -> ")
            );
            return None;
        }
    }
    Some(emit::build(model))
}

/// Reads every `*.yaml`/`*.yml` file below `dir` (except `schema/`), sorted by path.
pub fn read_specs(dir: &Path) -> Result<Vec<Input>> {
    let meta = std::fs::metadata(dir)
        .with_context(|| format!("reading spec directory {}", dir.display()))?;
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
        let text = if len > crate::spec::yaml::MAX_FILE_BYTES as u64 {
            // Do not read it: the parser reports the size from a placeholder of that size.
            " ".repeat(crate::spec::yaml::MAX_FILE_BYTES + 1)
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

fn load_dir(dir: &Path) -> Result<(Loaded, usize)> {
    let inputs = read_specs(dir)?;
    let n = inputs.len();
    let loaded = load(inputs);
    let _ = n;
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

/// A unified diff of `dir` (old) against `files` (new).
fn diff(dir: &Path, files: &Files) -> Result<String> {
    let mut out = String::new();
    let mut all: Vec<String> = existing(dir)?;
    all.extend(files.keys().cloned());
    all.sort();
    all.dedup();
    for rel in all {
        let path = dir.join(&rel);
        let old = match std::fs::read(&path) {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let new = files.get(&rel).map_or("", String::as_str);
        if old == new {
            continue;
        }
        let d = similar::TextDiff::from_lines(old.as_str(), new);
        out.push_str(
            &d.unified_diff()
                .context_radius(3)
                .header(&format!("a/{rel}"), &format!("b/{rel}"))
                .to_string(),
        );
    }
    Ok(out)
}
