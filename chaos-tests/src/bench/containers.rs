//! Container runs through rota against the raw engine: `runs` containers
//! running `true` from the test image, `parallel` at a time — first a
//! plain loop of create/start/wait/remove through the Docker engine API
//! (bollard, as the worker uses it), then the same count as rota runs on
//! one docker worker with `parallel` slots. Reports both rates, their
//! ratio, and the latency from asking to the container's start. Both run
//! `parallel` lanes, each starting its next container when its last one
//! has ended.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{CreateContainerOptions, RemoveContainerOptions};
use futures::StreamExt;
use rota_client::proto as pb;
use serde_json::json;

use super::runs::{RunWatch, time, wait_for_workers};
use super::{Latencies, Row};
use crate::{Cluster, ServerSettings, WorkerSettings};

/// The image every container runs (built by chaos-tests/images/build-test-image.sh).
pub const IMAGE: &str = "rota-test/busybox:1";

/// One container through the raw engine; returns the time from create to started.
async fn raw_container(docker: &Docker, name: &str) -> anyhow::Result<Duration> {
    let asked = Instant::now();
    let body = ContainerCreateBody {
        image: Some(IMAGE.to_owned()),
        cmd: Some(vec!["true".to_owned()]),
        ..Default::default()
    };
    let options = CreateContainerOptions {
        name: Some(name.to_owned()),
        ..Default::default()
    };
    let created = docker.create_container(Some(options), body).await?;
    docker.start_container(&created.id, None).await?;
    let started = asked.elapsed();
    let mut wait = docker.wait_container(&created.id, None);
    let _ = wait.next().await;
    let remove = RemoveContainerOptions {
        force: true,
        v: true,
        ..Default::default()
    };
    docker.remove_container(&created.id, Some(remove)).await?;
    Ok(started)
}

/// The raw loop: `runs` containers, `parallel` at a time.
async fn raw_loop(runs: usize, parallel: usize) -> anyhow::Result<(Row, Latencies)> {
    let docker = Docker::connect_with_defaults()?;
    let next = Arc::new(AtomicUsize::new(0));
    let began = Instant::now();
    let tasks: Vec<_> = (0..parallel)
        .map(|_| {
            let (docker, next) = (docker.clone(), next.clone());
            tokio::spawn(async move {
                let mut latencies = Latencies::default();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= runs {
                        return anyhow::Ok(latencies);
                    }
                    latencies
                        .push(raw_container(&docker, &format!("rota-bench-raw-{}-{i}", std::process::id())).await?);
                }
            })
        })
        .collect();
    let mut latencies = Latencies::default();
    for task in tasks {
        latencies.extend(task.await??);
    }
    let elapsed = began.elapsed();
    let row = Row {
        name: format!("raw engine loop, {parallel} at once"),
        per_second: runs as f64 / elapsed.as_secs_f64(),
        p50: latencies.quantile(0.5),
        p99: latencies.quantile(0.99),
        errors: 0,
    };
    Ok((row, latencies))
}

/// The same through rota: one docker worker with `parallel` slots.
async fn through_rota(runs: usize, parallel: usize) -> anyhow::Result<(Row, Latencies)> {
    let mut cluster = Cluster::start(3, ServerSettings::default()).await?;
    let leader = cluster.wait_for_leader(Duration::from_secs(30)).await?;
    let client = cluster.client_for(leader)?;
    let mut settings = WorkerSettings::new("bench-docker", "docker");
    settings.slots = u32::try_from(parallel).unwrap_or(1);
    cluster.start_worker(settings)?;
    wait_for_workers(&client, 1).await?;
    let spec = pb::JobSpec {
        name: "containers".to_owned(),
        concurrency: pb::Concurrency::Allow as i32,
        task: Some(pb::Task {
            driver: pb::Driver::Docker as i32,
            image: IMAGE.to_owned(),
            pull: pb::PullPolicy::Never as i32,
            command: vec!["true".to_owned()],
            ..Default::default()
        }),
        history: Some(pb::HistoryPolicy {
            keep_succeeded: Some(u32::try_from(runs).unwrap_or(10_000).clamp(20, 10_000)),
            ..Default::default()
        }),
        ..Default::default()
    };
    client.create_job(spec).await?;
    let watch = Arc::new(RunWatch::start(&client).await?);
    let began = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    // `parallel` lanes, each running one container after the other, as
    // the raw loop does.
    let lanes: Vec<_> = (0..parallel)
        .map(|_| {
            let (client, next, watch) = (client.clone(), next.clone(), watch.clone());
            tokio::spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < runs {
                    let (run, _) = client
                        .trigger_run("containers", None, Default::default(), false)
                        .await?;
                    watch.wait_finished(&run.id, Duration::from_secs(120)).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for lane in lanes {
        lane.await??;
    }
    let elapsed = began.elapsed();
    let finished = client
        .list_runs(&pb::ListRunsRequest {
            job: "containers".to_owned(),
            ..Default::default()
        })
        .await?;
    let mut latencies = Latencies::default();
    let mut failed = 0;
    for run in &finished {
        if run.state() != pb::RunState::Succeeded {
            failed += 1;
        }
        let started = run.attempts.first().and_then(|a| time(&a.started_at));
        if let (Some(created), Some(started)) = (time(&run.created_at), started) {
            latencies.push(started.duration_since(created).unwrap_or_default());
        }
    }
    let row = Row {
        name: format!("rota docker worker, {parallel} slots"),
        per_second: runs as f64 / elapsed.as_secs_f64(),
        p50: latencies.quantile(0.5),
        p99: latencies.quantile(0.99),
        errors: failed,
    };
    Ok((row, latencies))
}

/// Runs the scenario: prints the table, returns the JSON report.
pub async fn run(runs: usize, parallel: usize) -> anyhow::Result<serde_json::Value> {
    anyhow::ensure!(
        crate::docker::image_exists(IMAGE)?,
        "image {IMAGE} is missing; build it with: bash chaos-tests/images/build-test-image.sh"
    );
    let (raw, raw_latencies) = raw_loop(runs, parallel).await?;
    let (rota, rota_latencies) = through_rota(runs, parallel).await?;
    super::print_table(
        &format!("containers: {runs} containers running `true`, {parallel} at once (latency: asked to started)"),
        &[raw.clone(), rota.clone()],
    );
    anyhow::ensure!(rota.errors == 0, "{} container runs did not succeed", rota.errors);
    let ratio = rota.per_second / raw.per_second.max(1e-9);
    let added = rota_latencies.quantile(0.5).saturating_sub(raw_latencies.quantile(0.5));
    println!("ratio rota / raw engine: {ratio:.2}; added latency to start (p50): {added:?}");
    Ok(json!({
        "scenario": "containers",
        "image": IMAGE,
        "runs": runs,
        "parallel": parallel,
        "raw": raw.to_json(),
        "rota": rota.to_json(),
        "ratio_rota_to_raw": (ratio * 100.0).round() / 100.0,
        "added_start_latency_p50_ms": added.as_secs_f64() * 1000.0,
    }))
}
