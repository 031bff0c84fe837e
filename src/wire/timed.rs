//! A connection with one absolute deadline: connect, the TLS handshake and
//! every read and write after it end by the same instant, however slowly
//! the server drips its bytes (a per-read idle timeout would restart with
//! each byte). Used by the clients that hold a conversation (the Celery
//! mailbox over Redis or AMQP). It never retries and never sleeps.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use super::transport::{io_reason, secure, Conn, REFUSED};
use super::url::{Endpoint, Target};
use super::Verdict;

/// A socket whose read and write time limits can be set.
pub trait Limited: Read + Write + Send {
    fn limit(&self, left: Duration) -> io::Result<()>;
}

impl Limited for TcpStream {
    fn limit(&self, left: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(left))?;
        self.set_write_timeout(Some(left))
    }
}

impl Limited for UnixStream {
    fn limit(&self, left: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(left))?;
        self.set_write_timeout(Some(left))
    }
}

/// `inner` whose every read and write ends by `deadline`.
pub struct Deadlined<S> {
    inner: S,
    deadline: Instant,
}

impl<S: Limited> Deadlined<S> {
    fn left(&self) -> io::Result<()> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "deadline passed"));
        }
        // A zero timeout means "none" to the kernel: never pass one.
        self.inner.limit(left.max(Duration::from_millis(1)))
    }
}

impl<S: Limited> Read for Deadlined<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.left()?;
        self.inner.read(buf)
    }
}

impl<S: Limited> Write for Deadlined<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.left()?;
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Connects to `endpoint` of `target` (TLS when the URL asks) with every
/// step bound by `deadline`. Failures are "not yet", except TLS set-up ones.
pub fn connect(target: &Target, endpoint: &Endpoint, deadline: Instant) -> Result<Conn, Verdict> {
    let left = || {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            Err(Verdict::NotYet("timed out".into()))
        } else {
            Ok(left)
        }
    };
    let socket: Conn = match endpoint {
        Endpoint::Unix { path } => {
            left()?;
            let stream = UnixStream::connect(path).map_err(|e| {
                Verdict::NotYet(match e.kind() {
                    io::ErrorKind::NotFound => {
                        format!("socket {} does not exist", path.display())
                    }
                    _ => format!("cannot connect to {}: {}", path.display(), io_reason(&e)),
                })
            })?;
            Box::new(Deadlined {
                inner: stream,
                deadline,
            })
        }
        Endpoint::Tcp { host, port } => {
            let addrs: Vec<_> = (host.as_str(), *port)
                .to_socket_addrs()
                .map_err(|_| Verdict::NotYet(format!("DNS: cannot resolve {host}")))?
                .collect();
            let mut last = Verdict::NotYet(format!("DNS: no address for {host}"));
            let mut found = None;
            for addr in addrs {
                match TcpStream::connect_timeout(&addr, left()?) {
                    Ok(stream) => {
                        let _ = stream.set_nodelay(true);
                        found = Some(stream);
                        break;
                    }
                    Err(e) => {
                        last = Verdict::NotYet(match e.kind() {
                            io::ErrorKind::ConnectionRefused => REFUSED.into(),
                            _ => io_reason(&e),
                        })
                    }
                }
            }
            let stream = found.ok_or(last)?;
            Box::new(Deadlined {
                inner: stream,
                deadline,
            })
        }
    };
    secure(socket, endpoint, target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn a_dripping_server_cannot_hold_a_read_past_the_deadline() {
        let Ok(listener) = TcpListener::bind("127.0.0.1:0") else {
            return;
        };
        let Ok(addr) = listener.local_addr() else {
            return;
        };
        let server = std::thread::spawn(move || {
            if let Ok((mut peer, _)) = listener.accept() {
                // One byte every 100 ms for up to 3 s.
                for _ in 0..30 {
                    if peer.write_all(b"x").is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        });
        let started = Instant::now();
        let Ok(stream) = TcpStream::connect(addr) else {
            return;
        };
        let mut timed = Deadlined {
            inner: stream,
            deadline: started + Duration::from_millis(500),
        };
        let mut buf = [0u8; 64];
        let mut total = Vec::new();
        let outcome = loop {
            match timed.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => total.extend_from_slice(&buf[..n]),
                Err(e) => break Err(e),
            }
        };
        let took = started.elapsed();
        drop(timed);
        let _ = server.join();
        assert!(outcome.is_err(), "the read loop must end in a time-out");
        assert!(took < Duration::from_millis(900), "took {took:?}");
        assert!(!total.is_empty());
    }
}
