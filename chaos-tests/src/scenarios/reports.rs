//! Scenario 8: worker reports duplicated, reordered and delayed — at the
//! protocol level, by test workers speaking the real worker protocol to the
//! real servers (a TCP proxy cannot duplicate a message inside an HTTP/2
//! stream; a worker that resends after a reconnect can).

use std::collections::BTreeMap;
use std::time::Duration;

use rand::Rng;
use rand::rngs::StdRng;
use rota_client::{SpecFile, proto as pb};

use super::{kept, wait_ended};
use crate::Cluster;
use crate::protocol::{TestWorker, WorkerDescription};
use crate::record::{Expectations, Recorder, collect, now_nanos, verdict};

/// The lease (4 s) and grace (2 s) this scenario's servers give workers.
pub(super) const LEASE_AND_GRACE: Duration = Duration::from_secs(6);

/// What the valid attempt of a run reported: its exit code and output.
struct Reported {
    exit_code: i32,
    output: String,
}

type Message = pb::worker_message::Message;

/// Sends `message`; fails unless the cluster accepted it.
async fn accepted(worker: &TestWorker, message: Message) -> anyhow::Result<pb::ReportAck> {
    let ack = worker.send(message.clone()).await?;
    anyhow::ensure!(ack.accepted, "{} refused {message:?}: {ack:?}", worker.id);
    Ok(ack)
}

/// A log batch of one chunk.
fn chunk(assignment: &pb::Assignment, offset: usize, data: &str) -> Message {
    Message::Logs(pb::LogBatch {
        run_id: assignment.run_id.clone(),
        epoch: assignment.epoch,
        chunks: vec![pb::LogData {
            offset: offset as u64,
            stream: pb::LogStream::Stdout as i32,
            data: data.as_bytes().to_vec(),
        }],
    })
}

/// Reports the attempt `assignment` as started, its three lines of output
/// and its end with `exit_code` — each report duplicated at random, and
/// lines sent out of order at random (refused as a gap, then resent in
/// order, as a worker does).
async fn report(
    worker: &TestWorker,
    assignment: &pb::Assignment,
    exit_code: i32,
    rng: &mut StdRng,
) -> anyhow::Result<Reported> {
    let started = Message::Started(pb::AttemptStarted {
        run_id: assignment.run_id.clone(),
        epoch: assignment.epoch,
    });
    accepted(worker, started.clone()).await?;
    if rng.random_bool(0.5) {
        worker.send(started).await?;
    }
    let lines: Vec<String> = (0..3)
        .map(|k| format!("{} epoch {} line {k}\n", assignment.run_id, assignment.epoch))
        .collect();
    let mut offset = 0;
    for (k, line) in lines.iter().enumerate() {
        if k + 1 < lines.len() && rng.random_bool(0.3) {
            // The next line first: a gap, refused, with where to resume.
            let ack = worker
                .send(chunk(assignment, offset + line.len(), &lines[k + 1]))
                .await?;
            anyhow::ensure!(
                !ack.accepted && ack.next_log_offset == offset as u64,
                "a chunk after a gap must be refused with the expected offset {offset}: {ack:?}"
            );
        }
        accepted(worker, chunk(assignment, offset, line)).await?;
        if rng.random_bool(0.3) {
            // The same chunk again (a resend after a lost ack): no change.
            let ack = worker.send(chunk(assignment, offset, line)).await?;
            anyhow::ensure!(
                ack.next_log_offset == (offset + line.len()) as u64,
                "a duplicate chunk changes nothing: {ack:?}"
            );
        }
        offset += line.len();
    }
    let finished = Message::Finished(pb::AttemptFinished {
        run_id: assignment.run_id.clone(),
        epoch: assignment.epoch,
        exit_code: Some(exit_code),
        ..Default::default()
    });
    accepted(worker, finished.clone()).await?;
    if rng.random_bool(0.5) {
        worker.send(finished).await?;
    }
    Ok(Reported {
        exit_code,
        output: lines.concat(),
    })
}

/// Waits for the next assignment of `worker`: the second attempt of one of
/// the `held` runs; reports it started.
async fn second_attempt(worker: &mut TestWorker, held: &[pb::Assignment]) -> anyhow::Result<pb::Assignment> {
    let assignment = worker.next_assignment(Duration::from_secs(30)).await?;
    anyhow::ensure!(
        assignment.attempt == 2 && held.iter().any(|h| h.run_id == assignment.run_id),
        "a lost run of the silent worker comes back as its second attempt: {assignment:?}"
    );
    let started = Message::Started(pb::AttemptStarted {
        run_id: assignment.run_id.clone(),
        epoch: assignment.epoch,
    });
    accepted(worker, started).await?;
    Ok(assignment)
}

/// Scenario 8: two test workers. `steady` (two slots) reports its runs with
/// duplicated and reordered messages. `silent` takes three runs, reports
/// them started, then goes quiet; its runs are lost after lease + grace,
/// two are retried on `steady`, the third waits for a free slot — and gets
/// one when `silent` comes back, so the same worker holds both attempts of
/// that run and only the epoch tells them apart. While the retries run,
/// `silent` delivers its delayed reports — output and a successful end,
/// stamped with the old epochs: every one is refused, and each run ends as
/// its valid attempt said, with exactly that attempt's output.
pub(super) async fn duplicate_and_delayed_worker_reports(
    cluster: &mut Cluster,
    rng: &mut StdRng,
    seed: u64,
) -> anyhow::Result<()> {
    let client = cluster.client()?;
    let recorder = Recorder::default();
    let yaml = "name: reports\nretry: { max_attempts: 2, backoff: 100ms, on: [lost] }\n\
                task: { driver: exec, command: [make] }\n";
    recorder
        .apply_job(&client, kept(&SpecFile::parse_yaml(yaml)?[0]))
        .await?;
    let addrs: Vec<String> = cluster.ids().iter().filter_map(|&id| cluster.addr(id).ok()).collect();
    let mut silent = TestWorker::connect(&addrs, WorkerDescription::exec("silent", 3)).await?;
    silent.start_heartbeats();
    for i in 0..3 {
        recorder.trigger(&client, "reports", &format!("silent-{i}")).await?;
    }
    let mut held = Vec::new();
    for _ in 0..3 {
        let assignment = silent.next_assignment(Duration::from_secs(20)).await?;
        let started = Message::Started(pb::AttemptStarted {
            run_id: assignment.run_id.clone(),
            epoch: assignment.epoch,
        });
        accepted(&silent, started).await?;
        held.push(assignment);
    }
    let mut steady = TestWorker::connect(&addrs, WorkerDescription::exec("steady", 2)).await?;
    steady.start_heartbeats();
    let mut expected: BTreeMap<String, Reported> = BTreeMap::new();
    for i in 0..3 {
        recorder.trigger(&client, "reports", &format!("steady-{i}")).await?;
        let assignment = steady.next_assignment(Duration::from_secs(20)).await?;
        let exit_code = if rng.random_bool(0.5) { 0 } else { 3 };
        let reported = report(&steady, &assignment, exit_code, rng).await?;
        expected.insert(assignment.run_id.clone(), reported);
    }

    // `silent` goes quiet; two of its runs come to `steady` as second
    // attempts, which fill its slots.
    silent.stop_heartbeats();
    let died = now_nanos();
    let last_renewal = silent.last_heartbeat_sent().unwrap_or(died);
    let mut retries = Vec::new();
    for _ in 0..2 {
        retries.push((false, second_attempt(&mut steady, &held).await?));
    }

    // It comes back, holding its old attempts, with its delayed reports.
    let mut description = WorkerDescription::exec("silent", 3);
    description.held = held
        .iter()
        .map(|a| pb::HeldAttempt {
            run_id: a.run_id.clone(),
            epoch: a.epoch,
        })
        .collect();
    let mut back = TestWorker::connect(&addrs, description).await?;
    back.start_heartbeats();
    // The third lost run comes back to it.
    retries.push((true, second_attempt(&mut back, &held).await?));
    for stale in &held {
        let late = [
            chunk(stale, 0, "stale output of a lost attempt\n"),
            Message::Finished(pb::AttemptFinished {
                run_id: stale.run_id.clone(),
                epoch: stale.epoch,
                exit_code: Some(0),
                ..Default::default()
            }),
        ];
        for message in late {
            let ack = back.send(message.clone()).await?;
            anyhow::ensure!(
                !ack.accepted,
                "a report of a lost attempt was accepted: {message:?} → {ack:?}"
            );
        }
    }
    // The retries end, unsuccessfully (the stale reports said success).
    for (on_back, assignment) in &retries {
        let worker = if *on_back { &back } else { &steady };
        let reported = report(worker, assignment, 3, rng).await?;
        expected.insert(assignment.run_id.clone(), reported);
    }
    for run in expected.keys() {
        wait_ended(&client, run, Duration::from_secs(30)).await?;
    }

    let history = collect(
        cluster,
        &recorder,
        None,
        Expectations {
            dead_workers: [("silent".to_owned(), died)].into(),
            lease_and_grace: LEASE_AND_GRACE,
            ..Expectations::default()
        },
    )
    .await?;
    for (_, assignment) in &retries {
        let run = history
            .runs
            .iter()
            .find(|r| r.id == assignment.run_id)
            .ok_or_else(|| anyhow::anyhow!("seed {seed}: run {} is gone", assignment.run_id))?;
        // No renewal after the last heartbeat was sent: exact.
        super::reassigned_after_lease_and_grace(run, last_renewal, LEASE_AND_GRACE, Duration::ZERO)?;
    }
    for (id, reported) in &expected {
        let run = history
            .runs
            .iter()
            .find(|r| &r.id == id)
            .ok_or_else(|| anyhow::anyhow!("seed {seed}: run {id} is gone"))?;
        let state = if reported.exit_code == 0 {
            pb::RunState::Succeeded
        } else {
            pb::RunState::Failed
        };
        let log = String::from_utf8_lossy(history.logs.get(id).map_or(&[][..], Vec::as_slice)).into_owned();
        anyhow::ensure!(
            run.state() == state && run.attempts.last().and_then(|a| a.exit_code) == Some(reported.exit_code),
            "seed {seed}: run {id} must end as its valid attempt reported (exit {}): {run:?}",
            reported.exit_code
        );
        anyhow::ensure!(
            log.matches(&reported.output).count() == 1 && !log.contains("stale"),
            "seed {seed}: run {id}'s log must hold its valid attempt's output once and nothing stale: {log:?}"
        );
    }
    verdict(&history, seed)
}
