//! Network partitions between servers, through the harness's per-link
//! proxies: the leader isolated, then cut off one way, while clients talk
//! to both sides (2); a ring of overlapping majorities on five servers
//! under write load (3).

use std::time::Duration;

use rand::Rng;
use rand::rngs::StdRng;
use rota_client::{Client, ClientOptions};

use super::{Answered, Common, Load};
use crate::Cluster;

/// A client of server `id` alone that gives up soon (a request to a
/// cut-off leader never gets an answer; its outcome is unknown).
fn impatient_client(cluster: &Cluster, id: u64) -> anyhow::Result<Client> {
    Ok(Client::with_options(
        [cluster.addr(id)?],
        ClientOptions {
            timeout: Duration::from_secs(2),
            max_attempts: 2,
            ..crate::test_client_options()
        },
    )?)
}

/// Scenario 2: the leader is isolated from both followers while one client
/// writes through it (its writes never come back: unknown) and another
/// through the majority; healed, then the new leader is cut off one way
/// (it cannot send, it still receives); healed again.
pub(super) async fn leader_isolated_while_clients_talk_to_both_sides(
    cluster: &mut Cluster,
    rng: &mut StdRng,
    seed: u64,
) -> anyhow::Result<()> {
    let common = Common::start(cluster).await?;
    let ids = cluster.ids();
    for round in 0..2 {
        let leader = cluster.wait_for_leader(Duration::from_secs(30)).await?;
        let others: Vec<u64> = ids.iter().copied().filter(|&id| id != leader).collect();
        let minority = Load::start(
            &impatient_client(cluster, leader)?,
            &common.recorder,
            &format!("old-{round}"),
        );
        let majority = Load::start(
            &cluster.client_for(others[0])?,
            &common.recorder,
            &format!("new-{round}"),
        );
        if round == 0 {
            cluster.partition(&[&[leader], &others])?;
        } else {
            // One way: nothing the leader sends arrives; the others reach it.
            cluster.connect_only(|from, _| from != leader)?;
        }
        cluster.wait_for_leader_among(&others, Duration::from_secs(30)).await?;
        tokio::time::sleep(Duration::from_millis(rng.random_range(1000..4000))).await;
        cluster.heal();
        minority.stop().await?;
        majority.stop().await?;
    }
    cluster.wait_for_leader(Duration::from_secs(30)).await?;
    common
        .finish(
            cluster,
            Answered {
                acknowledged: 6,
                unanswered: 1,
                unanswered_prefix: "old-0",
            },
            seed,
        )
        .await
}

/// Scenario 3: five servers in a ring — each reaches only its two
/// neighbours, so every server sees a majority (itself and two others) and
/// no two majorities agree on who leads — under write load, then healed.
pub(super) async fn ring_of_overlapping_majorities_under_write_load(
    cluster: &mut Cluster,
    rng: &mut StdRng,
    seed: u64,
) -> anyhow::Result<()> {
    let common = Common::start(cluster).await?.with_load("ring");
    tokio::time::sleep(Duration::from_millis(rng.random_range(500..2000))).await;
    let size = u64::try_from(cluster.ids().len())?;
    // Ids are 1..=size; neighbours differ by one, modulo the ring.
    cluster.connect_only(|from, to| {
        let distance = (from + size - to) % size;
        distance == 1 || distance == size - 1
    })?;
    tokio::time::sleep(Duration::from_millis(rng.random_range(6000..10_000))).await;
    cluster.heal();
    cluster.wait_for_leader(Duration::from_secs(30)).await?;
    tokio::time::sleep(Duration::from_millis(rng.random_range(500..2000))).await;
    common
        .finish(
            cluster,
            Answered {
                acknowledged: 6,
                unanswered: 0,
                unanswered_prefix: "",
            },
            seed,
        )
        .await
}
