//! Who may call what: the one access check every gRPC call passes
//! ([`AuthLayer`]), and the audit line it writes.
//!
//! Two things are checked, in this order:
//!
//! 1. **The certificate** (when TLS is on): Raft calls need a server's
//!    certificate, the worker protocol a worker's, and the client API a
//!    client's or a server's (servers forward calls to the leader). A worker
//!    certificate therefore cannot call Raft or any client method, whatever
//!    token it sends.
//! 2. **The token** (when `auth.enabled`): `authorization: Bearer <token>`;
//!    its SHA-256 is looked up in the replicated tokens. Roles: `admin`
//!    (membership, tokens, snapshots, and everything an operator can do),
//!    `operator` (jobs and runs), `viewer` (reads), `worker` (the worker
//!    protocol only). Raft calls carry no token: servers prove themselves by
//!    certificate.
//!
//! A missing, unknown, revoked or expired token is `UNAUTHENTICATED`; a
//! certificate or token without the needed role is `PERMISSION_DENIED`.
//! Every denial is an audit line (`target: "audit"`, warn) naming who (token
//! id and name, certificate role, address), what (the method) and why;
//! allowed writes are audit lines at info, allowed reads at debug. Health
//! checks and reflection are open.
//!
//! The preset tokens of the server's config — the bootstrap token
//! (`auth.bootstrap_token_file`, admin) and the workers' shared token
//! (`auth.worker_token_file`, worker) — are accepted from the start, before
//! the leader has replicated their rows; once a row exists (see `node`), the
//! row decides, so revoking one works.

use std::sync::Arc;

use chrono::Utc;
use tonic::Code;
use tonic::body::Body;
use tonic::codegen::http;

use crate::state::{Token, TokenRole};
use crate::store::StateReader;
use rota_proto::tls::{Peer, Role};

/// Metadata key of the bearer token.
pub const AUTHORIZATION: &str = "authorization";

/// What a call needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone (health checks, reflection).
    Open,
    /// A server's certificate (Raft).
    Raft,
    /// A worker's certificate and token.
    Worker,
    /// A token of viewer, operator or admin.
    Read,
    /// A token of operator or admin.
    Write,
    /// An admin token.
    Admin,
}

impl Access {
    /// What calling `path` (`/package.Service/Method`) needs. Unknown methods
    /// need admin: a method added without a rule here is closed, not open.
    pub fn of(path: &str) -> Access {
        let Some((service, method)) = path.trim_start_matches('/').split_once('/') else {
            return Access::Admin;
        };
        match service {
            "grpc.health.v1.Health"
            | "grpc.reflection.v1.ServerReflection"
            | "grpc.reflection.v1alpha.ServerReflection" => Access::Open,
            "rota.v1.RaftService" => Access::Raft,
            "rota.v1.WorkerService" => Access::Worker,
            "rota.v1.JobService" => match method {
                "GetJob" | "ListJobs" | "ExplainSchedule" => Access::Read,
                "CreateJob" | "UpdateJob" | "ApplyJob" | "DeleteJob" | "SuspendJob" | "ResumeJob" => Access::Write,
                _ => Access::Admin,
            },
            "rota.v1.RunService" => match method {
                "GetRun" | "ListRuns" | "WatchRuns" | "GetLogs" => Access::Read,
                "CancelRun" | "TriggerRun" => Access::Write,
                _ => Access::Admin,
            },
            "rota.v1.ClusterService" => match method {
                "GetStatus" | "ListMembers" | "ListWorkers" => Access::Read,
                _ => Access::Admin,
            },
            _ => Access::Admin,
        }
    }

    /// The token roles that satisfy it.
    fn roles(self) -> &'static [TokenRole] {
        match self {
            Access::Open | Access::Raft => &[],
            Access::Worker => &[TokenRole::Worker],
            Access::Read => &[TokenRole::Admin, TokenRole::Operator, TokenRole::Viewer],
            Access::Write => &[TokenRole::Admin, TokenRole::Operator],
            Access::Admin => &[TokenRole::Admin],
        }
    }

    /// The certificate roles that satisfy it.
    fn cert_roles(self) -> &'static [Role] {
        match self {
            Access::Open => &[Role::Server, Role::Worker, Role::Client],
            Access::Raft => &[Role::Server],
            Access::Worker => &[Role::Worker],
            Access::Read | Access::Write | Access::Admin => &[Role::Client, Role::Server],
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Access::Open => "nothing",
            Access::Raft => "a server certificate",
            Access::Worker => "a worker certificate and a worker token",
            Access::Read => "a viewer, operator or admin token",
            Access::Write => "an operator or admin token",
            Access::Admin => "an admin token",
        }
    }
}

/// The caller of an allowed call, as the services see it (a request
/// extension).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Id of its token (`None` without auth, or for Raft).
    pub token_id: Option<String>,
    /// Its token's role.
    pub role: Option<TokenRole>,
}

/// The token settings of a server.
#[derive(Debug, Clone, Default)]
pub struct AuthSettings {
    /// Whether calls need a token.
    pub enabled: bool,
    /// Whether the listener is TLS (so certificates are checked).
    pub tls: bool,
    /// Tokens from the config files (bootstrap, workers), as rows.
    pub presets: Vec<Token>,
    /// Calls per second each token may make on this server (0: no limit),
    /// and how many it may make at once above that rate.
    pub rate: RateLimit,
}

/// A per-token rate limit.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RateLimit {
    /// Sustained calls per second; 0 turns the limit off.
    pub per_second: u32,
    /// Calls allowed in a burst.
    pub burst: u32,
}

/// Token buckets, one per token id.
#[derive(Debug, Default)]
struct Buckets {
    buckets: std::collections::HashMap<String, (f64, std::time::Instant)>,
}

impl Buckets {
    /// Takes one call from `token`'s bucket at `now`; `Err(wait)` when it
    /// is empty.
    fn take(&mut self, token: &str, limit: RateLimit, now: std::time::Instant) -> Result<(), std::time::Duration> {
        let rate = f64::from(limit.per_second);
        let burst = f64::from(limit.burst.max(1));
        // Bounded: tokens are bounded (MAX_TOKENS); forget idle full buckets.
        if self.buckets.len() > 2 * crate::state::tokens::MAX_TOKENS {
            self.buckets
                .retain(|_, (_, at)| now.duration_since(*at).as_secs_f64() * rate < burst);
        }
        let (level, at) = self.buckets.entry(token.to_owned()).or_insert((burst, now));
        *level = (*level + now.duration_since(*at).as_secs_f64() * rate).min(burst);
        *at = now;
        if *level >= 1.0 {
            *level -= 1.0;
            Ok(())
        } else {
            Err(std::time::Duration::from_secs_f64((1.0 - *level) / rate))
        }
    }
}

pub use rota_proto::token::{hash as hash_secret, new_secret};

/// A new token id (public): 12 hex characters.
pub fn new_token_id() -> Result<String, ring::error::Unspecified> {
    rota_proto::token::random_hex(6)
}

/// A denied call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// `UNAUTHENTICATED` or `PERMISSION_DENIED`.
    pub code: Code,
    /// Why, for the caller and the audit line.
    pub message: String,
}

impl Denied {
    fn unauthenticated(message: String) -> Self {
        Denied {
            code: Code::Unauthenticated,
            message,
        }
    }

    fn permission_denied(message: String) -> Self {
        Denied {
            code: Code::PermissionDenied,
            message,
        }
    }
}

/// The bearer token of a request's `authorization` value.
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The access decision, without I/O: `lookup` finds a token row by the
/// hash of its secret, `recorded` says whether a row with a given id
/// exists (a preset token counts only while its row does not: afterwards
/// the row decides, even if a server's file holds another secret).
pub fn decide(
    settings: &AuthSettings,
    access: Access,
    method: &str,
    peer: Option<&Peer>,
    authorization: Option<&str>,
    lookup: impl FnOnce(&str) -> Option<Token>,
    recorded: impl Fn(&str) -> bool,
) -> Result<Caller, Denied> {
    let anonymous = Caller {
        token_id: None,
        role: None,
    };
    if access == Access::Open {
        return Ok(anonymous);
    }
    if settings.tls {
        let role = peer.and_then(|p| p.role);
        if !role.is_some_and(|r| access.cert_roles().contains(&r)) {
            let shown = role.map_or("a certificate naming no rota role".to_owned(), |r| {
                format!("a {r} certificate")
            });
            return Err(Denied::permission_denied(format!(
                "{method} needs {}; the caller showed {shown}",
                match access {
                    Access::Raft => "a server certificate",
                    Access::Worker => "a worker certificate",
                    _ => "a client or server certificate",
                }
            )));
        }
    }
    if access == Access::Raft || !settings.enabled {
        return Ok(anonymous);
    }
    let Some(header) = authorization else {
        return Err(Denied::unauthenticated(format!(
            "{method} needs a token: send the metadata 'authorization: Bearer <token>' \
             (rotactl: --token-file or ROTA_TOKEN)"
        )));
    };
    let Some(secret) = bearer(header).filter(|s| !s.is_empty()) else {
        return Err(Denied::unauthenticated(
            "the authorization metadata must be 'Bearer <token>'".to_owned(),
        ));
    };
    let hash = hash_secret(secret);
    // Until the leader replicates a preset's row, the configured token holds
    // its role; afterwards the row decides (and a revoked one stays revoked
    // though its file is still configured).
    let preset = || {
        settings
            .presets
            .iter()
            .find(|t| t.hash == hash && !recorded(&t.id))
            .cloned()
    };
    let Some(token) = lookup(&hash).or_else(preset) else {
        return Err(Denied::unauthenticated("unknown token".to_owned()));
    };
    if let Some(at) = token.revoked_at {
        return Err(Denied::unauthenticated(format!(
            "token {} ({}) was revoked at {}",
            token.id,
            token.name,
            at.to_rfc3339()
        )));
    }
    if !token.is_usable(Utc::now()) {
        return Err(Denied::unauthenticated(format!(
            "token {} ({}) has expired",
            token.id, token.name
        )));
    }
    if !access.roles().contains(&token.role) {
        return Err(Denied::permission_denied(format!(
            "token {} ({}, role {}) may not call {method}, which needs {}",
            token.id,
            token.name,
            token.role,
            access.describe()
        )));
    }
    Ok(Caller {
        token_id: Some(token.id),
        role: Some(token.role),
    })
}

/// The access check as a tower layer around every gRPC service.
#[derive(Clone)]
pub struct AuthLayer {
    settings: Arc<AuthSettings>,
    state: StateReader,
    buckets: Arc<std::sync::Mutex<Buckets>>,
}

impl AuthLayer {
    /// The check with `settings`, reading tokens from `state`.
    pub fn new(settings: AuthSettings, state: StateReader) -> Self {
        Self {
            settings: Arc::new(settings),
            state,
            buckets: Arc::default(),
        }
    }

    /// Refuses a call over its token's rate.
    fn limit(&self, caller: &Caller) -> Result<(), Denied> {
        let limit = self.settings.rate;
        let Some(token) = &caller.token_id else {
            return Ok(());
        };
        if limit.per_second == 0 {
            return Ok(());
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        buckets
            .take(token, limit, std::time::Instant::now())
            .map_err(|wait| Denied {
                code: Code::ResourceExhausted,
                message: format!(
                    "token {token} is over its rate of {} calls per second (burst {}) on this server; retry in {} ms",
                    limit.per_second,
                    limit.burst,
                    wait.as_millis().max(1)
                ),
            })
    }

    /// Finds the token whose secret hashes to `hash`.
    fn lookup(&self, hash: &str) -> Option<Token> {
        self.state.read().state.token_by_hash(hash).cloned()
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`AuthLayer`] wraps around the API.
#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    layer: AuthLayer,
}

impl<S, B> tower::Service<http::Request<B>> for AuthService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let path = request.uri().path().to_owned();
        let access = Access::of(&path);
        let method = path.trim_start_matches('/').trim_start_matches("rota.v1.");
        let peer = request.extensions().get::<Peer>().cloned();
        let authorization = request.headers().get(AUTHORIZATION).and_then(|v| v.to_str().ok());
        let decision = decide(
            &self.layer.settings,
            access,
            method,
            peer.as_ref(),
            authorization,
            |hash| self.layer.lookup(hash),
            |id| self.layer.state.read().state.token(id).is_some(),
        )
        .and_then(|caller| {
            // A worker's session is one long call; its messages are not calls.
            if access != Access::Worker {
                self.layer.limit(&caller)?;
            }
            Ok(caller)
        });
        let remote = peer
            .as_ref()
            .and_then(|p| p.remote_addr)
            .map(|a| a.to_string())
            .unwrap_or_default();
        let cert = peer.as_ref().and_then(|p| p.role).map_or("none", Role::as_str);
        match decision {
            Ok(caller) => {
                let token = caller.token_id.as_deref().unwrap_or("none");
                match access {
                    Access::Write | Access::Admin => {
                        tracing::info!(target: "audit", %method, token, cert, %remote, allowed = true, "call allowed");
                    }
                    Access::Read | Access::Worker => {
                        tracing::debug!(target: "audit", %method, token, cert, %remote, allowed = true, "call allowed");
                    }
                    Access::Open | Access::Raft => {}
                }
                request.extensions_mut().insert(caller);
                Box::pin(self.inner.call(request))
            }
            Err(denied) => {
                tracing::warn!(
                    target: "audit",
                    %method,
                    cert,
                    %remote,
                    allowed = false,
                    code = ?denied.code,
                    reason = %denied.message,
                    "call denied"
                );
                let response = tonic::Status::new(denied.code, denied.message).into_http();
                Box::pin(async move { Ok(response) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::tokens::BOOTSTRAP_TOKEN_ID;

    fn token(role: TokenRole) -> Token {
        Token {
            id: "abc".into(),
            name: "ci".into(),
            role,
            hash: hash_secret("s3cret"),
            created_at: Utc::now(),
            expires_at: None,
            revoked_at: None,
            revision: 1,
        }
    }

    fn peer(role: Option<Role>) -> Peer {
        Peer {
            remote_addr: None,
            tls: true,
            role,
        }
    }

    const ON: AuthSettings = AuthSettings {
        enabled: true,
        tls: true,
        presets: Vec::new(),
        rate: RateLimit {
            per_second: 0,
            burst: 0,
        },
    };

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let limit = RateLimit {
            per_second: 10,
            burst: 3,
        };
        let mut buckets = Buckets::default();
        let start = std::time::Instant::now();
        for _ in 0..3 {
            assert!(buckets.take("a", limit, start).is_ok());
        }
        let wait = buckets.take("a", limit, start).expect_err("over the burst");
        assert!(wait <= std::time::Duration::from_millis(100), "{wait:?}");
        assert!(buckets.take("b", limit, start).is_ok(), "buckets are per token");
        let later = start + std::time::Duration::from_millis(100);
        assert!(buckets.take("a", limit, later).is_ok(), "refilled at the rate");
        assert!(buckets.take("a", limit, later).is_err());
    }

    #[test]
    fn every_method_of_the_api_has_a_rule_and_unknown_ones_need_admin() {
        assert_eq!(Access::of("/rota.v1.JobService/GetJob"), Access::Read);
        assert_eq!(Access::of("/rota.v1.JobService/CreateJob"), Access::Write);
        assert_eq!(Access::of("/rota.v1.RunService/TriggerRun"), Access::Write);
        assert_eq!(Access::of("/rota.v1.ClusterService/AddNode"), Access::Admin);
        assert_eq!(Access::of("/rota.v1.ClusterService/GetStatus"), Access::Read);
        assert_eq!(Access::of("/rota.v1.RaftService/Vote"), Access::Raft);
        assert_eq!(Access::of("/rota.v1.WorkerService/Session"), Access::Worker);
        assert_eq!(Access::of("/grpc.health.v1.Health/Check"), Access::Open);
        assert_eq!(Access::of("/rota.v1.JobService/NewThing"), Access::Admin);
        assert_eq!(Access::of("nonsense"), Access::Admin);
    }

    #[test]
    fn every_method_in_the_protos_has_the_access_this_table_says() {
        use prost::Message;
        // Reviewed by hand: a method added to the protos fails this test
        // until it is given a row here (and its class in `Access::of`).
        let expected: &[(&str, Access)] = &[
            ("JobService/CreateJob", Access::Write),
            ("JobService/UpdateJob", Access::Write),
            ("JobService/ApplyJob", Access::Write),
            ("JobService/GetJob", Access::Read),
            ("JobService/ListJobs", Access::Read),
            ("JobService/DeleteJob", Access::Write),
            ("JobService/SuspendJob", Access::Write),
            ("JobService/ResumeJob", Access::Write),
            ("JobService/ExplainSchedule", Access::Read),
            ("RunService/GetRun", Access::Read),
            ("RunService/ListRuns", Access::Read),
            ("RunService/WatchRuns", Access::Read),
            ("RunService/CancelRun", Access::Write),
            ("RunService/TriggerRun", Access::Write),
            ("RunService/GetLogs", Access::Read),
            ("ClusterService/GetStatus", Access::Read),
            ("ClusterService/ListMembers", Access::Read),
            ("ClusterService/AddNode", Access::Admin),
            ("ClusterService/RemoveNode", Access::Admin),
            ("ClusterService/TransferLeadership", Access::Admin),
            ("ClusterService/ListWorkers", Access::Read),
            ("ClusterService/DrainWorker", Access::Admin),
            ("ClusterService/SaveSnapshot", Access::Admin),
            ("ClusterService/CreateToken", Access::Admin),
            ("ClusterService/ListTokens", Access::Admin),
            ("ClusterService/RevokeToken", Access::Admin),
            ("RaftService/AppendEntries", Access::Raft),
            ("RaftService/Vote", Access::Raft),
            ("RaftService/InstallSnapshot", Access::Raft),
            ("RaftService/TimeoutNow", Access::Raft),
            ("RaftService/LogPosition", Access::Raft),
            ("WorkerService/Session", Access::Worker),
        ];
        let set = prost_types::FileDescriptorSet::decode(rota_proto::FILE_DESCRIPTOR_SET).expect("descriptor set");
        let mut seen = 0;
        for file in set.file.iter().filter(|f| f.package() == "rota.v1") {
            for service in &file.service {
                for method in &service.method {
                    let name = format!("{}/{}", service.name(), method.name());
                    let row = expected.iter().find(|(m, _)| *m == name);
                    let Some((_, access)) = row else {
                        panic!("{name} has no row in this table: decide who may call it");
                    };
                    assert_eq!(Access::of(&format!("/rota.v1.{name}")), *access, "{name}");
                    seen += 1;
                }
            }
        }
        assert_eq!(seen, expected.len(), "rows for methods that no longer exist");
    }

    #[test]
    fn roles_allow_what_they_should_and_nothing_else() {
        let bearer = "Bearer s3cret";
        let call = |role: TokenRole, path: &str| {
            decide(
                &ON,
                Access::of(path),
                path,
                Some(&peer(Some(Role::Client))),
                Some(bearer),
                |_| Some(token(role)),
                |_| false,
            )
        };
        assert!(call(TokenRole::Viewer, "/rota.v1.JobService/ListJobs").is_ok());
        let denied = call(TokenRole::Viewer, "/rota.v1.JobService/CreateJob").expect_err("viewer writes");
        assert_eq!(denied.code, Code::PermissionDenied);
        assert!(denied.message.contains("role viewer"), "{}", denied.message);
        assert!(call(TokenRole::Operator, "/rota.v1.RunService/TriggerRun").is_ok());
        assert_eq!(
            call(TokenRole::Operator, "/rota.v1.ClusterService/AddNode")
                .expect_err("operator membership")
                .code,
            Code::PermissionDenied
        );
        assert!(call(TokenRole::Admin, "/rota.v1.ClusterService/AddNode").is_ok());
        assert_eq!(
            call(TokenRole::Worker, "/rota.v1.JobService/GetJob")
                .expect_err("worker reads")
                .code,
            Code::PermissionDenied
        );
        assert_eq!(
            call(TokenRole::Admin, "/rota.v1.WorkerService/Session")
                .expect_err("admin as a worker")
                .code,
            Code::PermissionDenied
        );
    }

    #[test]
    fn certificates_are_checked_before_tokens() {
        let worker_cert = peer(Some(Role::Worker));
        let raft = decide(
            &ON,
            Access::Raft,
            "RaftService/Vote",
            Some(&worker_cert),
            None,
            |_| None,
            |_| false,
        )
        .expect_err("worker cert on raft");
        assert_eq!(raft.code, Code::PermissionDenied);
        assert!(raft.message.contains("worker certificate"), "{}", raft.message);
        let admin = decide(
            &ON,
            Access::Admin,
            "ClusterService/AddNode",
            Some(&worker_cert),
            Some("Bearer s3cret"),
            |_| Some(token(TokenRole::Admin)),
            |_| false,
        )
        .expect_err("worker cert on admin");
        assert_eq!(admin.code, Code::PermissionDenied);
        assert!(
            decide(
                &ON,
                Access::Raft,
                "RaftService/Vote",
                Some(&peer(Some(Role::Server))),
                None,
                |_| None,
                |_| false,
            )
            .is_ok()
        );
        let plain = AuthSettings {
            tls: false,
            ..ON.clone()
        };
        assert!(
            decide(
                &plain,
                Access::Raft,
                "RaftService/Vote",
                None,
                None,
                |_| None,
                |_| false
            )
            .is_ok()
        );
    }

    #[test]
    fn missing_unknown_revoked_and_expired_tokens_are_unauthenticated() {
        let client = peer(Some(Role::Client));
        let read = |authorization: Option<&str>, found: Option<Token>| {
            decide(
                &ON,
                Access::Read,
                "JobService/ListJobs",
                Some(&client),
                authorization,
                |_| found,
                |_| false,
            )
            .expect_err("denied")
        };
        let missing = read(None, None);
        assert_eq!(missing.code, Code::Unauthenticated);
        assert!(missing.message.contains("Bearer"), "{}", missing.message);
        assert_eq!(read(Some("Bearer nope"), None).code, Code::Unauthenticated);
        assert_eq!(read(Some("Basic abc"), None).code, Code::Unauthenticated);
        let mut revoked = token(TokenRole::Admin);
        revoked.revoked_at = Some(Utc::now());
        assert!(read(Some("Bearer s3cret"), Some(revoked)).message.contains("revoked"));
        let mut expired = token(TokenRole::Admin);
        expired.expires_at = Some(Utc::now() - chrono::Duration::seconds(1));
        assert!(read(Some("Bearer s3cret"), Some(expired)).message.contains("expired"));
    }

    #[test]
    fn the_bootstrap_token_is_admin_until_its_row_decides() {
        let settings = AuthSettings {
            presets: vec![crate::node::config::preset_token(
                "boot",
                BOOTSTRAP_TOKEN_ID,
                TokenRole::Admin,
            )],
            ..ON.clone()
        };
        let client = peer(Some(Role::Client));
        let caller = decide(
            &settings,
            Access::Admin,
            "ClusterService/AddNode",
            Some(&client),
            Some("Bearer boot"),
            |_| None,
            |_| false,
        )
        .expect("bootstrap allowed");
        assert_eq!(caller.token_id.as_deref(), Some(BOOTSTRAP_TOKEN_ID));
        let mut revoked = token(TokenRole::Admin);
        revoked.revoked_at = Some(Utc::now());
        assert!(
            decide(
                &settings,
                Access::Admin,
                "ClusterService/AddNode",
                Some(&client),
                Some("Bearer boot"),
                |_| Some(revoked),
                |_| true,
            )
            .is_err()
        );
        // A server whose file holds another secret than the recorded row:
        // once the row exists, the file's secret is nobody.
        let stale = decide(
            &settings,
            Access::Admin,
            "ClusterService/AddNode",
            Some(&client),
            Some("Bearer boot"),
            |_| None,
            |id| id == BOOTSTRAP_TOKEN_ID,
        )
        .expect_err("a preset whose row exists with another hash");
        assert_eq!(stale.code, Code::Unauthenticated);
        assert_eq!(hash_secret("boot").len(), 64);
        assert!(new_secret().expect("random").starts_with("rota_"));
    }
}
