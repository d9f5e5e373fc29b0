//! The command line: parse arguments, read files, call the pipeline, print, exit code.
//!
//! The only module (with `main.rs`) that prints or decides exit codes. Exit codes:
//! 0 success (or no differences), 1 errors (invalid specs, IO, damaged state), 2 differences
//! found (`build --check`, `diff`, `plan`), 3 blocked by the destructive guard, 130/143 an
//! apply stopped by SIGINT/SIGTERM.

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
    /// environment. Exit 0: applied, 1: failed or stale, 3: blocked by the guard, 130/143:
    /// stopped by SIGINT/SIGTERM (a second signal exits at once).
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
        /// After SIGINT or SIGTERM, how long changes in flight may take to finish before
        /// they are abandoned (their outcome is then reconciled by the next plan).
        #[arg(long, value_name = "SECONDS", default_value_t = 30)]
        interrupt_grace: u64,
    },
    /// Inspect, check or repair the recorded state, or break a stale lock.
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
        /// Directory of spec files (to tell an unknown environment from one never applied).
        #[arg(long, default_value = "specs")]
        specs: PathBuf,
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
        /// Directory of spec files (to tell an unknown environment from one never applied).
        #[arg(long, default_value = "specs")]
        specs: PathBuf,
    },
    /// Verify the snapshot and the journal; say what a repair would do. Exit 0: sound,
    /// 1: damaged.
    Check {
        /// The environment.
        #[arg(long)]
        env: String,
        /// Directory of the local state backend.
        #[arg(long, default_value = ".kombiform")]
        state_dir: PathBuf,
    },
    /// Repair a damaged state (damaged files are set aside, never deleted); the next
    /// apply adopts live resources that match the specs and are not recorded.
    Repair {
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
            interrupt_grace,
        } => cmd_apply(
            args,
            ApplyFlags {
                file,
                env,
                auto_approve,
                parallelism,
                events,
                interrupt_grace,
            },
        ),
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
    let providers = kombiform_engine::ops::connect(env)?;
    let live = kombiform_engine::ops::read_live(&providers)?;
    let plan = kombiform_engine::ops::make_plan(
        env,
        &hash,
        &state,
        &providers,
        &live,
        &args.allow_destroy,
    )?;
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
    } else if plan.has_changes() || plan.has_state_changes() {
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

/// The flags of `apply`.
struct ApplyFlags {
    file: Option<PathBuf>,
    env: Option<String>,
    auto_approve: bool,
    parallelism: usize,
    events: Option<EventFormat>,
    interrupt_grace: u64,
}

fn cmd_apply(args: DeployArgs, flags: ApplyFlags) -> Result<u8> {
    use kombiform_engine::ops;
    use kombiform_engine::state::StateBackend as _;
    let saved = match &flags.file {
        Some(f) => Some(read_plan(f)?),
        None => None,
    };
    let env_name = match (&saved, &flags.env) {
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
    let stop = crate::signals::Stop::install(flags.interrupt_grace)?;
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let backend = kombiform_engine::state::LocalBackend::new(&args.state_dir);
    let lock = match take_lock(&backend, env.name(), &command) {
        Ok(g) => g,
        Err(e) => {
            errln!("error: {e}");
            return Ok(1);
        }
    };
    {
        let (backend, env, id) = (
            backend.clone(),
            env.name().to_string(),
            lock.info().id.clone(),
        );
        stop.on_stop_while_preparing(Box::new(move || {
            let _ = backend.unlock(&env, &id);
        }));
    }
    let state = backend.load(env.name())?;
    let providers = ops::connect(env)?;
    match ops::deliver_audit(env.name(), &providers, &backend) {
        Ok(0) => {}
        Ok(n) => errln!("delivered {n} audit record(s) kept by an earlier apply"),
        Err(e) => {
            errln!("warning: audit records kept by an earlier apply were not delivered: {e:#}")
        }
    }
    let live = ops::read_live(&providers)?;
    let opts = kombiform_engine::apply::Options {
        parallelism: flags.parallelism.max(1),
        grace: std::time::Duration::from_secs(flags.interrupt_grace),
        ..kombiform_engine::apply::Options::default()
    };
    let events = flags.events;
    let total = std::sync::atomic::AtomicUsize::new(0);
    let done_count = std::sync::atomic::AtomicUsize::new(0);
    let observe = |e: &kombiform_engine::apply::Event| match events {
        Some(EventFormat::Json) => {
            if let Ok(line) = serde_json::to_string(e) {
                outln!("{line}");
            }
        }
        None => progress(
            e,
            &done_count,
            total.load(std::sync::atomic::Ordering::SeqCst),
        ),
    };
    let ctx = ops::ApplyContext {
        providers: &providers,
        backend: &backend,
        opts: &opts,
        interrupt: stop.interrupt(),
        command: &command,
        observe: &observe,
    };
    let plan = match saved {
        Some(p) => {
            if let Some(why) = ops::staleness(&p, &hash, &state, &live) {
                errln!("error: the saved plan is stale and was not applied:\n  {why}\nMake a new plan with `kombiform plan --env {} --out FILE`.", p.env);
                report_audit(ops::audit_unapplied(
                    &p,
                    &ctx,
                    &format!("stale plan: {why}"),
                ));
                return Ok(1);
            }
            p
        }
        None => {
            let p = ops::make_plan(env, &hash, &state, &providers, &live, &args.allow_destroy)?;
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
        report_audit(ops::audit_unapplied(
            &plan,
            &ctx,
            "destructive changes without consent were refused",
        ));
        return Ok(3);
    }
    if !plan.has_changes() && !plan.has_state_changes() {
        if events.is_none() {
            outln!("Nothing to apply.");
        }
        return Ok(0);
    }
    if flags.file.is_none() && !flags.auto_approve && !confirm()? {
        errln!("Apply cancelled.");
        report_audit(ops::audit_unapplied(&plan, &ctx, "cancelled at the prompt"));
        return Ok(1);
    }
    total.store(plan.changes.len(), std::sync::atomic::Ordering::SeqCst);
    stop.enter_apply();
    let applied = ops::run_apply(&plan, &ctx, state);
    if events.is_none() {
        outln!("\n{}", apply_summary(&applied));
    } else if let Ok(line) = serde_json::to_string(&serde_json::json!({
        "event": "summary",
        "report": applied.report,
        "adopted": applied.adopted,
        "forgotten": applied.forgotten,
        "audit": applied.audit.result,
        "errors": applied.errors,
        "warnings": applied.warnings,
    })) {
        outln!("{line}");
    }
    report_audit((applied.errors.clone(), applied.warnings.clone()));
    if let Err(e) = lock.release() {
        errln!("error: releasing the state lock: {e:#}");
        return Ok(1);
    }
    Ok(match stop.code() {
        Some(code) if applied.report.interrupted => code,
        _ if applied.succeeded() => 0,
        _ => 1,
    })
}

/// Prints what went wrong with the state or the audit after an apply.
fn report_audit((errors, warnings): (Vec<String>, Vec<String>)) {
    for w in &warnings {
        errln!("warning: {w}");
    }
    for e in &errors {
        errln!("error: {e}");
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
        Event::Unrecorded { address, error, .. } => {
            errln!("APPLIED, NOT RECORDED  {address}: {error}");
        }
        Event::Failed { address, error, .. } => errln!("FAILED  {address}: {error}"),
        Event::Abandoned { address, .. } => {
            errln!("ABANDONED  {address}: still in flight when the grace period ended")
        }
    }
}

fn apply_summary(a: &kombiform_engine::ops::Applied) -> String {
    let r = &a.report;
    let how = if r.interrupted {
        "interrupted"
    } else if a.succeeded() {
        "complete"
    } else {
        "stopped"
    };
    let mut s = format!(
        "Apply {how}: {} done, {} applied but not recorded, {} failed, {} abandoned, {} not \
         started ({} ms).",
        r.done.len(),
        r.unrecorded.len(),
        r.failed.len(),
        r.abandoned.len(),
        r.not_started.len(),
        r.elapsed_ms
    );
    if a.adopted + a.forgotten > 0 {
        s.push_str(&format!(
            "\nState: adopted {} live resource(s), forgot {} record(s).",
            a.adopted, a.forgotten
        ));
    }
    for (addr, e) in &r.unrecorded {
        s.push_str(&format!("\n  applied, not recorded: {addr}: {e}"));
    }
    for (addr, e) in &r.failed {
        s.push_str(&format!("\n  failed: {addr}: {e}"));
    }
    for addr in &r.abandoned {
        s.push_str(&format!("\n  abandoned (outcome unknown): {addr}"));
    }
    if !r.not_started.is_empty() {
        s.push_str(&format!("\n  not started: {}", r.not_started.join(", ")));
    }
    if !r.succeeded() {
        s.push_str(
            "\nRun apply again to finish: completed changes are recorded and will not be \
             repeated; changes in doubt are compared with what is live and adopted or made again.",
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
    use kombiform_engine::state::{LocalBackend, StateBackend};
    match cmd {
        StateCommand::List {
            env,
            state_dir,
            specs,
        } => {
            let backend = LocalBackend::new(&state_dir);
            let Some(state) = load_state_loudly(&backend, &env, &specs)? else {
                return Ok(1);
            };
            let rows = kombiform_engine::state::list(&state);
            for (address, summary) in &rows {
                outln!("{address}  {summary}");
            }
            errln!(
                "{} resources, {} in doubt, serial {}",
                state.resources.len(),
                state.pending.len(),
                state.serial
            );
            Ok(0)
        }
        StateCommand::Show {
            address,
            env,
            state_dir,
            specs,
        } => {
            let backend = LocalBackend::new(&state_dir);
            let Some(state) = load_state_loudly(&backend, &env, &specs)? else {
                return Ok(1);
            };
            if let Some(action) = state.pending.get(&address) {
                errln!(
                    "warning: `{address}` is in doubt: a {} was started and never recorded; the \
                     next plan reconciles it with what is live",
                    action.as_str()
                );
            }
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
        StateCommand::Check { env, state_dir } => {
            let check = LocalBackend::new(&state_dir).check(&env)?;
            print_check(&env, &check);
            Ok(if check.clean() { 0 } else { 1 })
        }
        StateCommand::Repair { env, state_dir } => {
            let backend = LocalBackend::new(&state_dir);
            let check = backend.check(&env)?;
            if check.clean() {
                print_check(&env, &check);
                outln!("nothing to repair");
                return Ok(0);
            }
            let command = std::env::args().collect::<Vec<_>>().join(" ");
            let lock = match take_lock(&backend, &env, &command) {
                Ok(g) => g,
                Err(e) => {
                    errln!("error: {e}");
                    return Ok(1);
                }
            };
            for p in &check.problems {
                errln!("damaged: {p}");
            }
            for line in backend.repair(&env)? {
                outln!("repaired: {line}");
            }
            lock.release().context("releasing the state lock")?;
            outln!(
                "Next: `kombiform plan --env {env}` shows what the next apply adopts into the \
                 state (live resources that match the specs) and changes."
            );
            Ok(0)
        }
        StateCommand::Unlock { id, env, state_dir } => {
            let holder = LocalBackend::new(&state_dir).unlock(&env, &id)?;
            outln!("unlocked `{env}` (was held by {})", holder.describe());
            Ok(0)
        }
    }
}

fn print_check(env: &str, check: &kombiform_engine::state::Check) {
    if check.clean() {
        outln!(
            "the state of `{env}` is sound: {} resources, serial {}",
            check.resources,
            check.serial
        );
    } else {
        for p in &check.problems {
            outln!("damaged: {p}");
        }
        for r in &check.repairs {
            outln!("repair would: {r}");
        }
        outln!("run `kombiform state repair --env {env}` to repair it");
    }
    for n in &check.notes {
        outln!("note: {n}");
    }
}

/// The state of `env` for `state list/show`. An environment without any state is said so
/// loudly (never shown as "nothing is managed" in silence), and one the specs do not define
/// is an error (`None`: exit 1).
fn load_state_loudly(
    backend: &kombiform_engine::state::LocalBackend,
    env: &str,
    specs: &Path,
) -> Result<Option<kombiform_engine::state::State>> {
    use kombiform_engine::state::StateBackend as _;
    if !backend.exists(env)? {
        let known = load(read_specs(specs).unwrap_or_default()).model.map(|m| {
            m.platforms
                .iter()
                .map(|p| p.name.clone())
                .collect::<Vec<_>>()
        });
        match known {
            Some(names) if !names.iter().any(|n| n == env) => {
                errln!(
                    "error: unknown environment `{env}` (defined in {}: {})",
                    specs.display(),
                    names.join(", ")
                );
                return Ok(None);
            }
            Some(_) => errln!(
                "warning: NO STATE for environment `{env}` in {}: kombiform has not applied \
                 it from here (or --state-dir is wrong). This does not mean nothing is \
                 managed: `kombiform plan --env {env}` shows what is live.",
                backend.dir.display()
            ),
            None => {
                errln!(
                    "error: no state for environment `{env}` in {}, and no specs in {} to tell \
                     whether the environment exists (give --specs or --state-dir)",
                    backend.dir.display(),
                    specs.display()
                );
                return Ok(None);
            }
        }
    }
    Ok(Some(backend.load(env)?))
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
