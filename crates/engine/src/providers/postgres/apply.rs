//! Applying changes to the platform database: all changes of one apply in ONE transaction
//! under the advisory lock [`sql::LOCK_KEY`], in the order given (tables and columns, then
//! row upserts, then deletes — the plan's order). Any error rolls the whole batch back and
//! names the change that failed.
//!
//! Every value reaches the server as a query parameter. Table, column, constraint and index
//! definitions come from the compiled-in [`schema::TABLES`], never from the plan file: a
//! plan whose table definition differs from this build's is refused, and a name read from
//! the server (a table, column, constraint or index to drop) is quoted with
//! [`quote::quote_ident`].
//!
//! Not here: deciding what may be destroyed (the CLI's consent check happens before apply);
//! the usage counters, which no statement here names.

use std::collections::HashMap;

use anyhow::{anyhow, bail, Context, Result};
use postgres::types::ToSql;
use postgres::{Client, Statement, Transaction};
use serde_json::{json, Value};

use super::read::transient_or;
use crate::providers::AuditRecord;
use kombiform_emit::sql::schema::{self, TableDef};
use kombiform_emit::sql::{self, quote, roles, DataTable, SCHEMA};
use kombiform_emit::targets::postgres::{data_table_of, lossy_type_changes, table_resource, NAME};
use kombiform_model::secret::Secret;
use kombiform_plan::{Action, AttrChange, Change};

/// Prepared statements and what the transaction has done so far.
#[derive(Default)]
struct Batch {
    /// Upsert (`false`) and delete (`true`) statements per table.
    statements: HashMap<(&'static str, bool), Statement>,
    /// The schema preamble (schema, comment, helper function) has run.
    preamble: bool,
}

/// A role's password, by role name: `Ok(None)` when the server needs none (trust
/// authentication, tests), an error naming the variable to set when it is missing.
pub(super) type Passwords<'a> = &'a dyn Fn(&str) -> Result<Option<Secret>>;

/// Applies `changes` in one transaction.
pub(super) fn apply(
    client: &mut Client,
    changes: &[&Change],
    passwords: Passwords<'_>,
) -> Result<()> {
    for c in changes {
        if c.provider() != NAME {
            bail!("{}: not a {NAME} resource", c.address);
        }
        let lossy = lossy_type_changes(c);
        if !lossy.is_empty() {
            bail!("refused: {}", lossy.join("; "));
        }
    }
    let mut tx = client
        .transaction()
        .map_err(transient_or)
        .context("starting the apply transaction")?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&sql::LOCK_KEY])
        .map_err(transient_or)
        .context("taking the kombify advisory lock")?;
    let mut batch = Batch::default();
    for c in changes {
        if let Some(role) = c.address.strip_prefix(&format!("{NAME}.role.")) {
            apply_role(&mut tx, c, role, passwords)
                .with_context(|| format!("{}: {} failed", c.address, c.action.as_str()))?;
            continue;
        }
        apply_one(&mut tx, &mut batch, c)
            .with_context(|| format!("{}: {} failed", c.address, c.action.as_str()))?;
    }
    let xid: i64 = tx
        .query_one("SELECT txid_current()", &[])
        .map_err(transient_or)
        .context("reading the apply transaction's id")?
        .get(0);
    tx.commit().map_err(|e| {
        let e = transient_or(e);
        if crate::providers::transient(&e).is_some() {
            // The answer to COMMIT was lost: the transaction may have committed.
            anyhow::Error::new(CommitInDoubt { xid }).context(format!("{e:#}"))
        } else {
            e.context("committing the apply transaction")
        }
    })?;
    Ok(())
}

/// The connection was lost while `COMMIT` was answered: whether transaction `xid` committed
/// is asked on a new connection (`txid_status`) before anything is retried.
#[derive(Debug)]
pub(super) struct CommitInDoubt {
    pub(super) xid: i64,
}

impl std::fmt::Display for CommitInDoubt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the answer to COMMIT of transaction {} was lost",
            self.xid
        )
    }
}

impl std::error::Error for CommitInDoubt {}

/// Whether transaction `xid` committed: `Some(true)` committed, `Some(false)` aborted,
/// `None` unknown (still in progress, or too old to tell).
pub(super) fn committed(client: &mut Client, xid: i64) -> Result<Option<bool>> {
    let status: Option<String> = client
        .query_one("SELECT txid_status($1)", &[&xid])
        .map_err(transient_or)
        .context("asking whether the apply transaction committed")?
        .get(0);
    Ok(match status.as_deref() {
        Some("committed") => Some(true),
        Some("aborted") => Some(false),
        _ => None,
    })
}

/// Creates, updates or drops a service's role. Its grants come from the compiled-in
/// [`roles::ROLES`], never from the plan: everything it may hold is revoked, then granted
/// again. The password reaches the server only as a SCRAM verifier (a statement log never
/// holds the password itself).
fn apply_role(
    tx: &mut Transaction<'_>,
    c: &Change,
    name: &str,
    passwords: Passwords<'_>,
) -> Result<()> {
    let ident = quote::quote_ident(name).with_context(|| format!("role {name:?}"))?;
    let database: String = tx
        .query_one("SELECT current_database()::text", &[])
        .map_err(transient_or)?
        .get(0);
    let revoke = roles::revoke_all_sql(name, &database)?;
    if c.action == Action::Delete {
        let sql = format!("{revoke}DROP ROLE {ident};");
        return tx.batch_execute(&sql).map_err(transient_or);
    }
    let def = roles::ROLES
        .iter()
        .find(|r| kombiform_model::naming::postgres_role(r.service) == name)
        .with_context(|| format!("{name} is not a role of this kombiform"))?;
    let password = match passwords(name)? {
        Some(p) => format!(
            " PASSWORD {}",
            quote::quote_literal(&postgres_protocol::password::scram_sha_256(
                p.expose().as_bytes()
            ))?
        ),
        None => String::new(),
    };
    let exists = tx
        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&name])
        .map_err(transient_or)?
        .is_some();
    let verb = if exists { "ALTER" } else { "CREATE" };
    let sql = format!(
        "{verb} ROLE {ident} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT{password};\n\
         {revoke}{}",
        def.grant_sql(name, &database)?
    );
    // Never in an error: the statement holds the verifier.
    tx.batch_execute(&sql).map_err(|e| {
        let code = e.code().map(|c| c.code().to_string()).unwrap_or_default();
        match e.as_db_error() {
            Some(db) => anyhow!("{verb} ROLE {name}: {} ({code})", db.message()),
            None => transient_or(e),
        }
    })
}

fn apply_one(tx: &mut Transaction<'_>, batch: &mut Batch, c: &Change) -> Result<()> {
    if let Some(table) = c.address.strip_prefix(&format!("{NAME}.table.")) {
        return apply_table(tx, batch, c, table);
    }
    let table =
        data_table_of(&c.address).ok_or_else(|| anyhow!("not an address this provider manages"))?;
    match c.action {
        Action::Create | Action::Update | Action::Replace => {
            let want = c
                .desired
                .as_ref()
                .context("the change has no desired row")?;
            let stmt = statement(tx, batch, table, false)?;
            let values = params(table, table.cols, |col| want.attrs.get(col))?;
            exec(tx, &stmt, &values)
        }
        Action::Delete => {
            let have = c.live.as_ref().context("the change has no live row")?;
            let stmt = statement(tx, batch, table, true)?;
            let values = params(table, &table.cols[..table.key], |col| have.attrs.get(col))?;
            exec(tx, &stmt, &values)
        }
    }
}

fn exec(
    tx: &mut Transaction<'_>,
    stmt: &Statement,
    values: &[Box<dyn ToSql + Sync>],
) -> Result<()> {
    let refs: Vec<&(dyn ToSql + Sync)> = values.iter().map(|b| b.as_ref()).collect();
    tx.execute(stmt, &refs).map_err(transient_or)?;
    Ok(())
}

/// The upsert or delete statement of `table`, prepared once per transaction.
fn statement(
    tx: &mut Transaction<'_>,
    batch: &mut Batch,
    table: &'static DataTable,
    delete: bool,
) -> Result<Statement> {
    if let Some(s) = batch.statements.get(&(table.name, delete)) {
        return Ok(s.clone());
    }
    let text = if delete {
        delete_sql(table)?
    } else {
        upsert_sql(table)?
    };
    let stmt = tx
        .prepare(&text)
        .map_err(transient_or)
        .with_context(|| format!("preparing the statement for {SCHEMA}.{}", table.name))?;
    batch.statements.insert((table.name, delete), stmt.clone());
    Ok(stmt)
}

/// `INSERT ... ON CONFLICT (key) DO UPDATE SET ... WHERE ... IS DISTINCT FROM ...` with one
/// parameter per column: a row that already matches is not rewritten (its `updated_at`
/// stays).
pub(crate) fn upsert_sql(table: &DataTable) -> Result<String> {
    let cols = idents(table.cols)?;
    let placeholders: Vec<String> = (1..=cols.len()).map(|i| format!("${i}")).collect();
    let (key, rest) = cols.split_at(table.key);
    let mut s = format!(
        "INSERT INTO {SCHEMA}.{} AS cur ({}) VALUES ({}) ON CONFLICT ({}) DO ",
        quote::quote_ident(table.name)?,
        cols.join(", "),
        placeholders.join(", "),
        key.join(", ")
    );
    if rest.is_empty() {
        s.push_str("NOTHING");
        return Ok(s);
    }
    // A runtime-owned column of a row the platform took over keeps its value, even when
    // the platform set it between plan and apply.
    let mut sets: Vec<String> = rest
        .iter()
        .map(|c| format!("{c} = {}", sql::set_expr(table, c)))
        .collect();
    if table.touch {
        sets.push("updated_at = now()".to_string());
    }
    let cur: Vec<String> = rest.iter().map(|c| format!("cur.{c}")).collect();
    let exc: Vec<String> = rest.iter().map(|c| sql::set_expr(table, c)).collect();
    s.push_str(&format!(
        "UPDATE SET {} WHERE ({}) IS DISTINCT FROM ({})",
        sets.join(", "),
        cur.join(", "),
        exc.join(", ")
    ));
    Ok(s)
}

fn delete_sql(table: &DataTable) -> Result<String> {
    let key = idents(&table.cols[..table.key])?;
    let conds: Vec<String> = key
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{c} = ${}", i + 1))
        .collect();
    Ok(format!(
        "DELETE FROM {SCHEMA}.{} WHERE {}",
        quote::quote_ident(table.name)?,
        conds.join(" AND ")
    ))
}

fn idents(names: &[&str]) -> Result<Vec<String>> {
    names
        .iter()
        .map(|c| quote::quote_ident(c).with_context(|| format!("identifier {c:?}")))
        .collect()
}

/// Typed query parameters for `cols` of `table`, by the column types of the schema.
fn params<'v>(
    table: &DataTable,
    cols: &[&str],
    value: impl Fn(&str) -> Option<&'v Value>,
) -> Result<Vec<Box<dyn ToSql + Sync>>> {
    let def = schema::table(table.name)
        .with_context(|| format!("{SCHEMA}.{} is not in the schema", table.name))?;
    cols.iter()
        .map(|col| {
            let ty = def
                .column(col)
                .with_context(|| format!("{SCHEMA}.{} has no column {col}", table.name))?
                .canonical_type();
            let v = value(col).with_context(|| format!("no value for column {col}"))?;
            param(ty, v).with_context(|| format!("column {col}"))
        })
        .collect()
}

/// One value as a parameter of PostgreSQL type `ty`.
fn param(ty: &str, v: &Value) -> Result<Box<dyn ToSql + Sync>> {
    if let Some(why) = v.get("invalid").and_then(Value::as_str) {
        bail!("the specs hold a value PostgreSQL cannot store: {why}");
    }
    let wrong = || anyhow!("expected a {ty} value, got {v}");
    let null = v.is_null();
    let int = || v.as_i64().ok_or_else(wrong);
    Ok(match ty {
        "text" if null => Box::new(None::<String>),
        "text" => {
            let s = v.as_str().ok_or_else(wrong)?;
            if s.contains('\0') {
                bail!("text holds a NUL character, which PostgreSQL cannot store");
            }
            Box::new(s.to_string())
        }
        "integer" if null => Box::new(None::<i32>),
        "integer" => Box::new(i32::try_from(int()?).map_err(|_| wrong())?),
        "smallint" if null => Box::new(None::<i16>),
        "smallint" => Box::new(i16::try_from(int()?).map_err(|_| wrong())?),
        "bigint" if null => Box::new(None::<i64>),
        "bigint" => Box::new(int()?),
        "double precision" if null => Box::new(None::<f64>),
        "double precision" => Box::new(v.as_f64().ok_or_else(wrong)?),
        "boolean" if null => Box::new(None::<bool>),
        "boolean" => Box::new(v.as_bool().ok_or_else(wrong)?),
        "text[]" if null => Box::new(None::<Vec<String>>),
        "text[]" => {
            let items = v.as_array().ok_or_else(wrong)?;
            let items: Vec<String> = items
                .iter()
                .map(|i| {
                    i.as_str()
                        .filter(|s| !s.contains('\0'))
                        .map(str::to_string)
                        .ok_or_else(wrong)
                })
                .collect::<Result<_>>()?;
            Box::new(items)
        }
        other => bail!("columns of type {other} are not supported as row values"),
    })
}

// ---------------------------------------------------------------------------------------
// Tables
// ---------------------------------------------------------------------------------------

fn apply_table(tx: &mut Transaction<'_>, batch: &mut Batch, c: &Change, name: &str) -> Result<()> {
    let qname = format!("{SCHEMA}.{}", quote::quote_ident(name)?);
    if c.action == Action::Delete {
        return batch_exec(tx, &format!("DROP TABLE {qname}"));
    }
    let def = schema::table(name)
        .with_context(|| format!("{SCHEMA}.{name} is not a table this kombiform defines"))?;
    let want = c
        .desired
        .as_ref()
        .context("the change has no desired table")?;
    if want.attrs != table_resource(def).attrs {
        bail!(
            "the plan's definition of {SCHEMA}.{name} differs from this kombiform's; \
             make the plan again with this version"
        );
    }
    match c.action {
        Action::Create => {
            if !batch.preamble {
                batch_exec(tx, schema::PREAMBLE)?;
                batch.preamble = true;
            }
            batch_exec(tx, &def.create_sql())?;
            if !def.extra.is_empty() {
                batch_exec(tx, def.extra)?;
            }
            if def.name == "schema_version" {
                let version = i32::try_from(sql::SCHEMA_VERSION).context("schema version")?;
                tx.execute(
                    "INSERT INTO kombify.schema_version (version, description) VALUES ($1, $2) \
                     ON CONFLICT (version) DO NOTHING",
                    &[&version, &sql::SCHEMA_DESCRIPTION],
                )
                .map_err(transient_or)?;
            }
            Ok(())
        }
        Action::Update => {
            for a in &c.attrs {
                alter(tx, def, &qname, a).with_context(|| format!("attribute {}", a.name))?;
            }
            Ok(())
        }
        Action::Replace => bail!("replacing a table is not supported"),
        Action::Delete => Ok(()),
    }
}

fn batch_exec(tx: &mut Transaction<'_>, sql: &str) -> Result<()> {
    tx.batch_execute(sql).map_err(transient_or)
}

/// One attribute change of a table: a column, a constraint or an index.
fn alter(tx: &mut Transaction<'_>, def: &TableDef, qname: &str, a: &AttrChange) -> Result<()> {
    let (kind, name) = a
        .name
        .split_once('.')
        .with_context(|| format!("unknown table attribute {}", a.name))?;
    let q = quote::quote_ident(name)?;
    match kind {
        "column" => {
            let Some(after) = &a.after else {
                return batch_exec(tx, &format!("ALTER TABLE {qname} DROP COLUMN {q}"));
            };
            let col = def
                .column(name)
                .with_context(|| format!("{} has no column {name}", def.name))?;
            let Some(before) = &a.before else {
                return batch_exec(
                    tx,
                    &format!(
                        "ALTER TABLE {qname} ADD COLUMN IF NOT EXISTS {}",
                        col.bare_ddl()
                    ),
                );
            };
            let field = |v: &Value, k: &str| v.get(k).cloned().unwrap_or(Value::Null);
            let ty = col.canonical_type();
            if field(before, "type") != field(after, "type") {
                batch_exec(
                    tx,
                    &format!("ALTER TABLE {qname} ALTER COLUMN {q} TYPE {ty} USING {q}::{ty}"),
                )?;
            }
            if field(before, "nullable") != field(after, "nullable") {
                let op = if def.nullable(col) {
                    "DROP NOT NULL"
                } else {
                    "SET NOT NULL"
                };
                batch_exec(tx, &format!("ALTER TABLE {qname} ALTER COLUMN {q} {op}"))?;
            }
            if field(before, "default") != field(after, "default") {
                let op = match def.pg_default(col) {
                    Some(d) => format!("SET DEFAULT {d}"),
                    None => "DROP DEFAULT".to_string(),
                };
                batch_exec(tx, &format!("ALTER TABLE {qname} ALTER COLUMN {q} {op}"))?;
            }
            Ok(())
        }
        "constraint" => {
            if a.before.is_some() {
                batch_exec(
                    tx,
                    &format!("ALTER TABLE {qname} DROP CONSTRAINT IF EXISTS {q}"),
                )?;
            }
            if a.after.is_some() {
                let k = def
                    .constraint_defs()
                    .into_iter()
                    .find(|k| k.name == name)
                    .with_context(|| format!("{} has no constraint {name}", def.name))?;
                batch_exec(
                    tx,
                    &format!("ALTER TABLE {qname} ADD CONSTRAINT {q} {}", k.body),
                )?;
            }
            Ok(())
        }
        "index" => {
            if a.before.is_some() {
                batch_exec(tx, &format!("DROP INDEX IF EXISTS {SCHEMA}.{q}"))?;
            }
            if a.after.is_some() {
                let i = def
                    .indexes
                    .iter()
                    .find(|i| i.name == name)
                    .with_context(|| format!("{} has no index {name}", def.name))?;
                batch_exec(tx, &i.create_sql(def.name))?;
            }
            Ok(())
        }
        _ => bail!("unknown table attribute {}", a.name),
    }
}

// ---------------------------------------------------------------------------------------
// Audit
// ---------------------------------------------------------------------------------------

/// Appends `record` to `kombify.audit_log`: actor, action `apply`, the environment as target,
/// details (id, plan hash, times, command, changes, error) as jsonb, and the result mapped to
/// the table's vocabulary (`succeeded` → `success`; `failed`, `partially failed`,
/// `interrupted` → `failure`; `refused` → `denied`; the exact result is in the details). A
/// record whose id is already there (delivered again after a lost answer) is not added twice.
pub(super) fn record_audit(client: &mut Client, record: &AuditRecord) -> Result<()> {
    let result = match record.result.as_str() {
        "succeeded" => "success",
        "failed" | "partially failed" | "interrupted" => "failure",
        "refused" => "denied",
        other => bail!("unknown audit result {other:?}"),
    };
    let details = json!({
        "id": record.id,
        "plan_hash": record.plan_hash,
        "started_at": record.started_at,
        "finished_at": record.finished_at,
        "command": record.command,
        "result": record.result,
        "error": record.error,
        "changes": record.changes,
        "adopted": record.adopted,
        "forgotten": record.forgotten,
    })
    .to_string();
    let actor = if record.actor.is_empty() {
        "unknown"
    } else {
        record.actor.as_str()
    };
    client
        .execute(
            "INSERT INTO kombify.audit_log (actor, action, target, details, result) \
             SELECT $1, 'apply', $2, CAST($3::text AS jsonb), $4 \
             WHERE $5 = '' OR NOT EXISTS (SELECT 1 FROM kombify.audit_log \
                 WHERE action = 'apply' AND target = $2 AND details->>'id' = $5)",
            &[&actor, &record.env, &details, &result, &record.id],
        )
        .map_err(transient_or)
        .context("appending to kombify.audit_log")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_use_parameters_only() {
        let up = upsert_sql(&sql::QUOTAS).unwrap_or_default();
        assert_eq!(
            up,
            "INSERT INTO kombify.quotas AS cur (tenant, max_users, max_nodes, max_stacks, \
             max_simulations, rate_limit_second, rate_limit_minute, rate_limit_hour, \
             rate_limit_day) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (tenant) \
             DO UPDATE SET max_users = EXCLUDED.max_users, max_nodes = EXCLUDED.max_nodes, \
             max_stacks = EXCLUDED.max_stacks, max_simulations = EXCLUDED.max_simulations, \
             rate_limit_second = EXCLUDED.rate_limit_second, rate_limit_minute = \
             EXCLUDED.rate_limit_minute, rate_limit_hour = EXCLUDED.rate_limit_hour, \
             rate_limit_day = EXCLUDED.rate_limit_day, updated_at = now() WHERE \
             (cur.max_users, cur.max_nodes, cur.max_stacks, cur.max_simulations, \
             cur.rate_limit_second, cur.rate_limit_minute, cur.rate_limit_hour, \
             cur.rate_limit_day) IS DISTINCT FROM (EXCLUDED.max_users, EXCLUDED.max_nodes, \
             EXCLUDED.max_stacks, EXCLUDED.max_simulations, EXCLUDED.rate_limit_second, \
             EXCLUDED.rate_limit_minute, EXCLUDED.rate_limit_hour, EXCLUDED.rate_limit_day)"
        );
        assert!(!up.contains("used_"));
        assert_eq!(
            delete_sql(&sql::FLAG_TENANT_OVERRIDES).unwrap_or_default(),
            "DELETE FROM kombify.flag_tenant_overrides WHERE flag = $1 AND tenant = $2"
        );
    }

    #[test]
    fn parameters_are_typed_by_the_schema() {
        assert!(param("integer", &json!(3_000_000_000u64)).is_err());
        assert!(param("integer", &json!(3)).is_ok());
        assert!(param("text", &json!("a\u{0}b")).is_err());
        assert!(param("text", &json!({"invalid": "x"})).is_err());
        assert!(param("text[]", &json!(["a", 1])).is_err());
        assert!(param("double precision", &json!(0.5)).is_ok());
    }
}
