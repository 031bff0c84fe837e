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
}

/// Reaps every child that has exited, without blocking. Uses libc directly:
/// a child killed by a real-time signal has no `nix::Signal` and must still
/// be reaped and reported.
pub fn reap_all(watched: &[Pid]) -> Reaped {
    let mut result = Reaped {
        watched: Vec::new(),
        others: 0,
        none_left: false,
        stopped: Vec::new(),
    };
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: waitpid writes only into `status`, a valid local.
        // WUNTRACED: a stop is reported once, so this loop still ends.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG | libc::WUNTRACED) };
        if pid == 0 {
            return result;
        }
        if pid < 0 {
            if Errno::last() == Errno::EINTR {
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
        record(&mut result, watched, Pid::from_raw(pid), exit);
    }
}

fn record(result: &mut Reaped, watched: &[Pid], pid: Pid, exit: ChildExit) {
    if watched.contains(&pid) {
        result.watched.push((pid, exit));
    } else {
        result.others += 1;
    }
}
