//! Hostile servers and stuck components: fake servers on loopback that
//! drip, flood, echo the password or send what no real server would, and
//! components that cannot die. Whatever they do, the entrypoint must not
//! panic, must end every wait and probe within its budget plus 0.5 s, must
//! answer TERM at once, and must keep the password out of its log.

mod support;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::wire_bytes::mysql_packet;
use support::*;

/// A fake server on a loopback port: each connection is handed to
/// `handler` on a thread of its own, with its index and the stop flag.
/// Dropping it stops accepting and tells the handlers to end.
struct Fake {
    port: u16,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
}

impl Fake {
    fn start(handler: impl Fn(TcpStream, usize, &AtomicBool) + Send + Sync + 'static) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let handler = Arc::new(handler);
        let (thread_stop, thread_accepted) = (stop.clone(), accepted.clone());
        std::thread::spawn(move || {
            while !thread_stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let _ = conn.set_nonblocking(false);
                        let index = thread_accepted.fetch_add(1, Ordering::Relaxed);
                        let (handler, stop) = (handler.clone(), thread_stop.clone());
                        std::thread::spawn(move || handler(conn, index, &stop));
                    }
                    // The accept loop polls so that the drop can end it.
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Fake {
            port,
            stop,
            accepted,
        }
    }
    fn connections(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Writes `bytes` one at a time, `every` apart, until the client is gone
/// or the server stops: a server that is slow on purpose.
fn drip(
    conn: &mut TcpStream,
    bytes: impl IntoIterator<Item = u8>,
    every: Duration,
    stop: &AtomicBool,
) {
    for byte in bytes {
        if stop.load(Ordering::Relaxed) || conn.write_all(&[byte]).is_err() {
            return;
        }
        std::thread::sleep(every);
    }
}

/// Reads what the client sends until it stops sending for a moment.
fn read_some(conn: &mut TcpStream) -> Vec<u8> {
    let _ = conn.set_read_timeout(Some(Duration::from_millis(300)));
    let mut buf = [0u8; 4096];
    match conn.read(&mut buf) {
        Ok(n) => buf[..n].to_vec(),
        Err(_) => Vec::new(),
    }
}

/// The wait for the metadata database at `url`, with a budget in seconds.
fn wait_for(url: &str, budget_s: u64) -> Run {
    Run::new(Mode::Subreaper, "hostile")
        .env("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", url)
        .env("AIRFLOW_ENTRYPOINT_WAIT_TIMEOUT", budget_s.to_string())
        .arg("--wait-only")
}

/// Runs `run` and checks it ended within `budget` + 0.5 s with exit 69.
fn ends_unavailable_within(run: Run, budget: Duration) -> Finished {
    let started = Instant::now();
    let f = run.run(budget + secs(20));
    let took = started.elapsed();
    f.expect_code(69);
    assert!(
        took < budget + Duration::from_millis(500),
        "took {took:?} for a budget of {budget:?}; stderr:\n{}",
        f.stderr
    );
    assert!(!f.stderr.contains("panicked"), "{}", f.stderr);
    f
}

// ---- MySQL: an RSA key from the server must not panic PID 1 ----

/// A MySQL 8 greeting offering caching_sha2_password.
fn mysql_greeting() -> Vec<u8> {
    let caps: u32 = 0x1 | 0x4 | 0x8 | 0x200 | 0x2000 | 0x8000 | 0x8_0000 | 0x20_0000;
    let mut g = vec![10];
    g.extend_from_slice(b"8.0.36\0");
    g.extend_from_slice(&7u32.to_le_bytes());
    g.extend_from_slice(b"abcdefgh\0");
    g.extend_from_slice(&(caps as u16).to_le_bytes());
    g.push(45);
    g.extend_from_slice(&2u16.to_le_bytes());
    g.extend_from_slice(&((caps >> 16) as u16).to_le_bytes());
    g.push(21);
    g.extend_from_slice(&[0; 10]);
    g.extend_from_slice(b"ijklmnopqrst\0");
    g.extend_from_slice(b"caching_sha2_password\0");
    mysql_packet(0, &g)
}

/// A fake MySQL that greets, reads the login and answers AuthMoreData
/// carrying `key` (where a real server sends its RSA public key).
fn mysql_sending_key(key: &'static [u8]) -> Fake {
    Fake::start(move |mut conn, _, _| {
        let _ = conn.write_all(&mysql_greeting());
        let _ = read_some(&mut conn);
        let mut more = vec![0x01];
        more.extend_from_slice(key);
        let _ = conn.write_all(&mysql_packet(2, &more));
        let _ = read_some(&mut conn);
    })
}

#[test]
fn a_mysql_rsa_key_that_is_empty_or_64_bits_is_one_line_not_a_panic() {
    // An 8-byte modulus: PKCS#1 SEQUENCE { INTEGER n, INTEGER 65537 }.
    const TINY_KEY: &[u8] =
        b"-----BEGIN RSA PUBLIC KEY-----\nMBACCQDDAQEBAQEBAQIDAQAB\n-----END RSA PUBLIC KEY-----\n";
    for (key, what) in [(&b""[..], "empty"), (TINY_KEY, "64-bit")] {
        let server = mysql_sending_key(key);
        let f = wait_for(
            &format!("mysql://airflow:pw@127.0.0.1:{}/airflow", server.port),
            10,
        )
        .run(secs(30));
        assert_eq!(
            f.code,
            Some(69),
            "{what} key: exit {:?} (70 is a panic); stderr:\n{}",
            f.code,
            f.stderr
        );
        assert!(
            f.stderr.contains("RSA public key") && !f.stderr.contains("panicked"),
            "{what} key:\n{}",
            f.stderr
        );
    }
}

// ---- One deadline per attempt: connect, TLS and every read ----

#[test]
fn a_postgres_that_drips_its_answer_cannot_stretch_the_wait() {
    // A NoticeResponse announced at 1000 bytes, sent one byte every 50 ms:
    // every read gets something, so an idle timeout never fires.
    let server = Fake::start(|mut conn, _, stop| {
        let _ = read_some(&mut conn);
        let mut notice = vec![b'N'];
        notice.extend_from_slice(&1000i32.to_be_bytes());
        notice.extend(std::iter::repeat_n(b'x', 996));
        drip(&mut conn, notice, Duration::from_millis(50), stop);
    });
    let f = ends_unavailable_within(
        wait_for(
            &format!("postgresql://airflow:pw@127.0.0.1:{}/airflow", server.port),
            2,
        ),
        secs(2),
    );
    assert!(
        f.stderr.contains("not ready after") && !f.stderr.contains("DNS resolver stuck"),
        "{}",
        f.stderr
    );
}

#[test]
fn a_tls_handshake_that_drips_cannot_stretch_the_wait() {
    // Yes to SSLRequest, then a TLS record header that never completes.
    let server = Fake::start(|mut conn, _, stop| {
        let _ = read_some(&mut conn);
        let _ = conn.write_all(b"S");
        let _ = read_some(&mut conn);
        let mut record = vec![0x16, 0x03, 0x03, 0x40, 0x00];
        record.extend(std::iter::repeat_n(0u8, 0x4000));
        drip(&mut conn, record, Duration::from_millis(50), stop);
    });
    let f = ends_unavailable_within(
        wait_for(
            &format!(
                "postgresql://airflow:pw@127.0.0.1:{}/airflow?sslmode=require",
                server.port
            ),
            2,
        ),
        secs(2),
    );
    assert!(!f.stderr.contains("DNS resolver stuck"), "{}", f.stderr);
}

#[test]
fn failover_brokers_share_the_attempts_deadline() {
    // Three brokers that accept and never say a word.
    let silent = || {
        Fake::start(|mut conn, _, stop| {
            while !stop.load(Ordering::Relaxed) && !read_some(&mut conn).is_empty() {}
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let brokers = [silent(), silent(), silent()];
    let url = brokers
        .iter()
        .map(|b| format!("amqp://guest:guest@127.0.0.1:{}//", b.port))
        .collect::<Vec<_>>()
        .join(";");
    let run = with_own_database(Run::new(Mode::Subreaper, "hostile"))
        .env("AIRFLOW__CELERY__BROKER_URL", url)
        .env("AIRFLOW__CORE__EXECUTOR", "CeleryExecutor")
        .env("AIRFLOW_ENTRYPOINT_WAIT_TIMEOUT", "2")
        .args(["--wait-only", "--", "celery", "worker"]);
    let f = ends_unavailable_within(run, secs(2));
    assert!(f.stderr.contains("Celery broker"), "{}", f.stderr);
}

#[test]
fn a_unix_socket_whose_server_never_accepts_is_bounded() {
    use std::os::fd::AsRawFd;
    let dir = TempDir::new("hostile-sock");
    let path = dir.join(".s.PGSQL.5432");
    let listener = std::os::unix::net::UnixListener::bind(&path).expect("bind");
    // SAFETY: listen(2) again on our own listening socket: a backlog of 0.
    unsafe { libc::listen(listener.as_raw_fd(), 0) };
    // One connection fills the queue; the next connect blocks.
    let _queued = std::os::unix::net::UnixStream::connect(&path).expect("the first connect");
    let f = ends_unavailable_within(
        wait_for(
            &format!(
                "postgresql://airflow@/airflow?host={}",
                dir.path().display()
            ),
            2,
        ),
        secs(2),
    );
    assert!(!f.stderr.contains("DNS resolver stuck"), "{}", f.stderr);
}

/// The metadata database of a broker test: SQLite in the run's own
/// directory, so that only the broker is in question (Airflow's default,
/// ~/airflow/airflow.db, needs a directory a fresh machine may not have).
fn with_own_database(run: Run) -> Run {
    let db = format!("sqlite:///{}/airflow.db", run.dir().path().display());
    run.env("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", db)
}

// ---- Server text: never the password ----

#[test]
fn a_redis_reply_echoing_the_password_never_reaches_the_log() {
    // A Redis whose AUTH was renamed away answers with our arguments.
    let server = Fake::start(|mut conn, _, _| {
        let _ = read_some(&mut conn);
        let _ = conn.write_all(
            b"-ERR unknown command 'AUTH', with args beginning with: 'default' 'hunter2' \r\n+PONG\r\n",
        );
        let _ = read_some(&mut conn);
    });
    for format in ["text", "json"] {
        let run = with_own_database(Run::new(Mode::Subreaper, "hostile"))
            .env(
                "AIRFLOW__CELERY__BROKER_URL",
                format!("redis://default:hunter2@127.0.0.1:{}/0", server.port),
            )
            .env("AIRFLOW__CORE__EXECUTOR", "CeleryExecutor")
            .env("AIRFLOW_ENTRYPOINT_WAIT_TIMEOUT", "1")
            .env("AIRFLOW_ENTRYPOINT_LOG_FORMAT", format)
            .args(["--wait-only", "--", "celery", "worker"]);
        let f = run.run(secs(20));
        f.expect_code(69);
        assert!(
            f.stderr.contains("unknown command"),
            "{format}:\n{}",
            f.stderr
        );
        assert_no_secret(&f, "hunter2");
    }
}

// ---- Caps: a server that sends rows without end ----

/// Reads one Postgres frontend message: (tag, body); the start-up message
/// has no tag (0).
fn pg_read(conn: &mut TcpStream, startup: bool) -> Option<(u8, Vec<u8>)> {
    let mut tag = [0u8; 1];
    if !startup {
        conn.read_exact(&mut tag).ok()?;
    }
    let mut len = [0u8; 4];
    conn.read_exact(&mut len).ok()?;
    let len = (i32::from_be_bytes(len) as usize).checked_sub(4)?;
    let mut body = vec![0u8; len];
    conn.read_exact(&mut body).ok()?;
    Some((tag[0], body))
}

fn pg_message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// A fake Postgres that logs anyone in (AuthenticationOk, ReadyForQuery)
/// and answers each query with `answer`.
fn postgres_answering(
    answer: impl Fn(&mut TcpStream, &AtomicBool) + Send + Sync + 'static,
) -> Fake {
    Fake::start(move |mut conn, _, stop| {
        if pg_read(&mut conn, true).is_none() {
            return;
        }
        let mut hello = pg_message(b'R', &0i32.to_be_bytes());
        hello.extend(pg_message(b'Z', b"I"));
        if conn.write_all(&hello).is_err() {
            return;
        }
        while let Some((tag, _)) = pg_read(&mut conn, false) {
            match tag {
                b'Q' => answer(&mut conn, stop),
                _ => return,
            }
        }
    })
}

/// `airflow jobs check` answered natively from the database at `port`.
fn jobs_check(port: u16) -> Run {
    Run::new(Mode::Subreaper, "hostile")
        .env(
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
            format!("postgresql://airflow:pw@127.0.0.1:{port}/airflow"),
        )
        .env("AIRFLOW_VERSION", "3.3.2")
        .env("AIRFLOW_ENTRYPOINT_WAIT_TIMEOUT", "10")
        .args(["airflow", "jobs", "check"])
}

#[test]
fn rows_without_end_fail_the_query_with_one_line() {
    let server = postgres_answering(|conn, stop| {
        let mut description = 3i16.to_be_bytes().to_vec();
        for name in ["id", "job_type", "epoch"] {
            description.extend_from_slice(name.as_bytes());
            description.push(0);
            description.extend_from_slice(&[0; 18]);
        }
        let _ = conn.write_all(&pg_message(b'T', &description));
        let mut row = 3i16.to_be_bytes().to_vec();
        for value in ["1", "SchedulerJob", "1700000000"] {
            row.extend_from_slice(&(value.len() as i32).to_be_bytes());
            row.extend_from_slice(value.as_bytes());
        }
        let rows: Vec<u8> = std::iter::repeat_n(pg_message(b'D', &row), 1000)
            .flatten()
            .collect();
        while !stop.load(Ordering::Relaxed) && conn.write_all(&rows).is_ok() {}
    });
    let f = jobs_check(server.port).run(secs(30));
    f.expect_code(1);
    assert!(
        f.stderr.contains("more than 10000 rows") && !f.stderr.contains("panicked"),
        "{}",
        f.stderr
    );
}

// ---- Signals during database I/O on the main thread ----

#[test]
fn term_during_a_stalled_jobs_check_query_ends_it_at_once() {
    // The query is read and never answered.
    let server = postgres_answering(|_, stop| {
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let mut running = jobs_check(server.port).start();
    // The wait's probe is the first connection; the query the second.
    let querying = wait_until(secs(20), || (server.connections() >= 2).then_some(()));
    assert!(querying.is_some(), "{}", running.dir.read("stderr"));
    // Past the log line of the wait, so that the query is what runs.
    let waited = wait_until(secs(20), || {
        running
            .dir
            .read("stderr")
            .contains("metadata database is ready")
            .then_some(())
    });
    assert!(waited.is_some(), "{}", running.dir.read("stderr"));
    running.signal(libc::SIGTERM);
    let sent = Instant::now();
    let status = running.wait(secs(40));
    assert_eq!(status.code(), Some(143), "{}", running.dir.read("stderr"));
    assert!(
        sent.elapsed() < Duration::from_millis(1000),
        "TERM took {:?}",
        sent.elapsed()
    );
}

// ---- The health check and the group's readiness probe ----

/// An HTTP endpoint that reads the request and drips an endless answer.
fn dripping_http() -> Fake {
    Fake::start(|mut conn, _, stop| {
        let _ = read_some(&mut conn);
        let mut answer = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n".to_vec();
        answer.extend(std::iter::repeat_n(b' ', 100_000));
        drip(&mut conn, answer, Duration::from_millis(20), stop);
    })
}

#[test]
fn the_health_check_answers_within_five_seconds_whatever_the_endpoint_does() {
    let server = dripping_http();
    let started = Instant::now();
    let f = Run::new(Mode::Subreaper, "hostile")
        .env("AIRFLOW__API__PORT", server.port.to_string())
        .env("AIRFLOW_VERSION", "3.3.2")
        .args(["--healthcheck", "api-server"])
        .run(secs(30));
    let took = started.elapsed();
    f.expect_code(1);
    assert!(took < Duration::from_millis(5500), "took {took:?}");
    assert!(f.stdout.starts_with("unhealthy"), "{}", f.stdout);
}

#[test]
fn a_dripping_api_server_does_not_hold_the_group_loop() {
    let server = dripping_http();
    let mut run = Run::new(Mode::Pid1, "hostile-group");
    let bin_dir = run.dir().join("bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    let airflow = bin_dir.join("airflow");
    std::fs::write(
        &airflow,
        "#!/bin/sh\necho \"$$\" > \"$T/api-server\"\nexec sleep 1000\n",
    )
    .unwrap();
    std::fs::set_permissions(
        &airflow,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    run = run
        .env("PATH", format!("{}:/usr/bin:/bin", bin_dir.display()))
        .env("AIRFLOW_VERSION", "3.3.2")
        .env("AIRFLOW_ENTRYPOINT_WAIT", "never")
        .env("AIRFLOW__API__PORT", server.port.to_string())
        .args(["api-server", "+", "--", "sleep", "1000"]);
    let mut running = run.start();
    running.wait_file("api-server", secs(20));
    // The probe is under way: the endpoint has a connection to drip into.
    let probing = wait_until(secs(20), || (server.connections() >= 1).then_some(()));
    assert!(probing.is_some(), "{}", running.dir.read("stderr"));
    running.signal(libc::SIGTERM);
    let sent = Instant::now();
    let status = running.wait(secs(60));
    assert_eq!(status.code(), Some(0), "{}", running.dir.read("stderr"));
    assert!(
        sent.elapsed() < Duration::from_millis(1500),
        "TERM took {:?}; stderr:\n{}",
        sent.elapsed(),
        running.dir.read("stderr")
    );
}

// ---- Processes that will not stop ----

/// A cgroup-v1 freezer group of the test's own: what is in it cannot run,
/// nor die of SIGKILL, until it is thawed. Thawed, killed and removed on
/// drop, also when the test fails.
struct Freezer(std::path::PathBuf);

impl Freezer {
    fn new(tag: &str) -> Option<Freezer> {
        let base = std::path::Path::new("/sys/fs/cgroup/freezer");
        if !base.join("cgroup.procs").exists() {
            assert!(
                std::env::var("CI").is_err(),
                "no cgroup-v1 freezer under CI"
            );
            eprintln!("skipped: no cgroup-v1 freezer");
            return None;
        }
        let dir = base.join(format!("ae-test-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok()?;
        Some(Freezer(dir))
    }
    fn freeze(&self, pid: i32) {
        std::fs::write(self.0.join("cgroup.procs"), pid.to_string())
            .expect("move into the freezer");
        std::fs::write(self.0.join("freezer.state"), "FROZEN").expect("freeze");
        let frozen = wait_until(secs(10), || {
            let state = std::fs::read_to_string(self.0.join("freezer.state")).unwrap_or_default();
            (state.trim() == "FROZEN").then_some(())
        });
        assert!(frozen.is_some(), "the cgroup did not freeze");
    }
}

impl Drop for Freezer {
    fn drop(&mut self) {
        let procs = std::fs::read_to_string(self.0.join("cgroup.procs")).unwrap_or_default();
        for pid in procs
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            // SAFETY: kill(2) with plain integers.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let _ = std::fs::write(self.0.join("freezer.state"), "THAWED");
        let _ = wait_until(secs(10), || {
            let procs = std::fs::read_to_string(self.0.join("cgroup.procs")).unwrap_or_default();
            procs.trim().is_empty().then_some(())
        });
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// CPU time (user + system, in clock ticks) of a process so far.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}

#[test]
fn a_component_that_cannot_die_does_not_make_the_group_spin() {
    let Some(freezer) = Freezer::new("group-stop") else {
        return;
    };
    let mut running = Run::new(Mode::Subreaper, "hostile-frozen")
        .env("AIRFLOW_ENTRYPOINT_GRACE_PERIOD", "1")
        .env("AIRFLOW_ENTRYPOINT_KILL_TIMEOUT", "1")
        .args(["--", "sh", "-c", "echo $$ > \"$T/frozen\"; exec sleep 1000"])
        .args(["+", "--", "sleep", "1000"])
        .start();
    let pid: i32 = running
        .wait_file("frozen", secs(20))
        .trim()
        .parse()
        .expect("a pid");
    freezer.freeze(pid);
    let entrypoint = running.entrypoint_pid();
    running.signal(libc::SIGTERM);
    let killed = wait_until(secs(20), || {
        running
            .dir
            .read("stderr")
            .contains("SIGKILL")
            .then(|| cpu_ticks(entrypoint))
    });
    let before = killed.expect("no SIGKILL after the stop deadline");
    // It waits the single-child path's 5 s for the frozen one, then gives up.
    let gave_up = wait_until(secs(20), || {
        running
            .dir
            .read("stderr")
            .contains("did not exit even after SIGKILL")
            .then(|| cpu_ticks(entrypoint))
    });
    let after = gave_up.unwrap_or_else(|| {
        panic!(
            "never gave up on the frozen component; CPU ticks since the KILL: {}; stderr:\n{}",
            cpu_ticks(entrypoint) - before,
            running.dir.read("stderr")
        )
    });
    // A spin burns a whole core: some 500 ticks over those 5 s.
    assert!(
        after - before < 50,
        "{} CPU ticks while waiting",
        after - before
    );
    running.wait(secs(30));
}

#[test]
fn a_start_up_step_that_ignores_term_is_killed() {
    let mut run = Run::new(Mode::Pid1, "hostile-step");
    let init = run.dir().join("init.d");
    std::fs::create_dir_all(&init).unwrap();
    let script = init.join("10-stubborn");
    std::fs::write(
        &script,
        "#!/bin/sh\ntrap '' TERM\necho \"$$\" > \"$T/started\"\nexec sleep 1000\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    run = run
        .env("AIRFLOW_ENTRYPOINT_INIT_DIR", &init)
        .args(["--", "true"]);
    let mut running = run.start();
    running.wait_file("started", secs(20));
    running.signal(libc::SIGTERM);
    let sent = Instant::now();
    let status = running.wait(secs(60));
    assert_eq!(status.code(), Some(143), "{}", running.dir.read("stderr"));
    let took = sent.elapsed();
    assert!(
        took < secs(8),
        "took {took:?}; stderr:\n{}",
        running.dir.read("stderr")
    );
    assert!(
        running.dir.read("stderr").contains("SIGKILL"),
        "{}",
        running.dir.read("stderr")
    );
}

// ---- AMQP: a broker that refuses our protocol version ----

#[test]
fn a_broker_refusing_our_protocol_version_is_told_at_once() {
    // As RabbitMQ does: its own 8-byte header, then it closes.
    let server = Fake::start(|mut conn, _, _| {
        let _ = read_some(&mut conn);
        let _ = conn.write_all(b"AMQP\x01\x01\x00\x0a");
    });
    let started = Instant::now();
    let f = with_own_database(Run::new(Mode::Subreaper, "hostile"))
        .env(
            "AIRFLOW__CELERY__BROKER_URL",
            format!("amqp://guest:guest@127.0.0.1:{}//", server.port),
        )
        .env("AIRFLOW__CORE__EXECUTOR", "CeleryExecutor")
        .env("AIRFLOW_ENTRYPOINT_WAIT_TIMEOUT", "10")
        .args(["--wait-only", "--", "celery", "worker"])
        .run(secs(30));
    f.expect_code(69);
    assert!(
        f.stderr.contains("another protocol version"),
        "{}",
        f.stderr
    );
    assert!(started.elapsed() < secs(5), "{:?}", started.elapsed());
}

// ---- The other database paths: schema wait, MIGRATE=auto, check-migrations,
// the health check's job query ----

/// A fake Airflow install under `dir`: `bin/airflow` (a no-op) and one
/// migration file, head `aaaa00000001`. Returns the PATH to use.
fn fake_airflow_install(dir: &TempDir) -> String {
    let prefix = dir.join("venv");
    let versions = prefix.join("lib/python3.11/site-packages/airflow/migrations/versions");
    std::fs::create_dir_all(&versions).unwrap();
    std::fs::create_dir_all(prefix.join("bin")).unwrap();
    std::fs::write(
        versions.join("0001_init.py"),
        "revision = \"aaaa00000001\"\ndown_revision = None\n",
    )
    .unwrap();
    let airflow = prefix.join("bin/airflow");
    std::fs::write(&airflow, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(
        &airflow,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    format!("{}:/usr/bin:/bin", prefix.join("bin").display())
}

/// A fake Postgres whose every query is read and never answered.
fn postgres_stalling_queries() -> Fake {
    postgres_answering(|_, stop| {
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
        }
    })
}

/// Starts `run`, waits until the server has `connections` of it (the last
/// one's query stalls), sends TERM and expects 143 within a second.
fn term_ends_the_stalled_query(run: Run, server: &Fake, connections: usize, what: &str) {
    let mut running = run.start();
    let stalled = wait_until(secs(20), || {
        (server.connections() >= connections).then_some(())
    });
    assert!(stalled.is_some(), "{what}: {}", running.dir.read("stderr"));
    // From its connect on, the query is the I/O under test: a TERM now
    // lands in it (or just before it is sent, which must end it too).
    running.signal(libc::SIGTERM);
    let sent = Instant::now();
    let status = running.wait(secs(60));
    assert_eq!(
        status.code(),
        Some(143),
        "{what}: {}",
        running.dir.read("stderr")
    );
    assert!(
        sent.elapsed() < Duration::from_millis(1000),
        "{what}: TERM took {:?}",
        sent.elapsed()
    );
}

#[test]
fn term_during_the_schema_wait_migrate_auto_or_check_migrations_ends_it_at_once() {
    let server = postgres_stalling_queries();
    let url = format!("postgresql://airflow:pw@127.0.0.1:{}/airflow", server.port);
    let base = |tag| {
        let run = Run::new(Mode::Subreaper, tag);
        let path = fake_airflow_install(run.dir());
        run.env("PATH", path)
            .env("AIRFLOW_VERSION", "3.3.2")
            .env("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", &url)
            .env("AIRFLOW_ENTRYPOINT_WAIT_TIMEOUT", "60")
    };
    // The schema wait: its query is the database's probe (one connection).
    let before = server.connections();
    term_ends_the_stalled_query(
        base("hostile-schema")
            .env("AIRFLOW_ENTRYPOINT_WAIT_FOR_MIGRATIONS", "true")
            .arg("--wait-only"),
        &server,
        before + 1,
        "schema wait",
    );
    // MIGRATE=auto: the probe, then the schema check.
    let before = server.connections();
    term_ends_the_stalled_query(
        base("hostile-migrate")
            .env("_AIRFLOW_DB_MIGRATE", "true")
            .args(["--", "true"]),
        &server,
        before + 2,
        "MIGRATE=auto",
    );
    // The native check-migrations: the probe, then its first round.
    let before = server.connections();
    term_ends_the_stalled_query(
        base("hostile-check").args(["airflow", "db", "check-migrations", "-t", "60"]),
        &server,
        before + 2,
        "check-migrations",
    );
}

#[test]
fn the_health_checks_job_query_ends_within_five_seconds_against_a_dripping_database() {
    // The job query's answer: a notice dripped a byte every 50 ms.
    let server = postgres_answering(|conn, stop| {
        let mut notice = vec![b'N'];
        notice.extend_from_slice(&100_000i32.to_be_bytes());
        notice.extend(std::iter::repeat_n(b'x', 99_996));
        drip(conn, notice, Duration::from_millis(50), stop);
    });
    let started = Instant::now();
    let f = Run::new(Mode::Subreaper, "hostile")
        .env(
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
            format!("postgresql://airflow:pw@127.0.0.1:{}/airflow", server.port),
        )
        .env("AIRFLOW_VERSION", "3.3.2")
        .env("AIRFLOW_ENTRYPOINT_HOSTNAME", "here")
        .args(["--healthcheck", "scheduler"])
        .run(secs(60));
    let took = started.elapsed();
    f.expect_code(1);
    assert!(f.stdout.starts_with("unhealthy"), "{}", f.stdout);
    assert!(took < Duration::from_millis(5500), "took {took:?}");
}
