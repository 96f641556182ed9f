//! The SDK (`rota_client`) against a real three-server cluster, under the
//! faults it exists to hide: the leader killed while the client is in use,
//! and a write whose answer is lost after the cluster acted on it.

use std::time::Duration;

use rota_chaos::proxy::Proxy;
use rota_chaos::{Cluster, ServerSettings, job_spec, wait_for};
use rota_client::{Client, ClientOptions, Consistency, proto as pb};

/// An on-demand job that never runs (no worker): its runs stay pending.
fn on_demand(name: &str) -> pb::JobSpec {
    let mut spec = job_spec(name);
    spec.schedule = None;
    spec
}

async fn runs_of(client: &Client, job: &str) -> anyhow::Result<Vec<pb::Run>> {
    Ok(client
        .list_runs(&pb::ListRunsRequest {
            job: job.to_owned(),
            ..Default::default()
        })
        .await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_succeed_while_the_leader_is_killed_under_a_connected_client() {
    let mut cluster = Cluster::start(3, ServerSettings::default())
        .await
        .expect("cluster starts");
    let scenario = async {
        let client = cluster.client()?;
        client.create_job(on_demand("steady")).await?;
        // The client has found the leader; now it dies.
        let leader = cluster.wait_for_leader(Duration::from_secs(10)).await?;
        cluster.kill(leader)?;
        // Every call succeeds: the client follows hints and retries through
        // the election, without the caller seeing it.
        for i in 0..5 {
            let mut spec = on_demand("steady");
            spec.task.get_or_insert_default().args = vec![format!("round-{i}")];
            let applied = client.apply_job(spec, false).await?;
            anyhow::ensure!(applied.job.generation == 2 + i, "{applied:?}");
            let (run, existing) = client
                .trigger_run("steady", Some(&format!("round-{i}")), Default::default(), true)
                .await?;
            anyhow::ensure!(!existing, "{run:?}");
            client.get_run(&run.id, Consistency::Linearizable).await?;
        }
        anyhow::ensure!(runs_of(&client, "steady").await?.len() == 5);
        let now = cluster.wait_for_leader(Duration::from_secs(30)).await?;
        anyhow::ensure!(now != leader, "the dead node {leader} leads");
        Ok(())
    };
    let result = scenario.await;
    cluster.settle(result);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_retried_after_its_answer_was_lost_starts_one_run() {
    let cluster = Cluster::start(3, ServerSettings::default())
        .await
        .expect("cluster starts");
    let scenario = async {
        let direct = cluster.client()?;
        direct.create_job(on_demand("once")).await?;
        let leader = cluster.wait_for_leader(Duration::from_secs(10)).await?;
        let proxy = Proxy::start(&cluster.addr(leader)?).await?;
        let options = ClientOptions {
            timeout: Duration::from_secs(1),
            max_attempts: 100,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(300),
            ..Default::default()
        };
        let client = Client::with_options([proxy.addr.clone()], options)?;
        // Connected through the proxy first; then answers stop coming back.
        client.get_job("once", Consistency::Linearizable).await?;
        proxy.cut_replies();
        let trigger = tokio::spawn({
            let client = client.clone();
            async move { client.trigger_run("once", None, Default::default(), false).await }
        });
        // The cluster acted on the request...
        wait_for("the triggered run to exist", Duration::from_secs(30), || async {
            let runs = runs_of(&direct, "once").await.map_err(|e| e.to_string())?;
            Ok((!runs.is_empty()).then_some(()))
        })
        .await?;
        // ...the client gives up on the answer (its deadline is 1 s) and
        // sends more: the retry, or at least the abandoned call's reset...
        let sent = proxy.forwarded_bytes();
        wait_for(
            "the client to give up on the answer",
            Duration::from_secs(30),
            || async { Ok((proxy.forwarded_bytes() > sent).then_some(())) },
        )
        .await?;
        // ...and once answers flow, its retry (the only way to a second
        // answer: the first call was abandoned) finds the run it started.
        proxy.restore();
        let (run, existing) = trigger.await??;
        anyhow::ensure!(existing, "the retry is answered with the existing run: {run:?}");
        let runs = runs_of(&direct, "once").await?;
        anyhow::ensure!(
            runs.len() == 1 && runs[0].id == run.id,
            "one trigger made one run: {runs:?}"
        );
        Ok(())
    };
    let result = scenario.await;
    cluster.settle(result);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_calls_of_the_crate_docs_work_against_a_real_cluster() {
    let mut cluster = Cluster::start(3, ServerSettings::default())
        .await
        .expect("cluster starts");
    cluster
        .start_worker(rota_chaos::WorkerSettings::new("docs-worker", "exec"))
        .expect("worker starts");
    let scenario = async {
        // The first example: parse a spec, apply it, list jobs.
        let client = Client::connect(cluster.servers_arg().split(','))?;
        let spec = rota_client::SpecFile::parse_yaml(
            "name: nightly-build\ntask: { driver: exec, command: [sh, -c, 'echo building; echo built'] }\n",
        )?;
        let applied = client.apply_job(spec[0].to_proto(), false).await?;
        anyhow::ensure!(applied.job.generation == 1);
        let jobs = client.list_jobs(Consistency::Linearizable).await?;
        anyhow::ensure!(jobs.iter().any(|j| j.name == "nightly-build"));

        // The second: trigger, follow the output, read the end, watch, errors.
        let mut changes = client.watch_runs("nightly-build", false).await?;
        let (run, existing) = client
            .trigger_run("nightly-build", Some("nightly-2026-11-28"), Default::default(), false)
            .await?;
        anyhow::ensure!(!existing);
        let mut output = client.logs(&run.id, true, 0).await?;
        let mut text = String::new();
        while let Some(chunk) = output.message().await? {
            text.push_str(&String::from_utf8_lossy(&chunk.data));
        }
        anyhow::ensure!(text == "building\nbuilt\n", "{text:?}");
        let ended = client.get_run(&run.id, Consistency::Linearizable).await?;
        anyhow::ensure!(ended.state() == pb::RunState::Succeeded, "{ended:?}");
        let change = changes.message().await?.and_then(|c| c.run).unwrap_or_default();
        anyhow::ensure!(change.id == run.id, "{change:?}");
        let (again, existing) = client
            .trigger_run("nightly-build", Some("nightly-2026-11-28"), Default::default(), false)
            .await?;
        anyhow::ensure!(
            existing && again.id == run.id,
            "the request id makes the trigger idempotent"
        );
        match client.get_job("no-such-job", Consistency::Linearizable).await {
            Err(rota_client::Error::NotFound(message)) => anyhow::ensure!(message.contains("no-such-job")),
            other => anyhow::bail!("expected NotFound: {other:?}"),
        }
        let nowhere = Client::with_options(
            ["127.0.0.1:1"],
            ClientOptions {
                max_attempts: 3,
                ..Default::default()
            },
        )?;
        match nowhere.get_job("x", Consistency::Linearizable).await {
            Err(rota_client::Error::Unreachable { endpoints, .. }) => {
                anyhow::ensure!(endpoints == ["127.0.0.1:1"], "{endpoints:?}");
            }
            other => anyhow::bail!("expected Unreachable: {other:?}"),
        }
        // A per-call deadline: through a proxy that stops forwarding, a call
        // with a short deadline gives up long before the default 15 s.
        let proxy = Proxy::start(&cluster.addr(1)?).await?;
        let through = Client::with_options(
            [proxy.addr.clone()],
            ClientOptions {
                max_attempts: 1,
                ..Default::default()
            },
        )?;
        anyhow::ensure!(through.members(Consistency::Stale).await?.members.len() == 3);
        proxy.cut();
        let asked = std::time::Instant::now();
        let answer = through
            .with_timeout(Duration::from_millis(300))
            .members(Consistency::Stale)
            .await;
        anyhow::ensure!(
            matches!(
                answer,
                Err(rota_client::Error::DeadlineExceeded(_)
                    | rota_client::Error::Unavailable(_)
                    | rota_client::Error::Unreachable { .. })
            ),
            "{answer:?}"
        );
        anyhow::ensure!(asked.elapsed() < Duration::from_secs(10), "took {:?}", asked.elapsed());
        Ok(())
    };
    let result = scenario.await;
    cluster.settle(result);
}
