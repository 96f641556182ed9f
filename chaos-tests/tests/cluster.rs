//! Multi-process cluster tests with the built `rota-server` binary: writes
//! through every node, leader failover, restart and catch-up, a new node
//! joining by snapshot after log compaction, membership changes, and
//! durability of acknowledged writes across SIGKILL of the whole cluster.

use std::collections::BTreeSet;
use std::time::Duration;

use rota_chaos::{Cluster, ServerSettings, job_spec, wait_for};
use rota_client::{Consistency, Error};

/// Runs a scenario; on failure prints the servers' logs before panicking.
async fn run<F>(cluster: &mut Cluster, scenario: F)
where
    F: AsyncFnOnce(&mut Cluster) -> anyhow::Result<()>,
{
    if let Err(e) = scenario(cluster).await {
        cluster.dump_logs();
        panic!("{e:#}");
    }
}

async fn job_names(cluster: &Cluster, id: u64, consistency: Consistency) -> anyhow::Result<BTreeSet<String>> {
    let jobs = cluster.client_for(id)?.list_jobs(consistency).await?;
    Ok(jobs.into_iter().map(|j| j.name).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_survive_leader_loss_restart_and_a_new_node_joins_by_snapshot() {
    // Snapshot often and keep few logs, so the log is compacted and a new
    // node can only catch up from a snapshot.
    let settings = ServerSettings {
        snapshot_every_logs: 20,
        keep_logs_after_snapshot: 5,
        ..ServerSettings::default()
    };
    let mut cluster = Cluster::start(3, settings).await.expect("cluster starts");
    run(&mut cluster, async |cluster| {
        // 100 jobs, written through each node in turn (followers forward).
        let clients = [cluster.client_for(1)?, cluster.client_for(2)?, cluster.client_for(3)?];
        let mut expected = BTreeSet::new();
        for i in 0..100 {
            let name = format!("job-{i:03}");
            let job = clients[i % 3].create_job(job_spec(&name)).await?;
            anyhow::ensure!(job.generation == 1 && !job.uid.is_empty(), "bad job {job:?}");
            expected.insert(name);
        }

        let leader = cluster.wait_for_leader(Duration::from_secs(10)).await?;
        let leader_status = cluster.status(leader).await?;
        anyhow::ensure!(
            leader_status.purged_index > 0,
            "log was not compacted: {leader_status:?}"
        );
        cluster.kill(leader)?;
        let survivors: Vec<u64> = cluster.ids().into_iter().filter(|&id| id != leader).collect();

        let new_leader = cluster.wait_for_leader(Duration::from_secs(30)).await?;
        anyhow::ensure!(new_leader != leader, "dead node {leader} still reported as leader");
        // The new leader serves writes...
        cluster
            .client_for(survivors[0])?
            .create_job(job_spec("after-failover"))
            .await?;
        expected.insert("after-failover".into());
        // ...and every survivor serves every job, linearizable and stale.
        for &id in &survivors {
            anyhow::ensure!(job_names(cluster, id, Consistency::Linearizable).await? == expected);
            let stale = wait_for("a survivor to apply everything", Duration::from_secs(10), || async {
                let names = job_names(cluster, id, Consistency::Stale)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok((names == expected).then_some(names))
            })
            .await?;
            anyhow::ensure!(stale.len() == 101);
        }

        // The killed node resumes from its data dir and catches up.
        cluster.restart(leader)?;
        let commit = cluster.status(new_leader).await?.commit_index;
        wait_for("the restarted node to catch up", Duration::from_secs(30), || async {
            let status = cluster.status(leader).await.map_err(|e| e.to_string())?;
            Ok((status.applied_index >= commit && status.leader_id == new_leader).then_some(()))
        })
        .await?;
        anyhow::ensure!(job_names(cluster, leader, Consistency::Stale).await? == expected);

        // A fresh fourth node joins after compaction: it must get a snapshot.
        let purged = cluster.status(new_leader).await?.purged_index;
        anyhow::ensure!(purged > 0, "leader log not compacted");
        let fourth = cluster.start_new_server()?;
        let members = cluster
            .client()?
            .add_node(fourth, &cluster.addr(fourth)?, false)
            .await?;
        anyhow::ensure!(members.iter().any(|m| m.node_id == fourth), "{members:?}");
        let status = wait_for("the new node to apply the log", Duration::from_secs(30), || async {
            let status = cluster.status(fourth).await.map_err(|e| e.to_string())?;
            Ok((status.applied_index >= commit).then_some(status))
        })
        .await?;
        anyhow::ensure!(
            status.snapshot_index >= purged,
            "node {fourth} has no snapshot covering the purged log (snapshot {}, purged {purged})",
            status.snapshot_index
        );
        anyhow::ensure!(job_names(cluster, fourth, Consistency::Stale).await? == expected);
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_write_survives_sigkill_of_all_servers() {
    let mut cluster = Cluster::start(3, ServerSettings::default())
        .await
        .expect("cluster starts");
    run(&mut cluster, async |cluster| {
        let client = cluster.client()?;
        // A burst of concurrent writes; remember the acknowledged ones.
        let writes = (0..120).map(|i| {
            let client = client.clone();
            async move {
                let name = format!("burst-{i:03}");
                client.create_job(job_spec(&name)).await.map(|_| name)
            }
        });
        let results = futures::future::join_all(writes).await;
        let acknowledged: BTreeSet<String> = results.into_iter().filter_map(Result::ok).collect();
        anyhow::ensure!(
            acknowledged.len() > 100,
            "too few writes acknowledged: {}",
            acknowledged.len()
        );

        // No grace: every server dies at once, right after the last ack.
        for id in cluster.ids() {
            cluster.kill(id)?;
        }
        for id in cluster.ids() {
            cluster.restart(id)?;
        }
        cluster.wait_for_leader(Duration::from_secs(30)).await?;
        let names = job_names(cluster, 1, Consistency::Linearizable).await?;
        let lost: Vec<_> = acknowledged.difference(&names).collect();
        anyhow::ensure!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_changes_transfer_and_graceful_shutdown() {
    let mut cluster = Cluster::start(3, ServerSettings::default())
        .await
        .expect("cluster starts");
    run(&mut cluster, async |cluster| {
        let client = cluster.client()?;
        client.create_job(job_spec("before")).await?;

        // Transfer leadership to a named follower.
        let leader = cluster.wait_for_leader(Duration::from_secs(10)).await?;
        let target = cluster.ids().into_iter().find(|&id| id != leader).unwrap_or(1);
        // A follower still catching up with the log is refused ("retry when
        // it has"): retry until it is taken, as an operator would.
        let new_leader = wait_for("the transfer to be accepted", Duration::from_secs(20), || async {
            match client.transfer_leadership(target).await {
                Ok(id) => Ok(Some(id)),
                Err(Error::FailedPrecondition(message)) if message.contains("caught up") => Ok(None),
                Err(e) => Err(e.to_string()),
            }
        })
        .await?;
        anyhow::ensure!(new_leader == target, "leadership went to {new_leader}, not {target}");
        anyhow::ensure!(cluster.wait_for_leader(Duration::from_secs(10)).await? == target);

        // Unknown ids are refused, and nothing changes.
        match client.remove_node(42).await {
            Err(Error::NotFound(message)) => anyhow::ensure!(message.contains("42"), "{message}"),
            other => anyhow::bail!("removing an unknown node: {other:?}"),
        }
        match client.add_node(0, "127.0.0.1:1", false).await {
            Err(Error::InvalidArgument { violations, .. }) => {
                anyhow::ensure!(violations.iter().any(|v| v.field == "node_id"), "{violations:?}")
            }
            other => anyhow::bail!("adding node 0: {other:?}"),
        }
        match client.add_node(7, "not an address", false).await {
            Err(Error::InvalidArgument { violations, .. }) => {
                anyhow::ensure!(violations.iter().any(|v| v.field == "addr"), "{violations:?}")
            }
            other => anyhow::bail!("adding a bad address: {other:?}"),
        }
        anyhow::ensure!(client.members(Consistency::Linearizable).await?.members.len() == 3);

        // Remove the leader itself: the others elect a new one and go on.
        let removed = target;
        let members = client.remove_node(removed).await?;
        anyhow::ensure!(members.iter().all(|m| m.node_id != removed), "{members:?}");
        let remaining: Vec<u64> = cluster.ids().into_iter().filter(|&id| id != removed).collect();
        let rest = cluster.client_for(remaining[0])?;
        let next = wait_for(
            "a leader among the remaining nodes",
            Duration::from_secs(30),
            || async {
                let status = cluster.status(remaining[0]).await.map_err(|e| e.to_string())?;
                Ok((status.leader_id != 0 && status.leader_id != removed).then_some(status.leader_id))
            },
        )
        .await?;
        anyhow::ensure!(remaining.contains(&next));
        rest.create_job(job_spec("after-removal")).await?;
        let members = rest.members(Consistency::Linearizable).await?.members;
        anyhow::ensure!(members.len() == 2, "{members:?}");

        // SIGTERM: a graceful stop, exit status 0; the node resumes afterwards.
        let stopping = remaining.iter().copied().find(|&id| id != next).unwrap_or(next);
        cluster.signal(stopping, nix::sys::signal::Signal::SIGTERM)?;
        let status = cluster.wait_exit(stopping, Duration::from_secs(20)).await?;
        anyhow::ensure!(status.success(), "graceful stop exited with {status}");
        anyhow::ensure!(cluster.server(stopping)?.process.log_tail(5).contains("stopped"));
        cluster.restart(stopping)?;
        wait_for("the stopped node to resume", Duration::from_secs(30), || async {
            let names = job_names(cluster, stopping, Consistency::Stale)
                .await
                .map_err(|e| e.to_string())?;
            Ok(names.contains("after-removal").then_some(()))
        })
        .await?;
        Ok(())
    })
    .await;
}
