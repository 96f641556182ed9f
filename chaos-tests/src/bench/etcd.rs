//! A 3-member etcd cluster on loopback (Debian's `etcd-server`), the peer
//! rota's replicated writes are compared with: each member fsyncs its WAL
//! like rota's servers do (etcd's default), and is stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::{free_port, wait_for};

/// A running etcd cluster.
pub struct Etcd {
    members: Vec<Child>,
    /// Client URLs, `http://127.0.0.1:PORT`.
    pub endpoints: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for member in &mut self.members {
            let _ = member.kill();
            let _ = member.wait();
        }
    }
}

/// The etcd binary: `ROTA_ETCD`, else `etcd` on the PATH.
fn etcd_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("ROTA_ETCD") {
        return Ok(PathBuf::from(path));
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        let candidate = dir.join("etcd");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!("etcd not found: install Debian's etcd-server (apt-get install etcd-server) or set ROTA_ETCD")
}

impl Etcd {
    /// Starts three members and waits until a write succeeds.
    pub async fn start() -> anyhow::Result<Etcd> {
        let binary = etcd_binary()?;
        let dir = tempfile::Builder::new().prefix("rota-bench-etcd-").tempdir()?;
        let mut ports = Vec::new();
        for _ in 0..3 {
            ports.push((free_port()?, free_port()?));
        }
        let initial = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("e{i}=http://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut members = Vec::new();
        for (i, (client, peer)) in ports.iter().enumerate() {
            members.push(spawn_member(&binary, dir.path(), i, *client, *peer, &initial)?);
        }
        let endpoints: Vec<String> = ports
            .iter()
            .map(|(client, _)| format!("http://127.0.0.1:{client}"))
            .collect();
        let etcd = Etcd {
            members,
            endpoints,
            _dir: dir,
        };
        let endpoints = etcd.endpoints.clone();
        wait_for("etcd to accept a write", Duration::from_secs(30), || {
            let endpoints = endpoints.clone();
            async move {
                let mut client = match etcd_client::Client::connect(&endpoints, None).await {
                    Ok(client) => client,
                    Err(e) => return Err(e.to_string()),
                };
                Ok(client.put("rota-bench-ready", "1", None).await.ok().map(|_| ()))
            }
        })
        .await
        .context("etcd did not form a cluster")?;
        Ok(etcd)
    }

    /// The members' process ids (to check they are real processes).
    pub fn pids(&self) -> Vec<u32> {
        self.members.iter().map(Child::id).collect()
    }
}

fn spawn_member(binary: &Path, dir: &Path, i: usize, client: u16, peer: u16, initial: &str) -> anyhow::Result<Child> {
    let log = std::fs::File::create(dir.join(format!("e{i}.log")))?;
    Command::new(binary)
        .arg("--name")
        .arg(format!("e{i}"))
        .arg("--data-dir")
        .arg(dir.join(format!("e{i}")))
        .arg("--listen-client-urls")
        .arg(format!("http://127.0.0.1:{client}"))
        .arg("--advertise-client-urls")
        .arg(format!("http://127.0.0.1:{client}"))
        .arg("--listen-peer-urls")
        .arg(format!("http://127.0.0.1:{peer}"))
        .arg("--initial-advertise-peer-urls")
        .arg(format!("http://127.0.0.1:{peer}"))
        .arg("--initial-cluster")
        .arg(initial)
        .arg("--initial-cluster-state")
        .arg("new")
        .arg("--initial-cluster-token")
        .arg("rota-bench")
        // Debian's 3.4 warns on every start without it; the values are the defaults.
        .arg("--logger")
        .arg("zap")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))
}
