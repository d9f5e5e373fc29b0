//! Real recorded ARM traffic (`tests/recordings/`, Azure SDK test-proxy files) played to the
//! client: it must send the recorded requests in the recorded order (method, path, query,
//! body) and end with the recorded result. The recorded `Retry-After`s (5 to 17 s) pass on a
//! clock running a thousand times faster.

use std::sync::Arc;

use anyhow::{Context, Result};
use kombiform_arm_standin::{Config, Recording, StandIn};
use kombiform_azure::{Arm, ArmOptions, Deleted, Put, ScaledClock};
use serde_json::Value;

use crate::support::{client, quick_retries, start};

const RECORDINGS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/recordings");

async fn replay(file: &str) -> Result<(StandIn, Arm, Recording)> {
    let path = format!("{RECORDINGS}/{file}");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let recording = Recording::parse(&text)?;
    let standin = start(Config {
        replay: Some(recording.clone()),
        ..Config::default()
    })
    .await?;
    let options = ArmOptions {
        clock: Arc::new(ScaledClock::new(0.001)),
        retry: quick_retries(),
        ..ArmOptions::default()
    };
    let arm = client(&standin, options)?;
    Ok((standin, arm, recording))
}

/// The recording's answer body as the replay served it (its host rewritten).
fn served(standin: &StandIn, body: Option<&Value>) -> Result<Value> {
    let body = body.context("the recording has no such answer")?;
    let text = body
        .to_string()
        .replace("https://management.azure.com", &standin.url());
    Ok(serde_json::from_str(&text)?)
}

fn assert_replayed(standin: &StandIn) {
    let Some(report) = standin.replay_report() else {
        panic!("the stand-in is not replaying");
    };
    assert!(report.mismatches.is_empty(), "{:#?}", report.mismatches);
    assert_eq!(
        report.answered,
        report.expected.len(),
        "the client stopped early"
    );
    assert_eq!(report.received.len(), report.expected.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_group_create_and_delete_202_location() {
    let (standin, arm, recording) = replay("net-ResourceGroup-DeleteRg-2022-09-01.json")
        .await
        .unwrap();
    let sub = "/subscriptions/db1ab6f0-4769-4b27-930e-01e2ef9c123c";
    let subscription = arm.get(sub, "2021-01-01").await.unwrap().unwrap();
    assert_eq!(
        subscription["subscriptionId"],
        "db1ab6f0-4769-4b27-930e-01e2ef9c123c"
    );
    let rg = format!("{sub}/resourcegroups/testrg7368");
    let put = arm
        .put_and_wait(
            &rg,
            "2022-09-01",
            &serde_json::json!({"location": "westus2"}),
        )
        .await
        .unwrap();
    let recorded = served(&standin, recording.last_response_body("PUT")).unwrap();
    assert_eq!(
        put,
        Put {
            status: 201,
            resource: recorded
        }
    );
    assert_eq!(
        arm.delete_and_wait(&rg, "2022-09-01").await.unwrap(),
        Deleted::Deleted
    );
    assert_replayed(&standin);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_app_delete_202_location_then_204() {
    let (standin, arm, _) = replay("js-containerapp-delete.json").await.unwrap();
    let rg = "/subscriptions/azure_subscription_id/resourceGroups/myjstest";
    let app = format!("{rg}/providers/Microsoft.App/containerApps/mycontainerappxxx");
    assert_eq!(
        arm.delete_and_wait(&app, "2022-03-01").await.unwrap(),
        Deleted::Deleted
    );
    let apps = arm
        .list(
            &format!("{rg}/providers/Microsoft.App/containerApps"),
            "2022-03-01",
        )
        .await
        .unwrap();
    assert!(apps.is_empty());
    assert_replayed(&standin);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_account_create_202_location_answers_the_account() {
    let (standin, arm, recording) = replay("js-storageaccounts-create.json").await.unwrap();
    let expected = recording.requests().unwrap();
    let body = expected[0].body.clone().unwrap();
    let id = "/subscriptions/azure_subscription_id/resourceGroups/myjstest/providers/Microsoft.Storage/storageAccounts/storageaccountzzzxxx";
    let put = arm.put_and_wait(id, "2022-09-01", &body).await.unwrap();
    // The final poll's body is the account: no extra GET.
    let recorded = served(&standin, recording.last_response_body("GET")).unwrap();
    assert_eq!(
        put,
        Put {
            status: 202,
            resource: recorded
        }
    );
    assert_replayed(&standin);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_analytics_workspace_create_is_synchronous() {
    let (standin, arm, recording) = replay("js-loganalytics-workspaces-create.json")
        .await
        .unwrap();
    let body = recording.requests().unwrap()[0].body.clone().unwrap();
    let id = "/subscriptions/azure_subscription_id/resourcegroups/myjstest/providers/Microsoft.OperationalInsights/workspaces/oiautorest6685";
    let put = arm.put_and_wait(id, "2022-10-01", &body).await.unwrap();
    let recorded = served(&standin, recording.last_response_body("PUT")).unwrap();
    assert_eq!(
        put,
        Put {
            status: 200,
            resource: recorded
        }
    );
    assert_replayed(&standin);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_app_create_201_azure_async_operation_then_get() {
    let (standin, arm, recording) = replay("js-containerapp-create.TRIMMED.json").await.unwrap();
    let body = recording.requests().unwrap()[0].body.clone().unwrap();
    let id = "/subscriptions/azure_subscription_id/resourceGroups/myjstest/providers/Microsoft.App/containerApps/mycontainerappxxx";
    let put = arm
        .put_and_wait(id, "2022-06-01-preview", &body)
        .await
        .unwrap();
    let recorded = served(&standin, recording.last_response_body("GET")).unwrap();
    assert_eq!(
        put,
        Put {
            status: 201,
            resource: recorded
        }
    );
    assert_replayed(&standin);
}
