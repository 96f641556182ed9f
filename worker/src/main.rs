//! `rota-worker`: runs a rota cluster's jobs on this host.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use rota_worker::config::{Flags, LogFormat};
use rota_worker::{Agent, Config};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

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

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

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
    init_tracing(config.log_format);
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    runtime.block_on(async move {
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
    })
}
