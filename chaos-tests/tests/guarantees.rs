//! The CI profile of the chaos scenarios (issue 6): each scenario of
//! `rota_chaos::scenarios` once, checked by the oracle against BRIEF §3
//! G1–G8 and followed by a liveness check. A failure prints the seed;
//! `ROTA_CHAOS_SEED=N` repeats it.

use rota_chaos::scenarios::{Scenario, test};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_just_before_cron_slots() {
    test(Scenario::LeaderKilledBeforeSlots).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_isolated_while_clients_talk_to_both_sides() {
    test(Scenario::LeaderIsolated).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ring_of_overlapping_majorities_under_write_load() {
    test(Scenario::Ring).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_paused_past_the_election_timeout_then_resumed() {
    test(Scenario::LeaderPaused).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_killed_while_its_container_runs_then_restarted() {
    test(Scenario::WorkerKilled).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_cut_off_longer_than_its_lease() {
    test(Scenario::WorkerCutOff).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_lost_for_good_mid_run() {
    test(Scenario::WorkerLost).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_and_delayed_worker_reports() {
    test(Scenario::DuplicateReports).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_at_storage_points() {
    test(Scenario::StoragePoints).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_servers_disk_fills_up_then_frees() {
    test(Scenario::DiskFull).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clock_jumps_forward_and_back_on_one_server() {
    test(Scenario::ClockJump).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lossy_slow_links_between_workers_and_servers() {
    test(Scenario::LossyLinks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_cluster_down_across_cron_slots_under_each_catch_up_policy() {
    test(Scenario::ClusterDown).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_added_and_the_leader_removed_under_load() {
    test(Scenario::Membership).await;
}
