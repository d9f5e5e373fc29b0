//! The PostgreSQL emitter: the platform database's schema (`<env>/sql/001_schema.sql`), the
//! rows the specs define (`<env>/sql/002_data.sql`): plans, tenants with their effective
//! quotas, feature flags and their overrides, and the services' login roles
//! (`<env>/sql/003_roles.sql`, [`roles`]).
//!
//! Both scripts are idempotent and each runs in one transaction under one advisory lock
//! ([`LOCK_KEY`]). The data script only inserts and updates (`INSERT ... ON CONFLICT ... DO
//! UPDATE`, skipping rows that already match): it never deletes a row and never writes the
//! usage counters (`kombify.quotas.used_*`) the SSO service maintains.
//!
//! Not here: connecting to a server (that is the deploy engine's job), deleting rows the specs
//! no longer name (the deploy engine plans those deletes explicitly), and any value written
//! into SQL without [`quote`].

use std::fmt::Write as _;

use crate::Files;
use kombiform_model::{Env, InstanceMode, Isolation};

pub mod roles;
pub mod schema;

/// The PostgreSQL schema holding every platform table.
pub const SCHEMA: &str = "kombify";

/// The schema version `001_schema.sql` records in `kombify.schema_version`.
pub const SCHEMA_VERSION: u32 = 1;

/// What `kombify.schema_version` says [`SCHEMA_VERSION`] created (plain text, no quote).
pub const SCHEMA_DESCRIPTION: &str =
    "plans, tenants, quotas, feature flags, webhook events, audit log, SSO users";

/// The transaction-level advisory lock both scripts take first (`pg_advisory_xact_lock`), so
/// two applies never interleave. The bytes of `"kombify"`.
pub const LOCK_KEY: i64 = 0x006b_6f6d_6269_6679;

/// Adds `<env>/sql/001_schema.sql` and `<env>/sql/002_data.sql`.
pub fn emit(env: Env<'_>, files: &mut Files) {
    files.insert(format!("{}/sql/001_schema.sql", env.name()), schema_sql());
    files.insert(format!("{}/sql/002_data.sql", env.name()), data_sql(env));
    files.insert(
        format!("{}/sql/003_roles.sql", env.name()),
        roles::script(env.platform),
    );
}

// ---------------------------------------------------------------------------------------
// Quoting
// ---------------------------------------------------------------------------------------

pub mod quote {
    //! Quoting of SQL literals and identifiers for PostgreSQL: the one way any text reaches
    //! generated SQL.
    //!
    //! Literals are `'...'` with `'` doubled. Text holding a backslash is written as an
    //! escape string `E'...'` with the backslash doubled too, so a literal means the same text
    //! whatever `standard_conforming_strings` is set to. NUL cannot be stored in PostgreSQL
    //! text at all, so it is refused, never dropped. Identifiers are written bare when
    //! PostgreSQL's own `quote_ident` would, else in `"..."` with `"` doubled.
    //!
    //! Not here: dollar quoting (never used for values) and any escaping of LIKE patterns.

    use std::fmt;

    /// Why a text cannot be written as SQL.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum QuoteError {
        /// The text holds U+0000, which PostgreSQL text cannot hold.
        Nul,
        /// An identifier is empty.
        EmptyIdent,
        /// An identifier is longer than 63 bytes: PostgreSQL would silently truncate it.
        IdentTooLong,
    }

    impl fmt::Display for QuoteError {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(match self {
                QuoteError::Nul => "contains a NUL character, which PostgreSQL text cannot hold",
                QuoteError::EmptyIdent => "is an empty identifier",
                QuoteError::IdentTooLong => {
                    "is longer than 63 bytes, PostgreSQL's identifier limit"
                }
            })
        }
    }

    impl std::error::Error for QuoteError {}

    /// Longest identifier PostgreSQL keeps (NAMEDATALEN - 1), in bytes.
    pub const MAX_IDENT_BYTES: usize = 63;

    /// `s` as a string literal.
    pub fn quote_literal(s: &str) -> Result<String, QuoteError> {
        let mut out = String::with_capacity(s.len() + 3);
        push_literal(&mut out, s)?;
        Ok(out)
    }

    /// Appends `s` as a string literal to `out`. On error nothing is appended.
    pub fn push_literal(out: &mut String, s: &str) -> Result<(), QuoteError> {
        let mut quotes = false;
        let mut backslashes = false;
        for b in s.bytes() {
            match b {
                0 => return Err(QuoteError::Nul),
                b'\'' => quotes = true,
                b'\\' => backslashes = true,
                _ => {}
            }
        }
        if backslashes {
            out.push('E');
        }
        out.push('\'');
        if quotes || backslashes {
            let mut rest = s;
            while let Some(i) = rest.find(['\'', '\\']) {
                out.push_str(&rest[..i]);
                // The special is one ASCII byte: write it twice.
                out.push_str(if rest.as_bytes()[i] == b'\'' {
                    "''"
                } else {
                    "\\\\"
                });
                rest = &rest[i + 1..];
            }
            out.push_str(rest);
        } else {
            out.push_str(s);
        }
        out.push('\'');
        Ok(())
    }

    /// `s` as an identifier: bare when it is lowercase ASCII letters, digits and `_` (not
    /// starting with a digit) and not a keyword, else double-quoted.
    pub fn quote_ident(s: &str) -> Result<String, QuoteError> {
        if s.is_empty() {
            return Err(QuoteError::EmptyIdent);
        }
        if s.len() > MAX_IDENT_BYTES {
            return Err(QuoteError::IdentTooLong);
        }
        if s.contains('\0') {
            return Err(QuoteError::Nul);
        }
        if is_plain(s) {
            return Ok(s.to_string());
        }
        let mut out = String::with_capacity(s.len() + 2);
        out.push('"');
        out.push_str(&s.replace('"', "\"\""));
        out.push('"');
        Ok(out)
    }

    fn is_plain(s: &str) -> bool {
        let b = s.as_bytes();
        let first = b
            .first()
            .is_some_and(|c| c.is_ascii_lowercase() || *c == b'_');
        first
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
            && KEYWORDS.binary_search(&s).is_err()
    }

    /// PostgreSQL keywords that are not "unreserved" (reserved, column-name and
    /// type/function-name keywords), sorted: as identifiers they must be quoted. The list of
    /// PostgreSQL 15's `pg_get_keywords()` with `catcode <> 'U'`, plus those PostgreSQL 16 and
    /// 17 added (quoting one too many is harmless).
    const KEYWORDS: &[&str] = &[
        "all",
        "analyse",
        "analyze",
        "and",
        "any",
        "array",
        "as",
        "asc",
        "asymmetric",
        "authorization",
        "between",
        "bigint",
        "binary",
        "bit",
        "boolean",
        "both",
        "case",
        "cast",
        "char",
        "character",
        "check",
        "coalesce",
        "collate",
        "collation",
        "column",
        "concurrently",
        "constraint",
        "create",
        "cross",
        "current_catalog",
        "current_date",
        "current_role",
        "current_schema",
        "current_time",
        "current_timestamp",
        "current_user",
        "dec",
        "decimal",
        "default",
        "deferrable",
        "desc",
        "distinct",
        "do",
        "else",
        "end",
        "except",
        "exists",
        "extract",
        "false",
        "fetch",
        "float",
        "for",
        "foreign",
        "freeze",
        "from",
        "full",
        "grant",
        "greatest",
        "group",
        "grouping",
        "having",
        "ilike",
        "in",
        "initially",
        "inner",
        "inout",
        "int",
        "integer",
        "intersect",
        "interval",
        "into",
        "is",
        "isnull",
        "join",
        "json",
        "json_array",
        "json_arrayagg",
        "json_exists",
        "json_object",
        "json_objectagg",
        "json_query",
        "json_scalar",
        "json_serialize",
        "json_table",
        "json_value",
        "lateral",
        "leading",
        "least",
        "left",
        "like",
        "limit",
        "localtime",
        "localtimestamp",
        "merge_action",
        "national",
        "natural",
        "nchar",
        "none",
        "normalize",
        "not",
        "notnull",
        "null",
        "nullif",
        "numeric",
        "offset",
        "on",
        "only",
        "or",
        "order",
        "out",
        "outer",
        "overlaps",
        "overlay",
        "placing",
        "position",
        "precision",
        "primary",
        "real",
        "references",
        "returning",
        "right",
        "row",
        "select",
        "session_user",
        "setof",
        "similar",
        "smallint",
        "some",
        "substring",
        "symmetric",
        "system_user",
        "table",
        "tablesample",
        "then",
        "time",
        "timestamp",
        "to",
        "trailing",
        "treat",
        "trim",
        "true",
        "union",
        "unique",
        "user",
        "using",
        "values",
        "varchar",
        "variadic",
        "verbose",
        "when",
        "where",
        "window",
        "with",
        "xmlattributes",
        "xmlconcat",
        "xmlelement",
        "xmlexists",
        "xmlforest",
        "xmlnamespaces",
        "xmlparse",
        "xmlpi",
        "xmlroot",
        "xmlserialize",
        "xmltable",
    ];

    #[cfg(test)]
    mod tests {
        use super::*;

        fn lit(s: &str) -> String {
            match quote_literal(s) {
                Ok(q) => q,
                Err(e) => format!("error: {e}"),
            }
        }

        #[test]
        fn literals() {
            let cases: &[(&str, &str)] = &[
                ("", "''"),
                ("acme", "'acme'"),
                ("O'Reilly", "'O''Reilly'"),
                ("''", "''''''"),
                (
                    "a; DROP TABLE kombify.tenants; --",
                    "'a; DROP TABLE kombify.tenants; --'",
                ),
                ("x'); DELETE FROM t; --", "'x''); DELETE FROM t; --'"),
                (r"C:\temp", r"E'C:\\temp'"),
                (r"\'", r"E'\\'''"),
                (r"ends with \", r"E'ends with \\'"),
                ("$$ dollar $tag$", "'$$ dollar $tag$'"),
                ("line\nbreak\r\ttab", "'line\nbreak\r\ttab'"),
                ("Grüße, 東京 🦀", "'Grüße, 東京 🦀'"),
                ("\"double\"", "'\"double\"'"),
                (
                    "Initech \"Labs\"; O'Reilly & Sons \\ Co",
                    "E'Initech \"Labs\"; O''Reilly & Sons \\\\ Co'",
                ),
                (
                    "nul\0byte",
                    "error: contains a NUL character, which PostgreSQL text cannot hold",
                ),
            ];
            for (input, want) in cases {
                assert_eq!(&lit(input), want, "input {input:?}");
            }
        }

        #[test]
        fn a_refused_literal_appends_nothing() {
            let mut out = String::from("x");
            assert_eq!(push_literal(&mut out, "a'\0"), Err(QuoteError::Nul));
            assert_eq!(out, "x");
        }

        #[test]
        fn identifiers() {
            let q = |s: &str| match quote_ident(s) {
                Ok(q) => q,
                Err(e) => format!("error: {e}"),
            };
            assert_eq!(q("tenants"), "tenants");
            assert_eq!(q("used_users"), "used_users");
            assert_eq!(q("_x1"), "_x1");
            assert_eq!(q("Tenants"), "\"Tenants\"");
            assert_eq!(q("1abc"), "\"1abc\"");
            assert_eq!(q("stark-lab"), "\"stark-lab\"");
            assert_eq!(q("user"), "\"user\"");
            assert_eq!(q("default"), "\"default\"");
            assert_eq!(q("a\"b"), "\"a\"\"b\"");
            assert_eq!(
                q("x\"; DROP SCHEMA kombify; --"),
                "\"x\"\"; DROP SCHEMA kombify; --\""
            );
            assert_eq!(q("größe"), "\"größe\"");
            assert_eq!(q(""), "error: is an empty identifier");
            assert_eq!(
                q("a\0"),
                "error: contains a NUL character, which PostgreSQL text cannot hold"
            );
            assert_eq!(q(&"a".repeat(63)), "a".repeat(63));
            assert_eq!(
                q(&"a".repeat(64)),
                "error: is longer than 63 bytes, PostgreSQL's identifier limit"
            );
        }

        #[test]
        fn keywords_are_sorted_for_binary_search() {
            assert!(KEYWORDS.windows(2).all(|w| w[0] < w[1]));
        }
    }
}

// ---------------------------------------------------------------------------------------
// 001_schema.sql
// ---------------------------------------------------------------------------------------

/// The schema script. The same for every environment.
pub fn schema_sql() -> String {
    let body = schema::body();
    let mut s = String::with_capacity(body.len() + 1024);
    s.push_str(
        "-- Generated by kombiform: the schema of the kombify platform database (PostgreSQL 15+).\n\
         -- Do not edit: change kombiform and run `kombiform build`.\n\
         --\n\
         -- Idempotent: every object is created only when missing, so running this again changes\n\
         -- nothing. Version 1 creates every table in full; a later version adds to existing tables\n\
         -- with ALTER TABLE ... ADD COLUMN IF NOT EXISTS and records itself in schema_version.\n\
         SET client_encoding = 'UTF8';\n\
         BEGIN;\n",
    );
    let _ = writeln!(
        s,
        "-- One apply at a time (the data script takes the same lock).\nSELECT pg_advisory_xact_lock({LOCK_KEY});\n"
    );
    s.push_str(&body);
    let _ = writeln!(
        s,
        "\nINSERT INTO kombify.schema_version (version, description)\n\
         VALUES ({SCHEMA_VERSION}, '{SCHEMA_DESCRIPTION}')\n\
         ON CONFLICT (version) DO NOTHING;\n\nCOMMIT;"
    );
    s
}

// ---------------------------------------------------------------------------------------
// 002_data.sql
// ---------------------------------------------------------------------------------------

/// A table the data script upserts into.
#[derive(Debug, PartialEq, Eq)]
pub struct DataTable {
    /// Name in [`SCHEMA`].
    pub name: &'static str,
    /// Columns written, in order; the first `key` of them are the conflict key.
    pub cols: &'static [&'static str],
    /// How many leading columns form the key.
    pub key: usize,
    /// Whether the table has an `updated_at` column to set when a row changes.
    pub touch: bool,
    /// Columns the running platform takes over from the specs, if any.
    pub runtime: Option<RuntimeOwned>,
}

/// Columns of a row that the running platform owns once it has written them: the specs seed
/// them when the row is created; after that neither the data script nor `apply` writes them.
#[derive(Debug, PartialEq, Eq)]
pub struct RuntimeOwned {
    /// The timestamp column the platform sets when it takes the row over (NULL: the specs
    /// still own the columns).
    pub marker: &'static str,
    /// The columns it then owns (a subset of [`DataTable::cols`], never the key).
    pub cols: &'static [&'static str],
    /// Who, for people (`billing (Stripe)`).
    pub owner: &'static str,
}

impl DataTable {
    /// Whether the running platform may own column `col` of this table.
    pub fn runtime_col(&self, col: &str) -> bool {
        self.runtime.as_ref().is_some_and(|r| r.cols.contains(&col))
    }
}

/// What `SET` writes into column `c` on conflict: the new value, except for a runtime-owned
/// column of a row the platform took over, which keeps its value.
pub fn set_expr(table: &DataTable, c: &str) -> String {
    match &table.runtime {
        Some(r) if r.cols.contains(&c) => format!(
            "CASE WHEN cur.{m} IS NULL THEN EXCLUDED.{c} ELSE cur.{c} END",
            m = r.marker
        ),
        _ => format!("EXCLUDED.{c}"),
    }
}

/// `kombify.plans`.
pub const PLANS: DataTable = DataTable {
    name: "plans",
    cols: &[
        "name",
        "display_name",
        "price_cents",
        "stripe_price_id",
        "features",
        "stackkits",
        "max_users",
        "max_nodes",
        "max_stacks",
        "max_simulations",
        "rate_limit_second",
        "rate_limit_minute",
        "rate_limit_hour",
        "rate_limit_day",
        "sim_max_concurrent",
        "sim_cpu_per_simulation",
        "sim_memory_mb_per_simulation",
        "sim_isolation",
    ],
    key: 1,
    touch: true,
    runtime: None,
};

/// `kombify.tenants`.
pub const TENANTS: DataTable = DataTable {
    name: "tenants",
    cols: &[
        "slug",
        "display_name",
        "plan",
        "zitadel_org_id",
        "instance",
        "status",
        "stripe_customer_id",
        "allow_destroy",
    ],
    key: 1,
    touch: true,
    runtime: Some(RuntimeOwned {
        marker: "plan_billed_at",
        cols: &["plan"],
        owner: "billing (Stripe)",
    }),
};

/// `kombify.quotas`: the limits only; the usage counters belong to the services.
pub const QUOTAS: DataTable = DataTable {
    name: "quotas",
    cols: &[
        "tenant",
        "max_users",
        "max_nodes",
        "max_stacks",
        "max_simulations",
        "rate_limit_second",
        "rate_limit_minute",
        "rate_limit_hour",
        "rate_limit_day",
    ],
    key: 1,
    touch: true,
    runtime: None,
};

/// `kombify.flags`.
pub const FLAGS: DataTable = DataTable {
    name: "flags",
    cols: &["name", "description", "default_enabled", "rollout_percent"],
    key: 1,
    touch: true,
    runtime: Some(RuntimeOwned {
        marker: "synced_at",
        cols: &["description", "default_enabled", "rollout_percent"],
        owner: "the Admin flag sync",
    }),
};

/// `kombify.flag_plan_overrides`.
pub const FLAG_PLAN_OVERRIDES: DataTable = DataTable {
    name: "flag_plan_overrides",
    cols: &["flag", "plan", "enabled"],
    key: 2,
    touch: false,
    runtime: None,
};

/// `kombify.flag_tenant_overrides`.
pub const FLAG_TENANT_OVERRIDES: DataTable = DataTable {
    name: "flag_tenant_overrides",
    cols: &["flag", "tenant", "enabled"],
    key: 2,
    touch: false,
    runtime: None,
};

/// Every table the data script writes, in the order it writes them (parents first).
pub const DATA_TABLES: [&DataTable; 6] = [
    &PLANS,
    &TENANTS,
    &QUOTAS,
    &FLAGS,
    &FLAG_PLAN_OVERRIDES,
    &FLAG_TENANT_OVERRIDES,
];

/// One value of one row, as the specs define it (before quoting).
#[derive(Clone, Debug, PartialEq)]
pub enum SqlValue {
    /// `NULL`.
    Null,
    /// Text (may hold a NUL, which no writer lets through).
    Text(String),
    /// An integer of any width.
    Int(i64),
    /// A double (may be non-finite, which no writer lets through).
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A `text[]`, in the model's order.
    TextArray(Vec<String>),
    /// No value can be written: why (the apply must fail).
    Invalid(String),
}

/// The rows of one table.
#[derive(Clone, Debug, PartialEq)]
pub struct TableRows {
    /// The table.
    pub table: &'static DataTable,
    /// Rows in key order, each with one value per column of `table.cols`.
    pub rows: Vec<Vec<SqlValue>>,
}

fn text(s: &str) -> SqlValue {
    SqlValue::Text(s.to_string())
}

fn opt_text(s: Option<&str>) -> SqlValue {
    s.map_or(SqlValue::Null, text)
}

fn int(n: u32) -> SqlValue {
    SqlValue::Int(i64::from(n))
}

fn opt_int(n: Option<u32>) -> SqlValue {
    n.map_or(SqlValue::Null, int)
}

/// Every row the specs define for one environment, table by table in [`DATA_TABLES`] order.
/// Both the data script and the deploy engine's PostgreSQL provider are built from these.
pub fn data_rows(env: Env<'_>) -> Vec<TableRows> {
    let tenants: Vec<_> = env.tenants().collect();
    let plans = env
        .plans()
        .iter()
        .map(|p| {
            vec![
                text(&p.name),
                text(&p.display_name),
                int(p.price_cents),
                opt_text(p.stripe_price_id.as_deref()),
                SqlValue::TextArray(p.features.iter().map(|f| f.as_str().to_string()).collect()),
                SqlValue::TextArray(p.stackkits.clone()),
                int(p.quotas.max_users),
                int(p.quotas.max_nodes),
                int(p.quotas.max_stacks),
                int(p.quotas.max_simulations),
                opt_int(p.rate_limits.second),
                opt_int(p.rate_limits.minute),
                opt_int(p.rate_limits.hour),
                opt_int(p.rate_limits.day),
                int(p.simulation.max_concurrent),
                SqlValue::Float(p.simulation.cpu_per_simulation),
                int(p.simulation.memory_mb_per_simulation),
                text(match p.simulation.isolation {
                    Isolation::Network => "network",
                    Isolation::Vm => "vm",
                }),
            ]
        })
        .collect();

    let tenant_rows = tenants
        .iter()
        .map(|t| {
            vec![
                text(&t.slug),
                text(&t.display_name),
                text(&t.plan),
                text(&t.zitadel_org_id),
                text(match t.instance {
                    InstanceMode::Shared => "shared",
                    InstanceMode::Dedicated => "dedicated",
                }),
                text(t.status.as_str()),
                opt_text(t.stripe_customer_id.as_deref()),
                SqlValue::Bool(t.allow_destroy),
            ]
        })
        .collect();

    let quotas = tenants
        .iter()
        .map(|t| {
            let mut row = vec![text(&t.slug)];
            match env.plan_of(t) {
                Some(plan) => {
                    let q = plan.quotas.with(&t.quota_overrides);
                    let r = &plan.rate_limits;
                    row.extend([
                        int(q.max_users),
                        int(q.max_nodes),
                        int(q.max_stacks),
                        int(q.max_simulations),
                        opt_int(r.second),
                        opt_int(r.minute),
                        opt_int(r.hour),
                        opt_int(r.day),
                    ]);
                }
                None => row.extend(
                    (0..8).map(|_| SqlValue::Invalid("tenant has no known plan".to_string())),
                ),
            }
            row
        })
        .collect();

    let flags = env
        .flags()
        .iter()
        .map(|f| {
            vec![
                text(&f.name),
                text(&f.description),
                SqlValue::Bool(f.default),
                opt_int(f.rollout_percent.map(u32::from)),
            ]
        })
        .collect();

    let plan_overrides = env
        .flags()
        .iter()
        .flat_map(|f| {
            f.plans
                .iter()
                .map(move |(plan, on)| vec![text(&f.name), text(plan), SqlValue::Bool(*on)])
        })
        .collect();

    // Only tenants of this environment: the others have no row here to refer to.
    let here = |slug: &str| {
        tenants
            .binary_search_by(|t| t.slug.as_str().cmp(slug))
            .is_ok()
    };
    let tenant_overrides = env
        .flags()
        .iter()
        .flat_map(|f| {
            f.tenants
                .iter()
                .filter(|(slug, _)| here(slug))
                .map(move |(slug, on)| vec![text(&f.name), text(slug), SqlValue::Bool(*on)])
        })
        .collect();

    [
        (&PLANS, plans),
        (&TENANTS, tenant_rows),
        (&QUOTAS, quotas),
        (&FLAGS, flags),
        (&FLAG_PLAN_OVERRIDES, plan_overrides),
        (&FLAG_TENANT_OVERRIDES, tenant_overrides),
    ]
    .into_iter()
    .map(|(table, rows)| TableRows { table, rows })
    .collect()
}

/// The data script of one environment.
pub fn data_sql(env: Env<'_>) -> String {
    let tables = data_rows(env);
    let rows: usize = tables.iter().map(|t| t.rows.len()).sum();
    // About 200 bytes per tenant row and 80 per quota row.
    let mut s = String::with_capacity(4096 + rows * 150);
    let _ = write!(
        s,
        "-- Generated by kombiform: the rows of the kombify platform database for environment `{}`.\n\
         -- Do not edit: change the specs and run `kombiform build`.\n\
         --\n\
         -- Idempotent: every row is written with INSERT ... ON CONFLICT ... DO UPDATE, all in one\n\
         -- transaction; a row that already has these values is not rewritten.\n\
         -- Rows no longer in the specs are NOT deleted here: the deploy engine plans and applies\n\
         -- deletes explicitly, with consent.\n\
         -- The usage counters (kombify.quotas.used_*) are never written here, so running this again\n\
         -- never resets them.\n\
         SET client_encoding = 'UTF8';\n\
         BEGIN;\n\
         SELECT pg_advisory_xact_lock({LOCK_KEY});\n",
        // Environment names are validated names; keep them out of the comment if not.
        if env.name().contains(['\n', '\r']) { "?" } else { env.name() },
    );
    for t in &tables {
        upsert(&mut s, t);
    }
    s.push_str("\nCOMMIT;\n");
    s
}

/// Writes one `INSERT ... ON CONFLICT ... DO UPDATE` statement for the rows of one table
/// (nothing but a comment when there are none).
fn upsert(out: &mut String, rows: &TableRows) {
    let table = rows.table;
    let name = ident(table.name);
    let cols: Vec<String> = table.cols.iter().map(|c| ident(c)).collect();
    if rows.rows.is_empty() {
        let _ = writeln!(out, "\n-- {SCHEMA}.{name}: no rows.");
        return;
    }
    let _ = write!(
        out,
        "\nINSERT INTO {SCHEMA}.{name} AS cur ({})\nVALUES\n",
        cols.join(", ")
    );
    let mut first = true;
    for row in &rows.rows {
        out.push_str(if first { "  (" } else { ",\n  (" });
        first = false;
        debug_assert_eq!(
            row.len(),
            table.cols.len(),
            "row of {} is short",
            table.name
        );
        let mut v = Values { out, table, col: 0 };
        for value in row {
            v.value(value);
        }
        out.push(')');
    }
    let (key, rest) = cols.split_at(table.key);
    let _ = write!(out, "\nON CONFLICT ({}) DO ", key.join(", "));
    if rest.is_empty() {
        out.push_str("NOTHING;\n");
        return;
    }
    out.push_str("UPDATE SET\n");
    for c in rest {
        let _ = writeln!(out, "  {c} = {},", set_expr(table, c));
    }
    if table.touch {
        out.push_str("  updated_at = now()\n");
    } else {
        // Drop the last comma.
        out.truncate(out.len() - 2);
        out.push('\n');
    }
    let current: Vec<String> = rest.iter().map(|c| format!("cur.{c}")).collect();
    let excluded: Vec<String> = rest.iter().map(|c| set_expr(table, c)).collect();
    let _ = writeln!(
        out,
        "WHERE ({}) IS DISTINCT FROM ({});",
        current.join(", "),
        excluded.join(", ")
    );
}

/// One of our own (constant, plain) table or column names, quoted if it ever needed it.
fn ident(name: &str) -> String {
    quote::quote_ident(name).unwrap_or_else(|_| format!("\"{name}\""))
}

/// Writes the values of one row, comma-separated.
struct Values<'a> {
    out: &'a mut String,
    table: &'static DataTable,
    /// Values written so far.
    col: usize,
}

impl Values<'_> {
    fn value(&mut self, v: &SqlValue) {
        match v {
            SqlValue::Null => {
                self.next();
                self.out.push_str("NULL");
            }
            SqlValue::Text(s) => self.text(s),
            SqlValue::Int(n) => {
                self.next();
                let _ = write!(self.out, "{n}");
            }
            SqlValue::Float(x) => self.float(*x),
            SqlValue::Bool(b) => {
                self.next();
                self.out.push_str(if *b { "true" } else { "false" });
            }
            SqlValue::TextArray(items) => self.text_array(items.iter().map(String::as_str)),
            SqlValue::Invalid(why) => self.invalid(why),
        }
    }

    fn next(&mut self) {
        if self.col > 0 {
            self.out.push_str(", ");
        }
        self.col += 1;
    }

    /// A call that fails the apply, naming the column, instead of a value that cannot be
    /// written.
    fn invalid(&mut self, why: &str) {
        self.next();
        let column = self.table.cols.get(self.col - 1).copied().unwrap_or("?");
        let what = format!("{SCHEMA}.{}.{column}: {why}", self.table.name);
        self.out.push_str("kombify.invalid_value(");
        // `what` is built from our constants and messages: it has no NUL.
        let _ = quote::push_literal(self.out, &what);
        self.out.push(')');
    }

    fn text(&mut self, s: &str) {
        let start = self.out.len();
        self.next();
        if let Err(e) = quote::push_literal(self.out, s) {
            self.out.truncate(start);
            self.col -= 1;
            self.invalid(&format!("a value {e}"));
        }
    }

    fn text_array<'s>(&mut self, items: impl Iterator<Item = &'s str>) {
        let start = self.out.len();
        self.next();
        let mut any = false;
        for item in items {
            self.out.push_str(if any { ", " } else { "ARRAY[" });
            any = true;
            if let Err(e) = quote::push_literal(self.out, item) {
                self.out.truncate(start);
                self.col -= 1;
                self.invalid(&format!("an array element {e}"));
                return;
            }
        }
        self.out
            .push_str(if any { "]::text[]" } else { "'{}'::text[]" });
    }

    fn float(&mut self, x: f64) {
        if x.is_finite() {
            self.next();
            // Rust prints the shortest text that reads back as the same f64, never with an
            // exponent: exact in a double precision column.
            let _ = write!(self.out, "{x}");
        } else {
            self.invalid("not a finite number");
            self.out.push_str("::double precision");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kombiform_model::Model;

    fn model() -> Model {
        kombiform_test_support::example_model()
    }

    fn data(model: &Model, env: &str) -> String {
        match model.env(env) {
            Some(e) => data_sql(e),
            None => panic!("no environment {env}"),
        }
    }

    /// The line of `sql` that starts the row with key `key`, without its trailing comma.
    fn row<'a>(sql: &'a str, table: &str, key: &str) -> &'a str {
        let start = match sql.find(&format!("INSERT INTO kombify.{table} AS")) {
            Some(i) => i,
            None => panic!("no insert into {table}"),
        };
        let prefix = format!("  ('{key}', ");
        match sql[start..].lines().find(|l| l.starts_with(&prefix)) {
            Some(l) => l.trim_end_matches(','),
            None => panic!("no row {key} in {table}"),
        }
    }

    #[test]
    fn our_identifiers_are_plain() {
        for t in DATA_TABLES {
            assert_eq!(ident(t.name), t.name);
            for c in t.cols {
                assert_eq!(ident(c), *c, "column {c} of {}", t.name);
            }
        }
        assert_eq!(ident(SCHEMA), SCHEMA);
    }

    #[test]
    fn effective_quotas_and_escaped_names() {
        let m = model();
        let sql = data(&m, "prod");
        // acme has pro's quotas; globex overrides maxUsers to 800; stark-lab maxNodes to 5.
        assert_eq!(
            row(&sql, "quotas", "acme"),
            "  ('acme', 25, 50, 20, 100, 20, 600, 20000, 200000)"
        );
        assert_eq!(
            row(&sql, "quotas", "globex"),
            "  ('globex', 800, 1000, 500, 5000, 100, 3000, 100000, 1000000)"
        );
        assert_eq!(
            row(&sql, "quotas", "stark-lab"),
            "  ('stark-lab', 3, 5, 2, 5, NULL, 60, 1000, 5000)"
        );
        assert_eq!(
            row(&sql, "tenants", "initech"),
            "  ('initech', E'Initech \"Labs\"; O''Reilly & Sons \\\\ Co', 'free', \
             '284715550000000003', 'shared', 'active', NULL, false)"
        );
        assert_eq!(
            row(&sql, "plans", "pro"),
            "  ('pro', 'Pro', 4900, 'price_1PkPro0000000000000000', \
             ARRAY['stackkits', 'simulations']::text[], \
             ARRAY['homelab-base', 'media-server', 'smart-home']::text[], \
             25, 50, 20, 100, 20, 600, 20000, 200000, 3, 1, 2048, 'network')"
        );
        assert!(sql.contains("  ('free', 'Free', 0, NULL, '{}'::text[], '{}'::text[], "));
    }

    #[test]
    fn tenants_and_overrides_follow_the_environment() {
        let m = model();
        let prod = data(&m, "prod");
        let local = data(&m, "local");
        assert!(!prod.contains("'devtest'"));
        assert!(local.contains("  ('devtest', 'Developer sandbox', 'pro', "));
        assert!(prod.contains("  ('new-dashboard', 'acme', true)"));
        assert!(prod.contains("  ('stackkits-marketplace', 'hooli', false)"));
    }

    #[test]
    fn the_data_script_never_writes_usage_or_deletes() {
        let m = model();
        let sql = data(&m, "prod");
        let code: String = sql
            .lines()
            .filter(|l| !l.starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(!code.contains("used_"));
        assert!(!code.to_uppercase().contains("DELETE"));
        assert!(!code.to_uppercase().contains("TRUNCATE"));
        assert!(sql.contains("Rows no longer in the specs are NOT deleted here"));
        assert_eq!(sql.matches("BEGIN;").count(), 1);
        assert!(sql.ends_with("COMMIT;\n"));
        assert_eq!(code.matches("ON CONFLICT").count(), 6);
    }

    #[test]
    fn rows_are_sorted_by_key() {
        let m = model();
        let sql = data(&m, "local");
        let keys = |table: &str| -> Vec<String> {
            let start = sql
                .find(&format!("INSERT INTO kombify.{table} AS"))
                .unwrap_or(0);
            sql[start..]
                .lines()
                .skip(2)
                .take_while(|l| l.starts_with("  ("))
                .map(|l| l.split(", ").take(2).collect::<Vec<_>>().join(","))
                .collect()
        };
        for t in DATA_TABLES {
            let k = keys(t.name);
            assert!(!k.is_empty(), "{} has rows", t.name);
            let mut sorted = k.clone();
            sorted.sort();
            assert_eq!(k, sorted, "{} rows in key order", t.name);
        }
    }

    #[test]
    fn a_value_postgres_cannot_hold_fails_the_apply_loudly() {
        let mut m = model();
        m.plans[0].display_name = "bad\0name".to_string();
        m.plans[0].stackkits = vec!["ok".into(), "b\0d".into()];
        m.plans[0].simulation.cpu_per_simulation = f64::NAN;
        let sql = data(&m, "prod");
        let line = row(&sql, "plans", "enterprise");
        assert!(
            line.starts_with(
                "  ('enterprise', kombify.invalid_value('kombify.plans.display_name: a value contains a NUL character, which PostgreSQL text cannot hold'), "
            ),
            "{line}"
        );
        assert!(line.contains(", kombify.invalid_value('kombify.plans.stackkits: an array element contains a NUL character, which PostgreSQL text cannot hold'), 500, "), "{line}");
        assert!(line.contains(", kombify.invalid_value('kombify.plans.sim_cpu_per_simulation: not a finite number')::double precision, "), "{line}");
        assert!(!sql.contains('\0'));
    }

    #[test]
    fn the_schema_is_idempotent_in_form() {
        let s = schema_sql();
        for line in s.lines() {
            let l = line.trim_start();
            if l.starts_with("CREATE ") {
                assert!(
                    l.starts_with("CREATE SCHEMA IF NOT EXISTS")
                        || l.starts_with("CREATE TABLE IF NOT EXISTS")
                        || l.starts_with("CREATE INDEX IF NOT EXISTS")
                        || l.starts_with("CREATE UNIQUE INDEX IF NOT EXISTS")
                        || l.starts_with("CREATE OR REPLACE "),
                    "not idempotent: {line}"
                );
            }
        }
        assert!(s.contains("ON CONFLICT (version) DO NOTHING"));
    }

    #[test]
    fn output_is_deterministic() {
        let m = model();
        let mut a = Files::new();
        let mut b = Files::new();
        for env in m.envs() {
            emit(env, &mut a);
            emit(env, &mut b);
        }
        assert_eq!(a, b);
        assert!(a.contains_key("prod/sql/001_schema.sql"));
        assert!(a.contains_key("local/sql/002_data.sql"));
    }

    #[test]
    fn ten_thousand_tenants() {
        let f = kombiform_test_support::synthetic::Fleet {
            tenants: 10_000,
            ..Default::default()
        };
        let m = kombiform_test_support::synthetic::fleet(model(), f);
        let last = &m.tenants[9_999];
        let mut files = Files::new();
        for env in m.envs() {
            emit(env, &mut files);
        }
        let prod = &files["prod/sql/002_data.sql"];
        // Tenants and quotas; the flag overrides name example tenants, absent here.
        assert_eq!(prod.matches("  ('t0").count(), 20_000);
        let row = format!(
            "  ('t09999', E'Tenant 9999 O''Brien \\\\ Co', '{}', ",
            last.plan
        );
        assert!(prod.contains(&row), "{row}");
    }
}
