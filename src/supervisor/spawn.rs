//! Starting a child: fork/exec through std's `Command` with our own pre-exec
//! steps (own session, or own group in the terminal's foreground; default
//! signal dispositions). std hands back a `Child` that we never wait on: the
//! reaper owns every exit status. Nothing allocates between fork and exec.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{ChildStdout, Command, Stdio};

use nix::unistd::{isatty, tcgetpgrp, Pid};

use crate::error::{code, Failure};

/// What to start.
pub struct SpawnRequest<'a> {
    /// Absolute path found by the command lookup.
    pub program: &'a Path,
    /// argv[0] as the user wrote it.
    pub argv0: &'a OsStr,
    pub args: &'a [OsString],
    pub env: &'a [(OsString, OsString)],
    /// Capture stdout through a pipe (for `_CMD` commands); else inherited.
    pub capture_stdout: bool,
    /// Capture stderr through a pipe too (several components: prefixed).
    pub capture_stderr: bool,
    /// With a terminal on stdin, make the child the terminal's foreground
    /// group (Ctrl-C reaches it directly). False keeps it in a session of
    /// its own, so Ctrl-C comes to us and is forwarded like any signal.
    pub take_terminal: bool,
    /// Where it starts; None: our own working directory.
    pub dir: Option<&'a Path>,
}

pub struct Spawned {
    pub pid: Pid,
    /// The child leads its own process group: forwarded signals go to -pid.
    pub pgid: Pid,
    pub stdout: Option<ChildStdout>,
    pub stderr: Option<std::process::ChildStderr>,
    /// The terminal's foreground group before we handed it to the child.
    pub previous_foreground: Option<Pid>,
}

/// Fork/execs the request. When stdin is a terminal the child gets its own
/// process group and becomes the terminal's foreground group (so Ctrl-C
/// reaches it); otherwise it gets its own session.
pub fn spawn(request: &SpawnRequest<'_>) -> Result<Spawned, Failure> {
    let previous_foreground = if request.take_terminal && isatty(0).unwrap_or(false) {
        tcgetpgrp(io::stdin()).ok()
    } else {
        None
    };
    let take_terminal = previous_foreground.is_some();

    let mut command = Command::new(request.program);
    command
        .arg0(request.argv0)
        .args(request.args)
        .env_clear()
        .envs(request.env.iter().map(|(k, v)| (k, v)));
    if let Some(dir) = request.dir {
        command.current_dir(dir);
    }
    if request.capture_stdout {
        command.stdout(Stdio::piped());
    }
    if request.capture_stderr {
        command.stderr(Stdio::piped());
    }
    // SAFETY: the closure runs in the forked child before exec and only calls
    // async-signal-safe functions (signal, setpgid, setsid, sigprocmask,
    // tcsetpgrp, getpid) on stack data; it allocates nothing.
    unsafe {
        command.pre_exec(move || prepare_child(take_terminal));
    }
    let child = command
        .spawn()
        .map_err(|e| spawn_failure(request.argv0, &e))?;
    let pid = Pid::from_raw(child.id() as i32);
    let mut child = child;
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    Ok(Spawned {
        pid,
        pgid: pid,
        stdout,
        stderr,
        previous_foreground,
    })
}

/// Runs in the child between fork and exec. The child inherits our fully
/// blocked mask (std does not reset it): empty it last, after resetting every
/// disposition the entrypoint may have inherited as ignored, so the child
/// starts with the defaults.
fn prepare_child(take_terminal: bool) -> io::Result<()> {
    // SAFETY: plain syscalls on valid arguments; see the caller.
    unsafe {
        for signal in 1..32 {
            if signal != libc::SIGKILL && signal != libc::SIGSTOP {
                libc::signal(signal, libc::SIG_DFL);
            }
        }
        if take_terminal {
            if libc::setpgid(0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            // A background group that calls tcsetpgrp gets SIGTTOU; it is still
            // blocked here (inherited), and is unblocked with the rest below.
            let mut ttou: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut ttou);
            libc::sigaddset(&mut ttou, libc::SIGTTOU);
            libc::sigprocmask(libc::SIG_BLOCK, &ttou, std::ptr::null_mut());
            libc::tcsetpgrp(0, libc::getpid());
        } else if libc::setsid() < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        if libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn spawn_failure(name: &OsStr, error: &io::Error) -> Failure {
    let name = name.to_string_lossy();
    match error.raw_os_error() {
        Some(libc::ENOENT) => Failure::new(code::NOT_FOUND, format!("command not found: {name}")),
        Some(libc::EACCES | libc::EPERM | libc::ENOEXEC | libc::EISDIR | libc::ETXTBSY) => {
            Failure::new(
                code::NOT_EXECUTABLE,
                format!("command not executable: {name}: {error}; check its mode (chmod +x), its #! line and the mount's noexec flag"),
            )
        }
        Some(libc::EAGAIN | libc::ENOMEM) => {
            Failure::internal(format!("could not start {name}: {error} (process or memory limit)"))
        }
        _ => Failure::new(code::NOT_EXECUTABLE, format!("could not execute {name}: {error}")),
    }
}

/// Gives the terminal back to the group that had it (when not PID 1).
pub fn restore_terminal(previous: Option<Pid>) {
    if let Some(group) = previous {
        // SIGTTOU is blocked in the entrypoint, so this cannot stop us.
        let _ = nix::unistd::tcsetpgrp(io::stdin(), group);
    }
}
