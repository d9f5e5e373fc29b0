//! Reading the platform database's live state in bulk: three catalog queries (columns,
//! constraints, indexes of schema `kombify`) and one `SELECT` per managed table that exists,
//! all in one read-only snapshot. Values are normalised like the target's `desired` writes them.
//!
//! A row the running platform took over (its [`sql::RuntimeOwned::marker`] is set) carries
//! `meta.runtime = true`, which the plan uses to keep the runtime-owned columns as they are.
//!
//! Not here: rows of tables kombiform does not own (audit log, webhook events, SSO users) and
//! the usage counters of `kombify.quotas`, which are never selected.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use postgres::types::ToSql;
use postgres::{Client, IsolationLevel, Row, Transaction};
use serde_json::{Map, Number, Value};

use crate::providers::{LiveRead, Transient};
use kombiform_emit::sql::{self, quote, schema, SCHEMA};
use kombiform_emit::targets::postgres::{
    column_attr, constraint_attr, fk_attr, index_attr, role_resource, row_resource, table_address,
    NAME, RUNTIME_META,
};
use kombiform_plan::Resource;

/// One live column.
struct LiveColumn {
    name: String,
    ty: String,
}

/// Reads every table of [`SCHEMA`] and every row of the managed tables.
pub(super) fn read(client: &mut Client) -> Result<LiveRead> {
    let mut tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .map_err(transient_or)
        .context("starting a read-only transaction")?;
    let mut requests = 0;
    let mut tables: BTreeMap<String, (Map<String, Value>, Vec<LiveColumn>)> = BTreeMap::new();
    let mut deps: BTreeMap<String, Vec<String>> = BTreeMap::new();

    let columns = query(
        &mut tx,
        &mut requests,
        "SELECT c.relname::text, a.attname::text, format_type(a.atttypid, a.atttypmod), \
                a.attnotnull, pg_get_expr(d.adbin, d.adrelid) \
         FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
         LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
         WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') \
         ORDER BY c.relname, a.attnum",
        &[&SCHEMA],
        "reading the columns of schema kombify",
    )?;
    for r in &columns {
        let table: String = r.try_get(0)?;
        let entry = tables.entry(table).or_default();
        let Some(name) = r.try_get::<_, Option<String>>(1)? else {
            continue;
        };
        let ty: String = r.try_get(2)?;
        let not_null: bool = r.try_get(3)?;
        let default: Option<String> = r.try_get(4)?;
        entry.0.insert(
            format!("column.{name}"),
            column_attr(&ty, !not_null, default),
        );
        entry.1.push(LiveColumn { name, ty });
    }
    if tables.is_empty() {
        // No schema yet (or an empty one): nothing lives here but, perhaps, the roles.
        let resources = read_roles(&mut tx, &mut requests)?;
        tx.commit().context("ending the read-only transaction")?;
        return Ok(LiveRead {
            resources,
            requests,
        });
    }

    let constraints = query(
        &mut tx,
        &mut requests,
        "SELECT c.relname::text, k.conname::text, k.contype::text, \
                ARRAY(SELECT a.attname::text FROM unnest(k.conkey) WITH ORDINALITY u(n, o) \
                      JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.n \
                      ORDER BY u.o), \
                fn.nspname::text, fc.relname::text, \
                ARRAY(SELECT a.attname::text FROM unnest(k.confkey) WITH ORDINALITY u(n, o) \
                      JOIN pg_attribute a ON a.attrelid = k.confrelid AND a.attnum = u.n \
                      ORDER BY u.o), \
                k.confupdtype::text, k.confdeltype::text, k.condeferrable, k.condeferred \
         FROM pg_constraint k \
         JOIN pg_class c ON c.oid = k.conrelid \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         LEFT JOIN pg_class fc ON fc.oid = k.confrelid \
         LEFT JOIN pg_namespace fn ON fn.oid = fc.relnamespace \
         WHERE n.nspname = $1 AND k.contype IN ('p', 'u', 'f', 'c') \
         ORDER BY c.relname, k.conname",
        &[&SCHEMA],
        "reading the constraints of schema kombify",
    )?;
    for r in &constraints {
        let table: String = r.try_get(0)?;
        let name: String = r.try_get(1)?;
        let kind: String = r.try_get(2)?;
        let cols: Vec<String> = r.try_get(3)?;
        let v = match kind.as_str() {
            "p" => constraint_attr("primary key", &cols),
            "u" => {
                let mut v = constraint_attr("unique", &cols);
                let deferred = r.try_get::<_, bool>(9)? && r.try_get::<_, bool>(10)?;
                if let Some(o) = v.as_object_mut() {
                    o.insert("deferred".into(), Value::Bool(deferred));
                }
                v
            }
            "c" => constraint_attr("check", &cols),
            _ => {
                let fschema: Option<String> = r.try_get(4)?;
                let ftable: Option<String> = r.try_get(5)?;
                let fcols: Vec<String> = r.try_get(6)?;
                let ftable = ftable.unwrap_or_default();
                let references = match fschema.as_deref() {
                    Some(s) if s == SCHEMA => format!("{ftable}({})", fcols.join(", ")),
                    other => format!("{}.{ftable}({})", other.unwrap_or("?"), fcols.join(", ")),
                };
                if fschema.as_deref() == Some(SCHEMA) && ftable != table {
                    deps.entry(table.clone())
                        .or_default()
                        .push(table_address(&ftable));
                }
                fk_attr(
                    &cols,
                    &references,
                    action(&r.try_get::<_, String>(7)?),
                    action(&r.try_get::<_, String>(8)?),
                )
            }
        };
        if let Some(t) = tables.get_mut(&table) {
            t.0.insert(format!("constraint.{name}"), v);
        }
    }

    let indexes = query(
        &mut tx,
        &mut requests,
        "SELECT t.relname::text, i.relname::text, x.indisunique, \
                ARRAY(SELECT COALESCE(a.attname::text, '(expression)') \
                      FROM unnest(x.indkey::int2[]) WITH ORDINALITY u(n, o) \
                      LEFT JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = u.n \
                      ORDER BY u.o), \
                pg_get_expr(x.indpred, x.indrelid) \
         FROM pg_index x \
         JOIN pg_class i ON i.oid = x.indexrelid \
         JOIN pg_class t ON t.oid = x.indrelid \
         JOIN pg_namespace n ON n.oid = t.relnamespace \
         WHERE n.nspname = $1 \
           AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = x.indexrelid \
                           AND k.conrelid = x.indrelid AND k.contype IN ('p', 'u', 'x')) \
         ORDER BY t.relname, i.relname",
        &[&SCHEMA],
        "reading the indexes of schema kombify",
    )?;
    for r in &indexes {
        let table: String = r.try_get(0)?;
        let name: String = r.try_get(1)?;
        let unique: bool = r.try_get(2)?;
        let cols: Vec<String> = r.try_get(3)?;
        let predicate: Option<String> = r.try_get(4)?;
        let mut v = index_attr(&cols, unique);
        if let (Some(p), Some(o)) = (predicate, v.as_object_mut()) {
            o.insert("where".into(), Value::String(p));
        }
        if let Some(t) = tables.get_mut(&table) {
            t.0.insert(format!("index.{name}"), v);
        }
    }

    let mut resources = Vec::new();
    for t in sql::DATA_TABLES {
        if let Some((_, cols)) = tables.get(t.name) {
            read_rows(&mut tx, &mut requests, t, cols, &mut resources)?;
        }
    }
    for (name, (attrs, _)) in tables {
        let mut r = Resource::new(table_address(&name), attrs);
        r.data_bearing = true;
        if let Some(mut d) = deps.remove(&name) {
            d.sort();
            d.dedup();
            r.depends_on = d;
        }
        resources.push(r);
    }
    resources.extend(read_roles(&mut tx, &mut requests)?);
    tx.commit().context("ending the read-only transaction")?;
    Ok(LiveRead {
        resources,
        requests,
    })
}

/// The services' roles that exist (any of [`sql::roles::all_names`]), with what they hold on
/// the platform database, schema [`SCHEMA`] and its tables and sequences: one query.
fn read_roles(tx: &mut Transaction<'_>, requests: &mut u64) -> Result<Vec<Resource>> {
    let names = sql::roles::all_names();
    let rows = query(
        tx,
        requests,
        "SELECT r.rolname::text, r.rolcanlogin, ARRAY( \
             SELECT a.privilege_type || ' ON DATABASE' \
               FROM pg_database d, aclexplode(d.datacl) a \
              WHERE d.datname = current_database() AND a.grantee = r.oid \
             UNION ALL \
             SELECT a.privilege_type || ' ON SCHEMA ' || n.nspname \
               FROM pg_namespace n, aclexplode(n.nspacl) a \
              WHERE n.nspname = $2 AND a.grantee = r.oid \
             UNION ALL \
             SELECT a.privilege_type || CASE WHEN c.relkind = 'S' THEN ' ON SEQUENCE ' \
                                              ELSE ' ON TABLE ' END || n.nspname || '.' || c.relname \
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, aclexplode(c.relacl) a \
              WHERE n.nspname = $2 AND c.relkind IN ('r', 'p', 'S') AND a.grantee = r.oid) \
         FROM pg_roles r WHERE r.rolname = ANY($1) ORDER BY 1",
        &[&names, &SCHEMA],
        "reading the services' roles",
    )?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let name: String = r.try_get(0)?;
        let login: bool = r.try_get(1)?;
        let mut privileges: Vec<String> = r.try_get(2)?;
        privileges.sort();
        privileges.dedup();
        let mut res = role_resource(&name, &privileges);
        res.attrs.insert("login".into(), Value::Bool(login));
        out.push(res);
    }
    Ok(out)
}

/// A foreign key action as `pg_constraint` encodes it, in words.
fn action(code: &str) -> &'static str {
    match code {
        "a" => "no action",
        "r" => "restrict",
        "c" => "cascade",
        "n" => "set null",
        "d" => "set default",
        _ => "unknown",
    }
}

fn query(
    tx: &mut Transaction<'_>,
    requests: &mut u64,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    what: &str,
) -> Result<Vec<Row>> {
    *requests += 1;
    tx.query(sql, params)
        .map_err(transient_or)
        .with_context(|| what.to_string())
}

/// Every row of one data table, as row resources. Only the owned columns the live table has
/// are selected; a column of an unexpected type is read as text, so it shows as a change.
fn read_rows(
    tx: &mut Transaction<'_>,
    requests: &mut u64,
    table: &'static sql::DataTable,
    live: &[LiveColumn],
    out: &mut Vec<Resource>,
) -> Result<()> {
    let def = schema::table(table.name);
    let mut select = Vec::new();
    let mut kinds = Vec::new();
    for col in table.cols {
        let Some(lc) = live.iter().find(|c| c.name == *col) else {
            continue;
        };
        let want = def
            .and_then(|d| d.column(col))
            .map(|c| c.canonical_type())
            .unwrap_or("text");
        let q = quote::quote_ident(col).with_context(|| format!("column {col}"))?;
        if lc.ty == want && Kind::of(want).is_some() {
            select.push(q);
            kinds.push((*col, Kind::of(want).unwrap_or(Kind::Text)));
        } else {
            select.push(format!("{q}::text"));
            kinds.push((*col, Kind::Text));
        }
    }
    // Without its whole key a row has no address: the table's own change comes first.
    let has_key = table.cols[..table.key]
        .iter()
        .all(|k| kinds.iter().any(|(c, _)| c == k));
    if !has_key {
        return Ok(());
    }
    // Whether the running platform took the row over (its marker is set): read into `meta`,
    // never compared.
    let marker = table
        .runtime
        .as_ref()
        .map(|r| r.marker)
        .filter(|m| live.iter().any(|c| c.name == *m));
    if let Some(m) = marker {
        select.push(format!("{} IS NOT NULL", quote::quote_ident(m)?));
    }
    let order: Vec<String> = (1..=table.key).map(|i| i.to_string()).collect();
    let sql = format!(
        "SELECT {} FROM {SCHEMA}.{} ORDER BY {}",
        select.join(", "),
        quote::quote_ident(table.name).with_context(|| format!("table {}", table.name))?,
        order.join(", ")
    );
    let rows = query(
        tx,
        requests,
        &sql,
        &[],
        &format!("reading the rows of {SCHEMA}.{}", table.name),
    )?;
    out.reserve(rows.len());
    for row in &rows {
        let mut values = Vec::with_capacity(table.cols.len());
        let mut by_col: BTreeMap<&str, Value> = BTreeMap::new();
        for (i, (col, kind)) in kinds.iter().enumerate() {
            let v = kind
                .get(row, i)
                .with_context(|| format!("reading {SCHEMA}.{}.{col}", table.name))?;
            by_col.insert(col, v);
        }
        // Columns the live table lacks are absent, not NULL: row_resource gets them as
        // markers and drops them.
        for col in table.cols {
            values.push(by_col.remove(col).unwrap_or(Value::Null));
        }
        let taken_over = match marker {
            Some(m) => row
                .try_get::<_, bool>(kinds.len())
                .with_context(|| format!("reading {SCHEMA}.{}.{m}", table.name))?,
            None => false,
        };
        let mut r = row_resource(table, values);
        if taken_over {
            r.meta.insert(RUNTIME_META.into(), Value::Bool(true));
        }
        for col in table.cols {
            if !kinds.iter().any(|(c, _)| c == col) {
                r.attrs.remove(*col);
            }
        }
        out.push(r);
    }
    Ok(())
}

/// How a column's values are read.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Text,
    Int2,
    Int4,
    Int8,
    Float8,
    Bool,
    TextArray,
}

impl Kind {
    /// The reader for a type as `format_type` writes it.
    fn of(ty: &str) -> Option<Kind> {
        Some(match ty {
            "text" => Kind::Text,
            "smallint" => Kind::Int2,
            "integer" => Kind::Int4,
            "bigint" => Kind::Int8,
            "double precision" => Kind::Float8,
            "boolean" => Kind::Bool,
            "text[]" => Kind::TextArray,
            _ => return None,
        })
    }

    fn get(self, row: &Row, i: usize) -> Result<Value> {
        Ok(match self {
            Kind::Text => row
                .try_get::<_, Option<String>>(i)?
                .map_or(Value::Null, Value::String),
            Kind::Int2 => row
                .try_get::<_, Option<i16>>(i)?
                .map_or(Value::Null, Value::from),
            Kind::Int4 => row
                .try_get::<_, Option<i32>>(i)?
                .map_or(Value::Null, Value::from),
            Kind::Int8 => row
                .try_get::<_, Option<i64>>(i)?
                .map_or(Value::Null, Value::from),
            Kind::Float8 => row.try_get::<_, Option<f64>>(i)?.map_or(Value::Null, |x| {
                Number::from_f64(x).map_or_else(|| Value::String(format!("{x}")), Value::Number)
            }),
            Kind::Bool => row
                .try_get::<_, Option<bool>>(i)?
                .map_or(Value::Null, Value::Bool),
            Kind::TextArray => {
                row.try_get::<_, Option<Vec<Option<String>>>>(i)?
                    .map_or(Value::Null, |items| {
                        Value::Array(
                            items
                                .into_iter()
                                .map(|s| s.map_or(Value::Null, Value::String))
                                .collect(),
                        )
                    })
            }
        })
    }
}

/// A database error worth retrying becomes a [`Transient`] error: serialization failure and
/// deadlock (class 40), too many connections (53300), the server shutting down, crashed or
/// starting (57P01, 57P02, 57P03), connection exceptions (class 08), and every failure to
/// reach or keep the server: connection refused, reset or aborted, a broken pipe, an
/// unexpected end of the stream, a timeout, a connection already closed.
pub(super) fn transient_or(e: postgres::Error) -> anyhow::Error {
    if is_transient(&e) {
        // The Transient is the root of the chain, so `providers::transient` finds it.
        anyhow::Error::new(Transient {
            message: format!("{NAME}: {}", ErrorChain(&e)),
            retry_after: None,
        })
    } else {
        anyhow::Error::new(e)
    }
}

fn is_transient(e: &postgres::Error) -> bool {
    if let Some(code) = e.code() {
        let c = code.code();
        return c.starts_with("40")
            || c.starts_with("08")
            || matches!(c, "53300" | "57P01" | "57P02" | "57P03");
    }
    e.is_closed() || io_kind(e).is_some_and(is_transient_io)
}

/// The kind of the I/O error somewhere below `e`, if any.
fn io_kind(e: &postgres::Error) -> Option<std::io::ErrorKind> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        source = s.source();
    }
    None
}

fn is_transient_io(kind: std::io::ErrorKind) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        kind,
        K::ConnectionRefused
            | K::ConnectionReset
            | K::ConnectionAborted
            | K::NotConnected
            | K::BrokenPipe
            | K::UnexpectedEof
            | K::TimedOut
            | K::Interrupted
            | K::AddrNotAvailable
    )
}

/// An error with its sources, `: `-separated (the postgres crate's `Display` hides them).
struct ErrorChain<'a>(&'a postgres::Error);

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = std::error::Error::source(self.0);
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_connections_are_transient_and_other_io_is_not() {
        use std::io::ErrorKind as K;
        for k in [
            K::ConnectionRefused,
            K::ConnectionReset,
            K::UnexpectedEof,
            K::BrokenPipe,
        ] {
            assert!(is_transient_io(k), "{k:?}");
        }
        assert!(!is_transient_io(K::PermissionDenied));
        assert!(!is_transient_io(K::InvalidData));
    }
}
