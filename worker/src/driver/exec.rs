//! The exec driver: a task as a host process in its own process group, for
//! hosts without Docker and for benchmarks.
//!
//! The program and its arguments are the task's `command` and `args` — an
//! argument array, never a shell string. Its environment is the task's (as
//! the cluster computed it: job env, parameters, `ROTA_*`) on top of a few
//! variables of the worker's own (`PATH`, `HOME`, `LANG`, `TZ`), so programs
//! are found. `user` (`uid[:gid]` or a name) switches user when the worker may.
//! Stopping signals the whole group; when the main process exits, anything
//! left in its group is killed, so no process outlives its attempt. Resource
//! limits are not enforced by this driver (there is no cgroup of its own).

use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use rota_proto::v1 as pb;
use tokio::io::AsyncReadExt;
use tokio::process::Command;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

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

/// Starts the task of `launch` as a process group.
pub fn start(launch: &Launch<'_>, out: mpsc::Sender<Output>) -> Result<Started, String> {
    let task = launch.task();
    let mut argv = task.command.clone();
    argv.extend(task.args.iter().cloned());
    let Some(program) = argv.first() else {
        return Err("task.command is empty; the exec driver needs a program to run".into());
    };
    let mut command = Command::new(program);
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
    if !task.user.is_empty() {
        let (uid, gid) = resolve_user(&task.user)?;
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
    let mut child = command.spawn().map_err(|e| format!("cannot start {program:?}: {e}"))?;
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
        let status = child.wait().await;
        // Whatever is left in the group goes with the main process.
        signal_group(pgid, Signal::SIGKILL);
        done.cancel();
        for pump in pumps {
            let _ = tokio::time::timeout(DRAIN, pump).await;
        }
        let exit = match status {
            Ok(status) => {
                use std::os::unix::process::ExitStatusExt;
                Exit {
                    exit_code: status.code().or_else(|| status.signal().map(|s| 128 + s)),
                    ..Exit::default()
                }
            }
            Err(e) => Exit {
                error: Some(format!("waiting for the process: {e}")),
                ..Exit::default()
            },
        };
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
