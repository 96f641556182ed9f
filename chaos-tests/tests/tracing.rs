//! Issue 7, tracing: servers and a worker export spans over OTLP to a
//! collector stand-in, and one triggered run is one trace — the client's
//! span, the server call it made, the server's assignment of the attempt and
//! the worker's attempt, linked parent to child.

use std::time::Duration;

use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use rota_chaos::otlp::{Collector, ReceivedSpan};
use rota_chaos::{Cluster, ServerSettings, WorkerSettings, run_checked, wait_for};
use rota_client::{Consistency, SpecFile};
use tracing::Instrument;
use tracing::instrument::WithSubscriber;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

/// The span of `spans` with id `id`.
fn by_id<'a>(spans: &'a [ReceivedSpan], id: &str) -> Option<&'a ReceivedSpan> {
    spans.iter().find(|s| s.span_id == id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_triggered_run_is_one_trace_from_client_to_worker() {
    let collector = Collector::start().await.expect("collector stand-in");
    let otlp = ("ROTA_OTLP_ENDPOINT".to_owned(), collector.endpoint().to_owned());
    let settings = ServerSettings {
        env: vec![otlp.clone()],
        ..ServerSettings::default()
    };
    let mut cluster = Cluster::start(3, settings).await.expect("cluster starts");
    run_checked(&mut cluster, async |cluster| {
        cluster.start_worker(WorkerSettings {
            env: vec![otlp.clone()],
            ..WorkerSettings::new("traced-worker", "exec")
        })?;
        let client = cluster.client()?;
        for spec in SpecFile::parse_yaml("name: traced\ntask: { driver: exec, command: ['echo', 'traced'] }\n")? {
            client.apply_job(spec.to_proto(), false).await?;
        }

        // The test is the client: its own span, exported to the same
        // collector, is the root of the trace.
        let provider =
            rota_proto::trace::otlp_provider("test-client", collector.endpoint()).map_err(anyhow::Error::msg)?;
        let dispatch = tracing::Dispatch::new(
            tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test"))),
        );
        let root = tracing::dispatcher::with_default(&dispatch, || tracing::info_span!("nightly-build-check"));
        let (trace_id, root_id) = {
            let context = root.context();
            let span = context.span();
            let ids = span.span_context();
            (ids.trace_id().to_string(), ids.span_id().to_string())
        };
        let (run, _) = client
            .trigger_run("traced", None, Default::default(), false)
            .instrument(root.clone())
            .with_subscriber(dispatch.clone())
            .await?;
        drop(root);
        provider
            .force_flush()
            .map_err(|e| anyhow::anyhow!("flushing the client's span: {e}"))?;
        wait_for("the run to succeed", Duration::from_secs(60), || async {
            let run = client
                .get_run(&run.id, Consistency::Linearizable)
                .await
                .map_err(|e| e.to_string())?;
            match run.state() {
                rota_client::proto::RunState::Succeeded => Ok(Some(())),
                state if run.finished_at.is_some() => Err(format!("the run ended {state:?}")),
                _ => Ok(None),
            }
        })
        .await?;

        // Spans are batched (5 s by default): wait for the worker's.
        let spans = wait_for("the attempt's span to arrive", Duration::from_secs(60), || async {
            let spans: Vec<ReceivedSpan> = collector
                .spans()
                .into_iter()
                .filter(|s| s.trace_id == trace_id)
                .collect();
            let done = spans.iter().any(|s| s.service == "rota-worker" && s.name == "attempt");
            Ok(done.then_some(spans))
        })
        .await?;
        let account = format!("{spans:#?}");
        let root = by_id(&spans, &root_id).ok_or_else(|| anyhow::anyhow!("the client's span arrived: {account}"))?;
        anyhow::ensure!(
            root.service == "test-client" && root.parent_span_id.is_empty(),
            "{account}"
        );
        // The server that took the call (a follower forwards it; the leader's
        // span is then the follower's child).
        let trigger = spans
            .iter()
            .find(|s| s.name == "/rota.v1.RunService/TriggerRun" && s.parent_span_id == root_id)
            .ok_or_else(|| anyhow::anyhow!("a server span of the TriggerRun call, child of the client's: {account}"))?;
        anyhow::ensure!(trigger.service == "rota-server", "{account}");
        let assign = spans
            .iter()
            .find(|s| s.name == "assign")
            .ok_or_else(|| anyhow::anyhow!("the server's assign span: {account}"))?;
        anyhow::ensure!(assign.attribute("run") == Some(run.id.as_str()), "{account}");
        let assign_parent = by_id(&spans, &assign.parent_span_id)
            .ok_or_else(|| anyhow::anyhow!("the assign span's parent arrived: {account}"))?;
        anyhow::ensure!(
            assign_parent.name == "/rota.v1.RunService/TriggerRun",
            "the assignment is a child of the call that triggered the run: {account}"
        );
        let attempt = spans
            .iter()
            .find(|s| s.name == "attempt")
            .ok_or_else(|| anyhow::anyhow!("the worker's attempt span: {account}"))?;
        anyhow::ensure!(
            attempt.parent_span_id == assign.span_id
                && attempt.attribute("run") == Some(run.id.as_str())
                && attempt.attribute("job") == Some("traced")
                && attempt.attribute("driver") == Some("exec"),
            "the worker's attempt is a child of the server's assignment: {account}"
        );
        // The leader's proposal of the trigger, under the call, with node and term.
        let propose = spans
            .iter()
            .find(|s| s.name == "propose trigger_run")
            .ok_or_else(|| anyhow::anyhow!("the leader's propose span: {account}"))?;
        anyhow::ensure!(
            by_id(&spans, &propose.parent_span_id).is_some_and(|p| p.name == "/rota.v1.RunService/TriggerRun")
                && propose
                    .attribute("term")
                    .and_then(|t| t.parse::<u64>().ok())
                    .is_some_and(|t| t >= 1)
                && propose.attribute("node").is_some(),
            "{account}"
        );
        // The leader's scheduler loops trace what they propose, each a root
        // with the node and term (the dispatcher placed this very run).
        wait_for("a dispatch span of the leader", Duration::from_secs(30), || async {
            let found = collector.spans().into_iter().any(|s| {
                s.name == "dispatch"
                    && s.service == "rota-server"
                    && s.parent_span_id.is_empty()
                    && s.attribute("term").is_some()
                    && s.attribute("placements").is_some()
            });
            Ok(found.then_some(()))
        })
        .await?;
        Ok(())
    })
    .await;
}
