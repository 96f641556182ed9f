//! Issue 8, deployment files that cannot run here: the Kubernetes manifests
//! pass an offline schema check (PyPI's kubernetes-validate, strict), the
//! systemd units pass `systemd-analyze verify` with no complaint, and the
//! configuration files they carry are accepted by the real binaries.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use rota_chaos::{bin_dir, wait_for};

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy").join(path)
}

/// Whether a tool is there; when it is not, `Ok(false)` (skip) unless
/// `require` is set in the environment.
fn available(check: &mut Command, require: &str, install: &str) -> bool {
    let found = check
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var_os(require).is_none(),
            "{install} is required ({require} is set)"
        );
        eprintln!("skipped: {install} is not installed");
    }
    found
}

#[test]
fn the_kubernetes_manifests_pass_a_strict_schema_check() {
    if !available(
        Command::new("python3").args(["-c", "import kubernetes_validate"]),
        "ROTA_REQUIRE_K8S_VALIDATE",
        "kubernetes-validate (pip install kubernetes-validate)",
    ) {
        return;
    }
    let manifests = deploy("kubernetes/rota.yaml");
    for version in ["1.30.0", "1.33.0"] {
        let out = Command::new("python3")
            .args(["-m", "kubernetes_validate", "--strict", "-k", version])
            .arg(&manifests)
            .output()
            .expect("kubernetes-validate runs");
        let report = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "Kubernetes {version}: {report}");
        for kind in [
            "configmap/rota-config",
            "service/rota-server",
            "statefulset/rota-server",
            "poddisruptionbudget/rota-server",
            "daemonset/rota-worker",
        ] {
            assert!(
                report.contains(&format!("passed for resource {kind}")),
                "{kind} checked: {report}"
            );
        }
    }
}

#[test]
fn the_systemd_units_verify_cleanly() {
    if !available(
        Command::new("systemd-analyze").arg("--version"),
        "ROTA_REQUIRE_SYSTEMD_ANALYZE",
        "systemd-analyze (Debian's systemd)",
    ) {
        return;
    }
    // As installed, but with the binaries where they are here.
    let dir = tempfile::tempdir().expect("temp dir");
    let mut units = Vec::new();
    for (unit, binary) in [
        ("rota-server.service", "rota-server"),
        ("rota-worker.service", "rota-worker"),
    ] {
        let text = std::fs::read_to_string(deploy(&format!("systemd/{unit}"))).expect("unit");
        let installed = format!("/usr/local/bin/{binary}");
        assert!(
            text.contains(&format!("ExecStart={installed} --config /etc/rota/")),
            "{unit}"
        );
        let here = bin_dir().join(binary);
        let path = dir.path().join(unit);
        std::fs::write(&path, text.replace(&installed, &here.to_string_lossy())).expect("write unit");
        units.push(path);
    }
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&units)
        .output()
        .expect("systemd-analyze runs");
    let report = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    // It exits 0 on unknown keys and bad values, saying so: any line about
    // these units is a failure.
    let complaints: Vec<&str> = report
        .lines()
        .filter(|l| l.contains("rota-server.service") || l.contains("rota-worker.service"))
        .collect();
    assert!(out.status.success() && complaints.is_empty(), "{report}");
}

/// The text of key `key` (a `|` block) of the ConfigMap in the manifests.
fn config_map_file(key: &str) -> String {
    let manifests = std::fs::read_to_string(deploy("kubernetes/rota.yaml")).expect("manifests");
    let mut lines = manifests.lines().skip_while(|l| l.trim() != format!("{key}: |"));
    lines.next();
    lines
        .take_while(|l| l.starts_with("    ") || l.trim().is_empty())
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Starts `binary` with `args`, logging to `log`, and waits until its log
/// says `marker` (it got past loading its configuration); then stops it.
async fn reaches(binary: &str, args: &[String], log: &Path, marker: &str) -> Result<(), String> {
    let child = tokio::process::Command::new(bin_dir().join(binary))
        .args(args)
        .stderr(std::fs::File::create(log).map_err(|e| e.to_string())?)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("{binary}: {e}"))?;
    let child = std::sync::Mutex::new(child);
    let reached = wait_for(
        &format!("{binary} to log {marker:?}"),
        Duration::from_secs(30),
        || async {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let exited = child.lock().ok().and_then(|mut c| c.try_wait().ok().flatten());
            match exited {
                _ if text.contains(marker) => Ok(Some(())),
                Some(status) => Err(format!("exited {status}: {text}")),
                None => Ok(None),
            }
        },
    )
    .await;
    if let Ok(mut child) = child.into_inner() {
        let _ = child.kill().await;
    }
    reached.map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_configs_are_accepted_by_the_binaries() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = rota_chaos::free_port().expect("port");
    let at = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    // The shipped configs turn TLS, tokens and secrets on with the files of
    // `rotactl tls init` in /etc/rota/tls; here those files are in a
    // temporary directory.
    let tls = dir.path().join("tls");
    rota_client::certs::init_cluster(&tls, &[], Duration::from_secs(3600), "rota_bootstrap_for_config_check")
        .expect("credentials");
    let localize = |config: String| config.replace("/etc/rota/tls/", &format!("{}/", tls.display()));
    // The server: the ConfigMap's config and the commented reference file,
    // with the flags its pod (or unit) adds, must get as far as serving.
    for (name, config) in [
        ("configmap", config_map_file("server.toml")),
        (
            "reference",
            std::fs::read_to_string(deploy("server.toml")).expect("server.toml"),
        ),
    ] {
        assert!(
            config.contains("[tls]") && config.contains("enabled = true"),
            "{name}: security is on"
        );
        let config = localize(config);
        let path = at(&format!("server-{name}.toml"));
        std::fs::write(&path, &config).expect("write");
        let args: Vec<String> = [
            "--config",
            &path,
            "--node-id",
            "1",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
            &at(&format!("data-{name}")),
            "--initial-cluster",
            &format!("1=127.0.0.1:{port}"),
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        let log = dir.path().join(format!("server-{name}.log"));
        reaches("rota-server", &args, &log, "serving")
            .await
            .unwrap_or_else(|e| panic!("the server with the {name} config: {e}"));
    }
    // The worker: the ConfigMap's config (with exec instead of docker, which
    // this test does not need), and the reference file.
    for (name, config) in [
        (
            "configmap",
            config_map_file("worker.toml").replace("[\"docker\"]", "[\"exec\"]"),
        ),
        (
            "reference",
            std::fs::read_to_string(deploy("worker.toml")).expect("worker.toml"),
        ),
    ] {
        assert!(
            config.contains("[tls]") && config.contains("token_file"),
            "{name}: security is on"
        );
        let config = localize(config);
        let path = at(&format!("worker-{name}.toml"));
        std::fs::write(&path, &config).expect("write");
        let args: Vec<String> = [
            "--config",
            &path,
            "--servers",
            &format!("127.0.0.1:{port}"),
            "--id",
            "config-check",
            "--drivers",
            "exec",
            "--data-dir",
            &at(&format!("worker-data-{name}")),
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        let log = dir.path().join(format!("worker-{name}.log"));
        reaches("rota-worker", &args, &log, "cannot reach the cluster")
            .await
            .unwrap_or_else(|e| panic!("the worker with the {name} config: {e}"));
    }
}
