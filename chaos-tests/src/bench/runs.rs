//! What the run scenarios share: a watcher that records when each run was
//! first seen committed, assigned and finished (through `WatchRuns`, so a
//! time is when the change was applied and visible, not when it was
//! proposed), exec workers, and job specs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use rota_client::{Client, proto as pb};

use crate::{Cluster, WorkerSettings};

/// What the watcher saw of one run.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Its job.
    pub job: String,
    /// When it was first seen (committed).
    pub created: SystemTime,
    /// When it was first seen assigned, running or finished.
    pub assigned: Option<SystemTime>,
    /// When it was first seen finished, and how.
    pub finished: Option<(SystemTime, pb::RunState)>,
    /// Its slot (scheduled runs).
    pub nominal: Option<SystemTime>,
    /// The leader's clock when it created the run.
    pub created_at: Option<SystemTime>,
}

/// Records every run change of the cluster from the moment it starts.
pub struct RunWatch {
    seen: Arc<Mutex<HashMap<String, Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

/// A protobuf timestamp as a `SystemTime` (`None` if unset or before 1970).
pub(super) fn time(timestamp: &Option<prost_types::Timestamp>) -> Option<SystemTime> {
    let t = timestamp.as_ref()?;
    Some(SystemTime::UNIX_EPOCH + Duration::new(u64::try_from(t.seconds).ok()?, u32::try_from(t.nanos).ok()?))
}

fn record(seen: &Mutex<HashMap<String, Seen>>, run: pb::Run) {
    let now = SystemTime::now();
    let state = run.state();
    let Ok(mut seen) = seen.lock() else { return };
    let entry = seen.entry(run.id.clone()).or_insert_with(|| Seen {
        job: run.job.clone(),
        created: now,
        assigned: None,
        finished: None,
        nominal: time(&run.nominal_time),
        created_at: time(&run.created_at),
    });
    if !matches!(state, pb::RunState::Pending | pb::RunState::Unspecified) && entry.assigned.is_none() {
        entry.assigned = Some(now);
    }
    if run.finished_at.is_some() && entry.finished.is_none() {
        entry.finished = Some((now, state));
    }
}

impl RunWatch {
    /// Starts watching every run through `client`; reconnects (with the
    /// runs as they are) if the stream breaks, e.g. when a server dies.
    pub async fn start(client: &Client) -> anyhow::Result<RunWatch> {
        let seen = Arc::new(Mutex::new(HashMap::new()));
        let mut stream = client.watch_runs("", false).await?;
        let (client, recorded) = (client.clone(), seen.clone());
        let task = tokio::spawn(async move {
            loop {
                while let Some(Ok(change)) = stream.next().await {
                    if let Some(run) = change.run {
                        record(&recorded, run);
                    }
                }
                stream = loop {
                    match client.watch_runs("", true).await {
                        Ok(stream) => break stream,
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                };
            }
        });
        Ok(RunWatch { seen, task })
    }

    /// A copy of what was seen so far.
    pub fn seen(&self) -> HashMap<String, Seen> {
        self.seen.lock().map(|seen| seen.clone()).unwrap_or_default()
    }

    /// How many runs match `check`.
    pub fn count(&self, check: impl Fn(&Seen) -> bool) -> usize {
        self.seen
            .lock()
            .map(|seen| seen.values().filter(|s| check(s)).count())
            .unwrap_or(0)
    }

    /// Waits (checking every 5 ms) until run `id` is seen finished.
    pub async fn wait_finished(&self, id: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let finished = self
                .seen
                .lock()
                .map(|seen| seen.get(id).is_some_and(|s| s.finished.is_some()))
                .unwrap_or(false);
            if finished {
                return Ok(());
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "run {id} not finished after {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits (checking every 20 ms) until `check` holds for `want` runs;
    /// fails after `timeout` with how many it saw.
    pub async fn wait_until(
        &self,
        what: &str,
        want: usize,
        timeout: Duration,
        check: impl Fn(&Seen) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let have = self.count(&check);
            if have >= want {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!("{what}: {have} of {want} after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for RunWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A 3-server cluster with metrics endpoints, and a client of its leader.
pub async fn leader_cluster() -> anyhow::Result<(Cluster, Client)> {
    let cluster = Cluster::start(
        3,
        crate::ServerSettings {
            http: true,
            ..crate::ServerSettings::default()
        },
    )
    .await?;
    let leader = cluster.wait_for_leader(Duration::from_secs(30)).await?;
    let client = cluster.client_for(leader)?;
    Ok((cluster, client))
}

/// Starts `count` exec workers named `PREFIX-N` with `slots` each.
pub fn start_exec_workers(cluster: &mut Cluster, prefix: &str, count: usize, slots: u32) -> anyhow::Result<()> {
    for n in 1..=count {
        let mut settings = WorkerSettings::new(&format!("{prefix}-{n}"), "exec");
        settings.slots = slots;
        cluster.start_worker(settings)?;
    }
    Ok(())
}

/// Waits until `count` workers are alive.
pub async fn wait_for_workers(client: &Client, count: usize) -> anyhow::Result<()> {
    crate::wait_for(
        &format!("{count} workers to register"),
        Duration::from_secs(60),
        || async {
            let workers = client
                .list_workers(rota_client::Consistency::Linearizable)
                .await
                .map_err(|e| e.to_string())?;
            let alive = workers.iter().filter(|w| w.state == "alive").count();
            Ok((alive >= count).then_some(()))
        },
    )
    .await
}

/// A job `name` running `true` through the exec driver, any number at once,
/// keeping up to `keep` succeeded runs; scheduled by `schedule` if given.
pub fn true_job(name: &str, schedule: Option<pb::Schedule>, keep: u32) -> pb::JobSpec {
    pb::JobSpec {
        name: name.to_owned(),
        schedule,
        concurrency: pb::Concurrency::Allow as i32,
        task: Some(pb::Task {
            driver: pb::Driver::Exec as i32,
            command: vec!["true".to_owned()],
            ..Default::default()
        }),
        history: Some(pb::HistoryPolicy {
            keep_succeeded: Some(keep),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Milliseconds between two instants (negative if `to` is before `from`).
pub fn millis_between(from: SystemTime, to: SystemTime) -> f64 {
    match to.duration_since(from) {
        Ok(d) => d.as_secs_f64() * 1000.0,
        Err(e) => -e.duration().as_secs_f64() * 1000.0,
    }
}

/// Creates `specs` with `clients` concurrent callers; fails on the first error.
pub async fn create_jobs(client: &Client, specs: Vec<pb::JobSpec>, clients: usize) -> anyhow::Result<()> {
    let queue = Arc::new(Mutex::new(specs));
    let mut tasks = Vec::new();
    for _ in 0..clients.max(1) {
        let (client, queue) = (client.clone(), queue.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let next = queue.lock().ok().and_then(|mut q| q.pop());
                let Some(spec) = next else { return anyhow::Ok(()) };
                client.create_job(spec).await?;
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}
