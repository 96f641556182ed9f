//! `rota-server`: one member of a rota cluster.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use rota_server::node::{self, Config, config::Flags};

/// A rota server: replicates job definitions with Raft and serves the
/// rota.v1 gRPC API.
///
/// Start three servers with the same --initial-cluster to form a cluster;
/// restart a server with the same --data-dir to resume it. Options can also
/// come from a TOML file (--config) and ROTA_* environment variables
/// (flags win over the environment, which wins over the file); every option
/// is documented in deploy/server.toml.
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
  # first start of a three-server cluster (run on each, with its own id, addresses, dir)
  rota-server --node-id 1 --listen 127.0.0.1:7401 --data-dir data/1 \\
      --initial-cluster 1=127.0.0.1:7401,2=127.0.0.1:7402,3=127.0.0.1:7403

  # a fourth server that will be added with `rotactl cluster add-node 4 127.0.0.1:7404`
  rota-server --node-id 4 --listen 127.0.0.1:7404 --data-dir data/4";

/// Completes on the first SIGTERM or Ctrl-C; a second one exits at once.
async fn shutdown_signal() {
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
        std::future::pending::<()>().await;
    }
    tracing::info!("signal received; stopping gracefully (send it again to stop at once)");
    tokio::spawn(async move {
        if wait().await.is_ok() {
            tracing::warn!("second signal: exiting now");
            std::process::exit(130);
        }
    });
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config =
        Config::load(args.config.as_deref(), std::env::vars(), &args.flags).context("invalid configuration")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    // The guard flushes spans on drop.
    let tracing = rota_proto::trace::init(
        &runtime,
        "rota-server",
        config.log_format,
        "info,openraft=warn,sled=warn",
        config.otlp_endpoint.as_deref(),
    )
    .map_err(anyhow::Error::msg)?;
    let result = runtime.block_on(node::run(config, shutdown_signal(), |_| {}));
    if let Err(e) = &result {
        tracing::error!(error = format!("{e:#}"), "server failed");
    }
    drop(tracing);
    result
}
