//! `kombiform-arm-standin`: a local stand-in for Azure Resource Manager and the Entra token
//! endpoint, faithful to ARM's documented and recorded behaviour, for tests of the ARM client
//! and the Azure provider. Not a general Azure emulator: it knows the resource types
//! kombiform deploys (`profiles.rs`) and holds everything in memory.
//!
//! What it does: a client-credentials token endpoint (`POST /{tenant}/oauth2/v2.0/token`,
//! client secret or client assertion) whose tokens ARM requests must carry; nested and
//! extension resource paths with case-insensitive names that keep the last casing; required
//! api-versions (`MissingApiVersionParameter`, `NoRegisteredProviderFound`); parent checks
//! (`ResourceGroupNotFound`, `ParentResourceNotFound`); ARM error bodies; PUT 201/200; the
//! polling style each type really uses (storage 202 + `Location`, Container Apps 201 +
//! `Azure-AsyncOperation`, workspaces synchronous 200, PostgreSQL both headers, Redis
//! `provisioningState`, resource-group delete 202 + `Location`); location display names and
//! id case as ARM rewrites them; write-only properties never returned; `nextLink` paging;
//! resource-group cascade delete; Key Vault soft delete; PostgreSQL's one write at a time;
//! Front Door routes that need an enabled origin; role assignments refused while a new
//! identity replicates; ARM's throttling buckets with remaining-budget headers; and injected
//! faults ([`Faults`]). Time can be compressed (`time_scale`). A replay mode serves recorded
//! traffic instead ([`Recording`]).
//!
//! It listens on one port for HTTPS (a CA made at start, [`StandIn::ca_pem`]) and plain HTTP.
//!
//! Code map: `server.rs` (connections) · `arm.rs` (the request pipeline) · `store.rs`
//! (resources and operations) · `profiles.rs` (per-type behaviour) · `path.rs` · `faults.rs` ·
//! `bucket.rs` · `record.rs` · `replay.rs` · `tls.rs` · `answer.rs` · `json.rs`.

mod answer;
mod arm;
mod bucket;
mod faults;
mod json;
mod path;
mod profiles;
mod record;
mod replay;
mod server;
mod store;
mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use arm::Stats;
pub use faults::{BucketSpec, Faults};
pub use record::Record;
pub use replay::{Recording, ReplayReport, ReplayRequest};

/// How to run the stand-in.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where to listen (port 0: any free port).
    pub listen: SocketAddr,
    /// Where to write the request record, one JSON line per request.
    pub record: Option<PathBuf>,
    /// Injected faults and ARM's throttling buckets.
    pub faults: Faults,
    /// Real seconds per stand-in second: 0.01 makes a 60 s operation take 0.6 s and turns
    /// `Retry-After: 5` into 50 ms (sent as `retry-after-ms`). 1 is real time.
    pub time_scale: f64,
    /// Items per list page.
    pub page_size: usize,
    /// Serve this recording instead of simulating ARM.
    pub replay: Option<Recording>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            record: None,
            faults: Faults::default(),
            time_scale: 1.0,
            page_size: 100,
            replay: None,
        }
    }
}

/// A running stand-in; dropping it stops it.
#[derive(Debug)]
pub struct StandIn {
    addr: SocketAddr,
    ca_pem: String,
    shared: Arc<server::Shared>,
    task: JoinHandle<()>,
}

impl StandIn {
    /// Binds, makes its TLS certificates and starts serving on the current tokio runtime.
    pub async fn start(config: Config) -> Result<Self> {
        let scale = if config.time_scale.is_finite() && config.time_scale > 0.0 {
            config.time_scale
        } else {
            anyhow::bail!("the time scale must be a positive number");
        };
        let tls = tls::generate().context("making the stand-in's TLS certificates")?;
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("listening on {}", config.listen))?;
        let addr = listener.local_addr().context("reading the bound address")?;
        let replay = config.replay.map(replay::Replay::new).transpose()?;
        let shared = Arc::new(server::Shared {
            arm: arm::Arm::new(config.faults, scale, config.page_size),
            replay,
            recorder: record::Recorder::new(config.record.as_deref())?,
        });
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.config);
        let task = tokio::spawn(server::serve(listener, acceptor, shared.clone()));
        Ok(Self {
            addr,
            ca_pem: tls.ca_pem,
            shared,
            task,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:PORT`: the ARM endpoint and the authority host in one.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The PEM certificate of the CA that signed the stand-in's server certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// What the stand-in has seen and done so far.
    pub fn stats(&self) -> Stats {
        self.shared.arm.counters.snapshot()
    }

    /// Every request received so far.
    pub fn records(&self) -> Vec<Record> {
        self.shared.recorder.records()
    }

    /// In replay mode, how the replay went.
    pub fn replay_report(&self) -> Option<ReplayReport> {
        self.shared.replay.as_ref().map(replay::Replay::report)
    }

    /// The time scale in use.
    pub fn time_scale(&self) -> f64 {
        self.shared.arm.scale()
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}
