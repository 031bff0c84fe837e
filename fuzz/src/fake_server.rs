//! The fake transport: a server on a Unix socket and on a loopback TCP port
//! that answers every connection with the fuzzer's bytes, then closes its
//! sending side and reads whatever the client says until it hangs up. The
//! clients under test connect to it as to a real server, through their own
//! transport code, so nothing under `src/` needs a seam for the fuzzer.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

pub struct FakeServer {
    pub socket: PathBuf,
    pub port: u16,
    reply: Mutex<Arc<Vec<u8>>>,
}

static SERVER: OnceLock<&'static FakeServer> = OnceLock::new();

/// The one server of this process, started on first use.
pub fn server() -> &'static FakeServer {
    SERVER.get_or_init(|| {
        // libFuzzer's main is C's: nothing has set SIGPIPE to ignored as
        // Rust's runtime would, and a client that hangs up early must not
        // end the fuzzer.
        // SAFETY: setting a signal's disposition to SIG_IGN has no
        // preconditions.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
        let dir = std::env::temp_dir().join(format!("aep-fuzz-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let socket = dir.join("server.sock");
        let _ = std::fs::remove_file(&socket);
        let unix = UnixListener::bind(&socket).expect("bind the fake Unix socket");
        let tcp = TcpListener::bind("127.0.0.1:0").expect("bind the fake TCP port");
        let port = tcp.local_addr().expect("its port").port();
        let server: &'static FakeServer = Box::leak(Box::new(FakeServer {
            socket,
            port,
            reply: Mutex::new(Arc::new(Vec::new())),
        }));
        std::thread::spawn(move || {
            for conn in unix.incoming().flatten() {
                let reply = server.current();
                std::thread::spawn(move || {
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                    answer(conn, &reply, |c| c.shutdown(Shutdown::Write))
                });
            }
        });
        std::thread::spawn(move || {
            for conn in tcp.incoming().flatten() {
                let reply = server.current();
                std::thread::spawn(move || {
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                    answer(conn, &reply, |c| c.shutdown(Shutdown::Write))
                });
            }
        });
        server
    })
}

impl FakeServer {
    /// Every connection from now on is answered with `bytes`.
    pub fn answer_with(&self, bytes: &[u8]) {
        *self.reply.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(bytes.to_vec());
    }

    fn current(&self) -> Arc<Vec<u8>> {
        self.reply.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

fn answer<C: Read + Write>(
    mut conn: C,
    reply: &[u8],
    close_sending: impl Fn(&C) -> std::io::Result<()>,
) {
    let _ = conn.write_all(reply);
    let _ = close_sending(&conn);
    // Until the client hangs up (bounded, should one never do).
    let mut sink = [0u8; 4096];
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        match conn.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
}
