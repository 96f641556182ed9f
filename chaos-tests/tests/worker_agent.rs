//! The real worker agent (`rota-worker`) against a real 3-server cluster:
//! jobs as host processes and as containers of the real Docker engine (the
//! locally built test image), their output through `rotactl run logs`, exit
//! codes, OOM kills, timeouts, cancels and parameters; a worker SIGKILLed
//! and restarted mid-run; a worker cut off from every server; and output
//! that survives a change of leader; image garbage collection.
//!
//! Container tests are skipped when no Docker engine answers, unless
//! `ROTA_REQUIRE_DOCKER` is set (CI sets it; there they must run).

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use rota_chaos::proxy::Proxy;
use rota_chaos::{Cluster, ServerSettings, WorkerSettings, docker, output_text, rotactl, scrape, wait_for};
use rota_client::proto as pb;
use rota_client::{Consistency, SpecFile};

const LEASE: Duration = Duration::from_secs(4);
const LEASE_GRACE: Duration = Duration::from_secs(2);

fn settings() -> ServerSettings {
    ServerSettings {
        env: vec![
            ("ROTA_WORKER_LEASE".into(), "4s".into()),
            ("ROTA_WORKER_LEASE_GRACE".into(), "2s".into()),
        ],
        ..ServerSettings::default()
    }
}

/// Whether container tests run here (see the module docs).
fn docker_ready() -> bool {
    docker::ready_or_skip()
}

/// The `task:` block of a job running `script` with `sh -c` on `driver`.
fn task_yaml(driver: &str, script: &str, extra: &str) -> String {
    let script = serde_json::to_string(script).expect("a string serializes");
    let image = match driver {
        "docker" => format!("  image: {}\n  pull: never\n", docker::TEST_IMAGE),
        _ => "  driver: exec\n".to_owned(),
    };
    format!("task:\n{image}  command: [\"sh\", \"-c\", {script}]\n{extra}")
}

async fn create_job(cluster: &Cluster, name: &str, driver: &str, script: &str, task_extra: &str, job_extra: &str) {
    create_job_from(
        cluster,
        &format!("name: {name}\n{}{job_extra}", task_yaml(driver, script, task_extra)),
    )
    .await;
}

/// Creates the job of spec file text `yaml`.
async fn create_job_from(cluster: &Cluster, yaml: &str) {
    let spec = SpecFile::parse_yaml(yaml).unwrap_or_else(|e| panic!("{yaml}: {e}"));
    cluster
        .client()
        .expect("client")
        .create_job(spec[0].to_proto())
        .await
        .unwrap_or_else(|e| panic!("creating {yaml}: {e}"));
}

async fn trigger(cluster: &Cluster, job: &str, params: &[(&str, &str)]) -> String {
    let params: HashMap<String, String> = params.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
    let (run, _) = cluster
        .client()
        .expect("client")
        .trigger_run(job, None, params, false)
        .await
        .unwrap_or_else(|e| panic!("triggering {job}: {e}"));
    run.id
}

async fn get_run(cluster: &Cluster, id: &str) -> anyhow::Result<pb::Run> {
    Ok(cluster.client()?.get_run(id, Consistency::Linearizable).await?)
}

fn terminal(state: pb::RunState) -> bool {
    !matches!(
        state,
        pb::RunState::Pending | pb::RunState::Assigned | pb::RunState::Running | pb::RunState::Unspecified
    )
}

/// Waits for run `id` to end and its last attempt to be reported ended (a
/// cancelled or timed-out run ends at once; its attempt once the worker
/// reports the task stopped); returns it.
async fn wait_ended(cluster: &Cluster, id: &str, timeout: Duration) -> anyhow::Result<pb::Run> {
    wait_for(&format!("run {id} and its attempt to end"), timeout, || async {
        let run = get_run(cluster, id).await.map_err(|e| e.to_string())?;
        let attempt_ended = run.attempts.last().is_none_or(|a| a.ended_at.is_some());
        Ok((terminal(run.state()) && attempt_ended).then_some(run))
    })
    .await
}

/// The run's output as `rotactl run logs` prints it.
async fn logs(cluster: &Cluster, id: &str) -> anyhow::Result<String> {
    let output = rotactl(&cluster.servers_arg(), &["run", "logs", id]).await?;
    anyhow::ensure!(output.status.success(), "rotactl run logs: {}", output_text(&output));
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Waits until the run's output contains `text`.
async fn wait_for_output(cluster: &Cluster, id: &str, text: &str) -> anyhow::Result<()> {
    wait_for(
        &format!("{text:?} in the output of {id}"),
        Duration::from_secs(60),
        || async {
            let out = logs(cluster, id).await.map_err(|e| e.to_string())?;
            Ok(out.contains(text).then_some(()))
        },
    )
    .await
}

/// Host processes whose command line contains `marker`.
fn processes_with(marker: &str) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().chars().all(|c| c.is_ascii_digit()))
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .filter(|cmdline| String::from_utf8_lossy(cmdline).contains(marker))
        .count()
}

/// What is left of a task after its run ended: none of worker's containers
/// (docker) or no process carrying `marker` (exec).
async fn wait_task_gone(driver: &str, worker: &str, marker: &str) -> anyhow::Result<()> {
    wait_for("the task to be gone from the host", Duration::from_secs(30), || async {
        let left = match driver {
            "docker" => docker::containers(worker, true).map_err(|e| e.to_string())?.len(),
            _ => processes_with(marker),
        };
        Ok((left == 0).then_some(()))
    })
    .await
}

fn last_attempt(run: &pb::Run) -> pb::Attempt {
    run.attempts.last().cloned().unwrap_or_default()
}

/// The whole life of jobs on one driver: success with output and params,
/// failure with its exit code, timeout, a cancel honoured by the task's
/// SIGTERM handler, a cancel that needs SIGKILL after kill grace, and an
/// OOM kill under a memory limit.
async fn jobs_run_end_to_end(driver: &str) {
    let mut cluster = Cluster::start(3, settings()).await.expect("cluster starts");
    let worker = format!("{driver}-worker");
    let mut worker_settings = WorkerSettings::new(&worker, driver);
    worker_settings.slots = 6;
    cluster.start_worker(worker_settings).expect("worker starts");
    let marker = format!("rota-marker-{driver}-{}", std::process::id());

    create_job(
        &cluster,
        "hello",
        driver,
        "echo \"hello $GREETING from attempt $ROTA_ATTEMPT of $ROTA_JOB\"; echo to-stderr >&2",
        "  env: { GREETING: default }\n",
        "",
    )
    .await;
    create_job(&cluster, "fails", driver, "echo failing; exit 3", "", "").await;
    // Burns about a second of CPU in a child shell (counted: its parent waits).
    create_job(
        &cluster,
        "busy",
        driver,
        "sh -c 'i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done'; echo counted",
        "",
        "",
    )
    .await;
    create_job(
        &cluster,
        "slow",
        driver,
        &format!("echo started; sleep 600; echo {marker}-slow"),
        "",
        "timeout: 3s\nkill_grace: 1s\n",
    )
    .await;
    create_job(
        &cluster,
        "graceful",
        driver,
        &format!("trap 'echo got TERM; exit 0' TERM; echo ready; while true; do sleep 1; done; echo {marker}-graceful"),
        "",
        "kill_grace: 20s\n",
    )
    .await;
    create_job(
        &cluster,
        "stubborn",
        driver,
        &format!("trap '' TERM; echo ready; while true; do sleep 1; done; echo {marker}-stubborn"),
        "",
        "kill_grace: 2s\n",
    )
    .await;

    let hello = trigger(&cluster, "hello", &[("GREETING", "from-a-param")]).await;
    let fails = trigger(&cluster, "fails", &[]).await;
    let busy = trigger(&cluster, "busy", &[]).await;
    let slow = trigger(&cluster, "slow", &[]).await;
    let graceful = trigger(&cluster, "graceful", &[]).await;
    let stubborn = trigger(&cluster, "stubborn", &[]).await;

    let scenario = async {
        let run = wait_ended(&cluster, &hello, Duration::from_secs(60)).await?;
        anyhow::ensure!(run.state() == pb::RunState::Succeeded, "hello: {run:?}");
        anyhow::ensure!(last_attempt(&run).exit_code == Some(0), "hello: {run:?}");
        let out = logs(&cluster, &hello).await?;
        anyhow::ensure!(
            out.contains("hello from-a-param from attempt 1 of hello"),
            "the param and ROTA_* reach the task: {out:?}"
        );
        anyhow::ensure!(out.contains("to-stderr"), "stderr is kept: {out:?}");

        let run = wait_ended(&cluster, &fails, Duration::from_secs(60)).await?;
        anyhow::ensure!(run.state() == pb::RunState::Failed, "fails: {run:?}");
        anyhow::ensure!(last_attempt(&run).exit_code == Some(3), "fails: {run:?}");
        anyhow::ensure!(logs(&cluster, &fails).await?.contains("failing"));

        let run = wait_ended(&cluster, &busy, Duration::from_secs(60)).await?;
        anyhow::ensure!(run.state() == pb::RunState::Succeeded, "busy: {run:?}");
        if driver == "exec" {
            // Read from /proc before the process is reaped (docker's stats
            // sampler may miss so short a container).
            let cpu = last_attempt(&run).cpu_time_ms;
            anyhow::ensure!(cpu >= 50, "busy's CPU time is reported: {cpu} ms in {run:?}");
        }

        let run = wait_ended(&cluster, &slow, Duration::from_secs(60)).await?;
        anyhow::ensure!(run.state() == pb::RunState::TimedOut, "slow: {run:?}");
        anyhow::ensure!(logs(&cluster, &slow).await?.contains("started"));

        // Cancel once the task is ready (its TERM handler installed).
        wait_for_output(&cluster, &graceful, "ready").await?;
        cluster.client()?.cancel_run(&graceful).await?;
        let run = wait_ended(&cluster, &graceful, Duration::from_secs(60)).await?;
        anyhow::ensure!(run.state() == pb::RunState::Cancelled, "graceful: {run:?}");
        anyhow::ensure!(
            last_attempt(&run).exit_code == Some(0),
            "the task's own TERM handler ended it: {run:?}"
        );
        anyhow::ensure!(logs(&cluster, &graceful).await?.contains("got TERM"));

        wait_for_output(&cluster, &stubborn, "ready").await?;
        cluster.client()?.cancel_run(&stubborn).await?;
        let run = wait_ended(&cluster, &stubborn, Duration::from_secs(60)).await?;
        anyhow::ensure!(run.state() == pb::RunState::Cancelled, "stubborn: {run:?}");
        anyhow::ensure!(
            last_attempt(&run).exit_code == Some(137),
            "a task ignoring SIGTERM gets SIGKILL after kill grace: {run:?}"
        );

        {
            // Over its memory limit, as another user than the worker's (who
            // must still be able to join the attempt's cgroup, for exec).
            create_job(
                &cluster,
                "hungry",
                driver,
                "echo allocating; x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived",
                "  resources: { memory: 32Mi }\n  user: \"65534\"\n",
                "",
            )
            .await;
            let hungry = trigger(&cluster, "hungry", &[]).await;
            let run = wait_ended(&cluster, &hungry, Duration::from_secs(60)).await?;
            anyhow::ensure!(run.state() == pb::RunState::Failed, "hungry: {run:?}");
            anyhow::ensure!(last_attempt(&run).oom_killed, "hungry is reported OOM-killed: {run:?}");
            anyhow::ensure!(!logs(&cluster, &hungry).await?.contains("survived"));
            if driver == "exec" {
                // The attempt's cgroup measured it (docker's stats sampler
                // may see no sample of so short a container).
                let peak = last_attempt(&run).peak_memory_bytes;
                anyhow::ensure!(peak >= 16 << 20, "hungry's peak memory is reported: {run:?}");
            }
        }
        wait_task_gone(driver, &worker, &marker).await
    };
    let result = scenario.await;
    if driver == "docker" {
        docker::remove_worker_containers(&worker);
    }
    cluster.settle(result);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_jobs_succeed_fail_time_out_cancel_and_get_oom_killed() {
    jobs_run_end_to_end("exec").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_jobs_succeed_fail_time_out_cancel_and_get_oom_killed() {
    if !docker_ready() {
        return;
    }
    jobs_run_end_to_end("docker").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_run_takes_its_container_over_after_a_restart() {
    if !docker_ready() {
        return;
    }
    let mut cluster = Cluster::start(3, settings()).await.expect("cluster starts");
    let worker = "restarted-worker";
    cluster
        .start_worker(WorkerSettings::new(worker, "docker"))
        .expect("worker starts");
    create_job(
        &cluster,
        "adopted",
        "docker",
        "echo before; sleep 4; echo after",
        "",
        "",
    )
    .await;
    let id = trigger(&cluster, "adopted", &[]).await;
    let scenario = async {
        wait_for_output(&cluster, &id, "before").await?;
        cluster.worker(worker)?.process.kill()?;
        anyhow::ensure!(
            docker::containers(worker, false)?.len() == 1,
            "the container outlives its worker"
        );
        cluster.restart_worker(worker)?;
        let run = wait_ended(&cluster, &id, Duration::from_secs(60)).await?;
        anyhow::ensure!(run.attempts.len() == 1, "one attempt only: {run:?}");
        anyhow::ensure!(
            run.state() == pb::RunState::Succeeded,
            "the restarted worker took the container over and reported it: {run:?}"
        );
        let out = logs(&cluster, &id).await?;
        anyhow::ensure!(
            out.matches("before").count() == 1 && out.matches("after").count() == 1,
            "the output is whole, nothing twice: {out:?}"
        );
        wait_task_gone("docker", worker, "").await?;
        // The ended run stays ended (one terminal state, no late change).
        let again = get_run(&cluster, &id).await?;
        anyhow::ensure!(again.state() == run.state() && again.attempts.len() == 1, "{again:?}");
        Ok(())
    };
    let result: anyhow::Result<()> = scenario.await;
    docker::remove_worker_containers(worker);
    cluster.settle(result);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_cut_off_from_every_server_kills_its_container_before_its_lease_ends() {
    if !docker_ready() {
        return;
    }
    let mut cluster = Cluster::start(3, settings()).await.expect("cluster starts");
    let leader = cluster.wait_for_leader(Duration::from_secs(30)).await.expect("leader");
    let proxy = Proxy::start(&cluster.addr(leader).expect("addr")).await.expect("proxy");
    let (cut_off, rescuer) = ("cut-off-worker", "rescuing-worker");
    let mut through_proxy = WorkerSettings::new(cut_off, "docker");
    through_proxy.servers = Some(vec![proxy.addr.clone()]);
    cluster.start_worker(through_proxy).expect("worker starts");
    create_job(
        &cluster,
        "partitioned",
        "docker",
        "if [ \"$ROTA_ATTEMPT\" = 1 ]; then echo first; sleep 600; fi; echo done-$ROTA_ATTEMPT",
        "",
        "kill_grace: 1s\nretry: { max_attempts: 2, backoff: 100ms, on: [lost] }\n",
    )
    .await;
    let id = trigger(&cluster, "partitioned", &[]).await;
    let scenario = async {
        wait_for_output(&cluster, &id, "first").await?;
        anyhow::ensure!(docker::containers(cut_off, false)?.len() == 1);
        proxy.cut();
        let (cut_at, cut_wall) = (Instant::now(), SystemTime::now());
        cluster.start_worker(WorkerSettings::new(rescuer, "docker"))?;

        // The worker's last renewal was before the cut, so its lease ends
        // within LEASE of it: the container must be dead by then.
        wait_for("the cut-off container to stop", Duration::from_secs(30), || async {
            let running = docker::containers(cut_off, false).map_err(|e| e.to_string())?;
            Ok(running.is_empty().then_some(()))
        })
        .await?;
        let stopped_after = cut_at.elapsed();
        anyhow::ensure!(
            stopped_after < LEASE,
            "the container ran {stopped_after:?} after the cut; its lease ({LEASE:?}) had ended"
        );

        let run = wait_ended(&cluster, &id, Duration::from_secs(60)).await?;
        anyhow::ensure!(run.state() == pb::RunState::Succeeded, "{run:?}");
        anyhow::ensure!(run.attempts.len() == 2, "{run:?}");
        let (first, second) = (&run.attempts[0], &run.attempts[1]);
        anyhow::ensure!(first.worker == cut_off && first.outcome == "lost", "{run:?}");
        anyhow::ensure!(second.worker == rescuer, "{run:?}");
        // Retried only after lease + grace from the last renewal, which was
        // at most one heartbeat interval (LEASE / 3) before the cut.
        let assigned = second.assigned_at.map(SystemTime::try_from).transpose()?;
        let earliest = cut_wall + LEASE + LEASE_GRACE - LEASE / 3;
        anyhow::ensure!(
            assigned.is_some_and(|a| a >= earliest),
            "the retry was assigned {assigned:?}, before the lease and grace ran out ({earliest:?})"
        );
        anyhow::ensure!(logs(&cluster, &id).await?.contains("done-2"));

        // Reconnected, the cut-off worker learns its attempt is not current:
        // its late result changes nothing.
        proxy.restore();
        let log = || cluster.workers_log(cut_off);
        wait_for(
            "the cut-off worker to drop its attempt",
            Duration::from_secs(60),
            || async { Ok(log().contains("dropping an attempt").then_some(())) },
        )
        .await?;
        let after = get_run(&cluster, &id).await?;
        anyhow::ensure!(
            after.state() == pb::RunState::Succeeded && after.attempts[0].outcome == "lost",
            "{after:?}"
        );
        wait_task_gone("docker", cut_off, "").await?;
        wait_task_gone("docker", rescuer, "").await
    };
    let result: anyhow::Result<()> = scenario.await;
    docker::remove_worker_containers(cut_off);
    docker::remove_worker_containers(rescuer);
    cluster.settle(result);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_survives_a_change_of_leader_mid_run() {
    // The default lease (10 s): an election must not cost the worker its lease.
    let mut cluster = Cluster::start(3, ServerSettings::default())
        .await
        .expect("cluster starts");
    cluster
        .start_worker(WorkerSettings::new("steady-worker", "exec"))
        .expect("worker starts");
    create_job(
        &cluster,
        "chatty",
        "exec",
        "i=1; while [ $i -le 40 ]; do echo line-$i; i=$((i+1)); sleep 0.15; done",
        "",
        "",
    )
    .await;
    let id = trigger(&cluster, "chatty", &[]).await;
    let scenario = async {
        wait_for_output(&cluster, &id, "line-3\n").await?;
        let leader = cluster.wait_for_leader(Duration::from_secs(30)).await?;
        cluster.kill(leader)?;
        let run = wait_ended(&cluster, &id, Duration::from_secs(90)).await?;
        anyhow::ensure!(run.state() == pb::RunState::Succeeded, "{run:?}");
        let out = logs(&cluster, &id).await?;
        let expected: String = (1..=40).map(|i| format!("line-{i}\n")).collect();
        anyhow::ensure!(out == expected, "the whole output, once, in order: {out:?}");
        Ok(())
    };
    let result: anyhow::Result<()> = scenario.await;
    cluster.settle(result);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_no_run_used_for_the_gc_age_are_removed_but_never_one_in_use() {
    if !docker_ready() {
        return;
    }
    // Two names of the test image that only this test's worker uses.
    let idle = format!("rota-test/gc-{}:idle", std::process::id());
    let busy = format!("rota-test/gc-{}:busy", std::process::id());
    for image in [&idle, &busy] {
        docker::tag(docker::TEST_IMAGE, image).expect("docker tag");
    }
    let mut cluster = Cluster::start(3, settings()).await.expect("cluster starts");
    let worker = "gc-worker";
    let mut worker_settings = WorkerSettings::new(worker, "docker");
    worker_settings.http = true;
    worker_settings.env.push(("ROTA_IMAGE_GC_AGE".into(), "3s".into()));
    worker_settings
        .env
        .push(("ROTA_RECONCILE_INTERVAL".into(), "1s".into()));
    cluster.start_worker(worker_settings).expect("worker starts");
    let http = cluster.worker(worker).expect("the worker").http_addr.clone();
    let job = |name: &str, image: &str, script: &str| {
        format!("name: {name}\ntask:\n  image: {image}\n  pull: never\n  command: [\"sh\", \"-c\", \"{script}\"]\n")
    };
    create_job_from(&cluster, &job("uses-busy", &busy, "echo ready; sleep 600")).await;
    create_job_from(&cluster, &job("uses-idle", &idle, "echo done")).await;
    let scenario = async {
        // `busy` is in use from before `idle` was last used to after `idle`
        // is collected: when the GC pass removes `idle` (unused for 3 s),
        // `busy` is past the age too, and must be kept because a run uses it.
        let long = trigger(&cluster, "uses-busy", &[]).await;
        wait_for_output(&cluster, &long, "ready").await?;
        let short = trigger(&cluster, "uses-idle", &[]).await;
        let run = wait_ended(&cluster, &short, Duration::from_secs(60)).await?;
        anyhow::ensure!(run.state() == pb::RunState::Succeeded, "{run:?}");
        wait_for("the idle image to be collected", Duration::from_secs(60), || async {
            Ok((!docker::image_exists(&idle).map_err(|e| e.to_string())?).then_some(()))
        })
        .await?;
        anyhow::ensure!(docker::image_exists(&busy)?, "the image in use was removed");
        anyhow::ensure!(
            get_run(&cluster, &long).await?.state() == pb::RunState::Running,
            "the run using the busy image still runs"
        );
        anyhow::ensure!(
            docker::image_exists(docker::TEST_IMAGE)?,
            "an image no run of this worker used is not the worker's to remove"
        );

        // Once its run ends, the busy image ages and goes too.
        cluster.client()?.cancel_run(&long).await?;
        wait_ended(&cluster, &long, Duration::from_secs(60)).await?;
        wait_for("the busy image to be collected", Duration::from_secs(60), || async {
            Ok((!docker::image_exists(&busy).map_err(|e| e.to_string())?).then_some(()))
        })
        .await?;
        // The worker's metrics saw both containers start and both removals.
        let http = http
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("the worker has no HTTP endpoint"))?;
        let found = wait_for("the worker to count both removals", Duration::from_secs(30), || async {
            let found = scrape(http).await.map_err(|e| e.to_string())?;
            let removed = found.get("rota_worker_reconcile_removals_total{kind=\"image\"}");
            Ok((removed == Some(&2.0)).then_some(found))
        })
        .await?;
        for (name, want) in [
            ("rota_worker_container_start_seconds_count", 2.0),
            ("rota_worker_attempts_started_total{driver=\"docker\"}", 2.0),
            ("rota_worker_running_tasks", 0.0),
            ("rota_worker_image_pulls_total{result=\"ok\"}", 0.0),
        ] {
            anyhow::ensure!(found.get(name) == Some(&want), "{name} should be {want}: {found:?}");
        }
        Ok(())
    };
    let result = scenario.await;
    docker::remove_worker_containers(worker);
    for image in [&idle, &busy] {
        docker::remove_image(image);
    }
    cluster.settle(result);
}

async fn rotactl_ok(cluster: &Cluster, args: &[&str]) -> anyhow::Result<String> {
    let output = rotactl(&cluster.servers_arg(), args).await?;
    anyhow::ensure!(output.status.success(), "rotactl {args:?}: {}", output_text(&output));
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drained_and_shut_down_workers_hand_their_runs_back() {
    let mut cluster = Cluster::start(3, settings()).await.expect("cluster starts");
    cluster
        .start_worker(WorkerSettings::new("drained", "exec"))
        .expect("worker starts");
    // Attempt 1 never ends by itself; later attempts do.
    let script = "echo start-$ROTA_ATTEMPT; if [ \"$ROTA_ATTEMPT\" = 1 ]; then while true; do sleep 1; done; fi; echo end-$ROTA_ATTEMPT";
    create_job(&cluster, "handed", "exec", script, "", "kill_grace: 2s\n").await;
    let scenario = async {
        let id = trigger(&cluster, "handed", &[]).await;
        wait_for_output(&cluster, &id, "start-1").await?;
        let list = rotactl_ok(&cluster, &["worker", "list"]).await?;
        anyhow::ensure!(
            list.lines()
                .any(|l| l.starts_with("drained ") && l.contains("alive") && l.contains("1/2")),
            "{list}"
        );

        // An operator drain: no new runs, and the running one is handed back
        // at the deadline, to run elsewhere without using up its one attempt.
        rotactl_ok(&cluster, &["worker", "drain", "drained", "--deadline", "2s"]).await?;
        let mut rescuer = WorkerSettings::new("rescuer", "exec");
        rescuer.env.push(("ROTA_SHUTDOWN_TIMEOUT".into(), "3s".into()));
        cluster.start_worker(rescuer)?;
        let run = wait_ended(&cluster, &id, Duration::from_secs(60)).await?;
        anyhow::ensure!(run.state() == pb::RunState::Succeeded, "{run:?}");
        anyhow::ensure!(run.attempts.len() == 2, "{run:?}");
        anyhow::ensure!(
            run.attempts[0].worker == "drained" && run.attempts[0].outcome == "handed_back",
            "{run:?}"
        );
        anyhow::ensure!(run.attempts[1].worker == "rescuer", "{run:?}");
        anyhow::ensure!(logs(&cluster, &id).await?.contains("end-2"));
        let list = rotactl_ok(&cluster, &["worker", "list"]).await?;
        anyhow::ensure!(
            list.lines()
                .any(|l| l.starts_with("drained ") && l.split_whitespace().nth(5) == Some("drained")),
            "{list}"
        );

        // A graceful shutdown (SIGTERM) is a drain of the worker's own, with
        // its shutdown_timeout (3 s) as deadline: the run (whose attempt 1
        // loops; it goes to the rescuer, the only worker not drained) is
        // handed back, the worker exits 0, and the run is picked up once the
        // operator's drain of the other worker is lifted.
        let quick = trigger(&cluster, "handed", &[]).await;
        wait_for_output(&cluster, &quick, "start-1").await?;
        cluster
            .worker("rescuer")?
            .process
            .signal(nix::sys::signal::Signal::SIGTERM)?;
        let status = cluster
            .worker("rescuer")?
            .process
            .wait_exit(Duration::from_secs(90))
            .await?;
        anyhow::ensure!(
            status.success(),
            "the worker exits 0 after a graceful shutdown: {status}"
        );
        let handed = get_run(&cluster, &quick).await?;
        anyhow::ensure!(
            handed.state() == pb::RunState::Pending && last_attempt(&handed).outcome == "handed_back",
            "{handed:?}"
        );
        rotactl_ok(&cluster, &["worker", "undrain", "drained"]).await?;
        let run = wait_ended(&cluster, &quick, Duration::from_secs(60)).await?;
        anyhow::ensure!(run.state() == pb::RunState::Succeeded, "{run:?}");
        anyhow::ensure!(last_attempt(&run).worker == "drained", "{run:?}");
        Ok(())
    };
    let result: anyhow::Result<()> = scenario.await;
    cluster.settle(result);
}
