//! Start-up subprocesses (`_CMD` commands, `airflow config get-value`, and
//! later migrations and init scripts) run through the supervisor's own
//! spawn and reap, never std's wait: a second waiter would steal exit
//! statuses from our reaper. A terminating signal is forwarded to the step
//! and then ends start-up with 128+N. Every step has a time limit.

use std::io::Read;
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::reap::{reap_all, ChildExit};
use super::spawn::{spawn, SpawnRequest};
use crate::error::Failure;
use crate::signals::{is_forwardable, is_terminating, signal_name, SignalInbox};

/// A `_CMD`, `_SECRET` or `_PASSWORD_CMD` command must finish within this.
pub const CMD_TIME_LIMIT: Duration = Duration::from_secs(60);

/// A step that got a terminating signal and is still running this long
/// after gets SIGKILL (its whole group): start-up must not wait out the
/// step's own limit (an hour for a migration) once it was asked to stop.
const KILL_AFTER_SIGNAL: Duration = Duration::from_secs(5);

/// At most this much of a step's stdout is kept (a URL is tiny).
const MAX_CAPTURE: usize = 1 << 20;

pub struct StepOutcome {
    pub exit: ChildExit,
    /// The step's stdout when it was captured, else empty.
    pub stdout: String,
}

/// Runs one step to completion. `Err` only for start-up failures (not
/// found, not executable), a time-out, or a terminating signal.
pub fn run_step(
    inbox: &SignalInbox,
    request: &SpawnRequest<'_>,
    limit: Duration,
    what: &str,
) -> Result<StepOutcome, Failure> {
    let mut child = spawn(request)?;
    let pid = child.pid;
    let mut stdout = child.stdout.take();
    if let Some(pipe) = &stdout {
        let _ = fcntl(pipe.as_raw_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK));
    }
    let mut captured: Vec<u8> = Vec::new();
    let deadline = Instant::now() + limit;
    let mut interrupted: Option<i32> = None;
    let mut kill_at: Option<Instant> = None;
    let mut exit: Option<ChildExit> = None;
    loop {
        if let Some((_, e)) = reap_all(&[pid]).watched.first() {
            exit = Some(*e);
        }
        if let Some(pipe) = stdout.as_mut() {
            if drain_pipe(pipe, &mut captured) {
                stdout = None; // EOF
            }
        }
        if let Some(e) = exit {
            // A background grandchild may hold the pipe open: once the step
            // itself has exited we take what is there and go on. A step that
            // failed or was interrupted ends start-up: whatever it left in
            // its process group goes with it (a successful one may leave a
            // daemon on purpose).
            if interrupted.is_some() || e != ChildExit::Code(0) {
                let _ = kill(Pid::from_raw(-pid.as_raw()), Signal::SIGKILL);
            }
            if let Some(signal) = interrupted {
                return Err(Failure::interrupted(signal));
            }
            return Ok(StepOutcome {
                exit: e,
                stdout: String::from_utf8_lossy(&captured).into_owned(),
            });
        }
        if Instant::now() >= deadline {
            let _ = kill(Pid::from_raw(-pid.as_raw()), Signal::SIGKILL);
            let _ = kill(pid, Signal::SIGKILL);
            wait_for_exit(inbox, pid);
            return Err(Failure::config(format!(
                "{what} did not finish within {}s; it was killed",
                limit.as_secs()
            )));
        }
        if let (Some(signal), Some(at)) = (interrupted, kill_at) {
            if Instant::now() >= at {
                tracing::warn!(
                    step = what,
                    after_s = KILL_AFTER_SIGNAL.as_secs_f64(),
                    "the start-up step is still running after SIG{}; SIGKILL",
                    signal_name(signal)
                );
                let _ = kill(Pid::from_raw(-pid.as_raw()), Signal::SIGKILL);
                let _ = kill(pid, Signal::SIGKILL);
                wait_for_exit(inbox, pid);
                return Err(Failure::interrupted(signal));
            }
        }
        let other = stdout.as_ref().map(|p| p.as_fd());
        let wake_at = kill_at.map_or(deadline, |at| at.min(deadline));
        for signal in inbox.wait(Some(wake_at), other) {
            if signal == libc::SIGCHLD || !is_forwardable(signal) {
                continue;
            }
            if is_terminating(signal) && interrupted.is_none() {
                tracing::info!(
                    signal = signal_name(signal),
                    step = what,
                    "forwarding the signal to the start-up step, then stopping"
                );
                interrupted = Some(signal);
                kill_at = Some(Instant::now() + KILL_AFTER_SIGNAL);
            }
            // SAFETY: kill(2) with plain integers (real-time signals included).
            unsafe { libc::kill(-pid.as_raw(), signal) };
        }
    }
}

/// Runs a command that prints one value (a `_CMD`, `airflow config
/// get-value`) as a captured step: `argv[0]` looked up on `path_var`, at
/// most `limit`; its stdout when it exits 0. Every failure is a
/// configuration error naming `what`.
/// A runner for `_CMD`-style commands of the resolve phase: each runs with
/// `env` and `path_var`, under CMD_TIME_LIMIT, and gives its stdout.
pub fn command_runner(
    inbox: &SignalInbox,
    env: Vec<(std::ffi::OsString, std::ffi::OsString)>,
    path_var: Option<std::ffi::OsString>,
) -> impl FnMut(&[String], &str) -> Result<String, Failure> + '_ {
    move |argv, what| {
        let path_var = path_var.as_deref();
        captured_output(inbox, argv, &env, path_var, CMD_TIME_LIMIT, what)
    }
}

pub fn captured_output(
    inbox: &SignalInbox,
    argv: &[String],
    env: &[(std::ffi::OsString, std::ffi::OsString)],
    path_var: Option<&std::ffi::OsStr>,
    limit: Duration,
    what: &str,
) -> Result<String, Failure> {
    let (name, args) = argv
        .split_first()
        .ok_or_else(|| Failure::config(format!("{what} is empty")))?;
    let program = crate::supervisor::program::find_program(std::ffi::OsStr::new(name), path_var)
        .map_err(|f| Failure::config(format!("{what}: {}", f.message)))?;
    let args: Vec<std::ffi::OsString> = args.iter().map(Into::into).collect();
    let outcome = run_step(
        inbox,
        &SpawnRequest {
            program: &program,
            argv0: std::ffi::OsStr::new(name),
            args: &args,
            env,
            capture_stdout: true,
            capture_stderr: false,
            take_terminal: false,
            dir: None,
        },
        limit,
        what,
    )?;
    match outcome.exit {
        ChildExit::Code(0) => Ok(outcome.stdout),
        other => Err(Failure::config(format!(
            "{what} failed with exit status {}; run it by hand as the service user to see why",
            other.status_code()
        ))),
    }
}

/// Reads what is available; true at EOF.
fn drain_pipe(pipe: &mut std::process::ChildStdout, into: &mut Vec<u8>) -> bool {
    let mut buf = [0u8; 8192];
    loop {
        match pipe.read(&mut buf) {
            Ok(0) => return true,
            Ok(n) => {
                let room = MAX_CAPTURE.saturating_sub(into.len());
                into.extend_from_slice(&buf[..n.min(room)]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return false, // WouldBlock: nothing more for now
        }
    }
}

/// After a SIGKILL: reap the step, bounded.
fn wait_for_exit(inbox: &SignalInbox, pid: Pid) {
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        if !reap_all(&[pid]).watched.is_empty() {
            return;
        }
        let _ = inbox.wait(Some(until), None);
    }
}
