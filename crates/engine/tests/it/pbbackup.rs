//! PocketBase keeps its data: apply sets PocketBase's own backup schedule from the platform
//! spec (`backup.pocketbaseCron`, `backup.pocketbaseKeep`) and a second plan is clean; a
//! backup PocketBase takes (the same code path as its cron) restored into a fresh instance the
//! documented way (extract into an empty `pb_data`, start) has the same collections and
//! records, against the real PocketBase.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result};
use serde_json::{json, Value};

use kombiform_emit::targets::pocketbase::{self as target, BACKUPS};
use kombiform_engine::providers::pocketbase::PocketBase as Provider;
use kombiform_engine::providers::Client as _;
use kombiform_plan::{diff, Change, DiffInput};
use kombiform_test_support::pocketbase::{PocketBase, SUPERUSER_EMAIL, SUPERUSER_PASSWORD};

fn call(pb: &PocketBase, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Value)> {
    let token = pb.superuser_token()?;
    let url = format!("{}{path}", pb.url());
    let req = match method {
        "GET" => pb.agent().get(&url).header("Authorization", &token).send(),
        _ => pb
            .agent()
            .post(&url)
            .header("Authorization", &token)
            .json(&body.cloned().unwrap_or(json!({})))
            .send(),
    };
    let r = req.with_context(|| format!("{method} {path}"))?;
    let status = r.status().as_u16();
    let text = r.text().unwrap_or_default();
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

/// Names of the non-system collections and every record of `_sso_mappings`.
fn contents(pb: &PocketBase) -> Result<(BTreeSet<String>, Vec<Value>)> {
    let (_, cs) = call(pb, "GET", "/api/collections?perPage=1000", None)?;
    let names = cs["items"]
        .as_array()
        .context("no collections")?
        .iter()
        .filter(|c| c["system"] != json!(true))
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect();
    let (_, rs) = call(
        pb,
        "GET",
        "/api/collections/_sso_mappings/records?perPage=500&sort=subject",
        None,
    )?;
    let records = rs["items"].as_array().cloned().context("no records")?;
    Ok((names, records))
}

#[test]
fn backups_run_on_the_spec_schedule_and_restore_into_a_fresh_instance() -> Result<()> {
    let m = kombiform_test_support::example_model();
    let env = m.env("local").context("no local environment")?;
    let pb = PocketBase::start()?;
    let provider = Provider::connect(&pb.url(), SUPERUSER_EMAIL, SUPERUSER_PASSWORD)?.managing(env);
    let want = target::desired(env);
    let plan = || -> Result<Vec<Change>> {
        let live = provider.read()?;
        let managed = BTreeSet::new();
        Ok(diff(&DiffInput {
            desired: &want,
            live: &live.resources,
            applied: &BTreeMap::new(),
            managed: &managed,
        })?
        .changes)
    };
    let changes = plan()?;
    assert!(
        changes.iter().any(|c| c.address == BACKUPS),
        "the schedule is planned"
    );
    for c in &changes {
        provider.apply(&[c])?;
    }
    assert!(plan()?.is_empty(), "a second plan is clean");
    let (_, settings) = call(&pb, "GET", "/api/settings", None)?;
    assert_eq!(
        (
            &settings["backups"]["cron"],
            &settings["backups"]["cronMaxKeep"]
        ),
        (
            &json!(env.platform.backup.pocketbase_cron),
            &json!(env.platform.backup.pocketbase_keep)
        )
    );

    for i in 0..3 {
        let (status, body) = call(
            &pb,
            "POST",
            "/api/collections/_sso_mappings/records",
            Some(
                &json!({"provider": "https://auth.test", "subject": format!("sub-{i}"),
                        "tenant": "acme", "orgId": "284715550000000001",
                        "collection": "t_acme_users", "userId": format!("user{i:011}")}),
            ),
        )?;
        assert_eq!(status, 200, "{body}");
    }
    let before = contents(&pb)?;
    assert_eq!(before.1.len(), 3);

    let (status, body) = call(
        &pb,
        "POST",
        "/api/backups",
        Some(&json!({"name": "nightly.zip"})),
    )?;
    assert_eq!(status, 204, "{body}");
    let zip = pb.data_dir().join("backups/nightly.zip");
    assert!(
        zip.is_file(),
        "PocketBase writes backups into pb_data/backups"
    );

    let restored = PocketBase::start_restored(&zip)?;
    let after = contents(&restored)?;
    assert_eq!(after.0, before.0, "the same collections");
    let strip = |rs: &[Value]| -> Vec<Value> {
        rs.iter()
            .map(|r| json!([r["id"], r["subject"], r["userId"], r["tenant"]]))
            .collect()
    };
    assert_eq!(strip(&after.1), strip(&before.1), "the same records");
    // The restored instance keeps the schedule too (it is in the backup).
    let (_, settings) = call(&restored, "GET", "/api/settings", None)?;
    assert_eq!(
        settings["backups"]["cronMaxKeep"],
        json!(env.platform.backup.pocketbase_keep)
    );
    Ok(())
}
