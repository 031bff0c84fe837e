//! The wait: probes each target on its own thread (DNS blocks), retrying
//! with jittered back-off from 50 ms up to WAIT_INTERVAL until the budget
//! is spent, while the main thread keeps reading signals — so TERM/INT end
//! the wait at once, also as PID 1. Owns the retry log lines and the final
//! one-line error (exit 69).

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{code, Failure};
use crate::jitter::Jitter;
use crate::signals::{is_terminating, SignalInbox};
use crate::wire::transport::REFUSED;
use crate::wire::url::{Endpoint, Target};
use crate::wire::{probe, Verdict};

/// What to wait for, and how to name it in messages.
pub struct WaitTarget {
    /// "metadata database", "Celery broker"
    pub label: &'static str,
    pub target: Target,
    /// The masked URL.
    pub shown_url: String,
    /// "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN (from container environment)"
    pub origin: String,
}

#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub total: Duration,
    pub max_interval: Duration,
}

const FIRST_INTERVAL: Duration = Duration::from_millis(50);
const REFUSED_INTERVAL: Duration = Duration::from_millis(100);
const LOG_EVERY: Duration = Duration::from_secs(1);
/// The shortest and longest time one attempt may take.
const ATTEMPT_MIN: Duration = Duration::from_millis(200);
const ATTEMPT_MAX: Duration = Duration::from_secs(3);
/// How long past the budget the wait gives up on a probe thread.
const BACKSTOP_AFTER: Duration = Duration::from_millis(450);

enum Outcome {
    Ready,
    Failed(Failure),
}

/// Waits until every target is ready. `Err` is exit 69 (unavailable) or
/// 128+N when a signal ended the wait.
pub fn wait_for_all(
    inbox: &SignalInbox,
    targets: Vec<WaitTarget>,
    budget: Budget,
) -> Result<(), Failure> {
    if targets.is_empty() {
        return Ok(());
    }
    let started = Instant::now();
    let deadline = started + budget.total;
    let (wake_read, wake_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
            .map_err(|e| Failure::internal(format!("pipe: {e}")))?;
    let wake_write = Arc::new(wake_write);
    let stop = Arc::new(AtomicBool::new(false));
    let (sender, receiver) = mpsc::channel::<(usize, Outcome)>();
    let count = targets.len();
    for (index, target) in targets.into_iter().enumerate() {
        let sender = sender.clone();
        let thread_stop = stop.clone();
        let wake = wake_write.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("probe-{index}"))
            .stack_size(256 * 1024)
            .spawn(move || {
                let outcome = retry(&target, budget, started, deadline, &thread_stop);
                let _ = sender.send((index, outcome));
                let _ = nix::unistd::write(wake.as_fd(), &[1]);
            });
        if let Err(e) = spawned {
            stop.store(true, Ordering::Relaxed);
            return Err(Failure::internal(format!(
                "cannot start a probe thread: {e}"
            )));
        }
    }
    drop(sender);
    let mut ready = 0;
    // The threads keep the budget themselves: every attempt's connect, TLS
    // and reads end by one deadline within it (an attempt started just
    // before the end may run ATTEMPT_MIN past it). This backstop covers
    // what nothing can bound, a probe stuck in the resolver.
    let backstop = deadline + BACKSTOP_AFTER;
    loop {
        for signal in inbox.wait(Some(backstop), Some(wake_read.as_fd())) {
            if is_terminating(signal) {
                stop.store(true, Ordering::Relaxed);
                return Err(Failure::interrupted(signal));
            }
            if signal == libc::SIGCHLD {
                // Not ours to reap: the supervisor does, at its next look.
                inbox.put_back(signal);
            }
        }
        drain(&wake_read);
        while let Ok((_, outcome)) = receiver.try_recv() {
            match outcome {
                Outcome::Ready => ready += 1,
                Outcome::Failed(failure) => {
                    stop.store(true, Ordering::Relaxed);
                    return Err(failure);
                }
            }
        }
        if ready == count {
            tracing::info!(elapsed_s = round(started.elapsed()), "everything is ready");
            return Ok(());
        }
        if Instant::now() >= backstop {
            stop.store(true, Ordering::Relaxed);
            return Err(Failure::new(
                code::UNAVAILABLE,
                format!(
                    "not ready after {:.1}s: a probe did not return (DNS resolver stuck?)",
                    started.elapsed().as_secs_f64()
                ),
            ));
        }
    }
}

fn drain(fd: &OwnedFd) {
    let mut buf = [0u8; 64];
    while matches!(nix::unistd::read(fd.as_raw_fd(), &mut buf), Ok(n) if n > 0) {}
}

fn round(d: Duration) -> f64 {
    (d.as_secs_f64() * 10.0).round() / 10.0
}

fn endpoint_text(target: &Target) -> String {
    if let Some(path) = target
        .sqlite_path
        .as_deref()
        .filter(|_| target.endpoints.is_empty())
    {
        return format!("file {}", path.display());
    }
    target
        .endpoints
        .iter()
        .map(|e| match e {
            Endpoint::Tcp { host, port } if host.contains(':') => format!("[{host}]:{port}"),
            Endpoint::Tcp { host, port } => format!("{host}:{port}"),
            Endpoint::Unix { path } => format!("unix socket {}", path.display()),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn retry(
    target: &WaitTarget,
    budget: Budget,
    started: Instant,
    deadline: Instant,
    stop: &AtomicBool,
) -> Outcome {
    let mut interval = FIRST_INTERVAL.min(budget.max_interval);
    let mut jitter = Jitter::new();
    let mut attempts = 0u32;
    let mut last_log: Option<Instant> = None;
    let where_ = endpoint_text(&target.target);
    loop {
        attempts += 1;
        let left = deadline.saturating_duration_since(Instant::now());
        let per_attempt = left.clamp(ATTEMPT_MIN, ATTEMPT_MAX);
        let reason = match probe(&target.target, per_attempt) {
            Verdict::Ready => {
                tracing::info!(
                    target = target.label,
                    url = target.shown_url.as_str(),
                    at = where_.as_str(),
                    attempts,
                    elapsed_s = round(started.elapsed()),
                    "{} is ready",
                    target.label
                );
                return Outcome::Ready;
            }
            Verdict::Fatal(reason) => {
                return Outcome::Failed(Failure::new(
                    code::UNAVAILABLE,
                    format!(
                        "{} refused us: {reason} — {} at {where_} from {}; gave up after {:.1}s",
                        target.label,
                        target.shown_url,
                        target.origin,
                        started.elapsed().as_secs_f64()
                    ),
                ))
            }
            Verdict::NotYet(reason) => reason,
        };
        let now = Instant::now();
        if now >= deadline {
            return Outcome::Failed(Failure::new(
                code::UNAVAILABLE,
                format!(
                    "{} not ready after {:.1}s ({attempts} attempts): {reason} — {} at {where_} from {}; raise CONNECTION_CHECK_MAX_COUNT or AIRFLOW_ENTRYPOINT_WAIT_TIMEOUT if it is just slow",
                    target.label,
                    started.elapsed().as_secs_f64(),
                    target.shown_url,
                    target.origin
                ),
            ));
        }
        if last_log.is_none_or(|at| now.duration_since(at) >= LOG_EVERY) {
            last_log = Some(now);
            tracing::info!(
                target = target.label,
                url = target.shown_url.as_str(),
                attempt = attempts,
                elapsed_s = round(started.elapsed()),
                reason = reason.as_str(),
                "waiting for the {}",
                target.label
            );
        }
        if stop.load(Ordering::Relaxed) {
            return Outcome::Failed(Failure::new(code::UNAVAILABLE, "stopped"));
        }
        // The cap exists so as not to hammer a server that is up but busy
        // (starting up, too many connections). A closed port costs it
        // nothing, so while nothing listens we look at least every 100 ms:
        // a server that starts listening is noticed within ~50 ms.
        let cap = if reason == REFUSED {
            budget.max_interval.min(REFUSED_INTERVAL)
        } else {
            budget.max_interval
        };
        let pause = interval
            .min(cap)
            .mul_f64(jitter.factor())
            .min(deadline.saturating_duration_since(now));
        std::thread::sleep(pause);
        interval = (interval * 2).min(budget.max_interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_in_range() {
        let mut j = Jitter::new();
        for _ in 0..1000 {
            let f = j.factor();
            assert!((0.5..1.0).contains(&f), "{f}");
        }
    }
}
