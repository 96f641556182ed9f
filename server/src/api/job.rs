//! `rota.v1.JobService`: job definitions.

use std::sync::Arc;

use crate::secrets::Keyring;
use chrono::{DateTime, SecondsFormat, Utc};
use rota_proto::v1 as pb;
use rota_proto::v1::job_service_client::JobServiceClient;
use rota_proto::v1::job_service_server::JobService;
use tonic::{Request, Response, Status};

use super::{ApiError, convert, forward_if_follower, is_linearizable};
use crate::node::NodeHandle;
use crate::spec::{self, check_job_name};
use crate::state::job::{Trigger, format_duration};
use crate::state::schedule::{self, DstShift};
use crate::state::{JobSpec, Op, Response as Answer};

/// Default and largest page of `ListJobs`.
const DEFAULT_PAGE_SIZE: usize = 100;
const MAX_PAGE_SIZE: usize = 1000;

/// Default and largest number of fire times of `ExplainSchedule`.
const DEFAULT_FIRES: usize = 10;
const MAX_FIRES: usize = 1000;

/// `ExplainSchedule`'s answer for `spec`, anchored at `anchor`.
fn explain(spec: &JobSpec, anchor: DateTime<Utc>, after: DateTime<Utc>, count: usize) -> pb::ExplainScheduleResponse {
    let schedule = &spec.schedule;
    let tz = schedule.timezone;
    let Some(trigger) = &schedule.trigger else {
        return pb::ExplainScheduleResponse {
            schedule: "on demand".into(),
            timezone: tz.name().into(),
            fires: Vec::new(),
            note: "the job has no schedule: it runs only when triggered".into(),
        };
    };
    let words = match trigger {
        Trigger::Cron(expr) => format!("cron {expr} in {}", tz.name()),
        Trigger::Every(every) => format!("every {}", format_duration(*every)),
        Trigger::At(at) => format!("at {}", at.to_rfc3339_opts(SecondsFormat::Secs, true)),
    };
    let fires: Vec<pb::FireTime> = schedule::upcoming(trigger, tz, anchor, after, count)
        .into_iter()
        .map(|(at, shift)| {
            let day = at.with_timezone(&tz).format("%Y-%m-%d");
            let dst_note = match shift {
                None => String::new(),
                Some(DstShift::Gap(local)) => format!(
                    "{} does not exist in {} on {day} (clocks go forward); fires at the first instant after the gap",
                    local.format("%H:%M:%S"),
                    tz.name()
                ),
                Some(DstShift::Fold(local)) => format!(
                    "{} occurs twice in {} on {day} (clocks go back); fires once, at the first occurrence",
                    local.format("%H:%M:%S"),
                    tz.name()
                ),
            };
            pb::FireTime {
                at: Some(convert::timestamp(at)),
                local_time: at.with_timezone(&tz).to_rfc3339_opts(SecondsFormat::Secs, false),
                dst_note,
            }
        })
        .collect();
    let note = if fires.len() < count {
        format!("the schedule fires only {} more time(s)", fires.len())
    } else {
        String::new()
    };
    pb::ExplainScheduleResponse {
        schedule: words,
        timezone: tz.name().into(),
        fires,
        note,
    }
}

/// Serves `JobService` on a node.
#[derive(Clone)]
pub struct JobApi {
    node: NodeHandle,
    secrets: Option<Arc<Keyring>>,
}

impl JobApi {
    /// Serves jobs of `node`.
    pub fn new(node: NodeHandle, secrets: Option<Arc<Keyring>>) -> Self {
        Self { node, secrets }
    }

    /// A spec to write: validated, its secret values sealed.
    fn accept(&self, spec: Option<&pb::JobSpec>) -> Result<JobSpec, ApiError> {
        let mut spec = validate(spec)?;
        if spec.task.secret_env.is_empty() {
            return Ok(spec);
        }
        let Some(keyring) = &self.secrets else {
            return Err(ApiError::FailedPrecondition(
                "task.secret_env: this cluster has no secrets key; set secrets.key_file (the same file on every \
                 server; rotactl tls init writes secrets.key) or use task.env"
                    .into(),
            ));
        };
        keyring
            .seal_all(&spec.name, &mut spec.task.secret_env)
            .map_err(|(name, e)| ApiError::invalid(format!("task.secret_env[{name:?}]"), e.to_string()))?;
        Ok(spec)
    }

    /// Waits for a linearizable read if asked; on a follower the caller has
    /// already forwarded such reads.
    async fn read_barrier(&self, linearizable: bool) -> Result<(), ApiError> {
        if linearizable {
            self.node.ensure_linearizable().await?;
        }
        Ok(())
    }
}

fn validate(spec: Option<&pb::JobSpec>) -> Result<JobSpec, ApiError> {
    let spec = spec.ok_or_else(|| ApiError::invalid("spec", "is required"))?;
    spec::validate(spec).map_err(ApiError::Spec)
}

fn check_name(name: &str) -> Result<(), ApiError> {
    check_job_name(name).map_err(|description| ApiError::invalid("name", description))
}

fn expect_job(answer: Answer) -> Result<pb::Job, ApiError> {
    match answer {
        Answer::Job(job) => Ok(convert::job(&job)),
        other => Err(ApiError::Unavailable(format!(
            "unexpected state machine answer {other:?}"
        ))),
    }
}

fn new_uid() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[tonic::async_trait]
impl JobService for JobApi {
    async fn create_job(
        &self,
        request: Request<pb::CreateJobRequest>,
    ) -> Result<Response<pb::CreateJobResponse>, Status> {
        let spec = self.accept(request.get_ref().spec.as_ref())?;
        forward_if_follower!(self.node, request, JobServiceClient::create_job);
        let answer = self.node.propose(Op::CreateJob { uid: new_uid(), spec }).await?;
        Ok(Response::new(pb::CreateJobResponse {
            job: Some(expect_job(answer)?),
        }))
    }

    async fn update_job(
        &self,
        request: Request<pb::UpdateJobRequest>,
    ) -> Result<Response<pb::UpdateJobResponse>, Status> {
        let spec = self.accept(request.get_ref().spec.as_ref())?;
        let expected_generation = request.get_ref().expected_generation;
        forward_if_follower!(self.node, request, JobServiceClient::update_job);
        let answer = self
            .node
            .propose(Op::UpdateJob {
                spec,
                expected_generation,
            })
            .await?;
        Ok(Response::new(pb::UpdateJobResponse {
            job: Some(expect_job(answer)?),
        }))
    }

    async fn apply_job(&self, request: Request<pb::ApplyJobRequest>) -> Result<Response<pb::ApplyJobResponse>, Status> {
        let spec = self.accept(request.get_ref().spec.as_ref())?;
        let dry_run = request.get_ref().dry_run;
        forward_if_follower!(self.node, request, JobServiceClient::apply_job);
        if dry_run {
            self.read_barrier(true).await?;
            let (job, outcome, previous) = self.node.state.read().state.preview_apply(&spec, Utc::now());
            return Ok(Response::new(pb::ApplyJobResponse {
                job: Some(convert::job(&job)),
                outcome: convert::apply_outcome(outcome) as i32,
                previous: previous.as_ref().map(convert::job),
            }));
        }
        match self.node.propose(Op::ApplyJob { uid: new_uid(), spec }).await? {
            Answer::Applied { job, outcome, previous } => Ok(Response::new(pb::ApplyJobResponse {
                job: Some(convert::job(&job)),
                outcome: convert::apply_outcome(outcome) as i32,
                previous: previous.as_ref().map(convert::job),
            })),
            other => Err(ApiError::Unavailable(format!("unexpected state machine answer {other:?}")).into()),
        }
    }

    async fn get_job(&self, request: Request<pb::GetJobRequest>) -> Result<Response<pb::GetJobResponse>, Status> {
        check_name(&request.get_ref().name)?;
        let linearizable = is_linearizable(request.get_ref().consistency)?;
        if linearizable {
            forward_if_follower!(self.node, request, JobServiceClient::get_job);
        }
        self.read_barrier(linearizable).await?;
        let name = &request.get_ref().name;
        let job = self
            .node
            .state
            .read()
            .state
            .job(name)
            .map(convert::job)
            .ok_or_else(|| ApiError::NotFound(format!("job {name:?} not found")))?;
        Ok(Response::new(pb::GetJobResponse { job: Some(job) }))
    }

    async fn list_jobs(&self, request: Request<pb::ListJobsRequest>) -> Result<Response<pb::ListJobsResponse>, Status> {
        let page_size = match request.get_ref().page_size as usize {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        let token = request.get_ref().page_token.clone();
        if !token.is_empty() && check_job_name(&token).is_err() {
            return Err(ApiError::invalid(
                "page_token",
                "is not a token returned by ListJobs; pass next_page_token unchanged",
            )
            .into());
        }
        let linearizable = is_linearizable(request.get_ref().consistency)?;
        if linearizable {
            forward_if_follower!(self.node, request, JobServiceClient::list_jobs);
        }
        self.read_barrier(linearizable).await?;
        let applied = self.node.state.read();
        let after = (!token.is_empty()).then_some(token.as_str());
        let mut jobs: Vec<pb::Job> = applied
            .state
            .jobs_after(after)
            .take(page_size + 1)
            .map(convert::job)
            .collect();
        let next_page_token = if jobs.len() > page_size {
            jobs.truncate(page_size);
            jobs.last().map(|j| j.name.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListJobsResponse { jobs, next_page_token }))
    }

    async fn delete_job(
        &self,
        request: Request<pb::DeleteJobRequest>,
    ) -> Result<Response<pb::DeleteJobResponse>, Status> {
        check_name(&request.get_ref().name)?;
        forward_if_follower!(self.node, request, JobServiceClient::delete_job);
        let pb::DeleteJobRequest { name, expected_uid } = request.into_inner();
        let expected_uid = (!expected_uid.is_empty()).then_some(expected_uid);
        let answer = self.node.propose(Op::DeleteJob { name, expected_uid }).await?;
        Ok(Response::new(pb::DeleteJobResponse {
            job: Some(expect_job(answer)?),
        }))
    }

    async fn suspend_job(
        &self,
        request: Request<pb::SuspendJobRequest>,
    ) -> Result<Response<pb::SuspendJobResponse>, Status> {
        check_name(&request.get_ref().name)?;
        forward_if_follower!(self.node, request, JobServiceClient::suspend_job);
        let name = request.into_inner().name;
        let answer = self.node.propose(Op::SetJobSuspended { name, suspended: true }).await?;
        Ok(Response::new(pb::SuspendJobResponse {
            job: Some(expect_job(answer)?),
        }))
    }

    async fn resume_job(
        &self,
        request: Request<pb::ResumeJobRequest>,
    ) -> Result<Response<pb::ResumeJobResponse>, Status> {
        check_name(&request.get_ref().name)?;
        forward_if_follower!(self.node, request, JobServiceClient::resume_job);
        let name = request.into_inner().name;
        let answer = self
            .node
            .propose(Op::SetJobSuspended { name, suspended: false })
            .await?;
        Ok(Response::new(pb::ResumeJobResponse {
            job: Some(expect_job(answer)?),
        }))
    }

    async fn explain_schedule(
        &self,
        request: Request<pb::ExplainScheduleRequest>,
    ) -> Result<Response<pb::ExplainScheduleResponse>, Status> {
        let req = request.get_ref().clone();
        let count = match req.count as usize {
            0 => DEFAULT_FIRES,
            n if n > MAX_FIRES => {
                return Err(ApiError::invalid("count", format!("must be at most {MAX_FIRES}")).into());
            }
            n => n,
        };
        let after = match &req.after {
            None => Utc::now(),
            Some(_) => {
                convert::instant(&req.after).ok_or_else(|| ApiError::invalid("after", "is not a valid instant"))?
            }
        };
        match &req.source {
            Some(pb::explain_schedule_request::Source::Spec(spec)) => {
                let spec = validate(Some(spec))?;
                Ok(Response::new(explain(&spec, after, after, count)))
            }
            Some(pb::explain_schedule_request::Source::Job(name)) => {
                check_name(name)?;
                let linearizable = is_linearizable(req.consistency)?;
                if linearizable {
                    forward_if_follower!(self.node, request, JobServiceClient::explain_schedule);
                }
                self.read_barrier(linearizable).await?;
                let (spec, anchor, suspended) = {
                    let state = self.node.state.read();
                    let job = state
                        .state
                        .job(name)
                        .ok_or_else(|| ApiError::NotFound(format!("job {name:?} not found")))?;
                    (job.spec.clone(), job.anchor, job.suspended)
                };
                let mut answer = explain(&spec, anchor, after, count);
                if suspended {
                    answer.note = format!(
                        "the job is suspended: none of these fire unless it is resumed before them. {}",
                        answer.note
                    )
                    .trim_end()
                    .to_owned();
                }
                Ok(Response::new(answer))
            }
            None => Err(ApiError::invalid("source", "give a job name (job) or a job spec (spec)").into()),
        }
    }
}
