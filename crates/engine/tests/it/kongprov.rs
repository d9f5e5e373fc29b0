//! The Kong provider against the gateway stand-in (`kombiform_test_support::kong_standin`:
//! revisions of replicas that load a config file from a share and refuse what Kong refuses):
//! every replica serves the same config after apply, a bad config never reaches traffic, the
//! previous config comes back with one apply, drift (the running revision or the stored file
//! changed behind kombiform's back) shows in plan, a config of 10,000 tenants goes the same
//! way, and a token key rotation reads as an add, an overlap and a later removal.
//!
//! The runtime here is the stand-in's app and share, behind the provider's own
//! [`Runtime`] trait: what the Azure runtime does with the Container App and its Azure Files
//! share, the stand-in does with threads and a temp dir. Not a test of the config's content
//! (the emitter's tests) or of token verification (the services' tests).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use anyhow::{Context, Result};

use kombiform_emit::targets::kong::{self as target, Kong as Target, CONFIG};
use kombiform_emit::targets::Target as _;
use kombiform_engine::providers::kong::{kong_hash, KongClient, Runtime, Serving};
use kombiform_engine::providers::Client as _;
use kombiform_model::{KongEdition, Model, SecretRef, TokenKey};
use kombiform_plan::{diff, Action, Change, DiffInput, Resource};
use kombiform_test_support::kong_standin::GatewayApp;
use kombiform_test_support::synthetic::{fleet, Fleet};

/// The stand-in's app and share as a delivery runtime.
struct Standin(Arc<GatewayApp>);

impl Runtime for Standin {
    fn put(&self, name: &str, bytes: &[u8]) -> Result<()> {
        if self.get(name)?.as_deref() != Some(bytes) {
            std::fs::write(self.0.share().join(name), bytes)?;
        }
        Ok(())
    }

    fn get(&self, name: &str) -> Result<Option<Vec<u8>>> {
        match std::fs::read(self.0.share().join(name)) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn activate(&self, name: &str) -> Result<()> {
        self.0.deploy(name)
    }

    fn serving(&self) -> Result<Serving> {
        Ok(Serving {
            config: self.0.serving().map(|(_, config)| config),
            replicas: self.0.replica_hashes()?,
        })
    }
}

fn client(app: &Arc<GatewayApp>, model: &Model) -> Result<KongClient> {
    let env = model.env("prod").context("prod")?;
    Ok(KongClient::new(env, Box::new(Standin(app.clone()))))
}

/// A client delivering `text` as if the specs rendered it (a config our emitter would never
/// write: the only way a bad config can come from kombiform).
fn client_of_text(app: &Arc<GatewayApp>, model: &Model, text: &str) -> Result<KongClient> {
    let env = model.env("prod").context("prod")?;
    let desired = target::desired_with(env, text);
    Ok(KongClient::with_config(
        text.to_string(),
        desired,
        Box::new(Standin(app.clone())),
    ))
}

/// Plan as the engine does (live read, diff with everything managed by convention, the
/// target's refusals); returns the changes and the vetoed addresses.
fn plan(model: &Model, client: &KongClient) -> Result<(Vec<Change>, BTreeMap<String, String>)> {
    let env = model.env("prod").context("prod")?;
    let desired = target::desired(env);
    let live = client.read()?.resources;
    let managed: BTreeSet<String> = live.iter().map(|r| r.address.clone()).collect();
    let applied = BTreeMap::new();
    let d = diff(&DiffInput {
        desired: &desired,
        live: &live,
        applied: &applied,
        managed: &managed,
    })
    .map_err(|c| anyhow::anyhow!("cycle {c}"))?;
    let vetoed = d
        .changes
        .iter()
        .filter_map(|c| Some((c.address.clone(), Target.refusal(c)?)))
        .collect();
    Ok((d.changes, vetoed))
}

fn apply(client: &KongClient, changes: &[Change]) -> Result<()> {
    let refs: Vec<&Change> = changes.iter().collect();
    client.apply(&refs)
}

fn config_change(changes: &[Change]) -> Option<&Change> {
    changes.iter().find(|c| c.address == CONFIG)
}

fn sha_of(r: &Resource) -> String {
    r.attrs["sha256"].as_str().unwrap_or_default().to_string()
}

fn example() -> Model {
    kombiform_test_support::example_model()
}

fn app() -> Result<Arc<GatewayApp>> {
    Ok(Arc::new(GatewayApp::new(3, KongEdition::Oss)?))
}

#[test]
fn apply_delivers_one_config_to_every_replica_and_plans_empty_after() -> Result<()> {
    let app = app()?;
    let model = example();
    let kong = client(&app, &model)?;
    let text = kombiform_emit::kong::render(model.env("prod").context("prod")?);

    let (changes, vetoed) = plan(&model, &kong)?;
    let config = config_change(&changes).context("the config is in the plan")?;
    assert_eq!(config.action, Action::Create);
    let desired = config.desired.as_ref().context("desired")?;
    assert_eq!(sha_of(desired), target::sha256_hex(text.as_bytes()));
    assert!(vetoed.is_empty(), "{vetoed:?}");

    apply(&kong, &changes)?;
    let hashes = app.replica_hashes()?;
    assert_eq!(hashes, vec![kong_hash(text.as_bytes()); 3]);
    let (_, serving) = app.serving().context("a revision serves")?;
    assert_eq!(
        serving,
        target::file_name(&target::sha256_hex(text.as_bytes()))
    );

    let (again, _) = plan(&model, &kong)?;
    assert!(again.is_empty(), "a fresh read shows no change: {again:#?}");
    Ok(())
}

#[test]
fn a_bad_config_never_reaches_traffic_and_the_previous_comes_back_with_one_apply() -> Result<()> {
    let app = app()?;
    let model = example();
    let good = client(&app, &model)?;
    apply(&good, &plan(&model, &good)?.0)?;
    let good_hashes = app.replica_hashes()?;

    // A config Kong refuses (an Enterprise plugin in an OSS gateway): apply fails, the
    // revision never serves, the previous one keeps every replica.
    let text = kombiform_emit::kong::render(model.env("prod").context("prod")?);
    let bad_text = text.replacen("name: \"cors\"", "name: \"openid-connect\"", 1);
    assert_ne!(bad_text, text);
    let bad = client_of_text(&app, &model, &bad_text)?;
    let (changes, _) = plan(&model, &bad)?;
    assert!(changes.is_empty(), "the specs did not change");
    let forced = vec![Change {
        address: CONFIG.into(),
        action: Action::Update,
        attrs: Vec::new(),
        destructive: false,
        drift: false,
        desired: None,
        live: None,
    }];
    let err = apply(&bad, &forced).expect_err("Kong refuses the config");
    assert!(format!("{err:#}").contains("openid-connect"), "{err:#}");
    assert_eq!(app.failed().len(), 1);
    assert_eq!(app.replica_hashes()?, good_hashes);

    // Other specs (a tenant fewer), delivered; then the previous specs again: one apply.
    let mut fewer = example();
    fewer.tenants.retain(|t| t.slug != "acme");
    let next = client(&app, &fewer)?;
    let (changes, _) = plan(&fewer, &next)?;
    assert!(changes
        .iter()
        .any(|c| c.address == "kong.consumer.acme" && c.action == Action::Delete));
    apply(&next, &changes)?;
    assert_ne!(app.replica_hashes()?, good_hashes);

    let back = client(&app, &model)?;
    let (changes, _) = plan(&model, &back)?;
    let config = config_change(&changes).context("the config changes back")?;
    assert_eq!(config.action, Action::Update);
    apply(&back, &changes)?;
    assert_eq!(app.replica_hashes()?, good_hashes);
    assert!(plan(&model, &back)?.0.is_empty());
    Ok(())
}

#[test]
fn drift_of_the_running_revision_or_the_stored_file_shows_in_plan() -> Result<()> {
    let app = app()?;
    let model = example();
    let kong = client(&app, &model)?;
    apply(&kong, &plan(&model, &kong)?.0)?;
    let text = kombiform_emit::kong::render(model.env("prod").context("prod")?);
    let file = target::file_name(&target::sha256_hex(text.as_bytes()));

    // Someone edits the stored file in place and restarts the revision from it: the serving
    // bytes no longer match their name.
    let edited = text.replacen("minute: 600", "minute: 6000", 1);
    assert_ne!(edited, text);
    app.deploy_unchecked(&file, edited.as_bytes())?;
    let (changes, _) = plan(&model, &kong)?;
    let c = config_change(&changes).context("drift is a change")?;
    assert_eq!(c.action, Action::Update);
    let live = c.live.as_ref().context("live")?;
    assert_eq!(sha_of(live), target::sha256_hex(edited.as_bytes()));
    // Apply puts the specs' bytes back under their name and restarts the gateway from them.
    apply(&kong, &changes)?;
    assert_eq!(app.replica_hashes()?, vec![kong_hash(text.as_bytes()); 3]);
    assert!(plan(&model, &kong)?.0.is_empty());

    // Someone deploys a revision with another config of theirs.
    let manifest = kombiform_engine::providers::kong::manifest_name(&file);
    let theirs = "kong-0000000000000000.yaml";
    std::fs::copy(
        app.share().join(&manifest),
        app.share()
            .join(kombiform_engine::providers::kong::manifest_name(theirs)),
    )?;
    app.deploy_unchecked(theirs, edited.as_bytes())?;
    let (changes, _) = plan(&model, &kong)?;
    let c = config_change(&changes).context("a foreign revision is drift")?;
    let live = c.live.as_ref().context("live")?;
    assert_eq!(live.attrs["file"], theirs);
    Ok(())
}

#[test]
fn ten_thousand_tenants_go_the_same_way() -> Result<()> {
    // During a rotation every tenant holds two credentials: the largest config there is.
    let (_, old) = kombiform_test_support::kong_jwt::es256_key_pair()?;
    let (_, new) = kombiform_test_support::kong_jwt::es256_key_pair()?;
    let model = fleet(
        with_keys(&[("k1", &old, true), ("k2", &new, false)]),
        Fleet {
            tenants: 10_000,
            ..Fleet::default()
        },
    );
    let app = Arc::new(GatewayApp::new(2, KongEdition::Oss)?);
    let kong = client(&app, &model)?;
    let (changes, _) = plan(&model, &kong)?;
    let config = config_change(&changes).context("config")?;
    let bytes = config
        .desired
        .as_ref()
        .and_then(|d| d.attrs["bytes"].as_u64())
        .context("bytes")?;
    // More than Kong's Admin API takes by default (`nginx_admin_client_max_body_size` 10m):
    // a file on the share has no such limit.
    assert!(bytes > 10 * 1024 * 1024, "{bytes} bytes");
    apply(&kong, &changes)?;
    let text = kombiform_emit::kong::render(model.env("prod").context("prod")?);
    assert_eq!(app.replica_hashes()?, vec![kong_hash(text.as_bytes()); 2]);
    assert!(plan(&model, &kong)?.0.is_empty());
    Ok(())
}

/// The prod platform's token keys, replaced by `keys` (id, public key, signs).
fn with_keys(keys: &[(&str, &str, bool)]) -> Model {
    let mut m = example();
    for p in m.platforms.iter_mut().filter(|p| p.name == "prod") {
        p.sso.platform_tokens.keys = keys
            .iter()
            .map(|(id, public, signs)| TokenKey {
                id: (*id).to_string(),
                algorithm: Default::default(),
                public_key_pem: (*public).to_string(),
                private_key: SecretRef::KeyVault(format!("sso-token-key-{id}")),
                signs: *signs,
            })
            .collect();
    }
    m
}

fn summary(changes: &[Change]) -> Vec<String> {
    changes
        .iter()
        .filter(|c| c.address != CONFIG)
        .map(|c| format!("{:?} {}", c.action, c.address))
        .collect()
}

#[test]
fn a_key_rotation_is_an_add_an_overlap_and_a_later_removal() -> Result<()> {
    let (_, old) = kombiform_test_support::kong_jwt::es256_key_pair()?;
    let (_, new) = kombiform_test_support::kong_jwt::es256_key_pair()?;
    let app = app()?;
    let step0 = with_keys(&[("k1", &old, true)]);
    let kong = client(&app, &step0)?;
    apply(&kong, &plan(&step0, &kong)?.0)?;

    // 1. Add: the gateway accepts the new key, nothing signs with it yet.
    let step1 = with_keys(&[("k1", &old, true), ("k2", &new, false)]);
    let kong = client(&app, &step1)?;
    let (changes, vetoed) = plan(&step1, &kong)?;
    assert_eq!(summary(&changes), ["Create kong.token_key.k2"]);
    assert!(config_change(&changes).is_some() && vetoed.is_empty());
    apply(&kong, &changes)?;

    // Removing the signing key now is refused: its tokens are still out there.
    let early = with_keys(&[("k2", &new, false)]);
    let (_, vetoed) = plan(&early, &client(&app, &early)?)?;
    assert!(vetoed.contains_key("kong.token_key.k1"), "{vetoed:?}");

    // 2. Overlap: kombify-sso signs with the new key; both stay accepted.
    let step2 = with_keys(&[("k1", &old, false), ("k2", &new, true)]);
    let kong = client(&app, &step2)?;
    let (changes, vetoed) = plan(&step2, &kong)?;
    assert_eq!(
        summary(&changes),
        ["Update kong.token_key.k1", "Update kong.token_key.k2"]
    );
    assert!(vetoed.is_empty());
    apply(&kong, &changes)?;

    // 3. Removal, a later apply (after ttlSeconds): the old key's credentials go.
    let step3 = with_keys(&[("k2", &new, true)]);
    let kong = client(&app, &step3)?;
    let (changes, vetoed) = plan(&step3, &kong)?;
    assert_eq!(summary(&changes), ["Delete kong.token_key.k1"]);
    assert!(vetoed.is_empty(), "{vetoed:?}");
    apply(&kong, &changes)?;
    let served = std::fs::read_to_string(app.share().join(app.serving().context("serving")?.1))?;
    assert!(served.contains("key: \"acme.k2\"") && !served.contains("acme.k1"));
    Ok(())
}
