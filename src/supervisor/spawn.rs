//! Starting a child: posix_spawn for the plain case (no pipes, no terminal),
//! else fork/exec through std's `Command` with our own pre-exec steps (own
//! session, or own group in the terminal's foreground; default signal
//! dispositions). We never wait on what std hands back: the reaper owns
//! every exit status. Nothing allocates between fork and exec.

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
    if !take_terminal && !request.capture_stdout && !request.capture_stderr {
        let pid = spawn_plain(request).map_err(|e| spawn_failure(request.argv0, &e))?;
        return Ok(Spawned {
            pid,
            pgid: pid,
            stdout: None,
            stderr: None,
            previous_foreground: None,
        });
    }

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

/// The common case, and the one of every container start: no pipes and no
/// terminal to hand over. posix_spawn (musl: a clone with CLONE_VM and
/// CLONE_VFORK) neither copies our page tables nor makes our pages
/// copy-on-write, which a fork does and then pays for in page faults. Same
/// child as `prepare_child` makes: a session of its own, default
/// dispositions, an empty signal mask.
fn spawn_plain(request: &SpawnRequest<'_>) -> io::Result<Pid> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = |bytes: &[u8]| {
        CString::new(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte"))
    };
    let program = c(request.program.as_os_str().as_bytes())?;
    let mut argv = vec![c(request.argv0.as_bytes())?];
    for arg in request.args {
        argv.push(c(arg.as_bytes())?);
    }
    let mut envp = Vec::with_capacity(request.env.len());
    for (key, value) in request.env {
        let mut pair = Vec::with_capacity(key.len() + value.len() + 1);
        pair.extend_from_slice(key.as_bytes());
        pair.push(b'=');
        pair.extend_from_slice(value.as_bytes());
        envp.push(c(&pair)?);
    }
    let mut argv_ptrs: Vec<*mut libc::c_char> = argv
        .iter()
        .map(|a| a.as_ptr() as *mut libc::c_char)
        .collect();
    argv_ptrs.push(std::ptr::null_mut());
    let mut envp_ptrs: Vec<*mut libc::c_char> = envp
        .iter()
        .map(|e| e.as_ptr() as *mut libc::c_char)
        .collect();
    envp_ptrs.push(std::ptr::null_mut());
    let dir = match request.dir {
        Some(dir) => Some(c(dir.as_os_str().as_bytes())?),
        None => None,
    };

    // SAFETY: every pointer passed is valid for the call: the attribute and
    // file-action objects are initialised before use and destroyed after,
    // and the argv/envp arrays are NUL-terminated and outlive posix_spawn.
    unsafe {
        let mut attr: libc::posix_spawnattr_t = std::mem::zeroed();
        let mut actions: libc::posix_spawn_file_actions_t = std::mem::zeroed();
        if libc::posix_spawnattr_init(&mut attr) != 0 {
            return Err(io::Error::other("posix_spawnattr_init failed"));
        }
        libc::posix_spawn_file_actions_init(&mut actions);
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut none: libc::sigset_t = std::mem::zeroed();
        // The classic signals only, as `prepare_child` does; see there.
        libc::sigemptyset(&mut all);
        for signal in reset_signals() {
            libc::sigaddset(&mut all, signal);
        }
        libc::sigemptyset(&mut none);
        let flags = libc::POSIX_SPAWN_SETSID as libc::c_int
            | libc::POSIX_SPAWN_SETSIGMASK as libc::c_int
            | libc::POSIX_SPAWN_SETSIGDEF as libc::c_int;
        let mut failed = libc::posix_spawnattr_setflags(&mut attr, flags as libc::c_short);
        if failed == 0 {
            failed = libc::posix_spawnattr_setsigdefault(&mut attr, &all);
        }
        if failed == 0 {
            failed = libc::posix_spawnattr_setsigmask(&mut attr, &none);
        }
        if let (0, Some(dir)) = (failed, &dir) {
            failed = libc::posix_spawn_file_actions_addchdir_np(&mut actions, dir.as_ptr());
        }
        let mut pid: libc::pid_t = 0;
        if failed == 0 {
            failed = libc::posix_spawn(
                &mut pid,
                program.as_ptr(),
                &actions,
                &attr,
                argv_ptrs.as_ptr(),
                envp_ptrs.as_ptr(),
            );
        }
        libc::posix_spawn_file_actions_destroy(&mut actions);
        libc::posix_spawnattr_destroy(&mut attr);
        if failed != 0 {
            return Err(io::Error::from_raw_os_error(failed));
        }
        Ok(Pid::from_raw(pid))
    }
}

/// The dispositions a child gets reset to default: the classic signals 1-31
/// that can be caught. exec already resets every handled signal; this undoes
/// an ignore the entrypoint inherited (`nohup`, a shell's `trap '' TERM`) or
/// set itself (SIGPIPE). Real-time signals inherited as ignored stay so, as
/// under tini, dumb-init and catatonit: nothing in Airflow's stack uses them,
/// and resetting the other 33 would cost each start 33 system calls.
fn reset_signals() -> impl Iterator<Item = libc::c_int> {
    (1..32).filter(|&signal| signal != libc::SIGKILL && signal != libc::SIGSTOP)
}

/// Runs in the child between fork and exec. The child inherits our fully
/// blocked mask (std does not reset it): empty it last, after resetting every
/// disposition the entrypoint may have inherited as ignored, so the child
/// starts with the defaults.
fn prepare_child(take_terminal: bool) -> io::Result<()> {
    // SAFETY: plain syscalls on valid arguments; see the caller.
    unsafe {
        for signal in reset_signals() {
            libc::signal(signal, libc::SIG_DFL);
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
