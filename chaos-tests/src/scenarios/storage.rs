//! Storage faults on one server: aborted at storage points (10), its disk
//! full, then freed (11).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;

use super::{Answered, Common, kept};
use crate::record::Recorder;
use crate::{Cluster, wait_for};

/// The crash-point variable of the server (`rota_server::store::crash`).
const CRASH_AT: &str = "ROTA_TEST_CRASH_AT";

/// Snapshots every this many log entries in the storage scenarios, so that
/// snapshots are built and sent within seconds.
pub(super) const SNAPSHOT_EVERY: u64 = 100;

/// Server `id` restarted armed to abort at the `n`-th time it reaches
/// `point`; waits for the abort and restarts it unarmed.
async fn abort_at(cluster: &mut Cluster, id: u64, point: &str, n: u32) -> anyhow::Result<()> {
    cluster.set_server_env(id, CRASH_AT, Some(&format!("{point}:{n}")));
    if cluster.is_running(id) {
        cluster.kill(id)?;
    }
    cluster.restart(id)?;
    let status = cluster
        .wait_exit(id, Duration::from_secs(120))
        .await
        .with_context(|| format!("server {id} never reached storage point {point} ({n} times)"))?;
    let said = cluster.server(id)?.process.log_tail(5);
    anyhow::ensure!(
        !status.success() && said.contains(&format!("aborting at storage point {point}")),
        "server {id} was to abort at {point} but exited with {status}: {said}"
    );
    eprintln!("server {id} aborted at storage point {point} (time {n}); restarting it");
    cluster.set_server_env(id, CRASH_AT, None);
    cluster.restart(id)
}

/// Applies jobs (recorded) until the leader has compacted its log past
/// `index`, so that a follower behind it needs a snapshot.
async fn write_past(cluster: &Cluster, recorder: &Recorder, index: u64) -> anyhow::Result<()> {
    let client = cluster.client()?;
    let mut i = 0u32;
    wait_for("the leader to compact its log", Duration::from_secs(120), || {
        i += 1;
        let (client, recorder) = (&client, recorder);
        let name = format!("burst-{}", i % 50);
        async move {
            let spec = rota_client::SpecFile::parse_yaml(&format!(
                "name: {name}\ntask: {{ driver: exec, command: [echo, burst] }}\n"
            ))
            .map_err(|e| e.to_string())?;
            let _ = recorder.apply_job(client, kept(&spec[0])).await;
            let leader = cluster
                .wait_for_leader(Duration::from_secs(30))
                .await
                .map_err(|e| e.to_string())?;
            let status = cluster.status(leader).await.map_err(|e| e.to_string())?;
            Ok((status.purged_index > index).then_some(()))
        }
    })
    .await
}

/// Scenario 10: under a steady load, a server (the leader or a follower,
/// at random) aborts at each storage point in turn — log entries written
/// but not fsynced, entries applied but not stored, stored but not
/// acknowledged, a snapshot built — and is restarted; then, twice, a
/// follower kept down while the log is compacted past it aborts in the
/// middle of installing the snapshot it is sent (once the snapshot is
/// stored, once its rows are written but not its last-applied id), and is
/// restarted. Nothing
/// acknowledged is lost, every slot has one record, the servers converge.
pub(super) async fn server_killed_at_storage_points(
    cluster: &mut Cluster,
    rng: &mut StdRng,
    seed: u64,
) -> anyhow::Result<()> {
    let common = Common::start(cluster).await?.with_load("load");
    for point in ["append-written", "apply-applied", "apply-stored", "snapshot-built"] {
        let ids = cluster.ids();
        let victim = *ids.choose(rng).context("no servers")?;
        let n = if point == "snapshot-built" {
            1
        } else {
            rng.random_range(1..20)
        };
        abort_at(cluster, victim, point, n).await?;
        cluster.wait_for_leader(Duration::from_secs(30)).await?;
    }
    let mut follower = 0;
    for point in ["snapshot-install-stored", "snapshot-install-replacing"] {
        let leader = cluster.wait_for_leader(Duration::from_secs(30)).await?;
        follower = cluster
            .ids()
            .into_iter()
            .find(|&id| id != leader)
            .context("no follower")?;
        let behind = cluster.status(follower).await?.last_log_index;
        cluster.kill(follower)?;
        write_past(cluster, &common.recorder, behind).await?;
        abort_at(cluster, follower, point, 1).await?;
    }
    // Stopped with the rows written and the last-applied id not: the store
    // must see its marker and replace the state again (only the marker
    // makes it say so, so the whole log may be searched).
    let server = cluster.server(follower)?;
    wait_for(
        "the torn state machine to be replaced again",
        Duration::from_secs(60),
        || async {
            Ok(server
                .process
                .log_tail(usize::MAX)
                .contains("replacing the state machine when the server stopped; replacing it again")
                .then_some(()))
        },
    )
    .await?;
    cluster.wait_for_leader(Duration::from_secs(30)).await?;
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

/// A tmpfs mounted at a server's data directory, unmounted on drop.
struct SmallDisk {
    path: PathBuf,
}

impl SmallDisk {
    /// Moves the data directory `path` onto a tmpfs of `megabytes`.
    fn mount(path: &Path, megabytes: u32) -> anyhow::Result<SmallDisk> {
        let saved = path.with_extension("saved");
        std::fs::rename(path, &saved)?;
        std::fs::create_dir(path)?;
        run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={megabytes}m"),
                "tmpfs",
                &path.to_string_lossy(),
            ],
        )?;
        let disk = SmallDisk { path: path.to_owned() };
        run(
            "cp",
            &["-a", &format!("{}/.", saved.display()), &path.to_string_lossy()],
        )?;
        std::fs::remove_dir_all(&saved)?;
        Ok(disk)
    }

    /// Moves the data back onto the ordinary disk (the server is stopped).
    fn unmount(self) -> anyhow::Result<()> {
        let saved = self.path.with_extension("saved");
        run("cp", &["-a", &self.path.to_string_lossy(), &saved.to_string_lossy()])?;
        run("umount", &[&self.path.to_string_lossy()])?;
        std::fs::remove_dir(&self.path)?;
        std::fs::rename(&saved, &self.path)?;
        std::mem::forget(self);
        Ok(())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // A failed scenario: detach it (lazily, the server may hold files).
        let _ = run("umount", &["-l", &self.path.to_string_lossy()]);
    }
}

/// Runs `program args`; fails with its stderr.
fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let output = std::process::Command::new(program).args(args).output()?;
    anyhow::ensure!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}

/// Fills the filesystem under `dir` with one file until a write fails.
fn fill(dir: &Path) -> anyhow::Result<PathBuf> {
    use std::io::Write;
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path)?;
    let block = vec![0u8; 1 << 20];
    while file.write_all(&block).is_ok() {}
    let _ = file.sync_all();
    Ok(path)
}

/// Whether this process may mount filesystems (the disk scenario needs it).
pub(super) fn can_mount() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Scenario 11: a follower's data directory is on a small filesystem that
/// fills up under a steady load; after a while the space is freed. The
/// server must not corrupt anything: it keeps serving or stops, and once
/// there is room again (restarted if it stopped) it catches up. Nothing
/// acknowledged is lost, every slot has one record, the servers converge.
pub(super) async fn one_servers_disk_fills_up_then_frees(
    cluster: &mut Cluster,
    rng: &mut StdRng,
    seed: u64,
) -> anyhow::Result<()> {
    let leader = cluster.wait_for_leader(Duration::from_secs(30)).await?;
    let victim = cluster
        .ids()
        .into_iter()
        .find(|&id| id != leader)
        .context("no follower")?;
    let data_dir = cluster.server(victim)?.data_dir.clone();
    cluster.kill(victim)?;
    let disk = SmallDisk::mount(&data_dir, 256)?;
    cluster.restart(victim)?;
    let common = Common::start(cluster).await?.with_load("load");
    tokio::time::sleep(Duration::from_millis(rng.random_range(1000..3000))).await;
    let filler = fill(&data_dir)?;
    tokio::time::sleep(Duration::from_millis(rng.random_range(5000..10_000))).await;
    std::fs::remove_file(&filler)?;
    // Caught up with the leader again (restarted if it stopped).
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        if !cluster.is_running(victim) {
            let tail = cluster.server(victim)?.process.log_tail(200);
            let said = tail
                .lines()
                .find(|l| l.contains("raft stopped"))
                .unwrap_or("(no reason logged)");
            eprintln!("server {victim} stopped on the full disk; restarting it. It said: {said}");
            cluster.restart(victim)?;
        }
        let leader = cluster.wait_for_leader(Duration::from_secs(30)).await?;
        let target = cluster.status(leader).await?.commit_index;
        if cluster.status(victim).await.is_ok_and(|s| s.applied_index >= target) {
            break;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "server {victim} did not catch up within 90 s of its disk being freed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
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
        .await?;
    cluster.kill(victim)?;
    disk.unmount()?;
    cluster.restart(victim)
}
