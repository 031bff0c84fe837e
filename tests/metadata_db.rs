//! SQL on the metadata database: MySQL/MariaDB authentication (real
//! MariaDB with mysql_native_password; a fake server for MySQL 8's
//! caching_sha2_password fast path and RSA full authentication, which no
//! server here speaks), and the schema wait against real PostgreSQL and
//! MariaDB with the alembic tables of a real Airflow 3.3.2 install.

mod support;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};
use support::servers::*;
use support::wire_bytes::mysql_packet;
use support::*;

const HEAD: &str = "d2f4e1b3c5a7";
const FAB_HEAD: &str = "02ca36b0235b";

fn error_lines(f: &Finished) -> Vec<&str> {
    f.stderr.lines().filter(|l| l.contains("ERROR")).collect()
}

// ------------------------------------------------------------- MariaDB

#[test]
fn mariadb_login_errors_are_fatal_at_once_and_the_right_password_is_ready() {
    if !needs_root("mariadb_login_errors_are_fatal_at_once") {
        return;
    }
    let server = start_mariadb();
    let url = |user: &str, pw: &str, db: &str| {
        format!("mysql+mysqldb://{user}:{pw}@127.0.0.1:{}/{db}", server.port)
    };
    let f = wait_db(&url("airflow", "my-pw", "airflow")).run(secs(30));
    f.expect_code(0);
    assert_no_secret(&f, "my-pw");

    for (user, pw, db, code) in [
        ("airflow", "wrong-secret-pw", "airflow", "1045"),
        ("airflow", "my-pw", "no_such_db", "1044"),
    ] {
        let started = Instant::now();
        let f = wait_db(&url(user, pw, db)).run(secs(30));
        f.expect_code(69);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "not at once: {:?}\n{}",
            started.elapsed(),
            f.stderr
        );
        let errors = error_lines(&f);
        assert_eq!(errors.len(), 1, "{}", f.stderr);
        assert!(errors[0].contains(code), "{}", f.stderr);
        assert_no_secret(&f, pw);
    }
    // A database that does not exist for a user allowed everywhere: 1049.
    mariadb_sql(
        &server,
        "GRANT ALL ON *.* TO 'airflow'@'127.0.0.1'; FLUSH PRIVILEGES;",
    );
    let f = wait_db(&url("airflow", "my-pw", "no_such_db")).run(secs(30));
    f.expect_code(69);
    assert!(f.stderr.contains("1049"), "{}", f.stderr);
}

// ------------------------------------------- caching_sha2_password fake

/// What the fake MySQL 8 server does after the handshake response.
#[derive(Clone, Copy, PartialEq)]
enum Sha2Path {
    /// The password's hash is cached: verify the scramble, 0x03, OK.
    Fast,
    /// Not cached and no TLS: 0x04, the client asks for the key (0x02),
    /// gets the PEM and sends the RSA-encrypted password.
    FullRsa,
    /// Not cached, over TLS (SSLRequest first): 0x04, and the password
    /// comes in clear inside the TLS stream.
    FullTls,
}

fn read_packet(s: &mut impl Read) -> (u8, Vec<u8>) {
    let mut h = [0u8; 4];
    s.read_exact(&mut h).unwrap();
    let len = h[0] as usize | (h[1] as usize) << 8 | (h[2] as usize) << 16;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    (h[3], body)
}

const NONCE: &[u8; 20] = b"abcdefghij0123456789";

fn greeting(tls: bool) -> Vec<u8> {
    // protocol 10, version, connection id, nonce[..8], filler, capabilities
    // (PROTOCOL_41 | SECURE_CONNECTION | PLUGIN_AUTH | CONNECT_WITH_DB |
    // LONG_PASSWORD | LONG_FLAG | TRANSACTIONS | PLUGIN_AUTH_LENENC), the
    // charset, status, nonce length, reserved, nonce[8..], the plugin.
    let tls_flag: u32 = if tls { 0x0000_0800 } else { 0 };
    let caps: u32 = tls_flag
        | 0x0000_0001
        | 0x0000_0004
        | 0x0000_0008
        | 0x0000_0200
        | 0x0000_2000
        | 0x0000_8000
        | 0x0008_0000
        | 0x0020_0000;
    let mut g = vec![10];
    g.extend_from_slice(b"8.0.36\0");
    g.extend_from_slice(&7u32.to_le_bytes());
    g.extend_from_slice(&NONCE[..8]);
    g.push(0);
    g.extend_from_slice(&(caps as u16).to_le_bytes());
    g.push(45);
    g.extend_from_slice(&2u16.to_le_bytes());
    g.extend_from_slice(&((caps >> 16) as u16).to_le_bytes());
    g.push(21);
    g.extend_from_slice(&[0u8; 10]);
    g.extend_from_slice(&NONCE[8..]);
    g.push(0);
    g.extend_from_slice(b"caching_sha2_password\0");
    g
}

/// The scramble in a HandshakeResponse41 with lenenc auth data.
fn scramble_of(response: &[u8]) -> Vec<u8> {
    let rest = &response[32..];
    let user_end = rest.iter().position(|b| *b == 0).unwrap();
    let rest = &rest[user_end + 1..];
    let len = rest[0] as usize;
    rest[1..1 + len].to_vec()
}

fn sha256(data: &[u8]) -> Vec<u8> {
    let out = std::process::Command::new("openssl")
        .args(["dgst", "-sha256", "-binary"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(data)?;
            c.wait_with_output()
        })
        .unwrap();
    out.stdout
}

/// XOR(SHA256(pw), SHA256(SHA256(SHA256(pw)) + nonce)), as MySQL computes it.
fn expected_scramble(password: &[u8]) -> Vec<u8> {
    let h1 = sha256(password);
    let h2 = sha256(&h1);
    let mut h2n = h2.clone();
    h2n.extend_from_slice(NONCE);
    let h3 = sha256(&h2n);
    h1.iter().zip(h3).map(|(a, b)| a ^ b).collect()
}

struct FakeMysql {
    port: u16,
    handle: Option<std::thread::JoinHandle<Result<(), String>>>,
}

impl FakeMysql {
    fn start(path: Sha2Path, password: &'static str, key_dir: &TempDir) -> FakeMysql {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let key = key_dir.join("private.pem");
        let public = key_dir.join("public.pem");
        if path == Sha2Path::FullRsa {
            for args in [
                vec![
                    "genpkey",
                    "-algorithm",
                    "RSA",
                    "-pkeyopt",
                    "rsa_keygen_bits:2048",
                    "-out",
                ],
                vec!["pkey", "-pubout", "-in"],
            ] {
                let mut c = std::process::Command::new("openssl");
                c.args(&args);
                if args[0] == "genpkey" {
                    c.arg(&key);
                } else {
                    c.arg(&key).arg("-out").arg(&public);
                }
                assert!(c.output().unwrap().status.success());
            }
        }
        if path == Sha2Path::FullTls {
            let mut c = std::process::Command::new("openssl");
            c.args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=127.0.0.1",
                "-keyout",
            ])
            .arg(key_dir.join("tls.key"))
            .arg("-out")
            .arg(key_dir.join("tls.crt"));
            assert!(c.output().unwrap().status.success());
        }
        let key_dir_path = key_dir.path().to_path_buf();
        let handle = std::thread::spawn(move || -> Result<(), String> {
            let (mut s, _) = listener.accept().map_err(|e| e.to_string())?;
            s.set_read_timeout(Some(Duration::from_secs(20))).ok();
            s.write_all(&mysql_packet(0, &greeting(path == Sha2Path::FullTls)))
                .unwrap();
            if path == Sha2Path::FullTls {
                let (_, ssl_request) = read_packet(&mut s);
                if ssl_request.len() != 32 || ssl_request[1] & 0x08 == 0 {
                    return Err(format!("expected an SSLRequest, got {ssl_request:?}"));
                }
                let mut tls = tls_server(&key_dir_path, s);
                let (_, response) = read_packet(&mut tls);
                if response.len() < 33 {
                    return Err("no handshake response over TLS".into());
                }
                tls.write_all(&mysql_packet(3, &[0x01, 0x04])).unwrap();
                let (seq, clear) = read_packet(&mut tls);
                let mut want = password.as_bytes().to_vec();
                want.push(0);
                if clear != want {
                    return Err("wrong password over TLS".into());
                }
                tls.write_all(&mysql_packet(seq + 1, &[0, 0, 0, 2, 0, 0, 0]))
                    .unwrap();
                tls.flush().unwrap();
                let _ = read_packet(&mut tls); // COM_QUIT
                return Ok(());
            }
            let (_, response) = read_packet(&mut s);
            let ok = mysql_packet(0, &[0, 0, 0, 2, 0, 0, 0]);
            let deny = |s: &mut TcpStream, seq: u8| {
                let mut e = vec![0xff, 0x15, 0x04];
                e.extend_from_slice(
                    b"#28000Access denied for user 'airflow'@'127.0.0.1' (using password: YES)",
                );
                s.write_all(&mysql_packet(seq, &e)).unwrap();
            };
            match path {
                Sha2Path::Fast => {
                    if scramble_of(&response) != expected_scramble(password.as_bytes()) {
                        deny(&mut s, 2);
                        return Err("wrong scramble".into());
                    }
                    s.write_all(&mysql_packet(2, &[0x01, 0x03])).unwrap();
                    let mut ok = ok;
                    ok[3] = 3;
                    s.write_all(&ok).unwrap();
                }
                Sha2Path::FullTls => unreachable!(),
                Sha2Path::FullRsa => {
                    s.write_all(&mysql_packet(2, &[0x01, 0x04])).unwrap();
                    let (seq, ask) = read_packet(&mut s);
                    if ask != [0x02] {
                        return Err(format!("expected a key request, got {ask:?}"));
                    }
                    let mut pem = vec![0x01];
                    pem.extend_from_slice(&std::fs::read(&public).unwrap());
                    s.write_all(&mysql_packet(seq + 1, &pem)).unwrap();
                    let (seq, encrypted) = read_packet(&mut s);
                    let cipher = key.with_extension("bin");
                    std::fs::write(&cipher, &encrypted).unwrap();
                    let out = std::process::Command::new("openssl")
                        .args([
                            "pkeyutl",
                            "-decrypt",
                            "-pkeyopt",
                            "rsa_padding_mode:oaep",
                            "-inkey",
                        ])
                        .arg(&key)
                        .arg("-in")
                        .arg(&cipher)
                        .output()
                        .unwrap();
                    let plain: Vec<u8> = out
                        .stdout
                        .iter()
                        .enumerate()
                        .map(|(i, b)| b ^ NONCE[i % NONCE.len()])
                        .collect();
                    let mut want = password.as_bytes().to_vec();
                    want.push(0);
                    if plain != want {
                        deny(&mut s, seq + 1);
                        return Err("wrong decrypted password".into());
                    }
                    let mut ok = ok;
                    ok[3] = seq + 1;
                    s.write_all(&ok).unwrap();
                }
            }
            Ok(())
        });
        FakeMysql {
            port,
            handle: Some(handle),
        }
    }
    fn verdict(mut self) -> Result<(), String> {
        self.handle.take().unwrap().join().unwrap()
    }
}

/// A TLS server side over `socket` with the certificate in `dir`.
fn tls_server(
    dir: &std::path::Path,
    socket: TcpStream,
) -> rustls::StreamOwned<rustls::ServerConnection, TcpStream> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = vec![CertificateDer::from_pem_file(dir.join("tls.crt")).unwrap()];
    let key = PrivateKeyDer::from_pem_file(dir.join("tls.key")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let conn = rustls::ServerConnection::new(std::sync::Arc::new(config)).unwrap();
    rustls::StreamOwned::new(conn, socket)
}

#[test]
fn caching_sha2_full_authentication_over_tls_sends_the_password_inside_it() {
    let keys = TempDir::new("sha2-tls");
    let fake = FakeMysql::start(Sha2Path::FullTls, "tls-secret", &keys);
    let f = wait_db(&format!(
        "mysql://airflow:tls-secret@127.0.0.1:{}/airflow?ssl_mode=REQUIRED",
        fake.port
    ))
    .run(secs(30));
    f.expect_code(0);
    assert_no_secret(&f, "tls-secret");
    fake.verdict().unwrap();
}

#[test]
fn caching_sha2_fast_path_authenticates() {
    let keys = TempDir::new("sha2-fast");
    let fake = FakeMysql::start(Sha2Path::Fast, "sha2-secret", &keys);
    let f = wait_db(&format!(
        "mysql://airflow:sha2-secret@127.0.0.1:{}/airflow",
        fake.port
    ))
    .run(secs(30));
    f.expect_code(0);
    assert_no_secret(&f, "sha2-secret");
    fake.verdict().unwrap();

    let fake = FakeMysql::start(Sha2Path::Fast, "sha2-secret", &keys);
    let f = wait_db(&format!(
        "mysql://airflow:other-secret@127.0.0.1:{}/airflow",
        fake.port
    ))
    .run(secs(30));
    f.expect_code(69);
    assert!(f.stderr.contains("1045"), "{}", f.stderr);
    assert_no_secret(&f, "other-secret");
    assert!(fake.verdict().is_err());
}

#[test]
fn caching_sha2_full_authentication_uses_the_servers_rsa_key() {
    let keys = TempDir::new("sha2-rsa");
    let fake = FakeMysql::start(Sha2Path::FullRsa, "rsa-secret", &keys);
    let f = wait_db(&format!(
        "mysql://airflow:rsa-secret@127.0.0.1:{}/airflow",
        fake.port
    ))
    .run(secs(30));
    f.expect_code(0);
    assert_no_secret(&f, "rsa-secret");
    fake.verdict().unwrap();
}

// --------------------------------------------------------- schema wait

/// `--wait-only --wait-for-migrations` with the venv's airflow on PATH.
fn wait_schema(venv: &std::path::Path, url: &str, timeout: &str) -> Run {
    wait_db(url)
        .env("PATH", format!("{}/bin:/usr/bin:/bin", venv.display()))
        .env("AIRFLOW_ENTRYPOINT_WAIT_TIMEOUT", timeout)
        .arg("--wait-for-migrations")
}

fn schema_wait_follows_the_tables(url: &str, sql: &dyn Fn(&str), venv: &std::path::Path) {
    // No tables yet: it says what it waits for, and gives up with 69.
    let f = wait_schema(venv, url, "1.5").run(secs(30));
    f.expect_code(69);
    assert!(
        f.stderr
            .contains(&format!("Airflow schema at empty, waiting for {HEAD}")),
        "{}",
        f.stderr
    );
    sql("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL); INSERT INTO alembic_version VALUES ('9fc3fc5de720');");
    sql(&format!(
        "CREATE TABLE alembic_version_fab (version_num VARCHAR(32) NOT NULL); INSERT INTO alembic_version_fab VALUES ('{FAB_HEAD}');"
    ));
    // Behind: waits, and passes as soon as the head is written.
    let mut running = wait_schema(venv, url, "60").start();
    let waiting = wait_until(secs(30), || {
        running
            .dir
            .read("stderr")
            .contains(&format!("schema at 9fc3fc5de720, waiting for {HEAD}"))
            .then_some(())
    });
    assert!(waiting.is_some(), "{}", running.dir.read("stderr"));
    sql(&format!(
        "UPDATE alembic_version SET version_num = '{HEAD}';"
    ));
    let written = Instant::now();
    let status = running.wait(secs(30));
    assert_eq!(status.code(), Some(0));
    assert!(written.elapsed() < Duration::from_secs(5));
    // FAB behind: still waiting.
    sql("UPDATE alembic_version_fab SET version_num = '6709f7a774b9';");
    let f = wait_schema(venv, url, "1").run(secs(30));
    f.expect_code(69);
    assert!(
        f.stderr.contains(&format!(
            "FAB schema at 6709f7a774b9, waiting for {FAB_HEAD}"
        )),
        "{}",
        f.stderr
    );
    sql(&format!(
        "UPDATE alembic_version_fab SET version_num = '{FAB_HEAD}';"
    ));
    // A revision this Airflow does not know: fatal at once, naming both.
    sql("UPDATE alembic_version SET version_num = 'ffffffffffff';");
    let started = Instant::now();
    let f = wait_schema(venv, url, "30").run(secs(40));
    f.expect_code(69);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        f.stderr.contains("ffffffffffff") && f.stderr.contains(HEAD),
        "{}",
        f.stderr
    );
}

#[test]
fn the_schema_wait_on_postgres_follows_alembic_version() {
    if !needs_root("the_schema_wait_on_postgres") {
        return;
    }
    let Some(venv) = airflow_venv("3.3.2", "the_schema_wait_on_postgres") else {
        return;
    };
    let cluster = PgCluster::init(false);
    let pg = cluster.start();
    assert!(pg.wait_log("ready to accept connections", secs(60)));
    let url = format!(
        "postgresql+psycopg2://airflow:airflow-pw@127.0.0.1:{}/airflow",
        cluster.port
    );
    let sql = |text: &str| {
        cluster.psql_as_airflow(text);
    };
    schema_wait_follows_the_tables(&url, &sql, &venv);
}

#[test]
fn the_schema_wait_on_mariadb_follows_alembic_version() {
    if !needs_root("the_schema_wait_on_mariadb") {
        return;
    }
    let Some(venv) = airflow_venv("3.3.2", "the_schema_wait_on_mariadb") else {
        return;
    };
    let server = start_mariadb();
    let url = format!(
        "mysql+pymysql://airflow:my-pw@127.0.0.1:{}/airflow",
        server.port
    );
    let sql = |text: &str| {
        mariadb_sql(&server, &format!("USE airflow; {text}"));
    };
    schema_wait_follows_the_tables(&url, &sql, &venv);
}

#[test]
fn the_schema_wait_is_also_the_login_check() {
    if !needs_root("the_schema_wait_is_also_the_login_check") {
        return;
    }
    let Some(venv) = airflow_venv("3.3.2", "the_schema_wait_is_also_the_login_check") else {
        return;
    };
    // Nothing listens yet: it keeps trying and says why, within the budget.
    let cluster = PgCluster::init(false);
    let url = |pw: &str| {
        format!(
            "postgresql://airflow:{pw}@127.0.0.1:{}/airflow",
            cluster.port
        )
    };
    let f = wait_schema(&venv, &url("airflow-pw"), "1").run(secs(30));
    f.expect_code(69);
    assert!(f.stderr.contains("connection refused"), "{}", f.stderr);
    // A wrong password: fatal at once, one line, no password.
    let pg = cluster.start();
    assert!(pg.wait_log("ready to accept connections", secs(60)));
    let started = Instant::now();
    let f = wait_schema(&venv, &url("not-the-pw"), "30").run(secs(40));
    f.expect_code(69);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(f.stderr.contains("28P01"), "{}", f.stderr);
    assert_eq!(error_lines(&f).len(), 1, "{}", f.stderr);
    assert_no_secret(&f, "not-the-pw");
}
