//! The PostgreSQL emitter: the platform database's schema (`<env>/sql/001_schema.sql`) and
//! the rows the specs define (`<env>/sql/002_data.sql`): plans, tenants with their effective
//! quotas, feature flags and their overrides.
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

use crate::emit::Files;
use crate::model::{Env, InstanceMode, Isolation};

/// The PostgreSQL schema holding every platform table.
pub const SCHEMA: &str = "kombify";

/// The schema version `001_schema.sql` records in `kombify.schema_version`.
pub const SCHEMA_VERSION: u32 = 1;

/// The transaction-level advisory lock both scripts take first (`pg_advisory_xact_lock`), so
/// two applies never interleave. The bytes of `"kombify"`.
pub const LOCK_KEY: i64 = 0x006b_6f6d_6269_6679;

/// Adds `<env>/sql/001_schema.sql` and `<env>/sql/002_data.sql`.
pub fn emit(env: Env<'_>, files: &mut Files) {
    files.insert(format!("{}/sql/001_schema.sql", env.name()), schema_sql());
    files.insert(format!("{}/sql/002_data.sql", env.name()), data_sql(env));
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
    let mut s = String::with_capacity(SCHEMA_BODY.len() + 1024);
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
    s.push_str(SCHEMA_BODY);
    let _ = writeln!(
        s,
        "\nINSERT INTO kombify.schema_version (version, description)\n\
         VALUES ({SCHEMA_VERSION}, 'plans, tenants, quotas, feature flags, webhook events, audit log, SSO users')\n\
         ON CONFLICT (version) DO NOTHING;\n\nCOMMIT;"
    );
    s
}

const SCHEMA_BODY: &str = r"CREATE SCHEMA IF NOT EXISTS kombify;
COMMENT ON SCHEMA kombify IS 'kombify platform database: plans, tenants, quotas, feature flags (managed by kombiform)';

-- Fails a data script that had to write a value PostgreSQL cannot hold (a NUL character):
-- the emitter writes a call to this instead of the value, so the whole apply stops loudly.
CREATE OR REPLACE FUNCTION kombify.invalid_value(what text) RETURNS text
LANGUAGE plpgsql AS $fn$
BEGIN
    RAISE EXCEPTION 'kombiform: %', what;
END
$fn$;

CREATE TABLE IF NOT EXISTS kombify.schema_version (
    version     integer PRIMARY KEY CHECK (version > 0),
    description text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);

-- Plans: quotas, gateway rate limits (NULL = no limit for that period), features, StackKits
-- and KombiSim limits.
CREATE TABLE IF NOT EXISTS kombify.plans (
    name                         text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9-]{0,29}$'),
    display_name                 text NOT NULL CHECK (length(display_name) BETWEEN 1 AND 200),
    price_cents                  bigint NOT NULL CHECK (price_cents >= 0),
    stripe_price_id              text UNIQUE CHECK (stripe_price_id <> ''),
    features                     text[] NOT NULL DEFAULT '{}' CHECK (array_position(features, NULL) IS NULL),
    stackkits                    text[] NOT NULL DEFAULT '{}' CHECK (array_position(stackkits, NULL) IS NULL),
    max_users                    integer NOT NULL CHECK (max_users >= 1),
    max_nodes                    integer NOT NULL CHECK (max_nodes >= 0),
    max_stacks                   integer NOT NULL CHECK (max_stacks >= 0),
    max_simulations              integer NOT NULL CHECK (max_simulations >= 0),
    rate_limit_second            bigint CHECK (rate_limit_second > 0),
    rate_limit_minute            bigint CHECK (rate_limit_minute > 0),
    rate_limit_hour              bigint CHECK (rate_limit_hour > 0),
    rate_limit_day               bigint CHECK (rate_limit_day > 0),
    sim_max_concurrent           integer NOT NULL CHECK (sim_max_concurrent >= 0),
    sim_cpu_per_simulation       double precision NOT NULL CHECK (sim_cpu_per_simulation > 0),
    sim_memory_mb_per_simulation integer NOT NULL CHECK (sim_memory_mb_per_simulation > 0),
    sim_isolation                text NOT NULL CHECK (sim_isolation IN ('network', 'vm')),
    updated_at                   timestamptz NOT NULL DEFAULT now()
);

-- Tenants. The SSO service finds a tenant by its Zitadel organization (unique), Stripe
-- webhooks by its customer id (unique). Both uniques are checked at commit, so one apply may
-- move an id from one tenant to another.
CREATE TABLE IF NOT EXISTS kombify.tenants (
    slug               text PRIMARY KEY CHECK (slug ~ '^[a-z][a-z0-9-]{1,19}$'),
    display_name       text NOT NULL CHECK (length(display_name) BETWEEN 1 AND 200),
    plan               text NOT NULL REFERENCES kombify.plans (name) ON UPDATE CASCADE ON DELETE RESTRICT,
    zitadel_org_id     text NOT NULL CHECK (zitadel_org_id ~ '^[0-9]{1,32}$'),
    instance           text NOT NULL CHECK (instance IN ('shared', 'dedicated')),
    status             text NOT NULL CHECK (status IN ('active', 'suspended')),
    stripe_customer_id text CHECK (stripe_customer_id <> ''),
    allow_destroy      boolean NOT NULL DEFAULT false,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT tenants_zitadel_org_id_key UNIQUE (zitadel_org_id) DEFERRABLE INITIALLY DEFERRED,
    CONSTRAINT tenants_stripe_customer_id_key UNIQUE (stripe_customer_id) DEFERRABLE INITIALLY DEFERRED
);
CREATE INDEX IF NOT EXISTS tenants_plan_idx ON kombify.tenants (plan);

-- Quotas: the effective limits (the plan's, with the tenant's overrides applied; written by
-- kombiform) and the usage counters (written only by the services, never by kombiform).
-- A service reserves one unit atomically, for example:
--   UPDATE kombify.quotas SET used_users = used_users + 1
--    WHERE tenant = $1 AND used_users < max_users
--   RETURNING used_users;
-- Concurrent reservations queue on the row lock and each re-checks the condition on the newest
-- row, so used_users never passes max_users; no row returned means the quota is full. A lower
-- limit from the specs is accepted even below current usage (no new reservations until usage
-- drops), so used_* is not bounded by max_* in a CHECK.
CREATE TABLE IF NOT EXISTS kombify.quotas (
    tenant           text PRIMARY KEY REFERENCES kombify.tenants (slug) ON UPDATE CASCADE ON DELETE CASCADE,
    max_users        integer NOT NULL CHECK (max_users >= 0),
    max_nodes        integer NOT NULL CHECK (max_nodes >= 0),
    max_stacks       integer NOT NULL CHECK (max_stacks >= 0),
    max_simulations  integer NOT NULL CHECK (max_simulations >= 0),
    used_users       integer NOT NULL DEFAULT 0 CHECK (used_users >= 0),
    used_nodes       integer NOT NULL DEFAULT 0 CHECK (used_nodes >= 0),
    used_stacks      integer NOT NULL DEFAULT 0 CHECK (used_stacks >= 0),
    used_simulations integer NOT NULL DEFAULT 0 CHECK (used_simulations >= 0),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- Feature flags. A tenant's value: its tenant override, else its plan's override, else true for
-- rollout_percent percent of tenants (chosen stably by hash), else default_enabled.
CREATE TABLE IF NOT EXISTS kombify.flags (
    name            text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9-]{0,59}$'),
    description     text NOT NULL,
    default_enabled boolean NOT NULL,
    rollout_percent smallint CHECK (rollout_percent BETWEEN 0 AND 100),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS kombify.flag_plan_overrides (
    flag    text NOT NULL REFERENCES kombify.flags (name) ON UPDATE CASCADE ON DELETE CASCADE,
    plan    text NOT NULL REFERENCES kombify.plans (name) ON UPDATE CASCADE ON DELETE CASCADE,
    enabled boolean NOT NULL,
    PRIMARY KEY (flag, plan)
);
CREATE INDEX IF NOT EXISTS flag_plan_overrides_plan_idx ON kombify.flag_plan_overrides (plan);

CREATE TABLE IF NOT EXISTS kombify.flag_tenant_overrides (
    flag    text NOT NULL REFERENCES kombify.flags (name) ON UPDATE CASCADE ON DELETE CASCADE,
    tenant  text NOT NULL REFERENCES kombify.tenants (slug) ON UPDATE CASCADE ON DELETE CASCADE,
    enabled boolean NOT NULL,
    PRIMARY KEY (flag, tenant)
);
CREATE INDEX IF NOT EXISTS flag_tenant_overrides_tenant_idx ON kombify.flag_tenant_overrides (tenant);

-- Webhook replay protection: a service inserts (provider, event_id) with ON CONFLICT DO NOTHING
-- in the same transaction as the event's effect; no row inserted means a replay.
CREATE TABLE IF NOT EXISTS kombify.webhook_events (
    provider    text NOT NULL CHECK (provider IN ('stripe', 'zitadel')),
    event_id    text NOT NULL CHECK (length(event_id) BETWEEN 1 AND 255),
    event_type  text,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, event_id)
);
CREATE INDEX IF NOT EXISTS webhook_events_received_at_idx ON kombify.webhook_events (received_at);

-- Audit log: who did what to what, when, with which result. Append-only (a trigger refuses
-- UPDATE and DELETE).
CREATE TABLE IF NOT EXISTS kombify.audit_log (
    id      bigserial PRIMARY KEY,
    at      timestamptz NOT NULL DEFAULT now(),
    actor   text NOT NULL CHECK (actor <> ''),
    action  text NOT NULL CHECK (action <> ''),
    target  text NOT NULL DEFAULT '',
    details jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(details) = 'object'),
    result  text NOT NULL CHECK (result IN ('success', 'failure', 'denied'))
);
CREATE INDEX IF NOT EXISTS audit_log_at_idx ON kombify.audit_log (at);
CREATE INDEX IF NOT EXISTS audit_log_target_at_idx ON kombify.audit_log (target, at);

CREATE OR REPLACE FUNCTION kombify.audit_log_append_only() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    RAISE EXCEPTION 'kombify.audit_log is append-only: % refused', TG_OP;
END
$fn$;
CREATE OR REPLACE TRIGGER audit_log_append_only
    BEFORE UPDATE OR DELETE ON kombify.audit_log
    FOR EACH ROW EXECUTE FUNCTION kombify.audit_log_append_only();

-- SSO users: which Zitadel user (issuer, subject) is which PocketBase user of which tenant.
-- The SSO service inserts a row and reserves a quota unit in one transaction.
CREATE TABLE IF NOT EXISTS kombify.sso_users (
    issuer             text NOT NULL CHECK (issuer <> ''),
    subject            text NOT NULL CHECK (subject <> ''),
    tenant             text NOT NULL REFERENCES kombify.tenants (slug) ON UPDATE CASCADE ON DELETE CASCADE,
    org_id             text NOT NULL CHECK (org_id <> ''),
    pocketbase_user_id text NOT NULL CHECK (pocketbase_user_id <> ''),
    created_at         timestamptz NOT NULL DEFAULT now(),
    last_login_at      timestamptz,
    disabled_at        timestamptz,
    PRIMARY KEY (issuer, subject)
);
CREATE UNIQUE INDEX IF NOT EXISTS sso_users_tenant_user_key ON kombify.sso_users (tenant, pocketbase_user_id);
";

// ---------------------------------------------------------------------------------------
// 002_data.sql
// ---------------------------------------------------------------------------------------

/// A table the data script upserts into.
struct Table {
    /// Name in [`SCHEMA`].
    name: &'static str,
    /// Columns written, in order; the first `key` of them are the conflict key.
    cols: &'static [&'static str],
    /// How many leading columns form the key.
    key: usize,
    /// Whether the table has an `updated_at` column to set when a row changes.
    touch: bool,
}

const PLANS: Table = Table {
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
};

const TENANTS: Table = Table {
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
};

const QUOTAS: Table = Table {
    name: "quotas",
    cols: &[
        "tenant",
        "max_users",
        "max_nodes",
        "max_stacks",
        "max_simulations",
    ],
    key: 1,
    touch: true,
};

const FLAGS: Table = Table {
    name: "flags",
    cols: &["name", "description", "default_enabled", "rollout_percent"],
    key: 1,
    touch: true,
};

const FLAG_PLAN_OVERRIDES: Table = Table {
    name: "flag_plan_overrides",
    cols: &["flag", "plan", "enabled"],
    key: 2,
    touch: false,
};

const FLAG_TENANT_OVERRIDES: Table = Table {
    name: "flag_tenant_overrides",
    cols: &["flag", "tenant", "enabled"],
    key: 2,
    touch: false,
};

/// Every table the data script writes, in the order it writes them (parents first).
#[cfg(test)]
const DATA_TABLES: [&Table; 6] = [
    &PLANS,
    &TENANTS,
    &QUOTAS,
    &FLAGS,
    &FLAG_PLAN_OVERRIDES,
    &FLAG_TENANT_OVERRIDES,
];

/// The data script of one environment.
pub fn data_sql(env: Env<'_>) -> String {
    let tenants: Vec<_> = env.tenants().collect();
    // About 200 bytes per tenant row and 80 per quota row.
    let mut s = String::with_capacity(4096 + tenants.len() * 300);
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

    upsert(&mut s, &PLANS, env.plans(), |v, p| {
        v.text(&p.name);
        v.text(&p.display_name);
        v.int(p.price_cents);
        v.opt_text(p.stripe_price_id.as_deref());
        v.text_array(p.features.iter().map(|f| f.as_str()));
        v.text_array(p.stackkits.iter().map(String::as_str));
        v.int(p.quotas.max_users);
        v.int(p.quotas.max_nodes);
        v.int(p.quotas.max_stacks);
        v.int(p.quotas.max_simulations);
        v.opt_int(p.rate_limits.second);
        v.opt_int(p.rate_limits.minute);
        v.opt_int(p.rate_limits.hour);
        v.opt_int(p.rate_limits.day);
        v.int(p.simulation.max_concurrent);
        v.float(p.simulation.cpu_per_simulation);
        v.int(p.simulation.memory_mb_per_simulation);
        v.text(match p.simulation.isolation {
            Isolation::Network => "network",
            Isolation::Vm => "vm",
        });
    });

    upsert(&mut s, &TENANTS, tenants.iter(), |v, t| {
        v.text(&t.slug);
        v.text(&t.display_name);
        v.text(&t.plan);
        v.text(&t.zitadel_org_id);
        v.text(match t.instance {
            InstanceMode::Shared => "shared",
            InstanceMode::Dedicated => "dedicated",
        });
        v.text(t.status.as_str());
        v.opt_text(t.stripe_customer_id.as_deref());
        v.bool(t.allow_destroy);
    });

    upsert(&mut s, &QUOTAS, tenants.iter(), |v, t| {
        v.text(&t.slug);
        match env.plan_of(t) {
            Some(plan) => {
                let q = plan.quotas.with(&t.quota_overrides);
                v.int(q.max_users);
                v.int(q.max_nodes);
                v.int(q.max_stacks);
                v.int(q.max_simulations);
            }
            None => {
                for _ in 0..4 {
                    v.invalid("tenant has no known plan");
                }
            }
        }
    });

    upsert(&mut s, &FLAGS, env.flags(), |v, f| {
        v.text(&f.name);
        v.text(&f.description);
        v.bool(f.default);
        v.opt_int(f.rollout_percent.map(u32::from));
    });

    let plan_overrides = env
        .flags()
        .iter()
        .flat_map(|f| f.plans.iter().map(move |(plan, on)| (f, plan, *on)));
    upsert(
        &mut s,
        &FLAG_PLAN_OVERRIDES,
        plan_overrides,
        |v, (f, plan, on)| {
            v.text(&f.name);
            v.text(plan);
            v.bool(on);
        },
    );

    // Only tenants of this environment: the others have no row here to refer to.
    let here = |slug: &str| {
        tenants
            .binary_search_by(|t| t.slug.as_str().cmp(slug))
            .is_ok()
    };
    let tenant_overrides = env.flags().iter().flat_map(|f| {
        f.tenants
            .iter()
            .filter(|(slug, _)| here(slug))
            .map(move |(slug, on)| (f, slug, *on))
    });
    upsert(
        &mut s,
        &FLAG_TENANT_OVERRIDES,
        tenant_overrides,
        |v, (f, slug, on)| {
            v.text(&f.name);
            v.text(slug);
            v.bool(on);
        },
    );

    s.push_str("\nCOMMIT;\n");
    s
}

/// Writes one `INSERT ... ON CONFLICT ... DO UPDATE` statement for `rows` (nothing but a
/// comment when there are none). `row` writes one row's values, in `table.cols` order.
fn upsert<T>(
    out: &mut String,
    table: &'static Table,
    rows: impl IntoIterator<Item = T>,
    mut row: impl FnMut(&mut Values<'_>, T),
) {
    let name = ident(table.name);
    let cols: Vec<String> = table.cols.iter().map(|c| ident(c)).collect();
    let mut rows = rows.into_iter().peekable();
    if rows.peek().is_none() {
        let _ = writeln!(out, "\n-- {SCHEMA}.{name}: no rows.");
        return;
    }
    let _ = write!(
        out,
        "\nINSERT INTO {SCHEMA}.{name} AS cur ({})\nVALUES\n",
        cols.join(", ")
    );
    let mut first = true;
    for item in rows {
        out.push_str(if first { "  (" } else { ",\n  (" });
        first = false;
        let mut v = Values { out, table, col: 0 };
        row(&mut v, item);
        debug_assert_eq!(v.col, table.cols.len(), "row of {} is short", table.name);
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
        let _ = writeln!(out, "  {c} = EXCLUDED.{c},");
    }
    if table.touch {
        out.push_str("  updated_at = now()\n");
    } else {
        // Drop the last comma.
        out.truncate(out.len() - 2);
        out.push('\n');
    }
    let current: Vec<String> = rest.iter().map(|c| format!("cur.{c}")).collect();
    let excluded: Vec<String> = rest.iter().map(|c| format!("EXCLUDED.{c}")).collect();
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
    table: &'static Table,
    /// Values written so far.
    col: usize,
}

impl Values<'_> {
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

    fn opt_text(&mut self, s: Option<&str>) {
        match s {
            Some(s) => self.text(s),
            None => {
                self.next();
                self.out.push_str("NULL");
            }
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

    fn int(&mut self, n: u32) {
        self.next();
        let _ = write!(self.out, "{n}");
    }

    fn opt_int(&mut self, n: Option<u32>) {
        match n {
            Some(n) => self.int(n),
            None => {
                self.next();
                self.out.push_str("NULL");
            }
        }
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

    fn bool(&mut self, b: bool) {
        self.next();
        self.out.push_str(if b { "true" } else { "false" });
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Instant;

    use super::*;
    use crate::model::Model;

    fn model() -> Model {
        let inputs = match crate::cli::read_specs(Path::new("specs")) {
            Ok(i) => i,
            Err(e) => panic!("reading specs: {e:#}"),
        };
        let loaded = crate::spec::load::load(inputs);
        let rendered = loaded.render();
        match loaded.model {
            Some(m) => m,
            None => panic!("the example specs are invalid:\n{rendered}"),
        }
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
        assert_eq!(row(&sql, "quotas", "acme"), "  ('acme', 25, 50, 20, 100)");
        assert_eq!(
            row(&sql, "quotas", "globex"),
            "  ('globex', 800, 1000, 500, 5000)"
        );
        assert_eq!(
            row(&sql, "quotas", "stark-lab"),
            "  ('stark-lab', 3, 5, 2, 5)"
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

    /// A model with `n` copies of acme (`t00000`, ...) instead of the example tenants.
    pub(crate) fn synthetic(n: usize) -> Model {
        let mut m = model();
        let base = m.tenants[0].clone();
        m.tenants = (0..n)
            .map(|i| {
                let mut t = base.clone();
                t.slug = format!("t{i:05}");
                t.zitadel_org_id = format!("{}", 300_000_000_000_000_000u64 + i as u64);
                t.stripe_customer_id = Some(format!("cus_{i:08}"));
                t.display_name = format!("Tenant {i} O'Brien \\ Co");
                t
            })
            .collect();
        m
    }

    #[test]
    fn ten_thousand_tenants() {
        let m = synthetic(10_000);
        let started = Instant::now();
        let mut files = Files::new();
        for env in m.envs() {
            emit(env, &mut files);
        }
        let took = started.elapsed();
        let bytes: usize = files.values().map(String::len).sum();
        eprintln!(
            "sql: 10k tenants, {} envs: {took:?}, {bytes} bytes",
            m.platforms.len()
        );
        let prod = &files["prod/sql/002_data.sql"];
        // Tenants and quotas; the flag overrides name example tenants, absent here.
        assert_eq!(prod.matches("  ('t0").count(), 20_000);
        assert!(prod.contains("  ('t09999', E'Tenant 9999 O''Brien \\\\ Co', 'pro', "));
    }
}
