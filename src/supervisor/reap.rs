//! Reaping: the one place that calls waitpid. One SIGCHLD may stand for many
//! exits (they coalesce), so every call reaps until the kernel has nothing.

use nix::errno::Errno;
use nix::unistd::Pid;

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildExit {
    Code(i32),
    Signal(i32),
}

impl ChildExit {
    /// The shell convention: the exit code, or 128+N for signal N.
    pub fn status_code(self) -> i32 {
        match self {
            ChildExit::Code(c) => c,
            ChildExit::Signal(s) => 128 + s,
        }
    }
}

pub struct Reaped {
    /// Exits of the children we were asked to watch.
    pub watched: Vec<(Pid, ChildExit)>,
    /// Zombies reaped that nobody watched (orphans, stragglers).
    pub others: usize,
    /// waitpid said ECHILD: no child of ours is left at all.
    pub none_left: bool,
    /// Watched children that stopped (job control), with the stop signal.
    pub stopped: Vec<(Pid, i32)>,
    /// With `note_kills`: every process reaped that died of SIGKILL, with
    /// its command name, read while it was still a zombie.
    pub killed: Vec<Killed>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Killed {
    pub pid: Pid,
    pub name: String,
    pub watched: bool,
}

/// Reaps every child that has exited, without blocking. Uses libc directly:
/// a child killed by a real-time signal has no `nix::Signal` and must still
/// be reaped and reported.
pub fn reap_all(watched: &[Pid]) -> Reaped {
    reap(watched, false)
}

/// As `reap_all`, and names each SIGKILL death (for the OOM diagnosis): a
/// peek with WNOWAIT first, so /proc/PID/comm can still be read.
pub fn reap_all_noting_kills(watched: &[Pid]) -> Reaped {
    reap(watched, true)
}

fn reap(watched: &[Pid], note_kills: bool) -> Reaped {
    let mut result = Reaped {
        watched: Vec::new(),
        others: 0,
        none_left: false,
        stopped: Vec::new(),
        killed: Vec::new(),
    };
    // At debug level each reaped orphan is named, so it is peeked at first
    // too; otherwise the path stays one waitpid per zombie (or the peek the
    // OOM watch asked for). The level is a plain load, no system call.
    let name_orphans = tracing::level_enabled!(tracing::Level::DEBUG);
    loop {
        // A death seen by the peek is reaped by pid next, so that it is the
        // one waitpid reports (its name read while it was still a zombie).
        let mut which = -1;
        let mut peeked: Option<(Pid, String)> = None;
        if note_kills || name_orphans {
            if let Some((pid, by_sigkill)) = peek_exited() {
                which = pid.as_raw();
                let is_watched = watched.contains(&pid);
                let noted_kill = note_kills && by_sigkill;
                if noted_kill || (name_orphans && !is_watched) {
                    let name = command_name(pid);
                    if noted_kill {
                        result.killed.push(Killed {
                            pid,
                            name: name.clone(),
                            watched: is_watched,
                        });
                    }
                    peeked = Some((pid, name));
                }
            }
        }
        let mut status: libc::c_int = 0;
        // SAFETY: waitpid writes only into `status`, a valid local.
        // WUNTRACED: a stop is reported once, so this loop still ends.
        let pid = unsafe { libc::waitpid(which, &mut status, libc::WNOHANG | libc::WUNTRACED) };
        if pid == 0 {
            return result;
        }
        if pid < 0 {
            if Errno::last() == Errno::EINTR {
                if peeked.is_some_and(|(p, _)| result.killed.last().is_some_and(|k| k.pid == p)) {
                    result.killed.pop(); // peeked again on the next round
                }
                continue;
            }
            // ECHILD: nothing left to wait for.
            result.none_left = true;
            return result;
        }
        let exit = if libc::WIFEXITED(status) {
            ChildExit::Code(libc::WEXITSTATUS(status))
        } else if libc::WIFSIGNALED(status) {
            ChildExit::Signal(libc::WTERMSIG(status))
        } else {
            if libc::WIFSTOPPED(status) && watched.contains(&Pid::from_raw(pid)) {
                result
                    .stopped
                    .push((Pid::from_raw(pid), libc::WSTOPSIG(status)));
            }
            continue;
        };
        let pid = Pid::from_raw(pid);
        if name_orphans && !watched.contains(&pid) {
            // Unnamed only when it exited between the peek and the wait.
            let name = peeked
                .as_ref()
                .filter(|(p, _)| *p == pid)
                .map_or("", |(_, n)| n.as_str());
            tracing::debug!(
                pid = pid.as_raw(),
                command = name,
                exit_code = exit.status_code(),
                "reaped orphan pid {pid} ({name})"
            );
        }
        record(&mut result, watched, pid, exit);
    }
}

/// The next child waitpid would report as exited, left a zombie (waitid
/// with WNOWAIT): its pid, and whether SIGKILL ended it.
fn peek_exited() -> Option<(Pid, bool)> {
    // SAFETY: siginfo_t is plain data; waitid fills it in.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waitid writes only into `info`, a valid local.
    let rc = unsafe {
        libc::waitid(
            libc::P_ALL,
            0,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    // SAFETY: after a successful waitid the child fields are set (pid 0
    // when nothing is waiting).
    let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
    if rc != 0 || pid == 0 {
        return None;
    }
    let by_sigkill = info.si_code == libc::CLD_KILLED && status == libc::SIGKILL;
    Some((Pid::from_raw(pid), by_sigkill))
}

/// /proc/PID/comm of a zombie (still readable until it is reaped).
fn command_name(pid: Pid) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|n| n.trim_end_matches('\n').to_string())
        .unwrap_or_default()
}

fn record(result: &mut Reaped, watched: &[Pid], pid: Pid, exit: ChildExit) {
    if watched.contains(&pid) {
        result.watched.push((pid, exit));
    } else {
        result.others += 1;
    }
}
