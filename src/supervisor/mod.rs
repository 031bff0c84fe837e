//! The supervisor: the one spawn-and-reap mechanism (start-up steps and
//! `_CMD`s use it too), then the main child: we only forward and reap until
//! it exits, stop what it left behind and report its status. It imports no
//! phase, only the leaves (signals, error, logging). Invariant: once the
//! child exists we never bail out early — every path still reaps, forwards
//! and waits for the child.

pub mod group;
pub mod oom;
pub mod program;
pub mod reap;
pub mod shutdown;
pub mod spawn;
pub mod steps;
pub mod trim;

use std::time::{Duration, Instant};

use nix::sys::signal::kill;
use nix::unistd::{getpid, Pid};

use crate::error::Failure;
use crate::logging::{enter_phase, Phase};
use crate::signals::SignalScope;
use crate::signals::{
    is_forwardable, is_job_stop, is_terminating, signal_name, Received, SignalInbox,
};
use reap::{reap_all, reap_all_noting_kills, ChildExit};
use spawn::{spawn, SpawnRequest, Spawned};

/// How the supervisor treats the child, resolved from settings and command.
#[derive(Debug, Clone)]
pub struct Policy {
    pub scope: SignalScope,
    pub grace_period: Option<Duration>,
    pub kill_timeout: Duration,
    pub term_delay: Duration,
    pub signal_map: Vec<(i32, Option<i32>)>,
    pub exit_code_map: Vec<(i32, i32)>,
}

/// How long the main child runs before start-up's pages are released.
pub(super) const TRIM_AFTER: Duration = Duration::from_millis(100);

/// The main child, started and ready to be supervised.
pub struct Supervised {
    pub child: Spawned,
    pub policy: Policy,
    pub is_pid1: bool,
    /// For the exit summary: the program, and when it started.
    pub command: String,
    pub started: Instant,
    pub oom: Option<oom::OomWatch>,
}

/// Becomes the reaper, takes a last look at start-up signals and spawns the
/// main child; from here on `supervise` owns it.
pub fn start_child(
    inbox: &SignalInbox,
    request: &SpawnRequest<'_>,
    policy: Policy,
    user: (&str, u32),
    oom: oom::Plan,
) -> Result<Supervised, Failure> {
    let is_pid1 = become_reaper();
    check_startup_signals(inbox)?;
    let child = spawn(request)?;
    tracing::info!(
        pid = child.pid.as_raw(),
        command = request.program.display().to_string(),
        user = user.0,
        uid = user.1,
        scope = match policy.scope {
            SignalScope::Group => "group",
            SignalScope::Child => "child",
        },
        pid1 = is_pid1,
        "started the command"
    );
    // Off the path to the child's exec: it runs while the child starts.
    let oom = oom.arm();
    oom::log_notes();
    // The child keeps the directory it started in; PID 1 lives on for the
    // container's life and must not pin a mount it never uses.
    if let Err(e) = nix::unistd::chdir("/") {
        tracing::debug!(error = %e, "could not move to /");
    }
    Ok(Supervised {
        child,
        policy,
        is_pid1,
        command: request.program.display().to_string(),
        started: Instant::now(),
        oom,
    })
}

/// Several components, ready to be started by `group::supervise_group`.
pub struct Group {
    pub components: Vec<group::Component>,
    pub policy: group::GroupPolicy,
    pub is_pid1: bool,
    pub oom: Option<oom::OomWatch>,
    /// The directory the components start in (ours moves to `/`).
    pub start_dir: Option<std::path::PathBuf>,
}

/// Becomes the reaper and takes a last look at start-up signals; the group
/// loop starts the components (the api-server first).
pub fn prepare_group(
    inbox: &SignalInbox,
    components: Vec<group::Component>,
    policy: group::GroupPolicy,
    oom: oom::Plan,
) -> Result<Group, Failure> {
    let is_pid1 = become_reaper();
    check_startup_signals(inbox)?;
    tracing::info!(
        components = components.len(),
        pid1 = is_pid1,
        "starting {}",
        components
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(" + ")
    );
    let oom = oom.arm();
    oom::log_notes();
    // Each (re)start of a component goes back to the start directory; PID 1
    // itself must not pin a mount it never uses.
    let start_dir = std::env::current_dir().ok();
    if start_dir.is_some() {
        if let Err(e) = nix::unistd::chdir("/") {
            tracing::debug!(error = %e, "could not move to /");
        }
    }
    Ok(Group {
        components,
        policy,
        is_pid1,
        oom,
        start_dir,
    })
}

/// True when we are the namespace's init. Otherwise become a child
/// subreaper, so orphaned descendants are reparented to us and reaped here.
pub fn become_reaper() -> bool {
    if getpid().as_raw() == 1 {
        return true;
    }
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        tracing::warn!(error = %e, "could not become a child subreaper; orphans will go to the real init");
    }
    false
}

/// Before the child exists: a terminating signal ends start-up at once with
/// 128+N; anything else is dropped (there is nobody to forward it to).
pub fn check_startup_signals(inbox: &SignalInbox) -> Result<(), Failure> {
    startup_signal_verdict(inbox.drain())
}

pub fn startup_signal_verdict(signals: Vec<i32>) -> Result<(), Failure> {
    for signal in signals {
        if is_terminating(signal) {
            return Err(Failure::interrupted(signal));
        }
        if signal == libc::SIGCHLD {
            reap_all(&[]);
        } else {
            tracing::debug!(
                signal = signal_name(signal),
                "signal before the command started; dropped"
            );
        }
    }
    Ok(())
}

/// Supervises `child` until it exits and the rest is stopped; returns the
/// exit code for the entrypoint (the child's status after EXIT_CODE_MAP).
pub fn supervise(inbox: &SignalInbox, supervised: Supervised) -> i32 {
    enter_phase(Phase::Supervise);
    // Start-up's pages are released once the child has lived a moment: a
    // command that ends at once (`-- /bin/true`) pays nothing for it, and a
    // long one sees one wake-up at start, never again.
    let mut trim_at = Some(Instant::now() + TRIM_AFTER);
    let Supervised {
        child,
        policy,
        is_pid1,
        command,
        started,
        mut oom,
    } = supervised;
    let (child, policy) = (&child, &policy);
    let mut held_term: Option<Instant> = None;
    let mut grace_deadline: Option<Instant> = None;
    let mut orphans_reaped = 0;
    // After a job-control stop: the SIGCONT that continued us is still in
    // the inbox, and the child's group was continued with us already; a
    // second CONT would reach a child that traps it twice.
    let mut continued_with_us = false;
    let exit = loop {
        let reaped = match oom {
            Some(_) => reap_all_noting_kills(&[child.pid]),
            None => reap_all(&[child.pid]),
        };
        orphans_reaped += reaped.others;
        if let Some(watch) = oom.as_mut() {
            name_oom_victims(watch, &reaped.killed);
        }
        if let Some((_, exit)) = reaped.watched.first() {
            break *exit;
        }
        if reaped.others > 0 {
            tracing::debug!(count = reaped.others, "reaped orphaned processes");
        }
        if reaped.none_left {
            // Cannot happen while the child lives; do not spin if it does.
            tracing::error!("the child vanished without an exit status");
            break ChildExit::Code(crate::error::code::INTERNAL);
        }
        if !is_pid1 && child.previous_foreground.is_some() {
            // The terminal stopped the child's group (Ctrl-Z): stop with it,
            // so that the shell that started us sees the job stop.
            if let Some(&(_, stop)) = reaped.stopped.iter().find(|(_, s)| is_job_stop(*s)) {
                suspend_with_child(child, stop, None);
                continued_with_us = true;
            }
        }
        // Right before the wait, so that no other code runs (and faults
        // its pages back in) between the trim and the sleep.
        if trim_at.is_some_and(|at| at <= Instant::now()) {
            trim_at = None;
            crate::alloc::seal();
            trim::release_startup_pages(inbox);
        }
        let deadline = [held_term, grace_deadline, trim_at]
            .into_iter()
            .flatten()
            .min();
        let received = inbox.wait_received(deadline, oom.as_ref().and_then(|w| w.fd()));
        if let Some(watch) = oom.as_mut() {
            watch.on_notification();
        }
        for Received { signal, by_kernel } in received {
            if signal == libc::SIGCHLD {
                continue; // reaped at the top of the loop
            }
            if signal == libc::SIGCONT && std::mem::take(&mut continued_with_us) {
                tracing::debug!("the CONT that continued us; the child was continued with us");
                continue;
            }
            // The kernel's SIGHUP and SIGCONT for a terminal (a hand-over, a
            // hang-up, an orphaned group) are not a user's request: CONT is
            // never passed on, HUP only to a child on our terminal.
            let on_our_terminal = child.previous_foreground.is_some();
            if by_kernel
                && (signal == libc::SIGCONT || (signal == libc::SIGHUP && !on_our_terminal))
            {
                tracing::debug!(
                    signal = signal_name(signal),
                    "sent by the kernel for the terminal; not forwarded"
                );
                continue;
            }
            if signal == libc::SIGTERM && !policy.term_delay.is_zero() && held_term.is_none() {
                held_term = Some(Instant::now() + policy.term_delay);
                tracing::info!(
                    delay_s = policy.term_delay.as_secs_f64(),
                    "holding SIGTERM before forwarding it (TERM_DELAY); a second TERM or an INT forwards at once"
                );
                continue;
            }
            // Only a second TERM or an INT cuts the delay short; any other
            // signal is forwarded and the TERM stays held.
            if held_term.is_some() && (signal == libc::SIGTERM || signal == libc::SIGINT) {
                held_term = None;
                if signal == libc::SIGINT {
                    forward(child, policy, libc::SIGTERM, &mut grace_deadline);
                }
            }
            // Job control as dumb-init does it, with a terminal or without:
            // a TSTP, TTIN or TTOU sent to us is passed on, then we stop too
            // (a process manager's `kill -TSTP` stops the whole job). Never
            // as PID 1: it must keep reaping.
            if is_job_stop(signal) && !is_pid1 {
                let also_stop = forward_job_stop(child, policy, signal, &mut grace_deadline);
                suspend_with_child(child, signal, also_stop);
                continued_with_us = true;
            } else {
                forward(child, policy, signal, &mut grace_deadline);
            }
        }
        let now = Instant::now();
        if held_term.is_some_and(|at| at <= now) {
            held_term = None;
            forward(child, policy, libc::SIGTERM, &mut grace_deadline);
        }
        if grace_deadline.is_some_and(|at| at <= now) {
            grace_deadline = None;
            tracing::warn!(
                pid = child.pid.as_raw(),
                grace_period_s = policy.grace_period.map(|d| d.as_secs_f64()).unwrap_or(0.0),
                "the child is still running after the grace period; sending SIGKILL to its process group"
            );
            let _ = kill(
                Pid::from_raw(-child.pgid.as_raw()),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = kill(child.pid, nix::sys::signal::Signal::SIGKILL);
        }
    };
    match exit {
        ChildExit::Code(code) => tracing::info!(
            pid = child.pid.as_raw(),
            exit_code = code,
            "the child exited"
        ),
        ChildExit::Signal(signal) => tracing::info!(
            pid = child.pid.as_raw(),
            signal = signal_name(signal),
            exit_code = exit.status_code(),
            "the child was killed by a signal"
        ),
    }
    enter_phase(Phase::Shutdown);
    let stragglers = shutdown::stop_stragglers(inbox, policy.kill_timeout, child.pgid, is_pid1);
    if !is_pid1 {
        spawn::restore_terminal(child.previous_foreground);
    }
    if let Some(watch) = oom.as_mut() {
        watch.on_notification();
    }
    log_exit_summary(&ExitSummary {
        command: &command,
        exit,
        ran_for: started.elapsed(),
        oom: oom.as_ref(),
        orphans_reaped: orphans_reaped + stragglers.reaped,
        stragglers,
    });
    map_exit_code(exit.status_code(), &policy.exit_code_map)
}

/// Each SIGKILL death that an OOM kill accounts for, by pid and name.
pub(super) fn name_oom_victims(watch: &mut oom::OomWatch, killed: &[reap::Killed]) {
    for victim in killed {
        if !watch.claim_sigkill_death() {
            continue;
        }
        // comm holds 15 bytes: a name that fills them was likely cut.
        let name = if victim.name.len() >= 15 {
            format!("{}…", victim.name)
        } else {
            victim.name.clone()
        };
        let role = if victim.watched {
            "the main process, "
        } else {
            ""
        };
        tracing::error!(
            pid = victim.pid.as_raw(),
            name = name.as_str(),
            "{role}pid {} ({name}) was killed by the OOM killer",
            victim.pid
        );
    }
}

struct ExitSummary<'a> {
    command: &'a str,
    exit: ChildExit,
    ran_for: Duration,
    oom: Option<&'a oom::OomWatch>,
    orphans_reaped: usize,
    stragglers: shutdown::Stragglers,
}

/// One line when the main child has ended: how, after how long, and what
/// else died or was stopped on the way (fields for the JSON format too).
fn log_exit_summary(s: &ExitSummary<'_>) {
    let how = match s.exit {
        ChildExit::Code(code) => format!("exited with {code}"),
        ChildExit::Signal(signal) => format!(
            "was killed by SIG{} ({})",
            signal_name(signal),
            s.exit.status_code()
        ),
    };
    // Both since this entrypoint armed the watch: an earlier run in the
    // same cgroup is not this one's.
    let oom_kills = s.oom.map_or(0, |w| w.kills_seen());
    let peak = s.oom.map_or(oom::Peak::Unknown, |w| w.peak());
    let memory = match s.oom {
        Some(w) => format!(
            "{oom_kills} OOM kill(s) (limit {}, {})",
            oom::human_bytes(w.limit()),
            peak.describe()
        ),
        None => "OOM kills not watched".to_string(),
    };
    tracing::info!(
        command = s.command,
        exit_code = s.exit.status_code(),
        signal = match s.exit {
            ChildExit::Signal(signal) => signal_name(signal),
            ChildExit::Code(_) => String::new(),
        },
        runtime_s = (s.ran_for.as_secs_f64() * 10.0).round() / 10.0,
        oom_kills,
        memory_limit = s.oom.map_or(0, |w| w.limit()),
        memory_peak = peak.this_run(),
        cgroup_peak_before_run = match peak {
            oom::Peak::CgroupBefore(bytes) => bytes,
            _ => 0,
        },
        orphans_reaped = s.orphans_reaped,
        stragglers_term = s.stragglers.termed,
        stragglers_kill = s.stragglers.killed,
        "summary: {} {how} after {:.1} s; {memory}; {} orphan(s) reaped; stragglers: {} sent TERM, {} sent KILL",
        s.command,
        s.ran_for.as_secs_f64(),
        s.orphans_reaped,
        s.stragglers.termed,
        s.stragglers.killed
    );
}

/// Job control, not as PID 1: a TSTP, TTIN or TTOU sent to the entrypoint,
/// passed on the way the child would get it without us; returns whom to
/// SIGSTOP with us (a pid, or a negative process group).
///
/// A child in a session of its own is in an orphaned process group, where
/// the kernel ignores a default TSTP/TTIN/TTOU. So, unless SIGNAL_MAP has an
/// entry for the signal (then that is what the child gets, and nothing
/// more): with scope `group` the child's group gets SIGSTOP instead (as
/// dumb-init does in its setsid mode); with scope `child` the child gets the
/// signal, and SIGSTOP too only when it neither catches nor ignores it (as
/// the kernel would stop it in a group that is not orphaned). A child on our
/// terminal is not orphaned: it gets the signal as it is.
fn forward_job_stop(
    child: &Spawned,
    policy: &Policy,
    signal: i32,
    grace_deadline: &mut Option<Instant>,
) -> Option<i32> {
    let orphaned = child.previous_foreground.is_none();
    let mapped = policy.signal_map.iter().any(|(from, _)| *from == signal);
    if !orphaned || mapped {
        forward(child, policy, signal, grace_deadline);
        return None;
    }
    match policy.scope {
        SignalScope::Group => {
            tracing::debug!(
                received = signal_name(signal),
                "passed on as SIGSTOP to the child's group (in a session of its own a default TSTP is ignored)"
            );
            Some(-child.pgid.as_raw())
        }
        SignalScope::Child => {
            forward(child, policy, signal, grace_deadline);
            (!catches_or_ignores(child.pid, signal)).then_some(child.pid.as_raw())
        }
    }
}

/// From /proc/PID/status: the process has a handler for `signal`, or
/// ignores it. False when it cannot be read.
fn catches_or_ignores(pid: Pid, signal: i32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    let bit = 1u64 << (signal - 1);
    status.lines().any(|line| {
        let mask = line
            .strip_prefix("SigCgt:")
            .or_else(|| line.strip_prefix("SigIgn:"));
        mask.and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
            .is_some_and(|m| m & bit != 0)
    })
}

/// Stops the entrypoint itself (the terminal back to our group first, when
/// the child had it; `also_stop` SIGSTOPped first), and once it is
/// continued (a shell's `fg`, a `kill -CONT`), hands the terminal back and
/// continues the child's group.
fn suspend_with_child(child: &Spawned, stop: i32, also_stop: Option<i32>) {
    tracing::debug!(signal = signal_name(stop), "job-control stop; stopping too");
    spawn::restore_terminal(child.previous_foreground);
    if let Some(target) = also_stop {
        let _ = kill(Pid::from_raw(target), nix::sys::signal::Signal::SIGSTOP);
    }
    // Delivered before kill() returns; we run on only once continued.
    let _ = kill(getpid(), nix::sys::signal::Signal::SIGSTOP);
    if child.previous_foreground.is_some() {
        let _ = nix::unistd::tcsetpgrp(std::io::stdin(), child.pgid);
    }
    let _ = kill(
        Pid::from_raw(-child.pgid.as_raw()),
        nix::sys::signal::Signal::SIGCONT,
    );
    tracing::debug!("continued; so is the child");
}

fn map_exit_code(status: i32, map: &[(i32, i32)]) -> i32 {
    match map.iter().find(|(from, _)| *from == status) {
        Some(&(_, to)) => {
            tracing::info!(from = status, to, "exit code rewritten by EXIT_CODE_MAP");
            to
        }
        None => status,
    }
}

/// Forwards one received signal after SIGNAL_MAP, to the group or the child.
fn forward(child: &Spawned, policy: &Policy, received: i32, grace_deadline: &mut Option<Instant>) {
    if !is_forwardable(received) {
        return;
    }
    let signal = match policy.signal_map.iter().find(|(from, _)| *from == received) {
        Some((_, None)) => {
            tracing::info!(
                signal = signal_name(received),
                "signal dropped by SIGNAL_MAP"
            );
            return;
        }
        Some((_, Some(to))) => *to,
        None => received,
    };
    let (target, scope) = match policy.scope {
        SignalScope::Group => (-child.pgid.as_raw(), "group"),
        SignalScope::Child => (child.pid.as_raw(), "child"),
    };
    // SAFETY: kill(2) with a plain pid and signal number; no memory involved.
    // (libc, not nix: real-time signals have no nix::Signal.)
    let result = unsafe { libc::kill(target, signal) };
    let level_info = matches!(
        received,
        libc::SIGTERM | libc::SIGINT | libc::SIGQUIT | libc::SIGHUP
    );
    if level_info {
        tracing::info!(
            signal = signal_name(signal),
            received = signal_name(received),
            scope,
            "forwarded signal"
        );
    } else {
        tracing::debug!(
            signal = signal_name(signal),
            received = signal_name(received),
            scope,
            "forwarded signal"
        );
    }
    if result != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "forwarding failed (the child may be exiting)");
    }
    if matches!(received, libc::SIGTERM | libc::SIGINT | libc::SIGQUIT) && grace_deadline.is_none()
    {
        if let Some(grace) = policy.grace_period {
            *grace_deadline = Some(Instant::now() + grace);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_code_map_applies_first_match() {
        assert_eq!(map_exit_code(143, &[(143, 0), (143, 1)]), 0);
        assert_eq!(map_exit_code(1, &[(143, 0)]), 1);
    }

    #[test]
    fn terminating_signals_end_startup() {
        assert_eq!(startup_signal_verdict(vec![libc::SIGUSR1]), Ok(()));
        assert_eq!(
            startup_signal_verdict(vec![libc::SIGTERM]).map_err(|f| f.exit_code),
            Err(143)
        );
    }
}
