//! The servers' side of the worker protocol, driven by a scripted worker
//! speaking real gRPC: registration, assignments, reports and their epochs,
//! bad reports, lease expiry and retry on another worker, and `forbid`.

use std::collections::HashMap;
use std::time::Duration;

use rota_chaos::protocol::{TestWorker, WorkerDescription, open_session};
use rota_chaos::{Cluster, ServerSettings, run_checked, wait_for};
use rota_client::proto as pb;
use rota_client::proto::worker_message::Message;
use rota_client::{Consistency, SpecFile};

fn settings() -> ServerSettings {
    ServerSettings {
        env: vec![
            ("ROTA_WORKER_LEASE".into(), "4s".into()),
            ("ROTA_WORKER_LEASE_GRACE".into(), "2s".into()),
        ],
        ..ServerSettings::default()
    }
}

fn addrs(cluster: &Cluster) -> Vec<String> {
    cluster.ids().iter().filter_map(|&id| cluster.addr(id).ok()).collect()
}

async fn job(cluster: &Cluster, yaml: &str) -> anyhow::Result<()> {
    let spec = SpecFile::parse_yaml(yaml)?;
    cluster.client()?.create_job(spec[0].to_proto()).await?;
    Ok(())
}

fn millis(ts: &Option<prost_types::Timestamp>) -> i64 {
    ts.as_ref()
        .map_or(i64::MAX, |t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_registers_gets_its_assignment_and_reports_with_epochs() {
    let mut cluster = Cluster::start(3, settings()).await.expect("cluster starts");
    run_checked(&mut cluster, async |cluster| {
        job(
            cluster,
            "name: proto\nconcurrency: forbid\ntask: { driver: exec, command: [\"build\"], env: { FOO: bar } }\n",
        )
        .await?;
        let leader = cluster.wait_for_leader(Duration::from_secs(10)).await?;
        let follower = cluster.ids().into_iter().find(|&id| id != leader).unwrap_or(1);

        // A follower refuses the session and names the leader.
        let register = pb::WorkerMessage {
            seq: 0,
            message: Some(Message::Register(pb::Register {
                worker_id: "w1".into(),
                slots: 2,
                drivers: vec!["exec".into()],
                ..Default::default()
            })),
        };
        let refused = open_session(&cluster.addr(follower)?, register, &Default::default())
            .await
            .expect_err("follower refuses");
        anyhow::ensure!(refused.code() == tonic::Code::Unavailable, "{refused:?}");
        let hint = refused
            .metadata()
            .get("rota-leader")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        anyhow::ensure!(hint.as_deref() == Some(cluster.addr(leader)?.as_str()), "hint {hint:?}");

        // Bad sessions are refused with the field named.
        let bad = pb::WorkerMessage {
            seq: 0,
            message: Some(Message::Register(pb::Register {
                worker_id: "no spaces allowed".into(),
                slots: 1,
                drivers: vec!["exec".into()],
                ..Default::default()
            })),
        };
        let refused = open_session(&cluster.addr(leader)?, bad, &Default::default())
            .await
            .expect_err("bad id");
        anyhow::ensure!(refused.code() == tonic::Code::InvalidArgument && refused.message().contains("worker_id"));
        let heartbeat_first = pb::WorkerMessage {
            seq: 0,
            message: Some(Message::Heartbeat(pb::Heartbeat {})),
        };
        let refused = open_session(&cluster.addr(leader)?, heartbeat_first, &Default::default())
            .await
            .expect_err("no register");
        anyhow::ensure!(refused.code() == tonic::Code::InvalidArgument, "{refused:?}");

        let mut worker = TestWorker::connect(&addrs(cluster), WorkerDescription::exec("w1", 2)).await?;
        worker.start_heartbeats();
        let client = cluster.client()?;
        let mut watch = client.watch_runs("proto", false).await?;
        let params = HashMap::from([("TARGET".to_owned(), "release".to_owned())]);
        let (run, _) = client.trigger_run("proto", Some("first"), params, false).await?;

        let assignment = worker.next_assignment(Duration::from_secs(20)).await?;
        anyhow::ensure!(assignment.run_id == run.id);
        let env = &assignment.env;
        anyhow::ensure!(env.get("ROTA_RUN_ID") == Some(&run.id), "{env:?}");
        anyhow::ensure!(env.get("ROTA_EPOCH") == Some(&assignment.epoch.to_string()), "{env:?}");
        anyhow::ensure!(env.get("FOO").map(String::as_str) == Some("bar"), "{env:?}");
        anyhow::ensure!(env.get("TARGET").map(String::as_str) == Some("release"), "{env:?}");
        anyhow::ensure!(
            env.contains_key("ROTA_SCHEDULED_AT") && env.contains_key("ROTA_JOB"),
            "{env:?}"
        );
        let epoch = assignment.epoch;

        let started = Message::Started(pb::AttemptStarted {
            run_id: run.id.clone(),
            epoch,
        });
        anyhow::ensure!(worker.send(started).await?.accepted);
        let logs = Message::Logs(pb::LogBatch {
            run_id: run.id.clone(),
            epoch,
            chunks: vec![pb::LogData {
                offset: 0,
                stream: pb::LogStream::Stdout as i32,
                data: b"hello\n".to_vec(),
            }],
        });
        let ack = worker.send(logs).await?;
        anyhow::ensure!(ack.accepted && ack.next_log_offset == 6, "{ack:?}");

        // Bad reports: refused with the reason, nothing changes.
        let before = client.get_run(&run.id, Consistency::Linearizable).await?;
        let finished = |run_id: &str, epoch: u64| {
            Message::Finished(pb::AttemptFinished {
                run_id: run_id.to_owned(),
                epoch,
                exit_code: Some(0),
                ..Default::default()
            })
        };
        let ack = worker.send(finished(&run.id, epoch + 1000)).await?;
        anyhow::ensure!(!ack.accepted && ack.error.contains("stale epoch"), "{ack:?}");
        let ack = worker.send(finished("no-such-run", epoch)).await?;
        anyhow::ensure!(!ack.accepted && ack.error.contains("not found"), "{ack:?}");
        let huge = Message::Logs(pb::LogBatch {
            run_id: run.id.clone(),
            epoch,
            chunks: vec![pb::LogData {
                offset: 6,
                stream: pb::LogStream::Stdout as i32,
                data: vec![b'x'; 300 << 10],
            }],
        });
        let ack = worker.send(huge).await?;
        anyhow::ensure!(!ack.accepted && ack.error.contains("exceeds the limit"), "{ack:?}");
        let mut other = TestWorker::connect(&addrs(cluster), WorkerDescription::exec("w2", 1)).await?;
        other.start_heartbeats();
        let ack = other.send(finished(&run.id, epoch)).await?;
        anyhow::ensure!(
            !ack.accepted && ack.error.contains("not assigned to worker w2"),
            "{ack:?}"
        );
        let after = client.get_run(&run.id, Consistency::Linearizable).await?;
        anyhow::ensure!(
            after.updated_index == before.updated_index,
            "a refused report changed the run"
        );

        anyhow::ensure!(worker.send(finished(&run.id, epoch)).await?.accepted);
        let done = client.get_run(&run.id, Consistency::Linearizable).await?;
        anyhow::ensure!(done.state == pb::RunState::Succeeded as i32, "{done:?}");
        anyhow::ensure!(done.attempts[0].exit_code == Some(0) && done.attempts[0].worker == "w1");
        // The watch saw the run through to success.
        let mut states = Vec::new();
        while !states.contains(&(pb::RunState::Succeeded as i32)) {
            let change = tokio::time::timeout(Duration::from_secs(10), watch.message())
                .await
                .map_err(|_| anyhow::anyhow!("watch silent; saw {states:?}"))??
                .and_then(|c| c.run)
                .ok_or_else(|| anyhow::anyhow!("watch ended; saw {states:?}"))?;
            anyhow::ensure!(change.id == run.id, "watch sent another job's run");
            states.push(change.state);
        }
        // Changes between two reads of the watcher coalesce: the first one
        // seen is the run pending or already assigned.
        let first_seen = states.first().copied();
        anyhow::ensure!(
            first_seen == Some(pb::RunState::Pending as i32) || first_seen == Some(pb::RunState::Assigned as i32),
            "{states:?}"
        );
        let mut stream = client.logs(&run.id, false, 0).await?;
        let mut output = Vec::new();
        while let Some(chunk) = stream.message().await? {
            output.extend(chunk.data);
        }
        anyhow::ensure!(output == b"hello\n", "log {:?}", String::from_utf8_lossy(&output));
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_worker_loses_its_run_which_is_retried_elsewhere_without_overlap() {
    let mut cluster = Cluster::start(3, settings()).await.expect("cluster starts");
    run_checked(&mut cluster, async |cluster| {
        job(
            cluster,
            "name: nightly\nconcurrency: forbid\nretry: { max_attempts: 2, backoff: 100ms, on: [lost] }\ntask: { driver: exec, command: [\"make\"] }\n",
        )
        .await?;
        let mut w1 = TestWorker::connect(&addrs(cluster), WorkerDescription::exec("w1", 1)).await?;
        w1.start_heartbeats();
        let client = cluster.client()?;
        let (run, _) = client.trigger_run("nightly", Some("r"), HashMap::new(), false).await?;
        let first = w1.next_assignment(Duration::from_secs(20)).await?;
        let started = Message::Started(pb::AttemptStarted {
            run_id: run.id.clone(),
            epoch: first.epoch,
        });
        anyhow::ensure!(w1.send(started).await?.accepted);

        // A second worker arrives; the first goes silent.
        let mut w2 = TestWorker::connect(&addrs(cluster), WorkerDescription::exec("w2", 1)).await?;
        w2.start_heartbeats();
        w1.stop_heartbeats();
        let silent_since = std::time::SystemTime::now();
        let second = w2.next_assignment(Duration::from_secs(30)).await?;
        anyhow::ensure!(second.run_id == run.id && second.attempt == 2 && second.epoch > first.epoch);

        let record = client.get_run(&run.id, Consistency::Linearizable).await?;
        anyhow::ensure!(record.attempts.len() == 2, "{record:?}");
        let (a, b) = (&record.attempts[0], &record.attempts[1]);
        anyhow::ensure!(a.outcome == "lost" && a.worker == "w1" && b.worker == "w2", "{record:?}");
        anyhow::ensure!(
            millis(&a.ended_at) <= millis(&b.assigned_at),
            "attempts overlap under forbid: {record:?}"
        );
        // Lost no earlier than a lease (4 s) after the last heartbeat (sent at
        // most a heartbeat interval before `silent_since`), and not much
        // later than lease + grace (6 s).
        let silent_ms = silent_since.duration_since(std::time::UNIX_EPOCH)?.as_millis() as i64;
        let lost_after = millis(&a.ended_at) - silent_ms;
        anyhow::ensure!(lost_after >= 4_000 - 1_400, "lost only {lost_after} ms after the last heartbeat");
        anyhow::ensure!(lost_after < 20_000, "lost only after {lost_after} ms");

        // The silent worker's session is ended: it must register again...
        let ended = loop {
            match w1.next_event(Duration::from_secs(10)).await {
                Ok(_) => continue,
                Err(e) => break e.to_string(),
            }
        };
        anyhow::ensure!(ended.contains("declared lost"), "{ended}");
        // ...and when it does, holding the old attempt, it is told to stop it,
        // and its late report is stale.
        let mut description = WorkerDescription::exec("w1", 1);
        description.held = vec![pb::HeldAttempt {
            run_id: run.id.clone(),
            epoch: first.epoch,
        }];
        let w1 = TestWorker::connect(&addrs(cluster), description).await?;
        anyhow::ensure!(
            w1.registered.stop.iter().any(|h| h.run_id == run.id && h.epoch == first.epoch),
            "{:?}",
            w1.registered
        );
        let late = Message::Finished(pb::AttemptFinished {
            run_id: run.id.clone(),
            epoch: first.epoch,
            exit_code: Some(0),
            ..Default::default()
        });
        let ack = w1.send(late).await?;
        anyhow::ensure!(!ack.accepted && ack.error.contains("stale epoch"), "{ack:?}");

        let finished = Message::Finished(pb::AttemptFinished {
            run_id: run.id.clone(),
            epoch: second.epoch,
            exit_code: Some(0),
            ..Default::default()
        });
        anyhow::ensure!(w2.send(finished).await?.accepted);
        wait_for("the run to succeed", Duration::from_secs(10), || async {
            let run = client.get_run(&run.id, Consistency::Linearizable).await.map_err(|e| e.to_string())?;
            Ok((run.state == pb::RunState::Succeeded as i32).then_some(()))
        })
        .await?;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_its_quorum_stops_renewing_worker_leases() {
    let mut cluster = Cluster::start(3, settings()).await.expect("cluster starts");
    run_checked(&mut cluster, async |cluster| {
        let leader = cluster.wait_for_leader(Duration::from_secs(10)).await?;
        let mut worker = TestWorker::connect(&[cluster.addr(leader)?], WorkerDescription::exec("w1", 1)).await?;
        worker.start_heartbeats();
        // Freeze both followers: the leader still runs but hears from no quorum.
        let followers: Vec<u64> = cluster.ids().into_iter().filter(|&id| id != leader).collect();
        for &id in &followers {
            cluster.signal(id, nix::sys::signal::Signal::SIGSTOP)?;
        }
        let ended = loop {
            match worker.next_event(Duration::from_secs(20)).await {
                Ok(_) => continue,
                Err(e) => break e.to_string(),
            }
        };
        for &id in &followers {
            cluster.signal(id, nix::sys::signal::Signal::SIGCONT)?;
        }
        anyhow::ensure!(ended.contains("lost contact with a quorum"), "{ended}");
        // Once the followers are back, a worker can register again.
        cluster.wait_for_leader(Duration::from_secs(30)).await?;
        TestWorker::connect(&addrs(cluster), WorkerDescription::exec("w1", 1)).await?;
        Ok(())
    })
    .await;
}
