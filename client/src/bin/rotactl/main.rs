//! `rotactl`: the command-line client of rota, built on the `rota_client` SDK.
//!
//! Exit codes: 0 success; 1 the command failed; 2 the command line is
//! wrong; `run wait` and `job run --wait` exit with the run's own code (0
//! when it succeeded, the task's exit code when it failed with one, 1 for
//! any other end).

mod config;
mod output;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, CommandFactory, Parser, Subcommand};
use output::{Format, JobView, print_members, print_statuses};
use rota_client::{Client, ClientOptions, Consistency, SpecFile, proto as pb};

/// Control a rota cluster: apply job specs, run jobs and follow their runs,
/// drain workers, inspect and change cluster membership.
#[derive(Debug, Parser)]
#[command(name = "rotactl", version, after_help = EXAMPLES)]
struct Cli {
    /// Servers to talk to, comma-separated host:port (any members of the
    /// cluster). Default: the current context's, else 127.0.0.1:7400.
    #[arg(long, env = "ROTA_SERVERS", value_delimiter = ',', global = true)]
    servers: Vec<String>,
    /// Use this context of the config file instead of its current one.
    #[arg(long, env = "ROTACTL_CONTEXT", global = true)]
    context: Option<String>,
    /// The config file (default: $XDG_CONFIG_HOME/rota/config.yaml, i.e.
    /// ~/.config/rota/config.yaml).
    #[arg(long, env = "ROTACTL_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Output format of read commands.
    #[arg(short = 'o', long, value_enum, global = true, default_value = "table")]
    output: Format,
    /// Deadline of each request attempt, e.g. 5s (default: the context's, else 15s).
    #[arg(long, global = true, value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,
    /// Read whatever the answering server has (faster, may lag; works without a leader).
    #[arg(long, global = true)]
    stale: bool,
    #[command(subcommand)]
    command: Command,
}

const EXAMPLES: &str = "\
Examples:
  rotactl --servers 127.0.0.1:7401,127.0.0.1:7402 cluster status
  rotactl config set-context local 127.0.0.1:7401 127.0.0.1:7402 --use
  rotactl apply -f examples/
  rotactl job explain nightly-build
  rotactl job run nightly-build --param BRANCH=main --wait
  rotactl run list --job nightly-build --state failed --since 24h
  rotactl run logs RUN_ID --follow
  rotactl worker drain build-1 --deadline 30m

Exit codes: 0 ok, 1 error, 2 usage; `run wait` and `job run --wait` exit
with the run's code. Servers come from --servers, ROTA_SERVERS, the
context (--context, ROTACTL_CONTEXT, or the config file's current one), or
127.0.0.1:7400. Colour only on a terminal; NO_COLOR turns it off.";

#[derive(Debug, Subcommand)]
enum Command {
    /// Create or update jobs from spec files (YAML, JSON or TOML), like
    /// kubectl apply, showing what changes.
    #[command(after_help = APPLY_EXAMPLES)]
    Apply(ApplyArgs),
    /// Job definitions: list, get, explain, run, suspend, delete.
    #[command(subcommand)]
    Job(JobCommand),
    /// Runs of jobs: list, inspect, wait for, cancel, read logs.
    #[command(subcommand)]
    Run(RunCommand),
    /// Workers: list, drain.
    #[command(subcommand)]
    Worker(WorkerCommand),
    /// Cluster status and membership.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Named contexts (clusters) in the config file.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print a shell completion script.
    #[command(after_help = "\
Examples:
  rotactl completion bash > /etc/bash_completion.d/rotactl
  rotactl completion zsh > \"${fpath[1]}/_rotactl\"
  rotactl completion fish > ~/.config/fish/completions/rotactl.fish")]
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

const APPLY_EXAMPLES: &str = "\
Examples:
  rotactl apply -f examples/nightly-build.yaml
  rotactl apply -f jobs/ --dry-run          # show what would change
  rotactl apply -f jobs/ --prune            # and delete jobs not in jobs/";

#[derive(Debug, Args)]
struct ApplyArgs {
    /// A spec file, or a directory of them.
    #[arg(short = 'f', long = "filename")]
    path: PathBuf,
    /// Validate and show what would change, without changing anything.
    #[arg(long)]
    dry_run: bool,
    /// Delete every job of the cluster that the files do not define (the
    /// files are the whole truth). Nothing is pruned if any spec fails.
    #[arg(long)]
    prune: bool,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Show the config file and where it is.
    #[command(after_help = "Examples:\n  rotactl config view\n  rotactl --config ./ci-rota.yaml config view -o json")]
    View,
    /// List the contexts; * marks the current one.
    #[command(after_help = "Example:\n  rotactl config get-contexts")]
    GetContexts,
    /// Print the current context's name.
    #[command(after_help = "Example:\n  rotactl config current-context")]
    CurrentContext,
    /// Make a context the current one.
    #[command(after_help = "Example:\n  rotactl config use-context prod")]
    UseContext {
        /// Context name.
        name: String,
    },
    /// Create or replace a context.
    #[command(after_help = "\
Examples:
  rotactl config set-context prod rota-1:7400 rota-2:7400 rota-3:7400 --use
  rotactl config set-context local 127.0.0.1:7401 --request-timeout 5s")]
    SetContext {
        /// Context name.
        name: String,
        /// Its servers, host:port.
        #[arg(required = true)]
        servers: Vec<String>,
        /// Deadline of each request attempt with this context, e.g. 5s.
        #[arg(long, value_parser = humantime::parse_duration)]
        request_timeout: Option<Duration>,
        /// Also make it the current context.
        #[arg(long = "use")]
        make_current: bool,
    },
    /// Remove a context.
    #[command(after_help = "Example:\n  rotactl config delete-context staging")]
    DeleteContext {
        /// Context name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum WorkerCommand {
    /// List workers, alive and lost.
    #[command(
        after_help = "Examples:\n  rotactl worker list\n  rotactl worker list --watch\n  rotactl worker list -o json"
    )]
    List {
        /// Keep printing workers as they change.
        #[arg(short, long)]
        watch: bool,
    },
    /// Drain a worker: it gets no new runs; what it still runs after the
    /// deadline is stopped and handed back to run elsewhere (without using
    /// up a retry).
    #[command(
        after_help = "Examples:\n  rotactl worker drain build-1 --deadline 30m\n  rotactl worker drain build-1 --deadline 0s   # hand back now"
    )]
    Drain {
        /// Worker id.
        id: String,
        /// How long its runs may still finish, e.g. 30m (0s: hand back now).
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        deadline: Duration,
    },
    /// End a worker's drain: it takes new runs again.
    #[command(after_help = "Example:\n  rotactl worker undrain build-1")]
    Undrain {
        /// Worker id.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum RunCommand {
    /// List runs, newest first.
    #[command(after_help = "\
Examples:
  rotactl run list --job nightly-build
  rotactl run list --state failed --state timed_out --since 24h
  rotactl run list --watch")]
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
        /// Keep printing runs as they change.
        #[arg(short, long)]
        watch: bool,
    },
    /// Show one run with its attempts.
    #[command(after_help = "Examples:\n  rotactl run get RUN_ID\n  rotactl run get RUN_ID -o yaml")]
    Get {
        /// Run id.
        id: String,
    },
    /// Wait until a run ends; exit with its code (0 if it succeeded, the
    /// task's exit code if it failed with one, else 1).
    #[command(after_help = "Examples:\n  rotactl run wait RUN_ID\n  rotactl run wait RUN_ID --for 30m && echo built")]
    Wait {
        /// Run id.
        id: String,
        /// Give up (exit 1) after this long, e.g. 30m; default: no limit.
        #[arg(long = "for", value_parser = humantime::parse_duration)]
        max_wait: Option<Duration>,
    },
    /// Cancel a run (its running attempt is stopped: SIGTERM, then SIGKILL).
    #[command(after_help = "Example:\n  rotactl run cancel RUN_ID")]
    Cancel {
        /// Run id.
        id: String,
    },
    /// Print a run's output.
    #[command(
        after_help = "Examples:\n  rotactl run logs RUN_ID\n  rotactl run logs RUN_ID --follow   # until the run ends"
    )]
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
    #[command(after_help = "Example:\n  rotactl --servers 127.0.0.1:7401,127.0.0.1:7402,127.0.0.1:7403 cluster status")]
    Status,
    /// Members of the cluster.
    #[command(after_help = "Example:\n  rotactl cluster members -o json")]
    Members,
    /// Add a running server (started without --initial-cluster) to the cluster.
    #[command(after_help = "Example:\n  rotactl cluster add-node 4 10.0.0.4:7400")]
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
    #[command(after_help = "Example:\n  rotactl cluster remove-node 3")]
    RemoveNode {
        /// Its node id.
        node_id: u64,
    },
    /// Move leadership to another voter.
    #[command(
        after_help = "Examples:\n  rotactl cluster transfer-leader      # to the most caught-up voter\n  rotactl cluster transfer-leader 2"
    )]
    TransferLeader {
        /// The voter to lead; default: the most caught-up other voter.
        node_id: Option<u64>,
    },
}

#[derive(Debug, Subcommand)]
enum JobCommand {
    /// Same as `rotactl apply`.
    #[command(after_help = APPLY_EXAMPLES)]
    Apply(ApplyArgs),
    /// Show one job.
    #[command(
        after_help = "Examples:\n  rotactl job get nightly-build\n  rotactl job get nightly-build -o yaml > nightly-build.yaml   # edit, then apply"
    )]
    Get {
        /// Job name.
        name: String,
    },
    /// List jobs.
    #[command(after_help = "Examples:\n  rotactl job list\n  rotactl job list -o json\n  rotactl job list --watch")]
    List {
        /// Keep printing jobs as they change.
        #[arg(short, long)]
        watch: bool,
    },
    /// The next fire times of a job's schedule, in its zone and in UTC, with
    /// notes where daylight saving time moves a slot.
    #[command(after_help = "\
Examples:
  rotactl job explain nightly-build
  rotactl job explain -f examples/nightly-build.yaml --count 30   # before applying
  rotactl job explain nightly-build --after 2027-03-27T00:00:00Z --count 3   # across a DST change")]
    Explain {
        /// Job name (or give -f).
        #[arg(required_unless_present = "file", conflicts_with = "file")]
        name: Option<String>,
        /// A spec file (or directory) to explain without applying it.
        #[arg(short = 'f', long = "filename")]
        file: Option<PathBuf>,
        /// How many fire times (at most 1000).
        #[arg(long, default_value_t = 10)]
        count: u32,
        /// Fire times after this instant (RFC 3339, e.g.
        /// 2027-03-27T00:00:00Z) instead of now.
        #[arg(long, value_parser = humantime::parse_rfc3339_weak)]
        after: Option<std::time::SystemTime>,
    },
    /// Delete a job.
    #[command(after_help = "Example:\n  rotactl job delete nightly-build")]
    Delete {
        /// Job name.
        name: String,
    },
    /// Stop a job's schedule from firing (its definition stays).
    #[command(after_help = "Example:\n  rotactl job suspend nightly-build")]
    Suspend {
        /// Job name.
        name: String,
    },
    /// Let a suspended job's schedule fire again.
    #[command(after_help = "Example:\n  rotactl job resume nightly-build")]
    Resume {
        /// Job name.
        name: String,
    },
    /// Run a job now.
    #[command(after_help = "\
Examples:
  rotactl job run nightly-build
  rotactl job run nightly-build --param BRANCH=release-1.4 --wait
  rotactl job run hello-container --follow
  rotactl job run deploy --request-id deploy-2026-11-28   # at most once")]
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
        /// Wait until the run ends and exit with its code.
        #[arg(short, long)]
        wait: bool,
        /// Print the run's output until it ends, and exit with its code.
        #[arg(short, long)]
        follow: bool,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    quiet_panics();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!(
                "{} {e:#}",
                output::paint("error:", output::Color::Red, std::io::stderr().is_terminal())
            );
            if let Some(hint) = e.downcast_ref::<Failure>().map(|f| f.hint.clone()) {
                eprintln!("hint: {hint}");
            }
            ExitCode::FAILURE
        }
    }
}

/// A closed stdout (`rotactl run list | head`) ends the program quietly,
/// with the status a shell shows for SIGPIPE, as other Unix tools do; any
/// other panic prints one line, not a backtrace.
fn quiet_panics() {
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("unknown");
        if message.contains("Broken pipe") || message.contains("BrokenPipe") {
            std::process::exit(141);
        }
        let location = info.location().map(|l| format!(" at {l}")).unwrap_or_default();
        eprintln!("error: rotactl failed unexpectedly ({message}{location}); please report this");
    }));
}

/// An error with a hint on what to do about it.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
struct Failure {
    error: rota_client::Error,
    hint: String,
}

/// Where the servers came from, for the hint when none answers.
fn unreachable_hint(source: &str) -> String {
    format!(
        "the servers were {source}; is the cluster running there? Give its addresses with \
         --servers HOST:PORT,... (or ROTA_SERVERS), or pick a context with --context NAME \
         (rotactl config get-contexts)"
    )
}

/// What a command needs to talk to the cluster.
struct Session {
    client: Client,
    format: Format,
    consistency: Consistency,
    servers_from: String,
}

impl Session {
    /// Adds a hint to errors that need one.
    fn explain(&self, error: rota_client::Error) -> anyhow::Error {
        match error {
            rota_client::Error::Unreachable { .. } => Failure {
                error,
                hint: unreachable_hint(&self.servers_from),
            }
            .into(),
            error => error.into(),
        }
    }
}

fn config_path(cli: &Cli) -> anyhow::Result<PathBuf> {
    cli.config
        .clone()
        .or_else(config::default_path)
        .ok_or_else(|| anyhow::anyhow!("no config file: set HOME or XDG_CONFIG_HOME, or give --config PATH"))
}

async fn run(mut cli: Cli) -> anyhow::Result<ExitCode> {
    let path = config_path(&cli);
    cli.command = match cli.command {
        Command::Completion { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "rotactl", &mut std::io::stdout());
            return Ok(ExitCode::SUCCESS);
        }
        Command::Config(command) => {
            config_command(&path?, command, cli.output)?;
            return Ok(ExitCode::SUCCESS);
        }
        command => command,
    };
    // Servers: the flag (or ROTA_SERVERS), the context, the default.
    let config = match path {
        Ok(path) => config::Config::load(&path)?,
        Err(_) if cli.context.is_none() => config::Config::default(),
        Err(e) => return Err(e),
    };
    let context = config.context(cli.context.as_deref())?;
    let (servers, servers_from) = if !cli.servers.is_empty() {
        (cli.servers.clone(), "given with --servers or ROTA_SERVERS".to_owned())
    } else if let Some((name, context)) = context {
        (context.servers.clone(), format!("those of context {name:?}"))
    } else {
        (
            vec![rota_client::DEFAULT_ENDPOINT.to_owned()],
            format!("the default ({}), as none were given", rota_client::DEFAULT_ENDPOINT),
        )
    };
    let timeout = cli
        .timeout
        .or_else(|| context.and_then(|(_, c)| c.timeout))
        .unwrap_or(Duration::from_secs(15));
    let options = ClientOptions {
        timeout,
        ..Default::default()
    };
    let session = Session {
        client: Client::with_options(&servers, options)?,
        format: cli.output,
        consistency: if cli.stale {
            Consistency::Stale
        } else {
            Consistency::Linearizable
        },
        servers_from,
    };
    let outcome = match cli.command {
        Command::Apply(args) | Command::Job(JobCommand::Apply(args)) => apply(&session, &args).await,
        Command::Job(command) => job(&session, command).await,
        Command::Run(command) => run_command(&session, command).await,
        Command::Worker(command) => worker(&session, command).await.map(|()| ExitCode::SUCCESS),
        Command::Cluster(command) => cluster(&session, command).await.map(|()| ExitCode::SUCCESS),
        Command::Config(_) | Command::Completion { .. } => unreachable!("handled above"),
    };
    outcome.map_err(|e| match e.downcast::<rota_client::Error>() {
        Ok(error) => session.explain(error),
        Err(e) => e,
    })
}

fn config_command(path: &std::path::Path, command: ConfigCommand, format: Format) -> anyhow::Result<()> {
    let mut config = config::Config::load(path)?;
    match command {
        ConfigCommand::View => {
            eprintln!("# {}", path.display());
            output::print_config(&config, format)?;
        }
        ConfigCommand::GetContexts => output::print_contexts(&config, format)?,
        ConfigCommand::CurrentContext => match &config.current_context {
            Some(name) => println!("{name}"),
            None => anyhow::bail!(
                "no current context in {}; set one with `rotactl config use-context NAME`",
                path.display()
            ),
        },
        ConfigCommand::UseContext { name } => {
            if !config.contexts.contains_key(&name) {
                anyhow::bail!("no context {name:?} in {}; defined: {}", path.display(), config.names());
            }
            config.current_context = Some(name.clone());
            config.save(path)?;
            println!("context {name} is current");
        }
        ConfigCommand::SetContext {
            name,
            servers,
            request_timeout,
            make_current,
        } => {
            let servers: Vec<String> = servers
                .iter()
                .flat_map(|s| s.split(','))
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            // The same check the client makes, now rather than at first use.
            Client::connect(&servers)?;
            let existed = config
                .contexts
                .insert(
                    name.clone(),
                    config::Context {
                        servers,
                        timeout: request_timeout,
                    },
                )
                .is_some();
            if make_current || config.current_context.is_none() {
                config.current_context = Some(name.clone());
            }
            config.save(path)?;
            let current = if config.current_context.as_deref() == Some(&name) {
                " (current)"
            } else {
                ""
            };
            println!(
                "context {name} {}{current}",
                if existed { "replaced" } else { "created" }
            );
        }
        ConfigCommand::DeleteContext { name } => {
            if config.contexts.remove(&name).is_none() {
                anyhow::bail!("no context {name:?} in {}; defined: {}", path.display(), config.names());
            }
            if config.current_context.as_deref() == Some(&name) {
                config.current_context = None;
            }
            config.save(path)?;
            println!("context {name} deleted");
        }
    }
    Ok(())
}

async fn worker(session: &Session, command: WorkerCommand) -> anyhow::Result<()> {
    let client = &session.client;
    match command {
        WorkerCommand::List { watch } => {
            let fetch = || client.list_workers(session.consistency);
            output::list(fetch, session.format, watch).await
        }
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

async fn cluster(session: &Session, command: ClusterCommand) -> anyhow::Result<()> {
    let (client, format) = (&session.client, session.format);
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
            let members = client.members(session.consistency).await?;
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

async fn job(session: &Session, command: JobCommand) -> anyhow::Result<ExitCode> {
    let (client, format, consistency) = (&session.client, session.format, session.consistency);
    match command {
        JobCommand::Apply(args) => return apply(session, &args).await,
        JobCommand::Get { name } => {
            let job = client.get_job(&name, consistency).await?;
            output::print_job(&JobView::from(&job), format)?;
        }
        JobCommand::List { watch } => {
            let fetch = || client.list_jobs(consistency);
            output::list(fetch, format, watch).await?;
        }
        JobCommand::Explain {
            name,
            file,
            count,
            after,
        } => {
            use pb::explain_schedule_request::Source;
            let sources: Vec<(String, Source)> = match (name, file) {
                (Some(name), _) => vec![(name.clone(), Source::Job(name))],
                (None, Some(path)) => SpecFile::load(&path)?
                    .into_iter()
                    .map(|(_, spec)| (spec.name.clone(), Source::Spec(spec.to_proto())))
                    .collect(),
                (None, None) => unreachable!("clap requires a name or -f"),
            };
            let mut explained = Vec::new();
            for (name, source) in sources {
                explained.push((name, client.explain_schedule(source, count, after, consistency).await?));
            }
            output::print_explained(&explained, format)?;
        }
        JobCommand::Delete { name } => {
            client.delete_job(&name).await?;
            println!("job/{name} deleted");
        }
        JobCommand::Suspend { name } => {
            client.suspend_job(&name).await?;
            println!("job/{name} suspended");
        }
        JobCommand::Resume { name } => {
            client.resume_job(&name).await?;
            println!("job/{name} resumed");
        }
        JobCommand::Run {
            name,
            params,
            force,
            request_id,
            wait,
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
            if !wait && !follow {
                println!("run/{} {}{note}", run.id, output::state_word(run.state));
                return Ok(ExitCode::SUCCESS);
            }
            eprintln!("run/{} {}{note}", run.id, output::state_word(run.state));
            if follow {
                print_logs(client, &run.id, true).await?;
            }
            let run = wait_for_end(client, &run.id, None, !follow).await?;
            return Ok(ended(&run));
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn run_command(session: &Session, command: RunCommand) -> anyhow::Result<ExitCode> {
    let (client, format, consistency) = (&session.client, session.format, session.consistency);
    match command {
        RunCommand::List {
            job,
            states,
            since,
            limit,
            watch,
        } => {
            let filter = move || {
                let since = since.map(|d| {
                    let at = std::time::SystemTime::now() - d;
                    let secs = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
                    prost_types::Timestamp {
                        seconds: i64::try_from(secs.as_secs()).unwrap_or(i64::MAX),
                        nanos: 0,
                    }
                });
                pb::ListRunsRequest {
                    job: job.clone().unwrap_or_default(),
                    states: states.iter().map(|s| *s as i32).collect(),
                    since,
                    page_size: u32::try_from(limit.min(1000)).unwrap_or(1000),
                    consistency: match consistency {
                        Consistency::Linearizable => pb::ReadConsistency::Linearizable as i32,
                        Consistency::Stale => pb::ReadConsistency::Stale as i32,
                    },
                    ..Default::default()
                }
            };
            let fetch = || async { client.list_runs_page(&filter()).await.map(|(runs, _)| runs) };
            output::list(fetch, format, watch).await?;
        }
        RunCommand::Get { id } => {
            let run = client.get_run(&id, consistency).await?;
            output::print_run(&run, format)?;
        }
        RunCommand::Wait { id, max_wait } => {
            let run = wait_for_end(client, &id, max_wait, true).await?;
            return Ok(ended(&run));
        }
        RunCommand::Cancel { id } => {
            let run = client.cancel_run(&id).await?;
            println!("run/{} {}", run.id, output::state_word(run.state));
        }
        RunCommand::Logs { id, follow } => print_logs(client, &id, follow).await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether a run has ended.
fn is_terminal(run: &pb::Run) -> bool {
    !matches!(
        run.state(),
        pb::RunState::Pending | pb::RunState::Assigned | pb::RunState::Running | pb::RunState::Unspecified
    )
}

/// The exit code a run ended with: 0 if it succeeded, its task's exit code
/// if it failed with one, else 1.
fn run_exit_code(run: &pb::Run) -> u8 {
    match run.state() {
        pb::RunState::Succeeded => 0,
        pb::RunState::Failed => run
            .attempts
            .last()
            .and_then(|a| a.exit_code)
            .and_then(|code| u8::try_from(code).ok())
            .filter(|&code| code != 0)
            .unwrap_or(1),
        _ => 1,
    }
}

/// Says how a run ended (on stderr) and gives its exit code.
fn ended(run: &pb::Run) -> ExitCode {
    let code = run_exit_code(run);
    let word = output::state_word(run.state);
    match (code, run.reason.is_empty()) {
        (0, _) | (_, true) => eprintln!("run/{} {word}", run.id),
        (_, false) => eprintln!("run/{} {word}: {}", run.id, run.reason),
    }
    ExitCode::from(code)
}

/// Polls a run until it ends; on a terminal, shows each change of state
/// on stderr.
async fn wait_for_end(
    client: &Client,
    id: &str,
    max_wait: Option<Duration>,
    progress: bool,
) -> anyhow::Result<pb::Run> {
    let show = progress && std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut last = String::new();
    loop {
        let run = client.get_run(id, Consistency::Linearizable).await?;
        if show {
            let now = output::progress_line(&run);
            if now != last {
                eprintln!("{:>6}s  {now}", started.elapsed().as_secs());
                last = now;
            }
        }
        if is_terminal(&run) {
            return Ok(run);
        }
        if let Some(limit) = max_wait
            && started.elapsed() >= limit
        {
            anyhow::bail!(
                "run {id} is still {} after {}",
                output::state_word(run.state),
                humantime::format_duration(limit)
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
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

async fn apply(session: &Session, args: &ApplyArgs) -> anyhow::Result<ExitCode> {
    let client = &session.client;
    let specs = SpecFile::load(&args.path)?;
    let mut seen: std::collections::HashMap<String, PathBuf> = std::collections::HashMap::new();
    for (file, spec) in &specs {
        if let Some(first) = seen.insert(spec.name.clone(), file.clone()) {
            anyhow::bail!(
                "job {:?} is defined twice, in {} and in {}; nothing was applied",
                spec.name,
                first.display(),
                file.display()
            );
        }
    }
    let suffix = if args.dry_run { " (dry run)" } else { "" };
    let color = std::io::stdout().is_terminal();
    let mut failures = 0;
    for (file, spec) in &specs {
        match client.apply_job(spec.to_proto(), args.dry_run).await {
            Ok(applied) => {
                let word = match applied.outcome {
                    pb::ApplyOutcome::Created => "created".to_owned(),
                    pb::ApplyOutcome::Updated => format!("configured (generation {})", applied.job.generation),
                    pb::ApplyOutcome::Unchanged | pb::ApplyOutcome::Unspecified => "unchanged".to_owned(),
                };
                println!("job/{} {word}{suffix}", applied.job.name);
                if let (pb::ApplyOutcome::Updated, Some(previous)) = (applied.outcome, &applied.previous) {
                    print!("{}", output::spec_diff(previous, &applied.job, color));
                }
            }
            Err(rota_client::Error::InvalidArgument { violations, .. }) if !violations.is_empty() => {
                failures += 1;
                eprintln!("error: {}: job/{}: invalid job spec:", file.display(), spec.name);
                for v in violations {
                    eprintln!("  {}: {}", v.field, v.description);
                }
            }
            Err(e @ rota_client::Error::Unreachable { .. }) => return Err(session.explain(e)),
            Err(e) => {
                failures += 1;
                eprintln!("error: {}: job/{}: {e}", file.display(), spec.name);
            }
        }
    }
    if failures > 0 {
        let pruning = if args.prune { "; nothing was pruned" } else { "" };
        anyhow::bail!("{failures} spec(s) not applied{pruning}");
    }
    if args.prune {
        for job in client.list_jobs(Consistency::Linearizable).await? {
            if seen.contains_key(&job.name) {
                continue;
            }
            if !args.dry_run {
                client.delete_job(&job.name).await?;
            }
            println!("job/{} pruned{suffix}", job.name);
        }
    }
    Ok(ExitCode::SUCCESS)
}
