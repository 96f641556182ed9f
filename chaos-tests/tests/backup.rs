//! Issue 8, backup and restore: `rotactl cluster snapshot save` on a running
//! cluster, then a new cluster (other servers, empty data dirs) started with
//! `--restore-from` holds every job, the runs with their logs, and carries on
//! (new runs never reuse an old run's id).

use std::collections::BTreeSet;
use std::time::Duration;

use rota_chaos::{Cluster, ServerSettings, WorkerSettings, output_text, rotactl, run_checked, run_to_end, wait_for};
use rota_client::{Client, Consistency, SpecFile};

async fn job_names(client: &Client) -> anyhow::Result<BTreeSet<String>> {
    Ok(client
        .list_jobs(Consistency::Linearizable)
        .await?
        .into_iter()
        .map(|j| j.spec.map(|s| s.name).unwrap_or_default())
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_cluster_started_from_a_backup_holds_every_job_and_run() {
    let dir = tempfile::tempdir().expect("temp dir");
    let backup = dir.path().join("cluster.rota");
    let mut old = Cluster::start(3, ServerSettings::default())
        .await
        .expect("cluster starts");
    let mut before = None;
    run_checked(&mut old, async |old| {
        old.start_worker(WorkerSettings::new("old-worker", "exec"))?;
        let client = old.client()?;
        let mut yaml = String::new();
        for i in 0..5 {
            yaml.push_str(&format!(
                "---\nname: kept-{i}\nschedule: {{ cron: '0 3 * * *', timezone: Europe/Berlin }}\n\
                 task: {{ driver: exec, command: [sh, -c, 'echo kept {i}'] }}\n"
            ));
        }
        for spec in SpecFile::parse_yaml(&yaml)? {
            client.apply_job(spec.to_proto(), false).await?;
        }
        let run = run_to_end(&client, "kept-0").await?;
        anyhow::ensure!(run.state() == rota_client::proto::RunState::Succeeded, "{run:?}");

        let out = rotactl(
            &old.servers_arg(),
            &["cluster", "snapshot", "save", &backup.to_string_lossy()],
        )
        .await?;
        anyhow::ensure!(out.status.success(), "snapshot save: {}", output_text(&out));
        anyhow::ensure!(output_text(&out).contains("saved"), "{}", output_text(&out));
        before = Some((job_names(&client).await?, run));
        Ok(())
    })
    .await;
    let (jobs, old_run) = before.expect("the old cluster's state");
    drop(old);

    // A new cluster: three other servers, each restoring the same file.
    let settings = ServerSettings {
        env: vec![("ROTA_RESTORE_FROM".into(), backup.to_string_lossy().into_owned())],
        ..ServerSettings::default()
    };
    let mut new = Cluster::start(3, settings).await.expect("the restored cluster starts");
    run_checked(&mut new, async |new| {
        for id in new.ids() {
            let log = new.server(id)?.process.log_tail(400);
            anyhow::ensure!(
                log.contains("restored a backup"),
                "server {id} restored the file: {log}"
            );
        }
        let client = new.client()?;
        anyhow::ensure!(job_names(&client).await? == jobs, "every job is there");
        let run = client.get_run(&old_run.id, Consistency::Linearizable).await?;
        anyhow::ensure!(run == old_run, "the old run, as it was: {run:?} vs {old_run:?}");
        let mut output = client.logs(&old_run.id, false, 0).await?;
        let mut text = Vec::new();
        while let Some(chunk) = output.message().await? {
            text.extend_from_slice(&chunk.data);
        }
        anyhow::ensure!(String::from_utf8_lossy(&text).contains("kept 0"), "its log is there");
        // Every server holds the same (restored and then replicated) state.
        for id in new.ids() {
            let status = rotactl(&new.server(id)?.addr, &["cluster", "status", "-o", "json"]).await?;
            anyhow::ensure!(
                output_text(&status).contains("\"job_count\": 5"),
                "{}",
                output_text(&status)
            );
        }
        // And it carries on: a new run gets a new id and runs.
        new.start_worker(WorkerSettings::new("new-worker", "exec"))?;
        let run = run_to_end(&client, "kept-0").await?;
        anyhow::ensure!(
            run.id != old_run.id && run.state() == rota_client::proto::RunState::Succeeded,
            "a new run after the restore: {run:?}"
        );
        // A server restarted with the same settings resumes its data dir
        // (--restore-from is for the first start only) and catches up.
        new.kill(1)?;
        new.restart(1)?;
        let addr = new.server(1)?.addr.clone();
        wait_for("server 1 to hold both runs again", Duration::from_secs(60), || async {
            let only = Client::connect([addr.as_str()]).map_err(|e| e.to_string())?;
            let filter = rota_client::proto::ListRunsRequest {
                job: "kept-0".into(),
                consistency: rota_client::proto::ReadConsistency::Stale as i32,
                ..Default::default()
            };
            let runs = only.list_runs(&filter).await.map_err(|e| e.to_string())?;
            Ok((runs.len() == 2).then_some(()))
        })
        .await?;
        anyhow::ensure!(
            new.server(1)?.process.log_tail(400).contains("restore_from ignored"),
            "it said so"
        );
        Ok(())
    })
    .await;
}
