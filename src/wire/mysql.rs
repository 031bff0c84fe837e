//! MySQL/MariaDB client: the greeting, TLS as the URL asks (SSLRequest),
//! the login with the server's plugin (mysql_native_password,
//! caching_sha2_password with its fast path and full authentication over
//! TLS or the server's RSA key, auth switches), then COM_QUERY and its text
//! rows. The packets and the auth plugins are mysql_common's; this module
//! only frames packets and decides. It never logs or echoes the password.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use mysql_common::auth::plugins::caching_sha2_password::scramble_sha256;
use mysql_common::auth::plugins::mysql_native_password::scramble_native;
use mysql_common::constants::CapabilityFlags;
use mysql_common::crypto::rsa::{GetRandom, Pkcs1OaepPadding, PublicKey};
use mysql_common::io::ParseBuf;
use mysql_common::misc::raw::int::LenEnc;
use mysql_common::misc::raw::RawInt;
use mysql_common::num_bigint::BigUint;
use mysql_common::packets::{
    AuthMoreData, AuthPlugin, AuthSwitchRequest, Column, ErrPacket, HandshakePacket,
    HandshakeResponse, SslRequest,
};
use mysql_common::proto::MySerialize;
use mysql_common::proto::Text;
use mysql_common::row::RowDeserializer;
use mysql_common::Value;

use super::sql::{push_row, too_big, Rows, SqlError, MAX_COLUMNS};
use super::transport::{connect, read_exact, read_exact_vec, start_tls, write_all, Conn};
use super::url::{Endpoint, Target, Tls};
use super::Verdict;

/// The largest packet the protocol frames in one piece (what we announce).
const MAX_PACKET: usize = (1 << 24) - 1;
/// The largest packet we read: a greeting, an RSA key, an error or a row
/// here is well under it. Memory grows only as a packet's bytes arrive.
const MAX_READ_PACKET: usize = 1 << 20;
const UTF8MB4_GENERAL_CI: u8 = 45;

pub fn probe(target: &Target, timeout: Duration) -> Verdict {
    match Session::open(target, timeout) {
        Ok(session) => {
            session.quit();
            Verdict::Ready
        }
        Err(verdict) => verdict,
    }
}

/// Runs `queries` one after the other on one authenticated session.
pub fn query_all(
    target: &Target,
    timeout: Duration,
    queries: &[&str],
) -> Result<Vec<Result<Rows, SqlError>>, SqlError> {
    let mut session = Session::open(target, timeout)?;
    let mut results = Vec::with_capacity(queries.len());
    for sql in queries {
        results.push(session.query(sql)?);
    }
    session.quit();
    Ok(results)
}

/// One authenticated connection.
struct Session {
    conn: Conn,
    capabilities: CapabilityFlags,
    /// The sequence number of the next packet we send.
    sequence: u8,
}

/// The auth plugins spoken.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Plugin {
    Native,
    CachingSha2,
    Other(String),
}

impl Plugin {
    fn from_name(name: &[u8]) -> Plugin {
        match name {
            b"mysql_native_password" => Plugin::Native,
            b"caching_sha2_password" => Plugin::CachingSha2,
            other => Plugin::Other(String::from_utf8_lossy(other).into_owned()),
        }
    }
    fn auth_plugin(&self) -> AuthPlugin<'static> {
        match self {
            Plugin::CachingSha2 => AuthPlugin::CachingSha2Password,
            _ => AuthPlugin::MysqlNativePassword,
        }
    }
}

/// caching_sha2_password's AuthMoreData codes.
const REQUEST_PUBLIC_KEY: u8 = 0x02;
const FAST_AUTH_SUCCESS: u8 = 0x03;
const PERFORM_FULL_AUTHENTICATION: u8 = 0x04;

/// One login: the plugin in use, its nonce, and whether the password may
/// travel as it is (TLS or a Unix socket).
struct Login<'a> {
    plugin: Plugin,
    password: &'a [u8],
    secure: bool,
    nonce: Vec<u8>,
}

impl Login<'_> {
    /// The scramble that answers the nonce (empty for an empty password).
    fn first_response(&self) -> Result<Vec<u8>, Verdict> {
        if self.password.is_empty() {
            return Ok(Vec::new());
        }
        let nonce: &[u8; 20] = self
            .nonce
            .get(..20)
            .and_then(|n| n.try_into().ok())
            .ok_or_else(|| Verdict::Fatal("the server's nonce is not 20 bytes".into()))?;
        match &self.plugin {
            Plugin::Native => Ok(scramble_native(nonce, self.password)
                .map(|s| s.to_vec())
                .unwrap_or_default()),
            Plugin::CachingSha2 => Ok(scramble_sha256(nonce, self.password)
                .map(|s| s.to_vec())
                .unwrap_or_default()),
            Plugin::Other(name) => Err(Verdict::Fatal(format!(
                "the server asks for the {} authentication plugin; this entrypoint speaks mysql_native_password and caching_sha2_password",
                super::server_text(name, &[])
            ))),
        }
    }

    /// caching_sha2_password's second round: fast-path result, full
    /// authentication (the password over TLS, else RSA-encrypted with the
    /// key the server sends when asked).
    fn more_data(&self, data: &[u8]) -> Result<Option<Vec<u8>>, Verdict> {
        if self.plugin != Plugin::CachingSha2 {
            return Err(Verdict::Fatal(
                "unexpected auth data from the server".into(),
            ));
        }
        match data {
            [FAST_AUTH_SUCCESS] => Ok(None),
            [PERFORM_FULL_AUTHENTICATION] if self.secure => {
                let mut clear = self.password.to_vec();
                clear.push(0);
                Ok(Some(clear))
            }
            [PERFORM_FULL_AUTHENTICATION] => Ok(Some(vec![REQUEST_PUBLIC_KEY])),
            pem => rsa_encrypted_password(self.password, &self.nonce, pem).map(Some),
        }
    }
}

/// (password + NUL) XOR nonce, RSA-OAEP encrypted with the server's PEM key.
/// The key is the server's bytes: it is parsed and checked here, never by
/// mysql_common's DER reader, which indexes without bounds checks (an empty
/// or cut key panics it) and whose padding underflows for a short modulus.
fn rsa_encrypted_password(password: &[u8], nonce: &[u8], pem: &[u8]) -> Result<Vec<u8>, Verdict> {
    let bad_key = |why: &str| {
        Verdict::Fatal(format!(
            "the server sent an RSA public key that cannot be used ({why})"
        ))
    };
    let text = std::str::from_utf8(pem).map_err(|_| bad_key("not text"))?;
    let pkcs1 = text.contains("BEGIN RSA PUBLIC KEY");
    if !pkcs1 && !text.contains("BEGIN PUBLIC KEY") {
        return Err(bad_key("no PEM header"));
    }
    let body: String = text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .flat_map(|l| l.trim().chars())
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|_| bad_key("not base64"))?;
    let (modulus, exponent) = if pkcs1 {
        rsa_key_pkcs1(&der)
    } else {
        rsa_key_pkcs8(&der)
    }
    .ok_or_else(|| bad_key("malformed DER"))?;
    if nonce.is_empty() {
        return Err(Verdict::Fatal("the server's nonce is empty".into()));
    }
    let mut plain = password.to_vec();
    plain.push(0);
    for (i, byte) in plain.iter_mut().enumerate() {
        *byte ^= nonce[i % nonce.len()];
    }
    let modulus = BigUint::from_bytes_be(modulus);
    let exponent = BigUint::from_bytes_be(exponent);
    // OAEP with SHA-1 needs a modulus of message + 2×20 + 2 bytes (the
    // octet count as mysql_common computes it); a bigger one than any real
    // key only costs time.
    let octets = (modulus.bits() as usize + 6) >> 3;
    if octets < plain.len() + 2 * 20 + 2 {
        return Err(bad_key(&format!(
            "a {}-bit modulus is too short for the password",
            modulus.bits()
        )));
    }
    if modulus.bits() > MAX_RSA_BITS || exponent.bits() == 0 || exponent.bits() > MAX_RSA_BITS {
        return Err(bad_key("modulus or exponent out of range"));
    }
    PublicKey::new(modulus, exponent)
        .encrypt_block(plain, Pkcs1OaepPadding::new(GetRandom))
        .map_err(|e| Verdict::Fatal(format!("RSA encryption of the password failed: {e}")))
}

/// The largest RSA key accepted (servers use 2048, at most 4096).
const MAX_RSA_BITS: u64 = 16_384;

/// One DER element: (tag, contents, rest), every length checked.
fn der_element(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first & 0x80 == 0 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 {
            return None;
        }
        let bytes = rest.get(..count)?;
        let len = bytes.iter().fold(0usize, |n, b| (n << 8) | usize::from(*b));
        (len, &rest[count..])
    };
    let contents = rest.get(..len)?;
    Some((tag, contents, &rest[len..]))
}

/// PKCS#1 RSAPublicKey: SEQUENCE { modulus INTEGER, exponent INTEGER }.
fn rsa_key_pkcs1(der: &[u8]) -> Option<(&[u8], &[u8])> {
    let (0x30, fields, _) = der_element(der)? else {
        return None;
    };
    let (0x02, modulus, rest) = der_element(fields)? else {
        return None;
    };
    let (0x02, exponent, _) = der_element(rest)? else {
        return None;
    };
    Some((modulus, exponent))
}

/// SubjectPublicKeyInfo: SEQUENCE { algorithm SEQUENCE, key BIT STRING
/// holding a PKCS#1 key with no unused bits }.
fn rsa_key_pkcs8(der: &[u8]) -> Option<(&[u8], &[u8])> {
    let (0x30, info, _) = der_element(der)? else {
        return None;
    };
    let (0x30, _algorithm, rest) = der_element(info)? else {
        return None;
    };
    let (0x03, bits, _) = der_element(rest)? else {
        return None;
    };
    let (0, key) = bits.split_first()? else {
        return None;
    };
    rsa_key_pkcs1(key)
}

impl Session {
    fn open(target: &Target, timeout: Duration) -> Result<Session, Verdict> {
        let endpoint = target
            .endpoints
            .first()
            .ok_or_else(|| Verdict::Fatal("no host to connect to".into()))?;
        let conn = connect(endpoint, timeout)?;
        Session::login(conn, target, endpoint)
    }

    /// The greeting, TLS and the login on a connected `conn`.
    fn login(conn: Conn, target: &Target, endpoint: &Endpoint) -> Result<Session, Verdict> {
        let mut session = Session {
            conn,
            capabilities: CapabilityFlags::empty(),
            sequence: 0,
        };
        let greeting = session.read_packet()?;
        if greeting.first() == Some(&0xff) {
            return Err(classify_error(
                &greeting,
                CapabilityFlags::CLIENT_PROTOCOL_41,
            ));
        }
        if greeting.first() != Some(&10) {
            return Err(Verdict::Fatal(format!(
                "not a MySQL server (protocol {:?})",
                greeting.first()
            )));
        }
        if auth_data_length_overflows(&greeting) {
            return Err(Verdict::Fatal(
                "not a MySQL server (greeting: an auth-plugin data length over 127)".into(),
            ));
        }
        let handshake: HandshakePacket<'_> = ParseBuf(&greeting)
            .parse(())
            .map_err(|e| Verdict::Fatal(format!("not a MySQL server (greeting: {e})")))?;
        let server = handshake.capabilities();
        let mut wanted = CapabilityFlags::CLIENT_PROTOCOL_41
            | CapabilityFlags::CLIENT_SECURE_CONNECTION
            | CapabilityFlags::CLIENT_PLUGIN_AUTH
            | CapabilityFlags::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
            | CapabilityFlags::CLIENT_LONG_PASSWORD
            | CapabilityFlags::CLIENT_LONG_FLAG
            | CapabilityFlags::CLIENT_TRANSACTIONS
            | CapabilityFlags::CLIENT_CONNECT_WITH_DB;
        let unix = matches!(endpoint, Endpoint::Unix { .. });
        let wants_tls = !matches!(target.tls, Tls::Off) && !unix;
        if wants_tls {
            if !server.contains(CapabilityFlags::CLIENT_SSL) {
                return Err(Verdict::Fatal(
                    "the server does not offer TLS, but the URL's ssl options require it".into(),
                ));
            }
            wanted |= CapabilityFlags::CLIENT_SSL;
        }
        session.capabilities = wanted & server;
        if !session
            .capabilities
            .contains(CapabilityFlags::CLIENT_PROTOCOL_41)
        {
            return Err(Verdict::Fatal(
                "the server is older than MySQL 4.1; it cannot be spoken to".into(),
            ));
        }
        if let (true, Endpoint::Tcp { host, .. }) = (wants_tls, endpoint) {
            let request =
                SslRequest::new(session.capabilities, MAX_PACKET as u32, UTF8MB4_GENERAL_CI);
            session.write_packet(&serialized(&request))?;
            let plain = std::mem::replace(&mut session.conn, Box::new(std::io::empty()));
            session.conn = start_tls(plain, host, &target.tls, target.tls_root_cert.as_deref())?;
        }
        let mut login = Login {
            plugin: Plugin::from_name(
                handshake
                    .auth_plugin_name_ref()
                    .unwrap_or(b"mysql_native_password"),
            ),
            password: target.password.as_deref().unwrap_or("").as_bytes(),
            secure: wants_tls || unix,
            nonce: handshake.nonce(),
        };
        let first = login.first_response()?;
        let user = target.user.clone().unwrap_or_else(|| "root".into());
        let response = HandshakeResponse::new(
            Some(first),
            // Only picks the collation (utf8mb4 from 5.5.3); every server
            // Airflow supports is newer. (Parsing the version would link a
            // regex engine: half a megabyte.)
            (8, 0, 0),
            Some(user.as_bytes().to_vec()),
            target.database.as_ref().map(|d| d.as_bytes().to_vec()),
            Some(login.plugin.auth_plugin()),
            session.capabilities,
            None,
            MAX_PACKET as u32,
        );
        session.write_packet(&serialized(&response))?;
        for _ in 0..8 {
            let packet = session.read_packet()?;
            match packet.first() {
                Some(0x00) => return Ok(session),
                Some(0xff) => return Err(classify_error(&packet, session.capabilities)),
                Some(0xfe) => {
                    let switch: AuthSwitchRequest<'_> = ParseBuf(&packet)
                        .parse(())
                        .map_err(|e| Verdict::Fatal(format!("bad auth switch request: {e}")))?;
                    let data = switch.plugin_data();
                    login.plugin = Plugin::from_name(switch.auth_plugin().as_bytes());
                    login.nonce = data.strip_suffix(&[0]).unwrap_or(data).to_vec();
                    session.write_packet(&login.first_response()?)?;
                }
                Some(0x01) => {
                    let more: AuthMoreData<'_> = ParseBuf(&packet)
                        .parse(())
                        .map_err(|e| Verdict::Fatal(format!("bad auth data: {e}")))?;
                    if let Some(reply) = login.more_data(more.data())? {
                        session.write_packet(&reply)?;
                    }
                }
                other => {
                    return Err(Verdict::Fatal(format!(
                        "unexpected packet {other:?} during authentication"
                    )))
                }
            }
        }
        Err(Verdict::NotYet(
            "the server did not finish authentication".into(),
        ))
    }

    /// COM_QUERY: the rows of the result, or the server's error for it. The
    /// outer error is the connection failing.
    fn query(&mut self, sql: &str) -> Result<Result<Rows, SqlError>, SqlError> {
        self.sequence = 0;
        let mut command = vec![0x03];
        command.extend_from_slice(sql.as_bytes());
        self.write_packet(&command)?;
        let first = self.read_packet()?;
        match first.first() {
            Some(0x00) => return Ok(Ok(Rows::default())),
            Some(0xff) => return Ok(Err(server_error(&first, self.capabilities))),
            _ => {}
        }
        let count: RawInt<LenEnc> = ParseBuf(&first)
            .parse(())
            .map_err(|e| Verdict::Fatal(format!("bad column count: {e}")))?;
        if count.0 > MAX_COLUMNS as u64 {
            return Err(too_big(&format!("{} columns", count.0)));
        }
        let mut columns = Vec::new();
        for _ in 0..count.0 {
            let packet = self.read_packet()?;
            let column: Column = ParseBuf(&packet)
                .parse(())
                .map_err(|e| Verdict::Fatal(format!("bad column definition: {e}")))?;
            columns.push(column);
        }
        // Without CLIENT_DEPRECATE_EOF an EOF packet ends the definitions.
        let eof = self.read_packet()?;
        if eof.first() != Some(&0xfe) {
            return Err(Verdict::Fatal("no EOF after the column definitions".into()).into());
        }
        let mut rows = Rows {
            columns: columns.iter().map(|c| c.name_str().into_owned()).collect(),
            rows: Vec::new(),
        };
        let columns: Arc<[Column]> = columns.into();
        let mut bytes = 0;
        loop {
            let packet = self.read_packet()?;
            match packet.first() {
                Some(0xfe) if packet.len() < 9 => return Ok(Ok(rows)),
                Some(0xff) => return Ok(Err(server_error(&packet, self.capabilities))),
                _ => {}
            }
            let row: RowDeserializer<(), Text> = ParseBuf(&packet)
                .parse(columns.clone())
                .map_err(|e| Verdict::Fatal(format!("bad row: {e}")))?;
            let row: mysql_common::Row = row.into();
            // (Row::unwrap gives its values; it cannot fail.)
            push_row(
                &mut rows,
                row.unwrap().into_iter().map(text).collect(),
                &mut bytes,
            )?;
        }
    }

    /// COM_QUIT, politely; the server may already be gone.
    fn quit(mut self) {
        self.sequence = 0;
        let _ = self.write_packet(&[0x01]);
    }

    fn read_packet(&mut self) -> Result<Vec<u8>, Verdict> {
        let mut header = [0u8; 4];
        read_exact(&mut self.conn, &mut header)?;
        let len =
            usize::from(header[0]) | usize::from(header[1]) << 8 | usize::from(header[2]) << 16;
        if len > MAX_READ_PACKET {
            return Err(Verdict::Fatal(format!(
                "the server announced a packet of {len} bytes; one over {MAX_READ_PACKET} is not read here"
            )));
        }
        self.sequence = header[3].wrapping_add(1);
        read_exact_vec(&mut self.conn, len)
    }

    fn write_packet(&mut self, payload: &[u8]) -> Result<(), Verdict> {
        let len = payload.len();
        if len >= MAX_PACKET {
            return Err(Verdict::Fatal("a query of 16 MB or more".into()));
        }
        let mut packet = Vec::with_capacity(len + 4);
        packet.extend_from_slice(&(len as u32).to_le_bytes()[..3]);
        packet.push(self.sequence);
        packet.extend_from_slice(payload);
        self.sequence = self.sequence.wrapping_add(1);
        write_all(&mut self.conn, &packet)
    }
}

/// True when the greeting's auth-plugin data length byte is 128 to 135:
/// mysql_common computes `len as i8 - 8`, which overflows there (a panic
/// with overflow checks, a wrong length without; found by fuzzing). Real
/// servers send 21. The byte follows the protocol version, the server
/// version up to its NUL, and 4 + 8 + 1 + 2 + 1 + 2 + 2 fixed bytes.
fn auth_data_length_overflows(greeting: &[u8]) -> bool {
    let Some(version_end) = greeting.iter().skip(1).position(|b| *b == 0) else {
        return false;
    };
    greeting
        .get(1 + version_end + 1 + 20)
        .is_some_and(|len| (128..=135).contains(len))
}

fn serialized(packet: &impl MySerialize) -> Vec<u8> {
    let mut buf = Vec::new();
    packet.serialize(&mut buf);
    buf
}

/// A text-protocol value: bytes as text, NULL as None.
fn text(value: Value) -> Option<String> {
    match value {
        Value::NULL => None,
        Value::Bytes(b) => Some(String::from_utf8_lossy(&b).into_owned()),
        other => Some(format!("{other:?}")),
    }
}

/// An error packet: (code, SQLSTATE, message).
fn error_fields(payload: &[u8], capabilities: CapabilityFlags) -> (u16, String, String) {
    match ParseBuf(payload).parse::<ErrPacket<'_>>(capabilities) {
        Ok(ErrPacket::Error(e)) => (
            e.error_code(),
            e.sql_state_ref()
                .map(|s| s.as_str().into_owned())
                .unwrap_or_default(),
            super::server_text(&e.message_str(), &[]),
        ),
        _ => (0, String::new(), "malformed error packet".into()),
    }
}

fn server_error(payload: &[u8], capabilities: CapabilityFlags) -> SqlError {
    let (code, sqlstate, message) = error_fields(payload, capabilities);
    SqlError::Server {
        sqlstate,
        code,
        message,
    }
}

/// An error before or during login → a verdict by its code.
fn classify_error(payload: &[u8], capabilities: CapabilityFlags) -> Verdict {
    let (code, _, message) = error_fields(payload, capabilities);
    classify_code(code, &message)
}

pub fn classify_code(code: u16, message: &str) -> Verdict {
    match code {
        1040 => Verdict::NotYet(format!("{message} (error 1040: too many connections)")),
        1044 => Verdict::Fatal(format!("{message} (error 1044: this user may not use the database; grant it or fix the URL)")),
        1698 => Verdict::Fatal(format!("{message} (error 1698: the user must log in another way, e.g. over the server's Unix socket)")),
        1045 => Verdict::Fatal(format!("{message} (error 1045: wrong user or password; fix the URL's credentials)")),
        1049 => Verdict::Fatal(format!("{message} (error 1049: unknown database; create it or fix the URL)")),
        1129 => Verdict::Fatal(format!("{message} (error 1129: host blocked; run FLUSH HOSTS or raise max_connect_errors)")),
        1130 => Verdict::Fatal(format!("{message} (error 1130: this host may not connect; grant access to it)")),
        other => Verdict::NotYet(format!("{message} (error {other})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::wire::transport::scripted;

    fn packet(sequence: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = (payload.len() as u32).to_le_bytes()[..3].to_vec();
        out.push(sequence);
        out.extend_from_slice(payload);
        out
    }

    /// A MySQL 8 greeting offering caching_sha2_password.
    fn greeting() -> Vec<u8> {
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
        packet(0, &g)
    }

    fn target() -> Target {
        crate::wire::url::parse("mysql://airflow:pw@127.0.0.1:3306/airflow").unwrap()
    }

    fn login_with(server: Vec<u8>) -> Result<Session, Verdict> {
        let target = target();
        let endpoint = target.endpoints[0].clone();
        Session::login(scripted(&server), &target, &endpoint)
    }

    /// A login that a scripted server accepts, then `rest` for the query.
    fn query_with(rest: &[u8]) -> Result<Result<Rows, SqlError>, SqlError> {
        let mut server = greeting();
        server.extend(packet(2, &[0x01, FAST_AUTH_SUCCESS]));
        server.extend(packet(3, &[0, 0, 0, 2, 0, 0, 0]));
        server.extend_from_slice(rest);
        let mut session = login_with(server).map_err(SqlError::Connection)?;
        session.query("SELECT 1")
    }

    /// A DER length, short or long form.
    fn der_len(len: usize) -> Vec<u8> {
        match len {
            0..=127 => vec![len as u8],
            128..=255 => vec![0x81, len as u8],
            _ => vec![0x82, (len >> 8) as u8, len as u8],
        }
    }

    fn der(tag: u8, contents: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        out.extend(der_len(contents.len()));
        out.extend_from_slice(contents);
        out
    }

    /// A PKCS#1 PEM key with a modulus of `bytes` bytes (top bit set).
    fn pem_key(bytes: usize) -> Vec<u8> {
        let mut modulus = vec![0u8];
        modulus.extend((0..bytes).map(|i| {
            if i == 0 {
                0xc3
            } else {
                (i * 37 + 11) as u8 | 1
            }
        }));
        let mut fields = der(0x02, &modulus);
        fields.extend(der(0x02, &[1, 0, 1]));
        let key = der(0x30, &fields);
        let body = base64::engine::general_purpose::STANDARD.encode(key);
        format!("-----BEGIN RSA PUBLIC KEY-----\n{body}\n-----END RSA PUBLIC KEY-----\n")
            .into_bytes()
    }

    /// Deterministic noise for the malformed cases.
    fn noise(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
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
    fn an_empty_or_tiny_or_garbled_rsa_key_is_a_verdict_not_a_panic() {
        let nonce = b"abcdefghijklmnopqrst";
        for key in [
            Vec::new(),
            b"-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----\n".to_vec(),
            b"-----BEGIN RSA PUBLIC KEY-----\nMA==\n-----END RSA PUBLIC KEY-----".to_vec(),
            pem_key(8),
            pem_key(41),
            vec![0xff; 300],
        ] {
            match rsa_encrypted_password(b"pw", nonce, &key) {
                Err(Verdict::Fatal(m)) => assert!(m.contains("RSA public key"), "{m}"),
                other => panic!("{key:?}: {other:?}"),
            }
        }
        // Cut anywhere, a real-sized key still gives a verdict.
        let whole = pem_key(256);
        for end in 0..whole.len() {
            let _ = rsa_encrypted_password(b"pw", nonce, &whole[..end]);
        }
        for seed in 0..300 {
            let mut key = b"-----BEGIN PUBLIC KEY-----\n".to_vec();
            let body = noise(seed, (seed as usize * 7) % 600);
            key.extend(
                base64::engine::general_purpose::STANDARD
                    .encode(body)
                    .into_bytes(),
            );
            key.extend_from_slice(b"\n-----END PUBLIC KEY-----\n");
            let _ = rsa_encrypted_password(b"pw", nonce, &key);
        }
        let encrypted = rsa_encrypted_password(b"pw", nonce, &whole).unwrap();
        assert_eq!(encrypted.len(), 256);
    }

    #[test]
    fn an_empty_auth_more_data_ends_the_login_with_one_line() {
        let mut server = greeting();
        server.extend(packet(2, &[0x01]));
        match login_with(server) {
            Err(Verdict::Fatal(m)) => assert!(m.contains("RSA public key"), "{m}"),
            Err(other) => panic!("{other:?}"),
            Ok(_) => panic!("logged in"),
        }
    }

    #[test]
    fn truncated_and_malformed_login_replies_do_not_panic() {
        let mut whole = greeting();
        whole.extend(packet(2, &[0x01, PERFORM_FULL_AUTHENTICATION]));
        whole.extend(packet(4, &[&[0x01][..], &pem_key(8)].concat()));
        for end in 0..whole.len() {
            assert!(login_with(whole[..end].to_vec()).is_err(), "cut at {end}");
        }
        assert!(login_with(whole).is_err());
        for seed in 0..500 {
            let mut server = greeting();
            let body = noise(seed, (seed as usize * 13) % 200);
            server.extend(packet(2, &body));
            let _ = login_with(server);
            let _ = login_with(packet(0, &noise(seed, 90)));
            let mut greeting = greeting();
            let at = 4 + (seed as usize % (greeting.len() - 4));
            greeting[at] ^= (seed as u8) | 1;
            let _ = login_with(greeting);
        }
    }

    #[test]
    fn a_huge_packet_header_is_refused_before_any_allocation() {
        let mut server = greeting();
        server.extend_from_slice(&[0xff, 0xff, 0xff, 2]);
        match login_with(server) {
            Err(Verdict::Fatal(m)) => assert!(m.contains("16777215 bytes"), "{m}"),
            Err(other) => panic!("{other:?}"),
            Ok(_) => panic!("logged in"),
        }
        // A length the server never fills is a short read, not a wait.
        let mut server = greeting();
        server.extend_from_slice(&[0x00, 0x00, 0x08, 2, 1, 2, 3]);
        assert!(matches!(login_with(server), Err(Verdict::NotYet(_))));
    }

    fn column(name: &str) -> Vec<u8> {
        let mut c = Vec::new();
        for part in ["def", "", "t", "t", name, name] {
            c.push(part.len() as u8);
            c.extend_from_slice(part.as_bytes());
        }
        c.push(0x0c);
        c.extend_from_slice(&[45, 0, 255, 0, 0, 0, 253, 0, 0, 0, 0, 0]);
        c
    }

    #[test]
    fn answers_past_the_caps_fail_with_one_line() {
        // Too many columns: refused at the count, before reading any.
        let rest = packet(1, &[0xfc, 0x10, 0x27]);
        match query_with(&rest) {
            Err(SqlError::Connection(Verdict::Fatal(m))) => {
                assert!(m.contains("10000 columns"), "{m}")
            }
            other => panic!("{other:?}"),
        }
        // Too many rows.
        let mut rest = packet(1, &[1]);
        rest.extend(packet(2, &column("v")));
        rest.extend(packet(3, &[0xfe, 0, 0, 2, 0]));
        for i in 0..=crate::wire::sql::MAX_ROWS {
            rest.extend(packet((4 + i) as u8, &[1, b'x']));
        }
        match query_with(&rest) {
            Err(SqlError::Connection(Verdict::Fatal(m))) => assert!(m.contains("rows"), "{m}"),
            other => panic!("{other:?}"),
        }
        // A few rows are read as they are.
        let mut rest = packet(1, &[1]);
        rest.extend(packet(2, &column("v")));
        rest.extend(packet(3, &[0xfe, 0, 0, 2, 0]));
        rest.extend(packet(4, &[3, b'a', b'b', b'c']));
        rest.extend(packet(5, &[0xfb]));
        rest.extend(packet(6, &[0xfe, 0, 0, 2, 0]));
        let rows = query_with(&rest).unwrap().unwrap();
        assert_eq!(rows.columns, ["v"]);
        assert_eq!(rows.rows, [vec![Some("abc".to_string())], vec![None]]);
    }

    #[test]
    fn truncated_and_malformed_query_replies_do_not_panic() {
        let mut whole = packet(1, &[2]);
        whole.extend(packet(2, &column("a")));
        whole.extend(packet(3, &column("b")));
        whole.extend(packet(4, &[0xfe, 0, 0, 2, 0]));
        whole.extend(packet(5, &[1, b'x', 0xfb]));
        whole.extend(packet(6, &[0xfe, 0, 0, 2, 0]));
        for end in 0..whole.len() {
            let _ = query_with(&whole[..end]);
        }
        for seed in 0..500 {
            let mut rest = whole.clone();
            let at = seed as usize % rest.len();
            rest[at] ^= (seed as u8) | 1;
            let _ = query_with(&rest);
            let _ = query_with(&packet(1, &noise(seed, 40)));
        }
    }

    /// Fuzzing (fuzz/corpus/mysql): a malformed RSA public key in the
    /// caching_sha2_password full authentication panicked in mysql_common's
    /// DER reader (index out of bounds).
    #[test]
    fn a_malformed_rsa_key_is_refused_without_a_panic() {
        use base64::Engine as _;
        let pem = |der: &[u8], label: &str| {
            let body = base64::engine::general_purpose::STANDARD.encode(der);
            format!("-----BEGIN {label}-----\n{body}\n-----END {label}-----\n")
        };
        let malformed: [&[u8]; 9] = [
            b"",
            b"\x30",
            b"\x30\x81",
            b"\x30\x05\x02\x01",
            b"\x30\x03\x02\x01\x05",
            b"\x30\x02\x30\x00",
            b"\x30\x04\x30\x00\x03\x00",
            b"\x30\x05\x30\x00\x03\x01\x00",
            b"\x30\x85\x01\x00\x00\x00\x00",
        ];
        for der in malformed {
            for label in ["PUBLIC KEY", "RSA PUBLIC KEY"] {
                let verdict = rsa_encrypted_password(b"pw", b"nonce", pem(der, label).as_bytes());
                assert!(matches!(verdict, Err(Verdict::Fatal(_))), "{der:?} {label}");
            }
        }
    }

    /// Fuzzing (fuzz/corpus/mysql): an auth-plugin data length of 128 to
    /// 135 overflowed in mysql_common's greeting parser.
    #[test]
    fn a_greeting_whose_auth_data_length_would_overflow_is_refused() {
        let greeting = |len: u8| {
            let mut g = vec![10];
            g.extend_from_slice(b"8.0.36\0");
            g.extend_from_slice(&[0; 20]);
            g.push(len);
            g.extend_from_slice(&[0; 10]);
            g
        };
        for len in 128..=135 {
            assert!(auth_data_length_overflows(&greeting(len)));
        }
        for len in [0, 21, 127, 136, 255] {
            assert!(!auth_data_length_overflows(&greeting(len)));
        }
        assert!(!auth_data_length_overflows(&[10, b'8']));
    }

    #[test]
    fn login_errors_are_classified() {
        assert!(matches!(classify_code(1040, "x"), Verdict::NotYet(_)));
        for fatal in [1044, 1045, 1049, 1129, 1130] {
            assert!(
                matches!(classify_code(fatal, "x"), Verdict::Fatal(_)),
                "{fatal}"
            );
        }
        let mut packet = vec![0xff, 0x15, 0x04];
        packet.extend_from_slice(b"#28000Access denied for user 'a'@'localhost'");
        match classify_error(&packet, CapabilityFlags::CLIENT_PROTOCOL_41) {
            Verdict::Fatal(m) => assert!(m.contains("1045") && m.starts_with("Access denied")),
            other => panic!("{other:?}"),
        }
    }
}
