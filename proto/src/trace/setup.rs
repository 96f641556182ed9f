//! The subscriber of rota's programs: log lines and OTLP span export.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

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
/// `otlp_endpoint` — rota's spans at info level and above exported over OTLP
/// as `service` (not filtered by `RUST_LOG`), from tasks of `runtime`.
pub fn init(
    runtime: &tokio::runtime::Runtime,
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
    let provider = {
        let _in_runtime = runtime.enter();
        otlp_endpoint
            .map(|endpoint| otlp_provider(service, endpoint))
            .transpose()?
    };
    // `RUST_LOG` chooses log lines only: the spans exported (and the trace
    // context propagated) are rota's own at info, whatever it says.
    let spans = provider.as_ref().map(|provider| {
        let rota = tracing_subscriber::filter::filter_fn(|meta| {
            meta.target().starts_with("rota_") && *meta.level() <= tracing::Level::INFO
        });
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("rota"))
            .with_filter(rota)
    });
    tracing_subscriber::registry()
        .with(lines.with_filter(filter))
        .with(spans)
        .try_init()
        .map_err(|e| format!("installing the log subscriber: {e}"))?;
    Ok(Tracing { provider })
}
