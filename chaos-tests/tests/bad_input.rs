//! Bad input from the network gets a clear error and changes nothing; no
//! server crashes.

use std::collections::HashMap;
use std::time::Duration;

use rota_chaos::{Cluster, ServerSettings, job_spec};
use rota_client::proto as pb;
use rota_client::proto::raft_service_client::RaftServiceClient;
use rota_client::{Consistency, Error};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Writes `bytes` to a server's gRPC port and reads until it hangs up (or
/// a short deadline passes).
async fn send_raw(addr: &str, bytes: &[u8]) -> anyhow::Result<()> {
    let mut stream = TcpStream::connect(addr).await?;
    // The server may hang up before reading everything; that is fine.
    let _ = stream.write_all(bytes).await;
    let mut sink = vec![0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Ok(n) = stream.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
    Ok(())
}

/// Deterministic pseudo-random bytes (xorshift), so a failure reproduces.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_oversize_and_malformed_requests_never_crash_a_server() {
    let mut cluster = Cluster::start(3, ServerSettings::default())
        .await
        .expect("cluster starts");
    let result: anyhow::Result<()> = async {
        let client = cluster.client()?;
        client.create_job(job_spec("keep-me")).await?;
        let leader = cluster.wait_for_leader(Duration::from_secs(10)).await?;
        let follower = cluster.ids().into_iter().find(|&id| id != leader).unwrap_or(1);

        // Garbage bytes, an HTTP/1 request, and an HTTP/2 preface followed by
        // garbage frames, on the gRPC port of a leader and of a follower.
        for id in [leader, follower] {
            let addr = cluster.addr(id)?;
            send_raw(&addr, &noise(64 * 1024, 0x5eed + id)).await?;
            send_raw(&addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await?;
            let mut h2 = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
            h2.extend(noise(4096, 7));
            send_raw(&addr, &h2).await?;
        }

        // A request larger than the server accepts.
        let mut huge = job_spec("huge");
        if let Some(task) = huge.task.as_mut() {
            task.env = HashMap::from([("BIG".to_owned(), "x".repeat(2 << 20))]);
        }
        match client.create_job(huge).await {
            Err(e) if matches!(e.code(), Some(tonic::Code::OutOfRange | tonic::Code::ResourceExhausted)) => {}
            other => anyhow::bail!("2 MiB request: expected OUT_OF_RANGE or RESOURCE_EXHAUSTED, got {other:?}"),
        }
        // A spec over its own 64 KiB limit, in a message the transport accepts.
        let mut big = job_spec("big");
        if let Some(task) = big.task.as_mut() {
            task.env = HashMap::from([("BIG".to_owned(), "x".repeat(100 << 10))]);
        }
        match cluster.client_for(follower)?.create_job(big).await {
            Err(Error::InvalidArgument { violations, .. }) => {
                anyhow::ensure!(violations.iter().any(|v| v.field == "spec"), "{violations:?}")
            }
            other => anyhow::bail!("100 KiB spec: expected INVALID_ARGUMENT naming spec, got {other:?}"),
        }

        // Malformed internal Raft messages.
        for id in [leader, follower] {
            let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", cluster.addr(id)?))?
                .connect()
                .await?;
            let mut raft = RaftServiceClient::new(channel);
            let garbage = pb::RaftPayload {
                data: b"{not json".to_vec(),
            };
            let status = raft.append_entries(garbage.clone()).await.expect_err("garbage append");
            anyhow::ensure!(status.code() == tonic::Code::InvalidArgument, "{status:?}");
            let status = raft.vote(garbage).await.expect_err("garbage vote");
            anyhow::ensure!(status.code() == tonic::Code::InvalidArgument, "{status:?}");
            let chunks = vec![pb::SnapshotChunk {
                chunk: Some(pb::snapshot_chunk::Chunk::Data(vec![1, 2, 3])),
            }];
            let status = raft
                .install_snapshot(futures::stream::iter(chunks))
                .await
                .expect_err("headerless snapshot");
            anyhow::ensure!(status.code() == tonic::Code::InvalidArgument, "{status:?}");
        }

        // Bad read arguments.
        match client.get_job("Not A Name", Consistency::Linearizable).await {
            Err(Error::InvalidArgument { violations, .. }) => {
                anyhow::ensure!(violations.iter().any(|v| v.field == "name"), "{violations:?}")
            }
            other => anyhow::bail!("bad name: {other:?}"),
        }

        // Every server is still up, nothing changed, and writes still work.
        for id in cluster.ids() {
            let server = cluster.server(id)?;
            anyhow::ensure!(
                cluster.status(id).await.is_ok(),
                "server {id} ({}) stopped answering",
                server.addr
            );
        }
        let jobs = client.list_jobs(Consistency::Linearizable).await?;
        anyhow::ensure!(
            jobs.iter().map(|j| j.name.as_str()).collect::<Vec<_>>() == ["keep-me"],
            "state changed: {jobs:?}"
        );
        client.create_job(job_spec("still-writable")).await?;
        Ok(())
    }
    .await;
    cluster.settle(result);
    for id in cluster.ids() {
        assert!(cluster.is_running(id), "server {id} exited");
        let log = cluster
            .server(id)
            .map(|s| s.process.log_tail(100_000))
            .unwrap_or_default();
        assert!(!log.contains("panicked"), "server {id} logged a panic:\n{log}");
    }
}
