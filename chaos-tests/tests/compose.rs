//! Issue 8, compose: `deploy/compose.yaml` with the image of
//! `deploy/image/build.sh` (built here from the test binaries, no registry)
//! brings up three servers and two workers; a container job runs through it,
//! a server container is restarted, another job runs, and `down` leaves
//! nothing behind. Security is on, as shipped (issue 10): the credentials of
//! `rotactl tls init`, plain text and a missing token refused.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use rota_chaos::{bin_dir, docker, free_port, wait_for};

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy").join(path)
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The compose project of this test: its name, image and published ports.
struct Project {
    name: String,
    image: String,
    ports: Vec<(String, u16)>,
    /// The files of `rotactl tls init` (ROTA_TLS_DIR).
    tls: std::path::PathBuf,
}

impl Project {
    fn compose(&self, args: &[&str]) -> anyhow::Result<Output> {
        let mut command = std::process::Command::new("docker-compose");
        command
            .arg("-p")
            .arg(&self.name)
            .arg("-f")
            .arg(deploy("compose.yaml"))
            .args(args)
            .env("ROTA_IMAGE", &self.image)
            .env("ROTA_TLS_DIR", &self.tls);
        for (name, port) in &self.ports {
            command.env(name, port.to_string());
        }
        let output = command.output()?;
        anyhow::ensure!(output.status.success(), "docker-compose {args:?}: {}", text(&output));
        Ok(output)
    }

    /// `host:port` of the published gRPC port of server `n`.
    fn server(&self, n: usize) -> String {
        let port = self
            .ports
            .iter()
            .find(|(name, _)| *name == format!("ROTA_PORT_{n}"))
            .map_or(0, |(_, port)| *port);
        format!("127.0.0.1:{port}")
    }

    /// Waits until every container of the project reports healthy.
    async fn wait_healthy(&self) -> anyhow::Result<()> {
        wait_for("every service healthy", Duration::from_secs(120), || async {
            let ps = std::process::Command::new("docker")
                .args(["ps", "-a", "--format", "{{.Names}} {{.Status}}", "--filter"])
                .arg(format!("label=com.docker.compose.project={}", self.name))
                .output()
                .map_err(|e| e.to_string())?;
            let listing = String::from_utf8_lossy(&ps.stdout).into_owned();
            let lines: Vec<&str> = listing.lines().collect();
            let healthy = lines.len() == 5 && lines.iter().all(|l| l.contains("(healthy)"));
            if healthy { Ok(Some(())) } else { Err(listing) }
        })
        .await
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = self.compose(&["down", "-v", "--remove-orphans", "-t", "30"]);
        for worker in ["compose-worker-1", "compose-worker-2"] {
            docker::remove_worker_containers(worker);
        }
        docker::remove_image(&self.image);
    }
}

/// `rotactl` against `servers` with the client certificate and the
/// bootstrap token of `tls`: its exit status and output.
async fn rotactl(tls: &std::path::Path, servers: &str, args: &[&str]) -> anyhow::Result<(bool, String)> {
    let output = tokio::process::Command::new(bin_dir().join("rotactl"))
        .args(args)
        .env("ROTA_SERVERS", servers)
        .env("ROTA_TLS_CA", tls.join("ca.pem"))
        .env("ROTA_TLS_CERT", tls.join("client.pem"))
        .env("ROTA_TLS_KEY", tls.join("client-key.pem"))
        .env("ROTA_TOKEN_FILE", tls.join("bootstrap.token"))
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), output).await??;
    Ok((output.status.success(), text(&output)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_runs_jobs_across_a_server_restart_and_tears_down_cleanly() {
    if !docker::ready_or_skip() {
        return;
    }
    if std::process::Command::new("docker-compose")
        .arg("version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("ROTA_REQUIRE_COMPOSE").is_none(),
            "docker-compose is required (Debian's docker-compose package)"
        );
        eprintln!("skipped: no docker-compose");
        return;
    }
    let id = std::process::id();
    let mut ports = Vec::new();
    for n in 1..=3 {
        ports.push((format!("ROTA_PORT_{n}"), free_port().expect("port")));
        ports.push((format!("ROTA_HTTP_PORT_{n}"), free_port().expect("port")));
    }
    let credentials = tempfile::tempdir().expect("temp dir");
    let tls = credentials.path().join("tls");
    let init = std::process::Command::new(bin_dir().join("rotactl"))
        .args(["tls", "init", "--dir"])
        .arg(&tls)
        .args(["--host", "server-1", "--host", "server-2", "--host", "server-3"])
        .output()
        .expect("rotactl tls init runs");
    assert!(init.status.success(), "rotactl tls init: {}", text(&init));
    let project = Project {
        name: format!("rotacompose{id}"),
        image: format!("rota:compose-test-{id}"),
        ports,
        tls: tls.clone(),
    };
    let build = std::process::Command::new("bash")
        .arg(deploy("image/build.sh"))
        .arg("--bin")
        .arg(bin_dir())
        .arg(&project.image)
        .output()
        .expect("image build runs");
    assert!(build.status.success(), "deploy/image/build.sh: {}", text(&build));

    let result = async {
        project.compose(&["up", "-d"])?;
        project.wait_healthy().await?;
        let all = format!("{},{},{}", project.server(1), project.server(2), project.server(3));
        let spec = tempfile::Builder::new().suffix(".yaml").tempfile()?;
        std::fs::write(
            spec.path(),
            "name: compose-hello\ntask:\n  image: rota-test/busybox:1\n  pull: never\n  \
             command: [sh, -c, 'echo hello from compose on $ROTA_RUN_ID']\n",
        )?;
        let path = spec.path().to_string_lossy().into_owned();
        // A worker container holds only a worker's credentials.
        let listing = text(&project.compose(&["exec", "-T", "worker-1", "ls", "/etc/rota/tls"])?);
        for file in ["ca.pem", "worker.pem", "worker-key.pem", "worker.token"] {
            anyhow::ensure!(listing.contains(file), "{file} missing in the worker: {listing}");
        }
        for file in [
            "ca-key.pem",
            "bootstrap.token",
            "secrets.key",
            "server-key.pem",
            "client-key.pem",
        ] {
            anyhow::ensure!(!listing.contains(file), "the worker holds {file}: {listing}");
        }
        // Security is on: plain text and a missing token are refused.
        let plain = tokio::process::Command::new(bin_dir().join("rotactl"))
            .args(["--timeout", "3s", "job", "list"])
            .env("ROTA_SERVERS", &all)
            .output()
            .await?;
        anyhow::ensure!(!plain.status.success(), "plain text was served: {}", text(&plain));
        let no_token = tokio::process::Command::new(bin_dir().join("rotactl"))
            .args(["job", "list"])
            .env("ROTA_SERVERS", &all)
            .env("ROTA_TLS_CA", tls.join("ca.pem"))
            .env("ROTA_TLS_CERT", tls.join("client.pem"))
            .env("ROTA_TLS_KEY", tls.join("client-key.pem"))
            .output()
            .await?;
        anyhow::ensure!(
            !no_token.status.success() && text(&no_token).contains("needs a token"),
            "no token: {}",
            text(&no_token)
        );
        let (ok, out) = rotactl(&tls, &all, &["apply", "-f", &path]).await?;
        anyhow::ensure!(ok, "apply: {out}");
        let (ok, out) = rotactl(&tls, &all, &["job", "run", "compose-hello", "--wait"]).await?;
        anyhow::ensure!(ok && out.contains("succeeded"), "the first run: {out}");

        // One server container restarted: it comes back healthy, holding the
        // job, and jobs still run.
        project.compose(&["restart", "server-1"])?;
        project.wait_healthy().await?;
        let (ok, out) = rotactl(&tls, &project.server(1), &["job", "list"]).await?;
        anyhow::ensure!(ok && out.contains("compose-hello"), "server 1 after its restart: {out}");
        let (ok, out) = rotactl(&tls, &all, &["job", "run", "compose-hello", "--wait"]).await?;
        anyhow::ensure!(ok && out.contains("succeeded"), "the run after the restart: {out}");
        let (ok, out) = rotactl(&tls, &all, &["run", "list", "--job", "compose-hello", "-o", "json"]).await?;
        let runs: serde_json::Value = serde_json::from_str(if ok { &out } else { "[]" })?;
        let succeeded = runs
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["state"] == "succeeded")
            .count();
        anyhow::ensure!(succeeded == 2, "two succeeded runs: {out}");
        Ok(())
    }
    .await;
    let logs = project
        .compose(&["logs", "--no-color", "--tail", "30"])
        .map(|o| text(&o))
        .unwrap_or_default();
    if let Err(e) = result {
        panic!("{e:#}\n{logs}");
    }
    // Down: nothing of the project is left.
    project
        .compose(&["down", "-v", "--remove-orphans", "-t", "30"])
        .expect("down");
    let left = std::process::Command::new("docker")
        .args(["ps", "-aq", "--filter"])
        .arg(format!("label=com.docker.compose.project={}", project.name))
        .output()
        .expect("docker ps");
    assert!(left.stdout.is_empty(), "containers left: {}", text(&left));
    let volumes = std::process::Command::new("docker")
        .args(["volume", "ls", "-q", "--filter"])
        .arg(format!("label=com.docker.compose.project={}", project.name))
        .output()
        .expect("docker volume ls");
    assert!(volumes.stdout.is_empty(), "volumes left: {}", text(&volumes));
}
