//! Database I/O off PID 1's own thread: one piece of work (a query, a
//! probe) runs on a thread of its own while this thread keeps reading the
//! signal inbox, so TERM/INT end the wait at once and the deadline holds
//! whatever the server does. It never talks to a server itself, and it
//! never reaps: a SIGCHLD is left in the inbox.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::error::Failure;
use crate::signals::{is_terminating, SignalInbox};

/// How long past its deadline the work may take before the wait gives up
/// on it (its own I/O ends by the deadline; this covers a stuck resolver).
const GRACE: Duration = Duration::from_millis(300);

/// Runs `work` on a thread of its own and waits for it, reading signals,
/// until `deadline` (plus a short grace). Ok(Some): its result; Ok(None):
/// it did not finish in time (the thread is left to end on its own);
/// Err: a terminating signal (128+N) or no thread could be started.
pub fn off_thread<T: Send + 'static>(
    inbox: &SignalInbox,
    deadline: Instant,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<Option<T>, Failure> {
    let (wake_read, wake_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
            .map_err(|e| Failure::internal(format!("pipe: {e}")))?;
    let (sender, receiver) = mpsc::channel::<T>();
    std::thread::Builder::new()
        .name("db-io".into())
        .stack_size(256 * 1024)
        .spawn(move || {
            let _ = sender.send(work());
            let _ = nix::unistd::write(wake_write.as_fd(), &[1]);
        })
        .map_err(|e| Failure::internal(format!("cannot start a thread: {e}")))?;
    let give_up = deadline + GRACE;
    loop {
        for signal in inbox.wait(Some(give_up), Some(wake_read.as_fd())) {
            if is_terminating(signal) {
                return Err(Failure::interrupted(signal));
            }
            if signal == libc::SIGCHLD {
                inbox.put_back(signal);
            }
        }
        drain(&wake_read);
        match receiver.try_recv() {
            Ok(value) => return Ok(Some(value)),
            Err(mpsc::TryRecvError::Disconnected) => return Ok(None),
            Err(mpsc::TryRecvError::Empty) => {}
        }
        if Instant::now() >= give_up {
            return Ok(None);
        }
    }
}

fn drain(fd: &OwnedFd) {
    let mut buf = [0u8; 16];
    while matches!(nix::unistd::read(fd.as_raw_fd(), &mut buf), Ok(n) if n > 0) {}
}
