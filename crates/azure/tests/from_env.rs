//! The production path, untouched: `Arm::from_env()` reads `KOMBIFORM_ARM_ENDPOINT`,
//! `AZURE_AUTHORITY_HOST` and the `AZURE_*` credential variables from the process environment,
//! and trusts the stand-in through `SSL_CERT_FILE` (the system trust store's own override),
//! as a CLI run against `kombiform-arm-standin` would. This binary holds this one test, so
//! setting the environment races with nothing.

use kombiform_arm_standin::{Config, StandIn};
use kombiform_azure::Arm;
use serde_json::json;

#[tokio::test]
async fn the_process_environment_points_the_real_client_at_a_test_server() {
    let standin = StandIn::start(Config::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("standin-ca.pem");
    std::fs::write(&ca, standin.ca_pem()).unwrap();
    for (name, value) in [
        ("SSL_CERT_FILE", ca.display().to_string()),
        ("KOMBIFORM_ARM_ENDPOINT", standin.url()),
        ("AZURE_AUTHORITY_HOST", standin.url()),
        ("AZURE_TENANT_ID", "kombiform-tests".to_owned()),
        ("AZURE_CLIENT_ID", "kombiform-ci".to_owned()),
        ("AZURE_CLIENT_SECRET", "not-a-real-secret".to_owned()),
    ] {
        std::env::set_var(name, value);
    }
    let arm = Arm::from_env().unwrap();
    assert_eq!(arm.endpoint().as_str(), format!("{}/", standin.url()));
    let rg = "/subscriptions/0c0ffee0-0000-4000-8000-000000000001/resourceGroups/from-env";
    let put = arm
        .put_and_wait(rg, "2025-04-01", &json!({"location": "westeurope"}))
        .await
        .unwrap();
    assert_eq!(put.status, 201);
    assert_eq!(arm.counts().token_requests, 1);
    assert_eq!(standin.stats().requests, 1);
}
