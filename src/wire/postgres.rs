//! Postgres probe: (SSLRequest and TLS when asked) a v3 StartupMessage for
//! the URL's user and database, authentication when the URL has a password
//! (SCRAM-SHA-256, md5 or cleartext, via postgres-protocol's SCRAM client),
//! then the server's answer classified by SQLSTATE. Closes with Terminate.
//! For SQL, the same start-up then simple queries (postgres-protocol's
//! message types), their rows as text.

use std::io::Write;
use std::time::Duration;

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use postgres_protocol::message::{backend, frontend};

use super::sql::{push_row, too_big, Rows, SqlError, MAX_COLUMNS};
use super::transport::{connect, read_exact, read_exact_vec, start_tls, write_all, Conn};
use super::url::{Endpoint, Target, Tls};
use super::Verdict;

/// Largest backend message we accept (an error text is small).
const MAX_MESSAGE: usize = 1 << 20;
const SSL_REQUEST_CODE: i32 = 80_877_103;
const PROTOCOL_3_0: i32 = 196_608;

pub fn probe(target: &Target, timeout: Duration) -> Verdict {
    match open(target, timeout) {
        Ok(Opened::Session(mut conn)) => {
            terminate(&mut conn);
            Verdict::Ready
        }
        Ok(Opened::PasswordNotChecked) => Verdict::Ready,
        Err(verdict) => verdict,
    }
}

/// After start-up: a session ready for queries, or a server that asked for
/// a password the URL does not have (which already means it is up).
enum Opened {
    Session(Conn),
    PasswordNotChecked,
}

/// Runs `queries` one after the other on one authenticated session.
pub fn query_all(
    target: &Target,
    timeout: Duration,
    queries: &[&str],
) -> Result<Vec<Result<Rows, SqlError>>, SqlError> {
    let mut conn = match open(target, timeout)? {
        Opened::Session(conn) => conn,
        Opened::PasswordNotChecked => {
            return Err(SqlError::Connection(Verdict::Fatal(
                "the server asks for a password and the URL has none".into(),
            )))
        }
    };
    let mut results = Vec::with_capacity(queries.len());
    for sql in queries {
        results.push(simple_query(&mut conn, sql)?);
    }
    terminate(&mut conn);
    Ok(results)
}

fn terminate(conn: &mut Conn) {
    // Politely, whatever happened; the server may already be gone.
    let mut buf = BytesMut::new();
    frontend::terminate(&mut buf);
    let _ = conn.write_all(&buf);
    let _ = conn.flush();
}

/// One simple query: its rows, or the server's error for it. The outer
/// error is the connection failing (then the session is lost).
fn simple_query(conn: &mut Conn, sql: &str) -> Result<Result<Rows, SqlError>, SqlError> {
    let mut buf = BytesMut::new();
    frontend::query(sql, &mut buf)
        .map_err(|e| Verdict::Fatal(format!("cannot encode the query: {e}")))?;
    write_all(conn, &buf)?;
    let mut rows = Rows::default();
    let mut failure = None;
    let mut bytes = 0;
    loop {
        let (tag, body) = read_message(conn)?;
        let mut raw = BytesMut::with_capacity(body.len() + 5);
        raw.extend_from_slice(&[tag]);
        raw.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        raw.extend_from_slice(&body);
        let message = backend::Message::parse(&mut raw)
            .ok()
            .flatten()
            .ok_or_else(|| {
                Verdict::Fatal(format!("malformed message {tag:#04x} from the server"))
            })?;
        match message {
            backend::Message::RowDescription(description) => {
                let mut fields = description.fields();
                while let Ok(Some(field)) = fields.next() {
                    if rows.columns.len() >= MAX_COLUMNS {
                        return Err(too_big(&format!("more than {MAX_COLUMNS} columns")));
                    }
                    rows.columns.push(field.name().to_string());
                }
            }
            backend::Message::DataRow(data) => {
                let buffer = data.buffer();
                let mut values = Vec::with_capacity(rows.columns.len());
                let mut ranges = data.ranges();
                while let Ok(Some(range)) = ranges.next() {
                    if values.len() >= MAX_COLUMNS {
                        return Err(too_big(&format!("more than {MAX_COLUMNS} columns")));
                    }
                    values.push(range.map(|r| {
                        String::from_utf8_lossy(buffer.get(r).unwrap_or_default()).into_owned()
                    }));
                }
                push_row(&mut rows, values, &mut bytes)?;
            }
            backend::Message::ErrorResponse(error) => {
                let (mut sqlstate, mut message) = (String::new(), String::new());
                let mut fields = error.fields();
                while let Ok(Some(field)) = fields.next() {
                    match field.type_() {
                        b'C' => {
                            sqlstate = String::from_utf8_lossy(field.value_bytes()).into_owned()
                        }
                        b'M' => {
                            message = super::server_text(
                                &String::from_utf8_lossy(field.value_bytes()),
                                &[],
                            )
                        }
                        _ => {}
                    }
                }
                failure = Some(SqlError::Server {
                    sqlstate,
                    code: 0,
                    message,
                });
            }
            backend::Message::ReadyForQuery(_) => {
                return Ok(failure.map_or(Ok(rows), Err));
            }
            // CommandComplete, EmptyQueryResponse, notices, parameter changes
            _ => continue,
        }
    }
}

fn open(target: &Target, timeout: Duration) -> Result<Opened, Verdict> {
    let endpoint = target
        .endpoints
        .first()
        .ok_or_else(|| Verdict::Fatal("no host to connect to".into()))?;
    let mut socket = connect(endpoint, timeout)?;
    let mut conn = match (&target.tls, endpoint) {
        (Tls::Off, _) | (_, Endpoint::Unix { .. }) => socket,
        (tls, Endpoint::Tcp { host, .. }) => {
            let mut request = Vec::with_capacity(8);
            request.extend_from_slice(&8i32.to_be_bytes());
            request.extend_from_slice(&SSL_REQUEST_CODE.to_be_bytes());
            write_all(&mut socket, &request)?;
            let mut answer = [0u8; 1];
            read_exact(&mut socket, &mut answer)?;
            match answer[0] {
                b'S' => start_tls(socket, host, tls, target.tls_root_cert.as_deref())?,
                b'N' => {
                    return Err(Verdict::Fatal(
                        "the server does not accept SSL, but the URL's sslmode requires it".into(),
                    ))
                }
                b'E' => return Err(Verdict::NotYet("the server refused the SSL request".into())),
                other => {
                    return Err(Verdict::Fatal(format!(
                        "not a Postgres server (answered {other:#04x} to SSLRequest)"
                    )))
                }
            }
        }
    };
    let user = target.user.clone().unwrap_or_else(|| "postgres".into());
    let database = target.database.clone().unwrap_or_else(|| user.clone());
    write_all(&mut conn, &startup_message(&user, &database))?;
    match converse(&mut conn, &user, target.password.as_deref()) {
        Verdict::Ready => Ok(Opened::Session(conn)),
        Verdict::NotYet(reason) if reason == PASSWORD_NOT_CHECKED => {
            terminate(&mut conn);
            Ok(Opened::PasswordNotChecked)
        }
        other => {
            terminate(&mut conn);
            Err(other)
        }
    }
}

/// The reason `converse` gives for a server that wants a password we lack.
const PASSWORD_NOT_CHECKED: &str = "password requested, none in the URL";

fn startup_message(user: &str, database: &str) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&PROTOCOL_3_0.to_be_bytes());
    for (key, value) in [
        ("user", user),
        ("database", database),
        ("application_name", "airflow-entrypoint"),
    ] {
        body.extend_from_slice(key.as_bytes());
        body.push(0);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut message = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    message.extend_from_slice(&body);
    message
}

fn frontend(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut message = vec![tag];
    message.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    message.extend_from_slice(body);
    message
}

fn read_message(conn: &mut impl std::io::Read) -> Result<(u8, Vec<u8>), Verdict> {
    let mut header = [0u8; 5];
    read_exact(conn, &mut header)?;
    let len = i32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    let len = usize::try_from(len).unwrap_or(0);
    if !(4..=MAX_MESSAGE).contains(&len) {
        return Err(Verdict::Fatal(format!(
            "not a Postgres server (message length {len})"
        )));
    }
    Ok((header[0], read_exact_vec(conn, len - 4)?))
}

fn be_i32(bytes: &[u8]) -> Option<i32> {
    Some(i32::from_be_bytes(bytes.get(..4)?.try_into().ok()?))
}

/// Reads the server's answers until it is ready, asks for a password we do
/// not have (which already means it is up), or refuses.
fn converse(conn: &mut Conn, user: &str, password: Option<&str>) -> Verdict {
    let mut scram: Option<ScramSha256> = None;
    for _ in 0..32 {
        let (tag, body) = match read_message(conn) {
            Ok(m) => m,
            Err(v) => return v,
        };
        match tag {
            b'R' => {
                let code = be_i32(&body).unwrap_or(-1);
                let rest = body.get(4..).unwrap_or_default();
                let reply = match (code, password) {
                    (0, _) => continue, // AuthenticationOk: wait for ReadyForQuery or an error
                    // Up; a password we lack cannot be checked.
                    (3 | 5 | 10, None) => return Verdict::NotYet(PASSWORD_NOT_CHECKED.into()),
                    (3, Some(pw)) => {
                        let mut b = pw.as_bytes().to_vec();
                        b.push(0);
                        frontend(b'p', &b)
                    }
                    (5, Some(pw)) => {
                        let salt: [u8; 4] = match rest.get(..4).and_then(|s| s.try_into().ok()) {
                            Some(s) => s,
                            None => return Verdict::Fatal("malformed md5 request".into()),
                        };
                        let mut b = md5_hash(user.as_bytes(), pw.as_bytes(), salt).into_bytes();
                        b.push(0);
                        frontend(b'p', &b)
                    }
                    (10, Some(pw)) => {
                        let mechanisms = String::from_utf8_lossy(rest);
                        if !mechanisms.split('\0').any(|m| m == SCRAM_SHA_256) {
                            return Verdict::Fatal(format!(
                                "the server offers no SASL mechanism we speak ({})",
                                mechanisms.replace('\0', " ").trim()
                            ));
                        }
                        let client = ScramSha256::new(pw.as_bytes(), ChannelBinding::unsupported());
                        let first = client.message().to_vec();
                        scram = Some(client);
                        let mut b = SCRAM_SHA_256.as_bytes().to_vec();
                        b.push(0);
                        b.extend_from_slice(&(first.len() as i32).to_be_bytes());
                        b.extend_from_slice(&first);
                        frontend(b'p', &b)
                    }
                    (11, Some(_)) => match scram.as_mut().map(|s| s.update(rest)) {
                        Some(Ok(())) => frontend(
                            b'p',
                            scram.as_ref().map(|s| s.message()).unwrap_or_default(),
                        ),
                        _ => {
                            return Verdict::Fatal(
                                "SCRAM authentication failed (bad server message)".into(),
                            )
                        }
                    },
                    (12, Some(_)) => match scram.as_mut().map(|s| s.finish(rest)) {
                        Some(Ok(())) => continue,
                        _ => return Verdict::Fatal(
                            "SCRAM authentication failed: the server's signature did not verify"
                                .into(),
                        ),
                    },
                    (other, _) => {
                        return Verdict::Fatal(format!(
                            "unsupported authentication method (code {other})"
                        ))
                    }
                };
                if let Err(v) = write_all(conn, &reply) {
                    return v;
                }
            }
            b'E' => return classify_error(&body),
            b'Z' => return Verdict::Ready,
            // ParameterStatus, BackendKeyData, NoticeResponse, NegotiateProtocolVersion
            b'S' | b'K' | b'N' | b'v' => continue,
            other => {
                return Verdict::Fatal(format!(
                    "not a Postgres server (unexpected message {other:#04x})"
                ))
            }
        }
    }
    Verdict::NotYet("the server did not finish the start-up exchange".into())
}

/// ErrorResponse fields → a verdict by SQLSTATE.
fn classify_error(body: &[u8]) -> Verdict {
    let mut code = String::new();
    let mut message = String::new();
    for field in body.split(|b| *b == 0) {
        match field.split_first() {
            Some((b'C', v)) => code = String::from_utf8_lossy(v).into_owned(),
            Some((b'M', v)) => message = super::server_text(&String::from_utf8_lossy(v), &[]),
            _ => {}
        }
    }
    classify_sqlstate(&code, &message)
}

pub fn classify_sqlstate(code: &str, message: &str) -> Verdict {
    match code {
        "57P03" | "53300" => Verdict::NotYet(message.to_string()),
        "28000" => Verdict::Fatal(format!("{message} (SQLSTATE 28000: pg_hba.conf rejects this host or user; fix pg_hba.conf or the user)")),
        "28P01" => Verdict::Fatal(format!("{message} (SQLSTATE 28P01: wrong password)")),
        "3D000" => Verdict::Fatal(format!("{message} (SQLSTATE 3D000: create the database or fix the URL)")),
        c if c.starts_with("28") || c.starts_with("3D") || c.starts_with("42") => {
            Verdict::Fatal(format!("{message} (SQLSTATE {c})"))
        }
        c => Verdict::NotYet(format!("{message} (SQLSTATE {c})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scripted server: what it will send; what we send is dropped.
    struct Scripted(std::io::Cursor<Vec<u8>>);

    impl std::io::Read for Scripted {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.0.read(buf)
        }
    }

    impl std::io::Write for Scripted {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn scripted(server: &[u8]) -> Conn {
        Box::new(Scripted(std::io::Cursor::new(server.to_vec())))
    }

    fn message(tag: u8, body: &[u8]) -> Vec<u8> {
        frontend(tag, body)
    }

    fn row_description(names: &[&str]) -> Vec<u8> {
        let mut body = (names.len() as i16).to_be_bytes().to_vec();
        for name in names {
            body.extend_from_slice(name.as_bytes());
            body.push(0);
            body.extend_from_slice(&[0; 18]);
        }
        message(b'T', &body)
    }

    fn data_row(values: &[Option<&str>]) -> Vec<u8> {
        let mut body = (values.len() as i16).to_be_bytes().to_vec();
        for value in values {
            match value {
                Some(v) => {
                    body.extend_from_slice(&(v.len() as i32).to_be_bytes());
                    body.extend_from_slice(v.as_bytes());
                }
                None => body.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        message(b'D', &body)
    }

    fn ready() -> Vec<u8> {
        message(b'Z', b"I")
    }

    fn noise(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed ^ 0x9e37_79b9_7f4a_7c15;
        (0..len)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (x >> 33) as u8
            })
            .collect()
    }

    #[test]
    fn rows_are_read_and_answers_past_the_caps_fail_with_one_line() {
        let mut server = row_description(&["v"]);
        server.extend(data_row(&[Some("abc")]));
        server.extend(data_row(&[None]));
        server.extend(message(b'C', b"SELECT 2\0"));
        server.extend(ready());
        let rows = simple_query(&mut scripted(&server), "SELECT 1")
            .unwrap()
            .unwrap();
        assert_eq!(rows.columns, ["v"]);
        assert_eq!(rows.rows, [vec![Some("abc".to_string())], vec![None]]);

        let mut server = row_description(&["v"]);
        for _ in 0..=crate::wire::sql::MAX_ROWS {
            server.extend(data_row(&[Some("x")]));
        }
        match simple_query(&mut scripted(&server), "SELECT 1") {
            Err(SqlError::Connection(Verdict::Fatal(m))) => assert!(m.contains("rows"), "{m}"),
            other => panic!("{other:?}"),
        }
        let names: Vec<String> = (0..100).map(|i| format!("c{i}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        match simple_query(&mut scripted(&row_description(&names)), "SELECT 1") {
            Err(SqlError::Connection(Verdict::Fatal(m))) => assert!(m.contains("columns"), "{m}"),
            other => panic!("{other:?}"),
        }
        let big = "y".repeat(900_000);
        let mut server = row_description(&["v"]);
        for _ in 0..6 {
            server.extend(data_row(&[Some(&big)]));
        }
        match simple_query(&mut scripted(&server), "SELECT 1") {
            Err(SqlError::Connection(Verdict::Fatal(m))) => assert!(m.contains("bytes"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_announced_length_is_refused_or_read_as_it_arrives() {
        let mut huge = vec![b'D'];
        huge.extend_from_slice(&i32::MAX.to_be_bytes());
        assert!(matches!(
            read_message(&mut scripted(&huge)),
            Err(Verdict::Fatal(_))
        ));
        let mut short = vec![b'D'];
        short.extend_from_slice(&(MAX_MESSAGE as i32).to_be_bytes());
        short.extend_from_slice(b"abc");
        assert!(matches!(
            read_message(&mut scripted(&short)),
            Err(Verdict::NotYet(_))
        ));
    }

    #[test]
    fn truncated_and_malformed_replies_do_not_panic() {
        let mut whole = row_description(&["a", "b"]);
        whole.extend(data_row(&[Some("x"), None]));
        whole.extend(message(b'E', b"SERROR\0C42P01\0Mno table\0\0"));
        whole.extend(ready());
        for end in 0..whole.len() {
            let _ = simple_query(&mut scripted(&whole[..end]), "SELECT 1");
            let _ = converse(&mut scripted(&whole[..end]), "u", Some("pw"));
        }
        let mut login = message(b'R', &[0, 0, 0, 10]);
        login.extend_from_slice(b"SCRAM-SHA-256\0\0");
        let mut login_continue = login.clone();
        login_continue.extend(message(b'R', &[&[0, 0, 0, 11][..], b"r=x,s=,i=0"].concat()));
        for seed in 0..500 {
            let mut server = whole.clone();
            let at = seed as usize % server.len();
            server[at] ^= (seed as u8) | 1;
            let _ = simple_query(&mut scripted(&server), "SELECT 1");
            let _ = converse(&mut scripted(&server), "u", Some("pw"));
            let _ = converse(&mut scripted(&noise(seed, 64)), "u", Some("pw"));
            let mut auth = login_continue.clone();
            let at = 5 + seed as usize % (auth.len() - 5);
            auth[at] ^= (seed as u8) | 1;
            let _ = converse(&mut scripted(&auth), "u", Some("pw"));
        }
        for code in [3u8, 5, 10, 11, 12, 99] {
            let _ = converse(
                &mut scripted(&message(b'R', &[0, 0, 0, code])),
                "u",
                Some("pw"),
            );
            let _ = converse(&mut scripted(&message(b'R', &[0, 0, 0, code])), "u", None);
        }
    }

    #[test]
    fn startup_message_is_well_formed() {
        let m = startup_message("airflow", "db");
        assert_eq!(be_i32(&m).unwrap() as usize, m.len());
        assert_eq!(be_i32(&m[4..]).unwrap(), PROTOCOL_3_0);
        assert!(m.ends_with(b"airflow-entrypoint\0\0"));
    }

    #[test]
    fn sqlstates_are_classified() {
        assert!(matches!(
            classify_sqlstate("57P03", "starting up"),
            Verdict::NotYet(_)
        ));
        assert!(matches!(
            classify_sqlstate("53300", "too many"),
            Verdict::NotYet(_)
        ));
        for fatal in ["28000", "28P01", "3D000"] {
            assert!(
                matches!(classify_sqlstate(fatal, "x"), Verdict::Fatal(_)),
                "{fatal}"
            );
        }
    }

    #[test]
    fn error_fields_parse() {
        let body = b"SFATAL\0C3D000\0Mdatabase \"nope\" does not exist\0\0";
        match classify_error(body) {
            Verdict::Fatal(m) => assert!(m.contains("does not exist") && m.contains("3D000")),
            other => panic!("{other:?}"),
        }
    }
}
