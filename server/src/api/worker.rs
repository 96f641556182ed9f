//! `rota.v1.WorkerService`: the worker protocol (see `proto/rota/v1/worker.proto`).
//!
//! A session is one connection of a worker to the leader. It registers the
//! worker through Raft (reconciling what it still holds), renews its lease on
//! each heartbeat in the leader's memory, turns reports into commands, and
//! pushes the worker its assignments and stops as they are applied. It lives
//! only as long as the leadership it was opened under; then the worker is
//! told to reconnect (to the new leader).

use std::collections::HashSet;
use std::pin::Pin;
use std::time::Duration;

use futures::stream::FuturesOrdered;
use futures::{Stream, StreamExt};
use rota_proto::v1 as pb;
use rota_proto::v1::worker_service_server::WorkerService;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use super::{ApiError, convert};
use crate::node::NodeHandle;
use crate::scheduler::{LeaderContext, Scheduler};
use crate::spec;
use crate::state::index::add;
use crate::state::job::Driver;
use crate::state::logs::{LogStream, MAX_CHUNK_BYTES};
use crate::state::run::{Attempt, Capacity, ResourceUse, Run, StopReason, WorkerState};
use crate::state::{AttemptReport, HeldAttempt, LogAppend, Op, Response as Answer, RunId, WorkerInfo};

/// How long a new session may take to send its Register message.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest accepted slot count.
const MAX_SLOTS: u32 = 1024;

type SessionStream = Pin<Box<dyn Stream<Item = Result<pb::ServerMessage, Status>> + Send>>;

/// Serves `WorkerService` on a node.
#[derive(Clone)]
pub struct WorkerApi {
    node: NodeHandle,
    scheduler: Scheduler,
    secrets: Option<std::sync::Arc<crate::secrets::Keyring>>,
}

impl WorkerApi {
    /// Serves worker sessions of `node`, while `scheduler` says it leads;
    /// `secrets` opens the jobs' secret values for their assignments.
    pub fn new(
        node: NodeHandle,
        scheduler: Scheduler,
        secrets: Option<std::sync::Arc<crate::secrets::Keyring>>,
    ) -> Self {
        Self {
            node,
            scheduler,
            secrets,
        }
    }
}

/// The longest drain deadline accepted.
pub(super) const MAX_DRAIN: Duration = Duration::from_secs(7 * 24 * 3600);

/// Checks a worker id given in `field`.
pub(super) fn check_worker_id(field: &str, id: &str) -> Result<(), ApiError> {
    let valid = !id.is_empty()
        && id.len() <= 63
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(ApiError::invalid(
            field,
            format!("{id:?} is not a worker id; accepted: 1 to 63 characters of letters, digits, '.', '_', '-'"),
        ))
    }
}

/// Checks a Register message and turns it into the command's parts.
fn registration(register: pb::Register) -> Result<(String, WorkerInfo, Vec<HeldAttempt>), ApiError> {
    check_worker_id("register.worker_id", &register.worker_id)?;
    if register.slots == 0 || register.slots > MAX_SLOTS {
        return Err(ApiError::invalid(
            "register.slots",
            format!("{} is out of range; accepted: 1 to {MAX_SLOTS}", register.slots),
        ));
    }
    let mut drivers = std::collections::BTreeSet::new();
    for (i, driver) in register.drivers.iter().enumerate() {
        drivers.insert(match driver.as_str() {
            "docker" => Driver::Docker,
            "exec" => Driver::Exec,
            other => {
                return Err(ApiError::invalid(
                    format!("register.drivers[{i}]"),
                    format!("{other:?} is not a driver; accepted: docker, exec"),
                ));
            }
        });
    }
    if drivers.is_empty() {
        return Err(ApiError::invalid(
            "register.drivers",
            "at least one driver is required: docker, exec",
        ));
    }
    for key in register.labels.keys() {
        if key.is_empty() || key.len() > 63 {
            return Err(ApiError::invalid(
                format!("register.labels[{key:?}]"),
                "label keys are 1 to 63 characters",
            ));
        }
    }
    let held = register
        .held
        .into_iter()
        .map(|h| HeldAttempt {
            run: h.run_id.into(),
            epoch: h.epoch,
        })
        .collect();
    let info = WorkerInfo {
        labels: register.labels.into_iter().collect(),
        capacity: Capacity {
            slots: register.slots,
            cpu_millis: register.cpu_millis,
            memory_bytes: register.memory_bytes,
        },
        drivers,
    };
    Ok((register.worker_id, info, held))
}

/// The assignment message for the live attempt of `run`.
fn assignment(run: &Run, attempt: &Attempt, secrets: Option<&crate::secrets::Keyring>) -> pb::Assignment {
    let scheduled_at = run.nominal_time.unwrap_or(run.created_at);
    let mut env: std::collections::HashMap<String, String> = run.spec.task.env.clone().into_iter().collect();
    let mut refuse = String::new();
    for (name, sealed) in &run.spec.task.secret_env {
        // Opened here only, for the worker's TLS session; never logged. A
        // task never runs without its secrets: the worker is told to refuse.
        let opened = match secrets {
            Some(keyring) => keyring.open(&run.job, name, sealed).map_err(|e| e.to_string()),
            None => Err("this server has no secrets key (secrets.key_file)".to_owned()),
        };
        match opened {
            Ok(value) => _ = env.insert(name.clone(), value),
            Err(error) => {
                tracing::error!(run = %run.id, variable = %name, %error, "cannot open a secret value; the attempt is refused");
                refuse = format!(
                    "the leader cannot open task.secret_env[{name:?}] ({error}); is secrets.key_file the same on \
                     every server?"
                );
            }
        }
    }
    if !refuse.is_empty() {
        // Nothing secret goes out with a refusal.
        env.clear();
    }
    env.extend(run.params.clone());
    env.insert("ROTA_RUN_ID".into(), run.id.to_string());
    env.insert("ROTA_EPOCH".into(), attempt.epoch.to_string());
    env.insert(
        "ROTA_SCHEDULED_AT".into(),
        scheduled_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    );
    env.insert("ROTA_JOB".into(), run.job.clone());
    env.insert("ROTA_ATTEMPT".into(), attempt.number.to_string());
    // A span for the hand-over, in the trace of the call that triggered the
    // run (a root for scheduled runs); the worker's attempt span is its child.
    let span = tracing::info_span!(
        "assign",
        run = %run.id,
        job = %run.job,
        epoch = attempt.epoch,
        worker = %attempt.worker,
    );
    if let Some(trace) = &run.trace {
        rota_proto::trace::set_parent(&span, trace);
    }
    let traceparent = rota_proto::trace::traceparent(&span).unwrap_or_default();
    pb::Assignment {
        run_id: run.id.to_string(),
        epoch: attempt.epoch,
        job: run.job.clone(),
        attempt: attempt.number,
        spec: Some(spec::to_proto(&run.spec)),
        env,
        scheduled_at: Some(convert::timestamp(scheduled_at)),
        deadline: run
            .spec
            .timeout
            .and_then(|t| add(attempt.assigned_at, t))
            .map(convert::timestamp),
        kill_grace: Some(convert::duration(run.spec.kill_grace)),
        traceparent,
        refuse,
    }
}

fn server_message(message: pb::server_message::Message) -> Result<pb::ServerMessage, Status> {
    Ok(pb::ServerMessage { message: Some(message) })
}

#[tonic::async_trait]
impl WorkerService for WorkerApi {
    type SessionStream = SessionStream;

    async fn session(
        &self,
        request: Request<Streaming<pb::WorkerMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let Some(context) = self.scheduler.leader_context() else {
            let leader = self.node.leader().filter(|l| l.id != self.node.id);
            return Err(ApiError::NotLeader { leader }.into());
        };
        // The token the session was opened with: revoking it ends the session.
        let token = request
            .extensions()
            .get::<crate::auth::Caller>()
            .and_then(|caller| caller.token_id.clone());
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(REGISTER_TIMEOUT, inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no register message within 10 s of opening the session"))??
            .ok_or_else(|| Status::invalid_argument("the session closed before its register message"))?;
        let Some(pb::worker_message::Message::Register(register)) = first.message else {
            return Err(ApiError::invalid("message", "the first message of a session must be register").into());
        };
        let (worker, info, held) = registration(register)?;
        let answer = self
            .node
            .propose(Op::RegisterWorker {
                worker: worker.clone(),
                info,
                held: held.clone(),
            })
            .await?;
        let Answer::Registered { stop, lost } = answer else {
            return Err(ApiError::Unavailable(format!("unexpected state machine answer {answer:?}")).into());
        };
        tracing::info!(worker = %worker, held = held.len(), stop = stop.len(), lost = lost.len(), "worker registered");
        context.leases.connect(&worker);

        let (tx, rx) = mpsc::channel(256);
        let lease = context.leases.lease;
        let registered = pb::Registered {
            heartbeat_interval: Some(convert::duration(lease / 5)),
            lease: Some(convert::duration(lease)),
            stop: stop
                .iter()
                .map(|h| pb::HeldAttempt {
                    run_id: h.run.to_string(),
                    epoch: h.epoch,
                })
                .collect(),
        };
        let _ = tx
            .send(server_message(pb::server_message::Message::Registered(registered)))
            .await;
        let pushed: HashSet<(RunId, u64)> = held
            .iter()
            .filter(|h| !stop.contains(h))
            .map(|h| (h.run.clone(), h.epoch))
            .collect();
        let session_index = self.node.state.read().state.worker(&worker).map_or(0, |w| w.session);
        let session = Session {
            node: self.node.clone(),
            context: context.clone(),
            worker,
            session: session_index,
            tx,
            pushed,
            stopped: HashSet::new(),
            secrets: self.secrets.clone(),
            token,
        };
        tokio::spawn(session.run(inbound, context.cancel.clone()));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// One open session.
struct Session {
    node: NodeHandle,
    context: LeaderContext,
    worker: String,
    /// The registration this session made (its Raft index).
    session: u64,
    tx: mpsc::Sender<Result<pb::ServerMessage, Status>>,
    /// Attempts the worker has been sent (or already held).
    pushed: HashSet<(RunId, u64)>,
    /// Attempts the worker has been told to stop.
    stopped: HashSet<(RunId, u64)>,
    /// Opens secret values for assignments.
    secrets: Option<std::sync::Arc<crate::secrets::Keyring>>,
    /// Id of the token the session was opened with, if auth is on.
    token: Option<String>,
}

/// A report waiting to be committed, and what to answer.
struct Report {
    seq: u64,
    op: Op,
    /// For a log batch: the run and epoch, to answer with the next offset.
    log: Option<(RunId, u64)>,
}

fn server_message_ack(seq: u64, result: Result<u64, (String, u64)>) -> pb::server_message::Message {
    pb::server_message::Message::Ack(match result {
        Ok(next_log_offset) => pb::ReportAck {
            seq,
            accepted: true,
            error: String::new(),
            next_log_offset,
        },
        Err((error, next_log_offset)) => pb::ReportAck {
            seq,
            accepted: false,
            error,
            next_log_offset,
        },
    })
}

impl Session {
    async fn run(mut self, mut inbound: Streaming<pb::WorkerMessage>, cancel: CancellationToken) {
        let mut changes = self.node.state.subscribe();
        // Reports are committed by a task of their own (`commit_reports`),
        // so a slow commit never delays a heartbeat.
        let ended = cancel.child_token();
        let (reports, queue) = mpsc::channel(64);
        tokio::spawn(commit_reports(self.node.clone(), queue, self.tx.clone(), ended.clone()));
        let mut open = self.push_work().await;
        while open {
            tokio::select! {
                () = cancel.cancelled() => {
                    let leader = self.node.leader().filter(|l| l.id != self.node.id);
                    let _ = self.tx.send(Err(ApiError::NotLeader { leader }.into())).await;
                    break;
                }
                () = ended.cancelled() => break,
                message = inbound.message() => match message {
                    Ok(Some(message)) => open = self.handle(message, &reports).await,
                    Ok(None) => break,
                    Err(status) => {
                        tracing::debug!(worker = %self.worker, %status, "worker session broke");
                        break;
                    }
                },
                changed = changes.changed() => {
                    if let Some(reason) = self.token_withdrawn() {
                        tracing::warn!(target: "audit", worker = %self.worker, %reason, "worker session closed");
                        let _ = self.tx.send(Err(Status::unauthenticated(reason))).await;
                        break;
                    }
                    open = changed.is_ok() && self.push_work().await;
                }
            }
        }
        ended.cancel();
        self.context.leases.disconnect(&self.worker);
        tracing::info!(worker = %self.worker, "worker session closed");
    }

    async fn send(&self, message: pb::server_message::Message) -> bool {
        self.tx.send(server_message(message)).await.is_ok()
    }

    async fn end(&self, status: Status) -> bool {
        let _ = self.tx.send(Err(status)).await;
        false
    }

    /// Sends the worker its new assignments and stops. Returns false once
    /// the session must end: the worker is gone, was declared lost, or
    /// registered again elsewhere.
    /// Why the session's token no longer lets it in (revoked, expired), if
    /// so. A preset token whose row is not recorded yet still holds.
    fn token_withdrawn(&self) -> Option<String> {
        let id = self.token.as_ref()?;
        let applied = self.node.state.read();
        let token = applied.state.token(id)?;
        (!token.is_usable(chrono::Utc::now())).then(|| {
            format!(
                "token {id} ({}) was revoked or has expired; the session is closed",
                token.name
            )
        })
    }

    async fn push_work(&mut self) -> bool {
        let mut messages = Vec::new();
        let current = {
            let applied = self.node.state.read();
            let state = &applied.state;
            let current = state
                .worker(&self.worker)
                .is_some_and(|w| w.state == WorkerState::Alive && w.session == self.session);
            for id in state
                .index()
                .on_worker
                .get(&self.worker)
                .into_iter()
                .flatten()
                .filter(|_| current)
            {
                let Some(run) = state.run(id) else { continue };
                let Some(attempt) = run.live_attempt() else { continue };
                let key = (run.id.clone(), attempt.epoch);
                match attempt.stop {
                    Some(reason) if !self.stopped.contains(&key) => {
                        messages.push(pb::server_message::Message::Stop(pb::Stop {
                            run_id: run.id.to_string(),
                            epoch: attempt.epoch,
                            reason: match reason {
                                StopReason::Timeout => "timeout",
                                StopReason::Cancel => "cancel",
                                StopReason::Drain => "drain",
                            }
                            .to_owned(),
                            kill_grace: Some(convert::duration(run.spec.kill_grace)),
                        }));
                        self.stopped.insert(key.clone());
                        self.pushed.insert(key);
                    }
                    None if !self.pushed.contains(&key) => {
                        messages.push(pb::server_message::Message::Assignment(assignment(
                            run,
                            attempt,
                            self.secrets.as_deref(),
                        )));
                        self.pushed.insert(key);
                    }
                    _ => {}
                }
            }
            current
        };
        if !current {
            return self
                .end(Status::failed_precondition(
                    "this worker was declared lost (or registered again); reconnect and register with the attempts you hold",
                ))
                .await;
        }
        for message in messages {
            if !self.send(message).await {
                return false;
            }
        }
        true
    }

    /// Handles one message from the worker. Returns false to end the session.
    async fn handle(&mut self, message: pb::WorkerMessage, reports: &mpsc::Sender<Report>) -> bool {
        use pb::worker_message::Message;
        let seq = message.seq;
        let report = match message.message {
            Some(Message::Heartbeat(_)) => {
                // Renew only while this leader hears from a quorum: a leader
                // cut off in a minority must not keep a worker's lease alive
                // while the majority reassigns its work.
                let quorum_age = self.node.raft.metrics().borrow().millis_since_quorum_ack;
                let limit = self.node.settings.election_timeout_max;
                if quorum_age.is_none_or(|ms| Duration::from_millis(ms) > limit) {
                    return self
                        .end(Status::unavailable(
                            "this leader has lost contact with a quorum; reconnect to another server",
                        ))
                        .await;
                }
                self.context.leases.renew(&self.worker);
                return self.send(server_message_ack(seq, Ok(0))).await;
            }
            Some(Message::Register(_)) => {
                let status = ApiError::invalid("message", "register is only allowed as a session's first message");
                return self.end(status.into()).await;
            }
            None => {
                return self
                    .send(server_message_ack(seq, Err(("empty message".into(), 0))))
                    .await;
            }
            Some(Message::Started(started)) => Report {
                seq,
                op: Op::AttemptStarted {
                    worker: self.worker.clone(),
                    run: started.run_id.into(),
                    epoch: started.epoch,
                },
                log: None,
            },
            Some(Message::Finished(finished)) => Report {
                seq,
                op: Op::AttemptFinished {
                    worker: self.worker.clone(),
                    run: finished.run_id.into(),
                    epoch: finished.epoch,
                    report: AttemptReport {
                        exit_code: finished.exit_code,
                        oom_killed: finished.oom_killed,
                        resources: (finished.peak_memory_bytes > 0 || finished.cpu_time_ms > 0).then_some(
                            ResourceUse {
                                peak_memory_bytes: finished.peak_memory_bytes,
                                cpu_time_ms: finished.cpu_time_ms,
                            },
                        ),
                        error: (!finished.error.is_empty()).then_some(finished.error),
                    },
                },
                log: None,
            },
            Some(Message::Drain(drain)) => {
                let within = match drain.within.as_ref().map(|d| convert::std_duration("drain.within", d)) {
                    Some(Ok(within)) if within <= MAX_DRAIN => within,
                    Some(Ok(_)) => {
                        let error = format!("drain.within is longer than {MAX_DRAIN:?}");
                        return self.send(server_message_ack(seq, Err((error, 0)))).await;
                    }
                    Some(Err(e)) => return self.send(server_message_ack(seq, Err((e.to_string(), 0)))).await,
                    None => Duration::ZERO,
                };
                Report {
                    seq,
                    op: Op::DrainWorker {
                        worker: self.worker.clone(),
                        within: Some(within),
                        by_operator: false,
                    },
                    log: None,
                }
            }
            Some(Message::Logs(batch)) => {
                let next = next_log_offset(&self.node, &batch.run_id, batch.epoch);
                let mut chunks = Vec::new();
                for chunk in batch.chunks {
                    if chunk.data.len() > MAX_CHUNK_BYTES {
                        let error = format!(
                            "log chunk of {} bytes exceeds the limit of {MAX_CHUNK_BYTES} bytes; split it",
                            chunk.data.len()
                        );
                        return self.send(server_message_ack(seq, Err((error, next)))).await;
                    }
                    let stream = match pb::LogStream::try_from(chunk.stream) {
                        Ok(pb::LogStream::Stdout) => LogStream::Stdout,
                        Ok(pb::LogStream::Stderr) => LogStream::Stderr,
                        Ok(pb::LogStream::System) => LogStream::System,
                        _ => {
                            let error = format!("unknown log stream {}", chunk.stream);
                            return self.send(server_message_ack(seq, Err((error, next)))).await;
                        }
                    };
                    chunks.push(LogAppend {
                        offset: chunk.offset,
                        stream,
                        data: chunk.data,
                    });
                }
                let run: RunId = batch.run_id.into();
                Report {
                    seq,
                    log: Some((run.clone(), batch.epoch)),
                    op: Op::AppendLogs {
                        worker: self.worker.clone(),
                        run,
                        epoch: batch.epoch,
                        chunks,
                    },
                }
            }
        };
        reports.send(report).await.is_ok()
    }
}

/// The log offset the cluster expects next from attempt `epoch` of `run`.
fn next_log_offset(node: &NodeHandle, run: &str, epoch: u64) -> u64 {
    let applied = node.state.read();
    applied
        .state
        .run(run)
        .filter(|r| r.log.epoch == epoch)
        .map_or(0, |r| r.log.next_offset)
}

/// At most this many reports of one session proposed and not yet answered.
const REPORTS_IN_FLIGHT: usize = 32;

/// Commits a session's reports and acknowledges each, in order. Up to
/// [`REPORTS_IN_FLIGHT`] reports on runs are in flight at once (sharing log
/// entries with other proposals), submitted in the order they came, which
/// group commit keeps per run; any other report (a drain) waits until those
/// before it are applied, and those after it wait for it, as when every
/// report was committed alone. A report that could not be committed
/// (leadership moving) ends the session: the worker reconnects and resends.
async fn commit_reports(
    node: NodeHandle,
    mut queue: mpsc::Receiver<Report>,
    tx: mpsc::Sender<Result<pb::ServerMessage, Status>>,
    ended: CancellationToken,
) {
    let mut in_flight = FuturesOrdered::new();
    let mut open = true;
    while open || !in_flight.is_empty() {
        tokio::select! {
            () = ended.cancelled() => return,
            report = queue.recv(), if open && in_flight.len() < REPORTS_IN_FLIGHT => {
                let Some(Report { seq, op, log }) = report else {
                    open = false;
                    continue;
                };
                let on_run = op.shares_entries();
                if !on_run {
                    while let Some(answered) = ended.run_until_cancelled(in_flight.next()).await.flatten() {
                        if !acknowledge(&node, &tx, &ended, answered).await {
                            return;
                        }
                    }
                }
                let proposal = match node.submit(op).await {
                    Ok(proposal) => proposal,
                    Err(e) => return fail(&tx, &ended, e).await,
                };
                let answer = async move { (seq, log, proposal.outcome().await) };
                if on_run {
                    in_flight.push_back(answer);
                } else {
                    let Some(answered) = ended.run_until_cancelled(answer).await else { return };
                    if !acknowledge(&node, &tx, &ended, answered).await {
                        return;
                    }
                }
            }
            Some(answered) = in_flight.next(), if !in_flight.is_empty() => {
                if !acknowledge(&node, &tx, &ended, answered).await {
                    return;
                }
            }
        }
    }
}

/// A report's sequence number, its run and epoch for a log batch, and how
/// its proposal ended.
type Answered = (u64, Option<(RunId, u64)>, Result<Answer, ApiError>);

/// Acknowledges a committed (or refused) report; false once the session is
/// over.
async fn acknowledge(
    node: &NodeHandle,
    tx: &mpsc::Sender<Result<pb::ServerMessage, Status>>,
    ended: &CancellationToken,
    (seq, log, result): Answered,
) -> bool {
    let next = || {
        log.as_ref()
            .map_or(0, |(run, epoch)| next_log_offset(node, run, *epoch))
    };
    let ack = match result {
        Ok(_) => server_message_ack(seq, Ok(next())),
        Err(ApiError::Rejected(rejection)) => server_message_ack(seq, Err((rejection.message, next()))),
        Err(e) => {
            fail(tx, ended, e).await;
            return false;
        }
    };
    if tx.send(server_message(ack)).await.is_err() {
        ended.cancel();
        return false;
    }
    true
}

/// Ends a session whose report could not be committed.
async fn fail(tx: &mpsc::Sender<Result<pb::ServerMessage, Status>>, ended: &CancellationToken, error: ApiError) {
    let _ = tx.send(Err(error.into())).await;
    ended.cancel();
}
