//! Following a run: its output until it ends (`run logs -f`), and its state
//! until it ends (`run wait`), through server restarts and elections.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use rota_client::{Client, Consistency, Error, proto as pb};

use crate::output;

/// Exit code of a wait that gave up (`--for`), as `timeout(1)` uses.
pub const GAVE_UP: u8 = 124;

/// How long a follower keeps trying when the cluster does not answer.
const PATIENCE: Duration = Duration::from_secs(120);

/// Why following stopped early.
#[derive(Debug, thiserror::Error)]
pub enum Stopped {
    /// `--for` ran out.
    #[error("run {id} is still {state} after {waited}")]
    GaveUp {
        /// The run.
        id: String,
        /// Its state then.
        state: &'static str,
        /// How long was waited.
        waited: String,
    },
}

/// Whether a run has ended.
pub fn is_terminal(run: &pb::Run) -> bool {
    !matches!(
        run.state(),
        pb::RunState::Pending | pb::RunState::Assigned | pb::RunState::Running | pb::RunState::Unspecified
    )
}

/// The exit code a run ended with: 0 if it succeeded, its task's exit code
/// if it failed with one, else 1.
pub fn run_exit_code(run: &pb::Run) -> u8 {
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
pub fn ended(run: &pb::Run) -> ExitCode {
    let code = run_exit_code(run);
    let word = output::state_word(run.state);
    match (code, run.reason.is_empty()) {
        (0, _) | (_, true) => eprintln!("run/{} {word}", run.id),
        (_, false) => eprintln!("run/{} {word}: {}", run.id, run.reason),
    }
    ExitCode::from(code)
}

/// Errors worth waiting out: no leader, no server, no answer in time.
fn transient(error: &Error) -> bool {
    matches!(
        error,
        Error::Unavailable(_) | Error::Unreachable { .. } | Error::DeadlineExceeded(_) | Error::OutcomeUnknown(_)
    )
}

/// Reads run `id`, waiting out transient errors (with a warning) for up to
/// [`PATIENCE`] in a row.
async fn read_run(client: &Client, id: &str) -> Result<pb::Run, Error> {
    let mut failing_since: Option<Instant> = None;
    loop {
        match client.get_run(id, Consistency::Linearizable).await {
            Ok(run) => return Ok(run),
            Err(e) if transient(&e) && failing_since.is_none_or(|t| t.elapsed() < PATIENCE) => {
                eprintln!("warning: {e}; trying again");
                failing_since.get_or_insert_with(Instant::now);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Polls a run until it ends; on a terminal, shows each change of state
/// on stderr. Gives up ([`Stopped::GaveUp`]) after `max_wait`.
pub async fn wait_for_end(
    client: &Client,
    id: &str,
    max_wait: Option<Duration>,
    progress: bool,
) -> anyhow::Result<pb::Run> {
    let show = progress && std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut last = String::new();
    loop {
        let run = read_run(client, id).await?;
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
            return Err(Stopped::GaveUp {
                id: id.to_owned(),
                state: output::state_word(run.state),
                waited: humantime::format_duration(limit).to_string(),
            }
            .into());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Writes a run's output to stdout; with `follow`, until the run ends,
/// resuming after the last chunk when a stream breaks (a server restarts,
/// a leader changes) while the run goes on.
pub async fn print_logs(client: &Client, id: &str, follow: bool) -> anyhow::Result<()> {
    let mut next_seq = 0;
    let mut failing_since: Option<Instant> = None;
    loop {
        let broken = match client.logs(id, follow, next_seq).await {
            Ok(mut stream) => loop {
                match stream.message().await {
                    Ok(Some(chunk)) => {
                        let mut stdout = std::io::stdout().lock();
                        stdout.write_all(&chunk.data)?;
                        stdout.flush()?;
                        next_seq = chunk.seq + 1;
                        failing_since = None;
                    }
                    Ok(None) => return Ok(()),
                    Err(status) => break Error::from(status),
                }
            },
            Err(e) => e,
        };
        let lasting = matches!(
            broken,
            Error::NotFound(_) | Error::InvalidArgument { .. } | Error::FailedPrecondition(_)
        );
        if !follow || lasting || failing_since.is_some_and(|t| t.elapsed() >= PATIENCE) {
            return Err(broken.into());
        }
        eprintln!("warning: the log stream broke ({broken}); resuming");
        failing_since.get_or_insert_with(Instant::now);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
