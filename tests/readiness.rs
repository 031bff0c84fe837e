//! The wait, against real PostgreSQL, MariaDB, Redis and RabbitMQ servers on
//! free loopback ports (plus tiny fake servers for the two states a real
//! one cannot be made to show on demand: Postgres 57P03 and Redis -LOADING).

mod support;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};
use support::servers::*;
use support::*;

/// `--wait-only` for the metadata database at `url`.

#[test]
fn postgres_with_scram_password_is_ready_and_wrong_password_or_database_or_hba_are_fatal() {
    if !needs_root("postgres_probe") {
        return;
    }
    let cluster = PgCluster::init(false);
    let server = cluster.start();
    assert!(server.wait_log("ready to accept connections", secs(60)));
    let port = cluster.port;

    let f = wait_db(&format!(
        "postgresql+psycopg2://airflow:airflow-pw@127.0.0.1:{port}/airflow"
    ))
    .run(secs(30));
    f.expect_code(0);
    assert!(
        f.stderr.contains("metadata database is ready"),
        "{}",
        f.stderr
    );
    assert_no_secret(&f, "airflow-pw");

    let started = Instant::now();
    let f = wait_db(&format!(
        "postgresql://airflow:not-the-pw@127.0.0.1:{port}/airflow"
    ))
    .run(secs(30));
    f.expect_code(69);
    assert!(
        f.stderr.contains("28P01") && f.stderr.contains("wrong password"),
        "{}",
        f.stderr
    );
    assert!(
        started.elapsed() < secs(10),
        "a fatal answer must not wait out the budget"
    );
    assert_no_secret(&f, "not-the-pw");

    let f = wait_db(&format!(
        "postgresql://postgres@127.0.0.1:{port}/no_such_db"
    ))
    .run(secs(30));
    f.expect_code(69);
    assert!(
        f.stderr.contains("3D000") && f.stderr.contains("no_such_db"),
        "{}",
        f.stderr
    );

    let f = wait_db(&format!("postgresql://rejected:x@127.0.0.1:{port}/airflow")).run(secs(30));
    f.expect_code(69);
    assert!(
        f.stderr.contains("28000") && f.stderr.contains("pg_hba"),
        "{}",
        f.stderr
    );

    // Over the Unix socket, as the Cloud SQL proxy or a sidecar offers it.
    let f = wait_db(&format!(
        "postgresql://postgres@/airflow?host={}&port={port}",
        cluster.sockets.display()
    ))
    .run(secs(30));
    f.expect_code(0);
    assert!(f.stderr.contains(".s.PGSQL"), "{}", f.stderr);
}

#[test]
fn a_postgres_started_after_the_wait_began_is_noticed_within_a_second() {
    if !needs_root("a_postgres_started_after_the_wait_began_is_noticed_within_a_second") {
        return;
    }
    let cluster = PgCluster::init(false);
    let mut running = wait_db(&format!(
        "postgresql://airflow:airflow-pw@127.0.0.1:{}/airflow",
        cluster.port
    ))
    .env("AIRFLOW_ENTRYPOINT_WAIT_TIMEOUT", "120")
    .start();
    let waiting = wait_until(secs(20), || {
        running
            .dir
            .read("stderr")
            .contains("waiting for the metadata database")
            .then_some(())
    });
    assert!(waiting.is_some(), "the entrypoint did not start waiting");
    let server = cluster.start();
    let ready_at = wait_until(secs(60), || {
        server
            .log_text()
            .contains("ready to accept connections")
            .then(Instant::now)
    })
    .expect("postgres ready");
    let status = running.wait(secs(30));
    let noticed_after = ready_at.elapsed();
    assert_eq!(status.code(), Some(0), "{}", running.dir.read("stderr"));
    let stderr = running.dir.read("stderr");
    let first_wait = stderr.find("waiting for the metadata database").unwrap();
    let ready = stderr
        .find("metadata database is ready")
        .expect("ready line");
    assert!(first_wait < ready, "events out of order:\n{stderr}");
    assert!(
        noticed_after < Duration::from_secs(1),
        "noticed {noticed_after:?} after the server was ready"
    );
}

#[test]
fn postgres_over_tls_with_sslmode_require_and_verify_full() {
    if !needs_root("postgres_over_tls_with_sslmode_require_and_verify_full") {
        return;
    }
    let cluster = PgCluster::init(true);
    let server = cluster.start();
    assert!(server.wait_log("ready to accept connections", secs(60)));
    let port = cluster.port;
    let f = wait_db(&format!(
        "postgresql://airflow:airflow-pw@127.0.0.1:{port}/airflow?sslmode=require"
    ))
    .run(secs(30));
    f.expect_code(0);
    let f = wait_db(&format!(
        "postgresql://airflow:airflow-pw@localhost:{port}/airflow?sslmode=verify-full&sslrootcert={}",
        cluster.cert().display()
    ))
    .run(secs(30));
    f.expect_code(0);
    // The self-signed certificate is not in the system's trust store.
    let f = wait_db(&format!("postgresql://airflow:airflow-pw@localhost:{port}/airflow?sslmode=verify-full&sslrootcert=system")).run(secs(30));
    f.expect_code(69);
    assert!(f.stderr.contains("certificate"), "{}", f.stderr);
}

/// A fake Postgres that answers 57P03 ("starting up") `starting` times, then
/// accepts: the state a real server shows only for a moment.
fn fake_postgres(starting: usize) -> (u16, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        for n in 0..=starting {
            let Ok((mut conn, _)) = listener.accept() else {
                return;
            };
            let mut len = [0u8; 4];
            if conn.read_exact(&mut len).is_err() {
                continue;
            }
            let mut rest = vec![0u8; (u32::from_be_bytes(len) as usize).saturating_sub(4)];
            let _ = conn.read_exact(&mut rest);
            if n < starting {
                let body = b"SFATAL\0C57P03\0Mthe database system is starting up\0\0";
                let mut msg = vec![b'E'];
                msg.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
                msg.extend_from_slice(body);
                let _ = conn.write_all(&msg);
            } else {
                let _ = conn.write_all(&[b'R', 0, 0, 0, 8, 0, 0, 0, 0, b'Z', 0, 0, 0, 5, b'I']);
            }
        }
    });
    (port, handle)
}

#[test]
fn postgres_starting_up_57p03_is_retried_until_ready() {
    let (port, server) = fake_postgres(3);
    let f = wait_db(&format!("postgresql://postgres@127.0.0.1:{port}/airflow")).run(secs(30));
    f.expect_code(0);
    assert!(
        f.stderr.contains("the database system is starting up"),
        "{}",
        f.stderr
    );
    server.join().unwrap();
}

#[test]
fn nothing_listening_times_out_with_69_within_the_budget() {
    let port = free_port();
    let started = Instant::now();
    let f = Run::new(Mode::Subreaper, "timeout")
        .env(
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
            format!("postgresql://airflow:pw-123@127.0.0.1:{port}/airflow"),
        )
        .env("CONNECTION_CHECK_MAX_COUNT", "3")
        .env("CONNECTION_CHECK_SLEEP_TIME", "0.5")
        .arg("--wait-only")
        .run(secs(30));
    let took = started.elapsed();
    f.expect_code(69);
    assert!(
        took >= Duration::from_millis(1500) && took < secs(10),
        "{took:?}"
    );
    let error = f
        .stderr
        .lines()
        .find(|l| l.contains("ERROR"))
        .expect("an error line");
    for needle in [
        "connection refused",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "container environment",
        &format!("127.0.0.1:{port}"),
        "postgresql://airflow:***@",
    ] {
        assert!(error.contains(needle), "{needle} missing from: {error}");
    }
    assert_no_secret(&f, "pw-123");
}

#[test]
fn an_unresolvable_host_is_retried_as_dns_and_times_out() {
    let f = Run::new(Mode::Subreaper, "dns")
        .env(
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
            "postgresql://a@no-such-host.invalid/airflow",
        )
        .env("AIRFLOW_ENTRYPOINT_WAIT_TIMEOUT", "1")
        .arg("--wait-only")
        .run(secs(30));
    f.expect_code(69);
    assert!(f.stderr.contains("DNS"), "{}", f.stderr);
}

#[test]
fn sigterm_during_the_wait_ends_it_at_once_with_143_as_pid1() {
    if !needs_root("sigterm_during_the_wait_ends_it_at_once_with_143_as_pid1") {
        return;
    }
    let mut running = Run::new(Mode::Pid1, "term")
        .env(
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
            format!("postgresql://a@127.0.0.1:{}/x", free_port()),
        )
        .env("AIRFLOW_ENTRYPOINT_WAIT_TIMEOUT", "300")
        .arg("--wait-only")
        .start();
    wait_until(secs(20), || {
        running
            .dir
            .read("stderr")
            .contains("waiting for")
            .then_some(())
    })
    .expect("waiting");
    let sent = Instant::now();
    running.signal(libc::SIGTERM);
    let status = running.wait(secs(20));
    assert_eq!(status.code(), Some(143));
    assert!(sent.elapsed() < secs(3), "took {:?}", sent.elapsed());
}

#[test]
fn a_malformed_url_is_78_naming_the_variable_and_its_layer() {
    let f = Run::new(Mode::Subreaper, "badurl")
        .env(
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
            "oracle://scott:tiger-pw@db/orcl",
        )
        .arg("--wait-only")
        .run(secs(20));
    f.expect_code(78);
    assert!(
        f.stderr
            .contains("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN (from container environment)"),
        "{}",
        f.stderr
    );
    assert_no_secret(&f, "tiger-pw");
}

#[test]
fn sqlite_checks_the_directory_instead_of_waiting() {
    let dir = TempDir::new("sqlite");
    let f = wait_db(&format!("sqlite:///{}/airflow.db", dir.path().display())).run(secs(20));
    f.expect_code(0);
    let f = wait_db("sqlite:////nonexistent-dir/airflow.db").run(secs(20));
    f.expect_code(69);
    assert!(f.stderr.contains("/nonexistent-dir"), "{}", f.stderr);
}

#[test]
fn mariadb_greeting_means_ready() {
    if !needs_root("mariadb_greeting_means_ready") {
        return;
    }
    let server = start_mariadb();
    let f = wait_db(&format!(
        "mysql+mysqldb://airflow:my-pw@127.0.0.1:{}/airflow",
        server.port
    ))
    .run(secs(30));
    f.expect_code(0);
    assert_no_secret(&f, "my-pw");
}

fn wait_worker(db: &str, broker: &str) -> Run {
    Run::new(Mode::Subreaper, "worker")
        .env("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", db)
        .env("AIRFLOW__CELERY__BROKER_URL", broker)
        .env("AIRFLOW_ENTRYPOINT_WAIT_TIMEOUT", "20")
        .args(["--wait-only", "worker"])
}

#[test]
fn redis_with_password_is_ready_and_a_wrong_password_is_fatal() {
    if !needs_root("redis_with_password_is_ready_and_a_wrong_password_is_fatal") {
        return;
    }
    let redis = start_redis(Some("redis-pw"));
    let dir = TempDir::new("db");
    let db = format!("sqlite:///{}/airflow.db", dir.path().display());
    let f = wait_worker(
        &db,
        &format!("redis://:redis-pw@127.0.0.1:{}/0", redis.port),
    )
    .run(secs(30));
    f.expect_code(0);
    assert!(f.stderr.contains("Celery broker is ready"), "{}", f.stderr);
    let f = wait_worker(
        &db,
        &format!("redis://:wrong-pw@127.0.0.1:{}/0", redis.port),
    )
    .run(secs(30));
    f.expect_code(69);
    assert!(f.stderr.contains("wrong password"), "{}", f.stderr);
    assert_no_secret(&f, "wrong-pw");
    let f = wait_worker(&db, &format!("redis://127.0.0.1:{}/0", redis.port)).run(secs(30));
    f.expect_code(69);
    assert!(f.stderr.contains("needs a password"), "{}", f.stderr);
}

/// A fake Redis that answers -LOADING twice, then +PONG.
#[test]
fn redis_loading_is_retried_until_pong() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        for n in 0..3 {
            let Ok((mut conn, _)) = listener.accept() else {
                return;
            };
            let mut buf = [0u8; 256];
            let _ = conn.read(&mut buf);
            let reply: &[u8] = if n < 2 {
                b"-LOADING Redis is loading the dataset in memory\r\n"
            } else {
                b"+PONG\r\n"
            };
            let _ = conn.write_all(reply);
        }
    });
    let dir = TempDir::new("db");
    let f = wait_worker(
        &format!("sqlite:///{}/airflow.db", dir.path().display()),
        &format!("redis://127.0.0.1:{port}/0"),
    )
    .run(secs(30));
    f.expect_code(0);
    assert!(f.stderr.contains("loading its dataset"), "{}", f.stderr);
    server.join().unwrap();
}

#[test]
fn a_worker_waits_for_postgres_and_rabbitmq_together() {
    if !needs_root("a_worker_waits_for_postgres_and_rabbitmq_together") {
        return;
    }
    let rabbit = start_rabbitmq();
    let cluster = PgCluster::init(false);
    let pg = cluster.start();
    assert!(pg.wait_log("ready to accept connections", secs(60)));
    let f = wait_worker(
        &format!(
            "postgresql://airflow:airflow-pw@127.0.0.1:{}/airflow",
            cluster.port
        ),
        &format!("amqp://guest:guest-pw@127.0.0.1:{}//", rabbit.port),
    )
    .run(secs(30));
    f.expect_code(0);
    assert!(
        f.stderr.contains("metadata database is ready")
            && f.stderr.contains("Celery broker is ready"),
        "{}",
        f.stderr
    );
    assert_no_secret(&f, "guest-pw");
}
