//! The PostgreSQL target, pure part: the platform database's schema (`kombify`) and the rows
//! the specs own (plans, tenants, quota limits, feature flags and their overrides) as
//! resources, and which changes lose data or can never be made.
//!
//! - [`desired`] turns one environment into resources: `postgres.table.<table>` for every
//!   table of [`sql::schema::TABLES`] (columns, constraints, indexes as PostgreSQL reports
//!   them), and one resource per row of [`sql::data_rows`] (`postgres.plan.pro`,
//!   `postgres.tenant.acme`, `postgres.quota.acme`, `postgres.flag.new-dashboard`,
//!   `postgres.flag_plan.<flag>:<plan>`, `postgres.flag_tenant.<flag>:<slug>`). Row attributes
//!   are the owned columns, valued exactly as they read back, so a fresh read after an apply
//!   shows no change. On Azure, the tables need the platform database's Azure resource.
//!   `postgres.role.kombify_sso`, `postgres.role.kombify_health`: each platform service's
//!   login role and its privileges ([`sql::roles`]).
//! - [`Target::classify`] marks dropped tables and columns destructive; a lossy column type
//!   change is refused whatever the consent ([`lossy_type_changes`]).
//!
//! Not here: connecting, reading or writing (the engine's PostgreSQL client), the usage
//! counters (`kombify.quotas.used_*`, the SSO service's), or tables and rows the specs never
//! named.

use serde_json::{json, Map, Number, Value};

use super::{azure, Target};
use crate::sql::schema::{self, ConstraintKind, TableDef};
use crate::sql::{self, DataTable, SqlValue};
use kombiform_model::Env;
use kombiform_plan::{Action, Change, Resource};

/// The address prefix.
pub const NAME: &str = "postgres";

/// The `meta` key the engine's reader sets on a row the running platform took over (its
/// [`sql::RuntimeOwned::marker`] is set): see [`super::runtime`].
pub const RUNTIME_META: &str = "runtime";

/// The PostgreSQL target.
#[derive(Debug)]
pub struct Postgres;

impl Target for Postgres {
    fn name(&self) -> &'static str {
        NAME
    }

    fn desired(&self, env: Env<'_>) -> Vec<Resource> {
        desired(env)
    }

    /// Every table and row of the `kombify` schema is kombiform's.
    fn owns(&self, address: &str) -> bool {
        address.starts_with("postgres.")
    }

    fn classify(&self, change: &mut Change) {
        classify(change);
    }

    fn refusal(&self, change: &Change) -> Option<String> {
        let reasons = lossy_type_changes(change);
        (!reasons.is_empty()).then(|| reasons.join("; "))
    }

    fn destroy_consent(&self, live: &Resource) -> Option<String> {
        let slug = live.address.strip_prefix("postgres.tenant.")?;
        (live.attrs.get("allow_destroy").and_then(Value::as_bool) == Some(true))
            .then(|| slug.to_string())
    }
}

/// `postgres.tenant.<slug>`: the tenant's row, which everything of a tenant depends on.
pub fn tenant_address(slug: &str) -> String {
    format!("{NAME}.tenant.{slug}")
}

// ---------------------------------------------------------------------------------------
// Desired state (pure)
// ---------------------------------------------------------------------------------------

/// Every resource the specs want in the platform database of `env`: the tables, then the
/// rows.
pub fn desired(env: Env<'_>) -> Vec<Resource> {
    let database = azure::platform_database(env.platform);
    let mut out: Vec<Resource> = schema::TABLES
        .iter()
        .map(|t| {
            let mut r = table_resource(t);
            if let (Some(db), true) = (&database, r.depends_on.is_empty()) {
                r.depends_on.push(db.clone());
            }
            r
        })
        .collect();
    for t in sql::data_rows(env) {
        for row in &t.rows {
            let values: Vec<Value> = row.iter().map(json_value).collect();
            out.push(row_resource(t.table, values));
        }
    }
    for (name, role) in sql::roles::of_platform(env.platform) {
        let mut r = role_resource(&name, &role.privileges());
        // Its grants name schema `kombify` (made with the first table) and its tables.
        let first = schema::TABLES.first().map(|t| t.name);
        r.depends_on = first
            .into_iter()
            .chain(role.tables())
            .map(table_address)
            .collect();
        r.depends_on.sort();
        r.depends_on.dedup();
        out.push(r);
    }
    out
}

/// `postgres.role.<name>`.
pub fn role_address(name: &str) -> String {
    format!("{NAME}.role.{name}")
}

/// A service's login role: it logs in, and holds exactly `privileges` (sorted, as
/// [`sql::roles::RoleDef::privileges`] writes them). Its password is a secret: never an
/// attribute, set by apply from the role's secret.
pub fn role_resource(name: &str, privileges: &[String]) -> Resource {
    let mut attrs = Map::new();
    attrs.insert("login".into(), Value::Bool(true));
    attrs.insert(
        "privileges".into(),
        Value::Array(privileges.iter().cloned().map(Value::String).collect()),
    );
    Resource::new(role_address(name), attrs)
}

/// `postgres.table.<name>`.
pub fn table_address(table: &str) -> String {
    format!("{NAME}.table.{table}")
}

/// The resource of one table as [`desired`] describes it (without the Azure database).
pub fn table_resource(t: &TableDef) -> Resource {
    let mut attrs = Map::new();
    for c in t.columns {
        attrs.insert(
            format!("column.{}", c.name),
            column_attr(c.canonical_type(), t.nullable(c), t.pg_default(c)),
        );
    }
    for k in t.constraint_defs() {
        let v = match &k.kind {
            ConstraintKind::PrimaryKey(cols) => constraint_attr("primary key", cols),
            ConstraintKind::Unique(cols, deferred) => {
                let mut v = constraint_attr("unique", cols);
                if let Some(o) = v.as_object_mut() {
                    o.insert("deferred".into(), Value::Bool(*deferred));
                }
                v
            }
            ConstraintKind::Check(cols) => constraint_attr("check", cols),
            ConstraintKind::ForeignKey(col, fk) => fk_attr(
                &[*col],
                &format!("{}({})", fk.table, fk.column),
                &fk.on_update.to_ascii_lowercase(),
                &fk.on_delete.to_ascii_lowercase(),
            ),
        };
        attrs.insert(format!("constraint.{}", k.name), v);
    }
    for i in t.indexes {
        attrs.insert(format!("index.{}", i.name), index_attr(i.columns, i.unique));
    }
    let mut r = Resource::new(table_address(t.name), attrs);
    r.data_bearing = true;
    r.depends_on = t.referenced().iter().map(|x| table_address(x)).collect();
    r
}

/// A column as the table resource compares it: type, nullability, default.
pub fn column_attr(ty: &str, nullable: bool, default: Option<String>) -> Value {
    json!({"type": ty, "nullable": nullable, "default": default})
}

/// A primary key, unique or check constraint: its type and columns.
pub fn constraint_attr<S: AsRef<str>>(kind: &str, cols: &[S]) -> Value {
    let cols: Vec<&str> = cols.iter().map(AsRef::as_ref).collect();
    json!({"type": kind, "columns": cols})
}

/// A foreign key: columns, the referenced column and the referential actions.
pub fn fk_attr<S: AsRef<str>>(
    cols: &[S],
    references: &str,
    on_update: &str,
    on_delete: &str,
) -> Value {
    let cols: Vec<&str> = cols.iter().map(AsRef::as_ref).collect();
    json!({
        "type": "foreign key",
        "columns": cols,
        "references": references,
        "on_update": on_update,
        "on_delete": on_delete,
    })
}

/// An index: columns and uniqueness.
pub fn index_attr<S: AsRef<str>>(cols: &[S], unique: bool) -> Value {
    let cols: Vec<&str> = cols.iter().map(AsRef::as_ref).collect();
    json!({"columns": cols, "unique": unique})
}

/// The resource type of a data table's rows (`tenant` for `kombify.tenants`).
pub fn row_kind(table: &str) -> Option<&'static str> {
    Some(match table {
        "plans" => "plan",
        "tenants" => "tenant",
        "quotas" => "quota",
        "flags" => "flag",
        "flag_plan_overrides" => "flag_plan",
        "flag_tenant_overrides" => "flag_tenant",
        _ => return None,
    })
}

/// The data table of a row resource type.
pub fn data_table_of_kind(kind: &str) -> Option<&'static DataTable> {
    sql::DATA_TABLES
        .iter()
        .copied()
        .find(|t| row_kind(t.name) == Some(kind))
}

/// The data table a row address belongs to (`postgres.quota.acme` → `quotas`).
pub fn data_table_of(address: &str) -> Option<&'static DataTable> {
    let mut parts = address.splitn(3, '.');
    let (_, kind) = (parts.next()?, parts.next()?);
    data_table_of_kind(kind)
}

/// A value as [`desired`] and [`Postgres::read`] both write it: numbers as JSON numbers
/// (a `double precision` as a float, integers as integers), NULL as `null`, arrays in their
/// order. A value PostgreSQL cannot hold becomes `{"invalid": why}`, which apply refuses.
pub fn json_value(v: &SqlValue) -> Value {
    let invalid = |why: &str| json!({ "invalid": why });
    match v {
        SqlValue::Null => Value::Null,
        SqlValue::Text(s) if s.contains('\0') => invalid("text holds a NUL character"),
        SqlValue::Text(s) => Value::String(s.clone()),
        SqlValue::Int(n) => Value::from(*n),
        SqlValue::Float(x) => Number::from_f64(*x)
            .map(Value::Number)
            .unwrap_or_else(|| invalid("not a finite number")),
        SqlValue::Bool(b) => Value::Bool(*b),
        SqlValue::TextArray(items) if items.iter().any(|s| s.contains('\0')) => {
            invalid("an array element holds a NUL character")
        }
        SqlValue::TextArray(items) => {
            Value::Array(items.iter().cloned().map(Value::String).collect())
        }
        SqlValue::Invalid(why) => invalid(why),
    }
}

/// A row resource from its values (one per column of `table.cols`, already JSON).
pub fn row_resource(table: &'static DataTable, values: Vec<Value>) -> Resource {
    let kind = row_kind(table.name).unwrap_or(table.name);
    let key: Vec<String> = values
        .iter()
        .take(table.key)
        .map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect();
    let address = format!("{NAME}.{kind}.{}", key.join(":"));
    let def = schema::table(table.name);
    let mut depends_on = vec![table_address(table.name)];
    let mut tenant: Option<String> = None;
    if table.name == sql::TENANTS.name {
        tenant = key.first().cloned();
    }
    let mut attrs = Map::new();
    for (col, v) in table.cols.iter().zip(values) {
        let fk = def.and_then(|d| d.column(col)).and_then(|c| c.references);
        if let (Some(fk), Value::String(s)) = (fk, &v) {
            if let Some(parent_kind) = row_kind(fk.table) {
                depends_on.push(format!("{NAME}.{parent_kind}.{s}"));
            }
            if fk.table == sql::TENANTS.name {
                tenant = Some(s.clone());
            }
        }
        attrs.insert((*col).to_string(), v);
    }
    let mut r = Resource::new(address, attrs);
    r.depends_on = depends_on;
    if let Some(slug) = tenant {
        // A tenant's rows: deleting them loses the tenant's data (its usage, its SSO users
        // through ON DELETE CASCADE).
        r.data_bearing = true;
        r.meta.insert("tenant".into(), Value::String(slug));
    }
    r
}

// ---------------------------------------------------------------------------------------
// Classification
// ---------------------------------------------------------------------------------------

/// Marks destructive what the generic diff cannot judge: dropping a table or a column, and
/// a column type change that can lose data (see [`lossy_type_changes`]).
pub fn classify(change: &mut Change) {
    if !change.address.starts_with(&format!("{NAME}.table.")) {
        return;
    }
    match change.action {
        Action::Delete | Action::Replace => change.destructive = true,
        Action::Create => {}
        Action::Update => {
            let drops_column = change
                .attrs
                .iter()
                .any(|a| a.name.starts_with("column.") && a.before.is_some() && a.after.is_none());
            if drops_column || !lossy_type_changes(change).is_empty() {
                change.destructive = true;
            }
        }
    }
}

/// The column type changes of a table change that can lose data (`text` → `integer`, a
/// narrowing like `bigint` → `integer`), one reason each. These are refused whatever the
/// consent ([`Target::refusal`]: the plan is blocked, exit 3); the engine's client refuses
/// them as well.
pub fn lossy_type_changes(change: &Change) -> Vec<String> {
    let mut out = Vec::new();
    if !change.address.starts_with(&format!("{NAME}.table.")) {
        return out;
    }
    for a in &change.attrs {
        let Some(column) = a.name.strip_prefix("column.") else {
            continue;
        };
        let ty = |v: &Option<Value>| {
            v.as_ref()
                .and_then(|v| v.get("type"))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        if let (Some(from), Some(to)) = (ty(&a.before), ty(&a.after)) {
            if !lossless(&from, &to) {
                out.push(format!(
                    "{}: column {column}: type {from} -> {to} can lose data; \
                     migrate the column by hand (add a new column, copy, drop)",
                    change.address
                ));
            }
        }
    }
    out
}

/// Whether every value of type `from` survives a change to type `to` (types as
/// `format_type` writes them).
pub fn lossless(from: &str, to: &str) -> bool {
    if from == to {
        return true;
    }
    const INTS: [&str; 3] = ["smallint", "integer", "bigint"];
    let rank = |t: &str| INTS.iter().position(|x| *x == t);
    if let (Some(a), Some(b)) = (rank(from), rank(to)) {
        return a <= b;
    }
    let scalar_to_text = !from.ends_with("[]")
        && matches!(to, "text" | "character varying")
        && !from.starts_with("character varying(")
        && !from.starts_with("character(");
    if scalar_to_text {
        return true;
    }
    match (from, to) {
        ("smallint" | "integer", "double precision" | "numeric") => true,
        ("bigint", "numeric") => true,
        ("real", "double precision") => true,
        _ => {
            // character varying(n) → character varying(m ≥ n), text, unbounded varchar.
            let varchar = |t: &str| -> Option<Option<u32>> {
                if t == "character varying" || t == "text" {
                    return Some(None);
                }
                t.strip_prefix("character varying(")
                    .or_else(|| t.strip_prefix("character("))
                    .and_then(|r| r.strip_suffix(')'))
                    .and_then(|n| n.parse().ok())
                    .map(Some)
            };
            match (varchar(from), varchar(to)) {
                (Some(Some(_)), Some(None)) => true,
                (Some(Some(n)), Some(Some(m))) => m >= n && !from.starts_with("character("),
                _ => false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kombiform_plan::AttrChange;

    fn model() -> kombiform_model::Model {
        kombiform_test_support::example_model()
    }

    fn find<'a>(rs: &'a [Resource], addr: &str) -> &'a Resource {
        match rs.iter().find(|r| r.address == addr) {
            Some(r) => r,
            None => panic!("no {addr}"),
        }
    }

    #[test]
    fn desired_rows_have_addresses_dependencies_and_owned_columns_only() {
        let m = model();
        let Some(env) = m.env("local") else {
            panic!("no local env")
        };
        let rs = desired(env);
        let quota = find(&rs, "postgres.quota.globex");
        assert_eq!(
            Value::Object(quota.attrs.clone()),
            json!({"tenant": "globex", "max_users": 800, "max_nodes": 1000,
                   "max_stacks": 500, "max_simulations": 5000,
                   "rate_limit_second": 100, "rate_limit_minute": 3000,
                   "rate_limit_hour": 100000, "rate_limit_day": 1000000})
        );
        assert_eq!(
            quota.depends_on,
            ["postgres.table.quotas", "postgres.tenant.globex"]
        );
        assert_eq!(quota.meta.get("tenant"), Some(&json!("globex")));
        assert!(quota.data_bearing);
        let tenant = find(&rs, "postgres.tenant.devtest");
        assert_eq!(tenant.attrs.get("allow_destroy"), Some(&json!(true)));
        assert_eq!(tenant.attrs.get("stripe_customer_id"), Some(&Value::Null));
        assert!(tenant.depends_on.contains(&"postgres.plan.pro".to_string()));
        let free = find(&rs, "postgres.plan.free");
        assert_eq!(free.attrs.get("sim_cpu_per_simulation"), Some(&json!(0.5)));
        assert_eq!(free.attrs.get("features"), Some(&json!([])));
        assert!(!free.data_bearing);
        let o = find(&rs, "postgres.flag_tenant.new-dashboard:acme");
        assert_eq!(o.meta.get("tenant"), Some(&json!("acme")));
        assert!(o
            .depends_on
            .contains(&"postgres.flag.new-dashboard".to_string()));
        let t = find(&rs, "postgres.table.tenants");
        assert_eq!(
            t.attrs.get("column.created_at"),
            Some(
                &json!({"type": "timestamp with time zone", "nullable": false, "default": "now()"})
            )
        );
        assert_eq!(t.depends_on, ["postgres.table.plans"]);
    }

    fn table_change(attrs: Vec<AttrChange>) -> Change {
        Change {
            address: "postgres.table.plans".into(),
            action: Action::Update,
            attrs,
            destructive: false,
            drift: false,
            desired: None,
            live: None,
        }
    }

    fn col_change(name: &str, from: Option<&str>, to: Option<&str>) -> AttrChange {
        let v = |t: Option<&str>| t.map(|t| column_attr(t, false, None));
        AttrChange {
            name: format!("column.{name}"),
            before: v(from),
            after: v(to),
            sensitive: false,
            forces_replace: false,
        }
    }

    #[test]
    fn lossy_changes_and_dropped_columns_are_destructive() {
        let cases = [
            (Some("integer"), Some("bigint"), false, 0),
            (Some("text"), Some("integer"), true, 1),
            (Some("bigint"), Some("integer"), true, 1),
            (Some("integer"), Some("text"), false, 0),
            (
                Some("character varying(10)"),
                Some("character varying(20)"),
                false,
                0,
            ),
            (
                Some("character varying(20)"),
                Some("character varying(10)"),
                true,
                1,
            ),
            (Some("text"), None, true, 0),
            (None, Some("text"), false, 0),
        ];
        for (from, to, destructive, reasons) in cases {
            let mut c = table_change(vec![col_change("x", from, to)]);
            classify(&mut c);
            assert_eq!(c.destructive, destructive, "{from:?} -> {to:?}");
            assert_eq!(lossy_type_changes(&c).len(), reasons, "{from:?} -> {to:?}");
        }
    }

    #[test]
    fn invalid_values_are_marked_not_hidden() {
        assert_eq!(
            json_value(&SqlValue::Float(f64::NAN)),
            json!({"invalid": "not a finite number"})
        );
        assert_eq!(json_value(&SqlValue::Int(3)), json!(3));
        assert_eq!(json_value(&SqlValue::Float(2.0)), json!(2.0));
        assert_ne!(json_value(&SqlValue::Float(2.0)), json!(2));
    }
}
