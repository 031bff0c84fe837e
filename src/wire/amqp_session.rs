//! An AMQP 0-9-1 session on one channel for a short conversation: log in
//! (PLAIN), declare a private queue, bind it, consume, publish, and read
//! what arrives. Owns just that much of the framing; every frame and body
//! has a size limit, and a server's refusal text passes through `redact`.
//! It never retries and never sleeps; the connection's deadline bounds it.

use std::io::{Read, Write};
use std::time::Instant;

use super::transport::{io_reason, Conn};
use super::url::Target;
use super::Verdict;

const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";
const FRAME_METHOD: u8 = 1;
const FRAME_HEADER: u8 = 2;
const FRAME_BODY: u8 = 3;
const FRAME_HEARTBEAT: u8 = 8;
const FRAME_END: u8 = 0xCE;
/// The largest frame we agree to (the server may ask for less).
const FRAME_MAX: u32 = 128 * 1024;
/// The largest message body we keep (a Celery reply is a few kB).
pub const MAX_BODY: u64 = 1 << 20;
const CHANNEL: u16 = 1;

/// A method's class and id, as the specification numbers them.
type MethodId = (u16, u16);
const CONNECTION_START: MethodId = (10, 10);
const CONNECTION_START_OK: MethodId = (10, 11);
const CONNECTION_TUNE: MethodId = (10, 30);
const CONNECTION_TUNE_OK: MethodId = (10, 31);
const CONNECTION_OPEN: MethodId = (10, 40);
const CONNECTION_OPEN_OK: MethodId = (10, 41);
const CONNECTION_CLOSE: MethodId = (10, 50);
const CONNECTION_CLOSE_OK: MethodId = (10, 51);
const CHANNEL_OPEN: MethodId = (20, 10);
const CHANNEL_OPEN_OK: MethodId = (20, 11);
const CHANNEL_CLOSE: MethodId = (20, 40);
const CHANNEL_CLOSE_OK: MethodId = (20, 41);
const QUEUE_DECLARE: MethodId = (50, 10);
const QUEUE_DECLARE_OK: MethodId = (50, 11);
const QUEUE_BIND: MethodId = (50, 20);
const QUEUE_BIND_OK: MethodId = (50, 21);
const BASIC_CONSUME: MethodId = (60, 20);
const BASIC_CONSUME_OK: MethodId = (60, 21);
const BASIC_PUBLISH: MethodId = (60, 40);
const BASIC_DELIVER: MethodId = (60, 60);

/// Why a conversation ended: `Refused` is the server's word (a closed
/// channel or connection, already redacted), `Broken` anything else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    Refused { code: u16, text: String },
    Broken(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Refused { code, text } => write!(f, "the broker answered {code} {text}"),
            Failure::Broken(why) => f.write_str(why),
        }
    }
}

/// Arguments of a method, written in the specification's types.
#[derive(Default)]
struct Args(Vec<u8>);

impl Args {
    fn octet(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }
    fn short(mut self, v: u16) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn long(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn shortstr(mut self, s: &str) -> Self {
        let bytes = s.as_bytes();
        let len = bytes.len().min(255);
        self.0.push(len as u8);
        self.0.extend_from_slice(&bytes[..len]);
        self
    }
    fn longstr(mut self, bytes: &[u8]) -> Self {
        self.0
            .extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        self.0.extend_from_slice(bytes);
        self
    }
    /// A field table, already encoded (see `table`).
    fn table(self, encoded: &[u8]) -> Self {
        self.longstr(encoded)
    }
}

/// A field table of the given entries.
pub enum Field<'a> {
    Bool(bool),
    Long(i64),
    Text(&'a str),
    Table(Vec<(&'a str, Field<'a>)>),
}

pub fn table(entries: &[(&str, Field<'_>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in entries {
        let name = name.as_bytes();
        out.push(name.len().min(255) as u8);
        out.extend_from_slice(&name[..name.len().min(255)]);
        match value {
            Field::Bool(b) => out.extend_from_slice(&[b't', u8::from(*b)]),
            Field::Long(n) => {
                out.push(b'l');
                out.extend_from_slice(&n.to_be_bytes());
            }
            Field::Text(s) => {
                out.push(b'S');
                out.extend_from_slice(&(s.len() as u32).to_be_bytes());
                out.extend_from_slice(s.as_bytes());
            }
            Field::Table(inner) => {
                let encoded = table(inner);
                out.push(b'F');
                out.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
                out.extend_from_slice(&encoded);
            }
        }
    }
    out
}

/// Reads a method's arguments; every read checks what is left.
struct Cursor<'a> {
    data: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Failure> {
        if self.data.len() < n {
            return Err(Failure::Broken("a truncated AMQP method".into()));
        }
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        Ok(head)
    }
    fn short(&mut self) -> Result<u16, Failure> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn long(&mut self) -> Result<u32, Failure> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn longlong(&mut self) -> Result<u64, Failure> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
    fn shortstr(&mut self) -> Result<String, Failure> {
        let len = self.take(1)?[0] as usize;
        Ok(String::from_utf8_lossy(self.take(len)?).into_owned())
    }
    fn longstr(&mut self) -> Result<&'a [u8], Failure> {
        let len = self.long()? as usize;
        self.take(len)
    }
}

/// One frame as read: its type, channel and payload.
struct Frame {
    kind: u8,
    channel: u16,
    payload: Vec<u8>,
}

/// A message delivered to our consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub exchange: String,
    pub routing_key: String,
    pub body: Vec<u8>,
}

/// A logged-in connection with one open channel.
pub struct Session {
    conn: Conn,
    frame_max: u32,
}

impl Session {
    /// Protocol header, PLAIN login, tuning, the vhost and channel 1. A
    /// refused login or vhost is `Fatal`; anything else is "not yet".
    pub fn open(target: &Target, deadline: Instant) -> Result<Session, Verdict> {
        let mut last = Verdict::NotYet("the URL names no server".into());
        for endpoint in &target.endpoints {
            match super::transport::connect_until(endpoint, deadline)
                .and_then(|socket| super::transport::secure(socket, endpoint, target))
            {
                Ok(conn) => return Session::start(conn, target),
                Err(v) => last = v,
            }
        }
        Err(last)
    }

    fn start(conn: Conn, target: &Target) -> Result<Session, Verdict> {
        let mut session = Session {
            conn,
            frame_max: FRAME_MAX,
        };
        let broken = |f: Failure| Verdict::NotYet(f.to_string());
        session
            .conn
            .write_all(PROTOCOL_HEADER)
            .map_err(|e| Verdict::NotYet(io_reason(&e)))?;
        let (id, args) = match session.method() {
            Ok(m) => m,
            Err(Failure::Broken(why)) if why.contains("proposed protocol") => {
                return Err(Verdict::Fatal(why))
            }
            Err(f) => return Err(broken(f)),
        };
        if id != CONNECTION_START {
            return Err(Verdict::Fatal(format!(
                "not an AMQP broker (first method {}.{})",
                id.0, id.1
            )));
        }
        let mut cursor = Cursor { data: &args };
        cursor.take(2).map_err(broken)?;
        let _server_properties = cursor.longstr().map_err(broken)?;
        let mechanisms = String::from_utf8_lossy(cursor.longstr().map_err(broken)?).into_owned();
        if !mechanisms.split_whitespace().any(|m| m == "PLAIN") {
            return Err(Verdict::Fatal(format!(
                "the broker offers no PLAIN login (it offers: {mechanisms})"
            )));
        }
        let user = target.user.as_deref().unwrap_or("guest");
        let password = target.password.as_deref().unwrap_or("guest");
        let mut response = vec![0u8];
        response.extend_from_slice(user.as_bytes());
        response.push(0);
        response.extend_from_slice(password.as_bytes());
        let properties = table(&[
            ("product", Field::Text("airflow-entrypoint")),
            (
                "capabilities",
                Field::Table(vec![("authentication_failure_close", Field::Bool(true))]),
            ),
        ]);
        session
            .send_method(
                0,
                CONNECTION_START_OK,
                Args::default()
                    .table(&properties)
                    .shortstr("PLAIN")
                    .longstr(&response)
                    .shortstr("en_US"),
            )
            .map_err(broken)?;
        let refused = |f: Failure| match f {
            Failure::Refused { code, text } => Verdict::Fatal(match code {
                403 => format!("the broker refused the login (wrong user or password): {text}"),
                530 => format!("the broker refused the vhost: {text}"),
                _ => format!("the broker answered {code} {text}"),
            }),
            Failure::Broken(why) => Verdict::NotYet(why),
        };
        let args = session.expect(CONNECTION_TUNE).map_err(refused)?;
        let mut cursor = Cursor { data: &args };
        let channel_max = cursor.short().map_err(broken)?;
        let frame_max = cursor.long().map_err(broken)?;
        let frame_max = if frame_max == 0 {
            FRAME_MAX
        } else {
            frame_max.clamp(4096, FRAME_MAX)
        };
        session.frame_max = frame_max;
        session
            .send_method(
                0,
                CONNECTION_TUNE_OK,
                Args::default()
                    .short(channel_max.clamp(1, 1))
                    .long(frame_max)
                    .short(0),
            )
            .map_err(broken)?;
        let vhost = target.database.as_deref().unwrap_or("/");
        session
            .send_method(
                0,
                CONNECTION_OPEN,
                Args::default().shortstr(vhost).shortstr("").octet(0),
            )
            .map_err(broken)?;
        session.expect(CONNECTION_OPEN_OK).map_err(refused)?;
        session
            .send_method(CHANNEL, CHANNEL_OPEN, Args::default().shortstr(""))
            .map_err(broken)?;
        session.expect(CHANNEL_OPEN_OK).map_err(refused)?;
        Ok(session)
    }

    /// A server-named, exclusive, auto-deleting queue: it goes with the
    /// connection, whatever happens to this process.
    pub fn declare_private_queue(&mut self) -> Result<String, Failure> {
        self.send_method(
            CHANNEL,
            QUEUE_DECLARE,
            Args::default()
                .short(0)
                .shortstr("")
                // passive 0, durable 0, exclusive 1, auto-delete 1, no-wait 0
                .octet(0b0000_1100)
                .table(&[]),
        )?;
        let args = self.expect(QUEUE_DECLARE_OK)?;
        Cursor { data: &args }.shortstr()
    }

    pub fn bind(&mut self, queue: &str, exchange: &str, routing_key: &str) -> Result<(), Failure> {
        self.send_method(
            CHANNEL,
            QUEUE_BIND,
            Args::default()
                .short(0)
                .shortstr(queue)
                .shortstr(exchange)
                .shortstr(routing_key)
                .octet(0)
                .table(&[]),
        )?;
        self.expect(QUEUE_BIND_OK).map(|_| ())
    }

    /// Consumes `queue` without acknowledgements.
    pub fn consume(&mut self, queue: &str) -> Result<(), Failure> {
        self.send_method(
            CHANNEL,
            BASIC_CONSUME,
            Args::default()
                .short(0)
                .shortstr(queue)
                .shortstr("")
                // no-local 0, no-ack 1, exclusive 1, no-wait 0
                .octet(0b0000_0110)
                .table(&[]),
        )?;
        self.expect(BASIC_CONSUME_OK).map(|_| ())
    }

    /// Publishes `body` as JSON, transient, with `headers` (an encoded table).
    pub fn publish_json(
        &mut self,
        exchange: &str,
        routing_key: &str,
        headers: &[u8],
        body: &[u8],
    ) -> Result<(), Failure> {
        let mut out = Vec::new();
        let method = Args::default()
            .short(0)
            .shortstr(exchange)
            .shortstr(routing_key)
            .octet(0);
        frame(
            &mut out,
            FRAME_METHOD,
            CHANNEL,
            &method_payload(BASIC_PUBLISH, method),
        );
        // content-type, content-encoding, headers, delivery-mode.
        let header = Args::default()
            .short(60)
            .short(0)
            .long(0)
            .long(body.len() as u32)
            .short(0b1111_0000_0000_0000)
            .shortstr("application/json")
            .shortstr("utf-8")
            .table(headers)
            .octet(1);
        frame(&mut out, FRAME_HEADER, CHANNEL, &header.0);
        let chunk = (self.frame_max as usize).saturating_sub(8).max(1);
        for piece in body.chunks(chunk) {
            frame(&mut out, FRAME_BODY, CHANNEL, piece);
        }
        self.conn
            .write_all(&out)
            .and_then(|_| self.conn.flush())
            .map_err(|e| Failure::Broken(io_reason(&e)))
    }

    /// The next message delivered to our consumer.
    pub fn next_delivery(&mut self) -> Result<Delivery, Failure> {
        loop {
            let (id, args) = self.method()?;
            if id != BASIC_DELIVER {
                continue;
            }
            let mut cursor = Cursor { data: &args };
            let _consumer_tag = cursor.shortstr()?;
            let _delivery_tag = cursor.longlong()?;
            cursor.take(1)?;
            let exchange = cursor.shortstr()?;
            let routing_key = cursor.shortstr()?;
            let header = self.frame_of(FRAME_HEADER)?;
            let mut cursor = Cursor { data: &header };
            cursor.take(4)?;
            let size = cursor.longlong()?;
            if size > MAX_BODY {
                return Err(Failure::Broken(format!(
                    "a message of {size} bytes, over the limit of {MAX_BODY}"
                )));
            }
            let mut body = Vec::with_capacity(size as usize);
            while (body.len() as u64) < size {
                let piece = self.frame_of(FRAME_BODY)?;
                body.extend_from_slice(&piece);
                if body.len() as u64 > size {
                    return Err(Failure::Broken("a body longer than announced".into()));
                }
            }
            return Ok(Delivery {
                exchange,
                routing_key,
                body,
            });
        }
    }

    /// Closes the connection politely (the private queue goes with it);
    /// errors are of no interest any more.
    pub fn close(mut self) {
        let _ = self.send_method(
            0,
            CONNECTION_CLOSE,
            Args::default().short(200).shortstr("bye").short(0).short(0),
        );
        for _ in 0..8 {
            match self.read_frame() {
                Ok(f) if f.kind == FRAME_METHOD && f.channel == 0 => {
                    if f.payload.get(..4) == Some(&[0, 10, 0, 51]) {
                        break;
                    }
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    }

    fn send_method(&mut self, channel: u16, id: MethodId, args: Args) -> Result<(), Failure> {
        let mut out = Vec::new();
        frame(&mut out, FRAME_METHOD, channel, &method_payload(id, args));
        self.conn
            .write_all(&out)
            .and_then(|_| self.conn.flush())
            .map_err(|e| Failure::Broken(io_reason(&e)))
    }

    fn read_frame(&mut self) -> Result<Frame, Failure> {
        let mut head = [0u8; 7];
        self.conn
            .read_exact(&mut head)
            .map_err(|e| Failure::Broken(io_reason(&e)))?;
        if &head[..4] == b"AMQP" {
            return Err(Failure::Broken(
                "the broker does not speak AMQP 0-9-1 (it proposed protocol version)".into(),
            ));
        }
        let size = u32::from_be_bytes([head[3], head[4], head[5], head[6]]);
        if size > self.frame_max {
            return Err(Failure::Broken(format!(
                "a frame of {size} bytes, over the agreed {}",
                self.frame_max
            )));
        }
        let mut payload = vec![0u8; size as usize + 1];
        self.conn
            .read_exact(&mut payload)
            .map_err(|e| Failure::Broken(io_reason(&e)))?;
        if payload.pop() != Some(FRAME_END) {
            return Err(Failure::Broken("a frame without its end octet".into()));
        }
        Ok(Frame {
            kind: head[0],
            channel: u16::from_be_bytes([head[1], head[2]]),
            payload,
        })
    }

    /// The next method frame on any channel; a Close from the server is
    /// answered and returned as `Refused`.
    fn method(&mut self) -> Result<(MethodId, Vec<u8>), Failure> {
        loop {
            let frame = self.read_frame()?;
            match frame.kind {
                FRAME_HEARTBEAT => continue,
                FRAME_METHOD => {}
                _ => continue,
            }
            let mut cursor = Cursor {
                data: &frame.payload,
            };
            let id = (cursor.short()?, cursor.short()?);
            let args = cursor.data.to_vec();
            if id == CONNECTION_CLOSE || id == CHANNEL_CLOSE {
                let mut c = Cursor { data: &args };
                let code = c.short()?;
                let text = c.shortstr()?;
                let reply = if id == CONNECTION_CLOSE {
                    CONNECTION_CLOSE_OK
                } else {
                    CHANNEL_CLOSE_OK
                };
                let _ = self.send_method(frame.channel, reply, Args::default());
                let text: String = text.chars().take(200).collect();
                return Err(Failure::Refused {
                    code,
                    text: crate::redact::redact(&text).into_owned(),
                });
            }
            return Ok((id, args));
        }
    }

    fn expect(&mut self, want: MethodId) -> Result<Vec<u8>, Failure> {
        loop {
            let (id, args) = self.method()?;
            if id == want {
                return Ok(args);
            }
            if id == BASIC_DELIVER {
                // A delivery before the answer we wait for: its content
                // frames follow; skip them.
                let header = self.frame_of(FRAME_HEADER)?;
                let size = Cursor { data: &header }.take(12).map(|b| {
                    u64::from_be_bytes([b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11]])
                })?;
                let mut seen = 0u64;
                while seen < size {
                    seen += self.frame_of(FRAME_BODY)?.len() as u64;
                }
                continue;
            }
            return Err(Failure::Broken(format!(
                "the broker answered method {}.{} where {}.{} was expected",
                id.0, id.1, want.0, want.1
            )));
        }
    }

    fn frame_of(&mut self, kind: u8) -> Result<Vec<u8>, Failure> {
        loop {
            let frame = self.read_frame()?;
            if frame.kind == FRAME_HEARTBEAT {
                continue;
            }
            if frame.kind != kind {
                return Err(Failure::Broken(format!(
                    "an AMQP frame of type {} where type {kind} was expected",
                    frame.kind
                )));
            }
            return Ok(frame.payload);
        }
    }
}

fn method_payload(id: MethodId, args: Args) -> Vec<u8> {
    let mut payload = Vec::with_capacity(4 + args.0.len());
    payload.extend_from_slice(&id.0.to_be_bytes());
    payload.extend_from_slice(&id.1.to_be_bytes());
    payload.extend_from_slice(&args.0);
    payload
}

fn frame(out: &mut Vec<u8>, kind: u8, channel: u16, payload: &[u8]) {
    out.push(kind);
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out.push(FRAME_END);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A session over canned server bytes; what it writes is dropped.
    struct Canned(std::io::Cursor<Vec<u8>>);
    impl Read for Canned {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.0.read(buf)
        }
    }
    impl Write for Canned {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn session(bytes: Vec<u8>) -> Session {
        Session {
            conn: Box::new(Canned(std::io::Cursor::new(bytes))),
            frame_max: FRAME_MAX,
        }
    }

    fn deliver(body: &[u8], announced: u64) -> Vec<u8> {
        let mut out = Vec::new();
        let args = Args::default()
            .shortstr("ctag")
            .long(0)
            .long(1)
            .octet(0)
            .shortstr("")
            .shortstr("q");
        frame(
            &mut out,
            FRAME_METHOD,
            1,
            &method_payload(BASIC_DELIVER, args),
        );
        let header = Args::default()
            .short(60)
            .short(0)
            .long((announced >> 32) as u32)
            .long(announced as u32)
            .short(0);
        frame(&mut out, FRAME_HEADER, 1, &header.0);
        frame(&mut out, FRAME_BODY, 1, body);
        out
    }

    #[test]
    fn a_delivery_is_read_whole() {
        let mut s = session(deliver(b"{\"a\": 1}", 8));
        let d = s.next_delivery();
        assert_eq!(
            d,
            Ok(Delivery {
                exchange: String::new(),
                routing_key: "q".into(),
                body: b"{\"a\": 1}".to_vec()
            })
        );
    }

    #[test]
    fn oversized_truncated_and_malformed_frames_fail_without_panic() {
        // A body announced past the limit.
        assert!(session(deliver(b"x", MAX_BODY + 1))
            .next_delivery()
            .is_err());
        // More body than announced.
        assert!(session(deliver(b"xyz", 1)).next_delivery().is_err());
        // A frame size past the agreed maximum.
        let mut big = vec![FRAME_METHOD, 0, 1];
        big.extend_from_slice(&(FRAME_MAX + 1).to_be_bytes());
        assert!(session(big).next_delivery().is_err());
        // Truncated everywhere.
        let whole = deliver(b"{}", 2);
        for cut in 0..whole.len() {
            assert!(session(whole[..cut].to_vec()).next_delivery().is_err());
        }
        // A frame whose end octet is wrong.
        let mut bad = deliver(b"{}", 2);
        if let Some(last) = bad.last_mut() {
            *last = 0;
        }
        assert!(session(bad).next_delivery().is_err());
        // A method too short for its arguments.
        let mut short = Vec::new();
        frame(&mut short, FRAME_METHOD, 1, &[0, 60, 0, 60, 5]);
        assert!(session(short).next_delivery().is_err());
    }

    #[test]
    fn a_channel_close_is_a_refusal_with_its_text_redacted() {
        let mut out = Vec::new();
        let args = Args::default()
            .short(404)
            .shortstr("NOT_FOUND - amqp://u:hunter2@h/ no exchange")
            .short(60)
            .short(40);
        frame(
            &mut out,
            FRAME_METHOD,
            1,
            &method_payload(CHANNEL_CLOSE, args),
        );
        match session(out).next_delivery() {
            Err(Failure::Refused { code, text }) => {
                assert_eq!(code, 404);
                assert!(!text.contains("hunter2"), "{text}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn tables_encode_as_the_specification_says() {
        assert_eq!(table(&[("a", Field::Bool(true))]), vec![1, b'a', b't', 1]);
        assert_eq!(
            table(&[("n", Field::Long(2))]),
            vec![1, b'n', b'l', 0, 0, 0, 0, 0, 0, 0, 2]
        );
    }
}
