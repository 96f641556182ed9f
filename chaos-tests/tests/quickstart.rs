//! Issue 8, quick start: the README's first command (`deploy/quickstart.sh`)
//! brings up three servers and a worker, runs the nightly build example to
//! `Succeeded`, and `deploy/quickstart.sh stop` leaves no process and no
//! container behind.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use rota_chaos::{bin_dir, docker, free_port};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/quickstart.sh")
}

/// Runs the quick-start script with `args` on data dir `dir` and base `port`
/// (binaries already built: those the tests use), for at most five minutes.
async fn quickstart(dir: &Path, port: u16, args: &[&str], with_docker: bool) -> anyhow::Result<Output> {
    let mut command = tokio::process::Command::new("bash");
    if !with_docker {
        // As on a machine without Docker: no engine answers.
        command.env("DOCKER_HOST", "unix:///nonexistent/docker.sock");
    }
    let run = command
        .arg(script())
        .args(args)
        .env("ROTA_QUICKSTART_DIR", dir)
        .env("ROTA_QUICKSTART_PORT", port.to_string())
        .env("ROTA_QUICKSTART_BIN", bin_dir())
        .env("ROTA_QUICKSTART_DETACH", "1")
        .env_remove("ROTA_SERVERS")
        .kill_on_drop(true)
        .output();
    Ok(tokio::time::timeout(Duration::from_secs(300), run).await??)
}

/// A base port for the script: it and the six ports it derives from it
/// (+1, +2, +2000 … +2003) are free.
fn free_base() -> u16 {
    for _ in 0..200 {
        let base = free_port().expect("a free port");
        let free = [1u16, 2, 2000, 2001, 2002, 2003].iter().all(|d| {
            base.checked_add(*d)
                .is_some_and(|port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok())
        });
        if free {
            return base;
        }
    }
    panic!("no base port with its six companions free");
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Processes whose command line mentions `dir`.
fn processes_using(dir: &Path) -> Vec<String> {
    let needle = dir.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline
                .contains(&needle)
                .then(|| format!("{}: {cmdline}", entry.file_name().to_string_lossy()))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quick_start_runs_the_nightly_build_and_stops_without_leftovers() {
    // With the engine (when this machine has one), then as without one.
    if docker::require().expect("docker") {
        quick_start_end_to_end(true).await;
    }
    quick_start_end_to_end(false).await;
}

async fn quick_start_end_to_end(with_docker: bool) {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("rota");
    let port = free_base();
    let result = async {
        let started = quickstart(&data, port, &[], with_docker).await?;
        let out = text(&started);
        anyhow::ensure!(started.status.success(), "the quick start failed:\n{out}");
        let drivers = if with_docker {
            "drivers: docker,exec"
        } else {
            "drivers: exec"
        };
        anyhow::ensure!(out.contains(drivers), "it says which drivers run ({drivers}):\n{out}");
        anyhow::ensure!(
            out.contains("security  OFF: no TLS, no tokens"),
            "it says security is off:\n{out}"
        );
        if !with_docker {
            anyhow::ensure!(
                out.contains("no Docker engine answers"),
                "it says there is no Docker:\n{out}"
            );
        }
        // The nightly build ran once, to success.
        let servers = format!("127.0.0.1:{port},127.0.0.1:{},127.0.0.1:{}", port + 1, port + 2);
        let list = tokio::process::Command::new(bin_dir().join("rotactl"))
            .args(["run", "list", "--job", "quickstart-nightly", "-o", "json"])
            .env("ROTA_SERVERS", &servers)
            .output()
            .await?;
        let runs: serde_json::Value = serde_json::from_slice(&list.stdout)?;
        let states: Vec<&str> = runs
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["state"].as_str())
            .collect();
        anyhow::ensure!(
            states == ["succeeded"],
            "one succeeded nightly build: {states:?}\n{out}"
        );
        anyhow::ensure!(
            out.contains("rotactl run list --watch") && out.contains(&servers),
            "it prints the commands to watch and the ports:\n{out}"
        );
        // A second start on the same folder is refused, changing nothing.
        let again = quickstart(&data, port, &[], with_docker).await?;
        anyhow::ensure!(
            !again.status.success() && text(&again).contains("already runs"),
            "{}",
            text(&again)
        );
        Ok(())
    }
    .await;
    let stopped = quickstart(&data, port, &["stop"], with_docker).await;
    let logs = ["node-1.log", "worker.log"]
        .iter()
        .map(|name| {
            let log = std::fs::read_to_string(data.join(name)).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            format!(
                "----- {name} -----\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    if let Err(e) = result {
        panic!("with_docker={with_docker}: {e:#}\n{logs}");
    }
    let stopped = stopped.expect("the stop command runs");
    assert!(stopped.status.success(), "stop failed: {}", text(&stopped));
    let left = processes_using(&data);
    assert!(left.is_empty(), "processes left after stop: {left:?}");
    if with_docker {
        let containers = std::process::Command::new("docker")
            .args(["ps", "-aq", "--filter", "label=rota.worker=quickstart-worker"])
            .output()
            .expect("docker ps");
        assert!(
            containers.stdout.is_empty(),
            "containers left after stop: {}",
            String::from_utf8_lossy(&containers.stdout)
        );
    }
}
