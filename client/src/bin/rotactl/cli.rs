//! `rotactl`'s command line: every command, flag and example (clap).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use rota_client::proto as pb;

use crate::output::Format;

/// Control a rota cluster: apply job specs, run jobs and follow their runs,
/// drain workers, inspect and change cluster membership.
#[derive(Debug, Parser)]
#[command(name = "rotactl", version, after_help = EXAMPLES)]
pub struct Cli {
    /// Servers to talk to, comma-separated host:port (any members of the
    /// cluster). Default: the current context's, else 127.0.0.1:7400.
    #[arg(long, env = "ROTA_SERVERS", value_delimiter = ',', global = true)]
    pub servers: Vec<String>,
    /// Use this context of the config file instead of its current one.
    #[arg(long, env = "ROTACTL_CONTEXT", global = true)]
    pub context: Option<String>,
    /// The config file (default: $XDG_CONFIG_HOME/rota/config.yaml, i.e.
    /// ~/.config/rota/config.yaml).
    #[arg(long, env = "ROTACTL_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Output format of read commands.
    #[arg(short = 'o', long, value_enum, global = true, default_value = "table")]
    pub output: Format,
    /// Deadline of each request attempt, e.g. 5s (default: the context's, else 15s).
    #[arg(long, global = true, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Read whatever the answering server has (faster, may lag; works without a leader).
    #[arg(long, global = true)]
    pub stale: bool,
    /// File holding the API token (the ROTA_TOKEN variable may hold the
    /// token itself). Default: the context's token-file.
    #[arg(long, env = "ROTA_TOKEN_FILE", global = true)]
    pub token_file: Option<PathBuf>,
    /// The cluster's CA certificate, to use mutual TLS (with --tls-cert and
    /// --tls-key). Default: the context's.
    #[arg(long, env = "ROTA_TLS_CA", global = true, requires_all = ["tls_cert", "tls_key"])]
    pub tls_ca: Option<PathBuf>,
    /// A client certificate of the cluster's CA (rotactl tls init: client.pem).
    #[arg(long, env = "ROTA_TLS_CERT", global = true, requires = "tls_ca")]
    pub tls_cert: Option<PathBuf>,
    /// Its private key (client-key.pem).
    #[arg(long, env = "ROTA_TLS_KEY", global = true, requires = "tls_ca")]
    pub tls_key: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
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
with the run's code (124: `run wait --for` gave up). Servers come from
--servers, the context named by --context (or ROTACTL_CONTEXT),
ROTA_SERVERS, the config file's current context, or 127.0.0.1:7400.
Colour only on a terminal; NO_COLOR turns it off.";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or update jobs from spec files (YAML, JSON or TOML), like
    /// kubectl apply, showing what changes.
    #[command(after_help = APPLY_EXAMPLES)]
    Apply(ApplyArgs),
    /// Job definitions: list, get, explain, run, suspend, resume, delete.
    #[command(subcommand)]
    Job(JobCommand),
    /// Runs of jobs: list, inspect, wait for, cancel, read logs.
    #[command(subcommand)]
    Run(RunCommand),
    /// Workers: list, drain, undrain.
    #[command(subcommand)]
    Worker(WorkerCommand),
    /// Cluster status and membership.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Named contexts (clusters) in the config file.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// API tokens: create, list, revoke (admin).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Certificates for mutual TLS.
    #[command(subcommand)]
    Tls(TlsCommand),
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
pub struct ApplyArgs {
    /// A spec file, or a directory of them.
    #[arg(short = 'f', long = "filename")]
    pub path: PathBuf,
    /// Validate and show what would change, without changing anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Delete every job of the cluster that the files do not define (the
    /// files are the whole truth). Nothing is pruned if any spec fails.
    #[arg(long)]
    pub prune: bool,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
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
        /// Its servers, host:port (space- or comma-separated).
        #[arg(id = "context_servers", value_name = "HOST:PORT", required = true)]
        servers: Vec<String>,
        /// Deadline of each request attempt with this context, e.g. 5s.
        #[arg(long, value_parser = parse_duration)]
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
pub enum WorkerCommand {
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
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
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
pub enum RunCommand {
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
        /// Only runs created within this long, e.g. 1h, 24h, 7d.
        #[arg(long, value_parser = parse_duration)]
        since: Option<Duration>,
        /// At most this many runs (1 to 100000).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        limit: u32,
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
    /// task's exit code if it failed with one, else 1; 124 if --for ran out).
    #[command(after_help = "Examples:\n  rotactl run wait RUN_ID\n  rotactl run wait RUN_ID --for 30m && echo built")]
    Wait {
        /// Run id.
        id: String,
        /// Give up (exit 124) after this long, e.g. 30m; default: no limit.
        #[arg(long = "for", value_parser = parse_duration)]
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

/// A duration such as `30s`, `5m`, `1h30m`, `7d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("{text:?} is not a duration ({e}); e.g. 30s, 5m, 1h30m, 24h, 7d"))
}

fn parse_instant(text: &str) -> Result<std::time::SystemTime, String> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(std::time::SystemTime::from)
        .map_err(|e| {
            format!("{text:?} is not an RFC 3339 instant ({e}); e.g. 2027-03-28T03:00:00+02:00 or 2027-03-28T01:00:00Z")
        })
}

fn parse_param(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{text:?} is not KEY=VALUE"))
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
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
    /// Backups of the whole cluster state.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a token; its secret is printed once, on stdout.
    #[command(
        after_help = "Examples:\n  rotactl token create ci-pipeline --role operator > ci.token\n  rotactl token create dashboard --role viewer --ttl 90d"
    )]
    Create {
        /// What it is for (a-z 0-9 . _ -).
        name: String,
        /// admin, operator, viewer or worker.
        #[arg(long)]
        role: TokenRoleArg,
        /// How long it works (e.g. 90d); default: until revoked.
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<Duration>,
    },
    /// Every token (never their secrets), revoked ones included.
    List,
    /// Revoke a token at once.
    #[command(after_help = "Example:\n  rotactl token revoke 3f9a1c0b2d4e")]
    Revoke {
        /// Its id (rotactl token list).
        id: String,
    },
}

/// A token role on the command line.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum TokenRoleArg {
    Admin,
    Operator,
    Viewer,
    Worker,
}

impl From<TokenRoleArg> for pb::TokenRole {
    fn from(role: TokenRoleArg) -> Self {
        match role {
            TokenRoleArg::Admin => pb::TokenRole::Admin,
            TokenRoleArg::Operator => pb::TokenRole::Operator,
            TokenRoleArg::Viewer => pb::TokenRole::Viewer,
            TokenRoleArg::Worker => pb::TokenRole::Worker,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum TlsCommand {
    /// Make a CA, a certificate per role (server, worker, client) and a
    /// bootstrap admin token for a new cluster. Needs no running cluster.
    #[command(
        after_help = "Example:\n  rotactl tls init --dir /etc/rota/tls --host rota-1.example.com --host 10.0.0.1"
    )]
    Init {
        /// Where to write the files (created; existing files are never overwritten).
        #[arg(long)]
        dir: PathBuf,
        /// More names or addresses for the server certificate (it always
        /// names server.rota, localhost and 127.0.0.1).
        #[arg(long = "host")]
        hosts: Vec<String>,
        /// How long the certificates are valid.
        #[arg(long, value_parser = parse_duration, default_value = "365d")]
        valid_for: Duration,
    },
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Save a backup: the leader snapshots everything it applied (jobs, runs
    /// with their logs, workers) into FILE. Start a new cluster from it with
    /// `rota-server --restore-from FILE --initial-cluster ...` on every
    /// founding member.
    #[command(
        after_help = "Example:\n  rotactl cluster snapshot save /var/backups/rota/$(date +%F).rota\n\n  # then, for each server of the new cluster (same file, empty data dirs):\n  rota-server --node-id 1 --listen 10.0.1.1:7400 --data-dir /var/lib/rota \\\n      --initial-cluster 1=10.0.1.1:7400,2=10.0.1.2:7400,3=10.0.1.3:7400 \\\n      --restore-from /var/backups/rota/2026-11-29.rota"
    )]
    Save {
        /// Where to write the backup (replaced atomically).
        file: std::path::PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum JobCommand {
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
        /// How many fire times (1 to 1000).
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
        count: u32,
        /// Fire times after this instant (RFC 3339, e.g.
        /// 2027-03-27T00:00:00Z) instead of now.
        #[arg(long, value_parser = parse_instant)]
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
        #[arg(long)]
        wait: bool,
        /// Print the run's output until it ends, and exit with its code.
        #[arg(short, long)]
        follow: bool,
    },
}
