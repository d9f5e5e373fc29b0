//! The tables of schema `kombify` as data: every table with its columns (type, nullability,
//! default, column constraints), table constraints and indexes, in one list ([`TABLES`]).
//!
//! `001_schema.sql` is rendered from this list ([`body`]), and the PostgreSQL provider builds
//! its desired schema from the same list (constraint names as PostgreSQL derives them, types
//! and defaults as PostgreSQL reports them), so the script and the deploy engine cannot
//! disagree about a column.
//!
//! Not here: the rows (`sql::data_rows`), any IO, and the functions and trigger that are not
//! tied to one table (they are in [`PREAMBLE`]).

use std::fmt::Write as _;

use super::SCHEMA;

/// A foreign key of one column to one column of another table of [`SCHEMA`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ForeignKey {
    /// The referenced table.
    pub table: &'static str,
    /// The referenced column.
    pub column: &'static str,
    /// `ON UPDATE` action (`CASCADE`, `RESTRICT`).
    pub on_update: &'static str,
    /// `ON DELETE` action (`CASCADE`, `RESTRICT`).
    pub on_delete: &'static str,
}

/// One column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ColumnDef {
    /// Column name.
    pub name: &'static str,
    /// The type as written in the script (`timestamptz`, `bigserial`).
    pub ty: &'static str,
    /// `PRIMARY KEY` on the column.
    pub primary_key: bool,
    /// `UNIQUE` on the column.
    pub unique: bool,
    /// `NOT NULL`.
    pub not_null: bool,
    /// `DEFAULT` expression as written in the script.
    pub default: Option<&'static str>,
    /// `CHECK` expression (without the parentheses).
    pub check: Option<&'static str>,
    /// `REFERENCES`.
    pub references: Option<ForeignKey>,
}

const fn col(name: &'static str, ty: &'static str) -> ColumnDef {
    ColumnDef {
        name,
        ty,
        primary_key: false,
        unique: false,
        not_null: false,
        default: None,
        check: None,
        references: None,
    }
}

impl ColumnDef {
    const fn pk(self) -> ColumnDef {
        ColumnDef {
            primary_key: true,
            ..self
        }
    }
    const fn unique(self) -> ColumnDef {
        ColumnDef {
            unique: true,
            ..self
        }
    }
    const fn not_null(self) -> ColumnDef {
        ColumnDef {
            not_null: true,
            ..self
        }
    }
    const fn default(self, d: &'static str) -> ColumnDef {
        ColumnDef {
            default: Some(d),
            ..self
        }
    }
    const fn check(self, c: &'static str) -> ColumnDef {
        ColumnDef {
            check: Some(c),
            ..self
        }
    }
    const fn references(
        self,
        table: &'static str,
        column: &'static str,
        on_update: &'static str,
        on_delete: &'static str,
    ) -> ColumnDef {
        ColumnDef {
            references: Some(ForeignKey {
                table,
                column,
                on_update,
                on_delete,
            }),
            ..self
        }
    }

    /// The type as PostgreSQL reports it (`format_type`): `timestamptz` is
    /// `timestamp with time zone`, a `bigserial` is a `bigint`.
    pub fn canonical_type(&self) -> &'static str {
        canonical_type(self.ty)
    }

    /// The column as `ALTER TABLE ... ADD COLUMN` takes it: type, `NOT NULL`, `DEFAULT`, no
    /// constraints (those are added by name).
    pub fn bare_ddl(&self) -> String {
        let mut s = format!("{} {}", self.name, self.ty);
        if self.not_null || self.primary_key {
            s.push_str(" NOT NULL");
        }
        if let Some(d) = self.default {
            let _ = write!(s, " DEFAULT {d}");
        }
        s
    }
}

/// The type PostgreSQL reports for a type written as `ty`.
pub fn canonical_type(ty: &str) -> &str {
    match ty {
        "timestamptz" => "timestamp with time zone",
        "timestamp" => "timestamp without time zone",
        "bigserial" => "bigint",
        "serial" => "integer",
        "int" | "int4" => "integer",
        "int8" => "bigint",
        "int2" => "smallint",
        "bool" => "boolean",
        "float8" => "double precision",
        other => other,
    }
}

/// A constraint over several columns, written after the columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableConstraint {
    /// `PRIMARY KEY (a, b)`.
    PrimaryKey(&'static [&'static str]),
    /// `CONSTRAINT name UNIQUE (a) [DEFERRABLE INITIALLY DEFERRED]`.
    Unique {
        /// Constraint name.
        name: &'static str,
        /// Columns.
        columns: &'static [&'static str],
        /// Checked at commit.
        deferred: bool,
    },
}

/// An index created with `CREATE [UNIQUE] INDEX` (not one backing a constraint).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexDef {
    /// Index name (in [`SCHEMA`]).
    pub name: &'static str,
    /// `UNIQUE`.
    pub unique: bool,
    /// Indexed columns, in order.
    pub columns: &'static [&'static str],
}

/// One table of [`SCHEMA`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableDef {
    /// Table name.
    pub name: &'static str,
    /// Comment lines written before the table (each starting with `-- `), or empty.
    pub comment: &'static str,
    /// Columns, in order.
    pub columns: &'static [ColumnDef],
    /// Constraints over several columns.
    pub constraints: &'static [TableConstraint],
    /// Indexes.
    pub indexes: &'static [IndexDef],
    /// Statements that belong to the table (a trigger and its function), written after it.
    pub extra: &'static str,
}

/// What kind of constraint: the part of a constraint the deploy engine compares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConstraintKind {
    /// Primary key over columns.
    PrimaryKey(Vec<&'static str>),
    /// Unique over columns; `deferred`: `DEFERRABLE INITIALLY DEFERRED`.
    Unique(Vec<&'static str>, bool),
    /// Check over one column (the expression is not compared: PostgreSQL rewrites it).
    Check(Vec<&'static str>),
    /// Foreign key.
    ForeignKey(&'static str, ForeignKey),
}

/// A constraint with the name PostgreSQL gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConstraintDef {
    /// Name (`plans_pkey`, `plans_name_check`, `tenants_plan_fkey`, ...).
    pub name: String,
    /// What `ALTER TABLE ... ADD CONSTRAINT name` takes after the name.
    pub body: String,
    /// What it is.
    pub kind: ConstraintKind,
}

impl TableDef {
    /// The column named `name`.
    pub fn column(&self, name: &str) -> Option<&'static ColumnDef> {
        let cols: &'static [ColumnDef] = self.columns;
        cols.iter().find(|c| c.name == name)
    }

    /// Whether column `c` is NULL-able (not `NOT NULL`, not in the primary key).
    pub fn nullable(&self, c: &ColumnDef) -> bool {
        let in_pk = self.constraints.iter().any(|k| match k {
            TableConstraint::PrimaryKey(cols) => cols.contains(&c.name),
            TableConstraint::Unique { .. } => false,
        });
        !(c.not_null || c.primary_key || in_pk)
    }

    /// Column `c`'s default as PostgreSQL reports it (`pg_get_expr`): a literal gets its
    /// type's cast (`'{}'::text[]`), a serial its sequence.
    pub fn pg_default(&self, c: &ColumnDef) -> Option<String> {
        if matches!(c.ty, "bigserial" | "serial") {
            return Some(format!(
                "nextval('{SCHEMA}.{}_{}_seq'::regclass)",
                self.name, c.name
            ));
        }
        let d = c.default?;
        Some(if d.starts_with('\'') {
            format!("{d}::{}", c.canonical_type())
        } else {
            d.to_string()
        })
    }

    /// The table's primary key columns.
    pub fn primary_key(&self) -> Vec<&'static str> {
        let cols: &'static [ColumnDef] = self.columns;
        let mut out: Vec<&'static str> = cols
            .iter()
            .filter(|c| c.primary_key)
            .map(|c| c.name)
            .collect();
        for k in self.constraints {
            if let TableConstraint::PrimaryKey(cs) = k {
                out.extend(cs.iter().copied());
            }
        }
        out
    }

    /// Every constraint, with the name PostgreSQL derives for unnamed ones.
    pub fn constraint_defs(&self) -> Vec<ConstraintDef> {
        let t = self.name;
        let mut out = Vec::new();
        let pk = self.primary_key();
        if !pk.is_empty() {
            out.push(ConstraintDef {
                name: format!("{t}_pkey"),
                body: format!("PRIMARY KEY ({})", pk.join(", ")),
                kind: ConstraintKind::PrimaryKey(pk),
            });
        }
        let cols: &'static [ColumnDef] = self.columns;
        for c in cols {
            if c.unique {
                out.push(ConstraintDef {
                    name: format!("{t}_{}_key", c.name),
                    body: format!("UNIQUE ({})", c.name),
                    kind: ConstraintKind::Unique(vec![c.name], false),
                });
            }
            if let Some(check) = c.check {
                out.push(ConstraintDef {
                    name: format!("{t}_{}_check", c.name),
                    body: format!("CHECK ({check})"),
                    kind: ConstraintKind::Check(vec![c.name]),
                });
            }
            if let Some(fk) = c.references {
                out.push(ConstraintDef {
                    name: format!("{t}_{}_fkey", c.name),
                    body: format!("FOREIGN KEY ({}) {}", c.name, references(&fk)),
                    kind: ConstraintKind::ForeignKey(c.name, fk),
                });
            }
        }
        for k in self.constraints {
            if let TableConstraint::Unique {
                name,
                columns,
                deferred,
            } = k
            {
                out.push(ConstraintDef {
                    name: (*name).to_string(),
                    body: unique_body(columns, *deferred),
                    kind: ConstraintKind::Unique(columns.to_vec(), *deferred),
                });
            }
        }
        out
    }

    /// The tables this one references, sorted, without itself.
    pub fn referenced(&self) -> Vec<&'static str> {
        let mut out: Vec<&'static str> = self
            .columns
            .iter()
            .filter_map(|c| c.references.map(|f| f.table))
            .filter(|t| *t != self.name)
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// `CREATE TABLE IF NOT EXISTS ...;` followed by its indexes, as in `001_schema.sql`.
    pub fn create_sql(&self) -> String {
        let mut s = String::new();
        let width = self.columns.iter().map(|c| c.name.len()).max().unwrap_or(0) + 1;
        let _ = writeln!(s, "CREATE TABLE IF NOT EXISTS {SCHEMA}.{} (", self.name);
        let mut lines: Vec<String> = self
            .columns
            .iter()
            .map(|c| format!("    {:<width$}{}", c.name, column_rest(c)))
            .collect();
        for k in self.constraints {
            lines.push(match k {
                TableConstraint::PrimaryKey(cols) => {
                    format!("    PRIMARY KEY ({})", cols.join(", "))
                }
                TableConstraint::Unique {
                    name,
                    columns,
                    deferred,
                } => format!("    CONSTRAINT {name} {}", unique_body(columns, *deferred)),
            });
        }
        s.push_str(&lines.join(",\n"));
        s.push_str("\n);\n");
        for i in self.indexes {
            s.push_str(&i.create_sql(self.name));
            s.push('\n');
        }
        s
    }
}

impl IndexDef {
    /// `CREATE [UNIQUE] INDEX IF NOT EXISTS name ON kombify.table (cols);`
    pub fn create_sql(&self, table: &str) -> String {
        format!(
            "CREATE {}INDEX IF NOT EXISTS {} ON {SCHEMA}.{table} ({});",
            if self.unique { "UNIQUE " } else { "" },
            self.name,
            self.columns.join(", ")
        )
    }
}

fn unique_body(columns: &[&str], deferred: bool) -> String {
    format!(
        "UNIQUE ({}){}",
        columns.join(", "),
        if deferred {
            " DEFERRABLE INITIALLY DEFERRED"
        } else {
            ""
        }
    )
}

fn references(fk: &ForeignKey) -> String {
    format!(
        "REFERENCES {SCHEMA}.{} ({}) ON UPDATE {} ON DELETE {}",
        fk.table, fk.column, fk.on_update, fk.on_delete
    )
}

/// A column definition after its (padded) name.
fn column_rest(c: &ColumnDef) -> String {
    let mut s = c.ty.to_string();
    if c.primary_key {
        s.push_str(" PRIMARY KEY");
    }
    if c.unique {
        s.push_str(" UNIQUE");
    }
    if c.not_null {
        s.push_str(" NOT NULL");
    }
    if let Some(d) = c.default {
        let _ = write!(s, " DEFAULT {d}");
    }
    if let Some(check) = c.check {
        let _ = write!(s, " CHECK ({check})");
    }
    if let Some(fk) = &c.references {
        s.push(' ');
        s.push_str(&references(fk));
    }
    s
}

/// The statements before the tables: the schema, its comment, and the function the data
/// script calls for a value PostgreSQL cannot hold.
pub const PREAMBLE: &str = r"CREATE SCHEMA IF NOT EXISTS kombify;
COMMENT ON SCHEMA kombify IS 'kombify platform database: plans, tenants, quotas, feature flags (managed by kombiform)';

-- Fails a data script that had to write a value PostgreSQL cannot hold (a NUL character):
-- the emitter writes a call to this instead of the value, so the whole apply stops loudly.
CREATE OR REPLACE FUNCTION kombify.invalid_value(what text) RETURNS text
LANGUAGE plpgsql AS $fn$
BEGIN
    RAISE EXCEPTION 'kombiform: %', what;
END
$fn$;
";

/// The body of `001_schema.sql` between the lock and the version row: [`PREAMBLE`], then
/// every table of [`TABLES`].
pub fn body() -> String {
    let mut s = String::with_capacity(12 * 1024);
    s.push_str(PREAMBLE);
    for t in TABLES {
        s.push('\n');
        s.push_str(t.comment);
        s.push_str(&t.create_sql());
        if !t.extra.is_empty() {
            s.push('\n');
            s.push_str(t.extra);
        }
    }
    s
}

/// The table named `name`.
pub fn table(name: &str) -> Option<&'static TableDef> {
    TABLES.iter().find(|t| t.name == name)
}

const CASCADE: &str = "CASCADE";
const RESTRICT: &str = "RESTRICT";

/// Every table of [`SCHEMA`], in creation order (referenced tables first).
pub const TABLES: &[TableDef] = &[
    TableDef {
        name: "schema_version",
        comment: "",
        columns: &[
            col("version", "integer").pk().check("version > 0"),
            col("description", "text").not_null(),
            col("applied_at", "timestamptz").not_null().default("now()"),
        ],
        constraints: &[],
        indexes: &[],
        extra: "",
    },
    TableDef {
        name: "plans",
        comment: "-- Plans: quotas, gateway rate limits (NULL = no limit for that period), features, StackKits\n\
                  -- and KombiSim limits.\n",
        columns: &[
            col("name", "text").pk().check("name ~ '^[a-z][a-z0-9-]{0,29}$'"),
            col("display_name", "text")
                .not_null()
                .check("length(display_name) BETWEEN 1 AND 200"),
            col("price_cents", "bigint").not_null().check("price_cents >= 0"),
            col("stripe_price_id", "text")
                .unique()
                .check("stripe_price_id <> ''"),
            col("features", "text[]")
                .not_null()
                .default("'{}'")
                .check("array_position(features, NULL) IS NULL"),
            col("stackkits", "text[]")
                .not_null()
                .default("'{}'")
                .check("array_position(stackkits, NULL) IS NULL"),
            col("max_users", "integer").not_null().check("max_users >= 1"),
            col("max_nodes", "integer").not_null().check("max_nodes >= 0"),
            col("max_stacks", "integer").not_null().check("max_stacks >= 0"),
            col("max_simulations", "integer")
                .not_null()
                .check("max_simulations >= 0"),
            col("rate_limit_second", "bigint").check("rate_limit_second > 0"),
            col("rate_limit_minute", "bigint").check("rate_limit_minute > 0"),
            col("rate_limit_hour", "bigint").check("rate_limit_hour > 0"),
            col("rate_limit_day", "bigint").check("rate_limit_day > 0"),
            col("sim_max_concurrent", "integer")
                .not_null()
                .check("sim_max_concurrent >= 0"),
            col("sim_cpu_per_simulation", "double precision")
                .not_null()
                .check("sim_cpu_per_simulation > 0"),
            col("sim_memory_mb_per_simulation", "integer")
                .not_null()
                .check("sim_memory_mb_per_simulation > 0"),
            col("sim_isolation", "text")
                .not_null()
                .check("sim_isolation IN ('network', 'vm')"),
            col("updated_at", "timestamptz").not_null().default("now()"),
        ],
        constraints: &[],
        indexes: &[],
        extra: "",
    },
    TableDef {
        name: "tenants",
        comment: "-- Tenants. The SSO service finds a tenant by its Zitadel organization (unique), Stripe\n\
                  -- webhooks by its customer id (unique). Both uniques are checked at commit, so one apply may\n\
                  -- move an id from one tenant to another.\n\
                  -- plan_billed_at: when billing (a Stripe webhook) last set the plan. From then on billing owns\n\
                  -- the plan: the specs only seeded it, and kombiform never reverts it.\n",
        columns: &[
            col("slug", "text").pk().check("slug ~ '^[a-z][a-z0-9-]{1,19}$'"),
            col("display_name", "text")
                .not_null()
                .check("length(display_name) BETWEEN 1 AND 200"),
            col("plan", "text")
                .not_null()
                .references("plans", "name", CASCADE, RESTRICT),
            col("zitadel_org_id", "text")
                .not_null()
                .check("zitadel_org_id ~ '^[0-9]{1,32}$'"),
            col("instance", "text")
                .not_null()
                .check("instance IN ('shared', 'dedicated')"),
            col("status", "text")
                .not_null()
                .check("status IN ('active', 'suspended')"),
            col("stripe_customer_id", "text").check("stripe_customer_id <> ''"),
            col("allow_destroy", "boolean").not_null().default("false"),
            col("plan_billed_at", "timestamptz"),
            col("created_at", "timestamptz").not_null().default("now()"),
            col("updated_at", "timestamptz").not_null().default("now()"),
        ],
        constraints: &[
            TableConstraint::Unique {
                name: "tenants_zitadel_org_id_key",
                columns: &["zitadel_org_id"],
                deferred: true,
            },
            TableConstraint::Unique {
                name: "tenants_stripe_customer_id_key",
                columns: &["stripe_customer_id"],
                deferred: true,
            },
        ],
        indexes: &[IndexDef {
            name: "tenants_plan_idx",
            unique: false,
            columns: &["plan"],
        }],
        extra: "",
    },
    TableDef {
        name: "quotas",
        comment: "-- Quotas: the effective limits (the plan's, with the tenant's overrides applied; written by\n\
                  -- kombiform; rate limits per period are what the gateway enforces for the tenant's consumer)\n\
                  -- and the usage counters (written only by the services, never by kombiform).\n\
                  -- A service reserves one unit atomically, for example:\n\
                  --   UPDATE kombify.quotas SET used_users = used_users + 1\n\
                  --    WHERE tenant = $1 AND used_users < max_users\n\
                  --   RETURNING used_users;\n\
                  -- Concurrent reservations queue on the row lock and each re-checks the condition on the newest\n\
                  -- row, so used_users never passes max_users; no row returned means the quota is full. A lower\n\
                  -- limit from the specs is accepted even below current usage (no new reservations until usage\n\
                  -- drops), so used_* is not bounded by max_* in a CHECK.\n",
        columns: &[
            col("tenant", "text")
                .pk()
                .references("tenants", "slug", CASCADE, CASCADE),
            col("max_users", "integer").not_null().check("max_users >= 0"),
            col("max_nodes", "integer").not_null().check("max_nodes >= 0"),
            col("max_stacks", "integer").not_null().check("max_stacks >= 0"),
            col("max_simulations", "integer")
                .not_null()
                .check("max_simulations >= 0"),
            col("rate_limit_second", "bigint").check("rate_limit_second > 0"),
            col("rate_limit_minute", "bigint").check("rate_limit_minute > 0"),
            col("rate_limit_hour", "bigint").check("rate_limit_hour > 0"),
            col("rate_limit_day", "bigint").check("rate_limit_day > 0"),
            col("used_users", "integer")
                .not_null()
                .default("0")
                .check("used_users >= 0"),
            col("used_nodes", "integer")
                .not_null()
                .default("0")
                .check("used_nodes >= 0"),
            col("used_stacks", "integer")
                .not_null()
                .default("0")
                .check("used_stacks >= 0"),
            col("used_simulations", "integer")
                .not_null()
                .default("0")
                .check("used_simulations >= 0"),
            col("updated_at", "timestamptz").not_null().default("now()"),
        ],
        constraints: &[],
        indexes: &[],
        extra: "",
    },
    TableDef {
        name: "flags",
        comment: "-- Feature flags. A tenant's value: its tenant override, else its plan's override, else true for\n\
                  -- rollout_percent percent of tenants (chosen stably by hash), else default_enabled.\n\
                  -- synced_at: when the Admin flag sync last wrote the flag. From then on the sync owns its\n\
                  -- description, values and overrides: the specs only seeded them, and kombiform never reverts them.\n",
        columns: &[
            col("name", "text").pk().check("name ~ '^[a-z][a-z0-9-]{0,59}$'"),
            col("description", "text").not_null(),
            col("default_enabled", "boolean").not_null(),
            col("rollout_percent", "smallint").check("rollout_percent BETWEEN 0 AND 100"),
            col("synced_at", "timestamptz"),
            col("updated_at", "timestamptz").not_null().default("now()"),
        ],
        constraints: &[],
        indexes: &[],
        extra: "",
    },
    TableDef {
        name: "flag_plan_overrides",
        comment: "",
        columns: &[
            col("flag", "text")
                .not_null()
                .references("flags", "name", CASCADE, CASCADE),
            col("plan", "text")
                .not_null()
                .references("plans", "name", CASCADE, CASCADE),
            col("enabled", "boolean").not_null(),
        ],
        constraints: &[TableConstraint::PrimaryKey(&["flag", "plan"])],
        indexes: &[IndexDef {
            name: "flag_plan_overrides_plan_idx",
            unique: false,
            columns: &["plan"],
        }],
        extra: "",
    },
    TableDef {
        name: "flag_tenant_overrides",
        comment: "",
        columns: &[
            col("flag", "text")
                .not_null()
                .references("flags", "name", CASCADE, CASCADE),
            col("tenant", "text")
                .not_null()
                .references("tenants", "slug", CASCADE, CASCADE),
            col("enabled", "boolean").not_null(),
        ],
        constraints: &[TableConstraint::PrimaryKey(&["flag", "tenant"])],
        indexes: &[IndexDef {
            name: "flag_tenant_overrides_tenant_idx",
            unique: false,
            columns: &["tenant"],
        }],
        extra: "",
    },
    TableDef {
        name: "webhook_events",
        comment: "-- Webhook replay protection: a service inserts (provider, event_id) with ON CONFLICT DO NOTHING\n\
                  -- in the same transaction as the event's effect; no row inserted means a replay.\n",
        columns: &[
            col("provider", "text")
                .not_null()
                .check("provider IN ('stripe', 'zitadel')"),
            col("event_id", "text")
                .not_null()
                .check("length(event_id) BETWEEN 1 AND 255"),
            col("event_type", "text"),
            col("received_at", "timestamptz").not_null().default("now()"),
        ],
        constraints: &[TableConstraint::PrimaryKey(&["provider", "event_id"])],
        indexes: &[IndexDef {
            name: "webhook_events_received_at_idx",
            unique: false,
            columns: &["received_at"],
        }],
        extra: "",
    },
    TableDef {
        name: "audit_log",
        comment: "-- Audit log: who did what to what, when, with which result. Append-only (a trigger refuses\n\
                  -- UPDATE and DELETE).\n",
        columns: &[
            col("id", "bigserial").pk(),
            col("at", "timestamptz").not_null().default("now()"),
            col("actor", "text").not_null().check("actor <> ''"),
            col("action", "text").not_null().check("action <> ''"),
            col("target", "text").not_null().default("''"),
            col("details", "jsonb")
                .not_null()
                .default("'{}'")
                .check("jsonb_typeof(details) = 'object'"),
            col("result", "text")
                .not_null()
                .check("result IN ('success', 'failure', 'denied')"),
        ],
        constraints: &[],
        indexes: &[
            IndexDef {
                name: "audit_log_at_idx",
                unique: false,
                columns: &["at"],
            },
            IndexDef {
                name: "audit_log_target_at_idx",
                unique: false,
                columns: &["target", "at"],
            },
        ],
        extra: r"CREATE OR REPLACE FUNCTION kombify.audit_log_append_only() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    RAISE EXCEPTION 'kombify.audit_log is append-only: % refused', TG_OP;
END
$fn$;
CREATE OR REPLACE TRIGGER audit_log_append_only
    BEFORE UPDATE OR DELETE ON kombify.audit_log
    FOR EACH ROW EXECUTE FUNCTION kombify.audit_log_append_only();
",
    },
    TableDef {
        name: "sso_users",
        comment: "-- SSO users: which Zitadel user (issuer, subject) is which PocketBase user of which tenant.\n\
                  -- The SSO service inserts a row and reserves a quota unit in one transaction.\n",
        columns: &[
            col("issuer", "text").not_null().check("issuer <> ''"),
            col("subject", "text").not_null().check("subject <> ''"),
            col("tenant", "text")
                .not_null()
                .references("tenants", "slug", CASCADE, CASCADE),
            col("org_id", "text").not_null().check("org_id <> ''"),
            col("pocketbase_user_id", "text")
                .not_null()
                .check("pocketbase_user_id <> ''"),
            col("created_at", "timestamptz").not_null().default("now()"),
            col("last_login_at", "timestamptz"),
            col("disabled_at", "timestamptz"),
        ],
        constraints: &[TableConstraint::PrimaryKey(&["issuer", "subject"])],
        indexes: &[IndexDef {
            name: "sso_users_tenant_user_key",
            unique: true,
            columns: &["tenant", "pocketbase_user_id"],
        }],
        extra: "",
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_defaults_as_postgres_reports_them() {
        let t = table("audit_log");
        let Some(t) = t else { panic!("no audit_log") };
        let d = |c: &str| t.column(c).and_then(|c| t.pg_default(c));
        assert_eq!(
            d("id").as_deref(),
            Some("nextval('kombify.audit_log_id_seq'::regclass)")
        );
        assert_eq!(d("details").as_deref(), Some("'{}'::jsonb"));
        assert_eq!(d("target").as_deref(), Some("''::text"));
        assert_eq!(d("at").as_deref(), Some("now()"));
        let names: Vec<String> = t.constraint_defs().into_iter().map(|c| c.name).collect();
        assert_eq!(
            names,
            [
                "audit_log_pkey",
                "audit_log_actor_check",
                "audit_log_action_check",
                "audit_log_details_check",
                "audit_log_result_check"
            ]
        );
    }

    #[test]
    fn tables_come_after_the_tables_they_reference() {
        for (i, t) in TABLES.iter().enumerate() {
            for r in t.referenced() {
                let j = TABLES.iter().position(|x| x.name == r);
                assert!(j.is_some_and(|j| j < i), "{} before {r}", t.name);
            }
        }
    }
}
