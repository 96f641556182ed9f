//! Logs and traces: the `tracing` subscriber every rota program installs
//! (text or JSON lines on stderr, and spans exported over OTLP/gRPC when an
//! endpoint is given), and W3C trace context (`traceparent`) carried in gRPC
//! metadata, so that a client's call, the servers that handle it and the
//! worker that runs the resulting attempt form one trace.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tonic::codegen::http;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The metadata key of W3C trace context.
pub const TRACEPARENT: &str = "traceparent";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The installed subscriber's exporter; dropping it flushes the spans not
/// yet exported.
#[must_use = "dropping it stops exporting spans"]
pub struct Tracing {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Tracing {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("flushing traces: {e}");
        }
    }
}

/// An OTLP/gRPC span exporter to `endpoint` (e.g. `http://127.0.0.1:4317`)
/// for `service`, batching in the background. Must be called within a Tokio
/// runtime.
pub fn otlp_provider(service: &str, endpoint: &str) -> Result<SdkTracerProvider, String> {
    use opentelemetry_otlp::WithExportConfig;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| format!("otlp_endpoint {endpoint:?}: {e}"))?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service.to_owned())
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// Installs the global subscriber: log lines in `format` on stderr,
/// filtered by `RUST_LOG` (else `default_filter`), and — with
/// `otlp_endpoint` — every span exported over OTLP as `service`. Must be
/// called within a Tokio runtime when exporting.
pub fn init(
    service: &str,
    format: LogFormat,
    default_filter: &str,
    otlp_endpoint: Option<&str>,
) -> Result<Tracing, String> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    // Colour only on a terminal (and never with NO_COLOR): log files stay plain.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none();
    let lines = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let provider = otlp_endpoint
        .map(|endpoint| otlp_provider(service, endpoint))
        .transpose()?;
    let spans = provider
        .as_ref()
        .map(|provider| tracing_opentelemetry::layer().with_tracer(provider.tracer("rota")));
    tracing_subscriber::registry()
        .with(filter)
        .with(lines)
        .with(spans)
        .try_init()
        .map_err(|e| format!("installing the log subscriber: {e}"))?;
    Ok(Tracing { provider })
}

struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (MetadataKey::from_bytes(key.as_bytes()), MetadataValue::try_from(value)) {
            self.0.insert(key, value);
        }
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Puts the trace context of `span` into `metadata`; nothing when the span
/// is not traced (no exporter installed).
pub fn inject(span: &tracing::Span, metadata: &mut MetadataMap) {
    TraceContextPropagator::new().inject_context(&span.context(), &mut MetadataInjector(metadata));
}

/// The `traceparent` of `span`, to be carried elsewhere (with a run); `None`
/// when the span is not traced.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    carrier.remove(TRACEPARENT)
}

/// Makes the trace context `traceparent` the parent of `span` (ignored when
/// malformed or when nothing traces).
pub fn set_parent(span: &tracing::Span, traceparent: &str) {
    if traceparent.is_empty() {
        return;
    }
    let carrier = HashMap::from([(TRACEPARENT.to_owned(), traceparent.to_owned())]);
    let _ = span.set_parent(TraceContextPropagator::new().extract(&carrier));
}

/// A tower layer for a tonic server: each call runs in a span `grpc`
/// named after its method, child of the caller's trace context when the
/// request carries one. Paths starting with `skip` (e.g. internal
/// heartbeats) get no span.
#[derive(Clone)]
pub struct GrpcSpans {
    node: String,
    skip: &'static str,
}

impl GrpcSpans {
    /// Spans recorded with field `node`; paths starting with `skip` untraced.
    pub fn new(node: impl Into<String>, skip: &'static str) -> Self {
        Self {
            node: node.into(),
            skip,
        }
    }
}

impl<S> tower::Layer<S> for GrpcSpans {
    type Service = GrpcSpansService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcSpansService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`GrpcSpans`] wraps.
#[derive(Clone)]
pub struct GrpcSpansService<S> {
    inner: S,
    layer: GrpcSpans,
}

impl<S, B> tower::Service<http::Request<B>> for GrpcSpansService<S>
where
    S: tower::Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        if path.starts_with(self.layer.skip) {
            return Box::pin(self.inner.call(request));
        }
        let span = tracing::info_span!(
            "grpc",
            otel.name = %path,
            otel.kind = "server",
            rpc.method = %path,
            node = %self.layer.node,
        );
        let _ = span.set_parent(TraceContextPropagator::new().extract(&HeaderExtractor(request.headers())));
        Box::pin(self.inner.call(request).instrument(span))
    }
}
