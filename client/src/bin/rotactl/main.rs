//! `rotactl`: the command-line client of rota, built on the `rota_client` SDK.
//!
//! Exit codes: 0 success; 1 the command failed; 2 the command line is
//! wrong; `run wait` and `job run --wait` exit with the run's own code (0
//! when it succeeded, the task's exit code when it failed with one, 1 for
//! any other end); 124 when `run wait --for` gave up; 141 when stdout was
//! closed (docs/rotactl.md).

mod apply;
mod cli;
mod config;
mod follow;
mod listing;
mod output;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches};
use cli::{
    Cli, ClusterCommand, Command, ConfigCommand, JobCommand, RunCommand, SnapshotCommand, TlsCommand, TokenCommand,
    WorkerCommand,
};
use output::{Format, JobView, print_members, print_statuses};
use rota_client::{Client, ClientOptions, Consistency, SpecFile, proto as pb};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    quiet_panics();
    let matches = Cli::command().get_matches();
    // `--servers` on the command line outranks a context; ROTA_SERVERS
    // from the environment does not outrank an explicit --context.
    let servers_flag = matches.value_source("servers") == Some(clap::parser::ValueSource::CommandLine);
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    match run(cli, servers_flag).await {
        Ok(code) => code,
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            // Whoever read our output stopped reading (`| head`).
            ExitCode::from(141)
        }
        Err(e) => {
            eprintln!(
                "{} {e:#}",
                output::paint("error:", output::Color::Red, std::io::stderr().is_terminal())
            );
            if e.downcast_ref::<follow::Stopped>().is_some() {
                return ExitCode::from(follow::GAVE_UP);
            }
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
#[error("{message}")]
struct Failure {
    message: String,
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
pub struct Session {
    pub client: Client,
    format: Format,
    consistency: Consistency,
    servers_from: String,
}

impl Session {
    /// Adds a hint to errors that need one.
    pub fn explain(&self, error: rota_client::Error) -> anyhow::Error {
        let text = error.to_string();
        match error {
            rota_client::Error::Unreachable { .. } => Failure {
                message: text,
                hint: unreachable_hint(&self.servers_from),
            }
            .into(),
            // Something answered, but not in gRPC: another service on the port.
            rota_client::Error::Other { .. }
                if ["h2 protocol error", "grpc-status header missing", "http2 error"]
                    .iter()
                    .any(|sign| text.contains(sign)) =>
            {
                Failure {
                    message: text,
                    hint: format!(
                        "the servers were {}; something answered there, but not as a rota server \
                         would: a wrong port (give the servers' gRPC addresses with --servers \
                         HOST:PORT,...), or a cluster with TLS (give --tls-ca, --tls-cert, --tls-key)",
                        self.servers_from
                    ),
                }
                .into()
            }
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

async fn run(mut cli: Cli, servers_flag: bool) -> anyhow::Result<ExitCode> {
    let path = config_path(&cli);
    let tls = tls_flags(&cli);
    cli.command = match cli.command {
        Command::Completion { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "rotactl", &mut std::io::stdout());
            return Ok(ExitCode::SUCCESS);
        }
        Command::Config(command) => {
            config_command(&path?, command, cli.output, cli.token_file.clone(), tls)?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Tls(TlsCommand::Init { dir, hosts, valid_for }) => {
            tls_init(&dir, &hosts, valid_for)?;
            return Ok(ExitCode::SUCCESS);
        }
        command => command,
    };
    // Servers: the --servers flag; the context named by --context (or
    // ROTACTL_CONTEXT); ROTA_SERVERS; the current context; the default.
    let config = match path {
        Ok(path) => config::Config::load(&path)?,
        Err(_) if cli.context.is_none() => config::Config::default(),
        Err(e) => return Err(e),
    };
    let named = cli.context.is_some();
    let from_env = !cli.servers.is_empty() && !servers_flag;
    let context = if servers_flag || (from_env && !named) {
        None
    } else {
        config.context(cli.context.as_deref())?
    };
    let (servers, servers_from) = match context {
        _ if servers_flag => (cli.servers.clone(), "given with --servers".to_owned()),
        Some((name, context)) => (context.servers.clone(), format!("those of context {name:?}")),
        None if from_env => (cli.servers.clone(), "given by ROTA_SERVERS".to_owned()),
        None => (
            vec![rota_client::DEFAULT_ENDPOINT.to_owned()],
            format!("the default ({}), as none were given", rota_client::DEFAULT_ENDPOINT),
        ),
    };
    let timeout = cli
        .timeout
        .or_else(|| context.and_then(|(_, c)| c.timeout))
        .unwrap_or(Duration::from_secs(15));
    let token_file = cli
        .token_file
        .clone()
        .or_else(|| context.and_then(|(_, c)| c.token_file.clone()));
    let token = match (token_file, std::env::var("ROTA_TOKEN")) {
        (Some(file), _) => Some(read_token(&file)?),
        (None, Ok(token)) if !token.trim().is_empty() => Some(token.trim().to_owned()),
        (None, _) => None,
    };
    let tls = tls.or_else(|| context.and_then(|(_, c)| c.tls.clone()));
    let options = ClientOptions {
        timeout,
        token,
        tls,
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
        Command::Apply(args) => apply::apply(&session, &args).await,
        Command::Job(command) => job(&session, command).await,
        Command::Run(command) => run_command(&session, command).await,
        Command::Worker(command) => worker(&session, command).await.map(|()| ExitCode::SUCCESS),
        Command::Cluster(command) => cluster(&session, command).await.map(|()| ExitCode::SUCCESS),
        Command::Token(command) => token_command(&session, command).await.map(|()| ExitCode::SUCCESS),
        Command::Config(_) | Command::Completion { .. } | Command::Tls(_) => unreachable!("handled above"),
    };
    outcome.map_err(|e| match e.downcast::<rota_client::Error>() {
        Ok(error) => session.explain(error),
        Err(e) => e,
    })
}

/// The TLS files given as flags, if any.
fn tls_flags(cli: &Cli) -> Option<rota_client::TlsFiles> {
    match (&cli.tls_ca, &cli.tls_cert, &cli.tls_key) {
        (Some(ca), Some(cert), Some(key)) => Some(rota_client::TlsFiles {
            ca_file: ca.clone(),
            cert_file: cert.clone(),
            key_file: key.clone(),
        }),
        _ => None,
    }
}

/// The token in `file` (one word; surrounding whitespace ignored).
fn read_token(file: &std::path::Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(file).map_err(|e| anyhow::anyhow!("--token-file {}: {e}", file.display()))?;
    let token = text.trim();
    if token.is_empty() || token.contains(char::is_whitespace) {
        anyhow::bail!("--token-file {}: expected the token alone on one line", file.display());
    }
    Ok(token.to_owned())
}

fn tls_init(dir: &std::path::Path, hosts: &[String], valid_for: Duration) -> anyhow::Result<()> {
    let secret =
        rota_client::token::new_secret().map_err(|_| anyhow::anyhow!("no randomness for the bootstrap token"))?;
    let files = rota_client::certs::init_cluster(dir, hosts, valid_for, &secret)?;
    println!("wrote to {}:", dir.display());
    println!("  ca.pem, ca-key.pem            the cluster's CA (keep ca-key.pem offline)");
    for (role, files) in &files.roles {
        println!(
            "  {:<29} {role}s: [tls] ca_file, cert_file, key_file",
            format!(
                "{}, {}",
                files
                    .cert_file
                    .file_name()
                    .map(|n| n.to_string_lossy())
                    .unwrap_or_default(),
                files
                    .key_file
                    .file_name()
                    .map(|n| n.to_string_lossy())
                    .unwrap_or_default()
            )
        );
    }
    println!("  bootstrap.token               an admin token: every server's auth.bootstrap_token_file");
    println!(
        "  worker.token                  the workers' token: servers' auth.worker_token_file, workers' token_file"
    );
    println!("  secrets.key                   seals secret_env values: every server's secrets.key_file");
    println!(
        "valid for {}; the server certificate names server.rota, localhost, 127.0.0.1{}",
        humantime::format_duration(valid_for),
        hosts.iter().map(|h| format!(", {h}")).collect::<String>()
    );
    Ok(())
}

async fn token_command(session: &Session, command: TokenCommand) -> anyhow::Result<()> {
    let client = &session.client;
    match command {
        TokenCommand::Create { name, role, ttl } => {
            let created = client.create_token(&name, role.into(), ttl).await?;
            let token = created.token.unwrap_or_default();
            eprintln!(
                "token {} ({name}) created; its secret is printed below, once — store it now",
                token.id
            );
            println!("{}", created.secret);
        }
        TokenCommand::List => output::print_tokens(&client.list_tokens().await?, session.format)?,
        TokenCommand::Revoke { id } => {
            let token = client.revoke_token(&id).await?;
            println!("token {} ({}) revoked", token.id, token.name);
        }
    }
    Ok(())
}

fn config_command(
    path: &std::path::Path,
    command: ConfigCommand,
    format: Format,
    token_file: Option<PathBuf>,
    tls: Option<rota_client::TlsFiles>,
) -> anyhow::Result<()> {
    let mut config = config::Config::load(path)?;
    match command {
        ConfigCommand::View => {
            eprintln!("# {}", path.display());
            output::print_config(&config, format)?;
        }
        ConfigCommand::GetContexts => output::print_contexts(&config, format)?,
        ConfigCommand::CurrentContext => match &config.current_context {
            Some(name) if format == Format::Table => println!("{name}"),
            Some(name) => output::print_structured(name, format)?,
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
                        // The security flags given with set-context are kept.
                        token_file,
                        tls,
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
            let was_current = config.current_context.as_deref() == Some(&name);
            if was_current {
                config.current_context = None;
            }
            config.save(path)?;
            println!("context {name} deleted");
            if was_current {
                eprintln!(
                    "warning: it was the current context; there is none now (defined: {}); \
                     pick one with `rotactl config use-context NAME`",
                    config.names()
                );
            }
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
                return Err(Failure {
                    message: format!("{unreachable} of {} servers did not answer", rows.len()),
                    hint: unreachable_hint(&session.servers_from),
                }
                .into());
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
        ClusterCommand::Snapshot(SnapshotCommand::Save { file }) => {
            let backup = client.save_snapshot().await?;
            let tmp = file.with_extension("partial");
            std::fs::write(&tmp, &backup.data)
                .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
                .and_then(|()| std::fs::rename(&tmp, &file))
                .map_err(|e| anyhow::anyhow!("writing {}: {e}", file.display()))?;
            println!(
                "saved {} ({} bytes, log index {}, term {})",
                file.display(),
                backup.data.len(),
                backup.last_index,
                backup.last_term
            );
        }
    }
    Ok(())
}

async fn job(session: &Session, command: JobCommand) -> anyhow::Result<ExitCode> {
    let (client, format, consistency) = (&session.client, session.format, session.consistency);
    match command {
        JobCommand::Apply(args) => return apply::apply(session, &args).await,
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
            let mut note = if existing {
                " (already triggered with this request id)".to_owned()
            } else {
                String::new()
            };
            if !run.waiting.is_empty() {
                note.push_str(&format!("; waiting: {}", run.waiting));
            }
            if !wait && !follow {
                if format == Format::Table {
                    println!("run/{} {}{note}", run.id, output::state_word(run.state));
                } else {
                    output::print_run(&run, format)?;
                }
                return Ok(ExitCode::SUCCESS);
            }
            eprintln!("run/{} {}{note}", run.id, output::state_word(run.state));
            if follow {
                follow::print_logs(client, &run.id, true).await?;
            }
            let run = follow::wait_for_end(client, &run.id, None, !follow).await?;
            return Ok(follow::ended(&run));
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
            let filter = move || -> anyhow::Result<pb::ListRunsRequest> {
                let since = match since {
                    None => None,
                    Some(d) => {
                        let at = std::time::SystemTime::now()
                            .checked_sub(d)
                            .filter(|at| *at >= std::time::UNIX_EPOCH)
                            .ok_or_else(|| {
                                anyhow::anyhow!("--since {}: reaches before 1970", humantime::format_duration(d))
                            })?;
                        Some(prost_types::Timestamp::from(at))
                    }
                };
                Ok(pb::ListRunsRequest {
                    job: job.clone().unwrap_or_default(),
                    states: states.iter().map(|s| *s as i32).collect(),
                    since,
                    page_size: limit.min(1000),
                    consistency: consistency.to_proto(),
                    ..Default::default()
                })
            };
            let first = filter()?;
            let fetch = || async {
                let mut request = filter().unwrap_or_else(|_| first.clone());
                let mut runs = Vec::new();
                loop {
                    let (page, next) = client.list_runs_page(&request).await?;
                    runs.extend(page);
                    if next.is_empty() || runs.len() >= limit as usize {
                        runs.truncate(limit as usize);
                        return Ok(runs);
                    }
                    request.page_token = next;
                }
            };
            output::list(fetch, format, watch).await?;
        }
        RunCommand::Get { id } => {
            let run = client.get_run(&id, consistency).await?;
            output::print_run(&run, format)?;
        }
        RunCommand::Wait { id, max_wait } => {
            let run = follow::wait_for_end(client, &id, max_wait, true).await?;
            return Ok(follow::ended(&run));
        }
        RunCommand::Cancel { id } => {
            let run = client.cancel_run(&id).await?;
            println!("run/{} {}", run.id, output::state_word(run.state));
        }
        RunCommand::Logs { id, follow } => follow::print_logs(client, &id, follow).await?,
    }
    Ok(ExitCode::SUCCESS)
}
