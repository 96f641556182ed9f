//! `rotactl` as people use it: the built binary against a real cluster,
//! with the example spec files of the repository.

use std::path::PathBuf;

use rota_chaos::{Cluster, ServerSettings, output_text as text, rotactl};

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotactl_applies_lists_gets_and_deletes_jobs() {
    let mut cluster = Cluster::start(3, ServerSettings::default())
        .await
        .expect("cluster starts");
    let result: anyhow::Result<()> = async {
        let servers = cluster
            .ids()
            .iter()
            .map(|&id| cluster.addr(id))
            .collect::<Result<Vec<_>, _>>()?
            .join(",");
        let examples = examples();

        let out = rotactl(&servers, &["job", "apply", "-f", examples.to_str().unwrap_or_default()]).await?;
        anyhow::ensure!(out.status.success(), "{}", text(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        for name in ["every-minute", "hello-container", "nightly-build", "release-build"] {
            anyhow::ensure!(stdout.contains(&format!("job/{name} created")), "{}", text(&out));
        }
        let out = rotactl(&servers, &["job", "apply", "-f", examples.to_str().unwrap_or_default()]).await?;
        anyhow::ensure!(
            String::from_utf8_lossy(&out.stdout).matches("unchanged").count() == 4,
            "{}",
            text(&out)
        );

        let out = rotactl(&servers, &["job", "list", "-o", "json"]).await?;
        anyhow::ensure!(out.status.success(), "{}", text(&out));
        let jobs: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let names: Vec<&str> = jobs
            .as_array()
            .map(|a| a.iter().filter_map(|j| j["name"].as_str()).collect())
            .unwrap_or_default();
        anyhow::ensure!(
            names == ["every-minute", "hello-container", "nightly-build", "release-build"],
            "{names:?}"
        );

        // What `get -o yaml` (or json) prints applies back unchanged, as is.
        let dir = tempfile::tempdir()?;
        for format in ["yaml", "json"] {
            let out = rotactl(&servers, &["job", "get", "nightly-build", "-o", format]).await?;
            anyhow::ensure!(out.status.success(), "{}", text(&out));
            let exported = dir.path().join(format!("exported.{format}"));
            std::fs::write(&exported, &out.stdout)?;
            let out = rotactl(&servers, &["job", "apply", "-f", exported.to_str().unwrap_or_default()]).await?;
            let stdout = String::from_utf8_lossy(&out.stdout);
            anyhow::ensure!(stdout.contains("job/nightly-build unchanged"), "{}", text(&out));
        }
        let out = rotactl(&servers, &["job", "get", "nightly-build", "-o", "json"]).await?;
        let job: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        anyhow::ensure!(job["spec"]["schedule"]["timezone"] == "Europe/Berlin", "{job}");

        // An invalid spec: exit 1, each bad field named, nothing written.
        let bad = dir.path().join("bad.yaml");
        std::fs::write(
            &bad,
            "name: bad\nschedule: { cron: '99 * * * *', timezone: Nowhere/City }\ntask: { image: 'x' }\n",
        )?;
        let out = rotactl(&servers, &["job", "apply", "-f", bad.to_str().unwrap_or_default()]).await?;
        anyhow::ensure!(out.status.code() == Some(1), "{}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        anyhow::ensure!(
            stderr.contains("schedule.cron") && stderr.contains("schedule.timezone"),
            "{}",
            text(&out)
        );
        let out = rotactl(&servers, &["job", "get", "bad"]).await?;
        anyhow::ensure!(out.status.code() == Some(1), "{}", text(&out));
        anyhow::ensure!(
            String::from_utf8_lossy(&out.stderr).contains("not found"),
            "{}",
            text(&out)
        );

        // Usage errors exit 2.
        let out = rotactl(&servers, &["job", "frobnicate"]).await?;
        anyhow::ensure!(out.status.code() == Some(2), "{}", text(&out));

        let out = rotactl(&servers, &["cluster", "status"]).await?;
        anyhow::ensure!(out.status.success(), "{}", text(&out));
        anyhow::ensure!(
            String::from_utf8_lossy(&out.stdout).matches("leader").count() >= 1,
            "{}",
            text(&out)
        );
        let out = rotactl(&servers, &["cluster", "members", "-o", "json"]).await?;
        let members: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        anyhow::ensure!(members.as_array().map(Vec::len) == Some(3), "{members}");

        // Runs: trigger (idempotent by request id), list, get, cancel, logs.
        let run_args = [
            "job",
            "run",
            "release-build",
            "--param",
            "CHANNEL=beta",
            "--request-id",
            "ci-42",
        ];
        let out = rotactl(&servers, &run_args).await?;
        anyhow::ensure!(out.status.success(), "{}", text(&out));
        let first = String::from_utf8_lossy(&out.stdout).to_string();
        let run_id = first
            .split_whitespace()
            .next()
            .and_then(|w| w.strip_prefix("run/"))
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("no run id in {first:?}"))?;
        let out = rotactl(&servers, &run_args).await?;
        anyhow::ensure!(
            String::from_utf8_lossy(&out.stdout).contains(&format!("run/{run_id}"))
                && String::from_utf8_lossy(&out.stdout).contains("already triggered"),
            "{}",
            text(&out)
        );
        let out = rotactl(&servers, &["run", "list", "--job", "release-build", "-o", "json"]).await?;
        let runs: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        anyhow::ensure!(runs.as_array().map(Vec::len) == Some(1), "{}", text(&out));
        let out = rotactl(&servers, &["run", "get", &run_id, "-o", "json"]).await?;
        let run: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        anyhow::ensure!(run["params"]["CHANNEL"] == "beta" && run["state"] == "pending", "{run}");
        let out = rotactl(&servers, &["run", "cancel", &run_id]).await?;
        anyhow::ensure!(
            String::from_utf8_lossy(&out.stdout).contains("cancelled"),
            "{}",
            text(&out)
        );
        let out = rotactl(&servers, &["run", "list", "--state", "cancelled"]).await?;
        anyhow::ensure!(String::from_utf8_lossy(&out.stdout).contains(&run_id), "{}", text(&out));
        let out = rotactl(&servers, &["run", "logs", &run_id]).await?;
        anyhow::ensure!(out.status.success() && out.stdout.is_empty(), "{}", text(&out));
        let out = rotactl(&servers, &["run", "list", "--state", "sideways"]).await?;
        anyhow::ensure!(out.status.code() == Some(2), "{}", text(&out));
        let out = rotactl(&servers, &["run", "get", "no-such-run"]).await?;
        anyhow::ensure!(out.status.code() == Some(1), "{}", text(&out));

        let out = rotactl(&servers, &["job", "delete", "every-minute"]).await?;
        anyhow::ensure!(out.status.success(), "{}", text(&out));
        let out = rotactl(&servers, &["job", "list", "-o", "json"]).await?;
        anyhow::ensure!(
            !String::from_utf8_lossy(&out.stdout).contains("every-minute"),
            "{}",
            text(&out)
        );

        // A dead endpoint is named, with the flag to change.
        let out = rotactl("127.0.0.1:1", &["job", "list"]).await?;
        anyhow::ensure!(out.status.code() == Some(1), "{}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        anyhow::ensure!(
            stderr.contains("127.0.0.1:1") && stderr.contains("--servers"),
            "{}",
            text(&out)
        );
        Ok(())
    }
    .await;
    if let Err(e) = result {
        cluster.dump_logs();
        panic!("{e:#}");
    }
    assert!(cluster.ids().into_iter().all(|id| cluster.is_running(id)));
}
