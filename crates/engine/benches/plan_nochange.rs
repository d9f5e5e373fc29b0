//! Benchmark: a no-change `plan` against a real PostgreSQL and a real PocketBase at 1,000 and
//! 10,000 synthetic tenants — wall time, requests, resources, and the per-provider split.
//!
//! Run with `cargo bench --bench plan_nochange`. For each size it starts fresh servers on
//! loopback (the test support code), points the synthetic specs' `local` Platform at them,
//! brings both systems to the desired state directly (not through apply: PostgreSQL runs the
//! emitted schema and data scripts, PocketBase imports the emitted collections in chunks),
//! then times `ops::connect` + `ops::read_live` + `ops::make_plan` with an empty state and
//! asserts the plan has no change. Setup time is reported separately.
//!
//! PocketBase's import slows down as collections accumulate, so its setup has a time budget
//! (`KOMBIFORM_PLANBENCH_PB_BUDGET_MIN`, 20 minutes): when even the current per-collection
//! rate, without further growth, would exceed it, the tenants not yet imported are seeded
//! straight into PocketBase's SQLite database (copies of the `_collections` rows PocketBase
//! stored for the first tenant, ident replaced; needs the `sqlite3` program), and the output
//! says so with the measured import rate. `KOMBIFORM_PLANBENCH_SEED=0` leaves PocketBase out of such a size
//! instead. Without `--bench` (`cargo test --all-targets`) one run of 20 tenants is a smoke
//! test.
//!
//! Knobs: `KOMBIFORM_PLANBENCH_SIZES` (comma-separated tenant counts),
//! `KOMBIFORM_PLANBENCH_CHUNK` (collections per import request), `KOMBIFORM_PLANBENCH_RUNS`,
//! `KOMBIFORM_PLANBENCH_PB_BUDGET_MIN`, `KOMBIFORM_PLANBENCH_SEED`.

// A benchmark reports its figures on standard output.
#![allow(clippy::print_stdout, clippy::print_stderr)]

#[allow(dead_code)]
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use kombiform_engine::ops;
use kombiform_engine::providers::{self, Provider};
use kombiform_engine::state::State;
use kombiform_model::Env;
use kombiform_spec::load::{load, Input};
use kombiform_test_support::synthetic::synthetic_specs;

use kombiform_test_support::pocketbase::{PocketBase, SUPERUSER_EMAIL, SUPERUSER_PASSWORD};
use kombiform_test_support::postgres::Postgres;

const SIZES: &[usize] = &[1_000, 10_000];
const SMOKE: &[usize] = &[20];
/// Timed runs per size (best is reported); each run connects afresh.
const RUNS: usize = 3;
/// Collections per `PUT /api/collections/import`.
const CHUNK: usize = 500;
/// PocketBase setup budget per size, in minutes.
const PB_BUDGET_MIN: u64 = 20;
/// The platform database of the synthetic specs.
const DATABASE: &str = "kombify_platform";

fn main() {
    if let Err(e) = run() {
        eprintln!("plan_nochange: {e:#}");
        std::process::exit(1);
    }
}

/// What one size measured.
struct Row {
    tenants: usize,
    /// PocketBase was part of the plan (its setup fit the budget).
    with_pb: bool,
    /// Why PocketBase was left out.
    pb_note: Option<String>,
    setup_pg: Duration,
    setup_pb: Duration,
    connect: Duration,
    read_live: Duration,
    make_plan: Duration,
    total: Duration,
    requests: u64,
    resources: usize,
    unchanged: usize,
    pg: ProviderRead,
    pb: Option<ProviderRead>,
}

/// One provider's `read()`, timed alone.
#[derive(Clone, Copy)]
struct ProviderRead {
    time: Duration,
    requests: u64,
    resources: usize,
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let full = args.iter().any(|a| a == "--bench");
    let sizes = match std::env::var("KOMBIFORM_PLANBENCH_SIZES") {
        Ok(s) => s
            .split(',')
            .map(|n| n.trim().parse::<usize>())
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("KOMBIFORM_PLANBENCH_SIZES={s:?}"))?,
        Err(_) if full => SIZES.to_vec(),
        Err(_) => SMOKE.to_vec(),
    };
    let runs = env_number("KOMBIFORM_PLANBENCH_RUNS", if full { RUNS } else { 1 })?.max(1);
    let chunk = env_number("KOMBIFORM_PLANBENCH_CHUNK", CHUNK)?.max(1);
    let budget = Duration::from_secs(
        60 * env_number("KOMBIFORM_PLANBENCH_PB_BUDGET_MIN", PB_BUDGET_MIN as usize)? as u64,
    );
    let seed = env_number("KOMBIFORM_PLANBENCH_SEED", 1)? != 0;
    // `ops::connect` resolves the PocketBase password from the environment, as the CLI does.
    // Edition 2021: `set_var` is safe; no other thread runs yet.
    std::env::set_var("POCKETBASE_SUPERUSER_PASSWORD", SUPERUSER_PASSWORD);
    // The services' PostgreSQL roles (created by the settling apply below).
    std::env::set_var("PG_KOMBIFY_SSO_PASSWORD", "bench-sso-role-password");
    std::env::set_var("PG_KOMBIFY_HEALTH_PASSWORD", "bench-health-role-password");

    println!(
        "kombiform no-change plan benchmark: real PostgreSQL + PocketBase on loopback, \
         {runs} run(s) per size (best), import chunks of {chunk}, PocketBase setup budget {} min",
        budget.as_secs() / 60
    );
    let mut rows = Vec::new();
    for &n in &sizes {
        let row = measure(n, runs, chunk, budget, seed).with_context(|| format!("{n} tenants"))?;
        rows.push(row);
    }
    print_table(&rows);
    Ok(())
}

fn measure(n: usize, runs: usize, chunk: usize, budget: Duration, seed: bool) -> Result<Row> {
    eprintln!("== {n} tenants: starting servers");
    let pg = Postgres::start()?;
    pg.create_database(DATABASE)?;
    let pb = PocketBase::start()?;
    let inputs = point_at(synthetic_specs(n), &pg, &pb)?;
    let hash = ops::spec_hash(&inputs, "specs");
    let loaded = load(inputs);
    let Some(model) = loaded.model.as_ref() else {
        bail!("the synthetic specs do not validate:\n{}", loaded.render());
    };
    let env = model.env("local").context("no `local` environment")?;

    let started = Instant::now();
    let mut client = pg.connect(DATABASE)?;
    client
        .batch_execute(&kombiform_emit::sql::schema_sql())
        .context("running the schema script")?;
    client
        .batch_execute(&kombiform_emit::sql::data_sql(env))
        .context("running the data script")?;
    drop(client);
    let setup_pg = started.elapsed();
    eprintln!("   PostgreSQL set up in {:.1} s", setup_pg.as_secs_f64());

    let started = Instant::now();
    let PbSetup {
        with_pb,
        note: pb_note,
    } = set_up_pocketbase(&pb, env, chunk, budget, seed)?;
    let setup_pb = started.elapsed();
    if with_pb {
        eprintln!("   PocketBase set up in {:.1} s", setup_pb.as_secs_f64());
    } else {
        eprintln!("   PocketBase LEFT OUT of this size");
    }

    let state = State::new("local", "bench");
    if with_pb {
        settle(env, &hash, &state)?;
    }
    let mut best: Option<Row> = None;
    for run in 0..runs {
        let t0 = Instant::now();
        let providers = if with_pb {
            ops::connect(env)?
        } else {
            connect_postgres_only(env)?
        };
        let t1 = Instant::now();
        let live = ops::read_live(&providers)?;
        let t2 = Instant::now();
        let plan = ops::make_plan(env, &hash, &state, &providers, &live, &[])?;
        let t3 = Instant::now();
        if !plan.changes.is_empty() {
            let first: Vec<String> = plan
                .changes
                .iter()
                .take(10)
                .map(|c| {
                    let attrs: Vec<&str> =
                        c.attrs.iter().map(|a| a.name.as_str()).take(5).collect();
                    format!("{} {} [{}]", c.action.as_str(), c.address, attrs.join(", "))
                })
                .collect();
            bail!(
                "the no-change plan has {} change(s) ({} unchanged) — normalisation differs at \
                 scale; the first:\n  {}",
                plan.changes.len(),
                plan.unchanged,
                first.join("\n  ")
            );
        }
        let (pg_read, pb_read) = read_each(&providers)?;
        eprintln!(
            "   run {}: connect {:.0} ms, read_live {:.0} ms, make_plan {:.0} ms; \
             {} requests, {} resources unchanged",
            run + 1,
            ms(t1 - t0),
            ms(t2 - t1),
            ms(t3 - t2),
            live.requests,
            plan.unchanged
        );
        let row = Row {
            tenants: n,
            with_pb,
            pb_note: pb_note.clone(),
            setup_pg,
            setup_pb,
            connect: t1 - t0,
            read_live: t2 - t1,
            make_plan: t3 - t2,
            total: t3 - t0,
            requests: live.requests,
            resources: live.resources.len(),
            unchanged: plan.unchanged,
            pg: pg_read,
            pb: pb_read,
        };
        if best.as_ref().is_none_or(|b| row.total < b.total) {
            best = Some(row);
        }
    }
    best.context("no run")
}

/// Each provider's `read()` alone (after the timed run, so PocketBase's authentication is
/// already reported): PostgreSQL's and PocketBase's share of the parallel `read_live`.
fn read_each(providers: &[Provider]) -> Result<(ProviderRead, Option<ProviderRead>)> {
    let mut pg = None;
    let mut pb = None;
    for p in providers {
        let started = Instant::now();
        let read = p
            .client
            .read()
            .with_context(|| format!("reading {}", p.name()))?;
        let measured = ProviderRead {
            time: started.elapsed(),
            requests: read.requests,
            resources: read.resources.len(),
        };
        match p.name() {
            "postgres" => pg = Some(measured),
            _ => pb = Some(measured),
        }
    }
    Ok((pg.context("no postgres provider")?, pb))
}

/// The PostgreSQL provider alone, connected as `ops::connect` does it.
fn connect_postgres_only(env: Env<'_>) -> Result<Vec<Provider>> {
    let r = providers::postgres::REGISTRATION;
    Ok(vec![Provider {
        target: r.target,
        client: (r.connect)(env)?.into(),
    }])
}

/// The synthetic specs with the `local` Platform pointed at the test servers.
fn point_at(mut inputs: Vec<Input>, pg: &Postgres, pb: &PocketBase) -> Result<Vec<Input>> {
    let local = inputs
        .iter_mut()
        .find(|i| i.path == "specs/platform/local.yaml")
        .context("no specs/platform/local.yaml in the synthetic specs")?;
    let text = local
        .text
        .replace("    port: 5432\n", &format!("    port: {}\n", pg.port()))
        .replace(
            "  pocketbase:\n    url: http://127.0.0.1:8090\n    superuserEmail: admin@kombify.localhost",
            &format!(
                "  pocketbase:\n    url: {}\n    superuserEmail: {SUPERUSER_EMAIL}",
                pb.url()
            ),
        );
    if !text.contains(&pb.url()) || !text.contains(&format!("port: {}\n", pg.port())) {
        bail!("could not point local.yaml at the test servers");
    }
    local.text = text;
    Ok(inputs)
}

/// Applies, through the engine, what the direct set-up does not write (the services' roles,
/// PocketBase's backup settings: a handful of resources whatever the tenant count), so that
/// the measured plan is a no-change plan.
fn settle(env: Env<'_>, hash: &str, state: &State) -> Result<()> {
    use kombiform_engine::apply::{self, Interrupt, Recorder};
    use kombiform_plan::Change;
    struct NoState;
    impl Recorder for NoState {
        fn started(&mut self, _: &[&Change]) -> Result<()> {
            Ok(())
        }
        fn done(&mut self, _: &[&Change]) -> Result<()> {
            Ok(())
        }
    }
    let providers = ops::connect(env)?;
    let live = ops::read_live(&providers)?;
    let plan = ops::make_plan(env, hash, state, &providers, &live, &[])?;
    if plan.changes.is_empty() {
        return Ok(());
    }
    if plan.changes.len() > 10 {
        bail!(
            "the set-up left {} changes to apply (expected only the roles and settings)",
            plan.changes.len()
        );
    }
    let by_name = providers
        .iter()
        .map(|p| (p.name().to_string(), std::sync::Arc::clone(&p.client)))
        .collect();
    let report = apply::apply(
        &plan,
        &by_name,
        &apply::Options::default(),
        &mut NoState,
        &Interrupt::new(),
        &|_| {},
    );
    if !report.succeeded() {
        bail!("settling the set-up failed: {report:?}");
    }
    eprintln!("   settled {} change(s) through apply", plan.changes.len());
    Ok(())
}

/// How PocketBase was brought to the desired state.
struct PbSetup {
    /// PocketBase takes part in the plan.
    with_pb: bool,
    /// How, when not all through the import API (or why PocketBase was left out).
    note: Option<String>,
}

/// Imports every collection of `env` in chunks through `PUT /api/collections/import`.
///
/// After each chunk, the remaining collections at the latest chunk's rate (no further growth
/// assumed, so a lower bound) must fit what is left of `budget`. When they do not, the rest is
/// seeded straight into PocketBase's SQLite (see [`seed`]) unless `seed_allowed` is false, in
/// which case PocketBase is left out of this size.
fn set_up_pocketbase(
    pb: &PocketBase,
    env: Env<'_>,
    chunk: usize,
    budget: Duration,
    seed_allowed: bool,
) -> Result<PbSetup> {
    let all = kombiform_emit::pocketbase::collections(env);
    let total = all.len();
    let importer = Importer::new(pb)?;
    let started = Instant::now();
    let mut done = 0usize;
    let mut last_report = Instant::now();
    for part in all.chunks(chunk) {
        let t = Instant::now();
        importer.import(part)?;
        let took = t.elapsed();
        done += part.len();
        let per = took.as_secs_f64() / part.len() as f64;
        let elapsed = started.elapsed();
        let remaining = Duration::from_secs_f64(per * (total - done) as f64);
        if last_report.elapsed() > Duration::from_secs(30) || done == total {
            eprintln!(
                "   PocketBase import: {done}/{total} collections in {:.0} s \
                 (last chunk {:.1} ms/collection)",
                elapsed.as_secs_f64(),
                per * 1e3
            );
            last_report = Instant::now();
        }
        if done < total && elapsed + remaining > budget {
            let why = format!(
                "importing {total} collections does not fit {} min: after {done} in {:.0} s \
                 the import takes {:.1} ms per collection (growing with the collections \
                 already there); the remaining {} need at least {:.0} min more",
                budget.as_secs() / 60,
                elapsed.as_secs_f64(),
                per * 1e3,
                total - done,
                remaining.as_secs_f64() / 60.0
            );
            eprintln!("   {why}");
            if !seed_allowed {
                return Ok(PbSetup {
                    with_pb: false,
                    note: Some(why),
                });
            }
            let how = seed(pb, env, &all, done, &importer)?;
            return Ok(PbSetup {
                with_pb: true,
                note: Some(format!("{why}; so {how}")),
            });
        }
    }
    Ok(PbSetup {
        with_pb: true,
        note: None,
    })
}

/// `PUT /api/collections/import` as the test superuser, with a timeout long enough for big
/// chunks.
struct Importer {
    agent: reqwest::blocking::Client,
    token: String,
    url: String,
}

impl Importer {
    fn new(pb: &PocketBase) -> Result<Importer> {
        Ok(Importer {
            agent: kombiform_test_support::http::client(Duration::from_secs(3600))?,
            token: pb.superuser_token()?,
            url: format!("{}/api/collections/import", pb.url()),
        })
    }

    fn import(&self, collections: &[Value]) -> Result<()> {
        if collections.is_empty() {
            return Ok(());
        }
        let body = json!({ "collections": collections, "deleteMissing": false });
        let response = self
            .agent
            .put(&self.url)
            .header("Authorization", &self.token)
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
            .with_context(|| format!("PUT {}", self.url))?;
        let status = response.status().as_u16();
        if status != 204 {
            let text = response
                .text()
                .unwrap_or_else(|e| format!("(unreadable: {e})"));
            bail!(
                "PUT {} ({} collections) answered {status}: {text}",
                self.url,
                collections.len()
            );
        }
        Ok(())
    }
}

/// Seeds the tenants not yet imported straight into PocketBase's `data.db` with the `sqlite3`
/// program: for each, a copy of the `_collections` rows PocketBase itself stored for the first
/// tenant, with the tenant's ident replaced. A tenant collection differs from its template only
/// in the ident (the emitter fills one stencil per template), so the copies are what importing
/// would have stored, bar the per-collection random auth secrets and timestamps, which are
/// copied.
///
/// Only the `_collections` rows: not the record tables and their indexes. `GET
/// /api/collections` lists `_collections` and never touches record tables, so the read is the
/// same; and creating 40,000 tables and their indexes in SQLite is itself quadratic (each DDL
/// statement rescans the schema; measured: not done after 6 minutes at 10,000 tenants). The
/// server keeps running; the plan checks the read: a missing collection would be a `create`.
/// Returns what it did, for the report.
fn seed(
    pb: &PocketBase,
    env: Env<'_>,
    all: &[Value],
    imported: usize,
    importer: &Importer,
) -> Result<String> {
    let started = Instant::now();
    let idents: Vec<String> = env.tenants().map(|t| t.ident()).collect();
    let first = idents.first().context("no tenants")?;
    let prefix = |ident: &str| format!("t_{ident}_");
    let per_tenant = all
        .iter()
        .filter(|c| name_of(c).starts_with(&prefix(first)))
        .count();
    let globals = all.len() - per_tenant * idents.len();
    // The emitter's order: globals, then each tenant's collections together, in tenant order.
    for (i, ident) in idents.iter().enumerate() {
        for c in &all[globals + i * per_tenant..globals + (i + 1) * per_tenant] {
            if !name_of(c).starts_with(&prefix(ident)) {
                bail!(
                    "collection {} is not where tenant {ident}'s are expected",
                    name_of(c)
                );
            }
        }
    }
    // Finish the tenant the import stopped in (and the first tenant, the template) via the API.
    let tenants_imported = imported.saturating_sub(globals).div_ceil(per_tenant).max(1);
    let boundary = globals + tenants_imported * per_tenant;
    importer.import(&all[imported.min(boundary)..boundary])?;

    let db = pb.dir().join("pb_data").join("data.db");
    let sqlite3 = sqlite3_program()?;
    let template = prefix(first);
    let columns = [
        "id",
        "system",
        "type",
        "name",
        "fields",
        "indexes",
        "listRule",
        "viewRule",
        "createRule",
        "updateRule",
        "deleteRule",
        "options",
        "created",
        "updated",
    ];
    let replaced = [
        "id",
        "name",
        "fields",
        "indexes",
        "listRule",
        "viewRule",
        "createRule",
        "updateRule",
        "deleteRule",
        "options",
    ];
    let mut script = String::from(".timeout 60000\nBEGIN;\n");
    let seeded = &idents[tenants_imported..];
    for ident in seeded {
        let to = prefix(ident);
        let select: Vec<String> = columns
            .iter()
            .map(|c| {
                if replaced.contains(c) {
                    format!("replace(`{c}`, '{template}', '{to}')")
                } else {
                    format!("`{c}`")
                }
            })
            .collect();
        script.push_str(&format!(
            "INSERT INTO _collections ({}) SELECT {} FROM _collections WHERE name GLOB '{template}*';\n",
            columns.map(|c| format!("`{c}`")).join(", "),
            select.join(", ")
        ));
    }
    script.push_str("COMMIT;\n");
    run_sqlite(&sqlite3, &db, &script)?;
    let how = format!(
        "{} collections ({} tenants) were imported through the API and the other {} \
         ({} tenants) seeded into SQLite as copies of tenant {first}'s `_collections` rows \
         (no record tables) in {:.1} s",
        boundary,
        tenants_imported,
        seeded.len() * per_tenant,
        seeded.len(),
        started.elapsed().as_secs_f64()
    );
    eprintln!("   {how}");
    Ok(how)
}

fn name_of(c: &Value) -> &str {
    c.get("name").and_then(Value::as_str).unwrap_or_default()
}

/// The `sqlite3` command-line program.
fn sqlite3_program() -> Result<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("sqlite3"))
        .find(|p| p.is_file())
        .context("sqlite3 not found on PATH (needed to seed PocketBase at this size): run `apt-get install sqlite3`")
}

/// Runs `script` through `sqlite3 <db>` on stdin; returns stdout.
fn run_sqlite(sqlite3: &std::path::Path, db: &std::path::Path, script: &str) -> Result<String> {
    use std::io::Write as _;
    let mut child = std::process::Command::new(sqlite3)
        .arg("-batch")
        .arg("-bail")
        .arg(db)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", sqlite3.display()))?;
    let mut stdin = child.stdin.take().context("no stdin for sqlite3")?;
    let text = script.to_string();
    // Write from a thread so a full stdout pipe cannot deadlock the two.
    let writer = std::thread::spawn(move || stdin.write_all(text.as_bytes()));
    let out = child.wait_with_output().context("waiting for sqlite3")?;
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("the sqlite3 writer panicked"))?
        .context("writing the script to sqlite3")?;
    if !out.status.success() {
        bail!(
            "sqlite3 {} failed with {}: {}",
            db.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "{:>7} {:>5} {:>8} {:>9} {:>9} {:>9} {:>9} {:>8} {:>9} | {:>15} | {:>15} | {:>8} {:>8}",
        "tenants",
        "PB?",
        "connect",
        "read_live",
        "make_plan",
        "total",
        "requests",
        "res",
        "unchanged",
        "pg read/req/res",
        "pb read/req/res",
        "setup pg",
        "setup pb"
    );
    for r in rows {
        let pb = r.pb.map_or_else(
            || "-".to_string(),
            |p| format!("{:.0}ms/{}/{}", ms(p.time), p.requests, p.resources),
        );
        println!(
            "{:>7} {:>5} {:>6.0}ms {:>7.0}ms {:>7.0}ms {:>7.0}ms {:>9} {:>8} {:>9} | {:>15} | {:>15} | {:>7.1}s {:>7.1}s",
            r.tenants,
            if r.with_pb { "yes" } else { "NO" },
            ms(r.connect),
            ms(r.read_live),
            ms(r.make_plan),
            ms(r.total),
            r.requests,
            r.resources,
            r.unchanged,
            format!("{:.0}ms/{}/{}", ms(r.pg.time), r.pg.requests, r.pg.resources),
            pb,
            r.setup_pg.as_secs_f64(),
            r.setup_pb.as_secs_f64(),
        );
    }
    for r in rows {
        match (&r.pb_note, r.with_pb) {
            (Some(why), false) => println!(
                "NOTE {} tenants: PostgreSQL only — PocketBase left out: {why}",
                r.tenants
            ),
            (Some(how), true) => println!("NOTE {} tenants: PocketBase setup: {how}", r.tenants),
            (None, _) => {}
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn env_number(name: &str, default: usize) -> Result<usize> {
    match std::env::var(name) {
        Ok(s) => s
            .trim()
            .parse()
            .with_context(|| format!("{name}={s:?} is not a number")),
        Err(_) => Ok(default),
    }
}
