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

use super::sql::{Rows, SqlError};
use super::transport::{connect, read_exact, start_tls, write_all, Conn};
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
                    rows.columns.push(field.name().to_string());
                }
            }
            backend::Message::DataRow(data) => {
                let buffer = data.buffer();
                let mut values = Vec::with_capacity(rows.columns.len());
                let mut ranges = data.ranges();
                while let Ok(Some(range)) = ranges.next() {
                    values.push(range.map(|r| {
                        String::from_utf8_lossy(buffer.get(r).unwrap_or_default()).into_owned()
                    }));
                }
                rows.rows.push(values);
            }
            backend::Message::ErrorResponse(error) => {
                let (mut sqlstate, mut message) = (String::new(), String::new());
                let mut fields = error.fields();
                while let Ok(Some(field)) = fields.next() {
                    match field.type_() {
                        b'C' => {
                            sqlstate = String::from_utf8_lossy(field.value_bytes()).into_owned()
                        }
                        b'M' => message = String::from_utf8_lossy(field.value_bytes()).into_owned(),
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

fn read_message(conn: &mut Conn) -> Result<(u8, Vec<u8>), Verdict> {
    let mut header = [0u8; 5];
    read_exact(conn, &mut header)?;
    let len = i32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    let len = usize::try_from(len).unwrap_or(0);
    if !(4..=MAX_MESSAGE).contains(&len) {
        return Err(Verdict::Fatal(format!(
            "not a Postgres server (message length {len})"
        )));
    }
    let mut body = vec![0u8; len - 4];
    read_exact(conn, &mut body)?;
    Ok((header[0], body))
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
            Some((b'M', v)) => message = String::from_utf8_lossy(v).into_owned(),
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
