//! What a worker lets a job spec ask of its host (`[security]` of its
//! config). A scheduler that starts containers is remote code execution by
//! design; these are the ways a container takes over its host, so each is
//! refused unless the operator of this worker allowed it here: privileged
//! mode, the host's network, PID or IPC namespace, added capabilities,
//! devices, and host paths — the Docker engine's socket only when listed
//! by its exact path.
//!
//! The server checks only the form of these fields; the decision is the
//! worker's, made before anything is created, and an attempt it refuses
//! fails with the reason.

use std::path::{Path, PathBuf};

use rota_proto::v1 as pb;
use serde::{Deserialize, Serialize};

/// The host access this worker allows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostPolicy {
    /// Privileged containers.
    pub allow_privileged: bool,
    /// `network_mode: host`.
    pub allow_host_network: bool,
    /// `network_mode: container:NAME` (joining another container's network
    /// namespace, which may be the host's).
    pub allow_container_network: bool,
    /// The host's process namespace.
    pub allow_host_pid: bool,
    /// The host's IPC namespace.
    pub allow_host_ipc: bool,
    /// Capabilities that may be added, e.g. `["NET_ADMIN"]`.
    pub allow_capabilities: Vec<String>,
    /// Devices that may be passed in, e.g. `["/dev/fuse"]`.
    pub allow_devices: Vec<PathBuf>,
    /// Host paths that may be mounted: each entry allows itself and what is
    /// under it (after symbolic links are resolved). A Docker socket must
    /// be listed by its own path.
    pub allow_host_paths: Vec<PathBuf>,
    /// Memory limit of container tasks that give none, e.g. `"2Gi"`; empty:
    /// none. (Exec tasks get no default: their limits need cgroups.)
    pub default_memory: String,
    /// Largest memory limit a task may ask for, e.g. `"16Gi"`; empty: no cap.
    pub max_memory: String,
}

/// Where the advice in refusals points.
const SECTION: &str = "the [security] section of this worker's config";

/// Whether `path` is a Docker engine socket.
fn is_docker_socket(path: &Path) -> bool {
    path.file_name().is_some_and(|name| name == "docker.sock")
        || path.extension().is_some_and(|ext| ext == "sock") && path.to_string_lossy().contains("docker")
}

/// The container engines' sockets on this host (resolved), wherever a
/// mount might reach one: Docker's (and `DOCKER_HOST`'s), containerd's,
/// CRI-O's, Podman's.
fn engine_sockets() -> Vec<PathBuf> {
    let mut candidates: Vec<PathBuf> = [
        "/var/run/docker.sock",
        "/run/docker.sock",
        "/run/containerd/containerd.sock",
        "/var/run/crio/crio.sock",
        "/run/podman/podman.sock",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    if let Ok(host) = std::env::var("DOCKER_HOST")
        && let Some(path) = host.strip_prefix("unix://")
    {
        candidates.push(PathBuf::from(path));
    }
    candidates
        .into_iter()
        .filter_map(|p| std::fs::canonicalize(p).ok())
        .collect()
}

/// A bind the worker may hand the engine: the resolved host path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    /// On the host, symbolic links resolved.
    pub host: PathBuf,
    /// In the container.
    pub container: String,
    /// Read only.
    pub read_only: bool,
}

impl Bind {
    /// The engine's `host:container:mode` form.
    pub fn to_docker(&self) -> String {
        let mode = if self.read_only { "ro" } else { "rw" };
        format!("{}:{}:{mode}", self.host.display(), self.container)
    }
}

/// A path the engine's bind syntax carries safely: absolute, no `:` or `,`.
fn bindable(path: &str) -> bool {
    path.starts_with('/') && !path.contains([':', ',', '\0'])
}

impl HostPolicy {
    /// Checks the memory settings (at configuration load).
    pub fn validate(&self) -> Result<(), String> {
        for (field, value) in [
            ("default_memory", &self.default_memory),
            ("max_memory", &self.max_memory),
        ] {
            if !value.is_empty() {
                rota_proto::quantity::parse_bytes(value)
                    .map_err(|e| format!("security.{field} {value:?}: {e}; e.g. \"2Gi\" or \"512Mi\""))?;
            }
        }
        Ok(())
    }

    /// The memory limit a container task runs with: its own, else
    /// `default_memory`; refused above `max_memory`.
    pub fn container_memory(&self, task: &pb::Task) -> Result<Option<u64>, String> {
        let asked = task.resources.as_ref().map(|r| r.memory.as_str()).unwrap_or_default();
        let parse = |field: &str, text: &str| {
            rota_proto::quantity::parse_bytes(text).map_err(|e| format!("{field} {text:?}: {e}"))
        };
        let limit = match (asked.is_empty(), self.default_memory.is_empty()) {
            (false, _) => Some(parse("task.resources.memory", asked)?),
            (true, false) => Some(parse("security.default_memory", &self.default_memory)?),
            (true, true) => None,
        };
        self.check_memory_cap(limit)?;
        Ok(limit)
    }

    /// Refuses a limit above `max_memory` (and no limit at all when a cap is
    /// set).
    pub fn check_memory_cap(&self, limit: Option<u64>) -> Result<(), String> {
        if self.max_memory.is_empty() {
            return Ok(());
        }
        let cap = rota_proto::quantity::parse_bytes(&self.max_memory)
            .map_err(|e| format!("security.max_memory {:?}: {e}", self.max_memory))?;
        match limit {
            Some(limit) if limit <= cap => Ok(()),
            Some(limit) => Err(format!(
                "refused by this worker's security policy: task.resources.memory ({limit} bytes) is above \
                 max_memory ({}) in {SECTION}",
                self.max_memory
            )),
            None => Err(format!(
                "refused by this worker's security policy: the task sets no task.resources.memory and this \
                 worker caps memory at max_memory ({}) in {SECTION}",
                self.max_memory
            )),
        }
    }

    /// Refuses `task` if it asks for host access this policy does not
    /// allow; the error names the field and the setting that would allow it.
    pub fn check(&self, task: &pb::Task) -> Result<(), String> {
        let refuse = |what: String, setting: &str| {
            Err(format!(
                "refused by this worker's security policy: {what} is not allowed here ({setting} in {SECTION} allows it)"
            ))
        };
        if task.network_mode == "host" && !self.allow_host_network {
            return refuse("task.network_mode: host".into(), "allow_host_network = true");
        }
        if task.network_mode.starts_with("container:") && !self.allow_container_network {
            return refuse(
                format!("task.network_mode: {}", task.network_mode),
                "allow_container_network = true",
            );
        }
        let Some(host) = &task.host else {
            return Ok(());
        };
        if host.privileged && !self.allow_privileged {
            return refuse("task.host.privileged".into(), "allow_privileged = true");
        }
        if host.host_pid && !self.allow_host_pid {
            return refuse("task.host.host_pid".into(), "allow_host_pid = true");
        }
        if host.host_ipc && !self.allow_host_ipc {
            return refuse("task.host.host_ipc".into(), "allow_host_ipc = true");
        }
        for cap in &host.cap_add {
            let name = cap.trim().to_ascii_uppercase();
            let name = name.strip_prefix("CAP_").unwrap_or(&name);
            let allowed = name != "ALL"
                && self
                    .allow_capabilities
                    .iter()
                    .any(|a| a.trim().to_ascii_uppercase().trim_start_matches("CAP_") == name);
            if !allowed {
                return refuse(
                    format!("task.host.cap_add {cap:?}"),
                    &format!("allow_capabilities = [\"{name}\"]"),
                );
            }
        }
        for device in &host.devices {
            if !self.allow_devices.iter().any(|d| d == Path::new(device)) {
                return refuse(
                    format!("task.host.devices {device:?}"),
                    &format!("allow_devices = [\"{device}\"]"),
                );
            }
        }
        self.binds(task).map(|_| ())
    }

    /// The task's mounts as binds of resolved host paths, each checked.
    /// Called right before the container is created (and once earlier, to
    /// refuse before pulling), so the engine gets the paths that were
    /// checked, not names a link could since have redirected.
    pub fn binds(&self, task: &pb::Task) -> Result<Vec<Bind>, String> {
        let Some(host) = &task.host else {
            return Ok(Vec::new());
        };
        host.mounts
            .iter()
            .map(|mount| {
                if !bindable(&mount.host_path) || !bindable(&mount.container_path) {
                    return Err(format!(
                        "refused: task.host.mounts {:?} -> {:?}: paths must be absolute, without ':' or ','",
                        mount.host_path, mount.container_path
                    ));
                }
                let host = self.check_mount(&mount.host_path)?;
                if !bindable(&host.to_string_lossy()) {
                    return Err(format!(
                        "refused: task.host.mounts {:?} resolves to {}, which a bind cannot carry",
                        mount.host_path,
                        host.display()
                    ));
                }
                Ok(Bind {
                    host,
                    container: mount.container_path.clone(),
                    read_only: mount.read_only,
                })
            })
            .collect()
    }

    fn check_mount(&self, host_path: &str) -> Result<PathBuf, String> {
        let asked = Path::new(host_path);
        // Symbolic links are resolved on both sides, so neither a link in an
        // allowed directory nor a link to one changes the answer.
        let real = std::fs::canonicalize(asked).map_err(|e| {
            format!("refused: task.host.mounts host_path {host_path:?} cannot be used on this worker ({e})")
        })?;
        // A mount of a directory that holds an engine's socket reaches the
        // socket as surely as a mount of the socket itself.
        let covered_socket = engine_sockets()
            .into_iter()
            .find(|socket| socket.starts_with(&real) && *socket != real);
        if let Some(socket) = covered_socket {
            let listed = self
                .allow_host_paths
                .iter()
                .any(|allowed| std::fs::canonicalize(allowed).is_ok_and(|a| a == real));
            if !listed {
                return Err(format!(
                    "refused by this worker's security policy: task.host.mounts {host_path:?} holds the container \
                     engine's socket {}, which gives root on this host; list {host_path:?} itself in \
                     allow_host_paths in {SECTION} to allow it",
                    socket.display()
                ));
            }
        }
        let socket = is_docker_socket(asked) || is_docker_socket(&real);
        let allowed = self.allow_host_paths.iter().any(|allowed| {
            let allowed_real = std::fs::canonicalize(allowed).unwrap_or_else(|_| allowed.clone());
            if socket {
                allowed_real == real
            } else {
                real.starts_with(&allowed_real)
            }
        });
        if allowed {
            return Ok(real);
        }
        if socket {
            Err(format!(
                "refused by this worker's security policy: task.host.mounts {host_path:?} is the Docker engine's \
                 socket, which gives root on this host; list its exact path in allow_host_paths in {SECTION} to \
                 allow it"
            ))
        } else {
            Err(format!(
                "refused by this worker's security policy: task.host.mounts host_path {host_path:?} is not \
                 under any path of allow_host_paths in {SECTION} (allowed: {:?})",
                self.allow_host_paths
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(host: pb::HostAccess) -> pb::Task {
        pb::Task {
            host: Some(host),
            ..Default::default()
        }
    }

    fn mount(path: &str) -> pb::HostAccess {
        pb::HostAccess {
            mounts: vec![pb::Mount {
                host_path: path.into(),
                container_path: "/m".into(),
                read_only: false,
            }],
            ..Default::default()
        }
    }

    #[test]
    fn nothing_is_allowed_by_default_and_each_refusal_names_its_setting() {
        let policy = HostPolicy::default();
        let cases = [
            (
                task(pb::HostAccess {
                    privileged: true,
                    ..Default::default()
                }),
                "allow_privileged",
            ),
            (
                pb::Task {
                    network_mode: "host".into(),
                    ..Default::default()
                },
                "allow_host_network",
            ),
            (
                task(pb::HostAccess {
                    host_pid: true,
                    ..Default::default()
                }),
                "allow_host_pid",
            ),
            (
                task(pb::HostAccess {
                    cap_add: vec!["SYS_ADMIN".into()],
                    ..Default::default()
                }),
                "allow_capabilities",
            ),
            (
                task(pb::HostAccess {
                    devices: vec!["/dev/fuse".into()],
                    ..Default::default()
                }),
                "allow_devices",
            ),
            (task(mount("/tmp")), "allow_host_paths"),
            (
                pb::Task {
                    network_mode: "container:other".into(),
                    ..Default::default()
                },
                "allow_container_network",
            ),
        ];
        for (task, setting) in cases {
            let refused = policy.check(&task).expect_err(setting);
            assert!(refused.contains(setting) && refused.contains("refused"), "{refused}");
        }
        assert!(policy.check(&pb::Task::default()).is_ok());
    }

    #[test]
    fn host_paths_are_allowed_under_their_entry_after_links_are_resolved() {
        let dir = tempfile::tempdir().expect("tempdir");
        let allowed = dir.path().join("cache");
        let outside = dir.path().join("secret");
        std::fs::create_dir_all(allowed.join("sub")).expect("mkdir");
        std::fs::create_dir_all(&outside).expect("mkdir");
        std::os::unix::fs::symlink(&outside, allowed.join("escape")).expect("symlink");
        let policy = HostPolicy {
            allow_host_paths: vec![allowed.clone()],
            ..Default::default()
        };
        let path = |p: &Path| p.to_string_lossy().into_owned();
        assert!(policy.check(&task(mount(&path(&allowed.join("sub"))))).is_ok());
        // The engine gets the resolved path, not the name that was asked.
        let via_link = dir.path().join("link-to-cache");
        std::os::unix::fs::symlink(&allowed, &via_link).expect("symlink");
        let binds = policy
            .binds(&task(mount(&path(&via_link.join("sub")))))
            .expect("allowed through a link");
        assert_eq!(binds[0].host, std::fs::canonicalize(allowed.join("sub")).expect("real"));
        assert!(binds[0].to_docker().ends_with(":/m:rw"), "{}", binds[0].to_docker());
        let colon = policy
            .binds(&task(mount(&format!("{}/a:b", path(&allowed)))))
            .expect_err("a colon in the path");
        assert!(colon.contains("':'"), "{colon}");
        let escaped = policy
            .check(&task(mount(&path(&allowed.join("escape")))))
            .expect_err("a link out of the allowed directory");
        assert!(escaped.contains("not under"), "{escaped}");
        assert!(policy.check(&task(mount(&path(&outside)))).is_err());
        let socket = allowed.join("docker.sock");
        std::fs::write(&socket, b"").expect("file");
        let refused = policy
            .check(&task(mount(&path(&socket))))
            .expect_err("a docker socket under an allowed directory");
        assert!(refused.contains("Docker engine's socket"), "{refused}");
        let exact = HostPolicy {
            allow_host_paths: vec![allowed, socket.clone()],
            ..Default::default()
        };
        assert!(exact.check(&task(mount(&path(&socket)))).is_ok());
    }

    #[test]
    fn container_memory_is_the_task_s_else_the_default_and_never_above_the_cap() {
        let with = |memory: &str| pb::Task {
            resources: Some(pb::Resources {
                memory: memory.into(),
                cpu: 0.0,
            }),
            ..Default::default()
        };
        let open = HostPolicy::default();
        assert_eq!(open.container_memory(&with("")).expect("none"), None);
        let policy = HostPolicy {
            default_memory: "2Gi".into(),
            max_memory: "4Gi".into(),
            ..Default::default()
        };
        assert!(policy.validate().is_ok());
        assert_eq!(policy.container_memory(&with("")).expect("default"), Some(2 << 30));
        assert_eq!(policy.container_memory(&with("1Gi")).expect("own"), Some(1 << 30));
        let refused = policy.container_memory(&with("8Gi")).expect_err("over the cap");
        assert!(refused.contains("max_memory"), "{refused}");
        let capped = HostPolicy {
            max_memory: "4Gi".into(),
            ..Default::default()
        };
        assert!(capped.check_memory_cap(None).is_err(), "no limit under a cap");
        let bad = HostPolicy {
            default_memory: "lots".into(),
            ..Default::default()
        };
        assert!(bad.validate().expect_err("bad").contains("security.default_memory"));
    }

    #[test]
    fn listed_capabilities_pass_with_or_without_the_prefix_but_all_never_does() {
        let policy = HostPolicy {
            allow_capabilities: vec!["CAP_NET_ADMIN".into(), "ALL".into()],
            ..Default::default()
        };
        let cap = |c: &str| {
            task(pb::HostAccess {
                cap_add: vec![c.into()],
                ..Default::default()
            })
        };
        assert!(policy.check(&cap("NET_ADMIN")).is_ok());
        assert!(policy.check(&cap("cap_net_admin")).is_ok());
        assert!(policy.check(&cap("ALL")).is_err());
        assert!(policy.check(&cap("SYS_ADMIN")).is_err());
    }
}
