//! Issue 7, first part: every server's HTTP endpoint — Prometheus metrics
//! (checked by Debian's `promtool` when installed; CI installs it), health,
//! and readiness that follows quorum.

use std::collections::BTreeMap;
use std::time::Duration;

use rota_chaos::{Cluster, ServerSettings, WorkerSettings, http_get, metric_samples, run_checked, wait_for};
use rota_client::{Consistency, SpecFile};

fn settings() -> ServerSettings {
    ServerSettings {
        http: true,
        // Snapshots within seconds, to be counted.
        snapshot_every_logs: 20,
        keep_logs_after_snapshot: 10,
        ..ServerSettings::default()
    }
}

fn http_addr(cluster: &Cluster, id: u64) -> anyhow::Result<String> {
    cluster
        .server(id)?
        .http_addr
        .clone()
        .ok_or_else(|| anyhow::anyhow!("server {id} has no HTTP endpoint"))
}

fn worker_http_addr(cluster: &mut Cluster, id: &str) -> anyhow::Result<String> {
    cluster
        .worker(id)?
        .http_addr
        .clone()
        .ok_or_else(|| anyhow::anyhow!("worker {id} has no HTTP endpoint"))
}

/// The value of sample `name` on server `id`'s `/metrics`.
async fn metric(cluster: &Cluster, id: u64, name: &str) -> anyhow::Result<f64> {
    let (status, text) = http_get(&http_addr(cluster, id)?, "/metrics").await?;
    anyhow::ensure!(status == 200, "server {id} /metrics: {status}");
    metric_samples(&text)
        .get(name)
        .copied()
        .ok_or_else(|| anyhow::anyhow!("server {id} has no {name}"))
}

/// `promtool check metrics` on `text`: `Ok(None)` when promtool is not
/// installed (and `ROTA_REQUIRE_PROMETHEUS` is unset), `Ok(Some(report))`
/// with what it printed.
fn promtool_check(text: &str) -> anyhow::Result<Option<String>> {
    use std::io::Write;
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) if std::env::var_os("ROTA_REQUIRE_PROMETHEUS").is_none() => {
            eprintln!("promtool not run ({e}); install Debian's prometheus package, or set ROTA_REQUIRE_PROMETHEUS");
            return Ok(None);
        }
        Err(e) => anyhow::bail!("promtool: {e} (install Debian's prometheus package)"),
    };
    child
        .stdin
        .take()
        .ok_or_else(|| anyhow::anyhow!("promtool has no stdin"))?
        .write_all(text.as_bytes())?;
    let output = child.wait_with_output()?;
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    anyhow::ensure!(output.status.success(), "promtool check metrics failed: {report}");
    Ok(Some(report))
}

/// An exec worker `job` with an HTTP endpoint, an on-demand job `job`
/// (printing a line) triggered `runs` times (each run waited for) and
/// `ticking`, a job due every second; returns the client.
async fn run_jobs(cluster: &mut Cluster, job: &str, runs: usize) -> anyhow::Result<rota_client::Client> {
    cluster.start_worker(WorkerSettings {
        http: true,
        ..WorkerSettings::new(job, "exec")
    })?;
    let client = cluster.client()?;
    let specs = SpecFile::parse_yaml(&format!(
        "name: {job}\ntask: {{ driver: exec, command: ['echo', 'counted'] }}\n\
         ---\nname: ticking\nschedule: {{ cron: '* * * * * *' }}\ntask: {{ driver: exec, command: ['true'] }}\n"
    ))?;
    for spec in &specs {
        client.apply_job(spec.to_proto(), false).await?;
    }
    for _ in 0..runs {
        let (run, _) = client.trigger_run(job, None, Default::default(), false).await?;
        wait_for("the run to end", Duration::from_secs(60), || async {
            let run = client
                .get_run(&run.id, Consistency::Linearizable)
                .await
                .map_err(|e| e.to_string())?;
            Ok(run.finished_at.is_some().then_some(()))
        })
        .await?;
    }
    Ok(client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_server_serves_metrics_health_and_readiness() {
    let mut cluster = Cluster::start(3, settings()).await.expect("cluster starts");
    run_checked(&mut cluster, async |cluster| {
        for id in cluster.ids() {
            let addr = http_addr(cluster, id)?;
            let (status, body) = http_get(&addr, "/healthz").await?;
            anyhow::ensure!(status == 200 && body == "ok\n", "healthz of {id}: {status} {body:?}");
            wait_for(&format!("server {id} ready"), Duration::from_secs(30), || async {
                let (status, body) = http_get(&addr, "/readyz").await.map_err(|e| e.to_string())?;
                if status == 200 {
                    Ok(Some(()))
                } else {
                    Err(format!("{status} {body:?}"))
                }
            })
            .await?;
            let (status, _) = http_get(&addr, "/nope").await?;
            anyhow::ensure!(status == 404, "an unknown path is 404, got {status}");
        }

        // A few runs, then the metrics say so on every server.
        let client = run_jobs(cluster, "counted", 3).await?;
        // An error answer, to be counted with its code.
        let missing = client.get_run("no-such-run", Consistency::Linearizable).await;
        anyhow::ensure!(missing.is_err(), "{missing:?}");
        let mut leaders = 0.0;
        let mut proposed = 0.0;
        let mut applies = 0.0;
        let mut not_found = 0.0;
        for id in cluster.ids() {
            let addr = http_addr(cluster, id)?;
            let text = wait_for(
                &format!("server {id} to count 3 runs"),
                Duration::from_secs(30),
                || async {
                    let (status, text) = http_get(&addr, "/metrics").await.map_err(|e| e.to_string())?;
                    let found = metric_samples(&text);
                    let at_least = |name: &str, n: f64| found.get(name).copied().unwrap_or(0.0) >= n;
                    let counted = at_least("rota_runs{state=\"succeeded\"}", 3.0)
                        && at_least("rota_runs_created_total{cause=\"manual\"}", 3.0)
                        && at_least("rota_runs_created_total{cause=\"scheduled\"}", 2.0)
                        && at_least("rota_runs_finished_total{outcome=\"succeeded\"}", 3.0)
                        && at_least("rota_dispatch_latency_seconds_count", 3.0)
                        && at_least("rota_run_duration_seconds_count", 3.0)
                        && at_least("rota_trigger_lateness_seconds_count", 2.0)
                        && at_least("rota_raft_snapshots_built_total", 1.0)
                        && at_least("rota_raft_log_append_seconds_count", 1.0)
                        && at_least("rota_raft_log_sync_seconds_count", 1.0)
                        && at_least("rota_raft_apply_seconds_count", 1.0);
                    Ok((status == 200 && counted).then_some(text))
                },
            )
            .await?;
            let found = metric_samples(&text);
            for name in [
                "rota_raft_term",
                "rota_raft_is_leader",
                "rota_raft_leader_changes_total",
                "rota_raft_commit_index",
                "rota_raft_applied_index",
                "rota_raft_apply_lag",
                "rota_jobs",
                "rota_workers{state=\"lost\"}",
                "rota_cluster_slots{state=\"used\"}",
                "rota_runs{state=\"pending\"}",
                "rota_raft_snapshots_installed_total",
                "rota_ready",
                "rota_slots_not_run_total{reason=\"starting_deadline\",state=\"missed\"}",
                "rota_raft_snapshot_build_seconds_total",
            ] {
                anyhow::ensure!(found.contains_key(name), "server {id} exports {name}: {text}");
            }
            anyhow::ensure!(
                found["rota_jobs"] >= 1.0
                    && found.get("rota_workers{state=\"alive\"}") == Some(&1.0)
                    && found
                        .get("rota_cluster_slots{state=\"free\"}")
                        .is_some_and(|&free| free <= 2.0),
                "{text}"
            );
            leaders += found["rota_raft_is_leader"];
            proposed += found.get("rota_raft_proposals_per_entry_sum").copied().unwrap_or(0.0);
            let series = |name: &str| found.get(name).copied().unwrap_or(0.0);
            applies += series("rota_api_requests_total{code=\"OK\",method=\"/rota.v1.JobService/ApplyJob\"}");
            not_found += series("rota_api_requests_total{code=\"NotFound\",method=\"/rota.v1.RunService/GetRun\"}");
            anyhow::ensure!(
                found
                    .keys()
                    .all(|k| !k.starts_with("rota_api_requests_total") || !k.contains("no-such")),
                "no caller-chosen text in labels: {text}"
            );
            if let Some(report) = promtool_check(&text)? {
                anyhow::ensure!(
                    report.trim().is_empty(),
                    "promtool check metrics on server {id}: {report}"
                );
            }
        }
        anyhow::ensure!(leaders == 1.0, "exactly one server says it leads, not {leaders}");
        // Creating, triggering and running 3 jobs proposes at least 12 operations.
        anyhow::ensure!(proposed >= 12.0, "operations proposed through group commit: {proposed}");

        // The worker's endpoint: health, readiness, what it ran and shipped.
        let worker = worker_http_addr(cluster, "counted")?;
        let (status, body) = http_get(&worker, "/healthz").await?;
        anyhow::ensure!(status == 200 && body == "ok\n", "worker healthz: {status} {body:?}");
        ready_at("the worker", &worker, true).await?;
        let text = wait_for("the worker to count its runs", Duration::from_secs(30), || async {
            let (_, text) = http_get(&worker, "/metrics").await.map_err(|e| e.to_string())?;
            let found = metric_samples(&text);
            let at_least = |name: &str, n: f64| found.get(name).copied().unwrap_or(0.0) >= n;
            // "counted\n" three times.
            let counted = at_least("rota_worker_attempts_started_total{driver=\"exec\"}", 3.0)
                && at_least("rota_worker_log_shipped_bytes_total", 24.0);
            Ok(counted.then_some(text))
        })
        .await?;
        let found = metric_samples(&text);
        for (name, want) in [
            ("rota_worker_connected", 1.0),
            ("rota_worker_slots", 2.0),
            ("rota_worker_attempts_failed_to_start_total{driver=\"exec\"}", 0.0),
            ("rota_worker_image_pulls_total{result=\"ok\"}", 0.0),
            ("rota_worker_reconcile_removals_total{kind=\"container\"}", 0.0),
            ("rota_worker_container_start_seconds_count", 0.0),
        ] {
            anyhow::ensure!(found.get(name) == Some(&want), "worker {name} is {want}: {text}");
        }
        anyhow::ensure!(found.contains_key("rota_worker_running_tasks"), "{text}");
        anyhow::ensure!(
            found.get("rota_worker_registrations_total").is_some_and(|&n| n >= 1.0),
            "{text}"
        );
        if let Some(report) = promtool_check(&text)? {
            anyhow::ensure!(
                report.trim().is_empty(),
                "promtool check metrics on the worker: {report}"
            );
        }
        anyhow::ensure!(
            applies >= 2.0 && not_found >= 1.0,
            "API calls counted by method and code: {applies} applies, {not_found} not-found reads"
        );
        Ok(())
    })
    .await;
}

/// Waits until the gRPC health service of server `id` says `want` for
/// the server as a whole (service `""`).
async fn grpc_health(cluster: &Cluster, id: u64, want: tonic_health::ServingStatus) -> anyhow::Result<()> {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let addr = format!("http://{}", cluster.server(id)?.addr);
    wait_for(
        &format!("server {id} gRPC health {want:?}"),
        Duration::from_secs(30),
        || async {
            let channel = tonic::transport::Endpoint::from_shared(addr.clone())
                .map_err(|e| e.to_string())?
                .connect()
                .await
                .map_err(|e| e.to_string())?;
            let mut client = HealthClient::new(channel);
            let answer = client
                .check(HealthCheckRequest { service: String::new() })
                .await
                .map_err(|e| e.to_string())?
                .into_inner();
            let want = tonic_health::pb::health_check_response::ServingStatus::from(want) as i32;
            Ok((answer.status == want).then_some(()))
        },
    )
    .await
}

/// Waits until `/readyz` at `addr` answers 200 (`want`) or 503; returns
/// its body.
async fn ready_at(what: &str, addr: &str, want: bool) -> anyhow::Result<String> {
    let expected = if want { 200 } else { 503 };
    wait_for(
        &format!("{what} /readyz to be {expected}"),
        Duration::from_secs(30),
        || async {
            let (status, body) = http_get(addr, "/readyz").await.map_err(|e| e.to_string())?;
            if status == expected {
                Ok(Some(body))
            } else {
                Err(format!("{status} {body:?}"))
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_quorum() {
    let mut cluster = Cluster::start(3, settings()).await.expect("cluster starts");
    run_checked(&mut cluster, async |cluster| {
        let ready = async |cluster: &Cluster, id: u64, want: bool| -> anyhow::Result<String> {
            ready_at(&format!("server {id}"), &http_addr(cluster, id)?, want).await
        };
        // A worker, ready once registered.
        cluster.start_worker(WorkerSettings {
            http: true,
            ..WorkerSettings::new("w-ready", "exec")
        })?;
        let worker_http = worker_http_addr(cluster, "w-ready")?;
        ready_at("the worker", &worker_http, true).await?;
        for id in cluster.ids() {
            ready(cluster, id, true).await?;
        }
        // The leader killed: the survivors count a leader change.
        let leader = cluster.wait_for_leader(Duration::from_secs(30)).await?;
        let survivors: Vec<u64> = cluster.ids().into_iter().filter(|&id| id != leader).collect();
        let mut before = BTreeMap::new();
        for &id in &survivors {
            before.insert(id, metric(cluster, id, "rota_raft_leader_changes_total").await?);
        }
        cluster.kill(leader)?;
        cluster
            .wait_for_leader_among(&survivors, Duration::from_secs(30))
            .await?;
        for &id in &survivors {
            wait_for(
                &format!("server {id} to count the leader change"),
                Duration::from_secs(30),
                || async {
                    let now = metric(cluster, id, "rota_raft_leader_changes_total")
                        .await
                        .map_err(|e| e.to_string())?;
                    Ok((now > before[&id]).then_some(()))
                },
            )
            .await?;
        }
        cluster.restart(leader)?;
        for id in cluster.ids() {
            ready(cluster, id, true).await?;
        }
        // The leader alone: it still thinks it leads, but no quorum answers.
        let leader = cluster.wait_for_leader(Duration::from_secs(30)).await?;
        let followers: Vec<u64> = cluster.ids().into_iter().filter(|&id| id != leader).collect();
        for &id in &followers {
            cluster.kill(id)?;
        }
        let why = ready(cluster, leader, false).await?;
        anyhow::ensure!(why.contains("quorum"), "the reason names the quorum: {why:?}");
        // The gRPC health service says so too.
        grpc_health(cluster, leader, tonic_health::ServingStatus::NotServing).await?;
        // Nor does it count as a leader in the metrics (the no-leader alert).
        for name in ["rota_raft_is_leader", "rota_ready"] {
            let value = metric(cluster, leader, name).await?;
            anyhow::ensure!(value == 0.0, "a leader without a quorum reports {name} {value}");
        }
        let (status, _) = http_get(&http_addr(cluster, leader)?, "/healthz").await?;
        anyhow::ensure!(status == 200, "still healthy (the process is up): {status}");
        // Back together: ready again, everywhere.
        for &id in &followers {
            cluster.restart(id)?;
        }
        for id in cluster.ids() {
            ready(cluster, id, true).await?;
        }
        grpc_health(cluster, leader, tonic_health::ServingStatus::Serving).await?;
        // A follower that loses its leader (and cannot elect one) is not ready.
        let leader = cluster.wait_for_leader(Duration::from_secs(30)).await?;
        let follower = cluster
            .ids()
            .into_iter()
            .find(|&id| id != leader)
            .ok_or_else(|| anyhow::anyhow!("no follower"))?;
        for id in cluster.ids().into_iter().filter(|&id| id != follower) {
            cluster.kill(id)?;
        }
        let why = ready(cluster, follower, false).await?;
        anyhow::ensure!(why.contains("leader"), "the reason names the leader: {why:?}");
        // Neither is the worker, which cannot register anywhere.
        let why = ready_at("the worker", &worker_http, false).await?;
        anyhow::ensure!(why.contains("not registered"), "the worker's reason: {why:?}");
        for id in cluster.ids().into_iter().filter(|&id| id != follower) {
            cluster.restart(id)?;
        }
        ready_at("the worker", &worker_http, true).await?;
        Ok(())
    })
    .await;
}

/// `query` percent-encoded for a URL.
fn url_encode(query: &str) -> String {
    query
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The single value of an instant PromQL query, if it has one.
async fn promql(prometheus: &str, query: &str) -> Result<Option<f64>, String> {
    let (status, body) = http_get(prometheus, &format!("/api/v1/query?query={}", url_encode(query)))
        .await
        .map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("{status}: {body}"));
    }
    let answer: serde_json::Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
    Ok(answer["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_the_cluster_and_counts_the_runs() {
    if std::process::Command::new("prometheus")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("ROTA_REQUIRE_PROMETHEUS").is_none(),
            "prometheus is required (install Debian's prometheus package)"
        );
        eprintln!("skipped: no prometheus (install Debian's prometheus package)");
        return;
    }
    let mut cluster = Cluster::start(3, settings()).await.expect("cluster starts");
    run_checked(&mut cluster, async |cluster| {
        run_jobs(cluster, "scraped", 4).await?;
        // Prometheus itself, scraping every server each second.
        let dir = tempfile::tempdir()?;
        let targets: Vec<String> = cluster
            .ids()
            .into_iter()
            .map(|id| http_addr(cluster, id).map(|addr| format!("\"{addr}\"")))
            .collect::<anyhow::Result<_>>()?;
        let worker = worker_http_addr(cluster, "scraped")?;
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\n\
                 rule_files: ['{}']\n\
                 scrape_configs:\n  - job_name: rota\n    static_configs:\n      - targets: [{}]\n\
                 \x20 - job_name: rota-worker\n    static_configs:\n      - targets: [\"{worker}\"]\n",
                deploy("prometheus/rota-alerts.yml").display(),
                targets.join(", ")
            ),
        )?;
        let web = format!("127.0.0.1:{}", rota_chaos::free_port()?);
        let _prometheus = tokio::process::Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={web}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("prometheus.log"))?)
            .kill_on_drop(true)
            .spawn()?;
        let expect = async |query: &str, want: f64| -> anyhow::Result<()> {
            wait_for(&format!("{query} = {want}"), Duration::from_secs(60), || async {
                let value = promql(&web, query).await?;
                Ok((value == Some(want)).then_some(()))
            })
            .await
        };
        expect("count(up{job=\"rota\"} == 1)", 3.0).await?;
        expect("sum(rota_raft_is_leader)", 1.0).await?;
        expect("min(rota_runs_created_total{cause=\"manual\"})", 4.0).await?;
        expect("max(rota_jobs)", 2.0).await?;
        // The worker, scraped as its own job: registered, and it ran and
        // shipped the output of the four runs ("counted\n" each).
        expect("count(up{job=\"rota-worker\"} == 1)", 1.0).await?;
        expect("sum(rota_worker_connected)", 1.0).await?;
        expect(
            "sum(rota_worker_attempts_started_total{driver=\"exec\"}) >= bool 4",
            1.0,
        )
        .await?;
        expect("sum(rota_worker_log_shipped_bytes_total) >= bool 32", 1.0).await?;
        expect("max(rota_workers{state=\"alive\"})", 1.0).await?;
        // The dashboard's lateness query answers (a number, not NaN).
        let p99 = "histogram_quantile(0.99, sum by (le) (rate(rota_trigger_lateness_seconds_bucket[1m])))";
        let lateness = wait_for("the lateness p99", Duration::from_secs(60), || async {
            Ok(promql(&web, p99).await?.filter(|v| v.is_finite()))
        })
        .await?;
        anyhow::ensure!(
            (0.0..60.0).contains(&lateness),
            "lateness p99 of a per-second job: {lateness}s"
        );
        // The leader killed while the per-second job runs: Prometheus sees
        // one server down, a new leader, the survivors' leader-change
        // counter move, and slots still fire (the lateness count grows).
        let lateness_count = "max(rota_trigger_lateness_seconds_count)";
        let before = wait_for("a lateness count", Duration::from_secs(30), || async {
            promql(&web, lateness_count).await
        })
        .await?;
        let changes = "max(rota_raft_leader_changes_total)";
        let changes_before = wait_for("a leader-change count", Duration::from_secs(30), || async {
            promql(&web, changes).await
        })
        .await?;
        let leader = cluster.wait_for_leader(Duration::from_secs(30)).await?;
        cluster.kill(leader)?;
        expect("count(up{job=\"rota\"} == 0)", 1.0).await?;
        expect(&format!("{changes} > bool {changes_before}"), 1.0).await?;
        expect("sum(rota_raft_is_leader)", 1.0).await?;
        expect(&format!("{lateness_count} > bool {}", before + 2.0), 1.0).await?;
        // Every query of the dashboard is valid PromQL on live data.
        for expr in dashboard_queries()? {
            let (status, body) = http_get(&web, &format!("/api/v1/query?query={}", url_encode(&expr))).await?;
            anyhow::ensure!(
                status == 200 && body.contains("\"status\":\"success\""),
                "dashboard query {expr}: {status} {body}"
            );
        }
        // The alert rules loaded and evaluate without error.
        wait_for(
            "every alert rule to evaluate cleanly",
            Duration::from_secs(30),
            || async {
                let (_, body) = http_get(&web, "/api/v1/rules").await.map_err(|e| e.to_string())?;
                let rules: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
                let health: Vec<String> = rules["data"]["groups"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
                    .map(|r| {
                        format!(
                            "{}={}",
                            r["name"].as_str().unwrap_or("?"),
                            r["health"].as_str().unwrap_or("?")
                        )
                    })
                    .collect();
                let ok = health.len() == 10 && health.iter().all(|h| h.ends_with("=ok"));
                if ok { Ok(Some(())) } else { Err(format!("{health:?}")) }
            },
        )
        .await?;
        Ok(())
    })
    .await;
}

/// A file of `deploy/`.
fn deploy(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(path)
}

/// Every PromQL query of the Grafana dashboard.
fn dashboard_queries() -> anyhow::Result<Vec<String>> {
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(deploy("grafana/rota-dashboard.json"))?)?;
    Ok(dashboard["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|panel| panel["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|target| target["expr"].as_str().map(str::to_owned))
        .collect())
}

#[test]
fn the_dashboard_is_well_formed() {
    let text = std::fs::read_to_string(deploy("grafana/rota-dashboard.json")).expect("the dashboard exists");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    assert_eq!(dashboard["uid"], "rota-overview");
    assert!(dashboard["title"].is_string() && dashboard["schemaVersion"].is_u64());
    let panels = dashboard["panels"].as_array().expect("panels");
    let graphs: Vec<&serde_json::Value> = panels.iter().filter(|p| p["type"] != "row").collect();
    assert!(
        graphs.len() >= 12,
        "cluster, scheduling, outcomes and workers: {} panels",
        graphs.len()
    );
    for panel in graphs {
        let title = panel["title"].as_str().unwrap_or("?");
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "{title}: the datasource variable"
        );
        let targets = panel["targets"].as_array().map_or(0, Vec::len);
        assert!(targets >= 1, "{title} has a query");
        let (x, w) = (panel["gridPos"]["x"].as_u64(), panel["gridPos"]["w"].as_u64());
        assert!(
            x.zip(w).is_some_and(|(x, w)| w > 0 && x + w <= 24),
            "{title}: within the 24-column grid"
        );
    }
    let queries = dashboard_queries().expect("queries");
    for metric in [
        "rota_raft_is_leader",
        "rota_trigger_lateness_seconds_bucket",
        "rota_runs_finished_total",
        "rota_workers",
        "rota_cluster_slots",
        "rota_raft_log_append_seconds_bucket",
        "rota_worker_running_tasks",
        "rota_worker_container_start_seconds_bucket",
    ] {
        assert!(
            queries.iter().any(|q| q.contains(metric)),
            "the dashboard shows {metric}"
        );
    }
}

#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests() {
    let dir = deploy("prometheus");
    for args in [
        ["check", "rules", "rota-alerts.yml"],
        ["test", "rules", "rota-alerts.test.yml"],
    ] {
        let output = match std::process::Command::new("promtool")
            .args(args)
            .current_dir(&dir)
            .output()
        {
            Ok(output) => output,
            Err(e) => {
                assert!(
                    std::env::var_os("ROTA_REQUIRE_PROMETHEUS").is_none(),
                    "promtool is required: {e} (install Debian's prometheus package)"
                );
                eprintln!("skipped: no promtool ({e})");
                return;
            }
        };
        assert!(
            output.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
