//! Memory limits for host processes: one cgroup per attempt.
//!
//! With cgroup v1 (the `memory` controller mounted at
//! `/sys/fs/cgroup/memory`), the attempt's cgroup is created under the
//! worker's own memory cgroup, with `memory.limit_in_bytes` and (when swap
//! accounting is on) `memory.memsw.limit_in_bytes` set to the limit. With
//! cgroup v2 (the unified hierarchy), it is created under
//! `/sys/fs/cgroup/rota` with `memory.max` and `memory.swap.max = 0`. Over
//! the limit, the kernel's OOM killer ends the task; the cgroup's counters
//! say so afterwards (`oom_kill` in `memory.oom_control` or
//! `memory.events`), and give the peak memory use.
//!
//! The process joins its cgroup before it runs the task's program: it
//! starts as `/bin/sh -c 'echo $$ > PROCS && exec "$@"'`, so nothing of the
//! task ever runs outside the limit (no unsafe `pre_exec` needed).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

const ROOT: &str = "/sys/fs/cgroup";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

/// An attempt's memory cgroup.
#[derive(Debug)]
pub struct Cgroup {
    version: Version,
    dir: PathBuf,
}

fn write(path: &Path, value: &str) -> Result<(), String> {
    fs::write(path, value).map_err(|e| format!("writing {value:?} to {}: {e}", path.display()))
}

/// The path of the cgroup v1 memory controller in the text of
/// `/proc/self/cgroup` (lines `id:controllers:path`).
fn v1_memory_path(proc_self_cgroup: &str) -> Option<&str> {
    proc_self_cgroup.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let _id = parts.next()?;
        let controllers = parts.next()?;
        let path = parts.next()?;
        controllers
            .split(',')
            .any(|c| c == "memory")
            .then(|| path.trim_start_matches('/'))
    })
}

/// The worker's own cgroup v1 memory directory.
fn own_v1_memory_dir() -> Result<PathBuf, String> {
    let text = fs::read_to_string("/proc/self/cgroup").map_err(|e| format!("reading /proc/self/cgroup: {e}"))?;
    let path = v1_memory_path(&text).ok_or("this process is in no memory cgroup")?;
    Ok(Path::new(ROOT).join("memory").join(path))
}

impl Cgroup {
    /// Where the cgroup `name` lives on this host (nothing is created).
    pub fn locate(name: &str) -> Result<Cgroup, String> {
        let unified = Path::new(ROOT).join("cgroup.controllers");
        if Path::new(ROOT).join("memory/memory.limit_in_bytes").exists() {
            Ok(Cgroup {
                version: Version::V1,
                dir: own_v1_memory_dir()?.join(format!("rota-{name}")),
            })
        } else if fs::read_to_string(unified).is_ok_and(|c| c.split_whitespace().any(|c| c == "memory")) {
            Ok(Cgroup {
                version: Version::V2,
                dir: Path::new(ROOT).join("rota").join(name),
            })
        } else {
            Err("no cgroup memory controller is available".into())
        }
    }

    /// Creates the cgroup `name` (unique per attempt) limited to `limit` bytes.
    pub fn create(name: &str, limit: u64) -> Result<Cgroup, String> {
        let cgroup = Cgroup::locate(name)?;
        if cgroup.version == Version::V2 {
            let parent = Path::new(ROOT).join("rota");
            fs::create_dir_all(&parent).map_err(|e| format!("creating {}: {e}", parent.display()))?;
            write(&Path::new(ROOT).join("cgroup.subtree_control"), "+memory")?;
            write(&parent.join("cgroup.subtree_control"), "+memory")?;
        }
        match fs::create_dir(&cgroup.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("creating {}: {e}", cgroup.dir.display())),
        }
        let limit = limit.to_string();
        match cgroup.version {
            Version::V1 => {
                write(&cgroup.dir.join("memory.limit_in_bytes"), &limit)?;
                let memsw = cgroup.dir.join("memory.memsw.limit_in_bytes");
                if memsw.exists() {
                    write(&memsw, &limit)?;
                }
            }
            Version::V2 => {
                write(&cgroup.dir.join("memory.max"), &limit)?;
                let swap = cgroup.dir.join("memory.swap.max");
                if swap.exists() {
                    write(&swap, "0")?;
                }
            }
        }
        Ok(cgroup)
    }

    /// Lets user `uid` join (the task runs as another user than the
    /// worker): it must be able to write its pid to the cgroup.
    pub fn allow(&self, uid: u32) -> Result<(), String> {
        let procs = self.procs_file();
        std::os::unix::fs::chown(&procs, Some(uid), None)
            .map_err(|e| format!("giving {} to uid {uid}: {e}", procs.display()))
    }

    /// The file a process writes its pid to, to join.
    pub fn procs_file(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }

    fn counter(&self, file: &str, key: Option<&str>) -> u64 {
        let text = fs::read_to_string(self.dir.join(file)).unwrap_or_default();
        match key {
            None => text.trim().parse().unwrap_or(0),
            Some(key) => text
                .lines()
                .filter_map(|l| l.split_once(' '))
                .find(|(k, _)| *k == key)
                .and_then(|(_, v)| v.trim().parse().ok())
                .unwrap_or(0),
        }
    }

    /// (peak memory in bytes, whether the OOM killer struck).
    pub fn usage(&self) -> (u64, bool) {
        match self.version {
            Version::V1 => (
                self.counter("memory.max_usage_in_bytes", None),
                self.counter("memory.oom_control", Some("oom_kill")) > 0,
            ),
            Version::V2 => (
                self.counter("memory.peak", None),
                self.counter("memory.events", Some("oom_kill")) > 0,
            ),
        }
    }

    /// Removes the cgroup once its processes are gone (retrying briefly).
    pub async fn remove(self) {
        for _ in 0..20 {
            match fs::remove_dir(&self.dir) {
                Ok(()) => return,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        tracing::warn!(cgroup = %self.dir.display(), "cgroup not removed (processes left in it?)");
    }
}

/// The command line that joins `cgroup` and then runs `argv`.
pub fn joining_argv(cgroup: &Cgroup, argv: &[String]) -> Vec<String> {
    let mut wrapped = vec![
        "/bin/sh".to_owned(),
        "-c".to_owned(),
        "echo $$ > \"$0\" && exec \"$@\"".to_owned(),
        cgroup.procs_file().to_string_lossy().into_owned(),
    ];
    wrapped.extend(argv.iter().cloned());
    wrapped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_controller_path_is_found_among_the_others() {
        let text = "9:name=systemd:/\n4:memory:/process_api/abc\n1:cpu,cpuacct:/x\n0::/\n";
        assert_eq!(v1_memory_path(text), Some("process_api/abc"));
        assert_eq!(v1_memory_path("3:cpu,memory:/\n"), Some(""));
        assert_eq!(v1_memory_path("0::/user.slice\n"), None);
        assert_eq!(v1_memory_path("garbage"), None);
    }

    #[test]
    fn the_prelude_joins_then_execs_the_task_unchanged() {
        let cgroup = Cgroup {
            version: Version::V1,
            dir: PathBuf::from("/sys/fs/cgroup/memory/rota-r-1"),
        };
        let argv = joining_argv(&cgroup, &["sh".into(), "-c".into(), "echo \"$1\"".into()]);
        assert_eq!(argv[0], "/bin/sh");
        assert_eq!(argv[3], "/sys/fs/cgroup/memory/rota-r-1/cgroup.procs");
        assert_eq!(&argv[4..], ["sh", "-c", "echo \"$1\""]);
    }
}
