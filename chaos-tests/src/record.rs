//! Recording a scenario for the [oracle](crate::oracle): every client write
//! with its outcome as it happens, the container lives the Docker engine
//! reports, and — once the faults are healed — what the cluster and each
//! server hold.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rota_client::{Client, Consistency, Error, proto as pb};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::oracle::{ClientOp, ContainerLife, History, Op, Outcome, ServerView, nanos};
use crate::{Cluster, wait_for};

/// Nanoseconds since the epoch, now.
pub fn now_nanos() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i128::try_from(d.as_nanos()).unwrap_or(i128::MAX))
}

/// How a call's result counts for the oracle: acknowledged, refused (the
/// cluster said no and did nothing), or unknown (anything else: a write
/// whose answer did not come may have happened).
pub fn outcome<T>(result: &Result<T, Error>) -> Outcome {
    match result {
        Ok(_) => Outcome::Ok,
        Err(
            Error::InvalidArgument { .. }
            | Error::NotFound(_)
            | Error::AlreadyExists(_)
            | Error::FailedPrecondition(_)
            | Error::InvalidEndpoint { .. },
        ) => Outcome::Failed,
        Err(_) => Outcome::Unknown,
    }
}

/// Client writes with their outcomes, shared by the scenario's tasks.
#[derive(Clone, Default)]
pub struct Recorder {
    ops: Arc<Mutex<Vec<ClientOp>>>,
}

impl Recorder {
    fn push(&self, op: Op, outcome: Outcome) {
        self.ops
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(ClientOp { op, outcome });
    }

    /// Applies `spec` through `client`, recorded as a create.
    pub async fn apply_job(&self, client: &Client, spec: pb::JobSpec) -> Result<pb::Job, Error> {
        let name = spec.name.clone();
        let result = client.apply_job(spec, false).await.map(|applied| applied.job);
        let generation = result.as_ref().ok().map(|job| job.generation);
        self.push(Op::CreateJob { name, generation }, outcome(&result));
        result
    }

    /// Deletes job `name` through `client`.
    pub async fn delete_job(&self, client: &Client, name: &str) -> Result<pb::Job, Error> {
        let result = client.delete_job(name).await;
        self.push(Op::DeleteJob { name: name.to_owned() }, outcome(&result));
        result
    }

    /// Triggers `job` with `request_id` through `client`.
    pub async fn trigger(&self, client: &Client, job: &str, request_id: &str) -> Result<pb::Run, Error> {
        let result = client
            .trigger_run(job, Some(request_id), Default::default(), false)
            .await
            .map(|(run, _)| run);
        let op = Op::Trigger {
            job: job.to_owned(),
            request_id: request_id.to_owned(),
            run: result.as_ref().ok().map(|run| run.id.clone()),
        };
        self.push(op, outcome(&result));
        result
    }

    /// Sends every trigger whose outcome was unknown again, with its request
    /// id, through `client` — what a client does once the cluster answers
    /// again. A trigger the cluster acted on although its answer was lost
    /// must come back as the same run (G6), never as a second one.
    pub async fn retry_unknown_triggers(&self, client: &Client) {
        for op in self.ops() {
            if let (Op::Trigger { job, request_id, .. }, Outcome::Unknown) = (&op.op, op.outcome) {
                let _ = self.trigger(client, job, request_id).await;
            }
        }
    }

    /// What was recorded so far.
    pub fn ops(&self) -> Vec<ClientOp> {
        self.ops.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// The Docker engine's container events with rota labels, from when it was
/// started: `docker events` as a child process.
pub struct ContainerWatch {
    /// By container id.
    lives: Arc<Mutex<BTreeMap<String, ContainerLife>>>,
    _child: tokio::process::Child,
}

impl ContainerWatch {
    /// Starts listening.
    pub fn start() -> anyhow::Result<ContainerWatch> {
        let mut child = tokio::process::Command::new("docker")
            .args([
                "events",
                "--filter",
                "type=container",
                "--filter",
                "label=rota.run",
                "--format",
                "{{json .}}",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("docker events has no stdout"))?;
        let lives: Arc<Mutex<BTreeMap<String, ContainerLife>>> = Arc::default();
        let sink = lives.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                let attributes = &event["Actor"]["Attributes"];
                let (Some(id), Some(run), Some(epoch), Some(at)) = (
                    event["Actor"]["ID"].as_str(),
                    attributes["rota.run"].as_str(),
                    attributes["rota.epoch"].as_str().and_then(|e| e.parse::<u64>().ok()),
                    event["timeNano"].as_i64(),
                ) else {
                    continue;
                };
                let job = attributes["rota.job"].as_str().unwrap_or_default().to_owned();
                let mut lives = sink.lock().unwrap_or_else(PoisonError::into_inner);
                match event["Action"].as_str() {
                    Some("start") => {
                        lives.insert(
                            id.to_owned(),
                            ContainerLife {
                                id: id.to_owned(),
                                run: run.to_owned(),
                                epoch,
                                job,
                                started: i128::from(at),
                                stopped: None,
                            },
                        );
                    }
                    Some("die") => {
                        if let Some(life) = lives.get_mut(id) {
                            life.stopped = Some(i128::from(at));
                        }
                    }
                    _ => {}
                }
            }
        });
        Ok(ContainerWatch { lives, _child: child })
    }

    /// The lives seen so far.
    pub fn lives(&self) -> Vec<ContainerLife> {
        self.lives
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }
}

/// What a scenario tells the collector about itself.
#[derive(Default)]
pub struct Expectations {
    /// Jobs whose every slot in `(from, until]` (unix nanoseconds) must have
    /// exactly one record.
    pub slots: Vec<(String, i128, i128)>,
    /// Jobs with `concurrency: forbid`.
    pub forbid: BTreeSet<String>,
    /// Workers killed for good, and when.
    pub dead_workers: BTreeMap<String, i128>,
    /// Workers whose containers must all be gone.
    pub workers: Vec<String>,
    /// The worker lease plus the cluster's grace.
    pub lease_and_grace: Duration,
}

/// Every run, newest first, through `client`.
async fn all_runs(client: &Client, consistency: Consistency) -> Result<Vec<pb::Run>, Error> {
    client
        .list_runs(&pb::ListRunsRequest {
            page_size: 1000,
            consistency: consistency.to_proto(),
            ..Default::default()
        })
        .await
}

/// What server `id` holds, read from it alone.
async fn server_view(cluster: &Cluster, id: u64) -> anyhow::Result<ServerView> {
    let client = cluster.client_for(id)?;
    let jobs = client
        .list_jobs(Consistency::Stale)
        .await?
        .into_iter()
        .map(|job| (job.name, job.generation))
        .collect();
    let runs = all_runs(&client, Consistency::Stale)
        .await?
        .into_iter()
        .map(|run| (run.id, (run.state, run.attempts.len())))
        .collect();
    Ok(ServerView { jobs, runs })
}

/// Reads the history once every fault is healed: the cluster's jobs, runs
/// and logs, each server's view (once they agree, or after a minute — the
/// oracle reports what still differs), the expected slots (the cluster's own
/// schedule math, `ExplainSchedule`), containers.
pub async fn collect(
    cluster: &Cluster,
    recorder: &Recorder,
    containers: Option<&ContainerWatch>,
    expect: Expectations,
) -> anyhow::Result<History> {
    let client = cluster.client()?;
    let ids: Vec<u64> = cluster.running_ids();
    let mut servers = BTreeMap::new();
    let converged = wait_for("the servers to converge", Duration::from_secs(60), || async {
        let mut views = BTreeMap::new();
        for &id in &ids {
            views.insert(id, server_view(cluster, id).await.map_err(|e| e.to_string())?);
        }
        let first = views.values().next().cloned();
        Ok(views.values().all(|v| Some(v) == first.as_ref()).then_some(views))
    })
    .await;
    match converged {
        Ok(views) => servers = views,
        Err(_) => {
            for &id in &ids {
                if let Ok(view) = server_view(cluster, id).await {
                    servers.insert(id, view);
                }
            }
        }
    }
    let jobs_at_end = client
        .list_jobs(Consistency::Linearizable)
        .await?
        .into_iter()
        .map(|job| (job.name, job.generation))
        .collect();
    let runs = all_runs(&client, Consistency::Linearizable).await?;
    let mut logs = BTreeMap::new();
    for run in runs.iter().filter(|r| r.finished_at.is_some()) {
        let mut stream = client.logs(&run.id, false, 0).await?;
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.message().await? {
            bytes.extend_from_slice(&chunk.data);
        }
        logs.insert(run.id.clone(), bytes);
    }
    let mut expected_slots = BTreeMap::new();
    for (job, from, until) in &expect.slots {
        let after = UNIX_EPOCH + Duration::from_nanos(u64::try_from(*from).unwrap_or_default());
        let explained = client
            .explain_schedule(
                pb::explain_schedule_request::Source::Job(job.clone()),
                1000,
                Some(after),
                Consistency::Linearizable,
            )
            .await?;
        let slots: Vec<i128> = explained
            .fires
            .iter()
            .filter_map(|f| nanos(&f.at))
            .filter(|at| at <= until)
            .collect();
        expected_slots.insert(job.clone(), slots);
    }
    let live: BTreeSet<&str> = runs
        .iter()
        .filter(|r| r.finished_at.is_none())
        .map(|r| r.id.as_str())
        .collect();
    // Workers remove a finished attempt's container just after reporting
    // it, and strays at each reconciliation: give them a few reconcile
    // intervals (the harness sets 2 s) before calling anything left over.
    let leftovers = || -> anyhow::Result<Vec<String>> {
        let mut left = Vec::new();
        for worker in &expect.workers {
            for id in crate::docker::containers(worker, true)? {
                let run = std::process::Command::new("docker")
                    .args(["inspect", "--format", "{{index .Config.Labels \"rota.run\"}}", &id])
                    .output()?;
                let run = String::from_utf8_lossy(&run.stdout).trim().to_owned();
                if !live.contains(run.as_str()) {
                    left.push(format!("{id} (run {run}, worker {worker})"));
                }
            }
        }
        Ok(left)
    };
    let settled = wait_for("leftover containers to be removed", Duration::from_secs(15), || async {
        let left = leftovers().map_err(|e| e.to_string())?;
        Ok(left.is_empty().then_some(()))
    })
    .await;
    let leftover_containers = match settled {
        Ok(()) => Vec::new(),
        Err(_) => leftovers()?,
    };
    Ok(History {
        ops: recorder.ops(),
        jobs_at_end,
        runs,
        logs,
        servers,
        expected_slots,
        forbid: expect.forbid,
        containers: containers.map(ContainerWatch::lives).unwrap_or_default(),
        leftover_containers,
        dead_workers: expect.dead_workers,
        end: now_nanos(),
        lease_and_grace: expect.lease_and_grace,
    })
}

/// Checks `history` with the oracle; an error lists every violation, with
/// the scenario's seed so the run can be repeated.
pub fn verdict(history: &History, seed: u64) -> anyhow::Result<()> {
    let violations = crate::oracle::check(history);
    if violations.is_empty() {
        return Ok(());
    }
    let accounts: Vec<String> = violations.iter().map(ToString::to_string).collect();
    anyhow::bail!(
        "seed {seed}: {} violation(s):\n  {}",
        violations.len(),
        accounts.join("\n  ")
    )
}

/// Scenario 15, after every scenario: with every fault healed, a fresh job
/// runs end to end (on a fresh exec worker, so a scenario's own workers do
/// not matter).
pub async fn liveness(cluster: &mut Cluster) -> anyhow::Result<()> {
    let worker = "liveness-check";
    if !cluster.worker(worker).is_ok_and(|w| w.process.is_running()) {
        cluster.start_worker(crate::WorkerSettings::new(worker, "exec"))?;
    }
    let client = cluster.client()?;
    let spec =
        rota_client::SpecFile::parse_yaml("name: liveness\ntask: { driver: exec, command: [sh, -c, 'echo alive'] }\n")?;
    client.apply_job(spec[0].to_proto(), false).await?;
    let (run, _) = client.trigger_run("liveness", None, Default::default(), true).await?;
    let ended = wait_for("the liveness run to end", Duration::from_secs(90), || async {
        let run = client
            .get_run(&run.id, Consistency::Linearizable)
            .await
            .map_err(|e| e.to_string())?;
        Ok(run.finished_at.is_some().then_some(run))
    })
    .await?;
    anyhow::ensure!(
        ended.state() == pb::RunState::Succeeded,
        "after healing, a fresh job does not run: {ended:?}"
    );
    Ok(())
}
