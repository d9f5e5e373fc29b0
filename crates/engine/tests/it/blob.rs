//! The Azure Blob state backend against a real Azurite (HTTPS, `--oauth basic`), with
//! bearer tokens from the Azure credential chain served by `kombiform-arm-standin`'s token
//! endpoint: the lock names its holder and fails fast, a broken lease frees the state, the
//! journal and snapshot survive a reload, and an append whose answer was lost is neither
//! lost nor written twice (a fault proxy between the backend and Azurite).

use std::collections::HashMap;
use std::time::Duration;

use kombiform_arm_standin::{Config, StandIn};
use kombiform_azure::{ArmConfig, TokenSource, STORAGE_SCOPE};
use kombiform_engine::state::{
    BlobBackend, BlobSettings, Entry, EntryKind, LockError, LockInfo, ResourceState, State,
    StateBackend,
};
use kombiform_plan::Action;
use kombiform_test_support::azurite::Azurite;
use kombiform_test_support::proxy::Proxy;

/// Azurite, a token endpoint, and a container per test.
struct Blob {
    azurite: Azurite,
    standin: StandIn,
    container: String,
    // Declared last: the stand-in's server runs on it until the end.
    _runtime: tokio::runtime::Runtime,
}

impl Blob {
    fn start() -> Blob {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let standin = runtime.block_on(StandIn::start(Config::default())).unwrap();
        Blob {
            azurite: Azurite::start().unwrap(),
            standin,
            container: format!("state-{}", kombiform_sys::random_id()),
            _runtime: runtime,
        }
    }

    /// A backend (a separate client, as another machine would have) reaching Azurite
    /// directly, or through `port` (a proxy).
    fn backend(&self, port: Option<u16>) -> BlobBackend {
        let vars: HashMap<&str, String> = HashMap::from([
            ("KOMBIFORM_ARM_ENDPOINT", self.standin.url()),
            ("AZURE_AUTHORITY_HOST", self.standin.url()),
            ("AZURE_TENANT_ID", "kombiform-tests".to_string()),
            ("AZURE_CLIENT_ID", "kombiform-ci".to_string()),
            ("AZURE_CLIENT_SECRET", "not-a-real-secret".to_string()),
        ]);
        let config = ArmConfig::from_lookup(&|k| vars.get(k).cloned()).unwrap();
        let tokens =
            TokenSource::new(&config, STORAGE_SCOPE, &[self.standin.ca_pem().to_string()]).unwrap();
        let endpoint = match port {
            Some(p) => Azurite::endpoint_at(p),
            None => self.azurite.endpoint(),
        };
        let settings = BlobSettings {
            endpoint,
            container: self.container.clone(),
            lease: Duration::from_secs(15),
            ca_pem: Some(self.azurite.ca_pem().as_bytes().to_vec()),
        };
        BlobBackend::with_tokens(settings, tokens).unwrap()
    }
}

fn info(command: &str) -> LockInfo {
    LockInfo::current(command)
}

/// A completed create of `address` as the next entry of `state`.
fn done(state: &State, address: &str, k: u64) -> Entry {
    Entry {
        format: kombiform_engine::state::STATE_FORMAT,
        lineage: state.lineage.clone(),
        serial: state.serial + k,
        address: address.to_string(),
        kind: EntryKind::Done,
        action: Some(Action::Create),
        resource: Some(ResourceState::default()),
    }
}

#[test]
fn the_lock_fails_fast_naming_its_holder_and_a_broken_lease_frees_it() {
    let blob = Blob::start();
    let (a, b) = (blob.backend(None), blob.backend(None));
    let guard = a.lock("prod", info("kombiform apply --env prod")).unwrap();
    let holder = b.lock_holder("prod").unwrap().expect("the lock is held");
    assert_eq!(holder, *guard.info());
    match b.lock("prod", info("kombiform apply --env prod (second)")) {
        Err(LockError::Held { holder, .. }) => {
            assert_eq!(holder.id, guard.info().id);
            assert_eq!(holder.command, "kombiform apply --env prod");
            assert_eq!(holder.host, kombiform_sys::host());
        }
        other => panic!("expected the lock to be held, got {other:?}"),
    }
    let err = b.unlock("prod", "not-the-id").unwrap_err();
    assert!(err.to_string().contains(&guard.info().id), "{err}");
    // Breaking it deliberately (`state unlock ID`) frees it at once.
    let was = b.unlock("prod", &guard.info().id).unwrap();
    assert_eq!(was.id, guard.info().id);
    assert_eq!(b.lock_holder("prod").unwrap(), None);
    let second = b.lock("prod", info("second")).unwrap();
    assert_eq!(
        a.lock_holder("prod").unwrap().map(|h| h.id),
        Some(second.info().id.clone())
    );
    // The first run's writes are refused: its lease was broken and another run holds it.
    let err = a.compact("prod", &State::new("prod", "x")).unwrap_err();
    assert!(format!("{err:#}").contains("412"), "{err:#}");
    drop(guard);
    second.release().unwrap();
    assert_eq!(a.lock_holder("prod").unwrap(), None);
    a.lock("prod", info("third")).unwrap().release().unwrap();
}

#[test]
fn journal_and_snapshot_survive_a_reload_and_compaction() {
    let blob = Blob::start();
    let a = blob.backend(None);
    assert!(!a.exists("prod").unwrap());
    let guard = a.lock("prod", info("apply")).unwrap();
    let mut state = a.load("prod").unwrap();
    assert_eq!(state.serial, 0);
    {
        let mut journal = a.journal("prod").unwrap();
        for (k, addr) in ["azure.rg.a", "azure.vault.b", "azure.app.c"]
            .iter()
            .enumerate()
        {
            let e = done(&state, addr, 1);
            journal.append(&e).unwrap();
            state.apply(&e).unwrap();
            assert_eq!(state.serial, k as u64 + 1);
        }
    }
    // Another machine sees every entry before any compaction.
    let other = blob.backend(None);
    assert!(other.exists("prod").unwrap());
    let seen = other.load("prod").unwrap();
    assert_eq!(seen, state);
    a.compact("prod", &state).unwrap();
    assert_eq!(other.load("prod").unwrap(), state);
    assert!(other.check("prod").unwrap().clean());
    // A second compaction keeps the first snapshot as the previous one.
    let mut journal = a.journal("prod").unwrap();
    let e = done(&state, "azure.app.d", 1);
    journal.append(&e).unwrap();
    state.apply(&e).unwrap();
    a.compact("prod", &state).unwrap();
    assert_eq!(other.load("prod").unwrap().serial, 4);
    guard.release().unwrap();
}

#[test]
fn an_append_whose_answer_was_lost_is_kept_once() {
    let blob = Blob::start();
    let proxy = Proxy::start(blob.azurite.port()).unwrap();
    let a = blob.backend(Some(proxy.port()));
    let guard = a.lock("prod", info("apply")).unwrap();
    let mut state = a.load("prod").unwrap();
    let mut journal = a.journal("prod").unwrap();
    let first = done(&state, "azure.rg.a", 1);
    journal.append(&first).unwrap();
    state.apply(&first).unwrap();
    // The next append reaches Azurite, its answer is held, then the connection is reset:
    // the backend sends it again, finds it stored and does not store it twice.
    let second = done(&state, "azure.vault.b", 1);
    proxy.hold();
    let appending = std::thread::spawn(move || journal.append(&second).map(|()| (journal, second)));
    proxy.wait_held(1, Duration::from_secs(60)).unwrap();
    proxy.down();
    proxy.up();
    let (mut journal, second) = appending.join().unwrap().unwrap();
    state.apply(&second).unwrap();
    let third = done(&state, "azure.app.c", 1);
    journal.append(&third).unwrap();
    state.apply(&third).unwrap();
    let seen = blob.backend(None).load("prod").unwrap();
    assert_eq!(seen, state);
    assert_eq!(seen.serial, 3);
    drop(journal);
    guard.release().unwrap();
}
