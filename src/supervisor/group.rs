//! Several components in one container, in the same one PID-1 loop: each in
//! a session of its own, its output prefixed line by line, restarted with
//! back-off within a budget, and all stopped together under one deadline.
//! The api-server starts first; the others once it answers. It never
//! blocks on a pipe and never leaves a component running when it exits.

use std::ffi::OsString;
use std::io::{IsTerminal, Read};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::PathBuf;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::reap::{reap_all, reap_all_noting_kills, ChildExit};
use super::spawn::{spawn, SpawnRequest, Spawned};
use super::{shutdown, Policy};
use crate::jitter::Jitter;
use crate::logging::{enter_phase, write_stderr_raw, Phase};
use crate::signals::{is_forwardable, signal_name, Received, SignalInbox, SignalScope};

/// A line longer than this is passed on in pieces, each with the prefix.
const MAX_LINE: usize = 16 * 1024;
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Up this long, a component's restart count and back-off start again.
const STABLE_AFTER: Duration = Duration::from_secs(300);
/// How often the api-server's health is asked while the others wait.
const READY_EVERY: Duration = Duration::from_millis(500);

/// One component to run.
pub struct Component {
    pub name: String,
    pub program: PathBuf,
    pub argv0: OsString,
    pub args: Vec<OsString>,
    pub env: Vec<(OsString, OsString)>,
    pub policy: Policy,
    /// The api-server's readiness probe (within the given time): the
    /// others start once it answers. None for the other components. It
    /// runs on a thread of its own, never in this loop.
    pub ready: Option<Arc<dyn Fn(Duration) -> bool + Send + Sync>>,
}

/// How the group is run, from the settings.
pub struct GroupPolicy {
    pub restart: bool,
    pub restart_limit: u32,
    pub ready_timeout: Duration,
    /// TERM to KILL, for all components together.
    pub stop_timeout: Duration,
    pub kill_timeout: Duration,
}

struct Running {
    spawned: Spawned,
    since: Instant,
    out: LineBuffer,
    err: LineBuffer,
}

struct Slot {
    component: Component,
    running: Option<Running>,
    /// When to (re)start it: None while running, or never again.
    start_at: Option<Instant>,
    restarts_in_a_row: u32,
    restarts: u32,
    last_exit: Option<ChildExit>,
    /// The process group of its last run: what it left behind (a killed
    /// scheduler's executor processes) gets TERM at once and KILL before
    /// the restart, so that two generations never run side by side.
    leftover: Option<Pid>,
}

/// Runs every component until a stop signal or a spent restart budget;
/// returns the entrypoint's exit code.
pub fn supervise_group(inbox: &SignalInbox, prepared: super::Group) -> i32 {
    let super::Group {
        components,
        policy: group,
        is_pid1,
        mut oom,
        start_dir,
    } = prepared;
    let group = &group;
    enter_phase(Phase::Supervise);
    let width = components.iter().map(|c| c.name.len()).max().unwrap_or(0);
    let colour = use_colour();
    let now = Instant::now();
    let first_waits = components.first().is_some_and(|c| c.ready.is_some());
    // The api-server comes first and goes last.
    let api_server = first_waits.then_some(0);
    let mut slots: Vec<Slot> = components
        .into_iter()
        .enumerate()
        .map(|(i, component)| Slot {
            component,
            running: None,
            // Only the api-server at once when there is one; the rest once
            // it answers (or READY_TIMEOUT passes).
            start_at: (i == 0 || !first_waits).then_some(now),
            restarts_in_a_row: 0,
            restarts: 0,
            last_exit: None,
            leftover: None,
        })
        .collect();
    let ready_deadline = now + group.ready_timeout;
    let mut next_ready_probe = first_waits.then_some(now + READY_EVERY);
    let mut ready_probe: Option<ReadyProbe> = None;
    let mut jitter = Jitter::new();
    let mut stop: Option<Stop> = None;
    let mut trim_at: Option<Instant> = None;
    let mut outcome: Option<i32> = None;
    // A process group of ours, for the last sweep as a subreaper.
    let mut some_pgid: Option<Pid> = None;
    let prefixes: Vec<String> = slots
        .iter()
        .enumerate()
        .map(|(i, s)| prefix(&s.component.name, width, colour, i))
        .collect();

    loop {
        // Reap: one SIGCHLD may stand for several exits.
        let pids: Vec<Pid> = slots
            .iter()
            .filter_map(|s| s.running.as_ref().map(|r| r.spawned.pid))
            .collect();
        let reaped = match oom {
            Some(_) => reap_all_noting_kills(&pids),
            None => reap_all(&pids),
        };
        if let Some(watch) = oom.as_mut() {
            super::name_oom_victims(watch, &reaped.killed);
        }
        for (pid, exit) in reaped.watched {
            let Some(index) = slots
                .iter()
                .position(|s| s.running.as_ref().is_some_and(|r| r.spawned.pid == pid))
            else {
                continue;
            };
            let slot = &mut slots[index];
            if let Some(mut running) = slot.running.take() {
                // What it wrote just before it exited is still in the pipes.
                drain(&mut running, &prefixes[index]);
                running.out.flush_rest(&prefixes[index], false);
                running.err.flush_rest(&prefixes[index], true);
                let up = running.since.elapsed();
                let pgid = running.spawned.pgid;
                let _ = kill(Pid::from_raw(-pgid.as_raw()), Signal::SIGTERM);
                slot.leftover = Some(pgid);
                slot.last_exit = Some(exit);
                if stop.is_some() {
                    tracing::info!(
                        component = slot.component.name.as_str(),
                        exit_code = exit.status_code(),
                        "stopped"
                    );
                    continue;
                }
                if up >= STABLE_AFTER {
                    slot.restarts_in_a_row = 0;
                }
                let name = slot.component.name.as_str();
                let spent = slot.restarts_in_a_row >= group.restart_limit;
                if !group.restart || spent {
                    tracing::error!(
                        component = name,
                        exit_code = exit.status_code(),
                        restarts = slot.restarts,
                        "{name} {}; stopping every component ({})",
                        describe(exit),
                        if group.restart {
                            "its restart budget is spent"
                        } else {
                            "RESTART=never"
                        }
                    );
                    outcome = Some(exit.status_code());
                    stop = Some(Stop::begin(&mut slots, group, false, api_server));
                    break;
                }
                let backoff = restart_delay(slot.restarts_in_a_row, jitter.factor());
                slot.restarts_in_a_row += 1;
                slot.restarts += 1;
                slot.start_at = Some(Instant::now() + backoff);
                tracing::warn!(
                    component = name,
                    exit_code = exit.status_code(),
                    restart_in_s = (backoff.as_secs_f64() * 10.0).round() / 10.0,
                    restart = slot.restarts_in_a_row,
                    of = group.restart_limit,
                    "{name} {} after {:.1} s; restarting it",
                    describe(exit),
                    up.as_secs_f64()
                );
            }
        }
        if reaped.others > 0 {
            tracing::debug!(count = reaped.others, "reaped orphaned processes");
        }
        if let Some(s) = stop.as_mut() {
            s.release_held(&slots);
        }
        if stop.is_some() && slots.iter().all(|s| s.running.is_none()) {
            break;
        }

        // Start what is due.
        let now = Instant::now();
        if stop.is_none() {
            let mut failed = false;
            for slot in slots.iter_mut() {
                if slot.running.is_none() && slot.start_at.is_some_and(|at| at <= now) {
                    slot.start_at = None;
                    if let Some(pgid) = slot.leftover.take() {
                        let _ = kill(Pid::from_raw(-pgid.as_raw()), Signal::SIGKILL);
                    }
                    match start(slot, start_dir.as_deref()) {
                        Ok(running) => {
                            tracing::info!(
                                component = slot.component.name.as_str(),
                                pid = running.spawned.pid.as_raw(),
                                "started {}",
                                slot.component.name
                            );
                            some_pgid = Some(running.spawned.pgid);
                            slot.running = Some(running);
                            trim_at = Some(Instant::now() + super::TRIM_AFTER);
                        }
                        Err(failure) => {
                            tracing::error!(
                                component = slot.component.name.as_str(),
                                "{}; stopping every component",
                                failure.message
                            );
                            outcome = Some(failure.exit_code);
                            failed = true;
                            break;
                        }
                    }
                }
            }
            if failed {
                stop = Some(Stop::begin(&mut slots, group, false, api_server));
                continue;
            }
        }

        // The api-server's readiness gates the others. Its probe runs on
        // a thread (an endpoint that drips must not hold this loop: it
        // reaps and answers signals); its answer wakes the loop.
        let answer = ready_probe.as_ref().and_then(ReadyProbe::answer);
        if answer.is_some() {
            ready_probe = None;
            if answer == Some(false) {
                next_ready_probe = Some(Instant::now() + READY_EVERY);
            }
        }
        if ready_probe.is_none() && next_ready_probe.is_some_and(|at| at <= now) {
            let answered = answer == Some(true);
            let timed_out = Instant::now() >= ready_deadline;
            if answered || timed_out {
                if answered {
                    tracing::info!("the api-server answers; starting the other components");
                } else {
                    tracing::warn!(
                        timeout_s = group.ready_timeout.as_secs_f64(),
                        "the api-server did not answer within READY_TIMEOUT; starting the other components anyway"
                    );
                }
                next_ready_probe = None;
                let now = Instant::now();
                for slot in slots.iter_mut().skip(1) {
                    if slot.running.is_none() && slot.start_at.is_none() && slot.last_exit.is_none()
                    {
                        slot.start_at = Some(now);
                    }
                }
                continue; // start them at once
            }
            let probe = slots[0]
                .component
                .ready
                .clone()
                .filter(|_| slots[0].running.is_some() && answer.is_none());
            match probe {
                Some(probe) => match ReadyProbe::start(probe) {
                    Ok(started) => ready_probe = Some(started),
                    Err(e) => tracing::debug!(error = %e, "cannot start the readiness probe"),
                },
                None => next_ready_probe = Some(Instant::now() + READY_EVERY),
            }
        }

        // Start-up's pages go once the components run (see `trim`): right
        // before the wait, so that nothing runs between the two.
        // Never while a probe thread lives: the seal's invariant (alloc.rs).
        if ready_probe.is_none() && trim_at.is_some_and(|at| at <= Instant::now()) {
            trim_at = None;
            crate::alloc::seal();
            super::trim::release_startup_pages(inbox);
        }
        // Sleep until a signal, output, or the next timer.
        let deadline = slots
            .iter()
            .filter(|s| s.running.is_none())
            .filter_map(|s| s.start_at)
            .chain(next_ready_probe.filter(|_| ready_probe.is_none()))
            .chain(stop.as_ref().map(Stop::next_deadline))
            .chain(trim_at.filter(|_| ready_probe.is_none()))
            .min();
        let mut fds: Vec<(usize, bool, BorrowedFd<'_>)> = Vec::new();
        for (index, slot) in slots.iter().enumerate() {
            if let Some(running) = &slot.running {
                if let Some(pipe) = &running.spawned.stdout {
                    fds.push((index, false, pipe.as_fd()));
                }
                if let Some(pipe) = &running.spawned.stderr {
                    fds.push((index, true, pipe.as_fd()));
                }
            }
        }
        let mut borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(|(_, _, fd)| *fd).collect();
        // The OOM watch's fd, then the probe's: either wakes the same loop.
        let oom_fd = oom.as_ref().and_then(|w| w.fd());
        let oom_index = oom_fd.map(|_| borrowed.len());
        borrowed.extend(oom_fd);
        borrowed.extend(ready_probe.as_ref().map(|p| p.wake.as_fd()));
        let (signals, readable) = inbox.wait_many(deadline, &borrowed);
        let oom_woke = oom_index.is_some_and(|i| readable.contains(&i));
        let readable: Vec<(usize, bool)> = readable
            .iter()
            .filter_map(|&i| fds.get(i).map(|f| (f.0, f.1)))
            .collect();
        drop(borrowed);
        drop(fds);
        if let Some(watch) = oom.as_mut().filter(|_| oom_woke) {
            watch.on_notification();
        }
        for (index, is_err) in readable {
            if let Some(running) = slots[index].running.as_mut() {
                let _ = pass_output(running, is_err, &prefixes[index]);
            }
        }
        for Received { signal, by_kernel } in signals {
            if signal == libc::SIGCHLD
                || (by_kernel && matches!(signal, libc::SIGHUP | libc::SIGCONT))
            {
                continue;
            }
            if matches!(signal, libc::SIGTERM | libc::SIGINT | libc::SIGQUIT) {
                match &stop {
                    None => {
                        tracing::info!(signal = signal_name(signal), "stopping every component");
                        stop = Some(Stop::begin(&mut slots, group, false, api_server));
                    }
                    Some(s) if !s.killed => {
                        tracing::warn!(
                            signal = signal_name(signal),
                            "a second stop signal: SIGKILL to every component"
                        );
                        stop = Some(Stop::begin(&mut slots, group, true, api_server));
                    }
                    Some(_) => {}
                }
                continue;
            }
            for slot in &slots {
                if let Some(running) = &slot.running {
                    forward(&running.spawned, &slot.component.policy, signal);
                }
            }
        }
        if let Some(s) = &stop {
            // A component in uninterruptible sleep (or a frozen cgroup)
            // outlives its SIGKILL: wait for it as long as the single-child
            // path does, then go on without it rather than spin.
            if s.killed && Instant::now() >= s.give_up_at {
                tracing::error!(
                    after_kill_s = shutdown::AFTER_KILL_WAIT.as_secs_f64(),
                    "some components did not exit even after SIGKILL; exiting anyway"
                );
                break;
            }
            if !s.killed && Instant::now() >= s.kill_at {
                tracing::warn!(
                    timeout_s = group.stop_timeout.as_secs_f64(),
                    "components still running at the stop deadline; SIGKILL"
                );
                stop = Some(Stop::begin(&mut slots, group, true, api_server));
            }
        }
    }

    enter_phase(Phase::Shutdown);
    let clean = stop.as_ref().is_some_and(|s| !s.killed);
    let stragglers = match some_pgid {
        Some(pgid) => shutdown::stop_stragglers(inbox, group.kill_timeout, pgid, is_pid1),
        None => shutdown::Stragglers::default(),
    };
    let code = match outcome {
        Some(code) => code,
        None if clean => 0,
        None => 128 + libc::SIGKILL,
    };
    let restarts: u32 = slots.iter().map(|s| s.restarts).sum();
    if let Some(watch) = oom.as_mut() {
        watch.on_notification();
    }
    let oom_kills = oom.as_ref().map_or(0, |w| w.kills_seen());
    let memory = match &oom {
        Some(w) if oom_kills > 0 => format!(
            "; {oom_kills} OOM kill(s) (limit {})",
            super::oom::human_bytes(w.limit())
        ),
        _ => String::new(),
    };
    tracing::info!(
        components = slots.len(),
        restarts,
        exit_code = code,
        oom_kills,
        stragglers_term = stragglers.termed,
        stragglers_kill = stragglers.killed,
        "summary: {} components, {restarts} restart(s){memory}; exit {code}",
        slots.len()
    );
    code
}

/// How long one readiness probe of the api-server may take.
const READY_PROBE_BUDGET: Duration = Duration::from_millis(400);

/// One readiness probe in flight, on a thread of its own: its answer
/// arrives on a channel, and a byte on `wake` wakes the loop for it.
struct ReadyProbe {
    answer: mpsc::Receiver<bool>,
    wake: std::os::fd::OwnedFd,
}

impl ReadyProbe {
    fn start(probe: Arc<dyn Fn(Duration) -> bool + Send + Sync>) -> std::io::Result<ReadyProbe> {
        let (wake, wake_write) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)?;
        let (sender, answer) = mpsc::channel();
        std::thread::Builder::new()
            .name("ready-probe".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                let _ = sender.send(probe(READY_PROBE_BUDGET));
                let _ = nix::unistd::write(wake_write.as_fd(), &[1]);
            })?;
        Ok(ReadyProbe { answer, wake })
    }

    /// The answer once the probe is done (a probe that died is "no").
    fn answer(&self) -> Option<bool> {
        match self.answer.try_recv() {
            Ok(answer) => Some(answer),
            Err(mpsc::TryRecvError::Disconnected) => Some(false),
            Err(mpsc::TryRecvError::Empty) => None,
        }
    }
}

/// The stop: every component got TERM (or KILL), and when to KILL.
struct Stop {
    kill_at: Instant,
    killed: bool,
    /// Once killed: when to stop waiting for components that do not die.
    give_up_at: Instant,
    /// The api-server, held back until the others have stopped: a Celery
    /// worker finishing its task (and the triggerer and scheduler handing
    /// theirs back) still report through its execution API.
    held: Option<usize>,
}

impl Stop {
    /// TERM (each as its own policy says: a Celery worker alone, for its warm
    /// shutdown) or KILL to every running component, in parallel; the
    /// api-server (`last`) gets its TERM once the others are gone, under
    /// the same deadline.
    fn begin(slots: &mut [Slot], group: &GroupPolicy, kill_now: bool, last: Option<usize>) -> Stop {
        let held =
            last.filter(|&i| !kill_now && slots[i].running.is_some() && others_run(slots, i));
        for (index, slot) in slots.iter_mut().enumerate() {
            slot.start_at = None;
            if let Some(running) = &slot.running {
                if kill_now {
                    let _ = kill(
                        Pid::from_raw(-running.spawned.pgid.as_raw()),
                        Signal::SIGKILL,
                    );
                    let _ = kill(running.spawned.pid, Signal::SIGKILL);
                } else if held != Some(index) {
                    forward(&running.spawned, &slot.component.policy, libc::SIGTERM);
                }
            }
        }
        let now = Instant::now();
        Stop {
            kill_at: now + group.stop_timeout,
            killed: kill_now,
            give_up_at: now + shutdown::AFTER_KILL_WAIT,
            held,
        }
    }

    /// When the loop must look again: the KILL, or once it was sent, the
    /// end of the wait for the killed (never a time already past, which
    /// would make the loop spin).
    fn next_deadline(&self) -> Instant {
        if self.killed {
            self.give_up_at
        } else {
            self.kill_at
        }
    }

    /// The held api-server gets its TERM once every other component is gone.
    fn release_held(&mut self, slots: &[Slot]) {
        let Some(i) = self.held else {
            return;
        };
        if others_run(slots, i) {
            return;
        }
        self.held = None;
        if let Some(running) = &slots[i].running {
            tracing::info!("the other components have stopped; stopping the api-server");
            forward(&running.spawned, &slots[i].component.policy, libc::SIGTERM);
        }
    }
}

/// True while a component other than slot `i` runs.
fn others_run(slots: &[Slot], i: usize) -> bool {
    slots
        .iter()
        .enumerate()
        .any(|(j, s)| j != i && s.running.is_some())
}

fn start(slot: &Slot, dir: Option<&std::path::Path>) -> Result<Running, crate::error::Failure> {
    let c = &slot.component;
    let spawned = spawn(&SpawnRequest {
        program: &c.program,
        argv0: &c.argv0,
        args: &c.args,
        env: &c.env,
        capture_stdout: true,
        capture_stderr: true,
        take_terminal: false,
        dir,
    })?;
    for pipe in [
        spawned.stdout.as_ref().map(|p| p.as_fd()),
        spawned.stderr.as_ref().map(|p| p.as_fd()),
    ]
    .into_iter()
    .flatten()
    {
        set_nonblocking(pipe);
    }
    Ok(Running {
        spawned,
        since: Instant::now(),
        out: LineBuffer::default(),
        err: LineBuffer::default(),
    })
}

fn set_nonblocking(fd: BorrowedFd<'_>) {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    use std::os::fd::AsRawFd;
    if let Ok(flags) = fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL) {
        let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
        let _ = fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags));
    }
}

/// Reads what a component wrote (without blocking) and passes on every
/// complete line; EOF closes the pipe. True when there may be more to read.
fn pass_output(running: &mut Running, is_err: bool, prefix: &str) -> bool {
    let (pipe_open, buffer) = if is_err {
        (running.spawned.stderr.is_some(), &mut running.err)
    } else {
        (running.spawned.stdout.is_some(), &mut running.out)
    };
    if !pipe_open {
        return false;
    }
    let mut chunk = [0u8; 8192];
    let mut closed = false;
    let mut more = true;
    for _ in 0..16 {
        let read = if is_err {
            running.spawned.stderr.as_mut().map(|p| p.read(&mut chunk))
        } else {
            running.spawned.stdout.as_mut().map(|p| p.read(&mut chunk))
        };
        match read {
            Some(Ok(0)) | None => {
                closed = true;
                break;
            }
            Some(Ok(n)) => buffer.push(&chunk[..n], prefix, is_err),
            Some(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Some(Err(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                more = false;
                break;
            }
            Some(Err(_)) => {
                closed = true;
                break;
            }
        }
    }
    if closed {
        buffer.flush_rest(prefix, is_err);
        if is_err {
            running.spawned.stderr = None;
        } else {
            running.spawned.stdout = None;
        }
    }
    more && !closed
}

/// About 1 s before the first restart in a row, doubling each time, never
/// above 60 s; ×0.5 to ×1.5 for the jitter's factor in [0.5, 1.0).
fn restart_delay(in_a_row: u32, factor: f64) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1 << in_a_row.min(6))
        .mul_f64((2.0 * factor - 0.5).clamp(0.5, 1.5))
        .min(MAX_BACKOFF)
}

/// Everything already in a component's pipes (a grandchild may keep them
/// open, so not up to EOF: until they would block, within a bound).
fn drain(running: &mut Running, prefix: &str) {
    for is_err in [false, true] {
        for _ in 0..64 {
            let open = if is_err {
                running.spawned.stderr.is_some()
            } else {
                running.spawned.stdout.is_some()
            };
            if !open || !pass_output(running, is_err, prefix) {
                break;
            }
        }
    }
}

/// A component's output between two newlines.
#[derive(Default)]
struct LineBuffer {
    partial: Vec<u8>,
    /// The last piece was passed on because it filled MAX_LINE: a newline
    /// right after it ends that line, not an empty one.
    cut: bool,
}

impl LineBuffer {
    /// Passes on every complete line, and every MAX_LINE bytes of a longer
    /// one, however the bytes were split into reads; keeps the rest.
    fn push(&mut self, bytes: &[u8], prefix: &str, is_err: bool) {
        self.split(bytes, |line| emit(prefix, line, is_err));
    }

    fn split(&mut self, mut bytes: &[u8], mut line_out: impl FnMut(&[u8])) {
        while !bytes.is_empty() {
            // Invariant: the partial line is shorter than MAX_LINE.
            let room = MAX_LINE - self.partial.len();
            match bytes.iter().position(|b| *b == b'\n') {
                Some(newline) if newline <= room => {
                    self.partial.extend_from_slice(&bytes[..newline]);
                    if !(self.cut && self.partial.is_empty()) {
                        line_out(&self.partial);
                    }
                    self.cut = false;
                    self.partial.clear();
                    bytes = &bytes[newline + 1..];
                }
                _ => {
                    let take = bytes.len().min(room);
                    self.partial.extend_from_slice(&bytes[..take]);
                    bytes = &bytes[take..];
                    self.cut = false;
                    if self.partial.len() >= MAX_LINE {
                        line_out(&self.partial);
                        self.partial.clear();
                        self.cut = true;
                    }
                }
            }
        }
    }

    /// At EOF or exit: what is left, as a line of its own.
    fn flush_rest(&mut self, prefix: &str, is_err: bool) {
        if !self.partial.is_empty() {
            emit(prefix, &self.partial, is_err);
            self.partial.clear();
        }
    }
}

/// One line, prefixed, in one write: lines of two components never mix.
fn emit(prefix: &str, line: &[u8], is_err: bool) {
    let mut out = Vec::with_capacity(prefix.len() + line.len() + 1);
    out.extend_from_slice(prefix.as_bytes());
    out.extend_from_slice(line.strip_suffix(b"\r").unwrap_or(line));
    out.push(b'\n');
    if is_err {
        write_stderr_raw(&out);
    } else {
        write_stdout_raw(&out);
    }
}

fn write_stdout_raw(mut bytes: &[u8]) {
    while !bytes.is_empty() {
        match nix::unistd::write(std::io::stdout(), bytes) {
            Ok(0) => return,
            Ok(n) => bytes = &bytes[n..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(nix::errno::Errno::EAGAIN) => std::thread::sleep(Duration::from_millis(1)),
            Err(_) => return,
        }
    }
}

const COLOURS: [&str; 6] = ["36", "33", "32", "35", "34", "31"];

/// `name       | `, padded to the longest name, coloured on a terminal.
fn prefix(name: &str, width: usize, colour: bool, index: usize) -> String {
    let padded = format!("{name:<width$} | ");
    if colour {
        format!("\x1b[{}m{padded}\x1b[0m", COLOURS[index % COLOURS.len()])
    } else {
        padded
    }
}

/// Colour only on a terminal, unless NO_COLOR says never or FORCE_COLOR always.
fn use_colour() -> bool {
    let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    if set("NO_COLOR") {
        return false;
    }
    if std::env::var_os("FORCE_COLOR").is_some_and(|v| !v.is_empty() && v != "0") {
        return true;
    }
    std::io::stdout().is_terminal()
}

fn describe(exit: ChildExit) -> String {
    match exit {
        ChildExit::Code(code) => format!("exited with {code}"),
        ChildExit::Signal(signal) => format!(
            "was killed by SIG{} ({})",
            signal_name(signal),
            exit.status_code()
        ),
    }
}

/// A signal to one component, after its SIGNAL_MAP, to its group or itself.
fn forward(spawned: &Spawned, policy: &Policy, received: i32) {
    if !is_forwardable(received) {
        return;
    }
    let signal = match policy.signal_map.iter().find(|(from, _)| *from == received) {
        Some((_, None)) => return,
        Some((_, Some(to))) => *to,
        None => received,
    };
    let target = match policy.scope {
        SignalScope::Group => -spawned.pgid.as_raw(),
        SignalScope::Child => spawned.pid.as_raw(),
    };
    // SAFETY: kill(2) with a plain pid and signal number.
    unsafe { libc::kill(target, signal) };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lines `input` gives, fed in reads of `step` bytes.
    fn lines(input: &[u8], step: usize) -> Vec<Vec<u8>> {
        let mut buffer = LineBuffer::default();
        let mut out = Vec::new();
        for chunk in input.chunks(step) {
            buffer.split(chunk, |l| out.push(l.to_vec()));
        }
        if !buffer.partial.is_empty() {
            out.push(std::mem::take(&mut buffer.partial));
        }
        out
    }

    #[test]
    fn restarts_wait_about_a_second_doubling_to_sixty() {
        // Jitter::factor is in [0.5, 1.0): 0.75 is the middle.
        let secs = |n, f| restart_delay(n, f).as_secs_f64();
        assert_eq!((secs(0, 0.5), secs(0, 0.75)), (0.5, 1.0));
        assert!(secs(0, 0.9995) < 1.5);
        assert_eq!(
            (secs(1, 0.75), secs(2, 0.75), secs(5, 0.75)),
            (2.0, 4.0, 32.0)
        );
        for n in [6, 7, 50, u32::MAX] {
            assert!((32.0..=60.0).contains(&secs(n, 0.5)), "{n}");
            assert_eq!(secs(n, 0.9995), 60.0, "{n}");
        }
        let mut jitter = Jitter::new();
        for _ in 0..1000 {
            let d = secs(0, jitter.factor());
            assert!((0.5..1.5).contains(&d), "{d}");
        }
    }

    #[test]
    fn lines_are_the_same_however_the_reads_split_them() {
        let mut input = b"one\ntwo and a half\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 40_000));
        input.extend(b"\nshort\npartial");
        for step in [
            1, 7, 4096, 8192, 16_383, 16_384, 16_385, 23_617, 40_000, 100_000,
        ] {
            let got = lines(&input, step);
            let sizes: Vec<usize> = got.iter().map(Vec::len).collect();
            assert_eq!(
                sizes,
                [3, 14, 16_384, 16_384, 7_232, 5, 7],
                "reads of {step}"
            );
            assert_eq!(got[0], b"one");
            assert_eq!(got[6], b"partial");
        }
    }

    #[test]
    fn a_line_of_exactly_max_line_is_one_line_and_an_empty_line_stays() {
        let mut input = vec![b'y'; MAX_LINE];
        input.extend(b"\n\nz\n");
        for step in [1, 5000, MAX_LINE, MAX_LINE + 1] {
            let sizes: Vec<usize> = lines(&input, step).iter().map(Vec::len).collect();
            assert_eq!(sizes, [MAX_LINE, 0, 1], "reads of {step}");
        }
    }
}
