//! What the server and the worker share to be observed: the HTTP endpoint
//! with Prometheus metrics and health ([`serve`]), and the registration
//! and rendering of metric families.
//!
//! It lives here, behind the `telemetry` feature, because `rota-proto` is the
//! one crate both processes depend on (see docs/architecture.md).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::core::Collector;
use prometheus::{Encoder, Registry, TextEncoder};

/// What a process exposes over HTTP.
pub trait Endpoint: Send + Sync + 'static {
    /// Every metric family, in the Prometheus text format.
    fn metrics(&self) -> impl Future<Output = String> + Send;
    /// Whether the process should receive traffic; the error says why not.
    fn readiness(&self) -> impl Future<Output = Result<(), String>> + Send;
}

/// Registers `metric` (as built by its constructor) in `registry`.
pub fn register<M: Collector + Clone + 'static>(
    registry: &Registry,
    metric: Result<M, prometheus::Error>,
) -> Result<M, prometheus::Error> {
    let metric = metric?;
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

/// Every family of `registry` in the Prometheus text format.
pub fn encode(registry: &Registry) -> String {
    let mut text = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&registry.gather(), &mut text) {
        tracing::warn!(error = %e, "encoding metrics");
    }
    String::from_utf8_lossy(&text).into_owned()
}

async fn metrics_page<E: Endpoint>(State(endpoint): State<Arc<E>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        endpoint.metrics().await,
    )
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz<E: Endpoint>(State(endpoint): State<Arc<E>>) -> impl IntoResponse {
    match endpoint.readiness().await {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")),
    }
}

/// Binds `addr` and serves `/metrics`, `/healthz` (the process is up) and
/// `/readyz` (200, or 503 with the reason) until `stop` completes; returns
/// the bound address and the serving task.
pub async fn serve<E: Endpoint>(
    addr: SocketAddr,
    endpoint: Arc<E>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("binding the HTTP address (http_listen) {addr}: {e}")))?;
    let local = listener.local_addr()?;
    let router = Router::new()
        .route("/metrics", get(metrics_page::<E>))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz::<E>))
        .with_state(endpoint);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).with_graceful_shutdown(stop).await {
            tracing::error!(error = %e, "http endpoint failed");
        }
    });
    Ok((local, task))
}
