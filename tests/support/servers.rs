//! Real servers for the readiness tests: PostgreSQL, MariaDB, Redis and
//! RabbitMQ from Debian, each on a free loopback port in its own temp dir,
//! started as its own system user and stopped (then killed) on drop.
#![allow(dead_code)]

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{wait_until, TempDir};

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn ids(user: &str) -> (u32, u32) {
    let passwd = fs::read_to_string("/etc/passwd").unwrap();
    let line = passwd
        .lines()
        .find(|l| l.starts_with(&format!("{user}:")))
        .unwrap_or_else(|| {
            panic!("no system user {user}: is the server package installed? (scripts/install-deps)")
        });
    let f: Vec<&str> = line.split(':').collect();
    (f[2].parse().unwrap(), f[3].parse().unwrap())
}

fn own(path: &Path, user: &str, mode: u32) {
    let (uid, gid) = ids(user);
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn as_user(user: &str, program: &str) -> Command {
    use std::os::unix::process::CommandExt;
    let mut c = Command::new("setpriv");
    c.process_group(0);
    c.args([
        &format!("--reuid={user}"),
        &format!("--regid={user}"),
        "--init-groups",
        "--",
        program,
    ]);
    c
}

fn run_ok(mut c: Command, what: &str) {
    let out = c.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A server process; SIGTERM then SIGKILL on drop.
pub struct Server {
    child: Option<Child>,
    pub port: u16,
    pub dir: TempDir,
    pub log: PathBuf,
}

impl Server {
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id() as i32;
            // Each server leads its own process group: wrapper scripts
            // (rabbitmq-server) do not pass signals on, so the group gets them.
            // SAFETY: kill(2) with plain integers.
            unsafe { libc::kill(-pid, libc::SIGTERM) };
            if wait_until(Duration::from_secs(20), || child.try_wait().ok().flatten()).is_none() {
                // SAFETY: as above.
                unsafe { libc::kill(-pid, libc::SIGKILL) };
                let _ = child.wait();
            }
            // SAFETY: as above; whatever of the group outlived its leader.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
    }
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
    /// Waits until the server's log contains `needle`.
    pub fn wait_log(&self, needle: &str, bound: Duration) -> bool {
        wait_until(bound, || self.log_text().contains(needle).then_some(())).is_some()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
        if self.log.ends_with("rabbit.out") {
            // The Erlang VM and its port mapper leave the process group
            // (epmd daemonizes): end every process of the rabbitmq user.
            kill_processes_of("rabbitmq");
        }
    }
}

/// SIGKILLs every process owned by the system `user` (test servers only:
/// nothing else runs as these users here), then waits until they are gone,
/// so that none is still dying (or a zombie) when the suite has ended.
fn kill_processes_of(user: &str) {
    let (uid, _) = ids(user);
    let owned = || -> Vec<i32> {
        super::all_pids()
            .into_iter()
            .filter(|pid| {
                fs::metadata(format!("/proc/{pid}"))
                    .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
                    .ok()
                    == Some(uid)
            })
            .collect()
    };
    for pid in owned() {
        // SAFETY: kill(2) with plain integers.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    // The VM left our process group, so its parent, not we, reaps it.
    let gone = wait_until(Duration::from_secs(20), || owned().is_empty().then_some(()));
    if gone.is_none() {
        eprintln!(
            "processes of {user} still there after SIGKILL: {:?}",
            owned()
        );
    }
}

// ---------------------------------------------------------------- Postgres

pub fn pg_bin(name: &str) -> String {
    for version in ["17", "16", "15"] {
        let path = format!("/usr/lib/postgresql/{version}/bin/{name}");
        if Path::new(&path).exists() {
            return path;
        }
    }
    panic!("PostgreSQL server binaries not found (install postgresql)")
}

/// An initialised, stopped Postgres cluster. Roles: `postgres` (trust),
/// `airflow` with password `airflow-pw` (scram-sha-256), `rejected`
/// (pg_hba reject). Database `airflow`.
pub struct PgCluster {
    pub dir: TempDir,
    pub data: PathBuf,
    pub sockets: PathBuf,
    pub port: u16,
    tls: bool,
}

impl PgCluster {
    pub fn init(tls: bool) -> PgCluster {
        let dir = TempDir::new("pg");
        let data = dir.join("data");
        let sockets = dir.join("sock");
        fs::create_dir_all(&data).unwrap();
        fs::create_dir_all(&sockets).unwrap();
        own(&data, "postgres", 0o700);
        own(&sockets, "postgres", 0o755);
        let mut initdb = as_user("postgres", &pg_bin("initdb"));
        initdb.args(["-D"]).arg(&data).args([
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
        ]);
        run_ok(initdb, "initdb");
        fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhost all postgres 127.0.0.1/32 trust\nhost all rejected 127.0.0.1/32 reject\nhost all all 127.0.0.1/32 scram-sha-256\nhost all all ::1/128 scram-sha-256\n",
        )
        .unwrap();
        if tls {
            // A throw-away CA and a server certificate it signed (webpki
            // refuses a CA certificate used as the server's own).
            let ssl = |args: &[&str]| {
                let mut c = Command::new("openssl");
                c.current_dir(&data).args(args);
                run_ok(c, "openssl");
            };
            ssl(&[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=aep-test-ca",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
            ]);
            ssl(&[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=localhost",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
            ]);
            fs::write(
                data.join("server.ext"),
                "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
            )
            .unwrap();
            ssl(&[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "1",
                "-extfile",
                "server.ext",
                "-out",
                "server.crt",
            ]);
            own(&data.join("server.key"), "postgres", 0o600);
            own(&data.join("server.crt"), "postgres", 0o644);
            own(&data.join("ca.crt"), "postgres", 0o644);
        }
        let cluster = PgCluster {
            dir,
            data,
            sockets,
            port: free_port(),
            tls,
        };
        // Roles and database, with a short-lived server.
        let server = cluster.start();
        assert!(
            server.wait_log("ready to accept connections", Duration::from_secs(60)),
            "postgres did not start:\n{}",
            server.log_text()
        );
        let mut psql = Command::new("psql");
        psql.args(["-h"])
            .arg(&cluster.sockets)
            .args([
                "-p",
                &cluster.port.to_string(),
                "-U",
                "postgres",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
            ])
            .args([
                "CREATE ROLE airflow LOGIN PASSWORD 'airflow-pw'",
                "-c",
                "CREATE ROLE rejected LOGIN",
                "-c",
                "CREATE DATABASE airflow OWNER airflow",
            ]);
        run_ok(psql, "psql set-up");
        drop(server);
        cluster
    }

    /// Starts the server (returns at once; readiness is the caller's business).
    pub fn start(&self) -> Server {
        let log = self.dir.join(&format!("postgres-{}.log", free_port()));
        let logfile = fs::File::create(&log).unwrap();
        let mut c = as_user("postgres", &pg_bin("postgres"));
        c.arg("-D")
            .arg(&self.data)
            .args([
                "-p",
                &self.port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
            ])
            .arg("-k")
            .arg(&self.sockets);
        if self.tls {
            c.args([
                "-c",
                "ssl=on",
                "-c",
                "ssl_cert_file=server.crt",
                "-c",
                "ssl_key_file=server.key",
            ]);
        }
        c.stdin(Stdio::null())
            .stdout(logfile.try_clone().unwrap())
            .stderr(logfile);
        let child = c.spawn().expect("start postgres");
        Server {
            child: Some(child),
            port: self.port,
            dir: TempDir::new("pg-run"),
            log,
        }
    }

    /// Runs `sql` as the `airflow` role in database `airflow` over the
    /// Unix socket (trust); the server must be running. Returns stdout.
    pub fn psql_as_airflow(&self, sql: &str) -> String {
        let out = Command::new("psql")
            .arg("-h")
            .arg(&self.sockets)
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "airflow",
                "-d",
                "airflow",
            ])
            .args(["-v", "ON_ERROR_STOP=1", "-At", "-c", sql])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The CA certificate that signed the server's.
    pub fn cert(&self) -> PathBuf {
        self.data.join("ca.crt")
    }
}

// ------------------------------------------------------------------ Redis

pub fn start_redis(password: Option<&str>) -> Server {
    start_redis_on(free_port(), password)
}

/// A Redis on `port` (a restart on the port of one that was stopped).
pub fn start_redis_on(port: u16, password: Option<&str>) -> Server {
    let dir = TempDir::new("redis");
    own(dir.path(), "redis", 0o777);
    let log = dir.join("redis.log");
    let mut c = as_user("redis", "/usr/bin/redis-server");
    c.args([
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
    ])
    .arg("--dir")
    .arg(dir.path())
    .arg("--logfile")
    .arg(&log);
    if let Some(pw) = password {
        c.args(["--requirepass", pw]);
    }
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = c.spawn().expect("start redis-server");
    let server = Server {
        child: Some(child),
        port,
        dir,
        log,
    };
    assert!(
        server.wait_log("Ready to accept connections", Duration::from_secs(30)),
        "redis did not start:\n{}",
        server.log_text()
    );
    server
}

/// The names of the queues of the RabbitMQ started by `start_rabbitmq`.
pub fn rabbitmq_queues(server: &Server) -> Vec<String> {
    let node = format!("aeptest{}@localhost", server.port);
    // The server made its cookie in its HOME; rabbitmqctl's wrapper would
    // look in the rabbitmq user's own.
    let cookie = fs::read_to_string(server.dir.join(".erlang.cookie")).expect("the node's cookie");
    let out = Command::new("rabbitmqctl")
        .args(["--erlang-cookie", cookie.trim(), "-n", &node])
        .args(["list_queues", "-q", "--no-table-headers", "name"])
        .stdin(Stdio::null())
        .output()
        .expect("rabbitmqctl");
    assert!(
        out.status.success(),
        "rabbitmqctl list_queues: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    names.sort();
    names
}

// ---------------------------------------------------------------- MariaDB

pub fn start_mariadb() -> Server {
    // Two mariadb-install-db at once failed here ("Installation of system
    // tables failed"): one at a time within a test binary.
    static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = INSTALL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = TempDir::new("mariadb");
    let data = dir.join("data");
    fs::create_dir_all(&data).unwrap();
    own(&data, "mysql", 0o700);
    let mut install = Command::new("mariadb-install-db");
    install
        .args([
            "--no-defaults",
            "--user=mysql",
            "--skip-test-db",
            "--auth-root-authentication-method=normal",
        ])
        .arg(format!("--datadir={}", data.display()));
    run_ok(install, "mariadb-install-db");
    let port = free_port();
    let log = dir.join("mariadb.log");
    let mut c = Command::new("/usr/sbin/mariadbd");
    std::os::unix::process::CommandExt::process_group(&mut c, 0);
    c.args([
        "--no-defaults",
        "--user=mysql",
        "--bind-address=127.0.0.1",
        "--skip-name-resolve",
    ])
    .arg(format!("--datadir={}", data.display()))
    .arg(format!("--port={port}"))
    .arg(format!("--socket={}", dir.join("mysqld.sock").display()))
    .arg(format!("--pid-file={}", dir.join("mysqld.pid").display()))
    .arg(format!("--log-error={}", log.display()))
    .args(["--innodb-buffer-pool-size=16M", "--performance-schema=off"]);
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = c.spawn().expect("start mariadbd");
    let server = Server {
        child: Some(child),
        port,
        dir,
        log,
    };
    assert!(
        server.wait_log("ready for connections", Duration::from_secs(60)),
        "mariadb did not start:\n{}",
        server.log_text()
    );
    mariadb_sql(
        &server,
        "CREATE DATABASE airflow CHARACTER SET utf8mb3 COLLATE utf8mb3_bin; \
         CREATE USER 'airflow'@'127.0.0.1' IDENTIFIED VIA mysql_native_password USING PASSWORD('my-pw'); \
         GRANT ALL ON airflow.* TO 'airflow'@'127.0.0.1'; \
         CREATE USER 'nobody'@'localhost' IDENTIFIED BY 'x';",
    );
    server
}

/// Runs `sql` as root over the server's Unix socket (the `mariadb` client).
/// Database `airflow`; user `airflow` with password `my-pw` from 127.0.0.1
/// (mysql_native_password).
pub fn mariadb_sql(server: &Server, sql: &str) -> String {
    let out = Command::new("mariadb")
        .args(["--no-defaults", "-uroot", "--batch", "--skip-column-names"])
        .arg(format!(
            "--socket={}",
            server.dir.join("mysqld.sock").display()
        ))
        .args(["-e", sql])
        .output()
        .expect("run the mariadb client");
    assert!(
        out.status.success(),
        "mariadb {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

// --------------------------------------------------------------- RabbitMQ

pub fn start_rabbitmq() -> Server {
    let dir = TempDir::new("rabbit");
    own(dir.path(), "rabbitmq", 0o777);
    let port = free_port();
    let dist = free_port();
    let log = dir.join("rabbit.out");
    let logfile = fs::File::create(&log).unwrap();
    own(&log, "rabbitmq", 0o666);
    let node = format!("aeptest{port}@localhost");
    let mut c = as_user("rabbitmq", "/usr/sbin/rabbitmq-server");
    c.env("RABBITMQ_NODE_PORT", port.to_string())
        .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
        .env("RABBITMQ_DIST_PORT", dist.to_string())
        .env("RABBITMQ_NODENAME", &node)
        .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
        .env("RABBITMQ_LOG_BASE", dir.join("log"))
        .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
        .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq"))
        .env("HOME", dir.path())
        .env("RABBITMQ_LOGS", "-")
        .stdin(Stdio::null())
        .stdout(logfile.try_clone().unwrap())
        .stderr(logfile);
    let child = c.spawn().expect("start rabbitmq-server");
    let server = Server {
        child: Some(child),
        port,
        dir,
        log,
    };
    // The broker logs to its own files; it is up once the port accepts.
    let listening = wait_until(Duration::from_secs(120), || {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .ok()
            .map(|_| ())
    });
    assert!(
        listening.is_some(),
        "rabbitmq did not start:\n{}",
        server.log_text()
    );
    server
}
