//! `rotactl`: the command-line client of rota, built on the `rota_client` SDK.
//!
//! Exit codes: 0 success, 1 the command failed, 2 the command line is wrong.

mod output;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use output::{Format, JobView, print_jobs, print_members, print_statuses};
use rota_client::{Client, ClientOptions, Consistency, SpecFile, proto as pb};

/// Control a rota cluster: apply job specs, read jobs, inspect and change
/// cluster membership.
#[derive(Debug, Parser)]
#[command(name = "rotactl", version, after_help = EXAMPLES)]
struct Cli {
    /// Servers to talk to, comma-separated host:port (any members of the cluster).
    #[arg(long, env = "ROTA_SERVERS", value_delimiter = ',', global = true, default_value = rota_client::DEFAULT_ENDPOINT)]
    servers: Vec<String>,
    /// Output format of read commands.
    #[arg(short = 'o', long, value_enum, global = true, default_value = "table")]
    output: Format,
    /// Deadline of each request attempt, e.g. 5s.
    #[arg(long, global = true, default_value = "15s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Read whatever the answering server has (faster, may lag; works without a leader).
    #[arg(long, global = true)]
    stale: bool,
    #[command(subcommand)]
    command: Command,
}

const EXAMPLES: &str = "\
Examples:
  rotactl --servers 127.0.0.1:7401,127.0.0.1:7402 cluster status
  rotactl job apply -f examples/nightly-build.yaml
  rotactl job list -o json
  rotactl job get nightly-build -o yaml
  rotactl cluster add-node 4 127.0.0.1:7404";

#[derive(Debug, Subcommand)]
enum Command {
    /// Cluster status and membership.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Job definitions.
    #[command(subcommand)]
    Job(JobCommand),
}

#[derive(Debug, Subcommand)]
enum ClusterCommand {
    /// Status of every server given in --servers (role, term, leader, indexes);
    /// exits 1 if any of them does not answer.
    Status,
    /// Members of the cluster.
    Members,
    /// Add a running server (started without --initial-cluster) to the cluster.
    AddNode {
        /// Its --node-id.
        node_id: u64,
        /// Its advertised address, host:port.
        addr: String,
        /// Keep it a non-voting learner.
        #[arg(long)]
        learner_only: bool,
    },
    /// Remove a server from the cluster (the leader included).
    RemoveNode {
        /// Its node id.
        node_id: u64,
    },
    /// Move leadership to another voter.
    TransferLeader {
        /// The voter to lead; default: the most caught-up other voter.
        node_id: Option<u64>,
    },
}

#[derive(Debug, Subcommand)]
enum JobCommand {
    /// Create or update jobs from spec files (YAML or TOML), like kubectl apply.
    Apply {
        /// A spec file, or a directory of them.
        #[arg(short = 'f', long = "filename")]
        path: PathBuf,
        /// Validate and show what would change, without changing anything.
        #[arg(long)]
        dry_run: bool,
    },
    /// Show one job.
    Get {
        /// Job name.
        name: String,
    },
    /// List jobs.
    List,
    /// Delete a job.
    Delete {
        /// Job name.
        name: String,
    },
    /// Stop a job's schedule from firing (its definition stays).
    Suspend {
        /// Job name.
        name: String,
    },
    /// Let a suspended job's schedule fire again.
    Resume {
        /// Job name.
        name: String,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if let Some(rota_client::Error::Unreachable { .. }) = e.downcast_ref::<rota_client::Error>() {
                eprintln!("hint: give the servers' addresses with --servers HOST:PORT,... or ROTA_SERVERS");
            }
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let options = ClientOptions {
        timeout: cli.timeout,
        ..Default::default()
    };
    let client = Client::with_options(&cli.servers, options)?;
    let consistency = if cli.stale {
        Consistency::Stale
    } else {
        Consistency::Linearizable
    };
    match cli.command {
        Command::Cluster(command) => cluster(&client, command, cli.output, consistency).await,
        Command::Job(command) => job(&client, command, cli.output, consistency).await,
    }
}

async fn cluster(
    client: &Client,
    command: ClusterCommand,
    format: Format,
    consistency: Consistency,
) -> anyhow::Result<()> {
    match command {
        ClusterCommand::Status => {
            let mut rows = Vec::new();
            for endpoint in client.endpoints() {
                rows.push((endpoint.clone(), client.server_status(endpoint).await));
            }
            let unreachable = rows.iter().filter(|(_, status)| status.is_err()).count();
            print_statuses(&rows, format)?;
            if unreachable > 0 {
                anyhow::bail!("{unreachable} of {} servers did not answer", rows.len());
            }
        }
        ClusterCommand::Members => {
            let members = client.members(consistency).await?;
            print_members(&members.members, format)?;
        }
        ClusterCommand::AddNode {
            node_id,
            addr,
            learner_only,
        } => {
            eprintln!("adding node {node_id} at {addr}; waiting for it to catch up...");
            let members = client.add_node(node_id, &addr, learner_only).await?;
            print_members(&members, format)?;
        }
        ClusterCommand::RemoveNode { node_id } => {
            let members = client.remove_node(node_id).await?;
            print_members(&members, format)?;
        }
        ClusterCommand::TransferLeader { node_id } => {
            let leader = client.transfer_leadership(node_id.unwrap_or(0)).await?;
            println!("node {leader} is the leader");
        }
    }
    Ok(())
}

async fn job(client: &Client, command: JobCommand, format: Format, consistency: Consistency) -> anyhow::Result<()> {
    match command {
        JobCommand::Apply { path, dry_run } => apply(client, &path, dry_run).await,
        JobCommand::Get { name } => {
            let job = client.get_job(&name, consistency).await?;
            output::print_job(&JobView::from(&job), format)
        }
        JobCommand::List => {
            let jobs = client.list_jobs(consistency).await?;
            print_jobs(&jobs, format)
        }
        JobCommand::Delete { name } => {
            client.delete_job(&name).await?;
            println!("job/{name} deleted");
            Ok(())
        }
        JobCommand::Suspend { name } => {
            client.suspend_job(&name).await?;
            println!("job/{name} suspended");
            Ok(())
        }
        JobCommand::Resume { name } => {
            client.resume_job(&name).await?;
            println!("job/{name} resumed");
            Ok(())
        }
    }
}

async fn apply(client: &Client, path: &std::path::Path, dry_run: bool) -> anyhow::Result<()> {
    let specs = SpecFile::load(path)?;
    let suffix = if dry_run { " (dry run)" } else { "" };
    let mut failures = 0;
    for (file, spec) in specs {
        match client.apply_job(spec.to_proto(), dry_run).await {
            Ok(applied) => {
                let word = match applied.outcome {
                    pb::ApplyOutcome::Created => "created".to_owned(),
                    pb::ApplyOutcome::Updated => format!("configured (generation {})", applied.job.generation),
                    pb::ApplyOutcome::Unchanged | pb::ApplyOutcome::Unspecified => "unchanged".to_owned(),
                };
                println!("job/{} {word}{suffix}", applied.job.name);
            }
            Err(rota_client::Error::InvalidArgument { violations, .. }) if !violations.is_empty() => {
                failures += 1;
                eprintln!("error: {}: job/{}: invalid job spec:", file.display(), spec.name);
                for v in violations {
                    eprintln!("  {}: {}", v.field, v.description);
                }
            }
            Err(e) => {
                failures += 1;
                eprintln!("error: {}: job/{}: {e}", file.display(), spec.name);
            }
        }
    }
    if failures > 0 {
        anyhow::bail!("{failures} spec(s) not applied");
    }
    Ok(())
}
