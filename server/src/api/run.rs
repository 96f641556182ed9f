//! `rota.v1.RunService`: read, list, watch, trigger and cancel runs, and
//! read their logs.

use std::collections::BTreeMap;
use std::pin::Pin;

use chrono::{DateTime, Utc};
use futures::Stream;
use rota_proto::v1 as pb;
use rota_proto::v1::run_service_client::RunServiceClient;
use rota_proto::v1::run_service_server::RunService;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{ApiError, convert, forward_if_follower, is_linearizable};
use crate::node::NodeHandle;
use crate::spec::{check_env_entry, check_job_name};
use crate::state::run::{Run, RunId, RunState};
use crate::state::{Op, Response as Answer, State};

const DEFAULT_PAGE_SIZE: usize = 100;
const MAX_PAGE_SIZE: usize = 1000;
/// Longest accepted run id and request id.
const MAX_ID_LEN: usize = 200;
/// Log chunks read from storage at a time by a log stream.
const LOG_PAGE: usize = 64;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Serves `RunService` on a node.
#[derive(Clone)]
pub struct RunApi {
    node: NodeHandle,
}

impl RunApi {
    /// Serves runs of `node`.
    pub fn new(node: NodeHandle) -> Self {
        Self { node }
    }
}

fn check_id(field: &str, id: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.len() > MAX_ID_LEN || id.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            field,
            format!("is required: up to {MAX_ID_LEN} printable characters"),
        ));
    }
    Ok(())
}

/// A run as protobuf, with why it waits if it is pending.
fn view(state: &State, run: &Run) -> pb::Run {
    let mut view = convert::run(run);
    view.waiting = state.waiting_reason(run, Utc::now()).unwrap_or_default();
    view
}

/// How long a read of a run this server does not hold yet waits for it to
/// be applied before answering `NOT_FOUND`.
const CATCH_UP: std::time::Duration = std::time::Duration::from_secs(2);

fn expect_run(answer: Answer) -> Result<pb::Run, ApiError> {
    match answer {
        Answer::Run(run) => Ok(convert::run(&run)),
        other => Err(ApiError::Unavailable(format!(
            "unexpected state machine answer {other:?}"
        ))),
    }
}

/// The filters of a `ListRuns`, checked.
struct Filter {
    job_uid: Option<String>,
    states: Vec<RunState>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
}

impl Filter {
    fn matches(&self, run: &Run) -> bool {
        self.job_uid.as_ref().is_none_or(|uid| *uid == run.job_uid)
            && (self.states.is_empty() || self.states.contains(&run.state))
            && self.since.is_none_or(|t| run.created_at >= t)
            && self.until.is_none_or(|t| run.created_at < t)
    }
}

/// A page token: the (created index, id) of the last run returned.
fn parse_token(token: &str) -> Result<Option<(u64, RunId)>, ApiError> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || {
        ApiError::invalid(
            "page_token",
            "is not a token returned by ListRuns; pass next_page_token unchanged",
        )
    };
    let (index, id) = token.split_once(':').ok_or_else(bad)?;
    Ok(Some((index.parse().map_err(|_| bad())?, id.into())))
}

fn list(state: &State, filter: &Filter, after: Option<(u64, RunId)>, page_size: usize) -> (Vec<pb::Run>, String) {
    let keys: Box<dyn Iterator<Item = &(u64, RunId)>> = match &filter.job_uid {
        Some(uid) => Box::new(state.index().runs_of_job.get(uid).into_iter().flatten().rev()),
        None => Box::new(state.index().all_runs.iter().rev()),
    };
    let mut runs = Vec::new();
    let mut last = None;
    for key in keys {
        if after.as_ref().is_some_and(|after| key >= after) {
            continue;
        }
        let Some(run) = state.run(&key.1) else { continue };
        if !filter.matches(run) {
            continue;
        }
        if runs.len() == page_size {
            return (
                runs,
                last.map(|(i, id): (u64, RunId)| format!("{i}:{id}"))
                    .unwrap_or_default(),
            );
        }
        runs.push(view(state, run));
        last = Some(key.clone());
    }
    (runs, String::new())
}

#[tonic::async_trait]
impl RunService for RunApi {
    type WatchRunsStream = BoxStream<pb::WatchRunsResponse>;
    type GetLogsStream = BoxStream<pb::LogChunk>;

    async fn get_run(&self, request: Request<pb::GetRunRequest>) -> Result<Response<pb::GetRunResponse>, Status> {
        check_id("id", &request.get_ref().id)?;
        let linearizable = is_linearizable(request.get_ref().consistency)?;
        if linearizable {
            forward_if_follower!(self.node, request, RunServiceClient::get_run);
            self.node.ensure_linearizable().await?;
        }
        let id = &request.get_ref().id;
        let guard = self.node.state.read();
        let run = guard
            .state
            .run(id)
            .map(|run| view(&guard.state, run))
            .ok_or_else(|| ApiError::NotFound(format!("run {id:?} not found")))?;
        drop(guard);
        Ok(Response::new(pb::GetRunResponse { run: Some(run) }))
    }

    async fn list_runs(&self, request: Request<pb::ListRunsRequest>) -> Result<Response<pb::ListRunsResponse>, Status> {
        let req = request.get_ref();
        if !req.job.is_empty() {
            check_job_name(&req.job).map_err(|d| ApiError::invalid("job", d))?;
        }
        let mut states = Vec::new();
        for (i, raw) in req.states.iter().enumerate() {
            let state = pb::RunState::try_from(*raw)
                .ok()
                .and_then(convert::run_state_from)
                .ok_or_else(|| {
                    ApiError::invalid(
                        format!("states[{i}]"),
                        format!("unknown value {raw}; accepted: pending, assigned, running, succeeded, failed, timed_out, cancelled, lost, skipped, missed"),
                    )
                })?;
            states.push(state);
        }
        let after = parse_token(&req.page_token)?;
        let page_size = match req.page_size as usize {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        let (since, until) = (convert::instant(&req.since), convert::instant(&req.until));
        let linearizable = is_linearizable(req.consistency)?;
        if linearizable {
            forward_if_follower!(self.node, request, RunServiceClient::list_runs);
            self.node.ensure_linearizable().await?;
        }
        let req = request.get_ref();
        let applied = self.node.state.read();
        let job_uid = if req.job.is_empty() {
            None
        } else {
            let job = applied
                .state
                .job(&req.job)
                .ok_or_else(|| ApiError::NotFound(format!("job {:?} not found", req.job)))?;
            Some(job.uid.clone())
        };
        let filter = Filter {
            job_uid,
            states,
            since,
            until,
        };
        let (runs, next_page_token) = list(&applied.state, &filter, after, page_size);
        Ok(Response::new(pb::ListRunsResponse { runs, next_page_token }))
    }

    async fn watch_runs(
        &self,
        request: Request<pb::WatchRunsRequest>,
    ) -> Result<Response<Self::WatchRunsStream>, Status> {
        let req = request.into_inner();
        if !req.job.is_empty() {
            check_job_name(&req.job).map_err(|d| ApiError::invalid("job", d))?;
        }
        let node = self.node.clone();
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(async move {
            let mut changes = node.state.subscribe();
            let mut seen = 0u64;
            let mut first = true;
            loop {
                let batch: Vec<pb::Run> = {
                    let applied = node.state.read();
                    let state = &applied.state;
                    let wanted = |run: &Run| req.job.is_empty() || run.job == req.job;
                    let updated = &state.index().updated;
                    let changed: Vec<&Run> = if first && req.include_existing {
                        updated.iter().filter_map(|(_, id)| state.run(id)).collect()
                    } else if first {
                        Vec::new()
                    } else {
                        updated
                            .range((seen + 1, RunId::from(""))..)
                            .filter_map(|(_, id)| state.run(id))
                            .collect()
                    };
                    if first {
                        seen = updated.last().map_or(0, |(i, _)| *i);
                    }
                    first = false;
                    for run in &changed {
                        seen = seen.max(run.updated_index);
                    }
                    changed
                        .into_iter()
                        .filter(|r| wanted(r))
                        .map(|r| view(state, r))
                        .collect()
                };
                for run in batch {
                    if tx.send(Ok(pb::WatchRunsResponse { run: Some(run) })).await.is_err() {
                        return;
                    }
                }
                tokio::select! {
                    () = tx.closed() => return,
                    changed = changes.changed() => if changed.is_err() { return },
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn cancel_run(
        &self,
        request: Request<pb::CancelRunRequest>,
    ) -> Result<Response<pb::CancelRunResponse>, Status> {
        check_id("id", &request.get_ref().id)?;
        forward_if_follower!(self.node, request, RunServiceClient::cancel_run);
        let run = request.into_inner().id;
        let answer = self.node.propose(Op::CancelRun { run: run.into() }).await?;
        Ok(Response::new(pb::CancelRunResponse {
            run: Some(expect_run(answer)?),
        }))
    }

    async fn trigger_run(
        &self,
        request: Request<pb::TriggerRunRequest>,
    ) -> Result<Response<pb::TriggerRunResponse>, Status> {
        let req = request.get_ref();
        check_job_name(&req.job).map_err(|d| ApiError::invalid("job", d))?;
        check_id("request_id", &req.request_id)?;
        for (key, value) in &req.params {
            check_env_entry(key, value).map_err(|d| ApiError::invalid(format!("params[{key:?}]"), d))?;
        }
        forward_if_follower!(self.node, request, RunServiceClient::trigger_run);
        let req = request.into_inner();
        let answer = self
            .node
            .propose(Op::TriggerRun {
                job: req.job,
                request_id: req.request_id,
                params: req.params.into_iter().collect::<BTreeMap<_, _>>(),
                force: req.force,
                // The trace this call belongs to: the run (and the attempts
                // workers make of it) joins it.
                trace: rota_proto::trace::traceparent(&tracing::Span::current()),
            })
            .await?;
        match answer {
            Answer::Triggered { run, existing } => Ok(Response::new(pb::TriggerRunResponse {
                run: Some(view(&self.node.state.read().state, &run)),
                existing,
            })),
            other => Err(ApiError::Unavailable(format!("unexpected state machine answer {other:?}")).into()),
        }
    }

    async fn get_logs(&self, request: Request<pb::GetLogsRequest>) -> Result<Response<Self::GetLogsStream>, Status> {
        let req = request.into_inner();
        check_id("run_id", &req.run_id)?;
        // Logs are read from this server's own state: a run just created
        // through the leader may take a moment to be applied here (a client
        // that triggered it through this follower reads its logs here next).
        let mut changes = self.node.state.subscribe();
        let appeared = tokio::time::timeout(CATCH_UP, async {
            while self.node.state.read().state.run(&req.run_id).is_none() {
                if changes.changed().await.is_err() {
                    return false;
                }
            }
            true
        })
        .await;
        if appeared != Ok(true) {
            return Err(ApiError::NotFound(format!("run {:?} not found", req.run_id)).into());
        }
        let node = self.node.clone();
        let (tx, rx) = mpsc::channel(LOG_PAGE);
        tokio::spawn(async move {
            let mut changes = node.state.subscribe();
            let mut next = req.from_seq;
            loop {
                // Read whether the run is done before reading chunks, so no
                // chunk applied in between is missed.
                let done = node.state.read().state.run(&req.run_id).is_none_or(|r| !r.is_active());
                let chunks = match node.state.log_chunks(&req.run_id, next, LOG_PAGE) {
                    Ok(chunks) => chunks,
                    Err(e) => {
                        let _ = tx.send(Err(Status::internal(format!("reading the log: {e}")))).await;
                        return;
                    }
                };
                let full_page = chunks.len() == LOG_PAGE;
                for chunk in chunks {
                    next = chunk.seq + 1;
                    let message = pb::LogChunk {
                        seq: chunk.seq,
                        epoch: chunk.epoch,
                        stream: convert::log_stream(chunk.stream) as i32,
                        data: chunk.data,
                    };
                    if tx.send(Ok(message)).await.is_err() {
                        return;
                    }
                }
                if full_page {
                    continue;
                }
                if !req.follow || done {
                    return;
                }
                tokio::select! {
                    () = tx.closed() => return,
                    changed = changes.changed() => if changed.is_err() { return },
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
