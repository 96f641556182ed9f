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
  rotactl cluster add-node 4 127.0.0.1:7404
  rotactl worker drain build-1 --deadline 30m";

#[derive(Debug, Subcommand)]
enum Command {
    /// Cluster status and membership.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Job definitions.
    #[command(subcommand)]
    Job(JobCommand),
    /// Runs of jobs: list, inspect, cancel, read logs.
    #[command(subcommand)]
    Run(RunCommand),
    /// Workers: list, drain.
    #[command(subcommand)]
    Worker(WorkerCommand),
}

#[derive(Debug, Subcommand)]
enum WorkerCommand {
    /// List workers, alive and lost.
    List,
    /// Drain a worker: it gets no new runs; what it still runs after the
    /// deadline is stopped and handed back to run elsewhere (without using
    /// up a retry).
    Drain {
        /// Worker id.
        id: String,
        /// How long its runs may still finish, e.g. 30m (0s: hand back now).
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        deadline: Duration,
    },
    /// End a worker's drain: it takes new runs again.
    Undrain {
        /// Worker id.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum RunCommand {
    /// List runs, newest first.
    List {
        /// Only runs of this job.
        #[arg(long)]
        job: Option<String>,
        /// Only runs in this state (repeatable): pending, assigned, running,
        /// succeeded, failed, timed_out, cancelled, lost, skipped, missed.
        #[arg(long = "state", value_parser = parse_state)]
        states: Vec<pb::RunState>,
        /// Only runs created within this long, e.g. 1h.
        #[arg(long, value_parser = humantime::parse_duration)]
        since: Option<Duration>,
        /// At most this many runs.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Show one run with its attempts.
    Get {
        /// Run id.
        id: String,
    },
    /// Cancel a run (its running attempt is stopped: SIGTERM, then SIGKILL).
    Cancel {
        /// Run id.
        id: String,
    },
    /// Print a run's output.
    Logs {
        /// Run id.
        id: String,
        /// Keep printing new output until the run ends.
        #[arg(short, long)]
        follow: bool,
    },
}

fn parse_state(text: &str) -> Result<pb::RunState, String> {
    let name = format!("RUN_STATE_{}", text.to_ascii_uppercase().replace('-', "_"));
    pb::RunState::from_str_name(&name).ok_or_else(|| {
        format!("{text:?} is not a run state; accepted: pending, assigned, running, succeeded, failed, timed_out, cancelled, lost, skipped, missed")
    })
}

fn parse_param(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{text:?} is not KEY=VALUE"))
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
    /// Run a job now.
    Run {
        /// Job name.
        name: String,
        /// A parameter for the task's environment (repeatable).
        #[arg(long = "param", value_parser = parse_param)]
        params: Vec<(String, String)>,
        /// Run even if the job's concurrency policy would refuse.
        #[arg(long)]
        force: bool,
        /// Idempotency key: repeating the command with the same id returns
        /// the same run instead of starting another.
        #[arg(long)]
        request_id: Option<String>,
        /// Follow the run's output until it ends; exit 1 unless it succeeded.
        #[arg(short, long)]
        follow: bool,
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
        Command::Run(command) => run_command(&client, command, cli.output, consistency).await,
        Command::Worker(command) => worker(&client, command, cli.output, consistency).await,
    }
}

async fn worker(
    client: &Client,
    command: WorkerCommand,
    format: Format,
    consistency: Consistency,
) -> anyhow::Result<()> {
    match command {
        WorkerCommand::List => output::print_workers(&client.list_workers(consistency).await?, format),
        WorkerCommand::Drain { id, deadline } => {
            let worker = client.drain_worker(&id, Some(deadline), false).await?;
            println!(
                "worker/{} draining: {} running, handed back after {}",
                worker.id,
                worker.running,
                humantime::format_duration(deadline)
            );
            Ok(())
        }
        WorkerCommand::Undrain { id } => {
            let worker = client.drain_worker(&id, None, true).await?;
            println!("worker/{} takes new runs again", worker.id);
            Ok(())
        }
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
        JobCommand::Run {
            name,
            params,
            force,
            request_id,
            follow,
        } => {
            let (run, existing) = client
                .trigger_run(&name, request_id.as_deref(), params.into_iter().collect(), force)
                .await?;
            let note = if existing {
                " (already triggered with this request id)"
            } else {
                ""
            };
            if !follow {
                println!("run/{} {}{note}", run.id, output::state_word(run.state));
                return Ok(());
            }
            eprintln!("run/{} {}{note}", run.id, output::state_word(run.state));
            print_logs(client, &run.id, true).await?;
            let run = client.get_run(&run.id, Consistency::Linearizable).await?;
            eprintln!("run/{} {}", run.id, output::state_word(run.state));
            if run.state() != pb::RunState::Succeeded {
                anyhow::bail!("run {} ended {}: {}", run.id, output::state_word(run.state), run.reason);
            }
            Ok(())
        }
    }
}

async fn run_command(
    client: &Client,
    command: RunCommand,
    format: Format,
    consistency: Consistency,
) -> anyhow::Result<()> {
    match command {
        RunCommand::List {
            job,
            states,
            since,
            limit,
        } => {
            let since = since.map(|d| {
                let at = std::time::SystemTime::now() - d;
                let secs = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
                prost_types::Timestamp {
                    seconds: i64::try_from(secs.as_secs()).unwrap_or(i64::MAX),
                    nanos: 0,
                }
            });
            let filter = pb::ListRunsRequest {
                job: job.unwrap_or_default(),
                states: states.into_iter().map(|s| s as i32).collect(),
                since,
                page_size: u32::try_from(limit.min(1000)).unwrap_or(1000),
                consistency: match consistency {
                    Consistency::Linearizable => pb::ReadConsistency::Linearizable as i32,
                    Consistency::Stale => pb::ReadConsistency::Stale as i32,
                },
                ..Default::default()
            };
            let (runs, _) = client.list_runs_page(&filter).await?;
            output::print_runs(&runs, format)
        }
        RunCommand::Get { id } => {
            let run = client.get_run(&id, consistency).await?;
            output::print_run(&run, format)
        }
        RunCommand::Cancel { id } => {
            let run = client.cancel_run(&id).await?;
            println!("run/{} {}", run.id, output::state_word(run.state));
            Ok(())
        }
        RunCommand::Logs { id, follow } => print_logs(client, &id, follow).await,
    }
}

/// Writes a run's output to stdout (following it until the run ends).
async fn print_logs(client: &Client, id: &str, follow: bool) -> anyhow::Result<()> {
    use std::io::Write;
    let mut stream = client.logs(id, follow, 0).await?;
    let mut stdout = std::io::stdout().lock();
    while let Some(chunk) = stream.message().await.map_err(rota_client::Error::from)? {
        stdout.write_all(&chunk.data)?;
        stdout.flush()?;
    }
    Ok(())
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
