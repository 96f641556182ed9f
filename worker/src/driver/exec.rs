//! The exec driver: a task as a host process in its own process group, for
//! hosts without Docker and for benchmarks.
//!
//! The program and its arguments are the task's `command` and `args` — an
//! argument array, never a shell string. Its environment is the task's (as
//! the cluster computed it: job env, parameters, `ROTA_*`) on top of a few
//! variables of the worker's own (`PATH`, `HOME`, `LANG`, `TZ`), so programs
//! are found. `user` (`uid[:gid]` or a name) switches user when the worker may.
//! Stopping signals the whole group; when the main process exits, anything
//! left in its group is killed, so no process outlives its attempt.
//!
//! A memory limit (`task.resources.memory`) puts the process in a cgroup of
//! its own ([`super::cgroup`]) before the program runs; the kernel's OOM
//! killer enforces it, and the cgroup gives the peak memory use and the OOM
//! flag afterwards. A worker that cannot create cgroups refuses such a task
//! with an error rather than run it unlimited. A CPU limit is not enforced
//! by this driver (said in the attempt's system log).

use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use rota_proto::v1 as pb;
use tokio::io::AsyncReadExt;
use tokio::process::Command;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::cgroup::{Cgroup, joining_argv};
use super::{Launch, Output, Started, Stopper, StopperKind, TaskId};
use crate::journal::Exit;

/// Variables of the worker's environment a task inherits.
const INHERITED: &[&str] = &["PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "USER"];

/// How long the output of an exited process may take to drain (a
/// background child holding the pipe open must not hold the attempt).
const DRAIN: Duration = Duration::from_secs(2);

/// Sends `signal` to process group `pgid`; a group that is gone is fine.
pub fn signal_group(pgid: i32, signal: Signal) {
    if pgid > 1 {
        let _ = killpg(Pid::from_raw(pgid), signal);
    }
}

/// Resolves `user` (`uid`, `uid:gid` or a name) to ids.
fn resolve_user(user: &str) -> Result<(u32, Option<u32>), String> {
    let (name, group) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let uid = match name.parse::<u32>() {
        Ok(uid) => uid,
        Err(_) => nix::unistd::User::from_name(name)
            .map_err(|e| format!("looking up user {name:?}: {e}"))?
            .ok_or_else(|| format!("no user {name:?} on this worker"))?
            .uid
            .as_raw(),
    };
    let gid = match group {
        None => None,
        Some(g) => Some(match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => nix::unistd::Group::from_name(g)
                .map_err(|e| format!("looking up group {g:?}: {e}"))?
                .ok_or_else(|| format!("no group {g:?} on this worker"))?
                .gid
                .as_raw(),
        }),
    };
    Ok((uid, gid))
}

async fn pump(mut pipe: impl AsyncReadExt + Unpin, stream: pb::LogStream, out: mpsc::Sender<Output>) {
    let mut buf = vec![0u8; 32 << 10];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let output = Output {
                    stream,
                    data: buf[..n].to_vec(),
                };
                if out.send(output).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Where a program named without a slash is found on `path` (the task's
/// `PATH`), as `execvp` in the task would find it: the first file there
/// this process may execute (`faccessat` with the effective ids: modes,
/// ACLs, `noexec` mounts). `None` leaves the lookup to the spawn: a name
/// with a slash, none found, a relative directory first (only the task's
/// working directory resolves it), or a file that is neither ELF nor a `#!`
/// script (`execvp` runs those with `/bin/sh`; `posix_spawn` does not).
/// Spawning a path lets the standard library use `posix_spawn`, which does
/// not copy the worker's page tables for every task as `fork` does.
fn resolve_program(program: &str, path: Option<&str>) -> Option<std::path::PathBuf> {
    use nix::fcntl::AtFlags;
    use nix::unistd::{AccessFlags, faccessat};
    use std::io::Read;
    if program.contains('/') {
        return None;
    }
    for dir in path?.split(':') {
        // An empty entry is the working directory, as "." is.
        if !dir.starts_with('/') {
            return None;
        }
        let candidate = std::path::Path::new(dir).join(program);
        let runnable = std::fs::metadata(&candidate).is_ok_and(|m| m.is_file())
            && faccessat(nix::fcntl::AT_FDCWD, &candidate, AccessFlags::X_OK, AtFlags::AT_EACCESS).is_ok();
        if runnable {
            let mut magic = [0u8; 4];
            let read = std::fs::File::open(&candidate).and_then(|mut f| f.read_exact(&mut magic));
            let direct = read.is_ok() && (magic == *b"\x7fELF" || magic.starts_with(b"#!"));
            return direct.then_some(candidate);
        }
    }
    None
}

/// The name of the cgroup of an attempt.
pub fn cgroup_name(launch: &Launch<'_>) -> String {
    attempt_cgroup_name(&launch.assignment.run_id, launch.assignment.epoch)
}

/// The name of the cgroup of attempt (`run_id`, `epoch`).
pub fn attempt_cgroup_name(run_id: &str, epoch: u64) -> String {
    format!("{run_id}-{epoch}")
}

/// Completes once process `pid` (a child of this one) has exited, leaving
/// it unreaped (`WNOWAIT`), so that its `/proc` entry can still be read. A
/// thread of its own waits: one per running attempt, never a runtime thread.
async fn exited_unreaped(pid: i32) {
    use nix::sys::wait::{Id, WaitPidFlag, waitid};
    let (tx, rx) = oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name(format!("rota-exec-{pid}"))
        .spawn(move || {
            let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT;
            while let Err(nix::errno::Errno::EINTR) = waitid(Id::Pid(Pid::from_raw(pid)), flags) {}
            let _ = tx.send(());
        });
    if spawned.is_ok() {
        let _ = rx.await;
    }
}

/// CPU time (user + system) of exited, unreaped process `pid` and of the
/// children it waited for, in milliseconds, from `/proc/PID/stat`.
fn cpu_time_ms(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    cpu_ms_of_stat(&stat, clock_ticks_per_second())
}

fn clock_ticks_per_second() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|ticks| u64::try_from(ticks).ok())
        .filter(|&ticks| ticks > 0)
        .unwrap_or(100)
}

/// utime + stime + cutime + cstime (fields 14–17) of a `/proc/PID/stat`
/// line, in milliseconds. The command name (field 2) may hold spaces and
/// parentheses, so fields are counted after its last `)`.
fn cpu_ms_of_stat(stat: &str, ticks_per_second: u64) -> Option<u64> {
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields
        .get(11..15)?
        .iter()
        .map(|f| f.parse::<u64>().ok())
        .sum::<Option<u64>>()?;
    Some(ticks.saturating_mul(1000) / ticks_per_second)
}

/// Starts the task of `launch` as a process group.
pub fn start(launch: &Launch<'_>, out: mpsc::Sender<Output>) -> Result<Started, String> {
    let task = launch.task();
    let mut argv = task.command.clone();
    argv.extend(task.args.iter().cloned());
    if argv.is_empty() {
        return Err("task.command is empty; the exec driver needs a program to run".into());
    }
    let user = match task.user.as_str() {
        "" => None,
        user => Some(resolve_user(user)?),
    };
    let mut notes = Vec::new();
    if task.resources.as_ref().is_some_and(|r| r.cpu > 0.0) {
        notes.push("task.resources.cpu is not enforced by the exec driver; the process runs unthrottled\n");
    }
    let limit = task
        .resources
        .as_ref()
        .map(|r| r.memory.as_str())
        .filter(|m| !m.is_empty())
        .map(|m| rota_proto::quantity::parse_bytes(m).map_err(|e| format!("task.resources.memory {m:?}: {e}")))
        .transpose()?;
    launch.policy.check_memory_cap(limit)?;
    let cgroup = match limit {
        None => None,
        Some(limit) => {
            let cannot = |e: String| {
                format!("task.resources.memory: the exec driver cannot enforce a memory limit on this worker: {e}")
            };
            let cgroup = Cgroup::create(&cgroup_name(launch), limit).map_err(cannot)?;
            if let Some((uid, _)) = user
                && let Err(e) = cgroup.allow(uid)
            {
                tokio::spawn(cgroup.remove());
                return Err(cannot(e));
            }
            argv = joining_argv(&cgroup, &argv);
            Some(cgroup)
        }
    };
    let program = &argv[0];
    let path = launch.env().get("PATH").cloned().or_else(|| std::env::var("PATH").ok());
    // Under another user std forks anyway, and the lookup is that user's.
    let found = if user.is_none() {
        resolve_program(program, path.as_deref())
    } else {
        None
    };
    let mut command = match found {
        Some(found) => {
            let mut command = Command::new(found);
            command.arg0(program);
            command
        }
        None => Command::new(program),
    };
    command.args(&argv[1..]).env_clear();
    for key in INHERITED {
        if let Ok(value) = std::env::var(key) {
            command.env(key, value);
        }
    }
    command.envs(launch.env());
    if !task.working_dir.is_empty() {
        command.current_dir(&task.working_dir);
    }
    if let Some((uid, gid)) = user {
        command.uid(uid);
        if let Some(gid) = gid {
            command.gid(gid);
        }
    }
    command
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(false);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            if let Some(cgroup) = cgroup {
                tokio::spawn(cgroup.remove());
            }
            return Err(format!("cannot start {program:?}: {e}"));
        }
    };
    for note in notes {
        let _ = out.try_send(Output {
            stream: pb::LogStream::System,
            data: note.as_bytes().to_vec(),
        });
    }
    let pgid = child
        .id()
        .and_then(|pid| i32::try_from(pid).ok())
        .ok_or("the process exited before it could be tracked")?;

    let mut pumps = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        pumps.push(tokio::spawn(pump(stdout, pb::LogStream::Stdout, out.clone())));
    }
    if let Some(stderr) = child.stderr.take() {
        pumps.push(tokio::spawn(pump(stderr, pb::LogStream::Stderr, out)));
    }
    let exited = CancellationToken::new();
    let (exit_tx, exit) = oneshot::channel();
    let done = exited.clone();
    tokio::spawn(async move {
        // Its CPU time is read from /proc once it has exited but before it
        // is reaped (then the totals are gone).
        exited_unreaped(pgid).await;
        let cpu_time_ms = cpu_time_ms(pgid);
        let status = child.wait().await;
        // Whatever is left in the group goes with the main process.
        signal_group(pgid, Signal::SIGKILL);
        done.cancel();
        for pump in pumps {
            let _ = tokio::time::timeout(DRAIN, pump).await;
        }
        let mut exit = match status {
            Ok(status) => {
                use std::os::unix::process::ExitStatusExt;
                Exit {
                    exit_code: status.code().or_else(|| status.signal().map(|s| 128 + s)),
                    cpu_time_ms: cpu_time_ms.unwrap_or(0),
                    ..Exit::default()
                }
            }
            Err(e) => Exit {
                error: Some(format!("waiting for the process: {e}")),
                ..Exit::default()
            },
        };
        if let Some(cgroup) = cgroup {
            (exit.peak_memory_bytes, exit.oom_killed) = cgroup.usage();
            cgroup.remove().await;
        }
        let _ = exit_tx.send(exit);
    });
    Ok(Started {
        id: TaskId::ProcessGroup(pgid),
        exit,
        stopper: Stopper {
            kind: StopperKind::Exec { pgid },
            exited,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_found_on_the_path_as_execvp_would() {
        let sh = std::path::Path::new("/bin/sh");
        assert_eq!(resolve_program("sh", Some("/no/such/dir:/bin")).as_deref(), Some(sh));
        assert_eq!(
            resolve_program("sh", Some("/no/such/dir::/bin")),
            None,
            "an empty entry is the working dir"
        );
        assert_eq!(resolve_program("/bin/sh", Some("/bin")), None, "a path is kept");
        assert_eq!(
            resolve_program("sh", Some("bin:/bin")),
            None,
            "a relative directory first"
        );
        assert_eq!(resolve_program("rota-no-such-program", Some("/bin")), None);
        assert_eq!(resolve_program("sh", None), None);
        // A directory or a file that is not executable is not a program.
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("prog")).expect("dir");
        std::fs::write(dir.path().join("data"), "x").expect("file");
        let path = format!("{}:/bin", dir.path().display());
        assert_eq!(resolve_program("prog", Some(&path)), None);
        assert_eq!(resolve_program("data", Some(&path)), None);
        // A script without `#!` is left to the spawn (execvp runs it with
        // /bin/sh); one with it is found.
        use std::os::unix::fs::PermissionsExt;
        for (name, text) in [("bare", "echo hi\n"), ("shebang", "#!/bin/sh\necho hi\n")] {
            let file = dir.path().join(name);
            std::fs::write(&file, text).expect("script");
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        assert_eq!(resolve_program("bare", Some(&path)), None);
        assert_eq!(
            resolve_program("shebang", Some(&path)),
            Some(dir.path().join("shebang"))
        );
    }

    #[test]
    fn cpu_time_counts_the_process_and_its_waited_children() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime cutime cstime ...
        let stat = "4242 (a (weird) name) Z 1 4242 4242 0 -1 4194564 120 0 0 0 150 25 20 5 20 0 1 0 99";
        assert_eq!(cpu_ms_of_stat(stat, 100), Some(2000));
        assert_eq!(cpu_ms_of_stat("4242 (short) Z 1 2", 100), None);
        assert_eq!(cpu_ms_of_stat("garbage", 100), None);
    }
}
