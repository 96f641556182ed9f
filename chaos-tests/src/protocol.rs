//! A scripted worker that speaks the real worker protocol over gRPC, for
//! tests of the servers' side of it (and, later, as a fault injector that
//! misbehaves on purpose).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use rota_client::proto as pb;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

type Acks = Arc<Mutex<HashMap<u64, oneshot::Sender<pb::ReportAck>>>>;

/// A connected test worker.
pub struct TestWorker {
    /// Its id.
    pub id: String,
    /// What the server answered to its registration.
    pub registered: pb::Registered,
    outbound: mpsc::Sender<pb::WorkerMessage>,
    acks: Acks,
    events: mpsc::Receiver<Result<pb::ServerMessage, tonic::Status>>,
    next_seq: Arc<Mutex<u64>>,
    heartbeats: Option<JoinHandle<()>>,
    /// When the last heartbeat was sent (unix nanoseconds).
    last_heartbeat: Arc<Mutex<Option<i128>>>,
    reader: JoinHandle<()>,
}

/// How a worker describes itself.
#[derive(Debug, Clone)]
pub struct WorkerDescription {
    /// Its id.
    pub id: String,
    /// Attempts at once.
    pub slots: u32,
    /// Drivers, e.g. `["exec"]`.
    pub drivers: Vec<String>,
    /// Labels.
    pub labels: HashMap<String, String>,
    /// Attempts it still holds.
    pub held: Vec<pb::HeldAttempt>,
}

impl WorkerDescription {
    /// An exec worker with `slots` slots and no labels.
    pub fn exec(id: &str, slots: u32) -> Self {
        Self {
            id: id.to_owned(),
            slots,
            drivers: vec!["exec".to_owned()],
            labels: HashMap::new(),
            held: Vec::new(),
        }
    }
}

/// Opens a session stream (the worker agent's own function).
pub use rota_worker::session::open as open_session;

fn register_message(description: &WorkerDescription) -> pb::Register {
    pb::Register {
        worker_id: description.id.clone(),
        labels: description.labels.clone(),
        slots: description.slots,
        cpu_millis: 0,
        memory_bytes: 0,
        drivers: description.drivers.clone(),
        held: description.held.clone(),
        version: "test".into(),
    }
}

impl TestWorker {
    /// Connects to the leader as the worker agent does: tries each of
    /// `addrs`, following the `rota-leader` hint of a follower.
    pub async fn connect(addrs: &[String], description: WorkerDescription) -> anyhow::Result<TestWorker> {
        Self::connect_with(addrs, description, &rota_worker::session::Link::default()).await
    }

    /// Like [`TestWorker::connect`], over `link` (TLS, a token).
    pub async fn connect_with(
        addrs: &[String],
        description: WorkerDescription,
        link: &rota_worker::session::Link,
    ) -> anyhow::Result<TestWorker> {
        let session = rota_worker::session::connect(addrs, &register_message(&description), link)
            .await
            .map_err(|e| anyhow::anyhow!("no server accepted the worker session: {e}"))?;
        Self::start(description.id, session.outbound, session.inbound, session.registered)
    }

    fn start(
        id: String,
        outbound: mpsc::Sender<pb::WorkerMessage>,
        mut inbound: tonic::Streaming<pb::ServerMessage>,
        registered: pb::Registered,
    ) -> anyhow::Result<TestWorker> {
        let acks: Acks = Arc::default();
        let (events_tx, events) = mpsc::channel(256);
        let reader_acks = acks.clone();
        let reader = tokio::spawn(async move {
            loop {
                match inbound.message().await {
                    Ok(Some(pb::ServerMessage {
                        message: Some(pb::server_message::Message::Ack(ack)),
                    })) => {
                        let waiter = reader_acks.lock().unwrap_or_else(|p| p.into_inner()).remove(&ack.seq);
                        if let Some(waiter) = waiter {
                            let _ = waiter.send(ack);
                        }
                    }
                    Ok(Some(message)) => {
                        if events_tx.send(Ok(message)).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(status) => {
                        let _ = events_tx.send(Err(status)).await;
                        return;
                    }
                }
            }
        });
        Ok(TestWorker {
            id,
            registered,
            outbound,
            acks,
            events,
            next_seq: Arc::new(Mutex::new(1)),
            heartbeats: None,
            last_heartbeat: Arc::default(),
            reader,
        })
    }

    fn seq(&self) -> u64 {
        let mut next = self.next_seq.lock().unwrap_or_else(|p| p.into_inner());
        *next += 1;
        *next
    }

    /// Sends a message and waits for its acknowledgement.
    pub async fn send(&self, message: pb::worker_message::Message) -> anyhow::Result<pb::ReportAck> {
        let seq = self.seq();
        let (tx, rx) = oneshot::channel();
        self.acks.lock().unwrap_or_else(|p| p.into_inner()).insert(seq, tx);
        self.outbound
            .send(pb::WorkerMessage {
                seq,
                message: Some(message),
            })
            .await
            .context("session closed")?;
        tokio::time::timeout(Duration::from_secs(20), rx)
            .await
            .context("no acknowledgement within 20 s")?
            .context("session closed before the acknowledgement")
    }

    /// Starts heartbeating at the interval the server asked for.
    pub fn start_heartbeats(&mut self) {
        let interval = self
            .registered
            .heartbeat_interval
            .as_ref()
            .map_or(Duration::from_secs(1), |d| {
                Duration::new(
                    u64::try_from(d.seconds).unwrap_or(1),
                    u32::try_from(d.nanos).unwrap_or(0),
                )
            });
        let outbound = self.outbound.clone();
        let next_seq = self.next_seq.clone();
        let last_heartbeat = self.last_heartbeat.clone();
        self.heartbeats = Some(tokio::spawn(async move {
            loop {
                let seq = {
                    let mut next = next_seq.lock().unwrap_or_else(|p| p.into_inner());
                    *next += 1;
                    *next
                };
                let message = pb::WorkerMessage {
                    seq,
                    message: Some(pb::worker_message::Message::Heartbeat(pb::Heartbeat {})),
                };
                *last_heartbeat.lock().unwrap_or_else(|p| p.into_inner()) = Some(crate::record::now_nanos());
                if outbound.send(message).await.is_err() {
                    return;
                }
                tokio::time::sleep(interval).await;
            }
        }));
    }

    /// When the last heartbeat was sent (unix nanoseconds), if any: no
    /// lease renewal of this worker counts from a later instant.
    pub fn last_heartbeat_sent(&self) -> Option<i128> {
        *self.last_heartbeat.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops heartbeating (the session stays open).
    pub fn stop_heartbeats(&mut self) {
        if let Some(task) = self.heartbeats.take() {
            task.abort();
        }
    }

    /// The next assignment or stop, waiting up to `timeout`.
    pub async fn next_event(&mut self, timeout: Duration) -> anyhow::Result<pb::server_message::Message> {
        let event = tokio::time::timeout(timeout, self.events.recv())
            .await
            .context("no message from the server in time")?
            .context("session closed")?;
        match event {
            Ok(pb::ServerMessage { message: Some(message) }) => Ok(message),
            Ok(other) => bail!("empty server message {other:?}"),
            Err(status) => bail!("session ended: {status}"),
        }
    }

    /// The next assignment, waiting up to `timeout` (stops are skipped).
    pub async fn next_assignment(&mut self, timeout: Duration) -> anyhow::Result<pb::Assignment> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if let pb::server_message::Message::Assignment(assignment) = self.next_event(left).await? {
                return Ok(assignment);
            }
        }
    }
}

impl Drop for TestWorker {
    fn drop(&mut self) {
        self.stop_heartbeats();
        self.reader.abort();
    }
}
