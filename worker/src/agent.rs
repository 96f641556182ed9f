//! The agent: one task that owns the worker's state and reacts to events —
//! messages from the leader, output and exits of its tasks, and a 100 ms
//! tick for heartbeats, log batches, self-fencing and reconnecting.
//!
//! Everything slow (connecting, starting and following tasks, talking to the
//! engine) runs in tasks of its own that report back as events, so the
//! agent never waits on the network: a stuck connection cannot delay the
//! fencing that keeps `forbid` true.
//!
//! Per attempt, the worker reports in this order: `AttemptStarted` (once it
//! runs), its output as `LogBatch`es (one in flight at a time, resumed from
//! the cluster's `next_log_offset`), and `AttemptFinished` once every byte
//! of output is acknowledged. The journal records each step, so a restarted
//! worker resumes where it stopped.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bollard::Docker;
use rota_proto::v1 as pb;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::driver::{self, Launch, Output, Stopper, TaskId};
use crate::journal::{AttemptKey, AttemptRecord, DriverKind, Exit, Journal};
use crate::logbuf::LogBuffer;
use crate::metrics::Metrics;
use crate::session::{self, Backoff, Session};

/// Output bytes pending that make a batch worth sending at once.
const BATCH_BYTES: u64 = 64 << 10;
/// Pending output is sent at least this often.
const BATCH_INTERVAL: Duration = Duration::from_millis(250);
/// Most output bytes in one batch.
const BATCH_MAX: usize = 256 << 10;
/// Largest chunk the cluster accepts.
const CHUNK_MAX: usize = 256 << 10;
/// The agent's clock.
const TICK: Duration = Duration::from_millis(100);
/// At most this many events in one turn of the event loop (one journal
/// save), so a flood of output cannot hold back the reports.
const TURN_EVENTS: usize = 256;
/// How long past its shutdown deadline a connected worker waits for the
/// cluster to stop its attempts before stopping them itself.
const SHUTDOWN_SLACK: Duration = Duration::from_secs(10);

/// Something the agent reacts to.
enum Event {
    /// A task started (or was adopted).
    Running {
        key: AttemptKey,
        id: TaskId,
        stopper: Box<Stopper>,
    },
    /// Output of a task.
    Output { key: AttemptKey, output: Output },
    /// A task ended (or could not start).
    Exited { key: AttemptKey, exit: Exit },
    /// A round of connecting ended.
    Connected(Box<Result<Session, String>>),
    /// A message from the leader, or the end of session `generation`.
    Server {
        generation: u64,
        message: Box<Result<pb::ServerMessage, String>>,
    },
    /// A reconciliation pass found containers of no attempt held.
    Strays(Vec<String>),
}

/// What a message in flight was, to act on its acknowledgement.
#[derive(Debug)]
enum Pending {
    Heartbeat(Instant),
    Drain,
    Started(AttemptKey),
    Logs { key: AttemptKey, from: u64 },
    Finished(AttemptKey),
}

/// The open session.
struct Live {
    outbound: mpsc::Sender<pb::WorkerMessage>,
    pending: HashMap<u64, Pending>,
    generation: u64,
    last_heartbeat: Instant,
    server: String,
}

/// The lease the cluster granted, as last renewed.
#[derive(Debug, Clone, Copy)]
struct Lease {
    duration: Duration,
    interval: Duration,
    renewed_at: Instant,
}

impl Lease {
    fn end(&self) -> Instant {
        self.renewed_at + self.duration
    }
}

/// The lease as saved in `DATA_DIR/lease.json`, so a restarted worker knows
/// how long the tasks it adopts may still run without a renewal.
#[derive(Debug, Serialize, Deserialize)]
struct SavedLease {
    renewed_unix_ms: u64,
    lease_ms: u64,
    interval_ms: u64,
}

fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// One attempt the worker holds.
struct Attempt {
    record: AttemptRecord,
    buffer: LogBuffer,
    stopper: Option<Stopper>,
    /// The cluster no longer assigns it: stop it and forget it unreported.
    orphan: bool,
    /// A stop was asked for before the task was running (grace).
    stop_asked: Option<Duration>,
    /// Stopped by the worker itself because its lease was running out.
    fenced: bool,
    /// Assigned during shutdown: never started, waits for the cluster's stop.
    held_back: bool,
    started_in_flight: bool,
    logs_in_flight: bool,
    finished_in_flight: bool,
    last_shipped: Instant,
}

impl Attempt {
    /// An attempt of `record`, its log in `buffer`, with nothing in flight.
    fn new(record: AttemptRecord, buffer: LogBuffer) -> Self {
        Attempt {
            record,
            buffer,
            stopper: None,
            orphan: false,
            stop_asked: None,
            fenced: false,
            held_back: false,
            started_in_flight: false,
            logs_in_flight: false,
            finished_in_flight: false,
            last_shipped: Instant::now(),
        }
    }

    fn kill_grace(&self) -> Duration {
        Duration::from_millis(self.record.kill_grace_ms)
    }

    fn running(&self) -> bool {
        self.stopper.is_some() && self.record.exit.is_none()
    }

    fn note(&mut self, line: &str) {
        if let Err(e) = self
            .buffer
            .append(pb::LogStream::System, format!("rota-worker: {line}\n").as_bytes())
        {
            tracing::error!(run = %self.record.run_id, error = %e, "cannot buffer output");
        }
    }

    /// Ends an attempt with an error (it could not run, or the worker lost
    /// it), saying why in its output.
    fn end_with_error(&mut self, reason: String) {
        self.note(&reason);
        self.record.exit = Some(Exit {
            error: Some(reason),
            ..Exit::default()
        });
    }
}

/// The worker agent.
pub struct Agent {
    config: Config,
    docker: Option<Docker>,
    drivers: Vec<String>,
    journal: Journal,
    attempts: BTreeMap<AttemptKey, Attempt>,
    events_tx: mpsc::Sender<Event>,
    events: mpsc::Receiver<Event>,
    session: Option<Live>,
    generation: u64,
    connecting: bool,
    reconnect_at: Instant,
    backoff: Backoff,
    lease: Option<Lease>,
    next_seq: u64,
    /// Set on SIGTERM: the instant by which running attempts are stopped.
    shutdown: Option<Instant>,
    images: crate::images::ImageUse,
    next_reconcile: Instant,
    metrics: std::sync::Arc<Metrics>,
    /// How it reaches servers (TLS, token).
    link: session::Link,
    /// Attempts accepted in this turn of the event loop, started once the
    /// journal holds them (`settle`).
    launches: Vec<(AttemptKey, Launcher)>,
    /// Held for the agent's life: one worker per data directory.
    _lock: nix::fcntl::Flock<fs::File>,
}

impl Agent {
    /// Prepares the agent: opens the journal, connects to the engine when
    /// the docker driver is offered, and takes over (or cleans up) what a
    /// previous run of this worker left.
    pub async fn new(config: Config) -> anyhow::Result<Self> {
        let data_dir = config.data_dir().to_owned();
        fs::create_dir_all(&data_dir)?;
        let lock_file = fs::File::create(data_dir.join("lock"))?;
        let lock =
            nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
                anyhow::anyhow!(
                    "data directory {} is in use by another rota-worker ({e})",
                    data_dir.display()
                )
            })?;
        let journal = Journal::load(&data_dir)?;
        let (docker, drivers) = Self::drivers(&config).await?;
        let (events_tx, events) = mpsc::channel(1024);
        let lease = Self::load_lease(&data_dir);
        let images = crate::images::ImageUse::load(&data_dir)?;
        let metrics = std::sync::Arc::new(Metrics::new(config.slots)?);
        let tls = match &config.tls {
            Some(files) => Some(
                rota_proto::tls::Tls::load(files.clone(), rota_proto::tls::Role::Worker)
                    .map_err(|e| anyhow::anyhow!("[tls]: {e}"))?,
            ),
            None => None,
        };
        if let Some(tls) = &tls {
            tokio::spawn(tls.clone().watch(std::time::Duration::from_secs(5)));
        }
        let link = session::Link::new(tls.as_ref(), config.token()?.as_deref()).map_err(anyhow::Error::msg)?;
        let mut agent = Agent {
            config,
            docker,
            drivers,
            journal,
            attempts: BTreeMap::new(),
            events_tx,
            events,
            session: None,
            generation: 0,
            connecting: false,
            reconnect_at: Instant::now(),
            backoff: Backoff::default(),
            lease,
            next_seq: 1,
            shutdown: None,
            images,
            next_reconcile: Instant::now(),
            metrics,
            link,
            launches: Vec::new(),
            _lock: lock,
        };
        agent.recover().await?;
        Ok(agent)
    }

    /// The worker's metrics and health, for its HTTP endpoint.
    pub fn metrics(&self) -> std::sync::Arc<Metrics> {
        self.metrics.clone()
    }

    /// The drivers to offer, and the engine when docker is one of them.
    async fn drivers(config: &Config) -> anyhow::Result<(Option<Docker>, Vec<String>)> {
        let wanted: Vec<String> = if config.drivers.is_empty() {
            vec!["docker".to_owned()]
        } else {
            config.drivers.clone()
        };
        let mut docker = None;
        if wanted.iter().any(|d| d == "docker") {
            match driver::docker::connect().await {
                Ok(engine) => docker = Some(engine),
                Err(e) if config.drivers.is_empty() => anyhow::bail!(
                    "no driver available: {e}. Start the Docker engine (or set DOCKER_HOST), or offer host processes with --drivers exec"
                ),
                Err(e) => anyhow::bail!("the docker driver is configured but {e}"),
            }
        }
        Ok((docker, wanted))
    }

    fn load_lease(data_dir: &std::path::Path) -> Option<Lease> {
        let saved: SavedLease = serde_json::from_slice(&fs::read(data_dir.join("lease.json")).ok()?).ok()?;
        let now_wall = unix_ms(SystemTime::now());
        let age = Duration::from_millis(now_wall.saturating_sub(saved.renewed_unix_ms));
        Some(Lease {
            duration: Duration::from_millis(saved.lease_ms),
            interval: Duration::from_millis(saved.interval_ms),
            renewed_at: Instant::now().checked_sub(age).unwrap_or_else(Instant::now),
        })
    }

    fn save_lease(&self) {
        let Some(lease) = self.lease else { return };
        let renewed_wall = SystemTime::now() - lease.renewed_at.elapsed();
        let saved = SavedLease {
            renewed_unix_ms: unix_ms(renewed_wall),
            lease_ms: u64::try_from(lease.duration.as_millis()).unwrap_or(u64::MAX),
            interval_ms: u64::try_from(lease.interval.as_millis()).unwrap_or(u64::MAX),
        };
        // Not fsynced: it only has to survive the worker process, not the
        // host (the host's death ends its containers too).
        let path = self.config.data_dir().join("lease.json");
        let tmp = path.with_extension("json.tmp");
        let written = serde_json::to_vec(&saved)
            .map_err(std::io::Error::other)
            .and_then(|bytes| fs::write(&tmp, bytes))
            .and_then(|()| fs::rename(&tmp, &path));
        if let Err(e) = written {
            tracing::warn!(error = %e, "cannot save the lease");
        }
    }

    fn buffer_path(&self, key: &AttemptKey) -> PathBuf {
        self.config
            .data_dir()
            .join("logs")
            .join(format!("{}-{}.log", key.0, key.1))
    }

    /// Takes over what a previous run of this worker left: adopts its
    /// containers whose attempts it still holds, removes the others, and
    /// ends the attempts it cannot take over.
    async fn recover(&mut self) -> anyhow::Result<()> {
        let records: Vec<AttemptRecord> = self.journal.attempts().cloned().collect();
        let mut containers = HashMap::new();
        if let Some(docker) = &self.docker {
            for container in driver::docker::list_own(docker, self.config.id())
                .await
                .map_err(anyhow::Error::msg)?
            {
                let held = container
                    .attempt
                    .as_ref()
                    .and_then(|key| records.iter().find(|r| r.key() == *key))
                    .is_some_and(|r| r.exit.is_none());
                if held {
                    if let Some(key) = container.attempt {
                        containers.insert(key, container.id);
                    }
                } else {
                    tracing::info!(container = %container.id, "removing a container of no attempt held");
                    driver::docker::remove(docker, &container.id)
                        .await
                        .map_err(anyhow::Error::msg)?;
                }
            }
        }
        for record in records {
            let key = record.key();
            let buffer = LogBuffer::open(&self.buffer_path(&key))?;
            let mut attempt = Attempt::new(record, buffer);
            if attempt.record.exit.is_none() {
                match (attempt.record.driver, containers.remove(&key), &self.docker) {
                    (DriverKind::Docker, Some(container), Some(docker)) => {
                        tracing::info!(run = %key.0, epoch = key.1, %container, "adopting a running container");
                        self.spawn_task(
                            key.clone(),
                            Launcher::Adopt {
                                docker: docker.clone(),
                                container,
                                skip: attempt.buffer.task_output_len(),
                            },
                        );
                        attempt.note("the worker restarted; it took over the running container");
                    }
                    (DriverKind::Exec, _, _) => {
                        if let Some(pgid) = attempt.record.pgid {
                            driver::exec::signal_group(pgid, nix::sys::signal::Signal::SIGKILL);
                        }
                        let cgroup = driver::exec::attempt_cgroup_name(&attempt.record.run_id, attempt.record.epoch);
                        if let Ok(cgroup) = driver::cgroup::Cgroup::locate(&cgroup) {
                            cgroup.remove().await;
                        }
                        attempt.end_with_error(
                            "the worker restarted; a host process cannot be taken over, so it was killed".into(),
                        );
                        self.journal.put(attempt.record.clone());
                    }
                    (DriverKind::Docker, _, _) => {
                        attempt.end_with_error("the worker restarted and the attempt's container is gone".into());
                        self.journal.put(attempt.record.clone());
                    }
                }
            }
            self.attempts.insert(key, attempt);
        }
        self.journal.save()?;
        Ok(())
    }

    /// Runs until a graceful shutdown completes (`stop` cancelled and every
    /// attempt finished or handed back).
    pub async fn run(mut self, stop: CancellationToken) -> anyhow::Result<()> {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut ticked = false;
            tokio::select! {
                Some(event) = self.events.recv() => {
                    self.on_event(event);
                    // What else is ready joins this turn: one journal save
                    // covers all of it.
                    for _ in 1..TURN_EVENTS {
                        let Ok(event) = self.events.try_recv() else { break };
                        self.on_event(event);
                    }
                }
                _ = tick.tick() => {
                    self.on_tick();
                    ticked = true;
                }
                () = stop.cancelled(), if self.shutdown.is_none() => self.begin_shutdown(),
            }
            self.settle();
            if ticked && self.shutdown_done() {
                tracing::info!("every attempt is finished and reported; exiting");
                return Ok(());
            }
        }
    }

    /// Ends a turn of the event loop: saves the journal once for every
    /// attempt that changed in it, then starts the attempts accepted in it
    /// (never before the journal holds them, so a restart knows what to
    /// take over or kill) and sends what is to be reported.
    fn settle(&mut self) {
        let launches = std::mem::take(&mut self.launches);
        match self.journal.save() {
            Ok(()) => {
                for (key, launcher) in launches {
                    self.spawn_task(key, launcher);
                }
            }
            Err(e) => {
                // Not run, and reported as failed (so the cluster retries
                // them); other reports still go out: the cluster keeping an
                // outcome matters more than this worker's own restart.
                tracing::error!(error = %e, not_run = launches.len(), "cannot save the journal; the attempts accepted meanwhile are not run");
                for (key, _) in launches {
                    if let Some(attempt) = self.attempts.get_mut(&key) {
                        attempt.end_with_error(format!("not started: the worker cannot save its journal ({e})"));
                        self.journal.put(attempt.record.clone());
                    }
                }
            }
        }
        self.pump_reports();
    }

    fn begin_shutdown(&mut self) {
        self.metrics.set_shutting_down();
        let running = self.attempts.values().filter(|a| a.record.exit.is_none()).count();
        tracing::info!(
            running,
            timeout = ?self.config.shutdown_timeout,
            "shutting down: taking no new runs, letting running ones finish"
        );
        self.shutdown = Some(Instant::now() + self.config.shutdown_timeout);
        self.announce_shutdown();
    }

    /// Tells the cluster the worker is shutting down (a drain of its own):
    /// it assigns nothing more, and stops and hands back what still runs at
    /// the deadline. Repeated on every new session until the worker exits.
    fn announce_shutdown(&mut self) {
        let Some(deadline) = self.shutdown else { return };
        let within = deadline.saturating_duration_since(Instant::now());
        let within = prost_types::Duration::try_from(within).unwrap_or_default();
        self.send(
            pb::worker_message::Message::Drain(pb::Drain { within: Some(within) }),
            Pending::Drain,
        );
    }

    fn shutdown_done(&self) -> bool {
        let Some(deadline) = self.shutdown else {
            return false;
        };
        if self.attempts.is_empty() {
            return true;
        }
        // Unreachable (or unresponsive) cluster: once every task is dead,
        // the reports wait for the next start of the worker (the journal
        // keeps them).
        let all_dead = self.attempts.values().all(|a| !a.running() && a.stop_asked.is_none());
        let now = Instant::now();
        all_dead && now >= deadline && (self.session.is_none() || now >= deadline + 2 * SHUTDOWN_SLACK)
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Running { key, id, stopper } => self.on_running(key, id, *stopper),
            Event::Output { key, output } => {
                if let Some(attempt) = self.attempts.get_mut(&key)
                    && let Err(e) = attempt.buffer.append(output.stream, &output.data)
                {
                    tracing::error!(run = %key.0, error = %e, "cannot buffer output; it is lost");
                }
            }
            Event::Exited { key, exit } => self.on_exited(key, exit),
            Event::Connected(result) => self.on_connected(*result),
            Event::Server { generation, message } => {
                if self.session.as_ref().is_some_and(|s| s.generation == generation) {
                    match *message {
                        Ok(message) => self.on_server_message(message),
                        Err(reason) => self.drop_session(&reason),
                    }
                }
            }
            Event::Strays(containers) => {
                if let Some(docker) = &self.docker {
                    for id in containers {
                        tracing::info!(container = %id, "removing a container of no attempt held");
                        let docker = docker.clone();
                        let metrics = self.metrics.clone();
                        tokio::spawn(async move {
                            match driver::docker::remove(&docker, &id).await {
                                Ok(()) => metrics.reconcile_removals.with_label_values(&["container"]).inc(),
                                Err(e) => tracing::warn!(container = %id, error = %e, "stray container not removed"),
                            }
                        });
                    }
                }
            }
        }
    }

    fn on_running(&mut self, key: AttemptKey, id: TaskId, stopper: Stopper) {
        let Some(attempt) = self.attempts.get_mut(&key) else {
            // Forgotten while it started: it must not run.
            tokio::spawn(async move { stopper.stop(Duration::ZERO).await });
            return;
        };
        match &id {
            TaskId::Container(container) => attempt.record.container = Some(container.clone()),
            TaskId::ProcessGroup(pgid) => attempt.record.pgid = Some(*pgid),
        }
        attempt.record.started = true;
        self.journal.put(attempt.record.clone());
        let grace = attempt.stop_asked.or(attempt.orphan.then_some(Duration::ZERO));
        attempt.stopper = Some(stopper.clone());
        if let Some(grace) = grace {
            tokio::spawn(async move { stopper.stop(grace).await });
        }
    }

    fn on_exited(&mut self, key: AttemptKey, mut exit: Exit) {
        let Some(attempt) = self.attempts.get_mut(&key) else {
            return;
        };
        if attempt.fenced && exit.error.is_none() {
            exit.error =
                Some("the worker could not renew its lease, so it stopped the task before the lease ran out".into());
        }
        tracing::info!(run = %key.0, epoch = key.1, exit_code = ?exit.exit_code, oom = exit.oom_killed, error = ?exit.error, "attempt ended");
        if let Some(error) = &exit.error {
            attempt.note(error);
        }
        attempt.record.exit = Some(exit);
        attempt.stop_asked = None;
        if let Some(image) = &attempt.record.image {
            // Used until now: its age for image GC counts from here.
            self.images.used(image);
        }
        self.journal.put(attempt.record.clone());
        if let (Some(docker), Some(container)) = (&self.docker, attempt.record.container.clone()) {
            let docker = docker.clone();
            tokio::spawn(async move {
                if let Err(e) = driver::docker::remove(&docker, &container).await {
                    tracing::warn!(error = %e, "container not removed; reconciliation will retry");
                }
            });
        }
        if attempt.orphan {
            self.forget(&key);
        }
    }

    /// Drops an attempt the cluster has recorded the end of, or no longer
    /// wants: a restart that finds it in the journal reports it again and
    /// is told to drop it, so the removal is not saved at once.
    fn forget(&mut self, key: &AttemptKey) {
        if let Some(attempt) = self.attempts.remove(key)
            && let Err(e) = attempt.buffer.remove()
        {
            tracing::warn!(error = %e, "cannot delete an output buffer");
        }
        self.journal.remove_unsaved(key);
    }

    fn register_message(&self) -> pb::Register {
        pb::Register {
            worker_id: self.config.id().to_owned(),
            labels: self.config.labels.clone().into_iter().collect(),
            slots: self.config.slots,
            cpu_millis: 0,
            memory_bytes: 0,
            drivers: self.drivers.clone(),
            held: self
                .attempts
                .values()
                .filter(|a| !a.orphan)
                .map(|a| pb::HeldAttempt {
                    run_id: a.record.run_id.clone(),
                    epoch: a.record.epoch,
                })
                .collect(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        if self.session.is_none() && !self.connecting && now >= self.reconnect_at {
            self.connecting = true;
            let servers = self.config.servers.clone();
            let register = self.register_message();
            let events = self.events_tx.clone();
            let link = self.link.clone();
            tokio::spawn(async move {
                let result = session::connect(&servers, &register, &link).await;
                let _ = events.send(Event::Connected(Box::new(result))).await;
            });
        }
        self.metrics
            .set_running(self.attempts.values().filter(|a| a.record.exit.is_none()).count());
        self.heartbeat(now);
        self.fence(now);
        self.shutdown_step(now);
        if now >= self.next_reconcile {
            self.next_reconcile = now + self.config.reconcile_interval;
            self.reconcile();
        }
    }

    fn heartbeat(&mut self, now: Instant) {
        let Some(lease) = self.lease else { return };
        let Some(live) = &self.session else { return };
        let overdue = live.pending.values().any(|p| match p {
            Pending::Heartbeat(sent) => now.duration_since(*sent) > lease.interval * 2,
            _ => false,
        });
        if overdue {
            self.drop_session("a heartbeat was not answered in time");
            return;
        }
        if now.duration_since(live.last_heartbeat) >= lease.interval {
            if let Some(live) = &mut self.session {
                live.last_heartbeat = now;
            }
            self.send(
                pb::worker_message::Message::Heartbeat(pb::Heartbeat {}),
                Pending::Heartbeat(now),
            );
        }
    }

    /// Stops tasks whose lease is about to run out: SIGTERM early enough that
    /// the kill grace ends (and SIGKILL lands) a safety margin before the
    /// lease does. The grace is capped at a quarter of the lease: stopping
    /// earlier would kill tasks over a mere leader election.
    fn fence(&mut self, now: Instant) {
        let (end, duration) = match self.lease {
            Some(lease) => (lease.end(), lease.duration),
            None => (now, Duration::from_secs(10)),
        };
        let safety = (duration / 10).min(Duration::from_secs(1));
        for attempt in self.attempts.values_mut() {
            if attempt.fenced || !attempt.running() {
                continue;
            }
            let margin = (attempt.kill_grace() + safety).min(duration / 4);
            if now + margin < end {
                continue;
            }
            let grace = end.saturating_duration_since(now + safety);
            tracing::warn!(run = %attempt.record.run_id, ?grace, "lease running out without renewal: stopping the task");
            attempt.note("the worker cannot reach the cluster and its lease is running out: stopping the task");
            attempt.fenced = true;
            if let Some(stopper) = attempt.stopper.clone() {
                tokio::spawn(async move { stopper.stop(grace).await });
            }
        }
    }

    /// During a graceful shutdown: once the deadline passes the cluster asks
    /// for the running attempts (to hand them back); if it cannot be reached
    /// — or has not asked a while later — the worker stops them itself.
    fn shutdown_step(&mut self, now: Instant) {
        let Some(deadline) = self.shutdown else { return };
        if now < deadline || (self.session.is_some() && now < deadline + SHUTDOWN_SLACK) {
            return;
        }
        for attempt in self.attempts.values_mut() {
            if attempt.running() && attempt.stop_asked.is_none() {
                attempt.note("the worker is shutting down: stopping the task");
                let grace = attempt.kill_grace();
                attempt.stop_asked = Some(grace);
                if let Some(stopper) = attempt.stopper.clone() {
                    tokio::spawn(async move { stopper.stop(grace).await });
                }
            }
        }
    }

    /// Removes own containers of no attempt held, and unused images.
    fn reconcile(&mut self) {
        let Some(docker) = self.docker.clone() else { return };
        let held: Vec<AttemptKey> = self
            .attempts
            .iter()
            .filter(|(_, a)| a.record.exit.is_none())
            .map(|(k, _)| k.clone())
            .collect();
        let worker = self.config.id().to_owned();
        let events = self.events_tx.clone();
        let expired = self.images.expired(self.config.image_gc_age);
        let in_use: Vec<String> = self
            .attempts
            .values()
            .filter(|a| a.record.exit.is_none())
            .filter_map(|a| a.record.image.clone())
            .collect();
        let images = self.images.clone();
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            match driver::docker::list_own(&docker, &worker).await {
                Ok(containers) => {
                    let strays = containers
                        .into_iter()
                        .filter(|c| c.attempt.as_ref().is_none_or(|key| !held.contains(key)))
                        .map(|c| c.id)
                        .collect();
                    let _ = events.send(Event::Strays(strays)).await;
                }
                Err(e) => tracing::warn!(error = %e, "reconciliation failed"),
            }
            for image in expired.into_iter().filter(|i| !in_use.contains(i)) {
                match driver::docker::remove_image(&docker, &image).await {
                    Ok(true) => {
                        tracing::info!(%image, "removed an image no run used recently");
                        images.forget(&image);
                        metrics.reconcile_removals.with_label_values(&["image"]).inc();
                    }
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "image not removed"),
                }
            }
        });
    }

    fn on_connected(&mut self, result: Result<Session, String>) {
        self.connecting = false;
        let session = match result {
            Ok(session) => session,
            Err(e) => {
                self.reconnect_at = Instant::now() + self.backoff.next_delay();
                tracing::warn!(error = %e, "cannot reach the cluster; retrying");
                self.metrics.set_session(Err(&e));
                return;
            }
        };
        self.metrics.set_session(Ok(()));
        self.backoff.reset();
        self.generation += 1;
        let generation = self.generation;
        let registered = session.registered;
        let interval = registered
            .heartbeat_interval
            .and_then(|d| Duration::try_from(d).ok())
            .unwrap_or(Duration::from_secs(3));
        let duration = registered
            .lease
            .and_then(|d| Duration::try_from(d).ok())
            .unwrap_or(Duration::from_secs(10));
        self.lease = Some(Lease {
            duration,
            interval,
            renewed_at: session.sent_at,
        });
        self.save_lease();
        tracing::info!(server = %session.server, lease = ?duration, stop = registered.stop.len(), "registered with the cluster");
        let events = self.events_tx.clone();
        let mut inbound = session.inbound;
        tokio::spawn(async move {
            loop {
                let message = match inbound.message().await {
                    Ok(Some(message)) => Ok(message),
                    Ok(None) => Err("the server closed the session".to_owned()),
                    Err(status) => Err(format!("session ended: {}", status.message())),
                };
                let end = message.is_err();
                let event = Event::Server {
                    generation,
                    message: Box::new(message),
                };
                if events.send(event).await.is_err() || end {
                    return;
                }
            }
        });
        self.session = Some(Live {
            outbound: session.outbound,
            pending: HashMap::new(),
            generation,
            last_heartbeat: Instant::now(),
            server: session.server,
        });
        for held in registered.stop {
            let key = (held.run_id, held.epoch);
            self.orphan(&key, "the cluster no longer assigns this attempt to the worker");
        }
        self.announce_shutdown();
    }

    /// The cluster does not want `key` any more: stop it, forget it.
    fn orphan(&mut self, key: &AttemptKey, why: &str) {
        let Some(attempt) = self.attempts.get_mut(key) else {
            return;
        };
        tracing::info!(run = %key.0, epoch = key.1, why, "dropping an attempt");
        attempt.orphan = true;
        if attempt.running() {
            let grace = attempt.kill_grace();
            if let Some(stopper) = attempt.stopper.clone() {
                tokio::spawn(async move { stopper.stop(grace).await });
            }
        } else if attempt.record.exit.is_some() || !attempt.record.started {
            // Not running (ended, or not started: the start will see the flag).
            if attempt.record.exit.is_some() {
                self.forget(key);
            }
        }
    }

    fn drop_session(&mut self, reason: &str) {
        if let Some(live) = self.session.take() {
            tracing::warn!(server = %live.server, reason, "session lost; reconnecting");
        }
        self.metrics.set_session(Err(reason));
        for attempt in self.attempts.values_mut() {
            attempt.started_in_flight = false;
            attempt.logs_in_flight = false;
            attempt.finished_in_flight = false;
        }
        self.reconnect_at = Instant::now() + self.backoff.next_delay();
    }

    /// Queues a message; a full queue means the session is stuck.
    fn send(&mut self, message: pb::worker_message::Message, pending: Pending) -> bool {
        let Some(live) = &mut self.session else {
            return false;
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        let sent = live
            .outbound
            .try_send(pb::WorkerMessage {
                seq,
                message: Some(message),
            })
            .is_ok();
        if sent {
            live.pending.insert(seq, pending);
        } else {
            self.drop_session("the session's queue is full or closed");
        }
        sent
    }

    fn on_server_message(&mut self, message: pb::ServerMessage) {
        use pb::server_message::Message;
        match message.message {
            Some(Message::Assignment(assignment)) => self.on_assignment(assignment),
            Some(Message::Stop(stop)) => {
                let key = (stop.run_id, stop.epoch);
                let grace = stop
                    .kill_grace
                    .and_then(|d| Duration::try_from(d).ok())
                    .unwrap_or(Duration::from_secs(10));
                if let Some(attempt) = self.attempts.get_mut(&key) {
                    tracing::info!(run = %key.0, epoch = key.1, reason = %stop.reason, "stopping the attempt");
                    attempt.note(&format!("stopping the task ({})", stop.reason));
                    attempt.stop_asked = Some(grace);
                    if attempt.running()
                        && let Some(stopper) = attempt.stopper.clone()
                    {
                        tokio::spawn(async move { stopper.stop(grace).await });
                    }
                    if attempt.held_back && attempt.record.exit.is_none() {
                        let exit = Exit {
                            error: Some("not started: the worker was shutting down".into()),
                            ..Exit::default()
                        };
                        self.on_exited(key, exit);
                    }
                }
            }
            Some(Message::Ack(ack)) => self.on_ack(ack),
            Some(Message::Registered(_)) | None => {}
        }
    }

    fn on_ack(&mut self, ack: pb::ReportAck) {
        let Some(pending) = self.session.as_mut().and_then(|live| live.pending.remove(&ack.seq)) else {
            return;
        };
        match pending {
            Pending::Drain => {
                if !ack.accepted {
                    tracing::warn!(error = %ack.error, "the cluster refused the shutdown drain");
                }
            }
            Pending::Heartbeat(sent) => {
                if let Some(lease) = &mut self.lease
                    && ack.accepted
                    && sent > lease.renewed_at
                {
                    lease.renewed_at = sent;
                    self.save_lease();
                }
            }
            Pending::Started(key) => {
                let Some(attempt) = self.attempts.get_mut(&key) else {
                    return;
                };
                attempt.started_in_flight = false;
                if ack.accepted {
                    attempt.record.started_reported = true;
                    self.journal.put_unsaved(attempt.record.clone());
                } else {
                    self.orphan(&key, &ack.error);
                }
            }
            Pending::Logs { key, from } => {
                let Some(attempt) = self.attempts.get_mut(&key) else {
                    return;
                };
                attempt.logs_in_flight = false;
                if !ack.accepted && ack.next_log_offset == from {
                    self.orphan(&key, &ack.error);
                    return;
                }
                if !ack.accepted {
                    tracing::warn!(run = %key.0, error = %ack.error, next = ack.next_log_offset, "output refused; resending from the cluster's offset");
                }
                let shipped = ack.next_log_offset.saturating_sub(attempt.record.logs_acked);
                self.metrics.log_bytes_shipped.inc_by(shipped);
                attempt.record.logs_acked = ack.next_log_offset;
                self.journal.put_unsaved(attempt.record.clone());
            }
            Pending::Finished(key) => {
                if !ack.accepted {
                    tracing::warn!(run = %key.0, epoch = key.1, error = %ack.error, "the cluster refused the attempt's result");
                }
                self.forget(&key);
            }
        }
    }

    fn on_assignment(&mut self, assignment: pb::Assignment) {
        let key = (assignment.run_id.clone(), assignment.epoch);
        if self.attempts.contains_key(&key) {
            return;
        }
        let task = assignment
            .spec
            .as_ref()
            .and_then(|s| s.task.clone())
            .unwrap_or_default();
        let driver = match task.driver() {
            pb::Driver::Exec => DriverKind::Exec,
            pb::Driver::Docker | pb::Driver::Unspecified => DriverKind::Docker,
        };
        let kill_grace = assignment
            .kill_grace
            .and_then(|d| Duration::try_from(d).ok())
            .unwrap_or(Duration::from_secs(10));
        let record = AttemptRecord {
            run_id: key.0.clone(),
            epoch: key.1,
            job: assignment.job.clone(),
            driver,
            image: (driver == DriverKind::Docker).then(|| task.image.clone()),
            container: None,
            pgid: None,
            kill_grace_ms: u64::try_from(kill_grace.as_millis()).unwrap_or(u64::MAX),
            started: false,
            started_reported: false,
            exit: None,
            logs_acked: 0,
        };
        let buffer = match LogBuffer::open(&self.buffer_path(&key)) {
            Ok(buffer) => buffer,
            Err(e) => {
                tracing::error!(error = %e, "cannot open an output buffer; the attempt is not run");
                return;
            }
        };
        self.journal.put(record.clone());
        tracing::info!(run = %key.0, epoch = key.1, job = %assignment.job, ?driver, "running an attempt");
        let mut attempt = Attempt::new(record, buffer);
        if self.shutdown.is_some() {
            // Assigned before the cluster learnt of the shutdown: not
            // started; the cluster stops it at the drain deadline and hands
            // it back.
            attempt.note("not started: the worker is shutting down");
            attempt.held_back = true;
            self.attempts.insert(key, attempt);
            return;
        }
        let refusal = if !self.drivers.iter().any(|d| d == driver.name()) {
            Some(format!("this worker does not offer the {} driver", driver.name()))
        } else {
            None
        };
        let launcher = match (refusal, driver, &self.docker) {
            (Some(reason), _, _) => Err(reason),
            (None, DriverKind::Exec, _) => Ok(Launcher::Exec(Box::new(assignment))),
            (None, DriverKind::Docker, Some(docker)) => {
                self.images.used(&task.image);
                Ok(Launcher::Docker(docker.clone(), Box::new(assignment)))
            }
            (None, DriverKind::Docker, None) => Err("this worker has no Docker engine".to_owned()),
        };
        match launcher {
            Ok(launcher) => {
                // Started once the journal holds it (`settle`).
                self.attempts.insert(key.clone(), attempt);
                self.launches.push((key, launcher));
            }
            Err(reason) => {
                attempt.end_with_error(reason);
                self.journal.put(attempt.record.clone());
                self.attempts.insert(key, attempt);
            }
        }
    }

    /// Starts (or adopts) a task in a task of its own, which reports back.
    fn spawn_task(&self, key: AttemptKey, launcher: Launcher) {
        let events = self.events_tx.clone();
        let worker_id = self.config.id().to_owned();
        let metrics = self.metrics.clone();
        let policy = self.config.security.clone();
        // The attempt's span: from start to exit, in the trace of the
        // server's assignment (an adopted attempt starts a trace of its own).
        let span = tracing::info_span!(
            "attempt",
            run = %key.0,
            epoch = key.1,
            job = tracing::field::Empty,
            driver = launcher.driver(),
            worker = %worker_id,
        );
        if let Launcher::Exec(assignment) | Launcher::Docker(_, assignment) = &launcher {
            span.record("job", assignment.job.as_str());
            rota_proto::trace::set_parent(&span, &assignment.traceparent);
        }
        let task = async move {
            let (out_tx, mut out_rx) = mpsc::channel::<Output>(64);
            let forward_events = events.clone();
            let forward_key = key.clone();
            let forwarder = tokio::spawn(async move {
                while let Some(output) = out_rx.recv().await {
                    let event = Event::Output {
                        key: forward_key.clone(),
                        output,
                    };
                    if forward_events.send(event).await.is_err() {
                        return;
                    }
                }
            });
            let driver = launcher.driver();
            let refusal = match &launcher {
                Launcher::Exec(assignment) | Launcher::Docker(_, assignment) if !assignment.refuse.is_empty() => {
                    Some(assignment.refuse.clone())
                }
                _ => None,
            };
            let started = if let Some(reason) = refusal {
                Err(reason)
            } else {
                match launcher {
                    Launcher::Exec(assignment) => driver::exec::start(
                        &Launch {
                            assignment: &assignment,
                            worker_id: &worker_id,
                            metrics: &metrics,
                            policy: &policy,
                        },
                        out_tx,
                    ),
                    Launcher::Docker(docker, assignment) => {
                        driver::docker::start(
                            &docker,
                            &Launch {
                                assignment: &assignment,
                                worker_id: &worker_id,
                                metrics: &metrics,
                                policy: &policy,
                            },
                            out_tx,
                        )
                        .await
                    }
                    Launcher::Adopt {
                        docker,
                        container,
                        skip,
                    } => driver::docker::adopt(&docker, &container, skip, out_tx).await,
                }
            };
            let counter = match &started {
                Ok(_) => &metrics.attempts_started,
                Err(_) => &metrics.attempts_failed_to_start,
            };
            counter.with_label_values(&[driver]).inc();
            let exit = match started {
                Ok(started) => {
                    let running = Event::Running {
                        key: key.clone(),
                        id: started.id,
                        stopper: Box::new(started.stopper),
                    };
                    let _ = events.send(running).await;
                    started.exit.await.unwrap_or_else(|_| Exit {
                        error: Some("the driver lost track of the task".into()),
                        ..Exit::default()
                    })
                }
                Err(error) => Exit {
                    error: Some(error),
                    ..Exit::default()
                },
            };
            let _ = forwarder.await;
            let _ = events.send(Event::Exited { key, exit }).await;
        };
        tokio::spawn(tracing::Instrument::instrument(task, span));
    }

    /// Sends what each attempt has to report, in order: started, output,
    /// finished.
    fn pump_reports(&mut self) {
        if self.session.is_none() {
            return;
        }
        let keys: Vec<AttemptKey> = self.attempts.keys().cloned().collect();
        for key in keys {
            let Some(attempt) = self.attempts.get_mut(&key) else {
                continue;
            };
            if attempt.orphan {
                continue;
            }
            let (run_id, epoch) = key.clone();
            if attempt.record.started && !attempt.record.started_reported && !attempt.started_in_flight {
                attempt.started_in_flight = true;
                let message = pb::worker_message::Message::Started(pb::AttemptStarted {
                    run_id: run_id.clone(),
                    epoch,
                });
                if !self.send(message, Pending::Started(key.clone())) {
                    return;
                }
            }
            let Some(attempt) = self.attempts.get_mut(&key) else {
                continue;
            };
            let acked = attempt.record.logs_acked;
            let pending = attempt.buffer.len().saturating_sub(acked);
            let ship = pending > 0
                && !attempt.logs_in_flight
                && (pending >= BATCH_BYTES
                    || attempt.last_shipped.elapsed() >= BATCH_INTERVAL
                    || attempt.record.exit.is_some());
            if ship {
                let pieces = match attempt.buffer.read_from(acked, CHUNK_MAX, BATCH_MAX) {
                    Ok(pieces) => pieces,
                    Err(e) => {
                        tracing::error!(run = %run_id, error = %e, "cannot read buffered output");
                        continue;
                    }
                };
                attempt.logs_in_flight = true;
                attempt.last_shipped = Instant::now();
                let message = pb::worker_message::Message::Logs(pb::LogBatch {
                    run_id: run_id.clone(),
                    epoch,
                    chunks: pieces
                        .into_iter()
                        .map(|(offset, stream, data)| pb::LogData {
                            offset,
                            stream: stream.into(),
                            data,
                        })
                        .collect(),
                });
                if !self.send(
                    message,
                    Pending::Logs {
                        key: key.clone(),
                        from: acked,
                    },
                ) {
                    return;
                }
            }
            let Some(attempt) = self.attempts.get_mut(&key) else {
                continue;
            };
            // The session commits one attempt's reports in the order they
            // are sent, so the end may follow a start not yet acknowledged.
            let reported_start =
                attempt.record.started_reported || attempt.started_in_flight || !attempt.record.started;
            let finished = attempt.record.exit.clone().filter(|_| {
                reported_start
                    && !attempt.finished_in_flight
                    && !attempt.logs_in_flight
                    && attempt.record.logs_acked >= attempt.buffer.len()
            });
            if let Some(exit) = finished {
                attempt.finished_in_flight = true;
                let message = pb::worker_message::Message::Finished(pb::AttemptFinished {
                    run_id,
                    epoch,
                    exit_code: exit.exit_code,
                    oom_killed: exit.oom_killed,
                    peak_memory_bytes: exit.peak_memory_bytes,
                    cpu_time_ms: exit.cpu_time_ms,
                    error: exit.error.unwrap_or_default(),
                });
                if !self.send(message, Pending::Finished(key.clone())) {
                    return;
                }
            }
        }
    }
}

/// How a task is to be started.
enum Launcher {
    /// A new host process.
    Exec(Box<pb::Assignment>),
    /// A new container.
    Docker(Docker, Box<pb::Assignment>),
    /// A container started before the worker restarted.
    Adopt {
        docker: Docker,
        container: String,
        skip: u64,
    },
}

impl Launcher {
    /// The `driver` label of the attempt's metrics.
    fn driver(&self) -> &'static str {
        match self {
            Launcher::Exec(_) => "exec",
            Launcher::Docker(..) => "docker",
            Launcher::Adopt { .. } => "adopted",
        }
    }
}
