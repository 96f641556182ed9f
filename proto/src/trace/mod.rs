//! Traces: W3C trace context (`traceparent`) carried in gRPC metadata, so
//! that a client's call, the servers that handle it and the worker that runs
//! the resulting attempt form one trace (feature `propagation`, all the SDK
//! needs); and, with feature `trace`, the `tracing` subscriber every rota
//! program installs (text or JSON lines on stderr, spans exported over
//! OTLP/gRPC when an endpoint is given).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tonic::codegen::http;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

#[cfg(feature = "trace")]
mod setup;
#[cfg(feature = "trace")]
pub use setup::{LogFormat, Tracing, init, otlp_provider};

/// The metadata key of W3C trace context.
pub const TRACEPARENT: &str = "traceparent";

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
            node = %self.layer.node,
        );
        let _ = span.set_parent(TraceContextPropagator::new().extract(&HeaderExtractor(request.headers())));
        Box::pin(self.inner.call(request).instrument(span))
    }
}
