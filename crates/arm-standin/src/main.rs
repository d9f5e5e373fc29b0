//! The `kombiform-arm-standin` binary: parses its arguments, starts the stand-in, prints the
//! bound address as its first line, and serves until interrupted.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use kombiform_arm_standin::{Config, Faults, Recording, StandIn};

const FAULTS_HELP: &str = "\
FAULTS SPEC: comma-separated key=value items, all optional:
  429=30%          answer that share of ARM requests 429 ResourceRequestsThrottled (Retry-After)
  5xx=5%           answer that share 500 InternalServerError or 503 ServiceUnavailable
  retry-after=2    Retry-After of injected 429/503, in stand-in seconds (default 1)
  failed=10%       end that share of long-running operations Failed
  canceled=5%      end that share of long-running operations Canceled
  latency=100ms    delay every answer (real time; ms or s)
  drop=2%          close that share of connections without an answer
  reads=250/25     ARM's read bucket per subscription and principal: capacity/refill per s
  writes=200/10    ARM's write bucket (default 200/10)
  deletes=200/10   ARM's delete bucket (default 200/10)
  seed=7           seed of the dice (default 1)
Example: --faults '429=30%,5xx=5%,latency=100ms'

Every request first takes a token from ARM's bucket (an empty bucket answers
429 SubscriptionRequestsThrottled, Retry-After = time to the next token; every
answer carries x-ms-ratelimit-remaining-subscription-{reads,writes,deletes}),
then meets the dice. Faults never touch the token endpoint.

Clients: point KOMBIFORM_ARM_ENDPOINT and AZURE_AUTHORITY_HOST at https://ADDR,
trust the CA written by --ca-cert (SSL_CERT_FILE=FILE), and use any AZURE_TENANT_ID,
AZURE_CLIENT_ID and AZURE_CLIENT_SECRET: the token endpoint accepts any secret.";

/// A local stand-in for Azure Resource Manager and its token endpoint (for tests).
#[derive(Debug, Parser)]
#[command(name = "kombiform-arm-standin", version, after_help = FAULTS_HELP)]
struct Args {
    /// Address to listen on (port 0: any free port; the bound address is the first line
    /// printed). Serves HTTPS and plain HTTP on the same port.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Write every request received as one JSON line: method, path, api-version, body, status.
    #[arg(long, value_name = "FILE")]
    record: Option<PathBuf>,
    /// Inject faults and size ARM's throttling buckets (see below).
    #[arg(long, value_name = "SPEC", default_value = "")]
    faults: String,
    /// Real seconds per stand-in second: 0.01 runs long operations and Retry-After 100 times
    /// faster (Retry-After is then also sent as retry-after-ms).
    #[arg(long, value_name = "SCALE", default_value_t = 1.0)]
    time_scale: f64,
    /// Items per list page (nextLink beyond).
    #[arg(long, value_name = "N", default_value_t = 100)]
    page_size: usize,
    /// Write the PEM certificate of the stand-in's CA to FILE (trust it to use HTTPS).
    #[arg(long, value_name = "FILE")]
    ca_cert: Option<PathBuf>,
    /// Replay a recorded test-proxy JSON file instead of simulating ARM.
    #[arg(long, value_name = "FILE")]
    replay: Option<PathBuf>,
}

async fn run(args: Args) -> Result<()> {
    let replay = args
        .replay
        .as_ref()
        .map(|path| {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the recording {}", path.display()))?;
            Recording::parse(&text)
        })
        .transpose()?;
    let config = Config {
        listen: args.listen,
        record: args.record,
        faults: Faults::parse(&args.faults).context("--faults")?,
        time_scale: args.time_scale,
        page_size: args.page_size,
        replay,
    };
    let standin = StandIn::start(config).await?;
    if let Some(path) = &args.ca_cert {
        std::fs::write(path, standin.ca_pem())
            .with_context(|| format!("writing the CA certificate to {}", path.display()))?;
    }
    // Whoever started us may read the first line and close the pipe: the stand-in keeps
    // serving whether or not stdout is still there.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", standin.addr());
    if let Some(path) = &args.ca_cert {
        let _ = writeln!(out, "ca-cert: {}", path.display());
    }
    let _ = out.flush();
    drop(out);
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    let stats = standin.stats();
    eprintln!(
        "kombiform-arm-standin: {} requests ({} reads, {} writes, {} deletes), {} token requests, {} over ARM's limits",
        stats.requests, stats.reads, stats.writes, stats.deletes, stats.token_requests, stats.over_limit
    );
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("kombiform-arm-standin: {err:#}");
            ExitCode::FAILURE
        }
    }
}
