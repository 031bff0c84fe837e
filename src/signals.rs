//! Signal intake for the whole process, a leaf every phase may use: every
//! asynchronous signal is blocked first thing in `main` and read through one
//! signalfd. Blocked signals are never discarded by the kernel, not even for
//! a PID-namespace init with no handler, so nothing sent during start-up is
//! lost. Also signal names, parsing and the forwardable and terminating sets.
//! It imports no other module of the crate and never acts on a signal itself.

use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

/// Where forwarded signals go: the child's whole process group, or the
/// child alone (Celery's warm shutdown wants the latter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalScope {
    Group,
    Child,
}

/// Synchronous signals: raised by a fault of the process itself. They stay
/// unblocked (blocking them turns a fault into an unkillable loop) and are
/// never forwarded.
const SYNCHRONOUS: [Signal; 6] = [
    Signal::SIGSEGV,
    Signal::SIGBUS,
    Signal::SIGILL,
    Signal::SIGFPE,
    Signal::SIGTRAP,
    Signal::SIGSYS,
];

const NAMES: [&str; 32] = [
    "0", "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS", "FPE", "KILL", "USR1", "SEGV", "USR2",
    "PIPE", "ALRM", "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU", "URG",
    "XCPU", "XFSZ", "VTALRM", "PROF", "WINCH", "IO", "PWR", "SYS",
];

pub fn signal_name(signal: i32) -> String {
    if let Some(name) = usize::try_from(signal).ok().and_then(|i| NAMES.get(i)) {
        return (*name).to_string();
    }
    let (min, max) = (libc::SIGRTMIN(), libc::SIGRTMAX());
    if (min..=max).contains(&signal) {
        return format!("RTMIN+{}", signal - min);
    }
    signal.to_string()
}

/// `TERM`, `SIGTERM`, `term`, `15`, `RTMIN+2`, `RTMAX-1`.
pub fn parse_signal(text: &str) -> Option<i32> {
    let upper = text.trim().to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Ok(number) = name.parse::<i32>() {
        return (1..=libc::SIGRTMAX()).contains(&number).then_some(number);
    }
    if let Some(i) = NAMES.iter().skip(1).position(|n| *n == name) {
        return Some(i as i32 + 1);
    }
    let (min, max) = (libc::SIGRTMIN(), libc::SIGRTMAX());
    let offset = |s: &str| {
        s.parse::<i32>()
            .ok()
            .filter(|n| (0..=max - min).contains(n))
    };
    match name {
        "RTMIN" => Some(min),
        "RTMAX" => Some(max),
        _ => {
            if let Some(k) = name.strip_prefix("RTMIN+").and_then(offset) {
                Some(min + k)
            } else {
                name.strip_prefix("RTMAX-")
                    .and_then(offset)
                    .map(|k| max - k)
            }
        }
    }
}

/// Signals that are passed on to the child: every one but KILL, STOP, CHLD
/// and the synchronous ones, real-time signals included.
pub fn is_forwardable(signal: i32) -> bool {
    !matches!(
        signal,
        libc::SIGKILL
            | libc::SIGSTOP
            | libc::SIGCHLD
            | libc::SIGSEGV
            | libc::SIGBUS
            | libc::SIGILL
            | libc::SIGFPE
            | libc::SIGTRAP
            | libc::SIGSYS
    ) && signal > 0
}

/// Signals that end start-up before the child exists.
pub fn is_terminating(signal: i32) -> bool {
    matches!(
        signal,
        libc::SIGTERM | libc::SIGINT | libc::SIGQUIT | libc::SIGHUP
    )
}

/// The process-wide signal inbox.
pub struct SignalInbox {
    fd: SignalFd,
    /// Signals a phase read but left for a later one (readiness sees SIGCHLD
    /// but never reaps): handed out again by the next `drain`.
    put_back: std::cell::RefCell<Vec<i32>>,
}

impl SignalInbox {
    /// Blocks every asynchronous signal for this thread (and every thread
    /// started later, which inherits the mask) and opens the signalfd.
    pub fn install() -> Result<SignalInbox, String> {
        let mut mask = SigSet::all();
        for signal in SYNCHRONOUS {
            mask.remove(signal);
        }
        mask.thread_set_mask()
            .map_err(|e| format!("blocking signals failed: {e}"))?;
        let fd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(|e| format!("signalfd failed: {e}"))?;
        Ok(SignalInbox {
            fd,
            put_back: std::cell::RefCell::new(Vec::new()),
        })
    }

    /// Waits until a signal arrives, `other` becomes readable, or `deadline`
    /// passes; returns every signal that was pending (possibly none). With no
    /// deadline this sleeps in the kernel: no wake-ups while idle.
    pub fn wait(&self, deadline: Option<Instant>, other: Option<BorrowedFd<'_>>) -> Vec<i32> {
        let timeout = match deadline {
            None => PollTimeout::NONE,
            Some(at) => {
                let left = at.saturating_duration_since(Instant::now());
                // Round up so that we do not wake a millisecond early and spin.
                let ms = left.as_micros().div_ceil(1000);
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
            }
        };
        let mut fds = vec![PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
        if let Some(fd) = other {
            fds.push(PollFd::new(fd, PollFlags::POLLIN));
        }
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => {
                // poll on valid fds cannot fail otherwise; do not spin if it does.
                tracing::error!(error = %e, "poll failed");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        self.drain()
    }

    /// Leaves `signal` for whoever drains the inbox next.
    pub fn put_back(&self, signal: i32) {
        let mut kept = self.put_back.borrow_mut();
        if !kept.contains(&signal) {
            kept.push(signal);
        }
    }

    /// Reads every pending signal without waiting (first those put back).
    pub fn drain(&self) -> Vec<i32> {
        let mut signals = std::mem::take(&mut *self.put_back.borrow_mut());
        while let Ok(Some(info)) = self.fd.read_signal() {
            signals.push(info.ssi_signo as i32);
        }
        signals
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for n in 1..=libc::SIGRTMAX() {
            assert_eq!(parse_signal(&signal_name(n)), Some(n), "{n}");
        }
        assert_eq!(parse_signal("SIGTERM"), Some(15));
        assert_eq!(parse_signal("term"), Some(15));
        assert_eq!(parse_signal("FOO"), None);
        assert_eq!(parse_signal("0"), None);
        assert_eq!(parse_signal("RTMIN+999"), None);
    }

    #[test]
    fn forwardable_excludes_kill_stop_chld_and_synchronous() {
        for s in [9, 19, 17, 11, 7, 4, 8, 5, 31] {
            assert!(!is_forwardable(s), "{s}");
        }
        for s in [
            1, 2, 3, 6, 10, 12, 13, 14, 15, 16, 18, 20, 21, 22, 23, 28, 30,
        ] {
            assert!(is_forwardable(s), "{s}");
        }
    }
}
