//! `rota_client`: the Rust SDK of rota.
//!
//! A [`Client`] talks to a cluster through any of its servers. It finds the
//! leader from the `rota-leader` hints servers attach to `UNAVAILABLE`,
//! remembers it, retries with exponential backoff and jitter while the
//! cluster elects a leader or a server is down, and gives every attempt a
//! deadline. Errors are an [`Error`] you can match on.
//!
//! ```no_run
//! # async fn example() -> Result<(), rota_client::Error> {
//! use rota_client::{Client, SpecFile};
//!
//! let client = Client::connect(["127.0.0.1:7401", "127.0.0.1:7402", "127.0.0.1:7403"])?;
//! let spec = SpecFile::parse_yaml(
//!     "name: hello\nschedule: { cron: '*/5 * * * *' }\ntask: { image: 'debian:12', command: [echo, hi] }\n",
//! )?;
//! let applied = client.apply_job(spec[0].to_proto(), false).await?;
//! println!("job {} at generation {}", applied.job.name, applied.job.generation);
//! for job in client.list_jobs(rota_client::Consistency::Linearizable).await? {
//!     println!("{}", job.name);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Running a job and following it: trigger (idempotent by request id),
//! stream the output until the run ends, read how it ended; watch a job's
//! runs as they change; match on errors.
//!
//! ```no_run
//! # async fn example(client: rota_client::Client) -> Result<(), rota_client::Error> {
//! use rota_client::{Consistency, Error, proto::RunState};
//!
//! let (run, _existing) = client
//!     .trigger_run("nightly-build", Some("nightly-2026-11-28"), Default::default(), false)
//!     .await?;
//! let mut output = client.logs(&run.id, true, 0).await?;
//! while let Some(chunk) = output.message().await? {
//!     print!("{}", String::from_utf8_lossy(&chunk.data));
//! }
//! let run = client.get_run(&run.id, Consistency::Linearizable).await?;
//! if run.state() != RunState::Succeeded {
//!     eprintln!("{}: {}", run.id, run.reason);
//! }
//!
//! let mut changes = client.watch_runs("nightly-build", false).await?;
//! if let Some(change) = changes.message().await? {
//!     let run = change.run.unwrap_or_default();
//!     println!("{} is now {:?}", run.id, run.state());
//! }
//!
//! match client.get_job("no-such-job", Consistency::Linearizable).await {
//!     Ok(job) => println!("{}", job.name),
//!     Err(Error::NotFound(message)) => eprintln!("{message}"),
//!     Err(Error::Unreachable { endpoints, .. }) => eprintln!("no server answers at {endpoints:?}"),
//!     Err(other) => return Err(other),
//! }
//! # Ok(())
//! # }
//! ```
//!
//! The examples are `no_run` (they need a cluster); the integration test
//! `chaos-tests/tests/sdk.rs` makes the same calls against a real
//! three-server cluster and a worker.

pub mod certs;
mod error;
pub mod spec_file;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
pub use rota_proto::tls;
pub use rota_proto::tls::TlsFiles;
use rota_proto::tls::{Connector, Role, Tls};
pub use rota_proto::token;
use rota_proto::v1 as pb;
use rota_proto::v1::cluster_service_client::ClusterServiceClient;
use rota_proto::v1::job_service_client::JobServiceClient;
use rota_proto::v1::run_service_client::RunServiceClient;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status, Streaming};

pub use error::{Error, FieldViolation};
pub use rota_proto::v1 as proto;
pub use spec_file::SpecFile;

/// Default server endpoint when none is given.
pub const DEFAULT_ENDPOINT: &str = "127.0.0.1:7400";

/// How fresh a read must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Consistency {
    /// Reflects every write acknowledged before the read (served by the leader).
    #[default]
    Linearizable,
    /// Whatever the answering server has applied; works without a leader.
    Stale,
}

impl Consistency {
    /// As the `consistency` field of a request (`rota.v1.ReadConsistency`).
    pub fn to_proto(self) -> i32 {
        match self {
            Consistency::Linearizable => pb::ReadConsistency::Linearizable as i32,
            Consistency::Stale => pb::ReadConsistency::Stale as i32,
        }
    }
}

/// Retry, deadline and security settings.
#[derive(Clone)]
pub struct ClientOptions {
    /// Deadline of each attempt.
    pub timeout: Duration,
    /// Attempts per call, including the first.
    pub max_attempts: u32,
    /// Delay after the first failed attempt; doubled each time, with jitter.
    pub initial_backoff: Duration,
    /// Cap on the delay.
    pub max_backoff: Duration,
    /// Deadline for opening a connection.
    pub connect_timeout: Duration,
    /// The API token sent with every call (`authorization: Bearer`).
    pub token: Option<String>,
    /// Mutual TLS: the cluster's CA and a client certificate.
    pub tls: Option<TlsFiles>,
}

impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientOptions")
            .field("timeout", &self.timeout)
            .field("max_attempts", &self.max_attempts)
            .field("initial_backoff", &self.initial_backoff)
            .field("max_backoff", &self.max_backoff)
            .field("connect_timeout", &self.connect_timeout)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .finish()
    }
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(15),
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(2),
            token: None,
            tls: None,
        }
    }
}

/// The result of an apply.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The job after the apply (for a dry run, as it would be).
    pub job: pb::Job,
    /// What happened.
    pub outcome: pb::ApplyOutcome,
    /// The job before the apply, if it existed.
    pub previous: Option<pb::Job>,
}

/// A connection to a rota cluster. Cheap to clone; clones share connections
/// and the remembered leader.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    options: ClientOptions,
}

struct Inner {
    endpoints: Vec<String>,
    connector: Connector,
    /// `Bearer <token>`, ready to send.
    authorization: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    channels: Mutex<HashMap<String, Channel>>,
    /// The address calls go to first: the last leader learned, or the last
    /// endpoint that answered.
    preferred: Mutex<Option<String>>,
}

/// A request carrying the trace context of the caller's current span (W3C
/// `traceparent`), when the application traces with OpenTelemetry
/// (`tracing-opentelemetry`): the servers' spans, and the worker's for the
/// attempts of a triggered run, join the caller's trace.
fn traced<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    rota_proto::trace::inject(&tracing::Span::current(), request.metadata_mut());
    request
}

/// Strips a scheme and trailing slash: `http://a:1/` → `a:1`.
fn normalize(endpoint: &str) -> String {
    let trimmed = endpoint.trim();
    let without_scheme = trimmed
        .strip_prefix("http://")
        .or_else(|| trimmed.strip_prefix("https://"))
        .unwrap_or(trimmed);
    without_scheme.trim_end_matches('/').to_owned()
}

impl Client {
    /// A client for the servers at `endpoints` (`host:port`, any subset of
    /// the cluster). Does not connect until the first call.
    pub fn connect<I, S>(endpoints: I) -> Result<Client, Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self::with_options(endpoints, ClientOptions::default())
    }

    /// Like [`Client::connect`], with explicit options.
    pub fn with_options<I, S>(endpoints: I, options: ClientOptions) -> Result<Client, Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut list: Vec<String> = endpoints
            .into_iter()
            .map(|e| normalize(e.as_ref()))
            .filter(|e| !e.is_empty())
            .collect();
        list.dedup();
        if list.is_empty() {
            list.push(DEFAULT_ENDPOINT.to_owned());
        }
        let tls = match &options.tls {
            Some(files) => Some(Tls::load(files.clone(), Role::Client).map_err(|e| Error::Tls(e.to_string()))?),
            None => None,
        };
        let authorization = match &options.token {
            Some(token) => Some(
                format!("Bearer {}", token.trim())
                    .parse()
                    .map_err(|_| Error::Tls("the token has characters a gRPC header cannot carry".into()))?,
            ),
            None => None,
        };
        let client = Client {
            options,
            inner: Arc::new(Inner {
                endpoints: list,
                connector: Connector::new(tls.as_ref()),
                authorization,
                channels: Mutex::new(HashMap::new()),
                preferred: Mutex::new(None),
            }),
        };
        for endpoint in &client.inner.endpoints {
            endpoint_for(endpoint)?;
        }
        Ok(client)
    }

    /// The same client (sharing connections and the remembered leader) with
    /// another deadline for each attempt of its calls — for one slow call,
    /// or a quick check:
    ///
    /// ```no_run
    /// # async fn example(client: rota_client::Client) -> Result<(), rota_client::Error> {
    /// use std::time::Duration;
    /// let quick = client.with_timeout(Duration::from_secs(2));
    /// let members = quick.members(rota_client::Consistency::Stale).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_timeout(&self, timeout: Duration) -> Client {
        let mut client = self.clone();
        client.options.timeout = timeout;
        client
    }

    /// The endpoints this client was given.
    pub fn endpoints(&self) -> &[String] {
        &self.inner.endpoints
    }

    fn channel(&self, addr: &str) -> Result<Channel, Error> {
        let mut channels = self.inner.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(channel) = channels.get(addr) {
            return Ok(channel.clone());
        }
        let channel = self
            .inner
            .connector
            .channel(endpoint_for(addr)?.connect_timeout(self.options.connect_timeout));
        channels.insert(addr.to_owned(), channel.clone());
        Ok(channel)
    }

    fn preferred(&self) -> Option<String> {
        self.inner.preferred.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_preferred(&self, addr: Option<String>) {
        *self.inner.preferred.lock().unwrap_or_else(|p| p.into_inner()) = addr;
    }

    /// A request carrying the caller's trace context and the token.
    fn authorized<T>(&self, message: T) -> Request<T> {
        let mut request = traced(message);
        if let Some(authorization) = &self.inner.authorization {
            request.metadata_mut().insert("authorization", authorization.clone());
        }
        request
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = self.authorized(message);
        request.set_timeout(self.options.timeout);
        request
    }

    /// Runs `call` against the cluster: at the preferred server first, then
    /// at a leader named in a hint, then at each endpoint in turn, backing
    /// off between rounds. `UNAVAILABLE` (nothing was done) is always
    /// retried. A call that broke in flight (`UNKNOWN`, a connection reset)
    /// or whose answer did not come within the deadline may have been
    /// applied, so it is retried only when `idempotent` (reads, and writes
    /// that carry a request id or whose repetition changes nothing);
    /// otherwise the caller gets the error. Every other error is returned
    /// at once.
    async fn call<T, F, Fut>(&self, idempotent: bool, call: F) -> Result<T, Error>
    where
        F: Fn(Channel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let options = &self.options;
        let endpoints = &self.inner.endpoints;
        let mut next_endpoint = 0usize;
        let mut backoff = options.initial_backoff;
        let mut last_error = String::new();
        let mut any_server_answered = false;
        for attempt in 0..options.max_attempts.max(1) {
            let target = match self.preferred() {
                Some(addr) => addr,
                None => {
                    let addr = endpoints[next_endpoint % endpoints.len()].clone();
                    next_endpoint += 1;
                    addr
                }
            };
            let channel = self.channel(&target)?;
            let outcome = tokio::time::timeout(options.timeout, call(channel)).await;
            let status = match outcome {
                Ok(Ok(response)) => {
                    self.set_preferred(Some(target));
                    return Ok(response.into_inner());
                }
                Ok(Err(status)) => status,
                Err(_) if !idempotent => {
                    return Err(Error::OutcomeUnknown(format!(
                        "no answer from {target} within {:?}; the call may or may not have taken effect",
                        options.timeout
                    )));
                }
                Err(_) => Status::deadline_exceeded(format!("no answer from {target} within {:?}", options.timeout)),
            };
            // A server's own status carries response headers; a transport
            // failure (refused, reset mid-call) has none.
            let from_server = !status.metadata().is_empty();
            let retryable = match status.code() {
                // Nothing was done: not the leader, no leader, or no connection.
                Code::Unavailable => true,
                // The call broke in flight or its answer did not come in
                // time; it may have been applied.
                Code::Unknown | Code::Cancelled | Code::DeadlineExceeded => idempotent,
                _ => false,
            };
            if !retryable {
                return Err(status.into());
            }
            // A call that timed out reached something that took it; the
            // addresses are not simply wrong.
            any_server_answered |= from_server || status.code() == Code::DeadlineExceeded;
            last_error = format!("{target}: {}", status.message());
            let hint = status
                .metadata()
                .get(rota_proto::LEADER_METADATA_KEY)
                .and_then(|v| v.to_str().ok())
                .map(normalize)
                .filter(|hint| *hint != target);
            match hint {
                Some(leader) => {
                    // Go straight to the leader; only back off if it fails too.
                    self.set_preferred(Some(leader));
                    if attempt == 0 {
                        continue;
                    }
                }
                None => self.set_preferred(None),
            }
            // Nobody has answered for three rounds over every endpoint: the
            // addresses are wrong or the whole cluster is down; say so now.
            if !any_server_answered && attempt + 1 >= 3 * endpoints.len() as u32 {
                break;
            }
            let jitter = rand::rng().random_range(0.5..1.0);
            tokio::time::sleep(backoff.mul_f64(jitter)).await;
            backoff = (backoff * 2).min(options.max_backoff);
        }
        if any_server_answered {
            Err(Error::Unavailable(format!(
                "the cluster did not serve the request after {} attempts; last error: {last_error}",
                options.max_attempts
            )))
        } else {
            Err(Error::Unreachable {
                endpoints: endpoints.clone(),
                last_error,
            })
        }
    }

    fn runs(channel: Channel) -> RunServiceClient<Channel> {
        RunServiceClient::new(channel)
    }

    fn jobs(channel: Channel) -> JobServiceClient<Channel> {
        JobServiceClient::new(channel)
    }

    fn cluster(channel: Channel) -> ClusterServiceClient<Channel> {
        ClusterServiceClient::new(channel)
    }

    /// Creates a job; [`Error::AlreadyExists`] if the name is taken.
    pub async fn create_job(&self, spec: pb::JobSpec) -> Result<pb::Job, Error> {
        let response = self
            .call(false, |ch| {
                let request = self.request(pb::CreateJobRequest {
                    spec: Some(spec.clone()),
                });
                async move { Self::jobs(ch).create_job(request).await }
            })
            .await?;
        response.job.ok_or_else(missing("job"))
    }

    /// Replaces the spec of an existing job; with `expected_generation`,
    /// only if the job is still at that generation.
    pub async fn update_job(&self, spec: pb::JobSpec, expected_generation: Option<u64>) -> Result<pb::Job, Error> {
        let response = self
            .call(expected_generation.is_none(), |ch| {
                let request = self.request(pb::UpdateJobRequest {
                    spec: Some(spec.clone()),
                    expected_generation,
                });
                async move { Self::jobs(ch).update_job(request).await }
            })
            .await?;
        response.job.ok_or_else(missing("job"))
    }

    /// Creates or updates a job (`dry_run`: only reports what would change).
    pub async fn apply_job(&self, spec: pb::JobSpec, dry_run: bool) -> Result<Applied, Error> {
        let response = self
            .call(true, |ch| {
                let request = self.request(pb::ApplyJobRequest {
                    spec: Some(spec.clone()),
                    dry_run,
                });
                async move { Self::jobs(ch).apply_job(request).await }
            })
            .await?;
        Ok(Applied {
            outcome: response.outcome(),
            job: response.job.ok_or_else(missing("job"))?,
            previous: response.previous,
        })
    }

    /// One job.
    pub async fn get_job(&self, name: &str, consistency: Consistency) -> Result<pb::Job, Error> {
        let response = self
            .call(true, |ch| {
                let request = self.request(pb::GetJobRequest {
                    name: name.to_owned(),
                    consistency: consistency.to_proto(),
                });
                async move { Self::jobs(ch).get_job(request).await }
            })
            .await?;
        response.job.ok_or_else(missing("job"))
    }

    /// One page of jobs, in name order; pass the returned token to get the next.
    pub async fn list_jobs_page(
        &self,
        page_size: u32,
        page_token: &str,
        consistency: Consistency,
    ) -> Result<(Vec<pb::Job>, String), Error> {
        let response = self
            .call(true, |ch| {
                let request = self.request(pb::ListJobsRequest {
                    page_size,
                    page_token: page_token.to_owned(),
                    consistency: consistency.to_proto(),
                });
                async move { Self::jobs(ch).list_jobs(request).await }
            })
            .await?;
        Ok((response.jobs, response.next_page_token))
    }

    /// Every job, in name order (all pages).
    pub async fn list_jobs(&self, consistency: Consistency) -> Result<Vec<pb::Job>, Error> {
        let mut jobs = Vec::new();
        let mut token = String::new();
        loop {
            let (page, next) = self.list_jobs_page(500, &token, consistency).await?;
            jobs.extend(page);
            if next.is_empty() {
                return Ok(jobs);
            }
            token = next;
        }
    }

    /// Deletes a job; returns it as it was.
    pub async fn delete_job(&self, name: &str) -> Result<pb::Job, Error> {
        self.delete_job_if_uid(name, "").await
    }

    /// Deletes job `name` only if its uid is `uid` (not a job re-created
    /// under the same name meanwhile: [`Error::FailedPrecondition`]); an
    /// empty `uid` deletes whatever job has the name.
    pub async fn delete_job_if_uid(&self, name: &str, uid: &str) -> Result<pb::Job, Error> {
        let response = self
            .call(false, |ch| {
                let request = self.request(pb::DeleteJobRequest {
                    name: name.to_owned(),
                    expected_uid: uid.to_owned(),
                });
                async move { Self::jobs(ch).delete_job(request).await }
            })
            .await?;
        response.job.ok_or_else(missing("job"))
    }

    /// Stops a job's schedule from firing.
    pub async fn suspend_job(&self, name: &str) -> Result<pb::Job, Error> {
        let response = self
            .call(true, |ch| {
                let request = self.request(pb::SuspendJobRequest { name: name.to_owned() });
                async move { Self::jobs(ch).suspend_job(request).await }
            })
            .await?;
        response.job.ok_or_else(missing("job"))
    }

    /// Lets a suspended job's schedule fire again.
    pub async fn resume_job(&self, name: &str) -> Result<pb::Job, Error> {
        let response = self
            .call(true, |ch| {
                let request = self.request(pb::ResumeJobRequest { name: name.to_owned() });
                async move { Self::jobs(ch).resume_job(request).await }
            })
            .await?;
        response.job.ok_or_else(missing("job"))
    }

    /// The next `count` fire times (0: ten) of a job's schedule, or of a
    /// spec not applied yet, after `after` (default: now): in UTC, in the
    /// job's zone, with notes on slots daylight saving time moves.
    pub async fn explain_schedule(
        &self,
        source: pb::explain_schedule_request::Source,
        count: u32,
        after: Option<std::time::SystemTime>,
        consistency: Consistency,
    ) -> Result<pb::ExplainScheduleResponse, Error> {
        let after = after.map(prost_types::Timestamp::from);
        self.call(true, |ch| {
            let request = self.request(pb::ExplainScheduleRequest {
                source: Some(source.clone()),
                count,
                after,
                consistency: consistency.to_proto(),
            });
            async move { Self::jobs(ch).explain_schedule(request).await }
        })
        .await
    }

    /// Runs job `job` now. `request_id` makes the trigger idempotent (a
    /// retry with the same id returns the same run); `None` makes one up,
    /// which still covers this call's own retries. Returns the run and
    /// whether an earlier trigger had created it.
    pub async fn trigger_run(
        &self,
        job: &str,
        request_id: Option<&str>,
        params: HashMap<String, String>,
        force: bool,
    ) -> Result<(pb::Run, bool), Error> {
        let request_id = request_id.map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
        let response = self
            .call(true, |ch| {
                let request = self.request(pb::TriggerRunRequest {
                    job: job.to_owned(),
                    request_id: request_id.clone(),
                    params: params.clone(),
                    force,
                });
                async move { Self::runs(ch).trigger_run(request).await }
            })
            .await?;
        Ok((response.run.ok_or_else(missing("run"))?, response.existing))
    }

    /// One run.
    pub async fn get_run(&self, id: &str, consistency: Consistency) -> Result<pb::Run, Error> {
        let response = self
            .call(true, |ch| {
                let request = self.request(pb::GetRunRequest {
                    id: id.to_owned(),
                    consistency: consistency.to_proto(),
                });
                async move { Self::runs(ch).get_run(request).await }
            })
            .await?;
        response.run.ok_or_else(missing("run"))
    }

    /// One page of runs, newest first; pass the returned token to get the
    /// next. `filter.page_size` and `filter.page_token` are used as given.
    pub async fn list_runs_page(&self, filter: &pb::ListRunsRequest) -> Result<(Vec<pb::Run>, String), Error> {
        let response = self
            .call(true, |ch| {
                let request = self.request(filter.clone());
                async move { Self::runs(ch).list_runs(request).await }
            })
            .await?;
        Ok((response.runs, response.next_page_token))
    }

    /// Every run matching `filter`, newest first (all pages).
    pub async fn list_runs(&self, filter: &pb::ListRunsRequest) -> Result<Vec<pb::Run>, Error> {
        let mut filter = filter.clone();
        let mut runs = Vec::new();
        loop {
            let (page, next) = self.list_runs_page(&filter).await?;
            runs.extend(page);
            if next.is_empty() {
                return Ok(runs);
            }
            filter.page_token = next;
        }
    }

    /// Cancels a run; returns it as it is after the cancel.
    pub async fn cancel_run(&self, id: &str) -> Result<pb::Run, Error> {
        let response = self
            .call(true, |ch| {
                let request = self.request(pb::CancelRunRequest { id: id.to_owned() });
                async move { Self::runs(ch).cancel_run(request).await }
            })
            .await?;
        response.run.ok_or_else(missing("run"))
    }

    /// A stream of run changes (of `job`, or all) as they are applied.
    pub async fn watch_runs(
        &self,
        job: &str,
        include_existing: bool,
    ) -> Result<Streaming<pb::WatchRunsResponse>, Error> {
        self.call(true, |ch| {
            let request = self.authorized(pb::WatchRunsRequest {
                job: job.to_owned(),
                include_existing,
            });
            async move { Self::runs(ch).watch_runs(request).await }
        })
        .await
    }

    /// A run's log from chunk `from_seq`; with `follow`, the stream stays
    /// open until the run has ended.
    pub async fn logs(&self, run_id: &str, follow: bool, from_seq: u64) -> Result<Streaming<pb::LogChunk>, Error> {
        self.call(true, |ch| {
            let request = self.authorized(pb::GetLogsRequest {
                run_id: run_id.to_owned(),
                follow,
                from_seq,
            });
            async move { Self::runs(ch).get_logs(request).await }
        })
        .await
    }

    /// The status of the server at `endpoint` itself (no retries elsewhere).
    pub async fn server_status(&self, endpoint: &str) -> Result<pb::GetStatusResponse, Error> {
        let addr = normalize(endpoint);
        let channel = self.channel(&addr)?;
        let request = self.request(pb::GetStatusRequest {});
        match tokio::time::timeout(self.options.timeout, Self::cluster(channel).get_status(request)).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) if status.code() == Code::Unavailable && status.metadata().is_empty() => {
                Err(Error::Unreachable {
                    endpoints: vec![addr.clone()],
                    last_error: status.message().to_owned(),
                })
            }
            Ok(Err(status)) => Err(status.into()),
            Err(_) => Err(Error::DeadlineExceeded(format!(
                "{addr} did not answer within {:?}",
                self.options.timeout
            ))),
        }
    }

    /// The cluster's members, as the leader (or, stale, any server) sees them.
    pub async fn members(&self, consistency: Consistency) -> Result<pb::ListMembersResponse, Error> {
        self.call(true, |ch| {
            let request = self.request(pb::ListMembersRequest {
                consistency: consistency.to_proto(),
            });
            async move { Self::cluster(ch).list_members(request).await }
        })
        .await
    }

    /// Adds a running, unjoined server to the cluster (learner, then voter
    /// unless `learner_only`). Waits until it has caught up.
    pub async fn add_node(&self, node_id: u64, addr: &str, learner_only: bool) -> Result<Vec<pb::Member>, Error> {
        // Catching up may take a while on a big state.
        let patient = self.with_timeout(self.options.timeout.max(Duration::from_secs(150)));
        let response = patient
            .call(false, |ch| {
                let request = patient.request(pb::AddNodeRequest {
                    node_id,
                    addr: addr.to_owned(),
                    learner_only,
                });
                async move { Self::cluster(ch).add_node(request).await }
            })
            .await?;
        Ok(response.members)
    }

    /// Removes a server from the cluster.
    pub async fn remove_node(&self, node_id: u64) -> Result<Vec<pb::Member>, Error> {
        let response = self
            .call(false, |ch| {
                let request = self.request(pb::RemoveNodeRequest { node_id });
                async move { Self::cluster(ch).remove_node(request).await }
            })
            .await?;
        Ok(response.members)
    }

    /// Workers, alive and lost.
    pub async fn list_workers(&self, consistency: Consistency) -> Result<Vec<pb::WorkerInfo>, Error> {
        let response = self
            .call(true, |ch| {
                let request = self.request(pb::ListWorkersRequest {
                    consistency: consistency.to_proto(),
                });
                async move { Self::cluster(ch).list_workers(request).await }
            })
            .await?;
        Ok(response.workers)
    }

    /// Drains worker `id`: no new attempts; those it still runs after
    /// `deadline` (`None`: the server's default, 1 hour) are stopped and
    /// handed back. With `disable`, ends its drain instead.
    pub async fn drain_worker(
        &self,
        id: &str,
        deadline: Option<Duration>,
        disable: bool,
    ) -> Result<pb::WorkerInfo, Error> {
        let deadline = deadline.map(|d| prost_types::Duration {
            seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
        });
        let response = self
            .call(true, |ch| {
                let request = self.request(pb::DrainWorkerRequest {
                    worker_id: id.to_owned(),
                    deadline,
                    disable,
                });
                async move { Self::cluster(ch).drain_worker(request).await }
            })
            .await?;
        response.worker.ok_or_else(missing("worker"))
    }

    /// Creates an API token (admin only); the answer holds its secret, shown
    /// only this once. Not retried after an unknown outcome (a retry would
    /// make a second token).
    pub async fn create_token(
        &self,
        name: &str,
        role: pb::TokenRole,
        ttl: Option<Duration>,
    ) -> Result<pb::CreateTokenResponse, Error> {
        let ttl = ttl.map(|d| prost_types::Duration {
            seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
        });
        self.call(false, |ch| {
            let request = self.request(pb::CreateTokenRequest {
                name: name.to_owned(),
                role: role as i32,
                ttl,
            });
            async move { Self::cluster(ch).create_token(request).await }
        })
        .await
    }

    /// Every token (admin only), revoked ones included; never their secrets.
    pub async fn list_tokens(&self) -> Result<Vec<pb::ApiToken>, Error> {
        let response = self
            .call(true, |ch| {
                let request = self.request(pb::ListTokensRequest {});
                async move { Self::cluster(ch).list_tokens(request).await }
            })
            .await?;
        Ok(response.tokens)
    }

    /// Revokes the token with id `id` (admin only).
    pub async fn revoke_token(&self, id: &str) -> Result<pb::ApiToken, Error> {
        let response = self
            .call(true, |ch| {
                let request = self.request(pb::RevokeTokenRequest { id: id.to_owned() });
                async move { Self::cluster(ch).revoke_token(request).await }
            })
            .await?;
        response.token.ok_or_else(missing("token"))
    }

    /// Moves leadership to `to_node_id` (0: any other voter); returns the new leader.
    pub async fn transfer_leadership(&self, to_node_id: u64) -> Result<u64, Error> {
        let response = self
            .call(false, |ch| {
                let request = self.request(pb::TransferLeadershipRequest { to_node_id });
                async move { Self::cluster(ch).transfer_leadership(request).await }
            })
            .await?;
        self.set_preferred(None);
        Ok(response.leader_id)
    }

    /// A backup of everything the cluster holds (jobs, runs, logs, workers),
    /// made by the leader from a fresh snapshot: the backup file's bytes and
    /// the log position it covers. Start a new cluster from it with
    /// `rota-server --restore-from FILE` on every founding member.
    pub async fn save_snapshot(&self) -> Result<Backup, Error> {
        // Building a snapshot of a big state takes a while (the server gives
        // it up to two minutes).
        let patient = self.with_timeout(self.options.timeout.max(Duration::from_secs(150)));
        let mut stream = patient
            .call(true, |ch| {
                let request = patient.request(pb::SaveSnapshotRequest {});
                async move { Self::cluster(ch).save_snapshot(request).await }
            })
            .await?;
        let mut backup = Backup::default();
        let mut expected = None;
        while let Some(chunk) = stream.message().await? {
            if expected.is_none() {
                expected = Some(chunk.total_bytes);
                backup.last_index = chunk.last_index;
                backup.last_term = chunk.last_term;
            }
            backup.data.extend_from_slice(&chunk.data);
        }
        match expected {
            Some(total) if total == backup.data.len() as u64 => Ok(backup),
            _ => Err(Error::Unreachable {
                endpoints: self.inner.endpoints.clone(),
                last_error: format!(
                    "the backup stream ended early ({} of {} bytes); try again",
                    backup.data.len(),
                    expected.unwrap_or(0)
                ),
            }),
        }
    }
}

/// A backup file made by [`Client::save_snapshot`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backup {
    /// The file's bytes.
    pub data: Vec<u8>,
    /// The last log index it covers.
    pub last_index: u64,
    /// That entry's term.
    pub last_term: u64,
}

/// Checks an address and makes a tonic endpoint of it, without connecting
/// (so a client can be built outside an async runtime).
fn endpoint_for(addr: &str) -> Result<Endpoint, Error> {
    let invalid = |reason: String| Error::InvalidEndpoint {
        endpoint: addr.to_owned(),
        reason,
    };
    let port_ok = addr
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if !port_ok {
        return Err(invalid("expected HOST:PORT, e.g. 127.0.0.1:7400".into()));
    }
    Endpoint::from_shared(format!("http://{addr}")).map_err(|e| invalid(e.to_string()))
}

fn missing(field: &'static str) -> impl FnOnce() -> Error {
    move || Error::Other {
        code: Code::Internal,
        message: format!("server response lacks {field}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_normalized_and_checked() {
        let client = Client::connect(["http://127.0.0.1:1/", " 127.0.0.1:2 "]).expect("valid");
        assert_eq!(client.endpoints(), ["127.0.0.1:1", "127.0.0.1:2"]);
        let client = Client::connect(Vec::<String>::new()).expect("default");
        assert_eq!(client.endpoints(), [DEFAULT_ENDPOINT]);
        let err = Client::connect(["nohost"]).err().expect("invalid");
        assert!(err.to_string().contains("HOST:PORT"), "{err}");
    }

    #[tokio::test]
    async fn unreachable_servers_are_named_in_the_error() {
        // Port 1 on loopback: nothing listens there.
        let client = Client::with_options(
            ["127.0.0.1:1"],
            ClientOptions {
                max_attempts: 2,
                initial_backoff: Duration::from_millis(1),
                ..Default::default()
            },
        )
        .expect("valid");
        let err = client.get_job("a", Consistency::Stale).await.expect_err("unreachable");
        assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");
        assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
        assert_eq!(err.code(), None);
    }
}
