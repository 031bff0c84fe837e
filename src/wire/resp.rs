//! A Redis session in RESP2 for a short conversation: log in (AUTH, SELECT)
//! and send commands, reading each reply with bounds on its size and depth.
//! Owns the RESP encoding and decoding; it never retries, never sleeps and
//! never lets a server's error text out without `redact`.

use std::io::{BufRead, BufReader, Read, Write};
use std::time::Instant;

use super::transport::{io_reason, Conn};
use super::url::{Kind, Target};
use super::Verdict;

/// The largest bulk string a reply may hold (a Celery reply is a few kB).
pub const MAX_BULK: usize = 1 << 20;
/// The most elements an array may hold, and how deep arrays may nest.
const MAX_ITEMS: usize = 1024;
const MAX_DEPTH: usize = 4;
/// The longest simple-string, error or length line.
const MAX_LINE: usize = 4096;
/// The most one whole reply may hold, however it nests: the limits above
/// apply to each part, and without these arrays of arrays of bulk strings
/// would let a server fill memory for as long as the deadline allows.
const MAX_REPLY_BYTES: usize = 4 * MAX_BULK;
const MAX_REPLY_VALUES: usize = 4 * MAX_ITEMS;

/// What is left of one reply's limits while it is read.
struct Allowance {
    bytes: usize,
    values: usize,
}

impl Allowance {
    fn spend(&mut self, bytes: usize) -> Result<(), String> {
        self.values = self
            .values
            .checked_sub(1)
            .ok_or_else(|| format!("a reply of more than {MAX_REPLY_VALUES} values"))?;
        self.bytes = self
            .bytes
            .checked_sub(bytes)
            .ok_or_else(|| format!("a reply of more than {MAX_REPLY_BYTES} bytes"))?;
        Ok(())
    }
}

/// One RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Simple(String),
    Error(String),
    Int(i64),
    /// `None` is the null bulk string.
    Bulk(Option<Vec<u8>>),
    /// `None` is the null array (a BLPOP that timed out).
    Array(Option<Vec<Value>>),
}

/// A command as a RESP array of bulk strings.
pub fn encode(words: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", words.len()).into_bytes();
    for word in words {
        out.extend_from_slice(format!("${}\r\n", word.len()).as_bytes());
        out.extend_from_slice(word);
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn line(reader: &mut impl BufRead) -> Result<String, String> {
    let mut raw = Vec::new();
    let read = Read::by_ref(reader)
        .take(MAX_LINE as u64 + 2)
        .read_until(b'\n', &mut raw)
        .map_err(|e| io_reason(&e))?;
    if read == 0 {
        return Err("the server closed the connection".into());
    }
    if !raw.ends_with(b"\r\n") {
        return Err(if raw.len() > MAX_LINE {
            format!("a reply line longer than {MAX_LINE} bytes")
        } else {
            "the server closed the connection mid-reply".into()
        });
    }
    raw.truncate(raw.len() - 2);
    Ok(String::from_utf8_lossy(&raw).into_owned())
}

fn length(text: &str, what: &str, max: usize) -> Result<Option<usize>, String> {
    let n: i64 = text
        .parse()
        .map_err(|_| format!("a {what} length that is not a number"))?;
    if n < 0 {
        return Ok(None);
    }
    let n = usize::try_from(n).map_err(|_| format!("a {what} length out of range"))?;
    if n > max {
        return Err(format!("a {what} of {n}, over the limit of {max}"));
    }
    Ok(Some(n))
}

/// Reads one reply; `Err` is a reason for the log (not the server's text).
pub fn read_value(reader: &mut impl BufRead) -> Result<Value, String> {
    let mut allowance = Allowance {
        bytes: MAX_REPLY_BYTES,
        values: MAX_REPLY_VALUES,
    };
    read_nested(reader, 0, &mut allowance)
}

fn read_nested(
    reader: &mut impl BufRead,
    depth: usize,
    allowance: &mut Allowance,
) -> Result<Value, String> {
    let head = line(reader)?;
    allowance.spend(head.len())?;
    let mut chars = head.chars();
    let kind = chars.next().ok_or("an empty reply line")?;
    let rest = chars.as_str();
    match kind {
        '+' => Ok(Value::Simple(rest.to_string())),
        '-' => Ok(Value::Error(rest.to_string())),
        ':' => rest
            .parse()
            .map(Value::Int)
            .map_err(|_| "an integer reply that is not a number".into()),
        '$' => match length(rest, "bulk string", MAX_BULK)? {
            None => Ok(Value::Bulk(None)),
            Some(n) => {
                allowance.bytes = allowance
                    .bytes
                    .checked_sub(n)
                    .ok_or_else(|| format!("a reply of more than {MAX_REPLY_BYTES} bytes"))?;
                let mut data = vec![0u8; n + 2];
                reader.read_exact(&mut data).map_err(|e| io_reason(&e))?;
                if !data.ends_with(b"\r\n") {
                    return Err("a bulk string without its line end".into());
                }
                data.truncate(n);
                Ok(Value::Bulk(Some(data)))
            }
        },
        '*' => {
            if depth >= MAX_DEPTH {
                return Err(format!("arrays nested deeper than {MAX_DEPTH}"));
            }
            match length(rest, "array", MAX_ITEMS)? {
                None => Ok(Value::Array(None)),
                Some(n) => {
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(read_nested(reader, depth + 1, allowance)?);
                    }
                    Ok(Value::Array(Some(items)))
                }
            }
        }
        _ => Err(format!(
            "not a Redis reply (it starts with {:?})",
            head.chars().take(20).collect::<String>()
        )),
    }
}

/// A logged-in connection to one Redis server.
pub struct Session {
    reader: BufReader<Conn>,
}

impl Session {
    /// Connects to the first endpoint, then AUTH (when the URL has a
    /// password; an empty one is none, as redis-py reads it) and SELECT.
    pub fn open(target: &Target, deadline: Instant) -> Result<Session, Verdict> {
        if target.kind != Kind::Redis {
            return Err(Verdict::Fatal("not a plain Redis URL".into()));
        }
        let endpoint = target
            .endpoints
            .first()
            .ok_or_else(|| Verdict::Fatal("the URL names no server".into()))?;
        let conn = super::transport::connect_until(endpoint, deadline)
            .and_then(|socket| super::transport::secure(socket, endpoint, target))?;
        let mut session = Session {
            reader: BufReader::new(conn),
        };
        let password = target.password.as_deref().filter(|p| !p.is_empty());
        if let Some(password) = password {
            let user = target.user.as_deref().filter(|u| !u.is_empty());
            let reply = match user {
                Some(user) => session.call(&[b"AUTH", user.as_bytes(), password.as_bytes()]),
                None => session.call(&[b"AUTH", password.as_bytes()]),
            }
            .map_err(Verdict::NotYet)?;
            session.expect_ok(reply, true, &[password])?;
        }
        let db = target.database.as_deref().unwrap_or("0");
        if db != "0" {
            let reply = session
                .call(&[b"SELECT", db.as_bytes()])
                .map_err(Verdict::NotYet)?;
            let sent: Vec<&str> = password.into_iter().collect();
            session.expect_ok(reply, password.is_some(), &sent)?;
        }
        Ok(session)
    }

    /// `sent`: the credentials we sent, masked wherever the reply echoes them.
    fn expect_ok(&self, reply: Value, authenticated: bool, sent: &[&str]) -> Result<(), Verdict> {
        match reply {
            Value::Simple(_) => Ok(()),
            Value::Error(text) => {
                match super::redis::classify(&[format!("-{text}")], authenticated, sent) {
                    Verdict::Ready => Ok(()),
                    other => Err(other),
                }
            }
            other => Err(Verdict::Fatal(format!(
                "not a Redis server (answered {})",
                describe(&other)
            ))),
        }
    }

    /// Sends one command and reads its reply.
    pub fn call(&mut self, words: &[&[u8]]) -> Result<Value, String> {
        self.send(words)?;
        self.receive()
    }

    pub fn send(&mut self, words: &[&[u8]]) -> Result<(), String> {
        let conn = self.reader.get_mut();
        conn.write_all(&encode(words))
            .and_then(|_| conn.flush())
            .map_err(|e| io_reason(&e))
    }

    pub fn receive(&mut self) -> Result<Value, String> {
        read_value(&mut self.reader)
    }
}

/// A reply in a few words, for a message; never the server's full text.
pub fn describe(value: &Value) -> String {
    let text = match value {
        Value::Simple(s) => format!("+{s}"),
        Value::Error(s) => format!("-{s}"),
        Value::Int(n) => format!(":{n}"),
        Value::Bulk(None) | Value::Array(None) => "null".into(),
        Value::Bulk(Some(b)) => format!("a bulk string of {} bytes", b.len()),
        Value::Array(Some(items)) => format!("an array of {}", items.len()),
    };
    // A server's text goes out the one way server texts do (one line,
    // every URL's password masked, Redis's echo of what we sent cut off),
    // masked before it is cut: a URL cut inside its password no longer
    // looks like one (found by fuzzing).
    super::server_text(&text, &[]).chars().take(60).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Result<Value, String> {
        read_value(&mut std::io::Cursor::new(bytes.to_vec()))
    }

    /// Fuzzing: a description cut at 60 characters before it was masked
    /// showed a password cut from its `@`.
    #[test]
    fn a_description_is_masked_before_it_is_cut() {
        let url = "postgresql://airflow:Qz7xSeKr1tPw@db:5432/airflow";
        for pad in 0..60 {
            let text = format!("{}{url}", "x".repeat(pad));
            let shown = describe(&Value::Error(text));
            assert!(!shown.contains("Qz7x"), "{shown}");
        }
    }

    #[test]
    fn replies_decode() {
        assert_eq!(parse(b"+OK\r\n"), Ok(Value::Simple("OK".into())));
        assert_eq!(parse(b":3\r\n"), Ok(Value::Int(3)));
        assert_eq!(parse(b"$-1\r\n"), Ok(Value::Bulk(None)));
        assert_eq!(parse(b"*-1\r\n"), Ok(Value::Array(None)));
        assert_eq!(
            parse(b"*2\r\n$3\r\nkey\r\n$5\r\nhello\r\n"),
            Ok(Value::Array(Some(vec![
                Value::Bulk(Some(b"key".to_vec())),
                Value::Bulk(Some(b"hello".to_vec()))
            ])))
        );
    }

    #[test]
    fn malformed_truncated_and_oversized_replies_are_errors_not_panics() {
        for bad in [
            &b""[..],
            b"+OK",
            b"$5\r\nab",
            b"$5\r\nabcdefg",
            b"$99999999999\r\n",
            b"$-99999999999999999999\r\n",
            b"*99999\r\n",
            b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n",
            b":x\r\n",
            b"?\r\n",
            b"\r\n",
            b"*3\r\n:1\r\n",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} must not decode");
        }
        // Each part within its limit, the whole past the reply's.
        let bulk = format!("${MAX_BULK}\r\n{}\r\n", "x".repeat(MAX_BULK));
        let mut many = b"*5\r\n".to_vec();
        for _ in 0..5 {
            many.extend_from_slice(bulk.as_bytes());
        }
        assert!(parse(&many).is_err());
        let mut nested = b"*1024\r\n".to_vec();
        for _ in 0..1024 {
            nested.extend_from_slice(b"*8\r\n");
            nested.extend_from_slice(&b":1\r\n".repeat(8));
        }
        assert!(parse(&nested).is_err());
        let long = vec![b'+'; MAX_LINE + 10];
        assert!(parse(&long).is_err());
        assert!(parse(format!("${}\r\n", MAX_BULK + 1).as_bytes()).is_err());
    }

    #[test]
    fn commands_are_resp_arrays() {
        assert_eq!(
            encode(&[b"AUTH", b"pw"]),
            b"*2\r\n$4\r\nAUTH\r\n$2\r\npw\r\n".to_vec()
        );
    }

    #[test]
    fn a_description_never_carries_the_arguments_redis_echoes() {
        let text = describe(&Value::Error(
            "ERR unknown command 'X', with args beginning with: 'pw12'".to_string(),
        ));
        assert!(!text.contains("pw12"), "{text}");
    }

    #[test]
    fn a_description_never_carries_a_url_password() {
        let text = describe(&Value::Error(
            "ERR bad redis://u:hunter2@h/0 given".to_string(),
        ));
        assert!(!text.contains("hunter2"), "{text}");
    }
}
