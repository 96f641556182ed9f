//! `rotactl` as people use it: the built binary against a real cluster,
//! with the example spec files of the repository.

use std::path::PathBuf;

use rota_chaos::{Cluster, ServerSettings, output_text as text, rotactl, rotactl_with};

/// The id in `run/ID ...`, the first word `job run` prints.
fn run_id_of(out: &std::process::Output) -> anyhow::Result<String> {
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|w| w.strip_prefix("run/"))
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no run id: {}", text(out)))
}

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
        let run_id = run_id_of(&out)?;
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
    cluster.settle(result);
    assert!(cluster.ids().into_iter().all(|id| cluster.is_running(id)));
}

/// Specs of the CLI tests: one job that succeeds with output, one that
/// fails with exit code 3, one with a schedule in a zone with DST.
const SPECS: &[(&str, &str)] = &[
    (
        "greet.yaml",
        "name: greet\ntask:\n  driver: exec\n  command: [sh, -c, 'echo hello; sleep 1; echo bye']\n",
    ),
    (
        "broken.yaml",
        "name: broken\ntask:\n  driver: exec\n  command: [sh, -c, 'echo trying; exit 3']\n",
    ),
    (
        "nightly.yaml",
        "name: nightly\nschedule:\n  cron: '30 2 * * *'\n  timezone: Europe/Berlin\ntask:\n  driver: exec\n  command: [make, nightly]\n",
    ),
];

fn write_specs(dir: &std::path::Path) -> anyhow::Result<()> {
    for (file, text) in SPECS {
        std::fs::write(dir.join(file), text)?;
    }
    Ok(())
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `rotactl` and requires exit status `code`.
async fn expect(servers: &str, args: &[&str], code: i32) -> anyhow::Result<std::process::Output> {
    let out = rotactl(servers, args).await?;
    anyhow::ensure!(
        out.status.code() == Some(code),
        "rotactl {}: {}",
        args.join(" "),
        text(&out)
    );
    Ok(out)
}

/// The id of the newest run of `job`.
async fn newest_run(servers: &str, job: &str) -> anyhow::Result<String> {
    let out = expect(servers, &["run", "list", "--job", job, "-o", "json"], 0).await?;
    let runs: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    runs[0]["id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no run of {job}: {runs}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_shows_diffs_prunes_and_dry_runs_change_nothing_and_wait_exits_with_the_run_code() {
    let mut cluster = Cluster::start(3, ServerSettings::default())
        .await
        .expect("cluster starts");
    cluster
        .start_worker(rota_chaos::WorkerSettings::new("cli-worker", "exec"))
        .expect("worker starts");
    let result: anyhow::Result<()> = async {
        let servers = cluster.servers_arg();
        let dir = tempfile::tempdir()?;
        write_specs(dir.path())?;
        let path = dir.path().to_str().unwrap_or_default();

        let out = expect(&servers, &["apply", "-f", path], 0).await?;
        for name in ["broken", "greet", "nightly"] {
            anyhow::ensure!(stdout(&out).contains(&format!("job/{name} created")), "{}", text(&out));
        }
        // Applying again changes nothing.
        let out = expect(&servers, &["apply", "-f", path], 0).await?;
        anyhow::ensure!(stdout(&out).matches("unchanged").count() == 3, "{}", text(&out));

        // A changed spec: the dry run shows the diff and changes nothing.
        std::fs::write(
            dir.path().join("nightly.yaml"),
            SPECS[2].1.replace("30 2 * * *", "0 3 * * *"),
        )?;
        let out = expect(&servers, &["apply", "-f", path, "--dry-run"], 0).await?;
        let shown = stdout(&out);
        anyhow::ensure!(
            shown.contains("job/nightly configured (generation 2) (dry run)")
                && shown.contains("  -   cron: 30 2 * * *")
                && shown.contains("  +   cron: 0 3 * * *"),
            "{}",
            text(&out)
        );
        let out = expect(&servers, &["job", "get", "nightly", "-o", "json"], 0).await?;
        let job: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        anyhow::ensure!(
            job["generation"] == 1 && job["spec"]["schedule"]["cron"] == "30 2 * * *",
            "a dry run changed the job: {job}"
        );
        let out = expect(&servers, &["apply", "-f", path], 0).await?;
        anyhow::ensure!(
            stdout(&out).contains("job/nightly configured (generation 2)"),
            "{}",
            text(&out)
        );

        // Prune: a job the files no longer define goes (not on a dry run).
        std::fs::remove_file(dir.path().join("nightly.yaml"))?;
        let out = expect(&servers, &["apply", "-f", path, "--prune", "--dry-run"], 0).await?;
        anyhow::ensure!(stdout(&out).contains("job/nightly pruned (dry run)"), "{}", text(&out));
        expect(&servers, &["job", "get", "nightly"], 0).await?;
        let out = expect(&servers, &["apply", "-f", path, "--prune"], 0).await?;
        anyhow::ensure!(stdout(&out).contains("job/nightly pruned"), "{}", text(&out));
        let out = expect(&servers, &["job", "get", "nightly"], 1).await?;
        anyhow::ensure!(
            String::from_utf8_lossy(&out.stderr).contains("not found"),
            "{}",
            text(&out)
        );

        // `job run --wait` and `run wait` exit with the run's code.
        expect(&servers, &["job", "run", "broken", "--wait"], 3).await?;
        let broken = newest_run(&servers, "broken").await?;
        expect(&servers, &["run", "wait", &broken], 3).await?;
        expect(&servers, &["job", "run", "greet", "--wait"], 0).await?;

        // `run logs -f` of a running run ends when the run does, with all of
        // its output.
        let out = expect(&servers, &["job", "run", "greet"], 0).await?;
        let greet = run_id_of(&out)?;
        let out = expect(&servers, &["run", "logs", &greet, "--follow"], 0).await?;
        anyhow::ensure!(stdout(&out) == "hello\nbye\n", "{}", text(&out));
        let out = expect(&servers, &["run", "get", &greet, "-o", "json"], 0).await?;
        let run: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        anyhow::ensure!(run["state"] == "succeeded", "logs -f ended before the run: {run}");
        // `job run --follow` prints the output and exits with the code too.
        let out = expect(&servers, &["job", "run", "broken", "--follow"], 3).await?;
        anyhow::ensure!(stdout(&out) == "trying\n", "{}", text(&out));
        Ok(())
    }
    .await;
    cluster.settle(result);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contexts_in_the_config_file_choose_the_cluster() {
    let cluster = Cluster::start(3, ServerSettings::default())
        .await
        .expect("cluster starts");
    let result: anyhow::Result<()> = async {
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("config.yaml");
        let config = config.to_str().unwrap_or_default();
        let servers = cluster.servers_arg();
        let env = [("ROTACTL_CONFIG", config)];
        let with_config = |args: &'static [&'static str]| rotactl_with(&env, args);
        let mut set = vec!["config", "set-context", "test"];
        set.extend(servers.split(','));
        let out = rotactl_with(&[("ROTACTL_CONFIG", config)], &set).await?;
        anyhow::ensure!(out.status.success(), "{}", text(&out));
        let out = rotactl_with(
            &[("ROTACTL_CONFIG", config)],
            &["config", "set-context", "nowhere", "127.0.0.1:1"],
        )
        .await?;
        anyhow::ensure!(out.status.success(), "{}", text(&out));
        let out = with_config(&["config", "get-contexts"]).await?;
        let table = stdout(&out);
        anyhow::ensure!(
            table.lines().any(|l| l.starts_with('*') && l.contains("test"))
                && table.lines().any(|l| l.contains("nowhere") && !l.starts_with('*')),
            "the first context is current: {}",
            text(&out)
        );
        // No --servers: the current context's are used.
        let out = with_config(&["cluster", "members"]).await?;
        anyhow::ensure!(
            out.status.success() && stdout(&out).contains("leader"),
            "{}",
            text(&out)
        );
        // Another context by flag: its servers are tried, and named.
        let out = with_config(&["--context", "nowhere", "job", "list"]).await?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        anyhow::ensure!(
            out.status.code() == Some(1) && stderr.contains("127.0.0.1:1") && stderr.contains("context \"nowhere\""),
            "{}",
            text(&out)
        );
        let out = with_config(&["config", "use-context", "nowhere"]).await?;
        anyhow::ensure!(out.status.success(), "{}", text(&out));
        let out = with_config(&["config", "current-context"]).await?;
        anyhow::ensure!(stdout(&out) == "nowhere\n", "{}", text(&out));
        // ROTA_SERVERS wins over the current context...
        let out = rotactl_with(
            &[("ROTACTL_CONFIG", config), ("ROTA_SERVERS", &servers)],
            &["cluster", "members"],
        )
        .await?;
        anyhow::ensure!(out.status.success(), "{}", text(&out));
        // ...but not over a context named with --context...
        let out = rotactl_with(
            &[("ROTACTL_CONFIG", config), ("ROTA_SERVERS", "127.0.0.1:1")],
            &["--context", "test", "cluster", "members"],
        )
        .await?;
        anyhow::ensure!(out.status.success(), "{}", text(&out));
        // ...and --servers on the command line wins over everything.
        let out = rotactl_with(
            &[("ROTACTL_CONFIG", config)],
            &["--context", "nowhere", "--servers", &servers, "cluster", "members"],
        )
        .await?;
        anyhow::ensure!(out.status.success(), "{}", text(&out));
        let out = with_config(&["config", "use-context", "elsewhere"]).await?;
        anyhow::ensure!(
            out.status.code() == Some(1) && String::from_utf8_lossy(&out.stderr).contains("defined: nowhere, test"),
            "{}",
            text(&out)
        );
        // Completion scripts for the three shells.
        for shell in ["bash", "zsh", "fish"] {
            let out = with_config(match shell {
                "bash" => &["completion", "bash"],
                "zsh" => &["completion", "zsh"],
                _ => &["completion", "fish"],
            })
            .await?;
            anyhow::ensure!(
                out.status.success() && stdout(&out).contains("rotactl"),
                "{}",
                text(&out)
            );
        }
        Ok(())
    }
    .await;
    cluster.settle(result);
}

/// Reads lines of `lines` until one satisfies `wanted`, within a minute.
async fn line_matching(
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    what: &str,
    wanted: impl Fn(&serde_json::Value) -> bool,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let line = tokio::time::timeout_at(deadline, lines.next_line())
            .await
            .map_err(|_| anyhow::anyhow!("no line with {what} within a minute"))??
            .ok_or_else(|| anyhow::anyhow!("the watch ended before {what}"))?;
        let value: serde_json::Value = serde_json::from_str(&line)?;
        if wanted(&value) {
            return Ok(());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_explain_and_the_limits_of_waiting() {
    use tokio::io::AsyncBufReadExt;

    let cluster = Cluster::start(3, ServerSettings::default())
        .await
        .expect("cluster starts");
    let result: anyhow::Result<()> = async {
        let servers = cluster.servers_arg();
        let dir = tempfile::tempdir()?;
        write_specs(dir.path())?;
        expect(&servers, &["apply", "-f", dir.path().to_str().unwrap_or_default()], 0).await?;

        // `--watch -o json`: every job once, then each change, then what went away.
        let mut watch =
            rota_chaos::rotactl_command(&[("ROTA_SERVERS", &servers)], &["job", "list", "--watch", "-o", "json"])?
                .stdout(std::process::Stdio::piped())
                .spawn()?;
        let watched = watch.stdout.take().ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let mut lines = tokio::io::BufReader::new(watched).lines();
        line_matching(&mut lines, "greet", |v| v["name"] == "greet" && v["suspended"] == false).await?;
        expect(&servers, &["job", "suspend", "greet"], 0).await?;
        line_matching(&mut lines, "greet suspended", |v| {
            v["name"] == "greet" && v["suspended"] == true
        })
        .await?;
        expect(&servers, &["job", "delete", "broken"], 0).await?;
        line_matching(&mut lines, "broken gone", |v| v["gone"] == "broken").await?;
        drop(watch);

        // Explaining a file: its spec, not applied; a bad --after is a usage error.
        let nightly = dir.path().join("nightly.yaml");
        let nightly = nightly.to_str().unwrap_or_default();
        let args = [
            "job",
            "explain",
            "-f",
            nightly,
            "--after",
            "2027-10-30T12:00:00+02:00",
            "--count",
            "2",
            "-o",
            "json",
        ];
        let out = expect(&servers, &args, 0).await?;
        let explained: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let fires = &explained[0]["fires"];
        anyhow::ensure!(
            fires[0]["at"] == "2027-10-31T00:30:00Z"
                && fires[0]["local_time"] == "2027-10-31T02:30:00+02:00"
                && fires[0]["dst_note"]
                    .as_str()
                    .is_some_and(|n| n.contains("occurs twice"))
                && fires[1]["at"] == "2027-11-01T01:30:00Z",
            "the repeated hour fires once, at its first occurrence: {explained}"
        );
        expect(&servers, &["job", "explain", "nightly", "--after", "tomorrow"], 2).await?;
        expect(&servers, &["job", "explain", "nightly", "--count", "0"], 2).await?;

        // No worker here: the run stays pending, and `--for` gives up with 124.
        let out = expect(&servers, &["job", "run", "greet", "--force"], 0).await?;
        let id = run_id_of(&out)?;
        anyhow::ensure!(
            stdout(&out).contains("waiting: no worker is connected"),
            "{}",
            text(&out)
        );
        let out = expect(&servers, &["run", "get", &id], 0).await?;
        anyhow::ensure!(
            stdout(&out).contains("waiting:   no worker is connected"),
            "{}",
            text(&out)
        );
        let out = expect(&servers, &["run", "wait", &id, "--for", "1s"], 124).await?;
        anyhow::ensure!(
            String::from_utf8_lossy(&out.stderr).contains("still pending"),
            "{}",
            text(&out)
        );

        // Pruning is all or nothing: a bad spec beside the others prunes nothing.
        std::fs::write(dir.path().join("zz-bad.yaml"), "name: bad\ntask: { driver: exec }\n")?;
        std::fs::remove_file(dir.path().join("nightly.yaml"))?;
        let out = expect(
            &servers,
            &["apply", "-f", dir.path().to_str().unwrap_or_default(), "--prune"],
            1,
        )
        .await?;
        anyhow::ensure!(
            String::from_utf8_lossy(&out.stderr).contains("nothing was pruned"),
            "{}",
            text(&out)
        );
        expect(&servers, &["job", "get", "nightly"], 0).await?;
        Ok(())
    }
    .await;
    cluster.settle(result);
}
