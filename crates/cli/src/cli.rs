//! The command line: the clap definition of every command, parsing, dispatch, and the
//! commands that talk to live systems (`plan`, `apply`, `state`).
//!
//! The only module (with the other command modules of this crate) that decides exit codes,
//! each with one meaning ([`exit`]): 0 success (or no differences), 1 every error (invalid
//! specs or arguments, an unknown environment, IO, damaged state, a failed or stale apply),
//! 2 differences or changes found (`build --check`, `diff`, `plan`, `migrate-specs
//! --check`), 3 blocked by the destructive guard, 130/143 an apply stopped by SIGINT/SIGTERM.
//! Usage errors exit 1 too (clap's own default, 2, would read as "changes").
//!
//! Not here: the commands that need no live system (`offline`), the prose of `--help`
//! (`help`), progress (`progress`), printing itself (`output`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

use crate::output::ColorChoice;
use crate::{err, errln, help, offline, out, outln, output, progress};

use kombiform_model::Model;
use kombiform_spec::load::load;

pub use crate::offline::{read_specs, write_out};

/// The exit codes, one meaning each.
pub mod exit {
    /// Success: valid, built, no changes or differences.
    pub const OK: u8 = 0;
    /// Every error: invalid specs or arguments, an unknown environment, IO, a failed apply.
    pub const ERROR: u8 = 1;
    /// Changes or differences found.
    pub const CHANGES: u8 = 2;
    /// Blocked: destructive changes without consent.
    pub const BLOCKED: u8 = 3;
}

/// `kombiform --version`: the package version and the commit it was built from
/// (`git describe` at build time; said so when built outside a git checkout).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("KOMBIFORM_BUILD_COMMIT"),
    ")"
);

/// The `kombiform` command.
#[derive(Debug, Parser)]
#[command(
    name = "kombiform",
    version = VERSION,
    about = "kombiform: compile the kombify platform's specs into Kong, Bicep, PocketBase, SQL \
             and service configuration, and plan and apply them to the live systems",
    after_help = help::TOP,
    propagate_version = true,
    arg_required_else_help = true
)]
pub struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

/// Options every command takes.
#[derive(Debug, clap::Args)]
struct GlobalArgs {
    /// When to colour output: auto (on a terminal, never with NO_COLOR set), always, never.
    #[arg(
        long,
        value_enum,
        value_name = "WHEN",
        default_value = "auto",
        global = true
    )]
    color: ColorChoice,
    /// No progress: no spinners, status lines or heartbeats (for CI). Results, warnings and
    /// errors are still printed.
    #[arg(long, short, global = true)]
    quiet: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check the specs: schema and semantic rules, every problem at once.
    #[command(after_help = help::VALIDATE)]
    Validate {
        /// Directory of spec files.
        #[arg(long, default_value = "specs")]
        specs: PathBuf,
        /// Also fail unless this environment is defined.
        #[arg(long)]
        env: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Generate every file into the output directory.
    #[command(after_help = help::BUILD)]
    Build {
        /// Directory of spec files.
        #[arg(long, default_value = "specs")]
        specs: PathBuf,
        /// Output directory (owned by kombiform: files it did not generate are removed).
        #[arg(long, default_value = "generated")]
        out: PathBuf,
        /// Only this environment: only <out>/<env>/ is written (default: all).
        #[arg(long)]
        env: Option<String>,
        /// Write nothing; fail (exit 2) if the output directory is not up to date.
        #[arg(long)]
        check: bool,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Print the dependency graph of every resource.
    #[command(after_help = help::GRAPH)]
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
    #[command(after_help = help::DIFF)]
    Diff {
        /// Directory of spec files.
        #[arg(long, default_value = "specs")]
        specs: PathBuf,
        /// Output directory to compare against.
        #[arg(long, default_value = "generated")]
        out: PathBuf,
        /// Only this environment: only <out>/<env>/ is compared (default: all).
        #[arg(long)]
        env: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Upgrade spec files written for an older apiVersion, in place.
    #[command(after_help = help::MIGRATE)]
    MigrateSpecs {
        /// Directory of spec files.
        #[arg(long, default_value = "specs")]
        specs: PathBuf,
        /// Write nothing; exit 2 if a file needs upgrading.
        #[arg(long)]
        check: bool,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Print the JSON Schema of spec documents.
    #[command(after_help = help::SCHEMA)]
    Schema,
    /// Read live state and show what apply would change.
    #[command(after_help = help::PLAN)]
    Plan {
        /// The environment.
        #[arg(long)]
        env: String,
        #[command(flatten)]
        args: DeployArgs,
        /// Save the plan to FILE, for `kombiform apply FILE`.
        #[arg(long, value_name = "FILE")]
        save: Option<PathBuf>,
        /// Deprecated: use --save FILE.
        #[arg(long, value_name = "FILE", hide = true, conflicts_with = "save")]
        out: Option<PathBuf>,
        /// Deprecated: use --format json.
        #[arg(long, hide = true, conflicts_with = "format")]
        json: bool,
        /// Output format (json: see docs/plan-json.md; markdown: a pull-request comment).
        #[arg(long, value_enum, default_value = "text")]
        format: PlanFormat,
        /// Every attribute of created and deleted resources, and whole values.
        #[arg(long, short)]
        verbose: bool,
    },
    /// Apply a saved plan (exactly that plan, refused if stale), or plan and apply an
    /// environment.
    #[command(after_help = help::APPLY)]
    Apply {
        /// A plan saved by `kombiform plan --save FILE`.
        file: Option<PathBuf>,
        /// The environment (plans first when no FILE is given; must match the FILE's).
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
        /// Output format: text for people, json for machines (one event per line, then a
        /// summary; see docs/plan-json.md).
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        /// Deprecated: use --format json.
        #[arg(long, value_enum, hide = true, conflicts_with = "format")]
        events: Option<EventFormat>,
        /// Every attribute of created and deleted resources in the plan shown, whole values.
        #[arg(long, short)]
        verbose: bool,
        /// When standard error is not a terminal, print a status line every SECONDS (0:
        /// never).
        #[arg(long, value_name = "SECONDS", default_value_t = 10)]
        heartbeat: u64,
        /// After SIGINT or SIGTERM, how long changes in flight may take to finish before
        /// they are abandoned (their outcome is then reconciled by the next plan).
        #[arg(long, value_name = "SECONDS", default_value_t = 30)]
        interrupt_grace: u64,
    },
    /// Inspect, check or repair the recorded state, or break a stale lock.
    #[command(after_help = help::STATE)]
    State {
        #[command(subcommand)]
        command: StateCommand,
    },
    /// Print a shell completion script.
    #[command(after_help = help::COMPLETIONS)]
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page, or write one per command into a directory.
    #[command(after_help = help::MAN)]
    Man {
        /// Write kombiform.1 and kombiform-<command>.1 into DIR instead of printing
        /// kombiform.1.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

/// Where the state is, and which specs tell the environments apart.
#[derive(Debug, clap::Args)]
struct StateArgs {
    /// The environment.
    #[arg(long)]
    env: String,
    /// Directory of the local state backend.
    #[arg(long, default_value = ".kombiform")]
    state_dir: PathBuf,
    /// Directory of spec files (to tell an unknown environment from one never applied, and
    /// which state backend it uses).
    #[arg(long, default_value = "specs")]
    specs: PathBuf,
}

#[derive(Debug, Subcommand)]
enum StateCommand {
    /// Every resource kombiform manages in an environment.
    #[command(after_help = help::STATE_LIST)]
    List {
        #[command(flatten)]
        at: StateArgs,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// One resource as last applied.
    #[command(after_help = help::STATE_SHOW)]
    Show {
        /// The resource address.
        address: String,
        #[command(flatten)]
        at: StateArgs,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Verify the snapshot and the journal; say what a repair would do. Exit 0: sound,
    /// 1: damaged.
    #[command(after_help = help::STATE_CHECK)]
    Check {
        #[command(flatten)]
        at: StateArgs,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Repair a damaged state (damaged files are set aside, never deleted); the next
    /// apply adopts live resources that match the specs and are not recorded.
    #[command(after_help = help::STATE_REPAIR)]
    Repair {
        #[command(flatten)]
        at: StateArgs,
    },
    /// Break a lock deliberately (only with the id the lock error showed).
    #[command(after_help = help::STATE_UNLOCK)]
    Unlock {
        /// The lock id.
        id: String,
        #[command(flatten)]
        at: StateArgs,
    },
}

/// Text for people or JSON for machines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// For people.
    Text,
    /// For machines.
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PlanFormat {
    /// For people.
    Text,
    /// For machines (docs/plan-json.md).
    Json,
    /// A pull-request comment.
    Markdown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum EventFormat {
    /// One JSON object per line.
    Json,
}

/// The formats of `graph`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum GraphFormat {
    /// Each resource and what it needs.
    Text,
    /// Graphviz.
    Dot,
    /// For machines.
    Json,
}

/// Runs the CLI and returns the process exit code.
pub fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    // Before parsing, so that usage errors are coloured (or not) as asked.
    output::set_color(color_in(&args));
    let cli = match parse(&args) {
        Ok(cli) => cli,
        Err(e) => return ExitCode::from(usage(&e)),
    };
    output::set_color(cli.global.color);
    output::set_quiet(cli.global.quiet);
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            print_error(&e);
            ExitCode::from(exit::ERROR)
        }
    }
}

/// Parses the arguments.
fn parse(args: &[OsString]) -> std::result::Result<Cli, clap::Error> {
    let matches = Cli::command().try_get_matches_from(args)?;
    Cli::from_arg_matches(&matches)
}

/// The `--color` of the raw arguments (`auto` when absent or not understood: parsing
/// reports it).
fn color_in(args: &[OsString]) -> ColorChoice {
    let mut it = args.iter().filter_map(|a| a.to_str());
    let mut choice = ColorChoice::Auto;
    while let Some(a) = it.next() {
        let value = match a.strip_prefix("--color") {
            Some("") => it.next(),
            Some(rest) => rest.strip_prefix('='),
            None => continue,
        };
        if let Some(c) = value.and_then(|v| ColorChoice::from_str(v, true).ok()) {
            choice = c;
        }
    }
    choice
}

/// Prints what clap has to say: help and version on standard output (exit 0), usage errors
/// on standard error (exit 1, like every other error).
fn usage(e: &clap::Error) -> u8 {
    use clap::error::ErrorKind;
    let to_stdout = matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion);
    let colour = if to_stdout {
        output::colour_stdout()
    } else {
        output::colour_stderr()
    };
    let styled = e.render();
    let mut text = if colour {
        styled.ansi().to_string()
    } else {
        styled.to_string()
    };
    if !text.ends_with('\n') {
        text.push('\n');
    }
    if to_stdout {
        out!("{text}");
        exit::OK
    } else {
        err!("{text}");
        exit::ERROR
    }
}

/// A hint shown under an error: what to do about it.
#[derive(Debug)]
struct Hint(String);

impl std::fmt::Display for Hint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Prints an error and its causes; a [`Hint`] on top goes on a line of its own.
fn print_error(e: &anyhow::Error) {
    match e.downcast_ref::<Hint>() {
        Some(hint) => {
            let causes: Vec<String> = e.chain().skip(1).map(ToString::to_string).collect();
            errln!("error: {}", causes.join(": "));
            errln!("hint: {hint}");
        }
        None => errln!("error: {e:#}"),
    }
}

/// Adds a hint to an error reaching the live systems of `env`: a refused connection points
/// at the local servers (or the platform spec's host and port).
fn reaching(e: anyhow::Error, env: &str) -> anyhow::Error {
    let refused = e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
            || c.to_string()
                .to_ascii_lowercase()
                .contains("connection refused")
    });
    if !refused {
        return e;
    }
    let hint = if env == "local" {
        "nothing is listening there: start the local servers with `./scripts/local-up.sh` \
         (PostgreSQL on 127.0.0.1:5432, PocketBase on 127.0.0.1:8090)"
            .to_string()
    } else {
        format!(
            "nothing is listening there: is the server up, and are the host and port in the \
             platform spec of `{env}` right?"
        )
    };
    e.context(Hint(hint))
}

fn run(cli: Cli) -> Result<u8> {
    match cli.command {
        Command::Validate { specs, env, format } => {
            offline::validate(&specs, env.as_deref(), format)
        }
        Command::Build {
            specs,
            out,
            env,
            check,
            format,
        } => offline::build(&specs, &out, check, env.as_deref(), format),
        Command::Graph { specs, env, format } => offline::graph(&specs, env.as_deref(), format),
        Command::Diff {
            specs,
            out,
            env,
            format,
        } => offline::diff_cmd(&specs, &out, env.as_deref(), format),
        Command::MigrateSpecs {
            specs,
            check,
            format,
        } => offline::migrate_specs(&specs, check, format),
        Command::Plan {
            env,
            args,
            save,
            out,
            json,
            format,
            verbose,
        } => {
            if out.is_some() {
                errln!("warning: `plan --out FILE` is deprecated: use `--save FILE`");
            }
            if json {
                errln!("warning: `plan --json` is deprecated: use `--format json`");
            }
            let format = if json { PlanFormat::Json } else { format };
            cmd_plan(args, &env, save.or(out), format, verbose)
        }
        Command::Apply {
            file,
            env,
            args,
            auto_approve,
            parallelism,
            format,
            events,
            verbose,
            heartbeat,
            interrupt_grace,
        } => {
            if events.is_some() {
                errln!("warning: `apply --events json` is deprecated: use `--format json`");
            }
            let json = events.is_some() || format == Format::Json;
            cmd_apply(
                args,
                ApplyFlags {
                    file,
                    env,
                    auto_approve,
                    parallelism,
                    json,
                    verbose,
                    heartbeat: Duration::from_secs(heartbeat),
                    interrupt_grace,
                },
            )
        }
        Command::State { command } => cmd_state(command),
        Command::Schema => {
            out!("{}", kombiform_spec::schema::schema_text());
            Ok(exit::OK)
        }
        Command::Completions { shell } => {
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "kombiform", &mut buf);
            out!("{}", String::from_utf8_lossy(&buf));
            Ok(exit::OK)
        }
        Command::Man { out } => man(out.as_deref()),
    }
}

/// `kombiform man`: the page of `kombiform` on standard output, or every page into `dir`.
fn man(dir: Option<&Path>) -> Result<u8> {
    let cmd = Cli::command();
    let Some(dir) = dir else {
        out!("{}", man_page(&cmd)?);
        return Ok(exit::OK);
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut written = vec![write_man(dir, "kombiform", &cmd)?];
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let name = format!("kombiform-{}", sub.get_name());
        let sub = sub
            .clone()
            .display_name(name.clone())
            .bin_name(name.clone());
        written.push(write_man(dir, &name, &sub)?);
    }
    outln!(
        "wrote {} manual pages into {}",
        written.len(),
        dir.display()
    );
    Ok(exit::OK)
}

fn man_page(cmd: &clap::Command) -> Result<String> {
    let mut buf = Vec::new();
    let title = cmd.get_display_name().unwrap_or(cmd.get_name()).to_string();
    clap_mangen::Man::new(cmd.clone())
        .title(title)
        .render(&mut buf)
        .context("rendering the manual page")?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

fn write_man(dir: &Path, name: &str, cmd: &clap::Command) -> Result<PathBuf> {
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, man_page(cmd)?).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

// ---- plan / apply / state ----

/// Arguments shared by `plan` and `apply`.
#[derive(Debug, clap::Args)]
struct DeployArgs {
    /// Directory of spec files.
    #[arg(long, default_value = "specs")]
    specs: PathBuf,
    /// Directory of the local state backend.
    #[arg(long, default_value = ".kombiform")]
    state_dir: PathBuf,
    /// Consent to destroying data (repeatable): `tenant:SLUG` for everything of a tenant, an
    /// address, or an address prefix ending in `*`. A blocked plan prints the exact
    /// arguments it needs.
    #[arg(long = "allow-destroy", value_name = "WHAT")]
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
    if offline::report(&loaded).is_none() {
        return Ok(None);
    }
    Ok(loaded.model.map(|m| (m, hash)))
}

fn find_env<'a>(model: &'a Model, name: &str) -> Result<kombiform_model::Env<'a>> {
    model
        .env(name)
        .with_context(|| offline::unknown_env(model, name))
}

fn color_stdout() -> bool {
    crate::output::colour_stdout()
}

/// Connects to the live systems of `env` (a spinner on a terminal while it takes).
fn connect(
    env: kombiform_model::Env<'_>,
    selection: Option<&kombiform_engine::ops::Selection>,
) -> Result<Vec<kombiform_engine::providers::Provider>> {
    let _spinner = progress::Spinner::now(format!(
        "connecting to the live systems of `{}`",
        env.name()
    ));
    kombiform_engine::ops::connect_selected(env, selection).map_err(|e| reaching(e, env.name()))
}

/// Reads what is live (a spinner naming what is read, on a terminal).
fn read_live(
    env: &str,
    providers: &[kombiform_engine::providers::Provider],
) -> Result<kombiform_engine::ops::Live> {
    let names: Vec<&str> = providers.iter().map(|p| p.name()).collect();
    let _spinner = progress::Spinner::now(format!("reading live state: {}", names.join(", ")));
    kombiform_engine::ops::read_live(providers).map_err(|e| reaching(e, env))
}

/// The text of a plan for people.
fn plan_text(plan: &kombiform_plan::Plan, verbose: bool) -> String {
    kombiform_plan::render::text_with(
        plan,
        kombiform_plan::render::TextOptions {
            color: color_stdout(),
            verbose,
        },
    )
}

/// `--allow-destroy A --allow-destroy B`.
fn consent_flags(plan: &kombiform_plan::Plan) -> String {
    kombiform_plan::consent_arguments(plan)
        .iter()
        .map(|a| format!("--allow-destroy {a}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn cmd_plan(
    args: DeployArgs,
    env: &str,
    save: Option<PathBuf>,
    format: PlanFormat,
    verbose: bool,
) -> Result<u8> {
    let Some((model, hash)) = load_env_model(&args.specs)? else {
        return Ok(exit::ERROR);
    };
    let env = find_env(&model, env)?;
    let backend = state_backend(Some(env.platform), &args.state_dir)?;
    let state = backend.load(env.name())?;
    let selection = kombiform_engine::ops::select(env, &args.target)?;
    let providers = connect(env, selection.as_ref())?;
    let live = read_live(env.name(), &providers)?;
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
    if let Some(path) = &save {
        write_plan(path, &plan)?;
    }
    match format {
        PlanFormat::Json => out!("{}", kombiform_plan::render::json(&plan)),
        PlanFormat::Markdown => out!("{}", kombiform_plan::render::markdown(&plan)),
        PlanFormat::Text => {
            out!("{}", plan_text(&plan, verbose));
            if !output::quiet() {
                errln!("read live state with {} requests", live.requests);
            }
            report_missing(&missing, false);
            if let Some(path) = &save {
                saved_hint(path, &plan);
            } else if !plan.refused.is_empty() && plan.refused.len() > plan.vetoed.len() {
                outln!(
                    "\nTo apply it with consent:\n  kombiform apply --env {} {}",
                    plan.env,
                    consent_flags(&plan)
                );
            }
        }
    }
    Ok(plan_exit(&plan))
}

/// What to do with a saved plan: apply it, or, when it is blocked, give the consent it lacks
/// (or change the specs, for changes no consent allows).
fn saved_hint(path: &Path, plan: &kombiform_plan::Plan) {
    let file = path.display();
    if plan.refused.is_empty() {
        outln!(
            "\nSaved the plan to {file}. Apply exactly this plan with:\n  kombiform apply {file}"
        );
    } else if plan.refused.len() == plan.vetoed.len() {
        outln!(
            "\nSaved the plan to {file}. It is blocked and cannot be applied: it holds changes \
             no consent allows (above); change the specs and plan again."
        );
    } else if plan.vetoed.is_empty() {
        outln!(
            "\nSaved the plan to {file}. It is blocked: apply it only with consent to what it \
             destroys:\n  kombiform apply {file} {}",
            consent_flags(plan)
        );
    } else {
        outln!(
            "\nSaved the plan to {file}. It is blocked and cannot be applied: besides the \
             consent it lacks ({}), it holds changes no consent allows (above); change the \
             specs and plan again.",
            consent_flags(plan)
        );
    }
}

fn plan_exit(plan: &kombiform_plan::Plan) -> u8 {
    if !plan.refused.is_empty() {
        exit::BLOCKED
    } else if plan.has_changes() || plan.has_state_changes() {
        exit::CHANGES
    } else {
        exit::OK
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
    json: bool,
    verbose: bool,
    heartbeat: Duration,
    interrupt_grace: u64,
}

/// Consent given to a saved plan at apply time: what it covers is allowed (said so); what
/// stays refused is the caller's to report.
fn grant_consent(plan: &mut kombiform_plan::Plan, allow: &[String]) {
    if allow.is_empty() {
        return;
    }
    let consent = kombiform_plan::Consent {
        allowed: allow.iter().cloned().collect(),
        ..kombiform_plan::Consent::default()
    };
    let granted = kombiform_plan::grant(plan, &consent);
    if !granted.is_empty() && !output::quiet() {
        errln!(
            "consent given for {} destructive change(s) of the saved plan",
            granted.len()
        );
    }
}

/// Why a plan is refused, and what to type: the `--allow-destroy` arguments it lacks, and
/// the changes no consent allows.
fn report_refused(plan: &kombiform_plan::Plan, file: Option<&Path>) {
    errln!(
        "error: nothing was applied: {} change(s) are refused",
        plan.refused.len()
    );
    for (a, why) in &plan.vetoed {
        errln!("  - {a}: never applied, whatever the consent: {why}");
    }
    let needs = kombiform_plan::consent_arguments(plan);
    if needs.is_empty() {
        errln!("Change the specs so that the plan no longer holds them, and plan again.");
        return;
    }
    let refused_consent = plan.refused.len() - plan.vetoed.len();
    errln!("  {refused_consent} destructive change(s) need consent.");
    if !plan.vetoed.is_empty() {
        errln!("Change the specs first: consent cannot allow the changes above.");
        return;
    }
    match file {
        Some(f) => errln!(
            "Apply it with consent:\n  kombiform apply {} {}",
            f.display(),
            consent_flags(plan)
        ),
        None => errln!(
            "Apply with consent:\n  kombiform apply --env {} {}",
            plan.env,
            consent_flags(plan)
        ),
    }
}

fn cmd_apply(args: DeployArgs, flags: ApplyFlags) -> Result<u8> {
    use kombiform_engine::ops;
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
        (None, None) => anyhow::bail!(
            "give a plan file (`kombiform apply FILE`), or --env NAME to plan and apply"
        ),
    };
    let Some((model, hash)) = load_env_model(&args.specs)? else {
        return Ok(exit::ERROR);
    };
    let env = find_env(&model, &env_name)?;
    let stop = crate::signals::Stop::install(flags.interrupt_grace)?;
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let backend = state_backend(Some(env.platform), &args.state_dir)?;
    let lock = match take_lock(&*backend, env.name(), &command) {
        Ok(g) => g,
        Err(e) => {
            errln!("error: {e}");
            return Ok(exit::ERROR);
        }
    };
    {
        let (backend, env, id) = (
            std::sync::Arc::clone(&backend),
            env.name().to_string(),
            lock.info().id.clone(),
        );
        stop.on_stop_while_preparing(Box::new(move || {
            let _ = backend.unlock(&env, &id);
        }));
    }
    let state = backend.load(env.name())?;
    let selection = match &saved {
        // A saved plan is checked against the providers it was made with.
        Some(p) => Some(ops::Selection {
            targets: p.fingerprints.keys().cloned().collect(),
            ..ops::Selection::default()
        }),
        None => ops::select(env, &args.target)?,
    };
    let providers = connect(env, selection.as_ref())?;
    match ops::deliver_audit(env.name(), &providers, &*backend) {
        Ok(0) => {}
        Ok(n) => errln!("delivered {n} audit record(s) kept by an earlier apply"),
        Err(e) => {
            errln!("warning: audit records kept by an earlier apply were not delivered: {e:#}")
        }
    }
    let live = read_live(env.name(), &providers)?;
    let opts = kombiform_engine::apply::Options {
        parallelism: flags.parallelism.max(1),
        grace: std::time::Duration::from_secs(flags.interrupt_grace),
        ..kombiform_engine::apply::Options::default()
    };
    let json = flags.json;
    let shown: std::sync::Mutex<Option<progress::ApplyProgress>> = std::sync::Mutex::new(None);
    let total = std::sync::atomic::AtomicUsize::new(0);
    let done_count = std::sync::atomic::AtomicUsize::new(0);
    let observe = |e: &kombiform_engine::apply::Event| {
        if let Some(p) = shown.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            p.observe(e);
        }
        if json {
            if let Ok(line) = serde_json::to_string(e) {
                outln!("{line}");
            }
        } else if !output::quiet() {
            log_event(
                e,
                &done_count,
                total.load(std::sync::atomic::Ordering::SeqCst),
            );
        }
    };
    let ctx = ops::ApplyContext {
        providers: &providers,
        backend: &*backend,
        opts: &opts,
        interrupt: stop.interrupt(),
        command: &command,
        observe: &observe,
    };
    let plan = match saved {
        Some(mut p) => {
            if let Some(why) = ops::staleness(&p, &hash, &state, &live) {
                errln!("error: the saved plan is stale and was not applied:\n  {why}\nMake a new plan with `kombiform plan --env {} --save FILE`.", p.env);
                report_audit(ops::audit_unapplied(
                    &p,
                    &ctx,
                    &format!("stale plan: {why}"),
                ));
                return Ok(exit::ERROR);
            }
            grant_consent(&mut p, &args.allow_destroy);
            p
        }
        None => {
            let mut p = ops::make_plan(env, &hash, &state, &providers, &live, &args.allow_destroy)?;
            if let Some(s) = &selection {
                ops::restrict(&mut p, s);
            }
            if !json {
                out!("{}", plan_text(&p, flags.verbose));
            }
            p
        }
    };
    if !plan.refused.is_empty() {
        report_refused(&plan, flags.file.as_deref());
        report_audit(ops::audit_unapplied(
            &plan,
            &ctx,
            "destructive changes without consent, or changes never applied, were refused",
        ));
        return Ok(exit::BLOCKED);
    }
    // Changes that need an input nobody gave (a secret only a person can set) wait, with
    // everything that depends on them; the rest is applied, then apply stops with exit 3.
    let missing = ops::missing_inputs(&plan, &providers);
    let plan = if missing.is_empty() {
        plan
    } else {
        let blocked = missing.iter().map(|m| m.address.clone()).collect();
        ops::without(&plan, &blocked)
    };
    if !plan.has_changes() && !plan.has_state_changes() {
        if !json && missing.is_empty() {
            outln!("Nothing to apply.");
        }
        report_missing(&missing, true);
        return Ok(if missing.is_empty() {
            exit::OK
        } else {
            exit::BLOCKED
        });
    }
    if flags.file.is_none() && !flags.auto_approve && !confirm()? {
        errln!("Apply cancelled.");
        report_audit(ops::audit_unapplied(&plan, &ctx, "cancelled at the prompt"));
        return Ok(exit::ERROR);
    }
    total.store(plan.changes.len(), std::sync::atomic::Ordering::SeqCst);
    *shown.lock().unwrap_or_else(|p| p.into_inner()) = Some(progress::ApplyProgress::start(
        plan.changes.len(),
        flags.heartbeat,
    ));
    stop.enter_apply();
    let applied = ops::run_apply(&plan, &ctx, state);
    // The status line goes before the summary is printed.
    drop(shown.lock().unwrap_or_else(|p| p.into_inner()).take());
    if !json {
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
        return Ok(exit::ERROR);
    }
    Ok(match stop.code() {
        Some(code) if applied.report.interrupted => code,
        _ if !applied.succeeded() => exit::ERROR,
        _ => {
            report_missing(&missing, true);
            if missing.is_empty() {
                exit::OK
            } else {
                exit::BLOCKED
            }
        }
    })
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

/// Prints what went wrong with the state or the audit after an apply.
fn report_audit((errors, warnings): (Vec<String>, Vec<String>)) {
    for w in &warnings {
        errln!("warning: {w}");
    }
    for e in &errors {
        errln!("error: {e}");
    }
}

/// One line per completed, retried or failed change (the apply's log, on standard error).
fn log_event(
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
    match cmd {
        StateCommand::List { at, format } => {
            let backend = state_backend_at(&at)?;
            let Some(state) = load_state_loudly(&*backend, &at.env, &at.specs)? else {
                return Ok(exit::ERROR);
            };
            let rows = kombiform_engine::state::list(&state);
            if format == Format::Json {
                let resources: Vec<serde_json::Value> = rows
                    .iter()
                    .map(|(address, summary)| {
                        serde_json::json!({
                            "address": address,
                            "summary": summary,
                            "in_doubt": state.pending.contains_key(address.as_str()),
                        })
                    })
                    .collect();
                outln!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "env": at.env,
                        "serial": state.serial,
                        "resources": resources,
                        "in_doubt": state.pending.keys().collect::<Vec<_>>(),
                    }))?
                );
                return Ok(exit::OK);
            }
            for (address, summary) in &rows {
                outln!("{address}  {summary}");
            }
            errln!(
                "{} resources, {} in doubt, serial {}",
                state.resources.len(),
                state.pending.len(),
                state.serial
            );
            Ok(exit::OK)
        }
        StateCommand::Show {
            address,
            at,
            format,
        } => {
            let backend = state_backend_at(&at)?;
            let Some(state) = load_state_loudly(&*backend, &at.env, &at.specs)? else {
                return Ok(exit::ERROR);
            };
            if let Some(action) = state.pending.get(&address) {
                errln!(
                    "warning: `{address}` is in doubt: a {} was started and never recorded; the \
                     next plan reconciles it with what is live",
                    action.as_str()
                );
            }
            let Some(r) = kombiform_engine::state::show(&state, &address) else {
                errln!("error: `{address}` is not in the state of `{}`", at.env);
                return Ok(exit::ERROR);
            };
            match format {
                Format::Json => outln!("{}", serde_json::to_string_pretty(r)?),
                Format::Text => out!("{}", resource_text(&address, &serde_json::to_value(r)?)),
            }
            Ok(exit::OK)
        }
        StateCommand::Check { at, format } => {
            let backend = state_backend_at(&at)?;
            if !env_known(&*backend, &at.env, &at.specs)? {
                return Ok(exit::ERROR);
            }
            let check = backend.check(&at.env)?;
            if format == Format::Json {
                outln!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "env": at.env,
                        "sound": check.clean(),
                        "resources": check.resources,
                        "serial": check.serial,
                        "problems": check.problems,
                        "repairs": check.repairs,
                        "notes": check.notes,
                    }))?
                );
            } else {
                print_check(&at.env, &check);
            }
            Ok(if check.clean() { exit::OK } else { exit::ERROR })
        }
        StateCommand::Repair { at } => {
            let backend = state_backend_at(&at)?;
            let env = at.env;
            if !env_known(&*backend, &env, &at.specs)? {
                return Ok(exit::ERROR);
            }
            let check = backend.check(&env)?;
            if check.clean() {
                print_check(&env, &check);
                outln!("nothing to repair");
                return Ok(exit::OK);
            }
            let command = std::env::args().collect::<Vec<_>>().join(" ");
            let lock = match take_lock(&*backend, &env, &command) {
                Ok(g) => g,
                Err(e) => {
                    errln!("error: {e}");
                    return Ok(exit::ERROR);
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
            Ok(exit::OK)
        }
        StateCommand::Unlock { id, at } => {
            let backend = state_backend_at(&at)?;
            if !env_known(&*backend, &at.env, &at.specs)? {
                return Ok(exit::ERROR);
            }
            let holder = backend.unlock(&at.env, &id)?;
            outln!("unlocked `{}` (was held by {})", at.env, holder.describe());
            Ok(exit::OK)
        }
    }
}

/// A recorded resource for people: its address, then one `name: value` line per attribute.
fn resource_text(address: &str, v: &serde_json::Value) -> String {
    let mut s = format!("{address}\n");
    let attrs = v
        .get("attrs")
        .and_then(serde_json::Value::as_object)
        .into_iter()
        .flatten();
    for (k, value) in attrs {
        let name = kombiform_plan::render::display_name(k, None, Some(value));
        s.push_str(&format!("  {name}: {value}\n"));
    }
    if let Some(obj) = v.as_object() {
        for (k, value) in obj.iter().filter(|(k, _)| *k != "attrs" && *k != "address") {
            s.push_str(&format!("  ({k}: {value})\n"));
        }
    }
    s
}

/// Whether `env` is one the specs define, or one with state here; an unknown one is said so
/// (false: exit 1), never treated as empty.
fn env_known(
    backend: &dyn kombiform_engine::state::StateBackend,
    env: &str,
    specs: &Path,
) -> Result<bool> {
    if backend.exists(env)? {
        return Ok(true);
    }
    let known = load(read_specs(specs).unwrap_or_default()).model.map(|m| {
        m.platforms
            .iter()
            .map(|p| p.name.clone())
            .collect::<Vec<_>>()
    });
    match known {
        Some(names) if names.iter().any(|n| n == env) => Ok(true),
        Some(names) => {
            errln!(
                "error: unknown environment `{env}` (defined in {}: {})",
                specs.display(),
                names.join(", ")
            );
            Ok(false)
        }
        None => {
            errln!(
                "error: no state for environment `{env}` in {}, and no specs in {} to tell \
                 whether the environment exists (give --specs or --state-dir)",
                backend.location(),
                specs.display()
            );
            Ok(false)
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
    backend: &dyn kombiform_engine::state::StateBackend,
    env: &str,
    specs: &Path,
) -> Result<Option<kombiform_engine::state::State>> {
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
                backend.location()
            ),
            None => {
                errln!(
                    "error: no state for environment `{env}` in {}, and no specs in {} to tell \
                     whether the environment exists (give --specs or --state-dir)",
                    backend.location(),
                    specs.display()
                );
                return Ok(None);
            }
        }
    }
    Ok(Some(backend.load(env)?))
}

/// The state backend the platform spec of an environment chooses (`state:`): files under
/// `state_dir` (the default, also when no platform is known), or an Azure Blob container
/// (`KOMBIFORM_BLOB_ENDPOINT` points it elsewhere, e.g. at Azurite).
fn state_backend(
    platform: Option<&kombiform_model::Platform>,
    state_dir: &Path,
) -> Result<std::sync::Arc<dyn kombiform_engine::state::StateBackend>> {
    use kombiform_engine::state::{BlobBackend, BlobSettings, LocalBackend};
    let Some(p) =
        platform.filter(|p| p.state.backend == kombiform_model::StateBackendKind::AzureBlob)
    else {
        return Ok(std::sync::Arc::new(LocalBackend::new(state_dir)));
    };
    let (Some(account), Some(container)) = (&p.state.account, &p.state.container) else {
        anyhow::bail!(
            "the platform `{}` keeps its state in Azure Blob but names no account or container",
            p.name
        );
    };
    let settings = BlobSettings::for_account(account, container, p.state.lease_seconds, &|k| {
        std::env::var(k).ok()
    })?;
    let backend = BlobBackend::connect(settings)
        .with_context(|| format!("connecting to the state of `{}` in Azure Blob", p.name))?;
    Ok(std::sync::Arc::new(backend))
}

/// The state backend of `state` commands: the one the specs choose for the environment, if
/// the specs can be read and define it; the local one otherwise.
fn state_backend_at(
    at: &StateArgs,
) -> Result<std::sync::Arc<dyn kombiform_engine::state::StateBackend>> {
    let model = load(read_specs(&at.specs).unwrap_or_default()).model;
    let platform = model
        .as_ref()
        .and_then(|m| m.platforms.iter().find(|p| p.name == at.env));
    state_backend(platform, &at.state_dir)
}

/// Takes the state lock. A lock whose holder ran on this host and whose process no longer
/// exists (a killed apply) is certainly stale: it is broken, loudly, so that running again
/// resumes. Any other lock fails fast and names its holder.
fn take_lock(
    backend: &dyn kombiform_engine::state::StateBackend,
    env: &str,
    command: &str,
) -> std::result::Result<kombiform_engine::state::LockGuard, kombiform_engine::state::LockError> {
    use kombiform_engine::state::LockError;
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
