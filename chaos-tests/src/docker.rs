//! The Docker engine, for the container tests: the locally built test image
//! and a look at what containers a worker left behind.
//!
//! No image can be pulled here, so [`require`] builds the test image with
//! `chaos-tests/images/build-test-image.sh` (`docker import` of a busybox
//! root filesystem) when it is missing. Without an engine the container
//! tests are skipped — unless `ROTA_REQUIRE_DOCKER` is set (CI sets it),
//! where they fail instead.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{Context, bail};

/// The image the container tests run.
pub const TEST_IMAGE: &str = "rota-test/busybox:1";

static READY: OnceLock<Result<bool, String>> = OnceLock::new();

fn prepare() -> Result<bool, String> {
    let engine = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output();
    let reachable = matches!(&engine, Ok(out) if out.status.success());
    if !reachable {
        if std::env::var_os("ROTA_REQUIRE_DOCKER").is_some() {
            return Err(format!(
                "ROTA_REQUIRE_DOCKER is set but the Docker engine does not answer: {engine:?}"
            ));
        }
        return Ok(false);
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("images/build-test-image.sh");
    let built = Command::new("bash")
        .arg(&script)
        .arg(TEST_IMAGE)
        .output()
        .map_err(|e| format!("running {}: {e}", script.display()))?;
    if !built.status.success() {
        return Err(format!(
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&built.stderr)
        ));
    }
    Ok(true)
}

/// Whether container tests can run: the engine answers and the test image is
/// present (built if needed). `Ok(false)`: skip (no engine, and not
/// required); an error when the engine is required but missing or the image
/// cannot be built.
pub fn require() -> anyhow::Result<bool> {
    match READY.get_or_init(prepare) {
        Ok(ready) => Ok(*ready),
        Err(e) => bail!("{e}"),
    }
}

/// For a container test: whether to run it. `false` (with a note) when no
/// engine answers and none is required; panics when the engine is required
/// but unusable.
pub fn ready_or_skip() -> bool {
    match require() {
        Ok(true) => true,
        Ok(false) => {
            eprintln!("skipped: no Docker engine (set ROTA_REQUIRE_DOCKER to make this a failure)");
            false
        }
        Err(e) => panic!("{e:#}"),
    }
}

/// Ids of worker `worker`'s containers (by label): the running ones, or
/// all of them with `include_stopped`.
pub fn containers(worker: &str, include_stopped: bool) -> anyhow::Result<Vec<String>> {
    let flags = if include_stopped { "-aq" } else { "-q" };
    let output = Command::new("docker")
        .args(["ps", flags, "--filter", &format!("label=rota.worker={worker}")])
        .output()
        .context("running docker ps")?;
    if !output.status.success() {
        bail!("docker ps failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .filter(|l| !l.is_empty())
        .collect())
}

/// Removes every container of worker `worker` (cleanup after a test).
pub fn remove_worker_containers(worker: &str) {
    if let Ok(ids) = containers(worker, true)
        && !ids.is_empty()
    {
        let _ = Command::new("docker").args(["rm", "-f"]).args(&ids).output();
    }
}

fn docker(args: &[&str]) -> anyhow::Result<std::process::Output> {
    Command::new("docker")
        .args(args)
        .output()
        .with_context(|| format!("running docker {}", args.join(" ")))
}

/// Tags `source` as `target` too.
pub fn tag(source: &str, target: &str) -> anyhow::Result<()> {
    let output = docker(&["tag", source, target])?;
    if !output.status.success() {
        bail!("docker tag failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(())
}

/// Whether the engine has image `name`.
pub fn image_exists(name: &str) -> anyhow::Result<bool> {
    let output = docker(&["images", "-q", name])?;
    if !output.status.success() {
        bail!("docker images failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(!output.stdout.trim_ascii().is_empty())
}

/// Removes image `name` if present (cleanup after a test).
pub fn remove_image(name: &str) {
    let _ = docker(&["rmi", name]);
}
