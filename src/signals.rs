//! Signal intake for the whole process, a leaf every phase may use: every
//! asynchronous signal is blocked first thing in `main` and read through one
//! signalfd. Blocked signals are never discarded by the kernel, not even for
//! a PID-namespace init with no handler, so nothing sent during start-up is
//! lost. Also signal names, parsing and the forwardable and terminating sets.
//! It imports no other module of the crate and never acts on a signal itself
//! (the one signal it sends is the parent-death signal, to ourselves).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::SigSet;
use nix::sys::signalfd::{SfdFlags, SignalFd};

/// Where forwarded signals go: the child's whole process group, or the
/// child alone (Celery's warm shutdown wants the latter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalScope {
    Group,
    Child,
}

/// A signal as the inbox read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    pub signal: i32,
    /// Sent by the kernel itself (si_code SI_KERNEL), not by a process:
    /// for SIGHUP and SIGCONT that is a terminal's hang-up or hand-over,
    /// which the kernel also delivers to the processes on that terminal.
    pub by_kernel: bool,
}

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

/// Signals that are passed on to the child: every one but KILL, STOP and
/// CHLD, real-time signals included. A SIGSEGV, SIGBUS, SIGILL, SIGFPE,
/// SIGTRAP or SIGSYS that reaches the inbox was sent by another process
/// with kill(): a real fault of ours never does (see `install`).
pub fn is_forwardable(signal: i32) -> bool {
    !matches!(signal, libc::SIGKILL | libc::SIGSTOP | libc::SIGCHLD) && signal > 0
}

/// Job-control stops: forwarded, then the entrypoint stops itself (not as
/// PID 1), so that a shell sees the job stop.
pub fn is_job_stop(signal: i32) -> bool {
    matches!(signal, libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU)
}

/// Signals that end start-up before the child exists.
pub fn is_terminating(signal: i32) -> bool {
    matches!(
        signal,
        libc::SIGTERM | libc::SIGINT | libc::SIGQUIT | libc::SIGHUP
    )
}

/// The parent this process started under, read first thing in `main`:
/// the reference for `set_parent_death_signal`'s re-check.
pub fn original_parent() -> i32 {
    // SAFETY: getppid has no preconditions and cannot fail.
    unsafe { libc::getppid() }
}

/// PR_SET_PDEATHSIG: the kernel sends `signal` when our parent dies. A
/// parent that died before the call (we were reparented: getppid() is no
/// longer `original_parent`) never will, so the signal is sent to ourselves
/// at once; blocked, it lands in the inbox like the kernel's would. As a
/// PID namespace's init the parent is outside (getppid() is 0 before and
/// after), so only the kernel's own delivery counts there. Err: the prctl
/// failed (an invalid signal).
pub fn set_parent_death_signal(signal: i32, original_parent: i32) -> Result<bool, String> {
    // SAFETY: prctl with plain integer arguments.
    let rc = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong, 0, 0, 0) };
    if rc != 0 {
        return Err(format!(
            "PR_SET_PDEATHSIG {}: {}",
            signal_name(signal),
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: getppid has no preconditions and cannot fail.
    let parent_gone = unsafe { libc::getppid() } != original_parent;
    if parent_gone {
        // SAFETY: kill(2) on our own pid with a valid signal number.
        unsafe { libc::kill(libc::getpid(), signal) };
    }
    Ok(parent_gone)
}

fn pollfd(fd: BorrowedFd<'_>) -> libc::pollfd {
    libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }
}

/// madvise(MADV_DONTNEED) on each range, then ppoll: one function with the
/// system calls inline, so that between dropping our text and sleeping no
/// other code runs. Code that ran in between would fault its pages back in,
/// and the kernel maps up to 64 kB (a whole large folio) around each fault;
/// this way only the page this function is on comes back. Returns ppoll's
/// result, or -errno.
///
/// # Safety
/// Each range must be a mapping whose pages the process can lose without
/// losing state (clean file pages); fds and timeout as for ppoll.
#[inline(never)]
unsafe fn drop_then_poll(
    ranges: &[(usize, usize)],
    fds: *mut libc::pollfd,
    count: usize,
    timeout: *const libc::timespec,
) -> isize {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: plain madvise and ppoll system calls on the caller's
    // arguments; the syscall instruction clobbers rcx and r11 only.
    unsafe {
        for &(start, len) in ranges {
            let _ret: isize;
            std::arch::asm!("syscall",
                inlateout("rax") libc::SYS_madvise as isize => _ret,
                in("rdi") start, in("rsi") len, in("rdx") libc::MADV_DONTNEED as usize,
                lateout("rcx") _, lateout("r11") _, options(nostack));
        }
        let ret: isize;
        std::arch::asm!("syscall",
            inlateout("rax") libc::SYS_ppoll as isize => ret,
            in("rdi") fds, in("rsi") count, in("rdx") timeout,
            in("r10") 0usize, in("r8") 0usize,
            lateout("rcx") _, lateout("r11") _, options(nostack));
        ret
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: as above; svc clobbers nothing but x0.
    unsafe {
        for &(start, len) in ranges {
            std::arch::asm!("svc 0",
                in("x8") libc::SYS_madvise as usize,
                inlateout("x0") start => _, in("x1") len, in("x2") libc::MADV_DONTNEED as usize,
                options(nostack));
        }
        let ret: isize;
        std::arch::asm!("svc 0",
            in("x8") libc::SYS_ppoll as usize,
            inlateout("x0") fds as usize => ret, in("x1") count, in("x2") timeout,
            in("x3") 0usize, in("x4") 0usize,
            options(nostack));
        ret
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    // SAFETY: as above, through libc.
    unsafe {
        for &(start, len) in ranges {
            libc::madvise(start as *mut libc::c_void, len, libc::MADV_DONTNEED);
        }
        match libc::ppoll(fds, count as libc::nfds_t, timeout, std::ptr::null()) {
            -1 => {
                -(std::io::Error::last_os_error()
                    .raw_os_error()
                    .unwrap_or(libc::EINTR) as isize)
            }
            n => n as isize,
        }
    }
}

/// The process-wide signal inbox.
pub struct SignalInbox {
    fd: SignalFd,
    /// Signals a phase read but left for a later one (readiness sees SIGCHLD
    /// but never reaps): handed out again by the next `drain`.
    put_back: std::cell::RefCell<Vec<i32>>,
    /// Ranges for `drop_then_poll` at the next sleep.
    pending_drop: std::cell::Cell<([(usize, usize); 8], usize)>,
}

impl SignalInbox {
    /// Blocks every signal for this thread (and every thread started later,
    /// which inherits the mask) and opens the signalfd. The synchronous ones
    /// (SEGV, BUS, ILL, FPE, TRAP, SYS) are blocked too, so that one sent
    /// with kill() is read and forwarded rather than dropped: a real fault
    /// is still fatal, because the kernel's forced delivery unblocks the
    /// signal, resets it to its default action and clears PID 1's immunity.
    pub fn install() -> Result<SignalInbox, String> {
        let mask = SigSet::all();
        mask.thread_set_mask()
            .map_err(|e| format!("blocking signals failed: {e}"))?;
        let fd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(|e| format!("signalfd failed: {e}"))?;
        Ok(SignalInbox {
            fd,
            put_back: std::cell::RefCell::new(Vec::new()),
            pending_drop: std::cell::Cell::new(([(0, 0); 8], 0)),
        })
    }

    /// Waits until a signal arrives, `other` becomes readable, or `deadline`
    /// passes; returns every signal that was pending (possibly none). With no
    /// deadline this sleeps in the kernel: no wake-ups while idle.
    pub fn wait(&self, deadline: Option<Instant>, other: Option<BorrowedFd<'_>>) -> Vec<i32> {
        self.sleep(deadline, other);
        self.drain()
    }

    /// As `wait_received`, on several other fds; also says which of them
    /// are readable (or closed), by index.
    pub fn wait_many(
        &self,
        deadline: Option<Instant>,
        others: &[BorrowedFd<'_>],
    ) -> (Vec<Received>, Vec<usize>) {
        let mut fds = vec![pollfd(self.fd.as_fd())];
        fds.extend(others.iter().map(|fd| pollfd(*fd)));
        self.poll(&mut fds, deadline);
        let ready = fds
            .iter()
            .skip(1)
            .enumerate()
            .filter(|(_, fd)| fd.revents != 0)
            .map(|(i, _)| i)
            .collect();
        (self.drain_received(), ready)
    }

    fn sleep(&self, deadline: Option<Instant>, other: Option<BorrowedFd<'_>>) {
        let mut fds = [pollfd(self.fd.as_fd()), pollfd(self.fd.as_fd())];
        let count = match other {
            Some(fd) => {
                fds[1] = pollfd(fd);
                2
            }
            None => 1,
        };
        self.poll(&mut fds[..count], deadline);
    }

    /// Pages to hand back to the kernel right before the next sleep, as
    /// (start, length) ranges (at most 8): see `drop_then_poll`.
    pub fn drop_pages_before_sleep(&self, ranges: &[(usize, usize)]) {
        let mut all = [(0, 0); 8];
        let count = ranges.len().min(all.len());
        all[..count].copy_from_slice(&ranges[..count]);
        self.pending_drop.set((all, count));
    }

    fn poll(&self, fds: &mut [libc::pollfd], deadline: Option<Instant>) {
        let timeout = deadline.map(|at| {
            let left = at.saturating_duration_since(Instant::now());
            libc::timespec {
                tv_sec: left.as_secs().min(i32::MAX as u64) as _,
                tv_nsec: left.subsec_nanos() as libc::c_long,
            }
        });
        let timeout_ptr = timeout
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        let (ranges, count) = self.pending_drop.replace(([(0, 0); 8], 0));
        // SAFETY: fds and timeout are valid for the call; the ranges are
        // the caller's, whole clean mappings of our own executable (see
        // `drop_pages_before_sleep`).
        let ret = unsafe {
            drop_then_poll(
                &ranges[..count.min(8)],
                fds.as_mut_ptr(),
                fds.len(),
                timeout_ptr,
            )
        };
        if ret < 0 && ret != -(libc::EINTR as isize) {
            // poll on valid fds cannot fail otherwise; do not spin if it does.
            tracing::error!(error = %Errno::from_raw(-ret as i32), "poll failed");
            std::thread::sleep(Duration::from_millis(10));
        }
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
        self.drain_received()
            .into_iter()
            .map(|r| r.signal)
            .collect()
    }

    /// As `wait`, with where each signal came from.
    pub fn wait_received(
        &self,
        deadline: Option<Instant>,
        other: Option<BorrowedFd<'_>>,
    ) -> Vec<Received> {
        self.sleep(deadline, other);
        self.drain_received()
    }

    fn drain_received(&self) -> Vec<Received> {
        let mut signals: Vec<Received> = std::mem::take(&mut *self.put_back.borrow_mut())
            .into_iter()
            .map(|signal| Received {
                signal,
                by_kernel: false,
            })
            .collect();
        while let Ok(Some(info)) = self.fd.read_signal() {
            signals.push(Received {
                signal: info.ssi_signo as i32,
                by_kernel: info.ssi_code == libc::SI_KERNEL,
            });
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

    /// A real fault with every signal blocked, as PID 1 of a new PID
    /// namespace: the kernel's forced delivery must still kill the process
    /// (not loop on the faulting instruction, not be dropped as for init).
    #[test]
    fn a_real_fault_still_kills_pid1_with_everything_blocked() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root for a PID namespace");
            return;
        }
        // SAFETY: the forked children only make plain syscalls and then
        // either fault or _exit; they never return into the test harness.
        match unsafe { nix::unistd::fork() }.expect("fork") {
            nix::unistd::ForkResult::Child => unsafe {
                if libc::unshare(libc::CLONE_NEWPID) != 0 {
                    libc::_exit(101);
                }
                let init = libc::fork();
                if init == 0 {
                    if libc::getpid() != 1 || SignalInbox::install().is_err() {
                        libc::_exit(102);
                    }
                    let null: *const u8 = std::ptr::null();
                    let _ = std::ptr::read_volatile(null);
                    libc::_exit(103);
                }
                let mut status = 0;
                libc::waitpid(init, &mut status, 0);
                let code = if libc::WIFSIGNALED(status) {
                    libc::WTERMSIG(status)
                } else {
                    100 + libc::WEXITSTATUS(status)
                };
                libc::_exit(code);
            },
            nix::unistd::ForkResult::Parent { child } => {
                let status = nix::sys::wait::waitpid(child, None).expect("waitpid");
                assert_eq!(
                    status,
                    nix::sys::wait::WaitStatus::Exited(child, libc::SIGSEGV),
                    "PID 1 did not die of its own SIGSEGV"
                );
            }
        }
    }

    /// A parent already gone when the parent-death signal is set (here: a
    /// recorded parent that is not ours) means the signal is sent at once,
    /// and lands pending like the kernel's would; with the real parent it
    /// is only set.
    #[test]
    fn a_parent_gone_before_the_call_gets_the_signal_sent_at_once() {
        // SAFETY: the forked child makes plain syscalls and _exits; it never
        // returns into the test harness.
        match unsafe { nix::unistd::fork() }.expect("fork") {
            nix::unistd::ForkResult::Child => unsafe {
                let mut mask: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut mask);
                libc::sigaddset(&mut mask, libc::SIGUSR1);
                libc::sigprocmask(libc::SIG_BLOCK, &mask, std::ptr::null_mut());
                let pending = || {
                    let mut set: libc::sigset_t = std::mem::zeroed();
                    libc::sigpending(&mut set);
                    libc::sigismember(&set, libc::SIGUSR1) == 1
                };
                let real = original_parent();
                if set_parent_death_signal(libc::SIGUSR1, real) != Ok(false) || pending() {
                    libc::_exit(1);
                }
                if set_parent_death_signal(libc::SIGUSR1, real + 1) != Ok(true) || !pending() {
                    libc::_exit(2);
                }
                libc::_exit(0);
            },
            nix::unistd::ForkResult::Parent { child } => {
                let status = nix::sys::wait::waitpid(child, None).expect("waitpid");
                assert_eq!(status, nix::sys::wait::WaitStatus::Exited(child, 0));
            }
        }
    }

    #[test]
    fn forwardable_excludes_only_kill_stop_and_chld() {
        for s in [9, 19, 17, 0] {
            assert!(!is_forwardable(s), "{s}");
        }
        // Synchronous signals sent with kill() are forwarded, as dumb-init does.
        for s in [
            1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14, 15, 16, 18, 20, 21, 22, 23, 28, 30, 31,
        ] {
            assert!(is_forwardable(s), "{s}");
        }
    }
}
