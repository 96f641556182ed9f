//! `rota-worker`: runs a rota cluster's jobs on this host.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use rota_worker::config::Flags;
use rota_worker::{Agent, Config};
use tokio_util::sync::CancellationToken;

/// A rota worker: connects to the cluster, runs the attempts it is assigned
/// as Docker containers or host processes, and ships their output and exit
/// status back.
///
/// Options can also come from a TOML file (--config) and ROTA_* environment
/// variables (flags win over the environment, which wins over the file);
/// every option is documented in deploy/worker.toml. On SIGTERM the worker
/// takes no new runs, lets running ones finish (up to shutdown_timeout),
/// stops the rest, reports, and exits 0.
#[derive(Debug, Parser)]
#[command(version, after_help = EXAMPLES)]
struct Args {
    /// TOML config file.
    #[arg(long, env = "ROTA_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    flags: Flags,
}

const EXAMPLES: &str = "\
Examples:
  # a worker with two slots for container jobs, labelled for constraints
  rota-worker --servers 127.0.0.1:7401,127.0.0.1:7402,127.0.0.1:7403 \\
      --id build-1 --labels arch=amd64,pool=ci --slots 2 --data-dir data/worker-1

  # a worker that runs host processes (no Docker)
  rota-worker --servers 127.0.0.1:7401 --id bench-1 --drivers exec --data-dir data/bench-1";

/// Cancels `stop` on the first SIGTERM or Ctrl-C; a second one exits at once.
async fn watch_signals(stop: CancellationToken) {
    let wait = || async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        Ok::<(), std::io::Error>(())
    };
    if let Err(e) = wait().await {
        tracing::error!(error = %e, "cannot listen for signals; stop with SIGKILL");
        return;
    }
    tracing::info!("signal received; shutting down gracefully (send it again to exit at once)");
    stop.cancel();
    if wait().await.is_ok() {
        tracing::warn!("second signal: exiting now; running tasks are left to the next start");
        std::process::exit(130);
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config =
        Config::load(args.config.as_deref(), std::env::vars(), &args.flags).context("invalid configuration")?;
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    // The guard flushes spans on drop.
    let tracing = rota_proto::trace::init(
        &runtime,
        "rota-worker",
        config.log_format,
        "info",
        config.otlp_endpoint.as_deref(),
    )
    .map_err(anyhow::Error::msg)?;
    let result = runtime.block_on(async move {
        let stop = CancellationToken::new();
        tokio::spawn(watch_signals(stop.clone()));
        let http_listen = config.http_listen;
        let agent = Agent::new(config).await?;
        if let Some(addr) = http_listen {
            // Up until the process exits: a draining worker answers /readyz
            // with why it is not ready.
            let (http, _task) = rota_proto::telemetry::serve(addr, agent.metrics(), std::future::pending()).await?;
            tracing::info!(%http, "serving /metrics, /healthz and /readyz");
        }
        agent.run(stop).await
    });
    drop(tracing);
    result
}
