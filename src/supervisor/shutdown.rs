//! After the main child has exited: stop everything it left behind. As PID 1
//! that is every other process of the namespace (kill(-1)); as a subreaper,
//! the child's group and every descendant. TERM first, KILL after the kill
//! timeout, and a bounded wait after that: the exit must never hang.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::{getpid, Pid};

use super::reap::reap_all;
use crate::signals::SignalInbox;

/// How long we wait for SIGKILLed processes to be reaped before exiting
/// anyway (a process stuck in uninterruptible sleep must not hang us).
pub(super) const AFTER_KILL_WAIT: Duration = Duration::from_secs(5);

/// What the shutdown did, for the exit summary.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stragglers {
    /// Processes sent SIGTERM, and of those later SIGKILL.
    pub termed: usize,
    pub killed: usize,
    /// Zombies reaped during the shutdown.
    pub reaped: usize,
}

pub fn stop_stragglers(
    inbox: &SignalInbox,
    kill_timeout: Duration,
    child_pgid: Pid,
    is_pid1: bool,
) -> Stragglers {
    let mut done = Stragglers::default();
    let reap = |done: &mut Stragglers| {
        let reaped = reap_all(&[]);
        done.reaped += reaped.others;
        reaped.none_left
    };
    if reap(&mut done) {
        return done;
    }
    let mut termed: HashSet<Pid> = HashSet::new();
    let count = send_to_rest(Signal::SIGTERM, is_pid1, child_pgid, &mut termed);
    done.termed = count;
    tracing::info!(
        processes = count,
        kill_timeout_s = kill_timeout.as_secs_f64(),
        "sent SIGTERM to the processes left behind by the child"
    );
    let deadline = Instant::now() + kill_timeout;
    loop {
        if reap(&mut done) {
            tracing::debug!("every process left behind has exited");
            return done;
        }
        if Instant::now() >= deadline {
            break;
        }
        // Wakes on SIGCHLD or at the deadline; other signals are dropped here:
        // we are already stopping everything.
        let _ = inbox.wait(Some(deadline), None);
        if !is_pid1 {
            // Descendants reparented to us since the first round get TERM once.
            done.termed += send_to_rest(Signal::SIGTERM, false, child_pgid, &mut termed);
        }
    }
    let mut killed = HashSet::new();
    let count = send_to_rest(Signal::SIGKILL, is_pid1, child_pgid, &mut killed);
    done.killed = count;
    tracing::warn!(
        processes = count,
        "processes still running after the kill timeout; sent SIGKILL"
    );
    let give_up = Instant::now() + AFTER_KILL_WAIT;
    while Instant::now() < give_up {
        if reap(&mut done) {
            return done;
        }
        let _ = inbox.wait(Some(give_up), None);
    }
    tracing::error!("some processes did not exit even after SIGKILL; exiting anyway");
    done
}

/// Sends `signal` to what is left; returns how many processes were targeted.
fn send_to_rest(
    signal: Signal,
    is_pid1: bool,
    child_pgid: Pid,
    already: &mut HashSet<Pid>,
) -> usize {
    if is_pid1 {
        // From a namespace's init, kill(-1) reaches every process but us.
        let count = descendants(getpid()).len();
        let _ = kill(Pid::from_raw(-1), signal);
        return count;
    }
    let _ = kill(Pid::from_raw(-child_pgid.as_raw()), signal);
    let mut count = 0;
    for pid in descendants(getpid()) {
        if already.insert(pid) {
            let _ = kill(pid, signal);
            count += 1;
        }
    }
    count
}

/// Every live descendant of `root`, read from /proc (ppid is the 4th field
/// of /proc/PID/stat, after the command name in parentheses).
pub fn descendants(root: Pid) -> Vec<Pid> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut parent_of: Vec<(i32, i32)> = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(after_name) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let mut fields = after_name.split_whitespace();
        let _state = fields.next();
        if let Some(ppid) = fields.next().and_then(|p| p.parse::<i32>().ok()) {
            parent_of.push((pid, ppid));
        }
    }
    let mut found = Vec::new();
    let mut frontier = vec![root.as_raw()];
    while let Some(parent) = frontier.pop() {
        for &(pid, ppid) in &parent_of {
            if ppid == parent && pid != root.as_raw() {
                found.push(Pid::from_raw(pid));
                frontier.push(pid);
            }
        }
    }
    found
}
