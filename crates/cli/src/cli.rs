//! The command line: parse arguments, read files, call the pipeline, print, exit code.
//!
//! The only module (with `main.rs`) that prints or decides exit codes. Exit codes:
//! 0 success (or no differences), 1 errors (invalid specs, IO), 2 differences found
//! (`build --check`, `diff`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

use crate::{err, errln, out, outln};

use kombiform_emit::{self as emit, targets, Files};
use kombiform_model::Model;
use kombiform_spec::load::{load, Input, Loaded};

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
    /// Read live state and show what apply would change. Exit 0: no changes, 2: changes,
    /// 3: blocked by the destructive guard, 1: error.
    Plan {
        /// The environment.
        #[arg(long)]
        env: String,
        #[command(flatten)]
        args: DeployArgs,
        /// Save the plan to FILE, for `kombiform apply FILE`.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print the plan as JSON (see docs/plan-json.md).
        #[arg(long, conflicts_with = "format")]
        json: bool,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: PlanFormat,
    },
    /// Apply a saved plan (exactly that plan, refused if stale), or plan and apply an
    /// environment. Exit 0: applied, 1: failed or stale, 3: blocked by the guard, or applied
    /// as far as it could while inputs only a person can give (secrets) are missing.
    Apply {
        /// A plan saved by `kombiform plan --out FILE`.
        file: Option<PathBuf>,
        /// The environment (plans first when no FILE is given).
        #[arg(long)]
        env: Option<String>,
        #[command(flatten)]
        args: DeployArgs,
        /// Apply without asking (for CI).
        #[arg(long)]
        auto_approve: bool,
        /// Changes applied at the same time.
        #[arg(long, default_value_t = 4)]
        parallelism: usize,
        /// Print events for machines (one JSON object per line) instead of progress.
        #[arg(long, value_enum)]
        events: Option<EventFormat>,
    },
    /// Inspect the recorded state, or break a stale lock.
    State {
        #[command(subcommand)]
        command: StateCommand,
    },
}

#[derive(Debug, Subcommand)]
enum StateCommand {
    /// Every resource kombiform manages in an environment.
    List {
        /// The environment.
        #[arg(long)]
        env: String,
        /// Directory of the local state backend.
        #[arg(long, default_value = ".kombiform")]
        state_dir: PathBuf,
    },
    /// One resource as last applied.
    Show {
        /// The resource address.
        address: String,
        /// The environment.
        #[arg(long)]
        env: String,
        /// Directory of the local state backend.
        #[arg(long, default_value = ".kombiform")]
        state_dir: PathBuf,
    },
    /// Break a lock deliberately (only with the id the lock error showed).
    Unlock {
        /// The lock id.
        id: String,
        /// The environment.
        #[arg(long)]
        env: String,
        /// Directory of the local state backend.
        #[arg(long, default_value = ".kombiform")]
        state_dir: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum PlanFormat {
    Text,
    Json,
    Markdown,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum EventFormat {
    Json,
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
            errln!("error: {e:#}");
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
            outln!(
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
                    outln!("{} is up to date ({} files)", out.display(), files.len());
                    return Ok(0);
                }
                for p in &problems {
                    errln!("{p}");
                }
                errln!(
                    "{} is out of date: run `kombiform build` and commit the result",
                    out.display()
                );
                return Ok(2);
            }
            let (written, removed) = write_out(&out, &files)?;
            outln!(
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
                        errln!(
                            "error: unknown environment `{name}` (defined: {})",
                            known.join(", ")
                        );
                        return Ok(1);
                    }
                },
                None => model.envs().collect(),
            };
            for e in envs {
                let g = targets::graph(e);
                if let Err(cycle) = g.order() {
                    errln!(
                        "error[dependency-cycle]: resources of environment `{}` depend on each other: {cycle}",
                        e.name()
                    );
                    return Ok(1);
                }
                match format {
                    GraphFormat::Text => {
                        outln!("# environment {} ({} resources)", e.name(), g.len());
                        out!("{}", g.to_text());
                    }
                    GraphFormat::Dot => out!("{}", g.to_dot(e.name())),
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
                outln!("no differences");
                Ok(0)
            } else {
                out!("{text}");
                Ok(2)
            }
        }
        Command::MigrateSpecs { specs, check } => migrate_specs(&specs, check),
        Command::Plan {
            env,
            args,
            out,
            json,
            format,
        } => cmd_plan(args, &env, out, json, format),
        Command::Apply {
            file,
            env,
            args,
            auto_approve,
            parallelism,
            events,
        } => cmd_apply(args, file, env, auto_approve, parallelism, events),
        Command::State { command } => cmd_state(command),
        Command::Schema => {
            out!("{}", kombiform_spec::schema::schema_text());
            Ok(0)
        }
    }
}

fn migrate_specs(dir: &Path, check: bool) -> Result<u8> {
    let mut pending = 0;
    let mut failed = false;
    for input in read_specs(dir)? {
        match kombiform_spec::migrate::upgrade(&input.text) {
            Err(e) => {
                errln!("error: {}: {e}", input.path);
                failed = true;
            }
            Ok(up) if up.changes.is_empty() => {}
            Ok(up) => {
                pending += 1;
                for c in &up.changes {
                    outln!("{}: {c}", input.path);
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
            outln!("all spec files are at the current apiVersion");
            Ok(0)
        }
        (n, true) => {
            errln!("{n} file(s) need `kombiform migrate-specs`");
            Ok(2)
        }
        (n, false) => {
            outln!("upgraded {n} file(s); review the diff and run `kombiform validate`");
            Ok(0)
        }
    }
}

/// Prints diagnostics; returns the model when there is no error.
fn report(loaded: &Loaded) -> Option<&Model> {
    if !loaded.diagnostics.is_empty() {
        err!("{}", loaded.render());
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

fn load_dir(dir: &Path) -> Result<(Loaded, usize)> {
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
// ---- plan / apply / state (appended to src/cli.rs) ----

/// Arguments shared by `plan` and `apply`.
#[derive(Debug, clap::Args)]
struct DeployArgs {
    /// Directory of spec files.
    #[arg(long, default_value = "specs")]
    specs: PathBuf,
    /// Directory of the local state backend.
    #[arg(long, default_value = ".kombiform")]
    state_dir: PathBuf,
    /// Consent to destroying this address (repeatable; a trailing `*` matches a prefix).
    #[arg(long = "allow-destroy", value_name = "ADDRESS")]
    allow_destroy: Vec<String>,
    /// Only these resources and what they depend on (repeatable; an address or a prefix:
    /// `azure`, `kong.`, `postgres.tenant.acme`). Only the providers they need are connected.
    #[arg(long = "target", value_name = "ADDRESS_PREFIX")]
    target: Vec<String>,
}

fn load_env_model(specs: &Path) -> Result<Option<(Model, String)>> {
    let inputs = read_specs(specs)?;
    let hash = kombiform_engine::ops::spec_hash(&inputs, &specs.display().to_string());
    let loaded = load(inputs);
    if report(&loaded).is_none() {
        return Ok(None);
    }
    Ok(loaded.model.map(|m| (m, hash)))
}

fn find_env<'a>(model: &'a Model, name: &str) -> Result<kombiform_model::Env<'a>> {
    model.env(name).with_context(|| {
        let known: Vec<&str> = model.platforms.iter().map(|p| p.name.as_str()).collect();
        format!(
            "unknown environment `{name}` (defined: {})",
            known.join(", ")
        )
    })
}

fn color_stdout() -> bool {
    crate::output::colour_stdout()
}

fn cmd_plan(
    args: DeployArgs,
    env: &str,
    out: Option<PathBuf>,
    json: bool,
    format: PlanFormat,
) -> Result<u8> {
    let Some((model, hash)) = load_env_model(&args.specs)? else {
        return Ok(1);
    };
    let env = find_env(&model, env)?;
    let backend = kombiform_engine::state::LocalBackend::new(&args.state_dir);
    use kombiform_engine::state::StateBackend as _;
    let state = backend.load(env.name())?;
    let selection = kombiform_engine::ops::select(env, &args.target)?;
    let providers = kombiform_engine::ops::connect_selected(env, selection.as_ref())?;
    let live = kombiform_engine::ops::read_live(&providers)?;
    let mut plan = kombiform_engine::ops::make_plan(
        env,
        &hash,
        &state,
        &providers,
        &live,
        &args.allow_destroy,
    )?;
    if let Some(s) = &selection {
        kombiform_engine::ops::restrict(&mut plan, s);
    }
    let missing = kombiform_engine::ops::missing_inputs(&plan, &providers);
    if let Some(path) = &out {
        write_plan(path, &plan)?;
    }
    let format = if json { PlanFormat::Json } else { format };
    match format {
        PlanFormat::Json => out!("{}", kombiform_plan::render::json(&plan)),
        PlanFormat::Markdown => out!("{}", kombiform_plan::render::markdown(&plan)),
        PlanFormat::Text => {
            out!("{}", kombiform_plan::render::text(&plan, color_stdout()));
            errln!("read live state with {} requests", live.requests);
            report_missing(&missing, false);
            if let Some(path) = &out {
                outln!(
                    "\nSaved the plan to {}. Apply exactly this plan with:\n  kombiform apply {}",
                    path.display(),
                    path.display()
                );
            }
        }
    }
    Ok(plan_exit(&plan))
}

fn plan_exit(plan: &kombiform_plan::Plan) -> u8 {
    if !plan.refused.is_empty() {
        3
    } else if plan.has_changes() {
        2
    } else {
        0
    }
}

fn write_plan(path: &Path, plan: &kombiform_plan::Plan) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(path, kombiform_plan::render::json(plan))
        .with_context(|| format!("writing plan {}", path.display()))
}

fn read_plan(path: &Path) -> Result<kombiform_plan::Plan> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading plan {}", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not a kombiform plan file", path.display()))
}

#[allow(clippy::too_many_arguments)]
fn cmd_apply(
    args: DeployArgs,
    file: Option<PathBuf>,
    env: Option<String>,
    auto_approve: bool,
    parallelism: usize,
    events: Option<EventFormat>,
) -> Result<u8> {
    let saved = match &file {
        Some(f) => Some(read_plan(f)?),
        None => None,
    };
    let env_name = match (&saved, &env) {
        (Some(p), Some(e)) if &p.env != e => {
            anyhow::bail!("the plan is for environment `{}`, not `{e}`", p.env)
        }
        (Some(p), _) => p.env.clone(),
        (None, Some(e)) => e.clone(),
        (None, None) => anyhow::bail!("give a plan file, or --env NAME to plan and apply"),
    };
    let Some((model, hash)) = load_env_model(&args.specs)? else {
        return Ok(1);
    };
    let env = find_env(&model, &env_name)?;
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let backend = kombiform_engine::state::LocalBackend::new(&args.state_dir);
    use kombiform_engine::state::StateBackend as _;
    let _lock = match take_lock(&backend, env.name(), &command) {
        Ok(g) => g,
        Err(e) => {
            errln!("error: {e}");
            return Ok(1);
        }
    };
    let state = backend.load(env.name())?;
    let selection = match &saved {
        // A saved plan is checked against the providers it was made with.
        Some(p) => Some(kombiform_engine::ops::Selection {
            targets: p.fingerprints.keys().cloned().collect(),
            ..kombiform_engine::ops::Selection::default()
        }),
        None => kombiform_engine::ops::select(env, &args.target)?,
    };
    let providers = kombiform_engine::ops::connect_selected(env, selection.as_ref())?;
    let live = kombiform_engine::ops::read_live(&providers)?;
    let plan = match saved {
        Some(p) => {
            if let Some(why) = kombiform_engine::ops::staleness(&p, &hash, &state, &live) {
                errln!("error: the saved plan is stale and was not applied:\n  {why}\nMake a new plan with `kombiform plan --env {} --out FILE`.", p.env);
                return Ok(1);
            }
            p
        }
        None => {
            let mut p = kombiform_engine::ops::make_plan(
                env,
                &hash,
                &state,
                &providers,
                &live,
                &args.allow_destroy,
            )?;
            if let Some(s) = &selection {
                kombiform_engine::ops::restrict(&mut p, s);
            }
            if events.is_none() {
                out!("{}", kombiform_plan::render::text(&p, color_stdout()));
            }
            p
        }
    };
    if !plan.refused.is_empty() {
        errln!("error: {} destructive change(s) were refused; nothing was applied. Consent with --allow-destroy ADDRESS:", plan.refused.len());
        for a in &plan.refused {
            errln!("  - {a}");
        }
        return Ok(3);
    }
    // Changes that need an input nobody gave (a secret only a person can set) wait, with
    // everything that depends on them; the rest is applied, then apply stops with exit 3.
    let missing = kombiform_engine::ops::missing_inputs(&plan, &providers);
    let plan = if missing.is_empty() {
        plan
    } else {
        let blocked = missing.iter().map(|m| m.address.clone()).collect();
        kombiform_engine::ops::without(&plan, &blocked)
    };
    if !plan.has_changes() {
        if events.is_none() && missing.is_empty() {
            outln!("Nothing to apply.");
        }
        report_missing(&missing, true);
        return Ok(if missing.is_empty() { 0 } else { 3 });
    }
    if file.is_none() && !auto_approve && !confirm()? {
        errln!("Apply cancelled.");
        return Ok(1);
    }
    let opts = kombiform_engine::apply::Options {
        parallelism: parallelism.max(1),
        ..kombiform_engine::apply::Options::default()
    };
    let total = plan.changes.len();
    let done_count = std::sync::atomic::AtomicUsize::new(0);
    let observe = |e: &kombiform_engine::apply::Event| match events {
        Some(EventFormat::Json) => {
            if let Ok(line) = serde_json::to_string(e) {
                outln!("{line}");
            }
        }
        None => progress(e, &done_count, total),
    };
    let report = kombiform_engine::ops::run_apply(
        &plan, &providers, &backend, state, &opts, &command, &observe,
    )?;
    if events.is_none() {
        outln!("\n{}", apply_summary(&report));
    } else if let Ok(line) =
        serde_json::to_string(&serde_json::json!({"event": "summary", "report": report}))
    {
        outln!("{line}");
    }
    if !report.succeeded() {
        return Ok(1);
    }
    report_missing(&missing, true);
    Ok(if missing.is_empty() { 0 } else { 3 })
}

/// Lists the inputs a person must give, each with the command that gives it.
fn report_missing(missing: &[kombiform_engine::providers::MissingInput], applied: bool) {
    if missing.is_empty() {
        return;
    }
    if applied {
        errln!(
            "\nblocked: {} input(s) only a person can give are missing; everything that needs them was left out. Set each, then run apply again:",
            missing.len()
        );
    } else {
        errln!(
            "\n{} input(s) only a person can give are missing; apply will leave out what needs them until each is set:",
            missing.len()
        );
    }
    for m in missing {
        errln!("  - {} (for {})\n      {}", m.what, m.address, m.command);
    }
}

fn progress(
    e: &kombiform_engine::apply::Event,
    done: &std::sync::atomic::AtomicUsize,
    total: usize,
) {
    use kombiform_engine::apply::Event;
    match e {
        Event::Started { .. } => {}
        Event::Done {
            address,
            action,
            elapsed_ms,
        } => {
            let n = done.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            errln!(
                "[{n}/{total}] {} {address} ({elapsed_ms} ms)",
                action.as_str()
            );
        }
        Event::Retrying {
            address,
            attempt,
            wait_ms,
            error,
        } => {
            errln!(
                "        retrying {address} in {wait_ms} ms (attempt {attempt} failed: {error})"
            );
        }
        Event::Failed { address, error, .. } => errln!("FAILED  {address}: {error}"),
    }
}

fn apply_summary(r: &kombiform_engine::apply::Report) -> String {
    let mut s = format!(
        "Apply {}: {} done, {} failed, {} not started ({} ms).",
        if r.succeeded() { "complete" } else { "stopped" },
        r.done.len(),
        r.failed.len(),
        r.not_started.len(),
        r.elapsed_ms
    );
    for (a, e) in &r.failed {
        s.push_str(&format!("\n  failed: {a}: {e}"));
    }
    if !r.not_started.is_empty() {
        s.push_str(&format!("\n  not started: {}", r.not_started.join(", ")));
        s.push_str(
            "\nRun apply again to finish: completed changes are recorded and will not be repeated.",
        );
    }
    s
}

fn confirm() -> Result<bool> {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        anyhow::bail!("apply needs approval, but standard input is not a terminal: review with `kombiform plan` and pass --auto-approve");
    }
    out!("\nApply these changes? Only `yes` is accepted: ");
    std::io::stdout().flush().ok();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the answer")?;
    Ok(line.trim() == "yes")
}

fn cmd_state(cmd: StateCommand) -> Result<u8> {
    use kombiform_engine::state::StateBackend;
    match cmd {
        StateCommand::List { env, state_dir } => {
            let state = kombiform_engine::state::LocalBackend::new(&state_dir).load(&env)?;
            let rows = kombiform_engine::state::list(&state);
            for (address, summary) in &rows {
                outln!("{address}  {summary}");
            }
            errln!("{} resources, serial {}", rows.len(), state.serial);
            Ok(0)
        }
        StateCommand::Show {
            address,
            env,
            state_dir,
        } => {
            let state = kombiform_engine::state::LocalBackend::new(&state_dir).load(&env)?;
            match kombiform_engine::state::show(&state, &address) {
                Some(r) => {
                    outln!("{}", serde_json::to_string_pretty(r)?);
                    Ok(0)
                }
                None => {
                    errln!("error: `{address}` is not in the state of `{env}`");
                    Ok(1)
                }
            }
        }
        StateCommand::Unlock { id, env, state_dir } => {
            let holder =
                kombiform_engine::state::LocalBackend::new(&state_dir).unlock(&env, &id)?;
            outln!("unlocked `{env}` (was held by {})", holder.describe());
            Ok(0)
        }
    }
}

/// Takes the state lock. A lock whose holder ran on this host and whose process no longer
/// exists (a killed apply) is certainly stale: it is broken, loudly, so that running again
/// resumes. Any other lock fails fast and names its holder.
fn take_lock(
    backend: &kombiform_engine::state::LocalBackend,
    env: &str,
    command: &str,
) -> std::result::Result<kombiform_engine::state::LockGuard, kombiform_engine::state::LockError> {
    use kombiform_engine::state::{LockError, StateBackend as _};
    match backend.lock(env, kombiform_engine::ops::lock_info(command)) {
        Err(LockError::Held {
            holder,
            process_gone: true,
            ..
        }) => {
            errln!(
                "warning: breaking the stale lock of `{env}` held by {}: that process is gone",
                holder.describe()
            );
            backend.unlock(env, &holder.id).map_err(LockError::Io)?;
            backend.lock(env, kombiform_engine::ops::lock_info(command))
        }
        other => other,
    }
}
